"""Where claude-bottle reads the user's files and keeps its own. A module of its own because every command
needs these and most need nothing else of the manifest's (whose import is a tenth of their start-up)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def home_dir(environ: Mapping[str, str]) -> Path:
    """The home claude-bottle reads from: CLAUDE_BOTTLE_HOME, else the user's home."""
    override = environ.get("CLAUDE_BOTTLE_HOME")
    return Path(override).expanduser() if override else Path.home()


def state_dir(environ: Mapping[str, str]) -> Path:
    """Where claude-bottle keeps what it must remember (allowed project files, detached runs)."""
    state = environ.get("XDG_STATE_HOME")
    base = Path(state) if state and not environ.get("CLAUDE_BOTTLE_HOME") else home_dir(environ) / ".local" / "state"
    return base / "claude-bottle"
