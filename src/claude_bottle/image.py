"""The bottle image: its build context, its content-addressed tag, and building it.

The tag is a hash of everything that goes into the image (the Dockerfile and
files beside it, the base image name, the Claude Code version and any extra CA
certificates), so an image is rebuilt exactly when one of those changes.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import lazy
from .docker import LABEL_PREFIX, Engine

hashlib = lazy.Module("hashlib")  # OpenSSL's, a few ms: `exec` and `stop` read this module's names only

if TYPE_CHECKING:  # only named here: `exec` and `stop` need this module, and manifest takes a tenth of their imports
    from .manifest import ImageSettings

REPOSITORY = "claude-bottle"
BOTTLE_USER = "claude"
BOTTLE_UID = 1000
BOTTLE_HOME = f"/home/{BOTTLE_USER}"
WORKSPACE = "/workspace"
# Copies of programs the bottle's user may run but not read (the Dockerfile says why): python3 (for PID 1),
# bash, timeout.
PRIVATE_BIN = "/usr/local/lib/claude-bottle"
# The bottle's PID 1, which no signal of the agent's ends (bottle-pid1.py says how), from a copy of python3 the
# agent's user may run but not read (the Dockerfile says why), in place of Docker's own init, which the agent
# could attach to and so undo `stop`'s freeze. It runs the program named after it.
PID1 = (f"{PRIVATE_BIN}/python3", "-I", "-S", f"{PRIVATE_BIN}/pid1.py")


@dataclass(frozen=True)
class ImageSpec:
    """Everything a build needs, and the tag it gets."""

    files: tuple[tuple[str, bytes], ...]
    buildargs: tuple[tuple[str, str], ...]
    repository: str = REPOSITORY

    @property
    def digest(self) -> str:
        h = hashlib.sha256(b"claude-bottle image v1\0")
        for name, data in self.files:
            h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
        h.update(json.dumps(self.buildargs).encode())
        return h.hexdigest()

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.digest[:16]}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_PREFIX + "role": "image", LABEL_PREFIX + "inputs": self.digest}

    def context_tar(self) -> bytes:
        buf = io.BytesIO()
        import tarfile

        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in self.files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if data.startswith(b"#!") else 0o644  # scripts run in the image
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A tar entry as the bottle's user's (files we copy in must not land as root's)."""
    info.uid = info.gid = BOTTLE_UID
    info.uname = info.gname = BOTTLE_USER
    return info


PUSHED_FILE = "pushed-images.json"  # in the state folder: what `build --push` pushed, by digest


def in_registry(tag: str, registry: str | None, state: Path | None = None) -> str:
    """`tag` (repository:content-hash) as the home manifest's image.registry holds it, or as it is without one.

    Pinned to the digest `build --push` pushed from this machine when there is one: a tag in a registry can
    be moved by whoever may push there, a digest names the very image we built."""
    if not registry:
        return tag
    ref = f"{registry}/{tag}"
    digest = pushed(state).get(ref) if state else None
    return f"{ref}@{digest}" if digest else ref


def pushed(state: Path) -> dict[str, str]:
    try:
        data = json.loads((state / PUSHED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", v)} \
        if isinstance(data, dict) else {}


def record_push(state: Path, ref: str, digest: str) -> None:
    """Remember that `ref` was pushed as `digest` (written whole, then renamed: never half a file)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = pushed(state) | {ref: digest}
    tmp = state / f".{PUSHED_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(state / PUSHED_FILE)


def spec(settings: ImageSettings) -> ImageSpec:
    """The image that `settings` describe; reads the CA file, touches nothing else."""
    context = Path(__file__).parent / "image_context"
    files = sorted((entry.name, entry.read_bytes()) for entry in context.iterdir() if entry.is_file())
    ca = settings.ca_cert.read_bytes() if settings.ca_cert else b""
    files.append(("extra-ca.crt", ca))
    buildargs = (
        ("BASE_IMAGE", settings.base),
        ("BOTTLE_UID", str(BOTTLE_UID)),
        ("BOTTLE_USER", BOTTLE_USER),
        ("CLAUDE_CODE_VERSION", settings.claude_code_version),
    )
    return ImageSpec(tuple(files), buildargs)


def build(engine: Engine, image: ImageSpec, nocache: bool = False) -> Iterator[str]:
    """Build `image`, yielding progress lines."""
    yield from engine.build_image(
        image.context_tar(), image.tag, dict(image.buildargs), image.labels, nocache=nocache
    )


def ensure(engine: Engine, image: ImageSpec) -> Iterator[str]:
    """Build `image` only if its tag is missing; yields progress lines if it builds."""
    if not engine.image_exists(image.tag):
        yield from build(engine, image)
