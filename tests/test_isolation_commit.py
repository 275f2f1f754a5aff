"""Commit-back after an agent: leftovers committed, its own commits kept, hooks and identity handled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from isolation_support import commit_file, git, hermetic_git, make_repo, state_of  # noqa: F401

from maestro_parallel.isolation.commit import commit_message, commit_task
from maestro_parallel.isolation.errors import CommitError
from maestro_parallel.isolation.workspace import TaskWorkspace, create_worktree, resolve_base


async def workspace_for(tmp_path: Path, task_id: str = "proj:auth.1") -> tuple[Path, TaskWorkspace]:
    repo = make_repo(tmp_path / "r", {"app.py": "x = 1\n", "old.py": "old\n"})
    state = await state_of(repo)
    return repo, await create_worktree(state, "g1", task_id, (await resolve_base(state)).sha)


async def commit(ws: TaskWorkspace, **kwargs: Any) -> Any:
    return await commit_task(
        ws.path,
        task_id=ws.task_id,
        title="Add login\nform",
        group_id=ws.group_id,
        branch=ws.branch,
        base_sha=ws.base_sha,
        **kwargs,
    )


def test_commit_message() -> None:
    assert commit_message("t-1", "Add  login\nform", "g1") == "t-1: Add login form\n\nMaestro-Group: g1\n"
    assert commit_message("t-1", "", "g1") == "t-1\n\nMaestro-Group: g1\n"


async def test_leftovers_are_committed_with_the_trailer(tmp_path: Path) -> None:
    repo, ws = await workspace_for(tmp_path)
    (ws.path / "app.py").write_text("x = 2\n")
    (ws.path / "new").mkdir()
    (ws.path / "new/mod.py").write_text("m\n")
    (ws.path / "old.py").unlink()
    events: list[Any] = []

    async def sink(event: Any) -> None:
        events.append(event)

    result = await commit(ws, on_event=sink)
    assert result.committed and result.branch == "maestro/g1/proj%3Aauth.1"
    assert result.changed_files == ["app.py", "new/mod.py", "old.py"]
    assert result.head_sha == git(repo, "rev-parse", ws.branch)
    assert git(ws.path, "log", "-1", "--format=%B") == "proj:auth.1: Add login form\n\nMaestro-Group: g1"
    assert git(ws.path, "log", "-1", "--format=%(trailers:key=Maestro-Group,valueonly)") == "g1"
    assert git(ws.path, "status", "--porcelain") == ""
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout is untouched
    assert events == [{"event": "task_committed", "task_id": ws.task_id, "branch": ws.branch,
                       "head_sha": result.head_sha, "committed": True, "changed_files": result.changed_files}]  # fmt: skip


async def test_the_agents_own_commits_are_kept(tmp_path: Path) -> None:
    _, ws = await workspace_for(tmp_path)
    own = commit_file(ws.path, "a.py", "a\n", "agent: add a")
    (ws.path / "b.py").write_text("b\n")
    result = await commit(ws)
    assert git(ws.path, "rev-parse", "HEAD~1") == own
    assert result.changed_files == ["a.py", "b.py"]
    assert git(ws.path, "rev-list", "--count", f"{ws.base_sha}..HEAD") == "2"


async def test_nothing_left_makes_no_commit(tmp_path: Path) -> None:
    _, ws = await workspace_for(tmp_path)
    result = await commit(ws)
    assert not result.committed and result.head_sha == ws.base_sha and result.changed_files == []


async def test_failing_hooks_do_not_stop_commit_back(tmp_path: Path) -> None:
    repo, ws = await workspace_for(tmp_path)
    hooks = Path(git(repo, "rev-parse", "--git-common-dir"))
    hooks = (repo / hooks if not hooks.is_absolute() else hooks) / "hooks"
    for name in ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit"):
        (hooks / name).write_text("#!/bin/sh\necho hook refuses >&2\nexit 1\n")
        (hooks / name).chmod(0o755)
    (ws.path / "app.py").write_text("x = 3\n")
    result = await commit(ws)
    assert result.committed and result.changed_files == ["app.py"]


async def test_ignored_files_are_not_committed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitignore": "*.pyc\n"})
    state = await state_of(repo)
    ws = await create_worktree(state, "g1", "t-1", (await resolve_base(state)).sha)
    (ws.path / "cache.pyc").write_text("junk")
    result = await commit(ws)
    assert not result.committed and (ws.path / "cache.pyc").exists()


async def test_fallback_identity_when_none_is_configured(tmp_path: Path, hermetic_git: Path) -> None:  # noqa: F811
    _, ws = await workspace_for(tmp_path)
    hermetic_git.write_text("[init]\n\tdefaultBranch = main\n")
    (ws.path / "app.py").write_text("x = 4\n")
    await commit(ws)
    assert git(ws.path, "log", "-1", "--format=%an <%ae> / %cn <%ce>") == (
        "maestro-parallel <maestro-parallel@localhost> / maestro-parallel <maestro-parallel@localhost>"
    )


async def test_the_configured_identity_wins(tmp_path: Path) -> None:
    _, ws = await workspace_for(tmp_path)
    (ws.path / "app.py").write_text("x = 5\n")
    await commit(ws)
    assert git(ws.path, "log", "-1", "--format=%an <%ae>") == "Test User <test@example.com>"


async def test_an_agent_that_left_its_branch_is_a_clear_error(tmp_path: Path) -> None:
    _, ws = await workspace_for(tmp_path)
    git(ws.path, "checkout", "-q", "--detach")
    (ws.path / "app.py").write_text("x = 6\n")
    with pytest.raises(CommitError, match=r"left its worktree on a detached HEAD, not on maestro/g1/proj%3Aauth.1"):
        await commit(ws)
    assert (ws.path / "app.py").read_text() == "x = 6\n"  # nothing lost
