"""Detached headless runs: their record on the host (output, exit status), kept until `rm` or `cleanup`.

A detached run's bottle is removed as soon as Claude finishes; what the user
asked for, the output and the result, stays in a private folder under the
user's state directory, one folder per bottle.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import bottle, cleanup, image, workspace
from .docker import Engine
from .errors import BottleError
from .manifest import state_dir
from .tasks import COULD_NOT_RUN


@dataclass(frozen=True)
class Run:
    name: str
    folder: Path

    @property
    def output(self) -> Path:
        return self.folder / "output"

    @property
    def meta(self) -> dict:
        try:
            return json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    @property
    def exit_status(self) -> int | None:
        """None while Claude runs; COULD_NOT_RUN if the process supervising it died without an answer
        (so `wait` cannot hang on a run nobody will finish)."""
        try:
            return int((self.folder / "status").read_text())
        except (OSError, ValueError):
            pass
        try:
            supervisor = cleanup.Owner.parse((self.folder / "supervisor").read_text().strip())
        except OSError:
            return None  # not started yet
        if supervisor is not None and not supervisor.alive() and not (self.folder / "status").exists():
            return COULD_NOT_RUN
        return None

    def finish(self, status: int) -> None:
        tmp = self.folder / "status.tmp"
        tmp.write_text(f"{status}\n")
        tmp.replace(self.folder / "status")  # appears whole, for `wait` and `ps`

    def follow(self, poll: float = 0.2) -> Iterator[bytes]:
        """The output so far, then what is added, until the run has finished."""
        with self.output.open("rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                if self.exit_status is not None:
                    rest = f.read()
                    if rest:
                        yield rest
                    return
                time.sleep(poll)


def root(environ: Mapping[str, str]) -> Path:
    return state_dir(environ) / "runs"


def create(environ: Mapping[str, str], name: str, meta: dict) -> Run:
    folder = root(environ) / name
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(folder.parent, 0o700)
    run = Run(name, folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    run.output.touch(mode=0o600)
    return run


def get(environ: Mapping[str, str], name: str) -> Run | None:
    folder = root(environ) / name
    return Run(name, folder) if (folder / "meta.json").is_file() else None


def all_runs(environ: Mapping[str, str]) -> list[Run]:
    base = root(environ)
    return [Run(d.name, d) for d in sorted(base.iterdir()) if (d / "meta.json").is_file()] if base.is_dir() else []


def remove(run: Run) -> None:
    if run.exit_status is None:
        raise BottleError(f"run '{run.name}' is still running: stop it first (claude-bottle stop {run.name})")
    shutil.rmtree(run.folder)


def supervise(engine: Engine, run: Run, argv: list[str]) -> int:
    """Run a detached run's command in its bottle, appending the output to the record as it comes;
    bring a workspace's work back; remove the bottle and everything made for it; then write the exit
    status (so a finished status means the bottle is gone)."""
    (run.folder / "supervisor").write_text(cleanup.Owner.current().label())
    container = bottle.Names(run.name).container
    with run.output.open("ab") as sink:
        try:
            code = engine.exec_stream(container, argv, image.BOTTLE_USER, image.WORKSPACE, sink)
            ws = bottle.results_of(engine, run.name)
            if ws:
                commits = workspace.bring_back(engine, container, ws)
                sink.write(f"\nresults: {commits} new commit(s) on branch {ws.branch} in {ws.git_root}\n".encode()
                           if commits else b"\nresults: no changes, no branch made\n")
        except Exception as e:  # the record must end with a status whatever happened
            sink.write(f"\nError: {e}\n".encode())
            code = COULD_NOT_RUN
        finally:
            bottle.teardown(engine, run.name)
    if run.folder.is_dir():  # cleanup may have removed the record meanwhile
        run.finish(code)
    return code
