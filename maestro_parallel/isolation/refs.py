"""Names of isolation's branches and folders (pure: no I/O).

Task ids may hold characters and patterns that git refuses in a ref
(``git check-ref-format``): ``:``, a leading ``.``, ``..``, a trailing ``.``
or ``.lock``.  :func:`encode_component` maps any string to a valid ref
component, reversibly, and leaves the common ids untouched:

- ``%`` becomes ``%25`` (so the mapping can be undone);
- ``:``, ``/``, ``\\``, space, ``~ ^ ? * [``, ``@{`` and control characters become
  ``%XX`` (upper-case hexadecimal of their UTF-8 bytes);
- a ``.`` that starts the component, follows another ``.``, ends it, or starts a
  final ``.lock`` becomes ``%2E``.

So ``bd-a3f2`` and ``proj-auth.1`` stay as they are, ``proj:auth.1`` becomes
``proj%3Aauth.1`` and ``x.lock`` becomes ``x%2Elock``; :func:`decode_component`
reverses it (``%XX`` back to its byte).  Branches:

- ``maestro/<group>/<task>``: a task's work;
- ``maestro/<group>/_attempts/<task>/<n>``: an earlier attempt's branch, kept aside;
- ``maestro/integrate/<group>``: the merge queue's integration branch.

The group id ``integrate`` is reserved (its task branches would share a folder
with every integration branch).  Folders, under the repository root:
``.flow/maestro/worktrees/<group>/<task>`` (the task id as it is: file names
may hold ``:``) and ``.flow/maestro/worktrees/<group>/_integration``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import IsolationError

__all__ = (
    "BRANCH_PREFIX",
    "INTEGRATION_DIR",
    "RESERVED_GROUP_IDS",
    "WORKTREES_DIR",
    "TaskBranch",
    "attempt_branch",
    "check_group_id",
    "decode_component",
    "encode_component",
    "group_worktrees_dir",
    "integration_branch",
    "integration_worktree_path",
    "parse_branch",
    "task_branch",
    "task_worktree_path",
    "worktrees_dir",
)

BRANCH_PREFIX = "maestro"
#: Where task worktrees live, relative to the repository root.
WORKTREES_DIR = Path(".flow") / "maestro" / "worktrees"
#: The integration worktree's folder name in a group's folder (task ids cannot start with ``_``).
INTEGRATION_DIR = "_integration"
_INTEGRATE = "integrate"
_ATTEMPTS = "_attempts"
RESERVED_GROUP_IDS = frozenset({_INTEGRATE})

_ALWAYS_ESCAPED = set(":/\\ ~^?*[%\x7f")


def _escape(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def encode_component(text: str) -> str:
    """Map ``text`` to a valid, reversible git ref component (see the module docstring)."""
    if not text:
        raise ValueError("an empty name cannot be a ref component")
    out: list[str] = []
    lock_dot = len(text) - 5 if text.endswith(".lock") else -1
    for index, char in enumerate(text):
        if (
            char in _ALWAYS_ESCAPED
            or ord(char) < 0x20
            or char == "{"
            and index > 0
            and text[index - 1] == "@"
            or char == "."
            and (index == 0 or text[index - 1] == "." or index == len(text) - 1 or index == lock_dot)
        ):
            out.append(_escape(char))
        else:
            out.append(char)
    encoded = "".join(out)
    return _escape("@") if encoded == "@" else encoded


_PERCENT = re.compile(r"(?:%[0-9A-F]{2})+")


def decode_component(component: str) -> str:
    """The inverse of :func:`encode_component`."""
    return _PERCENT.sub(lambda m: bytes.fromhex(m[0].replace("%", "")).decode("utf-8", "surrogateescape"), component)


def check_group_id(group_id: str) -> str:
    """Return ``group_id``, or raise :class:`IsolationError` for a reserved one."""
    if group_id in RESERVED_GROUP_IDS:
        raise IsolationError(f"group id {group_id!r} is reserved under worktree isolation: choose another name")
    return group_id


def task_branch(group_id: str, task_id: str) -> str:
    """``maestro/<group>/<task>``: the branch a task works on."""
    return f"{BRANCH_PREFIX}/{encode_component(check_group_id(group_id))}/{encode_component(task_id)}"


def attempt_branch(group_id: str, task_id: str, attempt: int) -> str:
    """``maestro/<group>/_attempts/<task>/<n>``: where an earlier attempt's branch is kept."""
    group = encode_component(check_group_id(group_id))
    return f"{BRANCH_PREFIX}/{group}/{_ATTEMPTS}/{encode_component(task_id)}/{attempt}"


def integration_branch(group_id: str) -> str:
    """``maestro/integrate/<group>``: the merge queue's branch."""
    return f"{BRANCH_PREFIX}/{_INTEGRATE}/{encode_component(check_group_id(group_id))}"


@dataclass(frozen=True)
class TaskBranch:
    """What a ``maestro/`` branch name says: its group, its task (None: integration), its attempt."""

    group_id: str
    task_id: str | None
    attempt: int | None = None


def parse_branch(branch: str) -> TaskBranch | None:
    """Read a branch name made by this module (``refs/heads/`` allowed); None for any other."""
    name = branch.removeprefix("refs/heads/")
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != BRANCH_PREFIX:
        return None
    if parts[1] == _INTEGRATE and len(parts) == 3:
        return TaskBranch(decode_component(parts[2]), None)
    if len(parts) == 3:
        return TaskBranch(decode_component(parts[1]), decode_component(parts[2]))
    if len(parts) == 5 and parts[2] == _ATTEMPTS and parts[4].isdigit():
        return TaskBranch(decode_component(parts[1]), decode_component(parts[3]), int(parts[4]))
    return None


def worktrees_dir(repo_root: Path) -> Path:
    """``<repo_root>/.flow/maestro/worktrees``."""
    return repo_root / WORKTREES_DIR


def group_worktrees_dir(repo_root: Path, group_id: str) -> Path:
    """``<repo_root>/.flow/maestro/worktrees/<group>``."""
    return worktrees_dir(repo_root) / group_id


def task_worktree_path(repo_root: Path, group_id: str, task_id: str) -> Path:
    """``<repo_root>/.flow/maestro/worktrees/<group>/<task>``."""
    if task_id.startswith(("_", ".")) or "/" in task_id or not task_id:
        raise ValueError(f"not a task id: {task_id!r}")
    return group_worktrees_dir(repo_root, group_id) / task_id


def integration_worktree_path(repo_root: Path, group_id: str) -> Path:
    """``<repo_root>/.flow/maestro/worktrees/<group>/_integration``."""
    return group_worktrees_dir(repo_root, group_id) / INTEGRATION_DIR
