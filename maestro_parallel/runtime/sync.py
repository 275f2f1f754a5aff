"""ParallelCoordinator: the blocking facade over :class:`AsyncParallelCoordinator`.

Nothing is implemented twice: each method is one ``anyio.run`` of the async
method of the same name.  It is for scripts; inside a running event loop use
the async class (the facade says so instead of deadlocking).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio

from ..config import Config
from ..errors import AsyncContextError
from ..markers import detect_groups, extract_relevant_files
from ..models import GroupMetadata, TaskMetadata, TaskStatus
from ..tasks import TaskRecord
from ..trackers.base import Tracker
from .coordinator import AsyncParallelCoordinator, EventCallback

__all__ = ("ParallelCoordinator",)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _blocking(func: Callable[_P, Awaitable[_T]], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    try:
        return anyio.run(functools.partial(func, *args, **kwargs))
    except RuntimeError as exc:
        if str(exc).startswith("Already running"):
            raise AsyncContextError(
                "ParallelCoordinator cannot be called from inside a running event loop; "
                "await the same method of AsyncParallelCoordinator instead"
            ) from None  # the event loop's own message would only mislead: this one says what to do
        raise


class ParallelCoordinator:
    """Blocking twin of :class:`AsyncParallelCoordinator`; same arguments, same methods."""

    def __init__(
        self,
        repo_root: str | os.PathLike[str] | None = None,
        *,
        config: Config | None = None,
        tracker: Tracker | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.coordinator = AsyncParallelCoordinator(repo_root, config=config, tracker=tracker, on_event=on_event)

    @property
    def repo_root(self) -> Path:
        return self.coordinator.repo_root

    @property
    def config(self) -> Config:
        return self.coordinator.config

    @property
    def tracker(self) -> Tracker:
        return self.coordinator.tracker

    def detect_groups(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Group tasks by their ``[P:Group-<id>]`` marker (pure)."""
        return detect_groups(tasks)

    def execute_parallel_group(
        self,
        group_tasks: Sequence[Mapping[str, Any] | TaskMetadata | TaskRecord],
        group_id: str,
        *,
        restart: bool = False,
        halt_on_failure: bool = False,
    ) -> GroupMetadata:
        """Run one group to its end; see :meth:`AsyncParallelCoordinator.execute_parallel_group`."""
        return _blocking(
            self.coordinator.execute_parallel_group,
            group_tasks,
            group_id,
            restart=restart,
            halt_on_failure=halt_on_failure,
        )

    def refresh_context_before_group(self) -> bool:
        return _blocking(self.coordinator.refresh_context_before_group)

    def wait_for_group_completion(self, group_id: str, timeout_seconds: float = 3600) -> bool:
        return _blocking(self.coordinator.wait_for_group_completion, group_id, timeout_seconds)

    def get_group(self, group_id: str) -> GroupMetadata | None:
        return _blocking(self.coordinator.get_group, group_id)

    def list_groups(self, status: TaskStatus | str | None = None) -> list[GroupMetadata]:
        return _blocking(self.coordinator.list_groups, status)

    # The original documentation's examples call these helpers directly.

    def _extract_relevant_files(self, description: str) -> list[str]:
        return extract_relevant_files(description)

    def _run_test_suite(self) -> bool:
        return _blocking(self.coordinator.run_test_suite)

    def _close_beads_task(self, task_id: str) -> bool:
        return _blocking(self.coordinator.close_task, task_id)
