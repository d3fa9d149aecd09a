"""Integration test support: the real engine, the bottle image built once per run, labelled test objects.

Without a reachable engine the tests skip, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path

import docker as docker_sdk

from claude_bottle import bottle, cleanup, docker, image, manifest, pins, sidecar, workspace
from claude_bottle.docker import ContainerSpec
from claude_bottle.errors import DockerUnavailable

ROOT = Path(__file__).resolve().parents[2]
# Every object a test creates carries this label, so the suite can prove it removed them all.
TEST_LABEL = "org.claude-bottle.test"
RUN_ID = uuid.uuid4().hex[:8]


def missing(what: str) -> BaseException:
    """What a test raises when a real part it needs is not here: a skip on a laptop, a failure in CI."""
    if os.environ.get("CI") == "true":
        return AssertionError(f"CI=true needs {what}")
    return unittest.SkipTest(what)


def engine() -> docker.Engine:
    try:
        return _engine()
    except DockerUnavailable as e:
        raise missing(f"a Docker engine for the integration tests: {e}") from None


def sidecar_image() -> str:
    """The pinned pipelock image, which the sidecar tests run for real."""
    if not engine().image_exists(pins.PIPELOCK_IMAGE):
        raise missing(f"the sidecar image {pins.PIPELOCK_IMAGE}: build it with scripts/offline-images.sh pipelock "
                      "--pipelock-source FILE (see the README)")
    return pins.PIPELOCK_IMAGE


@functools.cache
def host_address() -> str:
    """Where a container reaches services on the Docker host (the default bridge's gateway)."""
    return engine().host_address()


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


@functools.cache
def session_lock() -> cleanup.SessionLock:
    """Held by the test process for the whole run: its bottles belong to a live session."""
    folder = tempfile.mkdtemp(prefix="claude-bottle-test-locks-")
    atexit.register(shutil.rmtree, folder, True)  # after the lock's release, registered below
    lock = cleanup.SessionLock.acquire(Path(folder))
    atexit.register(lock.release)
    return lock


def objects_of(folder: Path, on=None) -> set[str]:
    """Our objects made by CLI processes whose state folder lies under `folder` (their owner lock is there):
    a test's own, whatever else runs on the shared engine meanwhile. `on`: the runtime's engine (Docker's)."""
    return {f"{o.kind} {o.name}" for o in cleanup.everything(on or engine())
            if f":{folder}" in o.labels.get(cleanup.LABEL_OWNER, "")}


def bottles_of(folder: Path, on=None) -> set[str]:
    return {o.labels[cleanup.LABEL_BOTTLE] for o in cleanup.everything(on or engine())
            if f":{folder}" in o.labels.get(cleanup.LABEL_OWNER, "")}


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
    """Skips (or fails under CI) without an engine; checks that each test class leaves nothing behind.

    A class whose tests run on both runtimes names one in `runtime` (DOCKER or KUBERNETES): its bottles are
    started through the CLI on that runtime, which must then be there."""

    runtime: Runtime | None = None

    @classmethod
    def setUpClass(cls):
        engine()
        if cls.runtime:
            cls.runtime.ensure()

    @classmethod
    def tearDownClass(cls):
        left = leftovers() + (cls.runtime.leftovers() if cls.runtime else [])
        if left:
            raise AssertionError(f"{cls.__name__} left objects behind: {', '.join(left)}")


# -- the two runtimes: the same tests, through the CLI, against each (a class names one in `runtime`)

class Runtime:
    name = ""
    nodes = False  # whether `ps` has a NODE column

    def ensure(self) -> None:
        """The runtime and our images on it, ready for the CLI."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """What the CLI's environment needs to use this runtime."""
        raise NotImplementedError

    def engine(self):
        """The runtime as the CLI drives it (a docker.Engine or a kube.Cluster)."""
        raise NotImplementedError

    def host_address(self) -> str:
        """Where a bottle's sidecar reaches a test's server on this host."""
        raise NotImplementedError

    def described(self, name: str) -> str:
        """Everything the runtime tells about the bottle's objects (inspect, pod and policy specs), as text."""
        raise NotImplementedError

    def files_with(self, needle: str) -> list[str]:
        """The runtime's own files on this host (its disk state and logs) that contain `needle`."""
        raise NotImplementedError

    def neighbour(self):
        """A context manager: a server where other bottles' objects live, shown reachable by a workload there
        that is not a bottle (the control); yields its (address, port)."""
        raise NotImplementedError

    def plain_workload_reaches(self, host: str, port: int) -> bool:
        """Whether a workload of this runtime that is not a bottle can connect to host:port (the control)."""
        return self.plain_workload_connects([(host, port)]) == [True]

    def plain_workload_connects(self, targets: list[tuple[str, int]]) -> list[bool]:
        """For each (host, port), whether one workload of this runtime that is not a bottle, where other
        workloads live, can open a TCP connection to it."""
        raise NotImplementedError

    def sidecar_endpoint(self, name: str) -> tuple[str, set[int]]:
        """The bottle's sidecar as seen from its network: its address there, and every TCP port anything
        listens on in its network namespace (on any address, loopback included)."""
        raise NotImplementedError

    def leftovers(self) -> list[str]:
        return []

    def end_bottle_container(self, name: str) -> None:
        """Kill the bottle's container from outside, as whatever ends it would (its PID 1's CPU-time limit,
        the out-of-memory killer), and wait until the runtime says it has ended."""
        raise NotImplementedError

    def __repr__(self):
        return self.name


def connects_script(host: str, port: int) -> str:
    return f"timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null && echo OPEN || echo SHUT"


def connects_each_script(targets: list[tuple[str, int]]) -> str:
    """One line per target, OPEN or SHUT, in order."""
    return "; ".join(connects_script(host, port) for host, port in targets)


def listening_ports(proc_net_tcp: str) -> set[int]:
    """The ports of the listening sockets in the text of /proc/net/tcp and /proc/net/tcp6."""
    rows = (line.split() for line in proc_net_tcp.splitlines())
    return {int(row[1].rsplit(":", 1)[1], 16) for row in rows if len(row) > 3 and row[3] == "0A" and ":" in row[1]}


class _Docker(Runtime):
    name = "docker"

    def end_bottle_container(self, name):
        sdk().containers.get(f"cb-{name}").kill()

    def ensure(self):
        sidecar_image()
        bottle_image()

    def env(self):
        return {"CLAUDE_BOTTLE_RUNTIME": "docker"}

    def engine(self):
        return engine()

    def host_address(self):
        return host_address()

    def described(self, name):
        api = sdk().api
        inspect = {"container": api.inspect_container, "network": api.inspect_network, "volume": api.inspect_volume}
        return json.dumps([inspect[o.kind](o.name) for o in cleanup.of_bottle(engine(), name)])

    def files_with(self, needle):
        return found_on_docker_disk(needle)

    def neighbour(self):
        @contextlib.contextmanager
        def listener():
            network = bottle.sidecar_network(engine())
            c = sdk().containers.run(bottle_image(), ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo hi"],
                                     detach=True, labels=labels(), network=network,
                                     name=f"cb-test-neighbour-{RUN_ID}")
            try:
                c.reload()
                yield c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"], 8080
            finally:
                c.remove(force=True)

        return listener()

    def plain_workload_connects(self, targets):
        # A container on the network the sidecars share, as one of them (or anyone's, on the default bridge) would.
        code, out = run(bottle_image(), ["bash", "-c", connects_each_script(targets)],
                        network=bottle.sidecar_network(engine()))
        return [line == "OPEN" for line in out.split()]

    def sidecar_endpoint(self, name):
        info = sdk().api.inspect_container(cleanup.Names(name).sidecar)
        (network,) = info["NetworkSettings"]["Networks"].values()
        pid = info["State"]["Pid"]
        tables = Path(f"/proc/{pid}/net/tcp").read_text() + Path(f"/proc/{pid}/net/tcp6").read_text()
        return network["IPAddress"], listening_ports(tables)

    @contextlib.contextmanager
    def listener_beside_sidecar(self, name):
        """A listener on every address in the sidecar's network namespace, put there from the host; yields its
        port. The control for probes of the sidecar's address: what listens there off loopback is reachable."""
        pid = sdk().api.inspect_container(cleanup.Names(name).sidecar)["State"]["Pid"]
        server = ("import socket, sys; s = socket.create_server(('0.0.0.0', 0)); print(s.getsockname()[1], flush=True)"
                  "\nwhile True: s.accept()[0].close()")
        proc = subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", server],
                                stdout=subprocess.PIPE, text=True)
        try:
            yield int(proc.stdout.readline())
        finally:
            proc.kill()
            proc.wait()


class _Kubernetes(Runtime):
    """The test cluster of ../shared/kubernetes (CI starts it): our images imported, a namespace of the tests'."""

    name = "kubernetes"
    nodes = True
    LAB = ROOT.parent / "shared" / "kubernetes"
    KUBECONFIG = os.environ.get("KUBECONFIG") or "/var/lib/k8s-lab/kubeconfig"
    KUBECTL = "/var/lib/k8s-lab/bin/kubectl"
    NAMESPACE = "claude-bottle-test"
    ready = False

    def end_bottle_container(self, name):
        pod = f"cb-{name}"

        def bottle_state() -> dict:
            found = json.loads(self.kubectl("-n", self.NAMESPACE, "get", "pod", pod, "-o", "json"))
            return next(c for c in found["status"]["containerStatuses"] if c["name"] == "bottle")

        task = bottle_state()["containerID"].removeprefix("containerd://")
        subprocess.run(["ctr", "-a", "/run/k8s-lab/containerd.sock", "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL",
                        task], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while "terminated" not in bottle_state()["state"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"the bottle container of {pod} did not end")
            time.sleep(0.2)

    def kubectl(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([self.KUBECTL, "--kubeconfig", self.KUBECONFIG, *args], capture_output=True,
                              text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done.stdout

    def ensure(self):
        if not self.ready:
            if not Path(self.KUBECONFIG).exists() or not (self.LAB / "up.sh").exists():
                raise missing(f"the test Kubernetes cluster ({self.LAB}/up.sh, started: {self.KUBECONFIG})")
            tags = [bottle_image(), build(sidecar.spec(image_settings()))]
            # Starts whatever is not running and imports images whose id changed; quick when all is there.
            up = subprocess.run([str(self.LAB / "up.sh"), *(arg for tag in tags for arg in ("--image", tag))],
                                capture_output=True, text=True, timeout=900)
            if up.returncode != 0:
                raise missing(f"the test Kubernetes cluster: up.sh failed: {up.stdout[-2000:]}{up.stderr[-2000:]}")
            type(self).ready = True
        if self.NAMESPACE not in self.kubectl("get", "namespace", "-o", "name", check=False):
            self.kubectl("create", "namespace", self.NAMESPACE)

    def tear_down(self):
        """After a module's tests: the namespace goes, waited for (a namespace being deleted takes no pods)."""
        if self.ready:
            self.kubectl("delete", "namespace", self.NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)

    def env(self):
        return {"CLAUDE_BOTTLE_RUNTIME": "kubernetes", "KUBECONFIG": self.KUBECONFIG,
                "CLAUDE_BOTTLE_NAMESPACE": self.NAMESPACE}

    @functools.cache
    def engine(self):
        from claude_bottle import runtime

        return runtime.connect({**os.environ, **self.env()})

    @functools.cache
    def host_address(self):
        node = json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"][0]
        return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")

    def described(self, name):
        return self.kubectl("-n", self.NAMESPACE, "get", "pods,networkpolicies", "-o", "json",
                            "-l", f"{cleanup.LABEL_BOTTLE}={name}")

    def files_with(self, needle):
        # The cluster's state (etcd, containerd, the kubelet's pods), its logs and containerd's run state.
        found = []
        for root in ("/var/lib/k8s-lab/state", "/var/lib/k8s-lab/log", "/run/k8s-lab"):
            files = subprocess.run(["find", root, "-xdev", "-type", "f", "-print0"], capture_output=True).stdout
            out = subprocess.run(["xargs", "-0", "-r", "grep", "-lF", "--binary-files=text", "-e", needle],
                                 input=files, capture_output=True)
            found += out.stdout.decode().splitlines()
        return found

    def pod(self, name: str, command: str) -> str:
        """A plain pod of the tests' (not a bottle), running; returns its address."""
        self.kubectl("-n", self.NAMESPACE, "run", name, "--image", bottle_image(), "--image-pull-policy=IfNotPresent",
                     "--restart=Never", f"--labels={TEST_LABEL}={RUN_ID}", "--command", "--", "sh", "-c", command)
        self.kubectl("-n", self.NAMESPACE, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=90s")
        return json.loads(self.kubectl("-n", self.NAMESPACE, "get", "pod", name, "-o", "json"))["status"]["podIP"]

    def remove_pod(self, name: str):
        self.kubectl("-n", self.NAMESPACE, "delete", "pod", name, "--grace-period=0", "--force", "--wait=false",
                     "--ignore-not-found", check=False)

    def neighbour(self):
        @contextlib.contextmanager
        def listener():
            name = f"neighbour-{RUN_ID}"
            try:
                yield self.pod(name, "exec socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo hi'"), 8080
            finally:
                self.remove_pod(name)

        return listener()

    def plain_workload_connects(self, targets):
        name = f"control-{RUN_ID}"
        try:
            self.pod(name, "exec sleep 600")
            out = self.kubectl("-n", self.NAMESPACE, "exec", name, "--", "bash", "-c",
                               connects_each_script(targets), check=False)
            return [line == "OPEN" for line in out.split()]
        finally:
            self.remove_pod(name)

    def sidecar_endpoint(self, name):
        # The sidecar (on scratch, no cat) shares the pod's network namespace with the bottle: its tables.
        (pod,) = json.loads(self.kubectl("-n", self.NAMESPACE, "get", "pods", "-o", "json",
                                         "-l", f"{cleanup.LABEL_BOTTLE}={name}"))["items"]
        tables = self.kubectl("-n", self.NAMESPACE, "exec", pod["metadata"]["name"], "-c", "bottle", "--",
                              "cat", "/proc/net/tcp", "/proc/net/tcp6")
        return pod["status"]["podIP"], listening_ports(tables)

    def leftovers(self):
        if not self.ready:
            return []
        return self.kubectl("-n", self.NAMESPACE, "get", "pods,networkpolicies", "-o", "name",
                            check=False).split()


DOCKER = _Docker()
KUBERNETES = _Kubernetes()


def on_each_runtime(tests: type, module: dict) -> None:
    """Run `tests` (a class of test methods naming no runtime) on Docker and on Kubernetes: adds
    <Name>OnDockerTest and <Name>OnKubernetesTest to the calling module, whose teardown then removes the
    cluster's test namespace."""
    for runtime in (DOCKER, KUBERNETES):
        name = f"{tests.__name__.removesuffix('Test')}On{runtime.name.capitalize()}Test"
        module[name] = type(name, (tests, IntegrationTest), {"runtime": runtime, "__module__": module["__name__"],
                                                             "__qualname__": name})
    module["tearDownModule"] = KUBERNETES.tear_down


LISTENER_REPLY = "reply-from-the-sidecar-side"


STANDIN_PORT = 8888  # where the stand-in sidecar also answers on its network address


# What the stand-in does with the bottle's proxy port, as the gate does (handoff.go): takes its listening
# socket over handoff.sock, once, removes that socket, and answers on the port.
STANDIN_HANDOFF = """
import os, socket, sys, threading
path, reply = sys.argv[1], f"HTTP/1.0 200 OK\\n\\n{sys.argv[2]}\\n".encode()
handoff = socket.socket(socket.AF_UNIX)
handoff.bind(path)
os.chmod(path, 0o666)
handoff.listen(1)
conn, _ = handoff.accept()
_, fds, _, _ = socket.recv_fds(conn, 16, 4)
conn.sendall(b"ok\\n")
conn.close(), handoff.close(), os.unlink(path)
listener = socket.socket(fileno=fds[0])

def answer(c):
    c.sendall(reply)
    c.shutdown(socket.SHUT_WR)
    c.settimeout(5)
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass
    c.close()

while True:
    threading.Thread(target=answer, args=(listener.accept()[0],), daemon=True).start()
"""

# A file the stand-in sidecar leaves in its proxy folder, named after it: what each bottle may see there.
STANDIN_MARK = "standin-"

# The bottle, its sidecar and the proxy volume between them (the egress network is shared, not the bottle's).
OBJECTS_PER_BOTTLE = 3


class TestBottle:
    """One bottle as the product builds it: the proxy volume and the bottle container, with a stand-in for its
    sidecar on the shared egress network (the bottle image taking the proxy port over the handoff socket, as
    the gate does, and answering on it and, with socat, on its network address). Everything labelled,
    removed by cleanup.remove."""

    def __init__(self, agent="default", owner: str | None = None, secrets: dict | None = None,
                 workspace_dir: Path | None = None, user: str | None = None, memory: str | None = None,
                 record: Path | None = None):
        with tempfile.TemporaryDirectory() as empty:
            m = manifest.load(Path(empty), {**os.environ, "CLAUDE_BOTTLE_HOME": empty})
        self.plan = bottle.plan(m, agent, {}, workspace_dir)
        if record is not None:  # a detached bottle's
            self.plan = dataclasses.replace(self.plan, record=record)
        if memory:
            self.plan = dataclasses.replace(self.plan, bottle=dataclasses.replace(self.plan.bottle, memory=memory))
        if self.plan.workspace:
            self.plan = dataclasses.replace(self.plan,
                                            workspace=workspace.prepare(self.plan.workspace, self.plan.name))
        n = self.plan.names
        self.name = self.plan.name
        # Labelled as a live session of this process, so nobody's `start` takes it for a dead one's.
        owner = owner or session_lock().label()
        e = engine()
        lab = {**bottle.labels(self.plan, "", owner), TEST_LABEL: RUN_ID}
        if user:
            lab[cleanup.LABEL_USER] = user
        try:
            e.create_volume(n.proxy_volume, {**lab, cleanup.LABEL_ROLE: "proxy-socket"})
            network = bottle.sidecar_network(e)
            reply = f"SYSTEM:echo HTTP/1.0 200 OK; echo; echo {LISTENER_REPLY}"
            standin = ContainerSpec(
                name=n.sidecar, image=bottle_image(), labels={**lab, cleanup.LABEL_ROLE: "sidecar"},
                user="1000:1000", network_mode=network,
                volumes=((n.proxy_volume, bottle.PROXY_DIR, False),),
                command=("sh", "-c", f"socat TCP-LISTEN:{STANDIN_PORT},fork,reuseaddr '{reply}' & "
                                     f"touch {bottle.PROXY_DIR}/{STANDIN_MARK}{n.sidecar} && "
                                     'exec python3 -I -c "$1" "$2" "$3"', "sh", STANDIN_HANDOFF,
                         bottle.PROXY_HANDOFF, LISTENER_REPLY))
            e.create_container(standin)
            e.start_container(n.sidecar)
            spec = bottle.bottle_container(self.plan, owner)
            e.create_container(dataclasses.replace(spec, labels={**spec.labels, **lab,
                                                                          cleanup.LABEL_ROLE: "bottle"}))
            said = e.start_with_input(n.container, bottle.bottle_input(None, bottle.secrets_file(secrets or {})),
                                      timeout=60)
            assert said == "ready", said
        except BaseException:
            self.remove()
            raise

    def sh(self, script: str, stdin: bytes | None = None) -> tuple[int, str]:
        code, out = engine().exec(self.plan.names.container, ["bottle-exec", "sh", "-c", script],
                                          stdin=stdin)
        return code, out.decode(errors="replace")

    def ip_of(self, container: str, network: str) -> str:
        info = sdk().api.inspect_container(container)
        return info["NetworkSettings"]["Networks"][network]["IPAddress"]

    def remove(self):
        cleanup.remove(engine(), cleanup.of_bottle(engine(), self.name))
        if self.plan.workspace:
            workspace.release(self.plan.workspace, self.name)




def found_on_docker_disk(needle: str) -> list[str]:
    """Files under Docker's root directory, on its own filesystem, that contain `needle`.

    Other mounts below it are left out: the overlay views of running containers (their
    writable layers are searched where they are stored) and the tmpfs volumes that hold
    secrets in memory, which is where they are meant to be."""
    root = sdk().info()["DockerRootDir"]
    if not os.access(root, os.R_OK):
        raise unittest.SkipTest(f"cannot read {root} (needs root on the Docker host)")
    files = subprocess.run(["find", root, "-xdev", "-type", "f", "-print0"], capture_output=True, check=True).stdout
    out = subprocess.run(["xargs", "-0", "-r", "grep", "-lF", "--binary-files=text", "-e", needle],
                         input=files, capture_output=True)
    if out.returncode not in (0, 1, 123):  # 123: grep found nothing in some batch
        raise AssertionError(out.stderr.decode(errors="replace"))
    return out.stdout.decode().splitlines()


def found_on_command_lines(needle: str) -> list[str]:
    """The processes on this host (bottles' included) whose command line contains `needle`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle.encode() in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
            except OSError:
                pass  # the process ended while we looked
    return found


class TestCA:
    """A certificate authority of the test's, and a server certificate it signed for the Docker host's address:
    what a company's internal CA is to its gateways (a bottle trusts it with egress.ca_cert)."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory()
        d = Path(self.tmp.name)
        self.cert, self.key = d / "ca.pem", d / "ca-key.pem"
        self.server_cert, self.server_key = d / "server.pem", d / "server-key.pem"

        def ssl(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=claude-bottle test CA",
            "-keyout", self.key, "-out", self.cert)
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test server", "-keyout", self.server_key,
            "-out", d / "server.csr")
        (d / "ext").write_text(f"subjectAltName=IP:{host_address()}\n")
        ssl("x509", "-req", "-in", d / "server.csr", "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
            "-days", "2", "-extfile", d / "ext", "-out", self.server_cert)

    def wrap(self, server: "Server") -> "Server":
        """Make `server` speak HTTPS with the certificate this CA signed."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        server.server.socket = ctx.wrap_socket(server.server.socket, server_side=True)
        return server

    def close(self):
        self.tmp.cleanup()


class Server:
    """An HTTP server of the test's on all host interfaces, in a thread, with a free port."""

    def __init__(self, handler):
        import http.server
        import threading

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
