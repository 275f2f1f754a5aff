"""The command line: exit codes, stdout/stderr separation, --json, bad input, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import pid_alive, runs, task, write_config

from maestro_parallel import __version__
from maestro_parallel.cli import main


def invoke(repo: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--repo-root", str(repo), *args], input=input)


def write_tasks(repo: Path, tasks: Any, name: str = "tasks.json") -> str:
    path = repo / name
    path.write_text(tasks if isinstance(tasks, str) else json.dumps(tasks))
    return str(path)


def groups_folder(repo: Path) -> Path:
    return repo / ".flow" / "maestro" / "parallel_groups"


PLAN = [
    task("i1", group="infra"),
    task("i2", group="infra"),
    task("a1", group="auth-flow"),
    {"id": "s1", "title": "sequential", "description": "no marker"},
    {"id": "old", "title": "closed", "description": "[P:Group-infra] done", "status": "closed"},
    {"id": "t1", "title": "[P:Group-auth-flow] marker in the title", "description": ""},
]


# --------------------------------------------------------------------------- detect


def test_detect_json(repo: Path) -> None:
    result = invoke(repo, "detect", "--tasks-file", write_tasks(repo, PLAN), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "total_tasks": 5,
        "parallel_groups": 2,
        "groups": {"infra": ["i1", "i2"], "auth-flow": ["a1", "t1"], "_sequential": ["s1"]},
    }
    assert result.stderr == ""


def test_detect_for_people_and_a_malformed_marker_warning(repo: Path) -> None:
    tasks = [*PLAN, {"id": "m", "description": "[P:Group-a.b] malformed"}]
    result = invoke(repo, "detect", "--tasks-file", write_tasks(repo, tasks))
    assert result.exit_code == 0
    assert "infra (2): i1, i2" in result.stdout
    assert "_sequential (2): s1, m" in result.stdout
    assert result.stderr.startswith("warning: task m: ") and "[P:Group-a.b]" in result.stderr


def test_detect_reads_standard_input(repo: Path) -> None:
    result = invoke(repo, "detect", "--tasks-file", "-", "--json", input=json.dumps(PLAN))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["parallel_groups"] == 2


# --------------------------------------------------------------------------- execute


def test_execute_json_completed(repo: Path) -> None:
    result = invoke(repo, "execute", "--group-id", "infra", "--tasks-file", write_tasks(repo, PLAN), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["group_id"] == "infra" and document["status"] == "completed"
    assert document["tasks"] == ["i1", "i2"]  # the closed task of the group is not run
    assert [r["closed"] for r in document["results"]] == [True, True]
    assert "i1 started" in result.stderr  # progress goes to stderr


def test_execute_exit_codes_failed_and_blocked(repo: Path) -> None:
    tasks = [task("bad", "exit=5", group="f"), task("dep", group="b", dependencies=["nowhere"])]
    path = write_tasks(repo, tasks)
    failed = invoke(repo, "execute", "--group-id", "f", "--tasks-file", path)
    assert failed.exit_code == 1
    assert "bad" in failed.stdout and "exit code 5" in failed.stdout
    blocked = invoke(repo, "execute", "--group-id", "b", "--tasks-file", path, "--json")
    assert blocked.exit_code == 3
    assert json.loads(blocked.stdout)["status"] == "blocked"


def test_execute_from_standard_input_with_an_agent_command(repo: Path) -> None:
    command = f"{sys.executable} -c \"import sys; print('hello from', sys.argv[1])\" {{task_id}}"
    result = invoke(
        repo, "execute", "--group-id", "g", "--tasks-file", "-", "--agent-command", command, "--json",
        input=json.dumps([task("one")]),
    )
    assert result.exit_code == 0, result.stderr
    log = groups_folder(repo) / "g" / "logs" / "one.log"
    assert log.read_text() == "hello from one\n"


def test_execute_quiet_prints_no_progress(repo: Path) -> None:
    result = CliRunner().invoke(
        main, ["-q", "--repo-root", str(repo), "execute", "--group-id", "g", "--tasks-file",
               write_tasks(repo, [task("a")]), "--json"]
    )
    assert result.exit_code == 0
    assert result.stderr == ""
    json.loads(result.stdout)


def test_a_group_whose_tasks_are_all_closed_has_nothing_to_run(repo: Path) -> None:
    tasks = [{"id": "x", "description": "[P:Group-g] done", "status": "closed"}]
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", write_tasks(repo, tasks), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == "completed"
    assert not groups_folder(repo).exists()


def test_the_cli_flags_override_the_config(repo: Path) -> None:
    tasks = [task("slow", "sleep=30")]
    result = invoke(
        repo, "execute", "--group-id", "g", "--tasks-file", write_tasks(repo, tasks), "--task-timeout", "0.5", "--json"
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["results"][0]["error"] == "timed out after 0.5s"


BAD_INPUTS = [
    ("malformed JSON", ["execute", "--group-id", "g", "--tasks-file", "{tasks}"], "[{"),
    ("wrong type", ["execute", "--group-id", "g", "--tasks-file", "{tasks}"], [task("a", priority="high")]),
    ("duplicate ids", ["execute", "--group-id", "g", "--tasks-file", "{tasks}"], [task("a"), task("a")]),
    ("unsafe id", ["execute", "--group-id", "g", "--tasks-file", "{tasks}"], [task("../a")]),
    ("option-like id", ["execute", "--group-id", "g", "--tasks-file", "{tasks}"], [task("--help")]),
    ("dotdot group", ["execute", "--group-id", "../x", "--tasks-file", "{tasks}"], [task("a")]),
    ("absolute group", ["execute", "--group-id", "/abs", "--tasks-file", "{tasks}"], [task("a")]),
    ("empty group", ["execute", "--group-id", "", "--tasks-file", "{tasks}"], [task("a")]),
    ("long group", ["execute", "--group-id", "x" * 65, "--tasks-file", "{tasks}"], [task("a")]),
    ("unknown group", ["execute", "--group-id", "nope", "--tasks-file", "{tasks}"], [task("a")]),
    ("missing group option", ["execute", "--tasks-file", "{tasks}"], [task("a")]),
    ("no task source", ["execute", "--group-id", "g"], [task("a")]),
    ("two task sources", ["execute", "--group-id", "g", "--tasks-file", "{tasks}", "--from-beads"], [task("a")]),
    ("missing tasks file", ["execute", "--group-id", "g", "--tasks-file", "/nonexistent/tasks.json"], [task("a")]),
    ("bad agent command", ["execute", "--group-id", "g", "--tasks-file", "{tasks}", "--agent-command", "a 'b"], [task("a")]),
    ("negative timeout", ["execute", "--group-id", "g", "--tasks-file", "{tasks}", "--timeout", "-1"], [task("a")]),
    ("unknown option", ["execute", "--group-id", "g", "--tasks-file", "{tasks}", "--frobnicate"], [task("a")]),
    ("detect malformed", ["detect", "--tasks-file", "{tasks}"], '{"tasks": 3}'),
    ("status bad id", ["status", "--group-id", "../etc"], []),
    ("wait bad id", ["wait", "--group-id", "a/b"], []),
    ("list bad status", ["list", "--status", "done"], []),
]


@pytest.mark.parametrize("json_mode", [False, True], ids=["human", "json"])
@pytest.mark.parametrize(("name", "args", "tasks"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    repo: Path, name: str, args: list[str], tasks: Any, json_mode: bool
) -> None:
    path = write_tasks(repo, tasks)
    argv = [a.replace("{tasks}", path) for a in args] + (["--json"] if json_mode else [])
    result = invoke(repo, *argv)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    if json_mode:
        assert json.loads(result.stdout) == {"error": lines[0][len("Error: "):]}
    else:
        assert result.stdout == ""
    assert not groups_folder(repo).exists()


def test_a_config_with_an_unknown_key_is_exit_2(repo: Path) -> None:
    write_config(repo, "[agent]\ntimout_seconds = 3\n")
    result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", write_tasks(repo, [task("a")]), "--json")
    assert result.exit_code == 2
    message = json.loads(result.stdout)["error"]
    assert "[agent].timout_seconds" in message and "timeout_seconds" in message
    assert not groups_folder(repo).exists()


def test_an_explicit_config_file_must_exist(repo: Path) -> None:
    result = CliRunner().invoke(main, ["--repo-root", str(repo), "--config", str(repo / "nope.toml"), "detect",
                                       "--tasks-file", write_tasks(repo, [task("a")])])
    assert result.exit_code == 2
    assert "nope.toml" in result.stderr


# --------------------------------------------------------------------------- list, status, wait


def test_list_status_and_wait(repo: Path) -> None:
    path = write_tasks(repo, [task("a", group="one"), task("b", "exit=1", group="two")])
    assert invoke(repo, "execute", "--group-id", "one", "--tasks-file", path).exit_code == 0
    assert invoke(repo, "execute", "--group-id", "two", "--tasks-file", path).exit_code == 1

    listed = invoke(repo, "list", "--json")
    assert listed.exit_code == 0
    assert [g["group_id"] for g in json.loads(listed.stdout)] == ["two", "one"]
    only_failed = invoke(repo, "list", "--status", "failed", "--json")
    assert [g["group_id"] for g in json.loads(only_failed.stdout)] == ["two"]
    people = invoke(repo, "list")
    assert "one" in people.stdout and "completed" in people.stdout

    status = invoke(repo, "status", "--group-id", "one", "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["status"] == "completed"
    assert json.loads(status.stdout)["stale"] is False
    missing = invoke(repo, "status", "--group-id", "zzz", "--json")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout) == {"error": "no such group: zzz"}

    done = invoke(repo, "wait", "--group-id", "one", "--json")
    assert (done.exit_code, json.loads(done.stdout)) == (0, {"group_id": "one", "completed": True, "status": "completed"})
    failed = invoke(repo, "wait", "--group-id", "two", "--json")
    assert failed.exit_code == 1 and json.loads(failed.stdout)["status"] == "failed"
    nothing = invoke(repo, "wait", "--group-id", "zzz", "--json")
    assert nothing.exit_code == 1


def test_an_unreadable_group_is_listed_with_its_error(repo: Path) -> None:
    folder = groups_folder(repo) / "broken"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text('{"group_id": "broken", "sta')
    listed = invoke(repo, "list", "--json")
    assert listed.exit_code == 0
    [entry] = json.loads(listed.stdout)
    assert entry["group_id"] == "broken" and "unreadable" in entry["error"]
    status = invoke(repo, "status", "--group-id", "broken")
    assert status.exit_code == 1
    assert len(status.stderr.strip().splitlines()) == 1


def cli_process(repo: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_wait_follows_a_group_run_by_another_process(repo: Path) -> None:
    path = write_tasks(repo, [task("a", "sleep=1.5")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path)
    try:
        wait_for(lambda: (groups_folder(repo) / "g" / "metadata.json").exists())
        waited = cli_process(repo, "wait", "--group-id", "g", "--json")
        out, _ = waited.communicate(timeout=60)
        assert waited.returncode == 0
        assert json.loads(out) == {"group_id": "g", "completed": True, "status": "completed"}
    finally:
        runner.communicate(timeout=60)


def test_wait_times_out_with_exit_3(repo: Path) -> None:
    path = write_tasks(repo, [task("a", "sleep=30")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path)
    try:
        wait_for(lambda: any(e["event"] == "start" for e in runs(repo)))
        result = invoke(repo, "wait", "--group-id", "g", "--timeout", "0.3", "--json")
        assert result.exit_code == 3
        document = json.loads(result.stdout)
        assert document["status"] == "in_progress" and document["completed"] is False
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=60)


def test_execute_is_refused_with_exit_4_while_another_coordinator_runs_the_group(repo: Path) -> None:
    path = write_tasks(repo, [task("a", "sleep=30")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path)
    try:
        wait_for(lambda: any(e["event"] == "start" for e in runs(repo)))
        result = invoke(repo, "execute", "--group-id", "g", "--tasks-file", path, "--json")
        assert result.exit_code == 4
        assert f"pid {runner.pid}" in json.loads(result.stdout)["error"]
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=60)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_execute_stops_every_agent(repo: Path, signum: int, code: int) -> None:
    path = write_tasks(repo, [task("a", "sleep=60 grandchild"), task("b", "sleep=60")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path, "--json")
    wait_for(lambda: len([e for e in runs(repo) if e["event"] == "start"]) == 2)
    sent = time.monotonic()
    runner.send_signal(signum)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == code
    assert time.monotonic() - sent < 1 + 10  # grace (1 s) plus a bounded shutdown
    assert b"Traceback" not in err
    document = json.loads(out)
    name = signal.Signals(signum).name
    assert document["status"] == "failed"
    assert {r["error"] for r in document["results"]} == {"interrupted"}
    assert f"run interrupted by {name}" in document["errors"]
    on_disk = json.loads((groups_folder(repo) / "g" / "metadata.json").read_text())
    assert on_disk["status"] == "failed"
    assert not any(pid_alive(e["pid"]) for e in runs(repo))
    assert not pid_alive(int((repo / "grandchild-a.pid").read_text()))


def test_version_and_module_entry_point() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    proc = subprocess.run([sys.executable, "-m", "maestro_parallel", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Exit codes" in proc.stdout


def test_recover_stops_the_agents_of_a_dead_coordinator(repo: Path) -> None:
    path = write_tasks(repo, [task("a", "sleep=60 grandchild"), task("b", "sleep=60"), task("c")])
    runner = cli_process(repo, "execute", "--group-id", "g", "--tasks-file", path)
    wait_for(lambda: len([e for e in runs(repo) if e["event"] == "start"]) == 3)
    wait_for(lambda: '"task_id":"c"' in (groups_folder(repo) / "g" / "events.jsonl").read_text()
             and '"event":"task_finished"' in (groups_folder(repo) / "g" / "events.jsonl").read_text())
    runner.kill()
    runner.communicate(timeout=30)
    agents = [e["pid"] for e in runs(repo) if e["event"] == "start" and e["task"] != "c"]
    grandchild = int((repo / "grandchild-a.pid").read_text())
    assert all(pid_alive(pid) for pid in [*agents, grandchild])

    stale = invoke(repo, "status", "--group-id", "g", "--json")
    assert json.loads(stale.stdout)["stale"] is True and json.loads(stale.stdout)["status"] == "in_progress"
    waited = invoke(repo, "wait", "--group-id", "g", "--json")
    assert waited.exit_code == 1 and json.loads(waited.stdout)["stale"] is True

    result = invoke(repo, "recover", "--group-id", "g", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert sorted(document["recovered"]) == ["a", "b"]
    assert document["status"] == "failed"
    results = {r["task_id"]: r for r in document["results"]}
    assert results["a"]["error"] == results["b"]["error"] == "interrupted"
    assert results["c"]["status"] == "completed"
    assert not any(pid_alive(pid) for pid in [*agents, grandchild])
    again = invoke(repo, "recover", "--group-id", "g", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["recovered"] == []
    assert invoke(repo, "recover", "--group-id", "nope").exit_code == 1


def test_the_program_tunes_the_garbage_collector_and_an_in_process_caller_keeps_its_own() -> None:
    """Fewer collections while a thousand agents run; a host that calls ``main`` keeps its thresholds and its collector."""
    import gc

    from maestro_parallel.__main__ import GC_THRESHOLDS

    code = (
        "import atexit, gc, runpy, sys\n"
        "atexit.register(lambda: print(gc.get_threshold(), gc.get_freeze_count() > 0))\n"
        "sys.argv = ['maestro-parallel', '--version']\n"
        "runpy.run_module('maestro_parallel', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Frozen at the end: the collection at shutdown skips what the run allocated.
    assert done.stdout.splitlines()[-1] == f"{GC_THRESHOLDS} True"
    before = gc.get_threshold()
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    assert gc.get_threshold() == before != GC_THRESHOLDS
    assert gc.get_freeze_count() == 0
