"""launch/teardown and `start` against a fake engine: what is created, with which labels,
and that every exit path (Claude's exit, Ctrl-C, SIGTERM, a failed step) removes it all."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

from claude_bottle import bottle, cleanup, cli, egress, image, manifest, pins, runs, session, sidecar, workspace
from claude_bottle.errors import BottleError, DockerUnavailable, EngineLost
from claude_bottle.docker import Found

from .fake_engine import BUILD_OUTPUT, FakeEngine, restart, tar_members

TOKEN = "sk-ant-oat01-" + "t" * 40


def make_plan(tmp: Path, data: dict | None = None, agent="default", environ=None):
    if data is not None:
        (tmp / "claude-bottle.json").write_text(json.dumps(data))
    m = manifest.load(tmp, {"CLAUDE_BOTTLE_HOME": str(tmp)})
    return bottle.plan(m, agent, environ or {})


class LaunchTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.plan = make_plan(self.tmp, {"bottles": {"b": {"env": {"DB": "${DB}", "MODE": "literal-mode-value"},
                                                           "egress": {"allowlist": ["pypi.org"]}}},
                                         "agents": {"a": {"bottle": "b", "prompt": "Hi"}}}, agent="a")
        self.env = {"DB": "database-password-123", "MODE": "literal-mode-value"}

    def launch(self, engine, plan=None, env=None):
        bottle.launch(engine, plan or self.plan, self.env if env is None else env, TOKEN, "owner-x")

    def gate_config(self, engine, plan=None) -> dict:
        return json.loads(engine.stdin[(plan or self.plan).names.sidecar][0])

    def test_creates_a_volume_a_sidecar_and_the_bottle_labelled(self):
        engine = FakeEngine()
        self.launch(engine)
        n = self.plan.names
        self.assertEqual(sorted(engine.objects), sorted([
            ("volume", n.proxy_volume), ("container", n.sidecar), ("container", n.container)]))
        for obj in engine.objects.values():
            self.assertEqual(obj.labels[cleanup.LABEL_BOTTLE], self.plan.name)
            self.assertEqual(obj.labels[cleanup.LABEL_OWNER], "owner-x")
            self.assertEqual(obj.labels[cleanup.LABEL_AGENT], "a")
        spec = engine.specs[n.sidecar]
        self.assertEqual((spec.image, spec.network_mode, spec.stdin_open), (self.plan.sidecar_image.tag,
                                                                            bottle.EGRESS_NETWORK, True))
        self.assertEqual(spec.tmpfs, {sidecar.STATE_DIR: "size=64m,mode=0700,uid=1000,gid=1000"})

    def test_the_token_goes_to_the_sidecar_only_and_the_bottle_gets_a_placeholder(self):
        engine = FakeEngine()
        self.launch(engine)
        n = self.plan.names
        everything_else = repr(engine.calls) + repr(engine.specs) + repr(engine.archives)
        for value in (TOKEN, "database-password-123"):
            self.assertNotIn(value, everything_else)
        bottle_env = tar_members(engine.stdin[n.container][0])["run/claude-bottle/secrets/env"].decode()
        self.assertNotIn(TOKEN, bottle_env)
        placeholder = bottle_env.split("export CLAUDE_CODE_OAUTH_TOKEN=")[1].split("\n")[0]
        self.assertRegex(placeholder, r"^sk-ant-oat01-claude-bottle-placeholder-[0-9a-f]{32}$")
        self.assertIn("export DB=database-password-123\n", bottle_env)
        config = self.gate_config(engine)
        self.assertEqual((config["token"], config["placeholder"]), (TOKEN, placeholder))
        self.assertEqual(config["credential_hosts"], [
            {"host": "api.anthropic.com", "port": "443", "tls": True, "paths": list(sidecar.API_PATHS),
             "inject": True}])
        # Literal values are configuration, not secrets: only host-copied ones and the token are blocked.
        self.assertEqual(config["secrets"], egress.secrets_list([TOKEN, "database-password-123"]))
        self.assertTrue({TOKEN, "database-password-123"} <= set(config["secrets"]))
        # The gate gets the secrets themselves, not pipelock's encodings of them.
        self.assertEqual(config["scanned"], sorted([TOKEN, "database-password-123"]))
        pipelock = json.loads(config["pipelock_config"])
        self.assertEqual(pipelock["api_allowlist"], [h.host for h in self.plan.allowlist])
        self.assertEqual(pipelock["tls_interception"]["passthrough_domains"], ["api.anthropic.com"])

    def test_agent_files_reach_the_bottle_on_its_stdin_and_managed_settings_through_the_sidecar(self):
        engine = FakeEngine()
        self.launch(engine)
        files = tar_members(engine.stdin[self.plan.names.container][0])
        self.assertEqual(sorted(files), ["home/claude/.config/claude-bottle/prompt.md", "run/claude-bottle/secrets/env"])
        self.assertEqual(files["home/claude/.config/claude-bottle/prompt.md"], b"Hi")
        self.assertNotIn(b"database-password-123", files["home/claude/.config/claude-bottle/prompt.md"])
        self.assertEqual(engine.archives, {})
        settings = json.loads(self.gate_config(engine)["files"][bottle.MANAGED_SETTINGS_FILE])
        self.assertEqual(settings, bottle.managed_settings(self.plan.bottle, self.env))

    def test_a_bottle_that_does_not_start_is_reported_and_everything_removed(self):
        engine = FakeEngine()
        engine.bottle_says = "error: the proxy port 3128 did not open"
        with self.assertRaisesRegex(bottle.BottleError, "the bottle did not start: error: the proxy port"):
            self.launch(engine)
        self.assertEqual(engine.objects, {})

    def test_gateway_private_hosts_ports_and_passthrough_reach_the_sidecar(self):
        plan = make_plan(self.tmp, {"bottles": {"g": {
            "env": {"ANTHROPIC_BASE_URL": "${GW}"},
            "egress": {"private_hosts": ["gateway.corp.internal:8080", "10.1.2.3"], "passthrough": ["big.example"]}}},
            "agents": {"g": {"bottle": "g"}}}, agent="g", environ={"GW": "https://LLM.corp.example:8443/v1"})
        self.assertIn("llm.corp.example", [h.host for h in plan.allowlist])  # the preflight shows it too
        engine = FakeEngine()
        self.launch(engine, plan, {"ANTHROPIC_BASE_URL": "https://LLM.corp.example:8443/v1"})
        config = self.gate_config(engine, plan)
        pipelock = json.loads(config["pipelock_config"])
        self.assertIn("llm.corp.example", pipelock["api_allowlist"])
        self.assertIn("gateway.corp.internal", pipelock["api_allowlist"])
        self.assertEqual(pipelock["trusted_domains"], ["gateway.corp.internal"])
        self.assertEqual(pipelock["ssrf"], {"ip_allowlist": ["10.1.2.3/32"]})
        self.assertEqual(pipelock["tls_interception"]["passthrough_domains"],
                         ["api.anthropic.com", "llm.corp.example", "big.example"])
        self.assertEqual(config["credential_hosts"][1],
                         {"host": "llm.corp.example", "port": "8443", "tls": True, "paths": ["/v1/"],
                          "inject": True})
        # An entry without a port opens every port of its host: an empty list.
        self.assertEqual(config["private_ports"], {"gateway.corp.internal": ["8080"], "10.1.2.3": []})
        self.assertNotIn("llm.corp", repr(config["secrets"]))

    def test_a_project_gateway_gets_the_placeholder_not_the_token(self):
        (self.tmp / "home").mkdir()
        (self.tmp / "proj").mkdir()
        (self.tmp / "proj" / "claude-bottle.json").write_text(json.dumps(
            {"bottles": {"p": {"env": {"ANTHROPIC_BASE_URL": "https://gw.example"}}}, "agents": {"p": {"bottle": "p"}}}))
        m = manifest.load(self.tmp / "proj", {"CLAUDE_BOTTLE_HOME": str(self.tmp / "home")}, trust_project=True)
        plan = bottle.plan(m, "p", {})
        # The conversation goes to the gateway the user allowed (judged by name, as Anthropic's API is); the
        # token does not.
        self.assertEqual([(c.host, c.inject) for c in plan.credentials], [("api.anthropic.com", True),
                                                                          ("gw.example", False)])

    def test_any_failed_step_leaves_nothing(self):
        n = self.plan.names
        steps = [("create_volume", n.proxy_volume), ("create_container", n.sidecar), ("start_container", n.sidecar),
                 ("create_container", n.container), ("start_container", n.container)]
        for step in steps:
            with self.subTest(step):
                engine = FakeEngine(fail_on=step)
                with self.assertRaisesRegex(DockerUnavailable, "injected failure"):
                    self.launch(engine)
                self.assertEqual(engine.objects, {})

    def test_a_sidecar_that_does_not_start_is_reported_and_everything_removed(self):
        engine = FakeEngine()
        engine.sidecar_says = "error: pipelock stopped while starting: exit status 1"
        with self.assertRaisesRegex(bottle.BottleError, "the egress sidecar did not start: error: pipelock stopped"):
            self.launch(engine)
        self.assertEqual(engine.objects, {})

    def test_pipelock_config(self):
        config = egress.pipelock_config(["api.anthropic.com", "*.github.com"], passthrough=["api.anthropic.com"])
        self.assertEqual(config["mode"], "strict")
        self.assertEqual(config["api_allowlist"], ["api.anthropic.com", "*.github.com"])
        self.assertTrue(config["forward_proxy"]["enabled"])
        self.assertEqual(config["fetch_proxy"]["listen"], "127.0.0.1:8888")
        self.assertTrue(config["dlp"]["include_defaults"])
        self.assertEqual(config["dlp"]["secrets_file"], "/run/gate/secrets.txt")
        self.assertNotEqual(config["metrics_listen"].rsplit(":", 1)[1], "8888")
        self.assertEqual(config["logging"]["output"], "stdout")  # to the gate, which counts it
        self.assertTrue(config["tls_interception"]["enabled"])
        self.assertEqual(config["request_body_scanning"]["action"], "block")
        self.assertEqual(config["request_body_scanning"]["header_mode"], "all")
        self.assertGreaterEqual(config["fetch_proxy"]["monitoring"]["max_requests_per_minute"], 600)
        self.assertGreaterEqual(config["fetch_proxy"]["timeout_seconds"], 600)
        self.assertGreaterEqual(config["forward_proxy"]["idle_timeout_seconds"], 600)

    def test_pipelock_refuses_every_other_port_of_a_private_host_it_would_be_redirected_to(self):
        import re

        from claude_bottle.manifest import PrivateHost

        hosts = (PrivateHost("10.1.2.3", 8000), PrivateHost("10.1.2.3", 8443), PrivateHost("db.corp", 80),
                 PrivateHost("open.corp"), PrivateHost("open.corp", 5))
        config = egress.pipelock_config(["x"], hosts)
        rules = {rule["name"].split(":")[0]: re.compile(rule["regex"]) for rule in config["dlp"]["patterns"]}
        self.assertEqual(set(rules), {"10.1.2.3", "db.corp"})  # an entry without a port opens every port
        self.assertNotIn("patterns", egress.pipelock_config(["x"], hosts, for_ssh=True)["dlp"])
        for host, allowed in (("10.1.2.3", {8000, 8443}), ("db.corp", {80})):
            for port in range(70000):
                for spelled in (str(port), f"0{port}"):
                    for scheme in ("http", "https"):
                        url = f"{scheme}://{host}:{spelled}/x"
                        self.assertEqual(bool(rules[host].match(url)), port not in allowed, url)
            for url in (f"http://{host}/", f"http://{host}", f"http://u:p@{host.upper()}.:/?q"):
                self.assertEqual(bool(rules[host].match(url)), 80 not in allowed, url)
            # pipelock judges a CONNECT, to any port, as https://HOST/: the gate checks a tunnel's port.
            self.assertIsNone(rules[host].match(f"https://{host}/"))
        for url in ("http://10.1.2.30:9/", "http://10.1.2.3.evil:9/", "http://x/?next=http://10.1.2.3:9/"):
            self.assertIsNone(rules["10.1.2.3"].match(url), url)

    def test_short_secrets_are_left_out(self):
        listed = egress.secrets_list(["short", "x" * 16, "two\n" + "y" * 20])
        self.assertEqual([line for line in listed if line.isalpha()], ["x" * 16, "y" * 20])
        self.assertFalse(any("short" in line or "two" in line for line in listed))
        self.assertEqual(egress.secrets_list([]), [])

    def test_what_of_a_secret_value_is_looked_for(self):
        body = ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
                "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu"]
        pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END PRIVATE KEY-----\n"
        account = ('{\n  "type": "service_account",\n  "project_id": "my-project-123456",\n'
                   '  "private_key_id": "3b18e512dba79e4c8300dd08aeb37f8e728b8dad",\n'
                   '  "client_email": "deployer@my-project-123456.iam.gserviceaccount.com",\n'
                   '  "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/deployer",\n}')
        dotenv = "# production\nDB_PASSWORD=correcthorsebatterystaple\nexport API_KEY=sk_live_AbC123xyz789QWErty\n"
        yaml = "db:\n  host: db.internal.example.com\n  password: hunter2hunter2hunter2\n"
        url = "postgres://admin:correcthorsebattery@db.example.com:5432/app"
        listed = egress.secret_lines([pem, account, dotenv, yaml, url, "correct horse battery staple"])
        for secret in (*body, "3b18e512dba79e4c8300dd08aeb37f8e728b8dad", "correcthorsebatterystaple",
                       "sk_live_AbC123xyz789QWErty", "hunter2hunter2hunter2", "correcthorsebattery", url,
                       "correct horse battery staple"):
            self.assertIn(secret, listed)
        # What every request to the service says in public is not a secret.
        for public in ("-----BEGIN PRIVATE KEY-----", '"type": "service_account",', "service_account",
                       "my-project-123456", "deployer@my-project-123456.iam.gserviceaccount.com",
                       "https://www.googleapis.com/robot/v1/metadata/x509/deployer", "com/robot/v1/metadata/x509",
                       "db.internal.example.com", "# production"):
            self.assertFalse(any(public in line for line in listed), public)
        self.assertTrue(set(listed) <= set(egress.secrets_list([pem, account, dotenv, yaml, url])) |
                        {"correct horse battery staple"})

    def test_the_secrets_of_which_nothing_is_looked_for_are_named(self):
        secrets = {"SHORT": "Hunter2-Stg!x", "LONG": "sk_live_AbC123xyz789QWErty", "EMPTY": "",
                   "LINES": "user\nHunter2-Stg!x\n", "FILE": "# a comment\nAPI_KEY=sk_live_AbC123xyz789QWErty\n"}
        self.assertEqual(egress.unscanned(secrets), ["SHORT", "LINES"])
        self.assertEqual(egress.unscanned({"EXACT": "x" * egress.MIN_SECRET_LENGTH}), [])
        self.assertEqual(egress.unscanned({"UNDER": "x" * (egress.MIN_SECRET_LENGTH - 1)}), ["UNDER"])

    def test_a_secret_is_listed_in_the_encodings_pipelock_does_not_derive(self):
        import base64
        import secrets as random

        for n in (16, 17, 18, 41):
            secret = random.token_urlsafe(n)[:n]
            listed = [line for line in egress.secrets_list([secret]) if line != secret]
            for prefix in (b"", b"k", b"k=", b"abc"):  # inside a longer text, at every alignment
                for suffix in (b"", b"\n", b"xy"):
                    data = prefix + secret.encode() + suffix
                    for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
                        with self.subTest(n=n, prefix=prefix, suffix=suffix):
                            self.assertTrue(any(line in encoded.decode() for line in listed))
            self.assertIn("".join(f"%{b:02X}" for b in secret.encode()), listed)
            self.assertIn("".join(f"%{b:02x}" for b in secret.encode()), listed)
            self.assertTrue(all(len(line) >= egress.MIN_SECRET_LENGTH for line in listed))


class SidecarNetworkTest(unittest.TestCase):
    """Docker's default bridge only where a container there resolves names as the host does."""

    def choice(self, resolv_conf: str | None, host: str = "unix:///var/run/docker.sock") -> str:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "resolv.conf")
            if resolv_conf is not None:
                path.write_text(resolv_conf)
            return bottle.sidecar_network_for(host, str(path))

    def test_the_default_bridge_when_this_machines_engine_has_a_resolver_off_loopback(self):
        for text in ("nameserver 10.0.0.2\n", "# by dhcp\nsearch corp\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n"):
            for host in ("unix:///var/run/docker.sock", "unix:///run/docker.sock"):
                with self.subTest(text=text, host=host):
                    self.assertEqual(self.choice(text, host), bottle.DEFAULT_BRIDGE)

    def test_our_network_where_the_bridge_would_fall_back_to_public_resolvers(self):
        for text in ("nameserver 127.0.0.53\n", "nameserver 127.0.1.1\nnameserver ::1\n", "nameserver 0.0.0.0\n",
                     "nameserver 2001:db8::53\n", "nameserver fe80::1%eth0\n", "nameserver bogus\n", "", None):
            with self.subTest(text=text):
                self.assertEqual(self.choice(text), bottle.EGRESS_NETWORK)

    def test_our_network_for_an_engine_elsewhere(self):
        # Its resolv.conf is not ours to read: rootless, Docker Desktop's, remote, another socket.
        for host in ("unix:///run/user/1000/docker.sock", "tcp://10.0.0.5:2376", "ssh://me@box",
                     "unix:///home/me/.docker/desktop/docker.sock"):
            with self.subTest(host):
                self.assertEqual(self.choice("nameserver 10.0.0.2\n", host), bottle.EGRESS_NETWORK)

    def test_an_engine_without_a_default_bridge_gets_ours(self):
        engine = FakeEngine()
        engine.host = "unix:///var/run/docker.sock"
        with mock.patch.object(bottle, "sidecar_network_for", return_value=bottle.DEFAULT_BRIDGE):
            self.assertEqual(bottle.sidecar_network(engine), bottle.EGRESS_NETWORK)
            self.assertIn(bottle.EGRESS_NETWORK, engine.networks)
            engine.networks.add(bottle.DEFAULT_BRIDGE)
            self.assertEqual(bottle.sidecar_network(engine), bottle.DEFAULT_BRIDGE)


class StartCase(unittest.TestCase):
    """`start` through the CLI entry point with the fake engine in place of docker.connect()."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        old = os.getcwd()
        os.chdir(self.tmp)
        self.addCleanup(os.chdir, old)
        (self.tmp / "home").mkdir()
        self.env = {"CLAUDE_BOTTLE_HOME": str(self.tmp / "home"), "CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN,
                    "CLAUDE_BOTTLE_CA_CERT": None}
        self.spec_tag = image.spec(manifest.ImageSettings()).tag
        self.sidecar_tag = sidecar.spec(manifest.ImageSettings()).tag

    def start(self, engine, *args, env=None, terminal=True):
        with mock.patch("claude_bottle.docker.connect", return_value=engine), \
                mock.patch("claude_bottle.cli._has_terminal", return_value=terminal):
            return CliRunner().invoke(cli.main, ["start", *args], env={**self.env, **(env or {})})

    def test_without_a_terminal_start_refuses_before_anything_is_made(self):
        engine = self.engine()
        r = self.start(engine, "--yes", terminal=False)
        self.assertEqual(r.exit_code, 2)
        self.assertIn("Error: start opens Claude in this terminal, and stdin or stdout is not a terminal: for a "
                      "headless run use `claude-bottle run AGENT PROMPT`", r.stderr)
        self.assertEqual(engine.objects, {})
        self.assertEqual(self.start(self.engine(), "--yes", "--detach", terminal=False).exit_code, 0)

    def engine(self, **kw):
        return FakeEngine(images={pins.PIPELOCK_IMAGE, self.spec_tag, self.sidecar_tag}, **kw)


class StartCommandTest(StartCase):
    def test_exit_status_is_claudes_and_everything_is_removed(self):
        engine = self.engine(interactive=3)
        r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 3, r.output)
        self.assertEqual(engine.objects, {})
        self.assertEqual([c[2] for c in engine.calls if c[0] == "exec_interactive"], [("bottle-claude",)])
        self.assertNotIn(TOKEN, r.output)

    def test_ctrl_c_removes_everything(self):
        engine = self.engine(interactive=KeyboardInterrupt())
        r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 130)
        self.assertEqual(engine.objects, {})

    def test_sigterm_and_sighup_remove_everything(self):
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with self.subTest(signum):
                def claude_session():
                    os.kill(os.getpid(), signum)
                    time.sleep(5)
                    return 0

                engine = self.engine(interactive=claude_session)
                r = self.start(engine, "--yes")
                self.assertEqual(r.exit_code, 128 + signum)
                self.assertEqual(engine.objects, {})

    def test_when_the_engine_restarts_under_the_session_it_waits_and_then_finishes(self):
        engine = self.engine()

        def claude_session():
            restart(engine, 3)
            raise EngineLost(f"lost the connection to the Docker engine at {engine.host}: [Errno 104] reset")

        engine.interactive = claude_session
        with mock.patch("claude_bottle.session.time.sleep"):
            r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 4, r.output)
        self.assertIn("the engine went away (restarting?): waiting up to 180 s for it to come back", r.stderr)
        self.assertEqual(engine.objects, {})  # finished once it answered again
        self.assertIn(("answers", None), engine.calls)

    def test_on_kubernetes_a_bottle_whose_container_ended_is_kept_and_said_with_its_exit_code(self):
        """Found by attacking it: `stop` and `cleanup` failed with exit 1 and a pod's own words."""
        engine = self.engine()
        name = self.start(engine, "--yes", "--detach").stdout.strip()
        restart(engine, 0)  # every container ended (the agent killed its first process)
        engine.kind = "kubernetes"

        def no_stand_in(container: str) -> None:  # as Cluster.start_container says when none can stand in
            raise BottleError(f"{container} is not running, and a pod's container cannot be started again")

        engine.start_container = no_stand_in
        ws = workspace.Workspace(Path("/repo"), Path("/repo"), f"bottle/default/{name}", start="0" * 40)
        with self.assertRaises(workspace.WorkNotBack) as caught:
            session.finish(engine, name, ws)
        self.assertEqual(caught.exception.exit_code, 7)
        self.assertIn(f"its work cannot be brought back: cb-{name} is not running, and a pod's container cannot be "
                      f"started again. `claude-bottle stop --discard {name}` removes it", str(caught.exception))
        self.assertTrue(cleanup.of_bottle(engine, name))

    def test_a_bottle_the_engine_is_removing_is_finished_without_starting_it(self):
        """Found by a full run: a `stop` SIGKILLed while the engine removed the bottle's container left it marked
        for removal, and the next `stop` failed (exit 4) trying to start it. Its removal began only once the work
        was back."""
        engine = self.engine()
        name = self.start(engine, "--yes", "--detach").stdout.strip()
        restart(engine, 0)

        def marked(container: str) -> None:  # as Docker answers for a container being removed
            raise BottleError(f"the Docker engine at {engine.host} refused: container is marked for removal and "
                              "cannot be started")

        engine.start_container = marked
        ws = workspace.Workspace(Path("/repo"), Path("/repo"), f"bottle/default/{name}", start="0" * 40)
        with mock.patch("claude_bottle.session.workspace.bring_back") as bring_back, \
                mock.patch("claude_bottle.session.workspace.release"):
            ended = session.finish(engine, name, ws)
        bring_back.assert_not_called()
        self.assertIsNone(ended.brought)
        self.assertEqual(cleanup.of_bottle(engine, name), [])

    def test_an_engine_that_does_not_come_back_in_time_leaves_the_bottle_and_says_what_to_do(self):
        engine = self.engine()

        def claude_session():
            restart(engine, 10**6)
            raise EngineLost(f"lost the connection to the Docker engine at {engine.host}: [Errno 104] reset")

        engine.interactive = claude_session
        clock = iter(range(0, 10**6, 60))
        with mock.patch("claude_bottle.session.time.sleep"), \
                mock.patch("claude_bottle.session.time.monotonic", side_effect=lambda: next(clock)):
            r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 4, r.output)
        name = next(n for kind, n in engine.objects if kind == "container" and not n.endswith("-sidecar"))[3:]
        self.assertIn(f"it did not come back within 180 s, so bottle {name} is left as it is, with the agent's "
                      f"work: once the engine is back, `claude-bottle stop {name}` brings it back", r.stderr)
        self.assertEqual(len([line for line in r.stderr.splitlines() if line.startswith("Error:")]), 1)

    def test_a_state_folder_that_cannot_be_written_is_one_clear_error(self):
        """Found by attacking it: a file in the state folder's place was a traceback."""
        state = Path(self.env["CLAUDE_BOTTLE_HOME"]) / ".local" / "state"
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text("")
        engine = self.engine()
        r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertRegex(r.stderr, r"^(.*\n)*Error: .*: Not a directory: claude-bottle keeps what it must remember in "
                                   r".*: make that a folder you can write \(or point XDG_STATE_HOME elsewhere\)\n$")
        self.assertNotIn("Traceback", r.output)
        self.assertEqual(engine.objects, {})

    def test_a_bad_step_limit_is_refused_before_anything_is_made_and_by_the_dry_run(self):
        """Found by attacking it: --dry-run let it through, and a huge one failed `stop` as "interrupted"."""
        for value in ("abc", "99999999999999999999", "0"):
            for args in (("--yes",), ("--dry-run",)):
                with self.subTest(value=value, args=args):
                    engine = self.engine()
                    r = self.start(engine, *args, env={"CLAUDE_BOTTLE_STEP_SECONDS": value})
                    self.assertEqual(r.exit_code, 1, r.output)
                    self.assertIn(f"CLAUDE_BOTTLE_STEP_SECONDS={value}: must be a whole number of seconds from 1 to "
                                  "604800 (a week)", r.stderr)
                    self.assertEqual(engine.objects, {})

    def test_a_bad_engine_wait_is_refused_before_anything_is_made(self):
        engine = self.engine()
        r = self.start(engine, "--yes", env={"CLAUDE_BOTTLE_ENGINE_WAIT_SECONDS": "3m"})
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertIn("Error: CLAUDE_BOTTLE_ENGINE_WAIT_SECONDS=", r.stderr)
        self.assertIn("must be a whole number of seconds from 0 to 604800 (a week)", r.stderr)
        self.assertEqual(engine.objects, {})

    def test_a_secret_too_short_to_be_looked_for_is_named_and_not_shown(self):
        (self.tmp / "home" / "claude-bottle.json").write_text(json.dumps(
            {"bottles": {"default": {"env": {"SHORTPW": "${MY_SHORT}", "APIKEY": "${MY_KEY}"}}}}))
        r = self.start(self.engine(), "--yes", "--detach",
                       env={"MY_SHORT": "Hunter2-Stg!x", "MY_KEY": "sk_live_AbC123xyz789QWErty"})
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertIn("note: the sidecar does not look for SHORTPW in what leaves the bottle: no line of its value is "
                      f"{egress.MIN_SECRET_LENGTH} characters or more", r.stderr)
        self.assertNotIn("APIKEY in what leaves", r.stderr)
        self.assertNotIn("Hunter2", r.output)

    def test_detach_prints_the_name_and_leaves_the_bottle(self):
        engine = self.engine()
        r = self.start(engine, "--yes", "--detach")
        self.assertEqual(r.exit_code, 0, r.output)
        name = r.stdout.strip()
        self.assertRegex(name, r"^default-[0-9a-f]{6}$")
        self.assertEqual({o.labels[cleanup.LABEL_BOTTLE] for o in engine.objects.values()}, {name})
        self.assertNotIn("exec_interactive", [c[0] for c in engine.calls])
        # Its launching process is gone, but the record says it lives on: no one takes it for a leftover.
        owner = next(iter(engine.objects.values())).labels[cleanup.LABEL_OWNER]
        self.assertFalse(cleanup.owner_alive(owner))
        self.assertEqual([r.name for r in runs.all_runs(self.env)], [name])
        self.assertEqual({o.labels[cleanup.LABEL_RECORD] for o in engine.objects.values()},
                         {str(runs.root(self.env) / name)})
        self.assertEqual(cleanup.of_dead_sessions(engine), ([], []))  # from any state folder

    def test_leftovers_of_dead_sessions_are_removed_first(self):
        engine = self.engine(interactive=0)
        dead = cleanup.owner_label(self.tmp / "sessions" / "0123456789abcdef.lock")
        engine.objects[("container", "cb-old")] = Found(
            "container", "cb-old", {cleanup.LABEL_BOTTLE: "old", cleanup.LABEL_OWNER: dead}, "running", 1)
        r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertIn(("remove_container", "cb-old"), engine.calls)

    def test_a_hostile_bottle_name_in_a_label_is_shown_made_visible(self):
        # Anyone who can reach the engine can label a container as ours, with a name a terminal would obey.
        engine = self.engine()
        dead = cleanup.owner_label(self.tmp / "sessions" / "0123456789abcdef.lock")
        engine.objects[("container", "rt-fake-1")] = Found(
            "container", "rt-fake-1", {cleanup.LABEL_BOTTLE: "evil\x1b]0;pwned\x07", cleanup.LABEL_OWNER: dead,
                                       cleanup.LABEL_ROLE: "bottle", "org.claude-bottle.results-repo": "/x"},
            "created", 1)
        r = self.start(engine, "--yes", "--detach")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertIn("note: bottle evil\\x1b]0;pwned\\x07 of a session that ended without finishing holds work "
                      "not brought back; `claude-bottle stop evil\\x1b]0;pwned\\x07` brings it back\n", r.stderr)
        self.assertNotIn("\x1b", r.output)
        self.assertNotIn("\x07", r.output)

    def test_cleanup_leaves_a_container_labelled_with_no_bottle_name_alone(self):
        engine = self.engine()
        engine.objects[("container", "rt-fake-2")] = Found(
            "container", "rt-fake-2", {cleanup.LABEL_BOTTLE: "evil\x1b]0;pwned\x07", cleanup.LABEL_ROLE: "bottle",
                                       cleanup.LABEL_USER: cleanup.current_user()}, "created", 1)
        r = self.start(engine, "--yes", "--detach")
        self.assertEqual(r.exit_code, 0, r.output)
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            r = CliRunner().invoke(cli.main, ["cleanup", "--yes"], env=self.env)
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertIn("note: left alone, labelled as bottles under names claude-bottle never gives: "
                      "'evil\\x1b]0;pwned\\x07'", r.stderr)
        self.assertIn("removed 1 bottles", r.stdout)
        self.assertEqual(list(engine.objects), [("container", "rt-fake-2")])
        self.assertNotIn("\x1b", r.output)

    def test_another_users_bottle_is_refused_to_every_command_but_cleanup_all(self):
        engine = self.engine()
        r = self.start(engine, "--yes", "--detach")
        self.assertEqual(r.exit_code, 0, r.output)
        name = r.stdout.strip()
        for key, found in list(engine.objects.items()):  # as another user of the engine made it
            engine.objects[key] = dataclasses.replace(
                found, labels={**found.labels, cleanup.LABEL_USER: "4242@elsewhere"})
        before = dict(engine.objects)
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            for args in (["stop", name], ["stop", "--discard", name], ["exec", name, "--", "true"],
                         ["logs", name], ["logs", name, "--egress"], ["attach", name]):
                with self.subTest(args[0]):
                    r = CliRunner().invoke(cli.main, args, env=self.env)
                    self.assertEqual(r.exit_code, 1, r.output)
                    self.assertIn(f"Error: bottle '{name}' is 4242@elsewhere's, not yours", r.stderr)
            self.assertEqual(engine.objects, before)
            r = CliRunner().invoke(cli.main, ["cleanup", "--all", "--yes"], env=self.env)
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual(engine.objects, {})

    def test_missing_token_creates_nothing(self):
        engine = self.engine()
        r = self.start(engine, "--yes", env={"CLAUDE_BOTTLE_OAUTH_TOKEN": None})
        self.assertEqual(r.exit_code, 1)
        self.assertEqual(r.stderr, "Error: CLAUDE_BOTTLE_OAUTH_TOKEN is not set: run `claude setup-token` on this "
                                   "machine and export the token it prints as CLAUDE_BOTTLE_OAUTH_TOKEN\n")
        self.assertEqual(engine.calls, [])

    def test_no_terminal_and_no_yes_is_refused_before_anything(self):
        engine = self.engine()
        r = self.start(engine)
        self.assertEqual(r.exit_code, 6)
        self.assertTrue(r.stderr.endswith("Error: stdin is not a terminal, so nobody can answer the launch "
                                          "question: pass --yes to launch anyway\n"), r.stderr)
        self.assertIn("egress:   4 hosts allowed", r.stderr)
        self.assertNotIn("\x1b", r.stderr)
        self.assertEqual(engine.calls, [])

    def test_untrusted_host_secrets_need_trust_project(self):
        (self.tmp / "claude-bottle.json").write_text(json.dumps(
            {"bottles": {"p": {"env": {"K": "${HOME_SECRET}"}}}, "agents": {"p": {"bottle": "p"}}}))
        engine = self.engine(interactive=0)
        r = self.start(engine, "p", "--yes", env={"HOME_SECRET": "from-the-host-0123456789"})
        self.assertEqual(r.exit_code, 3)
        self.assertIn("bottles.p.env.K: copies the host variable $HOME_SECRET", r.stderr)
        self.assertIn("run `claude-bottle trust`", r.stderr)
        self.assertIn("UNTRUSTED", r.stderr)
        self.assertEqual(engine.calls, [])
        r = self.start(engine, "p", "--yes", "--trust-project", env={"HOME_SECRET": "from-the-host-0123456789"})
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertIn(b"export K=from-the-host-0123456789\n", b"".join(
            b for v in engine.stdin.values() for b in v))

    def test_missing_pipelock_image_creates_nothing(self):
        engine = FakeEngine(images={self.spec_tag, self.sidecar_tag})
        r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 1)
        self.assertIn(f"Error: the egress sidecar's pipelock image {pins.PIPELOCK_IMAGE} is not here and pulling it "
                      "failed", r.stderr)
        self.assertIn("scripts/offline-images.sh pipelock", r.stderr)
        self.assertEqual(engine.objects, {})

    def test_missing_bottle_image_is_built_with_progress(self):
        engine = FakeEngine(images={pins.PIPELOCK_IMAGE}, interactive=0)
        r = self.start(engine, "--yes")
        self.assertEqual(r.exit_code, 0, r.output)
        logs = manifest.state_dir({"CLAUDE_BOTTLE_HOME": self.env["CLAUDE_BOTTLE_HOME"]}) / "builds"
        for tag in (self.spec_tag, self.sidecar_tag):
            log = logs / (tag.replace(":", "-") + ".log")
            self.assertIn(f"building {tag} (first use; later starts reuse it); its whole output goes to {log}\n"
                          "Step 1/2 : FROM debian:bookworm-slim\n"
                          "Step 2/2 : RUN npm install -g @anthropic-ai/claude-code\n"
                          f"built {tag} in 0s\n", r.stderr)
            self.assertEqual(log.read_text(), "".join(BUILD_OUTPUT))
        self.assertNotIn("EBADENGINE", r.stderr)


class WorkspaceOptionsTest(StartCase):
    def test_no_results_needs_workspace(self):
        r = self.start(self.engine(), "--yes", "--no-results")
        self.assertEqual(r.exit_code, 2)
        self.assertIn("Error: --no-results only goes with --workspace", r.stderr)

    def test_missing_workspace_folder(self):
        r = self.start(self.engine(), "--yes", "--workspace", str(self.tmp / "nope"))
        self.assertEqual((r.exit_code, r.stderr), (1, f"Error: --workspace {self.tmp / 'nope'}: no such directory: "
                                                      "name an existing folder to copy into the bottle\n"))

    def test_workspace_and_mount_exclude_each_other(self):
        r = self.start(self.engine(), "--yes", "--workspace", str(self.tmp), "--mount", str(self.tmp))
        self.assertEqual((r.exit_code, r.stderr),
                         (1, "Error: --workspace and --mount both fill /workspace: choose one\n"))

    def test_mount_is_a_read_write_bind_and_the_preflight_warns(self):
        engine = self.engine(interactive=0)
        os.chmod(self.tmp, 0o777)  # writable by the bottle's user
        r = self.start(engine, "--yes", "--mount", str(self.tmp))
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertIn(f"mount:    {self.tmp.resolve()} read-write at /workspace: WARNING: the agent changes these "
                      "files on your machine", r.stderr)
        spec = next(s for s in engine.specs.values() if s.labels[cleanup.LABEL_ROLE] == "bottle")
        self.assertEqual(spec.binds, ((str(self.tmp.resolve()), "/workspace", False),))

    def test_dry_run_shows_the_workspace(self):
        (self.tmp / "proj").mkdir()
        r = self.start(self.engine(), "--dry-run", "--json", "--workspace", str(self.tmp / "proj"))
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual(json.loads(r.stdout)["workspace"],
                         {"path": str((self.tmp / "proj").resolve()), "git": False, "results_branch": None})


class RunCommandTest(StartCase):
    def run_cli(self, engine, *args):
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            return CliRunner().invoke(cli.main, ["run", *args], env=self.env)

    def test_headless_claude_gets_the_prompt_and_its_status_passes_through(self):
        engine = self.engine(headless=(4, b"partial answer\x1b[2J\n"))
        r = self.run_cli(engine, "default", "fix the tests", "--yes")
        self.assertEqual(r.exit_code, 4, r.output)
        self.assertEqual([c[2] for c in engine.calls if c[0] == "exec_stream"],
                         [("bottle-claude", "-p", "fix the tests", "--output-format", "text")])
        self.assertEqual(r.stdout, "partial answer\x1b[2J\n")  # not a terminal: the bytes as they came
        self.assertEqual(engine.objects, {})

    def test_a_supervisor_that_does_not_start_ends_the_run_cleanly(self):
        engine = self.engine()
        real_popen = subprocess.Popen
        with mock.patch("claude_bottle.cli.subprocess.Popen",
                        side_effect=lambda *a, **kw: real_popen(["true"], stdout=subprocess.PIPE)):
            r = self.run_cli(engine, "default", "hi", "--yes", "--detach")
        self.assertEqual(r.exit_code, 1, r.output)
        self.assertIn("did not start, so the run is ended and its bottle removed", r.stderr)
        self.assertEqual(engine.objects, {})
        name = runs.all_runs(self.env)[0].name
        self.assertEqual(runs.get(self.env, name).exit_status, runs.COULD_NOT_RUN)  # `wait` cannot hang on it
        with mock.patch("claude_bottle.docker.connect", return_value=engine):
            self.assertEqual(CliRunner().invoke(cli.main, ["rm", name], env=self.env).exit_code, 0)

    def test_claude_killed_for_memory_says_so(self):
        engine = self.engine(headless=(137, b""))
        engine.exec_results["cat"] = (0, b"oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
        r = self.run_cli(engine, "default", "hi", "--yes")
        self.assertEqual(r.exit_code, 137, r.output)
        self.assertIn("ran out of memory and Claude was killed: raise bottles.<name>.resources.memory", r.stderr)
        self.assertEqual(engine.objects, {})
        engine = self.engine(headless=(137, b""))  # killed, but not for memory: Claude's status, no message
        r = self.run_cli(engine, "default", "hi", "--yes")
        self.assertEqual((r.exit_code, "memory" in r.stderr), (137, False))

    def test_stream_json_adds_verbose(self):
        engine = self.engine(interactive=0)
        r = self.run_cli(engine, "default", "hi", "--yes", "--output-format", "stream-json")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual([c[2] for c in engine.calls if c[0] == "exec_stream"][0][-2:],
                         ("stream-json", "--verbose"))

    def test_needs_yes_without_a_terminal(self):
        engine = self.engine()
        r = self.run_cli(engine, "default", "hi")
        self.assertEqual(r.exit_code, 6)
        self.assertEqual(engine.calls, [])
