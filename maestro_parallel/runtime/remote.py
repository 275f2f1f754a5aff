"""A group's attempts on a remote executor (Dask): the coordinator's side of DESIGN §15.

The coordinator owns the executor (:class:`ExecutorSlot`: connected at the first
group that needs it, closed with the coordinator); a group run holds a
:class:`RemoteAttempts`, which is itself an :class:`~maestro_parallel.executors.Executor`:
it ships each attempt from the group's ``base_sha`` and turns what the workers
report into the run's journal and log files as it happens (``task_started``
with the worker as ``host``, log lines appended for ``logs --follow``).  The
verdict is then judged from the log file exactly as for a local attempt.

The unit shipped is a commit, so ``kind = "dask"`` needs worktree isolation:
:func:`resolve_remote_base` decides it in Phase 1 through the isolation
package.  It is the one place that knows where the base comes from; with a
group workspace in the run, its ``base_sha``, ``git_root`` and ``subdir`` give the
same :class:`RemoteBase`, and the fetched branch ``maestro/<group>/<task>`` is what
the merge queue merges.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ..config import ExecutorConfig, IsolationConfig
from ..executors.base import (
    AttemptOutcome,
    AttemptSpec,
    AttemptStatus,
    EventKind,
    EventSink,
    Executor,
    ExecutorError,
    ExecutorEvent,
    ForceStop,
    RepoInfo,
    WorkerPath,
)
from ..isolation.errors import IsolationError
from ..isolation.git import run_git
from ..isolation.refs import attempt_branch, task_branch
from ..isolation.workspace import IsolationMode, resolve_base, resolve_mode
from ..state.fs import read_async
from ..state.logfiles import append_bytes, file_size, replace_from
from ..state.safefs import UnsafePathError
from ..state.store import GroupStore
from .sink import EventSink as JournalSink

if TYPE_CHECKING:
    from .launch import LaunchPlan

__all__ = (
    "ExecutorSlot",
    "RemoteAgent",
    "RemoteAttempts",
    "RemoteBase",
    "remote_argv",
    "remote_env",
    "resolve_remote_base",
)

#: ``MAESTRO_*`` variables that name coordinator paths: the worker sets its own (or none).
_COORDINATOR_PATHS = frozenset({"MAESTRO_PROMPT_FILE", "MAESTRO_REPO_ROOT"})


@dataclass(frozen=True)
class RemoteBase:
    """Where a group's remote attempts start: the commit, and the repository its work returns to."""

    base_sha: str
    repo: RepoInfo
    target: str


async def _read_prompt(path: Path) -> str:
    """A task's prompt as Phase 2 wrote it, read through safefs (never a FIFO or a symlink put in its place)."""
    try:
        data = await read_async(path)
    except UnsafePathError as exc:
        raise OSError(errno.EINVAL, str(exc), str(path)) from exc
    if data is None:
        raise FileNotFoundError(errno.ENOENT, "the prompt file is missing", str(path))
    return data.decode("utf-8")


async def resolve_remote_base(repo_root: Path, isolation: IsolationConfig) -> RemoteBase:
    """The base of a Dask group: worktree isolation must be possible, the target's tip is ``base_sha``.

    :raises ExecutorError: isolation is shared (``mode = "shared"``, no git, no commit) or the target is unusable.
    """
    try:
        decision, state = await resolve_mode(repo_root, isolation.mode)
        if decision.mode is not IsolationMode.WORKTREE or state is None:
            raise ExecutorError(f"executor kind 'dask' needs worktree isolation, impossible here: {decision.reason}")
        base = await resolve_base(state, isolation.target)
    except IsolationError as exc:
        raise ExecutorError(f"executor kind 'dask' needs worktree isolation: {exc}") from exc
    return RemoteBase(base.sha, RepoInfo(state.toplevel, state.prefix.rstrip("/")), base.target)


def remote_argv(
    argv: Sequence[str], *, prompt_file: str, repo_root: str, program: str | None = None
) -> tuple[str | WorkerPath, ...]:
    """A locally rendered argv made fit for another machine (pure).

    The coordinator's prompt file and repository root mean nothing on a worker:
    an element holding one becomes a :class:`WorkerPath` (``{prompt_file}`` and
    the agent's checkout there).  ``program`` (the template's bare command name)
    replaces the executable resolved here, so the worker finds its own.
    """
    shipped: list[str | WorkerPath] = []
    for index, element in enumerate(argv):
        if index == 0 and program:
            shipped.append(program)
            continue
        for local, name in ((prompt_file, "prompt_file"), (repo_root, "worktree")):
            at = _path_at(element, local)
            if at >= 0:
                shipped.append(WorkerPath(name, element[:at], element[at + len(local) :]))
                break
        else:
            shipped.append(element)
    return tuple(shipped)


def _path_at(text: str, path: str) -> int:
    """Where ``path`` occurs in ``text`` as a whole path (not ``/repo`` inside ``/repository``); -1: nowhere."""
    start = text.find(path) if path else -1
    while start >= 0:
        end = start + len(path)
        if end == len(text) or not (text[end].isalnum() or text[end] in "-_."):
            return start
        start = text.find(path, start + 1)
    return -1


def remote_env(env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """What an attempt adds to a worker's environment: ``[agent].env`` and the ``MAESTRO_*`` variables (pure).

    The rest of the coordinator's environment stays here; the worker's own is used.
    """
    added = {name: env[name] for name in extra if name in env}
    added.update(
        (name, value) for name, value in env.items() if name.startswith("MAESTRO_") and name not in _COORDINATOR_PATHS
    )
    return added


class ExecutorSlot:
    """The coordinator's remote executor: opened by the first group that needs it, closed with the coordinator.

    One per coordinator, so a whole plan shares one connection (or one
    LocalCluster).  ``agents`` sizes a LocalCluster: the agents it must hold.
    """

    def __init__(self, config: ExecutorConfig, *, agents: int | None = None) -> None:
        self.config = config
        self.agents = agents
        self._executor: Executor | None = None
        self._stack: AsyncExitStack | None = None
        self._lock = anyio.Lock()

    async def get(self, agents: int) -> Executor:
        """The executor, connecting it first.

        :raises ExecutorUnavailableError: the scheduler cannot be reached (nothing was launched).
        """
        async with self._lock:
            if self._executor is None:
                from ..executors.dask import DaskExecutor  # distributed is optional: imported when used

                executor = DaskExecutor(self.config.address, workers=self.config.workers, agents=self.agents or agents)
                stack = AsyncExitStack()
                self._executor = await stack.enter_async_context(executor)
                self._stack = stack
            return self._executor

    async def aclose(self) -> None:
        """Disconnect (and stop a LocalCluster started here); shielded, safe to call twice."""
        with anyio.CancelScope(shield=True):
            stack, self._stack, self._executor = self._stack, None, None
            if stack is not None:
                await stack.aclose()


@dataclass(frozen=True)
class RemoteAgent:
    """An agent running on a worker, as the run's tracker poll sees it: something to stop."""

    attempts: RemoteAttempts
    task_id: str

    def request_stop(self) -> None:
        """Stop it on its worker (its grace period applies there); its attempt ends ``stopped``."""
        self.attempts.request_stop(self.task_id)


class RemoteAttempts:
    """A group run's attempts on a remote executor: specs, live events, the log file.

    :param on_started: told once per attempt when its agent starts on a worker.
    """

    def __init__(
        self,
        executor: Executor,
        base: RemoteBase,
        *,
        store: GroupStore,
        sink: JournalSink,
        on_started: Callable[[str], Awaitable[None]],
    ) -> None:
        self.executor = executor
        self.base = base
        self.store = store
        self.sink = sink
        self.on_started = on_started
        self._stops: dict[str, anyio.CancelScope] = {}

    async def spec(self, plan: LaunchPlan, attempt: int, grace: float) -> AttemptSpec:
        """One attempt of ``plan``, made to run on any worker."""
        record, settings = plan.record, plan.settings
        template = settings.command[0] if settings.command else ""
        program = template if template and "/" not in template and "{" not in template else None
        prompt_path = self.store.prompt_path(record.task_id)
        prompt_file = str(prompt_path)
        return AttemptSpec(
            task_id=record.task_id,
            group_id=self.store.group_id,
            title=record.metadata.title,
            argv=remote_argv(plan.argv, prompt_file=prompt_file, repo_root=str(self.base.repo.path), program=program),
            prompt=await _read_prompt(prompt_path),
            base_sha=self.base.base_sha,
            repo=self.base.repo,
            env=remote_env(plan.env, settings.env),
            timeout_seconds=settings.timeout_seconds or None,
            grace_seconds=grace,
            max_log_bytes=settings.max_log_bytes,
            attempt=attempt,
            work_branch=task_branch(self.store.group_id, record.task_id),
        )

    def handle(self, task_id: str) -> RemoteAgent:
        """What the run keeps for a task whose agent runs on a worker: a way to stop it early."""
        return RemoteAgent(self, task_id)

    async def run(self, spec: AttemptSpec, on_event: EventSink) -> AttemptOutcome:
        """Run ``spec`` remotely; its events reach the journal and its log file as they come.

        When the worker's whole log differs from the lines streamed (a cap, a
        stream limit), it replaces them, so the verdict reads what a local run
        would have written.  A stop requested through :meth:`handle` (the tracker
        closed the task) stops the agent and is a ``stopped`` outcome.
        """
        log_path = self.store.log_path(spec.task_id)
        offset = await file_size(log_path) if spec.attempt > 1 else 0
        await replace_from(log_path, offset, b"")
        await self._keep_aside(spec)
        send, receive = anyio.create_memory_object_stream[ExecutorEvent](math.inf)
        host = ""

        def forward(event: ExecutorEvent) -> None:
            nonlocal host
            host = event.host or host
            send.send_nowait(event)
            on_event(event)

        outcome: AttemptOutcome | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._record_events, receive, spec, log_path)
            try:
                with anyio.CancelScope() as scope:
                    self._stops[spec.task_id] = scope
                    outcome = await self.executor.run(spec, forward)
            finally:
                self._stops.pop(spec.task_id, None)
                send.close()  # the recorder writes what is left, then ends
        if outcome is None:  # stopped on request: the executor brought its work home before it returned
            ref = f"refs/heads/{spec.branch}"
            head = await run_git(spec.repo.path, "rev-parse", "-q", "--verify", ref, check=False, timeout=30)
            found = head.stdout.strip() if head.ok else None
            return AttemptOutcome(
                AttemptStatus.STOPPED, host=host, branch=spec.branch if found else None, head_sha=found
            )
        if outcome.log:
            await replace_from(log_path, offset, outcome.log)
        return outcome

    async def _keep_aside(self, spec: AttemptSpec) -> None:
        """Keep an earlier attempt's branch as ``maestro/<group>/_attempts/<task>/<n>``: the new one replaces it."""
        ref = f"refs/heads/{spec.branch}"
        found = await run_git(spec.repo.path, "rev-parse", "-q", "--verify", ref, check=False, timeout=30)
        if not found.ok:
            return
        kept = f"refs/heads/{attempt_branch(spec.group_id, spec.task_id, max(spec.attempt - 1, 1))}"
        # Only when that name is free (the zero id as the old value): an older copy is never overwritten.
        await run_git(spec.repo.path, "update-ref", kept, found.stdout.strip(), "0" * 40, check=False, timeout=30)

    def force_stop(self) -> None:
        """A forced stop (a second signal): agents being stopped on workers lose what is left of their grace."""
        if isinstance(self.executor, ForceStop):
            self.executor.force_stop()

    def request_stop(self, task_id: str) -> None:
        scope = self._stops.get(task_id)
        if scope is not None:
            scope.cancel()

    async def _record_events(
        self, receive: anyio.abc.ObjectReceiveStream[ExecutorEvent], spec: AttemptSpec, log_path: Path
    ) -> None:
        # Shielded: the lines of a stopped attempt still reach its log; it ends when the stream is closed.
        with anyio.CancelScope(shield=True):
            async with receive:
                async for event in receive:
                    if event.kind is EventKind.STARTED:
                        argv0 = spec.argv[0] if isinstance(spec.argv[0], str) else ""
                        await self.sink.emit(
                            "task_started", task_id=spec.task_id, attempt=spec.attempt, host=event.host, argv0=argv0
                        )
                        await self.on_started(spec.task_id)
                    elif event.kind is EventKind.LOG and event.text:
                        await append_bytes(log_path, event.text.encode("utf-8", "replace"))
