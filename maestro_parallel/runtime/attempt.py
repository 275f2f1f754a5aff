"""One task's attempts: launch the agent, watch it, judge it, and retry a rate-limited run.

The retry policy is a pure function (:func:`retry_delay`); :class:`Attempts`
does the I/O: it staggers launches, keeps the running agents (so the tracker
poll and a forced stop can reach them), and turns each run into a
:class:`~maestro_parallel.agents.Verdict`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from ..agents import ResultScanner, Verdict, judge
from ..state.logfiles import append_bytes, file_size, read_tail, scan_log
from ..state.store import GroupStore
from .launch import LaunchPlan
from .outcome import StopState
from .process import AgentProcess, run_command
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
    ) -> None:
        self.repo_root = repo_root
        self.store = store
        self.sink = sink
        self.stop = stop
        self.on_launched = on_launched
        self.running: dict[str, AgentProcess] = {}  # task id -> its agent while it runs
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

    def closed_elsewhere(self, task_id: str) -> None:
        """The tracker says ``task_id`` is closed: stop its agent, and count the task completed."""
        agent = self.running.get(task_id)
        if agent is not None:
            self.closed_by_tracker.add(task_id)
            agent.request_stop()

    async def run(self, plan: LaunchPlan) -> tuple[Verdict, int | None]:
        """Attempt ``plan`` until it is not retryable, retries are spent or the run halts."""
        task_id = plan.record.task_id
        attempt = int((self.sink.meta.result_for(task_id) or {}).get("attempts") or 0)
        retries = plan.settings.retries
        while True:
            attempt += 1
            await self._stagger(plan.settings.launch_stagger_seconds)
            verdict, exit_code = await self.attempt(plan, attempt)
            await self.on_launched(task_id)  # also when the spawn itself failed
            if not (verdict.retryable and retries > 0 and not self.stop.halted):
                return verdict, exit_code
            retries -= 1
            delay = retry_delay(attempt, random.uniform(0.5, 1.5))
            await self.sink.emit(
                "task_retry", task_id=task_id, attempt=attempt, delay_seconds=delay, reason=verdict.error
            )
            await anyio.sleep(delay)

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

        try:
            result = await run_command(
                argv,
                cwd=plan.worktree or self.repo_root,
                env=env,
                log_path=log_path,
                timeout=settings.timeout_seconds,
                grace=self.stop.grace(settings.grace_seconds),  # the subagent's own grace period
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
            return Verdict(False, f"timed out after {settings.timeout_seconds:g}s", {}), result.returncode
        if result.returncode == 0 and settings.result_format == "exit-code":
            return Verdict(True, None, {}), 0  # nothing in the log can change this verdict
        if settings.max_log_bytes <= 0:
            tail = await scan_log(log_path, offset, scanner)
        else:  # the scanner saw the output live; the log's end still shows a rate limit
            tail = await read_tail(log_path, offset)
        scanner.finish()
        verdict = judge(scanner, result.returncode, describe=describe_returncode(result.returncode), tail=tail)
        return verdict, result.returncode
