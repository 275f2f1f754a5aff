"""What a report shows, computed from a group's journal and snapshot (pure, no I/O).

The journal is the record of every attempt (a snapshot keeps only the last),
so the timeline is built from its events; the snapshot fills in what a
missing or damaged journal lost.  Whatever could not be read is kept as a
problem to show, never raised: a report of half a group beats no report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..models import GroupMetadata

__all__ = (
    "Attempt",
    "GroupView",
    "PhaseSpan",
    "PlanStepView",
    "PlanView",
    "TaskView",
    "TestGate",
    "build_group_view",
    "build_plan_view",
    "parse_time",
    "token_count",
)

_FINAL = ("completed", "failed", "blocked")


def parse_time(value: object) -> float | None:
    """Seconds since the epoch of an ISO 8601 timestamp (``...Z``), None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def token_count(usage: object) -> int | None:
    """Total tokens of a ``usage`` object (every integer field whose name ends in ``tokens``)."""
    if not isinstance(usage, Mapping):
        return None
    counts = [
        v for k, v in usage.items() if str(k).endswith("tokens") and isinstance(v, int) and not isinstance(v, bool)
    ]
    return sum(counts) if counts else None


@dataclass
class Attempt:
    """One launch of a task's agent."""

    number: int
    start: float
    end: float | None = None  # None: still running (or its end was never written)
    status: str = "running"
    error: str | None = None
    exit_code: int | None = None

    @property
    def timed_out(self) -> bool:
        return bool(self.error and "timed out" in self.error)


@dataclass
class TaskView:
    task_id: str
    status: str = "pending"
    subagent: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    retries: int = 0
    error: str | None = None
    cost_usd: float | None = None
    tokens: int | None = None
    changed_files: list[str] = field(default_factory=list)
    merge: str | None = None  # merged | conflict: <files> | None
    closed: bool | None = None
    warnings: list[str] = field(default_factory=list)
    log_path: str | None = None
    log_tail: str | None = None


@dataclass
class PhaseSpan:
    name: str
    start: float
    end: float | None


@dataclass
class TestGate:
    __test__ = False  # not a pytest test class

    status: str
    at: float | None
    error: str | None = None
    log_path: str | None = None
    log_tail: str | None = None


@dataclass
class GroupView:
    group_id: str
    status: str = "unknown"
    started: float | None = None
    ended: float | None = None
    phases: list[PhaseSpan] = field(default_factory=list)
    tests: TestGate | None = None
    tasks: list[TaskView] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read

    @property
    def running(self) -> bool:
        return self.status in ("in_progress", "pending", "unknown")

    def span(self) -> tuple[float, float] | None:
        """The time the timeline covers: the first start to the last end seen."""
        moments = [m for m in (self.started, self.ended) if m is not None]
        for task in self.tasks:
            for attempt in task.attempts:
                moments.append(attempt.start)
                if attempt.end is not None:
                    moments.append(attempt.end)
        for phase in self.phases:
            moments.append(phase.start)
        if self.tests is not None and self.tests.at is not None:
            moments.append(self.tests.at)
        return (min(moments), max(moments)) if moments else None


def build_group_view(
    group_id: str,
    events: Sequence[Mapping[str, Any]],
    meta: GroupMetadata | None,
    problems: Iterable[str] = (),
    log_tails: Mapping[str, str] | None = None,
) -> GroupView:
    """A group's report from its journal ``events`` and its snapshot ``meta`` (either may be empty)."""
    view = GroupView(group_id, problems=list(problems))
    tasks: dict[str, TaskView] = {}

    def task(task_id: object) -> TaskView | None:
        if not isinstance(task_id, str):
            return None
        if task_id not in tasks:
            tasks[task_id] = TaskView(task_id)
        return tasks[task_id]

    open_phase: PhaseSpan | None = None
    for event in events:
        name, at = event.get("event"), parse_time(event.get("at"))
        if name == "group_started":
            view.status = "in_progress"
            view.started = view.started if view.started is not None else at
            for task_id in event.get("tasks") or []:
                task(task_id)
            if at is not None:
                open_phase = _next_phase(view, open_phase, "pre_execution", at)
        elif name == "phase_changed" and at is not None and isinstance(event.get("phase"), str):
            open_phase = _next_phase(view, open_phase, event["phase"], at)
        elif name == "task_prepared" and (t := task(event.get("task_id"))):
            t.subagent = event.get("subagent") if isinstance(event.get("subagent"), str) else t.subagent
        elif name == "task_blocked" and (t := task(event.get("task_id"))):
            t.status, t.error = "blocked", _text(event.get("error"))
        elif name == "task_started" and (t := task(event.get("task_id"))) and at is not None:
            attempt = event.get("attempt")
            t.attempts.append(Attempt(attempt if isinstance(attempt, int) else len(t.attempts) + 1, at))
            t.status, t.error = "in_progress", None
        elif name == "task_retry" and (t := task(event.get("task_id"))):
            t.retries += 1
        elif name == "task_finished" and (t := task(event.get("task_id"))):
            status = str(event.get("status")) if event.get("status") in ("completed", "failed") else "failed"
            t.status, t.error = status, _text(event.get("error"))
            if t.attempts and t.attempts[-1].end is None:
                last = t.attempts[-1]
                last.end, last.status, last.error = at, status, t.error
                code = event.get("exit_code")
                last.exit_code = code if isinstance(code, int) else None
            _take_extras(t, event.get("extra"))
        elif name == "tests_finished":
            view.tests = TestGate(str(event.get("status")), at, _text(event.get("error")), _text(event.get("log_path")))
        elif name == "task_closed" and (t := task(event.get("task_id"))):
            t.closed = event.get("ok") is True
        elif name == "task_merged" and (t := task(event.get("task_id"))):
            t.merge = "merged"
        elif name == "merge_conflict" and (t := task(event.get("task_id"))):
            files = event.get("files")
            t.merge = "conflict" + (": " + ", ".join(map(str, files)) if isinstance(files, list) and files else "")
        elif name == "task_committed" and (t := task(event.get("task_id"))):
            if isinstance(event.get("changed_files"), list):
                t.changed_files = [str(f) for f in event["changed_files"]]
        elif name == "warning" and (t := task(event.get("task_id"))):
            if isinstance(event.get("message"), str) and event["message"] not in t.warnings:
                t.warnings.append(event["message"])
        elif name == "group_error" and isinstance(event.get("message"), str):
            view.errors.append(event["message"])
        elif name == "group_finished":
            view.status = str(event.get("status"))
            view.ended = at
            if open_phase is not None and open_phase.end is None:
                open_phase.end = at
            open_phase = None

    if meta is not None:
        _merge_snapshot(view, tasks, meta)
    order = list(meta.tasks) if meta is not None and meta.tasks else []
    order += [t for t in tasks if t not in order]
    view.tasks = [tasks[t] for t in order if t in tasks]
    for t in view.tasks:
        if log_tails and t.task_id in log_tails:
            t.log_tail = log_tails[t.task_id]
    if view.tests is not None and log_tails and "_tests" in log_tails:
        view.tests.log_tail = log_tails["_tests"]
    return view


def _next_phase(view: GroupView, current: PhaseSpan | None, name: str, at: float) -> PhaseSpan:
    if current is not None and current.end is None:
        current.end = at
    span = PhaseSpan(name, at, None)
    view.phases.append(span)
    return span


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _take_extras(task: TaskView, extra: object) -> None:
    if not isinstance(extra, Mapping):
        return
    cost = extra.get("cost_usd")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        task.cost_usd = (task.cost_usd or 0.0) + float(cost)
    tokens = token_count(extra.get("usage"))
    if tokens is not None:
        task.tokens = (task.tokens or 0) + tokens
    if isinstance(extra.get("changed_files"), list):
        task.changed_files = [str(f) for f in extra["changed_files"]]
    if "closed" in extra:
        task.closed = extra.get("closed") is True


def _merge_snapshot(view: GroupView, tasks: dict[str, TaskView], meta: GroupMetadata) -> None:
    """Fill in from the snapshot what the journal did not say (all of it when the journal is gone)."""
    if view.status in ("unknown", "in_progress"):
        view.status = meta.status.value
    view.started = view.started if view.started is not None else parse_time(meta.started_at)
    if view.ended is None and meta.status.value in _FINAL:
        view.ended = parse_time(meta.completed_at)
    for error in meta.errors:
        if error not in view.errors:
            view.errors.append(error)
    for result in meta.results:
        task_id = result.get("task_id")
        if not isinstance(task_id, str):
            continue
        t = tasks.setdefault(task_id, TaskView(task_id))
        if not t.attempts and (start := parse_time(result.get("started_at"))) is not None:
            status = str(result.get("status"))
            t.attempts.append(
                Attempt(
                    int(result.get("attempts") or 1),
                    start,
                    parse_time(result.get("completed_at")),
                    status if status in _FINAL else "running",
                    _text(result.get("error")),
                )
            )
        if t.status in ("pending", "in_progress") and isinstance(result.get("status"), str):
            t.status = result["status"]
        t.subagent = t.subagent or _text(result.get("subagent"))
        t.error = t.error or _text(result.get("error"))
        t.log_path = _text(result.get("log_path"))
        if t.cost_usd is None and isinstance(result.get("cost_usd"), (int, float)):
            t.cost_usd = float(result["cost_usd"])
        if t.tokens is None:
            t.tokens = token_count(result.get("usage"))
        if not t.changed_files and isinstance(result.get("changed_files"), list):
            t.changed_files = [str(f) for f in result["changed_files"]]
        if t.closed is None and "closed" in result:
            t.closed = result.get("closed") is True


# --------------------------------------------------------------------------- plans


@dataclass
class PlanStepView:
    step_id: str
    label: str
    group_id: str
    tasks: list[str]
    waits_for: list[str]
    status: str
    detail: str
    start: float | None
    end: float | None
    critical: bool


@dataclass
class PlanView:
    status: str
    steps: list[PlanStepView]
    critical_path: list[str]
    groups: dict[str, GroupView]
    problems: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.status == "in_progress"


def build_plan_view(
    document: Mapping[str, Any], groups: Mapping[str, GroupView], problems: Iterable[str] = ()
) -> PlanView:
    """A plan's report from its record (``plan.json``) and the views of its steps' groups."""
    raw_path = document.get("critical_path")
    path: Mapping[str, Any] = raw_path if isinstance(raw_path, Mapping) else {}
    critical = [str(s) for s in path.get("steps", []) if isinstance(s, str)]
    steps: list[PlanStepView] = []
    for raw in document.get("steps", []):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("step"), str):
            continue
        group_id = str(raw.get("group_id") or raw["step"])
        tasks = [str(t) for t in raw.get("tasks", []) if isinstance(t, str)]
        label = f"{tasks[0]} (sequential)" if group_id == "_sequential" and tasks else raw["step"]
        steps.append(
            PlanStepView(
                step_id=raw["step"],
                label=label,
                group_id=group_id,
                tasks=tasks,
                waits_for=[str(w) for w in raw.get("waits_for", []) if isinstance(w, str)],
                status=str(raw.get("status") or "waiting"),
                detail=str(raw.get("detail") or raw.get("blocked") or ""),
                start=parse_time(raw.get("started_at")),
                end=parse_time(raw.get("ended_at")),
                critical=raw["step"] in critical,
            )
        )
    return PlanView(str(document.get("status") or "unknown"), steps, critical, dict(groups), list(problems))
