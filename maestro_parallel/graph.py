"""A whole plan as a graph of steps (pure, no I/O).

A step is one parallel group (all its tasks at once) or one sequential task.
A step waits for the steps holding the tasks it depends on outside itself: a
group's tasks are closed together at its end, so depending on one task of a
group means waiting for the whole group.  Sequential steps are also chained
one after another (``after``: an order, not a dependency, so a failed
sequential task does not stop the next one).  A dependency on a task that is
neither in the plan nor done blocks its step, and what depends on it, while
the other steps run.

The graph answers what the scheduler (:mod:`maestro_parallel.scheduler`) and
``run --dry-run`` need: the steps, what each waits for, the critical path.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .markers import SEQUENTIAL, is_valid_group_id, task_group
from .tasks import TaskRecord

__all__ = (
    "CriticalPath",
    "PlanGraph",
    "PlanStep",
    "build_graph",
    "critical_path",
    "estimated_seconds",
    "render_text",
    "step_id_for",
)


def step_id_for(group_id: str, task_id: str) -> str:
    """The id of the step that runs ``task_id``: its group, or ``_sequential:<task id>``."""
    return f"{SEQUENTIAL}:{task_id}" if group_id == SEQUENTIAL else group_id


@dataclass(frozen=True)
class PlanStep:
    """One step: the group it executes under and its own tasks.

    ``waits_for``: steps that must complete first (dependencies);
    ``after``: steps that must merely have ended first (the sequential chain);
    ``missing``: dependencies that exist nowhere (the step can never start).
    """

    step_id: str
    group_id: str
    tasks: tuple[TaskRecord, ...] = field(repr=False)
    waits_for: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(record.task_id for record in self.tasks)

    @property
    def sequential(self) -> bool:
        return self.group_id == SEQUENTIAL

    @property
    def label(self) -> str:
        """How people see it: ``auth`` or ``s1 (sequential)``."""
        return f"{self.task_ids[0]} (sequential)" if self.sequential else self.step_id


@dataclass(frozen=True)
class CriticalPath:
    """The longest chain of steps and its length (seconds when durations are known, else steps)."""

    steps: tuple[str, ...]
    length: float
    unit: str  # "seconds" | "steps"


@dataclass(frozen=True)
class PlanGraph:
    """Steps in input order, each with what it waits for; ``blocked``: steps that can never start."""

    steps: tuple[PlanStep, ...]
    blocked: Mapping[str, str]  # step id -> why (a missing task, or a blocked step it waits for)

    def step(self, step_id: str) -> PlanStep:
        return self._index[step_id]

    @property
    def _index(self) -> dict[str, PlanStep]:
        return {step.step_id: step for step in self.steps}

    def dependents(self, step_id: str) -> list[str]:
        """Every step that waits, directly or through others, for ``step_id`` (not the chain)."""
        found: list[str] = []
        frontier = [step_id]
        while frontier:
            current = frontier.pop()
            for step in self.steps:
                if current in step.waits_for and step.step_id not in found:
                    found.append(step.step_id)
                    frontier.append(step.step_id)
        return found

    def to_dict(self, durations: Mapping[str, float] | None = None) -> dict[str, Any]:
        path = critical_path(self, durations)
        return {
            "steps": [
                {
                    "step": step.step_id,
                    "group_id": step.group_id,
                    "tasks": list(step.task_ids),
                    "waits_for": list(step.waits_for),
                    "after": list(step.after),
                    "missing": list(step.missing),
                    **({"blocked": self.blocked[step.step_id]} if step.step_id in self.blocked else {}),
                }
                for step in self.steps
            ],
            "critical_path": {"steps": list(path.steps), "length": path.length, "unit": path.unit},
        }


def _reserved_error(where: str) -> ValidationError:
    return ValidationError(
        f"{where}: group id {SEQUENTIAL!r} is reserved for the tasks without a group marker; rename the group"
    )


def build_graph(
    records: Sequence[TaskRecord],
    done: Iterable[str] = (),
    *,
    groups: Mapping[str, str] | None = None,
    outside: Mapping[str, str] | None = None,
) -> PlanGraph:
    """The plan of ``records`` (the tasks still to run) as steps; ``done``: ids already closed.

    ``groups`` maps task ids to group ids, for callers that assign groups
    themselves; otherwise the ``[P:Group-<id>]`` marker decides.  ``outside``
    names tasks that exist but take no part (id -> tracker status, e.g. a
    deferred bead), so a step waiting on one says so rather than "exists nowhere".  Raises
    :class:`ValidationError` for a group id that is invalid or is the reserved
    ``_sequential``, for duplicate task ids, and for a dependency cycle (named).
    """
    finished = set(done)
    group_of: dict[str, str] = {}
    order: list[str] = []
    members: dict[str, list[TaskRecord]] = {}
    for record in records:
        if record.task_id in group_of:
            raise ValidationError(f"duplicate task id {record.task_id!r} in the plan")
        if groups is not None and record.task_id in groups:
            group_id = groups[record.task_id]
            if group_id == SEQUENTIAL:
                raise _reserved_error(f"task {record.task_id}")
            if not is_valid_group_id(group_id):
                raise ValidationError(f"task {record.task_id}: invalid group id {group_id!r:.80}")
        else:
            group_id = task_group(record.metadata) or SEQUENTIAL
            if group_id == SEQUENTIAL and _reserved_marker(record):
                raise _reserved_error(f"task {record.task_id}")
        group_of[record.task_id] = group_id
        sid = step_id_for(group_id, record.task_id)
        if sid not in members:
            members[sid] = []
            order.append(sid)
        members[sid].append(record)

    cycle = _task_cycle(records)
    if cycle is not None:
        raise ValidationError("dependency cycle: " + " -> ".join(cycle))

    waits: dict[str, list[str]] = {sid: [] for sid in order}
    missing: dict[str, list[str]] = {sid: [] for sid in order}
    reasons: dict[tuple[str, str], tuple[str, str]] = {}  # (step, waited step) -> (task, dependency)
    for sid in order:
        for record in members[sid]:
            for dep in record.metadata.dependencies:
                if dep in group_of:
                    target = step_id_for(group_of[dep], dep)
                    if target != sid and target not in waits[sid]:
                        waits[sid].append(target)
                        reasons[(sid, target)] = (record.task_id, dep)
                elif dep not in finished and dep not in missing[sid]:
                    missing[sid].append(dep)

    step_cycle = _step_cycle(order, waits)
    if step_cycle is not None:
        links = [
            f"{reasons[(a, b)][0]} waits for {reasons[(a, b)][1]}"
            for a, b in zip(step_cycle, step_cycle[1:], strict=False)
        ]
        raise ValidationError(
            "dependency cycle between steps: " + " -> ".join(step_cycle) + " (" + "; ".join(links) + ")"
        )

    index = {sid: position for position, sid in enumerate(order)}
    topo = _topological(order, waits, index)
    chain = [sid for sid in topo if sid.startswith(SEQUENTIAL + ":")]
    after: dict[str, list[str]] = {sid: [] for sid in order}
    for before, later in zip(chain, chain[1:], strict=False):
        after[later].append(before)

    blocked: dict[str, str] = {}
    known = outside or {}
    for sid in topo:
        if missing[sid]:
            nowhere = [dep for dep in missing[sid] if dep not in known]
            elsewhere = [f"{dep} ({known[dep]})" for dep in missing[sid] if dep in known]
            reasons_text = ([f"waits for a task that exists nowhere: {', '.join(nowhere)}"] if nowhere else []) + (
                [f"waits for a task outside the plan: {', '.join(elsewhere)}"] if elsewhere else []
            )
            blocked[sid] = "; ".join(reasons_text)
        else:
            stuck = [w for w in waits[sid] if w in blocked]
            if stuck:
                blocked[sid] = "waits for blocked step " + ", ".join(stuck)

    steps = tuple(
        PlanStep(
            step_id=sid,
            group_id=SEQUENTIAL if sid.startswith(SEQUENTIAL + ":") else sid,
            tasks=tuple(members[sid]),
            waits_for=tuple(waits[sid]),
            after=tuple(after[sid]),
            missing=tuple(missing[sid]),
        )
        for sid in order
    )
    return PlanGraph(steps, {sid: blocked[sid] for sid in order if sid in blocked})


_RESERVED_MARKER = f"[P:Group-{SEQUENTIAL}]"


def _reserved_marker(record: TaskRecord) -> bool:
    """True when the task's description or title asks for the reserved group by marker."""
    texts = (record.metadata.description, record.metadata.title)
    return any(isinstance(text, str) and text.lstrip().startswith(_RESERVED_MARKER) for text in texts)


def _task_cycle(records: Sequence[TaskRecord]) -> list[str] | None:
    graph = {r.task_id: list(r.metadata.dependencies) for r in records}
    return _find_cycle(list(graph), graph)


def _step_cycle(order: list[str], waits: Mapping[str, list[str]]) -> list[str] | None:
    return _find_cycle(order, waits)


def _find_cycle(nodes: list[str], edges: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle as ``[a, b, ..., a]`` (iterative depth-first search), or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    for start in nodes:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, position = stack.pop()
            if position == 0:
                state[node] = 1
                path.append(node)
            targets = edges.get(node, [])
            if position < len(targets):
                stack.append((node, position + 1))
                target = targets[position]
                if target not in edges:
                    continue
                if state.get(target) == 1:
                    return path[path.index(target) :] + [target]
                if not state.get(target):
                    stack.append((target, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def _topological(order: list[str], waits: Mapping[str, list[str]], index: Mapping[str, int]) -> list[str]:
    """Kahn's order over an acyclic graph; among ready steps, input order first."""
    pending = {sid: len(waits[sid]) for sid in order}
    children: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        for target in waits[sid]:
            children[target].append(sid)
    ready = [(index[sid], sid) for sid in order if pending[sid] == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, sid = heapq.heappop(ready)
        out.append(sid)
        for child in children[sid]:
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(ready, (index[child], child))
    return out


def estimated_seconds(record: TaskRecord) -> float | None:
    """A task's expected duration from its tracker data (beads' ``estimated_minutes``), if any."""
    for key, scale in (("estimated_seconds", 1.0), ("estimated_minutes", 60.0)):
        value = record.raw.get(key) if isinstance(record.raw, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value) * scale
    return None


def critical_path(graph: PlanGraph, durations: Mapping[str, float] | None = None) -> CriticalPath:
    """The longest chain through dependencies and the sequential chain.

    With ``durations`` (task id -> seconds), a step lasts as long as its
    longest task; without, each step counts one.  Blocked steps never run and
    are left out.
    """
    timed = durations is not None
    length: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    runnable = [step for step in graph.steps if step.step_id not in graph.blocked]
    by_id = {step.step_id: step for step in runnable}
    order = _topological(
        [s.step_id for s in runnable],
        {s.step_id: [w for w in (*s.waits_for, *s.after) if w in by_id] for s in runnable},
        {s.step_id: i for i, s in enumerate(runnable)},
    )
    for sid in order:
        step = by_id[sid]
        own = max((durations.get(t, 0.0) for t in step.task_ids), default=0.0) if durations is not None else 1.0
        best, via = 0.0, None
        for target in (*step.waits_for, *step.after):
            if target in length and length[target] > best:
                best, via = length[target], target
        length[sid] = best + own
        previous[sid] = via
    if not length:
        return CriticalPath((), 0.0, "seconds" if timed else "steps")
    end = max(order, key=lambda sid: (length[sid], -order.index(sid)))
    chain: list[str] = []
    cursor: str | None = end
    while cursor is not None:
        chain.append(cursor)
        cursor = previous[cursor]
    return CriticalPath(tuple(reversed(chain)), length[end], "seconds" if timed else "steps")


def render_text(graph: PlanGraph, durations: Mapping[str, float] | None = None) -> list[str]:
    """The dry-run lines: each step, its tasks, what it waits for; then the critical path."""
    total = sum(len(step.tasks) for step in graph.steps)
    lines = [f"plan: {total} task{'s' * (total != 1)} in {len(graph.steps)} step{'s' * (len(graph.steps) != 1)}"]
    width = max((len(step.label) for step in graph.steps), default=0)
    label = {step.step_id: step.label for step in graph.steps}
    task_width = max((len(", ".join(step.task_ids)) for step in graph.steps), default=0)
    for number, step in enumerate(graph.steps, 1):
        parts = []
        if step.waits_for:
            parts.append("waits for " + ", ".join(label[w] for w in step.waits_for))
        only_after = [a for a in step.after if a not in step.waits_for]
        if only_after:
            parts.append("after " + ", ".join(label[a] for a in only_after) + " ends")
        note = "; ".join(parts) or "starts at once"
        lines.append(f"  {number}. {step.label:<{width}}  {', '.join(step.task_ids):<{task_width}}  [{note}]")
        if step.step_id in graph.blocked:
            lines.append(f"     never runs: {graph.blocked[step.step_id]}")
    path = critical_path(graph, durations)
    if path.steps:
        amount = f"{path.length:g} s" if path.unit == "seconds" else f"{path.length:g} step{'s' * (path.length != 1)}"
        lines.append(f"critical path ({amount}): " + " -> ".join(label[sid] for sid in path.steps))
    return lines
