"""Git over SSH from a bottle: the SSH config that tunnels through the sidecar with HTTP CONNECT,
the pinned host keys, and private keys held by an ssh-agent in the bottle, never in a file there.

The agent runs as the bottle's user, but ssh-agent makes itself undumpable, and the bottle has no
capabilities and no privilege gain, so the agent can sign with the keys but not read them.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping, Sequence

from .docker import Engine
from . import lazy
from .errors import BottleError
from .image import BOTTLE_HOME, BOTTLE_USER, owned
from .manifest import SshHost

tarfile = lazy.Module("tarfile")

AGENT_SOCKET = "/run/claude-bottle/secrets/agent.sock"
CONNECT_TIMEOUT = 10


# Enough of a key file to tell a private key from a public one and to read an OpenSSH key's cipher,
# none of it secret.
_HEAD = 512


def check_key(host: SshHost) -> None:
    """Refuse, before anything is asked or made, a key that cannot be handed over: missing, a public key,
    not a key at all, or protected by a passphrase (we would have to write it decrypted somewhere to hand
    it over, or hang waiting for the passphrase). Reads only the file's first bytes, none of them secret."""
    path = host.identity_file
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as e:
        raise BottleError(f"cannot read SSH key {path} for {host.host}: {e.strerror}: fix IdentityFile "
                          "in its ssh entry") from None
    text = head.decode("ascii", errors="replace")
    if text.split(" ", 1)[0].startswith(("ssh-", "ecdsa-", "sk-")):
        private = path.with_suffix("") if path.suffix == ".pub" else None
        instead = f" ({private}, without .pub)" if private else ""
        raise BottleError(f"SSH key {path} for {host.host} is a public key: IdentityFile takes the private key "
                          f"that goes with it{instead}")
    if not (text.startswith("-----BEGIN ") and "PRIVATE KEY-----" in text.split("\n", 1)[0]):
        raise BottleError(f"SSH key {path} for {host.host} is not a private key in OpenSSH or PEM form: "
                          "IdentityFile takes the file you would give `ssh -i`")
    if _encrypted(head):
        raise BottleError(
            f"SSH key {path} for {host.host} is protected by a passphrase: give bottles a key of "
            f"their own without one (ssh-keygen -t ed25519 -N '' -f ~/.ssh/id_bottle), and add its public "
            "key to the server"
        )


def read_key(host: SshHost) -> bytes:
    """The private key of `host`, after `check_key`."""
    check_key(host)
    try:
        return host.identity_file.read_bytes()
    except OSError as e:
        raise BottleError(f"cannot read SSH key {host.identity_file} for {host.host}: {e.strerror}") from None


def config(hosts: Sequence[SshHost], proxy_port: int) -> str:
    """~/.ssh/config: one block per entry, through the sidecar, pinned host key, never a prompt."""
    blocks = []
    for h in hosts:
        lines = [f"Host {h.host}", f"  HostName {h.hostname}", f"  Port {h.port}"]
        if h.user:
            lines.append(f"  User {h.user}")
        lines += [
            f"  ProxyCommand socat - PROXY:127.0.0.1:%h:%p,proxyport={proxy_port}",
            "  StrictHostKeyChecking yes",
            "  UserKnownHostsFile ~/.ssh/known_hosts",
            "  BatchMode yes",
            f"  ConnectTimeout {CONNECT_TIMEOUT}",
            f"  IdentityAgent {AGENT_SOCKET}",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def known_hosts(hosts: Sequence[SshHost]) -> str:
    return "".join(f"{h.hostname if h.port == 22 else f'[{h.hostname}]:{h.port}'} {h.known_host_key}\n"
                   for h in hosts)


def files(hosts: Sequence[SshHost], proxy_port: int) -> bytes:
    """A tar, to extract at /, of the bottle user's ~/.ssh (config and known hosts; no keys)."""
    home = BOTTLE_HOME.lstrip("/")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo(f"{home}/.ssh")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        entries = [(folder, None)]
        for name, text in (("config", config(hosts, proxy_port)), ("known_hosts", known_hosts(hosts))):
            info = tarfile.TarInfo(f"{home}/.ssh/{name}")
            info.size, info.mode = len(text.encode()), 0o600
            entries.append((info, io.BytesIO(text.encode())))
        for info, data in entries:
            tar.addfile(owned(info), data)
    return buf.getvalue()


def setup(engine: Engine, container: str, hosts: Sequence[SshHost], keys: Mapping[str, bytes],
          proxy_port: int) -> None:
    """Write ~/.ssh, start the agent, and hand it each key over exec stdin."""
    engine.put_archive(container, "/", files(hosts, proxy_port))
    code, out = engine.exec(container, ["ssh-agent", "-a", AGENT_SOCKET], user=BOTTLE_USER)
    if code != 0:
        raise BottleError(f"starting the SSH agent in the bottle failed: {out.decode(errors='replace').strip()}")
    for host, key in keys.items():
        code, out = engine.exec(container, ["env", f"SSH_AUTH_SOCK={AGENT_SOCKET}", "ssh-add", "-q", "-"],
                                user=BOTTLE_USER, stdin=key)
        if code != 0:
            raise BottleError(f"loading the SSH key for {host} into the bottle's agent failed: "
                              f"{out.decode(errors='replace').strip()}")


def _encrypted(data: bytes) -> bool:
    text = data.decode("ascii", errors="replace")
    if "ENCRYPTED" in text:  # PEM: "Proc-Type: 4,ENCRYPTED" or "BEGIN ENCRYPTED PRIVATE KEY"
        return True
    if "BEGIN OPENSSH PRIVATE KEY" not in text:
        return False
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    try:  # the cipher's name is in the first bytes; decode whole groups of them only
        raw = base64.b64decode(body[:64])
    except (binascii.Error, ValueError):
        return False
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic):
        return False
    length = int.from_bytes(raw[len(magic):len(magic) + 4], "big")
    cipher = raw[len(magic) + 4:len(magic) + 4 + length]
    return cipher != b"none"
