"""Reading the logs the coordinator writes: their start, their end, and every line of an attempt.

Every log is opened through :func:`~.safefs.open_state_file`: an agent can swap
its log for a FIFO, a symlink (to ``/dev/zero``, to a file outside the
repository) or a hard link, or swap ``logs/`` itself; such a log reads as empty
and is never written.  The blocking work runs in a worker thread, so judging a
run never blocks the event loop, and reads are bounded, so it never holds a
whole log in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from ..agents import ResultScanner
from ..errors import StateError
from . import safefs
from .safefs import OpenMode, open_state_file

__all__ = (
    "append_bytes",
    "file_size",
    "last_line",
    "last_nonblank_line",
    "read_head",
    "read_tail",
    "replace_from",
    "scan_log",
)

#: How much of the end of a log is read to judge a run.
_TAIL_BYTES = 8 * 1024 * 1024
_SCAN_CHUNK = 1024 * 1024

_T = TypeVar("_T")


def _with_log(path: Path, mode: OpenMode, use: Callable[[int], _T], default: _T) -> _T:
    """``use`` the log open as a descriptor; ``default`` when it is missing, unsafe or unreadable."""
    try:
        fd = open_state_file(path, mode)
    except (OSError, StateError):
        return default
    try:
        return use(fd)
    except OSError:
        return default
    finally:
        os.close(fd)


def _head(fd: int, limit: int) -> bytes:
    pieces: list[bytes] = []
    for piece in safefs.iter_chunks(fd, end=min(os.fstat(fd).st_size, limit)):
        pieces.append(piece)
    return b"".join(pieces)[:limit]


async def read_head(path: Path, limit: int) -> str:
    data = await anyio.to_thread.run_sync(_with_log, path, OpenMode.READ, lambda fd: _head(fd, limit), b"")
    return data.decode("utf-8", "replace")


async def last_line(path: Path) -> str:
    tail = await anyio.to_thread.run_sync(_with_log, path, OpenMode.READ, lambda fd: safefs.read_tail(fd, 65536), b"")
    return last_nonblank_line(tail)[:500]


def last_nonblank_line(data: bytes) -> str:
    """The last line of ``data`` that is not blank, stripped ("" if none): what a log last said."""
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


async def file_size(path: Path) -> int:
    return await anyio.to_thread.run_sync(_with_log, path, OpenMode.READ, lambda fd: os.fstat(fd).st_size, 0)


def _append(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return True


async def append_bytes(path: Path, data: bytes) -> None:
    """Append ``data`` to the log; a log that is not safe to write (see the module) is left alone."""
    await anyio.to_thread.run_sync(_with_log, path, OpenMode.APPEND, lambda fd: _append(fd, data), False)


def _tail_after(fd: int, offset: int, size: int) -> bytes:
    end = os.fstat(fd).st_size
    start = max(offset, end - size)
    return b"".join(safefs.iter_chunks(fd, start=start, end=end))


async def read_tail(path: Path, offset: int, size: int = 65536) -> bytes:
    """The last ``size`` bytes of a log after ``offset``."""
    return await anyio.to_thread.run_sync(
        _with_log, path, OpenMode.READ, lambda fd: _tail_after(fd, offset, size), b""
    )


def _scan(fd: int, offset: int, scanner: ResultScanner) -> bytes:
    size = os.fstat(fd).st_size
    start = offset
    if scanner.result_format != "codex-jsonl" and size - offset > _TAIL_BYTES:
        start = size - _TAIL_BYTES
        first = os.pread(fd, _SCAN_CHUNK, start)
        newline = first.find(b"\n")
        start += newline + 1 if newline >= 0 else len(first)  # resume at a line boundary
    tail = b""
    for chunk in safefs.iter_chunks(fd, start=start, chunk=_SCAN_CHUNK, end=size):
        scanner.feed(chunk)
        tail = (tail + chunk)[-65536:]
    return tail


async def scan_log(path: Path, offset: int, scanner: ResultScanner) -> bytes:
    """Feed the attempt's output (from ``offset``) to ``scanner``; return its last 64 KiB.

    Only Codex's format needs every line; the others are judged from the end.
    """
    return await anyio.to_thread.run_sync(_with_log, path, OpenMode.READ, lambda fd: _scan(fd, offset, scanner), b"")


def _same_from(fd: int, offset: int, data: bytes) -> bool:
    return os.fstat(fd).st_size - offset == len(data) and os.pread(fd, len(data), offset) == data


def _truncate_and_append(fd: int, offset: int, data: bytes) -> bool:
    os.ftruncate(fd, offset)  # the descriptor appends: what follows lands at the new end
    return _append(fd, data)


def _replace_from(path: Path, offset: int, data: bytes) -> bool:
    if _with_log(path, OpenMode.READ, lambda fd: _same_from(fd, offset, data), False):
        return False
    return _with_log(path, OpenMode.APPEND, lambda fd: _truncate_and_append(fd, offset, data), False)


async def write_log(path: Path, data: bytes) -> None:
    """Make the log exactly ``data`` (a log that is not safe to write is left alone, as for appends)."""
    await anyio.to_thread.run_sync(_replace_from, path, 0, data)


async def replace_from(path: Path, offset: int, data: bytes) -> bool:
    """Make the log after ``offset`` exactly ``data`` (never through a symlink); True when it was rewritten.

    A remote attempt's lines are appended as they stream; its whole log (capped
    like a local one) comes with its result and replaces them only when it differs.
    """
    return await anyio.to_thread.run_sync(_replace_from, path, offset, data)
