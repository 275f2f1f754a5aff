"""Commit-back: whatever an agent left in its worktree becomes a commit on its branch.

Run after every agent, the failed ones included, so that nothing an agent
wrote is ever lost.  The agent's own commits stay as they are; hooks never run
(``--no-verify`` skips pre-commit and commit-msg, and an empty hooks path skips
prepare-commit-msg too, which ``--no-verify`` does not): a repository's hooks
judge people's commits, and a hook that fails must not lose an agent's work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CommitError
from .events import EventSink, TaskCommitted, emit
from .git import identity_environment, run_git

__all__ = ("NO_HOOKS", "TaskCommit", "changed_files", "commit_message", "commit_task")

#: ``-c`` settings of every commit maestro makes: no hook of the repository runs.
NO_HOOKS = {"core.hooksPath": os.devnull}


@dataclass(frozen=True)
class TaskCommit:
    """A task's branch after commit-back: its tip, and the paths changed since ``base_sha``."""

    task_id: str
    branch: str
    head_sha: str
    changed_files: list[str]
    committed: bool  # True when maestro made a commit of leftover changes


def commit_message(task_id: str, title: str, group_id: str) -> str:
    """``<task_id>: <title>``, a blank line, and the ``Maestro-Group`` trailer (pure)."""
    subject = " ".join(title.split())
    subject = f"{task_id}: {subject}" if subject else task_id
    return f"{subject}\n\nMaestro-Group: {group_id}\n"


async def changed_files(path: Path, base_sha: str, head: str = "HEAD") -> list[str]:
    """Paths (relative to the work tree's top) that differ between ``base_sha`` and ``head``."""
    result = await run_git(path, "diff", "--name-only", "-z", "--no-renames", base_sha, head)
    return sorted(result.zsplit())


async def commit_task(
    path: Path,
    *,
    task_id: str,
    title: str,
    group_id: str,
    branch: str,
    base_sha: str,
    on_event: EventSink | None = None,
) -> TaskCommit:
    """Commit what the agent left in the worktree at ``path`` on ``branch``.

    :raises CommitError: the worktree is no longer on ``branch`` (the agent
        switched branches or detached HEAD), or is in the middle of a merge or
        rebase it left behind.
    :raises GitError: a git command failed.
    """
    head_ref = await run_git(path, "symbolic-ref", "-q", "HEAD", check=False, timeout=30)
    if head_ref.stdout.strip() != f"refs/heads/{branch}":
        where = head_ref.stdout.strip().removeprefix("refs/heads/") or "a detached HEAD"
        raise CommitError(f"{task_id}: the agent left its worktree on {where}, not on {branch}; its work is in {path}")
    await run_git(path, "add", "-A", timeout=600)
    staged = await run_git(path, "diff", "--cached", "--quiet", check=False, timeout=600)
    committed = False
    if staged.returncode == 1:
        env = await identity_environment(path)
        await run_git(
            path, "commit", "--no-verify", "--quiet", "-m", commit_message(task_id, title, group_id),
            env=env, config=NO_HOOKS, timeout=600,
        )  # fmt: skip
        committed = True
    elif staged.returncode != 0:
        raise CommitError(f"{task_id}: cannot tell what changed in {path}: {staged.stderr.strip()}")
    head = (await run_git(path, "rev-parse", "HEAD", timeout=30)).stdout.strip()
    files = await changed_files(path, base_sha, head)
    await emit(
        on_event,
        TaskCommitted(
            event="task_committed",
            task_id=task_id,
            branch=branch,
            head_sha=head,
            committed=committed,
            changed_files=files,
        ),
    )
    return TaskCommit(task_id, branch, head, files, committed)
