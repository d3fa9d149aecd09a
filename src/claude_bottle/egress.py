"""A bottle's way out: its allowlist, the relay and pipelock sidecar, and what the sidecar decided.

The allowlist is the union of Claude Code's own hosts (package data), the
bottle's egress.allowlist and the host names of its SSH entries. The relay owns
the sidecar's network namespace and is reached only through the proxy socket.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from ipaddress import ip_address
from urllib.parse import urlsplit

from .docker import ContainerSpec
from .manifest import Bottle


@dataclass(frozen=True)
class AllowedHost:
    host: str
    reason: str  # "Claude Code", "egress.allowlist" or "ssh <Host>"


@cache
def claude_code_hosts() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("claude-code-hosts.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def allowlist(bottle: Bottle, api_base_url: str | None = None) -> tuple[AllowedHost, ...]:
    """Every host the bottle may reach, each once, with the first reason it is there: what the preflight
    shows is what the sidecar is given. `api_base_url` is ANTHROPIC_BASE_URL's value."""
    entries = [AllowedHost(h, "Claude Code") for h in claude_code_hosts()]
    base_url = api_base_url or bottle.literal("ANTHROPIC_BASE_URL")
    if base_url and _hostname(base_url):
        entries.append(AllowedHost(_hostname(base_url), "ANTHROPIC_BASE_URL"))
    entries += [AllowedHost(h, "egress.allowlist") for h in bottle.allowlist]
    entries += [AllowedHost(h, "egress.private_hosts") for h in bottle.private_hosts]
    entries += [AllowedHost(s.hostname, f"ssh {s.host}") for s in bottle.ssh]
    seen: dict[str, AllowedHost] = {}
    for entry in entries:
        seen.setdefault(entry.host, entry)
    return tuple(seen.values())


def _hostname(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:  # a host variable's value is not checked like a manifest's literal
        return None
    return host.lower() if host else None


def summary(hosts: tuple[AllowedHost, ...], shown: int = 3) -> str:
    """`N hosts allowed (a, b, c +M more)`, naming the bottle's own hosts before Claude Code's."""
    ordered = sorted(hosts, key=lambda h: h.reason == "Claude Code")
    names = [h.host for h in ordered[:shown]]
    more = f" +{len(hosts) - shown} more" if len(hosts) > shown else ""
    noun = "host" if len(hosts) == 1 else "hosts"
    return f"{len(hosts)} {noun} allowed ({', '.join(names)}{more})"


# ---------------------------------------------------------------- the path out

# pipelock listens here inside the network namespace the relay owns.
SIDECAR_PORT = 8888


def relay_container(name: str, image_tag: str, network: str, labels: dict[str, str], uid: int,
                    proxy_volume: str, proxy_dir: str, config_volume: str) -> ContainerSpec:
    """The relay owns the sidecar's network namespace (the sidecar joins it) and turns the
    proxy socket, the bottle's only way out, into a connection to the sidecar's port. It
    also writes the sidecar's configuration, since the sidecar's image has no shell."""
    return ContainerSpec(
        name=name,
        image=image_tag,
        command=("socat", f"UNIX-LISTEN:{proxy_dir}/proxy.sock,fork,mode=666,unlink-early",
                 f"TCP:127.0.0.1:{SIDECAR_PORT}"),
        labels=labels,
        user=f"{uid}:{uid}",
        network_mode=network,
        mem_limit="64m",
        pids_limit=256,
        volumes=((proxy_volume, proxy_dir, False), (config_volume, CONFIG_DIR, False)),
    )


# ---------------------------------------------------------------- the sidecar

CONFIG_DIR = "/etc/pipelock"
CONFIG_FILE = f"{CONFIG_DIR}/pipelock.yaml"
SECRETS_FILE = f"{CONFIG_DIR}/secrets.txt"
# In the same tmpfs: an agent can put a secret into a host name it asks for, and pipelock logs
# the host names it blocks, so the log must not reach Docker's on-disk container logs.
LOG_FILE = f"{CONFIG_DIR}/egress.log"
# Away from the port the relay forwards, so the agent cannot read pipelock's metrics or stats.
METRICS_LISTEN = "127.0.0.1:9464"
# pipelock ignores shorter secrets (dlp.min_env_secret_length); we leave them out rather than
# have it warn about them.
MIN_SECRET_LENGTH = 16


def pipelock_config(hosts: Sequence[str], private_hosts: Sequence[str] = ()) -> dict:
    """pipelock's configuration for one bottle (schema of the pinned release, internal/config).

    Strict mode enforces the allowlist; DLP keeps the built-in patterns and also blocks the
    bottle's own secret values; URL and subdomain entropy checks stay on; tunnels and the
    per-domain rate limit are raised so a long streamed answer and a busy agent get through.
    `private_hosts` pass the SSRF protection: names as trusted domains, addresses as /32s."""
    ips = [h for h in private_hosts if _is_ip(h)]
    names = [h for h in private_hosts if not _is_ip(h)]
    config = {
        "version": 1,
        "mode": "strict",
        "api_allowlist": list(hosts),
        "fetch_proxy": {
            "listen": f"127.0.0.1:{SIDECAR_PORT}",
            # Plain-HTTP answers (an http:// gateway) are read whole, to be scanned, within this
            # many seconds; its default of 30 cut long streamed answers.
            "timeout_seconds": 1800,
            "monitoring": {
                "entropy_threshold": 4.5,
                "subdomain_entropy_threshold": 4.0,
                "max_requests_per_minute": 6000,
            },
        },
        "forward_proxy": {"enabled": True, "max_tunnel_seconds": 6 * 3600, "idle_timeout_seconds": 1800},
        "dlp": {
            "include_defaults": True,
            "scan_env": True,
            "secrets_file": SECRETS_FILE,
            "min_env_secret_length": MIN_SECRET_LENGTH,
        },
        "metrics_listen": METRICS_LISTEN,
        "logging": {"format": "json", "output": "file", "file": LOG_FILE,
                    "include_allowed": True, "include_blocked": True},
    }
    if names:
        config["trusted_domains"] = names
    if ips:
        config["ssrf"] = {"ip_allowlist": [f"{ip}/32" for ip in ips]}
    return config


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
        return True
    except ValueError:
        return False


def sidecar_files(hosts: Sequence[str], secret_values: Iterable[str], private_hosts: Sequence[str] = ()) -> bytes:
    """A tar of pipelock's config and secrets file, for the relay to unpack into the sidecar's tmpfs.

    The config is JSON, which YAML parsers read as it is: no quoting rules to get wrong."""
    lines = sorted({line.strip() for value in secret_values for line in value.splitlines()
                    if len(line.strip()) >= MIN_SECRET_LENGTH})
    files = {
        "pipelock.yaml": json.dumps(pipelock_config(hosts, private_hosts), indent=2).encode() + b"\n",
        "secrets.txt": "".join(f"{line}\n" for line in lines).encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_sidecar_files_command() -> list[str]:
    """Run in the relay: unpacks the tar on stdin into the sidecar's config tmpfs."""
    return ["sh", "-c", f"umask 077 && tar -x -o -f - -C {CONFIG_DIR}"]


def sidecar_container(name: str, image_ref: str, relay: str, config_volume: str,
                      labels: dict[str, str], uid: int) -> ContainerSpec:
    """pipelock in the relay's network namespace, with its config and log on a tmpfs volume. It runs
    as the user who owns them (its image would run it as root, which it does not need)."""
    return ContainerSpec(
        name=name,
        image=image_ref,
        command=("run", "--config", CONFIG_FILE, "--listen", f"127.0.0.1:{SIDECAR_PORT}"),
        labels=labels,
        user=f"{uid}:{uid}",
        network_mode=f"container:{relay}",
        mem_limit="256m",
        pids_limit=256,
        volumes=((config_volume, CONFIG_DIR, False),),
    )


def health_command() -> list[str]:
    return ["/pipelock", "healthcheck", "--addr", f"127.0.0.1:{SIDECAR_PORT}"]


# ---------------------------------------------------------------- what happened


@dataclass(frozen=True)
class Decision:
    host: str
    allowed: bool
    reason: str
    count: int


def read_log_command() -> list[str]:
    """Run in the relay: the sidecar's log, then a NUL, then the secret values to redact from it."""
    return ["sh", "-c", f"cat {LOG_FILE} 2>/dev/null; printf '\\0'; cat {SECRETS_FILE}"]


def redact(text: str, secret_values: Iterable[str]) -> str:
    """Replace every secret value (in any letter case: host names are lowered) with [secret]."""
    for value in sorted((v for v in secret_values if v), key=len, reverse=True):
        text = re.sub(re.escape(value), "[secret]", text, flags=re.IGNORECASE)
    return text


def report(log_lines: Iterable[str]) -> list[Decision]:
    """pipelock's JSON log turned into one row per (host, decision, reason), most frequent first."""
    counts: dict[tuple[str, bool, str], int] = {}
    for line in log_lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        event = entry.get("event")
        if event == "tunnel_open":  # an allowed CONNECT
            key = (_host(entry.get("target", "")), True, "allowed")
        elif event == "forward_http":  # an allowed plain-HTTP request
            key = (_host(entry.get("url", "")), True, "allowed")
        elif event == "blocked":
            scanner = entry.get("scanner", "")
            reason = entry.get("reason", "blocked")
            key = (_host(entry.get("target") or entry.get("url", "")), False,
                   f"{scanner}: {reason}" if scanner and not reason.startswith(scanner) else reason)
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    rows = [Decision(h, a, r, c) for (h, a, r), c in counts.items()]
    return sorted(rows, key=lambda d: (-d.count, d.host))


def _host(target: str) -> str:
    """api.anthropic.com:443 or https://x.org/path -> the host name."""
    if "://" in target:
        target = target.split("://", 1)[1].split("/", 1)[0]
    if target.startswith("[") and ":" in target.split("]", 1)[0]:  # [IPv6]:port
        return target.split("]", 1)[0] + "]"
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target or "?"
