"""Read what a report needs from disk: a group's journal, snapshot and log tails; the plan record.

Readers only, and forgiving ones: each thing that cannot be read becomes one
line in the report's problems, and the rest is drawn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._paths import GROUPS_RELATIVE_PATH
from ..errors import StateError
from ..events import decode_journal
from ..markers import SEQUENTIAL
from ..models import GroupMetadata
from ..state.fs import read_nofollow, read_tail_nofollow
from ..state.planfile import read_plan_file
from .model import GroupView, PlanView, build_group_view, build_plan_view

__all__ = ("GROUPS_FOLDER", "group_folder", "load_group_view", "load_plan_view", "tail")

GROUPS_FOLDER = GROUPS_RELATIVE_PATH
TAIL_BYTES = 4096


def group_folder(repo_root: str | os.PathLike[str], group_id: str) -> Path:
    return Path(repo_root) / GROUPS_FOLDER / group_id


def tail(path: Path, limit: int = TAIL_BYTES) -> str | None:
    """The last ``limit`` bytes of a file as text (from a line start when it can), None when unreadable."""
    found = read_tail_nofollow(path, limit)  # a FIFO, device or symlink planted there reads as nothing
    if found is None:
        return None
    data, size = found
    if size > limit and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


def load_group_view(repo_root: str | os.PathLike[str], group_id: str) -> GroupView | None:
    """A group's report data; None when nothing is stored for the group."""
    folder = group_folder(repo_root, group_id)
    if not folder.is_dir() or folder.is_symlink():
        return None
    problems: list[str] = []
    events: list[dict[str, object]] = []
    journal = folder / "events.jsonl"
    try:
        found = read_nofollow(journal)
    except (OSError, StateError) as exc:
        problems.append(f"the journal (events.jsonl) could not be read: {getattr(exc, 'strerror', None) or exc}")
        found = b""
    if found is None:
        problems.append("the journal (events.jsonl) is missing: attempts before the last one are not shown")
    data = found or b""
    if data:
        events, skipped = decode_journal(data)
        if skipped:
            problems.append(
                f"{skipped} line{'s' * (skipped != 1)} of the journal could not be read and "
                f"{'were' if skipped != 1 else 'was'} left out"
            )
        if not data.endswith(b"\n"):
            problems.append(
                "the last line of the journal is incomplete (being written, or its writer died) and was left out"
            )
    meta: GroupMetadata | None = None
    snapshot = folder / "metadata.json"
    try:
        stored = read_nofollow(snapshot)
        if stored is None and not events:
            problems.append("metadata.json is missing too: nothing else is known")
        meta = GroupMetadata.from_dict(json.loads(stored)) if stored is not None else None
    except (OSError, StateError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(f"metadata.json could not be read ({reason}); drawn from the journal alone")
    tails: dict[str, str] = {}
    logs = folder / "logs"
    try:
        names = sorted(os.listdir(logs))
    except OSError:
        names = []
    for name in names:
        if name.endswith(".log"):
            text = tail(logs / name)
            if text is not None:
                tails[name[: -len(".log")]] = text
    return build_group_view(group_id, events, meta, problems, tails)


def load_plan_view(repo_root: str | os.PathLike[str]) -> PlanView | None:
    """The last plan run here with each of its groups; None when no plan ran here."""
    problems: list[str] = []
    try:
        document = read_plan_file(repo_root)
    except StateError as exc:
        return build_plan_view({"status": "unknown", "steps": []}, {}, [str(exc)])
    if document is None:
        return None
    groups: dict[str, GroupView] = {}
    for step in document.get("steps", []):
        group_id = step.get("group_id") if isinstance(step, dict) else None
        if not isinstance(group_id, str) or group_id in groups:
            continue
        view = load_group_view(repo_root, group_id)
        if view is None:
            if step.get("started_at"):
                problems.append(f"group {group_id} has no stored state")
            continue
        groups[group_id] = view
    if SEQUENTIAL in groups:  # keep the plan's order: the sequential tasks' group last
        groups[SEQUENTIAL] = groups.pop(SEQUENTIAL)
    return build_plan_view(document, groups, problems)
