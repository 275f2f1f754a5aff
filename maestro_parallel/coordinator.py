"""AsyncParallelCoordinator: runs one parallel group through its four phases.

1. pre-execution: refresh context, check dependencies, choose subagents, resolve executables;
2. concurrent execution: claim the ready tasks and launch one agent each, in one task group;
3. coordination: notice every exit as it happens, poll the tracker once per tick for all
   running tasks, enforce per-task and whole-group timeouts;
4. post-execution: verify, run the test suite, close the completed tasks, set the status.

Every change is an event (:mod:`maestro_parallel.events`), applied to the live
metadata and appended to the journal at once; the snapshot follows, coalesced.
Failures of the work are recorded, never raised; cleanup of processes and
files runs shielded, so no agent outlives its coordinator.
"""

from __future__ import annotations

import math
import os
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import anyio

from .agents import (
    ResultScanner,
    Verdict,
    agent_environment,
    available_subagents,
    build_prompt,
    choose_subagent,
    find_skill_file,
    judge,
    oversized_argument,
    placeholders_in,
    render_argv,
    resolve_executable,
    strip_front_matter,
)
from .config import AgentSettings, Config, load_config
from .errors import ConfigError, GroupNotFoundError, StateError, TrackerError, ValidationError
from .events import SCHEMA_VERSION, apply_event, make_event
from .markers import detect_groups, is_safe_task_id, is_valid_group_id
from .models import GroupMetadata, GroupPhase, TaskMetadata, TaskStatus
from .process import (
    describe_returncode,
    group_alive,
    kill_process_group,
    process_start_time,
    run_command,
    stop_process_group,
    stop_processes_by_environment,
)
from .store import GroupStore, SnapshotWriter, StoredGroup, read_stored_group, read_stored_groups
from .tasks import TaskRecord, coerce_task
from .testsuite import detect_test_command
from .trackers.base import Tracker
from .trackers.local import LocalTracker

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
#: Retry backoff for rate-limited attempts: base * 2**(n-1), capped, with jitter.
_RETRY_BASE_SECONDS = 2.0
_RETRY_MAX_SECONDS = 60.0
#: How much of the end of a log is read to judge a run.
_TAIL_BYTES = 8 * 1024 * 1024
_SCAN_CHUNK = 1024 * 1024


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
            if seen.metadata.status.value not in ("pending", "in_progress"):
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
                f"group {group_id}: duplicate task id {record.task_id!r} (tasks #{seen[record.task_id] + 1} and #{index + 1})"
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
        from .trackers.beads import BeadsTracker

        return BeadsTracker(repo_root, config=config.tracker)
    return LocalTracker(repo_root)


@dataclass
class _Plan:
    """What Phase 1 decided for one task that will run."""

    record: TaskRecord
    subagent: str
    settings: AgentSettings
    executable: str | None
    config_key: str
    warnings: list[str] = field(default_factory=list)


class AsyncParallelCoordinator:
    """Runs parallel groups of agent tasks.  The async core of maestro_parallel.

    :param repo_root: the repository; default: found upward from the working directory.
    :param config: default: ``<repo_root>/.flow/maestro/config.toml`` (absent: defaults).
    :param tracker: default: chosen by ``[tracker].kind``.
    :param on_event: called with every event of every group this coordinator runs,
        right after it is journaled (a plain function; keep it quick).
    """

    def __init__(
        self,
        repo_root: str | os.PathLike[str] | None = None,
        *,
        config: Config | None = None,
        tracker: Tracker | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.repo_root = find_repo_root(repo_root) if repo_root is None else Path(repo_root).resolve()
        self.config = config if config is not None else load_config(self.repo_root)
        self.tracker = tracker if tracker is not None else make_tracker(self.config, self.repo_root)
        self._callbacks: list[EventCallback] = [on_event] if on_event is not None else []
        self._runs: dict[str, _GroupRun] = {}
        self._interrupted: tuple[str, bool] | None = None

    # ------------------------------------------------------------------ public API

    def detect_groups(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """Group tasks by their ``[P:Group-<id>]`` marker (pure; see :func:`detect_groups`)."""
        return detect_groups(tasks)

    def add_event_callback(self, callback: EventCallback) -> None:
        """Also call ``callback`` with every event from now on."""
        self._callbacks.append(callback)

    async def refresh_context_before_group(self) -> bool:
        """Run the refresh command (``/flow:summary``) once; True when it succeeded."""
        store_dir = self.repo_root / ".flow" / "maestro"
        await aiofiles.os.makedirs(store_dir, mode=0o700, exist_ok=True)
        ok, _, _ = await _run_refresh(self.config, self.repo_root, store_dir / "refresh.log")
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
            previous, notes = await _load_previous(store)
            if previous is not None and restart:
                await store.set_aside()
                previous = None
            if previous is not None and _already_completed(previous, records):
                await store.sync_snapshot(previous)  # its coordinator may have died before the last snapshot
                return previous
            run = _GroupRun(self, store, records, previous, halt_on_failure=halt_on_failure, notes=notes)
            self._runs[group_id] = run
            try:
                return await run.execute()
            finally:
                del self._runs[group_id]

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
            run = _GroupRun(self, store, [], meta, halt_on_failure=False, notes=[])
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
        except ValueError:
            choices = ", ".join(s.value for s in TaskStatus)
            raise ValidationError(f"invalid status {status!r:.40} (one of: {choices})") from None
        groups = [g for g in await self.read_groups() if g.metadata is not None]
        return [g.metadata for g in groups if wanted is None or g.metadata.status is wanted]  # type: ignore[union-attr]

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
        maestro = self.repo_root / ".flow" / "maestro"
        await aiofiles.os.makedirs(maestro, mode=0o700, exist_ok=True)
        outcome = await _run_tests(self.config, self.repo_root, maestro / "tests.log", maestro / "tests.lock")
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

    def _publish(self, event: dict[str, Any]) -> None:
        for callback in self._callbacks:
            callback(event)


async def _load_previous(store: GroupStore) -> tuple[GroupMetadata | None, list[str]]:
    """The stored state, or None; unreadable state is set aside (with a note) rather than fatal."""
    try:
        return await store.load(), []
    except StateError as exc:
        target = await store.set_aside()
        return None, [f"stored state was unreadable and was moved to {target}: {exc}"]


def _already_completed(previous: GroupMetadata, records: Sequence[TaskRecord]) -> bool:
    if previous.status is not TaskStatus.COMPLETED:
        return False
    done = {r["task_id"] for r in previous.results if r.get("status") == "completed"}
    return all(record.task_id in done for record in records)


@dataclass
class _TestsOutcome:
    status: str  # passed | failed | skipped
    exit_code: int | None = None
    command: list[str] | None = None
    error: str | None = None
    warning: str | None = None


async def _read_head(path: Path, limit: int) -> str:
    try:
        async with aiofiles.open(path, "rb") as handle:
            data = await handle.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


async def _last_line(path: Path) -> str:
    try:
        async with aiofiles.open(path, "rb") as handle:
            size = (await aiofiles.os.stat(path)).st_size
            await handle.seek(max(0, size - 65536))
            data = await handle.read()
    except OSError:
        return ""
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _command_env(repo_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CLAUDECODE", None)
    env["MAESTRO_REPO_ROOT"] = str(repo_root)
    return env


async def _run_refresh(config: Config, repo_root: Path, log_path: Path) -> tuple[bool, str | None, str]:
    """Run the refresh command; return (ok, warning, output for the prompts)."""
    command = list(config.refresh.command)
    env = _command_env(repo_root)
    executable = resolve_executable(command[0], repo_root=repo_root, path=env.get("PATH"))
    if executable is None:
        return False, f"context refresh failed: executable not found: {command[0]} ([refresh].command)", ""
    try:
        result = await run_command(
            [executable, *command[1:]],
            cwd=repo_root,
            env=env,
            log_path=log_path,
            timeout=config.refresh.timeout_seconds,
            grace=config.agent.grace_seconds,
        )
    except OSError as exc:
        return False, f"context refresh failed: cannot run {command[0]}: {exc.strerror or exc}", ""
    if result.timed_out:
        return False, f"context refresh failed: timed out after {config.refresh.timeout_seconds:g}s", ""
    if result.returncode != 0:
        last = await _last_line(log_path)
        detail = f": {last}" if last else ""
        return False, f"context refresh failed: {describe_returncode(result.returncode)}{detail}", ""
    return True, None, await _read_head(log_path, config.refresh.max_bytes)


async def _run_tests(
    config: Config, repo_root: Path, log_path: Path, lock_path: Path, group_id: str | None = None
) -> _TestsOutcome:
    """Run the configured or detected test suite under the repository's tests lock.

    The suite sees ``MAESTRO_GROUP_ID`` (when run for a group) and ``MAESTRO_REPO_ROOT``.
    """
    from .store import TestsLock

    if not config.tests.enabled:
        return _TestsOutcome("skipped", warning=None)
    command = list(config.tests.command) if config.tests.command else None
    detected = command is None
    if command is None:
        found = detect_test_command(repo_root)
        if found is None:
            return _TestsOutcome("skipped")
        command = list(found)
    env = _command_env(repo_root)
    executable = resolve_executable(command[0], repo_root=repo_root, path=env.get("PATH"))
    if executable is None:
        if detected:
            return _TestsOutcome("skipped", command=command, warning=f"test runner {command[0]!r} is not installed; tests skipped")
        return _TestsOutcome("failed", command=command, error=f"executable not found: {command[0]} ([tests].command)")
    if group_id is not None:
        env["MAESTRO_GROUP_ID"] = group_id
    try:
        async with TestsLock(lock_path):
            try:
                result = await run_command(
                    [executable, *command[1:]],
                    cwd=repo_root,
                    env=env,
                    log_path=log_path,
                    timeout=config.tests.timeout_seconds,
                    grace=config.agent.grace_seconds,
                )
            except OSError as exc:
                return _TestsOutcome("failed", command=command, error=f"cannot run {command[0]}: {exc.strerror or exc}")
    except StateError as exc:  # tests.lock unusable (a symlink planted in its place)
        return _TestsOutcome("failed", command=command, error=str(exc))
    if result.timed_out:
        return _TestsOutcome("failed", result.returncode, command, f"timed out after {config.tests.timeout_seconds:g}s")
    if result.returncode != 0:
        last = await _last_line(log_path)
        error = describe_returncode(result.returncode) + (f": {last}" if last else "")
        return _TestsOutcome("failed", result.returncode, command, error)
    return _TestsOutcome("passed", 0, command)


async def recover_orphans(run: _GroupRun, events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Stop what a dead coordinator left running and record those tasks as interrupted.

    A task whose ``task_started`` is in the journal without a ``task_finished``
    was running when its coordinator died; its agent lives on in its own
    session.  Its process group is stopped (TERM, grace, KILL) only when its
    leader's start time still matches the journal, so a reused pid is never
    signalled.  Returns the ids of the tasks so recorded.
    """
    open_starts: dict[str, Mapping[str, Any]] = {}
    for event in events:
        name, task_id = event.get("event"), event.get("task_id")
        if not isinstance(task_id, str):
            continue
        if name == "task_started":
            open_starts[task_id] = event
        elif name == "task_finished":
            open_starts.pop(task_id, None)
    for task_id, started in open_starts.items():
        pgid, start_time = started.get("pgid"), started.get("start_time")
        note = "its coordinator died"
        if isinstance(pgid, int) and pgid > 1 and group_alive(pgid):
            leader = process_start_time(pgid)
            if start_time is None or leader is None or leader == start_time:
                await stop_process_group(pgid, run.grace)
                note = f"its coordinator died; process group {pgid} was stopped"
        await run.emit("task_finished", task_id=task_id, status="failed", exit_code=None, error="interrupted",
                       extra={"recovery": note})
    if events:
        await _stop_strays(run, "an earlier run")
    return list(open_starts)


async def _stop_strays(run: _GroupRun, whose: str) -> None:
    """Stop what the journal cannot name but the environment can (see :func:`stop_processes_by_environment`).

    An agent spawned in the instant before its coordinator died (its
    ``task_started`` never written) and a daemon that left its agent's process
    group (``setsid``) both still carry ``MAESTRO_REPO_ROOT`` and
    ``MAESTRO_GROUP_ID``; no other coordinator can run this group meanwhile
    (the caller holds its lock).
    """
    stopped = await stop_processes_by_environment(
        {"MAESTRO_REPO_ROOT": str(run.repo_root), "MAESTRO_GROUP_ID": run.group_id}, run.grace
    )
    if stopped:
        await run.emit("warning", task_id=None, message=(
            f"stopped {len(stopped)} process group(s) left by {whose} outside the agents' own process groups "
            f"(a daemon, or an agent started as its coordinator died): {', '.join(map(str, stopped))}"))


class _GroupRun:
    """One execution of one group: owns its live metadata, journal and processes."""

    def __init__(
        self,
        coordinator: AsyncParallelCoordinator,
        store: GroupStore,
        records: list[TaskRecord],
        previous: GroupMetadata | None,
        *,
        halt_on_failure: bool,
        notes: list[str],
    ) -> None:
        self.coordinator = coordinator
        self.config = coordinator.config
        self.tracker = coordinator.tracker
        self.repo_root = coordinator.repo_root
        self.store = store
        self.records = records
        self.group_id = store.group_id
        self.meta = previous if previous is not None else GroupMetadata(group_id=self.group_id)
        self.snapshot = SnapshotWriter(store, self.meta)
        self.halt_on_failure = halt_on_failure
        self.notes = notes
        self.stop_reason: str | None = None
        self.force_stop = False
        self.halted = False
        self.work_scope: anyio.CancelScope | None = None
        self.group_deadline: float | None = None
        self.running: dict[str, anyio.Event] = {}
        self.persist_error: str | None = None
        self.launch_lock = anyio.Lock()
        self.next_launch = 0.0
        self.to_launch = 0
        self.launched: set[str] = set()
        self.tracker_warned = False
        self.cancelled_externally = False
        self.context: str | None = None
        self.pgids: dict[str, int] = {}

    # -------------------------------------------------------------- events

    async def emit(self, name: str, **fields: Any) -> dict[str, Any]:
        """Apply an event to the live state, journal it, and tell the listeners."""
        event = make_event(name, **fields)
        apply_event(self.meta, event)
        try:
            await self.store.append_event(event)
        except OSError as exc:
            self._persist_failed(exc)
        self.snapshot.mark_dirty()
        self.coordinator._publish(dict(event, group_id=self.group_id))
        return event

    def _persist_failed(self, exc: BaseException) -> None:
        if self.persist_error is None:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.persist_error = f"could not write group state: {detail}"

    async def flush(self) -> None:
        try:
            await self.snapshot.flush()
        except OSError as exc:
            self._persist_failed(exc)

    async def phase(self, phase: GroupPhase) -> None:
        await self.emit("phase_changed", phase=phase.value)
        await self.flush()

    def request_stop(self, reason: str, *, force: bool = False) -> None:
        """Stop the run (a signal, ``cancel``); ``force`` kills the agents without a grace period."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if force:
            self.force_stop = True
            for pgid in list(self.pgids.values()):
                kill_process_group(pgid)
        if self.work_scope is not None:
            self.work_scope.cancel()

    def cancel_reason(self) -> str:
        if self.halted:
            return "halted"
        if self.stop_reason is None and self.group_deadline is not None and anyio.current_time() >= self.group_deadline:
            return f"group timed out after {self.config.agent.group_timeout_seconds:g}s"
        return "interrupted"

    @property
    def grace(self) -> float:
        return 0.0 if self.force_stop else self.config.agent.grace_seconds

    # -------------------------------------------------------------- the run

    async def execute(self) -> GroupMetadata:
        try:
            await self.store.prepare()
        except OSError as exc:
            raise StateError(f"cannot create the group's folders under {self.store.dir}: {exc.strerror or exc}") from None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_snapshots)
                with anyio.CancelScope() as self.work_scope:
                    if self.coordinator._interrupted is not None:  # a signal came before the run began
                        reason, force = self.coordinator._interrupted
                        self.request_stop(reason, force=force)
                    await self._phases()
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            self.cancelled_externally = True
            raise
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await self._finish()
                await self.store.close()
        return self.meta

    async def recover(self) -> list[str]:
        """Close out a run whose coordinator died (see :meth:`AsyncParallelCoordinator.recover_group`)."""
        if self.meta.status not in (TaskStatus.IN_PROGRESS, TaskStatus.PENDING):
            await self.store.sync_snapshot(self.meta)  # its coordinator may have died before the last snapshot
            return []
        try:
            events, _ = await self.store.read_events()
            with anyio.CancelScope(shield=True):
                recovered = await recover_orphans(self, events)
                for result in self.meta.results:
                    if result.get("status") in ("pending", "in_progress"):
                        recovered.append(result["task_id"])
                        await self.emit("task_finished", task_id=result["task_id"], status="failed",
                                        exit_code=None, error="interrupted")
                await self.emit("group_error", message="its coordinator died; the run was recovered")
                await self.emit("group_finished", status=TaskStatus.FAILED.value)
                await self.flush()
        finally:
            await self.store.close()
        return recovered

    async def _write_snapshots(self) -> None:
        try:
            await self.snapshot.run()
        except OSError as exc:
            self._persist_failed(exc)

    async def _phases(self) -> None:
        events, _ = await self.store.read_events()
        await recover_orphans(self, events)
        await self.emit(
            "group_started",
            schema=SCHEMA_VERSION,
            run=1 + sum(1 for e in events if e.get("event") == "group_started"),
            pid=os.getpid(),
            host=socket.gethostname(),
            tasks=[r.task_id for r in self.records],
            created_at=self.meta.created_at,
            resumed=bool(events),
        )
        for note in self.notes:
            await self.emit("warning", task_id=None, message=note)
        await self.flush()
        plans = await self._pre_execution()
        if plans:
            await self.phase(GroupPhase.CONCURRENT_EXECUTION)
            await self._execute(plans)
        await self.phase(GroupPhase.POST_EXECUTION)
        await self._post_execution()

    # -------------------------------------------------------------- phase 1

    async def _pre_execution(self) -> list[_Plan]:
        self.context = None
        if self.config.refresh.enabled:
            ok, warning, output = await _run_refresh(self.config, self.repo_root, self.store.log_path("_refresh"))
            await self.emit(
                "refresh_finished", ok=ok, error=warning, log_path=self.store.relative(self.store.log_path("_refresh"))
            )
            if warning:
                await self.emit("warning", task_id=None, message=warning)
            self.context = output if ok else None

        for record in self.records:
            if record.done and self._status(record.task_id) != TaskStatus.COMPLETED.value:
                await self.emit("task_finished", task_id=record.task_id, status="completed", exit_code=None,
                                error=None, extra={"closed": True, "already_closed": True})
        pending = [r for r in self.records if self._status(r.task_id) != TaskStatus.COMPLETED.value]
        try:
            blockers = await self._tracker_call(self.tracker.find_blockers(pending))
        except TrackerError as exc:
            for record in pending:
                await self.emit("task_finished", task_id=record.task_id, status="failed", exit_code=None,
                                error=f"dependency check failed: {exc}")
            return []
        available = available_subagents(
            [self.repo_root / ".claude" / "agents", Path.home() / ".claude" / "agents"]
        )
        plans: list[_Plan] = []
        for record in pending:
            plan = self._plan(record, available)
            await self.emit("task_prepared", task_id=record.task_id, subagent=plan.subagent, skills_applied=[])
            for warning in plan.warnings:
                await self.emit("warning", task_id=record.task_id, message=warning)
            open_deps = blockers.get(record.task_id, [])
            if open_deps:
                await self.emit(
                    "task_blocked",
                    task_id=record.task_id,
                    blockers=open_deps,
                    error="blocked by open dependencies: " + ", ".join(open_deps),
                )
            else:
                plans.append(plan)
        missing = [p for p in plans if p.executable is None]
        if missing:
            first = missing[0]
            for plan in plans:
                if plan.executable is None:
                    error = f"agent executable not found: {plan.settings.command[0]} ({plan.config_key})"
                else:
                    error = (
                        f"not launched: agent executable not found: {first.settings.command[0]} "
                        f"(needed by {first.record.task_id}, {first.config_key})"
                    )
                await self.emit("task_finished", task_id=plan.record.task_id, status="failed", exit_code=None, error=error)
            return []
        return plans

    def _status(self, task_id: str) -> str | None:
        result = self.meta.result_for(task_id)
        return result.get("status") if result else None

    def _plan(self, record: TaskRecord, available: frozenset[str] | None) -> _Plan:
        subagent, warnings = choose_subagent(record.metadata, available, self.config.detection)
        settings = self.config.agent_for(subagent)
        if "command" in self.config.agents.get(subagent, {}):
            config_key = f"[agents.{subagent}].command"
        elif settings.preset == "custom":
            config_key = "[agent].command"
        else:
            config_key = f'[agent].command, preset "{settings.preset}"'
        env = agent_environment(os.environ, settings.env, {})
        program = render_argv(settings.command[:1], self._values(record, subagent, prompt="", prompt_file=""))[0]
        executable = resolve_executable(program, repo_root=self.repo_root, path=env.get("PATH"))
        return _Plan(record, subagent, settings, executable, config_key, warnings)

    def _values(self, record: TaskRecord, subagent: str, *, prompt: str, prompt_file: str) -> dict[str, str]:
        return {
            "prompt": prompt,
            "prompt_file": prompt_file,
            "task_id": record.task_id,
            "group_id": self.group_id,
            "subagent": subagent,
            "repo_root": str(self.repo_root),
            "title": record.metadata.title,
        }

    async def _tracker_call(self, awaitable: Any) -> Any:
        """Await one tracker method, bounded whatever the tracker does.

        A method may make a few calls of its own (``bd ready`` then ``bd blocked``),
        each bounded by ``[tracker].call_timeout_seconds``; the whole method gets
        three of those plus a margin, so a tracker that hangs still cannot stall
        the group, and a slow but healthy one is not cut off.
        """
        timeout = 3 * self.config.tracker.call_timeout_seconds + 5
        with anyio.move_on_after(timeout) as scope:
            answer = await awaitable
            if not isinstance(answer, Mapping):  # every call answers a mapping; anything else is garbage
                raise TrackerError(f"{self.tracker.name} tracker answered {type(answer).__name__}, not a mapping")
            return answer
        if scope.cancelled_caught:
            raise TrackerError(f"{self.tracker.name} tracker did not answer within {timeout:g}s")
        raise AssertionError("unreachable")  # pragma: no cover

    # -------------------------------------------------------------- phases 2 and 3

    async def _execute(self, plans: list[_Plan]) -> None:
        try:
            claims = await self._tracker_call(self.tracker.claim([p.record.task_id for p in plans]))
        except TrackerError as exc:
            for plan in plans:
                await self.emit("task_finished", task_id=plan.record.task_id, status="failed", exit_code=None,
                                error=f"could not mark in progress: {exc}")
            return
        launch: list[_Plan] = []
        for plan in plans:
            task_id = plan.record.task_id
            if task_id not in claims:
                await self.emit("task_finished", task_id=task_id, status="failed", exit_code=None,
                                error=f"the {self.tracker.name} tracker did not confirm the claim")
            elif claims[task_id] is not None:
                await self.emit("task_blocked", task_id=task_id, blockers=[], error=f"claim refused: {claims[task_id]}")
            else:
                launch.append(plan)
        if not launch:
            return
        self.to_launch = len(launch)
        agent = self.config.agent
        limiter = anyio.CapacityLimiter(agent.max_parallel if agent.max_parallel > 0 else len(launch))
        group_timeout = agent.group_timeout_seconds
        self.group_deadline = anyio.current_time() + group_timeout if group_timeout > 0 else None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._poll)
            with anyio.CancelScope(deadline=self.group_deadline or math.inf):
                async with anyio.create_task_group() as launches:
                    for plan in launch:
                        launches.start_soon(self._run_task, plan, limiter, launches)
            tg.cancel_scope.cancel()
        if self.group_deadline is not None and anyio.current_time() >= self.group_deadline:
            await self.emit("group_error", message=f"group timed out after {group_timeout:g}s")

    async def _note_launched(self, task_id: str) -> None:
        """Count a task as launched; the last launch moves the group into coordination."""
        if task_id in self.launched:
            return
        self.launched.add(task_id)
        if len(self.launched) == self.to_launch:
            await self.phase(GroupPhase.COORDINATION)

    async def _poll(self) -> None:
        """Ask the tracker about every running task once per tick (one call for all of them)."""
        interval = self.config.tracker.poll_interval_seconds
        while True:
            await anyio.sleep(interval)
            ids = sorted(self.running)
            if not ids:
                continue
            try:
                statuses = await self._tracker_call(self.tracker.fetch_statuses(ids))
            except TrackerError as exc:
                if not self.tracker_warned:
                    self.tracker_warned = True
                    await self.emit("warning", task_id=None, message=f"tracker poll failed (completion still follows process exits): {exc}")
                continue
            for task_id, status in statuses.items():
                event = self.running.get(task_id)
                if event is not None and status in ("closed", "completed"):
                    event.set()

    async def _stagger(self, stagger: float) -> None:
        """Space launches: wait until ``stagger`` seconds after the previous staggered launch."""
        if stagger <= 0:
            return
        async with self.launch_lock:
            now = anyio.current_time()
            if now < self.next_launch:
                await anyio.sleep(self.next_launch - now)
            self.next_launch = max(now, self.next_launch) + stagger

    async def _run_task(self, plan: _Plan, limiter: anyio.CapacityLimiter, launches: anyio.abc.TaskGroup) -> None:
        task_id = plan.record.task_id
        try:
            async with limiter:
                if self.halted:
                    await self.emit("task_finished", task_id=task_id, status="failed", exit_code=None, error="halted")
                    return
                prompt_ok, argv, env, error = await self._prepare_launch(plan)
                if not prompt_ok:
                    await self._note_launched(task_id)
                    await self.emit("task_finished", task_id=task_id, status="failed", exit_code=None, error=error)
                    return
                attempt = int((self.meta.result_for(task_id) or {}).get("attempts") or 0)
                retries = plan.settings.retries
                while True:
                    attempt += 1
                    await self._stagger(plan.settings.launch_stagger_seconds)
                    verdict, exit_code = await self._attempt(plan, argv, env, attempt)
                    await self._note_launched(task_id)  # also when the spawn itself failed
                    if verdict.retryable and retries > 0 and not self.halted:
                        retries -= 1
                        delay = min(_RETRY_MAX_SECONDS, _RETRY_BASE_SECONDS * 2 ** (attempt - 1))
                        delay = round(delay * random.uniform(0.5, 1.5), 2)
                        await self.emit("task_retry", task_id=task_id, attempt=attempt, delay_seconds=delay,
                                        reason=verdict.error)
                        await anyio.sleep(delay)
                        continue
                    break
                await self.emit(
                    "task_finished",
                    task_id=task_id,
                    status="completed" if verdict.completed else "failed",
                    exit_code=exit_code,
                    error=verdict.error,
                    extra=verdict.extra,
                )
                if not verdict.completed and self.halt_on_failure and not self.halted:
                    self.halted = True
                    launches.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if self._status(task_id) not in ("completed", "failed"):
                    await self.emit("task_finished", task_id=task_id, status="failed", exit_code=None,
                                    error=self.cancel_reason())
            raise

    async def _prepare_launch(self, plan: _Plan) -> tuple[bool, list[str], dict[str, str], str | None]:
        """Skills, prompt and argv of one task; (ok, argv, env, error)."""
        record, settings = plan.record, plan.settings
        task_id = record.task_id
        skills, missing = await self._load_skills(record)
        prompt = build_prompt(task=record.metadata, subagent=plan.subagent, group_id=self.group_id,
                              context=self.context, skills=skills)
        prompt_path = self.store.prompt_path(task_id)
        try:
            await self.store.write_private(prompt_path, prompt)
        except OSError as exc:
            return False, [], {}, f"could not write the prompt: {exc.strerror or exc}"
        await self.emit(
            "task_prepared",
            task_id=task_id,
            subagent=plan.subagent,
            skills_applied=[name for name, _ in skills],
            skills_missing=missing,
            prompt_path=self.store.relative(prompt_path),
        )
        for name in missing:
            await self.emit("warning", task_id=task_id, message=f"skill {name!r} not found; running without it")
        values = self._values(record, plan.subagent, prompt=prompt, prompt_file=str(prompt_path))
        argv = render_argv(settings.command, values)
        argv[0] = plan.executable or argv[0]
        size = oversized_argument(argv)
        if size is not None:
            hint = "" if "prompt_file" in placeholders_in(settings.command) else "; pass {prompt_file} instead of {prompt}"
            return False, [], {}, f"an argument is {size} bytes, too large for one argv element (max 131071){hint}"
        env = agent_environment(
            os.environ,
            settings.env,
            {
                "MAESTRO_TASK_ID": task_id,
                "MAESTRO_GROUP_ID": self.group_id,
                "MAESTRO_SUBAGENT": plan.subagent,
                "MAESTRO_PROMPT_FILE": str(prompt_path),
                "MAESTRO_REPO_ROOT": str(self.repo_root),
                "MAESTRO_SKILLS": ",".join(name for name, _ in skills),
            },
        )
        return True, argv, env, None

    async def _load_skills(self, record: TaskRecord) -> tuple[list[tuple[str, str]], list[str]]:
        folders = [self.repo_root / ".claude" / "skills", Path.home() / ".claude" / "skills"]
        applied: list[tuple[str, str]] = []
        missing: list[str] = []
        for name in record.metadata.applicable_skills:
            guidance = await self._skill_guidance(name, record.task_id, folders)
            if guidance is None:
                missing.append(name)
            else:
                applied.append((name, guidance))
        return applied, missing

    async def _skill_guidance(self, name: str, task_id: str, folders: list[Path]) -> str | None:
        if not is_safe_task_id(name):
            return None
        command = self.config.skills.command
        if command:
            argv = render_argv(command, {"skill": name, "task_id": task_id, "repo_root": str(self.repo_root)},
                               key="[skills].command")
            env = _command_env(self.repo_root)
            executable = resolve_executable(argv[0], repo_root=self.repo_root, path=env.get("PATH"))
            if executable is None:
                return None
            log = self.store.logs_dir / f"_skill.{task_id}.{name}.log"
            try:
                result = await run_command([executable, *argv[1:]], cwd=self.repo_root, env=env, log_path=log,
                                           timeout=self.config.skills.timeout_seconds, grace=self.grace)
            except OSError:
                return None
            text = await _read_head(log, 1024 * 1024)
            return text if result.returncode == 0 and not result.timed_out and text.strip() else None
        path = find_skill_file(name, folders)
        if path is None:
            return None
        return strip_front_matter(await _read_head(path, 1024 * 1024))

    async def _attempt(
        self, plan: _Plan, argv: list[str], env: dict[str, str], attempt: int
    ) -> tuple[Verdict, int | None]:
        """Launch one attempt and judge it."""
        task_id = plan.record.task_id
        settings = plan.settings
        log_path = self.store.log_path(task_id)
        offset = await _size(log_path) if attempt > 1 else 0
        if offset:
            await _append(log_path, f"\n=== maestro-parallel: attempt {attempt} ===\n".encode())
            offset = await _size(log_path)
        closed = anyio.Event()
        scanner = ResultScanner(settings.result_format)

        async def started(process: Any) -> None:
            self.running[task_id] = closed
            self.pgids[task_id] = process.pgid
            await self.emit("task_started", task_id=task_id, attempt=attempt, pid=process.pid, pgid=process.pgid,
                            start_time=process.start_time, argv0=argv[0])
            await self._note_launched(task_id)

        try:
            result = await run_command(
                argv,
                cwd=self.repo_root,
                env=env,
                log_path=log_path,
                timeout=settings.timeout_seconds,
                grace=0.0 if self.force_stop else settings.grace_seconds,  # the subagent's own grace period
                max_log_bytes=settings.max_log_bytes,
                append_log=offset > 0,
                on_start=started,
                stop_event=closed,
                observer=scanner.feed if settings.max_log_bytes > 0 else None,
            )
        except OSError as exc:
            return Verdict(False, f"cannot start agent {argv[0]}: {exc.strerror or exc}", {}), None
        finally:
            self.running.pop(task_id, None)
            self.pgids.pop(task_id, None)
        if closed.is_set():
            return Verdict(True, None, {"closed": True, "closed_by_agent": True}), result.returncode
        if result.timed_out:
            return Verdict(False, f"timed out after {settings.timeout_seconds:g}s", {}), result.returncode
        if settings.max_log_bytes <= 0:
            tail = await _scan_log(log_path, offset, scanner)
        else:  # the scanner saw the output live; the log's end still shows a rate limit
            tail = await _read_tail(log_path, offset)
        scanner.finish()
        verdict = judge(scanner, result.returncode, describe=describe_returncode(result.returncode), tail=tail)
        return verdict, result.returncode

    # -------------------------------------------------------------- phase 4

    async def _post_execution(self) -> None:
        for result in self.meta.results:
            if result.get("status") in ("pending", "in_progress"):
                await self.emit("task_finished", task_id=result["task_id"], status="failed", exit_code=None,
                                error=result.get("error") or "did not finish")
        statuses = [r.get("status") for r in self.meta.results]
        to_close = [r["task_id"] for r in self.meta.results if r.get("status") == "completed" and not r.get("closed")]
        if "failed" in statuses or self.meta.errors:
            if to_close:
                await self.emit("tests_finished", status="skipped", exit_code=None, command=None,
                                error="not run: a task failed", log_path=None)
            return
        if not to_close:
            return
        outcome = await _run_tests(
            self.config, self.repo_root, self.store.log_path("_tests"), self.store.tests_lock_path, self.group_id
        )
        if outcome.warning:
            await self.emit("warning", task_id=None, message=outcome.warning)
        await self.emit(
            "tests_finished",
            status=outcome.status,
            exit_code=outcome.exit_code,
            command=outcome.command,
            error=outcome.error,
            log_path=self.store.relative(self.store.log_path("_tests")) if outcome.command else None,
        )
        if outcome.status == "failed":
            return
        reason = f"completed by maestro-parallel (group {self.group_id})" + (
            "; tests passed" if outcome.status == "passed" else ""
        )
        try:
            answer = await self._tracker_call(self.tracker.close(to_close, reason))
        except TrackerError as exc:
            answer = {task_id: str(exc) for task_id in to_close}
        for task_id in to_close:
            error = answer.get(task_id, "the tracker did not confirm the close") if task_id in answer else "the tracker did not confirm the close"
            await self.emit("task_closed", task_id=task_id, ok=error is None, error=error)

    async def _finish(self) -> None:
        """Final state, whatever happened: stopped tasks failed, the status set, the snapshot written."""
        await _stop_strays(self, "this run")  # a daemon escaped by setsid: nothing of an agent's tree outlives its run
        for result in self.meta.results:
            if result.get("status") in ("pending", "in_progress"):
                await self.emit("task_finished", task_id=result["task_id"], status="failed", exit_code=None,
                                error="interrupted")
        if self.stop_reason:
            await self.emit("group_error", message=f"run {self.stop_reason}")
        elif self.cancelled_externally:
            await self.emit("group_error", message="run interrupted: cancelled")
        if self.persist_error:
            await self.emit("group_error", message=self.persist_error)
        statuses = {r.get("status") for r in self.meta.results}
        if self.meta.errors or "failed" in statuses or "pending" in statuses or "in_progress" in statuses:
            status = TaskStatus.FAILED
        elif "blocked" in statuses:
            status = TaskStatus.BLOCKED
        else:
            status = TaskStatus.COMPLETED
        await self.emit("group_finished", status=status.value)
        await self.flush()


async def _size(path: Path) -> int:
    try:
        return (await aiofiles.os.stat(path)).st_size
    except OSError:
        return 0


async def _append(path: Path, data: bytes) -> None:
    async with aiofiles.open(path, "ab") as handle:
        await handle.write(data)


async def _read_tail(path: Path, offset: int, size: int = 65536) -> bytes:
    """The last ``size`` bytes of a log after ``offset``."""
    try:
        async with aiofiles.open(path, "rb") as handle:
            end = (await aiofiles.os.stat(path)).st_size
            await handle.seek(max(offset, end - size))
            return await handle.read()
    except OSError:
        return b""


async def _scan_log(path: Path, offset: int, scanner: ResultScanner) -> bytes:
    """Feed the attempt's output (from ``offset``) to ``scanner``; return its last 64 KiB.

    Only Codex's format needs every line; the others are judged from the end.
    """
    try:
        async with aiofiles.open(path, "rb") as handle:
            size = (await aiofiles.os.stat(path)).st_size
            start = offset
            if scanner.result_format != "codex-jsonl" and size - offset > _TAIL_BYTES:
                start = size - _TAIL_BYTES
                await handle.seek(start)
                await handle.readline()  # resume at a line boundary
            else:
                await handle.seek(start)
            tail = b""
            while True:
                chunk = await handle.read(_SCAN_CHUNK)
                if not chunk:
                    break
                scanner.feed(chunk)
                tail = (tail + chunk)[-65536:]
            return tail
    except OSError:
        return b""
