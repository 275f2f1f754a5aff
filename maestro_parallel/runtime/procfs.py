"""What Linux's ``/proc`` says about processes: ``/proc/<pid>/stat`` is parsed here, once.

Pure reads, no signals: the start time that tells a reused pid from the
process recorded beside it, a process's parent and group, and the process
groups that still have a live member.  Elsewhere than Linux every answer is "unknown" (None or empty), and
callers then trust the pid.  Imports nothing of the package, so the state
layer may use it too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = (
    "START_TIME_TOLERANCE",
    "ProcStat",
    "boot_ticks",
    "live_process_groups",
    "parse_stat",
    "process_start_time",
    "read_stat",
    "same_start",
)

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: How much later than its recorded start time a process may have started and still be the same
#: one (in clock ticks: one second at the usual 100 Hz).  The time is taken just before the fork
#: and almost always equals the kernel's; pids take far longer than that to come round again.
START_TIME_TOLERANCE = _CLK_TCK


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this package uses."""

    state: bytes  # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    pgrp: int
    start_time: int  # clock ticks since boot


def parse_stat(data: bytes) -> ProcStat | None:
    """The fields of one ``/proc/<pid>/stat`` text, or None when it is not one."""
    # The command name may contain spaces and parentheses: fields resume after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split(maxsplit=20)
    try:
        return ProcStat(state=fields[0], ppid=int(fields[1]), pgrp=int(fields[2]), start_time=int(fields[19]))
    except (IndexError, ValueError):
        return None


def read_stat(pid: int | str) -> ProcStat | None:
    """``/proc/<pid>/stat`` parsed, or None (gone, not Linux, unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return parse_stat(data)


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), or None.

    Recorded beside a pid so that a later coordinator never signals a process
    that merely reuses the number.
    """
    stat = read_stat(pid)
    return None if stat is None else stat.start_time


def boot_ticks() -> int | None:
    """Now, in the clock ticks since boot that ``/proc/<pid>/stat`` uses for start times (Linux), or None.

    Taken just before a fork it gives the child's start time without reading
    ``/proc/<pid>/stat`` of a process in the middle of its exec, which waits
    for the exec to finish (a third of a millisecond per agent on the loop).
    """
    try:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * _CLK_TCK // 1_000_000_000
    except (AttributeError, OSError):
        return None


def same_start(recorded: int | None, pid: int) -> bool:
    """True unless ``pid`` is provably not the process that started at ``recorded`` (a reused pid)."""
    actual = process_start_time(pid)
    if recorded is None or actual is None:
        return True  # nothing to compare (not Linux, or not recorded): trust the pid
    return 0 <= actual - recorded <= START_TIME_TOLERANCE


def live_process_groups() -> set[int] | None:
    """The process groups with a member that is not a zombie, or None when ``/proc`` cannot be read."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    live: set[int] = set()
    for name in names:
        if not name.isdigit():
            continue
        stat = read_stat(name)
        if stat is not None and stat.state not in (b"Z", b"X"):
            live.add(stat.pgrp)
    return live

