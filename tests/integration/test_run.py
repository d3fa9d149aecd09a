"""`run` end to end: the real Claude Code in a real bottle, through the real sidecar, talking to a
scripted stand-in for the Anthropic Messages API (no internet), reached as a private host."""

import http.server
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from claude_bottle import cleanup

from . import support
from .test_workspace import git, make_repo
from . import test_sidecar
from .test_sidecar import TOKEN, Project

GREETING = "Hello from the stand-in."


def setUpModule():
    test_sidecar.setUpModule()  # needs the pipelock image
COMMIT = ("cd /workspace && echo agent > agent.txt && git add agent.txt && "
          "git commit -q -m 'agent: add agent.txt' && echo committed")


class MessagesApi(support.Server):
    """Answers /v1/messages as Claude Code calls it (streaming and not): text, or a Bash tool call when
    the prompt asks to commit, or a 400 when it asks to fail."""

    def __init__(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                api.requests.append(self.path)
                api.authorization.append(self.headers.get("Authorization", ""))
                if "count_tokens" in self.path:
                    return self.reply_json({"input_tokens": 10})
                prompt = json.dumps(body.get("messages", [])[:1])
                last = body.get("messages", [{}])[-1]
                tool_result = next((c for c in last.get("content", []) if isinstance(c, dict)
                                    and c.get("type") == "tool_result"), None) if last.get("role") == "user" else None
                if "please fail" in prompt:
                    return self.reply_json({"type": "error", "error": {"type": "invalid_request_error",
                                                                       "message": "scripted failure"}}, 400)
                if "please commit" in prompt and tool_result is None:
                    block = {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {}}
                    return self.reply(body, block, json.dumps({"command": COMMIT, "description": "commit"}),
                                      "tool_use")
                text = f"Tool said: {json.dumps(tool_result.get('content'))}" if tool_result else GREETING
                return self.reply(body, {"type": "text", "text": ""}, text, "end_turn")

            def reply_json(self, data, status=200):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def reply(self, body, block, payload, stop):
                message = {"id": "msg_01", "type": "message", "role": "assistant", "model": body.get("model"),
                           "content": [], "stop_reason": None, "stop_sequence": None,
                           "usage": {"input_tokens": 10, "output_tokens": 1}}
                if not body.get("stream"):
                    done = dict(block, **({"text": payload} if block["type"] == "text"
                                          else {"input": json.loads(payload)}))
                    return self.reply_json(dict(message, content=[done], stop_reason=stop))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                delta = ({"type": "text_delta", "text": payload} if block["type"] == "text"
                         else {"type": "input_json_delta", "partial_json": payload})
                for event, data in (
                    ("message_start", {"type": "message_start", "message": message}),
                    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
                    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": {"output_tokens": 5}}),
                    ("message_stop", {"type": "message_stop"}),
                ):
                    self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()

        self.requests = []
        self.authorization = []
        super().__init__(Handler)


class RunTest:
    """Run on both runtimes (support.on_each_runtime)."""

    runtime: support.Runtime

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api = MessagesApi()
        # This host as the runtime's workloads reach it: private, so the bottle must name it as a private host.
        host = cls.runtime.host_address()
        cls.project = Project({"bottles": {"gw": {
            "env": {"ANTHROPIC_BASE_URL": f"http://{host}:{cls.api.port}"},
            "egress": {"private_hosts": [host]}}},
            "agents": {"coder": {"bottle": "gw", "prompt": "You are a test agent."}}}, {}, cls.runtime)

    @classmethod
    def tearDownClass(cls):
        cls.api.close()
        cls.project.tmp.cleanup()
        super().tearDownClass()

    def test_output_streams_back_and_nothing_is_left(self):
        before = support.objects_of(self.project.dir, self.runtime.engine())
        out = self.project.cli("run", "coder", "say hi", "--yes")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), GREETING)
        self.assertIn("private:  ", out.stderr)
        self.assertEqual(support.objects_of(self.project.dir, self.runtime.engine()), before)
        self.assertTrue(any(p.startswith("/v1/messages") for p in self.api.requests))
        self.assertEqual(set(self.api.authorization), {f"Bearer {TOKEN}"})  # the gateway is the home manifest's

    def test_json_output_format_passes_through(self):
        out = self.project.cli("run", "coder", "say hi", "--yes", "--output-format", "json")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["result"], GREETING)

    def test_claudes_failure_is_the_exit_status(self):
        out = self.project.cli("run", "coder", "please fail", "--yes")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("scripted failure", out.stdout + out.stderr)

    def test_tool_call_commits_and_the_work_comes_back_as_a_branch(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(Path(tmp))
            status = git(repo, "status", "--porcelain")
            out = self.project.cli("run", "coder", "please commit", "--yes", "--workspace", str(repo))
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("committed", out.stdout)
            branches = git(repo, "branch", "--list", "bottle/coder/*", "--format=%(refname:short)").split()
            self.assertEqual(len(branches), 1)
            self.assertIn(f"results: 1 new commit on branch {branches[0]} in {repo}", out.stderr)
            self.assertEqual(git(repo, "show", f"{branches[0]}:agent.txt"), "agent\n")
            self.assertEqual(git(repo, "status", "--porcelain"), status)
            self.assertEqual(git(repo, "branch", "--show-current"), "main\n")

    def test_three_parallel_runs_on_one_repository_each_get_a_branch(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(Path(tmp))
            with ThreadPoolExecutor(3) as pool:
                outs = list(pool.map(lambda _: self.project.cli("run", "coder", "please commit", "--yes",
                                                                "--workspace", str(repo)), range(3)))
            self.assertEqual([o.returncode for o in outs], [0, 0, 0], [o.stderr for o in outs])
            branches = git(repo, "branch", "--list", "bottle/coder/*", "--format=%(refname:short)").split()
            self.assertEqual(len(set(branches)), 3)
            for b in branches:
                self.assertEqual(git(repo, "log", "-1", "--format=%s", b), "agent: add agent.txt\n")

    def test_tasks_file_in_parallel_with_a_summary(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(Path(tmp))
            f = Path(tmp, "tasks.txt")
            f.write_text("say hi\n" + json.dumps({"prompt": "please commit", "workspace": "repo"}) + "\nplease fail\n")
            out = self.project.cli("run", "coder", "--tasks", str(f), "--parallel", "2", "--yes")
            self.assertEqual(out.returncode, 1, out.stderr)  # one task failed
            summary = out.stdout[out.stdout.index("TASK"):].splitlines()
            self.assertEqual(len(summary), 4)
            self.assertRegex(summary[1], r"^1: say hi\s+coder-\w{6}\s+0\s")
            branch = git(repo, "branch", "--list", "bottle/coder/*", "--format=%(refname:short)").strip()
            self.assertRegex(summary[2], rf"^2: please commit\s+coder-\w{{6}}\s+0\s+\S+\s+{branch}$")
            self.assertNotRegex(summary[3], r"\s0\s")
            self.assertIn(GREETING, out.stdout)

    def test_detached_runs_ps_logs_wait_rm(self):
        project = self.project
        started = [project.cli("run", "coder", prompt, "--yes", "--detach") for prompt in ("say hi", "please fail")]
        self.assertEqual([o.returncode for o in started], [0, 0], [o.stderr for o in started])
        ok, bad = (o.stdout.strip() for o in started)
        follow = project.cli("logs", ok, "-f")  # returns once the run has finished
        self.assertEqual((follow.returncode, follow.stdout.strip()), (0, GREETING))
        waited = project.cli("wait", ok, bad)
        self.assertEqual(waited.returncode, 1)
        self.assertEqual(waited.stdout.splitlines()[0], f"{ok}: exit 0")
        self.assertRegex(waited.stdout.splitlines()[1], rf"^{bad}: exit [1-9]\d*$")
        for name in (ok, bad):  # finished: the sidecar, network and bottle are gone, the record stays
            self.assertEqual(cleanup.of_bottle(self.runtime.engine(), name), [])
        rows = {r["name"]: r for r in json.loads(project.cli("ps", "--json").stdout)}
        self.assertEqual((rows[ok]["state"], rows[ok]["exit_status"]), ("exited (0)", 0))
        self.assertNotEqual(rows[bad]["exit_status"], 0)
        self.assertIn("scripted failure", project.cli("logs", bad).stdout)
        whole = project.cli("logs", bad).stdout
        self.assertEqual(project.cli("logs", bad, "--tail", "1").stdout, whole.splitlines(keepends=True)[-1])
        self.assertEqual(project.cli("logs", bad, "-n", "0").stdout, "")
        self.assertEqual(project.cli("logs", bad, "--since", "1h").stdout, whole)
        self.assertEqual(project.cli("logs", bad, "--since", "2999-01-01T00:00:00").stdout, "")
        wrong = project.cli("logs", bad, "--since", "yesterday")
        self.assertEqual(wrong.returncode, 2)
        self.assertIn("Invalid value for '--since': 'yesterday' is neither a duration", wrong.stderr)
        again = project.cli("stop", ok)  # finished already: said so, not "no bottle named"
        self.assertEqual((again.returncode, again.stderr),
                         (0, f"{ok}: already finished (exit 0); its output stays until `claude-bottle rm {ok}`\n"))
        kept = project.cli("logs", ok, "--egress", "--json")  # a finished run's report stays until rm
        self.assertEqual(kept.returncode, 0, kept.stderr)
        self.assertTrue(any(r["host"].startswith(self.runtime.host_address()) and r["decision"] == "allowed"
                            for r in json.loads(kept.stdout)), kept.stdout)
        self.assertEqual(project.cli("rm", ok, bad).returncode, 0)
        self.assertNotIn(ok, project.cli("ps").stdout)

    def test_a_detached_runs_result_branch_in_wait_and_ps(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_repo(Path(tmp))
            out = self.project.cli("run", "coder", "please commit", "--workspace", str(repo), "--yes", "--detach")
            self.assertEqual(out.returncode, 0, out.stderr)
            name = out.stdout.strip()
            waited = self.project.cli("wait", name, "--json")
            self.assertEqual(waited.returncode, 0, waited.stderr)
            branch = f"bottle/coder/{name}"
            self.assertEqual(json.loads(waited.stdout), [{"name": name, "exit_status": 0, "result": branch}])
            self.assertIn("agent: add agent.txt", git(repo, "log", "--format=%s", branch))
            row = next(line for line in self.project.cli("ps").stdout.splitlines() if line.startswith(name))
            self.assertEqual(row.split()[-1], branch)
            self.assertEqual(self.project.cli("rm", name).returncode, 0)


support.on_each_runtime(RunTest, globals())
