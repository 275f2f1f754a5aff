"""``maestro-parallel report``: a run as one self-contained HTML file (timeline, tasks, logs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from .._paths import GROUPS_RELATIVE_PATH as GROUPS_FOLDER
from ..report import build_report, write_report
from ..state.planfile import plan_file
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

__all__ = ("report_command",)

WATCH_INTERVAL = 1.0


def _fingerprint(repo_root: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a run moves on: the size and time of every journal and of the plan record."""
    found: list[tuple[str, int, int]] = []
    paths = [plan_file(repo_root)]
    groups = repo_root / GROUPS_FOLDER
    try:
        paths += [groups / name / "events.jsonl" for name in sorted(os.listdir(groups))]
    except OSError:
        pass
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


@command(name="report")
@click.option("--group-id", help="The group to draw.")
@click.option("--plan", "whole_plan", is_flag=True, help="Draw the last whole-plan run: every step on one timeline.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the HTML file.")
@click.option("--watch", is_flag=True, help="Rewrite the file as events arrive, until the run ends (Ctrl-C stops).")
@json_option()
@pass_state
def report_command(
    state: AppState, group_id: str | None, whole_plan: bool, output: Path | None, watch: bool, as_json: bool
) -> int:
    """Write an HTML report of a group (--group-id) or of the last plan (--plan) and print its path.

    One self-contained file (inline CSS and SVG, nothing fetched): a timeline of
    every task attempt, each task's subagent, cost, tokens, changed files and
    merge outcome, the phases and the test gate, and the tail of each log.
    Works on a running group.  Exit codes: 0 written, 1 no such group or plan,
    2 bad input.
    """
    if (group_id is None) == (not whole_plan):
        raise BadInputError("give either --group-id G or --plan")
    if group_id is not None:
        check_group_id(group_id, allow_sequential=True)
    repo_root = state.repo_root
    name = f"{group_id}.html" if group_id is not None else "plan.html"
    target = output if output is not None else repo_root / ".flow" / "maestro" / "reports" / name
    if target.exists() and target.is_dir():
        raise BadInputError(f"--output {target}: is a folder")
    refresh = WATCH_INTERVAL * 2 if watch else None
    built = build_report(repo_root, group_id=group_id, refresh=refresh)
    if built is None:
        what = f"no group {group_id}" if group_id is not None else "no plan has run here"
        raise FailedError(f"{what} under {repo_root}")
    html, problems, running = built
    try:
        write_report(target, html)
    except OSError as exc:
        raise FailedError(f"cannot write {target}: {exc.strerror or exc}") from exc
    for problem in problems:
        state.progress(f"warning: {problem}")
    if as_json:
        emit_json({"path": str(target), "problems": problems, "running": running})
    else:
        click.echo(str(target))
    seen = _fingerprint(repo_root)
    while watch and running:
        time.sleep(WATCH_INTERVAL)
        now = _fingerprint(repo_root)
        if now == seen:
            continue
        seen = now
        built = build_report(repo_root, group_id=group_id, refresh=refresh)
        if built is None:
            break
        html, _, running = built
        write_report(target, html)
        state.progress(f"rewrote {target}" + ("" if running else " (the run has ended)"))
    return ExitCode.OK
