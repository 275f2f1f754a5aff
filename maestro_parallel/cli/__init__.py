"""The ``maestro-parallel`` command line: one click group, thin over the async coordinator.

This is the only place that turns library errors into exit codes and one-line
messages.  With ``--json`` stdout holds exactly one JSON document (or JSON
lines for a streaming command) and everything else goes to stderr.

Exit codes: 0 success; 1 the thing asked about failed or does not exist;
2 usage or bad input; 3 blocked (``execute``) or timed out (``wait``);
4 the group is run by another coordinator; 130 SIGINT; 143 SIGTERM.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click

from .._version import __version__
from ..config import Config, load_config
from ..runtime.coordinator import AsyncParallelCoordinator, find_repo_root, make_tracker, wait_for_stored_group
from ..errors import (
    ConfigError,
    GroupBusyError,
    GroupNotFoundError,
    MaestroError,
    StateError,
    TrackerError,
    ValidationError,
)
from ..markers import SEQUENTIAL, detect_groups, is_valid_group_id, marker_warnings, task_group
from ..models import GroupMetadata, TaskStatus
from .progress import describe_event, use_live_progress
from ..state.store import StoredGroup, read_stored_group, read_stored_groups
from ..tasks import TaskRecord, loads_tasks
from ..trackers.base import Tracker
from ..trackers.local import LocalTracker

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED, EXIT_BUSY = 0, 1, 2, 3, 4
EXIT_SIGINT, EXIT_SIGTERM = 130, 143

_EXIT_CODES_HELP = """\b
Exit codes: 0 success; 1 failed or not found; 2 usage or bad input;
3 blocked (execute) or timed out (wait); 4 group busy; 130 SIGINT; 143 SIGTERM."""


class CliError(click.ClickException):
    """A one-line error with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click keeps it per class; ours is per error


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class MaestroGroup(click.Group):
    """Reports every error as one line (plus ``{"error": ...}`` on stdout under ``--json``)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        json_mode = "--json" in argv
        extra.pop("standalone_mode", None)
        try:
            code = super().main(argv, prog_name or "maestro-parallel", standalone_mode=False, **extra)
        except click.ClickException as exc:
            message = _one_line(exc.format_message())
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message += f" (see '{exc.ctx.command_path} --help')"
            _report_error(message, json_mode)
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            sys.exit(EXIT_SIGINT)
        except Exception as exc:
            if _interrupted(exc):  # a Ctrl-C that a library turned into another error while loading
                sys.exit(EXIT_SIGINT)
            raise
        sys.exit(code if isinstance(code, int) else EXIT_OK)


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
                raise CliError(str(exc), EXIT_USAGE) from None
        return self._config

    def progress(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


pass_state = click.make_pass_decorator(AppState)


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def _emit_json(data: Any) -> None:
    """One JSON document on stdout: indented for a person at a terminal, compact for a program.

    (Indenting uses json's pure-Python encoder: for a big group that is most of the output's cost.)
    """
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, ensure_ascii=False))


@click.group(cls=MaestroGroup, epilog=_EXIT_CODES_HELP)
@click.option(
    "--repo-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository root (default: nearest folder upward with .flow/, .beads/ or .git/).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: <repo-root>/.flow/maestro/config.toml).",
)
@click.option("-v", "--verbose", count=True, help="More progress detail on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.version_option(__version__, "--version", prog_name="maestro-parallel")
@click.pass_context
def main(ctx: click.Context, repo_root: Path | None, config_path: Path | None, verbose: int, quiet: bool) -> None:
    """Run parallel groups of coding-agent tasks from beads or a tasks file.

    Tasks whose description starts with [P:Group-<id>] form group <id>;
    `execute` runs one group: refresh, dependency checks, one agent process per
    task at once, timeouts, the test suite, closing the tasks.
    """
    if repo_root is not None and not repo_root.is_dir():
        raise CliError(f"--repo-root {repo_root}: no such folder")
    ctx.obj = AppState(repo_root, config_path, verbose, quiet)
    if config_path is not None:
        ctx.obj.config()  # a file named on the command line must exist and parse, whatever the command


# --------------------------------------------------------------------------- loading tasks


def _check_group_id(group_id: str, *, allow_sequential: bool = False) -> str:
    if not is_valid_group_id(group_id, allow_sequential=allow_sequential):
        raise CliError(
            f"invalid group id {group_id!r:.80}: use letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters"
        )
    return group_id


def _tracker_for(state: AppState, tasks_file: str | None, from_beads: bool) -> tuple[Tracker, str]:
    """The tracker the task source implies, and a name for that source in messages."""
    if tasks_file is not None and from_beads:
        raise CliError("use either --tasks-file or --from-beads, not both")
    if from_beads:
        config = state.config()
        beads = dataclasses.replace(config, tracker=dataclasses.replace(config.tracker, kind="beads"))
        return make_tracker(beads, state.repo_root), "beads"
    if tasks_file is None:
        raise CliError("say where the tasks are: --tasks-file FILE (or -) or --from-beads")
    if tasks_file == "-":
        text = sys.stdin.read()
        try:
            records = loads_tasks(text, source="<stdin>")
        except ValidationError as exc:
            raise CliError(str(exc)) from None
        return LocalTracker(state.repo_root, tasks=records), "<stdin>"
    path = Path(tasks_file)
    if not path.exists():  # a pipe (`<(...)`) is fine; a folder is not
        raise CliError(f"tasks file {tasks_file}: no such file")
    if path.is_dir():
        raise CliError(f"tasks file {tasks_file}: is a folder")
    return LocalTracker(state.repo_root, tasks_file=path), tasks_file


async def _load(tracker: Tracker) -> list[TaskRecord]:
    return await tracker.load_tasks()


def _load_records(tracker: Tracker) -> list[TaskRecord]:
    """Every task the tracker knows; what it skipped (an unsafe bead id, say) is a warning on stderr."""
    try:
        records = anyio.run(_load, tracker)
    except ValidationError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except TrackerError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    for warning in getattr(tracker, "warnings", ()):
        click.echo(f"warning: {_one_line(warning)}", err=True)
    return records


# --------------------------------------------------------------------------- detect


@main.command()
@click.option("--tasks-file", metavar="FILE", help="A tasks.json file, or - for standard input.")
@click.option("--from-beads", is_flag=True, help="Read the tasks from the beads tracker (bd).")
@_json_option
@pass_state
def detect(state: AppState, tasks_file: str | None, from_beads: bool, as_json: bool) -> int:
    """Show the parallel groups among the tasks that are not closed."""
    tracker, _ = _tracker_for(state, tasks_file, from_beads)
    active = [r for r in _load_records(tracker) if r.takes_part]
    for warning in marker_warnings([r.metadata for r in active]):
        click.echo(f"warning: {warning}", err=True)
    groups = detect_groups([r.metadata for r in active])
    ids = {name: [t.task_id for t in tasks] for name, tasks in groups.items()}
    parallel = sum(1 for name in ids if name != SEQUENTIAL)
    if as_json:
        _emit_json({"total_tasks": len(active), "parallel_groups": parallel, "groups": ids})
        return EXIT_OK
    sequential = len(ids.get(SEQUENTIAL, []))
    click.echo(f"{len(active)} tasks: {parallel} parallel group{'s' * (parallel != 1)}, {sequential} sequential")
    for name, members in ids.items():
        click.echo(f"  {name} ({len(members)}): {', '.join(members)}")
    return EXIT_OK


# --------------------------------------------------------------------------- execute


@contextmanager
def _progress(state: AppState) -> Iterator[Callable[[dict[str, Any]], None]]:
    """The ``on_event`` callback that shows progress on stderr: a live table on a terminal, lines otherwise."""
    if state.quiet:
        yield lambda event: None
        return
    stream = sys.stderr
    if use_live_progress(stream):
        from rich.console import Console  # only a terminal needs rich: keep start-up quick elsewhere

        from .progress import LiveProgress

        view = LiveProgress(Console(stderr=True), state.repo_root)
        with view.live():
            yield view.on_event
        return

    def show(event: dict[str, Any]) -> None:
        line = describe_event(event, state.verbose)
        if line:
            click.echo(line, err=True)

    yield show


_T = TypeVar("_T")


def _run_with_signals(
    state: AppState,
    coordinators: Sequence[AsyncParallelCoordinator],
    body: Callable[[list[int]], Awaitable[_T]],
) -> tuple[_T, list[int]]:
    """Run ``body`` under anyio; SIGINT/SIGTERM interrupt the coordinators (a second one: no grace).

    Returns what ``body`` returned and the signals received.  A library error
    is raised as itself, never wrapped in an exception group.
    """
    received: list[int] = []
    failure: list[MaestroError] = []

    async def guarded() -> _T | None:
        outcome: _T | None = None
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        received.append(signum)
                        name = signal.Signals(signum).name
                        if len(received) == 1:
                            state.progress(f"{name}: stopping every agent (again to kill them at once)")
                        for coordinator in coordinators:
                            coordinator.interrupt(f"interrupted by {name}", force=len(received) > 1)

            tg.start_soon(watch_signals)
            try:
                outcome = await body(received)
            except MaestroError as exc:
                failure.append(exc)
            finally:
                tg.cancel_scope.cancel()
        return outcome

    result = anyio.run(guarded)
    if failure:
        raise failure[0]
    return result, received  # type: ignore[return-value]


def _signal_exit(received: list[int]) -> int | None:
    if not received:
        return None
    return EXIT_SIGTERM if received[0] == signal.SIGTERM else EXIT_SIGINT


def _raise_for(exc: MaestroError) -> NoReturn:
    """Map a library error that stopped a run to the CLI's exit codes."""
    if isinstance(exc, GroupBusyError):
        raise CliError(str(exc), EXIT_BUSY) from None
    if isinstance(exc, (ValidationError, ConfigError)):
        raise CliError(str(exc), EXIT_USAGE) from None
    raise CliError(str(exc), EXIT_FAILED) from None  # StateError, TrackerError: could not proceed


def _run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that shape how agents run, shared by ``execute`` and ``run``."""
    options = [
        click.option("--max-parallel", type=click.IntRange(min=0), help="At most N agents at a time (0: all at once)."),
        click.option("--timeout", "group_timeout", type=click.FloatRange(min=0), help="Whole-group timeout in seconds."),
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


def _configured(
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
            raise CliError(f"--agent-command: {exc}") from None
        if not argv:
            raise CliError("--agent-command is empty")
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
        raise CliError(str(exc)) from None


def _total_cost(meta: GroupMetadata) -> float | None:
    costs = [r["cost_usd"] for r in meta.results if isinstance(r.get("cost_usd"), (int, float))]
    return round(sum(costs), 6) if costs else None


def _group_document(meta: GroupMetadata, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data = meta.to_dict()
    cost = _total_cost(meta)
    if cost is not None:
        data["total_cost_usd"] = cost
    data.update(extra or {})
    return data


def _print_group(meta: GroupMetadata, *, stale: bool = False) -> None:
    done = sum(r.get("status") == "completed" for r in meta.results)
    status = f"{meta.status.value} (stale: its coordinator is gone)" if stale else meta.status.value
    click.echo(f"{meta.group_name}: {status}, {done}/{len(meta.results)} tasks completed, phase {meta.phase.value}")
    cost = _total_cost(meta)
    if cost is not None:
        click.echo(f"  total cost: ${cost:.4f}")
    width = max((len(r["task_id"]) for r in meta.results), default=4)
    for result in meta.results:
        status = str(result.get("status"))
        if result.get("closed"):
            status += ", closed"
        line = f"  {result['task_id']:<{width}}  {status:<18} {result.get('subagent') or '-'}"
        if result.get("error"):
            line += f"  {_one_line(result['error'])[:160]}"
        click.echo(line)
    for error in meta.errors:
        click.echo(f"  error: {_one_line(error)[:200]}")


def _exit_code_of(meta: GroupMetadata) -> int:
    return {TaskStatus.COMPLETED: EXIT_OK, TaskStatus.BLOCKED: EXIT_BLOCKED}.get(meta.status, EXIT_FAILED)


@main.command(epilog=_EXIT_CODES_HELP)
@click.option("--group-id", required=True, help="The group to run: the tasks whose marker names it.")
@click.option("--tasks-file", metavar="FILE", help="A tasks.json file, or - for standard input.")
@click.option("--from-beads", is_flag=True, help="Read the tasks from the beads tracker (bd).")
@_run_options
@click.option("--restart", is_flag=True, help="Set the stored state aside under history/ and start afresh.")
@_json_option
@pass_state
def execute(
    state: AppState,
    group_id: str,
    tasks_file: str | None,
    from_beads: bool,
    restart: bool,
    halt_on_failure: bool,
    as_json: bool,
    **flags: Any,
) -> int:
    """Run one parallel group end to end."""
    _check_group_id(group_id)
    config = _configured(state, **flags)
    tracker, source = _tracker_for(state, tasks_file, from_beads)
    records = _load_records(tracker)
    members = [r for r in records if task_group(r.metadata) == group_id]
    runnable = [r for r in members if r.takes_part]
    if not runnable:
        if members and all(r.done for r in members):
            return _nothing_to_run(state, group_id, members, as_json)
        raise CliError(f"no task of group {group_id} to run in {source}")

    with _progress(state) as on_event:
        coordinator = AsyncParallelCoordinator(state.repo_root, config=config, tracker=tracker, on_event=on_event)

        async def body(received: list[int]) -> GroupMetadata:
            return await coordinator.execute_parallel_group(
                runnable, group_id, restart=restart, halt_on_failure=halt_on_failure
            )

        try:
            meta, received = _run_with_signals(state, [coordinator], body)
        except MaestroError as exc:
            _raise_for(exc)
    if as_json:
        _emit_json(_group_document(meta))
    else:
        _print_group(meta)
    return _signal_exit(received) or _exit_code_of(meta)


def _nothing_to_run(state: AppState, group_id: str, members: list[TaskRecord], as_json: bool) -> int:
    seen = anyio.run(read_stored_group, state.repo_root, group_id)
    if seen is not None and seen.metadata is not None:
        meta = seen.metadata
    else:
        meta = GroupMetadata(group_id=group_id, tasks=[r.task_id for r in members], status=TaskStatus.COMPLETED)
    state.progress(f"group {group_id}: every task is already closed; nothing to run")
    if as_json:
        _emit_json(_group_document(meta))
    else:
        _print_group(meta)
    return EXIT_OK


# --------------------------------------------------------------------------- list, status, wait


def _stored(state: AppState, group_id: str) -> StoredGroup | None:
    return anyio.run(read_stored_group, state.repo_root, group_id)


@main.command(name="list")
@click.option("--status", "status_filter", metavar="STATUS", help="Only groups with this status.")
@_json_option
@pass_state
def list_command(state: AppState, status_filter: str | None, as_json: bool) -> int:
    """List the groups stored in this repository, newest first."""
    if status_filter is not None and status_filter not in {s.value for s in TaskStatus}:
        choices = ", ".join(s.value for s in TaskStatus)
        raise CliError(f"invalid status {status_filter!r:.40} (one of: {choices})")
    coordinator_groups = anyio.run(read_stored_groups, state.repo_root)
    if status_filter is not None:
        coordinator_groups = [
            g for g in coordinator_groups if g.metadata is not None and g.metadata.status.value == status_filter
        ]
    if as_json:
        _emit_json([g.to_dict() for g in coordinator_groups])
        return EXIT_OK
    if not coordinator_groups:
        click.echo("no groups")
    for group in coordinator_groups:
        if group.metadata is None:
            click.echo(f"{group.group_id:<24} unreadable: {_one_line(group.error or '')[:160]}")
            continue
        meta = group.metadata
        done = sum(r.get("status") == "completed" for r in meta.results)
        status = meta.status.value + (" (stale)" if group.stale else "")
        click.echo(f"{meta.group_id:<24} {status:<20} {done}/{len(meta.results)} completed  {meta.created_at}")
    return EXIT_OK


@main.command()
@click.option("--group-id", required=True)
@_json_option
@pass_state
def status(state: AppState, group_id: str, as_json: bool) -> int:
    """Show one group's state."""
    _check_group_id(group_id, allow_sequential=True)
    seen = _stored(state, group_id)
    if seen is None:
        raise CliError(f"no such group: {group_id}", EXIT_FAILED)
    if seen.metadata is None:
        raise CliError(seen.error or f"group {group_id} is unreadable", EXIT_FAILED)
    if as_json:
        _emit_json(_group_document(seen.metadata, {"stale": seen.stale}))
    else:
        _print_group(seen.metadata, stale=seen.stale)
    return EXIT_OK


@main.command()
@click.option("--group-id", required=True)
@_json_option
@pass_state
def recover(state: AppState, group_id: str, as_json: bool) -> int:
    """Finish a group whose coordinator died: stop its agents, mark their tasks interrupted."""
    _check_group_id(group_id, allow_sequential=True)
    coordinator = AsyncParallelCoordinator(state.repo_root, config=state.config(), tracker=LocalTracker(state.repo_root))
    try:
        meta, recovered = anyio.run(coordinator.recover_group, group_id)
    except GroupNotFoundError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except GroupBusyError as exc:
        raise CliError(str(exc), EXIT_BUSY) from None
    except StateError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    if as_json:
        _emit_json(_group_document(meta, {"recovered": recovered}))
    else:
        if recovered:
            click.echo(f"recovered {len(recovered)} task(s): {', '.join(recovered)}")
        else:
            click.echo(f"group {group_id} needs no recovery ({meta.status.value})")
        _print_group(meta)
    return EXIT_OK


@main.command()
@click.option("--group-id", required=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=3600, show_default=True, help="Seconds to wait.")
@_json_option
@pass_state
def wait(state: AppState, group_id: str, timeout: float, as_json: bool) -> int:
    """Wait for a group that another process runs."""
    _check_group_id(group_id, allow_sequential=True)
    seen = anyio.run(wait_for_stored_group, state.repo_root, group_id, timeout)
    document: dict[str, Any] = {"group_id": group_id, "completed": False, "status": None}
    if seen is None:
        document["error"] = f"no such group: {group_id}"
        code = EXIT_FAILED
    elif seen.metadata is None:
        document["error"] = seen.error
        code = EXIT_FAILED
    else:
        current = seen.metadata.status
        document.update(status=current.value, completed=current is TaskStatus.COMPLETED)
        if seen.stale:
            document.update(stale=True, error="left in_progress by a coordinator that is gone (stale)")
            code = EXIT_FAILED
        elif current is TaskStatus.COMPLETED:
            code = EXIT_OK
        elif current in (TaskStatus.BLOCKED, TaskStatus.IN_PROGRESS, TaskStatus.PENDING):
            if current is not TaskStatus.BLOCKED:
                document["timed_out"] = True
            code = EXIT_BLOCKED
        else:
            code = EXIT_FAILED
    if as_json:
        _emit_json(document)
    else:
        text = document.get("error") or f"group {group_id}: {document['status']}"
        if document.get("timed_out"):
            text += f" (still running after {timeout:g}s)"
        click.echo(text)
    return code


# The other commands live in their own modules; importing them registers them on `main`.
from . import run, tools  # noqa: E402,F401
