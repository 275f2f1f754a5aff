"""The tracker interface: where tasks come from and where their state is reported.

A tracker is a small protocol of async methods, like an httpx transport: the
coordinator is written against it and never against a concrete tracker.
Every method handles many ids in one call, because a real tracker call (a
``bd`` process) costs hundreds of milliseconds: the coordinator asks once per
poll tick for the whole group, never once per task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..tasks import TaskRecord

__all__ = ("Tracker",)


@runtime_checkable
class Tracker(Protocol):
    """What the coordinator needs from an issue tracker."""

    #: A short name for messages: ``local``, ``beads``, ``memory``.
    name: str

    async def load_tasks(self) -> list[TaskRecord]:
        """Every task the tracker knows, closed ones included (they satisfy dependencies)."""
        ...

    async def fetch_statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        """The tracker status (``open``, ``in_progress``, ``closed``, ...) of many tasks in one call.

        Ids the tracker does not know are left out of the answer.
        """
        ...

    async def find_blockers(self, tasks: Sequence[TaskRecord]) -> dict[str, list[str]]:
        """For each task, the ids of what still blocks it (an empty list: ready).

        An unknown dependency blocks: the check fails closed.
        """
        ...

    async def claim(self, task_ids: Sequence[str]) -> Mapping[str, str | None]:
        """Mark tasks in progress.  Each id maps to None, or to why the claim was refused."""
        ...

    async def close(self, task_ids: Sequence[str], reason: str) -> Mapping[str, str | None]:
        """Close tasks with a reason.  Each id maps to None, or to why closing failed."""
        ...
