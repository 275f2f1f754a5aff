"""Landing the integration branch on the target, and cleaning up what a group left.

Landing only ever fast-forwards (DESIGN §12): ``git merge --ff-only`` in the
user's checkout when the target is checked out there and no tracked file is
changed, ``git update-ref`` guarded by the old value when the target is checked
out nowhere.  A target that moved gets :attr:`LandStatus.TARGET_MOVED` (the
caller rebuilds the queue once on the new tip); anything else that stands in
the way is :attr:`LandStatus.BLOCKED` with the reason and the exact command
that lands it by hand.

Cleanup removes worktrees and ``maestro/`` branches, and refuses to delete a
branch whose commits are on no other branch (unless forced), so that nothing
an agent wrote is lost by tidying up.  A worktree with submodules checked out
(which git removes only when forced) goes once nothing in it, its submodules
included, would be lost.
"""

from __future__ import annotations

import enum
import os
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GitError
from .events import EventSink, Landed, emit
from .git import run_git
from .refs import (
    BRANCH_PREFIX,
    INTEGRATION_DIR,
    integration_branch,
    parse_branch,
    worktrees_dir,
)
from .workspace import RepoState, list_worktrees

__all__ = (
    "CleanReport",
    "KeepWorktrees",
    "KeptWorktree",
    "LandResult",
    "LandStatus",
    "clean",
    "delete_branch",
    "keep_worktree",
    "kept_worktrees",
    "land",
    "release_group",
    "remove_worktree",
    "unsaved_work",
)


class LandStatus(enum.StrEnum):
    LANDED = "landed"
    TARGET_MOVED = "target_moved"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class LandResult:
    """How landing went; when blocked, ``reason`` says why and ``command`` lands it by hand."""

    status: LandStatus
    target: str
    sha: str | None = None  # the target's tip after landing
    method: str | None = None  # "ff-only" | "update-ref" | "already"
    reason: str | None = None
    command: str | None = None

    @property
    def error(self) -> str | None:
        """The group's error line when blocked: the reason, then the command."""
        if self.status is not LandStatus.BLOCKED:
            return None
        return f"{self.reason}; to land it: {self.command}" if self.command else self.reason


def _ff_command(checkout: Path, branch: str) -> str:
    return f"git -C {shlex.quote(str(checkout))} merge --ff-only {branch}"


async def land(
    state: RepoState,
    group_id: str,
    *,
    target: str,
    built_on: str,
    allowed: bool = True,
    on_event: EventSink | None = None,
) -> LandResult:
    """Fast-forward ``target`` to the integration branch of ``group_id``.

    :param built_on: the target's tip the integration branch was built on.
    :param allowed: False for ``land = "never"``: report how to land by hand.
    """
    repo = state.repo_root
    branch = integration_branch(group_id)
    tip = (await run_git(repo, "rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}", timeout=30)).stdout.strip()
    current = (
        await run_git(repo, "rev-parse", "--verify", f"refs/heads/{target}^{{commit}}", timeout=30)
    ).stdout.strip()
    checkouts = [e.path for e in await list_worktrees(repo) if e.branch == target]
    user_checkout = state.toplevel
    command = _ff_command(checkouts[0] if checkouts else user_checkout, branch)
    if current == tip:
        return LandResult(LandStatus.LANDED, target, tip, "already")
    if not (await run_git(repo, "merge-base", "--is-ancestor", current, tip, check=False, timeout=60)).ok:
        if current != built_on:
            return LandResult(LandStatus.TARGET_MOVED, target, current, reason=f"{target} moved during the run")
        return LandResult(
            LandStatus.BLOCKED, target, current, reason=f"{branch} does not contain {target}", command=None
        )
    if not allowed:
        return LandResult(
            LandStatus.BLOCKED, target, current, reason=f'land = "never": the work waits on {branch}', command=command
        )
    if not checkouts:
        await run_git(
            repo,
            "update-ref",
            "-m",
            f"maestro-parallel: land {group_id}",
            f"refs/heads/{target}",
            tip,
            current,
            timeout=60,
        )
        method = "update-ref"
    elif any(os.path.realpath(p) == os.path.realpath(user_checkout) for p in checkouts):
        dirty = await run_git(user_checkout, "status", "--porcelain", "--untracked-files=no", "-z", timeout=300)
        if dirty.stdout:
            return LandResult(
                LandStatus.BLOCKED, target, current,
                reason=f"the checkout at {user_checkout} has uncommitted changes to tracked files", command=command,
            )  # fmt: skip
        merged = await run_git(user_checkout, "merge", "--ff-only", "-q", branch, check=False, timeout=600)
        if not merged.ok:
            why = GitError(merged.argv, merged.returncode, merged.stderr)
            return LandResult(LandStatus.BLOCKED, target, current, reason=str(why), command=command)
        method = "ff-only"
    else:
        where = ", ".join(str(p) for p in checkouts)
        return LandResult(
            LandStatus.BLOCKED,
            target,
            current,
            reason=f"{target} is checked out in another worktree ({where})",
            command=command,
        )
    await emit(on_event, Landed(event="landed", target=target, sha=tip, method=method))
    return LandResult(LandStatus.LANDED, target, tip, method)


class KeepWorktrees(enum.StrEnum):
    """``[isolation].keep_worktrees``: which task worktrees outlive their group."""

    FAILED = "failed"
    ALWAYS = "always"
    NEVER = "never"


def keep_worktree(policy: KeepWorktrees | str, *, failed: bool) -> bool:
    """Whether a task's worktree is kept after its group (pure); a kept one is listed by ``status``."""
    policy = KeepWorktrees(policy)
    return policy is KeepWorktrees.ALWAYS or (policy is KeepWorktrees.FAILED and failed)


@dataclass(frozen=True)
class KeptWorktree:
    """A worktree maestro made and left in place."""

    group_id: str
    task_id: str | None  # None: the integration worktree
    path: Path
    branch: str | None
    head: str | None


async def kept_worktrees(repo_root: Path, group_id: str | None = None) -> list[KeptWorktree]:
    """Maestro's worktrees still registered with git (of one group, or all)."""
    root = os.path.realpath(worktrees_dir(repo_root))
    found: list[KeptWorktree] = []
    for entry in await list_worktrees(repo_root):
        real = os.path.realpath(entry.path)
        if os.path.dirname(os.path.dirname(real)) != root:
            continue
        group, name = Path(real).parent.name, Path(real).name
        if group_id is not None and group != group_id:
            continue
        found.append(
            KeptWorktree(group, None if name == INTEGRATION_DIR else name, entry.path, entry.branch, entry.head)
        )
    return found


#: Run in each submodule (``git submodule foreach``): prints its path when its HEAD is on none of its
#: remote-tracking branches, i.e. holds commits made in this worktree that exist nowhere else.
_LOCAL_ONLY_HEAD = 'test -n "$(git for-each-ref --count=1 --contains HEAD refs/remotes)" || echo "$displaypath"'


async def unsaved_work(path: Path) -> str | None:
    """What removing the worktree at ``path`` would lose, in a few words; None when nothing.

    Uncommitted changes (its submodules' included), or commits in a submodule
    that are on none of that submodule's remote-tracking branches: a linked
    worktree's submodules keep their objects in its own admin folder, which
    goes with it.
    """
    status = await run_git(
        path, "status", "--porcelain", "--untracked-files=all", "--ignore-submodules=none", check=False, timeout=300
    )
    if not status.ok or status.stdout.strip():
        return "uncommitted changes"
    if not (path / ".gitmodules").is_file():
        return None
    local = await run_git(path, "submodule", "foreach", "--quiet", "--recursive", _LOCAL_ONLY_HEAD, check=False)
    if not local.ok:
        return "submodules git cannot inspect"
    if local.lines():
        return f"commits on no remote branch in its submodule {', '.join(local.lines())}"
    return None


async def _remove(repo_root: Path, path: Path, *, force: bool = False) -> str | None:
    """Remove one worktree; None when it is gone, else why it is kept (:func:`unsaved_work`).

    git refuses to remove a worktree with submodules checked out, even a clean
    one, unless forced: such a worktree is forced out once nothing in it would be lost.
    """
    args = ["worktree", "remove", *(["--force", "--force"] if force else []), str(path)]
    if (await run_git(repo_root, *args, check=False, timeout=600)).ok:
        return None
    why = await unsaved_work(path)
    if why is None and not force and (path / ".gitmodules").is_file():
        forced = await run_git(repo_root, "worktree", "remove", "--force", str(path), check=False, timeout=600)
        if forced.ok:
            return None
    return why or "uncommitted changes"


async def remove_worktree(repo_root: Path, path: Path, *, force: bool = False) -> bool:
    """Remove one worktree; False (kept) when it holds unsaved work (:func:`unsaved_work`) and ``force`` is off."""
    return await _remove(repo_root, path, force=force) is None


async def _unique_commits(repo_root: Path, branch: str) -> int:
    """How many commits of ``branch`` are on no other branch."""
    result = await run_git(
        repo_root,
        "rev-list",
        "--count",
        f"refs/heads/{branch}",
        "--not",
        f"--exclude={branch}",
        "--branches",
        timeout=120,
    )
    return int(result.stdout.strip() or 0)


async def delete_branch(repo_root: Path, branch: str, *, force: bool = False) -> str | None:
    """Delete ``branch``; the reason it was kept, or None when it was deleted."""
    if not force:
        unique = await _unique_commits(repo_root, branch)
        if unique:
            return f"{branch} has {unique} commit(s) on no other branch (use --force to delete it)"
    result = await run_git(repo_root, "branch", "-D", branch, check=False, timeout=60)
    return None if result.ok else GitError(result.argv, result.returncode, result.stderr).args[0]


@dataclass
class CleanReport:
    """What :func:`clean` removed and what it kept, with why."""

    worktrees_removed: list[str] = field(default_factory=list)
    branches_deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # one line per thing kept: what and why


async def clean(repo_root: Path, group_id: str | None = None, *, force: bool = False) -> CleanReport:
    """Remove a group's (or, with ``group_id=None``, every group's) worktrees and ``maestro/`` branches.

    Task branches go before integration branches, so a task branch merged into
    an integration branch that is kept is deleted (its commits stay reachable).
    """
    report = CleanReport()
    for kept in await kept_worktrees(repo_root, group_id):
        why = await _remove(repo_root, kept.path, force=force)
        if why is None:
            report.worktrees_removed.append(str(kept.path))
        else:
            report.kept.append(f"{kept.path} has {why} (use --force to remove it)")
    await run_git(repo_root, "worktree", "prune", timeout=60)
    refs = await run_git(
        repo_root, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}/", timeout=60
    )
    branches = []
    for name in refs.lines():
        parsed = parse_branch(name)
        if parsed is not None and (group_id is None or parsed.group_id == group_id):
            branches.append((parsed.task_id is None, name))
    for _, name in sorted(branches):
        reason = await delete_branch(repo_root, name, force=force)
        if reason is None:
            report.branches_deleted.append(name)
        else:
            report.kept.append(reason)
    groups = [worktrees_dir(repo_root) / group_id] if group_id else list(worktrees_dir(repo_root).glob("*"))
    for folder in groups:
        _remove_empty_dirs(folder)
    return report


def _remove_empty_dirs(folder: Path) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            _remove_empty_dirs(child)
    try:
        folder.rmdir()
    except OSError:
        pass


async def release_group(
    repo_root: Path,
    group_id: str,
    *,
    failed: Collection[str],
    policy: KeepWorktrees | str = KeepWorktrees.FAILED,
) -> CleanReport:
    """After landing: remove the worktrees and branches :func:`keep_worktree` does not keep.

    The integration worktree and branch go too (their work is on the target).
    Branches are never forced: one whose commits are on no other branch (a
    failed task's) stays, and the report says so.  A failed task's branch is
    kept whatever the policy says about its worktree.
    """
    report = CleanReport()
    for kept in await kept_worktrees(repo_root, group_id):
        is_failed = kept.task_id is not None and kept.task_id in failed
        if kept.task_id is not None and keep_worktree(policy, failed=is_failed):
            continue
        why = await _remove(repo_root, kept.path)
        if why is not None:
            report.kept.append(f"{kept.path} has {why}")
            continue
        report.worktrees_removed.append(str(kept.path))
        if kept.branch is None or is_failed:
            continue
        reason = await delete_branch(repo_root, kept.branch)
        if reason is None:
            report.branches_deleted.append(kept.branch)
        else:
            report.kept.append(reason)
    await run_git(repo_root, "worktree", "prune", timeout=60)
    return report
