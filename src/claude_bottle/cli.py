"""The command line: parses arguments, calls the core, prints for the user and picks exit codes.

The only module that prints or exits. Errors from the core arrive as
BottleError and leave as `Error: <message>` on stderr with the error's code.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import re
import select
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import click

from . import __version__, lazy
from .errors import BottleError, DockerUnavailable, ManifestError, Refused
from .terminal import shortened, visible


def _lazily(name: str) -> lazy.Module:
    """Module `name` of this package, imported when a command first uses it: `--version`, `--help`, `list`
    and `ps` need few of them, and every import adds to each command's start-up."""
    return lazy.Module(f"{__package__}.{name}")


(bottle, cleanup, docker, egress, image, manifest, pins, progress, runs, runtime, session, sidecar, ssh, starter, status,
 tasks, workspace, health) = map(_lazily, ("bottle", "cleanup", "docker", "egress", "image", "manifest", "pins",
                                          "progress", "runs", "runtime", "session", "sidecar", "ssh", "starter",
                                          "status", "tasks", "workspace", "doctor"))
subprocess = lazy.Module("subprocess")  # for a detached run's supervisor alone


class _Group(click.Group):
    """Turns BottleError into `Error: …` and its exit code; other errors keep their traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (BottleError, OSError) as e:
            if os.environ.get("CLAUDE_BOTTLE_DEBUG"):
                import traceback

                traceback.print_exc()
            if isinstance(e, OSError):  # a folder of ours or the user's that cannot be written or read
                e = BottleError(_file_problem(e))
            # Messages quote manifests, labels and bottle output: nothing in them may drive the terminal.
            click.echo(f"Error: {visible(str(e), newlines=True)}", err=True)
            ctx.exit(e.exit_code)


def _file_problem(e: OSError) -> str:
    name = e.filename2 or e.filename  # of a rename, where it was to go
    said = f"{name}: {e.strerror or e}" if name else str(e)
    state = manifest.state_dir(os.environ)
    if name and Path(os.fsdecode(name)).is_relative_to(state):
        return (f"{said}: claude-bottle keeps what it must remember in {state}: make that a folder you can write "
                "(or point XDG_STATE_HOME elsewhere)")
    return said


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="claude-bottle")
@click.option("--runtime", "runtime_name", type=click.Choice(["docker", "kubernetes"]), envvar="CLAUDE_BOTTLE_RUNTIME",
              help="Where bottles run: the Docker engine (default) or the current kubeconfig's Kubernetes cluster.")
@click.option("--context", "kube_context", envvar="CLAUDE_BOTTLE_CONTEXT", metavar="NAME",
              help="With --runtime kubernetes: the kubeconfig context (default: the current one).")
@click.option("--namespace", "kube_namespace", envvar="CLAUDE_BOTTLE_NAMESPACE", metavar="NAME",
              help="With --runtime kubernetes: the namespace (default: the context's, else default).")
def main(runtime_name: str | None, kube_context: str | None, kube_namespace: str | None) -> None:
    """Run Claude Code with full permissions in disposable, egress-filtered Docker containers.

    Agents and bottles come from ~/claude-bottle.json and the project's
    claude-bottle.json (in this folder or above it, up to the repository's root);
    without either, the built-in `default` agent runs with Claude Code's hosts only.
    A project file is untrusted until you allow it with `claude-bottle trust`.
    Set CLAUDE_BOTTLE_DEBUG=1 to see tracebacks.
    """
    ctx = click.get_current_context()
    # In the environment, so that what this process starts (a detached run's supervisor) uses the same; what
    # neither an option nor a variable says comes from the home manifest's `runtime`.
    for variable, value in (("CLAUDE_BOTTLE_RUNTIME", runtime_name), ("CLAUDE_BOTTLE_CONTEXT", kube_context),
                            ("CLAUDE_BOTTLE_NAMESPACE", kube_namespace)):
        if value:
            os.environ[variable] = value
    runtime.settle(os.environ)
    given = [f"--{name}" for name in ("context", "namespace")
             if ctx.get_parameter_source(f"kube_{name}") == click.core.ParameterSource.COMMANDLINE]
    if given and os.environ.get("CLAUDE_BOTTLE_RUNTIME", "docker") != "kubernetes":
        raise click.UsageError(f"{' and '.join(given)}: only for bottles on Kubernetes: add --runtime kubernetes "
                               "(or set CLAUDE_BOTTLE_RUNTIME=kubernetes, or runtime.name in ~/claude-bottle.json)")


def _manifest_options(f):
    """--manifest and --no-project: which project file the command reads, kept for `_load`."""
    @click.option("--manifest", "manifest_file", type=click.Path(path_type=Path, dir_okay=False),
                  help="Read this project manifest instead of looking for claude-bottle.json.")
    @click.option("--no-project", is_flag=True, help="Read no project manifest: only your home one.")
    @functools.wraps(f)
    def wrapper(*args, manifest_file: Path | None, no_project: bool, **kwargs):
        if manifest_file and no_project:
            raise click.UsageError("--manifest and --no-project do not go together")
        click.get_current_context().meta["claude_bottle.manifest"] = (manifest_file, no_project)
        return f(*args, **kwargs)
    return wrapper


def _load(trust_project: bool = False) -> manifest.Manifest:
    manifest_file, no_project = click.get_current_context().meta.get("claude_bottle.manifest", (None, False))
    return manifest.load(Path.cwd(), os.environ, manifest_file=manifest_file, no_project=no_project,
                         trust_project=trust_project)


def _source(path: Path | None) -> str:
    if path is None:
        return "built-in"
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        home = Path.home()
        return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _complete_agents(ctx: click.Context, incomplete: str) -> list[str]:
    """Agent names for shell completion: a broken manifest completes nothing rather than print an error."""
    try:
        with ctx.scope(cleanup=False):
            names = _load().agents
    except BottleError:
        return []
    return sorted(n for n in names if n.startswith(incomplete))


def _complete_bottles(incomplete: str) -> list[str]:
    try:
        rows = status.bottles(runtime.connect(), os.environ)
    except BottleError:
        return []
    # Only what `stop` and the others take: a label that is no bottle name would reach the shell's line as it is.
    return sorted(r.name for r in rows if r.mine and r.name.startswith(incomplete) and cleanup.is_name(r.name))


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (commands, options, agent and bottle names).

    \b
    bash: echo 'eval "$(claude-bottle completion bash)"' >> ~/.bashrc
    zsh:  echo 'eval "$(claude-bottle completion zsh)"' >> ~/.zshrc
    fish: claude-bottle completion fish > ~/.config/fish/completions/claude-bottle.fish
    """
    from click.shell_completion import get_completion_class

    click.echo(get_completion_class(shell)(main, {}, "claude-bottle", "_CLAUDE_BOTTLE_COMPLETE").source())


def _bottle_label(b: manifest.Bottle) -> str:
    return b.name if b.trusted else f"{b.name} (untrusted)"


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
@_manifest_options
def list_agents(as_json: bool) -> None:
    """List agents and the bottles they run in."""
    m = _load()
    rows = [("AGENT", "BOTTLE", "DEFINED IN")]
    data = []
    for name in sorted(m.agents):
        a = m.agents[name]
        b = m.bottle_of(a)
        untrusted = bool(m.agent_from_project(a) and not m.project.trusted)
        rows.append((name, _bottle_label(b), _source(a.file) + (" (not trusted)" if untrusted else "")))
        data.append({"agent": name, "bottle": b.name, "bottle_trusted": b.trusted, "file": _str_or_none(a.file),
                     "trusted": not untrusted, "model": a.model})
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _table(rows)


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


@main.command()
@click.argument("agent", shell_complete=lambda ctx, param, incomplete: _complete_agents(ctx, incomplete))
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON (the prompt in full).")
@_manifest_options
def info(agent: str, as_json: bool) -> None:
    """Show what AGENT gets: bottle, env names, skills, SSH hosts, every allowed host, the whole prompt."""
    plan = bottle.plan(_load(), agent, os.environ)
    if as_json:
        data = {k: v for k, v in plan.to_json().items()
                if k not in ("bottle", "containers", "networks", "volumes", "workspace", "mount")}
        data["prompt"]["text"] = plan.agent.prompt
        click.echo(json.dumps(data, indent=2))
        return
    _preflight(plan, full=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Check that this machine can run bottles: the engine, images, token, CA file, disk, manifests; with
    what to do about each problem. Exits 1 if anything fails (warnings do not)."""
    found = health.checks(os.environ, Path.cwd())
    if as_json:
        click.echo(json.dumps([c.to_json() for c in found], indent=2))
    else:
        width = max(len(c.name) for c in found)
        for c in found:
            click.echo(f"{c.status.upper() if c.status != 'ok' else 'ok':<5} {c.name:<{width}}  {visible(c.found)}")
            if c.fix:
                click.echo(f"{'':<5} {'':<{width}}  fix: {visible(c.fix)}")
    sys.exit(1 if any(c.status == "fail" for c in found) else 0)


@main.command()
@click.option("--project", is_flag=True, help="Write ./claude-bottle.json (a project's) instead of your home manifest.")
@click.option("--force", is_flag=True, help="Replace the file if there is one.")
def init(project: bool, force: bool) -> None:
    """Write a starting claude-bottle.json, with a note on each part: your home manifest, or the project's."""
    path = (Path.cwd() if project else manifest.home_dir(os.environ)) / manifest.MANIFEST_NAME
    if path.is_symlink():  # a cloned repository's link would have us write wherever it points
        raise BottleError(f"{visible(str(path))} is a symbolic link (to {visible(os.readlink(path))}): remove it "
                          "first if you want a manifest there")
    if path.exists() and not force:
        raise BottleError(f"{visible(str(path))} is already there: edit it, or pass --force to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise BottleError(f"{visible(str(path.parent))} is not a folder: "
                          f"{'' if project else 'point CLAUDE_BOTTLE_HOME at a folder, or '}make it one")
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with open(fd, "w") as f:
            f.write(starter.manifest_text(project))
        os.replace(partial, path)  # replaces a link made meanwhile, never writes through one
    except OSError as e:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise BottleError(f"could not write {visible(str(path))}: {e.strerror or e}") from None
    click.echo(f"wrote {visible(str(path))}")
    if project:
        click.echo("next: edit it, then `claude-bottle trust` to allow it and `claude-bottle start coder`", err=True)
    else:
        click.echo("next: `claude-bottle list`, then `claude-bottle start coder`", err=True)


@main.command("trust")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("-y", "--yes", is_flag=True, help="Allow without asking.")
@click.option("--revoke", is_flag=True, help="Withdraw the allowance instead.")
def trust_(file: Path | None, yes: bool, revoke: bool) -> None:
    """Allow the project's claude-bottle.json (or FILE), exactly as it is now.

    Shows everything the file asks for first. Until you allow it, a project file
    cannot reach your host's secrets or redirect your token; any change to it
    makes it untrusted again. --revoke withdraws the allowance.
    """
    path = (file or manifest.find_project(Path.cwd()))
    if path is None:
        raise BottleError(f"no {manifest.MANIFEST_NAME} here or above (up to the repository's root): "
                          "name the file to trust")
    path = path.absolute()
    if file is not None and not revoke and not path.is_file():  # (a file gone can still be revoked)
        raise BottleError(f"{visible(str(path))}: {'not a regular file' if path.exists() else 'no such file'}: "
                          f"name the project's {manifest.MANIFEST_NAME}")
    store = manifest.trust_store(os.environ)
    if revoke:
        if not store.revoke(path):
            raise BottleError(f"{path} was not allowed: nothing to revoke")
        click.echo(f"revoked: {visible(str(path))} is untrusted again")
        return
    m = manifest.load(Path.cwd(), os.environ, manifest_file=path)
    p = m.project
    if p is None:  # the home manifest itself: always trusted
        raise BottleError(f"{path} is your home manifest, which is always trusted")
    if p.trusted:
        click.echo(f"already allowed: {visible(str(path))} (sha256 {p.digest[:16]}…)")
        return
    click.echo(f"{visible(str(path))} (sha256 {p.digest[:16]}…) asks for:", err=True)
    affected = [a for a in m.agents.values() if m.share(a) is not None]
    for a in sorted(affected, key=lambda a: a.name):
        click.echo("", err=True)
        _preflight(bottle.plan(m, a.name, os.environ), err=True, full=True)
    for name in sorted(set(p.bottles) - {a.bottle for a in affected}):
        click.echo(f"\nbottle {visible(name)}: defined here, used by no agent", err=True)
    if not yes:
        if not sys.stdin.isatty():
            raise Refused("stdin is not a terminal, so nobody can answer: pass --yes to allow it anyway")
        if not click.confirm("\nallow this file, exactly as it is now?", default=False, err=True):
            raise Refused("not allowed")
    store.allow(path, p.digest)
    click.echo(f"allowed: {visible(str(path))} as shown above (sha256 {p.digest[:16]}…); any change to it makes it "
               "untrusted again")


@main.command()
@click.option("--no-cache", is_flag=True, help="Rebuild every layer (fresh packages), not just what changed.")
@click.option("-v", "--verbose", is_flag=True, help="Show the build's whole output, not only its steps.")
@click.option("--push", is_flag=True,
              help="Also build the sidecar image and push both to the home manifest's image.registry, where a "
                   "Kubernetes cluster's nodes pull them from.")
def build(no_cache: bool, verbose: bool, push: bool) -> None:
    """Build (or rebuild) the bottle image, showing its steps; the whole output goes to a log file."""
    m = _load()
    if push and not m.image.registry:
        raise BottleError(f"--push needs a registry to push to: add \"image\": {{\"registry\": "
                          f"\"registry.example.com/team\"}} to {manifest.home_dir(os.environ) / manifest.MANIFEST_NAME}")
    spec = image.spec(m.image)
    engine = docker.connect()  # on either runtime: a cluster's nodes get the images from a registry (README)
    why = f"base {m.image.base}, Claude Code {m.image.claude_code_version}"
    with _signals_raise(), _build_view(verbose) as view:
        for line in image.build(engine, spec, nocache=no_cache):
            view.feed(spec.tag, line, why)
        if push:
            side = sidecar.spec(m.image)
            for line in image.build(engine, side, nocache=no_cache):
                view.feed(side.tag, line, f"pipelock {pins.PIPELOCK_VERSION} and the gate")
    if not push:
        click.echo(spec.tag)
        return
    with _signals_raise():
        for tag in (spec.tag, side.tag):
            ref = image.in_registry(tag, m.image.registry)
            click.echo(f"pushing {visible(ref)}", err=True)
            for line in engine.push_image(tag, ref):
                if verbose:
                    click.echo(visible(line, newlines=True), nl=False, err=True)
            digest = engine.repo_digest(ref)
            if digest:  # bottles started from here name the image by it
                image.record_push(manifest.state_dir(os.environ), ref, digest)
            click.echo(visible(f"{ref}@{digest}" if digest else ref))


def _build_view(verbose: bool = False) -> progress.BuildView:
    return progress.BuildView(manifest.state_dir(os.environ) / "builds", verbose)


class _PassThrough(click.Command):
    """Keeps the arguments after `--` for Claude (ctx.meta["claude_args"]), as `docker run IMAGE -- …` does."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            args, ctx.meta["claude_args"] = args[:cut], tuple(args[cut + 1:])
        return super().parse_args(ctx, args)


def _claude_args(a: manifest.Agent) -> list[str]:
    """What Claude gets on its command line besides the prompt: the agent's model, then the user's `-- …`."""
    return (["--model", a.model] if a.model else []) + list(click.get_current_context().meta.get("claude_args", ()))


class _Path(click.Path):
    """A path that is not empty: `--workspace ""` (an unset variable) would otherwise be this folder."""

    def convert(self, value, param, ctx):
        if value == "":
            self.fail("an empty path: name a folder (`.` for this one)", param, ctx)
        return super().convert(value, param, ctx)


_PATH = _Path(path_type=Path)


def _launch_options(f):
    """The options `start` and `run` share."""
    f = _manifest_options(f)
    for option in reversed([
        click.option("-y", "--yes", is_flag=True, help="Launch without asking (needed when stdin is not a terminal)."),
        click.option("--trust-project", is_flag=True,
                     help="Trust the project's claude-bottle.json for this run only (see `claude-bottle trust`)."),
        click.option("-w", "--workspace", "workspace_dir", type=_PATH,
                     help="Copy DIR into /workspace (honouring .gitignore); its work comes back when the bottle "
                          "ends (a repository's as a branch)."),
        click.option("--no-results", is_flag=True, help="With --workspace: bring nothing back."),
        click.option("--mount", type=_PATH,
                     help="Bind-mount DIR read-write at /workspace instead: the agent changes your files directly."),
    ]):
        f = option(f)
    return f


@main.command(cls=_PassThrough)
@click.argument("agent", required=False,  # None: the built-in agent (naming it here would load manifest.py)
                shell_complete=lambda ctx, param, incomplete: _complete_agents(ctx, incomplete))
@click.option("--dry-run", is_flag=True, help="Show the launch plan and exit; creates nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option("-d", "--detach", is_flag=True, help="Leave the bottle running without Claude; print its name.")
@_launch_options
def start(agent: str, dry_run: bool, as_json: bool, detach: bool, yes: bool, trust_project: bool,
          workspace_dir: Path | None, no_results: bool, mount: Path | None) -> None:
    """Start AGENT (default: the built-in `default` agent) in a new bottle and open Claude in it.

    Arguments after `--` go to Claude (`start coder -- --model opus`). When Claude exits (or on Ctrl-C, SIGTERM, SIGHUP or a closed terminal) the
    workspace's work comes back first, then the bottle, its sidecar and
    everything made for them are removed; if the work cannot come back, the
    bottle is kept and you are told how to retry. The exit status is Claude's.
    """
    if as_json and not dry_run:
        raise click.UsageError("--json only goes with --dry-run")
    plan = _plan(agent or manifest.DEFAULT_AGENT, workspace_dir, no_results, mount, trust_project)
    if dry_run:
        _dry_run(plan, as_json)
        return
    if detach:
        plan = dataclasses.replace(plan, record=runs.root(os.environ) / plan.name)
    elif not _has_terminal():  # Claude would fall back to --print and fail on the empty prompt
        raise click.UsageError("start opens Claude in this terminal, and stdin or stdout is not a terminal: for "
                               "a headless run use `claude-bottle run AGENT PROMPT`, or `start --detach` and "
                               "later `claude-bottle attach BOTTLE`")
    secrets, engine = _consent(plan, yes)
    tty = _has_terminal()
    with _session_lock() as lock, _signals_raise():
        s = _launch(engine, plan, secrets, lock)
        if detach:
            with s:  # finished at once if anything below fails
                runs.create(os.environ, plan.name, _record(plan, "session", s.engine), lock.label())
                s.detach()
            click.echo(plan.name)
            return
        argv = ["bottle-claude", *_claude_args(plan.agent)]
        code = _run_and_finish(s, lambda: s.run_interactive(argv, tty=tty, stdin=True))
        if tty and s.ended is not None:
            click.echo(f"bottle {plan.name} is gone, and Claude's conversation with it: the `claude --resume` "
                       "line Claude may have printed does not apply", err=True)
        sys.exit(code)


@main.command("run", cls=_PassThrough)
@click.argument("agent", shell_complete=lambda ctx, param, incomplete: _complete_agents(ctx, incomplete))
@click.argument("prompt", required=False)
@click.option("--prompt-file", type=click.File("r"), help="Read the prompt from FILE (- for stdin).")
@click.option("--output-format", type=click.Choice(["text", "json", "stream-json"]), default="text",
              show_default=True, help="Passed to claude -p.")
@click.option("--tasks", "tasks_file", type=_PATH,
              help="Run every task in FILE (a prompt per line, or JSON lines with prompt and workspace), "
                   "a bottle each.")
@click.option("--parallel", type=click.IntRange(1, 64),
              help="With --tasks: how many bottles at once (default: from this machine's cores and memory).")
@click.option("-d", "--detach", is_flag=True,
              help="Return at once with the bottle's name; see ps, logs -f, wait and rm.")
@click.option("--dry-run", is_flag=True, help="Show the launch plan and exit; creates nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="With --dry-run: the plan as JSON. With --tasks: the summary as one JSON document on stdout, "
                   "each task's output in it.")
@_launch_options
def run_headless(agent: str, prompt: str | None, prompt_file, output_format: str, tasks_file: Path | None,
                 parallel: int | None, detach: bool, dry_run: bool, as_json: bool, yes: bool, trust_project: bool,
                 workspace_dir: Path | None, no_results: bool, mount: Path | None) -> None:
    """Run AGENT headless on PROMPT in a fresh bottle (claude -p), streaming its output.

    PROMPT `-` (or --prompt-file FILE) reads the prompt from stdin (or FILE);
    arguments after `--` go to Claude (`run coder "fix it" -- --max-turns 5`).
    The workspace's work comes back, then the bottle is removed; the exit
    status is Claude's. With --tasks, each task gets its own bottle, at most
    --parallel at once; a summary table follows, and the exit status is 1 if
    any task failed.
    """
    given = [what for what, there in (("PROMPT", prompt is not None), ("--prompt-file", prompt_file is not None),
                                       ("--tasks", tasks_file is not None)) if there]
    if len(given) > 1:
        raise click.UsageError(f"give one of PROMPT, --prompt-file FILE and --tasks FILE, not {' and '.join(given)}")
    if not given:
        raise click.UsageError("give the PROMPT to run (- reads it from stdin), --prompt-file FILE or --tasks FILE")
    if prompt == "-" or prompt_file is not None:
        source = prompt_file or click.get_text_stream("stdin")
        where = "stdin" if source.name == "<stdin>" else visible(source.name)
        try:
            prompt = source.read()
        except UnicodeDecodeError:
            raise click.UsageError(f"the prompt read from {where} is not UTF-8 text") from None
        if not prompt.strip():
            raise click.UsageError(f"the prompt read from {where} is empty")
    if prompt is not None:
        tasks.check_prompt(prompt, "the prompt")
    if parallel and not tasks_file:
        raise click.UsageError("--parallel only goes with --tasks")
    if as_json and not (dry_run or tasks_file):
        raise click.UsageError("--json goes with --dry-run or --tasks (for Claude's own JSON: --output-format json)")
    if dry_run:
        task_list = tasks.read(tasks_file, workspace_dir) if tasks_file else []
        _dry_run(_plan(agent, task_list[0].workspace if task_list else workspace_dir, no_results, mount,
                       trust_project), as_json)
        return
    if tasks_file:
        if detach:
            raise click.UsageError("--detach does not go with --tasks")
        if mount:
            raise click.UsageError("--mount does not go with --tasks: parallel bottles would share one folder")
        sys.exit(_run_tasks(agent, tasks_file, parallel, output_format, yes, trust_project, workspace_dir,
                            no_results, as_json))
    plan = _plan(agent, workspace_dir, no_results, mount, trust_project)
    if detach:
        plan = dataclasses.replace(plan, record=runs.root(os.environ) / plan.name)
    argv = _claude_p(prompt, output_format, plan.agent)
    secrets, engine = _consent(plan, yes)
    with _session_lock() as lock, _signals_raise():
        s = _launch(engine, plan, secrets, lock)
        if detach:
            with s:  # finished at once if the hand-over fails
                _hand_to_supervisor(s, plan, argv, lock)
            click.echo(plan.name)
            return
        sys.exit(_run_and_finish(s, lambda: s.run_headless(argv, _OutputSink())))


def _claude_p(prompt: str, output_format: str, a: manifest.Agent) -> list[str]:
    argv = ["bottle-claude", "-p", prompt, "--output-format", output_format]
    if output_format == "stream-json":
        argv.append("--verbose")  # claude -p requires it for stream-json
    return argv + _claude_args(a)


def _record(plan: bottle.LaunchPlan, kind: str, engine: docker.Engine, prompt: str = "") -> dict:
    # The engine (or cluster and namespace) it is on: `ps` and `cleanup` on another take no record of it.
    return {"agent": plan.agent.name, "bottle": plan.bottle.name, "started": time.time(), "kind": kind,
            "prompt": prompt, "engine": cleanup.engine_id(engine)}


def _run_tasks(agent: str, tasks_file: Path, parallel: int | None, output_format: str, yes: bool,
               trust_project: bool, workspace_dir: Path | None, no_results: bool, as_json: bool = False) -> int:
    task_list = tasks.read(tasks_file, workspace_dir)
    plans = [_plan(agent, t.workspace, no_results, None, trust_project) for t in task_list]
    parallel = parallel or tasks.default_parallelism()
    click.echo(f"tasks:    {len(task_list)} from {visible(str(tasks_file))}, {parallel} at a time", err=True)
    secrets, engine = _consent(plans[0], yes)

    def report(r: tasks.Result) -> None:
        if as_json:  # progress on stderr; stdout stays one JSON document
            click.echo(f"task {r.index} ({r.bottle}): exit {r.exit_status} in {r.seconds:.1f}s", err=True)
            return
        click.echo(f"--- task {r.index} ({r.bottle}): exit {r.exit_status} in {r.seconds:.1f}s ---")
        _bottle_output([r.output.encode()])
        if not r.output.endswith("\n"):
            click.echo()

    with _session_lock() as lock, _signals_raise():
        _prepare(engine, plans[0])
        try:
            with progress.TaskBoard(len(task_list)) as board:
                def done(r: tasks.Result) -> None:
                    board.finished(failed=r.exit_status != 0)
                    board.report(lambda: report(r))

                results = tasks.run_all(plans, task_list, secrets, lock.label(), parallel,
                                        lambda t: _claude_p(t.prompt, output_format, plans[0].agent), done,
                                        board.started)
        except _Interrupted as e:
            return 128 + e.signum
        except KeyboardInterrupt:
            return 130
    if as_json:
        click.echo(json.dumps([{"task": r.index, "prompt": r.task.prompt, "bottle": r.bottle,
                                "exit_status": r.exit_status, "seconds": round(r.seconds, 3), "branch": r.branch,
                                "output": r.output} for r in results], indent=2))
        return 1 if any(r.exit_status for r in results) else 0
    rows = [("TASK", "BOTTLE", "EXIT", "DURATION", "BRANCH")]
    for r in results:
        first = (r.task.prompt.splitlines() or [""])[0]
        rows.append((f"{r.index}: {first[:40]}{'…' if len(first) > 40 else ''}", r.bottle, str(r.exit_status),
                     f"{r.seconds:.1f}s", r.branch or "-"))
    _table(rows)
    return 1 if any(r.exit_status for r in results) else 0


def _plan(agent: str, workspace_dir: Path | None, no_results: bool, mount: Path | None,
          trust_project: bool) -> bottle.LaunchPlan:
    if no_results and not workspace_dir:
        raise click.UsageError("--no-results only goes with --workspace")
    return bottle.plan(_load(trust_project), agent, os.environ, workspace_dir, results=not no_results, mount=mount)


def _consent(plan: bottle.LaunchPlan, yes: bool) -> tuple[session.Secrets, docker.Engine]:
    """Token, preflight, every check that needs no secret (the engine included), the user's yes; then the
    secrets. Nothing is created, and no secret read, before the answer."""
    interactive = sys.stdin.isatty()
    _check_token()
    _preflight(plan, err=True)
    engine = _launch_checks(plan, interactive)
    token = os.environ[bottle.TOKEN_VARIABLE]
    if not yes:
        if not interactive:
            raise Refused("stdin is not a terminal, so nobody can answer the launch question: "
                          "pass --yes to launch anyway")
        if not click.confirm(_question(plan), default=False, err=True):
            raise Refused("not launched")
    ask = (lambda question: click.prompt(visible(question), hide_input=True, err=True, prompt_suffix="")) \
        if interactive else None
    env = manifest.resolve_env(plan.bottle, os.environ, ask)
    for name in egress.unscanned({name: env[name] for name in plan.bottle.secret_names}):
        click.echo(f"note: the sidecar does not look for {visible(name)} in what leaves the bottle: no line of its "
                   f"value is {egress.MIN_SECRET_LENGTH} characters or more (shorter text turns up in ordinary "
                   "traffic by chance)", err=True)
    keys = {h.host: ssh.read_key(h) for h in plan.bottle.ssh}
    return session.Secrets(env, token, keys), engine


def _has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _check_token() -> None:
    if not os.environ.get(bottle.TOKEN_VARIABLE):
        raise BottleError(
            f"{bottle.TOKEN_VARIABLE} is not set: run `claude setup-token` on this machine and "
            f"export the token it prints as {bottle.TOKEN_VARIABLE}"
        )


def _launch_checks(plan: bottle.LaunchPlan, interactive: bool, every: bool = False) -> docker.Engine:
    """Every check a launch makes before it asks or creates anything, the same with and without a
    terminal, none of which reads a secret: the token is set, the project may have what the agent
    uses, host variables are set, SSH keys are private keys without a passphrase, the engine answers.

    The first failure stops a launch; with `every` (a dry run) all of them are reported together, with
    the first one's exit code."""
    checks = [_check_token, plan.check_trust,
              lambda: manifest.check_env(plan.bottle, os.environ, can_ask=interactive),
              *(functools.partial(ssh.check_key, host) for host in plan.bottle.ssh),
              session.engine_wait_seconds, workspace.step_seconds, runtime.connect]
    failed: list[BottleError] = []
    engine = None
    for check in checks:
        try:
            engine = check()
        except BottleError as e:
            if not every:
                raise
            failed.append(e)
    if failed:
        first = failed[0]
        first.args = ("\n".join(str(e) for e in failed),)
        raise first
    return engine


def _session_lock() -> cleanup.SessionLock:
    return cleanup.SessionLock.acquire(manifest.state_dir(os.environ) / "sessions")


def _prepare(engine: docker.Engine, plan: bottle.LaunchPlan) -> None:
    with _build_view() as view:
        held = session.prepare(engine, plan, os.environ,
                               lambda tag, line: view.feed(tag, line, "first use; later starts reuse it"))
    for name in held:  # a label: anyone with access to the engine can write one
        click.echo(f"note: bottle {visible(name)} of a session that ended without finishing holds work not brought "
                   f"back; `claude-bottle stop {visible(name)}` brings it back", err=True)


def _launch(engine: docker.Engine, plan: bottle.LaunchPlan, secrets: session.Secrets,
            lock: cleanup.SessionLock) -> session.Session:
    _prepare(engine, plan)
    return session.Session.launch(engine, plan, secrets, lock.label(), _copy_progress)


def _run_and_finish(s: session.Session, run_claude) -> int:
    """Run Claude in the session, then finish it (work back, bottle gone) on every way out; the exit
    status to leave with."""
    s.on_engine_lost = lambda seconds: click.echo(
        f"the engine went away (restarting?): waiting up to {seconds} s for it to come back to bring the work of "
        f"bottle {s.name} back", err=True)
    try:
        with s:
            code = run_claude()
    except _Interrupted as e:
        code = 128 + e.signum
    except KeyboardInterrupt:
        code = 130
    finally:
        _report(s.ended)  # the work may be back although Claude's run broke off (the engine went away)
    return code


def _report(ended: session.Ended | None) -> None:
    if ended is None or ended.workspace is None or not ended.workspace.brings_back:
        return
    brought = ended.brought
    if ended.discarded:
        click.echo("results: discarded (--discard)", err=True)
    elif ended.gone:
        click.echo("results: the bottle was already gone", err=True)
    elif brought is None:
        return
    elif brought.branch or brought.extra:
        if brought.branch:
            click.echo(f"results: {brought.commits} new commit{'s' if brought.commits != 1 else ''} on branch "
                       f"{visible(brought.branch)} in {visible(str(ended.workspace.git_root))}", err=True)
        if brought.extra:
            click.echo(f"results: the bottle's other branches and stash too: {visible(', '.join(brought.extra))}",
                       err=True)
        if brought.renamed:
            click.echo(f"results: what would make git use a repository of the agent's once the branch is checked out "
                       f"(a .git, or the HEAD of a folder laid out as a repository) is renamed with "
                       f"{workspace.RENAMED_SUFFIX} after its name in a commit of ours on top, so that no git "
                       f"command there runs what the agent put in its config or hooks (look at them before you rename "
                       f"them back; the agent's own commits below it hold them as they were): "
                       f"{visible(', '.join(brought.renamed))}", err=True)
        _report_renamed_as_and_clashed(brought)
    elif brought.folder:
        left_out = (f" (left out, as they are not files or point outside it: {visible(', '.join(brought.skipped))})"
                    if brought.skipped else "")
        click.echo(f"results: the changed workspace is in {visible(str(brought.folder))}{left_out}", err=True)
        if brought.renamed:
            click.echo(f"results: what would make git there use a repository of the agent's (a .git, or the HEAD of a "
                       f"folder laid out as a repository) came back with {workspace.RENAMED_SUFFIX} after its name, so "
                       f"that no git command there runs what the agent put in its config or hooks (look at them "
                       f"before you rename them back): {visible(', '.join(brought.renamed))}", err=True)
        _report_renamed_as_and_clashed(brought)
    else:
        click.echo("results: no changes, nothing to bring back", err=True)


def _report_renamed_as_and_clashed(brought: workspace.Brought) -> None:
    if brought.renamed_as:
        click.echo(f"results: of those, under another name (one too long for the suffix, or that this machine "
                   f"could take for another's): "
                   f"{visible(', '.join(f'{path} as {name}' for path, name in brought.renamed_as))}", err=True)
    if brought.clashed:
        click.echo(f"results: left out, as their names would meet those given to what was renamed (above): "
                   f"{visible(', '.join(brought.clashed))}", err=True)


def _hand_to_supervisor(s: session.Session, plan: bottle.LaunchPlan, argv: list[str],
                        lock: cleanup.SessionLock) -> None:
    """Record the run and start the process that looks after it from now on (own session, no terminal);
    it takes the record over before this one ends, or the run is finished here and reported failed."""
    run = runs.create(os.environ, plan.name, _record(plan, "run", s.engine, argv[2]), lock.label())
    supervisor = subprocess.Popen([sys.executable, "-m", "claude_bottle", "_supervise", plan.name, "--", *argv],
                                  start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
    ready = select.select([supervisor.stdout], [], [], SUPERVISOR_START_SECONDS)[0]
    if ready and supervisor.stdout.readline() == b"ready\n":
        s.detach()
        return
    supervisor.kill()
    run.finish(runs.COULD_NOT_RUN)
    raise BottleError(f"the process that looks after detached run {plan.name} did not start, so the run is "
                      f"ended and its bottle removed (`claude-bottle rm {plan.name}` drops its record)")


SUPERVISOR_START_SECONDS = 30


@main.command("_supervise", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(name: str, argv: tuple[str, ...]) -> None:
    """Looks after a detached run: runs its command, records its output, egress report and status, and
    finishes its bottle (work back, then removed)."""
    run = runs.get(os.environ, name)
    if run is None:
        raise BottleError(f"no record of run '{name}'")
    argv = argv[1:] if argv[:1] == ("--",) else argv
    with _session_lock() as lock:
        run.set_owner(lock.label())
        sys.stdout.buffer.write(b"ready\n")
        sys.stdout.flush()
        os.close(sys.stdout.fileno())
        code = runs.COULD_NOT_RUN
        with run.writer() as sink:
            try:
                engine = runtime.connect()
                s = session.Session.resume(engine, name)
                try:
                    with s:
                        code = s.run_headless(list(argv), sink)
                        session.keep_egress_report(engine, run)
                finally:  # the work may be back although the run broke off (the engine went away)
                    _record_results(run, sink, s.ended.brought if s.ended else None)
            except BottleError as e:  # the record must end with a status whatever happened
                sink.write(f"\nError: {e}\n".encode())
                code = e.exit_code if isinstance(e, workspace.WorkNotBack) else runs.COULD_NOT_RUN
        if run.folder.is_dir():  # `rm --force` or `cleanup` may have removed the record meanwhile
            run.finish(code)


def _record_results(run: runs.Run, sink: BinaryIO, brought: workspace.Brought | None) -> None:
    if brought and (brought.branch or brought.folder):
        run.set_result(brought.branch or str(brought.folder))
    if brought and (brought.branch or brought.extra):
        sink.write(f"\nresults: {brought.commits} new commit(s) on branch {brought.branch}"
                   f"{'; also ' + ', '.join(brought.extra) if brought.extra else ''}\n".encode())
    elif brought and brought.folder:
        sink.write(f"\nresults: the changed workspace is in {brought.folder}\n".encode())


def _copy_progress(done: int, total: int) -> None:
    click.echo(f"\rcopying workspace: {done}/{total} files", nl=done == total, err=True)


def _dry_run(plan: bottle.LaunchPlan, as_json: bool) -> None:
    present = _image_present(plan.image.tag)
    if as_json:
        click.echo(json.dumps(plan.to_json(image_present=present,
                                           network=bottle.planned_sidecar_network(os.environ)), indent=2))
        _launch_checks(plan, sys.stdin.isatty(), every=True)
        return
    on_cluster = runtime.chosen() == "kubernetes"
    if on_cluster:
        pinned = "@" in plan.image_refs.get(plan.image.tag, "")
        state = (f"pulled by the cluster's nodes from {plan.registry}" + (", by the digest pushed from here" if pinned
                 else " (`claude-bottle build --push` puts it there)")
                 if plan.registry else "must be on the cluster's nodes (imported: no image.registry in the home "
                                       "manifest)")
    else:
        state = {True: "present", False: "will be built", None: "unknown (Docker not reachable)"}[present]
    _preflight(plan, image_state=state)
    n = plan.names
    click.echo(f"creates:  pod {n.container} (bottle and sidecar containers), NetworkPolicy {n.container}"
               if on_cluster else f"creates:  containers {n.container}, {n.sidecar}; volume {n.proxy_volume} "
               f"(on the shared network {bottle.planned_sidecar_network(os.environ)})")
    click.echo("dry run: nothing was created")
    # What `start` would refuse, found without reading a secret or creating anything.
    _launch_checks(plan, sys.stdin.isatty(), every=True)


class _Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C, so the session finishes."""
    def handler(signum, _frame):
        raise _Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except _Interrupted as e:  # what no one handled before: leave with the signal's status, no traceback
        raise SystemExit(128 + e.signum) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _question(plan: bottle.LaunchPlan) -> str:
    """The launch question, with what matters most said again right beside it (a long preflight scrolls)."""
    p = plan.project
    if p is None:
        return "launch this agent?"
    state = f"{p.trusted_by}" if p.trusted_by else "NOT TRUSTED"
    return visible(f"launch {plan.agent.name} with what {_source(p.file)} ({state}) asks, "
                   f"{len(plan.allowlist)} hosts allowed?")


def _running(engine: docker.Engine, name: str) -> docker.ContainerState:
    """The state of the user's running bottle `name` (its container's name and labels)."""
    state = engine.container(cleanup.Names(cleanup.check_name(name)).container)
    if state is None or state.labels.get(cleanup.LABEL_ROLE) != "bottle":
        raise BottleError(f"no running bottle named '{name}': see `claude-bottle ps`")
    cleanup.check_mine(name, state.labels)
    if not state.running:
        # An engine restart stops every container; the bottle's files (and the agent's work) are still there.
        raise BottleError(f"bottle '{name}' has stopped (its engine restarted, or everything in it ended): "
                          f"`claude-bottle stop {name}` brings its work back and removes it")
    return state


def _workdir(state: docker.ContainerState) -> str:
    ws = workspace.from_labels(state.labels)
    return ws.workdir if ws else image.WORKSPACE


# bottle-session's status when the terminal detached and Claude goes on.
DETACHED = 200


@main.command()
@click.argument("bottle_name", metavar="BOTTLE", shell_complete=lambda ctx, param, incomplete: _complete_bottles(incomplete))
def attach(bottle_name: str) -> None:
    """Reconnect to Claude in BOTTLE (one started with --detach), or start it there if none is running.

    Ctrl-\\ detaches and leaves Claude running; attach again to come back.
    The exit status is Claude's when it exits."""
    engine = runtime.connect()
    state = _running(engine, bottle_name)
    container = state.name
    record = state.labels.get(cleanup.LABEL_RECORD)
    if record is None:
        raise BottleError(f"bottle '{bottle_name}' belongs to a `claude-bottle start` in another terminal: use that "
                          f"terminal, or open a shell beside it with `claude-bottle exec {bottle_name} -- bash`")
    if runs.Run(bottle_name, Path(record)).is_run:
        raise BottleError(f"bottle '{bottle_name}' is a headless run (claude -p), with no session to attach to: "
                          f"follow it with `claude-bottle logs -f {bottle_name}`, or `claude-bottle wait {bottle_name}`")
    if not _has_terminal():
        raise click.UsageError("attach opens Claude in this terminal, and stdin or stdout is not a terminal: "
                               f"`claude-bottle exec {bottle_name} -- CMD` runs a command without one")
    client = os.urandom(8).hex()
    try:
        with _signals_raise():
            code = engine.exec_interactive(container, ["bottle-session", "--client", client], image.BOTTLE_USER,
                                           _workdir(state), tty=True, stdin=True)
    except SystemExit:  # killed: the client in the bottle would stay attached with nobody behind it
        with contextlib.suppress(BottleError):
            engine.exec(container, ["bottle-session", "--end", client], timeout=10)
        raise
    # Killed by a signal (137 when the bottle is stopped): look a little longer before saying why.
    if code != DETACHED and _stopping(engine, container, within=3.0 if code > 128 else 0.0):
        raise BottleError(f"bottle '{bottle_name}' was stopped while attached")
    if code == DETACHED:
        click.echo(f"detached; Claude goes on in {bottle_name}: `claude-bottle attach {bottle_name}` reconnects, "
                   f"`claude-bottle stop {bottle_name}` ends it", err=True)
        sys.exit(0)
    sys.exit(code)


def _stopping(engine: docker.Engine, container: str, within: float = 3.0) -> bool:
    """Whether `container` is going away: a `stop` from elsewhere ends our exec a moment before the engine
    says the container is no longer running."""
    deadline = time.monotonic() + within
    while True:
        state = engine.container(container)
        if state is None or not state.running or state.status in ("removing", "exited", "dead"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@main.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("bottle_name", metavar="BOTTLE", shell_complete=lambda ctx, param, incomplete: _complete_bottles(incomplete))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(bottle_name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in BOTTLE as its user, with the environment Claude gets: exec BOTTLE -- CMD…"""
    if command[:1] == ("--",):
        command = command[1:]
    if not command:
        raise click.UsageError("name a command to run: exec BOTTLE -- CMD…")
    engine = runtime.connect()
    state = _running(engine, bottle_name)
    tty = _has_terminal()
    with _signals_raise():
        code = engine.exec_interactive(state.name, ["bottle-exec", *command], image.BOTTLE_USER, _workdir(state),
                                       tty=tty, stdin=True)
    sys.exit(code)


@main.command()
@click.argument("bottle_names", metavar="BOTTLE...", nargs=-1, required=True,
                shell_complete=lambda ctx, param, incomplete: _complete_bottles(incomplete))
@click.option("--discard", is_flag=True, help="Throw the workspace's work away instead of bringing it back.")
def stop(bottle_names: tuple[str, ...], discard: bool) -> None:
    """Stop BOTTLEs: bring their workspace's work back, then remove everything made for them.

    If the work cannot come back, the bottle is kept and the error says why;
    --discard removes it without bringing anything back."""
    for name in bottle_names:
        cleanup.check_name(name)
    engine = runtime.connect()
    missing, failed = [], None
    for name in bottle_names:
        try:
            with _signals_raise():
                ended = session.stop(engine, os.environ, name, discard, anyones=False)
        except BottleError as e:
            click.echo(f"Error: {visible(str(e), newlines=True)}", err=True)
            failed = failed or e
            continue
        if ended is None:
            run = runs.get(os.environ, name)
            if run is not None and run.is_run and run.exit_status is not None:
                click.echo(f"{name}: already finished ({'stopped' if run.stopped else f'exit {run.exit_status}'}); "
                           f"its output stays until `claude-bottle rm {name}`", err=True)
                continue
            missing.append(name)
            continue
        _report(ended)
        click.echo(f"stopped {visible(name)}")
    if missing:
        raise BottleError(f"no bottle named {', '.join(repr(n) for n in missing)}: see `claude-bottle ps`")
    if failed is not None:
        sys.exit(failed.exit_code)


PS_FILTERS = ("agent", "bottle", "state", "owner", "name")


def _ps_filter(ctx, param, values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for v in values:
        key, sep, want = v.partition("=")
        if not sep or key not in PS_FILTERS:
            raise click.BadParameter(f"{v!r}: use KEY=VALUE with KEY one of {', '.join(PS_FILTERS)}")
        pairs.append((key, want))
    return pairs


@main.command()
@click.option("-a", "--all", "everyone", is_flag=True, help="Every user's bottles on this engine, not only yours.")
@click.option("-q", "--quiet", is_flag=True, help="Only the names.")
@click.option("-f", "--filter", "filters", multiple=True, callback=_ps_filter, metavar="KEY=VALUE",
              help=f"Only rows whose KEY ({', '.join(PS_FILTERS)}) is VALUE (state: starts with it). Repeatable: "
                   "the same KEY again is either value, another KEY must match too.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def ps(everyone: bool, quiet: bool, filters: list[tuple[str, str]], as_json: bool) -> None:
    """List your bottles and detached runs: name, agent, bottle, uptime (a finished run: how long it ran),
    state (a finished run: its exit status) and a finished run's result branch."""
    rows = [r for r in status.bottles(runtime.connect(), os.environ) if everyone or r.mine]
    def matches(r: status.BottleStatus, key: str, want: str) -> bool:
        return r.state.startswith(want) if key == "state" else getattr(r, key) == want

    wanted: dict[str, list[str]] = {}
    for key, want in filters:  # as docker's: the same key repeated is either, different keys are both
        wanted.setdefault(key, []).append(want)
    rows = [r for r in rows if all(any(matches(r, k, w) for w in ws) for k, ws in wanted.items())]
    if quiet:
        for r in rows:
            click.echo(visible(r.name))
    elif as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        nodes = any(r.node for r in rows)  # on Kubernetes
        _table([("NAME", "AGENT", "BOTTLE", "UPTIME", "STATE", "RESULT") + (("NODE",) if nodes else ())
                + (("OWNER",) if everyone else ())]
               + [(r.name, r.agent, r.bottle, _duration(r.uptime_seconds), r.state, r.result or "-")
                  + ((r.node or "-",) if nodes else ()) + ((r.owner,) if everyone else ()) for r in rows])


@main.command("wait")
@click.argument("bottle_names", metavar="BOTTLE...", nargs=-1, required=True,
                shell_complete=lambda ctx, param, incomplete: _complete_bottles(incomplete))
@click.option("--json", "as_json", is_flag=True, help="Print each run's exit status and result as JSON.")
def wait_(bottle_names: tuple[str, ...], as_json: bool) -> None:
    """Wait until detached runs finish; exit 1 if any failed."""
    records = []
    for name in bottle_names:
        run = runs.get(os.environ, name)
        if run is None or not run.is_run:
            raise BottleError(f"no detached run named '{name}': see `claude-bottle ps`")
        records.append(run)
    failed = False
    done = []
    for run in records:
        code = run.wait()
        done.append({"name": run.name, "exit_status": code, "result": run.result or None})
        if not as_json:
            click.echo(f"{visible(run.name)}: exit {code}" + (f", results in {visible(run.result)}" if run.result else ""))
        failed |= code != 0
    if as_json:
        click.echo(json.dumps(done, indent=2))
    sys.exit(1 if failed else 0)


@main.command("rm")
@click.argument("bottle_names", metavar="BOTTLE...", nargs=-1, required=True,
                shell_complete=lambda ctx, param, incomplete: _complete_bottles(incomplete))
def rm(bottle_names: tuple[str, ...]) -> None:
    """Remove finished detached runs: their output, egress report and result."""
    for name in bottle_names:
        run = runs.get(os.environ, name)
        if run is None or not run.is_run:
            raise BottleError(f"no detached run named '{name}': see `claude-bottle ps`")
        runs.remove(run)
        click.echo(f"removed {visible(name)}")


@main.command("cleanup")
@click.option("--all", "everyone", is_flag=True, help="Every user's bottles on this engine, not only yours.")
@click.option("-y", "--yes", is_flag=True, help="Remove without asking.")
def cleanup_(everyone: bool, yes: bool) -> None:
    """Remove your bottles (with --all, everyone's) and everything made for them, running or not, and your
    finished runs' records. A workspace's work is brought back first; a bottle whose work cannot come back is
    kept and reported."""
    engine = runtime.connect()
    objects = cleanup.everything(engine) if everyone else cleanup.of_user(engine)
    bottles = sorted({o.labels.get(cleanup.LABEL_BOTTLE, "") for o in objects})
    # Labels anyone with the engine can write: what no bottle of ours is ever named is not ours to stop.
    strange = [name for name in bottles if not cleanup.is_name(name)]
    bottles = [name for name in bottles if cleanup.is_name(name)]
    if strange:
        click.echo(f"note: left alone, labelled as bottles under names claude-bottle never gives: "
                   f"{visible(', '.join(repr(n) for n in strange))}", err=True)
    records = runs.on(engine, os.environ)
    if not bottles and not records:
        click.echo("nothing to remove")
        return
    click.echo(f"will remove {len(bottles)} bottle{'s' if len(bottles) != 1 else ''}"
               + (f": {visible(', '.join(bottles))}" if bottles else "")
               + (f"; {len(records)} run record{'s' if len(records) != 1 else ''}" if records else ""), err=True)
    if not yes:
        if not sys.stdin.isatty():
            raise Refused("stdin is not a terminal, so nobody can answer: pass --yes to remove them")
        if not click.confirm("remove them?", default=False, err=True):
            raise Refused("nothing removed")
    kept = []
    for name in bottles:
        try:
            ended = session.stop(engine, os.environ, name, anyones=everyone)
            _report(ended)
        except workspace.WorkNotBack as e:
            click.echo(f"Error: {visible(str(e), newlines=True)}", err=True)
            kept.append(name)
    for run in records:
        if run.name not in kept:
            runs.remove(run, force=True)
    click.echo(f"removed {len(bottles) - len(kept)} bottles"
               + (f"; kept {visible(', '.join(kept))}" if kept else ""))
    if kept:
        sys.exit(workspace.WorkNotBack.exit_code)


class _When(click.ParamType):
    """A moment: a duration back from now (90s, 10m, 1h30m, 2d) or a date and time (2026-11-27T14:05:00,
    taken as local time without a zone)."""

    name = "WHEN"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float):
            return value
        parts = re.fullmatch(r"(?:(\d{1,9})d)?(?:(\d{1,9})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?", value.strip())
        if parts and any(parts.groups()):
            days, hours, minutes, seconds = (int(g or 0) for g in parts.groups())
            return max(0.0, time.time() - (days * 86400 + hours * 3600 + minutes * 60 + seconds))
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
        if moment is not None:
            try:
                return max(0.0, moment.timestamp())
            except (ValueError, OverflowError, OSError):  # before the epoch, as the machine counts: all of it
                return 0.0
        self.fail(f"'{visible(value)}' is neither a duration such as 10m or 1h30m nor a date and time such "
                  "as 2026-11-27T14:05:00", param, ctx)


@main.command()
@click.argument("bottle_name", metavar="BOTTLE", shell_complete=lambda ctx, param, incomplete: _complete_bottles(incomplete))
@click.option("--egress", "show_egress", is_flag=True, help="What the sidecar allowed and blocked, per host.")
@click.option("--json", "as_json", is_flag=True, help="With --egress: print the table as JSON (with -f: a JSON "
                                                       "object per line for each change).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what comes (with --egress: each change to the "
                                                    "table) until the bottle ends.")
@click.option("-n", "--tail", type=click.IntRange(min=0), help="Only the last N lines of output.")
@click.option("--since", type=_When(), help="Only output from WHEN on: a duration back (10m, 1h30m) or a date "
                                            "and time (2026-11-27T14:05:00).")
def logs(bottle_name: str, show_egress: bool, as_json: bool, follow: bool, tail: int | None,
         since: float | None) -> None:
    """Show BOTTLE's own output (a run's: Claude's), or with --egress what its sidecar allowed and blocked.

    A finished run's output and egress report stay until `claude-bottle rm`."""
    if as_json and not show_egress:
        raise click.UsageError("--json only goes with --egress")
    if show_egress and (tail is not None or since is not None):
        raise click.UsageError("--tail and --since do not go with --egress, which shows a table per host")
    cleanup.check_name(bottle_name)
    run = runs.get(os.environ, bottle_name)
    if run is not None and run.is_run and not show_egress:  # Claude's output, kept on the host
        _run_output(run, follow, tail, since)
        return
    engine = runtime.connect()
    names = cleanup.Names(bottle_name)
    if not show_egress:
        state = engine.container(names.container)
        if state is None:
            raise BottleError(f"no bottle named '{bottle_name}': see `claude-bottle ps`")
        cleanup.check_mine(bottle_name, state.labels)
        _bottle_output(engine.logs(names.container, follow=follow, tail=tail, since=since))
        return
    gate = engine.container(names.sidecar)
    if gate is not None:
        cleanup.check_mine(bottle_name, gate.labels)
    if gate is not None and gate.running:
        report = egress.report(bottle.egress_report(engine, bottle_name))
    elif run is not None and run.egress_report.is_file():  # a finished run's, kept with its output
        report = egress.report(run.egress_report.read_text())
        follow = False  # nothing more will come
    else:
        raise BottleError(f"bottle '{bottle_name}' has no running sidecar and no kept egress report: see "
                          "`claude-bottle ps`")
    if follow:
        _follow_egress(engine, bottle_name, report, as_json)
        return
    if as_json:
        click.echo(json.dumps([r.to_json() for r in report.rows], indent=2))
        return
    _egress_table(report)


def _egress_table(report: egress.Report) -> None:
    _table([("HOST", "DECISION", "COUNT", "REASON")]
           + [(r.host, r.decision if r.allowed else r.decision.upper(), str(r.count), r.reason)
              for r in report.rows])
    if report.folded:
        click.echo(f"({report.folded} requests to more hosts than the sidecar keeps apart are counted together "
                   "under (other hosts))")


EGRESS_POLL_SECONDS = 1.0


def _follow_egress(engine: docker.Engine, name: str, report: egress.Report, as_json: bool) -> None:
    """The table as it is, then a line for each host and decision whose count grew, until the sidecar ends."""
    def key(r: egress.Decision) -> tuple[str, str, str]:
        return r.host, r.decision, r.reason

    if not as_json:
        _egress_table(report)
    seen = {key(r): r.count for r in report.rows}
    if as_json:
        for r in report.rows:
            click.echo(json.dumps({**r.to_json(), "new": r.count}))
    while True:
        time.sleep(EGRESS_POLL_SECONDS)
        gate = engine.container(cleanup.Names(name).sidecar)
        if gate is None or not gate.running:
            if not as_json:
                click.echo(f"(bottle {visible(name)} has ended)", err=True)
            return
        try:
            report = egress.report(bottle.egress_report(engine, name))
        except BottleError:  # the sidecar went away between the two calls
            continue
        for r in report.rows:
            grew = r.count - seen.get(key(r), 0)
            if grew <= 0:
                continue
            seen[key(r)] = r.count
            if as_json:
                click.echo(json.dumps({**r.to_json(), "new": grew}))
            else:
                click.echo(visible(f"{time.strftime('%H:%M:%S')}  {r.host}  "
                                   f"{r.decision if r.allowed else r.decision.upper()}  +{grew}"
                                   + (f"  {r.reason}" if r.reason else "")))


def _run_output(run: runs.Run, follow: bool, tail: int | None, since: float | None) -> None:
    start = run.offset_since(since) if since is not None else 0
    if tail is not None:
        with run.output.open("rb") as f:
            f.seek(start)
            text = f.read()
        lines = text.splitlines(keepends=True)
        kept = b"".join(lines[max(0, len(lines) - tail):]) if tail else b""
        _bottle_output([kept])
        start += len(text)
        if not follow:
            return
        chunks = run.follow(start=start)
    else:
        chunks = run.follow(start=start) if follow else iter([run.output.read_bytes()[start:]])
    _bottle_output(chunks)


def _image_present(tag: str) -> bool | None:
    """Whether this machine's Docker engine has the image (None: it cannot say, or bottles run on a cluster)."""
    if runtime.chosen() == "kubernetes":
        return None
    try:
        return docker.connect().image_exists(tag)
    except DockerUnavailable:
        return None


PROMPT_SHOWN_LINES = 20  # a longer project prompt is summarised, with the command that shows it whole


def _preflight(plan: bottle.LaunchPlan, err: bool = False, image_state: str = "", full: bool = False) -> None:
    """What the bottle will get, one item per line where the project file wrote any of it; lines the
    project file wrote are marked `+` in the left margin. Every value is made visible (no raw control
    characters or escape sequences), so what the terminal draws is what the manifests say."""
    a, b, p = plan.agent, plan.bottle, plan.project
    rows: list[tuple[bool, str, str]] = []  # (written by the project file, label, text)

    def add(label: str, text: str, marked: bool = False) -> None:
        rows.append((marked, label, text))

    if p is not None:
        state = (f"trusted ({p.trusted_by})" if p.trusted_by else
                 "NOT TRUSTED: `claude-bottle trust` shows all it asks for and allows it")
        add("project", f"{_source(p.file)}, {state}; lines marked + come from it", True)
    add("agent", f"{a.name} ({_source(a.file)})" + (f"; REPLACES {p.replaces}" if p and p.replaces else ""),
        bool(p and p.agent))
    add("bottle", f"{plan.name} from {_describe_trust(b)}" if not full else _describe_trust(b), bool(p and p.bottle))
    if not full:
        add("image", f"{plan.image.tag}" + (f" ({image_state})" if image_state else ""))
    if a.model:
        add("model", a.model, bool(p and p.agent))
    ctx = click.get_current_context(silent=True)
    extra = ctx.meta.get("claude_args") if ctx else None
    if extra:
        add("claude", "also given " + " ".join(shortened(arg, 80) for arg in extra))
    for i, v in enumerate(b.env or [None]):
        add("env" if i == 0 else "", "none" if v is None else _env_item(v), bool(v and p and v.name in p.env))
    for i, s in enumerate(a.skills or [None]):
        add("skills" if i == 0 else "", "none" if s is None else f"{s.name} ({s.path})", bool(s and p and p.agent))
    for i, h in enumerate(b.ssh or [None]):
        add("ssh" if i == 0 else "", "none" if h is None else
            f"{h.host} ({h.user + '@' if h.user else ''}{h.hostname}:{h.port}, key {h.identity_file})",
            bool(h and p and h.host in p.ssh))
    if full or not b.trusted or any(plan.from_project(h) for h in plan.allowlist):
        # Every host, when a project file had a say in them: a short summary could hide `*.com`.
        add("egress", f"{len(plan.allowlist)} hosts allowed:")
        width = max(len(h.host) for h in plan.allowlist)
        for h in plan.allowlist:
            add("", f"  {h.host.ljust(width)}  {h.reason}", plan.from_project(h))
    else:
        add("egress", egress.summary(plan.allowlist))
    for i, h in enumerate(b.private_hosts):
        add("private" if i == 0 else "", f"{h}" + (" (every port)" if h.port is None else "")
            + " (reachable on a private address, past the sidecar's SSRF protection)",
            bool(p and str(h) in p.private_hosts))
    add("https", f"inspected by the sidecar (DLP on URLs, headers and bodies; answers over "
                 f"{egress.MAX_INSPECTED_RESPONSE >> 20} MB refused), except:")
    for h in plan.passthrough:
        add("", f"  {h.host} ({h.reason}: judged by its name only)", bool(p and h.host in p.passthrough))
    token_to = ", ".join(f"{c.host}" + (f":{c.port}" if c.port not in (80, 443) else "") for c in plan.credentials
                         if c.inject)
    add("token", f"stays outside the bottle; the sidecar adds it to requests to {token_to}")
    _prompt_rows(a, add, whole=full or bool(p and p.agent), marked=bool(p and p.agent),
                 limit=None if full else PROMPT_SHOWN_LINES)
    ws = plan.workspace
    if ws:
        back = (f"results come back as branch {ws.branch}" if ws.branch else
                f"not a git repository: if anything in it changes, it comes back as a new folder {ws.results_dir}"
                if ws.results_dir else "nothing comes back (--no-results)")
        where = (f" (a folder of repository {ws.git_root}: its history and committed files go in too, and of the "
                 "uncommitted files only this folder's)" if ws.is_git and ws.subdir else "")
        add("workspace", f"{ws.path} copied in{where}; {back}")
    if plan.mount:
        add("mount", f"{plan.mount} read-write at {image.WORKSPACE}: WARNING: the agent changes these files on "
                     "your machine")
    if not plan.token_present and not full:
        add("token", f"{bottle.TOKEN_VARIABLE} is not set (run `claude setup-token` and export it)")
    marks = any(marked for marked, _, _ in rows)
    for marked, label, text in rows:
        gutter = ("+ " if marked else "  ") if marks else ""
        click.echo(f"{gutter}{(label + ':') if label else '':<10}{visible(text)}", err=err)


def _prompt_rows(a: manifest.Agent, add, whole: bool, marked: bool, limit: int | None) -> None:
    """The prompt: in full (as far as PROMPT_SHOWN_LINES) when it is the project's or asked for, else its
    first line; a project's prompt is every line the agent will be told, so a second line cannot hide."""
    lines = a.lines()
    if not lines:
        add("prompt", "(none)")
    elif whole:
        add("prompt", f"{len(lines)} line{'s' if len(lines) != 1 else ''}:", marked)
        for line in lines if limit is None else lines[:limit]:
            add("", f"| {line if limit is None else shortened(line)}", marked)
        if limit is not None and (len(lines) > limit or any(shortened(line) != visible(line) for line in lines)):
            add("", f"(cut short here: `claude-bottle info {a.name}` shows all of it)", marked)
    else:
        add("prompt", shortened(a.prompt_first_line) + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""))


def _env_item(v: manifest.EnvVar) -> str:
    if v.kind == "literal" and manifest.routes_token(v.name):
        # Not a secret, and the user must see where their token would go.
        return f"{v.name} = {v.source} (routes Claude Code's requests or credentials)"
    return f"{v.name} ({v.describe()})"


def _describe_trust(b: manifest.Bottle) -> str:
    if b.trusted:
        return f"{b.name} ({', '.join(_source(f) for f in b.files) or 'built-in'})"
    return f"{b.name} (UNTRUSTED: defined or changed by {_source(b.files[-1])})"


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _table(rows: list[tuple[str, ...]]) -> None:
    rows = [tuple(visible(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


class _OutputSink:
    """Where a bottle's output goes: our stdout, as it is into a file or a pipe, with its control
    characters made visible on a terminal, which would otherwise obey them (the agent writes this text)."""

    def __init__(self):
        self.out = click.get_binary_stream("stdout")
        self.terminal = self.out.isatty()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> None:
        if self.terminal:
            data = visible(self.decoder.decode(data), newlines=True).encode()
        self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _bottle_output(chunks: Iterable[bytes]) -> None:
    """Write a bottle's output as it comes, chunk by chunk (one decoder: a character may span two)."""
    sink = _OutputSink()
    for chunk in chunks:
        sink.write(chunk)
        sink.flush()


def run() -> None:
    """The `claude-bottle` command. Everything a command made is gone by the time `main` returns (each
    removes its own objects in `finally`), so the interpreter's own teardown, which only frees memory, is
    skipped: it costs every command about 10 ms."""
    try:
        main(prog_name="claude-bottle")
        code = 0
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away (`| head`) or a closed stream: nothing left to say to it
    os._exit(code or 0)


if __name__ == "__main__":
    sys.exit(run())
