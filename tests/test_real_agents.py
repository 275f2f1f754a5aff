"""maestro with the real Claude Code and Codex CLIs, against loopback stand-ins of their model APIs.

The CLIs are the pinned npm packages ``tests/realcli/install.sh`` installs; their folder goes first
on the agents' PATH, so the presets run them with the presets' own argv.  Each test scripts the
model's turns in a stand-in (``tests/standins``), runs ``maestro-parallel execute`` as a user
would (a subprocess), and checks what maestro recorded and what the agent really did.

Without node/npm or the install these tests skip and say why; under ``CI=true`` they fail instead,
since CI installs the CLIs before it runs the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import task
from realcli import RealCLIs, locate, missing_reason
from standins._server import Kind, StandIn, Turn
from standins.anthropic import AnthropicStandIn
from standins.anthropic import environment as claude_environment
from standins.openai import OpenAIStandIn, write_codex_home
from standins.openai import environment as codex_environment

pytestmark = pytest.mark.realcli

#: Variables of the machine running the tests that must not reach the real CLIs.
_SCRUB = ("ANTHROPIC_", "CLAUDE", "OPENAI_", "CODEX_", "MAESTRO_")


@pytest.fixture(scope="session")
def real() -> RealCLIs:
    found = locate()
    if found is None:
        reason = missing_reason() or "real CLIs not found"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install the real CLIs before the tests: {reason}")
        pytest.skip(reason)
    return found


@dataclass
class Project:
    """A git repository, a home folder of its own and the environment maestro runs under."""

    root: Path
    home: Path
    env: dict[str, str]

    def configure(self, preset: str, extra: str = "", **agent: Any) -> None:
        settings = {"preset": preset, "timeout_seconds": 60, "grace_seconds": 1, "retries": 0, **agent}
        lines = ["[agent]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items()), "",
                 "[refresh]", "enabled = false", "", "[tests]", "enabled = false", "",
                 "[tracker]", 'kind = "local"', "poll_interval_seconds = 0.2", ""]
        folder = self.root / ".flow" / "maestro"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.toml").write_text("\n".join(lines) + textwrap.dedent(extra))

    def execute(self, tasks: list[dict[str, Any]], *args: str, timeout: float = 120) -> tuple[int, dict[str, Any]]:
        """``maestro-parallel execute --json`` on ``tasks`` as group ``g``: (exit code, the JSON document)."""
        path = self.root / "tasks.json"
        path.write_text(json.dumps(tasks))
        proc = subprocess.run(
            [sys.executable, "-m", "maestro_parallel", "--repo-root", str(self.root), "execute", "--group-id", "g",
             "--tasks-file", str(path), "--json", *args],
            env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        assert proc.stdout.strip(), proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def journal(self) -> list[dict[str, Any]]:
        text = (self.root / ".flow/maestro/parallel_groups/g/events.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def log(self, task_id: str) -> str:
        return (self.root / f".flow/maestro/parallel_groups/g/logs/{task_id}.log").read_text()


def _base_env(real: RealCLIs, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env["PATH"] = f"{real.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    env.pop("CI", None)
    return env


def _git_repo(root: Path) -> None:
    root.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(root), *args], check=True)
    (root / "README.md").write_text("a project\n")
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "start"], check=True)


@pytest.fixture
def claude_api() -> Iterator[AnthropicStandIn]:
    with AnthropicStandIn() as api:
        yield api


@pytest.fixture
def codex_api() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn() as api:
        yield api


@pytest.fixture
def claude_project(real: RealCLIs, tmp_path: Path, claude_api: AnthropicStandIn) -> Project:
    home = tmp_path / "home"
    home.mkdir()
    _git_repo(tmp_path / "repo")
    env = {**_base_env(real, home), **claude_environment(claude_api.url, home=str(home))}
    project = Project(tmp_path / "repo", home, env)
    project.configure("claude")
    return project


@pytest.fixture
def codex_project(real: RealCLIs, tmp_path: Path, codex_api: OpenAIStandIn) -> Project:
    home = tmp_path / "home"
    home.mkdir()
    _git_repo(tmp_path / "repo")
    codex_home = write_codex_home(home / ".codex", codex_api.url)
    env = {**_base_env(real, home), **codex_environment(codex_api.url, home=str(home), codex_home=str(codex_home))}
    project = Project(tmp_path / "repo", home, env)
    project.configure("codex")
    return project


def only(document: dict[str, Any], task_id: str = "t1") -> dict[str, Any]:
    return next(r for r in document["results"] if r["task_id"] == task_id)


def pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_nothing_survives(project: Project) -> None:
    started = [e for e in project.journal() if e.get("event") == "task_started"]
    assert started
    for event in started:
        assert not pgid_alive(event["pgid"]), f"the agent's process group {event['pgid']} survived"


def request_text(api: StandIn, index: int = 0) -> str:
    return json.dumps(api.model_requests[index].body)


# --------------------------------------------------------------------------- Claude Code


def test_claude_text_answer_completes_with_session_cost_and_tokens(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    claude_api.script(Turn.say("Nothing to change."))
    code, document = claude_project.execute([task("t1", "Check the README wording")])

    assert code == 0, document
    result = only(document)
    assert result["status"] == "completed" and result["attempts"] == 1 and result["exit_code"] == 0
    reported = json.loads(claude_project.log("t1").strip().splitlines()[-1])
    assert result["session_id"] == reported["session_id"] and len(result["session_id"]) == 36
    assert result["cost_usd"] == reported["total_cost_usd"] > 0
    assert result["usage"]["input_tokens"] == 100 and result["usage"]["output_tokens"] == 20
    assert result["num_turns"] == 1
    # The task reached the model: its title and description are in the request.
    assert "Check the README wording" in request_text(claude_api)
    assert "task t1" in request_text(claude_api)


def test_claude_tool_call_writes_the_file_in_its_worktree_and_the_work_lands(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    # The repository has a commit: the agent works in its own worktree, the only folder it may write to.
    worktree = claude_project.root / ".flow" / "maestro" / "worktrees" / "g" / "t1"
    target = worktree / "src" / "hello.py"
    claude_api.script(Turn.tool("Write", file_path=str(target), content="print('hello')\n"), Turn.say("Wrote it."))
    code, document = claude_project.execute([task("t1", "Create src/hello.py")])

    assert code == 0, document
    result = only(document)
    assert result["status"] == "completed" and result["num_turns"] == 2
    assert result["changed_files"] == ["src/hello.py"] and result["branch"] == "maestro/g/t1"
    # The merge queue landed it on the checked-out branch.
    assert document["landed"] is True
    assert (claude_project.root / "src" / "hello.py").read_text() == "print('hello')\n"
    assert str(worktree) in request_text(claude_api, 0)  # the CLI told the model where it works
    # The tool result went back to the model in the second request.
    assert "tool_result" in request_text(claude_api, 1)


@pytest.mark.parametrize("status", [429, 529])
def test_claude_rate_limit_and_overload_are_retried(
    claude_project: Project, claude_api: AnthropicStandIn, status: int
) -> None:
    claude_project.configure("claude", retries=1)
    claude_api.script(Turn.error(status), Turn.say("Done on the second try."))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 0, document
    assert only(document)["status"] == "completed" and only(document)["attempts"] == 2
    retries = [e for e in claude_project.journal() if e.get("event") == "task_retry"]
    assert len(retries) == 1 and str(status) in retries[0]["reason"]


def test_claude_rate_limit_without_retries_left_fails_with_the_rate_limit_error(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    claude_api.script(Turn.error(429))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and result["attempts"] == 1
    assert "429" in result["error"] and "rate_limit_error" in result["error"]
    assert document["errors"] == [f"t1: {result['error']}"]


def test_claude_server_error_fails_at_once_with_the_error(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    claude_project.configure("claude", retries=2)
    claude_api.script(Turn.error(500, "the stand-in broke"))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and result["attempts"] == 1  # a 500 is not a rate limit
    assert "API Error: 500" in result["error"]
    assert len(claude_api.model_requests) == 1


def test_claude_hang_is_stopped_by_the_task_timeout(claude_project: Project, claude_api: AnthropicStandIn) -> None:
    claude_project.configure("claude", timeout_seconds=4)
    claude_api.script(Turn(Kind.HANG))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and result["error"] == "timed out after 4s"
    assert_nothing_survives(claude_project)


def test_claude_not_logged_in_fails_with_that_line(claude_project: Project, claude_api: AnthropicStandIn) -> None:
    claude_project.env.pop("ANTHROPIC_API_KEY")
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed"
    assert "Not logged in" in result["error"]
    assert claude_api.model_requests == []


def test_claude_permission_denials_are_recorded_by_tool_name(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    # acceptEdits allows edits inside the working directory only.
    outside = claude_project.home / "outside.txt"
    claude_api.script(Turn.tool("Write", file_path=str(outside), content="x\n"), Turn.say("Could not."))
    code, document = claude_project.execute([task("t1", "Do it")])

    result = only(document)
    assert result.get("permission_denials") == ["Write"], claude_project.log("t1")
    assert not outside.exists()
    assert code == 0 and result["status"] == "completed"  # the agent said it is done: the denial is the clue


def test_claude_connection_closed_mid_stream_is_recorded_truthfully(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    claude_api.script(Turn(Kind.CUT), Turn(Kind.CUT), Turn(Kind.CUT))
    code, document = claude_project.execute([task("t1", "Do it")])

    result = only(document)
    assert result["status"] == "failed", result
    assert code == 1


# --------------------------------------------------------------------------- Codex


PATCH = "*** Begin Patch\n*** Add File: notes/hello.txt\n+hello from codex\n*** End Patch\n"


def test_codex_text_answer_completes_with_thread_id_and_tokens(
    codex_project: Project, codex_api: OpenAIStandIn
) -> None:
    codex_api.script(Turn.say("Nothing to change."))
    code, document = codex_project.execute([task("t1", "Check the README wording")])

    assert code == 0, document
    result = only(document)
    assert result["status"] == "completed" and result["attempts"] == 1
    started = json.loads(codex_project.log("t1").splitlines()[0]) if codex_project.log("t1").startswith("{") else None
    thread = [json.loads(line) for line in codex_project.log("t1").splitlines() if '"thread.started"' in line][0]
    assert result["session_id"] == thread["thread_id"], started
    assert result["usage"]["input_tokens"] == 200 and result["usage"]["output_tokens"] == 30
    assert "Check the README wording" in request_text(codex_api)


def test_codex_apply_patch_writes_the_file(codex_project: Project, codex_api: OpenAIStandIn) -> None:
    codex_api.script(Turn.tool("apply_patch", patch=PATCH), Turn.say("Patched."))
    code, document = codex_project.execute([task("t1", "Add notes/hello.txt")])

    assert code == 0, document
    assert (codex_project.root / "notes" / "hello.txt").read_text() == "hello from codex\n"


def test_codex_exec_command_runs_in_the_repository(codex_project: Project, codex_api: OpenAIStandIn) -> None:
    codex_api.script(Turn.tool("exec_command", cmd="echo built > built.txt"), Turn.say("Ran it."))
    code, document = codex_project.execute([task("t1", "Build")])

    assert code == 0, document
    assert (codex_project.root / "built.txt").read_text() == "built\n"


def test_codex_rate_limit_is_retried(codex_project: Project, codex_api: OpenAIStandIn) -> None:
    codex_project.configure("codex", retries=1)
    codex_api.script(Turn.error(429), Turn.say("Done on the second try."))
    code, document = codex_project.execute([task("t1", "Do it")])

    assert code == 0, document
    assert only(document)["attempts"] == 2
    retries = [e for e in codex_project.journal() if e.get("event") == "task_retry"]
    assert len(retries) == 1 and "429 Too Many Requests" in retries[0]["reason"]


def test_codex_server_error_is_transient_high_demand(codex_project: Project, codex_api: OpenAIStandIn) -> None:
    # Codex words every HTTP 5xx as "high demand": a transient overload, retried like a rate limit.
    codex_project.configure("codex", retries=1)
    codex_api.script(Turn.error(500), Turn.error(500))
    code, document = codex_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and result["attempts"] == 2
    assert "experiencing high demand" in result["error"]


@pytest.mark.parametrize(("turn", "words"), [
    (Turn(Kind.FAILED, text="model exploded"), "stream disconnected before completion"),
    (Turn(Kind.CUT), "stream closed before response.completed"),
])
def test_codex_failed_or_cut_stream_fails_with_the_error(
    codex_project: Project, codex_api: OpenAIStandIn, turn: Turn, words: str
) -> None:
    codex_api.script(turn)
    code, document = codex_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and words in result["error"]


def test_codex_turn_that_never_completes_is_stopped_by_the_task_timeout(
    codex_project: Project, codex_api: OpenAIStandIn
) -> None:
    codex_project.configure("codex", timeout_seconds=4)
    codex_api.script(Turn(Kind.HANG))
    code, document = codex_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and result["error"] == "timed out after 4s (no turn completed)"
    assert_nothing_survives(codex_project)


# --------------------------------------------------------------------------- the refresh with the real claude


def _enable_refresh(project: Project) -> None:
    path = project.root / ".flow" / "maestro" / "config.toml"
    path.write_text(path.read_text().replace("[refresh]\nenabled = false", "[refresh]\nenabled = true"))


def test_claude_without_flow_summary_gets_the_digest_and_no_model_call_is_spent_on_it(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    _enable_refresh(claude_project)
    claude_api.script(Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 0, document
    assert document["pre_group_refresh_completed"] is True
    assert len(claude_api.model_requests) == 1  # the task's session only
    assert "Built-in project digest" in request_text(claude_api) and "Branch: main at" in request_text(claude_api)


def test_claude_with_flow_summary_from_init_runs_it_and_its_answer_reaches_the_prompts(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    init = subprocess.run([sys.executable, "-m", "maestro_parallel", "--repo-root", str(claude_project.root), "init",
                           "--summary-command"], env=claude_project.env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    _enable_refresh(claude_project)
    claude_api.script(Turn.say("STATE-FROM-MODEL: three services, tests green."), Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 0, document
    assert document["pre_group_refresh_completed"] is True
    assert len(claude_api.model_requests) == 2
    assert "Summarise the current state of this repository" in request_text(claude_api, 0)
    assert "STATE-FROM-MODEL: three services, tests green." in request_text(claude_api, 1)


def test_codex_gets_the_digest_by_default(codex_project: Project, codex_api: OpenAIStandIn) -> None:
    _enable_refresh(codex_project)
    codex_api.script(Turn.say("Done."))
    code, document = codex_project.execute([task("t1", "Do it")])

    assert code == 0, document
    assert document["pre_group_refresh_completed"] is True
    assert len(codex_api.model_requests) == 1
    assert "Built-in project digest" in request_text(codex_api)


# --------------------------------------------------------------------------- subagents applied with --agent


def _agent(folder: Path, file: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{file}.md").write_text(text)


@pytest.mark.parametrize("where", ["repo", "home"])
def test_claude_runs_a_defined_subagent_with_agent_and_its_definition_reaches_the_model(
    claude_project: Project, claude_api: AnthropicStandIn, where: str
) -> None:
    folder = (claude_project.root if where == "repo" else claude_project.home) / ".claude" / "agents"
    _agent(folder, "backend-architect", "---\nname: backend-architect\ndescription: Designs backends\n---\n"
           "You are ARCHITECT-DEFINITION-7f3a, a careful backend designer.\n")
    claude_api.script(Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "Add the api endpoint", metadata={
        "subagent_type": "backend-architect"})])

    assert code == 0, document
    assert only(document)["subagent"] == "backend-architect" and only(document)["warnings"] == []
    assert "ARCHITECT-DEFINITION-7f3a" in claude_api.system_text(0)
    assert "You are the `backend-architect` subagent." in request_text(claude_api)


def test_claude_names_an_undefined_subagent_in_the_prompt(claude_project: Project, claude_api: AnthropicStandIn) -> None:
    _agent(claude_project.root / ".claude" / "agents", "other", "---\nname: other\ndescription: d\n---\nOTHER-9\n")
    claude_api.script(Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "Do it", metadata={
        "subagent_type": "ghost", "fallback_agents": []})])

    assert code == 0, document
    assert "Use the `backend-architect` subagent for this task." in request_text(claude_api)
    assert "OTHER-9" not in claude_api.system_text(0)


def test_claude_subagent_with_broken_front_matter_runs_with_the_prompt_line_and_a_warning(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    # The real CLI would not load this file: "--agent 'api-dev' not found".  maestro keeps the task alive.
    _agent(claude_project.root / ".claude" / "agents", "api-dev", "---\nname: api-dev\ndescription: APIs\nBROKEN-5\n")
    claude_api.script(Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "Do it", metadata={"subagent_type": "api-dev"})])

    assert code == 0, document
    result = only(document)
    assert result["status"] == "completed" and result["subagent"] == "api-dev"
    assert result["warnings"] == [
        f"subagent 'api-dev': {claude_project.root / '.claude/agents/api-dev.md'} is not loadable by claude "
        "(its front matter is never closed by ---); named in the prompt instead of --agent"]
    assert "Use the `api-dev` subagent for this task." in request_text(claude_api)


def test_claude_agent_not_found_is_the_tasks_error(claude_project: Project, claude_api: AnthropicStandIn) -> None:
    # A command that always passes --agent (the preset kept): the real CLI's own line is the error.
    command = ["claude", "-p", "{prompt}", "--output-format", "json", "--permission-mode", "acceptEdits",
               "--agent", "{subagent}"]
    claude_project.configure("claude", command=command)
    code, document = claude_project.execute([task("t1", "Do it", metadata={"subagent_type": "ghost"})])

    assert code == 1
    error = only(document)["error"]
    assert error.startswith("exit code 1: --agent 'ghost' not found. Available agents: "), error
    assert claude_api.model_requests == []


# --------------------------------------------------------------------------- budgets


def test_claude_over_its_max_budget_fails_with_the_budget_in_the_error(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    claude_project.configure("claude", max_budget_usd=0.0001, retries=2)  # passed as --max-budget-usd 0.0001
    claude_api.script(Turn.tool("Write", file_path=str(claude_project.root / "a.txt"), content="x\n"), Turn.say("ok"))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 1
    result = only(document)
    assert result["status"] == "failed" and result["attempts"] == 1  # a spent budget is never retried
    assert result["error"] == "exit code 1: agent reported error_max_budget_usd: Reached maximum budget ($0.0001)"
    assert result["cost_usd"] > 0.0001


def test_claude_group_budget_stops_launches_once_the_reported_costs_reach_it(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    # One agent at a time: the first reports its cost (the real CLI prices the stand-in's tokens),
    # which reaches the group's cap, so the others are never launched.
    claude_project.configure("claude", max_parallel=1, extra="[budget]\ngroup_usd = 0.0001\n")
    claude_api.script(Turn.say("Done."), Turn.say("Done."), Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "One"), task("t2", "Two"), task("t3", "Three")])

    assert code == 1
    first = only(document, "t1")
    assert first["status"] == "completed" and first["cost_usd"] >= 0.0001
    spent = document["budget"]["spent_usd"]
    assert spent == first["cost_usd"] and document["budget"]["group_usd"] == 0.0001
    for task_id in ("t2", "t3"):
        result = only(document, task_id)
        assert result["status"] == "failed" and result["attempts"] == 0
        assert result["error"].startswith("budget exhausted ($") and result["error"].endswith(" of $0.0001)")
    assert len(claude_api.model_requests) == 1, "only the first agent reached the API"


def test_claude_refresh_that_fails_at_the_api_is_a_warning_and_no_state(
    claude_project: Project, claude_api: AnthropicStandIn
) -> None:
    (claude_project.root / ".claude" / "commands" / "flow").mkdir(parents=True)
    (claude_project.root / ".claude" / "commands" / "flow" / "summary.md").write_text("Summarise the project.\n")
    _enable_refresh(claude_project)
    claude_api.script(Turn.error(500), Turn.say("Done."))
    code, document = claude_project.execute([task("t1", "Do it")])

    assert code == 0, document
    assert document["pre_group_refresh_completed"] is False
    warning = only(document)["warnings"][0]
    assert warning.startswith("context refresh failed: exit code 1: API Error: 500"), warning
    assert "(no project summary is available)" in request_text(claude_api, 1)
