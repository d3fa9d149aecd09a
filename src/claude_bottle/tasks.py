"""Many headless tasks, one bottle each, a bounded number at a time: the tasks file, how many fit on
this machine, and running them to results (exit status, duration, branch, output)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from . import bottle, cleanup, docker, image, workspace
from .errors import BottleError

# The exit status of a task whose bottle could not be made or run (docker run uses the same).
COULD_NOT_RUN = 125

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


def read(path: Path, default_workspace: Path | None) -> list[Task]:
    """One task per line: a prompt, or a JSON object {"prompt": …, "workspace": …} (relative to the
    file). Blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BottleError(f"--tasks {path}: cannot read: {e}") from None
    found = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("{"):
            found.append(Task(text, default_workspace))
            continue
        try:
            entry = json.loads(text)
        except ValueError as e:
            raise BottleError(f"{path}:{number}: invalid JSON: {e}") from None
        unknown = set(entry) - {"prompt", "workspace"}
        if unknown or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise BottleError(f'{path}:{number}: a JSON task is {{"prompt": "…", "workspace": "DIR"}} '
                              f"with a non-empty prompt{f'; unknown key {sorted(unknown)[0]!r}' if unknown else ''}")
        ws = entry.get("workspace")
        if ws is not None and not isinstance(ws, str):
            raise BottleError(f"{path}:{number}: workspace must be a folder path")
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


def run_all(plans: list[bottle.LaunchPlan], tasks: list[Task], env: Mapping[str, str], token: str,
            ssh_keys: Mapping[str, bytes], parallel: int, argv_for: Callable[[Task], list[str]],
            done: Callable[[Result], None] = lambda r: None) -> list[Result]:
    """Run each task in its own bottle, `parallel` at a time; every bottle is removed when its task
    ends. Interrupted (Ctrl-C, SIGTERM), it removes the bottles of every task before re-raising."""
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(_run_one, i, plan, task, env, token, ssh_keys, argv_for(task))
                   for i, (plan, task) in enumerate(zip(plans, tasks), 1)]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                done(results[-1])
        except BaseException:
            for f in futures:
                f.cancel()
            engine = docker.connect()
            for plan in plans:  # removing a bottle ends the task running in it
                bottle.teardown(engine, plan.name)
            raise
    return sorted(results, key=lambda r: r.index)


def _run_one(index: int, plan: bottle.LaunchPlan, task: Task, env: Mapping[str, str], token: str,
             ssh_keys: Mapping[str, bytes], argv: list[str]) -> Result:
    began = time.monotonic()
    try:
        engine = docker.connect()  # one connection per thread
        bottle.launch(engine, plan, env, token, cleanup.Owner.current().label(), ssh_keys)
        try:
            branch = None
            if plan.workspace:
                workspace.copy_in(engine, plan.names.container, plan.workspace)
            code, out = engine.exec(plan.names.container, argv, user=image.BOTTLE_USER, workdir=image.WORKSPACE)
            if plan.workspace and workspace.bring_back(engine, plan.names.container, plan.workspace):
                branch = plan.workspace.branch
        finally:
            bottle.teardown(engine, plan.name)
    except Exception as e:  # one task's failure is its own result, not the end of the others
        return Result(index, task, plan.name, COULD_NOT_RUN, time.monotonic() - began, None, f"Error: {e}\n")
    return Result(index, task, plan.name, code, time.monotonic() - began, branch, out.decode(errors="replace"))
