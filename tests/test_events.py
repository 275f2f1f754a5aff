"""The journal: encoding, decoding, and the pure fold of events into a group (events.py, DESIGN §5)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from maestro_parallel.events import SCHEMA_VERSION, apply_event, decode_journal, encode_event, make_event, replay
from maestro_parallel.models import GroupMetadata, GroupPhase, TaskStatus, new_result

T0 = "2026-11-28T12:00:00.000Z"
LATER = "2026-11-28T12:05:00.500Z"


def ev(name: str, at: str = T0, **fields: Any) -> dict[str, Any]:
    """An event as the coordinator journals it, with a fixed time."""
    return {"event": name, "at": at, **fields}


def result(task_id: str, **changes: Any) -> dict[str, Any]:
    return {**new_result(task_id, log_path=f".flow/maestro/parallel_groups/g/logs/{task_id}.log"), **changes}


def group(*results: dict[str, Any], **changes: Any) -> GroupMetadata:
    meta = GroupMetadata(group_id="g", created_at=T0, tasks=[r["task_id"] for r in results], results=list(results))
    for name, value in changes.items():
        setattr(meta, name, value)
    return meta


# ------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    "event",
    [
        ev("phase_changed", phase="coordination"),
        ev("warning", task_id=None, message="résumé ☕ – 日本語"),
        ev("task_finished", task_id="t-1", status="failed", exit_code=7, error="exit code 7: line one\nline two\r\n"),
        ev("task_started", task_id="t-1", attempt=1, pid=123, pgid=123, start_time=98765, argv0="/usr/bin/claude"),
        ev("warning", task_id="t-1", message="tab\there, NUL\x00, quote \" and brace {\"event\":1}"),
    ],
)
def test_encode_event_is_one_ascii_line(event: dict[str, Any]) -> None:
    line = encode_event(event)
    assert isinstance(line, bytes)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    assert line.isascii()
    assert json.loads(line) == event


def test_encode_event_writes_the_event_name_first_and_compact() -> None:
    line = encode_event(make_event("group_finished", status="completed"))
    assert line.startswith(b'{"event":"group_finished","at":"')
    assert b", " not in line and b": " not in line


def test_make_event_stamps_the_current_time() -> None:
    event = make_event("group_started", schema=SCHEMA_VERSION, tasks=["a"])
    assert event["event"] == "group_started"
    assert event["schema"] == 1
    assert event["tasks"] == ["a"]
    assert len(event["at"]) == len(T0) and event["at"].endswith("Z")


# ------------------------------------------------------------------ decoding

A = encode_event(ev("phase_changed", phase="coordination"))
B = encode_event(ev("warning", task_id=None, message="refresh failed"))
C = encode_event(ev("group_finished", status="completed"))


@pytest.mark.parametrize(
    ("data", "names", "skipped"),
    [
        (b"", [], 0),
        (A + B + C, ["phase_changed", "warning", "group_finished"], 0),
        (A + B + C[:17], ["phase_changed", "warning"], 0),  # torn last line: ignored, not counted
        (A + B + C[:-1], ["phase_changed", "warning", "group_finished"], 0),  # complete, newline missing: kept
        (A + b"{not json\n" + C, ["phase_changed", "group_finished"], 1),  # corrupt middle line: counted
        (A + b"\n\n   \n" + C, ["phase_changed", "group_finished"], 0),  # blank lines are nothing
        (A + b"[1, 2]\n" + b'{"at": "x"}\n' + b'{"event": 3}\n' + b'"text"\n' + C, ["phase_changed", "group_finished"], 4),
        (A + b"\xff\xfe\xfa\n" + C, ["phase_changed", "group_finished"], 1),  # not UTF-8
        (A + b"{not json", ["phase_changed"], 0),
        (A + b"[1]", ["phase_changed"], 0),  # a last line that is JSON but not an event
    ],
    ids=["empty", "three", "torn-last", "no-final-newline", "corrupt-middle", "blank-lines", "not-events",
         "not-utf8", "garbage-last", "non-event-last"],
)
def test_decode_journal(data: bytes, names: list[str], skipped: int) -> None:
    events, count = decode_journal(data)
    assert [e["event"] for e in events] == names
    assert count == skipped


def test_decode_journal_returns_what_was_encoded() -> None:
    written = [
        ev("group_started", schema=1, run=1, pid=10, tasks=["a", "b"], created_at=T0, resumed=False),
        ev("warning", task_id=None, message="ünïcode\nand a newline"),
        ev("group_finished", at=LATER, status="failed"),
    ]
    events, skipped = decode_journal(b"".join(encode_event(e) for e in written))
    assert (events, skipped) == (written, 0)


def test_decode_journal_recovers_the_event_appended_after_a_torn_line() -> None:
    """A writer died mid-line, and the next run appended after it: the glued event is not lost."""
    torn = encode_event(ev("task_started", task_id="a", attempt=1, pid=10))[:25]
    restart = encode_event(ev("group_started", at=LATER, schema=1, run=2, tasks=["a"]))
    events, skipped = decode_journal(A + torn + restart + C)
    assert [e["event"] for e in events] == ["phase_changed", "group_started", "group_finished"]
    assert events[1]["run"] == 2
    assert skipped == 1, "the torn event is still reported as skipped"


# ------------------------------------------------------------------ apply_event, one event at a time


def test_group_started_from_nothing_creates_a_pending_result_per_task() -> None:
    meta = GroupMetadata(group_id="g")
    apply_event(meta, ev("group_started", at=LATER, schema=1, run=1, pid=1, tasks=["a", "b"], created_at=T0, resumed=False))
    assert meta.tasks == ["a", "b"]
    assert meta.results == [
        new_result("a", log_path=".flow/maestro/parallel_groups/g/logs/a.log"),
        new_result("b", log_path=".flow/maestro/parallel_groups/g/logs/b.log"),
    ]
    assert meta.created_at == T0
    assert meta.started_at == LATER
    assert meta.status is TaskStatus.IN_PROGRESS
    assert meta.phase is GroupPhase.PRE_EXECUTION


def test_group_started_resets_what_runs_again_and_keeps_what_completed() -> None:
    done = result("done", status="completed", attempts=1, exit_code=0, completed_at=T0, closed=True,
                  warnings=["kept"], session_id="s-1")
    failed = result("failed", status="failed", attempts=2, exit_code=7, error="exit code 7: boom", completed_at=T0,
                    started_at=T0, subagent="backend-architect", warnings=["old"], pid=11, pgid=11, start_time=5)
    crashed = result("crashed", status="in_progress", attempts=1, started_at=T0, pid=12, pgid=12, start_time=6)
    blocked = result("blocked", status="blocked", error="blocked by open dependencies: x", blockers=["x"])
    gone = result("gone", status="failed", error="boom")
    meta = group(done, failed, crashed, blocked, gone, status=TaskStatus.FAILED, phase=GroupPhase.POST_EXECUTION,
                 started_at=T0, completed_at=T0, errors=["failed: exit code 7: boom", "tests: failed"],
                 pre_group_refresh_completed=True)

    apply_event(meta, ev("group_started", at=LATER, schema=1, run=2, tasks=["done", "failed", "crashed", "blocked", "new"],
                         created_at=LATER, resumed=True))

    assert meta.tasks == ["done", "failed", "crashed", "blocked", "new"]
    assert [r["task_id"] for r in meta.results] == meta.tasks, "the result of a task no longer listed is dropped"
    assert meta.result_for("done") == done, "a completed result is kept as it was"
    again = meta.result_for("failed")
    assert again is not None
    assert again["status"] == "pending"
    assert again["attempts"] == 2, "attempts count every launch, across runs"
    assert (again["exit_code"], again["error"], again["completed_at"], again["warnings"]) == (None, None, None, [])
    assert not {"pid", "pgid", "start_time"} & set(again)
    crashed_again = meta.result_for("crashed")
    assert crashed_again is not None and crashed_again["status"] == "pending" and "pid" not in crashed_again
    blocked_again = meta.result_for("blocked")
    assert blocked_again is not None and blocked_again["status"] == "pending" and "blockers" not in blocked_again
    assert meta.result_for("new") == result("new")
    assert meta.errors == []
    assert meta.status is TaskStatus.IN_PROGRESS
    assert meta.phase is GroupPhase.PRE_EXECUTION
    assert (meta.started_at, meta.completed_at) == (LATER, None)
    assert meta.created_at == T0, "a resumed group keeps its creation time"
    assert meta.pre_group_refresh_completed is False


@pytest.mark.parametrize(("ok", "expected"), [(True, True), (False, False), (None, False), ("yes", False)])
def test_refresh_finished(ok: Any, expected: bool) -> None:
    meta = group(result("a"))
    apply_event(meta, ev("refresh_finished", ok=ok, exit_code=0, error=None, log_path="logs/_refresh.log"))
    assert meta.pre_group_refresh_completed is expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [("concurrent_execution", GroupPhase.CONCURRENT_EXECUTION), ("coordination", GroupPhase.COORDINATION),
     ("halting", GroupPhase.PRE_EXECUTION), (None, GroupPhase.PRE_EXECUTION)],
)
def test_phase_changed(phase: Any, expected: GroupPhase) -> None:
    meta = group(result("a"))
    apply_event(meta, ev("phase_changed", phase=phase))
    assert meta.phase is expected


def test_task_prepared_records_the_subagent_skills_and_prompt() -> None:
    meta = group(result("a"))
    apply_event(meta, ev("task_prepared", task_id="a", subagent="test-automator", skills_applied=["pytest"],
                         skills_missing=["deploy"], prompt_path=".flow/maestro/parallel_groups/g/prompts/a.md"))
    entry = meta.result_for("a")
    assert entry is not None
    assert entry["subagent"] == "test-automator"
    assert entry["skills_applied"] == ["pytest"]
    assert entry["skills_missing"] == ["deploy"]
    assert entry["prompt_path"] == ".flow/maestro/parallel_groups/g/prompts/a.md"


def test_task_prepared_without_missing_skills_clears_an_earlier_list() -> None:
    meta = group(result("a", skills_missing=["deploy"]))
    apply_event(meta, ev("task_prepared", task_id="a", subagent="x", skills_applied=["deploy"], skills_missing=[]))
    entry = meta.result_for("a")
    assert entry is not None and entry.get("skills_missing", []) == []
    assert entry["skills_applied"] == ["deploy"]


def test_task_started_records_the_process_and_the_attempt() -> None:
    meta = group(result("a", attempts=1, error="old", exit_code=1, completed_at=T0))
    apply_event(meta, ev("task_started", at=LATER, task_id="a", attempt=2, pid=4242, pgid=4242, start_time=123456,
                         argv0="/usr/bin/claude"))
    entry = meta.result_for("a")
    assert entry is not None
    assert entry["status"] == "in_progress"
    assert (entry["attempts"], entry["pid"], entry["pgid"], entry["start_time"]) == (2, 4242, 4242, 123456)
    assert entry["started_at"] == LATER
    assert (entry["completed_at"], entry["exit_code"], entry["error"]) == (None, None, None)


def test_task_finished_completed_records_the_outcome_and_no_error() -> None:
    meta = group(result("a", status="in_progress", attempts=1))
    apply_event(meta, ev("task_finished", at=LATER, task_id="a", status="completed", exit_code=0, error=None,
                         extra={"session_id": "1f3c", "cost_usd": 0.0123, "num_turns": 3}))
    entry = meta.result_for("a")
    assert entry is not None
    assert (entry["status"], entry["exit_code"], entry["error"], entry["completed_at"]) == ("completed", 0, None, LATER)
    assert (entry["session_id"], entry["cost_usd"], entry["num_turns"]) == ("1f3c", 0.0123, 3)
    assert meta.errors == []


@pytest.mark.parametrize(
    ("error", "line"),
    [("exit code 7: Traceback (most recent call last)", "t-2: exit code 7: Traceback (most recent call last)"),
     ("interrupted", "t-2: interrupted"),
     (None, "t-2: failed")],
)
def test_task_finished_failed_adds_one_error_starting_with_the_task_id(error: str | None, line: str) -> None:
    meta = group(result("t-1", status="completed"), result("t-2", status="in_progress"))
    apply_event(meta, ev("task_finished", task_id="t-2", status="failed", exit_code=7, error=error))
    entry = meta.result_for("t-2")
    assert entry is not None and entry["status"] == "failed" and entry["error"] == error
    assert meta.errors == [line]


@pytest.mark.parametrize("status", ["in_progress", "pending", "blocked", "halted", None])
def test_task_finished_with_a_status_that_is_not_an_end_is_ignored(status: Any) -> None:
    meta = group(result("a", status="in_progress"))
    before = meta.to_dict()
    apply_event(meta, ev("task_finished", task_id="a", status=status, exit_code=0, error=None))
    assert meta.to_dict() == before


def test_warning_for_every_task_goes_to_each_task_that_runs_once() -> None:
    meta = group(result("a"), result("b", status="failed"), result("c", status="completed"),
                 result("d", status="blocked"))
    warning = ev("warning", task_id=None, message="refresh failed: exit code 1")
    apply_event(meta, warning)
    apply_event(meta, warning)
    warnings = {r["task_id"]: r["warnings"] for r in meta.results}
    assert warnings == {"a": ["refresh failed: exit code 1"], "b": ["refresh failed: exit code 1"], "c": [],
                        "d": ["refresh failed: exit code 1"]}
    assert meta.errors == [], "warnings never go in errors"


@pytest.mark.parametrize(
    ("task_id", "message", "expected"),
    [("a", "using fallback subagent 'general-purpose'", {"a": ["using fallback subagent 'general-purpose'"], "b": []}),
     ("zzz", "about nobody", {"a": [], "b": []}),
     ("a", None, {"a": [], "b": []}),
     (7, "not a task id", {"a": [], "b": []})],
)
def test_warning_for_one_task(task_id: Any, message: Any, expected: dict[str, list[str]]) -> None:
    meta = group(result("a"), result("b"))
    apply_event(meta, ev("warning", task_id=task_id, message=message))
    assert {r["task_id"]: r["warnings"] for r in meta.results} == expected


def test_task_blocked() -> None:
    meta = group(result("a"), result("b"))
    apply_event(meta, ev("task_blocked", task_id="b", blockers=["x", "y"], error="blocked by open dependencies: x, y"))
    entry = meta.result_for("b")
    assert entry is not None
    assert entry["status"] == "blocked"
    assert entry["error"] == "blocked by open dependencies: x, y"
    assert entry["blockers"] == ["x", "y"]
    assert entry["completed_at"] is None
    assert meta.errors == [], "a blocked task is not a failure"
    assert meta.result_for("a") == result("a")


def test_task_retry_leaves_a_warning() -> None:
    meta = group(result("a", status="in_progress", attempts=1))
    apply_event(meta, ev("task_retry", task_id="a", attempt=1, delay_seconds=2.5, reason="rate limited"))
    entry = meta.result_for("a")
    assert entry is not None
    assert entry["warnings"] == ["attempt 1 failed (rate limited); retrying in 2.5s"]
    assert meta.errors == []


@pytest.mark.parametrize(
    ("fields", "errors"),
    [({"status": "failed", "exit_code": 1, "error": "exit code 1: 3 failed, 10 passed"},
      ["tests: exit code 1: 3 failed, 10 passed"]),
     ({"status": "failed", "exit_code": None, "error": None}, ["tests: the test suite failed"]),
     ({"status": "passed", "exit_code": 0, "error": None}, []),
     ({"status": "skipped", "exit_code": None, "error": "pytest is not installed"}, [])],
)
def test_tests_finished(fields: dict[str, Any], errors: list[str]) -> None:
    meta = group(result("a", status="completed"))
    apply_event(meta, ev("tests_finished", command=["pytest", "-q"], log_path="logs/_tests.log", **fields))
    assert meta.errors == errors


@pytest.mark.parametrize(
    ("fields", "closed", "errors"),
    [({"ok": True, "error": None}, True, []),
     ({"ok": False, "error": "bd: issue is locked"}, False, ["a: close failed: bd: issue is locked"]),
     ({"ok": False, "error": None}, False, ["a: close failed: refused by the tracker"])],
)
def test_task_closed(fields: dict[str, Any], closed: bool, errors: list[str]) -> None:
    meta = group(result("a", status="completed"))
    apply_event(meta, ev("task_closed", task_id="a", **fields))
    entry = meta.result_for("a")
    assert entry is not None and entry["closed"] is closed
    assert meta.errors == errors


def test_group_error_adds_its_message() -> None:
    meta = group(result("a"))
    apply_event(meta, ev("group_error", message="interrupted by SIGTERM"))
    assert meta.errors == ["interrupted by SIGTERM"]


@pytest.mark.parametrize("status", ["completed", "failed", "blocked"])
def test_group_finished(status: str) -> None:
    meta = group(result("a"), status=TaskStatus.IN_PROGRESS, phase=GroupPhase.COORDINATION)
    apply_event(meta, ev("group_finished", at=LATER, status=status))
    assert meta.status is TaskStatus(status)
    assert meta.completed_at == LATER
    assert meta.phase is GroupPhase.POST_EXECUTION


def test_group_finished_with_an_unknown_status_is_ignored() -> None:
    meta = group(result("a"), status=TaskStatus.IN_PROGRESS, phase=GroupPhase.COORDINATION)
    before = meta.to_dict()
    apply_event(meta, ev("group_finished", at=LATER, status="stale"))
    assert meta.to_dict() == before


@pytest.mark.parametrize(
    "event",
    [ev("task_exploded", task_id="a"), {"at": T0, "task_id": "a"}, ev("task_started", task_id="zzz", attempt=9),
     ev("task_finished", task_id=["a"], status="failed"), ev("task_closed", task_id=None, ok=False), {}],
    ids=["unknown-event", "no-event-name", "unknown-task", "task-id-list", "task-id-none", "empty"],
)
def test_unknown_events_and_stray_task_ids_change_nothing(event: dict[str, Any]) -> None:
    meta = group(result("a", status="in_progress", attempts=1), status=TaskStatus.IN_PROGRESS)
    before = meta.to_dict()
    apply_event(meta, event)
    assert meta.to_dict() == before


# ------------------------------------------------------------------ replay

#: Two runs of one group: run 1 fails t1 (after a rate-limit retry of t2), run 2 completes it.
JOURNAL: list[dict[str, Any]] = [
    ev("group_started", "2026-11-28T12:00:00.000Z", schema=1, run=1, pid=100, tasks=["t1", "t2"],
       created_at="2026-11-28T11:59:59.000Z", resumed=False),
    ev("refresh_finished", "2026-11-28T12:00:01.000Z", ok=False, exit_code=1, error="refresh failed: exit code 1",
       log_path="logs/_refresh.log"),
    ev("warning", "2026-11-28T12:00:01.000Z", task_id=None, message="refresh failed: exit code 1"),
    ev("task_prepared", "2026-11-28T12:00:02.000Z", task_id="t1", subagent="backend-architect", skills_applied=[]),
    ev("task_prepared", "2026-11-28T12:00:02.000Z", task_id="t2", subagent="test-automator", skills_applied=[]),
    ev("phase_changed", "2026-11-28T12:00:02.000Z", phase="concurrent_execution"),
    ev("task_prepared", "2026-11-28T12:00:02.100Z", task_id="t1", subagent="backend-architect", skills_applied=[],
       skills_missing=["deploy"], prompt_path="prompts/t1.md"),
    ev("warning", "2026-11-28T12:00:02.100Z", task_id="t1", message="skill 'deploy' not found; running without it"),
    ev("task_started", "2026-11-28T12:00:02.200Z", task_id="t1", attempt=1, pid=201, pgid=201, start_time=1, argv0="a"),
    ev("task_started", "2026-11-28T12:00:02.300Z", task_id="t2", attempt=1, pid=202, pgid=202, start_time=2, argv0="a"),
    ev("phase_changed", "2026-11-28T12:00:02.400Z", phase="coordination"),
    ev("task_finished", "2026-11-28T12:00:03.000Z", task_id="t2", status="failed", exit_code=1,
       error="exit code 1: 429 Too Many Requests"),
    ev("task_retry", "2026-11-28T12:00:03.000Z", task_id="t2", attempt=1, delay_seconds=2, reason="rate limited"),
    ev("task_started", "2026-11-28T12:00:05.000Z", task_id="t2", attempt=2, pid=203, pgid=203, start_time=3, argv0="a"),
    ev("task_finished", "2026-11-28T12:00:09.000Z", task_id="t1", status="failed", exit_code=7,
       error="exit code 7: AssertionError"),
    ev("task_finished", "2026-11-28T12:00:10.000Z", task_id="t2", status="completed", exit_code=0, error=None,
       extra={"session_id": "s-2", "cost_usd": 0.02, "num_turns": 4}),
    ev("phase_changed", "2026-11-28T12:00:10.000Z", phase="post_execution"),
    ev("group_finished", "2026-11-28T12:00:10.100Z", status="failed"),
    # run 2: t2 is kept, t1 runs again and completes
    ev("group_started", "2026-11-28T13:00:00.000Z", schema=1, run=2, pid=300, tasks=["t1", "t2"],
       created_at="2026-11-28T13:00:00.000Z", resumed=True),
    ev("refresh_finished", "2026-11-28T13:00:01.000Z", ok=True, exit_code=0, error=None, log_path="logs/_refresh.log"),
    ev("task_prepared", "2026-11-28T13:00:02.000Z", task_id="t1", subagent="backend-architect", skills_applied=[]),
    ev("phase_changed", "2026-11-28T13:00:02.000Z", phase="concurrent_execution"),
    ev("task_prepared", "2026-11-28T13:00:02.100Z", task_id="t1", subagent="backend-architect",
       skills_applied=["deploy"], skills_missing=[], prompt_path="prompts/t1.md"),
    ev("task_started", "2026-11-28T13:00:02.200Z", task_id="t1", attempt=2, pid=401, pgid=401, start_time=4, argv0="a"),
    ev("phase_changed", "2026-11-28T13:00:02.300Z", phase="coordination"),
    ev("task_finished", "2026-11-28T13:00:08.000Z", task_id="t1", status="completed", exit_code=0, error=None,
       extra={"session_id": "s-1", "cost_usd": 0.01, "num_turns": 2}),
    ev("phase_changed", "2026-11-28T13:00:08.000Z", phase="post_execution"),
    ev("tests_finished", "2026-11-28T13:00:20.000Z", status="passed", exit_code=0, command=["pytest", "-q"],
       error=None, log_path="logs/_tests.log"),
    ev("task_closed", "2026-11-28T13:00:21.000Z", task_id="t1", ok=True, error=None),
    ev("task_closed", "2026-11-28T13:00:21.000Z", task_id="t2", ok=True, error=None),
    ev("group_finished", "2026-11-28T13:00:21.500Z", status="completed"),
]
RUN_1 = JOURNAL[:18]


def test_replay_of_the_first_run() -> None:
    meta = replay("g", RUN_1)
    assert meta.status is TaskStatus.FAILED
    assert meta.errors == ["t2: exit code 1: 429 Too Many Requests", "t1: exit code 7: AssertionError"]
    t1, t2 = meta.results
    assert (t1["status"], t1["attempts"], t1["exit_code"]) == ("failed", 1, 7)
    assert t1["warnings"] == ["refresh failed: exit code 1", "skill 'deploy' not found; running without it"]
    assert t1["skills_missing"] == ["deploy"]
    assert (t2["status"], t2["attempts"], t2["pid"], t2["session_id"]) == ("completed", 2, 203, "s-2")
    assert meta.completed_at == "2026-11-28T12:00:10.100Z"


def test_replay_of_both_runs() -> None:
    meta = replay("g", JOURNAL)
    assert meta.status is TaskStatus.COMPLETED
    assert meta.errors == []
    assert meta.phase is GroupPhase.POST_EXECUTION
    assert meta.pre_group_refresh_completed is True
    assert meta.created_at == "2026-11-28T11:59:59.000Z"
    assert meta.started_at == "2026-11-28T13:00:00.000Z"
    assert meta.completed_at == "2026-11-28T13:00:21.500Z"
    t1, t2 = meta.results
    assert t1["status"] == "completed"
    assert t1["attempts"] == 2
    assert (t1["pid"], t1["session_id"], t1["closed"], t1["exit_code"], t1["error"]) == (401, "s-1", True, 0, None)
    assert t1["warnings"] == [], "last run's warnings of a task that ran again are gone"
    assert t1.get("skills_missing", []) == [], "the skill was found in run 2"
    assert t1["skills_applied"] == ["deploy"]
    assert t2["status"] == "completed" and t2["attempts"] == 2, "a completed task is not run again"
    assert t2["completed_at"] == "2026-11-28T12:00:10.000Z"
    assert t2["warnings"] == ["refresh failed: exit code 1", "attempt 1 failed (rate limited); retrying in 2s"]
    assert t2["closed"] is True
    assert sum(r["status"] == "completed" for r in meta.results) == 2


def test_replaying_the_journal_over_the_final_snapshot_changes_nothing() -> None:
    final = replay("g", JOURNAL)
    again = replay("g", JOURNAL, base=copy.deepcopy(final))
    assert again.to_dict() == final.to_dict()


@pytest.mark.parametrize("cut", range(len(JOURNAL) + 1))
def test_replaying_the_journal_over_a_snapshot_taken_at_any_point_gives_the_same_state(cut: int) -> None:
    """A snapshot lags the journal; resume replays the whole journal over it."""
    final = replay("g", JOURNAL).to_dict()
    snapshot = GroupMetadata.from_dict(json.loads(json.dumps(replay("g", JOURNAL[:cut]).to_dict())))
    assert replay("g", JOURNAL, base=snapshot).to_dict() == final


def test_replay_through_the_journal_bytes() -> None:
    data = b"".join(encode_event(e) for e in JOURNAL)
    events, skipped = decode_journal(data + b'{"event":"task_sta')
    assert skipped == 0
    assert replay("g", events).to_dict() == replay("g", JOURNAL).to_dict()


def test_a_run_whose_coordinator_died_is_run_again_on_resume() -> None:
    died = [*JOURNAL[:10]]  # t1 and t2 started, nothing finished
    meta = replay("g", died)
    assert [r["status"] for r in meta.results] == ["in_progress", "in_progress"]
    assert meta.status is TaskStatus.IN_PROGRESS
    resumed = replay("g", [ev("group_started", LATER, schema=1, run=2, pid=9, tasks=["t1", "t2"], resumed=True)],
                     base=meta)
    assert [r["status"] for r in resumed.results] == ["pending", "pending"]
    assert [r["attempts"] for r in resumed.results] == [1, 1]
    assert all("pid" not in r for r in resumed.results)


def test_replay_without_a_base_starts_from_an_empty_group() -> None:
    meta = replay("infra", [])
    assert meta.group_id == "infra"
    assert meta.results == [] and meta.status is TaskStatus.PENDING


def test_every_event_has_a_type_and_a_fold_and_nothing_else() -> None:
    from typing import get_args

    from maestro_parallel.event_types import EVENT_TYPES, EventName
    from maestro_parallel.events import _HANDLERS

    assert set(EVENT_TYPES) == set(_HANDLERS) == set(get_args(EventName))


def test_an_event_carries_the_fields_its_type_names() -> None:
    from maestro_parallel.event_types import TaskStarted

    event = make_event("task_started", task_id="t", attempt=1, pid=10, pgid=10, start_time=None, argv0="agent")
    assert set(TaskStarted.__required_keys__) - {"group_id"} <= set(event)
    assert set(event) <= set(TaskStarted.__required_keys__) | set(TaskStarted.__optional_keys__)
