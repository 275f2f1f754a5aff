"""Small text helpers for messages, shared by the pure layer, the trackers and the command line."""

from __future__ import annotations


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, cut to ``limit``."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def show(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: escapes newlines and NULs, so a message stays one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def source_name(source: str) -> str:
    """A file name as a message shows it: as is when printable, else quoted like :func:`show`."""
    return source if source.isprintable() else show(source)
