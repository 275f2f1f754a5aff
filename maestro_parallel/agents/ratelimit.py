"""Rate limits, as the agents report them: the pure decision the verdicts and the governor share.

:func:`classify` says what a finished run tells about the API's capacity (rate limited, failed,
succeeded); :func:`next_backoff` is the shared backoff's length.  The waiting itself is
:class:`maestro_parallel.runtime.governor.Governor`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ("RATE_LIMIT_STATUSES", "Outcome", "classify", "is_rate_limited_text", "next_backoff")


class Outcome(StrEnum):
    """What one agent run tells the governor."""

    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"  # a rate limit or a transient overload: back off, then retry
    FAILED = "failed"              # any other failure: says nothing about the API's capacity


#: HTTP statuses that mean "too much, try later": 429 rate limited, 529 overloaded (Anthropic).
RATE_LIMIT_STATUSES = frozenset({429, 529})

_RATE_LIMIT_WORDS = re.compile(
    # "rate" must not end another word: "generate limits" and "accurate limit" are no rate limit.
    r"\b429\b|(?<![a-z])rate[ _-]?limit|too many requests|temporarily limiting|overloaded"
    # Codex words every HTTP 5xx this way (the apostrophe is typographic in its output).
    r"|currently experiencing high demand",
    re.IGNORECASE,
)


def is_rate_limited_text(text: str | bytes) -> bool:
    """True when words say an agent was rate limited or the service was overloaded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _RATE_LIMIT_WORDS.search(text) is not None


def classify(
    *, completed: bool, claude_result: Mapping[str, Any] | None = None, codex_failure: str | None = None,
    text: str | bytes = b"",
) -> Outcome:
    """Classify a finished run: Claude's ``api_error_status`` first, then Codex's failure event, then words.

    A Claude result with an ``api_error_status`` is decided by that number alone: a 500 whose
    message says "try again" is not a rate limit, and a 429 is one whatever its words.  Codex has no
    status field; its ``error``/``turn.failed`` message is the evidence.  ``text`` (the end of the
    log) is read only when the agent left no report of its own.
    """
    if completed:
        return Outcome.SUCCESS
    if claude_result is not None:
        status = claude_result.get("api_error_status")
        if isinstance(status, int) and not isinstance(status, bool):
            return Outcome.RATE_LIMITED if status in RATE_LIMIT_STATUSES else Outcome.FAILED
        words = [claude_result.get("result")]
        errors = claude_result.get("errors")
        if isinstance(errors, list):
            words += errors
        text = "\n".join(w for w in words if isinstance(w, str))
    elif codex_failure is not None:
        text = codex_failure
    return Outcome.RATE_LIMITED if is_rate_limited_text(text) else Outcome.FAILED


def next_backoff(consecutive: int, *, base: float, cap: float) -> float:
    """The shared backoff after the ``consecutive``-th rate limit in a row: ``base * 2**(n-1)``, capped."""
    return min(cap, base * 2.0 ** max(0, consecutive - 1))
