"""`claude-bottle doctor`: each problem found, with its fix, and the exit status."""

import json
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from click.testing import CliRunner

from claude_bottle import cli, doctor, image, manifest, pins, sidecar
from claude_bottle.errors import DockerUnavailable

from .fake_engine import FakeEngine

TOKEN = "sk-ant-oat01-" + "d" * 40


class DoctorTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        settings = manifest.ImageSettings()
        self.all_images = {image.spec(settings).tag, sidecar.spec(settings).tag, pins.PIPELOCK_IMAGE}

    def run_doctor(self, env=None, engine=None, *args):
        env = {"CLAUDE_BOTTLE_HOME": str(self.home), "CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN, "CLAUDE_BOTTLE_CA_CERT": None,
               **(env or {})}
        connect = mock.patch("claude_bottle.docker.connect",
                             return_value=engine if engine is not None else FakeEngine(images=self.all_images))
        with connect, mock.patch("os.getcwd", return_value=str(self.home)):
            return CliRunner().invoke(cli.main, ["doctor", *args], env=env)

    def statuses(self, r) -> dict[str, str]:
        return {c["name"]: c["status"] for c in json.loads(r.stdout)}

    def test_a_ready_machine(self):
        r = self.run_doctor(None, None, "--json")
        self.assertEqual(r.exit_code, 0, r.output)
        self.assertEqual(set(self.statuses(r).values()), {"ok"})

    def test_each_failure_says_what_to_do_and_fails(self):
        cases = {
            "token": {"CLAUDE_BOTTLE_OAUTH_TOKEN": None},
            "ca": {"CLAUDE_BOTTLE_CA_CERT": str(self.home / "missing.pem")},
        }
        for name, env in cases.items():
            with self.subTest(name):
                r = self.run_doctor(env)
                self.assertEqual(r.exit_code, 1, r.output)
                line = next((x for x in r.stdout.splitlines() if x.split()[1:2] == [name]), repr(r.exception))
                self.assertTrue(line.startswith("FAIL"), line)
                self.assertIn("fix: ", r.stdout.split(line)[1].splitlines()[1])
        (self.home / "claude-bottle.json").write_text('{"agents": {"a": {"bottle": "nope"}}}')
        r = self.run_doctor({}, None, "--json")
        self.assertEqual((r.exit_code, self.statuses(r)["manifests"]), (1, "fail"))

    def test_an_unreachable_engine(self):
        with mock.patch("claude_bottle.docker.connect", side_effect=DockerUnavailable("Docker daemon not reachable")):
            found = doctor.checks({"CLAUDE_BOTTLE_HOME": str(self.home), "CLAUDE_BOTTLE_OAUTH_TOKEN": TOKEN},
                                  self.home)
        engine = next(c for c in found if c.name == "engine")
        self.assertEqual(engine.status, "fail")
        self.assertIn("usermod -aG docker", engine.fix)

    def test_warnings_do_not_fail(self):
        r = self.run_doctor({"CLAUDE_BOTTLE_OAUTH_TOKEN": "sk-ant-api03-" + "k" * 40}, FakeEngine(images=set()), "--json")
        self.assertEqual(r.exit_code, 0, r.output)
        s = self.statuses(r)
        self.assertEqual((s["token"], s["bottle image"], s["pipelock image"]), ("warn", "warn", "warn"))

    # On the Kubernetes runtime doctor checks the cluster too (a real one: test_kubernetes).

    def test_an_unreachable_cluster_fails_with_what_to_do(self):
        r = self.run_doctor({"CLAUDE_BOTTLE_RUNTIME": "kubernetes", "KUBECONFIG": "/nonexistent"}, None, "--json")
        self.assertEqual(r.exit_code, 1, r.output)
        cluster = next(c for c in json.loads(r.stdout) if c["name"] == "cluster")
        self.assertEqual(cluster["status"], "fail")
        self.assertIn("no usable Kubernetes configuration in /nonexistent", cluster["found"])
        self.assertIn("check KUBECONFIG and --context", cluster["fix"])
        self.assertEqual(self.statuses(r)["engine"], "ok")  # Docker, which builds the images, is still checked

    def test_not_checked_on_docker(self):
        self.assertNotIn("cluster", self.statuses(self.run_doctor(None, None, "--json")))


if __name__ == "__main__":
    unittest.main()
