"""The merge queue in real repositories: order, conflicts, the gate, bisection, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from isolation_support import commit_file, git, hermetic_git, make_repo, state_of  # noqa: F401

from maestro_parallel.isolation.queue import (
    GateResult,
    MergeStrategy,
    QueueItem,
    Verdict,
    find_culprits,
    merge_order,
    merged_heads,
    run_merge_queue,
)
from maestro_parallel.isolation.workspace import RepoState, create_worktree, resolve_base


async def tasks_with(
    repo: Path, edits: dict[str, dict[str, str]], group: str = "g"
) -> tuple[RepoState, list[QueueItem]]:
    """One committed task branch per entry: task id -> files it writes."""
    state = await state_of(repo)
    sha = (await resolve_base(state)).sha
    items = []
    for task_id, files in edits.items():
        ws = await create_worktree(state, group, task_id, sha)
        for name, text in files.items():
            commit_file(ws.path, name, text, f"{task_id} writes {name}")
        items.append(QueueItem(task_id, ws.branch, f"title of {task_id}"))
    return state, items


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


def test_merged_heads_reads_trailers() -> None:
    log = "Merge t-1: x\n\nMaestro-Group: g\nMaestro-Task: t-1\nMaestro-Head: abc\n\nother commit\n\nMaestro-Task: t:2\nMaestro-Head: def\n"
    assert merged_heads(log) == {"t-1": "abc", "t:2": "def"}


def test_merge_order_puts_predicted_clean_first() -> None:
    items = [QueueItem(t, f"b/{t}") for t in ("a", "b", "c", "d")]
    assert [i.task_id for i in merge_order(items, {"a": False, "b": True, "c": False, "d": True})] == [
        "b",
        "d",
        "a",
        "c",
    ]


async def test_find_culprits_by_bisection() -> None:
    items = [QueueItem(f"t{i}", f"b{i}") for i in range(8)]
    bad = {"t2", "t6"}
    probes: list[list[str]] = []

    async def probe(subset: list[QueueItem]) -> bool:
        probes.append([i.task_id for i in subset])
        return not bad & {i.task_id for i in subset}

    culprits, green = await find_culprits(items, probe)
    assert [c.task_id for c in culprits] == ["t2", "t6"] and green
    assert len(probes) <= 10  # log2 rounds, not one probe per item per culprit
    assert probes[-1] == ["t0", "t1", "t3", "t4", "t5", "t7"]  # the rebuild without culprits, tested once more


async def test_find_culprits_blames_nobody_when_the_target_is_red() -> None:
    async def probe(subset: list[QueueItem]) -> bool:
        return False

    assert await find_culprits([QueueItem("a", "a"), QueueItem("b", "b")], probe) == ([], False)


async def test_clean_branches_merge_one_commit_per_task(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(
        repo, {"t-1": {"a.py": "a"}, "t:2": {"b.py": "b", "c.py": "c"}, "t-3": {"d.py": "d"}}
    )
    record = Recorder()
    result = await run_merge_queue(state, "g", items, target="main", on_event=record)
    assert result.integration_branch == "maestro/integrate/g"
    assert [o.verdict for o in result.outcomes.values()] == [Verdict.MERGED] * 3
    assert result.gate is GateResult.NO_SUITE  # no gate given
    assert result.tip == git(repo, "rev-parse", "maestro/integrate/g")
    merges = git(repo, "log", "--merges", "--format=%s", "maestro/integrate/g").splitlines()
    assert merges == ["Merge t-3: title of t-3", "Merge t:2: title of t:2", "Merge t-1: title of t-1"]
    assert git(repo, "log", "-1", "--format=%(trailers:key=Maestro-Task,valueonly)", "maestro/integrate/g") == "t-3"
    assert [e["task_id"] for e in record.named("task_merged")] == ["t-1", "t:2", "t-3"]
    assert sorted(git(result.path, "ls-files").splitlines()) == ["README.md", "a.py", "b.py", "c.py", "d.py"]
    assert git(repo, "rev-parse", "main") == result.target_sha  # the target itself is untouched
    assert git(repo, "status", "--porcelain") == ""


async def test_squash_makes_one_commit_per_task(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(repo, {"t-1": {"a.py": "a", "a2.py": "a2"}, "t-2": {"b.py": "b"}})
    result = await run_merge_queue(state, "g", items, target="main", strategy="squash")
    assert result.merged == ["t-1", "t-2"]
    subjects = git(repo, "log", "--format=%s", f"{result.target_sha}..maestro/integrate/g").splitlines()
    assert subjects == ["t-2: title of t-2", "t-1: title of t-1"]
    assert git(repo, "log", "--merges", "--format=%s", "maestro/integrate/g") == ""


async def test_a_conflict_fails_that_task_only_and_is_merged_last(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"shared.py": "base\n"})
    state, items = await tasks_with(repo, {"t-1": {"shared.py": "from t-1\n"}, "t-2": {"other.py": "ok\n"}})
    commit_file(repo, "shared.py", "moved on main\n")  # the target moved since base_sha: t-1 now conflicts
    record = Recorder()
    result = await run_merge_queue(state, "g", items, target="main", on_event=record)
    assert [e["task_id"] for e in record.named("task_merged")] == ["t-2"]
    assert record.named("conflict_predicted") == [
        {"event": "conflict_predicted", "files": ["shared.py"], "tasks": ["t-1"]}
    ]
    assert [e["event"] for e in record.events] == ["conflict_predicted", "task_merged", "merge_conflict"]
    conflict = result.outcomes["t-1"]
    assert conflict.verdict is Verdict.CONFLICT and conflict.files == ["shared.py"]
    assert conflict.error == "merge conflict in shared.py"
    assert record.named("merge_conflict") == [
        {"event": "merge_conflict", "task_id": "t-1", "branch": "maestro/g/t-1", "files": ["shared.py"]}
    ]
    assert result.target_sha == git(repo, "rev-parse", "main")  # started from the target's current tip
    assert git(result.path, "status", "--porcelain") == ""  # the failed merge was aborted
    assert (result.path / "shared.py").read_text() == "moved on main\n"
    assert git(repo, "show", "maestro/g/t-1:shared.py") == "from t-1"  # its branch and work are kept


async def test_running_the_queue_again_merges_nothing_twice(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(repo, {"t-1": {"a.py": "a"}, "t-2": {"b.py": "b"}})
    first = await run_merge_queue(state, "g", items[:1], target="main")
    # a crash in the middle of the next merge leaves the integration worktree mid-merge
    git(first.path, "merge", "--no-ff", "--no-commit", "maestro/g/t-2")
    assert (Path(git(first.path, "rev-parse", "--absolute-git-dir")) / "MERGE_HEAD").exists()
    record = Recorder()
    second = await run_merge_queue(state, "g", items, target="main", on_event=record)
    assert second.merged == ["t-1", "t-2"]
    assert [e["task_id"] for e in record.named("task_merged")] == ["t-2"]
    assert git(repo, "log", "--merges", "--format=%s", "maestro/integrate/g").splitlines() == [
        "Merge t-2: title of t-2",
        "Merge t-1: title of t-1",
    ]
    third = await run_merge_queue(state, "g", items, target="main", strategy="squash")
    assert third.tip == second.tip


async def test_a_task_that_changed_nothing_counts_as_merged(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(repo, {"t-1": {}, "t-2": {"b.py": "b"}})
    result = await run_merge_queue(state, "g", items, target="main")
    assert result.merged == ["t-1", "t-2"]


async def test_the_gate_runs_once_on_everything_merged(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(repo, {"t-1": {"a.py": "a"}, "t-2": {"b.py": "b"}})
    seen: list[list[str]] = []

    async def run_tests(cwd: Path) -> bool:
        seen.append(sorted(p.name for p in cwd.iterdir() if p.name != ".git"))
        return True

    result = await run_merge_queue(state, "g", items, target="main", run_tests=run_tests)
    assert result.gate is GateResult.PASSED and seen == [["README.md", "a.py", "b.py"]]

    async def no_suite(cwd: Path) -> None:
        return None

    assert (await run_merge_queue(state, "g", items, target="main", run_tests=no_suite)).gate is GateResult.NO_SUITE


async def test_a_red_gate_is_bisected_to_its_culprits_and_the_rest_rebuilt(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    edits = {f"t-{i}": {f"f{i}.py": "ok\n"} for i in range(1, 6)}
    edits["t-2"] = {"f2.py": "BROKEN\n"}
    edits["t-5"] = {"f5.py": "BROKEN\n"}
    state, items = await tasks_with(repo, edits)
    runs = 0

    async def run_tests(cwd: Path) -> bool:
        nonlocal runs
        runs += 1
        return not any("BROKEN" in p.read_text() for p in cwd.glob("f*.py"))

    record = Recorder()
    result = await run_merge_queue(state, "g", items, target="main", run_tests=run_tests, on_event=record)
    assert result.gate is GateResult.PASSED
    assert {t: o.verdict for t, o in result.outcomes.items()} == {
        "t-1": Verdict.MERGED, "t-2": Verdict.CULPRIT, "t-3": Verdict.MERGED, "t-4": Verdict.MERGED, "t-5": Verdict.CULPRIT,
    }  # fmt: skip
    assert result.outcomes["t-2"].error == "test suite fails with this task merged"
    assert sorted(git(repo, "ls-tree", "--name-only", "maestro/integrate/g").splitlines()) == [
        "README.md",
        "f1.py",
        "f3.py",
        "f4.py",
    ]
    steps = record.named("bisect_step")
    assert steps and steps[-1] == {"event": "bisect_step", "tasks": ["t-1", "t-3", "t-4"], "passed": True}
    assert runs == 1 + len(steps)
    assert git(repo, "show", "maestro/g/t-2:f2.py") == "BROKEN"  # a culprit's branch is kept


async def test_a_target_that_is_red_by_itself_blames_nobody(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(repo, {"t-1": {"a.py": "a"}, "t-2": {"b.py": "b"}})

    async def always_red(cwd: Path) -> bool:
        return False

    result = await run_merge_queue(state, "g", items, target="main", run_tests=always_red)
    assert result.gate is GateResult.FAILED and result.gate_error == "the test suite fails on the target itself"
    assert result.merged == ["t-1", "t-2"]
    assert sorted(git(repo, "ls-tree", "--name-only", "maestro/integrate/g").splitlines()) == [
        "README.md",
        "a.py",
        "b.py",
    ]


@pytest.mark.parametrize("strategy", [MergeStrategy.MERGE, MergeStrategy.SQUASH])
async def test_failing_hooks_do_not_block_the_queue(tmp_path: Path, strategy: MergeStrategy) -> None:
    repo = make_repo(tmp_path / "r")
    state, items = await tasks_with(repo, {"t-1": {"a.py": "a"}})
    hooks = repo / ".git" / "hooks"
    for name in ("pre-merge-commit", "pre-commit", "prepare-commit-msg", "commit-msg"):
        (hooks / name).write_text("#!/bin/sh\nexit 1\n")
        (hooks / name).chmod(0o755)
    result = await run_merge_queue(state, "g", items, target="main", strategy=strategy)
    assert result.merged == ["t-1"]
