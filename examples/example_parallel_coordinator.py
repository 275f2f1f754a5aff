"""Examples of maestro_parallel, runnable offline.

Each example works on a private copy of ``examples/demo`` (its agent is a small
script that writes the files its task names), so nothing here touches the
repository you run it from:

    python examples/example_parallel_coordinator.py            # every example
    python examples/example_parallel_coordinator.py detection  # one of them

1. group detection          detect_groups over a tasks file
2. parallel execution       ParallelCoordinator.execute_parallel_group, blocking
3. metadata extraction      extract_relevant_files on task descriptions
4. subagent detection       detect_subagent and the keyword table
5. complete workflow        the async API: every group, in dependency order, then list_groups
6. CLI usage                the same run through `maestro-parallel`
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

from maestro_parallel import (
    AsyncParallelCoordinator,
    ParallelCoordinator,
    detect_groups,
    detect_subagent,
    extract_relevant_files,
)

DEMO = Path(__file__).resolve().parent / "demo"


def demo_copy() -> Path:
    """A fresh copy of the demo repository in a temporary folder (removed at exit)."""
    folder = tempfile.mkdtemp(prefix="maestro-demo-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    target = Path(folder) / "demo"
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("parallel_groups", "src", "web", "migrations", "docs"))
    return target


def load_tasks(repo: Path) -> list[dict]:
    return json.loads((repo / "tasks.json").read_text())["tasks"]


def example_group_detection() -> None:
    """1. Which tasks may run together: the [P:Group-<id>] marker at the start of a description."""
    tasks = [t for t in load_tasks(DEMO) if t.get("status") != "closed"]
    for group_id, members in detect_groups(tasks).items():
        print(f"{group_id:12} {[t['id'] for t in members]}")


def example_parallel_execution() -> None:
    """2. Run one group with the blocking facade and read its result."""
    repo = demo_copy()
    coordinator = ParallelCoordinator(repo)
    backend = detect_groups(load_tasks(repo))["backend"]
    result = coordinator.execute_parallel_group(backend, "backend")
    completed = sum(r["status"] == "completed" for r in result.results)
    print(f"{result.group_name}: {result.status.value}, {completed}/{len(result.results)} tasks completed")
    for entry in result.results:
        print(f"  {entry['task_id']:6} {entry['status']:10} {entry['subagent']:20} closed={entry.get('closed')}")
    print("  files written:", sorted(p.relative_to(repo).as_posix() for p in (repo / "src").rglob("*.py")))


def example_metadata_extraction() -> None:
    """3. The files a task mentions go into its prompt as 'Relevant files'."""
    coordinator = ParallelCoordinator(DEMO)
    for text in [
        "Update src/components/Login.tsx and package.json",
        "- file: migrations/001_users.sql\n- path: `src/db/models.py`",
        "See https://example.com/a.js, upgrade to Python 3.11 (e.g. with pyenv)",
    ]:
        print(f"{text!r:70} -> {coordinator._extract_relevant_files(text)}")
    assert extract_relevant_files("Edit ./src/app.py:12") == ["src/app.py"]


def example_subagent_detection() -> None:
    """4. Without metadata, keywords pick the subagent (whole words; ties go to the first row)."""
    for text in [
        "Add a REST endpoint to the API server",
        "Build the login form component in React",
        "Raise pytest coverage of the parser",
        "Write the SQL migration for the users table",
        "Audit authentication for vulnerabilities",
        "Tidy up the guide",  # 'guide' does not contain the keyword 'ui'
    ]:
        print(f"{text:45} -> {detect_subagent(text)}")


async def complete_workflow(repo: Path) -> None:
    coordinator = AsyncParallelCoordinator(repo)
    tasks = [t for t in load_tasks(repo) if t.get("status") != "closed"]
    groups = detect_groups(tasks)
    # The frontend waits on backend tasks: run backend first, then frontend.
    for group_id in ("backend", "frontend"):
        result = await coordinator.execute_parallel_group(groups[group_id], group_id)
        print(f"{group_id}: {result.status.value}, errors: {result.errors}")
    for group in await coordinator.list_groups():
        print(f"stored: {group.group_id} {group.status.value} created {group.created_at}")
    print("completed:", await coordinator.wait_for_group_completion("frontend", timeout_seconds=5))


def example_complete_workflow() -> None:
    """5. The async API end to end: two groups in dependency order."""
    anyio.run(complete_workflow, demo_copy())


def example_cli_usage() -> None:
    """6. The same through the command line (JSON on stdout, progress on stderr)."""
    repo = demo_copy()
    base = [sys.executable, "-m", "maestro_parallel", "-q", "--repo-root", str(repo)]
    tasks_file = str(repo / "tasks.json")
    detect = subprocess.run([*base, "detect", "--tasks-file", tasks_file, "--json"], capture_output=True, text=True)
    print("detect:", detect.returncode, json.loads(detect.stdout)["groups"])
    run = subprocess.run(
        [*base, "execute", "--group-id", "backend", "--tasks-file", tasks_file, "--json"], capture_output=True, text=True
    )
    print("execute:", run.returncode, json.loads(run.stdout)["status"])
    frontend = subprocess.run(
        [*base, "execute", "--group-id", "frontend", "--tasks-file", tasks_file, "--no-tests", "--json"],
        capture_output=True,
        text=True,
    )
    print("execute frontend:", frontend.returncode, json.loads(frontend.stdout)["status"])
    status = subprocess.run([*base, "status", "--group-id", "backend", "--json"], capture_output=True, text=True)
    print("status:", status.returncode, json.loads(status.stdout)["status"])


EXAMPLES = {
    "detection": example_group_detection,
    "execution": example_parallel_execution,
    "metadata": example_metadata_extraction,
    "subagents": example_subagent_detection,
    "workflow": example_complete_workflow,
    "cli": example_cli_usage,
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        print(f"unknown example(s): {', '.join(unknown)}; choose from {', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    for name in names or list(EXAMPLES):
        print(f"\n== {name}: {EXAMPLES[name].__doc__.splitlines()[0]}")
        EXAMPLES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
