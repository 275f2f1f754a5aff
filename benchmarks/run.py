"""Benchmark the maestro-parallel coordinator against a bare asyncio spawner, GNU parallel and xargs.

Run ``python benchmarks/run.py`` (with the project's virtual environment; a
system Python re-executes itself under ``.venv/bin/python``).  In one run, on
one machine, it measures side by side:

- the coordinator as a whole CLI process: ``maestro-parallel --repo-root R -q
  execute --group-id bench --tasks-file F --no-refresh --no-tests --json`` on a
  generated repository whose agent is ``/bin/true`` (N = 100, 1,000, 5,000) and
  ``sleep 1`` (N = 200), each run checked: exit 0, status ``completed`` and N
  completed results;
- the floor: ``benchmarks/floor.py``, a bare asyncio program that spawns the
  same N processes at once (a log file per task) and waits for them, also timed
  as a whole process;
- GNU parallel ``-j N`` and ``xargs -P N`` running the same command N times,
  when installed (``apt-get install -y parallel`` is tried once);
- peak memory of each process (``os.wait4``: the process itself; its reaped
  children are ``/bin/true`` and smaller), bytes in the groups folder after each
  run, and one instrumented run per workload (``benchmarks/launch.py``:
  ``/proc/self/io``, snapshot writes, peak thread count);
- in-process (``benchmarks/inprocess.py``): the event loop's worst lag during
  launch, tracker calls per poll tick, and ``detect_groups`` on 100,000 tasks.

Repeats are interleaved (every runner once per round, in a rotating order) so
that a noisy neighbour hurts them all alike; medians are reported.  The table
goes to stdout and, for a full run, to ``benchmarks/RESULTS.md`` with the
machine's details.  Text below the ``KEEP_MARKER`` line of an existing results
file is kept.  A failed run (non-zero exit, wrong JSON) is reported and makes
the script exit 1; ``--strict`` also fails on a missed target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
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

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DEFAULT_OUTPUT = HERE / "RESULTS.md"
KEEP_MARKER = "<!-- run.py keeps everything below this line -->"
GROUP = "bench"
RUN_TIMEOUT_SECONDS = 900

FLOOR = "floor (asyncio)"
COORDINATOR = "maestro-parallel"
GNU_PARALLEL = "GNU parallel -j N"
XARGS = "xargs -P N"
RUNNERS = (FLOOR, COORDINATOR, GNU_PARALLEL, XARGS)

#: Targets of issue 6.
TARGET_RATIO_1000 = 1.5
TARGET_VS_PARALLEL = 3.0
TARGET_SLEEP_RATIO = 1.15
TARGET_LAG_MS = 50.0
TARGET_RSS_MB = 150.0
TARGET_BYTES_SPREAD = 1.5  # max/min of bytes written per task across N
TARGET_DETECT_SECONDS = 0.5


# --------------------------------------------------------------------------- environment


def ensure_project_python() -> None:
    """Re-execute under the project's virtual environment when maestro_parallel is not importable."""
    try:
        import maestro_parallel  # noqa: F401
    except ImportError:
        venv_python = PROJECT / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable) != venv_python:
            os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
        sys.exit("benchmarks/run.py: maestro_parallel is not importable; install it (pip install -e .) first")


def compile_package() -> None:
    """Compile the package's bytecode, as an installed package has it.

    An editable install under ``PYTHONDONTWRITEBYTECODE`` would otherwise compile
    every module on every start, and the coordinator's start-up would measure that.
    """
    import compileall

    import maestro_parallel

    compileall.compile_dir(str(Path(maestro_parallel.__file__).parent), quiet=1)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cli_command() -> list[str]:
    """The console script beside this interpreter, else ``python -m maestro_parallel``."""
    script = Path(sys.executable).parent / "maestro-parallel"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "maestro_parallel"]


def _first_line(argv: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def ensure_gnu_parallel(allow_install: bool) -> tuple[str | None, str | None]:
    """The path of GNU parallel, installing it once with apt-get if allowed; (path, note)."""
    found = shutil.which("parallel")
    if found and "GNU parallel" in (_first_line([found, "--version"]) or ""):
        return found, None
    if not allow_install:
        return None, "GNU parallel is not installed"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None, "GNU parallel is not installed and cannot be installed here (no apt-get, or not root)"
    print("benchmarks: GNU parallel is missing; trying `apt-get install -y parallel` once", file=sys.stderr)
    try:
        done = subprocess.run(["apt-get", "install", "-y", "parallel"], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"GNU parallel could not be installed: {exc}"
    found = shutil.which("parallel")
    if done.returncode != 0 or not found:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"GNU parallel could not be installed (apt-get exit {done.returncode}: {last[0]})"
    return found, "GNU parallel was installed by this run (apt-get install -y parallel)"


def _meminfo_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    except OSError:
        pass
    return fstype


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_details(workdir: Path, parallel: str | None) -> dict[str, str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    mem = _meminfo_total_gib()
    details = {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable by this process)",
        "RAM": f"{mem:.1f} GiB" if mem else "unknown",
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "packages": ", ".join(
            f"{name} {_version(name)}" for name in ("maestro-parallel", "anyio", "aiofiles", "click")
        ),
        "GNU parallel": (_first_line([parallel, "--version"]) or "unknown") if parallel else "not installed",
        "xargs": _first_line(["xargs", "--version"]) or "unknown",
        "work folder": f"{workdir} on {_filesystem(workdir)}",
        "RLIMIT_NOFILE": f"soft {nofile[0]}, hard {nofile[1]}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    return details


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
        """Remove what a run left (not timed)."""
        shutil.rmtree(self.groups_dir, ignore_errors=True)
        shutil.rmtree(self.floor_logs, ignore_errors=True)
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


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _mb(kb: float | None) -> str:
    return "–" if kb is None else f"{kb / 1024:.1f}"


def _int(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def main_table(bench: Bench) -> list[str]:
    lines = [
        "| workload | runner | median s | min–max s | × floor | overhead ms/task | peak RSS MB | folder bytes | bytes/task |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in bench.workloads:
        floor = bench.cell(w, FLOOR).median()
        for runner in bench.runners():
            cell = bench.cell(w, runner)
            if cell.skipped:
                lines.append(f"| {w.name} | {runner} | skipped: {cell.skipped} | | | | | | |")
                continue
            med = cell.median()
            if med is None:
                lines.append(f"| {w.name} | {runner} | FAILED ({len(cell.failures)} runs) | | | | | | |")
                continue
            times = [s.seconds for s in cell.samples]
            ratio = med / floor if floor else None
            overhead = (med - floor) / w.n * 1000 if floor is not None else None
            disk = cell.median("disk_bytes")
            failed = f" ({len(cell.failures)} failed)" if cell.failures else ""
            lines.append(
                f"| {w.name} | {runner}{failed} | {_fmt(med)} | {_fmt(min(times))}–{_fmt(max(times))} | "
                f"{_fmt(ratio, 2)} | {_fmt(overhead, 3) if runner != FLOOR else '–'} | "
                f"{_mb(cell.median('maxrss_kb'))} | {_int(disk)} | {_int(disk / w.n) if disk is not None else '–'} |"
            )
    return lines


def instrumented_table(bench: Bench) -> list[str]:
    lines = [
        "| workload | snapshot writes | snapshot bytes written | journal bytes | prompt bytes | "
        "wchar (all writes) | wchar/task | peak threads | RSS self MB (getrusage) | VmHWM MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in bench.workloads:
        d = bench.instrumented.get(w.name)
        if not d or "error" in d:
            lines.append(f"| {w.name} | FAILED: {(d or {}).get('error', 'not run')} | | | | | | | | |")
            continue
        wchar = d.get("io", {}).get("wchar")
        lines.append(
            f"| {w.name} | {_int(d.get('snapshot_writes'))} | {_int(d.get('snapshot_bytes'))} | "
            f"{_int(d.get('journal_bytes'))} | {_int(d.get('prompt_bytes'))} | {_int(wchar)} | "
            f"{_int(wchar / w.n) if wchar is not None else '–'} | {_int(d.get('peak_threads'))} | "
            f"{_mb(d.get('maxrss_kb'))} | {_mb(d.get('vmhwm_kb'))} |"
        )
    return lines


def lag_table(bench: Bench) -> list[str]:
    lines = [
        "| N (/bin/true) | worst lag during launch, ms (median of runs) | max of runs | p99 during launch, ms | "
        "worst lag whole run, ms | launch s | peak threads | task_started journaled after its fork, ms "
        "(median / max) | runs | in the worst gap of the worst run |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for n, d in sorted(bench.lag.items()):
        lines.append(
            f"| {n:,} | {_fmt(d['median_worst_launch_ms'], 1)} | {_fmt(d['max_worst_launch_ms'], 1)} | "
            f"{_fmt(d['median_p99_launch_ms'], 1)} | {_fmt(d['median_worst_run_ms'], 1)} | "
            f"{_fmt(d['median_launch_seconds'], 2)} | {d['peak_threads']:,} | "
            f"{_fmt(d['journal_median_ms'], 0)} / {_fmt(d['journal_max_ms'], 0)} | {d['runs']} | {_gap(d['worst_run'])} |"
        )
    if not bench.lag:
        lines.append("| – | not measured | | | | | | | | |")
    return lines


def _gap(run: dict[str, Any]) -> str:
    """What ran on the loop's thread during the worst heartbeat gap."""
    parts = []
    for kind, label in (("spawns", "forks"), ("watchers", "child-watcher starts"),
                        ("snapshot_encodes", "snapshot encodes"), ("full_gcs", "full GCs"),
                        ("full_gcs_off_loop", "of them triggered in worker threads")):
        count = run.get(f"{kind}_in_worst_gap")
        if count:
            parts.append(f"{count} {label} ({run[f'{kind}_ms_in_worst_gap']:.0f} ms)")
    handles = run.get("handles_in_worst_gap")
    if handles:
        top = "; ".join(f"{t['label']} ×{t['count']} {t['ms']:.0f} ms" for t in handles["top"])
        parts.append(f"{handles['count']} callbacks, {handles['ms']:.0f} ms in all; costliest: {top}")
    return ", ".join(parts) or "nothing recorded"


def ticks_table(bench: Bench) -> list[str]:
    lines = [
        "| N (sleep) | poll interval s | ticks | ticks with steadily running tasks | fetch_statuses calls | "
        "calls in those ticks | most calls in one tick | such ticks without a call | calls missing a running id | "
        "most ids in one call |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, d in sorted(bench.ticks.items()):
        lines.append(
            f"| {n:,} | {d['interval']:g} | {d['ticks']} | {d['ticks_with_steady_tasks']} | {d['calls']} | "
            f"{d['calls_in_steady_ticks']} | {d['max_calls_in_one_tick']} | {d['steady_ticks_without_call']} | "
            f"{d['calls_missing_steady_ids']} | {d['max_ids_per_call']:,} |"
        )
    if not bench.ticks:
        lines.append("| – | not measured | | | | | | | | |")
    return lines


def detect_table(bench: Bench) -> list[str]:
    lines = ["| tasks | median s | min–max s | runs | groups found |", "| ---: | ---: | ---: | ---: | ---: |"]
    d = bench.detect
    if d:
        lines.append(f"| {d['tasks']:,} | {_fmt(d['median_seconds'])} | {_fmt(d['min_seconds'])}–"
                     f"{_fmt(d['max_seconds'])} | {d['repeat']} | {d['groups']} |")
    else:
        lines.append("| – | FAILED | | | |")
    return lines


@dataclass
class Target:
    name: str
    threshold: str
    measured: str
    met: bool | None  # None: not measured
    detail: str = ""


def _workload(bench: Bench, n: int, argv0: str = "/bin/true") -> Workload | None:
    return next((w for w in bench.workloads if w.n == n and w.argv[0] == argv0), None)


def targets(bench: Bench) -> list[Target]:
    out: list[Target] = []
    w1000 = _workload(bench, 1000)
    floor = bench.cell(w1000, FLOOR).median() if w1000 else None
    coord = bench.cell(w1000, COORDINATOR).median() if w1000 else None
    if floor and coord:
        ratio = coord / floor
        out.append(Target("coordinator / floor at N = 1,000", f"≤ {TARGET_RATIO_1000}", f"{ratio:.2f}",
                          ratio <= TARGET_RATIO_1000, f"{coord:.3f} s vs {floor:.3f} s"))
    else:
        out.append(Target("coordinator / floor at N = 1,000", f"≤ {TARGET_RATIO_1000}", "not measured", None))
    gnu = bench.cell(w1000, GNU_PARALLEL).median() if w1000 else None
    if coord and gnu:
        speedup = gnu / coord
        out.append(Target("faster than GNU parallel at N = 1,000", f"≥ {TARGET_VS_PARALLEL}×", f"{speedup:.2f}×",
                          speedup >= TARGET_VS_PARALLEL, f"{gnu:.3f} s vs {coord:.3f} s"))
    else:
        if bench.args.no_references:
            why = "--no-references"
        elif bench.parallel is None:
            why = bench.parallel_note or "GNU parallel is not installed"
        else:
            why = "N = 1,000 not measured"
        out.append(Target("faster than GNU parallel at N = 1,000", f"≥ {TARGET_VS_PARALLEL}×",
                          f"not measured ({why})", None))
    ws = next((w for w in bench.workloads if w.argv[0] == "sleep"), None)
    sf = bench.cell(ws, FLOOR).median() if ws else None
    sc = bench.cell(ws, COORDINATOR).median() if ws else None
    if sf and sc and ws:
        ratio = sc / sf
        out.append(Target(f"{ws.name}: coordinator / floor", f"≤ {TARGET_SLEEP_RATIO}", f"{ratio:.3f}",
                          ratio <= TARGET_SLEEP_RATIO, f"{sc:.3f} s vs {sf:.3f} s"))
    else:
        out.append(Target("sleep workload: coordinator / floor", f"≤ {TARGET_SLEEP_RATIO}", "not measured", None))
    lag = bench.lag.get(1000)
    if lag:
        out.append(Target("worst event-loop lag during launch at N = 1,000", f"≤ {TARGET_LAG_MS:g} ms",
                          f"{lag['median_worst_launch_ms']:.1f} ms", lag["median_worst_launch_ms"] <= TARGET_LAG_MS,
                          f"median of {lag['runs']} runs' worst; max {lag['max_worst_launch_ms']:.1f} ms"))
    else:
        out.append(Target("worst event-loop lag during launch at N = 1,000", f"≤ {TARGET_LAG_MS:g} ms",
                          "not measured", None))
    w5000 = _workload(bench, 5000)
    rss = bench.cell(w5000, COORDINATOR).median("maxrss_kb") if w5000 else None
    if rss:
        mb = rss / 1024
        out.append(Target("coordinator peak RSS at N = 5,000", f"≤ {TARGET_RSS_MB:g} MB", f"{mb:.1f} MB",
                          mb <= TARGET_RSS_MB, "os.wait4 ru_maxrss of the CLI process"))
    else:
        out.append(Target("coordinator peak RSS at N = 5,000", f"≤ {TARGET_RSS_MB:g} MB", "not measured", None))
    per_task = {}
    for w in bench.workloads:
        if w.argv[0] != "/bin/true":
            continue
        d = bench.instrumented.get(w.name) or {}
        wchar = (d.get("io") or {}).get("wchar")
        if wchar is not None:
            per_task[w.n] = wchar / w.n
    if len(per_task) >= 2:
        spread = max(per_task.values()) / min(per_task.values())
        shown = ", ".join(f"{v:,.0f} B at N = {n:,}" for n, v in sorted(per_task.items()))
        out.append(Target("bytes written per task constant across N (max/min)", f"≤ {TARGET_BYTES_SPREAD}",
                          f"{spread:.2f}", spread <= TARGET_BYTES_SPREAD, shown))
    else:
        out.append(Target("bytes written per task constant across N (max/min)", f"≤ {TARGET_BYTES_SPREAD}",
                          "not measured (needs two sizes)", None))
    if bench.ticks:
        ok = all(
            d["max_calls_in_one_tick"] == 1 and d["steady_ticks_without_call"] == 0
            and d["calls_missing_steady_ids"] == 0 and d["ticks_with_steady_tasks"] > 0
            for d in bench.ticks.values()
        )
        shown = "; ".join(
            f"N = {n:,}: {d['calls_in_steady_ticks']} calls in {d['ticks_with_steady_tasks']} ticks"
            for n, d in sorted(bench.ticks.items())
        )
        out.append(Target("tracker calls per poll tick", "exactly 1, every running id", shown, ok,
                          "ticks while tasks run steadily; see the tracker table"))
    else:
        out.append(Target("tracker calls per poll tick", "exactly 1, every running id", "not measured", None))
    if bench.detect:
        med = bench.detect["median_seconds"]
        out.append(Target(f"detect_groups on {bench.detect['tasks']:,} tasks", f"≤ {TARGET_DETECT_SECONDS} s",
                          f"{med:.3f} s", med <= TARGET_DETECT_SECONDS if bench.detect["tasks"] >= 100_000 else None))
    else:
        out.append(Target("detect_groups on 100,000 tasks", f"≤ {TARGET_DETECT_SECONDS} s", "not measured", None))
    return out


def targets_table(items: list[Target]) -> list[str]:
    lines = ["| target | threshold | measured | verdict | detail |", "| --- | --- | --- | --- | --- |"]
    for t in items:
        verdict = "not measured" if t.met is None else "met" if t.met else "MISSED"
        lines.append(f"| {t.name} | {t.threshold} | {t.measured} | {verdict} | {t.detail} |")
    return lines


def report(bench: Bench, details: dict[str, str], command: str, started: dt.datetime, seconds: float) -> str:
    items = targets(bench)
    notes = sorted({note for cell in bench.cells.values() for note in cell.notes})
    parts = [
        "# Benchmark results",
        "",
        f"Run on {started.strftime('%Y-%m-%d %H:%M UTC')} with `{command}` "
        f"({bench.args.repeat} interleaved round(s), medians; {seconds:.0f} s in all).",
        "",
        "## Machine",
        "",
        *[f"- **{k}**: {v}" for k, v in details.items()],
        "",
        "## Targets (issue 6)",
        "",
        *targets_table(items),
        "",
        "## Whole processes, side by side",
        "",
        "Each runner timed as a whole process (interpreter start-up included); peak RSS from `os.wait4` "
        f"(the process itself, read by `benchmarks/spawn.py`, whose own {bench.spawner_hwm_kb / 1024:.1f} MB is "
        "a floor under every value: Linux carries the parent's peak over `exec`); folder bytes: sum of file sizes left in the groups folder (coordinator) or "
        "the log folder (floor); overhead: (runner − floor) / N.",
        "",
        *main_table(bench),
        "",
        "## Coordinator, one instrumented run per workload (`benchmarks/launch.py`)",
        "",
        "wchar: bytes passed to write calls by the whole CLI process (`/proc/self/io`), journal, prompts, "
        "snapshots and the JSON on stdout included; snapshot writes counted by wrapping the store's atomic write.",
        "",
        *instrumented_table(bench),
        "",
        "## Event-loop lag during launch (in-process heartbeat, 5 ms sleeps)",
        "",
        *lag_table(bench),
        "",
        "## Tracker calls per poll tick (in-process, MemoryTracker)",
        "",
        *ticks_table(bench),
        "",
        "## `detect_groups` (in-process)",
        "",
        *detect_table(bench),
        "",
    ]
    if notes or bench.parallel_note:
        parts += ["## Notes", ""]
        if bench.parallel_note:
            parts.append(f"- {bench.parallel_note}")
        parts += [f"- reference runner said: `{note}`" for note in notes]
        parts.append("")
    if bench.failures:
        parts += ["## FAILED runs", "", *[f"- {f}" for f in bench.failures], ""]
    parts.append(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    return "\n".join(parts) + "\n"


def write_results(path: Path, text: str) -> None:
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP_MARKER in old:
            kept = old[old.index(KEEP_MARKER):]
    path.write_text(text + ("\n" + kept if kept else ""))


# --------------------------------------------------------------------------- main


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark maestro-parallel against a bare asyncio spawner, GNU parallel and xargs.",
    )
    parser.add_argument("--sizes", type=_sizes, default=None, help="N for the /bin/true workloads (default 100,1000,5000)")
    parser.add_argument("--repeat", type=int, default=None, help="interleaved rounds; medians are reported (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="the CI smoke mode: N = 20, one round; does not write RESULTS.md unless --output is given")
    parser.add_argument("--no-references", action="store_true", help="skip GNU parallel and xargs")
    parser.add_argument("--output", type=Path, default=None, help=f"results file (default {DEFAULT_OUTPUT.relative_to(PROJECT)})")
    parser.add_argument("--sleep-n", type=int, default=None, help="N of the sleep workload (default 200; 0: skip)")
    parser.add_argument("--sleep-seconds", type=float, default=1.0)
    parser.add_argument("--tracker-sizes", type=_sizes, default=None, help="N for the tracker-tick measurement (default 100,1000)")
    parser.add_argument("--tracker-sleep", type=float, default=None, help="agent sleep in that measurement (default 2)")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--detect-tasks", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary repositories go (default: the temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([20] if quick else [100, 1000, 5000])
    args.repeat = args.repeat or (1 if quick else 5)
    args.sleep_n = args.sleep_n if args.sleep_n is not None else (20 if quick else 200)
    args.tracker_sizes = args.tracker_sizes or ([20] if quick else [100, 1000])
    args.tracker_sleep = args.tracker_sleep or (1.5 if quick else 2.0)
    args.detect_repeat = 1 if quick else 5
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    ensure_project_python()
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    raise_open_files_limit()
    compile_package()
    parallel, note = (None, None) if args.no_references else ensure_gnu_parallel(allow_install=True)
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="maestro-bench-", dir=base))
    command = "python benchmarks/run.py" + ("".join(" " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
    try:
        details = machine_details(workdir, parallel)
        bench = Bench(args, workdir, parallel, note)
        bench.make_workloads()
        if not args.quick:
            bench.warm_up()
        bench.measure()
        bench.measure_inprocess()
        text = report(bench, details, command, started_at, time.perf_counter() - clock)
    finally:
        if args.keep:
            print(f"benchmarks: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(text)
    output = args.output if args.output is not None else (None if args.quick else DEFAULT_OUTPUT)
    if output is not None:
        write_results(output, text)
        print(f"benchmarks: wrote {output}", file=sys.stderr)
    if bench.failures:
        print(f"benchmarks: {len(bench.failures)} run(s) FAILED (see above)", file=sys.stderr)
        return 1
    if args.strict and any(t.met is False for t in targets(bench)):
        print("benchmarks: a target was missed (--strict)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
