"""Running one command (DESIGN §7, §11): real children, real signals, real log files.

Every test here spawns real processes (``sh`` or ``sys.executable``) and checks
what a user would see afterwards: which pids are still alive (read from
/proc, zombies counting as dead), what the log file holds, its permissions,
the exit code.  Timing is only ever asserted as a generous bound around the
grace period, never as a tight absolute number.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from helpers import pid_alive

from maestro_parallel.runtime.process import AgentProcess, CommandResult, run_command
from maestro_parallel.runtime.procfs import START_TIME_TOLERANCE, process_start_time
from maestro_parallel.runtime.stopping import (
    describe_returncode,
    group_alive,
    kill_process_group,
    stop_process_group,
)

#: Room for a loaded 2-core CI machine on top of every bound the module promises.
SLACK = 5.0
#: Run the tests that copy output once straight into the file, once through the capped pipe.
LOG_MODES = pytest.mark.parametrize("cap", [0, 1 << 20], ids=["direct", "capped"])

#: A child that ignores SIGTERM once it has written its pid to argv[1] (atomically).
IGNORE_TERM = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


# --------------------------------------------------------------------------- helpers


def live_members(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` that are alive (zombies excluded), from /proc."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.01)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def pid_file_ready(path: Path) -> Callable[[AgentProcess], Awaitable[None]]:
    """An ``on_start`` callback that returns once the child wrote a pid into ``path``."""

    async def on_start(agent: AgentProcess) -> None:
        await wait_until(lambda: read_pid(path) is not None, f"a pid in {path.name}")

    return on_start


def sh_tree(pid_file: Path) -> list[str]:
    """``sh`` with a background ``sleep 60`` (its pid written to ``pid_file``) and a foreground one."""
    return ["sh", "-c", f'sleep 60 & echo $! > "{pid_file}.tmp" && mv "{pid_file}.tmp" "{pid_file}"; sleep 60']


@pytest.fixture
def env() -> dict[str, str]:
    return dict(os.environ)


# --------------------------------------------------------------------------- the whole tree is stopped


@LOG_MODES
async def test_timeout_leaves_no_process_of_the_tree(tmp_path: Path, env: dict[str, str], cap: int) -> None:
    pid_file = tmp_path / "grandchild.pid"
    started: list[AgentProcess] = []
    start_times: list[int | None] = []
    ready = pid_file_ready(pid_file)

    async def on_start(agent: AgentProcess) -> None:
        started.append(agent)
        await ready(agent)
        start_times.append(process_start_time(agent.pid))

    result = await run_command(
        sh_tree(pid_file), cwd=tmp_path, env=env, log_path=tmp_path / "t.log",
        timeout=0.3, grace=2.0, max_log_bytes=cap, on_start=on_start,
    )

    grandchild = read_pid(pid_file)
    assert grandchild is not None
    assert result.timed_out and not result.stopped
    assert result.returncode == -signal.SIGTERM
    assert describe_returncode(result.returncode) == "killed by SIGTERM"
    assert result.pid == result.pgid == started[0].pid
    # The start time recorded beside the pid is the process's own (guards a later kill against pid reuse).
    # Recorded from the boot clock just before the fork: the kernel's own value, or a tick before it.
    assert isinstance(result.start_time, int) and isinstance(start_times[0], int)
    assert 0 <= start_times[0] - result.start_time <= START_TIME_TOLERANCE
    # Checked at once: run_command returns only when the group is gone.
    assert not pid_alive(result.pid)
    assert not pid_alive(grandchild)
    assert live_members(result.pgid) == []
    assert not group_alive(result.pgid)


@LOG_MODES
async def test_cancelling_the_caller_leaves_no_process_of_the_tree(
    tmp_path: Path, env: dict[str, str], cap: int
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    ready = pid_file_ready(pid_file)
    pgids: list[int] = []

    with anyio.move_on_after(60) as scope:

        async def on_start(agent: AgentProcess) -> None:
            pgids.append(agent.pgid)
            await ready(agent)
            scope.deadline = anyio.current_time() + 0.1  # the caller's scope expires while the agent runs

        await run_command(
            sh_tree(pid_file), cwd=tmp_path, env=env, log_path=tmp_path / "t.log",
            grace=2.0, max_log_bytes=cap, on_start=on_start,
        )
        pytest.fail("run_command returned although its caller was cancelled")

    assert scope.cancelled_caught
    grandchild = read_pid(pid_file)
    assert grandchild is not None
    assert not pid_alive(pgids[0])
    assert not pid_alive(grandchild)
    assert live_members(pgids[0]) == []


@LOG_MODES
async def test_normal_exit_stops_a_background_child_left_in_the_group(
    tmp_path: Path, env: dict[str, str], cap: int
) -> None:
    pid_file = tmp_path / "bg.pid"
    argv = ["sh", "-c", f'sleep 60 & echo $! > "{pid_file}"; echo done']
    grace = 10.0
    before = time.monotonic()

    result = await run_command(argv, cwd=tmp_path, env=env, log_path=tmp_path / "t.log", grace=grace, max_log_bytes=cap)

    elapsed = time.monotonic() - before
    background = read_pid(pid_file)
    assert background is not None
    assert result.returncode == 0 and not result.timed_out and not result.stopped
    assert not pid_alive(background)
    assert live_members(result.pgid) == []
    # `sleep` dies on SIGTERM at once: no need to sit out the grace period.
    assert elapsed < grace
    assert (tmp_path / "t.log").read_text() == "done\n"


@pytest.mark.parametrize("who", ["leader", "grandchild"])
async def test_a_process_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, env: dict[str, str], who: str
) -> None:
    pid_file = tmp_path / "stubborn.pid"
    if who == "leader":
        argv = [sys.executable, "-c", IGNORE_TERM, str(pid_file)]
    else:
        leader = (
            "import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {IGNORE_TERM!r}, {str(pid_file)!r}])\n"
            "time.sleep(60)\n"
        )
        argv = [sys.executable, "-c", leader]
    ready = pid_file_ready(pid_file)
    marks: list[float] = []

    async def on_start(agent: AgentProcess) -> None:
        marks.append(time.monotonic())  # the timeout runs from the spawn, not from when the pid file appears
        await ready(agent)

    # Long enough for the stubborn process to start and write its pid file even on a loaded machine.
    timeout, grace = 2.0, 1.0
    result = await run_command(
        argv, cwd=tmp_path, env=env, log_path=tmp_path / "t.log", timeout=timeout, grace=grace, on_start=on_start
    )
    stop_time = time.monotonic() - marks[0]

    stubborn = read_pid(pid_file)
    assert stubborn is not None
    assert result.timed_out
    assert not pid_alive(stubborn)
    assert live_members(result.pgid) == []
    if who == "leader":
        assert result.returncode == -signal.SIGKILL
    else:
        assert result.returncode == -signal.SIGTERM  # the leader obeyed; its child needed SIGKILL
    # It was given the grace period, and stopping it took not much longer.
    assert timeout + grace - 0.05 <= stop_time < timeout + grace + SLACK


async def test_stop_process_group_is_bounded_even_when_its_caller_is_cancelled(
    tmp_path: Path, env: dict[str, str]
) -> None:
    pid_file = tmp_path / "stubborn.pid"
    agent = await AgentProcess.start(
        [sys.executable, "-c", IGNORE_TERM, str(pid_file)],
        cwd=tmp_path, env=env, log_path=tmp_path / "t.log", grace=1.0,
    )
    await wait_until(lambda: read_pid(pid_file) is not None, "the stubborn child")
    before = time.monotonic()
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled before it starts: the stop is shielded and still completes
        await agent.aclose()
    elapsed = time.monotonic() - before

    assert agent.returncode == -signal.SIGKILL
    assert not pid_alive(agent.pid)
    assert 1.0 - 0.05 <= elapsed < 1.0 + SLACK
    await agent.aclose()  # a second close is harmless


async def test_stopping_a_group_that_is_gone_returns_at_once() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    before = time.monotonic()
    await stop_process_group(proc.pid, grace=30.0)
    assert time.monotonic() - before < SLACK


async def test_kill_process_group_kills_without_grace(tmp_path: Path) -> None:
    pid_file = tmp_path / "stubborn.pid"
    proc = subprocess.Popen([sys.executable, "-c", IGNORE_TERM, str(pid_file)], start_new_session=True)
    try:
        await wait_until(lambda: read_pid(pid_file) is not None, "the stubborn child")
        kill_process_group(proc.pid)
        assert proc.wait(timeout=20) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    kill_process_group(proc.pid)  # a group that is gone is not an error


# --------------------------------------------------------------------------- stdin, output, log file


async def test_stdin_is_dev_null(tmp_path: Path, env: dict[str, str]) -> None:
    script = "import os, sys\nprint(os.readlink('/proc/self/fd/0'))\nprint(repr(sys.stdin.read()))"
    # Our own stdin becomes a pipe that never ends: a child inheriting it would block reading it.
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        result = await run_command(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, log_path=tmp_path / "t.log", timeout=20
        )
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    assert result.returncode == 0 and not result.timed_out
    assert (tmp_path / "t.log").read_text().splitlines() == ["/dev/null", "''"]


@LOG_MODES
async def test_stdout_and_stderr_land_in_a_private_log(
    tmp_path: Path, env: dict[str, str], cap: int
) -> None:
    script = "import sys\nprint('to stdout', flush=True)\nprint('to stderr', file=sys.stderr, flush=True)\nsys.exit(7)"
    log = tmp_path / "t.log"
    old = os.umask(0)
    try:
        result = await run_command(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, log_path=log, max_log_bytes=cap
        )
    finally:
        os.umask(old)
    assert result.returncode == 7
    assert describe_returncode(result.returncode) == "exit code 7"
    assert log.read_text().splitlines() == ["to stdout", "to stderr"]
    assert log.stat().st_mode & 0o777 == 0o600


async def test_append_log_keeps_the_earlier_output(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "t.log"
    for word in ("first", "second"):
        await run_command(["echo", word], cwd=tmp_path, env=env, log_path=log, append_log=True)
    assert log.read_text() == "first\nsecond\n"
    await run_command(["echo", "third"], cwd=tmp_path, env=env, log_path=log)
    assert log.read_text() == "third\n"


async def test_a_log_planted_as_a_symlink_is_not_written_through(tmp_path: Path, env: dict[str, str]) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    log = tmp_path / "t.log"
    log.symlink_to(outside)
    with pytest.raises(OSError):
        await run_command(["echo", "overwritten"], cwd=tmp_path, env=env, log_path=log)
    assert outside.read_text() == "precious\n"


async def test_max_log_bytes_keeps_the_head_and_the_end(tmp_path: Path, env: dict[str, str]) -> None:
    # 3,000 numbered lines (about 270 kB) between a known head and end, written in several chunks.
    script = (
        "import sys\n"
        "out = sys.stdout\n"
        "out.write('HEAD first line\\n'); out.flush()\n"
        "for i in range(3000):\n"
        "    out.write(f'middle line {i:05d} ' + 'x' * 80 + '\\n')\n"
        "    if i % 500 == 0: out.flush()\n"
        "out.write('THE END: result is 42\\n')\n"
    )
    expected = (
        "HEAD first line\n"
        + "".join(f"middle line {i:05d} " + "x" * 80 + "\n" for i in range(3000))
        + "THE END: result is 42\n"
    ).encode()
    chunks: list[bytes] = []
    log = tmp_path / "t.log"
    cap = 4096

    result = await run_command(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, log_path=log, max_log_bytes=cap,
        observer=chunks.append,
    )

    assert result.returncode == 0
    assert b"".join(chunks) == expected  # the observer saw every byte, the dropped middle included
    data = log.read_bytes()
    note = re.search(
        rb"\n\[maestro-parallel: (\d+) bytes dropped from the middle of this log \(max_log_bytes = 4096\)\]\n", data
    )
    assert note is not None, data[:200]
    head, tail = data[: note.start()], data[note.end() :]
    assert head.startswith(b"HEAD first line\n")
    assert tail.endswith(b"THE END: result is 42\n")
    assert expected.startswith(head) and expected.endswith(tail)
    assert len(head) + len(tail) <= cap
    assert len(head) + int(note.group(1)) + len(tail) == len(expected)


async def test_output_under_the_cap_is_kept_whole(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "t.log"
    result = await run_command(
        ["sh", "-c", "echo one; echo two >&2"], cwd=tmp_path, env=env, log_path=log, max_log_bytes=4096
    )
    assert result.returncode == 0
    assert log.read_text() == "one\ntwo\n"


@LOG_MODES
async def test_an_agent_that_closes_its_output_is_still_waited_for(
    tmp_path: Path, env: dict[str, str], cap: int
) -> None:
    marker = tmp_path / "finished"
    script = (
        "import os, sys, time\n"
        "print('closing my output', flush=True)\n"
        "os.close(1); os.close(2)\n"
        "time.sleep(0.5)\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "os._exit(3)\n"
    )
    result = await run_command([sys.executable, "-c", script], cwd=tmp_path, env=env, log_path=tmp_path / "t.log",
                               max_log_bytes=cap, grace=5.0)
    assert result.returncode == 3  # it ran to its own end: not judged finished at EOF, not killed
    assert marker.exists()
    assert (tmp_path / "t.log").read_text() == "closing my output\n"


# --------------------------------------------------------------------------- stop_event


async def test_stop_event_gives_the_grace_then_stops(tmp_path: Path, env: dict[str, str]) -> None:
    pid_file = tmp_path / "agent.pid"
    script = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"
    stop = anyio.Event()
    marks: list[float] = []
    ready = pid_file_ready(pid_file)

    async def on_start(agent: AgentProcess) -> None:
        await ready(agent)
        marks.append(time.monotonic())
        stop.set()

    grace = 0.5
    result = await run_command([sys.executable, "-c", script], cwd=tmp_path, env=env, log_path=tmp_path / "t.log",
                               grace=grace, timeout=60, stop_event=stop, on_start=on_start)
    elapsed = time.monotonic() - marks[0]

    assert result.stopped and not result.timed_out
    assert result.returncode == -signal.SIGTERM
    assert not pid_alive(result.pid)
    assert grace - 0.05 <= elapsed < 2 * grace + SLACK


async def test_stop_event_when_the_agent_exits_on_its_own_within_the_grace(
    tmp_path: Path, env: dict[str, str]
) -> None:
    go = tmp_path / "go"
    script = f"import os, time\nwhile not os.path.exists({str(go)!r}):\n    time.sleep(0.01)\nprint('finished')"
    stop = anyio.Event()
    marks: list[float] = []

    async def on_start(agent: AgentProcess) -> None:
        marks.append(time.monotonic())
        stop.set()
        go.touch()

    grace = 30.0
    result = await run_command([sys.executable, "-c", script], cwd=tmp_path, env=env, log_path=tmp_path / "t.log",
                               grace=grace, stop_event=stop, on_start=on_start)

    assert not result.stopped and not result.timed_out
    assert result.returncode == 0
    assert time.monotonic() - marks[0] < grace / 2
    assert (tmp_path / "t.log").read_text() == "finished\n"


async def test_a_stop_event_never_set_does_not_stop_anything(tmp_path: Path, env: dict[str, str]) -> None:
    result = await run_command(["sh", "-c", "exit 4"], cwd=tmp_path, env=env, log_path=tmp_path / "t.log",
                               stop_event=anyio.Event())
    assert result == CommandResult(
        returncode=4, timed_out=False, stopped=False, pid=result.pid, pgid=result.pid,
        start_time=result.start_time, duration=result.duration,
    )


# --------------------------------------------------------------------------- small functions


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (None, "did not exit"),
        (0, "exit code 0"),
        (1, "exit code 1"),
        (255, "exit code 255"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-signal.SIGINT, "killed by SIGINT"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_returncode(returncode: int | None, text: str) -> None:
    assert describe_returncode(returncode) == text


def _ticks_since_boot() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0]) * os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("name", ["sleep", "a) b (c) d"], ids=["plain", "parentheses-in-name"])
def test_process_start_time(tmp_path: Path, name: str) -> None:
    own = process_start_time(os.getpid())
    assert isinstance(own, int)
    assert process_start_time(os.getpid()) == own  # stable for one process

    program = tmp_path / name
    program.symlink_to(subprocess.run(["sh", "-c", "command -v sleep"], capture_output=True, text=True,
                                      check=True).stdout.strip())
    before = _ticks_since_boot()
    child = subprocess.Popen([str(program), "60"])
    try:
        started = process_start_time(child.pid)
        after = _ticks_since_boot()
        assert isinstance(started, int)
        assert started != own
        # The command name (which may hold ") ") must not shift the fields.
        assert before - 2 <= started <= after + 2
    finally:
        child.kill()
        child.wait()
    assert process_start_time(child.pid) is None  # reaped: no such process


def test_group_alive_follows_the_group_and_ignores_a_zombie() -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert group_alive(child.pid)
        child.terminate()
        # Wait for it to exit, but leave it unreaped: a zombie, still in the group.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not pid_alive(child.pid)
        # group_alive may answer from a view of /proc a few milliseconds old; it must turn false
        # although the zombie stays (nobody reaps it until the end of this test)...
        deadline = time.monotonic() + 10
        while group_alive(child.pid):
            assert time.monotonic() < deadline, "group_alive still counts a zombie"
            time.sleep(0.005)
        os.killpg(child.pid, 0)  # ...while the kernel still counts the zombie as a member.
    finally:
        child.kill()
        child.wait()
    assert not group_alive(child.pid)


def test_group_alive_sees_a_group_born_just_after_an_earlier_look() -> None:
    # group_alive caches its view of /proc for a moment; a group started within that moment must still
    # count, or stop_process_group would return at once and leave a fresh agent running.
    # posix_spawn starts the child in well under that moment.
    sleep = shutil.which("sleep")
    assert sleep is not None
    for _ in range(20):
        assert group_alive(os.getpgrp())
        pid = os.posix_spawn(sleep, ["sleep", "60"], os.environ, setsid=True)
        try:
            assert group_alive(pid)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# --------------------------------------------------------------------------- spawning failures


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@LOG_MODES
async def test_spawning_a_missing_program_raises_and_leaks_no_descriptor(
    tmp_path: Path, env: dict[str, str], cap: int
) -> None:
    log = tmp_path / "t.log"
    # One real spawn first, so that whatever the event loop sets up once is not counted as a leak.
    await run_command(["true"], cwd=tmp_path, env=env, log_path=log, max_log_bytes=cap)
    before = _open_fds()
    for _ in range(5):
        with pytest.raises(FileNotFoundError):
            await run_command([str(tmp_path / "no-such-agent")], cwd=tmp_path, env=env, log_path=log, max_log_bytes=cap)
        with pytest.raises(FileNotFoundError):
            await AgentProcess.start([str(tmp_path / "no-such-agent")], cwd=tmp_path, env=env, log_path=log,
                                     grace=1.0, max_log_bytes=cap)
    assert _open_fds() == before
