"""The built-in project digest: the refresh's "current project state" without a model call.

The default refresh runs ``claude -p /flow:summary``; in a repository that defines no such command
the real CLI does not summarise anything (older versions print ``Unknown command: /flow:summary``
and exit 0, newer ones send the words to the model as a prompt).  So when ``/flow:summary`` is not
defined (``.claude/commands/flow/summary.md`` in the repository or home), and under the codex
preset, the refresh is this digest: what git and maestro's own state already know, gathered in
milliseconds — branch and recent commits, working-tree state, the plan's groups and statuses, what
earlier groups completed, and the group's own tasks.

:func:`format_digest` and :func:`refresh_output_problem` are pure; :func:`gather_digest` only runs
git and reads metadata files.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .._paths import GROUPS_RELATIVE_PATH, MAESTRO_RELATIVE_PATH
from ..errors import StateError
from ..models import TaskMetadata
from ..state.fs import read_nofollow

__all__ = (
    "DEFAULT_REFRESH_COMMAND",
    "SUMMARY_COMMAND_RELATIVE",
    "SUMMARY_COMMAND_TEXT",
    "Digest",
    "GroupSummary",
    "format_digest",
    "gather_digest",
    "refresh_output_problem",
    "summary_command_defined",
    "uses_builtin_digest",
)

DEFAULT_REFRESH_COMMAND = ("claude", "-p", "/flow:summary")
#: Where Claude Code finds the ``/flow:summary`` slash command, below the repository or home.
SUMMARY_COMMAND_RELATIVE = Path(".claude") / "commands" / "flow" / "summary.md"

#: The command file ``maestro-parallel init --summary-command`` writes.
SUMMARY_COMMAND_TEXT = """\
---
description: Summarise the project's current state for agents about to work on it in parallel
allowed-tools: Bash(git status:*), Bash(git log:*), Bash(git diff:*), Bash(git branch:*), Read, Glob, Grep
---
Summarise the current state of this repository for coding agents that are about to work on it at the
same time. Be factual and brief (at most 40 lines), no preamble:

- the branch, and what the last few commits changed;
- uncommitted work, if any;
- the layout: main packages or folders and what each holds;
- how to build and test, and whether the tests pass now if that is cheap to tell;
- conventions a newcomer must follow (style, error handling, where tests go);
- anything half-done or fragile that an agent could trip over.

Use git and read files; change nothing.
"""

_RECENT_COMMITS = 8
_MAX_CHANGED = 20
_MAX_TASKS = 50
_GIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class GroupSummary:
    """One group of the plan as its ``metadata.json`` records it."""

    group_id: str
    status: str
    created_at: str
    completed: list[str] = field(default_factory=list)   # ids of its completed tasks
    total: int = 0


@dataclass(frozen=True)
class Digest:
    """What the digest says, gathered; :func:`format_digest` turns it into text."""

    branch: str | None
    head: str | None
    commits: list[str]
    changes: list[str] | None          # ``git status --porcelain`` lines; None: not a git work tree
    groups: list[GroupSummary]
    group_id: str | None
    tasks: list[TaskMetadata]


# --------------------------------------------------------------------------- pure


def summary_command_defined(repo_root: Path, home: Path | None) -> bool:
    """True when ``/flow:summary`` is defined for Claude Code in the repository or in home."""
    folders = [repo_root] + ([home] if home is not None else [])
    return any((folder / SUMMARY_COMMAND_RELATIVE).is_file() for folder in folders)


def uses_builtin_digest(command: Sequence[str], preset: str, *, summary_defined: bool) -> bool:
    """True when the refresh should be the built-in digest instead of running ``command``.

    Only the default command is replaced: under the codex preset (which has no slash commands)
    always, under the others when ``/flow:summary`` is not defined.  A command the user chose runs.
    """
    if tuple(command) != DEFAULT_REFRESH_COMMAND:
        return False
    return preset == "codex" or not summary_defined


_CLAUDE_FAILURE_PREFIXES = ("unknown command", "unknown skill", "api error", "not logged in", "error:",
                            "invalid api key", "credit balance is too low")


def refresh_output_problem(output: str, *, claude: bool) -> str | None:
    """Why a refresh's output cannot be the project state, or None when it can.

    Empty output never can.  Under the claude preset, ``claude -p`` prints its failures as text and
    may exit 0 (``Unknown command: /flow:summary``): a first line that reports an error or an
    unknown command is a failure, and the line is the reason.
    """
    text = output.strip()
    if not text:
        return "the command printed nothing"
    if claude:
        first = text.splitlines()[0].strip()
        if first.lower().startswith(_CLAUDE_FAILURE_PREFIXES):
            return f"the command reported: {first[:200]}"
    return None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def format_digest(digest: Digest) -> str:
    """The digest as the prompts' "current project state" (Markdown, a few dozen lines)."""
    lines = ["Built-in project digest (git and maestro's records; no model summary).", ""]
    if digest.changes is None:
        lines.append("Repository: not a git work tree.")
    else:
        where = digest.branch or "detached HEAD"
        lines.append(f"Branch: {where}" + (f" at {digest.head}" if digest.head else " (no commits yet)"))
        if digest.commits:
            lines += ["", "Recent commits:", *(f"- {c}" for c in digest.commits)]
        if digest.changes:
            shown = digest.changes[:_MAX_CHANGED]
            hidden = len(digest.changes) - len(shown)
            lines += ["", f"Working tree: {_plural(len(digest.changes), 'uncommitted change')}:",
                      *(f"- {c}" for c in shown)] + ([f"- ... and {hidden} more"] if hidden else [])
        else:
            lines += ["", "Working tree: clean."]
    others = [g for g in digest.groups if g.group_id != digest.group_id]
    if others:
        lines += ["", "Parallel groups of the plan (oldest first):"]
        for group in others:
            done = f", {len(group.completed)}/{group.total} tasks completed" if group.total else ""
            lines.append(f"- {group.group_id}: {group.status}{done}")
        finished = [g for g in others if g.status == "completed" and g.completed]
        if finished:
            lines += ["", "Completed by earlier groups:"]
            for group in finished:
                shown = group.completed[:_MAX_TASKS]
                more = f" and {len(group.completed) - len(shown)} more" if len(group.completed) > len(shown) else ""
                lines.append(f"- {group.group_id}: {', '.join(shown)}{more}")
    if digest.tasks:
        label = f"This group ({digest.group_id})" if digest.group_id else "This group"
        lines += ["", f"{label}: {_plural(len(digest.tasks), 'task')} running in parallel:"]
        lines += [f"- {t.task_id}: {t.title or '(untitled)'}" for t in digest.tasks[:_MAX_TASKS]]
        if len(digest.tasks) > _MAX_TASKS:
            lines.append(f"- ... and {len(digest.tasks) - _MAX_TASKS} more")
    return "\n".join(lines) + "\n"


def parse_group(text: str) -> GroupSummary | None:
    """A :class:`GroupSummary` from a ``metadata.json`` document; None when it is not one."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("group_id"), str):
        return None
    results = [r for r in data.get("results") or [] if isinstance(r, dict)]
    completed = [str(r.get("task_id")) for r in results if r.get("status") == "completed"]
    tasks = data.get("tasks")
    return GroupSummary(data["group_id"], str(data.get("status") or "pending"), str(data.get("created_at") or ""),
                        completed, len(results) or (len(tasks) if isinstance(tasks, list) else 0))


# --------------------------------------------------------------------------- I/O


async def _git(repo_root: Path, *args: str) -> str | None:
    """stdout of one git call, or None when git fails, is missing or takes too long."""
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    with anyio.move_on_after(_GIT_TIMEOUT):
        try:
            result = await anyio.run_process(["git", "-C", str(repo_root), *args], check=False, env=env,
                                             stdin=subprocess.DEVNULL)
        except OSError:
            return None
        if result.returncode == 0:
            return result.stdout.decode("utf-8", "replace")
    return None


def _read_groups(folder: Path) -> list[GroupSummary]:
    groups: list[GroupSummary] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return groups
    for entry in entries:
        try:
            data = read_nofollow(entry / "metadata.json")  # never a FIFO or a symlink planted there
            if data is None:
                continue
            text = data.decode("utf-8")
        except (OSError, StateError, UnicodeDecodeError):
            continue
        group = parse_group(text)
        if group is not None:
            groups.append(group)
    groups.sort(key=lambda g: g.created_at)
    return groups


async def gather_digest(repo_root: Path, *, group_id: str | None = None,
                        tasks: Iterable[TaskMetadata] = ()) -> Digest:
    """Ask git and read the groups' metadata; never raises for a missing git or an odd repository."""
    inside = await _git(repo_root, "rev-parse", "--is-inside-work-tree")
    branch = head = None
    commits: list[str] = []
    changes: list[str] | None = None
    if inside is not None and inside.strip() == "true":
        branch = ((await _git(repo_root, "branch", "--show-current")) or "").strip() or None
        head = ((await _git(repo_root, "rev-parse", "--short", "HEAD")) or "").strip() or None
        if head:
            log = await _git(repo_root, "log", f"-{_RECENT_COMMITS}", "--format=%h %s (%cr)")
            commits = (log or "").splitlines()
        status = await _git(repo_root, "status", "--porcelain=v1", "--untracked-files=normal", "--", ".",
                            f":(exclude){MAESTRO_RELATIVE_PATH.as_posix()}")
        changes = [line for line in (status or "").splitlines() if line.strip()]
    groups = await anyio.to_thread.run_sync(_read_groups, repo_root / GROUPS_RELATIVE_PATH)
    return Digest(branch, head, commits, changes, groups, group_id, list(tasks))
