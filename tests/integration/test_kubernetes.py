"""What is the Kubernetes runtime's own (--runtime kubernetes), on the test cluster of ../shared/kubernetes.

The attacks and checks both runtimes share (isolation, the token, result branches, the lifecycle) run on each
from their own modules (the classes named *OnKubernetesTest); here are the cluster's own objects and addresses:
the pod spec, its NetworkPolicy, the apiserver, kubelet and service range, the node in `ps`, the pod's
terminal, a namespace that does not exist. Without the cluster these skip on a laptop and fail under CI=true.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from claude_bottle import bottle

from . import support
from .test_commands import Terminal

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = support.KUBERNETES
NAMESPACE = CLUSTER.NAMESPACE
TOKEN = "sk-ant-oat01-kubernetes-test-" + "k" * 32
SECRET = "kube-secret-value-" + "s" * 24
STATE = tempfile.mkdtemp(prefix="claude-bottle-test-kube-state-")
atexit.register(shutil.rmtree, STATE, True)
kubectl = CLUSTER.kubectl


def tearDownModule():
    CLUSTER.tear_down()
    shutil.rmtree(STATE, ignore_errors=True)


def cli(*args: str, env: dict | None = None, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "claude_bottle", "--runtime", "kubernetes", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=environment(env), **kwargs)


def environment(extra: dict | None = None) -> dict:
    return {**os.environ, **CLUSTER.env(), "PYTHONPATH": str(ROOT / "src"), "XDG_STATE_HOME": STATE,
            "CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN, **(extra or {})}


def home_manifest(folder: Path, allow: list[str]) -> Path:
    (folder / "claude-bottle.json").write_text(json.dumps({
        "version": 1,
        "bottles": {"kube": {"env": {"KUBE_SECRET": "${KUBE_SECRET}"}, "egress": {"allowlist": allow}}},
        "agents": {"kube": {"bottle": "kube", "prompt": "test"}},
    }))
    return folder


class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        CLUSTER.ensure()
        cls.home = home_manifest(Path(tempfile.mkdtemp(prefix="claude-bottle-test-kube-home-")), ["pypi.org"])
        cls.env = {"CLAUDE_BOTTLE_HOME": str(cls.home), "KUBE_SECRET": SECRET}
        started = cli("start", "--detach", "--yes", "kube", env=cls.env, cwd=cls.home)
        if started.returncode != 0:
            raise AssertionError(f"start --detach on Kubernetes failed: {started.stderr}")
        cls.name = started.stdout.strip().splitlines()[-1]
        cls.pod = bottle.Names(cls.name).container

    @classmethod
    def tearDownClass(cls):
        cli("stop", cls.name, env=cls.env)
        shutil.rmtree(cls.home, ignore_errors=True)

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return cli("exec", self.name, "--", "sh", "-c", script, env=self.env, timeout=timeout)

    def connects(self, host: str, port: int) -> bool:
        """Whether the agent can open a TCP connection to host:port (bash's /dev/tcp, as a hostile agent)."""
        done = self.sh(support.connects_script(host, port))
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.strip() == "OPEN"

    def pod_json(self) -> dict:
        return json.loads(kubectl("-n", NAMESPACE, "get", "pod", self.pod, "-o", "json"))

    def test_ps_shows_the_pods_node(self):
        rows = json.loads(cli("ps", "--json", env=self.env).stdout)
        (row,) = [r for r in rows if r["name"] == self.name]
        self.assertEqual(row["node"], self.pod_json()["spec"]["nodeName"])
        (line,) = [line for line in cli("ps", env=self.env).stdout.splitlines() if line.startswith(self.name)]
        self.assertEqual(line.split()[-1], row["node"])

    def test_the_apiserver_and_kubelet_ports_of_the_node_are_unreachable(self):
        """Beyond what both runtimes' tests try (test_isolation.ReachTest, this host at every address): the
        node's apiserver and kubelet ports. The test cluster binds those to loopback only, so listeners of the
        test's stand there on the node's address (as a real cluster's would), shown reachable by a plain pod."""
        import socket
        import threading

        def serve(server: socket.socket) -> None:
            try:
                while True:
                    server.accept()[0].close()
            except OSError:
                pass  # closed: the test is over

        node = self.pod_json()["status"]["hostIP"]
        listeners = []
        for port in (6443, 10250):
            server = socket.create_server((node, port))
            listeners.append(server)
            threading.Thread(target=serve, args=(server,), daemon=True).start()
        try:
            for port in (6443, 10250):
                with self.subTest(port=port):
                    self.assertTrue(CLUSTER.plain_workload_reaches(node, port))  # the control
                    self.assertFalse(self.connects(node, port))
        finally:
            for server in listeners:
                server.close()

    def test_the_pod_is_hardened_and_carries_no_secret(self):
        pod = self.pod_json()
        text = json.dumps(pod)
        self.assertNotIn(TOKEN, text)
        self.assertNotIn(SECRET, text)
        spec = pod["spec"]
        self.assertFalse(spec["automountServiceAccountToken"])
        containers = {c["name"]: c for c in spec["containers"]}
        for name in ("bottle", "sidecar"):
            security = containers[name]["securityContext"]
            self.assertEqual(security["capabilities"]["drop"], ["ALL"])
            self.assertNotIn("add", security["capabilities"])
            self.assertFalse(security["allowPrivilegeEscalation"])
        mounts = {m["name"]: m for m in containers["bottle"]["volumeMounts"]}
        self.assertTrue(mounts["proxy"]["readOnly"])
        self.assertNotIn("gate-state", mounts)
        policy = json.loads(kubectl("-n", NAMESPACE, "get", "networkpolicy", self.pod, "-o", "json"))
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress", "Egress"])
        self.assertEqual(policy["spec"].get("ingress", []), [])  # the API leaves an empty list out
        self.assertEqual(policy["metadata"]["ownerReferences"][0]["uid"], pod["metadata"]["uid"])

    def test_attach_opens_claude_detaches_and_reconnects_through_the_pods_terminal(self):
        argv = [sys.executable, "-m", "claude_bottle", "--runtime", "kubernetes", "attach", self.name]
        term = Terminal(argv, env=environment(self.env), cwd=str(self.home))
        screen = term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""), timeout=120)
        self.assertNotIn("trustthefiles", screen.replace(" ", "").lower())
        term.type(b"\x1c")  # Ctrl-\: detach, Claude goes on
        term.read_until(lambda s: f"detached; Claude goes on in {self.name}" in s)
        self.assertEqual(term.wait(), 0)
        running = self.sh("pgrep -fc '^claude --dangerously-skip-permissions'").stdout.strip()
        self.assertEqual(running, "1")
        term = Terminal(argv, rows=30, cols=100, env=environment(self.env), cwd=str(self.home))
        # Typed only once Claude's screen is back: keys typed before the attach has connected belong to the
        # user's own terminal (a busy cluster took more than the 3 s this test used to wait).
        term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""), timeout=120)
        term.type(b"zebra42")
        term.read_until(lambda s: "zebra42" in "".join(s.split()), timeout=60)
        term.type(b"\x15")  # clear the typed line, then quit Claude
        code = term.quit_claude()
        # Claude's own status as the session in the pod wrote it, passed on as it is. (Claude Code itself has
        # ended with 254 instead of 0, seldom, on a loaded machine: what we pass on is what is asserted.)
        recorded = self.sh("cat /tmp/claude-bottle-session/status").stdout.strip()
        self.assertEqual(str(code), recorded, term.shown())
        self.assertIn(code, (0, 254), term.shown())
        term.assert_restored(self)
        os.close(term.master)
        self.assertEqual(self.sh("pgrep -fc '^claude --dangerously-skip-permissions'").stdout.strip(), "0")


class KubernetesLifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        CLUSTER.ensure()
        cls.home = home_manifest(Path(tempfile.mkdtemp(prefix="claude-bottle-test-kube-home-")), [])
        cls.env = {"CLAUDE_BOTTLE_HOME": str(cls.home), "KUBE_SECRET": SECRET}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.home, ignore_errors=True)

    def test_a_namespace_that_does_not_exist_is_named(self):
        """By every command, not `start` alone: `ps` showed no bottle there, and `stop` said there was none
        by that name."""
        missing = f"claude-bottle-missing-{support.RUN_ID}"
        for command in (["start", "--detach", "--yes", "kube"], ["ps"], ["stop", "x"], ["cleanup", "--yes"],
                        ["exec", "x", "--", "true"], ["logs", "x"]):
            with self.subTest(command=command[0]):
                out = cli(*command, env=self.env | {"CLAUDE_BOTTLE_NAMESPACE": missing}, cwd=self.home)
                self.assertEqual(out.returncode, 1, out.stderr)
                self.assertEqual(out.stderr.strip().splitlines()[-1],
                                 f"Error: namespace {missing} does not exist in context "
                                 f"{kubectl('config', 'current-context').strip()}: create it (kubectl create "
                                 f"namespace {missing}) or name another with --namespace")
                self.assertNotIn("Traceback", out.stderr)


def untag(prefix: str) -> None:
    """Remove the names under `prefix` that pushing gave our images, on Docker and on the node (the images stay
    under their own names)."""
    for image in support.sdk().images.list():
        for tag in image.tags:
            if tag.startswith(prefix):
                support.sdk().images.remove(tag)
    ctr = ["ctr", "-a", "/run/k8s-lab/containerd.sock", "-n", "k8s.io", "images"]  # as up.sh imports them
    listed = subprocess.run([*ctr, "ls", "-q"], capture_output=True, text=True)
    refs = [ref for ref in listed.stdout.split() if ref.startswith(prefix)]
    if refs:
        subprocess.run([*ctr, "rm", *refs], capture_output=True)


class RegistryTest(unittest.TestCase):
    """Images from a registry the user names: `build --push` puts both there, and the cluster's nodes pull
    them from it (a real OCI registry on this host, go-containerregistry's, which .ci/run installs)."""

    @classmethod
    def setUpClass(cls):
        CLUSTER.ensure()
        crane = shutil.which("crane")
        if not crane:
            raise support.missing("crane (go install github.com/google/go-containerregistry/cmd/crane@v0.20.7), "
                                  "whose registry the test pushes to")
        cls.storage = tempfile.mkdtemp(prefix="claude-bottle-test-registry-")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            cls.port = s.getsockname()[1]
        cls.server = subprocess.Popen([crane, "registry", "serve", "--address", f"127.0.0.1:{cls.port}",
                                       "--disk", cls.storage], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.registry = f"127.0.0.1:{cls.port}/claude-bottle-test-{support.RUN_ID}"
        cls.home = Path(tempfile.mkdtemp(prefix="claude-bottle-test-kube-home-"))
        (cls.home / "claude-bottle.json").write_text(json.dumps({"image": {"registry": cls.registry}}))
        cls.env = {"CLAUDE_BOTTLE_HOME": str(cls.home)}

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.server.wait()
        untag(f"127.0.0.1:{cls.port}/")
        shutil.rmtree(cls.storage, ignore_errors=True)
        shutil.rmtree(cls.home, ignore_errors=True)

    def test_build_push_then_a_bottle_whose_pod_pulls_from_the_registry(self):
        pushed = cli("build", "--push", env=self.env, timeout=900)
        self.assertEqual(pushed.returncode, 0, pushed.stderr)
        refs = pushed.stdout.split()  # registry/repository:tag@digest
        self.assertEqual([r.split("@")[0].rsplit(":", 1)[0] for r in refs],
                         [f"{self.registry}/claude-bottle", f"{self.registry}/claude-bottle-sidecar"])
        for ref in refs:  # the registry has them, under that tag and that digest
            named, digest = ref.split("@")
            repository, tag = named.split("/", 1)[1].rsplit(":", 1)
            listed = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{self.port}/v2/{repository}/tags/list"],
                                    capture_output=True, text=True)
            self.assertEqual(json.loads(listed.stdout)["tags"], [tag])
            head = subprocess.run(["curl", "-sfI", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json",
                                   f"http://127.0.0.1:{self.port}/v2/{repository}/manifests/{tag}"],
                                  capture_output=True, text=True)
            self.assertIn(f"docker-content-digest: {digest}", head.stdout.lower())
        started = cli("start", "--detach", "--yes", env=self.env, cwd=self.home)
        self.assertEqual(started.returncode, 0, started.stderr)
        name = started.stdout.strip()
        try:
            pod = bottle.Names(name).container
            spec = json.loads(kubectl("-n", NAMESPACE, "get", "pod", pod, "-o", "json"))
            # By digest: what was pushed from here, whatever the tag in the registry points at later.
            self.assertEqual(sorted(c["image"] for c in spec["spec"]["containers"]), sorted(refs))
            self.assertEqual(spec["spec"]["initContainers"][0]["image"], refs[0])
            pulled = kubectl("-n", NAMESPACE, "get", "events", "--field-selector", f"involvedObject.name={pod}",
                             "-o", "json")
            messages = [e["message"] for e in json.loads(pulled)["items"] if e["reason"] in ("Pulling", "Pulled")]
            self.assertTrue(any(refs[0] in m for m in messages), messages)
            self.assertEqual(cli("exec", name, "--", "true", env=self.env).returncode, 0)
        finally:
            self.assertEqual(cli("stop", name, env=self.env).returncode, 0)

    def test_a_registry_that_refuses_is_one_error_line(self):
        home = Path(tempfile.mkdtemp(prefix="claude-bottle-test-kube-home-"))
        try:
            # A port nobody listens on: the engine cannot push there.
            with __import__("socket").socket() as s:
                s.bind(("127.0.0.1", 0))
                closed = s.getsockname()[1]
            (home / "claude-bottle.json").write_text(json.dumps({"image": {"registry": f"127.0.0.1:{closed}/x"}}))
            out = cli("build", "--push", env={"CLAUDE_BOTTLE_HOME": str(home)}, timeout=900)
            self.assertEqual(out.returncode, 5, out.stderr)
            errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
            self.assertEqual(len(errors), 1, out.stderr)
            self.assertTrue(errors[0].startswith(f"Error: pushing 127.0.0.1:{closed}/x/claude-bottle:"), errors[0])
            self.assertNotIn("Traceback", out.stderr)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            untag(f"127.0.0.1:{closed}/")


class DoctorTest(unittest.TestCase):
    def test_the_cluster_the_namespace_and_the_registry(self):
        CLUSTER.ensure()
        with tempfile.TemporaryDirectory() as home:
            env = {"CLAUDE_BOTTLE_HOME": home}
            out = cli("doctor", "--json", env=env)
            checks = {c["name"]: c for c in json.loads(out.stdout)}
            self.assertEqual(checks["cluster"]["status"], "ok", out.stdout)
            self.assertEqual((checks["namespace"]["status"], checks["namespace"]["found"]), ("ok", NAMESPACE))
            self.assertEqual(checks["registry"]["status"], "warn")
            missing = f"claude-bottle-missing-{support.RUN_ID}"
            out = cli("doctor", "--json", env=env | {"CLAUDE_BOTTLE_NAMESPACE": missing})
            self.assertEqual(out.returncode, 1, out.stderr)
            checks = {c["name"]: c for c in json.loads(out.stdout)}
            self.assertEqual(checks["namespace"]["status"], "fail")
            self.assertIn(f"kubectl create namespace {missing}", checks["namespace"]["fix"])
