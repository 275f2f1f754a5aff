"""Opening files below the repository root without following a symlink anywhere on the way.

An agent runs with write access to the repository, so it can replace its log
with a FIFO (an open for reading blocks forever), a symlink to ``/dev/zero``
(a read never ends) or a symlink to a file outside the repository (a write
lands there), and it can swap a whole folder (``logs/``) for a symlink to
redirect the other tasks' files.  ``O_NOFOLLOW`` alone protects only the last
component of a path, so every file here is opened by walking from the root one
component at a time, each folder opened with ``O_DIRECTORY | O_NOFOLLOW``
relative to its parent's descriptor (``dir_fd``), and the file itself with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block the open) and then ``fstat``:
anything but a regular file is refused with one :class:`UnsafePathError`
naming the path at fault.

Reads are bounded: :func:`read_tail` reads the end of a huge log without
loading it, :func:`iter_chunks` streams one chunk at a time (and
:class:`LineSplitter` cuts it into lines of bounded length), :func:`tail_start`
is where a follower starts, and :func:`read_limited` refuses a state file
larger than its limit.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path, PurePosixPath

from .._files import file_kind
from ..errors import StateError

__all__ = (
    "STATE_CHAIN",
    "LineSplitter",
    "OpenMode",
    "UnsafePathError",
    "check_state_chain",
    "iter_chunks",
    "last_line",
    "open_below",
    "open_state_folder",
    "open_state_file",
    "read_limited",
    "read_tail",
    "tail_start",
)

_FILE_MODE = 0o600
#: Bytes read at a time by :func:`iter_chunks` and :func:`read_tail`.
CHUNK = 64 * 1024
#: The folders of the state, from the repository root down; ``{group}`` is a group id.
STATE_CHAIN = (
    ".flow",
    ".flow/maestro",
    ".flow/maestro/parallel_groups",
    ".flow/maestro/parallel_groups/{group}",
    ".flow/maestro/parallel_groups/{group}/logs",
    ".flow/maestro/parallel_groups/{group}/prompts",
    ".flow/maestro/parallel_groups/{group}/history",
)


class UnsafePathError(StateError):
    """Raised when a path below the root goes through a symlink or is not a regular file.

    :param path: the path at fault (the component that is a symlink, or the file).
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class OpenMode(StrEnum):
    """What a file is opened for; every mode refuses symlinks and anything but a regular file."""

    READ = "read"
    APPEND = "append"  # created when missing (a log, the journal)
    CREATE = "create"  # created when missing, truncated when present


_FLAGS = {
    OpenMode.READ: os.O_RDONLY,
    OpenMode.APPEND: os.O_WRONLY | os.O_APPEND | os.O_CREAT,
    OpenMode.CREATE: os.O_WRONLY | os.O_CREAT,  # truncated only once the file is known to be ours: see open_below
}


def _not_a_folder(kind: str | None) -> str:
    """Why a path that should be a folder is refused ("it is a symlink", "it is a FIFO, not a folder")."""
    if kind == "a symlink":
        return "it is a symlink"
    return f"it is {kind}, not a folder" if kind else "it is not a folder"


def _lkind(dir_fd: int, name: str) -> str | None:
    """What ``name`` in ``dir_fd`` is, without following it, or None when it is gone."""
    try:
        return file_kind(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return None


def _parts(root: Path, path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The components of ``path`` below ``root`` (``path`` absolute under it, or relative to it).

    Lexical only: ``..``, an empty path or a path outside ``root`` is refused,
    since the walk must never climb.
    """
    candidate = PurePosixPath(os.fspath(path))
    if candidate.is_absolute():
        try:
            candidate = candidate.relative_to(PurePosixPath(os.fspath(root)))
        except ValueError:
            raise UnsafePathError(f"refusing to open {path}: it is outside {root}", path=Path(path)) from None
    parts = tuple(p for p in candidate.parts if p not in ("", "."))
    if not parts or ".." in parts:
        raise UnsafePathError(f"refusing to open {path}: not a file path below {root}", path=Path(path))
    return parts


def _open_root(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePathError(f"cannot open {root}: {exc.strerror or exc}", path=root) from exc


def _open_dir_at(dir_fd: int, name: str, where: Path, *, create: bool) -> int:
    """Open folder ``name`` inside ``dir_fd`` without following it (creating it when asked)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                f"refusing to use {where}: {_not_a_folder(_lkind(dir_fd, name))}", path=where
            ) from exc
        raise
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass  # made meanwhile: the open below checks what it is
    return _open_dir_at(dir_fd, name, where, create=False)


def open_below(
    root: str | os.PathLike[str],
    path: str | os.PathLike[str],
    mode: OpenMode = OpenMode.READ,
    *,
    make_dirs: bool = False,
    allow_hard_links: bool = False,
) -> int:
    """Open ``path`` below ``root`` without following a symlink in any component; return its descriptor.

    ``root`` itself may be reached through symlinks (it is the user's choice);
    nothing below it is.  The file must be a regular file: a FIFO, a device, a
    socket or a folder is refused after an ``O_NONBLOCK`` open (so a FIFO with no
    writer cannot block), and ``O_NONBLOCK`` is cleared before returning.
    ``make_dirs`` creates missing folders (mode 0700) on the way.  A file with
    more than one hard link is refused too (unless ``allow_hard_links``): an
    agent can hard-link its log to a file of the same owner elsewhere on the
    filesystem, which no symlink check sees; the files maestro writes never
    have a second link.

    :raises UnsafePathError: a component is a symlink or not a folder, or the file is not regular.
    :raises FileNotFoundError: a component or (when reading) the file does not exist.
    :raises OSError: any other failure of the open itself (permissions, full disk).
    """
    base = Path(os.fspath(root))
    parts = _parts(base, path)
    dir_fd = _open_root(base)
    where = base
    try:
        for name in parts[:-1]:
            where = where / name
            next_fd = _open_dir_at(dir_fd, name, where, create=make_dirs)
            os.close(dir_fd)
            dir_fd = next_fd
        return _open_file_at(dir_fd, parts[-1], where / parts[-1], OpenMode(mode), allow_hard_links)
    finally:
        os.close(dir_fd)


def _open_file_at(dir_fd: int, name: str, where: Path, mode: OpenMode, allow_hard_links: bool) -> int:
    """The last step of :func:`open_below`: ``name`` in the folder ``dir_fd``, a regular file or refused."""
    flags = _FLAGS[mode] | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, _FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP: a symlink; ENXIO: a FIFO opened for writing with no reader; EISDIR: a folder.
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
            kind = _lkind(dir_fd, name) or "not a regular file"
            raise UnsafePathError(f"refusing to open {where}: it is {kind}", path=where) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"refusing to open {where}: it is {file_kind(info.st_mode)}", path=where)
        if info.st_nlink > 1 and not allow_hard_links:
            raise UnsafePathError(
                f"refusing to open {where}: it has {info.st_nlink} hard links (one may be outside)", path=where
            )
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        if mode == OpenMode.CREATE:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def state_root_of(path: str | os.PathLike[str]) -> Path:
    """The repository root of a path under ``.flow`` (the folder holding its last ``.flow``); else its folder.

    Callers that hold only a log's or a state file's absolute path walk from
    here, so no folder of the state on the way is followed through a symlink;
    a file elsewhere is still opened without following its last component.
    """
    candidate = Path(os.fspath(path))
    parts = candidate.parts
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == ".flow":
            return Path(*parts[:index]) if index else Path(parts[0])
    return candidate.parent


#: Folders walked already: path -> (descriptor, where the kernel says it is).  See open_state_file.
_FOLDERS: dict[str, tuple[int, str]] = {}
_FOLDERS_MAX = 64
_FOLDERS_LOCK = threading.Lock()


def _still_there(fd: int, real: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == real
    except OSError:
        return False


def open_state_file(path: str | os.PathLike[str], mode: OpenMode = OpenMode.READ) -> int:
    """:func:`open_below` from :func:`state_root_of` ``path``: the one way a state file or log is opened.

    The folder is walked (no component followed) the first time; its descriptor
    is kept, and later opens in it are one ``openat`` once ``/proc/self/fd``
    shows the folder still where the walk found it.  A folder moved or deleted
    (which replacing it by a symlink takes) is never used through the kept
    descriptor: the walk runs again, and refuses the symlink.  A thousand
    tasks open their logs a few times each: the walk was most of that cost.
    """
    target = Path(os.fspath(path))
    folder = str(target.parent)
    with _FOLDERS_LOCK:
        kept = _FOLDERS.get(folder)
        if kept is not None and _still_there(*kept):
            return _open_file_at(kept[0], target.name, target, OpenMode(mode), False)
        fd = open_below(state_root_of(target), target, mode)
        if kept is not None:
            del _FOLDERS[folder]
            os.close(kept[0])
        try:
            dir_fd = open_state_folder(target.parent)
        except (OSError, StateError):
            return fd  # the file is open and checked; the folder is just not kept
        try:
            real = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:  # no /proc: nothing to check a kept folder by, so none is kept
            os.close(dir_fd)
            return fd
        if len(_FOLDERS) >= _FOLDERS_MAX:
            oldest = next(iter(_FOLDERS))
            os.close(_FOLDERS.pop(oldest)[0])
        _FOLDERS[folder] = (dir_fd, real)
        return fd


def open_state_folder(path: str | os.PathLike[str]) -> int:
    """A descriptor of the folder ``path`` (under :func:`state_root_of` it), no component followed.

    For writes that create files by name (an atomic replace: a temp file, then a
    rename): made relative to this descriptor, they land in the folder that was
    checked, even if an agent swaps it for a symlink meanwhile.

    :raises UnsafePathError: a component is a symlink or not a folder.
    """
    folder = Path(os.fspath(path))
    root = state_root_of(folder / "x")
    dir_fd = _open_root(root)
    where = root
    try:
        for name in _parts(root, folder / "x")[:-1]:
            where = where / name
            next_fd = _open_dir_at(dir_fd, name, where, create=False)
            os.close(dir_fd)
            dir_fd = next_fd
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def check_state_chain(repo_root: str | os.PathLike[str], group_id: str | None = None) -> None:
    """Refuse a state folder that is a symlink or not a folder, naming it; missing folders are fine.

    Checks ``.flow``, ``.flow/maestro``, ``parallel_groups`` and, for a group,
    its folder, ``logs/``, ``prompts/`` and ``history/`` — the folders a coordinator writes
    into, where a symlink would move the whole state (or one task's files)
    outside the repository.  This is a check at one moment; the writes
    themselves go through :func:`open_below`, which holds for a swap made later.

    :raises UnsafePathError: naming the first folder of the chain at fault.
    """
    root = Path(os.fspath(repo_root))
    missing: list[Path] = []
    for template in STATE_CHAIN:
        if "{group}" in template:
            if group_id is None:
                break
            relative = template.format(group=group_id)
        else:
            relative = template
        path = root / relative
        if any(path.is_relative_to(gone) for gone in missing):
            continue  # nothing below a missing folder exists either
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            missing.append(path)
            continue
        except OSError as exc:
            raise UnsafePathError(f"cannot check {path}: {exc.strerror or exc}", path=path) from exc
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePathError(f"refusing to use {path}: {_not_a_folder(file_kind(info.st_mode))}", path=path)


def read_tail(fd: int, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of the regular file open as ``fd`` (all of it when smaller), read with ``pread``.

    The file's size is taken once, so a file growing meanwhile cannot make the
    read unbounded; memory is O(``max_bytes``) whatever the file's size.
    """
    if max_bytes <= 0:
        return b""
    size = os.fstat(fd).st_size
    start = max(0, size - max_bytes)
    pieces: list[bytes] = []
    offset = start
    while offset < size:
        piece = os.pread(fd, min(CHUNK, size - offset), offset)
        if not piece:
            break  # truncated meanwhile
        pieces.append(piece)
        offset += len(piece)
    return b"".join(pieces)


def last_line(fd: int, max_bytes: int = CHUNK) -> str:
    """The last non-blank line of the file open as ``fd``, looking at most ``max_bytes`` back; "" when none.

    Decoded leniently (a torn UTF-8 sequence at the window's start is replaced),
    since this is what a failed task's error is built from.
    """
    tail = read_tail(fd, max_bytes)
    for line in reversed(tail.splitlines()):
        text = line.decode("utf-8", "replace").strip()
        if text:
            return text
    return ""


def iter_chunks(fd: int, *, start: int = 0, chunk: int = CHUNK, end: int | None = None) -> Iterator[bytes]:
    """Stream the file open as ``fd`` from ``start`` up to ``end`` (default: its size when called).

    One chunk in memory at a time.  Bounding the read by the size taken at the
    start keeps a file that grows forever (``/dev/zero`` cannot get here, but a
    busy log can) from making one call endless; a follower calls again from
    where it stopped.
    """
    stop = os.fstat(fd).st_size if end is None else end
    offset = start
    while offset < stop:
        piece = os.pread(fd, min(chunk, stop - offset), offset)
        if not piece:
            return
        offset += len(piece)
        yield piece


def read_limited(root: str | os.PathLike[str], path: str | os.PathLike[str], max_bytes: int) -> bytes | None:
    """The bytes of the state file ``path`` below ``root``, or None when it does not exist.

    :raises UnsafePathError: as :func:`open_below`, or when the file is larger than ``max_bytes``.
    """
    try:
        fd = open_below(root, path, OpenMode.READ)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        where = Path(os.fspath(root)) / Path(*_parts(Path(os.fspath(root)), path))
        if size > max_bytes:
            raise UnsafePathError(
                f"refusing to read {where}: {size} bytes, more than the {max_bytes} a state file may hold", path=where
            )
        data = read_tail(fd, max_bytes + 1)
        if len(data) > max_bytes:
            raise UnsafePathError(f"refusing to read {where}: it grew past {max_bytes} bytes", path=where)
        return data
    finally:
        os.close(fd)


def tail_start(fd: int, max_bytes: int) -> int:
    """Where to start showing the end of the file open as ``fd``: the first whole line of its last ``max_bytes``.

    ``logs --follow`` starts here instead of at the beginning of a log that may
    hold gigabytes; a cut line at the window's start is skipped.
    """
    size = os.fstat(fd).st_size
    start = max(0, size - max_bytes)
    if start == 0:
        return 0
    offset = start - 1  # one byte back: is start a line's beginning?
    for piece in iter_chunks(fd, start=offset, end=size):
        newline = piece.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(piece)
    return size


class LineSplitter:
    """Cut a byte stream into lines, none longer than ``max_bytes``: memory stays O(``max_bytes``).

    A log can be one line of a gigabyte (``/dev/zero`` copied into it, a
    minified bundle printed): a longer line comes out in pieces of
    ``max_bytes``.  Lines are returned without their ``\\n`` (a ``\\r\\n``
    keeps its ``\\r``, for the caller's text rules to drop).
    """

    def __init__(self, max_bytes: int = CHUNK) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines (and full-size pieces of a long one) that ``chunk`` finishes."""
        lines: list[bytes] = []
        start = 0
        while start < len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            room = self.max_bytes - len(self._partial)
            if end - start > room:  # the line goes on past a full piece: hand the piece out
                self._partial += chunk[start : start + room]
                lines.append(bytes(self._partial))
                self._partial.clear()
                start += room
                continue
            self._partial += chunk[start:end]
            if newline < 0:
                break
            lines.append(bytes(self._partial))
            self._partial.clear()
            start = newline + 1
        return lines

    def flush(self) -> list[bytes]:
        """The last line, when the stream ended without a newline."""
        if not self._partial:
            return []
        rest = bytes(self._partial)
        self._partial.clear()
        return [rest]
