"""The snapshot (``metadata.json``): how it is parsed, and a writer that coalesces its rewrites.

The journal is the durable record; the snapshot is a cache of its fold that
readers replay the journal over, so it may lag without losing anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import StateError
from ..models import GroupMetadata, TaskStatus

if TYPE_CHECKING:
    from .store import GroupStore

__all__ = ("SnapshotWriter", "parse_snapshot", "snapshot_is_ahead")

_FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED)


def snapshot_is_ahead(snapshot: GroupMetadata, events: Sequence[Mapping[str, Any]]) -> bool:
    """True when the snapshot holds the end of a run that the journal has lost.

    A journal cut short (a full disk mid-append, a file truncated by hand) that
    ends inside its last run, while the snapshot records that very run's end
    (final status, finished no earlier than the journal's last ``group_started``):
    replaying the journal over it would move it back to ``in_progress``.  A
    later run (its ``group_started`` after the snapshot's end) is replayed as usual.
    """
    if snapshot.status not in _FINAL or snapshot.completed_at is None:
        return False
    last_start: str | None = None  # the journal's last group_started ("" when it has no time)
    finished = False  # whether a group_finished follows it
    for event in events:
        name = event.get("event")
        if name == "group_started":
            at = event.get("at")
            last_start, finished = (at if isinstance(at, str) else ""), False
        elif name == "group_finished":
            finished = True
    if finished:
        return False  # the journal holds its last run's end: replay it
    if last_start is None:
        return True  # not even a run's start survived
    return bool(last_start) and last_start <= snapshot.completed_at


def parse_snapshot(data: bytes, path: Path, group_id: str) -> GroupMetadata:
    try:
        meta = GroupMetadata.from_dict(json.loads(data))
    except RecursionError as exc:
        raise StateError(f"{path} is unreadable: JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and ValidationError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StateError(f"{path} is unreadable: {reason}") from exc
    if meta.group_id != group_id:
        raise StateError(f"{path} belongs to group {meta.group_id!r}, not {group_id!r}")
    return meta


#: A snapshot this small is rewritten once a second whatever changed (it costs nothing).
_SMALL_SNAPSHOT = 64 * 1024


class SnapshotWriter:
    """Coalesces snapshot writes, so a group of N tasks costs O(N) bytes, not O(N²).

    :meth:`mark_dirty` is cheap and called on every change; :meth:`flush` writes
    at once (phase transitions, the final status).  :meth:`run`, started in the
    coordinator's task group, writes a changed snapshot at most once per
    ``interval`` — and, for a big group (a snapshot over 64 KiB), only once the journal
    has grown by half the last snapshot's size (or ``max_lag`` seconds have passed): the
    journal is the record and readers replay it over the snapshot, so a snapshot
    rewritten whole every second would cost O(N) bytes a second for nothing.
    """

    def __init__(
        self, store: GroupStore, meta: GroupMetadata, *, interval: float = 1.0, max_lag: float = 60.0
    ) -> None:
        self._store = store
        self._meta = meta
        self._interval = interval
        self._max_lag = max_lag
        self._dirty = False
        self._wake = anyio.Event()  # replaced only by run(), so it never waits on a stale one
        self._lock = anyio.Lock()
        self._journal_at_write = 0
        self._written_at = -math.inf
        self.writes = 0

    def mark_dirty(self) -> None:
        self._dirty = True
        self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            self._dirty = False
            self._journal_at_write = self._store.journal_bytes
            self._written_at = anyio.current_time()
            await self._store.write_snapshot(self._meta)
            self.writes += 1

    def _worth_writing(self) -> bool:
        grown = self._store.journal_bytes - self._journal_at_write
        return (
            self._store.snapshot_bytes <= _SMALL_SNAPSHOT
            or grown * 2 >= self._store.snapshot_bytes
            or anyio.current_time() - self._written_at >= self._max_lag
        )

    async def run(self) -> None:
        """Write the snapshot when it changed enough (see the class); runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await anyio.sleep(self._interval)
            if self._dirty:
                if self._worth_writing():
                    await self.flush()
                else:
                    self._wake.set()  # look again after the next interval
