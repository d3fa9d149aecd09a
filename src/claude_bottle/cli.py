"""The command line: parses arguments, calls the core, prints for the user and picks exit codes.

The only module that prints or exits. Errors from the core arrive as
BottleError and leave as `Error: <message>` on stderr with the error's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import click

from . import __version__, bottle, cleanup, docker, egress, image, manifest, pins, runs, ssh, tasks, workspace
from .errors import BottleError, DockerUnavailable, ManifestError, Refused
from .terminal import visible, visible_bytes


class _Group(click.Group):
    """Turns BottleError into `Error: …` and its exit code; other errors keep their traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BottleError as e:
            if os.environ.get("CLAUDE_BOTTLE_DEBUG"):
                traceback.print_exc()
            # Messages quote manifests, labels and bottle output: nothing in them may drive the terminal.
            click.echo(f"Error: {visible(str(e), newlines=True)}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="claude-bottle")
def main() -> None:
    """Run Claude Code with full permissions in disposable, egress-filtered Docker containers.

    Agents and bottles come from ~/claude-bottle.json and the project's
    claude-bottle.json (in this folder or above it, up to the repository's root);
    without either, the built-in `default` agent runs with Claude Code's hosts only.
    A project file is untrusted until you allow it with `claude-bottle trust`.
    Set CLAUDE_BOTTLE_DEBUG=1 to see tracebacks.
    """


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


def _bottle_label(b: manifest.Bottle) -> str:
    return b.name if b.trusted else f"{b.name} (untrusted)"


@main.command("list")
@_manifest_options
def list_agents() -> None:
    """List agents and the bottles they run in."""
    m = _load()
    rows = [("AGENT", "BOTTLE", "DEFINED IN")]
    for name in sorted(m.agents):
        a = m.agents[name]
        where = _source(a.file)
        if m.agent_from_project(a) and not m.project.trusted:
            where += " (not trusted)"
        rows.append((name, _bottle_label(m.bottle_of(a)), where))
    _table(rows)


@main.command()
@click.argument("agent")
@_manifest_options
def info(agent: str) -> None:
    """Show what AGENT gets: bottle, env names, skills, SSH hosts, every allowed host, the whole prompt."""
    _preflight(bottle.plan(_load(), agent, os.environ), full=True)


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
    click.echo(f"allowed: {visible(str(path))}; any change to it makes it untrusted again")


@main.command()
@click.option("--no-cache", is_flag=True, help="Rebuild every layer (fresh packages), not just what changed.")
def build(no_cache: bool) -> None:
    """Build (or rebuild) the bottle image, showing the build's progress."""
    m = _load()
    spec = image.spec(m.image)
    engine = docker.connect()
    click.echo(f"building {spec.tag} (base {m.image.base}, Claude Code {m.image.claude_code_version})", err=True)
    for line in image.build(engine, spec, nocache=no_cache):
        click.echo(visible(line, newlines=True), nl=False, err=True)
    click.echo(spec.tag)


def _launch_options(f):
    """The options `start` and `run` share."""
    f = _manifest_options(f)
    for option in reversed([
        click.option("-y", "--yes", is_flag=True, help="Launch without asking (needed when stdin is not a terminal)."),
        click.option("--trust-project", is_flag=True,
                     help="Trust the project's claude-bottle.json for this run only (see `claude-bottle trust`)."),
        click.option("-w", "--workspace", "workspace_dir", type=click.Path(path_type=Path),
                     help="Copy DIR into /workspace (honouring .gitignore); a git repository's work comes back "
                          "as a branch."),
        click.option("--no-results", is_flag=True, help="With --workspace: bring nothing back."),
        click.option("--mount", type=click.Path(path_type=Path),
                     help="Bind-mount DIR read-write at /workspace instead: the agent changes your files directly."),
    ]):
        f = option(f)
    return f


@main.command()
@click.argument("agent", default=manifest.DEFAULT_AGENT)
@click.option("--dry-run", is_flag=True, help="Show the launch plan and exit; creates nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON.")
@click.option("-d", "--detach", is_flag=True, help="Leave the bottle running without Claude; print its name.")
@_launch_options
def start(agent: str, dry_run: bool, as_json: bool, detach: bool, yes: bool, trust_project: bool,
          workspace_dir: Path | None, no_results: bool, mount: Path | None) -> None:
    """Start AGENT (default: the built-in `default` agent) in a new bottle and open Claude in it.

    The bottle, its sidecar and everything made for them are removed when Claude
    exits, on Ctrl-C, SIGTERM, SIGHUP or a closed terminal. The exit status is Claude's.
    With --workspace on a git repository, the agent's commits and uncommitted
    changes come back first as branch bottle/<agent>/<bottle>.
    """
    if as_json and not dry_run:
        raise click.UsageError("--json only goes with --dry-run")
    plan = _plan(agent, workspace_dir, no_results, mount, trust_project)
    if dry_run:
        _dry_run(plan, as_json)
        return
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    sys.exit(_launch(plan, yes, detach, ["bottle-claude"], tty=tty, stdin=True))


@main.command("run")
@click.argument("agent")
@click.argument("prompt", required=False)
@click.option("--output-format", type=click.Choice(["text", "json", "stream-json"]), default="text",
              show_default=True, help="Passed to claude -p.")
@click.option("--tasks", "tasks_file", type=click.Path(path_type=Path),
              help="Run every task in FILE (a prompt per line, or JSON lines with prompt and workspace), "
                   "a bottle each.")
@click.option("--parallel", type=click.IntRange(1, 64),
              help="With --tasks: how many bottles at once (default: from this machine's cores and memory).")
@click.option("-d", "--detach", is_flag=True,
              help="Return at once with the bottle's name; see ps, logs -f, wait and rm.")
@_launch_options
def run_headless(agent: str, prompt: str | None, output_format: str, tasks_file: Path | None,
                 parallel: int | None, detach: bool, yes: bool, trust_project: bool, workspace_dir: Path | None,
                 no_results: bool, mount: Path | None) -> None:
    """Run AGENT headless on PROMPT in a fresh bottle (claude -p), streaming its output.

    The bottle is removed afterwards (a workspace's work comes back first) and
    the exit status is Claude's. With --tasks, each task gets its own bottle, at
    most --parallel at once; a summary table follows, and the exit status is 1
    if any task failed.
    """
    if (prompt is None) == (tasks_file is None):
        raise click.UsageError("give a PROMPT or --tasks FILE, not both")
    if parallel and not tasks_file:
        raise click.UsageError("--parallel only goes with --tasks")
    if tasks_file:
        if detach:
            raise click.UsageError("--detach does not go with --tasks")
        if mount:
            raise click.UsageError("--mount does not go with --tasks: parallel bottles would share one folder")
        sys.exit(_run_tasks(agent, tasks_file, parallel, output_format, yes, trust_project, workspace_dir,
                            no_results))
    plan = _plan(agent, workspace_dir, no_results, mount, trust_project)
    sys.exit(_launch(plan, yes, detach, _claude_p(prompt, output_format), tty=False, stdin=False,
                     supervised=detach))


def _claude_p(prompt: str, output_format: str) -> list[str]:
    argv = ["bottle-claude", "-p", prompt, "--output-format", output_format]
    if output_format == "stream-json":
        argv.append("--verbose")  # claude -p requires it for stream-json
    return argv


def _run_tasks(agent: str, tasks_file: Path, parallel: int | None, output_format: str, yes: bool,
               trust_project: bool, workspace_dir: Path | None, no_results: bool) -> int:
    task_list = tasks.read(tasks_file, workspace_dir)
    plans = [_plan(agent, t.workspace, no_results, None, trust_project) for t in task_list]
    parallel = parallel or tasks.default_parallelism()
    click.echo(f"tasks:    {len(task_list)} from {tasks_file}, {parallel} at a time", err=True)
    env, token, keys, _ = _consent_and_prepare(plans[0], yes)

    def done(r: tasks.Result) -> None:
        click.echo(f"--- task {r.index} ({r.bottle}): exit {r.exit_status} in {r.seconds:.1f}s ---")
        _bottle_output(r.output.encode())
        if not r.output.endswith("\n"):
            click.echo()

    with _signals_raise():
        try:
            results = tasks.run_all(plans, task_list, env, token, keys, parallel,
                                    lambda t: _claude_p(t.prompt, output_format), done)
        except _Interrupted as e:
            return 128 + e.signum
        except KeyboardInterrupt:
            return 130
    rows = [("TASK", "BOTTLE", "EXIT", "DURATION", "BRANCH")]
    for r in results:
        first = r.task.prompt.splitlines()[0]
        rows.append((f"{r.index}: {first[:40]}{'…' if len(first) > 40 else ''}", r.bottle, str(r.exit_status),
                     f"{r.seconds:.1f}s", r.branch or "-"))
    _table(rows)
    return 1 if any(r.exit_status for r in results) else 0


def _plan(agent: str, workspace_dir: Path | None, no_results: bool, mount: Path | None,
          trust_project: bool) -> bottle.LaunchPlan:
    if no_results and not workspace_dir:
        raise click.UsageError("--no-results only goes with --workspace")
    return bottle.plan(_load(trust_project), agent, os.environ, workspace_dir, results=not no_results, mount=mount)


def _launch(plan: bottle.LaunchPlan, yes: bool, detach: bool, argv: list[str],
            tty: bool, stdin: bool, supervised: bool = False) -> int:
    """Preflight, consent, launch, run `argv` in the bottle (unless detached), bring work back, tear
    down on every way out; returns the exit status to leave with. A `supervised` detached bottle runs
    `argv` under a background process that records its output and tears the bottle down after."""
    env, token, keys, engine = _consent_and_prepare(plan, yes)
    owner = cleanup.DETACHED if detach else cleanup.Owner.current().label()
    with _signals_raise():
        copied = False
        try:
            bottle.launch(engine, plan, env, token, owner, keys)
            if plan.workspace:
                workspace.copy_in(engine, plan.names.container, plan.workspace, _copy_progress)
                copied = True
            if detach:
                if supervised:
                    _supervise_in_background(plan, argv)
                click.echo(plan.name)
                return 0
            return engine.exec_interactive(plan.names.container, argv, image.BOTTLE_USER, image.WORKSPACE,
                                           tty=tty, stdin=stdin)
        except (_Interrupted, KeyboardInterrupt) as e:
            if detach:  # stopped before it was handed over: do not leave it behind
                bottle.teardown(engine, plan.name)
            return 128 + e.signum if isinstance(e, _Interrupted) else 130
        except BaseException:
            if detach:  # a detached bottle that failed to fill is of no use: do not leave it
                bottle.teardown(engine, plan.name)
            raise
        finally:
            if not detach:
                try:
                    if copied:
                        _bring_back(engine, plan.name, plan.workspace)
                finally:
                    bottle.teardown(engine, plan.name)


def _consent_and_prepare(plan: bottle.LaunchPlan, yes: bool
                         ) -> tuple[dict[str, str], str, dict[str, bytes], docker.Engine]:
    """Token, preflight, every check that needs no secret, the user's yes, the env values; then an
    engine with leftovers of dead sessions gone and both images present. Nothing is created, and no
    secret read, before the user's answer."""
    token = os.environ.get(bottle.TOKEN_VARIABLE)
    if not token:
        raise BottleError(
            f"{bottle.TOKEN_VARIABLE} is not set: run `claude setup-token` on this machine and "
            f"export the token it prints as {bottle.TOKEN_VARIABLE}"
        )
    interactive = sys.stdin.isatty()
    _preflight(plan, err=True)
    plan.check_trust()
    manifest.check_env(plan.bottle, os.environ, can_ask=interactive)
    if not yes:
        if not interactive:
            raise Refused("stdin is not a terminal, so nobody can answer the launch question: "
                          "pass --yes to launch anyway")
        if not click.confirm("launch this agent?", default=False, err=True):
            raise Refused("not launched")
    ask = (lambda question: click.prompt(question, hide_input=True, err=True, prompt_suffix="")) \
        if interactive else None
    env = manifest.resolve_env(plan.bottle, os.environ, ask)
    keys = {h.host: ssh.read_key(h) for h in plan.bottle.ssh}

    engine = docker.connect()
    cleanup.remove(engine, cleanup.of_dead_sessions(engine))
    bottle.ensure_sidecar_image(engine, pins.PIPELOCK_IMAGE)
    _build_if_missing(engine, plan.image)
    return env, token, keys, engine


def _supervise_in_background(plan: bottle.LaunchPlan, argv: list[str]) -> None:
    """Record the run and leave a process behind that outlives this one (own session, no terminal)."""
    runs.create(os.environ, plan.name, {"agent": plan.agent.name, "bottle": plan.bottle.name,
                                        "started": time.time(), "prompt": argv[2] if len(argv) > 2 else ""})
    subprocess.Popen([sys.executable, "-m", "claude_bottle", "_supervise", plan.name, "--", *argv],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


@main.command("_supervise", hidden=True, context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def supervise(name: str, argv: tuple[str, ...]) -> None:
    """Runs a detached run's command, records its output and status, brings work back, removes the bottle."""
    run = runs.get(os.environ, name)
    if run is None:
        raise BottleError(f"no record of run '{name}'")
    argv = argv[1:] if argv[:1] == ("--",) else argv
    runs.supervise(docker.connect(), run, list(argv))


def _copy_progress(done: int, total: int) -> None:
    click.echo(f"\rcopying workspace: {done}/{total} files", nl=done == total, err=True)


def _bring_back(engine: docker.Engine, name: str, ws: workspace.Workspace | None) -> None:
    if ws is None or not ws.branch:
        return
    commits = workspace.bring_back(engine, bottle.Names(name).container, ws)
    if commits:
        click.echo(f"results: {commits} new commit{'s' if commits != 1 else ''} on branch {ws.branch} "
                   f"in {ws.git_root}", err=True)
    else:
        click.echo("results: no changes, no branch made", err=True)


def _dry_run(plan: bottle.LaunchPlan, as_json: bool) -> None:
    present = _image_present(plan.image.tag)
    if as_json:
        click.echo(json.dumps(plan.to_json(image_present=present), indent=2))
        plan.check_trust()
        return
    _preflight(plan, image_state={True: "present", False: "will be built",
                                  None: "unknown (Docker not reachable)"}[present])
    n = plan.names
    click.echo(f"creates:  containers {n.container}, {n.relay}, {n.sidecar}; "
               f"network {n.egress_network}; volumes {n.proxy_volume}, {n.config_volume}")
    click.echo("dry run: nothing was created")
    # What `start` would refuse, found without reading a secret or creating anything.
    plan.check_trust()
    manifest.check_env(plan.bottle, os.environ, can_ask=sys.stdin.isatty())


def _build_if_missing(engine: docker.Engine, spec: image.ImageSpec) -> None:
    first = True
    for line in image.ensure(engine, spec):
        if first:
            click.echo(f"building {spec.tag} (first use; later starts reuse it)", err=True)
            first = False
        click.echo(visible(line, newlines=True), nl=False, err=True)


class _Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C, so teardown runs."""
    def handler(signum, _frame):
        raise _Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _running(engine: docker.Engine, name: str) -> str:
    container = bottle.Names(name).container
    info = engine.inspect_container(container)
    if not info or not info["State"]["Running"]:
        raise BottleError(f"no running bottle named '{name}': see `claude-bottle ps`")
    return container


@main.command()
@click.argument("bottle_name", metavar="BOTTLE")
def attach(bottle_name: str) -> None:
    """Open Claude in the running BOTTLE (one started with --detach)."""
    engine = docker.connect()
    container = _running(engine, bottle_name)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    sys.exit(engine.exec_interactive(container, ["bottle-claude"], image.BOTTLE_USER, image.WORKSPACE, tty=tty,
                                     stdin=True))


@main.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("bottle_name", metavar="BOTTLE")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(bottle_name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in BOTTLE as its user, with the environment Claude gets: exec BOTTLE -- CMD…"""
    if command[:1] == ("--",):
        command = command[1:]
    if not command:
        raise click.UsageError("name a command to run: exec BOTTLE -- CMD…")
    engine = docker.connect()
    container = _running(engine, bottle_name)
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    sys.exit(engine.exec_interactive(container, ["bottle-exec", *command], image.BOTTLE_USER,
                                     image.WORKSPACE, tty=tty, stdin=True))


@main.command()
@click.argument("bottle_names", metavar="BOTTLE...", nargs=-1, required=True)
def stop(bottle_names: tuple[str, ...]) -> None:
    """Stop BOTTLEs and remove everything made for them (a workspace's work comes back first)."""
    engine = docker.connect()
    missing = []
    for name in bottle_names:
        try:
            _bring_back(engine, name, bottle.results_of(engine, name))
        except BottleError as e:
            click.echo(f"Error: {visible(str(e), newlines=True)} (stopping {visible(name)} anyway)", err=True)
        if bottle.teardown(engine, name):
            click.echo(f"stopped {visible(name)}")
        else:
            missing.append(name)
    if missing:
        raise BottleError(f"no bottle named {', '.join(repr(n) for n in missing)}: see `claude-bottle ps`")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the bottles as JSON.")
def ps(as_json: bool) -> None:
    """List bottles and detached runs: name, agent, bottle, uptime, state (a finished run: its exit status)."""
    engine = docker.connect()
    now = time.time()
    rows = {
        c.labels.get(cleanup.LABEL_BOTTLE, ""): {
            "name": c.labels.get(cleanup.LABEL_BOTTLE, ""), "agent": c.labels.get(cleanup.LABEL_AGENT, ""),
            "bottle": c.labels.get(cleanup.LABEL_CONFIG, ""), "uptime_seconds": max(0, int(now - c.created)),
            "state": c.state, "detached": c.labels.get(cleanup.LABEL_OWNER) == cleanup.DETACHED,
            "exit_status": None}
        for c in engine.find({cleanup.LABEL_ROLE: "bottle"}) if c.kind == "container"
    }
    for run in runs.all_runs(os.environ):
        meta, status = run.meta, run.exit_status
        row = rows.setdefault(run.name, {
            "name": run.name, "agent": meta.get("agent", ""), "bottle": meta.get("bottle", ""),
            "uptime_seconds": max(0, int(now - meta.get("started", now))), "state": "gone", "detached": True,
            "exit_status": None})
        if status is not None:
            row.update(state=f"exited ({status})", exit_status=status)
    ordered = sorted(rows.values(), key=lambda r: r["uptime_seconds"])
    if as_json:
        click.echo(json.dumps(ordered, indent=2))
        return
    _table([("NAME", "AGENT", "BOTTLE", "UPTIME", "STATE")]
           + [(r["name"], r["agent"], r["bottle"], _duration(r["uptime_seconds"]), r["state"]) for r in ordered])


@main.command("wait")
@click.argument("bottle_names", metavar="BOTTLE...", nargs=-1, required=True)
def wait_(bottle_names: tuple[str, ...]) -> None:
    """Wait until detached runs finish; exit 1 if any failed."""
    records = []
    for name in bottle_names:
        run = runs.get(os.environ, name)
        if run is None:
            raise BottleError(f"no detached run named '{name}': see `claude-bottle ps`")
        records.append(run)
    failed = False
    for run in records:
        while run.exit_status is None:
            time.sleep(0.2)
        click.echo(f"{visible(run.name)}: exit {run.exit_status}")
        failed |= run.exit_status != 0
    sys.exit(1 if failed else 0)


@main.command("rm")
@click.argument("bottle_names", metavar="BOTTLE...", nargs=-1, required=True)
def rm(bottle_names: tuple[str, ...]) -> None:
    """Remove finished detached runs: their output and result."""
    for name in bottle_names:
        run = runs.get(os.environ, name)
        if run is None:
            raise BottleError(f"no detached run named '{name}': see `claude-bottle ps`")
        runs.remove(run)
        click.echo(f"removed {visible(name)}")


@main.command("cleanup")
def cleanup_() -> None:
    """Remove every container, network and volume of claude-bottle, running or not, and every run's record."""
    engine = docker.connect()
    removed = cleanup.remove(engine, cleanup.everything(engine))
    bottles = sorted({o.labels.get(cleanup.LABEL_BOTTLE, "") for o in removed})
    records = runs.all_runs(os.environ)
    for run in records:
        shutil.rmtree(run.folder, ignore_errors=True)
    click.echo(f"removed {len(removed)} objects of {len(bottles)} bottles" + (f": {visible(', '.join(bottles))}" if bottles else "")
               + (f"; {len(records)} run records" if records else ""))


@main.command()
@click.argument("bottle_name", metavar="BOTTLE")
@click.option("--egress", "show_egress", is_flag=True, help="What the sidecar allowed and blocked, per host.")
@click.option("--json", "as_json", is_flag=True, help="With --egress: print the table as JSON.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output (not with --egress).")
def logs(bottle_name: str, show_egress: bool, as_json: bool, follow: bool) -> None:
    """Show BOTTLE's own output, or with --egress what its sidecar allowed and blocked."""
    if as_json and not show_egress:
        raise click.UsageError("--json only goes with --egress")
    if follow and show_egress:
        raise click.UsageError("--follow does not go with --egress")
    run = runs.get(os.environ, bottle_name)
    if run is not None and not show_egress:  # a detached run: Claude's output, kept on the host
        chunks = run.follow() if follow else iter([run.output.read_bytes()])
        for chunk in chunks:
            _bottle_output(chunk)
        return
    engine = docker.connect()
    names = bottle.Names(bottle_name)
    if not engine.inspect_container(names.container):
        raise BottleError(f"no bottle named '{bottle_name}': see `claude-bottle ps`")
    if not show_egress:
        for chunk in engine.logs(names.container, follow=follow):
            _bottle_output(chunk)
        return
    relay = engine.inspect_container(names.relay)
    if not relay or not relay["State"]["Running"]:
        raise BottleError(f"bottle '{bottle_name}' has no running sidecar, so no egress log")
    rows = egress.report(bottle.egress_log(engine, bottle_name))
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    _table([("HOST", "DECISION", "COUNT", "REASON")]
           + [(r.host, "allowed" if r.allowed else "BLOCKED", str(r.count), r.reason) for r in rows])


def _image_present(tag: str) -> bool | None:
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
    if b.private_hosts:
        add("private", f"{', '.join(b.private_hosts)} (reachable on private addresses, past the sidecar's SSRF "
                       "protection)", bool(p and p.private_hosts))
    _prompt_rows(a, add, whole=full or bool(p and p.agent), marked=bool(p and p.agent),
                 limit=None if full else PROMPT_SHOWN_LINES)
    ws = plan.workspace
    if ws:
        back = (f"results come back as branch {ws.branch}" if ws.branch else
                "nothing comes back (--no-results)" if ws.is_git else "not a git repository: nothing comes back")
        add("workspace", f"{ws.path} copied in; {back}")
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
    elif whole and (limit is None or len(lines) <= limit):
        add("prompt", f"{len(lines)} line{'s' if len(lines) != 1 else ''}:", marked)
        for line in lines:
            add("", f"| {line}", marked)
    elif whole:
        add("prompt", f"{len(lines)} lines, first: {a.prompt_first_line}; read it whole with "
                      f"`claude-bottle info {a.name}`", marked)
    else:
        add("prompt", a.prompt_first_line + (f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""))


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


def _bottle_output(data: bytes) -> None:
    """What a bottle printed: as it is into a file or a pipe, with its control characters made visible
    on a terminal, which would otherwise obey them (the agent writes this text)."""
    out = click.get_binary_stream("stdout")
    out.write(visible_bytes(data) if out.isatty() else data)
    out.flush()


def run() -> None:
    main(prog_name="claude-bottle")


if __name__ == "__main__":
    sys.exit(run())
