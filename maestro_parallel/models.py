"""Data models: the group and task records, exactly as the stored JSON shows them.

``GroupMetadata`` is what ``metadata.json`` holds and what
``execute_parallel_group`` returns; ``TaskMetadata`` is one task as the
coordinator understands it.  Both round-trip through plain dicts with
``to_dict()`` / ``from_dict()``.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import ValidationError

__all__ = (
    "GroupMetadata",
    "GroupPhase",
    "TaskMetadata",
    "TaskResult",
    "TaskStatus",
    "format_timestamp",
    "new_result",
    "utc_now",
)


class TaskStatus(enum.StrEnum):
    """Status of a task, and of a group as a whole."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    BLOCKED = "blocked"


class GroupPhase(enum.StrEnum):
    """The four phases a group goes through, in order."""

    PRE_EXECUTION = "pre_execution"
    CONCURRENT_EXECUTION = "concurrent_execution"
    COORDINATION = "coordination"
    POST_EXECUTION = "post_execution"


def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` as ISO 8601 in UTC with milliseconds and a ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_SECOND: list[Any] = [None, ""]  # the last whole second formatted, and its text


def utc_now() -> str:
    """The current time as the stored timestamps spell it (every event asks: the second is cached)."""
    now = time.time()
    second = int(now)
    if second != _SECOND[0]:
        _SECOND[0], _SECOND[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
    return f"{_SECOND[1]}{int((now - second) * 1000):03d}Z"


@dataclass
class TaskResult:
    """One entry of a group's ``results``, typed: the keys the snapshot always has, then the added ones.

    :meth:`to_dict` gives exactly the JSON of ``metadata.json`` (keys in the
    documented order, then ``extra``: ``pid``, ``closed``, ``cost_usd``, ...);
    :meth:`from_dict` reads it back, so ``TaskResult.from_dict(d).to_dict() == d``.
    ``GroupMetadata.results`` stays a list of such dicts (the public shape);
    :meth:`GroupMetadata.task_results` gives the typed view.
    """

    task_id: str
    subagent: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    started_at: str | None = None
    completed_at: str | None = None
    skills_applied: list[str] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)
    log_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "subagent": self.subagent,
            "status": self.status.value,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "skills_applied": list(self.skills_applied),
            "exit_code": self.exit_code,
            "error": self.error,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "log_path": self.log_path,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        what = f"result {data.get('task_id')!r:.60}" if isinstance(data, Mapping) else "result"
        if not isinstance(data, Mapping):
            raise ValidationError(f"{what} must be an object, got {type(data).__name__}")
        try:
            status = TaskStatus(str(data.get("status")))
        except ValueError as exc:
            raise ValidationError(f"{what}: key 'status' is not a task status: {data.get('status')!r:.60}") from exc
        return cls(
            task_id=_expect_str(data, "task_id", what),
            subagent=data.get("subagent"),
            status=status,
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            skills_applied=_str_list(data, "skills_applied", what),
            exit_code=data.get("exit_code"),
            error=data.get("error"),
            attempts=int(data.get("attempts") or 0),
            warnings=_str_list(data, "warnings", what),
            log_path=data.get("log_path"),
            extra={k: v for k, v in data.items() if k not in _RESULT_KEYS},
        )


_RESULT_KEYS = frozenset(f.name for f in dataclasses.fields(TaskResult)) - {"extra"}


def new_result(task_id: str, *, log_path: str) -> dict[str, Any]:
    """A fresh result entry for a task that has not run yet."""
    return TaskResult(task_id, log_path=log_path).to_dict()


def _expect_str(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValidationError(f"{what}: key {key!r} must be a string, got {value!r:.60}")
    return value


def _str_list(data: Mapping[str, Any], key: str, what: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{what}: key {key!r} must be a list of strings")
    return list(value)


@dataclass
class TaskMetadata:
    """One task as the coordinator runs it.

    ``dependencies`` lists only the ids of tasks that *block* this one;
    non-blocking links are dropped when a task is loaded.
    """

    task_id: str
    title: str = ""
    description: str = ""
    subagent_type: str | None = None
    fallback_agents: list[str] = field(default_factory=list)
    applicable_skills: list[str] = field(default_factory=list)
    relevant_files: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    priority: int = 2
    status: TaskStatus = TaskStatus.PENDING

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "title": self.title,
            "description": self.description,
            "subagent_type": self.subagent_type,
            "fallback_agents": list(self.fallback_agents),
            "applicable_skills": list(self.applicable_skills),
            "relevant_files": list(self.relevant_files),
            "dependencies": list(self.dependencies),
            "priority": self.priority,
            "status": self.status.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskMetadata:
        if not isinstance(data, Mapping):
            raise ValidationError(f"task metadata must be an object, got {type(data).__name__}")
        what = f"task {data.get('task_id')!r}"
        priority = data.get("priority", 2)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 4:
            raise ValidationError(f"{what}: key 'priority' must be an integer 0-4, got {priority!r:.60}")
        try:
            status = TaskStatus(data.get("status", "pending"))
        except ValueError as exc:
            raise ValidationError(f"{what}: key 'status' is not a task status: {data.get('status')!r:.60}") from exc
        subagent = data.get("subagent_type")
        if subagent is not None and not isinstance(subagent, str):
            raise ValidationError(f"{what}: key 'subagent_type' must be a string or null")
        return cls(
            task_id=_expect_str(data, "task_id", what),
            title=_expect_str(data, "title", what) if "title" in data else "",
            description=_expect_str(data, "description", what) if "description" in data else "",
            subagent_type=subagent,
            fallback_agents=_str_list(data, "fallback_agents", what),
            applicable_skills=_str_list(data, "applicable_skills", what),
            relevant_files=_str_list(data, "relevant_files", what),
            dependencies=_str_list(data, "dependencies", what),
            priority=priority,
            status=status,
        )


@dataclass
class GroupMetadata:
    """A parallel group: what ``metadata.json`` stores and ``execute_parallel_group`` returns.

    ``results`` holds one dict per task (blocked ones included); ``errors``
    holds failures only, each starting with the task id when it is about a task.
    Count the completed tasks with
    ``sum(r["status"] == "completed" for r in group.results)``.
    """

    group_id: str
    group_name: str = ""
    phase: GroupPhase = GroupPhase.PRE_EXECUTION
    tasks: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=utc_now)
    started_at: str | None = None
    completed_at: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pre_group_refresh_completed: bool = False
    #: Spent vs budget (``spent_usd``, ``group_usd``, ``plan_spent_usd``, ``plan_usd``) when a cap
    #: applies; None otherwise (then the snapshot has no ``budget`` key).
    budget: dict[str, float] | None = None
    # Isolation (DESIGN §12): the mode that ran, the pinned base, predicted overlaps, and landing.
    isolation: str | None = None  # "worktree" | "shared"; None: not decided yet
    base_sha: str | None = None
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    integration_branch: str | None = None
    landed: bool = False
    landed_sha: str | None = None

    def __post_init__(self) -> None:
        if not self.group_name:
            self.group_name = f"Parallel Group {self.group_id}"

    def task_results(self) -> list[TaskResult]:
        """``results`` as :class:`TaskResult` objects (a typed copy; changing it changes nothing)."""
        return [TaskResult.from_dict(result) for result in self.results]

    def result_for(self, task_id: str) -> dict[str, Any] | None:
        """The result entry of ``task_id``, or None.

        Looked up in an index (every event asks, so a scan would cost O(N²) for
        a group of N tasks): extended when entries were appended, rebuilt only
        when ``results`` is replaced or shrinks.
        """
        results = self.results
        cached = self.__dict__.get("_result_index")
        if cached is not None and cached[0] is results and cached[1] < len(results):
            index_so_far: dict[Any, dict[str, Any]] = cached[2]
            for entry in results[cached[1] :]:
                index_so_far.setdefault(entry.get("task_id"), entry)
            cached = (results, len(results), index_so_far)
            self.__dict__["_result_index"] = cached
        if cached is None or cached[0] is not results or cached[1] != len(results):
            index: dict[Any, dict[str, Any]] = {}
            for entry in results:
                index.setdefault(entry.get("task_id"), entry)
            cached = (results, len(results), index)
            self.__dict__["_result_index"] = cached
        result: dict[str, Any] | None = cached[2].get(task_id)
        if result is not None and result.get("task_id") != task_id:  # an entry rewritten in place
            del self.__dict__["_result_index"]
            return self.result_for(task_id)
        return result

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "group_id": self.group_id,
            "group_name": self.group_name,
            "phase": self.phase.value,
            "tasks": list(self.tasks),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "status": self.status.value,
            "results": [dict(r) for r in self.results],
            "errors": list(self.errors),
            "pre_group_refresh_completed": self.pre_group_refresh_completed,
            **({"budget": dict(self.budget)} if self.budget is not None else {}),
        }
        if self.isolation is not None:  # a group that decided its mode (keys absent in older snapshots)
            data.update(
                isolation=self.isolation,
                base_sha=self.base_sha,
                conflicts=[dict(c) for c in self.conflicts],
                integration_branch=self.integration_branch,
                landed=self.landed,
                landed_sha=self.landed_sha,
            )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupMetadata:
        if not isinstance(data, Mapping):
            raise ValidationError(f"group metadata must be an object, got {type(data).__name__}")
        what = f"group {data.get('group_id')!r}"
        try:
            phase = GroupPhase(data.get("phase", "pre_execution"))
        except ValueError as exc:
            raise ValidationError(f"{what}: key 'phase' is not a group phase: {data.get('phase')!r:.60}") from exc
        try:
            status = TaskStatus(data.get("status", "pending"))
        except ValueError as exc:
            raise ValidationError(f"{what}: key 'status' is not a task status: {data.get('status')!r:.60}") from exc
        results = data.get("results", [])
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and isinstance(r.get("task_id"), str) for r in results
        ):
            raise ValidationError(f"{what}: key 'results' must be a list of objects with a 'task_id'")
        for key in ("started_at", "completed_at"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValidationError(f"{what}: key {key!r} must be a string or null")
        refreshed = data.get("pre_group_refresh_completed", False)
        if not isinstance(refreshed, bool):
            raise ValidationError(f"{what}: key 'pre_group_refresh_completed' must be a boolean")
        budget = data.get("budget")
        if budget is not None and not (
            isinstance(budget, dict)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in budget.values())
        ):
            raise ValidationError(f"{what}: key 'budget' must be an object of amounts")
        for key in ("isolation", "base_sha", "integration_branch", "landed_sha"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValidationError(f"{what}: key {key!r} must be a string or null")
        conflicts = data.get("conflicts", [])
        if not isinstance(conflicts, list) or not all(isinstance(c, dict) for c in conflicts):
            raise ValidationError(f"{what}: key 'conflicts' must be a list of objects")
        landed = data.get("landed", False)
        if not isinstance(landed, bool):
            raise ValidationError(f"{what}: key 'landed' must be a boolean")
        return cls(
            group_id=_expect_str(data, "group_id", what),
            group_name=str(data["group_name"]) if isinstance(data.get("group_name"), str) else "",
            phase=phase,
            tasks=_str_list(data, "tasks", what),
            created_at=_expect_str(data, "created_at", what),
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            status=status,
            results=[dict(r) for r in results],
            errors=_str_list(data, "errors", what),
            pre_group_refresh_completed=refreshed,
            budget={str(k): float(v) for k, v in budget.items()} if budget is not None else None,
            isolation=data.get("isolation"),
            base_sha=data.get("base_sha"),
            conflicts=[dict(c) for c in conflicts],
            integration_branch=data.get("integration_branch"),
            landed=landed,
            landed_sha=data.get("landed_sha"),
        )
