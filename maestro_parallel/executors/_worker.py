"""The worker side of the Dask executor: run one attempt in a scratch clone and ship its work back.

Runs in a thread of a Dask worker, so everything here is blocking code with
bounds.  The agent is run with the same rules as on the coordinator (DESIGN
§7): argv without a shell, stdin from ``/dev/null``, its own session, the
worker's environment minus the variables that must never reach an agent, a
timeout, SIGTERM → grace → SIGKILL to the whole process group, and a log cap
that drops the middle.  Its work is committed and returned as a git bundle.

This module must stay importable on workers: it imports no coordinator code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import AttemptSpec, AttemptStatus, WorkerPath

__all__ = (
    "FORBIDDEN_ENV",
    "HeadTailLog",
    "WorkerResult",
    "agent_environment",
    "commit_message",
    "resolve_argv",
    "run_agent",
    "run_attempt",
)

#: Variables removed from every agent's environment: Claude Code refuses to start inside another
#: session, and git variables would point the agent's git at the wrong repository.
FORBIDDEN_ENV = frozenset({"CLAUDECODE", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"})
FALLBACK_NAME = "maestro-parallel"
FALLBACK_EMAIL = "maestro-parallel@localhost"
_POLL = 0.02
_STOP_BOUND = 5.0
_GIT_TIMEOUT = 300.0
_STOP_WATCH_SECONDS = 0.5
#: How much of an attempt's output is streamed live as events (the log itself is capped by max_log_bytes).
STREAM_LIMIT = 1 << 20


@dataclass
class WorkerResult:
    """What a worker sends back: the verdict inputs, the log and the work as a bundle."""

    status: AttemptStatus
    host: str
    returncode: int | None = None
    log: bytes = b""
    head_sha: str | None = None
    bundle: bytes | None = None  # None: nothing committed beyond base_sha
    error: str | None = None
    duration: float = 0.0


def agent_environment(base: Mapping[str, str], additions: Mapping[str, str]) -> dict[str, str]:
    """The machine's environment without :data:`FORBIDDEN_ENV`, plus ``additions`` (which win)."""
    env = {name: value for name, value in base.items() if name not in FORBIDDEN_ENV}
    env.update(additions)
    for name in FORBIDDEN_ENV:
        env.pop(name, None)
    return env


def resolve_argv(argv: Sequence[str | WorkerPath], paths: Mapping[str, str]) -> list[str]:
    """Fill in the :class:`WorkerPath` elements; text elements are used as they are, never expanded."""
    return [item.resolve(paths) if isinstance(item, WorkerPath) else item for item in argv]


def commit_message(task_id: str, title: str, group_id: str) -> str:
    """``<task_id>: <title>`` with a ``Maestro-Group:`` trailer (DESIGN §12)."""
    subject = " ".join(f"{task_id}: {title}".split())
    return f"{subject}\n\nMaestro-Group: {group_id}\n"


class HeadTailLog:
    """Keep the first quarter and the last three quarters of ``max_bytes`` of a stream (0: keep all)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.head_budget = max_bytes // 4
        self.tail_budget = max_bytes - self.head_budget
        self.head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if not self.max_bytes:
            self.head += data
            return
        room = max(self.head_budget - len(self.head), 0)
        self.head += data[:room]
        rest = data[room:]
        if rest:
            self._tail.append(bytes(rest))
            self._tail_size += len(rest)
            while self._tail and self._tail_size - len(self._tail[0]) >= self.tail_budget:
                self._tail_size -= len(self._tail.popleft())

    def getvalue(self) -> bytes:
        tail = b"".join(self._tail)
        if len(tail) > self.tail_budget:
            tail = tail[len(tail) - self.tail_budget :]
        dropped = self.total - len(self.head) - len(tail)
        note = b""
        if dropped > 0:
            note = (
                f"\n[maestro-parallel: {dropped} bytes dropped from the middle of this log "
                f"(max_log_bytes = {self.max_bytes})]\n"
            ).encode()
        return bytes(self.head) + note + tail


def _group_alive(pgid: int) -> bool:
    """True while a process that is not a zombie is left in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split(maxsplit=3)
        if len(fields) >= 3 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            return True
    return False


def _signal(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen[bytes], grace: float, kill: threading.Event | None = None) -> None:
    """SIGTERM the group, wait ``grace`` (cut short by ``kill``), SIGKILL what is left, and wait (bounded)."""
    pgid = proc.pid
    if not _group_alive(pgid):
        return
    _signal(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not (kill is not None and kill.is_set()):
        proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(_POLL)
    _signal(pgid, signal.SIGKILL)
    deadline = time.monotonic() + _STOP_BOUND
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(_POLL)


def run_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float | None,
    grace: float,
    max_log_bytes: int,
    stop: threading.Event,
    on_output: Callable[[str], None] | None = None,
    kill: threading.Event | None = None,
) -> tuple[AttemptStatus, int | None, bytes]:
    """Run one agent to its end, its timeout or ``stop``; the whole process group is gone on return.

    ``kill`` set while it is being stopped ends its grace period at once (a second Ctrl-C).

    :returns: how it ended, its exit code, and its log (capped, the middle dropped).
    """
    log = HeadTailLog(max_log_bytes)
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wake = threading.Event()
    assert proc.stdout is not None
    stdout_fd = proc.stdout.fileno()

    def read() -> None:
        pending = b""
        while chunk := os.read(stdout_fd, 65536):
            log.feed(chunk)
            if on_output is not None:
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if cut:
                    on_output(pending[:cut].decode("utf-8", "replace"))
                    pending = pending[cut:]
                elif len(pending) > 16384:
                    on_output(pending.decode("utf-8", "replace"))
                    pending = b""
        if pending and on_output is not None:
            on_output(pending.decode("utf-8", "replace"))

    def wait() -> None:
        proc.wait()
        wake.set()

    def watch_stop() -> None:
        stop.wait()
        wake.set()

    reader = threading.Thread(target=read, name="maestro-agent-log", daemon=True)
    waiter = threading.Thread(target=wait, name="maestro-agent-wait", daemon=True)
    stop_watcher = threading.Thread(target=watch_stop, name="maestro-agent-stop", daemon=True)
    for thread in (reader, waiter, stop_watcher):
        thread.start()
    try:
        wake.wait(timeout)
        if proc.poll() is not None:
            status = AttemptStatus.EXITED
        elif stop.is_set():
            status = AttemptStatus.STOPPED
        else:
            status = AttemptStatus.TIMED_OUT
    finally:
        # Whatever ended the wait (and even an exception here), nothing of the agent survives.
        _stop_group(proc, grace, kill)
        waiter.join(_STOP_BOUND)
        reader.join(1.0)
        wake.set()
        if not stop.is_set():
            stop.set()  # releases the stop watcher; the caller's event is private to this attempt
        stop_watcher.join(1.0)
        proc.stdout.close()
    return status, proc.returncode, log.getvalue()


def _git_env() -> dict[str, str]:
    env = agent_environment(os.environ, {})
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def git_reason(stderr: str) -> str:
    """The line of git's error output that says why (its first ``error:``/``fatal:`` line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("error:", "fatal:")):
            return line
    return lines[-1] if lines else "no output"


def git_command_name(args: tuple[str, ...]) -> str:
    """``git fetch``, ``git bundle create``: a git command as a person names it."""
    return " ".join(["git", *(a for a in args[:2] if not a.startswith("-"))][:3])


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One git command with a bound; a failure is one line naming the command."""
    command = ["git", "-C", str(repo), *args]
    try:
        done = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            env=_git_env(),
            timeout=_GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{git_command_name(args)} timed out after {_GIT_TIMEOUT:.0f} s") from exc
    if check and done.returncode != 0:
        raise RuntimeError(f"{git_command_name(args)} failed: {git_reason(done.stderr)}")
    return done


def base_ref(sha: str) -> str:
    """The ref under which a base bundle carries ``sha``."""
    return f"refs/maestro-base/{sha}"


_CACHE_LOCK = threading.Lock()


def cached_base(sha: str, bundle: bytes) -> Path:
    """A bare repository holding ``sha`` on this machine, made from its bundle once and reused.

    Each attempt then clones it with ``--shared`` (objects borrowed, nothing
    copied), so a worker pays for the base once, not once per agent.
    """
    folder = Path(tempfile.gettempdir()) / "maestro-parallel" / "bases"
    path = folder / f"{sha}.git"
    with _CACHE_LOCK:
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(dir=folder, prefix=f".{sha}."))
            try:
                bundle_path = building / "base.bundle"
                bundle_path.write_bytes(bundle)
                repo = building / "repo.git"
                _git(building, "init", "-q", "--bare", str(repo))
                _git(repo, "fetch", "-q", "--no-tags", str(bundle_path), f"{base_ref(sha)}:{base_ref(sha)}")
                try:
                    os.replace(repo, path)  # whole or not at all: a half-made cache is never used
                except OSError:
                    if not path.exists():  # else another worker process on this machine made it first
                        raise
            finally:
                shutil.rmtree(building, ignore_errors=True)
    return path


def _commit_all(repo: Path, spec: AttemptSpec) -> str:
    """Commit what the agent left (its own commits are kept); return the branch head."""
    _git(repo, "add", "-A")
    if _git(repo, "diff", "--cached", "--quiet", check=False).returncode != 0:
        identity: list[str] = []
        if not _git(repo, "var", "GIT_COMMITTER_IDENT", check=False).stdout.strip():  # no identity configured
            identity = ["-c", f"user.name={FALLBACK_NAME}", "-c", f"user.email={FALLBACK_EMAIL}"]
        message = commit_message(spec.task_id, spec.title, spec.group_id)
        _git(repo, *identity, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", message)
    head, branch_head = _git(repo, "rev-parse", "HEAD", f"refs/heads/{spec.branch}").stdout.split()
    if head != branch_head:  # the agent moved to another branch: its HEAD is the work
        _git(repo, "update-ref", f"refs/heads/{spec.branch}", head)
    return head


def run_attempt(
    spec: AttemptSpec,
    base_bundle: bytes,
    *,
    topic: str,
    attempt_key: str,
    stop_event: str,
    started_event: str,
    kill_event: str = "",
) -> WorkerResult:
    """The Dask task: run ``spec`` in a scratch clone of its base and return its work and log.

    One attempt never runs twice: if Dask reschedules it after its worker died,
    the ``started_event`` is already set and nothing is launched again.
    """
    from distributed import Event, get_worker

    began = time.monotonic()
    worker = get_worker()
    host = str(worker.address)
    started = Event(started_event)
    if started.is_set():
        return WorkerResult(
            AttemptStatus.WORKER_LOST, host, error="the worker running this attempt died; it is not run twice"
        )
    started.set()
    remote_stop = Event(stop_event)
    if remote_stop.is_set():  # stopped before it started: launch nothing
        return WorkerResult(AttemptStatus.STOPPED, host, error="stopped before it started")

    def emit(kind: str, text: str = "") -> None:
        worker.log_event(topic, {"key": attempt_key, "kind": kind, "host": host, "text": str(text)})

    # The scheduler keeps every event it relays: an agent that floods its output must not flood it.
    streamed = 0

    def emit_log(text: str) -> None:
        nonlocal streamed
        if streamed >= STREAM_LIMIT:
            return
        streamed += len(text)
        if streamed >= STREAM_LIMIT:
            text += (
                f"\n[maestro-parallel: live log stops after {STREAM_LIMIT} characters; "
                "the whole log comes with the result]\n"
            )
        emit("log", text)

    emit("started")  # the coordinator now knows the host, and waits for this attempt's end when it stops it

    scratch = Path(tempfile.mkdtemp(prefix="maestro-attempt-"))
    try:
        base = cached_base(spec.base_sha, base_bundle)
        clone = scratch / "repo"
        _git(scratch, "clone", "-q", "--shared", "--no-checkout", str(base), str(clone))
        _git(clone, "checkout", "-q", "-b", spec.branch, spec.base_sha)
        cwd = clone / spec.repo.subdir if spec.repo.subdir else clone
        prompt_file = scratch / "prompt.md"
        prompt_file.write_text(spec.prompt, encoding="utf-8")
        paths = {"prompt_file": str(prompt_file), "worktree": str(cwd)}
        env = agent_environment(
            os.environ,
            {**spec.env, "MAESTRO_PROMPT_FILE": str(prompt_file), "MAESTRO_WORKTREE": str(cwd), "MAESTRO_HOST": host},
        )
        if remote_stop.is_set():  # stopped while its clone was made: launch nothing
            emit("finished", AttemptStatus.STOPPED)
            return WorkerResult(
                AttemptStatus.STOPPED, host, error="stopped before it started", duration=time.monotonic() - began
            )
        stop = threading.Event()

        def watch_remote() -> None:
            # Event.wait blocks on the scheduler; a bounded wait lets this thread end with the agent.
            while not stop.is_set():
                try:
                    if remote_stop.wait(timeout=_STOP_WATCH_SECONDS):
                        stop.set()
                except Exception:  # the scheduler is gone: keep the agent running to its own end
                    return

        kill = threading.Event()
        done = threading.Event()
        remote_kill = Event(kill_event) if kill_event else None

        def watch_kill() -> None:
            # A second Ctrl-C on the coordinator: the grace period of a stop in progress ends at once.
            while remote_kill is not None and not done.is_set():
                try:
                    if remote_kill.wait(timeout=_STOP_WATCH_SECONDS):
                        kill.set()
                        return
                except Exception:  # the scheduler is gone: the grace period runs its course
                    return

        watcher = threading.Thread(target=watch_remote, name="maestro-remote-stop", daemon=True)
        killer = threading.Thread(target=watch_kill, name="maestro-remote-kill", daemon=True)
        watcher.start()
        killer.start()
        try:
            status, returncode, log = run_agent(
                resolve_argv(spec.argv, paths),
                cwd=cwd,
                env=env,
                timeout=spec.timeout_seconds,
                grace=spec.grace_seconds,
                max_log_bytes=spec.max_log_bytes,
                stop=stop,
                on_output=emit_log,
                kill=kill,
            )
        except OSError as exc:
            stop.set()
            emit("finished", AttemptStatus.ERROR)
            return WorkerResult(
                AttemptStatus.ERROR, host, error=f"cannot start the agent: {exc}", duration=time.monotonic() - began
            )
        finally:
            if not stop.is_set():
                stop.set()
            if watcher.is_alive():
                try:
                    remote_stop.set()  # wakes the watcher at once instead of at its next bounded wait
                except Exception:
                    pass
            watcher.join(_STOP_WATCH_SECONDS * 2 + 1.0)
            done.set()
            killer.join(_STOP_WATCH_SECONDS * 2 + 1.0)
        head = _commit_all(clone, spec)
        bundle: bytes | None = None
        if head != spec.base_sha:
            out = scratch / "work.bundle"
            _git(clone, "bundle", "create", "-q", str(out), f"refs/heads/{spec.branch}", f"^{spec.base_sha}")
            bundle = out.read_bytes()
        emit("finished", status)
        return WorkerResult(
            status,
            host,
            returncode=returncode,
            log=log,
            head_sha=head,
            bundle=bundle,
            duration=time.monotonic() - began,
        )
    except RuntimeError as exc:
        emit("finished", AttemptStatus.ERROR)
        return WorkerResult(AttemptStatus.ERROR, host, error=str(exc), duration=time.monotonic() - began)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
