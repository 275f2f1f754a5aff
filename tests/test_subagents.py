"""When the claude preset applies a subagent with ``--agent``: the agent file as Claude Code reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro_parallel.agents.subagents import AgentFile, agent_file_from_text, agent_flag, scan_agent_files

P = Path("/r/.claude/agents/x.md")


@pytest.mark.parametrize(("text", "name", "problem"), [
    ("---\nname: api-dev\ndescription: APIs\n---\nYou build APIs.\n", "api-dev", None),
    ("---\nname: 'quoted'\ndescription: \"d\"\ntools: Read, Grep\n---\n", "quoted", None),
    ("---\nname: lax\ndescription: [oops\n---\n", "lax", None),  # the real CLI loads it too
    ("You build APIs.\n", "x", "no front matter (it needs name and description between --- lines)"),
    ("", "x", "no front matter (it needs name and description between --- lines)"),
    ("---\nname: open\ndescription: d\nYou build APIs.\n", "x", "its front matter is never closed by ---"),
    ("---\nname: nameonly\n---\n", "nameonly", "its front matter has no description"),
    ("---\ndescription: d\n---\n", "x", "its front matter has no name"),
    ("---\n---\n", "x", "its front matter has no name and no description"),
])
def test_an_agent_file_is_loadable_as_claude_code_loads_it(text: str, name: str, problem: str | None) -> None:
    assert agent_file_from_text(P, text) == AgentFile(name, P, problem)


def test_the_flag_only_for_the_claude_preset_and_a_loadable_file() -> None:
    files = {"ok": AgentFile("ok", P), "bad": AgentFile("bad", P, "its front matter is never closed by ---")}
    assert agent_flag("claude", "ok", files) == (["--agent", "ok"], None)
    assert agent_flag("codex", "ok", files) == ([], None)
    assert agent_flag("custom", "ok", files) == ([], None)
    assert agent_flag("claude", "ghost", files) == ([], None)
    args, warning = agent_flag("claude", "bad", files)
    assert args == [] and warning == (
        f"subagent 'bad': {P} is not loadable by claude (its front matter is never closed by ---); "
        "named in the prompt instead of --agent")


def test_scanning_prefers_the_repository_and_a_loadable_definition(tmp_path: Path) -> None:
    repo, home = tmp_path / "repo", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    (repo / "a.md").write_text("---\nname: a\ndescription: repo\n---\n")
    (home / "a.md").write_text("---\nname: a\ndescription: home\n---\n")
    (repo / "b.md").write_text("---\nname: b\n")
    (home / "b.md").write_text("---\nname: b\ndescription: home\n---\n")
    (repo / "file-name.md").write_text("---\nname: front-matter-name\ndescription: d\n---\n")
    found = scan_agent_files([repo, home, tmp_path / "missing"])
    assert found["a"] == AgentFile("a", repo / "a.md")
    assert found["b"] == AgentFile("b", home / "b.md")
    assert found["front-matter-name"].path == repo / "file-name.md" and "file-name" not in found
