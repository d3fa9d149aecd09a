"""Never lose the agent's work, and every bottle can always be stopped: each case of the work-safety issue,
attacked through the CLI with real bottles (and their real sidecar). A hostile agent is played by
`claude-bottle exec`, which runs anything in the bottle as the agent would."""

import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from claude_bottle import cleanup, session, workspace

from . import support
from ..lock_holder import hold_lock
from .test_commands import Terminal
from .test_workspace import git, make_repo

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sk-ant-oat01-work-safety-" + "w" * 30


class Machine:
    """A user's home (an agent `coder` on the built-in bottle), state folder and a repository to work on."""

    def __init__(self, manifest: dict | None = None, step_seconds: int = 20, runtime: support.Runtime | None = None):
        self.tmp = tempfile.TemporaryDirectory()
        d = Path(self.tmp.name)
        self.home = d / "home"
        (d / "home").mkdir()
        (d / "home" / "claude-bottle.json").write_text(json.dumps(
            manifest or {"agents": {"coder": {"bottle": "default"}}}))
        self.repo = make_repo(d)
        self.started: list[str] = []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLAUDE_BOTTLE_HOME": str(d / "home"),
                    "CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN, "CLAUDE_BOTTLE_STEP_SECONDS": str(step_seconds),
                    **(runtime.env() if runtime else {})}

    def argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "claude_bottle", *args]

    def cli(self, *args, timeout=240, env=None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.tmp.name, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, *extra) -> str:
        out = self.cli("start", "coder", "--yes", "--detach", "--workspace", str(self.repo), *extra)
        assert out.returncode == 0, out.stderr
        self.started.append(out.stdout.strip())
        return out.stdout.strip()

    def agent(self, name: str, script: str) -> subprocess.CompletedProcess:
        return self.cli("exec", name, "--", "sh", "-c", script)

    def branch(self, name: str) -> str:
        return f"bottle/coder/{name}"

    def close(self):
        # A test that failed half-way leaves its bottles: nothing of a test outlives it.
        for name in self.started:
            if cleanup.of_bottle(support.engine(), name):
                self.cli("stop", "--discard", name)
        self.tmp.cleanup()


def holds_bundle(path: Path) -> bool:
    """A file or folder of ours in the temporary folder with a git bundle in it (gone meanwhile: no)."""
    try:
        return path.stat().st_uid == os.getuid() and any(
            f.suffix == ".bundle" for f in (path.rglob("*") if path.is_dir() else [path]))
    except OSError:
        return False


# An agent's repository after it has done its worst to the reflogs and refs (each found to keep a bottle, lose
# a commit or run a command of the agent's while the stop had everything stopped): prints a commit that only a
# reflog holds.
HOSTILE_REFLOGS_AND_REFS = r"""
set -e
cd /workspace
c() { echo $1 > $1.txt; git add $1.txt; git commit -q -m $1; git rev-parse HEAD; }
lost=$(c lost)
git reset -q --hard HEAD~1
git init -q /tmp/up
for m in u1 u2; do git -C /tmp/up -c user.name=u -c user.email=u@e commit -q --allow-empty -m $m; done
git fetch -q --depth 1 file:///tmp/up HEAD:refs/remotes/up/main
empty=$(git hash-object -t tree -w /dev/null)
commit() { printf "${1}author a <a@b> 1 +0000\ncommitter a <a@b> 1 +0000\n\nx\n" | git hash-object -t commit -w --literally --stdin; }
git update-ref refs/remotes/x/notree "$(commit 'tree 3333333333333333333333333333333333333333\n')"
git update-ref refs/remotes/x/noparent "$(commit "tree $empty\nparent 2222222222222222222222222222222222222222\n")"
git config core.repositoryformatversion 1
git config extensions.partialClone origin
git config remote.origin.url /tmp/x
git config remote.origin.uploadpack 'sh -c "sleep 60" #'
printf '%s 2222222222222222222222222222222222222222 a <a@b> 1 +0000\tx\n' "$(git rev-parse HEAD)" >> .git/logs/HEAD
git branch zz
truncate -s 200G .git/logs/refs/heads/zz
chmod -R a-w .git/objects
echo "$lost"
"""


# SIGTERM to PID 1 with a siginfo that says sender 0 (as one from outside the bottle's PID namespace does):
# the kernel takes it with the queue's code only, never with kill(2)'s.
FORGED_SIGTERM = r"""
import ctypes, os, signal, struct
libc = ctypes.CDLL(None, use_errno=True)
number = {"x86_64": 129, "aarch64": 138}[os.uname().machine]  # rt_sigqueueinfo
info = ctypes.create_string_buffer(128)
for code in (-1, 0):  # SI_QUEUE, then SI_USER (refused)
    struct.pack_into("iii", info, 0, signal.SIGTERM, 0, code)
    struct.pack_into("ii", info, 16, 0, 0)  # si_pid, si_uid
    if libc.syscall(number, 1, signal.SIGTERM, info) == 0:
        print("forged: queued" if code else "forged: sent as kill(2)")
"""


class WorkSafetyCase(support.IntegrationTest):
    def setUp(self):
        self.m = Machine()
        self.addCleanup(self.m.close)

    def gone(self, name: str) -> bool:
        return cleanup.of_bottle(support.engine(), name) == []

    def assertOneErrorLine(self, stderr: str):
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        self.assertEqual(len(errors), 1, stderr)
        self.assertNotIn("Traceback", stderr)

    def discard(self, name: str):
        out = self.m.cli("stop", "--discard", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(self.gone(name))


class HooksTest(WorkSafetyCase):
    """1 and 4: the repository's hooks cannot lose the work or hang the teardown."""

    def test_failing_and_hanging_hooks_neither_lose_nor_hold_up_the_work(self):
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && mkdir -p .hooks && "
                                 "printf '#!/bin/sh\\nexit 1\\n' > .git/hooks/pre-commit && "
                                 "printf '#!/bin/sh\\nsleep 100000\\n' > .hooks/pre-commit && "
                                 "printf '#!/bin/sh\\nexit 1\\n' > .hooks/commit-msg && "
                                 "chmod +x .git/hooks/pre-commit .hooks/* && git config core.hooksPath .hooks && "
                                 "echo committed > done.txt && git add done.txt && "
                                 "git commit --no-verify -q -m 'agent: committed part' && "
                                 "echo uncommitted > wip.txt && ln -sf /etc/passwd /tmp/results.bundle")
        self.assertEqual(out.returncode, 0, out.stderr)
        began = time.monotonic()
        stopped = self.m.cli("stop", name)
        self.assertLess(time.monotonic() - began, 60)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertIn(f"results: 2 new commits on branch {branch}", stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:done.txt"), "committed\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}:wip.txt"), "uncommitted\n")
        self.assertTrue(self.gone(name))


class BringingBackFailsTest(WorkSafetyCase):
    """2 and 3: when the work cannot come back, the bottle stays, the error says how to go on, and only
    --discard throws the work away."""

    def test_a_broken_repository_in_the_bottle_keeps_the_bottle(self):
        name = self.m.start()
        self.m.agent(name, "cd /workspace && echo precious > work.txt && git tag -d $(git tag) 2>/dev/null; "
                           "rm -rf .git/objects .git/refs")
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 7, out.stderr)
        self.assertOneErrorLine(out.stderr)
        self.assertIn(f"the agent's work in bottle {name} could not be brought back", out.stderr)
        self.assertIn(f"claude-bottle stop --discard {name}", out.stderr)
        self.assertFalse(self.gone(name))
        self.assertEqual(self.m.agent(name, "cat /workspace/work.txt").stdout, "precious\n")  # still there
        self.assertIn("running", self.m.cli("ps").stdout)
        self.discard(name)

    def test_a_branch_in_the_way_on_the_host_neither_crashes_nor_loses_the_work(self):
        git(self.m.repo, "branch", "bottle")  # bottle/… cannot be made beside it
        name = self.m.start()
        self.m.agent(name, "cd /workspace && echo a > a.txt")
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(git(self.m.repo, "show", f"bottle-coder-{name}:a.txt"), "a\n")
        # In the way only after the launch: the fetch fails, the bottle is kept, and a retry works.
        git(self.m.repo, "branch", "-D", "bottle")
        name = self.m.start()
        self.m.agent(name, "cd /workspace && echo b > b.txt")
        branch = self.m.branch(name)
        for in_the_way in (f"{branch}/x", "bottle"):  # below the results branch, and above it
            git(self.m.repo, "branch", in_the_way)
            out = self.m.cli("stop", name)
            self.assertEqual(out.returncode, 7, out.stderr)
            self.assertOneErrorLine(out.stderr)
            self.assertIn(f"branch {in_the_way} in {self.m.repo} is in the way of {branch} (git cannot hold a "
                          "branch and a folder of branches of one name): rename or delete it", out.stderr)
            self.assertFalse(self.gone(name))
            git(self.m.repo, "branch", "-D", in_the_way)
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:b.txt"), "b\n")


class ANewRepositoryTest(WorkSafetyCase):
    def test_an_agent_that_makes_its_repository_anew_still_gets_its_work_back(self):
        """Found by attacking it: `rm -rf .git && git init` took the start commit away, and every `stop` failed."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && rm -rf .git && git init -q && echo fresh > fresh.txt && "
                                 "git add -A && git -c user.email=a@b -c user.name=a commit -q -m fresh")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:fresh.txt"), "fresh\n")
        self.assertTrue(self.gone(name))


class FrozenForTheSnapshotTest(WorkSafetyCase):
    """`stop` stops the agent's other processes before its snapshot (so nothing written after it is lost); if
    the work then cannot come back, the kept bottle's processes go on."""

    def test_a_kept_bottle_is_not_left_frozen(self):
        name = self.m.start()
        self.m.agent(name, "cd /workspace && echo w > w.txt && (setsid sh -c 'while :; do sleep 0.1; done' "
                           "</dev/null >/dev/null 2>&1 & echo $! > /tmp/writer.pid)")
        branch = self.m.branch(name)
        git(self.m.repo, "branch", f"{branch}/x")  # the fetch fails after the snapshot
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 7, out.stderr)
        state = self.m.agent(name, "ps -o stat= -p $(cat /tmp/writer.pid)").stdout.strip()
        self.assertTrue(state and not state.startswith("T"), state)
        git(self.m.repo, "branch", "-D", f"{branch}/x")
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:w.txt"), "w\n")


    # Forks and exits at once, for ever, so that its process ID changes faster than any walk over /proc; each
    # new process puts the start commit in any snapshot it finds, which would make the work look like none.
    HOPPER = """import glob, os
start = open("/tmp/start").read()
def hop():
    while True:
        try:
            if os.fork():
                os._exit(0)
        except OSError:
            continue
        for head in glob.glob("/tmp/claude-bottle-snapshot.*/HEAD"):
            try:
                if open(head).read() != start:
                    open(head, "w").write(start)
            except OSError:
                pass
if os.fork() == 0:
    os.setsid()
    hop()
"""

    def test_processes_that_fork_all_the_time_are_frozen_too(self):
        name = self.m.start()
        out = self.m.agent(name, f"printf %s {shlex.quote(self.HOPPER)} > /tmp/hop.py && "
                                 "cd /workspace && git rev-parse HEAD > /tmp/start && "
                                 "for i in 1 2 3; do echo $i > w$i; git add .; git commit -qm work$i; done && "
                                 "echo u > u.txt && for i in $(seq 16); do python3 /tmp/hop.py; done && sleep 1")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:w3"), "3\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}:u.txt"), "u\n")
        self.assertTrue(self.gone(name))


    def test_what_takes_the_work_cannot_be_attached_to(self):
        """Found by attacking it: ptrace is open to the agent's user here, and a process of the agent's that
        attached to the script before it had stopped them could have made it report anything ("empty": no
        work at all), or attached to PID 1, which no signal from inside stops, and thawed everything after the
        check (found too). The script and the bottle's init run from copies the agent's user cannot read."""
        name = self.m.start()
        attach = ("import ctypes, subprocess, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                  "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE)\n"
                  "print(libc.ptrace(0x4206, p.pid, 0, 0), ctypes.get_errno())\np.kill()\n")  # PTRACE_SEIZE
        private = "/usr/local/lib/claude-bottle"
        runs = [f"{private}/bash -c 'read -t 20 x'", f"{private}/timeout 20 sleep 20",
                "/bin/bash -c 'read -t 20 x'", "timeout 20 sleep 20"]  # the last two: what the agent may attach to
        # PID 1, which no signal of the agent's ends. (It hands none on: once the bottle is ready its only
        # children are orphans of the agent's own.)
        seize = ("import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "print(libc.ptrace(0x4206, int(sys.argv[1]), 0, 0), ctypes.get_errno())\n")
        out = self.m.agent(name, "; ".join(f"python3 -c {shlex.quote(attach)} {run}" for run in runs)
                           + f"; python3 -c {shlex.quote(seize)} 1; cat {private}/bash > /dev/null")
        self.assertEqual(out.stdout.split("\n")[:5], ["-1 1", "-1 1", "0 0", "0 0", "-1 1"],
                         out.stdout + out.stderr)  # EPERM, but for the controls
        self.assertIn("Permission denied", out.stderr)
        self.discard(name)

    def test_no_program_the_agent_names_in_its_config_runs_while_it_is_stopped(self):
        """Found by attacking it: reading the stash's older entries verified a signature on one (the agent's
        `log.showSignature`) with the agent's `gpg.program`, which ran while everything else was stopped; what
        it leaves running there fails the stop, what it does and ends went unseen."""
        name = self.m.start()
        out = self.m.agent(name, r"""set -e
cd /workspace && echo s > s.txt && git add s.txt && git stash -q
c=$(printf 'tree %s
parent %s
author a <a@b> 1 +0000
committer a <a@b> 1 +0000
gpgsig -----BEGIN PGP SIGNATURE-----
 
 x
 -----END PGP SIGNATURE-----

signed
'   "$(git rev-parse HEAD^{tree})" "$(git rev-parse HEAD)" | git hash-object -t commit -w --stdin)
git stash store -m signed "$c"
echo s2 > s2.txt && git add s2.txt && git stash -q
printf '#!/bin/sh
sleep 60 &
exit 1
' > /home/claude/evil.sh && chmod +x /home/claude/evil.sh
git config log.showSignature true && git config gpg.program /home/claude/evil.sh
git config protocol.ext.allow always""")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}.stash:s2.txt"), "s2\n")
        self.assertTrue(self.gone(name))

    def test_a_process_waiting_in_the_kernel_for_ever_holds_nothing_up(self):
        """A vfork whose child never execs leaves its parent in an uninterruptible wait for good: it runs nothing
        of its own there and stops on its way out, so it neither holds the snapshot up nor keeps the bottle."""
        name = self.m.start()
        vfork = ("import ctypes\nlibc = ctypes.CDLL(None)\nif libc.vfork() == 0:\n    libc.pause()\n"
                 "    libc._exit(0)\n")
        out = self.m.agent(name, f"cd /workspace && echo v > v.txt && (setsid python3 -c {shlex.quote(vfork)} "
                                 "</dev/null >/dev/null 2>&1 &) && sleep 1 && ps -eo stat,comm | grep -q '^D.*python3'")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:v.txt"), "v\n")
        self.assertTrue(self.gone(name))


class EverythingComesBackTest(WorkSafetyCase):
    """Not only HEAD is the agent's work: its other branches, its stash and a repository it made inside the
    workspace come back too."""

    def test_other_branches_the_stash_and_a_nested_repository(self):
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && git checkout -q -b feature && echo f > f.txt && git add f.txt && "
                                 "git commit -q -m f && git checkout -q - && echo s > s.txt && git add s.txt && "
                                 "git stash -q && mkdir sub && cd sub && git init -q && echo n > n.txt && "
                                 "git add n.txt && git -c user.email=a@b -c user.name=a commit -q -m n")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:sub/n.txt"), "n\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.feature:f.txt"), "f\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.stash:s.txt"), "s\n")
        self.assertIn(f"{branch}.feature", stopped.stderr)
        self.assertTrue(self.gone(name))

    def test_the_detached_head_of_a_linked_worktree(self):
        """Found by attacking it: commits on a worktree's detached HEAD (no branch holds them) stayed behind."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && git worktree add -q --detach /tmp/wt && cd /tmp/wt && "
                                 "echo w > w.txt && git add w.txt && git commit -q -m w && "
                                 "git -C /workspace worktree add -q -b side /tmp/side && cd /tmp/side && "
                                 "echo s > s.txt && git add s.txt && git commit -q -m s")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.wt:w.txt"), "w\n")
        self.assertIn(f"{branch}.side", git(self.m.repo, "branch", "--list", f"{branch}.*"))
        self.assertNotIn(f"{branch}.worktree.side", git(self.m.repo, "branch", "--list", f"{branch}.*"))
        self.assertTrue(self.gone(name))

    def test_what_is_uncommitted_in_a_linked_worktree(self):
        """Claude Code makes worktrees in .claude/worktrees/, which a .gitignore often names: what was uncommitted
        in one, or in one anywhere else, was in no commit and stayed behind. Each comes back as a commit on top
        of the worktree's HEAD."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && echo .claude/ >> .gitignore && git add .gitignore && "
                                 "git commit -q -m ignore && git worktree add -q -b feat .claude/worktrees/x && "
                                 "echo x > .claude/worktrees/x/x.txt && git init -q .claude/worktrees/x/nested && "
                                 "echo n > .claude/worktrees/x/nested/n.txt && git worktree add -q --detach /tmp/out && "
                                 "echo o > /tmp/out/o.txt && git -C /tmp/out add o.txt && "
                                 "echo locked > /tmp/out/locked.txt && chmod 000 /tmp/out/locked.txt && "
                                 "mkdir /tmp/out/d && echo d > /tmp/out/d/d.txt && chmod 000 /tmp/out/d && "
                                 "git worktree add -q --detach /tmp/gone && echo g > /tmp/gone/g.txt && "
                                 "echo 2222222222222222222222222222222222222222 > .git/worktrees/gone/HEAD && "
                                 "chmod 000 .git/worktrees/gone/gitdir && "
                                 "echo clean > /tmp/clean.txt && git worktree add -q -b tidy /tmp/tidy")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.x:x.txt"), "x\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.x:nested/n.txt"), "n\n")
        paths = git(self.m.repo, "ls-tree", "-r", "--name-only", f"{branch}.worktree.x").split()
        self.assertEqual([p for p in paths if any(part.startswith(".git") and part != ".gitignore"
                                                  for part in p.split("/"))], [])  # no .git, nor one set aside
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.out:o.txt"), "o\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.out:locked.txt"), "locked\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.out:d/d.txt"), "d\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.gone:g.txt"), "g\n")  # HEAD names nothing
        self.assertEqual(git(self.m.repo, "rev-parse", f"{branch}.worktree.x^"), git(self.m.repo, "rev-parse", f"{branch}.feat"))
        self.assertNotIn(f"{branch}.worktree.tidy", git(self.m.repo, "branch", "--list", f"{branch}.*"))  # clean
        self.assertTrue(self.gone(name))

    def test_more_linked_worktrees_than_are_read_keep_the_bottle_and_are_named(self):
        """The first 500 linked worktrees are read (each takes a few git commands, and stop's time is limited):
        more dropped the rest without a word. Now they keep the bottle, said, until the agent removes some."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && for i in $(seq 501); do git worktree add -q --no-checkout "
                                 "--detach /tmp/wt$i; done && echo last > /tmp/wt501/last.txt")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 7, out.stderr)
        self.assertOneErrorLine(out.stderr)
        self.assertIn("more than 500 linked worktrees: remove those not needed (git worktree remove)", out.stderr)
        self.assertFalse(self.gone(name))
        out = self.m.agent(name, "cd /workspace && for i in $(seq 2 500); do rm -rf /tmp/wt$i; done && "
                                 "git worktree prune")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}.worktree.wt501:last.txt"), "last\n")
        self.assertTrue(self.gone(name))

    def test_processes_that_fill_the_bottles_limit_do_not_keep_the_work(self):
        """Found by attacking it: with every process slot taken, nothing of stop's could start, and every stop
        failed."""
        name = self.m.start()
        out = self.m.agent(name, "echo w > /workspace/w.txt")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.m.agent(name, "for i in $(seq 1100); do sleep 100000 & done")  # until fork fails: the limit is 1024
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:w.txt"), "w\n")
        self.assertTrue(self.gone(name))

    def test_a_linked_worktree_moved_since_it_was_made(self):
        """What was uncommitted in a linked worktree moved with `mv` (its gitdir file names where it was) stayed
        behind: it is found by the .git file in it."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && git worktree add -q -b feat /tmp/wt && echo x > /tmp/wt/x.txt && "
                                 "mkdir -p /workspace/elsewhere && mv /tmp/wt /workspace/elsewhere/wt && "
                                 "git worktree add -q --detach /tmp/d && echo d > /tmp/d/d.txt && mv /tmp/d ~/d")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.wt:x.txt"), "x\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.worktree.d:d.txt"), "d\n")
        self.assertTrue(self.gone(name))

    def test_a_nested_repository_the_agent_committed_older_stashes_tags_and_notes(self):
        """Found by attacking it: `git add -A` makes a gitlink of a repository a scaffolder made (its files were
        lost), and only the newest stash came back (not older ones, nor commits only a tag or notes hold)."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && mkdir app && cd app && git init -q && echo i > index.js && "
                                 "git add . && git -c user.email=a@b -c user.name=a commit -q -m scaffold && "
                                 "echo more > more.js && cd .. && git add -A && git commit -q -m 'add app' && "
                                 "echo s1 > s1.txt && git add s1.txt && git stash -q && "
                                 "echo s2 > s2.txt && git add s2.txt && git stash -q && "
                                 "git checkout -q -b tmp && echo t > t.txt && git add t.txt && git commit -q -m t && "
                                 "git tag v-only && git checkout -q - && git branch -D tmp && "
                                 "git notes add -m note HEAD")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:app/index.js"), "i\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}:app/more.js"), "more\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.stash:s2.txt"), "s2\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.stash-1:s1.txt"), "s1\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.tag.v-only:t.txt"), "t\n")
        self.assertIn(f"{branch}.notes.commits", git(self.m.repo, "branch", "--list", f"{branch}.*"))
        self.assertTrue(self.gone(name))


    def test_commits_no_branch_holds_any_more(self):
        """A commit reset away, one on a branch deleted, the version before an amend and one only a ref outside
        branches and tags holds: each comes back as a parent of one commit, on `<branch>.dropped`; a session
        that dropped nothing makes no such branch."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && c() { echo $1 > $1.txt && git add $1.txt && git commit -q -m $1 && "
                                 "git rev-parse HEAD; } && c reset && git reset -q --hard HEAD~1 && "
                                 "git checkout -q -b side && c deleted && git checkout -q - && git branch -q -D side && "
                                 "c amended && git commit -q --amend -m amended-again && "
                                 "git update-ref refs/remotes/origin/x $(git commit-tree HEAD^{tree} -p HEAD -m remote) && "
                                 "git rev-parse refs/remotes/origin/x")
        self.assertEqual(out.returncode, 0, out.stderr)
        dropped = out.stdout.split()
        self.assertEqual(len(dropped), 4, out.stdout)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertIn(f"{branch}.dropped", stopped.stderr)
        for commit in dropped:
            with self.subTest(commit):
                self.assertEqual(subprocess.run(["git", "-C", str(self.m.repo), "merge-base", "--is-ancestor", commit,
                                                 f"{branch}.dropped"]).returncode, 0)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:amended.txt"), "amended\n")  # HEAD as it was
        self.assertEqual(git(self.m.repo, "ls-tree", f"{branch}.dropped"), "")  # it holds parents, not files
        self.assertTrue(self.gone(name))

        many = self.m.start()  # more than fit one command, and than one commit's hundred parents
        out = self.m.agent(many, "cd /workspace && for i in $(seq 600); do c=$(git commit-tree HEAD^{tree} -p HEAD "
                                 "-m r$i) && git update-ref refs/remotes/r/$i $c && echo $c; done")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", many)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        held = set(git(self.m.repo, "rev-list", f"{self.m.branch(many)}.dropped").split())
        self.assertLessEqual(set(out.stdout.split()), held)
        self.assertEqual(len(out.stdout.split()), 600)

        plain = self.m.start()
        self.assertEqual(self.m.agent(plain, "cd /workspace && echo p > p.txt && git add p.txt && "
                                             "git commit -q -m p").returncode, 0)
        stopped = self.m.cli("stop", plain)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "branch", "--list", f"{self.m.branch(plain)}.*"), "")


    def test_what_the_agent_does_to_its_reflogs_and_refs_neither_keeps_the_bottle_nor_loses_a_commit(self):
        """Found by attacking it: a shallow fetch (or a commit whose parent is gone) hid every dropped commit; a
        reflog naming a missing object made git fetch it from a promisor remote whose command the agent chose,
        while everything was stopped; a huge sparse reflog outlasted the time limit; read-only objects, and a
        commit whose tree is gone, kept the bottle on every retry."""
        name = self.m.start()
        out = self.m.agent(name, HOSTILE_REFLOGS_AND_REFS)
        self.assertEqual(out.returncode, 0, out.stderr)
        lost = out.stdout.split()[-1]
        began = time.monotonic()
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertLess(time.monotonic() - began, 60)
        branch = self.m.branch(name)
        self.assertEqual(subprocess.run(["git", "-C", str(self.m.repo), "merge-base", "--is-ancestor", lost,
                                         f"{branch}.dropped"]).returncode, 0)
        self.assertTrue(self.gone(name))

    def test_many_new_files_come_back_at_the_first_stop(self):
        """Found by attacking it: the commit of 7,000 new files started a background `git gc --auto`, which the
        check that nothing runs during the snapshot took for the agent's, and the first stop failed."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && mkdir gen && for i in $(seq 7000); do echo $i > gen/f$i; done")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:gen/f6999"), "6999\n")
        self.assertTrue(self.gone(name))


class NothingHidesTheWorkTest(WorkSafetyCase):
    """What the agent sets in its own repository decides neither what the last commit holds nor whether it
    can be made: the working tree is the work."""

    def test_index_flags_and_private_excludes_hide_nothing(self):
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && echo c > c.txt && git add c.txt && git commit -qm c && "
                                 "echo W >> app.py && git update-index --skip-worktree app.py && "
                                 "echo W >> c.txt && git update-index --assume-unchanged c.txt && "
                                 "echo keep > new.txt && echo new.txt >> .git/info/exclude && "
                                 "echo more > more.txt && git config core.excludesFile /workspace/.hide && "
                                 "echo more.txt > .hide && git config core.sparseCheckout true")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertTrue(git(self.m.repo, "show", f"{branch}:app.py").endswith("W\n"))
        self.assertEqual(git(self.m.repo, "show", f"{branch}:c.txt"), "c\nW\n")
        for f, text in (("new.txt", "keep\n"), ("more.txt", "more\n")):
            self.assertEqual(git(self.m.repo, "show", f"{branch}:{f}"), text)
        # .gitignore still decides: what the repository ignores stays out.
        self.assertNotIn("secret.env", git(self.m.repo, "ls-tree", "-r", "--name-only", branch))
        self.assertTrue(self.gone(name))

    def test_what_the_agent_made_unreadable_comes_back_too(self):
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && mkdir -p hidden/deeper && echo p > hidden/deeper/p.txt && "
                                 "mkdir -p repo-in && git -C repo-in init -q && echo r > repo-in/r.txt && "
                                 "echo s > secret.txt && chmod 000 secret.txt hidden/deeper/p.txt hidden/deeper && "
                                 "chmod 000 hidden && chmod 500 repo-in")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        for f, text in (("hidden/deeper/p.txt", "p\n"), ("secret.txt", "s\n"), ("repo-in/r.txt", "r\n")):
            self.assertEqual(git(self.m.repo, "show", f"{branch}:{f}"), text)
        self.assertTrue(self.gone(name))

    def test_filters_neither_hold_the_work_nor_change_it(self):
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && echo c > c.txt && git add c.txt && git commit -qm c && "
                                 "git config filter.e.clean false && git config filter.e.required true && "
                                 "git config filter.s.clean 'sleep 100000' && "
                                 "printf '* filter=e\\n*.txt filter=s\\n' > .git/info/attributes && "
                                 "printf 'u\\r\\n' > u.txt && printf '*.txt text eol=lf working-tree-encoding=NOPE\\n' "
                                 "> .gitattributes")
        self.assertEqual(out.returncode, 0, out.stderr)
        began = time.monotonic()
        stopped = self.m.cli("stop", name)
        self.assertLess(time.monotonic() - began, 30)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:c.txt"), "c\n")
        self.assertEqual(subprocess.run(["git", "-C", str(self.m.repo), "cat-file", "blob", f"{branch}:u.txt"],
                                        capture_output=True).stdout, b"u\r\n")  # as written, byte for byte
        self.assertTrue(self.gone(name))

    def test_branches_whose_names_would_meet_all_come_back(self):
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && h=$(git symbolic-ref --short HEAD) && for b in x/y x.y stash; do "
                                 "git checkout -qb $b $h && echo $b > b.txt && git add b.txt && git commit -qm $b; done && "
                                 "git checkout -q $h && "
                                 "echo s > s.txt && git add s.txt && git stash -q")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        for b in ("x/y", "x.y", "stash"):
            self.assertEqual(git(self.m.repo, "show", f"{branch}.{b}:b.txt"), f"{b}\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}.stash.2:s.txt"), "s\n")
        self.assertTrue(self.gone(name))

    def test_a_subfolder_workspace_brings_back_what_was_written_beside_it(self):
        (self.m.repo / "sub").mkdir()
        (self.m.repo / "sub" / "s.txt").write_text("s\n")
        (self.m.repo / "top.txt").write_text("top\n")
        git(self.m.repo, "add", "-A")
        git(self.m.repo, "commit", "-q", "-m", "sub")
        out = self.m.cli("start", "coder", "--yes", "--detach", "--workspace", str(self.m.repo / "sub"))
        self.assertEqual(out.returncode, 0, out.stderr)
        name = out.stdout.strip()
        self.m.started.append(name)
        out = self.m.agent(name, "cd /workspace && echo in > sub/in.txt && rm sub/s.txt && echo o > outside.txt && "
                                 "echo m > app.py")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        files = set(git(self.m.repo, "ls-tree", "-r", "--name-only", self.m.branch(name)).split())
        self.assertIn("sub/in.txt", files)
        self.assertNotIn("sub/s.txt", files)  # deleted in the folder it had
        self.assertIn("top.txt", files)  # never in the bottle: not taken as deleted
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:outside.txt"), "o\n")
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:app.py"), "m\n")
        self.assertTrue(self.gone(name))


class AlwaysStoppableTest(WorkSafetyCase):
    """4 and 7: whatever runs in the bottle, stop ends in bounded time; races end in a clean result."""

    def setUp(self):
        self.m = Machine(step_seconds=8)
        self.addCleanup(self.m.close)

    def test_a_git_that_hangs_keeps_the_bottle_within_the_time_limit(self):
        name = self.m.start()
        # The repository's config is a pipe nobody writes to: every git command in it waits forever.
        self.m.agent(name, "cd /workspace && echo x > x.txt && rm .git/config && mkfifo .git/config")
        began = time.monotonic()
        out = self.m.cli("stop", name)
        self.assertLess(time.monotonic() - began, 40)
        self.assertEqual(out.returncode, 7, out.stderr)
        self.assertIn("did not finish in time", out.stderr)
        self.assertOneErrorLine(out.stderr)
        self.assertFalse(self.gone(name))
        # Ctrl-C while it is bringing work back: the bottle is kept, and the terminal gets one line.
        proc = subprocess.Popen(self.m.argv("stop", name), cwd=self.m.tmp.name, env=self.m.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("Traceback", err)
        self.assertIn(f"claude-bottle stop {name}", err)
        self.assertFalse(self.gone(name))
        self.discard(name)

    def test_two_stops_at_once_and_a_stop_of_a_name_that_matches_everything(self):
        name = self.m.start()
        other = self.m.start("--no-results")
        results = []
        threads = [threading.Thread(target=lambda: results.append(self.m.cli("stop", name))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The second one waits for the first, then finds the bottle gone: either way, a clean answer.
        self.assertIn(0, [r.returncode for r in results], [r.stderr for r in results])
        self.assertTrue(all(r.returncode in (0, 1) for r in results), [r.stderr for r in results])
        for r in results:
            self.assertNotIn("Traceback", r.stderr)
        self.assertTrue(self.gone(name))
        for bad in ("", "../x", "*"):
            out = self.m.cli("stop", bad)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertOneErrorLine(out.stderr)
            self.assertIn("is not a bottle name", out.stderr)
        self.assertFalse(self.gone(other))
        self.assertEqual(self.m.cli("stop", other).returncode, 0)

    def test_stop_during_start(self):
        starting = subprocess.Popen(self.m.argv("start", "coder", "--yes", "--detach", "--workspace", str(self.m.repo)),
                                    cwd=self.m.tmp.name, env=self.m.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        name, deadline = None, time.monotonic() + 60
        while name is None and time.monotonic() < deadline:
            name = next(iter(support.bottles_of(self.m.home)), None)
            time.sleep(0.01)
        stopped = self.m.cli("stop", name)
        out, err = starting.communicate(timeout=120)
        self.assertNotIn("Traceback", err + stopped.stderr)
        self.assertIn(stopped.returncode, (0, 1), stopped.stderr)
        if starting.returncode == 0:  # it finished before the stop reached it: stop it now
            self.assertEqual(self.m.cli("stop", out.strip()).returncode, 0)
        else:
            self.assertOneErrorLine(err)
        self.assertEqual(support.objects_of(self.m.home), set())

    def test_a_start_killed_part_way_leaves_nothing_the_next_start_keeps(self):
        proc = subprocess.Popen(self.m.argv("start", "coder", "--yes", "--detach"), cwd=self.m.tmp.name,
                                env=self.m.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it once it has made something, before it finished
            if support.objects_of(self.m.home):
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        leftovers = support.bottles_of(self.m.home)
        self.assertTrue(leftovers)
        name = self.m.start("--no-results")
        self.assertEqual(support.bottles_of(self.m.home), {name})
        self.m.cli("stop", name)

    def hidden_refs(self) -> str:
        return git(self.m.repo, "for-each-ref", "--format=%(refname)", "refs/claude-bottle/")

    def test_a_stop_killed_at_any_moment_loses_nothing_and_the_next_stop_leaves_nothing(self):
        """SIGKILL `stop` at moments spread over its whole length (measured on an uninterrupted one): the
        agent's work is on its branch once a second `stop` has run, and nothing of the bottle is left, in
        the engine, in the repository (the start commit's hidden ref) or in the host's temporary folder."""
        tmp_before = set(Path(tempfile.gettempdir()).iterdir())
        began = time.monotonic()
        whole = self.stop_killed_after(None)
        for fraction in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95):
            self.stop_killed_after(whole * fraction)
        self.assertLess(time.monotonic() - began, 240)
        self.assertEqual({p for p in set(Path(tempfile.gettempdir()).iterdir()) - tmp_before if holds_bundle(p)},
                         set())

    def stop_killed_after(self, delay: float | None) -> float:
        name = self.m.start()
        work = f"work before a stop killed after {delay}\n"
        self.assertEqual(self.m.agent(name, f"printf %s {shlex.quote(work)} > w.txt && git add w.txt && "
                                            "git commit -qm w && echo uncommitted > u.txt").returncode, 0)
        began = time.monotonic()
        proc = subprocess.Popen(self.m.argv("stop", name), cwd=self.m.tmp.name, env=self.m.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        took = time.monotonic() - began
        if delay is None:
            self.assertEqual(proc.returncode, 0)
        if support.objects_of(self.m.home):
            again = self.m.cli("stop", name)
            self.assertEqual(again.returncode, 0, (delay, again.stderr))
        self.assertTrue(self.gone(name), delay)
        self.assertEqual(self.hidden_refs(), "", delay)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:w.txt"), work, delay)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:u.txt"), "uncommitted\n", delay)
        return took

    def test_a_start_killed_part_way_leaves_no_hidden_ref_after_the_next_start(self):
        """A `start` with a git workspace killed at moments spread over its length: the next start in the
        repository drops the start commit it kept, and keeps its own."""
        began = time.monotonic()
        first = self.m.start()
        whole = time.monotonic() - began
        self.assertEqual(self.m.cli("stop", "--discard", first).returncode, 0)
        for fraction in (0.05, 0.2, 0.4, 0.6, 0.8):
            proc = subprocess.Popen(self.m.argv("start", "coder", "--yes", "--detach", "--workspace",
                                                str(self.m.repo)), cwd=self.m.tmp.name, env=self.m.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                out, _ = proc.communicate(timeout=whole * fraction)
                if proc.returncode == 0:  # it finished first: a bottle like any other
                    self.m.started.append(out.decode().strip())
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        name = self.m.start()
        held = support.bottles_of(self.m.home) - {name}
        # What is kept holds the agent's workspace; a bottle killed before that has gone with its ref.
        for n in held:
            self.assertTrue(workspace.copied(support.engine(), cleanup.Names(n).container), n)
        self.assertEqual(self.hidden_refs().split(),
                         sorted(f"refs/claude-bottle/{n}" for n in held | {name}))
        for n in held | {name}:
            self.assertEqual(self.m.cli("stop", "--discard", n).returncode, 0)
        self.assertEqual(self.hidden_refs(), "")

    def test_losing_the_engine_mid_command_is_one_error_line_and_exit_4(self):
        name = self.m.start("--no-results")
        with tempfile.TemporaryDirectory() as tmp:
            sock_path = Path(tmp, "docker.sock")
            proxy = _DroppingProxy(sock_path, drop_after_requests=4)
            try:
                out = self.m.cli("stop", name, env={"DOCKER_HOST": f"unix://{sock_path}"})
            finally:
                proxy.close()
        self.assertEqual(out.returncode, 4, out.stderr)
        self.assertOneErrorLine(out.stderr)
        self.assertIn("lost the connection to the Docker engine", out.stderr)
        self.m.cli("stop", name)
        self.assertTrue(self.gone(name))


class _DroppingProxy:
    """Forwards a Unix socket to the real engine's, then drops every connection after a number of requests."""

    def __init__(self, path: Path, drop_after_requests: int):
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(16)
        self.left = drop_after_requests
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.left <= 0:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect("/var/run/docker.sock")
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, counting):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if counting and data[:4] in (b"GET ", b"POST", b"DELE", b"PUT ", b"HEAD"):
                    self.left -= 1
                    if self.left < 0:
                        for c in self.conns:
                            c.close()
                        return
                dst.sendall(data)
        except OSError:
            pass

    def close(self):
        self.server.close()
        for c in self.conns:
            c.close()


class DeadSessionsTest(WorkSafetyCase):
    """5 and 8: a killed session's work is kept until it comes back; a live session elsewhere is live."""

    def test_a_session_in_another_pid_namespace_is_not_taken_for_dead(self):
        with tempfile.TemporaryDirectory() as tmp:
            lock = Path(tmp, "sessions", "0123456789abcdef.lock")  # named as SessionLock names its files
            lock.parent.mkdir()
            # The same host name, its own PID namespace: the old pid check would have called it dead.
            holder = hold_lock(lock, prefix=("unshare", "--pid", "--fork"))
            try:
                b = support.TestBottle(owner=cleanup.owner_label(lock))
                try:
                    name = self.m.start("--no-results")
                    self.m.cli("stop", name)
                    self.assertEqual(len(cleanup.of_bottle(support.engine(), b.name)), support.OBJECTS_PER_BOTTLE)
                finally:
                    b.remove()
            finally:
                holder.kill()
                holder.wait()


class DetachedRunRecordsTest(WorkSafetyCase):
    """9: a run whose supervisor is gone does not hang `wait` or block `rm`; `rm` stays in its folder."""

    def test_wait_and_rm_of_a_run_nobody_looks_after(self):
        state = Path(self.m.tmp.name, "home", ".local", "state", "claude-bottle", "runs", "coder-0a0a0a")
        state.mkdir(parents=True)
        (state / "meta.json").write_text(json.dumps({"kind": "run", "agent": "coder", "started": time.time()}))
        (state / "owner").write_text(cleanup.owner_label(Path(self.m.tmp.name, "sessions", "0123456789abcdef.lock")))
        (state / "output").write_text("")
        out = self.m.cli("wait", "coder-0a0a0a", timeout=30)
        self.assertEqual((out.returncode, out.stdout), (1, "coder-0a0a0a: exit 125\n"))
        victim = Path(self.m.tmp.name, "home", ".local", "state", "claude-bottle", "x")
        victim.mkdir()
        out = self.m.cli("rm", "../x")
        self.assertEqual(out.returncode, 1)
        self.assertOneErrorLine(out.stderr)
        self.assertTrue(victim.is_dir())
        self.assertEqual(self.m.cli("rm", "coder-0a0a0a").returncode, 0)
        self.assertFalse(state.exists())


class _HangingApi(support.Server):
    """A Messages API that takes requests and never answers them: Claude waits on it."""

    def __init__(self):
        api = self
        self.asked = threading.Event()
        self.closing = threading.Event()

        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.asked.set()
                api.closing.wait(600)

        super().__init__(Handler)

    def close(self):
        self.closing.set()
        super().close()


class EngineRestartTest(WorkSafetyCase):
    """The engine restarts under the bottles (a daemon restart, as an upgrade does, stops every container on
    it): a detached run's supervisor waits for it and brings the work back; a detached bottle, stopped with
    it, says what to do, and `stop` brings its work back; nothing is left, and new bottles start. Restarting
    the engine stops everyone's containers, so this runs only where CLAUDE_BOTTLE_TEST_RESTART_ENGINE names
    the command that does it (.ci/run sets it)."""

    def setUp(self):
        self.restart = os.environ.get("CLAUDE_BOTTLE_TEST_RESTART_ENGINE", "")
        if not self.restart:
            self.skipTest("set CLAUDE_BOTTLE_TEST_RESTART_ENGINE to a command that restarts the Docker engine "
                          "(it stops every container on it)")
        api = _HangingApi()
        self.addCleanup(api.close)
        self.api = api
        host = support.host_address()
        self.m = Machine({"bottles": {"slow": {"env": {"ANTHROPIC_BASE_URL": f"http://{host}:{api.port}"},
                                               "egress": {"private_hosts": [f"{host}:{api.port}"]}}},
                          "agents": {"coder": {"bottle": "slow"}}})
        self.addCleanup(self.m.close)

    def test_no_work_is_lost_and_nothing_is_left_when_the_engine_restarts(self):
        out = self.m.cli("run", "coder", "take your time", "--yes", "--detach", "--workspace", str(self.m.repo))
        self.assertEqual(out.returncode, 0, out.stderr)
        run = out.stdout.strip()
        self.m.started.append(run)
        held = self.m.start()
        for name in (run, held):
            out = self.m.agent(name, f"cd /workspace && echo {name} > {name}.txt && git add {name}.txt && "
                                     f"git commit -q -m 'agent: {name}' && echo wip > wip-{name}.txt")
            self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(self.api.asked.wait(120), "Claude never called the API")
        subprocess.run(self.restart, shell=True, check=True, timeout=300, stdout=subprocess.DEVNULL)

        # The run's supervisor waited for the engine, then brought the work back and removed the bottle.
        waited = self.m.cli("wait", run, timeout=400)
        self.assertIn(f"{run}: exit", waited.stdout)
        for name in (run, held):
            self.assertNotIn(f"wip-{name}.txt", os.listdir(self.m.repo))  # the user's checkout is untouched
        branch = self.m.branch(run)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:{run}.txt"), f"{run}\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}:wip-{run}.txt"), "wip\n")
        self.assertTrue(self.gone(run))
        self.assertIn(branch, self.m.cli("ps", "-a").stdout)

        # The detached bottle stopped with the engine: it says what to do, and `stop` brings its work back.
        listed = self.m.cli("ps").stdout.splitlines()
        self.assertIn("held: work not brought back", next(line for line in listed if line.startswith(held)))
        out = self.m.agent(held, "true")
        self.assertEqual(out.returncode, 1)
        self.assertOneErrorLine(out.stderr)
        self.assertIn(f"`claude-bottle stop {held}` brings its work back", out.stderr)
        out = self.m.cli("stop", held)
        self.assertEqual(out.returncode, 0, out.stderr)
        branch = self.m.branch(held)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:{held}.txt"), f"{held}\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}:wip-{held}.txt"), "wip\n")
        self.assertTrue(self.gone(held))

        fresh = self.m.start()
        self.assertEqual(self.m.agent(fresh, "curl -s -o /dev/null -w '%{http_connect}' https://example.com/ "
                                             "|| true").stdout, "403")  # its sidecar answers (and refuses)
        self.discard(fresh)


class BadValuesTest(WorkSafetyCase):
    """10: values that crashed `start` are refused before anything exists, or handled."""

    def test_refused_before_anything_exists(self):
        root_owned = Path(self.m.tmp.name, "root-owned")
        root_owned.mkdir(mode=0o755)
        cases = {
            "pids": ({"bottles": {"b": {"resources": {"pids": 2048.0}}}, "agents": {"coder": {"bottle": "b"}}},
                     [], "must be a whole number like 2048, not 2048.0"),
            "memory": ({"bottles": {"b": {"resources": {"memory": "1k"}}}, "agents": {"coder": {"bottle": "b"}}},
                       [], "too little for Claude Code"),
            "long name": ({"agents": {"c" * 60: {"bottle": "default"}}}, [], "names are 1 to 56 letters"),
            "big env": ({"bottles": {"b": {"env": {"BIG": "${BIG}"}}}, "agents": {"coder": {"bottle": "b"}}},
                        [], "the limit is 65536"),
            "mount": (None, ["--mount", str(root_owned)], "could not write to it"),
        }
        for what, (manifest, extra, message) in cases.items():
            with self.subTest(what):
                m = Machine(manifest)
                try:
                    out = m.cli("start", "coder", "--yes", "--detach", *extra, env={"BIG": "v" * 100_000})
                    self.assertIn(out.returncode, (1, 3), out.stderr)
                    self.assertOneErrorLine(out.stderr)
                    self.assertIn(message, out.stderr)
                    self.assertEqual(support.objects_of(m.home), set())
                finally:
                    m.close()

    def test_a_56_character_agent_name_runs(self):
        m = Machine({"agents": {"a" * 56: {"bottle": "default"}}})
        try:
            out = m.cli("start", "a" * 56, "--yes", "--detach")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(m.cli("stop", out.stdout.strip()).returncode, 0)
        finally:
            m.close()

    def test_a_plain_folders_work_comes_back_beside_it(self):
        folder = Path(self.m.tmp.name, "notes")
        folder.mkdir()
        (folder / "a.md").write_text("a\n")
        out = self.m.cli("start", "coder", "--yes", "--detach", "--workspace", str(folder))
        name = out.stdout.strip()
        self.assertIn("comes back as a new folder", out.stderr)
        self.m.agent(name, "echo b > /workspace/b.md")
        out = self.m.cli("stop", name)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual((folder.parent / f"notes.{name}" / "b.md").read_text(), "b\n")
        self.assertFalse((folder / "b.md").exists())

    def test_a_bottle_out_of_memory_says_so(self):
        # Claude itself is too patient a victim (its 400 MB binary pages in and out under a small limit), so
        # a process that grabs memory stands in for it, in a real bottle with the manifest's limit.
        b = support.TestBottle(memory="80m")
        try:
            s = session.Session(support.engine(), b.name, "/workspace", None)
            with self.assertRaises(session.OutOfMemory) as ctx:
                s.run_headless(["node", "-e", "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))"],
                               io.BytesIO())
            self.assertIn(f"bottle {b.name} ran out of memory", str(ctx.exception))
            self.assertEqual(ctx.exception.exit_code, 137)
        finally:
            b.remove()


class LifecycleTest:
    """Stop, a CLI killed with SIGKILL, and cleanup: the same assertions on both runtimes
    (support.on_each_runtime)."""

    runtime: support.Runtime

    def setUp(self):
        self.m = Machine(runtime=self.runtime)
        self.addCleanup(self.m.close)
        self.addCleanup(self.discard_left)

    def discard_left(self):
        """Whatever a failed test left of its bottles goes, so the next test starts clean."""
        for name in support.bottles_of(self.m.home, self.runtime.engine()):
            self.m.cli("stop", "--discard", name)

    def objects(self) -> set[str]:
        return support.objects_of(self.m.home, self.runtime.engine())

    def interactive(self, *extra) -> tuple[Terminal, str]:
        """A session on a terminal, as a person starts one, with Claude Code up; returns it and its bottle."""
        before = support.bottles_of(self.m.home, self.runtime.engine())
        term = Terminal(self.m.argv("start", "coder", "--yes", *extra), env=self.m.env, cwd=self.m.tmp.name)
        try:
            term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""), timeout=120)
        except BaseException:
            self.kill(term)
            raise
        (name,) = support.bottles_of(self.m.home, self.runtime.engine()) - before
        return term, name

    def kill(self, term: Terminal):
        term.proc.kill()  # SIGKILL: nothing of ours runs
        term.proc.wait(30)
        os.close(term.master)

    def test_stop_removes_every_object_and_a_second_stop_says_there_is_none(self):
        name = self.m.start()
        made = self.objects()
        self.assertTrue(made)
        self.assertTrue(all(name in o for o in made), made)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(self.objects(), set())
        again = self.m.cli("stop", name)
        self.assertEqual(again.returncode, 1)
        self.assertEqual(again.stderr, f"Error: no bottle named '{name}': see `claude-bottle ps`\n")

    def test_the_agent_cannot_end_its_bottle(self):
        """Found by attacking it: everything in a bottle runs as the agent's user, and its PID 1 ended on the
        agent's SIGTERM; on Kubernetes a pod's container is not started again, so the work was lost. Every
        signal it can send, from a forged sender too, leaves the bottle running and the work comes back."""
        name = self.m.start()
        # With no room for a signal's details (PID 1's queue limit 0), the kernel reports it as kill(2)'s
        # from outside the bottle: a PID 1 that judged the sender would take it for the engine's.
        out = self.m.agent(name, "cd /workspace && echo saved > saved.txt && for s in TERM INT HUP QUIT USR1 "
                                 "STOP KILL; do kill -s $s 1; done; prlimit --pid 1 --sigpending=0:0 && "
                                 "python3 -c " + shlex.quote(FORGED_SIGTERM))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, "forged: queued\n")  # and ignored: it does not claim the engine sent it
        self.m.agent(name, "kill -9 -1")  # every process of the agent's, this one too
        time.sleep(1)
        alive = self.m.agent(name, "echo alive")
        self.assertEqual((alive.returncode, alive.stdout), (0, "alive\n"), alive.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:saved.txt"), "saved\n")
        self.assertEqual(self.objects(), set())

    def test_a_bottle_whose_container_ended_brings_its_work_back(self):
        """What no signal of the agent's can do, its PID 1's CPU-time limit or the out-of-memory killer can:
        end the bottle's container. On Kubernetes, where a pod's container is not started again, that lost the
        work; its workspace now outlives the container, and a container standing in for it brings it back."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && echo saved > saved.txt && git add saved.txt && "
                                 "git commit -q -m 'agent: saved' && echo uncommitted > u.txt")
        self.assertEqual(out.returncode, 0, out.stderr)
        running = subprocess.Popen(self.m.argv("exec", name, "--", "sleep", "60"), cwd=self.m.tmp.name, env=self.m.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        self.runtime.end_bottle_container(name)
        _, err = running.communicate(timeout=60)
        self.assertNotEqual(running.returncode, 0)
        self.assertNotIn("Traceback", err)  # found by attacking it: the stream's own exception, on Kubernetes
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        branch = self.m.branch(name)
        self.assertEqual(git(self.m.repo, "show", f"{branch}:saved.txt"), "saved\n")
        self.assertEqual(git(self.m.repo, "show", f"{branch}:u.txt"), "uncommitted\n")
        self.assertEqual(self.objects(), set())

    def test_a_workspace_folder_the_agent_closed_brings_its_work_back(self):
        """Found by attacking it: `chmod 000 /workspace` (the agent's own folder) failed every stop."""
        name = self.m.start()
        out = self.m.agent(name, "cd /workspace && echo x > x.txt && chmod 000 /workspace")
        self.assertEqual(out.returncode, 0, out.stderr)
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:x.txt"), "x\n")

    def test_a_killed_session_without_work_is_removed_by_the_next_start(self):
        term, name = self.interactive()
        made = self.objects()
        self.kill(term)
        self.assertEqual(self.objects(), made)  # nothing of ours ran: everything is still there
        other = self.m.start("--no-results")  # anyone's next start
        self.assertEqual({o for o in self.objects() if name in o}, set())
        self.assertEqual(self.m.cli("stop", other).returncode, 0)
        self.assertEqual(self.objects(), set())

    def test_a_killed_session_with_work_is_kept_and_stop_brings_it_back(self):
        term, name = self.interactive("--workspace", str(self.m.repo))
        self.m.agent(name, "cd /workspace && echo saved > saved.txt && git add saved.txt && "
                           "git commit -q -m 'agent: saved'")
        self.kill(term)
        other = self.m.start("--no-results")  # anyone's next start
        out = self.m.cli("ps")
        self.assertRegex(out.stdout, rf"{name}\s.*held: work not brought back")
        self.assertTrue({o for o in self.objects() if name in o})
        stopped = self.m.cli("stop", name)
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(name)}:saved.txt"), "saved\n")
        self.m.cli("stop", other)
        self.assertEqual(self.objects(), set())

    def test_cleanup_asks_then_removes_your_bottles_running_or_killed_and_brings_their_work_back(self):
        others = {o.labels.get(cleanup.LABEL_BOTTLE) for o in cleanup.of_user(self.runtime.engine())}
        if others:
            self.skipTest(f"cleanup would also remove bottles of yours that are not this test's: {others}")
        running = self.m.start()
        self.m.agent(running, "cd /workspace && echo kept > kept.txt && git add kept.txt && git commit -qm kept")
        term, killed = self.interactive()
        self.kill(term)
        refused = self.m.cli("cleanup")  # stdin is not a terminal: nobody to ask
        self.assertEqual(refused.returncode, 6, refused.stderr)
        self.assertEqual(support.bottles_of(self.m.home, self.runtime.engine()), {running, killed})
        out = self.m.cli("cleanup", "--yes")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "removed 2 bottles")
        self.assertEqual(self.objects(), set())
        self.assertEqual(git(self.m.repo, "show", f"{self.m.branch(running)}:kept.txt"), "kept\n")


support.on_each_runtime(LifecycleTest, globals())
