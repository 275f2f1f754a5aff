"""A group's files on disk (DESIGN §5, §8, §10): real files, real locks, real processes.

Checks what another process or a user would see in ``.flow/maestro/``: the
permissions, the bytes of the journal and the snapshot while they are being
written, which paths a planted symlink can reach, who holds a lock.  Lock
holders in other processes are real ``sys.executable -c`` children.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from maestro_parallel._paths import GROUPS_RELATIVE_PATH
from maestro_parallel.errors import GroupBusyError, MaestroError, StateError, ValidationError
from maestro_parallel.events import decode_journal, encode_event, make_event, replay
from maestro_parallel.models import GroupMetadata, GroupPhase, TaskStatus, new_result
from maestro_parallel.state.locks import TestsLock as SuiteLock  # aliased: pytest would collect a class named Test*
from maestro_parallel.state.locks import lock_holder
from maestro_parallel.state.readers import list_group_ids, read_stored_group, read_stored_groups
from maestro_parallel.state.snapshot import SnapshotWriter
from maestro_parallel.state.store import GroupStore

#: Holds the lock of group argv[2] under repository argv[1] until killed; says "ready" once it does.
HOLD_LOCK = r"""
import sys, anyio
from maestro_parallel.state.store import GroupStore

async def main():
    store = GroupStore(sys.argv[1], sys.argv[2])
    await store.prepare_lock_dir()
    async with store.lock():
        print("ready", flush=True)
        await anyio.sleep(300)

anyio.run(main)
"""

#: Asks who holds the lock at argv[1], as fast as it can, the way `status` and `wait` do; says "ready".
PEEK_LOCK = r"""
import sys, time
from pathlib import Path
from maestro_parallel.state.locks import lock_holder

path = Path(sys.argv[1])
lock_holder(path)
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    lock_holder(path)
"""


# --------------------------------------------------------------------------- helpers


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def metadata(group_id: str = "g", *, tasks: int = 2, created_at: str | None = None) -> GroupMetadata:
    ids = [f"t-{i}" for i in range(tasks)]
    meta = GroupMetadata(
        group_id=group_id,
        tasks=ids,
        results=[new_result(t, log_path=f"{GROUPS_RELATIVE_PATH}/{group_id}/logs/{t}.log") for t in ids],
        status=TaskStatus.IN_PROGRESS,
    )
    if created_at is not None:
        meta.created_at = created_at
    return meta


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.01)


@asynccontextmanager
async def helper(script: str, *args: str) -> AsyncIterator[anyio.abc.Process]:
    """Run ``sys.executable -c script args``; yield it once it printed "ready"; kill it at the end."""
    async with await anyio.open_process([sys.executable, "-c", script, *args]) as proc:
        try:
            assert proc.stdout is not None
            seen = b""
            with anyio.fail_after(30):
                while b"ready" not in seen:
                    try:
                        seen += await proc.stdout.receive()
                    except anyio.EndOfStream:
                        assert proc.stderr is not None
                        err = b""
                        async for chunk in proc.stderr:
                            err += chunk
                        pytest.fail(f"helper exited before it was ready: {err.decode(errors='replace')}")
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
            with anyio.CancelScope(shield=True):
                await proc.wait()


@pytest.fixture
def store(tmp_path: Path) -> GroupStore:
    return GroupStore(tmp_path, "g")


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- permissions


async def test_folders_are_0700_and_files_0600_even_with_a_permissive_umask(
    store: GroupStore, tmp_path: Path, umask0: None
) -> None:
    await store.prepare()
    await store.append_event(make_event("group_started", schema=1, tasks=["t-0"]))
    await store.close()
    await store.write_snapshot(metadata())
    await store.write_private(store.prompt_path("t-0"), "secret prompt")
    async with store.lock():
        pass
    async with store.tests_lock():
        pass
    await store.set_aside()
    history = next(store.history_dir.iterdir())

    for folder in (tmp_path / ".flow", store.maestro_dir, store.groups_dir, store.dir, store.history_dir, history,
                   history / "logs", history / "prompts"):
        assert mode(folder) == 0o700, folder
    for file in (history / "events.jsonl", history / "metadata.json", history / "prompts" / "t-0.md",
                 store.lock_path, store.tests_lock_path):
        assert mode(file) == 0o600, file


# --------------------------------------------------------------------------- the snapshot


async def test_the_snapshot_is_never_seen_half_written(store: GroupStore) -> None:
    await store.prepare()
    meta = metadata(tasks=1)
    await store.write_snapshot(meta)
    stop = threading.Event()
    seen: set[int] = set()
    bad: list[bytes] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            data = store.snapshot_path.read_bytes()
            reads += 1
            try:
                seen.add(len(json.loads(data)["tasks"]))
            except ValueError:
                bad.append(data)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(200):
            # Sizes go up and down, so a torn or short write would show as invalid JSON.
            count = 1 + (i * 37) % 60
            meta.tasks = [f"task-{n}-" + "x" * (i % 13) for n in range(count)]
            await store.write_snapshot(meta)
    finally:
        stop.set()
        thread.join()

    assert bad == []
    assert reads > 0 and len(seen) > 1  # the reader really ran while the file was being replaced
    assert sorted(p.name for p in store.dir.iterdir()) == ["logs", "metadata.json", "prompts"]
    assert GroupMetadata.from_dict(json.loads(store.snapshot_path.read_bytes())).tasks == meta.tasks


async def test_snapshot_round_trip(store: GroupStore) -> None:
    await store.prepare()
    meta = metadata()
    await store.write_snapshot(meta)
    assert await store.read_snapshot() == meta
    assert await store.load() == meta


# --------------------------------------------------------------------------- the journal


async def test_the_journal_has_one_line_per_event(store: GroupStore) -> None:
    await store.prepare()
    sent = [make_event("group_started", schema=1, tasks=["t-0"]), make_event("warning", message="a\nb", task_id=None),
            make_event("task_started", task_id="t-0", attempt=1, pid=1234, pgid=1234, start_time=99)]
    for event in sent:
        await store.append_event(event)
    await store.close()
    lines = store.journal_path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == sent
    assert await store.read_events() == (sent, 0)


async def test_journal_writes_are_made_on_the_loop_until_one_is_slow_or_big(
    store: GroupStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small appends skip the worker-thread hop; a slow disk or a big batch goes back to the thread."""
    import maestro_parallel.state.store as store_module

    threaded: list[int] = []
    real = store_module._write_async

    async def counting(journal: object, view: memoryview) -> int:
        threaded.append(len(view))
        return await real(journal, view)

    monkeypatch.setattr(store_module, "_write_async", counting)
    monkeypatch.setattr(store_module, "_INLINE_WRITE_SECONDS", 60.0)  # a busy machine cannot make a write "slow"
    await store.prepare()
    small = [make_event("warning", task_id=f"t-{i}", message="m") for i in range(3)]
    for event in small:
        await store.append_event(event)
    assert threaded == [] and store.inline_writes
    big = make_event("warning", task_id=None, message="x" * (store_module._INLINE_WRITE_BYTES + 1))
    await store.append_event(big)
    assert len(threaded) == 1 and store.inline_writes  # too big for the loop, not a sign of a slow disk
    monkeypatch.setattr(store_module, "_INLINE_WRITE_SECONDS", -1.0)  # every write now counts as slow
    await store.append_event(small[0])
    assert not store.inline_writes and len(threaded) == 1
    await store.append_event(small[1])
    assert len(threaded) == 2  # from then on, in a worker thread
    await store.close()
    assert await store.read_events() == ([*small, big, small[0], small[1]], 0)


async def test_small_prompt_batches_are_written_on_the_loop_until_a_write_is_slow(
    store: GroupStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maestro_parallel.state.store as store_module

    threaded: list[int] = []
    real = store_module.write_many_async

    async def counting(items: list[tuple[Path, bytes]]) -> list[OSError | None]:
        threaded.append(len(items))
        return await real(items)

    monkeypatch.setattr(store_module, "write_many_async", counting)
    monkeypatch.setattr(store_module, "_INLINE_WRITE_SECONDS", 60.0)  # a busy machine cannot make a write "slow"
    await store.prepare()
    assert await store.write_prompts([(store.prompt_path(f"t-{i}"), f"prompt {i}") for i in range(4)]) == [None] * 4
    assert threaded == [] and store.inline_writes
    monkeypatch.setattr(store_module, "_INLINE_WRITE_SECONDS", -1.0)
    assert await store.write_prompts([(store.prompt_path("t-4"), "prompt 4")]) == [None]
    assert not store.inline_writes and threaded == []
    assert await store.write_prompts([(store.prompt_path("t-5"), "prompt 5")]) == [None]
    assert threaded == [1]
    assert [store.prompt_path(f"t-{i}").read_text() for i in range(6)] == [f"prompt {i}" for i in range(6)]


def test_decode_journal_ignores_a_torn_last_line() -> None:
    one, two = make_event("phase_changed", phase="coordination"), make_event("group_error", message="x")
    data = encode_event(one) + encode_event(two)
    assert decode_journal(data) == ([one, two], 0)
    assert decode_journal(data + encode_event(one)[:17]) == ([one, two], 0)
    assert decode_journal(b"") == ([], 0)


def test_decode_journal_skips_and_counts_a_corrupt_middle_line() -> None:
    one, two = make_event("phase_changed", phase="coordination"), make_event("group_error", message="x")
    data = encode_event(one) + b"not json at all\n" + b"[1, 2]\n" + encode_event(two)
    assert decode_journal(data) == ([one, two], 2)


async def test_load_replays_the_journal_over_the_snapshot(store: GroupStore) -> None:
    await store.prepare()
    first = [make_event("group_started", schema=1, tasks=["t-0", "t-1"], created_at="2024-01-01T00:00:00.000Z"),
             make_event("task_started", task_id="t-0", attempt=1, pid=10, pgid=10, start_time=5)]
    for event in first:
        await store.append_event(event)
    await store.write_snapshot(replay("g", first))
    # The journal runs ahead of the snapshot: what it adds must show.
    later = [make_event("task_finished", task_id="t-0", status="completed", exit_code=0, error=None),
             make_event("phase_changed", phase="post_execution")]
    for event in later:
        await store.append_event(event)
    await store.close()

    snapshot = await store.read_snapshot()
    assert snapshot is not None and snapshot.result_for("t-0")["status"] == "in_progress"  # type: ignore[index]
    loaded = await store.load()
    assert loaded is not None
    assert loaded.result_for("t-0")["status"] == "completed"  # type: ignore[index]
    assert loaded.result_for("t-0")["exit_code"] == 0  # type: ignore[index]
    assert loaded.phase is GroupPhase.POST_EXECUTION
    assert loaded == replay("g", first + later)


async def test_a_corrupt_snapshot_is_rebuilt_from_the_journal(store: GroupStore) -> None:
    await store.prepare()
    events = [make_event("group_started", schema=1, tasks=["t-0"], created_at="2024-01-01T00:00:00.000Z"),
              make_event("task_finished", task_id="t-0", status="failed", exit_code=7, error="exit code 7: boom")]
    for event in events:
        await store.append_event(event)
    await store.close()
    store.snapshot_path.write_bytes(b'{"group_id": "g", "tas')

    with pytest.raises(StateError):
        await store.read_snapshot()
    loaded = await store.load()
    assert loaded == replay("g", events)
    assert loaded is not None and loaded.errors == ["t-0: exit code 7: boom"]


@pytest.mark.parametrize(
    "content",
    [b'{"group_id": "g", "tas', b"[]", b'{"group_id": "g"}', b"\xff\xfe", b'{"group_id": "other", "created_at": "x"}'],
    ids=["torn", "not-an-object", "missing-keys", "not-utf8", "another-group"],
)
async def test_a_corrupt_snapshot_without_a_journal_is_a_one_line_state_error(
    store: GroupStore, content: bytes
) -> None:
    await store.prepare()
    store.snapshot_path.write_bytes(content)
    with pytest.raises(StateError) as info:
        await store.load()
    assert isinstance(info.value, MaestroError)
    message = str(info.value)
    assert "metadata.json" in message and "\n" not in message


async def test_a_missing_group_loads_as_none(store: GroupStore, tmp_path: Path) -> None:
    assert await store.load() is None
    assert not store.exists()
    assert await read_stored_group(tmp_path, "g") is None
    assert await read_stored_groups(tmp_path) == []
    assert not (tmp_path / ".flow").exists()  # reading creates nothing


# --------------------------------------------------------------------------- symlinks


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the groups folder that a planted symlink points to; it must stay untouched."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("precious\n")
    return folder


def untouched(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["precious.txt"] and (
        folder / "precious.txt"
    ).read_text() == "precious\n"


async def test_a_group_folder_planted_as_a_symlink_is_refused(
    store: GroupStore, tmp_path: Path, outside: Path
) -> None:
    store.groups_dir.mkdir(parents=True)
    store.dir.symlink_to(outside)

    with pytest.raises(StateError):
        await store.prepare_lock_dir()
    with pytest.raises(StateError):
        await store.prepare()
    assert untouched(outside)
    # Readers do not follow it either.
    assert list_group_ids(tmp_path) == []
    assert await read_stored_group(tmp_path, "g") is None


async def test_a_logs_folder_planted_as_a_symlink_is_refused(store: GroupStore, outside: Path) -> None:
    store.dir.mkdir(parents=True)
    store.logs_dir.symlink_to(outside)
    with pytest.raises(StateError):
        await store.prepare()
    assert untouched(outside)


async def test_a_metadata_file_planted_as_a_symlink_is_not_read_or_written_through(
    store: GroupStore, tmp_path: Path, outside: Path
) -> None:
    await store.prepare()
    target = outside / "precious.txt"
    store.snapshot_path.symlink_to(target)

    with pytest.raises(StateError):
        await store.load()
    seen = await read_stored_group(tmp_path, "g")
    assert seen is not None and seen.metadata is None and "symlink" in (seen.error or "")

    meta = metadata()
    await store.write_snapshot(meta)  # replaces the link itself
    assert untouched(outside)
    assert not store.snapshot_path.is_symlink()
    assert await store.read_snapshot() == meta


async def test_a_journal_planted_as_a_symlink_is_not_appended_through(store: GroupStore, outside: Path) -> None:
    await store.prepare()
    store.journal_path.symlink_to(outside / "precious.txt")
    with pytest.raises(OSError):
        await store.append_event(make_event("group_error", message="x"))
    await store.close()
    with pytest.raises(StateError):
        await store.read_events()
    assert untouched(outside)


# --------------------------------------------------------------------------- group ids


@pytest.mark.parametrize("group_id", ["../x", "/abs", "", "a" * 65, "a.b", "a/b", ".", "..", "-x", "a b", "x\0"])
def test_an_invalid_group_id_never_becomes_a_path(tmp_path: Path, group_id: str) -> None:
    with pytest.raises(ValidationError) as info:
        GroupStore(tmp_path, group_id)
    assert isinstance(info.value, ValueError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("group_id", ["_sequential", "infra", "auth-flow", "TEST_CASE_2", "a" * 64])
def test_a_valid_group_id_is_a_folder_under_the_groups_folder(tmp_path: Path, group_id: str) -> None:
    store = GroupStore(tmp_path, group_id)
    assert store.dir == tmp_path / ".flow" / "maestro" / "parallel_groups" / group_id


@pytest.mark.parametrize("name", ["../x", "a/b", "", "..", ".hidden"])
def test_an_unsafe_task_id_never_becomes_a_log_or_prompt_path(store: GroupStore, name: str) -> None:
    with pytest.raises(ValidationError):
        store.log_path(name)
    with pytest.raises(ValidationError):
        store.prompt_path(name)


def test_log_and_prompt_paths(store: GroupStore) -> None:
    assert store.log_path("proj-auth.1") == store.logs_dir / "proj-auth.1.log"
    assert store.log_path("_tests") == store.logs_dir / "_tests.log"
    assert store.prompt_path("bd-a3f2") == store.prompts_dir / "bd-a3f2.md"
    assert store.relative(store.log_path("t")) == ".flow/maestro/parallel_groups/g/logs/t.log"


# --------------------------------------------------------------------------- the group lock


async def test_a_second_coordinator_is_refused_until_the_holder_dies(store: GroupStore, tmp_path: Path) -> None:
    await store.prepare()
    await store.write_snapshot(metadata())  # left in_progress
    async with helper(HOLD_LOCK, str(tmp_path), "g") as holder:
        with pytest.raises(GroupBusyError) as info:
            async with store.lock():
                pytest.fail("took a lock that a live process holds")
        assert info.value.holder_pid == holder.pid
        assert info.value.group_id == "g"
        assert f"pid {holder.pid}" in str(info.value)

        live = lock_holder(store.lock_path)
        assert live is not None and live.pid == holder.pid
        seen = await read_stored_group(tmp_path, "g")
        assert seen is not None and not seen.stale
        assert seen.to_dict()["coordinator_pid"] == holder.pid

        dead_pid = holder.pid
        holder.send_signal(signal.SIGKILL)
        await holder.wait()

    # The dead holder's pid is still written in the file; the kernel says the lock is free.
    assert json.loads(store.lock_path.read_text())["pid"] == dead_pid
    assert lock_holder(store.lock_path) is None
    seen = await read_stored_group(tmp_path, "g")
    assert seen is not None and seen.stale and seen.to_dict()["stale"] is True
    async with store.lock():
        mine = lock_holder(store.lock_path)
        assert mine is not None and mine.pid == os.getpid()
    assert lock_holder(store.lock_path) is None


async def test_a_reader_asking_who_holds_the_lock_never_makes_a_coordinator_busy(
    store: GroupStore, tmp_path: Path
) -> None:
    # `status`, `list` and `wait` ask the kernel who holds .lock; that question must not look like a holder.
    await store.prepare_lock_dir()
    async with store.lock():
        pass
    async with helper(PEEK_LOCK, str(store.lock_path)):
        for _ in range(300):
            async with store.lock():
                pass


async def settle_file_threads() -> None:
    """Let file calls already handed to the default executor (where aiofiles runs them) get done."""
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.01)


async def test_a_cancelled_lock_attempt_leaves_the_lock_free(store: GroupStore) -> None:
    # Cancelled while its flock call runs in a worker thread, the attempt must not leave the lock held.
    await store.prepare_lock_dir()
    for _ in range(20):
        with anyio.move_on_after(0):
            async with store.lock():
                await anyio.sleep(0)
        await settle_file_threads()
        assert lock_holder(store.lock_path) is None
        async with store.lock():
            pass


async def test_a_stale_group_is_one_left_in_progress_without_a_holder(store: GroupStore, tmp_path: Path) -> None:
    await store.prepare()
    meta = metadata()
    await store.write_snapshot(meta)
    seen = await read_stored_group(tmp_path, "g")
    assert seen is not None and seen.holder is None and seen.stale
    async with store.lock():
        seen = await read_stored_group(tmp_path, "g")
        assert seen is not None and seen.holder is not None and seen.holder.pid == os.getpid() and not seen.stale
    meta.status = TaskStatus.COMPLETED
    await store.write_snapshot(meta)
    seen = await read_stored_group(tmp_path, "g")
    assert seen is not None and not seen.stale


# --------------------------------------------------------------------------- the tests lock


async def test_the_tests_lock_serializes_two_holders(store: GroupStore) -> None:
    store.maestro_dir.mkdir(parents=True)
    order: list[str] = []
    first_in, release_first = anyio.Event(), anyio.Event()

    async def first() -> None:
        async with store.tests_lock():
            order.append("first in")
            first_in.set()
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with SuiteLock(store.tests_lock_path):
            order.append("second in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
        await first_in.wait()
        # An absence can only be watched for a while: give the second holder ample chances
        # (it retries every 50-500 ms) to get in wrongly while the first holds the lock.
        await anyio.sleep(1.0)
        assert order == ["first in"]
        release_first.set()
        await wait_until(lambda: len(order) == 3, "the second holder")
    assert order == ["first in", "first out", "second in"]


async def test_waiting_for_the_tests_lock_can_be_cancelled(store: GroupStore) -> None:
    store.maestro_dir.mkdir(parents=True)
    async with store.tests_lock():
        before = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            async with SuiteLock(store.tests_lock_path):
                pytest.fail("got a lock held by another holder")
        assert scope.cancelled_caught
        assert time.monotonic() - before < 10
    # Neither the cancelled wait nor the holder kept it, nor an attempt cancelled mid-flock.
    for _ in range(20):
        with anyio.move_on_after(0):
            async with SuiteLock(store.tests_lock_path):
                await anyio.sleep(0)
        await settle_file_threads()
        assert lock_holder(store.tests_lock_path) is None
    with anyio.fail_after(10):
        async with SuiteLock(store.tests_lock_path):
            pass


# --------------------------------------------------------------------------- set_aside


async def _fill(store: GroupStore, word: str) -> None:
    await store.prepare()
    await store.append_event(make_event("group_error", message=word))
    await store.write_snapshot(metadata())
    store.log_path("t-0").write_text(f"{word} log\n")
    await store.write_private(store.prompt_path("t-0"), f"{word} prompt")


async def test_set_aside_moves_the_state_into_history_without_collisions(store: GroupStore) -> None:
    assert await store.set_aside() is None  # nothing stored, nothing moved

    await _fill(store, "first")
    one = await store.set_aside()
    await _fill(store, "second")  # the same store appends again after setting aside
    two = await store.set_aside()
    await store.close()

    assert one is not None and two is not None and one != two
    assert one.parent == two.parent == store.history_dir
    for folder, word in ((one, "first"), (two, "second")):
        assert sorted(p.name for p in folder.iterdir()) == ["events.jsonl", "logs", "metadata.json", "prompts"]
        events, skipped = decode_journal((folder / "events.jsonl").read_bytes())
        assert [e["message"] for e in events] == [word] and skipped == 0
        assert (folder / "logs" / "t-0.log").read_text() == f"{word} log\n"
        assert (folder / "prompts" / "t-0.md").read_text() == f"{word} prompt"
    # An empty journal takes the old one's place at once: a reader never sees neither file.
    assert sorted(p.name for p in store.dir.iterdir()) == ["events.jsonl", "history"]
    assert store.journal_path.read_bytes() == b""
    assert not store.exists()
    assert await store.load() is None


# --------------------------------------------------------------------------- SnapshotWriter


async def test_snapshot_writer_coalesces_many_changes_into_one_write(store: GroupStore) -> None:
    await store.prepare()
    meta = metadata()
    writer = SnapshotWriter(store, meta, interval=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for i in range(100):  # each change is journaled first, as the coordinator does
            await store.append_event(make_event("group_error", message=f"change {i}"))
            meta.errors.append(f"change {i}")
            writer.mark_dirty()
        await wait_until(lambda: writer.writes >= 1, "the coalesced write")
        assert (await store.read_snapshot()) == meta  # the last change is in it
        await store.append_event(make_event("group_error", message="one more " + "x" * 500))
        meta.errors.append("one more " + "x" * 500)
        writer.mark_dirty()
        await wait_until(lambda: writer.writes >= 2, "the next write")
        assert writer.writes == 2  # not one per mark_dirty
        tg.cancel_scope.cancel()
    await store.close()
    assert (await store.read_snapshot()) == meta


async def test_snapshot_writer_flush_writes_at_once(store: GroupStore) -> None:
    await store.prepare()
    meta = metadata()
    writer = SnapshotWriter(store, meta, interval=3600)
    meta.phase = GroupPhase.COORDINATION
    writer.mark_dirty()
    await writer.flush()
    assert writer.writes == 1
    snapshot = await store.read_snapshot()
    assert snapshot is not None and snapshot.phase is GroupPhase.COORDINATION


async def test_snapshot_writer_keeps_writing_after_a_flush_of_a_clean_state(store: GroupStore) -> None:
    await store.prepare()
    meta = metadata()
    writer = SnapshotWriter(store, meta, interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await anyio.sleep(0)  # let run() start waiting for a change
        await writer.flush()  # a phase transition with nothing pending
        await store.append_event(make_event("group_finished", status="failed"))
        meta.status = TaskStatus.FAILED
        writer.mark_dirty()
        await wait_until(lambda: writer.writes >= 2, "the write after the flush")
        tg.cancel_scope.cancel()
    await store.close()
    snapshot = await store.read_snapshot()
    assert snapshot is not None and snapshot.status is TaskStatus.FAILED


async def test_a_big_snapshot_is_rewritten_only_as_the_journal_grows(store: GroupStore) -> None:
    """O(N) bytes for a group of N tasks: a small change does not rewrite a big snapshot every second."""
    await store.prepare()
    meta = metadata()
    meta.results = [new_result(f"t{i}", log_path=f"logs/t{i}.log") for i in range(2000)]
    writer = SnapshotWriter(store, meta, interval=0.02, max_lag=3600)
    await writer.flush()
    big = store.snapshot_bytes
    assert big > 200_000
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await store.append_event(make_event("warning", message="small"))
        meta.errors.append("small")
        writer.mark_dirty()
        await anyio.sleep(0.3)  # fifteen intervals: a wait for something NOT to happen has to be timed
        assert writer.writes == 1
        while store.journal_bytes < big // 4:
            await store.append_event(make_event("warning", message="x" * 1000))
        writer.mark_dirty()
        await anyio.sleep(0.3)
        assert writer.writes == 1  # a quarter is not enough: readers replay at most half a snapshot's worth
        while store.journal_bytes < big // 2:
            await store.append_event(make_event("warning", message="x" * 1000))
        writer.mark_dirty()
        await wait_until(lambda: writer.writes == 2, "the rewrite once the journal grew by half")
        tg.cancel_scope.cancel()
    await store.close()
    assert (await store.read_snapshot()).errors == ["small"]


# --------------------------------------------------------------------------- readers


async def test_read_stored_groups_lists_newest_first_and_reports_unreadable_ones(tmp_path: Path) -> None:
    for group_id, created in (("old", "2024-01-01T00:00:00.000Z"), ("new", "2025-06-01T00:00:00.000Z"),
                              ("mid", "2024-06-01T00:00:00.000Z")):
        store = GroupStore(tmp_path, group_id)
        await store.prepare()
        await store.write_snapshot(metadata(group_id, created_at=created))
    broken = GroupStore(tmp_path, "broken")
    await broken.prepare()
    broken.snapshot_path.write_text("{not json")
    empty = GroupStore(tmp_path, "empty")
    await empty.prepare()
    (tmp_path / GROUPS_RELATIVE_PATH / "not.a.group").mkdir()

    groups = await read_stored_groups(tmp_path)

    assert [g.group_id for g in groups if g.metadata is not None] == ["new", "mid", "old"]
    # A folder with neither file holds nothing yet (a run cancelled in its first instant): not listed.
    assert {g.group_id for g in groups if g.metadata is None} == {"broken"}
    assert [g.metadata is None for g in groups] == [False, False, False, True]
    errors = {g.group_id: g.error for g in groups}
    assert "metadata.json" in (errors["broken"] or "") and "\n" not in (errors["broken"] or "\n")
    assert "empty" not in errors and await read_stored_group(tmp_path, "empty") is None
    assert errors["new"] is None
    assert {g.group_id: g.to_dict() for g in groups}["broken"] == {"group_id": "broken", "error": errors["broken"]}

    one = await read_stored_group(tmp_path, "broken")
    assert one is not None and one.metadata is None and one.error == errors["broken"]
    assert await read_stored_group(tmp_path, "absent") is None


async def test_an_append_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path: Path) -> None:
    store = GroupStore(tmp_path, "torn")
    await store.prepare()
    store.journal_path.write_bytes(b'{"event":"group_started","at":"x","tasks":["a"]}\n{"event":"task_sta')
    await store.append_event({"event": "warning", "at": "y", "message": "after the crash"})
    await store.close()
    lines = store.journal_path.read_bytes().split(b"\n")
    assert lines[1] == b'{"event":"task_sta'
    assert json.loads(lines[2]) == {"event": "warning", "at": "y", "message": "after the crash"}
    events, skipped = decode_journal(store.journal_path.read_bytes())
    assert [e["event"] for e in events] == ["group_started", "warning"] and skipped == 1


def test_a_snapshot_ahead_of_its_journal_is_told_from_a_later_run() -> None:
    """The pure rule: a final snapshot wins over a journal cut inside the run it records, not over a later run."""
    from maestro_parallel.models import GroupMetadata, TaskStatus
    from maestro_parallel.state.snapshot import snapshot_is_ahead

    final = GroupMetadata(group_id="g", status=TaskStatus.COMPLETED, completed_at="2026-01-01T00:00:05.000Z")
    start = {"event": "group_started", "at": "2026-01-01T00:00:01.000Z"}
    end = {"event": "group_finished", "at": "2026-01-01T00:00:05.000Z", "status": "completed"}
    later = {"event": "group_started", "at": "2026-01-01T00:01:00.000Z"}
    assert snapshot_is_ahead(final, [start])  # cut before the end the snapshot records
    assert snapshot_is_ahead(final, [{"event": "phase_changed"}])  # not even the start survived
    assert not snapshot_is_ahead(final, [start, end])  # the journal holds the end: replay it
    assert not snapshot_is_ahead(final, [start, end, later])  # a later run: replay it
    running = GroupMetadata(group_id="g", status=TaskStatus.IN_PROGRESS)
    assert not snapshot_is_ahead(running, [start])  # nothing final to keep


async def test_a_prompts_folder_swapped_for_a_symlink_receives_no_prompt(tmp_path: Path) -> None:
    """An agent can swap prompts/ while later prompts are still being written: none lands outside."""
    store = GroupStore(tmp_path / "repo", "g")
    await store.prepare()
    outside = tmp_path / "outside"
    outside.mkdir()
    store.prompts_dir.rmdir()
    store.prompts_dir.symlink_to(outside)
    with pytest.raises(OSError, match="symlink"):
        await store.write_private(store.prompt_path("t-0"), "the prompt")
    [error] = await store.write_prompts([(store.prompt_path("t-1"), "another")])
    assert error is not None and "prompts" in str(error)
    assert list(outside.iterdir()) == []


async def test_prompts_are_written_in_place_when_new_and_replace_whatever_an_agent_put_there(tmp_path: Path) -> None:
    """A first run writes each prompt straight into place (no temp file is left); a prompt that exists,
    or a symlink, FIFO or hard link an agent planted at its name, is replaced, never followed or fed."""
    store = GroupStore(tmp_path / "repo", "g")
    await store.prepare()
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours\n")
    store.prompt_path("t-old").write_text("the previous run's prompt")
    store.prompt_path("t-link").symlink_to(outside)
    os.link(outside, store.prompt_path("t-hard"))
    os.mkfifo(store.prompt_path("t-fifo"))
    names = ["t-new", "t-old", "t-link", "t-hard", "t-fifo"]
    errors = await store.write_prompts([(store.prompt_path(name), f"prompt of {name}") for name in names])
    assert errors == [None] * len(names)
    for name in names:
        path = store.prompt_path(name)
        assert not path.is_symlink() and path.is_file() and path.stat().st_nlink == 1
        assert path.read_text() == f"prompt of {name}"
        assert path.stat().st_mode & 0o777 == 0o600
    assert outside.read_text() == "not ours\n"
    assert sorted(p.name for p in store.prompts_dir.iterdir()) == sorted(f"{name}.md" for name in names)
