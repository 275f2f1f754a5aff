"""The agent presets end to end: fake ``claude`` and ``codex`` first on PATH, real processes and files.

The fakes in ``tests/fakes`` accept exactly the argv of the presets, print the
output shapes the real CLIs document, record every call (argv, environment,
start time) under ``<repo>/.fake-agents``, and take their behaviour from
``FAKE:<mode>`` words in the task description.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import pid_alive, task

import maestro_parallel.runtime.attempt as attempt_module
import maestro_parallel.runtime.governor as governor_module
from maestro_parallel import AsyncParallelCoordinator, GroupMetadata, TaskStatus
from maestro_parallel.agents import ResultScanner, Verdict, judge
from maestro_parallel.cli import main
from maestro_parallel.events import decode_journal
from maestro_parallel.trackers import LocalTracker

FAKES = Path(__file__).resolve().parent / "fakes"
CLAUDE_ARGV_TAIL = ["--output-format", "json", "--permission-mode", "acceptEdits"]
CODEX_ARGV_HEAD = ["exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check"]
#: What the fake claude reports by default (FAKE:cost=<usd> changes it).
DEFAULT_COST = 0.0421
CLAUDE_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 2048,
    "cache_read_input_tokens": 10240,
    "output_tokens": 421,
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    "service_tier": "standard",
    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 2048},
}
CODEX_USAGE = {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}


# --------------------------------------------------------------------------- fixtures and helpers


def preset_config(preset: str = "claude", *, agent: str = "", extra: str = "") -> str:
    """A config using ``preset`` as shipped (plus ``agent`` lines); no refresh, no tests, a quick poll."""
    lines = [
        "[agent]", f'preset = "{preset}"', "timeout_seconds = 60", "grace_seconds = 1", agent, "",
        "[refresh]", "enabled = false", "",
        "[tests]", "enabled = false", "",
        "[tracker]", 'kind = "local"', "poll_interval_seconds = 0.2", "",
    ]
    return "\n".join(lines) + textwrap.dedent(extra)


def configure(repo: Path, text: str) -> None:
    folder = repo / ".flow" / "maestro"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(text)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository using the claude preset, the fakes first on PATH, HOME a fresh folder."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in [n for n in os.environ if n.startswith("FAKE_")]:
        monkeypatch.delenv(name)
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".git").mkdir()
    configure(root, preset_config())
    return root


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attempt_module, "_RETRY_BASE_SECONDS", 0.05)
    monkeypatch.setattr(governor_module, "BACKOFF_BASE_SECONDS", 0.05)


async def run_group(repo: Path, tasks: list[dict[str, Any]], group_id: str = "g") -> GroupMetadata:
    coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo))
    return await coordinator.execute_parallel_group(tasks, group_id)


def by_id(meta: GroupMetadata | dict[str, Any]) -> dict[str, dict[str, Any]]:
    results = meta.results if isinstance(meta, GroupMetadata) else meta["results"]
    return {r["task_id"]: r for r in results}


def calls(repo: Path, task_id: str | None = None) -> list[dict[str, Any]]:
    """The fakes' records in start order: agent calls only (or one task's)."""
    folder = repo / ".fake-agents"
    found = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    found.sort(key=lambda c: c["start"])
    found = [c for c in found if "MAESTRO_TASK_ID" in c["env"]]
    return [c for c in found if task_id is None or c["env"]["MAESTRO_TASK_ID"] == task_id]


def only_call(repo: Path, task_id: str) -> dict[str, Any]:
    found = calls(repo, task_id)
    assert len(found) == 1, found
    return found[0]


def group_dir(repo: Path, group_id: str = "g") -> Path:
    return repo / ".flow" / "maestro" / "parallel_groups" / group_id


def prompt_of(repo: Path, task_id: str, group_id: str = "g") -> str:
    return (group_dir(repo, group_id) / "prompts" / f"{task_id}.md").read_bytes().decode("utf-8")


def log_of(repo: Path, task_id: str, group_id: str = "g") -> str:
    return (group_dir(repo, group_id) / "logs" / f"{task_id}.log").read_text(encoding="utf-8")


def journal(repo: Path, group_id: str = "g") -> list[dict[str, Any]]:
    events, skipped = decode_journal((group_dir(repo, group_id) / "events.jsonl").read_bytes())
    assert skipped == 0
    return events


def last_json_line(text: str, kind: str) -> dict[str, Any]:
    objects = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [o for o in objects if o.get("type") == kind][-1]


def invoke(repo: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--repo-root", str(repo), *args])


def tasks_file(repo: Path, tasks: list[dict[str, Any]]) -> str:
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    return str(path)


# --------------------------------------------------------------------------- claude: what a run records


async def test_the_claude_preset_runs_claude_headless_and_records_what_it_reports(project: Path) -> None:
    tasks = [
        task("api", "Implement the endpoint in src/api.py"),
        task("db", "Write the query in src/db/query.py FAKE:cost=0.25 FAKE:turns=7"),
    ]
    meta = await run_group(project, tasks)

    assert meta.status is TaskStatus.COMPLETED, meta.errors
    results = by_id(meta)
    for task_id, path, cost, turns in (("api", "src/api.py", DEFAULT_COST, 3), ("db", "src/db/query.py", 0.25, 7)):
        call = only_call(project, task_id)
        # One argv element for the whole prompt, then the preset's flags, acceptEdits included.
        assert call["argv"] == ["-p", prompt_of(project, task_id), *CLAUDE_ARGV_TAIL]
        assert call["stdin"] == "eof" and call["claudecode"] is False
        reported = last_json_line(log_of(project, task_id), "result")
        result = results[task_id]
        assert result["status"] == "completed" and result["exit_code"] == 0 and result["attempts"] == 1
        assert result["session_id"] == reported["session_id"]
        assert result["cost_usd"] == cost
        assert result["num_turns"] == turns
        assert result["usage"] == {**CLAUDE_USAGE, "output_tokens": int(cost * 10000)}
        assert "permission_denials" not in result
        # The work is visible: acceptEdits let the agent write the file the prompt names.
        assert (project / path).read_text() == f"edited by fake claude, session {reported['session_id']}\n"
    assert results["api"]["session_id"] != results["db"]["session_id"]


def test_execute_and_status_show_the_groups_total_cost(project: Path) -> None:
    path = tasks_file(project, [task("a", "FAKE:cost=0.5"), task("b", "FAKE:cost=0.25"), task("c")])
    run = invoke(project, "execute", "--group-id", "g", "--tasks-file", path, "--json")
    assert run.exit_code == 0, run.stderr
    document = json.loads(run.stdout)
    expected = round(0.5 + 0.25 + DEFAULT_COST, 6)
    assert document["total_cost_usd"] == expected
    assert [r["cost_usd"] for r in document["results"]] == [0.5, 0.25, DEFAULT_COST]
    assert all(r["session_id"] and r["closed"] is True for r in document["results"])
    # Computed from the results, never stored as a field of the group.
    assert "total_cost_usd" not in json.loads((group_dir(project) / "metadata.json").read_text())

    status = invoke(project, "status", "--group-id", "g", "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["total_cost_usd"] == expected
    for words in (invoke(project, "status", "--group-id", "g"),
                  invoke(project, "execute", "--group-id", "g", "--tasks-file", path)):
        assert words.exit_code == 0
        assert f"total cost: ${expected:.4f}" in words.stdout


# --------------------------------------------------------------------------- claude: false success


def test_an_agent_that_exits_0_but_reports_is_error_fails_the_group(project: Path) -> None:
    """The issue's "done when": one agent exits 0 reporting is_error; it fails, the others complete."""
    path = tasks_file(project, [task("t1", "Edit src/one.py"), task("t2", "Edit src/two.py FAKE:is_error"),
                                task("t3", "Edit src/three.py")])
    run = invoke(project, "execute", "--group-id", "g", "--tasks-file", path, "--json")

    assert run.exit_code == 1, run.stderr
    document = json.loads(run.stdout)
    assert document["status"] == "failed"
    assert document["errors"] == ["t2: agent reported an error: Credit balance is too low"]
    results = by_id(document)
    assert results["t2"]["status"] == "failed"
    assert results["t2"]["exit_code"] == 0
    assert results["t2"]["error"] == "agent reported an error: Credit balance is too low"
    assert results["t2"]["session_id"] and results["t2"]["cost_usd"] == DEFAULT_COST
    assert results["t1"]["status"] == results["t3"]["status"] == "completed"
    assert (project / "src/one.py").exists() and (project / "src/three.py").exists()
    # Unverified work is not closed, and the test suite does not run.
    assert not any(r.get("closed") for r in document["results"])
    assert [e["status"] for e in journal(project) if e["event"] == "tests_finished"] == ["skipped"]
    assert document["total_cost_usd"] == round(3 * DEFAULT_COST, 6)


@pytest.mark.parametrize("subtype", ["error_max_turns", "error_during_execution"])
async def test_an_error_subtype_with_exit_0_fails_the_task(project: Path, subtype: str) -> None:
    meta = await run_group(project, [task("bad", f"FAKE:{subtype}"), task("good")])

    assert meta.status is TaskStatus.FAILED
    bad = by_id(meta)["bad"]
    reported = last_json_line(log_of(project, "bad"), "result")
    # A failure without a result text is explained by its errors, when it has any.
    error = f"agent reported {subtype}" + (f": {'; '.join(reported['errors'])}" if reported["errors"] else "")
    assert bad["status"] == "failed" and bad["exit_code"] == 0
    assert bad["error"] == error
    assert bad["attempts"] == 1, "a reported failure is not a rate limit: no retry"
    assert bad["session_id"] == reported["session_id"]
    assert meta.errors == [f"bad: {error}"]
    assert by_id(meta)["good"]["status"] == "completed"


async def test_an_agent_that_prints_no_result_object_fails(project: Path) -> None:
    meta = await run_group(project, [task("quiet", "FAKE:no_result")])
    result = by_id(meta)["quiet"]
    assert (result["status"], result["exit_code"]) == ("failed", 0)
    assert result["error"] == "agent printed no result object (claude-json)"
    assert log_of(project, "quiet") == "Done.\n"


async def test_a_hanging_agent_is_stopped_at_its_timeout(project: Path) -> None:
    configure(project, preset_config(agent="").replace("timeout_seconds = 60", "timeout_seconds = 1"))
    started = time.monotonic()
    meta = await run_group(project, [task("stuck", "FAKE:hang")])
    assert time.monotonic() - started < 20
    result = by_id(meta)["stuck"]
    assert (result["status"], result["error"]) == ("failed", "timed out after 1s")
    assert not pid_alive(only_call(project, "stuck")["pid"])


# --------------------------------------------------------------------------- claude: rate limits


async def test_a_rate_limited_attempt_is_retried_and_both_attempts_are_logged(
    project: Path, quick_retries: None
) -> None:
    meta = await run_group(project, [task("busy", "Edit src/busy.py FAKE:rate_limit_once"), task("calm")])

    assert meta.status is TaskStatus.COMPLETED, meta.errors
    result = by_id(meta)["busy"]
    assert result["status"] == "completed" and result["attempts"] == 2
    assert by_id(meta)["calm"]["attempts"] == 1
    notes = [w for w in result["warnings"] if w.startswith("attempt 1 failed")]
    assert len(notes) == 1 and "429" in notes[0] and "retrying in" in notes[0]
    assert meta.errors == []
    log = log_of(project, "busy")
    first, _, second = log.partition("=== maestro-parallel: attempt 2 ===")
    assert "rate_limit_error" in first and '"is_error":true' in first
    assert '"subtype":"success","is_error":false' in second
    assert result["session_id"] == last_json_line(second, "result")["session_id"]
    assert len(calls(project, "busy")) == 2
    assert [e["attempt"] for e in journal(project) if e["event"] == "task_started" and e["task_id"] == "busy"] == [1, 2]


@pytest.mark.parametrize("retries", [0, 1])
async def test_a_task_still_rate_limited_after_its_retries_fails(
    project: Path, quick_retries: None, retries: int
) -> None:
    configure(project, preset_config(agent=f"retries = {retries}"))
    meta = await run_group(project, [task("busy", "FAKE:rate_limit_always")])
    result = by_id(meta)["busy"]
    assert result["status"] == "failed"
    assert result["attempts"] == retries + 1 == len(calls(project, "busy"))
    assert result["exit_code"] == 1
    assert result["error"].startswith("exit code 1: agent reported an error: API Error: 429")


async def test_a_failure_that_only_talks_about_rate_limits_is_not_retried(
    project: Path, quick_retries: None
) -> None:
    """stream-json logs every message: a task *about* rate limiting must not look rate limited."""
    command = '["claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose", ' \
              '"--permission-mode", "acceptEdits"]'
    configure(project, preset_config(agent=f"command = {command}"))
    spec = task("limits", "Add rate limiting (429 Too Many Requests) to the login endpoint FAKE:error_max_turns")
    spec["title"] = "Add rate limiting to the login endpoint"
    meta = await run_group(project, [spec])
    result = by_id(meta)["limits"]
    assert "rate limiting" in log_of(project, "limits")
    assert (result["status"], result["error"], result["attempts"]) == (
        "failed", "agent reported error_max_turns", 1)


# --------------------------------------------------------------------------- claude: other ways to run it


async def test_stream_json_with_verbose_is_judged_by_its_last_result_line(project: Path) -> None:
    command = '["claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose", ' \
              '"--permission-mode", "acceptEdits"]'
    configure(project, preset_config(agent=f"command = {command}"))
    meta = await run_group(project, [task("s", "Edit src/s.py"), task("f", "FAKE:is_error")])
    results = by_id(meta)
    log = log_of(project, "s")
    assert [json.loads(line)["type"] for line in log.splitlines()] == ["system", "assistant", "result"]
    assert results["s"]["status"] == "completed"
    assert results["s"]["session_id"] == last_json_line(log, "result")["session_id"]
    assert results["f"]["error"] == "agent reported an error: Credit balance is too low"


async def test_a_log_cap_never_drops_the_result_line(project: Path) -> None:
    command = '["claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose", ' \
              '"--permission-mode", "acceptEdits"]'
    configure(project, preset_config(agent=f"command = {command}\nmax_log_bytes = 600"))
    meta = await run_group(project, [task("ok"), task("bad", "FAKE:error_max_turns")])
    results = by_id(meta)
    assert len((group_dir(project) / "logs" / "ok.log").read_bytes()) < 1500
    assert results["ok"]["status"] == "completed" and results["ok"]["cost_usd"] == DEFAULT_COST
    assert results["bad"]["error"] == "agent reported error_max_turns"


async def test_bash_stays_denied_until_the_command_allows_it(project: Path) -> None:
    """acceptEdits lets the agent edit files; running pytest needs --allowedTools (README)."""
    meta = await run_group(project, [task("t", "Edit src/t.py FAKE:run_tests", group="narrow")], "narrow")
    narrow = by_id(meta)["t"]
    assert narrow["status"] == "completed"  # Claude reports success: the denial is recorded, not judged
    assert narrow["permission_denials"] == ["Bash"]

    command = '["claude", "-p", "{prompt}", "--allowedTools", "Bash(pytest:*)", "--output-format", "json", ' \
              '"--permission-mode", "acceptEdits"]'
    configure(project, preset_config(agent=f"command = {command}"))
    meta = await run_group(project, [task("t", "Edit src/t.py FAKE:run_tests", group="wide")], "wide")
    wide = by_id(meta)["t"]
    assert wide["status"] == "completed" and "permission_denials" not in wide
    assert "ran pytest -q" in last_json_line(log_of(project, "t", "wide"), "result")["result"]
    assert calls(project, "t")[-1]["argv"][2:4] == ["--allowedTools", "Bash(pytest:*)"]


async def test_an_argv_the_real_cli_would_reject_fails_the_task(project: Path) -> None:
    configure(project, preset_config(agent='command = ["claude", "--prompt", "{prompt}", "--output-format", "json"]'))
    meta = await run_group(project, [task("a")])
    assert by_id(meta)["a"]["error"] == "exit code 1: error: unknown option '--prompt'"


# --------------------------------------------------------------------------- codex


async def test_the_codex_preset_runs_codex_exec_and_records_thread_and_usage(project: Path) -> None:
    configure(project, preset_config("codex"))
    meta = await run_group(project, [task("a", "Edit src/a.py"), task("b", "Edit src/b.py")])

    assert meta.status is TaskStatus.COMPLETED, meta.errors
    for task_id in ("a", "b"):
        call = only_call(project, task_id)
        assert call["argv"] == [*CODEX_ARGV_HEAD, prompt_of(project, task_id)]
        assert call["stdin"] == "eof"
        thread = last_json_line(log_of(project, task_id), "thread.started")["thread_id"]
        result = by_id(meta)[task_id]
        assert result["session_id"] == thread
        assert result["usage"] == CODEX_USAGE
        assert "cost_usd" not in result  # Codex reports no cost
        assert (project / f"src/{task_id}.py").read_text() == f"edited by fake codex, thread {thread}\n"


@pytest.mark.parametrize(
    ("word", "error"),
    [
        ("turn_failed", "agent reported turn.failed: unexpected status 400 Bad Request: model is not supported"),
        ("error", "agent reported error: stream disconnected before completion: connection reset"),
        ("no_turn", "agent printed no turn.completed event (codex-jsonl)"),
    ],
)
async def test_codex_reporting_failure_with_exit_0_fails_the_task(project: Path, word: str, error: str) -> None:
    configure(project, preset_config("codex"))
    meta = await run_group(project, [task("bad", f"FAKE:{word}"), task("good")])
    results = by_id(meta)
    assert (results["bad"]["status"], results["bad"]["exit_code"], results["bad"]["error"]) == ("failed", 0, error)
    assert results["bad"]["session_id"] == last_json_line(log_of(project, "bad"), "thread.started")["thread_id"]
    assert results["good"]["status"] == "completed"
    assert meta.status is TaskStatus.FAILED


async def test_codex_reconnect_errors_followed_by_a_completed_turn_succeed(project: Path) -> None:
    configure(project, preset_config("codex"))
    meta = await run_group(project, [task("flaky", "Edit src/flaky.py FAKE:reconnect")])
    result = by_id(meta)["flaky"]
    assert "Reconnecting... 2/5" in log_of(project, "flaky")
    assert (result["status"], result["error"], result["attempts"]) == ("completed", None, 1)
    assert (project / "src/flaky.py").exists()


async def test_a_rate_limited_codex_turn_is_retried(project: Path, quick_retries: None) -> None:
    configure(project, preset_config("codex"))
    meta = await run_group(project, [task("busy", "FAKE:rate_limit_once")])
    result = by_id(meta)["busy"]
    assert (result["status"], result["attempts"]) == ("completed", 2)
    assert any("429 Too Many Requests" in w for w in result["warnings"])


# --------------------------------------------------------------------------- what reaches the agent


async def test_claudecode_never_reaches_an_agent_or_the_refresh(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDECODE", "1")
    # The default refresh command is `claude -p /flow:summary`: the fake claude answers it too.
    configure(project, preset_config().replace("[refresh]\nenabled = false", "[refresh]\nenabled = true"))
    command = project / ".claude" / "commands" / "flow" / "summary.md"  # defined: the default refresh runs claude
    command.parent.mkdir(parents=True)
    command.write_text("Summarise the project.\n")
    meta = await run_group(project, [task("a"), task("b")])

    assert meta.status is TaskStatus.COMPLETED, meta.errors
    assert meta.pre_group_refresh_completed is True
    everything = [json.loads(p.read_text()) for p in (project / ".fake-agents").glob("*.json")]
    assert len(everything) == 3  # the refresh and two agents
    assert not any(c["claudecode"] for c in everything)
    refresh = [c for c in everything if "MAESTRO_TASK_ID" not in c["env"]]
    assert refresh[0]["argv"] == ["-p", "/flow:summary"]
    assert "Project summary (fake claude)" in prompt_of(project, "a")


async def test_a_prompt_full_of_shell_syntax_arrives_as_one_uninterpreted_argument(project: Path) -> None:
    nasty = (
        "Fix it; rm -rf / ; echo $(touch pwned-subshell) `touch pwned-backtick` $HOME ${PATH} "
        "&& true || false | cat > out.txt < /dev/null & 'single' \"double\" \\back\\slash "
        "* ? [a-z] {a,b} ~ # !! %s %n\nsecond line\r\n\ttabbed 雪 ☃ émoji 🎉 \u202e rtl\x00after-nul"
    )
    meta = await run_group(project, [task("n", nasty)])

    assert by_id(meta)["n"]["status"] == "completed", meta.errors
    prompt = prompt_of(project, "n")
    call = only_call(project, "n")
    assert call["argv"] == ["-p", prompt, *CLAUDE_ARGV_TAIL]
    assert "\x00" not in prompt
    assert nasty.replace("\x00", "") in prompt
    assert "rtlafter-nul" in call["argv"][1]
    assert not list(project.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_agent_command_replaces_every_subagents_command_and_judges_by_exit_code(project: Path) -> None:
    configure(project, preset_config(extra="""
        [agents.test-automator]
        preset = "codex"
        """))
    tasks = [task("api", "Add the api endpoint FAKE:is_error"), task("tests", "Add pytest tests FAKE:is_error")]
    run = invoke(project, "execute", "--group-id", "g", "--tasks-file", tasks_file(project, tasks), "--json",
                 "--agent-command", "claude -p {prompt} --output-format text --model 'claude haiku'")
    assert run.exit_code == 0, run.stdout + run.stderr
    results = by_id(json.loads(run.stdout))
    assert {r["subagent"] for r in results.values()} == {"backend-architect", "test-automator"}
    for task_id in ("api", "tests"):
        call = only_call(project, task_id)
        assert call["cli"] == "claude"
        assert call["argv"] == ["-p", prompt_of(project, task_id), "--output-format", "text", "--model", "claude haiku"]
        # exit-code judging: the agent said is_error in text and exited 0, so the task completed
        assert results[task_id]["status"] == "completed" and "session_id" not in results[task_id]
        assert log_of(project, task_id) == "Credit balance is too low\n"


async def test_subagent_overrides_reach_only_their_subagents_tasks(project: Path) -> None:
    configure(project, preset_config(
        agent='env = {FAKE_SHARED = "agent", FAKE_BASE_ONLY = "1"}',
        extra="""
        [agents.test-automator]
        preset = "codex"
        env = {FAKE_SHARED = "override", FAKE_MINE = "yes"}

        [agents.frontend-developer]
        command = ["claude", "-p", "{prompt}", "--output-format", "text"]
        result_format = "exit-code"
        """,
    ))
    tasks = [task("api", "Build the api endpoint"), task("tests", "Write pytest tests for it"),
             task("ui", "Build the react component FAKE:is_error")]
    meta = await run_group(project, tasks)
    results = by_id(meta)
    assert {k: r["subagent"] for k, r in results.items()} == {
        "api": "backend-architect", "tests": "test-automator", "ui": "frontend-developer"}

    api, tests, ui = (only_call(project, t) for t in ("api", "tests", "ui"))
    assert (api["cli"], api["argv"][2:]) == ("claude", CLAUDE_ARGV_TAIL)
    assert (tests["cli"], tests["argv"][:-1]) == ("codex", CODEX_ARGV_HEAD)
    assert (ui["cli"], ui["argv"][2:]) == ("claude", ["--output-format", "text"])
    fake_env = {name: {k: v for k, v in c["env"].items() if k.startswith("FAKE_")} for name, c in
                (("api", api), ("tests", tests), ("ui", ui))}
    assert fake_env["api"] == fake_env["ui"] == {"FAKE_SHARED": "agent", "FAKE_BASE_ONLY": "1"}
    assert fake_env["tests"] == {"FAKE_SHARED": "override", "FAKE_BASE_ONLY": "1", "FAKE_MINE": "yes"}
    # Each judged by its own result format.
    assert results["api"]["cost_usd"] == DEFAULT_COST
    assert results["tests"]["usage"] == CODEX_USAGE and "cost_usd" not in results["tests"]
    assert results["ui"]["status"] == "completed" and "session_id" not in results["ui"]


async def test_subagent_timeout_and_retries_apply_to_that_subagent_only(project: Path, quick_retries: None) -> None:
    configure(project, preset_config(agent="retries = 2", extra="""
        [agents.test-automator]
        timeout_seconds = 1
        retries = 0
        """))
    tasks = [
        task("api-busy", "Fix the api FAKE:rate_limit_once"),
        task("api-slow", "Fix the api FAKE:sleep=1.5"),
        task("tests-busy", "Fix the tests FAKE:rate_limit_once"),
        task("tests-stuck", "Fix the tests FAKE:hang"),
    ]
    meta = await run_group(project, tasks)
    results = by_id(meta)
    assert (results["api-busy"]["status"], results["api-busy"]["attempts"]) == ("completed", 2)
    assert results["api-slow"]["status"] == "completed"
    assert (results["tests-busy"]["status"], results["tests-busy"]["attempts"]) == ("failed", 1)
    assert "429" in results["tests-busy"]["error"]
    assert results["tests-stuck"]["error"] == "timed out after 1s"


async def test_subagent_grace_period_applies_to_that_subagent(project: Path) -> None:
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                      "time.sleep(60)"]
    configure(project, preset_config(extra=f"""
        [agents.test-automator]
        command = {json.dumps(stubborn)}
        timeout_seconds = 0.5
        grace_seconds = 0.2
        """).replace("grace_seconds = 1", "grace_seconds = 30", 1))
    started = time.monotonic()
    meta = await run_group(project, [task("t", "Fix the tests")])
    assert by_id(meta)["t"]["error"] == "timed out after 0.5s"
    assert time.monotonic() - started < 15, "the subagent's own grace period, not [agent]'s 30 s"


# --------------------------------------------------------------------------- subagents and skills


def agent_file(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(f"---\nname: {name}\ndescription: test agent\n---\nYou are {name}.\n")


async def test_fallbacks_reach_the_agent(project: Path) -> None:
    agent_file(project / ".claude" / "agents", "api-dev")
    agent_file(Path(os.environ["HOME"]) / ".claude" / "agents", "ui-dev")
    tasks = [
        task("fb", "Build the endpoint", metadata={"subagent_type": "ghost", "fallback_agents": ["nobody", "api-dev"]}),
        task("home", "Build the page", metadata={"subagent_type": "ui-dev"}),
        task("none", "Build the api endpoint", metadata={"subagent_type": "ghost"}),
    ]
    meta = await run_group(project, tasks)
    results = by_id(meta)
    assert meta.status is TaskStatus.COMPLETED, meta.errors
    assert meta.errors == []
    expected = {"fb": "api-dev", "home": "ui-dev", "none": "backend-architect"}
    for task_id, subagent in expected.items():
        call = only_call(project, task_id)
        assert results[task_id]["subagent"] == subagent
        assert call["env"]["MAESTRO_SUBAGENT"] == subagent
        if task_id == "none":  # not defined: named in the prompt
            assert call["argv"][1].startswith(f"Use the `{subagent}` subagent for this task.")
            assert "--agent" not in call["argv"]
        else:  # defined in .claude/agents (repository or home): applied with --agent
            assert call["argv"][1].startswith(f"You are the `{subagent}` subagent.")
            assert call["argv"][-2:] == ["--agent", subagent]
    assert results["fb"]["warnings"] == [
        "subagent 'ghost' is not defined in .claude/agents", "using fallback subagent 'api-dev'"]
    assert results["home"]["warnings"] == []
    assert results["none"]["warnings"] == [
        "subagent 'ghost' is not defined in .claude/agents",
        "detected subagent 'backend-architect' is not defined in .claude/agents; using it anyway",
    ]


async def test_skills_from_skill_md_repository_first_then_home(project: Path) -> None:
    def skill(folder: Path, name: str, text: str) -> None:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "SKILL.md").write_text(f"---\nname: {name}\ndescription: x\n---\n{text}\n")

    home_skills = Path(os.environ["HOME"]) / ".claude" / "skills"
    skill(project / ".claude" / "skills", "lint", "Repository lint: run ruff.")
    skill(home_skills, "lint", "Home lint: never used, the repository's wins.")
    skill(home_skills, "style", "Home style: four spaces.")
    spec = task("a", "Tidy src/a.py", metadata={"applicable_skills": ["lint", "style", "ghost"]})
    meta = await run_group(project, [spec])

    result = by_id(meta)["a"]
    assert result["status"] == "completed" and meta.errors == []
    assert (result["skills_applied"], result["skills_missing"]) == (["lint", "style"], ["ghost"])
    assert result["warnings"] == ["skill 'ghost' not found; running without it"]
    call = only_call(project, "a")
    prompt = call["argv"][1]
    assert call["env"]["MAESTRO_SKILLS"] == "lint,style"
    assert "## Skill: lint\n\nRepository lint: run ruff." in prompt
    assert "## Skill: style\n\nHome style: four spaces." in prompt
    assert "Home lint" not in prompt and "description: x" not in prompt
    assert prompt.index("## Skill: style") < prompt.index("## Task a")


async def test_skills_from_the_skills_command(project: Path) -> None:
    (project / "skills.py").write_text(textwrap.dedent("""
        import sys, time
        name, task_id, root = sys.argv[1:4]
        if name == "broken":
            print("no such skill", file=sys.stderr)
            sys.exit(1)
        if name == "slow":
            time.sleep(60)
        print(f"Guidance for {name} (task {task_id}, repo {root}).")
    """))
    # A SKILL.md is not consulted when [skills].command is set.
    (project / ".claude" / "skills" / "broken").mkdir(parents=True)
    (project / ".claude" / "skills" / "broken" / "SKILL.md").write_text("from the file\n")
    command = json.dumps([sys.executable, "skills.py", "{skill}", "{task_id}", "{repo_root}"])
    configure(project, preset_config(extra=f"""
        [skills]
        command = {command}
        timeout_seconds = 2
        """))
    spec = task("a", metadata={"applicable_skills": ["lint", "broken", "slow"]})
    started = time.monotonic()
    meta = await run_group(project, [spec])

    assert time.monotonic() - started < 20
    result = by_id(meta)["a"]
    assert result["status"] == "completed" and meta.errors == []
    assert (result["skills_applied"], result["skills_missing"]) == (["lint"], ["broken", "slow"])
    assert result["warnings"] == ["skill 'broken' not found; running without it",
                                  "skill 'slow' not found; running without it"]
    prompt = only_call(project, "a")["argv"][1]
    assert f"## Skill: lint\n\nGuidance for lint (task a, repo {project})." in prompt
    assert "from the file" not in prompt and "## Skill: broken" not in prompt


# --------------------------------------------------------------------------- launch stagger


async def test_launch_stagger_spaces_the_agents_starts(project: Path) -> None:
    configure(project, preset_config(agent="launch_stagger_seconds = 0.3"))
    meta = await run_group(project, [task(f"t{i}") for i in range(4)])
    assert meta.status is TaskStatus.COMPLETED, meta.errors
    starts = sorted(c["start"] for c in calls(project))
    assert len(starts) == 4
    assert starts[-1] - starts[0] >= 0.6  # three gaps of 0.3 s, measured by the agents themselves


# --------------------------------------------------------------------------- verdict rules the fakes showed


def verdict(result_format: str, *objects: dict[str, Any], returncode: int = 0, tail: bytes = b"") -> Verdict:
    scanner = ResultScanner(result_format)
    scanner.feed(b"".join(json.dumps(o).encode() + b"\n" for o in objects))
    scanner.finish()
    return judge(scanner, returncode, describe=f"exit code {returncode}", tail=tail)


RECONNECT = {"type": "error", "message": "Reconnecting... 1/5 (stream disconnected before completion)"}
DONE = {"type": "turn.completed", "usage": CODEX_USAGE}


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([RECONNECT, RECONNECT, DONE], None),
        ([DONE, RECONNECT], "agent reported error: Reconnecting... 1/5 (stream disconnected before completion)"),
        ([{"type": "turn.failed", "error": {"message": "boom"}}, DONE], "agent reported turn.failed: boom"),
        ([RECONNECT, {"type": "turn.failed", "error": {"message": "boom"}}], "agent reported turn.failed: boom"),
        ([{"type": "turn.started"}], "agent printed no turn.completed event (codex-jsonl)"),
        ([], "agent printed no turn.completed event (codex-jsonl)"),
    ],
)
def test_a_codex_error_event_stands_unless_a_completed_turn_follows(
    events: list[dict[str, Any]], error: str | None
) -> None:
    thread = {"type": "thread.started", "thread_id": "th"}
    assert verdict("codex-jsonl", thread, *events).error == error


@pytest.mark.parametrize(
    ("result_format", "report", "tail", "retryable"),
    [
        ("claude-json", {"type": "result", "subtype": "error_max_turns", "is_error": False, "errors": []},
         b"I'll add rate limiting (HTTP 429) to the API", False),
        ("claude-json", {"type": "result", "subtype": "error_during_execution", "is_error": True,
                         "errors": ["API Error: 429 rate_limit_error"]}, b"", True),
        ("claude-json", {"type": "result", "subtype": "success", "is_error": True,
                         "result": "API Error: 429 rate_limit_error"}, b"", True),
        ("codex-jsonl", {"type": "turn.failed", "error": {"message": "exceeded retry limit, last status: 429"}},
         b"", True),
        ("codex-jsonl", {"type": "turn.failed", "error": {"message": "bad request"}},
         b"implementing the rate limiter", False),
    ],
)
def test_a_rate_limit_is_read_from_the_agents_own_report(
    result_format: str, report: dict[str, Any], tail: bytes, retryable: bool
) -> None:
    assert verdict(result_format, report, tail=tail).retryable is retryable


def test_claude_permission_denials_are_recorded_by_tool_name() -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "Need permission",
              "permission_denials": [{"tool_name": "Write", "tool_use_id": "t1", "tool_input": {}},
                                     {"tool_name": "Bash", "tool_use_id": "t2", "tool_input": {}}]}
    judged = verdict("claude-json", result)
    assert (judged.completed, judged.extra["permission_denials"]) == (True, ["Write", "Bash"])


async def test_a_subagents_own_launch_stagger_applies_to_its_tasks(tmp_path: Path) -> None:
    from helpers import AGENT, agent_config, runs, task, write_config

    repo = tmp_path / "stagger"
    repo.mkdir()
    (repo / "agent.py").write_text(AGENT)
    write_config(repo, agent_config(extra="[agents.test-automator]\nlaunch_stagger_seconds = 0.4\n"))
    tasks = [task(f"t{i}", "add pytest coverage") for i in range(3)] + [task("api", "add an api endpoint")]
    meta = await AsyncParallelCoordinator(repo, tracker=LocalTracker(repo)).execute_parallel_group(tasks, "g")
    assert meta.status.value == "completed"
    starts = {e["task"]: e["t"] for e in runs(repo) if e["event"] == "start"}
    staggered = sorted(starts[f"t{i}"] for i in range(3))
    assert staggered[-1] - staggered[0] >= 0.8 * 0.9  # two gaps of 0.4 s among the test-automator's tasks
    assert starts["api"] - min(starts.values()) < 0.4  # the backend task was not held back
