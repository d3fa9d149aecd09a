"""`python -m claude_bottle` runs the command line."""

from .cli import run

run()
