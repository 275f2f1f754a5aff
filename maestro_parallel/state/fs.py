"""File primitives for ``.flow/maestro``: private modes, no symlink followed, atomic replaces.

Folders are ``0700`` and files ``0600`` because logs and prompts can hold
secrets; no path is followed through a symlink.  Each primitive is a plain
blocking function with an ``*_async`` twin run in a worker thread (aiofiles).
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import aiofiles
import aiofiles.os

from ..errors import StateError
from ..runtime.procfs import process_start_time
from .safefs import OpenMode, UnsafePathError, open_state_file, open_state_folder, read_tail

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_dir(path: Path) -> None:
    """Create ``path`` as a private folder; refuse a symlink or a file in its place."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError as exc:
        if path.is_symlink() or not path.is_dir():
            raise StateError(f"refusing to use {path}: it is not a plain folder (a symlink?)") from exc
        return
    os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    ``fsync`` makes it durable across a machine crash too (the snapshot); a prompt, rewritten
    by the next run anyway, needs only the rename's atomicity.  The temp file and the rename
    are relative to the folder opened through safefs: a folder swapped for a symlink meanwhile
    (an agent can write ``prompts/``) redirects nothing.
    """
    dir_fd = _open_folder(path.parent)
    try:
        _write_atomic_at(dir_fd, path.name, data, fsync=fsync)
    finally:
        os.close(dir_fd)


def _open_folder(folder: Path) -> int:
    try:
        return open_state_folder(folder)
    except UnsafePathError as exc:
        raise OSError(errno.ELOOP, str(exc), str(folder)) from exc


def _write_fully(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a file near its limit writes short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_atomic_at(dir_fd: int, name: str, data: bytes, *, fsync: bool) -> None:
    """:func:`write_atomic` in the folder open as ``dir_fd``."""
    tmp = f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            _write_fully(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def remove_stale_temp_files(folders: tuple[Path, ...]) -> None:
    """Remove ``.<name>.<pid>.<ns>.tmp`` files of :func:`write_atomic` whose writer is gone.

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


def read_nofollow(path: Path) -> bytes | None:
    """The bytes of the state file ``path``, or None when it does not exist.

    Opened through :func:`~.safefs.open_state_file`: a symlink anywhere below the
    repository root, a folder, a FIFO or a device in its place is a
    :class:`~.safefs.UnsafePathError` naming the path, never a hang or a read of
    something else.
    """
    try:
        fd = open_state_file(path)
    except FileNotFoundError:
        return None
    try:
        return read_tail(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def read_tail_nofollow(path: Path, max_bytes: int) -> tuple[bytes, int] | None:
    """The last ``max_bytes`` of the state file or log ``path`` and its size; None when it is missing or unsafe.

    For the readers that show a little of a file (a report, the live table): opened like
    :func:`read_nofollow`, so a FIFO, a device or a symlink planted there reads as nothing.
    """
    try:
        fd = open_state_file(path)
    except (OSError, StateError):
        return None
    try:
        return read_tail(fd, max_bytes), os.fstat(fd).st_size
    finally:
        os.close(fd)


def last_byte_is_not_newline(path: Path) -> bool:
    try:
        fd = open_state_file(path)
    except (OSError, StateError):  # missing: nothing to repair; unsafe: the append refuses it
        return False
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    finally:
        os.close(fd)


def open_journal(path: str, flags: int) -> int:
    """The journal's opener (``aiofiles.open(..., opener=open_journal)``): appending, through safefs.

    An unsafe journal (a folder, a symlink) is an ``OSError`` naming it, like a full disk.
    """
    try:
        return open_state_file(path, OpenMode.APPEND)
    except UnsafePathError as exc:
        raise OSError(errno.EINVAL, str(exc), path) from exc


ends_torn = aiofiles.os.wrap(last_byte_is_not_newline)


def _write_new_or_replace_at(dir_fd: int, name: str, data: bytes) -> None:
    """A file no one reads before it is whole (a prompt, read by the agent launched after it).

    Absent, it is created and written in place: no temp file and no rename, half the
    folder updates of a first run.  Present (a retry, a resume), or anything else in
    its place (``O_EXCL`` follows no symlink), it is replaced atomically.
    """
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
    except FileExistsError:
        _write_atomic_at(dir_fd, name, data, fsync=False)
        return
    try:
        try:
            _write_fully(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        try:  # a full disk: no half prompt is left for the next run to mistake for a whole one
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def write_many(items: list[tuple[Path, bytes]]) -> list[OSError | None]:
    """Write many files no one reads before they are whole (prompts); each folder is walked once."""
    errors: list[OSError | None] = []
    folders: dict[Path, int | OSError] = {}
    try:
        for path, data in items:
            folder = folders.get(path.parent)
            if folder is None:
                try:
                    folder = folders[path.parent] = _open_folder(path.parent)
                except OSError as exc:
                    folder = folders[path.parent] = exc
            if isinstance(folder, OSError):
                errors.append(folder)
                continue
            try:
                _write_new_or_replace_at(folder, path.name, data)
            except OSError as exc:
                errors.append(exc)
            else:
                errors.append(None)
    finally:
        for folder in folders.values():
            if isinstance(folder, int):
                os.close(folder)
    return errors


write_many_async = aiofiles.os.wrap(write_many)
ensure_dir_async = aiofiles.os.wrap(ensure_dir)
write_atomic_async = aiofiles.os.wrap(write_atomic)
read_async = aiofiles.os.wrap(read_nofollow)
remove_stale_temp_files_async = aiofiles.os.wrap(remove_stale_temp_files)
