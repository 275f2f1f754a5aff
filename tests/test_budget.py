"""Budget accounting (pure): caps, the exhausted error, spent vs budget, config validation."""

from __future__ import annotations

import math
from typing import Any

import pytest

from maestro_parallel.budget import (
    BudgetLimits,
    Spending,
    budget_args,
    budget_exhausted,
    format_usd,
    parse_budget,
    spent_vs_budget,
)
from maestro_parallel.errors import ConfigError


@pytest.mark.parametrize(("value", "text"), [
    (0, "$0.00"), (1.5, "$1.50"), (12.345, "$12.35"), (0.01, "$0.01"), (0.0008, "$0.0008"), (0.00042, "$0.0004"),
])
def test_amounts_are_shown_without_hiding_small_costs(value: float, text: str) -> None:
    assert format_usd(value) == text


def test_the_exhausted_error_and_spent_vs_budget() -> None:
    assert budget_exhausted(5.25, 5) == "budget exhausted ($5.25 of $5.00)"
    assert spent_vs_budget(1.2, 5) == "$1.20 of $5.00"
    assert spent_vs_budget(1.2, None) == "$1.20"


@pytest.mark.parametrize(("agent", "budget", "limits"), [
    ({}, {}, BudgetLimits()),
    ({"max_budget_usd": 0.5}, {"group_usd": 5, "plan_usd": 20.0}, BudgetLimits(0.5, 5.0, 20.0)),
])
def test_parse_budget(agent: dict[str, Any], budget: dict[str, Any], limits: BudgetLimits) -> None:
    assert parse_budget(agent, budget) == limits


@pytest.mark.parametrize(("agent", "budget", "key", "words"), [
    ({"max_budget_usd": 0}, {}, "agent.max_budget_usd", "[agent].max_budget_usd must be a number of US dollars > 0, got 0"),
    ({"max_budget_usd": -1.5}, {}, "agent.max_budget_usd", "got -1.5"),
    ({}, {"group_usd": 0.0}, "budget.group_usd", "[budget].group_usd must be a number of US dollars > 0, got 0.0"),
    ({}, {"plan_usd": -3}, "budget.plan_usd", "[budget].plan_usd must be"),
    ({}, {"plan_usd": "10"}, "budget.plan_usd", "got '10'"),
    ({}, {"plan_usd": True}, "budget.plan_usd", "got True"),
    ({}, {"plan_usd": math.nan}, "budget.plan_usd", "got nan"),
    ({}, {"group": 5}, "budget.group", "[budget].group is not a known key"),
])
def test_a_bad_budget_is_a_config_error_naming_the_key(
    agent: dict[str, Any], budget: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_budget(agent, budget)
    assert caught.value.key == key and words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_budget_args_only_for_claude() -> None:
    assert budget_args("claude", 0.25) == ["--max-budget-usd", "0.25"]
    assert budget_args("claude", None) == []
    assert budget_args("codex", 0.25) == []


def test_a_group_cap_stops_that_group_only_and_a_plan_cap_stops_all() -> None:
    spending = Spending(BudgetLimits(group_usd=1.0, plan_usd=2.5))
    assert spending.refusal("a") is None
    spending.charge("a", 0.6)
    spending.charge("a", None)         # no reported cost
    spending.charge("a", math.nan)     # nonsense is not money
    assert spending.refusal("a") is None
    spending.charge("a", 0.4)
    assert spending.refusal("a") == "budget exhausted ($1.00 of $1.00)"  # reached counts
    assert spending.refusal("b") is None
    spending.charge("b", 0.9)
    spending.charge("c", 0.6)
    assert spending.plan_spent == 2.5
    assert spending.refusal("c") == "budget exhausted ($2.50 of $2.50)"
    assert spending.report("b") == {"spent_usd": 0.9, "group_usd": 1.0, "plan_spent_usd": 2.5, "plan_usd": 2.5}


def test_without_caps_nothing_is_refused() -> None:
    spending = Spending(BudgetLimits())
    spending.charge("a", 1e6)
    assert spending.refusal("a") is None and spending.report("a") == {"spent_usd": 1e6}
