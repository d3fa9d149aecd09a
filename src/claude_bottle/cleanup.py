"""Finds claude-bottle's Docker objects by label and removes them: one bottle's, those of
sessions whose owner process is gone, or all of them. Containers go before networks and volumes."""

from __future__ import annotations

from .bottle import DETACHED, LABEL_BOTTLE, LABEL_OWNER, Owner
from .docker import Engine, Found

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
    """Remove `objects` in dependency order; an object already gone counts as removed."""
    removers = {"container": engine.remove_container, "network": engine.remove_network,
                "volume": engine.remove_volume}
    for obj in sorted(objects, key=lambda o: _ORDER[o.kind]):
        removers[obj.kind](obj.name)
    return objects
