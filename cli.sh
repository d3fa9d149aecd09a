#!/usr/bin/env bash
# Runs claude-bottle from this clone: `./cli.sh start <agent>`. On first use it
# installs the package and its dependencies into .venv beside this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
if [[ ! -x $venv/bin/claude-bottle || $here/pyproject.toml -nt $venv/.installed ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$here" >&2
  touch "$venv/.installed"
fi
exec "$venv/bin/claude-bottle" "$@"
