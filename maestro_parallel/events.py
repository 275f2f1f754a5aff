"""The journal's events and the pure fold that turns them into a group's state.

Every change to a group is an event: a dict with ``"event"``, ``"at"`` and its
fields, appended as one line to ``events.jsonl`` the moment it happens.  The
coordinator never edits :class:`GroupMetadata` directly: it builds an event,
applies it with :func:`apply_event` and appends it.  The state is therefore
always the fold of the journal, and a reader (resume, ``recover``, another
process) rebuilds it exactly with :func:`replay`.  Events carry absolute values
(``attempt`` is a number, not an increment), so replaying them is idempotent.

Schema 1 (the first event of each run carries ``"schema": 1``; each event's type is in
:mod:`maestro_parallel.event_types`):

==================  ==========================================================
event               fields
==================  ==========================================================
group_started       schema, run, pid, tasks, created_at, resumed
refresh_finished    ok, exit_code, error, log_path
phase_changed       phase
task_prepared       task_id, subagent, skills_applied, skills_missing, prompt_path
warning             message, task_id (null: every task that runs in this run)
task_blocked        task_id, blockers, error
task_started        task_id, attempt, argv0; pid, pgid, start_time (local) or host (remote)
task_retry          task_id, attempt, delay_seconds, reason
backoff             task_id, preset, delay_seconds, limit, rate_limits (a shared backoff opened)
budget              spent_usd, group_usd, plan_spent_usd, plan_usd (spent vs budget)
task_finished       task_id, status, exit_code, error, extra (agent-reported fields)
tests_finished      status (passed | failed | skipped), exit_code, command, error, log_path
task_closed         task_id, ok, error
group_error         message
group_finished      status
isolation_decided   mode, reason, target, base_sha, integration_branch
worktree_created    task_id, branch, path, base_sha, reused
task_committed      task_id, branch, head_sha, committed, changed_files
conflict_predicted  files, tasks, source (footprints | merge-tree)
task_merged         task_id, branch, sha, strategy
merge_conflict      task_id, branch, files
bisect_step         tasks, passed
landed              target, sha, method
landing_blocked     target, message
==================  ==========================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ._paths import GROUPS_RELATIVE_PATH
from .event_types import EventName
from .models import GroupMetadata, GroupPhase, TaskStatus, new_result, utc_now

__all__ = (
    "SCHEMA_VERSION",
    "apply_event",
    "decode_journal",
    "encode_event",
    "make_event",
    "replay",
)

SCHEMA_VERSION = 1

#: How every line that :func:`encode_event` writes begins.
_EVENT_START = b'{"event":'

#: Added keys of a result that describe one attempt; dropped when the task runs again.
_PER_ATTEMPT_EXTRAS = ("pid", "pgid", "start_time", "closed", "blockers", "merged", "merge_conflict")


def make_event(name: EventName, **fields: Any) -> dict[str, Any]:
    """An event dict stamped with the current time."""
    return {"event": name, "at": utc_now(), **fields}


#: One encoder for every journal line (``json.dumps`` with options builds a new one per call).
_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One journal line: compact JSON, ASCII only, ending in a newline."""
    return (_LINE_ENCODER.encode(event) + "\n").encode("ascii")


def decode_journal(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Parse journal bytes into events; return them and the number of lines skipped.

    A torn last line (a writer died mid-append) is ignored silently; a corrupt
    line elsewhere is skipped and counted, and a complete event glued after a
    torn line (the next run appended to it) is still returned.
    """
    events: list[dict[str, Any]] = []
    skipped = 0
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # text after the last newline, if any
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a corrupt line nested too deeply
            skipped += 1
            event = _salvage(line)
            if event is not None:
                events.append(event)
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            events.append(event)
        else:
            skipped += 1
    if torn.strip():
        try:
            event = json.loads(torn)
        except (ValueError, RecursionError):
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            events.append(event)
    return events, skipped


def _salvage(line: bytes) -> dict[str, Any] | None:
    """The complete event at the end of a corrupt line, if any.

    A writer that died mid-line leaves a torn line without a newline; the next
    run's first append is then glued to it.  Every line :func:`encode_event`
    writes starts with ``{"event":``, which cannot occur inside an encoded
    string (its quotes would be escaped), so the last such start is a line of
    its own.
    """
    start = line.rfind(_EVENT_START)
    if start <= 0:
        return None
    try:
        event = json.loads(line[start:])
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def _result(meta: GroupMetadata, task_id: Any) -> dict[str, Any] | None:
    return meta.result_for(task_id) if isinstance(task_id, str) else None


def _strings(value: Any) -> list[str]:
    """The strings of a JSON list; anything else (a damaged journal) counts as empty."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


#: Keys of a result that an event's ``extra`` may never replace (they have types readers rely on).
_CORE_RESULT_KEYS = frozenset(
    {"task_id", "subagent", "status", "started_at", "completed_at", "skills_applied", "exit_code", "error",
     "attempts", "warnings", "log_path"}
)


def _log_path_for(meta: GroupMetadata, task_id: str) -> str:
    return f"{GROUPS_RELATIVE_PATH.as_posix()}/{meta.group_id}/logs/{task_id}.log"


def apply_event(meta: GroupMetadata, event: Mapping[str, Any]) -> None:
    """Apply one event to ``meta`` in place.  Unknown events and stray task ids are ignored.

    A damaged journal can hold an event whose fields have the wrong types; such
    fields are ignored rather than allowed to corrupt the state or raise.
    """
    if not isinstance(event, Mapping) or not isinstance(event.get("event"), str):
        return
    at = event.get("at") if isinstance(event.get("at"), str) else None
    handler = _HANDLERS.get(event["event"])
    if handler is not None:
        handler(meta, event, at)


def _group_started(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    tasks = list(dict.fromkeys(_strings(event.get("tasks"))))  # in order, each once
    old = {r["task_id"]: r for r in meta.results}
    results = []
    for task_id in tasks:
        result = old.get(task_id)
        if result is None:
            result = new_result(task_id, log_path=_log_path_for(meta, task_id))
        elif result.get("status") != TaskStatus.COMPLETED.value:
            # Runs again in this run: keep what it did before (attempts), reset the outcome.
            result["status"] = TaskStatus.PENDING.value
            result["warnings"] = []
            for key in ("exit_code", "error", "completed_at"):
                result[key] = None
            for key in _PER_ATTEMPT_EXTRAS:
                result.pop(key, None)
        results.append(result)
    meta.tasks = tasks
    meta.results = results
    if isinstance(event.get("created_at"), str) and not meta.started_at:
        meta.created_at = event["created_at"]
    meta.started_at = at
    meta.completed_at = None
    meta.status = TaskStatus.IN_PROGRESS
    meta.phase = GroupPhase.PRE_EXECUTION
    meta.errors = []
    meta.pre_group_refresh_completed = False


def _refresh_finished(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    meta.pre_group_refresh_completed = event.get("ok") is True


def _phase_changed(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    try:
        meta.phase = GroupPhase(str(event.get("phase")))
    except ValueError:
        pass


def _task_prepared(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is None:
        return
    result["subagent"] = _text(event.get("subagent"))
    result["skills_applied"] = _strings(event.get("skills_applied"))
    if _strings(event.get("skills_missing")):
        result["skills_missing"] = _strings(event["skills_missing"])
    elif "skills_missing" in event:  # every skill was found this time: drop an earlier run's list
        result.pop("skills_missing", None)
    if _text(event.get("prompt_path")):
        result["prompt_path"] = event["prompt_path"]


def _warning(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    message = event.get("message")
    if not isinstance(message, str):
        return
    task_id = event.get("task_id")
    if task_id is None:
        targets = [r for r in meta.results if r.get("status") != TaskStatus.COMPLETED.value]
    else:
        result = _result(meta, task_id)
        targets = [result] if result is not None else []
    for result in targets:
        if message not in result.setdefault("warnings", []):
            result["warnings"].append(message)


def _task_blocked(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is None:
        return
    result["status"] = TaskStatus.BLOCKED.value
    result["error"] = _text(event.get("error"))
    result["blockers"] = _strings(event.get("blockers"))
    result["completed_at"] = None


def _task_started(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is None:
        return
    result["status"] = TaskStatus.IN_PROGRESS.value
    if isinstance(event.get("attempt"), int) and not isinstance(event["attempt"], bool):
        result["attempts"] = event["attempt"]
    result["started_at"] = at
    result["completed_at"] = None
    result["exit_code"] = None
    result["error"] = None
    for key in ("pid", "pgid", "start_time", "host"):
        if event.get(key) is not None:
            result[key] = event[key]


def _task_retry(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is None:
        return
    reason = event.get("reason") or "transient failure"
    delay = event.get("delay_seconds")
    note = f"attempt {event.get('attempt')} failed ({reason}); retrying in {delay}s"
    if note not in result.setdefault("warnings", []):  # replaying over a snapshot must not repeat it
        result["warnings"].append(note)


def _backoff(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    """A shared backoff changes no task's state: the retry that waits it out has its own event."""


def _budget(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    meta.budget = {
        key: float(event[key])
        for key in ("spent_usd", "group_usd", "plan_spent_usd", "plan_usd")
        if isinstance(event.get(key), (int, float)) and not isinstance(event.get(key), bool)
    }


def _task_finished(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    task_id = event.get("task_id")
    result = _result(meta, task_id)
    if result is None:
        return
    status = event.get("status")
    if status not in (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value):
        return
    result["status"] = status
    exit_code = event.get("exit_code")
    result["exit_code"] = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None
    result["error"] = _text(event.get("error"))
    result["completed_at"] = at
    extra = event.get("extra")
    if isinstance(extra, Mapping):
        result.update((k, v) for k, v in extra.items() if isinstance(k, str) and k not in _CORE_RESULT_KEYS)
    if status == TaskStatus.FAILED.value:
        meta.errors.append(f"{task_id}: {event.get('error') or 'failed'}")


def _tests_finished(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    if event.get("status") == TaskStatus.FAILED:
        meta.errors.append(f"tests: {event.get('error') or 'the test suite failed'}")


def _task_closed(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    task_id = event.get("task_id")
    result = _result(meta, task_id)
    if result is None:
        return
    if event.get("ok") is True:
        result["closed"] = True
    else:
        result["closed"] = False
        meta.errors.append(f"{task_id}: close failed: {event.get('error') or 'refused by the tracker'}")


def _group_error(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    if isinstance(event.get("message"), str):
        meta.errors.append(event["message"])


def _group_finished(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    try:
        meta.status = TaskStatus(str(event.get("status")))
    except ValueError:
        return
    meta.completed_at = at
    meta.phase = GroupPhase.POST_EXECUTION


def _isolation_decided(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    meta.isolation = _text(event.get("mode"))
    meta.base_sha = _text(event.get("base_sha"))
    meta.integration_branch = _text(event.get("integration_branch"))
    meta.conflicts = []  # predicted afresh by each run


def _worktree_created(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is not None:
        result["branch"] = _text(event.get("branch"))
        result["worktree"] = _text(event.get("path"))


def _task_committed(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is not None:
        result["branch"] = _text(event.get("branch"))
        result["head_sha"] = _text(event.get("head_sha"))
        result["changed_files"] = _strings(event.get("changed_files"))


def _conflict_predicted(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    if event.get("source") == "merge-tree":  # the queue's own prediction: journaled, not a footprint overlap
        return
    entry = {"files": _strings(event.get("files")), "tasks": _strings(event.get("tasks"))}
    if entry not in meta.conflicts:
        meta.conflicts.append(entry)


def _task_merged(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is not None:
        result["merged"] = True


def _merge_conflict(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    result = _result(meta, event.get("task_id"))
    if result is not None:
        result["merged"] = False
        result["merge_conflict"] = _strings(event.get("files"))


def _bisect_step(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    return None  # the journal keeps each probe; the outcome arrives as task_finished


def _landed(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    meta.landed = True
    meta.landed_sha = _text(event.get("sha"))
    for result in meta.results:
        if result.get("merged") is True:
            result["landed"] = True


def _landing_blocked(meta: GroupMetadata, event: Mapping[str, Any], at: str | None) -> None:
    meta.landed = False
    if isinstance(event.get("message"), str):
        meta.errors.append(event["message"])


_HANDLERS = {
    "group_started": _group_started,
    "refresh_finished": _refresh_finished,
    "phase_changed": _phase_changed,
    "task_prepared": _task_prepared,
    "warning": _warning,
    "task_blocked": _task_blocked,
    "task_started": _task_started,
    "task_retry": _task_retry,
    "backoff": _backoff,
    "budget": _budget,
    "task_finished": _task_finished,
    "tests_finished": _tests_finished,
    "task_closed": _task_closed,
    "group_error": _group_error,
    "group_finished": _group_finished,
    "isolation_decided": _isolation_decided,
    "worktree_created": _worktree_created,
    "task_committed": _task_committed,
    "conflict_predicted": _conflict_predicted,
    "task_merged": _task_merged,
    "merge_conflict": _merge_conflict,
    "bisect_step": _bisect_step,
    "landed": _landed,
    "landing_blocked": _landing_blocked,
}


def replay(group_id: str, events: Iterable[Mapping[str, Any]], base: GroupMetadata | None = None) -> GroupMetadata:
    """Rebuild a group's state: ``base`` (the snapshot, if any) with ``events`` applied in order."""
    meta = base if base is not None else GroupMetadata(group_id=group_id)
    for event in events:
        apply_event(meta, event)
    return meta
