import tempfile
import threading
import time
import unittest
from pathlib import Path

from claude_bottle import runs
from claude_bottle.errors import BottleError


class RunsTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.env = {"CLAUDE_BOTTLE_HOME": tmp.name}

    def test_record_lives_in_a_private_folder_under_the_home(self):
        run = runs.create(self.env, "a-123456", {"agent": "a"})
        self.assertEqual(run.folder, Path(self.env["CLAUDE_BOTTLE_HOME"], ".local/state/claude-bottle/runs/a-123456"))
        self.assertEqual(run.folder.stat().st_mode & 0o777, 0o700)
        self.assertEqual(run.output.stat().st_mode & 0o777, 0o600)
        self.assertEqual(runs.get(self.env, "a-123456").meta, {"agent": "a"})
        self.assertEqual([r.name for r in runs.all_runs(self.env)], ["a-123456"])
        self.assertIsNone(runs.get(self.env, "other"))

    def test_follow_ends_when_the_run_finishes(self):
        run = runs.create(self.env, "b-1", {})

        def claude():
            with run.output.open("ab") as f:
                for word in (b"one ", b"two ", b"three"):
                    f.write(word)
                    f.flush()
                    time.sleep(0.05)
            run.finish(0)

        threading.Thread(target=claude).start()
        self.assertEqual(b"".join(run.follow(poll=0.01)), b"one two three")
        self.assertEqual(run.exit_status, 0)

    def test_a_running_run_cannot_be_removed(self):
        run = runs.create(self.env, "c-1", {})
        with self.assertRaises(BottleError) as ctx:
            runs.remove(run)
        self.assertEqual(str(ctx.exception), "run 'c-1' is still running: stop it first (claude-bottle stop c-1)")
        run.finish(3)
        runs.remove(run)
        self.assertIsNone(runs.get(self.env, "c-1"))

    def test_a_run_whose_supervisor_died_counts_as_failed(self):
        import socket
        import subprocess

        from claude_bottle import cleanup

        run = runs.create(self.env, "d-1", {})
        self.assertIsNone(run.exit_status)  # handed over, supervisor not yet started
        p = subprocess.Popen(["sleep", "30"])
        (run.folder / "supervisor").write_text(cleanup.Owner(socket.gethostname(), p.pid,
                                                             cleanup.process_start(p.pid)).label())
        self.assertIsNone(run.exit_status)  # still supervised
        p.kill()
        p.wait()
        self.assertEqual(run.exit_status, runs.COULD_NOT_RUN)
