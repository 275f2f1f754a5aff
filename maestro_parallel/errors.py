"""The one exception tree of maestro_parallel.

Every error the library raises on purpose derives from :class:`MaestroError`.
Errors about bad input also derive from :class:`ValueError`, so callers that
only know the builtins can still catch them::

    MaestroError
     ├── ValidationError (+ ValueError)   a group, task or tasks file breaks the contract
     ├── ConfigError (+ ValueError)       config.toml has an unknown key or a wrong type
     ├── GroupBusyError                   another live coordinator holds the group's lock
     ├── GroupNotFoundError (+ LookupError)  no stored state for that group id
     ├── StateError                       stored state cannot be read or written
     ├── TrackerError                     the tracker failed, hung or printed garbage
     └── AsyncContextError (+ RuntimeError)  the blocking facade was called inside an event loop

Failures of the work itself (an agent failing, a test suite failing) are never
raised: they are recorded in the group's metadata.  Only cancellation and
programming errors propagate besides the errors above.
"""

from __future__ import annotations

__all__ = (
    "AsyncContextError",
    "ConfigError",
    "GroupBusyError",
    "GroupNotFoundError",
    "MaestroError",
    "StateError",
    "TrackerError",
    "ValidationError",
)


class MaestroError(Exception):
    """Root of every error maestro_parallel raises on purpose."""


class ValidationError(MaestroError, ValueError):
    """Raised when a group, a task or a tasks file breaks the contract."""


class ConfigError(MaestroError, ValueError):
    """Raised when the configuration has an unknown key, a wrong type or a bad value.

    :param key: the dotted key at fault, such as ``agent.timeout_seconds``.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class GroupBusyError(MaestroError):
    """Raised when another live coordinator holds the lock of the group.

    :param holder_pid: the pid written by the holder, when it could be read.
    """

    def __init__(self, message: str, *, group_id: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.group_id = group_id
        self.holder_pid = holder_pid


class GroupNotFoundError(MaestroError, LookupError):
    """Raised when no state is stored for a group id."""

    def __init__(self, group_id: str) -> None:
        super().__init__(f"no such group: {group_id}")
        self.group_id = group_id


class StateError(MaestroError):
    """Raised when a group's stored state cannot be read or written."""


class TrackerError(MaestroError):
    """Raised when the tracker fails, times out or answers with something unparseable.

    :param stderr: the tracker's own error output, folded to one line.
    """

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class AsyncContextError(MaestroError, RuntimeError):
    """Raised when the blocking facade is called from inside a running event loop."""
