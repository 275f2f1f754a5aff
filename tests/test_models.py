"""The data models: enums, timestamps and the dict round trip of DESIGN §3 and §5."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from maestro_parallel.errors import MaestroError, ValidationError
from maestro_parallel.models import (
    GroupMetadata,
    GroupPhase,
    TaskMetadata,
    TaskResult,
    TaskStatus,
    format_timestamp,
    new_result,
    utc_now,
)

#: The example metadata.json of DESIGN §5, verbatim.
DESIGN_EXAMPLE = """
{
  "group_id": "infrastructure",
  "group_name": "Parallel Group infrastructure",
  "phase": "post_execution",
  "tasks": ["proj-auth.1", "proj-auth.2"],
  "created_at": "2024-01-01T00:00:00.000Z",
  "started_at": "2024-01-01T00:01:00.000Z",
  "completed_at": "2024-01-01T00:05:00.000Z",
  "status": "completed",
  "results": [
    {"task_id": "proj-auth.1", "subagent": "backend-architect", "status": "completed",
     "started_at": "2024-01-01T00:01:00.000Z", "completed_at": "2024-01-01T00:03:00.000Z",
     "skills_applied": [], "exit_code": 0, "error": null, "attempts": 1, "warnings": [],
     "log_path": ".flow/maestro/parallel_groups/infrastructure/logs/proj-auth.1.log"}
  ],
  "errors": [],
  "pre_group_refresh_completed": true
}
"""

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

# ------------------------------------------------------------------ enums


def test_group_phase_has_exactly_the_four_phases_in_order() -> None:
    assert [p.value for p in GroupPhase] == [
        "pre_execution",
        "concurrent_execution",
        "coordination",
        "post_execution",
    ]


def test_task_status_has_exactly_the_five_statuses() -> None:
    assert [s.value for s in TaskStatus] == ["pending", "in_progress", "completed", "failed", "blocked"]


@pytest.mark.parametrize("member", [*GroupPhase, *TaskStatus])
def test_enum_members_are_strings_equal_to_their_value(member: GroupPhase | TaskStatus) -> None:
    assert isinstance(member, str)
    assert member == member.value
    assert str(member) == member.value
    assert f"{member}" == member.value
    assert json.dumps(member) == json.dumps(member.value)


@pytest.mark.parametrize("value", ["halted", "interrupted", "stale", "running", "PENDING", ""])
def test_task_status_rejects_values_outside_the_contract(value: str) -> None:
    with pytest.raises(ValueError):
        TaskStatus(value)


# ------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC), "2026-11-28T12:00:00.123Z"),
        (datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC), "2026-11-28T12:00:00.000Z"),
        (datetime(2026, 11, 28, 12, 0, 0, 999999, tzinfo=UTC), "2026-11-28T12:00:00.999Z"),
        (datetime(2024, 1, 1, 2, 30, 5, 7000, tzinfo=timezone(timedelta(hours=2, minutes=30))), "2024-01-01T00:00:05.007Z"),
        (datetime(2024, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5))), "2023-12-31T20:00:00.000Z"),
        (datetime(2023, 12, 31, 23, 0, 0, tzinfo=timezone(timedelta(hours=-2))), "2024-01-01T01:00:00.000Z"),
    ],
)
def test_format_timestamp(moment: datetime, expected: str) -> None:
    assert format_timestamp(moment) == expected


def test_utc_now_is_iso_8601_utc_with_milliseconds_and_z() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    stamp = utc_now()
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert TIMESTAMP.fullmatch(stamp), stamp
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= parsed <= after


def test_a_new_group_gets_its_name_and_a_creation_timestamp() -> None:
    group = GroupMetadata(group_id="auth-flow")
    assert group.group_name == "Parallel Group auth-flow"
    assert TIMESTAMP.fullmatch(group.created_at)
    assert group.phase is GroupPhase.PRE_EXECUTION
    assert group.status is TaskStatus.PENDING
    assert (group.started_at, group.completed_at) == (None, None)
    assert (group.tasks, group.results, group.errors) == ([], [], [])
    assert group.pre_group_refresh_completed is False


def test_an_explicit_group_name_is_kept() -> None:
    assert GroupMetadata(group_id="infra", group_name="Infra work").group_name == "Infra work"


def test_task_metadata_defaults() -> None:
    task = TaskMetadata(task_id="t-1")
    assert task.priority == 2
    assert task.status is TaskStatus.PENDING
    assert task.subagent_type is None
    assert (task.fallback_agents, task.applicable_skills, task.relevant_files, task.dependencies) == ([], [], [], [])


def test_new_result_has_every_key_of_the_design_example() -> None:
    example = json.loads(DESIGN_EXAMPLE)["results"][0]
    result = new_result("t-1", log_path=".flow/maestro/parallel_groups/g/logs/t-1.log")
    assert set(result) == set(example)
    assert result["status"] == "pending"
    assert result["attempts"] == 0
    assert result["warnings"] == [] and result["skills_applied"] == []


# ------------------------------------------------------------------ round trips


def test_the_design_example_round_trips_exactly() -> None:
    data = json.loads(DESIGN_EXAMPLE)
    group = GroupMetadata.from_dict(data)
    assert group.phase is GroupPhase.POST_EXECUTION
    assert group.status is TaskStatus.COMPLETED
    assert group.tasks == ["proj-auth.1", "proj-auth.2"]
    assert group.pre_group_refresh_completed is True
    assert group.to_dict() == data
    assert list(group.to_dict()) == list(data), "keys keep the documented order"
    assert json.loads(json.dumps(group.to_dict())) == data


def test_a_full_group_round_trips() -> None:
    group = GroupMetadata(
        group_id="TEST_CASE_2",
        phase=GroupPhase.COORDINATION,
        tasks=["a", "b"],
        created_at="2026-11-28T12:00:00.123Z",
        started_at="2026-11-28T12:00:01.000Z",
        status=TaskStatus.IN_PROGRESS,
        results=[new_result("a", log_path="logs/a.log"), new_result("b", log_path="logs/b.log")],
        errors=["a: exit code 7: boom"],
        pre_group_refresh_completed=True,
    )
    again = GroupMetadata.from_dict(json.loads(json.dumps(group.to_dict())))
    assert again == group


def test_extra_result_keys_survive_a_round_trip() -> None:
    data = json.loads(DESIGN_EXAMPLE)
    data["results"][0].update(
        {"pid": 4242, "pgid": 4242, "closed": True, "session_id": "1f3c", "cost_usd": 0.0123, "num_turns": 3,
         "skills_missing": ["deploy"], "usage": {"input_tokens": 10, "output_tokens": 20}}
    )
    assert GroupMetadata.from_dict(data).to_dict()["results"] == data["results"]


def test_to_dict_is_a_copy() -> None:
    group = GroupMetadata.from_dict(json.loads(DESIGN_EXAMPLE))
    exported = group.to_dict()
    exported["results"][0]["status"] = "failed"
    exported["tasks"].append("x")
    exported["errors"].append("x: y")
    assert group.results[0]["status"] == "completed"
    assert group.tasks == ["proj-auth.1", "proj-auth.2"]
    assert group.errors == []


def test_from_dict_fills_a_missing_group_name() -> None:
    data = json.loads(DESIGN_EXAMPLE)
    del data["group_name"]
    assert GroupMetadata.from_dict(data).group_name == "Parallel Group infrastructure"


def test_a_task_round_trips() -> None:
    task = TaskMetadata(
        task_id="proj-auth.1",
        title="Add login endpoint",
        description="[P:Group-auth] - file: src/api/login.py",
        subagent_type="backend-architect",
        fallback_agents=["general-purpose"],
        applicable_skills=["api-design"],
        relevant_files=["src/api/login.py"],
        dependencies=["proj-auth.0"],
        priority=0,
        status=TaskStatus.BLOCKED,
    )
    data = task.to_dict()
    assert data["status"] == "blocked"
    assert json.loads(json.dumps(data)) == data
    assert TaskMetadata.from_dict(data) == task


def test_task_from_dict_fills_defaults() -> None:
    task = TaskMetadata.from_dict({"task_id": "t-1"})
    assert task == TaskMetadata(task_id="t-1")


# ------------------------------------------------------------------ rejected input


def _group(**changes: Any) -> dict[str, Any]:
    data = json.loads(DESIGN_EXAMPLE)
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (_group(group_id=7), "group_id"),
        ({k: v for k, v in _group().items() if k != "group_id"}, "group_id"),
        (_group(created_at=None), "created_at"),
        (_group(started_at=1704067200), "started_at"),
        (_group(completed_at=["2024"]), "completed_at"),
        (_group(phase="halted"), "phase"),
        (_group(phase=3), "phase"),
        (_group(status="stale"), "status"),
        (_group(status=None), "status"),
        (_group(tasks="proj-auth.1"), "tasks"),
        (_group(tasks=["a", 2]), "tasks"),
        (_group(results={"task_id": "a"}), "results"),
        (_group(results=[{"status": "completed"}]), "results"),
        (_group(results=["a"]), "results"),
        (_group(errors="boom"), "errors"),
        (_group(errors=[None]), "errors"),
        (_group(pre_group_refresh_completed="yes"), "pre_group_refresh_completed"),
    ],
)
def test_group_from_dict_rejects_wrong_types_naming_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError, match=f"'{key}'") as info:
        GroupMetadata.from_dict(data)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MaestroError)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"title": "no id"}, "task_id"),
        ({"task_id": 12}, "task_id"),
        ({"task_id": "t", "title": None}, "title"),
        ({"task_id": "t", "description": ["x"]}, "description"),
        ({"task_id": "t", "subagent_type": 1}, "subagent_type"),
        ({"task_id": "t", "fallback_agents": "general-purpose"}, "fallback_agents"),
        ({"task_id": "t", "applicable_skills": [1]}, "applicable_skills"),
        ({"task_id": "t", "relevant_files": None}, "relevant_files"),
        ({"task_id": "t", "dependencies": [{"id": "x"}]}, "dependencies"),
        ({"task_id": "t", "priority": 5}, "priority"),
        ({"task_id": "t", "priority": -1}, "priority"),
        ({"task_id": "t", "priority": "high"}, "priority"),
        ({"task_id": "t", "priority": True}, "priority"),
        ({"task_id": "t", "status": "open"}, "status"),
    ],
)
def test_task_from_dict_rejects_wrong_types_naming_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError, match=f"'{key}'"):
        TaskMetadata.from_dict(data)


@pytest.mark.parametrize("data", [None, [], "metadata", 3])
def test_from_dict_rejects_what_is_not_an_object(data: Any) -> None:
    with pytest.raises(ValidationError, match="must be an object"):
        GroupMetadata.from_dict(data)
    with pytest.raises(ValidationError, match="must be an object"):
        TaskMetadata.from_dict(data)


# ------------------------------------------------------------------ result_for


@pytest.mark.parametrize(
    ("task_id", "expected_status"),
    [("a", "completed"), ("b", "failed"), ("c", None), ("", None)],
)
def test_result_for(task_id: str, expected_status: str | None) -> None:
    group = GroupMetadata(
        group_id="g",
        results=[{**new_result("a", log_path="a"), "status": "completed"},
                 {**new_result("b", log_path="b"), "status": "failed"}],
    )
    result = group.result_for(task_id)
    if expected_status is None:
        assert result is None
    else:
        assert result is not None and result["task_id"] == task_id and result["status"] == expected_status


def test_result_for_returns_the_live_entry() -> None:
    group = GroupMetadata(group_id="g", results=[new_result("a", log_path="a")])
    result = group.result_for("a")
    assert result is not None
    result["status"] = "completed"
    assert sum(r["status"] == "completed" for r in group.results) == 1


# --------------------------------------------------------------------------- TaskResult

#: A result exactly as the snapshot documents it, plus added keys.
DOCUMENTED_RESULT = {
    "task_id": "proj-auth.1", "subagent": "backend-architect", "status": "completed",
    "started_at": "2024-01-01T00:01:00.000Z", "completed_at": "2024-01-01T00:03:00.000Z",
    "skills_applied": [], "exit_code": 0, "error": None, "attempts": 1, "warnings": [],
    "log_path": ".flow/maestro/parallel_groups/infrastructure/logs/proj-auth.1.log",
    "pid": 4242, "closed": True, "cost_usd": 0.0123,
}


def test_a_task_result_round_trips_to_exactly_the_snapshot_json() -> None:
    result = TaskResult.from_dict(DOCUMENTED_RESULT)
    assert result.status is TaskStatus.COMPLETED and result.extra == {"pid": 4242, "closed": True, "cost_usd": 0.0123}
    assert json.dumps(result.to_dict()) == json.dumps(DOCUMENTED_RESULT)  # same keys, same order


def test_a_new_result_is_a_pending_task_result() -> None:
    fresh = new_result("t", log_path="logs/t.log")
    assert fresh == TaskResult("t", log_path="logs/t.log").to_dict()
    assert list(fresh) == ["task_id", "subagent", "status", "started_at", "completed_at", "skills_applied",
                           "exit_code", "error", "attempts", "warnings", "log_path"]
    assert (fresh["status"], fresh["attempts"]) == ("pending", 0)


def test_a_task_result_with_a_bad_status_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a task status"):
        TaskResult.from_dict({**DOCUMENTED_RESULT, "status": "done"})


def test_the_typed_view_of_a_group_follows_its_results() -> None:
    meta = GroupMetadata(group_id="g", tasks=["proj-auth.1"])
    meta.results = [dict(DOCUMENTED_RESULT)]
    [typed] = meta.task_results()
    assert typed.task_id == "proj-auth.1" and typed.to_dict() == DOCUMENTED_RESULT
