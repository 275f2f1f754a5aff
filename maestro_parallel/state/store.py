"""A group's files on disk: the journal (a group-commit writer), the snapshot, logs and prompts.

Layout under ``<repo_root>/.flow/maestro/``::

    config.toml                         optional configuration
    tests.lock                          held while any group of the repository runs its tests
    parallel_groups/<group_id>/
        events.jsonl                    the journal: one event a line, one write each
        metadata.json                   the snapshot, replaced atomically
        logs/<task_id>.log              agent output (and _refresh.log, _tests.log)
        prompts/<task_id>.md            the prompt each agent was given
        history/<timestamp>/            state set aside by --restart
        .lock                           held (flock) while a coordinator runs the group

The journal is the durable record; the snapshot is a cache of its fold (see
:mod:`maestro_parallel.events`).  Folders are ``0700`` and files ``0600``
because logs and prompts can hold secrets; no path is followed through a
symlink.  File I/O goes through aiofiles; the locks use ``flock``, which the
kernel releases when its holder dies, so a dead coordinator's lock is free.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import anyio
import anyio.to_thread

from .._paths import GROUPS_RELATIVE_PATH, MAESTRO_RELATIVE_PATH
from ..errors import StateError, ValidationError
from ..events import decode_journal, encode_event, replay
from ..markers import is_safe_task_id, is_valid_group_id
from ..models import GroupMetadata, utc_now
from .fs import (
    DIR_MODE,
    ends_torn,
    ensure_dir_async,
    open_journal,
    read_async,
    remove_stale_temp_files_async,
    write_atomic_async,
    write_many,
    write_many_async,
)
from .locks import GroupLock, LockHolder, TestsLock, lock_holder
from .safefs import OpenMode, UnsafePathError, check_state_chain, open_state_file
from .snapshot import parse_snapshot, snapshot_is_ahead

# --------------------------------------------------------------------------- the store

__all__ = ("GroupStore",)

#: A journal write (or a batch of prompts) up to this size is made on the event loop itself.
#: Appending a few kilobytes to a regular file costs microseconds; the hop to a worker thread and
#: back costs more than the write (measured: 480 hops were 0.15 s of a 1.1 s run of 1,000 agents
#: on two cores), and the threads hold the interpreter lock that each spawn takes back after vfork.
_INLINE_WRITE_BYTES = 64 * 1024
#: An inline write slower than this (a slow or remote disk) sends every later one to a worker thread.
_INLINE_WRITE_SECONDS = 0.005


def _open_journal_file(path: Path) -> io.FileIO:
    """The journal, opened for appending through :func:`~.fs.open_journal` (never a symlink or a FIFO)."""
    return io.FileIO(path, "ab", opener=open_journal)


_open_journal_async = aiofiles.os.wrap(_open_journal_file)
_write_async = aiofiles.os.wrap(io.FileIO.write)
_close_async = aiofiles.os.wrap(io.FileIO.close)


def _create_empty(path: Path) -> None:
    os.close(open_state_file(path, OpenMode.APPEND))


class GroupStore:
    """The files of one group.  Paths are checked: an invalid id never becomes a path."""

    def __init__(self, repo_root: str | os.PathLike[str], group_id: str) -> None:
        if not is_valid_group_id(group_id, allow_sequential=True):
            raise ValidationError(f"invalid group id: {group_id!r:.80}")
        self.repo_root = Path(repo_root)
        self.group_id = group_id
        self.maestro_dir = self.repo_root / MAESTRO_RELATIVE_PATH
        self.groups_dir = self.repo_root / GROUPS_RELATIVE_PATH
        self.dir = self.groups_dir / group_id
        self.journal_path = self.dir / "events.jsonl"
        self.snapshot_path = self.dir / "metadata.json"
        self.logs_dir = self.dir / "logs"
        self.prompts_dir = self.dir / "prompts"
        self.history_dir = self.dir / "history"
        self.lock_path = self.dir / ".lock"
        self.tests_lock_path = self.maestro_dir / "tests.lock"
        self._journal: io.FileIO | None = None
        self._torn = False
        #: Journal writes are made on the loop until one is slow (see ``_INLINE_WRITE_SECONDS``).
        self.inline_writes = True
        # The group commit of the journal (see append_event).
        self._pending: list[bytes] = []
        self._queued = 0  # lines ever queued
        self._done = 0  # lines written (or failed) so far
        self._writing = False
        self._written: anyio.Event | None = None
        self._failure: tuple[int, int, OSError] | None = None  # (first, last) line numbers, error
        #: Bytes appended to the journal by this store (the snapshot writer's measure of progress).
        self.journal_bytes = 0
        #: Size of the last snapshot this store wrote.
        self.snapshot_bytes = 0

    # paths -----------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """``logs/<name>.log``; ``name`` is a task id or ``_refresh`` / ``_tests``."""
        if not (is_safe_task_id(name) or name in ("_refresh", "_tests")):
            raise ValidationError(f"unsafe log name: {name!r:.80}")
        return self.logs_dir / f"{name}.log"

    def prompt_path(self, task_id: str) -> Path:
        if not is_safe_task_id(task_id):
            raise ValidationError(f"unsafe task id: {task_id!r:.80}")
        return self.prompts_dir / f"{task_id}.md"

    def relative(self, path: Path) -> str:
        """``path`` relative to the repository root, as results show it."""
        try:
            return path.relative_to(self.repo_root).as_posix()
        except ValueError:
            return str(path)

    def exists(self) -> bool:
        """Whether anything is stored: a snapshot, or a journal that is not empty."""
        try:
            return self.snapshot_path.exists() or os.lstat(self.journal_path).st_size > 0
        except OSError:
            return False

    def lock(self) -> GroupLock:
        """The group lock, to be held with ``async with`` while running the group."""
        return GroupLock(self.lock_path, self.group_id)

    def tests_lock(self) -> TestsLock:
        return TestsLock(self.tests_lock_path)

    def holder(self) -> LockHolder | None:
        """The live coordinator of this group, or None."""
        return lock_holder(self.lock_path)

    # writing -----------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the group's folders (``0700``), refusing symlinks planted in their place.

        Also removes the temp files of atomic writes that a killed coordinator
        left behind (call it with the group lock held).
        """
        await self.check_chain()
        for folder in (self.repo_root / MAESTRO_RELATIVE_PATH.parent, self.maestro_dir):
            await aiofiles.os.makedirs(folder, mode=DIR_MODE, exist_ok=True)
        for folder in (self.groups_dir, self.dir, self.logs_dir, self.prompts_dir):
            await ensure_dir_async(folder)
        await remove_stale_temp_files_async((self.dir, self.prompts_dir))

    async def check_chain(self) -> None:
        """Refuse a state folder of this group that is a symlink or not a folder (see ``check_state_chain``)."""
        await anyio.to_thread.run_sync(check_state_chain, self.repo_root, self.group_id)

    async def prepare_lock_dir(self) -> None:
        """Create just enough folders to take the lock (refusing a symlinked state folder, naming it)."""
        await self.check_chain()
        await aiofiles.os.makedirs(self.maestro_dir, mode=DIR_MODE, exist_ok=True)
        for folder in (self.groups_dir, self.dir):
            await ensure_dir_async(folder)

    async def append_event(self, event: dict[str, Any]) -> None:
        """Append one event to the journal as one line, the moment it happens, in call order.

        A group commit: lines queued while a write is in flight go out together
        in the next write, so a burst of events costs one write, not one each;
        every caller returns once its own line is written.  A small batch is
        written on the loop while such writes stay fast, a big one (or any after
        a slow one) in a worker thread.  A line is never split across writes.
        A write cut short (a full disk, ``RLIMIT_FSIZE``) is continued, so that
        the error raised is the real one (``File too large``, ``No space left on
        device``); after a failure the next line starts on a line of its own
        rather than being glued to a torn one.
        """
        mine = self.queue_event(event)
        await self._wait_written(mine)

    def queue_event(self, event: dict[str, Any]) -> int:
        """Queue one event for the journal without waiting; its line number.

        :meth:`flush_events` (or any later :meth:`append_event`) writes it; the
        coordinator runs a writer task that does so at once, so that a burst of
        events never waits for the disk one by one.
        """
        self._pending.append(encode_event(event))
        self._queued += 1
        return self._queued

    async def flush_events(self) -> None:
        """Write every queued event; :class:`OSError` when one of them could not be written."""
        await self._wait_written(self._queued)

    async def _wait_written(self, mine: int) -> None:
        while self._done < mine:
            if self._writing:
                if self._written is None:
                    self._written = anyio.Event()
                await self._written.wait()
            else:
                await self._write_pending()
            if self._failure is not None and self._failure[0] <= mine <= self._failure[1]:
                raise self._failure[2]

    async def _write_pending(self) -> None:
        self._writing = True
        batch, first, last = self._pending, self._done + 1, self._queued
        self._pending = []
        try:
            if self._journal is None:
                self._journal = await _open_journal_async(self.journal_path)
                self._torn = await ends_torn(self.journal_path)
            journal = self._journal
            data = b"".join(batch)
            if self._torn:
                data = b"\n" + data  # a writer died or failed mid-line: never glue an event onto it
                self._torn = False
            view = memoryview(data)
            try:
                while view:
                    if self.inline_writes and len(view) <= _INLINE_WRITE_BYTES:
                        started = time.perf_counter()
                        written = journal.write(view)
                        self._note_inline_write(started)
                    else:
                        written = await _write_async(journal, view)
                    view = view[written or 0 :]
            finally:
                self.journal_bytes += len(data) - len(view)
                if view:
                    self._torn = True  # perhaps a part of it went in
        except OSError as exc:
            self._failure = (first, last, exc)
        except BaseException:
            self._torn = True  # cancelled while the worker thread may still be writing
            raise
        finally:
            self._done = last
            self._writing = False
            if self._written is not None:
                self._written.set()
                self._written = None

    async def close(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            with anyio.CancelScope(shield=True):
                await _close_async(journal)

    async def write_snapshot(self, meta: GroupMetadata) -> None:
        """Replace ``metadata.json`` atomically (temp file in the same folder, fsync, rename)."""
        # Compact: json's C encoder only serves indent=None, and a big group's snapshot is
        # encoded on the event loop (``maestro-parallel status`` prints it for people).
        data = json.dumps(meta.to_dict(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        await write_atomic_async(self.snapshot_path, data)
        self.snapshot_bytes = len(data)

    async def sync_snapshot(self, meta: GroupMetadata) -> bool:
        """Rewrite ``metadata.json`` when it lags behind ``meta``; True when it was rewritten.

        A coordinator killed after journaling its last event but before its last
        snapshot leaves a ``metadata.json`` that says ``in_progress`` forever,
        although the journal says the run ended.  Call it with the group lock
        held.  A snapshot that cannot be read or written is left as it is.  The
        temp files of a writer killed mid-write go too.
        """
        await remove_stale_temp_files_async((self.dir, self.prompts_dir))
        try:
            current = await self.read_snapshot()
        except (StateError, OSError):
            current = None
        if current is not None and current.to_dict() == meta.to_dict():
            return False
        try:
            await self.write_snapshot(meta)
        except OSError:
            return False
        return True

    async def write_private(self, path: Path, text: str) -> None:
        """Write a private file (a prompt) atomically."""
        await write_atomic_async(path, text.encode("utf-8", "replace"), fsync=False)

    async def write_prompts(self, prompts: Sequence[tuple[Path, str]]) -> list[OSError | None]:
        """Write many prompts at once; each entry's error, or None.

        Like a journal append, a small batch is written on the loop while such
        writes stay fast, a big one (or any after a slow write) in a worker thread.
        """
        items = [(path, text.encode("utf-8", "replace")) for path, text in prompts]
        if self.inline_writes and sum(len(data) for _, data in items) <= _INLINE_WRITE_BYTES:
            started = time.perf_counter()
            errors = write_many(items)
            self._note_inline_write(started)
            return errors
        return await write_many_async(items)

    def _note_inline_write(self, started: float) -> None:
        """A write made on the loop took too long: make every later one in a worker thread."""
        if time.perf_counter() - started > _INLINE_WRITE_SECONDS:
            self.inline_writes = False

    async def set_aside(self) -> Path | None:
        """Move the stored state into ``history/<timestamp>/`` (for ``--restart``)."""
        await self.close()  # later events go to a fresh journal, not the one set aside
        parts = [p for p in (self.journal_path, self.snapshot_path, self.logs_dir, self.prompts_dir) if p.exists()]
        if not parts:
            return None
        await ensure_dir_async(self.history_dir)
        stamp = utc_now().replace(":", "-")
        target = self.history_dir / stamp
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.history_dir / f"{stamp}-{suffix}"
        await ensure_dir_async(target)
        for part in parts:
            await aiofiles.os.rename(part, target / part.name)
            if part == self.journal_path:
                # A fresh, empty journal before the snapshot goes: a reader never finds the
                # group with neither file (it reads as nothing stored until the new run writes).
                await anyio.to_thread.run_sync(_create_empty, self.journal_path)
        return target

    # reading -----------------------------------------------------------------

    async def read_snapshot(self) -> GroupMetadata | None:
        """The snapshot, None when absent; :class:`StateError` when it cannot be used."""
        data = await read_async(self.snapshot_path)
        if data is None:
            return None
        return parse_snapshot(data, self.snapshot_path, self.group_id)

    async def read_events(self) -> tuple[list[dict[str, Any]], int]:
        data = await read_async(self.journal_path)
        return decode_journal(data) if data else ([], 0)

    async def load(self) -> GroupMetadata | None:
        """The group's state: the snapshot with the journal replayed over it.

        A corrupt snapshot is rebuilt from the journal; only when neither can be
        used is this an error.
        """
        events, _ = await self.read_events()
        try:
            snapshot = await self.read_snapshot()
        except UnsafePathError:
            raise  # a folder, FIFO or symlink in its place is not damage to rebuild over: refuse, naming it
        except StateError:
            if not events:
                raise
            snapshot = None
        if not events:
            return snapshot
        if snapshot is not None and snapshot_is_ahead(snapshot, events):
            return snapshot  # the journal lost the end of the run the snapshot records
        return replay(self.group_id, events, base=snapshot)
