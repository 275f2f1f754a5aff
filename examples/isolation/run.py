"""Worktree isolation, shown in a throwaway git repository this script creates.

Three agents run in parallel, each in its own git worktree on its own branch:

- ``api`` and ``docs`` touch different files: their work lands on ``main``;
- ``api`` and ``hotfix`` both rewrite ``app.py``: maestro predicts the conflict
  before launch, the merge queue merges ``api`` first, ``hotfix`` fails with
  ``merge conflict in app.py``, and its work stays on its branch.

Run it from anywhere (nothing outside the temporary folder is touched)::

    python examples/isolation/run.py            # in a temporary folder, removed at the end
    python examples/isolation/run.py --keep DIR # in DIR, left there to look at

It exits 0 when all of the above happened.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

#: The agent: writes what its task says into its worktree (its cwd), as a coding agent would.
AGENT = """\
import re, sys
prompt = open(sys.argv[2], encoding="utf-8").read()
for path, text in re.findall(r"write (\\S+) saying '([^']*)'", prompt):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\\n")
print(f"{sys.argv[1]}: done")
"""

TASKS = [
    {"id": "api", "title": "Add the API greeting",
     "description": "[P:Group-demo] Edit app.py: write app.py saying 'def greet(): return \"hello from the API\"'"},
    {"id": "docs", "title": "Document the project",
     "description": "[P:Group-demo] Edit README.md: write README.md saying '# Demo service'"},
    {"id": "hotfix", "title": "Hotfix the greeting",
     "description": "[P:Group-demo] Edit app.py: write app.py saying 'def greet(): return \"hotfix\"'"},
]  # fmt: skip


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def make_repository(root: Path) -> Path:
    repo = root / "service"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text('def greet(): return "hello"\n')
    (repo / "README.md").write_text("# service\n")
    git(repo, "add", "-A")
    env = {"GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.com",
           "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.com"}  # fmt: skip
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "initial"], check=True, env={**os.environ, **env})
    (root / "agent.py").write_text(AGENT)
    config = repo / ".flow" / "maestro" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        textwrap.dedent(f"""\
        [agent]
        command = [{json.dumps(sys.executable)}, {json.dumps(str(root / "agent.py"))}, "{{task_id}}", "{{prompt_file}}"]

        [refresh]
        enabled = false

        [tests]
        enabled = false

        [tracker]
        kind = "local"

        [isolation]
        mode = "worktree"
        """)
    )
    (root / "tasks.json").write_text(json.dumps(TASKS, indent=2))
    return repo


def maestro(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def show(root: Path) -> bool:
    repo = make_repository(root)
    print(f"repository: {repo}\n")
    run = maestro(repo, "execute", "--group-id", "demo", "--tasks-file", str(root / "tasks.json"), "--json")
    meta = json.loads(run.stdout)
    results = {r["task_id"]: r for r in meta["results"]}
    print(f"execute exited {run.returncode}: group {meta['status']} (isolation: {meta['isolation']})\n")
    print("predicted before launch:")
    for conflict in meta["conflicts"]:
        print(f"  {', '.join(conflict['tasks'])} may conflict on {', '.join(conflict['files'])}")
    print("\ntasks:")
    for task_id, result in results.items():
        print(f"  {task_id:7} {result['status']:9} {result.get('error') or 'landed on main'}")
    print("\nmain now:")
    print(textwrap.indent(git(repo, "log", "--format=%h %s", "main"), "  "))
    print(textwrap.indent((repo / "app.py").read_text() + (repo / "README.md").read_text(), "  | "))
    kept = maestro(repo, "status", "--group-id", "demo", "--json")
    kept_worktrees = json.loads(kept.stdout)["kept_worktrees"]
    print("kept for you to look at (maestro-parallel clean --group-id demo --force removes them):")
    for entry in kept_worktrees:
        print(f"  branch {entry['branch']} in {entry['path']}")
        print(textwrap.indent(git(repo, "show", f"{entry['branch']}:app.py"), "  | "))
    print(f"\ngit status of the checkout: {git(repo, 'status', '--porcelain', '--untracked-files=no') or 'clean'}")
    return (
        run.returncode == 1
        and meta["conflicts"] == [{"files": ["app.py"], "tasks": ["api", "hotfix"]}]
        and results["hotfix"]["error"] == "merge conflict in app.py"
        and results["api"]["closed"] and results["docs"]["closed"]
        and "hello from the API" in (repo / "app.py").read_text()
        and [k["branch"] for k in kept_worktrees] == ["maestro/demo/hotfix"]
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="make the repository in this (new) folder and leave it there")
    args = parser.parse_args()
    if args.keep is not None:
        return 0 if show(args.keep.resolve()) else 1
    with tempfile.TemporaryDirectory(prefix="maestro-isolation-") as folder:
        return 0 if show(Path(folder)) else 1


if __name__ == "__main__":
    sys.exit(main())
