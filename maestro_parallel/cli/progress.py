"""Progress for people: a live table on a terminal, one line per event otherwise.

Both are fed by the coordinator's ``on_event`` callback.  The live view keeps
only small per-task state; the rich refresh thread renders it (reading the
last line of each running agent's log there, off the event loop).  Plain
lines suit logs and CI; ``--quiet`` silences both; ``--json`` output on
stdout is never touched, since progress goes to stderr.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._paths import GROUPS_RELATIVE_PATH
from ..state.logfiles import last_nonblank_line

if TYPE_CHECKING:  # rich is imported when a live table is drawn: plain output never pays for it
    from rich.console import Console, Group
    from rich.table import Table

__all__ = ("LiveProgress", "describe_event", "use_live_progress")

_STATE_STYLES = {
    "pending": "dim",
    "in_progress": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "blocked": "yellow",
}


def describe_event(event: dict[str, Any], verbose: int = 0) -> str | None:
    """One line for people about an event, or None for events not worth a line."""
    name = event.get("event")
    at = str(event.get("at", ""))[11:19]
    group = event.get("group_id")
    task = event.get("task_id")
    text: str | None
    if name == "group_started":
        text = f"group {group}: {len(event.get('tasks', []))} tasks" + (" (resumed)" if event.get("resumed") else "")
    elif name == "phase_changed":
        text = f"group {group}: phase {event.get('phase')}"
    elif name == "refresh_finished":
        text = "context refreshed" if event.get("ok") else None
    elif name == "task_blocked":
        text = f"{task} blocked: {event.get('error')}"
    elif name == "task_started":
        text = f"{task} started (attempt {event.get('attempt')}, pid {event.get('pid')})"
    elif name == "task_retry":
        text = f"{task} will retry in {event.get('delay_seconds')}s: {event.get('reason')}"
    elif name == "task_finished":
        text = f"{task} {event.get('status')}" + (f": {event.get('error')}" if event.get("error") else "")
    elif name == "tests_finished":
        text = f"tests {event.get('status')}" + (f": {event.get('error')}" if event.get("error") else "")
    elif name == "task_closed":
        text = f"{task} closed" if event.get("ok") else f"{task} not closed: {event.get('error')}"
    elif name == "warning":
        text = f"warning: {(task + ': ') if task else ''}{event.get('message')}"
    elif name == "group_error":
        text = f"error: {event.get('message')}"
    elif name == "group_finished":
        text = f"group {group}: {event.get('status')}"
    elif name == "task_prepared":
        text = f"{task}: subagent {event.get('subagent')}" if verbose else None
    elif name in _ISOLATION_LINES:
        text = _ISOLATION_LINES[name](event, verbose)
    else:
        text = None
    return f"[{at}] {text}" if text else None


def _files(event: dict[str, Any]) -> str:
    return ", ".join(str(f) for f in event.get("files", []))


#: One line per isolation event (DESIGN §12); the per-task ones only with -v, except what fails or lands.
_ISOLATION_LINES: dict[str, Any] = {
    "isolation_decided": lambda e, v: (
        f"isolation: {e.get('mode')}"
        + (f" on {e.get('target')} at {str(e.get('base_sha'))[:12]}" if e.get("base_sha") else f" ({e.get('reason')})")
    ),
    "worktree_created": lambda e, v: f"{e.get('task_id')}: worktree {e.get('path')}" if v else None,
    "task_committed": lambda e, v: (
        f"{e.get('task_id')}: {len(e.get('changed_files', []))} file(s) changed on {e.get('branch')}" if v else None
    ),
    "conflict_predicted": lambda e, v: (
        f"predicted conflict: {', '.join(e.get('tasks', []))} on {_files(e)}"
        if e.get("source") != "merge-tree" or v
        else None
    ),
    "task_merged": lambda e, v: f"{e.get('task_id')} merged into the integration branch",
    "merge_conflict": lambda e, v: f"{e.get('task_id')}: merge conflict in {_files(e)}",
    "bisect_step": lambda e, v: (
        f"bisect: {', '.join(e.get('tasks', [])) or 'the target alone'} {'passes' if e.get('passed') else 'fails'}"
        if v
        else None
    ),
    "landed": lambda e, v: f"landed on {e.get('target')} at {str(e.get('sha'))[:12]} ({e.get('method')})",
    "landing_blocked": lambda e, v: f"not landed: {e.get('message')}",
}


def use_live_progress(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal that can redraw a table."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return interactive and os.environ.get("TERM", "") != "dumb"


def _last_line(path: Path, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return ""
    return last_nonblank_line(data)


@dataclass
class _Task:
    task_id: str
    subagent: str = ""
    status: str = "pending"
    started: float | None = None
    ended: float | None = None
    note: str = ""


@dataclass
class _GroupView:
    group_id: str
    phase: str = "pre_execution"
    status: str = "in_progress"
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    tasks: dict[str, _Task] = field(default_factory=dict)


class LiveProgress:
    """A live table of every running group: a row per task and the group's totals.

    :param repo_root: where the logs are (their last line is shown for running tasks).
    :param max_rows: rows shown per group; running tasks come first, the rest are counted.
    """

    def __init__(self, console: Console, repo_root: Path, *, max_rows: int = 20) -> None:
        self.console = console
        self.repo_root = repo_root
        self.max_rows = max_rows
        self._groups: dict[str, _GroupView] = {}
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        """Take one coordinator event (the ``on_event`` callback)."""
        name = event.get("event")
        group_id = str(event.get("group_id", ""))
        now = time.monotonic()
        with self._lock:
            group = self._groups.get(group_id)
            if name == "group_started" or group is None:
                group = self._groups[group_id] = _GroupView(group_id)
                for task_id in event.get("tasks", []):
                    group.tasks[task_id] = _Task(task_id)
            task = group.tasks.get(str(event.get("task_id")))
            if name == "phase_changed":
                group.phase = str(event.get("phase"))
            elif name == "group_finished":
                group.status, group.ended = str(event.get("status")), now
            elif task is None:
                return
            elif name == "task_prepared":
                task.subagent = str(event.get("subagent") or "")
            elif name == "task_started":
                task.status, task.started, task.ended, task.note = "in_progress", now, None, ""
            elif name == "task_blocked":
                task.status, task.note = "blocked", str(event.get("error") or "")
            elif name == "task_retry":
                task.note = f"retrying in {event.get('delay_seconds')}s"
            elif name == "task_finished":
                task.status, task.ended = str(event.get("status")), now
                task.note = str(event.get("error") or "")
            elif name == "task_closed" and event.get("ok"):
                task.note = "closed"
            elif name == "task_committed":
                task.note = f"{len(event.get('changed_files', []))} file(s) committed"
            elif name == "task_merged":
                task.note = "merged"
            elif name == "merge_conflict":
                task.note = f"merge conflict in {_files(event)}"

    def _snapshot(self, group: _GroupView, now: float) -> tuple[str, dict[str, int], list[tuple[str, ...]], int]:
        """What one table shows, copied under the lock (cheap: at most ``max_rows`` rows)."""
        order = {"in_progress": 0, "failed": 1, "blocked": 2, "completed": 3, "pending": 4}
        counts: dict[str, int] = {}
        for task in group.tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        tasks = sorted(group.tasks.values(), key=lambda t: order.get(t.status, 5))
        rows: list[tuple[str, ...]] = []
        for task in tasks[: self.max_rows]:
            seconds = f"{(task.ended or now) - task.started:.1f}s" if task.started is not None else ""
            rows.append((task.task_id, task.subagent, task.status, seconds, task.note))
        state = group.phase if group.status == "in_progress" else group.status
        title = f"group {group.group_id} · {state} · {(group.ended or now) - group.started:.0f}s"
        return title, counts, rows, max(0, len(tasks) - self.max_rows)

    def _table(
        self, group_id: str, title: str, counts: dict[str, int], rows: list[tuple[str, ...]], hidden: int
    ) -> Table:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", expand=True, show_edge=False, pad_edge=False)
        table.add_column("task", no_wrap=True)
        table.add_column("subagent", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("last output", overflow="ellipsis", no_wrap=True, ratio=1)
        logs = self.repo_root / GROUPS_RELATIVE_PATH / group_id / "logs"
        for task_id, subagent, status, seconds, note in rows:
            if status == "in_progress":
                note = _last_line(logs / f"{task_id}.log")
            table.add_row(task_id, subagent, Text(status, style=_STATE_STYLES.get(status, "")), seconds, note)
        if hidden:
            table.add_row(f"… {hidden} more", "", "", "", "")
        shown = ("in_progress", "completed", "failed", "blocked", "pending")
        totals = " · ".join(f"{counts[s]} {s}" for s in shown if counts.get(s))
        table.caption = f"{totals} · {counts.get('completed', 0)}/{sum(counts.values())} done"
        table.caption_justify = "left"
        return table

    def __rich__(self) -> Group:
        from rich.console import Group

        now = time.monotonic()
        with self._lock:
            views = [(g.group_id, *self._snapshot(g, now)) for g in self._groups.values()]
        return Group(*(self._table(*view) for view in views))

    @contextmanager
    def live(self) -> Iterator[LiveProgress]:
        """Show the table, redrawn four times a second, until the block ends."""
        from rich.live import Live

        with Live(self, console=self.console, refresh_per_second=4, transient=False, redirect_stdout=False):
            yield self
