"""Argv templates, placeholders, executables and the environment an agent is given.

Pure decisions: a template element is rendered with ``{name}`` placeholders
(``{{``/``}}`` escape a brace), checked against Linux's per-element limit
before any process starts.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError

#: Linux limits one argv element to 128 KiB including its terminating NUL.
ARG_MAX_ELEMENT = 128 * 1024 - 1

#: The placeholders an agent's argv template may use.
AGENT_PLACEHOLDERS = frozenset(
    {"prompt", "prompt_file", "task_id", "group_id", "subagent", "repo_root", "title", "worktree"}
)
#: The placeholders the ``[skills].command`` template may use.
SKILL_PLACEHOLDERS = frozenset({"skill", "task_id", "repo_root"})
PLACEHOLDERS = AGENT_PLACEHOLDERS | SKILL_PLACEHOLDERS
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


# --------------------------------------------------------------------------- argv


def placeholders_in(template: Sequence[str]) -> set[str]:
    """The placeholder names a template uses."""
    return {m.group(1) for element in template for m in _TOKEN.finditer(element) if m.group(1)}


def render_argv(template: Sequence[str], values: Mapping[str, str], *, key: str = "[agent].command") -> list[str]:
    """Fill ``{name}`` placeholders in each element; ``{{``/``}}`` are literal braces.

    A substituted value is never expanded again, and nothing is ever given to a
    shell.  An unknown placeholder or a stray brace is a :class:`ConfigError`
    naming ``key``.
    """

    def render(element: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            name = match.group(1)
            if name is None:
                raise ConfigError(
                    f"{key}: stray {token!r} in {element!r:.80} (write {token * 2} for a literal brace)", key=key
                )
            if name not in values:
                known = ", ".join("{" + p + "}" for p in sorted(values))  # the ones usable in this template
                raise ConfigError(f"{key}: unknown placeholder {{{name}}} (known: {known})", key=key)
            return values[name]

        return _TOKEN.sub(substitute, element)

    return [render(element) for element in template]


def oversized_argument(argv: Sequence[str]) -> int | None:
    """The size in bytes of the first argv element too large for the kernel, or None."""
    for element in argv:
        size = len(element.encode("utf-8", "surrogateescape"))
        if size > ARG_MAX_ELEMENT:
            return size
    return None


def resolve_executable(program: str, *, repo_root: Path, path: str | None) -> str | None:
    """The absolute path of ``program``, or None when it cannot be run.

    A name with a ``/`` that is not absolute is relative to the repository root;
    a bare name is looked up on ``path`` (the agent's own PATH).
    """
    if "/" in program:
        candidate = Path(program) if os.path.isabs(program) else repo_root / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        return None
    return shutil.which(program, path=path)


def agent_environment(base: Mapping[str, str], extra: Mapping[str, str], maestro: Mapping[str, str]) -> dict[str, str]:
    """The coordinator's environment minus ``CLAUDECODE``, plus ``extra``, plus ``MAESTRO_*``.

    Claude Code refuses to start inside another Claude Code session, and the
    coordinator is often run from one.
    """
    env = {k: v for k, v in base.items() if k != "CLAUDECODE"}
    env.update(extra)
    env.update(maestro)
    return env
