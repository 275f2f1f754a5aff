"""Run the ``maestro-parallel`` CLI in this very process and report what it cost.

``benchmarks/run.py`` times the real console script; this launcher is used for
one extra, instrumented run per workload.  It calls
:func:`maestro_parallel.cli.main` exactly as the console script does, and at
exit writes a JSON side file (path in ``MAESTRO_BENCH_SIDEFILE``) with:

- ``maxrss_kb`` (``getrusage(RUSAGE_SELF)``) and ``vmhwm_kb`` (``/proc/self/status``):
  the peak memory of the coordinator process itself, never of its children;
- ``io``: ``/proc/self/io`` at exit (``wchar``: bytes passed to write calls by
  every thread of the process; ``write_bytes``: bytes it dirtied in the page cache);
- ``snapshot_writes`` / ``snapshot_bytes`` and ``prompt_writes`` / ``prompt_bytes``:
  counted by wrapping ``maestro_parallel.state.store.write_atomic_async`` (absent
  when the store no longer has it: then they are ``null``);
- ``peak_threads``: the most threads the process had, sampled every 2 ms.

The soft RLIMIT_NOFILE is raised to the hard limit first.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

SIDEFILE_ENV = "MAESTRO_BENCH_SIDEFILE"


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _proc_fields(path: str) -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    fields[key.strip()] = int(parts[0])
    except OSError:
        pass
    return fields


class _ThreadSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="bench-thread-sampler", daemon=True)
        self.peak = 0

    def run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, len(os.listdir("/proc/self/task")))
            except OSError:
                return
            time.sleep(0.002)


def _instrument_store(counters: dict[str, Any]) -> None:
    """Count the atomic writes of the store (snapshots and prompts) and their bytes."""
    try:
        from maestro_parallel.state import store
    except ImportError:
        return
    original = getattr(store, "write_atomic_async", None)
    if original is None:
        return
    for key in ("snapshot_writes", "snapshot_bytes", "prompt_writes", "prompt_bytes", "other_writes", "other_bytes"):
        counters[key] = 0

    async def counting(path: Any, data: bytes, *args: Any, **kwargs: Any) -> Any:
        name = Path(path).name
        kind = "snapshot" if name == "metadata.json" else "prompt" if name.endswith(".md") else "other"
        counters[f"{kind}_writes"] += 1
        counters[f"{kind}_bytes"] += len(data)
        return await original(path, data, *args, **kwargs)

    store.write_atomic_async = counting  # type: ignore[attr-defined]


def main() -> None:
    side = os.environ.pop(SIDEFILE_ENV, None)
    _raise_open_files_limit()
    counters: dict[str, Any] = {
        "snapshot_writes": None, "snapshot_bytes": None, "prompt_writes": None, "prompt_bytes": None,
    }
    _instrument_store(counters)
    sampler = _ThreadSampler()
    sampler.start()

    def report() -> None:
        if side is None:
            return
        status = _proc_fields("/proc/self/status")
        data = {
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "vmhwm_kb": status.get("VmHWM"),
            "io": _proc_fields("/proc/self/io"),
            "peak_threads": sampler.peak,
            **counters,
        }
        Path(side).write_text(json.dumps(data))

    atexit.register(report)
    from maestro_parallel.cli import main as cli_main

    sys.argv[0] = "maestro-parallel"
    cli_main()


if __name__ == "__main__":
    main()
