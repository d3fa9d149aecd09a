import hashlib
import os
import subprocess
import tarfile
import tempfile
import unittest
from pathlib import Path

from claude_bottle import image, pins

from . import support

ROOT = Path(__file__).resolve().parents[2]


class BottleImageTest(support.IntegrationTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tag = support.bottle_image()

    def test_claude_code_runs(self):
        code, out = support.run(self.tag, ["claude", "--version"])
        self.assertEqual(code, 0, out)
        self.assertEqual(out.strip(), f"{pins.CLAUDE_CODE_VERSION} (Claude Code)")

    def test_runs_as_the_non_root_user_who_owns_home_and_workspace(self):
        code, out = support.run(self.tag, ["sh", "-c", "id -u; id -un; pwd; stat -c %U /workspace $HOME"])
        self.assertEqual(code, 0, out)
        self.assertEqual(out.split(), [str(image.BOTTLE_UID), image.BOTTLE_USER, image.WORKSPACE,
                                       image.BOTTLE_USER, image.BOTTLE_USER])

    def test_has_the_tools_an_agent_expects(self):
        tools = ["git", "ssh", "curl", "rg", "jq", "less", "ps", "nano", "vi", "socat", "node"]
        code, out = support.run(self.tag, ["sh", "-c", " && ".join(f"command -v {t}" for t in tools)])
        self.assertEqual(code, 0, out)

    def test_claude_never_updates_itself(self):
        code, out = support.run(self.tag, ["sh", "-c", "echo $DISABLE_AUTOUPDATER"])
        self.assertEqual(out.strip(), "1")

    def test_warm_machine_does_not_rebuild(self):
        spec = image.spec(support.image_settings())
        self.assertEqual(spec.tag, self.tag)
        self.assertEqual(list(image.ensure(support.engine(), spec)), [])

    def test_image_carries_its_labels(self):
        labels = support.sdk().images.get(self.tag).labels
        self.assertEqual(labels["org.claude-bottle.role"], "image")
        self.assertTrue(self.tag.endswith(labels["org.claude-bottle.inputs"][:16]))


class ExtraCaTest(support.IntegrationTest):
    """An image built with an extra CA trusts a server signed by it (curl, git, node); one built without does not."""

    SERVER = "ca-test-server"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.without_ca = support.bottle_image()
        cls.tmp = tempfile.TemporaryDirectory()
        d = Path(cls.tmp.name)
        _make_ca_and_server_cert(d, cls.SERVER)
        # The user's own extra CAs (if any) plus the test CA: the image differs only in what it trusts.
        settings = support.image_settings()
        bundle = (settings.ca_cert.read_bytes() if settings.ca_cert else b"") + (d / "ca.crt").read_bytes()
        (d / "bundle.pem").write_bytes(bundle)
        cls.with_ca_spec = image.spec(support.image_settings(ca_cert=d / "bundle.pem"))
        cls.with_ca = support.build(cls.with_ca_spec)
        client = support.sdk()
        cls.network = client.networks.create(f"cb-test-ca-{support.RUN_ID}", labels=support.labels())
        cls.server = client.containers.create(
            cls.without_ca, ["openssl", "s_server", "-quiet", "-www", "-accept", "8443",
                             "-cert", "/tmp/server.crt", "-key", "/tmp/server.key"],
            labels=support.labels(), network=cls.network.name, hostname=cls.SERVER)
        cls.network.disconnect(cls.server)
        cls.network.connect(cls.server, aliases=[cls.SERVER])
        cls.server.put_archive("/tmp", _tar(d, ["server.crt", "server.key"]))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.remove(force=True)
        cls.network.remove()
        support.engine().remove_image(cls.with_ca_spec.tag)
        cls.tmp.cleanup()
        super().tearDownClass()

    def client(self, image_ref, script):
        return support.run(image_ref, ["sh", "-c", script], network=self.network.name)

    def test_tags_differ(self):
        self.assertNotEqual(self.with_ca, self.without_ca)

    def test_curl(self):
        url = f"https://{self.SERVER}:8443/"
        script = f"for i in 1 2 3 4 5; do curl -sS -o /dev/null -w '%{{http_code}}' {url} && exit; sleep 1; done"
        code, out = self.client(self.with_ca, script)
        self.assertEqual((code, out.strip()), (0, "200"))
        code, out = self.client(self.without_ca, f"sleep 1; curl -sS -o /dev/null {url}")
        self.assertEqual(code, 60, out)  # curl: peer certificate cannot be authenticated

    def test_git(self):
        script = f"sleep 1; git ls-remote https://{self.SERVER}:8443/repo.git 2>&1; true"
        _, out = self.client(self.with_ca, script)
        self.assertIn("fatal:", out)  # the TLS server speaks no git, but the handshake passed
        self.assertNotIn("certificate", out)
        _, out = self.client(self.without_ca, script)
        self.assertIn("certificate", out)

    def test_node(self):
        script = ("sleep 1; node -e \"require('https').get('https://%s:8443/', r => console.log('status', r.statusCode))"
                  ".on('error', e => console.log('error', e.code))\"" % self.SERVER)
        _, out = self.client(self.with_ca, script)
        self.assertEqual(out.strip(), "status 200")
        _, out = self.client(self.without_ca, script)
        self.assertTrue(out.strip().startswith("error "), out)

    def test_claude_code(self):
        # Claude Code calls the API at the test server; only the TLS handshake matters here.
        script = (f"ANTHROPIC_API_KEY=sk-ant-test ANTHROPIC_BASE_URL=https://{self.SERVER}:8443 "
                  "timeout 15 claude -p hello 2>&1; true")
        _, out = self.client(self.with_ca, script)
        self.assertNotIn("certificate", out)
        _, out = self.client(self.without_ca, script)
        self.assertIn("certificate", out)


class OfflineImagesScriptTest(support.IntegrationTest):
    def test_present_images_are_left_alone(self):
        support.bottle_image()  # the base image is present once the bottle image is built
        out = subprocess.run([str(ROOT / "scripts" / "offline-images.sh"), "base"],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, f"offline-images: {pins.BASE_IMAGE} already present\n")

    def test_unknown_image_name(self):
        out = subprocess.run([str(ROOT / "scripts" / "offline-images.sh"), "nginx"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 1)
        self.assertEqual(out.stderr, "offline-images: error: unknown argument 'nginx': name base and/or pipelock, "
                                     "optionally with --pipelock-source FILE\n")

    def test_a_source_archive_that_is_not_the_pinned_one_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            fake = Path(d, "pipelock.tar.gz")
            fake.write_bytes(b"not pipelock")
            digest = hashlib.sha256(fake.read_bytes()).hexdigest()
            for args, env in (([ "pipelock", "--pipelock-source", str(fake)], {}),
                              (["pipelock"], {"PIPELOCK_SOURCE": str(fake)})):
                with self.subTest(args=args, env=env):
                    out = subprocess.run([str(ROOT / "scripts" / "offline-images.sh"), *args], capture_output=True,
                                         text=True, timeout=60, env={**os.environ, **env})
                    self.assertEqual(out.returncode, 1)
                    self.assertEqual(out.stderr, (
                        f"offline-images: error: --pipelock-source {fake}: sha256 is {digest}, but pipelock "
                        f"{pins.PIPELOCK_VERSION}'s source archive has {pins.PIPELOCK_SOURCE_SHA256} (pinned in "
                        f"src/claude_bottle/pins.py): use the unchanged archive of v{pins.PIPELOCK_VERSION} (git "
                        f"archive --prefix=pipelock-{pins.PIPELOCK_VERSION}/ v{pins.PIPELOCK_VERSION}, gzipped)\n"))

    def test_the_sidecar_image_is_made_as_the_official_one(self):
        ref = support.sidecar_image()
        config = support.sdk().images.get(ref).attrs["Config"]
        self.assertEqual(config["Entrypoint"], ["/pipelock"])
        self.assertEqual(config["Cmd"], ["run", "--listen", "0.0.0.0:8888"])
        self.assertEqual(config["Healthcheck"]["Test"], ["CMD", "/pipelock", "healthcheck"])
        code, out = support.run(ref, ["version"])
        self.assertEqual(code, 0, out)
        self.assertIn(f"pipelock version {pins.PIPELOCK_VERSION}", out)
        # Nothing but the CA bundle and the binary: scratch, as upstream's.
        container = support.sdk().containers.create(ref, labels=support.labels())
        try:
            with tempfile.TemporaryFile() as tar_file:
                for chunk in container.export():
                    tar_file.write(chunk)
                tar_file.seek(0)
                names = sorted(m.name for m in tarfile.open(fileobj=tar_file).getmembers() if m.isfile())
        finally:
            container.remove(force=True)
        added_by_docker = {".dockerenv", "dev/console", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
        self.assertEqual([n for n in names if n not in added_by_docker],
                         ["etc/ssl/certs/ca-certificates.crt", "pipelock"])


def _make_ca_and_server_cert(d: Path, server: str) -> None:
    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=claude-bottle test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={server}", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{server}\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.crt")
    (d / "server.key").chmod(0o644)  # read by the server's non-root user


def _tar(d: Path, names: list[str]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(d / name, arcname=name)
    return buf.getvalue()


if __name__ == "__main__":
    unittest.main()
