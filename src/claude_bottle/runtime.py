"""Which runtime bottles run on: the Docker engine (the default) or a Kubernetes cluster (kube.py).

Chosen by `--runtime` (which sets CLAUDE_BOTTLE_RUNTIME for this process and the ones it starts, so a
detached run's supervisor stays on the same one) or by CLAUDE_BOTTLE_RUNTIME itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import BottleError

RUNTIMES = ("docker", "kubernetes")
VARIABLE = "CLAUDE_BOTTLE_RUNTIME"


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
