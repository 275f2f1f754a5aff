"""``maestro-parallel detect``: the parallel groups among the tasks that are not closed."""

from __future__ import annotations

import click

from ..markers import SEQUENTIAL, detect_groups, marker_warnings
from ._common import (
    AppState,
    ExitCode,
    command,
    emit_json,
    json_option,
    load_records,
    pass_state,
    tracker_for,
)

__all__ = ("detect",)


@command()
@click.option("--tasks-file", metavar="FILE", help="A tasks.json file, or - for standard input.")
@click.option("--from-beads", is_flag=True, help="Read the tasks from the beads tracker (bd).")
@json_option()
@pass_state
def detect(state: AppState, tasks_file: str | None, from_beads: bool, as_json: bool) -> int:
    """Show the parallel groups among the tasks that are not closed."""
    state.config()  # a malformed config is refused here as by every other command, not ignored
    tracker, _ = tracker_for(state, tasks_file, from_beads)
    active = [r for r in load_records(tracker) if r.takes_part]
    for warning in marker_warnings([r.metadata for r in active]):
        click.echo(f"warning: {warning}", err=True)
    groups = detect_groups([r.metadata for r in active])
    ids = {name: [t.task_id for t in tasks] for name, tasks in groups.items()}
    parallel = sum(1 for name in ids if name != SEQUENTIAL)
    if as_json:
        emit_json({"total_tasks": len(active), "parallel_groups": parallel, "groups": ids})
        return ExitCode.OK
    sequential = len(ids.get(SEQUENTIAL, []))
    click.echo(f"{len(active)} tasks: {parallel} parallel group{'s' * (parallel != 1)}, {sequential} sequential")
    for name, members in ids.items():
        click.echo(f"  {name} ({len(members)}): {', '.join(members)}")
    return ExitCode.OK
