"""Predicted conflicts from footprints, and the serialize order (pure functions)."""

from __future__ import annotations

import pytest

from maestro_parallel.isolation.conflicts import (
    conflict_warnings,
    footprint,
    normalize_path,
    paths_overlap,
    predict_conflicts,
    serialize_order,
)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [("src/a.py", "src/a.py"), ("./src//a.py", "src/a.py"), ("src/", "src/"), ("src/x/../", "src/"),
     ("/etc/passwd", None), ("../x.py", None), ("", None), (".", None), ("a\\b.py", "a/b.py")],
)  # fmt: skip
def test_normalize_path(raw: str, norm: str | None) -> None:
    assert normalize_path(raw) == norm


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [("a.py", "a.py", "a.py"), ("src/", "src/a.py", "src/a.py"), ("src/a.py", "src/", "src/a.py"),
     ("src/", "src/sub/", "src/sub/"), ("src/a.py", "src/ab.py", None), ("src", "src/a.py", None),
     ("lib/", "src/a.py", None)],
)  # fmt: skip
def test_paths_overlap(a: str, b: str, shared: str | None) -> None:
    assert paths_overlap(a, b) == shared


def test_overlaps_are_grouped_by_the_tasks_that_share_files() -> None:
    prints = [
        footprint("t-1", ["src/app.py"], ["docs/"]),
        footprint("t-2", ["src/app.py", "README.md"]),
        footprint("t-3", [], ["src/"]),
        footprint("t-4", ["docs/guide.md"]),
        footprint("t-5", ["other.py"]),
        footprint("t-6", []),
    ]
    assert predict_conflicts(prints) == [
        {"files": ["src/app.py"], "tasks": ["t-1", "t-2", "t-3"]},
        {"files": ["docs/guide.md"], "tasks": ["t-1", "t-4"]},
    ]


def test_no_footprint_no_conflict() -> None:
    assert predict_conflicts([footprint("a", []), footprint("b", [])]) == []
    assert serialize_order([footprint("a", []), footprint("b", [])]) == {"a": (), "b": ()}


def test_footprint_merges_relevant_and_metadata_files_without_duplicates() -> None:
    fp = footprint("t", ["a.py", "./a.py"], ["lib/", "../out.py", 3])  # type: ignore[list-item]
    assert fp.paths == ("a.py", "lib/")


def test_serialize_order_waits_for_earlier_by_priority_then_input() -> None:
    prints = [
        footprint("low", ["x.py"], priority=3),
        footprint("high", ["x.py"], priority=0),
        footprint("mid", ["x.py", "y.py"], priority=2),
        footprint("free", ["z.py"], priority=2),
        footprint("also-mid", ["y.py"], priority=2),
    ]
    assert serialize_order(prints) == {
        "low": ("high", "mid"),
        "high": (),
        "mid": ("high",),
        "free": (),
        "also-mid": ("mid",),
    }


def test_warnings_name_the_other_tasks_and_files() -> None:
    conflicts = [{"files": ["a.py"], "tasks": ["t-1", "t-2"]}]
    assert conflict_warnings(conflicts) == {  # type: ignore[arg-type]
        "t-1": ["may conflict with t-2 on a.py"],
        "t-2": ["may conflict with t-1 on a.py"],
    }
