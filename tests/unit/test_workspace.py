"""What a bottle sends back as a folder is unpacked on the host without anything landing outside it
(workspace._extract), and git on the host runs with limits (workspace._host_git). No engine needed."""

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from claude_bottle import workspace
from claude_bottle.errors import EngineLost


def archive(*entries) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """A tar as the engine sends /workspace: every name under workspace/."""
    tar = tarfile.open(fileobj=io.BytesIO(archive_bytes(*entries)))
    return tar, [m for m in tar.getmembers() if "/" in m.name]


def archive_bytes(*entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(f"workspace/{name}")
            data = b""
            if kind == "file":
                data = extra.encode()
                info.size, info.mode = len(data), 0o4755  # a set-id bit that must not arrive
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, f"workspace/{extra}"
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bring_back_folder(folder: Path, *entries) -> workspace.Brought:
    """What bring_back() makes of a bottle whose /workspace the engine sends as `entries`, for a folder
    workspace at `folder` (the code path `stop` takes, with a fake engine)."""
    from .fake_engine import FakeEngine

    class Engine(FakeEngine):
        def get_archive_to(self, name, path, sink, limit=None):
            sink.write(archive_bytes(("dir", "", ""), *entries))

    ws = workspace.Workspace(folder, None, None, results_dir=folder.parent / f"{folder.name}.b-1", digest="0")
    return workspace.bring_back(Engine(), "b-1", ws, "b-1")


class ExtractTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        (self.root / "victim").mkdir()
        self.dest = self.root / "notes.bottle"

    def test_nothing_lands_outside_and_links_out_are_left_out_whatever_their_order(self):
        tar, members = archive(
            ("file", "a.txt", "A"),
            ("sym", "a_escape", "z_later/../victim"),  # checked before z_later exists, it would look inside
            ("sym", "z_later", "."),
            ("sym", "abs", "/etc"),
            ("sym", "up", "../victim"),
            ("sym", "fine", "a.txt"),
            ("hard", "b.txt", "a.txt"),
            ("fifo", "pipe", ""),
            ("file", "../outside.txt", "X"),
            ("file", "/tmp/claude-bottle-absolute.txt", "X"),
        )
        brought = workspace._extract(tar, members, self.dest)
        skipped, renamed = list(brought.skipped), list(brought.renamed)
        self.assertEqual(renamed, [])
        self.assertEqual(sorted(skipped), ["../outside.txt", "/tmp/claude-bottle-absolute.txt", "a_escape", "abs",
                                           "pipe", "up"])
        self.assertEqual((self.dest / "a.txt").read_text(), "A")
        self.assertEqual((self.dest / "b.txt").read_text(), "A")  # a hard link arrives as a copy
        self.assertFalse((self.dest / "b.txt").stat().st_mode & (stat.S_ISUID | stat.S_ISGID))
        self.assertEqual(os.readlink(self.dest / "fine"), "a.txt")
        self.assertEqual(os.readlink(self.dest / "z_later"), ".")
        self.assertFalse((self.root / "outside.txt").exists())
        for p in self.dest.rglob("*"):
            self.assertTrue(Path(os.path.realpath(p)).is_relative_to(self.dest.resolve()), p)

    def test_no_git_folder_comes_back_as_one(self):
        """Found by attacking it: a folder that came back held the agent's .git folders as they were, and the
        user's first `git status` in one would run its config's fsmonitor on the host."""
        tar, members = archive(
            ("dir", "lib", ""), ("dir", "lib/.git", ""),
            ("file", "lib/.git/config", "[core]\n\tfsmonitor = touch /tmp/claude-bottle-test-ran\n"),
            ("file", "lib/.git/hooks/pre-commit", "#!/bin/sh\n"), ("file", "lib/x", "x"),
            ("file", "other/.git", "gitdir: /somewhere\n"),  # a .git file naming a repository elsewhere
            ("file", "lib/.git.from-bottle/config", "the agent's own, which would meet ours"),
            ("sym", "deep/.git", "../lib/.git"),
        )
        brought = workspace._extract(tar, members, self.dest)
        skipped, renamed = list(brought.skipped), list(brought.renamed)
        self.assertEqual(renamed, ["deep/.git", "lib/.git", "other/.git"])
        self.assertEqual((skipped, brought.clashed), ([], ("lib/.git.from-bottle/config",)))
        self.assertEqual([str(p.relative_to(self.dest)) for p in self.dest.rglob(".git")], [])
        self.assertIn("fsmonitor", (self.dest / "lib" / ".git.from-bottle" / "config").read_text())
        self.assertEqual((self.dest / "other" / ".git.from-bottle").read_text(), "gitdir: /somewhere\n")
        self.assertEqual((self.dest / "lib" / "x").read_text(), "x")

    def test_no_folder_comes_back_as_a_repository_whatever_its_names(self):
        """Found by attacking it: a folder laid out as a repository's own (HEAD, objects, refs, a config), and
        .git in another case, came back as they were, and git run there used them on the host."""
        marker = self.root / "ran"
        config = f"[core]\n\tbare = false\n\tworktree = .\n\tfsmonitor = touch {marker}\n"
        bare = [("file", "HEAD", "ref: refs/heads/main\n"), ("dir", "objects", ""), ("dir", "refs", ""),
                ("dir", "refs/heads", ""), ("file", "config", config), ("file", "f", "f")]
        tar, members = archive(
            *bare,  # the folder that comes back is itself one
            *[(kind, f"sub/deeper/{name}", extra) for kind, name, extra in bare],
            ("file", "wt/HEAD", "ref: refs/heads/main\n"), ("file", "wt/commondir", "../sub/deeper\n"),
            ("file", "wt/config", config),
            ("file", "up/.GIT/config", config), ("file", "hfs/.g\u200cit/config", config),
            ("file", "./dotted/.git/config", config),
            ("file", "sub/deeper/head.from-bottle", "the agent's, which would meet ours"),
            ("file", "notes/HEAD", "a file that happens to be called HEAD\n"),
            *[(kind, f"twin/{name}", extra) for kind, name, extra in bare], ("file", "twin/head", ""),
            ("dir", "twin2/.git", ""), ("file", "twin2/.git/config", config), ("dir", "twin2/.g\u200cit", ""),
        )
        brought = workspace._extract(tar, members, self.dest)
        skipped, renamed = list(brought.skipped), list(brought.renamed)
        self.assertEqual(renamed, ["HEAD", "dotted/.git", "hfs/.g\u200cit", "sub/deeper/HEAD", "twin/HEAD", "twin/head",
                                   "twin2/.git", "twin2/.g\u200cit", "up/.GIT", "wt/HEAD"])
        self.assertEqual((skipped, brought.clashed), ([], ("sub/deeper/head.from-bottle",)))
        self.assertEqual((self.dest / "HEAD.from-bottle").read_text(), "ref: refs/heads/main\n")
        self.assertEqual((self.dest / "notes" / "HEAD").read_text(), "a file that happens to be called HEAD\n")
        folders = [self.dest, *(p for p in self.dest.rglob("*") if p.is_dir())]
        for folder in folders:  # git run anywhere in it finds no repository, and runs nothing
            out = subprocess.run(["git", "-C", str(folder), "status"], capture_output=True, text=True,
                                 env={**os.environ, "GIT_CEILING_DIRECTORIES": str(self.root)})
            self.assertIn("not a git repository", out.stderr, folder)
        self.assertFalse(marker.exists())

    def test_a_hard_link_to_what_is_not_a_file_comes_back_as_what_it_links_to(self):
        """Found by attacking it: a hard link in the bottle to a pipe or to a symlink made bringing the work
        back end in a traceback (AttributeError, KeyError, RecursionError), and the work stayed in the bottle.
        A hard link comes back as what it links to would: a file as a copy, a symlink as the same symlink
        (kept only if it resolves inside), a pipe, or a link to nothing in the archive, left out."""
        brought = bring_back_folder(
            self.root / "notes",
            ("file", "a.txt", "A"), ("fifo", "pipe", ""), ("hard", "to-pipe", "pipe"),
            ("sym", "s", "a.txt"), ("dir", "d", ""), ("hard", "d/to-s", "s"), ("hard", "to-to-s", "d/to-s"),
            ("sym", "loop1", "loop2"), ("sym", "loop2", "loop1"), ("hard", "to-loop", "loop1"),
            ("sym", "out", "/etc"), ("hard", "to-out", "out"), ("hard", "to-nothing", "nowhere"),
            ("hard", "to-d", "d"), ("hard", "to-later", "z"), ("file", "z", "Z"),
            ("hard", "b.txt", "a.txt"), ("hard", "to-b", "b.txt"),
        )
        folder = brought.folder
        self.assertEqual(brought.skipped, ("out", "pipe", "to-d", "to-later", "to-nothing", "to-out", "to-pipe"))
        self.assertEqual(os.readlink(folder / "d" / "to-s"), "a.txt")  # read from where it is, as in the bottle
        self.assertEqual(os.readlink(folder / "to-to-s"), "a.txt")
        self.assertEqual(os.readlink(folder / "to-loop"), "loop2")  # loop1 is a link to loop2
        self.assertEqual([(folder / n).read_text() for n in ("a.txt", "b.txt", "to-b", "z")], ["A", "A", "A", "Z"])
        self.assertFalse((folder / "to-pipe").exists() or (folder / "to-out").is_symlink())

    def test_a_folder_spelled_two_ways_is_one_folder(self):
        """Found by attacking it: on a host that folds case and Unicode forms (macOS), `Sub/HEAD` beside
        `sub/objects`, or a name in NFC beside the same name in NFD, is one folder laid out as a repository,
        but only names spelled alike were taken for one folder, so its HEAD came back as it was."""
        nfc, nfd = "caf\u00e9", "cafe\u0301"
        tar, members = archive(
            ("file", "Sub/HEAD", "ref: refs/heads/main\n"), ("dir", "sub/objects", ""), ("dir", "sub/refs", ""),
            ("file", f"{nfc}/HEAD", "ref: refs/heads/main\n"), ("dir", f"{nfd}/objects", ""),
            ("file", "A/b\u200c/HEAD", "ref: refs/heads/main\n"), ("file", "a/B/commondir", "../x\n"),
            ("file", "sub/head.from-bottle", "the agent's, which would meet ours"),
            ("file", f"{nfd}/HEAD.FROM-BOTTLE", "the same"),
            ("file", "other/HEAD", "a HEAD in a folder that is no repository's"), ("dir", "Others/objects", ""),
        )
        brought = workspace._extract(tar, members, self.dest)
        skipped, renamed = list(brought.skipped), list(brought.renamed)
        self.assertEqual(renamed, ["A/b\u200c/HEAD", "Sub/HEAD", f"{nfc}/HEAD"])
        self.assertEqual((skipped, brought.clashed), ([], (f"{nfd}/HEAD.FROM-BOTTLE", "sub/head.from-bottle")))
        self.assertEqual((self.dest / "Sub" / "HEAD.from-bottle").read_text(), "ref: refs/heads/main\n")
        self.assertEqual((self.dest / "other" / "HEAD").read_text(), "a HEAD in a folder that is no repository's")

    def test_a_long_name_renamed_still_fits(self):
        """Found by attacking it: a .git whose name was long (`.git` and 80 code points a Mac leaves out, 244
        bytes) could not take the suffix (ENAMETOOLONG), so the work never came back. Such a name is cut
        short, with a digest of the whole that keeps it apart from its neighbours, and the report names it."""
        long1, long2 = ".git" + "\u200c" * 80, ".git" + "\u200c" * 79 + "\u200d"  # alike where they are cut
        head = "H" + "\u200c" * 82 + "EAD"
        brought = bring_back_folder(
            self.root / "notes",
            ("file", f"{long1}/config", "one"), ("file", f"{long2}/config", "two"),
            ("file", f"x/{head}", "ref: refs/heads/main\n"), ("dir", "x/objects", ""),
            ("file", "y/.git", "gitdir: /somewhere\n"), ("file", "y/.GIT", "gitdir: /elsewhere\n"),
        )
        self.assertEqual(brought.renamed, tuple(sorted([long1, long2, f"x/{head}", "y/.GIT", "y/.git"])))
        came_back_as = dict(brought.renamed_as)
        self.assertEqual(sorted(came_back_as), sorted([long1, long2, f"x/{head}", "y/.git"]))
        self.assertEqual(came_back_as["y/.git"], ".git~2.from-bottle")  # a Mac takes .GIT.from-bottle for it
        names = [came_back_as[long1], came_back_as[long2], came_back_as[f"x/{head}"]]
        self.assertEqual(len(set(names)), 3)
        for name in names:
            self.assertLessEqual(len(name.encode()), 255)
            self.assertTrue(name.endswith(workspace.RENAMED_SUFFIX), name)
        self.assertEqual((brought.folder / came_back_as[long1] / "config").read_text(), "one")
        self.assertEqual((brought.folder / came_back_as[long2] / "config").read_text(), "two")
        self.assertEqual((brought.folder / "y" / ".GIT.from-bottle").read_text(), "gitdir: /elsewhere\n")
        self.assertEqual((brought.folder / "y" / ".git~2.from-bottle").read_text(), "gitdir: /somewhere\n")
        self.assertEqual([p for p in brought.folder.rglob("*") if workspace._folded(p.name) in (".git", "head")], [])

    def test_an_archive_cut_short_keeps_the_bottle_with_a_clear_error(self):
        from .fake_engine import FakeEngine

        class Engine(FakeEngine):
            def get_archive_to(self, name, path, sink, limit=None):
                sink.write(archive_bytes(("dir", "", ""), ("file", "notes.txt", "x" * 5000))[:1500])

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp, "notes")
            folder.mkdir()
            ws = workspace.Workspace(folder, None, None, results_dir=Path(tmp, "notes.b-1"), digest="0")
            with self.assertRaises(workspace.WorkNotBack) as caught:
                workspace.bring_back(Engine(), "b-1", ws, "b-1")
            self.assertIn("not a whole archive", str(caught.exception))
            self.assertFalse(Path(tmp, "notes.b-1").exists())

    def test_a_link_or_file_at_the_results_path_is_a_clear_error_before_anything_is_unpacked(self):
        """Found by attacking it: a dangling symlink at DIR.<bottle> passed the exists() check, and the whole
        archive was unpacked before a raw `[Errno 20] Not a directory` ended it."""
        folder = self.root / "notes"
        folder.mkdir()
        (self.root / "notes.b-1").symlink_to(self.root / "nowhere")
        with mock.patch("claude_bottle.workspace._extract") as extract:
            with self.assertRaises(workspace.WorkNotBack) as caught:
                bring_back_folder(folder, ("file", "a.txt", "A"))
        extract.assert_not_called()
        self.assertEqual(str(caught.exception), f"{self.root / 'notes.b-1'} already exists: move it away, then stop "
                                                "the bottle again")
        self.assertTrue((self.root / "notes.b-1").is_symlink())

    def test_a_failure_leaves_nothing_half_made(self):
        tar, members = archive(("file", "a.txt", "A"), ("file", "b.txt", "B"))
        with mock.patch("claude_bottle.workspace.shutil.copyfileobj", side_effect=[None, OSError("disk full")]):
            with self.assertRaises(OSError):
                workspace._extract(tar, members, self.dest)
        self.assertEqual(sorted(p.name for p in self.root.iterdir()), ["victim"])


class HostGitTest(unittest.TestCase):
    def test_host_git_has_a_time_limit_no_network_and_no_submodules(self):
        with tempfile.TemporaryDirectory() as tmp:
            bin_dir = Path(tmp)
            (bin_dir / "git").write_text("#!/bin/sh\nenv > \"$0.env\"; echo \"$@\" > \"$0.args\"; "
                                         "ulimit -v > \"$0.limit\"; sleep 30\n")
            (bin_dir / "git").chmod(0o755)
            began = time.monotonic()
            with mock.patch.dict(os.environ, {"PATH": f"{bin_dir}:{os.environ['PATH']}",
                                              workspace.STEP_SECONDS_VARIABLE: "1"}):
                with self.assertRaisesRegex(workspace.WorkNotBack, "did not finish in time"):
                    workspace._host_git(bin_dir, "fetch", "-q", "x.bundle", "HEAD:refs/heads/b")
            self.assertLess(time.monotonic() - began, 10)
            args = (bin_dir / "git.args").read_text()
            self.assertIn("-c submodule.recurse=false -c fetch.recurseSubmodules=false", args)
            env = (bin_dir / "git.env").read_text()
            self.assertIn("GIT_ALLOW_PROTOCOL=file\n", env)
            self.assertEqual(int((bin_dir / "git.limit").read_text()), workspace.HOST_GIT_MEMORY // 1024)


class EngineLostTest(unittest.TestCase):
    def test_losing_the_engine_while_the_work_comes_back_is_not_taken_for_failed_work(self):
        """The session waits for an engine that went away and tries again; WorkNotBack would make it give up."""
        ws = workspace.Workspace(Path("/w/repo"), Path("/w/repo"), "bottle/a/b-1", start="0" * 40)
        with mock.patch.object(workspace, "copied", return_value=True), \
                mock.patch.object(workspace, "_thaw"), \
                mock.patch.object(workspace, "_bring_back_git", side_effect=EngineLost("lost the connection")):
            with self.assertRaises(EngineLost) as raised:
                workspace.bring_back(None, "cb-b-1", ws, "b-1")
        self.assertNotIsInstance(raised.exception, workspace.WorkNotBack)


class ExtraBranchesTest(unittest.TestCase):
    def test_every_ref_lands_on_a_name_of_its_own(self):
        refs = ["refs/heads/x/y", "refs/heads/x.y", "refs/heads/stash", "refs/heads/tag.v1", "refs/stash",
                "refs/stash-entries/1", "refs/stash-entries/2", "refs/tags/v1", "refs/notes/commits",
                "refs/heads/dropped", "refs/dropped-commits"]
        got = workspace._extra_branches("bottle/a/b", refs)
        self.assertEqual(got, {
            "refs/heads/x/y": "refs/heads/bottle/a/b.x/y", "refs/heads/x.y": "refs/heads/bottle/a/b.x.y",
            "refs/heads/stash": "refs/heads/bottle/a/b.stash", "refs/heads/tag.v1": "refs/heads/bottle/a/b.tag.v1",
            "refs/stash": "refs/heads/bottle/a/b.stash.2", "refs/stash-entries/1": "refs/heads/bottle/a/b.stash-1",
            "refs/stash-entries/2": "refs/heads/bottle/a/b.stash-2", "refs/tags/v1": "refs/heads/bottle/a/b.tag.v1.2",
            "refs/notes/commits": "refs/heads/bottle/a/b.notes.commits",
            "refs/heads/dropped": "refs/heads/bottle/a/b.dropped", "refs/dropped-commits": "refs/heads/bottle/a/b.dropped.2"})
        self.assertEqual(len(set(got.values())), len(got))
        self.assertEqual(workspace._extra_branches("b", ["refs/remotes/origin/x", "refs/replace/abc"]), {})

    def test_no_name_is_a_folder_of_another(self):
        """Found by attacking it: a branch `tag.v1` and a tag `v1/rc` landed on `.tag.v1` and `.tag.v1/rc`, which
        git cannot hold both of, so bringing the work back failed on every retry."""
        refs = ["refs/heads/tag.v1", "refs/tags/v1/rc", "refs/tags/v1/rc/2", "refs/heads/stash-1/x",
                "refs/stash", "refs/stash-entries/1", "refs/heads/notes.n", "refs/notes/n/deep", "refs/heads/a/b",
                "refs/heads/a-b.2", "refs/submodule-work/lib", "refs/submodule-work/lib/x", "refs/submodule-work-3",
                "refs/heads/in-submodule.lib"]
        got = workspace._extra_branches("bottle/a/b", refs)
        self.assertEqual(len(got), len(refs))
        with tempfile.TemporaryDirectory() as tmp:  # git itself takes every one of them, beside the results branch
            repo = Path(tmp)
            workspace._git(repo, "init", "-q")
            workspace._git(repo, "-c", "user.name=u", "-c", "user.email=u@e", "commit", "-q", "--allow-empty",
                           "-m", "i")
            for to in ["refs/heads/bottle/a/b", *got.values()]:
                workspace._git(repo, "update-ref", to, "HEAD")


    def test_many_refs_take_little_time(self):
        """Found by attacking it: each name was checked against every name taken before it (8,000 refs took
        19 s of the host's CPU)."""
        refs = [f"refs/heads/b{i}" for i in range(20000)] + [f"refs/tags/b{i}" for i in range(5000)]
        began = time.process_time()
        got = workspace._extra_branches("bottle/a/b", refs)
        self.assertLess(time.process_time() - began, 2)
        self.assertEqual(len(set(got.values())), len(refs))
        self.assertEqual(got["refs/tags/b7"], "refs/heads/bottle/a/b.tag.b7")


class LandTest(unittest.TestCase):
    """What a bundle brought lands on its branches all at once, a branch moving only forward unless it is ours
    to set again, and nothing of ours is left in the repository."""

    def test_forward_only_unless_ours_and_nothing_left_behind(self):
        def git(repo, *args, env=None):
            return workspace._git(repo, "-c", "user.name=u", "-c", "user.email=u@e", *args, env=env).strip()

        with tempfile.TemporaryDirectory() as tmp:
            bottle, host = Path(tmp, "bottle"), Path(tmp, "host")
            for repo in (bottle, host):
                repo.mkdir()
                git(repo, "init", "-q")
            git(bottle, "commit", "-q", "--allow-empty", "-m", "a")
            a = git(bottle, "rev-parse", "HEAD")
            git(host, "fetch", "-q", str(bottle), "HEAD:refs/heads/b")
            git(bottle, "commit", "-q", "--allow-empty", "-m", "b")
            b = git(bottle, "rev-parse", "HEAD")
            bundle = Path(tmp, "x.bundle")
            git(bottle, "bundle", "create", "-q", str(bundle), "HEAD", f"^{a}")
            users = git(host, "commit-tree", "-m", "the user's", "-p", a, f"{a}^{{tree}}")
            ours = git(host, "commit-tree", "-m", workspace.INERT_MESSAGE, "-p", a, f"{a}^{{tree}}",
                       env={"GIT_COMMITTER_NAME": workspace.GIT_IDENTITY[0]})
            for at, lands in ((users, False), (ours, True), (a, True)):
                git(host, "update-ref", "refs/heads/b", at)
                tips = workspace._tips(host, "refs/heads/b")
                with open(bundle, "rb") as f:
                    land = lambda: workspace._land(host, "b-1", f"/proc/self/fd/{f.fileno()}", f.fileno(),
                                                   {"HEAD": b}, {"HEAD": "refs/heads/b"}, tips)
                    if lands:
                        land()
                    else:
                        with self.assertRaisesRegex(workspace.WorkNotBack, "has commits the bottle's does not have"):
                            land()
                self.assertEqual(git(host, "rev-parse", "refs/heads/b"), b if lands else users)
                self.assertEqual(git(host, "for-each-ref", "refs/claude-bottle-incoming/"), "")
            # What a stop killed part-way left goes with the hidden ref, when the work is back or discarded.
            git(host, "update-ref", "refs/claude-bottle-incoming/b-1/HEAD", a)
            workspace.release(workspace.Workspace(host, host, "b"), "b-1")
            self.assertEqual(git(host, "for-each-ref", "refs/claude-bottle-incoming/"), "")


    def test_a_branch_in_the_way_is_named(self):
        with tempfile.TemporaryDirectory() as tmp:
            host = Path(tmp)
            workspace._git(host, "init", "-q")
            workspace._git(host, "-c", "user.name=u", "-c", "user.email=u@e", "commit", "-q", "--allow-empty",
                           "-m", "a")
            new = ["refs/heads/bottle/coder/x", "refs/heads/bottle/coder/x.feature"]
            workspace._check_room(host, new)
            workspace._check_room(host, [])
            for in_the_way in ("bottle", "bottle/coder", "bottle/coder/x/y", "bottle/coder/x.feature/z"):
                workspace._git(host, "branch", in_the_way)
                with self.assertRaisesRegex(workspace.WorkNotBack, f"branch {in_the_way} in {host} is in the way of "
                                            "bottle/coder/x"):
                    workspace._check_room(host, new)
                workspace._git(host, "branch", "-D", in_the_way)
            workspace._git(host, "branch", "bottle/coder/xy")  # beside, not in the way
            workspace._git(host, "branch", "bottle/coder/x.featured/z")
            workspace._check_room(host, new)


class InBottleTest(unittest.TestCase):
    def test_a_time_out_in_the_bottle_says_what_sets_the_limit(self):
        from .fake_engine import FakeEngine

        engine = FakeEngine()
        engine.exec_results["timeout"] = (124, b"")
        with self.assertRaises(workspace.BottleError) as caught:
            workspace._in_bottle(engine, "b-1", "sleep 1000", "committing the agent's uncommitted changes")
        self.assertIn("did not finish in time", str(caught.exception))
        self.assertIn(f"{workspace.STEP_SECONDS_VARIABLE} sets the limit", str(caught.exception))


class NoHooksTest(unittest.TestCase):
    def test_the_users_hooks_and_fsmonitor_do_not_run_at_start_or_stop(self):
        """Found by attacking it: the repository's reference-transaction hook ran at stop (and its fsmonitor at
        start), though the README says no hooks run."""
        import subprocess

        with tempfile.TemporaryDirectory() as tmp:
            repo, hooks, ran = Path(tmp, "repo"), Path(tmp, "hooks"), Path(tmp, "ran")
            hooks.mkdir()
            for hook in ("reference-transaction", "post-index-change", "fsmonitor"):
                (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {ran}\n")
                (hooks / hook).chmod(0o755)

            def git(*args):
                subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

            repo.mkdir()
            git("init", "-q", "-b", "main")
            git("-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "--allow-empty", "-m", "first")
            git("config", "core.hooksPath", str(hooks))
            git("config", "core.fsmonitor", str(hooks / "fsmonitor"))
            (repo / "new.txt").write_text("x\n")
            ws = workspace.prepare(workspace.inspect(repo, "a", "a-000000"), "a-000000")
            workspace.release(ws, "a-000000")
            self.assertFalse(ran.exists(), ran.read_text() if ran.exists() else "")


class UnreadableTest(unittest.TestCase):
    """Found by attacking it: a folder of the workspace that the user cannot read (one another user owns,
    such as a database's data folder) made prepare() end in a PermissionError traceback. Run as a user
    without the right to read it: as root, `nobody` through setpriv."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.root.chmod(0o755)
        (self.root / "tmp").mkdir()
        self.as_root = os.geteuid() == 0
        if self.as_root and not shutil.which("setpriv"):
            self.skipTest("running as root without setpriv: no user to lack the right to read")

    def git(self, repo: Path, *args: str) -> None:
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@e", *args], check=True,
                       capture_output=True)

    def lock(self, folder: Path) -> None:
        """Make `folder` unreadable to the user who runs prepare()."""
        if self.as_root:
            for path in [self.root, *self.root.rglob("*")]:
                os.lchown(path, 65534, 65534)
            os.chown(folder, 0, 0)
            folder.chmod(0o700)
        else:
            folder.chmod(0)
            self.addCleanup(folder.chmod, 0o755)

    def prepare(self, ws: workspace.Workspace) -> subprocess.CompletedProcess:
        probe = ("import sys; from pathlib import Path; from claude_bottle import workspace\n"
                 "p = Path(sys.argv[1]); git = sys.argv[2] == 'git'\n"
                 "ws = workspace.Workspace(p, p if git else None, 'b/a/a-1' if git else None)\n"
                 "try: workspace.prepare(ws, 'a-1')\n"
                 "except workspace.BottleError as e: print(f'Error: {e}'); sys.exit(3)")
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if self.as_root else []
        env = {**os.environ, "PYTHONPATH": str(Path(workspace.__file__).parents[1]), "HOME": str(self.root),
               "TMPDIR": str(self.root / "tmp")}
        return subprocess.run([*user, sys.executable, "-c", probe, str(ws.path), "git" if ws.is_git else "folder"],
                              capture_output=True, text=True, env=env, timeout=60)

    def test_a_repository_with_a_folder_it_cannot_read(self):
        repo = self.root / "repo"
        (repo / "data").mkdir(parents=True)
        (repo / "data" / ".gitkeep").write_text("")
        (repo / "a").write_text("a\n")
        self.git(repo, "init", "-q")
        self.git(repo, "add", ".")
        self.git(repo, "commit", "-q", "-m", "i")
        self.lock(repo / "data")
        out = self.prepare(workspace.Workspace(repo, repo, "b/a/a-1"))
        self.assertEqual((out.returncode, out.stderr), (3, ""))
        self.assertEqual(out.stdout, f"Error: cannot read {repo}/data/.gitkeep in the workspace (Permission denied): "
                                     "make it readable to you, or name a folder without it with --workspace\n")
        self.assertEqual(workspace.hidden_refs(repo), {})
        self.assertEqual(list((self.root / "tmp").iterdir()), [])

    def test_a_folder_with_a_folder_or_a_file_it_cannot_read(self):
        folder = self.root / "notes"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "x").write_text("x\n")
        (folder / "a").write_text("a\n")
        self.lock(folder / "data")
        out = self.prepare(workspace.Workspace(folder, None, None))
        self.assertEqual((out.returncode, out.stderr), (3, ""))
        self.assertEqual(out.stdout, f"Error: cannot read {folder}/data in the workspace (Permission denied): make it "
                                     "readable to you, or name a folder without it with --workspace\n")
        if self.as_root:
            os.chown(folder / "data", 65534, 65534)
            os.chown(folder / "data" / "x", 0, 0)
            (folder / "data" / "x").chmod(0o600)
        else:
            (folder / "data").chmod(0o755)
            (folder / "data" / "x").chmod(0)
        out = self.prepare(workspace.Workspace(folder, None, None))
        self.assertEqual((out.returncode, out.stderr), (3, ""))
        self.assertIn(f"Error: cannot read {folder}/data/x in the workspace (Permission denied)", out.stdout)


class HiddenRefSweepTest(unittest.TestCase):
    """A start commit's hidden ref outlives a `start` or `stop` killed at the wrong moment; the next start
    in the repository drops it, and only it: not a start under way, not another engine's bottle, not a
    bottle still on this engine, not a ref it cannot read."""

    def setUp(self):
        from claude_bottle import cleanup

        from .fake_engine import FakeEngine

        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.repo = self.dir / "repo"
        self.repo.mkdir()
        for args in (["init", "-q"], ["-c", "user.name=u", "-c", "user.email=u@e", "commit", "-q", "--allow-empty",
                                      "-m", "base"]):
            workspace._git(self.repo, *args)
        self.engine = FakeEngine()
        self.cleanup = cleanup

    def start(self, name: str, owner: str, engine: str | None = None) -> None:
        from claude_bottle import session

        ws = workspace.Workspace(self.repo, self.repo, f"bottle/a/{name}")
        workspace.prepare(ws, name, {"owner": owner, "engine": engine or session.engine_id(self.engine)})

    def refs(self) -> set[str]:
        return set(workspace.hidden_refs(self.repo))

    def test_only_refs_of_dead_starts_whose_bottle_is_gone_are_dropped(self):
        from claude_bottle import session
        from claude_bottle.docker import Found

        held = self.cleanup.SessionLock.acquire(self.dir / "sessions")
        self.addCleanup(held.release)
        dead = self.cleanup.SessionLock.acquire(self.dir / "sessions")
        dead_label = dead.label()
        dead.release()
        self.start("killed-1", dead_label)
        self.start("under-way-2", held.label())
        self.start("elsewhere-3", dead_label, engine="kubernetes https://cluster:6443 ns")
        self.start("detached-4", dead_label)
        self.engine.objects[("container", "cb-detached-4")] = Found(
            "container", "cb-detached-4", {self.cleanup.LABEL_BOTTLE: "detached-4"})
        workspace._git(self.repo, "update-ref", "refs/claude-bottle/older-5", "HEAD")  # no origin recorded
        precious = self.dir / "precious"  # a file a forged origin names as its owner's lock: never removed
        precious.write_text("keep")
        self.start("forged-6", self.cleanup.owner_label(precious))
        self.assertEqual(workspace.hidden_refs(self.repo)["killed-1"],
                         {"owner": dead_label, "engine": session.engine_id(self.engine)})
        session.forget_dead_starts(self.engine, self.repo)
        self.assertEqual(self.refs(), {"under-way-2", "elsewhere-3", "detached-4", "older-5", "forged-6"})
        held.release()
        session.forget_dead_starts(self.engine, self.repo)
        self.assertEqual(self.refs(), {"elsewhere-3", "detached-4", "older-5", "forged-6"})
        self.assertEqual(precious.read_text(), "keep")

    def test_an_origin_with_runs_of_spaces_reads_back_exactly(self):
        label = "lock:host:/home/a  b/\tc.lock"
        self.start("spaced-1", label)
        self.assertEqual(workspace.hidden_refs(self.repo)["spaced-1"]["owner"], label)

    def test_an_origin_that_is_not_ours_is_left_alone(self):
        import base64

        for payload in (b"[" * 5000, b'{"engine": "docker unix:///fake.sock", "owner": 5}', b"\xff\xfe", b"[]"):
            message = "claude-bottle start " + base64.urlsafe_b64encode(payload).decode()
            workspace._git(self.repo, "update-ref", "--create-reflog", "-m", message, "refs/claude-bottle/odd-1",
                           "HEAD")
            self.assertEqual(workspace.hidden_refs(self.repo), {"odd-1": None}, payload[:20])
            from claude_bottle import session

            session.forget_dead_starts(self.engine, self.repo)
            self.assertEqual(self.refs(), {"odd-1"})
            workspace._git(self.repo, "update-ref", "-d", "refs/claude-bottle/odd-1")


class InnerRepositoryTest(unittest.TestCase):
    """What prepare() puts in the start commit for repositories inside the workspace (found by attacking
    it): what the inner repository tracks and what its own rules let through, whatever the names."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.repo = Path(tmp.name, "repo")
        self.repo.mkdir()
        self.git(self.repo, "init", "-q")
        (self.repo / "a").write_text("a\n")
        self.git(self.repo, "add", "a")
        self.git(self.repo, "commit", "-q", "-m", "i")

    @staticmethod
    def git(repo: Path, *args: str) -> str:
        return workspace._git(repo, "-c", "user.name=u", "-c", "user.email=u@e", *args, fs=True)

    def inner(self, path: str) -> Path:
        folder = self.repo / path
        folder.mkdir(parents=True, exist_ok=True)
        self.git(folder, "init", "-q")
        return folder

    def start_tree(self, folder: Path | None = None) -> dict[str, str]:
        ws = workspace.Workspace(folder or self.repo, self.repo, "bottle/a/a-1")
        start = workspace.prepare(ws, "a-1", {}).start
        listed = self.git(self.repo, "ls-tree", "-r", "-z", start).split("\0")
        return {entry.split("\t", 1)[1]: entry.split()[0] for entry in listed if entry}

    def test_tracked_files_its_rules_ignore_and_its_own_excludes(self):
        clone = self.inner("in")
        (clone / ".gitignore").write_text("dist/\n")
        (clone / "dist").mkdir()
        (clone / "dist" / "v.js").write_text("tracked though ignored\n")
        self.git(clone, "add", "-f", ".")
        self.git(clone, "commit", "-q", "-m", "i")
        (clone / "dist" / "w.js").write_text("ignored\n")
        (clone / "secret").write_text("its own .git/info/exclude\n")
        (clone / ".git" / "info" / "exclude").write_text("secret\n")
        (self.repo / ".git" / "info" / "exclude").write_text("/build/\n")  # the outer's: not for the inner
        (clone / "build").mkdir()
        (clone / "build" / "b").write_text("b\n")
        self.assertEqual(sorted(self.start_tree()), ["a", "in/.gitignore", "in/build/b", "in/dist/v.js"])

    def test_a_tracked_file_made_a_repository_and_names_that_are_not_utf8(self):
        (self.repo / "a").unlink()
        self.inner("a")
        (self.repo / "a" / "x").write_text("x\n")
        odd = os.fsdecode(b"l\xe9 :*[x]")
        self.inner(odd)
        (self.repo / odd / "f").write_text("f\n")
        self.assertEqual(sorted(self.start_tree()), sorted(["a/x", f"{odd}/f"]))

    def test_a_tracked_folder_made_a_repository_at_any_depth(self):
        """Found by attacking it: a folder the repository around it tracks, made a repository of its own (a
        `git init` in it), was judged by the outer repository's ignore rules at depth 1, and inside an inner
        repository nothing of it came in at all. Its own rules decide what is untracked in it; what the
        repository around it tracks there still goes in (the start commit would otherwise delete it)."""
        def fill(outer: Path) -> None:
            (outer / "lib" / "build").mkdir(parents=True)
            (outer / "lib" / "x").write_text("x\n")
            (outer / "lib" / "build" / "kept").write_text("tracked by the repository around it\n")
            self.git(outer, "add", ".")
            self.git(outer, "commit", "-q", "-m", "lib")
            self.git(outer / "lib", "init", "-q")
            (outer / "lib" / ".git" / "info" / "exclude").write_text("secret\nbuild/\n")
            (outer / "lib" / "secret").write_text("its own exclude keeps it out\n")
            (outer / "lib" / "new").write_text("n\n")
            (outer / "lib" / "x").write_text("x, changed\n")

        fill(self.repo)
        fill(self.inner("in"))
        tree = self.start_tree()
        self.assertEqual(sorted(tree), ["a", "in/lib/build/kept", "in/lib/new", "in/lib/x", "lib/build/kept",
                                        "lib/new", "lib/x"])
        start = self.git(self.repo, "rev-parse", "refs/claude-bottle/a-1").strip()
        for path in ("lib/x", "in/lib/x"):
            self.assertEqual(self.git(self.repo, "show", f"{start}:{path}"), "x, changed\n")

    def test_a_sha256_repository_inside_a_sha1_one_and_the_other_way_round(self):
        """Found by attacking it: the empty repository of ours that reads an inner repository's index was
        SHA-1, so git read a SHA-256 index as garbage (one entry) or refused it (more), and the bottle could not
        start. The object format comes from the inner repository's config, read as data and checked."""
        clone = self.repo / "in256"
        clone.mkdir()
        self.git(clone, "init", "-q", "--object-format=sha256")
        (clone / "dist").mkdir()
        for name in ("t", "t2", "dist/v"):
            (clone / name).write_text("t\n")
        (clone / ".git" / "info" / "exclude").write_text("secret\ndist/\n")
        self.git(clone, "add", "-f", ".")  # read wrongly, its index would not list dist/v, which goes in
        self.git(clone, "commit", "-q", "-m", "i")
        (clone / "u").write_text("u\n")
        (clone / "secret").write_text("s\n")
        expected = ["in256/dist/v", "in256/t", "in256/t2", "in256/u"]
        self.assertEqual(sorted(self.start_tree()), ["a", *expected])
        outer = Path(self.repo.parent, "outer256")
        outer.mkdir()
        self.git(outer, "init", "-q", "--object-format=sha256")
        (outer / "o").write_text("o\n")
        self.git(outer, "add", "o")
        self.git(outer, "commit", "-q", "-m", "i")
        shutil.move(self.repo / "in256", outer / "in256")
        inner1 = self.inner("../outer256/in1")
        (inner1 / "f").write_text("f\n")
        self.git(inner1, "add", "f")
        self.git(inner1, "commit", "-q", "-m", "i")

        def start_tree(bottle_name: str) -> list[str]:
            start = workspace.prepare(workspace.Workspace(outer, outer, "bottle/a/a-1"), bottle_name, {}).start
            self.assertEqual(len(start), 64)
            return sorted(filter(None, self.git(outer, "ls-tree", "-r", "--name-only", "-z", start).split("\0")))

        self.assertEqual(start_tree("a-1"), ["in1/f", *expected, "o"])
        config = outer / "in1" / ".git" / "config"
        config.write_text("[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = sha1\n")
        self.assertEqual(start_tree("a-2"), ["in1/f", *expected, "o"])
        with config.open("a") as f:  # what would end up in our config, and in its own lines
            f.write("[extensions]\n\tobjectformat = \"sha256\\n[core]\\n\tfsmonitor = x\"\n")
        with self.assertRaisesRegex(workspace.BottleError, "in1/.git/config, of a repository in the workspace, names "
                                                           "an object format git does not know"):
            start_tree("a-3")

    def test_a_subfolder_whose_name_starts_with_a_dot(self):
        (self.repo / ".github").mkdir()
        (self.repo / ".github" / "w.yml").write_text("w\n")
        ws = workspace.Workspace(self.repo / ".github", self.repo, "bottle/a/a-1")
        self.assertEqual((ws.subdir, ws.workdir), (".github", "/workspace/.github"))
        self.assertIn(".github/w.yml", self.start_tree(self.repo / ".github"))

    def test_a_sparse_checkout_and_a_subfolder_workspace(self):
        (self.repo / "keep").mkdir()
        (self.repo / "keep" / "k").write_text("k\n")
        self.git(self.repo, "add", ".")
        self.git(self.repo, "commit", "-q", "-m", "k")
        self.git(self.repo, "sparse-checkout", "set", "keep")
        (self.inner("keep/in") / "sub").mkdir()
        (self.repo / "keep" / "in" / "sub" / "y").write_text("y\n")
        self.assertIn("keep/in/sub/y", self.start_tree(self.repo / "keep"))

    def test_nothing_of_its_config_runs_or_fetches(self):
        """Found by attacking it: the inner repository's own git listed its files, so a "promisor" remote in
        its config ran a command of its choosing on the host to fetch a .gitignore missing from its objects."""
        clone = self.inner("vendor")
        (clone / "tracked").write_text("t\n")
        (clone / "untracked").write_text("u\n")
        self.git(clone, "add", "tracked")
        self.git(clone, "commit", "-q", "-m", "i")
        self.git(clone, "update-index", "--add", "--cacheinfo", "100644," + "1" * 40 + ",.gitignore")
        self.git(clone, "update-index", "--skip-worktree", ".gitignore")
        marker = Path(self.repo.parent, "ran")
        for key, value in (("core.repositoryformatversion", "1"), ("extensions.partialClone", "origin"),
                           ("remote.origin.url", str(self.repo)), ("remote.origin.promisor", "true"),
                           ("remote.origin.uploadpack", f"touch {marker}; false"),
                           ("core.excludesFile", str(Path(self.repo.parent, "nowhere")))):
            self.git(clone, "config", key, value)
        self.assertEqual(sorted(self.start_tree()), ["a", "vendor/tracked", "vendor/untracked"])
        self.assertFalse(marker.exists())

    def test_a_folder_laid_out_as_a_bare_repository_runs_nothing_of_its_config(self):
        """Found by attacking it: a cloned repository can commit a folder holding HEAD, objects/, refs/ and a
        config (plain files to git), and `start --workspace` on it had host git take it for a repository and
        run its config's clean filter on every file."""
        app = self.repo / "app"
        (app / "objects").mkdir(parents=True)
        (app / "refs" / "heads").mkdir(parents=True)
        (app / "HEAD").write_text("ref: refs/heads/main\n")
        bare = {**os.environ, "GIT_DIR": str(app)}
        tree = subprocess.run(["git", "mktree"], input=b"", env=bare, capture_output=True, check=True).stdout
        commit = subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@e", "commit-tree", "-m", "x",
                                 tree.decode().strip()], env=bare, capture_output=True, check=True).stdout
        (app / "refs" / "heads" / "main").write_bytes(commit)
        marker = self.repo.parent / "ran"
        (app / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n"
                                    f"[filter \"evil\"]\n\tclean = touch {marker}; cat\n\tsmudge = cat\n")
        (app / ".gitattributes").write_text("* filter=evil\n")
        (app / "main.py").write_text("print(1)\n")
        self.git(self.repo, "add", "-A")
        self.git(self.repo, "commit", "-q", "-m", "a folder like a bare repository")
        (app / "main.py").write_text("print(2)\n")
        for folder in (app, self.repo):
            ws = workspace.inspect(folder, "a", "a-1")
            workspace.prepare(ws, "a-1", {})
            workspace.release(ws, "a-1")
            self.assertFalse(marker.exists(), folder)
        self.assertEqual(workspace.inspect(app, "a", "a-1").git_root, None)  # travels as a plain folder

    def test_a_submodule_whose_commit_moved_stays_a_submodule(self):
        """Found by attacking it: it showed as changed, so it went in as files and the results branch would
        have turned the user's submodule into a folder."""
        sub = Path(self.repo.parent, "sub")
        sub.mkdir()
        self.git(sub, "init", "-q")
        (sub / "s").write_text("1\n")
        self.git(sub, "add", "s")
        self.git(sub, "commit", "-q", "-m", "1")
        self.git(self.repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "sub")
        self.git(self.repo, "commit", "-q", "-m", "sub")
        (self.repo / "sub" / "s").write_text("2\n")
        self.git(self.repo / "sub", "commit", "-q", "-a", "-m", "2")
        tree = self.start_tree()
        self.assertEqual(tree["sub"], "160000")
        self.assertNotIn("sub/s", tree)

    def test_its_exclude_file_must_be_a_file_and_a_hang_ends(self):
        clone = self.inner("in")
        (clone / "f").write_text("f\n")
        exclude = clone / ".git" / "info" / "exclude"
        exclude.unlink()
        os.mkfifo(exclude)
        with self.assertRaisesRegex(workspace.BottleError, "info/exclude, the ignore rules of a repository in the "
                                                           "workspace, is not a file"):
            self.start_tree()
        exclude.unlink()
        os.mkfifo(clone / ".gitignore")  # git itself waits on it: the time limit ends the wait
        began = time.monotonic()
        with mock.patch.dict(os.environ, {workspace.STEP_SECONDS_VARIABLE: "2"}), \
                self.assertRaisesRegex(workspace.BottleError, "did not finish in 2 s"):
            self.start_tree()
        self.assertLess(time.monotonic() - began, 30)
        self.assertEqual(workspace.hidden_refs(self.repo), {})
        shutil.rmtree(clone)
        os.mkfifo(self.repo / ".gitignore")  # in the workspace's own repository: the same
        with mock.patch.dict(os.environ, {workspace.STEP_SECONDS_VARIABLE: "2"}), \
                self.assertRaisesRegex(workspace.BottleError, "did not finish in 2 s .*may be a pipe"):
            self.start_tree()
        self.assertEqual(workspace.hidden_refs(self.repo), {})

    def test_nothing_beyond_a_link_goes_in(self):
        """Found by attacking it: a folder of a path an index lists, made a link to a repository of the user's
        outside the workspace, brought that repository's files into the start commit."""
        outside = Path(self.repo.parent, "outside")
        secret = self.inner("../outside/x")  # a repository of the user's, outside the workspace
        (secret / "secret").write_text("not for the bottle\n")
        (outside / "f").write_text("not for the bottle either\n")
        clone = self.inner("in")
        (clone / "lib" / "x").mkdir(parents=True)
        (clone / "lib" / "x" / "y").write_text("y\n")
        (clone / "lib" / "f").write_text("f\n")
        self.git(clone, "add", ".")
        self.git(clone, "commit", "-q", "-m", "i")
        (self.repo / "o").mkdir()  # the same in the workspace's own repository, where o/x is a file
        (self.repo / "o" / "x").write_text("x\n")
        self.git(self.repo, "add", "o")
        self.git(self.repo, "commit", "-q", "-m", "o")
        for folder in (clone / "lib", self.repo / "o"):
            shutil.rmtree(folder)
            folder.symlink_to(outside)
        tree = self.start_tree()
        self.assertEqual(sorted(tree), ["a", "in/lib", "o"])
        self.assertEqual(tree["o"], "120000")  # the links go in as links, as git adds them

    def test_a_commondir_with_a_nul_and_a_huge_git_file_are_no_trouble(self):
        clone = self.inner("in")
        (clone / "f").write_text("f\n")
        (clone / ".git" / "commondir").write_bytes(b".\0x\n")  # git reads it up to the NUL: "."
        with self.assertRaisesRegex(workspace.BottleError, "commondir, of a repository in the workspace, does not "
                                                           "name a folder"):
            self.start_tree()
        with open(clone / ".git" / "commondir", "wb") as f:  # sparse: reading it whole would take 1 TiB
            f.truncate(2**40)
        probe = ("import resource, sys; from pathlib import Path; from claude_bottle import workspace;"
                 "resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30));"
                 "\ntry: workspace._common_dir(Path(sys.argv[1]))\nexcept workspace.BottleError as e: print(e)")
        out = subprocess.run([sys.executable, "-c", probe, str(clone / ".git")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(workspace.__file__).parents[1])})
        self.assertEqual(out.returncode, 0, out.stderr[-500:])
        self.assertIn("does not name a folder", out.stdout)
        (clone / ".git" / "commondir").unlink()
        huge = self.repo / "huge"
        huge.mkdir()
        with open(huge / ".git", "wb") as f:  # sparse: it takes no room, but reading it whole would take 1 TiB
            f.write(b"gitdir: ../in/.git\n")
            f.truncate(2**40)
        self.assertEqual(sorted(self.start_tree()), ["a", "in/f"])
        probe = ("import resource, sys; from pathlib import Path; from claude_bottle import workspace;"
                 "resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30));"
                 "print(workspace._is_repository(Path(sys.argv[1]), 'huge'))")
        out = subprocess.run([sys.executable, "-c", probe, str(self.repo)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(workspace.__file__).parents[1])})
        self.assertEqual((out.returncode, out.stdout), (0, "False\n"), out.stderr[-500:])  # nor for git

    def test_a_sparse_index(self):
        clone = self.inner("sp")
        for path in ("d1/a", "d2/b", "r"):
            (clone / path).parent.mkdir(exist_ok=True)
            (clone / path).write_text(path)
        self.git(clone, "add", ".")
        self.git(clone, "commit", "-q", "-m", "i")
        self.git(clone, "sparse-checkout", "init", "--cone", "--sparse-index")
        self.git(clone, "sparse-checkout", "set", "d1")
        self.assertEqual(sorted(self.start_tree()), ["a", "sp/d1/a", "sp/r"])

    def test_a_split_index_and_a_worktree(self):
        clone = self.inner("split")
        self.git(clone, "config", "core.splitIndex", "true")
        (clone / "t").write_text("t\n")
        self.git(clone, "add", "t")
        self.git(clone, "commit", "-q", "-m", "i")
        (clone / ".gitignore").write_text("t\n")  # tracked though ignored: it goes in
        main = Path(self.repo.parent, "main")
        main.mkdir()
        self.git(main, "init", "-q")
        (main / "w").write_text("w\n")
        self.git(main, "add", "w")
        self.git(main, "commit", "-q", "-m", "i")
        self.git(main, "worktree", "add", "-q", str(self.repo / "wt"))
        (main / ".git" / "info" / "exclude").write_text("secret\n")  # a worktree's: its main repository's
        (self.repo / "wt" / "secret").write_text("s\n")
        (self.repo / "wt" / "new").write_text("n\n")
        self.assertEqual(sorted(self.start_tree()), ["a", "split/.gitignore", "split/t", "wt/new", "wt/w"])

    def test_pathspec_settings_of_the_environment_change_nothing(self):
        """Found by attacking it: GIT_LITERAL_PATHSPECS (set by us for one command, or in the user's
        environment) made git take our `:(literal)` and `:(exclude,literal)` for names, GIT_GLOB_PATHSPECS
        clashed with the literal setting, and GIT_ICASE_PATHSPECS left out a folder whose name differs from a
        repository's only by case."""
        (self.repo / "IN").mkdir()
        (self.repo / "IN" / "f").write_text("f\n")
        (self.repo / "*").mkdir()
        (self.repo / "*" / "star").write_text("s\n")
        clone = self.inner("in")
        (clone / "lib").mkdir()
        (clone / "lib" / "x").write_text("x\n")
        (clone / "[x]").write_text("x\n")
        self.git(clone, "add", ".")
        self.git(clone, "commit", "-q", "-m", "i")
        (clone / "lib" / "x").unlink()
        self.inner("in/lib/x")  # a tracked file made a repository, inside a repository: `git rm` it at depth 2
        (clone / "lib" / "x" / "y").write_text("y\n")
        expected = ["*/star", "IN/f", "a", "in/[x]", "in/lib/x/y"]
        self.assertEqual(sorted(self.start_tree()), expected)
        for variable in ("GIT_LITERAL_PATHSPECS", "GIT_GLOB_PATHSPECS", "GIT_NOGLOB_PATHSPECS",
                         "GIT_ICASE_PATHSPECS"):
            with self.subTest(variable), mock.patch.dict(os.environ, {variable: "1"}):
                self.assertEqual(sorted(self.start_tree()), expected)
                self.assertEqual(sorted(self.start_tree(self.repo / "*")), ["*/star", "a"])

    def test_too_deep_is_a_clear_error_and_a_split_index_leaves_nothing(self):
        self.git(self.repo, "config", "core.splitIndex", "true")
        path = "x"
        for _ in range(workspace.MAX_NESTED + 1):
            self.inner(path)
            path += "/x"
        with self.assertRaisesRegex(workspace.BottleError, "inside more than 32 others"):
            self.start_tree()
        self.assertEqual(workspace.hidden_refs(self.repo), {})
        self.assertEqual([p.name for p in (self.repo / ".git").iterdir() if p.name.startswith("sharedindex")], [])


if __name__ == "__main__":
    unittest.main()
