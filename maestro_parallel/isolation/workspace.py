"""Task worktrees: whether isolation can run, from which commit, and each task's own checkout.

Phase 1 of a group asks :func:`resolve_mode` and :func:`resolve_base` once, calls
:func:`ensure_excluded` so that maestro's folders never make the user's checkout dirty,
plans the ``.worktreeinclude`` copies once (:func:`plan_includes`), then creates every
task's worktree at once (:func:`create_worktrees`, bounded by a limiter): a checkout is
mostly disk writes, and the tasks' checkouts overlap instead of queueing.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from .._files import read_regular
from ._proc import run_process
from .errors import (
    GitError,
    GitUnavailableError,
    IncludeError,
    IsolationError,
    ModeUnavailableError,
    SetupError,
    TargetError,
    WorktreeError,
)
from .events import EventSink, WorktreeCreated, emit
from .git import MIN_GIT_VERSION, GitResult, git_version, run_git, scrub_git_variables
from .refs import attempt_branch, task_branch, task_worktree_path

__all__ = (
    "EXCLUDE_ENTRIES",
    "ExistingBranch",
    "IncludePlan",
    "IsolationMode",
    "ModeDecision",
    "RepoState",
    "TargetBase",
    "TaskWorkspace",
    "WorktreeEntry",
    "create_worktree",
    "create_worktrees",
    "decide_mode",
    "ensure_excluded",
    "inspect_repo",
    "list_worktrees",
    "plan_includes",
    "resolve_base",
    "resolve_mode",
    "run_setup",
)


class IsolationMode(enum.StrEnum):
    """``[isolation].mode``: where agents work."""

    AUTO = "auto"
    WORKTREE = "worktree"
    SHARED = "shared"


class ExistingBranch(enum.StrEnum):
    """What :func:`create_worktree` does when the task's branch already exists without a worktree."""

    ERROR = "error"  # refuse, naming the branch
    REUSE = "reuse"  # check the branch out again (resume: its work continues)
    KEEP_ASIDE = "keep_aside"  # rename it under _attempts/ and start afresh from base_sha (a rerun)


@dataclass(frozen=True)
class RepoState:
    """Where the repository root sits in git: its work tree's top, the root's subfolder, HEAD."""

    repo_root: Path
    toplevel: Path
    prefix: str  # the repository root relative to the top of the work tree ("" or "sub/dir/")
    common_dir: Path
    branch: str | None  # the branch checked out at the repository root; None: detached HEAD
    head_sha: str | None  # None: no commit yet


@dataclass(frozen=True)
class ModeDecision:
    """The mode a group runs in, and why (for the metadata and ``-v``)."""

    mode: IsolationMode
    reason: str


def decide_mode(
    requested: IsolationMode | str,
    *,
    git: tuple[int, int, int] | str,
    in_work_tree: bool,
    has_commit: bool,
    where: str = "the repository root",
) -> ModeDecision:
    """Pick ``worktree`` or ``shared`` for ``requested`` (pure).

    :param git: git's version, or why it is unavailable.
    :raises ModeUnavailableError: ``worktree`` was asked for where it cannot work.
    """
    requested = IsolationMode(requested)
    if requested is IsolationMode.SHARED:
        return ModeDecision(IsolationMode.SHARED, "mode = shared")
    if isinstance(git, str):
        why = git
    elif git[:2] < MIN_GIT_VERSION:
        why = f"git {'.'.join(map(str, git))} is older than {'.'.join(map(str, MIN_GIT_VERSION))}"
    elif not in_work_tree:
        why = f"{where} is not inside a git work tree"
    elif not has_commit:
        why = "the repository has no commit yet (make a first commit)"
    else:
        return ModeDecision(IsolationMode.WORKTREE, "git work tree with a commit")
    if requested is IsolationMode.WORKTREE:
        raise ModeUnavailableError(f"worktree isolation is impossible: {why}")
    return ModeDecision(IsolationMode.SHARED, why)


async def inspect_repo(repo_root: Path) -> RepoState | None:
    """Read where ``repo_root`` sits in git; None when it is not inside a git work tree."""
    repo_root = Path(repo_root).absolute()
    top = await run_git(
        repo_root, "rev-parse", "--show-toplevel", "--show-prefix", "--git-common-dir", check=False, timeout=30
    )
    lines = top.stdout.splitlines()
    if not top.ok or len(lines) < 3 or not lines[0]:
        return None
    toplevel, prefix, common = Path(lines[0]), lines[1], Path(lines[2])
    head = await run_git(repo_root, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False, timeout=30)
    branch = await run_git(repo_root, "symbolic-ref", "-q", "HEAD", check=False, timeout=30)
    return RepoState(
        repo_root=repo_root,
        toplevel=toplevel,
        prefix=prefix,
        common_dir=common if common.is_absolute() else (repo_root / common).resolve(),
        branch=branch.stdout.strip().removeprefix("refs/heads/") if branch.ok else None,
        head_sha=head.stdout.strip() if head.ok else None,
    )


async def resolve_mode(
    repo_root: Path, requested: IsolationMode | str = IsolationMode.AUTO
) -> tuple[ModeDecision, RepoState | None]:
    """Decide the mode for ``repo_root`` (DESIGN §12: auto is worktree in a git work tree with a commit, git ≥ 2.38).

    :raises ModeUnavailableError: ``worktree`` was asked for and is impossible, naming why.
    """
    if IsolationMode(requested) is IsolationMode.SHARED:
        return decide_mode(requested, git="", in_work_tree=False, has_commit=False), None
    try:
        version: tuple[int, int, int] | str = await git_version()
    except GitUnavailableError as exc:
        version = str(exc)
    state = await inspect_repo(repo_root) if not isinstance(version, str) else None
    decision = decide_mode(
        requested,
        git=version,
        in_work_tree=state is not None,
        has_commit=state is not None and state.head_sha is not None,
        where=str(repo_root),
    )
    return decision, state


@dataclass(frozen=True)
class TargetBase:
    """The branch the work lands on and its tip when the group started (``base_sha``)."""

    target: str
    sha: str


async def resolve_base(state: RepoState, target: str = "") -> TargetBase:
    """Resolve ``[isolation].target`` ("" = the branch checked out at the repository root) to its tip.

    :raises TargetError: detached HEAD with no target, no commit yet, or no such branch.
    """
    name = target.removeprefix("refs/heads/")
    if not name:
        if state.head_sha is None:
            raise TargetError('the repository has no commit yet: make a first commit, or use mode = "shared"')
        if state.branch is None:
            raise TargetError(
                f"HEAD is detached at {state.head_sha[:12]}: check out a branch, or set [isolation] target "
                "to the branch the work should land on"
            )
        name = state.branch
    check = await run_git(state.repo_root, "check-ref-format", "--branch", name, check=False, timeout=30)
    if not check.ok:
        raise TargetError(f"target {name!r} is not a valid branch name")
    found = await run_git(
        state.repo_root, "rev-parse", "-q", "--verify", f"refs/heads/{name}^{{commit}}", check=False, timeout=30
    )
    if not found.ok:
        raise TargetError(f"target branch {name!r} does not exist in {state.toplevel}")
    return TargetBase(name, found.stdout.strip())


#: Maestro's own paths, relative to the repository root, as ``.git/info/exclude`` lines.
EXCLUDE_ENTRIES = (".flow/maestro/worktrees/", ".flow/maestro/parallel_groups/", ".flow/maestro/*.lock")
_EXCLUDE_HEADER = "# maestro-parallel: its worktrees, state and locks"


def _add_exclude_lines(path: Path, lines: Sequence[str]) -> bool:
    existing = read_regular(path, 4 << 20, missing=b"").decode("utf-8", "surrogateescape")  # never a FIFO
    present = set(existing.splitlines())
    missing = [line for line in lines if line not in present]
    if not missing:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    text = existing + ("" if not existing or existing.endswith("\n") else "\n")
    text += "\n".join(([_EXCLUDE_HEADER] if _EXCLUDE_HEADER not in present else []) + missing) + "\n"
    # A temporary file of its own per writer: concurrent writers each replace the file whole.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return True


async def ensure_excluded(state: RepoState) -> bool:
    """Add maestro's paths to ``info/exclude`` (shared by every worktree); True when lines were added.

    The user's ``git status`` then never shows maestro's folders, so a
    fast-forward is never refused because of them.
    """
    lines, path = [f"/{state.prefix}{entry}" for entry in EXCLUDE_ENTRIES], state.common_dir / "info" / "exclude"
    try:
        return await anyio.to_thread.run_sync(_add_exclude_lines, path, lines)
    except OSError as exc:  # a FIFO or a device planted there, a read-only .git
        raise WorktreeError(f"cannot add maestro's paths to {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class WorktreeEntry:
    """One line of ``git worktree list``."""

    path: Path
    head: str | None
    branch: str | None  # short name; None: detached
    prunable: bool = False


async def list_worktrees(path: Path) -> list[WorktreeEntry]:
    """Every worktree of the repository at ``path`` (the main one first)."""
    result = await _admin_git(path, "worktree", "list", "--porcelain", "-z")
    entries: list[WorktreeEntry] = []
    current: dict[str, str] = {}
    for field_ in [*result.stdout.split("\0"), ""]:
        if field_:
            key, _, value = field_.partition(" ")
            current[key] = value
            continue
        if "worktree" in current:
            entries.append(
                WorktreeEntry(
                    path=Path(current["worktree"]),
                    head=current.get("HEAD"),
                    branch=current["branch"].removeprefix("refs/heads/") if "branch" in current else None,
                    prunable="prunable" in current,
                )
            )
        current = {}
    return entries


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass(frozen=True)
class IncludePlan:
    """The gitignored files ``.worktreeinclude`` asks to copy, relative to the repository root."""

    source: Path
    files: tuple[str, ...] = ()


def _check_patterns(text: str) -> None:
    for number, raw in enumerate(text.splitlines(), 1):
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        parts = pattern.lstrip("!").strip("/").split("/")
        if ".." in parts:
            raise IncludeError(f".worktreeinclude line {number}: {pattern!r} reaches outside the repository")


def _check_candidates(root: Path, toplevel: Path, files: Sequence[str]) -> None:
    real_top = os.path.realpath(toplevel)
    for rel in files:
        path = root / rel
        if path.is_symlink():
            raise IncludeError(f".worktreeinclude matches {rel}, a symbolic link: refusing to copy it")
        real = os.path.realpath(path)
        if os.path.commonpath([real, real_top]) != real_top:
            raise IncludeError(f".worktreeinclude matches {rel}, which lies outside the repository")


async def plan_includes(state: RepoState) -> IncludePlan:
    """The files to copy into each new worktree (once per group).

    A file is copied when ``.worktreeinclude`` (gitignore syntax) matches it and
    git ignores it; tracked files come with the checkout anyway.

    :raises IncludeError: a pattern climbs out with ``..``, or a match is a symlink or lies outside.
    """
    include = state.repo_root / ".worktreeinclude"
    if not include.is_file() or include.is_symlink():
        if include.is_symlink():
            raise IncludeError(".worktreeinclude is a symbolic link: refusing to read it")
        return IncludePlan(state.repo_root)
    _check_patterns(include.read_text(encoding="utf-8", errors="replace"))
    not_ours = ":(exclude).flow/maestro"  # maestro's own worktrees and state are never copied
    listed = await run_git(
        state.repo_root, "ls-files", "-z", "--others", "--ignored", f"--exclude-from={include}", "--", ".", not_ours
    )
    ignored = await run_git(
        state.repo_root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--", ".", not_ours
    )
    ignored_set = set(ignored.zsplit())
    files = tuple(path for path in listed.zsplit() if path in ignored_set)
    _check_candidates(state.repo_root, state.toplevel, files)
    return IncludePlan(state.repo_root, files)


def _copy_includes(plan: IncludePlan, destination: Path) -> int:
    real_dest = os.path.realpath(destination)
    copied = 0
    for rel in plan.files:
        source = plan.source / rel
        if source.is_symlink():  # replaced by a link since the plan was made
            raise IncludeError(f".worktreeinclude matches {rel}, a symbolic link: refusing to copy it")
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        real_parent = os.path.realpath(target.parent)
        if os.path.commonpath([real_parent, real_dest]) != real_dest:
            raise IncludeError(f"copying {rel} would write outside the worktree (through a symbolic link)")
        if target.exists() or target.is_symlink():
            continue  # a reused worktree keeps its own copy
        shutil.copy2(source, target, follow_symlinks=False)
        copied += 1
    return copied


@dataclass(frozen=True)
class TaskWorkspace:
    """A task's worktree: its branch, its folder, and where its agent runs (``cwd``)."""

    group_id: str
    task_id: str
    branch: str
    path: Path  # the worktree's top
    cwd: Path  # the subfolder matching the repository root (== path when the root is the top)
    base_sha: str
    reused: bool = False
    kept_branch: str | None = None  # where an earlier attempt's branch was moved, if it was

    def agent_environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` for an agent in this worktree: git's redirecting variables removed, ``MAESTRO_WORKTREE`` set."""
        clean = scrub_git_variables(env)
        clean["MAESTRO_WORKTREE"] = str(self.cwd)
        return clean


async def _branch_exists(repo: Path, branch: str) -> bool:
    found = await run_git(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False, timeout=30)
    return found.ok


async def _keep_aside(repo: Path, group_id: str, task_id: str, branch: str) -> str:
    attempt = 1
    while await _branch_exists(repo, attempt_branch(group_id, task_id, attempt)):
        attempt += 1
    kept = attempt_branch(group_id, task_id, attempt)
    await run_git(repo, "branch", "-m", branch, kept, timeout=30)
    return kept


async def _admin_git(repo: Path, *args: str) -> GitResult:
    """A worktree-admin git call, retried a few times on the race of a concurrent ``worktree add``.

    Another process (a second group) may be halfway through creating its
    worktree's admin folder; git then reports ``failed to read .git/worktrees/...``.
    """
    for attempt in range(1, 6):
        try:
            return await run_git(repo, *args)
        except GitError as exc:
            if attempt == 5 or "failed to read" not in exc.stderr:
                raise
            await anyio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


async def _add_worktree(repo: Path, path: Path, branch: str, start: str | None) -> None:
    """Register ``path`` on ``branch`` (made at ``start`` unless None) without a checkout.

    git makes a new branch before its worktree: a raced attempt that failed leaves it, and the retry uses it.
    """
    add = ("worktree", "add", "--quiet", "--no-checkout")
    try:
        await _admin_git(repo, *add, *(["-b", branch, str(path), start] if start else [str(path), branch]))
    except GitError as exc:  # the caller saw no such branch before, under its group's lock
        if start is None or "a branch named" not in exc.stderr or not await _branch_exists(repo, branch):
            raise
        await _admin_git(repo, *add, str(path), branch)


async def _register(
    state: RepoState,
    group_id: str,
    task_id: str,
    branch: str,
    path: Path,
    base_sha: str,
    existing_branch: ExistingBranch,
) -> TaskWorkspace:
    """Register the task's worktree with git without checking files out (or find it registered)."""
    repo = state.repo_root
    entry = next((e for e in await list_worktrees(repo) if _same_path(e.path, path)), None)
    if entry is not None and entry.prunable and not path.exists():
        await _admin_git(repo, "worktree", "prune")
        entry = None
    if entry is not None:
        if entry.branch != branch:
            on = f"branch {entry.branch}" if entry.branch else f"a detached HEAD ({(entry.head or '')[:12]})"
            raise WorktreeError(
                f"{path} is already a worktree on {on}, not on {branch}: run clean --group-id {group_id}"
            )
        return TaskWorkspace(group_id, task_id, branch, path, path / state.prefix, base_sha, reused=True)
    if path.exists() and (not path.is_dir() or path.is_symlink() or any(path.iterdir())):
        raise WorktreeError(f"{path} already exists and is not a worktree of this repository: move it away")
    kept, reuse = None, False
    if await _branch_exists(repo, branch):
        if existing_branch is ExistingBranch.ERROR:
            raise WorktreeError(f"branch {branch} already exists without a worktree: run clean --group-id {group_id}")
        if existing_branch is ExistingBranch.KEEP_ASIDE:
            kept = await _keep_aside(repo, group_id, task_id, branch)
        reuse = kept is None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    await _add_worktree(repo, path, branch, None if reuse else base_sha)
    return TaskWorkspace(group_id, task_id, branch, path, path / state.prefix, base_sha, kept_branch=kept)


async def _populate(path: Path) -> None:
    """Check the files out into a worktree registered with ``--no-checkout`` (it has no index yet).

    A reused worktree that already has its index is left as it is: it may
    hold an interrupted attempt's work.
    """
    index = (
        await run_git(path, "rev-parse", "--path-format=absolute", "--git-path", "index", timeout=30)
    ).stdout.strip()
    if not Path(index).exists():
        await run_git(path, "reset", "--hard", "--quiet")


async def create_worktree(
    state: RepoState,
    group_id: str,
    task_id: str,
    base_sha: str,
    *,
    include: IncludePlan | None = None,
    existing_branch: ExistingBranch = ExistingBranch.ERROR,
    on_event: EventSink | None = None,
    admin_lock: anyio.Lock | None = None,
) -> TaskWorkspace:
    """Create (or reuse) the worktree of one task on ``maestro/<group>/<task>`` from ``base_sha``.

    An existing worktree at the task's path is reused when it is on the task's
    branch; anything else in the way is an error naming it.  Submodules are
    initialised; ``include``'s files are copied in.  Maestro's paths are
    excluded first (:func:`ensure_excluded`), so the user's checkout stays clean.

    Concurrent callers share one ``admin_lock``: ``git worktree add`` reads
    every other worktree's admin folder, and one half-written by a concurrent
    add makes it fail.  Only the registration (``--no-checkout``, milliseconds)
    holds the lock; the checkout itself runs outside it.

    :raises WorktreeError: the path or the branch is in the way.
    :raises IncludeError: an include would be a symlink or land outside.
    :raises GitError: a git command failed.
    """
    repo = state.repo_root
    branch = task_branch(group_id, task_id)
    path = task_worktree_path(repo, group_id, task_id)
    await ensure_excluded(state)  # before anything appears under .flow/maestro/worktrees
    async with admin_lock if admin_lock is not None else contextlib.nullcontext():
        workspace = await _register(state, group_id, task_id, branch, path, base_sha, existing_branch)
    await _populate(path)
    if (path / ".gitmodules").is_file():
        await run_git(path, "submodule", "update", "--init", "--recursive", "--quiet")
    if include is not None and include.files:
        await anyio.to_thread.run_sync(_copy_includes, include, workspace.cwd)
    await emit(
        on_event,
        WorktreeCreated(
            event="worktree_created",
            task_id=task_id,
            branch=branch,
            path=str(path),
            base_sha=base_sha,
            reused=workspace.reused,
        ),
    )
    return workspace


async def create_worktrees(
    state: RepoState,
    group_id: str,
    task_ids: Sequence[str],
    base_sha: str,
    *,
    include: IncludePlan | None = None,
    existing_branch: ExistingBranch = ExistingBranch.ERROR,
    max_concurrent: int = 0,
    on_event: EventSink | None = None,
) -> dict[str, TaskWorkspace | IsolationError]:
    """Create every task's worktree at once (at most ``max_concurrent``; 0: one per CPU, at least 2).

    A checkout is file creation, bound by the kernel's time in the file system:
    more checkouts at once than CPUs only contend (measured: twice the system
    time for no gain in wall time on 2 CPUs).

    A task whose worktree cannot be made gets its error as its value (input
    order is kept); the others are not held back by it.
    """
    limit = max_concurrent if max_concurrent > 0 else max(2, os.cpu_count() or 2)
    limiter = anyio.CapacityLimiter(limit)
    admin_lock = anyio.Lock()
    results: dict[str, TaskWorkspace | IsolationError] = {
        task_id: IsolationError("not created") for task_id in task_ids
    }

    async def one(task_id: str) -> None:
        async with limiter:
            try:
                results[task_id] = await create_worktree(
                    state,
                    group_id,
                    task_id,
                    base_sha,
                    include=include,
                    existing_branch=existing_branch,
                    on_event=on_event,
                    admin_lock=admin_lock,
                )
            except IsolationError as exc:
                results[task_id] = exc

    async with anyio.create_task_group() as tg:
        for task_id in task_ids:
            tg.start_soon(one, task_id)
    return results


async def run_setup(
    workspace: TaskWorkspace,
    argv: Sequence[str],
    *,
    timeout: float,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``[isolation].setup`` in the task's worktree (its agent's cwd), output appended to ``log_path``.

    :raises SetupError: ``setup failed: exit code N`` / ``timed out after S s`` /
        ``cannot run ...``; on timeout its whole process group is killed first.
    """
    if not argv:
        return
    base = workspace.agent_environment(env if env is not None else os.environ)
    try:
        done = await run_process(argv, cwd=workspace.cwd, env=base, timeout=timeout, log_path=log_path)
    except OSError as exc:
        raise SetupError(
            f"setup failed: cannot run {argv[0]!r}: {exc.strerror or exc}", log_path=str(log_path)
        ) from exc
    if done.timed_out:
        raise SetupError(f"setup failed: timed out after {timeout:g} s", log_path=str(log_path))
    if done.returncode != 0:
        raise SetupError(
            f"setup failed: exit code {done.returncode} (output in {log_path.name})", log_path=str(log_path)
        )
