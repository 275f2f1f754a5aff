"""The blocking facade ParallelCoordinator (sync.py, DESIGN §3).

Full runs through the facade are tested with the coordinator; here: its shape,
its refusal inside an event loop, and the reads that need no agent.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from maestro_parallel import AsyncParallelCoordinator, Config, GroupMetadata, ParallelCoordinator, TaskStatus
from maestro_parallel.errors import AsyncContextError, MaestroError, ValidationError
from maestro_parallel.trackers import MemoryTracker

#: DESIGN §3: the methods both classes have, under these names and no others.
ASYNC_METHODS = (
    "execute_parallel_group",
    "refresh_context_before_group",
    "wait_for_group_completion",
    "get_group",
    "list_groups",
)

STORED = {
    "group_id": "infrastructure",
    "group_name": "Parallel Group infrastructure",
    "phase": "post_execution",
    "tasks": ["proj-auth.1"],
    "created_at": "2024-01-01T00:00:00.000Z",
    "started_at": "2024-01-01T00:01:00.000Z",
    "completed_at": "2024-01-01T00:05:00.000Z",
    "status": "completed",
    "results": [
        {"task_id": "proj-auth.1", "subagent": "backend-architect", "status": "completed",
         "started_at": "2024-01-01T00:01:00.000Z", "completed_at": "2024-01-01T00:03:00.000Z",
         "skills_applied": [], "exit_code": 0, "error": None, "attempts": 1, "warnings": [],
         "log_path": ".flow/maestro/parallel_groups/infrastructure/logs/proj-auth.1.log"}
    ],
    "errors": [],
    "pre_group_refresh_completed": True,
}


@pytest.fixture
def empty_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    return root


def facade(root: Path) -> ParallelCoordinator:
    return ParallelCoordinator(root, config=Config(), tracker=MemoryTracker())


def store_group(root: Path, data: dict[str, object]) -> None:
    folder = root / ".flow" / "maestro" / "parallel_groups" / str(data["group_id"])
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(data))


# ------------------------------------------------------------------ shape


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_the_facade_has_each_method_blocking_with_the_async_signature(name: str) -> None:
    blocking = getattr(ParallelCoordinator, name)
    coroutine = getattr(AsyncParallelCoordinator, name)
    assert inspect.iscoroutinefunction(coroutine)
    assert callable(blocking) and not inspect.iscoroutinefunction(blocking)
    assert list(inspect.signature(blocking).parameters.values()) == list(
        inspect.signature(coroutine).parameters.values()
    )


def test_detect_groups_is_synchronous_on_both_classes(empty_repo: Path) -> None:
    tasks = [
        {"id": "t-1", "description": "[P:Group-infra] set up the database"},
        {"id": "t-2", "description": "write docs"},
        {"id": "t-3", "description": "[P:Group-infra] add the api"},
    ]
    expected = {"infra": [tasks[0], tasks[2]], "_sequential": [tasks[1]]}
    for cls in (ParallelCoordinator, AsyncParallelCoordinator):
        assert not inspect.iscoroutinefunction(cls.detect_groups)
        groups = cls(empty_repo, config=Config(), tracker=MemoryTracker()).detect_groups(tasks)
        assert {key: [t["id"] for t in value] for key, value in groups.items()} == {
            key: [t["id"] for t in value] for key, value in expected.items()
        }


@pytest.mark.parametrize("alias", ["refresh_context", "wait_for_completion"])
def test_the_seed_diagram_aliases_do_not_exist(alias: str) -> None:
    assert not hasattr(ParallelCoordinator, alias)
    assert not hasattr(AsyncParallelCoordinator, alias)


@pytest.mark.parametrize("helper", ["_extract_relevant_files", "_run_test_suite", "_close_beads_task"])
def test_the_facade_keeps_the_helpers_of_the_original_examples(helper: str) -> None:
    assert callable(getattr(ParallelCoordinator, helper))


def test_the_facade_wraps_an_async_coordinator_with_the_same_settings(empty_repo: Path) -> None:
    config = Config()
    tracker = MemoryTracker()
    coordinator = ParallelCoordinator(empty_repo, config=config, tracker=tracker)
    assert isinstance(coordinator.coordinator, AsyncParallelCoordinator)
    assert coordinator.repo_root == empty_repo.resolve()
    assert coordinator.config is config
    assert coordinator.tracker is tracker


@pytest.mark.parametrize(
    ("description", "files"),
    [
        ("Update src/components/Login.tsx and package.json", ["src/components/Login.tsx", "package.json"]),
        ("- file: api/routes.py\n- path: `docs/api.md`", ["api/routes.py", "docs/api.md"]),
        ("Read https://x.io/a.js and /etc/passwd.txt and ../up.py", []),
        ("Needs Python 3.11, e.g. v1.2", []),
    ],
)
def test_extract_relevant_files_helper(empty_repo: Path, description: str, files: list[str]) -> None:
    assert facade(empty_repo)._extract_relevant_files(description) == files


# ------------------------------------------------------------------ blocking reads


def test_an_empty_repository_has_no_groups(empty_repo: Path) -> None:
    coordinator = facade(empty_repo)
    assert coordinator.list_groups() == []
    assert coordinator.list_groups("completed") == []
    assert coordinator.get_group("infra") is None
    assert coordinator.wait_for_group_completion("infra", timeout_seconds=0.1) is False
    assert not (empty_repo / ".flow").exists(), "reading writes nothing"


def test_a_stored_group_is_read_through_the_facade(empty_repo: Path) -> None:
    store_group(empty_repo, STORED)
    store_group(empty_repo, {**STORED, "group_id": "auth", "group_name": "Parallel Group auth", "status": "failed",
                             "created_at": "2024-02-01T00:00:00.000Z", "errors": ["proj-auth.1: exit code 1"]})
    coordinator = facade(empty_repo)
    group = coordinator.get_group("infrastructure")
    assert isinstance(group, GroupMetadata)
    assert group.to_dict() == STORED
    assert [g.group_id for g in coordinator.list_groups()] == ["auth", "infrastructure"], "newest first"
    assert [g.group_id for g in coordinator.list_groups(TaskStatus.COMPLETED)] == ["infrastructure"]
    assert [g.group_id for g in coordinator.list_groups("failed")] == ["auth"]
    assert coordinator.wait_for_group_completion("infrastructure", timeout_seconds=5) is True
    assert coordinator.wait_for_group_completion("auth", timeout_seconds=5) is False


@pytest.mark.parametrize("group_id", ["../x", "", "a.b", "x" * 65])
def test_an_invalid_group_id_is_a_validation_error(empty_repo: Path, group_id: str) -> None:
    with pytest.raises(ValidationError):
        facade(empty_repo).get_group(group_id)


@pytest.mark.parametrize("tasks", [[], [{"id": "a"}, {"id": "a"}], [{"title": "no id"}], [{"id": "../evil"}]])
def test_an_invalid_group_is_refused_and_nothing_is_written(empty_repo: Path, tasks: list[dict[str, str]]) -> None:
    with pytest.raises(ValueError) as info:
        facade(empty_repo).execute_parallel_group(tasks, "infra")
    assert isinstance(info.value, MaestroError)
    assert not (empty_repo / ".flow").exists()


# ------------------------------------------------------------------ inside an event loop


async def test_calling_the_facade_inside_an_event_loop_says_to_use_the_async_class(empty_repo: Path) -> None:
    coordinator = facade(empty_repo)
    with pytest.raises(AsyncContextError) as info:
        coordinator.get_group("x")
    assert "AsyncParallelCoordinator" in str(info.value)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, MaestroError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.list_groups(),
        lambda c: c.wait_for_group_completion("x", 1),
        lambda c: c.refresh_context_before_group(),
        lambda c: c.execute_parallel_group([{"id": "a", "description": "[P:Group-x] y"}], "x"),
        lambda c: c._run_test_suite(),
        lambda c: c._close_beads_task("a"),
    ],
    ids=["list_groups", "wait", "refresh", "execute", "run_test_suite", "close_task"],
)
async def test_every_blocking_method_refuses_inside_an_event_loop(empty_repo: Path, call: object) -> None:
    coordinator = facade(empty_repo)
    with pytest.raises(AsyncContextError, match="AsyncParallelCoordinator"):
        call(coordinator)  # type: ignore[operator]
    assert not (empty_repo / ".flow").exists(), "nothing ran"


async def test_the_facade_works_from_a_worker_thread_of_a_running_loop(empty_repo: Path) -> None:
    store_group(empty_repo, STORED)
    coordinator = facade(empty_repo)
    groups = await anyio.to_thread.run_sync(coordinator.list_groups)
    assert [g.group_id for g in groups] == ["infrastructure"]
    assert coordinator.detect_groups([]) == {}, "the pure method works anywhere"


async def test_the_async_class_answers_the_same_inside_the_loop(empty_repo: Path) -> None:
    store_group(empty_repo, STORED)
    coordinator = AsyncParallelCoordinator(empty_repo, config=Config(), tracker=MemoryTracker())
    group = await coordinator.get_group("infrastructure")
    assert group is not None and group.to_dict() == STORED
    assert await coordinator.get_group("missing") is None
