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
    """The gate's report (it counts pipelock's log; see gate/report_test.go) becomes rows, most frequent first."""

    def test_rows(self):
        r = egress.report('{"rows": [{"host": "a.org", "decision": "blocked", "reason": "dlp: x", "count": 2},'
                          ' {"host": "b.org", "decision": "allowed", "reason": "allowed", "count": 5}], "folded": 3}')
        self.assertEqual([(d.host, d.decision, d.allowed, d.reason, d.count) for d in r.rows], [
            ("b.org", "allowed", True, "allowed", 5), ("a.org", "blocked", False, "dlp: x", 2)])
        self.assertEqual(r.folded, 3)
        self.assertEqual(r.rows[1].to_json(), {"host": "a.org", "decision": "blocked", "allowed": False,
                                               "reason": "dlp: x", "count": 2})

    def test_nothing_or_garbage_is_an_empty_report(self):
        for text in ("", "not json", '{"rows": "x"}'):
            with self.subTest(text):
                self.assertEqual(egress.report(text).rows, ())
