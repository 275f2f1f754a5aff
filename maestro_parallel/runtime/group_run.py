"""GroupRun: one execution of one group, the four phases in order.

The coordinator creates a GroupRun per execution and awaits :meth:`GroupRun.execute`.  The run
orchestrates; the parts do the work: :class:`~.sink.EventSink` (every change is an event,
applied, journaled, snapshotted, published), :class:`~.launch.LaunchPreparer` (plans, prompts,
skills, argv), :class:`~.attempt.Attempts` (one attempt and the retry policy), :mod:`.recovery`
(orphans and strays) and :mod:`.outcome` (the stop state and the pure final-status rule).
Per-task failures are data (a result), not exceptions; only cancellation and programming errors
propagate, and the process and file cleanup that must happen runs shielded.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ..agents import available_subagents
from ..agents.subagents import scan_agent_files
from ..budget import Spending, budget_limits
from ..config import Config
from ..errors import StateError, TrackerError
from ..events import SCHEMA_VERSION
from ..isolation import IsolationError
from ..models import GroupMetadata, GroupPhase, TaskStatus
from ..state.store import GroupStore
from ..tasks import TaskRecord
from ..trackers.base import Tracker
from .attempt import Attempts
from .budget_gate import BudgetGate
from .governor import Governor
from .hooks import run_refresh, run_tests
from .launch import LaunchPlan, LaunchPreparer
from .outcome import StopState, final_status
from .recovery import close_out_dead_run, recover_orphans, stop_strays
from .remote import ExecutorSlot
from .sink import EventSink, Publish
from .task_steps import commit_back, connect_remote, not_launched, setup_worktree, wait_for_earlier
from .workspace import GroupWorkspace, metadata_files, phase4_isolated

__all__ = ("GroupRun",)

#: Tasks planned in one turn of the event loop in phase 1 (choosing the subagent and argv of each).
_PLANS_PER_TURN = 64


def _recorded_spending(meta: GroupMetadata) -> float:
    """What a stored group's agents spent: its journaled budget, else the costs of its results."""
    if meta.budget is not None and "spent_usd" in meta.budget:
        return meta.budget["spent_usd"]
    return float(sum(r["cost_usd"] for r in meta.results if isinstance(r.get("cost_usd"), (int, float))))


class GroupRun:
    """One execution of one group: its phases, over an event sink, a launcher and the attempts."""

    def __init__(
        self,
        *,
        config: Config,
        tracker: Tracker,
        repo_root: Path,
        store: GroupStore,
        records: list[TaskRecord],
        previous: GroupMetadata | None,
        publish: Publish,
        halt_on_failure: bool = False,
        notes: list[str] | None = None,
        agents: anyio.CapacityLimiter | None = None,
        governor: Governor | None = None,
        spending: Spending | None = None,
        executor: ExecutorSlot | None = None,
    ) -> None:
        self.config = config
        self.agents = agents  # shared with the other groups of a plan: agents running at once across all of them
        self.executor = executor
        self.tracker = tracker
        self.repo_root = repo_root
        self.store = store
        self.records = records
        self.group_id = store.group_id
        self.meta = previous if previous is not None else GroupMetadata(group_id=self.group_id)
        self.halt_on_failure = halt_on_failure
        self.notes = notes or []
        self.stop = StopState()
        self.sink = EventSink(store, self.meta, publish)
        self.emit = self.sink.emit
        self.launcher = LaunchPreparer(
            config=config, repo_root=repo_root, store=store, sink=self.sink, grace=lambda: self.grace
        )
        if governor is None and config.agent.backoff == "shared":
            governor = Governor(config.agent.max_parallel)
        spending = spending if spending is not None else Spending(budget_limits(config))
        if self.group_id not in spending.by_group:  # a resumed group already spent what it recorded
            spending.charge(self.group_id, _recorded_spending(self.meta))
        self.budget = BudgetGate(spending, self.group_id, self.sink)
        self.attempts = Attempts(
            repo_root=repo_root,
            store=store,
            sink=self.sink,
            stop=self.stop,
            on_launched=self.note_launched,
            governor=governor if config.agent.backoff == "shared" else None,
            budget=self.budget,
        )
        self.work_scope: anyio.CancelScope | None = None
        self.group_deadline: float | None = None
        self.to_launch = 0
        self.launched: set[str] = set()
        self.tracker_warned = False
        self.context: str | None = None
        self.workspace: GroupWorkspace | None = None  # worktree isolation (Phase 1); None: shared
        self.landing_error: str | None = None
        self.waits: dict[str, tuple[str, ...]] = {}  # conflicts = "serialize": the earlier tasks each one waits for
        self.finished: dict[str, anyio.Event] = {}  # set when a launched task has finished

    def request_stop(self, reason: str, *, force: bool = False) -> None:
        """Stop the run (a signal, ``cancel``); ``force`` kills the agents without a grace period."""
        self.stop.request(reason, force=force)
        if force:
            self.attempts.kill_all()
        if self.work_scope is not None:
            self.work_scope.cancel()

    def cancel_reason(self) -> str:
        past = self.group_deadline is not None and anyio.current_time() >= self.group_deadline
        return self.stop.task_error(past_group_deadline=past, group_timeout=self.config.agent.group_timeout_seconds)

    @property
    def grace(self) -> float:
        return self.stop.grace(self.config.agent.grace_seconds)

    # -------------------------------------------------------------- the run

    async def execute(self) -> GroupMetadata:
        try:
            await self.store.prepare()
        except OSError as exc:
            raise StateError(
                f"cannot create the group's folders under {self.store.dir}: {exc.strerror or exc}"
            ) from exc
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.sink.run_snapshot_writer)
                await tg.start(self.sink.run_journal_writer)
                with anyio.CancelScope() as self.work_scope:
                    if self.stop.reason is not None:  # a stop was requested before the run began
                        self.work_scope.cancel()
                    await self._phases()
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            self.stop.cancelled = True
            raise
        finally:
            self.sink.stop_journal_writer()
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                await self.sink.flush_journal()
                await self._finish()
                await self.store.close()
        return self.meta

    async def recover(self) -> list[str]:
        """Close out a run whose coordinator died (see :meth:`AsyncParallelCoordinator.recover_group`)."""
        return await close_out_dead_run(self.meta, self.store, self.sink, repo_root=self.repo_root, grace=self.grace)

    async def _phases(self) -> None:
        # The group timeout bounds everything after the lock is taken: refresh, agents, tests.
        timeout = self.config.agent.group_timeout_seconds
        self.group_deadline = anyio.current_time() + timeout if timeout > 0 else None
        events, _ = await self.store.read_events()
        await recover_orphans(self.sink, events, repo_root=self.repo_root, grace=self.grace)
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
        await self.budget.announce()
        await self.sink.flush()
        plans = await self._pre_execution()
        if plans:
            await self.sink.phase(GroupPhase.CONCURRENT_EXECUTION)
            await self._execute(plans)
        await self.sink.phase(GroupPhase.POST_EXECUTION)
        await self._post_execution()
        if self.group_deadline is not None and anyio.current_time() >= self.group_deadline:
            await self.emit("group_error", message=f"group timed out after {timeout:g}s")

    # -------------------------------------------------------------- phase 1

    async def _pre_execution(self) -> list[LaunchPlan]:
        self.context = None
        if self.config.refresh.enabled:
            ok, warning, output = await run_refresh(
                self.config,
                self.repo_root,
                self.store.log_path("_refresh"),
                self.group_id,
                tasks=[r.metadata for r in self.records],
                deadline=self.group_deadline,
            )
            await self.emit(
                "refresh_finished", ok=ok, error=warning, log_path=self.store.relative(self.store.log_path("_refresh"))
            )
            if warning:
                await self.emit("warning", task_id=None, message=warning)
            self.context = output if ok else None

        try:
            self.workspace = await GroupWorkspace.open(self.config.isolation, self.repo_root, self.group_id, self.emit)
        except IsolationError as exc:
            await self.emit("group_error", message=f"isolation: {exc}")
            for record in self.records:
                if not record.done and self._status(record.task_id) != TaskStatus.COMPLETED.value:
                    await self.emit(
                        "task_finished", task_id=record.task_id, status=TaskStatus.FAILED.value, exit_code=None,
                        error=f"not launched: {exc}",
                    )  # fmt: skip
            return []
        self.launcher.worktree_for = self.workspace.cwd_for if self.workspace is not None else None
        for record in self.records:
            if record.done and self._status(record.task_id) != TaskStatus.COMPLETED.value:
                await self.emit(
                    "task_finished",
                    task_id=record.task_id,
                    status=TaskStatus.COMPLETED.value,
                    exit_code=None,
                    error=None,
                    extra={"closed": True, "already_closed": True},
                )
        pending = [r for r in self.records if self._status(r.task_id) != TaskStatus.COMPLETED.value]
        try:
            blockers = await self._tracker_call(self.tracker.find_blockers(pending))
        except TrackerError as exc:
            for record in pending:
                await self.emit(
                    "task_finished",
                    task_id=record.task_id,
                    status=TaskStatus.FAILED.value,
                    exit_code=None,
                    error=f"dependency check failed: {exc}",
                )
            return []
        agent_folders = [self.repo_root / ".claude" / "agents", Path.home() / ".claude" / "agents"]
        available = available_subagents(agent_folders)
        self.launcher.agent_files = scan_agent_files(agent_folders)
        plans: list[LaunchPlan] = []
        for index, record in enumerate(pending, 1):
            if index % _PLANS_PER_TURN == 0:  # a thousand plans are ~0.15 s: let the loop breathe between slices
                await anyio.lowlevel.checkpoint()
            plan = self.launcher.plan(record, available)
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
        if self.workspace is not None and plans:
            self.waits = await self.workspace.predict(
                [p.record.metadata for p in plans], {p.record.task_id: metadata_files(p.record.raw) for p in plans}
            )
        if plans and self.executor is not None:
            problem = await connect_remote(self, self.executor, len(plans))
            if problem is not None:
                await self.emit("group_error", message=problem)  # said once, for the group
                await not_launched(self, plans)
                return []
        # An agent on a worker is found by the worker's PATH: only a local agent must exist here.
        missing = [p for p in plans if p.executable is None] if self.attempts.remote is None else []
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
                await self.emit(
                    "task_finished",
                    task_id=plan.record.task_id,
                    status=TaskStatus.FAILED.value,
                    exit_code=None,
                    error=error,
                )
            return []
        return plans

    def _status(self, task_id: str) -> str | None:
        result = self.meta.result_for(task_id)
        return result.get("status") if result else None

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
                await self.emit(
                    "task_finished",
                    task_id=plan.record.task_id,
                    status=TaskStatus.FAILED.value,
                    exit_code=None,
                    error=f"could not mark in progress: {exc}",
                )
            return
        launch: list[LaunchPlan] = []
        for plan in plans:
            task_id = plan.record.task_id
            if task_id not in claims:
                await self.emit(
                    "task_finished",
                    task_id=task_id,
                    status=TaskStatus.FAILED.value,
                    exit_code=None,
                    error=f"the {self.tracker.name} tracker did not confirm the claim",
                )
            elif claims[task_id] is not None:
                await self.emit("task_blocked", task_id=task_id, blockers=[], error=f"claim refused: {claims[task_id]}")
            else:
                launch.append(plan)
        self.finished = {p.record.task_id: anyio.Event() for p in launch}
        self.waits = {t: tuple(e for e in earlier if e in self.finished) for t, earlier in self.waits.items()}
        # A serialized task's worktree waits for the tip it builds on; a remote task needs none here.
        if self.workspace is not None and launch and self.attempts.remote is None:
            made = await self.workspace.prepare_tasks(
                [p.record.task_id for p in launch if not self.waits.get(p.record.task_id)]
            )
            for plan in list(launch):
                problem = made.get(plan.record.task_id)
                if isinstance(problem, IsolationError):
                    launch.remove(plan)
                    self.finished.pop(plan.record.task_id).set()
                    await self.emit(
                        "task_finished", task_id=plan.record.task_id, status=TaskStatus.FAILED.value,
                        exit_code=None, error=f"worktree: {problem}",
                    )  # fmt: skip
        if not launch:
            return
        self.to_launch = len(launch)
        agent = self.config.agent
        limiter = anyio.CapacityLimiter(agent.max_parallel if agent.max_parallel > 0 else len(launch))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._poll)
            with anyio.CancelScope(deadline=self.group_deadline or math.inf):
                async with anyio.create_task_group() as launches:
                    launches.start_soon(self.launcher.prepare_all, launch, self.context)
                    for plan in launch:
                        launches.start_soon(self._run_task, plan, limiter, launches)
                        await anyio.lowlevel.checkpoint()  # let early launches run while the rest are queued
            tg.cancel_scope.cancel()

    async def note_launched(self, task_id: str) -> None:
        """Count a task as launched; the last launch moves the group into coordination."""
        if task_id in self.launched:
            return
        self.launched.add(task_id)
        if len(self.launched) == self.to_launch:
            await self.sink.phase(GroupPhase.COORDINATION)

    async def _poll(self) -> None:
        """Ask the tracker about every running task once per tick (one call for all of them)."""
        interval = self.config.tracker.poll_interval_seconds
        while True:
            await anyio.sleep(interval)
            ids = sorted(self.attempts.running)
            if not ids:
                continue
            try:
                statuses = await self._tracker_call(self.tracker.fetch_statuses(ids))
            except TrackerError as exc:
                if not self.tracker_warned:
                    self.tracker_warned = True
                    await self.emit(
                        "warning",
                        task_id=None,
                        message=f"tracker poll failed (completion still follows process exits): {exc}",
                    )
                continue
            for task_id, status in statuses.items():
                if status in ("closed", "completed"):
                    self.attempts.closed_elsewhere(task_id)

    async def _fail_unlaunched(self, task_id: str, error: str) -> None:
        """A task that will not launch: counted as launched (for the phase change), then failed."""
        await self.note_launched(task_id)
        await self.emit("task_finished", task_id=task_id, status=TaskStatus.FAILED.value, exit_code=None, error=error)

    async def _run_task(self, plan: LaunchPlan, limiter: anyio.CapacityLimiter, launches: anyio.abc.TaskGroup) -> None:
        task_id = plan.record.task_id
        try:
            serial_error = await wait_for_earlier(self, plan)
            if serial_error is not None:
                await self._fail_unlaunched(task_id, serial_error)
                return
            async with limiter, (self.agents if self.agents is not None else nullcontext()):
                if self.stop.halted:
                    await self.emit(
                        "task_finished", task_id=task_id, status=TaskStatus.FAILED.value, exit_code=None, error="halted"
                    )
                    return
                await plan.prepared.wait()
                refusal = self.budget.refusal()
                if refusal is not None:  # a cap was reached: nothing new launches
                    await self._fail_unlaunched(task_id, refusal)
                    return
                if plan.problem is not None or not plan.argv:
                    await self._fail_unlaunched(task_id, plan.problem or "not prepared")
                    return
                setup_error = await setup_worktree(self, plan)
                if setup_error is not None:
                    await self._fail_unlaunched(task_id, setup_error)
                    return
                verdict, exit_code = await self.attempts.run(plan)
                completed, error = verdict.completed, verdict.error
                commit_error = await commit_back(self, plan, verdict.extra)
                if commit_error is not None:
                    completed, error = False, commit_error if completed else f"{error}; {commit_error}"
                await self.emit(
                    "task_finished",
                    task_id=task_id,
                    status=(TaskStatus.COMPLETED if completed else TaskStatus.FAILED).value,
                    exit_code=exit_code,
                    error=error,
                    extra=verdict.extra,
                )
                if not verdict.completed and self.halt_on_failure and not self.stop.halted:
                    self.stop.halted = True
                    launches.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if self._status(task_id) == TaskStatus.IN_PROGRESS:  # what it wrote so far is kept on its branch
                    with anyio.move_on_after(30):
                        await commit_back(self, plan)
                if self._status(task_id) not in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                    await self.emit(
                        "task_finished",
                        task_id=task_id,
                        status=TaskStatus.FAILED.value,
                        exit_code=None,
                        error=self.cancel_reason(),
                    )
            raise
        finally:
            self.finished[task_id].set()

    # -------------------------------------------------------------- phase 4

    async def _post_execution(self) -> None:
        for result in self.meta.results:
            if result.get("status") in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
                await self.emit(
                    "task_finished",
                    task_id=result["task_id"],
                    status=TaskStatus.FAILED.value,
                    exit_code=None,
                    error=result.get("error") or "did not finish",
                )
        if self.workspace is not None:
            titles = {r.task_id: r.metadata.title for r in self.records}
            self.landing_error = await phase4_isolated(
                self.workspace, meta=self.meta, emit=self.emit, config=self.config, store=self.store,
                close=self._close, titles=titles,
            )  # fmt: skip
            return
        statuses = [r.get("status") for r in self.meta.results]
        to_close = [
            r["task_id"] for r in self.meta.results if r.get("status") == TaskStatus.COMPLETED and not r.get("closed")
        ]
        if TaskStatus.FAILED in statuses or self.meta.errors:
            if to_close:
                await self.emit(
                    "tests_finished",
                    status="skipped",
                    exit_code=None,
                    command=None,
                    error="not run: a task failed",
                    log_path=None,
                )
            return
        if not to_close:
            return
        outcome = await run_tests(
            self.config,
            self.repo_root,
            self.store.log_path("_tests"),
            self.store.tests_lock_path,
            self.group_id,
            deadline=self.group_deadline,
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
        await self._close(to_close, reason)

    async def _close(self, to_close: list[str], reason: str) -> None:
        if not to_close:
            return
        try:
            answer = await self._tracker_call(self.tracker.close(to_close, reason))
        except TrackerError as exc:
            answer = {task_id: str(exc) for task_id in to_close}
        for task_id in to_close:
            error = (
                answer.get(task_id, "the tracker did not confirm the close")
                if task_id in answer
                else "the tracker did not confirm the close"
            )
            await self.emit("task_closed", task_id=task_id, ok=error is None, error=error)

    async def _finish(self) -> None:
        """Final state, whatever happened: stopped tasks failed, the status set, the snapshot written."""
        # A daemon escaped by setsid: nothing of an agent's tree outlives its run.
        await stop_strays(self.sink, "this run", repo_root=self.repo_root, grace=self.grace)
        for result in self.meta.results:
            if result.get("status") in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
                await self.emit(
                    "task_finished",
                    task_id=result["task_id"],
                    status=TaskStatus.FAILED.value,
                    exit_code=None,
                    error="interrupted",
                )
        stopped = self.stop.group_error()
        if stopped:
            await self.emit("group_error", message=stopped)
        if self.sink.persist_error:
            await self.emit("group_error", message=self.sink.persist_error)
        status = final_status(self.meta.results, self.meta.errors, landing_blocked=self.landing_error)
        await self.emit("group_finished", status=status.value)
        await self.sink.flush()
