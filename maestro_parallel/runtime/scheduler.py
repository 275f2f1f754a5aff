"""Run a plan's steps as their dependencies allow: ready steps at once, within the caps.

The decisions are plain functions over a table of step states
(:func:`ready_steps`, :func:`settle`), tested without an event loop; the one
coroutine, :func:`run_plan`, only starts steps in a task group and feeds their
outcomes back.  A step is run by a callable it is given, so the same scheduler
drives the real coordinator (``run``) and the fakes of its tests.

- A step starts when every step it waits for has completed and every step it
  comes after (the sequential chain) has ended.
- ``max_parallel_steps`` caps the steps running at once.  ``max_agents`` is
  not a scheduling rule: it is one limiter every step's launches share (see
  ``AsyncParallelCoordinator(agent_limiter=...)``), so a step starts as soon
  as it is ready and its agents queue for a free slot with everyone else's.
- Steps run at the same time only when each agent has its own checkout
  (worktree isolation); in a shared working tree they run one at a time
  (:func:`steps_at_once`).
- A failed or blocked step stops only the steps that depend on it (they end
  ``skipped``); with ``halt_on_failure`` the first failure cancels everything.
- Steps named in ``completed`` (done on disk by an earlier run) are not run.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..graph import PlanGraph, PlanStep

__all__ = (
    "PlanLimits",
    "StepOutcome",
    "StepReport",
    "StepConcurrency",
    "StepStatus",
    "makespan",
    "ready_steps",
    "run_plan",
    "settle",
    "steps_at_once",
    "tail_lengths",
    "waiting_for",
)


class StepStatus(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"  # could not run all its tasks (a dependency was never closed)
    SKIPPED = "skipped"  # never started: a step it depends on did not complete
    HALTED = "halted"  # stopped or never started because another step failed under halt-on-failure


FINAL = frozenset({StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.BLOCKED, StepStatus.SKIPPED, StepStatus.HALTED})


@dataclass(frozen=True)
class StepOutcome:
    """What running a step gave: its status, a one-line detail, and whatever the runner returns."""

    status: StepStatus
    detail: str = ""
    value: Any = None


@dataclass
class StepReport:
    """A step's fate in one run of the plan (times from ``anyio.current_time()``)."""

    step_id: str
    status: StepStatus = StepStatus.WAITING
    detail: str = ""
    started: float | None = None
    ended: float | None = None
    value: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class PlanLimits:
    """Caps: 0 means none.  ``one_at_a_time`` is the shared-tree rule (one step at a time)."""

    max_parallel_steps: int = 0
    halt_on_failure: bool = False
    one_at_a_time: bool = False

    @property
    def step_cap(self) -> int:
        return 1 if self.one_at_a_time else self.max_parallel_steps


@dataclass(frozen=True)
class StepConcurrency:
    """Whether ready steps run at the same time, and why (``run`` and its dry run say it)."""

    concurrent: bool
    reason: str


def steps_at_once(isolation: str, isolation_reason: str, *, override: bool) -> StepConcurrency:
    """Concurrent steps need a checkout per agent: yes under ``worktree`` isolation, no in a shared tree.

    ``override`` (``--concurrent-steps``) runs them at once in a shared tree too,
    where two steps' agents edit the same files.
    """
    if isolation == "worktree":
        return StepConcurrency(True, f"worktree isolation ({isolation_reason})")
    if override:
        return StepConcurrency(True, f"--concurrent-steps, although the working tree is shared ({isolation_reason})")
    return StepConcurrency(False, f"the working tree is shared ({isolation_reason}); --concurrent-steps overrides")


def waiting_for(graph: PlanGraph, states: Mapping[str, StepReport]) -> dict[str, list[str]]:
    """Each step not started yet -> the steps it still waits for (empty: ready, waiting for a slot)."""
    waiting: dict[str, list[str]] = {}
    for step in graph.steps:
        if states[step.step_id].status is not StepStatus.WAITING:
            continue
        pending = [w for w in step.waits_for if states[w].status is not StepStatus.COMPLETED]
        pending += [a for a in step.after if states[a].status not in FINAL and a not in pending]
        waiting[step.step_id] = pending
    return waiting


def tail_lengths(graph: PlanGraph, durations: Mapping[str, float] | None = None) -> dict[str, float]:
    """For each step, the longest chain from its start to the end of the plan (its priority)."""
    own = {
        step.step_id: (max((durations.get(t, 0.0) for t in step.task_ids), default=0.0) if durations else 1.0)
        for step in graph.steps
    }
    children: dict[str, list[str]] = {step.step_id: [] for step in graph.steps}
    for step in graph.steps:
        for target in (*step.waits_for, *step.after):
            children[target].append(step.step_id)
    tail: dict[str, float] = {}

    def visit(sid: str) -> float:  # the graph is acyclic (build_graph checked it)
        if sid not in tail:
            tail[sid] = own[sid] + max((visit(c) for c in children[sid]), default=0.0)
        return tail[sid]

    for step in graph.steps:
        visit(step.step_id)
    return tail


def settle(graph: PlanGraph, states: dict[str, StepReport], *, halt: bool) -> None:
    """Mark what can never run: steps blocked from the start, dependents of a step that did not complete.

    With ``halt``, once a step failed every waiting step is ``halted``.
    """
    failed = any(r.status is StepStatus.FAILED for r in states.values())
    changed = True
    while changed:
        changed = False
        for step in graph.steps:
            report = states[step.step_id]
            if report.status is not StepStatus.WAITING:
                continue
            if halt and failed:
                report.status, report.detail = StepStatus.HALTED, "another step failed (halt on failure)"
                changed = True
                continue
            if step.step_id in graph.blocked and step.missing:
                report.status, report.detail = StepStatus.BLOCKED, graph.blocked[step.step_id]
                changed = True
                continue
            lost = [
                w for w in step.waits_for if states[w].status in FINAL and states[w].status is not StepStatus.COMPLETED
            ]
            if lost:
                why = ", ".join(f"{w} ({states[w].status.value})" for w in lost)
                report.status, report.detail = StepStatus.SKIPPED, f"waits for {why}"
                changed = True


def ready_steps(
    graph: PlanGraph,
    states: Mapping[str, StepReport],
    limits: PlanLimits,
    priority: Mapping[str, float] | None = None,
) -> list[str]:
    """The waiting steps to start now, longest remaining chain first (then input order), within the step cap."""
    running = [s for s in graph.steps if states[s.step_id].status is StepStatus.RUNNING]
    order = {step.step_id: position for position, step in enumerate(graph.steps)}
    candidates = [
        step
        for step in graph.steps
        if states[step.step_id].status is StepStatus.WAITING
        and all(states[w].status is StepStatus.COMPLETED for w in step.waits_for)
        and all(states[a].status in FINAL for a in step.after)
    ]
    candidates.sort(key=lambda s: (-(priority or {}).get(s.step_id, 0.0), order[s.step_id]))
    chosen: list[str] = []
    slots = limits.step_cap - len(running) if limits.step_cap > 0 else math.inf
    for step in candidates:
        if slots <= 0:
            break
        chosen.append(step.step_id)
        slots -= 1
    return chosen


RunStep = Callable[[PlanStep], Awaitable[StepOutcome]]
OnChange = Callable[[StepReport], None]


async def run_plan(
    graph: PlanGraph,
    run_step: RunStep,
    *,
    limits: PlanLimits = PlanLimits(),
    completed: Iterable[str] = (),
    durations: Mapping[str, float] | None = None,
    on_change: OnChange | None = None,
) -> dict[str, StepReport]:
    """Run every step that can run; return each step's report, in the graph's order.

    ``run_step`` must record its own failures as a ``StepOutcome``; an exception
    it raises fails that step (its message is the detail) and is not re-raised,
    so one broken step never takes the plan down.
    """
    states = {step.step_id: StepReport(step.step_id) for step in graph.steps}
    for sid in completed:
        if sid in states:
            states[sid].status, states[sid].detail = StepStatus.COMPLETED, "completed earlier"
    priority = tail_lengths(graph, durations)
    scopes: dict[str, anyio.CancelScope] = {}
    send, receive = anyio.create_memory_object_stream[tuple[str, StepOutcome]](max_buffer_size=math.inf)

    def changed(report: StepReport) -> None:
        if on_change is not None:
            on_change(report)

    async def one(step: PlanStep) -> None:
        outcome = StepOutcome(StepStatus.HALTED, "another step failed (halt on failure)")
        with anyio.CancelScope() as scope:
            scopes[step.step_id] = scope
            try:
                outcome = await run_step(step)
            except Exception as exc:  # noqa: BLE001 - a broken step is that step's failure, not the plan's
                outcome = StepOutcome(StepStatus.FAILED, f"{type(exc).__name__}: {exc}")
        with anyio.CancelScope(shield=True):
            await send.send((step.step_id, outcome))

    async with send, receive, anyio.create_task_group() as tg:
        running = 0
        while True:
            before = {sid: report.status for sid, report in states.items()}
            settle(graph, states, halt=limits.halt_on_failure)
            for sid, report in states.items():
                if report.status is not before[sid]:  # skipped, blocked or halted without running
                    changed(report)
            for sid in ready_steps(graph, states, limits, priority):
                report = states[sid]
                report.status, report.started = StepStatus.RUNNING, anyio.current_time()
                changed(report)
                tg.start_soon(one, graph.step(sid), name=f"step {sid}")
                running += 1
            if running == 0:
                break
            sid, outcome = await receive.receive()
            running -= 1
            scopes.pop(sid, None)
            report = states[sid]
            report.status, report.detail, report.value = outcome.status, outcome.detail, outcome.value
            report.ended = anyio.current_time()
            changed(report)
            if outcome.status is StepStatus.FAILED and limits.halt_on_failure:
                for scope in scopes.values():
                    scope.cancel()
    for report in states.values():
        if report.status is StepStatus.WAITING:  # only possible through an inconsistent ``completed``
            report.status, report.detail = StepStatus.SKIPPED, "never became ready"
    return states


def makespan(states: Mapping[str, StepReport]) -> float:
    """Seconds from the first step's start to the last step's end (0 when nothing ran)."""
    starts = [r.started for r in states.values() if r.started is not None]
    ends = [r.ended for r in states.values() if r.ended is not None]
    return (max(ends) - min(starts)) if starts and ends else 0.0

