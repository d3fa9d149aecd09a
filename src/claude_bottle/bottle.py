"""A bottle's launch plan: what `start` will create for one agent, decided before anything exists.

The plan is plain data (shown by the preflight and by `start --dry-run`) and
names every Docker object the bottle gets, so later steps only carry it out.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from . import egress, image, pins
from .manifest import Agent, Bottle, Manifest

TOKEN_VARIABLE = "CLAUDE_BOTTLE_OAUTH_TOKEN"


@dataclass(frozen=True)
class Names:
    """The names of every Docker object of one bottle, derived from the bottle's name."""

    bottle: str

    @property
    def container(self) -> str:
        return f"cb-{self.bottle}"

    @property
    def sidecar(self) -> str:
        return f"cb-{self.bottle}-sidecar"

    @property
    def relay(self) -> str:
        return f"cb-{self.bottle}-relay"

    @property
    def egress_network(self) -> str:
        return f"cb-{self.bottle}-egress"

    @property
    def proxy_volume(self) -> str:
        return f"cb-{self.bottle}-proxy"


def new_bottle_name(agent: str) -> str:
    """Unique per run, so the same agent can run many times at once."""
    return f"{agent}-{secrets.token_hex(3)}"


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

    @property
    def names(self) -> Names:
        return Names(self.name)

    def to_json(self, image_present: bool | None = None) -> dict:
        """The plan as JSON-ready data: names, kinds and sources, never a secret value."""
        n = self.names
        return {
            "bottle": n.bottle,
            "agent": {"name": self.agent.name, "file": _str(self.agent.file)},
            "bottle_config": {
                "name": self.bottle.name,
                "trusted": self.bottle.trusted,
                "files": [str(f) for f in self.bottle.files],
            },
            "image": {
                "tag": self.image.tag,
                "base": self.image_base,
                "claude_code_version": self.claude_code_version,
                "present": image_present,
            },
            "containers": [
                {"name": n.container, "role": "bottle", "image": self.image.tag, "network": "none",
                 "user": image.BOTTLE_USER},
                {"name": n.sidecar, "role": "sidecar", "image": pins.PIPELOCK_IMAGE, "network": n.egress_network},
                {"name": n.relay, "role": "relay", "image": self.image.tag, "network": f"container:{n.sidecar}"},
            ],
            "networks": [{"name": n.egress_network, "role": "egress"}],
            "volumes": [{"name": n.proxy_volume, "role": "proxy-socket"}],
            "sidecar": {"name": n.sidecar, "image": pins.PIPELOCK_IMAGE},
            "env": [{"name": v.name, "source": v.kind, "from": v.source if v.kind == "host" else None}
                    for v in self.bottle.env],
            "skills": [{"name": s.name, "path": str(s.path)} for s in self.agent.skills],
            "ssh": [{"host": s.host, "hostname": s.hostname, "port": s.port, "user": s.user}
                    for s in self.bottle.ssh],
            "allowlist": [asdict(h) for h in self.allowlist],
            "prompt": {"length": len(self.agent.prompt), "first_line": self.agent.prompt_first_line},
            "token": {"variable": TOKEN_VARIABLE, "present": self.token_present},
        }


def plan(manifest: Manifest, agent_name: str, environ: Mapping[str, str]) -> LaunchPlan:
    """Decide everything about a launch of `agent_name`; reads files, creates nothing."""
    agent = manifest.agent(agent_name)
    bottle = manifest.bottle_of(agent)
    return LaunchPlan(
        name=new_bottle_name(agent.name),
        agent=agent,
        bottle=bottle,
        image=image.spec(manifest.image),
        image_base=manifest.image.base,
        claude_code_version=manifest.image.claude_code_version,
        allowlist=egress.allowlist(bottle),
        token_present=bool(environ.get(TOKEN_VARIABLE)),
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)
