"""The starting manifests `claude-bottle init` writes: valid as they are, with a note on every part.

JSON has no comments; the schema allows a "$comment" key in every object for them (JSON Schema's own
keyword for notes), so editors that read "$schema" still check and complete the file.
"""

from __future__ import annotations

import json

SCHEMA_URL = "https://github.com/claude-bottle/claude-bottle/raw/main/src/claude_bottle/manifest.schema.json"

_BOTTLE = {
    "$comment": "A bottle is what agents share: env values (\"${VAR}\" copies a host variable, \"?question\" asks "
                "at launch, anything else is literal), ssh hosts, and the hosts the sidecar lets it reach "
                "(Claude Code's own are always allowed). See the README's manifest section.",
    "env": {"LOG_LEVEL": "info"},
    "egress": {
        "$comment": "Host names; *.example.com matches it and every subdomain. HTTPS is inspected for secrets "
                    "on the way out except on passthrough hosts.",
        "allowlist": ["pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "github.com",
                      "codeload.github.com"],
    },
    "resources": {"$comment": "Limits of the bottle container.", "memory": "4g", "pids": 1024},
}

_AGENT = {
    "$comment": "An agent is a bottle plus what Claude is told: skills (names under ~/.claude/skills/, or paths "
                "with a / relative to this file), a prompt appended to its system prompt, and a model.",
    "bottle": "dev",
    "prompt": "You work in /workspace. Commit your work in small steps with clear messages.",
}


def manifest_text(project: bool) -> str:
    """A home manifest (your agents and bottles), or a project's (which stays untrusted until you allow it
    with `claude-bottle trust`)."""
    note = ("This project's manifest: claude-bottle reads it in this folder and below. Until you allow its exact "
            "content (claude-bottle trust), what it asks for is refused or shown as not trusted."
            if project else
            "Your home manifest: your own agents and bottles. Run `claude-bottle list` to see them and "
            "`claude-bottle start coder` to start one.")
    data = {"$schema": SCHEMA_URL, "$comment": note, "version": 1,
            "bottles": {"dev": _BOTTLE}, "agents": {"coder": _AGENT}}
    return json.dumps(data, indent=2) + "\n"
