"""One bottle's life: make it, fill it, run something in it, bring the agent's work back, tear it down.

`start`, `run`, each task of `run --tasks` and the supervisor of a detached run differ only in what
they run inside a Session; `stop` finishes one made elsewhere. The guarantees are written here once:
the work comes back before anything is destroyed, and if it cannot, the bottle is kept and the error
says how to retry or discard it; every step in the bottle has a time limit, so finishing always ends;
two processes never finish the same bottle at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import cleanup, image, lazy, pins, runs, workspace
from .cleanup import Names
from .docker import Engine
from .errors import BottleError, DockerUnavailable, EngineLost
from .paths import state_dir
from .workspace import Brought, Workspace, WorkNotBack

if TYPE_CHECKING:
    from .bottle import LaunchPlan

# Making a bottle needs most of the package; `stop` and `ps` need none of it.
bottle = lazy.Module(f"{__package__}.bottle")

FINISH_WAIT_SECONDS = 300  # for another process that is finishing the same bottle
ENGINE_WAIT_VARIABLE = "CLAUDE_BOTTLE_ENGINE_WAIT_SECONDS"


def engine_wait_seconds() -> int:
    """How long a session whose engine went away waits for it to come back (a daemon restart takes seconds; an
    upgrade, a minute or so) before it leaves the bottle, work and all, for `stop`."""
    return workspace.seconds_setting(ENGINE_WAIT_VARIABLE, 180)


@dataclass(frozen=True)
class Secrets:
    """What a launch hands the bottle: its variables' values, the token, the SSH keys (by Host)."""

    env: Mapping[str, str]
    token: str
    ssh_keys: Mapping[str, bytes]


@dataclass(frozen=True)
class Ended:
    """How a bottle ended: what of the agent's work came back."""

    name: str
    brought: Brought | None  # None: nothing was brought back (see discarded and gone)
    workspace: Workspace | None = None
    discarded: bool = False  # `stop --discard`
    gone: bool = False  # someone else had finished it already


def prepare(engine: Engine, plan: LaunchPlan, environ: Mapping[str, str],
            on_build: Callable[[str, str], None] = lambda tag, line: None) -> list[str]:
    """Before a launch: remove what sessions that ended without tearing down left behind, and make sure
    the images are here (`on_build` hears a build's progress). Returns the names
    of such bottles that are kept because they hold work."""
    dead, held = cleanup.of_dead_sessions(engine)
    cleanup.remove(engine, dead)
    if engine.kind == "kubernetes":
        return held  # the cluster's nodes get the images from a registry, or have them imported (README)
    bottle.ensure_pipelock_image(engine, pins.PIPELOCK_IMAGE)
    for spec in (plan.image, plan.sidecar_image):
        for line in image.ensure(engine, spec):
            on_build(spec.tag, line)
    return held


class Session:
    """A bottle from its launch (or from `resume`) to its end. Leaving the `with` block finishes it: the
    work comes back, then everything made for it is removed; `detach()` leaves it running instead."""

    def __init__(self, engine: Engine, name: str, workdir: str, ws: Workspace | None):
        self.engine = engine
        self.name = name
        self.workdir = workdir
        self.workspace = ws
        self.ended: Ended | None = None
        self._detached = False
        # Told once when the engine goes away and the session waits for it (the CLI says so to the user).
        self.on_engine_lost: Callable[[int], None] = lambda seconds: None

    @property
    def container(self) -> str:
        return Names(self.name).container

    @classmethod
    def launch(cls, engine: Engine, plan: LaunchPlan, secrets: Secrets, owner: str,
               copy_progress: Callable[[int, int], None] = lambda done, total: None) -> Session:
        """Make and fill the bottle of `plan`. On any failure, whatever was made is removed before the
        error goes on (there is no work yet to lose)."""
        if plan.workspace is not None and plan.workspace.is_git:
            forget_dead_starts(engine, plan.workspace.git_root)
        ws = workspace.prepare(plan.workspace, plan.name, {"owner": owner, "engine": engine_id(engine)}) \
            if plan.workspace else None
        plan = replace(plan, workspace=ws)
        try:
            bottle.launch(engine, plan, secrets.env, secrets.token, owner, secrets.ssh_keys)
            if ws is not None:
                workspace.copy_in(engine, plan.names.container, ws, plan.name, copy_progress)
        except BaseException:
            if ws is not None:  # first: a kill during the teardown leaves objects the next start removes
                workspace.release(ws, plan.name)
            cleanup.teardown(engine, plan.name)
            raise
        return cls(engine, plan.name, plan.workdir, ws)

    @classmethod
    def resume(cls, engine: Engine, name: str) -> Session:
        """The session of a bottle made by another process (a detached one), to run in or finish."""
        state = engine.container(Names(cleanup.check_name(name)).container)
        if state is None or state.labels.get(cleanup.LABEL_ROLE) != "bottle":
            raise BottleError(f"no bottle named '{name}': see `claude-bottle ps`")
        ws = workspace.from_labels(state.labels)
        return cls(engine, name, ws.workdir if ws else image.WORKSPACE, ws)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._detached:
            return
        deadline = None
        while True:
            try:
                self.ended = finish(self.engine, self.name, self.workspace)
                return
            except EngineLost as e:
                # A restarting engine stops every container but keeps them, the agent's work in them: once
                # it answers again, finishing starts the bottle again to bring the work back.
                if deadline is None:
                    wait = engine_wait_seconds()
                    deadline = time.monotonic() + wait
                    self.on_engine_lost(wait)
                if not _wait_for(self.engine, deadline):
                    raise EngineLost(f"{e}; it did not come back within {wait} s, so bottle "
                                     f"{self.name} is left as it is, with the agent's work: once the engine is "
                                     f"back, `claude-bottle stop {self.name}` brings it back") from None

    def detach(self) -> None:
        """Leave the bottle running when the `with` block ends (it is finished later, by `stop`)."""
        self._detached = True

    # -- what runs inside

    def run_interactive(self, argv: list[str], tty: bool, stdin: bool) -> int:
        return self._checked(self.engine.exec_interactive(self.container, argv, image.BOTTLE_USER, self.workdir,
                                                          tty=tty, stdin=stdin))

    def run_headless(self, argv: list[str], sink: BinaryIO) -> int:
        return self._checked(self.engine.exec_stream(self.container, argv, image.BOTTLE_USER, self.workdir, sink))

    def _checked(self, code: int) -> int:
        if code == 137:
            if bottle.out_of_memory(self.engine, self.name):
                raise OutOfMemory(f"bottle {self.name} ran out of memory and Claude was killed: raise "
                                  "bottles.<name>.resources.memory in the manifest (the default is "
                                  f"{bottle.DEFAULT_MEMORY})")
        return code


def _wait_for(engine: Engine, deadline: float) -> bool:
    """Wait until the engine answers again; False if it does not by `deadline`."""
    answers = getattr(engine, "answers", None)  # a cluster's API server is not waited for
    while answers is not None and time.monotonic() < deadline:
        if answers():
            return True
        time.sleep(1)
    return False


class OutOfMemory(BottleError):
    """The bottle hit its memory limit; the exit status stays the one Claude died with."""

    exit_code = 137


def finish(engine: Engine, name: str, ws: Workspace | None, discard: bool = False) -> Ended:
    """Bring the work of bottle `name` back (unless `discard`), then remove everything made for it.

    If the work cannot be brought back, the bottle is kept and WorkNotBack says how to retry or discard;
    an interruption (Ctrl-C, SIGTERM) while bringing it back keeps it too. Only one process finishes a
    bottle at a time; a second one finds it gone and has nothing to do."""
    with _finishing(name):
        state = engine.container(Names(name).container)
        if state is None:  # finished by someone else, or never made
            if ws is not None:
                workspace.release(ws, name)
            cleanup.teardown(engine, name)
            return Ended(name, None, ws, gone=True)
        brought = None
        removing = False
        if ws is not None and ws.brings_back and not discard:
            if not state.running:
                try:
                    engine.start_container(Names(name).container)  # on Kubernetes, one that stands in for it
                except BottleError as e:
                    # A `stop` killed while the engine removed the bottle: it began that once the work was back.
                    removing = engine.kind != "kubernetes" and "marked for removal" in str(e)
                    if not removing and (engine.kind != "kubernetes" or isinstance(e, DockerUnavailable)):
                        raise
                    if not removing:  # keep it for --discard
                        raise WorkNotBack(f"bottle {name}'s container has ended (its first process exited or was "
                                          f"killed), and its work cannot be brought back: {e}. `claude-bottle stop "
                                          f"--discard {name}` removes it") from None
            try:
                brought = None if removing else workspace.bring_back(engine, Names(name).container, ws, name)
            except EngineLost:
                raise  # nothing was lost: the session tries again once the engine is back
            except WorkNotBack as e:
                raise WorkNotBack(f"the agent's work in bottle {name} could not be brought back: {e}. The bottle is "
                                  f"kept: try again with `claude-bottle stop {name}`, look inside with "
                                  f"`claude-bottle exec {name} -- sh`, or throw the work away with "
                                  f"`claude-bottle stop --discard {name}`") from None
            except (KeyboardInterrupt, SystemExit):
                raise WorkNotBack(f"interrupted while bringing the agent's work back: bottle {name} is kept; "
                                  f"`claude-bottle stop {name}` brings it back") from None
            except Exception as e:  # unforeseen (CLAUDE_BOTTLE_DEBUG=1 shows where): said as it is, never lost
                raise WorkNotBack(f"bringing the agent's work back from bottle {name} failed ({type(e).__name__}: "
                                  f"{e}): the bottle is kept; `claude-bottle stop {name}` tries again") from e
        # The work is back (or thrown away): the start commit is let go before the bottle, so that a kill
        # between the two leaves a bottle that `stop` finishes, never a hidden ref nothing would remove.
        if ws is not None:
            workspace.release(ws, name)
        cleanup.teardown(engine, name)
        return Ended(name, brought, ws, discarded=discard)


engine_id = cleanup.engine_id


def forget_dead_starts(engine: Engine, repo: Path) -> None:
    """Drop the hidden refs in `repo` of bottles that will never finish: a `start` or `stop` killed before
    it could, whose bottle is gone from this engine. A ref whose maker still runs (a start under way), that
    another engine's bottle holds, or that we cannot read is left alone."""
    for name, origin in workspace.hidden_refs(repo).items():
        if origin is None or origin.get("engine") != engine_id(engine):
            continue
        if cleanup.owner_alive(origin.get("owner", "")):  # (which removes a dead session's lock file)
            continue
        try:
            cleanup.check_name(name)
        except BottleError:
            continue
        if not cleanup.of_bottle(engine, name):
            workspace.drop_hidden_ref(repo, name)


def _finishing(name: str):
    """A lock per bottle name, so two `stop`s, or `stop` and the session itself, take turns."""
    folder = state_dir(os.environ) / "finishing"
    return _FileLock(folder / f"{cleanup.check_name(name)}.lock", FINISH_WAIT_SECONDS)


class _FileLock:
    def __init__(self, path: Path, wait: float):
        self.path, self.wait = path, wait

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise BottleError(f"another process has been finishing {self.path.stem} for "
                                      f"{self.wait:.0f} s: try again later") from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        os.close(self.fd)


def keep_egress_report(engine: Engine, run: runs.Run) -> None:
    """Keep a detached run's egress report (secrets redacted) with its output, for after its bottle is gone."""
    try:
        report = bottle.egress_report(engine, run.name)
    except BottleError:
        return  # no sidecar any more: nothing more to keep
    run.egress_report.write_text(report)


def stop(engine: Engine, environ: Mapping[str, str], name: str, discard: bool = False,
         anyones: bool = False) -> Ended | None:
    """`claude-bottle stop NAME`: finish a bottle of this user's (`anyones`: of anyone's, for `cleanup
    --all`). A detached run is marked stopped (its output stays until `rm`); a detached session's record
    goes. None: there was no such bottle."""
    cleanup.check_name(name)
    record = runs.get(environ, name)
    state = engine.container(Names(name).container)
    if state is not None and state.labels.get(cleanup.LABEL_ROLE) != "bottle":
        state = None  # NAME-sidecar and the like: a part of a bottle, not one
    parts = cleanup.of_bottle(engine, name) if state is None else []
    if state is None and not parts:
        if record is not None and not record.is_run:
            runs.remove(record)
        return None
    if not anyones:
        for labels in [state.labels] if state is not None else [p.labels for p in parts]:
            cleanup.check_mine(name, labels)
    ws = workspace.from_labels(state.labels) if state else None
    if record is not None and record.is_run and record.exit_status is None:
        record.mark_stopped()
        keep_egress_report(engine, record)
    ended = finish(engine, name, ws, discard)
    if record is not None and not record.is_run:
        runs.remove(record)
    return ended
