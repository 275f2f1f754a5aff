"""Reading a file that the repository or its user provides, without hanging on what is planted there.

A configuration, an agent or skill definition, a tasks file, ``.worktreeinclude``: an agent can
put a FIFO, ``/dev/zero`` or a folder in their place.  :func:`read_regular` follows symlinks (a
user may keep a configuration elsewhere) but reads only a regular file, and only so much of it:
anything else is a :class:`NotRegularFileError`, an ``OSError`` whose message names what is
there, never a hang or an endless read.  The state under ``.flow/maestro/parallel_groups`` has
stricter rules (no symlink at all): :mod:`maestro_parallel.state.safefs`.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ("NotRegularFileError", "file_kind", "open_regular", "read_regular")


def file_kind(mode: int) -> str:
    """A file type as a user reads it ("a FIFO"), from an ``st_mode``."""
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class NotRegularFileError(OSError):
    """What is at a path is not a regular file, or is larger than a reader takes (``strerror`` says which)."""


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """A descriptor of the regular file at ``path`` (symlinks followed) and its ``fstat``; close it.

    Opened ``O_NONBLOCK`` (a FIFO without a writer cannot block the open) and checked with
    ``fstat`` before anything is read.

    :raises NotRegularFileError: a FIFO, a device, a socket or a folder is there.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotRegularFileError(errno.EINVAL, f"it is {file_kind(info.st_mode)}, not a regular file", path)
    return fd, info


def read_regular(
    path: str | os.PathLike[str], max_bytes: int, *, head: bool = False, missing: bytes | None = None
) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``max_bytes`` of them.

    With ``head``, a longer file gives its first ``max_bytes`` bytes instead of an error; with
    ``missing``, a path where nothing is gives those bytes.

    Opened with :func:`open_regular`.

    :raises FileNotFoundError: nothing is there (and ``missing`` is None).
    :raises NotRegularFileError: a FIFO, a device, a socket or a folder is there, or the file is
        larger than ``max_bytes`` (without ``head``).
    :raises OSError: it cannot be read for another reason (permissions).
    """
    try:
        fd, _ = open_regular(path)
    except FileNotFoundError:
        if missing is None:
            raise
        return missing
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes and head:
            return b"".join(chunks)[:max_bytes]
        if size > max_bytes:
            raise NotRegularFileError(errno.EFBIG, f"it holds more than {max_bytes:,} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)
