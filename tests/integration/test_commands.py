"""ps, exec, attach, logs, stop, cleanup and start's removal of dead sessions, through the CLI's
entry point, on real bottles (support.TestBottle) and a pseudo-terminal where a person would have one."""

import atexit
import dataclasses
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from claude_bottle import bottle, cleanup

from ..lock_holder import hold_lock
from . import support

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sk-ant-oat01-integration-" + "x" * 24
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[a-zA-Z~]|\x1b[\]P][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()=>][0-9A-Za-z]?")


STATE = tempfile.mkdtemp(prefix="claude-bottle-test-state-")  # the tests' own records, not the user's
atexit.register(shutil.rmtree, STATE, True)


def cli(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "claude_bottle", *args], capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "XDG_STATE_HOME": STATE,
                               **(env or {})}, **kwargs)


def _controlling_tty():
    """As a login shell would: a new session whose controlling terminal is the pty (so resizes signal it)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A command on a pseudo-terminal of a given size; collects what it draws."""

    def __init__(self, argv, rows=40, cols=120, env=None, cwd=None):
        self.master, slave = pty.openpty()
        self.resize(rows, cols)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_controlling_tty,
                                     cwd=cwd, env={**(env or os.environ), "PYTHONPATH": str(ROOT / "src"),
                                                   "TERM": "xterm-256color"})
        os.close(slave)
        self.screen = b""

    def resize(self, rows, cols):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, predicate, timeout=60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = ANSI.sub(b"", self.screen).decode(errors="replace")
            if predicate(text):
                return text
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:
                    break
        raise AssertionError(f"timed out; the screen so far:\n{ANSI.sub(b'', self.screen).decode(errors='replace')[-2000:]}")

    def type(self, data: bytes):
        os.write(self.master, data)

    def drain(self):
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def assert_restored(self, test):
        """The terminal is as a shell left it: line editing and echo on, the cursor shown after the last
        time it was hidden."""
        self.drain()
        lflag = termios.tcgetattr(self.master)[3]
        test.assertTrue(lflag & termios.ICANON and lflag & termios.ECHO, "the terminal was left in raw mode")
        test.assertGreater(self.screen.rfind(b"\x1b[?25h"), self.screen.rfind(b"\x1b[?25l"),
                           "the cursor was left hidden")

    def quit_claude(self, timeout=60) -> int:
        """Ctrl-C twice, as Claude Code asks before it exits: the second once it says "again to exit" (sent
        blind, on a loaded machine it can miss Claude's window, and a third one while Claude shuts down
        makes it exit with another status), reading the screen meanwhile (a full terminal would hold the
        process up). The pair again only if Claude asks again. For `attach`, where nothing of ours runs
        after Claude."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = len(self.screen)
            self.type(b"\x03")
            self.pump_until(lambda: self.says_since(mark, "againtoexit"), min(10, deadline - time.monotonic()))
            if self.proc.poll() is not None:
                return self.proc.returncode
            mark = len(self.screen)
            self.type(b"\x03")
            while time.monotonic() < deadline and not self.says_since(mark, "againtoexit"):
                if self.proc.poll() is not None:
                    return self.proc.returncode
                self.pump(0.2)
        raise AssertionError(f"still running after {timeout} s of Ctrl-C; the screen so far:\n"
                             f"{ANSI.sub(b'', self.screen).decode(errors='replace')[-2000:]}")

    def shown(self) -> str:
        """The end of what came to the screen, for a failure's message."""
        return ANSI.sub(b"", self.screen).decode(errors="replace")[-2000:]

    def says_since(self, mark: int, words: str) -> bool:
        """Whether what came to the screen after byte `mark` holds `words` (compared without spaces, which a
        terminal program may draw as cursor moves)."""
        return words in "".join(ANSI.sub(b"", self.screen[mark:]).decode(errors="replace").split())

    def pump_until(self, done, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end and self.proc.poll() is None:
            self.pump(0.1)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:
                    return

    def wait(self, timeout=30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            os.close(self.master)


class CommandsTest(support.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # As `start --detach` makes it: a record folder on the host, so `attach` may open Claude in it.
        cls.record = Path(tempfile.mkdtemp(prefix="claude-bottle-test-record-"))
        cls.b = support.TestBottle(secrets={bottle.CLAUDE_TOKEN_VARIABLE: TOKEN, "EXTRA": "extra-value"},
                                   record=cls.record)

    @classmethod
    def tearDownClass(cls):
        cls.b.remove()
        shutil.rmtree(cls.record, ignore_errors=True)
        super().tearDownClass()

    def test_ps_lists_the_bottle(self):
        out = cli("ps", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = {r["name"]: r for r in json.loads(out.stdout)}
        self.assertEqual(rows[self.b.name]["agent"], "default")
        self.assertEqual(rows[self.b.name]["bottle"], "default")
        self.assertEqual(rows[self.b.name]["state"], "running")
        table = cli("ps").stdout.splitlines()
        self.assertEqual(table[0].split(), ["NAME", "AGENT", "BOTTLE", "UPTIME", "STATE", "RESULT"])
        self.assertTrue(any(line.startswith(self.b.name) and line.split()[4:] == ["running", "-"] for line in table))

    def test_ps_shows_your_own_unless_all_and_filters(self):
        other = support.sdk().containers.create(
            support.bottle_image(), ["true"], name=f"cb-other-{support.RUN_ID}",
            labels={**support.labels(), cleanup.LABEL_BOTTLE: f"other-{support.RUN_ID}", cleanup.LABEL_ROLE: "bottle",
                    cleanup.LABEL_AGENT: "theirs", cleanup.LABEL_USER: "4242@elsewhere",
                    cleanup.LABEL_OWNER: support.session_lock().label()})
        try:
            mine = cli("ps", "-q").stdout.split()
            self.assertIn(self.b.name, mine)
            self.assertNotIn(f"other-{support.RUN_ID}", mine)
            everyone = cli("ps", "-a").stdout.splitlines()
            self.assertEqual(everyone[0].split()[-1], "OWNER")
            self.assertTrue(any(line.startswith(f"other-{support.RUN_ID}") and line.endswith("4242@elsewhere")
                                for line in everyone), everyone)
            self.assertEqual(cli("ps", "-a", "-q", "--filter", "agent=theirs").stdout.split(), [f"other-{support.RUN_ID}"])
            self.assertNotIn(self.b.name, cli("ps", "-q", "-f", "state=exited").stdout.split())
            self.assertIn(self.b.name, cli("ps", "-q", "-f", "state=run", "-f", "agent=default").stdout.split())
            bad = cli("ps", "--filter", "colour=red")
            self.assertEqual(bad.returncode, 2)
            self.assertIn("use KEY=VALUE with KEY one of agent, bottle, state, owner, name", bad.stderr)
        finally:
            other.remove(force=True)

    def test_exec_runs_as_the_bottle_user_with_claudes_environment(self):
        out = cli("exec", self.b.name, "--", "sh", "-c", 'id -un; pwd; echo "$CLAUDE_CODE_OAUTH_TOKEN"; '
                  'echo "$EXTRA"; echo "$HTTPS_PROXY"; exit 7')
        self.assertEqual(out.returncode, 7, out.stderr)
        self.assertEqual(out.stdout.split(), ["claude", "/workspace", TOKEN, "extra-value", bottle.PROXY_URL])

    def test_exec_in_a_terminal_follows_its_size(self):
        term = Terminal([sys.executable, "-m", "claude_bottle", "exec", self.b.name, "--",
                         "sh", "-c", "sleep 1; stty size; read x; stty size"], rows=30, cols=100)
        term.read_until(lambda s: "30 100" in s)
        term.resize(50, 160)
        time.sleep(0.5)
        term.type(b"\r")
        term.read_until(lambda s: "50 160" in s)
        self.assertEqual(term.wait(), 0)

    def test_a_terminal_gets_the_bottles_screen_but_nothing_that_reaches_past_it(self):
        # Written by the command and, as a hijacked agent would, straight to the bottle's terminal.
        script = (r"printf 'A\033]52;c;cHduZWQ=\007B\033[1mC\n'; "
                  r"printf 'D\033]8;;https://evil.example/\033\\E\033Ptmux;\033\033]52;c;eA==\007\033\\F\n' > /dev/tty")
        term = Terminal([sys.executable, "-m", "claude_bottle", "exec", self.b.name, "--", "sh", "-c", script])
        term.read_until(lambda s: "F" in s)
        self.assertEqual(term.wait(), 0)
        self.assertIn(b"A", term.screen)
        self.assertIn(b"B\x1b[1mC", term.screen)  # what draws the screen passes
        self.assertIn(b"DE", term.screen)
        for reaching_out in (b"\x1b]52", b"\x1b]8;", b"\x1bP"):
            self.assertNotIn(reaching_out, term.screen)

    def test_attach_opens_claude_straight_into_the_session(self):
        term = Terminal([sys.executable, "-m", "claude_bottle", "attach", self.b.name])
        screen = term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""))
        squeezed = screen.replace(" ", "").lower()
        for first_run_question in ("trustthefiles", "choosethetextstyle", "selectloginmethod",
                                   "yes,iaccept", "darkmode", "donotrustthisfolder"):
            self.assertNotIn(first_run_question, squeezed)
        self.assertEqual(term.quit_claude(), 0, term.shown())
        term.wait()
        self.assertTrue(support.sdk().api.inspect_container(self.b.plan.names.container)["State"]["Running"])
        self.assertEqual(self.claudes(), [])

    def claudes(self) -> list[str]:
        """The Claude sessions in the bottle: claude processes not started by another claude (Claude Code
        may run a copy of itself for a while)."""
        code, out = self.b.sh("for p in $(pgrep -f '^claude --dangerously-skip-permissions'); do "
                              "parent=$(ps -o ppid= -p $p | tr -d ' '); "
                              "ps -o args= -p $parent | grep -q '^claude ' || echo $p; done")
        return out.split()

    def attach(self):
        term = Terminal([sys.executable, "-m", "claude_bottle", "attach", self.b.name])
        term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""))
        return term

    def test_attach_reconnects_to_the_running_claude_and_a_lost_terminal_leaves_it(self):
        term = self.attach()
        first = self.claudes()
        self.assertEqual(len(first), 1, self.b.sh("ps -eo pid,ppid,etimes,args")[1])
        term.type(b"\x1c")  # Ctrl-\: detach
        term.read_until(lambda s: f"detached; Claude goes on in {self.b.name}" in s)
        self.assertEqual(term.wait(), 0)
        self.assertEqual(self.claudes(), first)

        term = Terminal([sys.executable, "-m", "claude_bottle", "attach", self.b.name], rows=30, cols=100)
        time.sleep(3)
        term.type(b"zebra42")
        term.read_until(lambda s: "zebra42" in "".join(s.split()))
        self.assertEqual(self.claudes(), first)  # the same Claude, not a second one

        term.proc.send_signal(signal.SIGTERM)  # a killed attach: the terminal comes back as it was
        self.assertEqual(term.proc.wait(30), 128 + signal.SIGTERM)
        term.assert_restored(self)
        os.close(term.master)
        self.assertEqual(self.claudes(), first)
        # and its client in the bottle is gone: only the session's own dtach is left
        self.assertEqual(self.b.sh("pgrep -x dtach | wc -l")[1].strip(), "1")

        term = self.attach()
        self.assertEqual(self.claudes(), first)
        term.type(b"\x15")  # clear the typed line, then quit Claude
        self.assertEqual(term.quit_claude(), 0, term.shown())
        term.wait()
        self.assertEqual(self.claudes(), [])

    def test_a_bottle_stopped_while_attached_says_so(self):
        record = Path(tempfile.mkdtemp(prefix="claude-bottle-test-record-"))
        self.addCleanup(shutil.rmtree, record, True)
        b = support.TestBottle(secrets={bottle.CLAUDE_TOKEN_VARIABLE: TOKEN}, record=record)
        self.addCleanup(b.remove)
        term = Terminal([sys.executable, "-m", "claude_bottle", "attach", b.name])
        term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""))
        self.assertEqual(cli("stop", b.name).returncode, 0)
        term.read_until(lambda s: f"bottle '{b.name}' was stopped while attached" in " ".join(s.split()))
        self.assertEqual(term.proc.wait(30), 1)
        term.assert_restored(self)
        os.close(term.master)

    def test_attach_refuses_a_headless_run_and_another_terminals_session(self):
        foreground = support.TestBottle()
        self.addCleanup(foreground.remove)
        out = cli("attach", foreground.name)
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stderr, f"Error: bottle '{foreground.name}' belongs to a `claude-bottle start` in "
                                     f"another terminal: use that terminal, or open a shell beside it with "
                                     f"`claude-bottle exec {foreground.name} -- bash`\n")
        record = Path(tempfile.mkdtemp(prefix="claude-bottle-test-record-"))
        self.addCleanup(shutil.rmtree, record, True)
        (record / "meta.json").write_text(json.dumps({"kind": "run"}))
        headless = support.TestBottle(record=record)
        self.addCleanup(headless.remove)
        out = cli("attach", headless.name)
        self.assertEqual(out.returncode, 1)
        self.assertIn(f"is a headless run (claude -p), with no session to attach to: follow it with "
                      f"`claude-bottle logs -f {headless.name}`", out.stderr)
        out = cli("attach", self.b.name)  # no terminal here
        self.assertEqual(out.returncode, 2)
        self.assertIn("attach opens Claude in this terminal, and stdin or stdout is not a terminal", out.stderr)

    def test_logs_of_the_bottle(self):
        out = cli("logs", self.b.name)
        self.assertEqual((out.returncode, out.stderr), (0, ""))

    def test_unknown_bottle(self):
        for args in (["exec", "nope-000000", "--", "true"], ["attach", "nope-000000"]):
            out = cli(*args)
            self.assertEqual((out.returncode, out.stderr),
                             (1, "Error: no running bottle named 'nope-000000': see `claude-bottle ps`\n"))
        out = cli("stop", "nope-000000")
        self.assertEqual((out.returncode, out.stderr),
                         (1, "Error: no bottle named 'nope-000000': see `claude-bottle ps`\n"))


class LogBoundTest(support.IntegrationTest):
    def test_a_bottle_that_writes_without_end_keeps_a_bounded_log(self):
        b = support.TestBottle()
        try:
            info = {c: support.sdk().api.inspect_container(c) for c in (b.plan.names.container,
                                                                          b.plan.names.sidecar)}
            for c, i in info.items():
                self.assertEqual(i["HostConfig"]["LogConfig"],
                                 {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}}, c)
            log = Path(info[b.plan.names.container]["LogPath"])
            if not os.access(log.parent, os.R_OK):
                raise support.missing(f"root on the Docker host, to read {log}")
            # The bottle's own stdout, where the engine keeps what `logs` shows, is held by its PID 1 alone once
            # the bottle is ready, which the agent cannot open the descriptors of: no process of the agent's
            # has it, so the agent cannot write there (a value it holds, into the engine's files) at all.
            pid = info[b.plan.names.container]["State"]["Pid"]
            stdout = os.readlink(f"/proc/{pid}/fd/1")
            out = cli("exec", b.name, "--", "sh", "-c", "for f in /proc/[0-9]*/fd/*; do readlink $f; done; "
                      "echo x > /proc/1/fd/1 || echo refused")
            self.assertNotIn(stdout, out.stdout.split())
            self.assertIn("refused", out.stdout)
            # A container made as the bottle's is, whose first process writes 50 MB: the log is bounded.
            writer = dataclasses.replace(bottle.bottle_container(b.plan, "test"), stdin_open=False,
                                         name=b.plan.names.container + "-writer",
                                         command=("sh", "-c", 'head -c 50000000 /dev/zero | tr "\\0" x | '
                                                              "fold -w 1000; sleep 600"))
            support.engine().create_container(writer)
            try:
                support.engine().start_container(writer.name)
                written = Path(support.sdk().api.inspect_container(writer.name)["LogPath"])
                deadline = time.monotonic() + 120
                while not list(written.parent.glob(written.name + ".1")) or written.stat().st_size < 2**20:
                    self.assertLess(time.monotonic(), deadline, "the writer did not fill its log")
                    time.sleep(0.5)
                time.sleep(5)  # the rest of the 50 MB
                kept = sorted(written.parent.glob(written.name + "*"))
                self.assertEqual([f.name for f in kept], [written.name, written.name + ".1"])  # one old file kept
                for f in kept:
                    self.assertLess(f.stat().st_size, 10 * 2**20, f)  # 10m is 10 MB; a message past it fits below
            finally:
                support.engine().remove_container(writer.name)
        finally:
            b.remove()


class RemovalTest(support.IntegrationTest):
    def test_stop_removes_every_object_of_the_bottle(self):
        b = support.TestBottle()
        keep = support.TestBottle()
        try:
            out = cli("stop", b.name)
            self.assertEqual((out.returncode, out.stdout), (0, f"stopped {b.name}\n"), out.stderr)
            self.assertEqual(cleanup.of_bottle(support.engine(), b.name), [])
            self.assertEqual(len(cleanup.of_bottle(support.engine(), keep.name)), support.OBJECTS_PER_BOTTLE)
        finally:
            b.remove()
            keep.remove()

    def test_start_removes_leftovers_of_a_killed_session_and_only_those(self):
        with tempfile.TemporaryDirectory() as tmp:
            lock = Path(tmp, "sessions", "0123456789abcdef.lock")  # named as SessionLock names its files
            lock.parent.mkdir()
            killed = hold_lock(lock)
            dead = support.TestBottle(owner=cleanup.owner_label(lock))
            live = support.TestBottle()
            try:
                # While its process lives, nobody's start takes the session for a dead one's.
                out = cli("start", "--yes", "--dry-run", env={"CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN})
                self.assertEqual(out.returncode, 0, out.stderr)
                started = cli("start", "--yes", "--detach", env={"CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN})
                self.assertEqual(started.returncode, 0, started.stderr)
                cli("stop", started.stdout.strip())
                self.assertEqual(len(cleanup.of_bottle(support.engine(), dead.name)), support.OBJECTS_PER_BOTTLE)
                killed.kill()  # the owning CLI dies without tearing down, as under SIGKILL
                killed.wait()
                started = cli("start", "--yes", "--detach", env={"CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN})
                self.assertEqual(started.returncode, 0, started.stderr)
                cli("stop", started.stdout.strip())
                self.assertEqual(cleanup.of_bottle(support.engine(), dead.name), [])
                self.assertEqual(len(cleanup.of_bottle(support.engine(), live.name)), support.OBJECTS_PER_BOTTLE)
            finally:
                killed.kill()
                for b in (dead, live):
                    b.remove()

    def test_cleanup_removes_your_bottles_after_asking_and_all_only_with_all(self):
        mine = [o for o in cleanup.of_user(support.engine()) if o.labels.get(support.TEST_LABEL) != support.RUN_ID]
        if mine:
            self.skipTest(f"cleanup would also remove bottles of yours that are not this test's: {mine[0].name}, …")
        own = support.TestBottle()
        other = support.TestBottle(user="1234@another-host")
        try:
            refused = cli("cleanup")
            self.assertEqual(refused.returncode, 6)
            self.assertIn(f"will remove 1 bottle: {own.name}", refused.stderr)
            self.assertEqual(len(cleanup.of_bottle(support.engine(), own.name)), support.OBJECTS_PER_BOTTLE)
            out = cli("cleanup", "--yes")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, "removed 1 bottles\n")
            self.assertEqual(cleanup.of_bottle(support.engine(), own.name), [])
            self.assertEqual(len(cleanup.of_bottle(support.engine(), other.name)), support.OBJECTS_PER_BOTTLE)
            out = cli("cleanup", "--all", "--yes")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(cleanup.of_bottle(support.engine(), other.name), [])
        finally:
            own.remove()
            other.remove()
