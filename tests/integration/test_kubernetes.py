"""What is the Kubernetes runtime's own (--runtime kubernetes), on the test cluster of ../shared/kubernetes.

The attacks and checks both runtimes share (isolation, the token, result branches, the lifecycle) run on each
from their own modules (the classes named *OnKubernetesTest); here are the cluster's own objects and addresses:
the pod spec, its NetworkPolicy, the apiserver, kubelet and service range, the node in `ps`, the pod's
terminal, a namespace that does not exist. Without the cluster these skip on a laptop and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
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
        done = self.sh(support._connects_script(host, port))
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

    def test_the_clusters_own_addresses_are_unreachable(self):
        """Beyond what both runtimes' tests try (test_isolation.ReachTest): the apiserver, the kubelet, the
        node's SSH, the service range and the pod's own address."""
        status = self.pod_json()["status"]
        node = status["hostIP"]
        self.assertTrue(CLUSTER.plain_workload_reaches(node, 6443))  # control: a plain pod reaches the apiserver
        for host, port in [(node, 6443), (node, 10250), (node, 22), ("10.96.0.1", 443), (status["podIP"], 3128),
                           (status["podIP"], 8888)]:
            with self.subTest(target=f"{host}:{port}"):
                self.assertFalse(self.connects(host, port))

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
        time.sleep(3)
        term.type(b"zebra42")
        term.read_until(lambda s: "zebra42" in "".join(s.split()), timeout=60)
        term.type(b"\x15\x03")  # clear the typed line, then quit Claude
        time.sleep(0.5)
        term.type(b"\x03")
        self.assertEqual(term.proc.wait(60), 0)
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
        missing = f"claude-bottle-missing-{support.RUN_ID}"
        out = cli("start", "--detach", "--yes", "kube", env=self.env | {"CLAUDE_BOTTLE_NAMESPACE": missing},
                  cwd=self.home)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertEqual(out.stderr.strip().splitlines()[-1],
                         f"Error: namespace {missing} does not exist in context "
                         f"{kubectl('config', 'current-context').strip()}: create it (kubectl create namespace "
                         f"{missing}) or name another with --namespace")
        self.assertNotIn("Traceback", out.stderr)
