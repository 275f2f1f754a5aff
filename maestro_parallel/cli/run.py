"""``maestro-parallel run``: the whole plan, every group and sequential task in dependency order."""

from __future__ import annotations

from typing import Any

import anyio
import click

from ..errors import MaestroError, ValidationError
from ..markers import SEQUENTIAL
from ..models import GroupMetadata, TaskStatus
from ..plan import Plan, next_step, plan_run
from ..runtime.coordinator import AsyncParallelCoordinator
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

__all__ = ("run_command",)


def _print_plan(plan: Plan, total: int) -> None:
    click.echo(f"plan: {total} task{'s' * (total != 1)} in {len(plan.steps)} step{'s' * (len(plan.steps) != 1)}")
    width = max((len(step.group_id) for step in plan.steps), default=0)
    for number, step in enumerate(plan.steps, 1):
        note = "  (one at a time)" if step.group_id == SEQUENTIAL else ""
        click.echo(f"  {number}. {step.group_id:<{width}}  {', '.join(step.runs)}{note}")
    for task_id, blockers in plan.unreachable.items():
        click.echo(f"  never runs: {task_id} (waits on {', '.join(blockers) or 'nothing it can reach'})")


@command(name="run")
@click.option("--tasks-file", metavar="FILE", help="A tasks.json file, or - for standard input.")
@click.option("--from-beads", is_flag=True, help="Read the tasks from the beads tracker (bd).")
@run_options
@click.option("--keep-going", is_flag=True, help="Go on after a failed step (what depends on it stays undone).")
@click.option("--dry-run", is_flag=True, help="Print the plan; run and write nothing.")
@json_option()
@pass_state
def run_command(
    state: AppState,
    tasks_file: str | None,
    from_beads: bool,
    halt_on_failure: bool,
    keep_going: bool,
    dry_run: bool,
    as_json: bool,
    **flags: Any,
) -> int:
    """Run the whole plan: every group, then the sequential tasks, as dependencies allow.

    Each step executes one group (its ready tasks at once) or the reserved group
    _sequential (its ready tasks one at a time).  The run stops at the first
    failed step unless --keep-going.  Exit codes: 0 everything completed,
    1 a step failed, 2 bad input or a dependency cycle, 3 some tasks could not
    run (blocked), 4 a group is busy, 130/143 interrupted.
    """
    config = configured(state, **flags)
    tracker, source = tracker_for(state, tasks_file, from_beads)
    records = load_records(tracker)
    taking_part = [r for r in records if r.takes_part]
    done = {r.task_id for r in records if r.done} | anyio.run(closed_in_stored_groups, state.repo_root)
    try:
        plan = plan_run(taking_part, done)
    except ValidationError as exc:
        raise BadInputError(str(exc)) from exc
    if dry_run:
        if as_json:
            emit_json({"total_tasks": len(taking_part), **plan.to_dict()})
        else:
            _print_plan(plan, len(taking_part))
        return ExitCode.OK
    if not taking_part:
        state.progress(f"nothing to run in {source}")
        if as_json:
            emit_json({"status": TaskStatus.COMPLETED.value, "steps": [], "remaining": []})
        return ExitCode.OK

    with progress_view(state) as on_event:
        parallel = AsyncParallelCoordinator(state.repo_root, config=config, tracker=tracker, on_event=on_event)
        sequential = AsyncParallelCoordinator(
            state.repo_root, config=config.with_overrides(max_parallel=1), tracker=tracker, on_event=on_event
        )

        async def body(received: list[int]) -> list[GroupMetadata]:
            return await _run_steps(
                taking_part, done, parallel, sequential, received, keep_going=keep_going, halt=halt_on_failure
            )

        try:
            steps, received = run_with_signals(state, [parallel, sequential], body)
        except MaestroError as exc:
            raise cli_error(exc) from exc
    remaining = [r.task_id for r in taking_part if r.task_id not in _finished(done, steps)]
    failed = any(meta.status is TaskStatus.FAILED for meta in steps)
    status = (TaskStatus.FAILED if failed else TaskStatus.BLOCKED if remaining else TaskStatus.COMPLETED).value
    if as_json:
        emit_json({"status": status, "steps": [group_document(m) for m in steps], "remaining": remaining})
    else:
        for meta in steps:
            done_count = sum(r.get("status") == TaskStatus.COMPLETED for r in meta.results)
            click.echo(f"{meta.group_id}: {meta.status.value} ({done_count}/{len(meta.results)} completed)")
            for error in meta.errors:
                click.echo(f"  error: {error}")
        click.echo(f"plan {status}" + (f"; not run: {', '.join(remaining)}" if remaining else ""))
    exit_code = signal_exit(received)
    if exit_code is not None:
        return exit_code
    return ExitCode.FAILED if failed else (ExitCode.BLOCKED if remaining else ExitCode.OK)


def _finished(done: set[str], steps: list[GroupMetadata]) -> set[str]:
    finished = set(done)
    for meta in steps:
        finished.update(
            r["task_id"] for r in meta.results if r.get("status") == TaskStatus.COMPLETED and r.get("closed")
        )
    return finished


async def _run_steps(
    records: list[TaskRecord],
    done: set[str],
    parallel: AsyncParallelCoordinator,
    sequential: AsyncParallelCoordinator,
    received: list[int],
    *,
    keep_going: bool,
    halt: bool,
) -> list[GroupMetadata]:
    """Execute one step after another, planning each from what really happened."""
    steps: list[GroupMetadata] = []
    skip: set[str] = set()
    while not received:
        finished = _finished(done, steps)
        step = next_step(records, finished, skip)
        if step is None:
            break
        coordinator = sequential if step.group_id == SEQUENTIAL else parallel
        meta = await coordinator.execute_parallel_group(list(step.tasks), step.group_id, halt_on_failure=halt)
        steps.append(meta)
        if meta.status is TaskStatus.FAILED and not keep_going:
            break
        newly = _finished(done, steps)
        skip.update(r["task_id"] for r in meta.results if r.get("status") == TaskStatus.FAILED)
        skip.update(task_id for task_id in step.runs if task_id not in newly)  # never loop on a step that did nothing
    return steps
