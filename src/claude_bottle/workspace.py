"""A host folder copied into a bottle, and the agent's work brought back out of it.

A git repository travels as a bundle of one commit: the host's working tree at
launch (tracked files and untracked ones .gitignore does not exclude), made on
top of HEAD with a scratch index, so the user's index, checkout and branches
are never touched; a hidden ref keeps that commit until the work is back. At
the end, the agent's commits and its uncommitted changes come back as branch
`bottle/<agent>/<bottle>` through a bundle streamed out of the bottle and
`git fetch`, checked before anything is destroyed. A folder that is not a
repository comes back, if anything in it changed, as a new folder beside it.

Everything run in the bottle has a time limit, and our own commit there runs
with the repository's hooks and helper programs switched off: a failing or
hanging hook cannot lose the work or hang the teardown.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .docker import LABEL_PREFIX, Engine, ExecTimeout, OutputTooLarge
from .errors import BottleError
from .image import BOTTLE_USER, WORKSPACE, owned

STAGING = "/tmp/claude-bottle-workspace"  # in the bottle, while the copy is unpacked
# Written (as root, where the agent cannot touch it) once the workspace is in: before that, a bottle holds
# nothing of the agent's, and finishing it brings nothing back.
COPIED_MARK = "/run/claude-bottle/workspace-copied"
GIT_IDENTITY = ("claude-bottle", "claude-bottle@localhost")
HIDDEN_REF = "refs/claude-bottle/{name}"  # holds the start commit in the host repository until the work is back
STEP_SECONDS_VARIABLE = "CLAUDE_BOTTLE_STEP_SECONDS"  # the limit for each command we run in the bottle at the end


def step_seconds() -> int:
    try:
        return max(1, int(os.environ.get(STEP_SECONDS_VARIABLE, "120")))
    except ValueError:
        raise BottleError(f"{STEP_SECONDS_VARIABLE} must be a number of seconds") from None
MAX_RESULT_BYTES = 4 * 2**30  # the most we take out of a bottle
# Our commit in the bottle: no hooks, no fsmonitor, no signing, no editor; whatever the agent configured.
SAFE_GIT = ("git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.untrackedCache=false "
            "-c commit.gpgSign=false -c core.editor=true -c gc.auto=0 "
            f"-c user.name={GIT_IDENTITY[0]} -c user.email={GIT_IDENTITY[1]}")


class WorkNotBack(BottleError):
    """The agent's work could not be brought back; its bottle is kept so that nothing is lost."""

    exit_code = 7


@dataclass(frozen=True)
class Workspace:
    path: Path  # the folder the user named
    git_root: Path | None  # the repository it belongs to, if any
    branch: str | None  # git: where results come back (None with --no-results)
    results_dir: Path | None = None  # not git: where a changed copy comes back (None with --no-results)
    start: str | None = None  # git: the commit the bottle starts from, once made
    digest: str | None = None  # not git: what was copied in, to see whether anything changed

    @property
    def is_git(self) -> bool:
        return self.git_root is not None

    @property
    def subdir(self) -> str:
        """The folder within its repository ("" for the repository itself)."""
        return "" if not self.is_git else self.path.relative_to(self.git_root).as_posix().removeprefix(".")

    @property
    def workdir(self) -> str:
        """Where the agent starts in the bottle: the named folder, at the same place in the repository."""
        return f"{WORKSPACE}/{self.subdir}" if self.subdir else WORKSPACE

    @property
    def brings_back(self) -> bool:
        return bool(self.branch or self.results_dir)


# On the bottle container, so that any process (`stop`, a later `start`) knows where its work goes back to.
LABEL_REPO = LABEL_PREFIX + "results-repo"
_LABELS = {"branch": LABEL_PREFIX + "results-branch", "start": LABEL_PREFIX + "results-start",
           "results_dir": LABEL_PREFIX + "results-dir", "digest": LABEL_PREFIX + "results-digest",
           "path": LABEL_PREFIX + "results-path"}


def labels(ws: Workspace | None) -> dict[str, str]:
    """The labels that carry a workspace's way back; none when nothing comes back."""
    if ws is None or not ws.brings_back:
        return {}
    out = {LABEL_REPO: str(ws.git_root or ws.path)}
    for attr, label in _LABELS.items():
        value = getattr(ws, attr)
        if value is not None:
            out[label] = str(value)
    return out


def from_labels(found: Mapping[str, str]) -> Workspace | None:
    """The workspace of a bottle, from its container's labels (None: nothing comes back)."""
    if LABEL_REPO not in found or _LABELS["path"] not in found:
        return None
    values = {attr: found.get(label) for attr, label in _LABELS.items()}
    is_git = values["branch"] is not None
    return Workspace(path=Path(values["path"]), git_root=Path(found[LABEL_REPO]) if is_git else None,
                     branch=values["branch"], start=values["start"], digest=values["digest"],
                     results_dir=Path(values["results_dir"]) if values["results_dir"] else None)


def inspect(path: Path, agent: str, bottle_name: str, results: bool = True) -> Workspace:
    """Check `path` and decide how it travels and where its work comes back. Touches nothing."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise BottleError(f"--workspace {path}: no such directory: name an existing folder to copy into the bottle")
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    git_root = Path(top.strip()) if top and _git(path, "rev-parse", "--verify", "-q", "HEAD", check=False) else None
    if git_root is None:
        results_dir = path.parent / f"{path.name}.{bottle_name}" if results else None
        return Workspace(path, None, None, results_dir)
    return Workspace(path, git_root, _free_branch(git_root, agent, bottle_name) if results else None)


def _free_branch(repo: Path, agent: str, bottle_name: str) -> str:
    """bottle/<agent>/<bottle>, unless a branch in the way (`bottle`, `bottle/<agent>`) makes it impossible."""
    for name in (f"bottle/{agent}/{bottle_name}", f"bottle-{agent}-{bottle_name}"):
        parts = name.split("/")
        in_the_way = any(_git(repo, "rev-parse", "--verify", "-q", "refs/heads/" + "/".join(parts[:i]), check=False)
                         for i in range(1, len(parts) + 1))
        below = _git(repo, "for-each-ref", "--count=1", "--format=%(refname)", f"refs/heads/{name}/", check=False)
        if not in_the_way and not below.strip() and _git(repo, "check-ref-format", "--branch", name, check=False):
            return name
    raise BottleError(f"no free branch name for the results in {repo} (bottle/{agent}/{bottle_name} and "
                      f"bottle-{agent}-{bottle_name} are both taken): rename one of them")


def files(ws: Workspace) -> list[Path]:
    """What a folder that is not a repository sends: every file and symlink in it."""
    found = []
    for root, dirs, names in os.walk(ws.path):  # symlinked folders travel as links, not followed
        found += [Path(root, n).relative_to(ws.path) for n in names + [d for d in dirs if Path(root, d).is_symlink()]]
    return sorted(found)


def prepare(ws: Workspace, bottle_name: str) -> Workspace:
    """Before the bottle exists: for git, the start commit (and the hidden ref that keeps it); otherwise,
    the digest of what is copied in."""
    if not ws.is_git:
        return replace(ws, digest=_tree_digest(_host_entries(ws.path, files(ws))))
    name, email = GIT_IDENTITY
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
           "GIT_COMMITTER_EMAIL": email}
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp, "index"))
        _git(ws.git_root, "read-tree", "HEAD", env=env)
        _git(ws.git_root, "add", "-A", env=env)
        tree = _git(ws.git_root, "write-tree", env=env).strip()
        start = _git(ws.git_root, "commit-tree", tree, "-p", "HEAD", "-m",
                     "claude-bottle: the host's working tree at start", env=env).strip()
    _git(ws.git_root, "update-ref", HIDDEN_REF.format(name=bottle_name), start)
    return replace(ws, start=start)


def release(ws: Workspace, bottle_name: str) -> None:
    """Drop the hidden ref of a bottle whose work is back (or was thrown away)."""
    if ws.is_git:
        _git(ws.git_root, "update-ref", "-d", HIDDEN_REF.format(name=bottle_name), check=False)


def copy_in(engine: Engine, container: str, ws: Workspace, bottle_name: str,
            progress: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Fill the bottle's /workspace: a clone of the start commit on the results branch (only the named
    subfolder checked out), or a copy of the folder."""
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            if ws.is_git:
                with tempfile.TemporaryDirectory() as tmp:
                    bundle = Path(tmp, "repo.bundle")
                    _git(ws.git_root, "bundle", "create", "-q", str(bundle), HIDDEN_REF.format(name=bottle_name))
                    tar.add(bundle, arcname="repo.bundle", filter=owned)
                progress(1, 1)
            else:
                listed = files(ws)
                # Folders first, the bottle user's: the engine would make missing ones root's.
                for folder in ["", *sorted({str(p) for rel in listed for p in rel.parents if str(p) != "."})]:
                    info = owned(tarfile.TarInfo(f"tree/{folder}".rstrip("/")))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                for i, rel in enumerate(listed, 1):
                    tar.add(ws.path / rel, arcname=f"tree/{rel}", recursive=False, filter=_plain)
                    if i % 500 == 0 or i == len(listed):
                        progress(i, len(listed))
        archive.seek(0)
        _in_bottle(engine, container, f"mkdir -p {STAGING}", "preparing the workspace")
        engine.put_archive(container, STAGING, archive)
    script = _unpack_git_script(ws, bottle_name) if ws.is_git else f"cp -a {STAGING}/tree/. {WORKSPACE}/"
    _in_bottle(engine, container, f"{script}; rm -rf {STAGING}", "copying the workspace into the bottle")
    mark = io.BytesIO()
    with tarfile.open(fileobj=mark, mode="w") as tar:
        tar.addfile(tarfile.TarInfo(COPIED_MARK.rsplit("/", 1)[1]))  # root's, as tar entries are
    engine.put_archive(container, COPIED_MARK.rsplit("/", 1)[0], mark.getvalue())


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files, folders and links travel, as the bottle user's; sockets, pipes and devices do not."""
    return owned(info) if info.isfile() or info.isdir() or info.issym() else None


def _unpack_git_script(ws: Workspace, bottle_name: str) -> str:
    """A repository on the results branch at the start commit; for a subfolder, only it is checked out."""
    q = shlex.quote
    name, email = GIT_IDENTITY
    branch = q(ws.branch or f"bottle/{bottle_name}")
    # Only the named folder, nothing beside it (cone mode would add the repository's top-level files).
    pattern = "/" + "".join("\\" + c if c in "*?[]\\!#" else c for c in ws.subdir) + "/"
    sparse = f"git sparse-checkout set --no-cone -- {q(pattern)}; " if ws.subdir else ""
    return (
        f"cd {WORKSPACE}; git init -q -b {branch} .; "
        f"git config user.name {q(name)}; git config user.email {q(email)}; "
        f"git fetch -q --update-head-ok {STAGING}/repo.bundle {HIDDEN_REF.format(name=bottle_name)}:refs/heads/{branch}; "
        f"{sparse}git read-tree -mu HEAD"
    )


@dataclass(frozen=True)
class Brought:
    """What came back: commits on a branch, or a folder."""

    branch: str | None = None
    commits: int = 0
    folder: Path | None = None
    skipped: tuple[str, ...] = ()  # entries of a folder that pointed out of it, left out


def bring_back(engine: Engine, container: str, ws: Workspace, bottle_name: str) -> Brought:
    """Bring the agent's work out of the bottle, checked. Raises WorkNotBack (and leaves the bottle alone)
    if any step fails or runs out of time, so the caller keeps the bottle."""
    try:
        if engine.exec(container, ["test", "-e", COPIED_MARK], timeout=30)[0] != 0:
            return Brought()  # stopped while it was being made: nothing of the agent's is in it
        return _bring_back_git(engine, container, ws, bottle_name) if ws.is_git else \
            _bring_back_folder(engine, container, ws)
    except WorkNotBack:
        raise
    except (BottleError, OSError) as e:
        raise WorkNotBack(str(e)) from None


def _bring_back_git(engine: Engine, container: str, ws: Workspace, bottle_name: str) -> Brought:
    # The agent's uncommitted changes become one last commit, made with its hooks and helpers switched off.
    head = _in_bottle(engine, container, (
        f"cd {WORKSPACE}; {SAFE_GIT} add -A; "
        f"{SAFE_GIT} diff --cached --quiet || {SAFE_GIT} commit --no-verify -q "
        "-m 'claude-bottle: uncommitted changes when the bottle ended'; "
        f"{SAFE_GIT} rev-parse --verify HEAD"), "committing the agent's uncommitted changes").strip()
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        raise WorkNotBack(f"the bottle's repository has no usable HEAD ({head[-200:]!r})")
    if head == ws.start:
        return Brought()
    ref = f"refs/heads/{ws.branch}"
    if _has_commit(ws.git_root, head):  # the agent went back into history the host already has
        _git(ws.git_root, "update-ref", ref, head, "")
        return Brought(branch=ws.branch, commits=0)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp, "results.bundle")
        with bundle.open("wb") as sink:
            limit = step_seconds()
            code, err = engine.exec_to(
                container, ["timeout", "-k", "5", str(limit), "git", "-C", WORKSPACE, "-c",
                            "core.hooksPath=/dev/null", "bundle", "create", "-q", "-", "HEAD", "--not", ws.start],
                sink, user=BOTTLE_USER, timeout=limit + 10, limit=MAX_RESULT_BYTES)
        if code != 0:
            raise WorkNotBack(f"bundling the agent's commits failed (exit {code}): {_tail(err)}")
        _git(ws.git_root, "bundle", "verify", "-q", str(bundle))
        _git(ws.git_root, "fetch", "-q", "--no-tags", "--no-write-fetch-head", str(bundle), f"HEAD:{ref}")
    if _git(ws.git_root, "rev-parse", "--verify", "-q", ref).strip() != head:
        raise WorkNotBack(f"branch {ws.branch} in {ws.git_root} does not hold the bottle's HEAD {head[:12]}")
    commits = int(_git(ws.git_root, "rev-list", "--count", f"{ws.start}..{ref}").strip() or 0)
    return Brought(branch=ws.branch, commits=commits)


def _bring_back_folder(engine: Engine, container: str, ws: Workspace) -> Brought:
    with tempfile.TemporaryFile() as archive:
        engine.get_archive_to(container, WORKSPACE, archive, limit=MAX_RESULT_BYTES)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            members = [m for m in tar.getmembers() if "/" in m.name]  # under workspace/
            if _tree_digest(_tar_entries(tar, members)) == ws.digest:
                return Brought()
            if ws.results_dir.exists():
                raise WorkNotBack(f"{ws.results_dir} already exists: move it away, then stop the bottle again")
            ws.results_dir.mkdir()
            for m in members:
                m.name = m.name.split("/", 1)[1]
            skipped: list[str] = []

            def safe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
                # The 'data' filter refuses absolute paths, .., links out of the folder, devices, set-id bits.
                try:
                    return tarfile.data_filter(member, dest)
                except tarfile.FilterError:
                    skipped.append(member.name)
                    return None

            tar.extractall(ws.results_dir, members=members, filter=safe)
    return Brought(folder=ws.results_dir, skipped=tuple(skipped))


def _has_commit(repo: Path, sha: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True).returncode == 0


def _host_entries(root: Path, listed: list[Path]) -> dict[str, str]:
    entries = {}
    for rel in listed:
        p = root / rel
        if p.is_symlink():
            entries[rel.as_posix()] = "l:" + os.readlink(p)
        elif p.is_file():
            entries[rel.as_posix()] = f"f{bool(p.stat().st_mode & 0o100):d}:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return entries


def _tar_entries(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> dict[str, str]:
    entries = {}
    for m in members:
        rel = m.name.split("/", 1)[1]
        if m.issym():
            entries[rel] = "l:" + m.linkname
        elif m.isfile():
            entries[rel] = f"f{bool(m.mode & 0o100):d}:" + hashlib.sha256(tar.extractfile(m).read()).hexdigest()
    return entries


def _tree_digest(entries: Mapping[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(entries.items())).encode()).hexdigest()


def _in_bottle(engine: Engine, container: str, script: str, what: str) -> str:
    """Run `script` as the bottle's user with a time limit; its stdout, or WorkNotBack-worthy errors."""
    out = io.BytesIO()
    limit = step_seconds()
    try:
        code, err = engine.exec_to(container, ["timeout", "-k", "5", str(limit), "sh", "-euc", script],
                                   out, user=BOTTLE_USER, timeout=limit + 10)
    except (ExecTimeout, OutputTooLarge) as e:
        raise BottleError(f"{what}: {e}") from None
    if code != 0:
        why = "it did not finish in time" if code in (124, 137) else f"exit {code}"
        raise BottleError(f"{what} failed ({why}): {_tail(err or out.getvalue())}")
    return out.getvalue().decode(errors="replace")


def _tail(data: bytes) -> str:
    return " ".join(data.decode(errors="replace").split())[-400:]


def _git(cwd: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None) -> str:
    """git in a host repository; a failure is a BottleError with git's own words, never a traceback."""
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True,
                             env={**os.environ, **env} if env else None)
    except FileNotFoundError:
        if check:
            raise BottleError("git is not installed on this machine: install it to use a git workspace") from None
        return ""
    if out.returncode != 0:
        if check:
            raise BottleError(f"git {' '.join(args[:2])} in {cwd} failed: "
                              f"{' '.join(out.stderr.decode(errors='replace').split())[-400:]}")
        return ""
    return out.stdout.decode(errors="replace")
