"""A bottle's way out: its allowlist, pipelock's configuration, and what the sidecar decided.

The allowlist is the union of Claude Code's own hosts (package data), the
bottle's egress.allowlist and private hosts, and the host names of its SSH
entries. The sidecar (sidecar.py) is the only thing the bottle can reach.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from ipaddress import ip_address
from urllib.parse import urlsplit

from .manifest import Bottle, PrivateHost


@dataclass(frozen=True)
class AllowedHost:
    host: str
    reason: str  # "Claude Code", "egress.allowlist" or "ssh <Host>"


@cache
def claude_code_hosts() -> tuple[str, ...]:
    text = (Path(__file__).parent / "claude-code-hosts.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def allowlist(bottle: Bottle, api_base_url: str | None = None) -> tuple[AllowedHost, ...]:
    """Every host the bottle may reach, each once, with the first reason it is there: what the preflight
    shows is what the sidecar is given. `api_base_url` is ANTHROPIC_BASE_URL's value."""
    entries = [AllowedHost(h, "Claude Code") for h in claude_code_hosts()]
    base_url = api_base_url or bottle.literal("ANTHROPIC_BASE_URL")
    if base_url and _hostname(base_url):
        entries.append(AllowedHost(_hostname(base_url), "ANTHROPIC_BASE_URL"))
    entries += [AllowedHost(h, "egress.allowlist") for h in bottle.allowlist]
    entries += [AllowedHost(h.host, "egress.private_hosts") for h in bottle.private_hosts]
    entries += [AllowedHost(s.hostname, f"ssh {s.host}") for s in bottle.ssh]
    seen: dict[str, AllowedHost] = {}
    for entry in entries:
        seen.setdefault(entry.host, entry)
    return tuple(seen.values())


def download_hosts(hosts: Sequence[AllowedHost]) -> tuple[str, ...]:
    """The DOWNLOAD_HOSTS these allowed hosts let the bottle reach (by name, or by a `*.` wildcard)."""
    def allowed(name: str) -> bool:
        return any(h.host == name or (h.host.startswith("*.") and name.endswith(h.host[1:])) for h in hosts)
    return tuple(name for name in DOWNLOAD_HOSTS if allowed(name))


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


# ---------------------------------------------------------------- pipelock

# pipelock listens here, inside the sidecar's own network namespace; only the gate talks to it.
PIPELOCK_LISTEN = "127.0.0.1:8888"
# Away from that port, so that nothing the bottle sends can reach pipelock's metrics or stats.
METRICS_LISTEN = "127.0.0.1:9464"
# SSH is not TLS: tunnels to the manifest's SSH hosts go to a second pipelock, which judges them by name.
SSH_PIPELOCK_LISTEN, SSH_METRICS_LISTEN = "127.0.0.1:8889", "127.0.0.1:9465"
STATE_DIR = "/run/gate"  # the sidecar's tmpfs (sidecar.STATE_DIR)
# pipelock ignores shorter secrets (dlp.min_env_secret_length); we leave them out rather than have it warn.
MIN_SECRET_LENGTH = 16
# pipelock reads an inspected answer whole before it scans it, and its scan costs about a second of CPU and
# 17 MB of memory per MB (measured on the pinned release, HTTPS and plain HTTP alike): answers larger than
# this are refused (HTTPS) or cut short, which the gate turns into an error (plain HTTP). Hosts that serve
# bigger ones go in egress.passthrough; DOWNLOAD_HOSTS are by default.
MAX_INSPECTED_RESPONSE = 16 * 2**20
# Download-only hosts: they serve files and take no uploads, and no one an agent could be working for reads
# what is asked of them (unlike a registry's publish endpoint or a proxy that fetches any URL asked of it,
# which stay inspected). Passthrough only if the allowlist lets the bottle reach them at all.
DOWNLOAD_HOSTS = ("files.pythonhosted.org", "objects.githubusercontent.com",
                  "release-assets.githubusercontent.com", "codeload.github.com")
MAX_INSPECTED_BODY = 64 * 2**20


def pipelock_config(hosts: Sequence[str], private_hosts: Sequence[PrivateHost] = (),
                    passthrough: Sequence[str] = (), for_ssh: bool = False) -> dict:
    """pipelock's configuration for one bottle (schema of the pinned release, internal/config).

    Strict mode enforces the allowlist. HTTPS is intercepted with the bottle's own CA (the gate makes it),
    except on `passthrough` hosts, which pipelock judges by name alone: Claude Code's API (the gate speaks
    to it, with the user's token) and the bottle's own. Requests are scanned whole, URLs, every header
    and bodies, and blocked on a finding: the built-in credential patterns, the bottle's own secrets in
    every encoding pipelock decodes, entropy in URLs and host names, and secrets split over requests.
    Tunnels, idle times and the per-domain rate limit are raised so a long streamed answer and a busy agent
    get through. `private_hosts` pass the SSRF protection: names as trusted domains, addresses as /32s.
    `for_ssh`: the second pipelock, for SSH tunnels only, which cannot look inside them."""
    ips = sorted({h.host for h in private_hosts if _is_ip(h.host)})
    names = sorted({h.host for h in private_hosts if not _is_ip(h.host)})
    config = {
        "version": 1,
        "mode": "strict",
        "api_allowlist": list(hosts),
        "fetch_proxy": {
            "listen": PIPELOCK_LISTEN,
            # Plain-HTTP answers are read whole, to be scanned, within this many seconds; its default of 30
            # cut long streamed answers.
            "timeout_seconds": 1800,
            # pipelock cuts a longer plain-HTTP answer short without saying so; the gate notices.
            "max_response_mb": MAX_INSPECTED_RESPONSE // 2**20,
            "monitoring": {
                "entropy_threshold": 4.5,
                "subdomain_entropy_threshold": 4.0,
                "max_requests_per_minute": 6000,
            },
        },
        "forward_proxy": {"enabled": True, "max_tunnel_seconds": 6 * 3600, "idle_timeout_seconds": 1800},
        "tls_interception": {
            "enabled": True,
            "ca_cert": f"{STATE_DIR}/ca.pem",
            "ca_key": f"{STATE_DIR}/ca-key.pem",
            "passthrough_domains": list(dict.fromkeys(passthrough)),
            "max_response_bytes": MAX_INSPECTED_RESPONSE,
        },
        # Its defaults strip audio and video from answers: a download must arrive as it was sent.
        "media_policy": {"enabled": False},
        "request_body_scanning": {
            "enabled": True,
            "action": "block",
            "max_body_bytes": MAX_INSPECTED_BODY,
            "scan_headers": True,
            "header_mode": "all",
            # pipelock's default list skips User-Agent, Accept, Accept-Encoding and Content-Type, each of which
            # carries whatever the agent writes in it: only the length is left out.
            "ignore_headers": ["Content-Length"],
        },
        "cross_request_detection": {
            "enabled": True,
            "action": "block",
            # A secret split over requests is found in what they send together (query values and bodies)
            # within the window; the request that completes it is blocked.
            "fragment_reassembly": {"enabled": True, "max_buffer_bytes": 256 * 1024, "window_minutes": 2},
        },
        "dlp": {
            "include_defaults": True,
            "scan_env": True,
            "secrets_file": f"{STATE_DIR}/secrets.txt",
            "min_env_secret_length": MIN_SECRET_LENGTH,
        },
        "metrics_listen": METRICS_LISTEN,
        # To the gate, on a pipe: it counts every decision, so a flood cannot blind the report.
        "logging": {"format": "json", "output": "stdout", "include_allowed": True, "include_blocked": True},
    }
    rules = [_port_rule(host, ports) for host, ports in private_ports(private_hosts).items() if ports]
    if rules and not for_ssh:
        config["dlp"]["patterns"] = rules
    if names:
        config["trusted_domains"] = names
    if ips:
        config["ssrf"] = {"ip_allowlist": [f"{ip}/32" for ip in ips]}
    if for_ssh:
        config["fetch_proxy"]["listen"] = SSH_PIPELOCK_LISTEN
        config["metrics_listen"] = SSH_METRICS_LISTEN
        for name in ("tls_interception", "request_body_scanning", "cross_request_detection"):
            del config[name]
    return config


def private_ports(private_hosts: Iterable[PrivateHost]) -> dict[str, list[int]]:
    """Every private host, with the ports its entries name: only those may be reached. An empty list (an
    entry without a port) opens every port of its host, and the preflight says so."""
    ports: dict[str, list[int]] = {}
    every: set[str] = set()
    for entry in private_hosts:
        ports.setdefault(entry.host, [])
        if entry.port is None:
            every.add(entry.host)
        else:
            ports[entry.host].append(entry.port)
    return {host: ([] if host in every else sorted(set(p))) for host, p in ports.items()}


def _port_rule(host: str, ports: Sequence[int]) -> dict:
    """A DLP pattern of pipelock's for every URL that names `host` on a port other than `ports`. The gate
    refuses those ports in what the bottle asks for, but pipelock follows a plain-HTTP answer's redirect
    itself, and checks the host it leads to, not the port: this makes it refuse that too. A port is read as
    Go reads it (leading zeros, or none and http's own), in a URL with or without a user, and a name in any
    case, with or without its final dot. An https:// URL with no port is let be (the gate checks a tunnel's
    port itself), as pipelock judges every CONNECT, to any port, as just that."""
    allowed = {str(p) for p in ports}
    name = rf"\[{re.escape(host)}\]" if ":" in host else re.escape(host) + r"\.?"
    at, end = r"(?:[^/?#@]*@)?", r"(?:[/?#]|$)"
    branches = [rf"https?://{at}{name}:0*(?:0|{_numbers_but(allowed)}){end}"]
    if "80" not in allowed:  # not https's 443: pipelock judges a CONNECT as `https://host/`, with no port
        branches.append(rf"http://{at}{name}(?::0*)?{end}")
    return {"name": f"{host}: a port egress.private_hosts does not list", "regex": f"(?i)^(?:{'|'.join(branches)})",
            "severity": "critical"}


def _numbers_but(allowed: set[str]) -> str:
    """A regular expression for the numbers without leading zeros, 0 aside, that are not in `allowed`."""
    def but(prefix: str, width: int) -> list[str]:
        taken = {a for a in allowed if len(a) == width and a.startswith(prefix)}
        if not taken:
            rest = width - len(prefix) - (0 if prefix else 1)
            return [("" if prefix else "[1-9]") + (f"[0-9]{{{rest}}}" if rest else "")]
        if len(prefix) == width:
            return []
        out = []
        for digit in "0123456789" if prefix else "123456789":
            rest = but(prefix + digit, width)
            out += [digit + r for r in rest]
        return out
    widest = max(len(a) for a in allowed)
    return "|".join([r for width in range(1, widest + 1) for r in but("", width)] + [f"[1-9][0-9]{{{widest},}}"])


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
        return True
    except ValueError:
        return False


# A run of key material: what a token, a password or a line of a key file's base64 is made of.
_KEY_RUN = re.compile(r"[A-Za-z0-9+/=_-]{%d,}" % MIN_SECRET_LENGTH)
# `KEY=value`, `export KEY=value`, `key: value`, `"key": "value",`: a line that names its value.
_NAMED = re.compile(r'^(?:export\s+)?["\']?([A-Za-z_][A-Za-z0-9_.-]*)["\']?\s*[:=]\s*(.*?)\s*,?$')
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PEM_ARMOR = re.compile(r"^-+(BEGIN|END) [A-Z0-9 ]+-+$")
# Fields of credential files (a cloud service account, a database's settings) that every request to that
# service names: public, not secret.
_PUBLIC_FIELDS = frozenset({
    "type", "project_id", "client_email", "client_id", "auth_uri", "token_uri", "auth_provider_x509_cert_url",
    "client_x509_cert_url", "universe_domain", "region", "host", "hostname", "port", "user", "username",
    "database", "dbname", "endpoint", "url", "account", "tenant_id", "subscription_id"})


def _is_key_material(run: str) -> bool:
    """Letters of both cases and digits, or many letters and many digits (hex): not a word, a name, a number
    or a URL's path (`com/o/oauth2/auth`)."""
    digits = sum(c.isdigit() for c in run)
    letters = sum(c.isalpha() for c in run)
    both_cases = any(c.islower() for c in run) and any(c.isupper() for c in run)
    return (both_cases and digits > 0) or (digits >= 4 and letters >= 4)


def _secrets_in(text: str) -> list[str]:
    """What of one value (or a line's named value) is secret on its own: a URL's password only (the rest of
    it is an address), nothing of an e-mail address, else the text and each run of key material in it."""
    if _URL.match(text):
        try:
            return [urlsplit(text).password or ""]
        except ValueError:
            return []
    if _EMAIL.match(text):
        return []
    return [text] + [run for run in _KEY_RUN.findall(text) if _is_key_material(run)]


def secret_lines(secret_values: Iterable[str]) -> list[str]:
    """What the sidecar looks for, in every form it knows, of each long-enough line of each secret value. A
    value of one line is secret whole, as is each line of a value of several (a key file, a .env file, a
    service account's JSON), except what every request to that service says in public: key files' armor
    (`-----BEGIN PRIVATE KEY-----`), comments, addresses, and the fields of credential files that name the
    account (`"project_id"`, `"client_email"`). A line that names its value (`API_KEY=...`, `"password": "...",`)
    gives the value too, and a URL its password, and any runs of key material in them: each may leave without
    the text around it."""
    found = set()
    for value in secret_values:
        lines = [line.strip() for line in value.splitlines() if line.strip()]
        single = len(lines) == 1
        for line in lines:
            if _PEM_ARMOR.match(line) or line.startswith(("#", "//", ";")):
                continue
            named = _NAMED.match(line) if not _URL.match(line) else None
            if named:
                field, text = named.group(1), named.group(2).strip().strip("\"'")
                if field.lower() in _PUBLIC_FIELDS:
                    continue
                found.update(_secrets_in(text))
                if single or not (_URL.match(text) or _EMAIL.match(text)):
                    found.add(line)
            else:
                found.update(_secrets_in(line) if not single else [line] + _secrets_in(line))
    return sorted(secret for secret in found if len(secret) >= MIN_SECRET_LENGTH)


def unscanned(secrets: Mapping[str, str]) -> list[str]:
    """The names of the secrets (name: value) of which the sidecar looks for nothing: no line of the value is
    MIN_SECRET_LENGTH characters or more, and shorter text turns up in ordinary traffic by chance."""
    return [name for name, value in secrets.items() if value.strip() and not secret_lines([value])]


def secrets_list(secret_values: Iterable[str]) -> list[str]:
    """The lines of pipelock's secrets file: each secret line, and the forms of it pipelock does not derive
    itself (it looks for a secret's own base64, hex and base32)."""
    lines = secret_lines(secret_values)
    return sorted(set(lines) | {form for line in lines for form in _encoded_forms(line.encode())})


def _encoded_forms(secret: bytes) -> set[str]:
    """Base64 of the secret inside a longer text (`printf 'k=%s' "$SECRET" | base64`): at each of the three
    alignments, the characters that depend on the secret alone, in both alphabets; and every byte
    percent-encoded, in either case."""
    import base64

    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + secret).decode()
        core = encoded[4 if shift else 0:4 * ((shift + len(secret)) // 3)]
        if len(core) >= MIN_SECRET_LENGTH:
            forms |= {core, core.replace("+", "-").replace("/", "_")}
    percent = "".join(f"%{b:02X}" for b in secret)
    return forms | {percent, percent.lower()}


# ---------------------------------------------------------------- what happened


@dataclass(frozen=True)
class Decision:
    host: str
    decision: str  # allowed, blocked or warned
    reason: str
    count: int

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    def to_json(self) -> dict:
        return {"host": self.host, "decision": self.decision, "allowed": self.allowed, "reason": self.reason,
                "count": self.count}


@dataclass(frozen=True)
class Report:
    rows: tuple[Decision, ...]
    folded: int  # requests counted together under "(other hosts)": the gate remembers a bounded number


def _explained(reason: str) -> str:
    if "too large for scanning" in reason:
        return (f"{reason} (over {MAX_INSPECTED_RESPONSE >> 20} MB; for big downloads, list the host in "
                "egress.passthrough)")
    return reason


def report(gate_report: str) -> Report:
    """The gate's egress report (JSON it keeps counting from pipelock's log, secrets redacted)."""
    try:
        data = json.loads(gate_report or "{}")
    except ValueError:
        data = {}
    rows = [Decision(str(r.get("host", "?")), str(r.get("decision", "?")), _explained(str(r.get("reason", ""))),
                     int(r.get("count", 0))) for r in data.get("rows") or [] if isinstance(r, dict)]
    return Report(tuple(sorted(rows, key=lambda d: (-d.count, d.host))), int(data.get("folded") or 0))
