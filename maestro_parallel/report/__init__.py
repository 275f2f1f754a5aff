"""Reports of runs as one self-contained HTML file, built from the journal.

``model`` turns a group's events and snapshot into what is drawn (pure),
``html`` draws it (pure: inline CSS and SVG, every text escaped), ``load``
reads the files, and :func:`write_report` puts them together.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .html import render_group_report, render_plan_report
from .load import load_group_view, load_plan_view
from .model import GroupView, PlanView

__all__ = ("GroupView", "PlanView", "build_report", "load_group_view", "load_plan_view", "render_group_report",
           "render_plan_report", "write_report")


def build_report(
    repo_root: str | os.PathLike[str], *, group_id: str | None = None, refresh: float | None = None
) -> tuple[str, list[str], bool] | None:
    """The HTML of a group's report (``group_id``) or of the last plan (None); its problems; whether it still runs.

    Returns None when there is no such group (or no plan ran here).
    """
    now = time.time()
    if group_id is not None:
        view = load_group_view(repo_root, group_id)
        if view is None:
            return None
        return render_group_report(view, now=now, refresh=refresh), list(view.problems), view.running
    plan = load_plan_view(repo_root)
    if plan is None:
        return None
    problems = list(plan.problems) + [f"{g}: {p}" for g, v in plan.groups.items() for p in v.problems]
    return render_plan_report(plan, now=now, refresh=refresh), problems, plan.running


def write_report(path: Path, html: str) -> None:
    """Write the file so a browser reloading it never sees half of it.

    Private (folder 0700, file 0600) like the logs it quotes, which can hold secrets.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(html.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
