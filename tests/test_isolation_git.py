"""The git runner: clear errors, timeouts that kill the whole group, a clean environment, identity."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from isolation_support import git, hermetic_git, make_repo, pid_alive  # noqa: F401

from maestro_parallel.errors import MaestroError
from maestro_parallel.isolation.errors import GitError, GitTimeoutError, GitUnavailableError
from maestro_parallel.isolation.git import (
    FALLBACK_EMAIL,
    identity_environment,
    parse_git_version,
    require_git,
    run_git,
)


async def test_run_git_returns_output(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    result = await run_git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    assert result.ok and result.stdout.strip() == "main"
    assert result.argv[:3] == ("git", "-C", str(repo))


async def test_a_failure_is_one_line_naming_the_command(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    with pytest.raises(GitError) as caught:
        await run_git(repo, "checkout", "-q", "no-such-branch")
    error = caught.value
    assert isinstance(error, MaestroError)
    assert error.returncode == 1 and "no-such-branch" in error.stderr
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"git -C {repo} checkout -q no-such-branch failed (exit code 1): ")
    assert "no-such-branch" in message.split(": ", 1)[1]


async def test_check_false_returns_the_failure(tmp_path: Path) -> None:
    result = await run_git(tmp_path, "rev-parse", "HEAD", check=False)
    assert not result.ok and result.returncode == 128


async def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    pidfile = tmp_path / "sleep.pid"
    alias = f"!sleep 60 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    with pytest.raises(GitTimeoutError, match="timed out after 1 s"):
        await run_git(repo, "hang", config={"alias.hang": alias}, timeout=1)
    assert time.monotonic() - started < 15
    pid = int(pidfile.read_text())
    with anyio.fail_after(5):
        while pid_alive(pid):
            await anyio.sleep(0.05)


async def test_cancellation_kills_the_group_too(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    pidfile = tmp_path / "sleep.pid"
    with anyio.move_on_after(1):
        await run_git(repo, "hang", config={"alias.hang": f"!sleep 60 & echo $! > {pidfile}; wait"}, timeout=60)
    pid = int(pidfile.read_text())
    with anyio.fail_after(5):
        while pid_alive(pid):
            await anyio.sleep(0.05)


async def test_git_variables_of_the_caller_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = make_repo(tmp_path / "mine", {"a.txt": "a"})
    other = make_repo(tmp_path / "other", {"b.txt": "b"})
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    listed = await run_git(mine, "ls-files")
    assert listed.lines() == ["a.txt"]


async def test_fallback_identity_only_when_none_is_configured(tmp_path: Path, hermetic_git: Path) -> None:  # noqa: F811
    repo = make_repo(tmp_path / "r")
    assert await identity_environment(repo) == {}
    hermetic_git.write_text("[init]\n\tdefaultBranch = main\n")
    env = await identity_environment(repo)
    assert env["GIT_AUTHOR_EMAIL"] == env["GIT_COMMITTER_EMAIL"] == FALLBACK_EMAIL
    assert env["GIT_AUTHOR_NAME"] == "maestro-parallel"
    git(repo, "config", "user.name", "Local Name")
    env = await identity_environment(repo)
    assert "GIT_AUTHOR_NAME" not in env and env["GIT_AUTHOR_EMAIL"] == FALLBACK_EMAIL


@pytest.mark.parametrize(
    ("text", "version"),
    [("git version 2.39.5", (2, 39, 5)), ("git version 2.39.3 (Apple Git-145)", (2, 39, 3)),
     ("git version 2.40.1.windows.1", (2, 40, 1)), ("git version 2.38", (2, 38, 0)), ("nonsense", None)],
)  # fmt: skip
def test_parse_git_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_git_version(text) == version


async def test_require_git() -> None:
    version = await require_git()
    assert version >= (2, 38, 0)
    with pytest.raises(GitUnavailableError, match=r"is too old: worktree isolation needs git ≥ 99\.0"):
        await require_git((99, 0))


async def test_git_missing_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GitUnavailableError, match="git is not installed"):
        await require_git()
    with pytest.raises(GitUnavailableError, match="git is not installed"):
        await run_git(tmp_path, "status")
