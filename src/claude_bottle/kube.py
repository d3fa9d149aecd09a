"""The Kubernetes runtime: the same bottles as on Docker, each one pod, through the official client.

A bottle is one pod: the bottle container, the sidecar container and the proxy folder between them (an
emptyDir the bottle mounts read-only), as on Docker. A pod's containers share one network namespace, so the
bottle cannot simply have none: an init container, the only one with NET_ADMIN, writes that namespace's
packet filter before either container starts. Only the sidecar's user may send anything off the pod; the
bottle's user may reach its own loopback address and nothing else, not even the sidecar's loopback ports
(pipelock's and its metrics': the gate's socket is the one way out, as on Docker). Neither container may
change the filter (no capabilities, no privilege gain). A NetworkPolicy per pod refuses every connection
into it and the metadata address out of it, for clusters that enforce one; the filter does not rely on it.

The token and the bottle's secrets travel as on Docker: on the containers' stdin, over the API's attach
stream, never in a pod spec, a Secret or a log. The Engine-shaped methods take Docker's container names:
`cb-NAME` is the bottle container of pod `cb-NAME`, `cb-NAME-sidecar` its sidecar container.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import BinaryIO

from . import lazy
from .docker import LABEL_PREFIX, ContainerSpec, ContainerState, ExecTimeout, Found, limited, size_in_bytes
from .errors import BottleError, ClusterUnavailable
from .image import PID1, WORKSPACE

k8s = lazy.Module("kubernetes.client")
k8s_config = lazy.Module("kubernetes.config")
k8s_stream = lazy.Module("kubernetes.stream")
websocket = lazy.Module("websocket")  # the client the stream API uses

RUNTIME_VARIABLE = "CLAUDE_BOTTLE_RUNTIME"
CONTEXT_VARIABLE = "CLAUDE_BOTTLE_CONTEXT"
NAMESPACE_VARIABLE = "CLAUDE_BOTTLE_NAMESPACE"

SIDECAR_SUFFIX = "-sidecar"
SIDECAR_UID = 1001  # not the bottle's user: the packet filter tells them apart by their uid
METADATA = "169.254.0.0/16"
# What the scheduler reserves: an idle bottle's use, not its limit (a request defaults to the limit, and 4 GiB
# per bottle would fit five on a 24 GiB node however little they use). Limits come from the manifest.
BOTTLE_REQUEST = "512m"
SIDECAR_REQUEST = "64Mi"
# Each used with fullmatch: a `$` would also match before a final newline.
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_STDIN, _CHUNK = 0, 1 << 20  # stdin's channel; what one websocket frame carries
_IMAGE_TROUBLE = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")


def egress_rules(closed_ports: Sequence[int]) -> str:
    """The init container's script: the pod's packet filter, IPv4 and IPv6. Only the sidecar's user leaves the
    pod; every other user (the bottle's and any it could become) stays on its loopback address, away from the
    sidecar's loopback ports. Anything else is refused (REJECT: a tool fails at once instead of hanging)."""
    ports = ",".join(str(p) for p in sorted(set(closed_ports)))
    lines = ["set -eu"]
    for tool, loopback in (("iptables", "127.0.0.1"), ("ip6tables", "::1")):
        lines += [
            f"{tool} -P OUTPUT ACCEPT",
            f"{tool} -F OUTPUT",
            f"{tool} -A OUTPUT -m owner --uid-owner {SIDECAR_UID} -j ACCEPT",
            f"{tool} -A OUTPUT -o lo -p tcp -m multiport --dports {ports} -j REJECT",
            f"{tool} -A OUTPUT -o lo -p udp -m multiport --dports {ports} -j REJECT",
            f"{tool} -A OUTPUT -o lo -s {loopback} -d {loopback} -j ACCEPT",
            f"{tool} -A OUTPUT -j REJECT",
            f"{tool} -P OUTPUT DROP",
        ]
    return "\n".join(lines) + "\necho rules\n"


class Cluster:
    """One namespace of a Kubernetes cluster, seen the way the lifecycle sees a Docker engine."""

    kind = "kubernetes"

    def __init__(self, api, namespace: str, context: str):
        self.api = api
        self.namespace = namespace
        self.context = context
        self.host = api.configuration.host
        self.core = k8s.CoreV1Api(api)
        self.net = k8s.NetworkingV1Api(api)
        self._rescued: dict[str, str] = {}  # pod: the ephemeral container that stands in for its ended bottle

    def clone(self) -> Cluster:
        return self  # the client's connection pool is shared safely between threads

    # -- errors

    def _call(self, what: Callable, *args, not_found=None, **kwargs):
        """Call the API; a 404 returns `not_found`, any other refusal or a lost connection is one error."""
        try:
            return what(*args, **kwargs)
        except k8s.ApiException as e:
            if e.status == 404:
                return not_found
            raise self._refused(e) from None
        except Exception as e:
            if isinstance(e, BottleError):
                raise
            raise ClusterUnavailable(f"the Kubernetes API at {self.host} could not be reached: "
                                     f"{_one_line(e)}") from None

    def _refused(self, e) -> ClusterUnavailable:
        try:
            message = json.loads(e.body).get("message") or e.reason
        except (TypeError, ValueError, AttributeError):
            message = e.reason
        return ClusterUnavailable(f"the Kubernetes cluster at {self.host} refused: {_one_line(message)}")

    def no_namespace(self) -> BottleError:
        return BottleError(f"namespace {self.namespace} does not exist in context {self.context}: create it "
                           f"(kubectl create namespace {self.namespace}) or name another with --namespace")

    def namespace_exists(self) -> bool | None:
        """Whether this namespace exists; None when this user may not ask (namespaces are cluster-wide)."""
        try:
            return self._call(self.core.read_namespace, self.namespace, not_found=False) is not False
        except ClusterUnavailable as e:
            if "forbidden" in str(e).lower():
                return None
            raise

    # -- a bottle's pod

    def launch_pod(self, bottle: ContainerSpec, side: ContainerSpec, rules: str, rules_image: str,
                   bottle_input: bytes, sidecar_input: bytes, timeout: float) -> tuple[str, str]:
        """Create the bottle's pod and its NetworkPolicy, wait until its containers run, and hand each its
        input on stdin. Returns what the sidecar and the bottle said (their first lines)."""
        name = bottle.name
        if not _POD_NAME.fullmatch(name) or len(name) > 63:
            raise BottleError(f"'{name}' cannot name a pod: on Kubernetes agent names must be lowercase letters, "
                              "digits and '-'")
        pod = self._call(self.core.create_namespaced_pod, self.namespace, _pod(bottle, side, rules, rules_image))
        if pod is None:  # the API's 404 for a pod being created: its namespace
            raise self.no_namespace()
        self._call(self.net.create_namespaced_network_policy, self.namespace, _policy(name, bottle.labels, pod))
        self._wait_running(name, timeout)
        said: dict[str, str] = {}
        errors: list[BaseException] = []

        def hand(container: str, data: bytes) -> None:
            try:
                said[container] = self._attach(name, container, data, timeout)
            except BaseException as e:  # noqa: B036 - raised again below, in the caller's thread
                errors.append(e)

        helper = threading.Thread(target=hand, args=("sidecar", sidecar_input))
        helper.start()
        hand("bottle", bottle_input)
        helper.join()
        if errors:
            raise errors[0]
        return said.get("sidecar", ""), said.get("bottle", "")

    def _wait_running(self, pod: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            state = self._call(self.core.read_namespaced_pod, pod, self.namespace)
            if state is None:
                raise BottleError(f"pod {pod} went away while it started")
            status = state.status
            for c in (status.init_container_statuses or []) + (status.container_statuses or []):
                waiting = c.state.waiting if c.state else None
                if waiting and waiting.reason in _IMAGE_TROUBLE:
                    raise BottleError(f"the cluster cannot get image {c.image} ({waiting.reason}): push it to a "
                                      "registry the cluster pulls from, or import it into the nodes")
                done = c.state.terminated if c.state else None
                if done and (done.exit_code != 0 or c.name != "egress-rules"):
                    raise BottleError(f"the bottle's {c.name} container ended at start (exit {done.exit_code}): "
                                      f"{_one_line(self._log(pod, c.name) or done.reason or '')}")
            running = {c.name for c in status.container_statuses or [] if c.state and c.state.running}
            if {"bottle", "sidecar"} <= running:
                return
            if status.phase in ("Failed", "Succeeded"):
                raise BottleError(f"pod {pod} ended at start: {status.reason or status.phase} {status.message or ''}")
            if time.monotonic() > deadline:
                why = "; ".join(f"{c.reason}: {c.message}" for c in status.conditions or []
                                if c.status != "True" and c.message)  # e.g. no node with enough memory
                raise ExecTimeout(f"pod {pod} was not running within {timeout:.0f} s (phase {status.phase}"
                                  f"{': ' + _one_line(why) if why else ''})")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)  # a pod changes state in tenths of a second

    def _log(self, pod: str, container: str) -> str:
        try:
            return self.core.read_namespaced_pod_log(pod, self.namespace, container=container, tail_lines=5)
        except Exception:  # only to explain another error
            return ""

    def _attach(self, pod: str, container: str, data: bytes, timeout: float) -> str:
        """Write `data` to the container's stdin (which closes after it) and return the first line it says."""
        ws = self._call(k8s_stream.stream, self._streaming().connect_get_namespaced_pod_attach, pod, self.namespace,
                        container=container, stdin=True, stdout=True, stderr=True, tty=False,
                        _preload_content=False, binary=True)
        try:
            _write(ws, data)
            line = ws.readline_channel(1, timeout=timeout)
            return (line or b"").decode(errors="replace")
        finally:
            ws.close()

    def _streaming(self):
        """A client of its own for each exec or attach: the stream helper swaps its client's request method
        while it runs, which would send another thread's plain requests over a websocket."""
        return k8s.CoreV1Api(k8s.ApiClient(self.api.configuration))

    def start_container(self, name: str) -> None:
        """A pod's container cannot be started again. A bottle's that has ended (its PID 1 killed by its
        CPU-time limit, or by the out-of-memory killer) is stood in for by an ephemeral container of the same
        image and user, with the bottle's workspace volume, where its work is brought back from: every exec
        to the bottle goes there from now on."""
        state = self.container(name)
        if state is None:
            raise BottleError(f"{name} is gone")
        if state.running:
            return
        pod, container = _target(name)
        found = self._call(self.core.read_namespaced_pod, pod, self.namespace)
        spec = {c.name: c for c in (found.spec.containers or [])} if found else {}
        if container != "bottle" or "bottle" not in spec or (found.status.phase or "") != "Running":
            raise BottleError(f"{name} is not running, and a pod's container cannot be started again")
        bottle = spec["bottle"]
        if not any(m.name == "workspace" for m in (bottle.volume_mounts or [])):
            raise BottleError(f"{name} is not running, and a pod's container cannot be started again (a bottle "
                              "made before its workspace was kept on a volume)")
        if not any(c.name == _RESCUE for c in (found.spec.ephemeral_containers or [])):
            security = bottle.security_context
            standin = {"name": _RESCUE, "image": bottle.image, "imagePullPolicy": "IfNotPresent",
                       "command": [*PID1, "true"], "workingDir": WORKSPACE,
                       "securityContext": _security(security.run_as_user),
                       "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}]}
            body = {"spec": {"ephemeralContainers": [
                self.api.sanitize_for_serialization(c) for c in (found.spec.ephemeral_containers or [])] + [standin]}}
            try:
                self._call(self.core.patch_namespaced_pod_ephemeralcontainers, pod, self.namespace, body)
            except ClusterUnavailable as e:
                if "refused" not in str(e):
                    raise  # unreachable: nothing is decided, the next stop tries again
                raise BottleError(f"{name} is not running, and the cluster refused the container that would stand "
                                  f"in for it to bring its work back ({e}): may you patch pods/ephemeralcontainers "
                                  "here?") from None
        deadline = time.monotonic() + 120
        while True:
            found = self._call(self.core.read_namespaced_pod, pod, self.namespace)
            statuses = {c.name: c for c in ((found.status.ephemeral_container_statuses or []) if found else [])}
            now = statuses.get(_RESCUE)
            if now is not None and now.state and now.state.running:
                break
            if found is None or (now is not None and now.state and now.state.terminated):
                raise BottleError(f"{name} is not running, and the container that would stand in for it to bring "
                                  "its work back did not start")
            if time.monotonic() > deadline:
                raise BottleError(f"{name} is not running, and the container that would stand in for it to bring "
                                  "its work back did not start within 120 s")
            time.sleep(0.2)
        self._rescued[pod] = _RESCUE

    def container(self, name: str) -> ContainerState | None:
        pod, container = _target(name)
        found = self._call(self.core.read_namespaced_pod, pod, self.namespace)
        if found is None:
            return None
        labels = _labels_of(found.metadata)
        for c in found.status.container_statuses or []:
            if c.name == container:
                state = c.state
                done = state.terminated if state else None
                return ContainerState(name=name, running=bool(state and state.running),
                                      status="running" if state and state.running else
                                      ("exited" if done else "created"),
                                      exit_code=done.exit_code if done else None,
                                      oom_killed=bool(done and done.reason == "OOMKilled"), labels=labels)
        return ContainerState(name=name, running=False, status=(found.status.phase or "").lower(),
                              exit_code=None, oom_killed=False, labels=labels)

    def remove_container(self, name: str, wait: float = 60.0) -> None:
        """Delete the pod and wait until it is gone: until its node has stopped its containers, not only until
        the API forgets it (what a zero grace period would do). Gone already counts as removed."""
        pod, _ = _target(name)
        body = k8s.V1DeleteOptions(propagation_policy="Background")  # the pod's own 1 s grace
        if self._call(self.core.delete_namespaced_pod, pod, self.namespace, body=body, not_found=False) is False:
            return
        deadline = time.monotonic() + wait
        pause = 0.05
        while self._call(self.core.read_namespaced_pod, pod, self.namespace) is not None:
            if time.monotonic() > deadline:
                raise BottleError(f"the cluster did not remove pod {pod} within {wait:.0f} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)  # a pod changes state in tenths of a second

    def annotate(self, name: str, key: str, value: str) -> None:
        """Mark the bottle's pod (a place the agent cannot write, as root's files are on Docker)."""
        pod, _ = _target(name)
        self._call(self.core.patch_namespaced_pod, pod, self.namespace, {"metadata": {"annotations": {key: value}}})

    def remove_network(self, name: str) -> None:
        """A bottle's NetworkPolicy (its owner reference would take it with the pod, but not at once)."""
        self._call(self.net.delete_namespaced_network_policy, name, self.namespace)

    # -- running things inside

    def exec(self, name: str, argv: Sequence[str], user: str | None = None, stdin: bytes | None = None,
             workdir: str | None = None, timeout: float | None = None) -> tuple[int, bytes]:
        out = bytearray()
        code = self._exec(name, argv, workdir, stdin, timeout, out.extend, out.extend)
        return code, bytes(out)

    def exec_to(self, name: str, argv: Sequence[str], sink: BinaryIO, user: str | None = None,
                workdir: str | None = None, timeout: float | None = None, limit: int | None = None
                ) -> tuple[int, bytes]:
        err = bytearray()
        return self._exec(name, argv, workdir, None, timeout, limited(sink, limit, argv), err.extend), bytes(err)

    def exec_stream(self, name: str, argv: Sequence[str], user: str, workdir: str, sink) -> int:
        def write(data: bytes) -> None:
            sink.write(data)
            sink.flush()

        if self.container(name) is None:
            return 137
        return self._exec(name, argv, workdir, None, None, write, write)

    def put_archive(self, name: str, path: str, tar: bytes | BinaryIO) -> None:
        data = tar if isinstance(tar, bytes) else tar.read()
        code, out = self.exec(name, ["tar", "-x", "-f", "-", "-C", path, "--no-same-owner"], stdin=data)
        if code != 0:
            raise BottleError(f"copying into {path} in {name} failed: {_one_line(out.decode(errors='replace'))}")

    def get_archive_to(self, name: str, path: str, sink: BinaryIO, limit: int | None = None) -> None:
        folder, _, base = path.rstrip("/").rpartition("/")
        code, err = self.exec_to(name, ["tar", "-c", "-f", "-", "-C", folder or "/", base], sink, limit=limit)
        if code != 0:
            raise BottleError(f"copying {path} out of {name} failed: {_one_line(err.decode(errors='replace'))}")

    def _open_exec(self, name: str, argv: Sequence[str], workdir: str | None, stdin: bool, tty: bool = False):
        pod, container = _target(name)
        if container == "bottle":
            container = self._rescued.get(pod, container)
        command = ["env", "-C", workdir, *argv] if workdir else list(argv)
        ws = self._call(k8s_stream.stream, self._streaming().connect_get_namespaced_pod_exec, pod, self.namespace,
                        container=container, command=command, stdin=stdin, stdout=True, stderr=not tty, tty=tty,
                        _preload_content=False, binary=True)
        if ws is None:
            raise BottleError(f"no bottle container {name}: see `claude-bottle ps`")
        return ws

    def _exec(self, name: str, argv: Sequence[str], workdir: str | None, stdin: bytes | None,
              timeout: float | None, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> int:
        ws = self._open_exec(name, argv, workdir, stdin is not None)
        began = time.monotonic()
        try:
            if stdin is not None:
                _write(ws, stdin)
            while ws.is_open():
                left = None if timeout is None else timeout - (time.monotonic() - began)
                if left is not None and left <= 0:
                    raise ExecTimeout(f"`{' '.join(argv[:3])}` did not finish within {timeout:.0f} s")
                ws.update(timeout=1.0 if left is None else min(left, 1.0))
                _drain(ws, on_stdout, on_stderr)
            _drain(ws, on_stdout, on_stderr)
            return _exit_status(ws)
        except websocket.WebSocketConnectionClosedException:
            return 137  # the stream closed under it: its container ended
        finally:
            ws.close()

    def exec_interactive(self, name: str, argv: Sequence[str], user: str, workdir: str, tty: bool,
                         stdin: bool) -> int:
        """Our stdin to the command, its output to ours (made visible on a terminal). With a terminal the
        command runs in a pseudo-terminal of the cluster's, drawn through our screen filter as on Docker."""
        from . import screen, terminal

        if tty:
            cmd = [sys.executable, "-m", "claude_bottle.kube_tty", name, workdir, *argv]
            with terminal.restored():
                return screen.run(cmd)
        ws = self._open_exec(name, argv, workdir, stdin)
        if stdin:
            threading.Thread(target=_feed, args=(ws, 0), daemon=True).start()
        import codecs

        decoders = {1: codecs.getincrementaldecoder("utf-8")(errors="replace"),
                    2: codecs.getincrementaldecoder("utf-8")(errors="replace")}

        def shown(kind: int) -> Callable[[bytes], None]:
            out = sys.stderr if kind == 2 else sys.stdout

            def show(data: bytes) -> None:
                if out.isatty():
                    out.write(terminal.visible(decoders[kind].decode(data), newlines=True))
                    out.flush()
                else:
                    out.buffer.write(data)
                    out.buffer.flush()
            return show

        try:
            while ws.is_open():
                ws.update(timeout=1.0)
                _drain(ws, shown(1), shown(2))
            _drain(ws, shown(1), shown(2))
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + 13
        except websocket.WebSocketConnectionClosedException:
            return 137  # the stream closed under it: its container ended
        finally:
            ws.close()
        return _exit_status(ws)

    def logs(self, name: str, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]:
        pod, container = _target(name)
        kwargs = {"container": container, "follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if since is not None:
            kwargs["since_seconds"] = max(1, int(since))
        response = self._call(self.core.read_namespaced_pod_log, pod, self.namespace, **kwargs)
        if response is None:
            return
        yield from response.stream(65536)

    # -- finding our objects

    def find(self, labels: Mapping[str, str]) -> list[Found]:
        """Pods (as containers) and NetworkPolicies (as networks) carrying all of `labels`."""
        selector = ",".join(f"{k}={v}" if v else k for k, v in labels.items()
                            if k in _SELECTABLE and _LABEL_VALUE.fullmatch(v) and len(v) <= 63)
        pods = self._call(self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        policies = self._call(self.net.list_namespaced_network_policy, self.namespace, label_selector=selector)
        found = []
        for pod in pods.items if pods else []:
            have = _labels_of(pod.metadata)
            if _matches(have, labels):
                created = pod.metadata.creation_timestamp
                found.append(Found("container", pod.metadata.name, have, _pod_state(pod),
                                   int(created.timestamp()) if created else 0, pod.spec.node_name or ""))
        for policy in policies.items if policies else []:
            have = _labels_of(policy.metadata)
            if _matches(have, labels):
                found.append(Found("network", policy.metadata.name, have))
        return found


# Labels that make good selectors (short values of our own); every label is also kept whole as an annotation.
_SELECTABLE = {LABEL_PREFIX + key for key in ("bottle", "agent", "config", "role")}


def _k8s_labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k in _SELECTABLE and _LABEL_VALUE.fullmatch(v) and len(v) <= 63}


def _labels_of(metadata) -> dict[str, str]:
    return {k: v for k, v in (metadata.annotations or {}).items() if k.startswith(LABEL_PREFIX)}


def _matches(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(k in have and (not v or have[k] == v) for k, v in want.items())


def _pod_state(pod) -> str:
    for c in pod.status.container_statuses or []:
        if c.name == "bottle":
            if c.state and c.state.running:
                return "running"
            if c.state and c.state.terminated:
                return "exited"
    return (pod.status.phase or "created").lower()


_RESCUE = "work"  # the ephemeral container that stands in for a bottle's that has ended (start_container)


def _target(name: str) -> tuple[str, str]:
    if name.endswith(SIDECAR_SUFFIX):
        return name[: -len(SIDECAR_SUFFIX)], "sidecar"
    return name, "bottle"


def _quantity(size: str) -> str:
    return str(size_in_bytes(size))


def _security(uid: int) -> dict:
    return {"runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _memory_volume(name: str, size: str) -> dict:
    return {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def _bottle_resources(bottle: ContainerSpec) -> dict:
    """Limits and requests from the manifest; without a reservation there, what an idle bottle uses."""
    limit = size_in_bytes(bottle.mem_limit)
    memory = size_in_bytes(bottle.mem_reservation) if bottle.mem_reservation else min(
        size_in_bytes(BOTTLE_REQUEST), limit)
    cpu = round((bottle.cpu_reservation or 0.1) * 1000)  # millicores
    limits = {"memory": _quantity(bottle.mem_limit)}
    if bottle.cpus is not None:
        limits["cpu"] = f"{round(bottle.cpus * 1000)}m"
        cpu = min(cpu, round(bottle.cpus * 1000))
    return {"requests": {"memory": str(memory), "cpu": f"{cpu}m"}, "limits": limits}


def _pod(bottle: ContainerSpec, side: ContainerSpec, rules: str, rules_image: str) -> dict:
    """The pod of one bottle, from the two containers Docker would run."""
    (proxy_dir,) = [target for _, target, _ in side.volumes]
    (side_state, side_state_opts), = side.tmpfs.items()
    (secrets_dir, _), = bottle.tmpfs.items()
    bottle_uid = int(bottle.user.split(":")[0])
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": bottle.name, "labels": _k8s_labels(bottle.labels), "annotations": dict(bottle.labels)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "hostname": bottle.hostname or None,
            # Bottles spread over the nodes (a `run --tasks` batch across the cluster, not piled on one node),
            # as far as the nodes' room allows: a preference, never a reason to leave a bottle unscheduled.
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchExpressions": [{"key": LABEL_PREFIX + "bottle", "operator": "Exists"}]},
            }],
            # The workspace on a volume of the pod's: if the bottle's container ends, its work is still there
            # for a container that stands in for it (Cluster.start_container).
            "volumes": [{"name": "proxy", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                        _memory_volume("gate-state", "64Mi"), _memory_volume("secrets", "1Mi"),
                        {"name": "workspace", "emptyDir": {}}],
            "initContainers": [{
                "name": "egress-rules", "image": rules_image, "imagePullPolicy": "IfNotPresent",
                # The workspace volume the bottle's user's, as the image's folder is (git refuses a repository
                # in a folder of another user's).
                "command": ["sh", "-c", f"chmod 0755 {WORKSPACE} && chown {bottle_uid}:{bottle_uid} {WORKSPACE}\n"
                                        + rules],
                "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "CHOWN"]}},
                "resources": {"limits": {"memory": "64Mi"}},
                "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
            }],
            "containers": [
                {"name": "sidecar", "image": side.image, "imagePullPolicy": "IfNotPresent",
                 "stdin": True, "stdinOnce": True,
                 "securityContext": _security(SIDECAR_UID) | {"readOnlyRootFilesystem": True},
                 "resources": {"requests": {"memory": SIDECAR_REQUEST, "cpu": "50m"},
                               "limits": {"memory": _quantity(side.mem_limit)}},
                 "volumeMounts": [{"name": "proxy", "mountPath": proxy_dir},
                                  {"name": "gate-state", "mountPath": side_state}]},
                {"name": "bottle", "image": bottle.image, "imagePullPolicy": "IfNotPresent",
                 "command": list(bottle.command), "workingDir": bottle.working_dir or None,
                 "stdin": True, "stdinOnce": True,
                 "env": [{"name": k, "value": v} for k, v in bottle.environment.items()],
                 "securityContext": _security(bottle_uid),
                 "resources": _bottle_resources(bottle),
                 "volumeMounts": [{"name": "proxy", "mountPath": proxy_dir, "readOnly": True},
                                  {"name": "secrets", "mountPath": secrets_dir},
                                  {"name": "workspace", "mountPath": WORKSPACE}]},
            ],
        },
    }


def _policy(name: str, labels: Mapping[str, str], pod) -> dict:
    """Nothing may connect into the bottle's pod, and it may not reach the metadata address; owned by the pod,
    so the cluster removes it with the pod even if we cannot."""
    role = labels | {LABEL_PREFIX + "role": "policy"}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": _k8s_labels(role), "annotations": dict(role),
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                                          "uid": pod.metadata.uid, "blockOwnerDeletion": False}]},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_PREFIX + "bottle": labels[LABEL_PREFIX + "bottle"],
                                            LABEL_PREFIX + "role": "bottle"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA]}},
                               {"ipBlock": {"cidr": "::/0"}}]}],
        },
    }


def _write(ws, data: bytes) -> None:
    for at in range(0, len(data), _CHUNK):
        ws.write_stdin(data[at:at + _CHUNK])
    if ws.subprotocol != "v5.channel.k8s.io":
        raise ClusterUnavailable("the Kubernetes API does not speak the v5 stream protocol (Kubernetes 1.30 or "
                                 "later), so a container's stdin cannot be closed: upgrade the cluster")
    ws.close_channel(_STDIN)


def _feed(ws, fd: int) -> None:
    try:
        while data := os.read(fd, 65536):
            ws.write_stdin(data)
        ws.close_channel(_STDIN)
    except Exception:  # our stdin closed, or the command ended and its stream with it
        pass


def _drain(ws, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
    out = ws.read_channel(1)
    if out:
        on_stdout(out)
    err = ws.read_channel(2)
    if err:
        on_stderr(err)


def _exit_status(ws) -> int:
    """The command's exit status, from the status the API sends when it ends (137: it ended without one,
    its container gone under it)."""
    raw = ws.read_channel(3)
    if not raw:
        return 137
    try:
        status = json.loads(raw)
    except ValueError:
        return 137
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    raise BottleError(f"the command could not run: {_one_line(status.get('message') or status)}")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def connect(environ: Mapping[str, str], namespace_checked: bool = True) -> Cluster:
    """The cluster of the current kubeconfig context (or CLAUDE_BOTTLE_CONTEXT's), in its namespace (or
    CLAUDE_BOTTLE_NAMESPACE's), checked to answer and, with `namespace_checked`, to have that namespace: in one
    that does not exist, `ps` would show no bottle and `stop` say there is none by that name."""
    context = environ.get(CONTEXT_VARIABLE) or None
    config_file = environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        raise ClusterUnavailable("the kubernetes Python package is not installed: install claude-bottle again "
                                 "(./cli.sh does it when pyproject.toml changes; or pip install kubernetes)") from None
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=config_file)
        if context:
            chosen = [c for c in contexts if c["name"] == context]
            if not chosen:
                raise BottleError(f"--context {context}: no such context in {config_file} (there are: "
                                  f"{', '.join(c['name'] for c in contexts) or 'none'})")
            active = chosen[0]
        api = k8s_config.new_client_from_config(config_file=config_file, context=active["name"])
    except BottleError:
        raise
    except Exception as e:
        raise ClusterUnavailable(f"no usable Kubernetes configuration in {config_file}: {_one_line(e)}: set "
                                 "KUBECONFIG or --context, or use --runtime docker") from None
    namespace = environ.get(NAMESPACE_VARIABLE) or (active.get("context") or {}).get("namespace") or "default"
    cluster = Cluster(api, namespace, active["name"])
    exists = cluster.namespace_exists() if namespace_checked else None  # (also shows that the API answers)
    if exists is False:
        raise cluster.no_namespace()
    if exists is None:  # not asked, or this user may not ask
        cluster._call(cluster.core.list_namespaced_pod, namespace, limit=1)
    return cluster
