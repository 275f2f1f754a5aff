"""The fault suite, isolation's part: kill -9 of the coordinator in the middle of the merge queue, then resume.

A real ``python -m maestro_parallel execute`` runs four agents in their own
worktrees; the test watches the journal and kills the coordinator with SIGKILL
after the N-th ``task_merged`` (the merges go on quickly, so the kill lands
somewhere inside the queue) or while its test gate runs.  The gate blocks
while the test holds it, so nothing can land before the kill.  Executing the group again
must land every completed task's work exactly once (one ``Maestro-Task``
trailer per task on the target), without running any agent again, and no
branch or worktree may be lost in between.  Figures: ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from isolation_support import git, hermetic_git, make_repo, pid_alive

__all__ = ("hermetic_git",)

pytestmark = pytest.mark.faults

TASKS = ("t1", "t2", "t3", "t4")

AGENT = r"""
import os, sys
task = sys.argv[1]
with open(f"{task}.txt", "w") as f:
    f.write(f"work of {task}\n")
with open(os.path.join(os.environ["RECORDS"], "runs.txt"), "a") as f:
    f.write(task + "\n")
"""

#: Blocks while the file ``block`` exists (pid in gate.pid), so the first coordinator cannot land; passes.
GATE = r"""
import os, sys, time
records = sys.argv[1]
if os.path.exists(os.path.join(records, "block")):
    with open(os.path.join(records, "gate.pid"), "w") as f:
        f.write(str(os.getpid()))
    deadline = time.time() + 120
    while os.path.exists(os.path.join(records, "block")) and time.time() < deadline:
        time.sleep(0.05)
sys.exit(0)
"""


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[None]:
    """Whatever the test ends like, the blocked gate does not outlive it."""
    yield
    pid_file = tmp_path / "records" / "gate.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def setup(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo")
    records = tmp_path / "records"
    records.mkdir()
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "gate.py").write_text(GATE)
    config = repo / ".flow" / "maestro" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        textwrap.dedent(f"""
        [agent]
        command = [{json.dumps(sys.executable)}, {json.dumps(str(tmp_path / "agent.py"))}, "{{task_id}}"]
        timeout_seconds = 60
        grace_seconds = 1
        env = {{ RECORDS = {json.dumps(str(records))} }}

        [refresh]
        enabled = false

        [tests]
        command = [{json.dumps(sys.executable)}, {json.dumps(str(tmp_path / "gate.py"))}, {json.dumps(str(records))}]
        timeout_seconds = 300

        [tracker]
        kind = "local"
        """)
    )
    tasks = [{"id": t, "title": f"task {t}", "description": f"[P:Group-g] write {t}.txt"} for t in TASKS]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    return repo, records


def argv(repo: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
            "--tasks-file", str(tmp_path / "tasks.json"), "--json"]  # fmt: skip


def count_events(repo: Path, name: str) -> int:
    journal = repo / ".flow/maestro/parallel_groups/g/events.jsonl"
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if f'"event":"{name}"' in line)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kill_after", [1, 2, 3, "gate"])
def test_kill9_in_the_merge_queue_then_resume_lands_everything_exactly_once(
    tmp_path: Path, sleepers: None, kill_after: int | str
) -> None:
    repo, records = setup(tmp_path)
    (records / "block").touch()
    with (tmp_path / "first.err").open("wb") as err:
        coordinator = subprocess.Popen(argv(repo, tmp_path), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    ready = (
        (lambda: (records / "gate.pid").exists())
        if kill_after == "gate"
        else (lambda: count_events(repo, "task_merged") >= int(kill_after))
    )
    while not ready():
        assert coordinator.poll() is None, (tmp_path / "first.err").read_text()
        assert time.monotonic() < deadline, "the queue never reached the kill point"
        time.sleep(0.005)
    coordinator.kill()
    coordinator.wait()
    (records / "block").unlink()
    # Nothing landed, and nothing is lost: every task's branch and worktree are there.
    assert [line for line in git(repo, "log", "--format=%s", "main").splitlines()] == ["initial"]
    for task_id in TASKS:
        assert git(repo, "show", f"maestro/g/{task_id}:{task_id}.txt") == f"work of {task_id}"
        assert (repo / ".flow/maestro/worktrees/g" / task_id / f"{task_id}.txt").exists()

    resumed = subprocess.run(argv(repo, tmp_path), capture_output=True, text=True, timeout=240, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    meta = json.loads(resumed.stdout)
    assert meta["status"] == "completed" and meta["landed"] is True
    assert meta["landed_sha"] == git(repo, "rev-parse", "main")
    # Every task's work landed exactly once: one merge per task, no agent ran twice.
    log = git(repo, "log", "--format=%B", "main")
    for task_id in TASKS:
        assert (repo / f"{task_id}.txt").read_text() == f"work of {task_id}\n"
        assert log.count(f"Maestro-Task: {task_id}\n") == 1
    assert sorted((records / "runs.txt").read_text().split()) == list(TASKS)
    assert all(r["closed"] for r in meta["results"])
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/") == "main"
