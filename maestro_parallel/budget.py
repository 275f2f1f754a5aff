"""Budgets: what agents may spend, per task, per group and per plan, from the costs they report.

``[agent] max_budget_usd`` bounds one task (the claude preset passes it as ``--max-budget-usd``,
so the CLI itself stops the session); ``[budget] group_usd`` and ``plan_usd`` bound the sum of the
reported costs (``cost_usd`` of each result).  Once a cap is reached nothing new is launched or
retried: the tasks still waiting end ``failed`` with ``budget exhausted ($spent of $limit)``.  Tasks
already running finish (a cost is known only when a run ends).

Everything here is pure: :func:`budget_limits` reads the caps from the checked configuration (0:
none), :class:`Spending` accounts and answers "may this launch?".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .config import Config

__all__ = ("BudgetLimits", "Spending", "budget_args", "budget_exhausted", "budget_limits", "format_usd",
           "spent_vs_budget")


def format_usd(value: float) -> str:
    """``$1.50``; small amounts keep their first digit (``$0.0008``, ``$0.000001``), never ``$0.00``."""
    if value == 0 or abs(value) >= 0.01:
        return f"${value:.2f}"
    digits = max(4, -math.floor(math.log10(abs(value))))
    return f"${value:.{digits}f}".rstrip("0")


def budget_exhausted(spent: float, limit: float) -> str:
    """The error of a task that was not launched or retried because a budget was spent."""
    return f"budget exhausted ({format_usd(spent)} of {format_usd(limit)})"


def spent_vs_budget(spent: float, limit: float | None) -> str:
    """What ``status`` and the progress show: ``$1.20 of $5.00`` (or just the spending)."""
    return format_usd(spent) if limit is None else f"{format_usd(spent)} of {format_usd(limit)}"


@dataclass(frozen=True)
class BudgetLimits:
    """The caps, in US dollars; None means no cap."""

    task_usd: float | None = None
    group_usd: float | None = None
    plan_usd: float | None = None


def _cap(value: float) -> float | None:
    return value if value > 0 else None  # the config says 0 for "none"


def budget_limits(config: Config) -> BudgetLimits:
    """The caps of ``[agent] max_budget_usd`` and ``[budget] group_usd / plan_usd`` (checked by the config)."""
    return BudgetLimits(_cap(config.agent.max_budget_usd), _cap(config.budget.group_usd),
                        _cap(config.budget.plan_usd))


def budget_args(preset: str, task_usd: float | None) -> list[str]:
    """The argv that makes the agent CLI enforce the per-task budget itself (claude only; 0 or None: none)."""
    if preset != "claude" or not task_usd or task_usd <= 0:
        return []
    return ["--max-budget-usd", f"{task_usd:g}"]


@dataclass
class Spending:
    """Reported costs of a plan's groups, and whether another launch may go ahead.

    One object per plan (a single ``execute`` is a plan of one group), shared by its groups.
    """

    limits: BudgetLimits
    by_group: dict[str, float] = field(default_factory=dict)

    @property
    def plan_spent(self) -> float:
        return round(sum(self.by_group.values()), 6)

    def group_spent(self, group_id: str) -> float:
        return round(self.by_group.get(group_id, 0.0), 6)

    def charge(self, group_id: str, cost_usd: float | None) -> None:
        """Add one finished run's reported cost (a run that reported none costs nothing known)."""
        if cost_usd is not None and math.isfinite(cost_usd) and cost_usd > 0:
            self.by_group[group_id] = self.by_group.get(group_id, 0.0) + cost_usd

    def refusal(self, group_id: str) -> str | None:
        """Why nothing more of ``group_id`` may launch or retry (``budget exhausted ...``), or None."""
        plan_cap, group_cap = self.limits.plan_usd, self.limits.group_usd
        if plan_cap is not None and self.plan_spent >= plan_cap:
            return budget_exhausted(self.plan_spent, plan_cap)
        if group_cap is not None and self.group_spent(group_id) >= group_cap:
            return budget_exhausted(self.group_spent(group_id), group_cap)
        return None

    def report(self, group_id: str) -> dict[str, Any]:
        """Spent vs budget for a group's JSON (``status``): the group's and the plan's."""
        document: dict[str, Any] = {"spent_usd": self.group_spent(group_id)}
        if self.limits.group_usd is not None:
            document["group_usd"] = self.limits.group_usd
        if self.limits.plan_usd is not None:
            document["plan_spent_usd"] = self.plan_spent
            document["plan_usd"] = self.limits.plan_usd
        return document
