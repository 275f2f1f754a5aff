"""The tasks-file schema: parse and validate task objects (pure, no I/O).

A tasks file is a JSON list of task objects, ``{"tasks": [...]}``, a beads
envelope (``{"schema_version": 1, "data": [...]}`` or ``{"items": [...]}``),
or the lines of a ``.beads/issues.jsonl`` file.  The output of
``bd list --json`` is a valid tasks file, so the same parser serves the
local tracker and the beads tracker.

Every error is a :class:`~maestro_parallel.errors.ValidationError` with one
line of message naming the source, the task (id and 1-based position) and
the key, because a person fixes a file from that line alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._text import show, source_name
from .errors import ValidationError
from .markers import is_safe_task_id
from .models import TaskMetadata, TaskStatus

__all__ = (
    "ACTIVE_STATUSES",
    "BLOCKING_DEPENDENCY_TYPES",
    "DONE_STATUSES",
    "TaskRecord",
    "coerce_task",
    "loads_tasks",
    "parse_task",
    "parse_tasks",
)

#: Dependency types that keep a task from being ready (what ``bd ready`` honours).
BLOCKING_DEPENDENCY_TYPES = frozenset({"blocks", "conditional-blocks", "waits-for"})
#: Tracker statuses that mean the work is done: not run, and they satisfy dependencies.
DONE_STATUSES = frozenset({"closed", "completed"})
#: Tracker statuses of tasks that may still be run.
ACTIVE_STATUSES = frozenset({"open", "in_progress", "pending"})

_PARENT_CHILD = "parent-child"
_META_KEYS = ("subagent_type", "fallback_agents", "applicable_skills")
_SAFE_RULE = "letters, digits, '.', '_', ':', '-'; a letter or digit first; at most 128 characters; no '..'"
_STATUS_MAP = {
    "open": TaskStatus.PENDING,
    "pending": TaskStatus.PENDING,
    "in_progress": TaskStatus.IN_PROGRESS,
    "closed": TaskStatus.COMPLETED,
    "completed": TaskStatus.COMPLETED,
    "blocked": TaskStatus.BLOCKED,
}
_TRACKER_STATUS_OF = {
    TaskStatus.COMPLETED: "closed",
    TaskStatus.IN_PROGRESS: "in_progress",
    TaskStatus.BLOCKED: "blocked",
}


@dataclass(frozen=True)
class TaskRecord:
    """One task as loaded, with what the tracker knows beyond :class:`TaskMetadata`.

    ``metadata.dependencies`` holds only blocking ids; the parent link, the
    raw tracker status and the beads flags stay here so the trackers can
    decide readiness and participation without re-reading the input.
    """

    metadata: TaskMetadata
    tracker_status: str = "open"
    parent: str | None = None
    issue_type: str = "task"
    ephemeral: bool = False
    assignee: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.metadata.task_id

    @property
    def done(self) -> bool:
        """Closed or completed: not run, and it satisfies the dependencies on it."""
        return self.tracker_status in DONE_STATUSES

    @property
    def takes_part(self) -> bool:
        """Open work that a group may run: not an epic, not a beads wisp."""
        return self.tracker_status in ACTIVE_STATUSES and self.issue_type != "epic" and not self.ephemeral


# --------------------------------------------------------------------------- messages


def _task_label(task_id: str | None, index: int) -> str:
    position = index + 1
    return f"task {task_id!r} (#{position})" if task_id is not None else f"task #{position}"


class _Where:
    """Builds the one-line messages of one task."""

    __slots__ = ("index", "source", "task_id")

    def __init__(self, source: str, index: int, task_id: str | None = None) -> None:
        self.source = source
        self.index = index
        self.task_id = task_id

    def error(self, key: str | None, problem: str) -> ValidationError:
        label = _task_label(self.task_id, self.index)
        where = f"{label}: key {key!r} " if key is not None else f"{label}: "
        return ValidationError(f"{source_name(self.source)}: {where}{problem}")


# --------------------------------------------------------------------------- key readers


def _opt_str(obj: Mapping[str, Any], key: str, where: _Where) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise where.error(key, f"must be a string, got {show(value)}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: _Where, *, default: str) -> str:
    value = _opt_str(obj, key, where)
    return default if value is None else value


def _str_list(value: object, key: str, where: _Where) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise where.error(key, f"must be a list of strings, got {show(value)}")
    return list(value)


def _safe_id(value: object, key: str, where: _Where) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(key, f"must be a non-empty string, got {show(value)}")
    if not is_safe_task_id(value):
        raise where.error(key, f"is not a safe name: {show(value)} (allowed: {_SAFE_RULE})")
    return value


def _read_id(obj: Mapping[str, Any], where: _Where) -> str:
    id_value, alt_value = obj.get("id"), obj.get("task_id")
    if id_value is None and alt_value is None:
        raise where.error(None, "has no 'id' (or 'task_id'): a task needs a string id")
    if id_value is not None and alt_value is not None:
        task_id = _safe_id(id_value, "id", where)
        _safe_id(alt_value, "task_id", where)
        if task_id != alt_value:
            where.task_id = task_id
            raise where.error("task_id", f"disagrees with 'id': {show(alt_value)} != {show(task_id)}")
        return task_id
    return _safe_id(id_value, "id", where) if id_value is not None else _safe_id(alt_value, "task_id", where)


def _read_priority(obj: Mapping[str, Any], where: _Where) -> int:
    value = obj.get("priority")
    if value is None:
        return 2
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
        raise where.error("priority", f"must be an integer 0-4, got {show(value)}")
    return value


def _read_dependencies(obj: Mapping[str, Any], where: _Where) -> tuple[list[str], str | None]:
    """The blocking ids (deduplicated, input order) and the parent named by a parent-child link."""
    value = obj.get("dependencies")
    if value is None:
        return [], None
    if not isinstance(value, list):
        raise where.error("dependencies", f"must be a list, got {show(value)}")
    blocking: dict[str, None] = {}
    parent: str | None = None
    for position, item in enumerate(value):
        key = f"dependencies[{position}]"
        if isinstance(item, str):
            blocking.setdefault(_safe_id(item, key, where), None)
            continue
        if not isinstance(item, Mapping):
            raise where.error(key, f"must be a string or an object, got {show(item)}")
        target_key = "depends_on_id" if item.get("depends_on_id") is not None else "id"
        target = item.get(target_key)
        if not isinstance(target, str) or not target:
            raise where.error(
                f"{key}.{target_key}", f"must be a non-empty string (the id depended on), got {show(target)}"
            )
        type_key = "dependency_type" if item.get("dependency_type") is not None else "type"
        dep_type = item.get(type_key, "blocks")
        if dep_type is None:
            dep_type = "blocks"
        if not isinstance(dep_type, str):
            raise where.error(f"{key}.{type_key}", f"must be a string, got {show(dep_type)}")
        if dep_type in BLOCKING_DEPENDENCY_TYPES:
            blocking.setdefault(_safe_id(target, f"{key}.{target_key}", where), None)
        elif dep_type == _PARENT_CHILD and parent is None:
            parent = _safe_id(target, f"{key}.{target_key}", where)
        # Every other type (related, discovered-from, tracks, ...) never blocks: dropped.
    return list(blocking), parent


def _read_metadata(obj: Mapping[str, Any], where: _Where) -> Mapping[str, Any]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise where.error("metadata", f"is a string that is not JSON: {show(obj.get('metadata'))}") from exc
        if not isinstance(value, dict):
            raise where.error("metadata", f"is a JSON string that is not an object: {show(obj.get('metadata'))}")
        return value
    if not isinstance(value, Mapping):
        raise where.error("metadata", f"must be an object (or a JSON string of one), got {show(value)}")
    return value


def _read_agent_keys(obj: Mapping[str, Any], where: _Where) -> tuple[str | None, list[str], list[str]]:
    """``subagent_type``, ``fallback_agents``, ``applicable_skills``: nested ``metadata`` wins over top level."""
    nested = _read_metadata(obj, where)
    found: dict[str, Any] = {}
    for scope, prefix in ((obj, ""), (nested, "metadata.")):
        for key in _META_KEYS:
            value = scope.get(key)
            if value is None:
                continue
            if key == "subagent_type":
                if not isinstance(value, str):
                    raise where.error(prefix + key, f"must be a string or null, got {show(value)}")
            else:
                value = _str_list(value, prefix + key, where)
            found[key] = value  # the nested scope runs second, so it wins
    return found.get("subagent_type"), found.get("fallback_agents", []), found.get("applicable_skills", [])


def _read_bool(obj: Mapping[str, Any], key: str, where: _Where) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise where.error(key, f"must be true or false, got {show(value)}")
    return value


# --------------------------------------------------------------------------- public API


def parse_task(obj: object, *, index: int, source: str = "tasks file") -> TaskRecord:
    """Validate one task object and build its record.

    ``index`` is the task's 0-based position in its list; messages show it
    1-based (``task 'a' (#1)``).  Unknown keys are kept in ``raw`` and ignored.
    """
    where = _Where(source, index)
    if not isinstance(obj, Mapping):
        raise where.error(None, f"must be an object, got {show(obj)}")
    where.task_id = _read_id(obj, where)

    title = _str(obj, "title", where, default="")
    description = _str(obj, "description", where, default="")
    status = _str(obj, "status", where, default="open")
    priority = _read_priority(obj, where)
    dependencies, parent = _read_dependencies(obj, where)
    top_parent = obj.get("parent")
    if top_parent is not None:
        top_parent = _safe_id(top_parent, "parent", where)
    subagent, fallbacks, skills = _read_agent_keys(obj, where)
    issue_type = _str(obj, "issue_type", where, default="task")
    ephemeral = _read_bool(obj, "ephemeral", where)
    assignee = _opt_str(obj, "assignee", where)

    from .markers import extract_relevant_files  # lazy: markers grows it independently

    metadata = TaskMetadata(
        task_id=where.task_id,
        title=title,
        description=description,
        subagent_type=subagent,
        fallback_agents=fallbacks,
        applicable_skills=skills,
        relevant_files=list(extract_relevant_files(description)),
        dependencies=dependencies,
        priority=priority,
        status=_STATUS_MAP.get(status, TaskStatus.PENDING),
    )
    return TaskRecord(
        metadata=metadata,
        tracker_status=status,
        parent=parent if parent is not None else top_parent,
        issue_type=issue_type,
        ephemeral=ephemeral,
        assignee=assignee,
        raw=obj,
    )


def _task_list(data: object, source: str) -> list[Any]:
    """The list of task objects inside any accepted top-level shape."""
    if isinstance(data, list):
        return data
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"{source_name(source)}: must be a JSON list of tasks or an object with a 'tasks' list, got {show(data)}"
        )
    for key in ("tasks", "data", "items"):
        if key in data:
            if key != "tasks" and data.get("schema_version", 1) != 1:
                raise ValidationError(
                    f"{source_name(source)}: unsupported beads envelope schema_version {show(data['schema_version'])}"
                    " (expected 1)"
                )
            value = data[key]
            if not isinstance(value, list):
                raise ValidationError(f"{source_name(source)}: key {key!r} must be a list of tasks, got {show(value)}")
            return value
    if isinstance(data.get("error"), str):
        raise ValidationError(f"{source_name(source)}: holds an error, not tasks: {show(data['error'])}")
    raise ValidationError(
        f"{source_name(source)}: must be a JSON list of tasks, {{\"tasks\": [...]}} or a beads envelope"
        f" {{\"schema_version\": 1, \"data\": [...]}}; got an object with keys {show(sorted(map(str, data)))}"
    )


def parse_tasks(data: object, *, source: str = "tasks file") -> list[TaskRecord]:
    """Validate a decoded tasks file: every task, and that no id appears twice."""
    records: list[TaskRecord] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(_task_list(data, source)):
        record = parse_task(item, index=index, source=source)
        first = seen.setdefault(record.task_id, index)
        if first != index:
            raise ValidationError(
                f"{source_name(source)}: duplicate task id {record.task_id!r} at #{first + 1} and #{index + 1}"
            )
        records.append(record)
    return records


def _jsonl_objects(text: str, source: str) -> list[Any] | None:
    """The objects of a JSONL text; None when its first line is not a JSON object (so it is not JSONL).

    Once the first line is an object the text is taken for JSONL, and a bad
    later line is reported by its own line number and column.
    """
    objects: list[Any] = []
    # split on "\n" only: str.splitlines() would also cut at a raw U+2028 inside a JSON string.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if not objects:
                return None
            raise ValidationError(
                f"{source_name(source)}: malformed JSON at line {number}, column {exc.colno}: {exc.msg}"
            ) from exc
        except RecursionError as exc:
            if not objects:
                return None
            raise ValidationError(f"{source_name(source)}: line {number}: JSON nested too deeply") from exc
        if not isinstance(value, dict):
            if not objects:
                return None
            raise ValidationError(
                f"{source_name(source)}: line {number} is not a JSON object (a JSONL file holds one task object a line)"
            )
        objects.append(value)
    return objects


def loads_tasks(text: str, *, source: str = "tasks file") -> list[TaskRecord]:
    """Parse a tasks file's text: one JSON document, or JSONL (``.beads/issues.jsonl``).

    A text of a single line holding one task object (an ``issues.jsonl`` with
    one issue) is read as JSONL too, since the two cannot be told apart.
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ValidationError(f"{source_name(source)}: is empty (expected a JSON list of tasks)")
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise ValidationError(f"{source_name(source)}: JSON nested too deeply") from exc
    except json.JSONDecodeError as exc:
        objects = _jsonl_objects(text, source)
        if objects is None:
            raise ValidationError(
                f"{source_name(source)}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from exc
        return parse_tasks(objects, source=source)
    if (
        isinstance(data, dict)
        and len(text.strip().splitlines()) == 1
        and ("id" in data or "task_id" in data)
        and not any(key in data for key in ("tasks", "data", "items"))
    ):
        data = [data]
    return parse_tasks(data, source=source)


def _check_metadata(task: TaskMetadata, where: _Where) -> None:
    """Type checks of a TaskMetadata built in Python, where nothing validated it yet."""
    for key in ("title", "description"):
        if not isinstance(getattr(task, key), str):
            raise where.error(key, f"must be a string, got {show(getattr(task, key))}")
    if task.subagent_type is not None and not isinstance(task.subagent_type, str):
        raise where.error("subagent_type", f"must be a string or None, got {show(task.subagent_type)}")
    for key in ("fallback_agents", "applicable_skills", "relevant_files"):
        _str_list(getattr(task, key), key, where)
    if not isinstance(task.dependencies, list):
        raise where.error("dependencies", f"must be a list, got {show(task.dependencies)}")
    for position, dep in enumerate(task.dependencies):
        _safe_id(dep, f"dependencies[{position}]", where)
    priority = task.priority
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 4:
        raise where.error("priority", f"must be an integer 0-4, got {show(priority)}")
    if not isinstance(task.status, TaskStatus):
        raise where.error("status", f"must be a TaskStatus, got {show(task.status)}")


def coerce_task(
    item: Mapping[str, Any] | TaskMetadata | TaskRecord, *, index: int, source: str = "group"
) -> TaskRecord:
    """Turn a task handed to the Python API into a record.

    A mapping is parsed like a tasks-file entry; a :class:`TaskMetadata` is
    checked and wrapped as-is (its tracker status follows its status); a
    :class:`TaskRecord` passes through.  ``index`` is 0-based.
    """
    if isinstance(item, TaskRecord):
        return item
    if isinstance(item, TaskMetadata):
        where = _Where(source, index)
        where.task_id = _safe_id(item.task_id, "task_id", where)
        _check_metadata(item, where)
        return TaskRecord(
            metadata=item,
            tracker_status=_TRACKER_STATUS_OF.get(item.status, "open"),
            raw=item.to_dict(),
        )
    if isinstance(item, Mapping):
        return parse_task(item, index=index, source=source)
    raise _Where(source, index).error(None, f"must be a mapping, a TaskMetadata or a TaskRecord, got {show(item)}")
