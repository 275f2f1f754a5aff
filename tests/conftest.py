"""Shared fixtures: a throwaway repository and small real agent programs.

Agents in these tests are real processes (``sys.executable`` running a short
script written into the repository), never mocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AGENT, agent_config, write_config


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A repository with the recording agent and a config that runs it."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".git").mkdir()
    (root / "agent.py").write_text(AGENT)
    write_config(root, agent_config())
    yield root


@pytest.fixture(autouse=True)
def _no_claudecode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDECODE", raising=False)


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
