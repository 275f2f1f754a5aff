"""The journal's events as types: one ``TypedDict`` per event, and the one table of event names.

An event is a plain dict on the wire (a JSON line of ``events.jsonl``) and when
published to ``on_event`` listeners (which also get ``group_id``); these types
say which fields each carries, so code that builds or reads one is checked.
Optional fields (absent in older journals or in some runs) are ``NotRequired``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NotRequired, TypedDict

__all__ = (
    "EVENT_TYPES",
    "Event",
    "EventName",
    "Backoff",
    "Budget",
    "GroupError",
    "GroupFinished",
    "GroupStarted",
    "PhaseChanged",
    "RefreshFinished",
    "TaskBlocked",
    "TaskClosed",
    "TaskFinished",
    "TaskPrepared",
    "TaskRetry",
    "TaskStarted",
    "TestsFinished",
    "IsolationDecided",
    "WorktreeCreated",
    "TaskCommitted",
    "ConflictPredicted",
    "TaskMerged",
    "MergeConflict",
    "BisectStep",
    "Landed",
    "LandingBlocked",
    "WarningEvent",
)

EventName = Literal[
    "group_started",
    "refresh_finished",
    "phase_changed",
    "task_prepared",
    "warning",
    "task_blocked",
    "task_started",
    "task_retry",
    "backoff",
    "budget",
    "task_finished",
    "tests_finished",
    "task_closed",
    "group_error",
    "group_finished",
    "isolation_decided",
    "worktree_created",
    "task_committed",
    "conflict_predicted",
    "task_merged",
    "merge_conflict",
    "bisect_step",
    "landed",
    "landing_blocked",
]


class _Event(TypedDict):
    event: str
    at: str
    group_id: NotRequired[str]  # added when published, never journaled


class GroupStarted(_Event):
    schema: int
    run: int
    pid: int
    host: NotRequired[str]
    tasks: list[str]
    created_at: str
    resumed: bool


class RefreshFinished(_Event):
    ok: bool
    exit_code: NotRequired[int | None]
    error: str | None
    log_path: str | None


class PhaseChanged(_Event):
    phase: str  # a GroupPhase value


class TaskPrepared(_Event):
    task_id: str
    subagent: str
    skills_applied: list[str]
    skills_missing: NotRequired[list[str]]
    prompt_path: NotRequired[str]


class WarningEvent(_Event):
    task_id: str | None  # None: every task that runs in this run
    message: str


class TaskBlocked(_Event):
    task_id: str
    blockers: list[str]
    error: str


class _WhereStarted(TypedDict, total=False):
    """A local agent's process (for recovery), or the remote worker that runs it: one or the other."""

    pid: int
    pgid: int
    start_time: int | None
    host: str


class TaskStarted(_Event, _WhereStarted):
    task_id: str
    attempt: int
    argv0: str


class TaskRetry(_Event):
    task_id: str
    attempt: int
    delay_seconds: float
    reason: str | None


class Backoff(_Event):
    """A rate limit opened a shared backoff: every agent of ``preset`` waits ``delay_seconds``."""

    task_id: str  # the task whose attempt was rate limited
    preset: str
    delay_seconds: float
    limit: int | None  # agents of the preset allowed at once now; None: no limit
    rate_limits: int  # of the preset so far in this run


class Budget(_Event):
    """Spent vs budget after a reported cost (and at the start), when a group or plan cap applies."""

    spent_usd: float  # this group's
    group_usd: NotRequired[float]
    plan_spent_usd: NotRequired[float]
    plan_usd: NotRequired[float]


class TaskFinished(_Event):
    task_id: str
    status: str  # a TaskStatus value
    exit_code: int | None
    error: str | None
    extra: NotRequired[dict[str, Any]]  # agent-reported fields: cost_usd, session_id, closed, ...


class TestsFinished(_Event):
    status: Literal["passed", "failed", "skipped"]
    exit_code: int | None
    command: list[str] | None
    error: str | None
    log_path: str | None


class TaskClosed(_Event):
    task_id: str
    ok: bool
    error: str | None


class GroupError(_Event):
    message: str


class GroupFinished(_Event):
    status: str  # a TaskStatus value


class IsolationDecided(_Event):
    mode: str  # "worktree" | "shared"
    reason: str
    target: NotRequired[str]
    base_sha: NotRequired[str]
    integration_branch: NotRequired[str]


class WorktreeCreated(_Event):
    task_id: str
    branch: str
    path: str
    base_sha: str
    reused: bool


class TaskCommitted(_Event):
    task_id: str
    branch: str
    head_sha: str
    committed: bool
    changed_files: list[str]


class ConflictPredicted(_Event):
    files: list[str]
    tasks: list[str]
    source: NotRequired[Literal["footprints", "merge-tree"]]


class TaskMerged(_Event):
    task_id: str
    branch: str
    sha: str
    strategy: str


class MergeConflict(_Event):
    task_id: str
    branch: str
    files: list[str]


class BisectStep(_Event):
    tasks: list[str]
    passed: bool


class Landed(_Event):
    target: str
    sha: str
    method: str


class LandingBlocked(_Event):
    target: str
    message: str


Event = (
    GroupStarted
    | RefreshFinished
    | PhaseChanged
    | TaskPrepared
    | WarningEvent
    | TaskBlocked
    | TaskStarted
    | TaskRetry
    | Backoff
    | Budget
    | TaskFinished
    | TestsFinished
    | TaskClosed
    | GroupError
    | GroupFinished
    | IsolationDecided
    | WorktreeCreated
    | TaskCommitted
    | ConflictPredicted
    | TaskMerged
    | MergeConflict
    | BisectStep
    | Landed
    | LandingBlocked
)

#: Every event name and its type: the one table the fold, the progress view and the docs follow.
EVENT_TYPES: Mapping[str, type] = MappingProxyType(
    {
        "group_started": GroupStarted,
        "refresh_finished": RefreshFinished,
        "phase_changed": PhaseChanged,
        "task_prepared": TaskPrepared,
        "warning": WarningEvent,
        "task_blocked": TaskBlocked,
        "task_started": TaskStarted,
        "task_retry": TaskRetry,
        "backoff": Backoff,
        "budget": Budget,
        "task_finished": TaskFinished,
        "tests_finished": TestsFinished,
        "task_closed": TaskClosed,
        "group_error": GroupError,
        "group_finished": GroupFinished,
        "isolation_decided": IsolationDecided,
        "worktree_created": WorktreeCreated,
        "task_committed": TaskCommitted,
        "conflict_predicted": ConflictPredicted,
        "task_merged": TaskMerged,
        "merge_conflict": MergeConflict,
        "bisect_step": BisectStep,
        "landed": Landed,
        "landing_blocked": LandingBlocked,
    }
)
