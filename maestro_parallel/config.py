"""Configuration: ``.flow/maestro/config.toml`` read into frozen dataclasses.

Every key of the design's §6 is accepted from the start with its documented
default, so a config written for the finished tool never fails on an early
version; an unknown key or a wrong type is a one-line
:class:`~maestro_parallel.errors.ConfigError` naming the key (and suggesting
the close match), because a typo silently ignored would run agents with the
wrong settings.

Presets are resolved here, once: ``[agent]`` as written, merged with an
``[agents.<name>]`` table, gives one :class:`AgentSettings` per subagent.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._text import show, source_name
from .agents.argv import render_argv
from .errors import ConfigError

__all__ = (
    "AGENT_PLACEHOLDERS",
    "SKILL_PLACEHOLDERS",
    "CONFIG_RELATIVE_PATH",
    "PRESETS",
    "RESULT_FORMATS",
    "TRACKER_KINDS",
    "AgentSettings",
    "Config",
    "Preset",
    "RefreshConfig",
    "SkillsConfig",
    "TestsConfig",
    "TrackerConfig",
    "config_template",
    "load_config",
    "loads_config",
    "parse_config",
)

CONFIG_RELATIVE_PATH = Path(".flow/maestro/config.toml")
RESULT_FORMATS = ("exit-code", "claude-json", "codex-jsonl")
TRACKER_KINDS = ("auto", "beads", "local")


@dataclass(frozen=True)
class Preset:
    """A known agent CLI: its argv template (None: the user must give one) and how its success is judged."""

    command: tuple[str, ...] | None
    result_format: str


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        # acceptEdits: headless claude cannot edit files without a permission mode.
        "claude": Preset(
            ("claude", "-p", "{prompt}", "--output-format", "json", "--permission-mode", "acceptEdits"),
            "claude-json",
        ),
        # workspace-write: codex runs read-only by default; it refuses a non-git folder without the flag.
        "codex": Preset(
            ("codex", "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check", "{prompt}"),
            "codex-jsonl",
        ),
        "custom": Preset(None, "exit-code"),
    }
)

_DEFAULT_PRESET = "claude"
_NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class AgentSettings:
    """Effective settings of one subagent, after presets and overrides are resolved."""

    preset: str = _DEFAULT_PRESET
    command: tuple[str, ...] = PRESETS[_DEFAULT_PRESET].command or ()
    result_format: str = PRESETS[_DEFAULT_PRESET].result_format
    timeout_seconds: float = 3600.0  # per task, wall clock; 0: none
    group_timeout_seconds: float = 0.0  # whole group; 0: none
    grace_seconds: float = 5.0  # SIGTERM, this long, then SIGKILL
    max_parallel: int = 0  # 0: every task at once
    launch_stagger_seconds: float = 0.0
    retries: int = 2  # transient failures only
    max_log_bytes: int = 0  # 0: unlimited
    env: Mapping[str, str] = field(default_factory=lambda: _NO_ENV)


@dataclass(frozen=True)
class RefreshConfig:
    """Phase 1 context refresh (``/flow:summary``)."""

    enabled: bool = True
    command: tuple[str, ...] = ("claude", "-p", "/flow:summary")
    timeout_seconds: float = 120.0
    max_bytes: int = 16384  # how much of its output goes into each prompt


@dataclass(frozen=True)
class TestsConfig:
    """Phase 4 test suite; ``command=None`` means detect it."""

    __test__ = False  # not a pytest test class, whatever its name says

    enabled: bool = True
    command: tuple[str, ...] | None = None
    timeout_seconds: float = 1800.0


@dataclass(frozen=True)
class SkillsConfig:
    """How skill guidance is obtained; an empty command means read ``SKILL.md``."""

    command: tuple[str, ...] = ()
    timeout_seconds: float = 120.0


@dataclass(frozen=True)
class TrackerConfig:
    """Which tracker to use and how to call ``bd``."""

    kind: str = "auto"
    bd_command: tuple[str, ...] = ("bd",)
    actor: str = ""  # empty: maestro-parallel@<hostname>
    call_timeout_seconds: float = 30.0
    poll_interval_seconds: float = 2.0


# --------------------------------------------------------------------------- messages and keys

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(part: str) -> str:
    """A key as TOML spells it: bare when it can be, else quoted (escaped, so it stays on one line)."""
    if _BARE_KEY.fullmatch(part):
        return part
    quoted = json.dumps(part)
    return quoted if len(quoted) <= 80 else quoted[:76] + '..."'


@dataclass(frozen=True)
class _Key:
    """Where a value sits: for messages (``[agent].timeout_seconds``) and ``ConfigError.key``."""

    source: str
    table: tuple[str, ...]
    name: str | None = None

    @property
    def label(self) -> str:
        table = "[" + ".".join(_toml_key(part) for part in self.table) + "]"
        return table if self.name is None else f"{table}.{_toml_key(self.name)}"

    @property
    def dotted(self) -> str:
        return ".".join((*self.table, self.name) if self.name is not None else self.table)

    def child(self, name: str) -> _Key:
        return _Key(self.source, self.table, name)

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"{source_name(self.source)}: {self.label} {problem}", key=self.dotted)


# --------------------------------------------------------------------------- value checks

_Check = Callable[[object, _Key], Any]


def _seconds(*, positive: bool) -> _Check:
    expected = "a number > 0" if positive else "a number >= 0"

    def check(value: object, where: _Key) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (positive and value == 0)
        ):
            raise where.error(f"must be {expected} (seconds), got {show(value)}")
        return float(value)

    return check


def _count(value: object, where: _Key) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error(f"must be an integer >= 0, got {show(value)}")
    return value


def _boolean(value: object, where: _Key) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"must be true or false, got {show(value)}")
    return value


def _string(value: object, where: _Key) -> str:
    if not isinstance(value, str) or "\0" in value:
        raise where.error(f"must be a string without NUL, got {show(value)}")
    return value


def _argv(*, allow_empty: bool) -> _Check:
    def check(value: object, where: _Key) -> tuple[str, ...]:
        if isinstance(value, str):
            raise where.error(f"must be a list of strings (an argv template, never a shell string), got {show(value)}")
        if not isinstance(value, (list, tuple)) or not (value or allow_empty):
            expected = "a list of strings" if allow_empty else "a non-empty list of strings"
            raise where.error(f"must be {expected} (an argv template), got {show(value)}")
        for item in value:
            if not isinstance(item, str) or not item or "\0" in item:
                raise where.error(f"must hold non-empty strings without NUL, got {show(item)} in {show(value)}")
        return tuple(value)

    return check


#: The placeholders each kind of argv template may use (DESIGN §6).
AGENT_PLACEHOLDERS = frozenset({"prompt", "prompt_file", "task_id", "group_id", "subagent", "repo_root", "title"})
SKILL_PLACEHOLDERS = frozenset({"skill", "task_id", "repo_root"})


def _template(names: frozenset[str], *, allow_empty: bool) -> _Check:
    """An argv template whose placeholders are all known: a typo fails at load time, not mid-run."""
    argv = _argv(allow_empty=allow_empty)

    def check(value: object, where: _Key) -> tuple[str, ...]:
        template: tuple[str, ...] = argv(value, where)

        try:
            render_argv(template, {name: "" for name in names}, key=where.label)
        except ConfigError as exc:
            raise ConfigError(f"{source_name(where.source)}: {exc}", key=where.dotted) from None
        return template

    return check


def _choice(options: Sequence[str]) -> _Check:
    def check(value: object, where: _Key) -> str:
        if not isinstance(value, str) or value not in options:
            raise where.error(f"must be one of {', '.join(map(repr, options))}, got {show(value)}")
        return value

    return check


def _env(value: object, where: _Key) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a table of strings, got {show(value)}")
    for name, text in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise where.error(f"has an invalid variable name {show(name)} (non-empty, no '=' or NUL)")
        if not isinstance(text, str) or "\0" in text:
            raise where.error(f"value of {show(name)} must be a string without NUL, got {show(text)}")
    return MappingProxyType(dict(value))


_AGENT_SPEC: Mapping[str, _Check] = {
    "preset": _choice(tuple(PRESETS)),
    "command": _template(AGENT_PLACEHOLDERS, allow_empty=False),
    "result_format": _choice(RESULT_FORMATS),
    "timeout_seconds": _seconds(positive=False),
    "group_timeout_seconds": _seconds(positive=False),
    "grace_seconds": _seconds(positive=False),
    "max_parallel": _count,
    "launch_stagger_seconds": _seconds(positive=False),
    "retries": _count,
    "max_log_bytes": _count,
    "env": _env,
}
_GROUP_WIDE = ("max_parallel", "group_timeout_seconds")
_OVERRIDE_SPEC: Mapping[str, _Check] = {k: v for k, v in _AGENT_SPEC.items() if k not in _GROUP_WIDE}
_REFRESH_SPEC: Mapping[str, _Check] = {
    "enabled": _boolean,
    "command": _argv(allow_empty=False),
    "timeout_seconds": _seconds(positive=True),
    "max_bytes": _count,
}
_TESTS_SPEC: Mapping[str, _Check] = {
    "enabled": _boolean,
    "command": _argv(allow_empty=False),
    "timeout_seconds": _seconds(positive=True),
}
_SKILLS_SPEC: Mapping[str, _Check] = {
    "command": _template(SKILL_PLACEHOLDERS, allow_empty=True),
    "timeout_seconds": _seconds(positive=True),
}
_TRACKER_SPEC: Mapping[str, _Check] = {
    "kind": _choice(TRACKER_KINDS),
    "bd_command": _argv(allow_empty=False),
    "actor": _string,
    "call_timeout_seconds": _seconds(positive=True),
    "poll_interval_seconds": _seconds(positive=True),
}
_SIMPLE_TABLES: Mapping[str, Mapping[str, _Check]] = {
    "agent": _AGENT_SPEC,
    "refresh": _REFRESH_SPEC,
    "tests": _TESTS_SPEC,
    "skills": _SKILLS_SPEC,
    "tracker": _TRACKER_SPEC,
}
_TABLES = ("agent", "agents", "refresh", "tests", "skills", "tracker", "detection")


def _suggest(name: str, candidates: Sequence[str], spell: Callable[[str], str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, matched on bare names, spelt by ``spell``."""
    match = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {spell(match[0])}?)" if match else ""


def _table(value: object, where: _Key) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a table, got {show(value)}")
    return value


def _read_table(value: object, where: _Key, spec: Mapping[str, _Check]) -> dict[str, Any]:
    """The keys of one table as written, each checked and normalised."""
    table = _table(value, where)
    out: dict[str, Any] = {}
    for name, item in table.items():
        key = where.child(name)
        check = spec.get(name)
        if check is None:
            if where.table[:1] == ("agents",) and name in _GROUP_WIDE:
                raise key.error("is group-wide: set it in [agent], not per subagent")
            raise key.error("is not a known key" + _suggest(name, list(spec), lambda k: where.child(k).label))
        out[name] = check(item, key)
    return out


# --------------------------------------------------------------------------- preset resolution


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """An ``[agents.<name>]`` table over ``[agent]``: keys replace, except ``env`` which merges."""
    merged = {**base, **override}
    if "env" in base and "env" in override:
        merged["env"] = MappingProxyType({**base["env"], **override["env"]})
    return merged


def _resolve(written: Mapping[str, Any], where: _Key) -> AgentSettings:
    """Effective settings from keys as written: an explicit preset wins; a bare command means custom."""
    preset = written.get("preset") or ("custom" if "command" in written else _DEFAULT_PRESET)
    if preset not in PRESETS:
        raise where.child("preset").error(f"must be one of {', '.join(map(repr, PRESETS))}, got {show(preset)}")
    command = written.get("command", PRESETS[preset].command)
    if command is None:
        hint = "" if where.table == ("agent",) else " (or in [agent])"
        raise where.child("command").error(f"is required with preset 'custom': set it here{hint}")
    others = {name: value for name, value in written.items() if name not in ("preset", "command", "result_format")}
    if "env" in others:
        others["env"] = MappingProxyType(dict(others["env"]))
    return AgentSettings(
        preset=preset,
        command=tuple(command),
        result_format=written.get("result_format", PRESETS[preset].result_format),
        **others,
    )


def _written_of(agent: AgentSettings) -> dict[str, Any]:
    """``[agent]`` as if written, for a Config built in Python: what equals the preset's counts as unwritten."""
    written = {f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)}
    preset = PRESETS.get(agent.preset)
    if preset is not None and preset.command is not None and tuple(agent.command) == preset.command:
        del written["command"]
    if preset is not None and agent.result_format == preset.result_format:
        del written["result_format"]
    return written


@dataclass(frozen=True)
class Config:
    """The whole configuration; every field defaults to DESIGN §6.

    ``agents`` holds the ``[agents.<name>]`` tables as written (checked and
    normalised); ``agent_table`` holds ``[agent]`` as written, the base they
    merge over (None for a Config built in Python: derived from ``agent``).
    """

    agent: AgentSettings = AgentSettings()
    agents: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    refresh: RefreshConfig = RefreshConfig()
    tests: TestsConfig = TestsConfig()
    skills: SkillsConfig = SkillsConfig()
    tracker: TrackerConfig = TrackerConfig()
    detection: Mapping[str, tuple[str, ...]] | None = None  # None: the built-in keyword table
    source: str | None = None  # the file it came from, for messages
    agent_table: Mapping[str, Any] | None = field(default=None, repr=False)

    def _base(self) -> dict[str, Any]:
        return dict(self.agent_table) if self.agent_table is not None else _written_of(self.agent)

    def agent_for(self, subagent: str) -> AgentSettings:
        """Settings of ``subagent``: its ``[agents.<name>]`` table over ``[agent]``, or ``agent`` without one."""
        override = self.agents.get(subagent)
        if override is None:
            return self.agent
        return _resolve(_merge(self._base(), override), _Key(self.source or "config", ("agents", subagent)))

    def with_overrides(
        self,
        *,
        max_parallel: int | None = None,
        group_timeout_seconds: float | None = None,
        timeout_seconds: float | None = None,
        refresh_enabled: bool | None = None,
        tests_enabled: bool | None = None,
        agent_command: Sequence[str] | None = None,
    ) -> Config:
        """A copy with command-line flags applied; they beat the file, every ``[agents.*]`` table included."""
        where = _Key("command line", ("agent",))
        base = self._base()
        agents = {name: dict(table) for name, table in self.agents.items()}
        if max_parallel is not None:
            base["max_parallel"] = _count(max_parallel, where.child("max_parallel"))
        if group_timeout_seconds is not None:
            key = where.child("group_timeout_seconds")
            base["group_timeout_seconds"] = _seconds(positive=False)(group_timeout_seconds, key)
        if timeout_seconds is not None:
            base["timeout_seconds"] = _seconds(positive=False)(timeout_seconds, where.child("timeout_seconds"))
            for table in agents.values():
                table.pop("timeout_seconds", None)
        if agent_command is not None:
            base["command"] = _template(AGENT_PLACEHOLDERS, allow_empty=False)(agent_command, where.child("command"))
            base["preset"], base["result_format"] = "custom", "exit-code"
            for table in agents.values():
                for name in ("command", "preset", "result_format"):
                    table.pop(name, None)
        refresh, tests = self.refresh, self.tests
        if refresh_enabled is not None:
            enabled = _boolean(refresh_enabled, _Key("command line", ("refresh",), "enabled"))
            refresh = dataclasses.replace(refresh, enabled=enabled)
        if tests_enabled is not None:
            enabled = _boolean(tests_enabled, _Key("command line", ("tests",), "enabled"))
            tests = dataclasses.replace(tests, enabled=enabled)
        return dataclasses.replace(
            self,
            agent=_resolve(base, where),
            agents=MappingProxyType({name: MappingProxyType(table) for name, table in agents.items()}),
            refresh=refresh,
            tests=tests,
            agent_table=MappingProxyType(base),
        )


# --------------------------------------------------------------------------- reading


def _read_agents(value: object, where: _Key, base: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for name, table in _table(value, where).items():
        key = _Key(where.source, ("agents", name))
        if not name:
            raise where.error("has a table with an empty subagent name")
        if not isinstance(table, Mapping):
            hint = f" (did you mean [agent].{name}?)" if name in _AGENT_SPEC else ""
            raise key.error(f"must be a table [agents.<subagent>], got {show(table)}{hint}")
        override = _read_table(table, key, _OVERRIDE_SPEC)
        _resolve(_merge(base, override), key)  # a custom preset without a command fails now, not mid-run
        out[name] = MappingProxyType(override)
    return out


def _read_detection(value: object, where: _Key) -> Mapping[str, tuple[str, ...]] | None:
    table = _table(value, where)
    out: dict[str, tuple[str, ...]] = {}
    for name, words in table.items():
        key = where.child(name)
        if not name:
            raise where.error("has an empty subagent name")
        if (
            not isinstance(words, list)
            or not words
            or not all(isinstance(word, str) and word.strip() for word in words)
        ):
            raise key.error(f"must be a non-empty list of non-empty strings (keywords), got {show(words)}")
        out[name] = tuple(words)
    return MappingProxyType(out) if out else None


def parse_config(data: Mapping[str, Any], *, source: str = "config.toml") -> Config:
    """Validate a decoded config document and resolve its presets."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source_name(source)}: must be a table, got {show(data)}")
    for name, value in data.items():
        if name in _TABLES:
            continue
        if isinstance(value, Mapping):
            hint = _suggest(name, _TABLES, lambda t: f"[{t}]")
            raise ConfigError(f"{source_name(source)}: unknown table [{_toml_key(name)}]{hint}", key=name)
        owners = [f"[{table}].{name}" for table, spec in _SIMPLE_TABLES.items() if name in spec]
        hint = f" (did you mean {owners[0]}?)" if owners else _suggest(name, _TABLES, lambda t: f"[{t}]")
        raise ConfigError(f"{source_name(source)}: unknown top-level key {_toml_key(name)}{hint}", key=name)
    tables = {
        name: _read_table(data[name], _Key(source, (name,)), spec)
        for name, spec in _SIMPLE_TABLES.items()
        if name in data
    }
    base = tables.get("agent", {})
    agent = _resolve(base, _Key(source, ("agent",)))
    agents = _read_agents(data["agents"], _Key(source, ("agents",)), base) if "agents" in data else {}
    detection = _read_detection(data["detection"], _Key(source, ("detection",))) if "detection" in data else None
    return Config(
        agent=agent,
        agents=MappingProxyType(agents),
        refresh=RefreshConfig(**tables.get("refresh", {})),
        tests=TestsConfig(**tables.get("tests", {})),
        skills=SkillsConfig(**tables.get("skills", {})),
        tracker=TrackerConfig(**tables.get("tracker", {})),
        detection=detection,
        source=source,
        agent_table=MappingProxyType(base),
    )


def _toml_error(source: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        where = f"line {match[1]}, column {match[2]}"
        message = message[: match.start()]
    else:
        where = "the end of the document"
        message = message.replace(" (at end of document)", "")
    message = " ".join(message.split("\n"))
    return ConfigError(f"{source_name(source)}: malformed TOML at {where}: {message}")


def loads_config(text: str, *, source: str = "config.toml") -> Config:
    """Parse the text of a config file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(source, exc) from None
    except RecursionError:
        raise ConfigError(f"{source_name(source)}: malformed TOML: nested too deeply") from None
    return parse_config(data, source=source)


def load_config(
    repo_root: str | os.PathLike[str] | None = None, *, path: str | os.PathLike[str] | None = None
) -> Config:
    """Read ``path`` (which must exist) or ``<repo_root or cwd>/.flow/maestro/config.toml`` (absent: defaults).

    Plain blocking I/O: it runs once, before any event loop work.
    """
    if path is not None:
        file = Path(path)
    else:
        file = (Path(repo_root) if repo_root is not None else Path.cwd()) / CONFIG_RELATIVE_PATH
    source = str(file)
    try:
        with open(file, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        if path is None:
            return Config()
        raise ConfigError(f"{source_name(source)}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(source, exc) from None
    except RecursionError:
        raise ConfigError(f"{source_name(source)}: malformed TOML: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source_name(source)}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source_name(source)}: cannot read: {exc.strerror or exc}") from None
    return parse_config(data, source=source)


def _toml(value: object) -> str:
    """A default written as TOML (the few types the config uses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def config_template() -> str:
    """A commented ``config.toml`` with every key at its default (what ``maestro-parallel init`` writes).

    Keys a preset derives (``command``, ``result_format``) are commented out, so
    changing ``preset`` alone takes effect.
    """
    agent, refresh, tests = AgentSettings(), RefreshConfig(), TestsConfig()
    skills, tracker = SkillsConfig(), TrackerConfig()
    return f"""\
# maestro-parallel configuration. Every key is optional; the values shown are the defaults.
# Argv templates are lists, never shell strings. Placeholders: {{prompt}}, {{prompt_file}},
# {{task_id}}, {{group_id}}, {{subagent}}, {{repo_root}}, {{title}}; {{{{ and }}}} are literal braces.

[agent]
preset = {_toml(agent.preset)}  # claude | codex | custom (custom needs a command)
# command = {_toml(agent.command)}  # the preset's; set it to replace the preset's command
# result_format = {_toml(agent.result_format)}  # exit-code | claude-json | codex-jsonl; the preset's by default
timeout_seconds = {_toml(agent.timeout_seconds)}  # per task, wall clock; 0: none
group_timeout_seconds = {_toml(agent.group_timeout_seconds)}  # whole group; 0: none
grace_seconds = {_toml(agent.grace_seconds)}  # SIGTERM to the agent's process group, this long, then SIGKILL
max_parallel = {_toml(agent.max_parallel)}  # 0: every task of the group at once
launch_stagger_seconds = {_toml(agent.launch_stagger_seconds)}  # space launches to avoid a burst against an API
retries = {_toml(agent.retries)}  # rate-limited / transient failures only, with backoff
max_log_bytes = {_toml(agent.max_log_bytes)}  # 0: unlimited; a cap drops the middle of a log, never its end
env = {_toml(dict(agent.env))}  # extra environment for agents

# Overrides of [agent] keys for one subagent (any key but max_parallel and group_timeout_seconds):
# [agents.test-automator]
# timeout_seconds = 1800
# env = {{ PYTEST_ADDOPTS = "-x" }}  # merged with [agent].env

[refresh]  # phase 1: its output becomes the "Current project state" of every prompt
enabled = {_toml(refresh.enabled)}
command = {_toml(refresh.command)}
timeout_seconds = {_toml(refresh.timeout_seconds)}
max_bytes = {_toml(refresh.max_bytes)}  # how much of its output goes into each prompt

[tests]  # phase 4: the test gate before tasks are closed
enabled = {_toml(tests.enabled)}
# command = ["pytest", "-q"]  # absent: detected (pytest, npm test, cargo test, go test); none found: skipped
timeout_seconds = {_toml(tests.timeout_seconds)}

[skills]
# command: empty reads .claude/skills/<name>/SKILL.md; else an argv printing the guidance
# ({{skill}}, {{task_id}} and {{repo_root}} are filled in)
command = {_toml(skills.command)}
timeout_seconds = {_toml(skills.timeout_seconds)}

[tracker]
kind = {_toml(tracker.kind)}  # auto (beads when .beads/ exists and bd is on PATH) | beads | local
bd_command = {_toml(tracker.bd_command)}
actor = {_toml(tracker.actor)}  # empty: maestro-parallel@<hostname>
call_timeout_seconds = {_toml(tracker.call_timeout_seconds)}
poll_interval_seconds = {_toml(tracker.poll_interval_seconds)}

# [detection]  # replaces the built-in keyword table of subagent detection
# backend-architect = ["api", "backend", "server", "database", "endpoint", "service"]
# frontend-developer = ["ui", "component", "frontend", "react", "vue", "css", "interface"]
"""
