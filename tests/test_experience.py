"""What people and embedding programs see: live progress, events, logs, whole-plan runs, cancel, init."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from helpers import runs, task
from rich.console import Console

from maestro_parallel import AsyncParallelCoordinator, load_config
from maestro_parallel.cli import main
from maestro_parallel.cli.progress import LiveProgress, describe_event
from maestro_parallel.config import Config, config_template, loads_config
from maestro_parallel.trackers import LocalTracker


def invoke(repo: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--repo-root", str(repo), *args])


def write_tasks(repo: Path, tasks: list[dict[str, Any]]) -> str:
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    return str(path)


def seq(task_id: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "title": f"task {task_id}", "description": description, **extra}


def spans(repo: Path) -> dict[str, tuple[float, float]]:
    starts = {e["task"]: e["t"] for e in runs(repo) if e["event"] == "start"}
    ends = {e["task"]: e["t"] for e in runs(repo) if e["event"] == "end"}
    return {t: (starts[t], ends[t]) for t in starts if t in ends}


# --------------------------------------------------------------------------- a plan

PLAN = [
    task("b1", group="backend"),
    task("b2", group="backend"),
    task("f1", group="frontend", dependencies=["b1"]),
    seq("s1", dependencies=["b2"]),
    seq("s2", dependencies=["s1"]),
    task("late", group="late", dependencies=["s2"]),
    seq("free"),
]


# --------------------------------------------------------------------------- run


def test_run_dry_run_prints_the_plan_and_writes_nothing(repo: Path) -> None:
    path = write_tasks(repo, PLAN)
    people = invoke(repo, "run", "--tasks-file", path, "--dry-run")
    assert people.exit_code == 0, people.stderr
    assert "plan: 7 tasks in 6 steps" in people.stdout
    assert "3. s1 (sequential)    s1      [waits for backend]" in people.stdout
    assert "4. s2 (sequential)    s2      [waits for s1 (sequential)]" in people.stdout
    assert "6. free (sequential)  free    [after s2 (sequential) ends]" in people.stdout
    assert "critical path (4 steps): backend -> s1 (sequential) -> s2 (sequential) -> late" in people.stdout
    document = json.loads(invoke(repo, "run", "--tasks-file", path, "--dry-run", "--json").stdout)
    assert [s["step"] for s in document["steps"]] == [
        "backend", "frontend", "_sequential:s1", "_sequential:s2", "late", "_sequential:free",
    ]
    assert not (repo / ".flow" / "maestro" / "parallel_groups").exists()
    assert runs(repo) == []


def test_run_executes_the_whole_plan_in_order(repo: Path) -> None:
    tasks = [{**t, "description": t["description"] + " sleep=0.3"} for t in PLAN]
    result = invoke(repo, "run", "--tasks-file", write_tasks(repo, tasks), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "completed" and document["remaining"] == []
    assert [s["step"] for s in document["steps"]] == [
        "backend", "frontend", "_sequential:s1", "_sequential:s2", "late", "_sequential:free",
    ]
    # Each step reports its own tasks only.
    assert [[r["task_id"] for r in s["group"]["results"]] for s in document["steps"]] == [
        ["b1", "b2"], ["f1"], ["s1"], ["s2"], ["late"], ["free"],
    ]
    times = spans(repo)
    assert set(times) == {t["id"] for t in PLAN}
    assert times["b1"][1] <= times["f1"][0] and times["b2"][1] <= times["s1"][0]
    assert times["s1"][1] <= times["s2"][0] <= times["s2"][1] <= times["late"][0]
    # Sequential tasks run one at a time; the group's tasks ran together.
    assert times["s1"][1] <= times["free"][0] or times["free"][1] <= times["s1"][0]
    assert max(times["b1"][0], times["b2"][0]) < min(times["b1"][1], times["b2"][1])
    # The sequential tasks are kept under the reserved group.
    status = json.loads(invoke(repo, "status", "--group-id", "_sequential", "--json").stdout)
    assert {r["task_id"]: r["status"] for r in status["results"]} == {"s1": "completed", "s2": "completed", "free": "completed"}


def test_a_failed_step_stops_only_what_depends_on_it_unless_halt(repo: Path) -> None:
    tasks = [task("bad", "exit=1", group="one"), task("after", group="two", dependencies=["bad"]), task("other", group="three")]
    path = write_tasks(repo, tasks)
    kept = invoke(repo, "run", "--tasks-file", path, "--json")
    assert kept.exit_code == 1
    document = json.loads(kept.stdout)
    assert [(s["step"], s["status"]) for s in document["steps"]] == [
        ("one", "failed"), ("two", "skipped"), ("three", "completed"),
    ]
    assert document["steps"][1]["detail"] == "waits for one (failed)"
    assert document["status"] == "failed" and document["remaining"] == ["bad", "after"]

    (repo / "runs.jsonl").unlink()
    halted = invoke(repo, "run", "--tasks-file", path, "--halt-on-failure", "--json")
    assert halted.exit_code == 1
    document = json.loads(halted.stdout)
    # "three" completed in the first run and is not run again; "one" fails again and halts the rest.
    assert [(s["step"], s["status"]) for s in document["steps"]] == [("one", "failed"), ("two", "halted")]
    assert {e["task"] for e in runs(repo)} == {"bad"}


def test_run_refuses_a_cycle_with_exit_2(repo: Path) -> None:
    path = write_tasks(repo, [task("a", dependencies=["b"]), seq("b", dependencies=["a"])])
    result = invoke(repo, "run", "--tasks-file", path)
    assert result.exit_code == 2
    assert "dependency cycle:" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- logs, cancel, init


def test_logs_print_every_log_or_one(repo: Path) -> None:
    path = write_tasks(repo, [task("a", "print=hello-from-a"), task("b", "print=hello-from-b")])
    assert invoke(repo, "execute", "--group-id", "g", "--tasks-file", path).exit_code == 0
    every = invoke(repo, "logs", "--group-id", "g")
    assert every.exit_code == 0
    assert "==> a <==\nhello-from-a\n==> b <==\nhello-from-b\n" in every.stdout
    one = invoke(repo, "logs", "--group-id", "g", "--task-id", "b", "--json")
    assert [json.loads(line) for line in one.stdout.splitlines()] == [{"task_id": "b", "line": "hello-from-b"}]
    assert invoke(repo, "logs", "--group-id", "g", "--task-id", "zz").exit_code == 1
    assert invoke(repo, "logs", "--group-id", "nope").exit_code == 1
    assert invoke(repo, "logs", "--group-id", "../x").exit_code == 2


def cli_process(repo: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_logs_follow_streams_output_until_the_group_ends(repo: Path) -> None:
    (repo / "agent.py").write_text(
        "import sys, time\nfor i in range(4):\n    print(f'{sys.argv[1]} step {i}', flush=True)\n    time.sleep(0.3)\n"
    )
    path = write_tasks(repo, [task("a")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path)
    try:
        wait_for(lambda: (repo / ".flow/maestro/parallel_groups/g/logs/a.log").exists())
        follower = cli_process(repo, "logs", "--group-id", "g", "--task-id", "a", "--follow")
        first = follower.stdout.readline()  # arrives while the agent still runs
        assert first == "a step 0\n"
        assert runner.poll() is None
        # Through the same buffered stream: readline() may already hold the next line, which
        # communicate(timeout=...) would skip (it reads the pipe's descriptor directly).
        assert follower.stdout is not None and follower.stderr is not None
        with follower:  # closes both pipes and waits
            rest = follower.stdout.read()  # to EOF: the follower exits when the group ends
            follower.stderr.read()
        assert follower.returncode == 0
        assert rest.splitlines() == ["a step 1", "a step 2", "a step 3"]
    finally:
        runner.communicate(timeout=60)


def test_cancel_stops_a_group_run_by_another_process(repo: Path) -> None:
    path = write_tasks(repo, [task("a", "sleep=60 grandchild")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path, "--json")
    try:
        wait_for(lambda: any(e["event"] == "start" for e in runs(repo)))
        result = invoke(repo, "cancel", "--group-id", "g", "--json")
        assert result.exit_code == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["signalled_pid"] == runner.pid and document["stopped"] is True
        assert document["status"] == "failed"
    finally:
        out, _ = runner.communicate(timeout=60)
    assert runner.returncode == 143
    assert "run interrupted by SIGTERM" in json.loads(out)["errors"]
    not_running = invoke(repo, "cancel", "--group-id", "g")
    assert not_running.exit_code == 1 and "not running" in not_running.stderr


def test_init_writes_a_config_with_every_default(repo: Path) -> None:
    target = repo / ".flow" / "maestro" / "config.toml"
    target.unlink()
    result = invoke(repo, "init", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"path": str(target), "written": True}
    written = load_config(repo)
    defaults = Config()
    assert (written.agent, written.refresh, written.tests, written.skills, written.tracker) == (
        defaults.agent, defaults.refresh, defaults.tests, defaults.skills, defaults.tracker
    )
    # Preset-derived keys are commented out: changing the preset alone takes effect.
    codex = loads_config(target.read_text().replace('preset = "claude"', 'preset = "codex"'))
    assert codex.agent.command[:2] == ("codex", "exec") and codex.agent.result_format == "codex-jsonl"
    again = invoke(repo, "init")
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert invoke(repo, "init", "--force").exit_code == 0
    assert target.read_text() == config_template()


# --------------------------------------------------------------------------- progress


def test_events_read_as_one_line_each() -> None:
    assert describe_event({"event": "task_started", "at": "2026-01-01T10:00:01.000Z", "task_id": "a", "attempt": 1,
                           "pid": 42}) == "[10:00:01] a started (attempt 1, pid 42)"
    assert describe_event({"event": "task_prepared", "at": "x", "task_id": "a", "subagent": "s"}) is None


async def test_the_live_table_shows_each_agent(repo: Path) -> None:
    (repo / "agent.py").write_text("import time\nprint('compiling the parser', flush=True)\ntime.sleep(1.5)\n")
    buffer = io.StringIO()
    view = LiveProgress(Console(file=buffer, force_terminal=True, width=120, color_system=None), repo)
    coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo), on_event=view.on_event)
    rendered: list[str] = []

    async def watch() -> None:
        with anyio.fail_after(20):
            while True:
                await anyio.sleep(0.1)
                buffer.seek(0)
                buffer.truncate()
                view.console.print(view)
                rendered.append(buffer.getvalue())
                if "compiling the parser" in rendered[-1]:
                    return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await coordinator.execute_parallel_group([task("a"), task("b")], "g")
    live = next(frame for frame in rendered if "compiling the parser" in frame)
    assert re.search(r"a\s+│\s+backend-architect\s+│\s+in_progress\s+│\s+\d+\.\ds\s+│\s+compiling the parser", live)
    assert "2 in_progress · 0/2 done" in live
    buffer.seek(0)
    buffer.truncate()
    view.console.print(view)
    assert "2 completed · 2/2 done" in buffer.getvalue() and "group g · completed" in buffer.getvalue()


def read_pty(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdin=follower, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("no_color", [False, True], ids=["color", "NO_COLOR"])
def test_a_terminal_gets_the_live_table(repo: Path, no_color: bool) -> None:
    path = write_tasks(repo, [task("a", "sleep=0.8"), task("b", "sleep=0.8")])
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(TERM="xterm-256color", COLUMNS="120", **({"NO_COLOR": "1"} if no_color else {}))
    code, screen = read_pty(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
         "--tasks-file", path], env
    )
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "subagent" in plain and "last output" in plain
    assert "in_progress" in plain and "2 completed · 2/2 done" in plain
    foreground = re.findall(r"\x1b\[(?:[0-9]+;)*3[0-7](?:;[0-9]+)*m", screen)
    assert (foreground == []) if no_color else foreground


# --------------------------------------------------------------------------- embedding


async def test_an_embedding_application_follows_events_while_doing_other_work(repo: Path) -> None:
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](1000)
    coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo), on_event=send.send_nowait)
    received: list[tuple[float, dict[str, Any]]] = []
    ticks = 0
    finished_at = 0.0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async def follow() -> None:
        async with receive:
            async for event in receive:
                received.append((time.monotonic(), event))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(other_work)
        tg.start_soon(follow)
        await coordinator.execute_parallel_group([task("a", "sleep=1"), task("b", "sleep=1")], "g")
        finished_at = time.monotonic()
        send.close()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()

    names = [e["event"] for _, e in received]
    assert names[0] == "group_started" and names[-1] == "group_finished"
    first_start = next(t for t, e in received if e["event"] == "task_started")
    assert first_start < finished_at - 0.5  # events arrive while the group runs, not at its end
    assert ticks > (finished_at - started) / 0.01 * 0.3  # the application's own work kept going


def test_a_terminal_shows_the_plan_running_steps_and_what_waiting_ones_wait_for(repo: Path) -> None:
    plan = [task("a1", "sleep=1", group="A"), task("a2", "sleep=1", group="A"),
            task("b1", group="B", dependencies=["a1"]), seq("s1", "sleep=0.2")]
    path = write_tasks(repo, plan)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(TERM="xterm-256color", COLUMNS="140", NO_COLOR="1")
    code, screen = read_pty(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "run", "--tasks-file", path], env
    )
    assert code == 0, screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "plan: 3 steps, run one at a time: the working tree is shared" in plain
    # While A runs: its row and its own tasks' table; B waits for A; s1 is ready and waits for a slot.
    assert re.search(r"A\s+│\s+running\s+│\s+\d+\.\ds\s+│\s+a1, a2\s+│", plain)
    assert re.search(r"B\s+│\s+waiting\s+│\s+│\s+b1\s+│\s+A\b", plain)
    assert re.search(r"s1 \(sequential\)\s+│\s+waiting\s+│\s+│\s+s1\s+│\s+ready \(waiting for a slot\)", plain)
    assert "step A · " in plain and re.search(r"a1\s+│\s+backend-architect\s+│\s+in_progress", plain)
    # At the end every step is complete.
    assert re.search(r"plan · 3 completed", plain)


async def test_the_plan_view_shows_a_sequential_step_with_its_own_tasks_only(repo: Path) -> None:
    from maestro_parallel.cli.progress import PlanBoard
    from maestro_parallel.graph import build_graph
    from maestro_parallel.runtime.scheduler import StepReport, StepStatus, waiting_for
    from maestro_parallel.tasks import coerce_task

    records = [coerce_task(seq("s1"), index=0), coerce_task(seq("s2", "sleep=1.5"), index=1)]
    graph = build_graph(records)
    board = PlanBoard(graph)
    buffer = io.StringIO()
    view = LiveProgress(Console(file=buffer, force_terminal=True, width=140, color_system=None), repo, plan=board)
    coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo), on_event=view.on_event)
    states = {s.step_id: StepReport(s.step_id) for s in graph.steps}
    states["_sequential:s1"].status = StepStatus.COMPLETED
    states["_sequential:s2"].status = StepStatus.RUNNING
    board.update(states, waiting_for(graph, states))
    frames: list[str] = []

    async def watch() -> None:
        with anyio.fail_after(20):
            while True:
                await anyio.sleep(0.1)
                buffer.seek(0)
                buffer.truncate()
                view.console.print(view)
                frames.append(buffer.getvalue())
                if re.search(r"s2\s+│[^\n]*in_progress", frames[-1]):
                    return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        # s1 completed earlier under the same group: it is kept in the group, not shown under s2's step.
        await coordinator.execute_parallel_group([seq("s1")], "_sequential")
        await coordinator.execute_parallel_group([seq("s1"), seq("s2", "sleep=1.5")], "_sequential")
    live = next(frame for frame in frames if re.search(r"s2\s+│[^\n]*in_progress", frame))
    step_table = live[live.index("step s2 (sequential) · "):]
    assert not re.search(r"^\s*s1\s+│", step_table, re.MULTILINE) and "1 in_progress · 0/1 done" in step_table
