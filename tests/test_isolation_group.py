"""Worktree isolation end to end: a group run through the real CLI in a real git repository.

Each agent is a real process that writes the files its task names in its own
worktree; the assertions are on what a user sees: the files in the checkout,
branches, commits, ``git status``, exit codes and the group's metadata.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from isolation_support import commit_file, git, hermetic_git, make_repo, pid_alive

__all__ = ("hermetic_git",)

#: Follows the directives of its prompt in order: ``write=<path>:<text>`` and ``append=<path>:<text>``
#: (in its cwd), ``exists=<path>`` (records whether it is there), ``commit=<message>``,
#: ``commit-no-verify=<message>`` and ``commit-no-hooks=<message>`` (``git add -A`` and its own
#: ``git commit``, plain, with ``--no-verify`` or with no hooks path, recording git's exit code);
#: records where it ran, exits ``exit=<n>``.
AGENT = r"""
import json, os, re, subprocess, sys
task = sys.argv[1]
prompt = open(os.environ["MAESTRO_PROMPT_FILE"], encoding="utf-8").read()
exists, commits = {}, []
for kind, path, text in re.findall(r"\b(append|write|exists|commit-no-verify|commit-no-hooks|commit)=([^\s:]+)(?::(\S+))?", prompt):
    if kind == "append":
        with open(path, "a") as f:
            f.write(text + "\n")
    elif kind == "write":
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    elif kind == "exists":
        exists[path] = os.path.isfile(path)
    else:
        subprocess.run(["git", "add", "-A"], check=True)
        flags = {"commit-no-verify": ["commit", "--no-verify"], "commit-no-hooks": ["-c", "core.hooksPath=" + os.devnull,
                 "commit"]}.get(kind, ["commit"])
        done = subprocess.run(["git", *flags, "-q", "-m", path], capture_output=True,
                              env={**os.environ, "HOOK_CALLER": "agent " + task})
        commits.append([path, done.returncode])
record = {"cwd": os.getcwd(), "worktree": os.environ.get("MAESTRO_WORKTREE"),
          "repo_root": os.environ["MAESTRO_REPO_ROOT"], "argv": sys.argv[1:],
          "git_dir": os.environ.get("GIT_DIR"), "env_file": open(".env").read() if os.path.exists(".env") else None,
          "exists": exists, "commits": commits}
with open(os.path.join(os.environ["RECORDS"], task + ".json"), "a") as f:
    f.write(json.dumps(record) + "\n")
m = re.search(r"exit=(\d+)", prompt)
sys.exit(int(m.group(1)) if m else 0)
"""


def setup_repo(tmp_path: Path, *, isolation: str = "", tests: str = "") -> Path:
    """A git repository on main, with an agent (outside it) configured, and a records folder."""
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n", "a.py": "a = 0\n", "b.py": "b = 0\n"})
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    (tmp_path / "records").mkdir()
    config = repo / ".flow" / "maestro" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        textwrap.dedent(f"""
        [agent]
        command = [{json.dumps(sys.executable)}, {json.dumps(str(agent))}, "{{task_id}}", "{{worktree}}"]
        timeout_seconds = 60
        grace_seconds = 1
        env = {{ RECORDS = {json.dumps(str(tmp_path / "records"))} }}

        [refresh]
        enabled = false

        [tracker]
        kind = "local"
        poll_interval_seconds = 0.2
        """)
        + (tests or "[tests]\nenabled = false\n")
        + f"\n[isolation]\n{isolation}\n"
    )
    return repo


def task(task_id: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "title": f"task {task_id}", "description": f"[P:Group-g] {description}", **extra}


def execute(repo: Path, tasks: list[dict[str, Any]], *args: str) -> tuple[int, dict[str, Any], str]:
    """``maestro-parallel execute --json`` as a user runs it: exit code, metadata, stderr."""
    tasks_file = repo.parent / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    done = subprocess.run(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "execute", "--group-id", "g",
         "--tasks-file", str(tasks_file), "--json", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    try:
        meta = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON (exit {done.returncode}): {done.stdout!r} {done.stderr!r}") from None
    return done.returncode, meta, done.stderr


def records(tmp_path: Path, task_id: str) -> list[dict[str, Any]]:
    path = tmp_path / "records" / f"{task_id}.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def result(meta: dict[str, Any], task_id: str) -> dict[str, Any]:
    return next(r for r in meta["results"] if r["task_id"] == task_id)


def branches(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


def test_three_agents_land_and_the_conflicting_one_fails_with_its_branch_kept(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    tasks = [
        task("t1", "edit a.py write=a.py:a=1"),
        task("t2", "edit b.py write=b.py:b=2 write=new/c.py:c=2"),
        task("t3", "edit a.py write=a.py:a=3"),
    ]
    code, meta, stderr = execute(repo, tasks)
    assert code == 1, stderr
    assert meta["status"] == "failed"
    assert meta["isolation"] == "worktree"
    assert meta["base_sha"] == base
    assert meta["conflicts"] == [{"files": ["a.py"], "tasks": ["t1", "t3"]}]
    assert any("may conflict with t3 on a.py" in w for w in result(meta, "t1")["warnings"])
    # The landed work is in the user's checkout, which is clean and on main.
    assert (repo / "a.py").read_text() == "a=1\n"
    assert (repo / "b.py").read_text() == "b=2\n"
    assert (repo / "new" / "c.py").read_text() == "c=2\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert meta["landed"] is True and meta["landed_sha"] == git(repo, "rev-parse", "HEAD")
    assert meta["integration_branch"] == "maestro/integrate/g"
    # Each agent ran in its own worktree, with MAESTRO_REPO_ROOT the main repository.
    for task_id in ("t1", "t2", "t3"):
        (seen,) = records(tmp_path, task_id)
        worktree = repo / ".flow" / "maestro" / "worktrees" / "g" / task_id
        assert Path(seen["cwd"]) == worktree
        assert Path(seen["worktree"]) == worktree and seen["argv"] == [task_id, str(worktree)]
        assert Path(seen["repo_root"]) == repo
    t1, t2, t3 = (result(meta, t) for t in ("t1", "t2", "t3"))
    assert t1["status"] == "completed" and t1["closed"] is True and t1["branch"] == "maestro/g/t1"
    assert t2["changed_files"] == ["b.py", "new/c.py"]
    assert t3["status"] == "failed" and t3["error"] == "merge conflict in a.py"
    # The conflicting task's work is kept on its branch and in its worktree; the landed ones are gone.
    assert git(repo, "show", "maestro/g/t3:a.py") == "a=3"
    assert t3["head_sha"] == git(repo, "rev-parse", "maestro/g/t3")
    assert "maestro/g/t3" in branches(repo)
    assert not {"maestro/g/t1", "maestro/g/t2", "maestro/integrate/g"} & branches(repo)
    assert (repo / ".flow" / "maestro" / "worktrees" / "g" / "t3" / "a.py").exists()
    assert not (repo / ".flow" / "maestro" / "worktrees" / "g" / "t1").exists()
    events = [json.loads(line)["event"] for line in
              (repo / ".flow/maestro/parallel_groups/g/events.jsonl").read_text().splitlines()]  # fmt: skip
    for name in ("isolation_decided", "conflict_predicted", "worktree_created", "task_committed", "task_merged",
                 "merge_conflict", "landed"):  # fmt: skip
        assert name in events


def test_worktree_mode_outside_git_fails_the_group_in_phase_one(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path, isolation='mode = "worktree"')
    subprocess.run(["rm", "-rf", str(repo / ".git")], check=True)
    code, meta, _ = execute(repo, [task("t1", "write=a.py:x")])
    assert code == 1
    assert meta["status"] == "failed"
    assert any("worktree isolation is impossible" in e and "not inside a git work tree" in e for e in meta["errors"])
    assert records(tmp_path, "t1") == []


def test_shared_mode_runs_in_the_repository_root_without_branches(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path, isolation='mode = "shared"')
    code, meta, _ = execute(repo, [task("t1", "write=a.py:shared")])
    assert code == 0 and meta["isolation"] == "shared"
    (seen,) = records(tmp_path, "t1")
    assert Path(seen["cwd"]) == repo and seen["worktree"] is None
    assert branches(repo) == {"main"}
    assert (repo / "a.py").read_text() == "shared\n"


def test_a_failing_setup_fails_its_task_before_its_agent_starts(tmp_path: Path) -> None:
    script = "import sys; print('installing deps'); sys.exit(3)"
    repo = setup_repo(tmp_path, isolation=f'setup = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]')
    code, meta, _ = execute(repo, [task("t1", "write=a.py:x")])
    assert code == 1
    t1 = result(meta, "t1")
    assert t1["status"] == "failed" and t1["error"].startswith("setup failed: exit code 3")
    assert "installing deps" in (repo / t1["log_path"]).read_text()
    assert records(tmp_path, "t1") == []


def test_a_failed_agent_keeps_its_work_on_its_branch_and_a_rerun_starts_fresh(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    code, meta, _ = execute(repo, [task("t1", "write=a.py:half exit=4")])
    assert code == 1
    t1 = result(meta, "t1")
    assert t1["status"] == "failed" and t1["changed_files"] == ["a.py"]
    assert git(repo, "show", "maestro/g/t1:a.py") == "half"
    assert (repo / "a.py").read_text() == "a = 0\n"  # never merged
    code, meta, _ = execute(repo, [task("t1", "write=b.py:whole")])
    assert code == 0, meta["errors"]
    assert (repo / "b.py").read_text() == "whole\n" and (repo / "a.py").read_text() == "a = 0\n"
    assert git(repo, "show", "maestro/g/_attempts/t1/1:a.py") == "half"  # the earlier attempt's branch, kept


def test_a_dirty_checkout_blocks_landing_and_executing_again_lands_without_rerunning(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    (repo / "README.md").write_text("my own edit\n")
    code, meta, _ = execute(repo, [task("t1", "write=a.py:one"), task("t2", "write=b.py:two")])
    assert code == 3
    assert meta["status"] == "blocked" and meta["landed"] is False
    (error,) = meta["errors"]
    assert "uncommitted changes" in error and f"git -C {repo} merge --ff-only maestro/integrate/g" in error
    assert (repo / "a.py").read_text() == "a = 0\n"
    assert all(not r.get("closed") for r in meta["results"])
    git(repo, "checkout", "README.md")
    code, meta, _ = execute(repo, [task("t1", "write=a.py:one"), task("t2", "write=b.py:two")])
    assert code == 0, meta["errors"]
    assert (repo / "a.py").read_text() == "one\n" and (repo / "b.py").read_text() == "two\n"
    assert len(records(tmp_path, "t1")) == 1 and len(records(tmp_path, "t2")) == 1  # not run again
    assert all(r["closed"] for r in meta["results"])
    assert git(repo, "log", "--format=%s", "-n", "3").splitlines()[0].startswith("Merge t2")


def test_a_red_gate_is_bisected_to_its_culprit_and_the_rest_lands(tmp_path: Path) -> None:
    gate = "import os, sys; sys.exit(1 if os.path.exists('bad.txt') else 0)"
    tests = f'[tests]\ncommand = [{json.dumps(sys.executable)}, "-c", {json.dumps(gate)}]\n'
    repo = setup_repo(tmp_path, tests=tests)
    tasks = [task("t1", "write=a.py:fine"), task("t2", "write=bad.txt:boom"), task("t3", "write=b.py:fine")]
    code, meta, _ = execute(repo, tasks)
    assert code == 1
    assert result(meta, "t2")["error"] == "test suite fails with this task merged"
    assert result(meta, "t1")["closed"] and result(meta, "t3")["closed"]
    assert (repo / "a.py").read_text() == "fine\n" and not (repo / "bad.txt").exists()
    assert "maestro/g/t2" in branches(repo)
    steps = [json.loads(line) for line in
             (repo / ".flow/maestro/parallel_groups/g/events.jsonl").read_text().splitlines()]  # fmt: skip
    assert any(e["event"] == "bisect_step" for e in steps)


def test_a_repository_root_below_the_git_top_runs_agents_in_the_matching_subfolder(tmp_path: Path) -> None:
    top = setup_repo(tmp_path)
    sub = top / "svc"
    (sub / ".flow").parent.mkdir(parents=True, exist_ok=True)
    (top / ".flow").rename(sub / ".flow")
    commit_file(top, "svc/app.py", "app = 0\n")
    code, meta, _ = execute(sub, [task("t1", "write=app.py:app=1")])
    assert code == 0, meta["errors"]
    (seen,) = records(tmp_path, "t1")
    assert Path(seen["cwd"]) == sub / ".flow" / "maestro" / "worktrees" / "g" / "t1" / "svc"
    assert (sub / "app.py").read_text() == "app=1\n"
    assert result(meta, "t1")["changed_files"] == ["svc/app.py"]
    assert git(top, "status", "--porcelain", "--untracked-files=no") == ""


@pytest.mark.parametrize("keep", ["always", "never"])
def test_keep_worktrees(tmp_path: Path, keep: str) -> None:
    repo = setup_repo(tmp_path, isolation=f'keep_worktrees = "{keep}"')
    code, _, _ = execute(repo, [task("t1", "write=a.py:one")])
    assert code == 0
    kept = (repo / ".flow" / "maestro" / "worktrees" / "g" / "t1").exists()
    assert kept is (keep == "always")


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_status_lists_kept_worktrees_and_clean_refuses_unique_work_unless_forced(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    code, _, stderr = execute(repo, [task("t1", "write=a.py:one"), task("t2", "write=a.py:two")], "--no-tests")
    assert code == 1
    assert "t2: merge conflict in a.py" in stderr and "landed on main" in stderr  # the plain progress lines
    status = cli(repo, "status", "--group-id", "g", "--json")
    assert status.returncode == 0
    (kept,) = json.loads(status.stdout)["kept_worktrees"]
    assert kept["task_id"] == "t2" and kept["branch"] == "maestro/g/t2"
    assert "kept worktree" in cli(repo, "status", "--group-id", "g").stdout
    assert cli(repo, "clean").returncode == 2
    assert cli(repo, "clean", "--group-id", "g", "--all").returncode == 2
    refused = cli(repo, "clean", "--group-id", "g", "--json")
    assert refused.returncode == 1
    document = json.loads(refused.stdout)
    assert any("maestro/g/t2" in line and "--force" in line for line in document["kept"])
    assert "maestro/g/t2" in branches(repo)
    forced = cli(repo, "clean", "--all", "--force")
    assert forced.returncode == 0, forced.stderr
    assert branches(repo) == {"main"}
    assert not (repo / ".flow" / "maestro" / "worktrees" / "g").exists()
    assert "worktrees" not in git(repo, "worktree", "list")
    assert cli(repo, "clean", "--all").stdout.strip() == "nothing to clean"


def test_serialize_starts_an_overlapping_task_from_the_tip_that_includes_the_earlier_one(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path, isolation='conflicts = "serialize"')
    tasks = [
        task("t2", "edit a.py append=a.py:second", priority=2),
        task("t1", "edit a.py append=a.py:first", priority=1),  # earlier: a higher priority
        task("t3", "edit b.py append=b.py:third", priority=3),
    ]
    code, meta, stderr = execute(repo, tasks)
    assert code == 0, (meta["errors"], stderr)
    # t2 began from the tip holding t1's line, so both lines landed without a conflict, in that order.
    assert (repo / "a.py").read_text() == "a = 0\nfirst\nsecond\n"
    assert (repo / "b.py").read_text() == "b = 0\nthird\n"
    assert meta["conflicts"] == [{"files": ["a.py"], "tasks": ["t2", "t1"]}]
    assert result(meta, "t2")["changed_files"] == ["a.py"]
    assert all(r["closed"] for r in meta["results"])


def test_warn_launches_overlapping_tasks_at_once_and_the_later_one_conflicts(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    tasks = [task("t1", "edit a.py append=a.py:first"), task("t2", "edit a.py append=a.py:second")]
    code, meta, _ = execute(repo, tasks)
    assert code == 1
    assert result(meta, "t2")["error"] == "merge conflict in a.py"
    assert (repo / "a.py").read_text() == "a = 0\nfirst\n"


def test_worktreeinclude_copies_ignored_files_into_each_worktree(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    (repo / ".gitignore").write_text(".env\n")
    (repo / ".worktreeinclude").write_text(".env\n")
    commit_file(repo, ".gitignore", ".env\n")
    (repo / ".env").write_text("TOKEN=local\n")
    code, meta, _ = execute(repo, [task("t1", "write=a.py:one")])
    assert code == 0, meta["errors"]
    (seen,) = records(tmp_path, "t1")
    assert seen["env_file"] == "TOKEN=local\n"
    assert "maestro/g/t1" not in branches(repo)  # landed and cleaned up; .env was never committed
    assert git(repo, "show", "--stat", "--format=", "HEAD^2").count(".env") == 0


def test_a_task_id_git_refuses_gets_a_reversible_branch_name_and_lands(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    code, meta, _ = execute(repo, [task("proj:auth.1", "write=a.py:auth"), task("x.lock", "write=b.py:lock")])
    assert code == 0, meta["errors"]
    assert result(meta, "proj:auth.1")["branch"] == "maestro/g/proj%3Aauth.1"
    assert result(meta, "x.lock")["branch"] == "maestro/g/x%2Elock"
    assert (repo / "a.py").read_text() == "auth\n" and (repo / "b.py").read_text() == "lock\n"
    assert "Merge proj:auth.1: task proj:auth.1" in git(repo, "log", "--format=%s", "main")


def test_a_target_checked_out_in_another_worktree_blocks_with_the_command_that_lands_it(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path, isolation='target = "main"')
    git(repo, "checkout", "-q", "-b", "feature")
    other = tmp_path / "other"
    git(repo, "worktree", "add", "-q", str(other), "main")
    code, meta, _ = execute(repo, [task("t1", "write=a.py:one")])
    assert code == 3 and meta["status"] == "blocked"
    (error,) = meta["errors"]
    command = f"git -C {other} merge --ff-only maestro/integrate/g"
    assert "main is checked out in another worktree" in error and command in error
    subprocess.run(command.split(), check=True, capture_output=True)
    assert (other / "a.py").read_text() == "one\n"
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "feature" and (repo / "a.py").read_text() == "a = 0\n"


#: A setup that hangs: prints a line, starts a child that ignores SIGTERM, records both pids, sleeps.
HANGING_SETUP = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("installing deps", flush=True)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "print('ready', flush=True); time.sleep(300)"], stdout=subprocess.PIPE)
child.stdout.readline()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def wait_until_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Poll until none of ``pids`` is alive (a zombie counts as gone); the survivors at the deadline."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_a_hanging_setup_times_out_and_leaves_no_process_of_its_group(tmp_path: Path) -> None:
    pids_file = tmp_path / "setup.pids"
    setup = [sys.executable, "-c", HANGING_SETUP, str(pids_file)]
    repo = setup_repo(tmp_path, isolation=f"setup = {json.dumps(setup)}\nsetup_timeout_seconds = 1")
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "--untracked-files=all")
    started = time.monotonic()
    code, meta, stderr = execute(repo, [task("t1", "write=a.py:x")])
    elapsed = time.monotonic() - started
    assert code == 1, stderr
    assert elapsed < 30, elapsed
    t1 = result(meta, "t1")
    assert meta["status"] == "failed" and t1["status"] == "failed"
    assert t1["error"] == "setup failed: timed out after 1 s"
    assert any(e.startswith("t1: setup failed: timed out") for e in meta["errors"])
    assert "installing deps" in (repo / t1["log_path"]).read_text()
    assert records(tmp_path, "t1") == []  # the agent never ran
    # Both the setup and the child it started (which ignore SIGTERM) were killed with the group.
    assert pids_file.exists(), "the setup never got as far as starting its child"
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 2
    assert wait_until_gone(pids) == []
    # ...by the setup's own timeout, not by the end-of-run sweep for strays (which would say so in a warning).
    events = [json.loads(line) for line in
              (repo / ".flow/maestro/parallel_groups/g/events.jsonl").read_text().splitlines()]  # fmt: skip
    assert not [e for e in events if e["event"] == "warning" and "process group(s) left by" in e.get("message", "")]
    # The user's checkout is untouched: same commit, same branch, git status as before (its own config file).
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == status == "?? .flow/maestro/config.toml"
    assert (repo / "a.py").read_text() == "a = 0\n"


#: Every hook a commit, a merge or a checkout can run: each logs its name and its caller, then fails.
HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-merge-commit", "post-merge",
         "post-checkout", "post-rewrite")  # fmt: skip


def install_failing_hooks(repo: Path, log: Path) -> None:
    """Hooks in ``.git/hooks`` (shared by every worktree) that record each run in ``log`` and exit 1."""
    for name in HOOKS:
        hook = repo / ".git" / "hooks" / name
        hook.write_text(f'#!/bin/sh\necho "{name} ${{HOOK_CALLER:-maestro}}" >> {log}\nexit 1\n')
        hook.chmod(0o755)


def test_failing_commit_hooks_never_block_or_lose_an_agents_work(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    log = tmp_path / "hooks.log"
    install_failing_hooks(repo, log)
    tasks = [
        task("t1", "write=a.py:one"),  # leaves its work uncommitted: maestro commits it
        # Both its own commits are refused: pre-commit, then prepare-commit-msg (which --no-verify does not skip).
        task("t2", "write=b.py:two commit=t2-hooked commit-no-verify=t2-no-verify"),
        # Commits some of its work itself (past the hooks), then leaves one file uncommitted.
        task("t3", "write=c.py:three commit-no-hooks=t3-own write=new/d.py:four"),
    ]
    code, meta, stderr = execute(repo, tasks)
    assert code == 0, (meta["errors"], stderr)
    assert meta["status"] == "completed" and meta["landed"] is True
    assert all(r["status"] == "completed" and r["closed"] for r in meta["results"])
    # Everything the agents wrote is on main, in the checkout, and the checkout is clean.
    assert (repo / "a.py").read_text() == "one\n"
    assert (repo / "b.py").read_text() == "two\n"
    assert (repo / "c.py").read_text() == "three\n"
    assert (repo / "new" / "d.py").read_text() == "four\n"
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert meta["landed_sha"] == git(repo, "rev-parse", "main")
    assert result(meta, "t3")["changed_files"] == ["c.py", "new/d.py"]
    # The agents' commits went as the hooks decided; the one that got through is kept on main, next to
    # maestro's commits of what each agent left and its merge commits.
    assert records(tmp_path, "t2")[0]["commits"] == [["t2-hooked", 1], ["t2-no-verify", 1]]
    assert records(tmp_path, "t3")[0]["commits"] == [["t3-own", 0]]
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    assert {"t1: task t1", "t2: task t2", "t3-own", "t3: task t3"} <= set(subjects)
    assert {"Merge t1: task t1", "Merge t2: task t2", "Merge t3: task t3"} <= set(subjects)
    assert "t2-hooked" not in subjects and "t2-no-verify" not in subjects
    # The hooks work (they refused the agent's commits), yet none ran for a commit, merge or checkout of
    # maestro's (commit-back, the queue's merge commits, the integration worktree). Only the landing, a
    # fast-forward in the user's checkout, ran post-merge, as the user's own `git merge --ff-only` does;
    # git ignores its exit code, and the work landed.
    runs = log.read_text().splitlines()
    assert runs == ["pre-commit agent t2", "prepare-commit-msg agent t2", "post-merge maestro"]


def test_failing_commit_hooks_do_not_stop_a_squash_merge_queue(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path, isolation='merge = "squash"')
    log = tmp_path / "hooks.log"
    install_failing_hooks(repo, log)
    code, meta, stderr = execute(repo, [task("t1", "write=a.py:one commit-no-hooks=t1-own write=b.py:two")])
    assert code == 0, (meta["errors"], stderr)
    assert meta["landed"] is True and result(meta, "t1")["closed"] is True
    assert (repo / "a.py").read_text() == "one\n" and (repo / "b.py").read_text() == "two\n"
    assert git(repo, "log", "--format=%s", "-n", "1", "main") == "t1: task t1"  # one squashed commit
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert log.read_text().splitlines() == ["post-merge maestro"]  # the landing's fast-forward only


def test_a_submodule_is_initialised_in_every_worktree_and_the_work_lands(tmp_path: Path) -> None:
    repo = setup_repo(tmp_path)
    lib = make_repo(tmp_path / "lib", {"lib.txt": "lib\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add the lib submodule")
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    tasks = [
        task("t1", "exists=vendor/lib/lib.txt write=a.py:one"),
        task("t2", "exists=vendor/lib/lib.txt write=b.py:two"),
    ]
    code, meta, stderr = execute(repo, tasks)
    assert code == 0, (meta["errors"], stderr)
    assert meta["status"] == "completed" and meta["landed"] is True
    # Each agent found the submodule checked out in its own worktree.
    for task_id in ("t1", "t2"):
        (seen,) = records(tmp_path, task_id)
        assert Path(seen["cwd"]) == repo / ".flow" / "maestro" / "worktrees" / "g" / task_id
        assert seen["exists"] == {"vendor/lib/lib.txt": True}
        assert result(meta, task_id)["status"] == "completed" and result(meta, task_id)["closed"] is True
    # The work landed; the submodule is as it was (same commit, still checked out); the checkout is clean.
    assert (repo / "a.py").read_text() == "one\n" and (repo / "b.py").read_text() == "two\n"
    assert (repo / "vendor" / "lib" / "lib.txt").read_text() == "lib\n"
    assert git(repo, "submodule", "status").split()[0] == git(lib, "rev-parse", "HEAD")  # no +, - or U
    assert result(meta, "t1")["changed_files"] == ["a.py"]
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == status
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    # Landed tasks leave nothing behind, submodule or not.
    assert branches(repo) == {"main"}
    assert not (repo / ".flow" / "maestro" / "worktrees" / "g" / "t1").exists()
    assert "worktrees" not in git(repo, "worktree", "list")
