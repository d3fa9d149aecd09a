"""Git over SSH from a real bottle through the real sidecar to a real sshd with git, keys held by
the bottle's agent and never on its disk."""

import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import support
from . import test_sidecar
from .test_sidecar import Project

SERVER_DOCKERFILE = b"""FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server git \\
 && rm -rf /var/lib/apt/lists/* && mkdir /run/sshd \\
 && useradd -m -s /bin/bash git && mkdir -m 700 /home/git/.ssh \\
 && git init -q --bare -b main /home/git/repo.git && chown -R git:git /home/git
CMD ["/usr/sbin/sshd", "-D", "-e"]
"""


def setUpModule():
    test_sidecar.setUpModule()


class GitOverSshTest:
    """Run on both runtimes (support.on_each_runtime): the sshd is published on this host's address as the
    runtime's workloads reach it."""

    runtime: support.Runtime

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory()
        d = Path(cls.tmp.name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id_bottle")], check=True)
        cls.key = d / "id_bottle"
        client = support.sdk()
        cls.server_image, _ = client.images.build(fileobj=io.BytesIO(SERVER_DOCKERFILE), tag=f"cb-test-sshd:{support.RUN_ID}",
                                                  labels=support.labels(), rm=True)
        cls.gateway = cls.runtime.host_address()
        cls.server = client.containers.run(cls.server_image.id, detach=True, labels=support.labels(),
                                           ports={"22/tcp": (cls.gateway, None)})
        cls.server.put_archive("/home/git/.ssh", _tar("authorized_keys", (d / "id_bottle.pub").read_bytes()))
        cls.server.exec_run(["chown", "-R", "git:git", "/home/git/.ssh"])
        cls.server.exec_run(["chmod", "600", "/home/git/.ssh/authorized_keys"])
        cls.server.reload()
        cls.port = int(cls.server.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
        code, out = cls.server.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
        cls.host_key = " ".join(out.decode().split()[:2])

    @classmethod
    def tearDownClass(cls):
        cls.server.remove(force=True)
        support.sdk().images.remove(cls.server_image.id, force=True)
        cls.tmp.cleanup()
        super().tearDownClass()

    def project(self, host_key=None, with_entry=True):
        entry = {"Host": "gitserver", "Hostname": self.gateway, "User": "git", "Port": self.port,
                 "IdentityFile": str(self.key), "KnownHostKey": host_key or self.host_key}
        bottle = {"egress": {"private_hosts": [self.gateway]}}
        if with_entry:
            bottle["ssh"] = [entry]
        p = Project({"bottles": {"b": bottle}, "agents": {"a": {"bottle": "b"}}}, {}, self.runtime)
        self.addCleanup(p.tmp.cleanup)
        return p

    def started(self, project):
        out = project.cli("start", "a", "--yes", "--detach")
        self.assertEqual(out.returncode, 0, out.stderr)
        name = out.stdout.strip()
        self.addCleanup(project.cli, "stop", name)
        return name

    def sh(self, project, name, script):
        out = project.cli("exec", name, "--", "sh", "-c", script, timeout=120)
        return out.returncode, out.stdout + out.stderr

    def test_clone_commit_push(self):
        p = self.project()
        name = self.started(p)
        code, out = self.sh(p, name, "cd /tmp && git clone -q gitserver:repo.git && cd repo && "
                                     "git -c user.name=a -c user.email=a@b commit -q --allow-empty -m 'from the bottle' "
                                     "&& git push -q origin HEAD:main && git ls-remote origin main")
        self.assertEqual(code, 0, out)
        _, log = self.server.exec_run(["git", "--git-dir=/home/git/repo.git", "log", "--format=%s", "main"])
        self.assertEqual(log.decode().strip(), "from the bottle")

    def test_the_key_is_nowhere_on_the_bottles_disk(self):
        p = self.project()
        name = self.started(p)
        code, out = self.sh(p, name, "ssh-add -l; find / -xdev -name 'id_*' 2>/dev/null; echo END")
        self.assertIn("ED25519", out)  # the agent holds it
        self.assertTrue(out.strip().endswith("END") and "id_" not in out.split("ED25519")[1], out)
        secret_line = self.key.read_text().splitlines()[3]  # from the key's private part, not its header
        code, out = self.sh(p, name, "for d in /*; do case $d in /proc|/sys|/dev) ;; *) "
                                     f"grep -rlF -D skip -- '{secret_line}' \"$d\" 2>/dev/null;; esac; done; echo END")
        self.assertEqual(out.strip(), "END")

    def test_wrong_host_key_fails_closed(self):
        p = self.project(host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
        name = self.started(p)
        code, out = self.sh(p, name, "timeout 60 git ls-remote gitserver:repo.git")
        self.assertNotEqual(code, 0)
        self.assertIn("Host key verification failed", out)

    def test_bottle_without_the_entry_cannot_reach_the_server(self):
        p = Project({"agents": {"a": {"bottle": "default"}}}, {}, self.runtime)
        self.addCleanup(p.tmp.cleanup)
        name = self.started(p)
        code, out = self.sh(p, name, f"echo | timeout 20 socat - PROXY:127.0.0.1:{self.gateway}:{self.port},"
                                     "proxyport=3128 2>&1")
        self.assertNotEqual(code, 0)
        self.assertNotIn("SSH-2.0", out)
        report = p.cli("logs", name, "--egress").stdout
        self.assertIn(self.gateway, report)
        self.assertIn("BLOCKED", report)

    def test_passphrase_protected_key_is_refused_before_anything_exists(self):
        locked = Path(self.tmp.name) / "id_locked"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret phrase", "-f", str(locked)], check=True)
        p = Project({"bottles": {"b": {"ssh": [{"Host": "g", "Hostname": self.gateway, "IdentityFile": str(locked),
                                                "KnownHostKey": self.host_key}]}}, "agents": {"a": {"bottle": "b"}}}, {},
                    self.runtime)
        self.addCleanup(p.tmp.cleanup)
        out = p.cli("start", "a", "--yes", "--detach")
        self.assertEqual(out.returncode, 1)
        self.assertIn("is protected by a passphrase", out.stderr)
        self.assertEqual(support.objects_of(p.dir, self.runtime.engine()), set())


support.on_each_runtime(GitOverSshTest, globals())


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
