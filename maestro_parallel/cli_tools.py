"""``logs``, ``cancel`` and ``init``: following a group, stopping one, starting a configuration."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import click

from .cli import (
    EXIT_FAILED,
    EXIT_OK,
    AppState,
    CliError,
    _check_group_id,
    _emit_json,
    _json_option,
    _stored,
    main,
    pass_state,
)
from .config import CONFIG_RELATIVE_PATH, config_template
from .digest import SUMMARY_COMMAND_RELATIVE, SUMMARY_COMMAND_TEXT
from .markers import is_safe_task_id
from .store import GroupStore

__all__ = ("cancel", "init", "logs")

_SPECIAL_LOGS = ("_refresh", "_tests")
_CHUNK = 64 * 1024


def _log_names(store: GroupStore, task_ids: list[str], task_id: str | None) -> list[str]:
    if task_id is not None:
        if task_id not in task_ids and task_id not in _SPECIAL_LOGS:
            raise CliError(f"group {store.group_id} has no task {task_id!r:.80}", EXIT_FAILED)
        return [task_id]
    return ["_refresh", *task_ids, "_tests"]


class _LogCursor:
    """Where reading of one log stopped; yields whole lines (a partial last line waits for its end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self, *, final: bool) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        return [line.decode("utf-8", "replace") for line in lines]


def _emit_lines(name: str, lines: list[str], *, as_json: bool, header: bool) -> None:
    if as_json:
        for line in lines:
            click.echo(json.dumps({"task_id": name, "line": line}, ensure_ascii=False))
        return
    if header and lines:
        click.echo(f"==> {name} <==")
    for line in lines:
        click.echo(line)


@main.command()
@click.option("--group-id", required=True)
@click.option("--task-id", help="One task's log (or _refresh, _tests); default: every log of the group.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the group finishes.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: {\"task_id\", \"line\"}.")
@pass_state
def logs(state: AppState, group_id: str, task_id: str | None, follow: bool, as_json: bool) -> int:
    """Print the agents' output of a group (with --follow, as it is written)."""
    _check_group_id(group_id, allow_sequential=True)
    if task_id is not None and not (is_safe_task_id(task_id) or task_id in _SPECIAL_LOGS):
        raise CliError(f"invalid task id {task_id!r:.80}")
    seen = _stored(state, group_id)
    if seen is None:
        raise CliError(f"no such group: {group_id}", EXIT_FAILED)
    if seen.metadata is None:
        raise CliError(seen.error or f"group {group_id} is unreadable", EXIT_FAILED)
    store = GroupStore(state.repo_root, group_id)
    names = _log_names(store, list(seen.metadata.tasks), task_id)
    cursors = {name: _LogCursor(store.logs_dir / f"{name}.log") for name in names}
    header = task_id is None
    if not follow:
        for name, cursor in cursors.items():
            _emit_lines(name, cursor.read(final=True), as_json=as_json, header=header)
        return EXIT_OK
    try:
        while True:
            current = _stored(state, group_id)
            running = (
                current is not None
                and current.metadata is not None
                and current.metadata.status.value in ("pending", "in_progress")
                and not current.stale
            )
            for name, cursor in cursors.items():
                _emit_lines(name, cursor.read(final=not running), as_json=as_json, header=header)
            if not running:
                return EXIT_OK
            time.sleep(0.2)
    except KeyboardInterrupt:
        return EXIT_OK


@main.command()
@click.option("--group-id", required=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the group has stopped.")
@click.option("--timeout", type=click.FloatRange(min=0), default=120, show_default=True, help="Seconds to wait.")
@_json_option
@pass_state
def cancel(state: AppState, group_id: str, wait: bool, timeout: float, as_json: bool) -> int:
    """Stop a group that another terminal runs (SIGTERM to its coordinator, which stops every agent)."""
    _check_group_id(group_id, allow_sequential=True)
    store = GroupStore(state.repo_root, group_id)
    holder = store.holder()
    if holder is None or holder.pid is None:
        raise CliError(f"group {group_id} is not running", EXIT_FAILED)
    if holder.host and holder.host != socket.gethostname():
        raise CliError(f"group {group_id} is run by pid {holder.pid} on {holder.host}; cancel it there", EXIT_FAILED)
    try:
        os.kill(holder.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise CliError(f"group {group_id}: its coordinator (pid {holder.pid}) is gone", EXIT_FAILED) from None
    state.progress(f"sent SIGTERM to the coordinator of group {group_id} (pid {holder.pid})")
    stopped = not wait or _wait_until_released(store, timeout)
    seen = _stored(state, group_id)
    status = seen.metadata.status.value if seen is not None and seen.metadata is not None else None
    if as_json:
        _emit_json({"group_id": group_id, "signalled_pid": holder.pid, "stopped": stopped, "status": status})
    else:
        click.echo(f"group {group_id}: " + (f"stopped ({status})" if stopped else "still stopping"))
    return EXIT_OK if stopped else EXIT_FAILED


def _wait_until_released(store: GroupStore, timeout: float) -> bool:
    """True once nobody holds the group's lock (its coordinator has finished shutting down)."""
    deadline = time.monotonic() + timeout
    while store.holder() is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


@main.command()
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--summary-command", is_flag=True,
              help="Also write .claude/commands/flow/summary.md, the /flow:summary command the refresh runs "
                   "(without it the refresh is the built-in digest); an existing config.toml is then kept.")
@_json_option
@pass_state
def init(state: AppState, force: bool, summary_command: bool, as_json: bool) -> int:
    """Write .flow/maestro/config.toml with every key at its default, commented."""
    path = state.repo_root / CONFIG_RELATIVE_PATH
    summary = state.repo_root / SUMMARY_COMMAND_RELATIVE
    if summary_command and summary.exists() and not force:
        raise CliError(f"{summary} already exists (--force to overwrite)", EXIT_FAILED)
    write_config = force or not path.exists()
    if not write_config and not summary_command:
        raise CliError(f"{path} already exists (--force to overwrite)", EXIT_FAILED)
    written: list[Path] = []
    for target, text, mode in ((path, config_template(), 0o700), (summary, SUMMARY_COMMAND_TEXT, 0o755)):
        if (target is path and not write_config) or (target is summary and not summary_command):
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=mode)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        written.append(target)
    if as_json:
        document: dict[str, object] = {"path": str(path), "written": write_config}
        if summary_command:
            document["summary_command"] = str(summary)
        _emit_json(document)
    else:
        for target in written:
            click.echo(f"wrote {target}")
    return EXIT_OK
