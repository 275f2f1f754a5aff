"""Subagents applied, not suggested: when the claude preset passes ``--agent <name>``.

Claude Code's ``--agent <name>`` runs the session as that agent (its system prompt and tools reach
the model's request); a prompt line "Use the X subagent" does not.  The real CLI finds an agent only
in a file whose front matter is closed by ``---`` and has both ``name`` and ``description``; the
name is the front matter's, not the file's.  So maestro passes ``--agent`` only for such a file,
and for a file that is there but that the CLI would not load (broken front matter) it keeps the
prompt line and warns, naming the file and what is wrong — rather than passing a flag that fails
the task with "not found".

:func:`agent_file_from_text` and :func:`agent_flag` are pure; :func:`scan_agent_files` reads the
folders (``.claude/agents`` of the repository, then of home; the first definition of a name wins).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .._files import read_regular

__all__ = ("AgentFile", "agent_file_from_text", "agent_flag", "scan_agent_files")

_MAX_READ = 64 * 1024


@dataclass(frozen=True)
class AgentFile:
    """One ``.claude/agents/*.md`` file: the name Claude Code knows it by, or why it would not load."""

    name: str
    path: Path
    problem: str | None = None  # None: Claude Code loads it


def agent_file_from_text(path: Path, text: str) -> AgentFile:
    """Judge one agent file as Claude Code would: a closed front matter with ``name`` and ``description``."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return AgentFile(path.stem, path, "no front matter (it needs name and description between --- lines)")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return AgentFile(path.stem, path, "its front matter is never closed by ---")
    fields: dict[str, str] = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "\t")):
            fields[key.strip()] = value.strip().strip("'\"")
    name = fields.get("name", "")
    missing = [key for key in ("name", "description") if not fields.get(key)]
    if missing:
        return AgentFile(name or path.stem, path, "its front matter has no " + " and no ".join(missing))
    return AgentFile(name, path)


def scan_agent_files(folders: Iterable[Path]) -> dict[str, AgentFile]:
    """The agent files of ``folders`` by name; a loadable definition beats a broken one of the same name."""
    found: dict[str, AgentFile] = {}
    for folder in folders:
        try:
            entries = sorted(folder.glob("*.md"))
        except OSError:
            continue
        for entry in entries:
            try:  # only a regular file: an agent may have planted a FIFO or /dev/zero here
                text = read_regular(entry, _MAX_READ, head=True).decode("utf-8", "replace")
            except OSError:
                continue
            agent = agent_file_from_text(entry, text)
            known = found.get(agent.name)
            if known is None or (known.problem is not None and agent.problem is None):
                found[agent.name] = agent
    return found


def agent_flag(preset: str, subagent: str, files: Mapping[str, AgentFile]) -> tuple[list[str], str | None]:
    """The argv to add for ``subagent`` (``["--agent", name]`` or none) and a warning, if any.

    Only the claude preset has ``--agent``.  A subagent without a file keeps the prompt line
    silently (choosing it already warned); one whose file would not load warns.
    """
    if preset != "claude":
        return [], None
    agent = files.get(subagent)
    if agent is None:
        return [], None
    if agent.problem is not None:
        return [], (f"subagent {subagent!r}: {agent.path} is not loadable by claude ({agent.problem}); "
                    "named in the prompt instead of --agent")
    return ["--agent", subagent], None
