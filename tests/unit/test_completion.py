"""Shell completion through the real entry point, as bash, zsh and fish call it."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class CompletionTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        (self.home / "claude-bottle.json").write_text(json.dumps(
            {"agents": {"coder": {"bottle": "default"}, "critic": {"bottle": "default"}, "docs": {"bottle": "default"}}}))

    def complete(self, shell: str, words: str, cword: int) -> list[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLAUDE_BOTTLE_HOME": str(self.home),
               "_CLAUDE_BOTTLE_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        out = subprocess.run([sys.executable, "-c", "from claude_bottle.cli import run; run()"], env=env, cwd=self.home,
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stderr, "")
        return [line for line in out.stdout.splitlines() if line]

    def test_commands_options_and_agent_names(self):
        self.assertEqual(self.complete("bash", "claude-bottle st", 1), ["plain,start", "plain,stop"])
        self.assertEqual(self.complete("bash", "claude-bottle start c", 2), ["plain,coder", "plain,critic"])
        self.assertEqual(self.complete("zsh", "claude-bottle info --no-project d", 3),
                         ["plain", "default", "_", "plain", "docs", "_"])  # the built-in one too
        self.assertIn("plain,--dry-run", self.complete("bash", "claude-bottle start --d", 2))

    def test_a_broken_manifest_completes_nothing_and_says_nothing(self):
        (self.home / "claude-bottle.json").write_text("{ broken")
        self.assertEqual(self.complete("bash", "claude-bottle start c", 2), [])

    def test_only_bottle_names_are_offered(self):
        # A container anyone can label as ours: its "name" would reach the shell's command line as it is.
        from unittest import mock

        from claude_bottle import cli, status

        rows = [status.BottleStatus(name, "a", "b", 1, "running", False, None) for name in
                ("coder-1a2b3c", "coder-\x1b]0;pwned\x07", "coder-x\n", "coder-x; rm -rf ~")]
        with mock.patch("claude_bottle.status.bottles", return_value=rows), \
                mock.patch("claude_bottle.runtime.connect"):
            self.assertEqual(cli._complete_bottles("coder"), ["coder-1a2b3c"])

    def test_each_shells_script(self):
        for shell, marker in (("bash", "complete -o nosort -F _claude_bottle_completion claude-bottle"),
                              ("zsh", "compdef _claude_bottle_completion claude-bottle"),
                              ("fish", "complete --no-files --command claude-bottle")):
            with self.subTest(shell):
                out = subprocess.run([sys.executable, "-m", "claude_bottle", "completion", shell],
                                     env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True,
                                     text=True, timeout=30)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertIn(marker, out.stdout)


if __name__ == "__main__":
    unittest.main()
