"""The only module that talks to the Docker engine (through the Docker SDK for Python).

Everything else asks an `Engine` for what it needs in the product's terms and
gets small typed values back, so unit tests can stand a fake with the same
methods in its place. Every failure of the engine, or of the connection to it,
leaves this module as a DockerUnavailable with one readable line.
"""

from __future__ import annotations

import functools
import http.client
import inspect
import io
import json
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from . import screen, terminal
from .errors import BottleError, DockerUnavailable, ImageBuildError

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
    stdin_open: bool = False  # its stdin stays open until `start_with_input` has written to it

    def create_kwargs(self) -> dict:
        """The arguments of the Engine API's container create, as the SDK takes them."""
        return {
            "image": self.image,
            "command": list(self.command) or None,
            "name": self.name,
            "labels": dict(self.labels),
            "user": self.user,
            "hostname": self.hostname,
            "working_dir": self.working_dir,
            "environment": dict(self.environment),
            "detach": True,
            "stdin_open": self.stdin_open,  # and, the SDK adds, closed once it has been written
            "host_config": {
                "network_mode": self.network_mode,
                "cap_drop": list(self.cap_drop),
                "security_opt": list(self.security_opt),
                "init": self.init,
                "mem_limit": self.mem_limit,
                # No swap beyond the limit: a bottle over its memory is stopped, not slowed to a crawl.
                "memswap_limit": self.mem_limit,
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
class ContainerState:
    """What the engine says of one container, in our terms."""

    name: str
    running: bool
    status: str  # created, running, exited, …
    exit_code: int | None
    oom_killed: bool
    labels: Mapping[str, str]


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
    if isinstance(e, docker.errors.APIError):
        return DockerUnavailable(f"the Docker engine at {host} refused: {_one_line(e.explanation or e)}")
    return DockerUnavailable(f"lost the connection to the Docker engine at {host}: {_one_line(e) or type(e).__name__}")


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

    def __init__(self, client: docker.DockerClient | None, host: str, environ: Mapping[str, str]):
        self._client = client
        self.host = host
        self._environ = environ

    @property
    def _api(self) -> docker.APIClient:
        # Made on first use: `ps` and the like only list, which _Socket does without the SDK.
        if self._client is None:
            _load()
            self._client = docker.from_env(environment=dict(self._environ), timeout=120)
        return self._client.api

    def clone(self) -> Engine:
        """Another connection to the same engine, for use from another thread (made when first needed)."""
        return Engine(None, self.host, self._environ)

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

    def create_network(self, name: str, labels: Mapping[str, str]) -> None:
        self._api.create_network(name, driver="bridge", labels=dict(labels), check_duplicate=True)

    def ensure_network(self, name: str, labels: Mapping[str, str]) -> None:
        """A bridge network that stays (shared by many bottles): made if missing, also when several processes
        make it at once."""
        if self._api.networks(names=[name]):
            return
        try:
            self._api.create_network(name, driver="bridge", labels=dict(labels), check_duplicate=True)
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise

    def _direct(self) -> _Socket | None:
        """The engine's socket, for calls simple enough to make without loading the SDK."""
        path = _unix_socket(self.host)
        return _Socket(path) if path and not self._environ.get("DOCKER_TLS_VERIFY") else None

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

    def start_with_input(self, name: str, data: bytes, timeout: float) -> str:
        """Start a container created with `stdin_open`, write `data` to its stdin (over the API connection:
        never a file, an argument or a log), and return the first line it writes to stdout."""
        sock = self._api.attach_socket(name, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        try:
            self._api.start(name)
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)
            raw.settimeout(timeout)
            out = b""
            try:
                for _, chunk in frames_iter(sock, tty=False):
                    out += chunk
                    if b"\n" in out:
                        break
            except (TimeoutError, socket.timeout):
                raise ExecTimeout(f"{name} said nothing within {timeout:.0f} s") from None
            return out.split(b"\n", 1)[0].decode(errors="replace")
        finally:
            sock.close()

    def remove_container(self, name: str, wait: float = 60.0) -> None:
        """Remove `name`, running or not. Gone already, or being removed by someone else (409), counts as
        removed once it has gone."""
        deadline = time.monotonic() + wait
        while True:
            if self._direct():
                status = self._delete(f"/containers/{urllib.parse.quote(name)}?force=1&v=1")
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
            status, body = sock.call("GET", f"/containers/{urllib.parse.quote(name)}/json")
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

    def put_archive(self, name: str, path: str, tar: bytes) -> None:
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
        written = 0

        def to_sink(data: bytes) -> None:
            nonlocal written
            written += len(data)
            if limit is not None and written > limit:
                raise OutputTooLarge(f"more than {limit // 2**20} MiB came out of `{' '.join(argv[:3])}`")
            sink.write(data)

        return self._exec(name, argv, user, workdir, None, timeout, to_sink, err.extend), bytes(err)

    def exec_stream(self, name: str, argv: Sequence[str], user: str, workdir: str, sink) -> int:
        """Run a command, writing its output to the binary file `sink` as it comes; returns its
        exit status (137 when the container went away under it)."""
        def write(data: bytes) -> None:
            sink.write(data)
            sink.flush()

        try:
            return self._exec(name, argv, user, workdir, None, None, write, write)
        except docker.errors.NotFound:
            return 137

    def _exec(self, name: str, argv: Sequence[str], user: str | None, workdir: str | None, stdin: bytes | None,
              timeout: float | None, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> int:
        exec_id = self._api.exec_create(name, list(argv), stdin=stdin is not None, user=user or "",
                                        workdir=workdir)["Id"]
        sock = self._api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        began = time.monotonic()
        try:
            if timeout is not None:
                raw.settimeout(timeout)
            if stdin is not None:
                raw.sendall(stdin)
                raw.shutdown(socket.SHUT_WR)
            for stream, data in frames_iter(sock, tty=False):
                (on_stderr if stream == 2 else on_stdout)(data)
                if timeout is not None:
                    left = timeout - (time.monotonic() - began)
                    if left <= 0:
                        raise TimeoutError
                    raw.settimeout(left)
        except (TimeoutError, socket.timeout):
            raise ExecTimeout(f"`{' '.join(argv[:3])}` did not finish within {timeout:.0f} s") from None
        finally:
            sock.close()
        code = None
        for _ in range(50):  # the engine records the exit status a moment after the output ends
            code = self._api.exec_inspect(exec_id).get("ExitCode")
            if code is not None:
                break
            time.sleep(0.02)
        return 137 if code is None else code

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
        """Run a command with our terminal (or stdin and stdout) attached, through the docker CLI (raw
        mode, resize, signals). The arguments carry no secrets; the engine is the one this Engine talks to."""
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


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" if v else k for k, v in labels.items()]


def _unix_socket(host: str) -> str | None:
    return host[len("unix://"):] if host.startswith("unix://") else None


class _Socket:
    """Simple calls on the engine's Unix socket with the standard library, for what lists, inspects and
    removes (`ps`, `stop`): those commands start a tenth of a second sooner than with the SDK, whose import
    costs that much. Anything else, and any other DOCKER_HOST, goes through the SDK."""

    def __init__(self, path: str):
        self.path = path

    def call(self, method: str, url: str, timeout: float = 120) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        try:
            conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.sock.settimeout(timeout)
            conn.sock.connect(self.path)
            conn.request(method, url)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise DockerUnavailable(f"lost the connection to the Docker engine at unix://{self.path}: "
                                    f"{_one_line(e) or type(e).__name__}") from None
        finally:
            conn.close()

    def get(self, url: str) -> object:
        status, body = self.call("GET", url)
        if status != 200:
            raise DockerUnavailable(f"the Docker engine at unix://{self.path} refused: {_one_line(body.decode(errors='replace'))}")
        return json.loads(body) if body.strip() not in (b"", b"OK") else body.decode()

    def refused(self, status: int, body: bytes) -> BottleError:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")
        return BottleError(f"the Docker engine refused ({status}): {_one_line(message)}")


def connect(environ: Mapping[str, str] | None = None) -> Engine:
    """Connect to the engine DOCKER_HOST names (or the default socket) and check it answers."""
    environ = os.environ if environ is None else environ
    where = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    socket_path = _unix_socket(where)
    if socket_path and not environ.get("DOCKER_TLS_VERIFY"):
        try:
            _Socket(socket_path).get("/_ping")
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
    return Engine(client, environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", dict(environ))


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]
