import tempfile
import threading
import time
import unittest
from pathlib import Path

from claude_bottle import cleanup, runs
from claude_bottle.errors import BottleError


class RunsTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.env = {"CLAUDE_BOTTLE_HOME": tmp.name}
        self.lock = cleanup.SessionLock.acquire(Path(tmp.name, "sessions"))
        self.addCleanup(self.lock.release)

    def test_record_lives_in_a_private_folder_under_the_home(self):
        run = runs.create(self.env, "a-123456", {"agent": "a"}, "owner")
        self.assertEqual(run.folder, Path(self.env["CLAUDE_BOTTLE_HOME"], ".local/state/claude-bottle/runs/a-123456"))
        self.assertEqual(run.folder.stat().st_mode & 0o777, 0o700)
        self.assertEqual(run.output.stat().st_mode & 0o777, 0o600)
        self.assertEqual(runs.get(self.env, "a-123456").meta, {"agent": "a"})
        self.assertEqual([r.name for r in runs.all_runs(self.env)], ["a-123456"])
        self.assertIsNone(runs.get(self.env, "other"))

    def test_a_record_belongs_to_the_engine_it_was_made_on(self):
        """Found by attacking it: `cleanup` in another namespace removed the record of a running bottle, and the
        next `start` where it ran took it for a dead session's and removed it."""
        from claude_bottle import status

        from .fake_engine import FakeEngine

        here = FakeEngine()
        runs.create(self.env, "a-000001", {"kind": "session", "engine": cleanup.engine_id(here)}, "owner")
        runs.create(self.env, "a-000002", {"kind": "session", "engine": "kubernetes https://cluster:6443 other"},
                    "owner")
        runs.create(self.env, "a-000003", {"kind": "session"}, "owner")  # from before records said
        self.assertEqual([r.name for r in runs.on(here, self.env)], ["a-000001", "a-000003"])
        self.assertEqual(sorted(r.name for r in status.bottles(here, self.env)), ["a-000001", "a-000003"])

    def test_follow_ends_when_the_run_finishes(self):
        run = runs.create(self.env, "b-1", {"kind": "run"}, self.lock.label())

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
        run = runs.create(self.env, "c-1", {"kind": "run"}, self.lock.label())
        with self.assertRaises(BottleError) as ctx:
            runs.remove(run)
        self.assertEqual(str(ctx.exception), "run 'c-1' is still running: stop it first (claude-bottle stop c-1)")
        run.finish(3)
        runs.remove(run)
        self.assertIsNone(runs.get(self.env, "c-1"))

    def test_a_run_whose_supervisor_died_counts_as_failed(self):
        run = runs.create(self.env, "d-1", {"kind": "run"}, self.lock.label())
        self.assertIsNone(run.exit_status)  # its creator still holds it
        with cleanup.SessionLock.acquire(Path(self.env["CLAUDE_BOTTLE_HOME"], "sessions")) as supervisor:
            run.set_owner(supervisor.label())
            self.lock.release()
            self.assertIsNone(run.exit_status)  # handed over
        self.assertEqual(run.exit_status, runs.COULD_NOT_RUN)  # its supervisor is gone without a status

    def test_a_run_whose_creator_died_before_handing_over_counts_as_failed(self):
        run = runs.create(self.env, "e-1", {"kind": "run"}, self.lock.label())
        self.lock.release()
        self.assertEqual(run.exit_status, runs.COULD_NOT_RUN)

    def test_names_are_checked_before_the_filesystem_is_touched(self):
        for bad in ("../x", "", "a/b"):
            with self.subTest(bad), self.assertRaises(BottleError):
                runs.get(self.env, bad)
