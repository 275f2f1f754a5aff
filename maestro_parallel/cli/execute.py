"""``maestro-parallel execute``: run one parallel group end to end."""

from __future__ import annotations

from typing import Any

import anyio
import click

from ..errors import MaestroError
from ..markers import task_group
from ..models import GroupMetadata, TaskStatus
from ..runtime.coordinator import AsyncParallelCoordinator
from ..state.readers import read_stored_group
from ..tasks import TaskRecord
from ._common import (
    EXIT_CODES_HELP,
    AppState,
    BadInputError,
    ExitCode,
    SignalWatch,
    check_group_id,
    cli_error,
    command,
    configured,
    emit_json,
    exit_code_of,
    group_document,
    json_option,
    load_records,
    pass_state,
    print_group,
    progress_view,
    run_options,
    run_with_signals,
    signal_exit,
    tracker_for,
)

__all__ = ("execute",)


@command(epilog=EXIT_CODES_HELP)
@click.option("--group-id", required=True, help="The group to run: the tasks whose marker names it.")
@click.option("--tasks-file", metavar="FILE", help="A tasks.json file, or - for standard input.")
@click.option("--from-beads", is_flag=True, help="Read the tasks from the beads tracker (bd).")
@run_options
@click.option("--restart", is_flag=True, help="Set the stored state aside under history/ and start afresh.")
@json_option()
@pass_state
def execute(
    state: AppState,
    group_id: str,
    tasks_file: str | None,
    from_beads: bool,
    restart: bool,
    halt_on_failure: bool,
    as_json: bool,
    **flags: Any,
) -> int:
    """Run one parallel group end to end."""
    check_group_id(group_id)
    config = configured(state, **flags)
    tracker, source = tracker_for(state, tasks_file, from_beads)
    records = load_records(tracker)
    members = [r for r in records if task_group(r.metadata) == group_id]
    runnable = [r for r in members if r.takes_part]
    if not runnable:
        if members and all(r.done for r in members):
            return _nothing_to_run(state, group_id, members, as_json)
        raise BadInputError(f"no task of group {group_id} to run in {source}")

    # Held until the final state is printed: a signal after it was written cannot lose the output.
    with SignalWatch() as watch:
        with progress_view(state) as on_event:
            coordinator = AsyncParallelCoordinator(state.repo_root, config=config, tracker=tracker, on_event=on_event)

            async def body(received: list[int]) -> GroupMetadata:
                async with coordinator:
                    return await coordinator.execute_parallel_group(
                        runnable, group_id, restart=restart, halt_on_failure=halt_on_failure
                    )

            try:
                meta, received = run_with_signals(state, [coordinator], body, watch)
            except MaestroError as exc:
                raise cli_error(exc) from exc
        if as_json:
            emit_json(group_document(meta))
        else:
            print_group(meta)
    return signal_exit(received, meta) or exit_code_of(meta)


def _nothing_to_run(state: AppState, group_id: str, members: list[TaskRecord], as_json: bool) -> int:
    seen = anyio.run(read_stored_group, state.repo_root, group_id)
    if seen is not None and seen.metadata is not None:
        meta = seen.metadata
    else:
        meta = GroupMetadata(group_id=group_id, tasks=[r.task_id for r in members], status=TaskStatus.COMPLETED)
    state.progress(f"group {group_id}: every task is already closed; nothing to run")
    if as_json:
        emit_json(group_document(meta))
    else:
        print_group(meta)
    return ExitCode.OK
