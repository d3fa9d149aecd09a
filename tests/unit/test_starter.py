"""`claude-bottle init`: a starting manifest that loads as it is, never written over by accident."""

import json
import os
import tempfile
import unittest
from pathlib import Path

from click.testing import CliRunner

from claude_bottle import cli, manifest


class InitTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        (self.root / "home").mkdir()
        (self.root / "repo").mkdir()
        old = os.getcwd()
        os.chdir(self.root / "repo")
        self.addCleanup(os.chdir, old)
        self.env = {"CLAUDE_BOTTLE_HOME": str(self.root / "home")}

    def cli(self, *args):
        return CliRunner().invoke(cli.main, list(args), env=self.env)

    def test_the_home_manifest_loads_and_its_agent_is_listed(self):
        r = self.cli("init")
        self.assertEqual(r.exit_code, 0, r.output)
        path = self.root / "home" / "claude-bottle.json"
        self.assertEqual(r.stdout, f"wrote {path}\n")
        data = json.loads(path.read_text())
        self.assertIn("$comment", data["bottles"]["dev"])
        m = manifest.load(Path.cwd(), self.env)
        self.assertEqual(m.agent("coder").bottle, "dev")
        self.assertIn("pypi.org", m.bottles["dev"].allowlist)
        listed = self.cli("list").stdout
        self.assertRegex(listed, r"coder\s+dev\s")

    def test_an_existing_file_is_kept_unless_forced(self):
        path = self.root / "home" / "claude-bottle.json"
        path.write_text('{"agents": {}}')
        r = self.cli("init")
        self.assertEqual(r.exit_code, 1)
        self.assertEqual(r.stderr, f"Error: {path} is already there: edit it, or pass --force to replace it\n")
        self.assertEqual(path.read_text(), '{"agents": {}}')
        self.assertEqual(self.cli("init", "--force").exit_code, 0)
        self.assertIn("coder", path.read_text())

    def test_a_link_is_never_written_through(self):
        victim = self.root / "victim"
        victim.write_text("keep me\n")
        for target in (victim, self.root / "not-yet"):  # a file to overwrite, or one to create
            link = self.root / "repo" / "claude-bottle.json"
            link.unlink(missing_ok=True)
            link.symlink_to(target)
            r = self.cli("init", "--project", "--force")
            self.assertEqual(r.exit_code, 1)
            self.assertEqual(r.stderr, f"Error: {link} is a symbolic link (to {target}): remove it first if you "
                                       "want a manifest there\n")
        self.assertEqual(victim.read_text(), "keep me\n")
        self.assertFalse((self.root / "not-yet").exists())
        self.assertEqual(sorted(p.name for p in (self.root / "repo").iterdir()), ["claude-bottle.json"])

    def test_a_project_manifest_stays_untrusted_until_allowed(self):
        r = self.cli("init", "--project")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertTrue((self.root / "repo" / "claude-bottle.json").is_file())
        self.assertIn("claude-bottle trust", r.stderr)
        self.assertIn("(not trusted)", self.cli("list").stdout)
        self.assertEqual(self.cli("trust", "--yes").exit_code, 0)
        self.assertNotIn("(not trusted)", self.cli("list").stdout)


if __name__ == "__main__":
    unittest.main()
