"""How a finished agent run is judged: by what it reports, not only its exit code.

Headless agent CLIs exit 0 after doing nothing or after reporting an error, so
the last Claude ``result`` object (claude-json) or Codex event (codex-jsonl)
the run printed decides, with rate limits recognised for a retry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ratelimit import Outcome, classify, is_rate_limited_text


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
                detail = result.get("result") if isinstance(result.get("result"), str) else ""
                # ``result`` is null on some failures (error_max_budget_usd): then its ``errors`` explain it.
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
