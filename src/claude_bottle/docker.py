"""The only module that talks to the Docker engine (through the Docker SDK for Python).

Everything else asks an `Engine` for what it needs in the product's terms and
gets small typed values back, so unit tests can stand a fake with the same
methods in its place. Every failure of the engine, or of the connection to it,
leaves this module as a DockerUnavailable with one readable line.
"""

from __future__ import annotations

import codecs
import functools
import inspect
import io
import json
import ipaddress
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from . import lazy, terminal
from .errors import BottleError, DockerUnavailable, EngineLost, ImageBuildError

# Only an exec with a terminal needs these: every other command (and each of many bottles starting at once)
# would pay for their import.
screen, shutil, subprocess = (lazy.Module(name) for name in (f"{__package__}.screen", "shutil", "subprocess"))

LABEL_PREFIX = "org.claude-bottle."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What the engine keeps of a container's output, whatever the daemon's default: a bottle that writes without
# end would otherwise fill the host's disk. json-file, which `claude-bottle logs` reads back.
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = 2


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
    cpus: float | None = None
    mem_reservation: str | None = None  # a soft floor here; what a cluster's scheduler sets aside there
    cpu_reservation: float | None = None  # only a cluster's (Docker has no such reservation)
    volumes: tuple[tuple[str, str, bool], ...] = ()  # (volume name, mount path, read only)
    binds: tuple[tuple[str, str, bool], ...] = ()  # (host folder, mount path, read only)
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # mount path -> mount options
    stdin_open: bool = False  # its stdin stays open until `start_with_input` has written to it

    def api_body(self) -> dict:
        """The body of the Engine API's container create (its name goes in the query)."""
        body = {
            "Image": self.image,
            "Cmd": list(self.command) or None,
            "Labels": dict(self.labels),
            "User": self.user or "",
            "Hostname": self.hostname or "",
            "WorkingDir": self.working_dir or "",
            "Env": [f"{k}={v}" for k, v in self.environment.items()],
            # Its stdin stays open until the first attach (start_with_input) lets go of it.
            "OpenStdin": self.stdin_open, "StdinOnce": self.stdin_open, "AttachStdin": self.stdin_open,
            "AttachStdout": False, "AttachStderr": False, "Tty": False,
            "HostConfig": {
                "NetworkMode": self.network_mode,
                "CapDrop": list(self.cap_drop),
                "SecurityOpt": list(self.security_opt),
                "Init": self.init,
                "Mounts": [
                    {"Type": "volume", "Source": src, "Target": dst, "ReadOnly": ro}
                    for src, dst, ro in self.volumes
                ] + [
                    {"Type": "bind", "Source": src, "Target": dst, "ReadOnly": ro}
                    for src, dst, ro in self.binds
                ],
                "Tmpfs": dict(self.tmpfs),
                "LogConfig": {"Type": "json-file",
                              "Config": {"max-size": LOG_MAX_SIZE, "max-file": str(LOG_MAX_FILES)}},
            },
        }
        if self.mem_limit is not None:
            # No swap beyond the limit: a bottle over its memory is stopped, not slowed to a crawl.
            body["HostConfig"]["Memory"] = body["HostConfig"]["MemorySwap"] = size_in_bytes(self.mem_limit)
        if self.pids_limit is not None:
            body["HostConfig"]["PidsLimit"] = self.pids_limit
        if self.cpus is not None:
            body["HostConfig"]["NanoCpus"] = round(self.cpus * 1e9)
        if self.mem_reservation is not None:
            body["HostConfig"]["MemoryReservation"] = size_in_bytes(self.mem_reservation)
        return body


_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def size_in_bytes(size: str) -> int:
    """A size as the manifest writes it (4g, 512m, 65536) in bytes, as Docker reads it."""
    digits, unit = (size[:-1], size[-1].lower()) if size[-1:].isalpha() else (size, "")
    if not digits.isdigit() or unit not in _UNITS:
        raise ValueError(f"not a size like 4g or 512m: {size!r}")
    return int(digits) * _UNITS[unit]


@dataclass(frozen=True)
class ContainerState:
    """What the engine says of one container, in our terms."""

    name: str
    running: bool
    status: str  # created, running, exited, …
    exit_code: int | None
    oom_killed: bool
    labels: Mapping[str, str]


class NotFound(DockerUnavailable):
    """The engine has no such object (404)."""


class ExecTimeout(BottleError):
    """A command in a container did not finish in the time it was given."""


class OutputTooLarge(BottleError):
    """A container sent more than the host was prepared to take."""


@dataclass(frozen=True)
class Found:
    """One of our objects, as listed by label."""

    kind: str  # container, network or volume
    name: str
    labels: Mapping[str, str]
    state: str = ""  # containers: running, exited, created…
    created: int = 0  # containers: seconds since the epoch
    node: str = ""  # on Kubernetes: the node its pod runs on


# Failures of the connection itself, as the SDK and the libraries under it raise them (completed by _load).
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
docker = frames_iter = None  # the SDK, imported by _load: commands that never reach the engine start faster


def _load() -> None:
    """Import the Docker SDK (a tenth of a second, mostly `requests`) the first time a command needs it."""
    global docker, frames_iter, _CONNECTION_ERRORS
    if docker is not None:
        return
    import docker as sdk
    import docker.errors
    import docker.types
    import requests
    import urllib3
    from docker.utils.socket import frames_iter as frames

    docker, frames_iter = sdk, frames
    _CONNECTION_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError,
                          docker.errors.DockerException)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _engine_failure(host: str, e: Exception) -> DockerUnavailable:
    if docker is not None and isinstance(e, docker.errors.APIError):
        return DockerUnavailable(f"the Docker engine at {host} refused: {_one_line(e.explanation or e)}")
    return EngineLost(f"lost the connection to the Docker engine at {host}: {_one_line(e) or type(e).__name__}")


def _translated(method):
    """Engine failures, and a lost connection, leave the Engine as DockerUnavailable: one line, exit 4."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator(self, *args, **kwargs):
            try:
                yield from method(self, *args, **kwargs)
            except BottleError:
                raise
            except _CONNECTION_ERRORS as e:
                raise _engine_failure(self.host, e) from None
        return generator

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BottleError:
            raise
        except _CONNECTION_ERRORS as e:
            raise _engine_failure(self.host, e) from None
    return call


def _translate_errors(cls):
    for name, member in list(vars(cls).items()):
        if callable(member) and not name.startswith("_"):
            setattr(cls, name, _translated(member))
    return cls


@_translate_errors
class Engine:
    """A connection to one Docker engine."""

    kind = "docker"  # the runtime (kube.Cluster is the other)

    def __init__(self, client: docker.DockerClient | None, host: str, environ: Mapping[str, str]):
        self._client = client
        self.host = host
        self._environ = environ

    @property
    def _api(self) -> docker.APIClient:
        # Made on first use: on the usual Unix socket only builds and pulls need it.
        if self._client is None:
            _load()
            self._client = docker.from_env(environment=dict(self._environ), timeout=120)
        return self._client.api

    def answers(self) -> bool:
        """Whether the engine answers now (after it went away: it has restarted)."""
        try:
            if sock := self._direct():
                return sock.call("GET", "/_ping", timeout=5)[0] == 200
            return bool(self._api.ping())
        except Exception:  # any failure to answer is a no here, whatever raised it
            return False

    def clone(self) -> Engine:
        """Another connection to the same engine, for use from another thread (made when first needed)."""
        return Engine(None, self.host, self._environ)

    # -- images

    def image_exists(self, ref: str) -> bool:
        if sock := self._direct():
            return sock.exists("GET", f"/images/{_q(ref)}/json")
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

    def push_image(self, tag: str, ref: str) -> Iterator[str]:
        """Tag the local image `tag` as `ref` too and push that, yielding the engine's progress lines. The
        registry's credentials are Docker's own (`docker login`): none pass through us."""
        repository, _, version = ref.rpartition(":")
        self._api.tag(tag, repository, version)
        for chunk in self._api.push(repository, tag=version, stream=True, decode=True):
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise ImageBuildError(f"pushing {ref} failed: {_one_line(detail)}")
            text = " ".join(str(chunk[k]) for k in ("id", "status", "progress") if chunk.get(k))
            if text:
                yield text + "\n"

    def repo_digest(self, ref: str) -> str | None:
        """The digest under which the registry of `ref` holds this image (known once pushed or pulled)."""
        repository = ref.rpartition(":")[0]
        for entry in self._api.inspect_image(ref).get("RepoDigests") or []:
            name, _, digest = entry.partition("@")
            if name == repository:
                return digest
        return None

    def pull_image(self, ref: str) -> None:
        repository, _, tag = ref.rpartition(":")
        self._api.pull(repository, tag=tag)

    def remove_image(self, ref: str) -> None:
        try:
            self._api.remove_image(ref, force=True)
        except docker.errors.ImageNotFound:
            pass


    # -- networks and volumes

    def describe(self) -> tuple[str, str]:
        """The engine's version and its data folder (where images and containers take disk space)."""
        info = self._api.info()
        return str(self._api.version().get("Version", "?")), str(info.get("DockerRootDir", ""))

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

    def network_exists(self, name: str) -> bool:
        if sock := self._direct():
            return sock.call("GET", f"/networks/{_q(name)}")[0] == 200
        return bool(self._api.networks(names=[name]))

    def ensure_network(self, name: str, labels: Mapping[str, str]) -> None:
        """A bridge network that stays (shared by many bottles): made if missing, also when several processes
        make it at once."""
        if sock := self._direct():
            status, body = sock.call("GET", f"/networks/{_q(name)}")
            if status == 200:
                return
            sock.send("POST", "/networks/create", {"Name": name, "Driver": "bridge", "Labels": dict(labels),
                                                   "CheckDuplicate": True}, ok=(201, 409))
            return
        if self._api.networks(names=[name]):
            return
        try:
            self._api.create_network(name, driver="bridge", labels=dict(labels), check_duplicate=True)
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise

    def _direct(self) -> _Socket | None:
        """The engine's Unix socket, spoken to without the SDK (see _Socket); None for any other host."""
        path = _unix_socket(self.host)
        return _Socket(path, self.host) if path and not self._environ.get("DOCKER_TLS_VERIFY") else None

    def _delete(self, url: str) -> int:
        """DELETE through the socket: its status (204, 404, 409…); other failures raise."""
        sock = self._direct()
        status, body = sock.call("DELETE", url)
        if status not in (200, 204, 404, 409):
            raise sock.refused(status, body)
        return status

    def remove_network(self, name: str) -> None:
        if self._direct():
            self._delete(f"/networks/{urllib.parse.quote(name)}")
            return
        try:
            self._api.remove_network(name)
        except docker.errors.NotFound:
            pass

    def create_volume(self, name: str, labels: Mapping[str, str], tmpfs_options: str | None = None) -> None:
        """A named volume; with `tmpfs_options`, one that lives in memory only."""
        opts = {"type": "tmpfs", "device": "tmpfs", "o": tmpfs_options} if tmpfs_options else None
        if sock := self._direct():
            sock.send("POST", "/volumes/create", {"Name": name, "Driver": "local", "DriverOpts": opts or {},
                                                  "Labels": dict(labels)})
            return
        self._api.create_volume(name, driver="local", driver_opts=opts, labels=dict(labels))

    def remove_volume(self, name: str) -> None:
        if self._direct():
            self._delete(f"/volumes/{urllib.parse.quote(name)}?force=1")
            return
        try:
            self._api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass

    # -- containers

    def create_container(self, spec: ContainerSpec) -> None:
        if sock := self._direct():
            sock.send("POST", f"/containers/create?name={_q(spec.name)}", spec.api_body())
            return
        self._api.create_container_from_config(spec.api_body(), spec.name)

    def start_container(self, name: str) -> None:
        if sock := self._direct():
            sock.send("POST", f"/containers/{_q(name)}/start", ok=(204, 304))
            return
        self._api.start(name)

    def start_with_input(self, name: str, data: bytes, timeout: float) -> str:
        """Start a container created with `stdin_open`, write `data` to its stdin (over the API connection:
        never a file, an argument or a log), and return the first line it writes to stdout."""
        if sock := self._direct():
            stream = sock.hijack(f"/containers/{_q(name)}/attach?stdin=1&stdout=1&stderr=1&stream=1",
                                 timeout=timeout)
        else:
            stream = _SdkStream(self._api.attach_socket(name, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                                      "stream": 1}))
        frames = stream.frames()
        try:
            self.start_container(name)
            stream.write(data)
            stream.close_write()
            stream.sock.settimeout(timeout)
            out = b""
            try:
                for _, chunk in frames:
                    out += chunk
                    if b"\n" in out:
                        break
            except (TimeoutError, socket.timeout):
                raise ExecTimeout(f"{name} said nothing within {timeout:.0f} s") from None
            return out.split(b"\n", 1)[0].decode(errors="replace")
        finally:
            stream.close()

    def remove_container(self, name: str, wait: float = 60.0) -> None:
        """Remove `name`, running or not. Gone already, or being removed by someone else (409), counts as
        removed once it has gone."""
        deadline = time.monotonic() + wait
        while True:
            if self._direct():
                status = self._delete(f"/containers/{_q(name)}?force=1&v=1")
                if status != 409:
                    return
                if time.monotonic() > deadline:
                    raise BottleError(f"the Docker engine would not remove container {name}: it is being "
                                      "removed or changed by someone else")
            else:
                try:
                    self._api.remove_container(name, force=True, v=True)
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as e:
                    if e.status_code != 409 or time.monotonic() > deadline:
                        raise
            time.sleep(0.1)

    def container(self, name: str) -> ContainerState | None:
        if sock := self._direct():
            status, body = sock.call("GET", f"/containers/{_q(name)}/json")
            if status == 404:
                return None
            if status != 200:
                raise sock.refused(status, body)
            info = json.loads(body)
        else:
            try:
                info = self._api.inspect_container(name)
            except docker.errors.NotFound:
                return None
        state = info.get("State") or {}
        return ContainerState(
            name=name, running=bool(state.get("Running")), status=state.get("Status", ""),
            exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")),
            labels=(info.get("Config") or {}).get("Labels") or {})

    def put_archive(self, name: str, path: str, tar: bytes | BinaryIO) -> None:
        if sock := self._direct():
            status, body = sock.call("PUT", f"/containers/{_q(name)}/archive?path={_q(path)}", tar,
                                     content_type="application/x-tar")
            if status != 200:
                raise sock.refused(status, body)
            return
        self._api.put_archive(name, path, tar)

    def exec(self, name: str, argv: Sequence[str], user: str | None = None, stdin: bytes | None = None,
             workdir: str | None = None, timeout: float | None = None) -> tuple[int, bytes]:
        """Run a command in a running container; `stdin` is sent over the API connection (never an
        argument). Returns its exit status and its output (stdout and stderr together)."""
        out = bytearray()
        code = self._exec(name, argv, user, workdir, stdin, timeout, out.extend, out.extend)
        return code, bytes(out)

    def exec_to(self, name: str, argv: Sequence[str], sink: BinaryIO, user: str | None = None,
                workdir: str | None = None, timeout: float | None = None, limit: int | None = None
                ) -> tuple[int, bytes]:
        """Run a command, its stdout written to the binary file `sink` as it comes (at most `limit` bytes);
        returns its exit status and its stderr."""
        err = bytearray()
        code = self._exec(name, argv, user, workdir, None, timeout, limited(sink, limit, argv), err.extend)
        return code, bytes(err)

    def exec_stream(self, name: str, argv: Sequence[str], user: str, workdir: str, sink) -> int:
        """Run a command, writing its output to the binary file `sink` as it comes; returns its
        exit status (137 when the container went away under it)."""
        def write(data: bytes) -> None:
            sink.write(data)
            sink.flush()

        try:
            return self._exec(name, argv, user, workdir, None, None, write, write)
        except Exception as e:
            if isinstance(e, NotFound) or (docker is not None and isinstance(e, docker.errors.NotFound)):
                return 137
            raise

    def _exec(self, name: str, argv: Sequence[str], user: str | None, workdir: str | None, stdin: bytes | None,
              timeout: float | None, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> int:
        stream, inspect_exit = self._exec_start(name, argv, user, workdir, stdin is not None, timeout)
        began = time.monotonic()
        try:
            if stdin is not None:
                stream.write(stdin)
                stream.close_write()
            for kind, data in stream.frames():
                (on_stderr if kind == 2 else on_stdout)(data)
                if timeout is not None:
                    left = timeout - (time.monotonic() - began)
                    if left <= 0:
                        raise TimeoutError
                    stream.sock.settimeout(left)
        except (TimeoutError, socket.timeout):
            raise ExecTimeout(f"`{' '.join(argv[:3])}` did not finish within {timeout:.0f} s") from None
        finally:
            stream.close()
        return inspect_exit()

    def _exec_start(self, name: str, argv: Sequence[str], user: str | None, workdir: str | None, stdin: bool,
                    timeout: float | None) -> tuple[_Stream, Callable[[], int]]:
        """Start `argv` in container `name`: its stream, and what returns its exit status once its output
        has ended."""
        if sock := self._direct():
            exec_id = sock.send("POST", f"/containers/{_q(name)}/exec", {
                "AttachStdin": stdin, "AttachStdout": True, "AttachStderr": True, "Tty": False,
                "Cmd": list(argv), "User": user or "", "WorkingDir": workdir or ""}, ok=(201,))["Id"]
            stream = sock.hijack(f"/exec/{exec_id}/start", {"Detach": False, "Tty": False}, timeout=timeout)

            def status() -> dict:
                return sock.get(f"/exec/{exec_id}/json")
        else:
            exec_id = self._api.exec_create(name, list(argv), stdin=stdin, user=user or "", workdir=workdir)["Id"]
            stream = _SdkStream(self._api.exec_start(exec_id, socket=True))
            stream.sock.settimeout(timeout)

            def status() -> dict:
                return self._api.exec_inspect(exec_id)

        def exit_status() -> int:
            for _ in range(50):  # the engine records the exit status a moment after the output ends
                code = status().get("ExitCode")
                if code is not None:
                    return code
                time.sleep(0.02)
            return 137
        return stream, exit_status

    def path_exists(self, name: str, path: str) -> bool:
        """Whether `path` is in container `name`, running or not (an exec needs it running)."""
        if sock := self._direct():
            return sock.exists("HEAD", f"/containers/{_q(name)}/archive?path={_q(path)}")
        try:
            stream, _ = self._api.get_archive(name, path)
        except docker.errors.NotFound:
            return False
        for _ in stream:  # read to its end: the connection goes back to the pool
            pass
        return True

    def get_archive_to(self, name: str, path: str, sink: BinaryIO, limit: int | None = None) -> None:
        """`path` in the container, as a tar written to `sink` (at most `limit` bytes)."""
        stream, _ = self._api.get_archive(name, path)
        written = 0
        for chunk in stream:
            written += len(chunk)
            if limit is not None and written > limit:
                raise OutputTooLarge(f"{path} in the bottle is larger than {limit // 2**20} MiB")
            sink.write(chunk)

    def exec_interactive(self, name: str, argv: Sequence[str], user: str, workdir: str, tty: bool,
                         stdin: bool) -> int:
        """Run a command with our terminal attached, through the docker CLI (raw mode, resize, signals), or
        without one, our stdin and stdout. The arguments carry no secrets; the engine is the one this Engine
        talks to."""
        if not tty and self._direct():
            return self._exec_piped(name, argv, user, workdir, stdin)
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise DockerUnavailable("the docker command is not installed: install the Docker CLI to attach")
        flags = (["-i"] if stdin else []) + (["-t"] if tty else [])
        cmd = [docker_cli, "--host", self.host, "exec", *flags, "-u", user, "-w", workdir, name, *argv]
        with terminal.restored():
            if tty:  # through our own pseudo-terminal, which drops what reaches past the screen
                return screen.run(cmd)
            # Without one, what goes to a terminal of ours is made visible, as a bottle's output elsewhere.
            shown = [stream for stream in (sys.stdout, sys.stderr) if stream.isatty()]
            process = subprocess.Popen(cmd, stdout=subprocess.PIPE if sys.stdout in shown else None,
                                       stderr=subprocess.PIPE if sys.stderr in shown else None)
            try:
                terminal.relay_visible({process.stdout: sys.stdout, process.stderr: sys.stderr})
                return process.wait()
            except BaseException:
                process.terminate()
                try:  # let it finish drawing before the terminal is put back
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise

    def _exec_piped(self, name: str, argv: Sequence[str], user: str, workdir: str, stdin: bool) -> int:
        """exec without a terminal, over the API: our stdin goes to the command until it ends, its output to
        our stdout and stderr (made visible where that is a terminal)."""
        stream, exit_status = self._exec_start(name, argv, user, workdir, stdin, None)

        def feed() -> None:
            try:
                while data := os.read(0, 65536):
                    stream.write(data)
                stream.close_write()
            except OSError:  # stdin closed, or the command ended and its stdin with it
                pass

        if stdin:
            threading.Thread(target=feed, daemon=True).start()
        decoders = {1: codecs.getincrementaldecoder("utf-8")(errors="replace"),
                    2: codecs.getincrementaldecoder("utf-8")(errors="replace")}
        try:
            for kind, data in stream.frames():
                out = sys.stderr if kind == 2 else sys.stdout
                if out.isatty():
                    out.write(terminal.visible(decoders[2 if kind == 2 else 1].decode(data), newlines=True))
                    out.flush()
                else:
                    out.buffer.write(data)
                    out.buffer.flush()
        except BrokenPipeError:  # whoever read our output stopped (`| head`): end as a pipe's writer does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + 13
        finally:
            stream.close()
        return exit_status()

    def logs(self, name: str, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]:
        yield from self._api.logs(name, stream=True, follow=follow, tail="all" if tail is None else tail,
                                  since=max(1, int(since)) if since is not None else None)  # 0 means "all"

    # -- finding our objects

    def find(self, labels: Mapping[str, str]) -> list[Found]:
        """Containers (running or not), networks and volumes carrying all of `labels`."""
        flt = {"label": _label_filter(labels)}
        if sock := self._direct():
            query = "filters=" + urllib.parse.quote(json.dumps(flt))
            containers = sock.get(f"/containers/json?all=1&{query}")
            networks = sock.get(f"/networks?{query}")
            volumes = sock.get(f"/volumes?{query}")
        else:
            containers = self._api.containers(all=True, filters=flt)
            networks = self._api.networks(filters=flt)
            volumes = self._api.volumes(filters=flt)
        found = [Found("container", c["Names"][0].lstrip("/"), c["Labels"] or {}, c["State"], int(c.get("Created", 0)))
                 for c in containers]
        found += [Found("network", n["Name"], n.get("Labels") or {}) for n in networks]
        found += [Found("volume", v["Name"], v.get("Labels") or {}) for v in (volumes.get("Volumes") or [])]
        return found


def limited(sink: BinaryIO, limit: int | None, argv: Sequence[str]) -> Callable[[bytes], None]:
    """What writes a command's output to `sink`, and raises OutputTooLarge past `limit` bytes."""
    written = 0

    def write(data: bytes) -> None:
        nonlocal written
        written += len(data)
        if limit is not None and written > limit:
            raise OutputTooLarge(f"more than {limit // 2**20} MiB came out of `{' '.join(argv[:3])}`")
        sink.write(data)
    return write


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" if v else k for k, v in labels.items()]


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _unix_socket(host: str) -> str | None:
    return host[len("unix://"):] if host.startswith("unix://") else None


class _Socket:
    """The Engine API on the engine's Unix socket, with the standard library: everything a bottle's life
    needs goes this way, since importing the SDK alone costs a tenth of a second of every command (and of
    CPU, which many bottles starting at once share). Builds, pulls and any other DOCKER_HOST use the SDK."""

    def __init__(self, path: str, host: str):
        self.path, self.host = path, host

    def _lost(self, e: BaseException) -> EngineLost:
        return EngineLost(f"lost the connection to the Docker engine at {self.host}: "
                          f"{_one_line(e) or type(e).__name__}")

    def _connect(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise self._lost(e) from None
        return sock

    def call(self, method: str, url: str, body: bytes | BinaryIO | None = None,
             content_type: str = "application/json", timeout: float = 120) -> tuple[int, bytes]:
        """One request on a connection of its own, read to its end (http.client would cost every command
        a fifth of its start-up to import). A file `body` is sent from where it is to its end."""
        sock = self._connect(timeout)
        try:
            head = f"{method} {url} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
            if isinstance(body, (bytes, bytearray)):
                sock.sendall(f"{head}Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                             + body)
            elif body is not None:
                start = body.tell()
                size = body.seek(0, io.SEEK_END) - start
                body.seek(start)
                sock.sendall(f"{head}Content-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n".encode())
                while chunk := body.read(1 << 20):
                    sock.sendall(chunk)
            else:
                sock.sendall(head.encode() + b"\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return _response(b"".join(chunks))
        except (OSError, ValueError, IndexError) as e:
            raise self._lost(e) from None
        finally:
            sock.close()

    def send(self, method: str, url: str, payload: object = None, ok: Sequence[int] = (200, 201, 204),
             timeout: float = 120) -> object:
        """A call with a JSON body (or none) whose status must be in `ok`; the JSON answer, if any."""
        body = json.dumps(payload).encode() if payload is not None else None
        status, answer = self.call(method, url, body, timeout=timeout)
        if status not in ok:
            raise self.refused(status, answer)
        return json.loads(answer) if answer.strip()[:1] in (b"{", b"[") else None

    def exists(self, method: str, url: str) -> bool:
        """Whether what `url` names is there (200) or not (404); any other answer is the engine's refusal."""
        status, body = self.call(method, url)
        if status not in (200, 404):
            raise self.refused(status, body)
        return status == 200

    def get(self, url: str) -> object:
        status, body = self.call("GET", url)
        if status != 200:
            raise self.refused(status, body)
        return json.loads(body) if body.strip() not in (b"", b"OK") else body.decode()

    def refused(self, status: int, body: bytes) -> BottleError:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")
        error = NotFound if status == 404 else DockerUnavailable
        return error(f"the Docker engine at {self.host} refused: {_one_line(message) or status}")

    def hijack(self, url: str, payload: object = None, timeout: float | None = None) -> _Stream:
        """POST `url` and take over its connection as a raw stream (attach, exec start): what we write goes
        to the process's stdin, what comes back is its output, in frames."""
        body = json.dumps(payload).encode() if payload is not None else b""
        sock = self._connect(timeout)
        try:
            sock.sendall(f"POST {url} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                         f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("the engine closed the connection")
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            status = int(head.split(b" ", 2)[1])
            if status not in (101, 200):
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                while length and len(rest) < int(length.group(1)):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                raise self.refused(status, rest)
            return _Stream(sock, rest)
        except BaseException as e:
            sock.close()
            if isinstance(e, (OSError, ValueError, IndexError)):
                raise self._lost(e) from None
            raise


def _response(data: bytes) -> tuple[int, bytes]:
    """The status and body of a whole HTTP/1.1 response (the body as sent, or de-chunked)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        out, rest = [], body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out.append(rest[:size])
            rest = rest[size + 2:]
        return status, b"".join(out)
    if b"content-length" in headers:
        return status, body[:int(headers[b"content-length"])]
    return status, body


class _Stream:
    """A hijacked connection: a process's stdin one way, its output in the engine's frames the other (an
    8-byte header, stream 1 or 2 and a length, before each piece)."""

    def __init__(self, sock: socket.socket, buffered: bytes):
        self.sock, self._buffer = sock, buffered

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _read(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """(stream, data) until the process's output ends."""
        while (header := self._read(8)) is not None and len(header) == 8:
            size = int.from_bytes(header[4:8], "big")
            data = self._read(size) if size else b""
            if data is None:
                return
            yield header[0], data

    def close(self) -> None:
        self.sock.close()


class _SdkStream(_Stream):
    """The same, on a socket the SDK hijacked (which may have read ahead: its own reader takes the frames)."""

    def __init__(self, sdk_socket):
        super().__init__(getattr(sdk_socket, "_sock", sdk_socket), b"")
        self._sdk_socket = sdk_socket

    def frames(self) -> Iterator[tuple[int, bytes]]:
        yield from frames_iter(self._sdk_socket, tty=False)

    def close(self) -> None:
        self._sdk_socket.close()


DEFAULT_HOST = "unix:///var/run/docker.sock"  # what DOCKER_HOST means when unset


def connect(environ: Mapping[str, str] | None = None) -> Engine:
    """Connect to the engine DOCKER_HOST names (or the default socket) and check it answers."""
    environ = os.environ if environ is None else environ
    where = environ.get("DOCKER_HOST") or DEFAULT_HOST
    socket_path = _unix_socket(where)
    if socket_path and not environ.get("DOCKER_TLS_VERIFY"):
        try:
            _Socket(socket_path, where).get("/_ping")
        except DockerUnavailable as e:
            raise DockerUnavailable(
                f"Docker daemon not reachable at {where}: start Docker or set DOCKER_HOST ({_short(e)})") from None
        return Engine(None, where, dict(environ))
    _load()
    try:
        client = docker.from_env(environment=dict(environ), timeout=120)
        client.ping()
    # The SDK surfaces an absent daemon as DockerException or as raw requests/urllib3 errors.
    except Exception as e:
        raise DockerUnavailable(
            f"Docker daemon not reachable at {where}: start Docker or set DOCKER_HOST ({_short(e)})"
        ) from None
    return Engine(client, environ.get("DOCKER_HOST") or DEFAULT_HOST, dict(environ))


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
