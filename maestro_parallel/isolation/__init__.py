"""Worktree isolation (DESIGN §12): one git worktree per task, and a merge queue that lands verified work.

Layout, in the order a group uses it:

- ``git``: the one git runner (timeout, clean environment, fallback identity, version check);
- ``refs`` / ``conflicts``: pure rules: branch and folder names, predicted overlaps;
- ``workspace``: mode and target resolution, ``info/exclude``, task worktrees, ``.worktreeinclude``, setup;
- ``commit``: commit-back after each agent;
- ``queue``: the merge queue, the test gate and bisection;
- ``land``: fast-forwarding the target, cleanup, kept worktrees;
- ``events`` / ``errors``: what it reports and raises.
"""

from __future__ import annotations

from .commit import TaskCommit, commit_message, commit_task
from .conflicts import Footprint, Overlap, conflict_warnings, footprint, predict_conflicts, serialize_order
from .errors import (
    CommitError,
    GitError,
    GitTimeoutError,
    GitUnavailableError,
    IncludeError,
    IsolationError,
    ModeUnavailableError,
    SetupError,
    TargetError,
    WorktreeError,
)
from .events import EventSink, IsolationEvent
from .git import GitResult, identity_environment, require_git, run_git, scrub_git_variables
from .land import (
    CleanReport,
    KeepWorktrees,
    KeptWorktree,
    LandResult,
    LandStatus,
    clean,
    keep_worktree,
    kept_worktrees,
    land,
    release_group,
)
from .queue import GateResult, MergeStrategy, QueueItem, QueueResult, RunTests, TaskOutcome, Verdict, run_merge_queue
from .refs import decode_component, encode_component, integration_branch, parse_branch, task_branch
from .workspace import (
    ExistingBranch,
    IncludePlan,
    IsolationMode,
    ModeDecision,
    RepoState,
    TargetBase,
    TaskWorkspace,
    create_worktree,
    create_worktrees,
    ensure_excluded,
    plan_includes,
    resolve_base,
    resolve_mode,
    run_setup,
)

__all__ = (
    "CleanReport",
    "CommitError",
    "EventSink",
    "ExistingBranch",
    "Footprint",
    "GateResult",
    "GitError",
    "GitResult",
    "GitTimeoutError",
    "GitUnavailableError",
    "IncludeError",
    "IncludePlan",
    "IsolationError",
    "IsolationEvent",
    "IsolationMode",
    "KeepWorktrees",
    "KeptWorktree",
    "LandResult",
    "LandStatus",
    "MergeStrategy",
    "ModeDecision",
    "ModeUnavailableError",
    "Overlap",
    "QueueItem",
    "QueueResult",
    "RepoState",
    "RunTests",
    "SetupError",
    "TargetBase",
    "TargetError",
    "TaskCommit",
    "TaskOutcome",
    "TaskWorkspace",
    "Verdict",
    "WorktreeError",
    "clean",
    "commit_message",
    "commit_task",
    "conflict_warnings",
    "create_worktree",
    "create_worktrees",
    "decode_component",
    "encode_component",
    "ensure_excluded",
    "footprint",
    "identity_environment",
    "integration_branch",
    "keep_worktree",
    "kept_worktrees",
    "land",
    "parse_branch",
    "plan_includes",
    "predict_conflicts",
    "release_group",
    "require_git",
    "resolve_base",
    "resolve_mode",
    "run_git",
    "run_merge_queue",
    "run_setup",
    "scrub_git_variables",
    "serialize_order",
    "task_branch",
)
