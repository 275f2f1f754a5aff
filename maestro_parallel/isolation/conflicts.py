"""Predicted conflicts: which tasks of a group may edit the same files (pure: no I/O).

A task's footprint is its relevant files plus an optional ``files`` list in its
metadata; a path ending in ``/`` is a folder and covers everything below it.
Two tasks overlap when a path of one equals, or lies in a folder of, a path of
the other.  Each overlap is reported on the more specific of the two paths (a
file inside a folder is reported as the file), and the tasks that share the
same files are reported together::

    [{"files": ["src/app.py"], "tasks": ["t-1", "t-3"]}]

Under ``conflicts = "serialize"`` a task waits for every earlier task it
overlaps, earlier meaning higher priority (0 first), then input order.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

__all__ = (
    "Footprint",
    "Overlap",
    "conflict_warnings",
    "footprint",
    "normalize_path",
    "paths_overlap",
    "predict_conflicts",
    "serialize_order",
)


class Overlap(TypedDict):
    """Tasks whose footprints share ``files`` (in the group's metadata, ``conflicts``)."""

    files: list[str]
    tasks: list[str]


@dataclass(frozen=True)
class Footprint:
    """The paths a task is expected to touch (repository-relative; folders end with ``/``)."""

    task_id: str
    paths: tuple[str, ...]
    priority: int = 2


def normalize_path(path: str) -> str | None:
    """``./src//a.py`` -> ``src/a.py``; ``src/`` stays a folder; None for absolute or escaping paths."""
    text = path.strip().replace("\\", "/")
    if not text or text.startswith("/"):
        return None
    folder = text.endswith("/")
    norm = posixpath.normpath(text)
    if norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm + "/" if folder else norm


def footprint(
    task_id: str, relevant_files: Iterable[str], files: Iterable[str] = (), *, priority: int = 2
) -> Footprint:
    """A task's footprint: its relevant files, then its metadata ``files``, normalized, without duplicates."""
    seen: dict[str, None] = {}
    for path in (*relevant_files, *files):
        norm = normalize_path(path) if isinstance(path, str) else None
        if norm is not None:
            seen.setdefault(norm)
    return Footprint(task_id, tuple(seen), priority)


def paths_overlap(a: str, b: str) -> str | None:
    """The more specific of ``a`` and ``b`` when they overlap, else None."""
    if a == b:
        return a
    if a.endswith("/") and b.startswith(a):
        return b
    if b.endswith("/") and a.startswith(b):
        return a
    return None


def predict_conflicts(footprints: Sequence[Footprint]) -> list[Overlap]:
    """The overlaps among ``footprints`` (see the module docstring); [] when there are none.

    Entries come in the input order of their first task; files within an entry
    are sorted; tasks keep input order.
    """
    order = {fp.task_id: index for index, fp in enumerate(footprints)}
    touching: dict[str, set[str]] = {}
    for i, first in enumerate(footprints):
        for second in footprints[i + 1 :]:
            for a in first.paths:
                for b in second.paths:
                    shared = paths_overlap(a, b)
                    if shared is not None:
                        touching.setdefault(shared, set()).update((first.task_id, second.task_id))
    by_tasks: dict[tuple[str, ...], list[str]] = {}
    for path, tasks in touching.items():
        key = tuple(sorted(tasks, key=order.__getitem__))
        by_tasks.setdefault(key, []).append(path)
    entries = sorted(by_tasks.items(), key=lambda item: [order[t] for t in item[0]])
    return [Overlap(files=sorted(files), tasks=list(tasks)) for tasks, files in entries]


def serialize_order(
    footprints: Sequence[Footprint], conflicts: Sequence[Overlap] | None = None
) -> dict[str, tuple[str, ...]]:
    """For each task, the earlier tasks it must wait for under ``serialize`` (empty: launch at once).

    Earlier means a lower ``priority`` number, then input order.  ``conflicts``
    defaults to :func:`predict_conflicts` of ``footprints``.
    """
    if conflicts is None:
        conflicts = predict_conflicts(footprints)
    rank = {fp.task_id: (fp.priority, index) for index, fp in enumerate(footprints)}
    overlapping: dict[str, set[str]] = {fp.task_id: set() for fp in footprints}
    for entry in conflicts:
        for task in entry["tasks"]:
            overlapping.setdefault(task, set()).update(t for t in entry["tasks"] if t != task)
    waits: dict[str, tuple[str, ...]] = {}
    for task, others in overlapping.items():
        mine = rank.get(task, (99, len(rank)))
        earlier = [other for other in others if rank.get(other, (99, len(rank))) < mine]
        waits[task] = tuple(sorted(earlier, key=lambda t: rank.get(t, (99, len(rank)))))
    return waits


def conflict_warnings(conflicts: Sequence[Overlap]) -> Mapping[str, list[str]]:
    """The warning each involved task gets: ``may conflict with t-3 on src/app.py``."""
    warnings: dict[str, list[str]] = {}
    for entry in conflicts:
        files = ", ".join(entry["files"])
        for task in entry["tasks"]:
            others = ", ".join(t for t in entry["tasks"] if t != task)
            warnings.setdefault(task, []).append(f"may conflict with {others} on {files}")
    return warnings
