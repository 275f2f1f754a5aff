"""``run`` on a plan of sleeping agents: steps at the same time, each reporting its own tasks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from click.testing import CliRunner, Result
from helpers import agent_config, pid_alive, runs, task, write_config

from maestro_parallel import AsyncParallelCoordinator
from maestro_parallel.cli import main
from maestro_parallel.trackers import LocalTracker


def invoke(repo: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--repo-root", str(repo), *args])


def seq(task_id: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "title": f"task {task_id}", "description": description, **extra}


def spans(repo: Path) -> dict[str, tuple[float, float]]:
    starts = {e["task"]: e["t"] for e in runs(repo) if e["event"] == "start"}
    ends = {e["task"]: e["t"] for e in runs(repo) if e["event"] == "end"}
    return {t: (starts[t], ends[t]) for t in starts if t in ends}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# The issue's plan, its seconds divided by 4: A{0.5, 1.5} -> B{0.5}; C{1.5}; s1 0.5 -> s2 0.5.
ISSUE_PLAN = [
    task("a1", "sleep=0.5", group="A"),
    task("a2", "sleep=1.5", group="A"),
    task("b1", "sleep=0.5", group="B", dependencies=["a1"]),
    task("c1", "sleep=1.5", group="C"),
    seq("s1", "sleep=0.5"),
    seq("s2", "sleep=0.5", dependencies=["s1"]),
]


def write(repo: Path, tasks: list[dict[str, Any]]) -> str:
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    return str(path)


def test_issue_plan_runs_independent_steps_at_the_same_time(repo: Path) -> None:
    result = invoke(repo, "run", "--tasks-file", write(repo, ISSUE_PLAN), "--concurrent-steps", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "completed"
    steps = {s["step"]: s for s in document["steps"]}
    assert {sid: s["status"] for sid, s in steps.items()} == dict.fromkeys(
        ["A", "B", "C", "_sequential:s1", "_sequential:s2"], "completed"
    )
    # Each step reports its own tasks, the sequential ones included.
    assert [r["task_id"] for r in steps["_sequential:s1"]["group"]["results"]] == ["s1"]
    assert [r["task_id"] for r in steps["_sequential:s2"]["group"]["results"]] == ["s2"]
    assert steps["_sequential:s1"]["detail"] == "1/1 completed"

    times = spans(repo)
    assert overlap(times["a2"], times["c1"]) and overlap(times["a2"], times["s1"])  # independent steps overlap
    assert max(times["a1"][1], times["a2"][1]) <= times["b1"][0]  # B waited for the whole group A
    assert times["s1"][1] <= times["s2"][0]
    makespan = max(end for _, end in times.values()) - min(start for start, _ in times.values())
    serial = sum(max(times[t][1] - times[t][0] for t in step) for step in (["a1", "a2"], ["b1"], ["c1"], ["s1"], ["s2"]))
    assert makespan < 0.8 * serial, (makespan, serial)  # the sum of the steps would be 4.5 s; the chain is 2 s

    again = invoke(repo, "run", "--tasks-file", str(repo / "tasks.json"))
    assert again.exit_code == 0 and "nothing to run" in again.stderr


def test_people_see_each_sequential_step_as_its_own(repo: Path) -> None:
    result = invoke(repo, "run", "--tasks-file", write(repo, [seq("s1"), seq("s2", dependencies=["s1"])]))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "s1 (sequential): completed (1/1 completed)",
        "s2 (sequential): completed (1/1 completed)",
        "plan completed",
    ]


def test_shared_tree_runs_one_step_at_a_time_by_default(repo: Path) -> None:
    plan = [task("x", "sleep=0.3", group="X"), task("y", "sleep=0.3", group="Y"), seq("s", "sleep=0.3")]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--json")
    assert result.exit_code == 0, result.stderr
    ordered = sorted(spans(repo).values())
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def test_a_missing_dependency_blocks_its_step_while_the_others_run(repo: Path) -> None:
    plan = [task("p", group="P", dependencies=["ghost"]), task("q", group="Q", dependencies=["p"]), task("r", group="R")]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--json")
    assert result.exit_code == 3, result.stderr
    document = json.loads(result.stdout)
    assert [(s["step"], s["status"], s["detail"]) for s in document["steps"]] == [
        ("P", "blocked", "waits for a task that exists nowhere: ghost"),
        ("Q", "skipped", "waits for P (blocked)"),
        ("R", "completed", "1/1 completed"),
    ]
    assert document["remaining"] == ["p", "q"]
    assert {e["task"] for e in runs(repo)} == {"r"}


def test_a_cycle_through_groups_is_named_with_exit_2(repo: Path) -> None:
    plan = [task("a1", group="A"), task("a2", group="A", dependencies=["b2"]), task("b1", group="B", dependencies=["a1"]), task("b2", group="B")]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--dry-run")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: dependency cycle between steps: A -> B -> A (a2 waits for b2; b1 waits for a1)"
    )


def test_resume_runs_only_what_did_not_complete(repo: Path) -> None:
    plan = [task("ok", group="G"), task("bad", "exit=1", group="H"), seq("after", dependencies=["bad"])]
    path = write(repo, plan)
    first = invoke(repo, "run", "--tasks-file", path, "--concurrent-steps", "--json")
    assert first.exit_code == 1
    assert [s["status"] for s in json.loads(first.stdout)["steps"]] == ["completed", "failed", "skipped"]

    (repo / "runs.jsonl").unlink()
    plan[1] = task("bad", group="H")  # fixed
    second = invoke(repo, "run", "--tasks-file", write(repo, plan), "--concurrent-steps", "--json")
    assert second.exit_code == 0, second.stderr
    assert [s["step"] for s in json.loads(second.stdout)["steps"]] == ["H", "_sequential:after"]
    assert [e["task"] for e in runs(repo) if e["event"] == "start"] == ["bad", "after"]
    record = json.loads((repo / ".flow" / "maestro" / "plan.json").read_text())
    assert record["status"] == "completed"
    assert [(s["step"], s["status"]) for s in record["steps"]] == [("H", "completed"), ("_sequential:after", "completed")]


def test_agent_budget_caps_agents_across_steps(repo: Path) -> None:
    plan = [task(f"{g}{i}", "sleep=0.3", group=g) for g in ("X", "Y") for i in range(2)]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--concurrent-steps", "--max-agents", "2", "--json")
    assert result.exit_code == 0, result.stderr
    events = sorted((e["t"], 1 if e["event"] == "start" else -1) for e in runs(repo))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2


def test_halt_on_failure_stops_a_running_step_and_its_agents(repo: Path) -> None:
    plan = [task("bad", "exit=1", group="one"), task("slow", "sleep=30", group="two")]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--concurrent-steps", "--halt-on-failure", "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [(s["step"], s["status"]) for s in document["steps"]] == [("one", "failed"), ("two", "halted")]
    slow = [e for e in runs(repo) if e["task"] == "slow"]
    assert all(e["event"] == "start" for e in slow)  # it never got to its end (maybe not even to its start)
    assert not any(pid_alive(e["pid"]) for e in slow)
    status = json.loads(invoke(repo, "status", "--group-id", "two", "--json").stdout)
    assert status["status"] == "failed" and status["results"][0]["error"] == "interrupted"


def test_progress_names_the_waiting_steps_and_what_they_wait_for(repo: Path) -> None:
    plan = [task("a", group="A"), task("b", group="B", dependencies=["a"]), seq("s1"), seq("s2")]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan))
    assert result.exit_code == 0, result.stderr
    assert "step A: completed (1/1 completed)\n  waiting: B (ready); s1 (sequential) (ready); s2 (sequential) for s1 (sequential)\n" in result.stderr


def test_plan_caps_come_from_the_config(repo: Path) -> None:
    write_config(repo, agent_config(extra="[plan]\nmax_parallel_groups = 2\nmax_agents = 1\n"))
    plan = [task(f"{g}1", "sleep=0.2", group=g) for g in ("X", "Y", "Z")]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--concurrent-steps", "--json")
    assert result.exit_code == 0, result.stderr
    ordered = sorted(spans(repo).values())
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))  # one agent at a time

    write_config(repo, agent_config(extra="[plan]\nmax_agents = -1\n"))
    refused = invoke(repo, "run", "--tasks-file", str(repo / "tasks.json"))
    assert refused.exit_code == 2
    assert "[plan].max_agents must be an integer >= 0, got -1" in refused.stderr


def make_git_repo(repo: Path) -> None:
    """Turn the fixture's folder into a real git work tree with a commit (worktree isolation is then possible)."""
    (repo / ".git").rmdir()
    (repo / ".gitignore").write_text("runs.jsonl\n")
    identity = ["-c", "user.name=Test User", "-c", "user.email=test@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*identity, "commit", "-q", "-m", "initial"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_steps_run_at_once_by_default_where_each_agent_gets_a_worktree(repo: Path) -> None:
    make_git_repo(repo)
    plan = [task("x", "sleep=0.8", group="X"), task("y", "sleep=0.8", group="Y")]
    path = write(repo, plan)
    dry = invoke(repo, "run", "--tasks-file", path, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.splitlines()[-1] == "steps run at the same time: worktree isolation (git work tree with a commit)"
    document = json.loads(invoke(repo, "run", "--tasks-file", path, "--dry-run", "--json").stdout)
    assert document["concurrent_steps"] is True

    result = invoke(repo, "run", "--tasks-file", path, "--json")
    assert result.exit_code == 0, result.stderr
    times = spans(repo)
    assert overlap(times["x"], times["y"])
    assert "plan: 2 steps, run at the same time: worktree isolation" in result.stderr


def test_the_dry_run_says_steps_run_one_at_a_time_in_a_shared_tree(repo: Path) -> None:
    path = write(repo, [task("x", group="X"), task("y", group="Y")])
    dry = invoke(repo, "run", "--tasks-file", path, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    last = dry.stdout.splitlines()[-1]
    assert last.startswith("steps run one at a time: the working tree is shared (")
    assert last.endswith("); --concurrent-steps overrides")
    forced = json.loads(invoke(repo, "run", "--tasks-file", path, "--dry-run", "--concurrent-steps", "--json").stdout)
    assert forced["concurrent_steps"] is True and forced["concurrency"].startswith("--concurrent-steps, although")

    write_config(repo, agent_config(extra='[isolation]\nmode = "worktree"\n'))
    refused = invoke(repo, "run", "--tasks-file", path, "--dry-run")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("Error: worktree isolation is impossible: ")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_max_agents_is_one_budget_shared_by_every_step(repo: Path) -> None:
    # X holds three tasks, Y and Z one each; two agents at most across the plan.  A budget reserved per step
    # would keep Y and Z waiting until X ended; one shared budget hands X's freed slot to them at once.
    plan = [task(f"x{i}", "sleep=0.6", group="X") for i in range(3)] + [
        task("y", "sleep=0.6", group="Y"), task("z", "sleep=0.6", group="Z"),
    ]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan), "--concurrent-steps", "--max-agents", "2", "--json")
    assert result.exit_code == 0, result.stderr
    events = sorted((e["t"], 1 if e["event"] == "start" else -1) for e in runs(repo))
    running = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # an end and a start at one instant: the end first
        running += change
        peak = max(peak, running)
    assert peak == 2
    times = spans(repo)
    last_x_end = max(times[f"x{i}"][1] for i in range(3))
    assert min(times["y"][0], times["z"][0]) < last_x_end  # another step's agent started while X still ran


async def test_a_coordinator_shares_its_agent_limiter_between_groups(repo: Path) -> None:
    limiter = anyio.CapacityLimiter(2)
    coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo), agent_limiter=limiter)
    async with anyio.create_task_group() as tg:
        for group in ("one", "two"):
            tg.start_soon(coordinator.execute_parallel_group, [task(f"{group}-{i}", "sleep=0.4", group=group) for i in range(2)], group)
    events = sorted((e["t"], 1 if e["event"] == "start" else -1) for e in runs(repo))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2 and len(spans(repo)) == 4


def test_a_tasks_file_cannot_name_the_reserved_group(repo: Path) -> None:
    plan = [task("a", group="A"), {"id": "x", "title": "x", "description": "[P:Group-_sequential] work"}]
    result = invoke(repo, "run", "--tasks-file", write(repo, plan))
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: task x: group id '_sequential' is reserved for the tasks without a group marker; rename the group\n"
    )
    assert runs(repo) == []


def half_done(repo: Path, complete: tuple[str, ...] = ("C", "_sequential:s1")) -> bool:
    """The plan record has the ``complete`` steps completed, and group A holds a1 completed while a2 runs."""
    try:
        record = json.loads((repo / ".flow" / "maestro" / "plan.json").read_text())
    except (OSError, ValueError):
        return False
    steps = {s["step"]: s["status"] for s in record["steps"]}
    if any(steps.get(step) != "completed" for step in complete):
        return False
    status = invoke(repo, "status", "--group-id", "A", "--json")
    if status.exit_code != 0:
        return False
    results = {r["task_id"]: r["status"] for r in json.loads(status.stdout)["results"]}
    return results == {"a1": "completed", "a2": "in_progress"}


def test_run_again_after_ctrl_c_continues_the_plan(repo: Path) -> None:
    plan = [
        task("a1", "sleep=0.1", group="A"),
        task("a2", "sleep=2", group="A"),
        task("b1", group="B", dependencies=["a1"]),
        task("c1", "sleep=0.1", group="C"),
        seq("s1", "sleep=0.1"),
        seq("s2", dependencies=["s1", "a2"]),
    ]
    path = write(repo, plan)
    command = [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "run", "--tasks-file", path,
               "--concurrent-steps", "--json"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        # Ctrl-C once C and s1 are complete, a1 is recorded complete and a2 runs: a group half done.
        while not half_done(repo):
            assert time.monotonic() < deadline and first.poll() is None, "the plan did not get there"
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    document = json.loads(out)
    assert {s["step"]: s["status"] for s in document["steps"]}["C"] == "completed"
    assert {s["step"]: s["status"] for s in document["steps"]}["A"] == "failed"

    second = invoke(repo, "run", "--tasks-file", path, "--concurrent-steps", "--json")
    assert second.exit_code == 0, second.stderr
    assert {s["step"] for s in json.loads(second.stdout)["steps"]} == {"A", "B", "_sequential:s2"}
    started = [e["task"] for e in runs(repo) if e["event"] == "start"]
    assert sorted(started) == ["a1", "a2", "a2", "b1", "c1", "s1", "s2"]  # only the interrupted a2 ran twice
    assert json.loads((repo / ".flow" / "maestro" / "plan.json").read_text())["status"] == "completed"
    third = invoke(repo, "run", "--tasks-file", path)
    assert third.exit_code == 0 and "nothing to run" in third.stderr


def test_run_again_after_a_crash_continues_the_plan(repo: Path) -> None:
    plan = [task("a1", "sleep=0.1", group="A"), task("a2", "sleep=1.5", group="A"), task("c1", "sleep=0.1", group="C"),
            task("b1", group="B", dependencies=["a2"])]
    path = write(repo, plan)
    command = [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "run", "--tasks-file", path,
               "--concurrent-steps", "--json"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not half_done(repo, complete=("C",)):
            assert time.monotonic() < deadline and first.poll() is None, "the plan did not get there"
            time.sleep(0.05)
    finally:
        first.kill()  # the coordinator dies at once; its agent a2 is left behind
        first.wait(timeout=30)

    second = invoke(repo, "run", "--tasks-file", path, "--concurrent-steps", "--json")
    assert second.exit_code == 0, second.stderr
    assert {s["step"]: s["status"] for s in json.loads(second.stdout)["steps"]} == {"A": "completed", "B": "completed"}
    started = sorted(e["task"] for e in runs(repo) if e["event"] == "start")
    assert started.count("a1") == 1 and started.count("c1") == 1 and started.count("b1") == 1
    assert not any(pid_alive(e["pid"]) for e in runs(repo))

