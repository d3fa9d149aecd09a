"""The Kubernetes runtime's pieces that need no cluster: the pod it asks for, the packet filter its init
container writes, how it reads the API's answers, and how the runtime is chosen. test_kubernetes (the
integration suite) attacks the real pod."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from claude_bottle import bottle, egress, kube, runtime, sidecar
from claude_bottle.docker import LABEL_PREFIX
from claude_bottle.errors import BottleError

from .test_bottle import make_plan

ROOT = Path(__file__).resolve().parents[2]


def pod_of(plan=None) -> dict:
    plan = plan or make_plan()
    n = plan.names
    side = sidecar.container(n.sidecar, "sidecar:tag", "", bottle.labels(plan, "sidecar", "lock:h:/x"),
                             n.proxy_volume)
    return kube._pod(bottle.bottle_container(plan, "lock:h:/x"), side, kube.egress_rules([8888, 9464]),
                     "bottle:tag")


class PodTest(unittest.TestCase):
    def test_the_bottle_cannot_write_the_proxy_folder_nor_see_the_gates(self):
        containers = {c["name"]: c for c in pod_of()["spec"]["containers"]}
        bottle_mounts = {m["name"]: m for m in containers["bottle"]["volumeMounts"]}
        self.assertTrue(bottle_mounts["proxy"]["readOnly"])
        self.assertEqual(bottle_mounts["proxy"]["mountPath"], sidecar.PROXY_DIR)
        self.assertNotIn("gate-state", bottle_mounts)
        self.assertEqual(bottle_mounts["workspace"]["mountPath"], "/workspace")  # outlives the container
        side_mounts = {m["name"]: m for m in containers["sidecar"]["volumeMounts"]}
        self.assertNotIn("readOnly", side_mounts["proxy"])
        self.assertEqual(side_mounts["gate-state"]["mountPath"], sidecar.STATE_DIR)

    def test_only_the_init_container_has_a_capability_and_the_users_differ(self):
        spec = pod_of()["spec"]
        (init,) = spec["initContainers"]
        # CHOWN: the workspace volume made the bottle's user's, before the bottle starts.
        self.assertEqual(init["securityContext"]["capabilities"]["add"], ["NET_ADMIN", "NET_RAW", "CHOWN"])
        self.assertEqual([m["mountPath"] for m in init["volumeMounts"]], ["/workspace"])
        self.assertTrue(init["command"][2].startswith("chmod 0755 /workspace && chown 1000:1000 /workspace\n"))
        users = set()
        for c in spec["containers"]:
            security = c["securityContext"]
            self.assertEqual(security["capabilities"], {"drop": ["ALL"]})
            self.assertFalse(security["allowPrivilegeEscalation"])
            self.assertTrue(security["runAsNonRoot"])
            users.add(security["runAsUser"])
        self.assertEqual(users, {1000, kube.SIDECAR_UID})
        self.assertFalse(spec["automountServiceAccountToken"])
        self.assertEqual(spec["restartPolicy"], "Never")

    def test_no_secret_in_the_pod_and_stdin_carries_them(self):
        pod = pod_of()
        for c in pod["spec"]["containers"]:
            self.assertTrue(c["stdin"] and c["stdinOnce"])
            names = {e["name"] for e in c.get("env", [])}
            self.assertNotIn(bottle.CLAUDE_TOKEN_VARIABLE, names)
            self.assertNotIn(bottle.TOKEN_VARIABLE, names)
        self.assertNotIn("sk-ant", json.dumps(pod))

    def test_labels_are_selectable_and_whole_in_annotations(self):
        plan = make_plan()
        meta = pod_of(plan)["metadata"]
        self.assertEqual(meta["labels"][LABEL_PREFIX + "bottle"], plan.name)
        self.assertEqual(meta["labels"][LABEL_PREFIX + "role"], "bottle")
        self.assertNotIn(LABEL_PREFIX + "owner", meta["labels"])  # a path: not a label value
        self.assertEqual(meta["annotations"][LABEL_PREFIX + "owner"], "lock:h:/x")
        self.assertEqual(kube._k8s_labels({LABEL_PREFIX + "bottle": "b\n", LABEL_PREFIX + "role": "bottle"}),
                         {LABEL_PREFIX + "role": "bottle"})  # not a label value: the API would refuse the pod

    def test_bottles_spread_over_the_nodes_without_being_refused_a_node(self):
        pod = pod_of()
        (spread,) = pod["spec"]["topologySpreadConstraints"]
        self.assertEqual((spread["topologyKey"], spread["whenUnsatisfiable"], spread["maxSkew"]),
                         ("kubernetes.io/hostname", "ScheduleAnyway", 1))
        (rule,) = spread["labelSelector"]["matchExpressions"]
        self.assertEqual(rule["operator"], "Exists")
        self.assertIn(rule["key"], pod["metadata"]["labels"])  # it counts every bottle's pod, this one's too

    def test_memory_limits_come_from_the_manifest(self):
        from claude_bottle import manifest

        plan = make_plan(b=manifest.Bottle("dev", memory="2g"))
        limits = {c["name"]: c["resources"]["limits"]["memory"] for c in pod_of(plan)["spec"]["containers"]}
        self.assertEqual(limits["bottle"], str(2 * 2**30))
        self.assertEqual(limits["sidecar"], str(768 * 2**20))
        # The scheduler reserves what an idle bottle uses, not its limit (else five 4 GiB bottles fill 24 GiB).
        requests = {c["name"]: c["resources"]["requests"]["memory"] for c in pod_of(plan)["spec"]["containers"]}
        self.assertEqual(requests, {"bottle": str(512 * 2**20), "sidecar": "64Mi"})
        small = make_plan(b=manifest.Bottle("dev", memory="256m"))
        (bottle_c,) = [c for c in pod_of(small)["spec"]["containers"] if c["name"] == "bottle"]
        self.assertEqual(bottle_c["resources"]["requests"]["memory"], str(256 * 2**20))

    def test_cpu_limits_and_reservations_come_from_the_manifest(self):
        from claude_bottle import manifest

        def bottle_resources(b):
            (c,) = [c for c in pod_of(make_plan(b=b))["spec"]["containers"] if c["name"] == "bottle"]
            return c["resources"]

        self.assertEqual(bottle_resources(manifest.Bottle("dev", memory="8g", cpus=2, reserve_memory="2g",
                                                          reserve_cpus=1.5)),
                         {"limits": {"memory": str(8 * 2**30), "cpu": "2000m"},
                          "requests": {"memory": str(2 * 2**30), "cpu": "1500m"}})
        self.assertEqual(bottle_resources(manifest.Bottle("dev", cpus=0.05)),  # the default request, capped
                         {"limits": {"memory": str(4 * 2**30), "cpu": "50m"},
                          "requests": {"memory": str(512 * 2**20), "cpu": "50m"}})


class EgressRulesTest(unittest.TestCase):
    def test_order_sidecar_then_closed_ports_then_loopback_then_nothing(self):
        script = kube.egress_rules([9464, 8888, 8888])
        for tool, loopback in (("iptables", "127.0.0.1"), ("ip6tables", "::1")):
            rules = [line for line in script.splitlines() if line.startswith(f"{tool} -A OUTPUT")]
            self.assertEqual(rules, [
                f"{tool} -A OUTPUT -m owner --uid-owner {kube.SIDECAR_UID} -j ACCEPT",
                f"{tool} -A OUTPUT -o lo -p tcp -m multiport --dports 8888,9464 -j REJECT",
                f"{tool} -A OUTPUT -o lo -p udp -m multiport --dports 8888,9464 -j REJECT",
                f"{tool} -A OUTPUT -o lo -s {loopback} -d {loopback} -j ACCEPT",
                f"{tool} -A OUTPUT -j REJECT",
            ])
        self.assertTrue(script.startswith("set -eu\n"))  # a rule that fails stops the pod

    def test_the_launch_closes_every_port_pipelock_listens_on(self):
        launched = []

        class Recorder:
            kind = "kubernetes"

            def launch_pod(self, b, side, rules, rules_image, bottle_input, sidecar_input, timeout):
                launched.append(rules)
                return "ready", "ready"

            def find(self, labels):
                return []

        bottle.launch(Recorder(), make_plan(), {}, "sk-ant-oat01-" + "t" * 40, "lock:h:/x")
        ports = [a.rsplit(":", 1)[1] for a in (egress.PIPELOCK_LISTEN, egress.METRICS_LISTEN,
                                               egress.SSH_PIPELOCK_LISTEN, egress.SSH_METRICS_LISTEN)]
        self.assertIn(f"--dports {','.join(sorted(ports))} -j REJECT", launched[0])

    def test_mount_is_refused_on_a_cluster(self):
        from dataclasses import replace

        class Cluster:
            kind = "kubernetes"

            def find(self, labels):
                return []

        with tempfile.TemporaryDirectory() as folder:
            with self.assertRaisesRegex(BottleError, "--mount.*--workspace"):
                bottle.launch(Cluster(), replace(make_plan(), mount=Path(folder)), {}, "t" * 40, "lock:h:/x")


class AnswersTest(unittest.TestCase):
    class Stream:
        def __init__(self, status: bytes):
            self.status = status

        def read_channel(self, channel):
            return self.status if channel == 3 else b""

    def test_exit_status(self):
        self.assertEqual(kube._exit_status(self.Stream(b'{"status":"Success"}')), 0)
        failure = {"status": "Failure", "reason": "NonZeroExitCode",
                   "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
        self.assertEqual(kube._exit_status(self.Stream(json.dumps(failure).encode())), 3)
        self.assertEqual(kube._exit_status(self.Stream(b"")), 137)
        with self.assertRaisesRegex(BottleError, "executable file not found"):
            kube._exit_status(self.Stream(json.dumps({"status": "Failure", "message":
                                                      "exec: \"nope\": executable file not found"}).encode()))

    def test_matching_and_names(self):
        self.assertTrue(kube._matches({"a": "1", "b": "2"}, {"a": "", "b": "2"}))
        self.assertFalse(kube._matches({"a": "1"}, {"a": "2"}))
        self.assertEqual(kube._target("cb-x-1a2b3c-sidecar"), ("cb-x-1a2b3c", "sidecar"))
        self.assertEqual(kube._target("cb-x-1a2b3c"), ("cb-x-1a2b3c", "bottle"))
        self.assertEqual(kube._k8s_labels({LABEL_PREFIX + "agent": "Bad Name!", LABEL_PREFIX + "role": "bottle"}),
                         {LABEL_PREFIX + "role": "bottle"})


class ChoosingTest(unittest.TestCase):
    def test_a_bad_runtime_is_named(self):
        self.assertEqual(runtime.chosen({}), "docker")
        self.assertEqual(runtime.chosen({"CLAUDE_BOTTLE_RUNTIME": "Kubernetes"}), "kubernetes")
        with self.assertRaisesRegex(BottleError, "CLAUDE_BOTTLE_RUNTIME=podman: not a runtime"):
            runtime.chosen({"CLAUDE_BOTTLE_RUNTIME": "podman"})

    def test_no_kubeconfig_is_one_error_line_with_exit_4(self):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run([sys.executable, "-m", "claude_bottle", "--runtime", "kubernetes", "ps"],
                                  capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                                       "KUBECONFIG": str(Path(tmp, "missing")), "XDG_STATE_HOME": tmp})
        self.assertEqual(done.returncode, 4, done.stderr)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        self.assertRegex(done.stderr, r"^Error: no usable Kubernetes configuration in .*missing.*KUBECONFIG")

    def test_an_unknown_context_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp, "config")
            config.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "a",
                "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}]}))
            done = subprocess.run([sys.executable, "-m", "claude_bottle", "--runtime", "kubernetes", "--context", "b",
                                   "ps"], capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "KUBECONFIG": str(config),
                                       "XDG_STATE_HOME": tmp})
            self.assertEqual(done.returncode, 1, done.stderr)
            self.assertIn("Error: --context b: no such context", done.stderr)
            unreachable = subprocess.run([sys.executable, "-m", "claude_bottle", "--runtime", "kubernetes", "ps"],
                                         capture_output=True, text=True, timeout=60,
                                         env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "KUBECONFIG": str(config),
                                              "XDG_STATE_HOME": tmp})
            self.assertEqual(unreachable.returncode, 4, unreachable.stderr)
            self.assertRegex(unreachable.stderr, r"^Error: the Kubernetes API at https://127.0.0.1:1 could not be "
                                                 r"reached")
            self.assertEqual(len(unreachable.stderr.strip().splitlines()), 1, unreachable.stderr)


class OptionsTest(unittest.TestCase):
    def run_cli(self, *args: str, home: dict | None = None, **env: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            if home is not None:
                Path(tmp, "claude-bottle.json").write_text(json.dumps(home))
            return subprocess.run([sys.executable, "-m", "claude_bottle", *args], capture_output=True, text=True,
                                  timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "XDG_STATE_HOME": tmp,
                                                   "CLAUDE_BOTTLE_HOME": tmp, "KUBECONFIG": "/nonexistent", **env})

    def test_the_home_manifest_chooses_the_runtime_unless_an_option_or_a_variable_does(self):
        home = {"runtime": {"name": "kubernetes", "context": "lab", "namespace": "agents"}}
        on_cluster = self.run_cli("ps", home=home)  # the cluster is tried: there is no kubeconfig here
        self.assertEqual(on_cluster.returncode, 4, on_cluster.stderr)
        self.assertIn("Error: no usable Kubernetes configuration in /nonexistent", on_cluster.stderr)
        with_namespace = self.run_cli("--namespace", "other", "ps", home=home)  # allowed: the runtime is Kubernetes
        self.assertEqual(with_namespace.returncode, 4, with_namespace.stderr)
        for args, env in ((["--runtime", "docker", "--context", "x"], {}), (["--context", "x"],
                                                                            {"CLAUDE_BOTTLE_RUNTIME": "docker"})):
            refused = self.run_cli(*args, "ps", home=home, **env)  # the option, then the variable, win
            self.assertEqual(refused.returncode, 2, refused.stderr)
            self.assertIn("--context: only for bottles on Kubernetes", refused.stderr)

    def test_bad_runtime_settings_are_named(self):
        for runtime, field, says in (({"name": "nomad"}, "runtime.name", "must be docker or kubernetes"),
                                     ({"name": ""}, "runtime.name", "must be a non-empty string"),
                                     ({"zone": "x"}, "runtime", "unknown setting 'zone': use name, context, namespace"),
                                     ("kubernetes", "runtime", 'must be an object like {"name": "kubernetes"}')):
            with self.subTest(runtime=runtime):
                done = self.run_cli("ps", home={"runtime": runtime})
                self.assertEqual(done.returncode, 3, done.stderr)
                self.assertRegex(done.stderr, rf"^Error: \S+claude-bottle.json: {re.escape(field)}: {re.escape(says)}")
                self.assertEqual(len(done.stderr.splitlines()), 1, done.stderr)

    def test_a_dry_run_names_the_registry_the_nodes_pull_from(self):
        done = self.run_cli("--runtime", "kubernetes", "start", "--dry-run",
                            home={"image": {"registry": "registry.example.com:5000/team"}},
                            CLAUDE_BOTTLE_OAUTH_TOKEN="sk-ant-oat01-" + "x" * 40)
        self.assertRegex(done.stdout, r"image:    claude-bottle:[0-9a-f]{16} \(pulled by the cluster's nodes from "
                                      r"registry.example.com:5000/team \(`claude-bottle build --push` puts it there\)\)")

    def test_images_pushed_from_here_are_pulled_by_their_digest(self):
        from claude_bottle import image, manifest

        digest = "sha256:" + "c" * 64
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            self.assertEqual(image.in_registry("claude-bottle:abc", "reg.example.com/t", state),
                             "reg.example.com/t/claude-bottle:abc")  # nothing pushed from here: the tag
            image.record_push(state, "reg.example.com/t/claude-bottle:abc", digest)
            image.record_push(state, "reg.example.com/t/other:x", "sha256:" + "d" * 64)
            self.assertEqual(image.in_registry("claude-bottle:abc", "reg.example.com/t", state),
                             f"reg.example.com/t/claude-bottle:abc@{digest}")
            self.assertEqual(image.in_registry("claude-bottle:abc", None, state), "claude-bottle:abc")
            (state / image.PUSHED_FILE).write_text('{"reg.example.com/t/claude-bottle:abc": "sha256:not-a-digest"}')
            self.assertEqual(image.in_registry("claude-bottle:abc", "reg.example.com/t", state),
                             "reg.example.com/t/claude-bottle:abc")  # a broken record is not trusted
            # The plan names both images as the nodes pull them.
            m = manifest.load(state, {"CLAUDE_BOTTLE_HOME": tmp})
            m = dataclasses.replace(m, image=dataclasses.replace(m.image, registry="reg.example.com/t"))
            plan = bottle.plan(m, "default", {"CLAUDE_BOTTLE_HOME": tmp})
            spec = bottle.bottle_container(plan, "o")
            ref = f"reg.example.com/t/{plan.image.tag}"
            image.record_push(manifest.state_dir({"CLAUDE_BOTTLE_HOME": tmp}), ref, digest)
            pinned = bottle.plan(m, "default", {"CLAUDE_BOTTLE_HOME": tmp})
            self.assertEqual(pinned.image_refs, {plan.image.tag: f"{ref}@{digest}",
                                                 plan.sidecar_image.tag: f"reg.example.com/t/{plan.sidecar_image.tag}"})
            self.assertEqual(spec.image, plan.image.tag)  # Docker's container keeps the local name

    def test_a_registry_that_is_not_one_is_refused_and_push_needs_one(self):
        for registry in ("https://registry.example.com", "Registry.example.com", "registry.example.com/team:v1", ""):
            with self.subTest(registry=registry):
                done = self.run_cli("build", "--push", home={"image": {"registry": registry}})
                self.assertEqual(done.returncode, 3, done.stderr)
                self.assertIn("image.registry", done.stderr)
        done = self.run_cli("build", "--push", home={})
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn('--push needs a registry to push to: add "image": {"registry": "registry.example.com/team"} to ',
                      done.stderr)

    def test_cluster_options_without_the_kubernetes_runtime_are_refused(self):
        for args in (["--context", "lab"], ["--namespace", "agents"]):
            done = self.run_cli(*args, "ps", CLAUDE_BOTTLE_RUNTIME="docker")
            self.assertEqual(done.returncode, 2, done.stderr)
            self.assertIn(f"Error: {args[0]}: only for bottles on Kubernetes: add --runtime kubernetes", done.stderr)

    def test_a_dry_run_on_a_cluster_says_what_it_would_create_there(self):
        done = self.run_cli("--runtime", "kubernetes", "start", "--dry-run", KUBECONFIG="/nonexistent",
                            CLAUDE_BOTTLE_OAUTH_TOKEN="sk-ant-oat01-" + "x" * 40)
        self.assertNotIn("Traceback", done.stderr)
        self.assertIn("must be on the cluster's nodes (imported: no image.registry in the home manifest)",
                      done.stdout + done.stderr)
        self.assertRegex(done.stdout + done.stderr, r"creates:  pod cb-default-[0-9a-f]{6} \(bottle and sidecar")
        self.assertEqual(done.returncode, 4, done.stderr)  # the cluster check fails: no kubeconfig
