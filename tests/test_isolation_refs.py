"""Branch and folder names: the task-id mapping is valid for git, reversible and documented."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maestro_parallel.isolation.errors import IsolationError
from maestro_parallel.isolation.refs import (
    TaskBranch,
    attempt_branch,
    decode_component,
    encode_component,
    integration_branch,
    integration_worktree_path,
    parse_branch,
    task_branch,
    task_worktree_path,
)


def valid_branch(name: str) -> bool:
    return (
        subprocess.run(["git", "check-ref-format", "--branch", name], check=False, capture_output=True).returncode == 0
    )


@pytest.mark.parametrize(
    ("task_id", "component"),
    [
        ("bd-a3f2", "bd-a3f2"),
        ("proj-auth.1", "proj-auth.1"),
        ("TEST_CASE_2", "TEST_CASE_2"),
        ("proj:auth.1", "proj%3Aauth.1"),
        ("a::b", "a%3A%3Ab"),
        ("x.lock", "x%2Elock"),
        ("a..b", "a.%2Eb"),
        (".hidden", "%2Ehidden"),
        ("end.", "end%2E"),
        ("100%", "100%25"),
        ("a@{b", "a@%7Bb"),
        ("@", "%40"),
        ("sp ace", "sp%20ace"),
        ("é", "é"),
    ],
)
def test_task_ids_map_to_valid_reversible_components(task_id: str, component: str) -> None:
    assert encode_component(task_id) == component
    assert decode_component(component) == task_id
    assert valid_branch(task_branch("g", task_id))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abc.:-_%@{/~", min_size=1, max_size=12))
def test_any_name_round_trips_and_git_accepts_it(text: str) -> None:
    component = encode_component(text)
    assert decode_component(component) == text
    assert valid_branch(f"maestro/g/{component}")


def test_branch_names_and_parse_back() -> None:
    assert task_branch("infra", "proj:a.1") == "maestro/infra/proj%3Aa.1"
    assert integration_branch("infra") == "maestro/integrate/infra"
    assert attempt_branch("infra", "t:1", 2) == "maestro/infra/_attempts/t%3A1/2"
    assert parse_branch("refs/heads/maestro/infra/proj%3Aa.1") == TaskBranch("infra", "proj:a.1")
    assert parse_branch("maestro/integrate/infra") == TaskBranch("infra", None)
    assert parse_branch("maestro/infra/_attempts/t%3A1/2") == TaskBranch("infra", "t:1", 2)
    assert parse_branch("main") is None
    assert parse_branch("maestro/x") is None


def test_integrate_is_a_reserved_group_id() -> None:
    with pytest.raises(IsolationError, match="reserved"):
        task_branch("integrate", "t-1")


def test_worktree_paths(tmp_path: Path) -> None:
    assert task_worktree_path(tmp_path, "g", "proj:a.1") == tmp_path / ".flow/maestro/worktrees/g/proj:a.1"
    assert integration_worktree_path(tmp_path, "g") == tmp_path / ".flow/maestro/worktrees/g/_integration"
    with pytest.raises(ValueError):
        task_worktree_path(tmp_path, "g", "_integration")
