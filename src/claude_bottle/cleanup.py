"""The labels every object of a bottle carries, who owns it, and finding and removing such objects:
one bottle's, those of sessions whose owner process is gone, or all of them.
Containers go before networks and volumes."""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .docker import LABEL_PREFIX, Engine, Found

LABEL_BOTTLE = LABEL_PREFIX + "bottle"
LABEL_AGENT = LABEL_PREFIX + "agent"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_OWNER = LABEL_PREFIX + "owner"
LABEL_CONFIG = LABEL_PREFIX + "config"  # the manifest's bottle this one was made from
DETACHED = "detached"  # owner of bottles started with --detach: they live until stop or cleanup


@dataclass(frozen=True)
class Owner:
    """The process a bottle's objects belong to; when it is gone, they are leftovers."""

    host: str
    pid: int
    started: str  # the process's start time where the OS tells it, so a reused pid is not mistaken for it

    def label(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()))

    @classmethod
    def parse(cls, label: str) -> Owner | None:
        parts = label.split(":")
        if len(parts) < 3 or not parts[-2].isdigit():
            return None
        return cls(":".join(parts[:-2]), int(parts[-2]), parts[-1])

    def alive(self) -> bool:
        """Whether this owner still runs; owners on other hosts are assumed alive."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return process_start(self.pid) == self.started


def process_start(pid: int) -> str:
    """Start time of `pid` in clock ticks since boot (Linux), or "" where /proc has no answer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]



_ORDER = {"container": 0, "network": 1, "volume": 2}


def of_bottle(engine: Engine, name: str) -> list[Found]:
    return engine.find({LABEL_BOTTLE: name})


def everything(engine: Engine) -> list[Found]:
    return engine.find({LABEL_BOTTLE: ""})


def of_dead_sessions(engine: Engine) -> list[Found]:
    """Objects whose owner process ended without tearing its bottle down (SIGKILL, a crash)."""
    dead = []
    for obj in everything(engine):
        owner_label = obj.labels.get(LABEL_OWNER, "")
        if owner_label == DETACHED:
            continue
        owner = Owner.parse(owner_label)
        if owner is None or not owner.alive():
            dead.append(obj)
    return dead


def remove(engine: Engine, objects: list[Found]) -> list[Found]:
    """Remove `objects`: containers first (at once: stopping each takes a while), then networks and
    volumes, which they held. An object already gone counts as removed."""
    containers = [o.name for o in objects if o.kind == "container"]
    if len(containers) > 1:
        with ThreadPoolExecutor(min(len(containers), 8)) as pool:
            list(pool.map(lambda name: engine.clone().remove_container(name), containers))
    elif containers:
        engine.remove_container(containers[0])
    for obj in sorted((o for o in objects if o.kind != "container"), key=lambda o: _ORDER[o.kind]):
        (engine.remove_network if obj.kind == "network" else engine.remove_volume)(obj.name)
    return objects
