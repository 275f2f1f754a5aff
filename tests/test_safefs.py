"""safefs: real files, FIFOs, devices and symlinks below a real root; every refusal names its path."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maestro_parallel.errors import StateError
from maestro_parallel.state.safefs import (
    LineSplitter,
    OpenMode,
    UnsafePathError,
    check_state_chain,
    iter_chunks,
    last_line,
    open_below,
    read_limited,
    read_tail,
    tail_start,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "logs").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "precious").write_text("precious\n")
    return tmp_path / "root"


def read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def test_reads_appends_and_creates_a_regular_file(root: Path) -> None:
    fd = open_below(root, "logs/a.log", OpenMode.APPEND)
    os.write(fd, b"one\n")
    os.close(fd)
    fd = open_below(root, root / "logs" / "a.log", OpenMode.APPEND)  # absolute under the root works too
    os.write(fd, b"two\n")
    os.close(fd)
    assert read_fd(open_below(root, "logs/a.log")) == b"one\ntwo\n"
    fd = open_below(root, "logs/a.log", OpenMode.CREATE)
    os.write(fd, b"new\n")
    os.close(fd)
    assert (root / "logs" / "a.log").read_bytes() == b"new\n"
    assert (root / "logs" / "a.log").stat().st_mode & 0o777 == 0o600


def test_make_dirs_creates_private_folders(root: Path) -> None:
    os.close(open_below(root, "x/y/z.log", OpenMode.APPEND, make_dirs=True))
    assert (root / "x" / "y" / "z.log").is_file()
    assert (root / "x" / "y").stat().st_mode & 0o777 == 0o700
    with pytest.raises(FileNotFoundError):
        open_below(root, "missing/z.log", OpenMode.APPEND)


def test_a_missing_file_is_file_not_found_when_reading(root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_below(root, "logs/none.log")
    assert read_limited(root, "logs/none.log", 10) is None


@pytest.mark.parametrize("mode", list(OpenMode))
def test_a_symlinked_file_is_refused_and_its_target_untouched(root: Path, mode: OpenMode) -> None:
    outside = root.parent / "outside" / "precious"
    (root / "logs" / "a.log").symlink_to(outside)
    with pytest.raises(UnsafePathError) as caught:
        open_below(root, "logs/a.log", mode)
    assert str(caught.value) == f"refusing to open {root}/logs/a.log: it is a symlink"
    assert caught.value.path == root / "logs" / "a.log"
    assert isinstance(caught.value, StateError)
    assert outside.read_text() == "precious\n"


@pytest.mark.parametrize("mode", list(OpenMode))
def test_a_dangling_symlink_is_refused_and_nothing_is_created(root: Path, mode: OpenMode) -> None:
    target = root.parent / "outside" / "new-file"
    (root / "logs" / "a.log").symlink_to(target)
    with pytest.raises(UnsafePathError, match="is a symlink"):
        open_below(root, "logs/a.log", mode)
    assert not target.exists()


@pytest.mark.parametrize("mode", list(OpenMode))
def test_a_symlinked_folder_anywhere_on_the_way_is_refused(root: Path, mode: OpenMode) -> None:
    (root / "logs").rmdir()
    (root / "logs").symlink_to(root.parent / "outside")
    with pytest.raises(UnsafePathError) as caught:
        open_below(root, "logs/precious", mode)
    assert str(caught.value) == f"refusing to use {root}/logs: it is a symlink"
    (root / "deep").mkdir()
    (root / "deep" / "er").symlink_to(root / "logs")  # a link to a link, one level down
    with pytest.raises(UnsafePathError, match="deep/er: it is a symlink"):
        open_below(root, "deep/er/precious", mode, make_dirs=True)
    assert (root.parent / "outside" / "precious").read_text() == "precious\n"


@pytest.mark.parametrize("mode", list(OpenMode))
def test_a_hard_link_to_an_outside_file_is_refused(root: Path, mode: OpenMode) -> None:
    outside = root.parent / "outside" / "precious"
    os.link(outside, root / "logs" / "a.log")
    with pytest.raises(UnsafePathError, match=r"a\.log: it has 2 hard links"):
        open_below(root, "logs/a.log", mode)
    assert outside.read_text() == "precious\n"
    os.close(open_below(root, "logs/a.log", OpenMode.READ, allow_hard_links=True))


def test_a_file_in_place_of_a_folder_is_refused(root: Path) -> None:
    (root / "prompts").write_text("x")
    with pytest.raises(UnsafePathError, match="prompts: it is a regular file, not a folder"):
        open_below(root, "prompts/a.md", OpenMode.CREATE, make_dirs=True)


@pytest.mark.parametrize("mode", list(OpenMode))
def test_a_fifo_is_refused_without_blocking(root: Path, mode: OpenMode) -> None:
    # In a child with an alarm: a blocking open would hang the test, not fail it.
    fifo = root / "logs" / "a.log"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        import signal, sys
        from maestro_parallel.state.safefs import open_below, OpenMode, UnsafePathError
        signal.alarm(5)
        try:
            open_below({str(root)!r}, "logs/a.log", OpenMode({mode.value!r}))
        except UnsafePathError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"refusing to open {fifo}: it is a FIFO"


def test_a_device_or_a_folder_is_refused(root: Path) -> None:
    with pytest.raises(UnsafePathError, match="it is a character device"):
        open_below("/dev", "null")
    with pytest.raises(UnsafePathError, match="logs: it is a folder"):
        open_below(root, "logs")
    with pytest.raises(UnsafePathError, match="logs: it is a folder"):
        open_below(root, "logs", OpenMode.APPEND)


@pytest.mark.parametrize("path", ["../outside/precious", "logs/../../outside/precious", "", ".", "/etc/passwd"])
def test_paths_that_climb_or_leave_the_root_are_refused(root: Path, path: str) -> None:
    with pytest.raises(UnsafePathError) as caught:
        open_below(root, path)
    assert "\n" not in str(caught.value)


def test_the_root_itself_may_be_a_symlink(root: Path) -> None:
    (root / "logs" / "a.log").write_text("hello")
    alias = root.parent / "alias"
    alias.symlink_to(root)
    assert read_fd(open_below(alias, "logs/a.log")) == b"hello"


def test_the_returned_descriptor_blocks_normally(root: Path) -> None:
    import fcntl

    (root / "logs" / "a.log").write_text("x")
    fd = open_below(root, "logs/a.log")
    try:
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the state chain


def make_chain(repo: Path, group: str = "g") -> Path:
    group_dir = repo / ".flow" / "maestro" / "parallel_groups" / group
    (group_dir / "logs").mkdir(parents=True)
    (group_dir / "prompts").mkdir()
    (group_dir / "history").mkdir()
    return group_dir


def test_a_plain_chain_or_a_missing_one_passes(tmp_path: Path) -> None:
    check_state_chain(tmp_path)
    check_state_chain(tmp_path, "g")
    make_chain(tmp_path)
    check_state_chain(tmp_path, "g")
    check_state_chain(tmp_path, "other")


@pytest.mark.parametrize("component", [
    ".flow", ".flow/maestro", ".flow/maestro/parallel_groups", ".flow/maestro/parallel_groups/g",
    ".flow/maestro/parallel_groups/g/logs", ".flow/maestro/parallel_groups/g/prompts",
    ".flow/maestro/parallel_groups/g/history",
])
def test_each_symlinked_folder_of_the_chain_is_named(tmp_path: Path, component: str) -> None:
    repo = tmp_path / "repo"
    make_chain(repo)
    elsewhere = tmp_path / "elsewhere"
    os.rename(repo / component, elsewhere)
    (repo / component).symlink_to(elsewhere)
    with pytest.raises(UnsafePathError) as caught:
        check_state_chain(repo, "g")
    assert str(caught.value) == f"refusing to use {repo / component}: it is a symlink"


def test_a_file_in_the_chain_is_named(tmp_path: Path) -> None:
    (tmp_path / ".flow").mkdir()
    (tmp_path / ".flow" / "maestro").write_text("")
    with pytest.raises(UnsafePathError, match=r"\.flow/maestro: it is a regular file, not a folder"):
        check_state_chain(tmp_path)


def test_without_a_group_only_the_shared_folders_are_checked(tmp_path: Path) -> None:
    group_dir = make_chain(tmp_path)
    (group_dir / "logs").rmdir()
    (group_dir / "logs").symlink_to(tmp_path)
    check_state_chain(tmp_path)  # no group named: its folders are not looked at
    with pytest.raises(UnsafePathError, match="logs: it is a symlink"):
        check_state_chain(tmp_path, "g")


# --------------------------------------------------------------------------- bounded reads


def test_read_tail_and_last_line(root: Path) -> None:
    path = root / "logs" / "a.log"
    path.write_bytes(b"first\nsecond\nthird line\n\n  \n")
    fd = open_below(root, "logs/a.log")
    try:
        assert read_tail(fd, 6) == b"e\n\n  \n"
        assert read_tail(fd, 10_000) == path.read_bytes()
        assert read_tail(fd, 0) == b""
        assert last_line(fd) == "third line"
        assert last_line(fd, max_bytes=4) == ""  # only blanks in the window
    finally:
        os.close(fd)
    path.write_bytes("é".encode() * 10)
    fd = open_below(root, "logs/a.log")
    try:
        assert last_line(fd, max_bytes=5).endswith("éé")  # a torn sequence at the window's start is replaced
    finally:
        os.close(fd)


def test_iter_chunks_streams_in_order_and_stops_at_the_size_it_saw(root: Path) -> None:
    path = root / "logs" / "a.log"
    data = os.urandom(300_000)
    path.write_bytes(data)
    fd = open_below(root, "logs/a.log")
    try:
        chunks = iter_chunks(fd, chunk=65_536)
        first = next(chunks)
        with open(path, "ab") as grow:
            grow.write(b"later")
        rest = list(chunks)
        assert first + b"".join(rest) == data  # what was appended meanwhile waits for the next call
        assert max(len(c) for c in [first, *rest]) <= 65_536
        assert b"".join(iter_chunks(fd, start=len(data))) == b"later"
        assert b"".join(iter_chunks(fd, start=10, end=20)) == data[10:20]
    finally:
        os.close(fd)


def test_read_limited_refuses_a_state_file_too_large(root: Path) -> None:
    (root / "logs" / "m.json").write_bytes(b"x" * 100)
    assert read_limited(root, "logs/m.json", 100) == b"x" * 100
    with pytest.raises(UnsafePathError, match=r"m\.json: 100 bytes, more than the 99"):
        read_limited(root, "logs/m.json", 99)


def test_the_tail_of_a_huge_sparse_log_is_read_in_bounded_memory(root: Path) -> None:
    # 2 GiB sparse with a last line; a child under RLIMIT_AS of 512 MiB reads its tail and streams it.
    path = root / "logs" / "huge.log"
    with open(path, "wb") as handle:
        handle.truncate(2 * 1024**3)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\nthe end\n")
    code = textwrap.dedent(f"""
        import os, resource
        resource.setrlimit(resource.RLIMIT_AS, (512 * 1024**2, 512 * 1024**2))
        from maestro_parallel.state.safefs import open_below, last_line, iter_chunks
        fd = open_below({str(root)!r}, "logs/huge.log")
        print(last_line(fd))
        total = 0
        for piece in iter_chunks(fd, start=os.fstat(fd).st_size - 10 * 1024**2):
            total += len(piece)
        print(total)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["the", "end", str(10 * 1024**2)]
    assert resource.getrlimit(resource.RLIMIT_AS)  # the limit was the child's alone


# --------------------------------------------------------------------------- lines of bounded length


def reference_lines(data: bytes, max_bytes: int) -> list[bytes]:
    """What LineSplitter must give: every line, cut into pieces of max_bytes."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the stream ended with a newline: no line after it
    out: list[bytes] = []
    for line in lines:
        out += [line[i : i + max_bytes] for i in range(0, len(line), max_bytes)] or [b""]
    return out


@settings(deadline=None, max_examples=400, derandomize=True)
@given(data=st.binary(max_size=300) | st.lists(st.sampled_from([b"\n", b"ab", b"abcd", b"\r\n", b"x" * 7]),
                                                max_size=40).map(b"".join),
       cuts=st.lists(st.integers(0, 300), max_size=8), max_bytes=st.integers(1, 9))
def test_line_splitter_matches_the_reference_however_the_stream_is_cut(data: bytes, cuts: list[int],
                                                                       max_bytes: int) -> None:
    splitter = LineSplitter(max_bytes)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    got: list[bytes] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        got += splitter.feed(data[start:end])
    got += splitter.flush()
    assert got == reference_lines(data, max_bytes)
    assert all(len(line) <= max_bytes for line in got)


def test_line_splitter_examples() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"abcd\nab") == [b"abcd"]  # exactly a piece long: one line, no empty one after
    assert splitter.feed(b"cdefgh") == [b"abcd"]
    assert splitter.feed(b"\n\n") == [b"efgh", b""]
    assert splitter.flush() == [] and splitter.feed(b"tail") == [] and splitter.flush() == [b"tail"]
    with pytest.raises(ValueError):
        LineSplitter(0)


def test_tail_start_begins_at_a_whole_line(root: Path) -> None:
    path = root / "logs" / "a.log"
    path.write_bytes(b"first line\nsecond line\nthird\n")
    fd = open_below(root, "logs/a.log")
    try:
        assert tail_start(fd, 1000) == 0
        assert tail_start(fd, 6) == len(b"first line\nsecond line\n")  # "third\n" is whole: start there
        assert tail_start(fd, 8) == len(b"first line\nsecond line\n")  # "e\nthird\n": the cut line is skipped
        assert tail_start(fd, 1) == path.stat().st_size  # nothing whole in the window
    finally:
        os.close(fd)


def test_tail_start_finds_a_line_beyond_the_first_chunk(root: Path) -> None:
    path = root / "logs" / "a.log"
    path.write_bytes(b"x" * 200_000 + b"\nlast\n")
    fd = open_below(root, "logs/a.log")
    try:
        assert tail_start(fd, 150_000) == 200_001
    finally:
        os.close(fd)


def test_a_missing_folder_does_not_hide_its_symlinked_sibling(tmp_path: Path) -> None:
    group_dir = make_chain(tmp_path)
    (group_dir / "logs").rmdir()
    (group_dir / "prompts").rmdir()
    (group_dir / "prompts").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError, match="prompts: it is a symlink"):
        check_state_chain(tmp_path, "g")


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_a_kept_folder_is_not_used_once_it_was_swapped_for_a_symlink(tmp_path: Path, how: str) -> None:
    """open_state_file keeps the folders it walked: a folder moved or deleted and replaced by a symlink is refused."""
    import shutil

    from maestro_parallel.state.safefs import OpenMode, UnsafePathError, open_state_file

    logs = tmp_path / ".flow" / "maestro" / "parallel_groups" / "g" / "logs"
    logs.mkdir(parents=True)
    os.close(open_state_file(logs / "a.log", OpenMode.APPEND))
    os.close(open_state_file(logs / "b.log", OpenMode.APPEND))  # through the kept folder
    assert sorted(p.name for p in logs.iterdir()) == ["a.log", "b.log"]
    outside = tmp_path / "outside"
    outside.mkdir()
    if how == "renamed":
        logs.rename(logs.with_name("logs-old"))
    else:
        shutil.rmtree(logs)
    logs.symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        open_state_file(logs / "c.log", OpenMode.APPEND)
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- read_regular (repository files)


def test_read_regular_reads_a_file_through_a_symlink_and_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    from maestro_parallel._files import NotRegularFileError, read_regular

    target = tmp_path / "real.toml"
    target.write_bytes(b"x = 1\n")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert read_regular(link, 100) == b"x = 1\n"  # a user's symlink is followed
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device"), (tmp_path, "a folder")):
        with pytest.raises(NotRegularFileError) as caught:
            read_regular(path, 100)  # no writer on the FIFO: refused at once, never a blocked open
        assert caught.value.strerror == f"it is {kind}, not a regular file"
    with pytest.raises(NotRegularFileError, match="more than 5 bytes"):
        read_regular(target, 5)
    assert read_regular(target, 3, head=True) == b"x ="
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent", 10)
    assert read_regular(tmp_path / "absent", 10, missing=b"") == b""
