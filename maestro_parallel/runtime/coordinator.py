"""AsyncParallelCoordinator: the public async API that runs parallel groups through four phases.

1. pre-execution: refresh context, check dependencies, choose subagents, resolve executables;
2. concurrent execution: claim the ready tasks and launch one agent each, in one task group;
3. coordination: notice every exit as it happens, poll the tracker once per tick for all
   running tasks, enforce per-task and whole-group timeouts;
4. post-execution: verify, run the test suite, close the completed tasks, set the status.

One execution of a group is a :class:`~maestro_parallel.runtime.group_run.GroupRun`;
this module validates the input, takes the group's lock, decides whether to
resume, and offers the readers (``get_group``, ``list_groups``, waiting).
Failures of the work are recorded, never raised.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import aiofiles.os
import anyio

from .._paths import MAESTRO_RELATIVE_PATH
from ..budget import Spending, budget_limits
from ..config import Config, load_config
from ..errors import GroupNotFoundError, StateError, TrackerError, ValidationError
from ..markers import detect_groups, is_safe_task_id, is_valid_group_id
from ..models import GroupMetadata, TaskMetadata, TaskStatus
from ..state.readers import StoredGroup, read_stored_group, read_stored_groups
from ..state.safefs import UnsafePathError
from ..state.store import GroupStore
from ..tasks import TaskRecord, coerce_task
from ..trackers.base import Tracker
from ..trackers.local import LocalTracker
from .governor import Governor
from .group_run import GroupRun
from .hooks import run_refresh, run_tests
from .remote import ExecutorSlot

__all__ = (
    "AsyncParallelCoordinator",
    "EventCallback",
    "find_repo_root",
    "make_tracker",
    "validate_group",
    "wait_for_stored_group",
)

EventCallback = Callable[[dict[str, Any]], None]

_REPO_MARKERS = (".flow", ".beads", ".git")


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder upward from ``start`` (default: cwd) holding ``.flow``, ``.beads`` or ``.git``."""
    origin = Path(start) if start is not None else Path.cwd()
    origin = origin.resolve()
    for folder in (origin, *origin.parents):
        if any((folder / marker).exists() for marker in _REPO_MARKERS):
            return folder
    return origin


async def wait_for_stored_group(
    repo_root: str | os.PathLike[str], group_id: str, timeout_seconds: float = 3600
) -> StoredGroup | None:
    """Wait until a stored group is final, stale or unreadable, or the timeout passes.

    Returns what was seen last; None when there is no such group.  A group left
    ``in_progress`` by a dead coordinator returns at once (its ``stale`` is true).
    """
    if not is_valid_group_id(group_id, allow_sequential=True):
        raise ValidationError(f"invalid group id {group_id!r:.80}")
    seen = await read_stored_group(repo_root, group_id)
    with anyio.move_on_after(max(timeout_seconds, 0)):
        delay = 0.05
        while seen is not None and seen.metadata is not None and not seen.stale:
            if seen.metadata.status.value not in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
                break
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)
            seen = await read_stored_group(repo_root, group_id)
    return seen


def validate_group(group_tasks: Sequence[Any], group_id: object) -> list[TaskRecord]:
    """Check a group before anything is written; raise :class:`ValidationError` when it is invalid."""
    if not is_valid_group_id(group_id, allow_sequential=True):
        raise ValidationError(
            f"invalid group id {group_id!r:.80}: use letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    if isinstance(group_tasks, (str, bytes, Mapping)) or not isinstance(group_tasks, Sequence):
        raise ValidationError(f"group {group_id}: tasks must be a list, got {type(group_tasks).__name__}")
    if not group_tasks:
        raise ValidationError(f"group {group_id}: the task list is empty")
    records: list[TaskRecord] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(group_tasks):
        record = coerce_task(item, index=index, source=f"group {group_id}")
        if record.task_id in seen:
            raise ValidationError(
                f"group {group_id}: duplicate task id {record.task_id!r} "
                f"(tasks #{seen[record.task_id] + 1} and #{index + 1})"
            )
        seen[record.task_id] = index
        records.append(record)
    return records


def make_tracker(config: Config, repo_root: Path) -> Tracker:
    """The tracker ``[tracker].kind`` asks for (``auto``: beads when ``.beads/`` and ``bd`` exist)."""
    kind = config.tracker.kind
    if kind == "auto":
        from shutil import which

        bd = config.tracker.bd_command[0]
        kind = "beads" if (repo_root / ".beads").is_dir() and which(bd) else "local"
    if kind == "beads":
        from ..trackers.beads import BeadsTracker

        return BeadsTracker(repo_root, config=config.tracker)
    return LocalTracker(repo_root)


class AsyncParallelCoordinator:
    """Runs parallel groups of agent tasks.  The async core of maestro_parallel.

    :param repo_root: the repository; default: found upward from the working directory.
    :param config: default: ``<repo_root>/.flow/maestro/config.toml`` (absent: defaults).
    :param tracker: default: chosen by ``[tracker].kind``.
    :param on_event: called with every event of every group this coordinator runs,
        right after it is journaled (a plain function; keep it quick).
    :param agent_limiter: one slot per agent running at once, shared by every group this
        coordinator runs (a whole plan's ``max_agents``); each group's ``max_parallel`` still applies.
    """

    def __init__(
        self,
        repo_root: str | os.PathLike[str] | None = None,
        *,
        config: Config | None = None,
        tracker: Tracker | None = None,
        on_event: EventCallback | None = None,
        agent_limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.agent_limiter = agent_limiter
        self.repo_root = find_repo_root(repo_root) if repo_root is None else Path(repo_root).resolve()
        self.config = config if config is not None else load_config(self.repo_root)
        self.tracker = tracker if tracker is not None else make_tracker(self.config, self.repo_root)
        self._callbacks: list[EventCallback] = [on_event] if on_event is not None else []
        self._runs: dict[str, GroupRun] = {}
        self._interrupted: tuple[str, bool] | None = None
        #: Shared by every group this coordinator runs (all the steps of a ``run`` plan): one
        #: backoff and concurrency limit per preset, one account of what the agents spent.  The
        #: governor has no ceiling of its own: ``max_parallel`` bounds each group (its limiter),
        #: ``[plan] max_agents`` the plan, and the governor only lowers what they allow.
        self.governor = Governor() if self.config.agent.backoff == "shared" else None
        self.spending = Spending(budget_limits(self.config))
        #: ``[executor] kind = "dask"``: the executor every group of this coordinator shares.
        self.executor = ExecutorSlot(self.config.executor) if self.config.executor.kind == "dask" else None
        self._entered = 0

    async def __aenter__(self) -> Self:
        """Keep the executor (a Dask connection, a LocalCluster) open across the groups run inside.

        Outside ``async with``, each ``execute_parallel_group`` opens and closes its own.
        """
        self._entered += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._entered -= 1
        if not self._entered and not self._runs and self.executor is not None:
            await self.executor.aclose()

    # ------------------------------------------------------------------ public API

    def detect_groups(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Group tasks by their ``[P:Group-<id>]`` marker (pure; see :func:`detect_groups`)."""
        return detect_groups(tasks)

    async def refresh_context_before_group(self) -> bool:
        """Run the refresh command (``/flow:summary``) once; True when it succeeded."""
        store_dir = self.repo_root / MAESTRO_RELATIVE_PATH
        await aiofiles.os.makedirs(store_dir, mode=0o700, exist_ok=True)
        ok, _, _ = await run_refresh(self.config, self.repo_root, store_dir / "refresh.log")
        return ok

    async def execute_parallel_group(
        self,
        group_tasks: Sequence[Mapping[str, Any] | TaskMetadata | TaskRecord],
        group_id: str,
        *,
        restart: bool = False,
        halt_on_failure: bool = False,
    ) -> GroupMetadata:
        """Run one group to its end and return its final metadata.

        Raises :class:`ValidationError` (nothing written) for an invalid group and
        :class:`GroupBusyError` when another live coordinator runs it.  Every other
        failure is recorded in the returned metadata.  Executing a group that has
        state resumes it; ``restart`` sets that state aside first.
        """
        records = validate_group(group_tasks, group_id)
        store = GroupStore(self.repo_root, group_id)
        await store.prepare_lock_dir()
        async with store.lock():
            previous, notes = await _load_previous(store, restart)
            if previous is not None and restart:
                await store.set_aside()
                previous = None
            if previous is not None and _already_completed(previous, records):
                await store.sync_snapshot(previous)  # its coordinator may have died before the last snapshot
                return previous
            run = self._group_run(store, records, previous, halt_on_failure=halt_on_failure, notes=notes)
            if self._interrupted is not None:  # a signal came before the run began
                reason, force = self._interrupted
                run.request_stop(reason, force=force)
            self._runs[group_id] = run
            try:
                return await run.execute()
            except BaseExceptionGroup as group:
                sole = sole_exception(group)
                if sole is None:
                    raise
                raise sole from None  # an error in an on_event callback (or a bug) surfaces as itself, unwrapped
            finally:
                del self._runs[group_id]
                if not self._entered and not self._runs and self.executor is not None:
                    await self.executor.aclose()

    async def recover_group(self, group_id: str) -> tuple[GroupMetadata, list[str]]:
        """Finish a group whose coordinator died: stop its surviving agents, mark their tasks interrupted.

        Returns the final metadata and the ids of the tasks recovered (empty when
        the group was already final).  Raises :class:`GroupNotFoundError` when
        nothing is stored and :class:`GroupBusyError` when a live coordinator runs it.
        """
        if not is_valid_group_id(group_id, allow_sequential=True):
            raise ValidationError(f"invalid group id {group_id!r:.80}")
        store = GroupStore(self.repo_root, group_id)
        if not store.exists():
            raise GroupNotFoundError(group_id)
        async with store.lock():
            meta = await store.load()
            if meta is None:
                raise GroupNotFoundError(group_id)
            run = self._group_run(store, [], meta)
            return meta, await run.recover()

    async def wait_for_group_completion(self, group_id: str, timeout_seconds: float = 3600) -> bool:
        """Wait for a group run by anyone to finish; True only when it completed."""
        seen = await self.wait_for_group(group_id, timeout_seconds)
        return seen is not None and seen.metadata is not None and seen.metadata.status is TaskStatus.COMPLETED

    async def wait_for_group(self, group_id: str, timeout_seconds: float = 3600) -> StoredGroup | None:
        """Like :meth:`wait_for_group_completion`, returning what was seen last (see :func:`wait_for_stored_group`)."""
        return await wait_for_stored_group(self.repo_root, group_id, timeout_seconds)

    async def get_group(self, group_id: str) -> GroupMetadata | None:
        """A stored group's metadata, or None.  :class:`StateError` when it is unreadable."""
        if not is_valid_group_id(group_id, allow_sequential=True):
            raise ValidationError(f"invalid group id {group_id!r:.80}")
        seen = await read_stored_group(self.repo_root, group_id)
        if seen is None:
            return None
        if seen.metadata is None:
            raise StateError(seen.error or f"group {group_id} is unreadable")
        return seen.metadata

    async def list_groups(self, status: TaskStatus | str | None = None) -> list[GroupMetadata]:
        """Stored groups, newest ``created_at`` first; unreadable ones are left out."""
        try:
            wanted = TaskStatus(status) if status is not None else None
        except ValueError as exc:
            choices = ", ".join(s.value for s in TaskStatus)
            raise ValidationError(f"invalid status {status!r:.40} (one of: {choices})") from exc
        found = [g.metadata for g in await self.read_groups() if g.metadata is not None]
        return [meta for meta in found if wanted is None or meta.status is wanted]

    async def read_groups(self) -> list[StoredGroup]:
        """Every stored group as a reader sees it (unreadable ones with their error), newest first."""
        return await read_stored_groups(self.repo_root)

    def interrupt(self, reason: str, *, force: bool = False) -> None:
        """Stop every group this coordinator runs, or starts from now on, as on Ctrl-C.

        Agents are stopped (SIGTERM, grace, SIGKILL; ``force``: no grace), tasks end
        ``failed`` with error ``interrupted``, and ``execute_parallel_group`` returns
        the final metadata with ``reason`` in its errors.
        """
        self._interrupted = (reason, force or bool(self._interrupted and self._interrupted[1]))
        for run in list(self._runs.values()):
            run.request_stop(reason, force=force)

    async def run_test_suite(self) -> bool:
        """Run the repository's test suite once (under ``tests.lock``); True when it passed or there is none."""
        maestro = self.repo_root / MAESTRO_RELATIVE_PATH
        await aiofiles.os.makedirs(maestro, mode=0o700, exist_ok=True)
        outcome = await run_tests(self.config, self.repo_root, maestro / "tests.log", maestro / "tests.lock")
        return outcome.status != "failed"

    async def close_task(self, task_id: str, reason: str = "closed by maestro-parallel") -> bool:
        """Close one task in the tracker; True when the tracker accepted it."""
        if not is_safe_task_id(task_id):
            raise ValidationError(f"unsafe task id: {task_id!r:.80}")
        try:
            answer = await self.tracker.close([task_id], reason)
        except TrackerError:
            return False
        return task_id in answer and answer[task_id] is None

    # ------------------------------------------------------------------ internals

    def _group_run(
        self,
        store: GroupStore,
        records: list[TaskRecord],
        previous: GroupMetadata | None,
        *,
        halt_on_failure: bool = False,
        notes: list[str] | None = None,
    ) -> GroupRun:
        return GroupRun(
            config=self.config,
            tracker=self.tracker,
            repo_root=self.repo_root,
            store=store,
            records=records,
            previous=previous,
            publish=self._publish,
            halt_on_failure=halt_on_failure,
            notes=notes,
            agents=self.agent_limiter,
            governor=self.governor,
            spending=self.spending,
            executor=self.executor,
        )

    def _publish(self, event: dict[str, Any]) -> None:
        for callback in self._callbacks:
            callback(event)


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a (nested) exception group holds, or None when it holds several.

    The run's task groups wrap whatever escapes them; the caller of the API
    should see the exception an ``on_event`` callback raised, not a group of one.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
        if len(leaves) > 1:
            return None
    return leaves[0] if leaves else None


async def _load_previous(store: GroupStore, restart: bool) -> tuple[GroupMetadata | None, list[str]]:
    """The stored state, or None; unreadable state is set aside (with a note) rather than fatal.

    A state file that is no regular file (a folder, a FIFO, a symlink) is refused,
    naming it, unless ``restart`` asks for whatever is there to be set aside.
    """
    try:
        return await store.load(), []
    except UnsafePathError:
        if not restart:
            raise
        target = await store.set_aside()
        return None, [f"stored state was not a regular file and was moved to {target}"]
    except StateError as exc:
        target = await store.set_aside()
        return None, [f"stored state was unreadable and was moved to {target}: {exc}"]


def _already_completed(previous: GroupMetadata, records: Sequence[TaskRecord]) -> bool:
    if previous.status is not TaskStatus.COMPLETED:
        return False
    done = {r["task_id"] for r in previous.results if r.get("status") == TaskStatus.COMPLETED}
    return all(record.task_id in done for record in records)
