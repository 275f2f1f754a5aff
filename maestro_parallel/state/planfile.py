"""The record of the last whole-plan run: ``.flow/maestro/plan.json``.

``run`` rewrites it (atomically) whenever a step changes state, so a reader
(``report --plan``) sees the steps, what each waits for, the critical path and
each step's times while the plan runs.  Each step's tasks live in its group's
own folder (``parallel_groups/<group_id>/``), as for ``execute``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .._paths import PLAN_RELATIVE_PATH
from ..errors import StateError
from .fs import read_nofollow

__all__ = ("PLAN_FILE", "plan_file", "read_plan_file", "write_plan_file")

PLAN_FILE = PLAN_RELATIVE_PATH


def plan_file(repo_root: str | os.PathLike[str]) -> Path:
    return Path(repo_root) / PLAN_FILE


def write_plan_file(repo_root: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Replace the plan record at once (readers see the old or the new one, never a part)."""
    path = plan_file(repo_root)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    data = json.dumps(document, indent=1).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_plan_file(repo_root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The plan record, None when no plan ran here; :class:`StateError` when it is unreadable."""
    path = plan_file(repo_root)
    try:
        data = read_nofollow(path)  # a FIFO, a device or a symlink there is refused, never read
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data is None:
        return None
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise StateError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("steps"), list):
        raise StateError(f"{path} is not a plan record (no steps)")
    return document
