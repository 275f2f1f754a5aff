"""``list``, ``status``, ``wait`` and ``logs``: looking at stored groups without changing them."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import click

from .._text import one_line
from ..markers import is_safe_task_id
from ..models import TaskStatus
from ..runtime.coordinator import wait_for_stored_group
from ..runtime.workspace import kept_worktree_documents
from ..state.readers import read_stored_groups
from ..state.safefs import LineSplitter, UnsafePathError, iter_chunks, open_state_file, tail_start
from ..state.store import GroupStore
from ._common import (
    AppState,
    BadInputError,
    ExitCode,
    FailedError,
    check_group_id,
    command,
    emit_json,
    group_document,
    json_option,
    pass_state,
    print_group,
    stored,
)

__all__ = ("list_command", "logs", "status", "wait")


@command(name="list")
@click.option("--status", "status_filter", metavar="STATUS", help="Only groups with this status.")
@json_option()
@pass_state
def list_command(state: AppState, status_filter: str | None, as_json: bool) -> int:
    """List the groups stored in this repository, newest first."""
    if status_filter is not None and status_filter not in {s.value for s in TaskStatus}:
        choices = ", ".join(s.value for s in TaskStatus)
        raise BadInputError(f"invalid status {status_filter!r:.40} (one of: {choices})")
    coordinator_groups = anyio.run(read_stored_groups, state.repo_root)
    if status_filter is not None:
        coordinator_groups = [
            g for g in coordinator_groups if g.metadata is not None and g.metadata.status.value == status_filter
        ]
    if as_json:
        emit_json([g.to_dict() for g in coordinator_groups])
        return ExitCode.OK
    if not coordinator_groups:
        click.echo("no groups")
    for group in coordinator_groups:
        if group.metadata is None:
            click.echo(f"{group.group_id:<24} unreadable: {one_line(group.error or '')[:160]}")
            continue
        meta = group.metadata
        done = sum(r.get("status") == TaskStatus.COMPLETED for r in meta.results)
        status = meta.status.value + (" (stale)" if group.stale else "")
        click.echo(f"{meta.group_id:<24} {status:<20} {done}/{len(meta.results)} completed  {meta.created_at}")
    return ExitCode.OK


@command()
@click.option("--group-id", required=True)
@json_option()
@pass_state
def status(state: AppState, group_id: str, as_json: bool) -> int:
    """Show one group's state."""
    check_group_id(group_id, allow_sequential=True)
    seen = stored(state, group_id)
    if seen is None:
        raise FailedError(f"no such group: {group_id}")
    if seen.metadata is None:
        raise FailedError(seen.error or f"group {group_id} is unreadable")
    worktree = seen.metadata.isolation == "worktree"
    kept = anyio.run(kept_worktree_documents, state.repo_root, group_id) if worktree else []
    if as_json:
        emit_json(group_document(seen.metadata, {"stale": seen.stale, "kept_worktrees": kept}))
    else:
        print_group(seen.metadata, stale=seen.stale)
        for entry in kept:
            click.echo(f"  kept worktree {entry['path']} ({entry['branch'] or 'detached'})")
    return ExitCode.OK


@command()
@click.option("--group-id", required=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=3600, show_default=True, help="Seconds to wait.")
@json_option()
@pass_state
def wait(state: AppState, group_id: str, timeout: float, as_json: bool) -> int:
    """Wait for a group that another process runs."""
    check_group_id(group_id, allow_sequential=True)
    seen = anyio.run(wait_for_stored_group, state.repo_root, group_id, timeout)
    document: dict[str, Any] = {"group_id": group_id, "completed": False, "status": None}
    if seen is None:
        document["error"] = f"no such group: {group_id}"
        code = ExitCode.FAILED
    elif seen.metadata is None:
        document["error"] = seen.error
        code = ExitCode.FAILED
    else:
        current = seen.metadata.status
        document.update(status=current.value, completed=current is TaskStatus.COMPLETED)
        if seen.stale:
            document.update(stale=True, error="left in_progress by a coordinator that is gone (stale)")
            code = ExitCode.FAILED
        elif current is TaskStatus.COMPLETED:
            code = ExitCode.OK
        elif current in (TaskStatus.BLOCKED, TaskStatus.IN_PROGRESS, TaskStatus.PENDING):
            if current is not TaskStatus.BLOCKED:
                document["timed_out"] = True
            code = ExitCode.BLOCKED
        else:
            code = ExitCode.FAILED
    if as_json:
        emit_json(document)
    else:
        text = document.get("error") or f"group {group_id}: {document['status']}"
        if document.get("timed_out"):
            text += f" (still running after {timeout:g}s)"
        click.echo(text)
    return code


_SPECIAL_LOGS = ("_refresh", "_tests")


def _log_names(store: GroupStore, task_ids: list[str], task_id: str | None) -> list[str]:
    if task_id is not None:
        if task_id not in task_ids and task_id not in _SPECIAL_LOGS:
            raise FailedError(f"group {store.group_id} has no task {task_id!r:.80}")
        return [task_id]
    return ["_refresh", *task_ids, "_tests"]


#: Longest line ``logs`` holds in memory; a longer one is printed in pieces of this size.
_MAX_LINE_BYTES = 64 * 1024
#: How far back from a log's end ``logs --follow`` starts (from its first whole line there).
_FOLLOW_BACK_BYTES = 16 * 1024


class _LogCursor:
    """Where reading of one log stopped; yields whole lines (a partial last line waits for its end).

    The log is opened through safefs (a FIFO, a device, a symlink or a hard link in
    its place is refused by name) and streamed a chunk at a time: memory stays
    bounded whatever its size.  ``from_end`` starts near the end (``--follow``).
    """

    def __init__(self, path: Path, *, from_end: bool = False) -> None:
        self.path = path
        self.offset: int | None = None if from_end else 0
        self.splitter = LineSplitter(_MAX_LINE_BYTES)

    def read(self, *, final: bool) -> Iterator[bytes]:
        try:
            fd = open_state_file(self.path)
        except UnsafePathError as exc:
            raise FailedError(str(exc)) from exc
        except OSError:
            return  # not written yet (or gone): nothing to show
        try:
            if self.offset is None:
                self.offset = tail_start(fd, _FOLLOW_BACK_BYTES)
            end = os.fstat(fd).st_size
            if end < self.offset:  # truncated or replaced: start over
                self.offset = 0
            for chunk in iter_chunks(fd, start=self.offset, end=end):
                self.offset += len(chunk)
                yield from self.splitter.feed(chunk)
            if final:
                yield from self.splitter.flush()
        finally:
            os.close(fd)


def _emit_lines(name: str, lines: Iterator[bytes], *, as_json: bool, header: bool) -> None:
    out = sys.stdout.buffer  # bytes as the log holds them; text and bytes never interleave
    first = True
    for line in lines:
        if as_json:
            text = json.dumps({"task_id": name, "line": line.decode("utf-8", "replace")}, ensure_ascii=False)
            out.write(text.encode() + b"\n")
            continue
        if header and first:
            out.write(f"==> {name} <==\n".encode())
        first = False
        out.write(line + b"\n")
    out.flush()


@command()
@click.option("--group-id", required=True)
@click.option("--task-id", help="One task's log (or _refresh, _tests); default: every log of the group.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the group finishes.")
@json_option(help="JSON lines: {\"task_id\", \"line\"}.")
@pass_state
def logs(state: AppState, group_id: str, task_id: str | None, follow: bool, as_json: bool) -> int:
    """Print the agents' output of a group (with --follow, as it is written)."""
    check_group_id(group_id, allow_sequential=True)
    if task_id is not None and not (is_safe_task_id(task_id) or task_id in _SPECIAL_LOGS):
        raise BadInputError(f"invalid task id {task_id!r:.80}")
    seen = stored(state, group_id)
    if seen is None:
        raise FailedError(f"no such group: {group_id}")
    if seen.metadata is None:
        raise FailedError(seen.error or f"group {group_id} is unreadable")
    store = GroupStore(state.repo_root, group_id)
    names = _log_names(store, list(seen.metadata.tasks), task_id)
    cursors = {name: _LogCursor(store.logs_dir / f"{name}.log", from_end=follow) for name in names}
    header = task_id is None
    if not follow:
        for name, cursor in cursors.items():
            _emit_lines(name, cursor.read(final=True), as_json=as_json, header=header)
        return ExitCode.OK
    try:
        while True:
            current = stored(state, group_id)
            running = (
                current is not None
                and current.metadata is not None
                and current.metadata.status.value in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
                and not current.stale
            )
            for name, cursor in cursors.items():
                _emit_lines(name, cursor.read(final=not running), as_json=as_json, header=header)
            if not running:
                return ExitCode.OK
            time.sleep(0.2)
    except KeyboardInterrupt:
        return ExitCode.OK
