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
    """pipelock's JSON log lines (shapes from its audit logger) become one row per host, decision and reason."""

    LINES = [
        '{"level":"info","component":"pipelock","event":"tunnel_open","target":"api.anthropic.com:443","request_id":"req-1"}',
        '{"level":"info","component":"pipelock","event":"tunnel_close","target":"api.anthropic.com:443","total_bytes":10}',
        '{"level":"info","component":"pipelock","event":"tunnel_open","target":"api.anthropic.com:443","request_id":"req-2"}',
        '{"level":"warn","component":"pipelock","event":"blocked","method":"CONNECT","target":"evil.example:443",'
        '"scanner":"allowlist","reason":"domain not in allowlist: evil.example","message":"request blocked"}',
        '{"level":"warn","component":"pipelock","event":"blocked","method":"GET","url":"http://pypi.org/x?k=AKIA",'
        '"scanner":"dlp","reason":"DLP match: AWS Access Key"}',
        'not json at all',
        '{"level":"info","message":"listening"}',
    ]

    def test_rows(self):
        rows = egress.report(self.LINES)
        self.assertEqual([(r.host, r.allowed, r.reason, r.count) for r in rows], [
            ("api.anthropic.com", True, "allowed", 2),
            ("evil.example", False, "allowlist: domain not in allowlist: evil.example", 1),
            ("pypi.org", False, "dlp: DLP match: AWS Access Key", 1),
        ])
