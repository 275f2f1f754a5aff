"""The pure end-of-run rules: the stop state and the group's final status, without an event loop."""

from __future__ import annotations

from typing import Any

import pytest

from maestro_parallel.models import TaskStatus
from maestro_parallel.runtime.attempt import retry_delay
from maestro_parallel.runtime.outcome import StopState, final_status


def results(*statuses: str) -> list[dict[str, Any]]:
    return [{"task_id": f"t{i}", "status": status} for i, status in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "errors", "expected"),
    [
        (("completed", "completed"), [], TaskStatus.COMPLETED),
        ((), [], TaskStatus.COMPLETED),
        (("completed", "blocked"), [], TaskStatus.BLOCKED),
        (("blocked", "failed"), [], TaskStatus.FAILED),
        (("completed", "in_progress"), [], TaskStatus.FAILED),
        (("pending",), [], TaskStatus.FAILED),
        (("completed", "blocked"), ["run interrupted by SIGINT"], TaskStatus.FAILED),
    ],
)
def test_final_status(statuses: tuple[str, ...], errors: list[str], expected: TaskStatus) -> None:
    assert final_status(results(*statuses), errors) is expected


def test_the_first_stop_request_keeps_its_reason_and_force_only_grows() -> None:
    stop = StopState()
    assert stop.grace(5.0) == 5.0 and stop.group_error() is None
    stop.request("interrupted by SIGINT")
    stop.request("interrupted by SIGTERM", force=True)
    stop.request("interrupted by SIGINT")
    assert (stop.reason, stop.force) == ("interrupted by SIGINT", True)
    assert stop.grace(5.0) == 0.0
    assert stop.group_error() == "run interrupted by SIGINT"


@pytest.mark.parametrize(
    ("stop", "past_deadline", "expected"),
    [
        (StopState(halted=True), True, "halted"),
        (StopState(halted=True, reason="interrupted by SIGINT"), False, "halted"),
        (StopState(), True, "group timed out after 30s"),
        (StopState(reason="interrupted by SIGINT"), True, "interrupted"),
        (StopState(cancelled=True), False, "interrupted"),
    ],
)
def test_the_error_of_a_stopped_task(stop: StopState, past_deadline: bool, expected: str) -> None:
    assert stop.task_error(past_group_deadline=past_deadline, group_timeout=30) == expected


def test_a_cancelled_run_leaves_a_group_error_unless_a_request_said_why() -> None:
    assert StopState(cancelled=True).group_error() == "run interrupted: cancelled"
    assert StopState(cancelled=True, reason="interrupted by SIGTERM").group_error() == "run interrupted by SIGTERM"


def test_the_retry_delay_doubles_from_the_base_and_is_capped() -> None:
    assert [retry_delay(n, 1.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert retry_delay(10, 1.0) == 60.0
    assert retry_delay(1, 0.5) == 1.0 and retry_delay(2, 1.5) == 6.0
