"""40 sleeping agents over 2 local Dask workers against the local executor, both through maestro.

Run as ``python benchmarks/dask.py [--agents 40] [--sleep 1] [--workers 2]``.
Each side is one group executed by :class:`AsyncParallelCoordinator` in a real
git repository (the journal, the snapshot, the log files, the verdict): once
with ``[executor] kind = "local"``, once with ``kind = "dask"`` and a
LocalCluster of ``--workers`` processes that the coordinator starts (each
attempt shipped as a commit, run in a scratch clone on a worker, committed and
fetched back as a branch).  Prints a Markdown table side by side: wall times,
and the overhead each task pays over its sleep.
"""

from __future__ import annotations

import os
import sys

# This file is named like the ``dask`` package: keep its folder off the import path (and so off
# the path of the worker processes, which are spawned with this process's sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402

from maestro_parallel import AsyncParallelCoordinator  # noqa: E402


def make_repo(root: Path, sleep: float, kind: str, workers: int) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True)

    root.mkdir()
    git("init", "-q", "-b", "main")
    for n in range(50):  # a small project
        (root / f"file{n}.txt").write_text(f"content {n}\n" * 100)
    (root / ".gitignore").write_text(".flow/\n")
    git("add", "-A")
    git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "base")
    config = root / ".flow" / "maestro" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[agent]\ncommand = ["sleep", "{sleep:g}"]\ntimeout_seconds = 120\ngrace_seconds = 1\n'
        "[refresh]\nenabled = false\n[tests]\nenabled = false\n"
        f'[executor]\nkind = "{kind}"\naddress = ""\nworkers = {workers}\n'
    )


async def through_maestro(root: Path, agents: int, group: str) -> dict[str, Any]:
    """One group of ``agents`` tasks; per task, the time from ``task_started`` to ``task_finished``."""
    marks: dict[str, dict[str, float]] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] in ("task_started", "task_finished"):
            marks.setdefault(event["task_id"], {})[event["event"]] = time.perf_counter()

    tasks = [{"id": f"{group}-{n}", "title": f"sleep {n}", "description": ""} for n in range(agents)]
    async with AsyncParallelCoordinator(root, on_event=on_event) as coordinator:
        began = time.perf_counter()
        if coordinator.executor is not None:  # the cluster is started (or reached) before the group, timed apart
            await coordinator.executor.get(agents)
        cluster_up = time.perf_counter() - began
        began = time.perf_counter()
        meta = await coordinator.execute_parallel_group(tasks, group)
        wall = time.perf_counter() - began
    runs = [m["task_finished"] - m["task_started"] for m in marks.values() if len(m) == 2]
    return {
        "cluster_up": cluster_up,
        "wall": wall,
        "runs": runs,
        "failed": sum(r.get("status") != "completed" for r in meta.results),
        "hosts": len({r.get("host") for r in meta.results if r.get("host")}),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    n, s = args.agents, args.sleep
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="maestro-bench-dask-") as folder:
        for kind in ("local", "dask"):
            root = Path(folder) / kind
            make_repo(root, s, kind, args.workers)
            results[kind] = await through_maestro(root, n, "bench")
    local, dask = results["local"], results["dask"]
    print(f"## Executors: {n} agents of `sleep {s:g}`, local vs {args.workers} local Dask workers (issue 14)\n")
    print(f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}. Both through "
          "`AsyncParallelCoordinator.execute_parallel_group` (journal, logs, verdict), one run.\n")
    print("| measure | local executor | Dask executor |")
    print("|---|---|---|")
    print(f"| starting the LocalCluster (before the group) | - | {dask['cluster_up']:.2f} s |")
    print(f"| group wall time | {local['wall']:.2f} s | {dask['wall']:.2f} s |")
    print(f"| overhead per task, (wall - sleep) / N | {(local['wall'] - s) / n * 1000:.0f} ms | "
          f"{(dask['wall'] - s) / n * 1000:.0f} ms |")
    for label, pick in (("median", statistics.median), ("max", max)):
        print(f"| one task, started to finished (over its sleep), {label} | {pick(local['runs']) - s:.2f} s | "
              f"{pick(dask['runs']) - s:.2f} s |")
    print(f"| failed tasks | {local['failed']} | {dask['failed']} |")
    print(f"| workers used | - | {dask['hosts']} |")
    print("\n" + json.dumps({"local_wall": round(local["wall"], 3), "dask_wall": round(dask["wall"], 3)}))


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
