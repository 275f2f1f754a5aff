"""Pure rules of a run's ending: why it stopped, and the group's final status.

Kept apart from the async run so that they are plain functions and a small
dataclass, tested without an event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import TaskStatus

__all__ = ("StopState", "final_status")


@dataclass
class StopState:
    """How a run is being stopped, in one place instead of flags spread over the run.

    ``reason`` is set by the first stop request (a signal, ``cancel``) and
    kept; ``force`` (a second Ctrl-C) only ever goes from False to True;
    ``halted`` means a task failed under ``halt_on_failure``; ``cancelled``
    that the caller's cancel scope was cancelled.
    """

    reason: str | None = None
    force: bool = False
    halted: bool = False
    cancelled: bool = False

    def request(self, reason: str, *, force: bool = False) -> None:
        if self.reason is None:
            self.reason = reason
        self.force = self.force or force

    def grace(self, configured: float) -> float:
        """The grace period agents get: none once the stop is forced."""
        return 0.0 if self.force else configured

    def task_error(self, *, past_group_deadline: bool, group_timeout: float) -> str:
        """The error of a task stopped before it finished."""
        if self.halted:
            return "halted"
        if self.reason is None and past_group_deadline:
            return f"group timed out after {group_timeout:g}s"
        return "interrupted"

    def group_error(self) -> str | None:
        """The group error the stop leaves, or None."""
        if self.reason:
            return f"run {self.reason}"
        if self.cancelled:
            return "run interrupted: cancelled"
        return None


def final_status(
    results: Iterable[Mapping[str, Any]], errors: Sequence[str], *, landing_blocked: str | None = None
) -> TaskStatus:
    """The group's status from its tasks' and its errors.

    Failed when a group error was recorded or any task failed or never finished;
    else blocked when a task was blocked or its verified work could not land
    (``landing_blocked``, the error that says why, is then the only error);
    else completed.
    """
    statuses = {r.get("status") for r in results}
    unfinished = {TaskStatus.FAILED.value, TaskStatus.PENDING.value, TaskStatus.IN_PROGRESS.value}
    if [e for e in errors if e != landing_blocked] or statuses & unfinished:
        return TaskStatus.FAILED
    if landing_blocked is not None or TaskStatus.BLOCKED.value in statuses:
        return TaskStatus.BLOCKED
    return TaskStatus.COMPLETED
