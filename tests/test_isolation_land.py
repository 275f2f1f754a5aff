"""Landing on the target, cleanup, and kept worktrees, in real repositories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from isolation_support import commit_file, git, hermetic_git, make_repo, state_of  # noqa: F401

from maestro_parallel.isolation.land import (
    KeepWorktrees,
    LandStatus,
    clean,
    keep_worktree,
    kept_worktrees,
    land,
    release_group,
    unsaved_work,
)
from maestro_parallel.isolation.queue import QueueItem, QueueResult, run_merge_queue
from maestro_parallel.isolation.workspace import RepoState, create_worktree, resolve_base


async def queued(repo: Path, target: str = "main", group: str = "g") -> tuple[RepoState, QueueResult]:
    """Two task branches merged into the integration branch of ``group``."""
    state = await state_of(repo)
    sha = (await resolve_base(state, target)).sha
    items = []
    for task_id, name in (("t-1", "a.py"), ("t-2", "b.py")):
        ws = await create_worktree(state, group, task_id, sha)
        commit_file(ws.path, name, f"{task_id}\n")
        items.append(QueueItem(task_id, ws.branch))
    return state, await run_merge_queue(state, group, items, target=target)


async def test_fast_forward_in_the_users_clean_checkout(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, result = await queued(repo)
    events: list[Any] = []

    async def sink(event: Any) -> None:
        events.append(event)

    landed = await land(state, "g", target="main", built_on=result.target_sha, on_event=sink)
    assert (landed.status, landed.method, landed.sha) == (LandStatus.LANDED, "ff-only", result.tip)
    assert git(repo, "rev-parse", "HEAD") == result.tip
    assert (repo / "a.py").read_text() == "t-1\n" and (repo / "b.py").read_text() == "t-2\n"
    assert git(repo, "status", "--porcelain") == ""
    assert events == [{"event": "landed", "target": "main", "sha": result.tip, "method": "ff-only"}]
    again = await land(state, "g", target="main", built_on=result.target_sha)
    assert (again.status, again.method) == (LandStatus.LANDED, "already")


async def test_a_dirty_checkout_blocks_with_the_exact_command(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, result = await queued(repo)
    (repo / "README.md").write_text("edited by the user\n")
    blocked = await land(state, "g", target="main", built_on=result.target_sha)
    assert blocked.status is LandStatus.BLOCKED
    assert blocked.reason == f"the checkout at {state.toplevel} has uncommitted changes to tracked files"
    assert blocked.command == f"git -C {state.toplevel} merge --ff-only maestro/integrate/g"
    assert blocked.error == f"{blocked.reason}; to land it: {blocked.command}"
    assert git(repo, "rev-parse", "main") == result.target_sha
    assert (repo / "README.md").read_text() == "edited by the user\n"
    git(repo, "stash", "-q")
    await anyio.run_process(blocked.command.split())
    assert git(repo, "rev-parse", "main") == result.tip


async def test_untracked_files_alone_do_not_block(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, result = await queued(repo)
    (repo / "scratch.txt").write_text("user's notes")
    landed = await land(state, "g", target="main", built_on=result.target_sha)
    assert landed.status is LandStatus.LANDED and (repo / "scratch.txt").exists()


async def test_a_target_checked_out_nowhere_is_moved_with_update_ref(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    git(repo, "branch", "release")
    state, result = await queued(repo, target="release")
    landed = await land(state, "g", target="release", built_on=result.target_sha)
    assert (landed.status, landed.method) == (LandStatus.LANDED, "update-ref")
    assert git(repo, "rev-parse", "release") == result.tip
    assert git(repo, "rev-parse", "main") == result.target_sha  # the user's branch is untouched


async def test_a_target_that_moved_asks_for_a_rebuild(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, result = await queued(repo)
    commit_file(repo, "late.py", "someone else\n")
    moved = await land(state, "g", target="main", built_on=result.target_sha)
    assert moved.status is LandStatus.TARGET_MOVED
    rebuilt = await run_merge_queue(
        state, "g", [QueueItem("t-1", "maestro/g/t-1"), QueueItem("t-2", "maestro/g/t-2")], target="main"
    )
    landed = await land(state, "g", target="main", built_on=rebuilt.target_sha)
    assert landed.status is LandStatus.LANDED
    assert sorted(git(repo, "ls-files").splitlines()) == ["README.md", "a.py", "b.py", "late.py"]


async def test_a_target_checked_out_in_another_worktree_blocks(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    git(repo, "checkout", "-q", "-b", "feature")
    other = tmp_path / "main-wt"
    git(repo, "worktree", "add", "-q", str(other), "main")
    state, result = await queued(repo, target="main")
    blocked = await land(state, "g", target="main", built_on=result.target_sha)
    assert blocked.status is LandStatus.BLOCKED
    assert f"main is checked out in another worktree ({other.resolve()})" == blocked.reason
    assert blocked.command == f"git -C {other.resolve()} merge --ff-only maestro/integrate/g"


async def test_land_never_leaves_the_work_on_the_integration_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, result = await queued(repo)
    blocked = await land(state, "g", target="main", built_on=result.target_sha, allowed=False)
    assert (
        blocked.status is LandStatus.BLOCKED
        and blocked.reason == 'land = "never": the work waits on maestro/integrate/g'
    )
    assert git(repo, "rev-parse", "main") == result.target_sha


@pytest.mark.parametrize(
    ("policy", "failed", "kept"),
    [("failed", True, True), ("failed", False, False), ("always", False, True), ("never", True, False)],
)
def test_keep_worktree(policy: str, failed: bool, kept: bool) -> None:
    assert keep_worktree(KeepWorktrees(policy), failed=failed) is kept


async def test_kept_worktrees_are_listed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    await queued(repo, group="g")
    await queued(repo, group="h")
    listed = await kept_worktrees(repo, "g")
    assert sorted((k.task_id or "", k.branch) for k in listed) == [
        ("", "maestro/integrate/g"), ("t-1", "maestro/g/t-1"), ("t-2", "maestro/g/t-2"),
    ]  # fmt: skip
    assert len(await kept_worktrees(repo)) == 6


async def test_clean_after_landing_removes_everything(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, result = await queued(repo)
    await land(state, "g", target="main", built_on=result.target_sha)
    report = await clean(repo, "g")
    assert report.kept == []
    assert sorted(report.branches_deleted) == ["maestro/g/t-1", "maestro/g/t-2", "maestro/integrate/g"]
    assert len(report.worktrees_removed) == 3
    assert git(repo, "branch", "--list", "maestro/*") == ""
    assert not (repo / ".flow/maestro/worktrees/g").exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


async def test_clean_refuses_work_on_no_other_branch_unless_forced(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    ws = await create_worktree(state, "g", "t:1", (await resolve_base(state)).sha)
    commit_file(ws.path, "only-here.py", "unique work\n")
    (ws.path / "uncommitted.txt").write_text("not yet committed")
    report = await clean(repo, "g")
    assert report.branches_deleted == [] and report.worktrees_removed == []
    assert any("uncommitted changes" in line for line in report.kept)
    (ws.path / "uncommitted.txt").unlink()
    report = await clean(repo, "g")
    assert report.worktrees_removed == [str(ws.path)]
    assert report.kept == ["maestro/g/t%3A1 has 1 commit(s) on no other branch (use --force to delete it)"]
    assert git(repo, "show", "maestro/g/t%3A1:only-here.py") == "unique work"
    report = await clean(repo, "g", force=True)
    assert report.branches_deleted == ["maestro/g/t%3A1"] and report.kept == []


async def test_clean_of_one_group_leaves_the_others(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    await queued(repo, group="g")
    await queued(repo, group="h")
    await clean(repo, "g", force=True)
    assert git(repo, "branch", "--list", "maestro/*", "--format=%(refname:short)").splitlines() == [
        "maestro/h/t-1", "maestro/h/t-2", "maestro/integrate/h",
    ]  # fmt: skip
    report = await clean(repo, None, force=True)
    assert len(report.branches_deleted) == 3 and git(repo, "branch", "--list", "maestro/*") == ""


@pytest.mark.parametrize("policy", ["failed", "never", "always"])
async def test_release_after_landing_keeps_failed_work(tmp_path: Path, policy: str) -> None:
    repo = make_repo(tmp_path / "r")
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    done = await create_worktree(state, "g", "t-1", sha)
    commit_file(done.path, "a.py", "a\n")
    failed = await create_worktree(state, "g", "t:2", sha)
    commit_file(failed.path, "b.py", "failed work\n")
    result = await run_merge_queue(state, "g", [QueueItem("t-1", done.branch)], target="main")
    assert (await land(state, "g", target="main", built_on=result.target_sha)).status is LandStatus.LANDED
    report = await release_group(repo, "g", failed={"t:2"}, policy=policy)
    left = {k.task_id for k in await kept_worktrees(repo, "g")}
    expected = {"failed": {"t:2"}, "never": set(), "always": {"t-1", "t:2"}}[policy]
    assert left == expected
    assert git(repo, "show", "maestro/g/t%3A2:b.py") == "failed work"  # a failed task's branch always stays
    branches = set(git(repo, "branch", "--list", "maestro/*", "--format=%(refname:short)").splitlines())
    assert "maestro/integrate/g" not in branches
    assert ("maestro/g/t-1" in branches) is (policy == "always")
    assert report.kept == []


async def test_a_worktree_with_a_submodule_goes_unless_its_submodule_holds_commits_made_there(tmp_path: Path) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.txt": "lib\n"})
    repo = make_repo(tmp_path / "r")
    git(repo, "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add the lib submodule")
    state = await state_of(repo)
    sha = git(repo, "rev-parse", "HEAD")
    untouched = await create_worktree(state, "g", "t-1", sha)
    bumped = await create_worktree(state, "g", "t-2", sha)
    commit_file(bumped.path / "vendor" / "lib", "lib.txt", "changed\n")  # a commit only this submodule holds
    git(bumped.path, "commit", "-q", "-am", "bump the lib")
    why = "commits on no remote branch in its submodule vendor/lib"
    assert await unsaved_work(untouched.path) is None
    assert await unsaved_work(bumped.path) == why
    report = await clean(repo, "g")
    assert report.worktrees_removed == [str(untouched.path)]  # git alone refuses: it has a submodule
    assert f"{bumped.path} has {why} (use --force to remove it)" in report.kept
    assert (bumped.path / "vendor" / "lib" / "lib.txt").read_text() == "changed\n"
    assert (await clean(repo, "g", force=True)).worktrees_removed == [str(bumped.path)]
