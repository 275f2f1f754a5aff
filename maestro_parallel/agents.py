"""How a task becomes an agent run, and how the run is judged.

Pure decisions live here: which subagent a task gets, what its prompt says,
the argv built from a template, the environment, and the verdict on what the
agent printed.  The coordinator only does the I/O around them.  Agents are
judged by what they report, not only by their exit code: headless agent CLIs
exit 0 after doing nothing or after reporting an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .governor import Outcome, classify, is_rate_limited_text
from .markers import detect_subagent, is_safe_task_id
from .models import TaskMetadata

__all__ = (
    "ARG_MAX_ELEMENT",
    "PLACEHOLDERS",
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

#: Linux limits one argv element to 128 KiB including its terminating NUL.
ARG_MAX_ELEMENT = 128 * 1024 - 1

PLACEHOLDERS = frozenset(
    {"prompt", "prompt_file", "task_id", "group_id", "subagent", "repo_root", "title", "skill"}
)
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
                raise ConfigError(f"{key}: stray {token!r} in {element!r:.80} (write {token * 2} for a literal brace)", key=key)
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


def agent_environment(
    base: Mapping[str, str], extra: Mapping[str, str], maestro: Mapping[str, str]
) -> dict[str, str]:
    """The coordinator's environment minus ``CLAUDECODE``, plus ``extra``, plus ``MAESTRO_*``.

    Claude Code refuses to start inside another Claude Code session, and the
    coordinator is often run from one.
    """
    env = {k: v for k, v in base.items() if k != "CLAUDECODE"}
    env.update(extra)
    env.update(maestro)
    return env


# --------------------------------------------------------------------------- subagents and skills


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
                fields, _ = _split_front_matter(entry.read_text("utf-8", "replace")[:8192])
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

def is_rate_limited(output: bytes) -> bool:
    """True when an agent's output says it was rate limited or the service was overloaded."""
    return is_rate_limited_text(output)


@dataclass
class ResultScanner:
    """Reads an agent's output line by line and keeps what the verdict needs.

    Bounded memory whatever the output's size: the last Claude result object,
    the Codex failure that stands, the thread id, completed turns and token
    usage, and the last line.  A Codex ``turn.failed`` always stands; an
    ``error`` event stands unless a ``turn.completed`` follows it, because
    ``codex exec --json`` also prints retried stream errors ("Reconnecting...
    2/5") as ``error`` events before the turn completes.
    """

    result_format: str
    claude_result: dict[str, Any] | None = None
    codex_failure: str | None = None
    codex_thread: str | None = None
    codex_usage: dict[str, int] = field(default_factory=dict)
    codex_turns_completed: int = 0
    last_line: str = ""
    _partial: bytes = b""
    _codex_turn_failed: bool = False

    _MAX_LINE = 8 * 1024 * 1024

    def feed(self, data: bytes) -> None:
        """Take the next chunk of output."""
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()[-self._MAX_LINE :]
        for line in lines:
            self._line(line)

    def finish(self) -> None:
        """No more output: take a last line that had no newline."""
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        self.last_line = text[:500]
        if self.result_format == "exit-code" or not text.startswith(("{", "[")):
            return
        try:
            obj = json.loads(text)
        except ValueError:
            return
        if isinstance(obj, list) and self.result_format == "claude-json":
            # ``--output-format json`` in verbose mode prints every message as one array.
            results = [o for o in obj if isinstance(o, dict) and o.get("type") == "result"]
            obj = results[-1] if results else None
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if self.result_format == "claude-json" and kind == "result":
            self.claude_result = obj
        elif self.result_format == "codex-jsonl":
            if kind in ("turn.failed", "error") and not self._codex_turn_failed:
                error = obj.get("error")
                message = obj.get("message")
                if isinstance(error, dict):
                    message = error.get("message", message)
                self.codex_failure = f"{kind}: {message or 'no message'}"
                self._codex_turn_failed = kind == "turn.failed"
            elif kind == "thread.started" and isinstance(obj.get("thread_id"), str):
                self.codex_thread = obj["thread_id"]
            elif kind == "turn.completed":
                self.codex_turns_completed += 1
                if not self._codex_turn_failed:
                    self.codex_failure = None  # the errors before it were retried and recovered
                if isinstance(obj.get("usage"), dict):
                    for name, value in obj["usage"].items():
                        if isinstance(value, int) and not isinstance(value, bool):
                            self.codex_usage[name] = self.codex_usage.get(name, 0) + value


@dataclass
class Verdict:
    """The judgement on one agent run."""

    completed: bool
    error: str | None
    extra: dict[str, Any]
    retryable: bool = False


def _claude_extra(result: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if isinstance(result.get("session_id"), str):
        extra["session_id"] = result["session_id"]
    cost = result.get("total_cost_usd", result.get("cost_usd"))
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        extra["cost_usd"] = cost
    if isinstance(result.get("num_turns"), int):
        extra["num_turns"] = result["num_turns"]
    if isinstance(result.get("usage"), dict):
        extra["usage"] = result["usage"]
    denials = result.get("permission_denials")
    if isinstance(denials, list) and denials:
        # What the permission mode refused: why a "successful" run may have left work undone.
        extra["permission_denials"] = [
            d.get("tool_name") if isinstance(d, dict) and isinstance(d.get("tool_name"), str) else "?"
            for d in denials
        ]
    return extra


def _reported_text(result: Mapping[str, Any]) -> str:
    """The words of a Claude result object that explain a failure: its ``result`` and ``errors``."""
    parts = [result["result"]] if isinstance(result.get("result"), str) else []
    errors = result.get("errors")
    if isinstance(errors, list):
        parts += [e if isinstance(e, str) else json.dumps(e) for e in errors]
    return "\n".join(parts)


def judge(scanner: ResultScanner, returncode: int | None, *, describe: str, tail: bytes = b"") -> Verdict:
    """Decide whether a run succeeded, from its exit and what it printed.

    ``describe`` says how the process ended (``exit code 3``); ``tail`` is the end
    of its output.  Whether a failure was a rate limit is read from the agent's
    own report of it when there is one (Claude's failed result object, Codex's
    failure event), else from ``tail``: an agent's log also holds its messages,
    and a task about rate limiting talks about rate limits.
    """
    extra: dict[str, Any] = {}
    failure: str | None = None
    evidence: bytes | None = None
    if scanner.result_format == "claude-json":
        result = scanner.claude_result
        if result is not None:
            extra = _claude_extra(result)
            subtype = result.get("subtype")
            if result.get("is_error") is True or subtype != "success":
                # ``result`` is null on some failures (error_max_budget_usd): then its ``errors`` explain it.
                detail = result.get("result") if isinstance(result.get("result"), str) else ""
                errors = result.get("errors")
                if not detail and isinstance(errors, list):
                    detail = "; ".join(e if isinstance(e, str) else json.dumps(e) for e in errors)
                # Claude reports API errors as subtype "success" with is_error true: never say "success".
                what = subtype if isinstance(subtype, str) and subtype and subtype != "success" else "an error"
                failure = f"agent reported {what}" + (f": {detail[:300]}" if detail else "")
                evidence = _reported_text(result).encode("utf-8", "replace")
        elif returncode == 0:
            failure = "agent printed no result object (claude-json)"
    elif scanner.result_format == "codex-jsonl":
        if scanner.codex_thread:
            extra["session_id"] = scanner.codex_thread
        if scanner.codex_usage:
            extra["usage"] = dict(scanner.codex_usage)
        if scanner.codex_failure:
            failure = f"agent reported {scanner.codex_failure[:300]}"
            evidence = scanner.codex_failure.encode("utf-8", "replace")
        elif returncode == 0 and not scanner.codex_turns_completed:
            failure = "agent printed no turn.completed event (codex-jsonl)"
    if returncode != 0:
        last = f": {scanner.last_line}" if scanner.last_line else ""
        failure = f"{describe}{last}" if failure is None else f"{describe}: {failure}"
    if failure is None:
        return Verdict(True, None, extra)
    if evidence is None:
        outcome = classify(completed=False, text=tail)
    elif scanner.result_format == "claude-json":
        outcome = classify(completed=False, claude_result=scanner.claude_result)  # api_error_status first
    else:
        outcome = classify(completed=False, codex_failure=scanner.codex_failure)
    return Verdict(False, failure, extra, retryable=outcome is Outcome.RATE_LIMITED)
