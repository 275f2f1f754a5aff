"""The group lock and the repository's tests lock: ``flock``, which the kernel frees when its holder dies.

A holder writes its pid, host and process start time into the lock file, so
that a reader can name who runs a group and a later coordinator can tell a
live holder from a reused pid.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiofiles
import aiofiles.os
import anyio

from .._files import file_kind
from ..errors import GroupBusyError, StateError
from ..models import utc_now
from ..runtime.procfs import process_start_time
from .fs import FILE_MODE

#: How long a group lock found taken is tried again before the group counts as busy.
_BUSY_RECHECK_SECONDS = 0.5
# --------------------------------------------------------------------------- locks

__all__ = ("GroupLock", "LockHolder", "TestsLock", "lock_holder")


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as the holder wrote it."""

    pid: int | None
    host: str | None = None
    acquired_at: str | None = None
    #: The record as written (for the proof that the pid is the coordinator: its start time).
    record: Mapping[str, object] = field(default_factory=dict)


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
        record=data if isinstance(data, dict) else {},
    )


def lock_holder(lock_path: Path) -> LockHolder | None:
    """The live holder of ``lock_path``, or None when nobody holds it.

    Asks the kernel (a non-blocking shared ``flock``), so a lock left behind by a
    dead process reads as free, whatever its file says.
    """
    try:  # O_NONBLOCK: a FIFO planted there must not block the open
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # no coordinator takes a lock that is not a regular file
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            what = "it is a symlink" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            raise StateError(f"cannot use the lock file {self.path}: {what}") from exc
        info = os.fstat(fd)
        # A FIFO, or a hard link to a file elsewhere (the pid record would overwrite it).
        problem = None if stat.S_ISREG(info.st_mode) else f"it is {file_kind(info.st_mode)}"
        if problem is None and info.st_nlink > 1:
            problem = "it has other hard links"
        if problem is not None:
            os.close(fd)
            raise StateError(f"cannot use the lock file {self.path}: {problem}, never written to")
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
