"""The key schema: the Part II sections are accepted and checked, and one schema writes checks, template and reference."""

from __future__ import annotations

import tomllib

import pytest

from maestro_parallel.config import (
    BudgetConfig,
    Config,
    ExecutorConfig,
    IsolationConfig,
    PlanConfig,
    config_reference,
    config_template,
    loads_config,
)
from maestro_parallel.errors import ConfigError


def test_the_part_two_sections_default_to_nothing_changing() -> None:
    config = loads_config("")
    assert config.isolation == IsolationConfig(mode="auto", target="", land="auto", merge="merge", conflicts="warn",
                                               setup=(), setup_timeout_seconds=600.0, keep_worktrees="failed")
    assert config.plan == PlanConfig(max_parallel_groups=0, max_agents=0)
    assert config.executor == ExecutorConfig(kind="local", address="", workers=0)
    assert config.budget == BudgetConfig(group_usd=0.0, plan_usd=0.0)
    assert config.agent.max_budget_usd == 0.0


def test_the_part_two_sections_are_read() -> None:
    config = loads_config(
        '[isolation]\nmode = "worktree"\nmerge = "squash"\nsetup = ["uv", "sync", "--frozen"]\nkeep_worktrees = "never"\n'
        "[plan]\nmax_parallel_groups = 3\nmax_agents = 12\n"
        '[executor]\nkind = "dask"\naddress = "tcp://10.0.0.5:8786"\nworkers = 4\n'
        "[budget]\ngroup_usd = 5\nplan_usd = 20.5\n"
        "[agent]\nmax_budget_usd = 0.75\n"
        "[agents.test-automator]\nmax_budget_usd = 2\n"
    )
    assert (config.isolation.mode, config.isolation.merge, config.isolation.setup) == (
        "worktree", "squash", ("uv", "sync", "--frozen"))
    assert config.isolation.keep_worktrees == "never"
    assert (config.plan.max_parallel_groups, config.plan.max_agents) == (3, 12)
    assert (config.executor.kind, config.executor.address, config.executor.workers) == ("dask", "tcp://10.0.0.5:8786", 4)
    assert (config.budget.group_usd, config.budget.plan_usd) == (5.0, 20.5)
    assert config.agent.max_budget_usd == 0.75
    assert config.agent_for("test-automator").max_budget_usd == 2.0


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[agent]\nmax_budget_usd = -1", "agent.max_budget_usd", "must be a number >= 0"),
        ("[agents.x]\nmax_budget_usd = -0.5", "agents.x.max_budget_usd", "must be a number >= 0"),
        ("[budget]\ngroup_usd = -3", "budget.group_usd", "US dollars"),
        ('[budget]\nplan_usd = "ten"', "budget.plan_usd", "got 'ten'"),
        ("[budget]\nplan_usd = nan", "budget.plan_usd", "got nan"),
        ('[isolation]\nmode = "container"', "isolation.mode", "'auto', 'worktree', 'shared'"),
        ('[isolation]\nland = "always"', "isolation.land", "'auto', 'never'"),
        ('[isolation]\nsetup = "uv sync"', "isolation.setup", "never a shell string"),
        ("[isolation]\nsetup_timeout_seconds = 0", "isolation.setup_timeout_seconds", "a number > 0"),
        ('[isolation]\nkeep_worktree = "never"', "isolation.keep_worktree", "did you mean [isolation].keep_worktrees?"),
        ("[plan]\nmax_agents = -1", "plan.max_agents", "an integer >= 0"),
        ('[executor]\nkind = "ray"', "executor.kind", "'local', 'dask'"),
        ("[executor]\nworkers = 1.5", "executor.workers", "an integer >= 0"),
        ("[isolaton]\nmode = 'auto'", "isolaton", "did you mean [isolation]?"),
    ],
)
def test_a_bad_part_two_value_is_one_line_naming_the_key(text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    assert info.value.key == key
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_template_is_the_schema_at_its_defaults() -> None:
    text = config_template()
    assert loads_config(text) == Config(source="config.toml", agent_table=loads_config(text).agent_table)
    written = tomllib.loads(text)
    rows = config_reference()
    for row in rows:
        if row.table in ("agents.<subagent>", "detection"):
            continue
        shown = row.key in written.get(row.table, {})
        commented = f"# {row.key} = " in text
        assert shown or commented, row  # every key of the schema is in the template, at its default
    for table, keys in written.items():
        assert {(table, key) for key in keys} <= {(r.table, r.key) for r in rows}, table


def test_the_reference_has_a_row_per_key_with_its_type_and_default() -> None:
    rows = {(r.table, r.key): r for r in config_reference()}
    assert rows[("budget", "group_usd")].type.startswith("US dollars")
    assert rows[("isolation", "mode")].type == "one of auto | worktree | shared"
    assert rows[("isolation", "setup_timeout_seconds")].default == "600"
    assert rows[("agent", "max_budget_usd")].default == "0"
    assert rows[("executor", "kind")].default == '"local"'
    assert all(r.description or r.table in ("refresh", "tests", "tracker", "isolation", "skills") for r in rows.values())
    assert ("agents.<subagent>", "(any [agent] key)") in rows and ("detection", "<subagent>") in rows
