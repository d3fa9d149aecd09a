"""A process that holds a session lock, as a CLI running a session does: for tests of ownership."""

import subprocess
import sys
from pathlib import Path

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(300)
"""


def hold_lock(path: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start a process (under `prefix`, e.g. `unshare --pid --fork`) that holds the lock at `path`;
    returns once it does."""
    holder = subprocess.Popen([*prefix, sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE)
    if holder.stdout.readline() != b"held\n":
        holder.kill()
        raise AssertionError(f"could not hold {path}")
    return holder
