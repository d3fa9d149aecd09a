import io
import tarfile
import tempfile
import unittest
from dataclasses import replace
from pathlib import Path

from claude_bottle import image, pins
from claude_bottle.manifest import ImageSettings


class ImageSpecTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.ca = Path(tmp.name) / "ca.pem"
        self.ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        self.settings = ImageSettings(ca_cert=self.ca)

    def test_same_inputs_same_tag(self):
        self.assertEqual(image.spec(self.settings).tag, image.spec(ImageSettings(ca_cert=self.ca)).tag)
        self.assertRegex(image.spec(self.settings).tag, r"^claude-bottle:[0-9a-f]{16}$")

    def test_every_input_changes_the_tag(self):
        before = image.spec(self.settings).tag
        changed = [
            replace(self.settings, base="debian:trixie-slim"),
            replace(self.settings, claude_code_version="2.0.1"),
            replace(self.settings, ca_cert=None),
        ]
        tags = {image.spec(s).tag for s in changed}
        self.assertEqual(len(tags), 3)
        self.assertNotIn(before, tags)
        self.ca.write_text(self.ca.read_text() + "\n")
        self.assertNotEqual(image.spec(self.settings).tag, before)

    def test_dockerfile_content_changes_the_tag(self):
        s = image.spec(self.settings)
        files = tuple((n, d + b"\n# changed" if n == "Dockerfile" else d) for n, d in s.files)
        self.assertNotEqual(replace(s, files=files).tag, s.tag)

    def test_context_holds_dockerfile_and_ca(self):
        s = image.spec(self.settings)
        with tarfile.open(fileobj=io.BytesIO(s.context_tar())) as tar:
            names = tar.getnames()
            self.assertEqual(tar.extractfile("extra-ca.crt").read(), self.ca.read_bytes())
        self.assertIn("Dockerfile", names)
        self.assertEqual(dict(s.buildargs)["CLAUDE_CODE_VERSION"], pins.CLAUDE_CODE_VERSION)
        self.assertEqual(dict(s.buildargs)["BASE_IMAGE"], pins.BASE_IMAGE)

    def test_without_ca_the_extra_file_is_empty(self):
        s = image.spec(ImageSettings())
        self.assertEqual(dict(s.files)["extra-ca.crt"], b"")

    def test_labels_name_role_and_inputs(self):
        s = image.spec(self.settings)
        self.assertEqual(s.labels, {"org.claude-bottle.role": "image", "org.claude-bottle.inputs": s.digest})


class EnsureTest(unittest.TestCase):
    """ensure() builds only when the tag is missing (a fake engine at our own boundary)."""

    class FakeEngine:
        def __init__(self, present):
            self.present = set(present)
            self.builds = []

        def image_exists(self, ref):
            return ref in self.present

        def build_image(self, context, tag, buildargs, labels, nocache=False):
            self.builds.append(tag)
            self.present.add(tag)
            yield "Step 1/1\n"

    def test_warm_machine_does_not_rebuild(self):
        s = image.spec(ImageSettings())
        engine = self.FakeEngine([s.tag])
        self.assertEqual(list(image.ensure(engine, s)), [])
        self.assertEqual(engine.builds, [])

    def test_missing_tag_builds(self):
        s = image.spec(ImageSettings())
        engine = self.FakeEngine([])
        self.assertEqual(list(image.ensure(engine, s)), ["Step 1/1\n"])
        self.assertEqual(engine.builds, [s.tag])
