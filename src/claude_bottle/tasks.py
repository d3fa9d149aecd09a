"""Many headless tasks, one bottle each, a bounded number at a time: the tasks file, how many fit on
this machine, and running them to results (exit status, duration, branch, output)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from . import bottle, docker, runtime
from .errors import BottleError
from .paths import existing_folder, not_json, read_small
from .runs import COULD_NOT_RUN
from .session import Secrets, Session
from .terminal import visible
from .workspace import WorkNotBack

# A coding agent's bottle: about a core and a few GiB when busy.
GIB_PER_TASK = 3


@dataclass(frozen=True)
class Task:
    prompt: str
    workspace: Path | None = None


@dataclass(frozen=True)
class Result:
    index: int
    task: Task
    bottle: str
    exit_status: int
    seconds: float
    branch: str | None  # where the work came back, if any did
    output: str


# Linux's limit on one argument (MAX_ARG_STRLEN): the prompt reaches `claude -p` as one.
MAX_PROMPT_BYTES = 128 * 1024 - 1


def check_prompt(prompt: str, what: str) -> None:
    """Refuse, before anything is made, a prompt that cannot be handed to Claude."""
    if "\0" in prompt:
        raise BottleError(f"{what} contains a NUL character, which cannot be passed to Claude: remove it")
    try:
        size = len(prompt.encode())
    except UnicodeEncodeError:  # bytes of the command line that are not UTF-8 (or a lone surrogate of JSON's)
        raise BottleError(f"{what} is not valid UTF-8 text, which is all Claude takes: write it in UTF-8") from None
    if size > MAX_PROMPT_BYTES:
        raise BottleError(f"{what} is {size} bytes; the limit is {MAX_PROMPT_BYTES} (128 KiB): put the long part in "
                          "a file in the workspace and tell Claude to read it")


MAX_TASKS_BYTES = 256 * 2**20


def read(path: Path, default_workspace: Path | None) -> list[Task]:
    """One task per line: a prompt, or a JSON object {"prompt": …, "workspace": …} (relative to the
    file). Blank lines and lines starting with # are skipped."""
    try:
        lines = read_small(path, MAX_TASKS_BYTES).decode("utf-8").splitlines()
    except OSError as e:
        raise BottleError(f"--tasks {path}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise BottleError(f"--tasks {path}: cannot read: {e}") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("{"):
            check_prompt(text, f"{path}:{number}: the prompt")
            found.append(Task(text, default_workspace))
            continue
        try:
            entry = json.loads(text, parse_constant=not_json)
        except ValueError as e:
            raise BottleError(f"{path}:{number}: invalid JSON: {e}") from None
        except RecursionError:
            raise BottleError(f"{path}:{number}: invalid JSON: nested too deep") from None
        if not isinstance(entry, dict):
            entry = {"": None}  # said below: a JSON task is an object
        unknown = set(entry) - {"prompt", "workspace"}
        if unknown or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise BottleError(f'{path}:{number}: a JSON task is {{"prompt": "…", "workspace": "DIR"}} '
                              f"with a non-empty prompt{f'; unknown key {sorted(unknown)[0]!r}' if unknown else ''}")
        ws = entry.get("workspace")
        if ws is not None and not isinstance(ws, str):
            raise BottleError(f"{path}:{number}: workspace must be a folder path")
        check_prompt(entry["prompt"], f"{path}:{number}: the prompt")
        if ws:
            folder = existing_folder(path.parent / ws, f"{path}:{number}: workspace") if "\0" not in ws else None
            if folder is None or not folder.is_dir():
                raise BottleError(f"{path}:{number}: workspace {visible(ws)}: no such folder (a path relative to "
                                  "the tasks file, or absolute)")
        found.append(Task(entry["prompt"], (path.parent / ws) if ws else default_workspace))
    if not found:
        raise BottleError(f"--tasks {path}: no tasks in it (one prompt per line)")
    return found


def default_parallelism() -> int:
    """As many bottles at once as cores, but no more than memory allows, and at least one."""
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        mem_gib = GIB_PER_TASK * cores
    return max(1, min(cores, int(mem_gib // GIB_PER_TASK)))


def run_all(plans: list[bottle.LaunchPlan], tasks: list[Task], secrets: Secrets, owner: str, parallel: int,
            argv_for: Callable[[Task], list[str]], done: Callable[[Result], None] = lambda r: None,
            started: Callable[[], None] = lambda: None) -> list[Result]:
    """Run each task in its own bottle, `parallel` at a time; each bottle's work comes back and the bottle
    goes when its task ends. Interrupted (Ctrl-C, SIGTERM), no task starts any more and Claude is stopped
    in every running bottle, whose work then comes back as usual, before the interruption goes on."""
    results: list[Result] = []
    stopping = threading.Event()
    pool = ThreadPoolExecutor(max_workers=parallel)
    futures = [pool.submit(_run_one, i, plan, task, secrets, owner, argv_for(task), stopping, started)
               for i, (plan, task) in enumerate(zip(plans, tasks), 1)]
    try:
        for future in as_completed(futures):
            results.append(future.result())
            done(results[-1])
    except BaseException:
        stopping.set()
        for f in futures:
            f.cancel()
        engine = runtime.connect()
        for plan in plans:
            bottle.stop_claude(engine, plan.name)
        raise
    finally:
        pool.shutdown(wait=True)
    return sorted(results, key=lambda r: r.index)


def _run_one(index: int, plan: bottle.LaunchPlan, task: Task, secrets: Secrets, owner: str, argv: list[str],
             stopping: threading.Event, started: Callable[[], None] = lambda: None) -> Result:
    began = time.monotonic()
    out = io.BytesIO()
    session = None
    started()
    try:
        if stopping.is_set():
            raise BottleError("not started: the tasks were interrupted")
        engine = runtime.connect()  # one connection per thread
        with Session.launch(engine, plan, secrets, owner) as session:
            code = session.run_headless(argv, out)
    except Exception as e:  # one task's failure is its own result, not the end of the others
        out.write(f"\nError: {e}\n".encode())
        code = e.exit_code if isinstance(e, WorkNotBack) else COULD_NOT_RUN
    brought = session.ended.brought if session and session.ended else None
    return Result(index, task, plan.name, code, time.monotonic() - began, brought.branch if brought else None,
                  out.getvalue().decode(errors="replace"))
