"""Run agents on Dask workers; their work comes back as commits (DESIGN §15).

Dask distributed is an engine people already run on clusters, Kubernetes and
HPC, so maestro schedules nothing of its own there: each attempt is one Dask
task (:func:`._worker.run_attempt`).  The coordinator ships a git bundle of
``base_sha`` (scattered once, so each worker receives it once and caches it
on disk), the prompt and the argv; it gets back the verdict inputs, the log
and a bundle of the task branch, which it fetches into
``maestro/<group_id>/<task_id>``.

Stopping crosses machines through a :class:`distributed.Event` per attempt,
set when the caller's scope is cancelled; the worker watches it and stops the
agent's process group.  One attempt never runs twice: Dask reschedules a task
whose worker died, so the worker refuses an attempt whose "started" event is
already set, and a LocalCluster started here has ``allowed-failures = 0``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio

from ._worker import WorkerResult, base_ref, git_command_name, git_reason, run_attempt
from .base import (
    AttemptOutcome,
    AttemptSpec,
    AttemptStatus,
    BundleError,
    EventKind,
    EventSink,
    ExecutorEvent,
    ExecutorUnavailableError,
)

__all__ = ("DaskExecutor", "apply_bundle", "create_base_bundle", "local_cluster_shape", "scheduler_endpoint")

_GIT_TIMEOUT = 300.0
#: How long after an attempt's result its last streamed events may still arrive.
_EVENT_DRAIN_SECONDS = 2.0
#: Beyond the grace period, how long a stopped attempt's worker has to send its result.
_STOP_BOUND_SECONDS = 15.0


def local_cluster_shape(workers: int, agents: int, cpu_count: int | None) -> tuple[int, int]:
    """``(n_workers, threads_per_worker)`` for a LocalCluster that must hold ``agents`` at once.

    A Dask worker runs only as many tasks as it has threads, and agents mostly
    wait, so threads follow the agents, not the cores.  ``workers = 0`` means
    one worker process per core, never more than there are agents.
    """
    agents = max(agents, 1)
    n_workers = workers if workers > 0 else max(1, min(cpu_count or 1, agents))
    return n_workers, max(1, math.ceil(agents / n_workers))


def scheduler_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``tcp://`` (or bare ``host:port``) scheduler address; None for other protocols."""
    text = address.strip()
    if "://" not in text:
        text = f"tcp://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "tls"):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


async def _git(repo: Path, *args: str) -> str:
    """One git command on the coordinator, bounded; a failure raises :class:`BundleError` naming it."""
    command = ["git", "-C", str(repo), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    try:
        with anyio.fail_after(_GIT_TIMEOUT):
            done = await anyio.run_process(command, check=False, env=env)
    except TimeoutError as exc:
        raise BundleError(f"{git_command_name(args)} timed out after {_GIT_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        raise BundleError(f"{git_command_name(args)} failed: {git_reason(done.stderr.decode('utf-8', 'replace'))}")
    return done.stdout.decode().strip()


async def create_base_bundle(repo: Path, sha: str) -> bytes:
    """A bundle holding ``sha`` and its history, under the ref the workers fetch (a temporary ref)."""
    ref = base_ref(sha)
    with tempfile.TemporaryDirectory(prefix="maestro-bundle-") as folder:
        path = Path(folder) / "base.bundle"
        await _git(repo, "update-ref", ref, sha)
        try:
            await _git(repo, "bundle", "create", "-q", str(path), ref)
        finally:
            with anyio.CancelScope(shield=True):
                await _git(repo, "update-ref", "-d", ref)
        return path.read_bytes()


async def apply_bundle(
    repo: Path, bundle: bytes, branch: str, expected_sha: str, *, task_id: str | None = None
) -> None:
    """Fetch ``branch`` from a returned bundle into ``repo``; it must arrive at ``expected_sha``.

    :raises BundleError: the bundle is damaged, lacks the branch, needs commits the repository does not have, or
        its branch does not point where the worker said.
    """
    with tempfile.TemporaryDirectory(prefix="maestro-bundle-") as folder:
        path = Path(folder) / "work.bundle"
        path.write_bytes(bundle)
        try:
            await _git(repo, "fetch", "-q", "--no-tags", str(path), f"+refs/heads/{branch}:refs/heads/{branch}")
            head = await _git(repo, "rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}")
        except BundleError as exc:
            raise BundleError(f"the work of task {task_id} cannot be applied: {exc}", task_id=task_id) from exc
    if head != expected_sha:
        raise BundleError(
            f"the work of task {task_id} cannot be applied: {branch} is at {head[:12]}, "
            f"the worker said {expected_sha[:12]}",
            task_id=task_id,
        )


@dataclass
class _Attempt:
    spec: AttemptSpec
    on_event: EventSink
    host: str = ""
    drained: anyio.Event = field(default_factory=anyio.Event)


class DaskExecutor:
    """Runs attempts on the workers of a Dask scheduler, or of a LocalCluster it starts.

    Use it as an async context manager::

        async with DaskExecutor("tcp://scheduler:8786") as executor:
            outcome = await executor.run(spec, on_event)

    :param address: the scheduler; ``""`` starts a LocalCluster of ``workers`` processes on this machine.
    :param workers: LocalCluster only: worker processes (0: one per core).
    :param agents: LocalCluster only: how many agents it must hold at once (sets the threads per worker).
    :param connect_timeout: how long to try reaching the scheduler before giving up.
    """

    def __init__(self, address: str = "", *, workers: int = 0, agents: int = 16, connect_timeout: float = 5.0) -> None:
        self.address = address
        self.workers = workers
        self.agents = agents
        self.connect_timeout = connect_timeout
        self.topic = f"maestro-{uuid.uuid4().hex}"
        self._client: Any = None
        self._cluster: Any = None
        self._attempts: dict[str, _Attempt] = {}
        self._bases: dict[str, Any] = {}  # base_sha → the scattered bundle's future
        self._base_lock = anyio.Lock()
        self._forced = anyio.Event()

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (for callers that need to look at the cluster)."""
        if self._client is None:
            raise RuntimeError("DaskExecutor is used outside its 'async with' block")
        return self._client

    async def __aenter__(self) -> Self:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ExecutorUnavailableError(
                "executor kind 'dask' needs distributed: pip install 'maestro-parallel[dask]'"
            ) from exc
        try:
            if self.address:
                await self._check_reachable()
                try:
                    self._client = await Client(self.address, asynchronous=True, timeout=self.connect_timeout)
                except (OSError, TimeoutError) as exc:
                    raise ExecutorUnavailableError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from exc
            else:
                n_workers, threads = local_cluster_shape(self.workers, self.agents, os.cpu_count())
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._cluster = await LocalCluster(
                        n_workers=n_workers,
                        threads_per_worker=threads,
                        processes=True,
                        dashboard_address=":0",  # None still serves on 8787, and warns when that is taken
                        asynchronous=True,
                    )
                self._client = await Client(self._cluster, asynchronous=True)
            self._client.subscribe_topic(self.topic, self._on_worker_event)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._close()

    def force_stop(self) -> None:
        """From now on, an agent being stopped gets no grace period: SIGKILL at once (a second Ctrl-C)."""
        self._forced.set()

    async def _check_reachable(self) -> None:
        """Fail fast and clearly when nothing listens at the address (Dask itself retries until its timeout)."""
        endpoint = scheduler_endpoint(self.address)
        if endpoint is None:
            return
        host, port = endpoint
        try:
            with anyio.fail_after(self.connect_timeout):
                stream = await anyio.connect_tcp(host, port)
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            raise ExecutorUnavailableError(f"cannot reach the Dask scheduler at {self.address}: {reason}") from exc
        await stream.aclose()

    async def _close(self) -> None:
        with anyio.move_on_after(10):
            if self._client is not None:
                try:
                    self._client.unsubscribe_topic(self.topic)
                except Exception:  # the connection is already gone: nothing to unsubscribe from
                    pass
                await self._client.close()
                self._client = None
            if self._cluster is not None:
                await self._cluster.close()
                self._cluster = None

    def _on_worker_event(self, event: tuple[float, Mapping[str, Any]]) -> None:
        _, msg = event
        attempt = self._attempts.get(str(msg.get("key")))
        if attempt is None:
            return
        kind = str(msg.get("kind"))
        host = str(msg.get("host", ""))
        if kind == "finished":
            attempt.drained.set()
            return
        if kind == EventKind.STARTED:
            attempt.host = host
        spec = attempt.spec
        attempt.on_event(ExecutorEvent(EventKind(kind), spec.task_id, spec.group_id, host, str(msg.get("text", ""))))

    async def _base_future(self, spec: AttemptSpec) -> Any:
        async with self._base_lock:
            future = self._bases.get(spec.base_sha)
            if future is None or future.status != "finished":  # never made, or lost with its workers
                data = await create_base_bundle(spec.repo.path, spec.base_sha)
                # On every worker at once: each receives it once, and losing a worker loses no copy.
                future = await self.client.scatter(data, hash=True, broadcast=True)
                self._bases[spec.base_sha] = future
            return future

    async def run(self, spec: AttemptSpec, on_event: EventSink) -> AttemptOutcome:
        """Run one attempt on a worker; its work ends up on ``spec.branch`` in ``spec.repo``.

        Cancelling the caller stops the agent on the worker (and brings back what
        it had done) before the cancellation goes on.
        """
        from distributed import Event

        began = time.monotonic()
        try:
            base = await self._base_future(spec)
        except BundleError as exc:
            return self._finish(spec, on_event, AttemptOutcome(AttemptStatus.ERROR, error=str(exc)))
        key = f"maestro-{spec.group_id}-{spec.task_id}-{spec.attempt}-{uuid.uuid4().hex[:12]}"
        attempt = _Attempt(spec, on_event)
        self._attempts[key] = attempt
        stop = Event(f"{key}-stop", client=self.client)
        started = Event(f"{key}-started", client=self.client)
        kill = Event(f"{key}-kill", client=self.client)
        future = self.client.submit(
            run_attempt,
            spec,
            base,
            topic=self.topic,
            attempt_key=key,
            stop_event=stop.name,
            started_event=started.name,
            kill_event=kill.name,
            key=key,
            pure=False,
            retries=0,
        )
        finished = False  # only a finished attempt may have its events cleared: a live one still watches them
        try:
            try:
                outcome = await self._collect(spec, attempt, future)
                finished = True
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True), anyio.move_on_after(spec.grace_seconds + _STOP_BOUND_SECONDS):
                    await stop.set()
                    if not attempt.host:
                        # Not started, as far as we know: never start it.  Should it be starting right
                        # now, the worker sees the stop event (left set) and launches nothing.
                        await future.cancel()
                        self._finish(
                            spec,
                            on_event,
                            AttemptOutcome(AttemptStatus.STOPPED, error="stopped before it started"),
                            began,
                        )
                    else:
                        async with anyio.create_task_group() as escalation:

                            async def kill_when_forced() -> None:
                                await self._forced.wait()
                                await kill.set()

                            escalation.start_soon(kill_when_forced)
                            stopped = await self._collect(spec, attempt, future)
                            escalation.cancel_scope.cancel()
                        finished = True
                        self._finish(spec, on_event, stopped, began)
                raise
            return self._finish(spec, on_event, outcome, began)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                if finished and attempt.host:
                    with anyio.move_on_after(_EVENT_DRAIN_SECONDS):
                        await attempt.drained.wait()
                self._attempts.pop(key, None)
                future.release()
                if finished:
                    try:
                        await stop.clear()
                        await started.clear()
                        await kill.clear()
                    except Exception:  # the scheduler is gone: its events went with it
                        pass

    def _finish(
        self, spec: AttemptSpec, on_event: EventSink, outcome: AttemptOutcome, began: float | None = None
    ) -> AttemptOutcome:
        if began is not None and not outcome.duration:
            outcome.duration = time.monotonic() - began
        on_event(ExecutorEvent(EventKind.FINISHED, spec.task_id, spec.group_id, outcome.host, outcome.status))
        return outcome

    async def _collect(self, spec: AttemptSpec, attempt: _Attempt, future: Any) -> AttemptOutcome:
        """Wait for the worker's result and bring its work home; every failure becomes an outcome."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            result: WorkerResult = await future
        except KilledWorker as exc:
            worker = attempt.host or _last_worker(exc)
            return AttemptOutcome(
                AttemptStatus.WORKER_LOST, host=worker, error=f"worker {worker} died while running this attempt"
            )
        except anyio.get_cancelled_exc_class():
            raise
        except FutureCancelledError as exc:
            if attempt.host:  # its input was lost with the worker running it
                return AttemptOutcome(
                    AttemptStatus.WORKER_LOST,
                    host=attempt.host,
                    error=f"worker {attempt.host} died while running this attempt",
                )
            return AttemptOutcome(
                AttemptStatus.ERROR, error=f"the cluster dropped this attempt before it started: {exc}"
            )
        except Exception as exc:  # the task itself crashed on the worker: a failed attempt, not a crash here
            return AttemptOutcome(
                AttemptStatus.ERROR, host=attempt.host, error=f"the worker failed: {type(exc).__name__}: {exc}"
            )
        outcome = AttemptOutcome(
            result.status,
            returncode=result.returncode,
            log=result.log,
            head_sha=result.head_sha,
            host=result.host,
            error=result.error,
            duration=result.duration,
        )
        if result.status is AttemptStatus.WORKER_LOST:
            worker = attempt.host or "another worker"
            outcome.host = worker
            outcome.error = f"worker {worker} died while running this attempt; it is not run twice"
            return outcome
        if result.head_sha is None:
            return outcome
        try:
            if result.bundle is None:
                await _git(spec.repo.path, "update-ref", f"refs/heads/{spec.branch}", result.head_sha)
            else:
                await apply_bundle(spec.repo.path, result.bundle, spec.branch, result.head_sha, task_id=spec.task_id)
        except BundleError as exc:
            outcome.error = f"{exc} (from {result.host})"
            outcome.status = AttemptStatus.ERROR
            return outcome
        outcome.branch = spec.branch
        return outcome


def _last_worker(exc: BaseException) -> str:
    """The worker named by a ``KilledWorker`` (its attribute, or its message)."""
    worker = getattr(exc, "last_worker", None)
    address = getattr(worker, "address", None)
    if address:
        return str(address)
    text = str(exc)
    marker = "The last worker that attempt to run the task was "
    if marker in text:
        return text.split(marker, 1)[1].split()[0].rstrip(".")
    return "unknown"
