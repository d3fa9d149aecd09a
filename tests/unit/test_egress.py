import unittest
from pathlib import Path

from claude_bottle import egress
from claude_bottle.manifest import Bottle, SshHost


class AllowlistTest(unittest.TestCase):
    def test_union_of_claude_hosts_allowlist_and_ssh_hosts(self):
        ssh = SshHost("gh", "github.com", "git", 22, Path("/k"), "ssh-ed25519 AAAA")
        b = Bottle("b", allowlist=("pypi.org", "api.anthropic.com"), ssh=(ssh,))
        hosts = egress.allowlist(b)
        self.assertEqual([(h.host, h.reason) for h in hosts], [
            ("api.anthropic.com", "Claude Code"),
            ("platform.claude.com", "Claude Code"),
            ("claude.ai", "Claude Code"),
            ("claude.com", "Claude Code"),
            ("pypi.org", "egress.allowlist"),
            ("github.com", "ssh gh"),
        ])

    def test_summary_names_the_bottles_own_hosts_first(self):
        b = Bottle("b", allowlist=("pypi.org",))
        self.assertEqual(egress.summary(egress.allowlist(b)),
                         "5 hosts allowed (pypi.org, api.anthropic.com, platform.claude.com +2 more)")

    def test_summary_of_a_short_list(self):
        hosts = (egress.AllowedHost("a.com", "egress.allowlist"),)
        self.assertEqual(egress.summary(hosts), "1 host allowed (a.com)")


class ReportTest(unittest.TestCase):
    """pipelock's JSON log lines (as the pinned release writes them) become one row per host, decision, reason."""

    LINES = [
        '{"level":"info","component":"pipelock","event":"startup","listen":"127.0.0.1:8888","mode":"strict"}',
        '{"level":"info","component":"pipelock","event":"tunnel_open","target":"registry.npmjs.org:443",'
        '"client_ip":"127.0.0.1","request_id":"req-1","agent":"anonymous","message":"tunnel opened"}',
        '{"level":"info","component":"pipelock","event":"tunnel_close","target":"registry.npmjs.org:443",'
        '"total_bytes":22476,"duration_ms":187.7,"message":"tunnel closed"}',
        '{"level":"info","component":"pipelock","event":"forward_http","method":"GET",'
        '"url":"http://registry.npmjs.org/is-number","status_code":404}',
        '{"level":"warn","component":"pipelock","event":"blocked","method":"CONNECT",'
        '"target":"[secret].registry.npmjs.org:443","scanner":"allowlist",'
        '"reason":"domain not in allowlist: [secret].registry.npmjs.org","message":"request blocked"}',
        '{"level":"warn","component":"pipelock","event":"blocked","method":"GET",'
        '"url":"http://registry.npmjs.org/is-number?k=[redacted]","scanner":"dlp","reason":"known secret leak detected"}',
        '{"level":"warn","component":"pipelock","event":"blocked","method":"CONNECT","target":"[2001:db8::1]:443",'
        '"scanner":"ssrf","reason":"ssrf: internal address"}',
        "not json at all",
    ]

    def test_rows(self):
        rows = egress.report(self.LINES)
        self.assertEqual([(r.host, r.allowed, r.reason, r.count) for r in rows], [
            ("registry.npmjs.org", True, "allowed", 2),
            ("[2001:db8::1]", False, "ssrf: internal address", 1),
            ("[secret].registry.npmjs.org", False, "allowlist: domain not in allowlist: [secret].registry.npmjs.org", 1),
            ("registry.npmjs.org", False, "dlp: known secret leak detected", 1),
        ])

    def test_redact_ignores_case(self):
        self.assertEqual(egress.redact("x dk-AbCdEf0123456789 y dk-abcdef0123456789.host", ["dk-AbCdEf0123456789"]),
                         "x [secret] y [secret].host")
