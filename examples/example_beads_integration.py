"""Beads integration: run a parallel group straight from the beads tracker.

The original documentation's "Beads integration" example, runnable anywhere: it makes a
throwaway repository with a ``.beads/`` folder, files three beads (two of them marked
``[P:Group-backend]``), finds the groups with ``maestro-parallel detect --from-beads``, runs
the ``backend`` group with :class:`ParallelCoordinator` and shows what beads says afterwards.

By default ``bd`` is the test suite's fake (``tests/fakes/fake_bd.py``, a small program that speaks
bd's JSON contract), so no beads installation is needed; ``--real-bd`` uses the ``bd`` on PATH:

    python examples/example_beads_integration.py
    python examples/example_beads_integration.py --real-bd
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from maestro_parallel import ParallelCoordinator, detect_groups

ROOT = Path(__file__).resolve().parents[1]
FAKE_BD = ROOT / "tests" / "fakes" / "fake_bd.py"

#: The agent of this example: it writes the first file its task names, then reports success.
AGENT = """\
import os, sys
prompt = open(os.environ["MAESTRO_PROMPT_FILE"], encoding="utf-8").read()
target = next(w for w in prompt.split() if "/" in w and "." in w.rsplit("/", 1)[-1])
os.makedirs(os.path.dirname(target), exist_ok=True)
with open(target, "w") as f:
    f.write(f"# written by {sys.argv[1]}\\n")
print("wrote", target)
"""

BEADS = [
    ("[P:Group-backend] Add the health endpoint",
     "[P:Group-backend] Add a /health endpoint to the API server in src/api/health.py"),
    ("[P:Group-backend] Create the users table",
     "[P:Group-backend] Write the migration migrations/001_users.sql with the users schema and its index"),
    ("Write the release notes", "Summarise the changes in docs/RELEASE.md"),
]


def bd_json(bd: list[str], repo: Path, *args: str) -> Any:
    """Run bd with --json in the repository and return what it printed."""
    done = subprocess.run([*bd, *args, "--json"], cwd=repo, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=True)
    return json.loads(done.stdout)


def make_repository(folder: Path, bd: list[str]) -> Path:
    """A repository with .beads/, the agent, a config naming the bd command, and three beads."""
    repo = folder / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=False)
    if bd[0] == "bd":
        subprocess.run(["bd", "init", "--prefix", "demo"], cwd=repo, check=True, stdin=subprocess.DEVNULL)
    else:
        (repo / ".beads").mkdir()
        bd_json(bd, repo, "init", "--prefix", "demo")
    (repo / "agent.py").write_text(AGENT)
    config = repo / ".flow" / "maestro" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f"""\
[agent]
command = [{json.dumps(sys.executable)}, "agent.py", "{{task_id}}"]
timeout_seconds = 120

[refresh]
enabled = false

[tests]
enabled = false

[tracker]
kind = "beads"
bd_command = {json.dumps(bd)}
poll_interval_seconds = 0.5
""")
    for title, description in BEADS:
        bd_json(bd, repo, "create", title, "--description", description)
    return repo


def run(bd: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="maestro-beads-"))
    try:
        if bd[0] != "bd":
            os.environ["FAKE_BD_STATE"] = str(folder / "beads-state.json")
        repo = make_repository(folder, bd)

        print("== detect: maestro-parallel detect --from-beads --json")
        detected = subprocess.run(
            [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "detect", "--from-beads", "--json"],
            capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
        )
        groups = json.loads(detected.stdout)["groups"]
        for group_id, ids in groups.items():
            print(f"  {group_id}: {', '.join(ids)}")

        print("== execute: ParallelCoordinator over the beads tracker")
        coordinator = ParallelCoordinator(repo)  # [tracker] kind = "beads": a BeadsTracker
        records = [r for r in anyio.run(coordinator.tracker.load_tasks) if r.takes_part]
        by_id = {r.task_id: r for r in records}
        for group_id, members in detect_groups([r.metadata for r in records]).items():
            if group_id == "_sequential":
                continue
            result = coordinator.execute_parallel_group([by_id[m.task_id] for m in members], group_id)
            completed = sum(r["status"] == "completed" for r in result.results)
            print(f"group {group_id}: {result.status.value}, {completed}/{len(result.results)} completed, "
                  f"errors: {result.errors}")
            for r in result.results:
                print(f"  {r['task_id']}: {r['status']} by {r['subagent']}, closed: {r.get('closed', False)}")

        print("== beads afterwards: bd show")
        ids = [i for ids in groups.values() for i in ids]
        shown = bd_json(bd, repo, "show", "--", *ids)
        shown = shown.get("data", shown) if isinstance(shown, dict) else shown
        for issue in shown:
            print(f"  {issue['id']}: {issue['status']}" + (f" ({issue['close_reason']})" if issue.get("close_reason") else ""))
        closed = sorted(i["id"] for i in shown if i["status"] == "closed")
        print(f"closed in beads: {', '.join(closed)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    real = "--real-bd" in sys.argv[1:]
    if real and shutil.which("bd") is None:
        sys.exit("--real-bd: no bd on PATH")
    run(["bd"] if real else [sys.executable, str(FAKE_BD)])
