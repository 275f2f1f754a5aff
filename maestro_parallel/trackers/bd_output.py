"""Reading what ``bd`` prints: JSON payloads, envelopes, and the per-issue failures on stderr.

Pure functions over text, tested with bd's real output (``bd`` answers in
several shapes across versions: a list, ``{"data": ...}``, an error object,
warnings and hints on stderr).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .._text import one_line

__all__ = (
    "MESSAGE_LIMIT",
    "BdOutputError",
    "by_id",
    "decode_payload",
    "error_of",
    "failures_in_stderr",
    "holder_in",
    "only_missing_ids",
    "stderr_line",
    "unwrap_issues",
)

MESSAGE_LIMIT = 400
_WARNING_LINE = re.compile(r"^\s*warning\s*:", re.IGNORECASE)
_HOLDER_PATTERNS = (
    re.compile(r"already claimed by\s+\"?([^\s\"]+?)\"?(?=[\s,;)]|$)"),
    re.compile(r"already assigned to\s+\"([^\"]+)\""),
    re.compile(r"(?:claimed|held|assigned) by\s+\"?([^\s\"]+?)\"?(?=[\s,;)]|$)"),
)
_MISSING_LINE = re.compile(r"^issue \S+ not found$|^no issues found\b", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:"
# --------------------------------------------------------------------------- reading bd's output



def error_of(obj: object) -> str | None:
    """The message of a ``{"error": ...}`` object, also inside a ``{"data": ...}`` envelope."""
    if isinstance(obj, Mapping) and isinstance(obj.get("data"), Mapping) and "error" not in obj:
        obj = obj["data"]
    error = obj.get("error") if isinstance(obj, Mapping) else None
    return error if isinstance(error, str) else None


def stderr_line(stderr: str) -> str:
    """bd's stderr folded into one line; a JSON ``{"error": ...}`` line is unwrapped to its message.

    ``Hint:`` lines (advice for people) are left out.
    """
    parts: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or line.lower().startswith("hint:"):
            continue
        if line.startswith("{"):
            try:
                message = error_of(json.loads(line))
            except ValueError:
                message = None
            if message is not None:
                line = message
        if line not in parts:
            parts.append(line)
    return one_line(" ".join(parts), MESSAGE_LIMIT)


class BdOutputError(ValueError):
    """Raised by the parsers when bd's stdout is not the JSON expected (the caller adds stderr)."""


def decode_payload(stdout: str) -> Any:
    """The JSON document on bd's stdout once ``warning:`` lines are dropped.

    Returns None when nothing is left; raises :class:`BdOutputError` when what is
    left is not JSON.
    """
    text = "\n".join(line for line in stdout.splitlines() if not _WARNING_LINE.match(line)).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BdOutputError(f"printed something that is not JSON: {one_line(repr(text[:80]), 100)}") from exc


def unwrap_issues(payload: Any) -> list[dict[str, Any]]:
    """The issue objects inside a plain array, an envelope or a lone issue.

    Raises :class:`BdOutputError` for ``{"error": ...}`` and any other shape.
    """
    for _ in range(3):  # an envelope inside an envelope at most; never loop on hostile input
        if isinstance(payload, Mapping) and "id" not in payload:
            if "data" in payload:
                payload = payload["data"]
                continue
            if "items" in payload:
                payload = payload["items"]
                continue
        break
    if isinstance(payload, Mapping):
        error = error_of(payload)
        if error is not None and "id" not in payload:
            raise BdOutputError(f"answered with an error: {one_line(error, MESSAGE_LIMIT)}")
        if isinstance(payload.get("id"), str):
            return [dict(payload)]
        raise BdOutputError(f"answered with an object that is not an issue (keys {sorted(map(str, payload))[:8]})")
    if not isinstance(payload, list):
        raise BdOutputError(f"answered with {type(payload).__name__} JSON, not a list of issues")
    issues: list[dict[str, Any]] = []
    for item in payload:
        if not isinstance(item, Mapping):
            raise BdOutputError(f"answered with a list holding {type(item).__name__}, not issue objects")
        issues.append(dict(item))
    return issues


def by_id(issues: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {item["id"]: item for item in issues if isinstance(item.get("id"), str)}


def _mentions(line: str, task_id: str) -> bool:
    # Ids may hold '.' and ':', so those end an id only when white space or the line's end follows.
    pattern = r"(?<![\w.:-])" + re.escape(task_id) + r"(?=$|[\s,;)\]\"']|[.:](?:\s|$))"
    return re.search(pattern, line) is not None


def failures_in_stderr(stderr: str, task_ids: Sequence[str]) -> dict[str, str]:
    """Why bd refused each id of a multi-id write, read from its stderr.

    Recent bd ends with one JSON line ``{"error": ..., "failed": [{"id", "error"}]}``;
    every version prints a line per refused id naming it.  Both are read; the
    JSON wins.
    """
    failures: dict[str, str] = {}
    wanted = set(task_ids)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, Mapping) and isinstance(obj.get("data"), Mapping):
            obj = obj["data"]
        failed = obj.get("failed") if isinstance(obj, Mapping) else None
        for item in failed if isinstance(failed, list) else []:
            if isinstance(item, Mapping) and item.get("id") in wanted and isinstance(item.get("error"), str):
                failures[item["id"]] = one_line(item["error"], MESSAGE_LIMIT)
    for task_id in sorted(wanted - failures.keys(), key=len, reverse=True):
        for line in lines:
            if line.startswith("{") or line.lower().startswith("hint:"):
                continue
            if _mentions(line, task_id):
                failures[task_id] = one_line(line, MESSAGE_LIMIT)
                break
    return failures


def only_missing_ids(stderr: str) -> bool:
    """True when bd's stderr says nothing but that ids were not found (``bd show`` of deleted beads)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.lower().startswith("hint:")]
    for line in lines:
        if line.startswith("{"):
            try:
                line = error_of(json.loads(line)) or line
            except ValueError:
                pass
        if not _MISSING_LINE.match(line):
            return False
    return bool(lines)


def holder_in(reason: str) -> str | None:
    """The actor named as holding an issue in a refused claim, or None."""
    for pattern in _HOLDER_PATTERNS:
        found = pattern.search(reason)
        if found:
            holder = found.group(1).rstrip(_TRAILING_PUNCTUATION)
            if holder:
                return holder
    return None
