"""Reading the logs the coordinator writes: their start, their end, and every line of an attempt.

Small async helpers over aiofiles, so that judging a run never blocks the event loop and never
holds a whole log in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiofiles
import aiofiles.os
import anyio
import anyio.to_thread

from ..agents import ResultScanner

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


async def read_head(path: Path, limit: int) -> str:
    try:
        async with aiofiles.open(path, "rb") as handle:
            data = await handle.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


async def last_line(path: Path) -> str:
    try:
        async with aiofiles.open(path, "rb") as handle:
            size = (await aiofiles.os.stat(path)).st_size
            await handle.seek(max(0, size - 65536))
            data = await handle.read()
    except OSError:
        return ""
    return last_nonblank_line(data)[:500]


def last_nonblank_line(data: bytes) -> str:
    """The last line of ``data`` that is not blank, stripped ("" if none): what a log last said."""
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


async def file_size(path: Path) -> int:
    try:
        return (await aiofiles.os.stat(path)).st_size
    except OSError:
        return 0


async def append_bytes(path: Path, data: bytes) -> None:
    async with aiofiles.open(path, "ab") as handle:
        await handle.write(data)


async def read_tail(path: Path, offset: int, size: int = 65536) -> bytes:
    """The last ``size`` bytes of a log after ``offset``."""
    try:
        async with aiofiles.open(path, "rb") as handle:
            end = (await aiofiles.os.stat(path)).st_size
            await handle.seek(max(offset, end - size))
            return await handle.read()
    except OSError:
        return b""


async def scan_log(path: Path, offset: int, scanner: ResultScanner) -> bytes:
    """Feed the attempt's output (from ``offset``) to ``scanner``; return its last 64 KiB.

    Only Codex's format needs every line; the others are judged from the end.
    """
    try:
        async with aiofiles.open(path, "rb") as handle:
            size = (await aiofiles.os.stat(path)).st_size
            start = offset
            if scanner.result_format != "codex-jsonl" and size - offset > _TAIL_BYTES:
                start = size - _TAIL_BYTES
                await handle.seek(start)
                await handle.readline()  # resume at a line boundary
            else:
                await handle.seek(start)
            tail = b""
            while True:
                chunk = await handle.read(_SCAN_CHUNK)
                if not chunk:
                    break
                scanner.feed(chunk)
                tail = (tail + chunk)[-65536:]
            return tail
    except OSError:
        return b""


def _replace_from(path: Path, offset: int, data: bytes) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size - offset == len(data) and os.pread(fd, len(data), offset) == data:
            return False
        os.ftruncate(fd, offset)
        view = memoryview(data)
        position = offset
        while view:
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
        return True
    finally:
        os.close(fd)


async def replace_from(path: Path, offset: int, data: bytes) -> bool:
    """Make the log after ``offset`` exactly ``data`` (never through a symlink); True when it was rewritten.

    A remote attempt's lines are appended as they stream; its whole log (capped
    like a local one) comes with its result and replaces them only when it differs.
    """
    return await anyio.to_thread.run_sync(_replace_from, path, offset, data)
