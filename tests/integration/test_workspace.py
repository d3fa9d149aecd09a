"""A host folder copied into a real bottle, and the agent's work brought back as a branch."""

import os
import shlex
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
        self.host_state = (git(self.repo, "rev-parse", "HEAD"), git(self.repo, "status", "--porcelain"),
                           git(self.repo, "branch", "--show-current"), (self.repo / "app.py").read_text(),
                           git(self.repo, "stash", "list"))

    def bottle(self, folder: Path | None = None) -> support.TestBottle:
        b = support.TestBottle(workspace_dir=folder or self.repo)
        self.addCleanup(b.remove)
        workspace.copy_in(support.engine(), b.plan.names.container, b.plan.workspace, b.name)
        return b

    def bring_back(self, b: support.TestBottle) -> workspace.Brought:
        return workspace.bring_back(support.engine(), b.plan.names.container, b.plan.workspace, b.name)

    def assertHostUntouched(self):
        self.assertEqual((git(self.repo, "rev-parse", "HEAD"), git(self.repo, "status", "--porcelain"),
                          git(self.repo, "branch", "--show-current"), (self.repo / "app.py").read_text(),
                          git(self.repo, "stash", "list")), self.host_state)

    def test_copy_honours_gitignore_and_keeps_the_hosts_changes(self):
        b = self.bottle()
        code, out = b.sh("cd /workspace && ls -A | sort | tr '\\n' ' '; echo; cat app.py; "
                         "git branch --show-current; git log --format=%s; git status --porcelain")
        self.assertEqual(code, 0, out)
        self.assertEqual(out.splitlines(), [
            ".git .gitignore app.py notes.md ",
            "print('v2, not committed')",
            f"bottle/default/{b.name}",
            "claude-bottle: the host's working tree at start",
            "first",
        ])
        code, out = b.sh("cd /workspace && git remote; git config --get-regexp '^(remote|credential)' ; true")
        self.assertEqual(out, "")
        self.assertHostUntouched()
        self.assertIn("refs/claude-bottle/", git(self.repo, "for-each-ref", "--format=%(refname)"))
        self.assertNotIn("claude-bottle", git(self.repo, "branch", "--list"))

    def test_agent_work_comes_back_as_a_branch(self):
        b = self.bottle()
        code, out = b.sh("cd /workspace && echo 'def f(): pass' > lib.py && git add lib.py && "
                         "git commit -q -m 'agent: add lib' && echo more >> notes.md")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        branch = f"bottle/default/{b.name}"
        self.assertEqual(brought, workspace.Brought(branch=branch, commits=2))
        self.assertEqual(git(self.repo, "log", "--format=%s", f"main..{branch}").splitlines(), [
            "claude-bottle: uncommitted changes when the bottle ended",
            "agent: add lib",
            "claude-bottle: the host's working tree at start",
        ])
        self.assertEqual(git(self.repo, "show", f"{branch}:lib.py"), "def f(): pass\n")
        self.assertEqual(git(self.repo, "show", f"{branch}:notes.md"), "untracked\nmore\n")
        self.assertNotIn("secret.env", git(self.repo, "ls-tree", "-r", "--name-only", branch))
        self.assertHostUntouched()

    def test_a_shallow_clone_travels_and_its_work_comes_back(self):
        # As CI checkouts and `git clone --depth 1` make them: HEAD's parents are not in the repository.
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "second")
        git(self.repo, "commit", "-q", "--allow-empty", "-m", "third")
        shallow = self.repo.parent / "shallow"
        subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{self.repo}", str(shallow)], check=True)
        git(shallow, "config", "user.name", "Host User")
        git(shallow, "config", "user.email", "host@example.com")
        (shallow / "local.txt").write_text("not committed\n")
        self.assertEqual(git(shallow, "rev-parse", "--is-shallow-repository"), "true\n")
        b = self.bottle(shallow)
        code, out = b.sh("cd /workspace && git log --format=%s && cat local.txt && "
                         "echo kept > kept.txt && git add kept.txt && git commit -q -m 'agent: kept' && "
                         "echo dropped > dropped.txt && git add dropped.txt && git commit -q -m 'agent: dropped' && "
                         "git reset -q --hard HEAD~1 && echo more >> local.txt")
        self.assertEqual(code, 0, out)
        self.assertEqual(out.splitlines(), ["claude-bottle: the host's working tree at start", "third",
                                            "not committed"])
        brought = self.bring_back(b)
        branch = f"bottle/default/{b.name}"
        self.assertEqual(brought, workspace.Brought(branch=branch, commits=2, extra=(f"{branch}.dropped",)))
        self.assertEqual(git(shallow, "log", "--format=%s", branch).splitlines(), [
            "claude-bottle: uncommitted changes when the bottle ended", "agent: kept",
            "claude-bottle: the host's working tree at start", "third"])
        self.assertEqual(git(shallow, "show", f"{branch}:local.txt"), "not committed\nmore\n")
        self.assertEqual(git(shallow, "log", "-1", "--format=%s", f"{branch}.dropped^"), "agent: dropped\n")
        self.assertEqual(git(shallow, "rev-parse", "--is-shallow-repository"), "true\n")
        self.assertEqual(git(shallow, "status", "--porcelain"), "?? local.txt\n")

    def test_a_branch_fetched_shallow_in_the_bottle_holds_back_only_itself(self):
        b = self.bottle()
        code, out = b.sh(
            "cd /tmp && git init -q up && cd up && for i in 1 2 3; do echo $i > f && git add f && "
            "git -c user.name=u -c user.email=u@x commit -q -m up$i; done && cd /workspace && "
            "git fetch -q --depth 1 file:///tmp/up HEAD:refs/heads/upstream && git checkout -q upstream && "
            "echo o > o.txt && git add o.txt && git commit -q -m 'agent: on upstream' && git checkout -q - && "
            "echo w > w.txt && git add w.txt && git commit -q -m 'agent: work'")
        self.assertEqual(code, 0, out)
        branch = f"bottle/default/{b.name}"
        with self.assertRaises(workspace.WorkNotBack) as caught:
            self.bring_back(b)
        self.assertIn("branch upstream: its history is not all in the bottle", str(caught.exception))
        # Everything else is back already; the bottle keeps what could not come.
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", branch), "agent: work\n")
        self.assertNotIn(f"{branch}.upstream", git(self.repo, "branch", "--list"))
        code, out = b.sh("cd /workspace && git log -1 --format=%s upstream")
        self.assertEqual(out, "agent: on upstream\n")
        self.assertEqual(b.sh("cd /workspace && git branch -q -D upstream")[0], 0)
        brought = self.bring_back(b)
        self.assertEqual((brought.branch, brought.commits), (branch, 1))
        self.assertHostUntouched()

    def test_what_the_agent_writes_as_shallow_or_grafts_hides_no_commit(self):
        """Found by attacking it: a .git/shallow (or info/grafts) linked to /dev/zero, or a FIFO, stopped the
        agent's git, and the script took the repository for one without a commit: every commit and branch was
        lost, and `stop` said it went well."""
        shallow = self.repo.parent / "shallow"
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "second")
        subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{self.repo}", str(shallow)], check=True)
        for sabotage in ("rm .git/shallow && ln -s /dev/zero .git/shallow", "rm .git/shallow && mkfifo .git/shallow",
                         "echo 'not a commit' >> .git/shallow", "mkdir -p .git/info && ln -s /dev/zero .git/info/grafts"):
            with self.subTest(sabotage):
                b = self.bottle(shallow)
                code, out = b.sh("cd /workspace && echo a > a.txt && git add a.txt && git commit -q -m 'agent: a' && "
                                 "git checkout -q -b feature && echo f > f.txt && git add f.txt && "
                                 f"git commit -q -m 'agent: feature' && git checkout -q - && {sabotage}")
                self.assertEqual(code, 0, out)
                branch = f"bottle/default/{b.name}"
                try:
                    self.bring_back(b)
                except workspace.WorkNotBack:
                    continue  # kept, and said: nothing is lost
                self.assertEqual(git(shallow, "log", "--format=%s", branch, "-1"), "agent: a\n")
                self.assertEqual(git(shallow, "log", "-1", "--format=%s", f"{branch}.feature"), "agent: feature\n")

    def test_a_root_commit_listed_as_shallow_cuts_nothing_off(self):
        """Found by attacking it: any commit of .git/shallow counted as a cut, a root commit too, and a dropped
        one was left behind for it."""
        b = self.bottle()
        branch = f"bottle/default/{b.name}"
        code, out = b.sh("cd /workspace && git checkout -q --orphan solo && echo s > s.txt && git add s.txt && "
                         "git commit -q -m 'agent: a root of its own' && git rev-parse HEAD >> .git/shallow && "
                         f"git checkout -q {branch} && git branch -q -D solo")
        self.assertEqual(code, 0, out)
        self.assertEqual(self.bring_back(b).extra, (f"{branch}.dropped",))
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", f"{branch}.dropped^"), "agent: a root of its own\n")

    def test_a_shallow_submodule_the_agent_made_keeps_its_commit_or_the_bottle(self):
        """Found by attacking it: git dropped the fetch of its commit with a warning, and it was lost."""
        b = self.bottle()
        code, out = b.sh(
            "cd /tmp && git init -q o && cd o && for i in 1 2 3; do echo $i > o && git add o && "
            "git -c user.name=u -c user.email=u@x commit -q -m o$i; done && cd /workspace && "
            "git clone -q --depth 1 file:///tmp/o sub && cd sub && echo w > w.txt && git add w.txt && "
            "git -c user.name=u -c user.email=u@x commit -q -m 'agent: in the submodule' && cd .. && "
            "git -c protocol.file.allow=always submodule add -q ./sub sub && git commit -q -m 'agent: submodule'")
        self.assertEqual(code, 0, out)
        with self.assertRaises(workspace.WorkNotBack) as caught:
            self.bring_back(b)
        self.assertIn("submodule commit", str(caught.exception))
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", f"bottle/default/{b.name}"), "agent: submodule\n")

    def test_a_damaged_object_holds_back_only_the_branch_that_needs_it(self):
        b = self.bottle()
        code, out = b.sh("cd /workspace && echo m > m.txt && git add m.txt && git commit -q -m 'agent: main' && "
                         "git checkout -q -b side && echo 'side only' > s.txt && git add s.txt && "
                         "git commit -q -m 'agent: side' && git checkout -q - && o=$(git rev-parse side:s.txt) && "
                         "f=.git/objects/$(echo $o | cut -c1-2)/$(echo $o | cut -c3-) && chmod u+w $f && "
                         "echo garbage > $f")
        self.assertEqual(code, 0, out)
        with self.assertRaises(workspace.WorkNotBack) as caught:
            self.bring_back(b)
        self.assertIn("branch side: its history is not all in the bottle", str(caught.exception))
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", f"bottle/default/{b.name}"), "agent: main\n")

    def test_no_work_no_branch(self):
        b = self.bottle()
        self.assertEqual(self.bring_back(b), workspace.Brought())
        self.assertEqual(git(self.repo, "branch", "--list", "bottle/*"), "")

    def test_repositories_inside_the_workspace_go_in_as_their_files(self):
        """A clone in a subfolder (with its own ignore rules, a link, an executable, a repository inside it,
        and a config whose filter and fsmonitor would run commands) and a `git init` without a commit: the
        agent finds their files, not empty folders, and what it changes there comes back; the host's
        repositories are not touched and nothing of the clone's config runs."""
        clone = self.repo / "vendor" / "lib"
        clone.mkdir(parents=True)
        git(clone, "init", "-q")
        (clone / ".gitignore").write_text("local.cfg\n")
        (clone / "lib.py").write_text("LIB = 1\n")
        (clone / "local.cfg").write_text("ignored by the clone's own rules\n")
        (clone / "run.sh").write_text("#!/bin/sh\necho run\n")
        (clone / "run.sh").chmod(0o755)
        (clone / "link").symlink_to("lib.py")
        git(clone, "add", "-A")
        git(clone, "-c", "user.name=u", "-c", "user.email=u@e", "commit", "-q", "-m", "lib")
        (clone / "draft.txt").write_text("not committed in the clone\n")
        # An unpacked archive can bring a .git whose config runs commands: git on the host must not read it.
        ran = Path(self.repo.parent, "inner-config-ran")
        for key in ("filter.x.clean", "filter.x.process", "core.fsmonitor"):
            git(clone, "config", key, f"touch {ran}; cat")
        (clone / ".gitattributes").write_text("* filter=x\n")
        (clone / "deep").mkdir()
        git(clone / "deep", "init", "-q")
        (clone / "deep" / "d.txt").write_text("deep\n")
        fresh = self.repo / "fresh"
        fresh.mkdir()
        git(fresh, "init", "-q")
        (fresh / "f.txt").write_text("no commit yet\n")
        def clone_state():  # the test's own git in the clone, with the clone's commands switched off
            tame = ["-c", "core.fsmonitor=false", "-c", "filter.x.clean=cat", "-c", "filter.x.process="]
            return git(clone, "rev-parse", "HEAD"), git(clone, *tame, "status", "--porcelain"), \
                git(clone, "count-objects", "-v")

        before = clone_state()
        outer_status = git(self.repo, "status", "--porcelain")
        b = self.bottle()
        code, out = b.sh("cd /workspace && find vendor fresh -path '*/.git' -prune -o -print | sort; "
                         "test -x vendor/lib/run.sh && readlink vendor/lib/link && ls -d vendor/lib/.git; "
                         "git status --porcelain; echo edited >> vendor/lib/lib.py")
        self.assertFalse(ran.exists())
        self.assertEqual(out.splitlines(), [
            "fresh", "fresh/f.txt", "vendor", "vendor/lib", "vendor/lib/.gitattributes", "vendor/lib/.gitignore",
            "vendor/lib/deep",
            "vendor/lib/deep/d.txt", "vendor/lib/draft.txt", "vendor/lib/lib.py", "vendor/lib/link",
            "vendor/lib/run.sh", "lib.py", "ls: cannot access 'vendor/lib/.git': No such file or directory"])
        self.bring_back(b)
        self.assertEqual(git(self.repo, "show", f"bottle/default/{b.name}:vendor/lib/lib.py"), "LIB = 1\nedited\n")
        self.assertFalse(ran.exists())
        self.assertEqual(clone_state(), before)
        self.assertEqual(git(self.repo, "status", "--porcelain"), outer_status)
        self.assertEqual((clone / "lib.py").read_text(), "LIB = 1\n")

    def test_no_branch_tip_holds_a_folder_git_takes_for_a_repository(self):
        """Found by attacking it: a folder laid out as a repository (committed with `git add`, or the git dir
        of `git init --separate-git-dir`) came back on the results branch as it was, and the user's first
        `git status` in it, once checked out, ran the fsmonitor of its config on the host."""
        marker = Path(self.repo.parent, "ran")
        b = self.bottle()
        code, out = b.sh(
            "cd /workspace && git init -q --bare tools.git && rm -rf tools.git/hooks tools.git/info "
            "tools.git/description && touch tools.git/objects/.keep tools.git/refs/.keep && "
            "git config -f tools.git/config core.bare false && git config -f tools.git/config core.worktree .. && "
            f"git config -f tools.git/config core.fsmonitor 'touch {marker}; false' && git add tools.git && "
            "git commit -qm tools && git checkout -q -b side && mkdir -p s/Sub && cp tools.git/HEAD s/Sub/HEAD && "
            "mkdir -p s/sub/refs && touch s/sub/refs/.keep && echo agents > s/sub/HEAD.from-bottle && "
            "git add s && git commit -qm side && git checkout -q - && "
            "mkdir x && git init -q --separate-git-dir=x/gd x && touch x/gd/objects/.keep x/gd/refs/.keep && "
            f"git config -f x/gd/config core.fsmonitor 'touch {marker}; false'")  # left uncommitted
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        branch = f"bottle/default/{b.name}"
        self.assertEqual(brought.branch, branch)
        self.assertEqual(brought.extra, (f"{branch}.side",))
        self.assertEqual(brought.renamed, (f"{branch}.side:s/Sub/HEAD", f"{branch}.side:tools.git/HEAD",
                                           f"{branch}:tools.git/HEAD", f"{branch}:x/gd/HEAD"))
        self.assertEqual(brought.clashed, (f"{branch}.side:s/sub/HEAD.from-bottle",))
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", branch),
                         "claude-bottle: names git would take for a repository's, renamed (.from-bottle)\n")
        self.assertIn("fsmonitor", git(self.repo, "show", f"{branch}:tools.git/config"))
        self.assertEqual(git(self.repo, "show", f"{branch}:tools.git/HEAD.from-bottle"),
                         git(self.repo, "show", f"{branch}~1:tools.git/HEAD"))  # the agent's commit, as it was
        for tip in (branch, f"{branch}.side"):
            checkout = Path(self.repo.parent, "checkout")
            git(self.repo, "worktree", "add", "-q", "--detach", str(checkout), tip)
            for folder in [checkout / "tools.git", checkout / "x" / "gd", checkout / "s" / "Sub", checkout / "s" / "sub"]:
                if folder.is_dir():
                    out = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True,
                                         text=True, timeout=60)
                    self.assertEqual(out.stdout, "", folder)  # the host's own repository's, and clean
            git(self.repo, "worktree", "remove", "--force", str(checkout))
        self.assertFalse(marker.exists())
        self.assertHostUntouched()
        # A second bring_back (a `stop` run again) ends the same.
        again = self.bring_back(b)
        self.assertEqual((again.branch, again.renamed), (brought.branch, brought.renamed))
        self.assertEqual(git(self.repo, "rev-list", "--count", f"{branch}~1..{branch}"), "1\n")

    def test_an_unborn_branch_and_thousands_of_branches_still_bring_the_work_back(self):
        """Found by attacking it: an orphan branch (`git checkout --orphan`) made every `stop` fail (no usable
        HEAD), and 4,000 branches did too (argument list too long)."""
        b = self.bottle()
        code, out = b.sh("cd /workspace && echo c > c.txt && git add c.txt && git commit -qm c && "
                         "for i in $(seq 4000); do echo \"create refs/heads/many/branch-number-$i HEAD\"; done | "
                         "git update-ref --stdin && git checkout -q --orphan pages && echo p > page.html")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        branch = f"bottle/default/{b.name}"
        self.assertEqual(brought.branch, branch)
        self.assertEqual(git(self.repo, "show", f"{branch}:page.html"), "p\n")
        self.assertEqual(git(self.repo, "show", f"{branch}:c.txt"), "c\n")
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", f"{branch}~1"), "c\n")  # on the agent's branch
        self.assertEqual(len(brought.extra), 4000)
        self.assertEqual(git(self.repo, "show", f"{branch}.many/branch-number-4000:c.txt"), "c\n")
        again = self.bring_back(b)  # run again, as after a failure: the same, no second commit
        self.assertEqual(git(self.repo, "rev-list", "--count", f"main..{branch}"), "3\n")
        self.assertEqual(again.branch, branch)
        self.assertHostUntouched()

    def test_a_repository_made_anew_without_a_commit_brings_the_work_back(self):
        b = self.bottle()
        code, out = b.sh("cd /workspace && rm -rf .git && git init -q && echo n > new.txt")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        self.assertEqual(git(self.repo, "show", f"{brought.branch}:new.txt"), "n\n")
        self.assertEqual(git(self.repo, "show", f"{brought.branch}:app.py"), "print('v2, not committed')\n")
        self.assertEqual(self.bring_back(b).branch, brought.branch)  # again: the same
        self.assertHostUntouched()

    def test_a_submodule_the_agent_made_comes_back_with_its_commits(self):
        """Found by attacking it: the commits of a submodule the agent made in the bottle (`git submodule add`
        of a repository in the workspace) were lost without a word: the branch named a commit that exists
        nowhere on the host."""
        b = self.bottle()
        code, out = b.sh("cd /workspace && mkdir lib && cd lib && git init -q && echo l > l.txt && git add l.txt && "
                         "git -c user.name=a -c user.email=a@b commit -qm lib && cd .. && "
                         "git -c protocol.file.allow=always submodule add -q ./lib lib && git commit -qm 'add lib'")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        gitlink = git(self.repo, "rev-parse", f"{brought.branch}:lib").strip()
        self.assertEqual(git(self.repo, "cat-file", "-t", gitlink), "commit\n")
        self.assertEqual(brought.extra, (f"{brought.branch}.submodule.{gitlink[:12]}",))
        self.assertEqual(git(self.repo, "show", f"{brought.extra[0]}:l.txt"), "l\n")
        self.assertHostUntouched()

    def test_what_a_submodule_holds_beyond_its_gitlink_comes_back(self):
        """Found by attacking it: files not committed in a submodule the agent made, and its branches past
        the commit the gitlink names, were lost with the bottle, and `stop` said all was well."""
        b = self.bottle()
        id_ = "-c user.name=a -c user.email=a@b"
        code, out = b.sh(
            f"cd /workspace && mkdir lib && cd lib && git init -q -b main && echo l > l.txt && git add l.txt && "
            f"git {id_} commit -qm lib && cd .. && git -c protocol.file.allow=always submodule add -q ./lib lib && "
            f"git commit -qm 'add lib' && cd lib && git checkout -qb side && echo s > s.txt && git add s.txt && "
            f"git {id_} commit -qm 'lib: side' && git checkout -q main && echo 'not committed' > l.txt && "
            "echo new > new.txt && "
            # A second one in a folder of the first's name, and one that holds nothing more: no branch for it.
            f"cd /workspace && mkdir -p lib2/x && cd lib2/x && git init -q && echo y > y && git add y && git {id_} commit -qm y && "
            f"cd /workspace && git -c protocol.file.allow=always submodule add -q ./lib2/x lib2/x && "
            f"mkdir same && cd same && git init -q && echo z > z && git add z && git {id_} commit -qm z && "
            "cd .. && git -c protocol.file.allow=always submodule add -q ./same same && git commit -qm more && "
            "echo w > lib2/x/w")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        work = f"{brought.branch}.in-submodule.lib"
        self.assertIn(work, brought.extra)
        self.assertIn(f"{brought.branch}.in-submodule.lib2/x", brought.extra)
        self.assertFalse([name for name in brought.extra if name.endswith("in-submodule.same")], brought.extra)
        self.assertEqual(git(self.repo, "show", f"{work}:l.txt"), "not committed\n")
        self.assertEqual(git(self.repo, "show", f"{work}:new.txt"), "new\n")
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", f"{work}^2"), "lib: side\n")
        self.assertEqual(git(self.repo, "rev-parse", f"{work}^1"), git(self.repo, "rev-parse", f"{brought.branch}:lib"))
        self.assertEqual(git(self.repo, "show", f"{brought.branch}.in-submodule.lib2/x:w"), "w\n")
        self.assertHostUntouched()
        # One that cannot be read keeps the bottle, and is named.
        code, out = b.sh("cd /workspace/lib && echo more > more.txt && rm -rf .git/objects")
        self.assertEqual(code, 0, out)
        with self.assertRaises(workspace.WorkNotBack) as caught:
            self.bring_back(b)
        self.assertIn("submodule lib", str(caught.exception))

    def test_submodules_with_spaces_nesting_a_stash_and_a_retry(self):
        """Found by attacking it: a submodule path with a space was taken for a nested repository (its commits
        lost, its gitlink made files), a submodule's stash and a submodule inside it were lost, and a stop run
        again after a failure dropped the commit a gitlink names."""
        b = self.bottle()
        id_ = "-c user.name=a -c user.email=a@b"
        add = "git -c protocol.file.allow=always submodule add -q"
        code, out = b.sh(
            f"cd /tmp && git init -q inner && git -C inner {id_} commit -q --allow-empty -m inner && "
            f"git init -q outer && cd outer && {add} /tmp/inner in && git {id_} commit -qm outer && "
            f"cd /workspace && git init -q -b main 'my lib' && cd 'my lib' && echo l > l.txt && git add l.txt && "
            f"git {id_} commit -qm lib && cd .. && {add} --name 'my name' './my lib' 'my lib' && "
            f"{add} /tmp/outer outer && git -c protocol.file.allow=always submodule update -q --init --recursive && "
            f"git commit -qm subs && cd 'my lib' && git checkout -qb feature && echo f > f.txt && git add f.txt && "
            f"git {id_} commit -qm 'lib: feature' && git checkout -q main && echo s > s.txt && git add s.txt && "
            f"git {id_} stash -q && echo u > u.txt && echo deep > /workspace/outer/in/deep.txt && "
            # A commit only the retry can take: the first stop fails on a ref of the submodule's that names nothing.
            f"cd /workspace/outer && echo o > o.txt && git add o.txt && git {id_} commit -qm 'outer: o' && cd .. && "
            "git add outer && git commit -qm 'bump outer' && "
            "echo 1234567890123456789012345678901234567890 > .git/modules/outer/refs/heads/broken")
        self.assertEqual(code, 0, out)
        with self.assertRaises(workspace.WorkNotBack) as caught:
            self.bring_back(b)
        self.assertIn("submodule outer", str(caught.exception))
        code, out = b.sh("rm /workspace/.git/modules/outer/refs/heads/broken")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        branch = brought.branch
        self.assertEqual(git(self.repo, "ls-tree", branch, "my lib").split()[:2], ["160000", "commit"])
        work = f"{branch}.in-submodule.my-lib"  # what a branch cannot hold made a dash
        self.assertEqual(git(self.repo, "show", f"{work}:u.txt"), "u\n")
        parents = git(self.repo, "log", "-1", "--format=%P", work).split()
        subjects = {git(self.repo, "log", "-1", "--format=%s", p).strip() for p in parents[1:]}
        self.assertIn("lib: feature", subjects)
        self.assertTrue(any(s.startswith("WIP on main:") for s in subjects), subjects)  # the stash
        outer = git(self.repo, "rev-parse", f"{branch}:outer").strip()
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", outer), "outer: o\n")  # the retry kept it
        self.assertEqual(git(self.repo, "show", f"{branch}.in-submodule.outer:in/deep.txt"), "deep\n")
        self.assertHostUntouched()

    def contents_on_host(self, *contents: str) -> list[bool]:
        """Whether each text is, as a file, in the host repository's objects."""
        def sha(text: str) -> str:
            return subprocess.run(["git", "hash-object", "--stdin"], input=text, capture_output=True, text=True,
                                  check=True).stdout.strip()

        return [subprocess.run(["git", "-C", str(self.repo), "cat-file", "-e", sha(text)]).returncode == 0
                for text in contents]

    def test_every_submodule_repository_comes_back_not_only_those_checked_out_at_a_path(self):
        """Found by attacking it: a submodule commit only an older commit's gitlink or a reflog named (an
        amend), a submodule's work after `git rm` of it, the stash and branches of a submodule inside another,
        and all of a submodule's when .gitmodules could not be read, were lost with stop saying all was well."""
        b = self.bottle()
        add = "git -c protocol.file.allow=always submodule add -q"
        code, out = b.sh(
            "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; set -e; "
            "mk() { git init -q -b main /tmp/$1; echo $1 > /tmp/$1/f; git -C /tmp/$1 add f; git -C /tmp/$1 commit -qm $1; }; "
            "mk sm; mk gone; mk inner; mk outer; cd /tmp/outer && "
            f"{add} /tmp/inner inner && git commit -qm inner && cd /workspace && {add} /tmp/sm sm && "
            f"{add} /tmp/gone gone && {add} /tmp/outer outer && "
            "git -c protocol.file.allow=always submodule update -q --init --recursive && git commit -qm subs && "
            "cd sm && echo VERSION-ONE > v && git add v && git commit -qm X && cd .. && git add sm && "
            "git commit -qm B && cd sm && echo VERSION-TWO > v && git add v && git commit -q --amend -m X2 && "
            "cd .. && git add sm && git commit -qm C && "
            "cd gone && echo GONE-WORK > w && git add w && git commit -qm w && cd .. && git add gone && "
            "git commit -qm 'bump gone' && git -C gone worktree add -q /tmp/gonewt && git rm -q gone && git commit -qm 'rm gone' && "
            "cd outer/inner && echo INNER-STASH > st && git add st && git stash -q && git checkout -qb side && "
            "echo INNER-SIDE > sd && git add sd && git commit -qm s && git checkout -q main && "
            # Linked worktrees of a submodule: one on a detached HEAD no ref holds, with a file not committed;
            # one on a branch, moved with `mv`, whose change is not committed; one of a submodule `git rm` removed.
            "cd /workspace/sm && git worktree add -q --detach /tmp/smwt && cd /tmp/smwt && echo SMWT > d && "
            "git add d && git commit -qm d && echo SMWT-UNCOMMITTED > u && "
            "cd /workspace/sm && git worktree add -q -b feature /workspace/smfeature && "
            "echo FEATURE-UNCOMMITTED > /workspace/smfeature/f && mv /workspace/smfeature /tmp/moved && "
            "echo GONE-WT > /tmp/gonewt/g")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        self.assertEqual(self.contents_on_host("VERSION-ONE\n", "VERSION-TWO\n", "GONE-WORK\n", "INNER-STASH\n",
                                               "INNER-SIDE\n", "SMWT\n", "SMWT-UNCOMMITTED\n",
                                               "FEATURE-UNCOMMITTED\n", "GONE-WT\n"), [True] * 9, brought.extra)
        self.assertHostUntouched()

    def test_a_head_whose_tree_git_will_not_write_still_brings_the_files_back(self):
        """Found by attacking it: a HEAD made by hand whose tree holds `..` (git mktree takes it; git will not
        write it to a commit) failed every stop, and the files not committed stayed in the bottle. They now come
        on top of it, as do a linked worktree's and a submodule's on such a HEAD."""
        b = self.bottle()
        code, out = b.sh(
            "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; set -e; "
            "bad() { local inner; inner=$(echo evil | git hash-object -w --stdin); "
            "  inner=$(printf '100644 blob %s\tconfig\n' $inner | git mktree); "
            "  git commit-tree -p HEAD -m bad $({ git ls-tree HEAD; printf '040000 tree %s\t..\n' $inner; "
            "    printf '040000 tree %s\t.\n' $inner; } | git mktree); }; "
            "git init -q -b main /tmp/sm; git -C /tmp/sm commit -q --allow-empty -m sm; cd /workspace; "
            "git -c protocol.file.allow=always submodule add -q /tmp/sm sm; git commit -qm 'adds sm'; "
            "git worktree add -q --detach /tmp/wt; "
            "git update-ref HEAD $(bad); echo TOP-UNCOMMITTED > top.txt; "
            "cd /tmp/wt; git update-ref HEAD $(bad); echo WT-UNCOMMITTED > wt.txt; "
            "cd /workspace/sm; git update-ref HEAD $(bad); echo SM-UNCOMMITTED > sm.txt")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        branch = brought.branch
        self.assertEqual(git(self.repo, "show", f"{branch}:top.txt"), "TOP-UNCOMMITTED\n")
        self.assertEqual(git(self.repo, "show", f"{branch}:app.py"), "print('v2, not committed')\n")
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", f"{branch}~1"), "bad\n")  # on top of it
        self.assertEqual(git(self.repo, "show", f"{branch}.worktree.wt:wt.txt"), "WT-UNCOMMITTED\n")
        self.assertEqual(git(self.repo, "show", f"{branch}.in-submodule.sm:sm.txt"), "SM-UNCOMMITTED\n")
        self.assertHostUntouched()

    def test_a_submodule_whose_head_is_a_pipe_is_named_at_once(self):
        """Found by attacking it: git's fetch from it waited on the pipe until the step's time ran out, and
        the error said nothing."""
        b = self.bottle()
        code, out = b.sh(
            "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; set -e; "
            "git init -q -b main /tmp/sm; git -C /tmp/sm commit -q --allow-empty -m sm; cd /workspace; "
            "git -c protocol.file.allow=always submodule add -q /tmp/sm sm; git commit -qm 'adds sm'; "
            "git -C sm commit -q --allow-empty -m more; rm .git/modules/sm/HEAD; mkfifo .git/modules/sm/HEAD")
        self.assertEqual(code, 0, out)
        with self.assertRaises(workspace.WorkNotBack) as caught:
            self.bring_back(b)
        self.assertIn("submodule sm: its HEAD is not a file git can read", str(caught.exception))

    def test_a_gitmodules_git_cannot_read_loses_nothing_of_the_submodules(self):
        b = self.bottle()
        code, out = b.sh(
            "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; set -e; "
            "git init -q -b main /tmp/sm; git -C /tmp/sm commit -q --allow-empty -m sm; cd /workspace; "
            "git -c protocol.file.allow=always submodule add -q /tmp/sm sm; git commit -qm 'adds sm'; "
            "cd sm; echo SM-COMMITTED > c2; git add c2; git commit -qm 2; echo SM-STASH > st; git add st; "
            "git stash -q; git checkout -q -b side; echo SM-SIDE > sd; git add sd; git commit -qm s; "
            "git checkout -q main; cd ..; git add sm; git commit -qm bump; printf '<<<<<<< HEAD\n' >> .gitmodules")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        self.assertEqual(self.contents_on_host("SM-COMMITTED\n", "SM-STASH\n", "SM-SIDE\n"), [True] * 3, brought.extra)

    def test_a_shallow_submodule_made_whole_after_a_stop_failed_comes_back(self):
        """Found by attacking it: the first stop had fetched its commit without the parents, and every stop
        after took that part for the whole, even once the submodule was made whole as the error said."""
        b = self.bottle()
        code, out = b.sh(
            "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; set -e; "
            "git init -q -b main /tmp/deep; for i in 1 2 3; do echo $i > /tmp/deep/f; git -C /tmp/deep add f; "
            "git -C /tmp/deep commit -qm d$i; done; cd /workspace; "
            "git -c protocol.file.allow=always submodule add -q --depth 1 file:///tmp/deep deep; git commit -qm d; "
            "echo X > deep/unc")
        self.assertEqual(code, 0, out)
        with self.assertRaises(workspace.WorkNotBack):
            self.bring_back(b)
        code, out = b.sh("cd /workspace/deep && git -c protocol.file.allow=always fetch -q --unshallow")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        self.assertEqual(git(self.repo, "log", "--format=%s", git(self.repo, "rev-parse", f"{brought.branch}:deep").strip()),
                         "d3\nd2\nd1\n")

    def test_files_written_into_a_submodule_of_the_users_come_back(self):
        """Found by attacking it: a submodule of the user's is an empty folder in the bottle; what the agent
        wrote there was lost with `stop` saying there was nothing to bring back. And one whose path had a
        space was removed from the results branch; one whose path was not ASCII made every stop fail."""
        lib = self.repo.parent / "lib"
        git(self.repo.parent, "init", "-q", "-b", "main", str(lib))
        git(lib, "-c", "user.name=u", "-c", "user.email=u@e", "commit", "-q", "--allow-empty", "-m", "lib")
        for path in ("my sub", "vendor/ünï"):
            git(self.repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), path)
        git(self.repo, "commit", "-q", "-m", "submodules")
        self.host_state = (git(self.repo, "rev-parse", "HEAD"), *self.host_state[1:])
        b = self.bottle()
        code, out = b.sh("cd /workspace && echo w > 'vendor/ünï/new.txt' && echo change >> app.py")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        for path in ("my sub", "vendor/ünï"):
            self.assertEqual(git(self.repo, "rev-parse", f"{brought.branch}:{path}"), git(self.repo, "rev-parse", f"HEAD:{path}"))
        self.assertEqual(brought.extra, (f"{brought.branch}.in-submodule.vendor/ünï",))
        self.assertEqual(git(self.repo, "show", f"{brought.extra[0]}:new.txt"), "w\n")
        self.assertHostUntouched()

    def test_a_branch_whose_name_is_not_utf8_comes_back(self):
        """Found by attacking it: read as text with the byte replaced, its name matched nothing fetched, and
        its commit was left in a hidden ref while `stop` said there was nothing to bring back."""
        b = self.bottle()
        code, out = b.sh("cd /workspace && git checkout -q -b \"$(printf 'x\\233y')\" && "
                         "git -c user.name=a -c user.email=a@b commit -q --allow-empty -m odd && git checkout -q -")
        self.assertEqual(code, 0, out)
        brought = self.bring_back(b)
        self.assertEqual(brought.extra, (f"{b.plan.workspace.branch}.x%9by",))
        self.assertEqual(git(self.repo, "log", "-1", "--format=%s", brought.extra[0]), "odd\n")
        self.assertEqual(git(self.repo, "for-each-ref", "refs/claude-bottle-incoming"), "")
        self.assertHostUntouched()

    def test_a_subfolder_travels_alone_and_its_work_comes_back_in_place(self):
        sub = self.repo / "pkg dir" / "inner"
        sub.mkdir(parents=True)
        (sub / "mod.py").write_text("x = 1\n")
        git(self.repo, "add", "pkg dir")
        git(self.repo, "commit", "-q", "-m", "pkg")
        (sub / "draft.py").write_text("draft\n")  # uncommitted, in the folder: goes in
        b = self.bottle(sub)
        code, out = b.sh(f"cd {shlex.quote(b.plan.workdir)} && pwd && ls -A /workspace | sort | tr '\\n' ' ' "
                         "&& cat draft.py && echo 'y = 2' >> mod.py && echo new > added.txt && "
                         "git show HEAD:notes.md 2>&1 | head -1")
        self.assertEqual(code, 0, out)
        lines = out.splitlines()
        self.assertEqual(lines[:2], ["/workspace/pkg dir/inner", ".git pkg dir draft"])
        self.assertIn("notes.md", lines[2])  # uncommitted beside the folder: not in the bottle at all
        self.assertIn("does not exist", lines[2])
        brought = self.bring_back(b)
        self.assertEqual(brought.commits, 1)
        self.assertEqual(git(self.repo, "show", f"{brought.branch}:pkg dir/inner/mod.py"), "x = 1\ny = 2\n")
        self.assertEqual(git(self.repo, "show", f"{brought.branch}:pkg dir/inner/added.txt"), "new\n")
        self.assertEqual(git(self.repo, "show", f"{brought.branch}:app.py"), "print('v1')\n")  # not taken

    def test_a_folder_the_repository_around_it_never_committed_travels_alone(self):
        """Found by attacking it: a project under a home folder kept in git took the whole home folder's
        uncommitted files (keys) into the bottle."""
        project = self.repo / "projects" / "foo"
        project.mkdir(parents=True)
        (project / "main.py").write_text("print(1)\n")
        (self.repo / "id_ed25519").write_text("PRIVATE KEY\n")
        ws = workspace.inspect(project, "default", "x-000000")
        self.assertFalse(ws.is_git)
        self.assertEqual(workspace.files(ws), [Path("main.py")])

    def test_links_out_of_the_repository_travel_as_links(self):
        (self.repo / "up").symlink_to("../..")
        (self.repo / "passwd").symlink_to("/etc/passwd")
        b = self.bottle()
        code, out = b.sh("cd /workspace && readlink up passwd && echo change > app.py")
        self.assertEqual(out.split(), ["../..", "/etc/passwd"])
        brought = self.bring_back(b)
        self.assertEqual(git(self.repo, "show", f"{brought.branch}:app.py"), "change\n")

    def test_no_results(self):
        ws = workspace.inspect(self.repo, "default", "x-000000", results=False)
        self.assertIsNone(ws.branch)
        self.assertFalse(ws.brings_back)


class StopBringsBackTest(support.IntegrationTest):
    def test_stop_of_a_detached_bottle_brings_its_work_back(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(Path(tmp))
            b = support.TestBottle(workspace_dir=repo)
            try:
                workspace.copy_in(support.engine(), b.plan.names.container, b.plan.workspace, b.name)
                b.sh("cd /workspace && echo x > new.txt && git add new.txt && git commit -q -m 'agent: new'")
                out = subprocess.run([sys.executable, "-m", "claude_bottle", "stop", b.name], capture_output=True,
                                     text=True, env={**os.environ, "PYTHONPATH": str(support.ROOT / "src")})
                self.assertEqual(out.returncode, 0, out.stderr)
                branch = f"bottle/default/{b.name}"
                self.assertEqual(out.stderr, f"results: 1 new commit on branch {branch} in {repo}\n")
                self.assertEqual(git(repo, "log", "-1", "--format=%s", branch), "agent: new\n")
                self.assertEqual(support.cleanup.of_bottle(support.engine(), b.name), [])
                self.assertEqual(git(repo, "for-each-ref", "refs/claude-bottle/"), "")
            finally:
                b.remove()


class PlainFolderTest(support.IntegrationTest):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name, "notes")
        (self.dir / "sub").mkdir(parents=True)
        (self.dir / "sub" / "a.txt").write_text("A")
        (self.dir / "b.txt").write_text("B")
        (self.dir / "up").symlink_to("..")
        self.b = support.TestBottle(workspace_dir=self.dir)
        self.addCleanup(self.b.remove)
        self.ws = self.b.plan.workspace
        workspace.copy_in(support.engine(), self.b.plan.names.container, self.ws, self.b.name)

    def bring_back(self):
        return workspace.bring_back(support.engine(), self.b.plan.names.container, self.ws, self.b.name)

    def test_copied_whole_and_nothing_comes_back_unchanged(self):
        self.assertFalse(self.ws.is_git)
        code, out = self.b.sh("cd /workspace && find . | sort && stat -c %U sub/a.txt && readlink up")
        self.assertEqual(out.split(), [".", "./b.txt", "./sub", "./sub/a.txt", "./up", "claude", ".."])
        self.assertEqual(self.bring_back(), workspace.Brought())
        self.assertFalse(self.ws.results_dir.exists())

    def test_changed_work_comes_back_beside_the_folder(self):
        code, out = self.b.sh("cd /workspace && echo more >> b.txt && mkdir -p new && echo n > new/n.txt && "
                              "ln -s /etc/shadow new/escape && ln -s ../../.. new/up")
        self.assertEqual(code, 0, out)
        brought = self.bring_back()
        self.assertEqual(brought.folder, self.dir.parent / f"notes.{self.b.name}")
        self.assertEqual((brought.folder / "b.txt").read_text(), "Bmore\n")
        self.assertEqual((brought.folder / "new" / "n.txt").read_text(), "n\n")
        self.assertEqual((self.dir / "b.txt").read_text(), "B")  # the user's folder is never touched
        self.assertEqual(sorted(brought.skipped), ["new/escape", "new/up", "up"])  # links that lead out of it
        self.assertFalse((brought.folder / "new" / "escape").is_symlink())

    def test_a_file_name_not_utf8_comes_back(self):
        """Found by attacking it: hashing the names failed, and every stop failed (exit 7)."""
        code, out = self.b.sh("printf x > \"/workspace/$(printf 'f\\233')\"")
        self.assertEqual(code, 0, out)
        brought = self.bring_back()
        self.assertEqual((brought.folder / os.fsdecode(b"f\x9b")).read_text(), "x")

    def test_a_git_folder_the_agent_made_comes_back_renamed(self):
        """A repository whose config runs a command at the user's first `git status` there does not come
        back as one."""
        marker = Path(self.dir.parent, "ran")
        code, out = self.b.sh(f"cd /workspace/sub && git init -q && git config core.fsmonitor 'touch {marker}; "
                              "false' && echo x > x && git init -q --bare /tmp/bare && cp -r /tmp/bare/. /workspace && "
                              "git config -f /workspace/config core.bare false && "
                              f"git config -f /workspace/config core.pager 'touch {marker}; cat' && "
                              "mkdir /workspace/up2 && cp -r /workspace/sub/.git /workspace/up2/.GIT")
        self.assertEqual(code, 0, out)  # and the folder itself laid out as a repository, and a .git in capitals
        brought = self.bring_back()
        self.assertEqual(brought.renamed, ("HEAD", "sub/.git", "up2/.GIT"))
        back = brought.folder / "sub"
        self.assertFalse((back / ".git").exists())
        self.assertIn("fsmonitor", (back / workspace.GIT_RENAMED / "config").read_text())
        for folder in (brought.folder, back, brought.folder / "up2", brought.folder / "objects"):
            out = subprocess.run(["git", "-C", str(folder), "-p", "status"], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "GIT_CEILING_DIRECTORIES": str(self.dir.parent)})
            self.assertIn("not a git repository", out.stderr, folder)
        self.assertFalse(marker.exists())

    def test_hard_links_to_a_pipe_and_a_symlink_and_a_long_git_name_come_back(self):
        """The bottle's own tar, for what unit tests build by hand: a hard link to a pipe or to a symlink, and
        a .git too long to take the suffix, neither end bringing back in a traceback nor keep the work."""
        long = ".git" + "\u200c" * 80
        code, out = self.b.sh(f"cd /workspace && echo more >> b.txt && mkfifo pipe && ln pipe to-pipe && "
                              f"ln -s b.txt s && ln s to-s && mkdir {shlex.quote(long)} && "
                              f"echo c > {shlex.quote(long)}/config")
        self.assertEqual(code, 0, out)
        brought = self.bring_back()
        self.assertEqual((brought.folder / "b.txt").read_text(), "Bmore\n")
        self.assertEqual(sorted(brought.skipped), ["pipe", "to-pipe", "up"])
        self.assertEqual(os.readlink(brought.folder / "to-s"), "b.txt")
        [(path, name)] = brought.renamed_as
        self.assertEqual(path, long)
        self.assertEqual((brought.folder / name / "config").read_text(), "c\n")

    def test_missing_folder(self):
        with self.assertRaises(workspace.BottleError) as ctx:
            workspace.inspect(Path("/nonexistent/dir"), "a", "b")
        self.assertEqual(str(ctx.exception), "--workspace /nonexistent/dir: no such directory: name an existing "
                                             "folder to copy into the bottle")


class ResultBranchTest:
    """A repository's copy in a bottle, and the agent's work back as a branch when the bottle stops: the same
    assertions on both runtimes, through the CLI (support.on_each_runtime)."""

    runtime: support.Runtime

    def setUp(self):
        from .test_sidecar import Project

        self.project = Project({"agents": {"coder": {"bottle": "default"}}}, {}, self.runtime)
        self.addCleanup(self.project.tmp.cleanup)
        self.repo = make_repo(self.project.dir)
        self.host_state = (git(self.repo, "rev-parse", "HEAD"), git(self.repo, "status", "--porcelain"),
                           git(self.repo, "branch", "--show-current"), (self.repo / "app.py").read_text())

    def start(self) -> str:
        out = self.project.cli("start", "coder", "--yes", "--detach", "--workspace", str(self.repo))
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.strip()

    def agent(self, name: str, script: str) -> str:
        out = self.project.cli("exec", name, "--", "sh", "-c", f"cd /workspace && {script}")
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def stop(self, name: str) -> str:
        out = self.project.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(support.objects_of(self.project.dir, self.runtime.engine()), set())
        return out.stderr

    def assertHostUntouched(self):
        self.assertEqual((git(self.repo, "rev-parse", "HEAD"), git(self.repo, "status", "--porcelain"),
                          git(self.repo, "branch", "--show-current"), (self.repo / "app.py").read_text()),
                         self.host_state)

    def test_the_copy_is_the_hosts_working_tree_without_ignored_files_or_remotes(self):
        name = self.start()
        try:
            seen = self.agent(name, "ls -A | sort | tr '\\n' ' '; echo; cat app.py; git branch --show-current; "
                                    "git log --format=%s; git status --porcelain; git remote")
        finally:
            self.stop(name)
        self.assertEqual(seen.splitlines(), [".git .gitignore app.py notes.md ", "print('v2, not committed')",
                                             f"bottle/coder/{name}", "claude-bottle: the host's working tree at start",
                                             "first"])
        self.assertHostUntouched()

    def test_commits_and_uncommitted_edits_come_back_as_a_branch(self):
        name = self.start()
        self.agent(name, "echo one > one.txt && git add one.txt && git -c user.name=a -c user.email=a@b "
                         "commit -qm 'agent: one' && echo two > two.txt && echo v3 > app.py")
        said = self.stop(name)
        branch = f"bottle/coder/{name}"
        self.assertIn(f"on branch {branch} in {self.repo}", said)
        self.assertEqual(git(self.repo, "show", f"{branch}:one.txt"), "one\n")
        self.assertEqual(git(self.repo, "show", f"{branch}:two.txt"), "two\n")
        self.assertEqual(git(self.repo, "show", f"{branch}:app.py"), "v3\n")
        self.assertIn("agent: one", git(self.repo, "log", "--format=%s", branch))
        self.assertHostUntouched()

    def test_no_work_no_branch(self):
        name = self.start()
        said = self.stop(name)
        self.assertNotIn("branch", said)
        self.assertEqual(git(self.repo, "branch", "--list", "bottle/*"), "")
        self.assertHostUntouched()


support.on_each_runtime(ResultBranchTest, globals())
