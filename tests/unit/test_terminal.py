import unittest

from claude_bottle.terminal import visible, visible_bytes


class VisibleTest(unittest.TestCase):
    def test_escape_sequences_and_controls_are_written_out(self):
        self.assertEqual(visible("a\x1b[2Jb\x07c\rd\x08e\x7f\x9b"), "a\\x1b[2Jb\\x07c\\x0dd\\x08e\\x7f\\x9b")

    def test_text_that_reorders_or_hides_is_written_out(self):
        self.assertEqual(visible("safe\u202egpj.exe\u200b\u2066x\u2028"),
                         "safe\\u202egpj.exe\\u200b\\u2066x\\u2028")
        self.assertEqual(visible("tag\U000e0041"), "tag\\U000e0041")  # a Unicode tag character (format, Cf)

    def test_plain_text_tabs_and_wanted_newlines_stay(self):
        self.assertEqual(visible("héllo\twörld ✓"), "héllo\twörld ✓")
        self.assertEqual(visible("a\nb"), "a\\x0ab")
        self.assertEqual(visible("a\nb", newlines=True), "a\nb")

    def test_bytes_from_a_bottle(self):
        self.assertEqual(visible_bytes(b"ok\n\x1b]52;c;ZXZpbA==\x07\xff\n"), "ok\n\\x1b]52;c;ZXZpbA==\\x07\ufffd\n".encode())


if __name__ == "__main__":
    unittest.main()
