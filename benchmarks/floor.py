"""The floor: a bare asyncio program that runs N copies of a command at once.

Each copy is spawned with :func:`asyncio.create_subprocess_exec`, stdin from
``/dev/null``, stdout and stderr into one log file per task, in its own session
(as the coordinator starts its agents), and the program waits for all of them.
No journal, no snapshot, no tracker, no prompt: whatever a Python coordinator
does beyond this is overhead.  ``benchmarks/run.py`` times this script as a
whole process, interpreter start-up included, exactly as it times the CLI.

Usage: ``python floor.py N LOG_DIR -- ARGV...``; prints ``{"n": N, "failed": K}``
and exits 1 when a copy failed.

``--watcher pidfd`` installs :class:`asyncio.PidfdChildWatcher` (Python 3.9+
on Linux 5.3+) instead of the default, which on Python 3.11 is the
``ThreadedChildWatcher`` (one thread per child); it is used only to show how
much that watcher costs, never by the benchmark's own floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path


def raise_open_files_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one (N children need N log files at once)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def run_one(index: int, argv: list[str], log_dir: Path) -> int:
    fd = os.open(log_dir / f"task-{index:05d}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
        )
    finally:
        os.close(fd)  # the child holds its own copy
    return await process.wait()


async def main_async(n: int, argv: list[str], log_dir: Path) -> int:
    codes = await asyncio.gather(*(run_one(i, argv, log_dir) for i in range(n)), return_exceptions=True)
    return sum(1 for code in codes if code != 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--watcher", choices=("default", "pidfd"), default="default")
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args()
    raise_open_files_limit()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.watcher == "pidfd":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # child watchers are deprecated in 3.12
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())  # type: ignore[attr-defined]
    failed = asyncio.run(main_async(args.n, args.argv, args.log_dir))
    print(json.dumps({"n": args.n, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
