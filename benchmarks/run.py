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
  when installed (nothing is installed by this script: without GNU parallel its
  rows say so);
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

The parts: :mod:`environment` (the machine), :mod:`runners` (workloads and
timed runs), :mod:`report` (tables, targets, RESULTS.md); this module parses
the command line and runs them in order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from environment import (
    PROJECT,
    compile_package,
    ensure_project_python,
    find_gnu_parallel,
    machine_details,
    raise_open_files_limit,
)
from report import DEFAULT_OUTPUT, report, targets, write_results
from runners import Bench

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
    parallel, note = (None, None) if args.no_references else find_gnu_parallel()
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
