import unittest

from claude_bottle.terminal import visible, visible_bytes


class VisibleTest(unittest.TestCase):
    def test_escape_sequences_and_controls_are_written_out(self):
        self.assertEqual(visible("a\x1b[2Jb\x07c\rd\x08e\x7f\x9b"), "a\\x1b[2Jb\\x07c\\x0dd\\x08e\\x7f\\x9b")

    def test_text_that_reorders_or_hides_is_written_out(self):
        self.assertEqual(visible("safe\u202egpj.exe\u200b\u2066x\u2028"),
                         "safe\\u202egpj.exe\\u200b\\u2066x\\u2028")
        self.assertEqual(visible("tag\U000e0041"), "tag\\U000e0041")  # a Unicode tag character (format, Cf)

    def test_plain_text_and_wanted_newlines_stay(self):
        self.assertEqual(visible("héllo wörld ✓"), "héllo wörld ✓")
        self.assertEqual(visible("a\nb"), "a\\x0ab")
        self.assertEqual(visible("a\nb", newlines=True), "a\nb")

    def test_a_byte_not_utf8_kept_as_python_keeps_it(self):
        """A ref or file name of the agent's that is not UTF-8 arrives so (surrogateescape): printed raw, it
        was a traceback."""
        self.assertEqual(visible("x\udc9by"), "x\\udc9by")
        self.assertEqual(visible("x\udc9by").encode(), b"x\\udc9by")  # nothing of it is left raw

    def test_bytes_from_a_bottle(self):
        self.assertEqual(visible_bytes(b"ok\n\x1b]52;c;ZXZpbA==\x07\xff\n"), "ok\n\\x1b]52;c;ZXZpbA==\\x07\ufffd\n".encode())



class MoreVisibleTest(unittest.TestCase):
    def test_on_one_line_tabs_and_blank_letters_are_written_out(self):
        self.assertEqual(visible("a\tb\u3164c\u2800d\u115f"), "a\\x09b\\u3164c\\u2800d\\u115f")
        self.assertEqual(visible("a\tb\nc", newlines=True), "a\tb\nc")

    def test_shortened(self):
        from claude_bottle.terminal import shortened

        self.assertEqual(shortened("x" * 10, 20), "x" * 10)
        self.assertEqual(shortened("y" * 250), "y" * 200 + "… (+50 characters)")


if __name__ == "__main__":
    unittest.main()
