"""The truthful refresh: the built-in digest, and refresh output that cannot be project state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import agent_config, task, write_config

from maestro_parallel import AsyncParallelCoordinator, TaskMetadata, TaskStatus
from maestro_parallel.cli import main
from maestro_parallel.runtime.digest import (
    SUMMARY_COMMAND_RELATIVE,
    Digest,
    GroupSummary,
    format_digest,
    parse_group,
    refresh_output_problem,
    uses_builtin_digest,
)
from maestro_parallel.trackers import LocalTracker

DEFAULT = ("claude", "-p", "/flow:summary")


# --------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(("command", "preset", "defined", "digest"), [
    (DEFAULT, "claude", False, True),
    (DEFAULT, "claude", True, False),
    (DEFAULT, "codex", True, True),      # codex has no slash commands
    (DEFAULT, "custom", False, True),
    (("my-summary",), "claude", False, False),   # a command the user chose always runs
    (("claude", "-p", "/flow:summary", "--model", "x"), "claude", False, False),
])
def test_when_the_builtin_digest_replaces_the_refresh_command(
    command: tuple[str, ...], preset: str, defined: bool, digest: bool
) -> None:
    assert uses_builtin_digest(command, preset, summary_defined=defined) is digest


@pytest.mark.parametrize(("output", "claude", "problem"), [
    ("", True, "the command printed nothing"),
    ("  \n\n", False, "the command printed nothing"),
    ("Unknown command: /flow:summary\n", True, "the command reported: Unknown command: /flow:summary"),
    ("API Error: 529 overloaded_error\n", True, "the command reported: API Error: 529 overloaded_error"),
    ("Not logged in · Please run /login\n", True, "the command reported: Not logged in · Please run /login"),
    ("Unknown command: /flow:summary\n", False, None),   # another tool's words are its business
    ("The project has 3 services.\nUnknown command lines appear in logs.\n", True, None),
    ("STATE: fine\n", True, None),
])
def test_refresh_output_that_cannot_be_project_state(output: str, claude: bool, problem: str | None) -> None:
    assert refresh_output_problem(output, claude=claude) == problem


def test_the_digest_says_branch_commits_tree_plan_earlier_work_and_the_groups_tasks() -> None:
    digest = Digest(
        branch="main", head="abc1234", commits=["abc1234 Add the API (2 minutes ago)"],
        changes=[" M src/api.py", "?? notes.txt"],
        groups=[GroupSummary("infra", "completed", "2026-11-30T01:00:00.000Z", ["i1", "i2"], 2),
                GroupSummary("ui", "failed", "2026-11-30T01:10:00.000Z", [], 2),
                GroupSummary("api", "in_progress", "2026-11-30T01:20:00.000Z", [], 2)],
        group_id="api",
        tasks=[TaskMetadata(task_id="a1", title="Add the endpoint"), TaskMetadata(task_id="a2", title="")],
    )
    assert format_digest(digest) == (
        "Built-in project digest (git and maestro's records; no model summary).\n"
        "\n"
        "Branch: main at abc1234\n"
        "\n"
        "Recent commits:\n"
        "- abc1234 Add the API (2 minutes ago)\n"
        "\n"
        "Working tree: 2 uncommitted changes:\n"
        "-  M src/api.py\n"
        "- ?? notes.txt\n"
        "\n"
        "Parallel groups of the plan (oldest first):\n"
        "- infra: completed, 2/2 tasks completed\n"
        "- ui: failed, 0/2 tasks completed\n"
        "\n"
        "Completed by earlier groups:\n"
        "- infra: i1, i2\n"
        "\n"
        "This group (api): 2 tasks running in parallel:\n"
        "- a1: Add the endpoint\n"
        "- a2: (untitled)\n"
    )


def test_the_digest_of_a_folder_that_is_not_a_repository() -> None:
    text = format_digest(Digest(None, None, [], None, [], None, []))
    assert "Repository: not a git work tree." in text


@pytest.mark.parametrize("text", ["", "{", "[]", '{"status": "completed"}'])
def test_a_metadata_file_that_is_not_a_group_is_left_out(text: str) -> None:
    assert parse_group(text) is None


# --------------------------------------------------------------------------- through a group run


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def git_repo(repo: Path) -> Path:
    """The recording-agent repository, as a real git repository with one commit; the default refresh."""
    (repo / ".git").rmdir()
    _git(repo, "init", "-q", "-b", "trunk")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    _git(repo, "add", "agent.py")
    _git(repo, "commit", "-q", "-m", "Add the recording agent")
    (repo / "scratch.txt").write_text("uncommitted\n")
    write_config(repo, agent_config().replace("[refresh]\nenabled = false", "[refresh]\nenabled = true"))
    return repo


async def test_without_flow_summary_the_refresh_is_the_digest_and_costs_no_model_call(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claude that records any call: the digest must not make one.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(f"#!/bin/sh\necho called >> {tmp_path / 'claude-called'}\n")
    (bin_dir / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    coordinator = AsyncParallelCoordinator(git_repo, tracker=LocalTracker(git_repo))
    first = await coordinator.execute_parallel_group([task("e1", group="early")], "early")
    assert first.status is TaskStatus.COMPLETED

    tasks = [task("a", group="g"), {**task("b", group="g"), "title": "Wire the API"}]
    meta = await coordinator.execute_parallel_group(tasks, "g")

    assert meta.status is TaskStatus.COMPLETED, meta.errors
    assert meta.pre_group_refresh_completed is True
    assert not (tmp_path / "claude-called").exists()
    prompt = (git_repo / ".flow/maestro/parallel_groups/g/prompts/a.md").read_text()
    state = prompt.split("## Current project state\n\n")[1].split("\n\n## ")[0]
    assert "Branch: trunk at " in state
    assert "Add the recording agent" in state
    assert "?? scratch.txt" in state and ".flow" not in state
    assert "- early: completed, 1/1 tasks completed" in state
    assert "Completed by earlier groups:\n- early: e1\n" in state
    assert "This group (g): 2 tasks running in parallel:\n- a: task a\n- b: Wire the API" in state
    # The digest is also the refresh's log, for `logs`.
    log = (git_repo / ".flow/maestro/parallel_groups/g/logs/_refresh.log").read_text()
    assert log.startswith("Built-in project digest")


@pytest.mark.parametrize(("script", "reason"), [
    ("print('Unknown command: /flow:summary')", "the command reported: Unknown command: /flow:summary"),
    ("pass", "the command printed nothing"),
    ("import sys; print('STATE: ok'); sys.exit(3)", "exit code 3: STATE: ok"),
])
async def test_a_refresh_that_says_nothing_true_is_a_warning_and_no_state_section(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, reason: str
) -> None:
    # A `claude` whose answer to /flow:summary is not a summary; the command is defined, so it runs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(f"#!{sys.executable}\n{script}\n")
    (bin_dir / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (git_repo / SUMMARY_COMMAND_RELATIVE).parent.mkdir(parents=True)
    (git_repo / SUMMARY_COMMAND_RELATIVE).write_text("Summarise.\n")
    meta = await AsyncParallelCoordinator(git_repo, tracker=LocalTracker(git_repo)).execute_parallel_group(
        [task("a")], "g")

    assert meta.status is TaskStatus.COMPLETED and meta.errors == []
    assert meta.pre_group_refresh_completed is False
    assert meta.results[0]["warnings"] == [f"context refresh failed: {reason}"]
    prompt = (git_repo / ".flow/maestro/parallel_groups/g/prompts/a.md").read_text()
    assert "## Current project state\n\n(no project summary is available)" in prompt
    assert "Unknown command" not in prompt


def test_init_writes_the_flow_summary_command(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["--repo-root", str(tmp_path), "init", "--summary-command", "--json"])
    assert first.exit_code == 0, first.stderr
    command = tmp_path / ".claude" / "commands" / "flow" / "summary.md"
    assert json.loads(first.stdout) == {"path": str(tmp_path / ".flow/maestro/config.toml"), "written": True,
                                        "summary_command": str(command)}
    assert command.read_text().startswith("---\ndescription: ")
    # An existing config is kept; an existing command file is refused without --force.
    command.write_text("mine\n")
    again = runner.invoke(main, ["--repo-root", str(tmp_path), "init", "--summary-command"])
    assert again.exit_code == 1 and "summary.md already exists (--force to overwrite)" in again.stderr
    assert command.read_text() == "mine\n"
    forced = runner.invoke(main, ["--repo-root", str(tmp_path), "init", "--summary-command", "--force"])
    assert forced.exit_code == 0 and "wrote " + str(command) in forced.stdout
    (tmp_path / ".flow/maestro/config.toml").write_text("[agent]\n")
    command.unlink()
    kept = runner.invoke(main, ["--repo-root", str(tmp_path), "init", "--summary-command", "--json"])
    assert kept.exit_code == 0 and json.loads(kept.stdout)["written"] is False
    assert (tmp_path / ".flow/maestro/config.toml").read_text() == "[agent]\n" and command.is_file()
