"""The configuration's key schema: every section, key, check, default and description, once.

The schema produces the checks :mod:`maestro_parallel.config` applies, the
commented ``config.toml`` that ``maestro-parallel init`` writes
(:func:`config_template`) and the rows of a configuration reference
(:func:`config_reference`), so the three never disagree.  The section
dataclasses live here too: their field defaults are the documented defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple, get_args

from ._config_checks import (
    Check,
    argv,
    boolean,
    choice,
    count,
    env,
    seconds,
    string,
    template,
    toml_value,
    usd,
)
from .agents.argv import AGENT_PLACEHOLDERS, SKILL_PLACEHOLDERS

ResultFormat = Literal["exit-code", "claude-json", "codex-jsonl"]
TrackerKind = Literal["auto", "beads", "local"]
IsolationMode = Literal["auto", "worktree", "shared"]
LandPolicy = Literal["auto", "never"]
MergeStyle = Literal["merge", "squash"]
ConflictPolicy = Literal["warn", "serialize"]
KeepWorktrees = Literal["failed", "always", "never"]
ExecutorKind = Literal["local", "dask"]
#: How rate-limited retries wait: one shared backoff per preset (the governor), or each task on its own.
BackoffMode = Literal["shared", "per-task"]

RESULT_FORMATS: tuple[ResultFormat, ...] = get_args(ResultFormat)
TRACKER_KINDS: tuple[TrackerKind, ...] = get_args(TrackerKind)



@dataclass(frozen=True)
class Preset:
    """A known agent CLI: its argv template (None: the user must give one) and how its success is judged."""

    command: tuple[str, ...] | None
    result_format: ResultFormat


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

DEFAULT_PRESET = "claude"
_NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class AgentSettings:
    """Effective settings of one subagent, after presets and overrides are resolved."""

    preset: str = DEFAULT_PRESET
    command: tuple[str, ...] = PRESETS[DEFAULT_PRESET].command or ()
    result_format: ResultFormat = PRESETS[DEFAULT_PRESET].result_format
    timeout_seconds: float = 3600.0  # per task, wall clock; 0: none
    group_timeout_seconds: float = 0.0  # whole group; 0: none
    grace_seconds: float = 5.0  # SIGTERM, this long, then SIGKILL
    max_parallel: int = 0  # 0: every task at once
    launch_stagger_seconds: float = 0.0
    retries: int = 2  # transient failures only
    backoff: BackoffMode = "shared"  # the whole run's: one backoff per preset, or per task
    max_log_bytes: int = 0  # 0: unlimited
    max_budget_usd: float = 0.0  # per task; 0: none
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

    kind: TrackerKind = "auto"
    bd_command: tuple[str, ...] = ("bd",)
    actor: str = ""  # empty: maestro-parallel@<hostname>
    call_timeout_seconds: float = 30.0
    poll_interval_seconds: float = 2.0


@dataclass(frozen=True)
class IsolationConfig:
    """One git worktree per task and a merge queue (``mode = "shared"``: every agent in the repository root)."""

    mode: IsolationMode = "auto"
    target: str = ""  # "": the branch checked out when the group starts
    land: LandPolicy = "auto"
    merge: MergeStyle = "merge"
    conflicts: ConflictPolicy = "warn"
    setup: tuple[str, ...] = ()
    setup_timeout_seconds: float = 600.0
    keep_worktrees: KeepWorktrees = "failed"


@dataclass(frozen=True)
class PlanConfig:
    """Limits of a whole-plan run (``run``); 0: no cap."""

    max_parallel_groups: int = 0
    max_agents: int = 0


@dataclass(frozen=True)
class ExecutorConfig:
    """Where agents run: this machine, or the workers of a Dask cluster."""

    kind: ExecutorKind = "local"
    address: str = ""  # "": start a LocalCluster on this machine
    workers: int = 0  # LocalCluster only; 0: Dask's default


@dataclass(frozen=True)
class BudgetConfig:
    """Spending limits from the costs agents report, in US dollars; 0: none."""

    group_usd: float = 0.0
    plan_usd: float = 0.0


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class ConfigKey:
    """One key: its check, its default, and what the template and the reference say of it."""

    table: str
    name: str
    check: Check
    default: object
    description: str
    commented: bool = False  # written commented out by `init` (derived from the preset, or no default)


class ConfigKeyRow(NamedTuple):
    """One row of the configuration reference."""

    table: str
    key: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class TableSchema:
    """One ``[table]`` of the file: its keys, and the lines the template writes around them."""

    name: str
    comment: str
    keys: tuple[ConfigKey, ...]
    after: str = ""  # commented example lines written after the keys

    @property
    def checks(self) -> Mapping[str, Check]:
        return MappingProxyType({key.name: key.check for key in self.keys})


@dataclass(frozen=True)
class _K:
    """A key as the schema below writes it; its default comes from the section's dataclass."""

    name: str
    check: Check
    description: str
    commented: bool = False
    example: object = None  # shown instead of the default (a key whose default is "absent")


def _table(name: str, defaults: object, comment: str, *keys: _K, after: str = "") -> TableSchema:
    """A table whose defaults are read from ``defaults`` (a section dataclass at its defaults)."""
    return TableSchema(
        name,
        comment,
        tuple(
            ConfigKey(
                name,
                key.name,
                key.check,
                key.example if key.example is not None else getattr(defaults, key.name),
                key.description,
                key.commented,
            )
            for key in keys
        ),
        after,
    )


SCHEMA: tuple[TableSchema, ...] = (
    _table(
        "agent",
        AgentSettings(),
        "",
        _K("preset", choice(tuple(PRESETS)), "claude | codex | custom (custom needs a command)"),
        _K("command", template(AGENT_PLACEHOLDERS, allow_empty=False),
         "the preset's; set it to replace the preset's command", commented=True),
        _K("result_format", choice(RESULT_FORMATS),
         "exit-code | claude-json | codex-jsonl; the preset's by default", commented=True),
        _K("timeout_seconds", seconds(positive=False), "per task, wall clock; 0: none"),
        _K("group_timeout_seconds", seconds(positive=False), "whole group; 0: none"),
        _K("grace_seconds", seconds(positive=False), "SIGTERM to the agent's process group, this long, then SIGKILL"),
        _K("max_parallel", count, "0: every task of the group at once"),
        _K("launch_stagger_seconds", seconds(positive=False), "space launches to avoid a burst against an API"),
        _K("retries", count, "rate-limited / transient failures only, with backoff"),
        _K("backoff", choice(get_args(BackoffMode)),
           "shared: one backoff and an adaptive limit per preset for every agent | per-task: each on its own"),
        _K("max_log_bytes", count, "0: unlimited; a cap drops the middle of a log, never its end"),
        _K("max_budget_usd", usd, "per task, from the costs the agent reports; 0: none"),
        _K("env", env, "extra environment for agents"),
        after="""\
# Overrides of [agent] keys for one subagent (any key but max_parallel, group_timeout_seconds and backoff):
# [agents.test-automator]
# timeout_seconds = 1800
# env = { PYTEST_ADDOPTS = "-x" }  # merged with [agent].env
""",
    ),
    _table(
        "refresh",
        RefreshConfig(),
        'phase 1: its output becomes the "Current project state" of every prompt',
        _K("enabled", boolean, ""),
        _K("command", argv(allow_empty=False), ""),
        _K("timeout_seconds", seconds(positive=True), ""),
        _K("max_bytes", count, "how much of its output goes into each prompt"),
    ),
    _table(
        "tests",
        TestsConfig(),
        "phase 4: the test gate before tasks are closed",
        _K("enabled", boolean, ""),
        _K("command", argv(allow_empty=False),
         "absent: detected (pytest, npm test, cargo test, go test); none found: skipped",
         commented=True, example=("pytest", "-q")),
        _K("timeout_seconds", seconds(positive=True), ""),
    ),
    _table(
        "skills",
        SkillsConfig(),
        "",
        _K("command", template(SKILL_PLACEHOLDERS, allow_empty=True),
         "empty: read .claude/skills/<name>/SKILL.md; else an argv printing the guidance"),
        _K("timeout_seconds", seconds(positive=True), ""),
    ),
    _table(
        "tracker",
        TrackerConfig(),
        "",
        _K("kind", choice(TRACKER_KINDS), "auto (beads when .beads/ exists and bd is on PATH) | beads | local"),
        _K("bd_command", argv(allow_empty=False), ""),
        _K("actor", string, "empty: maestro-parallel@<hostname>"),
        _K("call_timeout_seconds", seconds(positive=True), ""),
        _K("poll_interval_seconds", seconds(positive=True), ""),
    ),
    _table(
        "isolation",
        IsolationConfig(),
        "one git worktree per task, merged through a queue",
        _K("mode", choice(get_args(IsolationMode)), "auto | worktree | shared"),
        _K("target", string, 'branch the work lands on; "": the branch checked out when the group starts'),
        _K("land", choice(get_args(LandPolicy)),
           "auto: fast-forward the target when safe; never: leave it on the integration branch"),
        _K("merge", choice(get_args(MergeStyle)), "merge (one merge commit per task) | squash (one commit per task)"),
        _K("conflicts", choice(get_args(ConflictPolicy)), "warn | serialize (predicted overlaps)"),
        _K("setup", argv(allow_empty=True), 'argv run in each new worktree before its agent, e.g. ["uv", "sync"]'),
        _K("setup_timeout_seconds", seconds(positive=True), ""),
        _K("keep_worktrees", choice(get_args(KeepWorktrees)), "failed | always | never"),
    ),
    _table(
        "plan",
        PlanConfig(),
        "whole-plan runs",
        _K("max_parallel_groups", count, "steps running at once; 0: no cap"),
        _K("max_agents", count, "agents running at once across the whole plan; 0: no cap"),
    ),
    _table(
        "executor",
        ExecutorConfig(),
        "where agents run",
        _K("kind", choice(get_args(ExecutorKind)), "local | dask (dask needs worktree isolation)"),
        _K("address", string, 'dask: scheduler address (tcp://host:8786); "": start a LocalCluster here'),
        _K("workers", count, "LocalCluster only: worker processes; 0: Dask's default"),
    ),
    _table(
        "budget",
        BudgetConfig(),
        "from the costs agents report; nothing new is launched once reached",
        _K("group_usd", usd, "per group; 0: none"),
        _K("plan_usd", usd, "per whole-plan run; 0: none"),
    ),
)

#: The tables checked key by key (``agents`` and ``detection`` hold names the user chooses).
SIMPLE_TABLES: Mapping[str, Mapping[str, Check]] = MappingProxyType({t.name: t.checks for t in SCHEMA})

_HEADER = """\
# maestro-parallel configuration. Every key is optional; the values shown are the defaults.
# Argv templates are lists, never shell strings. Placeholders: {prompt}, {prompt_file},
# {task_id}, {group_id}, {subagent}, {repo_root}, {title}, {worktree}; {{ and }} are literal braces.
"""

_DETECTION = """\
# [detection]  # replaces the built-in keyword table of subagent detection
# backend-architect = ["api", "backend", "server", "database", "endpoint", "service"]
# frontend-developer = ["ui", "component", "frontend", "react", "vue", "css", "interface"]
"""


def config_template() -> str:
    """A commented ``config.toml`` with every key at its default (what ``maestro-parallel init`` writes).

    Keys a preset derives (``command``, ``result_format``) are commented out, so
    changing ``preset`` alone takes effect.
    """
    parts = [_HEADER]
    for schema in SCHEMA:
        lines = [f"[{schema.name}]" + (f"  # {schema.comment}" if schema.comment else "")]
        for key in schema.keys:
            line = f"{'# ' if key.commented else ''}{key.name} = {toml_value(key.default)}"
            lines.append(line + (f"  # {key.description}" if key.description else ""))
        parts.append("\n".join(lines) + "\n" + (f"\n{schema.after}" if schema.after else ""))
    parts.append(_DETECTION)
    return "\n".join(parts)


def config_reference() -> list[ConfigKeyRow]:
    """Every key as (table, key, type, default, description): the rows of a configuration reference."""
    rows = [
        ConfigKeyRow(
            key.table,
            key.name,
            key.check.kind,
            "(none)" if key.commented and key.table == "tests" else toml_value(key.default),
            key.description,
        )
        for schema in SCHEMA
        for key in schema.keys
    ]
    rows.insert(
        len(SCHEMA[0].keys),
        ConfigKeyRow(
            "agents.<subagent>",
            "(any [agent] key)",
            "table",
            "",
            "overrides of [agent] for one subagent, except max_parallel, group_timeout_seconds and backoff",
        ),
    )
    rows.append(
        ConfigKeyRow(
            "detection", "<subagent>", "list of keywords", "(built-in table)", "replaces subagent detection keywords"
        )
    )
    return rows
