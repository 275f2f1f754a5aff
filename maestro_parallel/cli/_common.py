"""Shared plumbing of the command line: the context object, JSON mode, errors and exit codes.

Every command module imports from here and nothing imports the command
modules but :mod:`maestro_parallel.cli` itself, which imports each one when
its command runs: no import cycle.  This is the only place that
turns library errors into exit codes and one-line messages (:data:`ERROR_EXITS`),
and the exit codes are one table (:class:`ExitCode`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import shlex
import signal
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import anyio
import click

from ..config import Config, load_config
from ..errors import (
    ConfigError,
    GroupBusyError,
    MaestroError,
    TrackerError,
    ValidationError,
)
from ..markers import is_valid_group_id
from ..models import GroupMetadata, TaskStatus
from ..runtime.coordinator import AsyncParallelCoordinator, find_repo_root, make_tracker, sole_exception
from ..state.readers import StoredGroup, read_stored_group
from ..tasks import TaskRecord, loads_tasks
from ..textsafe import one_line
from ..trackers.base import Tracker
from ..trackers.local import LocalTracker
from .progress import PlanBoard, budget_line, describe_event, use_live_progress


class ExitCode(enum.IntEnum):
    """Every exit code of ``maestro-parallel``; :data:`EXIT_CODES_HELP` is written from this table."""

    OK = 0
    FAILED = 1
    USAGE = 2
    BLOCKED = 3
    BUSY = 4
    SIGINT = 130
    SIGTERM = 143


_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "failed or not found",
    ExitCode.USAGE: "usage or bad input",
    ExitCode.BLOCKED: "blocked (execute) or timed out (wait)",
    ExitCode.BUSY: "group busy",
    ExitCode.SIGINT: "SIGINT",
    ExitCode.SIGTERM: "SIGTERM",
}

#: The epilog of the group and of ``execute``: ``\b`` keeps click from rewrapping it.
EXIT_CODES_HELP = "\b\n" + "\n".join(
    textwrap.wrap("Exit codes: " + "; ".join(f"{int(code)} {_MEANINGS[code]}" for code in ExitCode) + ".", 78)
)


class CliError(click.ClickException):
    """Raised when a command stops: one line on stderr, the class's exit code.

    It remembers the click context it was raised in, so that the group can
    tell whether the command was asked for ``--json``.
    """

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.ctx = click.get_current_context(silent=True)


class BadInputError(CliError):
    """Raised for usage errors and bad input (a task file, a group id, the config)."""

    exit_code = ExitCode.USAGE


class FailedError(CliError):
    """Raised when the thing asked about failed, does not exist or could not be reached."""

    exit_code = ExitCode.FAILED


class BusyError(CliError):
    """Raised when another coordinator runs the group."""

    exit_code = ExitCode.BUSY


#: Library errors and the CLI error each becomes, most specific first (the one table).
ERROR_EXITS: tuple[tuple[type[MaestroError], type[CliError]], ...] = (
    (GroupBusyError, BusyError),
    (ValidationError, BadInputError),
    (ConfigError, BadInputError),
    (MaestroError, FailedError),  # StateError, TrackerError, GroupNotFoundError: could not proceed
)


def cli_error(exc: MaestroError) -> CliError:
    """The CLI error a library error becomes, by :data:`ERROR_EXITS`."""
    kind = next(cli for library, cli in ERROR_EXITS if isinstance(exc, library))
    return kind(str(exc))


# --------------------------------------------------------------------------- JSON mode

#: Key of ``ctx.meta`` on the root context: set once click has parsed a command's ``--json``.
JSON_MODE = "maestro_parallel.json"


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.find_root().meta[JSON_MODE] = True
    return value


def json_option(help: str = "Print one JSON document on stdout.") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json``: eager, so that an error in any other option is already reported as JSON."""
    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_remember_json, help=help)


def _asks_for_json(command: click.Command, args: Sequence[str]) -> bool:
    """Whether click's parser, skipping what it does not know, finds ``--json`` among ``args``.

    Used only when parsing failed before ``--json`` could be processed (an
    unknown option).  The parser, not a scan of argv, decides: in
    ``--group-id --json`` the ``--json`` is a value.
    """
    probe = click.Context(command, ignore_unknown_options=True, resilient_parsing=True)
    try:
        options, _, _ = command.make_parser(probe).parse_args(list(args))
    except click.UsageError:
        return False
    return bool(options.get("as_json"))


class MaestroCommand(click.Command):
    """A command whose ``--json`` counts even when parsing its other options fails."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError:
            if _asks_for_json(self, given):
                ctx.find_root().meta[JSON_MODE] = True
            raise


def json_mode_of(exc: click.ClickException) -> bool:
    ctx: click.Context | None = getattr(exc, "ctx", None)
    return bool(ctx is not None and ctx.find_root().meta.get(JSON_MODE))


def emit_json(data: Any) -> None:
    """One JSON document on stdout: indented for a person at a terminal, compact for a program.

    (Indenting uses json's pure-Python encoder: for a big group that is most of the output's cost.)
    """
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, ensure_ascii=False))


# --------------------------------------------------------------------------- the group


#: Whether the command line runs as the whole process (``main`` called without arguments).
_WHOLE_PROCESS = [False]


class MaestroGroup(click.Group):
    """Reports every error as one line (plus ``{"error": ...}`` on stdout under ``--json``)."""

    command_class = MaestroCommand

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        _WHOLE_PROCESS[0] = args is None  # run as the program (not called in-process, as by a test runner)
        extra.pop("standalone_mode", None)
        try:
            code = super().main(argv, prog_name or "maestro-parallel", standalone_mode=False, **extra)
        except click.ClickException as exc:
            message = one_line(exc.format_message())
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message += f" (see '{exc.ctx.command_path} --help')"
            _report_error(message, json_mode_of(exc))
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            sys.exit(ExitCode.SIGINT)
        except Exception as exc:
            if _interrupted(exc):  # a Ctrl-C that a library turned into another error while loading
                sys.exit(ExitCode.SIGINT)
            raise
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _interrupted(exc: BaseException) -> bool:
    """True when ``exc`` was caused, however indirectly, by a KeyboardInterrupt."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _report_error(message: str, json_mode: bool) -> None:
    if json_mode:
        click.echo(json.dumps({"error": message}))
    click.echo(f"Error: {message}", err=True)


@dataclass
class AppState:
    """What the group's options decide, shared with every command through ``ctx.obj``."""

    repo_root_option: Path | None
    config_path: Path | None
    verbose: int
    quiet: bool
    _config: Config | None = field(default=None, repr=False)

    @property
    def repo_root(self) -> Path:
        if self.repo_root_option is not None:
            return self.repo_root_option.resolve()
        return find_repo_root()

    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.repo_root, path=self.config_path)
            except ConfigError as exc:
                raise cli_error(exc) from exc
        return self._config

    def check(self) -> None:
        """Refuse a ``--repo-root`` that is no folder and a ``--config`` file that is missing or bad.

        Called as a command starts, after its own options (``--json`` among them) are parsed.
        """
        if self.repo_root_option is not None and not self.repo_root_option.is_dir():
            raise BadInputError(f"--repo-root {self.repo_root_option}: no such folder")
        if self.config_path is not None:
            self.config()  # a file named on the command line must exist and parse, whatever the command

    def progress(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


def pass_state(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the :class:`AppState`, checked once the command's own options are parsed."""

    @click.pass_context
    def command(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        state = ctx.find_object(AppState)
        if state is None:  # pragma: no cover - every command runs under the group
            raise RuntimeError("no AppState: the command was run outside the maestro-parallel group")
        state.check()
        return ctx.invoke(func, state, *args, **kwargs)

    return functools.update_wrapper(command, func)


def check_group_id(group_id: str, *, allow_sequential: bool = False) -> str:
    if not is_valid_group_id(group_id, allow_sequential=allow_sequential):
        raise BadInputError(
            f"invalid group id {group_id!r:.80}: use letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    return group_id


def tracker_for(state: AppState, tasks_file: str | None, from_beads: bool) -> tuple[Tracker, str]:
    """The tracker the task source implies, and a name for that source in messages."""
    if tasks_file is not None and from_beads:
        raise BadInputError("use either --tasks-file or --from-beads, not both")
    if from_beads:
        config = state.config()
        beads = dataclasses.replace(config, tracker=dataclasses.replace(config.tracker, kind="beads"))
        return make_tracker(beads, state.repo_root), "beads"
    if tasks_file is None:
        raise BadInputError("say where the tasks are: --tasks-file FILE (or -) or --from-beads")
    if tasks_file == "-":
        text = sys.stdin.read()
        try:
            records = loads_tasks(text, source="<stdin>")
        except ValidationError as exc:
            raise cli_error(exc) from exc
        return LocalTracker(state.repo_root, tasks=records), "<stdin>"
    try:  # a pipe (`<(...)`) is read once, there; a folder or a device is refused
        return LocalTracker.open_file(state.repo_root, Path(tasks_file)), tasks_file
    except OSError:
        raise BadInputError(f"tasks file {tasks_file}: no such file") from None
    except ValidationError as exc:
        raise cli_error(exc) from exc


async def _load(tracker: Tracker) -> list[TaskRecord]:
    return await tracker.load_tasks()


def load_records(tracker: Tracker) -> list[TaskRecord]:
    """Every task the tracker knows; what it skipped (an unsafe bead id, say) is a warning on stderr."""
    try:
        records = anyio.run(_load, tracker)
    except (ValidationError, TrackerError) as exc:
        raise cli_error(exc) from exc
    for warning in getattr(tracker, "warnings", ()):
        click.echo(f"warning: {one_line(warning)}", err=True)
    return records


def stored(state: AppState, group_id: str) -> StoredGroup | None:
    return anyio.run(read_stored_group, state.repo_root, group_id)


@contextmanager
def progress_view(state: AppState, plan: PlanBoard | None = None) -> Iterator[Callable[[dict[str, Any]], None]]:
    """The ``on_event`` callback that shows progress on stderr: a live table on a terminal, lines otherwise.

    With ``plan``, the live view shows the plan's steps first (``run``).
    """
    if state.quiet:
        yield lambda event: None
        return
    stream = sys.stderr
    if use_live_progress(stream):
        from rich.console import (
            Console,  # only a terminal needs rich: keep start-up quick elsewhere
        )

        from .progress import LiveProgress

        view = LiveProgress(Console(stderr=True), state.repo_root, plan=plan)
        with view.live():
            yield view.on_event
        return

    def show(event: dict[str, Any]) -> None:
        line = describe_event(event, state.verbose)
        if line:
            click.echo(line, err=True)

    yield show


_T = TypeVar("_T")


class SignalWatch:
    """SIGINT/SIGTERM handlers around a run of coordinators *and* the printing of its final state.

    While the run goes on, a signal interrupts the coordinators (:meth:`arm`); once the final state
    is returned, a signal is only noted (``late``), so the state is printed and the command exits
    with its code instead of a ``KeyboardInterrupt`` losing the output.  Before the run, a signal
    stops the command as before; the previous handlers come back on exit.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: list[int] = []
        self.late: list[int] = []
        self.finished = False
        self._react: Callable[[int], object] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalWatch:
        for signum in self._SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.finished and _WHOLE_PROCESS[0]:
            # The process exits with the state's code next: ignored (Python resets handlers at exit).
            for ignored in self._SIGNALS:
                signal.signal(ignored, signal.SIG_IGN)
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def arm(self, react: Callable[[int], object] | None) -> None:
        """Send the signals to ``react`` (None: the run is over, only note them)."""
        self._react = react
        if react is None:
            self.finished = True

    def _handle(self, signum: int, frame: object) -> None:
        if self.finished:
            self.late.append(signum)
        elif self._react is None:
            raise KeyboardInterrupt  # nothing runs yet: stop the command as the default handler would
        else:
            self.received.append(signum)
            self._react(signum)


def run_with_signals(
    state: AppState,
    coordinators: Sequence[AsyncParallelCoordinator],
    body: Callable[[list[int]], Awaitable[_T]],
    watch: SignalWatch | None = None,
) -> tuple[_T, list[int]]:
    """Run ``body`` under anyio; SIGINT/SIGTERM interrupt the coordinators (a second one: no grace).

    Returns what ``body`` returned and the signals received while it ran; a library error is raised
    as itself.  Given a ``watch`` (entered around the printing too), a later signal is only noted.
    """
    failure: list[MaestroError] = []
    signals = SignalWatch() if watch is None else watch

    async def guarded() -> _T | None:
        outcome: _T | None = None
        # The handler only writes the signal's number to a socket; a task of ours reads it and
        # interrupts the coordinators.  Never removed mid-run: no signal raises KeyboardInterrupt.
        reader, writer = socket.socketpair()
        writer.setblocking(False)

        async def relay() -> None:
            count = 0
            while True:
                await anyio.wait_readable(reader)
                for signum in reader.recv(64):
                    count += 1
                    name = signal.Signals(signum).name
                    if count == 1:
                        state.progress(f"{name}: stopping every agent (again to kill them at once)")
                    for coordinator in coordinators:
                        coordinator.interrupt(f"interrupted by {name}", force=count > 1)

        def hand_over(signum: int) -> None:
            with contextlib.suppress(OSError):
                writer.send(bytes([signum]))

        reader.setblocking(False)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay)
                signals.arm(hand_over)
                try:
                    outcome = await body(signals.received)
                except MaestroError as exc:
                    failure.append(exc)
                finally:
                    signals.arm(None)
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise (sole_exception(group) or group) from None  # a bug in the body surfaces as itself
        finally:
            reader.close()
            writer.close()
        return outcome

    if watch is None:
        with signals:
            result = anyio.run(guarded)
    else:
        result = anyio.run(guarded)
    if failure:
        raise failure[0]
    return result, signals.received  # type: ignore[return-value]


def signal_exit(received: list[int], meta: GroupMetadata | None = None) -> int | None:
    """The exit code a signal gives: None when none came, or (given the final state) when it came too late.

    A signal that arrived after the final state was written left no mark in it
    (its ``interrupted by SIG…`` error): the state's own exit code stands.
    """
    if not received:
        return None
    if meta is not None:
        names = {signal.Signals(signum).name for signum in received}
        if not any(f"interrupted by {name}" in error for error in meta.errors for name in names):
            return None
    return ExitCode.SIGTERM if received[0] == signal.SIGTERM else ExitCode.SIGINT


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that shape how agents run, shared by ``execute`` and ``run``."""
    options = [
        click.option("--max-parallel", type=click.IntRange(min=0), help="At most N agents at a time (0: all at once)."),
        click.option(
            "--timeout", "group_timeout", type=click.FloatRange(min=0), help="Whole-group timeout in seconds."
        ),
        click.option("--task-timeout", type=click.FloatRange(min=0), help="Per-task timeout in seconds."),
        click.option("--no-refresh", is_flag=True, help="Skip the context refresh."),
        click.option("--no-tests", is_flag=True, help="Skip the test suite."),
        click.option("--halt-on-failure", is_flag=True, help="Stop the other agents when one task fails."),
        click.option(
            "--agent-command",
            metavar="ARGV",
            help="Argv template for every agent (split like a shell, never run by one).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def configured(
    state: AppState,
    *,
    max_parallel: int | None,
    group_timeout: float | None,
    task_timeout: float | None,
    no_refresh: bool,
    no_tests: bool,
    agent_command: str | None,
) -> Config:
    """The config file with the command line's flags applied over it."""
    argv = None
    if agent_command is not None:
        try:
            argv = shlex.split(agent_command)
        except ValueError as exc:
            raise BadInputError(f"--agent-command: {exc}") from exc
        if not argv:
            raise BadInputError("--agent-command is empty")
    try:
        return state.config().with_overrides(
            max_parallel=max_parallel,
            group_timeout_seconds=group_timeout,
            timeout_seconds=task_timeout,
            refresh_enabled=False if no_refresh else None,
            tests_enabled=False if no_tests else None,
            agent_command=argv,
        )
    except ConfigError as exc:
        raise cli_error(exc) from exc


def _total_cost(meta: GroupMetadata) -> float | None:
    costs = [r["cost_usd"] for r in meta.results if isinstance(r.get("cost_usd"), (int, float))]
    return round(sum(costs), 6) if costs else None


def group_document(meta: GroupMetadata, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data = meta.to_dict()
    cost = _total_cost(meta)
    if cost is not None:
        data["total_cost_usd"] = cost
    data.update(extra or {})
    return data


def print_group(meta: GroupMetadata, *, stale: bool = False) -> None:
    done = sum(r.get("status") == TaskStatus.COMPLETED for r in meta.results)
    status = f"{meta.status.value} (stale: its coordinator is gone)" if stale else meta.status.value
    click.echo(f"{meta.group_name}: {status}, {done}/{len(meta.results)} tasks completed, phase {meta.phase.value}")
    cost = _total_cost(meta)
    if cost is not None:
        click.echo(f"  total cost: ${cost:.4f}")
    if meta.budget is not None:
        click.echo(f"  budget: {budget_line(meta.budget)}")
    width = max((len(r["task_id"]) for r in meta.results), default=4)
    for result in meta.results:
        status = str(result.get("status"))
        if result.get("closed"):
            status += ", closed"
        subagent = one_line(result.get("subagent") or "-", 60)  # tracker text: no escape sequence reaches the terminal
        line = f"  {one_line(result['task_id'])[:64]:<{width}}  {status:<18} {subagent}"
        if result.get("error"):
            line += f"  {one_line(result['error'])[:160]}"
        click.echo(line)
    for error in meta.errors:
        click.echo(f"  error: {one_line(error)[:200]}")


def exit_code_of(meta: GroupMetadata) -> int:
    return {TaskStatus.COMPLETED: ExitCode.OK, TaskStatus.BLOCKED: ExitCode.BLOCKED}.get(meta.status, ExitCode.FAILED)


def command(name: str | None = None, **attrs: Any) -> Callable[[Callable[..., Any]], MaestroCommand]:
    """``click.command`` making a :class:`MaestroCommand`; the group adds it when it is first asked for."""
    return click.command(name, cls=MaestroCommand, **attrs)
