"""Launch preparation: for each task that will run, its agent, prompt, skills, argv and environment.

Phase 1 makes a :class:`LaunchPlan` per task (subagent, settings, executable);
phase 2 fills the plans in beside the launches (:meth:`LaunchPreparer.prepare_all`):
prompts are written in batches (on the loop while that is fast, else one
worker-thread job each), and each task launches as soon as its batch is written.
The decisions themselves are the pure functions of :mod:`maestro_parallel.agents`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel

from ..agents import (
    agent_environment,
    build_prompt,
    choose_subagent,
    find_skill_file,
    oversized_argument,
    placeholders_in,
    render_argv,
    resolve_executable,
    strip_front_matter,
)
from ..agents.subagents import AgentFile, agent_flag
from ..budget import budget_args
from ..config import AgentSettings, Config
from ..isolation.git import scrub_git_variables
from ..markers import is_safe_task_id
from ..state.logfiles import read_head
from ..state.store import GroupStore
from ..tasks import TaskRecord
from .hooks import command_env
from .process import run_command
from .sink import EventSink

__all__ = ("LaunchPlan", "LaunchPreparer")

#: Prompts written in one batch before the launches.
_PROMPT_BATCH = 64

#: One prompt to write: the plan, its skills (name, guidance), the skills not found, the prompt.
_Pending = tuple["LaunchPlan", list[tuple[str, str]], list[str], str]


@dataclass
class LaunchPlan:
    """What Phase 1 decided for one task that will run."""

    record: TaskRecord
    subagent: str
    settings: AgentSettings
    executable: str | None
    config_key: str
    warnings: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # filled in by LaunchPreparer.prepare_all
    env: dict[str, str] = field(default_factory=dict)
    #: Appended to the rendered template: ``--agent <name>`` when the subagent is applied (claude),
    #: ``--max-budget-usd <x>`` when the task has a budget (claude).
    agent_args: list[str] = field(default_factory=list)
    problem: str | None = None  # why it cannot launch, once prepared
    worktree: Path | None = None  # with isolation: the agent's cwd in its own worktree
    prepared: anyio.Event = field(default_factory=anyio.Event)


class LaunchPreparer:
    """Plans and prepares the launches of one run; caches what is the same for every task."""

    def __init__(
        self,
        *,
        config: Config,
        repo_root: Path,
        store: GroupStore,
        sink: EventSink,
        grace: Callable[[], float],
    ) -> None:
        self.config = config
        self.repo_root = repo_root
        self.store = store
        self.sink = sink
        self.group_id = store.group_id
        self._grace = grace
        self._base_env: dict[str, dict[str, str]] = {}
        self._skill_cache: dict[str, str | None] = {}
        self._executables: dict[tuple[str, str], str | None] = {}
        self.agent_files: dict[str, AgentFile] = {}  # .claude/agents, read in phase 1
        self._skill_folders: list[Path] | None = None  # looked up once per group (Path.home() is not free)
        #: With worktree isolation (set in Phase 1): where a task's agent runs.
        self.worktree_for: Callable[[str], Path] | None = None

    def plan(self, record: TaskRecord, available: frozenset[str] | None) -> LaunchPlan:
        """The subagent, settings and executable of one task."""
        subagent, warnings = choose_subagent(record.metadata, available, self.config.detection)
        settings = self.config.agent_for(subagent)
        if "command" in self.config.agents.get(subagent, {}):
            config_key = f"[agents.{subagent}].command"
        elif settings.preset == "custom":
            config_key = "[agent].command"
        else:
            config_key = f'[agent].command, preset "{settings.preset}"'
        program = render_argv(settings.command[:1], self._values(record, subagent, prompt="", prompt_file=""))[0]
        key = (subagent, program)
        if key not in self._executables:  # resolved once per subagent, not once per task
            path = settings.env.get("PATH", os.environ.get("PATH"))
            self._executables[key] = resolve_executable(program, repo_root=self.repo_root, path=path)
        agent_args, warning = agent_flag(settings.preset, subagent, self.agent_files)
        warnings += [warning] if warning else []
        plan = LaunchPlan(record, subagent, settings, self._executables[key], config_key, warnings)
        plan.agent_args = agent_args + budget_args(settings.preset, settings.max_budget_usd)
        return plan

    def _values(self, record: TaskRecord, subagent: str, *, prompt: str, prompt_file: str) -> dict[str, str]:
        return {
            "prompt": prompt,
            "prompt_file": prompt_file,
            "task_id": record.task_id,
            "group_id": self.group_id,
            "subagent": subagent,
            "repo_root": str(self.repo_root),
            "title": record.metadata.title,
            "worktree": str(self.worktree_for(record.task_id) if self.worktree_for else self.repo_root),
        }

    async def prepare_all(self, plans: list[LaunchPlan], context: str | None) -> None:
        """Skills, prompt, argv and environment of every task to launch, batch after batch.

        Runs beside the launches, so the first agents run while later prompts
        are still being written.  A task whose prompt cannot be written, or
        whose argv cannot be passed, is marked with the reason and never launched.
        """
        batch: list[_Pending] = []
        size = 4
        try:
            for index, plan in enumerate(plans):
                skills, missing = await self._load_skills(plan.record)
                prompt = build_prompt(
                    task=plan.record.metadata,
                    subagent=plan.subagent,
                    group_id=self.group_id,
                    context=context,
                    skills=skills,
                    applied="--agent" in plan.agent_args,
                )
                batch.append((plan, skills, missing, prompt))
                if len(batch) >= size or index == len(plans) - 1:
                    await self._write_prompts(batch)
                    batch = []
                    size = min(size * 2, _PROMPT_BATCH)  # small first batches: the first agents start at once
                    # A batch written on the loop does not yield: the launches run between batches.
                    await anyio.lowlevel.checkpoint()
        finally:
            for plan in plans:  # whatever happened, no launch waits forever
                plan.prepared.set()

    async def _write_prompts(self, batch: list[_Pending]) -> None:
        paths = [self.store.prompt_path(plan.record.task_id) for plan, _, _, _ in batch]
        try:
            errors: list[OSError | None] = await self.store.write_prompts(
                [(path, prompt) for path, (_, _, _, prompt) in zip(paths, batch, strict=True)]
            )
        except OSError as exc:
            errors = [exc] * len(batch)
        for (plan, skills, missing, prompt), path, error in zip(batch, paths, errors, strict=True):
            task_id = plan.record.task_id
            if error is not None:
                plan.problem = f"could not write the prompt: {error.strerror or error}"
            else:
                await self.sink.emit(
                    "task_prepared",
                    task_id=task_id,
                    subagent=plan.subagent,
                    skills_applied=[name for name, _ in skills],
                    skills_missing=missing,
                    prompt_path=self.store.relative(path),
                )
                for name in missing:
                    await self.sink.emit(
                        "warning", task_id=task_id, message=f"skill {name!r} not found; running without it"
                    )
                plan.problem = self._finish_plan(plan, prompt, path, [name for name, _ in skills])
            plan.prepared.set()

    def _finish_plan(self, plan: LaunchPlan, prompt: str, prompt_path: Path, skills: list[str]) -> str | None:
        """Fill in the plan's argv and environment; the reason it cannot launch, or None."""
        record, settings = plan.record, plan.settings
        values = self._values(record, plan.subagent, prompt=prompt, prompt_file=str(prompt_path))
        argv = render_argv(settings.command, values) + plan.agent_args
        argv[0] = plan.executable or argv[0]
        size = oversized_argument(argv)
        if size is not None:
            hint = (
                "" if "prompt_file" in placeholders_in(settings.command) else "; pass {prompt_file} instead of {prompt}"
            )
            return f"an argument is {size} bytes, too large for one argv element (max 131071){hint}"
        base = self._base_env.get(plan.subagent)
        if base is None:  # the coordinator's environment is copied once per subagent, not once per task
            base = self._base_env[plan.subagent] = agent_environment(os.environ, settings.env, {})
        plan.argv = argv
        if self.worktree_for is not None:
            plan.worktree = self.worktree_for(record.task_id)
            base = {**scrub_git_variables(base), "MAESTRO_WORKTREE": str(plan.worktree)}
        plan.env = {
            **base,
            "MAESTRO_TASK_ID": record.task_id,
            "MAESTRO_GROUP_ID": self.group_id,
            "MAESTRO_SUBAGENT": plan.subagent,
            "MAESTRO_PROMPT_FILE": str(prompt_path),
            "MAESTRO_REPO_ROOT": str(self.repo_root),
            "MAESTRO_SKILLS": ",".join(skills),
        }
        return None

    async def _load_skills(self, record: TaskRecord) -> tuple[list[tuple[str, str]], list[str]]:
        if self._skill_folders is None:
            self._skill_folders = [self.repo_root / ".claude" / "skills", Path.home() / ".claude" / "skills"]
        folders = self._skill_folders
        applied: list[tuple[str, str]] = []
        missing: list[str] = []
        for name in record.metadata.applicable_skills:
            guidance = await self._skill_guidance(name, record.task_id, folders)
            if guidance is None:
                missing.append(name)
            else:
                applied.append((name, guidance))
        return applied, missing

    async def _skill_guidance(self, name: str, task_id: str, folders: list[Path]) -> str | None:
        if not is_safe_task_id(name):
            return None
        command = self.config.skills.command
        if command:
            argv = render_argv(
                command, {"skill": name, "task_id": task_id, "repo_root": str(self.repo_root)}, key="[skills].command"
            )
            env = command_env(self.repo_root, self.group_id)
            executable = resolve_executable(argv[0], repo_root=self.repo_root, path=env.get("PATH"))
            if executable is None:
                return None
            log = self.store.logs_dir / f"_skill.{task_id}.{name}.log"
            try:
                result = await run_command(
                    [executable, *argv[1:]],
                    cwd=self.repo_root,
                    env=env,
                    log_path=log,
                    timeout=self.config.skills.timeout_seconds,
                    grace=self._grace(),
                )
            except OSError:
                return None
            text = await read_head(log, 1024 * 1024)
            return text if result.returncode == 0 and not result.timed_out and text.strip() else None
        if name not in self._skill_cache:  # a SKILL.md is the same for every task: read it once
            path = find_skill_file(name, folders)
            self._skill_cache[name] = None if path is None else strip_front_matter(await read_head(path, 1024 * 1024))
        return self._skill_cache[name]
