"""The local executor: one attempt run on this machine by :func:`~.process.run_command`.

It implements :class:`~maestro_parallel.executors.Executor` like the Dask
executor, so a group run always dispatches its attempts through an executor.
It lives in ``runtime/``, not ``executors/``: it runs ``run_command``, and an
``executors`` module importing ``runtime`` would close an import cycle
(``runtime`` → ``executors`` → ``runtime``).

An agent run here writes its output straight into its log file (no copy in
memory), and the run hears of its process at once (``on_start``: the journal
records its pid and process group, the tracker poll and a forced stop reach
it), so those two hooks are given to the executor with the attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from ..executors.base import AttemptOutcome, AttemptSpec, AttemptStatus, EventKind, EventSink, ExecutorEvent, RepoInfo
from ..executors.base import WorkerPath as _WorkerPath
from .process import AgentProcess, run_command

__all__ = ("LocalExecutor", "local_spec")


def local_spec(
    *,
    task_id: str,
    group_id: str,
    title: str,
    argv: list[str],
    env: dict[str, str],
    repo_root: Path,
    timeout_seconds: float,
    grace_seconds: float,
    max_log_bytes: int,
    attempt: int,
) -> AttemptSpec:
    """The spec of a local attempt: argv and environment are complete, the agent runs in ``repo_root``."""
    return AttemptSpec(
        task_id=task_id,
        group_id=group_id,
        title=title,
        argv=tuple(argv),
        prompt="",  # already written: the argv names the prompt file
        base_sha="",
        repo=RepoInfo(repo_root),
        env=env,
        timeout_seconds=timeout_seconds,
        grace_seconds=grace_seconds,
        max_log_bytes=max_log_bytes,
        attempt=attempt,
    )


class LocalExecutor:
    """Runs one attempt on this machine, its output going to ``log_path``.

    :param cwd: where the agent runs (the repository root, or its worktree).
    :param log_path: the task's log; a later attempt appends to it.
    :param on_start: called with the process as soon as it exists.
    :param observer: sees every chunk of a capped output (the verdict scanner).
    :param spawn_gate: held around the fork alone, so many launches interleave with other work.
    """

    def __init__(
        self,
        *,
        cwd: Path,
        log_path: Path,
        on_start: Callable[[AgentProcess], Awaitable[None]] | None = None,
        observer: Callable[[bytes], object] | None = None,
        spawn_gate: anyio.Semaphore | None = None,
    ) -> None:
        self.cwd = cwd
        self.log_path = log_path
        self.on_start = on_start
        self.observer = observer
        self.spawn_gate = spawn_gate

    async def run(self, spec: AttemptSpec, on_event: EventSink) -> AttemptOutcome:
        """Run ``spec`` here; a spawn that fails is an ``error`` outcome, never raised."""
        paths = {"prompt_file": spec.env.get("MAESTRO_PROMPT_FILE", ""), "worktree": str(self.cwd)}
        argv = [item.resolve(paths) if isinstance(item, _WorkerPath) else item for item in spec.argv]
        try:
            result = await run_command(
                argv,
                cwd=self.cwd,
                env=spec.env,
                log_path=self.log_path,
                timeout=spec.timeout_seconds or 0,
                grace=spec.grace_seconds,
                max_log_bytes=spec.max_log_bytes,
                append_log=spec.attempt > 1,
                on_start=self.on_start,
                observer=self.observer,
                spawn_gate=self.spawn_gate,
            )
        except OSError as exc:
            outcome = AttemptOutcome(AttemptStatus.ERROR, error=f"cannot start agent {argv[0]}: {exc.strerror or exc}")
        else:
            if result.timed_out:
                status = AttemptStatus.TIMED_OUT
            elif result.stopped:
                status = AttemptStatus.STOPPED
            else:
                status = AttemptStatus.EXITED
            outcome = AttemptOutcome(status, returncode=result.returncode, duration=result.duration)
        on_event(ExecutorEvent(EventKind.FINISHED, spec.task_id, spec.group_id, text=outcome.status))
        return outcome
