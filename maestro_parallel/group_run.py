"""GroupRun: one execution of one group — its live state, its journal, its agents.

The coordinator creates a GroupRun per execution and awaits :meth:`GroupRun.execute`, which runs
the four phases.  Every change is an event (:mod:`maestro_parallel.events`): applied to the live
metadata, appended to the journal at once, then the snapshot follows, coalesced.  Per-task
failures are data (a result), not exceptions; only cancellation and programming errors propagate,
and the process and file cleanup that must happen runs shielded.
"""

from __future__ import annotations

import math
import os
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

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
from .config import AgentSettings
from .errors import StateError, TrackerError
from .events import SCHEMA_VERSION, apply_event, make_event
from .hooks import command_env, run_refresh, run_tests
from .logfiles import append_bytes, file_size, read_head, read_tail, scan_log
from .markers import is_safe_task_id
from .models import GroupMetadata, GroupPhase, TaskStatus
from .process import (
    describe_returncode,
    group_alive,
    kill_process_group,
    same_start,
    run_command,
    stop_process_group,
    stop_processes_by_environment,
)
from .store import GroupStore, SnapshotWriter
from .subagents import AgentFile, agent_flag, scan_agent_files
from .tasks import TaskRecord

if TYPE_CHECKING:
    from .coordinator import AsyncParallelCoordinator

__all__ = ("GroupRun", "LaunchPlan", "recover_orphans")

#: Prompts written per worker-thread job before the launches.
_PROMPT_BATCH = 64
#: Retry backoff for rate-limited attempts: base * 2**(n-1), capped, with jitter.
_RETRY_BASE_SECONDS = 2.0
_RETRY_MAX_SECONDS = 60.0


@dataclass
class LaunchPlan:
    """What Phase 1 decided for one task that will run."""

    record: TaskRecord
    subagent: str
    settings: AgentSettings
    executable: str | None
    config_key: str
    warnings: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # filled in by GroupRun._prepare_all
    env: dict[str, str] = field(default_factory=dict)
    agent_args: list[str] = field(default_factory=list)  # ["--agent", name] when the subagent is applied
    problem: str | None = None  # why it cannot launch, once prepared
    prepared: anyio.Event = field(default_factory=anyio.Event)


async def recover_orphans(run: GroupRun, events: Sequence[Mapping[str, Any]]) -> list[str]:
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
            if same_start(start_time if isinstance(start_time, int) else None, pgid):
                await stop_process_group(pgid, run.grace)
                note = f"its coordinator died; process group {pgid} was stopped"
        await run.emit("task_finished", task_id=task_id, status="failed", exit_code=None, error="interrupted",
                       extra={"recovery": note})
    if events:
        await _stop_strays(run, "an earlier run")
    return list(open_starts)


async def _stop_strays(run: GroupRun, whose: str) -> None:
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


class GroupRun:
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
        self.running: dict[str, Any] = {}  # task id -> its AgentProcess while it runs
        self.persist_error: str | None = None
        self.launch_lock = anyio.Lock()
        # One spawn at a time, released as soon as the process exists: launches interleave with
        # the events of the agents already running, so the loop never stalls on N forks in a row.
        self.spawn_gate = anyio.Semaphore(1)
        self.closed_by_tracker: set[str] = set()
        self._base_env: dict[str, dict[str, str]] = {}
        self._skill_cache: dict[str, str | None] = {}
        self._executables: dict[tuple[str, str], str | None] = {}
        self._agent_files: dict[str, AgentFile] = {}  # .claude/agents, read in phase 1
        self.next_launch = 0.0
        self.to_launch = 0
        self.launched: set[str] = set()
        self.tracker_warned = False
        self.cancelled_externally = False
        self.context: str | None = None
        self.pgids: dict[str, int] = {}
        self._journal_wake: anyio.Event | None = None  # set while the journal writer task runs

    # -------------------------------------------------------------- events

    async def emit(self, name: str, **fields: Any) -> dict[str, Any]:
        """Apply an event to the live state, journal it, and tell the listeners.

        While the run's journal writer runs, the event is queued and written by
        it at once (batched with whatever else happened meanwhile); otherwise
        it is written before this returns.
        """
        event = make_event(name, **fields)
        apply_event(self.meta, event)
        self.store.queue_event(event)
        if self._journal_wake is not None:
            self._journal_wake.set()
        else:
            await self.flush_journal()
        self.snapshot.mark_dirty()
        self.coordinator._publish(dict(event, group_id=self.group_id))
        return event

    async def flush_journal(self) -> None:
        """Write every queued event (shielded: a write in flight is never abandoned half-way)."""
        with anyio.CancelScope(shield=True):
            try:
                await self.store.flush_events()
            except OSError as exc:
                self._persist_failed(exc)

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
        await self.flush_journal()  # the journal never lags behind the snapshot at a transition
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
                await tg.start(self._start_journal_writer)
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
            self._journal_wake = None  # the writer is gone: emit writes for itself from now on
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await self.flush_journal()
                await self._finish()
                await self.store.close()
        return self.meta

    async def _start_journal_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._journal_wake = anyio.Event()
        task_status.started()
        await anyio.lowlevel.checkpoint()
        while True:
            await self._journal_wake.wait()
            self._journal_wake = anyio.Event()
            await self.flush_journal()

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

    async def _pre_execution(self) -> list[LaunchPlan]:
        self.context = None
        if self.config.refresh.enabled:
            ok, warning, output = await run_refresh(self.config, self.repo_root, self.store.log_path("_refresh"),
                                                   group_id=self.group_id, tasks=[r.metadata for r in self.records])
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
        agent_folders = [self.repo_root / ".claude" / "agents", Path.home() / ".claude" / "agents"]
        available = available_subagents(agent_folders)
        self._agent_files = scan_agent_files(agent_folders)
        plans: list[LaunchPlan] = []
        for record in pending:
            plan = self._plan(record, available)
            for warning in plan.warnings:
                await self.emit("warning", task_id=record.task_id, message=warning)
            open_deps = blockers.get(record.task_id, [])
            if open_deps:  # a task that runs gets its task_prepared with its prompt, in phase 2
                await self.emit("task_prepared", task_id=record.task_id, subagent=plan.subagent, skills_applied=[])
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
                await self.emit("task_prepared", task_id=plan.record.task_id, subagent=plan.subagent, skills_applied=[])
                await self.emit("task_finished", task_id=plan.record.task_id, status="failed", exit_code=None, error=error)
            return []
        return plans

    def _status(self, task_id: str) -> str | None:
        result = self.meta.result_for(task_id)
        return result.get("status") if result else None

    def _plan(self, record: TaskRecord, available: frozenset[str] | None) -> LaunchPlan:
        subagent, warnings = choose_subagent(record.metadata, available, self.config.detection)
        settings = self.config.agent_for(subagent)
        if "command" in self.config.agents.get(subagent, {}):
            config_key = f"[agents.{subagent}].command"
        elif settings.preset == "custom":
            config_key = "[agent].command"
        else:
            config_key = f'[agent].command, preset "{settings.preset}"'
        program = render_argv(settings.command[:1], self._values(record, subagent, prompt="", prompt_file=""))[0]
        key = (subagent, program)
        if key not in self._executables:  # resolved once per subagent, not once per task
            path = settings.env.get("PATH", os.environ.get("PATH"))
            self._executables[key] = resolve_executable(program, repo_root=self.repo_root, path=path)
        agent_args, warning = agent_flag(settings.preset, subagent, self._agent_files)
        warnings += [warning] if warning else []
        plan = LaunchPlan(record, subagent, settings, self._executables[key], config_key, warnings)
        plan.agent_args = agent_args
        return plan

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

    async def _execute(self, plans: list[LaunchPlan]) -> None:
        try:
            claims = await self._tracker_call(self.tracker.claim([p.record.task_id for p in plans]))
        except TrackerError as exc:
            for plan in plans:
                await self.emit("task_finished", task_id=plan.record.task_id, status="failed", exit_code=None,
                                error=f"could not mark in progress: {exc}")
            return
        launch: list[LaunchPlan] = []
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
                    launches.start_soon(self._prepare_all, launch)
                    for plan in launch:
                        launches.start_soon(self._run_task, plan, limiter, launches)
                        await anyio.lowlevel.checkpoint()  # let early launches run while the rest are queued
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
                agent = self.running.get(task_id)
                if agent is not None and status in ("closed", "completed"):
                    self.closed_by_tracker.add(task_id)
                    agent.request_stop()

    async def _stagger(self, stagger: float) -> None:
        """Space launches: wait until ``stagger`` seconds after the previous staggered launch."""
        if stagger <= 0:
            return
        async with self.launch_lock:
            now = anyio.current_time()
            if now < self.next_launch:
                await anyio.sleep(self.next_launch - now)
            self.next_launch = max(now, self.next_launch) + stagger

    async def _run_task(self, plan: LaunchPlan, limiter: anyio.CapacityLimiter, launches: anyio.abc.TaskGroup) -> None:
        task_id = plan.record.task_id
        try:
            async with limiter:
                if self.halted:
                    await self.emit("task_finished", task_id=task_id, status="failed", exit_code=None, error="halted")
                    return
                await plan.prepared.wait()
                if plan.problem is not None or not plan.argv:
                    await self._note_launched(task_id)
                    await self.emit("task_finished", task_id=task_id, status="failed", exit_code=None,
                                    error=plan.problem or "not prepared")
                    return
                argv, env = plan.argv, plan.env
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

    async def _prepare_all(self, plans: list[LaunchPlan]) -> None:
        """Skills, prompt, argv and environment of every task to launch, batch after batch.

        Runs beside the launches: prompts are written in batches (one
        worker-thread job each), and each task launches as soon as its batch is
        written, so the first agents run while later prompts are still being
        written.  A task whose prompt cannot be written, or whose argv cannot be
        passed, is marked with the reason and never launched.
        """
        batch: list[tuple[LaunchPlan, list[tuple[str, str]], list[str], str]] = []
        size = 4
        try:
            for index, plan in enumerate(plans):
                skills, missing = await self._load_skills(plan.record)
                prompt = build_prompt(task=plan.record.metadata, subagent=plan.subagent, group_id=self.group_id,
                                      context=self.context, skills=skills, applied=bool(plan.agent_args))
                batch.append((plan, skills, missing, prompt))
                if len(batch) >= size or index == len(plans) - 1:
                    await self._write_prompts(batch)
                    batch = []
                    size = min(size * 2, _PROMPT_BATCH)  # small first batches: the first agents start at once
        finally:
            for plan in plans:  # whatever happened, no launch waits forever
                plan.prepared.set()

    async def _write_prompts(self, batch: list[tuple[LaunchPlan, list[tuple[str, str]], list[str], str]]) -> None:
        paths = [self.store.prompt_path(plan.record.task_id) for plan, _, _, _ in batch]
        try:
            errors: list[OSError | None] = await self.store.write_prompts(
                [(path, prompt) for path, (_, _, _, prompt) in zip(paths, batch)]
            )
        except OSError as exc:
            errors = [exc] * len(batch)
        for (plan, skills, missing, prompt), path, error in zip(batch, paths, errors):
            task_id = plan.record.task_id
            if error is not None:
                plan.problem = f"could not write the prompt: {error.strerror or error}"
            else:
                await self.emit(
                    "task_prepared",
                    task_id=task_id,
                    subagent=plan.subagent,
                    skills_applied=[name for name, _ in skills],
                    skills_missing=missing,
                    prompt_path=self.store.relative(path),
                )
                for name in missing:
                    await self.emit("warning", task_id=task_id, message=f"skill {name!r} not found; running without it")
                plan.problem = self._finish_plan(plan, prompt, path, [name for name, _ in skills])
            plan.prepared.set()

    def _finish_plan(self, plan: LaunchPlan, prompt: str, prompt_path: Path, skills: list[str]) -> str | None:
        """Fill in the plan's argv and environment; the reason it cannot launch, or None."""
        record, settings = plan.record, plan.settings
        values = self._values(record, plan.subagent, prompt=prompt, prompt_file=str(prompt_path))
        argv = render_argv(settings.command, values) + plan.agent_args
        argv[0] = plan.executable or argv[0]
        size = oversized_argument(argv)
        if size is not None:
            hint = "" if "prompt_file" in placeholders_in(settings.command) else "; pass {prompt_file} instead of {prompt}"
            return f"an argument is {size} bytes, too large for one argv element (max 131071){hint}"
        base = self._base_env.get(plan.subagent)
        if base is None:  # the coordinator's environment is copied once per subagent, not once per task
            base = self._base_env[plan.subagent] = agent_environment(os.environ, settings.env, {})
        plan.argv = argv
        plan.env = {
            **base,
            "MAESTRO_TASK_ID": record.task_id,
            "MAESTRO_GROUP_ID": self.group_id,
            "MAESTRO_SUBAGENT": plan.subagent,
            "MAESTRO_PROMPT_FILE": str(prompt_path),
            "MAESTRO_REPO_ROOT": str(self.repo_root),
            "MAESTRO_SKILLS": ",".join(skills),
        }
        return None

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
            env = command_env(self.repo_root)
            executable = resolve_executable(argv[0], repo_root=self.repo_root, path=env.get("PATH"))
            if executable is None:
                return None
            log = self.store.logs_dir / f"_skill.{task_id}.{name}.log"
            try:
                result = await run_command([executable, *argv[1:]], cwd=self.repo_root, env=env, log_path=log,
                                           timeout=self.config.skills.timeout_seconds, grace=self.grace)
            except OSError:
                return None
            text = await read_head(log, 1024 * 1024)
            return text if result.returncode == 0 and not result.timed_out and text.strip() else None
        if name not in self._skill_cache:  # a SKILL.md is the same for every task: read it once
            path = find_skill_file(name, folders)
            self._skill_cache[name] = None if path is None else strip_front_matter(await read_head(path, 1024 * 1024))
        return self._skill_cache[name]

    async def _attempt(
        self, plan: LaunchPlan, argv: list[str], env: dict[str, str], attempt: int
    ) -> tuple[Verdict, int | None]:
        """Launch one attempt and judge it."""
        task_id = plan.record.task_id
        settings = plan.settings
        log_path = self.store.log_path(task_id)
        offset = await file_size(log_path) if attempt > 1 else 0
        if offset:
            await append_bytes(log_path, f"\n=== maestro-parallel: attempt {attempt} ===\n".encode())
            offset = await file_size(log_path)
        scanner = ResultScanner(settings.result_format)

        async def started(process: Any) -> None:
            self.running[task_id] = process
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
                observer=scanner.feed if settings.max_log_bytes > 0 else None,
                spawn_gate=self.spawn_gate,
            )
        except OSError as exc:
            return Verdict(False, f"cannot start agent {argv[0]}: {exc.strerror or exc}", {}), None
        finally:
            self.running.pop(task_id, None)
            self.pgids.pop(task_id, None)
        if task_id in self.closed_by_tracker:
            self.closed_by_tracker.discard(task_id)
            return Verdict(True, None, {"closed": True, "closed_by_agent": True}), result.returncode
        if result.timed_out:
            error = f"timed out after {settings.timeout_seconds:g}s"
            if settings.result_format == "codex-jsonl":  # say why: Codex retries a dead API without end
                if settings.max_log_bytes <= 0:
                    await scan_log(log_path, offset, scanner)
                scanner.finish()
                if not scanner.codex_turns_completed:
                    error += " (no turn completed)"
            return Verdict(False, error, {}), result.returncode
        if result.returncode == 0 and settings.result_format == "exit-code":
            return Verdict(True, None, {}), 0  # nothing in the log can change this verdict
        if settings.max_log_bytes <= 0:
            tail = await scan_log(log_path, offset, scanner)
        else:  # the scanner saw the output live; the log's end still shows a rate limit
            tail = await read_tail(log_path, offset)
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
        outcome = await run_tests(
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
