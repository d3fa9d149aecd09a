"""The labels every object of a bottle carries, who owns it, and finding and removing such objects:
one bottle's, those of sessions that ended without tearing down, a user's own, or all of them.
Containers go before networks and volumes.

A session's owner is a lock: the CLI process holds an flock on a file of its own while the session
lives, and the label names that file. The kernel drops the lock when the process ends however it ends,
so "can the lock be taken?" answers "is the session gone?" exactly, with no process ids to mistake
across PID namespaces or reboots. A lock this host cannot open (another user's, another machine's)
counts as held.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from . import lazy
from .docker import LABEL_PREFIX, Engine, Found
from .errors import BottleError

workspace = lazy.Module(f"{__package__}.workspace")  # for one label; `ps` and `stop` rarely need the rest

LABEL_BOTTLE = LABEL_PREFIX + "bottle"
LABEL_AGENT = LABEL_PREFIX + "agent"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_OWNER = LABEL_PREFIX + "owner"  # the lock of the session that made it
LABEL_USER = LABEL_PREFIX + "user"  # uid@host of the user who made it
LABEL_CONFIG = LABEL_PREFIX + "config"  # the manifest's bottle this one was made from
LABEL_RECORD = LABEL_PREFIX + "record"  # a detached bottle's record folder: it lives on while that exists


@dataclass(frozen=True)
class Names:
    """The names of every Docker object of one bottle, derived from the bottle's name."""

    bottle: str

    @property
    def container(self) -> str:
        return f"cb-{self.bottle}"

    @property
    def sidecar(self) -> str:
        return f"cb-{self.bottle}-sidecar"

    @property
    def proxy_volume(self) -> str:
        return f"cb-{self.bottle}-proxy"


def engine_id(engine: Engine) -> str:
    """Which engine (or cluster and namespace) a bottle is on."""
    return f"{engine.kind} {engine.host} {getattr(engine, 'namespace', '')}".strip()


def current_user() -> str:
    return f"{os.getuid()}@{socket.gethostname()}"


class SessionLock:
    """A lock file held for as long as this process runs a session (or supervises a detached run)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, folder: Path) -> SessionLock:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{os.urandom(8).hex()}.lock"
        # Not inherited by the processes we start (docker exec and the like), so it dies with us.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cls(path, fd)

    def label(self) -> str:
        return owner_label(self.path)

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def owner_label(lock: Path) -> str:
    return f"lock:{socket.gethostname()}:{lock}"


def owner_alive(label: str) -> bool:
    """Whether the session named by an owner label may still run. Only a lock of this host that can be
    taken, or that is gone, is a session that has ended; anything else (another host's, another user's,
    a label we do not understand) is left alone. A label is anyone's to write on a shared engine: only a
    file of SessionLock's shape, a regular one of this user's, is opened or removed (not a FIFO, whose
    open would wait for ever, nor a file of the user's that the label names)."""
    kind, _, rest = label.partition(":")
    host, _, path = rest.partition(":")
    if kind != "lock" or host != socket.gethostname() or not _a_lock_path(path):
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False  # released: its session ended
    except OSError:
        return True
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return True
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # held (BlockingIOError): its session runs
        return True
    finally:
        os.close(fd)
    Path(path).unlink(missing_ok=True)  # what a killed session left behind
    return False


def _a_lock_path(path: str) -> bool:
    """Whether `path` is named as SessionLock names its files: <16 hex digits>.lock in a folder `sessions`."""
    lock = Path(path)
    stem = lock.name.removesuffix(".lock")
    return (path.startswith("/") and lock.suffix == ".lock" and lock.parent.name == "sessions" and len(stem) == 16
            and all(c in "0123456789abcdef" for c in stem) and ".." not in lock.parts)


_ORDER = {"container": 0, "network": 1, "volume": 2}


def is_name(name: str) -> bool:
    """Whether `name` is a bottle name as `stop`, `exec` and the others take it: not one that could match
    something else (empty: every bottle) or name a path. Character by character, not a regex whose `$`
    would also let a final newline through."""
    return bool(name) and len(name) <= 80 and all(c.isascii() and (c.isalnum() or c in "._-") for c in name) \
        and not name.startswith((".", "-"))


def check_mine(name: str, labels: dict[str, str]) -> None:
    """Commands act on the user's own bottles: on a shared engine another user's holds their secrets and
    their agent's work. `cleanup --all` is the way to remove everyone's."""
    owner = labels.get(LABEL_USER)
    if owner is not None and owner != current_user():
        from .terminal import visible

        raise BottleError(f"bottle '{name}' is {visible(owner)}'s, not yours ({current_user()}): only its owner "
                          "can use it; `claude-bottle cleanup --all` removes every user's bottles")


def check_name(name: str) -> str:
    """`name` if it is a bottle name (see is_name), refused before it reaches the engine or the filesystem."""
    if not is_name(name):
        raise BottleError(f"'{name}' is not a bottle name: names look like coder-1a2b3c (see `claude-bottle ps`)")
    return name


def of_bottle(engine: Engine, name: str) -> list[Found]:
    return engine.find({LABEL_BOTTLE: check_name(name)})


def everything(engine: Engine) -> list[Found]:
    return engine.find({LABEL_BOTTLE: ""})


def of_user(engine: Engine, user: str | None = None) -> list[Found]:
    return engine.find({LABEL_BOTTLE: "", LABEL_USER: user or current_user()})


def holds_work(obj: Found, engine: Engine | None = None) -> bool:
    """Whether the bottle this object belongs to has a workspace whose work has not come back yet. With
    `engine`, a bottle whose workspace was never copied in (its start was killed first) holds none; one
    that cannot be looked into is taken to hold some."""
    if workspace.LABEL_REPO not in obj.labels:
        return False
    if engine is None or obj.kind != "container" or obj.labels.get(LABEL_ROLE) != "bottle":
        return True
    try:
        return workspace.copied(engine, obj.name)
    except BottleError:
        return True


def record_alive(path: str) -> bool:
    """Whether a detached bottle's record still exists (one this host cannot look at counts as existing).
    The record is written only once the bottle is complete, so a detached launch that was killed part-way
    has none, and its leftovers are removed like any other."""
    if not path.startswith("/"):
        return True
    try:
        return Path(path, "meta.json").exists()
    except OSError:
        return True


def of_dead_sessions(engine: Engine) -> tuple[list[Found], list[str]]:
    """Objects of sessions that ended without tearing their bottle down (SIGKILL, a crash), and the names
    of such bottles that are kept because they hold work not yet brought back. Detached bottles live on
    while their record does (until `stop`), whichever state folder it is in."""
    alive: dict[str, bool] = {}
    me = current_user()

    def ended(obj: Found) -> bool:
        owner = obj.labels.get(LABEL_OWNER, "")
        if not owner or (LABEL_RECORD in obj.labels and record_alive(obj.labels[LABEL_RECORD])):
            return False
        if obj.labels.get(LABEL_USER, me) != me:  # another user's: theirs to judge (a machine of the same name,
            return False                          # on a shared cluster, has no lock files here)
        if owner not in alive:
            alive[owner] = owner_alive(owner)
        return not alive[owner]

    objects = [o for o in everything(engine) if ended(o)]
    # Looked into only here, where the session has ended: a live one may still be copying its workspace in.
    kept_work = {o.labels[LABEL_BOTTLE] for o in objects if o.kind == "container" and holds_work(o, engine)}
    dead = [o for o in objects if o.labels.get(LABEL_BOTTLE, "") not in kept_work]
    return dead, sorted(kept_work)


def remove(engine: Engine, objects: list[Found]) -> list[Found]:
    """Remove `objects`: containers first (at once: stopping each takes a while), then networks and
    volumes, which they held. An object already gone counts as removed."""
    containers = [o.name for o in objects if o.kind == "container"]
    if len(containers) > 1:  # threads of our own: concurrent.futures costs `stop` a few ms to import
        slots, failed = threading.BoundedSemaphore(8), []

        def remove_one(name: str) -> None:
            with slots:
                try:
                    engine.clone().remove_container(name)
                except BaseException as e:  # noqa: B036 - raised again below, in the caller's thread
                    failed.append(e)

        threads = [threading.Thread(target=remove_one, args=(name,)) for name in containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise failed[0]
    elif containers:
        engine.remove_container(containers[0])
    for obj in sorted((o for o in objects if o.kind != "container"), key=lambda o: _ORDER[o.kind]):
        (engine.remove_network if obj.kind == "network" else engine.remove_volume)(obj.name)
    return objects


def teardown(engine: Engine, name: str) -> list[Found]:
    """Remove every object of bottle `name`; what is already gone counts as removed."""
    return remove(engine, of_bottle(engine, name))
