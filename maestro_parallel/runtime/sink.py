"""The event sink of a run: every change is an event, applied, journaled, then published.

An event is applied to the live metadata, queued for the journal (written at
once by the journal writer task, batched with whatever else happened
meanwhile), marks the snapshot dirty (rewritten coalesced by
:class:`~maestro_parallel.state.snapshot.SnapshotWriter`) and is handed to the
``publish`` callback the coordinator gave (its ``on_event`` listeners).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ..event_types import EventName
from ..events import apply_event, make_event
from ..models import GroupMetadata, GroupPhase
from ..state.snapshot import SnapshotWriter
from ..state.store import GroupStore

__all__ = ("EventSink", "Publish")

#: Where published events go: the coordinator's listeners.
Publish = Callable[[dict[str, Any]], None]


class EventSink:
    """Applies, journals, snapshots and publishes the events of one run."""

    def __init__(self, store: GroupStore, meta: GroupMetadata, publish: Publish) -> None:
        self.store = store
        self.meta = meta
        self.group_id = store.group_id
        self.snapshot = SnapshotWriter(store, meta)
        self.publish = publish
        self.persist_error: str | None = None
        self._journal_wake: anyio.Event | None = None  # set while the journal writer task runs

    async def emit(self, name: EventName, **fields: Any) -> dict[str, Any]:
        """Apply an event to the live state, journal it, and tell the listeners.

        While the journal writer runs, the event is queued and written by it at
        once; otherwise it is written before this returns.
        """
        event = make_event(name, **fields)
        apply_event(self.meta, event)
        self.store.queue_event(event)
        if self._journal_wake is not None:
            self._journal_wake.set()
        else:
            await self.flush_journal()
        self.snapshot.mark_dirty()
        self.publish(dict(event, group_id=self.group_id))
        return event

    async def flush_journal(self) -> None:
        """Write every queued event (shielded: a write in flight is never abandoned half-way)."""
        with anyio.CancelScope(shield=True):
            try:
                await self.store.flush_events()
            except OSError as exc:
                self.persist_failed(exc)

    def persist_failed(self, exc: BaseException) -> None:
        """Remember the first failure to write state: the run ends failed with it."""
        if self.persist_error is None:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.persist_error = f"could not write group state: {detail}"

    async def flush(self) -> None:
        """Write the snapshot now."""
        try:
            await self.snapshot.flush()
        except OSError as exc:
            self.persist_failed(exc)

    async def phase(self, phase: GroupPhase) -> None:
        await self.emit("phase_changed", phase=phase.value)
        await self.flush_journal()  # the journal never lags behind the snapshot at a transition
        await self.flush()

    async def run_journal_writer(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Write queued events as they come; runs until cancelled (start it with ``tg.start``)."""
        self._journal_wake = anyio.Event()
        task_status.started()
        await anyio.lowlevel.checkpoint()
        while True:
            await self._journal_wake.wait()
            self._journal_wake = anyio.Event()
            await self.flush_journal()

    def stop_journal_writer(self) -> None:
        """The writer is gone: :meth:`emit` writes for itself from now on."""
        self._journal_wake = None

    async def run_snapshot_writer(self) -> None:
        """Rewrite the snapshot when it changed enough; runs until cancelled."""
        try:
            await self.snapshot.run()
        except OSError as exc:
            self.persist_failed(exc)
