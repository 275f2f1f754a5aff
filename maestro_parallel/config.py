"""Configuration: ``.flow/maestro/config.toml`` read into frozen dataclasses.

Every documented key is accepted from the start with its default (the key
schema, :mod:`maestro_parallel._config_schema`, says which), so a config
written for the finished tool never fails on an early version; an unknown key or a wrong type is a one-line
:class:`~maestro_parallel.errors.ConfigError` naming the key (and suggesting
the close match), because a typo silently ignored would run agents with the
wrong settings.

Presets are resolved here, once: ``[agent]`` as written, merged with an
``[agents.<name>]`` table, gives one :class:`AgentSettings` per subagent.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._config_checks import Key, boolean, count, read_table, seconds, suggest, template, toml_key
from ._config_checks import table as as_table
from ._config_schema import (
    DEFAULT_PRESET,
    PRESETS,
    RESULT_FORMATS,
    SIMPLE_TABLES,
    TRACKER_KINDS,
    AgentSettings,
    BudgetConfig,
    ConfigKeyRow,
    ExecutorConfig,
    IsolationConfig,
    PlanConfig,
    Preset,
    RefreshConfig,
    ResultFormat,
    SkillsConfig,
    TestsConfig,
    TrackerConfig,
    TrackerKind,
    config_reference,
    config_template,
)
from ._files import read_regular
from ._paths import CONFIG_RELATIVE_PATH
from ._text import show, source_name
from .agents.argv import AGENT_PLACEHOLDERS, SKILL_PLACEHOLDERS
from .errors import ConfigError

__all__ = (
    "AGENT_PLACEHOLDERS",
    "CONFIG_RELATIVE_PATH",
    "PRESETS",
    "RESULT_FORMATS",
    "SKILL_PLACEHOLDERS",
    "TRACKER_KINDS",
    "AgentSettings",
    "BudgetConfig",
    "Config",
    "ConfigKeyRow",
    "ExecutorConfig",
    "IsolationConfig",
    "PlanConfig",
    "Preset",
    "RefreshConfig",
    "ResultFormat",
    "SkillsConfig",
    "TestsConfig",
    "TrackerConfig",
    "TrackerKind",
    "config_reference",
    "config_template",
    "load_config",
    "loads_config",
    "parse_config",
)

_AGENT_SPEC = SIMPLE_TABLES["agent"]
_GROUP_WIDE = ("max_parallel", "group_timeout_seconds", "backoff")
_OVERRIDE_SPEC = MappingProxyType({k: v for k, v in _AGENT_SPEC.items() if k not in _GROUP_WIDE})
#: Every table, in the order suggestions prefer.
_TABLES = ("agent", "agents", "refresh", "tests", "skills", "tracker", "detection", *list(SIMPLE_TABLES)[5:])


# --------------------------------------------------------------------------- preset resolution


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """An ``[agents.<name>]`` table over ``[agent]``: keys replace, except ``env`` which merges."""
    merged = {**base, **override}
    if "env" in base and "env" in override:
        merged["env"] = MappingProxyType({**base["env"], **override["env"]})
    return merged


def _resolve(written: Mapping[str, Any], where: Key) -> AgentSettings:
    """Effective settings from keys as written: an explicit preset wins; a bare command means custom."""
    preset = written.get("preset") or ("custom" if "command" in written else DEFAULT_PRESET)
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
    """The whole configuration; every field at its documented default unless the file says otherwise.

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
    isolation: IsolationConfig = IsolationConfig()
    plan: PlanConfig = PlanConfig()
    executor: ExecutorConfig = ExecutorConfig()
    budget: BudgetConfig = BudgetConfig()
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
        return _resolve(_merge(self._base(), override), Key(self.source or "config", ("agents", subagent)))

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
        where = Key("command line", ("agent",))
        base = self._base()
        agents = {name: dict(table) for name, table in self.agents.items()}
        if max_parallel is not None:
            base["max_parallel"] = count(max_parallel, where.child("max_parallel"))
        if group_timeout_seconds is not None:
            key = where.child("group_timeout_seconds")
            base["group_timeout_seconds"] = seconds(positive=False)(group_timeout_seconds, key)
        if timeout_seconds is not None:
            base["timeout_seconds"] = seconds(positive=False)(timeout_seconds, where.child("timeout_seconds"))
            for table in agents.values():
                table.pop("timeout_seconds", None)
        if agent_command is not None:
            base["command"] = template(AGENT_PLACEHOLDERS, allow_empty=False)(agent_command, where.child("command"))
            base["preset"], base["result_format"] = "custom", "exit-code"
            for table in agents.values():
                for name in ("command", "preset", "result_format"):
                    table.pop(name, None)
        refresh, tests = self.refresh, self.tests
        if refresh_enabled is not None:
            enabled = boolean(refresh_enabled, Key("command line", ("refresh",), "enabled"))
            refresh = dataclasses.replace(refresh, enabled=enabled)
        if tests_enabled is not None:
            enabled = boolean(tests_enabled, Key("command line", ("tests",), "enabled"))
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


def _read_agents(value: object, where: Key, base: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for name, table in as_table(value, where).items():
        key = Key(where.source, ("agents", name))
        if not name:
            raise where.error("has a table with an empty subagent name")
        if not isinstance(table, Mapping):
            hint = f" (did you mean [agent].{name}?)" if name in _AGENT_SPEC else ""
            raise key.error(f"must be a table [agents.<subagent>], got {show(table)}{hint}")
        override = read_table(table, key, _OVERRIDE_SPEC, group_wide=_GROUP_WIDE)
        _resolve(_merge(base, override), key)  # a custom preset without a command fails now, not mid-run
        out[name] = MappingProxyType(override)
    return out


def _read_detection(value: object, where: Key) -> Mapping[str, tuple[str, ...]] | None:
    table = as_table(value, where)
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
            hint = suggest(name, _TABLES, lambda t: f"[{t}]")
            raise ConfigError(f"{source_name(source)}: unknown table [{toml_key(name)}]{hint}", key=name)
        owners = [f"[{table}].{name}" for table, spec in SIMPLE_TABLES.items() if name in spec]
        hint = f" (did you mean {owners[0]}?)" if owners else suggest(name, _TABLES, lambda t: f"[{t}]")
        raise ConfigError(f"{source_name(source)}: unknown top-level key {toml_key(name)}{hint}", key=name)
    tables = {
        name: read_table(data[name], Key(source, (name,)), spec)
        for name, spec in SIMPLE_TABLES.items()
        if name in data
    }
    base = tables.get("agent", {})
    agent = _resolve(base, Key(source, ("agent",)))
    agents = _read_agents(data["agents"], Key(source, ("agents",)), base) if "agents" in data else {}
    detection = _read_detection(data["detection"], Key(source, ("detection",))) if "detection" in data else None
    return Config(
        agent=agent,
        agents=MappingProxyType(agents),
        refresh=RefreshConfig(**tables.get("refresh", {})),
        tests=TestsConfig(**tables.get("tests", {})),
        skills=SkillsConfig(**tables.get("skills", {})),
        tracker=TrackerConfig(**tables.get("tracker", {})),
        isolation=IsolationConfig(**tables.get("isolation", {})),
        plan=PlanConfig(**tables.get("plan", {})),
        executor=ExecutorConfig(**tables.get("executor", {})),
        budget=BudgetConfig(**tables.get("budget", {})),
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


#: A configuration larger than this is refused (it is a few kilobytes; an endless file must not be read).
_MAX_CONFIG_BYTES = 1 << 20


def loads_config(text: str, *, source: str = "config.toml") -> Config:
    """Parse the text of a config file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(source, exc) from exc
    except RecursionError as exc:
        raise ConfigError(f"{source_name(source)}: malformed TOML: nested too deeply") from exc
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
        data = tomllib.loads(read_regular(file, _MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError as exc:
        if path is None:
            return Config()
        raise ConfigError(f"{source_name(source)}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(source, exc) from exc
    except RecursionError as exc:
        raise ConfigError(f"{source_name(source)}: malformed TOML: nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source_name(source)}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{source_name(source)}: cannot read: {exc.strerror or exc}") from exc
    return parse_config(data, source=source)
