"""The merge queue: completed tasks' branches reach the integration branch one at a time, gated.

In the integration worktree (``_integration``, branch ``maestro/integrate/<group>``,
started at the target's current tip) each completed task's branch is merged on
its own: those ``git merge-tree --write-tree`` predicts clean first, in input
order, then the rest.  A merge that conflicts is aborted and that task alone
fails, naming the files.  The test gate runs once on everything merged; when
it is red, bisection over the merged branches (each probe rebuilt from the
target's tip) names the culprits, and the rest is rebuilt and tested once more.
A conflict ``merge-tree`` predicts is reported (``conflict_predicted``, with the
files) before that branch's turn comes.

Every merge commit carries ``Maestro-Task`` and ``Maestro-Head`` trailers, so
a queue run again after a crash sees what is already merged and never merges
it twice.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread

from .commit import NO_HOOKS
from .errors import GitError, IsolationError
from .events import BisectStep, ConflictPredicted, EventSink, MergeConflict, TaskMerged, emit
from .git import identity_environment, run_git
from .refs import integration_branch, integration_worktree_path
from .workspace import IncludePlan, RepoState, _add_worktree, _admin_git, _copy_includes, list_worktrees

__all__ = (
    "GateResult",
    "MergeStrategy",
    "QueueItem",
    "QueueResult",
    "RunTests",
    "TaskOutcome",
    "Verdict",
    "find_culprits",
    "merge_order",
    "merged_heads",
    "open_integration",
    "run_merge_queue",
)

#: The test gate: run the suite in ``cwd``; True green, False red, None when there is no suite.
RunTests = Callable[[Path], Awaitable[bool | None]]


class MergeStrategy(enum.StrEnum):
    """``[isolation].merge``."""

    MERGE = "merge"  # git merge --no-ff: one merge commit per task, its own commits kept
    SQUASH = "squash"  # one commit per task


class Verdict(enum.StrEnum):
    """What the queue did with one task."""

    MERGED = "merged"
    CONFLICT = "conflict"
    CULPRIT = "culprit"


class GateResult(enum.StrEnum):
    """How the test gate ended on what the queue leaves on the integration branch."""

    PASSED = "passed"
    FAILED = "failed"  # red even after removing the culprits, or red on the target itself
    NO_SUITE = "no_suite"
    NOT_RUN = "not_run"  # nothing was merged


@dataclass(frozen=True)
class QueueItem:
    """A completed task whose branch waits to be merged."""

    task_id: str
    branch: str
    title: str = ""


@dataclass(frozen=True)
class TaskOutcome:
    """One task's fate in the queue; ``error`` is the line its result gets when it failed."""

    task_id: str
    verdict: Verdict
    branch: str
    files: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class QueueResult:
    """What the queue left: the integration branch's tip, built on ``target_sha``, and each task's outcome."""

    integration_branch: str
    path: Path
    target_sha: str
    tip: str
    gate: GateResult
    outcomes: dict[str, TaskOutcome]
    gate_error: str | None = None

    @property
    def merged(self) -> list[str]:
        return [t for t, o in self.outcomes.items() if o.verdict is Verdict.MERGED]


def merged_heads(log_text: str) -> dict[str, str]:
    """``{task_id: head_sha}`` from the ``Maestro-Task`` / ``Maestro-Head`` trailers of commit messages (pure)."""
    found: dict[str, str] = {}
    task: str | None = None
    for line in log_text.splitlines():
        if line.startswith("Maestro-Task: "):
            task = line.removeprefix("Maestro-Task: ").strip()
        elif line.startswith("Maestro-Head: ") and task is not None:
            found.setdefault(task, line.removeprefix("Maestro-Head: ").strip())
            task = None
    return found


def merge_order(items: Sequence[QueueItem], predicted_clean: Mapping[str, bool]) -> list[QueueItem]:
    """Predicted-clean items first, then the others, each in input order (pure)."""
    return [i for i in items if predicted_clean.get(i.task_id, True)] + [
        i for i in items if not predicted_clean.get(i.task_id, True)
    ]


def _message(item: QueueItem, group_id: str, head: str, strategy: MergeStrategy) -> str:
    title = " ".join(item.title.split())
    subject = f"{item.task_id}: {title}" if title else item.task_id
    if strategy is MergeStrategy.MERGE:
        subject = f"Merge {subject}"
    return f"{subject}\n\nMaestro-Group: {group_id}\nMaestro-Task: {item.task_id}\nMaestro-Head: {head}\n"


async def _head(path: Path, rev: str = "HEAD") -> str:
    return (await run_git(path, "rev-parse", "--verify", f"{rev}^{{commit}}", timeout=30)).stdout.strip()


async def _clean_state(path: Path) -> None:
    """Drop whatever an interrupted merge left (MERGE_HEAD, a staged squash, stray files)."""
    await run_git(path, "merge", "--abort", check=False, timeout=60)
    await run_git(path, "reset", "--hard", "-q", "HEAD", timeout=600)
    await run_git(path, "clean", "-fdq", timeout=600)


async def open_integration(
    state: RepoState, group_id: str, target_sha: str, *, include: IncludePlan | None = None
) -> Path:
    """The integration worktree on ``maestro/integrate/<group>``, containing ``target_sha``, clean.

    An existing one is kept (a resumed queue finds its merges there) unless the
    target moved past it, in which case it is reset to ``target_sha``.  No hook
    of the repository runs: a failing ``post-checkout`` must not stop the queue.
    """
    repo = state.repo_root
    branch = integration_branch(group_id)
    path = integration_worktree_path(repo, group_id)
    entry = (
        next((e for e in await list_worktrees(repo) if e.path.exists() and e.path.samefile(path)), None)
        if path.exists()
        else None
    )
    if entry is None:
        await _admin_git(repo, "worktree", "prune")  # a registration whose folder was deleted is in the way
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        exists = (
            await run_git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False, timeout=30)
        ).ok
        # Registered without a checkout (which would run the repository's post-checkout hook, whose
        # failure fails the add); _clean_state's reset checks the files out, and runs no hook.
        await _add_worktree(repo, path, branch, None if exists else target_sha)
    elif entry.branch != branch:
        raise IsolationError(
            f"{path} is a worktree on {entry.branch or 'a detached HEAD'}, not on {branch}: "
            f"run clean --group-id {group_id}"
        )
    await _clean_state(path)
    contains = await run_git(path, "merge-base", "--is-ancestor", target_sha, "HEAD", check=False, timeout=60)
    if not contains.ok:
        await run_git(path, "reset", "--hard", "-q", target_sha, timeout=600)
    if (path / ".gitmodules").is_file():
        await run_git(path, "submodule", "update", "--init", "--recursive", "--quiet")
    if include is not None and include.files:
        await anyio.to_thread.run_sync(_copy_includes, include, path / state.prefix)
    return path


async def _merge_one(
    path: Path, item: QueueItem, group_id: str, strategy: MergeStrategy, env: Mapping[str, str]
) -> list[str] | None:
    """Merge ``item`` into the worktree at ``path``; None when merged, else the conflicting files."""
    head = await _head(path, f"refs/heads/{item.branch}")
    message = _message(item, group_id, head, strategy)
    if strategy is MergeStrategy.MERGE:
        args = ["merge", "--no-ff", "--no-verify", "--no-edit", "-q", "-m", message, head]
    else:
        args = ["merge", "--squash", "-q", head]
    merge = await run_git(path, *args, env=env, config=NO_HOOKS, check=False, timeout=600)
    if not merge.ok:
        unmerged = await run_git(path, "diff", "--name-only", "--diff-filter=U", "-z", timeout=60)
        files = sorted(set(unmerged.zsplit()))
        await _clean_state(path)
        if not files:
            raise GitError(merge.argv, merge.returncode, merge.stderr or merge.stdout)
        return files
    if strategy is MergeStrategy.SQUASH:
        staged = await run_git(path, "diff", "--cached", "--quiet", check=False, timeout=600)
        if staged.returncode == 1:
            await run_git(path, "commit", "--no-verify", "-q", "-m", message, env=env, config=NO_HOOKS, timeout=600)
    return None


async def _is_merged(path: Path, item: QueueItem, merged: Mapping[str, str]) -> bool:
    head = await _head(path, f"refs/heads/{item.branch}")
    if merged.get(item.task_id) == head:
        return True
    return (await run_git(path, "merge-base", "--is-ancestor", head, "HEAD", check=False, timeout=60)).ok


async def _predict_conflicts(path: Path, branch: str) -> list[str]:
    """The files ``git merge-tree --write-tree`` says merging ``branch`` would conflict in ([]: clean)."""
    result = await run_git(
        path,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        "-z",
        "HEAD",
        f"refs/heads/{branch}",
        check=False,
        timeout=600,
    )
    if result.returncode not in (0, 1):
        raise GitError(result.argv, result.returncode, result.stderr)
    return [] if result.returncode == 0 else sorted(set(result.zsplit()[1:]))


async def find_culprits(
    items: Sequence[QueueItem], probe: Callable[[list[QueueItem]], Awaitable[bool]]
) -> tuple[list[QueueItem], bool]:
    """Bisect ``items`` (all merged: red) to the ones that turn the gate red.

    ``probe(subset)`` rebuilds from the target's tip with ``subset`` merged and
    says whether the gate passes.  Each round finds the shortest failing
    prefix (binary search), blames its last item, and rebuilds without it; the
    final probe, on the remaining items, is the "tested once more".  Returns
    (culprits, whether the remaining items pass); when even the target's own
    tip is red nobody is blamed: ([], False).
    """
    remaining = list(items)
    culprits: list[QueueItem] = []
    passing = 0  # a prefix of ``remaining`` this long is known to pass
    while remaining:
        lo, hi = passing, len(remaining)  # remaining[:lo] passes, remaining[:hi] fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await probe(remaining[:mid]):
                lo = mid
            else:
                hi = mid
        if hi == 1 and passing == 0 and not await probe([]):
            return [], False  # red without any task: nobody is to blame
        if hi > len(remaining) or hi - 1 < passing:
            break  # a flaky suite contradicted itself: blame nobody more
        culprits.append(remaining.pop(hi - 1))
        passing = hi - 1
        if await probe(remaining):
            return culprits, True
    return culprits, False


async def run_merge_queue(
    state: RepoState,
    group_id: str,
    items: Sequence[QueueItem],
    *,
    target: str,
    strategy: MergeStrategy | str = MergeStrategy.MERGE,
    run_tests: RunTests | None = None,
    include: IncludePlan | None = None,
    on_event: EventSink | None = None,
) -> QueueResult:
    """Merge ``items`` into the integration branch at ``target``'s current tip, gate, bisect.

    Per-task failures (a conflict, a culprit) are outcomes, never raised.

    :raises GitError: a git command failed for another reason than a conflict.
    """
    strategy = MergeStrategy(strategy)
    target_sha = await _head(state.repo_root, f"refs/heads/{target}")
    path = await open_integration(state, group_id, target_sha, include=include)
    env = await identity_environment(path)
    log = await run_git(path, "log", "--format=%B", f"{target_sha}..HEAD", timeout=120)
    already = merged_heads(log.stdout)
    outcomes: dict[str, TaskOutcome] = {}
    pending: list[QueueItem] = []
    for item in items:
        if await _is_merged(path, item, already):
            outcomes[item.task_id] = TaskOutcome(item.task_id, Verdict.MERGED, item.branch)
        else:
            pending.append(item)
    clean: dict[str, bool] = {}
    for item in pending:
        predicted = await _predict_conflicts(path, item.branch)
        clean[item.task_id] = not predicted
        if predicted:
            await emit(on_event, ConflictPredicted(event="conflict_predicted", files=predicted, tasks=[item.task_id]))
    for item in merge_order(pending, clean):
        files = await _merge_one(path, item, group_id, strategy, env)
        if files is None:
            outcomes[item.task_id] = TaskOutcome(item.task_id, Verdict.MERGED, item.branch)
            await emit(
                on_event,
                TaskMerged(
                    event="task_merged",
                    task_id=item.task_id,
                    branch=item.branch,
                    sha=await _head(path),
                    strategy=strategy.value,
                ),
            )
        else:
            error = f"merge conflict in {', '.join(files)}"
            outcomes[item.task_id] = TaskOutcome(item.task_id, Verdict.CONFLICT, item.branch, files, error)
            await emit(
                on_event, MergeConflict(event="merge_conflict", task_id=item.task_id, branch=item.branch, files=files)
            )
    merged = [item for item in items if outcomes[item.task_id].verdict is Verdict.MERGED]
    gate, gate_error = GateResult.NOT_RUN, None
    if merged and run_tests is not None:
        verdict = await run_tests(path / state.prefix)
        if verdict is None:
            gate = GateResult.NO_SUITE
        elif verdict:
            gate = GateResult.PASSED
        else:

            async def probe(subset: list[QueueItem]) -> bool:
                await run_git(path, "reset", "--hard", "-q", target_sha, timeout=600)
                ok = True
                for member in subset:
                    if await _merge_one(path, member, group_id, strategy, env) is not None:
                        ok = False
                        break
                passed = ok and bool(await run_tests(path / state.prefix))
                await emit(on_event, BisectStep(event="bisect_step", tasks=[m.task_id for m in subset], passed=passed))
                return passed

            culprits, green = await find_culprits(merged, probe)
            for culprit in culprits:
                outcomes[culprit.task_id] = TaskOutcome(
                    culprit.task_id, Verdict.CULPRIT, culprit.branch, error="test suite fails with this task merged"
                )
            gate = GateResult.PASSED if green else GateResult.FAILED
            if not green:  # leave the tip holding exactly what the outcomes call merged
                await run_git(path, "reset", "--hard", "-q", target_sha, timeout=600)
                for member in merged:
                    if member not in culprits:
                        await _merge_one(path, member, group_id, strategy, env)
                gate_error = (
                    "the test suite fails on the target itself" if not culprits else "the test suite still fails"
                )
    elif merged:
        gate = GateResult.NO_SUITE
    ordered = {item.task_id: outcomes[item.task_id] for item in items}
    return QueueResult(integration_branch(group_id), path, target_sha, await _head(path), gate, ordered, gate_error)
