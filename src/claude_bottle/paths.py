"""Where and how claude-bottle reads the user's files, and where it keeps its own. A module of its own
because every command needs these and most need nothing else of the manifest's (whose import is a tenth of
their start-up)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

MAX_MANIFEST_BYTES = 8 * 2**20
MAX_CA_BYTES = 16 * 2**20


def home_dir(environ: Mapping[str, str]) -> Path:
    """The home claude-bottle reads from: CLAUDE_BOTTLE_HOME, else the user's home."""
    override = environ.get("CLAUDE_BOTTLE_HOME")
    try:
        return Path(override).expanduser() if override else Path.home()
    except RuntimeError:  # ~name of no user, or no HOME and no entry in the user database
        from .errors import BottleError

        raise BottleError(f"CLAUDE_BOTTLE_HOME={override}: names no user on this machine: write the path out in full"
                          if override else "no home folder: set HOME (or CLAUDE_BOTTLE_HOME)") from None


def state_dir(environ: Mapping[str, str]) -> Path:
    """Where claude-bottle keeps what it must remember (allowed project files, detached runs)."""
    state = environ.get("XDG_STATE_HOME")
    base = Path(state) if state and not environ.get("CLAUDE_BOTTLE_HOME") else home_dir(environ) / ".local" / "state"
    return base / "claude-bottle"


def read_small(path: Path, limit: int) -> bytes:
    """The content of a regular file of at most `limit` bytes. A FIFO named where a file is expected would
    have the read wait for ever, and /dev/zero would never end: an OSError says what it is instead."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a folder, not a file", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "it is not a regular file (a pipe or a device)", str(path))
        os.set_blocking(fd, True)
        with open(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"it is larger than {limit // 2**20} MiB", str(path))
        return data
    finally:
        os.close(fd)


def existing_folder(path: Path, option: str) -> Path:
    """`path` made absolute, links and `~` resolved, for `option`; a clear error if that cannot be done
    (a loop of links, ~name of no user)."""
    from .errors import BottleError

    try:
        return path.expanduser().resolve()
    except RuntimeError as e:
        raise BottleError(f"{option} {path}: {'a loop of links' if 'loop' in str(e) else 'names no user here'}: "
                          "name an existing folder") from None
    except (OSError, ValueError) as e:
        raise BottleError(f"{option} {path}: {getattr(e, 'strerror', None) or e}: name an existing folder") from None


def not_json(constant: str):
    """For json.loads(parse_constant=…): Python's reader takes NaN and Infinity, which JSON has not (and no limit
    compares with NaN)."""
    raise ValueError(f"{constant} is not a JSON value")
