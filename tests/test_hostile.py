"""Hostile input: property tests (hypothesis) over every parser and text rule, and explicit cases end to end.

The properties: no exception other than the documented ones (``ValidationError``,
``ConfigError``, ``StateError``), every error message a single line, never a
path outside the repository (``extract_relevant_files``) or outside the groups
folder (``GroupStore``), and a journal that always decodes and folds.  The
explicit cases push shell metacharacters, newlines, NUL bytes, a megabyte of
description, unusual unicode and option-like values through the CLI and the
coordinator into real agents, and plant symlinks in the groups folder.

Examples are derandomized (the same ones on every run) and few enough that the
module runs in seconds; raise ``MAESTRO_HOSTILE_EXAMPLES`` to search longer.
"""

from __future__ import annotations

import json
import os
import string
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from helpers import task, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maestro_parallel import AsyncParallelCoordinator, TaskStatus
from maestro_parallel.cli import main
from maestro_parallel.config import Config, loads_config
from maestro_parallel.errors import ConfigError, StateError, ValidationError
from maestro_parallel.events import apply_event, decode_journal, encode_event, make_event, replay
from maestro_parallel.markers import (
    DEFAULT_SUBAGENT,
    DEFAULT_SUBAGENT_TABLE,
    SEQUENTIAL,
    detect_groups,
    detect_subagent,
    extract_relevant_files,
    is_valid_group_id,
    task_group,
)
from maestro_parallel.models import GroupMetadata
from maestro_parallel.state.store import GroupStore
from maestro_parallel.tasks import TaskRecord, loads_tasks, parse_tasks
from maestro_parallel.trackers import LocalTracker

EXAMPLES = int(os.environ.get("MAESTRO_HOSTILE_EXAMPLES", "250"))
PROPERTY = settings(
    deadline=None,
    max_examples=EXAMPLES,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- strategies

#: Strings that have broken tools like this one: shell syntax, paths that climb, markers,
#: option-like words, control characters, bidirectional overrides, combining marks, emoji.
NASTY = [
    "", " ", "\n", "\r\n", "\x00", "a\x00b", "\t", "\x1b[31mred\x1b[0m", "\u2028", "\x85",
    "$(touch pwned)", "`touch pwned`", "; rm -rf ~", "a && b || c", "'\"", "\\", "{prompt}", "{{", "}",
    "--help", "-rf", "-", "--", "../../etc/passwd", "/etc/passwd", "..", ".", "~/x.py", "C:\\x.py",
    "https://example.com/a.js", "file:///etc/x.py", "[P:Group-g]", "[P:Group-]", "[P:Group-a.b]",
    "[p:group-x]", "[P:Group-" + "x" * 65 + "]", "\u202eevil.py", "e\u0301\u0301\u0301", "🎉", "👩‍💻",
    "雪", "\ufeff", "\udcff", "a" * 300, "%s%n", "null", "true", "{}", "[]",
]
nasty_text = st.sampled_from(NASTY) | st.text(max_size=40) | st.builds(
    lambda parts: "".join(parts), st.lists(st.sampled_from(NASTY) | st.text(max_size=8), max_size=6)
)
json_scalar = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | nasty_text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)

TASK_KEYS = [
    "id", "task_id", "title", "description", "status", "priority", "dependencies", "metadata",
    "subagent_type", "fallback_agents", "applicable_skills", "issue_type", "ephemeral", "parent",
    "assignee", "labels",
]
TASK_VALUES = {
    "id": st.sampled_from(["a", "bd-a3f2", "proj-auth.1", "x:y"]) | nasty_text,
    "status": st.sampled_from(["open", "closed", "in_progress", "blocked", "tombstone"]) | json_value,
    "priority": st.integers(-2, 6) | json_value,
    "dependencies": st.lists(
        nasty_text | st.fixed_dictionaries({"id": nasty_text, "type": st.sampled_from(["blocks", "related", "x"])}),
        max_size=3,
    ) | json_value,
    "metadata": st.dictionaries(st.sampled_from(["subagent_type", "fallback_agents", "applicable_skills"]),
                                json_value, max_size=3) | json_value,
}


@st.composite
def task_objects(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(TASK_KEYS) | nasty_text, max_size=7, unique=True))
    obj = {key: draw(TASK_VALUES.get(key, json_value)) for key in keys}
    if draw(st.booleans()):
        obj.setdefault("id", draw(TASK_VALUES["id"]))
    return obj


tasks_documents = (
    st.lists(task_objects(), max_size=5)
    | st.fixed_dictionaries({"tasks": st.lists(task_objects(), max_size=5)})
    | st.fixed_dictionaries({"schema_version": st.just(1), "data": st.lists(task_objects(), max_size=4)})
    | json_value
)


def one_line(message: str) -> bool:
    return len(message.splitlines()) <= 1 and "\n" not in message and "\r" not in message


# --------------------------------------------------------------------------- tasks files


@PROPERTY
@given(document=tasks_documents, as_jsonl=st.booleans())
def test_the_tasks_loader_raises_only_validation_errors_of_one_line(document: Any, as_jsonl: bool) -> None:
    if as_jsonl and isinstance(document, list):
        text = "\n".join(json.dumps(item) for item in document)
    else:
        text = json.dumps(document)
    try:
        records = loads_tasks(text)
    except ValidationError as exc:
        assert one_line(str(exc)), str(exc)
        return
    assert all(isinstance(r, TaskRecord) for r in records)
    for record in records:
        assert record.task_id and ".." not in record.task_id and "/" not in record.task_id
        assert 0 <= record.metadata.priority <= 4


@PROPERTY
@given(text=st.text(max_size=300) | nasty_text)
def test_the_tasks_loader_survives_any_text(text: str) -> None:
    try:
        loads_tasks(text)
    except ValidationError as exc:
        assert one_line(str(exc)), str(exc)


@PROPERTY
@given(data=json_value | tasks_documents)
def test_parse_tasks_raises_only_validation_errors(data: Any) -> None:
    try:
        parse_tasks(data)
    except ValidationError as exc:
        assert one_line(str(exc)), str(exc)


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_documents_are_one_line_errors(depth: int) -> None:
    for text in ("[" * depth, '{"tasks": ' + "[" * depth, '{"id": "a", "x": ' + "[" * depth + "]" * depth + "}"):
        with pytest.raises(ValidationError) as caught:
            loads_tasks(text)
        assert one_line(str(caught.value))
    with pytest.raises(ConfigError) as config_error:
        loads_config("a = " + "[" * depth)
    assert one_line(str(config_error.value))


# --------------------------------------------------------------------------- markers and text rules


@PROPERTY
@given(items=st.lists(
    st.fixed_dictionaries({"description": nasty_text | json_value, "title": nasty_text | json_value})
    | json_value,
    max_size=8,
))
def test_detect_groups_keeps_every_task_once_under_a_valid_key(items: list[Any]) -> None:
    groups = detect_groups(items)
    assert sum(len(members) for members in groups.values()) == len(items)
    for key, members in groups.items():
        assert key == SEQUENTIAL or is_valid_group_id(key)
        assert members
        for member in members:
            assert task_group(member) == (None if key == SEQUENTIAL else key)
    if SEQUENTIAL in groups:
        assert list(groups)[-1] == SEQUENTIAL


@PROPERTY
@given(item=st.dictionaries(st.sampled_from(["description", "title"]) | nasty_text, nasty_text | json_value)
       | json_value)
def test_task_group_is_none_or_a_valid_group_id(item: Any) -> None:
    group = task_group(item)
    assert group is None or is_valid_group_id(group)


PATHISH = list("ab./\\:-_~@#?*$=,;()[]`'\"!<>|%") + ["..", "../", "/", "//", "://", "http", "www.", "- file: ",
                                                       "path: ", ".py", ".js", ".tsx", "src/", " ", "\n", "\x00"]
pathish_text = st.lists(st.sampled_from(PATHISH) | st.text(max_size=5) | st.sampled_from(NASTY), max_size=30).map(
    "".join
)


@PROPERTY
@given(text=pathish_text | nasty_text | st.text(max_size=200))
def test_extract_relevant_files_never_leaves_the_repository(text: str) -> None:
    paths = extract_relevant_files(text)
    assert len(paths) == len(set(paths))
    for path in paths:
        assert isinstance(path, str) and path
        assert not path.startswith(("/", "~")), path
        assert ".." not in path.split("/"), path
        assert "://" not in path and "\\" not in path, path
        assert "" not in path.split("/"), path
        assert not any(ord(c) < 0x20 or c == "\x7f" for c in path), path


SEGMENT = st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=8)


@PROPERTY
@given(parts=st.lists(SEGMENT, min_size=1, max_size=4), extension=st.sampled_from(["py", "tsx", "json", "md", "go"]),
       noise=nasty_text)
def test_a_plain_relative_path_is_found_among_hostile_words(parts: list[str], extension: str, noise: str) -> None:
    path = "/".join(parts) + "." + extension
    assert extract_relevant_files(f"- file: {path}") == [path]
    assert path in extract_relevant_files(f"{noise.replace(chr(10), ' ')} edit `{path}`, then run it")


@PROPERTY
@given(text=nasty_text | st.text(max_size=200) | json_value)
def test_detect_subagent_always_names_a_row(text: Any) -> None:
    assert detect_subagent(text) in DEFAULT_SUBAGENT_TABLE


@PROPERTY
@given(text=nasty_text, table=st.dictionaries(nasty_text, st.lists(nasty_text, max_size=4) | nasty_text, max_size=4))
def test_detect_subagent_with_any_table_names_one_of_its_rows(text: str, table: dict[str, Any]) -> None:
    chosen = detect_subagent(text, table)
    assert chosen in table if table else chosen == DEFAULT_SUBAGENT


# --------------------------------------------------------------------------- config


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '""'


CONFIG_KEYS = {
    "agent": ["preset", "command", "result_format", "timeout_seconds", "group_timeout_seconds", "grace_seconds",
              "max_parallel", "launch_stagger_seconds", "retries", "max_log_bytes", "env"],
    "refresh": ["enabled", "command", "timeout_seconds", "max_bytes"],
    "tests": ["enabled", "command", "timeout_seconds"],
    "skills": ["command", "timeout_seconds"],
    "tracker": ["kind", "bd_command", "actor", "call_timeout_seconds", "poll_interval_seconds"],
    "detection": ["backend-architect", "x"],
    "agents.backend-architect": ["command", "timeout_seconds", "env", "max_parallel"],
}
config_scalar = (
    st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["claude", "codex", "custom", "exit-code", "local", "beads", "auto", "{prompt}", "{nope}"])
    | nasty_text.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
)
config_value = config_scalar | st.lists(config_scalar, max_size=4) | st.dictionaries(
    st.text(alphabet=string.ascii_letters + "_=\x00", min_size=1, max_size=6), config_scalar, max_size=3
)


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    lines = []
    sections = st.sampled_from(sorted(CONFIG_KEYS)) | st.text(alphabet="abc.", min_size=1, max_size=6)
    for section in draw(st.lists(sections, max_size=4, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(CONFIG_KEYS.get(section, ["x"])) | st.text(
                alphabet=string.ascii_lowercase + "_", min_size=1, max_size=10), max_size=5, unique=True)):
            lines.append(f"{json.dumps(key)} = {toml_value(draw(config_value))}")
    return "\n".join(lines) + "\n"


@PROPERTY
@given(text=config_texts())
def test_the_config_loader_raises_only_config_errors_of_one_line(text: str) -> None:
    try:
        config = loads_config(text)
    except ConfigError as exc:
        assert one_line(str(exc)), str(exc)
        return
    assert isinstance(config, Config)


@PROPERTY
@given(text=st.text(max_size=300) | nasty_text)
def test_the_config_loader_survives_any_text(text: str) -> None:
    try:
        loads_config(text)
    except ConfigError as exc:
        assert one_line(str(exc)), str(exc)


# --------------------------------------------------------------------------- the journal

EVENT_NAMES = ["group_started", "refresh_finished", "phase_changed", "task_prepared", "warning", "task_blocked",
               "task_started", "task_retry", "task_finished", "tests_finished", "task_closed", "group_error",
               "group_finished", "nonsense"]
EVENT_FIELDS = ["task_id", "tasks", "status", "phase", "message", "error", "extra", "attempt", "pid", "pgid",
                "start_time", "skills_applied", "skills_missing", "prompt_path", "blockers", "ok", "created_at",
                "at", "exit_code", "reason", "delay_seconds"]
#: Values of the wrong type for every field, and the right ones often enough to reach deep states.
EVENT_VALUES = st.sampled_from([
    "a", "b", ["a", "b"], ["a", "a"], "completed", "failed", "in_progress", "ab", 5, -1, 0.5, True, None, [],
    [1, None], {}, {"task_id": 5}, {"status": "bogus", "warnings": 7, "attempts": "x"}, {"a": [1]},
]) | json_value
#: The fields of each event (events.py's schema), so that the examples reach the handlers' logic.
EVENT_SCHEMA = {
    "group_started": ["tasks", "created_at", "schema", "run", "resumed"],
    "refresh_finished": ["ok", "error", "log_path"],
    "phase_changed": ["phase"],
    "task_prepared": ["task_id", "subagent", "skills_applied", "skills_missing", "prompt_path"],
    "warning": ["message", "task_id"],
    "task_blocked": ["task_id", "blockers", "error"],
    "task_started": ["task_id", "attempt", "pid", "pgid", "start_time", "argv0"],
    "task_retry": ["task_id", "attempt", "delay_seconds", "reason"],
    "task_finished": ["task_id", "status", "exit_code", "error", "extra"],
    "tests_finished": ["status", "exit_code", "command", "error", "log_path"],
    "task_closed": ["task_id", "ok", "error"],
    "group_error": ["message"],
    "group_finished": ["status"],
    "nonsense": ["task_id", "status"],
}
event_dicts = st.sampled_from(sorted(EVENT_SCHEMA)).flatmap(
    lambda name: st.fixed_dictionaries(
        {"event": st.just(name)},
        optional={"at": EVENT_VALUES, **{f: EVENT_VALUES for f in EVENT_SCHEMA[name]},
                  **{f: EVENT_VALUES for f in EVENT_FIELDS[:3]}},
    )
)


@PROPERTY
@given(data=st.binary(max_size=400) | st.lists(event_dicts, max_size=6).map(
    lambda events: b"".join(encode_event(e) for e in events)))
def test_decode_journal_never_raises(data: bytes) -> None:
    events, skipped = decode_journal(data)
    assert skipped >= 0
    assert all(isinstance(e, dict) and isinstance(e.get("event"), str) for e in events)


@PROPERTY
@given(events=st.lists(event_dicts, min_size=1, max_size=6), torn=st.binary(max_size=60),
       garbage=st.binary(max_size=60))
def test_a_torn_or_corrupt_journal_keeps_every_complete_event(
    events: list[dict[str, Any]], torn: bytes, garbage: bytes
) -> None:
    good = b"".join(encode_event(e) for e in events)
    decoded, _ = decode_journal(good + torn.replace(b"\n", b""))
    assert decoded[: len(events)] == [json.loads(encode_event(e)) for e in events]
    # A corrupt line in the middle costs only itself (and is counted).
    middle = garbage.replace(b"\n", b"") + b"\n"
    decoded, skipped = decode_journal(good + middle + good)
    assert decoded[: len(events)] == decoded[-len(events):] == [json.loads(encode_event(e)) for e in events]
    assert skipped <= 1


@PROPERTY
@given(events=st.lists(event_dicts, max_size=12), start=st.sampled_from([[], ["a"], ["a", "b"]]))
def test_replaying_any_journal_never_raises_and_gives_loadable_metadata(
    events: list[dict[str, Any]], start: list[str]
) -> None:
    opening = [make_event("group_started", tasks=start, created_at="2026-01-01T00:00:00.000Z")] if start else []
    meta = replay("g", [*opening, *events])
    again = GroupMetadata.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert again.group_id == "g"
    assert all(isinstance(r.get("task_id"), str) for r in meta.results)
    assert len({r["task_id"] for r in meta.results}) == len(meta.results)
    assert all(r.get("status") in ("pending", "in_progress", "completed", "failed", "blocked") for r in meta.results)
    assert all(isinstance(r.get("warnings"), list) for r in meta.results)
    assert all(isinstance(e, str) for e in meta.errors)


def test_a_journal_line_nested_too_deeply_is_skipped_not_fatal() -> None:
    good = encode_event(make_event("group_started", tasks=["a"], created_at="2026-01-01T00:00:00.000Z"))
    events, skipped = decode_journal(good + b"[" * 200_000 + b"\n" + good)
    assert [e["event"] for e in events] == ["group_started", "group_started"] and skipped == 1


# --------------------------------------------------------------------------- paths


@PROPERTY
@given(group_id=nasty_text | st.text(max_size=70), name=nasty_text | st.text(max_size=40))
def test_no_group_id_or_task_id_becomes_a_path_outside_the_groups_folder(group_id: str, name: str) -> None:
    root = Path("/repo")
    try:
        store = GroupStore(root, group_id)
    except ValidationError as exc:
        assert one_line(str(exc))
        return
    assert store.dir.parent == root / ".flow/maestro/parallel_groups" and store.dir.name == group_id
    for make in (store.log_path, store.prompt_path):
        try:
            path = make(name)
        except ValidationError as exc:
            assert one_line(str(exc))
            continue
        assert path.parent in (store.logs_dir, store.prompts_dir) and "/" not in path.name
        assert os.path.normpath(path) == str(path)


# --------------------------------------------------------------------------- end to end: the CLI

#: An agent that records exactly what it was given: its argv and its prompt file.
ECHO_AGENT = r'''
import json, os, sys
prompt = open(os.environ["MAESTRO_PROMPT_FILE"], encoding="utf-8", newline="").read()
with open(os.path.join(os.environ["MAESTRO_REPO_ROOT"], "seen-" + os.environ["MAESTRO_TASK_ID"] + ".json"), "w",
          encoding="utf-8") as f:
    json.dump({"argv": sys.argv[1:], "prompt": prompt}, f)
print("seen")
'''


def echo_repo(repo: Path, template: str = '"{task_id}", "{title}"') -> None:
    (repo / "echo.py").write_text(ECHO_AGENT)
    write_config(repo, f"""
        [agent]
        command = [{json.dumps(sys.executable)}, "echo.py", {template}]
        timeout_seconds = 60
        grace_seconds = 1
        [refresh]
        enabled = false
        [tests]
        enabled = false
        [tracker]
        kind = "local"
    """)


def invoke(repo: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--repo-root", str(repo), "-q", *args])


def groups_folder(repo: Path) -> Path:
    return repo / ".flow" / "maestro" / "parallel_groups"


UNSAFE_IDS = ["a;rm -rf ~", "$(touch pwned)", "`touch pwned`", "a b", "a\nb", "a\x00b", "-rf", "--", "..", "a/../b",
              "/etc/passwd", "\u202eevil", "é", "x" * 129, "a..b", "", " a"]


@pytest.mark.parametrize("task_id", UNSAFE_IDS, ids=[repr(i)[:20] for i in UNSAFE_IDS])
def test_an_unsafe_task_id_is_one_line_exit_2_and_runs_and_writes_nothing(repo: Path, task_id: str) -> None:
    (repo / "tasks.json").write_text(json.dumps([task(task_id)]))
    for command in (["execute", "--group-id", "g"], ["detect"]):
        result = invoke(repo, *command, "--tasks-file", str(repo / "tasks.json"), "--json")
        assert result.exit_code == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert json.loads(result.stdout)["error"] == lines[0][len("Error: "):]
    assert not groups_folder(repo).exists()
    assert not (repo / "runs.jsonl").exists() and not (repo / "pwned").exists() and not Path("pwned").exists()


HOSTILE_TEXT = [
    "$(touch pwned) `touch pwned` ; rm -rf ~ && echo hi | cat > out.txt",
    "line one\nline two\r\nline three",
    "--help",
    "-rf /",
    "\u202e\u2066rtl\u2069 e\u0301\u0301 🎉👩‍💻 雪 \ufeff",
    '{prompt} {{title}} %s \\ "quoted" \'single\'',
]


@pytest.mark.parametrize("text", HOSTILE_TEXT, ids=["shell", "newlines", "option", "option2", "unicode", "braces"])
def test_hostile_titles_and_descriptions_reach_the_agent_as_plain_values(repo: Path, text: str) -> None:
    echo_repo(repo)
    tasks = [{"id": "a:b.c-1", "title": text, "description": f"[P:Group-g] {text}\n- file: src/app.py"}]
    (repo / "tasks.json").write_text(json.dumps(tasks))
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    seen = json.loads((repo / "seen-a:b.c-1.json").read_text(encoding="utf-8"))
    assert seen["argv"] == ["a:b.c-1", text]  # one argv element each, never split, never expanded
    assert text.strip() in seen["prompt"] and "src/app.py" in seen["prompt"]
    assert not (repo / "pwned").exists() and not (repo / "out.txt").exists()
    assert json.loads(result.stdout)["status"] == "completed"


def test_nul_bytes_are_dropped_from_the_prompt_and_refused_in_argv(repo: Path) -> None:
    echo_repo(repo)
    tasks = [
        {"id": "in-prompt", "title": "plain", "description": "[P:Group-g] before\u0000after"},
        {"id": "in-argv", "title": "bad\u0000title", "description": "[P:Group-g] x"},
    ]
    (repo / "tasks.json").write_text(json.dumps(tasks))
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    results = {r["task_id"]: r for r in json.loads(result.stdout)["results"]}
    assert results["in-prompt"]["status"] == "completed"
    assert "beforeafter" in json.loads((repo / "seen-in-prompt.json").read_text())["prompt"]
    assert results["in-argv"]["status"] == "failed"
    assert "holds a NUL byte" in results["in-argv"]["error"] and one_line(results["in-argv"]["error"])
    assert not (repo / "seen-in-argv.json").exists()


@pytest.mark.parametrize("template", ['"{task_id}", "{prompt}"', '"{task_id}", "{prompt_file}"'],
                         ids=["prompt-in-argv", "prompt-file"])
def test_a_megabyte_description(repo: Path, template: str) -> None:
    echo_repo(repo, template)
    description = "[P:Group-g] " + ("all work and no play " * 50_000)[:1_000_000]
    (repo / "tasks.json").write_text(json.dumps([{"id": "big", "title": "big", "description": description}]))
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert "Traceback" not in result.stderr
    [outcome] = json.loads(result.stdout)["results"]
    if "{prompt}" in template:
        assert result.exit_code == 1
        assert "too large for one argv element" in outcome["error"] and "{prompt_file}" in outcome["error"]
    else:
        assert result.exit_code == 0, outcome
        assert len(json.loads((repo / "seen-big.json").read_text())["prompt"]) > 1_000_000


def test_an_option_like_group_id_is_a_value_not_an_option(repo: Path) -> None:
    (repo / "tasks.json").write_text(json.dumps([task("a")]))
    result = invoke(repo, "execute", "--group-id", "--help", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert result.exit_code == 2
    assert "invalid group id '--help'" in json.loads(result.stdout)["error"]
    assert not groups_folder(repo).exists()


# --------------------------------------------------------------------------- symlinks planted in the groups folder

PLANTS = {
    ".lock": "file",
    "prompts": "folder",
    "prompts/a.md": "file",
    "logs/a.log": "file",
    "history": "folder",
}


@pytest.mark.parametrize("planted", sorted(PLANTS))
def test_a_symlink_planted_in_the_group_folder_is_never_written_through(
    repo: Path, tmp_path: Path, planted: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("precious")
    (repo / "tasks.json").write_text(json.dumps([task("a")]))
    if planted == "history":  # --restart sets the earlier state aside into history/
        assert invoke(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json")).exit_code == 0
    group = groups_folder(repo) / "g"
    link = group / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside if PLANTS[planted] == "folder" else outside / "target")
    before = sorted((p.name, p.read_bytes() if p.is_file() else b"") for p in outside.iterdir())

    extra = ["--restart"] if planted == "history" else []
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json", *extra)

    assert sorted((p.name, p.read_bytes() if p.is_file() else b"") for p in outside.iterdir()) == before
    assert "Traceback" not in result.stderr and result.exit_code in (0, 1), (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    if "error" in document:  # refused as a whole: one line naming the path
        assert len(result.stderr.strip().splitlines()) == 1 and planted.split("/")[0] in document["error"]
    else:  # or the task failed with the reason recorded
        assert document["status"] in ("completed", "failed")
        if document["status"] == "failed":
            assert all(one_line(e) for e in document["errors"])
    # The link is left alone, or replaced as a whole by an atomic rename (prompts): never written through.
    assert link.is_symlink() or (link.is_file() and not (outside / "target").samefile(link))


def test_a_tests_lock_planted_as_a_symlink_fails_the_tests_not_the_process(repo: Path, tmp_path: Path) -> None:
    write_config(repo, f"""
        [agent]
        command = [{json.dumps(sys.executable)}, "agent.py", "{{task_id}}"]
        [refresh]
        enabled = false
        [tests]
        command = [{json.dumps(sys.executable)}, "-c", "pass"]
        [tracker]
        kind = "local"
    """)
    outside = tmp_path / "outside-lock"
    outside.write_text("precious")
    (repo / ".flow" / "maestro" / "tests.lock").symlink_to(outside)
    (repo / "tasks.json").write_text(json.dumps([task("a")]))
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", str(repo / "tasks.json"), "--json")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert any("tests.lock" in e and "symlink" in e for e in document["errors"])
    assert outside.read_text() == "precious"


# --------------------------------------------------------------------------- end to end: the coordinator


async def test_the_coordinator_takes_hostile_text_in_task_objects(repo: Path) -> None:
    echo_repo(repo)
    tasks = [{"id": f"t{i}", "title": text, "description": text} for i, text in enumerate(HOSTILE_TEXT)]
    coordinator = AsyncParallelCoordinator(repo, tracker=LocalTracker(repo))
    meta = await coordinator.execute_parallel_group(tasks, "g")
    assert meta.status is TaskStatus.COMPLETED, meta.errors
    for i, text in enumerate(HOSTILE_TEXT):
        assert json.loads((repo / f"seen-t{i}.json").read_text(encoding="utf-8"))["argv"] == [f"t{i}", text]
    with pytest.raises(ValidationError):
        await coordinator.execute_parallel_group([{"id": "a\x00b"}], "g")
    with pytest.raises(ValidationError):
        await coordinator.execute_parallel_group([{"id": "a"}], "--help")


def test_a_corrupt_snapshot_nested_too_deeply_is_a_state_error(tmp_path: Path) -> None:
    store = GroupStore(tmp_path, "g")
    store.dir.mkdir(parents=True)
    store.snapshot_path.write_text("[" * 200_000)
    with pytest.raises(StateError) as caught:
        anyio.run(store.read_snapshot)
    assert one_line(str(caught.value))


def test_apply_event_ignores_an_event_about_an_unknown_task() -> None:
    meta = GroupMetadata(group_id="g")
    apply_event(meta, make_event("task_finished", task_id="ghost", status="failed", error="x"))
    assert meta.errors == [] and meta.results == []
