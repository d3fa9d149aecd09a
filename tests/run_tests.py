#!/usr/bin/env python3
"""Runs claude-bottle's tests: `python3 tests/run_tests.py [unit|integration|all] [-v] [-k PATTERN]`.

Unit tests never touch Docker. Integration tests need a reachable Docker
engine, the bottle image (built once per run) and the pinned pipelock image:
without the engine or pipelock's image they skip, except under CI=true, where they fail.
Always ends with `N passed, N failed, N skipped`; exits non-zero on any failure.
"""

import argparse
import os
import subprocess
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _with_dependencies() -> None:
    """A fresh machine's python3 has none of our dependencies: then run the tests with the Python of the
    .venv that ./cli.sh makes for the CLI itself (the same packages, the same way)."""
    try:
        import click, docker, jsonschema, kubernetes, rich  # noqa: F401
        return
    except ImportError:
        if os.environ.get("CLAUDE_BOTTLE_TESTS_IN_VENV"):
            raise
    subprocess.run([str(ROOT / "cli.sh"), "--version"], check=True, stdout=subprocess.DEVNULL)
    python = ROOT / ".venv" / "bin" / "python"
    os.environ["CLAUDE_BOTTLE_TESTS_IN_VENV"] = "1"
    os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# Test the code in this checkout, whatever version of the package is installed.
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


class _CountingResult(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def _remove_shared_network() -> None:
    """The sidecars' shared network outlives bottles by design; after the tests, take it away unless a bottle
    (someone else's) still uses it."""
    try:
        import docker

        docker.from_env().networks.get("claude-bottle-egress").remove()
    except Exception:
        pass  # not there, in use, or no engine


def main() -> int:
    _with_dependencies()
    # The tests choose their runtime themselves (the Kubernetes suite names it): a user's choice for the CLI
    # must not move the Docker tests onto a cluster.
    for variable in ("CLAUDE_BOTTLE_RUNTIME", "CLAUDE_BOTTLE_CONTEXT", "CLAUDE_BOTTLE_NAMESPACE"):
        os.environ.pop(variable, None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="all", choices=["unit", "integration", "all"])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-k", dest="patterns", action="append", help="only tests whose name contains this")
    parser.add_argument("-x", "--failfast", action="store_true")
    args = parser.parse_args()

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [f"*{p}*" for p in args.patterns]
    suite = unittest.TestSuite()
    for kind in (["unit", "integration"] if args.mode == "all" else [args.mode]):
        suite.addTests(loader.discover(str(ROOT / "tests" / kind), top_level_dir=str(ROOT)))

    runner = unittest.TextTestRunner(
        verbosity=2 if args.verbose else 1, resultclass=_CountingResult, failfast=args.failfast
    )
    result = runner.run(suite)
    if args.mode != "unit":
        _remove_shared_network()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print(f"{result.passed} passed, {failed} failed, {len(result.skipped)} skipped")
    if result.skipped and os.environ.get("CI") == "true":
        print("CI=true: a skipped test is a failure here (every real part must be present)")
        return 1
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
