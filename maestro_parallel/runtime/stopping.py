"""Stopping whole process groups: SIGTERM, a grace period, SIGKILL, bounded and shielded.

anyio (like asyncio) only ever kills the direct child, so stopping is done here
for the whole process group, and for the strays that left it (found by the
``MAESTRO_*`` variables in their environment).  Shutdown cannot hang: every
stop runs under a shielded cancel scope with its own bound.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from .procfs import live_process_groups, read_stat

__all__ = (
    "describe_returncode",
    "find_processes_by_environment",
    "group_alive",
    "kill_process_group",
    "stop_process_group",
    "stop_processes_by_environment",
)


#: How often a stopping coordinator looks whether a process group is gone.
_POLL_SECONDS = 0.02
#: Extra time, beyond the grace period, that stopping a group may take.
_STOP_BOUND_SECONDS = 5.0


def group_alive(pgid: int) -> bool:
    """True while a process that is not a zombie is left in process group ``pgid``.

    ``killpg(pgid, 0)`` also counts zombies, and an orphaned zombie waits for
    init to reap it (a second or more on some machines); it can do no harm, so
    on Linux the process table decides.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _PROCESS_TABLE.has_live_member(pgid)


class _ProcessTable:
    """Which process groups have a live member, read from /proc and cached briefly.

    One scan serves every group being stopped at the same moment, so stopping a
    thousand agents does not read /proc a thousand times per poll.
    """

    _MAX_AGE = _POLL_SECONDS / 2

    def __init__(self) -> None:
        self._read_at = -math.inf
        self._live: set[int] | None = None

    def has_live_member(self, pgid: int) -> bool:
        now = time.monotonic()
        # A cached "absent" is never trusted: the group may have been born after that
        # scan, and stopping it would then be skipped.  A cached "present" only makes a
        # stopping coordinator poll once more.
        if now - self._read_at > self._MAX_AGE or (self._live is not None and pgid not in self._live):
            self._live = self._scan()
            self._read_at = now
        return True if self._live is None else pgid in self._live

    @staticmethod
    def _scan() -> set[int] | None:
        return live_process_groups()


_PROCESS_TABLE = _ProcessTable()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def describe_returncode(returncode: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL``: how a process ended, for people."""
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


async def stop_process_group(
    pgid: int,
    grace: float,
    *,
    wait_leader: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """SIGTERM the whole group, give it ``grace`` seconds, then SIGKILL what is left.

    Runs shielded with its own bound, so it completes even while the caller is
    being cancelled and never hangs.  ``wait_leader`` reaps our own child (the
    group leader) so that it does not linger as a zombie member of the group.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(grace + _STOP_BOUND_SECONDS):
        if not group_alive(pgid):
            return
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(grace):
            if wait_leader is not None:
                await wait_leader()
            while group_alive(pgid):
                await anyio.sleep(_POLL_SECONDS)
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        if wait_leader is not None:
            await wait_leader()
        while group_alive(pgid):
            await anyio.sleep(_POLL_SECONDS)


def kill_process_group(pgid: int) -> None:
    """SIGKILL a whole process group at once (a second Ctrl-C: no more grace)."""
    _signal_group(pgid, signal.SIGKILL)


def find_processes_by_environment(environment: Mapping[str, str]) -> dict[int, int]:
    """Live processes whose initial environment holds every ``NAME=value`` given: pid -> process group.

    This reaches what a process group cannot: a daemon that left its agent's
    group with ``setsid`` (and was reparented to init by a double fork) still
    carries the environment its agent was given.  Linux only (``/proc``); an
    empty answer elsewhere.  The caller's own process, its ancestors and their
    process groups are never returned, so a coordinator run from inside an
    agent never stops itself.  A process that rewrote its environment in place
    or cleared it before exec is not found.
    """
    needles = [f"{name}={value}".encode("utf-8", "surrogateescape") for name, value in environment.items()]
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    own: set[int] = set()
    own_groups: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in own:
        own.add(pid)
        stat = read_stat(pid)
        if stat is None:
            break
        own_groups.add(stat.pgrp)
        pid = stat.ppid
    found: dict[int, int] = {}
    for name in names:
        if not name.isdigit() or int(name) in own:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                variables = set(handle.read().split(b"\0"))
        except OSError:  # gone, or not ours to read
            continue
        if not all(needle in variables for needle in needles):
            continue
        stat = read_stat(name)
        if stat is None or stat.pgrp in own_groups or not group_alive(stat.pgrp):
            continue
        found[int(name)] = stat.pgrp
    return found


async def stop_processes_by_environment(environment: Mapping[str, str], grace: float) -> list[int]:
    """Stop the process groups of every process :func:`find_processes_by_environment` finds.

    TERM, ``grace``, KILL for each group, all at once (shielded, bounded).
    Returns the process groups stopped.
    """
    if not environment:
        raise ValueError("refusing to stop every process: no environment to match")
    groups = sorted(set((await anyio.to_thread.run_sync(find_processes_by_environment, environment)).values()))
    if groups:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for pgid in groups:
                    tg.start_soon(stop_process_group, pgid, grace)
    return groups
