"""The sidecar's gate (Go) has its own unit tests: run them with the rest, with the Go the machine has."""

import os
import shutil
import subprocess
import unittest
from pathlib import Path

GATE = Path(__file__).resolve().parents[2] / "src" / "claude_bottle" / "sidecar" / "gate"


class GateTest(unittest.TestCase):
    def test_go_tests_of_the_gate(self):
        go = shutil.which("go")
        if go is None:
            if os.environ.get("CI") == "true":
                self.fail("CI=true needs Go for the gate's tests")
            self.skipTest("Go is not installed")
        out = subprocess.run([go, "test", "-count=1", "./..."], cwd=GATE, capture_output=True, text=True,
                             env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}, timeout=600)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_the_gate_is_formatted_and_vetted(self):
        go = shutil.which("go")
        if go is None:
            self.skipTest("Go is not installed")
        out = subprocess.run([shutil.which("gofmt") or "gofmt", "-l", "."], cwd=GATE, capture_output=True, text=True)
        self.assertEqual(out.stdout, "")
        out = subprocess.run([go, "vet", "./..."], cwd=GATE, capture_output=True, text=True, timeout=600)
        self.assertEqual(out.returncode, 0, out.stderr)
