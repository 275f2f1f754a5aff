"""The ``maestro-parallel`` command line: one click group, thin over the async coordinator.

The group lives here; every command family is a module of its own (``detect``,
``execute``, ``inspect``: list/status/wait/logs, ``run``, ``tools``:
cancel/recover/init) registered below with ``add_command``, and the plumbing
they share is :mod:`._common`, which also holds the one table of exit codes
and the only mapping of library errors to them.  With ``--json`` stdout holds
exactly one JSON document (or JSON lines for a streaming command) and
everything else goes to stderr.

Exit codes: 0 success; 1 the thing asked about failed or does not exist;
2 usage or bad input; 3 blocked (``execute``) or timed out (``wait``);
4 the group is run by another coordinator; 130 SIGINT; 143 SIGTERM.
"""

from __future__ import annotations

from pathlib import Path

import click

from .._version import __version__
from . import detect, execute, inspect, report, run, tools, worktrees
from ._common import EXIT_CODES_HELP, AppState, MaestroGroup

__all__ = ("main",)


@click.group(cls=MaestroGroup, epilog=EXIT_CODES_HELP)
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
    ctx.obj = AppState(repo_root, config_path, verbose, quiet)  # checked as the command starts (AppState.check)


for _command in (
    detect.detect,
    execute.execute,
    inspect.list_command,
    inspect.status,
    inspect.wait,
    inspect.logs,
    run.run_command,
    report.report_command,
    tools.cancel,
    tools.recover,
    tools.init,
    worktrees.clean_command,
):
    main.add_command(_command)
