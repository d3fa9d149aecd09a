import dataclasses
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path

from claude_bottle import bottle, cleanup, docker, egress, manifest, sidecar, workspace
from claude_bottle.docker import Found
from claude_bottle.errors import BottleError

from ..lock_holder import hold_lock
from .fake_engine import FakeEngine


def make_plan(agent: manifest.Agent | None = None, b: manifest.Bottle | None = None) -> bottle.LaunchPlan:
    m = manifest.Manifest(
        agents={"dev": agent or manifest.Agent("dev", "dev")},
        bottles={"dev": b or manifest.Bottle("dev")},
        image=manifest.ImageSettings(),
        files=(),
    )
    return bottle.plan(m, "dev", {})


class BottleContainerTest(unittest.TestCase):
    def test_exact_create_payload(self):
        plan = make_plan()
        n = plan.names
        spec = bottle.bottle_container(plan, "host:1:2")
        env = {
            "HTTP_PROXY": "http://127.0.0.1:3128", "HTTPS_PROXY": "http://127.0.0.1:3128",
            "NO_PROXY": "localhost,127.0.0.1,::1", "http_proxy": "http://127.0.0.1:3128",
            "https_proxy": "http://127.0.0.1:3128", "no_proxy": "localhost,127.0.0.1,::1",
            **{name: "/run/claude-bottle/proxy/bundle.pem" for name in (
                "SSL_CERT_FILE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                "NODE_EXTRA_CA_CERTS")}}
        self.assertEqual(spec.name, n.container)
        self.assertEqual(spec.api_body(), {
            "Image": plan.image.tag,
            "Cmd": ["/usr/local/lib/claude-bottle/python3", "-I", "-S", "/usr/local/lib/claude-bottle/pid1.py",
                    "bottle-init", "3128", "/run/claude-bottle/proxy/handoff.sock"],
            "Labels": {"org.claude-bottle.bottle": plan.name, "org.claude-bottle.agent": "dev",
                       "org.claude-bottle.config": "dev",
                       "org.claude-bottle.role": "bottle", "org.claude-bottle.owner": "host:1:2",
                       "org.claude-bottle.user": cleanup.current_user()},
            "User": "1000:1000",
            "Hostname": plan.name,
            "WorkingDir": "/workspace",
            "Env": [f"{k}={v}" for k, v in env.items()],
            "OpenStdin": True, "StdinOnce": True, "AttachStdin": True, "AttachStdout": False,
            "AttachStderr": False, "Tty": False,
            "HostConfig": {
                "NetworkMode": "none",
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
                "Init": False,
                "Memory": 4 * 2**30,
                "MemorySwap": 4 * 2**30,
                "PidsLimit": 1024,
                "Mounts": [{"Type": "volume", "Source": n.proxy_volume, "Target": "/run/claude-bottle/proxy",
                            "ReadOnly": True}],
                "Tmpfs": {"/run/claude-bottle/secrets": "size=1m,mode=0700,uid=1000,gid=1000"},
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
            },
        })

    def test_cpu_limit_and_memory_reservation_from_the_manifest(self):
        b = manifest.Bottle("dev", cpus=1.5, reserve_memory="1g", reserve_cpus=1)
        hc = bottle.bottle_container(make_plan(b=b), "o").api_body()["HostConfig"]
        self.assertEqual((hc["NanoCpus"], hc["MemoryReservation"]), (1_500_000_000, 2**30))
        self.assertNotIn("NanoCpus", bottle.bottle_container(make_plan(), "o").api_body()["HostConfig"])

    def test_a_reservation_above_the_limit_is_named(self):
        for b, field, says in ((manifest.Bottle("dev", memory="1g", reserve_memory="2g"), "reserve.memory",
                                "2g is more than the memory limit (1g): reserve at most that"),
                               (manifest.Bottle("dev", reserve_memory="5g"), "reserve.memory",
                                "5g is more than the memory limit (4g): reserve at most that"),
                               (manifest.Bottle("dev", cpus=1, reserve_cpus=2), "reserve.cpus",
                                "2 is more than the CPU limit (1): reserve at most that")):
            with self.subTest(field=field, says=says):
                b = dataclasses.replace(b, files=(Path("/home/u/claude-bottle.json"),))
                with self.assertRaises(manifest.ManifestError) as ctx:
                    bottle._check_reserve(b)
                self.assertEqual(str(ctx.exception),
                                 f"/home/u/claude-bottle.json: bottles.dev.resources.{field}: {says}")

    def test_no_secret_in_the_payload(self):
        b = manifest.Bottle("dev", env=(manifest.EnvVar("X", "literal", "literal-secret", "f"),))
        spec = bottle.bottle_container(make_plan(b=b), "o")
        self.assertNotIn("literal-secret", repr(spec.api_body()))

    def test_sidecar_payload(self):
        spec = sidecar.container("s", "img", "net", {"l": "1"}, "vol")
        body = spec.api_body()
        self.assertEqual((body["Cmd"], body["User"]), (None, "1000:1000"))
        self.assertEqual((body["OpenStdin"], body["StdinOnce"], body["AttachStdin"]), (True, True, True))
        hc = body["HostConfig"]
        self.assertEqual((hc["NetworkMode"], hc["CapDrop"], hc["Memory"]), ("net", ["ALL"], 768 * 2**20))
        self.assertEqual(hc["Mounts"], [
            {"Type": "volume", "Source": "vol", "Target": "/run/claude-bottle/proxy", "ReadOnly": False}])
        self.assertEqual(hc["Tmpfs"], {"/run/gate": "size=64m,mode=0700,uid=1000,gid=1000"})
        # What pipelock logs, like what a bottle writes, is kept to 20 MB on the host's disk.
        self.assertEqual(hc["LogConfig"], {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}})

    def test_sizes_in_bytes_as_docker_reads_them(self):
        self.assertEqual([docker.size_in_bytes(v) for v in ("4g", "512M", "80m", "1k", "65536")],
                         [4 * 2**30, 512 * 2**20, 80 * 2**20, 1024, 65536])
        for bad in ("", "g", "1.5g", "4t"):
            with self.assertRaises(ValueError):
                docker.size_in_bytes(bad)


class SecretsFileTest(unittest.TestCase):
    def test_values_survive_the_shell(self):
        values = {"A": "plain", "B": "it's $HOME `id` \\ \"q\"", "C": "line1\nline2", "D": ""}
        script = bottle.secrets_file(values).decode() + 'printf "%s\\0" "$A" "$B" "$C" "$D"'
        out = subprocess.run(["sh", "-c", script], capture_output=True, env={}, check=True).stdout
        self.assertEqual(out.split(b"\0")[:-1], [v.encode() for v in values.values()])


class BottleFilesTest(unittest.TestCase):
    def test_skills_prompt_and_secrets_land_as_the_bottle_users(self):
        with tempfile.TemporaryDirectory() as tmp:
            skill = Path(tmp, "review")
            (skill / "refs").mkdir(parents=True)
            (skill / "SKILL.md").write_text("---\nname: review\n---\n")
            (skill / "refs" / "a.md").write_text("A")
            agent = manifest.Agent("dev", "dev", (manifest.Skill("review", skill),), "Be brief.")
            data = bottle.bottle_input(agent, b"export A=b\n")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            self.assertEqual(sorted(members), [
                "home/claude/.claude/skills/review", "home/claude/.claude/skills/review/SKILL.md",
                "home/claude/.claude/skills/review/refs", "home/claude/.claude/skills/review/refs/a.md",
                "home/claude/.config/claude-bottle/prompt.md", "run/claude-bottle/secrets/env"])
            self.assertTrue(all(m.uid == 1000 and m.gid == 1000 for m in members.values()))
            self.assertEqual(members["run/claude-bottle/secrets/env"].mode, 0o600)
            self.assertEqual(tar.extractfile("home/claude/.config/claude-bottle/prompt.md").read(), b"Be brief.")
            self.assertEqual(tar.extractfile("run/claude-bottle/secrets/env").read(), b"export A=b\n")

    def test_managed_settings_pin_where_the_token_goes(self):
        plain = bottle.managed_settings(manifest.Bottle("b"), {})
        self.assertEqual(plain["apiKeyHelper"], "")
        self.assertEqual({k: plain["env"][k] for k in bottle.PINNED_ENV},
                         {"ANTHROPIC_BASE_URL": "https://api.anthropic.com", "ANTHROPIC_AUTH_TOKEN": "",
                          "ANTHROPIC_API_KEY": "", "ANTHROPIC_CUSTOM_HEADERS": ""})
        self.assertEqual(plain["env"]["HTTPS_PROXY"], bottle.PROXY_URL)
        gateway = manifest.Bottle("g", env=(manifest.EnvVar("ANTHROPIC_BASE_URL", "host", "GW", "x"),
                                            manifest.EnvVar("ANTHROPIC_AUTH_TOKEN", "host", "GWKEY", "y")))
        pinned = bottle.managed_settings(gateway, {"ANTHROPIC_BASE_URL": "https://gw.corp", "ANTHROPIC_AUTH_TOKEN": "s3"})
        self.assertEqual(pinned["env"]["ANTHROPIC_BASE_URL"], "https://gw.corp")
        self.assertNotIn("ANTHROPIC_AUTH_TOKEN", pinned["env"])  # a secret: not written to the bottle's disk


class SessionLockTest(unittest.TestCase):
    """A session's owner is a lock its process holds: exact, whatever the pid namespace."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.folder = Path(tmp.name)

    def test_held_while_the_process_lives_and_gone_when_it_ends_however_it_ends(self):
        (self.folder / "sessions").mkdir()
        path = self.folder / "sessions" / "0123456789abcdef.lock"
        holder = hold_lock(path)
        label = cleanup.owner_label(path)
        self.assertTrue(cleanup.owner_alive(label))
        holder.kill()  # SIGKILL: nothing is cleaned up by the holder
        holder.wait()
        self.assertFalse(cleanup.owner_alive(label))
        self.assertFalse(path.exists())  # the one who found it dead tidied the file away

    def test_this_process_holds_its_own(self):
        with cleanup.SessionLock.acquire(self.folder / "sessions") as lock:
            self.assertTrue(cleanup.owner_alive(lock.label()))
            self.assertEqual(lock.path.stat().st_mode & 0o777, 0o600)
        self.assertFalse(cleanup.owner_alive(lock.label()))

    def test_a_label_opens_and_removes_only_a_lock_file_of_this_users(self):
        """Found by attacking it: anyone on a shared engine writes labels, and one naming a file of the user's
        had `ps` and `start` remove it (or, a FIFO, wait for ever)."""
        sessions = self.folder / "sessions"
        sessions.mkdir()
        precious = self.folder / "precious.txt"
        precious.write_text("keep\n")
        fifo = sessions / "0123456789abcdef.lock"
        os.mkfifo(fifo)
        link = sessions / "1123456789abcdef.lock"
        link.symlink_to(precious)
        theirs = sessions / "2123456789abcdef.lock"
        theirs.write_text("")
        if os.getuid() == 0:
            os.chown(theirs, 4242, 4242)
        for path in (precious, fifo, link, sessions / ".." / "precious.txt", theirs if os.getuid() == 0 else fifo):
            with self.subTest(str(path)):
                self.assertTrue(cleanup.owner_alive(cleanup.owner_label(path)))
        self.assertEqual(precious.read_text(), "keep\n")
        self.assertTrue(fifo.exists() and link.is_symlink() and theirs.exists())

    def test_what_cannot_be_judged_here_is_left_alone(self):
        self.assertTrue(cleanup.owner_alive(f"lock:elsewhere.example:{self.folder}/x.lock"))
        self.assertTrue(cleanup.owner_alive("myhost:123:456"))  # an older label: not ours to judge
        self.assertTrue(cleanup.owner_alive(""))

    def test_names_that_could_match_more_than_one_bottle_are_refused(self):
        for bad in ("", "../x", "a/b", "-x", ".", "x" * 81, "a b", "é", "a\n", "a\x1b"):
            with self.subTest(bad), self.assertRaises(BottleError):
                cleanup.check_name(bad)
        self.assertEqual(cleanup.check_name("coder-1a2b3c"), "coder-1a2b3c")


class CleanupTest(unittest.TestCase):
    def obj(self, kind, name, bottle_name, owner, **labels):
        return Found(kind, name, {cleanup.LABEL_BOTTLE: bottle_name, cleanup.LABEL_OWNER: owner, **labels})

    def test_dead_sessions_only_and_never_one_holding_work(self):
        with tempfile.TemporaryDirectory() as tmp, cleanup.SessionLock.acquire(Path(tmp)) as me:
            dead = cleanup.owner_label(Path(tmp, "sessions", "0123456789abcdef.lock"))
            engine = self.engine([
                self.obj("volume", "v-dead", "dead", dead), self.obj("container", "c-dead", "dead", dead),
                self.obj("network", "n-dead", "dead", dead), self.obj("container", "c-live", "live", me.label()),
                self.obj("container", "c-det", "det", dead),
                self.obj("container", "c-half", "half", dead,  # a detached launch killed before its record
                         **{cleanup.LABEL_RECORD: str(Path(tmp, "runs", "half"))}),
                self.obj("container", "c-work", "work", dead, **{workspace.LABEL_REPO: "/repo"}),
                self.obj("network", "n-work", "work", dead),
                # Found by attacking it: a machine of the same name on a shared cluster, with no lock files here.
                self.obj("container", "c-theirs", "theirs", dead, **{cleanup.LABEL_USER: "1000@elsewhere"}),
                self.obj("container", "c-mine", "mine", dead, **{cleanup.LABEL_USER: cleanup.current_user()}),
            ])
            record = Path(tmp, "runs", "det")
            record.mkdir(parents=True)
            (record / "meta.json").write_text("{}")
            for o in engine.objects.values():
                if o.name == "c-det":
                    o.labels[cleanup.LABEL_RECORD] = str(record)
            found, held = cleanup.of_dead_sessions(engine)
            self.assertEqual(held, ["work"])
            cleanup.remove(engine, found)
        self.assertEqual(sorted(c for c in engine.calls if c[0].startswith("remove")),
                         [("remove_container", "c-dead"), ("remove_container", "c-half"), ("remove_container", "c-mine"),
                          ("remove_network", "n-dead"), ("remove_volume", "v-dead")])
        self.assertEqual(sorted(o.name for o in engine.objects.values()),
                         ["c-det", "c-live", "c-theirs", "c-work", "n-work"])

    def test_a_bottle_whose_workspace_never_went_in_holds_no_work(self):
        """A start killed before its copy-in: the bottle has a workspace label but nothing of the agent's."""
        with tempfile.TemporaryDirectory() as tmp:
            dead = cleanup.owner_label(Path(tmp, "sessions", "0123456789abcdef.lock"))
            bottle_role = {cleanup.LABEL_ROLE: "bottle", workspace.LABEL_REPO: "/repo"}
            engine = self.engine([self.obj("container", "cb-empty", "empty", dead, **bottle_role),
                                  self.obj("container", "cb-empty-sidecar", "empty", dead),
                                  self.obj("container", "cb-full", "full", dead, **bottle_role)])
            engine.missing_paths = {("cb-empty", workspace.COPIED_MARK)}
            found, held = cleanup.of_dead_sessions(engine)
            self.assertEqual(held, ["full"])
            self.assertEqual(sorted(o.name for o in found), ["cb-empty", "cb-empty-sidecar"])

    def test_of_bottle(self):
        engine = self.engine([self.obj("container", "a", "x", "d"), self.obj("container", "b", "y", "d")])
        self.assertEqual([o.name for o in cleanup.of_bottle(engine, "y")], ["b"])
        with self.assertRaises(BottleError):
            cleanup.of_bottle(engine, "")  # would match every bottle

    def engine(self, objects):
        engine = FakeEngine()
        engine.objects = {(o.kind, o.name): o for o in objects}
        return engine
