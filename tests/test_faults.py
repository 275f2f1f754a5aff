"""The fault suite: real coordinators, real agents and real signals under crashes, kills and floods.

Every case starts ``python -m maestro_parallel`` (or the coordinator in process)
with small agent scripts, breaks something on purpose (kill -9, SIGINT twice,
a gigabyte of output, a file-size limit, a hanging tracker...) and then checks
what survives on disk (``metadata.json``, ``events.jsonl``, logs) and in the
process table (every process carrying the test repository's
``MAESTRO_REPO_ROOT`` in its environment).  Figures and the command that reruns
each case: ``docs/RELIABILITY.md``.  Run just this suite with
``python -m pytest -m faults``.

Knobs (environment): ``MAESTRO_FAULT_KILLS`` (kill -9 moments, default 24),
``MAESTRO_FAULT_SEED`` (their seed), ``MAESTRO_FLOOD_BYTES`` (the flood, default
1 GiB), ``MAESTRO_FAULT_REPORT`` (a file to append the measured figures to, as
JSON lines).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import pid_alive

from maestro_parallel import AsyncParallelCoordinator, GroupMetadata, TaskStatus
from maestro_parallel.config import load_config
from maestro_parallel.events import decode_journal, replay
from maestro_parallel.runtime.procfs import process_start_time
from maestro_parallel.state.locks import lock_holder
from maestro_parallel.trackers import MemoryTracker

pytestmark = pytest.mark.faults

PY = sys.executable
KILLS = int(os.environ.get("MAESTRO_FAULT_KILLS", "24"))
SEED = int(os.environ.get("MAESTRO_FAULT_SEED", "20261128"))
FLOOD_BYTES = int(os.environ.get("MAESTRO_FLOOD_BYTES", str(1 << 30)))

#: The agent of this suite.  It records every start and end in runs.jsonl (like
#: conftest's agent) and misbehaves as its prompt says:
#:   sleep=<s> exit=<n>   sleep, then exit with n
#:   failonce             exit 3 the first time it runs for its task, then behave
#:   ignoreterm           ignore SIGTERM (and note each one in term-<task>)
#:   grandchild           leave `sleep 120` in its process group (pid in grandchild-<task>.pid)
#:   stubborn             leave a grandchild that ignores SIGTERM (pid in stubborn-<task>.pid)
#:   daemon               double-fork a daemon into its own session (pid in daemon-<task>.pid);
#:                        it keeps the agent's stdout open
#:   closeout             close stdout and stderr after the first line, then go on
#:   flood=<bytes>        write that much to stdout between a first and a last line
FAULT_AGENT = r'''
import json, os, re, signal, subprocess, sys, time
task = sys.argv[1]
root = os.environ["MAESTRO_REPO_ROOT"]
prompt = open(os.environ["MAESTRO_PROMPT_FILE"], encoding="utf-8").read()
def opt(name, default=None):
    m = re.search(r"\b" + name + r"=(\S+)", prompt)
    return m.group(1) if m else default
def note(event):
    with open(os.path.join(root, "runs.jsonl"), "a") as f:
        f.write(json.dumps({"task": task, "event": event, "t": time.time(), "pid": os.getpid(),
                            "argv": sys.argv[1:]}) + "\n")
def pidfile(kind, pid):
    path = os.path.join(root, f"{kind}-{task}.pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(pid))
    os.replace(path + ".tmp", path)
note("start")
if "ignoreterm" in prompt:
    signal.signal(signal.SIGTERM, lambda *_: open(os.path.join(root, f"term-{task}"), "a").close())
if "failonce" in prompt and not os.path.exists(os.path.join(root, f"failed-{task}")):
    open(os.path.join(root, f"failed-{task}"), "w").close()
    print("failing once", flush=True)
    note("end")
    sys.exit(3)
if "grandchild" in prompt:
    pidfile("grandchild", subprocess.Popen(["sleep", "120"]).pid)
if "stubborn" in prompt:
    path = os.path.join(root, f"stubborn-{task}.pid")
    subprocess.Popen([sys.executable, "-c",
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({path!r} + '.tmp', 'w').write(str(os.getpid())); os.replace({path!r} + '.tmp', {path!r})\n"
        "time.sleep(120)"])
if "daemon" in prompt:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            pidfile("daemon", os.getpid())
            time.sleep(120)
        os._exit(0)
    os.wait()
flood = int(opt("flood", "0"))
if flood:
    out = sys.stdout.buffer
    out.write(b"FIRST LINE\n")
    chunk = (b"y" * 1023 + b"\n") * 64
    left = flood
    while left > 0:
        n = min(left, len(chunk))
        out.write(chunk[:n])
        left -= n
    out.write(b"\nLAST LINE\n")
    out.flush()
else:
    print(opt("print", f"{task} working"), flush=True)
if "closeout" in prompt:
    os.close(1)
    os.close(2)
time.sleep(float(opt("sleep", "0")))
note("end")
sys.exit(int(opt("exit", "0")))
'''


# --------------------------------------------------------------------------- helpers


def make_repo(
    root: Path,
    *,
    grace: float = 1.0,
    refresh: bool = False,
    tests: bool = False,
    slow_phases: bool = False,
    agent_extra: str = "",
    extra: str = "",
) -> Path:
    """A repository with the fault agent and a config that runs it with this interpreter."""
    root.mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "agent.py").write_text(FAULT_AGENT)
    folder = root / ".flow" / "maestro"
    folder.mkdir(parents=True)
    py = json.dumps(PY)
    pause = "import time; time.sleep(0.3); " if slow_phases else ""  # a refresh and a test suite that take a while
    (folder / "config.toml").write_text(
        textwrap.dedent(
            f"""
            [agent]
            command = [{py}, "agent.py", "{{task_id}}"]
            timeout_seconds = 60
            grace_seconds = {grace}
            {agent_extra}

            [refresh]
            enabled = {str(refresh).lower()}
            command = [{py}, "-c", "{pause}print('the state of the project')"]

            [tests]
            enabled = {str(tests).lower()}
            command = [{py}, "-c", "{pause}pass"]

            [tracker]
            kind = "local"
            poll_interval_seconds = 0.2
            """
        )
        + textwrap.dedent(extra)
    )
    return root


def task(task_id: str, description: str = "", group: str = "g", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "title": f"task {task_id}", "description": f"[P:Group-{group}] {description}", **extra}


def write_tasks(repo: Path, tasks: list[dict[str, Any]]) -> Path:
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def cli(repo: Path, *args: str) -> list[str]:
    return [PY, "-m", "maestro_parallel", "--repo-root", str(repo), *args]


def execute_argv(repo: Path, *extra: str, group: str = "g") -> list[str]:
    return cli(repo, "-q", "execute", "--group-id", group, "--tasks-file", str(repo / "tasks.json"), "--json", *extra)


def group_dir(repo: Path, group: str = "g") -> Path:
    return repo / ".flow" / "maestro" / "parallel_groups" / group


def runs(repo: Path, *, lenient: bool = False) -> list[dict[str, Any]]:
    """What the agents recorded; ``lenient``: skip lines cut short (the agents' disk was full too)."""
    path = repo / "runs.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            if not lenient:
                raise
    return records


def starts(repo: Path) -> list[str]:
    return [e["task"] for e in runs(repo) if e["event"] == "start"]


def read_pid(repo: Path, kind: str, task_id: str) -> int:
    return int((repo / f"{kind}-{task_id}.pid").read_text())


def journal_bytes(repo: Path, group: str = "g") -> bytes:
    try:
        return (group_dir(repo, group) / "events.jsonl").read_bytes()
    except FileNotFoundError:
        return b""


def complete_lines(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def journal(repo: Path, group: str = "g") -> list[dict[str, Any]]:
    """The journal's events; every complete line must parse (a torn last line is allowed)."""
    data = journal_bytes(repo, group)
    for line in complete_lines(data).splitlines():
        if line.strip():
            event = json.loads(line)  # raises on a corrupt complete line
            assert isinstance(event, dict) and isinstance(event.get("event"), str), line
    events, skipped = decode_journal(data)
    assert skipped == 0
    return events


def snapshot(repo: Path, group: str = "g") -> GroupMetadata | None:
    """metadata.json parsed whole, or None when absent; never half-written."""
    path = group_dir(repo, group) / "metadata.json"
    if not path.exists():
        return None
    meta = GroupMetadata.from_dict(json.loads(path.read_text()))
    assert meta.group_id == group
    return meta


def leftover_temp_files(repo: Path, group: str = "g") -> list[str]:
    folder = group_dir(repo, group)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def processes_of(root: Path) -> list[int]:
    """Live processes (not zombies) whose environment names a repository at or under ``root``.

    Every agent, its grandchildren and its daemons carry ``MAESTRO_REPO_ROOT``;
    the coordinator does not.  Independent of the library's own scan on purpose.
    """
    prefix = f"MAESTRO_REPO_ROOT={root}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
        except OSError:
            continue
        if any(v == prefix or v.startswith(prefix + b"/") for v in variables) and pid_alive(int(name)):
            found.append(int(name))
    return found


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def no_processes_left(root: Path, timeout: float = 10.0) -> None:
    """Wait (bounded) until nothing of ``root``'s agents is alive; fail naming what is."""
    deadline = time.monotonic() + timeout
    while processes_of(root):
        if time.monotonic() > deadline:
            left = processes_of(root)
            details = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for pid in left}
            raise AssertionError(f"processes of {root} still alive: {details}")
        time.sleep(0.02)


def report(case: str, **figures: Any) -> None:
    """Append measured figures to $MAESTRO_FAULT_REPORT (for docs/RELIABILITY.md)."""
    path = os.environ.get("MAESTRO_FAULT_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"case": case, **figures}) + "\n")


def wait_rusage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for ``proc`` with ``os.wait4``: (exit code, its peak RSS in MiB)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{proc.args} did not end within {timeout}s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


@pytest.fixture(autouse=True)
def reaper(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kill, at teardown, every coordinator started here and every process of the test's repositories."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass
    for pid in processes_of(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(
    reaper: list[subprocess.Popen[bytes]], argv: list[str], **kwargs: Any
) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(argv, **kwargs)
    reaper.append(proc)
    return proc


def assert_one_line_error(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- kill -9 at random moments


@pytest.mark.timeout(600)
def test_kill9_of_the_coordinator_at_random_moments_then_resume(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """kill -9 at 24 seeded moments; each time the disk holds a usable state and the resume loses nothing."""
    rng = random.Random(SEED)
    figures: Counter[str] = Counter()
    moments: list[float] = []
    last_events: Counter[str] = Counter()
    kills = iteration = 0
    began = time.monotonic()
    while kills < KILLS:
        iteration += 1
        assert iteration <= 3 * KILLS, f"the coordinator kept finishing before its kill: {figures}"
        repo = make_repo(tmp_path / f"k{iteration}", refresh=True, tests=rng.random() < 0.5)
        failing = set(rng.sample(range(6), rng.choice((0, 0, 1, 2))))
        tasks = []
        for i in range(6):
            words = [f"sleep={rng.uniform(0.05, 0.4):.2f}"]
            if i in failing:
                words.append("failonce")
            if i == 0:
                words.append("grandchild")
            tasks.append(task(f"t{i}", " ".join(words)))
        write_tasks(repo, tasks)

        proc = start(reaper, execute_argv(repo), stdout=subprocess.DEVNULL)
        spawned = time.monotonic()
        if rng.random() < 0.5:  # a moment in time...
            moment = spawned + rng.uniform(0.0, 1.3)
            while time.monotonic() < moment and proc.poll() is None:
                time.sleep(0.002)
        else:  # ...or just after the k-th journal line
            target = rng.randint(1, 45)
            while journal_bytes(repo).count(b"\n") < target and proc.poll() is None:
                time.sleep(0.001)
        before = journal_bytes(repo)
        if proc.poll() is not None:
            figures["finished before the kill"] += 1
            proc.communicate()
            continue
        proc.kill()
        proc.communicate(timeout=10)
        kills += 1
        moments.append(round(time.monotonic() - spawned, 3))

        # What survives on disk.
        after = journal_bytes(repo)
        assert after.startswith(complete_lines(before)), "a journaled line was lost or rewritten"
        events = journal(repo)
        last_events[events[-1]["event"] if events else "(no journal)"] += 1
        meta = snapshot(repo)
        if meta is None:
            figures["no metadata.json yet"] += 1
        if (group_dir(repo) / ".lock").exists():
            # The dead holder's lock is free (a child caught between fork and exec may hold its
            # descriptor for a few milliseconds; the next coordinator retries for half a second).
            wait_for(lambda repo=repo: lock_holder(group_dir(repo) / ".lock") is None, timeout=5)
            assert json.loads((group_dir(repo) / ".lock").read_text())["pid"] == proc.pid
        if after != complete_lines(after):
            figures["torn last journal line"] += 1
        figures["leftover temp files"] += len(leftover_temp_files(repo))
        open_at_kill = {e["task_id"] for e in events if e["event"] == "task_started"} - {
            e["task_id"] for e in events if e["event"] == "task_finished"
        }
        figures["tasks running at the kill"] += len(open_at_kill)

        # The next execute resumes; a failonce task may need one more.
        for run in range(3):
            done = {e["task_id"] for e in journal(repo) if e["event"] == "task_finished" and e["status"] == "completed"}
            seen = len(runs(repo))
            mark = len(journal_bytes(repo))
            resumed = start(reaper, execute_argv(repo))
            out, err = resumed.communicate(timeout=120)
            assert b"Traceback" not in err, err.decode()
            document = json.loads(out)
            again = {e["task"] for e in runs(repo)[seen:] if e["event"] == "start"}
            assert not again & done, f"completed tasks ran again: {sorted(again & done)}"
            figures["completed tasks not run again"] += len(done)
            new_events, _ = decode_journal(journal_bytes(repo)[mark:])
            if run == 0:
                interrupted = {
                    e["task_id"] for e in new_events
                    if e["event"] == "task_finished" and e.get("error") == "interrupted"
                }
                assert interrupted == open_at_kill, (interrupted, open_at_kill)
                # The dead coordinator's lock was taken over by the resume.
                assert json.loads((group_dir(repo) / ".lock").read_text())["pid"] == resumed.pid
            if resumed.returncode == 0:
                break
            assert resumed.returncode == 1, err.decode()
            failed = [r for r in document["results"] if r["status"] == "failed"]
            assert failed and all(r["error"].startswith("exit code 3") for r in failed), document["errors"]
            figures["extra resumes (a failonce task)"] += 1
        else:
            raise AssertionError("the group did not complete in three resumes")
        final = snapshot(repo)
        assert final is not None and final.status is TaskStatus.COMPLETED
        assert final.to_dict() == replay("g", journal(repo)).to_dict()  # the snapshot is the journal's fold
        assert all(r["status"] == "completed" for r in final.results)
        assert sorted(r["task_id"] for r in final.results) == [f"t{i}" for i in range(6)]
        assert leftover_temp_files(repo) == []
        no_processes_left(repo)
        figures["stray process groups stopped by their environment"] += sum(
            int(e["message"].split()[1]) for e in journal(repo)
            if e["event"] == "warning" and "left by an earlier run" in e["message"]
        )
    figures["kills"] = kills
    report(
        "kill9",
        seed=SEED,
        seconds=round(time.monotonic() - began, 1),
        moments=sorted(moments),
        last_event_at_kill=dict(last_events),
        **figures,
    )


@pytest.mark.parametrize("then", ["execute", "recover"])
def test_a_kill_between_the_last_event_and_the_last_snapshot_is_healed(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], then: str
) -> None:
    """The journal says the run ended, metadata.json still says in_progress: the next coordinator rewrites it."""
    repo = make_repo(tmp_path / "repo")
    write_tasks(repo, [task("a"), task("b")])
    assert subprocess.run(execute_argv(repo), capture_output=True, timeout=60).returncode == 0
    path = group_dir(repo) / "metadata.json"
    stale = json.loads(path.read_text())
    stale.update(status="in_progress", completed_at=None)
    path.write_text(json.dumps(stale))  # as if killed just before the final snapshot...
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = group_dir(repo) / f".metadata.json.{gone.pid}.123.tmp"
    leftover.write_text('{"half": ')  # ...or in the middle of writing it
    argv = execute_argv(repo) if then == "execute" else cli(repo, "recover", "--group-id", "g", "--json")
    done = subprocess.run(argv, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(starts(repo)) == ["a", "b"]  # nothing ran again
    meta = snapshot(repo)
    assert meta is not None and meta.status is TaskStatus.COMPLETED
    assert meta.to_dict() == replay("g", journal(repo)).to_dict()
    assert leftover_temp_files(repo) == []


# --------------------------------------------------------------------------- orphans and reused pids


def kill9_while_running(repo: Path, reaper: list[subprocess.Popen[bytes]], tasks: list[dict[str, Any]]) -> int:
    """Run the group through the CLI, kill -9 the coordinator once every agent started; return its pid."""
    write_tasks(repo, tasks)
    proc = start(reaper, execute_argv(repo))
    wait_for(lambda: sum(1 for e in journal(repo) if e["event"] == "task_started") == len(tasks))
    proc.kill()
    proc.communicate(timeout=10)
    return proc.pid


def point_journal_at(repo: Path, task_id: str, pid: int, start_time: int | None) -> None:
    """Rewrite the journal's task_started of ``task_id`` to name another process (as pid reuse would)."""
    path = group_dir(repo) / "events.jsonl"
    lines = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "task_started" and event["task_id"] == task_id:
            event.update(pid=pid, pgid=pid, start_time=start_time)
            line = json.dumps(event, separators=(",", ":"))
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def decoy(reaper: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """An unrelated live process in its own session, without any MAESTRO_ variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    proc = start(reaper, ["sleep", "120"], start_new_session=True, env=env,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: process_start_time(proc.pid) is not None)
    return proc


@pytest.mark.parametrize("how", ["recover", "execute"])
def test_a_reused_pid_is_never_signalled_but_the_real_orphans_are_stopped(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], how: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = [task("a", "sleep=60 grandchild"), task("b", "sleep=60 stubborn"), task("c", "sleep=60")]
    kill9_while_running(repo, reaper, tasks)
    wait_for(lambda: (repo / "grandchild-a.pid").exists() and (repo / "stubborn-b.pid").exists())
    orphans = processes_of(repo)
    assert len(orphans) >= 5  # three agents, a grandchild, a stubborn grandchild: they outlive their coordinator

    # a's journaled pid now names an unrelated process that merely reuses the number (another start time);
    # c's names an unrelated process with the very start time recorded (a forged task_started): it is not
    # an agent of the group (no MAESTRO_* values), so it is left alone too, with a warning naming it.
    stranger, impostor = decoy(reaper), decoy(reaper)
    point_journal_at(repo, "a", stranger.pid, process_start_time(stranger.pid) + 1)  # type: ignore[operator]
    point_journal_at(repo, "c", impostor.pid, process_start_time(impostor.pid))

    began = time.monotonic()
    if how == "recover":
        done = subprocess.run(cli(repo, "recover", "--group-id", "g", "--json"), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        document = json.loads(done.stdout)
        assert sorted(document["recovered"]) == ["a", "b", "c"]
    else:
        write_tasks(repo, [task("a"), task("b"), task("c")])  # the rerun is quick
        done = subprocess.run(execute_argv(repo), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        document = json.loads(done.stdout)
    elapsed = time.monotonic() - began
    assert b"Traceback" not in done.stderr

    assert pid_alive(stranger.pid), "a process whose start time does not match was signalled"
    assert pid_alive(impostor.pid), "a process with the recorded start time but not the group's environment was signalled"
    no_processes_left(repo)  # every real orphan: found by its group, or by its environment
    events = journal(repo)
    recovered = {e["task_id"]: e for e in events if e["event"] == "task_finished" and e.get("error") == "interrupted"}
    assert set(recovered) == {"a", "b", "c"}
    assert "was stopped" not in recovered["a"]["extra"]["recovery"]
    assert "was stopped" in recovered["b"]["extra"]["recovery"]
    assert f"not stopping pid {impostor.pid}" in recovered["c"]["extra"]["recovery"]
    strays = [e for e in events if e["event"] == "warning" and "left by an earlier run" in e["message"]]
    assert len(strays) == 1  # a's and c's real agents and a's grandchild, found by their environment
    meta = snapshot(repo)
    assert meta is not None
    assert meta.status is (TaskStatus.FAILED if how == "recover" else TaskStatus.COMPLETED)
    report("orphans", how=how, seconds=round(elapsed, 2), orphans=len(orphans))


# --------------------------------------------------------------------------- locks


def test_a_stopped_coordinator_still_holds_its_group_and_a_garbage_lock_file_is_taken_over(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    repo = make_repo(tmp_path / "repo")
    write_tasks(repo, [task("a", "sleep=0.3")])
    runner = start(reaper, execute_argv(repo))
    wait_for(lambda: "a" in starts(repo))
    runner.send_signal(signal.SIGSTOP)  # alive but frozen: its lock still counts
    try:
        for command in (execute_argv(repo), cli(repo, "recover", "--group-id", "g", "--json")):
            busy = subprocess.run(command, capture_output=True, timeout=60)
            assert busy.returncode == 4, busy.stderr.decode()
            assert f"pid {runner.pid}" in json.loads(busy.stdout)["error"]
            assert f"pid {runner.pid}" in assert_one_line_error(busy.stderr)
    finally:
        runner.send_signal(signal.SIGCONT)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0 and json.loads(out)["status"] == "completed", err.decode()

    # A lock file holding garbage and no live holder is simply taken over.
    other = make_repo(tmp_path / "other")
    write_tasks(other, [task("a")])
    group_dir(other).mkdir(parents=True)
    (group_dir(other) / ".lock").write_bytes(b"\x00garbage{")
    done = subprocess.run(execute_argv(other), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


# --------------------------------------------------------------------------- signals


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[float, bytes, bytes]:
    began = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    return time.monotonic() - began, out, err


def assert_interrupted(repo: Path, out: bytes, err: bytes, name: str) -> dict[str, Any]:
    assert b"Traceback" not in err, err.decode()
    document = json.loads(out)
    assert document["status"] == "failed"
    assert f"run interrupted by {name}" in document["errors"]
    on_disk = snapshot(repo)
    assert on_disk is not None and on_disk.status is TaskStatus.FAILED
    assert all(r["status"] in ("completed", "failed") for r in on_disk.results)
    return document


def test_a_second_ctrl_c_during_shutdown_kills_at_once(tmp_path: Path, reaper: list[subprocess.Popen[bytes]]) -> None:
    repo = make_repo(tmp_path / "repo", grace=8)
    write_tasks(repo, [task("a", "sleep=60 ignoreterm stubborn"), task("b", "sleep=60 grandchild")])
    runner = start(reaper, execute_argv(repo))
    wait_for(lambda: (repo / "stubborn-a.pid").exists() and (repo / "grandchild-b.pid").exists())
    runner.send_signal(signal.SIGINT)
    wait_for(lambda: (repo / "term-a").exists())  # a got its SIGTERM and ignores it: the grace (8 s) runs
    assert runner.poll() is None
    second = time.monotonic()
    runner.send_signal(signal.SIGINT)
    elapsed, out, err = wait_exit(runner)
    elapsed = time.monotonic() - second
    assert runner.returncode == 130
    assert elapsed < 3, f"the second Ctrl-C took {elapsed:.2f}s (grace is 8s)"
    document = assert_interrupted(repo, out, err, "SIGINT")
    assert {r["error"] for r in document["results"]} == {"interrupted"}
    no_processes_left(repo, timeout=1)
    report("second-ctrl-c", grace=8, seconds_after_second_sigint=round(elapsed, 2))


def test_sigterm_gives_an_agent_ignoring_it_the_grace_then_kills_its_tree(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    repo = make_repo(tmp_path / "repo", grace=2)
    write_tasks(repo, [task("a", "sleep=60 ignoreterm stubborn"), task("b", "sleep=60 grandchild")])
    runner = start(reaper, execute_argv(repo))
    wait_for(lambda: (repo / "stubborn-a.pid").exists() and (repo / "grandchild-b.pid").exists())
    sent = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    _, out, err = wait_exit(runner)
    elapsed = time.monotonic() - sent
    assert runner.returncode == 143
    assert 2 <= elapsed < 2 + 5, f"shutdown took {elapsed:.2f}s with a 2s grace"
    assert_interrupted(repo, out, err, "SIGTERM")
    no_processes_left(repo, timeout=1)
    report("sigterm-grace", grace=2, shutdown_seconds=round(elapsed, 2))


def test_signals_at_random_moments_always_leave_a_final_state(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """SIGINT or SIGTERM at seeded moments of every phase (refresh, agents, tests): always a final state."""
    rng = random.Random(SEED + 1)
    shutdowns: list[float] = []
    outcomes: Counter[str] = Counter()
    for i in range(10):
        repo = make_repo(tmp_path / f"s{i}", refresh=True, tests=True, slow_phases=True)
        write_tasks(repo, [task(f"t{j}", f"sleep={rng.uniform(0.1, 0.5):.2f} grandchild") for j in range(4)])
        signum = (signal.SIGINT, signal.SIGTERM)[i % 2]
        runner = start(reaper, execute_argv(repo))
        # From the run's first journal line on: the interpreter's own start-up is another case (below).
        wait_for(lambda repo=repo, runner=runner: journal_bytes(repo).count(b"\n") >= 1 or runner.poll() is not None)
        moment = time.monotonic() + rng.uniform(0.0, 1.3)
        while time.monotonic() < moment and runner.poll() is None:
            time.sleep(0.002)
        events = journal(repo)
        phase = next((e["phase"] for e in reversed(events) if e["event"] == "phase_changed"), "pre_execution")
        if runner.poll() is not None:
            outcomes["finished first"] += 1
            runner.communicate()
            continue
        sent = time.monotonic()
        runner.send_signal(signum)
        _, out, err = wait_exit(runner)
        shutdowns.append(round(time.monotonic() - sent, 2))
        assert b"Traceback" not in err, err.decode()
        document = json.loads(out)  # the final document is always printed whole
        if any("interrupted by" in e for e in document["errors"]):
            assert runner.returncode == (130 if signum == signal.SIGINT else 143), (runner.returncode, phase)
            assert_interrupted(repo, out, err, signal.Signals(signum).name)
            outcomes[f"interrupted during {phase}"] += 1
        else:
            # The signal came as the run was ending: nothing left to stop.  Once the interpreter
            # finalizes (after the document is printed) the signal's default action applies.
            assert document["status"] in ("completed", "failed")
            assert runner.returncode in (0, 1, 130 if signum == signal.SIGINT else 143, -signum), runner.returncode
            outcomes["signal after the final state"] += 1
        on_disk = snapshot(repo)
        assert on_disk is not None and on_disk.status in (TaskStatus.FAILED, TaskStatus.COMPLETED)
        assert shutdowns[-1] < 1 + 5  # grace 1 s, plus a bounded shutdown
        no_processes_left(repo, timeout=2)
    report("signals", shutdown_seconds=shutdowns, **outcomes)


# --------------------------------------------------------------------------- floods


@pytest.mark.parametrize("cap", [0, 1 << 20, 64 << 20], ids=["uncapped", "cap-1MiB", "cap-64MiB"])
def test_an_agent_flooding_its_output_keeps_the_coordinator_small(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], cap: int
) -> None:
    repo = make_repo(tmp_path / "repo", agent_extra=f"max_log_bytes = {cap}")
    write_tasks(repo, [task("f", f"flood={FLOOD_BYTES}")])
    out_path, err_path = tmp_path / "out.json", tmp_path / "err.txt"
    began = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        runner = start(reaper, execute_argv(repo), stdout=out, stderr=err)
        code, peak_mib = wait_rusage(runner, timeout=120)
    elapsed = time.monotonic() - began
    assert code == 0, err_path.read_text()
    assert b"Traceback" not in err_path.read_bytes()
    assert json.loads(out_path.read_text())["status"] == "completed"
    log = group_dir(repo) / "logs" / "f.log"
    size = log.stat().st_size
    with open(log, "rb") as handle:
        head = handle.read(11)
        handle.seek(max(0, size - 4096))
        end = handle.read()
    assert head == b"FIRST LINE\n" and end.endswith(b"\nLAST LINE\n")
    if cap:
        dropped = FLOOD_BYTES + 22 - cap  # 22: the first and the last line
        note = f"\n[maestro-parallel: {dropped} bytes dropped from the middle of this log (max_log_bytes = {cap})]\n"
        assert size == cap + len(note)
        with open(log, "rb") as handle:
            handle.seek(cap // 4)
            assert handle.read(len(note)) == note.encode()
    else:
        assert size == FLOOD_BYTES + 22
    log.unlink()  # do not leave a gigabyte in the temp folder
    assert peak_mib < 200, f"coordinator peak RSS {peak_mib:.0f} MiB"
    report("flood", cap=cap, bytes=FLOOD_BYTES, peak_rss_mib=round(peak_mib, 1), seconds=round(elapsed, 2))


# --------------------------------------------------------------------------- agents that misbehave


@pytest.mark.parametrize("cap", [0, 1 << 20], ids=["log-file", "capped-pipe"])
def test_agents_that_close_their_output_ignore_sigterm_or_fork_a_daemon(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], cap: int
) -> None:
    repo = make_repo(tmp_path / "repo", agent_extra=f"max_log_bytes = {cap}")
    write_tasks(
        repo,
        [
            task("quiet", "closeout sleep=0.5"),  # closes stdout and stderr, then exits 0
            task("mute", "closeout sleep=60"),  # closes them and hangs: its timeout stops it
            task("stubborn", "ignoreterm stubborn sleep=60"),  # ignores SIGTERM, and so does its grandchild
            task("daemon", "daemon sleep=0.2"),  # double-forks a daemon into its own session, holding stdout
        ],
    )
    began = time.monotonic()
    runner = start(reaper, [*execute_argv(repo), "--task-timeout", "2"])
    wait_for(lambda: (repo / "daemon-daemon.pid").exists())
    daemon = read_pid(repo, "daemon", "daemon")
    _, out, err = wait_exit(runner)
    elapsed = time.monotonic() - began
    assert b"Traceback" not in err, err.decode()
    results = {r["task_id"]: r for r in json.loads(out)["results"]}
    assert results["quiet"]["status"] == "completed"
    assert results["daemon"]["status"] == "completed"
    assert results["mute"]["error"] == results["stubborn"]["error"] == "timed out after 2s"
    assert results["stubborn"]["exit_code"] == -signal.SIGKILL  # TERM ignored: killed after the grace
    assert (repo / "term-stubborn").exists()
    assert elapsed < 2 + 1 + 5, f"the run took {elapsed:.1f}s"
    assert not pid_alive(daemon), "the daemon that left its process group survived the run"
    no_processes_left(repo, timeout=1)
    report("misbehaving-agents", cap=cap, seconds=round(elapsed, 2))


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45])
def test_ctrl_c_during_start_up_prints_no_traceback_of_ours(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], delay: float
) -> None:
    """A Ctrl-C while the command is still loading ends quietly (130), nothing started or written.

    The delays sweep the start-up (the signal is the injected fault, so waiting a set time is the
    point here).  Only the interpreter's own set-up (site, runpy finding the package), before the
    command's code runs, may still print Python's message: nothing can catch a signal there.
    """
    repo = make_repo(tmp_path / "repo")
    write_tasks(repo, [task("a", "sleep=5")])
    runner = start(reaper, execute_argv(repo))
    time.sleep(delay)
    runner.send_signal(signal.SIGINT)
    _, out, err = wait_exit(runner)
    text = err.decode()
    if "Traceback" in text:  # only before the command's own code runs: interpreter set-up, runpy
        assert "maestro_parallel/__main__.py" not in text and "maestro_parallel/cli" not in text, text
    elif runner.returncode == -signal.SIGINT:  # before Python installed its handler: nothing ran
        assert text == "" and not (repo / "runs.jsonl").exists()
    else:
        assert runner.returncode == 130, (runner.returncode, text)
    if (repo / "runs.jsonl").exists():  # the run had begun: it stopped as on any Ctrl-C
        assert json.loads(out)["status"] == "failed"


# --------------------------------------------------------------------------- a full or unusable disk


LAUNCHER = """\
import os, resource, signal, sys
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.executable, [sys.executable, "-m", "maestro_parallel", *sys.argv[2:]])
"""


@pytest.mark.parametrize("limit", [1000, 3900], ids=["full-before-launch", "full-while-running"])
def test_a_full_disk_is_a_recorded_failure_and_the_next_run_resumes(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], limit: int
) -> None:
    """RLIMIT_FSIZE stands in for a full disk (root ignores chmod): no file may grow past ``limit`` bytes."""
    repo = make_repo(tmp_path / "repo")
    write_tasks(repo, [task("t0", "grandchild"), *(task(f"t{i}", "sleep=0.5 grandchild") for i in range(1, 6))])
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    argv = execute_argv(repo)
    runner = start(reaper, [PY, str(launcher), str(limit), *argv[3:]])  # stdout is a pipe: not limited
    _, out, err = wait_exit(runner)
    assert runner.returncode == 1, err.decode()
    assert b"Traceback" not in err, err.decode()
    document = json.loads(out)
    assert document["status"] == "failed"
    assert "could not write group state: File too large" in document["errors"]
    assert (group_dir(repo) / "events.jsonl").stat().st_size <= limit
    meta = snapshot(repo)  # absent, an earlier state, or (when it fit) the final one: always whole
    assert meta is None or meta.status is TaskStatus.IN_PROGRESS or (
        meta.status is TaskStatus.FAILED and "could not write group state: File too large" in meta.errors
    )
    assert leftover_temp_files(repo) == []
    no_processes_left(repo)

    # With room again, the next execute resumes: what the journal saw completed is not run again.
    done = {e["task_id"] for e in journal(repo) if e["event"] == "task_finished" and e["status"] == "completed"}
    with open(repo / "runs.jsonl", "a") as record:  # the agents were cut short too: end their last line
        record.write("\n")
    seen = len(runs(repo, lenient=True))
    resumed = subprocess.run(argv, capture_output=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert not {e["task"] for e in runs(repo, lenient=True)[seen:] if e["event"] == "start"} & done
    meta = snapshot(repo)
    assert meta is not None and meta.status is TaskStatus.COMPLETED
    report("full-disk", limit=limit, journaled_completions_kept=len(done))


@pytest.mark.parametrize("where", ["groups-folder", "group-folder"])
def test_an_unusable_groups_folder_is_one_line_and_starts_nothing(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]], where: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    write_tasks(repo, [task("a")])
    target = group_dir(repo) if where == "group-folder" else group_dir(repo).parent
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("a file where a folder belongs")
    done = subprocess.run(execute_argv(repo), capture_output=True, timeout=60)
    assert done.returncode == 1
    line = assert_one_line_error(done.stderr)
    assert str(target) in line and json.loads(done.stdout)["error"] in line
    assert not (repo / "runs.jsonl").exists()
    assert target.read_text() == "a file where a folder belongs"


def test_the_tasks_file_deleted_and_the_config_broken_mid_run(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """The run carries on with what it loaded; the tracker's lost file is one recorded warning."""
    repo = make_repo(tmp_path / "repo")
    write_tasks(repo, [task(f"t{i}", "sleep=1") for i in range(3)])
    runner = start(reaper, execute_argv(repo))
    wait_for(lambda: len(starts(repo)) == 3)
    (repo / "tasks.json").unlink()
    (repo / ".flow" / "maestro" / "config.toml").write_text("[agent]\ncommand = 'not a list'\n[[[broken")
    _, out, err = wait_exit(runner)
    assert runner.returncode == 0, err.decode()
    document = json.loads(out)
    assert document["status"] == "completed"
    polls = [e for e in journal(repo) if e["event"] == "warning" and "tracker poll failed" in e["message"]]
    assert len(polls) == 1 and "cannot read tasks file" in polls[0]["message"]
    assert all(r["attempts"] == 1 for r in document["results"])
    no_processes_left(repo)


# --------------------------------------------------------------------------- trackers that hang, crawl or babble


_UNSET = object()


class UnreliableTracker(MemoryTracker):
    """A MemoryTracker one of whose methods hangs forever, or whose polls answer garbage."""

    def __init__(self, tasks: list[dict[str, Any]], *, hang: str = "", garbage: object = _UNSET, **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.hang = hang
        self.garbage = garbage

    async def _maybe_hang(self, method: str, ids: Any) -> None:
        if method == self.hang:
            self.calls.append((method, tuple(ids)))
            await anyio.sleep_forever()

    async def fetch_statuses(self, task_ids: Any) -> Any:
        await self._maybe_hang("fetch_statuses", task_ids)
        if self.garbage is not _UNSET:
            self.calls.append(("fetch_statuses", tuple(task_ids)))
            return self.garbage
        return await super().fetch_statuses(task_ids)

    async def find_blockers(self, tasks: Any) -> Any:
        await self._maybe_hang("find_blockers", [t.task_id for t in tasks])
        return await super().find_blockers(tasks)

    async def close(self, task_ids: Any, reason: str) -> Any:
        await self._maybe_hang("close", task_ids)
        return await super().close(task_ids, reason)


#: The coordinator's bound on one tracker method: the tracker's own calls are each bounded by
#: ``call_timeout_seconds`` (BeadsTracker does so; see tests/test_beads.py), and the coordinator
#: stops waiting for a whole method after three of those plus five seconds.
CALL_TIMEOUT = 0.1
METHOD_BOUND = 3 * CALL_TIMEOUT + 5


def tracker_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo")
    config = repo / ".flow" / "maestro" / "config.toml"
    config.write_text(config.read_text().replace(
        "poll_interval_seconds = 0.2", f"poll_interval_seconds = 0.1\ncall_timeout_seconds = {CALL_TIMEOUT}"
    ))
    return repo


@pytest.mark.parametrize(
    ("kind", "tracker_kwargs"),
    [
        ("hangs", {"hang": "fetch_statuses"}),
        ("answers None", {"garbage": None}),
        ("answers a list", {"garbage": ["t0", "closed"]}),
        ("answers a string", {"garbage": "closed"}),
        ("crawls", {"delay": 0.2}),
    ],
)
async def test_a_tracker_misbehaving_while_polling_never_holds_up_completion(
    tmp_path: Path, kind: str, tracker_kwargs: dict[str, Any]
) -> None:
    repo = tracker_repo(tmp_path)
    tasks = [task(f"t{i}", "sleep=1") for i in range(2)]
    tracker = UnreliableTracker(tasks, **tracker_kwargs)
    coordinator = AsyncParallelCoordinator(repo, config=load_config(repo), tracker=tracker)
    began = time.monotonic()
    meta = await coordinator.execute_parallel_group(tasks, "g")
    elapsed = time.monotonic() - began
    assert meta.status is TaskStatus.COMPLETED, meta.errors  # completion follows the agents' exits
    assert elapsed < 1 + 2, f"{kind}: the run took {elapsed:.2f}s"
    warnings = [e for e in journal(repo) if e["event"] == "warning" and "tracker poll failed" in e["message"]]
    polls = [c for c in tracker.calls if c[0] == "fetch_statuses"]
    if kind == "hangs":
        assert len(polls) == 1  # the poll that hangs is the only one: calls never pile up
    elif kind == "crawls":
        assert warnings == []
        assert len(polls) <= elapsed / (0.1 + 0.2) + 1  # one call at a time
    else:
        assert len(polls) >= 3
        assert len(warnings) == 1, warnings  # recorded once, however many polls failed
        assert "not a mapping" in warnings[0]["message"]
    report("tracker-poll", kind=kind, seconds=round(elapsed, 2), polls=len(polls))


@pytest.mark.parametrize("method", ["find_blockers", "close"])
async def test_a_tracker_hanging_in_a_phase_fails_the_group_in_bounded_time(tmp_path: Path, method: str) -> None:
    repo = tracker_repo(tmp_path)
    tasks = [task("a", "sleep=0.1"), task("b", "sleep=0.1")]
    tracker = UnreliableTracker(tasks, hang=method)
    coordinator = AsyncParallelCoordinator(repo, config=load_config(repo), tracker=tracker)
    began = time.monotonic()
    meta = await coordinator.execute_parallel_group(tasks, "g")
    elapsed = time.monotonic() - began
    assert meta.status is TaskStatus.FAILED
    assert METHOD_BOUND <= elapsed < METHOD_BOUND + 3
    results = {r["task_id"]: r for r in meta.results}
    hung = f"memory tracker did not answer within {METHOD_BOUND:g}s"
    if method == "close":
        assert all(r["status"] == "completed" and r["closed"] is False for r in results.values())
        assert meta.errors == [f"{t}: close failed: {hung}" for t in ("a", "b")]
    else:
        assert {r["error"] for r in results.values()} == {f"dependency check failed: {hung}"}
        assert not (repo / "runs.jsonl").exists()  # nothing launched
    report("tracker-hang", method=method, seconds=round(elapsed, 2))


# --------------------------------------------------------------------------- halt on failure


def test_halt_on_failure_through_the_cli(tmp_path: Path, reaper: list[subprocess.Popen[bytes]]) -> None:
    repo = make_repo(tmp_path / "repo", grace=1)
    write_tasks(repo, [
        task("bad", "sleep=0.5 exit=7"),
        task("slow", "sleep=60 grandchild"),
        task("stubborn", "sleep=60 ignoreterm stubborn"),
    ])
    began = time.monotonic()
    done = subprocess.run([*execute_argv(repo), "--halt-on-failure"], capture_output=True, timeout=60)
    elapsed = time.monotonic() - began
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    results = {r["task_id"]: r for r in json.loads(done.stdout)["results"]}
    assert results["bad"]["error"].startswith("exit code 7")
    assert results["slow"]["error"] == results["stubborn"]["error"] == "halted"
    assert elapsed < 0.5 + 1 + 5
    no_processes_left(repo, timeout=1)
    report("halt", seconds=round(elapsed, 2))


# --------------------------------------------------------------------------- a kernel parent-death signal?

SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
async def test_setpriv_pdeathsig_costs_a_spawn_and_reaches_only_the_leader(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """Measured, not adopted: what ``setpriv --pdeathsig KILL`` would cost and what it would reach."""
    true = shutil.which("true")
    assert true is not None and SETPRIV is not None

    async def spawn(prefix: list[str], count: int = 200) -> float:
        began = time.perf_counter()
        for _ in range(count):
            process = await anyio.open_process(
                [*prefix, true], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
            await process.wait()
        return (time.perf_counter() - began) / count * 1000

    rounds = [(await spawn([]), await spawn([SETPRIV, "--pdeathsig", "KILL"])) for _ in range(2)]
    plain, wrapped = min(r[0] for r in rounds), min(r[1] for r in rounds)
    assert wrapped < 20, f"setpriv made a spawn cost {wrapped:.1f} ms"

    # Reach: the kernel kills the wrapped leader when its parent dies, never the rest of its group.
    root = tmp_path / "pdeathsig"
    root.mkdir()
    env = dict(os.environ, MAESTRO_REPO_ROOT=str(root))
    parent = start(reaper, [PY, "-c", textwrap.dedent(f"""
        import subprocess, time
        subprocess.Popen([{SETPRIV!r}, "--pdeathsig", "KILL", "sh", "-c",
                          "sleep 120 & echo $! > {root}/grandchild.pid; echo $$ > {root}/leader.pid; exec sleep 120"],
                         start_new_session=True)
        time.sleep(120)
    """)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def pids() -> tuple[int, int] | None:
        try:
            return int((root / "leader.pid").read_text()), int((root / "grandchild.pid").read_text())
        except (OSError, ValueError):  # not written yet, or half written
            return None

    leader, grandchild = wait_for(pids)
    assert pid_alive(leader) and pid_alive(grandchild)
    parent.kill()
    parent.communicate(timeout=10)
    wait_for(lambda: not pid_alive(leader), timeout=5)
    assert pid_alive(grandchild), "the leader's group outlives a parent-death signal"
    report("setpriv", spawn_ms_plain=round(plain, 2), spawn_ms_setpriv=round(wrapped, 2), spawns=200)
