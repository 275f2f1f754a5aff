"""The value checks of the configuration: each names the key it rejects, in one line.

A :class:`Check` is a function with a human name of what it accepts (its
``kind``), so the key schema in :mod:`maestro_parallel.config` produces both
the validation and the documented type of every key from one description.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ._text import show, source_name
from .agents.argv import render_argv
from .errors import ConfigError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(part: str) -> str:
    """A key as TOML spells it: bare when it can be, else quoted (escaped, so it stays on one line)."""
    if _BARE_KEY.fullmatch(part):
        return part
    quoted = json.dumps(part)
    return quoted if len(quoted) <= 80 else quoted[:76] + '..."'


def toml_value(value: object) -> str:
    """A default written as TOML (the few types the config uses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class Key:
    """Where a value sits: for messages (``[agent].timeout_seconds``) and ``ConfigError.key``."""

    source: str
    table: tuple[str, ...]
    name: str | None = None

    @property
    def label(self) -> str:
        table = "[" + ".".join(toml_key(part) for part in self.table) + "]"
        return table if self.name is None else f"{table}.{toml_key(self.name)}"

    @property
    def dotted(self) -> str:
        return ".".join((*self.table, self.name) if self.name is not None else self.table)

    def child(self, name: str) -> Key:
        return Key(self.source, self.table, name)

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{source_name(self.source)}: {self.label} {problem}", key=self.dotted)


@dataclass(frozen=True)
class Check:
    """Validates and normalises one value; ``kind`` says what it accepts, for people."""

    kind: str
    func: Callable[[object, Key], Any]

    def __call__(self, value: object, where: Key) -> Any:
        return self.func(value, where)


def seconds(*, positive: bool) -> Check:
    expected = "a number > 0" if positive else "a number >= 0"

    def check(value: object, where: Key) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            raise where.error(f"must be {expected} (seconds), got {show(value)}")
        return float(value)

    return Check(f"seconds ({'> 0' if positive else '>= 0'})", check)


def _usd(value: object, where: Key) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise where.error(f"must be a number >= 0 (US dollars; 0: no budget), got {show(value)}")
    return float(value)


usd = Check("US dollars (>= 0; 0: none)", _usd)


def _count(value: object, where: Key) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error(f"must be an integer >= 0, got {show(value)}")
    return value


count = Check("integer (>= 0)", _count)


def _boolean(value: object, where: Key) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"must be true or false, got {show(value)}")
    return value


boolean = Check("boolean", _boolean)


def _string(value: object, where: Key) -> str:
    if not isinstance(value, str) or "\0" in value:
        raise where.error(f"must be a string without NUL, got {show(value)}")
    return value


string = Check("string", _string)


def argv(*, allow_empty: bool) -> Check:
    def check(value: object, where: Key) -> tuple[str, ...]:
        if isinstance(value, str):
            raise where.error(f"must be a list of strings (an argv template, never a shell string), got {show(value)}")
        if not isinstance(value, (list, tuple)) or not (value or allow_empty):
            expected = "a list of strings" if allow_empty else "a non-empty list of strings"
            raise where.error(f"must be {expected} (an argv template), got {show(value)}")
        for item in value:
            if not isinstance(item, str) or not item or "\0" in item:
                raise where.error(f"must hold non-empty strings without NUL, got {show(item)} in {show(value)}")
        return tuple(value)

    return Check("argv (list of strings)" if allow_empty else "argv (non-empty list of strings)", check)


def template(names: frozenset[str], *, allow_empty: bool) -> Check:
    """An argv template whose placeholders are all known: a typo fails at load time, not mid-run."""
    plain = argv(allow_empty=allow_empty)

    def check(value: object, where: Key) -> tuple[str, ...]:
        result: tuple[str, ...] = plain(value, where)
        try:
            render_argv(result, {name: "" for name in names}, key=where.label)
        except ConfigError as exc:
            raise ConfigError(f"{source_name(where.source)}: {exc}", key=where.dotted) from exc
        return result

    placeholders = ", ".join("{" + name + "}" for name in sorted(names))
    return Check(f"{plain.kind}; placeholders {placeholders}", check)


def choice(options: Sequence[str]) -> Check:
    def check(value: object, where: Key) -> str:
        if not isinstance(value, str) or value not in options:
            raise where.error(f"must be one of {', '.join(map(repr, options))}, got {show(value)}")
        return value

    return Check("one of " + " | ".join(options), check)


def _env(value: object, where: Key) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a table of strings, got {show(value)}")
    for name, text in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise where.error(f"has an invalid variable name {show(name)} (non-empty, no '=' or NUL)")
        if not isinstance(text, str) or "\0" in text:
            raise where.error(f"value of {show(name)} must be a string without NUL, got {show(text)}")
    return MappingProxyType(dict(value))


env = Check("table of strings", _env)


def suggest(name: str, candidates: Sequence[str], spell: Callable[[str], str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, matched on bare names, spelt by ``spell``."""
    match = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {spell(match[0])}?)" if match else ""


def table(value: object, where: Key) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a table, got {show(value)}")
    return value


def read_table(
    value: object, where: Key, spec: Mapping[str, Check], *, group_wide: Sequence[str] = ()
) -> dict[str, Any]:
    """The keys of one table as written, each checked and normalised."""
    out: dict[str, Any] = {}
    for name, item in table(value, where).items():
        key = where.child(name)
        check = spec.get(name)
        if check is None:
            if name in group_wide:
                raise key.error("is group-wide: set it in [agent], not per subagent")
            raise key.error("is not a known key" + suggest(name, list(spec), lambda k: where.child(k).label))
        out[name] = check(item, key)
    return out
