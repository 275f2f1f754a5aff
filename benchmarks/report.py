"""The report: tables of what was measured, the targets and whether they were met, RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from environment import HERE
from runners import COORDINATOR, FLOOR, GNU_PARALLEL, Bench, Workload

DEFAULT_OUTPUT = HERE / "RESULTS.md"
KEEP_MARKER = "<!-- run.py keeps everything below this line -->"

#: Targets of issue 6.
TARGET_RATIO_1000 = 1.5
TARGET_VS_PARALLEL = 3.0
TARGET_SLEEP_RATIO = 1.15
TARGET_LAG_MS = 50.0
TARGET_RSS_MB = 150.0
TARGET_BYTES_SPREAD = 1.5  # max/min of bytes written per task across N
TARGET_DETECT_SECONDS = 0.5


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
