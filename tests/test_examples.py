"""The shipped examples run end to end, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: The demo agent takes 1.5 s so that people can watch; the tests need no show.
FAST = {**os.environ, "DEMO_AGENT_SECONDS": "0.2"}


def copy_demo(tmp_path: Path) -> Path:
    target = tmp_path / "demo"
    shutil.copytree(EXAMPLES / "demo", target, ignore=shutil.ignore_patterns("parallel_groups", "src", "web", "migrations"))
    return target


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=FAST,
    )


def test_the_demo_group_runs_through_all_four_phases(tmp_path: Path) -> None:
    repo = copy_demo(tmp_path)
    result = cli(repo, "execute", "--group-id", "backend", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout)
    assert meta["status"] == "completed" and meta["pre_group_refresh_completed"] is True
    assert {r["task_id"]: r["subagent"] for r in meta["results"]} == {
        "api-1": "backend-architect",
        "api-2": "backend-architect",
        "db-1": "database-architect",
    }
    assert all(r["closed"] for r in meta["results"])
    # The agents really did the work, and the test command checked it.
    assert 'TASK_ID = "api-1"' in (repo / "src" / "api" / "health.py").read_text()
    assert "CREATE TABLE users" in (repo / "migrations" / "001_users.sql").read_text()
    group = repo / ".flow" / "maestro" / "parallel_groups" / "backend"
    assert "checked 3 file(s) of group 'backend': ok" in (group / "logs" / "_tests.log").read_text()
    phases = [json.loads(line).get("phase") for line in (group / "events.jsonl").read_text().splitlines()]
    assert [p for p in phases if p] == ["concurrent_execution", "coordination", "post_execution"]
    for phase in ("phase concurrent_execution", "api-1 started", "tests passed", "api-1 closed"):
        assert phase in result.stderr
    # Again: already completed, nothing run.
    again = cli(repo, "execute", "--group-id", "backend", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == meta


def test_the_frontend_waits_for_the_backend(tmp_path: Path) -> None:
    repo = copy_demo(tmp_path)
    tasks = str(repo / "tasks.json")
    blocked = cli(repo, "execute", "--group-id", "frontend", "--tasks-file", tasks, "--json")
    assert blocked.returncode == 3
    assert {r["status"] for r in json.loads(blocked.stdout)["results"]} == {"blocked"}
    assert cli(repo, "execute", "--group-id", "backend", "--tasks-file", tasks).returncode == 0
    after = cli(repo, "execute", "--group-id", "frontend", "--tasks-file", tasks, "--json")
    assert after.returncode == 0, after.stderr
    assert (repo / "web" / "src" / "LoginForm.tsx").exists()


def test_the_example_script_runs_every_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "example_parallel_coordinator.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=FAST,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in ("detection", "execution", "metadata", "subagents", "workflow", "cli"):
        assert f"== {heading}:" in out
    assert "Parallel Group backend: completed, 3/3 tasks completed" in out
    assert "Tidy up the guide                             -> backend-architect" in out
    assert "frontend: completed, errors: []" in out
    assert "execute: 0 completed" in out


def test_the_isolation_example_lands_two_tasks_and_keeps_the_conflicting_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "isolation" / "run.py"), "--keep", str(tmp_path / "shown")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "api, hotfix may conflict on app.py" in result.stdout
    assert "hotfix  failed    merge conflict in app.py" in result.stdout
    assert "branch maestro/demo/hotfix" in result.stdout
    repo = tmp_path / "shown" / "service"
    assert 'hello from the API' in (repo / "app.py").read_text()
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                          capture_output=True, text=True).stdout == ""  # fmt: skip


def test_the_demo_run_from_a_git_clone_makes_no_branch_and_no_commit(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    demo = clone / "examples" / "demo"
    shutil.copytree(EXAMPLES / "demo", demo, ignore=shutil.ignore_patterns("parallel_groups", "src", "web", "migrations"))
    identity = {**FAST, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "u",
                "GIT_COMMITTER_EMAIL": "u@x"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(["git", "-C", str(clone), *args], check=True, env=identity, capture_output=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    result = cli(demo, "execute", "--group-id", "backend", "--tasks-file", str(demo / "tasks.json"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["isolation"] == "shared"
    refs = subprocess.run(["git", "-C", str(clone), "for-each-ref", "--format=%(refname)"], capture_output=True, text=True)
    assert refs.stdout.split() == ["refs/heads/main"]
    assert subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout == head
