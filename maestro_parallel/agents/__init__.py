"""How a task becomes an agent run, and how the run is judged.

Pure decisions live here, one module each: :mod:`.choice` (which subagent a
task gets, which skills it may read), :mod:`.prompt` (what it is told),
:mod:`.argv` (the argv built from a template, the environment) and
:mod:`.verdicts` (the verdict on what the agent printed).  The runtime only
does the I/O around them.  Agents are judged by what they report, not only by
their exit code: headless agent CLIs exit 0 after doing nothing or after
reporting an error.
"""

from __future__ import annotations

from .argv import (
    AGENT_PLACEHOLDERS,
    ARG_MAX_ELEMENT,
    PLACEHOLDERS,
    SKILL_PLACEHOLDERS,
    agent_environment,
    oversized_argument,
    placeholders_in,
    render_argv,
    resolve_executable,
)
from .choice import available_subagents, choose_subagent, find_skill_file, strip_front_matter
from .prompt import build_prompt
from .verdicts import ResultScanner, Verdict, is_rate_limited, judge

__all__ = (
    "AGENT_PLACEHOLDERS",
    "ARG_MAX_ELEMENT",
    "PLACEHOLDERS",
    "SKILL_PLACEHOLDERS",
    "ResultScanner",
    "Verdict",
    "agent_environment",
    "available_subagents",
    "build_prompt",
    "choose_subagent",
    "find_skill_file",
    "is_rate_limited",
    "judge",
    "oversized_argument",
    "placeholders_in",
    "render_argv",
    "resolve_executable",
    "strip_front_matter",
)
