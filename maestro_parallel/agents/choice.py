"""Which subagent a task gets and which skill files it may read.

Subagents and skills are Markdown files with an optional YAML front matter;
only the names and the body matter here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .._files import read_regular
from ..markers import detect_subagent, is_safe_task_id
from ..models import TaskMetadata


def strip_front_matter(text: str) -> str:
    """``text`` without a leading ``---`` YAML front matter block."""
    return _split_front_matter(text)[1]


def _split_front_matter(text: str) -> tuple[dict[str, str], str]:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            fields: dict[str, str] = {}
            for line in lines[1:index]:
                name, sep, value = line.partition(":")
                if sep and name.strip() and not name.startswith((" ", "\t")):
                    fields[name.strip()] = value.strip().strip("'\"")
            return fields, "".join(lines[index + 1 :]).lstrip("\n")
    return {}, text


def available_subagents(folders: Iterable[Path]) -> frozenset[str] | None:
    """Names of the subagents defined as ``<folder>/<name>.md``; None when no folder has any.

    A file's front matter ``name``, when present, is its name.  None means that
    every name counts as available (nothing is defined, so nothing is excluded).
    """
    names: set[str] = set()
    for folder in folders:
        try:
            entries = sorted(folder.glob("*.md"))
        except OSError:
            continue
        for entry in entries:
            name = entry.stem
            try:
                fields, _ = _split_front_matter(read_regular(entry, 8192, head=True).decode("utf-8", "replace"))
                name = fields.get("name") or name
            except OSError:
                pass
            names.add(name)
    return frozenset(names) if names else None


def choose_subagent(
    task: TaskMetadata,
    available: frozenset[str] | None,
    table: Mapping[str, Sequence[str]] | None = None,
) -> tuple[str, list[str]]:
    """The subagent for ``task`` and the warnings the choice produced.

    The task's ``subagent_type`` if available, else the first available of its
    ``fallback_agents``, else :func:`detect_subagent`'s choice, which is kept
    even when unavailable (with a warning).
    """
    warnings: list[str] = []

    def ok(name: str) -> bool:
        return available is None or name in available

    if task.subagent_type:
        if ok(task.subagent_type):
            return task.subagent_type, warnings
        warnings.append(f"subagent {task.subagent_type!r} is not defined in .claude/agents")
    for name in task.fallback_agents:
        if ok(name):
            if task.subagent_type:
                warnings.append(f"using fallback subagent {name!r}")
            return name, warnings
    if task.fallback_agents:
        warnings.append("no fallback subagent is defined: " + ", ".join(task.fallback_agents))
    detected = detect_subagent(f"{task.title}\n{task.description}", table)
    if not ok(detected):
        warnings.append(f"detected subagent {detected!r} is not defined in .claude/agents; using it anyway")
    return detected, warnings


def find_skill_file(name: str, folders: Iterable[Path]) -> Path | None:
    """``<folder>/<name>/SKILL.md`` in the first folder that has it; unsafe names have none."""
    if not is_safe_task_id(name):
        return None
    for folder in folders:
        candidate = folder / name / "SKILL.md"
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- prompt
