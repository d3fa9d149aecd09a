"""Reads claude-bottle.json (home and project) into frozen dataclasses.

Owns the format, its validation and error messages, finding the project file,
the home/project merge, what an untrusted project file may not do (reach a
host secret, redirect the user's token, replace or reuse what the home file
defines), and the three kinds of env value. Reading never resolves a secret:
see `resolve_env`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit


from . import lazy, pins, trust
from .errors import ManifestError
# home_dir and state_dir are also named as manifest.home_dir and manifest.state_dir elsewhere.
from .paths import MAX_CA_BYTES, MAX_MANIFEST_BYTES, home_dir, not_json, read_small, state_dir
from .terminal import visible

difflib = lazy.Module("difflib")  # for "did you mean", on a mistake only

MANIFEST_NAME = "claude-bottle.json"
DEFAULT_AGENT = "default"
DEFAULT_BOTTLE = "default"

# Set by claude-bottle itself; a manifest that sets them would break the bottle or its egress.
RESERVED_ENV = frozenset(
    {"CLAUDE_CODE_OAUTH_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)
NOT_SECRET = frozenset({"ANTHROPIC_BASE_URL"})
# Variables that change where Claude Code sends its requests and the user's token, which credential or
# provider it uses, which CAs, proxies and name resolution it trusts, or where it reads its settings: Claude
# Code's own list of sensitive names (read from its 2.1.332 binary), widened to whole prefixes. Only the
# home manifest, or a project file the user allowed, may set them.
_TOKEN_ROUTING = "|".join([
    r"ANTHROPIC_\w+",
    r"_?CLAUDE_CODE_\w*BASE_URL", r"CLAUDE_CODE_USE_\w+", r"CLAUDE_CODE_SKIP_\w+_AUTH", r"CLAUDE_CODE_SIMPLE",
    r"CLAUDE_CODE_\w*(OAUTH|HOST_AUTH|FEDERATION|FILE_DESCRIPTOR)\w*", r"CLAUDE_CODE_\w*_TOKEN(_\w+)?",
    r"CLAUDE_CODE_API_KEY\w*",
    r"CLAUDE_CODE_(CUSTOM_OAUTH_URL|GATEWAY_\w+|HOST_\w+|PROVIDER_MANAGED_BY_HOST|REMOTE\w*|RUNNER_MODEL_SOCKET)",
    r"CLAUDE_CODE_(MODEL_CATALOG_URL|EXTRA_BODY|EXTRA_METADATA|DISABLE_REDIRECT_CHECK|ENABLE_TELEMETRY)",
    r"CLAUDE_CODE_(\w*CERT\w*|CLIENT_\w+|PROXY_\w*|HTTPS?_PROXY|(EN|DIS)ABLE_(PROXY|HTTPS)_\w*)",
    r"CLAUDE_CODE_(MANAGED_SETTINGS_PATH|REMOTE_SETTINGS_PATH|DISABLE_ADMIN_ENV_UNION|MOCK_REMOTE_SETTINGS)",
    r"CLAUDE_(BRIDGE|LOCAL)_\w+", r"CLAUDE_\w*BRIDGE\w*_URL", r"CLAUDE_SESSION_INGRESS_TOKEN_FILE",
    r"SESSION_INGRESS_URL", r"CLAUDE_CONFIG_DIR", r"CLAUDE_SECURESTORAGE_CONFIG_DIR", r"USE_(LOCAL|STAGING)_OAUTH",
    r"LOCAL_BRIDGE", r"(?i:(HTTPS?|ALL|NO|GRPC)_PROXY)", r"NPM_CONFIG_\w*PROXY",
    r"SSL_CERT_(DIR|FILE)", r"NODE_EXTRA_CA_CERTS", r"NODE_TLS_\w+", r"NODE_OPTIONS", r"NODE_USE_ENV_PROXY",
    r"BUN_\w+", r"CURL_CA_BUNDLE", r"REQUESTS_CA_BUNDLE", r"AWS_CA_BUNDLE",
    r"HOSTALIASES", r"LOCALDOMAIN", r"RES_OPTIONS", r"LD_\w+", r"HOME", r"XDG_CONFIG_HOME",
    r"OTEL_\w+",
    # What runs before the agent does: the programs a bottle starts, and the shell's and git's start-up.
    r"PATH", r"BASH_ENV", r"ENV", r"SHELL", r"CLAUDE_ENV_FILE", r"CLAUDE_CODE_SHELL\w*", r"GIT_\w+",
    r"(?i:npm_config_\w+)",
])  # compiled on first use (re caches it): most manifests name no variable, and it costs a start 2 ms


def routes_token(name: str) -> bool:
    """Whether setting `name` can send Claude Code's requests or the user's token elsewhere, or swap its
    credential (see _TOKEN_ROUTING)."""
    return re.fullmatch(_TOKEN_ROUTING, name) is not None


_HOST_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # fullmatch: `$` would let "${X}\n" through


@dataclass(frozen=True)
class EnvVar:
    """One variable of a bottle. `kind` is literal, host or prompt; `source` is the literal
    value, the host variable's name or the question. Never print `source` of a literal."""

    name: str
    kind: str
    source: str = field(repr=False)
    field_path: str
    file: Path | None = None

    def describe(self) -> str:
        """How the value arrives, without the value."""
        if self.kind == "host":
            return f"from host ${self.source}"
        if self.kind == "prompt":
            return "asked at launch"
        return "set in manifest"


@dataclass(frozen=True)
class SshHost:
    host: str
    hostname: str
    user: str | None
    port: int
    identity_file: Path
    known_host_key: str
    field_path: str = ""


@dataclass(frozen=True)
class PrivateHost:
    """A host on a private network the sidecar may reach, on one port, or on every port when `port` is None."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Bottle:
    name: str
    env: tuple[EnvVar, ...] = ()
    ssh: tuple[SshHost, ...] = ()
    allowlist: tuple[str, ...] = ()
    trusted: bool = True
    files: tuple[Path, ...] = ()
    memory: str | None = None
    pids: int | None = None
    cpus: float | None = None
    reserve_memory: str | None = None  # what a cluster's scheduler sets aside (Kubernetes requests)
    reserve_cpus: float | None = None
    private_hosts: tuple[PrivateHost, ...] = ()
    passthrough: tuple[str, ...] = ()  # hosts the sidecar does not look inside (HTTPS judged by name only)
    ca_cert: Path | None = None  # more CAs the sidecar trusts for the servers it reaches

    @property
    def host_refs(self) -> tuple[EnvVar, ...]:
        return tuple(v for v in self.env if v.kind == "host")

    @property
    def secret_names(self) -> list[str]:
        """Variables whose values the sidecar blocks in requests: those from the host or asked for.
        An API endpoint is not a secret, and blocking it would block every call to it."""
        return [v.name for v in self.env if v.kind != "literal" and v.name not in NOT_SECRET]

    def literal(self, name: str) -> str | None:
        return next((v.source for v in self.env if v.name == name and v.kind == "literal"), None)

    def api_base_url(self, environ: Mapping[str, str]) -> str | None:
        """ANTHROPIC_BASE_URL as the bottle will get it (not a secret: the sidecar must know its host)."""
        var = next((v for v in self.env if v.name == "ANTHROPIC_BASE_URL"), None)
        if var is None:
            return None
        return var.source if var.kind == "literal" else environ.get(var.source)

    @property
    def host_secrets(self) -> list[str]:
        """What the bottle would take from the host: variables it copies and SSH key files."""
        return [f"${v.source}" for v in self.host_refs] + [str(s.identity_file) for s in self.ssh]


@dataclass(frozen=True)
class Skill:
    name: str
    path: Path
    field_path: str = ""


@dataclass(frozen=True)
class Agent:
    name: str
    bottle: str
    skills: tuple[Skill, ...] = ()
    prompt: str = ""
    file: Path | None = None
    model: str | None = None  # Claude Code's --model for this agent

    @property
    def prompt_first_line(self) -> str:
        return next((line.strip() for line in self.lines() if line.strip()), "")

    @property
    def prompt_lines(self) -> int:
        return len(self.lines())

    def lines(self) -> list[str]:
        """The prompt's lines, split at newlines only: a carriage return or other separator inside
        a line stays in it (and is shown escaped), as Claude reads it."""
        return self.prompt.removesuffix("\n").split("\n") if self.prompt else []


@dataclass(frozen=True)
class ImageSettings:
    base: str = pins.BASE_IMAGE
    claude_code_version: str = pins.CLAUDE_CODE_VERSION
    ca_cert: Path | None = None
    registry: str | None = None  # where a cluster's nodes pull the images from: `build --push` puts them there


@dataclass(frozen=True)
class Project:
    """The project's manifest: where it is, what exactly it says, and whether the user allowed that."""

    path: Path
    digest: str  # sha256 of the bytes that were read and parsed
    trusted_by: str  # "claude-bottle trust", "--trust-project", or "" while untrusted
    bottles: Mapping[str, Bottle]  # as this file alone defines them
    agents: Mapping[str, Agent]

    @property
    def trusted(self) -> bool:
        return bool(self.trusted_by)


@dataclass(frozen=True)
class ProjectShare:
    """What of one launch the project file wrote: shown, marked, in the preflight."""

    file: Path
    trusted_by: str
    agent: bool  # the agent (its prompt and skills) is the project's
    replaces: str | None  # "the built-in agent 'default'" and the like, when the project's agent replaces one
    bottle: bool  # the project defines or changes the bottle
    env: frozenset[str] = frozenset()
    ssh: frozenset[str] = frozenset()
    allowlist: frozenset[str] = frozenset()
    private_hosts: frozenset[str] = frozenset()  # as written: host or host:port
    passthrough: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Refusal:
    """Something an untrusted project file asks for that it may not have."""

    field: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    agents: Mapping[str, Agent]
    bottles: Mapping[str, Bottle]
    image: ImageSettings
    files: tuple[Path, ...]
    project: Project | None = None
    # What the built-in and home manifests define, by name: the file, or None for a built-in one.
    home_agents: Mapping[str, Path | None] = field(default_factory=dict)
    home_bottles: Mapping[str, Path | None] = field(default_factory=dict)
    skills_dir: Path | None = None

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            where = ", ".join(map(str, self.files)) or "no manifest found"
            raise ManifestError(
                f"no agent named '{name}'{did_you_mean(name, self.agents)} (agents: {known}; read from {where})"
            ) from None

    def bottle_of(self, agent: Agent) -> Bottle:
        return self.bottles[agent.bottle]

    # -- what came from the project file

    def agent_from_project(self, agent: Agent) -> bool:
        return self.project is not None and agent.name in self.project.agents

    def project_part(self, bottle: Bottle) -> Bottle | None:
        """What the project file says about `bottle`, if anything."""
        return None if self.project is None else self.project.bottles.get(bottle.name)

    def share(self, agent: Agent) -> ProjectShare | None:
        """What the project file contributes to launching `agent` (None: nothing)."""
        p = self.project
        if p is None:
            return None
        mine = p.bottles.get(agent.bottle)
        from_project = agent.name in p.agents
        if not from_project and mine is None:
            return None
        replaced = self.home_agents.get(agent.name, False) if from_project else False
        return ProjectShare(
            file=p.path, trusted_by=p.trusted_by, agent=from_project,
            replaces=None if replaced is False else f"{_whose(replaced)} agent '{agent.name}'",
            bottle=mine is not None,
            env=frozenset(v.name for v in mine.env) if mine else frozenset(),
            ssh=frozenset(s.host for s in mine.ssh) if mine else frozenset(),
            allowlist=frozenset(mine.allowlist) if mine else frozenset(),
            private_hosts=frozenset(str(h) for h in mine.private_hosts) if mine else frozenset(),
            passthrough=frozenset(mine.passthrough) if mine else frozenset(),
        )

    def refusals(self, agent: Agent) -> list[Refusal]:
        """What launching `agent` would take from an untrusted project file that it may not have:
        host secrets, a redirected token, private networks, a home agent or bottle replaced or reused,
        skills from outside the project's folder. Empty when there is no project file or it is trusted."""
        p = self.project
        if p is None or p.trusted:
            return []
        found: list[Refusal] = []
        bottle = self.bottle_of(agent)
        mine = p.bottles.get(bottle.name)
        if self.agent_from_project(agent):
            if agent.name in self.home_agents:
                found.append(Refusal(f"agents.{agent.name}",
                                     f"replaces {_whose(self.home_agents[agent.name])} agent '{agent.name}'"))
            # A home bottle grants what an untrusted file may not ask for itself: values, keys, private
            # addresses, trusted certificates.
            if mine is None and (bottle.env or bottle.ssh or bottle.private_hosts or bottle.ca_cert is not None):
                held = [f"${v.source}" if v.kind == "host" else v.name for v in bottle.env] + \
                    [str(s.identity_file) for s in bottle.ssh] + \
                    [f"private host {h}" for h in bottle.private_hosts] + \
                    ([f"the certificates in {bottle.ca_cert}"] if bottle.ca_cert is not None else [])
                found.append(Refusal(f"agents.{agent.name}.bottle",
                                     f"puts a project agent in your home bottle '{bottle.name}', which holds values "
                                     f"of your home manifest ({', '.join(held)})"))
            found += [Refusal(s.field_path, f"skill {s.path} is outside the project's folder "
                                            f"({p.path.parent}) and {self.skills_dir}")
                      for s in agent.skills if not _inside(s.path, p.path.parent, self.skills_dir)]
        if mine is not None:
            if bottle.name in self.home_bottles:
                found.append(Refusal(f"bottles.{bottle.name}",
                                     f"changes {_whose(self.home_bottles[bottle.name])} bottle '{bottle.name}'"))
            for v in mine.env:
                if v.kind == "host":
                    found.append(Refusal(v.field_path, f"copies the host variable ${v.source}"))
                if routes_token(v.name):
                    found.append(Refusal(v.field_path, "changes where Claude Code sends your token, which "
                                                       "credential it uses, or what runs before it"))
            found += [Refusal(f"{s.field_path}.IdentityFile", f"reads your SSH key {s.identity_file}")
                      for s in mine.ssh]
            if mine.ca_cert is not None:
                found.append(Refusal(f"bottles.{bottle.name}.egress.ca_cert",
                                     f"makes the sidecar trust the certificates in {mine.ca_cert}"))
            if mine.private_hosts:
                found.append(Refusal(f"bottles.{bottle.name}.egress.private_hosts",
                                     f"opens private addresses past the sidecar's SSRF protection "
                                     f"({', '.join(map(str, mine.private_hosts))})"))
        return found



def refused(file: Path, agent: str, refusals: list[Refusal] | tuple[Refusal, ...]) -> ManifestError:
    """The error for launching `agent` with what an untrusted project `file` may not have."""
    lines = [f"{file}: {r.field}: {r.reason}" for r in refusals]
    return ManifestError(
        f"the project file is not trusted, and agent '{agent}' would use what it asks for:\n"
        + "\n".join(lines) + "\n"
        "If you trust this file, run `claude-bottle trust` (it shows everything the file asks for first), "
        "or pass --trust-project for this run; to use only your home manifest, pass --no-project."
    )


def _whose(file: Path | None) -> str:
    return "the built-in" if file is None else "your home"


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _inside(path: Path, *folders: Path | None) -> bool:
    real = path.resolve()
    return any(folder is not None and real.is_relative_to(folder.resolve()) for folder in folders)


# ---------------------------------------------------------------- locations


def skills_dir(environ: Mapping[str, str]) -> Path:
    return home_dir(environ) / ".claude" / "skills"


def trust_store(environ: Mapping[str, str]) -> trust.Store:
    return trust.Store(state_dir(environ))


def find_project(cwd: Path) -> Path | None:
    """The project's manifest: in `cwd` or, inside a git repository, the nearest folder above it up to
    the repository's root (as git finds its own files). Outside a repository only `cwd` counts."""
    cwd = cwd.absolute()
    folders = [cwd, *cwd.parents]
    root = next((d for d in folders if (d / ".git").exists()), None)
    for d in folders[: folders.index(root) + 1] if root else [cwd]:
        if (d / MANIFEST_NAME).is_file():
            return d / MANIFEST_NAME
    return None


# ---------------------------------------------------------------- loading


def load(cwd: Path, environ: Mapping[str, str], manifest_file: Path | None = None, no_project: bool = False,
         trust_project: bool = False) -> Manifest:
    """Read the home manifest and the project's (`manifest_file`, else the one found from `cwd`; none
    with `no_project`) and merge them over the built-in default. The project file is trusted if the
    user allowed exactly this content (`claude-bottle trust`) or passed `trust_project`."""
    home_file = home_dir(environ) / MANIFEST_NAME
    layers: list[_Layer] = [_builtin_layer()]
    files: list[Path] = []
    if home_file.is_file():
        layers.append(_read_layer(home_file, environ, project=False))
        files.append(home_file)
    project = None
    if manifest_file is not None:
        project_file = manifest_file.expanduser().absolute()
        if not project_file.is_file():
            said = "not a regular file" if project_file.exists() else "no such file"
            raise ManifestError(f"{said}: name an existing claude-bottle.json", field=f"--manifest {project_file}")
    else:
        project_file = None if no_project else find_project(cwd)
    if files and project_file is not None and project_file.resolve() == home_file.resolve():
        project_file = None  # the home manifest, found again from a folder at home
    try:
        if project_file is not None:
            layer = _read_layer(project_file, environ, project=True)
            trusted_by = ("--trust-project" if trust_project else
                          "claude-bottle trust" if trust_store(environ).is_allowed(project_file, layer.digest) else "")
            project = Project(project_file, layer.digest, trusted_by, dict(layer.bottles), dict(layer.agents))
            layers.append(layer)
            files.append(project_file)
        manifest = _merge(layers, tuple(files), project)
    except ManifestError as e:
        if project_file is None or e.file != project_file or manifest_file is not None:
            raise
        raise ManifestError(f"{e}\n(to use only your home manifest meanwhile, pass --no-project)") from None
    manifest = replace(manifest, image=_image_settings(manifest.image, environ), skills_dir=skills_dir(environ))
    _remember_valid([layer.valid for layer in layers if layer.valid is not None])
    return manifest


@dataclass
class _Layer:
    file: Path | None
    project: bool
    bottles: dict[str, Bottle]
    agents: dict[str, Agent]
    image: ImageSettings | None
    bottle_refs: dict[str, str]  # agent name -> field path of its "bottle", for errors
    digest: str = ""
    valid: Path | None = None  # where to remember that its content passed the schema (see _validate)


def _builtin_layer() -> _Layer:
    return _Layer(
        file=None,
        project=False,
        bottles={DEFAULT_BOTTLE: Bottle(DEFAULT_BOTTLE)},
        agents={DEFAULT_AGENT: Agent(DEFAULT_AGENT, DEFAULT_BOTTLE)},
        image=None,
        bottle_refs={},
    )


def _read_layer(path: Path, environ: Mapping[str, str], project: bool) -> _Layer:
    # Read once: the content that is parsed is the content whose digest the trust check compares.
    try:
        raw_bytes = read_small(path, MAX_MANIFEST_BYTES)
        text = raw_bytes.decode("utf-8")
    except OSError as e:
        raise ManifestError(f"cannot read it: {e.strerror or e}", path) from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"cannot read: {e}", path) from None
    try:
        data = json.loads(text, parse_constant=not_json)
    except json.JSONDecodeError as e:
        raise ManifestError(f"line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}", path) from None
    except RecursionError:
        raise ManifestError(_TOO_DEEP, path) from None
    except ValueError as e:  # a number too long to convert, for one
        raise ManifestError(f"invalid JSON: {e}", path) from None
    _check_text(data, path)
    valid = _validate(data, path, state_dir(environ))

    for home_only in ("image", "runtime"):
        if project and home_only in data:
            raise ManifestError(
                f"{home_only} settings are only read from the home manifest ({home_dir(environ) / MANIFEST_NAME}): "
                "move them there",
                path,
                home_only,
            )
    base_dir = path.parent
    bottles = {
        name: _read_bottle(name, raw, path, base_dir, environ, project)
        for name, raw in data.get("bottles", {}).items()
    }
    agents = {
        name: _read_agent(name, raw, path, base_dir, environ) for name, raw in data.get("agents", {}).items()
    }
    image = None
    if "image" in data:
        raw = data["image"]
        ca = raw.get("ca_cert")
        image = ImageSettings(
            base=raw.get("base", pins.BASE_IMAGE),
            claude_code_version=raw.get("claude_code_version", pins.CLAUDE_CODE_VERSION),
            ca_cert=_resolve_path(ca, base_dir, environ, path, "image.ca_cert") if ca else None,
            registry=raw.get("registry"),
        )
        if image.ca_cert is not None:
            _check_ca_file(image.ca_cert, path, "image.ca_cert")
    return _Layer(
        file=path,
        project=project,
        bottles=bottles,
        agents=agents,
        image=image,
        bottle_refs={name: f"agents.{name}.bottle" for name in agents},
        digest=trust.digest(raw_bytes),
        valid=valid,
    )


def _read_bottle(
    name: str, raw: dict, path: Path, base_dir: Path, environ: Mapping[str, str], project: bool
) -> Bottle:
    prefix = f"bottles.{name}"
    env = tuple(_read_env(var, value, f"{prefix}.env.{var}", path) for var, value in raw.get("env", {}).items())
    _api_base_url_is_known(env, path, prefix)
    ssh = []
    for i, entry in enumerate(raw.get("ssh", [])):
        where = f"{prefix}.ssh[{i}]"
        key_file = _resolve_path(entry["IdentityFile"], base_dir, environ, path, f"{where}.IdentityFile")
        if not key_file.is_file():
            raise ManifestError(
                f"no such key file {key_file}: point IdentityFile at an existing private key",
                path,
                f"{where}.IdentityFile",
            )
        _check_host_key(entry["KnownHostKey"], path, f"{where}.KnownHostKey")
        ssh.append(
            SshHost(
                host=entry["Host"],
                hostname=entry["Hostname"].lower(),
                user=entry.get("User"),
                port=_whole(entry.get("Port", 22), path, f"{where}.Port"),
                identity_file=key_file,
                known_host_key=entry["KnownHostKey"],
                field_path=where,
            )
        )
    _check_unique([s.host for s in ssh], path, f"{prefix}.ssh", "Host")
    allowlist = tuple(h.lower() for h in raw.get("egress", {}).get("allowlist", []))
    limits = raw.get("resources", {})
    private = tuple(_private_host(h, path, f"{prefix}.egress.private_hosts[{i}]")
                    for i, h in enumerate(raw.get("egress", {}).get("private_hosts", [])))
    passthrough = tuple(h.lower() for h in raw.get("egress", {}).get("passthrough", []))
    ca = raw.get("egress", {}).get("ca_cert")
    ca_cert = _resolve_path(ca, base_dir, environ, path, f"{prefix}.egress.ca_cert") if ca else None
    if ca_cert is not None:
        _check_ca_file(ca_cert, path, f"{prefix}.egress.ca_cert")
    reserve = limits.get("reserve", {})
    return Bottle(name, env, tuple(ssh), _dedup(allowlist), trusted=not project, files=(path,),
                  memory=_memory(limits.get("memory"), path, f"{prefix}.resources.memory"),
                  pids=_whole(limits.get("pids"), path, f"{prefix}.resources.pids"),
                  cpus=limits.get("cpus"),
                  reserve_memory=_memory(reserve.get("memory"), path, f"{prefix}.resources.reserve.memory"),
                  reserve_cpus=reserve.get("cpus"),
                  private_hosts=_dedup(private), passthrough=_dedup(passthrough), ca_cert=ca_cert)


# Linux takes no single environment string longer than 128 KiB (MAX_ARG_STRLEN); every exec in the
# bottle carries the bottle's variables, so a value must stay well below that.
MAX_ENV_VALUE = 64 * 1024
MIN_MEMORY = 64 * 2**20


def check_env_value(name: str, value: str, file: Path | None, where: str) -> None:
    if len(value.encode()) > MAX_ENV_VALUE:
        raise ManifestError(f"the value of {name} is {len(value.encode())} bytes; the limit is {MAX_ENV_VALUE} "
                            "(64 KiB): put large data in a file in the workspace instead", file, where)


def _private_host(entry: str, path: Path, where: str) -> PrivateHost:
    """host, host:port, or [IPv6]:port; the schema has checked the characters."""
    entry = entry.lower()
    host, port = entry, None
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ManifestError(f"'{entry}': the port must be a number from 1 to 65535", path, where)
    return PrivateHost(host, int(port) if port is not None else None)


def _whole(value, path: Path, where: str) -> int | None:
    """JSON Schema counts 2048.0 as an integer; Docker and ssh do not."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ManifestError(f"must be a whole number like {int(value)}, not {value}", path, where)


MAX_MEMORY = 2**50  # far below what the engine takes (a 64-bit count of bytes)


def _memory(value: str | None, path: Path, where: str) -> str | None:
    if value is None:
        return None
    units = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    size = int(value[:-1] if value[-1:].isalpha() else value) * units[value[-1:].lower() if value[-1:].isalpha() else ""]
    if size < MIN_MEMORY:
        raise ManifestError(f"'{value}' is too little for Claude Code: give at least 64m", path, where)
    if size > MAX_MEMORY:
        raise ManifestError(f"'{value}' is more than any machine has: give at most 1048576g (1 PiB)", path, where)
    return value.lower()


def _read_env(name: str, value: str, where: str, path: Path) -> EnvVar:
    check_env_value(name, value, path, where)
    if name in RESERVED_ENV:
        raise ManifestError(f"'{name}' is set by claude-bottle itself: remove it from the manifest", path, where)
    if value.startswith("??"):
        return EnvVar(name, "literal", value[1:], where, path)
    if value.startswith("?"):
        return EnvVar(name, "prompt", value[1:].strip() or f"Value for {name}", where, path)
    match = _HOST_REF.fullmatch(value)
    if match:
        return EnvVar(name, "host", match.group(1), where, path)
    if "${" in value:
        raise ManifestError(
            'to copy a host variable the value must be exactly "${NAME}"; literal values cannot contain "${"',
            path,
            where,
        )
    if name.endswith("_BASE_URL"):
        _check_url(value, path, where)
    return EnvVar(name, "literal", value, where, path)


def _api_base_url_is_known(env: tuple[EnvVar, ...], path: Path, prefix: str) -> None:
    """The sidecar's allowlist is settled before launch; an endpoint typed in at launch would come too late."""
    for v in env:
        if v.name == "ANTHROPIC_BASE_URL" and v.kind == "prompt":
            raise ManifestError("an API endpoint cannot be asked for at launch: write it, or copy it from a "
                                "host variable with \"${NAME}\"", path, v.field_path)


def _check_url(value: str, path: Path, where: str) -> None:
    """An API endpoint: http(s)://host[:port][/path], nothing a terminal or a URL parser could misread."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port that is not a number in range
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or not value.isprintable() or " " in value:
        raise ManifestError("not a URL: use http://host[:port][/path] or https://…", path, where)


def _read_agent(name: str, raw: dict, path: Path, base_dir: Path, environ: Mapping[str, str]) -> Agent:
    skills = []
    for i, ref in enumerate(raw.get("skills", [])):
        where = f"agents.{name}.skills[{i}]"
        if "/" in ref or ref.startswith("~") or ref.startswith("."):
            skill_path = _resolve_path(ref, base_dir, environ, path, where)
        else:
            skill_path = skills_dir(environ) / ref
        if not skill_path.is_dir():
            raise ManifestError(
                f"no skill directory '{ref}' (looked for {skill_path}): name a directory under "
                f"{skills_dir(environ)} or give a path relative to the manifest",
                path,
                where,
            )
        if not (skill_path / "SKILL.md").is_file():
            raise ManifestError(f"skill directory {skill_path} has no SKILL.md", path, where)
        # Named after the folder it really is (./skills/.. is the project's own folder, not "..").
        skills.append(Skill(skill_path.resolve().name, skill_path, where))
    _check_unique([s.name for s in skills], path, f"agents.{name}.skills", "skill directory name")
    return Agent(name, raw["bottle"], tuple(skills), raw.get("prompt", ""), path, raw.get("model"))


def _merge(layers: list[_Layer], files: tuple[Path, ...], project: Project | None) -> Manifest:
    bottles: dict[str, Bottle] = {}
    agents: dict[str, Agent] = {}
    refs: dict[str, tuple[Path | None, str]] = {}
    home_agents: dict[str, Path | None] = {}
    home_bottles: dict[str, Path | None] = {}
    image = ImageSettings()
    for layer in layers:
        if not layer.project:
            home_agents.update(dict.fromkeys(layer.agents, layer.file))
            home_bottles.update(dict.fromkeys(layer.bottles, layer.file))
        for name, b in layer.bottles.items():
            if layer.project and project is not None and project.trusted:
                b = replace(b, trusted=True)
            bottles[name] = _merge_bottle(bottles[name], b) if name in bottles else b
        for name, a in layer.agents.items():
            agents[name] = a
            refs[name] = (layer.file, layer.bottle_refs.get(name, ""))
        if layer.image is not None:
            image = layer.image
    for name, agent in agents.items():
        if agent.bottle not in bottles:
            file, where = refs[name]
            raise ManifestError(
                f"no bottle named '{agent.bottle}'{did_you_mean(agent.bottle, bottles)} (bottles: "
                f"{', '.join(sorted(bottles))}): define it under \"bottles\" or pick an existing one",
                file,
                where,
            )
    return Manifest(agents=agents, bottles=bottles, image=image, files=files, project=project,
                    home_agents=home_agents, home_bottles=home_bottles)


def _merge_bottle(base: Bottle, over: Bottle) -> Bottle:
    """A later file changes a bottle field by field: env by name, ssh by Host, allowlist as a union."""
    env = {v.name: v for v in base.env} | {v.name: v for v in over.env}
    ssh = {s.host: s for s in base.ssh} | {s.host: s for s in over.ssh}
    return Bottle(
        name=base.name,
        env=tuple(env.values()),
        ssh=tuple(ssh.values()),
        allowlist=_dedup(base.allowlist + over.allowlist),
        trusted=base.trusted and over.trusted,
        files=base.files + over.files,
        memory=over.memory or base.memory,
        pids=over.pids or base.pids,
        cpus=over.cpus or base.cpus,
        reserve_memory=over.reserve_memory or base.reserve_memory,
        reserve_cpus=over.reserve_cpus or base.reserve_cpus,
        private_hosts=_dedup(base.private_hosts + over.private_hosts),
        passthrough=_dedup(base.passthrough + over.passthrough),
        ca_cert=over.ca_cert or base.ca_cert,
    )


def _image_settings(from_manifest: ImageSettings, environ: Mapping[str, str]) -> ImageSettings:
    """Environment variables win over the home manifest, which wins over the pins."""
    settings = from_manifest
    if environ.get("CLAUDE_BOTTLE_BASE_IMAGE"):
        settings = replace(settings, base=environ["CLAUDE_BOTTLE_BASE_IMAGE"])
    version = environ.get("CLAUDE_BOTTLE_CLAUDE_CODE_VERSION")
    if version:
        if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
            raise ManifestError(
                f"'{version}' is not a Claude Code version like {pins.CLAUDE_CODE_VERSION}",
                field="CLAUDE_BOTTLE_CLAUDE_CODE_VERSION",
            )
        settings = replace(settings, claude_code_version=version)
    ca = environ.get("CLAUDE_BOTTLE_CA_CERT")
    if ca:
        ca_path = _expanded(ca, None, "CLAUDE_BOTTLE_CA_CERT").absolute()
        _check_ca_file(ca_path, None, "CLAUDE_BOTTLE_CA_CERT")
        settings = replace(settings, ca_cert=ca_path)
    return settings


# ---------------------------------------------------------------- secrets


def check_env(bottle: Bottle, environ: Mapping[str, str], can_ask: bool) -> None:
    """Everything `resolve_env` would refuse, found without reading a single value: host variables
    that are not set, and questions with nobody to answer them."""
    found: list[ManifestError] = []  # every one of them, so that one run of --dry-run shows them all
    for var in bottle.env:
        if var.kind == "host" and var.source not in environ:
            found.append(ManifestError(f"host variable ${var.source} is not set: export it, or change the value",
                                       var.file, var.field_path))
        if var.kind == "prompt" and not can_ask:
            found.append(ManifestError(f"{var.name} is asked for at launch, but there is no terminal to ask on: "
                                       "run interactively, or set the value in the manifest", var.file,
                                       var.field_path))
    if len(found) == 1:
        raise found[0]
    if found:
        raise ManifestError("\n".join(str(e) for e in found))


def resolve_env(bottle: Bottle, environ: Mapping[str, str], ask: Callable[[str], str] | None) -> dict[str, str]:
    """The bottle's variables with their values. `ask` reads hidden input, or is None when nobody can
    answer. Whether the project file may have them at all is `Manifest.check_launch`'s to say."""
    check_env(bottle, environ, ask is not None)
    values: dict[str, str] = {}
    for var in bottle.env:
        if var.kind == "literal":
            values[var.name] = var.source
        elif var.kind == "host":
            values[var.name] = environ[var.source]
        else:
            values[var.name] = ask(f"{var.source} ({var.name}): ")
        check_env_value(var.name, values[var.name], var.file, var.field_path)
    return values


# ---------------------------------------------------------------- validation


# Far deeper than a manifest goes (bottles.NAME.resources.reserve.memory is five levels down), and shallow
# enough for the schema check and the key of what passed it, which recurse.
MAX_DEPTH = 32
_TOO_DEEP = f"lists and objects nested more than {MAX_DEPTH} levels deep: a manifest needs only a few"
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _check_text(data: object, path: Path) -> None:
    """Refuse what JSON can hold and Python cannot handle later: nesting deeper than MAX_DEPTH, and a string
    (a key too) with half of a surrogate pair (an escape such as \\ud800 alone), which is no character and
    cannot be written out as UTF-8."""
    stack: list[tuple[object, list]] = [(data, [])]
    while stack:
        value, where = stack.pop()
        if isinstance(value, (dict, list)) and len(where) >= MAX_DEPTH:
            raise ManifestError(_TOO_DEEP, path, format_path(where[:1]))
        if isinstance(value, str) and _SURROGATE.search(value):
            raise ManifestError(_NOT_TEXT, path, format_path(where))
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and _SURROGATE.search(key):
                raise ManifestError(_NOT_TEXT, path, format_path(where + [key]))
            stack.append((item, where + [key]))


_NOT_TEXT = ("not valid Unicode text: it holds half of a surrogate pair (an escape from \\ud800 to \\udfff "
             "without its other half): write the character itself, or both halves of its escape")


@cache
def schema() -> dict:
    return json.loads((Path(__file__).parent / "manifest.schema.json").read_text())


def _validate(data: object, path: Path, state: Path) -> Path | None:
    """Check `data` against the schema. Content that passed once (the same JSON against the same schema) is
    remembered in the user's state, so a manifest that has not changed is not checked again: importing
    jsonschema costs every command that reads a manifest a twentieth of a second. Returns where to remember
    it once the whole manifest has been accepted (bad input leaves nothing behind), None if it is known."""
    key = hashlib.sha256(json.dumps([schema(), data, _CHECKED_AS], sort_keys=True).encode()).hexdigest()
    passed = state / "valid-manifests" / key
    if passed.exists():
        return None
    import jsonschema

    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = list(dict.fromkeys(_describe(e) for e in errors))  # one line for keys missing together
        raise ManifestError("\n".join(lines[:1] + [f"{path}: {line}" for line in lines[1:]]), path)
    return passed


# How _validate reads the schema beyond what jsonschema does: part of the key of what passed, so that content
# remembered as valid under older rules is checked again.
_CHECKED_AS = "patterns as ECMA-262"


def _pattern(validator, pattern: str, instance, schema_: dict):
    """The schema's `pattern` as JSON Schema means it and editors read it: an ECMA-262 regular expression, in
    which `$` is the end of the text. Python's `$` also matches before a final newline, which would let a name
    such as "a\\n" through."""
    if validator.is_type(instance, "string") and not re.search(_ecma(pattern), instance):
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _ecma(pattern: str) -> str:
    """`pattern` with each `$` that is not escaped or in a character class made `\\Z`, Python's end of the text."""
    return re.sub(r"(\\.|\[(?:\\.|[^\\\]])*\])|\$", lambda m: m.group(1) or r"\Z", pattern)


def _remember_valid(marks: list[Path]) -> None:
    try:  # only a cache: if it cannot be written, the next command checks again
        for passed in marks:
            passed.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            passed.touch()
        if marks:
            remembered = sorted(marks[0].parent.iterdir(), key=lambda f: f.stat().st_mtime)
            for old in remembered[:-64]:  # the versions of the last few weeks' edits are plenty
                old.unlink()
    except OSError:
        pass


def _describe(error: jsonschema.ValidationError) -> str:
    """One schema error as `field: what is wrong`, in the manifest's own terms."""
    where = list(error.absolute_path)
    schema_ = error.schema if isinstance(error.schema, dict) else {}
    hint = schema_.get("x-error")
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(schema_.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = extra[0] if extra else "?"
        shown = [k for k in allowed if k != "$comment"]  # allowed anywhere, suggested nowhere
        return f"{format_path(where + [key])}: unknown key '{key}' (expected one of: {', '.join(shown)})"
    if v == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        if len(missing) == 1:
            return f"{format_path(where)}: missing required key '{missing[0]}'"
        names = ", ".join(f"'{k}'" for k in missing[:-1]) + f" and '{missing[-1]}'"
        return f"{format_path(where)}: missing required keys {names}"
    if v == "type":
        return f"{format_path(where)}: must be {_kind(error.validator_value)}, not {_kind_of(error.instance)}"
    if v in ("pattern", "maxLength") and isinstance(error.instance, str):
        if "propertyNames" in error.absolute_schema_path:
            # A bad key is reported on the object that holds it; name the key itself.
            return f"{format_path(where + [error.instance])}: invalid name '{visible(error.instance)}': {hint}"
        return f"{format_path(where)}: '{visible(error.instance)}': {hint or 'not allowed here'}"
    if v == "minLength":
        return f"{format_path(where)}: must not be empty"
    if v in ("minimum", "maximum"):
        return (f"{format_path(where)}: {error.instance} is out of range "
                f"({schema_.get('minimum')} to {schema_.get('maximum')})")
    if hint:
        return f"{format_path(where)}: {hint}"
    return f"{format_path(where)}: {error.message}"


def format_path(parts: list) -> str:
    """bottles.dev.egress.allowlist[2]"""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_$-]+", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(top level)"


def _kind(t: str | list) -> str:
    names = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number",
             "number": "a number", "boolean": "true or false", "null": "null"}
    if isinstance(t, list):
        return " or ".join(names.get(x, x) for x in t)
    return names.get(t, t)


def _kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    return "null"


def _check_host_key(value: str, path: Path, where: str) -> None:
    declared, blob = value.split(" ", 1)
    try:
        raw = base64.b64decode(blob, validate=True)
        length = int.from_bytes(raw[:4], "big")
        embedded = raw[4 : 4 + length].decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        embedded = ""
    if embedded != declared:
        raise ManifestError(
            f"not a valid {declared} public key: copy the key from ssh-keyscan or the server's "
            "/etc/ssh/ssh_host_*_key.pub",
            path,
            where,
        )


def _check_ca_file(ca: Path, file: Path | None, where: str) -> None:
    try:
        text = read_small(ca, MAX_CA_BYTES).decode("ascii", errors="replace")
    except OSError as e:
        raise ManifestError(f"cannot read CA certificate file {ca}: {e.strerror}", file, where) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ManifestError(f"{ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", file, where)


def _check_unique(names: list[str], path: Path, where: str, what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ManifestError(f"two entries share the {what} '{name}'", path, where)
        seen.add(name)


def _resolve_path(value: str, base_dir: Path, environ: Mapping[str, str], file: Path | None, where: str) -> Path:
    if "\0" in value:
        raise ManifestError("a path cannot hold a NUL character", file, where)  # (home_dir would not see it)
    if value == "~" or value.startswith("~/"):
        return home_dir(environ) / value[2:]
    p = _expanded(value, file, where)
    return p if p.is_absolute() else (base_dir / p)


def _expanded(value: str, file: Path | None, where: str) -> Path:
    """`value` with a leading ~ or ~name expanded; a clear error for a NUL or a user this machine has not."""
    if "\0" in value:
        raise ManifestError("a path cannot hold a NUL character", file, where)
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~name of no user here
        raise ManifestError(f"{value.split('/')[0]} names no user on this machine: write the path out in full",
                            file, where) from None


def _dedup(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))

