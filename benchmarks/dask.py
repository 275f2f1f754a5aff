"""40 sleeping agents over 2 local Dask workers, against the same agents spawned locally.

Run as ``python benchmarks/dask.py [--agents 40] [--sleep 1] [--workers 2]``.
The local side is a bare asyncio spawn of the same argv (the floor: no log,
no git); the Dask side is :class:`maestro_parallel.executors.dask.DaskExecutor`
with its own LocalCluster, each attempt shipped as a commit, run in a scratch
clone on a worker, committed and fetched back as a branch.  Prints a Markdown
table: wall times, and the overhead each task pays over its sleep.
"""

from __future__ import annotations

import os
import sys

# This file is named like the ``dask`` package: keep its folder off the import path (and so off
# the path of the worker processes, which are spawned with this process's sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import anyio  # noqa: E402

from maestro_parallel.executors import AttemptOutcome, AttemptSpec, RepoInfo  # noqa: E402
from maestro_parallel.executors.dask import DaskExecutor  # noqa: E402


def make_repo(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()

    root.mkdir()
    git("init", "-q", "-b", "main")
    for n in range(50):  # a small project
        (root / f"file{n}.txt").write_text(f"content {n}\n" * 100)
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "base")
    return git("rev-parse", "HEAD")


async def bare_spawn(argv: list[str], agents: int) -> tuple[float, list[float]]:
    """The floor: spawn every agent at once with asyncio, wait for all; per-agent wall times."""

    async def one() -> float:
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        await proc.wait()
        return time.perf_counter() - began

    began = time.perf_counter()
    times = await asyncio.gather(*(one() for _ in range(agents)))
    return time.perf_counter() - began, list(times)


async def on_dask(argv: list[str], agents: int, workers: int, repo: Path, base: str) -> dict[str, object]:
    started = time.perf_counter()
    async with DaskExecutor("", workers=workers, agents=agents) as executor:
        cluster_up = time.perf_counter() - started
        outcomes: list[AttemptOutcome] = []
        walls: list[float] = []

        async def one(n: int) -> None:
            spec = AttemptSpec(
                task_id=f"t{n}", group_id="bench", title=f"sleep {n}", argv=tuple(argv), prompt="sleep",
                base_sha=base, repo=RepoInfo(repo), timeout_seconds=60, grace_seconds=1,
            )
            began = time.perf_counter()
            outcomes.append(await executor.run(spec, lambda event: None))
            walls.append(time.perf_counter() - began)

        # One attempt alone first: an idle cluster's cost per task, and each worker's base cache warmed.
        warm: list[float] = []
        for n in range(workers):
            began = time.perf_counter()
            await one(-1 - n)
            warm.append(time.perf_counter() - began)
        outcomes.clear()
        walls.clear()
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(agents):
                tg.start_soon(one, n)
        wall = time.perf_counter() - began
    failed = [o for o in outcomes if not o.ok]
    return {
        "cluster_up": cluster_up,
        "alone": min(warm),
        "wall": wall,
        "walls": walls,
        "worker_durations": [o.duration for o in outcomes],
        "failed": len(failed),
        "hosts": len({o.host for o in outcomes}),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    argv = ["sleep", str(args.sleep)]
    with tempfile.TemporaryDirectory(prefix="maestro-bench-dask-") as folder:
        repo = Path(folder) / "repo"
        base = make_repo(repo)
        local_wall, local_times = await bare_spawn(argv, args.agents)
        dask = await on_dask(argv, args.agents, args.workers, repo, base)
    n, s = args.agents, args.sleep
    walls = dask["walls"]
    worker = dask["worker_durations"]
    assert isinstance(walls, list) and isinstance(worker, list)
    print(f"## {n} agents of `sleep {s:g}`: bare local spawn vs {args.workers} local Dask workers\n")
    print(f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}.\n")
    print("| measure | local (bare asyncio spawn) | Dask executor |")
    print("|---|---|---|")
    print(f"| cluster start | - | {dask['cluster_up']:.2f} s |")
    print(f"| one task alone on an idle cluster, submit to branch home | - | {dask['alone']:.2f} s |")
    print(f"| wall time, all {n} at once | {local_wall:.2f} s | {dask['wall']:.2f} s |")
    print(f"| wall over the sleep, per task (wall - sleep) / N | {(local_wall - s) / n * 1000:.0f} ms | "
          f"{(dask['wall'] - s) / n * 1000:.0f} ms |")
    print(f"| one task, submit to branch home, median | {statistics.median(local_times):.2f} s | "
          f"{statistics.median(walls):.2f} s |")
    print(f"| one task, submit to branch home, max | {max(local_times):.2f} s | {max(walls):.2f} s |")
    print(f"| on the worker (clone, run, commit, bundle), median | - | {statistics.median(worker):.2f} s |")
    print(f"| failed attempts | 0 | {dask['failed']} |")
    print(f"| workers used | - | {dask['hosts']} |")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
