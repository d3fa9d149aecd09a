"""A bottle: its launch plan, the containers it runs in, and what goes into them at start.

The plan is plain data (shown by the preflight and by `start --dry-run`) and
names every Docker object the bottle gets. The bottle container has no network
at all; its only way out is the socket its sidecar listens on (sidecar.py).
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cleanup, docker, egress, image, pins, sidecar, ssh, workspace
from .cleanup import LABEL_AGENT, LABEL_BOTTLE, LABEL_CONFIG, LABEL_OWNER, LABEL_ROLE, LABEL_USER, Names, teardown
from .docker import ContainerSpec, Engine, size_in_bytes
from .errors import BottleError
from .manifest import Agent, Bottle, Manifest, ManifestError, ProjectShare, Refusal, refused, state_dir
from .paths import existing_folder
from .workspace import Workspace

TOKEN_VARIABLE = "CLAUDE_BOTTLE_OAUTH_TOKEN"
CLAUDE_TOKEN_VARIABLE = "CLAUDE_CODE_OAUTH_TOKEN"


PROXY_DIR = sidecar.PROXY_DIR
PROXY_HANDOFF = f"{PROXY_DIR}/handoff.sock"  # where the gate takes the proxy port, once
SECRETS_DIR = "/run/claude-bottle/secrets"
PROXY_PORT = 3128  # on the bottle's loopback
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# Every sidecar's way out is a network shared by all of them, on which nothing listens (the gate and pipelock
# listen on a socket and on their loopback only) and whose other containers pipelock's SSRF protection keeps
# them off: Docker's default bridge where it resolves names (see sidecar_network), else one of ours.
DEFAULT_BRIDGE = "bridge"
EGRESS_NETWORK = "claude-bottle-egress"
# Where this machine's own engine listens: only then is its /etc/resolv.conf the one the engine reads.
_LOCAL_ENGINES = (docker.DEFAULT_HOST, "unix:///run/docker.sock")
INIT = image.PID1
DEFAULT_MEMORY = "4g"
DEFAULT_PIDS = 1024


def new_bottle_name(agent: str) -> str:
    """Unique per run, so the same agent can run many times at once."""
    return f"{agent}-{os.urandom(3).hex()}"  # what secrets.token_hex is, without its imports


@dataclass(frozen=True)
class LaunchPlan:
    name: str
    agent: Agent
    bottle: Bottle
    image: image.ImageSpec
    image_base: str
    claude_code_version: str
    allowlist: tuple[egress.AllowedHost, ...]
    token_present: bool
    sidecar_image: image.ImageSpec | None = None
    credentials: tuple[sidecar.CredentialHost, ...] = ()  # where the sidecar puts the user's token
    passthrough: tuple[egress.AllowedHost, ...] = ()  # hosts whose HTTPS the sidecar does not look inside
    workspace: Workspace | None = None  # copied in; a git repository's work comes back as a branch
    mount: Path | None = None  # bind-mounted read-write at /workspace: the user's explicit opt-in
    registry: str | None = None  # on a cluster: where its nodes pull the images from (else they have them)
    image_refs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # tag -> what a node pulls
    project: ProjectShare | None = None  # what the project file wrote of this launch
    record: Path | None = None  # a detached bottle's record folder, once it is to be detached
    refusals: tuple[Refusal, ...] = ()  # what it asks for that an untrusted project file may not have

    @property
    def names(self) -> Names:
        return Names(self.name)

    @property
    def workdir(self) -> str:
        """Where Claude starts: the workspace folder (a subfolder stays at its place in its repository)."""
        return self.workspace.workdir if self.workspace else image.WORKSPACE

    def check_trust(self) -> None:
        """Refuse the launch if it would give an untrusted project file what it may not have."""
        if self.refusals:
            raise refused(self.project.file, self.agent.name, self.refusals)

    def from_project(self, host: egress.AllowedHost) -> bool:
        """Whether the project file put `host` on the allowlist."""
        p = self.project
        return p is not None and (host.host in p.allowlist or host.host in p.passthrough
                                  or any(entry.split(":")[0] == host.host for entry in p.private_hosts)
                                  or (host.reason == "ANTHROPIC_BASE_URL" and "ANTHROPIC_BASE_URL" in p.env)
                                  or (host.reason.startswith("ssh ") and host.reason[4:] in p.ssh))

    def to_json(self, image_present: bool | None = None, network: str = EGRESS_NETWORK) -> dict:
        """The plan as JSON-ready data: names, kinds and sources, never a secret value."""
        n = self.names
        p = self.project
        return {
            "bottle": n.bottle,
            "agent": {"name": self.agent.name, "file": _str(self.agent.file), "model": self.agent.model},
            "bottle_config": {
                "name": self.bottle.name,
                "trusted": self.bottle.trusted,
                "files": [str(f) for f in self.bottle.files],
            },
            "image": {
                "tag": self.image.tag,
                "registry": self.registry,
                "pulled_as": dict(self.image_refs),
                "base": self.image_base,
                "claude_code_version": self.claude_code_version,
                "present": image_present,
            },
            "containers": [
                {"name": n.container, "role": "bottle", "image": self.image.tag, "network": "none",
                 "user": image.BOTTLE_USER},
                {"name": n.sidecar, "role": "sidecar", "image": self.sidecar_image.tag if self.sidecar_image else None,
                 "network": network},
            ],
            "networks": [{"name": network, "role": "egress", "shared": True}],
            "volumes": [{"name": n.proxy_volume, "role": "proxy-socket"}],
            "sidecar": {"name": n.sidecar, "image": self.sidecar_image.tag if self.sidecar_image else None,
                        "pipelock": pins.PIPELOCK_IMAGE,
                        "token_to": [f"{c.host}:{c.port}" for c in self.credentials],
                        "passthrough": [asdict(h) for h in self.passthrough]},
            "project": None if p is None else {
                "file": str(p.file), "trusted": p.trusted_by or False, "agent": p.agent, "replaces": p.replaces,
                "bottle": p.bottle},
            "env": [{"name": v.name, "source": v.kind, "from": v.source if v.kind == "host" else None,
                     "project": v.name in p.env if p else False} for v in self.bottle.env],
            "skills": [{"name": s.name, "path": str(s.path), "project": bool(p and p.agent)}
                       for s in self.agent.skills],
            "ssh": [{"host": s.host, "hostname": s.hostname, "port": s.port, "user": s.user,
                     "project": s.host in p.ssh if p else False} for s in self.bottle.ssh],
            "allowlist": [asdict(h) | {"project": self.from_project(h)} for h in self.allowlist],
            "refusals": [{"field": r.field, "reason": r.reason} for r in self.refusals],
            "prompt": {"length": len(self.agent.prompt), "lines": self.agent.prompt_lines,
                       "first_line": self.agent.prompt_first_line, "project": bool(p and p.agent)},
            "token": {"variable": TOKEN_VARIABLE, "present": self.token_present},
            "workspace": None if self.workspace is None else {
                "path": str(self.workspace.path), "git": self.workspace.is_git,
                "results_branch": self.workspace.branch},
            "mount": _str(self.mount),
        }


def _check_reserve(b: Bottle) -> None:
    """A reservation above the limit is refused by a cluster (and means nothing on Docker): say so up front."""
    where = f"bottles.{b.name}.resources.reserve"
    limit = b.memory or DEFAULT_MEMORY
    if b.reserve_memory and size_in_bytes(b.reserve_memory) > size_in_bytes(limit):
        raise ManifestError(f"{b.reserve_memory} is more than the memory limit ({limit}): reserve at most that",
                            b.files[-1], f"{where}.memory")
    if b.reserve_cpus and b.cpus and b.reserve_cpus > b.cpus:
        raise ManifestError(f"{b.reserve_cpus} is more than the CPU limit ({b.cpus}): reserve at most that",
                            b.files[-1], f"{where}.cpus")


def plan(manifest: Manifest, agent_name: str, environ: Mapping[str, str], workspace_dir: Path | None = None,
         results: bool = True, mount: Path | None = None) -> LaunchPlan:
    """Decide everything about a launch of `agent_name`; reads files, creates nothing."""
    agent = manifest.agent(agent_name)
    bottle = manifest.bottle_of(agent)
    name = new_bottle_name(agent.name)
    if workspace_dir is not None and mount is not None:
        raise BottleError("--workspace and --mount both fill /workspace: choose one")
    if mount is not None:
        mount = existing_folder(mount, "--mount")
        if not mount.is_dir():
            raise BottleError(f"--mount {mount}: no such directory: name an existing folder to mount")
        _check_writable_by_bottle(mount)
    _check_reserve(bottle)
    share = manifest.share(agent)
    api_base_url = bottle.api_base_url(environ)
    # Only a gateway the home manifest names gets the user's token; a project's (even allowed) keeps the
    # placeholder.
    credentials = sidecar.credential_hosts(api_base_url, from_home=not (share and "ANTHROPIC_BASE_URL" in share.env))
    allowed = egress.allowlist(bottle, api_base_url)
    passthrough: dict[str, egress.AllowedHost] = {}
    for h in [egress.AllowedHost(c.host, ("the sidecar adds your token" if c.inject else
                                          "Claude Code's gateway, sent the placeholder, not your token")
                                 + ("" if c.tls else "; plain HTTP")) for c in credentials] + \
            [egress.AllowedHost(h, "egress.passthrough") for h in bottle.passthrough] + \
            [egress.AllowedHost(h, "a download host, its answers too big to inspect")
             for h in egress.download_hosts(allowed)]:
        passthrough.setdefault(h.host, h)
    bottle_image, sidecar_image = image.spec(manifest.image), sidecar.spec(manifest.image)
    return LaunchPlan(
        name=name,
        workspace=workspace.inspect(workspace_dir, agent.name, name, results) if workspace_dir else None,
        mount=mount,
        agent=agent,
        bottle=bottle,
        image=bottle_image,
        image_base=manifest.image.base,
        claude_code_version=manifest.image.claude_code_version,
        allowlist=allowed,
        token_present=bool(environ.get(TOKEN_VARIABLE)),
        sidecar_image=sidecar_image,
        registry=manifest.image.registry,
        image_refs={spec.tag: image.in_registry(spec.tag, manifest.image.registry, state_dir(environ))
                    for spec in (bottle_image, sidecar_image)}
        if manifest.image.registry else {},
        credentials=credentials,
        passthrough=tuple(passthrough.values()),
        project=share,
        refusals=tuple(manifest.refusals(agent)),
    )


def _check_writable_by_bottle(folder: Path) -> None:
    """A bind mount keeps the host's owners, and the bottle's user is uid 1000: refuse a folder it could
    not write (Docker Desktop maps owners itself, so only Linux hosts are checked)."""
    if not sys.platform.startswith("linux"):
        return
    st = folder.stat()
    if st.st_uid == image.BOTTLE_UID or st.st_mode & 0o002 or (st.st_gid == image.BOTTLE_UID and st.st_mode & 0o020):
        return
    raise BottleError(f"--mount {folder}: owned by uid {st.st_uid}, so the bottle's user (uid {image.BOTTLE_UID}) "
                      f"could not write to it: use --workspace (a copy whose work comes back), or give uid "
                      f"{image.BOTTLE_UID} write access to the folder")


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------- Docker objects


def labels(plan: LaunchPlan, role: str, owner: str) -> dict[str, str]:
    found = {LABEL_BOTTLE: plan.name, LABEL_AGENT: plan.agent.name, LABEL_CONFIG: plan.bottle.name,
             LABEL_ROLE: role, LABEL_OWNER: owner, LABEL_USER: cleanup.current_user()}
    if plan.record is not None:
        found[cleanup.LABEL_RECORD] = str(plan.record)
    return found


def proxy_environment() -> dict[str, str]:
    """Every HTTP client in the bottle goes through the sidecar; only loopback is direct."""
    env = {"HTTP_PROXY": PROXY_URL, "HTTPS_PROXY": PROXY_URL, "NO_PROXY": "localhost,127.0.0.1,::1"}
    return env | {k.lower(): v for k, v in env.items()}


def trust_environment() -> dict[str, str]:
    """Every TLS client in the bottle trusts the system's CAs and the bottle's own (the sidecar's, which
    it inspects HTTPS with): curl, git, Node.js and Claude Code, Python's requests and pip."""
    bundle = sidecar.CA_BUNDLE
    return {name: bundle for name in ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE",
                                      "PIP_CERT", "NODE_EXTRA_CA_CERTS")}


def bottle_container(plan: LaunchPlan, owner: str) -> ContainerSpec:
    """The bottle: no network, no capabilities, no privilege gain, and a loopback port the sidecar's gate
    accepts on. Its main process (bottle-init) unpacks what it is given on stdin at start, then hands that
    port's listening socket to the gate, over the gate's handoff socket in the proxy folder."""
    return ContainerSpec(
        name=plan.names.container,
        image=plan.image.tag,
        command=(*INIT, "bottle-init", str(PROXY_PORT), PROXY_HANDOFF),
        init=False,
        # The workspace's way back, so that any process (`stop`, a later `start`) can bring the work back.
        labels=labels(plan, "bottle", owner) | workspace.labels(plan.workspace),
        user=f"{image.BOTTLE_UID}:{image.BOTTLE_UID}",
        network_mode="none",
        hostname=plan.name,
        working_dir=image.WORKSPACE,  # a subfolder's workdir exists only once the workspace is copied in
        environment=proxy_environment() | trust_environment()
        | ({"SSH_AUTH_SOCK": ssh.AGENT_SOCKET} if plan.bottle.ssh else {}),
        mem_limit=plan.bottle.memory or DEFAULT_MEMORY,
        pids_limit=plan.bottle.pids or DEFAULT_PIDS,
        cpus=plan.bottle.cpus,
        mem_reservation=plan.bottle.reserve_memory,
        cpu_reservation=plan.bottle.reserve_cpus,
        volumes=((plan.names.proxy_volume, PROXY_DIR, True),),
        binds=((str(plan.mount), image.WORKSPACE, False),) if plan.mount else (),
        tmpfs={SECRETS_DIR: f"size=1m,mode=0700,uid={image.BOTTLE_UID},gid={image.BOTTLE_UID}"},
        stdin_open=True,
    )


def secrets_file(values: Mapping[str, str]) -> bytes:
    """The bottle's secret environment as `export NAME='value'` lines for bottle-exec to source."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items()).encode()


# Claude Code reads these settings before any other and lets nothing outrank them: the place to pin what a
# workspace's own .claude/settings.json (which a cloned repository writes) could otherwise change.
MANAGED_SETTINGS = "/etc/claude-code/managed-settings.json"
# Where that file leads, in the image: the sidecar writes it into the proxy volume, which the bottle mounts
# read-only (the agent's user owns everything it could write).
MANAGED_SETTINGS_FILE = "managed-settings.json"
# The variables that send Claude Code's token elsewhere or swap its credential, pinned to what the manifest
# gives them (or to Claude Code's defaults), and the settings that run a program to fetch a credential.
PINNED_ENV = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_CUSTOM_HEADERS")
CREDENTIAL_HELPERS = ("apiKeyHelper",)


def managed_settings(bottle: Bottle, env: Mapping[str, str]) -> dict:
    """Claude Code's managed settings for this bottle. A variable whose value is a secret is left to the
    process environment (the file lands on Docker's disk); the others are pinned to their value."""
    pinned = {"ANTHROPIC_BASE_URL": "https://api.anthropic.com", "ANTHROPIC_AUTH_TOKEN": "",
              "ANTHROPIC_API_KEY": "", "ANTHROPIC_CUSTOM_HEADERS": ""} | proxy_environment()
    secret = set(bottle.secret_names)
    for name in PINNED_ENV:
        if name in secret:
            del pinned[name]
        elif name in env:
            pinned[name] = env[name]
    return {helper: "" for helper in CREDENTIAL_HELPERS} | {"env": pinned}


def bottle_input(agent: Agent | None, secrets: bytes) -> bytes:
    """What bottle-init unpacks at start, as the bottle's user: a tar of the agent's skills and prompt in its
    home, and `secrets` (secrets_file's) in the secrets tmpfs. It travels on the container's stdin: never a
    file, an argument or a log."""
    import tarfile

    home = image.BOTTLE_HOME.lstrip("/")
    buf = io.BytesIO()

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return image.owned(info) if info.isfile() or info.isdir() or info.issym() else None

    def add(path: str, data: bytes, mode: int = 0o644) -> None:
        info = owned(tarfile.TarInfo(path))
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for skill in agent.skills if agent else ():
            tar.add(skill.path, arcname=f"{home}/.claude/skills/{skill.name}", filter=owned)
        if agent and agent.prompt:
            add(f"{home}/.config/claude-bottle/prompt.md", agent.prompt.encode())
        add(f"{SECRETS_DIR.lstrip('/')}/env", secrets, 0o600)
    return buf.getvalue()


# ---------------------------------------------------------------- lifecycle


def launch(engine: Engine, plan: LaunchPlan, env: Mapping[str, str], token: str, owner: str,
           ssh_keys: Mapping[str, bytes] | None = None) -> None:
    """Create the bottle and its sidecar, and fill them; on any failure (Ctrl-C included) remove whatever
    was made, by label, before the error goes on.

    `env` holds the bottle's variables with their values. The bottle gets a placeholder for the token; the
    token goes to the sidecar only, on its stdin. The sidecar blocks the values that came from the host or
    were asked for. `ssh_keys` (by Host) go to the bottle's agent."""
    n = plan.names
    placeholder = sidecar.placeholder()
    blocked = [env[name] for name in plan.bottle.secret_names] + [token]
    ssh_hosts = sorted({h.hostname for h in plan.bottle.ssh})
    config = sidecar.gate_config(
        egress.pipelock_config([h.host for h in plan.allowlist], plan.bottle.private_hosts,
                               [h.host for h in plan.passthrough]),
        blocked, token, placeholder, plan.credentials, egress.private_ports(plan.bottle.private_hosts),
        plan.bottle.ca_cert.read_text(errors="replace") if plan.bottle.ca_cert else "",
        egress.pipelock_config(ssh_hosts, plan.bottle.private_hosts, for_ssh=True) if ssh_hosts else None,
        [f"{h.hostname}:{h.port}" for h in plan.bottle.ssh],
        {MANAGED_SETTINGS_FILE: json.dumps(managed_settings(plan.bottle, env), indent=2)},
        [h.host for h in plan.passthrough])
    bottle_files = bottle_input(plan.agent, secrets_file({**env, CLAUDE_TOKEN_VARIABLE: placeholder}))
    if engine.kind == "kubernetes":
        _launch_pod(engine, plan, owner, config, bottle_files, ssh_keys or {})
        return
    network = sidecar_network(engine)
    try:
        engine.create_volume(n.proxy_volume, labels(plan, "proxy-socket", owner))
        # The sidecar's start and the bottle's filling do not depend on each other: overlap them (in
        # threads of our own: concurrent.futures costs every start a few ms to import).
        _together([lambda: _start_sidecar(engine.clone(), plan, owner, config, network),
                   lambda: _fill_bottle(engine.clone(), plan, owner, bottle_files, ssh_keys or {})])
    except BaseException:
        teardown(engine, plan.name)
        raise


def _together(steps: list) -> None:
    """Run `steps` at once; once all have ended (even on Ctrl-C, so that nothing is created after a
    teardown that follows), raise the failure of the first in the list that failed."""
    failed: list[BaseException | None] = [None] * len(steps)

    def run(i: int) -> None:
        try:
            steps[i]()
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            failed[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(steps))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        for thread in threads:
            thread.join()
    for error in failed:
        if error is not None:
            raise error


def _start_sidecar(engine: Engine, plan: LaunchPlan, owner: str, config: bytes, network: str) -> None:
    n = plan.names
    engine.create_container(sidecar.container(n.sidecar, plan.sidecar_image.tag, network,
                                              labels(plan, "sidecar", owner), n.proxy_volume))
    said = engine.start_with_input(n.sidecar, config, timeout=sidecar.READY_SECONDS)
    if said != "ready":
        raise BottleError(f"the egress sidecar did not start: {said or 'it exited without a word'}")


def _fill_bottle(engine: Engine, plan: LaunchPlan, owner: str, files: bytes, ssh_keys: Mapping[str, bytes]) -> None:
    n = plan.names
    engine.create_container(bottle_container(plan, owner))
    said = engine.start_with_input(n.container, files, timeout=sidecar.READY_SECONDS)
    if said != "ready":
        raise BottleError(f"the bottle did not start: {said or 'it exited without a word'}")
    if plan.bottle.ssh:
        ssh.setup(engine, n.container, plan.bottle.ssh, ssh_keys, PROXY_PORT)


def _launch_pod(cluster, plan: LaunchPlan, owner: str, config: bytes, files: bytes,
                ssh_keys: Mapping[str, bytes]) -> None:
    """The same bottle as one pod (kube.py says how it is closed off); removed again on any failure."""
    from . import kube

    if plan.mount is not None:
        raise BottleError("--mount binds a folder of this machine, which a cluster's node does not have: use "
                          "--workspace (a copy whose work comes back), or --runtime docker")
    n = plan.names
    def pulled(tag: str) -> str:
        return plan.image_refs.get(tag, tag)

    side = sidecar.container(n.sidecar, pulled(plan.sidecar_image.tag), "", labels(plan, "sidecar", owner),
                             n.proxy_volume)
    closed = [int(address.rsplit(":", 1)[1]) for address in (egress.PIPELOCK_LISTEN, egress.METRICS_LISTEN,
                                                             egress.SSH_PIPELOCK_LISTEN, egress.SSH_METRICS_LISTEN)]
    try:
        said_sidecar, said_bottle = cluster.launch_pod(
            dataclasses.replace(bottle_container(plan, owner), image=pulled(plan.image.tag)), side,
            kube.egress_rules(closed), pulled(plan.image.tag),
            files, config, timeout=sidecar.READY_SECONDS)
        if said_sidecar != "ready":
            raise BottleError(f"the egress sidecar did not start: {said_sidecar or 'it exited without a word'}")
        if said_bottle != "ready":
            raise BottleError(f"the bottle did not start: {said_bottle or 'it exited without a word'}")
        if plan.bottle.ssh:
            ssh.setup(cluster, n.container, plan.bottle.ssh, ssh_keys, PROXY_PORT)
    except BaseException:
        teardown(cluster, plan.name)
        raise


def ensure_network(engine: Engine) -> None:
    """Our own egress network, made by the first launch that needs it."""
    engine.ensure_network(EGRESS_NETWORK, {LABEL_ROLE: "egress-network"})


def sidecar_network_for(host: str, resolv_conf: str = "/etc/resolv.conf") -> str:
    """The network sidecars go on, for the engine at `host` (see sidecar_network).

    A container starts some 50 ms faster on Docker's default bridge than on a network of ours, where the
    engine sets up its embedded DNS server in each container. But on the default bridge a container gets
    the host's resolvers minus those on loopback, and when none is left Google's public ones, which a
    network that allows only its own resolver refuses; on a network of ours the embedded server forwards
    to the host's resolvers wherever they are. So: the default bridge only when the engine is this
    machine's and this machine has a resolver off loopback (IPv4: the bridge has no IPv6 by default)."""
    if host not in _LOCAL_ENGINES:
        return EGRESS_NETWORK
    try:
        text = Path(resolv_conf).read_text(errors="replace")
    except OSError:
        return EGRESS_NETWORK
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            if address.version == 4 and not (address.is_loopback or address.is_unspecified):
                return DEFAULT_BRIDGE
    return EGRESS_NETWORK


def planned_sidecar_network(environ: Mapping[str, str]) -> str:
    """What sidecar_network will most likely say, without asking the engine (for a dry run)."""
    return sidecar_network_for(environ.get("DOCKER_HOST") or docker.DEFAULT_HOST)


def sidecar_network(engine: Engine) -> str:
    """The network this engine's sidecars go on, made if it is ours and missing. An engine run without a
    default bridge (`"bridge": "none"`) gets ours."""
    if sidecar_network_for(engine.host) == DEFAULT_BRIDGE and engine.network_exists(DEFAULT_BRIDGE):
        return DEFAULT_BRIDGE
    ensure_network(engine)
    return EGRESS_NETWORK


def ensure_pipelock_image(engine: Engine, ref: str) -> None:
    """Pull the pinned pipelock image unless it is already here."""
    if engine.image_exists(ref):
        return
    try:
        engine.pull_image(ref)
    except BottleError as e:
        raise BottleError(
            f"the egress sidecar's pipelock image {ref} is not here and pulling it failed ({e}): check your "
            "network, or on a machine without a registry build it with scripts/offline-images.sh pipelock"
        ) from None


def egress_report(engine: Engine, name: str) -> str:
    """The sidecar's egress report for bottle `name` (JSON, secret values redacted by the gate)."""
    code, out = engine.exec(Names(name).sidecar, sidecar.report_command(), timeout=30)
    if code != 0:
        raise BottleError(f"reading the egress report of '{name}' failed: {out.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def out_of_memory(engine: Engine, name: str) -> bool:
    """Whether the kernel killed a process of bottle `name` for its memory limit (Docker marks the container
    only when its main process dies; the cgroup counts every kill)."""
    state = engine.container(Names(name).container)
    if state is None or state.oom_killed:
        return state is not None
    try:
        _, out = engine.exec(Names(name).container, ["cat", "/sys/fs/cgroup/memory.events",
                                                     "/sys/fs/cgroup/memory/memory.oom_control"], timeout=10)
    except BottleError:
        return False
    return any(line.split()[:1] == ["oom_kill"] and line.split()[1:2] != ["0"]
               for line in out.decode(errors="replace").splitlines())


def stop_claude(engine: Engine, name: str) -> None:
    """Ask Claude in bottle `name` to end (SIGTERM), so that its session finishes and brings the work back."""
    try:
        engine.exec(Names(name).container, ["pkill", "-TERM", "-f", "--", "--dangerously-skip-permissions"],
                    user=image.BOTTLE_USER, timeout=10)
    except BottleError:
        pass  # already gone


def _check(result: tuple[int, bytes], what: str) -> None:
    code, out = result
    if code != 0:
        raise BottleError(f"{what} failed (exit {code}): {out.decode(errors='replace').strip()[-500:]}")
