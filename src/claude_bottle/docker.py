"""The only module that talks to the Docker engine (through the Docker SDK for Python).

Everything else asks an `Engine` for what it needs in the product's terms, so
unit tests can stand a fake with the same methods in its place.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import docker
import docker.errors
import docker.types
from docker.utils.socket import frames_iter

from .errors import DockerUnavailable, ImageBuildError

LABEL_PREFIX = "org.claude-bottle."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ContainerSpec:
    """What a container is created with, as data, so tests can assert the exact payload.

    Never put a secret in `environment`: Docker stores it on disk and shows it in inspect."""

    name: str
    image: str
    command: tuple[str, ...]
    labels: Mapping[str, str]
    user: str | None = None
    network_mode: str = "none"
    hostname: str | None = None
    working_dir: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    init: bool = True
    mem_limit: str | None = None
    pids_limit: int | None = None
    volumes: tuple[tuple[str, str, bool], ...] = ()  # (volume name, mount path, read only)
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host folder, mount path, read only)
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # mount path -> mount options

    def create_kwargs(self) -> dict:
        """The arguments of the Engine API's container create, as the SDK takes them."""
        return {
            "image": self.image,
            "command": list(self.command),
            "name": self.name,
            "labels": dict(self.labels),
            "user": self.user,
            "hostname": self.hostname,
            "working_dir": self.working_dir,
            "environment": dict(self.environment),
            "detach": True,
            "host_config": {
                "network_mode": self.network_mode,
                "cap_drop": list(self.cap_drop),
                "security_opt": list(self.security_opt),
                "init": self.init,
                "mem_limit": self.mem_limit,
                "pids_limit": self.pids_limit,
                "mounts": [
                    {"Type": "volume", "Source": src, "Target": dst, "ReadOnly": ro}
                    for src, dst, ro in self.volumes
                ] + [
                    {"Type": "bind", "Source": src, "Target": dst, "ReadOnly": ro}
                    for src, dst, ro in self.binds
                ],
                "tmpfs": dict(self.tmpfs),
            },
        }


@dataclass(frozen=True)
class Found:
    """One of our objects, as listed by label."""

    kind: str  # container, network or volume
    name: str
    labels: Mapping[str, str]
    state: str = ""  # containers: running, exited, created…
    created: int = 0  # containers: seconds since the epoch


class Engine:
    """A connection to one Docker engine."""

    def __init__(self, client: docker.DockerClient, host: str, environ: Mapping[str, str]):
        self._api = client.api
        self.host = host
        self._environ = environ

    def clone(self) -> Engine:
        """Another connection to the same engine, for use from another thread."""
        return Engine(docker.from_env(environment=dict(self._environ), timeout=120), self.host, self._environ)

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

    def pull_image(self, ref: str) -> None:
        repository, _, tag = ref.rpartition(":")
        self._api.pull(repository, tag=tag)

    def remove_image(self, ref: str) -> None:
        try:
            self._api.remove_image(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


    # -- networks and volumes

    def host_address(self) -> str:
        """The Docker host's address on the default bridge, where containers reach the host's services.

        A freshly started engine records only the bridge's subnet, not its gateway (docker0 still has
        it): then the gateway is the subnet's first address, as the engine assigns it."""
        config = (self._api.inspect_network("bridge").get("IPAM") or {}).get("Config") or []
        for entry in config:
            if entry.get("Gateway"):
                return entry["Gateway"].split("/")[0]
        for entry in config:
            subnet = ipaddress.ip_network(entry.get("Subnet", ""), strict=False) if entry.get("Subnet") else None
            if subnet is not None and subnet.version == 4:
                return str(next(subnet.hosts()))
        raise DockerUnavailable("the Docker engine's default bridge network has no IPv4 subnet")

    def create_network(self, name: str, labels: Mapping[str, str]) -> None:
        self._api.create_network(name, driver="bridge", labels=dict(labels), check_duplicate=True)

    def remove_network(self, name: str) -> None:
        try:
            self._api.remove_network(name)
        except docker.errors.NotFound:
            pass

    def create_volume(self, name: str, labels: Mapping[str, str], tmpfs_options: str | None = None) -> None:
        """A named volume; with `tmpfs_options`, one that lives in memory only."""
        opts = {"type": "tmpfs", "device": "tmpfs", "o": tmpfs_options} if tmpfs_options else None
        self._api.create_volume(name, driver="local", driver_opts=opts, labels=dict(labels))

    def remove_volume(self, name: str) -> None:
        try:
            self._api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass

    # -- containers

    def create_container(self, spec: ContainerSpec) -> None:
        kwargs = spec.create_kwargs()
        hc = kwargs.pop("host_config")
        mounts = [docker.types.Mount(m["Target"], m["Source"], type=m["Type"], read_only=m["ReadOnly"])
                  for m in hc.pop("mounts")]
        kwargs.pop("detach")
        self._api.create_container(
            host_config=self._api.create_host_config(mounts=mounts, **{k: v for k, v in hc.items() if v is not None}),
            **kwargs,
        )

    def start_container(self, name: str) -> None:
        self._api.start(name)

    def remove_container(self, name: str) -> None:
        try:
            self._api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass

    def inspect_container(self, name: str) -> dict | None:
        try:
            return self._api.inspect_container(name)
        except docker.errors.NotFound:
            return None

    def put_archive(self, name: str, path: str, tar: bytes) -> None:
        self._api.put_archive(name, path, tar)

    def get_archive(self, name: str, path: str) -> bytes:
        """`path` in the container, as a tar."""
        stream, _ = self._api.get_archive(name, path)
        return b"".join(stream)

    def exec(self, name: str, argv: Sequence[str], user: str | None = None, stdin: bytes | None = None,
             workdir: str | None = None) -> tuple[int, bytes]:
        """Run a command in a running container; `stdin` is sent over the API connection (never an argument)."""
        exec_id = self._api.exec_create(name, list(argv), stdin=stdin is not None, user=user or "",
                                        workdir=workdir)["Id"]
        sock = self._api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        try:
            if stdin is not None:
                raw.sendall(stdin)
                raw.shutdown(socket.SHUT_WR)
            out = b"".join(data for _, data in frames_iter(sock, tty=False))
        finally:
            sock.close()
        return self._api.exec_inspect(exec_id)["ExitCode"], out

    def exec_stream(self, name: str, argv: Sequence[str], user: str, workdir: str, sink) -> int:
        """Run a command, writing its output to the binary file `sink` as it comes; returns its
        exit status (137 when the container went away under it)."""
        exec_id = self._api.exec_create(name, list(argv), user=user, workdir=workdir)["Id"]
        for chunk in self._api.exec_start(exec_id, stream=True):
            sink.write(chunk)
            sink.flush()
        try:
            code = self._api.exec_inspect(exec_id)["ExitCode"]
        except docker.errors.NotFound:
            code = None
        return 137 if code is None else code

    def exec_interactive(self, name: str, argv: Sequence[str], user: str, workdir: str, tty: bool,
                         stdin: bool) -> int:
        """Run a command with our terminal (or stdin and stdout) attached, through the docker CLI (raw
        mode, resize, signals). The arguments carry no secrets; the engine is the one this Engine talks to."""
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise DockerUnavailable("the docker command is not installed: install the Docker CLI to attach")
        flags = (["-i"] if stdin else []) + (["-t"] if tty else [])
        cmd = [docker_cli, "--host", self.host, "exec", *flags, "-u", user, "-w", workdir, name, *argv]
        process = subprocess.Popen(cmd)
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            raise

    def logs(self, name: str, follow: bool = False) -> Iterator[bytes]:
        return self._api.logs(name, stream=True, follow=follow)

    # -- finding our objects

    def find(self, labels: Mapping[str, str]) -> list[Found]:
        """Containers (running or not), networks and volumes carrying all of `labels`."""
        flt = {"label": _label_filter(labels)}
        found = [
            Found("container", c["Names"][0].lstrip("/"), c["Labels"] or {}, c["State"], int(c.get("Created", 0)))
            for c in self._api.containers(all=True, filters=flt)
        ]
        found += [Found("network", n["Name"], n.get("Labels") or {}) for n in self._api.networks(filters=flt)]
        found += [Found("volume", v["Name"], v.get("Labels") or {})
                  for v in (self._api.volumes(filters=flt).get("Volumes") or [])]
        return found


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
    return Engine(client, environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", dict(environ))


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
