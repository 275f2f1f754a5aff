"""The errors of worktree isolation, under :class:`~maestro_parallel.errors.MaestroError`::

    MaestroError
     └── IsolationError                      isolation cannot do what was asked
          ├── GitError                       one git command failed (argv, exit code, stderr)
          │    └── GitTimeoutError           ... or ran past its timeout and was killed
          ├── GitUnavailableError            git is missing or older than 2.38
          ├── ModeUnavailableError (+ ValueError)  mode = "worktree" where it cannot work, and why
          ├── TargetError (+ ValueError)     no target: detached HEAD, missing branch, no commit
          ├── WorktreeError                  a worktree path or branch is in the way
          ├── IncludeError (+ ValueError)    .worktreeinclude names a symlink or a path outside
          ├── SetupError                     the setup command failed or hung
          └── CommitError                    the agent left its worktree where nothing can be committed

A per-task failure (setup, commit, a merge conflict) is raised to the caller,
which records it as that task's error; each message is one line meant for people.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MaestroError

__all__ = (
    "CommitError",
    "GitError",
    "GitTimeoutError",
    "GitUnavailableError",
    "IncludeError",
    "IsolationError",
    "ModeUnavailableError",
    "SetupError",
    "TargetError",
    "WorktreeError",
)


class IsolationError(MaestroError):
    """Raised when worktree isolation cannot do what was asked."""


def _fold(text: str, limit: int = 300) -> str:
    """The last meaningful line of ``text`` (git puts the reason there), bounded."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    hint_free = [line for line in lines if not line.startswith("hint:")]
    line = (hint_free or lines or [""])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


class GitError(IsolationError):
    """Raised when a git command exits non-zero.

    :param argv: the command as run (``git -C <path> ...``).
    :param returncode: its exit code (None when it was killed).
    :param stderr: its error output, whole.
    """

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{self.command} failed ({self._how()}): {_fold(stderr) or 'no output'}")

    @property
    def command(self) -> str:
        """The command, shortened to what a person needs to recognise it."""
        shown = list(self.argv)
        return " ".join(shown[:8]) + (" ..." if len(shown) > 8 else "")

    def _how(self) -> str:
        return "killed" if self.returncode is None else f"exit code {self.returncode}"


class GitTimeoutError(GitError):
    """Raised when a git command runs past its timeout (its process group is killed)."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr: str = "") -> None:
        self.timeout = timeout
        super().__init__(argv, None, stderr)
        self.args = (f"{self.command} timed out after {timeout:g} s",)


class GitUnavailableError(IsolationError):
    """Raised when git is not on PATH or is older than the version isolation needs."""


class ModeUnavailableError(IsolationError, ValueError):
    """Raised when ``mode = "worktree"`` is asked for where it cannot work; the message says why."""


class TargetError(IsolationError, ValueError):
    """Raised when the target branch cannot be resolved (detached HEAD, no such branch, no commit)."""


class WorktreeError(IsolationError):
    """Raised when a task's worktree path or branch exists and is not ours to reuse."""


class IncludeError(IsolationError, ValueError):
    """Raised when ``.worktreeinclude`` matches a symlink or reaches outside the repository."""


class SetupError(IsolationError):
    """Raised when the ``setup`` command exits non-zero or runs past its timeout.

    :param log_path: where its output went.
    """

    def __init__(self, message: str, *, log_path: str | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


class CommitError(IsolationError):
    """Raised when a task's work cannot be committed on its branch."""
