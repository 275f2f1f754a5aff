"""A group's view of the run's budget: whether a launch may go ahead, and the costs as they come.

The accounting is :class:`~maestro_parallel.budget.Spending` (pure, one per run or plan, shared by
its groups); this gate ties it to one group's journal: every reported cost that a cap watches is
journaled as a ``budget`` event, so ``status`` and the live progress show spent vs budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..budget import Spending
from .sink import EventSink

__all__ = ("BudgetGate",)


class BudgetGate:
    """Refuses launches and retries of one group once a cap is reached; records what was spent."""

    def __init__(self, spending: Spending, group_id: str, sink: EventSink) -> None:
        self.spending = spending
        self.group_id = group_id
        self.sink = sink

    @property
    def capped(self) -> bool:
        """True when a group or plan cap applies (then spending is journaled)."""
        limits = self.spending.limits
        return limits.group_usd is not None or limits.plan_usd is not None

    def refusal(self) -> str | None:
        """``budget exhausted ($x of $y)`` once a cap is reached, else None."""
        return self.spending.refusal(self.group_id)

    async def announce(self) -> None:
        """Journal the caps and what was already spent (at the start of a run)."""
        if self.capped:
            await self.sink.emit("budget", **self.spending.report(self.group_id))

    async def charge(self, extra: Mapping[str, Any]) -> None:
        """Add one finished attempt's reported ``cost_usd``; journal the new total when a cap watches it."""
        cost = extra.get("cost_usd")
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost <= 0:
            return
        self.spending.charge(self.group_id, float(cost))
        await self.announce()
