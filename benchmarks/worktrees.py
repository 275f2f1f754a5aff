"""Worktree isolation: setup time, disk per worktree, merge-queue time (DESIGN §12, issue 11).

In one run, on one freshly built repository of ``--files`` files:

- **setup**: ``--tasks`` task worktrees made by ``create_worktrees`` (concurrent,
  bounded) against a bare sequential loop of ``git worktree add``; each side is
  timed ``--rounds`` times, alternating which goes first, after ``sync`` so that
  neither pays for the other's writeback, and the best time of each is kept.  The
  ratio maestro / loop is the figure of merit (target ≤ 1.3).  Nothing is deleted
  until every round is timed: on ext4 without a journal, creating inodes right
  after a mass deletion scans the recently deleted ones (``recently_deleted`` in
  the kernel's inode allocator) and runs up to five times slower for minutes, so
  a side timed after the other side's cleanup measured the file system, not git.
- **disk**: what one worktree costs: its files (``du``) and its admin folder
  (index, HEAD) under ``.git/worktrees``.
- **merge queue**: one commit on each task branch (commit-back), then
  ``run_merge_queue`` merging every branch (no test gate).

Usage: ``python benchmarks/worktrees.py [--files 20000] [--tasks 20] [--rounds 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maestro_parallel.isolation.commit import commit_task
from maestro_parallel.isolation.land import clean
from maestro_parallel.isolation.queue import QueueItem, run_merge_queue
from maestro_parallel.isolation.workspace import (
    TaskWorkspace,
    create_worktrees,
    inspect_repo,
    resolve_base,
)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def build_repo(root: Path, files: int) -> Path:
    """A repository of ``files`` small source files in folders of 100, one commit."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for index in range(files):
        folder = repo / "src" / f"pkg{index // 100:04d}"
        if index % 100 == 0:
            folder.mkdir(parents=True)
        (folder / f"mod{index:05d}.py").write_text(f"VALUE_{index} = {index}\n\ndef f_{index}(x):\n    return x + {index}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def du_kib(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True).stdout.split()[0])


def bare_loop(repo: Path, tasks: int, sha: str, round_: int) -> float:
    """The baseline: ``git worktree add`` for each task, one after another (kept until the end)."""
    base = repo.parent / f"loop-{round_}"
    started = time.perf_counter()
    for index in range(tasks):
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "-q", "-b", f"loop-{round_}/t-{index}", str(base / f"t-{index}"), sha],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started


async def maestro_setup(repo: Path, tasks: int, group: str) -> tuple[float, dict[str, TaskWorkspace]]:
    state = await inspect_repo(repo)
    assert state is not None
    sha = (await resolve_base(state)).sha
    started = time.perf_counter()
    made = await create_worktrees(state, group, [f"t-{i}" for i in range(tasks)], sha)
    elapsed = time.perf_counter() - started
    failed = {t: w for t, w in made.items() if not isinstance(w, TaskWorkspace)}
    if failed:
        raise SystemExit(f"worktree creation failed: {failed}")
    return elapsed, {t: w for t, w in made.items() if isinstance(w, TaskWorkspace)}


async def merge_queue(repo: Path, group: str, workspaces: dict[str, TaskWorkspace]) -> tuple[float, float, int]:
    state = await inspect_repo(repo)
    assert state is not None
    started = time.perf_counter()
    for task_id, ws in workspaces.items():
        (ws.path / f"{task_id}.txt").write_text(f"work of {task_id}\n")
        await commit_task(ws.path, task_id=task_id, title="bench", group_id=group, branch=ws.branch, base_sha=ws.base_sha)
    committed = time.perf_counter() - started
    items = [QueueItem(t, ws.branch) for t, ws in workspaces.items()]
    started = time.perf_counter()
    result = await run_merge_queue(state, group, items, target="main")
    merged = time.perf_counter() - started
    return committed, merged, len(result.merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maestro-bench-wt-") as tmp:
        root = Path(tmp)
        config = root / "gitconfig"
        config.write_text("[user]\n\tname = bench\n\temail = bench@localhost\n")
        os.environ["GIT_CONFIG_GLOBAL"] = str(config)
        os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
        t0 = time.perf_counter()
        repo = build_repo(root, args.files)
        build = time.perf_counter() - t0
        sha = git(repo, "rev-parse", "HEAD")
        loop_times: list[float] = []
        maestro_times: list[float] = []
        workspaces: dict[str, TaskWorkspace] = {}
        group = "bench-0"
        for round_ in range(args.rounds):
            # Alternate which side goes first and flush the previous side's writes before
            # timing; nothing is deleted between timings (see the module's docstring).
            for side in ("loop", "maestro") if round_ % 2 == 0 else ("maestro", "loop"):
                os.sync()
                if side == "loop":
                    loop_times.append(bare_loop(repo, args.tasks, sha, round_))
                    continue
                group = f"bench-{round_}"
                elapsed, workspaces = anyio.run(maestro_setup, repo, args.tasks, group)
                maestro_times.append(elapsed)
        one = next(iter(workspaces.values()))
        admin = Path(git(one.path, "rev-parse", "--absolute-git-dir"))
        disk_files, disk_admin = du_kib(one.path), du_kib(admin)
        committed, merged, count = anyio.run(merge_queue, repo, group, workspaces)
        for round_ in range(args.rounds):
            anyio.run(functools.partial(clean, repo, f"bench-{round_}", force=True))
            shutil.rmtree(repo.parent / f"loop-{round_}", ignore_errors=True)
    best_loop, best_maestro = min(loop_times), min(maestro_times)
    report: dict[str, Any] = {
        "files": args.files,
        "tasks": args.tasks,
        "cpus": os.cpu_count(),
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout.strip(),
        "repo_build_seconds": round(build, 2),
        "setup_loop_seconds": [round(t, 3) for t in loop_times],
        "setup_maestro_seconds": [round(t, 3) for t in maestro_times],
        "setup_ratio": round(best_maestro / best_loop, 3),
        "disk_per_worktree_kib": disk_files,
        "admin_per_worktree_kib": disk_admin,
        "commit_back_seconds": round(committed, 3),
        "merge_queue_seconds": round(merged, 3),
        "merged": count,
    }
    print(f"repository: {args.files} files ({build:.1f} s to build); {args.tasks} worktrees; {report['git']}; {os.cpu_count()} CPUs")
    print(f"{'':34}{'best':>9}  all rounds")
    print(f"{'bare loop of git worktree add':34}{best_loop:8.2f}s  {report['setup_loop_seconds']}")
    print(f"{'maestro create_worktrees':34}{best_maestro:8.2f}s  {report['setup_maestro_seconds']}")
    print(f"{'ratio maestro / loop':34}{report['setup_ratio']:9.2f}  (target ≤ 1.3)")
    print(f"{'disk per worktree':34}{disk_files / 1024:8.1f} MiB files + {disk_admin / 1024:.1f} MiB admin (index)")
    print(f"{'commit-back, all tasks':34}{committed:8.2f}s")
    print(f"{'merge queue, clean branches':34}{merged:8.2f}s  ({count} merged, {merged / max(count, 1):.2f} s each)")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
