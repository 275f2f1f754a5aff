"""The steps of a group run that isolation and remote executors add around each task.

With worktree isolation a task may wait for the earlier tasks it overlaps (``serialize``), runs
``setup`` in its worktree, and has what its agent left committed on its branch; with a Dask
executor the group first reaches the executor, and a task's work comes back as a fetched branch.
Kept apart from :mod:`.group_run`, which calls them at those points, so the four phases stay
readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..executors.base import ExecutorError, RepoInfo
from ..isolation import IsolationError, QueueItem
from ..models import TaskStatus
from .launch import LaunchPlan
from .remote import ExecutorSlot, RemoteAttempts, RemoteBase, resolve_remote_base

if TYPE_CHECKING:
    from .group_run import GroupRun

__all__ = ("commit_back", "connect_remote", "not_launched", "setup_worktree", "wait_for_earlier")


async def connect_remote(run: GroupRun, slot: ExecutorSlot, agents: int) -> str | None:
    """Resolve the base commit and reach the executor; why the group cannot run remotely, or None."""
    limit = run.config.agent.max_parallel
    try:
        if run.workspace is not None:  # the base Phase 1 pinned: the merge queue builds on the same commit
            repo = RepoInfo(run.workspace.git_root, run.workspace.subdir.rstrip("/"))
            base = RemoteBase(run.workspace.base_sha, repo, run.workspace.target)
        else:
            base = await resolve_remote_base(run.repo_root, run.config.isolation)
        executor = await slot.get(min(agents, limit) if limit > 0 else agents)
    except ExecutorError as exc:
        return str(exc)
    run.attempts.remote = RemoteAttempts(
        executor, base, store=run.store, sink=run.sink, on_started=run.note_launched
    )
    return None


async def not_launched(run: GroupRun, plans: list[LaunchPlan]) -> None:
    for plan in plans:
        await run.emit("task_prepared", task_id=plan.record.task_id, subagent=plan.subagent, skills_applied=[])
        await run.emit(
            "task_finished",
            task_id=plan.record.task_id,
            status=TaskStatus.FAILED.value,
            exit_code=None,
            error="not launched",
        )


async def wait_for_earlier(run: GroupRun, plan: LaunchPlan) -> str | None:
    """Under ``serialize``: wait for the earlier overlapping tasks, merge them, start from that tip."""
    earlier = run.waits.get(plan.record.task_id, ())
    if run.workspace is None or not earlier:
        return None
    for task_id in earlier:
        done = run.finished.get(task_id)  # absent: it never launched (its worktree could not be made)
        if done is not None:
            await done.wait()
    if run.attempts.remote is not None:  # a worker starts from base_sha: waiting is all it can do
        return None
    branches = {r["task_id"]: r.get("branch") for r in run.meta.results if r.get("status") == TaskStatus.COMPLETED}
    items = [QueueItem(t, str(branches[t]), "") for t in earlier if isinstance(branches.get(t), str)]
    try:
        base = await run.workspace.merge_for(items)
        await run.workspace.prepare_task(plan.record.task_id, base_sha=base)
    except IsolationError as exc:
        return f"worktree: {exc}"
    return None


async def setup_worktree(run: GroupRun, plan: LaunchPlan) -> str | None:
    """With isolation: run ``setup`` in the task's worktree; the error, or None."""
    if run.workspace is None or not run.config.isolation.setup or run.attempts.remote is not None:
        return None  # on a Dask worker the scratch clone is the agent's whole world: setup is not shipped
    try:
        await run.workspace.setup(plan.record.task_id, run.store.log_path(plan.record.task_id), plan.env)
    except IsolationError as exc:
        return str(exc)
    return None


async def commit_back(run: GroupRun, plan: LaunchPlan, extra: Mapping[str, Any] | None = None) -> str | None:
    """With isolation: commit what the agent left on its branch; the error, or None.

    A remote attempt's work came back as a fetched branch (``extra``): it is journaled as
    committed, so Phase 4 merges it like a local one.
    """
    if run.workspace is None:
        return None
    try:
        if run.attempts.remote is not None:
            branch, head = (extra or {}).get("branch"), (extra or {}).get("head_sha")
            if isinstance(branch, str) and isinstance(head, str):
                await run.workspace.adopt_branch(plan.record.task_id, branch, head)
            return None
        await run.workspace.commit_task(plan.record.task_id, plan.record.metadata.title)
    except IsolationError as exc:
        return f"commit-back failed: {exc}"
    return None
