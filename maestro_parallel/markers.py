"""Pure text rules, no I/O: group markers, safe names, relevant files, subagent detection.

Everything here is a plain function over strings (or task-shaped objects), so the CLI, the coordinator and the
tests share one definition of each rule and can check it without an event loop.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = (
    "DEFAULT_SUBAGENT",
    "DEFAULT_SUBAGENT_TABLE",
    "GROUP_ID_PATTERN",
    "SEQUENTIAL",
    "TASK_ID_PATTERN",
    "detect_groups",
    "detect_subagent",
    "extract_relevant_files",
    "group_marker",
    "is_safe_task_id",
    "is_valid_group_id",
    "marker_problem",
    "marker_warnings",
    "strip_markers",
    "task_group",
)

#: The reserved key under which tasks without a marker are kept.
SEQUENTIAL = "_sequential"

GROUP_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def is_valid_group_id(group_id: object, *, allow_sequential: bool = False) -> bool:
    """True when ``group_id`` may name a group (and so a folder on disk)."""
    if not isinstance(group_id, str):
        return False
    if allow_sequential and group_id == SEQUENTIAL:
        return True
    return GROUP_ID_PATTERN.fullmatch(group_id) is not None


def is_safe_task_id(task_id: object) -> bool:
    """True when ``task_id`` is a safe name: usable in a file name and an argv element."""
    return (
        isinstance(task_id, str)
        and TASK_ID_PATTERN.fullmatch(task_id) is not None
        and ".." not in task_id
    )


# --------------------------------------------------------------------------------------------------------------
# Group markers
# --------------------------------------------------------------------------------------------------------------

_T = TypeVar("_T")

_MARKER_PREFIX = "[P:Group-"
# Built from GROUP_ID_PATTERN so the two can never disagree; `{0,63}` followed by `]` also rejects a 65-char id.
_MARKER_RE = re.compile(rf"\s*\[P:Group-({GROUP_ID_PATTERN.pattern})\]")
# Anything a person plausibly meant as a marker (any case, stray spaces), used only to explain what is wrong.
_MARKER_LIKE_RE = re.compile(r"\[\s*p\s*:\s*group", re.IGNORECASE)
# What strip_markers removes: well-formed and malformed markers alike, plus the blanks that follow them.
_MARKER_ANY_RE = re.compile(r"\[\s*p\s*:\s*group-?[^\]\s]*\]?[ \t]*", re.IGNORECASE)
_SHOWN_MAX = 40


def group_marker(text: str) -> str | None:
    """The group id of a well-formed marker at the start of ``text``, else None.

    Only the start counts, so prose that merely mentions a marker never moves a task into a group.
    """
    if not isinstance(text, str):
        return None
    match = _MARKER_RE.match(text)
    return match.group(1) if match else None


def marker_problem(text: str) -> str | None:
    """A one-line explanation when ``text`` starts with a marker-like but malformed marker, else None.

    Such a task silently runs sequentially, so the CLI prints this to tell the author why.
    """
    if not isinstance(text, str) or _MARKER_RE.match(text):
        return None
    line = text.lstrip().partition("\n")[0].rstrip("\r")
    if not _MARKER_LIKE_RE.match(line):
        return None
    end = line.find("]")
    shown = line[: end + 1] if end >= 0 else line
    if len(shown) > _SHOWN_MAX:
        shown = shown[: _SHOWN_MAX - 3] + "..."
    if not line.startswith(_MARKER_PREFIX):
        return f"malformed group marker {shown!r}: write it exactly as [P:Group-<id>] (case-sensitive)"
    if end < 0:
        return f"unterminated group marker {shown!r}: missing ']'"
    group_id = line[len(_MARKER_PREFIX) : end]
    if not group_id:
        return "empty group id in marker '[P:Group-]'"
    if len(group_id) > 64:
        return f"group id in marker {shown!r} is {len(group_id)} characters long (at most 64)"
    return (
        f"invalid group id in marker {shown!r}: use letters, digits, '_' and '-', "
        "starting with a letter or digit"
    )


def _text_fields(task: object) -> tuple[object, object]:
    """(description, title) of a mapping or of an object with those attributes."""
    if isinstance(task, Mapping):
        return task.get("description"), task.get("title")
    return getattr(task, "description", None), getattr(task, "title", None)


def task_group(task: Mapping[str, Any] | object) -> str | None:
    """The group of a task: the description's marker wins, else the title's, else None.

    Beads often carry the marker in the title only, hence the fallback.
    """
    description, title = _text_fields(task)
    match = _MARKER_RE.match(description) if isinstance(description, str) else None
    if match is None and isinstance(title, str):
        match = _MARKER_RE.match(title)
    return match.group(1) if match else None


def detect_groups(tasks: Iterable[_T]) -> dict[str, list[_T]]:
    """Group id -> the task objects themselves, in first-seen group order and input task order.

    Tasks without a valid marker go under ``SEQUENTIAL``, a key present only when there are such tasks and always
    last, so iterating the result visits the real groups first. The loop
    is inlined (one regex match per text, plain dicts read directly) because it runs over whole trackers.
    """
    groups: dict[str, list[_T]] = {}
    sequential: list[_T] = []
    match = _MARKER_RE.match
    for task in tasks:
        if isinstance(task, dict):  # the common case, read without the Mapping ABC check
            description = task.get("description")
            title = task.get("title")
        else:
            description, title = _text_fields(task)
        found = match(description) if isinstance(description, str) else None
        if found is None and isinstance(title, str):
            found = match(title)
        if found is None:
            sequential.append(task)
            continue
        group_id = found.group(1)
        members = groups.get(group_id)
        if members is None:
            groups[group_id] = [task]
        else:
            members.append(task)
    if sequential:
        groups[SEQUENTIAL] = sequential
    return groups


def _task_label(task: object, position: int) -> str:
    """How a warning names a task: its id when it has one, else its 1-based position."""
    if isinstance(task, Mapping):
        task_id = task.get("id")
        if task_id is None:
            task_id = task.get("task_id")
    else:
        task_id = getattr(task, "id", None)
        if task_id is None:
            task_id = getattr(task, "task_id", None)
    if task_id is None or task_id == "":
        return f"task #{position} (no id)"
    if is_safe_task_id(task_id):
        return f"task {task_id}"
    return f"task {str(task_id)[:60]!r}"


def marker_warnings(tasks: Iterable[Mapping[str, Any] | object]) -> list[str]:
    """One line per task whose description or title starts with a malformed marker.

    The marker is ignored (the task stays sequential unless the other field has a valid one); these lines say why.
    """
    warnings: list[str] = []
    for position, task in enumerate(tasks, start=1):
        description, title = _text_fields(task)
        problems = [
            f"{field}: {problem}"
            for field, text in (("description", description), ("title", title))
            if isinstance(text, str) and (problem := marker_problem(text)) is not None
        ]
        if problems:
            warnings.append(f"{_task_label(task, position)}: {'; '.join(problems)} (marker ignored)")
    return warnings


def strip_markers(text: str) -> str:
    """``text`` without any ``[P:Group-...]`` marker (malformed or mis-cased ones too).

    A marker is routing, not content: its id must never count as a keyword.
    """
    return _MARKER_ANY_RE.sub("", text)


# --------------------------------------------------------------------------------------------------------------
# Relevant files
# --------------------------------------------------------------------------------------------------------------

# `- file: x`, `path: x`, `**Location:** x`, plural forms too; the value may name a file without an extension.
_FIELD_RE = re.compile(
    r"\s*(?:[-*+]\s*)?(?:\*\*|__)?(?:file|path|location)s?(?:\*\*|__)?\s*:(?:\*\*|__)?\s*(?P<value>.*?)\s*$",
    re.IGNORECASE,
)
# Pieces of a white-space-separated word: quotes, backticks, brackets, parentheses, commas and semicolons split.
_PIECE_RE = re.compile(r"[^,;()\[\]\"'`]+")
_LINE_REF_RE = re.compile(r"(?::\d+){1,2}$")
# Characters no sane repository path holds, plus `:` (drives, schemes), `@` after a name (e-mail, pkg@1.2),
# and a leading `~` (home directory).
_BAD_PATH_RE = re.compile(r"[*?<>|${}\\:\x00-\x1f\x7f]|^~|[^/]@")
_EXTENSION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_PARENTHETICAL_RE = re.compile(r"\s*\([^)]*\)")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "a.k.a", "n.b", "p.s", "q.v", "et.al"})
# Product names that look like files in prose ("Node.js") but never name one in a repository.
_NOT_FILES = frozenset(
    {
        "node.js", "vue.js", "next.js", "nuxt.js", "react.js", "express.js", "angular.js", "ember.js",
        "three.js", "d3.js", "chart.js", "socket.io", "asp.net", "ado.net",
    }
)
# Field values that say "no file" rather than naming one.
_NO_FILE_VALUES = frozenset({"none", "n/a", "na", "tbd", "todo", "null", "nil", "unknown", "various", "-"})


def _clean_token(token: str) -> str | None:
    """Strip wrappers, punctuation, fragments and line references; None when it is not a safe relative path.

    The returned path is normalized: no leading ``./``, no empty or ``.`` components, no trailing slash.
    """
    lowered = token.lower()
    if "://" in lowered or lowered.lstrip("<*").startswith("www."):
        return None
    token = token.partition("#")[0].partition("::")[0]
    while True:
        stripped = _LINE_REF_RE.sub("", token.strip("*\"'`[]").rstrip(".,;:!?)"))
        if stripped == token:
            break
        token = stripped
    if not token or token.startswith("/") or _BAD_PATH_RE.search(token):
        return None
    parts = [part for part in token.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _is_file_name(path: str, raw: str) -> bool:
    """True when the last component has a real extension (so prose like ``3.11`` or ``e.g.`` is not a file)."""
    stem, dot, extension = path.rpartition("/")[2].rpartition(".")
    if not dot or not _EXTENSION_RE.fullmatch(extension) or not any(char.isalpha() for char in stem):
        return False
    if "/" in path:
        return True
    lowered = path.lower()
    if lowered in _NOT_FILES or lowered in _ABBREVIATIONS:
        return False
    parts = path.split(".")
    # `a.k.a`, `U.S.A`, and `x.y.` at a sentence's end are abbreviations; a bare `a.c` is still a file.
    single_letters = all(len(part) == 1 for part in parts)
    return not (single_letters and (len(parts) > 2 or raw.rstrip(",;:!?)*").endswith(".")))


def _scan(text: str, add: Callable[[str], object]) -> None:
    """Add every token of ``text`` that names a file with an extension."""
    for word in text.split():
        if "." not in word:
            continue  # a file name has an extension: most words of prose are settled here
        for piece in _PIECE_RE.finditer(word):
            if word[piece.end() : piece.end() + 1] == "(":
                continue  # a call such as `console.log(...)`, not a file
            chunk = piece.group()
            if "://" in chunk:
                continue  # a URL; its query (`?f=a.py`) must not leak a path
            for raw in chunk.split("="):
                path = _clean_token(raw)
                if path is not None and _is_file_name(path, raw):
                    add(path)


def extract_relevant_files(description: str) -> list[str]:
    """Repository-relative file paths the description mentions, first-seen order, no duplicates.

    Tokenizer-based on purpose: each token is judged on its own, so one odd token cannot swallow its neighbours
    the way a large regex can. Absolute paths, paths leaving the repository and URLs are never returned.
    """
    if not isinstance(description, str):
        return []
    found: dict[str, None] = {}
    add = found.setdefault
    for line in description.splitlines():
        field = _FIELD_RE.match(line)
        if field is None:
            _scan(line, add)
            continue
        value = field.group("value")
        items = [item.strip() for item in _PARENTHETICAL_RE.sub("", value).split(",")]
        if all(item and not any(char.isspace() for char in item) for item in items):
            for item in items:
                path = _clean_token(item.strip("\"'`[]"))
                if path is not None and path.lower() not in _NO_FILE_VALUES and any(c.isalnum() for c in path):
                    add(path)
        _scan(value, add)
    return list(found)


# --------------------------------------------------------------------------------------------------------------
# Subagent detection
# --------------------------------------------------------------------------------------------------------------

DEFAULT_SUBAGENT = "backend-architect"

#: The built-in keyword table, in priority order: a tie goes to the row listed first.
DEFAULT_SUBAGENT_TABLE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "backend-architect": ("api", "backend", "server", "database", "endpoint", "service"),
        "frontend-developer": ("ui", "component", "frontend", "react", "vue", "css", "interface"),
        "test-automator": ("test", "tests", "testing", "pytest", "coverage", "spec", "jest", "playwright"),
        "database-architect": ("migration", "migrations", "schema", "sql", "query", "orm", "index"),
        "security-auditor": (
            "security", "auth", "authentication", "authorization", "audit", "vulnerability", "vulnerabilities",
        ),
    }
)

# A word is a run of letters and digits: `-`, `_`, `/` and punctuation all split ("UI/UX" holds "ui").
_WORD_RE = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


_TableKey = tuple[tuple[str, tuple[str, ...]], ...]


def _table_key(rows: Mapping[str, Sequence[str]]) -> _TableKey:
    """The table as a hashable value: its string keywords (a row may be one string)."""
    return tuple(
        (name, (keywords,) if isinstance(keywords, str) else tuple(k for k in keywords if isinstance(k, str)))
        for name, keywords in rows.items()
    )


_DEFAULT_TABLE_KEY = _table_key(DEFAULT_SUBAGENT_TABLE)


@functools.lru_cache(maxsize=16)
def _table_phrases(key: _TableKey) -> tuple[tuple[str, frozenset[tuple[str, ...]]], ...]:
    """Each row's keywords as word tuples: tokenized once per table, not once per task."""
    return tuple((name, frozenset(tuple(_words(keyword)) for keyword in keywords)) for name, keywords in key)


def detect_subagent(text: str, table: Mapping[str, Sequence[str]] | None = None) -> str:
    """The subagent whose row has the most distinct keywords in ``text`` as whole words or phrases.

    Markers are stripped first; a tie goes to the row listed first, and no hit gives the first row (an empty
    table gives ``DEFAULT_SUBAGENT``), so the choice is deterministic and predictable from the table alone.
    """
    rows = DEFAULT_SUBAGENT_TABLE if table is None else table
    if not rows:
        return DEFAULT_SUBAGENT
    words = _words(strip_markers(text)) if isinstance(text, str) else []
    vocabulary = set(words)
    joined = f" {' '.join(words)} "
    best_name, best_score = next(iter(rows)), 0
    key = _DEFAULT_TABLE_KEY if rows is DEFAULT_SUBAGENT_TABLE else _table_key(rows)  # the built-in one is read-only
    for name, phrases in _table_phrases(key):
        score = sum(
            1
            for phrase in phrases
            if phrase and (phrase[0] in vocabulary if len(phrase) == 1 else f" {' '.join(phrase)} " in joined)
        )
        if score > best_score:
            best_name, best_score = name, score
    return best_name
