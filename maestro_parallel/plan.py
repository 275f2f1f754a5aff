"""Ordering a whole plan: every group and every sequential task, dependencies honoured (pure).

``maestro-parallel run`` works in steps.  A step executes one parallel group
(every task of it whose dependencies are done) or the reserved group
``_sequential`` (its ready tasks, one at a time).  Groups go first where nothing
says otherwise; a group whose tasks wait on others waits for them.  The
planner simulates success to print a whole plan (``--dry-run``); the runner
asks it for the next step again after every step, from what really happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ValidationError
from .markers import SEQUENTIAL, task_group
from .tasks import TaskRecord

__all__ = ("Plan", "Step", "find_cycle", "next_step", "plan_run")


@dataclass(frozen=True)
class Step:
    """One execution: ``group_id`` and the tasks of it expected to run now."""

    group_id: str
    runs: tuple[str, ...]
    tasks: tuple[TaskRecord, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, object]:
        return {"group_id": self.group_id, "tasks": list(self.runs)}


@dataclass(frozen=True)
class Plan:
    """Steps in order, and the tasks no step can reach (their blockers named)."""

    steps: tuple[Step, ...]
    unreachable: Mapping[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": [step.to_dict() for step in self.steps],
            "unreachable": {task_id: list(blockers) for task_id, blockers in self.unreachable.items()},
        }


def _group_of(record: TaskRecord) -> str:
    return task_group(record.metadata) or SEQUENTIAL


def find_cycle(records: Iterable[TaskRecord]) -> list[str] | None:
    """A dependency cycle among ``records`` as ``[a, b, ..., a]``, or None."""
    graph = {r.task_id: [d for d in r.metadata.dependencies] for r in records}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for start in graph:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            deps = graph.get(node, [])
            if index < len(deps):
                stack.append((node, index + 1))
                dep = deps[index]
                if dep not in graph:
                    continue
                if state.get(dep) == 1:
                    return path[path.index(dep) :] + [dep]
                if not state.get(dep):
                    stack.append((dep, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def next_step(
    records: Sequence[TaskRecord], done: Iterable[str], skip: Iterable[str] = ()
) -> Step | None:
    """The step to run next, or None when no remaining task can run.

    ``done`` holds the ids of closed tasks; ``skip`` the ids not to run again
    (failed, with ``--keep-going``).  Tasks run only when every blocking
    dependency is done; a parallel group goes before the sequential tasks.
    """
    finished = set(done)
    skipped = set(skip)
    by_group: dict[str, list[TaskRecord]] = {}
    for record in records:
        by_group.setdefault(_group_of(record), []).append(record)

    def ready(record: TaskRecord) -> bool:
        return (
            record.task_id not in finished
            and record.task_id not in skipped
            and all(dep in finished for dep in record.metadata.dependencies)
        )

    candidates = [g for g in by_group if g != SEQUENTIAL] + ([SEQUENTIAL] if SEQUENTIAL in by_group else [])
    for group_id in candidates:
        runs = tuple(r.task_id for r in by_group[group_id] if ready(r))
        if runs:
            # Every task of the group but the skipped ones: done ones keep their results in the
            # group's state, waiting ones are recorded blocked until a later step.
            members = tuple(r for r in by_group[group_id] if r.task_id not in skipped)
            return Step(group_id, runs, members)
    return None


def plan_run(records: Sequence[TaskRecord], done: Iterable[str] = ()) -> Plan:
    """The whole plan, assuming every step succeeds.

    Raises :class:`ValidationError` naming a dependency cycle.
    """
    remaining = [r for r in records if r.task_id not in set(done)]
    cycle = find_cycle(remaining)
    if cycle is not None:
        raise ValidationError("dependency cycle: " + " -> ".join(cycle))
    finished = set(done)
    steps: list[Step] = []
    while True:
        step = next_step(records, finished)
        if step is None:
            break
        steps.append(step)
        finished.update(step.runs)
    unreachable = {
        r.task_id: tuple(d for d in r.metadata.dependencies if d not in finished)
        for r in records
        if r.task_id not in finished
    }
    return Plan(tuple(steps), unreachable)
