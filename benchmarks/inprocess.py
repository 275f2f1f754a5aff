"""In-process measurements of the coordinator, each run in a fresh interpreter by ``run.py``.

``loop-lag REPO TASKS_FILE``
    Runs ``AsyncParallelCoordinator(...).execute_parallel_group`` under anyio
    (asyncio backend) beside a heartbeat task that sleeps 5 ms in a loop and
    records how late each wake-up is.  Reports the worst lag during launch
    (from the ``concurrent_execution`` phase to the ``coordination`` phase, i.e.
    until the last agent is started) and over the whole run, the most threads
    the process had (sampled by the heartbeat), what ran on the loop's thread
    during the worst gap (forks, child-watcher starts, snapshot encodes, full
    garbage collections, the costliest callbacks), and how long after its fork
    each agent's ``task_started`` reached the journal (DESIGN §5: at once).
    The instrumentation (a wrapper around every loop callback and fork) costs
    a few microseconds per callback, a small part of any lag it reports.
``tracker-ticks REPO TASKS_FILE``
    Runs the group with a ``MemoryTracker`` (agents ``sleep 2``, ``[tracker]
    poll_interval_seconds`` from the repository's config) and counts the
    poller's ticks (its ``anyio.sleep(poll_interval)`` wake-ups that find tasks
    running) against ``fetch_statuses`` calls, checking that every call names
    every task running at that moment.
``detect --tasks N --repeat K``
    Times ``maestro_parallel.markers.detect_groups`` on N generated tasks.

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

HEARTBEAT_SECONDS = 0.005
#: pid -> when its fork returned (filled by _instrument_spawning)
SPAWNED_AT: dict[int, float] = {}


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _load_tasks(tasks_file: Path) -> list[dict[str, Any]]:
    data = json.loads(tasks_file.read_text())
    return data["tasks"] if isinstance(data, dict) else data


def _coordinator(repo: Path, tracker: Any, on_event: Any) -> Any:
    from maestro_parallel import AsyncParallelCoordinator, load_config

    config = load_config(repo).with_overrides(refresh_enabled=False, tests_enabled=False)
    return AsyncParallelCoordinator(repo, config=config, tracker=tracker, on_event=on_event)


def _summary(meta: Any, n: int) -> dict[str, Any]:
    data = meta.to_dict()
    completed = sum(1 for r in data["results"] if r.get("status") == "completed")
    return {"status": data["status"], "results": len(data["results"]), "completed": completed, "n": n}


def loop_lag(repo: Path, tasks_file: Path) -> dict[str, Any]:
    from maestro_parallel.trackers.local import LocalTracker

    tasks = _load_tasks(tasks_file)
    phases: dict[str, float] = {}

    journal_delays: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "phase_changed":
            phases.setdefault(str(event.get("phase")), time.perf_counter())
        elif event.get("event") == "task_started" and event.get("pid") in SPAWNED_AT:
            # on_event runs right after the event is journaled: how long the journal lagged the spawn
            journal_delays.append(time.perf_counter() - SPAWNED_AT[event["pid"]])

    beats: list[tuple[float, float, float]] = []  # (slept from, woke at, lag)
    peak_threads = 0

    async def heartbeat() -> None:
        nonlocal peak_threads
        while True:
            before = time.perf_counter()
            await anyio.sleep(HEARTBEAT_SECONDS)
            after = time.perf_counter()
            beats.append((before, after, after - before - HEARTBEAT_SECONDS))
            peak_threads = max(peak_threads, _threads())

    async def main() -> Any:
        coordinator = _coordinator(repo, LocalTracker(repo, tasks_file=tasks_file), on_event)
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            await anyio.sleep(0.05)  # let the heartbeat settle
            started = time.perf_counter()
            meta = await coordinator.execute_parallel_group(tasks, "bench")
            ended = time.perf_counter()
            tg.cancel_scope.cancel()
        return meta, started, ended

    spans = _instrument_spawning()
    handles = _instrument_handles()
    meta, started, ended = anyio.run(main, backend="asyncio")
    launch_from = phases.get("concurrent_execution", started)
    launch_to = phases.get("coordination", ended)
    launch_beats = [beat for beat in beats if beat[1] >= launch_from and beat[0] <= launch_to]
    in_launch = [lag for (_, _, lag) in launch_beats]
    worst = max(launch_beats, key=lambda beat: beat[2], default=None)
    in_worst: dict[str, Any] = {}
    if worst is not None:  # what ran on the loop's thread while the worst heartbeat waited
        for kind, items in spans.items():
            inside = [(a, b) for a, b in items if b >= worst[0] and a <= worst[1]]
            in_worst[f"{kind}_in_worst_gap"] = len(inside)
            in_worst[f"{kind}_ms_in_worst_gap"] = 1000 * sum(b - a for a, b in inside)
        in_worst["handles_in_worst_gap"] = _top_handles(handles, worst[0], worst[1])
    for kind, items in spans.items():
        in_worst[f"{kind}_ms_mean"] = 1000 * statistics.mean(b - a for a, b in items) if items else None
    in_run = [lag for (a, b, lag) in beats if b >= started and a <= ended]
    return {
        **_summary(meta, len(tasks)),
        "run_seconds": ended - started,
        "launch_seconds": launch_to - launch_from,
        "worst_lag_launch_ms": 1000 * max(in_launch, default=0.0),
        "worst_lag_run_ms": 1000 * max(in_run, default=0.0),
        "p99_lag_launch_ms": 1000 * _quantile(in_launch, 0.99),
        "beats_in_launch": len(in_launch),
        "peak_threads": peak_threads,
        "start_journaled_median_ms": 1000 * statistics.median(journal_delays) if journal_delays else None,
        "start_journaled_max_ms": 1000 * max(journal_delays) if journal_delays else None,
        **in_worst,
    }


def _instrument_spawning() -> dict[str, list[tuple[float, float]]]:
    """Record when the loop thread forks (``Popen``) and starts a child watcher (asyncio's, per child).

    Both run synchronously on the event loop's thread; the spans falling inside
    the worst heartbeat gap show what held the loop.
    """
    import asyncio.unix_events
    import subprocess

    spans: dict[str, list[tuple[float, float]]] = {"spawns": []}

    def timed(kind: str, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                after = time.perf_counter()
                spans[kind].append((before, after))
                if kind == "spawns" and args and getattr(args[0], "pid", None):
                    SPAWNED_AT[args[0].pid] = after

        return wrapper

    subprocess.Popen.__init__ = timed("spawns", subprocess.Popen.__init__)  # type: ignore[method-assign]
    watcher = getattr(asyncio.unix_events, "ThreadedChildWatcher", None)
    if watcher is not None:
        spans["watchers"] = []
        watcher.add_child_handler = timed("watchers", watcher.add_child_handler)
    # the snapshot's encoding: the store's json.dumps calls with an indent (journal lines have none)
    from maestro_parallel.state import store

    real_json = getattr(store, "json", None)
    if real_json is not None:
        spans["snapshot_encodes"] = []

        class TimedJson:
            def __getattr__(self, name: str) -> Any:
                return getattr(real_json, name)

            @staticmethod
            def dumps(*args: Any, **kwargs: Any) -> Any:
                before = time.perf_counter()
                try:
                    return real_json.dumps(*args, **kwargs)
                finally:
                    spans["snapshot_encodes"].append((before, time.perf_counter()))

        store.json = TimedJson()  # type: ignore[attr-defined]
    # garbage collections of the oldest generation
    spans["full_gcs"] = []
    spans["full_gcs_off_loop"] = []  # triggered by a worker thread: they hold the GIL, so the loop waits too
    main_thread = threading.get_ident()
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            gc_started.append(time.perf_counter())
        elif gc_started:
            span = (gc_started.pop(), time.perf_counter())
            spans["full_gcs"].append(span)
            if threading.get_ident() != main_thread:
                spans["full_gcs_off_loop"].append(span)

    gc.callbacks.append(on_gc)
    return spans


def _instrument_handles() -> list[tuple[float, float, str]]:
    """Record every callback the loop runs (start, end, what it was): which ones filled the worst gap."""
    import asyncio.events

    records: list[tuple[float, float, str]] = []
    real_run = asyncio.events.Handle._run

    def run(self: Any) -> None:
        before = time.perf_counter()
        try:
            real_run(self)
        finally:
            records.append((before, time.perf_counter(), _label(self._callback)))

    asyncio.events.Handle._run = run  # type: ignore[method-assign]
    return records


def _label(callback: Any) -> str:
    owner = getattr(callback, "__self__", None)
    get_coro = getattr(owner, "get_coro", None)
    if get_coro is not None:  # a task step: name the coroutine it runs (innermost awaited frame)
        coro = get_coro()
        name = getattr(coro, "__qualname__", "?")
        frame_owner = coro
        while True:
            inner = getattr(frame_owner, "cr_await", None)
            if inner is None or not hasattr(inner, "cr_await"):
                break
            frame_owner = inner
        inner_name = getattr(frame_owner, "__qualname__", None)
        return f"task {name}" + (f" (now in {inner_name})" if inner_name and inner_name != name else "")
    return getattr(callback, "__qualname__", type(callback).__name__)


def _top_handles(records: list[tuple[float, float, str]], start: float, end: float) -> dict[str, Any]:
    """The callbacks that ran inside [start, end]: how many, how long, the three costliest kinds."""
    inside = [(a, b, label) for a, b, label in records if b >= start and a <= end]
    by_label: dict[str, list[float]] = {}
    for a, b, label in inside:
        by_label.setdefault(label, []).append(b - a)
    top = sorted(by_label.items(), key=lambda item: -sum(item[1]))[:3]
    return {
        "count": len(inside),
        "ms": 1000 * sum(b - a for a, b, _ in inside),
        "top": [{"label": label, "count": len(times), "ms": 1000 * sum(times)} for label, times in top],
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tracker_ticks(repo: Path, tasks_file: Path) -> dict[str, Any]:
    """Count the poller's ticks and ``fetch_statuses`` calls, and check each call's ids.

    A tick is one return of the poller's ``anyio.sleep(poll_interval)``; a call
    belongs to the last tick before it.  The coordinator's own set of running
    tasks is not visible from outside, and it differs from what the events
    show for a moment around each start and end, so the checks use tasks that
    are *steadily* running: started (``task_started``) a whole interval before
    the tick and finished (``task_finished``) at least ``margin`` after it.
    Every tick with a steadily running task must make exactly one call, and
    every call must name every steadily running task.
    """
    from maestro_parallel import load_config
    from maestro_parallel.trackers.memory import MemoryTracker

    tasks = _load_tasks(tasks_file)
    interval = load_config(repo).tracker.poll_interval_seconds
    margin = max(0.5, interval)
    started_at: dict[str, float] = {}
    finished_at: dict[str, float] = {}
    ticks: list[float] = []
    calls: list[tuple[int, float, frozenset[str]]] = []  # (tick index, time, ids)

    class CountingTracker(MemoryTracker):
        async def fetch_statuses(self, task_ids: Any) -> dict[str, str]:
            calls.append((len(ticks) - 1, time.perf_counter(), frozenset(task_ids)))
            return await super().fetch_statuses(task_ids)

    def on_event(event: dict[str, Any]) -> None:
        name, task_id = event.get("event"), event.get("task_id")
        if name == "task_started" and isinstance(task_id, str):
            started_at.setdefault(task_id, time.perf_counter())
        elif name == "task_finished" and isinstance(task_id, str):
            finished_at[task_id] = time.perf_counter()

    real_sleep = anyio.sleep

    async def counting_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        result = await real_sleep(delay, *args, **kwargs)
        if delay == interval:
            ticks.append(time.perf_counter())
        return result

    async def main() -> Any:
        coordinator = _coordinator(repo, CountingTracker(tasks), on_event)
        return await coordinator.execute_parallel_group(tasks, "bench")

    anyio.sleep = counting_sleep  # type: ignore[assignment]  # only the poller sleeps exactly `interval`
    try:
        meta = anyio.run(main, backend="asyncio")
    finally:
        anyio.sleep = real_sleep  # type: ignore[assignment]

    def steady(at: float) -> set[str]:
        return {
            t for t, s in started_at.items()
            if s <= at - interval and finished_at.get(t, float("inf")) >= at + margin
        }

    per_tick: dict[int, int] = {}
    for tick, _, _ in calls:
        per_tick[tick] = per_tick.get(tick, 0) + 1
    must_call = [i for i, at in enumerate(ticks) if steady(at)]
    silent = [i for i in must_call if per_tick.get(i, 0) == 0]
    missing = [len(steady(at) - ids) for _, at, ids in calls]
    return {
        **_summary(meta, len(tasks)),
        "interval": interval,
        "ticks": len(ticks),
        "ticks_with_steady_tasks": len(must_call),
        "calls": len(calls),
        "calls_in_steady_ticks": sum(per_tick.get(i, 0) for i in must_call),
        "max_calls_in_one_tick": max(per_tick.values(), default=0),
        "steady_ticks_without_call": len(silent),
        "calls_missing_steady_ids": sum(1 for m in missing if m),
        "max_ids_per_call": max((len(ids) for _, _, ids in calls), default=0),
    }


def make_tasks(n: int, seed: int = 6) -> list[dict[str, Any]]:
    """N tasks as a tracker holds them: a third in 100 groups, a few markers only in titles, the rest sequential."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.33:
            description = f"[P:Group-g{rng.randrange(100)}] Implement part {i}.\n- file: src/mod{i}.py"
            title = f"Task {i}"
        elif roll < 0.36:
            description = f"Part {i}, marker in the title"
            title = f"[P:Group-t{rng.randrange(10)}] Task {i}"
        else:
            description = f"Sequential work item {i} with a longer description " + "x" * rng.randrange(200)
            title = f"Task {i}"
        tasks.append({"id": f"task-{i:06d}", "title": title, "description": description, "status": "open"})
    return tasks


def detect(n: int, repeat: int) -> dict[str, Any]:
    from maestro_parallel.markers import detect_groups

    tasks = make_tasks(n)
    times = []
    groups: dict[str, Any] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        groups = detect_groups(tasks)
        times.append(time.perf_counter() - started)
    return {
        "tasks": n,
        "repeat": repeat,
        "median_seconds": statistics.median(times),
        "min_seconds": min(times),
        "max_seconds": max(times),
        "groups": len(groups),
        "grouped_tasks": sum(len(v) for k, v in groups.items() if k != "_sequential"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("loop-lag", "tracker-ticks"):
        p = sub.add_parser(name)
        p.add_argument("repo", type=Path)
        p.add_argument("tasks_file", type=Path)
    p = sub.add_parser("detect")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    _raise_open_files_limit()
    if args.what == "loop-lag":
        result = loop_lag(args.repo, args.tasks_file)
    elif args.what == "tracker-ticks":
        result = tracker_ticks(args.repo, args.tasks_file)
    else:
        result = detect(args.tasks, args.repeat)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
