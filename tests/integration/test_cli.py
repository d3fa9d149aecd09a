"""The CLI's entry point against a real engine: bad input is refused with its exact message and creates nothing."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import support

ROOT = Path(__file__).resolve().parents[2]
NO_PROJECT_HINT = "(to use only your home manifest meanwhile, pass --no-project)"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

BAD_MANIFESTS = {
    "malformed JSON": ('{"agents": {"a": {"bottle": "default"}},}',
                       "line 1, column 41: invalid JSON: Expecting property name enclosed in double quotes"),
    "unknown key": ({"agents": {"a": {"bottle": "default", "promt": "x"}}},
                    "agents.a.promt: unknown key 'promt' (expected one of: bottle, model, prompt, skills)"),
    "wrong type": ({"agents": {"a": {"bottle": "default", "skills": "review"}}},
                   "agents.a.skills: must be a list, not a string"),
    "missing bottle": ({"agents": {"a": {"bottle": "nope"}}},
                       "agents.a.bottle: no bottle named 'nope' (bottles: default): "
                       'define it under "bottles" or pick an existing one'),
    "missing skill": ({"agents": {"a": {"bottle": "default", "skills": ["./nowhere"]}}},
                      "agents.a.skills[0]: no skill directory './nowhere' (looked for {dir}/nowhere): name a "
                      "directory under {home}/.claude/skills or give a path relative to the manifest"),
    "invalid host": ({"bottles": {"b": {"egress": {"allowlist": ["ok.com", "bad host"]}}},
                      "agents": {"a": {"bottle": "b"}}},
                     "bottles.b.egress.allowlist[1]: 'bad host': not a host name: use a name like github.com, "
                     "or *.github.com for it and all its subdomains (no scheme, port or path)"),
    "missing IdentityFile": ({"bottles": {"b": {"ssh": [{"Host": "g", "Hostname": "g.com",
                                                         "IdentityFile": "./id_none", "KnownHostKey": KEY}]}},
                              "agents": {"a": {"bottle": "b"}}},
                             "bottles.b.ssh[0].IdentityFile: no such key file {dir}/id_none: "
                             "point IdentityFile at an existing private key"),
}


def docker_state(folder: Path) -> dict:
    """What the CLI run from `folder` made: its objects, and any image of ours."""
    return {"objects": support.objects_of(folder),
            "images": sorted(i.id for i in support.sdk().images.list(filters={"label": "org.claude-bottle.role=image"}))}


def tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


class BadInputCreatesNothingTest(support.IntegrationTest):
    def test_each_bad_manifest(self):
        for name, (content, message) in BAD_MANIFESTS.items():
            for command in (["start", "a"], ["start", "a", "--dry-run", "--json"], ["build"], ["info", "a"]):
                with self.subTest(name, command=command), tempfile.TemporaryDirectory() as tmp:
                    home, project = Path(tmp, "home"), Path(tmp, "project")
                    home.mkdir()
                    project.mkdir()
                    f = project / "claude-bottle.json"
                    f.write_text(content if isinstance(content, str) else json.dumps(content))
                    files_before, docker_before = tree(Path(tmp)), docker_state(Path(tmp))
                    out = subprocess.run(
                        [sys.executable, "-m", "claude_bottle", *command], cwd=project, capture_output=True,
                        text=True, timeout=60,
                        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLAUDE_BOTTLE_HOME": str(home),
                             "CLAUDE_BOTTLE_OAUTH_TOKEN": "sk-ant-oat01-test"})
                    expected = message.format(dir=project, home=home)
                    self.assertEqual((out.returncode, out.stderr, out.stdout),
                                     (3, f"Error: {f}: {expected}\n{NO_PROJECT_HINT}\n", ""))
                    self.assertEqual(tree(Path(tmp)), files_before)
                    self.assertEqual(docker_state(Path(tmp)), docker_before)

    def test_bad_ca_setting_for_build(self):
        with tempfile.TemporaryDirectory() as tmp:
            before = docker_state(Path(tmp))
            out = subprocess.run([sys.executable, "-m", "claude_bottle", "build"], cwd=tmp, capture_output=True,
                                 text=True, timeout=60,
                                 env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "CLAUDE_BOTTLE_HOME": tmp,
                                      "CLAUDE_BOTTLE_CA_CERT": f"{tmp}/missing.pem"})
            self.assertEqual((out.returncode, out.stderr), (3, f"Error: CLAUDE_BOTTLE_CA_CERT: cannot read CA "
                                                               f"certificate file {tmp}/missing.pem: No such file "
                                                               "or directory\n"))
            self.assertEqual(docker_state(Path(tmp)), before)
