"""MemoryTracker: an in-memory tracker for tests and for applications that embed the coordinator.

Like httpx's ``MockTransport``: no files, no processes, every call recorded in
:attr:`MemoryTracker.calls`, and knobs to make claims or closes fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio

from ..errors import TrackerError
from ..models import TaskMetadata
from ..tasks import TaskRecord, coerce_task
from .local import blockers_of

__all__ = ("MemoryTracker",)


class MemoryTracker:
    """A tracker whose tasks live in a dict.

    :param tasks: task objects (dicts as in a tasks file, or TaskMetadata).
    :param refuse_claims: task id -> the reason a claim of it is refused.
    :param refuse_closes: task id -> the reason closing it fails.
    :param delay: seconds every call takes (to model a slow tracker).
    :param fail_statuses: when set, ``fetch_statuses`` raises TrackerError with it.
    """

    name = "memory"

    def __init__(
        self,
        tasks: Iterable[Mapping[str, Any] | TaskMetadata | TaskRecord] = (),
        *,
        refuse_claims: Mapping[str, str] | None = None,
        refuse_closes: Mapping[str, str] | None = None,
        delay: float = 0.0,
        fail_statuses: str | None = None,
    ) -> None:
        self.records = {
            r.task_id: r for r in (coerce_task(t, index=i, source="memory tracker") for i, t in enumerate(tasks))
        }
        self.statuses = {task_id: r.tracker_status for task_id, r in self.records.items()}
        self.refuse_claims = dict(refuse_claims or {})
        self.refuse_closes = dict(refuse_closes or {})
        self.delay = delay
        self.fail_statuses = fail_statuses
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.close_reasons: dict[str, str] = {}

    def set_status(self, task_id: str, status: str) -> None:
        """Change a task's status, as another actor would."""
        self.statuses[task_id] = status

    async def _call(self, method: str, ids: Iterable[str]) -> None:
        self.calls.append((method, tuple(ids)))
        if self.delay:
            await anyio.sleep(self.delay)

    async def load_tasks(self) -> list[TaskRecord]:
        await self._call("load_tasks", ())
        return list(self.records.values())

    async def fetch_statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        await self._call("fetch_statuses", task_ids)
        if self.fail_statuses:
            raise TrackerError(self.fail_statuses)
        return {t: self.statuses[t] for t in task_ids if t in self.statuses}

    async def find_blockers(self, tasks: Sequence[TaskRecord]) -> dict[str, list[str]]:
        await self._call("find_blockers", [t.task_id for t in tasks])
        known = dict(self.records)
        for record in tasks:
            known.setdefault(record.task_id, record)
        done = {t for t, s in self.statuses.items() if s in ("closed", "completed")}
        open_known = {t: r for t, r in known.items() if t not in done}
        return blockers_of(tasks, open_known, done)

    async def claim(self, task_ids: Sequence[str]) -> dict[str, str | None]:
        await self._call("claim", task_ids)
        answer: dict[str, str | None] = {}
        for task_id in task_ids:
            answer[task_id] = self.refuse_claims.get(task_id)
            if answer[task_id] is None:
                self.statuses[task_id] = "in_progress"
        return answer

    async def close(self, task_ids: Sequence[str], reason: str) -> dict[str, str | None]:
        await self._call("close", task_ids)
        answer: dict[str, str | None] = {}
        for task_id in task_ids:
            answer[task_id] = self.refuse_closes.get(task_id)
            if answer[task_id] is None:
                self.statuses[task_id] = "closed"
                self.close_reasons[task_id] = reason
        return answer
