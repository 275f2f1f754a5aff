"""Recovery: what a dead coordinator left running is stopped and recorded as interrupted.

A task whose ``task_started`` is in the journal without a ``task_finished``
was running when its coordinator died; its agent lives on in its own session.
Strays that the journal cannot name (an agent spawned as its coordinator died,
a daemon that left its agent's process group) are found by their environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from ..models import GroupMetadata, TaskStatus
from ..state.store import GroupStore
from .ownership import agent_verdict
from .procfs import read_stat
from .sink import EventSink
from .stopping import stop_process_group, stop_processes_by_environment

__all__ = ("open_task_starts", "recover_orphans", "stop_strays")


def open_task_starts(events: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The ``task_started`` events of the journal that no ``task_finished`` followed, by task id."""
    open_starts: dict[str, Mapping[str, Any]] = {}
    for event in events:
        name, task_id = event.get("event"), event.get("task_id")
        if not isinstance(task_id, str):
            continue
        if name == "task_started":
            open_starts[task_id] = event
        elif name == "task_finished":
            open_starts.pop(task_id, None)
    return open_starts


async def recover_orphans(
    sink: EventSink, events: Sequence[Mapping[str, Any]], *, repo_root: Path, grace: float
) -> list[str]:
    """Stop what a dead coordinator left running and record those tasks as interrupted.

    The journal is a file an agent can write, so a process group is stopped
    (TERM, grace, KILL) only once :func:`~.ownership.agent_verdict` proves its
    leader an agent of this group (its environment, process group and start
    time); a live process that is not is left alone, with a warning naming it.
    Returns the ids of the tasks so recorded.
    """
    open_starts = open_task_starts(events)
    for task_id, started in open_starts.items():
        pid, pgid, start_time = started.get("pid"), started.get("pgid"), started.get("start_time")
        note = "its coordinator died"
        verdict = agent_verdict(pid, pgid, start_time, repo_root=repo_root, group_id=sink.group_id)
        if verdict and verdict.pgid is not None:
            await stop_process_group(verdict.pgid, grace)
            note = f"its coordinator died; process group {verdict.pgid} was stopped"
        elif isinstance(pid, int) and pid > 0 and read_stat(pid) is not None:
            note = f"its coordinator died; not stopping pid {pid}: {verdict.reason}"
            await sink.emit("warning", task_id=task_id, message=f"task {task_id}: {note}")
        await sink.emit(
            "task_finished",
            task_id=task_id,
            status=TaskStatus.FAILED.value,
            exit_code=None,
            error="interrupted",
            extra={"recovery": note},
        )
    if events:
        await stop_strays(sink, "an earlier run", repo_root=repo_root, grace=grace)
    return list(open_starts)


async def stop_strays(sink: EventSink, whose: str, *, repo_root: Path, grace: float) -> None:
    """Stop what the journal cannot name but the environment can (see :func:`stop_processes_by_environment`).

    An agent spawned in the instant before its coordinator died (its
    ``task_started`` never written) and a daemon that left its agent's process
    group (``setsid``) both still carry ``MAESTRO_REPO_ROOT`` and
    ``MAESTRO_GROUP_ID``; no other coordinator can run this group meanwhile
    (the caller holds its lock).
    """
    environment = {"MAESTRO_REPO_ROOT": str(repo_root), "MAESTRO_GROUP_ID": sink.group_id}
    stopped = await stop_processes_by_environment(environment, grace)
    if stopped:
        await sink.emit(
            "warning",
            task_id=None,
            message=(
                f"stopped {len(stopped)} process group(s) left by {whose} outside the agents' own process groups "
                f"(a daemon, or an agent started as its coordinator died): {', '.join(map(str, stopped))}"
            ),
        )


async def close_out_dead_run(
    meta: GroupMetadata, store: GroupStore, sink: EventSink, *, repo_root: Path, grace: float
) -> list[str]:
    """Close out a run whose coordinator died: stop its orphans, fail what was running, end the group.

    Returns the ids of the tasks recorded as interrupted.
    """
    if meta.status not in (TaskStatus.IN_PROGRESS, TaskStatus.PENDING):
        await store.sync_snapshot(meta)  # its coordinator may have died before the last snapshot
        return []
    try:
        events, _ = await store.read_events()
        with anyio.CancelScope(shield=True):
            recovered = await recover_orphans(sink, events, repo_root=repo_root, grace=grace)
            for result in meta.results:
                if result.get("status") in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
                    recovered.append(result["task_id"])
                    await sink.emit(
                        "task_finished",
                        task_id=result["task_id"],
                        status=TaskStatus.FAILED.value,
                        exit_code=None,
                        error="interrupted",
                    )
            await sink.emit("group_error", message="its coordinator died; the run was recovered")
            await sink.emit("group_finished", status=TaskStatus.FAILED.value)
            await sink.flush()
    finally:
        await store.close()
    return recovered
