"""What the fake ``claude`` and ``codex`` in this folder share.

Each fake records every call as one JSON file (argv, chosen environment
variables, start time, pid) in ``$FAKE_AGENT_RECORDS`` (default
``<cwd>/.fake-agents``), refuses to run when ``CLAUDECODE`` is set or when stdin
is a terminal or does not read EOF at once, and takes its behaviour from the
prompt: ``FAKE:<mode>`` chooses what happens and ``FAKE:<option>=<value>``
adjusts it (``cost``, ``turns``, ``sleep``, ``exit``).  Without a mode in the
prompt, ``$FAKE_<CLI>_MODE`` (then ``success``) applies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

STARTED = time.time()
_WORD = re.compile(r"\bFAKE:([a-z_]+)(?:=([A-Za-z0-9_.:-]+))?")
_OPTIONS = frozenset({"cost", "turns", "sleep", "exit"})


def die(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``, as a CLI does on bad usage."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def records_dir() -> Path:
    """Where calls are recorded."""
    return Path(os.environ.get("FAKE_AGENT_RECORDS") or Path.cwd() / ".fake-agents")


def _stdin_state() -> str:
    try:
        if os.isatty(0):
            return "tty"
        ready, _, _ = select.select([0], [], [], 2.0)
        if not ready:
            return "open: no EOF within 2s"
        data = os.read(0, 1)
    except OSError as exc:
        return f"unusable: {exc.strerror or exc}"
    return "eof" if data == b"" else "data"


def record(cli: str, argv: list[str], **fields: Any) -> dict[str, Any]:
    """Write this call's record (atomically) and return it."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("MAESTRO_", "FAKE_"))}
    entry = {
        "cli": cli,
        "argv": argv,
        "start": STARTED,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "env": env,
        "claudecode": "CLAUDECODE" in os.environ,
        "stdin": _stdin_state(),
        **fields,
    }
    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{cli}-{time.time_ns()}-{os.getpid()}.json"
    temp = folder / f".{name}.tmp"
    temp.write_text(json.dumps(entry, ensure_ascii=False))
    os.replace(temp, folder / name)
    return entry


def check_call(entry: dict[str, Any]) -> None:
    """Refuse what a real headless run would choke on: a nested session, a live stdin."""
    if entry["claudecode"]:
        die(
            "Error: Claude Code cannot be launched inside another Claude Code session.\n"
            "Nested sessions share runtime resources and will crash all active sessions.\n"
            "To bypass this check, unset the CLAUDECODE environment variable."
        )
    if entry["stdin"] != "eof":
        die(f"fake {entry['cli']}: stdin must be /dev/null in headless runs (stdin is {entry['stdin']})")


def behaviour(prompt: str, cli: str, modes: frozenset[str]) -> tuple[str, dict[str, str]]:
    """The mode and options the prompt (or ``$FAKE_<CLI>_MODE``) asks for; a typo is an error."""
    mode: str | None = None
    options: dict[str, str] = {}
    for name, value in _WORD.findall(prompt):
        if name in _OPTIONS and value:
            options[name] = value
        elif name in modes and not value:
            mode = mode or name
        else:
            die(f"fake {cli}: unknown behaviour word FAKE:{name}{'=' + value if value else ''}", 3)
    mode = mode or os.environ.get(f"FAKE_{cli.upper()}_MODE") or "success"
    if mode not in modes:
        die(f"fake {cli}: unknown mode {mode!r}", 3)
    return mode, options


def pause(options: dict[str, str]) -> None:
    """Sleep as long as ``FAKE:sleep=<seconds>`` asks."""
    if "sleep" in options:
        time.sleep(float(options["sleep"]))


def hang() -> NoReturn:
    """Never finish on its own, like a CLI waiting on a request without a timeout."""
    while True:
        time.sleep(3600)


def first_time(cli: str, prompt: str) -> bool:
    """True on the first call for this task (its state lives in the records folder)."""
    key = os.environ.get("MAESTRO_TASK_ID") or hashlib.sha256(prompt.encode("utf-8", "surrogateescape")).hexdigest()
    marker = records_dir() / "state" / f"{cli}-{key}.seen"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(marker, "x"):
            return True
    except FileExistsError:
        return False


def relevant_files(prompt: str) -> list[str]:
    """The paths listed under ``## Relevant files`` in a maestro-parallel prompt."""
    paths: list[str] = []
    lines = prompt.splitlines()
    try:
        start = lines.index("## Relevant files")
    except ValueError:
        return paths
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("- "):
            paths.append(line[2:].strip())
    return paths


def task_title(prompt: str) -> str:
    """The task's title from the prompt's ``## Task <id>: <title>`` line."""
    match = re.search(r"^## Task [^:\n]+: ?(.*)$", prompt, re.MULTILINE)
    return match.group(1).strip() if match else prompt.strip().splitlines()[0] if prompt.strip() else ""


def write_files(paths: list[str], text: str) -> list[str]:
    """Write ``text`` into each path inside the working directory; return the absolute paths written."""
    root = Path.cwd().resolve()
    written: list[str] = []
    for relative in paths:
        target = (root / relative).resolve()
        if os.path.isabs(relative) or root not in target.parents:
            die(f"refusing to write outside the repository: {relative}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(str(target))
    return written


def new_id() -> str:
    """A fresh UUID, the shape both CLIs use for session and thread ids."""
    return str(uuid.uuid4())


def elapsed_ms() -> int:
    """Milliseconds since this fake started."""
    return int((time.time() - STARTED) * 1000)


def emit(obj: Any) -> None:
    """Print one JSON document on one line, the way both CLIs do."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()
