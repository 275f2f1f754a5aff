"""One task's attempts: launch the agent, watch it, judge it, and retry a rate-limited run.

Every attempt holds a slot of the run's :class:`~.governor.Governor` for its preset: when one
agent is rate limited, the retries and launches of every agent of that preset wait out one shared
backoff (journaled as a ``backoff`` event), and fewer run at once until the API serves again.
With ``[agent] backoff = "per-task"`` there is no governor and each task waits
:func:`retry_delay` (a pure function) on its own.  A budget that is spent refuses the next
attempt.  :class:`Attempts` does the I/O: it staggers launches, keeps the running agents (so the
tracker poll and a forced stop can reach them), and turns each run into a
:class:`~maestro_parallel.agents.Verdict`.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from ..agents import ResultScanner, Verdict, judge
from ..agents.ratelimit import Outcome
from ..executors.base import AttemptStatus, EventKind, Executor, ExecutorEvent
from ..state.logfiles import append_bytes, file_size, read_tail, scan_log
from ..state.store import GroupStore
from .budget_gate import BudgetGate
from .governor import Governor
from .launch import LaunchPlan
from .local_executor import LocalExecutor, local_spec
from .outcome import StopState
from .process import AgentProcess
from .remote import RemoteAgent, RemoteAttempts
from .sink import EventSink
from .stopping import describe_returncode, kill_process_group

__all__ = ("Attempts", "retry_delay")

#: Retry backoff for rate-limited attempts: base * 2**(n-1), capped, with jitter.
_RETRY_BASE_SECONDS = 2.0
_RETRY_MAX_SECONDS = 60.0


def retry_delay(attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1); ``jitter`` is drawn from 0.5..1.5."""
    delay = min(_RETRY_MAX_SECONDS, _RETRY_BASE_SECONDS * 2.0 ** (attempt - 1))
    return round(delay * jitter, 2)


class Attempts:
    """Runs the attempts of every task of one run and knows which agents are running."""

    def __init__(
        self,
        *,
        repo_root: Path,
        store: GroupStore,
        sink: EventSink,
        stop: StopState,
        on_launched: Callable[[str], Awaitable[None]],
        governor: Governor | None = None,
        budget: BudgetGate | None = None,
    ) -> None:
        self.repo_root = repo_root
        self.store = store
        self.sink = sink
        self.stop = stop
        self.on_launched = on_launched
        self.governor = governor
        self.budget = budget
        #: Where attempts run when not here: set in Phase 1 for ``[executor] kind = "dask"``.
        self.remote: RemoteAttempts | None = None
        self.running: dict[str, AgentProcess | RemoteAgent] = {}  # task id -> its agent while it runs
        self.pgids: dict[str, int] = {}
        self.closed_by_tracker: set[str] = set()
        # One spawn at a time, released as soon as the process exists: launches interleave with
        # the events of the agents already running, so the loop never stalls on N forks in a row.
        self.spawn_gate = anyio.Semaphore(1)
        self._launch_lock = anyio.Lock()
        self._next_launch = 0.0

    def kill_all(self) -> None:
        """SIGKILL every running agent's process group (a forced stop)."""
        for pgid in list(self.pgids.values()):
            kill_process_group(pgid)
        if self.remote is not None:
            self.remote.force_stop()

    def closed_elsewhere(self, task_id: str) -> None:
        """The tracker says ``task_id`` is closed: stop its agent, and count the task completed."""
        agent = self.running.get(task_id)
        if agent is not None:
            self.closed_by_tracker.add(task_id)
            agent.request_stop()

    async def run(self, plan: LaunchPlan) -> tuple[Verdict, int | None]:
        """Attempt ``plan`` until it is not retryable, retries are spent, the budget is, or the run halts."""
        task_id = plan.record.task_id
        preset = plan.settings.preset
        attempt = int((self.sink.meta.result_for(task_id) or {}).get("attempts") or 0)
        retries = plan.settings.retries
        while True:
            attempt += 1
            await self._stagger(plan.settings.launch_stagger_seconds)
            async with self._slot(preset) as admitted:  # after the stagger: a backoff opened meanwhile is waited out
                refusal = self.budget.refusal() if self.budget is not None else None
                if refusal is not None:  # spent while this attempt waited for its slot
                    await self.on_launched(task_id)  # as far as it will get
                    return Verdict(False, refusal, {}), None
                verdict, exit_code = await self.attempt(plan, attempt)
            # Reported before anything awaits: the agents woken by the released slot must already
            # see the backoff this rate limit opens, or they launch straight into it.
            opened = self._report(preset, verdict, admitted)
            await self.on_launched(task_id)  # also when the spawn itself failed
            if self.budget is not None:
                await self.budget.charge(verdict.extra)
            if opened is not None and self.governor is not None:
                limit = self.governor.limit(preset)
                await self.sink.emit(
                    "backoff",
                    task_id=task_id,
                    preset=preset,
                    delay_seconds=round(opened, 2),
                    limit=None if math.isinf(limit) else int(limit),
                    rate_limits=self.governor.rate_limits(preset),
                )
            if not (verdict.retryable and retries > 0 and not self.stop.halted):
                return verdict, exit_code
            retries -= 1
            if self.governor is None:
                delay = retry_delay(attempt, random.uniform(0.5, 1.5))
            else:  # the shared backoff: the next slot() waits it out with every agent of the preset
                delay = round(self.governor.backoff_remaining(preset), 2)
            await self.sink.emit(
                "task_retry", task_id=task_id, attempt=attempt, delay_seconds=delay, reason=verdict.error
            )
            if self.governor is None:
                await anyio.sleep(delay)

    @asynccontextmanager
    async def _slot(self, preset: str) -> AsyncIterator[float | None]:
        """The governor's slot for ``preset`` and when it was admitted (nothing under the per-task backoff)."""
        if self.governor is None:
            yield None
            return
        async with self.governor.slot(preset) as admitted:
            yield admitted

    def _report(self, preset: str, verdict: Verdict, admitted: float | None) -> float | None:
        """Tell the governor how the attempt went; the shared backoff this opened, if any."""
        if self.governor is None:
            return None
        if verdict.completed:
            outcome = Outcome.SUCCESS
        else:
            outcome = Outcome.RATE_LIMITED if verdict.retryable else Outcome.FAILED
        return self.governor.report(preset, outcome, admitted=admitted)

    async def _stagger(self, stagger: float) -> None:
        """Space launches: wait until ``stagger`` seconds after the previous staggered launch."""
        if stagger <= 0:
            return
        async with self._launch_lock:
            now = anyio.current_time()
            if now < self._next_launch:
                await anyio.sleep(self._next_launch - now)
            self._next_launch = max(now, self._next_launch) + stagger

    async def attempt(self, plan: LaunchPlan, attempt: int) -> tuple[Verdict, int | None]:
        """Launch one attempt and judge it."""
        task_id = plan.record.task_id
        settings = plan.settings
        argv, env = plan.argv, plan.env
        log_path = self.store.log_path(task_id)
        offset = await file_size(log_path) if attempt > 1 else 0
        if offset:
            await append_bytes(log_path, f"\n=== maestro-parallel: attempt {attempt} ===\n".encode())
            offset = await file_size(log_path)
        scanner = ResultScanner(settings.result_format)

        async def started(process: AgentProcess) -> None:
            self.running[task_id] = process
            self.pgids[task_id] = process.pgid
            await self.sink.emit(
                "task_started",
                task_id=task_id,
                attempt=attempt,
                pid=process.pid,
                pgid=process.pgid,
                start_time=process.start_time,
                argv0=argv[0],
            )
            await self.on_launched(task_id)

        def on_event(event: ExecutorEvent) -> None:
            # A local agent is known through ``started``; a remote one from its worker's word.
            if event.kind is EventKind.STARTED and self.remote is not None:
                self.running[task_id] = self.remote.handle(task_id)

        grace = self.stop.grace(settings.grace_seconds)  # the subagent's own grace period
        executor: Executor
        if self.remote is not None:
            spec = await self.remote.spec(plan, attempt, grace)
            executor = self.remote
        else:
            spec = local_spec(
                task_id=task_id,
                group_id=self.store.group_id,
                title=plan.record.metadata.title,
                argv=argv,
                env=env,
                repo_root=self.repo_root,
                timeout_seconds=settings.timeout_seconds,
                grace_seconds=grace,
                max_log_bytes=settings.max_log_bytes,
                attempt=attempt,
            )
            executor = LocalExecutor(
                cwd=plan.worktree or self.repo_root,
                log_path=log_path,
                on_start=started,
                observer=scanner.feed if settings.max_log_bytes > 0 else None,
                spawn_gate=self.spawn_gate,
            )
        try:
            outcome = await executor.run(spec, on_event)  # the one place an attempt is dispatched
        finally:
            self.running.pop(task_id, None)
            self.pgids.pop(task_id, None)
        remote = {"host": outcome.host, "branch": outcome.branch, "head_sha": outcome.head_sha} if outcome.host else {}
        if outcome.status in (AttemptStatus.ERROR, AttemptStatus.WORKER_LOST):
            # A lost worker is the machine's failure, not the task's: the retry rules may run it again.
            lost = outcome.status is AttemptStatus.WORKER_LOST
            return Verdict(False, outcome.error, remote, retryable=lost), outcome.returncode
        if task_id in self.closed_by_tracker:
            self.closed_by_tracker.discard(task_id)
            return Verdict(True, None, {"closed": True, "closed_by_agent": True, **remote}), outcome.returncode
        if outcome.status is AttemptStatus.TIMED_OUT:
            error = f"timed out after {settings.timeout_seconds:g}s"
            if settings.result_format == "codex-jsonl":  # say why: Codex retries a dead API without end
                if settings.max_log_bytes <= 0 or self.remote is not None:
                    await scan_log(log_path, offset, scanner)
                scanner.finish()
                if not scanner.codex_turns_completed:
                    error += " (no turn completed)"
            return Verdict(False, error, remote), outcome.returncode
        if outcome.returncode == 0 and settings.result_format == "exit-code":
            return Verdict(True, None, remote), 0  # nothing in the log can change this verdict
        if settings.max_log_bytes <= 0 or self.remote is not None:
            tail = await scan_log(log_path, offset, scanner)
        else:  # the scanner saw the output live; the log's end still shows a rate limit
            tail = await read_tail(log_path, offset)
        scanner.finish()
        verdict = judge(scanner, outcome.returncode, describe=describe_returncode(outcome.returncode), tail=tail)
        verdict.extra.update(remote)
        return verdict, outcome.returncode

