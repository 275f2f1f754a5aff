"""A group's files on disk: the journal, the snapshot, the locks, logs and prompts.

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

import errno
import fcntl
import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import anyio

from ..errors import GroupBusyError, StateError, ValidationError
from ..events import decode_journal, encode_event, replay
from ..markers import is_safe_task_id, is_valid_group_id
from ..models import GroupMetadata, utc_now
from ..runtime.process import process_start_time

__all__ = (
    "GROUPS_RELATIVE_PATH",
    "GroupLock",
    "GroupStore",
    "LockHolder",
    "SnapshotWriter",
    "StoredGroup",
    "TestsLock",
    "list_group_ids",
    "lock_holder",
    "read_stored_group",
    "read_stored_groups",
)

MAESTRO_RELATIVE_PATH = Path(".flow/maestro")
GROUPS_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "parallel_groups"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
#: How long a group lock found taken is tried again before the group counts as busy.
_BUSY_RECHECK_SECONDS = 0.5


def _nofollow_opener(flags: int) -> Callable[[str, int], int]:
    def opener(path: str, mode_flags: int) -> int:
        return os.open(path, mode_flags | flags | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)

    return opener


_OPEN_NOFOLLOW = _nofollow_opener(0)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` as a private folder; refuse a symlink or a file in its place."""
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise StateError(f"refusing to use {path}: it is not a plain folder (a symlink?)") from None
        return
    os.chmod(path, _DIR_MODE)  # mkdir's mode is filtered by the umask


def _write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    ``fsync`` makes it durable across a machine crash too (the snapshot); a prompt, rewritten
    by the next run anyway, needs only the rename's atomicity.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _remove_stale_temp_files(folders: tuple[Path, ...]) -> None:
    """Remove ``.<name>.<pid>.<ns>.tmp`` files of :func:`_write_atomic` whose writer is gone.

    A writer killed between creating its temp file and renaming it leaves the
    file behind; the target itself was never touched.
    """
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            parts = name.split(".")
            if not (name.startswith(".") and name.endswith(".tmp") and len(parts) >= 5 and parts[-3].isdigit()):
                continue
            pid = int(parts[-3])
            if pid != os.getpid() and process_start_time(pid) is not None:
                continue  # its writer still lives
            try:
                os.unlink(folder / name)
            except OSError:
                pass


def _read_nofollow(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it does not exist; a symlink is an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"refusing to read {path}: it is a symlink") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _last_byte_is_not_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:  # empty or missing: nothing to repair
        return False


_ends_torn = aiofiles.os.wrap(_last_byte_is_not_newline)
def _write_many(items: list[tuple[Path, bytes]]) -> list[OSError | None]:
    errors: list[OSError | None] = []
    for path, data in items:
        try:
            _write_atomic(path, data, fsync=False)
        except OSError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    return errors


_write_many_async = aiofiles.os.wrap(_write_many)
_ensure_dir_async = aiofiles.os.wrap(_ensure_dir)
_write_atomic_async = aiofiles.os.wrap(_write_atomic)
_read_async = aiofiles.os.wrap(_read_nofollow)
_remove_stale_temp_files_async = aiofiles.os.wrap(_remove_stale_temp_files)


# --------------------------------------------------------------------------- locks


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as the holder wrote it."""

    pid: int | None
    host: str | None = None
    acquired_at: str | None = None


def _read_holder(fd: int) -> LockHolder:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return LockHolder(pid=None)
    pid = data.get("pid") if isinstance(data, dict) else None
    return LockHolder(
        pid=pid if isinstance(pid, int) else None,
        host=data.get("host") if isinstance(data, dict) else None,
        acquired_at=data.get("acquired_at") if isinstance(data, dict) else None,
    )


def lock_holder(lock_path: Path) -> LockHolder | None:
    """The live holder of ``lock_path``, or None when nobody holds it.

    Asks the kernel (a non-blocking shared ``flock``), so a lock left behind by a
    dead process reads as free, whatever its file says.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class _FileLock:
    """An exclusive ``flock`` on a file, with the holder's pid written into it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def _try_acquire(self) -> LockHolder | None:
        """Take the lock if free; return the holder when it is not.

        A lock file that cannot be opened (a symlink planted in its place, a folder,
        a full disk) is a :class:`StateError`, never a bare ``OSError``.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        except OSError as exc:
            what = "it is a symlink" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise StateError(f"cannot use the lock file {self.path}: {what}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            return holder
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "start_time": process_start_time(os.getpid()),
            "host": socket.gethostname(),
            "acquired_at": utc_now(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        self._fd = fd
        return None

    async def _acquire_shielded(self) -> LockHolder | None:
        """:meth:`_try_acquire` in a worker thread, shielded: the call is quick, and a
        cancellation while it runs would otherwise lose a lock the thread then takes."""
        with anyio.CancelScope(shield=True):
            holder = await aiofiles.os.wrap(self._try_acquire)()
        return holder

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class GroupLock(_FileLock):
    """The group's ``.lock``: one coordinator per group, refused with the holder's pid."""

    def __init__(self, path: Path, group_id: str) -> None:
        super().__init__(path)
        self.group_id = group_id

    async def __aenter__(self) -> GroupLock:
        # A reader asking lock_holder() holds a shared flock for an instant, which
        # looks like a holder: only a lock still taken after a short while is busy.
        deadline = time.monotonic() + _BUSY_RECHECK_SECONDS
        while True:
            holder = await self._acquire_shielded()
            if holder is None:
                return self
            if time.monotonic() >= deadline:
                break
            await anyio.sleep(0.01)
        who = f"pid {holder.pid}" if holder.pid is not None else "an unknown process"
        raise GroupBusyError(
            f"group {self.group_id} is being run by another coordinator ({who})",
            group_id=self.group_id,
            holder_pid=holder.pid,
        )

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class TestsLock(_FileLock):
    """The repository's ``tests.lock``: test suites of different groups never overlap.

    Waiting polls a non-blocking ``flock`` so that the wait can be cancelled.
    """

    async def __aenter__(self) -> TestsLock:
        delay = 0.05
        while await self._acquire_shielded() is not None:
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


# --------------------------------------------------------------------------- the store


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
        self._journal: Any = None
        self._torn = False
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
        return self.snapshot_path.exists() or self.journal_path.exists()

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
        for folder in (self.repo_root / ".flow", self.maestro_dir):
            await aiofiles.os.makedirs(folder, mode=_DIR_MODE, exist_ok=True)
        for folder in (self.groups_dir, self.dir, self.logs_dir, self.prompts_dir):
            await _ensure_dir_async(folder)
        await _remove_stale_temp_files_async((self.dir, self.prompts_dir))

    async def prepare_lock_dir(self) -> None:
        """Create just enough folders to take the lock."""
        await aiofiles.os.makedirs(self.maestro_dir, mode=_DIR_MODE, exist_ok=True)
        for folder in (self.groups_dir, self.dir):
            await _ensure_dir_async(folder)

    async def append_event(self, event: dict[str, Any]) -> None:
        """Append one event to the journal as one line, the moment it happens, in call order.

        A group commit: lines queued while a write is in flight go out together
        in the next write, so a burst of events costs one worker-thread hop,
        not one each; every caller returns once its own line is written.  A
        line is never split across writes.  A write cut short (a full disk,
        ``RLIMIT_FSIZE``) is continued, so that the error raised is the real one
        (``File too large``, ``No space left on device``); after a failure the
        next line starts on a line of its own rather than being glued to a torn one.
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
                self._journal = await aiofiles.open(
                    self.journal_path, "ab", buffering=0, opener=_OPEN_NOFOLLOW
                )
                self._torn = await _ends_torn(self.journal_path)
            data = b"".join(batch)
            if self._torn:
                data = b"\n" + data  # a writer died or failed mid-line: never glue an event onto it
                self._torn = False
            view = memoryview(data)
            try:
                while view:
                    written = await self._journal.write(view)
                    view = view[written:]
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
                await journal.close()

    async def write_snapshot(self, meta: GroupMetadata) -> None:
        """Replace ``metadata.json`` atomically (temp file in the same folder, fsync, rename)."""
        # Compact: json's C encoder only serves indent=None, and a big group's snapshot is
        # encoded on the event loop (``maestro-parallel status`` prints it for people).
        data = json.dumps(meta.to_dict(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        await _write_atomic_async(self.snapshot_path, data)
        self.snapshot_bytes = len(data)

    async def sync_snapshot(self, meta: GroupMetadata) -> bool:
        """Rewrite ``metadata.json`` when it lags behind ``meta``; True when it was rewritten.

        A coordinator killed after journaling its last event but before its last
        snapshot leaves a ``metadata.json`` that says ``in_progress`` forever,
        although the journal says the run ended.  Call it with the group lock
        held.  A snapshot that cannot be read or written is left as it is.  The
        temp files of a writer killed mid-write go too.
        """
        await _remove_stale_temp_files_async((self.dir, self.prompts_dir))
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
        await _write_atomic_async(path, text.encode("utf-8", "replace"), fsync=False)

    async def write_prompts(self, prompts: Sequence[tuple[Path, str]]) -> list[OSError | None]:
        """Write many prompts in one worker-thread job; each entry's error, or None."""
        return await _write_many_async([(path, text.encode("utf-8", "replace")) for path, text in prompts])

    async def set_aside(self) -> Path | None:
        """Move the stored state into ``history/<timestamp>/`` (for ``--restart``)."""
        await self.close()  # later events go to a fresh journal, not the one set aside
        parts = [p for p in (self.snapshot_path, self.journal_path, self.logs_dir, self.prompts_dir) if p.exists()]
        if not parts:
            return None
        await _ensure_dir_async(self.history_dir)
        stamp = utc_now().replace(":", "-")
        target = self.history_dir / stamp
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.history_dir / f"{stamp}-{suffix}"
        await _ensure_dir_async(target)
        for part in parts:
            await aiofiles.os.rename(part, target / part.name)
        return target

    # reading -----------------------------------------------------------------

    async def read_snapshot(self) -> GroupMetadata | None:
        """The snapshot, None when absent; :class:`StateError` when it cannot be used."""
        data = await _read_async(self.snapshot_path)
        if data is None:
            return None
        return _parse_snapshot(data, self.snapshot_path, self.group_id)

    async def read_events(self) -> tuple[list[dict[str, Any]], int]:
        data = await _read_async(self.journal_path)
        return decode_journal(data) if data else ([], 0)

    async def load(self) -> GroupMetadata | None:
        """The group's state: the snapshot with the journal replayed over it.

        A corrupt snapshot is rebuilt from the journal; only when neither can be
        used is this an error.
        """
        events, _ = await self.read_events()
        try:
            snapshot = await self.read_snapshot()
        except StateError:
            if not events:
                raise
            snapshot = None
        if not events:
            return snapshot
        return replay(self.group_id, events, base=snapshot)


def _parse_snapshot(data: bytes, path: Path, group_id: str) -> GroupMetadata:
    try:
        meta = GroupMetadata.from_dict(json.loads(data))
    except RecursionError:
        raise StateError(f"{path} is unreadable: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and ValidationError are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StateError(f"{path} is unreadable: {reason}") from None
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
    has grown by a quarter of the last snapshot's size (or ``max_lag`` seconds have passed): the
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
            or grown * 4 >= self._store.snapshot_bytes
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


# --------------------------------------------------------------------------- readers


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
            and self.metadata.status.value in ("in_progress", "pending")
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
        return StoredGroup(group_id, None, f"group {group_id} has no metadata.json or events.jsonl", holder)
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
