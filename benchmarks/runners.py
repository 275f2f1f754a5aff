"""The runners and workloads: every runner times whole processes, interleaved in rounds.

The coordinator as a CLI process, the asyncio floor, GNU parallel and xargs
run the same N commands; :class:`Bench` holds what they measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from environment import HERE, cli_command

GROUP = "bench"
RUN_TIMEOUT_SECONDS = 900

FLOOR = "floor (asyncio)"
COORDINATOR = "maestro-parallel"
GNU_PARALLEL = "GNU parallel -j N"
XARGS = "xargs -P N"
RUNNERS = (FLOOR, COORDINATOR, GNU_PARALLEL, XARGS)
# --------------------------------------------------------------------------- one timed process


@dataclass
class ProcRun:
    """One timed process."""

    seconds: float
    returncode: int
    maxrss_kb: int
    stdout: str
    stderr: str
    timed_out: bool = False
    spawner_hwm_kb: int | None = None


def run_timed(argv: Sequence[str], *, cwd: Path, stdin_data: bytes | None = None,
              timeout: float = RUN_TIMEOUT_SECONDS, env: dict[str, str] | None = None) -> ProcRun:
    """Run ``argv`` as a whole process through ``spawn.py``: its wall time and its own peak RSS (``os.wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".json", delete=False) as side:
        side.close()
        stdin: Any = subprocess.DEVNULL
        if stdin_data is not None:
            stdin = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the others below
            stdin.write(stdin_data)
            stdin.seek(0)
        spawner = [sys.executable, "-I", "-S", str(HERE / "spawn.py"), side.name, *argv]
        started = time.perf_counter()
        process = subprocess.Popen(spawner, cwd=cwd, stdin=stdin, stdout=out, stderr=err, start_new_session=True,
                                   env=env)
        try:
            process.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        if timed_out:  # the spawner and the process share a process group: nothing of either survives
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        outer = time.perf_counter() - started
        if stdin_data is not None:
            stdin.close()
        try:
            data = json.loads(Path(side.name).read_text() or "{}")
        except (OSError, ValueError):
            data = {}
        finally:
            Path(side.name).unlink(missing_ok=True)
        out.seek(0)
        err.seek(0)
        return ProcRun(
            seconds=data.get("seconds", outer),
            returncode=data.get("status", process.returncode if not timed_out else -9),
            maxrss_kb=data.get("maxrss_kb", 0),
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            timed_out=timed_out,
            spawner_hwm_kb=data.get("spawner_hwm_kb"),
        )


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """N copies of one command: a generated repository for the coordinator and the same argv for the others."""

    name: str
    n: int
    argv: list[str]
    root: Path
    poll_interval: float | None = None

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def tasks_file(self) -> Path:
        return self.root / "tasks.json"

    @property
    def groups_dir(self) -> Path:
        return self.repo / ".flow" / "maestro" / "parallel_groups"

    @property
    def floor_logs(self) -> Path:
        return self.root / "floor-logs"

    def create(self) -> None:
        maestro = self.repo / ".flow" / "maestro"
        maestro.mkdir(parents=True, exist_ok=True)
        (self.repo / ".git").mkdir(exist_ok=True)
        tracker = "[tracker]\nkind = \"local\"\n"
        if self.poll_interval is not None:
            tracker += f"poll_interval_seconds = {self.poll_interval}\n"
        (maestro / "config.toml").write_text(
            "[agent]\n"
            f"command = {json.dumps(self.argv)}\n"
            "\n" + tracker
        )
        tasks = [
            {
                "id": f"bench-{i:05d}",
                "title": f"benchmark task {i}",
                "description": f"[P:Group-{GROUP}] A benchmark task: runs {' '.join(self.argv)}.",
            }
            for i in range(self.n)
        ]
        self.tasks_file.write_text(json.dumps({"tasks": tasks}))

    def reset(self) -> None:
        """Set aside what a run left (not timed); the whole work folder is deleted at the end.

        Moved, not deleted: on ext4 without a journal, files created just after a mass
        deletion cost several times more (the inode allocator skips recently deleted
        inodes), and the coordinator, which creates two files a task (log, prompt),
        would pay that twice as often as the floor (one log a task).
        """
        trash = self.root / "set-aside"
        trash.mkdir(exist_ok=True)
        for folder in (self.groups_dir, self.floor_logs):
            if folder.exists():
                folder.rename(trash / f"{folder.name}-{len(list(trash.iterdir()))}")
        for name in ("tests.lock",):
            try:
                (self.repo / ".flow" / "maestro" / name).unlink()
            except FileNotFoundError:
                pass

    def coordinator_argv(self, cli: list[str]) -> list[str]:
        return [*cli, "--repo-root", str(self.repo), "-q", "execute", "--group-id", GROUP,
                "--tasks-file", str(self.tasks_file), "--no-refresh", "--no-tests", "--json"]


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(sum of file sizes, number of files) under ``folder``."""
    total = files = 0
    for base, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def check_group_json(stdout: str, n: int) -> str | None:
    """None when the CLI's JSON says completed with N completed results, else what is wrong."""
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        return f"stdout is not JSON ({exc}): {stdout[:200]!r}"
    if not isinstance(data, dict):
        return f"stdout is not a JSON object: {stdout[:200]!r}"
    if "error" in data and "status" not in data:
        return f"the CLI reported an error: {data['error']}"
    results = data.get("results") or []
    completed = sum(1 for r in results if isinstance(r, dict) and r.get("status") == "completed")
    if data.get("status") != "completed" or len(results) != n or completed != n:
        failed = [r for r in results if isinstance(r, dict) and r.get("status") != "completed"]
        example = f"; e.g. {failed[0].get('task_id')}: {failed[0].get('error')}" if failed else ""
        return (f"status {data.get('status')!r}, {len(results)} results, {completed} completed "
                f"(expected {n}){example}; errors: {data.get('errors')}")
    return None


@dataclass
class Sample:
    seconds: float
    maxrss_kb: int
    disk_bytes: int | None = None
    disk_files: int | None = None


@dataclass
class Cell:
    """Every sample of one runner on one workload."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)
    skipped: str | None = None

    def median(self, attr: str = "seconds") -> float | None:
        values = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return statistics.median(values) if values else None


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, parallel: str | None, parallel_note: str | None):
        self.args = args
        self.workdir = workdir
        self.parallel = parallel
        self.parallel_note = parallel_note
        self.cli = cli_command()
        self.failures: list[str] = []
        self.cells: dict[tuple[str, str], Cell] = {}
        self.instrumented: dict[str, dict[str, Any]] = {}
        self.lag: dict[int, dict[str, Any]] = {}
        self.ticks: dict[int, dict[str, Any]] = {}
        self.detect: dict[str, Any] | None = None
        self.workloads: list[Workload] = []
        self.spawner_hwm_kb = 0

    def timed(self, argv: Sequence[str], **kwargs: Any) -> ProcRun:
        run = run_timed(argv, **kwargs)
        self.spawner_hwm_kb = max(self.spawner_hwm_kb, run.spawner_hwm_kb or 0)
        return run

    # workloads ----------------------------------------------------------

    def make_workloads(self) -> None:
        for n in self.args.sizes:
            self.workloads.append(Workload(f"/bin/true x {n}", n, ["/bin/true"], self.workdir / f"true-{n}"))
        if self.args.sleep_n > 0:
            n = self.args.sleep_n
            self.workloads.append(
                Workload(f"sleep {self.args.sleep_seconds:g} x {n}", n, ["sleep", f"{self.args.sleep_seconds:g}"],
                         self.workdir / f"sleep-{n}")
            )
        for w in self.workloads:
            w.create()

    def runners(self) -> list[str]:
        names = [FLOOR, COORDINATOR]
        if not self.args.no_references:
            names += [GNU_PARALLEL, XARGS]
        return names

    def cell(self, w: Workload, runner: str) -> Cell:
        return self.cells.setdefault((w.name, runner), Cell())

    # one run of one runner ------------------------------------------------

    def run_once(self, w: Workload, runner: str) -> None:
        cell = self.cell(w, runner)
        w.reset()
        if runner == COORDINATOR:
            argv = w.coordinator_argv(self.cli)
            run = self.timed(argv, cwd=w.root)
            problem = self._coordinator_problem(run, w)
            disk = folder_bytes(w.groups_dir)
            if problem is None:
                cell.samples.append(Sample(run.seconds, run.maxrss_kb, disk[0], disk[1]))
            else:
                self._fail(cell, w, runner, problem)
        elif runner == FLOOR:
            argv = [sys.executable, str(HERE / "floor.py"), str(w.n), str(w.floor_logs), *w.argv]
            run = self.timed(argv, cwd=w.root)
            disk = folder_bytes(w.floor_logs)
            if run.returncode == 0 and disk[1] == w.n:
                cell.samples.append(Sample(run.seconds, run.maxrss_kb, disk[0], disk[1]))
            else:
                self._fail(cell, w, runner, f"exit {run.returncode}, {disk[1]} logs: {run.stderr.strip()[-300:]}")
        elif runner == GNU_PARALLEL:
            if self.parallel is None:
                cell.skipped = self.parallel_note or "not installed"
                return
            argv = [self.parallel, "--will-cite", "-j", str(w.n), "-N0", *w.argv]
            run = self.timed(argv, cwd=w.root, stdin_data=self._lines(w.n))
            self._reference(cell, w, runner, run)
        elif runner == XARGS:
            if shutil.which("xargs") is None:
                cell.skipped = "xargs is not installed"
                return
            argv = ["xargs", "-P", str(w.n), "-I{}", *w.argv]
            run = self.timed(argv, cwd=w.root, stdin_data=self._lines(w.n))
            self._reference(cell, w, runner, run)
        w.reset()

    @staticmethod
    def _lines(n: int) -> bytes:
        return "".join(f"{i}\n" for i in range(n)).encode()

    def _reference(self, cell: Cell, w: Workload, runner: str, run: ProcRun) -> None:
        for line in run.stderr.splitlines():
            if "warning" in line.lower():
                cell.notes.add(line.strip()[:200])
        if run.returncode == 0 and not run.timed_out:
            cell.samples.append(Sample(run.seconds, run.maxrss_kb))
        else:
            self._fail(cell, w, runner, f"exit {run.returncode}: {run.stderr.strip()[-300:]}")

    def _coordinator_problem(self, run: ProcRun, w: Workload) -> str | None:
        if run.timed_out:
            return f"timed out after {RUN_TIMEOUT_SECONDS}s"
        problem = check_group_json(run.stdout, w.n)
        if run.returncode != 0:
            return f"exit {run.returncode}" + (f"; {problem}" if problem else "") + f"; stderr: {run.stderr.strip()[-300:]}"
        return problem

    def _fail(self, cell: Cell, w: Workload, runner: str, problem: str) -> None:
        message = f"{runner} on {w.name}: {problem}"
        cell.failures.append(problem)
        self.failures.append(message)
        print(f"benchmarks: FAILED {message}", file=sys.stderr)

    # the plan ------------------------------------------------------------

    def warm_up(self) -> None:
        """One unmeasured run of the floor and the coordinator (page cache, .pyc files)."""
        w = Workload("warm-up", 10, ["/bin/true"], self.workdir / "warm-up")
        w.create()
        self.run_once(w, FLOOR)
        self.run_once(w, COORDINATOR)
        self.cells = {k: v for k, v in self.cells.items() if k[0] != "warm-up"}
        self.failures = [f for f in self.failures if "warm-up" not in f]

    def measure(self) -> None:
        runners = self.runners()
        for round_index in range(self.args.repeat):
            order = runners[round_index % len(runners):] + runners[: round_index % len(runners)]
            for w in self.workloads:
                for runner in order:
                    self.progress(f"round {round_index + 1}/{self.args.repeat}: {runner} on {w.name}")
                    self.run_once(w, runner)
        for w in self.workloads:
            self.progress(f"instrumented coordinator run on {w.name}")
            self.instrumented[w.name] = self.instrumented_run(w)

    def instrumented_run(self, w: Workload) -> dict[str, Any]:
        w.reset()
        side = w.root / "launch-side.json"
        env = dict(os.environ, MAESTRO_BENCH_SIDEFILE=str(side))
        argv = w.coordinator_argv([sys.executable, str(HERE / "launch.py")])
        run = self.timed(argv, cwd=w.root, env=env)
        problem = self._coordinator_problem(run, w)
        disk = folder_bytes(w.groups_dir)
        breakdown = {
            name: (w.groups_dir / GROUP / name).stat().st_size if (w.groups_dir / GROUP / name).exists() else 0
            for name in ("events.jsonl", "metadata.json")
        }
        w.reset()
        if problem is not None:
            self._fail(self.cell(w, COORDINATOR), w, "instrumented " + COORDINATOR, problem)
            return {"error": problem}
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            return {"error": f"no side file: {exc}"}
        finally:
            side.unlink(missing_ok=True)
        data.update(seconds=run.seconds, wait4_maxrss_kb=run.maxrss_kb, disk_bytes=disk[0], disk_files=disk[1],
                    journal_bytes=breakdown["events.jsonl"], snapshot_size=breakdown["metadata.json"])
        return data

    def inprocess(self, what: str, *args: str) -> dict[str, Any] | None:
        argv = [sys.executable, str(HERE / "inprocess.py"), what, *args]
        run = self.timed(argv, cwd=self.workdir)
        try:
            data = json.loads(run.stdout)
        except ValueError:
            data = None
        if run.returncode != 0 or data is None:
            message = f"inprocess {what}: exit {run.returncode}: {run.stderr.strip()[-400:]}"
            self.failures.append(message)
            print(f"benchmarks: FAILED {message}", file=sys.stderr)
            return None
        if "status" in data and (data["status"] != "completed" or data["completed"] != data["n"]):
            message = f"inprocess {what}: status {data['status']}, {data['completed']}/{data['n']} completed"
            self.failures.append(message)
            print(f"benchmarks: FAILED {message}", file=sys.stderr)
        data["seconds_total"] = run.seconds
        return data

    def measure_inprocess(self) -> None:
        lag_runs = max(1, min(3, self.args.repeat))
        for w in self.workloads:
            if w.argv != ["/bin/true"]:
                continue
            runs = []
            for i in range(lag_runs):
                self.progress(f"loop lag {i + 1}/{lag_runs} on {w.name} (in-process)")
                w.reset()
                data = self.inprocess("loop-lag", str(w.repo), str(w.tasks_file))
                w.reset()
                if data is not None:
                    runs.append(data)
            if runs:
                worst = [r["worst_lag_launch_ms"] for r in runs]
                self.lag[w.n] = {
                    "median_worst_launch_ms": statistics.median(worst),
                    "max_worst_launch_ms": max(worst),
                    "median_worst_run_ms": statistics.median(r["worst_lag_run_ms"] for r in runs),
                    "median_p99_launch_ms": statistics.median(r["p99_lag_launch_ms"] for r in runs),
                    "median_launch_seconds": statistics.median(r["launch_seconds"] for r in runs),
                    "peak_threads": max(r["peak_threads"] for r in runs),
                    "journal_median_ms": statistics.median(r["start_journaled_median_ms"] or 0 for r in runs),
                    "journal_max_ms": max(r["start_journaled_max_ms"] or 0 for r in runs),
                    "runs": len(runs),
                    "worst_run": max(runs, key=lambda r: r["worst_lag_launch_ms"]),
                }
        for n in self.args.tracker_sizes:
            seconds = self.args.tracker_sleep
            w = Workload(f"tracker sleep {seconds:g} x {n}", n, ["sleep", f"{seconds:g}"],
                         self.workdir / f"tracker-{n}", poll_interval=self.args.poll_interval)
            w.create()
            self.progress(f"tracker calls per tick on {w.name} (in-process, MemoryTracker)")
            data = self.inprocess("tracker-ticks", str(w.repo), str(w.tasks_file))
            w.reset()
            if data is not None:
                self.ticks[n] = data
        self.progress(f"detect_groups on {self.args.detect_tasks} tasks (in-process)")
        self.detect = self.inprocess("detect", "--tasks", str(self.args.detect_tasks),
                                     "--repeat", str(self.args.detect_repeat))

    def progress(self, text: str) -> None:
        if not self.args.quiet:
            print(f"benchmarks: {text}", file=sys.stderr, flush=True)
