"""A bottle's sidecar: its image (pipelock's pinned binary beside the gate, our program that is the bottle's
only way out), content-addressed like the bottle image; its container; and what it is told at start.

The gate (sidecar/gate/, Go's standard library only) holds the user's real OAuth token, which never enters
the bottle: the bottle has a placeholder, and the gate puts the token in its place on requests to Claude
Code's API (and to a gateway the home manifest names), and nowhere else. Everything else goes through
pipelock, which sees inside HTTPS with a certificate authority made for the bottle at its start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import egress, pins
from .docker import ContainerSpec
from .image import BOTTLE_UID, ImageSpec
from .manifest import ImageSettings

REPOSITORY = "claude-bottle-sidecar"
PROXY_DIR = "/run/claude-bottle/proxy"  # the volume: the socket the bottle connects to, and its CA bundle
CA_BUNDLE = f"{PROXY_DIR}/bundle.pem"  # the system's CAs and the bottle's own, for every client in the bottle
STATE_DIR = "/run/gate"  # the sidecar's tmpfs: pipelock's config and secrets, the CA key, the report
# pipelock holds an inspected answer whole while it scans it, about 17 times its size at its peak: two of the
# largest (egress.MAX_INSPECTED_RESPONSE) at once fit; more, and the gate restarts pipelock.
MEMORY = "768m"
READY_SECONDS = 60

# Where the user's token may go: Claude Code's API, on the paths Claude Code uses it for (measured on the
# pinned version; CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC keeps most of these quiet).
API_HOST = "api.anthropic.com"
API_PATHS = ("/v1/messages", "/api/claude_code/", "/api/oauth/profile", "/api/oauth/usage",
             "/api/claude_cli/bootstrap", "/api/directory/", "/api/eval/", "/api/event_logging/")


@dataclass(frozen=True)
class CredentialHost:
    host: str
    port: int
    tls: bool
    paths: tuple[str, ...]
    inject: bool = True  # False: a project file's gateway, which keeps the bottle's placeholder

    def to_json(self) -> dict:
        return {"host": self.host, "port": str(self.port), "tls": self.tls, "paths": list(self.paths),
                "inject": self.inject}


def spec(settings: ImageSettings) -> ImageSpec:
    """The sidecar image for these settings (the base image and extra CAs matter to its build)."""
    root = Path(__file__).parent / "sidecar"
    files = [("Dockerfile", root.joinpath("Dockerfile").read_bytes())]
    files += sorted((f"gate/{entry.name}", entry.read_bytes()) for entry in root.joinpath("gate").iterdir()
                    if entry.is_file() and (entry.name.endswith(".go") or entry.name == "go.mod")
                    and not entry.name.endswith("_test.go"))
    files.append(("extra-ca.crt", settings.ca_cert.read_bytes() if settings.ca_cert else b""))
    return ImageSpec(tuple(files), (("BASE_IMAGE", settings.base), ("PIPELOCK_IMAGE", pins.PIPELOCK_IMAGE)),
                     repository=REPOSITORY)


def placeholder() -> str:
    """What the bottle holds instead of the token: shaped like one, so Claude Code uses it as OAuth."""
    return "sk-ant-oat01-claude-bottle-placeholder-" + os.urandom(16).hex()  # secrets.token_hex, unimported


def credential_hosts(api_base_url: str | None, from_home: bool) -> tuple[CredentialHost, ...]:
    """Claude Code's API, and the gateway ANTHROPIC_BASE_URL names. Both carry the whole conversation, so
    their bodies are judged by the host's name only (DLP there would stop every session that read a key).
    Only a gateway the home manifest names gets the user's token; a project file's (even an allowed one)
    keeps the placeholder: the token goes where the user said."""
    hosts = [CredentialHost(API_HOST, 443, True, API_PATHS)]
    if api_base_url:
        parts = urlsplit(api_base_url)
        tls = parts.scheme == "https"
        if parts.hostname and parts.hostname.lower() != API_HOST:
            prefix = parts.path.rstrip("/") + "/"
            hosts.append(CredentialHost(parts.hostname.lower(), parts.port or (443 if tls else 80), tls, (prefix,),
                                        inject=from_home))
    return tuple(hosts)


def gate_config(pipelock_config: dict, secret_values: Sequence[str], token: str, bottle_placeholder: str,
                credentials: Sequence[CredentialHost], private_ports: Mapping[str, Sequence[int]],
                upstream_ca: str = "", ssh_pipelock_config: dict | None = None,
                ssh_targets: Sequence[str] = (), files: Mapping[str, str] | None = None,
                passthrough: Sequence[str] = ()) -> bytes:
    """What the gate reads on its stdin at start: never a file, never on a command line. `files` (name:
    text) go into the proxy volume, which the bottle reads and cannot write."""
    return json.dumps({
        "proxy_dir": PROXY_DIR,
        # pipelock reads YAML, and JSON is YAML: no quoting rules to get wrong.
        "pipelock_config": json.dumps(pipelock_config, indent=2),
        "secrets": egress.secrets_list(secret_values),
        # The gate derives every form it looks for itself: the encodings above, looked for as secrets of their
        # own, would make more and shorter forms that ordinary traffic matches by chance.
        "scanned": egress.secret_lines(secret_values),
        "token": token,
        "placeholder": bottle_placeholder,
        "credential_hosts": [c.to_json() for c in credentials],
        "private_ports": {host: [str(p) for p in ports] for host, ports in private_ports.items()},
        "upstream_ca": upstream_ca,
        "ssh_pipelock_config": json.dumps(ssh_pipelock_config, indent=2) if ssh_pipelock_config else "",
        "ssh_targets": list(ssh_targets),
        "max_inspected_response": egress.MAX_INSPECTED_RESPONSE,
        "files": dict(files or {}),
        # pipelock's passthrough_domains: the gate does not end their TLS either.
        "passthrough": list(passthrough),
    }).encode()


def container(name: str, image_tag: str, network: str, labels: dict[str, str], proxy_volume: str) -> ContainerSpec:
    """The gate and pipelock on the shared egress network, as the bottle's user, with its secrets in a tmpfs
    of its own; its stdin stays open for the configuration."""
    return ContainerSpec(
        name=name,
        image=image_tag,
        command=(),
        labels=labels,
        user=f"{BOTTLE_UID}:{BOTTLE_UID}",
        network_mode=network,
        mem_limit=MEMORY,
        pids_limit=256,
        volumes=((proxy_volume, PROXY_DIR, False),),
        tmpfs={STATE_DIR: f"size=64m,mode=0700,uid={BOTTLE_UID},gid={BOTTLE_UID}"},
        stdin_open=True,
    )


def report_command() -> list[str]:
    return ["/gate", "report"]
