"""The test tools themselves: the stand-ins' capacity mode and the real-CLI locator's reasons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from realcli import INSTALL_SCRIPT, missing_reason
from standins._server import Turn
from standins.anthropic import AnthropicStandIn


def _post(url: str) -> int:
    body = json.dumps({"model": "m", "stream": True, "messages": []}).encode()
    request = urllib.request.Request(url + "/v1/messages?beta=true", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_capacity_mode_admits_k_sessions_and_answers_429_beyond_them() -> None:
    with AnthropicStandIn([Turn.say("ok")], admit=2, session_seconds=1.0) as api:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(_post(api.url))) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(statuses) == [200, 200, 429, 429, 429]
        assert (api.admitted, api.rejected, api.peak_in_flight, api.in_flight) == (2, 3, 2, 0)
        assert _post(api.url) == 200  # capacity is back once the sessions ended


def test_the_locator_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_TEST_CACHE", str(tmp_path))
    reason = missing_reason()
    assert reason is not None
    assert reason.startswith(("node and npm are not on PATH", f"the real CLIs are not installed in {tmp_path}"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_reason() == "node and npm are not on PATH: the real Claude Code and Codex CLIs cannot be installed"


def test_without_the_install_real_cli_tests_skip_but_fail_under_ci(tmp_path: Path) -> None:
    tests = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["MAESTRO_TEST_CACHE"] = str(tmp_path)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "claude_text_answer",
            str(tests / "test_real_agents.py"), "-rs"]
    skipped = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tests.parent)
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout
    assert f"run {INSTALL_SCRIPT}" in skipped.stdout or "node and npm are not on PATH" in skipped.stdout
    failed = subprocess.run(argv, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=120,
                            cwd=tests.parent)
    assert failed.returncode == 1 and "CI must install the real CLIs before the tests" in failed.stdout
