"""Reads claude-bottle.json (home and project) into frozen dataclasses.

Owns the format, its validation and error messages, the home/project merge and
the trust rule (a bottle the project file touches is untrusted), and the three
kinds of env value. Reading never resolves a secret: see `resolve_env`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema

from . import pins
from .errors import ManifestError

MANIFEST_NAME = "claude-bottle.json"
DEFAULT_AGENT = "default"
DEFAULT_BOTTLE = "default"

# Set by claude-bottle itself; a manifest that sets them would break the bottle or its egress.
RESERVED_ENV = frozenset(
    {"CLAUDE_CODE_OAUTH_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)
NOT_SECRET = frozenset({"ANTHROPIC_BASE_URL"})
_HOST_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class EnvVar:
    """One variable of a bottle. `kind` is literal, host or prompt; `source` is the literal
    value, the host variable's name or the question. Never print `source` of a literal."""

    name: str
    kind: str
    source: str = field(repr=False)
    field_path: str

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
    private_hosts: tuple[str, ...] = ()

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

    @property
    def host_secrets(self) -> list[str]:
        """What the bottle would take from the host: variables it copies and SSH key files."""
        return [f"${v.source}" for v in self.host_refs] + [str(s.identity_file) for s in self.ssh]


@dataclass(frozen=True)
class Skill:
    name: str
    path: Path


@dataclass(frozen=True)
class Agent:
    name: str
    bottle: str
    skills: tuple[Skill, ...] = ()
    prompt: str = ""
    file: Path | None = None

    @property
    def prompt_first_line(self) -> str:
        return next((line.strip() for line in self.prompt.splitlines() if line.strip()), "")


@dataclass(frozen=True)
class ImageSettings:
    base: str = pins.BASE_IMAGE
    claude_code_version: str = pins.CLAUDE_CODE_VERSION
    ca_cert: Path | None = None


@dataclass(frozen=True)
class Manifest:
    agents: Mapping[str, Agent]
    bottles: Mapping[str, Bottle]
    image: ImageSettings
    files: tuple[Path, ...]

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            where = ", ".join(map(str, self.files)) or "no manifest found"
            raise ManifestError(
                f"no agent named '{name}' (agents: {known}; read from {where})"
            ) from None

    def bottle_of(self, agent: Agent) -> Bottle:
        return self.bottles[agent.bottle]


# ---------------------------------------------------------------- locations


def home_dir(environ: Mapping[str, str]) -> Path:
    """The home claude-bottle reads from: CLAUDE_BOTTLE_HOME, else the user's home."""
    override = environ.get("CLAUDE_BOTTLE_HOME")
    return Path(override).expanduser() if override else Path.home()


def skills_dir(environ: Mapping[str, str]) -> Path:
    return home_dir(environ) / ".claude" / "skills"


# ---------------------------------------------------------------- loading


def load(cwd: Path, environ: Mapping[str, str]) -> Manifest:
    """Read the home and project manifests (either may be absent) and merge them over the built-in default."""
    home_file = home_dir(environ) / MANIFEST_NAME
    project_file = cwd / MANIFEST_NAME
    layers: list[_Layer] = [_builtin_layer()]
    files: list[Path] = []
    if home_file.is_file():
        layers.append(_read_layer(home_file, environ, project=False))
        files.append(home_file)
    if project_file.is_file() and not (files and project_file.resolve() == home_file.resolve()):
        layers.append(_read_layer(project_file, environ, project=True))
        files.append(project_file)
    manifest = _merge(layers, tuple(files))
    return replace(manifest, image=_image_settings(manifest.image, environ))


@dataclass
class _Layer:
    file: Path | None
    project: bool
    bottles: dict[str, Bottle]
    agents: dict[str, Agent]
    image: ImageSettings | None
    bottle_refs: dict[str, str]  # agent name -> field path of its "bottle", for errors


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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read: {e}", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}", path) from None
    _validate(data, path)

    if project and "image" in data:
        raise ManifestError(
            f"image settings are only read from the home manifest ({home_dir(environ) / MANIFEST_NAME}): "
            "move them there",
            path,
            "image",
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
            ca_cert=_resolve_path(ca, base_dir, environ) if ca else None,
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
    )


def _read_bottle(
    name: str, raw: dict, path: Path, base_dir: Path, environ: Mapping[str, str], project: bool
) -> Bottle:
    prefix = f"bottles.{name}"
    env = tuple(_read_env(var, value, f"{prefix}.env.{var}", path) for var, value in raw.get("env", {}).items())
    ssh = []
    for i, entry in enumerate(raw.get("ssh", [])):
        where = f"{prefix}.ssh[{i}]"
        key_file = _resolve_path(entry["IdentityFile"], base_dir, environ)
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
                port=entry.get("Port", 22),
                identity_file=key_file,
                known_host_key=entry["KnownHostKey"],
            )
        )
    _check_unique([s.host for s in ssh], path, f"{prefix}.ssh", "Host")
    allowlist = tuple(h.lower() for h in raw.get("egress", {}).get("allowlist", []))
    limits = raw.get("resources", {})
    private = tuple(h.lower() for h in raw.get("egress", {}).get("private_hosts", []))
    return Bottle(name, env, tuple(ssh), _dedup(allowlist), trusted=not project, files=(path,),
                  memory=limits.get("memory", "").lower() or None, pids=limits.get("pids"),
                  private_hosts=_dedup(private))


def _read_env(name: str, value: str, where: str, path: Path) -> EnvVar:
    if name in RESERVED_ENV:
        raise ManifestError(f"'{name}' is set by claude-bottle itself: remove it from the manifest", path, where)
    if value.startswith("??"):
        return EnvVar(name, "literal", value[1:], where)
    if value.startswith("?"):
        return EnvVar(name, "prompt", value[1:].strip() or f"Value for {name}", where)
    match = _HOST_REF.match(value)
    if match:
        return EnvVar(name, "host", match.group(1), where)
    if "${" in value:
        raise ManifestError(
            'to copy a host variable the value must be exactly "${NAME}"; literal values cannot contain "${"',
            path,
            where,
        )
    return EnvVar(name, "literal", value, where)


def _read_agent(name: str, raw: dict, path: Path, base_dir: Path, environ: Mapping[str, str]) -> Agent:
    skills = []
    for i, ref in enumerate(raw.get("skills", [])):
        where = f"agents.{name}.skills[{i}]"
        if "/" in ref or ref.startswith("~") or ref.startswith("."):
            skill_path = _resolve_path(ref, base_dir, environ)
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
        skills.append(Skill(skill_path.name, skill_path))
    _check_unique([s.name for s in skills], path, f"agents.{name}.skills", "skill directory name")
    return Agent(name, raw["bottle"], tuple(skills), raw.get("prompt", ""), path)


def _merge(layers: list[_Layer], files: tuple[Path, ...]) -> Manifest:
    bottles: dict[str, Bottle] = {}
    agents: dict[str, Agent] = {}
    refs: dict[str, tuple[Path | None, str]] = {}
    image = ImageSettings()
    for layer in layers:
        for name, b in layer.bottles.items():
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
                f"no bottle named '{agent.bottle}' (bottles: {', '.join(sorted(bottles))}): "
                "define it under \"bottles\" or pick an existing one",
                file,
                where,
            )
    return Manifest(agents=agents, bottles=bottles, image=image, files=files)


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
        private_hosts=_dedup(base.private_hosts + over.private_hosts),
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
        ca_path = Path(ca).expanduser().absolute()
        _check_ca_file(ca_path, None, "CLAUDE_BOTTLE_CA_CERT")
        settings = replace(settings, ca_cert=ca_path)
    return settings


# ---------------------------------------------------------------- secrets


def resolve_env(
    bottle: Bottle,
    environ: Mapping[str, str],
    ask: Callable[[str], str] | None,
    trust_project: bool = False,
) -> dict[str, str]:
    """The bottle's variables with their values. `ask` reads hidden input, or is None when
    nobody can answer. Host references and SSH keys of an untrusted bottle need `trust_project`."""
    if not bottle.trusted and not trust_project:
        untrusted_secrets_check(bottle)
    values: dict[str, str] = {}
    for var in bottle.env:
        if var.kind == "literal":
            values[var.name] = var.source
        elif var.kind == "host":
            if var.source not in environ:
                raise ManifestError(
                    f"host variable ${var.source} is not set: export it, or change the value",
                    bottle.files[-1] if bottle.files else None,
                    var.field_path,
                )
            values[var.name] = environ[var.source]
        else:
            if ask is None:
                raise ManifestError(
                    f"{var.name} is asked for at launch, but there is no terminal to ask on: "
                    "run interactively, or set the value in the manifest",
                    bottle.files[-1] if bottle.files else None,
                    var.field_path,
                )
            values[var.name] = ask(f"{var.source} ({var.name}): ")
    return values


def untrusted_secrets_check(bottle: Bottle) -> None:
    """Refuse what an untrusted bottle would take from the host: variables and SSH keys."""
    wants = bottle.host_secrets
    if wants:
        raise ManifestError(
            f"bottle '{bottle.name}' is defined or changed by the project manifest and asks for host "
            f"secrets ({', '.join(wants)}): answer yes when asked, or pass --trust-project if you trust "
            f"{bottle.files[-1]}",
            bottle.files[-1],
            f"bottles.{bottle.name}",
        )


# ---------------------------------------------------------------- validation


@cache
def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("manifest.schema.json").read_text())


def _validate(data: object, path: Path) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [_describe(e) for e in errors]
        raise ManifestError("\n".join(lines[:1] + [f"{path}: {line}" for line in lines[1:]]), path)


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
        return f"{format_path(where + [key])}: unknown key '{key}' (expected one of: {', '.join(allowed)})"
    if v == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{format_path(where)}: missing required key '{missing[0]}'"
    if v == "type":
        return f"{format_path(where)}: must be {_kind(error.validator_value)}, not {_kind_of(error.instance)}"
    if v in ("pattern", "maxLength") and isinstance(error.instance, str):
        if "propertyNames" in error.absolute_schema_path:
            # A bad key is reported on the object that holds it; name the key itself.
            return f"{format_path(where + [error.instance])}: invalid name '{error.instance}': {hint}"
        return f"{format_path(where)}: '{error.instance}': {hint or 'not allowed here'}"
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
        text = ca.read_text(encoding="ascii", errors="replace")
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


def _resolve_path(value: str, base_dir: Path, environ: Mapping[str, str]) -> Path:
    if value == "~" or value.startswith("~/"):
        return home_dir(environ) / value[2:]
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _dedup(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))

