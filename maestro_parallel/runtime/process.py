"""Run one command the way an agent must be run, and make sure nothing of it survives.

Each command gets its own session and process group (``start_new_session``),
stdin from ``/dev/null`` and its stdout and stderr written to a log file;
stopping it stops its whole process group (:mod:`.stopping`).

Without a log cap the child writes straight into the log file: no pipe, no
copy, nothing held in memory.  With a cap the output goes through a pipe and
:class:`CappedLogSink` keeps the head and the tail and drops the middle.
"""

from __future__ import annotations

import errno
import math
import os
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiofiles.os
import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from ..state.safefs import OpenMode, UnsafePathError, open_state_file
from .procfs import boot_ticks, process_start_time
from .stopping import group_alive, stop_process_group

__all__ = ("AgentProcess", "CappedLogSink", "CommandResult", "run_command")


#: How often a stopping coordinator looks whether a process group is gone.
_POLL_SECONDS = 0.02
#: How long output still arriving through a pipe is read after its process is gone.
_DRAIN_SECONDS = 1.0
_CHUNK = 64 * 1024

class CappedLogSink:
    """Write a stream into a log file, keeping its head and its end within ``max_bytes``.

    The first quarter of the budget keeps the start of the output; the rest is a
    ring of its most recent bytes, so the end (where agents report their result)
    is never dropped.  Memory use is bounded by ``max_bytes`` plus one chunk.

    The ring is a deque of the chunks as they came, trimmed whole from the left:
    taking a chunk costs O(chunk) whatever ``max_bytes`` is (a bytearray trimmed
    from the front is copied whole each time it grows, which made a 64 MiB cap
    four times slower and three times its size in memory).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.head_budget = max_bytes // 4
        self.tail_budget = max_bytes - self.head_budget
        self.head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.total = 0

    @property
    def tail(self) -> bytes:
        """The most recent bytes kept (at most ``tail_budget``)."""
        return b"".join(self._tail_chunks())

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; return the part that belongs to the head (write it at once)."""
        self.total += len(data)
        room = self.head_budget - len(self.head)
        to_head = data[:room] if room > 0 else b""
        self.head += to_head
        rest = data[len(to_head) :]
        if rest:
            self._tail.append(bytes(rest))
            self._tail_size += len(rest)
            # Drop whole chunks that the ring no longer needs; the excess left is cut at the end.
            while self._tail and self._tail_size - len(self._tail[0]) >= self.tail_budget:
                self._tail_size -= len(self._tail.popleft())
        return bytes(to_head)

    def _tail_chunks(self) -> list[bytes]:
        chunks = list(self._tail)
        excess = self._tail_size - self.tail_budget
        if chunks and excess > 0:
            chunks[0] = chunks[0][excess:]
        return chunks

    def _note(self) -> bytes:
        kept = len(self.head) + min(self._tail_size, self.tail_budget)
        dropped = self.total - kept
        if dropped <= 0:
            return b""
        return (
            f"\n[maestro-parallel: {dropped} bytes dropped from the middle of this log "
            f"(max_log_bytes = {self.max_bytes})]\n"
        ).encode()

    def closing_chunks(self) -> list[bytes]:
        """:meth:`closing` as a list of pieces, to be written without joining them."""
        return [self._note(), *self._tail_chunks()]


@dataclass
class CommandResult:
    """How a command ended."""

    returncode: int | None
    timed_out: bool
    stopped: bool
    pid: int
    pgid: int
    start_time: int | None
    duration: float


def _open_log(path: Path, *, append: bool) -> int:
    """Open a command's log through :mod:`~..state.safefs`: no symlinked folder or file, no FIFO, no hard link.

    An unsafe log is an ``OSError`` (ELOOP) here, like any other log that cannot be opened.
    """
    try:
        fd = open_state_file(path, OpenMode.APPEND if append else OpenMode.CREATE)
    except UnsafePathError as exc:
        raise OSError(errno.ELOOP, str(exc)) from exc
    return fd


def _write_fully(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a pipe or a file near its limit writes short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _check_argv_env(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Refuse, as an ``OSError``, what the kernel cannot carry: a NUL byte in argv or the environment.

    ``subprocess`` raises a bare ``ValueError`` for it, which callers that handle a
    failed spawn (``OSError``) would let escape as a crash.
    """
    for element in argv:
        if "\x00" in element:
            raise OSError(errno.EINVAL, f"an argument holds a NUL byte: {element[:60]!r}")
    for name, value in env.items():
        if "\x00" in name or "\x00" in value:
            raise OSError(errno.EINVAL, f"the environment variable {name[:60]!r} holds a NUL byte")


_write_all = aiofiles.os.wrap(_write_fully)


class _PopenChild:
    """A child spawned with :class:`subprocess.Popen`, waited for by polling (old kernels only)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        while self._popen.poll() is None:
            await anyio.sleep(_POLL_SECONDS)
        return self._popen.returncode

    async def aclose(self) -> None:
        """Nothing to release."""


class _PidfdChild(_PopenChild):
    """The same, waited for through a pidfd (Linux).

    asyncio's child watcher on Python 3.11 starts one thread per child to wait
    for it; a pidfd becomes readable when its process exits, so the event loop
    itself notices every exit, with no thread at all.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        super().__init__(popen)
        self._fd = os.pidfd_open(popen.pid)

    async def wait(self) -> int:
        while self._popen.poll() is None:
            try:
                await anyio.wait_readable(self._fd)
            except anyio.BusyResourceError:  # another task is already waiting on the pidfd
                await anyio.sleep(_POLL_SECONDS)
        return self._popen.returncode

    async def aclose(self) -> None:
        if self._fd >= 0 and self._popen.returncode is not None:
            os.close(self._fd)
            self._fd = -1


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One read-only ``/dev/null`` for every child's stdin (Popen would open and close one per child)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def _spawn_with_pidfd(
    argv: Sequence[str], *, cwd: str | os.PathLike[str], env: Mapping[str, str], fd: int
) -> _PopenChild | None:
    """Spawn in a new session with output to ``fd``; None where pidfds are not available."""
    if not hasattr(os, "pidfd_open"):
        return None
    popen = subprocess.Popen(
        list(argv),
        stdin=_devnull(),
        stdout=fd,
        stderr=fd,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        return _PidfdChild(popen)
    except OSError:  # a kernel without pidfd_open (before 5.3): fall back to a polling waiter
        return _PopenChild(popen)


class AgentProcess:
    """One running command in its own session, with its output going to a log file.

    Create it with :meth:`start`; it is an async context manager whose exit stops
    whatever is left of the process group (shielded, bounded).
    """

    def __init__(
        self,
        process: anyio.abc.Process | _PopenChild,
        *,
        grace: float,
        sink: CappedLogSink | None,
        log_fd: int,
        observer: Callable[[bytes], object] | None = None,
        start_time: int | None = None,
    ) -> None:
        self._process = process
        self.pid = process.pid
        self.pgid = process.pid  # start_new_session makes the child its own group leader
        self.start_time = start_time if start_time is not None else process_start_time(process.pid)
        self.started = time.monotonic()
        self.grace = grace
        self._sink = sink
        self._log_fd = log_fd  # open only while a capped output is being copied
        self._drained = anyio.Event()
        self._observer = observer
        #: Why a capped log could not be written whole (a full disk), or None.
        self.log_error: OSError | None = None
        #: Set by :meth:`request_stop`: the process gets its grace period, then is stopped.
        self.stop_requested = False
        self._wait_scope: anyio.CancelScope | None = None
        self._closed = False

    def request_stop(self) -> None:
        """Ask :func:`run_command` to give the process its grace period, then stop it.

        For a task the tracker reports closed while its agent still runs.  No task
        waits for this per process: the request cancels the wait in progress.
        """
        self.stop_requested = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        env: Mapping[str, str],
        log_path: Path,
        grace: float,
        max_log_bytes: int = 0,
        append_log: bool = False,
        observer: Callable[[bytes], object] | None = None,
        spawn_gate: anyio.Semaphore | None = None,
    ) -> AgentProcess:
        """Spawn ``argv`` (never through a shell) in a new session.

        ``observer`` sees every chunk of a capped output, dropped middle included.
        ``spawn_gate``, when given, is held around the fork alone (not the log's opening),
        so that many concurrent launches fork one at a time, interleaved with other work.
        """
        _check_argv_env(argv, env)
        try:
            # On the loop, like the fork that follows: a few non-blocking system calls in a folder
            # whose descriptor is kept (O_NONBLOCK: a FIFO cannot block).  In a worker thread, the
            # hop and the threads' contention for the interpreter cost a thousand agents more than
            # the open itself, and the threads' system calls slowed the forks running beside them.
            fd = _open_log(log_path, append=append_log)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, f"refusing to write the log {log_path.name}: {exc.strerror}") from exc
            raise
        try:
            sink = CappedLogSink(max_log_bytes) if max_log_bytes > 0 else None
            process: anyio.abc.Process | _PopenChild | None = None
            if spawn_gate is not None:
                await spawn_gate.acquire()
            start_time = boot_ticks()
            try:
                if sink is None:  # output straight into the log: no pipe, and no thread to wait
                    process = _spawn_with_pidfd(argv, cwd=cwd, env=env, fd=fd)
                if process is None:
                    process = await anyio.open_process(
                        list(argv),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE if sink else fd,
                        stderr=subprocess.STDOUT if sink else fd,
                        cwd=cwd,
                        env=env,
                        start_new_session=True,
                    )
                if spawn_gate is not None:  # at most one fork per turn of the event loop
                    await anyio.lowlevel.checkpoint()
            finally:
                if spawn_gate is not None:
                    spawn_gate.release()
        except BaseException:
            os.close(fd)
            raise
        if sink is None:
            os.close(fd)  # the child holds its own copy
            fd = -1
        return cls(process, grace=grace, sink=sink, log_fd=fd, observer=observer, start_time=start_time)

    async def wait(self) -> int:
        """Wait until the process itself exits; return its return code."""
        return await self._process.wait()

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def pipes_output(self) -> bool:
        """True when the output goes through a pipe (a log cap): :meth:`pump` must run to copy it."""
        return self._sink is not None

    async def pump(self) -> None:
        """Copy a capped process's output into its log; a no-op without a cap."""
        stream = getattr(self._process, "stdout", None)
        if self._sink is None or stream is None:
            self._drained.set()
            return
        try:
            while True:
                try:
                    chunk = await stream.receive(_CHUNK)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                if self._observer is not None:
                    self._observer(chunk)
                head = self._sink.feed(chunk)
                if head and self.log_error is None:
                    try:
                        await _write_all(self._log_fd, head)
                    except OSError as exc:  # a full disk: keep draining, so the agent never blocks
                        self.log_error = exc
        finally:
            self._drained.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop the whole process group: SIGTERM, grace, SIGKILL (shielded, bounded)."""
        if not group_alive(self.pgid):
            return  # the usual end: nothing left to stop, and no cancel scope entered for it
        await stop_process_group(self.pgid, self.grace if grace is None else grace, wait_leader=self._process.wait)

    async def aclose(self, grace: float | None = None) -> None:
        """Stop what is left of the group and finish the log; safe to call twice (the second returns at once)."""
        if self._closed:
            return
        with anyio.CancelScope(shield=True):
            await self.stop(grace)
            if isinstance(self._process, _PopenChild):
                await self._process.aclose()
            if self._sink is not None and self._log_fd >= 0:
                # A daemon that escaped the group may still hold the pipe open.
                with anyio.move_on_after(_DRAIN_SECONDS):
                    await self._drained.wait()
                # Close the pipe's transport too (anyio's aclose does; the stream's alone does not), or
                # asyncio finalizes it after the loop is gone, with a traceback, when a daemon holds the pipe.
                with anyio.move_on_after(_DRAIN_SECONDS):
                    await self._process.aclose()
                try:
                    for piece in self._sink.closing_chunks():
                        if self.log_error is None:
                            await _write_all(self._log_fd, piece)
                except OSError as exc:
                    self.log_error = exc
                finally:
                    os.close(self._log_fd)
                    self._log_fd = -1
            self._closed = True

    async def __aenter__(self) -> AgentProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def run_command(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    log_path: Path,
    timeout: float = 0,
    grace: float = 5.0,
    max_log_bytes: int = 0,
    append_log: bool = False,
    on_start: Callable[[AgentProcess], Awaitable[None]] | None = None,
    stop_event: anyio.Event | None = None,
    observer: Callable[[bytes], object] | None = None,
    spawn_gate: anyio.Semaphore | None = None,
) -> CommandResult:
    """Run ``argv`` to its end, its timeout (0: none), or a request to stop it.

    A stop is requested with :meth:`AgentProcess.request_stop` (``on_start``
    receives the process) or by setting ``stop_event``; the process then gets
    ``grace`` seconds to exit on its own before its group is stopped.
    Cancellation stops the group too (shielded) and then propagates.  Whatever
    happens, no process of the group is left.
    """
    agent = await AgentProcess.start(
        argv,
        cwd=cwd,
        env=env,
        log_path=log_path,
        grace=grace,
        max_log_bytes=max_log_bytes,
        append_log=append_log,
        observer=observer,
        spawn_gate=spawn_gate,
    )
    try:
        if not agent.pipes_output and stop_event is None:
            timed_out, stopped = await _supervise(agent, timeout, grace, on_start)
        else:  # a pipe to copy, or an event to watch: helper tasks, in a task group of our own
            async with anyio.create_task_group() as tg:
                tg.start_soon(agent.pump)
                if stop_event is not None:
                    tg.start_soon(_stop_when_set, agent, stop_event)
                timed_out, stopped = await _supervise(agent, timeout, grace, on_start)
                await agent.aclose()
                tg.cancel_scope.cancel()
    finally:
        await agent.aclose()
    return CommandResult(
        returncode=agent.returncode,
        timed_out=timed_out,
        stopped=stopped,
        pid=agent.pid,
        pgid=agent.pgid,
        start_time=agent.start_time,
        duration=time.monotonic() - agent.started,
    )


async def _supervise(
    agent: AgentProcess,
    timeout: float,
    grace: float,
    on_start: Callable[[AgentProcess], Awaitable[None]] | None,
) -> tuple[bool, bool]:
    """Wait for the process within its timeout, honouring a stop request; (timed out, stopped)."""
    stopped = False
    with anyio.move_on_after(timeout if timeout and timeout > 0 else math.inf) as deadline:
        if on_start is not None:
            await on_start(agent)
        if not agent.stop_requested:
            with anyio.CancelScope() as agent._wait_scope:
                await agent.wait()
            agent._wait_scope = None
        if agent.returncode is None and agent.stop_requested:
            with anyio.move_on_after(grace):
                await agent.wait()
            stopped = agent.returncode is None
    return deadline.cancelled_caught, stopped


async def _stop_when_set(agent: AgentProcess, stop_event: anyio.Event) -> None:
    await stop_event.wait()
    agent.request_stop()
