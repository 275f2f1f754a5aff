"""The shared rate-limit governor: classification (pure) and waiting (real anyio tasks)."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.abc
import pytest

from maestro_parallel.agents.ratelimit import Outcome, classify, is_rate_limited_text, next_backoff
from maestro_parallel.runtime.governor import Governor

RL, FAILED, SUCCESS = Outcome.RATE_LIMITED, Outcome.FAILED, Outcome.SUCCESS


def claude(status: int | None, result: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "result", "subtype": "success", "is_error": True, "api_error_status": status, "result": result,
            **extra}


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(("kwargs", "outcome"), [
    ({"completed": True, "claude_result": claude(429)}, SUCCESS),
    # Claude: the status decides, whatever the words (these are the real CLI's).
    ({"claude_result": claude(429, "API Error: Request rejected (429) · rate_limit_error")}, RL),
    ({"claude_result": claude(529, "API Error: 529 overloaded_error. This is a server-side issue")}, RL),
    ({"claude_result": claude(429, "")}, RL),
    ({"claude_result": claude(500, "API Error: 500 api_error. overloaded? try again in a moment")}, FAILED),
    ({"claude_result": claude(401, "rate limit words in a 401")}, FAILED),
    # Claude without a status (an older CLI, or a failure that is no API error): its words.
    ({"claude_result": claude(None, "API Error: 429 rate_limit_error")}, RL),
    ({"claude_result": claude(None, "", errors=["Overloaded"])}, RL),
    ({"claude_result": claude(None, "Not logged in · Please run /login")}, FAILED),
    ({"claude_result": {"is_error": True, "api_error_status": True, "result": "rate limit"}}, RL),  # bool is no status
    # Codex: its failure event's message (the real CLI's words).
    ({"codex_failure": "turn.failed: exceeded retry limit, last status: 429 Too Many Requests"}, RL),
    ({"codex_failure": "turn.failed: We\u2019re currently experiencing high demand, which may cause temporary errors."},
     RL),
    ({"codex_failure": "turn.failed: stream disconnected before completion: stream closed before response.completed"},
     FAILED),
    # Nothing reported: the log's end.
    ({"text": b"HTTP 429 Too Many Requests"}, RL),
    ({"text": b"the generate limits are fine; accurate limit"}, FAILED),
    ({"text": b""}, FAILED),
])
def test_classify_reads_the_status_before_the_words(kwargs: dict[str, Any], outcome: Outcome) -> None:
    kwargs.setdefault("completed", False)
    assert classify(**kwargs) is outcome


@pytest.mark.parametrize("text", ["rate limit", "Rate-Limited", "rate_limit_error", "too many requests",
                                  "Overloaded", "We're currently experiencing high demand"])
def test_rate_limit_words(text: str) -> None:
    assert is_rate_limited_text(text) and is_rate_limited_text(text.encode())


@pytest.mark.parametrize(("n", "delay"), [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (40, 60.0)])
def test_backoff_doubles_and_is_capped(n: int, delay: float) -> None:
    assert next_backoff(n, base=2.0, cap=60.0) == delay


# --------------------------------------------------------------------------- waiting, with real tasks


async def test_never_more_agents_than_the_limit() -> None:
    governor = Governor(3)
    running = peak = 0

    async def agent() -> None:
        nonlocal running, peak
        async with governor.slot("claude"):
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.02)
            running -= 1
        governor.report("claude", SUCCESS)

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(agent)
    assert peak == 3 and governor.running("claude") == 0


class Holders:
    """Real anyio tasks holding slots of a preset until released."""

    def __init__(self, governor: Governor, tg: anyio.abc.TaskGroup, preset: str = "claude") -> None:
        self.governor, self.tg, self.preset = governor, tg, preset
        self.release = anyio.Event()

    async def hold(self, count: int) -> None:
        for _ in range(count):
            self.tg.start_soon(self._hold)
        while self.governor.running(self.preset) < count:
            await anyio.sleep(0.005)

    async def _hold(self) -> None:
        async with self.governor.slot(self.preset):
            await self.release.wait()

    def done(self) -> None:
        self.release.set()


async def test_a_rate_limit_halves_the_limit_but_never_below_the_agents_still_served() -> None:
    governor = Governor(8, base_delay=0.2)
    async with anyio.create_task_group() as tg:
        holders = Holders(governor, tg)
        await holders.hold(2)
        governor.report("claude", RL)
        assert governor.limit("claude") == 4  # halved: 2 still served is below half
        governor.report("claude", RL)  # another one of the same wave: no second halving...
        assert governor.limit("claude") == 2  # ...but never more than the API still serves
        await anyio.sleep(governor.backoff_remaining("claude") + 0.01)
        governor.report("claude", RL)  # a new window: half of 2 is 1, yet 2 are served
        assert governor.limit("claude") == 2 and governor.rate_limits("claude") == 3
        holders.done()
    await anyio.sleep(governor.backoff_remaining("claude") + 0.01)
    governor.report("claude", RL)  # nobody served: halved, never below 1
    assert governor.limit("claude") == 1
    await anyio.sleep(governor.backoff_remaining("claude") + 0.01)
    governor.report("claude", RL)
    assert governor.limit("claude") == 1


async def test_a_success_ends_the_backoff_and_grows_a_binding_limit_back_to_max_parallel() -> None:
    governor = Governor(3, base_delay=30)
    governor.report("claude", RL)
    assert governor.limit("claude") == 1 and governor.backoff_remaining("claude") > 29
    governor.report("claude", SUCCESS)  # the one permitted agent succeeded: the API serves again
    assert governor.backoff_remaining("claude") == 0 and governor.limit("claude") == 2
    governor.report("claude", SUCCESS)  # the limit held nobody back (nothing else runs): no growth
    assert governor.limit("claude") == 2
    async with anyio.create_task_group() as tg:
        holders = Holders(governor, tg)
        await holders.hold(1)
        governor.report("claude", SUCCESS)  # 1 running + this one = the limit: it was binding...
        assert governor.limit("claude") == 2
        governor.report("claude", SUCCESS)  # ...and a round of the limit's size grows it by one
        assert governor.limit("claude") == 3
        await holders.hold(2)
        governor.report("claude", SUCCESS)
        assert governor.limit("claude") == 3  # max_parallel
        holders.done()
    governor.report("claude", FAILED)  # an ordinary failure says nothing about capacity
    assert governor.limit("claude") == 3


async def test_the_backoff_doubles_while_rate_limits_continue_and_resets_on_success() -> None:
    governor = Governor(4, base_delay=0.1, max_delay=10)
    governor.report("codex", RL)
    first = governor.backoff_remaining("codex")
    await anyio.sleep(first + 0.01)
    governor.report("codex", RL)
    second = governor.backoff_remaining("codex")
    assert 0.05 < first <= 0.1 and 0.15 < second <= 0.2
    await anyio.sleep(second + 0.01)
    governor.report("codex", SUCCESS)
    governor.report("codex", RL)
    assert governor.backoff_remaining("codex") <= 0.1


async def test_every_pending_launch_of_the_preset_waits_out_one_shared_backoff() -> None:
    governor = Governor(4, base_delay=0.5)
    started: dict[str, float] = {}

    async def launch(name: str, preset: str) -> None:
        async with governor.slot(preset):
            started[name] = anyio.current_time()

    t0 = anyio.current_time()
    governor.report("claude", RL)
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(launch, f"claude-{i}", "claude")
        tg.start_soon(launch, "codex", "codex")
    assert started["codex"] - t0 < 0.25  # another preset has its own API and its own backoff
    for i in range(3):
        assert started[f"claude-{i}"] - t0 >= 0.45


async def test_a_waiter_starts_the_moment_a_slot_frees() -> None:
    governor = Governor(1)
    leave = anyio.Event()
    entered: list[float] = []

    async def holder() -> None:
        async with governor.slot("claude"):
            await leave.wait()

    async def second() -> None:
        async with governor.slot("claude"):
            entered.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await anyio.sleep(0.05)
        tg.start_soon(second)
        await anyio.sleep(0.2)
        assert entered == []  # still held
        released_at = anyio.current_time()
        leave.set()
    assert entered and entered[0] - released_at < 0.1


async def test_without_max_parallel_the_first_rate_limit_sets_a_limit_from_what_runs() -> None:
    governor = Governor(0, base_delay=0.05)
    assert governor.limit("claude") == math.inf
    async with anyio.create_task_group() as tg:
        holders = Holders(governor, tg)
        await holders.hold(5)
        governor.report("claude", RL)  # a sixth agent, just out of its slot, was rate limited
        assert governor.limit("claude") == 5  # half of 6 is 3, but 5 are still served
        holders.done()


async def test_a_rate_limit_sent_before_the_last_success_opens_no_new_backoff() -> None:
    governor = Governor(base_delay=30)
    async with governor.slot("claude") as early:
        pass
    await anyio.sleep(0.01)
    governor.report("claude", SUCCESS)  # the API served one after `early` was sent
    assert governor.report("claude", RL, admitted=early) is None  # old news: no new backoff
    assert governor.backoff_remaining("claude") == 0 and governor.rate_limits("claude") == 1
    async with governor.slot("claude") as late:
        pass
    assert governor.report("claude", RL, admitted=late) == 30  # sent after it: the API refuses again
    assert governor.backoff_remaining("claude") > 29
