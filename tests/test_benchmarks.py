"""Smoke test of the benchmark suite: ``benchmarks/run.py --quick`` runs and prints every row.

It must run, not meet targets: nothing here looks at a timing (CI machines are noisy).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"

#: Every row the quick table has, as "first cell | second cell" fragments.
ROWS = (
    "| /bin/true x 20 | floor (asyncio) |",
    "| /bin/true x 20 | maestro-parallel |",
    "| sleep 1 x 20 | floor (asyncio) |",
    "| sleep 1 x 20 | maestro-parallel |",
)
SECTIONS = (
    "## Machine",
    "## Targets (issue 6)",
    "## Whole processes, side by side",
    "## Coordinator, one instrumented run per workload",
    "## Event-loop lag during launch",
    "## Tracker calls per poll tick",
    "## `detect_groups` (in-process)",
)
TARGETS = (
    "| coordinator / floor at N = 1,000 |",
    "| faster than GNU parallel at N = 1,000 |",
    "| sleep 1 x 20: coordinator / floor |",
    "| worst event-loop lag during launch at N = 1,000 |",
    "| coordinator peak RSS at N = 5,000 |",
    "| bytes written per task constant across N (max/min) |",
    "| tracker calls per poll tick |",
    "| detect_groups on 100,000 tasks |",
)


@pytest.mark.timeout(90)
def test_quick_benchmark_runs_and_prints_every_row(tmp_path: Path) -> None:
    results = RUN.parent / "RESULTS.md"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-references", "--workdir", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
        timeout=85,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for text in (*SECTIONS, *ROWS, *TARGETS):
        assert text in out, f"missing {text!r} in:\n{out}"
    assert "FAILED" not in out
    # one line per size in the in-process tables, each with a number in it
    assert "| 20 | " in out  # loop lag and tracker ticks at N = 20
    assert "| 100,000 | " in out  # detect_groups
    # the quick mode leaves RESULTS.md alone and cleans its temporary folders up
    after = results.read_bytes() if results.exists() else None
    assert after == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(180)
def test_plan_benchmark_runs_and_prints_every_row() -> None:
    """``benchmarks/plan.py`` at a tiny scale: it must run every plan to completion, not meet its target."""
    results = RUN.parent / "RESULTS.md"
    before = results.read_bytes()
    done = subprocess.run([sys.executable, str(RUN.parent / "plan.py"), "--scale", "0.02"], capture_output=True,
                          text=True, timeout=170, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    for row in ("| issue plan (5 steps) | run --concurrent-steps |", "| generated, 50 groups | run --concurrent-steps |",
                "| issue plan (5 steps) | run (shared tree: one step at a time) |",
                "| generated, 50 groups | run --concurrent-steps --max-agents 8 |",
                "| generated, 50 groups | scheduler alone (anyio.sleep steps) |"):
        assert row in done.stdout
    assert results.read_bytes() == before  # only --write touches it
