"""The command line: parses arguments, calls the core, prints for the user and picks exit codes.

The only module that prints or exits. Errors from the core arrive as
BottleError and leave as `Error: <message>` on stderr with the error's code.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__, bottle, docker, egress, image, manifest
from .errors import BottleError, DockerUnavailable


class _Group(click.Group):
    """Turns BottleError into `Error: …` and its exit code; other errors keep their traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BottleError as e:
            if os.environ.get("CLAUDE_BOTTLE_DEBUG"):
                traceback.print_exc()
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="claude-bottle")
def main() -> None:
    """Run Claude Code with full permissions in disposable, egress-filtered Docker containers.

    Agents and bottles come from ~/claude-bottle.json and ./claude-bottle.json;
    without either, the built-in `default` agent runs with Claude Code's hosts only.
    Set CLAUDE_BOTTLE_DEBUG=1 to see tracebacks.
    """


def _load() -> manifest.Manifest:
    return manifest.load(Path.cwd(), os.environ)


def _source(path: Path | None) -> str:
    if path is None:
        return "built-in"
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        home = Path.home()
        return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _bottle_label(b: manifest.Bottle) -> str:
    return b.name if b.trusted else f"{b.name} (untrusted)"


@main.command("list")
def list_agents() -> None:
    """List agents and the bottles they run in."""
    m = _load()
    rows = [("AGENT", "BOTTLE", "DEFINED IN")]
    for name in sorted(m.agents):
        a = m.agents[name]
        rows.append((name, _bottle_label(m.bottle_of(a)), _source(a.file)))
    _table(rows)


@main.command()
@click.argument("agent")
def info(agent: str) -> None:
    """Show what AGENT gets: bottle, env names, skills, SSH hosts, allowed hosts, prompt."""
    m = _load()
    a = m.agent(agent)
    b = m.bottle_of(a)
    hosts = egress.allowlist(b)
    click.echo(f"agent:   {a.name} ({_source(a.file)})")
    click.echo(f"bottle:  {_describe_trust(b)}")
    click.echo(f"env:     {_env_line(b)}")
    click.echo(f"skills:  {', '.join(f'{s.name} ({s.path})' for s in a.skills) or 'none'}")
    click.echo(f"ssh:     {_ssh_line(b)}")
    click.echo(f"egress:  {len(hosts)} hosts allowed")
    width = max(len(h.host) for h in hosts)
    for h in hosts:
        click.echo(f"         {h.host.ljust(width)}  {h.reason}")
    prompt = f"{len(a.prompt)} characters; first line: {a.prompt_first_line}" if a.prompt else "none"
    click.echo(f"prompt:  {prompt}")


@main.command()
@click.option("--no-cache", is_flag=True, help="Rebuild every layer (fresh packages), not just what changed.")
def build(no_cache: bool) -> None:
    """Build (or rebuild) the bottle image, showing the build's progress."""
    m = _load()
    spec = image.spec(m.image)
    engine = docker.connect()
    click.echo(f"building {spec.tag} (base {m.image.base}, Claude Code {m.image.claude_code_version})", err=True)
    for line in image.build(engine, spec, nocache=no_cache):
        click.echo(line, nl=False, err=True)
    click.echo(spec.tag)


@main.command()
@click.argument("agent", default=manifest.DEFAULT_AGENT)
@click.option("--dry-run", is_flag=True, help="Show the launch plan and exit; creates nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option("--trust-project", is_flag=True,
              help="Let bottles from ./claude-bottle.json use host variables and SSH keys.")
def start(agent: str, dry_run: bool, as_json: bool, trust_project: bool) -> None:
    """Start AGENT (default: the built-in `default` agent) in a new bottle."""
    if as_json and not dry_run:
        raise click.UsageError("--json only goes with --dry-run")
    m = _load()
    plan = bottle.plan(m, agent, os.environ)
    if not dry_run:
        raise BottleError(
            "launching bottles is not built yet: use --dry-run to see the plan "
            "(bottles with an egress sidecar are the next milestone)"
        )
    present = _image_present(plan.image.tag)
    if as_json:
        click.echo(json.dumps(plan.to_json(image_present=present), indent=2))
        return
    _preflight(plan)
    state = {True: "present", False: "will be built", None: "unknown (Docker not reachable)"}[present]
    click.echo(f"image:    {plan.image.tag} ({state})")
    n = plan.names
    click.echo(f"creates:  containers {n.container}, {n.relay}, {n.sidecar}; "
               f"network {n.egress_network}; volumes {n.proxy_volume}, {n.config_volume}")
    click.echo("dry run: nothing was created")


def _image_present(tag: str) -> bool | None:
    try:
        return docker.connect().image_exists(tag)
    except DockerUnavailable:
        return None


def _preflight(plan: bottle.LaunchPlan) -> None:
    a, b = plan.agent, plan.bottle
    click.echo(f"agent:    {a.name} ({_source(a.file)})")
    click.echo(f"bottle:   {plan.name} from {_describe_trust(b)}")
    click.echo(f"env:      {_env_line(b)}")
    click.echo(f"skills:   {', '.join(s.name for s in a.skills) or 'none'}")
    click.echo(f"ssh:      {_ssh_line(b)}")
    click.echo(f"egress:   {egress.summary(plan.allowlist)}")
    click.echo(f"prompt:   {a.prompt_first_line or '(none)'}")
    if not plan.token_present:
        click.echo(f"token:    {bottle.TOKEN_VARIABLE} is not set (run `claude setup-token` and export it)")


def _describe_trust(b: manifest.Bottle) -> str:
    if b.trusted:
        return f"{b.name} ({', '.join(_source(f) for f in b.files) or 'built-in'})"
    return f"{b.name} (UNTRUSTED: defined or changed by {_source(b.files[-1])})"


def _env_line(b: manifest.Bottle) -> str:
    return ", ".join(f"{v.name} ({v.describe()})" for v in b.env) or "none"


def _ssh_line(b: manifest.Bottle) -> str:
    return ", ".join(f"{s.host} ({s.user + '@' if s.user else ''}{s.hostname}:{s.port})" for s in b.ssh) or "none"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def run() -> None:
    main(prog_name="claude-bottle")


if __name__ == "__main__":
    sys.exit(run())
