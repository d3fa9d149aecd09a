#!/usr/bin/env bash
# Runs claude-bottle from this clone: `./cli.sh start <agent>`. On first use (and
# after pyproject.toml changes) it installs the package and its dependencies into
# .venv beside this script, saying so, since that takes a few seconds.
set -euo pipefail
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac  # dirname without a process: this runs before every command
here=$(cd -- "$here" && pwd)
venv="$here/.venv"
fail() { echo "Error: $*" >&2; exit 1; }
if [[ ! -x $venv/bin/claude-bottle || $here/pyproject.toml -nt $venv/.installed ]]; then
  command -v python3 >/dev/null || fail "python3 is not installed: install Python 3.11 or later (Debian/Ubuntu: sudo apt install python3 python3-venv)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "claude-bottle needs Python 3.11 or later; python3 here is $(python3 -V 2>&1 | cut -d' ' -f2)"
  echo "claude-bottle: first use: installing it and its dependencies into $venv (takes a few seconds)..." >&2
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    fail "python3 cannot make a virtual environment: install its venv module (Debian/Ubuntu: sudo apt install python3-venv) and run this again"
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$here" >&2; then
    rm -rf "$venv"
    fail "installing claude-bottle's dependencies into $venv failed (pip's message is above); fix that and run this again"
  fi
  touch "$venv/.installed"
  echo "claude-bottle: installed; later runs start at once" >&2
fi
# The install is editable (a pull or an edit takes effect at once), so Python reads src/ itself. Where
# PYTHONDONTWRITEBYTECODE is set (many images and CI machines) it would compile every module on every run,
# a third of the start-up: let Python keep compiled copies beside the sources (it remakes one when its
# source is newer), which costs nothing on the runs after.
unset PYTHONDONTWRITEBYTECODE
exec "$venv/bin/claude-bottle" "$@"
