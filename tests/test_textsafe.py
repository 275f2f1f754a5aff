"""textsafe: escape sequences and markup from agents reach neither the terminal nor rich's parser."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text

from maestro_parallel.textsafe import markup_safe, one_line, plain_text

CASES = [
    ("window title (OSC 0, BEL)", "\x1b]0;pwned\x07done", "done"),
    ("window title (OSC 2, ST)", "\x1b]2;pwned\x1b\\done", "done"),
    ("hyperlink (OSC 8)", "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "click"),
    ("clear screen", "\x1b[2J\x1b[Hafter", "after"),
    ("colour", "\x1b[1;31mred\x1b[0m", "red"),
    ("private mode (hide cursor)", "\x1b[?25lx", "x"),
    ("reset terminal (RIS)", "\x1bcx", "x"),
    ("charset switch", "\x1b(0x", "x"),
    ("8-bit CSI", "\x9b2Jx", "x"),
    ("8-bit OSC", "\x9d0;title\x9cx", "x"),
    ("device control string", "\x1bPq#0;2;0;0;0\x1b\\x", "x"),
    ("unterminated OSC eats the rest", "ok \x1b]0;title never ends", "ok "),
    ("lone ESC", "a\x1b", "a"),
    ("carriage return", "fake\rreal", "fake real"),
    ("newline", "one\ntwo", "one two"),
    ("backspace and bell", "ab\x08\x07c", "abc"),
    ("NUL and DEL", "a\x00b\x7fc", "abc"),
    ("C1 NEL and line separator", "a\x85b\u2028c", "a b c"),
    ("tab", "a\tb", "a b"),
    ("unicode kept", "é 🎉 雪 \u202eevil", "é 🎉 雪 \u202eevil"),
    ("brackets kept", "[/x] [bold]", "[/x] [bold]"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plain_text(name: str, raw: str, expected: str) -> None:
    assert plain_text(raw) == expected


def test_plain_text_can_keep_newlines_but_never_a_carriage_return() -> None:
    assert plain_text("a\r\nb\n\nc\rd", keep_newlines=True) == "a\nb\n\nc\nd"


def test_plain_text_accepts_what_a_tracker_might_answer() -> None:
    assert plain_text(None) == "None" and plain_text(42) == "42" and plain_text(b"\x1b[2J") == "b'\\x1b[2J'"


def test_one_line_folds_and_cuts() -> None:
    assert one_line("  a \n\t b  ") == "a b"
    assert one_line("abcdef", 4) == "abc…" and one_line("abc", 4) == "abc" and len(one_line("x" * 100, 10)) == 10


MARKUP = ["reviewer [/x]", chr(92) + "[bold]x", chr(92) + "[", chr(92) * 3 + "[/]", "[/bold]", "[bold]loud", "[link=https://evil.example]click[/link]", "trailing \\",
          "\\[escaped]", "[[", "]]", "[/]", "[red on white]", "a [b] c", "\\"]


@pytest.mark.parametrize("raw", MARKUP)
def test_markup_safe_is_shown_verbatim_and_never_raises(raw: str) -> None:
    rendered = Text.from_markup(markup_safe(raw))
    assert shown_as(rendered.plain, raw)
    assert not rendered.spans  # no style, no link
    # Inside surrounding markup too: a trailing backslash cannot escape the closing tag.
    inside = Text.from_markup(f"[bold]{markup_safe(raw)}[/bold]")
    assert inside.plain == raw and [(s.start, s.end, str(s.style)) for s in inside.spans] == [(0, len(raw), "bold")]


def shown_as(plain: str, raw: str) -> bool:
    """Verbatim, except that a trailing run of backslashes shows doubled when nothing follows it."""
    trailing = len(raw) - len(raw.rstrip(BACKSLASH))
    return plain == raw + BACKSLASH * trailing


BACKSLASH = chr(92)


def render_table(cell: str) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=200, color_system="truecolor")
    table = Table("task", "last line")
    table.add_row("a", cell)
    console.print(table)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def test_a_hostile_last_line_in_a_rich_table_emits_no_escape_of_its_own() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;https://evil.example\x1b\\[/x] [link=https://e.example]x"
    output = render_table(markup_safe(hostile))
    assert "pwned" not in output and "\x1b]" not in output and "\x1b[2J" not in output
    assert "[/x] [link=https://e.example]x" in output


@settings(deadline=None, max_examples=300, derandomize=True)
@given(st.text(alphabet=st.sampled_from(list("[]/\\ab =:#") + ["\x1b", "\x07", "\x9b", "\x9d", "\n", "\r"]))
       | st.text())
def test_markup_safe_never_raises_and_leaves_no_control(raw: str) -> None:
    text = Text.from_markup(markup_safe(raw))
    assert shown_as(text.plain, one_line(raw))
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text.plain)
