"""What `ps` shows: the bottles on the engine (yours, or everyone's) and your detached runs, each with its state."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from . import cleanup, runs
from .docker import Engine


@dataclass(frozen=True)
class BottleStatus:
    name: str
    agent: str
    bottle: str
    uptime_seconds: int  # for a finished run: how long it ran
    state: str  # the container's (running, exited…), or held, left over, gone, stopped, exited (N)
    detached: bool
    exit_status: int | None
    owner: str = ""  # uid@host of whoever made it
    mine: bool = True
    result: str = ""  # a finished run's: the branch (or folder) its work came back as
    node: str = ""  # on Kubernetes: the node its pod runs on

    def to_json(self) -> dict:
        return asdict(self)


def bottles(engine: Engine, environ: Mapping[str, str]) -> list[BottleStatus]:
    """Bottles (everyone's: see `mine`) and this user's detached runs, newest first. A bottle whose session
    ended without finishing it is `held: work not brought back` if its workspace's work is still in it,
    else `left over`."""
    now = time.time()
    me = cleanup.current_user()
    records = {r.name: r for r in runs.on(engine, environ)}
    found: dict[str, BottleStatus] = {}
    alive: dict[str, bool] = {}
    for c in engine.find({cleanup.LABEL_ROLE: "bottle"}):
        if c.kind != "container":
            continue
        name = c.labels.get(cleanup.LABEL_BOTTLE, "")
        owner = c.labels.get(cleanup.LABEL_OWNER, "")
        state = c.state
        detached = name in records or (cleanup.LABEL_RECORD in c.labels
                                       and cleanup.record_alive(c.labels[cleanup.LABEL_RECORD]))
        if not detached:
            if owner not in alive:
                alive[owner] = cleanup.owner_alive(owner)
            if not alive[owner]:
                state = "held: work not brought back" if cleanup.holds_work(c, engine) else "left over"
        elif state != "running" and cleanup.holds_work(c, engine):
            state = "held: work not brought back"  # stopped with its engine (a restart): `stop` brings it back
        user = c.labels.get(cleanup.LABEL_USER, "")
        found[name] = BottleStatus(name, c.labels.get(cleanup.LABEL_AGENT, ""), c.labels.get(cleanup.LABEL_CONFIG, ""),
                                   max(0, int(now - c.created)), state, detached, None, user, user == me,
                                   node=c.node)
    for run in records.values():
        meta, status = run.meta, run.exit_status
        started = meta.get("started", now)
        row = found.get(run.name) or BottleStatus(run.name, meta.get("agent", ""), meta.get("bottle", ""),
                                                  max(0, int(now - started)), "gone", True, None, me, True)
        if status is not None:
            ended = run.finished or now
            row = BottleStatus(row.name, row.agent, row.bottle, max(0, int(ended - started)),
                               "stopped" if run.stopped else f"exited ({status})", True, status, me, True,
                               run.result)
        found[run.name] = row
    return sorted(found.values(), key=lambda r: r.uptime_seconds)
