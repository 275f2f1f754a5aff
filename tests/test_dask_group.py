"""Groups executed through the command line with ``[executor] kind = "dask"``.

A real ``distributed.LocalCluster`` of two worker processes (started once for
the module) runs the agents; a real git repository receives their work as
branches.  The agent is a committed script, so it exists in every worker's
clone of ``base_sha``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import write_config

from maestro_parallel.cli import main
from maestro_parallel.executors import WorkerPath
from maestro_parallel.runtime.remote import remote_argv, remote_env

distributed = pytest.importorskip("distributed")

#: The agent: writes <task>.txt, prints, and obeys words of its prompt: sleep=<s>, exit=<n>,
#: pidfile=<path> (records "<pid> <grandchild pid> <worker pid>" there and starts a grandchild;
#: when the file already exists it is a later attempt: it does not sleep), stubborn (ignores SIGTERM).
AGENT = r"""
import os, re, signal, subprocess, sys, time
task, prompt_file = sys.argv[1], sys.argv[2]
prompt = open(prompt_file, encoding="utf-8").read()
def opt(name, default=None):
    m = re.search(r"\b" + name + r"=(\S+)", prompt)
    return m.group(1) if m else default
open(f"{task}.txt", "w").write(f"work of {task}\n")
print(f"{task} working", flush=True)
sleep = float(opt("sleep", "0"))
pidfile = opt("pidfile")
if pidfile:
    with open(pidfile + ".runs", "a") as f:
        f.write(f"{os.getpid()}\n")
    if os.path.exists(pidfile):
        sleep = 0
    else:
        child = subprocess.Popen(["sleep", "60"])
        if "stubborn" in prompt:  # after the grandchild started: an ignored signal is inherited
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(pidfile + ".tmp", "w").write(f"{os.getpid()} {child.pid} {os.getppid()}")
        os.replace(pidfile + ".tmp", pidfile)
time.sleep(sleep)
print(f"{task} done", flush=True)
sys.exit(int(opt("exit", "0")))
"""


@pytest.mark.parametrize(
    ("argv", "program", "shipped"),
    [
        (["/usr/bin/claude", "-p", "hi"], "claude", ("claude", "-p", "hi")),
        (["/opt/agent", "--file=/r/.flow/p/t.md"], None, ("/opt/agent", WorkerPath("prompt_file", "--file=", ""))),
        (["a", "/r/.flow/p/t.md", "cd /r && make"], None, ("a", WorkerPath("prompt_file"), WorkerPath("worktree", "cd ", " && make"))),
        (["a", "{prompt_file}", "/rx", "/rx:/r/src"], None, ("a", "{prompt_file}", "/rx", WorkerPath("worktree", "/rx:", "/src"))),
    ],
)
def test_a_local_argv_is_made_fit_for_a_worker(argv: list[str], program: str | None, shipped: tuple[object, ...]) -> None:
    assert remote_argv(argv, prompt_file="/r/.flow/p/t.md", repo_root="/r", program=program) == shipped


def test_only_the_agents_own_variables_travel_to_a_worker() -> None:
    env = {"PATH": "/bin", "HOME": "/home/me", "TOKEN": "t", "MAESTRO_TASK_ID": "a", "MAESTRO_PROMPT_FILE": "/r/p",
           "MAESTRO_REPO_ROOT": "/r", "MAESTRO_SKILLS": ""}
    assert remote_env(env, {"TOKEN": "t"}) == {"TOKEN": "t", "MAESTRO_TASK_ID": "a", "MAESTRO_SKILLS": ""}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _wait_for(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    local = distributed.LocalCluster(
        n_workers=2, threads_per_worker=4, processes=True, dashboard_address=":0", silence_logs=50
    )
    try:
        yield local
    finally:
        local.close()


def _config(address: str, extra: str = "") -> str:
    return f"""
[agent]
command = [{json.dumps(sys.executable)}, "agent.py", "{{task_id}}", "{{prompt_file}}"]
timeout_seconds = 60
grace_seconds = 1

[refresh]
enabled = false

[tests]
enabled = false

[executor]
kind = "dask"
address = "{address}"
{extra}
"""


@pytest.fixture
def repo(tmp_path: Path, cluster: Any) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "dev@example.com")
    _git(root, "config", "user.name", "Dev")
    (root / "agent.py").write_text(AGENT)
    (root / ".gitignore").write_text(".flow/\ntasks.json\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "initial")
    write_config(root, _config(cluster.scheduler_address))
    return root


def _tasks(repo: Path, *tasks: tuple[str, str]) -> str:
    path = repo / "tasks.json"
    path.write_text(
        json.dumps([{"id": t, "title": f"[P:Group-g] task {t}", "description": d, "status": "open"} for t, d in tasks])
    )
    return str(path)


def _execute(repo: Path, tasks_file: str) -> Result:
    return CliRunner().invoke(
        main, ["--repo-root", str(repo), "execute", "--group-id", "g", "--tasks-file", tasks_file, "--json"]
    )


def _journal(repo: Path) -> list[dict[str, Any]]:
    path = repo / ".flow" / "maestro" / "parallel_groups" / "g" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _log(repo: Path, task_id: str) -> str:
    return (repo / ".flow" / "maestro" / "parallel_groups" / "g" / "logs" / f"{task_id}.log").read_text()


def _workers(cluster: Any) -> set[str]:
    return set(cluster.scheduler_info["workers"])


def test_a_group_runs_on_the_workers_and_its_work_comes_back_as_branches(repo: Path, cluster: Any) -> None:
    base = _git(repo, "rev-parse", "HEAD")
    result = _execute(repo, _tasks(repo, ("a", "print"), ("b", "sleep=0.5"), ("c", "exit=3")))
    assert result.exit_code == 1, result.output  # c failed
    document = json.loads(result.stdout)
    results = {r["task_id"]: r for r in document["results"]}
    assert results["a"]["status"] == results["b"]["status"] == "completed"
    assert results["c"]["status"] == "failed" and "exit code 3" in results["c"]["error"]
    workers = _workers(cluster)
    for task_id in ("a", "b", "c"):
        entry = results[task_id]
        assert entry["host"] in workers
        assert entry["branch"] == f"maestro/g/{task_id}"
        assert _git(repo, "rev-parse", f"refs/heads/maestro/g/{task_id}") == entry["head_sha"] != base
        assert _git(repo, "show", f"maestro/g/{task_id}:{task_id}.txt") == f"work of {task_id}"
        assert _git(repo, "rev-parse", f"maestro/g/{task_id}^") == base
        # The worker's log is the task's log, as for a local agent.
        assert _log(repo, task_id) == f"{task_id} working\n{task_id} done\n"
    started = [e for e in _journal(repo) if e["event"] == "task_started"]
    assert sorted(e["task_id"] for e in started) == ["a", "b", "c"]
    assert "a started (attempt 1, on tcp://" in result.stderr  # the progress names the worker
    assert all(e["host"] in workers and "pid" not in e for e in started)
    # The merge queue lands the completed tasks' work, and only theirs, on the user's branch.
    assert document["landed"] is True and _git(repo, "rev-parse", "HEAD") == document["landed_sha"] != base
    assert _git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / "a.txt").read_text().strip() == "work of a" and (repo / "b.txt").read_text().strip() == "work of b"
    assert not (repo / "c.txt").exists()
    assert _git(repo, "rev-parse", "refs/heads/maestro/g/c") == results["c"]["head_sha"]  # kept, never merged


def test_a_refusing_scheduler_fails_the_group_in_one_line_and_launches_nothing(repo: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_config(repo, _config(f"tcp://127.0.0.1:{port}"))
    started = time.monotonic()
    result = CliRunner().invoke(main, ["--repo-root", str(repo), "execute", "--group-id", "g",
                                       "--tasks-file", _tasks(repo, ("a", ""), ("b", ""))])
    assert result.exit_code == 1
    assert time.monotonic() - started < 30
    assert "Traceback" not in result.output
    reason = f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    errors = [line for line in result.stdout.splitlines() if reason in line]
    assert len(errors) == 1 and errors[0].startswith("  error: ")
    journal = _journal(repo)
    assert not [e for e in journal if e["event"] == "task_started"]
    assert {e["task_id"]: e["error"] for e in journal if e["event"] == "task_finished"} == {
        "a": "not launched",
        "b": "not launched",
    }
    assert _git(repo, "for-each-ref", "refs/heads/maestro") == ""


def test_shared_isolation_is_refused_for_dask_before_anything_runs(repo: Path, cluster: Any) -> None:
    write_config(repo, _config(cluster.scheduler_address, '[isolation]\nmode = "shared"\n'))
    result = _execute(repo, _tasks(repo, ("a", "")))
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert "executor kind 'dask' needs worktree isolation, impossible here: mode = shared" in document["errors"]
    assert not [e for e in _journal(repo) if e["event"] == "task_started"]


def test_a_worker_killed_mid_task_fails_that_attempt_naming_it_and_the_retry_runs_it_once_more(
    repo: Path, cluster: Any, tmp_path: Path
) -> None:
    pidfile = tmp_path / "doomed.pids"
    killed: list[int] = []

    def kill_its_worker() -> None:
        agent, grandchild, worker = (int(x) for x in _wait_for(pidfile).split())
        killed.extend([agent, grandchild])
        os.kill(worker, signal.SIGKILL)

    killer = threading.Thread(target=kill_its_worker)
    killer.start()
    try:
        result = _execute(repo, _tasks(repo, ("doomed", f"sleep=60 pidfile={pidfile}")))
    finally:
        killer.join(60)
        for pid in killed:  # the dead worker's agent is orphaned on its machine (a documented limit)
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        distributed.Client(cluster).wait_for_workers(2, timeout=60)
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["results"][0]
    assert entry["status"] == "completed" and entry["attempts"] == 2
    started = [e for e in _journal(repo) if e["event"] == "task_started"]
    assert [e["attempt"] for e in started] == [1, 2]
    lost = started[0]["host"]
    assert any(f"worker {lost} died while running this attempt" in w for w in entry["warnings"])
    # Each attempt ran exactly once: Dask's own rescheduling of the first never started it again.
    assert len(Path(f"{pidfile}.runs").read_text().split()) == 2
    assert _git(repo, "show", "maestro/g/doomed:doomed.txt") == "work of doomed"


def test_work_that_cannot_be_applied_fails_its_task_naming_why(repo: Path) -> None:
    # The task's branch is checked out in the user's repository: git refuses to move it under them.
    _git(repo, "checkout", "-q", "-b", "maestro/g/busy")
    base = _git(repo, "rev-parse", "HEAD")
    result = _execute(repo, _tasks(repo, ("busy", ""), ("fine", "")))
    assert result.exit_code == 1, result.output
    results = {r["task_id"]: r for r in json.loads(result.stdout)["results"]}
    assert results["fine"]["status"] == "completed"
    busy = results["busy"]
    assert busy["status"] == "failed"
    assert busy["error"].startswith("the work of task busy cannot be applied: git fetch failed:")
    assert busy["error"].endswith(f"(from {busy['host']})")
    # The checked-out branch is the target: the other task's work lands on it, the refused one's never does.
    assert _git(repo, "rev-parse", "maestro/g/busy") != base and (repo / "fine.txt").exists()
    assert not (repo / "busy.txt").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_cancel_of_execute_stops_the_agents_on_the_workers(
    repo: Path, tmp_path: Path, signum: int, code: int
) -> None:
    files = [tmp_path / f"c{n}.pids" for n in range(2)]
    tasks_file = _tasks(repo, *((f"c{n}", f"sleep=60 pidfile={files[n]}") for n in range(2)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
         "--tasks-file", tasks_file, "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        pids = [int(x) for path in files for x in _wait_for(path).split()[:2]]
        assert all(_alive(pid) for pid in pids)
        # The lines the agents print reach their log files while they run (what `logs --follow` reads).
        logs = repo / ".flow" / "maestro" / "parallel_groups" / "g" / "logs"
        for n in range(2):
            assert _wait_for(logs / f"c{n}.log") == f"c{n} working\n"
        proc.send_signal(signum)  # SIGTERM is what `cancel` sends
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    document = json.loads(stdout)
    assert document["status"] == "failed"
    assert {r["error"] for r in document["results"]} == {"interrupted"}
    assert f"run interrupted by {signal.Signals(signum).name}" in document["errors"]
    assert not [pid for pid in pids if _alive(pid)]
    for n in range(2):  # what they had written came home
        assert _git(repo, "show", f"maestro/g/c{n}:c{n}.txt") == f"work of c{n}"
        assert f"c{n} working" in _log(repo, f"c{n}")


def test_a_task_closed_in_the_tracker_stops_its_agent_on_the_worker(repo: Path, cluster: Any, tmp_path: Path) -> None:
    write_config(repo, _config(cluster.scheduler_address, "[tracker]\npoll_interval_seconds = 0.2\n"))
    pidfile = tmp_path / "closed.pids"
    tasks_file = _tasks(repo, ("closed", f"sleep=60 pidfile={pidfile}"))

    def close_it() -> None:
        _wait_for(pidfile)
        tasks = json.loads(Path(tasks_file).read_text())
        tasks[0]["status"] = "closed"
        Path(tasks_file).write_text(json.dumps(tasks))

    closer = threading.Thread(target=close_it)
    closer.start()
    began = time.monotonic()
    try:
        result = _execute(repo, tasks_file)
    finally:
        closer.join(60)
    assert time.monotonic() - began < 40  # not the agent's 60 s
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["results"][0]
    assert entry["status"] == "completed" and entry["closed"] is True
    assert entry["host"] in _workers(cluster) and entry["branch"] == "maestro/g/closed"
    agent, grandchild, _ = (int(x) for x in pidfile.read_text().split())
    assert not _alive(agent) and not _alive(grandchild)
    assert _git(repo, "show", "maestro/g/closed:closed.txt") == "work of closed"


def test_the_group_timeout_stops_the_agent_on_its_worker(repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "slow.pids"
    began = time.monotonic()
    result = CliRunner().invoke(
        main,
        ["--repo-root", str(repo), "execute", "--group-id", "g", "--timeout", "3", "--json",
         "--tasks-file", _tasks(repo, ("slow", f"sleep=60 pidfile={pidfile}"))],
    )
    assert time.monotonic() - began < 40
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert any("group timed out after 3s" in error for error in document["errors"])
    agent, grandchild, _ = (int(x) for x in pidfile.read_text().split())
    assert not _alive(agent) and not _alive(grandchild)
    assert _git(repo, "show", "maestro/g/slow:slow.txt") == "work of slow"


def test_a_whole_plan_runs_its_groups_on_the_workers(repo: Path, cluster: Any) -> None:
    path = repo / "tasks.json"
    path.write_text(json.dumps([
        {"id": "a", "title": "[P:Group-one] a", "description": "", "status": "open"},
        {"id": "b", "title": "[P:Group-two] b", "description": "", "status": "open", "dependencies": ["a"]},
    ]))
    result = CliRunner().invoke(main, ["--repo-root", str(repo), "run", "--tasks-file", str(path), "--json"])
    assert result.exit_code == 0, result.output
    for group, task_id in (("one", "a"), ("two", "b")):
        assert _git(repo, "show", f"maestro/{group}/{task_id}:{task_id}.txt") == f"work of {task_id}"
        meta = json.loads((repo / ".flow" / "maestro" / "parallel_groups" / group / "metadata.json").read_text())
        assert meta["results"][0]["host"] in _workers(cluster)


def test_a_capped_log_comes_back_whole_from_the_worker_as_a_local_one_would_be(repo: Path, cluster: Any) -> None:
    (repo / "loud.py").write_text("for n in range(2000):\n    print(f'line {n:04d}', flush=n % 100 == 0)\n")
    _git(repo, "add", "loud.py")
    _git(repo, "commit", "-q", "-m", "loud")
    config = _config(cluster.scheduler_address).replace('"agent.py", "{task_id}", "{prompt_file}"', '"loud.py"')
    write_config(repo, config.replace("grace_seconds = 1", "grace_seconds = 1\nmax_log_bytes = 4000"))
    result = _execute(repo, _tasks(repo, ("loud", "")))
    assert result.exit_code == 0, result.output
    log = _log(repo, "loud")
    assert log.startswith("line 0000\n") and log.endswith("line 1999\n")
    assert "bytes dropped from the middle of this log (max_log_bytes = 4000)" in log
    assert len(log) < 4000 + 200


def test_a_second_ctrl_c_kills_a_stubborn_agent_on_its_worker_without_its_grace(repo: Path, cluster: Any, tmp_path: Path) -> None:
    write_config(repo, _config(cluster.scheduler_address).replace("grace_seconds = 1", "grace_seconds = 60"))
    pidfile = tmp_path / "stubborn.pids"
    tasks_file = _tasks(repo, ("stubborn", f"sleep=120 stubborn pidfile={pidfile}"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
         "--tasks-file", tasks_file, "--json"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        agent, grandchild, _ = (int(x) for x in _wait_for(pidfile).split())
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while _alive(grandchild):  # the first stop is under way: SIGTERM reached the group, the agent ignores it
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert _alive(agent)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - sent < 20  # not the 60 s grace period
    assert proc.returncode == 130, stderr
    assert not _alive(agent)
    assert json.loads(stdout)["status"] == "failed"
