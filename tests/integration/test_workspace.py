"""A host folder copied into a real bottle, and the agent's work brought back as a branch."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from claude_bottle import workspace

from . import support


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def make_repo(d: Path) -> Path:
    repo = d / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Host User")
    git(repo, "config", "user.email", "host@example.com")
    (repo / ".gitignore").write_text("secret.env\nbuild/\n")
    (repo / "app.py").write_text("print('v1')\n")
    (repo / "gone.txt").write_text("to be deleted\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    # The host's working tree differs from HEAD: an edit, a deletion, an untracked and two ignored files.
    (repo / "app.py").write_text("print('v2, not committed')\n")
    (repo / "gone.txt").unlink()
    (repo / "notes.md").write_text("untracked\n")
    (repo / "secret.env").write_text("TOKEN=do-not-copy\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_text("ignored\n")
    return repo


class GitWorkspaceTest(support.IntegrationTest):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.repo = make_repo(Path(tmp.name))
        self.bottle = support.TestBottle()
        self.addCleanup(self.bottle.remove)
        self.container = self.bottle.plan.names.container
        self.ws = workspace.inspect(self.repo, "default", self.bottle.name)
        self.host_state = (git(self.repo, "rev-parse", "HEAD"), git(self.repo, "status", "--porcelain"),
                           git(self.repo, "branch", "--show-current"), (self.repo / "app.py").read_text())

    def assertHostUntouched(self):
        self.assertEqual((git(self.repo, "rev-parse", "HEAD"), git(self.repo, "status", "--porcelain"),
                          git(self.repo, "branch", "--show-current"), (self.repo / "app.py").read_text()),
                         self.host_state)

    def test_copy_honours_gitignore_and_keeps_the_hosts_changes(self):
        seen = []
        workspace.copy_in(support.engine(), self.container, self.ws, lambda done, total: seen.append((done, total)))
        self.assertEqual(seen[-1], (3, 3))  # .gitignore, app.py, notes.md
        code, out = self.bottle.sh("cd /workspace && ls -A | sort | tr '\\n' ' '; echo; cat app.py; "
                                   "git branch --show-current; git log --format=%s; git status --porcelain")
        self.assertEqual(code, 0, out)
        self.assertEqual(out.splitlines(), [
            ".git .gitignore app.py notes.md ",
            "print('v2, not committed')",
            f"bottle/default/{self.bottle.name}",
            "claude-bottle: uncommitted changes on the host at start",
            "first",
        ])
        code, out = self.bottle.sh("cd /workspace && git remote; git config --get-regexp '^(remote|credential)' ; true")
        self.assertEqual(out, "")
        self.assertHostUntouched()

    def test_agent_work_comes_back_as_a_branch(self):
        workspace.copy_in(support.engine(), self.container, self.ws)
        code, out = self.bottle.sh("cd /workspace && echo 'def f(): pass' > lib.py && git add lib.py && "
                                   "git commit -q -m 'agent: add lib' && echo more >> notes.md")
        self.assertEqual(code, 0, out)
        commits = workspace.bring_back(support.engine(), self.container, self.ws)
        self.assertEqual(commits, 2)
        branch = f"bottle/default/{self.bottle.name}"
        self.assertEqual(git(self.repo, "log", "--format=%s", f"main..{branch}").splitlines(), [
            "claude-bottle: uncommitted changes when the bottle ended",
            "agent: add lib",
            "claude-bottle: uncommitted changes on the host at start",
        ])
        self.assertEqual(git(self.repo, "show", f"{branch}:lib.py"), "def f(): pass\n")
        self.assertEqual(git(self.repo, "show", f"{branch}:notes.md"), "untracked\nmore\n")
        self.assertNotIn("secret.env", git(self.repo, "ls-tree", "-r", "--name-only", branch))
        self.assertHostUntouched()

    def test_no_work_no_branch(self):
        workspace.copy_in(support.engine(), self.container, self.ws)
        self.assertEqual(workspace.bring_back(support.engine(), self.container, self.ws), 0)
        self.assertEqual(git(self.repo, "branch", "--list", "bottle/*"), "")

    def test_no_results(self):
        ws = workspace.inspect(self.repo, "default", self.bottle.name, results=False)
        self.assertIsNone(ws.branch)
        self.assertEqual(workspace.bring_back(support.engine(), self.container, ws), 0)


class StopBringsBackTest(support.IntegrationTest):
    def test_stop_of_a_detached_bottle_brings_its_work_back(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(Path(tmp))
            b = support.TestBottle(workspace_dir=repo)
            try:
                workspace.copy_in(support.engine(), b.plan.names.container, b.plan.workspace)
                b.sh("cd /workspace && echo x > new.txt && git add new.txt && git commit -q -m 'agent: new'")
                out = subprocess.run([sys.executable, "-m", "claude_bottle", "stop", b.name], capture_output=True,
                                     text=True, env={**os.environ, "PYTHONPATH": str(support.ROOT / "src")})
                self.assertEqual(out.returncode, 0, out.stderr)
                branch = f"bottle/default/{b.name}"
                self.assertEqual(out.stderr, f"results: 1 new commit on branch {branch} in {repo}\n")
                self.assertEqual(git(repo, "log", "-1", "--format=%s", branch), "agent: new\n")
                self.assertEqual(support.cleanup.of_bottle(support.engine(), b.name), [])
            finally:
                b.remove()


class PlainFolderTest(support.IntegrationTest):
    def test_folder_without_git_is_copied_whole(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "sub").mkdir()
            (d / "sub" / "a.txt").write_text("A")
            (d / "b.txt").write_text("B")
            b = support.TestBottle()
            try:
                ws = workspace.inspect(d, "default", b.name)
                self.assertFalse(ws.is_git)
                workspace.copy_in(support.engine(), b.plan.names.container, ws)
                code, out = b.sh("cd /workspace && find . -type f | sort && stat -c %U sub/a.txt")
                self.assertEqual(out.split(), ["./b.txt", "./sub/a.txt", "claude"])
            finally:
                b.remove()

    def test_missing_folder(self):
        with self.assertRaises(workspace.BottleError) as ctx:
            workspace.inspect(Path("/nonexistent/dir"), "a", "b")
        self.assertEqual(str(ctx.exception), "--workspace /nonexistent/dir: no such directory: name an existing "
                                             "folder to copy into the bottle")
