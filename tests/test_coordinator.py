"""The coordinator end to end: real agent processes, real files, real timing (as ratios)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import agent_config, pid_alive, runs, task, write_config

from maestro_parallel import AsyncParallelCoordinator, GroupMetadata, TaskStatus, load_config
from maestro_parallel.errors import GroupBusyError, ValidationError
from maestro_parallel.trackers import LocalTracker, MemoryTracker


def coordinator(repo: Path, tracker: Any = None, **kwargs: Any) -> AsyncParallelCoordinator:
    return AsyncParallelCoordinator(repo, tracker=tracker or LocalTracker(repo), **kwargs)


def by_id(meta: GroupMetadata) -> dict[str, dict[str, Any]]:
    return {r["task_id"]: r for r in meta.results}


def group_dir(repo: Path, group_id: str = "g") -> Path:
    return repo / ".flow" / "maestro" / "parallel_groups" / group_id


def journal(repo: Path, group_id: str = "g") -> list[dict[str, Any]]:
    text = (group_dir(repo, group_id) / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


# --------------------------------------------------------------------------- the happy path


async def test_agents_run_at_once_and_the_group_completes(repo: Path) -> None:
    tasks = [task(f"t{i}", "sleep=1") for i in range(4)]
    meta = await coordinator(repo).execute_parallel_group(tasks, "g")

    assert meta.status is TaskStatus.COMPLETED
    assert meta.errors == []
    results = by_id(meta)
    assert all(r["status"] == "completed" and r["closed"] is True and r["attempts"] == 1 for r in results.values())
    # Overlap from the agents' own timestamps: every agent started before any of them ended.
    record = runs(repo)
    starts = [e["t"] for e in record if e["event"] == "start"]
    ends = [e["t"] for e in record if e["event"] == "end"]
    assert len(starts) == len(ends) == 4
    assert max(starts) < min(ends)
    # The files of DESIGN §5.
    folder = group_dir(repo)
    on_disk = json.loads((folder / "metadata.json").read_text())
    assert on_disk == meta.to_dict()
    for task_id in results:
        assert (folder / "logs" / f"{task_id}.log").read_text().strip() == f"{task_id} working"
        assert "[P:Group-g] sleep=1" in (folder / "prompts" / f"{task_id}.md").read_text()
        assert results[task_id]["log_path"] == f".flow/maestro/parallel_groups/g/logs/{task_id}.log"
    events = journal(repo)
    assert events[0]["event"] == "group_started" and events[0]["schema"] == 1
    phases = [e["phase"] for e in events if e["event"] == "phase_changed"]
    assert phases == ["concurrent_execution", "coordination", "post_execution"]
    assert events[-1] == {**events[-1], "event": "group_finished", "status": "completed"}


async def test_prompts_are_prepared_in_batches_that_let_the_loop_run_between_them(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when every batch is written on the loop, other tasks run between batches."""
    import maestro_parallel.state.store as store_module

    monkeypatch.setattr(store_module, "_INLINE_WRITE_BYTES", 1 << 30)  # every batch written on the loop
    write_config(repo, agent_config().replace(f'[{json.dumps(sys.executable)}, "agent.py", "{{task_id}}"]', '["true"]'))
    turns = 0  # loop turns seen by a task that only yields
    prepared_at: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "task_prepared":
            prepared_at.append(turns)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(count_turns)
        tasks = [task(f"t{i:03d}") for i in range(200)]
        meta = await coordinator(repo, on_event=on_event).execute_parallel_group(tasks, "g")
        tg.cancel_scope.cancel()
    assert meta.status is TaskStatus.COMPLETED and len(prepared_at) == 200
    # Batches of 4, 8, 16, 32, 64, 64 and 12: seven of them, each in a turn of its own.
    assert len(set(prepared_at)) >= 7


async def test_one_failure_does_not_stop_the_others(repo: Path) -> None:
    tasks = [task("bad", "exit=7 print=boom"), task("ok1", "sleep=0.5"), task("ok2", "sleep=0.5")]
    meta = await coordinator(repo).execute_parallel_group(tasks, "g")

    assert meta.status is TaskStatus.FAILED
    assert meta.errors == ["bad: exit code 7: boom"]
    results = by_id(meta)
    assert results["bad"]["status"] == "failed" and results["bad"]["exit_code"] == 7
    assert results["ok1"]["status"] == results["ok2"]["status"] == "completed"
    # Unverified work is not closed, and the test suite does not run.
    assert not any(r.get("closed") for r in meta.results)
    assert any(e["event"] == "tests_finished" and e["status"] == "skipped" for e in journal(repo))


async def test_blocked_tasks_are_skipped_and_the_rest_runs(repo: Path) -> None:
    tasks = [task("free"), task("waits", dependencies=["elsewhere-1"]), task("closed-dep", dependencies=["done-1"])]
    tracker = MemoryTracker([*tasks, {"id": "done-1", "status": "closed"}, {"id": "elsewhere-1"}])
    meta = await coordinator(repo, tracker).execute_parallel_group(tasks, "g")

    assert meta.status is TaskStatus.BLOCKED
    assert meta.errors == []
    results = by_id(meta)
    assert results["waits"]["status"] == "blocked"
    assert results["waits"]["error"] == "blocked by open dependencies: elsewhere-1"
    assert results["waits"]["attempts"] == 0
    assert results["free"]["closed"] is True and results["closed-dep"]["closed"] is True
    assert sorted(e["task"] for e in runs(repo) if e["event"] == "start") == ["closed-dep", "free"]


async def test_an_unknown_dependency_blocks(repo: Path) -> None:
    meta = await coordinator(repo).execute_parallel_group([task("a", dependencies=["ghost"])], "g")
    assert meta.status is TaskStatus.BLOCKED
    assert by_id(meta)["a"]["error"] == "blocked by open dependencies: ghost"
    assert runs(repo) == []


async def test_all_blocked_runs_nothing(repo: Path) -> None:
    tasks = [task("a", dependencies=["x"]), task("b", dependencies=["y"])]
    tracker = MemoryTracker([*tasks, {"id": "x"}, {"id": "y"}])
    meta = await coordinator(repo, tracker).execute_parallel_group(tasks, "g")
    assert meta.status is TaskStatus.BLOCKED
    assert {r["status"] for r in meta.results} == {"blocked"}
    assert ("claim", ("a",)) not in tracker.calls and not any(c[0] == "claim" for c in tracker.calls)
    assert runs(repo) == []


async def test_max_parallel_limits_how_many_run_at_once(repo: Path) -> None:
    write_config(repo, agent_config(extra="").replace("grace_seconds = 1", "grace_seconds = 1\nmax_parallel = 2"))
    tasks = [task(f"t{i}", "sleep=0.4") for i in range(5)]
    meta = await coordinator(repo).execute_parallel_group(tasks, "g")
    assert meta.status is TaskStatus.COMPLETED
    moments = sorted((e["t"], 1 if e["event"] == "start" else -1) for e in runs(repo))
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    assert peak == 2


# --------------------------------------------------------------------------- timeouts and stopping


async def test_task_timeout_kills_the_whole_agent_tree(repo: Path) -> None:
    write_config(repo, agent_config().replace("timeout_seconds = 60", "timeout_seconds = 1"))
    started = time.monotonic()
    meta = await coordinator(repo).execute_parallel_group([task("slow", "sleep=60 grandchild"), task("quick")], "g")
    elapsed = time.monotonic() - started

    results = by_id(meta)
    assert results["slow"]["status"] == "failed"
    assert results["slow"]["error"] == "timed out after 1s"
    assert results["quick"]["status"] == "completed"
    assert elapsed < 20
    grandchild = int((repo / "grandchild-slow.pid").read_text())
    assert not pid_alive(grandchild)
    assert not pid_alive(results["slow"]["pid"])


async def test_group_timeout_stops_every_agent(repo: Path) -> None:
    write_config(repo, agent_config().replace("grace_seconds = 1", "grace_seconds = 1\ngroup_timeout_seconds = 1"))
    meta = await coordinator(repo).execute_parallel_group([task("a", "sleep=60"), task("b", "sleep=60")], "g")
    assert meta.status is TaskStatus.FAILED
    assert {r["error"] for r in meta.results} == {"group timed out after 1s"}
    assert "group timed out after 1s" in meta.errors
    assert not any(pid_alive(r["pid"]) for r in meta.results)


async def test_interrupt_stops_agents_and_records_final_state(repo: Path) -> None:
    coord = coordinator(repo)
    result: list[GroupMetadata] = []

    async def run() -> None:
        result.append(await coord.execute_parallel_group([task("a", "sleep=60 grandchild"), task("b", "sleep=60")], "g"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_until(lambda: len([e for e in runs(repo) if e["event"] == "start"]) == 2)
        await wait_until(lambda: (repo / "grandchild-a.pid").exists())
        coord.interrupt("interrupted by SIGINT")

    meta = result[0]
    assert meta.status is TaskStatus.FAILED
    assert {r["error"] for r in meta.results} == {"interrupted"}
    assert "run interrupted by SIGINT" in meta.errors
    assert json.loads((group_dir(repo) / "metadata.json").read_text())["status"] == "failed"
    assert not pid_alive(int((repo / "grandchild-a.pid").read_text()))
    assert not any(pid_alive(e["pid"]) for e in runs(repo))


async def test_cancellation_by_the_caller_cleans_up_and_propagates(repo: Path) -> None:
    coord = coordinator(repo)
    with anyio.move_on_after(1.5) as scope:
        await coord.execute_parallel_group([task("a", "sleep=60 grandchild")], "g")
    assert scope.cancelled_caught
    on_disk = json.loads((group_dir(repo) / "metadata.json").read_text())
    assert on_disk["status"] == "failed"
    assert on_disk["results"][0]["error"] == "interrupted"
    assert "run interrupted: cancelled" in on_disk["errors"]
    assert not pid_alive(int((repo / "grandchild-a.pid").read_text()))


async def test_halt_on_failure_stops_the_other_agents(repo: Path) -> None:
    started = time.monotonic()
    meta = await coordinator(repo).execute_parallel_group(
        [task("bad", "sleep=0.3 exit=1"), task("slow1", "sleep=60"), task("slow2", "sleep=60")],
        "g",
        halt_on_failure=True,
    )
    assert time.monotonic() - started < 30
    results = by_id(meta)
    assert results["bad"]["error"].startswith("exit code 1")
    assert results["slow1"]["error"] == results["slow2"]["error"] == "halted"
    assert meta.status is TaskStatus.FAILED


async def test_a_task_the_tracker_closes_counts_as_completed(repo: Path) -> None:
    tasks = [task("self-closing", "sleep=60"), task("normal")]
    tracker = MemoryTracker(tasks)
    coord = coordinator(repo, tracker)
    result: list[GroupMetadata] = []

    async def run() -> None:
        result.append(await coord.execute_parallel_group(tasks, "g"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_until(lambda: any(e["task"] == "self-closing" for e in runs(repo)))
        tracker.set_status("self-closing", "closed")  # the agent closed its own task

    results = by_id(result[0])
    assert result[0].status is TaskStatus.COMPLETED
    assert results["self-closing"]["status"] == "completed"
    assert results["self-closing"]["closed"] is True
    closed = [ids for method, ids in tracker.calls if method == "close"]
    assert closed == [("normal",)]  # not closed again
    assert not pid_alive(results["self-closing"]["pid"])


async def test_the_tracker_is_asked_once_per_tick_for_all_running_tasks(repo: Path) -> None:
    tasks = [task(f"t{i}", "sleep=1.2") for i in range(6)]
    tracker = MemoryTracker(tasks)
    await coordinator(repo, tracker).execute_parallel_group(tasks, "g")
    polls = [ids for method, ids in tracker.calls if method == "fetch_statuses"]
    assert polls, "the poller never ran"
    assert all(len(ids) > 1 for ids in polls[:2])  # one call covers every running task
    assert len(polls) <= 1.2 / 0.2 + 3


async def test_a_tracker_that_fails_while_polling_is_recorded_once(repo: Path) -> None:
    tasks = [task("a", "sleep=1"), task("b", "sleep=1")]
    tracker = MemoryTracker(tasks, fail_statuses="bd: connection refused")
    meta = await coordinator(repo, tracker).execute_parallel_group(tasks, "g")
    assert meta.status is TaskStatus.COMPLETED
    warnings = [e for e in journal(repo) if e["event"] == "warning" and "tracker poll failed" in e["message"]]
    assert len(warnings) == 1


# --------------------------------------------------------------------------- phase 1


async def test_a_missing_agent_executable_fails_the_group_before_any_launch(repo: Path) -> None:
    write_config(repo, agent_config().replace(f"[{json.dumps(sys.executable)}", '["no-such-agent-binary"'))
    tasks = [task("a"), task("b")]
    tracker = MemoryTracker(tasks)
    meta = await coordinator(repo, tracker).execute_parallel_group(tasks, "g")
    assert meta.status is TaskStatus.FAILED
    for result in meta.results:
        assert result["error"] == "agent executable not found: no-such-agent-binary ([agent].command)"
        assert result["attempts"] == 0
    assert not any(method == "claim" for method, _ in tracker.calls)
    assert runs(repo) == []


async def test_refresh_output_reaches_every_prompt(repo: Path) -> None:
    (repo / "summary.py").write_text("print('STATE: 3 services, 12 open issues')\n")
    write_config(
        repo,
        agent_config().replace(
            "[refresh]\nenabled = false", f"[refresh]\ncommand = [{json.dumps(sys.executable)}, \"summary.py\"]"
        ),
    )
    meta = await coordinator(repo).execute_parallel_group([task("a"), task("b")], "g")
    assert meta.pre_group_refresh_completed is True
    for task_id in ("a", "b"):
        prompt = (group_dir(repo) / "prompts" / f"{task_id}.md").read_text()
        assert "## Current project state\n\nSTATE: 3 services, 12 open issues" in prompt


async def test_a_failed_refresh_is_a_warning_not_an_error(repo: Path) -> None:
    write_config(
        repo, agent_config().replace("[refresh]\nenabled = false", '[refresh]\ncommand = ["no-such-summary-tool"]')
    )
    meta = await coordinator(repo).execute_parallel_group([task("a")], "g")
    assert meta.status is TaskStatus.COMPLETED
    assert meta.errors == []
    assert meta.pre_group_refresh_completed is False
    assert by_id(meta)["a"]["warnings"] == [
        "context refresh failed: executable not found: no-such-summary-tool ([refresh].command)"
    ]


async def test_subagents_and_skills_reach_the_agent(repo: Path) -> None:
    agents = repo / ".claude" / "agents"
    agents.mkdir(parents=True)
    (agents / "api-dev.md").write_text("---\nname: api-dev\ndescription: APIs\n---\nYou build APIs.\n")
    skill = repo / ".claude" / "skills" / "lint"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: lint\n---\nRun the linter before you finish.\n")
    (repo / "agent.py").write_text(
        "import os, sys\nprint(os.environ['MAESTRO_SUBAGENT'], os.environ['MAESTRO_SKILLS'])\n"
    )
    spec = task("a", metadata={"subagent_type": "ghost", "fallback_agents": ["nobody", "api-dev"],
                               "applicable_skills": ["lint", "missing-skill"]})
    meta = await coordinator(repo).execute_parallel_group([spec], "g")

    result = by_id(meta)["a"]
    assert result["status"] == "completed"
    assert result["subagent"] == "api-dev"
    assert result["skills_applied"] == ["lint"]
    assert result["skills_missing"] == ["missing-skill"]
    assert "skill 'missing-skill' not found; running without it" in result["warnings"]
    assert meta.errors == []
    prompt = (group_dir(repo) / "prompts" / "a.md").read_text()
    assert "Use the `api-dev` subagent" in prompt
    assert "## Skill: lint\n\nRun the linter before you finish." in prompt
    assert prompt.index("## Skill: lint") < prompt.index("## Task a")
    assert "name: lint" not in prompt
    assert (group_dir(repo) / "logs" / "a.log").read_text().split() == ["api-dev", "lint"]


async def test_a_prompt_too_large_for_argv_fails_its_task_clearly(repo: Path) -> None:
    write_config(repo, agent_config().replace('"{task_id}"]', '"{task_id}", "{prompt}"]'))
    meta = await coordinator(repo).execute_parallel_group([task("big", "x" * 200_000), task("small")], "g")
    results = by_id(meta)
    assert results["big"]["status"] == "failed"
    assert "too large for one argv element" in results["big"]["error"]
    assert "{prompt_file}" in results["big"]["error"]
    assert results["small"]["status"] == "completed"


async def test_closed_tasks_handed_in_are_not_run(repo: Path) -> None:
    meta = await coordinator(repo).execute_parallel_group([task("done", status="closed"), task("todo")], "g")
    results = by_id(meta)
    assert results["done"]["status"] == "completed" and results["done"]["attempts"] == 0
    assert [e["task"] for e in runs(repo) if e["event"] == "start"] == ["todo"]


@pytest.mark.parametrize(
    ("tasks", "group_id", "message"),
    [
        ([], "g", "the task list is empty"),
        ([task("a")], "../x", "invalid group id"),
        ([task("a")], "/abs", "invalid group id"),
        ([task("a")], "", "invalid group id"),
        ([task("a")], "x" * 65, "invalid group id"),
        ([{"title": "no id"}], "g", "has no 'id'"),
        ([task("../../etc/passwd")], "g", "is not a safe name"),
        ([task("a"), task("a")], "g", "duplicate task id 'a'"),
        ("not a list", "g", "tasks must be a list"),
    ],
)
async def test_an_invalid_group_raises_and_writes_nothing(
    repo: Path, tasks: Any, group_id: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await coordinator(repo).execute_parallel_group(tasks, group_id)
    assert not (repo / ".flow" / "maestro" / "parallel_groups").exists()


# --------------------------------------------------------------------------- phase 4


def config_with_tests(command: str) -> str:
    return agent_config().replace(
        "[tests]\nenabled = false", f"[tests]\ncommand = [{json.dumps(sys.executable)}, \"-c\", {json.dumps(command)}]"
    )


async def test_a_failing_test_suite_fails_the_group_and_closes_nothing(repo: Path) -> None:
    write_config(repo, config_with_tests("print('2 failed'); raise SystemExit(1)"))
    meta = await coordinator(repo).execute_parallel_group([task("a"), task("b")], "g")
    assert meta.status is TaskStatus.FAILED
    assert meta.errors == ["tests: exit code 1: 2 failed"]
    assert not any(r.get("closed") for r in meta.results)
    assert (group_dir(repo) / "logs" / "_tests.log").read_text().strip() == "2 failed"

    # Rerun after a fix: the tasks are not run again; the test gate runs and the tasks are closed.
    write_config(repo, config_with_tests("import os; print('ok', os.environ['MAESTRO_GROUP_ID'])"))
    meta = await coordinator(repo).execute_parallel_group([task("a"), task("b")], "g")
    assert meta.status is TaskStatus.COMPLETED
    assert all(r["closed"] is True and r["attempts"] == 1 for r in meta.results)
    assert len([e for e in runs(repo) if e["event"] == "start"]) == 2
    assert (group_dir(repo) / "logs" / "_tests.log").read_text().strip() == "ok g"


async def test_test_suites_of_two_groups_never_overlap(repo: Path) -> None:
    script = (
        "import json, os, time; f = open('tests-runs.jsonl', 'a');"
        "f.write(json.dumps({'g': os.environ['MAESTRO_GROUP_ID'], 's': time.time()}) + '\\n'); f.flush();"
        "time.sleep(0.8); f.write(json.dumps({'g': os.environ['MAESTRO_GROUP_ID'], 'e': time.time()}) + '\\n')"
    )
    write_config(repo, config_with_tests(script))
    async with anyio.create_task_group() as tg:
        for group_id in ("g1", "g2"):
            tg.start_soon(coordinator(repo).execute_parallel_group, [task(f"{group_id}-t", group=group_id)], group_id)
    lines = [json.loads(line) for line in (repo / "tests-runs.jsonl").read_text().splitlines()]
    spans = {}
    for line in lines:
        spans.setdefault(line["g"], {}).update(line)
    first, second = sorted(spans.values(), key=lambda s: s["s"])
    assert first["e"] <= second["s"]


# --------------------------------------------------------------------------- resume


async def test_resume_runs_only_what_did_not_complete(repo: Path) -> None:
    first = await coordinator(repo).execute_parallel_group([task("a"), task("b", "exit=3")], "g")
    assert first.status is TaskStatus.FAILED

    meta = await coordinator(repo).execute_parallel_group([task("a"), task("b"), task("c")], "g")
    assert meta.status is TaskStatus.COMPLETED
    assert meta.tasks == ["a", "b", "c"]
    results = by_id(meta)
    assert results["a"]["attempts"] == 1
    assert results["b"]["attempts"] == 2
    assert results["c"]["attempts"] == 1
    starts = [e["task"] for e in runs(repo) if e["event"] == "start"]
    assert starts.count("a") == 1 and starts.count("b") == 2
    assert meta.errors == []


async def test_a_completed_group_is_not_run_again(repo: Path) -> None:
    first = await coordinator(repo).execute_parallel_group([task("a")], "g")
    again = await coordinator(repo).execute_parallel_group([task("a")], "g")
    assert again.to_dict() == first.to_dict()
    assert len(runs(repo)) == 2  # one start, one end


async def test_restart_sets_the_state_aside(repo: Path) -> None:
    await coordinator(repo).execute_parallel_group([task("a")], "g")
    meta = await coordinator(repo).execute_parallel_group([task("a")], "g", restart=True)
    assert meta.status is TaskStatus.COMPLETED
    assert by_id(meta)["a"]["attempts"] == 1
    history = list((group_dir(repo) / "history").iterdir())
    assert len(history) == 1
    assert {p.name for p in history[0].iterdir()} >= {"metadata.json", "events.jsonl", "logs", "prompts"}
    assert len([e for e in runs(repo) if e["event"] == "start"]) == 2


def start_cli(repo: Path, tasks: list[dict[str, Any]], *extra: str) -> subprocess.Popen[bytes]:
    (repo / "tasks.json").write_text(json.dumps(tasks))
    return subprocess.Popen(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
         "--tasks-file", str(repo / "tasks.json"), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_kill_9_of_the_coordinator_then_resume(repo: Path) -> None:
    proc = start_cli(repo, [task("a", "sleep=60 grandchild"), task("b", "sleep=60"), task("c")])
    try:
        await wait_until(lambda: len([e for e in runs(repo) if e["event"] == "start"]) == 3)
        await wait_until(lambda: any(e.get("task") == "c" and e["event"] == "end" for e in runs(repo)))
        await wait_until(
            lambda: (group_dir(repo) / "events.jsonl").exists()
            and any(e["event"] == "task_finished" and e["task_id"] == "c" for e in journal(repo))
        )
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    orphans = {e["task"]: e["pid"] for e in runs(repo) if e["event"] == "start" and e["task"] != "c"}
    grandchild = int((repo / "grandchild-a.pid").read_text())
    assert all(pid_alive(pid) for pid in orphans.values()) and pid_alive(grandchild)

    # A reader sees the dead run as stale.
    coord = coordinator(repo)
    seen = await coord.wait_for_group("g", timeout_seconds=5)
    assert seen is not None and seen.stale and seen.metadata.status is TaskStatus.IN_PROGRESS

    meta = await coord.execute_parallel_group([task("a"), task("b"), task("c")], "g")
    assert meta.status is TaskStatus.COMPLETED
    results = by_id(meta)
    assert results["a"]["attempts"] == results["b"]["attempts"] == 2
    assert results["c"]["attempts"] == 1  # its end was journaled: not run again
    assert not any(pid_alive(pid) for pid in orphans.values()) and not pid_alive(grandchild)
    interrupted = [e for e in journal(repo) if e["event"] == "task_finished" and e.get("error") == "interrupted"]
    assert sorted(e["task_id"] for e in interrupted) == ["a", "b"]


async def test_a_second_coordinator_is_refused_with_the_holders_pid(repo: Path) -> None:
    proc = start_cli(repo, [task("a", "sleep=60")])
    try:
        await wait_until(lambda: any(e["event"] == "start" for e in runs(repo)))
        with pytest.raises(GroupBusyError) as caught:
            await coordinator(repo).execute_parallel_group([task("a")], "g")
        assert caught.value.holder_pid == proc.pid
        assert f"pid {proc.pid}" in str(caught.value)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 143


# --------------------------------------------------------------------------- retries and events


async def test_a_rate_limited_attempt_is_retried(repo: Path) -> None:
    (repo / "agent.py").write_text(
        "import os, sys\n"
        "marker = 'attempted-' + sys.argv[1]\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close(); print('API Error: 429 rate limit exceeded'); sys.exit(1)\n"
        "print('done')\n"
    )
    meta = await coordinator(repo).execute_parallel_group([task("a")], "g")
    result = by_id(meta)["a"]
    assert result["status"] == "completed"
    assert result["attempts"] == 2
    assert any("retrying" in w for w in result["warnings"])
    log = (group_dir(repo) / "logs" / "a.log").read_text()
    assert "429 rate limit" in log and "=== maestro-parallel: attempt 2 ===" in log and log.endswith("done\n")


async def test_every_event_reaches_the_callback_in_journal_order(repo: Path) -> None:
    seen: list[dict[str, Any]] = []
    await coordinator(repo, on_event=seen.append).execute_parallel_group([task("a"), task("b")], "g")
    on_disk = journal(repo)
    assert [e["event"] for e in seen] == [e["event"] for e in on_disk]
    assert all(e["group_id"] == "g" for e in seen)


async def test_the_default_config_is_loaded_from_the_repository(repo: Path) -> None:
    coord = AsyncParallelCoordinator(repo)
    assert coord.config == load_config(repo)
    assert coord.tracker.name == "local"
    assert coord.repo_root == repo.resolve()


async def test_repo_root_is_found_upward(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = repo / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert AsyncParallelCoordinator(config=load_config(repo)).repo_root == repo.resolve()


async def test_list_and_get_groups(repo: Path) -> None:
    coord = coordinator(repo)
    await coord.execute_parallel_group([task("a", group="one")], "one")
    await coord.execute_parallel_group([task("b", "exit=1", group="two")], "two")
    assert [g.group_id for g in await coord.list_groups()] == ["two", "one"]
    assert [g.group_id for g in await coord.list_groups("failed")] == ["two"]
    assert (await coord.get_group("one")).status is TaskStatus.COMPLETED
    assert await coord.get_group("nope") is None
    assert await coord.wait_for_group_completion("one", timeout_seconds=1) is True
    assert await coord.wait_for_group_completion("two", timeout_seconds=1) is False
