#!/usr/bin/env python3
"""A fake ``bd`` (beads CLI) for the tests: a small program with its own JSON state file.

It follows the JSON contract of the real ``bd`` (``../shared/beads-samples/README.md``):

- ``list [--all] [--limit N]``, ``ready [--limit N]``, ``blocked``: JSON arrays; ``list`` and
  ``ready`` items carry raw dependency records (``{"issue_id", "depends_on_id", "type"}``),
  ``blocked`` items add ``blocked_by`` / ``blocked_by_count``.  ``list`` hides closed issues and
  stops at 50 without ``--all --limit 0``; ``ready`` lists open, unblocked, non-ephemeral issues.
- ``show A B C`` (or ``--id=A``): embedded dependencies (the other issue plus ``dependency_type``);
  a missing id is skipped with ``Issue X not found`` on stderr; none found: exit 1 and
  ``{"error": ...}`` on stderr.
- ``update ID... --claim`` / ``--status S`` / ``--assignee A``; ``close ID... --reason R [--force]``:
  an array of the issues changed; each refused id gets a line on stderr and, under ``--json``, a
  final ``{"error", "failed": [{"id", "error"}]}`` line; partial success exits 0, nothing done exits 1.
  A claim is refused when another actor holds the issue; closing refuses open blockers.
- ``create TITLE [--id --description --type --priority --status --assignee --parent --deps --metadata
  --ephemeral]`` prints an object; ``dep add A B --type T``; ``init [--prefix P]``.
- ``--actor`` anywhere before ``--`` (else ``BEADS_ACTOR``, ``BD_ACTOR``); ``BD_JSON_ENVELOPE=1``
  wraps every payload as ``{"schema_version": 1, "data": ...}``; ids after ``--`` are ids even when
  they look like options; ``--help`` before ``--`` prints usage, as cobra does.

Environment: ``FAKE_BD_STATE`` (the state file, required), ``FAKE_BD_LOG`` (calls log, default
``<state>.calls.jsonl``: one JSON line per invocation with its argv, pid, session, cwd, stdin),
``FAKE_BD_DELAY`` (seconds for ``slow``), and ``FAKE_BD_MODE``: comma-separated failure modes,
each optionally limited to one command as ``mode@command``:

``warnings`` (``warning:`` lines on stdout before the JSON), ``envelope``, ``items`` (the
``{"items": [...]}`` envelope), ``garbage`` (not JSON on stdout, exit 0), ``empty`` (nothing on
stdout, an error on stderr, exit 0), ``fail`` (exit 1, ``{"error"}`` on stderr), ``hang`` (starts a
grandchild and sleeps forever), ``slow``, ``strict`` (partial writes exit 1, as recent bd does),
``plain-errors`` (no JSON summary of refused ids), ``legacy-claim`` (re-claiming one's own issue is
refused, as older bd did).

The helpers at the end (``seed``, ``issues``, ``calls``) are for the tests, which import this file.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BLOCKING = ("blocks", "conditional-blocks", "waits-for")
VALUE_FLAGS = {
    "--actor": "actor", "--limit": "limit", "-n": "limit", "--reason": "reason", "-r": "reason",
    "--type": "type", "-t": "type", "--description": "description", "-d": "description", "--id": "id",
    "--priority": "priority", "-p": "priority", "--status": "status", "-s": "status",
    "--assignee": "assignee", "-a": "assignee", "--parent": "parent", "--deps": "deps",
    "--metadata": "metadata", "--prefix": "prefix", "--db": "db", "--labels": "labels", "-l": "labels",
}
BOOL_FLAGS = {"--json", "--all", "--claim", "--force", "-f", "--ephemeral", "--quiet", "-q"}
REPEATABLE = {"id", "reason"}
USAGE = "bd (fake): issue tracker\n\nUsage:\n  bd [command]\n\nFlags:\n  -h, --help   help for bd\n"


class Fail(Exception):
    """Ends the program: ``message`` on stderr (as ``{"error"}`` under --json), exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- arguments


def parse(argv: list[str]) -> tuple[str | None, list[str], dict[str, Any]]:
    """(command, positional arguments, flags); ``--`` ends the flags."""
    command: str | None = None
    positional: list[str] = []
    flags: dict[str, Any] = {"id": [], "reason": []}
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            positional.extend(argv[index:])
            break
        if arg in ("--help", "-h"):
            flags["help"] = True
            continue
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name in BOOL_FLAGS:
                flags[name.lstrip("-")] = True
                continue
            if name not in VALUE_FLAGS:
                raise Fail(f"unknown flag: {name}")
            if not eq:
                if index >= len(argv):
                    raise Fail(f"flag needs an argument: {name}")
                value = argv[index]
                index += 1
            key = VALUE_FLAGS[name]
            if key in REPEATABLE:
                flags[key].append(value)
            else:
                flags[key] = value
            continue
        if command is None:
            command = arg
        else:
            positional.append(arg)
    return command, positional, flags


def modes_for(command: str | None) -> set[str]:
    active = set()
    for entry in os.environ.get("FAKE_BD_MODE", "").split(","):
        mode, _, only = entry.strip().partition("@")
        if mode and (not only or only == command):
            active.add(mode)
    return active


def stdin_kind() -> str:
    try:
        info = os.fstat(0)
    except OSError:
        return "closed"
    null = os.stat(os.devnull)
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == null.st_rdev:
        return "devnull"
    return "other"


# --------------------------------------------------------------------------- state


def state_path() -> Path:
    path = os.environ.get("FAKE_BD_STATE")
    if not path:
        raise Fail("FAKE_BD_STATE is not set")
    return Path(path)


def log_path() -> Path:
    return Path(os.environ.get("FAKE_BD_LOG") or f"{state_path()}.calls.jsonl")


@contextmanager
def locked_state(write: bool) -> Iterator[dict[str, Any]]:
    path = state_path()
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text()) if path.exists() else {"prefix": "fk", "next": 1, "issues": []}
        yield state
        if write:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, path)


def find(state: dict[str, Any], issue_id: str) -> dict[str, Any] | None:
    issue: dict[str, Any]
    for issue in state["issues"]:
        if issue["id"] == issue_id:
            return issue
    return None


def open_blockers(state: dict[str, Any], issue: dict[str, Any]) -> list[str]:
    """Direct blockers: targets of blocking dependencies that exist and are not closed."""
    found = []
    for dep in issue.get("dependencies") or []:
        target = find(state, dep["depends_on_id"])
        if dep.get("type") in BLOCKING and target is not None and target["status"] != "closed":
            found.append(target["id"])
    return found


def is_blocked(state: dict[str, Any], issue: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Direct blockers, or a parent that is itself blocked (what ``bd ready`` honours)."""
    if open_blockers(state, issue):
        return True
    for dep in issue.get("dependencies") or []:
        parent = find(state, dep["depends_on_id"]) if dep.get("type") == "parent-child" else None
        if (
            parent is not None
            and parent["id"] not in seen
            and parent["status"] != "closed"
            and is_blocked(state, parent, seen | {issue["id"]})
        ):
            return True
    return False


def list_item(issue: dict[str, Any]) -> dict[str, Any]:
    item = {k: v for k, v in issue.items() if k != "dependencies"}
    deps = issue.get("dependencies") or []
    if deps:
        item["dependencies"] = [dict(d) for d in deps]
    item.update(dependency_count=len(deps), dependent_count=0, comment_count=0)
    return item


def show_item(state: dict[str, Any], issue: dict[str, Any]) -> dict[str, Any]:
    item = {k: v for k, v in issue.items() if k != "dependencies"}
    embedded = []
    for dep in issue.get("dependencies") or []:
        target = find(state, dep["depends_on_id"])
        if target is not None:
            other = {k: v for k, v in target.items() if k != "dependencies"}
            other["dependency_type"] = dep.get("type", "blocks")
            embedded.append(other)
    if embedded:
        item["dependencies"] = embedded
    return item


def limit_of(flags: dict[str, Any], default: int) -> int:
    try:
        limit = int(flags.get("limit", default))
    except ValueError:
        raise Fail(f"invalid argument {flags.get('limit')!r} for --limit") from None
    return limit


# --------------------------------------------------------------------------- output


class Out:
    """Collects what the command prints, then prints it in the active mode."""

    def __init__(self, command: str | None, modes: set[str], as_json: bool) -> None:
        self.command = command
        self.modes = modes
        self.as_json = as_json
        self.stderr: list[str] = []

    def err(self, line: str) -> None:
        self.stderr.append(line)

    def emit(self, payload: Any, code: int = 0) -> int:
        for line in self.stderr:
            print(line, file=sys.stderr)
        if "garbage" in self.modes:
            print("<html><body>502 Bad Gateway</body></html>")
            print("fake bd: the server answered with an HTML page", file=sys.stderr)
            return 0
        if "empty" in self.modes:
            print("Error: database is locked (fake)", file=sys.stderr)
            return 0
        if "fail" in self.modes:
            print(json.dumps({"error": "database is locked (fake)"}), file=sys.stderr)
            return 1
        if payload is None:
            return code
        if "warnings" in self.modes:
            print("warning: beads.role not configured (fake)")
            print("Warning: this fake bd is older than the database (fake)")
        if os.environ.get("BD_JSON_ENVELOPE") == "1" or "envelope" in self.modes:
            payload = {"schema_version": 1, "data": payload}
        elif "items" in self.modes:
            payload = {"schema_version": 1, "items": payload}
        print(json.dumps(payload, indent=2))
        return code


# --------------------------------------------------------------------------- commands


def cmd_init(flags: dict[str, Any], out: Out) -> int:
    with locked_state(write=True) as state:
        if flags.get("prefix"):
            state["prefix"] = flags["prefix"]
    return out.emit({"status": "initialized", "prefix": flags.get("prefix", "fk")})


def cmd_create(args: list[str], flags: dict[str, Any], actor: str, out: Out) -> int:
    if len(args) != 1:
        raise Fail("create needs exactly one title")
    with locked_state(write=True) as state:
        issue_id = flags["id"][0] if flags["id"] else f"{state['prefix']}-{state['next']}"
        state["next"] += 1
        if find(state, issue_id) is not None:
            raise Fail(f"issue {issue_id} already exists")
        issue: dict[str, Any] = {
            "id": issue_id, "title": args[0], "description": flags.get("description", ""),
            "status": flags.get("status", "open"), "priority": int(flags.get("priority", 2)),
            "issue_type": flags.get("type", "task"), "created_at": now(), "created_by": actor,
            "updated_at": now(),
        }
        if flags.get("assignee"):
            issue["assignee"] = flags["assignee"]
        if flags.get("ephemeral"):
            issue["ephemeral"] = True
        if flags.get("metadata"):
            issue["metadata"] = json.loads(flags["metadata"])
        deps = []
        if flags.get("parent"):
            deps.append(("parent-child", flags["parent"]))
        for spec in filter(None, (flags.get("deps") or "").split(",")):
            kind, _, target = spec.rpartition(":")
            deps.append((kind or "blocks", target))
        issue["dependencies"] = [
            {"issue_id": issue_id, "depends_on_id": target, "type": kind, "created_at": now(),
             "created_by": actor, "metadata": "{}"}
            for kind, target in deps
        ]
        state["issues"].append(issue)
        return out.emit(list_item(issue))


def cmd_dep(args: list[str], flags: dict[str, Any], actor: str, out: Out) -> int:
    if len(args) != 3 or args[0] != "add":
        raise Fail("usage: dep add ISSUE DEPENDS_ON [--type T]")
    with locked_state(write=True) as state:
        issue = find(state, args[1])
        if issue is None:
            raise Fail(f"issue {args[1]} not found")
        issue.setdefault("dependencies", []).append(
            {"issue_id": args[1], "depends_on_id": args[2], "type": flags.get("type", "blocks"),
             "created_at": now(), "created_by": actor, "metadata": "{}"}
        )
    return out.emit({"status": "added", "issue_id": args[1], "depends_on_id": args[2]})


def cmd_list(flags: dict[str, Any], out: Out) -> int:
    with locked_state(write=False) as state:
        issues = [i for i in state["issues"] if flags.get("all") or i["status"] != "closed"]
    limit = limit_of(flags, 50)
    if limit > 0:
        issues = issues[:limit]
    return out.emit([list_item(i) for i in issues])


def cmd_ready(flags: dict[str, Any], out: Out) -> int:
    with locked_state(write=False) as state:
        ready = [
            list_item(i) for i in state["issues"]
            if i["status"] == "open" and not i.get("ephemeral") and not is_blocked(state, i)
        ]
    limit = limit_of(flags, 100)
    return out.emit(ready[:limit] if limit > 0 else ready)


def cmd_blocked(out: Out) -> int:
    with locked_state(write=False) as state:
        blocked = []
        for issue in state["issues"]:
            blockers = open_blockers(state, issue) if issue["status"] != "closed" else []
            if blockers:
                blocked.append({**list_item(issue), "blocked_by": blockers, "blocked_by_count": len(blockers)})
    return out.emit(blocked)


def cmd_show(args: list[str], flags: dict[str, Any], out: Out) -> int:
    wanted = [*args, *flags["id"]]
    if not wanted:
        raise Fail("at least one issue ID is required")
    found = []
    with locked_state(write=False) as state:
        for issue_id in wanted:
            issue = find(state, issue_id)
            if issue is None:
                out.err(f"Issue {issue_id} not found")
                out.err(f"Hint: this ID may have never existed — try 'bd history {issue_id}'")
                continue
            found.append(show_item(state, issue))
    if not found:
        raise Fail("no issues found matching the provided IDs")
    return out.emit(found)


def write_report(out: Out, verb: str, ids: list[str], done: list[dict[str, Any]],
                 failed: list[dict[str, str]]) -> int:
    """Partial success exits 0 (1 under ``strict``); nothing done exits 1."""
    if failed and out.as_json and "plain-errors" not in out.modes:
        out.err(json.dumps({"error": f"{len(failed)} of {len(ids)} issues failed to {verb}", "failed": failed,
                            "schema_version": 1}))
    code = 1 if (failed and (not done or "strict" in out.modes)) else 0
    return out.emit(done if done else None, code)


def cmd_update(args: list[str], flags: dict[str, Any], actor: str, out: Out) -> int:
    if not args:
        raise Fail("no issue ID provided")
    done: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    with locked_state(write=True) as state:
        for issue_id in args:
            issue = find(state, issue_id)
            error = None
            if issue is None:
                out.err(f"Issue {issue_id} not found")
                failed.append({"id": issue_id, "error": "issue not found"})
                continue
            if flags.get("claim"):
                error = claim_refusal(state, issue, actor, out.modes)
                if error is None:
                    issue.update(assignee=actor, status="in_progress", updated_at=now())
            if error is None and flags.get("status"):
                issue.update(status=flags["status"], updated_at=now())
                if flags["status"] == "closed":
                    issue["closed_at"] = now()
            if error is None and "assignee" in flags:
                issue["assignee"] = flags["assignee"]
            if error is not None:
                out.err(f"Error updating {issue_id}: updating issue: {error}")
                failed.append({"id": issue_id, "error": f"updating issue: {error}"})
            else:
                done.append(list_item(issue))
    return write_report(out, "update", args, done, failed)


def claim_refusal(state: dict[str, Any], issue: dict[str, Any], actor: str, modes: set[str]) -> str | None:
    assignee = issue.get("assignee") or ""
    status = issue["status"]
    if assignee == actor and status == "in_progress":
        return f"issue already claimed by {actor}" if "legacy-claim" in modes else None
    if assignee and assignee != actor:
        if status == "open":
            return f'issue already claimed: already assigned to "{assignee}" — coordinate with the holder'
        return f"issue already claimed by {assignee}"
    if status != "open":
        return f"issue not claimable: status {status}"
    blockers = open_blockers(state, issue)
    if blockers:
        return f"cannot claim blocked issue {issue['id']}: blocked by {', '.join(blockers)}"
    return None


def cmd_close(args: list[str], flags: dict[str, Any], actor: str, out: Out) -> int:
    if not args:
        raise Fail("no issue ID provided")
    reasons = flags["reason"] or ["Closed"]
    if len(reasons) != 1:
        raise Fail("give one --reason")
    done: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    with locked_state(write=True) as state:
        for issue_id in args:
            issue = find(state, issue_id)
            if issue is None:
                out.err(f"Issue {issue_id} not found")
                failed.append({"id": issue_id, "error": "issue not found"})
                continue
            blockers = open_blockers(state, issue)
            if issue["status"] != "closed" and blockers and not flags.get("force"):
                error = f"cannot close blocked issue {issue_id}: blocked by {', '.join(blockers)}"
                out.err(f"{error} (use --force to override)")
                failed.append({"id": issue_id, "error": error})
                continue
            if issue["status"] != "closed":  # closing a closed issue again is a no-op success
                issue.update(status="closed", closed_at=now(), updated_at=now(), close_reason=reasons[0],
                             closed_by=actor)
            done.append(list_item(issue))
    return write_report(out, "close", args, done, failed)


def run(argv: list[str]) -> int:
    try:
        command, args, flags = parse(argv)
    except Fail as exc:
        command, args, flags = None, [], {"id": [], "reason": []}
        record(argv, None, [], {}, "")
        print(f"Error: {exc}", file=sys.stderr)
        return exc.code
    actor = flags.get("actor") or os.environ.get("BEADS_ACTOR") or os.environ.get("BD_ACTOR") or "fake-user"
    modes = modes_for(command)
    record(argv, command, [*args, *flags["id"]], flags, actor)
    out = Out(command, modes, bool(flags.get("json")))
    if flags.get("help") or command is None:
        print(USAGE)
        return 0
    if "hang" in modes:
        child = subprocess.Popen(["sleep", "3600"])
        append_log({"hang_child": child.pid, "pid": os.getpid()})
        time.sleep(3600)
    if "slow" in modes:
        time.sleep(float(os.environ.get("FAKE_BD_DELAY", "1.0")))
    try:
        if command == "init":
            return cmd_init(flags, out)
        if command == "create":
            return cmd_create(args, flags, actor, out)
        if command == "dep":
            return cmd_dep(args, flags, actor, out)
        if command == "list":
            return cmd_list(flags, out)
        if command == "ready":
            return cmd_ready(flags, out)
        if command == "blocked":
            return cmd_blocked(out)
        if command in ("show", "view"):
            return cmd_show(args, flags, out)
        if command == "update":
            return cmd_update(args, flags, actor, out)
        if command == "close":
            return cmd_close(args, flags, actor, out)
        if command == "version":
            return out.emit({"version": "0.0.0-fake", "build": "fake"})
        raise Fail(f'unknown command "{command}" for "bd"')
    except Fail as exc:
        for line in out.stderr:
            print(line, file=sys.stderr)
        print(json.dumps({"error": str(exc)}) if out.as_json else f"Error: {exc}", file=sys.stderr)
        return exc.code


def append_log(entry: dict[str, Any]) -> None:
    with open(log_path(), "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def record(argv: list[str], command: str | None, ids: list[str], flags: dict[str, Any], actor: str) -> None:
    try:
        append_log({
            "argv": argv, "command": command, "ids": ids, "actor": actor,
            "flag_actor": flags.get("actor"), "json": bool(flags.get("json")), "pid": os.getpid(),
            "sid": os.getsid(0), "pgid": os.getpgid(0), "cwd": os.getcwd(), "stdin": stdin_kind(),
            "beads_dir": os.environ.get("BEADS_DIR"), "t": time.time(),
        })
    except Fail:
        pass


# --------------------------------------------------------------------------- helpers for the tests


def seed(path: Path, beads: list[dict[str, Any]], *, prefix: str = "fk") -> None:
    """Write a state file holding ``beads`` (issue objects; ``deps`` as ``[(type, id), ...]``)."""
    issues = []
    for bead in beads:
        bead = dict(bead)
        deps = bead.pop("deps", [])
        bead.setdefault("title", bead["id"])
        bead.setdefault("description", "")
        bead.setdefault("status", "open")
        bead.setdefault("priority", 2)
        bead.setdefault("issue_type", "task")
        bead.setdefault("created_at", "2026-01-01T00:00:00Z")
        bead.setdefault("updated_at", "2026-01-01T00:00:00Z")
        bead["dependencies"] = [
            {"issue_id": bead["id"], "depends_on_id": target, "type": kind, "created_at": "2026-01-01T00:00:00Z",
             "created_by": "seed", "metadata": "{}"}
            for kind, target in deps
        ]
        issues.append(bead)
    path.write_text(json.dumps({"prefix": prefix, "next": len(issues) + 1, "issues": issues}, indent=1))


def issues(path: Path) -> dict[str, dict[str, Any]]:
    """The issues of a state file, by id."""
    return {i["id"]: i for i in json.loads(path.read_text())["issues"]}


def calls(path: Path) -> list[dict[str, Any]]:
    """Every invocation recorded in the calls log of the state file ``path``."""
    log = Path(f"{path}.calls.jsonl")
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
