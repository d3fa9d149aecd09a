"""`claude-bottle doctor`: is this machine ready to run bottles, and if not, what to do about each thing.

Every check says what it found and, when something is wrong, the fix. Nothing is created, no secret is
shown, and the token is only looked at for its shape.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from . import docker, image, manifest, pins, runtime, sidecar
from .bottle import TOKEN_VARIABLE
from .errors import BottleError

GIB = 2**30
# An image build needs about this much; under the lower figure a build or a big workspace fails.
DISK_WARN, DISK_FAIL = 10 * GIB, 2 * GIB


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    found: str
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def checks(environ: Mapping[str, str], cwd: Path) -> list[Check]:
    found: list[Check] = []
    m = _manifests(environ, cwd, found)
    found.append(_token(environ))
    ca = environ.get("CLAUDE_BOTTLE_CA_CERT")
    settings = m.image if m else manifest.ImageSettings(ca_cert=Path(ca) if ca else None)
    found.append(_ca(settings))
    if runtime.chosen(environ) == "kubernetes":
        found += _cluster(environ, m)
    try:
        engine = docker.connect(environ)
    except BottleError as e:
        found.append(Check("engine", "fail", str(e),
                           "start Docker (sudo systemctl start docker), or set DOCKER_HOST; to use it without sudo: "
                           "sudo usermod -aG docker $USER, then log in again"))
        return found
    version, root = engine.describe()
    found.append(Check("engine", "ok", f"Docker {version} at {engine.host}"))
    try:
        found += _images(engine, settings)
    except OSError:  # the images' names depend on the CA file, reported above
        found.append(Check("images", "warn", "not checked: their names depend on the CA file",
                           "fix the CA file first"))
    found.append(_disk(Path(root) if root else None))
    return found


def _manifests(environ: Mapping[str, str], cwd: Path, found: list[Check]) -> manifest.Manifest | None:
    home = manifest.home_dir(environ) / manifest.MANIFEST_NAME
    try:
        m = manifest.load(cwd, environ)
    except BottleError as e:
        found.append(Check("manifests", "fail", str(e).splitlines()[0],
                           "fix the file and field it names (`claude-bottle init` writes a valid starting one)"))
        return None
    where = [f"home {home}" if home.is_file() else f"no home manifest ({home}; `claude-bottle init` writes one)"]
    if m.project is not None:
        where.append(f"project {m.project.path} ({'trusted' if m.project.trusted else 'NOT TRUSTED'})")
    status = "ok" if m.project is None or m.project.trusted else "warn"
    found.append(Check("manifests", status, f"{len(m.agents)} agents; " + "; ".join(where),
                       "" if status == "ok" else "`claude-bottle trust` shows what the project file asks for and "
                                                 "allows it"))
    return m


def _token(environ: Mapping[str, str]) -> Check:
    token = environ.get(TOKEN_VARIABLE, "")
    fix = f"run `claude setup-token` and export the token it prints as {TOKEN_VARIABLE}"
    if not token:
        return Check("token", "fail", f"{TOKEN_VARIABLE} is not set", fix)
    if token != token.strip() or any(c.isspace() for c in token):
        return Check("token", "fail", f"{TOKEN_VARIABLE} has spaces or line breaks in it", fix)
    if token.startswith("sk-ant-api"):
        return Check("token", "warn", f"{TOKEN_VARIABLE} holds an API key, not an OAuth token: Claude Code bills it "
                                      "per use, and the sidecar only adds an OAuth token", fix)
    if not token.startswith("sk-ant-oat"):
        return Check("token", "warn", f"{TOKEN_VARIABLE} is not shaped like a Claude OAuth token (sk-ant-oat…)", fix)
    return Check("token", "ok", f"{TOKEN_VARIABLE} is set and shaped like an OAuth token")


def _ca(settings: manifest.ImageSettings) -> Check:
    if settings.ca_cert is None:
        return Check("ca", "ok", "no extra CA certificates (CLAUDE_BOTTLE_CA_CERT or image.ca_cert: only behind a "
                                 "TLS-inspecting proxy)")
    try:
        text = settings.ca_cert.read_text(errors="replace")
    except OSError as e:
        return Check("ca", "fail", f"cannot read {settings.ca_cert}: {e.strerror or e}",
                     "point CLAUDE_BOTTLE_CA_CERT (or image.ca_cert) at a readable PEM file")
    count = text.count("-----BEGIN CERTIFICATE-----")
    if not count:
        return Check("ca", "fail", f"{settings.ca_cert} holds no PEM certificate",
                     "give a PEM file (-----BEGIN CERTIFICATE----- blocks)")
    return Check("ca", "ok", f"{settings.ca_cert}: {count} certificate{'s' if count != 1 else ''}")


def _cluster(environ: Mapping[str, str], m: manifest.Manifest | None) -> list[Check]:
    """On the Kubernetes runtime: the cluster answers, the namespace is there, and where its nodes get our images.
    (Docker is still checked below: it builds the images a cluster runs.)"""
    from . import kube

    try:
        cluster = kube.connect(environ, namespace_checked=False)  # its own check, below
    except BottleError as e:
        return [Check("cluster", "fail", str(e), "check KUBECONFIG and --context (or runtime.context in the home "
                                                 "manifest), or use --runtime docker")]
    out = [Check("cluster", "ok", f"Kubernetes at {cluster.host}, context {cluster.context}")]
    exists = cluster.namespace_exists()
    if exists is False:
        out.append(Check("namespace", "fail", f"{cluster.namespace} does not exist",
                         f"kubectl create namespace {cluster.namespace}, or name another with --namespace"))
    else:
        out.append(Check("namespace", "ok", cluster.namespace + ("" if exists else " (may not look it up: not checked)")))
    registry = m.image.registry if m else None
    if registry:
        out.append(Check("registry", "ok", f"the nodes pull the images from {registry} "
                                           "(`claude-bottle build --push` puts them there)"))
    else:
        out.append(Check("registry", "warn", "no image.registry in the home manifest: the nodes must have the images "
                                             "already", "set image.registry and run `claude-bottle build --push`, or "
                                                        "import the images into the nodes"))
    return out


def _images(engine: docker.Engine, settings: manifest.ImageSettings) -> list[Check]:
    out = []
    for what, tag, fix in (
        ("bottle image", image.spec(settings).tag, "built by the first `start` (a few minutes), or now with "
                                                   "`claude-bottle build`"),
        ("sidecar image", sidecar.spec(settings).tag, "built by the first `start` (about half a minute)"),
        ("pipelock image", pins.PIPELOCK_IMAGE, "pulled by the first `start`; without a registry: "
                                                "scripts/offline-images.sh pipelock --pipelock-source FILE"),
    ):
        present = engine.image_exists(tag)
        out.append(Check(what, "ok" if present else "warn", f"{tag} {'present' if present else 'not here yet'}",
                         "" if present else fix))
    return out


def _disk(root: Path | None) -> Check:
    where = root if root is not None and root.exists() else None
    if where is None:
        return Check("disk", "ok", "the engine's data folder is not on this machine: not checked")
    free = shutil.disk_usage(where).free
    text = f"{free / GIB:.1f} GiB free for {where}"
    if free < DISK_FAIL:
        return Check("disk", "fail", text, "free some space: `docker system df` shows what images and containers use")
    if free < DISK_WARN:
        return Check("disk", "warn", text, "an image build needs a few GiB: `docker system df` shows what is used")
    return Check("disk", "ok", text)
