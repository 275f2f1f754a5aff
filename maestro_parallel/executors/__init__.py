"""Where agents run: the executor interface, and the Dask executor (``pip install 'maestro-parallel[dask]'``).

``base`` holds the interface and its data; ``dask`` the coordinator side of
Dask; ``_worker`` what runs on a Dask worker (importable there, no coordinator
code).  ``dask`` is imported on demand so that ``distributed`` stays optional.
"""

from .base import (
    AttemptOutcome,
    AttemptSpec,
    AttemptStatus,
    BundleError,
    EventKind,
    EventSink,
    Executor,
    ExecutorError,
    ExecutorEvent,
    ExecutorUnavailableError,
    ForceStop,
    RepoInfo,
    WorkerPath,
    task_branch,
)

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
