"""The adversarial probe: each defect it found, reproduced as a hostile agent or an unlucky user would.

One section per item of the hardening list (docs/RELIABILITY.md).  Every case
runs the real CLI (``python -m maestro_parallel`` in its own session, bounded
by a timeout: a hang is a failure, never a stuck suite) or the real
coordinator, with real agents, files, FIFOs, symlinks and signals, and asserts
the behaviour the item asks for: one clear line, the right exit code, no signal
to a process that is not ours, no hang.  A case the code does not pass yet is a
strict ``xfail`` naming the defect; the fix removes the mark.

Signals: every CLI run that may signal a pid read from a file goes through
``GUARD``, which records each ``os.kill``/``os.killpg`` and refuses any to a pid
or group ≤ 1 (a forged ``{"pid": -1}`` would otherwise signal every process of
the machine).  The victims are ``sleep`` processes of this test.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_faults import make_repo, no_processes_left, processes_of, wait_for

PY = sys.executable
ESC = "\x1b"


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# --------------------------------------------------------------------------- running the CLI

GUARD = r'''
import json, os, runpy, sys
log = os.environ["PROBE_SIGNAL_LOG"]
real_kill, real_killpg = os.kill, os.killpg
def record(kind, pid, sig):
    with open(log, "a") as f:
        f.write(json.dumps([kind, pid, int(sig)]) + "\n")
def kill(pid, sig):
    if sig != 0:
        record("kill", pid, sig)
        if pid <= 1:
            raise PermissionError(1, "refused by the probe's guard")
    return real_kill(pid, sig)
def killpg(pgid, sig):
    if sig != 0:
        record("killpg", pgid, sig)
        if pgid <= 1:
            raise PermissionError(1, "refused by the probe's guard")
    return real_killpg(pgid, sig)
os.kill, os.killpg = kill, killpg
sys.argv = ["maestro-parallel", *sys.argv[1:]]
runpy.run_module("maestro_parallel", run_name="__main__", alter_sys=True)
'''


@dataclass
class Done:
    """A finished (or stopped) CLI run."""

    returncode: int | None  # None: it had to be killed (a hang)
    stdout: str
    stderr: str
    seconds: float
    maxrss_kib: int = 0

    @property
    def hung(self) -> bool:
        return self.returncode is None

    def document(self) -> Any:
        return json.loads(self.stdout)

    def one_line_error(self) -> str:
        """The single stderr line of a refused command (no traceback)."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert "Traceback" not in self.stderr and len(lines) == 1, self.stderr
        return lines[0]


def run_cli(repo: Path, *args: str, timeout: float = 30, guard: Path | None = None, quiet: bool = True,
            env: dict[str, str] | None = None, stdin: int | None = subprocess.DEVNULL) -> Done:
    """Run the CLI in its own session; a run past ``timeout`` is killed (whole session) and reported hung."""
    head = [PY, "-c", GUARD] if guard is not None else [PY, "-m", "maestro_parallel"]
    argv = [*head, "--repo-root", str(repo), *(["-q"] if quiet else []), *args]
    environment = {**os.environ, **(env or {})}
    if guard is not None:
        environment["PROBE_SIGNAL_LOG"] = str(guard)
    start = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, env=environment,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
        code: int | None = child.returncode
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        code = None
    return Done(code, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - start)


def signals_sent(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def start_time_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        data = handle.read()
    return int(data[data.rfind(b")") + 2 :].split()[19])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def groups(repo: Path) -> Path:
    return repo / ".flow" / "maestro" / "parallel_groups"


def write_tasks(repo: Path, tasks: list[dict[str, Any]]) -> Path:
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def task(task_id: str, description: str = "", group: str = "g", **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "title": f"task {task_id}", "description": f"[P:Group-{group}] {description}", **extra}


def replace_section(repo: Path, name: str, body: str) -> None:
    """Rewrite the ``[name]`` table of the repository's config.toml (the next table follows unchanged)."""
    config = repo / ".flow" / "maestro" / "config.toml"
    text = config.read_text()
    start = text.index(f"[{name}]")
    end = text.find("\n[", start)
    config.write_text(text[:start] + f"[{name}]\n{textwrap.dedent(body).strip()}\n" + ("" if end < 0 else text[end:]))


def execute(repo: Path, *extra: str, **kwargs: Any) -> Done:
    return run_cli(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json", *extra,
                   **kwargs)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A repository with the fault suite's agent; nothing of it is left running afterwards."""
    root = make_repo(tmp_path / "repo")
    yield root
    for pid in processes_of(root):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    no_processes_left(root)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process (not ours: no MAESTRO_* in its environment) that must survive."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    process = subprocess.Popen(["sleep", "120"], env=env, start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(10)


def agent_script(repo: Path, body: str) -> None:
    """Replace the repository's agent with ``body`` (it gets the task id as argv[1])."""
    (repo / "agent.py").write_text(textwrap.dedent(body))


# =========================================================================== 1. signals go to what files name

LOCK_FORGER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, sys.argv[2].encode())
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def forged_lock(repo: Path) -> Iterator[Any]:
    """Hold the group's .lock (as a hostile agent can) with the record given."""
    holders: list[subprocess.Popen[bytes]] = []

    def forge(record: dict[str, Any]) -> None:
        (groups(repo) / "g").mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen([PY, "-c", LOCK_FORGER, str(groups(repo) / "g" / ".lock"), json.dumps(record)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"

    yield forge
    for holder in holders:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def test_cancel_never_signals_a_victim_named_by_a_forged_lock(
    repo: Path, tmp_path: Path, victim: subprocess.Popen[bytes], forged_lock: Any
) -> None:
    forged_lock({"pid": victim.pid, "start_time": start_time_of(victim.pid), "host": os.uname().nodename})
    log = tmp_path / "signals.jsonl"
    done = run_cli(repo, "cancel", "--group-id", "g", "--no-wait", guard=log, timeout=20)
    assert alive(victim.pid) and signals_sent(log) == []
    assert done.returncode == 1
    assert str(victim.pid) in done.one_line_error()


@pytest.mark.parametrize("pid", [-1, 0, 1])
def test_cancel_never_signals_pid_one_or_less(repo: Path, tmp_path: Path, forged_lock: Any, pid: int) -> None:
    forged_lock({"pid": pid, "host": os.uname().nodename})
    log = tmp_path / "signals.jsonl"
    done = run_cli(repo, "cancel", "--group-id", "g", "--no-wait", guard=log, timeout=20)
    assert signals_sent(log) == []
    assert done.returncode == 1 and str(pid) in done.one_line_error()


def finished_group(repo: Path) -> None:
    write_tasks(repo, [task("a")])
    done = execute(repo)
    assert done.returncode == 0, done.stderr


def forge_task_started(repo: Path, pid: int) -> None:
    """Leave the journal as a coordinator killed mid-run would, with the agent's task_started forged.

    The journal is cut before the first ``task_finished`` (the run was still going) and a
    ``task_started`` naming ``pid`` (its start time copied from /proc) is appended, as an
    agent that can write the file could; the snapshot is gone (the kill came before it).
    """
    from maestro_parallel.events import encode_event, make_event

    journal = groups(repo) / "g" / "events.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[: next(i for i, line in enumerate(lines) if b'"task_finished"' in line)])
    event = make_event("task_started", task_id="a", attempt=1, pid=pid, pgid=pid, start_time=start_time_of(pid),
                       argv0="agent.py")
    journal.write_bytes(kept + encode_event(event))
    (groups(repo) / "g" / "metadata.json").unlink()


@pytest.mark.parametrize("command", ["recover", "execute"])
def test_a_forged_task_started_never_stops_a_foreign_process(
    repo: Path, tmp_path: Path, victim: subprocess.Popen[bytes], command: str
) -> None:
    finished_group(repo)
    forge_task_started(repo, victim.pid)
    log = tmp_path / "signals.jsonl"
    if command == "recover":
        done = run_cli(repo, "recover", "--group-id", "g", "--json", guard=log, timeout=30)
    else:
        done = run_cli(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json",
                       guard=log, timeout=30)
    assert not done.hung and "Traceback" not in done.stderr
    assert alive(victim.pid)
    assert not [s for s in signals_sent(log) if s[1] in (victim.pid, -victim.pid)]
    assert str(victim.pid) in done.stderr + done.stdout  # a warning naming the pid


# =========================================================================== 2. FIFO, /dev/zero, symlinked logs

SWAP_LOG = """
import os, sys
log = os.path.join(os.environ["MAESTRO_REPO_ROOT"], ".flow/maestro/parallel_groups/g/logs", sys.argv[1] + ".log")
print("the last honest line", flush=True)
os.unlink(log)
{swap}
sys.exit(1)
"""


@pytest.mark.parametrize(("kind", "swap"), [
    pytest.param("fifo", "os.mkfifo(log)"),
    pytest.param("dev-zero", "os.symlink('/dev/zero', log)"),
])
def test_a_log_swapped_for_a_fifo_or_dev_zero_does_not_hang_execute(repo: Path, kind: str, swap: str) -> None:
    agent_script(repo, SWAP_LOG.format(swap=swap))
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=20)
    assert not done.hung, f"execute hung ({done.seconds:.1f}s)"
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [result] = done.document()["results"]
    assert result["status"] == "failed" and "\n" not in (result.get("error") or "")


def test_logs_does_not_hang_on_a_fifo(repo: Path) -> None:
    finished_group(repo)
    log = groups(repo) / "g" / "logs" / "a.log"
    log.unlink()
    os.mkfifo(log)
    done = run_cli(repo, "logs", "--group-id", "g", "--task-id", "a", timeout=15)
    assert not done.hung
    assert done.returncode == 1 and "a.log" in done.one_line_error()


def test_a_log_symlinked_to_an_outside_file_is_neither_read_nor_written(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("SECRET last line of someone else's file\n")
    agent_script(repo, SWAP_LOG.format(swap=f"os.symlink({str(outside)!r}, log)"))
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=30)
    assert not done.hung and "Traceback" not in done.stderr
    assert outside.read_text() == "SECRET last line of someone else's file\n"
    assert "SECRET" not in done.stdout


def test_a_log_hard_linked_to_an_outside_file_is_neither_read_nor_written(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"  # same filesystem: a hard link needs no symlink
    outside.write_text("SECRET last line of someone else's file\n")
    agent_script(repo, SWAP_LOG.format(swap=f"os.link({str(outside)!r}, log)"))
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=30)
    assert not done.hung and "Traceback" not in done.stderr
    assert outside.read_text() == "SECRET last line of someone else's file\n"
    assert "SECRET" not in done.stdout


# =========================================================================== 3. symlinked state folders


@pytest.mark.parametrize("component", [".flow", ".flow/maestro"])
def test_a_symlinked_state_folder_is_refused_by_name(repo: Path, tmp_path: Path, component: str) -> None:
    outside = tmp_path / "outside-state"
    os.rename(repo / component, outside)
    (repo / component).symlink_to(outside)
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=30)
    assert done.returncode in (1, 2), done.stdout
    assert component in done.one_line_error() and "symlink" in done.one_line_error()
    assert not list(outside.rglob("parallel_groups"))
    assert not (repo / "runs.jsonl").exists()


def test_logs_swapped_for_a_symlink_by_an_agent_redirect_nothing(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-logs"
    outside.mkdir()
    agent_script(repo, f"""
        import os, shutil, sys
        logs = os.path.join(os.environ["MAESTRO_REPO_ROOT"], ".flow/maestro/parallel_groups/g/logs")
        shutil.rmtree(logs)
        os.symlink({str(outside)!r}, logs)
        print("swapped")
    """)
    replace_section(repo, "tests", f"command = {json.dumps([PY, '-c', 'print(42)'])}")
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=30)
    assert not done.hung and "Traceback" not in done.stderr
    assert list(outside.iterdir()) == []


# =========================================================================== 4. the refresh escapes cleanup


def test_a_refresh_orphaned_by_kill_9_is_stopped_by_recover(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", refresh=True)
    marker = tmp_path / "refresh.pid"
    code = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    replace_section(repo, "refresh", f"command = {json.dumps([PY, '-c', code])}\ntimeout_seconds = 300")
    write_tasks(repo, [task("a")])
    coordinator = subprocess.Popen([PY, "-m", "maestro_parallel", "--repo-root", str(repo), "-q", "execute",
                                    "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    refresh_pid = 0
    try:
        wait_for(lambda: marker.exists() and marker.read_text().strip())
        refresh_pid = int(marker.read_text())
        coordinator.kill()
        coordinator.wait(10)
        done = run_cli(repo, "recover", "--group-id", "g", "--json", timeout=30)
        assert not done.hung and "Traceback" not in done.stderr
        wait_for(lambda: not alive(refresh_pid), timeout=5)
    finally:
        if refresh_pid and alive(refresh_pid):
            os.kill(refresh_pid, signal.SIGKILL)
        if coordinator.poll() is None:
            coordinator.kill()
        coordinator.wait(10)


def test_a_refresh_run_for_a_group_carries_the_group_in_its_environment(tmp_path: Path) -> None:
    """What the recovery sweep needs to find an orphaned refresh: the group's MAESTRO_* values."""
    from maestro_parallel.config import loads_config
    from maestro_parallel.runtime.hooks import run_refresh

    code = "import os; print(os.environ.get('MAESTRO_GROUP_ID'), os.environ.get('MAESTRO_REPO_ROOT'))"
    config = loads_config(f"[refresh]\ncommand = {json.dumps([PY, '-c', code])}\n")
    log = tmp_path / "_refresh.log"
    ok, warning, output = anyio.run(run_refresh, config, tmp_path, log, "g")
    assert ok and warning is None and output.split() == ["g", str(tmp_path)]
    log.unlink()
    ok, _, output = anyio.run(run_refresh, config, tmp_path, log)  # outside a group: no group id
    assert ok and output.split() == ["None", str(tmp_path)]


# =========================================================================== 5. terminal injection, markup


HOSTILE_LINE = "\x1b]0;pwned-title\x07\x1b[2J\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ [/bold] [/x]"


def test_escape_sequences_in_agent_output_never_reach_the_terminal(repo: Path) -> None:
    agent_script(repo, f"""
        import sys
        print({HOSTILE_LINE!r}, flush=True)
        sys.exit(1)
    """)
    write_tasks(repo, [task("a")])
    done = run_cli(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), quiet=False,
                   timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    status = run_cli(repo, "status", "--group-id", "g", timeout=15)
    assert "Traceback" not in status.stderr
    for text in (done.stdout, done.stderr, status.stdout, status.stderr):
        assert ESC not in text and "\x07" not in text


def run_in_pty(argv: list[str], timeout: float) -> Done:
    """Run ``argv`` with stderr on a pseudo-terminal (the live table) and stdout a pipe (the JSON)."""
    master, slave = pty.openpty()
    start = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                             env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}, start_new_session=True)
    os.close(slave)
    terminal = bytearray()
    out = bytearray()
    assert child.stdout is not None
    pipe = child.stdout.fileno()
    open_fds = {master, pipe}
    deadline = start + timeout
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.1)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                open_fds.discard(fd)
            else:
                (terminal if fd == master else out).extend(data)
    code: int | None
    if open_fds:
        os.killpg(child.pid, signal.SIGKILL)
        code = None
    else:
        code = child.wait(10)
    child.wait(10)
    child.stdout.close()
    os.close(master)
    return Done(code, out.decode(errors="replace"), terminal.decode(errors="replace"), time.monotonic() - start)


@pytest.mark.parametrize("subagent", ["reviewer [/x]", "[/bold]", "[link=https://evil.example]x"])
def test_markup_in_subagent_type_is_shown_as_text_in_the_live_table(repo: Path, subagent: str) -> None:
    write_tasks(repo, [task("a", "print=done", subagent_type=subagent)])
    done = run_in_pty([PY, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
                       "--tasks-file", str(repo / "tasks.json"), "--json"], timeout=30)
    assert not done.hung, "the live table froze"
    assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr
    assert done.returncode == 0 and done.document()["status"] == "completed"
    assert ESC + "]8" not in done.stderr


def test_escape_sequences_of_a_running_agent_stay_out_of_the_live_table(repo: Path) -> None:
    agent_script(repo, f"""
        import time
        print({HOSTILE_LINE!r}, flush=True)
        time.sleep(1.5)
    """)
    write_tasks(repo, [task("a")])
    done = run_in_pty([PY, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
                       "--tasks-file", str(repo / "tasks.json"), "--json"], timeout=30)
    assert done.returncode == 0
    assert "pwned-title" not in done.stderr and ESC + "]8" not in done.stderr and ESC + "]0" not in done.stderr
    assert ESC + "[2J" not in done.stderr
    assert "click [/bold] [/x]" in done.stderr  # the running row was drawn, its markup shown as text


# =========================================================================== 6. --timeout bounds the whole group


def test_the_group_timeout_bounds_the_refresh_and_the_tests(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    slow = json.dumps([PY, "-c", "import time; time.sleep(6)"])
    replace_section(repo, "refresh", f"command = {slow}")
    replace_section(repo, "tests", f"command = {slow}")
    write_tasks(repo, [task("a")])
    done = execute(repo, "--timeout", "2", timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.seconds < 7, f"a 2 s group timeout took {done.seconds:.1f}s"  # slow phases: 12 s together
    no_processes_left(repo)


def test_the_group_timeout_bounds_the_wait_for_the_tests_lock(repo: Path) -> None:
    replace_section(repo, "tests", f"command = {json.dumps([PY, '-c', 'print(42)'])}")
    write_tasks(repo, [task("a")])
    holder = subprocess.Popen([PY, "-c", LOCK_FORGER, str(repo / ".flow" / "maestro" / "tests.lock"), "{}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # another group's suite, running long
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        done = execute(repo, "--timeout", "2", timeout=60)
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()
    assert done.returncode == 1 and done.seconds < 10, (done.seconds, done.stderr)
    document = done.document()
    assert document["status"] == "failed"
    assert any("timed out" in error for error in document["errors"]), document["errors"]


# =========================================================================== 7. a journal shorter than the snapshot


def test_a_snapshot_ahead_of_a_shortened_journal_wins(repo: Path) -> None:
    write_tasks(repo, [task("a"), task("b", "print=broken exit=1")])
    assert execute(repo).returncode == 1
    journal = groups(repo) / "g" / "events.jsonl"
    first = journal.read_bytes().split(b"\n", 1)[0] + b"\n"
    journal.write_bytes(first)  # a full disk mid-append, a truncated file
    status = run_cli(repo, "status", "--group-id", "g", "--json", timeout=15)
    document = status.document()
    assert document["status"] == "failed" and not document.get("stale"), document
    results = {r["task_id"]: r for r in document["results"]}
    assert results["a"]["status"] == "completed" and results["b"]["status"] == "failed"
    assert results["b"].get("error")
    wait = run_cli(repo, "wait", "--group-id", "g", "--timeout", "5", "--json", timeout=15)
    assert wait.returncode == 1 and not wait.hung  # failed, decided at once, not a timeout


def test_wait_on_a_completed_group_with_a_shortened_journal_exits_0(repo: Path) -> None:
    write_tasks(repo, [task("a"), task("b")])
    assert execute(repo).returncode == 0
    journal = groups(repo) / "g" / "events.jsonl"
    journal.write_bytes(journal.read_bytes().split(b"\n", 1)[0] + b"\n")
    wait = run_cli(repo, "wait", "--group-id", "g", "--timeout", "5", timeout=15)
    assert wait.returncode == 0, (wait.stdout, wait.stderr)


# =========================================================================== 8. a signal after the final state


def test_a_signal_after_the_final_state_still_prints_it(repo: Path) -> None:
    attempts = 10
    write_tasks(repo, [task(f"a{i}", group=f"g{i}") for i in range(attempts)])
    outcomes = []
    for i in range(attempts):
        snapshot = groups(repo) / f"g{i}" / "metadata.json"
        child = subprocess.Popen([PY, "-m", "maestro_parallel", "--repo-root", str(repo), "-q", "execute",
                                  "--group-id", f"g{i}", "--tasks-file", str(repo / "tasks.json"), "--json"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

        def final(snapshot: Path = snapshot) -> bool:
            try:
                return json.loads(snapshot.read_bytes()).get("status") == "completed"
            except (OSError, ValueError):
                return False

        deadline = time.monotonic() + 30
        while not final() and child.poll() is None and time.monotonic() < deadline:
            pass  # spin: the moment lasts a few milliseconds
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        outcomes.append((child.returncode, out, err))
    for code, out, err in outcomes:
        assert b"Traceback" not in err
        assert code == 0 and json.loads(out)["status"] == "completed", (code, out, err)


# =========================================================================== 9. state files that are folders


@pytest.mark.parametrize("name", ["metadata.json", "events.jsonl"])
@pytest.mark.parametrize("command", [
    "execute", "restart", "recover", "status",
])
def test_a_state_file_that_is_a_folder_is_one_line_naming_it(repo: Path, name: str, command: str) -> None:
    finished_group(repo)
    path = groups(repo) / "g" / name
    path.unlink()
    path.mkdir()
    if command == "execute":
        done = execute(repo)
    elif command == "restart":
        done = execute(repo, "--restart")
    elif command == "recover":
        done = run_cli(repo, "recover", "--group-id", "g", "--json")
    else:
        done = run_cli(repo, "status", "--group-id", "g")
    assert not done.hung
    if command == "restart":  # sets aside whatever is there, then runs
        assert done.returncode == 0, done.stderr
        assert done.document()["status"] == "completed"
        return
    assert done.returncode == 1
    line = done.one_line_error()
    assert name in line and "6" not in line.replace(str(repo), "")


# =========================================================================== 10. logs on a huge log


def _logs_peak_rss(repo: Path, out: Path) -> int:
    """Run ``logs`` of task a as its own process; its peak RSS in KiB (stdout into ``out``)."""
    with open(out, "wb") as sink:
        child = subprocess.Popen([PY, "-m", "maestro_parallel", "--repo-root", str(repo), "-q", "logs",
                                  "--group-id", "g", "--task-id", "a"], stdout=sink, stderr=subprocess.PIPE)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            child.returncode = 0  # reaped above
            assert child.stderr is not None
            err = child.stderr.read()
            child.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 0, err
    return usage.ru_maxrss


def test_logs_streams_a_huge_log_in_bounded_memory(repo: Path, tmp_path: Path) -> None:
    finished_group(repo)
    log = groups(repo) / "g" / "logs" / "a.log"
    small = _logs_peak_rss(repo, tmp_path / "small.bin")  # the same command on the agent's own short log
    size = 300 * 1024**2
    with open(log, "r+b") as handle:  # sparse: a few hundred MB that take no disk and no time to write
        handle.truncate(size)
        handle.seek(size)
        handle.write(b"\nTHE LAST LINE\n")
    start = time.monotonic()
    huge = _logs_peak_rss(repo, tmp_path / "out.bin")
    # Streaming costs a few buffers, not the log: 300 MiB more log adds far less than 300 MiB of memory.
    assert huge - small < 64 * 1024, f"peak RSS {huge // 1024} MiB for a {size >> 20} MiB log, {small // 1024} MiB for a short one"
    assert time.monotonic() - start < 60
    with open(tmp_path / "out.bin", "rb") as handle:
        handle.seek(-64, os.SEEK_END)
        assert b"THE LAST LINE" in handle.read()


def test_logs_follow_starts_near_the_end_of_a_long_log(repo: Path) -> None:
    finished_group(repo)
    log = groups(repo) / "g" / "logs" / "a.log"
    log.write_bytes(b"".join(b"line %06d\n" % i for i in range(100_000)))  # about 1.1 MB
    follow = run_cli(repo, "logs", "--group-id", "g", "--task-id", "a", "--follow", timeout=30)
    assert follow.returncode == 0, follow.stderr
    lines = follow.stdout.splitlines()
    assert lines[-1] == "line 099999" and 100 < len(lines) < 5_000  # the last lines, from a whole line
    assert all(line.startswith("line ") and len(line) == 11 for line in lines)
    whole = run_cli(repo, "logs", "--group-id", "g", "--task-id", "a", timeout=30)
    assert len(whole.stdout.splitlines()) == 100_000  # without --follow: all of it


# =========================================================================== 11. smaller ones


def test_restart_never_leaves_the_group_without_state(repo: Path) -> None:
    finished_group(repo)
    folder = groups(repo) / "g"
    missing: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (folder / "metadata.json").exists() and not (folder / "events.jsonl").exists():
                missing.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(8):
            assert execute(repo, "--restart").returncode == 0
    finally:
        stop.set()
        watcher.join()
    assert missing == [], f"{len(missing)} looks found neither snapshot nor journal"


def test_cancelling_in_the_first_millisecond_leaves_no_unreadable_group(repo: Path) -> None:
    from maestro_parallel import AsyncParallelCoordinator
    from maestro_parallel.trackers import LocalTracker

    unreadable = []
    for index, delay in enumerate([i / 10_000 for i in range(40)]):
        group = f"c{index}"

        async def body(delay: float = delay, group: str = group) -> None:
            coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo))
            with anyio.move_on_after(delay):
                await coordinator.execute_parallel_group([{"id": "a", "description": f"[P:Group-{group}]"}], group)

        anyio.run(body)
        listing = run_cli(repo, "list", "--json", timeout=15)
        assert listing.returncode == 0 and "Traceback" not in listing.stderr
        unreadable += [row for row in listing.document() if row.get("error")]
    assert unreadable == []


@pytest.mark.parametrize("obstacle", [
    "config-is-a-folder", "maestro-is-a-file", "flow-read-only",
])
def test_init_force_that_cannot_write_is_one_line(repo: Path, obstacle: str) -> None:
    maestro = repo / ".flow" / "maestro"
    if obstacle == "config-is-a-folder":
        (maestro / "config.toml").unlink()
        (maestro / "config.toml").mkdir()
    elif obstacle == "flow-read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        maestro.chmod(0o500)
    else:
        for child in maestro.iterdir():
            child.unlink() if child.is_file() else None
        maestro.rmdir()
        maestro.write_text("in the way")
    try:
        done = run_cli(repo, "init", "--force")
    finally:
        if obstacle == "flow-read-only":
            maestro.chmod(0o700)
    line = done.one_line_error()
    assert done.returncode == 1 and ("config.toml" in line or ".flow/maestro" in line), line


class CallbackBroke(Exception):
    pass


def test_an_exception_in_on_event_surfaces_as_itself(repo: Path) -> None:
    from maestro_parallel import AsyncParallelCoordinator
    from maestro_parallel.trackers import LocalTracker

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "task_started":
            raise CallbackBroke("the callback broke")

    async def body() -> None:
        coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo), on_event=on_event)
        await coordinator.execute_parallel_group([task("a")], "g")

    with pytest.raises(CallbackBroke, match="the callback broke"):
        anyio.run(body)
    no_processes_left(repo)


def test_sole_exception_unwraps_a_group_of_one_only() -> None:
    from maestro_parallel.runtime.coordinator import sole_exception

    error = CallbackBroke("x")
    assert sole_exception(BaseExceptionGroup("", [ExceptionGroup("", [error])])) is error
    assert sole_exception(ExceptionGroup("", [error, ValueError()])) is None
    assert sole_exception(ExceptionGroup("", [ExceptionGroup("", [error]), ExceptionGroup("", [KeyError()])])) is None


# =========================================================================== 12. bd blocked failing; detect


def test_a_failing_bd_blocked_still_runs_the_ready_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import fake_bd

    fake = Path(fake_bd.__file__).resolve()
    repo = make_repo(tmp_path / "repo")
    (repo / ".beads").mkdir()
    state = tmp_path / "beads-state.json"
    fake_bd.seed(state, [
        {"id": "dep-open", "title": "a blocker outside the group", "description": ""},
        {"id": "r1", "title": "ready one", "description": "[P:Group-g] print=r1"},
        {"id": "r2", "title": "ready two", "description": "[P:Group-g] print=r2"},
        {"id": "b1", "title": "blocked one", "description": "[P:Group-g] print=b1", "deps": [("blocks", "dep-open")]},
    ])
    config = repo / ".flow" / "maestro" / "config.toml"
    config.write_text(config.read_text().replace(
        '[tracker]\nkind = "local"',
        f'[tracker]\nkind = "beads"\nbd_command = {json.dumps([PY, str(fake)])}\ncall_timeout_seconds = 10.0',
    ))
    env = {"FAKE_BD_STATE": str(state), "FAKE_BD_PATH": str(fake), "FAKE_BD_MODE": "fail@blocked"}
    done = run_cli(repo, "execute", "--group-id", "g", "--from-beads", "--json", env=env, timeout=60)
    assert "Traceback" not in done.stderr
    results = {r["task_id"]: r for r in done.document()["results"]}
    assert results["r1"]["status"] == "completed" and results["r2"]["status"] == "completed", results
    assert results["b1"]["status"] == "blocked"
    assert "blockers unknown (bd blocked failed" in results["b1"]["error"]


def test_a_failing_bd_blocked_leaves_the_verdict_to_bd_ready() -> None:
    """The pure rule: ready tasks stay ready; the others are blocked, their blockers unknown."""
    from maestro_parallel.tasks import parse_task
    from maestro_parallel.trackers.beads import decide_blockers

    tasks = [parse_task({"id": i, "status": "open"}, index=n) for n, i in enumerate(("r", "w"))]
    answer = decide_blockers(tasks, {"r"}, {}, {t.task_id: t for t in tasks}, "me", "bd blocked failed (exit 1)")
    assert answer == {"r": [], "w": ["blockers unknown (bd blocked failed: bd blocked failed (exit 1))"]}
    assert decide_blockers(tasks, {"r"}, {"w": ["x"]}, {t.task_id: t for t in tasks}, "me")["w"] == ["x"]


def test_detect_with_a_malformed_config_is_one_line_exit_2(repo: Path) -> None:
    (repo / ".flow" / "maestro" / "config.toml").write_text("[agent\ncommand = ")
    write_tasks(repo, [task("a")])
    done = run_cli(repo, "detect", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert done.returncode == 2
    assert "config.toml" in done.one_line_error()
    assert json.loads(done.stdout)["error"] == done.one_line_error()[len("Error: "):]


def test_the_guard_records_and_refuses_signals_to_pid_one_or_less(tmp_path: Path,
                                                                   victim: subprocess.Popen[bytes]) -> None:
    """The harness itself: a signal to pid ≤ 1 through the guard is recorded and never sent."""
    log = tmp_path / "signals.jsonl"
    code = GUARD.replace('runpy.run_module("maestro_parallel", run_name="__main__", alter_sys=True)',
                         f"os.kill({victim.pid}, 0)\ntry:\n    os.kill(-1, 15)\nexcept PermissionError:\n"
                         "    print('refused')")
    done = subprocess.run([PY, "-c", code], env={**os.environ, "PROBE_SIGNAL_LOG": str(log)}, capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.strip() == "refused" and signals_sent(log) == [("kill", -1, 15)]
    assert alive(victim.pid)
