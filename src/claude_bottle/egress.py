"""What a bottle may reach: the effective hostname allowlist behind its pipelock sidecar.

The allowlist is the union of Claude Code's own hosts (package data), the
bottle's egress.allowlist and the host names of its SSH entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from .manifest import Bottle


@dataclass(frozen=True)
class AllowedHost:
    host: str
    reason: str  # "Claude Code", "egress.allowlist" or "ssh <Host>"


@cache
def claude_code_hosts() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("claude-code-hosts.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def allowlist(bottle: Bottle) -> tuple[AllowedHost, ...]:
    """Every host the bottle may reach, each once, with the first reason it is there."""
    entries = [AllowedHost(h, "Claude Code") for h in claude_code_hosts()]
    entries += [AllowedHost(h, "egress.allowlist") for h in bottle.allowlist]
    entries += [AllowedHost(s.hostname, f"ssh {s.host}") for s in bottle.ssh]
    seen: dict[str, AllowedHost] = {}
    for entry in entries:
        seen.setdefault(entry.host, entry)
    return tuple(seen.values())


def summary(hosts: tuple[AllowedHost, ...], shown: int = 3) -> str:
    """`N hosts allowed (a, b, c +M more)`, naming the bottle's own hosts before Claude Code's."""
    ordered = sorted(hosts, key=lambda h: h.reason == "Claude Code")
    names = [h.host for h in ordered[:shown]]
    more = f" +{len(hosts) - shown} more" if len(hosts) > shown else ""
    noun = "host" if len(hosts) == 1 else "hosts"
    return f"{len(hosts)} {noun} allowed ({', '.join(names)}{more})"
