"""Where maestro_parallel keeps its files inside a repository: the one place ``.flow/maestro`` is spelt."""

from __future__ import annotations

from pathlib import Path

#: Everything maestro_parallel writes lives under this folder of the repository.
MAESTRO_RELATIVE_PATH = Path(".flow/maestro")
#: One folder per group: journal, snapshot, logs, prompts, history, lock.
GROUPS_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "parallel_groups"
#: The optional configuration file.
CONFIG_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "config.toml"
#: Held while any group of the repository runs its test suite.
TESTS_LOCK_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "tests.lock"
#: The record of the last whole-plan run.
PLAN_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "plan.json"
#: Reports written by ``maestro-parallel report`` unless told otherwise.
REPORTS_RELATIVE_PATH = MAESTRO_RELATIVE_PATH / "reports"
