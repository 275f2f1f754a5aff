"""Text from agents, tasks and trackers, made safe to show on a terminal and to rich.

An agent's last line of output, a task's title or ``subagent_type`` and a
tracker's error are written by someone else.  Shown raw, an escape sequence in
them can set the terminal's window title (OSC 0), clear the screen (CSI 2J),
plant a hyperlink (OSC 8) or hide text; and given to rich as markup, ``[/x]``
raises ``MarkupError`` (a crash in the middle of a run) while ``[/bold]`` or
``[link=...]`` restyles the table.  Every such string goes through
:func:`plain_text` (escape sequences and control characters removed) before a
terminal sees it, and through :func:`markup_safe` before rich parses it.
"""

from __future__ import annotations

import re

__all__ = ("escape_markup", "markup_safe", "one_line", "plain_text")

#: Escape sequences, 7-bit and 8-bit: CSI (``ESC [`` / 0x9B) up to its final byte; OSC, DCS, SOS, PM
#: and APC (``ESC ] P X ^ _`` / 0x9D 0x90 0x98 0x9E 0x9F) up to their terminator (BEL or ST) or the end
#: of the text when unterminated; any other ``ESC`` plus one byte (``ESC c`` resets the terminal).
_ESCAPES = re.compile(
    r"""
    (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?          # CSI ... final
  | (?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f]) .*? (?:\x07|\x1b\\|\x9c|$)   # OSC / DCS / SOS / PM / APC ... ST
  | \x1b [\x20-\x2f]* [\x30-\x7e]?                                  # ESC (intermediates) final
    """,
    re.VERBOSE | re.DOTALL,
)
#: What is left to drop: C0 controls but tab and newline, DEL, C1 controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Characters that end a line on a terminal or in rich, besides ``\n``.
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85\x0b\x0c]+")
_SPACES = re.compile(r"[ \t]+")
#: A ``[`` with the backslashes before it, and the rest of a tag when it opens one (rich's own pattern).
_BRACKET = re.compile(r"(\\*)(\[(?:[a-z#/@][^[]*?\])?)")
BACKSLASH = "\\"


def plain_text(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` without escape sequences or control characters; tabs become spaces.

    Not only strings: a tracker may answer a number or ``None`` where a string
    was expected, and this is where it becomes text.  Newlines (and the other
    Unicode line breaks) become one space unless ``keep_newlines``; a carriage
    return (which rewinds the line on a terminal) never survives.
    """
    value = text if isinstance(text, str) else str(text)
    value = _ESCAPES.sub("", value)
    if keep_newlines:
        value = _LINE_BREAKS.sub(lambda m: "\n" * m.group().count("\n") or "\n", value)
    else:
        value = _LINE_BREAKS.sub(" ", value)
    value = value.replace("\t", " ")
    return _CONTROLS.sub("", value)


def one_line(text: object, max_chars: int | None = None) -> str:
    """:func:`plain_text` on one line, runs of spaces folded, cut to ``max_chars`` with an ellipsis."""
    value = _SPACES.sub(" ", plain_text(text)).strip()
    if max_chars is not None and len(value) > max_chars:
        value = value[: max(0, max_chars - 1)] + "…"
    return value


def _escape_bracket(match: re.Match[str]) -> str:
    backslashes, bracket = match.groups()
    if len(bracket) > 1:  # a tag: an odd run of backslashes escapes it, and each pair shows as one
        return backslashes * 2 + BACKSLASH + bracket
    return backslashes + BACKSLASH + bracket  # plain text: rich turns one backslash-bracket into a bracket


def escape_markup(text: str) -> str:
    """``text`` escaped so that rich's markup parser shows it verbatim and never raises ``MarkupError``.

    Stricter than ``rich.markup.escape``, which escapes only a ``[`` that looks
    like a tag: rich also turns a backslash-bracket outside a tag into a bare
    bracket, so a backslash before such a ``[`` vanished.  Here every ``[`` is
    escaped for the way rich reads it, and a trailing run of backslashes is
    doubled so that it cannot escape the next tag of the markup around it
    (it shows doubled when nothing follows: rich has no other way to say it).
    """
    escaped = _BRACKET.sub(_escape_bracket, text)
    trailing = len(escaped) - len(escaped.rstrip(BACKSLASH))
    return escaped + BACKSLASH * trailing


def markup_safe(text: object, max_chars: int | None = None) -> str:
    """:func:`one_line` escaped for rich markup (:func:`escape_markup`), for a table cell or a styled line.

    Emoji codes (``:smile:``) are not markup and are left as they are.
    """
    return escape_markup(one_line(text, max_chars))
