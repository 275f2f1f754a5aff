"""BeadsTracker over the bd CLI: parsing, readiness, claims, polling, closing and every failure mode.

The tracker runs a real process every time: ``tests/fakes/fake_bd.py``, a small bd that follows the
documented JSON contract and logs every invocation, so the tests count calls instead of mocking.
A contract test parses the real bd samples in ``../shared/beads-samples`` when they are there, and
an integration test runs a real ``bd`` when one is on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result
from fakes import fake_bd
from helpers import pid_alive, write_config

from maestro_parallel.cli import main
from maestro_parallel.config import TrackerConfig
from maestro_parallel.errors import TrackerError
from maestro_parallel.tasks import TaskRecord
from maestro_parallel.trackers import BeadsTracker
from maestro_parallel.trackers.beads import (
    BdOutputError,
    claim_answer,
    close_answer,
    decide_blockers,
    decode_payload,
    default_actor,
    failures_in_stderr,
    holder_in,
    only_missing_ids,
    select_beads,
    stderr_line,
    unwrap_issues,
)

FAKE = Path(fake_bd.__file__).resolve()
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "beads-samples"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example_beads_integration.py"
ACTOR = "maestro-test"

#: An agent for beads groups: records its run, and does what its task's description says:
#: "sleep=<s>", "exit=<n>", "selfclose" (closes its own bead through bd), "blockon=<id>" (adds a
#: blocking dependency to its own bead, so that closing it is refused).
AGENT = r'''
import json, os, re, subprocess, sys, time
task = sys.argv[1]
prompt = open(os.environ["MAESTRO_PROMPT_FILE"], encoding="utf-8").read()
def opt(name, default=None):
    m = re.search(r"\b" + name + r"=(\S+)", prompt)
    return m.group(1) if m else default
bd = [sys.executable, os.environ["FAKE_BD_PATH"]]
quiet = dict(stdin=subprocess.DEVNULL, capture_output=True, check=True)
record = os.path.join(os.environ["MAESTRO_REPO_ROOT"], "runs.jsonl")
with open(record, "a") as f:
    f.write(json.dumps({"task": task, "event": "start", "t": time.time()}) + "\n")
if opt("blockon"):
    subprocess.run([*bd, "dep", "add", task, opt("blockon"), "--type", "blocks", "--json"], **quiet)
if "selfclose" in prompt:
    subprocess.run([*bd, "close", "--reason", "the agent closed it", "--json", "--", task], **quiet)
time.sleep(float(opt("sleep", "0")))
with open(record, "a") as f:
    f.write(json.dumps({"task": task, "event": "end", "t": time.time()}) + "\n")
sys.exit(int(opt("exit", "0")))
'''


# --------------------------------------------------------------------------- fixtures


@dataclass
class Beads:
    """A repository with ``.beads/`` and the fake bd's state."""

    repo: Path
    state: Path
    monkeypatch: pytest.MonkeyPatch

    def seed(self, beads: list[dict[str, Any]]) -> None:
        fake_bd.seed(self.state, beads)

    def issues(self) -> dict[str, dict[str, Any]]:
        return fake_bd.issues(self.state)

    def calls(self, command: str | None = None, *, ours: bool = True) -> list[dict[str, Any]]:
        """The recorded invocations (``ours``: those made with the coordinator's --actor)."""
        return [
            c for c in fake_bd.calls(self.state)
            if "argv" in c and (command is None or c["command"] == command) and (not ours or c["flag_actor"] == ACTOR)
        ]

    def mode(self, value: str) -> None:
        self.monkeypatch.setenv("FAKE_BD_MODE", value)

    def tracker(self, **config: Any) -> BeadsTracker:
        settings: dict[str, Any] = dict(kind="beads", bd_command=(sys.executable, str(FAKE)), actor=ACTOR,
                                        call_timeout_seconds=10.0, poll_interval_seconds=0.1)
        settings.update(config)
        return BeadsTracker(self.repo, config=TrackerConfig(**settings))

    def configure(self, *, poll: float = 0.1, tests: list[str] | None = None, timeout: float = 10) -> None:
        """The repository's config.toml: the recording agent, the fake bd, optionally a test command."""
        tests_table = f"command = {json.dumps(tests)}" if tests else "enabled = false"
        write_config(self.repo, f"""
[agent]
command = [{json.dumps(sys.executable)}, "agent.py", "{{task_id}}"]
timeout_seconds = 60
grace_seconds = 0.5

[refresh]
enabled = false

[tests]
{tests_table}

[tracker]
kind = "beads"
bd_command = [{json.dumps(sys.executable)}, {json.dumps(str(FAKE))}]
actor = "{ACTOR}"
call_timeout_seconds = {float(timeout)}
poll_interval_seconds = {poll}
""")

    def execute(self, group: str, *extra: str) -> Result:
        return CliRunner().invoke(main, ["--repo-root", str(self.repo), "execute", "--group-id", group,
                                         "--from-beads", "--json", *extra])

    def runs(self) -> list[dict[str, Any]]:
        path = self.repo / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def beads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Beads]:
    repo = tmp_path / "repo"
    (repo / ".beads").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "agent.py").write_text(AGENT)
    state = tmp_path / "beads-state.json"
    fake_bd.seed(state, [])
    monkeypatch.setenv("FAKE_BD_STATE", str(state))
    monkeypatch.setenv("FAKE_BD_PATH", str(FAKE))
    for name in ("FAKE_BD_MODE", "FAKE_BD_LOG", "BD_JSON_ENVELOPE", "BEADS_ACTOR", "BD_ACTOR", "BEADS_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield Beads(repo, state, monkeypatch)


def bead(bead_id: str, group: str | None = "g", **fields: Any) -> dict[str, Any]:
    """A bead whose description carries the group's marker (no marker when ``group`` is None)."""
    marker = f"[P:Group-{group}] " if group else ""
    fields["description"] = marker + fields.get("description", "")
    return {"id": bead_id, "title": f"bead {bead_id}", **fields}


def record(bead_id: str, **fields: Any) -> TaskRecord:
    """A parsed record, as load_tasks returns it."""
    kept, known, warnings = select_beads([{"id": bead_id, **fields}], ACTOR)
    assert not warnings
    return known[bead_id]


def results_by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["task_id"]: r for r in document["results"]}


# --------------------------------------------------------------------------- parsing bd's output (pure)


ISSUES = [{"id": "a-1", "status": "open"}, {"id": "a-2", "status": "closed"}]


@pytest.mark.parametrize(
    "stdout",
    [
        json.dumps(ISSUES),
        json.dumps({"schema_version": 1, "data": ISSUES}),
        json.dumps({"schema_version": 1, "items": ISSUES}),
        "warning: beads.role not configured\nWarning: old client\n" + json.dumps(ISSUES, indent=2),
    ],
    ids=["array", "data-envelope", "items-envelope", "warning-lines"],
)
def test_every_documented_shape_of_a_list_is_read(stdout: str) -> None:
    assert [i["id"] for i in unwrap_issues(decode_payload(stdout))] == ["a-1", "a-2"]


def test_a_lone_object_is_one_issue_and_silence_is_none() -> None:
    assert unwrap_issues(decode_payload('{"id": "a-1", "status": "open"}')) == [{"id": "a-1", "status": "open"}]
    assert decode_payload("") is None
    assert decode_payload("warning: only a warning\n\n") is None


@pytest.mark.parametrize(
    ("stdout", "fragment"),
    [
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ('{"error": "database is locked"}', "database is locked"),
        ('{"schema_version": 1, "data": {"error": "nope"}}', "nope"),
        ("42", "int"),
        ("[1, 2]", "int"),
        ('{"schema_version": 1}', "not an issue"),
    ],
)
def test_what_is_not_a_list_of_issues_is_refused_in_one_line(stdout: str, fragment: str) -> None:
    with pytest.raises(BdOutputError) as caught:
        unwrap_issues(decode_payload(stdout))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_stderr_is_folded_to_one_line_with_json_errors_unwrapped() -> None:
    stderr = 'Issue x-9 not found\nHint: try bd history x-9\n{"error": "no issues found matching the provided IDs"}\n'
    assert stderr_line(stderr) == "Issue x-9 not found no issues found matching the provided IDs"
    assert stderr_line("") == ""
    assert len(stderr_line("word " * 1000)) <= 400


def test_refusals_are_read_per_id_from_the_json_summary_or_the_lines_naming_the_id() -> None:
    summary = json.dumps({"error": "1 of 3 issues failed to close",
                          "failed": [{"id": "t-1", "error": "cannot close blocked issue t-1: blocked by b"}]})
    stderr = f"Issue t-10 not found\nError updating t-1.2: boom\n{summary}\n"
    assert failures_in_stderr(stderr, ["t-1", "t-10", "t-1.2", "t-3"]) == {
        "t-1": "cannot close blocked issue t-1: blocked by b",
        "t-10": "Issue t-10 not found",
        "t-1.2": "Error updating t-1.2: boom",
    }
    envelope = json.dumps({"schema_version": 1, "data": {"error": "x", "failed": [{"id": "t-3", "error": "no"}]}})
    assert failures_in_stderr(envelope, ["t-3"]) == {"t-3": "no"}


@pytest.mark.parametrize(
    ("stderr", "missing"),
    [
        ('Issue x-1 not found\nHint: try bd history x-1\n{"error": "no issues found matching the provided IDs"}', True),
        ("Issue x-1 not found\nIssue x-2 not found\n", True),
        ("Error: no beads database found\n", False),
        ('Issue x-1 not found\n{"error": "database is locked"}', False),
        ("", False),
    ],
)
def test_only_a_show_of_missing_ids_is_an_empty_answer(stderr: str, missing: bool) -> None:
    assert only_missing_ids(stderr) is missing


@pytest.mark.parametrize(
    ("reason", "holder"),
    [
        ("updating issue: issue already claimed by alice", "alice"),
        ('issue already claimed: already assigned to "bob smith" — coordinate with the holder', "bob smith"),
        ("Error updating x-1: issue already claimed by maestro-parallel@host-2.", "maestro-parallel@host-2"),
        ("issue not claimable: status closed", None),
        ("cannot claim blocked issue x-1: blocked by x-2", None),
    ],
)
def test_the_holder_of_a_refused_claim_is_named(reason: str, holder: str | None) -> None:
    assert holder_in(reason) == holder


def test_claim_answers() -> None:
    returned = {"a": {"id": "a", "assignee": ACTOR}, "b": {"id": "b", "assignee": "carol"}, "c": {"id": "c"}}
    failures = {"d": "updating issue: issue already claimed by alice", "e": f"issue already claimed by {ACTOR}",
                "f": "issue not claimable: status closed"}
    answer = claim_answer(["a", "b", "c", "d", "e", "f", "g"], returned, failures, "1 of 7 failed", ACTOR)
    assert answer == {"a": None, "b": "held by carol", "c": None, "d": "held by alice", "e": None,
                      "f": "issue not claimable: status closed", "g": "1 of 7 failed"}


def test_close_answers() -> None:
    returned = {"a": {"id": "a", "status": "closed"}, "b": {"id": "b", "status": "open"}}
    answer = close_answer(["a", "b", "c", "d"], returned, {"c": "cannot close blocked issue c: blocked by x"}, "")
    assert answer == {"a": None, "b": "bd left it open", "c": "cannot close blocked issue c: blocked by x",
                      "d": "bd did not confirm the close"}


def test_the_default_actor_names_the_machine() -> None:
    assert default_actor().startswith("maestro-parallel@") and len(default_actor()) > len("maestro-parallel@")
    assert BeadsTracker("/tmp").actor == default_actor()


# --------------------------------------------------------------------------- which beads take part (pure)


def test_select_beads_keeps_open_work_ours_in_progress_and_closed_ones() -> None:
    items = [
        {"id": "open-1"},
        {"id": "mine", "status": "in_progress", "assignee": ACTOR},
        {"id": "theirs", "status": "in_progress", "assignee": "alice"},
        {"id": "done", "status": "closed"},
        {"id": "blocked-status", "status": "blocked"},
        {"id": "deferred", "status": "deferred"},
        {"id": "pinned", "status": "pinned"},
        {"id": "hooked", "status": "hooked"},
        {"id": "epic", "issue_type": "epic"},
        {"id": "wisp", "ephemeral": True},
        {"id": "bad/id"},
        {"id": "meta", "metadata": '{"subagent_type": "frontend-developer", "applicable_skills": ["ui"]}'},
        {"id": "open-1"},
    ]
    kept, known, warnings = select_beads(items, ACTOR)
    assert [r.task_id for r in kept] == ["open-1", "mine", "done", "meta"]
    assert "theirs" in known and "epic" in known and "bad/id" not in known
    assert len(warnings) == 2 and "bad/id" in warnings[0] and "appears twice" in warnings[1]
    meta = known["meta"].metadata
    assert (meta.subagent_type, meta.applicable_skills) == ("frontend-developer", ["ui"])


def test_decide_blockers_fails_closed() -> None:
    known = {r.task_id: r for r in (
        record("open-dep"), record("closed-dep", status="closed"),
        record("a", dependencies=[{"depends_on_id": "closed-dep", "type": "blocks"}]),
        record("b", dependencies=[{"depends_on_id": "open-dep", "type": "blocks"}]),
        record("c", dependencies=[{"depends_on_id": "ghost", "type": "waits-for"}]),
        record("mine", status="in_progress", assignee=ACTOR,
               dependencies=[{"depends_on_id": "open-dep", "type": "blocks"}]),
        record("mine-ready", status="in_progress", assignee=ACTOR),
        record("quiet"),
    )}
    tasks = [known[t] for t in ("a", "b", "c", "mine", "mine-ready", "quiet")]
    outsider = record("outsider")
    external = record("ext", dependencies=[{"depends_on_id": "external:other:auth", "type": "blocks"}])
    later = record("later", defer_until="2099-01-01T00:00:00Z")
    known.update(ext=external, later=later)
    answer = decide_blockers([*tasks, outsider, external, later], {"a", "c", "ext"},
                             {"b": ["open-dep", "open-dep"]}, known, ACTOR)
    assert answer == {"a": [], "b": ["open-dep"], "c": ["ghost"], "mine": ["open-dep"], "mine-ready": [],
                      "quiet": ["not ready according to bd ready"], "outsider": ["not in beads"], "ext": [],
                      "later": ["deferred until 2099-01-01T00:00:00Z"]}


# --------------------------------------------------------------------------- the real bd's samples


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/beads-samples is not here")
def test_every_real_bd_sample_parses() -> None:
    kept: dict[str, TaskRecord] = {}
    known: dict[str, TaskRecord] = {}
    files = 0
    for path in sorted(SAMPLES.iterdir()):
        if path.suffix == ".jsonl":
            items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".json":
            items = unwrap_issues(decode_payload(path.read_text()))
        else:
            continue
        files += 1
        file_kept, file_known, warnings = select_beads(items, "beads/polecats/jasper", source=path.name)
        assert items and warnings == [], path.name
        assert len(file_known) == len(items), path.name
        kept.update((r.task_id, r) for r in file_kept)
        known.update(file_known)
    assert files >= 13
    assert known["bd-5ua"].metadata.dependencies == ["bd-wisp-vnssv"]  # a raw record, key "type"
    assert known["bd-wisp-t7gxl"].parent == "bd-wisp-3tmpl"  # parent-child is the parent, not a blocker
    assert known["bd-wisp-t7gxl"].metadata.dependencies == ["bd-wisp-i27f2"]
    assert known["bd-ktng"].metadata.dependencies == []  # discovered-from never blocks
    assert known["corpus-root"].raw["metadata"] == {"phase": "2"}
    assert "bd-5ua" in kept  # in progress, claimed by this actor
    assert "bd-main-idj" not in kept  # in progress, claimed by nobody here
    assert "bd-wisp-t7gxl" not in kept and "offlinebrew-3d0" not in kept  # a wisp, an epic
    assert {"bd-hlsw.4", "bd-r8c", "bd-4h3", "bd-48", "corpus-root", "corpus-closed"} <= kept.keys()
    assert select_beads([known["bd-5ua"].raw], ACTOR)[0] == []  # someone else's work in progress


# --------------------------------------------------------------------------- against the fake bd


async def test_load_tasks_calls_bd_list_the_documented_way(beads: Beads) -> None:
    beads.seed([
        bead("open-1", metadata='{"subagent_type": "frontend-developer"}'),
        bead("mine", status="in_progress", assignee=ACTOR),
        bead("theirs", status="in_progress", assignee="alice"),
        bead("done", status="closed"),
        bead("held", status="blocked"),
        bead("later", status="deferred"),
        bead("epic-1", issue_type="epic"),
        bead("wisp-1", ephemeral=True),
        bead("-rm-rf", group=None),
    ])
    tracker = beads.tracker()
    kept = await tracker.load_tasks()
    assert [r.task_id for r in kept] == ["open-1", "mine", "done"]
    assert kept[0].metadata.subagent_type == "frontend-developer"
    assert len(tracker.warnings) == 1 and "-rm-rf" in tracker.warnings[0]
    [call] = beads.calls("list")
    assert call["argv"] == ["list", "--all", "--limit", "0", "--json", f"--actor={ACTOR}"]
    assert call["stdin"] == "devnull" and call["cwd"] == str(beads.repo)
    assert call["beads_dir"] == str(beads.repo / ".beads")
    assert call["sid"] == call["pid"] == call["pgid"]  # its own session and process group


async def test_dependencies_follow_bd_ready(beads: Beads) -> None:
    beads.seed([
        bead("dep-open", group=None), bead("dep-closed", group=None, status="closed"),
        bead("a", deps=[("blocks", "dep-closed")]),
        bead("b", deps=[("blocks", "dep-open")]),
        bead("c", deps=[("conditional-blocks", "dep-open")]),
        bead("d", deps=[("waits-for", "dep-open")]),
        bead("e", deps=[("related", "dep-open"), ("discovered-from", "dep-open"), ("tracks", "dep-open")]),
        bead("parent", group=None, issue_type="epic", deps=[("blocks", "dep-open")]),
        bead("f", deps=[("parent-child", "parent")]),
        bead("g", deps=[("blocks", "ghost-1")]),
        bead("h", status="in_progress", assignee=ACTOR, deps=[("blocks", "dep-closed")]),
        bead("i", status="in_progress", assignee=ACTOR, deps=[("blocks", "dep-open")]),
    ])
    tracker = beads.tracker()
    records = {r.task_id: r for r in await tracker.load_tasks()}
    tasks = [records[t] for t in "abcdefghi"]
    assert await tracker.find_blockers(tasks) == {
        "a": [], "b": ["dep-open"], "c": ["dep-open"], "d": ["dep-open"], "e": [],
        "f": ["parent"], "g": ["ghost-1"], "h": [], "i": ["dep-open"],
    }
    assert [len(beads.calls(c)) for c in ("list", "ready", "blocked")] == [1, 1, 1]
    assert beads.calls("ready")[0]["argv"][:3] == ["ready", "--limit", "0"]
    assert await tracker.find_blockers([]) == {}
    assert len(beads.calls("ready")) == 1


async def test_find_blockers_alone_loads_what_it_needs(beads: Beads) -> None:
    beads.seed([bead("dep", group=None), bead("a", deps=[("blocks", "dep")]), bead("b")])
    tracker = beads.tracker()
    tasks = [record("a", dependencies=[{"depends_on_id": "dep", "type": "blocks"}]), record("b")]
    assert await tracker.find_blockers(tasks) == {"a": ["dep"], "b": []}
    assert len(beads.calls("list")) == 1


async def test_claim_is_one_call_and_names_the_holder_of_a_refused_one(beads: Beads) -> None:
    beads.seed([
        bead("x1"), bead("x2", assignee="alice"), bead("x3", status="in_progress", assignee="bob"),
        bead("x4", status="in_progress", assignee=ACTOR), bead("x5", status="closed"),
    ])
    answer = await beads.tracker().claim(["x1", "x2", "x3", "x4", "x5", "x6"])
    assert answer == {"x1": None, "x2": "held by alice", "x3": "held by bob", "x4": None,
                      "x5": "updating issue: issue not claimable: status closed", "x6": "issue not found"}
    [call] = beads.calls("update")
    assert call["argv"] == ["update", "--claim", "--json", f"--actor={ACTOR}", "--", "x1", "x2", "x3", "x4", "x5", "x6"]
    state = beads.issues()
    assert (state["x1"]["status"], state["x1"]["assignee"]) == ("in_progress", ACTOR)
    assert state["x2"]["status"] == "open"


@pytest.mark.parametrize("mode", ["strict", "plain-errors", "legacy-claim", "strict,plain-errors,legacy-claim"])
async def test_partial_claims_are_read_whatever_the_bd_version(beads: Beads, mode: str) -> None:
    beads.seed([bead("y1"), bead("y2", status="in_progress", assignee="alice"),
                bead("y3", status="in_progress", assignee=ACTOR)])
    beads.mode(mode)
    answer = await beads.tracker().claim(["y1", "y2", "y3"])
    assert answer == {"y1": None, "y2": "held by alice", "y3": None}


async def test_close_is_one_call_detects_partial_success_and_skips_closed_beads(beads: Beads) -> None:
    beads.seed([
        bead("c1", status="in_progress", assignee=ACTOR),
        bead("blocker", group=None),
        bead("c2", status="in_progress", assignee=ACTOR, deps=[("blocks", "blocker")]),
        bead("c3", status="closed", close_reason="the agent closed it"),
    ])
    answer = await beads.tracker().close(["c1", "c2", "c3"], "completed by the tests")
    assert answer["c1"] is None and answer["c3"] is None
    assert answer["c2"] == "cannot close blocked issue c2: blocked by blocker"
    [close] = beads.calls("close")
    assert close["argv"] == ["close", "--reason=completed by the tests", "--json", f"--actor={ACTOR}", "--", "c1", "c2"]
    assert len(beads.calls("show")) == 1
    state = beads.issues()
    assert (state["c1"]["status"], state["c1"]["close_reason"]) == ("closed", "completed by the tests")
    assert state["c2"]["status"] == "in_progress" and state["c3"]["close_reason"] == "the agent closed it"
    beads.mode("strict")
    assert (await beads.tracker().close(["c2"], "again"))["c2"].startswith("cannot close blocked issue c2")


async def test_fetch_statuses_is_one_show_for_every_id(beads: Beads) -> None:
    beads.seed([bead("s1"), bead("s2", status="closed"), bead("s3", status="in_progress", assignee=ACTOR)])
    tracker = beads.tracker()
    assert await tracker.fetch_statuses(["s1", "s2", "s3", "gone"]) == {"s1": "open", "s2": "closed", "s3": "in_progress"}
    assert await tracker.fetch_statuses(["gone", "also-gone"]) == {}
    assert await tracker.fetch_statuses([]) == {}
    assert [c["ids"] for c in beads.calls("show")] == [["s1", "s2", "s3", "gone"], ["gone", "also-gone"]]


async def test_ids_that_look_like_options_reach_bd_as_ids(beads: Beads) -> None:
    beads.seed([bead("ok-1")])
    tracker = beads.tracker()
    assert await tracker.fetch_statuses(["--help", "-x", "ok-1"]) == {"ok-1": "open"}
    assert await tracker.claim(["--help"]) == {"--help": "issue not found"}
    assert await tracker.close(["--all"], "nope") == {"--all": "issue not found"}
    for call in beads.calls():
        if call["ids"]:
            assert call["argv"][call["argv"].index("--") + 1:] == call["ids"]
    assert [c["ids"] for c in beads.calls("show")][0] == ["--help", "-x", "ok-1"]


@pytest.mark.parametrize("mode", ["warnings", "envelope", "items", "slow", "warnings,items"])
async def test_tolerated_output_shapes(beads: Beads, mode: str) -> None:
    beads.seed([bead("w1"), bead("w2", status="closed"), bead("w3", deps=[("blocks", "w1")])])
    beads.mode(mode)
    beads.monkeypatch.setenv("FAKE_BD_DELAY", "0.3")
    tracker = beads.tracker(call_timeout_seconds=5.0)
    records = await tracker.load_tasks()
    assert [r.task_id for r in records] == ["w1", "w2", "w3"]
    assert await tracker.find_blockers([r for r in records if not r.done]) == {"w1": [], "w3": ["w1"]}
    assert await tracker.claim(["w1"]) == {"w1": None}
    assert await tracker.fetch_statuses(["w1", "w2"]) == {"w1": "in_progress", "w2": "closed"}
    assert await tracker.close(["w1"], "done") == {"w1": None}


async def test_the_json_envelope_variable_is_honoured(beads: Beads) -> None:
    beads.seed([bead("v1")])
    beads.monkeypatch.setenv("BD_JSON_ENVELOPE", "1")
    assert [r.task_id for r in await beads.tracker().load_tasks()] == ["v1"]


@pytest.mark.parametrize(
    ("mode", "problem", "stderr"),
    [
        ("garbage", "printed something that is not JSON", "fake bd: the server answered with an HTML page"),
        ("empty", "printed nothing", "Error: database is locked (fake)"),
        ("fail", "failed (exit code 1)", "database is locked (fake)"),
    ],
)
async def test_failures_are_one_line_tracker_errors_with_bds_stderr(
    beads: Beads, mode: str, problem: str, stderr: str
) -> None:
    beads.seed([bead("f1")])
    beads.mode(mode)
    tracker = beads.tracker()
    calls = {"list": tracker.load_tasks(), "show": tracker.fetch_statuses(["f1"]),
             "update": tracker.claim(["f1"]), "ready": tracker.find_blockers([record("f1")])}
    for command, call in calls.items():
        with pytest.raises(TrackerError) as caught:
            await call
        message = str(caught.value)
        assert message.startswith(f"bd {command} {problem}") and message.endswith(f": {stderr}")
        assert "\n" not in message and caught.value.stderr == stderr


async def test_a_hung_bd_is_stopped_with_its_whole_process_group(beads: Beads) -> None:
    beads.seed([bead("h1")])
    beads.mode("hang@show")
    tracker = beads.tracker(call_timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(TrackerError, match=r"^bd show did not answer within 1s and was stopped$"):
        await tracker.fetch_statuses(["h1"])
    assert time.monotonic() - started < 6
    [hang] = [c for c in fake_bd.calls(beads.state) if "hang_child" in c]
    assert not pid_alive(hang["pid"]) and not pid_alive(hang["hang_child"])
    beads.mode("")
    assert await tracker.fetch_statuses(["h1"]) == {"h1": "open"}


async def test_cancelling_a_call_stops_bd(beads: Beads) -> None:
    beads.mode("hang")
    tracker = beads.tracker(call_timeout_seconds=30.0)
    with anyio.move_on_after(0.5):
        await tracker.load_tasks()
    with anyio.fail_after(5):
        while not [c for c in fake_bd.calls(beads.state) if "hang_child" in c]:
            await anyio.sleep(0.02)  # the child was started before the cancel; its record may lag
    [hang] = [c for c in fake_bd.calls(beads.state) if "hang_child" in c]
    assert not pid_alive(hang["pid"]) and not pid_alive(hang["hang_child"])


async def test_a_missing_bd_is_a_clear_error(beads: Beads) -> None:
    tracker = beads.tracker(bd_command=("no-such-bd-here",))
    with pytest.raises(TrackerError, match=r"cannot run bd \(no-such-bd-here\).*\[tracker\]\.bd_command"):
        await tracker.load_tasks()


async def test_writes_are_serialized(beads: Beads) -> None:
    beads.seed([bead("l1"), bead("l2", status="in_progress", assignee=ACTOR)])
    beads.mode("slow@update,slow@close")
    beads.monkeypatch.setenv("FAKE_BD_DELAY", "0.4")
    tracker = beads.tracker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(tracker.claim, ["l1"])
        tg.start_soon(tracker.close, ["l2"], "done")
    update, close = beads.calls("update")[0], beads.calls("close")[0]
    assert abs(update["t"] - close["t"]) >= 0.35


def test_the_lock_follows_the_event_loop(beads: Beads) -> None:
    beads.seed([bead("r1"), bead("r2")])
    tracker = beads.tracker()
    assert anyio.run(tracker.claim, ["r1"]) == {"r1": None}
    assert anyio.run(tracker.claim, ["r2"]) == {"r2": None}


# --------------------------------------------------------------------------- maestro-parallel --from-beads


def test_execute_from_beads_claims_polls_and_closes_in_batches(beads: Beads) -> None:
    beads.seed([
        bead("g-1", description="sleep=0.8"),
        {"id": "g-2", "title": "[P:Group-g] marker in the title", "description": "sleep=0.8"},
        bead("g-3", description="sleep=0.8"),
        bead("g-old", status="closed"),
        bead("other", group="h"),
        bead("loose", group=None),
    ])
    beads.configure(poll=0.1)
    result = beads.execute("g")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "completed" and document["errors"] == []
    assert sorted(document["tasks"]) == ["g-1", "g-2", "g-3"]
    assert all(r["closed"] and r["status"] == "completed" for r in document["results"])
    [claim] = beads.calls("update")
    assert claim["ids"] == ["g-1", "g-2", "g-3"] and "--claim" in claim["argv"]
    polls = beads.calls("show")[:-1]  # the last show is close()'s look before closing
    assert polls and all(set(p["ids"]) <= {"g-1", "g-2", "g-3"} for p in polls)
    assert ["g-1", "g-2", "g-3"] in [p["ids"] for p in polls]  # one call for every running task
    window = max(p["t"] for p in polls) - min(p["t"] for p in polls)
    assert len(polls) <= window / 0.1 + 2  # one per tick, never one per task
    [close] = beads.calls("close")
    assert close["ids"] == ["g-1", "g-2", "g-3"]
    state = beads.issues()
    for task_id in ("g-1", "g-2", "g-3"):
        assert state[task_id]["status"] == "closed"
        assert state[task_id]["close_reason"] == "completed by maestro-parallel (group g)"
        assert state[task_id]["closed_by"] == ACTOR
    assert state["other"]["status"] == "open" and state["loose"]["status"] == "open"
    assert {c["command"] for c in beads.calls()} == {"list", "ready", "update", "show", "close"}


def test_a_claim_held_by_another_actor_is_recorded_blocked(beads: Beads) -> None:
    beads.seed([bead("a-1"), bead("a-2", assignee="alice")])
    beads.configure()
    result = beads.execute("g")
    assert result.exit_code == 3, result.stderr
    results = results_by_id(json.loads(result.stdout))
    assert results["a-2"]["status"] == "blocked" and results["a-2"]["error"] == "claim refused: held by alice"
    assert results["a-1"]["status"] == "completed" and results["a-1"]["closed"] is True
    assert [r["task"] for r in beads.runs() if r["event"] == "start"] == ["a-1"]
    state = beads.issues()
    assert (state["a-2"]["status"], state["a-2"]["assignee"]) == ("open", "alice")
    assert "a-2 blocked: claim refused: held by alice" in result.stderr


def test_blocked_beads_are_left_untouched(beads: Beads) -> None:
    beads.seed([bead("dep", group=None), bead("b-1", deps=[("blocks", "dep")]), bead("b-2")])
    beads.configure()
    result = beads.execute("g")
    assert result.exit_code == 3, result.stderr
    results = results_by_id(json.loads(result.stdout))
    assert results["b-1"]["blockers"] == ["dep"] and results["b-2"]["closed"] is True
    assert beads.calls("update")[0]["ids"] == ["b-2"]
    assert beads.issues()["b-1"]["status"] == "open" and "assignee" not in beads.issues()["b-1"]


def test_a_bead_the_agent_closed_is_not_closed_again(beads: Beads) -> None:
    beads.seed([bead("k-1", description="selfclose sleep=30"), bead("k-2", description="selfclose")])
    beads.configure(poll=0.1)
    started = time.monotonic()
    result = beads.execute("g")
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 20  # k-1 was stopped after its grace, not waited for
    results = results_by_id(json.loads(result.stdout))
    assert results["k-1"]["closed"] is True and results["k-2"]["closed"] is True
    assert not any("k-1" in c["ids"] for c in beads.calls("close"))
    assert not any("k-2" in c["ids"] for c in beads.calls("close"))
    state = beads.issues()
    assert state["k-1"]["close_reason"] == state["k-2"]["close_reason"] == "the agent closed it"


def test_a_refused_close_fails_the_group_and_a_rerun_only_closes(beads: Beads) -> None:
    beads.seed([bead("r-1"), bead("r-2", description="blockon=gate"), bead("gate", group=None)])
    beads.configure(tests=[sys.executable, "-c", "open('tests-ran.txt', 'a').write('x')"])
    first = beads.execute("g")
    assert first.exit_code == 1, first.stderr
    document = json.loads(first.stdout)
    assert document["status"] == "failed"
    assert document["errors"] == ["r-2: close failed: cannot close blocked issue r-2: blocked by gate"]
    assert results_by_id(document)["r-1"]["closed"] is True
    assert (beads.repo / "tests-ran.txt").read_text() == "x"
    subprocess.run([sys.executable, str(FAKE), "close", "gate", "--json"], check=True, capture_output=True)
    again = beads.execute("g")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "completed"
    assert (beads.repo / "tests-ran.txt").read_text() == "xx"  # the test gate ran again
    assert [r["task"] for r in beads.runs() if r["event"] == "start"].count("r-2") == 1  # not run again
    assert [c["ids"] for c in beads.calls("close")] == [["r-1", "r-2"], ["r-2"]]
    assert len(beads.calls("update")) == 1 and beads.issues()["r-2"]["status"] == "closed"


def test_a_failing_poll_is_recorded_once_and_exits_still_count(beads: Beads) -> None:
    beads.seed([bead("p-1", description="sleep=0.6"), bead("p-2", description="sleep=0.6")])
    beads.configure(poll=0.1)
    beads.mode("fail@show")
    result = beads.execute("g")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    warnings = [w for r in document["results"] for w in r["warnings"] if "tracker poll failed" in w]
    assert len(set(warnings)) == 1 and "database is locked (fake)" in warnings[0]
    assert len(beads.calls("show")) >= 2 and all(r["closed"] for r in document["results"])


def test_a_hanging_poll_neither_delays_completion_nor_leaves_a_process(beads: Beads) -> None:
    beads.seed([bead("q-1", description="sleep=2.4"), bead("q-2", description="sleep=2.4")])
    beads.configure(poll=0.1, timeout=1.5)
    beads.mode("hang@show")
    result = beads.execute("g")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert all(r["closed"] for r in document["results"])
    polled = {w for r in document["results"] for w in r["warnings"] if "tracker poll failed" in w}
    assert len(polled) == 1 and "did not answer within 1.5s" in polled.pop()  # recorded once
    hung = [c for c in fake_bd.calls(beads.state) if "hang_child" in c]
    assert hung and not any(pid_alive(c["pid"]) or pid_alive(c["hang_child"]) for c in hung)
    assert all(s["status"] == "closed" for s in beads.issues().values())


def test_the_tracker_kind_picks_the_beads_tracker(beads: Beads) -> None:
    from maestro_parallel.config import load_config
    from maestro_parallel.runtime.coordinator import make_tracker

    beads.configure()
    tracker = make_tracker(load_config(beads.repo), beads.repo)
    assert isinstance(tracker, BeadsTracker) and tracker.name == "beads"
    assert (tracker.actor, tracker.beads_dir) == (ACTOR, beads.repo / ".beads")


@pytest.mark.parametrize("mode", ["fail@list", "garbage@list", "hang@list"])
def test_execute_reports_a_broken_bd_in_one_line(beads: Beads, mode: str) -> None:
    beads.seed([bead("e-1")])
    beads.configure(timeout=1)
    beads.mode(mode)
    result = beads.execute("g")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"].startswith("bd list ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (beads.repo / ".flow" / "maestro" / "parallel_groups" / "g").exists()


def test_a_tracker_failure_during_the_dependency_check_fails_the_group(beads: Beads) -> None:
    beads.seed([bead("d-1")])
    beads.configure()
    beads.mode("empty@ready")
    result = beads.execute("g")
    assert result.exit_code == 1
    [only] = json.loads(result.stdout)["results"]
    assert only["error"] == "dependency check failed: bd ready printed nothing: Error: database is locked (fake)"
    assert beads.calls("update") == []


def test_detect_from_beads(beads: Beads) -> None:
    beads.seed([
        bead("d-1"), bead("d-2", group="other"), bead("d-3", group=None), bead("d-4", status="closed"),
        bead("d-5", issue_type="epic"), bead("d-6", ephemeral=True), bead("d-7", status="in_progress", assignee="al"),
    ])
    beads.configure()
    result = CliRunner().invoke(main, ["--repo-root", str(beads.repo), "detect", "--from-beads", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "total_tasks": 3, "parallel_groups": 2, "groups": {"g": ["d-1"], "other": ["d-2"], "_sequential": ["d-3"]},
    }


def test_the_beads_integration_example_runs() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "group backend: completed" in result.stdout
    assert "closed in beads: demo-1, demo-2" in result.stdout


# --------------------------------------------------------------------------- a real bd


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("bd") is None, reason="no real bd on PATH")
def test_a_real_bd_runs_a_group_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BEADS_DIR", "BEADS_ACTOR", "BD_ACTOR", "BD_JSON_ENVELOPE"):
        monkeypatch.delenv(name, raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "agent.py").write_text("import sys\nprint('working on', sys.argv[1])\n")

    def bd(*args: str) -> Any:
        done = subprocess.run(["bd", *args], cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=120)
        assert done.returncode == 0, f"bd {' '.join(args)}: {done.stderr}"
        return done.stdout

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    bd("init", "--prefix", "mp")
    ids = []
    for title in ("first", "second"):
        created = unwrap_issues(decode_payload(bd("create", f"[P:Group-real] {title}", "--description",
                                                  f"[P:Group-real] the {title} task", "--json")))
        ids.append(created[0]["id"])
    write_config(repo, f"""
[agent]
command = [{json.dumps(sys.executable)}, "agent.py", "{{task_id}}"]
timeout_seconds = 120
[refresh]
enabled = false
[tests]
enabled = false
[tracker]
kind = "beads"
actor = "{ACTOR}"
call_timeout_seconds = 60
poll_interval_seconds = 1
""")
    result = CliRunner().invoke(main, ["--repo-root", str(repo), "execute", "--group-id", "real", "--from-beads",
                                       "--json"])
    assert result.exit_code == 0, result.stderr
    shown = {i["id"]: i for i in unwrap_issues(decode_payload(bd("show", *ids, "--json")))}
    assert all(shown[i]["status"] == "closed" for i in ids)
