import subprocess
import tempfile
import unittest
from pathlib import Path

from claude_bottle import ssh
from claude_bottle.errors import BottleError
from claude_bottle.manifest import SshHost

from .fake_engine import tar_members

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


class SshTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def key(self, name, passphrase=""):
        path = self.dir / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
        return path

    def test_config_tunnels_through_the_sidecar_and_never_prompts(self):
        hosts = [SshHost("github", "github.com", "git", 22, Path("/k"), KEY),
                 SshHost("internal", "git.corp.example", None, 2222, Path("/k"), KEY)]
        self.assertEqual(ssh.config(hosts, 3128), (
            "Host github\n  HostName github.com\n  Port 22\n  User git\n"
            "  ProxyCommand socat - PROXY:127.0.0.1:%h:%p,proxyport=3128\n"
            "  StrictHostKeyChecking yes\n  UserKnownHostsFile ~/.ssh/known_hosts\n  BatchMode yes\n"
            "  ConnectTimeout 10\n  IdentityAgent /run/claude-bottle/secrets/agent.sock\n\n"
            "Host internal\n  HostName git.corp.example\n  Port 2222\n"
            "  ProxyCommand socat - PROXY:127.0.0.1:%h:%p,proxyport=3128\n"
            "  StrictHostKeyChecking yes\n  UserKnownHostsFile ~/.ssh/known_hosts\n  BatchMode yes\n"
            "  ConnectTimeout 10\n  IdentityAgent /run/claude-bottle/secrets/agent.sock\n"))
        self.assertEqual(ssh.known_hosts(hosts), f"github.com {KEY}\n[git.corp.example]:2222 {KEY}\n")

    def test_files_hold_no_key(self):
        host = SshHost("g", "g.example", "git", 22, self.key("id"), KEY)
        members = tar_members(ssh.files([host], 3128))
        self.assertEqual(sorted(members), ["home/claude/.ssh/config", "home/claude/.ssh/known_hosts"])
        self.assertNotIn(b"PRIVATE KEY", b"".join(members.values()))

    def test_plain_key_is_read(self):
        path = self.key("plain")
        self.assertEqual(ssh.read_key(SshHost("g", "g.example", None, 22, path, KEY)), path.read_bytes())

    def refusal(self, path) -> str:
        with self.assertRaises(BottleError) as ctx:
            ssh.check_key(SshHost("g", "g.example", None, 22, path, KEY))
        return str(ctx.exception)

    def test_a_public_key_is_refused_naming_the_private_one(self):
        path = self.key("id")
        self.assertEqual(self.refusal(path.with_suffix(".pub")),
                         f"SSH key {path}.pub for g is a public key: IdentityFile takes the private key that goes "
                         f"with it ({path}, without .pub)")

    def test_a_file_that_is_no_key_and_a_missing_one_are_refused(self):
        (self.dir / "notes").write_text("hello\n")
        self.assertEqual(self.refusal(self.dir / "notes"),
                         f"SSH key {self.dir}/notes for g is not a private key in OpenSSH or PEM form: IdentityFile "
                         "takes the file you would give `ssh -i`")
        self.assertEqual(self.refusal(self.dir / "gone"),
                         f"cannot read SSH key {self.dir}/gone for g: No such file or directory: fix IdentityFile "
                         "in its ssh entry")

    def test_pem_keys_plain_and_encrypted(self):
        plain = self.dir / "rsa"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(plain)],
                       check=True)
        ssh.check_key(SshHost("g", "g.example", None, 22, plain, KEY))
        locked = self.dir / "rsa-locked"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "secret", "-f", str(locked)],
                       check=True)
        self.assertIn("is protected by a passphrase", self.refusal(locked))

    def test_passphrase_protected_key_is_refused_with_what_to_do(self):
        path = self.key("locked", "a passphrase")
        with self.assertRaises(BottleError) as ctx:
            ssh.read_key(SshHost("g", "g.example", None, 22, path, KEY))
        self.assertEqual(str(ctx.exception), f"SSH key {path} for g is protected by a passphrase: give bottles a key "
                         "of their own without one (ssh-keygen -t ed25519 -N '' -f ~/.ssh/id_bottle), and add its "
                         "public key to the server")
