"""The machine a benchmark runs on: the project's Python, open-file limits, GNU parallel, details for the report.

Nothing here installs anything: a missing GNU parallel is reported and its
rows are skipped (install it with the system's package manager to compare).
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
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


def find_gnu_parallel() -> tuple[str | None, str | None]:
    """The path of GNU parallel, or None and why; (path, note).  Never installs it."""
    found = shutil.which("parallel")
    if found and "GNU parallel" in (_first_line([found, "--version"]) or ""):
        return found, None
    if found:
        return None, f"{found} is not GNU parallel (moreutils' parallel?); its rows are skipped"
    return None, "GNU parallel is not installed (install it with the system's package manager to compare)"


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
