import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from click.testing import CliRunner

from claude_bottle import __version__, cli

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["list", "info", "build", "start", "run", "attach", "exec", "stop", "ps", "cleanup", "logs"]


class CliCase(unittest.TestCase):
    """Runs the CLI in a temporary project directory with a temporary home and no Docker engine."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"
        self.project = Path(tmp.name) / "project"
        self.home.mkdir()
        self.project.mkdir()
        old = os.getcwd()
        os.chdir(self.project)
        self.addCleanup(os.chdir, old)
        # Unit tests never reach an engine: point the SDK at a socket that does not exist.
        self.env = {"CLAUDE_BOTTLE_HOME": str(self.home), "DOCKER_HOST": f"unix://{tmp.name}/no-docker.sock",
                    "CLAUDE_BOTTLE_OAUTH_TOKEN": None, "CLAUDE_BOTTLE_CA_CERT": None}

    def invoke(self, *args, env=None):
        return CliRunner().invoke(cli.main, list(args), env={**self.env, **(env or {})}, prog_name="claude-bottle")

    def write(self, where, data):
        path = where / "claude-bottle.json"
        path.write_text(json.dumps(data))
        return path


class BrokenFoldersTest(CliCase):
    """Found by attacking it: each of these was a traceback, and the first left a temporary file behind."""

    def test_a_trust_list_that_is_a_folder(self):
        self.write(self.project, {"version": 1})
        state = self.home / ".local" / "state" / "claude-bottle"
        (state / "trusted.json").mkdir(parents=True)
        r = self.invoke("trust", "--yes")
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertIn(f"Error: {state / 'trusted.json'}: Is a directory: claude-bottle keeps", r.stderr)
        self.assertEqual(sorted(p.name for p in state.iterdir() if p.name.startswith(".")), [])

    def test_trust_names_the_file_it_was_given(self):
        for path, said in (("/nonexistent-cb", "no such file"), ("/dev/null", "not a regular file")):
            r = self.invoke("trust", path)
            self.assertEqual((r.exit_code, r.stderr), (1, f"Error: {path}: {said}: name the project's "
                                                          "claude-bottle.json\n"))

    def test_init_where_the_home_is_a_file(self):
        home = self.home / "a-file"
        home.write_text("")
        r = self.invoke("init", env={"CLAUDE_BOTTLE_HOME": str(home)})
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertEqual(r.stderr, f"Error: {home} is not a folder: point CLAUDE_BOTTLE_HOME at a folder, or make it "
                                   "one\n")


class HelpAndVersionTest(CliCase):
    def test_version(self):
        r = self.invoke("--version")
        self.assertEqual((r.exit_code, r.stdout), (0, f"claude-bottle, version {__version__}\n"))

    def test_help_on_every_command(self):
        r = self.invoke("--help")
        self.assertEqual(r.exit_code, 0)
        for name in COMMANDS:
            self.assertIn(name, r.stdout)
            sub = self.invoke(name, "--help")
            self.assertEqual(sub.exit_code, 0, sub.output)
            self.assertIn(f"Usage: claude-bottle {name}", sub.stdout)

    def test_python_dash_m(self):
        out = subprocess.run([sys.executable, "-m", "claude_bottle", "--version"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=True)
        self.assertEqual(out.stdout, f"claude-bottle, version {__version__}\n")


class ListAndInfoTest(CliCase):
    def test_list_without_manifest(self):
        r = self.invoke("list")
        self.assertEqual(r.stdout, "AGENT    BOTTLE   DEFINED IN\ndefault  default  built-in\n")

    def test_list_marks_untrusted_bottles(self):
        self.write(self.home, {"bottles": {"dev": {}}, "agents": {"dev": {"bottle": "dev"}}})
        self.write(self.project, {"bottles": {"dev": {"egress": {"allowlist": ["x.org"]}}},
                                  "agents": {"fix": {"bottle": "default"}}})
        r = self.invoke("list")
        self.assertEqual(r.exit_code, 0, r.output)
        home_file = self.home / "claude-bottle.json"
        self.assertEqual(r.stdout.splitlines(), [
            "AGENT    BOTTLE           DEFINED IN",
            "default  default          built-in",
            f"dev      dev (untrusted)  {home_file}",
            "fix      default          ./claude-bottle.json (not trusted)",
        ])

    def test_info_shows_names_never_values(self):
        self.write(self.home, {"bottles": {"dev": {
            "env": {"API": "${SECRET_HOST_VAR}", "LIT": "literal-secret-value", "ASK": "?PIN please"},
            "egress": {"allowlist": ["pypi.org"]}}},
            "agents": {"dev": {"bottle": "dev", "prompt": "\nReview the code.\nThen stop."}}})
        r = self.invoke("info", "dev", env={"SECRET_HOST_VAR": "host-secret-value"})
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertNotIn("secret-value", r.output)
        self.assertIn("env:      API (from host $SECRET_HOST_VAR)\n"
                      "          LIT (set in manifest)\n"
                      "          ASK (asked at launch)\n", r.stdout)
        self.assertIn("egress:   5 hosts allowed:\n", r.stdout)
        self.assertIn("            pypi.org             egress.allowlist\n", r.stdout)
        self.assertTrue(r.stdout.endswith("prompt:   3 lines:\n          | \n          | Review the code.\n"
                                          "          | Then stop.\n"), r.stdout)

    def test_info_unknown_agent(self):
        r = self.invoke("info", "ghost")
        self.assertEqual(r.exit_code, 3)
        self.assertEqual(r.stderr, "Error: no agent named 'ghost' (agents: default; read from no manifest found)\n")


class StartDryRunTest(CliCase):
    def test_dry_run_json_plan(self):
        self.write(self.home, {"bottles": {"dev": {"env": {"A": "${HOSTA}"}, "egress": {"allowlist": ["pypi.org"]}}},
                               "agents": {"dev": {"bottle": "dev", "prompt": "Hello"}}})
        r = self.invoke("start", "dev", "--dry-run", "--json", env={"HOSTA": "very-secret"})
        # The plan is printed whole; then every check start would fail, the first one's code.
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertTrue(r.stderr.startswith("Error: CLAUDE_BOTTLE_OAUTH_TOKEN is not set"), r.stderr)
        self.assertTrue(r.stderr.splitlines()[1].startswith(
            f"Docker daemon not reachable at {self.env['DOCKER_HOST']}: start Docker or set DOCKER_HOST"), r.stderr)
        self.assertNotIn("very-secret", r.output)
        plan = json.loads(r.stdout)
        name = plan["bottle"]
        self.assertRegex(name, r"^dev-[0-9a-f]{6}$")
        self.assertEqual(plan["image"]["present"], None)
        self.assertRegex(plan["image"]["tag"], r"^claude-bottle:[0-9a-f]{16}$")
        self.assertEqual([c["name"] for c in plan["containers"]], [f"cb-{name}", f"cb-{name}-sidecar"])
        self.assertEqual(plan["containers"][0]["network"], "none")
        self.assertEqual(plan["networks"], [{"name": "claude-bottle-egress", "role": "egress", "shared": True}])
        self.assertEqual(plan["volumes"], [{"name": f"cb-{name}-proxy", "role": "proxy-socket"}])
        self.assertEqual(plan["sidecar"]["pipelock"], "ghcr.io/luckypipewrench/pipelock:2.3.0")
        self.assertRegex(plan["sidecar"]["image"], r"^claude-bottle-sidecar:[0-9a-f]{16}$")
        self.assertEqual(plan["sidecar"]["token_to"], ["api.anthropic.com:443"])
        self.assertEqual(plan["sidecar"]["passthrough"],
                         [{"host": "api.anthropic.com", "reason": "the sidecar adds your token"}])
        self.assertEqual(plan["env"], [{"name": "A", "source": "host", "from": "HOSTA", "project": False}])
        self.assertEqual([h["host"] for h in plan["allowlist"]][-1], "pypi.org")
        self.assertEqual(plan["prompt"], {"length": 5, "lines": 1, "first_line": "Hello", "project": False})
        self.assertEqual((plan["project"], plan["refusals"]), (None, []))
        self.assertEqual(plan["token"], {"variable": "CLAUDE_BOTTLE_OAUTH_TOKEN", "present": False})

    def test_dry_run_names_differ_per_run(self):
        names = {json.loads(self.invoke("start", "--dry-run", "--json").stdout)["bottle"] for _ in range(5)}
        self.assertEqual(len(names), 5)

    def test_dry_run_text_creates_nothing(self):
        before = sorted(p.name for p in self.project.iterdir())
        r = self.invoke("start", "--dry-run")
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertTrue(r.stderr.startswith("Error: CLAUDE_BOTTLE_OAUTH_TOKEN is not set: run `claude setup-token`"))
        self.assertIn("\nDocker daemon not reachable at", r.stderr)
        self.assertIn("egress:   4 hosts allowed (api.anthropic.com, platform.claude.com, claude.ai +1 more)", r.stdout)
        self.assertIn("(unknown (Docker not reachable))", r.stdout)
        self.assertTrue(r.stdout.endswith("dry run: nothing was created\n"))
        self.assertEqual(sorted(p.name for p in self.project.iterdir()), before)

    def test_json_needs_dry_run(self):
        r = self.invoke("start", "--json")
        self.assertEqual(r.exit_code, 2)
        self.assertIn("Error: --json only goes with --dry-run", r.stderr)

    def test_bad_manifest_exit_code_and_message(self):
        f = self.write(self.project, {"agents": {"a": {"bottle": "nope"}}})
        r = self.invoke("start", "a", "--dry-run")
        self.assertEqual(r.exit_code, 3)
        self.assertEqual(r.stderr, f"Error: {f}: agents.a.bottle: no bottle named 'nope' (bottles: default): "
                                   'define it under "bottles" or pick an existing one\n'
                                   "(to use only your home manifest meanwhile, pass --no-project)\n")
        self.assertEqual(r.stdout, "")


class BuildTest(CliCase):
    def test_build_without_docker(self):
        r = self.invoke("build")
        self.assertEqual(r.exit_code, 4)
        self.assertTrue(r.stderr.startswith(
            f"Error: Docker daemon not reachable at {self.env['DOCKER_HOST']}: start Docker or set DOCKER_HOST"),
            r.stderr)


class ResultsReportTest(unittest.TestCase):
    """What the user reads about a folder that came back: each thing left out or renamed, with its reason."""

    def report(self, brought) -> str:
        import contextlib
        import io

        from claude_bottle import session, workspace

        ws = workspace.Workspace(Path("/w/notes"), None, None, results_dir=Path("/w/notes.b-1"))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            cli._report(session.Ended("b-1", brought, ws))
        return err.getvalue()

    def test_each_thing_left_out_with_its_own_reason(self):
        """Found by attacking it: a name the agent gave that meets one of ours (`.git.from-bottle`) was
        reported as left out because it is not a file or points outside the folder."""
        from .test_workspace import bring_back_folder

        with tempfile.TemporaryDirectory() as tmp:
            brought = bring_back_folder(Path(tmp, "notes"), ("dir", "lib/.git", ""), ("file", "lib/.git/HEAD", "x"),
                                        ("file", "lib/.git.from-bottle/config", "the agent's"),
                                        ("file", "sub/HEAD.From-Bottle", "the agent's"), ("file", "sub/HEAD", "x"),
                                        ("dir", "sub/refs", ""), ("sym", "up", "../.."))
        out = self.report(brought)
        self.assertIn(f"results: the changed workspace is in {brought.folder} (left out, as they are not files or "
                      f"point outside it: up)\n", out)
        self.assertIn("results: left out, as their names would meet those given to what was renamed (above): "
                      "lib/.git.from-bottle/config, sub/HEAD.From-Bottle\n", out)

    def test_a_name_that_came_back_as_another_says_which(self):
        from claude_bottle import workspace

        long = ".git" + "\u200c" * 80
        out = self.report(workspace.Brought(folder=Path("/w/notes.b-1"), renamed=(long, "y/.git"),
                                            renamed_as=((long, ".git~0123.from-bottle"),)))
        self.assertIn("came back with .from-bottle after its name", out)
        self.assertIn("results: of those, under another name (one too long for the suffix, or that this machine "
                      "could take for another's): .git", out)
        self.assertIn(" as .git~0123.from-bottle\n", out)

    def test_names_renamed_on_a_branch_are_named(self):
        """Found by attacking it: a folder laid out as a repository came back on the results branch, and
        nothing said so."""
        import contextlib
        import io

        from claude_bottle import session, workspace

        ws = workspace.Workspace(Path("/w/repo"), Path("/w/repo"), "bottle/a/b-1")
        brought = workspace.Brought(branch="bottle/a/b-1", commits=1, renamed=("bottle/a/b-1:tools.git/HEAD",),
                                    clashed=("bottle/a/b-1:tools.git/HEAD.from-bottle",))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            cli._report(session.Ended("b-1", brought, ws))
        out = err.getvalue()
        self.assertIn("is renamed with .from-bottle after its name in a commit of ours on top", out)
        self.assertIn("the agent's own commits below it hold them as they were): bottle/a/b-1:tools.git/HEAD\n", out)
        self.assertIn("would meet those given to what was renamed (above): bottle/a/b-1:tools.git/HEAD.from-bottle\n",
                      out)


class ReadmeTest(unittest.TestCase):
    """The README's manifest example is valid against the published schema, and it shows every command and
    option the CLI has."""

    def test_every_command_and_option_is_in_the_readme(self):
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
        missing = []
        for name, command in cli.main.commands.items():
            if command.hidden:
                continue
            if f"claude-bottle {name}" not in readme:
                missing.append(name)
            missing += [f"{name} {o}" for p in command.params for o in getattr(p, "opts", [])
                        if o.startswith("-") and o != "--help" and o not in readme]
        self.assertEqual(missing, [])

    def test_readme_manifest_example_validates(self):
        import re

        import jsonschema

        from claude_bottle import manifest

        text = (ROOT / "README.md").read_text()
        example = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
        jsonschema.Draft202012Validator(manifest.schema()).validate(example)
        jsonschema.Draft202012Validator.check_schema(manifest.schema())


class SameExitCodeWithAndWithoutTerminalTest(CliCase):
    """A refusal ends the same way whether a person is at a terminal or a script passed --yes."""

    def run_in_terminal(self, *args) -> tuple[int, str]:
        import pty
        import select
        import subprocess
        import sys

        master, slave = pty.openpty()
        env = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
        proc = subprocess.Popen([sys.executable, "-m", "claude_bottle", *args], stdin=slave, stdout=slave,
                                stderr=slave, env=env, cwd=self.project)
        os.close(slave)
        screen = b""
        while select.select([master], [], [], 10)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            screen += data
        os.close(master)
        return proc.wait(10), screen.decode(errors="replace")

    def test_untrusted_project_and_unset_variable(self):
        self.env["CLAUDE_BOTTLE_OAUTH_TOKEN"] = "sk-ant-oat01-" + "x" * 40
        self.write(self.project, {"bottles": {"default": {"env": {"K": "${SOME_HOST_SECRET}"}}}})
        self.env["SOME_HOST_SECRET"] = "value"
        code, screen = self.run_in_terminal("start")
        self.assertEqual(code, 3, screen)
        self.assertIn("the project file is not trusted", screen)
        self.assertNotIn("launch", screen.split("Error:")[-1])
        self.assertEqual(self.invoke("start", "--yes", "--detach").exit_code, 3)

        self.write(self.project, {})
        self.write(self.home, {"bottles": {"default": {"env": {"K": "${UNSET_ON_PURPOSE}"}}}})
        code, screen = self.run_in_terminal("start")
        self.assertEqual(code, 3, screen)
        self.assertIn("host variable $UNSET_ON_PURPOSE is not set", screen)
        self.assertNotIn("[y/N]", screen)
        r = self.invoke("start", "--yes", "--detach")
        self.assertEqual(r.exit_code, 3)
        self.assertIn("host variable $UNSET_ON_PURPOSE is not set", r.stderr)
