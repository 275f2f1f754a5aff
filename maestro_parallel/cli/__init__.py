"""The ``maestro-parallel`` command line: one click group, thin over the async coordinator.

The group lives here; every command family is a module of its own (``detect``,
``execute``, ``inspect``: list/status/wait/logs, ``run``, ``report``, ``tools``:
cancel/recover/init, ``worktrees``: clean), named in :data:`COMMANDS` and
imported only when its command runs (or ``--help`` lists them all): ``execute``
does not pay for the report, the plan scheduler or the worktree cleaner at
start-up.  The plumbing they share is :mod:`._common`, which also holds the one table of exit codes
and the only mapping of library errors to them.  With ``--json`` stdout holds
exactly one JSON document (or JSON lines for a streaming command) and
everything else goes to stderr.

Exit codes: 0 success; 1 the thing asked about failed or does not exist;
2 usage or bad input; 3 blocked (``execute``) or timed out (``wait``);
4 the group is run by another coordinator; 130 SIGINT; 143 SIGTERM.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from .._version import __version__
from ._common import EXIT_CODES_HELP, AppState, MaestroGroup

__all__ = ("COMMANDS", "main")

#: Every command: its name, and the module and function that define it (imported on first use).
COMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("detect", "detect"),
    "execute": ("execute", "execute"),
    "list": ("inspect", "list_command"),
    "status": ("inspect", "status"),
    "wait": ("inspect", "wait"),
    "logs": ("inspect", "logs"),
    "run": ("run", "run_command"),
    "report": ("report", "report_command"),
    "cancel": ("tools", "cancel"),
    "recover": ("tools", "recover"),
    "init": ("tools", "init"),
    "clean": ("worktrees", "clean_command"),
}


class _LazyGroup(MaestroGroup):
    """The group, with each command's module imported when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name]
            module = importlib.import_module(f"{__name__}.{module_name}")
            self.add_command(getattr(module, attribute), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup, epilog=EXIT_CODES_HELP)
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

