"""Detached bottles: what the host remembers of each one, in a private folder per bottle under the
user's state folder, until `stop` (a detached session) or `rm` (a finished run).

A record says the bottle lives on without its CLI (so no one takes it for a crashed session's), who
looks after it (the lock of the process supervising a run), and for a run its output, exit status and
egress report, kept after its bottle is gone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import lazy
from .cleanup import check_name, engine_id, owner_alive
from .errors import BottleError
from .paths import state_dir

shutil = lazy.Module("shutil")  # for `rm` alone

# The exit status of a run whose bottle could not be made or run, or whose supervisor died (docker run's).
COULD_NOT_RUN = 125


@dataclass(frozen=True)
class Run:
    name: str
    folder: Path

    @property
    def output(self) -> Path:
        return self.folder / "output"

    @property
    def egress_report(self) -> Path:
        return self.folder / "egress.json"

    @property
    def meta(self) -> dict:
        try:
            return json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    @property
    def is_run(self) -> bool:
        """A headless run (with output and an exit status), not a detached interactive session."""
        return self.meta.get("kind") == "run"

    @property
    def finished(self) -> float | None:
        try:
            return (self.folder / "status").stat().st_mtime
        except OSError:
            return None

    @property
    def exit_status(self) -> int | None:
        """None while the run goes on; COULD_NOT_RUN once the process looking after it is gone without an
        answer (so `wait` cannot hang on a run nobody will finish)."""
        try:
            return int((self.folder / "status").read_text())
        except (OSError, ValueError):
            pass
        if not self.is_run:
            return None
        try:
            owner = (self.folder / "owner").read_text().strip()
        except OSError:
            owner = ""
        if owner and owner_alive(owner):
            return None
        try:  # the supervisor may have finished in between
            return int((self.folder / "status").read_text())
        except (OSError, ValueError):
            return COULD_NOT_RUN

    @property
    def result(self) -> str:
        """Where the run's work came back: a branch, a folder, or "" (nothing, or not yet)."""
        try:
            return (self.folder / "result").read_text().strip()
        except OSError:
            return ""

    def set_result(self, where: str) -> None:
        _write(self.folder / "result", where + "\n")

    @property
    def stopped(self) -> bool:
        return (self.folder / "stopped").exists()

    def set_owner(self, label: str) -> None:
        _write(self.folder / "owner", label)

    def finish(self, status: int) -> None:
        _write(self.folder / "status", f"{status}\n")

    def mark_stopped(self) -> None:
        (self.folder / "stopped").touch()

    def wait(self, poll: float = 0.2) -> int:
        """Its exit status, once it has one (which a run whose supervisor is gone has at once)."""
        while (status := self.exit_status) is None:
            time.sleep(poll)
        return status

    def writer(self) -> OutputWriter:
        return OutputWriter(self)

    def offset_since(self, when: float) -> int:
        """Where in the output the first chunk written at or after `when` (seconds since the epoch) starts."""
        try:
            marks = (self.folder / "output.times").read_text().split("\n")
        except OSError:
            marks = []
        for mark in marks:
            offset, _, at = mark.partition(" ")
            try:
                if float(at) >= when:
                    return int(offset)
            except ValueError:
                continue
        try:
            return self.output.stat().st_size
        except OSError:
            return 0

    def follow(self, poll: float = 0.2, start: int = 0) -> Iterator[bytes]:
        """The output from `start` on, then what is added, until the run has finished."""
        with self.output.open("rb") as f:
            f.seek(start)
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


class OutputWriter:
    """A run's output file, with a note of when its parts were written (offset and time, at most one a
    second), so that `logs --since` can start at the right place without touching the output itself."""

    MARK_EVERY = 1.0

    def __init__(self, run: Run):
        self.out = run.output.open("ab")
        self.times = (run.folder / "output.times").open("a")
        self.last_mark = 0.0

    def write(self, data: bytes) -> int:
        now = time.time()
        if data and now - self.last_mark >= self.MARK_EVERY:
            self.times.write(f"{self.out.tell()} {now:.3f}\n")
            self.times.flush()
            self.last_mark = now
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.out.close()
        self.times.close()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # appears whole, for `wait` and `ps`


def root(environ: Mapping[str, str]) -> Path:
    return state_dir(environ) / "runs"


def create(environ: Mapping[str, str], name: str, meta: dict, owner: str) -> Run:
    folder = root(environ) / check_name(name)
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(folder.parent, 0o700)
    run = Run(name, folder)
    _write(folder / "meta.json", json.dumps(meta))
    run.set_owner(owner)
    run.output.touch(mode=0o600)
    return run


def get(environ: Mapping[str, str], name: str) -> Run | None:
    folder = root(environ) / check_name(name)
    return Run(name, folder) if (folder / "meta.json").is_file() else None


def all_runs(environ: Mapping[str, str]) -> list[Run]:
    base = root(environ)
    return [Run(d.name, d) for d in sorted(base.iterdir()) if (d / "meta.json").is_file()] if base.is_dir() else []


def on(engine, environ: Mapping[str, str]) -> list[Run]:
    """The records of bottles on `engine` (a runtime, context and namespace), and of those that do not say."""
    here = engine_id(engine)
    return [r for r in all_runs(environ) if r.meta.get("engine", here) == here]


def remove(run: Run, force: bool = False) -> None:
    if run.is_run and run.exit_status is None and not force:
        raise BottleError(f"run '{run.name}' is still running: stop it first (claude-bottle stop {run.name})")
    shutil.rmtree(run.folder, ignore_errors=True)
