"""Text on its way to the user's terminal: control characters and escape sequences made visible.

A manifest, a container label or a bottle's output can hold bytes that a
terminal obeys (move the cursor, rewrite a line, set the clipboard, reverse
the text's direction). Everything the CLI shows that it did not write itself
passes through `visible` first, so what the user reads is what is there.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import select
import signal
import sys
import termios
import unicodedata
from collections.abc import Iterator
from typing import TextIO

# C0 and C1 controls, DEL, and the Unicode characters that change how text around them is drawn or draw
# nothing at all: bidirectional overrides and isolates, zero-width characters, line and paragraph
# separators, and the blank "letters" (Hangul fillers, the braille blank) that can push lines off a screen.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u115f\u1160\u200b-\u200f\u2028-\u202e\u2060-\u2069"
                        r"\u2800\u3164\ufeff\uffa0\ufff9-\ufffb"
                        r"\ud800-\udfff]")  # a byte not UTF-8, as Python keeps it (surrogateescape)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, newlines: bool = False) -> str:
    """`text` with every character a terminal would act on written out as `\\x1b`, `\\u202e` and so on.

    Where `newlines` allows several lines (a bottle's output), newlines and tabs stay; on one line (a value
    from a manifest, a label) they are written out too, so a line cannot be stretched off the screen."""
    keep = "\t\n" if newlines else ""

    def escape(match: re.Match) -> str:
        return match.group() if match.group() in keep else _escape_char(match.group())

    out = _INVISIBLE.sub(escape, text)
    # Other format characters (category Cf) can hide or reorder text too.
    if any(unicodedata.category(c) == "Cf" for c in out):
        out = "".join(_escape_char(c) if unicodedata.category(c) == "Cf" else c for c in out)
    return out


def shortened(text: str, limit: int = 200) -> str:
    """`text` made visible and cut at `limit` characters, saying how much was left out."""
    text = visible(text)
    return text if len(text) <= limit else f"{text[:limit]}… (+{len(text) - limit} characters)"


def visible_bytes(data: bytes) -> bytes:
    """A bottle's output for a terminal: decoded leniently, made visible, lines kept."""
    return visible(data.decode("utf-8", errors="replace"), newlines=True).encode()


# What a full-screen program may have switched on and not off when it was killed: a hidden cursor, mouse
# reporting, bracketed paste, focus events. Each sequence is harmless when the mode is already off.
_MODES_OFF = "\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[?1004l"


@contextlib.contextmanager
def restored(stdin: TextIO | None = None, stdout: TextIO | None = None) -> Iterator[None]:
    """The terminal's settings as they were before, however the program given it (Claude, through
    `docker exec -t`) ends: exited, killed, or its client terminated by a signal to us."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        saved = termios.tcgetattr(stdin.fileno()) if stdin.isatty() else None
    except (termios.error, ValueError, OSError):
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            try:
                previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # in the background: restore anyway
            except ValueError:  # not the main thread
                previous = None
            try:
                termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, saved)
            except (termios.error, ValueError, OSError):
                pass
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTTOU, previous)
            if stdout.isatty():
                try:
                    stdout.write(_MODES_OFF)
                    stdout.flush()
                except OSError:
                    pass


def relay_visible(pipes: dict) -> None:
    """Copy each pipe (None: not piped) to its text stream until all have ended, made visible."""
    open_ = {p: (out, codecs.getincrementaldecoder("utf-8")(errors="replace")) for p, out in pipes.items()
             if p is not None}
    while open_:
        ready, _, _ = select.select(list(open_), [], [])
        for p in ready:
            out, decoder = open_[p]
            data = os.read(p.fileno(), 65536)
            text = decoder.decode(data, final=not data)
            if text:
                out.write(visible(text, newlines=True))
                out.flush()
            if not data:
                del open_[p]
