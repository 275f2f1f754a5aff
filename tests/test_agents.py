"""How a task becomes an agent run, and how the run is judged (agents.py, DESIGN §7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from maestro_parallel.agents import (
    ARG_MAX_ELEMENT,
    PLACEHOLDERS,
    ResultScanner,
    Verdict,
    agent_environment,
    available_subagents,
    build_prompt,
    choose_subagent,
    find_skill_file,
    is_rate_limited,
    judge,
    oversized_argument,
    placeholders_in,
    render_argv,
    resolve_executable,
    strip_front_matter,
)
from maestro_parallel.errors import ConfigError, MaestroError
from maestro_parallel.models import TaskMetadata

VALUES = {
    "prompt": "Use the `backend-architect` subagent.\n\nDo it.",
    "prompt_file": "/repo/.flow/maestro/parallel_groups/infra/prompts/t-1.md",
    "task_id": "t-1",
    "group_id": "infra",
    "subagent": "backend-architect",
    "repo_root": "/repo",
    "title": "Add login endpoint",
    "skill": "api-design",
}

# ------------------------------------------------------------------ render_argv


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (["claude", "-p", "{prompt}", "--output-format", "json"],
         ["claude", "-p", VALUES["prompt"], "--output-format", "json"]),
        (["agent", "--file={prompt_file}"], ["agent", "--file=" + VALUES["prompt_file"]]),
        (["{repo_root}/bin/agent", "{task_id}", "{group_id}", "{subagent}", "{title}", "{skill}"],
         ["/repo/bin/agent", "t-1", "infra", "backend-architect", "Add login endpoint", "api-design"]),
        (["x", "{task_id}@{group_id}:{subagent}"], ["x", "t-1@infra:backend-architect"]),
        (["jq", "{{.result}}"], ["jq", "{.result}"]),
        (["echo", "{{task_id}}", "{{{task_id}}}", "}}{{"], ["echo", "{task_id}", "{t-1}", "}{"]),
        (["plain", "", "--flag"], ["plain", "", "--flag"]),
        ([], []),
    ],
)
def test_render_argv(template: list[str], expected: list[str]) -> None:
    assert render_argv(template, VALUES) == expected


@pytest.mark.parametrize(
    "value",
    [
        "{task_id}",
        "{prompt} and {{braces}}",
        "$(rm -rf /); echo \"x\" | cat > /tmp/y",
        "`id` && ${HOME} ; 'quoted' \\1 \\g<0>",
        "line one\nline two\ttab",
    ],
)
def test_a_substituted_value_is_taken_literally_and_stays_one_element(value: str) -> None:
    argv = render_argv(["agent", "-p", "{title}", "--id={title}"], {**VALUES, "title": value})
    assert argv == ["agent", "-p", value, f"--id={value}"]


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        (["claude", "-p", "{promt}"], "{promt}"),
        (["claude", "{PROMPT}"], "{PROMPT}"),
        (["claude", "{task}"], "{task}"),
        (["claude", "{"], "'{'"),
        (["claude", "a}b"], "'}'"),
        (["claude", "{ task_id }"], "'{'"),
        (["claude", "{1}"], "'{'"),
        (["claude", "{task_id"], "'{'"),
        (["jq", "{.result}"], "'{'"),
    ],
)
def test_render_argv_rejects_unknown_placeholders_and_stray_braces(template: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_argv(template, VALUES, key="[agents.backend-architect].command")
    assert info.value.key == "[agents.backend-architect].command"
    assert str(info.value).startswith("[agents.backend-architect].command: ")
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, MaestroError)


def test_an_error_lists_the_placeholders_valid_where_the_template_is_used() -> None:
    values = {"skill": "api-design", "task_id": "t-1", "repo_root": "/repo"}
    with pytest.raises(ConfigError) as info:
        render_argv(["skill-tool", "{prompt}"], values, key="[skills].command")
    message = str(info.value)
    assert message.startswith("[skills].command: ") and "{prompt}" in message
    assert "{skill}" in message and "{task_id}" in message and "{repo_root}" in message
    assert "{prompt_file}" not in message, "only the placeholders usable here are offered"


@pytest.mark.parametrize(
    ("template", "names"),
    [
        (["claude", "-p", "{prompt}"], {"prompt"}),
        (["a", "{prompt_file}", "{task_id}-{group_id}"], {"prompt_file", "task_id", "group_id"}),
        (["a", "{{prompt}}", "}}"], set()),
        (["a", "{{{prompt_file}}}"], {"prompt_file"}),
    ],
)
def test_placeholders_in(template: list[str], names: set[str]) -> None:
    assert placeholders_in(template) == names


def test_every_documented_placeholder_is_known() -> None:
    assert {"prompt", "prompt_file", "task_id", "group_id", "subagent", "repo_root", "title", "worktree", "skill"} == PLACEHOLDERS


# ------------------------------------------------------------------ oversized_argument


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], None),
        (["claude", "a" * 131071], None),
        (["claude", "a" * 131072], 131072),
        (["claude", "é" * 65535 + "a"], None),  # 131071 bytes
        (["claude", "é" * 65536], 131072),  # 65536 characters, 131072 bytes
        (["claude", "☕" * 43691], 131073),  # 3 bytes each
        (["ok", "a" * 200_000, "b" * 300_000], 200_000),
        (["a" * 131072], 131072),
    ],
)
def test_oversized_argument(argv: list[str], expected: int | None) -> None:
    assert oversized_argument(argv) == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MAX_ARG_STRLEN is Linux's limit")
def test_the_argument_limit_is_the_kernels() -> None:
    script = "import sys; print(len(sys.argv[1]))"
    fits = subprocess.run([sys.executable, "-c", script, "a" * ARG_MAX_ELEMENT], capture_output=True, text=True,
                          check=True, timeout=60)
    assert fits.stdout.strip() == str(ARG_MAX_ELEMENT)
    with pytest.raises(OSError):
        subprocess.run([sys.executable, "-c", script, "a" * (ARG_MAX_ELEMENT + 1)], capture_output=True,
                       check=False, timeout=60)


# ------------------------------------------------------------------ resolve_executable


@pytest.fixture
def programs(tmp_path: Path) -> dict[str, Path]:
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    path_dir = tmp_path / "on-path"
    path_dir.mkdir()
    files = {
        "repo": repo,
        "path_dir": path_dir,
        "agent": repo / "bin" / "agent",
        "plain": repo / "bin" / "plain.txt",
        "root_agent": repo / "root-agent",
        "tool": path_dir / "tool",
        "notool": path_dir / "notool",
    }
    for name in ("agent", "plain", "root_agent", "tool", "notool"):
        files[name].write_text("#!/bin/sh\nexit 0\n")
    for name in ("agent", "root_agent", "tool"):
        files[name].chmod(0o755)
    (repo / "bin" / "folder").mkdir()
    return files


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        ("bin/agent", "agent"),
        ("./bin/agent", "agent"),
        ("bin/../bin/agent", None),  # compared below after resolving
        ("bin/plain.txt", None),
        ("bin/folder", None),
        ("bin/missing", None),
        ("tool", "tool"),
        ("notool", None),
        ("root-agent", None),  # a bare name is looked up on PATH only, never in the repository
        ("missing-everywhere", None),
    ],
)
def test_resolve_executable(programs: dict[str, Path], program: str, expected: str | None) -> None:
    found = resolve_executable(program, repo_root=programs["repo"], path=str(programs["path_dir"]))
    if program == "bin/../bin/agent":
        assert found is not None and Path(found).resolve() == programs["agent"]
    elif expected is None:
        assert found is None
    else:
        assert found is not None
        assert Path(found) == programs[expected]
        assert os.path.isabs(found)


def test_resolve_executable_takes_an_absolute_path_as_is(programs: dict[str, Path]) -> None:
    absolute = str(programs["tool"])
    assert resolve_executable(absolute, repo_root=programs["repo"], path="") == absolute
    assert resolve_executable(str(programs["notool"]), repo_root=programs["repo"], path="") is None


def test_resolve_executable_looks_only_at_the_given_path(programs: dict[str, Path]) -> None:
    assert resolve_executable("tool", repo_root=programs["repo"], path=str(programs["repo"] / "bin")) is None
    assert resolve_executable("agent", repo_root=programs["repo"], path=str(programs["repo"] / "bin")) == str(
        programs["agent"]
    )


# ------------------------------------------------------------------ agent_environment


def test_agent_environment_drops_claudecode_and_layers_extra_then_maestro() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/root", "CLAUDECODE": "1", "FOO": "base", "MAESTRO_TASK_ID": "stale"}
    extra = {"FOO": "extra", "ANTHROPIC_MODEL": "opus", "MAESTRO_TASK_ID": "from-config"}
    maestro = {"MAESTRO_TASK_ID": "t-1", "MAESTRO_GROUP_ID": "infra", "MAESTRO_SKILLS": "api-design,testing"}
    env = agent_environment(base, extra, maestro)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "FOO": "extra",
        "ANTHROPIC_MODEL": "opus",
        "MAESTRO_TASK_ID": "t-1",
        "MAESTRO_GROUP_ID": "infra",
        "MAESTRO_SKILLS": "api-design,testing",
    }
    assert base["CLAUDECODE"] == "1" and base["FOO"] == "base", "the coordinator's environment is not touched"


# ------------------------------------------------------------------ front matter, subagents, skills


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("---\nname: api-design\ndescription: How we build APIs\n---\nUse REST.\n", "Use REST.\n"),
        ("---\nname: x\n---\n\n\nBody\n", "Body\n"),
        ("---\r\nname: x\r\n---\r\nBody\r\n", "Body\r\n"),
        ("---\n---\nBody", "Body"),
        ("No front matter.\n---\nname: x\n---\n", "No front matter.\n---\nname: x\n---\n"),
        ("---\nunterminated: yes\nBody\n", "---\nunterminated: yes\nBody\n"),
        ("", ""),
        ("Just text", "Just text"),
    ],
)
def test_strip_front_matter(text: str, expected: str) -> None:
    assert strip_front_matter(text) == expected


def _agent_file(folder: Path, stem: str, text: str = "You are an agent.\n") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.md").write_text(text)


@pytest.mark.parametrize(
    ("repo_files", "home_files", "expected"),
    [
        (None, None, None),
        ({}, {}, None),
        ({"notes.txt": ""}, {}, None),
        ({"backend-architect.md": ""}, None, {"backend-architect"}),
        (None, {"frontend-developer.md": ""}, {"frontend-developer"}),
        ({"backend-architect.md": ""}, {"test-automator.md": "", "backend-architect.md": ""},
         {"backend-architect", "test-automator"}),
        ({"be.md": "---\nname: backend-architect\ndescription: APIs\n---\nYou build APIs.\n"}, None,
         {"backend-architect"}),
        ({"be.md": "---\nname: 'security-auditor'\n---\n"}, None, {"security-auditor"}),
        ({"be.md": "---\ndescription: no name here\n---\n"}, None, {"be"}),
    ],
)
def test_available_subagents(
    tmp_path: Path, repo_files: dict[str, str] | None, home_files: dict[str, str] | None, expected: set[str] | None
) -> None:
    repo_folder = tmp_path / "repo" / ".claude" / "agents"
    home_folder = tmp_path / "home" / ".claude" / "agents"
    for folder, files in ((repo_folder, repo_files), (home_folder, home_files)):
        if files is not None:
            folder.mkdir(parents=True)
            for name, text in files.items():
                (folder / name).write_text(text)
    found = available_subagents([repo_folder, home_folder])
    assert found == (frozenset(expected) if expected is not None else None)


#: (task, available, expected subagent, fragments every warning must show, in order)
CHOICES: list[tuple[TaskMetadata, set[str] | None, str, list[str]]] = [
    (TaskMetadata("t", subagent_type="frontend-developer"), {"frontend-developer"}, "frontend-developer", []),
    (TaskMetadata("t", subagent_type="frontend-developer", fallback_agents=["ghost", "general-purpose"]),
     {"general-purpose", "backend-architect"}, "general-purpose", ["'frontend-developer'", "'general-purpose'"]),
    (TaskMetadata("t", title="Add API endpoint", subagent_type="ghost"), {"frontend-developer"},
     "backend-architect", ["'ghost'", "'backend-architect'"]),
    (TaskMetadata("t", title="Add API endpoint", subagent_type="ghost", fallback_agents=["a", "b"]),
     {"frontend-developer"}, "backend-architect", ["'ghost'", "a, b", "'backend-architect'"]),
    (TaskMetadata("t", title="Write pytest coverage", subagent_type="ghost"), {"test-automator"},
     "test-automator", ["'ghost'"]),
    (TaskMetadata("t", subagent_type="anything-goes"), None, "anything-goes", []),
    (TaskMetadata("t", subagent_type="x", fallback_agents=["y"]), None, "x", []),
    (TaskMetadata("t", title="Fix the react component css"), None, "frontend-developer", []),
    (TaskMetadata("t", title="Fix the react component css"), {"frontend-developer"}, "frontend-developer", []),
    (TaskMetadata("t", title="Rotate the auth secrets"), {"backend-architect"}, "security-auditor",
     ["'security-auditor'"]),
    (TaskMetadata("t", title="Nothing to detect"), None, "backend-architect", []),
]


@pytest.mark.parametrize(("task", "available", "expected", "fragments"), CHOICES)
def test_choose_subagent(task: TaskMetadata, available: set[str] | None, expected: str, fragments: list[str]) -> None:
    chosen, warnings = choose_subagent(task, frozenset(available) if available is not None else None)
    assert chosen == expected
    assert len(warnings) == len(fragments), warnings
    for warning, fragment in zip(warnings, fragments, strict=True):
        assert fragment in warning


def test_choose_subagent_with_no_type_takes_the_first_available_fallback() -> None:
    task = TaskMetadata("t", title="api server", fallback_agents=["ghost", "general-purpose"])
    chosen, _ = choose_subagent(task, frozenset({"general-purpose", "backend-architect"}))
    assert chosen == "general-purpose"


def test_choose_subagent_uses_the_configured_detection_table() -> None:
    task = TaskMetadata("t", title="Update the README", description="docs for the api")
    table = {"docs-writer": ["docs", "readme"], "backend-architect": ["api"]}
    assert choose_subagent(task, None, table) == ("docs-writer", [])


@pytest.fixture
def skill_folders(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo" / ".claude" / "skills"
    home = tmp_path / "home" / ".claude" / "skills"
    for folder, names in ((repo, ["api-design", "shared"]), (home, ["testing", "shared"])):
        for name in names:
            (folder / name).mkdir(parents=True)
            (folder / name / "SKILL.md").write_text(f"{name} from {folder.parent.parent.name}\n")
    (repo / "empty-dir").mkdir()
    (home / "empty-dir").mkdir()
    (home / "empty-dir" / "SKILL.md").write_text("home's\n")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "SKILL.md").write_text("outside\n")
    (tmp_path / "repo" / ".claude" / "x").mkdir()
    (tmp_path / "repo" / ".claude" / "x" / "SKILL.md").write_text("outside too\n")
    return repo, home


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("api-design", "repo"),
        ("testing", "home"),
        ("shared", "repo"),
        ("empty-dir", "home"),
        ("missing", None),
        ("../x", None),
        ("../../x", None),
        ("/etc", None),
        ("a/b", None),
        ("", None),
        (".hidden", None),
    ],
)
def test_find_skill_file(skill_folders: tuple[Path, Path], name: str, expected: str | None) -> None:
    repo, home = skill_folders
    found = find_skill_file(name, [repo, home])
    if expected is None:
        assert found is None
    else:
        assert found == (repo if expected == "repo" else home) / name / "SKILL.md"


# ------------------------------------------------------------------ build_prompt


def test_build_prompt_carries_everything_the_agent_needs_in_order() -> None:
    task = TaskMetadata(
        task_id="proj-auth.1",
        title="Add login endpoint",
        description="[P:Group-auth] Build POST /login.\x00 Tests in tests/test_login.py",
        relevant_files=["src/api/login.py", "tests/test_login.py"],
    )
    prompt = build_prompt(
        task=task,
        subagent="backend-architect",
        group_id="auth",
        context="Project: shop. 3 open tasks.\x00",
        skills=[("api-design", "Use REST verbs.\n"), ("testing", "Write pytest tests first.")],
    )
    assert "\x00" not in prompt
    assert "`backend-architect`" in prompt
    assert "auth" in prompt
    assert "Project: shop. 3 open tasks." in prompt
    positions = [
        prompt.index("Project: shop."),
        prompt.index("## Skill: api-design"),
        prompt.index("Use REST verbs."),
        prompt.index("## Skill: testing"),
        prompt.index("Write pytest tests first."),
        prompt.index("Add login endpoint"),
        prompt.index("Build POST /login. Tests in tests/test_login.py"),
        prompt.index("- src/api/login.py"),
    ]
    assert positions == sorted(positions)
    assert "proj-auth.1" in prompt
    assert "- tests/test_login.py" in prompt
    assert prompt.endswith("\n")


def test_build_prompt_without_context_skills_or_files() -> None:
    prompt = build_prompt(task=TaskMetadata("t-1", title="Tidy"), subagent="general-purpose", group_id="g",
                          context=None, skills=[])
    assert "(no project summary is available)" in prompt
    assert "## Skill:" not in prompt
    assert "## Relevant files" not in prompt
    assert "(no description)" in prompt


# ------------------------------------------------------------------ verdicts

SESSION = "1f3c2a9e-7b1d-4c2e-9f00-0d3e5a6b7c8d"


def claude_result(**changes: Any) -> dict[str, Any]:
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 1234,
        "duration_api_ms": 1100,
        "num_turns": 3,
        "result": "Done.",
        "session_id": SESSION,
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    result.update(changes)
    return result


def lines(*objects: Any) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objects)


def run(result_format: str, output: bytes, returncode: int | None = 0, describe: str | None = None) -> Verdict:
    scanner = ResultScanner(result_format)
    scanner.feed(output)
    scanner.finish()
    return judge(scanner, returncode, describe=describe or f"exit code {returncode}", tail=output[-65536:])


def test_claude_success_records_session_cost_turns_and_usage() -> None:
    verdict = run("claude-json", lines(claude_result()))
    assert verdict.completed is True
    assert verdict.error is None
    assert verdict.retryable is False
    assert verdict.extra == {
        "session_id": SESSION,
        "cost_usd": 0.0123,
        "num_turns": 3,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }


def test_claude_stream_json_is_judged_by_its_result_line() -> None:
    output = lines(
        {"type": "system", "subtype": "init", "session_id": SESSION, "tools": ["Bash", "Edit"]},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Working on it"}]}},
        b"some stray text {not json",
        claude_result(),
    )
    assert run("claude-json", output).completed is True


def test_claude_verbose_json_array_is_judged_by_its_result_element() -> None:
    """``--output-format json`` with verbose mode prints every message as one JSON array."""
    array = [
        {"type": "system", "subtype": "init", "session_id": SESSION},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Done."}]}},
        claude_result(num_turns=5),
    ]
    verdict = run("claude-json", json.dumps(array, separators=(",", ":")).encode() + b"\n")
    assert (verdict.completed, verdict.error) == (True, None)
    assert verdict.extra["num_turns"] == 5
    failed = run("claude-json", json.dumps([*array[:2], claude_result(subtype="error_max_turns")]).encode())
    assert failed.completed is False and "error_max_turns" in (failed.error or "")


@pytest.mark.parametrize(
    ("result", "fragments"),
    [
        (claude_result(is_error=True, result="API Error: 500 Internal server error"),
         ["reported an error", "API Error: 500 Internal server error"]),
        (claude_result(subtype="error_max_turns", is_error=False, result=None, num_turns=30), ["error_max_turns"]),
        (claude_result(subtype="error_max_turns", is_error=True, num_turns=30), ["error_max_turns"]),
        (claude_result(subtype="error_during_execution", is_error=True, result=None), ["error_during_execution"]),
        (claude_result(subtype=None, is_error=True), ["reported an error"]),
    ],
)
def test_claude_reporting_failure_with_exit_0_fails(result: dict[str, Any], fragments: list[str]) -> None:
    verdict = run("claude-json", lines(result))
    assert verdict.completed is False
    assert verdict.error is not None
    assert "success" not in verdict.error, "a failure is never reported as 'success'"
    for fragment in fragments:
        assert fragment in verdict.error
    assert verdict.extra["session_id"] == SESSION, "what the agent reported is kept even on failure"


@pytest.mark.parametrize(
    "output",
    [b"", b"Done!\n", lines({"type": "assistant", "message": {}}), b'{"type": "result", "subtype": "succ'],
    ids=["nothing", "text", "no-result", "torn-result"],
)
def test_claude_without_a_result_object_fails_even_with_exit_0(output: bytes) -> None:
    verdict = run("claude-json", output)
    assert verdict.completed is False
    assert verdict.error == "agent printed no result object (claude-json)"


@pytest.mark.parametrize(
    ("results", "completed"),
    [
        ([claude_result(subtype="error_during_execution", is_error=True), claude_result()], True),
        ([claude_result(), claude_result(subtype="error_max_turns", is_error=True)], False),
        ([claude_result(session_id="first"), claude_result(session_id="last")], True),
    ],
)
def test_the_last_claude_result_decides(results: list[dict[str, Any]], completed: bool) -> None:
    verdict = run("claude-json", lines(*results))
    assert verdict.completed is completed
    assert verdict.extra["session_id"] == results[-1]["session_id"]


@pytest.mark.parametrize(
    ("output", "returncode", "describe", "expected"),
    [
        (lines(claude_result()), 1, "exit code 1", "exit code 1: " + json.dumps(claude_result())),
        (lines(claude_result(subtype="error_during_execution", is_error=True, result=None)), 2, "exit code 2",
         "exit code 2: agent reported error_during_execution"),
        (b"Error: Invalid API key\n", 1, "exit code 1", "exit code 1: Error: Invalid API key"),
        (b"", 137, "killed by SIGKILL", "killed by SIGKILL"),
        (b"", None, "did not start", "did not start"),
    ],
)
def test_claude_with_a_non_zero_exit_fails(output: bytes, returncode: int | None, describe: str, expected: str) -> None:
    verdict = run("claude-json", output, returncode, describe)
    assert verdict.completed is False
    assert verdict.error == expected


THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"
CODEX_OK = lines(
    {"type": "thread.started", "thread_id": THREAD},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "Looking at the repo"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution", "command": "pytest -q",
                                        "aggregated_output": "3 passed", "exit_code": 0, "status": "completed"}},
    {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "Café ☕ done."}},
    {"type": "turn.completed", "usage": {"input_tokens": 1, "cached_input_tokens": 0, "output_tokens": 2}},
    {"type": "turn.started"},
    {"type": "turn.completed", "usage": {"input_tokens": 30, "cached_input_tokens": 8, "output_tokens": 4}},
)


def test_codex_success_records_the_thread_and_summed_usage() -> None:
    verdict = run("codex-jsonl", CODEX_OK)
    assert (verdict.completed, verdict.error) == (True, None)
    assert verdict.extra == {
        "session_id": THREAD,
        "usage": {"input_tokens": 31, "cached_input_tokens": 8, "output_tokens": 6},
    }


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ({"type": "turn.failed", "error": {"message": "model overloaded, try later"}},
         "turn.failed: model overloaded, try later"),
        ({"type": "error", "message": "stream disconnected before completion"},
         "error: stream disconnected before completion"),
        ({"type": "error"}, "error: no message"),
    ],
)
def test_codex_failure_events_fail_the_task_with_exit_0(event: dict[str, Any], fragment: str) -> None:
    output = lines({"type": "thread.started", "thread_id": THREAD}, {"type": "turn.started"}, event)
    verdict = run("codex-jsonl", output)
    assert verdict.completed is False
    assert verdict.error == f"agent reported {fragment}"
    assert verdict.extra["session_id"] == THREAD


def test_codex_with_a_non_zero_exit_fails() -> None:
    output = lines({"type": "thread.started", "thread_id": THREAD}, {"type": "turn.failed", "error": {"message": "x"}})
    assert run("codex-jsonl", output, 1).error == "exit code 1: agent reported turn.failed: x"
    assert run("codex-jsonl", CODEX_OK, 3).error == "exit code 3: " + json.dumps(
        {"type": "turn.completed", "usage": {"input_tokens": 30, "cached_input_tokens": 8, "output_tokens": 4}}
    )


@pytest.mark.parametrize(
    ("output", "returncode", "completed", "error"),
    [
        (b"working\nall good\n", 0, True, None),
        (lines(claude_result(is_error=True), {"type": "turn.failed"}), 0, True, None),
        (b"starting\nTraceback (most recent call last):\nValueError: boom\n\n  \n", 3, False, "exit code 3: ValueError: boom"),
        (b"no newline at the end", 1, False, "exit code 1: no newline at the end"),
        (b"", 7, False, "exit code 7"),
        (b"x" * 2000 + b"\n", 1, False, "exit code 1: " + "x" * 500),
    ],
)
def test_exit_code_format(output: bytes, returncode: int, completed: bool, error: str | None) -> None:
    verdict = run("exit-code", output, returncode)
    assert (verdict.completed, verdict.error, verdict.extra) == (completed, error, {})


FEEDS = {
    "claude": ("claude-json", lines({"type": "system", "subtype": "init"}, claude_result(result="Fertig ✓ — 完成"))),
    "claude-failed": ("claude-json", lines(claude_result(subtype="error_max_turns", is_error=True))),
    "codex": ("codex-jsonl", CODEX_OK),
    "codex-failed": ("codex-jsonl", CODEX_OK + lines({"type": "error", "message": "Reconnecting… 5/5"})),
    "exit-code": ("exit-code", "première ligne\ndernière ligne ☕".encode()),
}


@pytest.mark.parametrize("name", FEEDS)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10**6])
def test_feeding_in_chunks_gives_the_same_verdict(name: str, size: int) -> None:
    result_format, output = FEEDS[name]
    whole = run(result_format, output, 0)
    scanner = ResultScanner(result_format)
    for start in range(0, len(output), size):
        scanner.feed(output[start : start + size])
    scanner.finish()
    chunked = judge(scanner, 0, describe="exit code 0", tail=output)
    assert chunked == whole
    assert scanner.last_line == whole_last_line(result_format, output)


def whole_last_line(result_format: str, output: bytes) -> str:
    scanner = ResultScanner(result_format)
    scanner.feed(output)
    scanner.finish()
    return scanner.last_line


def test_the_scanner_keeps_the_last_non_blank_line() -> None:
    scanner = ResultScanner("exit-code")
    scanner.feed(b"first\nsecond\n")
    assert scanner.last_line == "second"
    scanner.feed(b"   \n\nthi")
    assert scanner.last_line == "second", "a partial line is not a line yet"
    scanner.feed(b"rd")
    scanner.finish()
    assert scanner.last_line == "third"


@pytest.mark.parametrize(
    ("text", "limited"),
    [
        (b"HTTP 429 Too Many Requests", True),
        (b"Error: 429", True),
        (b"API Error: rate limit exceeded", True),
        (b"Rate-limited by the API, retry after 30s", True),
        (b'{"type":"error","error":{"type":"rate_limit_error"}}', True),
        (b"openai.RateLimitError: quota", True),
        (b"Claude is temporarily limiting requests", True),
        (b"API Error: 529 {\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}", True),
        (b"too many requests", True),
        (b"generate", False),
        (b"could not generate limits for the report", False),
        (b"an accurate limit of 10", False),
        (b"wrote 4290 lines", False),
        (b"exit code 1: AssertionError", False),
        (b"", False),
    ],
)
def test_is_rate_limited(text: bytes, limited: bool) -> None:
    assert is_rate_limited(text) is limited


@pytest.mark.parametrize(
    ("output", "returncode", "retryable"),
    [
        (b"API Error: 429 Too Many Requests\n", 1, True),
        (lines(claude_result(is_error=True, result="API Error: 529 Overloaded")), 0, True),
        (b"Traceback\nValueError: generate\n", 1, False),
        (lines(claude_result(result="I hit a rate limit earlier but finished.")), 0, False),
    ],
)
def test_verdict_is_retryable_only_on_a_rate_limited_failure(output: bytes, returncode: int, retryable: bool) -> None:
    verdict = run("claude-json", output, returncode)
    assert verdict.retryable is retryable
    if retryable:
        assert verdict.completed is False
