"""The only module that talks to the Docker engine (through the Docker SDK for Python).

Everything else asks an `Engine` for what it needs in the product's terms, so
unit tests can stand a fake with the same methods in its place.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping

import docker
import docker.errors

from .errors import DockerUnavailable, ImageBuildError

LABEL_PREFIX = "org.claude-bottle."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Engine:
    """A connection to one Docker engine."""

    def __init__(self, client: docker.DockerClient):
        self._client = client
        self._api = client.api

    # -- images

    def image_exists(self, ref: str) -> bool:
        try:
            self._api.inspect_image(ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    def build_image(
        self,
        context: bytes,
        tag: str,
        buildargs: Mapping[str, str],
        labels: Mapping[str, str],
        nocache: bool = False,
    ) -> Iterator[str]:
        """Build from an in-memory tar context, yielding the engine's progress lines.

        Raises ImageBuildError with the engine's last lines when a step fails."""
        stream = self._api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=tag,
            buildargs=dict(buildargs),
            labels=dict(labels),
            nocache=nocache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        recent: list[str] = []
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                tail = "".join(recent[-15:]).rstrip()
                raise ImageBuildError(
                    f"building {tag} failed: {detail.strip()}"
                    + (f"\nlast build output:\n{tail}" if tail else "")
                )
            text = _ANSI.sub("", chunk.get("stream") or chunk.get("status") or "")
            if text:
                recent.append(text)
                del recent[:-50]
                yield text

    def remove_image(self, ref: str) -> None:
        try:
            self._api.remove_image(ref, force=True)
        except docker.errors.ImageNotFound:
            pass

    def images(self, labels: Mapping[str, str]) -> list[dict]:
        return self._api.images(filters={"label": _label_filter(labels)})

    def tag_image(self, ref: str, repository: str, tag: str) -> None:
        self._api.tag(ref, repository, tag)


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" if v else k for k, v in labels.items()]


def connect(environ: Mapping[str, str] | None = None) -> Engine:
    """Connect to the engine DOCKER_HOST names (or the default socket) and check it answers."""
    environ = os.environ if environ is None else environ
    where = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(environment=dict(environ), timeout=120)
        client.ping()
    # The SDK surfaces an absent daemon as DockerException or as raw requests/urllib3 errors.
    except Exception as e:
        raise DockerUnavailable(
            f"Docker daemon not reachable at {where}: start Docker or set DOCKER_HOST ({_short(e)})"
        ) from None
    return Engine(client)


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
