import json
import tempfile
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

from claude_bottle import cli, runs, tasks
from claude_bottle.errors import BottleError

from .fake_engine import FakeEngine
from .test_lifecycle import StartCase


class ReadTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def read(self, text, default=None):
        f = self.dir / "tasks.txt"
        f.write_text(text)
        return tasks.read(f, default)

    def test_lines_and_json_lines(self):
        (self.dir / "repo").mkdir()
        got = self.read('# comment\nfix the build\n\n{"prompt": "add tests", "workspace": "repo"}\n', Path("/w"))
        self.assertEqual(got, [tasks.Task("fix the build", Path("/w")), tasks.Task("add tests", self.dir / "repo")])

    def test_errors_name_file_and_line(self):
        f = self.dir / "tasks.txt"
        for text, message in (
            ('ok\n{"prompt": 3}\n', f'{f}:2: a JSON task is {{"prompt": "…", "workspace": "DIR"}} with a non-empty prompt'),
            ('{"prompt": "x", "model": "y"}\n', f'{f}:1: a JSON task is {{"prompt": "…", "workspace": "DIR"}} with a '
                                                "non-empty prompt; unknown key 'model'"),
            ("{nope\n", f"{f}:1: invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
            ("\n# only comments\n", f"--tasks {f}: no tasks in it (one prompt per line)"),
            # Found by attacking it: these were tracebacks, and a missing folder past the first line went unseen
            # by --dry-run.
            ('ok\n{"prompt": "x", "workspace": "gone"}\n',
             f"{f}:2: workspace gone: no such folder (a path relative to the tasks file, or absolute)"),
            ('{"prompt": "x", "workspace": "a\\u0000b"}\n',
             f"{f}:1: workspace a\\x00b: no such folder (a path relative to the tasks file, or absolute)"),
            ('{"prompt": "\\ud800"}\n',
             f"{f}:1: the prompt is not valid UTF-8 text, which is all Claude takes: write it in UTF-8"),
            ('{"prompt": NaN}\n', f"{f}:1: invalid JSON: NaN is not a JSON value"),
            ('{"a": ' + "[" * 100000 + "\n", f"{f}:1: invalid JSON: nested too deep"),
            ("[1]\n{}\n", f'{f}:2: a JSON task is {{"prompt": "…", "workspace": "DIR"}} with a non-empty prompt'),
        ):
            with self.subTest(text):
                with self.assertRaises(BottleError) as ctx:
                    self.read(text)
                self.assertEqual(str(ctx.exception), message)

    def test_a_tasks_file_that_is_no_file_is_refused_at_once(self):
        for path, said in ((Path("/dev/zero"), "it is not a regular file (a pipe or a device)"),
                           (self.dir, "it is a folder, not a file")):
            with self.subTest(str(path)), self.assertRaises(BottleError) as ctx:
                tasks.read(path, None)
            self.assertEqual(str(ctx.exception), f"--tasks {path}: cannot read it: {said}")

    def test_default_parallelism_fits_the_machine(self):
        with mock.patch("os.cpu_count", return_value=2), mock.patch("os.sysconf", side_effect=[4096, 6 * 1024**3 // 4096]):
            self.assertEqual(tasks.default_parallelism(), 2)
        with mock.patch("os.cpu_count", return_value=16), mock.patch("os.sysconf", side_effect=[4096, 8 * 1024**3 // 4096]):
            self.assertEqual(tasks.default_parallelism(), 2)  # memory, not cores, is the limit
        with mock.patch("os.cpu_count", return_value=4), mock.patch("os.sysconf", side_effect=[4096, 1024**3 // 4096]):
            self.assertEqual(tasks.default_parallelism(), 1)


class ConcurrencyEngine(FakeEngine):
    """Records how many tasks run at once; a task's exit status comes from its prompt."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def exec_stream(self, name, argv, user, workdir, sink):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        prompt = argv[2]
        sink.write(f"answer to {prompt}\n".encode())
        return 3 if "fail" in prompt else 0


class RunTasksCommandTest(StartCase):
    def run_cli(self, engine, *args):
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            return CliRunner().invoke(cli.main, ["run", *args], env=self.env)

    def test_tasks_run_at_most_parallel_at_once_and_are_summarised(self):
        f = self.tmp / "tasks.txt"
        f.write_text("".join(f"task {i}\n" for i in range(5)) + json.dumps({"prompt": "please fail"}) + "\n")
        engine = ConcurrencyEngine(images=self.engine().images)
        r = self.run_cli(engine, "default", "--tasks", str(f), "--parallel", "2", "--yes")
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertEqual(engine.peak, 2)
        self.assertEqual(engine.objects, {})
        self.assertIn("tasks:    6 from", r.stderr)
        lines = r.stdout.splitlines()
        summary = lines[lines.index(next(line for line in lines if line.startswith("TASK"))):]
        self.assertEqual([row.split()[0] for row in summary], ["TASK", "1:", "2:", "3:", "4:", "5:", "6:"])
        self.assertRegex(summary[6], r"^6: please fail\s+default-[0-9a-f]{6}\s+3\s+\d+\.\ds\s+-$")
        self.assertIn("answer to task 3", r.stdout)

    def test_prompt_or_tasks(self):
        r = self.run_cli(self.engine(), "default", "--yes")
        self.assertEqual(r.exit_code, 2)
        self.assertIn("give the PROMPT to run (- reads it from stdin), --prompt-file FILE or --tasks FILE", r.stderr)
        r = self.run_cli(self.engine(), "default", "hi", "--tasks", "x", "--yes")
        self.assertIn("give one of PROMPT, --prompt-file FILE and --tasks FILE, not PROMPT and --tasks", r.stderr)
        r = self.run_cli(self.engine(), "default", "hi", "--parallel", "2", "--yes")
        self.assertIn("--parallel only goes with --tasks", r.stderr)


class RecordingEngine(FakeEngine):
    """Remembers the command Claude was run with."""

    def exec_stream(self, name, argv, user, workdir, sink):
        self.argv = argv
        sink.write(b"done\n")
        return 0


class HeadlessInputTest(StartCase):
    def run_cli(self, *args, input=None):
        engine = RecordingEngine(images=self.engine().images)
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            r = CliRunner().invoke(cli.main, ["run", *args], env=self.env, input=input)
        return r, getattr(engine, "argv", None)

    def test_the_prompt_from_stdin_or_a_file(self):
        r, argv = self.run_cli("default", "-", "--yes", input="fix the tests\nthen stop\n")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual(argv[:3], ["bottle-claude", "-p", "fix the tests\nthen stop\n"])
        f = self.tmp / "prompt.md"
        f.write_text("from a file")
        r, argv = self.run_cli("default", "--prompt-file", str(f), "--yes")
        self.assertEqual(argv[:3], ["bottle-claude", "-p", "from a file"])
        r, argv = self.run_cli("default", "-", "--yes", input="  \n")
        self.assertEqual(r.exit_code, 2)
        self.assertIn("the prompt read from stdin is empty", r.stderr)
        self.assertIsNone(argv)

    def test_prompts_that_cannot_reach_claude_are_refused_before_anything_is_made(self):
        r, argv = self.run_cli("default", "-", "--yes", input=b"\xff\xfe binary")
        self.assertEqual(r.exit_code, 2)
        self.assertIn("the prompt read from stdin is not UTF-8 text", r.stderr)
        r, argv = self.run_cli("default", "a\0b", "--yes")
        self.assertEqual(r.exit_code, 1)
        self.assertIn("the prompt contains a NUL character", r.stderr)
        r, argv = self.run_cli("default", "-", "--yes", input="x" * (128 * 1024))
        self.assertEqual(r.exit_code, 1)
        self.assertIn(f"the prompt is {128 * 1024} bytes; the limit is {128 * 1024 - 1} (128 KiB)", r.stderr)
        self.assertIsNone(argv)
        f = self.tmp / "tasks.txt"
        f.write_text("fine\n" + "y" * (128 * 1024) + "\n")
        r, argv = self.run_cli("default", "--tasks", str(f), "--yes")
        self.assertEqual(r.exit_code, 1)
        self.assertIn(f"{f}:2: the prompt is", r.stderr)
        self.assertIsNone(argv)

    def test_the_agents_model_and_arguments_after_a_double_dash_go_to_claude(self):
        (self.tmp / "home" / "claude-bottle.json").write_text(json.dumps(
            {"agents": {"m": {"bottle": "default", "model": "opus"}}}))
        r, argv = self.run_cli("m", "hi", "--yes", "--", "--max-turns", "3", "--yes")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual(argv, ["bottle-claude", "-p", "hi", "--output-format", "text", "--model", "opus",
                                "--max-turns", "3", "--yes"])
        self.assertIn("model:    opus", r.stderr)
        self.assertIn("claude:   also given --max-turns 3 --yes", r.stderr)
        dry, _ = self.run_cli("m", "hi", "--dry-run", "--", "--max-turns", "\x1b[2J")
        self.assertIn("claude:   also given --max-turns \\x1b[2J", dry.stdout)


class JsonOutputsTest(StartCase):
    def cli(self, *args, engine=None, input=None):
        engine = engine or self.engine()
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            return CliRunner().invoke(cli.main, list(args), env=self.env, input=input)

    def test_the_tasks_summary_is_one_json_document_with_each_output(self):
        f = self.tmp / "tasks.txt"
        f.write_text("first\nplease fail\n")
        engine = ConcurrencyEngine(images=self.engine().images)
        r = self.cli("run", "default", "--tasks", str(f), "--json", "--yes", engine=engine)
        self.assertEqual(r.exit_code, 1, r.output)
        data = json.loads(r.stdout)
        self.assertEqual([(t["task"], t["exit_status"], t["output"], t["branch"]) for t in data],
                         [(1, 0, "answer to first\n", None), (2, 3, "answer to please fail\n", None)])
        self.assertIn("task 2 (", r.stderr)

    def test_logs_of_a_run_tail_and_since(self):
        run = runs.create(self.env, "default-abc123", {"kind": "run", "agent": "default"}, "lock:none")
        with run.writer() as out:
            out.write(b"".join(b"line %d\n" % i for i in range(1, 11)))
        run.finish(0)
        self.assertEqual(self.cli("logs", "default-abc123", "--tail", "3").stdout, "line 8\nline 9\nline 10\n")
        for n in ("10", "11", "15", "1000"):  # more than there are: all of them
            self.assertEqual(self.cli("logs", "default-abc123", "-n", n).stdout.count("line"), 10, n)
        self.assertEqual(self.cli("logs", "default-abc123", "--since", "1h").stdout.count("line"), 10)
        # Before the epoch, as the machine counts: all of it (found by attacking it: it was called no date).
        self.assertEqual(self.cli("logs", "default-abc123", "--since", "0001-01-01T00:00:00").stdout.count("line"), 10)
        for wrong in ("1" + "0" * 400 + "d", "9" * 5000, "yesterday", "2026-13-01"):
            r = self.cli("logs", "default-abc123", "--since", wrong)
            self.assertEqual(r.exit_code, 2, r.output)
            self.assertIn("Invalid value for '--since'", r.stderr)

    def test_every_unset_host_variable_is_named(self):
        (self.tmp / "home" / "claude-bottle.json").write_text(json.dumps(
            {"bottles": {"default": {"env": {"A": "${UNSET_AAA}", "B": "${UNSET_BBB}"}}}}))
        r = self.cli("run", "default", "hi", "--dry-run")
        self.assertEqual(r.exit_code, 3, r.output)
        self.assertIn("host variable $UNSET_AAA is not set", r.stderr)
        self.assertIn("host variable $UNSET_BBB is not set", r.stderr)

    def test_list_info_and_run_dry_run(self):
        (self.tmp / "home" / "claude-bottle.json").write_text(json.dumps(
            {"agents": {"m": {"bottle": "default", "model": "opus", "prompt": "one\ntwo"}}}))
        r = self.cli("list", "--json")
        self.assertEqual(r.exit_code, 0, r.output)
        rows = {a["agent"]: a for a in json.loads(r.stdout)}
        self.assertEqual((rows["m"]["bottle"], rows["m"]["model"], rows["m"]["trusted"]), ("default", "opus", True))
        self.assertIsNone(rows["default"]["file"])
        r = self.cli("info", "m", "--json")
        info = json.loads(r.stdout)
        self.assertEqual((info["agent"]["model"], info["prompt"]["text"]), ("opus", "one\ntwo"))
        self.assertNotIn("containers", info)
        r = self.cli("run", "m", "hi", "--dry-run", "--json")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual(json.loads(r.stdout)["agent"]["name"], "m")
        r = self.cli("run", "m", "hi", "--json")
        self.assertEqual(r.exit_code, 2)
        self.assertIn("--json goes with --dry-run or --tasks", r.stderr)
