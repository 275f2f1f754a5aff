"""Reading groups without running them: what ``status``, ``list``, ``wait`` and recovery see.

A reader takes no lock; a group left ``in_progress`` whose lock is free is
reported stale (its coordinator is gone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from .._paths import GROUPS_RELATIVE_PATH
from ..errors import StateError
from ..markers import is_valid_group_id
from ..models import GroupMetadata, TaskStatus
from .locks import LockHolder
from .store import GroupStore

# --------------------------------------------------------------------------- readers

__all__ = ("StoredGroup", "list_group_ids", "read_stored_group", "read_stored_groups")


@dataclass
class StoredGroup:
    """What a reader (``status``, ``list``, ``wait``) sees of a group."""

    group_id: str
    metadata: GroupMetadata | None
    error: str | None
    holder: LockHolder | None

    @property
    def stale(self) -> bool:
        """Left ``in_progress`` (or ``pending``) by a coordinator that is gone."""
        return (
            self.metadata is not None
            and self.metadata.status.value in (TaskStatus.IN_PROGRESS, TaskStatus.PENDING)
            and self.holder is None
        )

    def to_dict(self) -> dict[str, Any]:
        if self.metadata is None:
            return {"group_id": self.group_id, "error": self.error}
        data = self.metadata.to_dict()
        data["stale"] = self.stale
        if self.holder is not None and self.holder.pid is not None:
            data["coordinator_pid"] = self.holder.pid
        return data


async def read_stored_group(repo_root: str | os.PathLike[str], group_id: str) -> StoredGroup | None:
    """Read a group for display; None when nothing is stored for it.

    Never raises for a damaged group: the damage is in ``error``.
    """
    store = GroupStore(repo_root, group_id)
    if not store.dir.is_dir() or store.dir.is_symlink():
        return None
    holder = await aiofiles.os.wrap(store.holder)()
    try:
        meta = await store.load()
    except (StateError, OSError) as exc:
        return StoredGroup(group_id, None, str(exc), holder)
    if meta is None:
        # Neither file holds anything yet: a run cancelled in its first instant, or one just
        # set aside by --restart.  Nothing is stored; a live holder is starting it.
        return None
    return StoredGroup(group_id, meta, None, holder)


async def read_stored_groups(repo_root: str | os.PathLike[str]) -> list[StoredGroup]:
    """Every stored group as a reader sees it (unreadable ones with their error), newest first."""
    seen = [await read_stored_group(repo_root, gid) for gid in list_group_ids(repo_root)]
    groups = [g for g in seen if g is not None]
    groups.sort(key=lambda g: g.metadata.created_at if g.metadata else "", reverse=True)
    return groups


def list_group_ids(repo_root: str | os.PathLike[str]) -> list[str]:
    """The ids of the groups stored under the repository (valid ids only)."""
    folder = Path(repo_root) / GROUPS_RELATIVE_PATH
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(
        name
        for name in names
        if is_valid_group_id(name, allow_sequential=True) and not (folder / name).is_symlink()
    )
