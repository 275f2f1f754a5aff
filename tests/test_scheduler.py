"""The dependency-driven scheduler: pure readiness rules, then real anyio timing with fake steps."""

from __future__ import annotations

import anyio
import pytest

from maestro_parallel.graph import build_graph, critical_path
from maestro_parallel.runtime.scheduler import (
    PlanLimits,
    StepOutcome,
    StepReport,
    StepStatus,
    makespan,
    ready_steps,
    run_plan,
    settle,
    steps_at_once,
    waiting_for,
)
from maestro_parallel.tasks import coerce_task

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def task(task_id: str, group: str | None = None, deps: tuple[str, ...] = ()):
    description = f"[P:Group-{group}] work" if group else "work"
    return coerce_task({"id": task_id, "description": description, "dependencies": list(deps)}, index=0)


ISSUE_PLAN = [task("a1", "A"), task("a2", "A"), task("b1", "B", ("a1",)), task("c1", "C"), task("s1"), task("s2", deps=("s1",))]
# Scaled down from the issue's seconds by 10.
ISSUE_DURATIONS = {"a1": 0.2, "a2": 0.6, "b1": 0.2, "c1": 0.6, "s1": 0.2, "s2": 0.2}


def states_of(graph, **given: StepStatus) -> dict[str, StepReport]:
    return {s.step_id: StepReport(s.step_id, given.get(s.step_id, StepStatus.WAITING)) for s in graph.steps}


# --------------------------------------------------------------------------- pure rules


def test_steps_run_at_once_only_with_a_checkout_per_agent() -> None:
    assert steps_at_once("worktree", "git work tree with a commit", override=False).concurrent
    shared = steps_at_once("shared", "mode = shared", override=False)
    assert not shared.concurrent
    assert shared.reason == "the working tree is shared (mode = shared); --concurrent-steps overrides"
    forced = steps_at_once("shared", "mode = shared", override=True)
    assert forced.concurrent and forced.reason.startswith("--concurrent-steps, although the working tree is shared")


def test_waiting_for_names_what_each_waiting_step_still_needs() -> None:
    graph = build_graph(ISSUE_PLAN)
    assert waiting_for(graph, states_of(graph)) == {
        "A": [], "B": ["A"], "C": [], "_sequential:s1": [], "_sequential:s2": ["_sequential:s1"],
    }
    states = states_of(graph, A=StepStatus.COMPLETED, C=StepStatus.RUNNING, **{"_sequential:s1": StepStatus.RUNNING})
    assert waiting_for(graph, states) == {"B": [], "_sequential:s2": ["_sequential:s1"]}  # B is ready
    # A step that only comes after another (the sequential chain) waits for it to end, not to complete.
    chain = build_graph([task("s1"), task("s2")])
    assert waiting_for(chain, states_of(chain, **{"_sequential:s1": StepStatus.FAILED})) == {"_sequential:s2": []}


@pytest.mark.parametrize(
    ("given", "limits", "expected"),
    [
        ({}, PlanLimits(), ["A", "C", "_sequential:s1"]),
        ({}, PlanLimits(max_parallel_steps=2), ["A", "C"]),
        ({}, PlanLimits(one_at_a_time=True), ["A"]),
        ({"A": StepStatus.COMPLETED}, PlanLimits(), ["B", "C", "_sequential:s1"]),
        ({"A": StepStatus.RUNNING}, PlanLimits(max_parallel_steps=2), ["C"]),
        ({"A": StepStatus.RUNNING, "C": StepStatus.RUNNING}, PlanLimits(max_parallel_steps=2), []),
        ({"_sequential:s1": StepStatus.RUNNING}, PlanLimits(), ["A", "C"]),  # s2 waits its turn
        ({"_sequential:s1": StepStatus.FAILED}, PlanLimits(), ["A", "C"]),  # s2 depends on s1: settle skips it
    ],
)
def test_ready_steps(given, limits, expected) -> None:
    graph = build_graph(ISSUE_PLAN)
    assert sorted(ready_steps(graph, states_of(graph, **given), limits)) == sorted(expected)


def test_longest_remaining_chain_goes_first_under_a_cap() -> None:
    graph = build_graph([task("x", "X"), task("a", "A"), task("b", "B", ("a",))])
    states = states_of(graph)
    tails = {"X": 1.0, "A": 2.0, "B": 1.0}
    assert ready_steps(graph, states, PlanLimits(max_parallel_steps=1), tails) == ["A"]


def test_a_failure_stops_only_its_dependents() -> None:
    graph = build_graph([task("a", "A"), task("b", "B", ("a",)), task("c", "C", ("b",)), task("d", "D"), task("s1"), task("s2")])
    states = states_of(graph, A=StepStatus.FAILED)
    states["_sequential:s1"].status = StepStatus.FAILED
    settle(graph, states, halt=False)
    assert {sid: r.status for sid, r in states.items()} == {
        "A": StepStatus.FAILED,
        "B": StepStatus.SKIPPED,
        "C": StepStatus.SKIPPED,
        "D": StepStatus.WAITING,
        "_sequential:s1": StepStatus.FAILED,
        "_sequential:s2": StepStatus.WAITING,  # only after s1, not dependent on it
    }
    assert states["B"].detail == "waits for A (failed)"
    settle(graph, states, halt=True)
    assert states["D"].status is StepStatus.HALTED


def test_missing_dependency_blocks_at_once() -> None:
    graph = build_graph([task("p", "P", ("ghost",)), task("q", "Q", ("p",)), task("r", "R")])
    states = states_of(graph)
    settle(graph, states, halt=False)
    assert [states[s].status for s in ("P", "Q", "R")] == [StepStatus.BLOCKED, StepStatus.SKIPPED, StepStatus.WAITING]


# --------------------------------------------------------------------------- running, real time


def sleeper(durations, fail=(), log=None):
    async def run_step(step) -> StepOutcome:
        if log is not None:
            log.append(("start", step.step_id, anyio.current_time()))
        await anyio.sleep(max(durations.get(t, 0.0) for t in step.task_ids))
        if log is not None:
            log.append(("end", step.step_id, anyio.current_time()))
        if step.step_id in fail:
            return StepOutcome(StepStatus.FAILED, "agent exited 1")
        return StepOutcome(StepStatus.COMPLETED, value=list(step.task_ids))

    return run_step


def overlap(a: StepReport, b: StepReport) -> bool:
    return a.started < b.ended and b.started < a.ended


async def test_issue_plan_runs_within_its_critical_path() -> None:
    graph = build_graph(ISSUE_PLAN)
    states = await run_plan(graph, sleeper(ISSUE_DURATIONS))
    assert all(r.status is StepStatus.COMPLETED for r in states.values())
    path = critical_path(graph, ISSUE_DURATIONS).length
    assert makespan(states) <= 1.2 * path, (makespan(states), path)
    assert overlap(states["A"], states["C"]) and overlap(states["A"], states["_sequential:s1"])
    assert states["B"].started >= states["A"].ended
    assert states["_sequential:s2"].started >= states["_sequential:s1"].ended
    assert states["B"].value == ["b1"]  # each step reports its own tasks


async def test_one_at_a_time_never_overlaps() -> None:
    graph = build_graph(ISSUE_PLAN)
    states = await run_plan(graph, sleeper({k: v / 4 for k, v in ISSUE_DURATIONS.items()}), limits=PlanLimits(one_at_a_time=True))
    reports = sorted(states.values(), key=lambda r: r.started)
    assert all(a.ended <= b.started for a, b in zip(reports, reports[1:], strict=False))


async def test_keep_going_and_halt_on_failure() -> None:
    plan = [task("a", "A"), task("b", "B", ("a",)), task("c", "C")]
    durations = {"a": 0.05, "b": 0.05, "c": 0.5}
    graph = build_graph(plan)
    states = await run_plan(graph, sleeper(durations, fail={"A"}))
    assert [states[s].status for s in "ABC"] == [StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.COMPLETED]
    with anyio.fail_after(0.4):  # C (0.5 s) is cancelled when A fails
        states = await run_plan(graph, sleeper(durations, fail={"A"}), limits=PlanLimits(halt_on_failure=True))
    assert [states[s].status for s in "ABC"] == [StepStatus.FAILED, StepStatus.HALTED, StepStatus.HALTED]


async def test_a_step_that_raises_fails_alone() -> None:
    graph = build_graph([task("a", "A"), task("c", "C")])

    async def run_step(step) -> StepOutcome:
        if step.step_id == "A":
            raise RuntimeError("boom")
        return StepOutcome(StepStatus.COMPLETED)

    states = await run_plan(graph, run_step)
    assert (states["A"].status, states["A"].detail) == (StepStatus.FAILED, "RuntimeError: boom")
    assert states["C"].status is StepStatus.COMPLETED


async def test_resume_does_not_run_completed_steps() -> None:
    graph = build_graph(ISSUE_PLAN)
    log: list[tuple[str, str, float]] = []
    states = await run_plan(graph, sleeper({k: 0.01 for k in ISSUE_DURATIONS}, log=log), completed={"A", "_sequential:s1"})
    started = {sid for kind, sid, _ in log if kind == "start"}
    assert started == {"B", "C", "_sequential:s2"}
    assert states["A"].detail == "completed earlier"


async def test_on_change_sees_every_transition() -> None:
    graph = build_graph([task("a", "A"), task("b", "B", ("a",))])
    seen: list[tuple[str, str]] = []
    await run_plan(graph, sleeper({"a": 0, "b": 0}), on_change=lambda r: seen.append((r.step_id, r.status.value)))
    assert seen == [("A", "running"), ("A", "completed"), ("B", "running"), ("B", "completed")]
    seen.clear()
    await run_plan(graph, sleeper({"a": 0, "b": 0}, fail={"A"}), on_change=lambda r: seen.append((r.step_id, r.status.value)))
    assert seen == [("A", "running"), ("A", "failed"), ("B", "skipped")]  # a step that never runs is reported too
