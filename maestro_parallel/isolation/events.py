"""The events isolation reports (DESIGN §12), as typed dicts, and how they are handed on.

Whoever drives isolation passes an ``on_event`` coroutine function (the group
run appends each event to its journal and shows it in the live progress); the
journal adds the time.  ``None`` means nobody listens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypedDict

__all__ = (
    "BisectStep",
    "ConflictPredicted",
    "EventSink",
    "IsolationEvent",
    "Landed",
    "MergeConflict",
    "TaskCommitted",
    "TaskMerged",
    "WorktreeCreated",
    "emit",
)


class WorktreeCreated(TypedDict):
    event: Literal["worktree_created"]
    task_id: str
    branch: str
    path: str
    base_sha: str
    reused: bool


class TaskCommitted(TypedDict):
    event: Literal["task_committed"]
    task_id: str
    branch: str
    head_sha: str
    committed: bool
    changed_files: list[str]


class ConflictPredicted(TypedDict):
    event: Literal["conflict_predicted"]
    files: list[str]
    tasks: list[str]


class TaskMerged(TypedDict):
    event: Literal["task_merged"]
    task_id: str
    branch: str
    sha: str
    strategy: str


class MergeConflict(TypedDict):
    event: Literal["merge_conflict"]
    task_id: str
    branch: str
    files: list[str]


class BisectStep(TypedDict):
    event: Literal["bisect_step"]
    tasks: list[str]
    passed: bool


class Landed(TypedDict):
    event: Literal["landed"]
    target: str
    sha: str
    method: str


IsolationEvent = WorktreeCreated | TaskCommitted | ConflictPredicted | TaskMerged | MergeConflict | BisectStep | Landed
EventSink = Callable[[IsolationEvent], Awaitable[object]]


async def emit(sink: EventSink | None, event: IsolationEvent) -> None:
    """Hand ``event`` to ``sink`` when there is one."""
    if sink is not None:
        await sink(event)
