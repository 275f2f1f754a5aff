"""The Dask executor against a real ``distributed.LocalCluster`` of two worker processes.

Agents are real programs (``sys.executable -c ...``) run by the workers; their
commits come back as branches of a real repository.  The cluster is started
once for the module; a test that kills a worker waits for its nanny to bring
it back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

distributed = pytest.importorskip("distributed")

from maestro_parallel.executors import (  # noqa: E402
    AttemptSpec,
    AttemptStatus,
    BundleError,
    EventKind,
    ExecutorEvent,
    ExecutorUnavailableError,
    RepoInfo,
    WorkerPath,
)
from maestro_parallel.executors._worker import (  # noqa: E402
    FORBIDDEN_ENV,
    HeadTailLog,
    agent_environment,
    commit_message,
    resolve_argv,
    run_agent,
)
from maestro_parallel.executors.dask import (  # noqa: E402
    DaskExecutor,
    apply_bundle,
    local_cluster_shape,
    scheduler_endpoint,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------- pure rules


def test_executors_all_is_a_sorted_tuple_of_importable_names() -> None:
    import maestro_parallel.executors as executors
    import maestro_parallel.executors.base as base

    assert isinstance(executors.__all__, tuple) and list(executors.__all__) == sorted(executors.__all__)
    assert executors.__all__ == base.__all__
    assert all(getattr(executors, name) is getattr(base, name) for name in executors.__all__)
    assert issubclass(ExecutorUnavailableError, executors.ExecutorError) and issubclass(BundleError, executors.ExecutorError)



@pytest.mark.parametrize(
    ("workers", "agents", "cpus", "shape"),
    [
        (2, 40, 2, (2, 20)),
        (2, 3, 8, (2, 2)),
        (0, 40, 4, (4, 10)),
        (0, 2, 16, (2, 1)),
        (0, 0, None, (1, 1)),
        (3, 1, 2, (3, 1)),
    ],
)
def test_local_cluster_threads_follow_the_agents(workers: int, agents: int, cpus: int | None, shape: tuple[int, int]) -> None:
    assert local_cluster_shape(workers, agents, cpus) == shape


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("tcp://10.0.0.5:8786", ("10.0.0.5", 8786)),
        ("scheduler.example:8786", ("scheduler.example", 8786)),
        ("tls://[::1]:8786", ("::1", 8786)),
        ("tcp://host-without-port", None),
        ("inproc://abc", None),
        ("tcp://host:notaport", None),
    ],
)
def test_scheduler_endpoint(address: str, endpoint: tuple[str, int] | None) -> None:
    assert scheduler_endpoint(address) == endpoint


def test_agent_environment_drops_what_must_never_reach_an_agent() -> None:
    base = {"PATH": "/bin", "CLAUDECODE": "1", "GIT_DIR": "/x/.git", "GIT_WORK_TREE": "/x", "GIT_INDEX_FILE": "/i"}
    env = agent_environment(base, {"MAESTRO_TASK_ID": "t1", "PATH": "/opt/bin", "GIT_DIR": "/evil"})
    assert env == {"PATH": "/opt/bin", "MAESTRO_TASK_ID": "t1"}
    assert not FORBIDDEN_ENV & env.keys()


def test_worker_paths_are_filled_and_text_is_never_expanded() -> None:
    argv = ("agent", "{prompt_file}", WorkerPath("prompt_file", prefix="--file="), WorkerPath("worktree"))
    paths = {"prompt_file": "/tmp/p.md", "worktree": "/tmp/w"}
    assert resolve_argv(argv, paths) == ["agent", "{prompt_file}", "--file=/tmp/p.md", "/tmp/w"]


def test_commit_message_has_the_group_trailer() -> None:
    assert commit_message("t1", "Fix  the\nparser", "g") == "t1: Fix the parser\n\nMaestro-Group: g\n"


def test_log_cap_keeps_head_and_tail() -> None:
    log = HeadTailLog(400)
    log.feed(b"H" * 100)
    for _ in range(100):
        log.feed(b"m" * 100)
    log.feed(b"T" * 300)
    text = log.getvalue()
    assert text.startswith(b"H" * 100)
    assert text.endswith(b"T" * 300)
    assert b"10000 bytes dropped from the middle" in text
    assert HeadTailLog(0).getvalue() == b""


# ---------------------------------------------------------------- helpers


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "dev@example.com")
    _git(repo, "config", "user.name", "Dev")
    (repo / "README.md").write_text("hello\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    return repo


def _alive(pid: int) -> bool:
    """True while ``pid`` is a process that is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


async def _wait_for(path: Path, timeout: float = 30.0) -> str:
    with anyio.fail_after(timeout):
        while not path.exists() or not path.read_text().strip():
            await anyio.sleep(0.02)
    return path.read_text()


#: An agent: writes a file named by argv[1] (content argv[2]), prints lines, exits with argv[3].
WRITER = """
import os, sys
open(sys.argv[1], "w").write(sys.argv[2])
env = {k: os.environ.get(k) for k in ("CLAUDECODE", "GIT_DIR", "MAESTRO_TASK_ID", "MAESTRO_PROMPT_FILE")}
open("env.json", "w").write(__import__("json").dumps(env))
print("prompt:", open(os.environ["MAESTRO_PROMPT_FILE"]).read())
print("line two")
sys.exit(int(sys.argv[3]))
"""

#: An agent that records its pid and its worker's pid, starts a grandchild, and sleeps.
SLEEPER = """
import os, subprocess, sys, time
out = sys.argv[1]
open("progress.txt", "w").write("half done")
child = subprocess.Popen(["sleep", "60"])
with open(out + ".runs", "a") as f:
    f.write(f"{os.getpid()}\\n")
open(out + ".tmp", "w").write(f"{os.getpid()} {child.pid} {os.getppid()}")
os.replace(out + ".tmp", out)
time.sleep(60)
"""


def _spec(repo: Path, task_id: str, argv: tuple[Any, ...], **kwargs: Any) -> AttemptSpec:
    return AttemptSpec(
        task_id=task_id,
        group_id="g1",
        title=f"Task {task_id}",
        argv=argv,
        prompt=kwargs.pop("prompt", f"do {task_id}"),
        base_sha=_git(repo, "rev-parse", "HEAD"),
        repo=RepoInfo(repo),
        env={"MAESTRO_TASK_ID": task_id},
        **kwargs,
    )


# ---------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two worker processes, four threads each.

    The workers' environment is hostile on purpose: ``CLAUDECODE`` and a
    ``GIT_DIR`` that must never reach an agent (or the worker's own git), and no
    git identity (a HOME without a .gitconfig), so the fallback identity is used.
    """
    hostile = {
        "CLAUDECODE": "1",
        "GIT_DIR": "/nonexistent/.git",
        "HOME": str(tmp_path_factory.mktemp("worker-home")),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    saved = {name: os.environ.get(name) for name in hostile}
    os.environ.update(hostile)
    try:
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=4, processes=True, dashboard_address=":0", silence_logs=50
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield local
    finally:
        local.close()


async def test_agents_run_on_workers_and_their_commits_come_back_as_branches(cluster: Any, git_repo: Path) -> None:
    events: list[ExecutorEvent] = []
    base = _git(git_repo, "rev-parse", "HEAD")
    async with DaskExecutor(cluster.scheduler_address) as executor:
        workers = set(await executor.client.nthreads())
        outcomes = {}

        async def one(task_id: str, code: int) -> None:
            spec = _spec(git_repo, task_id, (sys.executable, "-c", WRITER, f"{task_id}.txt", f"work of {task_id}", str(code)))
            outcomes[task_id] = await executor.run(spec, events.append)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "t1", 0)
            tg.start_soon(one, "t2", 0)
            tg.start_soon(one, "t3", 3)
    for task_id in ("t1", "t2"):
        outcome = outcomes[task_id]
        assert outcome.ok, outcome
        assert outcome.branch == f"maestro/g1/{task_id}"
        assert outcome.host in workers
        branch_sha = _git(git_repo, "rev-parse", f"refs/heads/maestro/g1/{task_id}")
        assert branch_sha == outcome.head_sha != base
        assert _git(git_repo, "show", f"{branch_sha}:{task_id}.txt") == f"work of {task_id}"
        env = json.loads(_git(git_repo, "show", f"{branch_sha}:env.json"))
        assert env["CLAUDECODE"] is None and env["GIT_DIR"] is None
        assert env["MAESTRO_TASK_ID"] == task_id and env["MAESTRO_PROMPT_FILE"]
        assert _git(git_repo, "log", "-1", "--format=%an <%ae>", branch_sha) == "maestro-parallel <maestro-parallel@localhost>"
        message = _git(git_repo, "log", "-1", "--format=%B", branch_sha)
        assert message.startswith(f"{task_id}: Task {task_id}") and "Maestro-Group: g1" in message
        assert _git(git_repo, "rev-parse", f"{branch_sha}^") == base
        assert b"prompt: do " + task_id.encode() in outcome.log and b"line two" in outcome.log
    # A failing agent's work is committed and brought back too, never lost.
    failed = outcomes["t3"]
    assert failed.status is AttemptStatus.EXITED and failed.returncode == 3 and not failed.ok
    assert _git(git_repo, "show", "refs/heads/maestro/g1/t3:t3.txt") == "work of t3"
    # The user's checkout is untouched, and no temporary ref is left behind.
    assert _git(git_repo, "status", "--porcelain") == ""
    assert _git(git_repo, "rev-parse", "HEAD") == base
    assert _git(git_repo, "for-each-ref", "refs/maestro-base") == ""
    for task_id in ("t1", "t2", "t3"):
        kinds = [e.kind for e in events if e.task_id == task_id]
        assert kinds[0] is EventKind.STARTED and kinds[-1] is EventKind.FINISHED
        logged = "".join(e.text for e in events if e.task_id == task_id and e.kind is EventKind.LOG)
        assert "line two" in logged


async def test_an_agent_that_changes_nothing_leaves_its_branch_at_base(cluster: Any, git_repo: Path) -> None:
    async with DaskExecutor(cluster.scheduler_address) as executor:
        outcome = await executor.run(_spec(git_repo, "idle", (sys.executable, "-c", "print('nothing to do')")), lambda e: None)
    assert outcome.ok and outcome.head_sha == _git(git_repo, "rev-parse", "HEAD")
    assert _git(git_repo, "rev-parse", "refs/heads/maestro/g1/idle") == outcome.head_sha


async def test_timeout_stops_the_agents_process_group_on_the_worker(cluster: Any, git_repo: Path, tmp_path: Path) -> None:
    pids = tmp_path / "timeout.pids"
    spec = _spec(git_repo, "slow", (sys.executable, "-c", SLEEPER, str(pids)), timeout_seconds=1.5, grace_seconds=0.5)
    started = time.monotonic()
    async with DaskExecutor(cluster.scheduler_address) as executor:
        outcome = await executor.run(spec, lambda e: None)
    assert outcome.status is AttemptStatus.TIMED_OUT
    assert time.monotonic() - started < 30
    assert _git(git_repo, "show", "refs/heads/maestro/g1/slow:progress.txt") == "half done"
    agent, grandchild, _ = (int(x) for x in pids.read_text().split())
    assert not _alive(agent) and not _alive(grandchild)


async def test_cancelling_the_caller_stops_the_agent_on_the_worker(cluster: Any, git_repo: Path, tmp_path: Path) -> None:
    pids = tmp_path / "cancel.pids"
    events: list[ExecutorEvent] = []
    spec = _spec(git_repo, "cancelled", (sys.executable, "-c", SLEEPER, str(pids)), grace_seconds=1.0)
    async with DaskExecutor(cluster.scheduler_address) as executor:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(executor.run, spec, events.append)
                await _wait_for(pids)
                scope.cancel()
        assert scope.cancelled_caught
    # When the caller's scope is left, nothing of the agent is alive on the worker.
    agent, grandchild, _ = (int(x) for x in pids.read_text().split())
    assert not _alive(agent) and not _alive(grandchild)
    finished = [e for e in events if e.kind is EventKind.FINISHED]
    assert [e.text for e in finished] == [AttemptStatus.STOPPED]
    # What the stopped agent had written came back as a commit: nothing is lost.
    assert _git(git_repo, "show", "refs/heads/maestro/g1/cancelled:progress.txt") == "half done"


async def test_a_worker_killed_mid_task_fails_the_attempt_naming_it_and_never_reruns_it(
    cluster: Any, git_repo: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "killed.pids"
    events: list[ExecutorEvent] = []
    spec = _spec(git_repo, "doomed", (sys.executable, "-c", SLEEPER, str(pids)))
    agent = grandchild = 0
    try:
        async with DaskExecutor(cluster.scheduler_address) as executor:
            async with anyio.create_task_group() as tg:

                async def kill_its_worker() -> None:
                    nonlocal agent, grandchild
                    agent, grandchild, worker_pid = (int(x) for x in (await _wait_for(pids)).split())
                    os.kill(worker_pid, signal.SIGKILL)

                tg.start_soon(kill_its_worker)
                with anyio.fail_after(60):
                    outcome = await executor.run(spec, events.append)
            await executor.client.wait_for_workers(2, timeout=60)
        started = [e.host for e in events if e.kind is EventKind.STARTED]
        assert len(started) == 1
        assert outcome.status is AttemptStatus.WORKER_LOST
        assert outcome.error is not None and started[0] in outcome.error
        assert outcome.host == started[0]
        # Dask rescheduled the task on the other worker, which refused to run it again.
        assert len((pids.parent / (pids.name + ".runs")).read_text().split()) == 1
        assert not git_repo.joinpath(".git/refs/heads/maestro/g1/doomed").exists()
    finally:
        # The killed worker's agent is orphaned on that machine (a limit documented in docs/executors.md).
        for pid in (agent, grandchild):
            if pid:
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


async def test_a_refusing_scheduler_address_is_one_clear_error_quickly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ExecutorUnavailableError) as caught:
        async with DaskExecutor(f"tcp://127.0.0.1:{port}", connect_timeout=5):
            pytest.fail("nothing may run without a scheduler")
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}") and "\n" not in message


async def test_a_corrupt_bundle_fails_to_apply_with_a_clear_error(git_repo: Path, tmp_path: Path) -> None:
    head = _git(git_repo, "rev-parse", "HEAD")
    with pytest.raises(BundleError, match=r"^the work of task t9 cannot be applied: git fetch failed: fatal: ") as caught:
        await apply_bundle(git_repo, b"# v2 git bundle\ngarbage\n", "maestro/g1/t9", head, task_id="t9")
    assert caught.value.task_id == "t9"
    # A real bundle whose base this repository does not have.
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q", "-b", "main")
    for n in (1, 2):
        (other / "f").write_text(str(n))
        _git(other, "add", "-A")
        _git(other, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", str(n))
    _git(other, "branch", "maestro/g1/t9")
    bundle = tmp_path / "b.bundle"
    _git(other, "bundle", "create", "-q", str(bundle), "refs/heads/maestro/g1/t9", "^main~1")
    with pytest.raises(BundleError, match="cannot be applied: .*lacks"):
        await apply_bundle(git_repo, bundle.read_bytes(), "maestro/g1/t9", _git(other, "rev-parse", "main"), task_id="t9")
    assert _git(git_repo, "for-each-ref", "refs/heads/maestro") == ""


async def test_an_own_local_cluster_runs_agents_and_never_retries_a_killed_workers_attempt(
    git_repo: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "own.pids"
    events: list[ExecutorEvent] = []
    agent = grandchild = 0
    try:
        async with DaskExecutor("", workers=2, agents=6) as executor:
            assert list((await executor.client.nthreads()).values()) == [3, 3]
            ok = await executor.run(_spec(git_repo, "own", (sys.executable, "-c", "open('x','w').write('1')")), events.append)
            assert ok.ok and _git(git_repo, "show", "refs/heads/maestro/g1/own:x") == "1"
            async with anyio.create_task_group() as tg:

                async def kill_its_worker() -> None:
                    nonlocal agent, grandchild
                    agent, grandchild, worker_pid = (int(x) for x in (await _wait_for(pids)).split())
                    os.kill(worker_pid, signal.SIGKILL)

                tg.start_soon(kill_its_worker)
                with anyio.fail_after(60):
                    lost = await executor.run(_spec(git_repo, "lost", (sys.executable, "-c", SLEEPER, str(pids))), events.append)
        # This cluster allows no failure: Dask gives up on the task at once (KilledWorker).
        host = [e.host for e in events if e.kind is EventKind.STARTED and e.task_id == "lost"]
        assert lost.status is AttemptStatus.WORKER_LOST and len(host) == 1
        assert lost.error == f"worker {host[0]} died while running this attempt"
        assert len((pids.parent / (pids.name + ".runs")).read_text().split()) == 1
    finally:
        for pid in (agent, grandchild):
            if pid:
                try:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_run_agent_stops_the_whole_group_on_timeout(tmp_path: Path) -> None:
    import threading

    pids = tmp_path / "local.pids"
    status, code, log = run_agent(
        [sys.executable, "-c", "print('hi', flush=True)\n" + SLEEPER, str(pids)],
        cwd=tmp_path,
        env=dict(os.environ),
        timeout=1.0,
        grace=0.5,
        max_log_bytes=0,
        stop=threading.Event(),
    )
    assert status is AttemptStatus.TIMED_OUT and code == -signal.SIGTERM
    assert log == b"hi\n"
    agent, grandchild, _ = (int(x) for x in pids.read_text().split())
    assert not _alive(agent) and not _alive(grandchild)


async def test_worker_paths_reach_the_agent_and_a_missing_agent_is_a_clear_error(cluster: Any, git_repo: Path) -> None:
    copy = "import shutil, sys; shutil.copy(sys.argv[1], 'prompt-seen.md'); open('cwd.txt', 'w').write(sys.argv[2])"
    argv = (sys.executable, "-c", copy, WorkerPath("prompt_file"), WorkerPath("worktree", prefix="cwd="))
    async with DaskExecutor(cluster.scheduler_address) as executor:
        seen = await executor.run(_spec(git_repo, "paths", argv, prompt="the prompt {task_id} stays as it is"), lambda e: None)
        missing = await executor.run(_spec(git_repo, "missing", ("no-such-agent-xyz", "-p")), lambda e: None)
    assert seen.ok, seen
    assert _git(git_repo, "show", "refs/heads/maestro/g1/paths:prompt-seen.md") == "the prompt {task_id} stays as it is"
    assert _git(git_repo, "show", "refs/heads/maestro/g1/paths:cwd.txt").startswith("cwd=/")
    assert missing.status is AttemptStatus.ERROR and missing.branch is None
    assert missing.error is not None and missing.error.startswith("cannot start the agent:") and "no-such-agent-xyz" in missing.error


async def test_work_that_cannot_be_applied_fails_that_task_naming_why_and_the_worker(cluster: Any, git_repo: Path) -> None:
    # The task's branch is the one checked out in the user's repository: git refuses to move it under them.
    _git(git_repo, "checkout", "-q", "-b", "maestro/g1/busy")
    argv = (sys.executable, "-c", "open('new.txt', 'w').write('x')")
    async with DaskExecutor(cluster.scheduler_address) as executor:
        outcome = await executor.run(_spec(git_repo, "busy", argv), lambda e: None)
        workers = set(await executor.client.nthreads())
    assert outcome.status is AttemptStatus.ERROR and outcome.branch is None
    assert outcome.error is not None
    assert outcome.error.startswith("the work of task busy cannot be applied: git fetch failed:")
    assert outcome.error.endswith(f"(from {outcome.host})") and outcome.host in workers
    assert outcome.returncode == 0 and outcome.head_sha  # the agent itself did its work
    assert not (git_repo / "new.txt").exists()


#: A coordinator in its own process: two agents on the workers, until Ctrl-C.
COORDINATOR = """
import sys
import anyio
import anyio.to_thread
from pathlib import Path
from maestro_parallel.executors import AttemptSpec, RepoInfo
from maestro_parallel.executors.dask import DaskExecutor

address, repo, base, agent, out = sys.argv[1:6]

async def main() -> None:
    async with DaskExecutor(address) as executor:
        async with anyio.create_task_group() as tg:
            for n in range(2):
                spec = AttemptSpec(
                    task_id=f"c{n}", group_id="g1", title="ctrl-c", argv=(sys.executable, "-c", agent, f"{out}.{n}"),
                    prompt="p", base_sha=base, repo=RepoInfo(Path(repo)), grace_seconds=1.0,
                )
                tg.start_soon(executor.run, spec, lambda event: print(event.kind, event.task_id, event.text, flush=True))

try:
    anyio.run(main, backend="asyncio")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


async def test_ctrl_c_on_the_coordinator_stops_the_agents_on_the_workers(cluster: Any, git_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctrlc.pids"
    base = _git(git_repo, "rev-parse", "HEAD")
    argv = [sys.executable, "-c", COORDINATOR, cluster.scheduler_address, str(git_repo), base, SLEEPER, str(out)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for n in range(2) for x in (await _wait_for(Path(f"{out}.{n}"), timeout=60)).split()[:2]]
        assert all(_alive(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=60))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stdout.splitlines()[-1] == "interrupted"
    assert stdout.count("finished") == 2 and stdout.count("stopped") == 2
    # No process of either agent survives, and what they had written came home.
    assert not [pid for pid in pids if _alive(pid)]
    for n in range(2):
        assert _git(git_repo, "show", f"refs/heads/maestro/g1/c{n}:progress.txt") == "half done"
