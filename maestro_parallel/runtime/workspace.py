"""A group's isolation (DESIGN §12): its worktrees, commit-back, and the merge queue that lands its work.

:class:`GroupWorkspace` is the glue between a group run and
:mod:`maestro_parallel.isolation`.  Phase 1 opens it (:meth:`GroupWorkspace.open`,
None in shared mode): the mode, the target and ``base_sha`` are decided once
and journaled, maestro's paths are excluded from git, and the footprints'
overlaps are predicted.  Phase 2 creates every task's worktree at once and
runs ``setup`` in each; after each agent its work is committed on its branch.
Phase 4 merges the completed branches one at a time in the integration
worktree, gates, bisects, and lands on the target under the repository-wide
``merge.lock`` (plans land one group at a time).  Every isolation event goes
to the run's journal through ``emit``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._paths import MAESTRO_RELATIVE_PATH
from ..config import Config, IsolationConfig
from ..isolation import (
    ExistingBranch,
    GateResult,
    IncludePlan,
    IsolationError,
    IsolationEvent,
    IsolationMode,
    LandResult,
    LandStatus,
    QueueItem,
    QueueResult,
    RepoState,
    RunTests,
    TaskCommit,
    TaskWorkspace,
    Verdict,
    commit_task,
    conflict_warnings,
    create_worktrees,
    ensure_excluded,
    footprint,
    integration_branch,
    kept_worktrees,
    land,
    plan_includes,
    predict_conflicts,
    release_group,
    resolve_base,
    resolve_mode,
    run_merge_queue,
    run_setup,
    serialize_order,
    task_branch,
)
from ..isolation.commit import changed_files
from ..isolation.land import remove_worktree
from ..isolation.refs import check_group_id, task_worktree_path
from ..isolation.workspace import list_worktrees
from ..models import GroupMetadata, TaskMetadata, TaskStatus
from ..state.locks import TestsLock
from ..state.store import GroupStore
from .hooks import TestsOutcome, run_tests

__all__ = (
    "MERGE_LOCK_RELATIVE_PATH",
    "Emit",
    "GroupWorkspace",
    "Landing",
    "kept_worktree_documents",
    "metadata_files",
    "phase4_isolated",
)

#: The run's event emitter (``EventSink.emit``).
Emit = Callable[..., Awaitable[Any]]

#: Held while a group merges and lands: two groups never move the target at once.
MERGE_LOCK_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "merge.lock"


@dataclass(frozen=True)
class Landing:
    """What Phase 4 did: the queue's result (None: nothing to merge) and how landing went."""

    queue: QueueResult | None
    land: LandResult | None


class GroupWorkspace:
    """One group's worktrees on one repository, from one pinned ``base_sha``."""

    def __init__(
        self,
        *,
        config: IsolationConfig,
        state: RepoState,
        group_id: str,
        target: str,
        base_sha: str,
        include: IncludePlan,
        emit: Emit,
    ) -> None:
        self.config = config
        self.state = state
        self.group_id = group_id
        self.target = target
        self.base_sha = base_sha
        self.include = include
        self._emit = emit
        self._merged_reported: set[str] = set()
        self.workspaces: dict[str, TaskWorkspace] = {}  # the worktrees this run made or reused

    @property
    def git_root(self) -> Path:
        """The top of the git work tree the repository root lies in."""
        return self.state.toplevel

    @property
    def subdir(self) -> str:
        """The repository root relative to :attr:`git_root` (``""`` or ``"sub/dir/"``)."""
        return self.state.prefix

    @property
    def integration_branch(self) -> str:
        return integration_branch(self.group_id)

    # ------------------------------------------------------------ phase 1

    @classmethod
    async def open(cls, config: IsolationConfig, repo_root: Path, group_id: str, emit: Emit) -> GroupWorkspace | None:
        """Decide the mode and journal it; the workspace in worktree mode, None in shared mode.

        :raises IsolationError: ``mode = "worktree"`` where it is impossible, a
            target that cannot be resolved, a hostile ``.worktreeinclude``: the
            message names why, and the group fails in Phase 1.
        """
        decision, state = await resolve_mode(repo_root, config.mode)
        if decision.mode is IsolationMode.SHARED or state is None:
            await emit("isolation_decided", mode=IsolationMode.SHARED.value, reason=decision.reason)
            return None
        check_group_id(group_id)
        base = await resolve_base(state, config.target)
        await ensure_excluded(state)
        include = await plan_includes(state)
        await emit(
            "isolation_decided",
            mode=IsolationMode.WORKTREE.value,
            reason=decision.reason,
            target=base.target,
            base_sha=base.sha,
            integration_branch=integration_branch(group_id),
        )
        return cls(
            config=config,
            state=state,
            group_id=group_id,
            target=base.target,
            base_sha=base.sha,
            include=include,
            emit=emit,
        )

    async def predict(
        self, tasks: Sequence[TaskMetadata], files: Mapping[str, Sequence[str]]
    ) -> dict[str, tuple[str, ...]]:
        """Journal the overlaps of the tasks' footprints and warn each involved task.

        :param files: each task's metadata ``files`` (beside its relevant files).
        :returns: for each task, the earlier tasks it waits for under ``serialize``
            (all empty under ``warn``).
        """
        prints = [footprint(t.task_id, t.relevant_files, files.get(t.task_id, ()), priority=t.priority) for t in tasks]
        overlaps = predict_conflicts(prints)
        for overlap in overlaps:
            await self._emit("conflict_predicted", files=overlap["files"], tasks=overlap["tasks"], source="footprints")
        for task_id, messages in conflict_warnings(overlaps).items():
            for message in messages:
                await self._emit("warning", task_id=task_id, message=message)
        if self.config.conflicts != "serialize":
            return {fp.task_id: () for fp in prints}
        return serialize_order(prints, overlaps)

    # ------------------------------------------------------------ phase 2

    def cwd_for(self, task_id: str) -> Path:
        """Where the task's agent runs: its worktree's subfolder matching the repository root."""
        return task_worktree_path(self.state.repo_root, self.group_id, task_id) / self.state.prefix

    async def _set_aside_old(self, task_ids: Collection[str]) -> None:
        """A task that runs again gets a fresh worktree: the old one's leftovers are committed, then it goes.

        Its branch stays and is moved under ``_attempts/`` when the new one is made.
        """
        mine = {os.path.realpath(task_worktree_path(self.state.repo_root, self.group_id, t)): t for t in task_ids}
        for entry in await list_worktrees(self.state.repo_root):
            task_id = mine.get(os.path.realpath(entry.path))
            if task_id is None:
                continue
            if entry.branch is not None and entry.path.exists():
                try:
                    await commit_task(
                        entry.path, task_id=task_id, title="work left by an earlier attempt",
                        group_id=self.group_id, branch=entry.branch, base_sha=self.base_sha,
                    )  # fmt: skip
                except IsolationError:
                    continue  # not on its branch: leave it where it is, and let creation report it
            await remove_worktree(self.state.repo_root, entry.path, force=True)

    async def prepare_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskWorkspace | IsolationError]:
        """Every task's worktree from ``base_sha``, created at once (an error as the value of a task that failed)."""
        await self._set_aside_old(task_ids)
        made = await create_worktrees(
            self.state,
            self.group_id,
            task_ids,
            self.base_sha,
            include=self.include,
            existing_branch=ExistingBranch.KEEP_ASIDE,
            on_event=self._on_event,
        )
        self.workspaces.update((t, w) for t, w in made.items() if isinstance(w, TaskWorkspace))
        return made

    async def prepare_task(self, task_id: str, *, base_sha: str | None = None) -> TaskWorkspace:
        """One task's worktree (from ``base_sha``, default the group's): its folder, branch and cwd.

        :raises IsolationError: it cannot be made (the message says why).
        """
        await self._set_aside_old([task_id])
        made = await create_worktrees(
            self.state,
            self.group_id,
            [task_id],
            base_sha or self.base_sha,
            include=self.include,
            existing_branch=ExistingBranch.KEEP_ASIDE,
            on_event=self._on_event,
        )
        result = made[task_id]
        if isinstance(result, IsolationError):
            raise result
        self.workspaces[task_id] = result
        return result

    async def setup(self, task_id: str, log_path: Path, env: Mapping[str, str]) -> None:
        """Run ``[isolation].setup`` in the task's worktree, output in ``log_path`` (the task's log).

        :raises SetupError: ``setup failed: ...``.
        """
        workspace = self.workspaces.get(task_id)
        if workspace is None:
            raise IsolationError(f"setup failed: {task_id} has no worktree")
        await run_setup(
            workspace, self.config.setup, timeout=self.config.setup_timeout_seconds, log_path=log_path, env=env
        )

    async def commit_task(self, task_id: str, title: str) -> TaskCommit:
        """Commit what the task's agent left on its branch (journaled as ``task_committed``).

        :raises IsolationError: the agent left its branch, or git failed.
        """
        path = task_worktree_path(self.state.repo_root, self.group_id, task_id)
        made = self.workspaces.get(task_id)
        return await commit_task(
            path,
            task_id=task_id,
            title=title,
            group_id=self.group_id,
            branch=task_branch(self.group_id, task_id),
            base_sha=made.base_sha if made is not None else self.base_sha,  # a serialized task's own start
            on_event=self._on_event,
        )

    async def adopt_branch(self, task_id: str, branch: str, head_sha: str) -> None:
        """Journal the work of a task that ran elsewhere (a Dask worker) and came back as ``branch``.

        Phase 4 then merges it like the branch of a local worktree.
        """
        files = await changed_files(self.git_root, self.base_sha, head_sha)
        await self._emit(
            "task_committed", task_id=task_id, branch=branch, head_sha=head_sha, committed=False, changed_files=files
        )

    # ------------------------------------------------------------ phase 4

    async def merge_and_land(self, items: Sequence[QueueItem], run_tests: RunTests | None) -> Landing:
        """Merge ``items``' branches, gate, bisect, then land (rebuilding once if the target moved).

        Held under ``merge.lock``: a second group waits for the first to land.
        Nothing lands when the gate stays red.
        """
        if not items:
            return Landing(None, None)
        lock_path = self.state.repo_root / MERGE_LOCK_RELATIVE_PATH
        async with TestsLock(lock_path):  # the same waiting flock, on the repository's merge.lock
            queue = await self._queue(items, run_tests)
            if queue.gate.value == "failed" or not queue.merged:
                return Landing(queue, None)
            landed = await self._land(queue)
            if landed.status is LandStatus.TARGET_MOVED:
                queue = await self._queue(items, run_tests)
                if queue.gate.value == "failed" or not queue.merged:
                    return Landing(queue, None)
                landed = await self._land(queue)
                if landed.status is LandStatus.TARGET_MOVED:
                    landed = LandResult(
                        LandStatus.BLOCKED, self.target, landed.sha,
                        reason=f"{self.target} moved twice during the run",
                        command=f"git merge --ff-only {self.integration_branch}",
                    )  # fmt: skip
            if landed.status is LandStatus.BLOCKED:
                await self._emit("landing_blocked", target=self.target, message=landed.error or "cannot land")
            elif landed.method == "already":  # land() reports only a move it made itself
                await self._emit("landed", target=self.target, sha=landed.sha or queue.tip, method="already")
            return Landing(queue, landed)

    async def merge_for(self, items: Sequence[QueueItem]) -> str:
        """Merge ``items`` (earlier tasks) into the integration branch, ungated; the tip a serialized task starts from.

        Phase 4 finds them merged already (the trailers say so) and gates them
        with the rest.  With nothing to merge, the group's ``base_sha``.
        """
        if not items:
            return self.base_sha
        async with TestsLock(self.state.repo_root / MERGE_LOCK_RELATIVE_PATH):
            queue = await self._queue(items, None)
        return queue.tip

    async def _queue(self, items: Sequence[QueueItem], run_tests: RunTests | None) -> QueueResult:
        queue = await run_merge_queue(
            self.state,
            self.group_id,
            items,
            target=self.target,
            strategy=self.config.merge,
            run_tests=run_tests,
            include=self.include,
            on_event=self._on_event,
        )
        for task_id, outcome in queue.outcomes.items():  # merged by an earlier, interrupted run: say so once
            if outcome.verdict is Verdict.MERGED and task_id not in self._merged_reported:
                self._merged_reported.add(task_id)
                await self._emit(
                    "task_merged", task_id=task_id, branch=outcome.branch, sha=queue.tip, strategy=self.config.merge
                )
        return queue

    async def _land(self, queue: QueueResult) -> LandResult:
        return await land(
            self.state,
            self.group_id,
            target=self.target,
            built_on=queue.target_sha,
            allowed=self.config.land == "auto",
            on_event=self._on_event,
        )

    async def release(self, failed: Collection[str]) -> None:
        """After landing: remove what ``keep_worktrees`` does not keep (a failed task's branch always stays)."""
        await release_group(self.state.repo_root, self.group_id, failed=failed, policy=self.config.keep_worktrees)

    async def _on_event(self, event: IsolationEvent) -> None:
        fields: dict[str, Any] = {k: v for k, v in event.items() if k != "event"}
        name = event["event"]
        if name == "conflict_predicted":
            fields["source"] = "merge-tree"
        elif name == "task_merged":
            self._merged_reported.add(str(fields.get("task_id")))
        await self._emit(name, **fields)


def metadata_files(raw: Mapping[str, Any]) -> list[str]:
    """A task's metadata ``files`` (its footprint beside its relevant files), from the raw task."""
    nested = raw.get("metadata")
    value = raw.get("files", nested.get("files", []) if isinstance(nested, Mapping) else [])
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


async def phase4_isolated(
    workspace: GroupWorkspace,
    *,
    meta: GroupMetadata,
    emit: Emit,
    config: Config,
    store: GroupStore,
    close: Callable[[list[str], str], Awaitable[None]],
    titles: Mapping[str, str],
) -> str | None:
    """Phase 4 with isolation: merge the completed, unlanded branches, gate, land, close what landed.

    A conflict or a culprit fails that task alone; the others still land.
    Returns the landing error when the work could not land (the group is then
    ``blocked``), else None.
    """
    items = [
        QueueItem(r["task_id"], r["branch"], titles.get(r["task_id"], ""))
        for r in meta.results
        if r.get("status") == TaskStatus.COMPLETED and isinstance(r.get("branch"), str) and not r.get("landed")
    ]
    gate_runs: list[TestsOutcome] = []
    log_path = store.log_path("_tests")

    async def gate(cwd: Path) -> bool | None:
        outcome = await run_tests(config, cwd, log_path, store.tests_lock_path, store.group_id)
        gate_runs.append(outcome)
        if outcome.warning:
            await emit("warning", task_id=None, message=outcome.warning)
        return None if outcome.status == "skipped" else outcome.status == "passed"

    try:
        landing = await workspace.merge_and_land(items, gate if config.tests.enabled else None)
    except IsolationError as exc:
        await emit("group_error", message=f"merge queue: {exc}")
        return None
    queue = landing.queue
    if queue is not None:
        for task_id, outcome in queue.outcomes.items():
            if outcome.verdict is not Verdict.MERGED:
                result = meta.result_for(task_id) or {}
                await emit(
                    "task_finished", task_id=task_id, status=TaskStatus.FAILED.value,
                    exit_code=result.get("exit_code"), error=outcome.error,
                )  # fmt: skip
        if gate_runs:
            last = gate_runs[-1]
            red = queue.gate is GateResult.FAILED
            await emit(
                "tests_finished",
                status="failed" if red else ("passed" if queue.gate is GateResult.PASSED else "skipped"),
                exit_code=last.exit_code,
                command=last.command,
                error=(queue.gate_error or last.error) if red else None,
                log_path=store.relative(log_path) if last.command else None,
            )
    if landing.land is not None and landing.land.status is LandStatus.BLOCKED:
        return landing.land.error
    to_close = [
        r["task_id"] for r in meta.results
        if r.get("status") == TaskStatus.COMPLETED and not r.get("closed")
        and (r.get("landed") or not r.get("changed_files"))
    ]  # fmt: skip
    await close(to_close, f"completed by maestro-parallel (group {store.group_id}); landed on {workspace.target}")
    if queue is None or queue.gate is not GateResult.FAILED:
        failed = {r["task_id"] for r in meta.results if r.get("status") == TaskStatus.FAILED}
        try:
            await workspace.release(failed)
        except IsolationError as exc:
            await emit("warning", task_id=None, message=f"cleanup: {exc}")
    return None


async def kept_worktree_documents(repo_root: Path, group_id: str) -> list[dict[str, Any]]:
    """The group's worktrees still on disk, for ``status`` ([] when git cannot say)."""
    try:
        kept = await kept_worktrees(repo_root, group_id)
    except (IsolationError, OSError):
        return []
    return [{"task_id": k.task_id, "path": str(k.path), "branch": k.branch, "head": k.head} for k in kept]
