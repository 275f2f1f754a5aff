"""Configuration (DESIGN §6): defaults, preset resolution, validation, overrides, loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from maestro_parallel.config import (
    CONFIG_RELATIVE_PATH,
    PRESETS,
    RESULT_FORMATS,
    TRACKER_KINDS,
    AgentSettings,
    Config,
    Preset,
    RefreshConfig,
    SkillsConfig,
    TestsConfig,
    TrackerConfig,
    load_config,
    loads_config,
    parse_config,
)
from maestro_parallel.errors import ConfigError, MaestroError

CLAUDE = ("claude", "-p", "{prompt}", "--output-format", "json", "--permission-mode", "acceptEdits")
CODEX = ("codex", "exec", "--json", "--sandbox", "workspace-write", "--skip-git-repo-check", "{prompt}")


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, MaestroError) and isinstance(info.value, ValueError)
    return info.value


def attribute(config: Config, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


# --------------------------------------------------------------------------- constants and defaults


def test_presets_and_choices() -> None:
    assert dict(PRESETS) == {
        "claude": Preset(CLAUDE, "claude-json"),
        "codex": Preset(CODEX, "codex-jsonl"),
        "custom": Preset(None, "exit-code"),
    }
    assert RESULT_FORMATS == ("exit-code", "claude-json", "codex-jsonl")
    assert TRACKER_KINDS == ("auto", "beads", "local")
    assert Path(".flow/maestro/config.toml") == CONFIG_RELATIVE_PATH


DEFAULTS = [
    ("agent.preset", "claude"),
    ("agent.command", CLAUDE),
    ("agent.result_format", "claude-json"),
    ("agent.timeout_seconds", 3600),
    ("agent.group_timeout_seconds", 0),
    ("agent.grace_seconds", 5),
    ("agent.max_parallel", 0),
    ("agent.launch_stagger_seconds", 0),
    ("agent.retries", 2),
    ("agent.max_log_bytes", 0),
    ("agent.env", {}),
    ("agents", {}),
    ("refresh.enabled", True),
    ("refresh.command", ("claude", "-p", "/flow:summary")),
    ("refresh.timeout_seconds", 120),
    ("refresh.max_bytes", 16384),
    ("tests.enabled", True),
    ("tests.command", None),
    ("tests.timeout_seconds", 1800),
    ("skills.command", ()),
    ("skills.timeout_seconds", 120),
    ("tracker.kind", "auto"),
    ("tracker.bd_command", ("bd",)),
    ("tracker.actor", ""),
    ("tracker.call_timeout_seconds", 30),
    ("tracker.poll_interval_seconds", 2.0),
    ("detection", None),
]


@pytest.mark.parametrize(("path", "default"), DEFAULTS)
@pytest.mark.parametrize("how", ["constructor", "empty text", "empty tables", "absent file"])
def test_every_default_matches_the_design(path: str, default: object, how: str, tmp_path: Path) -> None:
    if how == "constructor":
        config = Config()
    elif how == "empty text":
        config = loads_config("")
    elif how == "empty tables":
        config = loads_config("[agent]\n[agents]\n[refresh]\n[tests]\n[skills]\n[tracker]\n[detection]\n")
    else:
        config = load_config(tmp_path)
    assert attribute(config, path) == default


def test_seconds_are_floats() -> None:
    config = loads_config("[agent]\ntimeout_seconds = 10\n[tracker]\npoll_interval_seconds = 1\n")
    assert config.agent.timeout_seconds == 10.0 and isinstance(config.agent.timeout_seconds, float)
    assert isinstance(config.tracker.poll_interval_seconds, float)


def test_every_documented_key_is_accepted() -> None:
    config = loads_config(
        """
        [agent]
        preset = "claude"
        command = ["claude", "-p", "{prompt}", "--output-format", "json"]
        result_format = "claude-json"
        timeout_seconds = 3600
        group_timeout_seconds = 0
        grace_seconds = 5
        max_parallel = 0
        launch_stagger_seconds = 0
        retries = 2
        max_log_bytes = 0
        env = {}

        [agents.backend-architect]
        command = ["..."]

        [refresh]
        enabled = true
        command = ["claude", "-p", "/flow:summary"]
        timeout_seconds = 120
        max_bytes = 16384

        [tests]
        enabled = true
        command = ["pytest", "-q"]
        timeout_seconds = 1800

        [skills]
        command = []
        timeout_seconds = 120

        [tracker]
        kind = "auto"
        bd_command = ["bd"]
        actor = ""
        call_timeout_seconds = 30
        poll_interval_seconds = 2.0

        [detection]
        backend-architect = ["api", "backend", "server"]
        """
    )
    assert config.agent.command == ("claude", "-p", "{prompt}", "--output-format", "json")
    assert config.agent_for("backend-architect").command == ("...",)
    assert config.tests.command == ("pytest", "-q")
    assert config.detection == {"backend-architect": ("api", "backend", "server")}


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("[agent]\ntimeout_seconds = 0", "agent.timeout_seconds", 0.0),
        ("[agent]\ntimeout_seconds = 1.5", "agent.timeout_seconds", 1.5),
        ("[agent]\ngroup_timeout_seconds = 600", "agent.group_timeout_seconds", 600.0),
        ("[agent]\ngrace_seconds = 0", "agent.grace_seconds", 0.0),
        ("[agent]\nmax_parallel = 4", "agent.max_parallel", 4),
        ("[agent]\nlaunch_stagger_seconds = 0.25", "agent.launch_stagger_seconds", 0.25),
        ("[agent]\nretries = 0", "agent.retries", 0),
        ("[agent]\nmax_log_bytes = 1048576", "agent.max_log_bytes", 1048576),
        ('[agent]\nenv = {A = "1", B = ""}', "agent.env", {"A": "1", "B": ""}),
        ("[refresh]\nenabled = false", "refresh.enabled", False),
        ('[refresh]\ncommand = ["x"]', "refresh.command", ("x",)),
        ("[refresh]\ntimeout_seconds = 0.5", "refresh.timeout_seconds", 0.5),
        ("[refresh]\nmax_bytes = 0", "refresh.max_bytes", 0),
        ("[tests]\nenabled = false", "tests.enabled", False),
        ('[tests]\ncommand = ["npm", "test"]', "tests.command", ("npm", "test")),
        ("[tests]\ntimeout_seconds = 60", "tests.timeout_seconds", 60.0),
        ('[skills]\ncommand = ["skill", "{skill}"]', "skills.command", ("skill", "{skill}")),
        ("[skills]\ntimeout_seconds = 5", "skills.timeout_seconds", 5.0),
        ('[tracker]\nkind = "beads"', "tracker.kind", "beads"),
        ('[tracker]\nkind = "local"', "tracker.kind", "local"),
        ('[tracker]\nbd_command = ["/opt/bd", "--db", "x"]', "tracker.bd_command", ("/opt/bd", "--db", "x")),
        ('[tracker]\nactor = "ci@host"', "tracker.actor", "ci@host"),
        ("[tracker]\ncall_timeout_seconds = 1", "tracker.call_timeout_seconds", 1.0),
        ("[tracker]\npoll_interval_seconds = 0.1", "tracker.poll_interval_seconds", 0.1),
        ('[detection]\nui-person = ["ui", "css"]\nb = ["x"]', "detection", {"ui-person": ("ui", "css"), "b": ("x",)}),
    ],
)
def test_valid_values(text: str, path: str, expected: object) -> None:
    assert attribute(loads_config(text), path) == expected


def test_detection_keeps_the_written_order() -> None:
    config = loads_config('[detection]\nz = ["a"]\na = ["b"]\nm = ["c"]')
    assert config.detection is not None and list(config.detection) == ["z", "a", "m"]


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("text", "preset", "command", "result_format"),
    [
        ("", "claude", CLAUDE, "claude-json"),
        ('preset = "claude"', "claude", CLAUDE, "claude-json"),
        ('preset = "codex"', "codex", CODEX, "codex-jsonl"),
        ('command = ["x", "{prompt}"]', "custom", ("x", "{prompt}"), "exit-code"),
        ('preset = "custom"\ncommand = ["x"]', "custom", ("x",), "exit-code"),
        ('preset = "claude"\ncommand = ["x"]', "claude", ("x",), "claude-json"),
        ('preset = "codex"\ncommand = ["x"]', "codex", ("x",), "codex-jsonl"),
        ('command = ["x"]\nresult_format = "claude-json"', "custom", ("x",), "claude-json"),
        ('preset = "codex"\nresult_format = "exit-code"', "codex", CODEX, "exit-code"),
        ('result_format = "codex-jsonl"', "claude", CLAUDE, "codex-jsonl"),
    ],
)
def test_preset_resolution(text: str, preset: str, command: tuple[str, ...], result_format: str) -> None:
    agent = loads_config("[agent]\n" + text).agent
    assert (agent.preset, agent.command, agent.result_format) == (preset, command, result_format)


def test_custom_preset_without_a_command() -> None:
    error = config_error('[agent]\npreset = "custom"')
    assert str(error) == "config.toml: [agent].command is required with preset 'custom': set it here"
    assert error.key == "agent.command"


@pytest.mark.parametrize(
    ("agent", "override", "expected"),
    [
        ("", 'command = ["y"]', ("custom", ("y",), "exit-code")),
        ("", 'preset = "codex"', ("codex", CODEX, "codex-jsonl")),
        ('command = ["x"]', 'preset = "codex"', ("codex", ("x",), "codex-jsonl")),
        ('command = ["x"]', "timeout_seconds = 5", ("custom", ("x",), "exit-code")),
        ('preset = "codex"', 'command = ["y"]', ("codex", ("y",), "codex-jsonl")),
        ('preset = "codex"', 'preset = "claude"', ("claude", CLAUDE, "claude-json")),
        ('command = ["x"]', 'preset = "custom"', ("custom", ("x",), "exit-code")),
        ('result_format = "exit-code"', 'preset = "codex"', ("codex", CODEX, "exit-code")),
        ('preset = "claude"\ncommand = ["x"]', 'result_format = "exit-code"', ("claude", ("x",), "exit-code")),
        ('command = ["x"]', 'command = ["y"]\nresult_format = "codex-jsonl"', ("custom", ("y",), "codex-jsonl")),
    ],
)
def test_per_agent_resolution(agent: str, override: str, expected: tuple[str, tuple[str, ...], str]) -> None:
    config = loads_config(f"[agent]\n{agent}\n[agents.web]\n{override}\n")
    settings = config.agent_for("web")
    assert (settings.preset, settings.command, settings.result_format) == expected


def test_per_agent_keys_replace_and_env_merges() -> None:
    config = loads_config(
        """
        [agent]
        timeout_seconds = 100
        retries = 1
        env = {A = "1", B = "1"}
        max_parallel = 3
        group_timeout_seconds = 50
        [agents.web]
        timeout_seconds = 7
        grace_seconds = 1
        launch_stagger_seconds = 0.5
        retries = 0
        max_log_bytes = 10
        env = {B = "2", C = "3"}
        """
    )
    web = config.agent_for("web")
    assert (web.timeout_seconds, web.grace_seconds, web.launch_stagger_seconds, web.retries, web.max_log_bytes) == (
        7.0,
        1.0,
        0.5,
        0,
        10,
    )
    assert web.env == {"A": "1", "B": "2", "C": "3"}
    assert (web.max_parallel, web.group_timeout_seconds) == (3, 50.0)
    assert config.agent.env == {"A": "1", "B": "1"}
    assert config.agents == {"web": {"timeout_seconds": 7.0, "grace_seconds": 1.0, "launch_stagger_seconds": 0.5,
                                     "retries": 0, "max_log_bytes": 10, "env": {"B": "2", "C": "3"}}}


def test_env_of_an_override_alone() -> None:
    assert loads_config('[agents.web]\nenv = {C = "3"}').agent_for("web").env == {"C": "3"}


def test_agent_without_a_table_gets_agent() -> None:
    config = loads_config('[agent]\ncommand = ["x"]\n[agents.web]\nretries = 0')
    assert config.agent_for("backend-architect") is config.agent


def test_quoted_agent_names() -> None:
    config = loads_config('[agents."a.b c"]\nretries = 9')
    assert config.agent_for("a.b c").retries == 9
    error = config_error('[agents."a.b c"]\nretris = 9')
    assert str(error).startswith('config.toml: [agents."a.b c"].retris is not a known key')
    assert error.key == "agents.a.b c.retris"


@pytest.mark.parametrize(
    ("text", "message", "key"),
    [
        (
            '[agents.web]\npreset = "custom"',
            "config.toml: [agents.web].command is required with preset 'custom': set it here (or in [agent])",
            "agents.web.command",
        ),
        (
            '[agent]\npreset = "codex"\n[agents.web]\npreset = "custom"',
            "config.toml: [agents.web].command is required with preset 'custom': set it here (or in [agent])",
            "agents.web.command",
        ),
        (
            "[agents.web]\nmax_parallel = 2",
            "config.toml: [agents.web].max_parallel is group-wide: set it in [agent], not per subagent",
            "agents.web.max_parallel",
        ),
        (
            "[agents.web]\ngroup_timeout_seconds = 2",
            "config.toml: [agents.web].group_timeout_seconds is group-wide: set it in [agent], not per subagent",
            "agents.web.group_timeout_seconds",
        ),
        (
            '[agents]\ncommand = ["x"]',
            "config.toml: [agents.command] must be a table [agents.<subagent>], got ['x']"
            " (did you mean [agent].command?)",
            "agents.command",
        ),
        ('[agents.""]\nretries = 1', "config.toml: [agents] has a table with an empty subagent name", "agents"),
        (
            "[agents.web]\nretries = -1",
            "config.toml: [agents.web].retries must be an integer >= 0, got -1",
            "agents.web.retries",
        ),
    ],
)
def test_per_agent_errors(text: str, message: str, key: str) -> None:
    error = config_error(text)
    assert (str(error), error.key) == (message, key)


def test_custom_per_agent_with_a_command_in_agent_is_fine() -> None:
    config = loads_config('[agent]\ncommand = ["x"]\n[agents.web]\npreset = "custom"')
    assert config.agent_for("web").command == ("x",)


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "message", "key"),
    [
        (
            "[agent]\ntimout_seconds = 1",
            "config.toml: [agent].timout_seconds is not a known key (did you mean [agent].timeout_seconds?)",
            "agent.timout_seconds",
        ),
        (
            "[agent]\nmax_paralel = 1",
            "config.toml: [agent].max_paralel is not a known key (did you mean [agent].max_parallel?)",
            "agent.max_paralel",
        ),
        ("[agent]\nzzz = 1", "config.toml: [agent].zzz is not a known key", "agent.zzz"),
        (
            "[agents.web]\nretrys = 1",
            "config.toml: [agents.web].retrys is not a known key (did you mean [agents.web].retries?)",
            "agents.web.retrys",
        ),
        ("[agnet]\nretries = 1", "config.toml: unknown table [agnet] (did you mean [agent]?)", "agnet"),
        ("[test]\nenabled = true", "config.toml: unknown table [test] (did you mean [tests]?)", "test"),
        ("[nothing-like]\nx = 1", "config.toml: unknown table [nothing-like]", "nothing-like"),
        (
            "max_parallel = 3",
            "config.toml: unknown top-level key max_parallel (did you mean [agent].max_parallel?)",
            "max_parallel",
        ),
        (
            "bd_command = ['bd']",
            "config.toml: unknown top-level key bd_command (did you mean [tracker].bd_command?)",
            "bd_command",
        ),
        ("tracer = 1", "config.toml: unknown top-level key tracer (did you mean [tracker]?)", "tracer"),
        (
            "[refresh]\nenable = false",
            "config.toml: [refresh].enable is not a known key (did you mean [refresh].enabled?)",
            "refresh.enable",
        ),
        (
            "[tests]\ncommands = ['x']",
            "config.toml: [tests].commands is not a known key (did you mean [tests].command?)",
            "tests.commands",
        ),
        (
            "[skills]\ntimeout = 1",
            "config.toml: [skills].timeout is not a known key (did you mean [skills].timeout_seconds?)",
            "skills.timeout",
        ),
        (
            "[tracker]\nkinds = 'auto'",
            "config.toml: [tracker].kinds is not a known key (did you mean [tracker].kind?)",
            "tracker.kinds",
        ),
        (
            "[tracker]\nactor = 'x'\n[tracker.sub]\nx = 1",
            "config.toml: [tracker].sub is not a known key",
            "tracker.sub",
        ),
    ],
)
def test_unknown_keys_and_tables(text: str, message: str, key: str) -> None:
    error = config_error(text)
    assert (str(error), error.key) == (message, key)


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("text", "label", "expected"),
    [
        ('[agent]\npreset = "gpt"', "[agent].preset", "must be one of 'claude', 'codex', 'custom', got 'gpt'"),
        ("[agent]\npreset = 1", "[agent].preset", "must be one of"),
        ('[agent]\ncommand = "claude -p"', "[agent].command", "must be a list of strings (an argv template, never"),
        ("[agent]\ncommand = []", "[agent].command", "must be a non-empty list of strings"),
        ('[agent]\ncommand = [""]', "[agent].command", "must hold non-empty strings without NUL"),
        ("[agent]\ncommand = [1]", "[agent].command", "must hold non-empty strings without NUL"),
        ('[agent]\ncommand = ["a\\u0000b"]', "[agent].command", "must hold non-empty strings without NUL"),
        ('[agent]\nresult_format = "json"', "[agent].result_format", "one of 'exit-code', 'claude-json', 'codex-jsonl'"),
        ('[agent]\ntimeout_seconds = "1"', "[agent].timeout_seconds", "must be a number >= 0 (seconds), got '1'"),
        ("[agent]\ntimeout_seconds = true", "[agent].timeout_seconds", "must be a number >= 0 (seconds), got True"),
        ("[agent]\ntimeout_seconds = -1", "[agent].timeout_seconds", "must be a number >= 0"),
        ("[agent]\ntimeout_seconds = nan", "[agent].timeout_seconds", "must be a number >= 0"),
        ("[agent]\ntimeout_seconds = inf", "[agent].timeout_seconds", "must be a number >= 0"),
        ("[agent]\ngroup_timeout_seconds = -0.5", "[agent].group_timeout_seconds", "must be a number >= 0"),
        ('[agent]\ngrace_seconds = "5"', "[agent].grace_seconds", "must be a number >= 0"),
        ("[agent]\nmax_parallel = 1.5", "[agent].max_parallel", "must be an integer >= 0, got 1.5"),
        ("[agent]\nmax_parallel = -1", "[agent].max_parallel", "must be an integer >= 0"),
        ("[agent]\nmax_parallel = true", "[agent].max_parallel", "must be an integer >= 0, got True"),
        ("[agent]\nlaunch_stagger_seconds = -1", "[agent].launch_stagger_seconds", "must be a number >= 0"),
        ('[agent]\nretries = "2"', "[agent].retries", "must be an integer >= 0"),
        ("[agent]\nmax_log_bytes = -1", "[agent].max_log_bytes", "must be an integer >= 0"),
        ('[agent]\nenv = "A=1"', "[agent].env", "must be a table of strings"),
        ("[agent]\nenv = {A = 1}", "[agent].env", "value of 'A' must be a string without NUL, got 1"),
        ('[agent]\nenv = {"A=B" = "x"}', "[agent].env", "has an invalid variable name 'A=B'"),
        ('[agent]\nenv = {"" = "x"}', "[agent].env", "has an invalid variable name ''"),
        ('[agent]\nenv = {"A\\u0000" = "x"}', "[agent].env", "has an invalid variable name 'A\\x00'"),
        ('[agent]\nenv = {A = "\\u0000"}', "[agent].env", "value of 'A' must be a string without NUL"),
        ('[agent]\nenv = {A = {B = "x"}}', "[agent].env", "value of 'A' must be a string"),
        ('[refresh]\nenabled = "yes"', "[refresh].enabled", "must be true or false, got 'yes'"),
        ("[refresh]\nenabled = 1", "[refresh].enabled", "must be true or false"),
        ("[refresh]\ncommand = []", "[refresh].command", "must be a non-empty list of strings"),
        ("[refresh]\ntimeout_seconds = 0", "[refresh].timeout_seconds", "must be a number > 0 (seconds), got 0"),
        ("[refresh]\nmax_bytes = -1", "[refresh].max_bytes", "must be an integer >= 0"),
        ("[tests]\nenabled = 0", "[tests].enabled", "must be true or false"),
        ("[tests]\ncommand = []", "[tests].command", "must be a non-empty list of strings"),
        ('[tests]\ncommand = "pytest -q"', "[tests].command", "never a shell string"),
        ("[tests]\ntimeout_seconds = 0", "[tests].timeout_seconds", "must be a number > 0"),
        ('[skills]\ncommand = "x"', "[skills].command", "never a shell string"),
        ('[skills]\ncommand = [""]', "[skills].command", "must hold non-empty strings"),
        ("[skills]\ntimeout_seconds = 0", "[skills].timeout_seconds", "must be a number > 0"),
        ('[tracker]\nkind = "bd"', "[tracker].kind", "must be one of 'auto', 'beads', 'local', got 'bd'"),
        ("[tracker]\nbd_command = []", "[tracker].bd_command", "must be a non-empty list of strings"),
        ('[tracker]\nbd_command = "bd"', "[tracker].bd_command", "never a shell string"),
        ("[tracker]\nactor = 1", "[tracker].actor", "must be a string without NUL, got 1"),
        ("[tracker]\ncall_timeout_seconds = 0", "[tracker].call_timeout_seconds", "must be a number > 0"),
        ("[tracker]\npoll_interval_seconds = 0", "[tracker].poll_interval_seconds", "must be a number > 0"),
        ("[tracker]\npoll_interval_seconds = -1", "[tracker].poll_interval_seconds", "must be a number > 0"),
        ("[detection]\nweb = []", "[detection].web", "must be a non-empty list of non-empty strings (keywords)"),
        ('[detection]\nweb = "ui"', "[detection].web", "must be a non-empty list of non-empty strings"),
        ('[detection]\nweb = [""]', "[detection].web", "must be a non-empty list of non-empty strings"),
        ("[detection]\nweb = [1]", "[detection].web", "must be a non-empty list of non-empty strings"),
        ("agent = 1", "[agent]", "must be a table, got 1"),
        ("agents = 1", "[agents]", "must be a table, got 1"),
        ("detection = []", "[detection]", "must be a table, got []"),
        ("tracker = 'x'", "[tracker]", "must be a table, got 'x'"),
    ],
)
def test_wrong_types_name_the_key(text: str, label: str, expected: str) -> None:
    error = config_error(text)
    assert str(error).startswith(f"config.toml: {label} ")
    assert expected in str(error)
    assert error.key == label.replace("[", "").replace("]", "")


def test_long_values_are_cut() -> None:
    error = config_error('[agent]\npreset = "' + "x" * 500 + '"')
    assert len(str(error)) < 200 and str(error).endswith("...")


def test_parse_config_rejects_a_non_table() -> None:
    with pytest.raises(ConfigError, match=r"^cfg: must be a table"):
        parse_config(["x"], source="cfg")  # type: ignore[arg-type]


def test_parse_config_names_its_source() -> None:
    config = parse_config({"agent": {"retries": 5}}, source="my.toml")
    assert (config.agent.retries, config.source) == (5, "my.toml")
    with pytest.raises(ConfigError, match=r"^my\.toml: \[agent\]\.retries "):
        parse_config({"agent": {"retries": -5}}, source="my.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent\nretries = 1", "config.toml: malformed TOML at line 1, column 7: Expected ']' at the end of a table"),
        ("[agent]\nretries = \nx = 1\n", "config.toml: malformed TOML at line 2, column 11: Invalid value"),
        ('a = "x', "config.toml: malformed TOML at the end of the document: Unterminated string"),
        ("[agent]\nretries = 1\nretries = 2\n", "config.toml: malformed TOML at line 3, column 12: Cannot overwrite"),
    ],
)
def test_malformed_toml(text: str, message: str) -> None:
    error = config_error(text)
    assert str(error).startswith(message)
    assert error.key is None


# --------------------------------------------------------------------------- immutability


def test_config_is_frozen() -> None:
    config = loads_config('[agent]\nenv = {A = "1"}\n[agents.web]\nretries = 1')
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.agent = AgentSettings()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tracker.kind = "local"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.agent.env["B"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.agents["web"]["retries"] = 2  # type: ignore[index]


# --------------------------------------------------------------------------- with_overrides


BASE = """
[agent]
preset = "codex"
timeout_seconds = 100
max_parallel = 2
env = {A = "1"}
[agents.web]
command = ["web-agent", "{prompt}"]
result_format = "claude-json"
timeout_seconds = 7
retries = 0
env = {B = "2"}
[agents.db]
preset = "claude"
[refresh]
enabled = true
[tests]
enabled = true
"""


def test_no_overrides_change_nothing() -> None:
    config = loads_config(BASE)
    again = config.with_overrides()
    assert again == config
    assert again.agent_for("web") == config.agent_for("web")


@pytest.mark.parametrize(
    ("overrides", "checks"),
    [
        ({"max_parallel": 8}, {"agent.max_parallel": 8, "web.max_parallel": 8, "agent.timeout_seconds": 100.0}),
        ({"max_parallel": 0}, {"agent.max_parallel": 0}),
        ({"group_timeout_seconds": 30}, {"agent.group_timeout_seconds": 30.0, "web.group_timeout_seconds": 30.0}),
        (
            {"timeout_seconds": 5},
            {"agent.timeout_seconds": 5.0, "web.timeout_seconds": 5.0, "db.timeout_seconds": 5.0, "web.retries": 0},
        ),
        ({"timeout_seconds": 0}, {"agent.timeout_seconds": 0.0, "web.timeout_seconds": 0.0}),
        ({"refresh_enabled": False}, {"refresh.enabled": False, "tests.enabled": True}),
        ({"tests_enabled": False}, {"tests.enabled": False, "refresh.enabled": True}),
        (
            {"agent_command": ["my-agent", "{prompt_file}"]},
            {
                "agent.command": ("my-agent", "{prompt_file}"),
                "agent.preset": "custom",
                "agent.result_format": "exit-code",
                "web.command": ("my-agent", "{prompt_file}"),
                "web.preset": "custom",
                "web.result_format": "exit-code",
                "web.timeout_seconds": 7.0,
                "web.retries": 0,
                "web.env": {"A": "1", "B": "2"},
                "db.command": ("my-agent", "{prompt_file}"),
                "db.preset": "custom",
                "db.result_format": "exit-code",
                "other.command": ("my-agent", "{prompt_file}"),
            },
        ),
    ],
)
def test_overrides_beat_the_config(overrides: dict[str, Any], checks: dict[str, object]) -> None:
    config = loads_config(BASE).with_overrides(**overrides)
    for path, expected in checks.items():
        scope, _, name = path.partition(".")
        if scope in ("agent", "refresh", "tests"):
            value = getattr(getattr(config, scope), name)
        else:
            value = getattr(config.agent_for(scope), name)
        assert value == expected, path


def test_agent_command_strips_only_command_preset_and_result_format() -> None:
    config = loads_config(BASE).with_overrides(agent_command=("x",))
    assert dict(config.agents["web"]) == {"timeout_seconds": 7.0, "retries": 0, "env": {"B": "2"}}
    assert dict(config.agents["db"]) == {}


def test_overrides_leave_the_original_alone() -> None:
    config = loads_config(BASE)
    config.with_overrides(agent_command=["x"], timeout_seconds=1, max_parallel=9)
    assert (config.agent.preset, config.agent.timeout_seconds, config.agent.max_parallel) == ("codex", 100.0, 2)
    assert config.agent_for("web").command == ("web-agent", "{prompt}")


def test_overrides_on_a_default_config() -> None:
    config = Config().with_overrides(agent_command=["x"], timeout_seconds=9)
    assert (config.agent.preset, config.agent.command, config.agent.result_format) == ("custom", ("x",), "exit-code")
    assert config.agent.timeout_seconds == 9.0


@pytest.mark.parametrize(
    ("overrides", "fragment", "key"),
    [
        ({"max_parallel": -1}, "command line: [agent].max_parallel must be an integer >= 0", "agent.max_parallel"),
        (
            {"group_timeout_seconds": -1},
            "command line: [agent].group_timeout_seconds must be a number >= 0",
            "agent.group_timeout_seconds",
        ),
        (
            {"timeout_seconds": float("nan")},
            "command line: [agent].timeout_seconds must be a number >= 0",
            "agent.timeout_seconds",
        ),
        ({"agent_command": "claude -p"}, "command line: [agent].command must be a list of strings", "agent.command"),
        ({"agent_command": []}, "command line: [agent].command must be a non-empty list", "agent.command"),
        ({"agent_command": ["a", ""]}, "command line: [agent].command must hold non-empty strings", "agent.command"),
        ({"refresh_enabled": "no"}, "command line: [refresh].enabled must be true or false", "refresh.enabled"),
        ({"tests_enabled": 0}, "command line: [tests].enabled must be true or false", "tests.enabled"),
    ],
)
def test_invalid_overrides(overrides: dict[str, Any], fragment: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(**overrides)
    assert str(info.value).startswith(fragment)
    assert info.value.key == key


# --------------------------------------------------------------------------- Config built in Python


def test_agent_for_on_a_config_built_in_python() -> None:
    config = Config(
        agent=AgentSettings(preset="codex", command=CODEX, result_format="codex-jsonl", retries=5),
        agents={"web": {"command": ("y",)}, "db": {"preset": "claude"}},
    )
    web, db = config.agent_for("web"), config.agent_for("db")
    assert (web.preset, web.command, web.result_format, web.retries) == ("codex", ("y",), "codex-jsonl", 5)
    assert (db.preset, db.command, db.result_format) == ("claude", CLAUDE, "claude-json")


def test_dataclass_defaults() -> None:
    assert RefreshConfig() == RefreshConfig(True, ("claude", "-p", "/flow:summary"), 120, 16384)
    assert TestsConfig() == TestsConfig(True, None, 1800)
    assert SkillsConfig() == SkillsConfig((), 120)
    assert TrackerConfig() == TrackerConfig("auto", ("bd",), "", 30, 2.0)
    assert AgentSettings() == Config().agent


# --------------------------------------------------------------------------- load_config


def write_config(root: Path, text: str) -> Path:
    path = root / CONFIG_RELATIVE_PATH
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_absent_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == Config()
    assert config.source is None


def test_file_in_the_repository(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[agent]\nmax_parallel = 3\n")
    config = load_config(str(tmp_path))
    assert config.agent.max_parallel == 3
    assert config.source == str(path)


def test_repo_root_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, "[agent]\nretries = 7\n")
    monkeypatch.chdir(tmp_path)
    assert load_config().agent.retries == 7


def test_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text('[tracker]\nkind = "local"\n', encoding="utf-8")
    write_config(tmp_path, '[tracker]\nkind = "beads"\n')
    config = load_config(tmp_path, path=path)
    assert (config.tracker.kind, config.source) == ("local", str(path))


def test_explicit_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, path=missing)
    assert str(info.value) == f"{missing}: config file not found"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"[agent]\nretries = \n", ": malformed TOML at line 2, column 11: Invalid value"),
        (b"[agent]\nretries = 1\n[agent]\n", ": malformed TOML at line 3, column 7: Cannot declare"),
        (b'[agent]\npreset = "\xff"\n', ": not UTF-8 text"),
        (b"[agent]\nretries = -1\n", ": [agent].retries must be an integer >= 0, got -1"),
        (b"[agnet]\n", ": unknown table [agnet] (did you mean [agent]?)"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = write_config(tmp_path, "")
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(str(path) + fragment)
    assert "\n" not in str(info.value)


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[agent]\ncommand = ["a", "{promt}"]', "[agent].command: unknown placeholder {promt}"),
        ('[agent]\ncommand = ["a", "{prompt"]', "[agent].command: stray '{'"),
        ('[agents.x]\ncommand = ["a", "{skill}"]', "[agents.x].command: unknown placeholder {skill}"),
        ('[skills]\ncommand = ["a", "{prompt}"]', "[skills].command: unknown placeholder {prompt}"),
    ],
)
def test_argv_templates_are_checked_at_load_time(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads_config(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_literal_braces_and_every_agent_placeholder_are_accepted() -> None:
    command = ["a", "{{json}}", "{prompt}", "{prompt_file}", "{task_id}", "{group_id}", "{subagent}", "{repo_root}", "{title}"]
    assert loads_config(f"[agent]\ncommand = {json.dumps(command)}").agent.command == tuple(command)
