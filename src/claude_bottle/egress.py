"""What a bottle may reach: the effective hostname allowlist behind its pipelock sidecar.

The allowlist is the union of Claude Code's own hosts (package data), the
bottle's egress.allowlist and the host names of its SSH entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

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


# ---------------------------------------------------------------- the path out

# pipelock listens here inside the network namespace the relay owns.
SIDECAR_PORT = 8888


def relay_container(name: str, image_tag: str, network: str, proxy_volume: str, proxy_dir: str,
                    labels: dict[str, str], uid: int) -> ContainerSpec:
    """The relay owns the sidecar's network namespace (the sidecar joins it) and turns the
    proxy socket, the bottle's only way out, into a connection to the sidecar's port."""
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
        volumes=((proxy_volume, proxy_dir, False),),
    )
