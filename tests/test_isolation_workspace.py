"""Task worktrees in real repositories: mode, target, exclusion, creation, includes, setup."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from isolation_support import commit_file, git, hermetic_git, make_repo, pid_alive, state_of  # noqa: F401

from maestro_parallel.isolation.errors import IncludeError, ModeUnavailableError, SetupError, TargetError, WorktreeError
from maestro_parallel.isolation.workspace import (
    ExistingBranch,
    IsolationMode,
    _add_worktree,
    create_worktree,
    create_worktrees,
    decide_mode,
    ensure_excluded,
    plan_includes,
    resolve_base,
    resolve_mode,
    run_setup,
)


@pytest.mark.parametrize(
    ("requested", "git_", "in_tree", "commit", "mode", "why"),
    [
        ("auto", (2, 39, 5), True, True, "worktree", "git work tree"),
        ("auto", (2, 37, 1), True, True, "shared", "git 2.37.1 is older than 2.38"),
        ("auto", "git is not installed", True, True, "shared", "git is not installed"),
        ("auto", (2, 39, 5), False, False, "shared", "not inside a git work tree"),
        ("auto", (2, 39, 5), True, False, "shared", "no commit yet"),
        ("shared", (2, 39, 5), True, True, "shared", "mode = shared"),
        ("worktree", (2, 39, 5), True, True, "worktree", "git work tree"),
    ],
)
def test_decide_mode(requested: str, git_: Any, in_tree: bool, commit: bool, mode: str, why: str) -> None:
    decision = decide_mode(requested, git=git_, in_work_tree=in_tree, has_commit=commit)
    assert decision.mode == mode and why in decision.reason


def test_worktree_mode_where_impossible_says_why() -> None:
    with pytest.raises(
        ModeUnavailableError, match="worktree isolation is impossible: the repository has no commit yet"
    ):
        decide_mode("worktree", git=(2, 39, 5), in_work_tree=True, has_commit=False)


async def test_resolve_mode_in_real_folders(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    decision, state = await resolve_mode(repo)
    assert decision.mode is IsolationMode.WORKTREE and state is not None and state.branch == "main"
    empty = make_repo(tmp_path / "empty", commit=False)
    assert (await resolve_mode(empty))[0].mode is IsolationMode.SHARED
    with pytest.raises(ModeUnavailableError, match="no commit yet"):
        await resolve_mode(empty, "worktree")
    plain = tmp_path / "plain"
    plain.mkdir()
    decision, state = await resolve_mode(plain)
    assert decision.mode is IsolationMode.SHARED and "not inside a git work tree" in decision.reason and state is None


async def test_resolve_base(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    head = git(repo, "rev-parse", "HEAD")
    base = await resolve_base(await state_of(repo))
    assert (base.target, base.sha) == ("main", head)
    git(repo, "branch", "release")
    assert (await resolve_base(await state_of(repo), "release")).sha == head
    with pytest.raises(TargetError, match="target branch 'nope' does not exist"):
        await resolve_base(await state_of(repo), "nope")
    with pytest.raises(TargetError, match="not a valid branch name"):
        await resolve_base(await state_of(repo), "a..b")
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(TargetError, match=f"HEAD is detached at {head[:12]}"):
        await resolve_base(await state_of(repo))
    assert (await resolve_base(await state_of(repo), "main")).sha == head


async def test_no_commit_yet_has_no_base(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", commit=False)
    with pytest.raises(TargetError, match="no commit yet"):
        await resolve_base(await state_of(repo))


async def test_worktrees_are_created_concurrently_and_leave_the_checkout_clean(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"app.py": "x = 1\n"})
    state = await state_of(repo)
    assert await ensure_excluded(state) is True
    assert await ensure_excluded(state) is False  # idempotent
    base = await resolve_base(state)
    events: list[dict[str, Any]] = []

    async def sink(event: Any) -> None:
        events.append(event)

    ids = ["t-1", "proj:auth.1", "bd-a3f2.4", *(f"t-{i}" for i in range(4, 16))]  # enough to race
    made = await create_worktrees(state, "g1", ids, base.sha, on_event=sink)
    assert list(made) == ids
    for task_id, workspace in made.items():
        assert not isinstance(workspace, Exception), workspace
        assert workspace.path == repo / ".flow/maestro/worktrees/g1" / task_id
        assert (workspace.path / "app.py").read_text() == "x = 1\n"
        assert git(workspace.path, "symbolic-ref", "--short", "HEAD") == workspace.branch
        assert git(workspace.path, "rev-parse", "HEAD") == base.sha
    assert git(repo, "branch", "--list", "maestro/g1/proj%3Aauth.1") != ""
    assert sorted(e["task_id"] for e in events) == sorted(ids)
    assert all(e["event"] == "worktree_created" and not e["reused"] for e in events)
    assert git(repo, "status", "--porcelain") == ""  # maestro's folders are excluded
    (made["t-1"].path / "new.py").write_text("y")  # type: ignore[union-attr]
    assert git(repo, "status", "--porcelain") == ""


async def test_an_existing_worktree_of_ours_is_reused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    first = await create_worktree(state, "g", "t-1", sha)
    (first.path / "work.txt").write_text("half done")
    again = await create_worktree(state, "g", "t-1", sha)
    assert again.reused and again.path == first.path
    assert (again.path / "work.txt").read_text() == "half done"


async def test_a_path_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    path = repo / ".flow/maestro/worktrees/g/t-1"
    path.mkdir(parents=True)
    (path / "mine.txt").write_text("user data")
    with pytest.raises(WorktreeError, match="already exists and is not a worktree of this repository"):
        await create_worktree(state, "g", "t-1", sha)
    assert (path / "mine.txt").read_text() == "user data"
    other = await create_worktree(state, "g", "t-2", sha)
    git(other.path, "checkout", "-q", "-b", "elsewhere")
    with pytest.raises(WorktreeError, match="already a worktree on branch elsewhere, not on maestro/g/t-2"):
        await create_worktree(state, "g", "t-2", sha)


async def test_an_existing_branch_is_refused_reused_or_kept_aside(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    workspace = await create_worktree(state, "g", "t:1", sha)
    old = commit_file(workspace.path, "old.txt", "earlier attempt")
    git(repo, "worktree", "remove", str(workspace.path))
    with pytest.raises(WorktreeError, match="branch maestro/g/t%3A1 already exists"):
        await create_worktree(state, "g", "t:1", sha)
    reused = await create_worktree(state, "g", "t:1", sha, existing_branch=ExistingBranch.REUSE)
    assert (reused.path / "old.txt").exists()
    git(repo, "worktree", "remove", str(reused.path))
    fresh = await create_worktree(state, "g", "t:1", sha, existing_branch=ExistingBranch.KEEP_ASIDE)
    assert fresh.kept_branch == "maestro/g/_attempts/t%3A1/1"
    assert not (fresh.path / "old.txt").exists()
    assert git(repo, "rev-parse", fresh.kept_branch) == old  # the earlier attempt's work is kept


async def test_worktreeinclude_copies_ignored_files_only(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "r", {".gitignore": ".env\nbuild/\n*.log\n", ".worktreeinclude": ".env\nbuild/\nnotes.txt\n"}
    )
    (repo / ".env").write_text("SECRET=1")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_text("bin")
    (repo / "debug.log").write_text("not included")
    (repo / "notes.txt").write_text("untracked but not ignored")
    state = await state_of(repo)
    plan = await plan_includes(state)
    assert sorted(plan.files) == [".env", "build/out.bin"]
    workspace = await create_worktree(state, "g", "t-1", (await resolve_base(state)).sha, include=plan)
    assert (workspace.path / ".env").read_text() == "SECRET=1"
    assert (workspace.path / "build/out.bin").read_text() == "bin"
    assert not (workspace.path / "debug.log").exists() and not (workspace.path / "notes.txt").exists()
    assert git(workspace.path, "status", "--porcelain") == ""


async def test_worktreeinclude_refuses_symlinks_and_paths_outside(tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("outside")
    repo = make_repo(tmp_path / "r", {".gitignore": "link.txt\n", ".worktreeinclude": "link.txt\n"})
    (repo / "link.txt").symlink_to(secret)
    with pytest.raises(IncludeError, match="matches link.txt, a symbolic link"):
        await plan_includes(await state_of(repo))
    (repo / ".worktreeinclude").write_text("../outside.txt\n")
    with pytest.raises(IncludeError, match=r"line 1: '../outside.txt' reaches outside the repository"):
        await plan_includes(await state_of(repo))


async def test_submodules_are_initialised_in_the_worktree(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.py": "LIB = 1\n"})
    repo = make_repo(tmp_path / "r")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add submodule")
    state = await state_of(repo)
    workspace = await create_worktree(state, "g", "t-1", (await resolve_base(state)).sha)
    assert (workspace.path / "vendor/lib/lib.py").read_text() == "LIB = 1\n"


async def test_a_repo_root_below_the_top_runs_agents_in_the_matching_subfolder(tmp_path: Path) -> None:
    top = make_repo(tmp_path / "top", {"services/api/app.py": "app\n", "README.md": "top\n"})
    root = top / "services" / "api"
    state = await state_of(root)
    assert state.prefix == "services/api/" and state.toplevel == top.resolve()
    await ensure_excluded(state)
    workspace = await create_worktree(state, "g", "t-1", (await resolve_base(state)).sha)
    assert workspace.path == root / ".flow/maestro/worktrees/g/t-1"
    assert workspace.cwd == workspace.path / "services/api"
    assert (workspace.cwd / "app.py").read_text() == "app\n"
    assert git(top, "status", "--porcelain") == ""
    env = workspace.agent_environment({"GIT_DIR": "/elsewhere", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "MAESTRO_WORKTREE": str(workspace.cwd)}


async def test_default_branch_checked_out_in_another_worktree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "worktree", "add", "-q", str(tmp_path / "main-wt"), "main")
    state = await state_of(repo)
    base = await resolve_base(state, "main")
    workspace = await create_worktree(state, "g", "t-1", base.sha)
    assert git(workspace.path, "rev-parse", "HEAD") == base.sha


async def test_setup_runs_in_the_worktree_with_its_output_in_the_log(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    workspace = await create_worktree(state, "g", "t-1", (await resolve_base(state)).sha)
    log = tmp_path / "t-1.log"
    code = "import os; print('setup in', os.getcwd()); open('ready', 'w').write(os.environ['MAESTRO_WORKTREE'])"
    await run_setup(workspace, [sys.executable, "-c", code], timeout=30, log_path=log)
    assert (workspace.cwd / "ready").read_text() == str(workspace.cwd)
    assert f"setup in {workspace.cwd}" in log.read_text()
    with pytest.raises(SetupError, match=r"setup failed: exit code 3 \(output in t-1.log\)"):
        await run_setup(
            workspace, [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], timeout=30, log_path=log
        )
    assert "boom" in log.read_text()
    with pytest.raises(SetupError, match="setup failed: cannot run"):
        await run_setup(workspace, ["/no/such/tool"], timeout=30, log_path=log)


async def test_a_hanging_setup_is_killed_with_its_children(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    workspace = await create_worktree(state, "g", "t-1", (await resolve_base(state)).sha)
    pidfile = tmp_path / "child.pid"
    script = f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(SetupError, match="setup failed: timed out after 3 s"):
        await run_setup(workspace, [sys.executable, "-c", script], timeout=3, log_path=tmp_path / "log")
    assert time.monotonic() - started < 20
    assert pidfile.exists(), "the setup did not start its child within its timeout (machine overloaded?)"
    with anyio.fail_after(5):
        while pid_alive(int(pidfile.read_text())):
            await anyio.sleep(0.05)


async def test_one_task_in_the_way_does_not_hold_back_the_others(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    blocker = repo / ".flow/maestro/worktrees/g/t-2"
    blocker.mkdir(parents=True)
    (blocker / "x").write_text("x")
    made = await create_worktrees(state, "g", ["t-1", "t-2", "t-3"], (await resolve_base(state)).sha, max_concurrent=2)
    assert isinstance(made["t-2"], WorktreeError)
    assert not isinstance(made["t-1"], Exception) and not isinstance(made["t-3"], Exception)
    assert (
        os.path.isdir(repo / ".flow/maestro/worktrees/g/t-3/.git")
        or (repo / ".flow/maestro/worktrees/g/t-3/.git").is_file()
    )


async def test_a_worktree_registered_but_never_checked_out_is_completed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"app.py": "x = 1\n"})
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    path = repo / ".flow/maestro/worktrees/g/t-1"
    git(repo, "worktree", "add", "-q", "--no-checkout", "-b", "maestro/g/t-1", str(path), sha)  # a crash here
    workspace = await create_worktree(state, "g", "t-1", sha)
    assert workspace.reused and (path / "app.py").read_text() == "x = 1\n"
    assert git(path, "status", "--porcelain") == ""


async def test_two_groups_creating_worktrees_at_once_do_not_trip_over_each_other(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    made: dict[str, Any] = {}

    async def group(group_id: str) -> None:  # separate locks: like two coordinators of one repository
        made.update(
            {
                f"{group_id}/{t}": w
                for t, w in (await create_worktrees(state, group_id, [f"t-{i}" for i in range(8)], sha)).items()
            }
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(group, "g1")
        tg.start_soon(group, "g2")
    failures = {k: v for k, v in made.items() if isinstance(v, Exception)}
    assert failures == {} and len(made) == 16
    assert len(git(repo, "worktree", "list", "--porcelain").split("worktree ")) - 1 == 17


async def test_an_add_whose_raced_attempt_left_its_new_branch_adds_the_worktree_on_it(tmp_path: Path) -> None:
    # git makes a new branch before its worktree, so an attempt that lost the race of another group's
    # add leaves the branch behind; the retry must use it, not fail with "a branch named ... already exists".
    repo = make_repo(tmp_path / "r")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "maestro/g/t-1", sha)  # what the failed attempt left
    path = repo / ".flow" / "maestro" / "worktrees" / "g" / "t-1"
    path.parent.mkdir(parents=True)
    await _add_worktree(repo, path, "maestro/g/t-1", sha)
    assert git(path, "symbolic-ref", "--short", "HEAD") == "maestro/g/t-1"
    assert git(path, "rev-parse", "HEAD") == sha
