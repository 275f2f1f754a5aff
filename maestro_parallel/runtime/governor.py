"""One shared rate-limit governor per preset: a shared backoff and an adaptive concurrency limit.

When one agent is rate limited, every other agent of the same preset is about to be too: they share
an account and an API.  So instead of each task backing off on its own (and the others hammering on),
every pending launch and retry of that preset waits out one shared backoff, and the number of agents
allowed to run at once halves (never below 1, and never below the agents the API is still serving),
growing back by one per round of successes up to ``max_parallel`` — additive increase, multiplicative decrease,
as TCP does for the same reason.  A success ends the backoff: the API is serving again.

:func:`~maestro_parallel.agents.ratelimit.classify` is the pure decision on what an agent's run
says (rate limited, failed, succeeded); :class:`Governor` only orchestrates waiting.  Usage::

    async with governor.slot("claude"):
        verdict = await run_agent(...)
    governor.report("claude", classify(...))
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from ..agents.ratelimit import Outcome, next_backoff

__all__ = ("BACKOFF_BASE_SECONDS", "BACKOFF_MAX_SECONDS", "Governor")

#: The shared backoff: ``base * 2**(n-1)`` after the n-th rate limit in a row, capped.
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 60.0


@dataclass
class _Preset:
    ceiling: float                 # max_parallel, or infinity
    limit: float                   # agents permitted at once now
    running: int = 0
    backoff_until: float = 0.0
    consecutive: int = 0           # rate limits since the last success
    rate_limits: int = 0           # all of them, for reports
    binding: int = 0               # successes at a full limit since it last changed
    last_success: float = -math.inf  # when the API last served one
    changed: anyio.Event = field(default_factory=anyio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class Governor:
    """Shared backoff and adaptive concurrency per preset, for every group of a run (or a plan).

    ``max_parallel`` 0 means no ceiling: the limit then starts unbounded, and the first rate limit
    halves the number running at that moment.
    """

    def __init__(
        self, max_parallel: int = 0, *, base_delay: float | None = None, max_delay: float | None = None
    ) -> None:
        self._ceiling = float(max_parallel) if max_parallel > 0 else math.inf
        self._base = BACKOFF_BASE_SECONDS if base_delay is None else base_delay
        self._cap = BACKOFF_MAX_SECONDS if max_delay is None else max_delay
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
    async def slot(self, preset: str) -> AsyncIterator[float]:
        """Wait until ``preset`` is out of backoff and under its limit, then hold one of its slots.

        Yields the time it was admitted: pass it to :meth:`report` as ``admitted``.
        """
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
            yield anyio.current_time()
        finally:
            state.running -= 1
            state.notify()

    def report(self, preset: str, outcome: Outcome, *, admitted: float | None = None) -> float | None:
        """Take one finished run's outcome (report after leaving the slot, before awaiting anything).

        Returns the length of the shared backoff this report opened (for the journal), or None.

        A rate limit opens a shared backoff (doubling while rate limits continue) and halves the
        limit once per backoff window — but never below the number of agents the API is still
        serving, since those were admitted: within a window each further rate limit lowers the
        limit to that number.  A rate limit of a run ``admitted`` before the API's last success is
        old news (it was sent before the API was seen serving again): it lowers the limit the same
        way but opens no new backoff.  A success ends the backoff (the API serves again); the
        limit grows by one after ``limit`` successes that it held agents back for — one per round
        of the API, as TCP's congestion window grows per round trip, not per acknowledgement.
        """
        state = self._state(preset)
        now = anyio.current_time()
        opened: float | None = None
        if outcome is Outcome.RATE_LIMITED:
            state.rate_limits += 1
            state.binding = 0
            survivors = state.running
            if state.limit == math.inf:
                state.limit = float(survivors + 1)  # the first rate limit: what ran, this one included
            stale = admitted is not None and admitted < state.last_success
            if now >= state.backoff_until and not stale:
                state.limit = max(1.0, min(state.limit, float(max(survivors, int(state.limit) // 2))))
                state.consecutive += 1
                opened = next_backoff(state.consecutive, base=self._base, cap=self._cap)
                state.backoff_until = now + opened
            else:
                state.limit = max(1.0, min(state.limit, float(survivors)))
        elif outcome is Outcome.SUCCESS:
            state.last_success = now
            state.consecutive = 0
            state.backoff_until = min(state.backoff_until, now)
            if state.limit != math.inf and state.running + 1 >= state.limit:
                state.binding += 1
                if state.binding >= state.limit:  # one more per round of the API, not per success
                    state.limit = min(state.ceiling, state.limit + 1)
                    state.binding = 0
        state.notify()
        return opened
