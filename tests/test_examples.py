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
