"""MkDocs hook: the reference pages that must not drift are generated from the code at build time.

A page holds a placeholder comment; :func:`on_page_markdown` replaces it:

- ``<!-- config-reference -->``: :func:`config_reference`, a table of every configuration key read from
  ``maestro_parallel.config`` (its dataclasses for names, types and defaults, the ``init`` template for
  what each key means), so the page says what ``maestro-parallel init`` writes;
- ``<!-- api-reference -->``: :func:`api_reference`, one mkdocstrings block per public name of
  ``maestro_parallel.__all__``, at the module where the name is defined.

:func:`on_page_content` strips the Sphinx role prefixes of the docstrings from the rendered pages, and
keeps click's ``<placeholders>`` visible on the command-line reference.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

PLACEHOLDERS = {
    "<!-- config-reference -->": "config_reference",
    "<!-- api-reference -->": "api_reference",
}

# `key = value  # what it means`, or the same commented out (a key whose default a preset derives).
_TEMPLATE_LINE = re.compile(r"^#? ?(?P<key>[a-z_]+) = (?P<value>.*?)(?:  # (?P<note>.*))?$")
_TABLE_LINE = re.compile(r"^\[(?P<table>[a-z_]+)\](?:\s+# (?P<note>.*))?$")


# What a key means where ``init``'s template leaves it uncommented (the same meaning in every table).
_GENERIC_NOTES = {
    "enabled": "false: skip this step",
    "command": "argv, never run through a shell",
    "timeout_seconds": "the command is stopped (SIGTERM, then SIGKILL) after this long",
    "bd_command": "argv of the beads CLI",
    "call_timeout_seconds": "each bd call, then its process group is stopped",
    "poll_interval_seconds": "how often running tasks are checked in the tracker (one call for all)",
}
_TYPES = {
    "str": "string",
    "float": "seconds",
    "int": "integer",
    "bool": "boolean",
    "tuple[str, ...]": "list of strings",
    "tuple[str, ...] | None": "list of strings",
    "Mapping[str, str]": "table of strings",
}


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell (no column break, no HTML tag)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _type_name(key: str, annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if text == "float" and not key.endswith("_seconds"):
        return "number"
    return _TYPES.get(text, text)


def config_reference() -> str:
    """Markdown tables of every key of ``config.toml``, one per table, from the config's key schema.

    The rows come from ``maestro_parallel.config.config_reference()``: the same schema that makes the
    loader's checks and the template ``init`` writes, so the reference can never disagree with either.
    """
    config = importlib.import_module("maestro_parallel.config")
    out: list[str] = []
    table = None
    for row in config.config_reference():
        if row.table != table:
            if table is not None:
                out.append("")
            table = row.table
            out.append(f"### `[{table}]`\n")
            out.append("| key | type | default | meaning |\n| --- | --- | --- | --- |")
        default = "detected" if (row.table, row.key) == ("tests", "command") else row.default
        shown = f"`{default}`" if default else ""
        out.append(f"| `{row.key}` | {_cell(row.type)} | {shown} | {_cell(row.description)} |")
    out.append("")
    return "\n".join(out)


def api_reference() -> str:
    """One ``::: module.Name`` block per name of ``maestro_parallel.__all__`` (where it is defined)."""
    package = importlib.import_module("maestro_parallel")
    out = []
    for name in package.__all__:
        obj = getattr(package, name)
        out.append(f"::: {obj.__module__}.{name}\n")
    return "\n".join(out)


# The docstrings use Sphinx roles (``:class:`X```), which the Markdown renderer leaves as text.
_SPHINX_ROLE = re.compile(r":(?:class|func|meth|attr|mod|exc|data|obj):(?=<code>)")


# mkdocs-click writes click's help text as Markdown: a placeholder such as ``<id>`` would become an
# (invisible) HTML tag, and click 8.3's "no default" sentinel would show as a default.
_HTML_TAGS = frozenset(
    [
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "code",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "small",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_BARE_TAG = re.compile(r"<(/?)([a-z][a-z0-9_-]*)>")
_NO_DEFAULT = "<code>Sentinel.UNSET</code>"


def _help_text(html: str) -> str:
    """Click help rendered as HTML, with its ``<placeholders>`` shown and no sentinel as a default."""
    html = _BARE_TAG.sub(lambda m: m[0] if m[2] in _HTML_TAGS else f"&lt;{m[1]}{m[2]}&gt;", html)
    return html.replace(_NO_DEFAULT, "")


def on_page_content(html: str, page: Any, **_: Any) -> str:
    """Drop the Sphinx role prefixes the API pages would otherwise show (the name stays, as code);
    repair click's help text on the command-line reference."""
    html = _SPHINX_ROLE.sub("", html)
    if page.file.src_uri == "reference/cli.md":
        html = _help_text(html)
    return html


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill each placeholder of a page with what its generator renders."""
    for placeholder, generator in PLACEHOLDERS.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, globals()[generator]())
    return markdown
