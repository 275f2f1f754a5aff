"""The commands run around the agents: the context refresh (phase 1) and the test suite (phase 4).

Both are plain commands from the configuration (argv, never a shell), run like an agent — their
own process group, stdin ``/dev/null``, output to a log, a timeout — and judged by exit code.
The test suite runs under the repository's ``tests.lock``, so groups never test at the same time.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio

from .._files import read_regular
from ..agents import agent_environment, resolve_executable
from ..config import Config
from ..errors import StateError
from ..models import TaskMetadata
from ..state.locks import TestsLock
from ..state.logfiles import last_line, read_head, write_log
from .digest import format_digest, gather_digest, refresh_output_problem, summary_command_defined, uses_builtin_digest
from .process import run_command
from .stopping import describe_returncode

__all__ = ("TestsOutcome", "command_env", "detect_test_command", "run_refresh", "run_tests")

_NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'

#: How a test-suite run ended.
TestOutcomeStatus = Literal["passed", "failed", "skipped"]


def _has_pytest_section(path: Path, section: str) -> bool:
    if not path.is_file():
        return False
    import configparser  # only for a repository that has the file: not at every start-up

    parser = configparser.ConfigParser()
    try:
        parser.read_string(_read_text(path), source=str(path))
    except (configparser.Error, OSError, UnicodeDecodeError):
        return False
    return parser.has_section(section)


#: A project file larger than this is not read to guess the test command.
_MAX_PROJECT_FILE_BYTES = 4 << 20


def _read_text(path: Path) -> str:
    """A project file an agent may have replaced (a FIFO, ``/dev/zero``): only a regular file is read."""
    return read_regular(path, _MAX_PROJECT_FILE_BYTES).decode("utf-8")


def _pyproject_has_pytest(path: Path) -> bool:
    try:
        data = tomllib.loads(_read_text(path))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = data.get("tool")
    return isinstance(tool, dict) and isinstance(tool.get("pytest"), dict) and "ini_options" in tool["pytest"]


def _npm_test_script(path: Path) -> bool:
    try:
        data = json.loads(_read_text(path))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    scripts = data.get("scripts") if isinstance(data, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    return isinstance(test, str) and bool(test.strip()) and test.strip() != _NPM_PLACEHOLDER


def detect_test_command(repo_root: Path) -> tuple[str, ...] | None:
    """The test command the repository's layout implies, or None.

    pytest when ``pytest.ini``, a pytest section in ``tox.ini``/``setup.cfg``,
    ``[tool.pytest.ini_options]`` in ``pyproject.toml`` or a ``tests/`` folder
    exists; ``npm test`` when ``package.json`` has a real test script;
    ``cargo test`` with ``Cargo.toml``; ``go test ./...`` with ``go.mod``.
    """
    if (
        (repo_root / "pytest.ini").is_file()
        or _has_pytest_section(repo_root / "tox.ini", "pytest")
        or _has_pytest_section(repo_root / "setup.cfg", "tool:pytest")
        or _pyproject_has_pytest(repo_root / "pyproject.toml")
        or (repo_root / "tests").is_dir()
    ):
        return ("pytest", "-q")
    if _npm_test_script(repo_root / "package.json"):
        return ("npm", "test")
    if (repo_root / "Cargo.toml").is_file():
        return ("cargo", "test")
    if (repo_root / "go.mod").is_file():
        return ("go", "test", "./...")
    return None


@dataclass
class TestsOutcome:
    status: TestOutcomeStatus
    exit_code: int | None = None
    command: list[str] | None = None
    error: str | None = None
    warning: str | None = None


#: Why a refresh or a test suite was stopped at the group's deadline.
GROUP_TIMED_OUT = "stopped: the group timed out"


def command_env(repo_root: Path, group_id: str | None = None) -> dict[str, str]:
    """The environment of a refresh, test or skill command: an agent's, with ``MAESTRO_REPO_ROOT``.

    Run for a group it also carries ``MAESTRO_GROUP_ID``, so that one orphaned by a
    killed coordinator is found and stopped by the group's recovery sweep.
    """
    variables = {"MAESTRO_REPO_ROOT": str(repo_root)}
    if group_id is not None:
        variables["MAESTRO_GROUP_ID"] = group_id
    return agent_environment(os.environ, {}, variables)


async def _run(
    executable: str, command: list[str], *, repo_root: Path, env: dict[str, str], log_path: Path, timeout: float,
    grace: float,
) -> tuple[int | None, str | None]:
    """Run a configured command to its end; (exit code, why it failed or None)."""
    try:
        result = await run_command(
            [executable, *command[1:]], cwd=repo_root, env=env, log_path=log_path, timeout=timeout, grace=grace
        )
    except OSError as exc:
        return None, f"cannot run {command[0]}: {exc.strerror or exc}"
    if result.timed_out:
        return result.returncode, f"timed out after {timeout:g}s"
    if result.returncode != 0:
        last = await last_line(log_path)
        return result.returncode, describe_returncode(result.returncode) + (f": {last}" if last else "")
    return 0, None


async def run_refresh(
    config: Config,
    repo_root: Path,
    log_path: Path,
    group_id: str | None = None,
    *,
    tasks: Sequence[TaskMetadata] = (),
    deadline: float | None = None,
) -> tuple[bool, str | None, str]:
    """Run the refresh; return (ok, warning, output for the prompts).

    The default command becomes the built-in digest when ``/flow:summary`` is not defined (and
    under the codex preset).  A command's output must be usable: empty output, or a claude
    failure printed with exit 0 (``Unknown command: /flow:summary``), fails the refresh.

    Run for a group, it sees ``MAESTRO_GROUP_ID`` as the agents do, so that a
    refresh orphaned by a killed coordinator is found and stopped by the
    group's recovery sweep (processes carrying the group's ``MAESTRO_*`` values).
    ``deadline`` (anyio's clock) is the group's: past it the refresh is stopped.
    """
    with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
        return await _refresh(config, repo_root, log_path, group_id, tasks)
    return False, f"context refresh failed: {GROUP_TIMED_OUT}", ""  # the deadline passed


async def _refresh(
    config: Config, repo_root: Path, log_path: Path, group_id: str | None, tasks: Sequence[TaskMetadata]
) -> tuple[bool, str | None, str]:
    command = list(config.refresh.command)
    defined = summary_command_defined(repo_root, Path(os.environ["HOME"]) if os.environ.get("HOME") else None)
    if uses_builtin_digest(command, config.agent.preset, summary_defined=defined):
        text = format_digest(await gather_digest(repo_root, group_id=group_id, tasks=tasks))
        await write_log(log_path, text.encode("utf-8"))
        head = text.encode("utf-8")[: config.refresh.max_bytes].decode("utf-8", "ignore")
        return True, None, head
    env = command_env(repo_root, group_id)
    executable = resolve_executable(command[0], repo_root=repo_root, path=env.get("PATH"))
    if executable is None:
        return False, f"context refresh failed: executable not found: {command[0]} ([refresh].command)", ""
    _, error = await _run(executable, command, repo_root=repo_root, env=env, log_path=log_path,
                          timeout=config.refresh.timeout_seconds, grace=config.agent.grace_seconds)
    if error is not None:
        return False, f"context refresh failed: {error}", ""
    output = await read_head(log_path, config.refresh.max_bytes)
    claude = config.agent.preset == "claude" or Path(command[0]).name == "claude"
    problem = refresh_output_problem(output, claude=claude)
    if problem is not None:
        return False, f"context refresh failed: {problem}", ""
    return True, None, output


async def run_tests(
    config: Config,
    repo_root: Path,
    log_path: Path,
    lock_path: Path,
    group_id: str | None = None,
    *,
    deadline: float | None = None,
) -> TestsOutcome:
    """Run the configured or detected test suite under the repository's tests lock.

    The suite sees ``MAESTRO_GROUP_ID`` (when run for a group) and ``MAESTRO_REPO_ROOT``.
    ``deadline`` (anyio's clock) is the group's: it bounds the wait for the lock and the suite.
    """
    with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
        return await _tests(config, repo_root, log_path, lock_path, group_id)
    return TestsOutcome("failed", error=GROUP_TIMED_OUT)  # the deadline passed (waiting for the lock, or running)


async def _tests(
    config: Config, repo_root: Path, log_path: Path, lock_path: Path, group_id: str | None
) -> TestsOutcome:
    if not config.tests.enabled:
        return TestsOutcome("skipped", warning=None)
    command = list(config.tests.command) if config.tests.command else None
    detected = command is None
    if command is None:
        found = detect_test_command(repo_root)
        if found is None:
            return TestsOutcome("skipped")
        command = list(found)
    env = command_env(repo_root, group_id)
    executable = resolve_executable(command[0], repo_root=repo_root, path=env.get("PATH"))
    if executable is None:
        if detected:
            warning = f"test runner {command[0]!r} is not installed; tests skipped"
            return TestsOutcome("skipped", command=command, warning=warning)
        return TestsOutcome("failed", command=command, error=f"executable not found: {command[0]} ([tests].command)")
    try:
        async with TestsLock(lock_path):
            code, error = await _run(
                executable,
                command,
                repo_root=repo_root,
                env=env,
                log_path=log_path,
                timeout=config.tests.timeout_seconds,
                grace=config.agent.grace_seconds,
            )
    except StateError as exc:  # tests.lock unusable (a symlink planted in its place)
        return TestsOutcome("failed", command=command, error=str(exc))
    if error is not None:
        return TestsOutcome("failed", code, command, error)
    return TestsOutcome("passed", 0, command)
