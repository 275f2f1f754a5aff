"""The plan as a graph: steps, what each waits for, cycles, missing tasks, the critical path (pure)."""

from __future__ import annotations

import pytest

from maestro_parallel.errors import ValidationError
from maestro_parallel.graph import build_graph, critical_path, render_text
from maestro_parallel.tasks import coerce_task


def task(task_id: str, group: str | None = None, deps: tuple[str, ...] = (), **extra: object):
    description = f"[P:Group-{group}] work" if group else "work"
    return coerce_task({"id": task_id, "description": description, "dependencies": list(deps), **extra}, index=0)


# The issue's plan: A{a1 2 s, a2 6 s} -> B{b1 2 s}; C{c1 6 s}; s1 2 s -> s2 2 s.
ISSUE_PLAN = [
    task("a1", "A"),
    task("a2", "A"),
    task("b1", "B", ("a1",)),
    task("c1", "C"),
    task("s1"),
    task("s2", deps=("s1",)),
]
ISSUE_DURATIONS = {"a1": 2, "a2": 6, "b1": 2, "c1": 6, "s1": 2, "s2": 2}


def shape(graph):
    return {s.step_id: (s.task_ids, s.waits_for, s.after, s.missing) for s in graph.steps}


@pytest.mark.parametrize(
    ("records", "done", "expected"),
    [
        pytest.param(
            ISSUE_PLAN,
            (),
            {
                "A": (("a1", "a2"), (), (), ()),
                "B": (("b1",), ("A",), (), ()),  # waits for the whole group A, not only a1
                "C": (("c1",), (), (), ()),
                "_sequential:s1": (("s1",), (), (), ()),
                "_sequential:s2": (("s2",), ("_sequential:s1",), ("_sequential:s1",), ()),
            },
            id="issue-plan",
        ),
        pytest.param(
            [task("x", "G", ("closed-1",)), task("y", "G", ("x",))],
            ("closed-1",),
            {"G": (("x", "y"), (), (), ())},  # inside the group and done outside: nothing to wait for
            id="internal-and-done-deps",
        ),
        pytest.param(
            [task("s2", deps=("g1",)), task("s1"), task("g1", "G")],
            (),
            # s1 is ready first (input order among the ready), s2 waits for G: chain s1 -> s2
            {
                "_sequential:s2": (("s2",), ("G",), ("_sequential:s1",), ()),
                "_sequential:s1": (("s1",), (), (), ()),
                "G": (("g1",), (), (), ()),
            },
            id="sequential-chain-follows-dependencies-then-input",
        ),
        pytest.param(
            [task("p", "P", ("ghost",)), task("q", "Q", ("p",)), task("r", "R")],
            (),
            {"P": (("p",), (), (), ("ghost",)), "Q": (("q",), ("P",), (), ()), "R": (("r",), (), (), ())},
            id="missing-dependency",
        ),
    ],
)
def test_steps_and_what_they_wait_for(records, done, expected) -> None:
    assert shape(build_graph(records, done)) == expected


def test_a_missing_task_blocks_its_step_and_what_depends_on_it_only() -> None:
    graph = build_graph([task("p", "P", ("ghost",)), task("q", "Q", ("p",)), task("r", "R")])
    assert graph.blocked == {
        "P": "waits for a task that exists nowhere: ghost",
        "Q": "waits for blocked step P",
    }
    assert graph.dependents("P") == ["Q"]


def test_a_task_outside_the_plan_is_named_with_its_status() -> None:
    graph = build_graph([task("p", "P", ("later", "ghost"))], outside={"later": "deferred"})
    assert graph.blocked == {
        "P": "waits for a task that exists nowhere: ghost; waits for a task outside the plan: later (deferred)"
    }


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([task("a", deps=("b",)), task("b", deps=("a",))], "dependency cycle: a -> b -> a"),
        ([task("a", "G", ("a",))], "dependency cycle: a -> a"),
        (
            [task("a1", "A"), task("a2", "A", ("b2",)), task("b1", "B", ("a1",)), task("b2", "B")],
            "dependency cycle between steps: A -> B -> A (a2 waits for b2; b1 waits for a1)",
        ),
    ],
    ids=["tasks", "self", "through-groups"],
)
def test_cycles_are_named(records, message) -> None:
    with pytest.raises(ValidationError) as caught:
        build_graph(records)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"x": "_sequential"}, "task x: group id '_sequential' is reserved for the tasks without a group marker; rename the group"),
        ({"x": "../evil"}, "task x: invalid group id '../evil'"),
    ],
)
def test_reserved_or_invalid_group_ids_are_rejected(groups, message) -> None:
    with pytest.raises(ValidationError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.") + "$"):
        build_graph([task("x"), task("y")], groups=groups)


@pytest.mark.parametrize("field", ["description", "title"])
def test_a_marker_naming_the_reserved_group_is_refused(field: str) -> None:
    record = coerce_task({"id": "x", field: "  [P:Group-_sequential] work"}, index=0)
    with pytest.raises(ValidationError, match=r"^task x: group id '_sequential' is reserved for the tasks without a group marker; rename the group$"):
        build_graph([record])
    other = coerce_task({"id": "y", "description": "[P:Group-_other] work"}, index=0)
    assert [s.step_id for s in build_graph([other]).steps] == ["_sequential:y"]  # any other malformed marker: ignored


@pytest.mark.parametrize(
    ("records", "durations", "steps", "length"),
    [
        (ISSUE_PLAN, ISSUE_DURATIONS, ("A", "B"), 8.0),
        (ISSUE_PLAN, None, ("A", "B"), 2.0),
        ([task("s1"), task("s2"), task("s3")], {"s1": 1, "s2": 1, "s3": 1}, ("_sequential:s1", "_sequential:s2", "_sequential:s3"), 3.0),
        ([task("a", "A"), task("b", "B", ("a",)), task("c", "C", ("b",)), task("d", "D")], {"a": 1, "b": 1, "c": 1, "d": 2.5}, ("A", "B", "C"), 3.0),
        ([task("p", "P", ("ghost",)), task("r", "R")], {"p": 9, "r": 1}, ("R",), 1.0),  # a blocked step never runs
    ],
    ids=["issue", "by-steps", "sequential-chain", "longest-chain", "blocked-left-out"],
)
def test_critical_path(records, durations, steps, length) -> None:
    path = critical_path(build_graph(records), durations)
    assert (path.steps, path.length) == (steps, length)


def test_dry_run_rendering_text_and_json() -> None:
    graph = build_graph(ISSUE_PLAN)
    assert render_text(graph, ISSUE_DURATIONS) == [
        "plan: 6 tasks in 5 steps",
        "  1. A                a1, a2  [starts at once]",
        "  2. B                b1      [waits for A]",
        "  3. C                c1      [starts at once]",
        "  4. s1 (sequential)  s1      [starts at once]",
        "  5. s2 (sequential)  s2      [waits for s1 (sequential)]",
        "critical path (8 s): A -> B",
    ]
    document = graph.to_dict(ISSUE_DURATIONS)
    assert document["critical_path"] == {"steps": ["A", "B"], "length": 8.0, "unit": "seconds"}
    assert document["steps"][1] == {
        "step": "B", "group_id": "B", "tasks": ["b1"], "waits_for": ["A"], "after": [], "missing": [],
    }


def test_the_chain_alone_reads_as_an_order() -> None:
    lines = render_text(build_graph([task("s1"), task("s2"), task("g", "G")]))
    assert lines[2] == "  2. s2 (sequential)  s2  [after s1 (sequential) ends]"
    assert lines[-1] == "critical path (2 steps): s1 (sequential) -> s2 (sequential)"
