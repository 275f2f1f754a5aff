"""The prompt an agent is given: project state, skills, then the task itself."""

from __future__ import annotations

from collections.abc import Sequence

from ..models import TaskMetadata


def build_prompt(
    *,
    task: TaskMetadata,
    subagent: str,
    group_id: str,
    context: str | None,
    skills: Sequence[tuple[str, str]],
    applied: bool = False,
) -> str:
    """The prompt an agent is given.  NUL bytes are removed (argv cannot carry them).

    ``applied``: the session already runs as the subagent (claude ``--agent``), so the prompt does
    not ask for it.
    """
    parts = [
        f"You are the `{subagent}` subagent." if applied else f"Use the `{subagent}` subagent for this task.",
        f"You are one of several agents working on this repository at the same time "
        f"(parallel group {group_id}). Change only what this task needs.",
        "## Current project state",
        context.strip() if context and context.strip() else "(no project summary is available)",
    ]
    for name, guidance in skills:
        parts += [f"## Skill: {name}", guidance.strip()]
    parts += [f"## Task {task.task_id}: {task.title}".rstrip(), task.description.strip() or "(no description)"]
    if task.relevant_files:
        parts += ["## Relevant files", "\n".join(f"- {path}" for path in task.relevant_files)]
    return "\n\n".join(parts).replace("\x00", "") + "\n"


# --------------------------------------------------------------------------- verdicts
