"""Text rules of markers.py (DESIGN §3): group markers, relevant files, subagent detection. Pure, sync tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from maestro_parallel import markers
from maestro_parallel.markers import (
    DEFAULT_SUBAGENT,
    DEFAULT_SUBAGENT_TABLE,
    SEQUENTIAL,
    detect_groups,
    detect_subagent,
    extract_relevant_files,
    group_marker,
    marker_problem,
    marker_warnings,
    strip_markers,
    task_group,
)

ID_64 = "a" * 64
ID_65 = "a" * 65


def test_all_is_a_sorted_tuple_of_existing_public_names() -> None:
    assert isinstance(markers.__all__, tuple)
    assert len(set(markers.__all__)) == len(markers.__all__)
    for name in markers.__all__:
        assert hasattr(markers, name), name
    public = {
        name
        for name, value in vars(markers).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == markers.__name__
    }
    assert public <= set(markers.__all__)


# --- group_marker ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[P:Group-infra] set up CI", "infra"),
        ("[P:Group-auth-flow] login", "auth-flow"),
        ("[P:Group-TEST_CASE_2] cases", "TEST_CASE_2"),
        ("[P:Group-7] digit first", "7"),
        ("   \n\t[P:Group-lead] leading white space", "lead"),
        ("[P:Group-x]", "x"),
        ("[P:Group-x]no space after", "x"),
        (f"[P:Group-{ID_64}] longest", ID_64),
        # not at the start
        ("fix [P:Group-infra] later", None),
        ("- [P:Group-infra]", None),
        # malformed
        ("[P:Group-] empty", None),
        ("[P:Group-a.b] dot", None),
        (f"[P:Group-{ID_65}] too long", None),
        ("[P:Group-abc unterminated", None),
        ("[P:Group-_x] underscore first", None),
        ("[P:Group--x] hyphen first", None),
        ("[P:Group-a b] space", None),
        # case-sensitive
        ("[p:group-infra] lower", None),
        ("[P:GROUP-infra] upper", None),
        ("[P: Group-infra] space", None),
        ("", None),
        ("no marker", None),
    ],
)
def test_group_marker(text: str, expected: str | None) -> None:
    assert group_marker(text) == expected


# --- marker_problem -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[P:Group-] x", "empty group id"),
        ("[P:Group-a.b] x", "invalid group id"),
        ("  [P:Group-a.b] leading blanks", "invalid group id"),
        (f"[P:Group-{ID_65}] x", "65 characters"),
        ("[P:Group-abc", "unterminated"),
        ("[P:Group-abc\nmore text]", "unterminated"),
        ("[P:Group-_x] x", "invalid group id"),
        ("[p:group-abc] x", "case-sensitive"),
        ("[P: Group-abc] x", "case-sensitive"),
    ],
)
def test_marker_problem_explains_malformed_markers(text: str, needle: str) -> None:
    problem = marker_problem(text)
    assert problem is not None
    assert needle in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    "text",
    [
        "[P:Group-ok] fine",
        "  [P:Group-ok]",
        "plain text",
        "",
        "text then [P:Group-] later",  # only the start is looked at
        "[P] something",
        "[Group-x] not a marker",
    ],
)
def test_marker_problem_is_none_without_a_malformed_marker_at_the_start(text: str) -> None:
    assert marker_problem(text) is None


def test_marker_problem_shortens_a_huge_marker() -> None:
    problem = marker_problem("[P:Group-" + "x" * 5000 + "]")
    assert problem is not None and len(problem) < 200


# --- task_group -----------------------------------------------------------------------------------------------


@dataclass
class Task:
    id: str
    title: str | None = None
    description: str | None = None


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"description": "[P:Group-a] x"}, "a"),
        ({"title": "[P:Group-t] title only"}, "t"),
        ({"title": "[P:Group-t] t", "description": "no marker"}, "t"),
        ({"title": "[P:Group-t] t", "description": "[P:Group-d] d"}, "d"),
        ({"title": "[P:Group-t] t", "description": None}, "t"),
        ({"title": None, "description": None}, None),
        ({}, None),
        ({"title": "x [P:Group-t]", "description": "y [P:Group-d]"}, None),
        # a malformed description marker does not hide a valid title marker
        ({"title": "[P:Group-t] t", "description": "[P:Group-a.b] d"}, "t"),
        ({"title": "[P:Group-] t", "description": "d"}, None),
        ({"description": 42, "title": "[P:Group-t]"}, "t"),
        (Task("t-1", title="[P:Group-t] x"), "t"),
        (Task("t-1", title="[P:Group-t] x", description="[P:Group-d] y"), "d"),
        (Task("t-1"), None),
        (MappingProxyType({"description": "[P:Group-m] x"}), "m"),
        (object(), None),
    ],
)
def test_task_group(task: Any, expected: str | None) -> None:
    assert task_group(task) == expected


# --- detect_groups --------------------------------------------------------------------------------------------


def _ids(groups: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {key: [t["id"] if isinstance(t, dict) else t.id for t in value] for key, value in groups.items()}


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ([], {}),
        (
            [
                {"id": "1", "description": "[P:Group-b] x"},
                {"id": "2", "description": "plain"},
                {"id": "3", "description": "[P:Group-a] x"},
                {"id": "4", "description": "[P:Group-b] y"},
                {"id": "5", "description": "also plain"},
            ],
            {"b": ["1", "4"], "a": ["3"], SEQUENTIAL: ["2", "5"]},  # the sequential bucket comes last
        ),
        (
            [
                {"id": "1", "description": "[P:Group-auth-flow] a"},
                {"id": "2", "description": "[P:Group-TEST_CASE_2] b"},
            ],
            {"auth-flow": ["1"], "TEST_CASE_2": ["2"]},
        ),
        (
            [
                {"id": "1", "description": "[P:Group-]"},
                {"id": "2", "description": "[P:Group-a.b]"},
                {"id": "3", "description": f"[P:Group-{ID_65}]"},
                {"id": "4", "description": "[P:Group-abc"},
                {"id": "5", "description": "see [P:Group-x] later"},
            ],
            {SEQUENTIAL: ["1", "2", "3", "4", "5"]},
        ),
        (
            [
                {"id": "1", "title": "[P:Group-t] bead", "description": "no marker"},
                {"id": "2", "title": "[P:Group-t] bead", "description": "[P:Group-d] wins"},
                {"id": "3", "title": "[P:Group-t] bead"},
            ],
            {"t": ["1", "3"], "d": ["2"]},
        ),
        ([{"id": "1", "description": "[P:Group-g]"}, {"id": "2", "description": "[P:Group-g]"}], {"g": ["1", "2"]}),
    ],
)
def test_detect_groups(tasks: list[dict[str, Any]], expected: dict[str, list[str]]) -> None:
    result = detect_groups(tasks)
    assert _ids(result) == expected
    assert list(result) == list(expected)  # key order, not only content


def test_detect_groups_keeps_the_same_objects_and_accepts_any_iterable() -> None:
    tasks = [{"id": "1", "description": "[P:Group-g]"}, {"id": "2"}, Task("3", description="[P:Group-g] x")]
    result = detect_groups(iter(tasks))
    assert result["g"][0] is tasks[0]
    assert result["g"][1] is tasks[2]
    assert result[SEQUENTIAL][0] is tasks[1]


def test_sequential_key_absent_when_every_task_has_a_marker() -> None:
    result = detect_groups([{"id": "1", "description": "[P:Group-a]"}, {"id": "2", "title": "[P:Group-b]"}])
    assert SEQUENTIAL not in result


def test_detect_groups_is_fast_on_100k_tasks() -> None:
    tasks = [
        {"id": f"t-{i}", "title": f"Task {i}", "description": f"[P:Group-g{i % 97}] work" if i % 3 else "plain " * 20}
        for i in range(100_000)
    ]
    start = time.perf_counter()
    result = detect_groups(tasks)
    elapsed = time.perf_counter() - start
    assert sum(len(v) for v in result.values()) == 100_000
    assert elapsed < 5.0, elapsed  # generous here; the real target (< 0.5 s) is measured by the benchmarks


# --- marker_warnings ------------------------------------------------------------------------------------------


def test_marker_warnings() -> None:
    tasks: list[Any] = [
        {"id": "ok", "description": "[P:Group-fine] x"},
        {"id": "t-1", "description": "[P:Group-a.b] x"},
        {"task_id": "t-2", "title": "[P:Group-] x"},
        {"id": "t-3", "description": "[P:Group-abc", "title": f"[P:Group-{ID_65}]"},
        {"description": "[P:Group-] no id"},
        Task("t-5", description="[p:group-x] lower"),
        {"id": "t-6", "description": "mention [P:Group-] later"},
    ]
    warnings = marker_warnings(tasks)
    assert len(warnings) == 5
    assert warnings[0].startswith("task t-1: description: invalid group id")
    assert warnings[1].startswith("task t-2: title: empty group id")
    assert warnings[2].startswith("task t-3: description: unterminated") and "title: group id" in warnings[2]
    assert warnings[3].startswith("task #5 (no id): description: empty group id")
    assert warnings[4].startswith("task t-5: description: malformed group marker")
    assert all("\n" not in w for w in warnings)


def test_marker_warnings_empty_for_clean_tasks() -> None:
    assert marker_warnings([{"id": "1", "description": "[P:Group-a] x"}, {"id": "2", "title": "plain"}]) == []


# --- strip_markers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[P:Group-api] style the form", "style the form"),
        ("  [P:Group-api] x", "  x"),
        ("fix [P:Group-a] and [P:Group-b] now", "fix and now"),
        ("[P:Group-] empty", "empty"),
        ("[P:Group-a.b] dotted", "dotted"),
        ("[p:group-ui] lower", "lower"),
        ("[P:Group-api", ""),
        ("no markers [here]", "no markers [here]"),
        ("", ""),
    ],
)
def test_strip_markers(text: str, expected: str) -> None:
    assert strip_markers(text) == expected


# --- extract_relevant_files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        # extensions matched whole
        ("Update src/components/Login.tsx", ["src/components/Login.tsx"]),
        ("Bump package.json", ["package.json"]),
        ("Ship archive.tar.gz", ["archive.tar.gz"]),
        ("Add a.test.ts and src/app.min.js", ["a.test.ts", "src/app.min.js"]),
        ("Touch .github/workflows/ci.yml and .env.example", [".github/workflows/ci.yml", ".env.example"]),
        ("Edit @types/node/index.d.ts", ["@types/node/index.d.ts"]),
        ("Edit file1.py", ["file1.py"]),
        # field lines
        ("- file: src/a.py", ["src/a.py"]),
        ("- file: Makefile", ["Makefile"]),
        ("file: Dockerfile", ["Dockerfile"]),
        ("  * PATH: scripts/run", ["scripts/run"]),
        ("- Location: src/auth/", ["src/auth"]),
        ("- location: src/a.py:12", ["src/a.py"]),
        ("**File:** `Makefile`", ["Makefile"]),
        ("- files: Makefile, Dockerfile", ["Makefile", "Dockerfile"]),
        ("- file: Makefile (root)", ["Makefile"]),
        ("- location: the login page", []),
        ("- file: none", []),
        ("- path: N/A", []),
        ("- file: /etc/passwd", []),
        ("- file: ../secret", []),
        ("- path: ~/x", []),
        ("- file: C:\\x\\a.py", []),
        ("- file: https://x.io/a.js", []),
        ("- location: src/a.py and src/b.py", ["src/a.py", "src/b.py"]),
        ("profile: Makefile", []),
        # dropped
        ("Read /etc/passwd.txt", []),
        ("Read ~/notes.md and ~user/x.md", []),
        ("Fix ../outside.py and src/../../x.py and a/../b.py", []),
        ("See https://x.io/a.js and http://y.org/b.ts", []),
        ("See www.example.com/a.js", []),
        ("See <https://x.io/a.js>", []),
        ("See https://x.io/p?file=src/a.py", []),
        ("ftp://host/x.py file:///tmp/y.py", []),
        ("Windows C:\\src\\a.py and D:/src/b.py", []),
        ("Mail dev@example.com", []),
        ("Glob src/*.py and {a,b}.ts and a?.py and $HOME.py and a|b.py and <x.py>", []),
        ("Control a\x01b.py", []),
        # stripping
        (
            'Edit "src/a.py", `src/b.py`, \'c.py\', [d.py], (e.py), {f.py}.',
            ["src/a.py", "src/b.py", "c.py", "d.py", "e.py"],
        ),
        (
            "Is it src/a.py? Yes: src/b.py! And src/c.py; src/d.py: ok.",
            ["src/a.py", "src/b.py", "src/c.py", "src/d.py"],
        ),
        ("Error at src/a.py:12 and src/b.py:12:5, also src/c.py:7.", ["src/a.py", "src/b.py", "src/c.py"]),
        ("Open ./src/a.py and ././b.py", ["src/a.py", "b.py"]),
        ("Run tests/test_a.py::TestX::test_y", ["tests/test_a.py"]),
        ("See docs/guide.md#install", ["docs/guide.md"]),
        ("A **bold.py** name", ["bold.py"]),
        ("Link [src/a.py](src/a.py)", ["src/a.py"]),
        ("Run with --config=setup.cfg", ["setup.cfg"]),
        ("Normalize src//a.py and src/./b.py", ["src/a.py", "src/b.py"]),
        # not paths
        ("Python 3.11 and v1.2 and 1.0.0 and 2.5x", []),
        ("e.g. this, i.e. that, a.k.a. other, E.G. shout, (e.g., x) U.S.A.", []),
        ("Use Node.js with Vue.js", []),
        ("Call console.log(x) and os.path.join(a, b)", []),
        ("Files .gitignore .env 1.py _.py", []),
        ("Edit foo.7z", []),
        ("", []),
        # order and duplicates
        ("b.py a.py b.py ./a.py", ["b.py", "a.py"]),
        ("line one c.py\n- file: Makefile\nline three a.py c.py", ["c.py", "Makefile", "a.py"]),
        ("Edit a.c", ["a.c"]),
    ],
)
def test_extract_relevant_files(description: str, expected: list[str]) -> None:
    assert extract_relevant_files(description) == expected


def test_extract_relevant_files_never_returns_unsafe_paths() -> None:
    text = " ".join(
        ["/abs.py", "~/h.py", "../up.py", "a/../../b.py", "C:/w.py", "http://u/x.py", "//net/y.py", "ok/z.py"]
    )
    result = extract_relevant_files(text + "\n- path: ..\n- path: .\n- path: /\n")
    assert result == ["ok/z.py"]


# --- subagent table and detect_subagent -----------------------------------------------------------------------


def test_default_table_is_the_design_table() -> None:
    assert DEFAULT_SUBAGENT == "backend-architect"
    assert dict(DEFAULT_SUBAGENT_TABLE) == {
        "backend-architect": ("api", "backend", "server", "database", "endpoint", "service"),
        "frontend-developer": ("ui", "component", "frontend", "react", "vue", "css", "interface"),
        "test-automator": ("test", "tests", "testing", "pytest", "coverage", "spec", "jest", "playwright"),
        "database-architect": ("migration", "migrations", "schema", "sql", "query", "orm", "index"),
        "security-auditor": (
            "security", "auth", "authentication", "authorization", "audit", "vulnerability", "vulnerabilities",
        ),
    }
    assert list(DEFAULT_SUBAGENT_TABLE) == [
        "backend-architect", "frontend-developer", "test-automator", "database-architect", "security-auditor",
    ]
    with pytest.raises(TypeError):
        DEFAULT_SUBAGENT_TABLE["x"] = ()  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Add an API endpoint", "backend-architect"),
        ("Build the React component", "frontend-developer"),
        ("Write pytest tests for coverage", "test-automator"),
        ("Add a SQL migration for the schema", "database-architect"),
        ("Security audit of authentication", "security-auditor"),
        # no hit gives the first row
        ("Write the release notes", "backend-architect"),
        ("", "backend-architect"),
        # whole words only, case-insensitive
        ("build the guide", "backend-architect"),
        ("Polish the UI/UX", "frontend-developer"),
        ("TESTING", "test-automator"),
        ("attest the contest", "backend-architect"),
        ("the front-end looks off", "backend-architect"),  # hyphenation splits: "front", "end"
        ("the user_interface layer", "frontend-developer"),  # `_` splits too
        ("auth.", "security-auditor"),
        # distinct keywords: repeating one keyword does not add up
        ("test test test test, fix the css and react ui", "frontend-developer"),
        ("api api api sql query", "database-architect"),
        # ties go to the row listed first
        ("api and css", "backend-architect"),
        ("css and test", "frontend-developer"),
        ("sql and security", "database-architect"),
        ("security tests", "test-automator"),
        # the marker never counts as a keyword (each would win or tie-break the other way if it did)
        ("[P:Group-api] fix the css", "frontend-developer"),
        ("[P:Group-ui] write a migration", "database-architect"),
        ("[P:Group-security] reword the docs", "backend-architect"),
        ("[P:Group-api]\nfix the css", "frontend-developer"),  # title + description
        ("[P:Group-test] [P:Group-sql] style the interface", "frontend-developer"),
        ("[P:Group-api.v2] fix the css", "frontend-developer"),  # malformed markers too
        ("[p:group-api] fix the css", "frontend-developer"),
    ],
)
def test_detect_subagent_default_table(text: str, expected: str) -> None:
    assert detect_subagent(text) == expected


CUSTOM = {
    "docs-writer": ["docs", "readme", "changelog"],
    "frontend-developer": ["front-end", "user interface", "css"],
    "ops": ["ci", "docker", "CI", "Docker"],
}


@pytest.mark.parametrize(
    ("text", "table", "expected"),
    [
        ("fix the front-end", CUSTOM, "frontend-developer"),
        ("fix the front end", CUSTOM, "frontend-developer"),
        ("fix the frontend", CUSTOM, "docs-writer"),  # the phrase is not the single word
        ("the user interface", CUSTOM, "frontend-developer"),
        ("the user and the interface", CUSTOM, "docs-writer"),  # a phrase needs its words together
        ("update the README", CUSTOM, "docs-writer"),
        ("api endpoint server", CUSTOM, "docs-writer"),  # the replacement table is the whole table
        ("docs and ci", CUSTOM, "docs-writer"),  # tie: first row
        ("docker and ci for docs", CUSTOM, "ops"),  # duplicate keywords count once: 2 vs 1
        ("CI ci Ci", {"a": ["ci"], "b": ["ci", "CI"]}, "a"),  # both score 1 -> first row
        ("anything", {"only": ["x"]}, "only"),
        ("anything", {}, DEFAULT_SUBAGENT),
        ("api", {"solo": "api"}, "solo"),  # a bare string is one keyword
    ],
)
def test_detect_subagent_replacement_table(text: str, table: dict[str, Any], expected: str) -> None:
    assert detect_subagent(text, table) == expected


def test_detect_subagent_none_table_is_the_default() -> None:
    assert detect_subagent("react css", None) == "frontend-developer"


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("- path: `docs/api.md`.", ["docs/api.md"]),
        ("- file: 'src/a.py';", ["src/a.py"]),
        ('- location: "web/b.tsx"!', ["web/b.tsx"]),
    ],
)
def test_quoted_field_values_followed_by_punctuation(description: str, expected: list[str]) -> None:
    assert extract_relevant_files(description) == expected


def test_a_keyword_table_changed_between_calls_is_read_again() -> None:
    """Keyword rows are tokenized once per table, keyed by the table's contents, not by the object."""
    table: dict[str, list[str]] = {"docs-writer": ["readme"], "reviewer": ["review"]}
    assert detect_subagent("Review the README", table) == "docs-writer"  # a tie: the first row
    table["reviewer"].append("the README")  # a phrase, and now a second hit for the reviewer
    assert detect_subagent("Review the README", table) == "reviewer"
    table["skipped"] = "api"  # type: ignore[assignment]  # one string is one keyword
    assert detect_subagent("An API change", table) == "skipped"
