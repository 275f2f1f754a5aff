"""One shared rate-limit governor per preset: a shared backoff and an adaptive concurrency limit.

When one agent is rate limited, every other agent of the same preset is about to be too: they share
an account and an API.  So instead of each task backing off on its own (and the others hammering on),
every pending launch and retry of that preset waits out one shared backoff, and the number of agents
allowed to run at once halves (never below 1, and never below the agents the API is still serving),
growing back by one per success up to ``max_parallel`` — additive increase, multiplicative decrease,
as TCP does for the same reason.  A success ends the backoff: the API is serving again.

:func:`classify` is the pure decision on what an agent's run says (rate limited, failed, succeeded);
:class:`Governor` only orchestrates waiting.  Usage::

    async with governor.slot("claude"):
        verdict = await run_agent(...)
    governor.report("claude", classify(...))
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

__all__ = ("Governor", "Outcome", "classify", "is_rate_limited_text", "next_backoff")


class Outcome(StrEnum):
    """What one agent run tells the governor."""

    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"  # a rate limit or a transient overload: back off, then retry
    FAILED = "failed"              # any other failure: says nothing about the API's capacity


#: HTTP statuses that mean "too much, try later": 429 rate limited, 529 overloaded (Anthropic).
RATE_LIMIT_STATUSES = frozenset({429, 529})

_RATE_LIMIT_WORDS = re.compile(
    # "rate" must not end another word: "generate limits" and "accurate limit" are no rate limit.
    r"\b429\b|(?<![a-z])rate[ _-]?limit|too many requests|temporarily limiting|overloaded"
    # Codex words every HTTP 5xx this way (the apostrophe is typographic in its output).
    r"|currently experiencing high demand",
    re.IGNORECASE,
)


def is_rate_limited_text(text: str | bytes) -> bool:
    """True when words say an agent was rate limited or the service was overloaded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _RATE_LIMIT_WORDS.search(text) is not None


def classify(
    *, completed: bool, claude_result: Mapping[str, Any] | None = None, codex_failure: str | None = None,
    text: str | bytes = b"",
) -> Outcome:
    """Classify a finished run: Claude's ``api_error_status`` first, then Codex's failure event, then words.

    A Claude result with an ``api_error_status`` is decided by that number alone: a 500 whose
    message says "try again" is not a rate limit, and a 429 is one whatever its words.  Codex has no
    status field; its ``error``/``turn.failed`` message is the evidence.  ``text`` (the end of the
    log) is read only when the agent left no report of its own.
    """
    if completed:
        return Outcome.SUCCESS
    if claude_result is not None:
        status = claude_result.get("api_error_status")
        if isinstance(status, int) and not isinstance(status, bool):
            return Outcome.RATE_LIMITED if status in RATE_LIMIT_STATUSES else Outcome.FAILED
        words = [claude_result.get("result")]
        errors = claude_result.get("errors")
        if isinstance(errors, list):
            words += errors
        text = "\n".join(w for w in words if isinstance(w, str))
    elif codex_failure is not None:
        text = codex_failure
    return Outcome.RATE_LIMITED if is_rate_limited_text(text) else Outcome.FAILED


def next_backoff(consecutive: int, *, base: float, cap: float) -> float:
    """The shared backoff after the ``consecutive``-th rate limit in a row: ``base * 2**(n-1)``, capped."""
    return min(cap, base * 2 ** max(0, consecutive - 1))


@dataclass
class _Preset:
    ceiling: float                 # max_parallel, or infinity
    limit: float                   # agents permitted at once now
    running: int = 0
    backoff_until: float = 0.0
    consecutive: int = 0           # rate limits since the last success
    rate_limits: int = 0           # all of them, for reports
    changed: anyio.Event = field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class Governor:
    """Shared backoff and adaptive concurrency per preset, for every group of a run (or a plan).

    ``max_parallel`` 0 means no ceiling: the limit then starts unbounded, and the first rate limit
    halves the number running at that moment.
    """

    def __init__(self, max_parallel: int = 0, *, base_delay: float = 2.0, max_delay: float = 60.0) -> None:
        self._ceiling = float(max_parallel) if max_parallel > 0 else math.inf
        self._base = base_delay
        self._cap = max_delay
        self._presets: dict[str, _Preset] = {}

    def _state(self, preset: str) -> _Preset:
        state = self._presets.get(preset)
        if state is None:
            state = self._presets[preset] = _Preset(self._ceiling, self._ceiling)
        return state

    def limit(self, preset: str) -> float:
        """Agents of ``preset`` permitted at once now (``inf`` when unbounded)."""
        return self._state(preset).limit

    def running(self, preset: str) -> int:
        return self._state(preset).running

    def rate_limits(self, preset: str) -> int:
        """Rate limits reported for ``preset`` so far."""
        return self._state(preset).rate_limits

    def backoff_remaining(self, preset: str) -> float:
        return max(0.0, self._state(preset).backoff_until - anyio.current_time())

    @asynccontextmanager
    async def slot(self, preset: str) -> AsyncIterator[None]:
        """Wait until ``preset`` is out of backoff and under its limit, then hold one of its slots."""
        state = self._state(preset)
        while True:
            wait = state.backoff_until - anyio.current_time()
            if wait > 0:
                with anyio.move_on_after(wait):
                    await state.changed.wait()  # woken by any change: look again
                continue
            if state.running < state.limit:
                break
            await state.changed.wait()
        state.running += 1
        try:
            yield
        finally:
            state.running -= 1
            state.notify()

    def report(self, preset: str, outcome: Outcome) -> None:
        """Take one finished run's outcome (report after leaving the slot).

        A rate limit opens a shared backoff (doubling while rate limits continue) and halves the
        limit once per backoff window — but never below the number of agents the API is still
        serving, since those were admitted: within a window each further rate limit lowers the
        limit to that number.  A success ends the backoff (the API serves again) and grows the limit
        by one when the limit was what held agents back.
        """
        state = self._state(preset)
        now = anyio.current_time()
        if outcome is Outcome.RATE_LIMITED:
            state.rate_limits += 1
            survivors = state.running
            if state.limit == math.inf:
                state.limit = float(survivors + 1)  # the first rate limit: what ran, this one included
            if now >= state.backoff_until:
                state.limit = max(1.0, min(state.limit, float(max(survivors, int(state.limit) // 2))))
                state.consecutive += 1
                state.backoff_until = now + next_backoff(state.consecutive, base=self._base, cap=self._cap)
            else:
                state.limit = max(1.0, min(state.limit, float(survivors)))
        elif outcome is Outcome.SUCCESS:
            state.consecutive = 0
            state.backoff_until = min(state.backoff_until, now)
            if state.limit != math.inf and state.running + 1 >= state.limit:
                state.limit = min(state.ceiling, state.limit + 1)
        state.notify()
