"""./cli.sh on a machine as a new user has it: it says what it does on first use, and when Python cannot
make its .venv it says what to install and leaves nothing half made."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class CliShTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.clone = Path(tmp.name) / "clone"
        self.clone.mkdir()
        for name in ("cli.sh", "pyproject.toml", "README.md", "LICENSE"):
            if (ROOT / name).exists():
                shutil.copy2(ROOT / name, self.clone / name)
        shutil.copytree(ROOT / "src", self.clone / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        self.bin = Path(tmp.name) / "bin"
        self.bin.mkdir()

    def fake_python(self, script: str) -> None:
        """A python3 first on PATH that does `script` (sh) and otherwise is the real one."""
        path = self.bin / "python3"
        path.write_text(f"#!/bin/sh\n{script}\nexec {sys.executable} \"$@\"\n")
        path.chmod(0o755)

    def cli_sh(self, *args) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        return subprocess.run([str(self.clone / "cli.sh"), *args], capture_output=True, text=True, env=env,
                              timeout=300)

    def test_without_pythons_venv_module_it_says_what_to_install(self):
        self.fake_python('if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3"; '
                         'echo "ensurepip is not available" >&2; exit 1; fi')
        out = self.cli_sh("--version")
        self.assertEqual(out.returncode, 1)
        self.assertIn("claude-bottle: first use: installing it and its dependencies into", out.stderr)
        self.assertTrue(out.stderr.endswith(
            "Error: python3 cannot make a virtual environment: install its venv module (Debian/Ubuntu: "
            "sudo apt install python3-venv) and run this again\n"), out.stderr)
        self.assertFalse((self.clone / ".venv").exists())

    def test_an_old_python_is_named(self):
        self.fake_python('case "$1" in -c) exit 1;; -V) echo "Python 3.9.2"; exit 0;; esac')
        out = self.cli_sh("--version")
        self.assertEqual((out.returncode, out.stderr),
                         (1, "Error: claude-bottle needs Python 3.11 or later; python3 here is 3.9.2\n"))

    def test_first_use_says_so_then_runs(self):
        first = self.cli_sh("--version")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertTrue(first.stdout.startswith("claude-bottle, version"))
        self.assertIn("claude-bottle: first use: installing it and its dependencies into", first.stderr)
        self.assertIn("claude-bottle: installed; later runs start at once", first.stderr)
        again = self.cli_sh("--version")
        self.assertEqual((again.returncode, again.stderr), (0, ""))
