"""Budget accounting (pure): caps, the exhausted error, spent vs budget, config validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from maestro_parallel.budget import (
    BudgetLimits,
    Spending,
    budget_args,
    budget_exhausted,
    budget_limits,
    format_usd,
    spent_vs_budget,
)
from maestro_parallel.config import load_config
from maestro_parallel.errors import ConfigError


@pytest.mark.parametrize(("value", "text"), [
    (0, "$0.00"), (1.5, "$1.50"), (12.345, "$12.35"), (0.01, "$0.01"), (0.0008, "$0.0008"), (0.00042, "$0.0004"),
    (0.000001, "$0.000001"),
])
def test_amounts_are_shown_without_hiding_small_costs(value: float, text: str) -> None:
    assert format_usd(value) == text


def test_the_exhausted_error_and_spent_vs_budget() -> None:
    assert budget_exhausted(5.25, 5) == "budget exhausted ($5.25 of $5.00)"
    assert spent_vs_budget(1.2, 5) == "$1.20 of $5.00"
    assert spent_vs_budget(1.2, None) == "$1.20"


def test_the_limits_come_from_the_config_and_0_means_none(tmp_path: Path) -> None:
    assert budget_limits(load_config(tmp_path)) == BudgetLimits()
    folder = tmp_path / ".flow" / "maestro"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text("[agent]\nmax_budget_usd = 0.5\n[budget]\ngroup_usd = 5\nplan_usd = 20.0\n")
    assert budget_limits(load_config(tmp_path)) == BudgetLimits(0.5, 5.0, 20.0)


@pytest.mark.parametrize(("text", "words"), [
    ("[agent]\nmax_budget_usd = -1.5\n", "max_budget_usd"),
    ("[budget]\nplan_usd = '10'\n", "plan_usd"),
    ("[budget]\ngroup = 5\n", "group"),
])
def test_a_bad_budget_is_a_config_error_naming_the_key(tmp_path: Path, text: str, words: str) -> None:
    folder = tmp_path / ".flow" / "maestro"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_budget_args_only_for_claude() -> None:
    assert budget_args("claude", 0.25) == ["--max-budget-usd", "0.25"]
    assert budget_args("claude", None) == [] and budget_args("claude", 0.0) == []
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
