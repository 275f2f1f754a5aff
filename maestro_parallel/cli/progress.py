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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._paths import GROUPS_RELATIVE_PATH
from ..budget import spent_vs_budget
from ..state.fs import read_tail_nofollow
from ..state.logfiles import last_nonblank_line
from ..textsafe import one_line

if TYPE_CHECKING:  # rich is imported when a live table is drawn: plain output never pays for it
    from rich.console import Console, Group
    from rich.table import Table

    from ..graph import PlanGraph, PlanStep  # a plan's board is built by `run`, which imports them
    from ..runtime.scheduler import StepReport

__all__ = ("LiveProgress", "PlanBoard", "budget_line", "describe_event", "use_live_progress")

_STATE_STYLES = {
    "pending": "dim",
    "in_progress": "bold cyan",
    "completed": "green",
    "failed": "bold red",
    "blocked": "yellow",
    "waiting": "dim",
    "running": "bold cyan",
    "skipped": "yellow",
    "halted": "yellow",
}


def budget_line(budget: Mapping[str, float]) -> str:
    """Spent vs budget for people: ``$1.20 of $5.00 (plan: $3.40 of $10.00)``."""
    text = spent_vs_budget(budget.get("spent_usd", 0.0), budget.get("group_usd"))
    if "plan_usd" in budget:
        text += f" (plan: {spent_vs_budget(budget.get('plan_spent_usd', 0.0), budget['plan_usd'])})"
    return text


def _backoff_text(event: Mapping[str, Any]) -> str:
    limit = event.get("limit")
    return (f"{event.get('preset')} rate limited: every {event.get('preset')} agent waits "
            f"{event.get('delay_seconds')}s" + (f", at most {limit} at once" if limit is not None else ""))


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
        where = f"on {event['host']}" if event.get("host") else f"pid {event.get('pid')}"
        text = f"{task} started (attempt {event.get('attempt')}, {where})"
    elif name == "task_retry":
        text = f"{task} will retry in {event.get('delay_seconds')}s: {event.get('reason')}"
    elif name == "backoff":
        text = _backoff_text(event)
    elif name == "budget":
        text = f"spent {budget_line(event)}" if verbose else None
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
    # Agent output, tracker text and subagent names reach the terminal: never their escape sequences.
    return f"[{at}] {one_line(text)}" if text else None


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
    found = read_tail_nofollow(path, limit)  # a FIFO or symlink an agent put there reads as nothing
    return last_nonblank_line(found[0]) if found is not None else ""


@dataclass(frozen=True)
class StepRow:
    """One step as the plan board shows it."""

    step: PlanStep
    status: str
    detail: str
    seconds: float | None
    waits_for: tuple[str, ...]  # labels of the steps it still waits for (waiting steps only)


class PlanBoard:
    """A whole plan for the live view: each step's state, what the waiting ones wait for.

    ``run`` updates it from the scheduler's transitions; the refresh thread reads
    it, hence the lock.  Running steps first, then waiting ones, then the ended.
    """

    _ORDER = {"running": 0, "waiting": 1, "failed": 2, "blocked": 3, "skipped": 4, "halted": 5, "completed": 6}

    def __init__(self, graph: PlanGraph) -> None:
        self.graph = graph
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._label = {step.step_id: step.label for step in graph.steps}
        self._status = {step.step_id: "waiting" for step in graph.steps}
        self._detail = dict.fromkeys(self._status, "")
        self._since: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._waits = {s.step_id: tuple(dict.fromkeys((*s.waits_for, *s.after))) for s in graph.steps}

    def update(self, states: Mapping[str, StepReport], waiting: Mapping[str, list[str]]) -> None:
        """Take the scheduler's state table and :func:`~maestro_parallel.runtime.scheduler.waiting_for`."""
        now = time.monotonic()
        with self._lock:
            for sid, report in states.items():
                status = report.status.value
                if status == "running" and self._status.get(sid) != "running":
                    self._since[sid] = now
                elif status not in ("running", "waiting") and sid not in self._ended:
                    self._ended[sid] = now
                self._status[sid], self._detail[sid] = status, report.detail
            for sid, pending in waiting.items():
                self._waits[sid] = tuple(pending)

    def rows(self) -> list[StepRow]:
        now = time.monotonic()
        with self._lock:
            rows = [
                StepRow(
                    step=step,
                    status=self._status[step.step_id],
                    detail=self._detail[step.step_id],
                    seconds=(self._ended.get(step.step_id, now) - self._since[step.step_id])
                    if step.step_id in self._since
                    else None,
                    waits_for=tuple(self._label[w] for w in self._waits[step.step_id])
                    if self._status[step.step_id] == "waiting"
                    else (),
                )
                for step in self.graph.steps
            ]
        return sorted(rows, key=lambda row: self._ORDER.get(row.status, 7))


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
    budget: str = ""  # spent vs budget, when a cap applies
    backoff_until: float = 0.0  # a shared backoff of a preset: its agents wait until then
    backoff: str = ""


class LiveProgress:
    """A live table of every running group: a row per task and the group's totals.

    :param repo_root: where the logs are (their last line is shown for running tasks).
    :param max_rows: rows shown per group; running tasks come first, the rest are counted.
    """

    def __init__(self, console: Console, repo_root: Path, *, max_rows: int = 20, plan: PlanBoard | None = None) -> None:
        self.console = console
        self.repo_root = repo_root
        self.max_rows = max_rows
        self.plan = plan
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
            elif name == "budget":
                group.budget = budget_line(event)
            elif name == "backoff":
                group.backoff_until = now + float(event.get("delay_seconds") or 0)
                limit = event.get("limit")
                group.backoff = f"{event.get('preset')} backoff" + (f", limit {limit}" if limit is not None else "")
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

    def _snapshot(
        self, group: _GroupView, now: float, step: PlanStep | None = None
    ) -> tuple[str, dict[str, int], list[tuple[str, ...]], int]:
        """What one table shows, copied under the lock (cheap: at most ``max_rows`` rows).

        With ``step``, only that step's own tasks (a sequential step shares its group with the others).
        """
        order = {"in_progress": 0, "failed": 1, "blocked": 2, "completed": 3, "pending": 4}
        own = [t for t in group.tasks.values() if step is None or t.task_id in step.task_ids]
        counts: dict[str, int] = {}
        for task in own:
            counts[task.status] = counts.get(task.status, 0) + 1
        tasks = sorted(own, key=lambda t: order.get(t.status, 5))
        rows: list[tuple[str, ...]] = []
        for task in tasks[: self.max_rows]:
            seconds = f"{(task.ended or now) - task.started:.1f}s" if task.started is not None else ""
            rows.append((task.task_id, task.subagent, task.status, seconds, task.note))
        state = group.phase if group.status == "in_progress" else group.status
        name = f"step {step.label}" if step is not None else f"group {group.group_id}"
        title = f"{name} · {state} · {(group.ended or now) - group.started:.0f}s"
        if group.budget:
            title += f" · spent {group.budget}"
        if group.ended is None and now < group.backoff_until:
            title += f" · {group.backoff} ({group.backoff_until - now:.0f}s left)"
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
            # Text cells are never parsed as markup; one_line drops escape sequences and control characters.
            table.add_row(
                Text(one_line(task_id)),
                Text(one_line(subagent, 80)),
                Text(one_line(status), style=_STATE_STYLES.get(status, "")),
                seconds,
                Text(one_line(note, 400)),
            )
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
        if self.plan is not None:
            rows = self.plan.rows()
            with self._lock:
                running = [
                    (row.step.group_id, *self._snapshot(self._groups[row.step.group_id], now, row.step))
                    for row in rows
                    if row.status == "running" and row.step.group_id in self._groups
                ]
            return Group(self._plan_table(self.plan, rows, now), *(self._table(*view) for view in running))
        with self._lock:
            views = [(g.group_id, *self._snapshot(g, now)) for g in self._groups.values()]
        return Group(*(self._table(*view) for view in views))

    def _plan_table(self, plan: PlanBoard, rows: list[StepRow], now: float) -> Table:
        """The plan's steps: running, then waiting (with what they wait for), then ended."""
        from rich.table import Table
        from rich.text import Text

        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        totals = " · ".join(f"{n} {status}" for status, n in counts.items())
        table = Table(
            title=f"plan · {totals} · {now - plan.started:.0f}s",
            title_justify="left",
            expand=True,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("step", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("tasks", overflow="ellipsis", no_wrap=True)
        table.add_column("waits for / outcome", overflow="ellipsis", no_wrap=True, ratio=1)
        for row in rows[: self.max_rows]:
            seconds = f"{row.seconds:.1f}s" if row.seconds is not None else ""
            if row.status == "waiting":
                note = ", ".join(row.waits_for) if row.waits_for else "ready (waiting for a slot)"
            else:
                note = row.detail
            tasks = ", ".join(row.step.task_ids)
            table.add_row(row.step.label, Text(row.status, style=_STATE_STYLES.get(row.status, "")), seconds, tasks,
                          note)
        if len(rows) > self.max_rows:
            table.add_row(f"… {len(rows) - self.max_rows} more", "", "", "", "")
        return table

    @contextmanager
    def live(self) -> Iterator[LiveProgress]:
        """Show the table, redrawn four times a second, until the block ends."""
        from rich.live import Live

        with Live(self, console=self.console, refresh_per_second=4, transient=False, redirect_stdout=False):
            yield self
