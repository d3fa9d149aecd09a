"""Integration test support: the real engine, the bottle image built once per run, labelled test objects.

Without a reachable engine the tests skip, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import tempfile
import unittest
import uuid
from pathlib import Path

import docker as docker_sdk

from claude_bottle import docker, image, manifest
from claude_bottle.docker import ContainerSpec  # noqa: F401  (re-exported for tests)
from claude_bottle.errors import DockerUnavailable

# Every object a test creates carries this label, so the suite can prove it removed them all.
TEST_LABEL = "org.claude-bottle.test"
RUN_ID = uuid.uuid4().hex[:8]


def engine() -> docker.Engine:
    try:
        return _engine()
    except DockerUnavailable as e:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"CI=true needs a Docker engine for the integration tests: {e}") from None
        raise unittest.SkipTest(str(e)) from None


@functools.cache
def _engine() -> docker.Engine:
    return docker.connect()


@functools.cache
def sdk() -> docker_sdk.DockerClient:
    engine()
    return docker_sdk.from_env(timeout=300)


def image_settings(**overrides) -> manifest.ImageSettings:
    """The image settings a user with this environment gets (CLAUDE_BOTTLE_CA_CERT and friends)."""
    with tempfile.TemporaryDirectory() as empty:
        settings = manifest.load(Path(empty), {**os.environ, "CLAUDE_BOTTLE_HOME": empty}).image
    return dataclasses.replace(settings, **overrides) if overrides else settings


def build(spec: image.ImageSpec) -> str:
    """Build `spec` if missing, quietly unless it fails; returns its tag."""
    lines = list(image.ensure(engine(), spec))
    if lines:
        print(f"\n[built {spec.tag}: {len(lines)} lines of build output]", file=sys.stderr)
    return spec.tag


@functools.cache
def bottle_image() -> str:
    """The default bottle image, built once per test run."""
    return build(image.spec(image_settings()))


def labels(**extra: str) -> dict[str, str]:
    return {TEST_LABEL: RUN_ID, **extra}


def run(image_ref: str, command, **kwargs) -> tuple[int, str]:
    """Run a labelled container to completion; returns its exit code and combined output."""
    container = sdk().containers.run(image_ref, command, detach=True, labels=labels(), **kwargs)
    try:
        code = container.wait(timeout=300)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def leftovers() -> list[str]:
    """Containers, networks and volumes of this run that still exist."""
    f = {"label": f"{TEST_LABEL}={RUN_ID}"}
    client = sdk()
    return ([f"container {c.name}" for c in client.containers.list(all=True, filters=f)]
            + [f"network {n.name}" for n in client.networks.list(filters=f)]
            + [f"volume {v.name}" for v in client.volumes.list(filters=f)])


class IntegrationTest(unittest.TestCase):
    """Skips (or fails under CI) without an engine; checks that each test class leaves nothing behind."""

    @classmethod
    def setUpClass(cls):
        engine()

    @classmethod
    def tearDownClass(cls):
        left = leftovers()
        if left:
            raise AssertionError(f"{cls.__name__} left objects behind: {', '.join(left)}")
