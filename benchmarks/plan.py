"""Benchmark whole-plan runs: makespan against the critical path (issue 12's target: ≤ 1.2).

Run ``python benchmarks/plan.py`` with the project's virtual environment.  It
measures, in one run on one machine:

- the issue's plan (A{2 s, 6 s} -> B{2 s}; C{6 s}; s1 2 s -> s2 2 s) through
  the real CLI, ``maestro-parallel run --concurrent-steps``, with agents that
  sleep (real processes), and once more one step at a time (the shared-tree
  default) for comparison;
- a generated plan of 50 groups (1-4 tasks each, durations 1-6 s, each group
  depending on up to two earlier groups), seeded, through the real CLI too,
  and once more under one budget of 8 agents for the whole plan (``--max-agents 8``);
- the scheduler alone on the same 50-group plan with steps that only
  ``anyio.sleep`` (what scheduling itself costs).

Makespan is the first agent's start to the last agent's end (what the agents
recorded); the critical path is computed by ``maestro_parallel.graph`` from the
planned durations.  ``--scale`` shrinks every duration (``--scale 0.25`` for a
quick look); ``--write`` puts the table into ``benchmarks/RESULTS.md`` (below
run.py's keep marker, replacing an earlier table of this script).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maestro_parallel.graph import build_graph, critical_path  # noqa: E402
from maestro_parallel.runtime.scheduler import StepOutcome, StepStatus, makespan, run_plan  # noqa: E402
from maestro_parallel.tasks import parse_tasks  # noqa: E402

BEGIN, END = "<!-- benchmarks/plan.py:begin -->", "<!-- benchmarks/plan.py:end -->"

AGENT = r'''
import json, os, sys, time
task, seconds = sys.argv[1], float(sys.argv[2])
record = os.path.join(os.environ["MAESTRO_REPO_ROOT"], "runs.jsonl")
start = time.time()
time.sleep(seconds)
with open(record, "a") as f:
    f.write(json.dumps({"task": task, "start": start, "end": time.time()}) + "\n")
'''

CONFIG = """
[agent]
command = [{python}, "agent.py", "{{task_id}}", "{{title}}"]
timeout_seconds = 600
grace_seconds = 1

[refresh]
enabled = false

[tests]
enabled = false

[tracker]
kind = "local"
poll_interval_seconds = 0.5
"""


def group_task(task_id: str, group: str | None, seconds: float, deps: list[str]) -> dict[str, Any]:
    marker = f"[P:Group-{group}] " if group else ""
    return {"id": task_id, "title": f"{seconds:.3f}", "description": f"{marker}sleep", "dependencies": deps}


def issue_plan(scale: float) -> list[dict[str, Any]]:
    return [
        group_task("a1", "A", 2 * scale, []),
        group_task("a2", "A", 6 * scale, []),
        group_task("b1", "B", 2 * scale, ["a1"]),
        group_task("c1", "C", 6 * scale, []),
        group_task("s1", None, 2 * scale, []),
        group_task("s2", None, 2 * scale, ["s1"]),
    ]


def generated_plan(scale: float, groups: int = 50, seed: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    firsts: list[str] = []
    for g in range(groups):
        deps = rng.sample(firsts, k=min(len(firsts), rng.choice([0, 0, 1, 1, 2]))) if firsts else []
        members = rng.randint(1, 4)
        for m in range(members):
            tasks.append(group_task(f"g{g}-t{m}", f"G{g}", rng.uniform(1, 6) * scale, deps if m == 0 else []))
        firsts.append(f"g{g}-t0")
    return tasks


def durations_of(tasks: list[dict[str, Any]]) -> dict[str, float]:
    return {t["id"]: float(t["title"]) for t in tasks}


def path_of(tasks: list[dict[str, Any]]) -> float:
    return critical_path(build_graph(parse_tasks(tasks)), durations_of(tasks)).length


def run_cli(tasks: list[dict[str, Any]], *, concurrent: bool, max_agents: int = 0) -> tuple[float, float, int]:
    """(makespan from the agents' records, wall time of the CLI, steps) for one real run."""
    with tempfile.TemporaryDirectory(prefix="maestro-plan-") as folder:
        repo = Path(folder)
        (repo / ".git").mkdir()
        (repo / "agent.py").write_text(AGENT)
        (repo / ".flow" / "maestro").mkdir(parents=True)
        (repo / ".flow" / "maestro" / "config.toml").write_text(CONFIG.format(python=json.dumps(sys.executable)))
        (repo / "tasks.json").write_text(json.dumps(tasks))
        argv = [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "-q", "run",
                "--tasks-file", str(repo / "tasks.json"), "--json"] + (["--concurrent-steps"] if concurrent else [])
        argv += ["--max-agents", str(max_agents)] if max_agents else []
        began = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
        wall = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
        document = json.loads(done.stdout)
        records = [json.loads(line) for line in (repo / "runs.jsonl").read_text().splitlines()]
        if len(records) != len(tasks) or document["status"] != "completed":
            raise SystemExit(f"run incomplete: {len(records)} of {len(tasks)} agents, status {document['status']}")
        span = max(r["end"] for r in records) - min(r["start"] for r in records)
        return span, wall, len(document["steps"])


def run_in_process(tasks: list[dict[str, Any]]) -> float:
    durations = durations_of(tasks)
    graph = build_graph(parse_tasks(tasks))

    async def step(s: Any) -> StepOutcome:
        await anyio.sleep(max(durations[t] for t in s.task_ids))
        return StepOutcome(StepStatus.COMPLETED)

    async def main() -> float:
        return makespan(await run_plan(graph, step, durations=durations))

    return anyio.run(main)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration (default 1)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float, float, str]] = []
    issue = issue_plan(args.scale)
    big = generated_plan(args.scale)
    started = time.monotonic()
    for name, tasks in (("issue plan (5 steps)", issue), ("generated, 50 groups", big)):
        path = path_of(tasks)
        span, wall, steps = run_cli(tasks, concurrent=True)
        rows.append((name, "run --concurrent-steps", span, path, span / path, f"{steps} steps, {len(tasks)} agents, CLI {wall:.2f} s"))
        print(rows[-1], file=sys.stderr)
    path = path_of(issue)
    span, wall, steps = run_cli(issue, concurrent=False)
    rows.append(("issue plan (5 steps)", "run (shared tree: one step at a time)", span, path, span / path, f"CLI {wall:.2f} s"))
    # One agent budget shared by every step: the bound is the critical path or the work divided by the budget.
    cap = 8
    bound = max(path_of(big), sum(durations_of(big).values()) / cap)
    span, wall, steps = run_cli(big, concurrent=True, max_agents=cap)
    rows.append(("generated, 50 groups", f"run --concurrent-steps --max-agents {cap}", span, bound, span / bound,
                 f"bound: max(critical path, work / {cap}); CLI {wall:.2f} s"))
    print(rows[-1], file=sys.stderr)
    span = run_in_process(big)
    rows.append(("generated, 50 groups", "scheduler alone (anyio.sleep steps)", span, path_of(big), span / path_of(big), "no processes"))
    table = [
        "## Whole plans (issue 12)",
        "",
        f"`python benchmarks/plan.py{' --scale ' + str(args.scale) if args.scale != 1 else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - started:.0f} s in all. Agents are real "
        "processes that sleep for their task's duration; makespan runs from the first agent's start to the last one's "
        "end; the critical path is the longest chain of steps, a step lasting as long as its longest task. "
        "Target: makespan ≤ 1.2 × critical path. Under `--max-agents` no plan can beat the work divided by the "
        "budget, so that row compares with the larger of the two.",
        "",
        "| plan | how | makespan s | critical path (or bound) s | ratio | verdict | detail |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, how, span, path, ratio, detail in rows:
        target = "one step at a time" not in how and "--max-agents" not in how
        verdict = ("met" if ratio <= 1.2 else "MISSED") if target else "(not a target)"
        table.append(f"| {name} | {how} | {span:.2f} | {path:.2f} | {ratio:.3f} | {verdict} | {detail} |")
    text = "\n".join(table)
    print(text)
    if args.write:
        results = ROOT / "benchmarks" / "RESULTS.md"
        old = results.read_text() if results.exists() else ""
        block = f"{BEGIN}\n{text}\n{END}"
        if BEGIN in old and END in old:  # in place: the hand-written notes below the table stay below it
            results.write_text(old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :])
        else:
            results.write_text(old.rstrip("\n") + f"\n\n{block}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
