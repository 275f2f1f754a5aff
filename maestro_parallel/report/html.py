"""Render a report as one self-contained HTML file: inline CSS and SVG, no script, no network (pure).

Every piece of text from the journal, the tasks or the logs is HTML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from .model import Attempt, GroupView, PlanView

__all__ = ("STATUS_COLOURS", "render_group_report", "render_plan_report")

STATUS_COLOURS = {
    "completed": "#2e9d5b",
    "failed": "#d64545",
    "timed_out": "#e08a1e",
    "running": "#3b7dd8",
    "in_progress": "#3b7dd8",
    "blocked": "#9aa0a6",
    "skipped": "#c3c7cc",
    "halted": "#8e6bbf",
    "waiting": "#e3e5e8",
    "pending": "#e3e5e8",
    "passed": "#2e9d5b",
}
PHASE_COLOURS = {
    "pre_execution": "#c9daf8",
    "concurrent_execution": "#b6d7a8",
    "coordination": "#ffe599",
    "post_execution": "#f4cccc",
}

_LABEL = 190  # px for row labels
_WIDTH = 760  # px for the time axis
_ROW = 26
_PAD = 110  # px right of the axis, for labels past the last moment

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2328;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px}section>h2:first-child{margin-top:4px}
.meta{color:#57606a;margin:0 0 12px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-size:12px;vertical-align:middle}
.problems{background:#fff4e5;border:1px solid #f0b429;border-radius:6px;padding:8px 12px;margin:10px 0}
.errors{background:#fdecec;border:1px solid #e5a3a3;border-radius:6px;padding:8px 12px;margin:10px 0}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 18px;margin:16px 0}
table{border-collapse:collapse;width:100%;margin:10px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;font-size:13px}
th{color:#57606a;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f6f8fa;border:1px solid #eaeef2;border-radius:6px;padding:8px;overflow:auto;max-height:320px;white-space:pre-wrap}
details{margin:4px 0}summary{cursor:pointer;color:#0969da}
.legend span{display:inline-block;margin-right:14px;font-size:12px;color:#57606a}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:4px;vertical-align:-1px}
svg text{font:12px system-ui,sans-serif;fill:#1f2328}
svg .axis text{fill:#57606a;font-size:11px}
svg .small{font-size:10px;fill:#fff}
"""


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "#9aa0a6")


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{_colour(status)}">{escape(status)}</span>'


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)} min {seconds:.0f} s"


def _tick(span: float) -> float:
    for step in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if span / step <= 10:
            return step
    return float(10 ** math.ceil(math.log10(span / 10)))


class _Scale:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.span = max(end - start, 0.001)

    def x(self, moment: float) -> float:
        return _LABEL + (moment - self.start) / self.span * _WIDTH

    def axis(self, y: float, height: float) -> str:
        step = _tick(self.span)
        parts = ['<g class="axis">']
        count = int(self.span / step) + 1
        for index in range(count + 1):
            offset = index * step
            if offset > self.span + 1e-9:
                break
            x = _LABEL + offset / self.span * _WIDTH
            parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + height}" stroke="#eaeef2"/>')
            parts.append(f'<text x="{x:.1f}" y="{y - 4}" text-anchor="middle">{offset:g}s</text>')
        parts.append("</g>")
        return "".join(parts)


def _legend(items: Sequence[str]) -> str:
    spans = "".join(f'<span><i style="background:{_colour(s)}"></i>{escape(s.replace("_", " "))}</span>' for s in items)
    return f'<div class="legend">{spans}</div>'


def _attempt_status(attempt: Attempt) -> str:
    return "timed_out" if attempt.timed_out else attempt.status


def _timeline(view: GroupView, now: float) -> str:
    span = view.span()
    if span is None:
        return '<p class="meta">No task has started yet.</p>'
    end = max(span[1], now if view.running else span[1])
    scale = _Scale(span[0], end)
    rows = len(view.tasks) + 2  # phases, tasks, test gate
    height = 30 + rows * _ROW + 10
    out = [
        f'<svg role="img" aria-label="timeline of group {escape(view.group_id)}" width="{_LABEL + _WIDTH + _PAD}" '
        f'height="{height}" viewBox="0 0 {_LABEL + _WIDTH + _PAD} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    out.append(scale.axis(24, rows * _ROW))
    y = 30
    out.append(f'<text x="4" y="{y + 16}">phases</text>')
    for phase in view.phases:
        x1, x2 = scale.x(phase.start), scale.x(phase.end if phase.end is not None else end)
        name = phase.name.replace("_", " ")
        out.append(
            f'<rect x="{x1:.1f}" y="{y + 3}" width="{max(x2 - x1, 1):.1f}" height="{_ROW - 8}" rx="3" '
            f'fill="{PHASE_COLOURS.get(phase.name, "#ddd")}"><title>{escape(name)}: {_seconds((phase.end or end) - phase.start)}'
            f"</title></rect>"
        )
        if x2 - x1 > 7 * len(name):
            out.append(f'<text x="{x1 + 4:.1f}" y="{y + 16}" style="font-size:10px">{escape(name)}</text>')
    for task in view.tasks:
        y += _ROW
        out.append(f'<text x="4" y="{y + 16}">{escape(_short(task.task_id, 26))}</text>')
        if not task.attempts:
            out.append(
                f'<text x="{_LABEL + 4}" y="{y + 16}" style="fill:#57606a">{escape(task.status)}'
                f"{': ' + escape(_short(task.error or '', 80)) if task.error else ''}</text>"
            )
        for attempt in task.attempts:
            x1 = scale.x(attempt.start)
            x2 = scale.x(attempt.end if attempt.end is not None else end)
            status = _attempt_status(attempt)
            tip = f"{task.task_id} attempt {attempt.number}: {status.replace('_', ' ')}, {_seconds((attempt.end or end) - attempt.start)}"
            if attempt.error:
                tip += f" - {attempt.error}"
            out.append(
                f'<rect x="{x1:.1f}" y="{y + 3}" width="{max(x2 - x1, 2):.1f}" height="{_ROW - 8}" rx="4" '
                f'fill="{_colour(status)}"><title>{escape(tip)}</title></rect>'
            )
            if len(task.attempts) > 1 and x2 - x1 > 22:
                out.append(f'<text class="small" x="{x1 + 4:.1f}" y="{y + 16}">#{attempt.number}</text>')
    y += _ROW
    out.append(f'<text x="4" y="{y + 16}">test gate</text>')
    if view.tests is not None and view.tests.at is not None:
        x = scale.x(view.tests.at)
        colour = _colour(
            "completed" if view.tests.status == "passed" else ("failed" if view.tests.status == "failed" else "skipped")
        )
        out.append(
            f'<path d="M{x:.1f},{y + 4} l8,9 l-8,9 l-8,-9 z" fill="{colour}"><title>tests {escape(view.tests.status)}'
            f"{': ' + escape(view.tests.error) if view.tests.error else ''}</title></path>"
        )
        out.append(f'<text x="{x + 12:.1f}" y="{y + 16}" style="fill:#57606a">tests {escape(view.tests.status)}</text>')
    else:
        out.append(f'<text x="{_LABEL + 4}" y="{y + 16}" style="fill:#57606a">not run yet</text>')
    out.append("</svg>")
    return "".join(out)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _task_table(view: GroupView) -> str:
    head = (
        "<tr><th>task</th><th>status</th><th>subagent</th><th>attempts</th><th>cost</th><th>tokens</th>"
        "<th>changed files</th><th>merge</th><th>error / warnings</th></tr>"
    )
    rows = []
    for task in view.tasks:
        notes = [escape(task.error)] if task.error else []
        notes += [f'<span style="color:#9a6700">{escape(w)}</span>' for w in task.warnings]
        timeouts = sum(a.timed_out for a in task.attempts)
        attempts = (
            f"{len(task.attempts)}"
            + (f" ({task.retries} retried)" if task.retries else "")
            + (f", {timeouts} timed out" if timeouts else "")
        )
        files = "<br>".join(f"<code>{escape(f)}</code>" for f in task.changed_files) or "-"
        rows.append(
            f'<tr id="task-{escape(task.task_id)}"><td><code>{escape(task.task_id)}</code></td>'
            f"<td>{_badge(task.status)}{' closed' if task.closed else ''}</td>"
            f"<td>{escape(task.subagent or '-')}</td><td>{escape(attempts)}</td>"
            f'<td class="num">{f"${task.cost_usd:.4f}" if task.cost_usd is not None else "-"}</td>'
            f'<td class="num">{task.tokens if task.tokens is not None else "-"}</td>'
            f"<td>{files}</td><td>{escape(task.merge or '-')}</td><td>{'<br>'.join(notes) or '-'}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _logs(view: GroupView) -> str:
    parts = []
    for task in view.tasks:
        if task.log_tail is not None:
            parts.append(
                f"<details><summary>log tail: {escape(task.task_id)}</summary><pre>{escape(task.log_tail)}</pre></details>"
            )
    if view.tests is not None and view.tests.log_tail is not None:
        parts.append(
            f"<details><summary>log tail: test gate</summary><pre>{escape(view.tests.log_tail)}</pre></details>"
        )
    return "".join(parts)


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<div class="problems"><strong>Could not read everything:</strong><ul>{items}</ul></div>'


def _errors(errors: Sequence[str]) -> str:
    if not errors:
        return ""
    items = "".join(f"<li>{escape(e)}</li>" for e in errors)
    return f'<div class="errors"><strong>Errors</strong><ul>{items}</ul></div>'


def _group_section(view: GroupView, now: float) -> str:
    duration = (view.ended or now) - view.started if view.started is not None else None
    return (
        f'<section id="group-{escape(view.group_id)}"><h2>Group <code>{escape(view.group_id)}</code> {_badge(view.status)}</h2>'
        f'<p class="meta">started {_when(view.started)} · {"ran" if not view.running else "running for"} '
        f"{_seconds(duration)} · {len(view.tasks)} task{'s' * (len(view.tasks) != 1)}</p>"
        f"{_problems(view.problems)}{_errors(view.errors)}"
        f"{_legend(['completed', 'failed', 'timed_out', 'running', 'blocked'])}"
        f"{_timeline(view, now)}{_task_table(view)}{_logs(view)}</section>"
    )


def _page(title: str, body: str, *, refresh: float | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def render_group_report(view: GroupView, *, now: float, refresh: float | None = None) -> str:
    """One group's report; ``refresh`` (seconds) makes a browser reload it while the group runs."""
    body = (
        f"<h1>maestro-parallel · group {escape(view.group_id)}</h1>"
        f'<p class="meta">report written {_when(now)}{" · the group is still running" if view.running else ""}</p>'
        f"{_group_section(view, now)}"
    )
    return _page(f"group {view.group_id}", body, refresh=refresh if view.running else None)


def _plan_timeline(plan: PlanView, now: float) -> str:
    started = [s.start for s in plan.steps if s.start is not None]
    if not started:
        return '<p class="meta">No step has started yet.</p>'
    ends = [s.end for s in plan.steps if s.end is not None] + ([now] if plan.running else [])
    scale = _Scale(min(started), max(ends + started))
    height = 30 + len(plan.steps) * _ROW + 10
    out = [
        f'<svg role="img" aria-label="plan timeline" width="{_LABEL + _WIDTH + _PAD}" height="{height}" '
        f'viewBox="0 0 {_LABEL + _WIDTH + _PAD} {height}" xmlns="http://www.w3.org/2000/svg">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#57606a"/></marker></defs>',
        scale.axis(24, len(plan.steps) * _ROW),
    ]
    rows = {step.step_id: index for index, step in enumerate(plan.steps)}
    bars: dict[str, tuple[float, float, float]] = {}
    for index, step in enumerate(plan.steps):
        y = 30 + index * _ROW
        weight = "font-weight:700" if step.critical else ""
        out.append(f'<text x="4" y="{y + 16}" style="{weight}">{escape(_short(step.label, 26))}</text>')
        if step.start is None:
            out.append(
                f'<text x="{_LABEL + 4}" y="{y + 16}" style="fill:#57606a">{escape(step.status)}'
                f"{': ' + escape(_short(step.detail, 90)) if step.detail else ''}</text>"
            )
            continue
        x1, x2 = scale.x(step.start), scale.x(step.end if step.end is not None else now)
        stroke = ' stroke="#f2b705" stroke-width="3"' if step.critical else ""
        tip = (
            f"{step.label}: {step.status}"
            + (f" ({step.detail})" if step.detail else "")
            + f", tasks {', '.join(step.tasks)}"
        )
        out.append(
            f'<rect x="{x1:.1f}" y="{y + 3}" width="{max(x2 - x1, 2):.1f}" height="{_ROW - 8}" rx="4" '
            f'fill="{_colour(step.status)}"{stroke}><title>{escape(tip)}</title></rect>'
        )
        bars[step.step_id] = (x1, x2, y + _ROW / 2 - 1)
    for step in plan.steps:
        if step.step_id not in bars:
            continue
        x1, _, y_mid = bars[step.step_id]
        for target in step.waits_for:
            if target in bars and target in rows:
                _, tx2, ty = bars[target]
                critical = step.critical and target in plan.critical_path
                colour = "#f2b705" if critical else "#57606a"
                out.append(
                    f'<path d="M{tx2:.1f},{ty:.1f} C{tx2 + 20:.1f},{ty:.1f} {x1 - 20:.1f},{y_mid:.1f} {x1:.1f},{y_mid:.1f}" '
                    f'fill="none" stroke="{colour}" stroke-width="{2 if critical else 1.2}" marker-end="url(#arrow)"/>'
                )
    out.append("</svg>")
    return "".join(out)


def _plan_table(plan: PlanView) -> str:
    head = "<tr><th>step</th><th>status</th><th>tasks</th><th>waits for</th><th>ran</th><th>detail</th></tr>"
    rows = []
    for step in plan.steps:
        ran = _seconds(step.end - step.start) if step.start is not None and step.end is not None else "-"
        mark = " ★ critical" if step.critical else ""
        rows.append(
            f"<tr><td><code>{escape(step.label)}</code>{escape(mark)}</td><td>{_badge(step.status)}</td>"
            f"<td>{', '.join(f'<code>{escape(t)}</code>' for t in step.tasks)}</td>"
            f"<td>{escape(', '.join(step.waits_for) or '-')}</td><td>{escape(ran)}</td><td>{escape(step.detail or '-')}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def render_plan_report(plan: PlanView, *, now: float, refresh: float | None = None) -> str:
    """Every step of a plan on one timeline (dependencies as arrows, the critical path in gold), then each group."""
    labels = {s.step_id: s.label for s in plan.steps}
    path = " → ".join(labels.get(s, s) for s in plan.critical_path) or "-"
    body = (
        f"<h1>maestro-parallel · plan {_badge(plan.status)}</h1>"
        f'<p class="meta">report written {_when(now)} · {len(plan.steps)} steps · critical path: {escape(path)}</p>'
        f"{_problems(plan.problems)}"
        f"<section><h2>Steps</h2>{_legend(['completed', 'failed', 'running', 'blocked', 'skipped', 'halted', 'waiting'])}"
        f'<div class="legend"><span><i style="background:#fff;border:3px solid #f2b705;width:8px;height:8px"></i>critical path</span></div>'
        f"{_plan_timeline(plan, now)}{_plan_table(plan)}</section>"
        + "".join(_group_section(view, now) for view in plan.groups.values())
    )
    return _page("plan", body, refresh=refresh if plan.running else None)
