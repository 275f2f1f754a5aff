"""The one way isolation runs git: ``git -C <path> ...``, bounded, in a clean environment.

Every call goes through :func:`run_git`, so every git call has a timeout (its
process group killed when it passes), never inherits ``GIT_DIR`` and friends
from the caller (a coordinator started from a git hook would otherwise act on
the wrong repository), never waits for a password prompt, and fails with one
line that names the command.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._proc import run_process
from .errors import GitError, GitTimeoutError, GitUnavailableError

__all__ = (
    "FALLBACK_EMAIL",
    "FALLBACK_NAME",
    "GIT_TIMEOUT_SECONDS",
    "MIN_GIT_VERSION",
    "GitResult",
    "git_environment",
    "git_version",
    "identity_environment",
    "parse_git_version",
    "require_git",
    "run_git",
    "scrub_git_variables",
)

#: The oldest git isolation supports: ``git merge-tree --write-tree`` arrived in 2.38.
MIN_GIT_VERSION = (2, 38)
#: The default bound of one git call; checkouts of large trees take seconds, not minutes.
GIT_TIMEOUT_SECONDS = 300.0
#: The identity maestro commits as when git has none configured.
FALLBACK_NAME = "maestro-parallel"
FALLBACK_EMAIL = "maestro-parallel@localhost"

#: Variables that point git at another repository, index or object store than the one named by ``-C``.
_REPOSITORY_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


def scrub_git_variables(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that would redirect git to another repository.

    Used for git calls and for agents' environments alike (DESIGN §12).
    """
    return {name: value for name, value in env.items() if name not in _REPOSITORY_VARIABLES}


def git_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a git call: the caller's, scrubbed, never prompting, plus ``extra``."""
    env = scrub_git_variables(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a credential prompt would hang until the timeout
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class GitResult:
    """A finished git call; ``stdout`` is decoded with ``surrogateescape`` so odd paths round-trip."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def lines(self) -> list[str]:
        """Non-empty lines of stdout."""
        return [line for line in self.stdout.splitlines() if line]

    def zsplit(self) -> list[str]:
        """Fields of a ``-z`` output."""
        return [field for field in self.stdout.split("\0") if field]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


async def run_git(
    path: str | os.PathLike[str],
    *args: str,
    timeout: float = GIT_TIMEOUT_SECONDS,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None,
) -> GitResult:
    """Run ``git -C <path> [-c k=v ...] <args>``.

    :param check: raise :class:`GitError` on a non-zero exit (else return the result).
    :param env: extra variables over :func:`git_environment`.
    :param config: ``-c`` settings for this call only.
    :raises GitTimeoutError: past ``timeout`` (the process group is killed first).
    :raises GitUnavailableError: git is not on PATH.
    """
    argv = ["git", "-C", os.fspath(path)]
    for key, value in (config or {}).items():
        argv += ["-c", f"{key}={value}"]
    argv += args
    try:
        done = await run_process(
            argv, cwd=os.fspath(path) if Path(path).is_dir() else ".", env=git_environment(env), timeout=timeout
        )
    except FileNotFoundError as exc:
        raise GitUnavailableError("git is not installed (not found on PATH)") from exc
    stderr = _decode(done.stderr)
    if done.timed_out:
        raise GitTimeoutError(argv, timeout, stderr)
    result = GitResult(
        tuple(argv), done.returncode if done.returncode is not None else -1, _decode(done.stdout), stderr
    )
    if check and not result.ok:
        raise GitError(argv, done.returncode, stderr)
    return result


_VERSION = re.compile(r"git version (\d+)\.(\d+)(?:\.(\d+))?")


def parse_git_version(text: str) -> tuple[int, int, int] | None:
    """``git version 2.39.5`` (also ``2.39.3 (Apple Git-145)``, ``2.40.1.windows.1``) -> (2, 39, 5)."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


async def git_version() -> tuple[int, int, int]:
    """The version of the git on PATH.

    :raises GitUnavailableError: git is missing or its version cannot be read.
    """
    if shutil.which("git") is None:
        raise GitUnavailableError("git is not installed (not found on PATH)")
    result = await run_git(".", "--version", timeout=30)
    version = parse_git_version(result.stdout)
    if version is None:
        raise GitUnavailableError(f"cannot read git's version from {result.stdout.strip()!r}")
    return version


def _format(version: Sequence[int]) -> str:
    return ".".join(str(part) for part in version)


async def require_git(minimum: tuple[int, int] = MIN_GIT_VERSION) -> tuple[int, int, int]:
    """Check that git ≥ ``minimum`` is on PATH; return its version.

    :raises GitUnavailableError: naming the version found and the one needed.
    """
    version = await git_version()
    if version[:2] < minimum:
        raise GitUnavailableError(
            f"git {_format(version)} is too old: worktree isolation needs git ≥ {_format(minimum)}"
        )
    return version


async def identity_environment(path: str | os.PathLike[str]) -> dict[str, str]:
    """Variables giving commits the fallback identity, for whichever half git lacks; {} when configured.

    An identity set by the caller's environment (``GIT_AUTHOR_NAME``, ``EMAIL``...) or
    any config level counts as configured, so the user's own identity always wins.
    """
    result = await run_git(path, "config", "--get-regexp", r"^user\.(name|email)$", check=False, timeout=30)
    configured = {line.split(" ", 1)[0].lower() for line in result.lines()}
    env: dict[str, str] = {}
    for role in ("AUTHOR", "COMMITTER"):
        if "user.name" not in configured and not os.environ.get(f"GIT_{role}_NAME"):
            env[f"GIT_{role}_NAME"] = FALLBACK_NAME
        if "user.email" not in configured and not os.environ.get(f"GIT_{role}_EMAIL") and not os.environ.get("EMAIL"):
            env[f"GIT_{role}_EMAIL"] = FALLBACK_EMAIL
    return env
