"""HTML reports: built from the journal (pure), the report command, and a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import agent_config, task, write_config

from maestro_parallel.cli import main
from maestro_parallel.models import GroupMetadata
from maestro_parallel.report.html import render_group_report, render_plan_report
from maestro_parallel.report.model import build_group_view, build_plan_view, parse_time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]


def invoke(repo: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--repo-root", str(repo), *args])


def at(seconds: float) -> str:
    whole = int(seconds)
    return f"2026-11-30T10:00:{whole:02d}.{int((seconds - whole) * 1000):03d}Z"


def ev(name: str, t: float, **fields: Any) -> dict[str, Any]:
    return {"event": name, "at": at(t), **fields}


JOURNAL = [
    ev("group_started", 0, tasks=["t-1", "t-2", "t-3"], schema=1),
    ev("phase_changed", 0.5, phase="concurrent_execution"),
    ev("task_prepared", 0.5, task_id="t-1", subagent="backend-architect"),
    ev("task_prepared", 0.5, task_id="t-2", subagent="frontend-developer"),
    ev("task_started", 1, task_id="t-1", attempt=1),
    ev("task_started", 1, task_id="t-2", attempt=1),
    ev("task_blocked", 1, task_id="t-3", error="blocked by: ghost"),
    ev("phase_changed", 1, phase="coordination"),
    ev("task_retry", 3, task_id="t-1", attempt=1, reason="rate limited", delay_seconds=1),
    ev("task_started", 4, task_id="t-1", attempt=2),
    ev("task_finished", 6, task_id="t-2", status="failed", exit_code=None, error="timed out after 5s"),
    ev("task_finished", 8, task_id="t-1", status="completed", exit_code=0, error=None,
       extra={"cost_usd": 0.25, "usage": {"input_tokens": 100, "output_tokens": 20}, "changed_files": ["src/a.py"]}),
    ev("merge_conflict", 9, task_id="t-2", files=["web/<b>.css"]),
    ev("phase_changed", 9, phase="post_execution"),
    ev("tests_finished", 10, status="passed", exit_code=0),
    ev("group_finished", 10, status="failed"),
]


def test_the_view_keeps_every_attempt_and_what_each_task_did() -> None:
    view = build_group_view("g", JOURNAL, None, log_tails={"t-1": "last line <of> log"})
    tasks = {t.task_id: t for t in view.tasks}
    assert [t.task_id for t in view.tasks] == ["t-1", "t-2", "t-3"]
    one = tasks["t-1"]
    assert [(a.number, a.status) for a in one.attempts] == [(1, "running"), (2, "completed")]  # a retry's first launch
    assert one.retries == 1 and one.cost_usd == 0.25 and one.tokens == 120 and one.changed_files == ["src/a.py"]
    assert one.subagent == "backend-architect" and one.log_tail == "last line <of> log"
    two = tasks["t-2"]
    assert two.attempts[0].timed_out and two.merge == "conflict: web/<b>.css"
    assert tasks["t-3"].status == "blocked" and not tasks["t-3"].attempts
    assert [p.name for p in view.phases] == ["pre_execution", "concurrent_execution", "coordination", "post_execution"]
    assert view.phases[-1].end == parse_time(at(10))
    assert view.tests is not None and view.tests.status == "passed" and view.status == "failed"


def test_every_text_is_escaped_and_nothing_is_fetched() -> None:
    journal = JOURNAL + [ev("group_error", 10, message="<script>alert(1)</script>")]
    html = render_group_report(build_group_view("g", journal, None, log_tails={"t-1": "</pre><img src=x>"}), now=parse_time(at(11)))
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "&lt;/pre&gt;&lt;img src=x&gt;" in html
    assert "web/&lt;b&gt;.css" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<details><summary>log tail: t-1</summary>" in html


def test_a_running_group_is_drawn_up_to_now_and_reloads() -> None:
    running = JOURNAL[:6]
    view = build_group_view("g", running, None)
    assert view.running
    html = render_group_report(view, now=parse_time(at(2)), refresh=2)
    assert '<meta http-equiv="refresh" content="2">' in html
    assert "still running" in html
    finished = render_group_report(build_group_view("g", JOURNAL, None), now=parse_time(at(11)), refresh=2)
    assert "http-equiv" not in finished


def test_without_a_journal_the_snapshot_is_drawn() -> None:
    meta = GroupMetadata.from_dict({
        "group_id": "g", "group_name": "Parallel Group g", "phase": "post_execution", "tasks": ["a"],
        "created_at": at(0), "started_at": at(0), "completed_at": at(3), "status": "completed",
        "results": [{"task_id": "a", "subagent": "x", "status": "completed", "started_at": at(1), "completed_at": at(2),
                     "skills_applied": [], "exit_code": 0, "error": None, "attempts": 1, "warnings": [],
                     "log_path": "l", "cost_usd": 0.5}],
        "errors": [], "pre_group_refresh_completed": True,
    })
    view = build_group_view("g", [], meta, problems=["the journal is missing"])
    assert view.status == "completed" and view.tasks[0].attempts[0].end == parse_time(at(2))
    assert view.tasks[0].cost_usd == 0.5
    assert "the journal is missing" in render_group_report(view, now=parse_time(at(4)))


def test_a_plan_draws_dependencies_and_the_critical_path() -> None:
    document = {
        "status": "completed",
        "critical_path": {"steps": ["A", "B"]},
        "steps": [
            {"step": "A", "group_id": "A", "tasks": ["a1"], "waits_for": [], "status": "completed", "started_at": at(0), "ended_at": at(4)},
            {"step": "B", "group_id": "B", "tasks": ["b1"], "waits_for": ["A"], "status": "completed", "started_at": at(4), "ended_at": at(6)},
            {"step": "_sequential:s1", "group_id": "_sequential", "tasks": ["s1"], "waits_for": [], "status": "skipped",
             "detail": "waits for X (failed)"},
        ],
    }
    plan = build_plan_view(document, {})
    assert [s.label for s in plan.steps] == ["A", "B", "s1 (sequential)"]
    assert [s.critical for s in plan.steps] == [True, True, False]
    html = render_plan_report(plan, now=parse_time(at(7)))
    assert html.count('stroke="#f2b705" stroke-width="3"') == 2  # both critical bars outlined
    assert 'marker-end="url(#arrow)"' in html  # B's dependency on A
    assert "waits for X (failed)" in html and "critical path: A → B" in html


# --------------------------------------------------------------------------- the command, on real runs


def run_group(repo: Path, tasks: list[dict[str, Any]], group: str = "g") -> None:
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    invoke(repo, "execute", "--group-id", group, "--tasks-file", str(path))


def test_report_command_exit_codes_and_json(repo: Path) -> None:
    run_group(repo, [task("ok-1", "print=hello"), task("bad-1", "exit=3")])
    result = invoke(repo, "report", "--group-id", "g", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    path = Path(document["path"])
    assert path == repo / ".flow" / "maestro" / "reports" / "g.html"
    assert document["problems"] == [] and document["running"] is False
    html = path.read_text()
    assert "ok-1" in html and "bad-1" in html and "hello" in html  # the log tail
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700  # it quotes logs
    out = repo / "out" / "r.html"
    people = invoke(repo, "report", "--group-id", "g", "--output", str(out))
    assert people.exit_code == 0 and people.stdout.strip() == str(out) and out.is_file()
    assert invoke(repo, "report", "--group-id", "nope").exit_code == 1
    assert invoke(repo, "report", "--plan").exit_code == 1  # no plan ran here
    for bad in (["--group-id", "../x"], [], ["--group-id", "g", "--plan"]):
        refused = invoke(repo, "report", *bad)
        assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1


def test_a_torn_or_missing_journal_is_said_and_the_rest_drawn(repo: Path) -> None:
    run_group(repo, [task("t-a"), task("t-b")])
    journal = repo / ".flow" / "maestro" / "parallel_groups" / "g" / "events.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]) + b'{"event":"task_sta')
    result = invoke(repo, "report", "--group-id", "g", "--json")
    assert result.exit_code == 0
    problems = json.loads(result.stdout)["problems"]
    assert problems == [
        "1 line of the journal could not be read and was left out",
        "the last line of the journal is incomplete (being written, or its writer died) and was left out",
    ]
    html = Path(json.loads(result.stdout)["path"]).read_text()
    assert "t-a" in html and "t-b" in html and "could not be read" in html
    journal.unlink()
    result = invoke(repo, "report", "--group-id", "g", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["problems"] == [
        "the journal (events.jsonl) is missing: attempts before the last one are not shown"
    ]
    assert "t-a" in Path(json.loads(result.stdout)["path"]).read_text()


def test_report_of_a_plan_run(repo: Path) -> None:
    tasks = [task("a1", group="A"), task("b1", group="B", dependencies=["a1"]),
             {"id": "s1", "title": "s1", "description": ""}]
    path = repo / "tasks.json"
    path.write_text(json.dumps(tasks))
    assert invoke(repo, "run", "--tasks-file", str(path)).exit_code == 0
    result = invoke(repo, "report", "--plan", "--json")
    assert result.exit_code == 0, result.stderr
    html = Path(json.loads(result.stdout)["path"]).read_text()
    for text in ("a1", "b1", "s1 (sequential)", 'id="group-A"', 'id="group-B"', 'id="group-_sequential"'):
        assert text in html


# --------------------------------------------------------------------------- a real browser


def png_variety(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the image data): a blank page has a handful, a drawing many."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat = 8, b""
    width = height = 0
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        body = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, timeout=90, cwd=tmp)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does it in CI)")
def test_the_report_renders_in_a_real_chromium(repo: Path, tmp_path: Path) -> None:
    write_config(repo, agent_config())
    tasks = [task("api-1", "sleep=0.2 print=done"), task("api-2", "sleep=0.4"), task("ui-9", "exit=2")]
    run_group(repo, tasks)
    result = invoke(repo, "report", "--group-id", "g", "--json")
    page = Path(json.loads(result.stdout)["path"]).as_uri()

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,900", page, tmp=tmp_path)
    width, height, variety = png_variety(shot.read_bytes())
    assert (width, height) == (1100, 900)
    assert variety > 40, variety  # not blank: text, bars of several colours

    dom = chromium("--dump-dom", page, tmp=tmp_path).stdout.decode()
    for task_id in ("api-1", "api-2", "ui-9"):
        assert f'id="task-{task_id}"' in dom
    assert "<svg" in dom and "timeline of group g" in dom


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_blank_page_would_fail_the_variety_check(tmp_path: Path) -> None:
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>")
    shot = tmp_path / "blank.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,900", blank.as_uri(), tmp=tmp_path)
    assert png_variety(shot.read_bytes())[2] <= 40


def test_watch_follows_a_running_group_to_its_end(repo: Path) -> None:
    path = repo / "tasks.json"
    path.write_text(json.dumps([task("slow-1", "sleep=1.5"), task("quick-1")]))
    cli = [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo)]
    runner = subprocess.Popen([*cli, "execute", "--group-id", "g", "--tasks-file", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        journal = repo / ".flow" / "maestro" / "parallel_groups" / "g" / "events.jsonl"
        deadline = time.monotonic() + 30
        while b'"task_started"' not in (journal.read_bytes() if journal.exists() else b""):  # the group is running
            assert time.monotonic() < deadline and runner.poll() is None
            time.sleep(0.05)
        out = repo / "watch.html"
        watcher = subprocess.run([*cli, "report", "--group-id", "g", "--output", str(out), "--watch", "--json"],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert watcher.returncode == 0, watcher.stderr
    assert json.loads(watcher.stdout)["running"] is True  # the first picture was of a running group
    assert "(the run has ended)" in watcher.stderr
    final = out.read_text()
    assert "http-equiv" not in final and 'id="task-slow-1"' in final and "still running" not in final


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does it in CI)")
def test_a_plan_report_renders_in_a_real_chromium(repo: Path, tmp_path: Path) -> None:
    tasks = [task("a1", "sleep=0.3", group="A"), task("a2", group="A"), task("b1", group="B", dependencies=["a1"]),
             task("p1", group="P", dependencies=["ghost"]), {"id": "s1", "title": "s1", "description": "exit=4"}]
    (repo / "tasks.json").write_text(json.dumps(tasks))
    assert invoke(repo, "run", "--tasks-file", str(repo / "tasks.json"), "--concurrent-steps").exit_code == 1
    page = Path(json.loads(invoke(repo, "report", "--plan", "--json").stdout)["path"]).as_uri()
    shot = tmp_path / "plan.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,900", page, tmp=tmp_path)
    assert png_variety(shot.read_bytes())[2] > 40
    dom = chromium("--dump-dom", page, tmp=tmp_path).stdout.decode()
    for task_id in ("a1", "a2", "b1", "p1", "s1"):
        assert f"<code>{task_id}</code>" in dom
    assert "waits for a task that exists nowhere: ghost" in dom and 'aria-label="plan timeline"' in dom
