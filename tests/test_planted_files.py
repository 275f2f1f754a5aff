"""What an agent can plant where maestro reads a repository's own files: a FIFO, a device, a folder.

Variations of the probe's item 2 (docs/RELIABILITY.md) beyond the logs and the group state: the
configuration, the tasks file, agent and skill definitions, the project files that name the test
command, git's ``info/exclude``, and what ``report`` reads.  Each is refused in one line, or read
as absent, and never hangs a command (every run is bounded: a hang is a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from isolation_support import make_repo as make_git_repo
from test_hostile_probe import agent_script, execute, groups, replace_section, repo, run_cli, task, write_tasks

__all__ = ("repo",)  # the fixture, shared with the probe

PY = sys.executable


def _plant_fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)


# --------------------------------------------------------------------------- the configuration


def test_a_config_that_is_a_fifo_or_a_device_is_refused_in_one_line(repo: Path) -> None:
    config = repo / ".flow" / "maestro" / "config.toml"
    tasks = write_tasks(repo, [task("a")])
    _plant_fifo(config)
    for args in (("detect", "--tasks-file", str(tasks)), ("execute", "--group-id", "g", "--tasks-file", str(tasks))):
        done = run_cli(repo, *args, timeout=30)
        assert not done.hung and done.returncode == 2, done
        line = done.one_line_error()
        assert "config.toml" in line and "a FIFO, not a regular file" in line
    config.unlink()
    config.symlink_to("/dev/zero")
    done = run_cli(repo, "detect", "--tasks-file", str(tasks), timeout=30)
    assert not done.hung and done.returncode == 2
    assert "a character device, not a regular file" in done.one_line_error()


# --------------------------------------------------------------------------- the tasks file


def test_a_tasks_file_on_a_pipe_is_read_once_and_a_device_is_refused(repo: Path) -> None:
    pipe = repo / "tasks.pipe"
    os.mkfifo(pipe)
    document = json.dumps([task("a"), task("b")]).encode()

    def feed() -> None:
        with open(pipe, "wb") as handle:  # blocks until the command opens the pipe
            handle.write(document)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    done = run_cli(repo, "detect", "--tasks-file", str(pipe), "--json", timeout=30)
    writer.join(5)
    assert not done.hung and done.returncode == 0, done
    assert "a" in json.dumps(done.document()) and "b" in json.dumps(done.document())
    for path, kind in (("/dev/zero", "a character device"), (str(repo), "a folder")):
        done = run_cli(repo, "detect", "--tasks-file", path, timeout=30)
        assert not done.hung and done.returncode == 2
        assert f"it is {kind}, not a file" in done.one_line_error()


def test_a_tasks_file_swapped_for_a_fifo_while_agents_run_hangs_nothing(repo: Path) -> None:
    write_tasks(repo, [task("a")])
    agent_script(
        repo,
        """
        import os, time
        os.unlink("tasks.json")
        os.mkfifo("tasks.json")  # the tracker's next poll opens it
        time.sleep(1.0)
        """,
    )
    done = execute(repo, timeout=60)
    assert not done.hung, done
    document = done.document()
    assert [r["status"] for r in document["results"]] == ["completed"]
    messages = " ".join(str(w) for w in document.get("warnings", [])) + done.stderr + json.dumps(document)
    assert "a FIFO, not a regular file" in messages


# --------------------------------------------------------------------------- agent and skill definitions


def test_agent_and_skill_files_planted_as_fifos_or_devices_are_skipped(repo: Path) -> None:
    agents = repo / ".claude" / "agents"
    _plant_fifo(agents / "planted.md")
    (agents / "zero.md").symlink_to("/dev/zero")
    _plant_fifo(repo / ".claude" / "skills" / "deploy" / "SKILL.md")
    write_tasks(repo, [task("a", applicable_skills=["deploy"])])
    done = execute(repo, timeout=60)
    assert not done.hung, done
    assert [r["status"] for r in done.document()["results"]] == ["completed"]


# --------------------------------------------------------------------------- the files that name the test command


def test_project_files_that_name_the_tests_planted_as_fifos_are_read_as_absent(repo: Path) -> None:
    replace_section(repo, "tests", "enabled = true")  # no command: it is guessed from the project's files
    _plant_fifo(repo / "pyproject.toml")
    (repo / "package.json").symlink_to("/dev/zero")
    _plant_fifo(repo / "tox.ini")
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=60)
    assert not done.hung, done
    assert done.document()["status"] == "completed"


# --------------------------------------------------------------------------- git's info/exclude


def test_an_info_exclude_planted_as_a_fifo_fails_the_group_in_one_line(tmp_path: Path) -> None:
    root = make_git_repo(tmp_path / "git-repo", {"README.md": "hello\n"})
    (root / ".flow" / "maestro").mkdir(parents=True)
    (root / ".flow" / "maestro" / "config.toml").write_text(
        f'[agent]\ncommand = [{json.dumps(PY)}, "-c", "pass"]\n\n[isolation]\nmode = "worktree"\n\n'
        '[refresh]\nenabled = false\n\n[tests]\nenabled = false\n\n[tracker]\nkind = "local"\n'
    )
    _plant_fifo(root / ".git" / "info" / "exclude")
    write_tasks(root, [task("a")])
    done = execute(root, timeout=60)
    assert not done.hung and done.returncode == 1, done
    errors = " ".join(done.document()["errors"])
    assert "info/exclude" in errors and "a FIFO, not a regular file" in errors


# --------------------------------------------------------------------------- what report reads


def test_report_reads_a_journal_or_log_planted_as_a_fifo_as_missing(repo: Path, tmp_path: Path) -> None:
    write_tasks(repo, [task("a")])
    assert execute(repo, timeout=60).returncode == 0
    folder = groups(repo) / "g"
    _plant_fifo(folder / "events.jsonl")
    _plant_fifo(folder / "logs" / "a.log")
    out = tmp_path / "report.html"
    done = run_cli(repo, "report", "--group-id", "g", "--output", str(out), timeout=30)
    assert not done.hung and done.returncode == 0, done
    assert "events.jsonl" in out.read_text()  # the report says the journal could not be read


def test_status_and_list_are_not_held_by_a_planted_snapshot_fifo(repo: Path) -> None:
    write_tasks(repo, [task("a")])
    assert execute(repo, timeout=60).returncode == 0
    _plant_fifo(groups(repo) / "g" / "metadata.json")
    for args in (("list",), ("status", "--group-id", "g")):
        done = run_cli(repo, *args, timeout=30)
        assert not done.hung, (args, done)


def test_a_pipe_for_the_tasks_is_still_usable_from_a_shell() -> None:
    """``--tasks-file <(...)`` is a shell's FIFO: the command reads it once (the probe above covers the rest)."""
    script = f'{json.dumps(PY)} -m maestro_parallel detect --tasks-file <(echo \'[{{"id": "x", "title": "t"}}]\')'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 task" in done.stdout


# --------------------------------------------------------------------------- the locks


def test_a_tests_lock_planted_as_a_fifo_fails_the_tests_in_one_line(repo: Path) -> None:
    replace_section(repo, "tests", f'enabled = true\ncommand = [{json.dumps(PY)}, "-c", "pass"]')
    _plant_fifo(repo / ".flow" / "maestro" / "tests.lock")
    write_tasks(repo, [task("a")])
    done = execute(repo, timeout=60)
    assert not done.hung and done.returncode == 1 and "Traceback" not in done.stderr, done
    assert done.document()["errors"] == [
        f"tests: cannot use the lock file {repo / '.flow' / 'maestro' / 'tests.lock'}: it is a FIFO, never written to"
    ]


def test_a_group_lock_planted_as_a_fifo_or_a_hard_link_is_never_used_or_written(repo: Path, tmp_path: Path) -> None:
    write_tasks(repo, [task("a")])
    assert execute(repo, timeout=60).returncode == 0
    lock = groups(repo) / "g" / ".lock"
    _plant_fifo(lock)
    for args in (("status", "--group-id", "g"), ("list",), ("wait", "--group-id", "g", "--timeout", "5")):
        done = run_cli(repo, *args, timeout=30)
        assert not done.hung and done.returncode == 0, (args, done)
    done = execute(repo, "--restart", timeout=60)
    assert not done.hung and done.returncode == 1
    assert done.one_line_error().endswith(f"cannot use the lock file {lock}: it is a FIFO, never written to")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    lock.unlink()
    os.link(precious, lock)  # a hard link: the pid record would truncate the file it shares
    done = execute(repo, "--restart", timeout=60)
    assert not done.hung and done.returncode == 1
    assert "it has other hard links, never written to" in done.one_line_error()
    assert precious.read_text() == "keep me\n"
