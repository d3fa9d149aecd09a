"""What the user sees while something long runs: an image build's steps, a batch of tasks.

On a terminal, one live line drawn by rich (a spinner, a bar, what is happening);
elsewhere (a pipe, a CI log), plain lines that read well when kept. A build's own
output (thousands of apt and npm lines) goes whole into a log file, and to the
screen only with --verbose.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import TextIO

import click

from .terminal import shortened, visible

_STEP = re.compile(r"^Step (\d+)/(\d+)(?: : (.*))?$")


def _live(stream: TextIO):
    """A rich progress display on `stream`, or None where `stream` is no terminal."""
    if not stream.isatty() or os.environ.get("TERM") == "dumb":
        return None
    from rich.console import Console  # only when something is drawn: the import takes a while
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=Console(file=stream), transient=True)


class BuildView:
    """Shows image builds (one or several in a row, told apart by their tag) as their steps, keeping
    each build's whole output in `log_dir/<tag>.log`."""

    def __init__(self, log_dir: Path, verbose: bool = False, stream: TextIO | None = None):
        self.log_dir = log_dir
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.tag: str | None = None
        self.log = None
        self.began = 0.0
        self.live = None
        self.task = None

    def __enter__(self) -> BuildView:
        return self

    def __exit__(self, kind, error, tb) -> None:
        self._finish(ok=kind is None)

    def log_path(self, tag: str) -> Path:
        return self.log_dir / (re.sub(r"[^A-Za-z0-9_.-]", "-", tag) + ".log")

    def feed(self, tag: str, line: str, why: str = "") -> None:
        """One line of the build of `tag`; a new tag ends the build before it."""
        if tag != self.tag:
            self._finish(ok=True)
            self._begin(tag, why)
        self.log.write(line)
        if self.verbose:  # a progress bar's carriage returns start new lines here
            self._say(visible(line.replace("\r\n", "\n").replace("\r", "\n"), newlines=True), nl=False)
            return
        step = _STEP.match(line.strip())
        if not step:
            return
        n, m, instruction = int(step[1]), int(step[2]), step[3]
        if self.live is not None:
            text = shortened(instruction or "", 50)
            self.live.update(self.task, total=m, completed=n - 1, description=f"{tag} {text}")
        else:
            self._say(f"Step {n}/{m}" + (f" : {shortened(instruction, 100)}" if instruction else ""))

    def _begin(self, tag: str, why: str) -> None:
        self.tag, self.began = tag, time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.log_path(tag)
        self.log = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8",
                        errors="replace")
        self._say(f"building {tag}" + (f" ({why})" if why else "") + f"; its whole output goes to {path}")
        if not self.verbose:
            self.live = _live(self.stream)
        if self.live is not None:
            self.live.start()
            self.task = self.live.add_task(tag, total=None)

    def _finish(self, ok: bool) -> None:
        if self.tag is None:
            return
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.log.close()
        if ok:
            self._say(f"built {self.tag} in {time.monotonic() - self.began:.0f}s")
        else:
            self._say(f"the build of {self.tag} failed; its whole output is in {self.log_path(self.tag)}")
        self.tag = None

    def _say(self, text: str, nl: bool = True) -> None:
        click.echo(text, nl=nl, file=self.stream)


class TaskBoard:
    """A batch of tasks: on a terminal, a live line of how many are done, running and failed, with each
    task's report printed above it as it finishes; elsewhere, only the reports."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.running = self.done = self.failed = 0
        self.live = _live(stream or sys.stderr)
        self.task = None

    def __enter__(self) -> TaskBoard:
        if self.live is not None:
            self.live.start()
            self.task = self.live.add_task(self._text(), total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()

    def _text(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"tasks: {self.running} running, {self.total - self.done - self.running} waiting{failed}"

    def started(self) -> None:
        self.running += 1
        self._draw()

    def finished(self, failed: bool) -> None:
        self.running -= 1
        self.done += 1
        self.failed += failed
        self._draw()

    def _draw(self) -> None:
        if self.live is not None:
            self.live.update(self.task, completed=self.done, description=self._text())

    def report(self, write) -> None:
        """Print a finished task's report (`write()` echoes it) above the live line, not through it."""
        if self.live is None:
            write()
            return
        self.live.stop()
        try:
            write()
        finally:
            self.live.start()

