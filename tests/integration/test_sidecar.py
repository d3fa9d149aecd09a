"""End to end with the real pipelock sidecar: `start` through the CLI, attacks from inside the bottle.

Needs the pinned pipelock image (scripts/offline-images.sh builds it from source). Reaches
registry.npmjs.org through the sidecar, the one outside host our machines can reach.
"""

import json
import os
import secrets
import signal
import subprocess
import time
import sys
import tempfile
from pathlib import Path

from claude_bottle import bottle, cleanup, egress, manifest, pins

from . import support
from .test_commands import Terminal

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = "registry.npmjs.org"
TOKEN = "sk-ant-oat01-" + secrets.token_urlsafe(40)


def setUpModule():
    support.sidecar_image()


class Project:
    """A project directory with a manifest, and the CLI run from it."""

    def __init__(self, manifest: dict, env: dict, runtime: support.Runtime | None = None):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        (self.dir / "home").mkdir()
        (self.dir / "home" / "claude-bottle.json").write_text(json.dumps(manifest))
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLAUDE_BOTTLE_HOME": str(self.dir / "home"),
                    "CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN, **(runtime.env() if runtime else {}), **env}

    def cli(self, *args, timeout=180, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "claude_bottle", *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=timeout, input=input)

    def argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "claude_bottle", *args]


class SidecarConfigTest(support.IntegrationTest):
    def test_pipelock_accepts_the_generated_config(self):
        config = egress.pipelock_config(["api.anthropic.com", "*.github.com", ALLOWED],
                                        [manifest.PrivateHost("10.0.0.5", 8080), manifest.PrivateHost("git.corp")],
                                        ["api.anthropic.com"])
        with tempfile.TemporaryDirectory() as d:
            Path(d, "pipelock.yaml").write_text(json.dumps(config))
            Path(d, "secrets.txt").write_text(TOKEN + "\n")
            key, cert = Path(d, "ca-key.pem"), Path(d, "ca.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-days", "1", "-subj", "/CN=test", "-keyout", key, "-out", cert], check=True, capture_output=True)
            os.chmod(d, 0o755)
            for f in Path(d).iterdir():
                os.chmod(f, 0o600 if f.name in ("secrets.txt", "ca-key.pem") else 0o644)
            code, out = support.run(pins.PIPELOCK_IMAGE, ["check", "--config", f"{egress.STATE_DIR}/pipelock.yaml"],
                                    volumes={d: {"bind": egress.STATE_DIR, "mode": "ro"}})
        self.assertEqual(code, 0, out)
        self.assertIn("Config validation: OK", out)
        self.assertIn("Mode:           strict", out)


class EgressTest(support.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.deploy_key = "dk-" + secrets.token_hex(16)
        cls.project = Project({"bottles": {"reg": {"env": {"DEPLOY_KEY": "${DEPLOY_KEY}"},
                                                   "egress": {"allowlist": [ALLOWED]}}},
                               "agents": {"reg": {"bottle": "reg"}}}, {"DEPLOY_KEY": cls.deploy_key})
        out = cls.project.cli("start", "reg", "--yes", "--detach")
        assert out.returncode == 0, out.stderr
        cls.name = out.stdout.strip()

    @classmethod
    def tearDownClass(cls):
        cls.project.cli("stop", cls.name)
        cls.project.tmp.cleanup()
        super().tearDownClass()

    def sh(self, script):
        out = self.project.cli("exec", self.name, "--", "sh", "-c", script)
        return out.returncode, out.stdout + out.stderr

    def test_allowed_host_over_https(self):
        code, out = self.sh(f"curl -sS -m 30 -o /dev/null -w '%{{http_code}}' https://{ALLOWED}/is-number")
        self.assertEqual((code, out), (0, "200"))

    def test_other_host_gets_pipelocks_403(self):
        code, out = self.sh("curl -sS -m 30 -i -p -x $HTTPS_PROXY https://pypi.org/ 2>&1 | head -1; "
                            "curl -sS -m 30 -o /dev/null https://pypi.org/ 2>&1")
        self.assertIn("403", out)
        self.assertIn("CONNECT tunnel failed, response 403", out)

    def test_dlp_blocks_credentials_and_the_bottles_secrets_in_urls(self):
        for what, url in (("aws key", f"http://{ALLOWED}/x?k=AKIAIOSFODNN7EXAMPLE"),
                          ("env secret", f"http://{ALLOWED}/x?k=$DEPLOY_KEY"),
                          ("env secret over https", f"https://{ALLOWED}/x?k=$DEPLOY_KEY")):
            with self.subTest(what):
                code, out = self.sh(f"curl -sS -m 30 -w ' %{{http_code}}' \"{url}\"")
                self.assertTrue(out.endswith(" 403"), out)
                self.assertIn("blocked", out)

    def test_secret_in_a_subdomain_is_blocked_and_never_shown(self):
        code, out = self.sh(f"curl -sS -m 30 https://$DEPLOY_KEY.{ALLOWED}/ 2>&1")
        self.assertIn("response 403", out)
        report = self.project.cli("logs", self.name, "--egress", "--json")
        self.assertEqual(report.returncode, 0, report.stderr)
        self.assertNotIn(self.deploy_key, report.stdout)
        rows = json.loads(report.stdout)
        self.assertIn(f"[secret].{ALLOWED}", [r["host"] for r in rows if not r["allowed"]])

    def test_sidecar_admin_endpoints_are_out_of_reach(self):
        # Asked of the proxy port itself, and through it at pipelock's own metrics address.
        code, out = self.sh(f"curl -sS -m 10 {bottle.PROXY_URL}/metrics; curl -sS -m 10 {bottle.PROXY_URL}/stats; "
                            f"curl -sS -m 10 {bottle.PROXY_URL}/health; "
                            f"curl -sS -m 10 --noproxy '' -x $HTTP_PROXY http://{egress.METRICS_LISTEN}/metrics; "
                            f"curl -sS -m 10 --noproxy '' -x $HTTP_PROXY http://{egress.PIPELOCK_LISTEN}/stats")
        self.assertEqual(out.count("claude-bottle: this is a proxy"), 3, out)
        self.assertNotIn("pipelock_", out)  # no metric names
        self.assertEqual(out.count("blocked"), 2, out)

    def test_egress_report_names_host_and_rule(self):
        self.sh(f"curl -sS -m 30 -o /dev/null https://{ALLOWED}/; curl -sS -m 30 https://example.org/ 2>&1")
        out = self.project.cli("logs", self.name, "--egress")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, rf"{ALLOWED}\s+allowed")
        self.assertRegex(out.stdout, r"example\.org\s+BLOCKED\s+\d+\s+allowlist: domain not in allowlist: example\.org")

    def test_token_is_nowhere_on_disk_inspect_or_command_lines(self):
        for found in cleanup.of_bottle(support.engine(), self.name):
            if found.kind == "container":
                self.assertNotIn(TOKEN, json.dumps(support.sdk().api.inspect_container(found.name)))
        for needle in (TOKEN, self.deploy_key):
            self.assertEqual(support.found_on_command_lines(needle), [])
            self.assertEqual(support.found_on_docker_disk(needle), [])


class SidecarNetworkTest(support.IntegrationTest):
    """The sidecar goes on Docker's default bridge where names resolve there as on the host, else on our own
    network: from either, it reaches an allowed host by name and the bottle gets its answer."""

    def test_an_allowed_host_by_name_on_each_network_a_sidecar_may_go_on(self):
        engine = support.engine()
        here = bottle.sidecar_network(engine)
        if engine.network_exists(bottle.DEFAULT_BRIDGE):
            self.assertEqual(here, bottle.sidecar_network_for(engine.host))
        project = Project({"bottles": {"net": {"egress": {"allowlist": [ALLOWED]}}},
                           "agents": {"net": {"bottle": "net", "prompt": "test"}}}, {})
        try:
            for network in dict.fromkeys((here, bottle.EGRESS_NETWORK)):
                with self.subTest(network):
                    # The CLI as a user runs it, with only the choice of network made for it.
                    forced = ("import sys; from claude_bottle import bottle, cli; "
                              f"bottle.sidecar_network_for = lambda host, *_: {network!r}; cli.run()")
                    out = subprocess.run([sys.executable, "-c", forced, "start", "net", "--yes", "--detach"],
                                         cwd=project.dir, env=project.env, capture_output=True, text=True, timeout=180)
                    self.assertEqual(out.returncode, 0, out.stderr)
                    name = out.stdout.strip()
                    try:
                        n = cleanup.Names(name)
                        networks = support.sdk().api.inspect_container(n.sidecar)["NetworkSettings"]["Networks"]
                        self.assertEqual(list(networks), [network])
                        self.assertEqual(list(support.sdk().api.inspect_container(n.container)["NetworkSettings"]
                                              ["Networks"]), ["none"])
                        got = project.cli("exec", name, "--", "sh", "-c", "curl -sS -m 30 -o /dev/null -w "
                                          f"'%{{http_code}}' https://{ALLOWED}/is-number")
                        self.assertEqual(got.stdout.strip(), "200", got.stderr)
                    finally:
                        project.cli("stop", name)
        finally:
            project.tmp.cleanup()


class InteractiveSessionTest(support.IntegrationTest):
    def setUp(self):
        self.project = Project({}, {})
        self.addCleanup(self.project.tmp.cleanup)

    def bottles(self):
        return support.bottles_of(self.project.dir)

    def start_session(self):
        before = self.bottles()
        term = Terminal(self.project.argv("start", "--yes"), env=self.project.env, cwd=self.project.dir)
        term.read_until(lambda s: "bypasspermissionson" in s.replace(" ", ""), timeout=90)
        new = self.bottles() - before
        self.assertEqual(len(new), 1)
        return term, new.pop()

    def test_start_exit_removes_everything(self):
        term, name = self.start_session()
        term.type(b"\x03")
        time.sleep(0.5)
        term.type(b"\x03")
        self.assertEqual(term.proc.wait(60), 0)
        term.assert_restored(self)
        self.assertIn(f"bottle {name} is gone, and Claude's conversation with it: the `claude --resume` line",
                      " ".join(term.read_until(lambda s: "does not apply" in s).split()))
        os.close(term.master)
        self.assertEqual(cleanup.of_bottle(support.engine(), name), [])

    def test_sigterm_and_closed_terminal_remove_everything(self):
        for how in ("sigterm", "hangup"):
            with self.subTest(how):
                term, name = self.start_session()
                if how == "sigterm":
                    term.proc.send_signal(signal.SIGTERM)
                    self.assertEqual(term.proc.wait(60), 128 + signal.SIGTERM)
                    term.assert_restored(self)
                    os.close(term.master)
                else:
                    os.close(term.master)  # the terminal goes away: the session gets SIGHUP
                    term.proc.wait(60)
                self.assertEqual(cleanup.of_bottle(support.engine(), name), [])

    def test_sigkill_leftovers_go_at_the_next_start(self):
        term, name = self.start_session()
        term.proc.kill()
        term.proc.wait(30)
        os.close(term.master)
        self.assertNotEqual(cleanup.of_bottle(support.engine(), name), [])
        out = self.project.cli("start", "--yes", "--detach")  # anyone's next start
        self.assertEqual(out.returncode, 0, out.stderr)
        self.project.cli("stop", out.stdout.strip())
        self.assertEqual(cleanup.of_bottle(support.engine(), name), [])


class SlowStreamTest(support.IntegrationTest):
    """A long answer that trickles in while the client says nothing must not be cut by the sidecar (pipelock's
    defaults: 120 s idle, measured per direction, and 300 s per tunnel): over HTTPS that the sidecar looks
    inside (server-sent events, which must also arrive as they come) and over plain HTTP."""

    SECONDS = 150

    def test_slow_stream_over_inspected_https_and_plain_http(self):
        import http.server
        import threading

        seconds = self.SECONDS

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                events = self.path.startswith("/events")
                count = 3 if "short" in self.path else seconds // 10
                body = [f"data: {i}\n\n".encode() if events else b"." for i in range(count)]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if events else "application/octet-stream")
                self.send_header("Content-Length", str(sum(map(len, body))))
                self.end_headers()
                for part in body:
                    self.wfile.write(part)
                    self.wfile.flush()
                    time.sleep(10)

        ca = support.TestCA()
        servers = [ca.wrap(support.Server(Handler)), support.Server(Handler)]
        host = support.host_address()
        project = Project({"bottles": {"b": {"egress": {"private_hosts": [f"{host}:{s.port}" for s in servers],
                                                        "ca_cert": str(ca.cert)}}},
                           "agents": {"a": {"bottle": "b"}}}, {})
        name = None
        try:
            out = project.cli("start", "a", "--yes", "--detach")
            self.assertEqual(out.returncode, 0, out.stderr)
            name = out.stdout.strip()
            https = f"https://{host}:{servers[0].port}"
            # Events arrive as they are sent, not once the answer is whole.
            first = project.cli("exec", name, "--", "curl", "-sSN", "-m", "15", f"{https}/events-short")
            self.assertIn("data: 0", first.stdout, first.stderr)
            self.assertNotIn("data: 2", first.stdout)
            urls = [f"{https}/events", f"http://{host}:{servers[1].port}/"]
            expected = ["".join(f"data: {i}\n\n" for i in range(seconds // 10)), "." * (seconds // 10)]
            results = {}

            def fetch(url):
                results[url] = project.cli("exec", name, "--", "curl", "-sS", "-m", str(seconds + 60), url,
                                           timeout=seconds + 120)

            threads = [threading.Thread(target=fetch, args=(u,)) for u in urls]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for url, want in zip(urls, expected):
                with self.subTest(url):
                    self.assertEqual((results[url].returncode, results[url].stdout), (0, want), results[url].stderr)
            report = project.cli("logs", name, "--egress").stdout
            self.assertRegex(report, rf"{host}:{servers[0].port}\s+allowed\s+\d+\s+allowed, looked inside")
        finally:
            if name:
                project.cli("stop", name)
            for s in servers:
                s.close()
            ca.close()
            project.tmp.cleanup()
