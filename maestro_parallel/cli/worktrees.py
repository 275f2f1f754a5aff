"""``clean``: remove the worktrees and ``maestro/`` branches that groups left (DESIGN §12).

Branches whose commits are on no other branch are kept unless ``--force``:
a failed task's work is never deleted by tidying up.  Exit 0 when everything
asked for was removed, 1 when something was kept (each kept thing is named),
2 for bad input.
"""

from __future__ import annotations

from typing import Any

import anyio
import click

from ..isolation import GitError, GitUnavailableError, clean
from ._common import (
    AppState,
    BadInputError,
    ExitCode,
    FailedError,
    check_group_id,
    command,
    emit_json,
    json_option,
    pass_state,
)

__all__ = ("clean_command",)


@command("clean")
@click.option("--group-id", default=None, help="The group whose worktrees and branches to remove.")
@click.option("--all", "all_groups", is_flag=True, help="Every group's worktrees and branches.")
@click.option("--force", is_flag=True, help="Also remove uncommitted work and branches found on no other branch.")
@json_option()
@pass_state
def clean_command(state: AppState, group_id: str | None, all_groups: bool, force: bool, as_json: bool) -> int:
    """Remove what isolation left: worktrees, maestro/ branches, stale worktree records."""
    if (group_id is None) == (not all_groups):
        raise BadInputError("give either --group-id G or --all")
    if group_id is not None:
        check_group_id(group_id, allow_sequential=False)
    try:
        report = anyio.run(lambda: clean(state.repo_root, group_id, force=force))
    except (GitUnavailableError, GitError) as exc:
        raise FailedError(str(exc)) from exc
    document: dict[str, Any] = {
        "worktrees_removed": report.worktrees_removed,
        "branches_deleted": report.branches_deleted,
        "kept": report.kept,
    }
    if as_json:
        emit_json(document)
    else:
        for path in report.worktrees_removed:
            click.echo(f"removed worktree {path}")
        for branch in report.branches_deleted:
            click.echo(f"deleted branch {branch}")
        for line in report.kept:
            click.echo(f"kept: {line}")
        if not (report.worktrees_removed or report.branches_deleted or report.kept):
            click.echo("nothing to clean")
    return ExitCode.FAILED if report.kept else ExitCode.OK
