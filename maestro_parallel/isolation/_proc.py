"""Run one short command (git, a setup step) in its own process group, bounded by a timeout.

anyio cancels only the direct child; git and setup commands start children of
their own (hooks, ssh, package managers), so on timeout or cancellation the
whole process group gets SIGTERM, a short grace, then SIGKILL, under a
shielded scope with its own bound.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

__all__ = ("Completed", "run_process")

#: How long a signalled group gets between SIGTERM and SIGKILL.
GRACE_SECONDS = 1.0
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Completed:
    """How a command ended: its exit code (None: killed), its output, and whether it timed out."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool


def _signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _drain(stream: anyio.abc.ByteReceiveStream, into: bytearray) -> None:
    try:
        while True:
            into += await stream.receive(_CHUNK)
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass


async def _stop(process: anyio.abc.Process) -> None:
    """TERM the group, wait a little, KILL it; shielded and bounded so that it always ends."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(GRACE_SECONDS + 5):
        if _signal_group(process.pid, signal.SIGTERM):
            with anyio.move_on_after(GRACE_SECONDS):
                await process.wait()
            _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


async def run_process(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    timeout: float,
    log_path: Path | None = None,
) -> Completed:
    """Run ``argv`` (no shell) to its end or its timeout (0: none).

    With ``log_path`` its stdout and stderr are appended to that file (nothing
    kept in memory); otherwise both are captured.
    """
    log_fd = -1
    if log_path is not None:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_fd if log_fd >= 0 else subprocess.PIPE,
            stderr=log_fd if log_fd >= 0 else subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    finally:
        if log_fd >= 0:
            os.close(log_fd)  # the child holds its own copy
    out, err = bytearray(), bytearray()
    finished = False
    try:
        with anyio.move_on_after(timeout if timeout > 0 else math.inf) as scope:
            async with anyio.create_task_group() as tg:
                if process.stdout is not None:
                    tg.start_soon(_drain, process.stdout, out)
                if process.stderr is not None:
                    tg.start_soon(_drain, process.stderr, err)
                await process.wait()
            finished = True
    finally:
        if not finished:  # timed out or cancelled: nothing of the group may survive
            await _stop(process)
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await process.aclose()
    return Completed(process.returncode if finished else None, bytes(out), bytes(err), scope.cancelled_caught)
