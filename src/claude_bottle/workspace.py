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

import io
import itertools
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from .docker import LABEL_PREFIX, Engine, ExecTimeout, OutputTooLarge
from . import lazy
from .errors import BottleError, EngineLost
from .paths import existing_folder
from .image import BOTTLE_USER, PRIVATE_BIN, WORKSPACE, owned

base64 = lazy.Module("base64")
resource = lazy.Module("resource")
shlex = lazy.Module("shlex")
shutil = lazy.Module("shutil")
subprocess = lazy.Module("subprocess")
hashlib = lazy.Module("hashlib")
tarfile = lazy.Module("tarfile")
tempfile = lazy.Module("tempfile")
unicodedata = lazy.Module("unicodedata")

STAGING = "/tmp/claude-bottle-workspace"  # in the bottle, while the copy is unpacked
# Written (as root, where the agent cannot touch it) once the workspace is in: before that, a bottle holds
# nothing of the agent's, and finishing it brings nothing back.
COPIED_MARK = "/run/claude-bottle/workspace-copied"
LABEL_COPIED = LABEL_PREFIX + "workspace-copied"  # the same, on Kubernetes: an annotation of the bottle's pod
GIT_IDENTITY = ("claude-bottle", "claude-bottle@localhost")
HIDDEN_REF = "refs/claude-bottle/{name}"  # holds the start commit in the host repository until the work is back
STEP_SECONDS_VARIABLE = "CLAUDE_BOTTLE_STEP_SECONDS"  # the limit for each command we run in the bottle at the end


def step_seconds() -> int:
    return seconds_setting(STEP_SECONDS_VARIABLE, 120, least=1)


def seconds_setting(variable: str, default: int, least: int = 0) -> int:
    """A number of seconds from the environment, `least` to a week (more would overflow the timers it sets)."""
    value = os.environ.get(variable, str(default))
    try:
        seconds = int(value)
    except ValueError:
        seconds = None
    if seconds is None or not least <= seconds <= WEEK:
        raise BottleError(f"{variable}={value}: must be a whole number of seconds from {least} to {WEEK} (a week)")
    return seconds


WEEK = 7 * 24 * 3600
MAX_RESULT_BYTES = 4 * 2**30  # the most we take out of a bottle


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
        if not self.is_git:
            return ""
        rel = self.path.relative_to(self.git_root).as_posix()
        return "" if rel == "." else rel  # a folder named .github keeps its dot

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
    path = existing_folder(path, "--workspace")
    if not path.is_dir():
        raise BottleError(f"--workspace {path}: no such directory: name an existing folder to copy into the bottle")
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    git_root = Path(top.strip()) if top and _git(path, "rev-parse", "--verify", "-q", "HEAD", check=False) else None
    if git_root is not None and git_root != path and not _git(git_root, "ls-tree", "-r", "--name-only", "HEAD", "--",
                                                             path.relative_to(git_root).as_posix(), check=False):
        # A folder of which the repository around it has committed nothing (a project under a home folder
        # kept in git, an ignored folder) is not part of that repository's work: it travels as a plain folder,
        # and nothing else of the repository goes with it.
        git_root = None
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

    def unreadable(e: OSError) -> None:  # os.walk would pass over it, and it would be missing in the bottle
        raise _unreadable(e)

    for root, dirs, names in os.walk(ws.path, onerror=unreadable):  # symlinked folders travel as links
        found += [Path(root, n).relative_to(ws.path) for n in names + [d for d in dirs if Path(root, d).is_symlink()]]
    return sorted(found)


def prepare(ws: Workspace, bottle_name: str, origin: Mapping[str, str] | None = None) -> Workspace:
    """Before the bottle exists: for git, the start commit (and the hidden ref that keeps it, whose reflog
    says who made it for which engine: `origin`, read back by hidden_refs); otherwise, the digest of what is
    copied in."""
    try:
        return _prepare(ws, bottle_name, origin)
    except OSError as e:
        within = (isinstance(e.filename, (str, bytes))
                  and Path(os.fsdecode(e.filename)).is_relative_to(ws.git_root or ws.path))
        if not within:  # not the workspace's: unexpected, and its traceback says where
            raise
        raise _unreadable(e) from None


def _unreadable(e: OSError) -> BottleError:
    return BottleError(f"cannot read {e.filename} in the workspace ({e.strerror or e}): make it readable to you, "
                       f"or name a folder without it with --workspace")


def _prepare(ws: Workspace, bottle_name: str, origin: Mapping[str, str] | None) -> Workspace:
    if not ws.is_git:
        return replace(ws, digest=_tree_digest(_host_entries(ws.path, files(ws))))
    name, email = GIT_IDENTITY
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
           "GIT_COMMITTER_EMAIL": email}
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp, "index"))
        _git(ws.git_root, "read-tree", "HEAD", env=env)
        # Of what is not committed, only the named folder's goes in: the rest of the tree is not the bottle's.
        _add_all(ws.git_root, env, ws.subdir)
        tree = _git(ws.git_root, "write-tree", env=env).strip()
        start = _git(ws.git_root, "commit-tree", tree, "-p", "HEAD", "-m",
                     "claude-bottle: the host's working tree at start", env=env).strip()
    _git(ws.git_root, "update-ref", "--create-reflog", "-m", _ORIGIN + _encoded(origin or {}),
         HIDDEN_REF.format(name=bottle_name), start)
    return replace(ws, start=start)


MAX_NESTED = 32  # repositories inside repositories inside the workspace, at most


def _add_all(repo: Path, env: Mapping[str, str], subdir: str = "") -> None:
    """`git add -A` of `subdir` into the index of `env`, except that a repository inside it that HEAD does
    not hold as a submodule (a clone or a `git init` in a subfolder), which git would add as a gitlink (an
    empty folder in the bottle) or refuse (one without a commit), or take for a plain folder (one that HEAD
    has files in), goes in as its files (see _inner_tree)."""
    where = f":(literal){subdir}" if subdir else "."
    limit = step_seconds()  # git waits for ever on a .gitignore that is a pipe
    listed = _git(repo, "ls-files", "-z", "-o", "--exclude-standard", "--", where, env=env, fs=True,
                  timeout=limit).split("\0")
    nested = {entry.rstrip("/") for entry in listed if entry.endswith("/")}  # how ls-files shows one
    # A tracked file that has become a repository shows as changed instead; the exclusion, without a final
    # slash, covers its index entry too.
    changed = _git(repo, "ls-files", "-z", "-m", "-d", "--", where, env=env, fs=True, timeout=limit).split("\0")
    made = [path for path in changed if path and _is_repository(repo, path)]
    if made:  # a submodule whose checked-out commit moved shows as changed too: it stays a submodule
        staged = _git(repo, "ls-files", "-z", "-s", "--", *(f":(literal){p}" for p in made), env=env, fs=True)
        submodules = {entry.partition("\t")[2] for entry in staged.split("\0") if entry.startswith("160000 ")}
        nested |= set(made) - submodules
    tracked = _git(repo, "ls-files", "-z", "--", where, env=env, fs=True, timeout=limit).split("\0")
    held = _held(repo, filter(None, tracked), below=subdir)
    nested = sorted(nested | held.keys())
    _git(repo, "add", "-A", "--", where, *(f":(exclude,literal){path}" for path in nested), env=env, timeout=limit)
    if nested:
        git_dir = _git(repo, "rev-parse", "--absolute-git-dir", fs=True).strip()
        _graft(repo, {**env, "GIT_DIR": git_dir}, nested, 1, held)


def _held(folder: Path, tracked: Iterable[str], below: str = "") -> dict[str, list[str]]:
    """The folders (below `below`) that hold paths an index of `folder` lists and have since become
    repositories of their own (a `git init` in a tracked folder), each the outermost such, with the paths
    it holds, relative to it. Git takes such a folder for a plain one; its own rules must judge what is
    untracked in it, and what the index around it tracks there must still go in."""
    start = len(below.split("/")) if below else 0
    is_repository: dict[str, bool] = {}
    holders: dict[str, str] = {}  # by the folder a path is in: one index lists many paths of a folder

    def holder(parent: str) -> str:
        if parent not in holders:
            parts, holders[parent] = parent.split("/"), ""
            for i in range(start + 1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub not in is_repository:  # most folders have no .git: one system call says so
                    is_repository[sub] = (os.path.lexists(os.path.join(folder, sub, ".git"))
                                          and _is_repository(folder, sub))
                if is_repository[sub]:
                    holders[parent] = sub
                    break
        return holders[parent]

    held: dict[str, list[str]] = {}
    for path in tracked:
        parent = path.rpartition("/")[0]
        if parent and (sub := holder(parent)):
            held.setdefault(sub, []).append(path[len(sub) + 1:])
    return held


def _graft(folder: Path, env: Mapping[str, str], nested: list[str], depth: int,
           held: Mapping[str, list[str]]) -> None:
    """Put each inner repository of `folder` (paths relative to it) into the index of `env` as a tree,
    with the paths of it that `held` names for it (see _held)."""
    if nested and depth > MAX_NESTED:
        raise BottleError(f"{folder / nested[0]} is a repository inside more than {MAX_NESTED} others in the "
                          f"workspace: flatten it, or name a folder further down with --workspace")
    for path in nested:
        tree = _inner_tree(folder / path, env, depth, held.get(path, []))
        _git(folder, "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", f":(literal){path}", env=env)
        _git(folder, "read-tree", f"--prefix={path}/", tree, env=env)


def _inner_tree(folder: Path, env: Mapping[str, str], depth: int, also: list[str]) -> str:
    """A tree of what the repository at `folder` holds: the files it tracks (ignored or not) and those its
    own ignore rules let through, without its .git. Nothing of its own config takes part (it may come from
    an unpacked archive, or from a bottle's work brought back as a folder): git reads its index and ignore
    files as data (see _inner_files), and the files are added by the workspace repository's git (GIT_DIR
    in `env`) with `folder` as its work tree, into a scratch index, its objects going to the workspace
    repository; the user's repositories, indexes and files stay as they are. `also`: paths in it that the
    repository around it tracks, which go in as if it tracked them."""
    with tempfile.TemporaryDirectory() as tmp:
        files, nested, held = _inner_files(folder, Path(tmp), also)
        # A sparse checkout of the workspace repository would judge these paths as if they were its own.
        inner = {**env, "GIT_INDEX_FILE": str(Path(tmp, "index")), "GIT_WORK_TREE": str(folder),
                 "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.sparseCheckout", "GIT_CONFIG_VALUE_0": "false"}
        if files:
            listing = Path(tmp, "files")
            listing.write_bytes(b"\0".join(os.fsencode(f) for f in sorted(set(files))))
            # Literal for this command only: the `:(literal)` of the commands after it would be names then.
            _git(folder, "add", "-f", f"--pathspec-from-file={listing}", "--pathspec-file-nul",
                 env={**inner, "GIT_LITERAL_PATHSPECS": "1"}, timeout=step_seconds())
        _graft(folder, inner, sorted(set(nested)), depth + 1, held)
        return _git(folder, "write-tree", env=inner).strip()


def _inner_files(folder: Path, tmp: Path, also: list[str]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The files of the repository at `folder` that go in, and the repositories inside it (with what each
    holds that is tracked around it: see _held), as its own `git ls-files` would list them, but read by a
    git whose repository is an empty one of ours: its index (GIT_INDEX_FILE) and ignore files are data then,
    and nothing its config says runs or is fetched (a "promisor" remote would run a command of its choosing
    to fetch a missing object)."""
    git_dir = _git_dir_of(folder)
    if git_dir is None:
        raise BottleError(f"{folder} stopped being a repository while the workspace was read: try again")
    scratch = tmp / "git"
    for sub in ("objects", "refs"):
        (scratch / sub).mkdir(parents=True)
    (scratch / "HEAD").write_text("ref: refs/heads/none\n")
    common = _common_dir(git_dir)
    # Its index names objects by its own hash: one of another length is read as garbage, or refused.
    if _object_format(common / "config", scratch) == "sha256":
        (scratch / "config").write_text("[core]\n\trepositoryformatversion = 1\n"
                                        "[extensions]\n\tobjectformat = sha256\n")
    for shared in git_dir.glob("sharedindex.*"):  # a split index's other part, looked for beside GIT_DIR
        if shared.is_file():
            (scratch / shared.name).symlink_to(shared)
    env = {"GIT_DIR": str(scratch), "GIT_WORK_TREE": str(folder), "GIT_INDEX_FILE": str(git_dir / "index")}
    excludes = [f"--exclude-from={path}" for path in [_inner_excludes(common)] if path]
    limit = step_seconds()
    # A sparse index lists what is checked out (git cannot expand its folders without the repository's
    # objects, and says so on stderr): nothing else is there to go in. (`--sparse` would need git 2.35.)
    tracked = _git(folder, "ls-files", "-z", "-s", env=env, fs=True, timeout=limit).split("\0")
    untracked = _git(folder, "ls-files", "-z", "-o", "--exclude-standard", *excludes, env=env, fs=True,
                     timeout=limit).split("\0")
    entries = [entry.partition("\t")[::2] for entry in tracked] + [("", path) for path in also]
    held = _held(folder, (path for _, path in entries if path))

    def in_held(path: str) -> bool:
        parts = path.split("/")
        return any("/".join(parts[:i]) in held for i in range(1, len(parts)))

    files, nested = [], list(held)
    for mode, path in entries:
        if not path or in_held(path):
            continue
        if _through_link(folder, path):  # a folder of it made a link since: what is there is not its
            continue
        if _git_dir_of(folder / path):  # its submodule checked out, or a file it tracks made a repository
            nested.append(path)
        elif mode.startswith("160000 "):  # a submodule not checked out: nothing there
            continue
        elif os.path.islink(folder / path) or os.path.isfile(folder / path):  # not deleted or made a folder since
            files.append(path)
    for path in filter(None, untracked):
        if in_held(path):
            continue
        if path.endswith("/"):
            nested.append(path.rstrip("/"))
        else:
            files.append(path)
    return files, nested, held


def _common_dir(git_dir: Path) -> Path:
    """Where the repository at `git_dir` keeps what its worktrees share (config, info/exclude): the folder
    its commondir names (a worktree's main repository), or itself."""
    try:
        if not (git_dir / "commondir").is_file():
            return git_dir
        with open(git_dir / "commondir", "rb") as f:  # only its start: it may be huge (sparse)
            named = os.fsdecode(f.read(4096).strip())
    except OSError as e:
        raise BottleError(f"cannot read {git_dir / 'commondir'}, of a repository in the workspace: "
                          f"{e.strerror or e}") from None
    if "\0" in named:
        raise BottleError(f"{git_dir / 'commondir'}, of a repository in the workspace, does not name a folder: "
                          "fix or remove it")
    return git_dir / named


def _object_format(config: Path, scratch: Path) -> str:
    """The object format a repository's config declares, read as data by a git whose repository is
    `scratch` (nothing of that config is used but these two values)."""
    def value(key: str) -> str:
        return _git(scratch, "config", "--no-includes", "-f", str(config), "--get", key, check=False,
                    env={"GIT_DIR": str(scratch)}, timeout=step_seconds()).strip()

    if value("core.repositoryformatversion") not in ("1", "01"):  # extensions count from version 1 on
        return "sha1"
    said = value("extensions.objectformat") or "sha1"
    if said not in ("sha1", "sha256"):
        raise BottleError(f"{config}, of a repository in the workspace, names an object format git does not know "
                          f"({said[:40]!r}): fix it, or remove that repository from the workspace")
    return said


def _inner_excludes(common: Path) -> Path | None:
    """The repository's own info/exclude (a worktree's is its main repository's: `common`), if it has one."""
    path = common / "info" / "exclude"
    try:
        if stat.S_ISREG(path.stat().st_mode):
            return path
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise BottleError(f"cannot read {path}, the ignore rules of a repository in the workspace: "
                          f"{e.strerror or e}") from None
    raise BottleError(f"{path}, the ignore rules of a repository in the workspace, is not a file (git would wait "
                      "on it, or skip rules meant to keep files out of the bottle): make it a file, or remove it")


def _git_dir_of(folder: Path) -> Path | None:
    """The repository folder of `folder` if git takes it for a repository of its own (a .git folder, or a
    .git file naming one), else None."""
    dot_git = folder / ".git"
    if folder.is_symlink() or not folder.is_dir():
        return None
    if dot_git.is_dir():
        return dot_git
    try:
        if not dot_git.is_file() or dot_git.stat().st_size > 2**20:  # git's limit: a huge (sparse) one is not
            return None
        with dot_git.open("rb") as f:
            said = f.read(4096)
    except OSError:
        return None
    target = os.fsdecode(said.removeprefix(b"gitdir: ").strip()) if said.startswith(b"gitdir: ") else ""
    return Path(folder, target) if target and Path(folder, target).is_dir() else None


def _is_repository(folder: Path, path: str) -> bool:
    """Whether `path` (relative to `folder`) is a repository of its own, reached without passing a symlink:
    an index lists paths, and one whose folder has become a link to elsewhere (a repository of the user's
    outside the workspace) must not bring what is there into the bottle."""
    return not _through_link(folder, path) and _git_dir_of(folder / path) is not None


def _through_link(folder: Path, path: str) -> bool:
    """Whether a folder on the way from `folder` to `path` is a symlink (git itself will not add a path
    beyond one)."""
    here = folder
    for part in PurePosixPath(path).parts[:-1]:
        here = here / part
        if here.is_symlink():
            return True
    return False


# Git folds runs of spaces in a reflog message: the origin travels encoded.
_ORIGIN = "claude-bottle start "


def _encoded(origin: Mapping[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(dict(origin)).encode()).decode()


def hidden_refs(repo: Path) -> dict[str, dict[str, str] | None]:
    """The bottles that hold a start commit in `repo`, each with the origin prepare() recorded (None if
    it cannot be read: left alone)."""
    found = {}
    for ref in _git(repo, "for-each-ref", "--format=%(refname)", HIDDEN_REF.format(name=""), check=False).split():
        name = ref.removeprefix(HIDDEN_REF.format(name=""))
        said = _git(repo, "reflog", "show", "--format=%gs", ref, "--", check=False).strip().splitlines()
        try:
            origin = json.loads(base64.urlsafe_b64decode(said[-1].removeprefix(_ORIGIN)))
        except (IndexError, ValueError, RecursionError):
            origin = None
        well_formed = isinstance(origin, dict) and all(isinstance(v, str) for v in origin.values())
        found[name] = origin if said and said[-1].startswith(_ORIGIN) and well_formed else None
    return found


def release(ws: Workspace, bottle_name: str) -> None:
    """Drop the hidden ref of a bottle whose work is back (or was thrown away)."""
    if ws.is_git:
        drop_hidden_ref(ws.git_root, bottle_name)


def drop_hidden_ref(repo: Path, bottle_name: str) -> None:
    _git(repo, "update-ref", "-d", HIDDEN_REF.format(name=bottle_name), check=False)
    _drop(repo, INCOMING.format(name=bottle_name))  # what a stop killed while it landed the work may have left


def copy_in(engine: Engine, container: str, ws: Workspace, bottle_name: str,
            progress: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Fill the bottle's /workspace: a clone of the start commit on the results branch (only the named
    subfolder checked out), or a copy of the folder."""
    shallow = _shallow(ws.git_root) if ws.is_git else []
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            if ws.is_git:
                with tempfile.TemporaryFile() as bundle:
                    _git(ws.git_root, "bundle", "create", "-q", "-", HIDDEN_REF.format(name=bottle_name),
                         stdout=bundle)
                    info = owned(tarfile.TarInfo("repo.bundle"))
                    info.size, info.mode = bundle.seek(0, io.SEEK_END), 0o644
                    bundle.seek(0)
                    tar.addfile(info, bundle)
                if shallow:  # a file, not the script's text: a clone of many branches has thousands
                    listed = "".join(f"{sha}\n" for sha in shallow).encode()
                    info = owned(tarfile.TarInfo("shallow"))
                    info.size, info.mode = len(listed), 0o644
                    tar.addfile(info, io.BytesIO(listed))
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
    script = _unpack_git_script(ws, bottle_name, bool(shallow)) if ws.is_git else f"cp -a {STAGING}/tree/. {WORKSPACE}/"
    _in_bottle(engine, container, f"{script}; rm -rf {STAGING}", "copying the workspace into the bottle")
    if engine.kind == "kubernetes":  # no root in a pod: the mark goes on the pod itself
        engine.annotate(container, LABEL_COPIED, "1")
        return
    mark = io.BytesIO()
    with tarfile.open(fileobj=mark, mode="w") as tar:
        tar.addfile(tarfile.TarInfo(COPIED_MARK.rsplit("/", 1)[1]))  # root's, as tar entries are
    engine.put_archive(container, COPIED_MARK.rsplit("/", 1)[0], mark.getvalue())


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files, folders and links travel, as the bottle user's; sockets, pipes and devices do not."""
    return owned(info) if info.isfile() or info.isdir() or info.issym() else None


def _shallow(repo: Path) -> list[str]:
    """The commits a shallow clone holds without their parents (`git clone --depth`, as CI checkouts often
    are). The bottle's repository must say the same of them: git there would take the parents a bundle of
    such a history lacks for objects lost, and refuse it."""
    path = Path(_git(repo, "rev-parse", "--git-path", "shallow", fs=True).strip())
    try:
        listed = (repo / path).read_text(errors="replace").split()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise _unreadable(e) from None
    return [sha for sha in listed if len(sha) in (40, 64) and all(c in "0123456789abcdef" for c in sha)]


def _unpack_git_script(ws: Workspace, bottle_name: str, shallow: bool = False) -> str:
    """A repository on the results branch at the start commit; for a subfolder, only it is checked out.
    `shallow`: the host's repository is shallow, and the archive says which commits have no parents here."""
    q = shlex.quote
    name, email = GIT_IDENTITY
    branch = q(ws.branch or f"bottle/{bottle_name}")
    # Only the named folder, nothing beside it (cone mode would add the repository's top-level files).
    pattern = "/" + "".join("\\" + c if c in "*?[]\\!#" else c for c in ws.subdir) + "/"
    sparse = f"git sparse-checkout set --no-cone -- {q(pattern)}; " if ws.subdir else ""
    return (
        f"cd {WORKSPACE}; git init -q -b {branch} .; "
        f"git config user.name {q(name)}; git config user.email {q(email)}; "
        + (f"cp {STAGING}/shallow .git/shallow; " if shallow else "") +
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
    renamed: tuple[str, ...] = ()  # .git folders and files of a folder (and HEADs), come back with RENAMED_SUFFIX
    renamed_as: tuple[tuple[str, str], ...] = ()  # of those, each that came back as another name than that
    clashed: tuple[str, ...] = ()  # entries the agent named as we name what is renamed: left out
    extra: tuple[str, ...] = ()  # the bottle's other branches and stash, brought back beside `branch`


def copied(engine: Engine, container: str) -> bool:
    """Whether the workspace is in the bottle (before that, it holds nothing of the agent's)."""
    if engine.kind == "kubernetes":
        state = engine.container(container)
        return state is not None and state.labels.get(LABEL_COPIED) == "1"
    return engine.path_exists(container, COPIED_MARK)


def bring_back(engine: Engine, container: str, ws: Workspace, bottle_name: str) -> Brought:
    """Bring the agent's work out of the bottle, checked. Raises WorkNotBack (and leaves the bottle alone)
    if any step fails or runs out of time, so the caller keeps the bottle."""
    try:
        if not copied(engine, container):
            return Brought()  # stopped while it was being made: nothing of the agent's is in it
        return _bring_back_git(engine, container, ws, bottle_name) if ws.is_git else \
            _bring_back_folder(engine, container, ws)
    except BaseException as e:
        _thaw(engine, container)  # the bottle is kept: what the snapshot stopped goes on
        # The engine gone (restarting) is no reason to give up: the session waits for it and tries again.
        if isinstance(e, (WorkNotBack, EngineLost)) or not isinstance(e, (BottleError, OSError, tarfile.TarError)):
            raise
        if isinstance(e, tarfile.TarError):
            raise WorkNotBack(f"the workspace the engine sent from the bottle is not a whole archive ({e})") from None
        raise WorkNotBack(str(e)) from None


def _thaw(engine: Engine, container: str) -> None:
    try:
        engine.exec(container, ["kill", "-CONT", "-1"], user=BOTTLE_USER, timeout=10)
    except BottleError:
        pass  # gone, or the engine is: nothing to let go on


# The agent's uncommitted changes become one last commit, taken from the working tree alone. Nothing the agent
# can set in its repository decides what that commit holds or whether it can be made: it is built in a
# repository of our own (our config, no hooks, excludes only from .gitignore files, no content filters or
# conversions, whatever the attributes say) with a fresh index read from HEAD, so index flags
# (skip-worktree, assume-unchanged), .git/info/exclude, clean filters and sparse checkouts neither hide work
# nor hold it up. Its objects go into the agent's repository and its branch moves to the commit, so a
# `stop` that is run again makes no second commit. Beside a subfolder workspace (a sparse checkout), files
# the agent wrote come back too, and what it never had is not taken as deleted.
# Nested repositories (an agent's `git init` inside the workspace, not a submodule that .gitmodules names):
# their files are the agent's work too, so their .git is set aside while our commit adds them as files, then
# put back, and a gitlink the agent's own `git add` made of one is taken out of our index first.
_COMMIT_SCRIPT = r"""
chmod u+rwx /workspace 2>/dev/null || true  # the agent's, which it may have closed (chmod 000)
cd /workspace
# Every other process of the agent's is stopped (SIGSTOP) before the snapshot, and stays so until the bottle
# is removed: nothing written after it could be lost, and no file is taken half written, and nothing can
# change the snapshot, which is the agent's user's as all else here. This script and the processes it runs in
# are spared; a failure lets them all go on (thaw).
# Until they are, this shell runs nothing but its builtins: a program it started would be one the agent
# could attach to (this shell and its caller are not: PRIVATE_SHELL).
spare=" 1 $$ "; p=$$
while read -r stat < "/proc/$p/stat"; do
  stat=${stat##*) }; stat=${stat#* }; p=${stat%% *}
  [ "$p" -gt 1 ] || break
  spare="$spare$p "
done
trap 'kill -CONT -1 2>/dev/null || true' ERR
# One kill(2) for all of them: the kernel holds every fork back while it sends, and a child of a fork under
# way gets the signal too, so no process escapes by changing its ID (a walk over /proc, however often, can be
# outrun by processes that fork and exit for ever). It spares only this shell; its callers go on again.
kill -STOP -1 2>/dev/null || true
for p in $spare; do [ "$p" = 1 ] || [ "$p" = $$ ] || kill -CONT "$p"; done
# And no thread of the agent's runs (one the kernel has not stopped yet, in the middle of a system call, is
# given a moment), or there is no snapshot. A thread in an uninterruptible wait (a vfork whose child never
# execs: for ever) runs nothing of its own there, and stops on its way out: the stop waits for it.
all_stopped() {
  running=
  for d in /proc/[0-9]*/task/[0-9]*; do
    pid=${d#/proc/}; pid=${pid%%/*}
    case "$spare" in *" $pid "*) continue ;; esac
    read -r stat < "$d/stat" 2>/dev/null || continue  # gone meanwhile
    stat=${stat##*) }; state=${stat%% *}; stat=${stat#* }
    [ "${stat%% *}" = $$ ] && continue  # ours: a command of this script's
    case "$state" in
      T|t|Z|X) continue ;;
      D) pending=0
         { while read -r key value; do [ "$key" != ShdPnd: ] || pending=$value; done < "$d/status"; } 2>/dev/null || true
         (( 0x$pending & 1 << 18 )) && continue ;;  # SIGSTOP
    esac
    running=$pid; return 1
  done
}
for wait in $(seq 50) stop; do
  all_stopped && break
  [ "$wait" != stop ] || { echo "process $running of the agent's could not be stopped for the snapshot" >&2; false; }
  sleep 0.1
done
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_NO_REPLACE_OBJECTS=1 GIT_ATTR_NOSYSTEM=1 GIT_NO_LAZY_FETCH=1
# Names (refs, paths) may be any bytes: sed, grep and tr take them byte for byte, not as UTF-8.
export LC_ALL=C
# No git of ours fetches (a partial clone's promisor remote would run the agent's command while all is
# stopped), and none starts a `gc --auto` in the background (a process the freeze check would take for the
# agent's, and one that could prune what only the agent's other refs hold).
# Nor does any run a program the agent's config names for reading a signature (`log.showSignature` with its
# own `gpg.program`), and no protocol's own setting (`protocol.ext.allow`) lets a fetch through.
nofetch="-c protocol.allow=never -c protocol.ext.allow=never -c protocol.file.allow=never -c protocol.ssh.allow=never
  -c protocol.git.allow=never -c protocol.http.allow=never -c protocol.https.allow=never -c gc.auto=0
  -c maintenance.auto=false -c log.showSignature=false -c gpg.program=false -c gpg.ssh.program=false
  -c gpg.x509.program=false"
R() { git --shallow-file "$shallow" -C /workspace -c core.hooksPath=/dev/null -c core.fsmonitor=false $nofetch "$@"; }
shallow=
R rev-parse --git-dir > /dev/null || { echo "/workspace holds no repository git can read" >&2; exit 3; }
# A regular file under a size (64 KiB unless named), not a link (to /dev/zero, to /proc…) or a pipe, to read.
small() { [ -f "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %s -- "$1")" -lt "${2:-65536}" ]; }
gitdir_of() {  # FOLDER: the repository its .git is or names, as a real path
  if [ -d "$1/.git" ] && [ ! -L "$1/.git" ]; then (cd -- "$1/.git" && pwd -P)
  elif small "$1/.git" 4096 && { read -r line < "$1/.git"; } 2>/dev/null && [ "${line#gitdir: }" != "$line" ]; then
    to=${line#gitdir: }; case "$to" in /*) ;; *) to=$1/$to ;; esac; (cd -- "$to" 2>/dev/null && pwd -P)
  fi
}
fetchable() {  # FOLDER NAME: whether git can read the files of its repository that every fetch reads, else said
  local gd f; gd=$(gitdir_of "$1") || gd=
  for f in HEAD config packed-refs; do
    [ -z "$gd" ] || [ ! -e "$gd/$f" ] || small "$gd/$f" 268435456 && continue
    printf 'submodule %s: its %s is not a file git can read\n' "$2" "$f" >> "$snap/not-taken"; return 1
  done
}
# The commits a shallow repository has without their parents, as every git of ours reads them: from a small
# regular file, lines naming a commit only. A link to /dev/zero, a pipe or a bad line there would stop each
# git of ours, and the work would seem to be gone. Nor is git's old grafts file read, for the same reason.
export GIT_GRAFT_FILE=/nonexistent/claude-bottle-grafts
shallow=$(mktemp /tmp/claude-bottle-shallow.XXXXXX)
said=$(R rev-parse --git-path shallow)
! small "$said" 67108864 || { grep -E '^[0-9a-f]{40}([0-9a-f]{24})?$' -- "$said" > "$shallow" || true; }
[ -s "$shallow" ] || { rm -f -- "$shallow"; shallow=; }  # (an empty one would still make a repository shallow)
# What git cannot read (a ref or HEAD naming what is not there) keeps the bottle, rather than seem empty.
R for-each-ref --count=1 > /dev/null || { echo "git cannot read the repository's refs" >&2; exit 3; }
if R rev-parse --verify -q HEAD > /dev/null && ! R rev-parse --verify -q 'HEAD^{commit}' > /dev/null; then
  echo "HEAD names $(R rev-parse --verify -q HEAD), which git cannot read as a commit" >&2; exit 3
fi
# A folder or file the agent made unreadable would be left out with no more than a warning, and a folder it
# made read-only could not have a nested repository's .git set aside: all of it is the agent's user's, as
# this script is, so it is opened up (its bits beyond a file's x are not part of a commit), a folder at a
# time so that find goes on into it. What still cannot be read in the workspace keeps the bottle.
@OPEN_UP@
open_up .
closed=$(find . -path ./.git -prune -o \( -type d \( ! -readable -o ! -executable \) -o -type f ! -readable \) \
  -print -quit 2>&1) || true
[ -z "$closed" ] || { echo "the workspace holds what cannot be read: ${closed#./}" >&2; false; }
if head=$(R rev-parse --verify -q 'HEAD^{commit}'); then
  current=$(R symbolic-ref -q HEAD || echo HEAD)
  moves=HEAD
else
  # An unborn branch (`git checkout --orphan`, a `git init` anew) is no reason to keep the work in the bottle:
  # it goes onto the results branch (which moves, so that a second stop makes no second commit), or the
  # start commit, or, with neither left, into a commit of its own.
  head=$(R rev-parse --verify -q @BRANCH@'^{commit}') || head=$(R rev-parse --verify -q @START@'^{commit}') || head=
  current=@BRANCH@
  moves=@BRANCH@
fi
objects=$(cd -- "$(R rev-parse --git-path objects)" && pwd -P)
gitdir=$(R rev-parse --git-dir); common=$(R rev-parse --git-common-dir)
# Our commits' objects go there too, and the linked worktrees' own files (HEAD, gitdir) say where each is.
open_up "$objects"
open_up "$common/worktrees"
snap=$(mktemp -d /tmp/claude-bottle-snapshot.XXXXXX)
git init -q --bare --template= "$snap"
mkdir -p "$snap/objects/info" "$snap/info"
printf '%s\n' "$objects" > "$snap/objects/info/alternates"
# A shallow repository's (a clone of a shallow host repository, or the agent's `fetch --depth`): the commits it
# has without their parents. Without it our git would take those parents for objects lost. What the agent
# writes there cannot hide work: the host's fetch of the bundle checks that every commit's parents are there.
[ -z "$shallow" ] || cp -- "$shallow" "$snap/shallow"
printf '* -text -crlf -ident -filter !eol !working-tree-encoding\n' > "$snap/info/attributes"
ours=(-c core.bare=false -c core.excludesFile=/dev/null -c core.attributesFile=/dev/null
      -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.untrackedCache=false -c core.autocrlf=false
      -c core.sparseCheckout=false -c core.symlinks=true -c core.ignoreCase=false -c commit.gpgSign=false
      -c user.name=@NAME@ -c user.email=@EMAIL@ $nofetch)
S() { GIT_DIR="$snap" GIT_WORK_TREE=/workspace GIT_INDEX_FILE="$snap/index" GIT_OBJECT_DIRECTORY="$objects" \
      git "${ours[@]}" "$@"; }
F() {  # ARGS...: S, for a fetch from a repository of the agent's, with a time limit of its own: one that hangs
  # (a pipe where git reads its HEAD) fails as that repository's, named, not the whole step as nothing.
  timeout -k 2 60 env GIT_DIR="$snap" GIT_WORK_TREE=/workspace GIT_INDEX_FILE="$snap/index" \
    GIT_OBJECT_DIRECTORY="$objects" git "${ours[@]}" "$@"; }
W() {  # DIR ARGS...: the same, on another working tree (a linked worktree's) with an index of its own
  GIT_DIR="$snap" GIT_WORK_TREE="$1" GIT_INDEX_FILE="$snap/worktree-index" GIT_OBJECT_DIRECTORY="$objects" \
      git "${ours[@]}" "${@:2}"; }
# A HEAD whose tree holds a path git will not write (`..`, made with mktree) is no base for a commit: the files
# then go on an empty index, HEAD still the parent.
[ -z "$head" ] || S update-ref --no-deref HEAD "$head"
if [ -z "$head" ] || ! { S read-tree HEAD && S write-tree > /dev/null; } 2>/dev/null; then S read-tree --empty; fi
: > /tmp/claude-bottle-aside
# The submodules' paths, as .gitmodules names them (read NUL-separated: a name or path may hold a space).
declare -A subs=()
while IFS= read -r -d '' said; do
  [ -z "${said#*$'\n'}" ] || subs["${said#*$'\n'}"]=1
done < <(S config -z -f .gitmodules --get-regexp '^submodule\..*\.path$' 2>/dev/null || true)
submodule() { [ -n "$1" ] && [ -n "${subs["$1"]+named}" ]; }
S ls-files -s -z | while IFS= read -r -d '' entry; do
  case "$entry" in "160000 "*) ;; *) continue ;; esac
  d=${entry#*$'\t'}
  # A gitlink no .gitmodules names is what `git add` makes of a nested repository: its files come back.
  submodule "$d" || printf '%s\0' "$d" | S update-index -z --force-remove --stdin
  # Git reads a submodule's HEAD to add the workspace: one that is a pipe would hold everything up.
  [ ! -e "/workspace/$d/.git" ] || fetchable "/workspace/$d" "$d" || { cat "$snap/not-taken" >&2; false; }
done
find . -mindepth 2 -name .git -not -path './.git/*' -print0 | while IFS= read -r -d '' g; do
  d=${g%/.git}; d=${d#./}
  if submodule "$d"; then continue; fi
  mv -- "$g" "$g.claude-bottle-aside" && printf '%s\0' "$g" >> /tmp/claude-bottle-aside
done
put_back() { while IFS= read -r -d '' g; do mv -- "$g.claude-bottle-aside" "$g"; done < /tmp/claude-bottle-aside; }
trap 'rc=$?; put_back; [ "$rc" = 0 ] || kill -CONT -1 2>/dev/null || true' EXIT
aside=(':(exclude,glob)**/.git.claude-bottle-aside' ':(exclude,glob)**/.git.claude-bottle-aside/**')
S add --ignore-removal -- . "${aside[@]}"
S add -A -- @SCOPE@ "${aside[@]}"
# With no commit to build on, an empty one still carries the agent's other branches.
if ! S diff --cached --quiet || { [ -z "$head" ] && [ -n "$(R for-each-ref --count=1 refs/heads refs/tags)" ]; }; then
  S commit --allow-empty --no-verify -q -m 'claude-bottle: uncommitted changes when the bottle ended'
  made=$(S rev-parse --verify HEAD)
  S update-ref --no-deref HEAD "$made"  # detached: no ref of the agent's copied in below can move it
  R update-ref "$moves" "$made" "$head" || true  # only spares a second stop a second commit
fi
S rev-parse --verify -q HEAD > /dev/null || { echo "empty"; exit 0; }  # no commit, and no file to make one of
echo "$snap"
S rev-parse --verify HEAD
echo "$current"
# One command for all the refs, not one each: thousands of branches are no rarity. A branch can hold a commit
# only: a ref to anything else stays behind.
R for-each-ref --format='%(objecttype):%(objectname):%(*objecttype):%(*objectname):%(refname)' \
    refs/heads refs/stash refs/tags refs/notes | while IFS=: read -r type sha ptype psha ref; do
  case "$type:$ptype" in
    commit:*) ;;
    tag:commit) sha=$psha ;;
    tag:*) sha=$(S rev-parse --verify -q "$sha^{commit}") || continue ;;  # a tag of a tag
    *) continue ;;
  esac
  printf 'update %s %s\n' "$ref" "$sha"
done > "$snap/refs-to-copy"
S update-ref --stdin < "$snap/refs-to-copy"
sed 's/^update \(.*\) [0-9a-f]*$/\1/' "$snap/refs-to-copy"
# A submodule the agent made (`git submodule add` of a repository in the workspace): the commit its gitlink
# names is in that repository only, and would come back as the name of nothing. Each such commit comes, with
# its history, as a ref of its own. One the bottle does not hold (the user's submodules, never checked out
# here) is the user's already.
begun=@START@
{ S rev-parse 'HEAD^{tree}'; S for-each-ref --format='%(tree)'; } | sort -u | while read -r tree; do
  [ -n "$tree" ] || continue
  S ls-tree -r -z "$tree" | while IFS= read -r -d '' entry; do
    case "$entry" in "160000 commit "*) ;; *) continue ;; esac
    sha=${entry#160000 commit }; sha=${sha%%$'\t'*}; path=${entry#*$'\t'}
    # Here already, with its history (a stop run again after the fetch below); or the user's (no repository
    # here to have it). One fetched before without all its history (from a shallow submodule since made
    # whole) is fetched again, all of it: git would take the part it has for the whole.
    refetch=
    if S cat-file -e "$sha^{commit}" 2>/dev/null; then
      if S rev-list --objects "$sha" > /dev/null 2>&1 || [ ! -e "/workspace/$path/.git" ]; then
        S update-ref "refs/submodule-commits/$sha" "$sha" && echo "refs/submodule-commits/$sha"; continue
      fi
      refetch=--refetch
    fi
    [ -e "/workspace/$path/.git" ] || continue
    fetchable "/workspace/$path" "$path" || continue
    # Fetched by our git, which asks for the commit by name: nothing of the submodule's config but what
    # serving a fetch reads takes part.
    # From a shallow submodule too (a `clone --depth` the agent made one), whose shallow commits our git then
    # knows: without --update-shallow git drops such a ref with no more than a warning.
    if F -c uploadpack.allowAnySHA1InWant=true -c protocol.file.allow=always fetch -q --no-tags --no-write-fetch-head \
        --no-recurse-submodules --update-shallow $refetch "/workspace/$path" "+$sha:refs/submodule-commits/$sha" \
        2>/dev/null; then
      if S rev-parse -q --verify "refs/submodule-commits/$sha" > /dev/null; then echo "refs/submodule-commits/$sha"
      else printf 'commit %s of submodule %s could not be taken from it\n' "$sha" "$path" >> "$snap/not-taken"; fi
    elif [ "$(S rev-parse -q --verify "$begun:$path" 2>/dev/null)" != "$sha" ]; then  # (not the user's)
      printf 'commit %s of submodule %s could not be taken from it\n' "$sha" "$path" >> "$snap/not-taken"
    fi
  done
done
# A linked worktree moved since it was made (`mv`, not `git worktree move`) is no longer where its gitdir file
# says: it is looked for by the .git file in it that names its folder here, wherever the agent can write.
moved_to() {  # WORKTREE-FOLDER: the folder whose .git file names it
  local want f line to
  [ -e "$snap/dot-git-files" ] || find /workspace /tmp "${HOME:-/nonexistent}" -xdev \( -path "$snap" -o -name .git \
    -type d \) -prune -o \( -name .git -o -name .git.claude-bottle-aside \) -type f -size -4k -print0 2>/dev/null \
    > "$snap/dot-git-files" || true  # once, and only when one has moved: it reads every folder
  want=$(cd -- "$1" 2>/dev/null && pwd -P) || return 1
  while IFS= read -r -d '' f; do
    small "$f" 4096 && [ -O "$f" ] || continue
    { read -r line < "$f"; } 2>/dev/null || [ -n "${line:-}" ] || continue
    case "$line" in "gitdir: "*) to=${line#gitdir: } ;; *) continue ;; esac
    case "$to" in /*) ;; *) to=$(dirname -- "$f")/$to ;; esac
    [ "$(cd -- "$to" 2>/dev/null && pwd -P)" = "$want" ] && { printf '%s' "${f%/.git*}"; return 0; }
  done < "$snap/dot-git-files"
  return 1
}
# A submodule's repository holds work the gitlinks above do not name: files not committed in its folder, its
# branches, tags, notes and stash, the commits its reflogs name (an amend, a reset), or files the agent wrote
# into a submodule of the user's that is not checked out here. Each such repository comes back as one commit
# of ours: its files as they are (a submodule inside it whose .git was set aside above: as its files), on top
# of its HEAD (the first parent), with the tips of the rest that HEAD does not hold as the other parents.
# First each submodule folder of the workspace's index; then every repository in .git/modules that none of
# them is (one the agent removed with `git rm`, one inside another, one its .gitmodules no longer names).
# What is uncommitted in a submodule's own linked worktrees: each one's files as a commit on top of its HEAD (one
# of the commits fetched into INTO), one more tip of the submodule's commit.
worktree_work() {  # GITDIR NAME INTO
  local wt wdir whead wtree m=0 parent
  [ -d "$1/worktrees" ] && [ ! -L "$1/worktrees" ] || return 0
  for wt in "$1"/worktrees/*/; do
    m=$((m + 1))
    if [ "$m" -gt 100 ]; then  # each takes a few git commands, and the time is limited: more keep the bottle
      printf 'submodule %s has more than 100 linked worktrees: remove those not needed (git worktree remove)\n' \
        "$2" >> "$snap/not-taken"
      break
    fi
    wdir=; ! small "$wt/gitdir" || { read -r wdir < "$wt/gitdir"; } 2>/dev/null || true
    wdir=${wdir%/.git}
    if [ -z "$wdir" ] || [ ! -f "$wdir/.git" ]; then wdir=$(moved_to "$wt") || continue; fi
    [ -d "$wdir" ] && [ ! -L "$wdir" ] && [ -O "$wdir" ] || continue
    whead=; ! small "$wt/HEAD" || { read -r whead < "$wt/HEAD"; } 2>/dev/null || true
    case "$whead" in
      "ref: refs/heads/"*) whead=$(S rev-parse --verify -q "$3/heads/${whead#ref: refs/heads/}^{commit}") || whead= ;;
      *[!0-9a-f]*|"") whead= ;;
      *) whead=$(S rev-parse --verify -q "$whead^{commit}" 2>/dev/null) || whead= ;;
    esac
    rm -f "$snap/worktree-index"
    if [ -z "$whead" ] || ! { W "$wdir" read-tree "$whead" && W "$wdir" write-tree > /dev/null; } 2>/dev/null; then
      W "$wdir" read-tree --empty
    fi
    open_up "$wdir"
    (cd -- "$wdir" && W "$wdir" add -A --ignore-errors -- . "${aside[@]}") 2>/dev/null || true
    wtree=$(W "$wdir" write-tree 2>/dev/null) || continue
    [ -z "$whead" ] || [ "$wtree" != "$(S rev-parse "$whead^{tree}")" ] || continue
    parent=(); [ -z "$whead" ] || parent=(-p "$whead")
    tips+=("$(S commit-tree "$wtree" "${parent[@]}" -m "claude-bottle: uncommitted changes in linked worktree \
${wt%/} of submodule $2 when the bottle ended")")
  done
}
take_repo() {  # FROM (a repository to fetch from, or "") DIR (its files, or "") NAME GITDIR (its reflogs, or "")
  local from=$1 dir=$2 name=$3 gd=$4 into=refs/claude-bottle-submodule at= tree= tips=() others=() made ref
  if [ -n "$from" ] && ! fetchable "$from" "$name"; then return 0; fi
  if [ -n "$from" ]; then
    if ! F -c protocol.file.allow=always fetch -q --no-tags --no-write-fetch-head --no-recurse-submodules \
        --update-shallow "$from" "+refs/heads/*:$into/heads/*" "+refs/tags/*:$into/tags/*" \
        "+refs/notes/*:$into/notes/*" "+refs/stash*:$into/stash*" 2>/dev/null; then
      printf 'the refs of submodule %s could not be taken from it\n' "$name" >> "$snap/not-taken"; return 0
    fi
    # HEAD apart: an unborn one (a submodule with no commit yet) would fail the fetch of the rest.
    F -c protocol.file.allow=always fetch -q --no-tags --no-write-fetch-head --no-recurse-submodules \
      --update-shallow "$from" "+HEAD:$into/HEAD" 2>/dev/null || true
    # Its reflogs' commits, and its linked worktrees' HEADs (a detached one is in no ref), read as data (the
    # newest thousand), each fetched by name: one whose history the agent deleted stays behind, as in the
    # workspace's own repository.
    if [ -n "$gd" ] && [ -d "$gd" ] && [ ! -L "$gd" ]; then
      { if [ -d "$gd/logs" ] && [ ! -L "$gd/logs" ]; then
          find "$gd/logs" -type f -size -64M -exec grep -ohE '^[0-9a-f]{40} [0-9a-f]{40}' -- {} + | cut -d' ' -f2
        fi
        for wt in "$gd"/worktrees/*/; do
          ! small "$wt/logs/HEAD" 67108864 || grep -ohE '^[0-9a-f]{40} [0-9a-f]{40}' -- "$wt/logs/HEAD" | cut -d' ' -f2
          ! small "$wt/HEAD" || grep -xE '[0-9a-f]{40}' -- "$wt/HEAD"
        done
      } 2>/dev/null | grep -v '^0*$' | awk '!seen[$0]++' | tail -n 1000 > "$snap/submodule-logs" || true
      if [ -s "$snap/submodule-logs" ]; then
        mapfile -t logged < <(sed "s|.*|+&:$into/logs/&|" "$snap/submodule-logs")
        F -c uploadpack.allowAnySHA1InWant=true -c protocol.file.allow=always fetch -q --no-tags \
            --no-write-fetch-head --no-recurse-submodules --update-shallow "$from" "${logged[@]}" 2>/dev/null \
          || for one in "${logged[@]}"; do
               F -c uploadpack.allowAnySHA1InWant=true -c protocol.file.allow=always fetch -q --no-tags \
                 --no-write-fetch-head --no-recurse-submodules --update-shallow "$from" "$one" 2>/dev/null || true
             done
      fi
    fi
    at=$(S rev-parse --verify -q "$into/HEAD^{commit}") || at=
    mapfile -t tips < <(S for-each-ref --format='%(objectname)^{commit}' "$into/" \
      | S cat-file --batch-check='%(objectname)' | grep -v ' missing$' | sort -u)
    [ -z "$gd" ] || worktree_work "$gd" "$name" "$into"
    S for-each-ref --format='delete %(refname)' "$into/" | S update-ref --stdin
  fi
  if [ -n "$dir" ]; then
    rm -f "$snap/worktree-index"
    if [ -z "$at" ] || ! { W "$dir" read-tree "$at" && W "$dir" write-tree > /dev/null; } 2>/dev/null; then
      W "$dir" read-tree --empty
    fi
    W "$dir" ls-files -s -z | while IFS= read -r -d '' inner; do  # a submodule in it, set aside: its files
      case "$inner" in "160000 "*) [ -e "$dir/${inner#*$'\t'}/.git" ] \
        || printf '%s\0' "${inner#*$'\t'}" | W "$dir" update-index -z --force-remove --stdin ;; esac
    done
    if ! (cd -- "$dir" && W "$dir" add -A -- . "${aside[@]}") 2>/dev/null || ! tree=$(W "$dir" write-tree); then
      printf 'the files of submodule %s could not be taken from it\n' "$name" >> "$snap/not-taken"; return 0
    fi
  elif [ -n "$at" ]; then
    tree=$(S rev-parse "$at^{tree}")
  fi
  [ -n "$tree" ] || tree=$(S mktree < /dev/null)
  # Nothing new: its files are its HEAD's, and every commit of it is one that comes back anyway.
  local commits=($at "${tips[@]}")
  if [ "$tree" = "$(if [ -n "$at" ]; then S rev-parse "$at^{tree}"; else S mktree < /dev/null; fi)" ] && {
      [ "${#commits[@]}" = 0 ] || [ -z "$({ printf '%s\n' "${commits[@]}"; S for-each-ref --format='^%(objectname)'
        S rev-parse --verify -q HEAD | sed 's/^/^/'; } | { S rev-list --stdin -n 1 2>/dev/null || echo new; })" ]; }
  then return 0; fi
  for tip in "${tips[@]}"; do
    [ -n "$at" ] && S merge-base --is-ancestor "$tip" "$at" 2>/dev/null || others+=("$tip")
  done
  [ "${#others[@]}" -le 1 ] || mapfile -t others < <(S merge-base --independent "${others[@]}")
  parents=(); [ -z "$at" ] || parents=(-p "$at")
  for tip in "${others[@]}"; do parents+=(-p "$tip"); done
  made=$(S commit-tree "$tree" "${parents[@]}" -m "claude-bottle: submodule $name when the bottle ended: its files \
on top of its HEAD (the first parent, if it had one here), and its refs and reflogs' commits that HEAD does not hold \
(the other parents)")
  # Named by its path (what a ref cannot hold made a dash), where a ref can be (another's may be in the way:
  # `a` and `a/b`), else by its number.
  ref="refs/submodule-work/$(printf '%s' "$name" | tr ' ~^:?*[\\\000-\037\177' '-')"
  if ! git check-ref-format "$ref" || S rev-parse -q --verify "$ref" > /dev/null \
      || ! S update-ref "$ref" "$made" "" 2>/dev/null; then
    ref="refs/submodule-work-$5"; S update-ref "$ref" "$made"
  fi
  echo "$ref"
}
: > "$snap/submodule-gitdirs"
n=0
S ls-files -s -z | while IFS= read -r -d '' entry; do
  case "$entry" in "160000 "*) ;; *) continue ;; esac
  path=${entry#*$'\t'}; dir="/workspace/$path"
  [ -d "$dir" ] && [ ! -L "$dir" ] || continue
  n=$((n + 1)); gd=; from=
  if [ -e "$dir/.git" ]; then from=$dir; gd=$(gitdir_of "$dir") || gd=; fi
  [ -z "$gd" ] || printf '%s\n' "$gd" >> "$snap/submodule-gitdirs"
  take_repo "$from" "$dir" "$path" "$gd" "p$n"
done
modules=$(cd -- "$common" && pwd -P)/modules
n=0
if [ -d "$modules" ] && [ ! -L "$modules" ]; then
  find "$modules" -type d \( -name objects -o -name refs -o -name logs -o -name hooks -o -name info \
    -o -name worktrees \) -prune -o -type f -name HEAD -print0 2>/dev/null | while IFS= read -r -d '' head; do
    gd=$(cd -- "${head%/HEAD}" && pwd -P) || continue
    [ -d "$gd/objects" ] && [ -d "$gd/refs" ] || continue
    ! grep -qxF -- "$gd" "$snap/submodule-gitdirs" || continue
    n=$((n + 1))
    if [ "$n" -gt 1000 ]; then  # each takes a fetch, and the time is limited: more keep the bottle, said
      echo "more than 1000 submodule repositories in .git/modules: remove those not needed" >> "$snap/not-taken"
      break
    fi
    rel=${gd#"$modules"/}; name=${rel//\/modules\//\/}
    # Fetched from a view of it (its objects and refs, a config of ours): git serving a fetch from it would
    # go to the folder its config names as its work tree, which `git rm` removed.
    view="$snap/view-$n"; mkdir -p "$view"
    ln -s "$gd/objects" "$view/objects"; ln -s "$gd/refs" "$view/refs"
    for f in packed-refs HEAD shallow; do ! small "$gd/$f" 268435456 || cp -- "$gd/$f" "$view/$f"; done
    [ -f "$view/HEAD" ] || echo 'ref: refs/heads/none' > "$view/HEAD"
    printf '[core]\n\trepositoryformatversion = 0\n\tbare = true\n' > "$view/config"
    take_repo "$view" "" "$name" "$gd" "g$n"
  done
fi
worktrees=("$common"/worktrees/*/)  # each takes a few git commands, and the time is limited: more keep the bottle
[ "${#worktrees[@]}" -le 500 ] ||
  echo "more than 500 linked worktrees: remove those not needed (git worktree remove)" >> "$snap/not-taken"
[ ! -s "$snap/not-taken" ] || { cat "$snap/not-taken" >&2; false; }
n=0
R reflog show --no-show-signature --format=%H refs/stash -- 2>/dev/null | while read -r sha; do  # older stash entries
  n=$((n + 1)); [ "$n" -gt 1 ] || continue
  S update-ref "refs/stash-entries/$((n - 1))" "$sha" && echo "refs/stash-entries/$((n - 1))"
done
# A linked worktree's detached HEAD (`git worktree add --detach`) holds commits no branch does, and what is
# uncommitted in a linked worktree is in no commit at all (Claude Code makes them in .claude/worktrees/,
# which a .gitignore often names, or anywhere): each comes back as refs/worktree-heads/<id>, the worktree's
# uncommitted files as a commit on top of its HEAD. A worktree folder not the agent's user's is not read; a
# moved one is looked for (moved_to).
n=0
for wt in "$common"/worktrees/*/; do
  n=$((n + 1)); [ "$n" -le 500 ] || break  # (more were refused above)
  small "$wt/HEAD" && { read -r at < "$wt/HEAD"; } 2>/dev/null || continue
  id=${wt%/}; id=${id##*/}; ref="refs/worktree-heads/$id"
  git check-ref-format "$ref" || continue
  case "$at" in
    "ref: "*) on_branch=1; sha=$(S rev-parse --verify -q "${at#ref: }^{commit}" 2>/dev/null) || sha= ;;
    *[!0-9a-f]*|"") continue ;;
    *) on_branch=; sha=$(S rev-parse --verify -q "$at^{commit}" 2>/dev/null) || sha= ;;
  esac
  dir=; ! small "$wt/gitdir" || { read -r dir < "$wt/gitdir"; } 2>/dev/null || true
  dir=${dir%/.git}
  if [ -z "$dir" ] || { [ ! -f "$dir/.git" ] && [ ! -f "$dir/.git.claude-bottle-aside" ]; }; then
    dir=$(moved_to "$wt") || dir=
  fi
  if [ -n "$dir" ] && [ -d "$dir" ] && [ ! -L "$dir" ] && [ -O "$dir" ]; then
    rm -f "$snap/worktree-index"
    # A HEAD whose tree is not all here could not come back, nor one with a path git will not write: the files go
    # on a commit of their own, on top of such a HEAD.
    if [ -z "$sha" ] || ! W "$dir" read-tree "$sha" 2>/dev/null; then sha=; W "$dir" read-tree --empty
    elif ! W "$dir" write-tree > /dev/null 2>&1; then W "$dir" read-tree --empty; fi
    # As for the workspace: what the agent made unreadable is opened up, and a .git set aside stays out.
    open_up "$dir"
    (cd -- "$dir" && W "$dir" add -A --ignore-errors -- . "${aside[@]}") 2>/dev/null || true
    tree=$(W "$dir" write-tree 2>/dev/null) || continue
    if [ -z "$sha" ] || [ "$tree" != "$(S rev-parse "$sha^{tree}")" ]; then
      parent=(); [ -z "$sha" ] || parent=(-p "$sha")
      sha=$(S commit-tree "$tree" "${parent[@]}" \
            -m "claude-bottle: uncommitted changes in linked worktree $id when the bottle ended") || continue
      on_branch=
    fi
  fi
  [ -z "$on_branch" ] && [ -n "$sha" ] || continue  # on a branch with nothing uncommitted: the branch came above
  S update-ref "$ref" "$sha" && echo "$ref"
done
# Commits of the agent's that no ref above holds any more: ones only a reflog names (a `reset --hard`, an
# amend, a rebase, a branch deleted while on another) or a ref outside branches, tags, notes and the stash
# (refs/remotes, refs/original of a filter-branch). They come back as the parents of one commit of ours, on an
# empty tree. The reflogs are read from a copy in the snapshot, by our git (the agent's config takes no part),
# each up to a size (a huge or sparse one would outlast the time limit); a commit whose history is not all
# here (a shallow fetch, an object the agent removed) could not be bundled, and stays behind alone.
copy_logs() {  # FROM TO: the regular files up to 64 MiB (none through a link), a few processes for them all
  [ -d "$1" ] && [ ! -L "$1" ] || return 0
  mkdir -p -- "$2"
  (cd -- "$1" && find . -type f -size -64M -print0 | xargs -0 -r cp --parents -t "$2" -- 2>/dev/null) || true
}
copy_logs "$common/logs" "$snap/logs"
[ "$gitdir" = "$common" ] || copy_logs "$gitdir/logs" "$snap/logs"
for wt in "$common"/worktrees/*/; do  # each linked worktree's HEAD reflog, as a ref's of ours
  id=${wt%/}; id=${id##*/}
  small "$wt/logs/HEAD" 67108864 || continue
  git check-ref-format "refs/worktree-logs/$id" || continue
  mkdir -p "$snap/logs/refs/worktree-logs" && cp -- "$wt/logs/HEAD" "$snap/logs/refs/worktree-logs/$id" || true
done
start=$(R rev-parse --verify -q @START@'^{commit}' 2>/dev/null) || start=
{ S rev-list --no-walk --reflog 2>/dev/null || true; R for-each-ref --format='%(objectname)' 2>/dev/null || true; } \
  | sed 's/$/^{commit}/' | { S cat-file --batch-check='%(objectname)' 2>/dev/null || true; } \
  | { grep -v ' missing$' || true; } | awk '!seen[$0]++' > "$snap/candidates"
rm -rf "$snap/logs"
{ S for-each-ref --format='^%(objectname)'; echo "^$(S rev-parse --verify HEAD)"; [ -z "$start" ] || echo "^$start"
} > "$snap/held"
@CUT_OFF@
whole() {  # whether the history of the commits on stdin (but what they exclude) is all here, none of it cut off
  cat > "$snap/walk"
  S rev-list --objects --stdin < "$snap/walk" > /dev/null 2>&1 && ! cut_off "$snap/walk"
}
if [ -s "$snap/candidates" ]; then
  # All at once where every object is here (the usual case); else one at a time, the newest thousand (each
  # takes a walk of its own, and the time is limited).
  if cat "$snap/candidates" "$snap/held" | whole; then
    { cat "$snap/candidates" "$snap/held" | S rev-list --stdin 2>/dev/null || true; } > "$snap/unheld"
    { grep -Fxf "$snap/unheld" "$snap/candidates" || true; } > "$snap/dropped"
  else
    : > "$snap/dropped"
    while read -r c; do
      if { echo "$c"; cat "$snap/held"; } | whole; then
        first=$({ echo "$c"; cat "$snap/held"; } | S rev-list -n 1 --stdin 2>/dev/null) || first=
        [ "$first" != "$c" ] || echo "$c" >> "$snap/dropped"
      fi
    done < <(head -n 1000 "$snap/candidates")
  fi
  if [ -s "$snap/dropped" ]; then
    mapfile -t tips < "$snap/dropped"
    if [ "${#tips[@]}" -le 500 ]; then  # only the newest of each line of them (more would not fit one command)
      mapfile -t tips < <(S merge-base --independent "${tips[@]}" 2>/dev/null || cat "$snap/dropped")
    fi
    empty=$(S mktree < /dev/null)
    kept=
    # A hundred parents a commit, each commit the first parent of the next: any number of them comes back.
    for ((i = 0; i < ${#tips[@]}; i += 100)); do
      parents=(); [ -z "$kept" ] || parents=(-p "$kept")
      for tip in "${tips[@]:i:100}"; do parents+=(-p "$tip"); done
      kept=$(S commit-tree "${parents[@]}" -m 'claude-bottle: commits of the bottle that no branch, tag or stash held
when it ended (a reset, an amend, a rebase, a deleted branch, or a ref such as refs/remotes): they are the parents
of this commit (and of the one that is its first parent, if it says so too)' "$empty")
    done
    S update-ref refs/dropped-commits "$kept"
    echo refs/dropped-commits
  fi
fi
# Still all stopped (nothing came back to life while the snapshot was taken), or it is not to be trusted.
all_stopped || { echo "process $running of the agent's ran again during the snapshot" >&2; false; }
"""


def _commit_script(ws: Workspace, bottle_name: str) -> str:
    q = shlex.quote
    return (_COMMIT_SCRIPT.replace("@NAME@", q(GIT_IDENTITY[0])).replace("@EMAIL@", q(GIT_IDENTITY[1]))
            .replace("@SCOPE@", q(f":(literal){ws.subdir}" if ws.subdir else "."))
            .replace("@BRANCH@", q(f"refs/heads/{ws.branch or f'bottle/{bottle_name}'}"))
            .replace("@START@", q(ws.start or "HEAD")).replace("@CUT_OFF@", _CUT_OFF).replace("@OPEN_UP@", _OPEN_UP))


# What the agent made unreadable in FOLDER (all of it is the agent's user's) opened up, a folder at a time so
# that find goes on into it; its .git is left alone.
_OPEN_UP = """open_up() {  # FOLDER
  find "$1" -path "$1/.git" -prune -o -type d \\( ! -readable -o ! -writable -o ! -executable \\) \\
    -exec chmod u+rwx -- {} \\; -o -type f ! -readable -exec chmod u+r -- {} + 2>/dev/null || true
}"""


# Whether the history of the commits (and exclusions) listed in file $1 reaches a commit the repository holds
# without parents it has (a shallow fetch's cut): bundled, they would be missing on the host too. A root commit
# listed as shallow cuts nothing off. For the commit script and _incomplete, with their S and $snap.
_CUT_OFF = """cut_off() {
  [ -s "$snap/shallow" ] || return 1
  S rev-list --stdin < "$1" 2>/dev/null | grep -xF -f "$snap/shallow" \\
    | while read -r c; do S cat-file commit "$c" | grep -q '^parent ' && echo cut; done | grep -q .
}"""


_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _extra_branches(branch: str, refs: list[str]) -> dict[str, str]:
    """Where the bottle's other refs land, beside the results branch: its branches as `<branch>.<name>` (a
    name's slashes kept, so that no two branches meet), its stash as `<branch>.stash` and older entries as
    `.stash-1`, `.stash-2`, ..., tags as `.tag.<name>`, notes as `.notes.<name>`, a linked worktree's
    detached HEAD or uncommitted files as `.worktree.<name>`, a commit a submodule's gitlink names as
    `.submodule.<commit>`, what else a checked-out submodule holds as `.in-submodule.<path>`, and the commit
    whose parents are the commits no ref held any more as `.dropped`. A name that meets one taken before it
    (the same, or one a folder of the other: `.tag.v1` and `.tag.v1/rc`, which git cannot hold both of) gets
    its slashes made dashes and `.2`, `.3`, ... after it."""
    def wanted(ref: str) -> str | None:
        for prefix, to in (("refs/heads/", ""), ("refs/tags/", "tag."), ("refs/notes/", "notes.")):
            if ref.startswith(prefix):
                return to + ref.removeprefix(prefix)
        if ref == "refs/stash":
            return "stash"
        if ref.startswith("refs/stash-entries/"):
            return "stash-" + ref.removeprefix("refs/stash-entries/")
        if ref.startswith("refs/submodule-commits/"):
            return "submodule." + ref.removeprefix("refs/submodule-commits/")[:12]
        if ref.startswith("refs/worktree-heads/"):
            return "worktree." + ref.removeprefix("refs/worktree-heads/")
        if ref.startswith(("refs/submodule-work/", "refs/submodule-work-")):
            return "in-submodule." + ref.removeprefix("refs/submodule-work").lstrip("/-")
        if ref == "refs/dropped-commits":
            return "dropped"
        return None

    def meets(to: str) -> bool:
        parts = to.split("/")
        return to in folders or any("/".join(parts[:i]) in taken for i in range(1, len(parts) + 1))

    def take(to: str) -> None:
        taken.add(to)
        parts = to.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))

    found: dict[str, str] = {}
    taken: set[str] = set()
    folders: set[str] = set()  # of every name taken: by sets, as thousands of refs are no rarity
    order = sorted(refs, key=lambda r: (not r.startswith("refs/heads/"), r != "refs/stash", r))  # branches first
    for ref in order:
        name = wanted(ref)
        if name is None:
            continue
        # A byte of a name that is not UTF-8 (kept as a surrogate) lands as %xx: the branch can be typed.
        name = _NOT_UTF8.sub(lambda byte: f"%{ord(byte.group()) - 0xdc00:02x}", name)
        to, n = f"refs/heads/{branch}.{name}", 1
        while meets(to):
            n += 1
            to = f"refs/heads/{branch}.{name.replace('/', '-')}.{n}"
        found[ref] = to
        take(to)
    return found


def _bring_back_git(engine: Engine, container: str, ws: Workspace, bottle_name: str) -> Brought:
    out = _in_bottle(engine, container, _commit_script(ws, bottle_name), "committing the agent's uncommitted changes",
                     shell="bash").split("\n")
    if out[0].strip() == "empty":  # a repository made anew, with no file in it: nothing to bring back
        return Brought()
    if len(out) < 3:
        raise WorkNotBack(f"the bottle's repository has no usable HEAD ({' '.join(out)[-200:]!r})")
    snapshot, head, current, refs = out[0].strip(), out[1].strip(), out[2].strip(), [r for r in out[3:] if r.strip()]
    if len(head) != 40 or any(c not in "0123456789abcdef" for c in head):
        raise WorkNotBack(f"the bottle's repository has no usable HEAD ({head[-200:]!r})")
    # Every branch and the stash come back, not only HEAD.
    extra = _extra_branches(ws.branch, [r for r in refs if r != current])
    ref = f"refs/heads/{ws.branch}"
    try:
        _bundle_and_land(engine, container, ws, bottle_name, snapshot, extra)
    except WorkNotBack:
        # Often one branch whose history is not all in the bottle (a shallow fetch): the rest comes back, and
        # that one is named.
        incomplete = _incomplete(engine, container, ws, snapshot)
        if not incomplete:
            raise
        _bundle_and_land(engine, container, ws, bottle_name, snapshot, extra, leave_out=True)
        names = ", ".join(_said(r, current) for r in incomplete[:5])
        more = f" and {len(incomplete) - 5} more" if len(incomplete) > 5 else ""
        raise WorkNotBack(f"{names}{more}: its history is not all in the bottle (a shallow fetch, `git fetch "
                          "--depth`, or objects deleted or damaged), so it cannot come back whole; the rest came "
                          f"back. In the bottle (`claude-bottle exec {bottle_name} -- sh`), fetch the rest of its "
                          "history (`git fetch --unshallow URL`) or delete it, then stop again") from None
    if head != ws.start:
        if _ref(ws.git_root, ref) != head and _has_commit(ws.git_root, head):  # back into the host's history
            _host_git(ws.git_root, "update-ref", ref, head)
        if _ref(ws.git_root, ref) != head:
            raise WorkNotBack(f"branch {ws.branch} in {ws.git_root} does not hold the bottle's HEAD {head[:12]}")
    commits = int(_host_git(ws.git_root, "rev-list", "--count", f"{ws.start}..{ref}").strip() or 0) \
        if head != ws.start else 0
    tips = _tips(ws.git_root, ref)
    brought_extra = [to for to in extra.values() if to in tips]
    if head == ws.start and not brought_extra:
        return Brought()
    inert = _make_inert(ws.git_root, {to: tips[to] for to in ([ref] if head != ws.start else []) + brought_extra},
                        ws.start)
    return Brought(branch=ws.branch if head != ws.start else None, commits=commits,
                   extra=tuple(to.removeprefix("refs/heads/") for to in brought_extra), **inert)


def _bundle_and_land(engine: Engine, container: str, ws: Workspace, bottle_name: str, snapshot: str,
                     extra: Mapping[str, str], leave_out: bool = False) -> None:
    """Every ref of the snapshot (but, with `leave_out`, those _incomplete listed) out of the bottle as a
    bundle, onto the results branch and `extra`'s."""
    ref = f"refs/heads/{ws.branch}"
    # A file with no name (nothing is left of it when a killed `stop` ends), which host git reads by its
    # descriptor.
    with tempfile.TemporaryFile() as sink:
        bundle = f"/proc/self/fd/{sink.fileno()}"
        limit = step_seconds()
        # From our own repository, which holds the commit and the agent's refs: nothing of the agent's
        # config takes part.
        # Without the start commit (an agent that made its repository anew), the whole history comes.
        q = shlex.quote
        git = f"git --git-dir {q(snapshot)} -c core.hooksPath=/dev/null"
        left_out = f" | grep -vxF -f {q(snapshot)}/incomplete" if leave_out else ""
        # Every ref of the snapshot, on stdin: thousands of names are too long for one argument.
        script = (f"{{ {{ echo HEAD; {git} for-each-ref --format='%(refname)'; }}{left_out}; "
                  f"if {git} cat-file -e {q(ws.start + '^{commit}')} 2>/dev/null; then echo ^{ws.start}; fi; }} | "
                  f"{git} bundle create -q - --stdin")
        code, err = engine.exec_to(
            container, ["timeout", "-k", "5", str(limit), "env", *_OUR_GIT_ENV, "sh", "-c", script],
            sink, user=BOTTLE_USER, timeout=limit + 10, limit=MAX_RESULT_BYTES)
        sink.flush()
        if code != 0 and b"empty bundle" not in err:
            raise WorkNotBack(f"bundling the agent's commits failed (exit {code}): {_tail(err)}")
        if code == 0:
            listed = _host_git(ws.git_root, "bundle", "list-heads", bundle, fd=sink.fileno())
            heads = {line.split()[1]: line.split()[0] for line in listed.splitlines() if len(line.split()) == 2}
            _host_git(ws.git_root, "bundle", "verify", "-q", bundle, fd=sink.fileno())
            _land(ws.git_root, bottle_name, bundle, sink.fileno(), heads, {"HEAD": ref} | extra,
                  _tips(ws.git_root, ref))


# (LC_ALL=C: a ref's name may be any bytes, which grep takes byte for byte then.)
_OUR_GIT_ENV = ("GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_NO_REPLACE_OBJECTS=1", "LC_ALL=C")


def _said(ref: str, current: str) -> str:
    """A ref of the snapshot as the agent knows it in its repository."""
    if ref == "HEAD":
        return f"HEAD ({current.removeprefix('refs/heads/')})"
    for prefix, said in (("refs/heads/", "branch "), ("refs/tags/", "tag "), ("refs/notes/", "notes "),
                         ("refs/worktree-heads/", "linked worktree "), ("refs/stash-entries/", "stash@")):
        if ref.startswith(prefix):
            rest = ref.removeprefix(prefix)
            return f"stash@{{{rest}}}" if said == "stash@" else said + rest
    if ref.startswith("refs/submodule-commits/"):
        return f"submodule commit {ref.removeprefix('refs/submodule-commits/')[:12]}"
    if ref.startswith("refs/submodule-work/"):
        return f"submodule {ref.removeprefix('refs/submodule-work/')}"
    if ref.startswith("refs/submodule-work-"):
        return f"submodule number {ref.removeprefix('refs/submodule-work-')}"
    return {"refs/stash": "stash@{0}", "refs/dropped-commits": "commits no branch holds (from the reflogs)"}.get(
        ref, ref)


def _incomplete(engine: Engine, container: str, ws: Workspace, snapshot: str) -> list[str]:
    """The refs of the snapshot (HEAD among them) whose new history the host cannot be given whole: an object
    of it is missing or damaged (each object is read, as the bundle reads it), or it reaches a commit that has
    parents the bottle's repository lacks (a shallow fetch: bundled, they would be missing on the host too).
    Left in the snapshot as `incomplete`."""
    q = shlex.quote
    script = (f"snap={q(snapshot)}; S() {{ git --git-dir \"$snap\" -c core.hooksPath=/dev/null \"$@\"; }}\n"
              f"{_CUT_OFF}\n"
              f"base=; if S cat-file -e {q(ws.start + '^{commit}')} 2>/dev/null; then base=^{ws.start}; fi\n"
              ': > "$snap/incomplete"\n'
              "{ echo HEAD; S for-each-ref --format='%(refname)'; } | while read -r ref; do\n"
              '  printf \'%s\\n\' "$ref" $base > "$snap/walk"\n'
              '  if ! S pack-objects --revs --stdout -q < "$snap/walk" > /dev/null 2>&1 || cut_off "$snap/walk"; then\n'
              '    echo "$ref" >> "$snap/incomplete"\n'
              "  fi\n"
              'done\ncat "$snap/incomplete"')
    limit = step_seconds()
    code, out = engine.exec(container, ["timeout", "-k", "5", str(limit), "env", *_OUR_GIT_ENV, "sh", "-c", script],
                            user=BOTTLE_USER, timeout=limit + 10)
    return [r for r in out.decode(errors="replace").splitlines() if r.strip()] if code == 0 else []


INCOMING = "refs/claude-bottle-incoming/{name}/"  # what a bundle brought, until it is on its branches


def _land(repo: Path, bottle_name: str, bundle: str, fd: int, heads: Mapping[str, str], targets: Mapping[str, str],
          tips: Mapping[str, _Tip]) -> None:
    """Set each ref `targets` names for a ref of the bundle (`heads`: its refs and their commits) to that
    commit, all at once: a ref already there
    moves only forward, unless _holds. One fetch of the whole bundle into a namespace of ours, then one
    transaction: a fetch given a refspec per ref takes time in their number squared (8,000 refs: 77 s)."""
    wanted = {to: heads[r] for r, to in targets.items() if r in heads}
    incoming = INCOMING.format(name=bottle_name)
    _drop(repo, incoming)  # a stop killed before it ended may have left some
    try:
        # HEAD is not in a bundle whose HEAD is the start commit (nothing new on it): asked for, it would fail.
        head = [f"+HEAD:{incoming}HEAD"] if "HEAD" in heads else []
        _host_git(repo, "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", bundle,
                  *head, f"+refs/*:{incoming}refs/*", fd=fd)
        updates = []
        _check_room(repo, [to for to in wanted if to not in tips])
        for to, sha in wanted.items():
            tip = tips.get(to)
            if tip is None:
                updates.append(f"create {to}\0{sha}\0")
            elif tip.sha != sha:
                if not _holds(tips, to, sha) and not _is_ancestor(repo, tip.sha, sha):
                    raise WorkNotBack(f"branch {to.removeprefix('refs/heads/')} in {repo} has commits the bottle's "
                                      f"does not have: rename or delete it, then stop the bottle again")
                updates.append(f"update {to}\0{sha}\0{tip.sha}\0")
        if updates:
            _host_git(repo, "update-ref", "-z", "--stdin", input="".join(updates).encode(errors="surrogateescape"))
    finally:
        _drop(repo, incoming)


def _check_room(repo: Path, new_refs: list[str]) -> None:
    """Refuse, naming it, a branch of the user's made since the launch where git cannot hold it beside a new
    one: `bottle` beside `bottle/coder/x`, or `bottle/coder/x/y` beside `bottle/coder/x`."""
    if not new_refs:
        return
    existing = set(_git(repo, "for-each-ref", "--format=%(refname)", "refs/heads", fs=True).splitlines())
    folders = {ref.rsplit("/", n)[0] for ref in existing for n in range(1, ref.count("/") - 1)}
    for to in new_refs:
        parts = to.split("/")
        above = next((p for p in ("/".join(parts[:i]) for i in range(3, len(parts))) if p in existing), None)
        below = None if above or to not in folders else min(e for e in existing if e.startswith(to + "/"))
        if above or below:
            raise WorkNotBack(f"branch {(above or below).removeprefix('refs/heads/')} in {repo} is in the way of "
                              f"{to.removeprefix('refs/heads/')} (git cannot hold a branch and a folder of branches "
                              "of one name): rename or delete it, then stop the bottle again")


def _drop(repo: Path, prefix: str) -> None:
    listed = _git(repo, "for-each-ref", "--format=delete %(refname)", prefix, check=False, fs=True)
    if listed:
        _git(repo, "update-ref", "--stdin", input=os.fsencode(listed), check=False)


def _is_ancestor(repo: Path, old: str, new: str) -> bool:
    return subprocess.run([*_HOST_GIT, "-C", str(repo), "merge-base", "--is-ancestor", old, new],
                          capture_output=True).returncode == 0


INERT_MESSAGE = "claude-bottle: names git would take for a repository's, renamed (.from-bottle)"


@dataclass(frozen=True)
class _Tip:
    sha: str
    tree: str
    parent: str
    ours: bool  # a commit _make_inert made on top of the agent's


def _tips(repo: Path, branch_ref: str) -> dict[str, _Tip]:
    """The results branch and those beside it, in one command: there may be thousands."""
    # A pattern matches whole folders (a `*` in it does not match a slash): the folder the branch is in.
    listed = _git(repo, "for-each-ref", "--format=%(refname)%00%(objectname)%00%(tree)%00%(parent)%00"
                  "%(committername)%00%(subject)", branch_ref.rsplit("/", 1)[0], fs=True)
    tips = {}
    for line in listed.splitlines():
        name, sha, tree, parent, committer, subject = line.split("\0", 5)
        if name != branch_ref and not name.startswith(branch_ref + "."):
            continue
        tips[name] = _Tip(sha, tree, parent, committer == GIT_IDENTITY[0] and subject == INERT_MESSAGE
                          and " " not in parent)
    return tips


def _holds(tips: Mapping[str, _Tip], ref: str, sha: str | None) -> bool:
    """A ref of ours that may be set anew: it already holds what is being fetched (a retry), or its tip is
    the commit _make_inert made on an earlier try (made again after the fetch, on what the agent has now)."""
    tip = tips.get(ref)
    return sha is not None and tip is not None and (tip.sha == sha or tip.ours)


def _make_inert(repo: Path, refs: Mapping[str, _Tip], start: str) -> dict[str, tuple]:
    """Put a commit on top of each of `refs` whose tip holds a path git would take for a repository's (see
    _inert_names; `git status` in such a folder, once checked out, would run what its config says), with
    those renamed as a folder that comes back would have them, and names of the agent's that would meet
    ours left out. Made here with a scratch index and no hooks: nothing of the agent's takes part. The
    agent's own commits below it keep what they hold. Returns Brought's renamed, renamed_as and clashed,
    each path as `<branch>:<path>`."""
    start_tree = _git(repo, "rev-parse", "--verify", "-q", f"{start}^{{tree}}", check=False).strip()
    by_tree: dict[str, tuple[str | None, list, list]] = {}  # branches often share a tree: each is read once
    renamed, renamed_as, clashed, updates = [], [], [], []
    name, email = GIT_IDENTITY
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
           "GIT_COMMITTER_EMAIL": email}
    with tempfile.TemporaryDirectory() as tmp:
        for ref, found in refs.items():
            tip, tree = found.sha, found.tree
            if tree == start_tree:  # the host's own
                continue
            if tree not in by_tree:
                by_tree[tree] = _inert_tree(repo, tree, {**env, "GIT_INDEX_FILE": str(Path(tmp, "index"))})
            new_tree, moved, left_out = by_tree[tree]
            if new_tree is None:
                continue
            branch = ref.removeprefix("refs/heads/")
            renamed += [f"{branch}:{path}" for path, _ in moved]
            renamed_as += [(f"{branch}:{path}", as_) for path, as_ in moved
                           if as_ != path.rsplit("/", 1)[-1] + RENAMED_SUFFIX]
            clashed += [f"{branch}:{path}" for path in left_out]
            commit = _git(repo, "commit-tree", "--no-gpg-sign", new_tree, "-p", tip, "-m", INERT_MESSAGE,
                          env=env).strip()
            updates.append(f"update {ref}\0{commit}\0{tip}\0")
    if updates:  # all or none
        _git(repo, "update-ref", "-z", "--stdin", input="".join(updates).encode(errors="surrogateescape"))
    return {"renamed": tuple(sorted(renamed)), "renamed_as": tuple(sorted(renamed_as)),
            "clashed": tuple(sorted(clashed))}


def _inert_tree(repo: Path, tree: str, env: Mapping[str, str]) -> tuple[str | None, list, list]:
    """`tree` with what _inert_layout renames renamed and what it leaves out left out (None: nothing to
    do), with the paths renamed (each with its new name) and those left out."""
    listed = _git(repo, "ls-tree", "-r", "-z", "--full-tree", tree, fs=True, timeout=step_seconds()).split("\0")
    entries = [(meta, tuple(path.split("/"))) for meta, _, path in (e.partition("\t") for e in listed if e)]
    placed, moved = _inert_layout([parts for _, parts in entries])
    if not moved and all(placed[parts] == parts for _, parts in entries):
        return None, [], []
    index = Path(env["GIT_INDEX_FILE"])
    index.unlink(missing_ok=True)
    info = b"".join(os.fsencode(f"{meta}\t{'/'.join(placed[parts])}") + b"\0"
                    for meta, parts in entries if placed[parts] is not None)
    _git(repo, "update-index", "-z", "--index-info", env=env, input=info)
    new_tree = _git(repo, "write-tree", env=env).strip()
    left_out = sorted("/".join(parts) for _, parts in entries if placed[parts] is None)
    return new_tree, sorted(moved), left_out


def _ref(repo: Path, ref: str) -> str:
    return _git(repo, "rev-parse", "--verify", "-q", ref, check=False).strip()


# Git on the host reads what the agent made: a time and memory limit, no network, no submodules, so that a
# crafted bundle can neither hang `stop` nor reach out.
HOST_GIT_MEMORY = 3 * 2**30


def _host_git(repo: Path, *args: str, fd: int | None = None, input: bytes | None = None) -> str:
    """git on the host with the limits above; `fd` stays open in it (a bundle read as /proc/self/fd/N)."""
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (HOST_GIT_MEMORY, HOST_GIT_MEMORY))

    env = {**_environment(), "GIT_ALLOW_PROTOCOL": "file", "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
    try:
        out = subprocess.run([*_HOST_GIT, "-C", str(repo), "-c", "submodule.recurse=false",
                              "-c", "fetch.recurseSubmodules=false", "-c", "core.hooksPath=/dev/null", *args],
                             capture_output=True, input=input, env=env, timeout=step_seconds() * 2,
                             preexec_fn=limit_memory,
                             pass_fds=() if fd is None else (fd,))
    except subprocess.TimeoutExpired:
        raise WorkNotBack(f"git {' '.join(args[:2])} in {repo} did not finish in time") from None
    if out.returncode != 0:
        raise WorkNotBack(f"git {' '.join(args[:2])} in {repo} failed: "
                          f"{' '.join(out.stderr.decode(errors='replace').split())[-400:]}")
    return out.stdout.decode(errors="surrogateescape")


def _bring_back_folder(engine: Engine, container: str, ws: Workspace) -> Brought:
    if engine.kind == "kubernetes":  # its archive is read as the agent's user (Docker's engine reads as root)
        _in_bottle(engine, container, f"{_OPEN_UP}\nchmod u+rwx /workspace 2>/dev/null || true\nopen_up /workspace",
                   "opening up what the agent made unreadable")
    with tempfile.TemporaryFile() as archive:
        engine.get_archive_to(container, WORKSPACE, archive, limit=MAX_RESULT_BYTES)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            members = [m for m in tar.getmembers() if "/" in m.name]  # under workspace/
            if _tree_digest(_tar_entries(tar, members)) == ws.digest:
                return Brought()
            if os.path.lexists(ws.results_dir):  # a link to nowhere too: mkdir through it would fail at the end
                raise WorkNotBack(f"{ws.results_dir} already exists: move it away, then stop the bottle again")
            return _extract(tar, members, ws.results_dir)


# What a .git folder or file in a folder that comes back gets after its name (and a repository's HEAD, see
# _inert_names): git in a folder holding the agent's repository would run what the agent put in its config
# (fsmonitor, a pager, filters) or hooks, on the host, at the user's first `git status` there.
RENAMED_SUFFIX = ".from-bottle"
GIT_RENAMED = ".git" + RENAMED_SUFFIX
# Code points HFS+ (macOS) leaves out when it compares names: ".g\u200cit" is .git there (git's own list).
_HFS_IGNORED = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF])


def _folded(name: str) -> str:
    """A name as a case-insensitive, normalizing host (macOS, by default) compares it, or more loosely: two
    names it takes for one fold alike (one that folds more only has more renamed or left out)."""
    nfd = unicodedata.normalize("NFD", name.translate(_HFS_IGNORED))
    return unicodedata.normalize("NFD", nfd.casefold()).translate(_HFS_IGNORED)


def _folded_path(parts: tuple[str, ...]) -> tuple[str, ...]:
    """A path as such a host finds it: `Sub/x` and `sub/x` are one file there."""
    return tuple(_folded(part) for part in parts)


def _inert_names(paths: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Of `paths` (each as its parts), those that would make git take a folder for a repository, each with
    the name it gets instead: every .git, whatever its case, and the HEAD of a folder laid out as a
    repository's own (a HEAD beside objects, refs or commondir), which git uses as one when run inside it."""
    # By folded folder, each folded name with every path spelled so: `.git` and `.GIT` may both be there, and
    # on a host that folds names `Sub/HEAD` and `sub/objects` are in one folder.
    children: dict[tuple[str, ...], dict[str, set[tuple[str, ...]]]] = {}
    for parts in paths:
        folded = _folded_path(parts)
        for i in range(len(parts)):
            children.setdefault(folded[:i], {}).setdefault(folded[i], set()).add(parts[:i + 1])
    inert = {}
    for names in children.values():
        given: set[str] = set()  # folded, in this folder
        for folded, paths in sorted(names.items()):
            if folded == ".git" or (folded == "head" and {"objects", "refs", "commondir"} & names.keys()):
                for path in sorted(paths):
                    inert[path] = _renamed(path[-1], given)
                    given.add(_folded(inert[path]))
    return inert


def _inert_layout(paths: list[tuple[str, ...]]
                  ) -> tuple[dict[tuple[str, ...], tuple[str, ...] | None], set[tuple[str, str]]]:
    """Where each of `paths` goes so that git takes no folder for a repository (see _inert_names): its new
    parts, or None for a path the agent named as we name what is renamed (it would meet ours: left out);
    and each outermost path renamed, with the name it gets."""
    inert = _inert_names(paths)
    ours = {_folded_path((*path[:-1], name)) for path, name in inert.items()}
    placed: dict[tuple[str, ...], tuple[str, ...] | None] = {}
    renamed = set()
    for parts in paths:
        folded = _folded_path(parts)
        if any(name == GIT_RENAMED or folded[:i + 1] in ours for i, name in enumerate(folded)):
            placed[parts] = None
            continue
        names = list(parts)
        for i in reversed(range(len(parts))):  # named by the outermost renamed (a .git's HEAD goes too)
            if parts[:i + 1] in inert:
                names[i] = inert[parts[:i + 1]]
                outermost = ("/".join(parts[:i + 1]), names[i])
        if names != list(parts):
            renamed.add(outermost)
        placed[parts] = tuple(names)
    return placed, renamed


NAME_MAX = 255  # bytes in a name, on Linux and macOS alike


def _renamed(name: str, given: set[str]) -> str:
    """`name` with RENAMED_SUFFIX, unless a name given before in its folder folds alike (`.GIT` beside
    `.git`, one file on a Mac): then with `~2`, `~3`, ... before the suffix. A name too long for the suffix
    is cut short, with a digest of the whole after it: two long names alike where they are cut stay apart."""
    for n in itertools.count(1):
        tag = f"~{n}" if n > 1 else ""
        new = name + tag + RENAMED_SUFFIX
        if _name_bytes(new) > NAME_MAX:
            tail = f"~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}{tag}{RENAMED_SUFFIX}"
            kept = name
            while kept and _name_bytes(kept + tail) > NAME_MAX:
                kept = kept[:-1]
            new = kept + tail
        if _folded(new) not in given:
            return new
    raise AssertionError("unreachable")


def _name_bytes(name: str) -> int:
    """The length of `name` on the host, as stored (macOS may store it decomposed, which is longer)."""
    return max(len(os.fsencode(name)), len(os.fsencode(unicodedata.normalize("NFD", name))))


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> Brought:
    """Unpack what a bottle sent into `dest`, which must not exist, and nothing outside it: folders and files
    first (no link exists yet to write through), links last, each kept only if it resolves inside; a hard
    link arrives as what it is another name of would (a file as a copy, a symlink as that symlink); devices,
    pipes and set-id bits never arrive; what would make git take a folder for a repository is renamed (see
    _inert_names; a name the agent itself gave as one of ours is left out, as it would meet ours). Built in
    a folder beside `dest`, renamed into place at the end, so a failure leaves nothing half made. Returns
    what was left out (and why), and the paths renamed."""
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    skipped, clashed, links = [], [], []
    placed, renamed = _inert_layout([PurePosixPath(m.name.split("/", 1)[1]).parts for m in members])
    linked = _linked(members)
    try:
        for m in members:
            rel = m.name.split("/", 1)[1]
            parts = PurePosixPath(rel).parts
            if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
                skipped.append(rel)
                continue
            if placed[parts] is None:
                clashed.append(rel)
                continue
            target = partial.joinpath(*placed[parts])
            real = linked.get(id(m), m)  # a hard link arrives as what it is another name of would
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif real is not None and real.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o755 if real.mode & 0o111 else 0o644)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(tar.extractfile(real), out)
            elif real is not None and real.issym():
                links.append((rel, target, real.linkname))
            else:
                skipped.append(rel)
        for rel, target, linkname in links:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(linkname, target)
        root = partial.resolve()
        for rel, target, linkname in links:  # now that every link exists, each resolves as it will
            if os.path.isabs(linkname) or not Path(os.path.realpath(target)).is_relative_to(root):
                target.unlink()
                skipped.append(rel)
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Brought(folder=dest, skipped=tuple(sorted(skipped)), renamed=tuple(sorted(path for path, _ in renamed)),
                   renamed_as=tuple(sorted((path, name) for path, name in renamed
                                           if name != path.rsplit("/", 1)[-1] + RENAMED_SUFFIX)),
                   clashed=tuple(sorted(clashed)))


def _has_commit(repo: Path, sha: str) -> bool:
    return subprocess.run([*_HOST_GIT, "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True).returncode == 0


def _host_entries(root: Path, listed: list[Path]) -> dict[str, str]:
    entries = {}
    for rel in listed:
        p = root / rel
        if p.is_symlink():
            entries[rel.as_posix()] = "l:" + os.readlink(p)
        elif p.is_file():
            with p.open("rb") as f:
                entries[rel.as_posix()] = f"f{bool(p.stat().st_mode & 0o100):d}:" + _sha256(f)
    return entries


def _tar_entries(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> dict[str, str]:
    entries = {}
    linked = _linked(members)
    for m in members:
        rel, real = m.name.split("/", 1)[1], linked.get(id(m), m)
        if real is None:
            continue
        if real.issym():
            entries[rel] = "l:" + real.linkname
        elif real.isfile():
            entries[rel] = f"f{bool(real.mode & 0o100):d}:" + _sha256(tar.extractfile(real))
    return entries


def _linked(members: list[tarfile.TarInfo]) -> dict[int, tarfile.TarInfo | None]:
    """For each hard link among `members` (by id), the member it is another name of, itself no hard link,
    or None if no member before it has the name it gives. tarfile's own lookup follows symlinks (which
    may lead out of the archive, or round in a loop) and gives nothing for a pipe."""
    seen: dict[str, tarfile.TarInfo | None] = {}
    linked = {}
    for m in members:
        real = seen.get(posixpath.normpath(m.linkname)) if m.islnk() else m
        if m.islnk():
            linked[id(m)] = real
        seen[posixpath.normpath(m.name)] = real
    return linked


def _sha256(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _tree_digest(entries: Mapping[str, str]) -> str:
    # A name not UTF-8 is kept as surrogates, on both sides: it is hashed as the bytes it was.
    text = "".join(f"{k}\0{v}\n" for k, v in sorted(entries.items()))
    return hashlib.sha256(text.encode(errors="surrogateescape")).hexdigest()


# bash and timeout, in copies the agent's user may run and not read (the image's Dockerfile says why).
PRIVATE_SHELL = (f"{PRIVATE_BIN}/timeout", f"{PRIVATE_BIN}/bash")


def _in_bottle(engine: Engine, container: str, script: str, what: str, shell: str = "sh") -> str:
    """Run `script` as the bottle's user with a time limit; its stdout, or WorkNotBack-worthy errors. A
    `shell` of "bash" is PRIVATE_SHELL's, in a bottle whose image has it."""
    out = io.BytesIO()
    limit = step_seconds()
    timeout, shell = PRIVATE_SHELL if shell == "bash" else ("timeout", shell)
    try:
        for _ in range(3):
            out.seek(0), out.truncate()
            code, err = engine.exec_to(container, [timeout, "-k", "5", str(limit), shell, "-euc", script],
                                       out, user=BOTTLE_USER, timeout=limit + 10)
            if code == 0 or not _NO_FORK.search(err + out.getvalue()):
                break
            # The agent's processes fill the bottle's process limit, so nothing of ours can start: they go
            # (the bottle is ending; its files are the work), and the step runs again.
            try:
                engine.exec(container, ["kill", "-KILL", "-1"], user=BOTTLE_USER, timeout=10)
            except BottleError:
                pass  # no room for this either, yet: the next try says
        if code in (126, 127) and timeout != "timeout" and PRIVATE_SHELL[0].encode() in err + out.getvalue():
            # A bottle from before the image had them: its stop goes on as it would have then.
            out.seek(0), out.truncate()
            code, err = engine.exec_to(container, ["timeout", "-k", "5", str(limit), "bash", "-euc", script],
                                       out, user=BOTTLE_USER, timeout=limit + 10)
    except (ExecTimeout, OutputTooLarge) as e:
        raise BottleError(f"{what}: {e}") from None
    if code != 0:
        why = (f"it did not finish in time; {STEP_SECONDS_VARIABLE} sets the limit, {limit} s"
               if code in (124, 137) else f"exit {code}")
        raise BottleError(f"{what} failed ({why}): {_tail(err or out.getvalue())}")
    return out.getvalue().decode(errors="surrogateescape")  # a ref's name may be any bytes: each is kept


_NO_FORK = re.compile(rb"fork[^\n]*(Resource temporarily unavailable|failed)|Cannot fork|cannot fork", re.I)


def _tail(data: bytes) -> str:
    return " ".join(data.decode(errors="replace").split())[-400:]


# Set in the user's environment, these change what every pathspec of ours means (`:(literal)x` taken as a
# name, `*` as a glob, `In` as `in`), or make git refuse the literal setting one of our commands needs.
_PATHSPEC_VARIABLES = ("GIT_LITERAL_PATHSPECS", "GIT_GLOB_PATHSPECS", "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS")


# Every git we run on the host. A folder laid out as a bare repository (HEAD, objects/, refs/, config: plain
# files to git, so a clone of a hostile repository can hold one) would otherwise be taken for a repository
# when git looks for one, and its config read: a filter there is a program git runs. Git 2.38 and later.
_HOST_GIT = ("git", "-c", "safe.bareRepository=explicit")


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _PATHSPEC_VARIABLES}


def _git(cwd: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None, stdout=None,
         fs: bool = False, timeout: float | None = None, input: bytes | None = None) -> str:
    """git in a host repository; a failure is a BottleError with git's own words, never a traceback. No
    hooks or fsmonitor run, and a scratch index is never split (which would leave its shared part in the
    repository): nothing but what we ask for happens in the user's repository. With `stdout` (a file),
    git's output goes there and "" is returned; with `fs`, the output is file names, decoded as Python
    decodes them (any bytes, and back the same when given to another command)."""
    try:
        out = subprocess.run([*_HOST_GIT, "-C", str(cwd), "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                              "-c", "core.splitIndex=false", *args],
                             stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, input=input,
                             env={**_environment(), **(env or {})}, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BottleError(f"git {' '.join(args[:2])} in {cwd} did not finish in {timeout:.0f} s (a file git reads "
                          f"there, such as a .gitignore, may be a pipe; {STEP_SECONDS_VARIABLE} sets the limit)") from None
    except FileNotFoundError:
        if check:
            raise BottleError("git is not installed on this machine: install it to use a git workspace") from None
        return ""
    if out.returncode != 0:
        if check:
            raise BottleError(f"git {' '.join(args[:2])} in {cwd} failed: "
                              f"{' '.join(out.stderr.decode(errors='replace').split())[-400:]}")
        return ""
    if stdout is not None:
        return ""
    return os.fsdecode(out.stdout) if fs else out.stdout.decode(errors="replace")
