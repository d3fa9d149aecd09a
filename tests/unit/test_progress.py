"""What a build and a batch of tasks show: on a pseudo-terminal, a live line; in a pipe, plain step lines;
the build's whole output only in its log file, or on the screen with --verbose."""

import io
import os
import pty
import re
import select
import tempfile
import time
import unittest
from pathlib import Path

from claude_bottle import progress

from .fake_engine import BUILD_OUTPUT

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


class _Pty:
    def __init__(self):
        self.master, slave = pty.openpty()
        self.stream = os.fdopen(slave, "w", encoding="utf-8")
        self.seen = b""

    def read(self) -> str:
        self.stream.flush()
        deadline = time.monotonic() + 0.3  # a live display redraws on its own: read for a while, not to the end
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.master], [], [], left)[0]:
                self.seen += os.read(self.master, 65536)
        return ANSI.sub("", self.seen.decode(errors="replace")).replace("\r", "\n")

    def close(self):
        self.stream.close()
        os.close(self.master)


class BuildViewTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.logs = Path(tmp.name) / "builds"

    def test_a_pipe_gets_the_steps_and_the_log_gets_everything(self):
        out = io.StringIO()
        with progress.BuildView(self.logs, stream=out) as view:
            for line in BUILD_OUTPUT:
                view.feed("img:1", line, "why")
        log = self.logs / "img-1.log"
        self.assertEqual(out.getvalue(), f"building img:1 (why); its whole output goes to {log}\n"
                                         "Step 1/2 : FROM debian:bookworm-slim\n"
                                         "Step 2/2 : RUN npm install -g @anthropic-ai/claude-code\n"
                                         "built img:1 in 0s\n")
        self.assertEqual(log.read_text(), "".join(BUILD_OUTPUT))
        self.assertEqual(log.stat().st_mode & 0o777, 0o600)

    def test_verbose_shows_everything_made_visible(self):
        out = io.StringIO()
        with progress.BuildView(self.logs, verbose=True, stream=out) as view:
            for line in [*BUILD_OUTPUT, "\x1b]52;c;cHduZWQ=\x07clipboard\n", "10%\r50%\r100%\r\n"]:
                view.feed("img:1", line)
        self.assertIn("npm warn EBADENGINE", out.getvalue())
        self.assertIn("\\x1b]52;c;cHduZWQ=\\x07clipboard", out.getvalue())
        self.assertNotIn("\x1b", out.getvalue())
        self.assertIn("10%\n50%\n100%\n", out.getvalue())

    def test_a_failed_build_names_its_log(self):
        out = io.StringIO()
        with self.assertRaises(RuntimeError):
            with progress.BuildView(self.logs, stream=out) as view:
                view.feed("img:1", BUILD_OUTPUT[0])
                raise RuntimeError("step 2 failed")
        self.assertTrue(out.getvalue().endswith(
            f"the build of img:1 failed; its whole output is in {self.logs / 'img-1.log'}\n"), out.getvalue())

    def test_a_terminal_gets_a_live_line_without_the_chatter(self):
        term = _Pty()
        self.addCleanup(term.close)
        with progress.BuildView(self.logs, stream=term.stream) as view:
            for line in BUILD_OUTPUT:
                view.feed("img:1", line)
                term.read()
            drawn = term.read()
        self.assertIn("img:1 RUN npm install -g @anthropic-ai/claude-code", drawn)
        self.assertIn("1/2", drawn)
        self.assertNotIn("EBADENGINE", drawn)
        self.assertNotIn("Get:1", drawn)
        self.assertRegex(term.read(), r"built img:1 in \d+s\n")


class TaskBoardTest(unittest.TestCase):
    def test_a_terminal_sees_running_waiting_and_failed_and_each_report_above(self):
        term = _Pty()
        self.addCleanup(term.close)
        with progress.TaskBoard(3, stream=term.stream) as board:
            board.started()
            board.started()
            self.assertIn("tasks: 2 running, 1 waiting", term.read())
            board.finished(failed=True)
            board.report(lambda: term.stream.write("--- task 1: exit 1 ---\n"))
            drawn = term.read()
            self.assertIn("tasks: 1 running, 1 waiting, 1 failed", drawn)
            self.assertIn("--- task 1: exit 1 ---", drawn)
            self.assertIn("1/3", drawn)

    def test_a_pipe_gets_only_the_reports(self):
        out = io.StringIO()
        with progress.TaskBoard(2, stream=out) as board:
            board.started()
            board.finished(failed=False)
            board.report(lambda: out.write("--- task 1: exit 0 ---\n"))
        self.assertEqual(out.getvalue(), "--- task 1: exit 0 ---\n")
