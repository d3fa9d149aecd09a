"""Which runtime bottles run on: the Docker engine (the default) or a Kubernetes cluster (kube.py).

Chosen by `--runtime` (which sets CLAUDE_BOTTLE_RUNTIME for this process and the ones it starts, so a
detached run's supervisor stays on the same one), by CLAUDE_BOTTLE_RUNTIME itself, or by the home
manifest's `runtime` settings, in that order; the same for the context and the namespace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from .errors import BottleError, ManifestError
from .paths import home_dir

RUNTIMES = ("docker", "kubernetes")
VARIABLE = "CLAUDE_BOTTLE_RUNTIME"

RUNTIME_SETTINGS = {"name": "CLAUDE_BOTTLE_RUNTIME", "context": "CLAUDE_BOTTLE_CONTEXT",
                    "namespace": "CLAUDE_BOTTLE_NAMESPACE"}


def home_runtime(environ: Mapping[str, str]) -> dict[str, str]:
    """The home manifest's `runtime` settings, as the variables they stand for.

    Read on its own, without the schema (every command needs it, `ps` and `stop` included, and they must
    work even when something else in the file is wrong: the commands that read the whole file say so)."""
    path = home_dir(environ) / "claude-bottle.json"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    raw = data.get("runtime") if isinstance(data, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ManifestError("must be an object like {\"name\": \"kubernetes\"}", path, "runtime")
    found = {}
    for key, value in raw.items():
        if key == "$comment":
            continue
        if key not in RUNTIME_SETTINGS:
            raise ManifestError(f"unknown setting '{key}': use {', '.join(RUNTIME_SETTINGS)}", path, "runtime")
        if not isinstance(value, str) or not value:
            raise ManifestError("must be a non-empty string", path, f"runtime.{key}")
        if key == "name" and value not in RUNTIMES:
            raise ManifestError("must be docker or kubernetes", path, "runtime.name")
        found[RUNTIME_SETTINGS[key]] = value
    return found


def settle(environ: dict[str, str]) -> None:
    """Fill in, from the home manifest, whichever runtime variables neither an option nor the user set."""
    for variable, value in home_runtime(environ).items():
        environ.setdefault(variable, value)


def chosen(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    name = (environ.get(VARIABLE) or "docker").strip().lower()
    if name not in RUNTIMES:
        raise BottleError(f"{VARIABLE}={name}: not a runtime: use docker or kubernetes")
    return name


def connect(environ: Mapping[str, str] | None = None):
    """The engine of the chosen runtime, checked to answer: a docker.Engine or a kube.Cluster."""
    environ = os.environ if environ is None else environ
    if chosen(environ) == "kubernetes":
        from . import kube

        return kube.connect(environ)
    from . import docker

    return docker.connect(environ)
