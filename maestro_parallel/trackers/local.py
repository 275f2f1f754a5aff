"""LocalTracker: tasks from a ``tasks.json`` file (or from the caller), state in the group store.

It never writes the tasks file.  A dependency is satisfied when the file marks
that task ``closed``/``completed``, or when a stored group of this repository
closed it; an unknown dependency blocks (fail closed).  Closing a task is
recorded in the group's own state (``"closed": true`` in its result).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import anyio.to_thread

from .._files import NotRegularFileError, file_kind, open_regular
from ..errors import TrackerError, ValidationError
from ..models import TaskStatus
from ..state.readers import list_group_ids
from ..state.store import GroupStore
from ..tasks import TaskRecord, loads_tasks

__all__ = ("LocalTracker", "blockers_of", "closed_in_stored_groups")


async def closed_in_stored_groups(repo_root: Path) -> set[str]:
    """Ids of tasks that a stored group of this repository completed and closed."""
    closed: set[str] = set()
    for group_id in list_group_ids(repo_root):
        try:
            meta = await GroupStore(repo_root, group_id).load()
        except Exception:  # a damaged group closes nothing; it is reported by `list`
            continue
        if meta is None:
            continue
        for result in meta.results:
            if result.get("closed") is True and result.get("status") == TaskStatus.COMPLETED:
                closed.add(result["task_id"])
    return closed


def blockers_of(
    tasks: Sequence[TaskRecord], known: Mapping[str, TaskRecord], closed_elsewhere: set[str]
) -> dict[str, list[str]]:
    """Pure readiness: each task's open blocking dependencies, plus a blocked parent.

    A dependency is satisfied when ``known`` marks it done or ``closed_elsewhere``
    holds it; anything else (open, or unknown) blocks.  A task whose parent is
    itself blocked is blocked by that parent, as ``bd ready`` computes it.
    """
    memo: dict[str, list[str]] = {}

    def own_blockers(record: TaskRecord, seen: frozenset[str]) -> list[str]:
        if record.task_id in memo:
            return memo[record.task_id]
        blockers = [
            dep
            for dep in record.metadata.dependencies
            if dep not in closed_elsewhere and not (dep in known and known[dep].done)
        ]
        parent = known.get(record.parent) if record.parent else None
        if (
            parent is not None
            and parent.task_id not in seen
            and not parent.done
            and own_blockers(parent, seen | {record.task_id})
        ):
            blockers.append(parent.task_id)
        memo[record.task_id] = blockers
        return blockers

    return {record.task_id: own_blockers(record, frozenset()) for record in tasks}


#: A file's (device, inode, size, mtime): it changed when this did.
_FileKey = tuple[int, int, int, int]


def _read_if_changed(path: Path, known: _FileKey | None) -> tuple[_FileKey, bytes | None]:
    """The file's (device, inode, size, mtime) and its bytes, or None for them when that key is ``known``.

    Only a regular file is read: a FIFO (it would block this worker thread for good, and the
    program's exit with it) or a device put in its place is refused before a byte is read.
    """
    fd, info = open_regular(path)
    try:
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if key == known:
            return key, None
        return key, b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)


class LocalTracker:
    """A tracker over a tasks file, or over the tasks a caller hands in."""

    name = "local"

    def __init__(
        self,
        repo_root: str | os.PathLike[str],
        *,
        tasks_file: str | os.PathLike[str] | None = None,
        tasks: Iterable[TaskRecord] | None = None,
    ) -> None:
        self.repo_root = Path(repo_root)
        self.tasks_file = Path(tasks_file) if tasks_file is not None else None
        self._tasks = list(tasks) if tasks is not None else None
        #: The last parse of the tasks file and the (device, inode, size, mtime) it was parsed at.
        self._parsed: tuple[_FileKey, list[TaskRecord]] | None = None

    @classmethod
    def open_file(cls, repo_root: str | os.PathLike[str], path: Path) -> LocalTracker:
        """A tracker over the tasks file ``path``; a pipe (``<(...)``) is read once, here, never opened again.

        :raises FileNotFoundError: nothing is at ``path``.
        :raises ValidationError: a folder or a device is there, or the pipe's tasks are invalid.
        """
        mode = path.stat().st_mode
        if stat.S_ISFIFO(mode):
            with open(path, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
            return cls(repo_root, tasks=loads_tasks(text, source=str(path)))
        if not stat.S_ISREG(mode):
            raise ValidationError(f"tasks file {path}: it is {file_kind(mode)}, not a file")
        return cls(repo_root, tasks_file=path)

    async def load_tasks(self) -> list[TaskRecord]:
        """The tasks of the file, parsed again only when the file changed.

        One ``execute`` asks several times (the group, the blockers, the
        statuses while agents run); parsing a thousand tasks each time was a
        measurable part of the per-task cost.
        """
        if self.tasks_file is None:
            return list(self._tasks or [])
        known = self._parsed[0] if self._parsed is not None else None
        try:  # one uncancellable thread job: a cancelled poll can neither leak the file nor half-read it
            key, data = await anyio.to_thread.run_sync(_read_if_changed, self.tasks_file, known)
        except OSError as exc:
            hint = " (tasks may come on standard input: --tasks-file -)" if isinstance(exc, NotRegularFileError) else ""
            raise TrackerError(f"cannot read tasks file {self.tasks_file}: {exc.strerror or exc}{hint}") from exc
        if data is None:  # unchanged since the last parse
            assert self._parsed is not None
            return list(self._parsed[1])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{self.tasks_file}: not UTF-8 text (byte {exc.start})") from exc
        records = loads_tasks(text, source=str(self.tasks_file))
        self._parsed = (key, records)
        return list(records)

    async def fetch_statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        wanted = set(task_ids)
        try:
            records = await self.load_tasks()
        except ValidationError as exc:
            raise TrackerError(str(exc)) from exc
        return {r.task_id: r.tracker_status for r in records if r.task_id in wanted}

    async def find_blockers(self, tasks: Sequence[TaskRecord]) -> dict[str, list[str]]:
        known = {r.task_id: r for r in await self.load_tasks()}
        for record in tasks:
            known.setdefault(record.task_id, record)
        return blockers_of(tasks, known, await closed_in_stored_groups(self.repo_root))

    async def claim(self, task_ids: Sequence[str]) -> dict[str, str | None]:
        return {task_id: None for task_id in task_ids}

    async def close(self, task_ids: Sequence[str], reason: str) -> dict[str, str | None]:
        return {task_id: None for task_id in task_ids}
