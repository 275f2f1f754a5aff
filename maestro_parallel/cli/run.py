"""``maestro-parallel run``: the whole plan as a graph, each step as soon as what it waits for is closed."""

from __future__ import annotations

from typing import Any

import anyio
import click

from ..config import Config
from ..errors import MaestroError, ValidationError
from ..graph import PlanGraph, PlanStep, build_graph, estimated_seconds, render_text
from ..isolation.errors import ModeUnavailableError
from ..isolation.workspace import resolve_mode
from ..markers import SEQUENTIAL, marker_warnings
from ..models import GroupMetadata, TaskStatus, utc_now
from ..runtime.coordinator import AsyncParallelCoordinator
from ..runtime.scheduler import (
    PlanLimits,
    StepConcurrency,
    StepOutcome,
    StepReport,
    StepStatus,
    run_plan,
    steps_at_once,
    waiting_for,
)
from ..state.planfile import write_plan_file
from ..tasks import TaskRecord
from ..trackers.local import closed_in_stored_groups
from ._common import (
    AppState,
    BadInputError,
    ExitCode,
    cli_error,
    command,
    configured,
    emit_json,
    group_document,
    json_option,
    load_records,
    pass_state,
    progress_view,
    run_options,
    run_with_signals,
    signal_exit,
    tracker_for,
)
from .progress import PlanBoard

__all__ = ("run_command", "step_document")

_STEP_STATUS = {
    TaskStatus.COMPLETED: StepStatus.COMPLETED,
    TaskStatus.BLOCKED: StepStatus.BLOCKED,
}


def step_document(step: PlanStep, report: StepReport) -> dict[str, Any]:
    """A step's report: its own tasks only (a sequential step never shows the other sequential tasks)."""
    document: dict[str, Any] = {
        "step": step.step_id,
        "group_id": step.group_id,
        "tasks": list(step.task_ids),
        "waits_for": list(step.waits_for),
        "status": report.status.value,
        "detail": report.detail,
    }
    meta = report.value
    if isinstance(meta, GroupMetadata):
        own = set(step.task_ids)
        group = group_document(meta)
        group["results"] = [r for r in group["results"] if r.get("task_id") in own]
        group["tasks"] = [t for t in group["tasks"] if t in own]
        group["errors"] = [e for e in group["errors"] if not _about_other_task(e, own, meta)]
        document["group"] = group
    return document


def _about_other_task(error: str, own: set[str], meta: GroupMetadata) -> bool:
    task_id = error.split(":", 1)[0]
    return task_id in meta.tasks and task_id not in own


@command(name="run")
@click.option("--tasks-file", metavar="FILE", help="A tasks.json file, or - for standard input.")
@click.option("--from-beads", is_flag=True, help="Read the tasks from the beads tracker (bd).")
@run_options
@click.option("--keep-going", is_flag=True, help="Go on after a failed step (the default; kept for scripts).")
@click.option("--max-parallel-groups", type=click.IntRange(min=0), help="At most N steps at once (0: no cap).")
@click.option("--max-agents", type=click.IntRange(min=0), help="At most N agents at once across the plan (0: no cap).")
@click.option(
    "--concurrent-steps",
    is_flag=True,
    help="Run ready steps at the same time even in a shared working tree (worktree isolation does by default).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the steps, what each waits for and the critical path; run nothing."
)
@json_option()
@pass_state
def run_command(
    state: AppState,
    tasks_file: str | None,
    from_beads: bool,
    halt_on_failure: bool,
    keep_going: bool,
    max_parallel_groups: int | None,
    max_agents: int | None,
    concurrent_steps: bool,
    dry_run: bool,
    as_json: bool,
    **flags: Any,
) -> int:
    """Run the whole plan: each group (its tasks at once) and each sequential task is a step.

    A step starts as soon as every task it depends on outside itself is closed;
    sequential tasks run one at a time relative to each other.  Under worktree
    isolation ready steps run at the same time; in a shared working tree they
    run one at a time unless --concurrent-steps.  --max-agents caps the agents
    running at once across all steps.  Running the plan again after a crash or
    Ctrl-C continues it: what completed is not run again.  A failed step stops
    only what depends on it (--halt-on-failure stops everything).  Exit codes: 0 everything completed,
    1 a step failed, 2 bad input or a dependency cycle, 3 some tasks could not
    run (blocked), 4 a group is busy, 130/143 interrupted.
    """
    config = configured(state, **flags)
    tracker, source = tracker_for(state, tasks_file, from_beads)
    records = load_records(tracker)
    taking_part = [r for r in records if r.takes_part]
    done = {r.task_id for r in records if r.done} | anyio.run(closed_in_stored_groups, state.repo_root)
    pending = [r for r in taking_part if r.task_id not in done]
    try:
        outside = {r.task_id: r.tracker_status for r in records if not r.takes_part and not r.done}
        graph = build_graph(pending, done, outside=outside)
    except ValidationError as exc:
        raise BadInputError(str(exc)) from exc
    for warning in marker_warnings([r.metadata for r in pending]):
        state.progress(f"warning: {warning}")
    durations = _durations(pending)
    if not pending and not dry_run:
        state.progress(f"nothing to run in {source}")
        if as_json:
            emit_json({"status": "completed", "steps": [], "remaining": []})
        return ExitCode.OK
    concurrency = _concurrency(state, config, concurrent_steps)
    if dry_run:
        if as_json:
            emit_json(
                {
                    "total_tasks": len(pending),
                    "concurrent_steps": concurrency.concurrent,
                    "concurrency": concurrency.reason,
                    **graph.to_dict(durations),
                }
            )
        else:
            for line in render_text(graph, durations):
                click.echo(line)
            click.echo(("steps run at the same time: " if concurrency.concurrent else "steps run one at a time: ")
                       + concurrency.reason)
        return ExitCode.OK

    limits = PlanLimits(
        max_parallel_steps=max_parallel_groups if max_parallel_groups is not None else config.plan.max_parallel_groups,
        halt_on_failure=halt_on_failure,
        one_at_a_time=not concurrency.concurrent,
    )
    agents = max_agents if max_agents is not None else config.plan.max_agents
    by_id = {r.task_id: r for r in records}
    board = PlanBoard(graph)
    with progress_view(state, board) as on_event:
        coordinator = AsyncParallelCoordinator(
            state.repo_root,
            config=config,
            tracker=tracker,
            on_event=on_event,
            agent_limiter=anyio.CapacityLimiter(agents) if agents > 0 else None,
        )
        if coordinator.executor is not None:  # a LocalCluster started for the plan holds the agents it may run at once
            coordinator.executor.agents = agents or len(pending)
        record = _PlanRecord(state, graph, durations, concurrency, board)

        async def body(received: list[int]) -> dict[str, StepReport]:
            async def run_step(step: PlanStep) -> StepOutcome:
                if received:
                    return StepOutcome(StepStatus.HALTED, "interrupted before it started")
                return await _execute_step(coordinator, step, by_id, halt=halt_on_failure)

            async with coordinator:  # one executor (a Dask connection) for the whole plan
                return await run_plan(graph, run_step, limits=limits, durations=durations, on_change=record.changed)

        try:
            reports, received = run_with_signals(state, [coordinator], body)
        except MaestroError as exc:
            raise cli_error(exc) from exc
        record.finish(reports)
    return _print_outcome(graph, reports, received, as_json)


def _durations(records: list[TaskRecord]) -> dict[str, float] | None:
    known = {r.task_id: estimated_seconds(r) for r in records}
    return {k: v for k, v in known.items() if v is not None} if any(v is not None for v in known.values()) else None


def _concurrency(state: AppState, config: Config, override: bool) -> StepConcurrency:
    """Whether steps run at once: the isolation mode the groups will run in decides (DESIGN §13)."""
    try:
        decision, _ = anyio.run(resolve_mode, state.repo_root, config.isolation.mode)
    except ModeUnavailableError as exc:
        raise BadInputError(str(exc)) from exc
    return steps_at_once(decision.mode.value, decision.reason, override=override)


async def _execute_step(
    coordinator: AsyncParallelCoordinator, step: PlanStep, by_id: dict[str, TaskRecord], *, halt: bool
) -> StepOutcome:
    """Run one step through the coordinator; its own tasks decide its outcome.

    A sequential step executes under ``_sequential`` with the sequential tasks
    completed before it (kept, not run again: they stay closed in that group's
    state); a group whose tasks depend on each other is executed again while
    that makes progress.
    """
    tasks = list(step.tasks)
    if step.sequential:
        previous = await coordinator.get_group(SEQUENTIAL)
        if previous is not None:
            kept = [
                by_id[r["task_id"]]
                for r in previous.results
                if r.get("status") == "completed" and r["task_id"] in by_id and r["task_id"] not in step.task_ids
            ]
            tasks = kept + tasks
    own = set(step.task_ids)
    completed_before = -1
    while True:
        meta = await coordinator.execute_parallel_group(tasks, step.group_id, halt_on_failure=halt)
        completed = sum(r.get("status") == "completed" for r in meta.results if r["task_id"] in own)
        if meta.status is not TaskStatus.BLOCKED or completed in (completed_before, len(own)):
            break
        completed_before = completed
    results = [r for r in meta.results if r["task_id"] in own]
    statuses = {r.get("status") for r in results}
    if "failed" in statuses:
        status = StepStatus.FAILED
    elif statuses == {"completed"} and meta.status is TaskStatus.COMPLETED:
        status = StepStatus.COMPLETED
    else:
        status = _STEP_STATUS.get(meta.status, StepStatus.FAILED)
    counted = sum(r.get("status") == "completed" for r in results)
    detail = f"{counted}/{len(results)} completed"
    return StepOutcome(status, detail, meta)


class _PlanRecord:
    """Keeps ``.flow/maestro/plan.json``, the step lines on stderr and the live plan board up to date."""

    def __init__(
        self,
        state: AppState,
        graph: PlanGraph,
        durations: dict[str, float] | None,
        concurrency: StepConcurrency,
        board: PlanBoard,
    ) -> None:
        self.state = state
        self.graph = graph
        self.board = board
        self.document: dict[str, Any] = {
            "schema": 1,
            "started_at": utc_now(),
            "status": "in_progress",
            "concurrent_steps": concurrency.concurrent,
            **graph.to_dict(durations),
        }
        self.times: dict[str, dict[str, Any]] = {}
        self.states = {step.step_id: StepReport(step.step_id) for step in graph.steps}
        self._write()
        steps = len(graph.steps)
        at_once = "at the same time" if concurrency.concurrent else "one at a time"
        state.progress(f"plan: {steps} step{'s' * (steps != 1)}, run {at_once}: {concurrency.reason}")

    def changed(self, report: StepReport) -> None:
        self.states[report.step_id] = report
        step = self.graph.step(report.step_id)
        entry = self.times.setdefault(report.step_id, {})
        entry["status"] = report.status.value
        entry["detail"] = report.detail
        waiting = waiting_for(self.graph, self.states)
        self.board.update(self.states, waiting)
        if report.status is StepStatus.RUNNING:
            entry["started_at"] = utc_now()
            self.state.progress(f"step {step.label}: started ({', '.join(step.task_ids)})")
        else:
            entry["ended_at"] = utc_now()
            self.state.progress(f"step {step.label}: {report.status.value} ({report.detail})")
            if waiting:
                self.state.progress("  waiting: " + "; ".join(self._waiting(waiting)))
        self._write()

    def _waiting(self, waiting: dict[str, list[str]]) -> list[str]:
        """Each step not started yet, with the steps it still waits for."""
        label = {step.step_id: step.label for step in self.graph.steps}
        return [
            f"{label[sid]} for {', '.join(label[w] for w in pending)}" if pending else f"{label[sid]} (ready)"
            for sid, pending in waiting.items()
        ]

    def finish(self, reports: dict[str, StepReport]) -> None:
        for sid, report in reports.items():
            entry = self.times.setdefault(sid, {})
            entry["status"], entry["detail"] = report.status.value, report.detail
        statuses = {r.status for r in reports.values()}
        self.document["status"] = (
            "completed"
            if statuses <= {StepStatus.COMPLETED}
            else ("failed" if StepStatus.FAILED in statuses else "blocked")
        )
        self.document["completed_at"] = utc_now()
        self._write()

    def _write(self) -> None:
        for step in self.document["steps"]:
            step.update(self.times.get(step["step"], {"status": "waiting"}))
        try:
            write_plan_file(self.state.repo_root, self.document)
        except OSError as exc:
            self.state.progress(f"warning: could not write the plan record: {exc.strerror or exc}")


def _print_outcome(graph: PlanGraph, reports: dict[str, StepReport], received: list[int], as_json: bool) -> int:
    documents = [step_document(step, reports[step.step_id]) for step in graph.steps]
    statuses = [reports[s.step_id].status for s in graph.steps]
    remaining = [
        t for step in graph.steps if reports[step.step_id].status is not StepStatus.COMPLETED for t in step.task_ids
    ]
    failed = StepStatus.FAILED in statuses
    status = "failed" if failed else ("blocked" if remaining else "completed")
    if as_json:
        emit_json({"status": status, "steps": documents, "remaining": remaining})
    else:
        for step, document in zip(graph.steps, documents, strict=False):
            click.echo(
                f"{step.label}: {document['status']}" + (f" ({document['detail']})" if document["detail"] else "")
            )
            for error in document.get("group", {}).get("errors", []):
                click.echo(f"  error: {error}")
        click.echo(f"plan {status}" + (f"; not run: {', '.join(remaining)}" if remaining else ""))
    exit_code = signal_exit(received)
    if exit_code is not None:
        return exit_code
    return ExitCode.FAILED if failed else (ExitCode.BLOCKED if remaining else ExitCode.OK)
