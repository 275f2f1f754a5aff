"""``cancel``, ``recover`` and ``init``: stopping a group, finishing an orphaned one, starting a configuration."""

from __future__ import annotations

import os
import signal
import socket
import time

import anyio
import click

from ..config import CONFIG_RELATIVE_PATH, config_template
from ..errors import MaestroError
from ..runtime.coordinator import AsyncParallelCoordinator
from ..runtime.digest import SUMMARY_COMMAND_RELATIVE, SUMMARY_COMMAND_TEXT
from ..runtime.ownership import coordinator_verdict, signal_if_ours
from ..state.safefs import UnsafePathError, check_state_chain
from ..state.store import GroupStore
from ..trackers.local import LocalTracker
from ._common import (
    AppState,
    ExitCode,
    FailedError,
    check_group_id,
    cli_error,
    command,
    emit_json,
    group_document,
    json_option,
    pass_state,
    print_group,
    stored,
)

__all__ = ("cancel", "init", "recover")


@command()
@click.option("--group-id", required=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the group has stopped.")
@click.option("--timeout", type=click.FloatRange(min=0), default=120, show_default=True, help="Seconds to wait.")
@json_option()
@pass_state
def cancel(state: AppState, group_id: str, wait: bool, timeout: float, as_json: bool) -> int:
    """Stop a group that another terminal runs (SIGTERM to its coordinator, which stops every agent)."""
    check_group_id(group_id, allow_sequential=True)
    store = GroupStore(state.repo_root, group_id)
    holder = store.holder()
    if holder is None or holder.pid is None:
        raise FailedError(f"group {group_id} is not running")
    if holder.host and holder.host != socket.gethostname():
        raise FailedError(f"group {group_id} is run by pid {holder.pid} on {holder.host}; cancel it there")
    verdict = coordinator_verdict(holder.record, store.lock_path)
    if not verdict:  # the lock is a file an agent can write: signal only a proven coordinator
        raise FailedError(f"group {group_id}: not signalling pid {holder.pid}: {verdict.reason}")
    if not signal_if_ours(verdict, signal.SIGTERM, group=False):
        raise FailedError(f"group {group_id}: its coordinator (pid {holder.pid}) is gone")
    state.progress(f"sent SIGTERM to the coordinator of group {group_id} (pid {holder.pid})")
    stopped = not wait or _wait_until_released(store, timeout)
    seen = stored(state, group_id)
    status = seen.metadata.status.value if seen is not None and seen.metadata is not None else None
    if as_json:
        emit_json({"group_id": group_id, "signalled_pid": holder.pid, "stopped": stopped, "status": status})
    else:
        click.echo(f"group {group_id}: " + (f"stopped ({status})" if stopped else "still stopping"))
    return ExitCode.OK if stopped else ExitCode.FAILED


def _wait_until_released(store: GroupStore, timeout: float) -> bool:
    """True once nobody holds the group's lock (its coordinator has finished shutting down)."""
    deadline = time.monotonic() + timeout
    while store.holder() is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


@command()
@click.option("--group-id", required=True)
@json_option()
@pass_state
def recover(state: AppState, group_id: str, as_json: bool) -> int:
    """Finish a group whose coordinator died: stop its agents, mark their tasks interrupted."""
    check_group_id(group_id, allow_sequential=True)
    coordinator = AsyncParallelCoordinator(
        state.repo_root, config=state.config(), tracker=LocalTracker(state.repo_root)
    )
    try:
        meta, recovered = anyio.run(coordinator.recover_group, group_id)
    except MaestroError as exc:  # not found, busy, unreadable
        raise cli_error(exc) from exc
    if as_json:
        emit_json(group_document(meta, {"recovered": recovered}))
    else:
        if recovered:
            click.echo(f"recovered {len(recovered)} task(s): {', '.join(recovered)}")
        else:
            click.echo(f"group {group_id} needs no recovery ({meta.status.value})")
        print_group(meta)
    return ExitCode.OK


@command()
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option(
    "--summary-command",
    is_flag=True,
    help="Also write .claude/commands/flow/summary.md, the /flow:summary command the refresh runs "
    "(without it the refresh is the built-in digest); an existing config.toml is then kept.",
)
@json_option()
@pass_state
def init(state: AppState, force: bool, summary_command: bool, as_json: bool) -> int:
    """Write .flow/maestro/config.toml with every key at its default, commented."""
    path = state.repo_root / CONFIG_RELATIVE_PATH
    summary = state.repo_root / SUMMARY_COMMAND_RELATIVE
    if summary_command and summary.exists() and not force:
        raise FailedError(f"{summary} already exists (--force to overwrite)")
    write_config = force or not path.exists()
    if not write_config and not summary_command:
        raise FailedError(f"{path} already exists (--force to overwrite)")
    targets = ([(path, config_template(), 0o700)] if write_config else []) + (
        [(summary, SUMMARY_COMMAND_TEXT, 0o755)] if summary_command else []
    )
    try:
        check_state_chain(state.repo_root)  # a symlinked .flow would put the config elsewhere
        for target, text, mode in targets:
            if target.is_dir() and not target.is_symlink():
                raise FailedError(f"cannot write {target}: it is a folder")
            target.parent.mkdir(parents=True, exist_ok=True, mode=mode)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(text)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    except UnsafePathError as exc:
        raise FailedError(str(exc)) from exc
    except OSError as exc:  # a read-only .flow, a file in place of a folder, a full disk
        raise FailedError(f"cannot write {target}: {exc.strerror or exc}") from exc
    if as_json:
        document: dict[str, object] = {"path": str(path), "written": write_config}
        if summary_command:
            document["summary_command"] = str(summary)
        emit_json(document)
    else:
        for target, _, _ in targets:
            click.echo(f"wrote {target}")
    return ExitCode.OK
