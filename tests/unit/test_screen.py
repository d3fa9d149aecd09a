"""What a program in a bottle can put on the user's terminal through `start`, `attach` and `exec`: its
screen, never the strings that reach past it (clipboard, links, notifications, terminal commands)."""

import io
import os
import subprocess
import sys
import unittest

from claude_bottle import terminal
from claude_bottle.screen import ScreenFilter

CLIPBOARD = b"\x1b]52;c;ZWNobyBwd25lZA==\x07"


class ScreenFilterTest(unittest.TestCase):
    def feed(self, data: bytes, chunk: int = 0) -> bytes:
        f = ScreenFilter()
        if not chunk:
            return f.feed(data)
        return b"".join(f.feed(data[i:i + chunk]) for i in range(0, len(data), chunk))

    def test_what_draws_the_screen_passes_unchanged(self):
        screen = ("\x1b[?1049h\x1b[?25l\x1b[2J\x1b[H\x1b[38;5;208mé ✜ ╭─╮ \u00a0\x1b[0m\x1b7\x1b8\x1b=\x1b(B\r\n"
                  "\x1b[?2004h\x1b[?1000h").encode()
        for chunk in (0, 1, 3):
            self.assertEqual(self.feed(screen, chunk), screen)

    def test_strings_that_reach_past_the_screen_are_dropped_in_every_form(self):
        attacks = {
            "clipboard, BEL": CLIPBOARD,
            "clipboard, ST": b"\x1b]52;c;ZWNobyBwd25lZA==\x1b\\",
            "hyperlink": b"\x1b]8;;https://evil.example/\x1b\\",
            "title": b"\x1b]0;sudo rm -rf ~\x07",
            "notification": b"\x1b]9;you have mail\x07",
            "iterm2 file": b"\x1b]1337;File=name=eA==;inline=0:aGVsbG8=\x07",
            "tmux passthrough": b"\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\",
            "kitty graphics": b"\x1b_Ga=T,f=100;iVBORw0KGgo=\x1b\\",
            "C1 OSC in UTF-8": "\u009d52;c;eA==\u009c".encode(),
            "C1 DCS in UTF-8": "\u0090+q544e\u009c".encode(),
        }
        for name, attack in attacks.items():
            for chunk in (0, 1, 2, 5):
                with self.subTest(name, chunk=chunk):
                    self.assertEqual(self.feed(b"before " + attack + b" after", chunk), b"before  after")

    def test_a_question_for_the_terminals_colours_passes(self):
        for body, end in ((b"11;?", b"\x07"), (b"10;?", b"\x1b\\"), (b"4;1;?", b"\x07")):
            for chunk in (0, 1):
                self.assertEqual(self.feed(b"a\x1b]" + body + end + b"b", chunk), b"a\x1b]" + body + b"\x07b")
        self.assertEqual(self.feed(b"a\x1b]11;rgb:0/0/0\x07b"), b"ab")  # setting them is dropped
        self.assertEqual(self.feed(b"a\x1b]11;?" + b"x" * 40 + b"\x07b"), b"ab")

    def test_an_unterminated_string_swallows_the_rest_rather_than_leak_it(self):
        self.assertEqual(self.feed(b"ok\x1b]52;c;" + b"A" * 5000), b"ok")


class RelayVisibleTest(unittest.TestCase):
    def test_a_pipe_to_a_terminal_is_made_visible(self):
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.buffer.write("
                                 "b'a\\x1b]52;c;eA==\\x07b \\xc3'); sys.stdout.buffer.write(b'\\xa9\\n')"],
                                stdout=subprocess.PIPE)
        out = io.StringIO()
        terminal.relay_visible({proc.stdout: out, None: None})
        proc.wait()
        self.assertEqual(out.getvalue(), "a\\x1b]52;c;eA==\\x07b é\n")


class RunTest(unittest.TestCase):
    """screen.run between the user's terminal (a pseudo-terminal of the test's) and a program that is slow
    to start, as `docker exec -t` and the Kubernetes exec are."""

    # Reads its terminal only after a while, as a program still connecting does, and writes what came.
    SLOW = ("import os, sys, time, select\n"
            "time.sleep(0.8)\n"
            "got = b''\n"
            "while select.select([0], [], [], 0.3)[0]:\n"
            "    got += os.read(0, 100)\n"
            "open(sys.argv[1], 'w').write(got.hex())\n")

    def test_keys_typed_before_the_program_is_ready_reach_it_as_keys(self):
        """Before, the pseudo-terminal was in line mode until the program changed it: keys typed meanwhile were
        echoed, held for a whole line, and Ctrl-C or Ctrl-\\ killed the program (an `attach` on a busy
        cluster ended in a traceback)."""
        import pty
        import tempfile
        import time

        from claude_bottle import screen

        with tempfile.TemporaryDirectory() as tmp:
            result = os.path.join(tmp, "got")
            pid, master = pty.fork()
            if pid == 0:  # the user's side: its terminal is the pty
                code = 99
                try:
                    code = screen.run([sys.executable, "-c", self.SLOW, result])
                finally:
                    os._exit(code & 0xFF)
            time.sleep(0.3)
            os.write(master, b"ab\x03\x1ccd")
            shown = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            _, status = os.waitpid(pid, 0)
            os.close(master)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0, shown)
            with open(result) as f:
                self.assertEqual(bytes.fromhex(f.read()), b"ab\x03\x1ccd")
            self.assertNotIn(b"ab", shown)  # not echoed by the pty
