"""What an executor is: run one attempt of one task somewhere, and say how it ended.

The coordinator keeps the four phases, the journal, the tracker, the gate and
landing; an executor only runs an agent.  Like an httpx transport it has one
method, :meth:`Executor.run`, so the local runner and the Dask runner are
interchangeable and a fake fits in a test.

The unit shipped is a commit (DESIGN §12, §15): an attempt starts from
``base_sha`` and its work comes back as the branch ``maestro/<group>/<task>``
in the coordinator's repository.

Errors, under :class:`~maestro_parallel.errors.MaestroError`::

    ExecutorError                    an executor cannot do its work
     ├── ExecutorUnavailableError    the scheduler cannot be reached; nothing was launched
     └── BundleError                 a git bundle could not be made or applied
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import MaestroError

__all__ = (
    "AttemptOutcome",
    "AttemptSpec",
    "AttemptStatus",
    "BundleError",
    "EventKind",
    "EventSink",
    "Executor",
    "ExecutorError",
    "ExecutorEvent",
    "ExecutorUnavailableError",
    "ForceStop",
    "RepoInfo",
    "WorkerPath",
    "task_branch",
)


class ExecutorError(MaestroError):
    """Raised when an executor cannot do its work (not when an agent fails: that is an outcome)."""


class ExecutorUnavailableError(ExecutorError):
    """Raised when the executor's scheduler cannot be reached; nothing has been launched."""


class BundleError(ExecutorError):
    """Raised when a git bundle cannot be made, or a returned one cannot be applied.

    :param task_id: the task whose bundle failed, when there is one.
    """

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


def task_branch(group_id: str, task_id: str) -> str:
    """The branch a task's work lives on: ``maestro/<group_id>/<task_id>`` (DESIGN §12)."""
    return f"maestro/{group_id}/{task_id}"


@dataclass(frozen=True)
class WorkerPath:
    """An argv element that only the machine running the agent can fill in.

    ``{prompt_file}`` and ``{worktree}`` name paths on the worker, unknown to the
    coordinator when it builds argv; every other placeholder is substituted
    before shipping, and text is never expanded twice.
    """

    name: str  # "prompt_file" or "worktree"
    prefix: str = ""
    suffix: str = ""

    def resolve(self, paths: Mapping[str, str]) -> str:
        return f"{self.prefix}{paths[self.name]}{self.suffix}"


@dataclass(frozen=True)
class RepoInfo:
    """The coordinator's repository: where the base commit comes from and the work goes back.

    :param path: the top of the git work tree on the coordinator.
    :param subdir: the repository root relative to ``path`` (the agent's cwd in the clone), "" for the top.
    """

    path: Path
    subdir: str = ""


@dataclass(frozen=True)
class AttemptSpec:
    """Everything needed to run one attempt of one task, on any machine.

    ``env`` holds only the additions (``[agent].env``, the ``MAESTRO_*``
    variables): the rest of the environment is the running machine's own, minus
    the variables that must never reach an agent.
    """

    task_id: str
    group_id: str
    title: str
    argv: tuple[str | WorkerPath, ...]
    prompt: str
    base_sha: str
    repo: RepoInfo
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None
    grace_seconds: float = 5.0
    max_log_bytes: int = 0  # 0: no cap
    attempt: int = 1
    work_branch: str = ""  # the branch the work goes to; "": :func:`task_branch` of the ids

    @property
    def branch(self) -> str:
        """``work_branch``, or ``maestro/<group_id>/<task_id>``: a group run passes isolation's name (ids escaped)."""
        return self.work_branch or task_branch(self.group_id, self.task_id)


class AttemptStatus(StrEnum):
    """How an attempt ended, before the verdict rules read its log."""

    EXITED = "exited"  # the agent ended by itself: see ``returncode``
    TIMED_OUT = "timed_out"  # it ran past its timeout and was stopped
    STOPPED = "stopped"  # the coordinator stopped it (cancel, Ctrl-C, group timeout)
    WORKER_LOST = "worker_lost"  # the machine running it died or vanished
    ERROR = "error"  # it could not be run, or its work could not be brought back


@dataclass
class AttemptOutcome:
    """The verdict inputs of one attempt: how it ended, its log, where its work is."""

    status: AttemptStatus
    returncode: int | None = None
    log: bytes = b""
    branch: str | None = None  # set once the work is on the coordinator's branch
    head_sha: str | None = None
    host: str = ""
    error: str | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the agent exited 0 and its work is home (the agent's report is judged elsewhere)."""
        return self.status is AttemptStatus.EXITED and self.returncode == 0 and self.error is None


class EventKind(StrEnum):
    STARTED = "started"
    LOG = "log"
    FINISHED = "finished"


@dataclass(frozen=True)
class ExecutorEvent:
    """Something that happened to an attempt, as it happened, for the journal and live progress."""

    kind: EventKind
    task_id: str
    group_id: str
    host: str = ""
    text: str = ""  # log lines (LOG); the status (FINISHED)


EventSink = Callable[[ExecutorEvent], None]


@runtime_checkable
class ForceStop(Protocol):
    """An executor whose agents a second Ctrl-C must reach: their grace period ends at once."""

    def force_stop(self) -> None: ...


class Executor(Protocol):
    """Runs attempts.  Cancelling the caller's scope stops the agent wherever it runs."""

    async def run(self, spec: AttemptSpec, on_event: EventSink) -> AttemptOutcome:
        """Run ``spec`` to its end; failures of the work are an outcome, never raised."""
        ...
