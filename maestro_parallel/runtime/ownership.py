"""Proving that a process is ours before signalling it.

Every pid maestro signals comes from a file an agent can write: the group's
``.lock`` (``cancel`` stops its holder) and the journal's ``task_started``
events (resume and ``recover`` stop their process groups).  A forged
``{"pid": <victim>}`` would make ``cancel`` kill an unrelated process,
``{"pid": -1}`` every process the user may signal, and a forged
``task_started`` (its start time copied from ``/proc``) any process group.  So a
pid read from a file is signalled only once the process proves itself:

- never a pid or a process group ≤ 1, nor this process or its ancestors' groups;
- an agent: ``/proc/<pid>/environ`` carries this repository's and this group's
  ``MAESTRO_REPO_ROOT`` and ``MAESTRO_GROUP_ID`` (an agent cannot give those to
  a process it does not start), it leads the process group recorded, and its
  start time matches the one journaled when one was;
- a coordinator: the lock records its start time, which matches, and the
  process holds that lock file open (the group's coordinator always does, even
  one embedded in another program; a maestro coordinator of another group does
  not); where no lock file is at hand to compare, its command line must run
  ``maestro_parallel`` / ``maestro-parallel``.

Anything not proven is a :class:`Verdict` with ``ours=False`` and a reason that
names the pid, for a warning: no signal.  The facts are read from ``/proc`` by
:func:`read_facts`; the decisions (:func:`judge_agent`, :func:`judge_coordinator`)
are plain functions over them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = (
    "ProcessFacts",
    "Verdict",
    "agent_verdict",
    "coordinator_verdict",
    "is_maestro_command_line",
    "judge_agent",
    "judge_coordinator",
    "read_facts",
    "signal_if_ours",
)

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: How much later than its journaled start time an agent may have started (clock ticks, one second):
#: the time is taken from the boot clock just before the fork, a tick or so before the kernel's.
START_TIME_TOLERANCE = _CLK_TCK


@dataclass(frozen=True)
class Verdict:
    """Whether a pid may be signalled; ``reason`` (for a warning) names the pid when it may not."""

    pid: int
    ours: bool
    reason: str = ""
    pgid: int | None = None  # the process group proven ours (an agent's), for a signal to the group

    def __bool__(self) -> bool:
        return self.ours


@dataclass(frozen=True)
class ProcessFacts:
    """What ``/proc`` says about one process; None where it could not be read (gone, not ours to read)."""

    pid: int
    alive: bool
    pgid: int | None = None
    start_time: int | None = None
    environ: frozenset[bytes] | None = None
    cmdline: tuple[str, ...] | None = None
    open_files: frozenset[tuple[int, int]] | None = None  # (st_dev, st_ino) of every open descriptor
    protected_groups: frozenset[int] = field(default_factory=frozenset)  # this process's and its ancestors'
    protected_pids: frozenset[int] = field(default_factory=frozenset)


# --------------------------------------------------------------------------- reading /proc


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields resume after the last ')'.
    return data[data.rfind(b")") + 2 :].split()


def _own_lineage() -> tuple[frozenset[int], frozenset[int]]:
    """The pids and process groups of this process and its ancestors (never to be signalled)."""
    pids: set[int] = set()
    groups: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        fields = _stat_fields(pid)
        if fields is None or len(fields) < 3:
            break
        try:
            parent, group = int(fields[1]), int(fields[2])
        except ValueError:
            break
        groups.add(group)
        pid = parent
    return frozenset(pids), frozenset(groups)


def _open_files(pid: int) -> frozenset[tuple[int, int]] | None:
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    found: set[tuple[int, int]] = set()
    for name in names:
        try:
            info = os.stat(f"{folder}/{name}")
        except OSError:
            continue
        found.add((info.st_dev, info.st_ino))
    return frozenset(found)


def read_facts(pid: int, *, open_files: bool = False) -> ProcessFacts:
    """Read what :func:`judge_agent` / :func:`judge_coordinator` need about ``pid`` from ``/proc``.

    A pid ≤ 0 is never looked up (``/proc/-1`` does not exist, and ``/proc/0``
    would not mean process 0).  ``open_files`` also lists the files it holds
    open (a coordinator embedded in another program proves itself by its lock).
    """
    own_pids, own_groups = _own_lineage()
    if pid <= 0:
        return ProcessFacts(pid=pid, alive=False, protected_groups=own_groups, protected_pids=own_pids)
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return ProcessFacts(pid=pid, alive=False, protected_groups=own_groups, protected_pids=own_pids)
    try:
        pgid: int | None = int(fields[2])
        start: int | None = int(fields[19])
    except ValueError:
        pgid = start = None
    environ: frozenset[bytes] | None
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = frozenset(handle.read().split(b"\0"))
    except OSError:
        environ = None
    cmdline: tuple[str, ...] | None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
        cmdline = tuple(part.decode("utf-8", "surrogateescape") for part in raw.rstrip(b"\0").split(b"\0"))
    except OSError:
        cmdline = None
    return ProcessFacts(
        pid=pid,
        alive=True,
        pgid=pgid,
        start_time=start,
        environ=environ,
        cmdline=cmdline,
        open_files=_open_files(pid) if open_files else None,
        protected_groups=own_groups,
        protected_pids=own_pids,
    )


# --------------------------------------------------------------------------- the decisions


def _basic(facts: ProcessFacts, what: str) -> Verdict | None:
    """The refusals common to every kind of process, or None when none applies."""
    pid = facts.pid
    if pid <= 1:
        return Verdict(pid, False, f"pid {pid} cannot be {what}: refusing to signal a pid of 1 or less")
    if not facts.alive:
        return Verdict(pid, False, f"pid {pid} is not running")
    if pid in facts.protected_pids:
        return Verdict(pid, False, f"pid {pid} is this process or one of its parents")
    return None


def judge_agent(
    facts: ProcessFacts,
    *,
    repo_root: str,
    group_id: str,
    pgid: int | None,
    start_time: int | None,
) -> Verdict:
    """May the process group of the agent journaled as ``facts.pid`` / ``pgid`` be signalled?

    Ours when the process carries this repository's and group's ``MAESTRO_*``
    values, leads (or belongs to) the journaled process group ``pgid`` (> 1, not
    our own or an ancestor's group), and started when the journal says (when it
    says).
    """
    pid = facts.pid
    refused = _basic(facts, "an agent")
    if refused is not None:
        return refused
    if pgid is not None and pgid <= 1:
        return Verdict(pid, False, f"pid {pid}: refusing to signal process group {pgid}")
    if facts.pgid is None or facts.pgid <= 1:
        return Verdict(pid, False, f"pid {pid}: its process group could not be read")
    if pgid is not None and facts.pgid != pgid:
        return Verdict(pid, False, f"pid {pid} is in process group {facts.pgid}, not the journaled {pgid}")
    if facts.pgid in facts.protected_groups:
        return Verdict(pid, False, f"pid {pid} is in the process group of this process or one of its parents")
    if facts.environ is None:
        return Verdict(pid, False, f"pid {pid}: its environment could not be read")
    needles = (
        f"MAESTRO_REPO_ROOT={repo_root}".encode("utf-8", "surrogateescape"),
        f"MAESTRO_GROUP_ID={group_id}".encode("utf-8", "surrogateescape"),
    )
    if not all(needle in facts.environ for needle in needles):
        return Verdict(pid, False, f"pid {pid} is not an agent of group {group_id} in {repo_root}")
    if start_time is not None:
        if facts.start_time is None:
            return Verdict(pid, False, f"pid {pid}: its start time could not be read")
        if not 0 <= facts.start_time - start_time <= START_TIME_TOLERANCE:
            return Verdict(pid, False, f"pid {pid} started at another time than the journal records (a reused pid)")
    return Verdict(pid, True, pgid=facts.pgid)


_MODULES = ("maestro_parallel", "maestro_parallel.__main__")
#: Interpreter options that take a value as the next argument.
_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def _is_package_path(arg: str) -> bool:
    return os.path.basename(arg) == "maestro-parallel" or arg.rstrip("/").endswith(
        ("maestro_parallel/__main__.py", "/maestro_parallel")
    )


def is_maestro_command_line(argv: Iterable[str]) -> bool:
    """True for the command line of a maestro coordinator: ``maestro-parallel ...`` or Python running the package.

    Recognised: the ``maestro-parallel`` console script run directly or by an
    interpreter, ``python -m maestro_parallel``, and Python given the package's
    folder or its ``__main__.py``.  Only the program and the interpreter's own
    options decide, never a later argument (``sleep maestro-parallel`` is not one).
    """
    args = list(argv)
    if not args:
        return False
    if os.path.basename(args[0]) == "maestro-parallel":
        return True
    if not os.path.basename(args[0]).startswith("python"):
        return False
    index = 1
    while index < len(args):
        arg = args[index]
        if arg == "-m":
            return index + 1 < len(args) and args[index + 1] in _MODULES
        if arg.startswith("-m"):
            return arg[2:] in _MODULES
        if arg == "-c" or arg == "-":
            return False
        if arg in _OPTIONS_WITH_VALUE:
            index += 2
            continue
        if arg.startswith("-"):
            index += 1
            continue
        return _is_package_path(arg)
    return False


def judge_coordinator(
    facts: ProcessFacts,
    *,
    recorded_start_time: object,
    lock_file: tuple[int, int] | None = None,
) -> Verdict:
    """May the coordinator a lock names be signalled (``cancel``)?

    The lock must record a start time (an integer) equal to the process's.
    Then, given the lock file's ``(st_dev, st_ino)``, the process must hold that
    file open — the coordinator of this group always does, whatever its command
    line (a program embedding the library), and a maestro coordinator of
    another group or repository, whose start time a forger can copy too, does
    not.  Without it (no lock file to compare), its command line must be a
    maestro coordinator's.
    """
    pid = facts.pid
    refused = _basic(facts, "a coordinator")
    if refused is not None:
        return refused
    if not isinstance(recorded_start_time, int) or isinstance(recorded_start_time, bool):
        return Verdict(pid, False, f"the lock records no start time for pid {pid}")
    if facts.start_time != recorded_start_time:
        return Verdict(pid, False, f"pid {pid} started at another time than the lock records (a reused pid)")
    if lock_file is not None:
        if facts.open_files is None:
            return Verdict(pid, False, f"pid {pid}: its open files could not be read")
        if lock_file in facts.open_files:
            return Verdict(pid, True)
        return Verdict(pid, False, f"pid {pid} does not hold the group's lock: not its coordinator")
    if facts.cmdline is not None and is_maestro_command_line(facts.cmdline):
        return Verdict(pid, True)
    shown = " ".join(facts.cmdline)[:80] if facts.cmdline else "unknown"
    return Verdict(pid, False, f"pid {pid} is not a maestro coordinator (its command: {shown!r})")


# --------------------------------------------------------------------------- reading and deciding


def agent_verdict(
    pid: object, pgid: object, start_time: object, *, repo_root: str | os.PathLike[str], group_id: str
) -> Verdict:
    """:func:`judge_agent` over the live process, for values straight from a journal (any type)."""
    if not isinstance(pid, int) or isinstance(pid, bool):
        return Verdict(-1, False, f"the journal records no pid ({pid!r})")
    if pgid is not None and (not isinstance(pgid, int) or isinstance(pgid, bool)):
        return Verdict(pid, False, f"pid {pid}: the journal records no process group ({pgid!r})")
    start = start_time if isinstance(start_time, int) and not isinstance(start_time, bool) else None
    return judge_agent(
        read_facts(pid), repo_root=os.fspath(repo_root), group_id=group_id, pgid=pgid, start_time=start
    )


def coordinator_verdict(lock_record: Mapping[str, object], lock_path: str | os.PathLike[str] | None = None) -> Verdict:
    """:func:`judge_coordinator` for the holder a lock file records (its parsed JSON)."""
    pid = lock_record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return Verdict(-1, False, f"the lock records no pid ({pid!r})")
    lock_file = None
    if lock_path is not None:
        try:
            info = os.stat(Path(lock_path), follow_symlinks=False)
        except OSError as exc:
            return Verdict(pid, False, f"pid {pid}: the lock {lock_path} cannot be read ({exc.strerror or exc})")
        lock_file = (info.st_dev, info.st_ino)
    return judge_coordinator(
        read_facts(pid, open_files=True), recorded_start_time=lock_record.get("start_time"), lock_file=lock_file
    )


def signal_if_ours(verdict: Verdict, signum: signal.Signals | int, *, group: bool) -> bool:
    """Send ``signum`` to the proven pid (or its proven process group); False when not ours or gone.

    The one place a pid read from a file reaches ``kill``: a verdict that is not
    ours never does, and neither does a pid or group ≤ 1 whatever the verdict says.
    """
    if not verdict.ours or verdict.pid <= 1:
        return False
    pgid = verdict.pgid if verdict.pgid is not None else 0
    if group and pgid <= 1:
        return False
    try:
        if group:
            os.killpg(pgid, signum)
        else:
            os.kill(verdict.pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True
