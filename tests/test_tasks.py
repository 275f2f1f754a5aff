"""The tasks-file schema (DESIGN §3 "The tasks file", §9, §10): plain sync, table-driven."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maestro_parallel.errors import ValidationError
from maestro_parallel.markers import extract_relevant_files
from maestro_parallel.models import TaskMetadata, TaskStatus
from maestro_parallel.tasks import (
    ACTIVE_STATUSES,
    BLOCKING_DEPENDENCY_TYPES,
    DONE_STATUSES,
    TaskRecord,
    coerce_task,
    loads_tasks,
    parse_task,
    parse_tasks,
)

SAMPLES = Path(__file__).parents[2] / "shared" / "beads-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="beads samples not present")


def one(**fields: Any) -> TaskRecord:
    return parse_task({"id": "t-1", **fields}, index=0)


def error_of(fields: dict[str, Any], *, index: int = 0, source: str = "tasks file") -> str:
    with pytest.raises(ValidationError) as info:
        parse_task(fields, index=index, source=source)
    message = str(info.value)
    assert "\n" not in message and "\0" not in message
    return message


# --------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert {"blocks", "conditional-blocks", "waits-for"} == BLOCKING_DEPENDENCY_TYPES
    assert {"closed", "completed"} == DONE_STATUSES
    assert {"open", "in_progress", "pending"} == ACTIVE_STATUSES


# --------------------------------------------------------------------------- defaults


def test_defaults_of_a_minimal_task() -> None:
    obj = {"id": "t-1"}
    record = parse_task(obj, index=0)
    assert record.task_id == "t-1"
    assert record.metadata == TaskMetadata(task_id="t-1")
    assert record.metadata.priority == 2 and record.metadata.status is TaskStatus.PENDING
    assert record.tracker_status == "open"
    assert record.parent is None
    assert record.issue_type == "task"
    assert record.ephemeral is False
    assert record.assignee is None
    assert record.raw is obj
    assert record.takes_part and not record.done


@pytest.mark.parametrize(
    ("key", "attribute", "default"),
    [
        ("title", "metadata.title", ""),
        ("description", "metadata.description", ""),
        ("status", "tracker_status", "open"),
        ("priority", "metadata.priority", 2),
        ("dependencies", "metadata.dependencies", []),
        ("metadata", "metadata.subagent_type", None),
        ("subagent_type", "metadata.subagent_type", None),
        ("fallback_agents", "metadata.fallback_agents", []),
        ("applicable_skills", "metadata.applicable_skills", []),
        ("parent", "parent", None),
        ("issue_type", "issue_type", "task"),
        ("ephemeral", "ephemeral", False),
        ("assignee", "assignee", None),
    ],
)
def test_null_means_default(key: str, attribute: str, default: object) -> None:
    value: Any = one(**{key: None})
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == default


def test_every_key_is_read() -> None:
    record = one(
        title="Add login",
        description="Edit src/app.py please",
        status="in_progress",
        priority=0,
        dependencies=["t-0"],
        metadata={"subagent_type": "frontend-developer", "fallback_agents": ["a"], "applicable_skills": ["s"]},
        parent="epic-1",
        issue_type="feature",
        ephemeral=False,
        assignee="me",
    )
    assert record.metadata == TaskMetadata(
        task_id="t-1",
        title="Add login",
        description="Edit src/app.py please",
        subagent_type="frontend-developer",
        fallback_agents=["a"],
        applicable_skills=["s"],
        relevant_files=extract_relevant_files("Edit src/app.py please"),
        dependencies=["t-0"],
        priority=0,
        status=TaskStatus.IN_PROGRESS,
    )
    assert (record.tracker_status, record.parent, record.issue_type, record.assignee) == (
        "in_progress",
        "epic-1",
        "feature",
        "me",
    )


def test_relevant_files_come_from_the_description_only() -> None:
    record = one(title="touch a/title.py", description="Change `src/components/Login.tsx` and package.json.")
    assert record.metadata.relevant_files == extract_relevant_files(record.metadata.description)
    assert "src/components/Login.tsx" in record.metadata.relevant_files
    assert "a/title.py" not in record.metadata.relevant_files


def test_unknown_keys_are_kept_in_raw_and_ignored() -> None:
    obj = {"id": "t-1", "labels": ["x"], "owner": "o", "metadata": {"phase": "2", "extra": [1]}, "claim_fence": 1}
    record = parse_task(obj, index=0)
    assert record.raw == obj and record.raw is obj
    assert record.metadata.subagent_type is None


# --------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("status", "expected", "done", "takes_part"),
    [
        ("open", TaskStatus.PENDING, False, True),
        ("pending", TaskStatus.PENDING, False, True),
        ("in_progress", TaskStatus.IN_PROGRESS, False, True),
        ("closed", TaskStatus.COMPLETED, True, False),
        ("completed", TaskStatus.COMPLETED, True, False),
        ("blocked", TaskStatus.BLOCKED, False, False),
        ("deferred", TaskStatus.PENDING, False, False),
        ("pinned", TaskStatus.PENDING, False, False),
        ("hooked", TaskStatus.PENDING, False, False),
    ],
)
def test_status_mapping(status: str, expected: TaskStatus, done: bool, takes_part: bool) -> None:
    record = one(status=status)
    assert record.metadata.status is expected
    assert record.tracker_status == status
    assert (record.done, record.takes_part) == (done, takes_part)


@pytest.mark.parametrize(
    ("fields", "takes_part"),
    [
        ({"issue_type": "task"}, True),
        ({"issue_type": "bug"}, True),
        ({"issue_type": "chore"}, True),
        ({"issue_type": "epic"}, False),
        ({"ephemeral": True}, False),
        ({"ephemeral": False}, True),
        ({"status": "in_progress", "issue_type": "epic"}, False),
    ],
)
def test_epics_and_wisps_do_not_take_part(fields: dict[str, Any], takes_part: bool) -> None:
    assert one(**fields).takes_part is takes_part


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"id": "a"}, "a"),
        ({"task_id": "a"}, "a"),
        ({"id": "a", "task_id": "a"}, "a"),
        ({"id": None, "task_id": "a"}, "a"),
        ({"id": "a", "task_id": None}, "a"),
    ],
)
def test_id_or_task_id(fields: dict[str, Any], expected: str) -> None:
    assert parse_task(fields, index=0).task_id == expected


@pytest.mark.parametrize(
    "task_id", ["proj-auth.1", "bd-a3f2", "bd-hlsw.4", "a:b", "A_1", "x" * 128, "0", "bd-wisp-t7gxl"]
)
def test_safe_ids(task_id: str) -> None:
    assert one(id=task_id).task_id == task_id


@pytest.mark.parametrize(
    "task_id",
    ["../x", "/abs", "a..b", "--help", "-x", ".x", "_x", "", "a b", "a/b", "x" * 129, "a\nb", "a\0b", "é"],
)
@pytest.mark.parametrize("key", ["id", "task_id"])
def test_unsafe_ids_are_errors(task_id: str, key: str) -> None:
    message = error_of({key: task_id}, index=2)
    assert message.startswith(f"tasks file: task #3: key {key!r} ")
    assert repr(task_id)[:40] in message


@pytest.mark.parametrize("value", [3, ["a"], {"a": 1}, True])
def test_id_of_a_wrong_type(value: object) -> None:
    assert "key 'id' must be a non-empty string" in error_of({"id": value})


def test_missing_id() -> None:
    assert error_of({"title": "x"}, index=4) == (
        "tasks file: task #5: has no 'id' (or 'task_id'): a task needs a string id"
    )


def test_id_and_task_id_must_agree() -> None:
    message = error_of({"id": "a", "task_id": "b"})
    assert message.startswith("tasks file: task 'a' (#1): key 'task_id' disagrees with 'id'")


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("title", 1, "key 'title' must be a string"),
        ("description", ["x"], "key 'description' must be a string"),
        ("status", 3, "key 'status' must be a string"),
        ("priority", "2", "key 'priority' must be an integer 0-4"),
        ("priority", True, "key 'priority' must be an integer 0-4"),
        ("priority", 2.0, "key 'priority' must be an integer 0-4"),
        ("priority", 5, "key 'priority' must be an integer 0-4"),
        ("priority", -1, "key 'priority' must be an integer 0-4"),
        ("dependencies", "t-0", "key 'dependencies' must be a list"),
        ("dependencies", {"t-0": "blocks"}, "key 'dependencies' must be a list"),
        ("dependencies", [1], "key 'dependencies[0]' must be a string or an object"),
        ("dependencies", [""], "key 'dependencies[0]' must be a non-empty string"),
        ("dependencies", ["ok", "../x"], "key 'dependencies[1]' is not a safe name"),
        ("dependencies", [{"type": "blocks"}], "key 'dependencies[0].id' must be a non-empty string"),
        ("dependencies", [{"depends_on_id": 3}], "key 'dependencies[0].depends_on_id' must be a non-empty string"),
        ("dependencies", [{"id": ""}], "key 'dependencies[0].id' must be a non-empty string"),
        ("dependencies", [{"id": "x", "type": 3}], "key 'dependencies[0].type' must be a string"),
        ("dependencies", [{"id": "x", "dependency_type": []}], "key 'dependencies[0].dependency_type' must be"),
        ("dependencies", [{"id": "/abs"}], "key 'dependencies[0].id' is not a safe name"),
        ("dependencies", [{"id": "a..b", "type": "waits-for"}], "key 'dependencies[0].id' is not a safe name"),
        ("dependencies", [{"id": "--x", "type": "parent-child"}], "key 'dependencies[0].id' is not a safe name"),
        ("metadata", 3, "key 'metadata' must be an object (or a JSON string of one)"),
        ("metadata", ["x"], "key 'metadata' must be an object"),
        ("metadata", "{nope", "key 'metadata' is a string that is not JSON"),
        ("metadata", "[1]", "key 'metadata' is a JSON string that is not an object"),
        ("metadata", {"subagent_type": 3}, "key 'metadata.subagent_type' must be a string or null"),
        ("metadata", {"fallback_agents": "a"}, "key 'metadata.fallback_agents' must be a list of strings"),
        ("metadata", {"applicable_skills": [1]}, "key 'metadata.applicable_skills' must be a list of strings"),
        ("metadata", '{"subagent_type": 1}', "key 'metadata.subagent_type' must be a string or null"),
        ("subagent_type", ["a"], "key 'subagent_type' must be a string or null"),
        ("fallback_agents", "a", "key 'fallback_agents' must be a list of strings"),
        ("applicable_skills", [None], "key 'applicable_skills' must be a list of strings"),
        ("parent", 3, "key 'parent' must be a non-empty string"),
        ("parent", "../up", "key 'parent' is not a safe name"),
        ("issue_type", 1, "key 'issue_type' must be a string"),
        ("ephemeral", "yes", "key 'ephemeral' must be true or false"),
        ("ephemeral", 1, "key 'ephemeral' must be true or false"),
        ("assignee", 7, "key 'assignee' must be a string"),
    ],
)
def test_wrong_types_name_source_task_and_key(key: str, value: object, fragment: str) -> None:
    message = error_of({"id": "t-9", key: value}, index=6, source="tasks.json")
    assert message.startswith("tasks.json: task 't-9' (#7): ")
    assert fragment in message


def test_task_that_is_not_an_object() -> None:
    with pytest.raises(ValidationError, match=r"^tasks file: task #2: must be an object, got 'x'$"):
        parse_tasks([{"id": "a"}, "x"])


@pytest.mark.parametrize("value", ["line one\nline two\0" * 50, {"deep": ["x\n"] * 100}])
def test_long_values_are_cut_and_stay_on_one_line(value: object) -> None:
    message = error_of({"id": "a", "priority": value})
    assert len(message) < 200
    assert message.endswith("...")


def test_source_with_a_newline_stays_on_one_line() -> None:
    assert "\n" not in error_of({"id": "a", "priority": 9}, source="bad\nname.json")


# --------------------------------------------------------------------------- dependencies


@pytest.mark.parametrize(
    ("dependencies", "blocking", "parent"),
    [
        (["a", "b"], ["a", "b"], None),
        (["a", "a", "b", "a"], ["a", "b"], None),
        ([{"id": "a"}], ["a"], None),
        ([{"depends_on_id": "a"}], ["a"], None),
        ([{"depends_on_id": "a", "id": "b"}], ["a"], None),
        ([{"depends_on_id": None, "id": "b"}], ["b"], None),
        ([{"id": "a", "type": "blocks"}], ["a"], None),
        ([{"id": "a", "type": "conditional-blocks"}], ["a"], None),
        ([{"id": "a", "type": "waits-for"}], ["a"], None),
        ([{"id": "a", "dependency_type": "waits-for", "type": "related"}], ["a"], None),
        ([{"id": "a", "dependency_type": "related", "type": "blocks"}], [], None),
        ([{"id": "a", "type": None}], ["a"], None),
        ([{"id": "a", "type": "related"}], [], None),
        ([{"id": "a", "type": "discovered-from"}], [], None),
        ([{"id": "a", "type": "tracks"}], [], None),
        ([{"id": "a", "type": "duplicates"}], [], None),
        ([{"id": "p", "type": "parent-child"}], [], "p"),
        ([{"id": "p", "type": "parent-child"}, {"id": "q", "type": "parent-child"}], [], "p"),
        (
            ["b", {"depends_on_id": "a", "type": "blocks"}, {"id": "b"}, {"id": "p", "type": "parent-child"}],
            ["b", "a"],
            "p",
        ),
        ([{"issue_id": "t-1", "depends_on_id": "x", "type": "blocks", "metadata": "{}"}], ["x"], None),
    ],
)
def test_dependencies(dependencies: list[Any], blocking: list[str], parent: str | None) -> None:
    record = one(dependencies=dependencies)
    assert record.metadata.dependencies == blocking
    assert record.parent == parent


def test_dropped_dependency_types_are_not_checked_for_safety() -> None:
    record = one(dependencies=[{"id": "external:proj/cap", "type": "related"}])
    assert record.metadata.dependencies == []


@pytest.mark.parametrize(
    ("fields", "parent"),
    [
        ({"parent": "p"}, "p"),
        ({"parent": "p", "dependencies": [{"id": "p", "type": "parent-child"}]}, "p"),
        ({"parent": "top", "dependencies": [{"id": "dep", "type": "parent-child"}]}, "dep"),
        ({"dependencies": [{"id": "dep", "type": "parent-child"}]}, "dep"),
    ],
)
def test_parent(fields: dict[str, Any], parent: str) -> None:
    assert one(**fields).parent == parent


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    ("fields", "subagent", "fallbacks", "skills"),
    [
        ({"metadata": {"subagent_type": "a", "fallback_agents": ["b"], "applicable_skills": ["s"]}}, "a", ["b"], ["s"]),
        ({"subagent_type": "a", "fallback_agents": ["b"], "applicable_skills": ["s"]}, "a", ["b"], ["s"]),
        ({"metadata": '{"subagent_type": "a", "fallback_agents": ["b"]}'}, "a", ["b"], []),
        ({"metadata": "{}"}, None, [], []),
        ({"metadata": "  "}, None, [], []),
        ({"metadata": {}}, None, [], []),
        ({"metadata": {"subagent_type": None}}, None, [], []),
        ({"metadata": {"subagent_type": "nested"}, "subagent_type": "flat"}, "nested", [], []),
        ({"metadata": {"fallback_agents": ["n"]}, "fallback_agents": ["f"]}, None, ["n"], []),
        ({"metadata": {"applicable_skills": []}, "applicable_skills": ["f"]}, None, [], []),
        ({"metadata": {"subagent_type": None}, "subagent_type": "flat"}, "flat", [], []),
        ({"metadata": {"subagent_type": "nested"}, "applicable_skills": ["f"]}, "nested", [], ["f"]),
        ({"metadata": '{"applicable_skills": ["n"]}', "applicable_skills": ["f"]}, None, [], ["n"]),
        ({"metadata": {"phase": "2"}}, None, [], []),
    ],
)
def test_metadata_nested_flat_and_json_string(
    fields: dict[str, Any], subagent: str | None, fallbacks: list[str], skills: list[str]
) -> None:
    metadata = one(**fields).metadata
    assert (metadata.subagent_type, metadata.fallback_agents, metadata.applicable_skills) == (
        subagent,
        fallbacks,
        skills,
    )


# --------------------------------------------------------------------------- whole files


@pytest.mark.parametrize(
    "data",
    [
        [{"id": "a"}, {"task_id": "b"}],
        {"tasks": [{"id": "a"}, {"task_id": "b"}]},
        {"schema_version": 1, "data": [{"id": "a"}, {"task_id": "b"}]},
        {"data": [{"id": "a"}, {"task_id": "b"}]},
        {"items": [{"id": "a"}, {"task_id": "b"}]},
        {"schema_version": 1, "items": [{"id": "a"}, {"task_id": "b"}]},
        {"tasks": [{"id": "a"}, {"task_id": "b"}], "version": "anything else is ignored"},
    ],
)
def test_accepted_shapes(data: object) -> None:
    assert [r.task_id for r in parse_tasks(data)] == ["a", "b"]


@pytest.mark.parametrize("data", [[], {"tasks": []}, {"schema_version": 1, "data": []}])
def test_empty_task_lists_are_valid(data: object) -> None:
    assert parse_tasks(data) == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (3, "must be a JSON list of tasks or an object with a 'tasks' list, got 3"),
        ("tasks", "must be a JSON list of tasks"),
        (None, "must be a JSON list of tasks"),
        ({"foo": []}, "got an object with keys ['foo']"),
        ({"id": "a"}, "got an object with keys ['id']"),
        ({"tasks": {"a": {}}}, "key 'tasks' must be a list of tasks"),
        ({"schema_version": 1, "data": {"id": "a"}}, "key 'data' must be a list of tasks"),
        ({"items": None}, "key 'items' must be a list of tasks"),
        ({"schema_version": 2, "data": []}, "unsupported beads envelope schema_version 2"),
        ({"error": "no beads database found"}, "holds an error, not tasks: 'no beads database found'"),
    ],
)
def test_rejected_shapes(data: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_tasks(data, source="in.json")
    assert str(info.value).startswith("in.json: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([{"id": "a"}, {"id": "b"}, {"id": "a"}], "tasks file: duplicate task id 'a' at #1 and #3"),
        ([{"id": "a"}, {"task_id": "a"}], "tasks file: duplicate task id 'a' at #1 and #2"),
        ([{"id": "x"}, {"id": "b"}, {"id": "c"}, {"id": "b"}], "tasks file: duplicate task id 'b' at #2 and #4"),
    ],
)
def test_duplicate_ids(tasks: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_tasks(tasks)
    assert str(info.value) == message


def test_error_names_the_position_in_the_file() -> None:
    with pytest.raises(ValidationError, match=r"^tasks file: task 'c' \(#3\): key 'priority' "):
        parse_tasks({"tasks": [{"id": "a"}, {"id": "b"}, {"id": "c", "priority": 9}]})


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ('[{"id": "a"}, {"id": "b"}]', ["a", "b"]),
        ('{"tasks": [{"id": "a"}]}', ["a"]),
        ('\ufeff[{"id": "a"}]', ["a"]),
        ("[]", []),
        ('{"id": "a"}\n{"id": "b"}\n', ["a", "b"]),
        ('\n{"id": "a"}\n\n   \n{"task_id": "b", "dependencies": [{"depends_on_id": "a"}]}\n', ["a", "b"]),
        ('{"id": "a"}\r\n{"id": "b"}\r\n', ["a", "b"]),
        ('{"id": "a", "title": "x\u2028y"}\n{"id": "b"}', ["a", "b"]),
        ('{"id": "solo", "status": "open"}\n', ["solo"]),
        ('{"task_id": "solo"}', ["solo"]),
    ],
)
def test_loads_tasks(text: str, ids: list[str]) -> None:
    assert [r.task_id for r in loads_tasks(text)] == ids


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "tasks.json: is empty"),
        ("  \n\t\n", "tasks.json: is empty"),
        ('[{"id": "a"},\n {"id": }]', "tasks.json: malformed JSON at line 2, column 9: Expecting value"),
        ("[", "tasks.json: malformed JSON at line 1, column 2"),
        ('{"id": "a"}\n[1]\n', "tasks.json: line 2 is not a JSON object (a JSONL file holds one task object a line)"),
        ('{"id": "a"}\n\n{"id": \n', "tasks.json: malformed JSON at line 3, column 8: Expecting value"),
        ('[1]\n{"id": "a"}\n', "tasks.json: malformed JSON at line 2, column 1: Extra data"),
        ("nul\0l", "tasks.json: malformed JSON at line 1, column 1"),
        ("[" * 100_000 + "]" * 100_000, "tasks.json: JSON nested too deeply"),
        ('{\n  "id": "pretty"\n}\n', "got an object with keys ['id']"),
        ('{"id": "a"}\n{"id": "a"}\n', "tasks.json: duplicate task id 'a' at #1 and #2"),
        ('{"id": "a"}\n{"id": "../b"}\n', "tasks.json: task #2: key 'id' is not a safe name"),
    ],
)
def test_loads_tasks_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        loads_tasks(text, source="tasks.json")
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


# --------------------------------------------------------------------------- real beads output


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


@needs_samples
@pytest.mark.parametrize("name", ["13_cli_envelope_list_all.json", "10_cli_flat_ready.json"])
def test_bd_list_output_is_a_tasks_file(name: str) -> None:
    records = loads_tasks(sample(name), source=name)
    assert [r.task_id for r in records] == ["corpus-closed", "corpus-dep", "corpus-root"]
    root = records[2]
    assert (root.issue_type, root.metadata.priority, root.metadata.subagent_type) == ("feature", 0, None)
    assert root.raw["metadata"] == {"phase": "2"}
    assert all(r.takes_part and r.tracker_status == "open" for r in records)


@needs_samples
@pytest.mark.parametrize("name", ["11_cli_flat_reopen.json", "12_cli_envelope_reopen.json"])
def test_bd_reopen_output_is_a_tasks_file(name: str) -> None:
    assert [r.task_id for r in loads_tasks(sample(name))] == ["corpus-closed"]


def jsonl_lines() -> list[tuple[str, int, str]]:
    if not SAMPLES.is_dir():
        return []
    return [
        (path.name, number, line)
        for path in sorted(SAMPLES.glob("*.jsonl"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines())
        if line.strip()
    ]


@needs_samples
@pytest.mark.parametrize(("name", "number", "line"), jsonl_lines() or [("none", 0, "{}")])
def test_every_jsonl_sample_line_parses(name: str, number: int, line: str) -> None:
    obj = json.loads(line)
    record = parse_task(obj, index=number, source=name)
    assert record.task_id == obj["id"]
    assert record.raw is obj
    assert [r.task_id for r in loads_tasks(line, source=name)] == [obj["id"]]


@needs_samples
def test_all_jsonl_samples_together_are_one_jsonl_file() -> None:
    text = "\n".join(line for _, _, line in jsonl_lines()) + "\n"
    records = loads_tasks(text, source="issues.jsonl")
    assert len(records) == len(jsonl_lines()) >= 9


@needs_samples
@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (
            "01_",
            {"deps": ["bd-wisp-vnssv"], "status": "in_progress", "parent": None, "takes_part": True,
             "assignee": "beads/polecats/jasper"},
        ),
        (
            "02_",
            {"deps": ["bd-wisp-i27f2"], "status": "open", "parent": "bd-wisp-3tmpl", "takes_part": False,
             "ephemeral": True},
        ),
        ("03_", {"deps": [], "status": "closed", "parent": "bd-hlsw", "takes_part": False, "done": True}),
        ("05_", {"deps": [], "status": "open", "issue_type": "epic", "takes_part": False, "description": ""}),
        ("06_", {"deps": [], "status": "closed", "done": True}),
        ("07_", {"deps": [], "status": "in_progress", "issue_type": "chore", "takes_part": True}),
        ("08_", {"deps": ["bd-ge7"], "status": "closed", "done": True}),
    ],
)
def test_jsonl_samples_in_detail(prefix: str, expected: dict[str, Any]) -> None:
    (path,) = SAMPLES.glob(f"{prefix}*.jsonl")
    (record,) = loads_tasks(path.read_text(encoding="utf-8"), source=path.name)
    actual = {
        "deps": record.metadata.dependencies,
        "status": record.tracker_status,
        "parent": record.parent,
        "takes_part": record.takes_part,
        "done": record.done,
        "issue_type": record.issue_type,
        "ephemeral": record.ephemeral,
        "assignee": record.assignee,
        "description": record.metadata.description,
    }
    assert {key: actual[key] for key in expected} == expected


# --------------------------------------------------------------------------- coerce_task


def test_coerce_a_mapping() -> None:
    record = coerce_task({"task_id": "a", "status": "pending", "priority": 1}, index=0)
    assert (record.task_id, record.tracker_status, record.metadata.priority) == ("a", "pending", 1)
    assert record.takes_part


def test_coerce_a_mapping_reports_the_group_source() -> None:
    with pytest.raises(ValidationError, match=r"^group: task 'a' \(#2\): key 'priority' "):
        coerce_task({"id": "a", "priority": "high"}, index=1)


@pytest.mark.parametrize(
    ("status", "tracker_status"),
    [
        (TaskStatus.PENDING, "open"),
        (TaskStatus.IN_PROGRESS, "in_progress"),
        (TaskStatus.COMPLETED, "closed"),
        (TaskStatus.BLOCKED, "blocked"),
        (TaskStatus.FAILED, "open"),
    ],
)
def test_coerce_task_metadata(status: TaskStatus, tracker_status: str) -> None:
    task = TaskMetadata(task_id="a", title="t", dependencies=["b"], status=status)
    record = coerce_task(task, index=0)
    assert record.metadata is task
    assert record.tracker_status == tracker_status
    assert (record.parent, record.issue_type, record.ephemeral, record.assignee) == (None, "task", False, None)
    assert record.raw == task.to_dict()


def test_coerce_a_record_passes_through() -> None:
    record = one()
    assert coerce_task(record, index=5) is record


@pytest.mark.parametrize(
    ("task", "fragment"),
    [
        (TaskMetadata(task_id="../x"), "group: task #1: key 'task_id' is not a safe name"),
        (TaskMetadata(task_id="--help"), "group: task #1: key 'task_id' is not a safe name"),
        (TaskMetadata(task_id=""), "group: task #1: key 'task_id' must be a non-empty string"),
        (TaskMetadata(task_id="a", priority=7), "group: task 'a' (#1): key 'priority' must be an integer 0-4"),
        (TaskMetadata(task_id="a", dependencies=["/abs"]), "key 'dependencies[0]' is not a safe name"),
        (TaskMetadata(task_id="a", status="done"), "key 'status' must be a TaskStatus"),  # type: ignore[arg-type]
        (
            TaskMetadata(task_id="a", fallback_agents="x"),  # type: ignore[arg-type]
            "key 'fallback_agents' must be a list",
        ),
        (42, "group: task #1: must be a mapping, a TaskMetadata or a TaskRecord, got 42"),
        (["id", "a"], "group: task #1: must be a mapping, a TaskMetadata or a TaskRecord"),
    ],
)
def test_coerce_task_errors(task: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        coerce_task(task, index=0)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_records_are_frozen() -> None:
    record = one()
    with pytest.raises(AttributeError):
        record.tracker_status = "closed"  # type: ignore[misc]
