"""The governor and the budgets in real runs: the fake ``claude`` first on PATH, maestro through its CLI.

What a user sees is checked: exit codes, ``--json`` documents, ``status`` text, the journal, and
when the fake agents were actually started (their records under ``.fake-agents``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import task

from maestro_parallel.cli.progress import LiveProgress, describe_event

FAKES = Path(__file__).resolve().parent / "fakes"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    return root


def configure(repo: Path, agent: str = "", extra: str = "", preset: str = "claude") -> None:
    folder = repo / ".flow" / "maestro"
    folder.mkdir(parents=True, exist_ok=True)
    text = f"""\
        [agent]
        preset = "{preset}"
        timeout_seconds = 60
        grace_seconds = 1
        {agent}

        [refresh]
        enabled = false

        [tests]
        enabled = false

        [tracker]
        kind = "local"
        poll_interval_seconds = 0.2
        """
    (folder / "config.toml").write_text(textwrap.dedent(text) + textwrap.dedent(extra))


def maestro(repo: Path, *args: str, tasks: list[dict[str, Any]] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m maestro_parallel --repo-root REPO ARGS`` with the fakes first on PATH."""
    if tasks is not None:
        (repo / "tasks.json").write_text(json.dumps(tasks))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "CLAUDE", "MAESTRO_"))}
    env.update(PATH=f"{FAKES}{os.pathsep}{env.get('PATH', '')}", HOME=str(repo.parent / "home"))
    return subprocess.run(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )


def execute(repo: Path, tasks: list[dict[str, Any]], *args: str) -> tuple[int, dict[str, Any]]:
    proc = maestro(repo, "-q", "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json", *args, tasks=tasks)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def results(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["task_id"]: r for r in document["results"]}


def journal(repo: Path, group_id: str = "g") -> list[dict[str, Any]]:
    path = repo / ".flow" / "maestro" / "parallel_groups" / group_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def agent_calls(repo: Path) -> list[dict[str, Any]]:
    """The fake agents' records (argv, environment, start time), in start order."""
    found = [json.loads(p.read_text()) for p in (repo / ".fake-agents").glob("*.json")]
    return sorted((c for c in found if "MAESTRO_TASK_ID" in c["env"]), key=lambda c: c["start"])


def epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- budgets


def test_the_claude_preset_passes_max_budget_usd_only_when_a_task_budget_is_set(repo: Path) -> None:
    configure(repo, "max_budget_usd = 0.25")
    assert execute(repo, [task("a")])[0] == 0
    assert agent_calls(repo)[0]["argv"][-2:] == ["--max-budget-usd", "0.25"]

    configure(repo)  # 0: no budget, no flag
    assert execute(repo, [task("b")], "--restart")[0] == 0
    assert "--max-budget-usd" not in agent_calls(repo)[-1]["argv"]


def test_a_group_cap_stops_launches_once_the_reported_costs_reach_it(repo: Path) -> None:
    configure(repo, "max_parallel = 1", "[budget]\ngroup_usd = 1.0\n")
    tasks = [task(f"t{n}", "FAKE:cost=0.5") for n in range(1, 5)]
    code, document = execute(repo, tasks)

    assert code == 1
    found = results(document)
    assert [found[t]["status"] for t in ("t1", "t2", "t3", "t4")] == ["completed", "completed", "failed", "failed"]
    assert found["t3"]["error"] == found["t4"]["error"] == "budget exhausted ($1.00 of $1.00)"
    assert found["t3"]["attempts"] == 0 and len(agent_calls(repo)) == 2, "the refused tasks never launched"
    assert document["budget"] == {"spent_usd": 1.0, "group_usd": 1.0}
    assert [e["spent_usd"] for e in journal(repo) if e["event"] == "budget"] == [0.0, 0.5, 1.0]

    status = maestro(repo, "status", "--group-id", "g", "--json")
    assert json.loads(status.stdout)["budget"] == {"spent_usd": 1.0, "group_usd": 1.0}
    text = maestro(repo, "status", "--group-id", "g").stdout
    assert "  budget: $1.00 of $1.00\n" in text and "t3  failed" in text


def test_a_spent_budget_refuses_a_retry(repo: Path) -> None:
    # "busy" is rate limited at once; while it waits out the shared backoff, "pricey" reports $1.
    configure(repo, "retries = 2", "[budget]\ngroup_usd = 1.0\n")
    code, document = execute(repo, [task("busy", "FAKE:rate_limit_once"), task("pricey", "FAKE:cost=1 FAKE:sleep=0.3")])

    assert code == 1
    found = results(document)
    assert found["pricey"]["status"] == "completed"
    assert found["busy"]["status"] == "failed" and found["busy"]["attempts"] == 1
    assert found["busy"]["error"] == "budget exhausted ($1.00 of $1.00)"
    assert len([c for c in agent_calls(repo) if c["env"]["MAESTRO_TASK_ID"] == "busy"]) == 1


def test_a_plan_cap_stops_the_later_steps_of_a_run(repo: Path) -> None:
    configure(repo, extra="[budget]\nplan_usd = 0.5\n")
    tasks = [task("a1", "FAKE:cost=0.5", group="first"),
             task("b1", "FAKE:cost=0.5", group="second", dependencies=["a1"])]
    proc = maestro(repo, "-q", "run", "--tasks-file", str(repo / "tasks.json"), "--json", tasks=tasks)

    assert proc.returncode == 1, proc.stderr
    steps = {}
    for group_id in ("first", "second"):
        shown = maestro(repo, "status", "--group-id", group_id, "--json")
        steps[group_id] = json.loads(shown.stdout)
    assert results(steps["first"])["a1"]["status"] == "completed"
    assert steps["first"]["budget"] == {"spent_usd": 0.5, "plan_spent_usd": 0.5, "plan_usd": 0.5}
    b1 = results(steps["second"])["b1"]
    assert b1["status"] == "failed" and b1["error"] == "budget exhausted ($0.50 of $0.50)"
    assert [c["env"]["MAESTRO_TASK_ID"] for c in agent_calls(repo)] == ["a1"]
    text = maestro(repo, "status", "--group-id", "second").stdout
    assert "  budget: $0.00 (plan: $0.50 of $0.50)\n" in text


# --------------------------------------------------------------------------- the governor


@pytest.mark.parametrize("backoff", ["shared", "per-task"])
def test_a_rate_limit_holds_back_every_launch_of_the_preset_until_the_shared_backoff_ends(
    repo: Path, backoff: str
) -> None:
    # Launches 0.8 s apart: "busy" is rate limited at once, before "b" and "c" are due.
    configure(repo, f'retries = 1\nlaunch_stagger_seconds = 0.8\nbackoff = "{backoff}"')
    tasks = [task("busy", "FAKE:rate_limit_once"), task("b"), task("c")]
    code, document = execute(repo, tasks)

    assert code == 0, document
    assert results(document)["busy"]["attempts"] == 2
    events = journal(repo)
    rate_limited = next(e for e in events if e["event"] == "task_finished" or e["event"] == "task_retry")
    assert rate_limited["event"] == "task_retry" and rate_limited["task_id"] == "busy"
    backoffs = [e for e in events if e["event"] == "backoff"]
    starts = {c["env"]["MAESTRO_TASK_ID"]: c["start"] for c in agent_calls(repo) if c["env"]["MAESTRO_TASK_ID"] != "busy"}
    if backoff == "per-task":  # each task backs off on its own: the others launch into the rate limit
        assert backoffs == []
        # (its own delay is at least 1 s: "b", due 0.8 s after it, starts before busy's retry)
        assert starts["b"] < epoch(rate_limited["at"]) + rate_limited["delay_seconds"]
        return
    (opened,) = backoffs
    assert opened["task_id"] == "busy" and opened["preset"] == "claude" and opened["rate_limits"] == 1
    assert opened["delay_seconds"] == pytest.approx(2.0)
    assert rate_limited["delay_seconds"] <= opened["delay_seconds"]
    ends = epoch(opened["at"]) + opened["delay_seconds"]
    # Nothing of the preset started after the rate limit and before the backoff's end (the journal's
    # clock has millisecond steps); "c" at least was due in that window.
    later = [start for start in starts.values() if start > epoch(rate_limited["at"])]
    assert later and all(start >= ends - 0.01 for start in later), (starts, ends)


def test_the_progress_shows_backoffs_and_spent_vs_budget(tmp_path: Path) -> None:
    backoff = {"event": "backoff", "at": "2026-01-01T00:00:05.000Z", "group_id": "g", "task_id": "busy",
               "preset": "claude", "delay_seconds": 4.0, "limit": 2, "rate_limits": 1}
    budget = {"event": "budget", "at": "2026-01-01T00:00:06.000Z", "group_id": "g", "spent_usd": 1.2,
              "group_usd": 5.0, "plan_spent_usd": 3.4, "plan_usd": 10.0}
    assert describe_event(backoff) == "[00:00:05] claude rate limited: every claude agent waits 4.0s, at most 2 at once"
    assert describe_event(budget) is None  # one line per cost only with -v
    assert describe_event(budget, verbose=1) == "[00:00:06] spent $1.20 of $5.00 (plan: $3.40 of $10.00)"

    from rich.console import Console

    console = Console(file=open(os.devnull, "w"), width=160)  # noqa: SIM115 - closed below
    try:
        view = LiveProgress(console, tmp_path)
        view.on_event({"event": "group_started", "group_id": "g", "tasks": ["busy"], "at": ""})
        view.on_event(backoff)
        view.on_event(budget)
        with console.capture() as captured:
            console.print(view)
    finally:
        console.file.close()
    title = captured.get().splitlines()[0]
    assert "spent $1.20 of $5.00 (plan: $3.40 of $10.00)" in title
    assert "claude backoff, limit 2 (4s left)" in title or "claude backoff, limit 2 (3s left)" in title


def test_the_steps_of_a_plan_share_one_governor(repo: Path) -> None:
    # Two steps run at once; "busy" in the first is rate limited at once, and the second step's
    # later launch waits out the backoff its own group never saw a rate limit for.
    configure(repo, "retries = 1\nlaunch_stagger_seconds = 1.0")
    # ("s1" runs through the backoff: a success would end it, the API serving again.)
    tasks = [task("busy", "FAKE:rate_limit_once", group="first"), task("s1", "FAKE:sleep=3", group="second"),
             task("s2", group="second")]
    proc = maestro(repo, "-q", "run", "--concurrent-steps", "--tasks-file", str(repo / "tasks.json"), "--json",
                   tasks=tasks)

    assert proc.returncode == 0, proc.stderr
    (opened,) = [e for e in journal(repo, "first") if e["event"] == "backoff"]
    assert [e for e in journal(repo, "second") if e["event"] == "backoff"] == []
    ends = epoch(opened["at"]) + opened["delay_seconds"]
    starts = {c["env"]["MAESTRO_TASK_ID"]: c["start"] for c in agent_calls(repo)}
    if starts["s2"] > epoch(opened["at"]):  # due after the rate limit (1 s after s1): held back
        assert starts["s2"] >= ends - 0.01, (starts, ends)
    else:  # the machine was too slow for the rate limit to come first: nothing to compare
        pytest.skip("the rate limit came after the second step's launches")
