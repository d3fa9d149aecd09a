"""A host folder copied into a bottle, and, for a git repository, the agent's work brought back as a branch.

The copy honours .gitignore and never touches the host folder. A repository
travels as a bundle of HEAD (commits only: no remotes, credentials or hooks),
so the bottle works on its own branch; at the end, its commits and any
uncommitted changes come back as branch `bottle/<agent>/<bottle>` through
`git fetch`, which leaves the user's checkout, index and working tree alone.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .docker import Engine
from .errors import BottleError
from .image import BOTTLE_USER, WORKSPACE, owned

STAGING = "/tmp/claude-bottle-workspace"  # in the bottle, while the copy is unpacked
GIT_IDENTITY = ("claude-bottle", "claude-bottle@localhost")


@dataclass(frozen=True)
class Workspace:
    path: Path
    git_root: Path | None  # the repository the folder belongs to, if any
    branch: str | None  # where results come back; None without git or with --no-results

    @property
    def is_git(self) -> bool:
        return self.git_root is not None


def inspect(path: Path, agent: str, bottle_name: str, results: bool = True) -> Workspace:
    """Check `path` and decide how it travels. Raises for a folder that does not exist."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise BottleError(f"--workspace {path}: no such directory: name an existing folder to copy into the bottle")
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    git_root = Path(top.strip()) if top and _git(path, "rev-parse", "--verify", "-q", "HEAD", check=False) else None
    branch = f"bottle/{agent}/{bottle_name}" if git_root and results else None
    return Workspace(path, git_root, branch)


def files(ws: Workspace) -> list[Path]:
    """What is copied: for git, tracked and untracked files that .gitignore does not exclude."""
    if not ws.is_git:
        return sorted(p.relative_to(ws.path) for p in ws.path.rglob("*") if p.is_file() or p.is_symlink())
    out = _git(ws.path, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--full-name", ".")
    prefix = ws.path.relative_to(ws.git_root)
    names = [Path(n) for n in out.split("\0") if n]
    return sorted(
        n.relative_to(prefix) for n in names
        if n.is_relative_to(prefix) and ((ws.git_root / n).is_file() or (ws.git_root / n).is_symlink())
    )


def copy_in(engine: Engine, container: str, ws: Workspace,
            progress: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Copy the workspace into the bottle's /workspace; for git, as a clone on the results branch,
    with the host's uncommitted changes committed first so the agent's work stands apart."""
    listed = files(ws)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # Folders first, owned by the bottle user: the engine would create missing ones as root.
        for folder in sorted({p for rel in listed for p in rel.parents if str(p) != "."}):
            info = owned(tarfile.TarInfo(f"tree/{folder}"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for i, rel in enumerate(listed, 1):
            tar.add(ws.path / rel, arcname=f"tree/{rel}", recursive=False, filter=owned)
            if i % 500 == 0 or i == len(listed):
                progress(i, len(listed))
        if ws.is_git:
            with tempfile.TemporaryDirectory() as tmp:
                bundle = Path(tmp, "repo.bundle")
                _git(ws.path, "bundle", "create", str(bundle), "HEAD")
                tar.add(bundle, arcname="repo.bundle", filter=owned)
                head = _git(ws.path, "rev-parse", "HEAD").strip()
    engine.exec(container, ["mkdir", "-p", f"{STAGING}/tree"], user=BOTTLE_USER)
    engine.put_archive(container, STAGING, buf.getvalue())
    script = _unpack_git_script(ws, head) if ws.is_git else f"cp -a {STAGING}/tree/. {WORKSPACE}/"
    code, out = engine.exec(container, ["sh", "-euc", script + f"; rm -rf {STAGING}"], user=BOTTLE_USER)
    if code != 0:
        raise BottleError(f"copying the workspace into the bottle failed: {out.decode(errors='replace').strip()}")


def bring_back(engine: Engine, container: str, ws: Workspace) -> int:
    """Fetch the bottle's branch into the host repository as `ws.branch`; returns how many commits
    it has beyond the start (0: nothing came back and no branch was made)."""
    if not ws.branch:
        return 0
    name, email = GIT_IDENTITY
    script = (
        f"cd {WORKSPACE}; git add -A; "
        f"git diff --cached --quiet || git -c user.name='{name}' -c user.email='{email}' commit -q "
        "-m 'claude-bottle: uncommitted changes when the bottle ended'; "
        "n=$(git rev-list --count claude-bottle/start..HEAD); echo $n; "
        # From the host's HEAD, which the host has: the bundle then also carries the start commit.
        f"if [ $n -gt 0 ]; then git bundle create -q /tmp/results.bundle claude-bottle/base..HEAD; fi"
    )
    code, out = engine.exec(container, ["sh", "-c", script], user=BOTTLE_USER)
    text = out.decode(errors="replace").strip()
    if code != 0 or not text.splitlines() or not text.splitlines()[-1].isdigit():
        raise BottleError(f"collecting the agent's work from the bottle failed: {text[-500:]}")
    commits = int(text.splitlines()[-1])
    if commits == 0:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp, "results.bundle")
        with tarfile.open(fileobj=io.BytesIO(engine.get_archive(container, "/tmp/results.bundle"))) as tar:
            bundle.write_bytes(tar.extractfile("results.bundle").read())
        _git(ws.git_root, "fetch", "-q", str(bundle), f"HEAD:refs/heads/{ws.branch}")
    return commits


def _unpack_git_script(ws: Workspace, head: str) -> str:
    """Clone the bundle, put the host's working tree over it, commit that as the start."""
    name, email = GIT_IDENTITY
    sub = ws.path.relative_to(ws.git_root)
    target = f"{WORKSPACE}/{sub}" if str(sub) != "." else WORKSPACE
    return (
        f"git clone -q --no-checkout {STAGING}/repo.bundle {STAGING}/clone; "
        f"mv {STAGING}/clone/.git {WORKSPACE}/.git; cd {WORKSPACE}; "
        f"git remote remove origin; git checkout -q -b {ws.branch or 'bottle'} {head}; "
        f"git config user.name '{name}'; git config user.email '{email}'; "
        # The host's deletions and edits win over the clone: its tree is what the user sees.
        f"mkdir -p {target}; "
        f"git ls-files -z {target} | xargs -0 -r rm -f; cp -a {STAGING}/tree/. {target}/; "
        "git add -A; "
        "git diff --cached --quiet || git commit -q -m 'claude-bottle: uncommitted changes on the host at start'; "
        f"git tag claude-bottle/base {head}; git tag claude-bottle/start"
    )


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, check=check)
    except FileNotFoundError:
        if check:
            raise BottleError("git is not installed on this machine: install it to use a git workspace") from None
        return ""
    if out.returncode != 0:
        if check:
            raise BottleError(f"git {' '.join(args[:2])} in {cwd} failed: "
                              f"{out.stderr.decode(errors='replace').strip()}")
        return ""
    return out.stdout.decode(errors="replace")
