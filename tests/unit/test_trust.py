"""The trust store: an allowance is for one file, as found, with exactly the content the user saw."""

import tempfile
import unittest
from pathlib import Path

from claude_bottle import trust


class StoreTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.store = trust.Store(self.root / "state")
        self.allowed = self.root / "a" / "claude-bottle.json"
        self.allowed.parent.mkdir()
        self.allowed.write_text("{}")
        self.store.allow(self.allowed, trust.digest(b"{}"))

    def test_any_change_of_content_is_untrusted(self):
        self.assertTrue(self.store.is_allowed(self.allowed, trust.digest(b"{}")))
        self.assertFalse(self.store.is_allowed(self.allowed, trust.digest(b"{} ")))

    def test_a_link_to_an_allowed_file_from_another_folder_is_not_allowed(self):
        # Its folder (and the skills in it) are another repository's.
        other = self.root / "b" / "claude-bottle.json"
        other.parent.mkdir()
        other.symlink_to(self.allowed)
        self.assertFalse(self.store.is_allowed(other, trust.digest(b"{}")))

    def test_revoke(self):
        self.assertTrue(self.store.revoke(self.allowed))
        self.assertFalse(self.store.is_allowed(self.allowed, trust.digest(b"{}")))
        self.assertFalse(self.store.revoke(self.allowed))


if __name__ == "__main__":
    unittest.main()
