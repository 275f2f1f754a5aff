"""Benchmark rate-limit handling: N agents against an API that admits K sessions at once.

A loopback stand-in of the Anthropic Messages API (``tests/standins``) in its capacity mode admits
K concurrent sessions, each answered after S seconds, and answers 429 at once beyond them.  maestro
runs one group of N tasks against it with the claude preset's verdicts (``claude-json``), through
the CLI (``maestro-parallel execute``), and the script reports side by side, per strategy:

- makespan, against the ideal ``ceil(N/K) * S`` (target: <= 1.3x);
- the 429s the API answered, the peak of sessions in flight, the tasks completed.

Strategies (the first two through maestro, side by side in one run):

- ``per-task``: ``[agent] backoff = "per-task"``, the old rule: each rate-limited task backs off
  on its own (``[agent].retries``, 2 s doubling, ±50 % jitter) while the others keep launching.
- ``governor``: ``[agent] backoff = "shared"`` (the default): every attempt holds a slot of the
  run's governor (``maestro_parallel.runtime.governor``); a rate limit opens one backoff for the
  preset and lowers the number of agents it admits, a success ends the backoff.
- ``per-task-sim`` and ``governor-sim`` (``--strategy all``): the same rules without maestro's
  group run: N anyio tasks each make the session's request in a worker thread (no process
  start-up), classify the answer, and retry — each on its own, or under one governor.

The agent is ``--agent mini`` (default): a small Python program that makes one streaming request
and prints a Claude-shaped result object (``api_error_status`` 429 on a rate limit), so the
measure is maestro's scheduling, not Node start-up on a small machine; ``--agent claude`` runs
the real Claude Code instead (installed by ``tests/realcli/install.sh``).

    .venv/bin/python benchmarks/ratelimit.py [--tasks 30] [--admit 5] [--session-seconds 1] [--write]

``--write`` puts the table into ``benchmarks/RESULTS.md`` (below run.py's keep marker, replacing
an earlier table of this script).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from realcli import locate  # noqa: E402
from standins._server import Turn  # noqa: E402
from standins.anthropic import AnthropicStandIn, environment  # noqa: E402

MINI_AGENT = textwrap.dedent('''
    """One model request, then a Claude Code result object (the fields maestro's verdict reads)."""
    import json, os, sys, urllib.error, urllib.request, uuid
    url = os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages?beta=true"
    body = json.dumps({"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                       "messages": [{"role": "user", "content": open(sys.argv[1]).read()}]}).encode()
    request = urllib.request.Request(url, body, {"content-type": "application/json",
                                                 "x-api-key": os.environ.get("ANTHROPIC_API_KEY", "")})
    result = {"type": "result", "subtype": "success", "session_id": str(uuid.uuid4()), "num_turns": 1,
              "total_cost_usd": 0.0008, "is_error": False, "api_error_status": None, "result": "done"}
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        result.update(is_error=True, api_error_status=exc.code, total_cost_usd=0,
                      result=f"API Error: Request rejected ({exc.code}) · rate_limit_error")
    print(json.dumps(result))
    sys.exit(1 if result["is_error"] else 0)
''')

STRATEGIES = ("per-task", "governor")
SIMULATIONS = ("per-task-sim", "governor-sim")
BEGIN = "<!-- benchmarks/ratelimit.py:begin -->"
END = "<!-- benchmarks/ratelimit.py:end -->"


@dataclass
class Outcome:
    strategy: str
    makespan: float | None
    rejected: int
    peak: int
    completed: int
    exit_code: int | None
    note: str = ""


def _project(folder: Path, n: int, agent: str, retries: int, backoff: str) -> tuple[Path, Path]:
    repo = folder / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    if agent == "mini":
        (repo / "mini_agent.py").write_text(MINI_AGENT)
        command = [sys.executable, "mini_agent.py", "{prompt_file}"]
    else:
        command = ["claude", "-p", "{prompt}", "--output-format", "json", "--permission-mode", "acceptEdits"]
    config = repo / ".flow" / "maestro" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[agent]\npreset = "claude"\ncommand = {json.dumps(command)}\ntimeout_seconds = 600\ngrace_seconds = 1\n'
        f"retries = {retries}\nmax_parallel = 0\nbackoff = {json.dumps(backoff)}\n\n[refresh]\nenabled = false\n\n[tests]\nenabled = false\n\n"
        '[tracker]\nkind = "local"\npoll_interval_seconds = 0.5\n'
    )
    tasks = [{"id": f"t{i:02d}", "title": f"task {i}", "description": "[P:Group-bench] answer briefly"}
             for i in range(n)]
    tasks_file = repo / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    return repo, tasks_file


def run_strategy(strategy: str, *, n: int, k: int, seconds: float, agent: str, retries: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="maestro-ratelimit-") as tmp, \
            AnthropicStandIn([Turn.say("done")], admit=k, session_seconds=seconds) as api:
        folder = Path(tmp)
        repo, tasks_file = _project(folder, n, agent, retries, "shared" if strategy == "governor" else "per-task")
        home = folder / "home"
        home.mkdir()
        env = {**os.environ, **environment(api.url, home=str(home))}
        env.pop("CLAUDECODE", None)
        if agent == "claude":
            clis = locate()
            if clis is None:
                raise SystemExit("the real CLIs are not installed: run tests/realcli/install.sh")
            env["PATH"] = f"{clis.bin_dir}{os.pathsep}{env['PATH']}"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "maestro_parallel", "--repo-root", str(repo), "-q", "execute", "--group-id",
             "bench", "--tasks-file", str(tasks_file), "--json"],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        makespan = time.monotonic() - started
        try:
            document = json.loads(proc.stdout)
            completed = sum(r["status"] == "completed" for r in document["results"])
        except (ValueError, KeyError, TypeError):
            completed = 0
        return Outcome(strategy, makespan, api.rejected, api.peak_in_flight, completed, proc.returncode)


def _request(url: str) -> dict[str, object]:
    """One model request, judged as Claude Code reports it (the result object's fields the verdict reads)."""
    body = json.dumps({"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "answer briefly"}]}).encode()
    request = urllib.request.Request(url + "/v1/messages?beta=true", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
        return {"is_error": False, "api_error_status": None, "result": "done"}
    except urllib.error.HTTPError as exc:
        return {"is_error": True, "api_error_status": exc.code, "result": f"API Error: ({exc.code})"}


async def _simulate(strategy: str, n: int, url: str, base_delay: float) -> int:
    """N sessions in one process, scheduled by the governor or by per-task backoff; the sessions completed.

    Requests run in worker threads, so what is measured is the scheduling, not process start-up.
    """
    import random

    import anyio

    from maestro_parallel.agents.ratelimit import Outcome as Verdict
    from maestro_parallel.agents.ratelimit import classify
    from maestro_parallel.runtime.governor import Governor

    governor = Governor(0, base_delay=base_delay)
    threads = anyio.CapacityLimiter(n)
    completed = 0

    async def session() -> None:
        nonlocal completed
        attempt = 0
        while True:
            attempt += 1
            admitted = None
            if strategy == "governor-sim":
                async with governor.slot("claude") as admitted:
                    report = await anyio.to_thread.run_sync(_request, url, limiter=threads)
            else:
                report = await anyio.to_thread.run_sync(_request, url, limiter=threads)
            outcome = classify(completed=not report["is_error"], claude_result=report)
            if strategy == "governor-sim":
                governor.report("claude", outcome, admitted=admitted)
            if outcome is not Verdict.RATE_LIMITED:
                completed += outcome is Verdict.SUCCESS
                return
            if strategy != "governor-sim":  # today's rule: 2 s x 2^(n-1), capped at 60 s, x 0.5-1.5
                await anyio.sleep(min(60.0, 2.0 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(session)
    return completed


def simulate(strategy: str, *, n: int, k: int, seconds: float, base_delay: float) -> Outcome:
    import anyio

    with AnthropicStandIn([Turn.say("done")], admit=k, session_seconds=seconds) as api:
        started = time.monotonic()
        completed = anyio.run(_simulate, strategy, n, api.url, base_delay)
        return Outcome(strategy, time.monotonic() - started, api.rejected, api.peak_in_flight, completed, 0,
                       "in-process, sessions are requests (no process start-up)")


def agent_startup(agent: str, runs: int = 5) -> float:
    """Seconds one agent process takes to start, up to its first request (the median of ``runs``)."""
    if agent == "mini":
        argv = [sys.executable, "-c", "import json, os, sys, urllib.error, urllib.request, uuid"]
    else:
        clis = locate()
        if clis is None:
            return 0.0
        argv = [str(clis.claude), "--version"]
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.monotonic() - started)
    return sorted(times)[runs // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30, help="N tasks in one group")
    parser.add_argument("--admit", type=int, default=5, help="K sessions the API admits at once")
    parser.add_argument("--session-seconds", type=float, default=1.0, help="S seconds per session")
    parser.add_argument("--retries", type=int, default=12, help="[agent].retries for the run")
    parser.add_argument("--agent", choices=("mini", "claude"), default="mini")
    parser.add_argument("--strategy", choices=(*STRATEGIES, *SIMULATIONS, "both", "all"), default="both",
                        help="both: per-task and governor through maestro; all: the in-process previews too")
    parser.add_argument("--base-delay", type=float, default=2.0, help="the previews' first shared backoff (s)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    ideal = math.ceil(args.tasks / args.admit) * args.session_seconds
    if args.strategy == "both":
        strategies: tuple[str, ...] = STRATEGIES
    elif args.strategy == "all":
        strategies = STRATEGIES + SIMULATIONS
    else:
        strategies = (args.strategy,)
    startup = agent_startup(args.agent)
    waves = math.ceil(args.tasks / args.admit)
    lines = [f"N={args.tasks} tasks ({args.agent} agent), K={args.admit} admitted at once, "
             f"{args.session_seconds:g} s each: ideal makespan {ideal:g} s, target <= {1.3 * ideal:.1f} s",
             f"the agent's own start-up (no request): {startup:.2f} s; {waves} waves of it: "
             f"{ideal + waves * startup:.1f} s is the ideal counting it",
             f"{'strategy':<13} {'makespan':>9} {'x ideal':>8} {'429s':>6} {'peak':>5} {'completed':>10}  note"]
    print("\n".join(lines), flush=True)
    failed = False
    for strategy in strategies:
        if strategy.endswith("-sim"):
            o = simulate(strategy, n=args.tasks, k=args.admit, seconds=args.session_seconds,
                         base_delay=args.base_delay)
        else:
            o = run_strategy(strategy, n=args.tasks, k=args.admit, seconds=args.session_seconds, agent=args.agent,
                             retries=args.retries)
        assert o.makespan is not None
        failed |= o.completed != args.tasks
        lines.append(f"{o.strategy:<13} {o.makespan:>8.1f}s {o.makespan / ideal:>7.2f}x {o.rejected:>6} {o.peak:>5} "
                     f"{o.completed:>4}/{args.tasks:<5}  exit {o.exit_code} {o.note}".rstrip())
        print(lines[-1], flush=True)
    if args.write:
        _write(lines, args)
    return 1 if failed else 0


def _write(lines: list[str], args: argparse.Namespace) -> None:
    """Put the table into RESULTS.md between this script's markers (run.py keeps what is below its marker)."""
    load = os.getloadavg()[0]
    text = "\n".join([
        "## Rate limits: the governor against the per-task backoff",
        "",
        f"`python benchmarks/ratelimit.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(load average {load:.1f} at the end, {os.cpu_count()} cores): maestro runs one group through its CLI "
        "against a stand-in of the Anthropic API that admits K sessions at once and answers 429 beyond them. "
        "429s: what the API refused; peak: sessions in flight at once.",
        "",
        "```",
        *lines,
        "```",
    ])
    results = ROOT / "benchmarks" / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    if BEGIN in old and END in old:
        old = old[: old.index(BEGIN)].rstrip("\n") + old[old.index(END) + len(END) :]
    results.write_text(old.rstrip("\n") + f"\n\n{BEGIN}\n{text}\n{END}\n")


if __name__ == "__main__":
    sys.exit(main())
