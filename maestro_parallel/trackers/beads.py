"""BeadsTracker: the tracker over the real beads CLI (``bd``), always with ``--json``.

Every call is a fresh ``bd`` process (hundreds of milliseconds, seconds against a
remote server), so every method batches: one ``bd show A B C`` per poll tick, one
``bd update A B --claim`` for all ready tasks, one ``bd close A B --reason R``.
Each process runs with stdin from ``/dev/null``, the repository as its working
folder, ``BEADS_DIR`` when known, the actor named, its own process group and a
per-call timeout after which the whole group is stopped.

bd's output is trusted only as far as it parses: ``warning:`` lines are dropped,
the JSON may be a plain array, an envelope (``{"data": ...}``, ``{"items": [...]}``)
or a lone object, and anything else becomes a one-line :class:`TrackerError`
carrying bd's own stderr.  Multi-id writes may succeed in part (exit 0, or exit 1
with a ``failed`` list on stderr, depending on the bd version), so every write
checks which ids came back.  Parsing and decisions are plain functions below;
the class only runs processes.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from .._text import one_line
from ..config import TrackerConfig
from ..errors import TrackerError, ValidationError
from ..runtime.stopping import describe_returncode, stop_process_group
from ..tasks import DONE_STATUSES, TaskRecord, parse_task
from .bd_output import (
    MESSAGE_LIMIT,
    BdOutputError,
    by_id,
    decode_payload,
    error_of,
    failures_in_stderr,
    holder_in,
    only_missing_ids,
    stderr_line,
    unwrap_issues,
)
from .local import blockers_of

__all__ = (
    "BdOutputError",
    "BdResult",
    "BeadsTracker",
    "claim_answer",
    "close_answer",
    "decide_blockers",
    "decode_payload",
    "default_actor",
    "failures_in_stderr",
    "holder_in",
    "only_missing_ids",
    "select_beads",
    "stderr_line",
    "unwrap_issues",
)

#: SIGTERM to a timed-out bd's process group, this long, then SIGKILL.
_STOP_GRACE_SECONDS = 1.0
#: How long output still arriving through a pipe is read after bd itself exited.
_DRAIN_SECONDS = 1.0


def default_actor() -> str:
    """``maestro-parallel@<hostname>``: distinct per machine, so coordinators exclude each other."""
    return f"maestro-parallel@{socket.gethostname()}"



# --------------------------------------------------------------------------- decisions


def _takes_part(record: TaskRecord, actor: str) -> bool:
    """Open work, or work already claimed by this actor; never an epic or a wisp."""
    if record.issue_type == "epic" or record.ephemeral:
        return False
    if record.tracker_status == "open":
        return True
    return record.tracker_status == "in_progress" and record.assignee == actor


def select_beads(
    items: Sequence[object], actor: str, *, source: str = "bd list"
) -> tuple[list[TaskRecord], dict[str, TaskRecord], list[str]]:
    """Parse ``bd list`` items one by one: (the records to return, every parsed record, warnings).

    Returned are the beads that take part (open ones, and in-progress ones
    claimed by ``actor``) and the done ones (they satisfy dependencies).  Epics,
    wisps, other statuses and other actors' in-progress beads would run if
    returned, so they are kept only in the second mapping, for readiness.  A
    bead that does not parse (an unsafe id, say) is skipped with a warning.
    """
    kept: list[TaskRecord] = []
    known: dict[str, TaskRecord] = {}
    warnings: list[str] = []
    for index, item in enumerate(items):
        try:
            record = parse_task(item, index=index, source=source)
        except ValidationError as exc:
            warnings.append(f"skipped a bead: {exc}")
            continue
        if record.task_id in known:
            warnings.append(f"skipped a bead: {source}: id {record.task_id!r} appears twice")
            continue
        known[record.task_id] = record
        if record.done or _takes_part(record, actor):
            kept.append(record)
    return kept, known, warnings


def _not_ready_reason(record: TaskRecord, known: Mapping[str, TaskRecord]) -> str:
    """A blocker to report when bd does not list a task as ready and names nothing."""
    if record.task_id not in known:
        return "not in beads"
    defer = record.raw.get("defer_until") if isinstance(record.raw, Mapping) else None
    if isinstance(defer, str) and defer:
        return f"deferred until {defer}"
    return "not ready according to bd ready"


def decide_blockers(
    tasks: Sequence[TaskRecord],
    ready_ids: set[str],
    named: Mapping[str, Sequence[str]],
    known: Mapping[str, TaskRecord],
    actor: str,
    named_failed: str | None = None,
) -> dict[str, list[str]]:
    """Each task's blockers, with ``bd ready`` as the authority.

    A task ``bd ready`` lists is ready; one it does not list is blocked by what
    ``bd blocked`` names, else by its own open blocking dependencies or blocked
    parent.  ``bd ready`` leaves in-progress beads out, so those claimed by
    ``actor`` are judged by their dependencies alone.  A dependency unknown to
    beads blocks in every case (fail closed).

    ``named_failed`` is why ``bd blocked`` failed, when it did: it only names
    blockers, so the ready tasks still run, and a task it would have explained
    is blocked by "blockers unknown (bd blocked failed: ...)".
    """
    merged = dict(known)
    for record in tasks:
        merged.setdefault(record.task_id, record)
    closed = {task_id for task_id, record in merged.items() if record.done}
    own = blockers_of(tasks, merged, closed)
    answer: dict[str, list[str]] = {}
    for record in tasks:
        task_id = record.task_id
        unknown = [
            dep for dep in record.metadata.dependencies
            # bd resolves external:<project>:<capability> references itself; its ready verdict stands.
            if dep not in known and not (task_id in ready_ids and dep.startswith("external:"))
        ]
        ours = record.tracker_status == "in_progress" and record.assignee == actor
        if task_id in ready_ids:
            blockers: list[str] = []
        elif named.get(task_id):
            blockers = list(dict.fromkeys(named[task_id]))
        elif ours:
            blockers = list(own[task_id])
        elif named_failed is not None:
            blockers = [f"blockers unknown (bd blocked failed: {named_failed})"]
        else:
            blockers = list(own[task_id]) or [_not_ready_reason(record, known)]
        blockers.extend(dep for dep in unknown if dep not in blockers)
        answer[task_id] = blockers
    return answer


def claim_answer(
    task_ids: Sequence[str],
    returned: Mapping[str, Mapping[str, Any]],
    failures: Mapping[str, str],
    general: str,
    actor: str,
) -> dict[str, str | None]:
    """None for each id this actor now holds; else why not (``held by alice`` when another actor does)."""
    answer: dict[str, str | None] = {}
    for task_id in task_ids:
        issue = returned.get(task_id)
        if issue is not None:
            assignee = issue.get("assignee")
            if isinstance(assignee, str) and assignee and assignee != actor:
                answer[task_id] = f"held by {assignee}"
            else:
                answer[task_id] = None
            continue
        reason = failures.get(task_id) or general or "bd did not return it"
        holder = holder_in(reason)
        if holder == actor:
            answer[task_id] = None  # already ours: an older bd refuses the re-claim
        elif holder is not None:
            answer[task_id] = f"held by {holder}"
        else:
            answer[task_id] = reason
    return answer


def close_answer(
    task_ids: Sequence[str],
    returned: Mapping[str, Mapping[str, Any]],
    failures: Mapping[str, str],
    general: str,
) -> dict[str, str | None]:
    """None for each id bd returned closed; else bd's reason."""
    answer: dict[str, str | None] = {}
    for task_id in task_ids:
        issue = returned.get(task_id)
        status = issue.get("status") if issue is not None else None
        if issue is not None and (status is None or status in DONE_STATUSES):
            answer[task_id] = None
        elif issue is not None:
            answer[task_id] = f"bd left it {status}"
        else:
            answer[task_id] = failures.get(task_id) or general or "bd did not confirm the close"
    return answer


# --------------------------------------------------------------------------- running bd


@dataclass(frozen=True)
class BdResult:
    """One finished ``bd`` call."""

    command: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def failure(self, problem: str) -> TrackerError:
        """A one-line error about this call, carrying bd's stderr."""
        detail = stderr_line(self.stderr)
        message = f"bd {self.command} {problem}" + (f": {detail}" if detail else "")
        return TrackerError(one_line(message, 2 * MESSAGE_LIMIT), stderr=detail)


async def _communicate(process: anyio.abc.Process) -> tuple[bytes, bytes]:
    """All of stdout and stderr, until bd exits (plus a bounded drain for a child holding the pipes)."""
    out, err = bytearray(), bytearray()
    finished = [anyio.Event(), anyio.Event()]

    async def drain(stream: anyio.abc.ByteReceiveStream | None, sink: bytearray, done: anyio.Event) -> None:
        try:
            if stream is not None:
                async for chunk in stream:
                    sink.extend(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, process.stdout, out, finished[0])
        tg.start_soon(drain, process.stderr, err, finished[1])
        await process.wait()
        with anyio.move_on_after(_DRAIN_SECONDS):
            for event in finished:
                await event.wait()
        tg.cancel_scope.cancel()
    return bytes(out), bytes(err)


class BeadsTracker:
    """Tasks, readiness, claims and closes from beads through the ``bd`` CLI.

    :param repo_root: the repository; bd runs there.
    :param config: ``[tracker]``: the bd command, the actor, the per-call timeout.
    :param beads_dir: the ``.beads`` folder (default: ``<repo_root>/.beads`` when it exists),
        passed to bd as ``BEADS_DIR``.
    """

    name = "beads"

    def __init__(
        self,
        repo_root: str | os.PathLike[str],
        *,
        config: TrackerConfig = TrackerConfig(),
        beads_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.repo_root = Path(repo_root)
        self.config = config
        self.actor = config.actor or default_actor()
        if beads_dir is not None:
            self.beads_dir: Path | None = Path(beads_dir)
        else:
            found = self.repo_root / ".beads"
            self.beads_dir = found if found.is_dir() else None
        #: Beads skipped while loading (unsafe ids, malformed fields), one line each.
        self.warnings: list[str] = []
        self._known: dict[str, TaskRecord] = {}
        self._lock: anyio.lowlevel.RunVar[anyio.Lock] = anyio.lowlevel.RunVar("beads-write-lock")

    # ------------------------------------------------------------------ the protocol

    async def load_tasks(self) -> list[TaskRecord]:
        """``bd list --all --limit 0``: beads that take part, and closed ones (they satisfy dependencies)."""
        result = await self._call("list", ["--all", "--limit", "0"])
        kept, known, warnings = select_beads(self._issues(result), self.actor)
        self._known = known
        self.warnings.extend(w for w in warnings if w not in self.warnings)
        return kept

    async def fetch_statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        """One ``bd show A B C`` for every id; ids bd does not know are left out."""
        if not task_ids:
            return {}
        issues = await self._show(task_ids)
        answer: dict[str, str] = {}
        for task_id in task_ids:
            status = issues.get(task_id, {}).get("status")
            if isinstance(status, str):
                answer[task_id] = status
        return answer

    async def find_blockers(self, tasks: Sequence[TaskRecord]) -> dict[str, list[str]]:
        """Readiness as ``bd ready`` computes it; ``bd blocked`` names the blockers of the rest."""
        if not tasks:
            return {}
        ready = self._issues(await self._call("ready", ["--limit", "0"]))
        ready_ids = {item["id"] for item in ready if isinstance(item.get("id"), str)}
        waiting = [t for t in tasks if t.task_id not in ready_ids]
        named: dict[str, list[str]] = {}
        named_failed: str | None = None
        if waiting:
            try:
                blocked = self._issues(await self._call("blocked", []))
            except TrackerError as exc:  # it only names blockers: the ready tasks still run
                named_failed = str(exc)
                blocked = []
            for item in blocked:
                blocked_by = item.get("blocked_by")
                if isinstance(item.get("id"), str) and isinstance(blocked_by, list):
                    named[item["id"]] = [b for b in blocked_by if isinstance(b, str)]
        if not self._known and (waiting or any(t.metadata.dependencies for t in tasks)):
            await self.load_tasks()
        return decide_blockers(tasks, ready_ids, named, self._known, self.actor, named_failed)

    async def claim(self, task_ids: Sequence[str]) -> dict[str, str | None]:
        """One ``bd update A B --claim``: each id maps to None (ours now) or why not."""
        if not task_ids:
            return {}
        async with self._write_lock():
            result = await self._call("update", ["--claim"], ids=task_ids)
        returned, failures, general = self._write_outcome(result, task_ids)
        return claim_answer(task_ids, returned, failures, general, self.actor)

    async def close(self, task_ids: Sequence[str], reason: str) -> dict[str, str | None]:
        """One ``bd close A B --reason R``; a bead already closed (by its agent) is not closed again."""
        if not task_ids:
            return {}
        async with self._write_lock():
            try:  # a look first, within a third of the budget: the close must still fit after it
                current = await self._show(task_ids, timeout=self.config.call_timeout_seconds / 3)
            except TrackerError:
                current = {}  # bd close will say what is wrong
            already = [t for t in task_ids if current.get(t, {}).get("status") in DONE_STATUSES]
            to_close = [t for t in task_ids if t not in already]
            answer: dict[str, str | None] = {task_id: None for task_id in already}
            if to_close:
                result = await self._call("close", [f"--reason={reason}"], ids=to_close)
                returned, failures, general = self._write_outcome(result, to_close)
                answer.update(close_answer(to_close, returned, failures, general))
        return {task_id: answer[task_id] for task_id in task_ids}

    # ------------------------------------------------------------------ calls

    def _write_lock(self) -> anyio.Lock:
        """One lock per event loop: the CLI and the blocking facade run several ``anyio.run`` in turn."""
        try:
            return self._lock.get()
        except LookupError:
            lock = anyio.Lock()
            self._lock.set(lock)
            return lock

    def argv(self, command: str, options: Sequence[str] = (), ids: Sequence[str] = ()) -> list[str]:
        """The argv of one call: ids after ``--``, each its own element, so none is read as an option."""
        argv = [*self.config.bd_command, command, *options, "--json", f"--actor={self.actor}"]
        if ids:
            argv += ["--", *ids]
        return argv

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BEADS_ACTOR"] = self.actor
        env["BD_ACTOR"] = self.actor  # the name older bd versions read
        if self.beads_dir is not None:
            env["BEADS_DIR"] = str(self.beads_dir)
        return env

    async def _call(
        self, command: str, options: Sequence[str], ids: Sequence[str] = (), *, timeout: float | None = None
    ) -> BdResult:
        """Run one bd process to its end or its timeout; never leaves a process behind."""
        argv = self.argv(command, options, ids)
        timeout = self.config.call_timeout_seconds if timeout is None else timeout
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.repo_root,
                env=self.environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise TrackerError(f"cannot run bd ({argv[0]}): {exc.strerror or exc}; see [tracker].bd_command") from exc
        try:
            with anyio.move_on_after(timeout if timeout > 0 else math.inf) as scope:
                out, err = await _communicate(process)
            if scope.cancelled_caught:
                await stop_process_group(process.pid, _STOP_GRACE_SECONDS, wait_leader=process.wait)
                raise TrackerError(f"bd {command} did not answer within {timeout:.3g}s and was stopped")
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    await stop_process_group(process.pid, _STOP_GRACE_SECONDS, wait_leader=process.wait)
                await process.aclose()
        return BdResult(
            command,
            tuple(argv),
            process.returncode if process.returncode is not None else -9,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    def _issues(self, result: BdResult, *, partial: bool = False) -> list[dict[str, Any]]:
        """The issues a read printed; a failure, garbage or silence is a :class:`TrackerError`.

        ``partial``: issues printed by a call that also exited non-zero are accepted.
        """
        try:
            payload = decode_payload(result.stdout)
        except BdOutputError as exc:
            raise result.failure(str(exc)) from exc
        if payload is None:
            if result.returncode != 0:
                raise result.failure(f"failed ({describe_returncode(result.returncode)})")
            raise result.failure("printed nothing" + ("" if result.stderr.strip() else " and no error"))
        if result.returncode != 0 and not partial:
            raise result.failure(f"failed ({describe_returncode(result.returncode)})")
        try:
            return unwrap_issues(payload)
        except BdOutputError as exc:
            raise result.failure(str(exc)) from exc

    async def _show(self, task_ids: Sequence[str], *, timeout: float | None = None) -> dict[str, Mapping[str, Any]]:
        """``bd show`` of many ids; none found is an empty answer, not an error."""
        result = await self._call("show", [], ids=task_ids, timeout=timeout)
        if not result.stdout.strip() and only_missing_ids(result.stderr):
            return {}
        return by_id(self._issues(result, partial=True))

    def _write_outcome(
        self, result: BdResult, task_ids: Sequence[str]
    ) -> tuple[dict[str, Mapping[str, Any]], dict[str, str], str]:
        """(issues returned, per-id refusals, bd's general error) of a multi-id write.

        Silence or a bare failure that names no id is a :class:`TrackerError`:
        nothing can be said about any id.
        """
        try:
            payload = decode_payload(result.stdout)
        except BdOutputError as exc:
            raise result.failure(str(exc)) from exc
        returned: dict[str, Mapping[str, Any]] = {}
        general = stderr_line(result.stderr)
        if payload is not None:
            try:
                returned = by_id(unwrap_issues(payload))
            except BdOutputError as exc:
                if error_of(payload) is None:
                    raise result.failure(str(exc)) from exc
                general = one_line(error_of(payload) or general, MESSAGE_LIMIT)
        failures = failures_in_stderr(result.stderr, task_ids)
        if not returned and not failures:
            if result.returncode != 0:
                raise result.failure(f"failed ({describe_returncode(result.returncode)})")
            raise result.failure("printed nothing" + ("" if general else " and no error"))
        return returned, failures, general
