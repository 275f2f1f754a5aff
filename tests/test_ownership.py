"""ownership: the pure decisions over table-driven facts, then real processes read from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import pid_alive

from maestro_parallel.runtime.ownership import (
    START_TIME_TOLERANCE,
    ProcessFacts,
    Verdict,
    agent_verdict,
    coordinator_verdict,
    is_maestro_command_line,
    judge_agent,
    judge_coordinator,
    read_facts,
    signal_if_ours,
)

ROOT, GROUP = "/repo", "g"
ENV = frozenset({b"PATH=/bin", f"MAESTRO_REPO_ROOT={ROOT}".encode(), f"MAESTRO_GROUP_ID={GROUP}".encode()})


def facts(**changes: object) -> ProcessFacts:
    base: dict[str, object] = dict(pid=500, alive=True, pgid=500, start_time=1000, environ=ENV,
                                   cmdline=("python", "-m", "maestro_parallel", "execute"),
                                   protected_groups=frozenset({7}), protected_pids=frozenset({8}))
    base.update(changes)
    return ProcessFacts(**base)  # type: ignore[arg-type]


def agent(f: ProcessFacts, pgid: int | None = 500, start_time: int | None = 1000) -> Verdict:
    return judge_agent(f, repo_root=ROOT, group_id=GROUP, pgid=pgid, start_time=start_time)


# --------------------------------------------------------------------------- pure: agents

AGENT_CASES = [
    ("ours", facts(), {}, True, ""),
    ("ours, a tick late", facts(start_time=1000 + START_TIME_TOLERANCE), {}, True, ""),
    ("no start time journaled", facts(start_time=5), {"start_time": None}, True, ""),
    ("pid -1", facts(pid=-1, alive=False), {}, False, "pid -1 cannot be an agent"),
    ("pid 0", facts(pid=0, alive=False), {}, False, "pid 0 cannot be an agent"),
    ("pid 1", facts(pid=1, pgid=1), {"pgid": 1}, False, "pid 1 cannot be an agent"),
    ("journaled group -1", facts(), {"pgid": -1}, False, "refusing to signal process group -1"),
    ("journaled group 1", facts(), {"pgid": 1}, False, "refusing to signal process group 1"),
    ("gone", facts(alive=False), {}, False, "pid 500 is not running"),
    ("this process", facts(pid=8), {}, False, "pid 8 is this process"),
    ("our own group", facts(pgid=7), {"pgid": 7}, False, "process group of this process"),
    ("another group", facts(pgid=600), {}, False, "in process group 600, not the journaled 500"),
    ("foreign environment", facts(environ=frozenset({b"PATH=/bin"})), {}, False,
     "pid 500 is not an agent of group g in /repo"),
    ("another group's agent", facts(environ=ENV - {b"MAESTRO_GROUP_ID=g"} | {b"MAESTRO_GROUP_ID=h"}), {}, False,
     "not an agent of group g"),
    ("another repository's agent", facts(environ=ENV - {b"MAESTRO_REPO_ROOT=/repo"} | {b"MAESTRO_REPO_ROOT=/r"}),
     {}, False, "not an agent of group g"),
    ("a prefix is not a match", facts(environ=ENV - {b"MAESTRO_GROUP_ID=g"} | {b"MAESTRO_GROUP_ID=gg"}), {}, False,
     "not an agent"),
    ("environment unreadable", facts(environ=None), {}, False, "environment could not be read"),
    ("started earlier (reused pid)", facts(start_time=999), {}, False, "another time than the journal"),
    ("started much later", facts(start_time=1000 + START_TIME_TOLERANCE + 1), {}, False, "another time"),
    ("start time unreadable", facts(start_time=None), {}, False, "start time could not be read"),
    ("group unreadable", facts(pgid=None), {}, False, "process group could not be read"),
]


@pytest.mark.parametrize(("name", "f", "kwargs", "ours", "reason"), AGENT_CASES, ids=[c[0] for c in AGENT_CASES])
def test_judge_agent(name: str, f: ProcessFacts, kwargs: dict[str, object], ours: bool, reason: str) -> None:
    verdict = agent(f, **kwargs)  # type: ignore[arg-type]
    assert verdict.ours is ours and bool(verdict) is ours
    assert reason in verdict.reason
    if ours:
        assert verdict.pgid == f.pgid
    else:
        assert f"pid {f.pid}" in verdict.reason and "\n" not in verdict.reason


# --------------------------------------------------------------------------- pure: coordinators

LOCK = (1, 42)
COORDINATOR_CASES = [
    ("the CLI, no lock to compare", facts(), 1000, None, True, ""),
    ("the CLI holding the lock", facts(open_files=frozenset({LOCK})), 1000, LOCK, True, ""),
    ("embedded, holds the lock", facts(cmdline=("pytest",), open_files=frozenset({LOCK})), 1000, LOCK, True, ""),
    ("embedded, lock not held", facts(cmdline=("pytest",), open_files=frozenset({(1, 43)})), 1000, LOCK, False,
     "pid 500 does not hold the group's lock"),
    ("another group's CLI coordinator", facts(open_files=frozenset({(1, 43)})), 1000, LOCK, False,
     "does not hold the group's lock"),
    ("open files unreadable", facts(open_files=None), 1000, LOCK, False, "open files could not be read"),
    ("a sleep", facts(cmdline=("sleep", "60")), 1000, None, False, "pid 500 is not a maestro coordinator"),
    ("a sleep, lock given", facts(cmdline=("sleep", "60"), open_files=frozenset()), 1000, LOCK, False,
     "does not hold"),
    ("no start time recorded", facts(), None, None, False, "the lock records no start time for pid 500"),
    ("a string start time", facts(), "1000", None, False, "records no start time"),
    ("a boolean start time", facts(start_time=1), True, None, False, "records no start time"),
    ("another start time", facts(), 999, None, False, "another time than the lock records"),
    ("pid -1", facts(pid=-1, alive=False), 1000, None, False, "pid -1 cannot be a coordinator"),
    ("pid 1", facts(pid=1), 1000, None, False, "pid 1 cannot be a coordinator"),
    ("this process", facts(pid=8), 1000, None, False, "this process or one of its parents"),
    ("gone", facts(alive=False), 1000, None, False, "pid 500 is not running"),
    ("command line unreadable", facts(cmdline=None), 1000, None, False, "its command: 'unknown'"),
]


@pytest.mark.parametrize(("name", "f", "start", "lock", "ours", "reason"), COORDINATOR_CASES,
                         ids=[c[0] for c in COORDINATOR_CASES])
def test_judge_coordinator(name: str, f: ProcessFacts, start: object, lock: tuple[int, int] | None, ours: bool,
                           reason: str) -> None:
    verdict = judge_coordinator(f, recorded_start_time=start, lock_file=lock)
    assert verdict.ours is ours and reason in verdict.reason


COMMAND_LINES = [
    (["/venv/bin/python3", "/venv/bin/maestro-parallel", "execute"], True),
    (["maestro-parallel", "cancel"], True),
    (["/usr/local/bin/maestro-parallel"], True),
    (["python3", "-m", "maestro_parallel", "execute"], True),
    (["python3.11", "-u", "-X", "dev", "-m", "maestro_parallel"], True),
    (["python", "-mmaestro_parallel"], True),
    (["python", "-m", "maestro_parallel.__main__"], True),
    (["python", "/src/maestro_parallel/__main__.py"], True),
    (["python", "/src/maestro_parallel"], True),
    (["python", "-m", "pytest", "maestro_parallel"], False),
    (["python", "-c", "import maestro_parallel"], False),
    (["python", "evil.py", "maestro-parallel"], False),
    (["sleep", "maestro-parallel"], False),
    (["sleep", "-m", "maestro_parallel"], False),
    (["bash", "-c", "maestro-parallel"], False),
    (["python"], False),
    ([], False),
]


@pytest.mark.parametrize(("argv", "expected"), COMMAND_LINES, ids=[" ".join(a) or "empty" for a, _ in COMMAND_LINES])
def test_is_maestro_command_line(argv: list[str], expected: bool) -> None:
    assert is_maestro_command_line(argv) is expected


def test_a_refused_verdict_never_reaches_kill() -> None:
    assert signal_if_ours(Verdict(-1, False, "x"), signal.SIGTERM, group=True) is False
    assert signal_if_ours(Verdict(-1, True), signal.SIGTERM, group=False) is False  # even if claimed ours
    assert signal_if_ours(Verdict(0, True), signal.SIGTERM, group=True) is False
    assert signal_if_ours(Verdict(5000, True, pgid=1), signal.SIGTERM, group=True) is False
    assert signal_if_ours(Verdict(5000, True, pgid=None), signal.SIGTERM, group=True) is False


# --------------------------------------------------------------------------- real processes


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def start_time_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        data = handle.read()
    return int(data[data.rfind(b")") + 2 :].split()[19])


def test_a_real_agent_is_ours_and_a_victim_is_not(spawn: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    env = {**os.environ, "MAESTRO_REPO_ROOT": str(tmp_path), "MAESTRO_GROUP_ID": "g"}
    ours = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    spawn += [ours, victim]
    verdict = agent_verdict(ours.pid, ours.pid, start_time_of(ours.pid), repo_root=tmp_path, group_id="g")
    assert verdict.ours and verdict.pgid == ours.pid
    forged = agent_verdict(victim.pid, victim.pid, start_time_of(victim.pid), repo_root=tmp_path, group_id="g")
    assert not forged.ours and f"pid {victim.pid} is not an agent of group g" in forged.reason
    assert not signal_if_ours(forged, signal.SIGTERM, group=True)
    assert pid_alive(victim.pid)
    assert not agent_verdict(ours.pid, ours.pid, start_time_of(ours.pid), repo_root=tmp_path, group_id="h").ours
    assert not agent_verdict(ours.pid, ours.pid, start_time_of(ours.pid) - 500, repo_root=tmp_path,
                             group_id="g").ours
    for junk in (-1, 0, 1, "12", None, True, 2**40):
        assert not agent_verdict(junk, junk, None, repo_root=tmp_path, group_id="g").ours
    assert signal_if_ours(verdict, signal.SIGTERM, group=True)
    assert ours.wait(10) == -signal.SIGTERM


def test_an_agent_outside_its_journaled_group_is_not_ours(spawn: list[subprocess.Popen[bytes]],
                                                          tmp_path: Path) -> None:
    env = {**os.environ, "MAESTRO_REPO_ROOT": str(tmp_path), "MAESTRO_GROUP_ID": "g"}
    ours = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    spawn += [ours, victim]
    # A forged event pairing our agent's pid with a victim's process group.
    verdict = agent_verdict(ours.pid, victim.pid, None, repo_root=tmp_path, group_id="g")
    assert not verdict.ours and "not the journaled" in verdict.reason


def test_read_facts_of_this_process_protects_it() -> None:
    f = read_facts(os.getpid())
    assert f.alive and os.getpid() in f.protected_pids and os.getpgrp() in f.protected_groups
    assert f.cmdline and f.start_time == start_time_of(os.getpid())
    assert not read_facts(-1).alive and not read_facts(0).alive


LOCK_HOLDER = r"""
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
with open(f"/proc/{os.getpid()}/stat", "rb") as h:
    data = h.read()
start = int(data[data.rfind(b")") + 2:].split()[19])
os.write(fd, json.dumps({"pid": os.getpid(), "start_time": start}).encode())
print("ready", flush=True)
time.sleep(60)
"""


def test_an_embedded_coordinator_holding_its_lock_is_ours(spawn: list[subprocess.Popen[bytes]],
                                                          tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock)], stdout=subprocess.PIPE)
    spawn.append(holder)
    assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
    record = json.loads(lock.read_text())
    assert coordinator_verdict(record, lock).ours
    other = tmp_path / "other"
    other.write_text("")
    assert not coordinator_verdict(record, other).ours  # it holds another lock, not this one
    assert not coordinator_verdict({**record, "start_time": record["start_time"] - 1}, lock).ours
    assert not coordinator_verdict({"pid": record["pid"]}, lock).ours
    assert "cannot be read" in coordinator_verdict(record, tmp_path / "missing").reason


def test_a_lock_naming_a_victim_or_minus_one_is_refused(spawn: list[subprocess.Popen[bytes]],
                                                        tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    spawn.append(victim)
    lock = tmp_path / ".lock"
    lock.write_text("")
    forged = {"pid": victim.pid, "start_time": start_time_of(victim.pid)}  # copied from /proc
    verdict = coordinator_verdict(forged, lock)
    assert not verdict.ours and f"pid {victim.pid} does not hold the group's lock" in verdict.reason
    assert f"pid {victim.pid} is not a maestro coordinator" in coordinator_verdict(forged).reason
    for record in ({"pid": -1}, {"pid": -1, "start_time": 0}, {"pid": 0}, {"pid": 1, "start_time": 1}, {},
                   {"pid": "1"}, {"pid": True}):
        refused = coordinator_verdict(record, lock)
        assert not refused.ours and not signal_if_ours(refused, signal.SIGTERM, group=False), record
    assert pid_alive(victim.pid)


def test_a_coordinator_by_its_command_line_is_ours(spawn: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    # A real process whose /proc cmdline is `python .../maestro_parallel/__main__.py` (it only waits).
    package = tmp_path / "maestro_parallel"
    package.mkdir()
    (package / "__main__.py").write_text("import sys; sys.stdin.read()")
    child = subprocess.Popen([sys.executable, str(package / "__main__.py")], stdin=subprocess.PIPE)
    spawn.append(child)
    deadline = time.monotonic() + 10
    while read_facts(child.pid).cmdline != (sys.executable, str(package / "__main__.py")):
        assert time.monotonic() < deadline, "the child never finished its exec"
        time.sleep(0.01)
    record = {"pid": child.pid, "start_time": start_time_of(child.pid)}
    assert coordinator_verdict(record).ours
    (tmp_path / ".lock").write_text("")
    refused = coordinator_verdict(record, tmp_path / ".lock")  # a coordinator, but not of this group
    assert not refused.ours and "does not hold the group's lock" in refused.reason
    assert signal_if_ours(coordinator_verdict(record), signal.SIGTERM, group=False)
    assert child.wait(10) == -signal.SIGTERM
