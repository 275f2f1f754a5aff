"""maestro_parallel: run parallel groups of coding-agent tasks for real.

Layout (flat, one concern per module):

- ``coordinator`` the async core (four phases); ``sync`` its blocking facade;
- ``markers`` / ``tasks`` / ``config`` / ``agents`` / ``events``: pure rules, no I/O;
- ``store`` (journal, snapshot, locks) and ``process`` (agent subprocesses): the I/O;
- ``trackers``: where tasks live (``LocalTracker``, ``BeadsTracker``, ``MemoryTracker``);
- ``cli``: the ``maestro-parallel`` command, the only place that maps errors to exit codes.
"""

from ._version import __version__
from .config import Config, load_config
from .coordinator import AsyncParallelCoordinator
from .errors import MaestroError
from .markers import detect_groups, detect_subagent, extract_relevant_files
from .models import GroupMetadata, GroupPhase, TaskMetadata, TaskStatus
from .sync import ParallelCoordinator

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
