"""claude-bottle: run Claude Code with full permissions in disposable, egress-filtered Docker containers."""

__version__ = "0.1.0"
