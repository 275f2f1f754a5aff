"""Helpers shared by the test modules: the recording agent, its config, task objects, process checks.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``); fixtures stay in
``conftest.py``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

#: An agent that records when it ran, then behaves as its task's description says.
#: Description words it understands: "sleep=<s>", "exit=<n>", "print=<text>",
#: "grandchild" (starts a `sleep 60` in its process group and leaves it).
AGENT = r'''
import json, os, re, subprocess, sys, time
task = sys.argv[1]
prompt = open(os.environ["MAESTRO_PROMPT_FILE"], encoding="utf-8").read()
def opt(name, default=None):
    m = re.search(r"\b" + name + r"=(\S+)", prompt)
    return m.group(1) if m else default
record = os.path.join(os.environ["MAESTRO_REPO_ROOT"], "runs.jsonl")
start = time.time()
if "grandchild" in prompt:  # before "start" is recorded, so a recorded start implies its pid file
    child = subprocess.Popen(["sleep", "60"])
    with open(os.path.join(os.environ["MAESTRO_REPO_ROOT"], f"grandchild-{task}.pid"), "w") as f:
        f.write(str(child.pid))
with open(record, "a") as f:
    f.write(json.dumps({"task": task, "event": "start", "t": start, "pid": os.getpid()}) + "\n")
print(opt("print", f"{task} working"), flush=True)
time.sleep(float(opt("sleep", "0")))
with open(record, "a") as f:
    f.write(json.dumps({"task": task, "event": "end", "t": time.time(), "pid": os.getpid()}) + "\n")
sys.exit(int(opt("exit", "0")))
'''


def write_config(repo: Path, text: str) -> None:
    folder = repo / ".flow" / "maestro"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(textwrap.dedent(text))


def agent_config(*, extra: str = "", agent: str = "agent.py", poll: float = 0.2) -> str:
    """A config running ``agent`` with this interpreter; no refresh, no tests."""
    return f"""
[agent]
command = [{json.dumps(sys.executable)}, "{agent}", "{{task_id}}"]
timeout_seconds = 60
grace_seconds = 1

[refresh]
enabled = false

[tests]
enabled = false

[tracker]
kind = "local"
poll_interval_seconds = {poll}
{extra}
"""


def task(task_id: str, description: str = "", group: str = "g", **extra: Any) -> dict[str, Any]:
    """A task object as a tasks file holds it, with the group's marker."""
    return {"id": task_id, "title": f"task {task_id}", "description": f"[P:Group-{group}] {description}", **extra}


def runs(repo: Path) -> list[dict[str, Any]]:
    """What the recording agent wrote: one dict per start and per end."""
    path = repo / "runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
