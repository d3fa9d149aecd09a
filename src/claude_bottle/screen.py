"""A program in a bottle on the user's terminal (Claude in `start` and `attach`, `exec` in a terminal).

Its screen must reach the terminal as drawn (cursor moves, colours, modes), but
anything in the bottle can write to that screen, a hijacked agent included
(`printf ... > /dev/tty`). Some sequences reach past the screen into the
user's machine: OSC 52 sets the clipboard, OSC 8 makes links whose text lies,
OSC 9/777 and iTerm2's 1337 raise notifications or write files, DCS and APC
strings drive terminal-specific features (tmux passthrough, kitty graphics).
So the program runs on a pseudo-terminal of ours and its output is relayed
with every such string dropped: OSC, DCS, APC, PM and SOS, in their 7-bit
(ESC ]) and UTF-8 C1 (U+009D) forms, except the OSC that only asks for the
terminal's colours. CSI and the short ESC sequences pass.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import tty
from collections.abc import Sequence

ESC, BEL = 0x1B, 0x07
_STRING_STARTS = {ord("]"), ord("P"), ord("X"), ord("^"), ord("_")}  # OSC, DCS, SOS, PM, APC after ESC
_C1_STRING_STARTS = {0x9D, 0x90, 0x98, 0x9E, 0x9F}  # the same as C1 code points (UTF-8: C2 xx)
_COLOUR_QUERY = re.compile(rb"(?:1[0-2]|4;\d{1,3});\?")  # OSC 10/11/12 ;? and OSC 4;N;? ask, set nothing
_QUERY_LENGTH = 16


class ScreenFilter:
    """Feeds a byte stream through, dropping control strings; keeps its state across chunks."""

    def __init__(self):
        self.state = "text"  # text, esc, c2 (saw 0xC2), string, string_esc, string_c2
        self.osc = False  # the string is an OSC, which BEL may end too
        self.body = bytearray()  # its first bytes, to tell a colour query

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            self._step(b, out)
        return bytes(out)

    def _step(self, b: int, out: bytearray) -> None:
        s = self.state
        if s == "text":
            if b == ESC:
                self.state = "esc"
            elif b == 0xC2:
                self.state = "c2"
            else:
                out.append(b)
        elif s == "esc":
            if b in _STRING_STARTS:
                self.state, self.osc, self.body = "string", b == ord("]"), bytearray()
            else:
                out += bytes((ESC, b))
                self.state = "text"
        elif s == "c2":
            if b in _C1_STRING_STARTS:
                self.state, self.osc, self.body = "string", b == 0x9D, bytearray()
            else:  # an ordinary character after all: keep its first byte, then read this one as text
                out.append(0xC2)
                self.state = "text"
                self._step(b, out)
        elif s == "string":  # ends with ST (ESC \\) or the C1 ST (C2 9C); an OSC also with BEL
            if b == BEL and self.osc:
                self._end(out)
            elif b == ESC:
                self.state = "string_esc"
            elif b == 0xC2:
                self.state = "string_c2"
            elif len(self.body) <= _QUERY_LENGTH:
                self.body.append(b)
        elif s == "string_esc":  # ESC ESC is tmux's escaped ESC inside its passthrough
            if b == ord("\\"):
                self._end(out)
            else:
                self.state = "string_esc" if b == ESC else "string"
                self.body.append(ESC)  # not a query any more
        elif s == "string_c2":
            if b == 0x9C:
                self._end(out)
            else:
                self.state = "string"
                self.body += bytes((0xC2, b))

    def _end(self, out: bytearray) -> None:
        # The terminal's colours may be asked for (Claude picks its theme by them); the answer comes back
        # to the bottle as input and reaches nothing else.
        if self.osc and _COLOUR_QUERY.fullmatch(self.body):
            out += b"\x1b]" + bytes(self.body) + b"\x07"
        self.state, self.body = "text", bytearray()


def run(cmd: Sequence[str]) -> int:
    """Run `cmd` (the docker CLI's `exec -t`) on a pseudo-terminal of ours the size of the user's, relay
    the user's keys to it and its screen, filtered, back; follow resizes. Returns its exit status. The
    caller puts the user's terminal back afterwards (terminal.restored)."""
    master, slave = pty.openpty()
    # Raw from the start: the program (the docker CLI, or the Kubernetes exec still connecting) puts it in raw
    # mode only once it runs; keys typed before that must wait for the bottle as keys, not be echoed here
    # or be Ctrl-C and Ctrl-\ signals that kill it.
    tty.setraw(slave)
    _copy_size(sys.stdin.fileno(), master)

    def controlling_terminal():  # so that a resize of the pty signals the docker CLI, which passes it on
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(list(cmd), stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    previous = signal.signal(signal.SIGWINCH, lambda *_: _copy_size(sys.stdin.fileno(), master))
    screen = ScreenFilter()
    user_in, user_out = sys.stdin.fileno(), sys.stdout.fileno()
    watched = [master, user_in]
    try:
        tty.setraw(user_in)
        while True:
            try:
                ready, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:  # EIO: the program has ended and its side closed
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    break
                _write_all(user_out, screen.feed(data))
            if user_in in ready:
                data = os.read(user_in, 65536)
                if not data:  # our input ended: let the program see the end, once, and stop reading it
                    os.write(master, b"\x04")
                    watched.remove(user_in)
                    continue
                _write_all(master, data)
        return process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    finally:
        signal.signal(signal.SIGWINCH, previous)
        os.close(master)


def _copy_size(source: int, target: int) -> None:
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
