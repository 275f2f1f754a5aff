"""maestro_parallel: run parallel groups of coding-agent tasks for real.

Layout (one folder a layer; a module imports only its own layer and those below it):

- pure rules and data, no I/O: ``models``, ``events``, ``markers``, ``tasks``, ``plan``, ``config``
  (its key schema in ``_config_schema``), ``errors``;
- ``agents/``: how a task becomes an agent run (subagent choice, prompt, argv, verdicts);
- ``state/``: everything under ``.flow/maestro`` (journal, snapshot, locks, readers, logs);
- ``runtime/``: processes, one group run, the async coordinator and the blocking facade;
- ``trackers/``: where tasks live (``LocalTracker``, ``BeadsTracker``, ``MemoryTracker``);
- ``cli/``: the ``maestro-parallel`` command, the only place that maps errors to exit codes.

docs/ARCHITECTURE.md says where a new subsystem goes.  The public names below are imported on
first use, so that ``import maestro_parallel`` (and the command line's start-up, during which a
Ctrl-C must not print a traceback) stays quick.
"""

from __future__ import annotations

import importlib

from ._version import __version__ as __version__

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing would slow every start-up

__all__ = (
    "AsyncParallelCoordinator",
    "Config",
    "GroupMetadata",
    "GroupPhase",
    "MaestroError",
    "ParallelCoordinator",
    "TaskMetadata",
    "TaskStatus",
    "detect_groups",
    "detect_subagent",
    "extract_relevant_files",
    "load_config",
)

_WHERE = {
    "AsyncParallelCoordinator": ".runtime.coordinator",
    "Config": ".config",
    "GroupMetadata": ".models",
    "GroupPhase": ".models",
    "MaestroError": ".errors",
    "ParallelCoordinator": ".runtime.sync",
    "TaskMetadata": ".models",
    "TaskStatus": ".models",
    "detect_groups": ".markers",
    "detect_subagent": ".markers",
    "extract_relevant_files": ".markers",
    "load_config": ".config",
}

if TYPE_CHECKING:
    from .config import Config, load_config
    from .errors import MaestroError
    from .markers import detect_groups, detect_subagent, extract_relevant_files
    from .models import GroupMetadata, GroupPhase, TaskMetadata, TaskStatus
    from .runtime.coordinator import AsyncParallelCoordinator
    from .runtime.sync import ParallelCoordinator


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
