"""Regenerate every picture of the documentation site (``docs/assets/``) from real runs.

Usage: ``python scripts/pictures.py [--out FOLDER]`` (default: ``docs/assets``), with the package
installed.  Each picture is made by running ``maestro-parallel`` on a fresh copy of the offline
demo and recording what a terminal shows, or photographing what a browser shows, so a picture never
shows output the tool no longer prints.  Every picture of the site is in ``PICTURES`` here, so this
one command keeps all of them current.  The report's photograph needs a headless Chromium (Debian's
``chromium``); without one it is skipped with a message saying so, and the other pictures are drawn.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


class Skipped(Exception):
    """A picture that cannot be made on this machine; the message says what is missing."""


def _maestro(demo: Path, *args: str) -> tuple[str, str]:
    """Run the CLI of this interpreter's environment in ``demo``; (command line shown, its output)."""
    env = {**os.environ, "DEMO_AGENT_SECONDS": os.environ.get("DEMO_AGENT_SECONDS", "1.5"), "NO_COLOR": "1"}
    env.pop("CLAUDECODE", None)
    done = subprocess.run([sys.executable, "-m", "maestro_parallel", *args], cwd=demo, env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"maestro-parallel {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return "$ maestro-parallel " + " ".join(args), done.stderr + done.stdout


def _terminal_svg(lines: list[str], title: str) -> str:
    """The text as a terminal window, in SVG (rich's recording console)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=100, file=io.StringIO(), color_system="truecolor")
    for line in lines:
        style = "bold green" if line.startswith("$ ") else None
        console.print(Text(line, style=style or ""), soft_wrap=True)
    return console.export_svg(title=title)


def demo_run(demo: Path) -> str:
    """``execute`` of the demo's backend group, as it prints on a pipe (one line per event)."""
    command, output = _maestro(demo, "execute", "--group-id", "backend", "--tasks-file", "tasks.json")
    return _terminal_svg([command, *output.rstrip("\n").splitlines()], "maestro-parallel")


def report_plan(demo: Path) -> bytes:
    """The HTML report of the demo run as a whole plan, photographed by a headless Chromium (PNG)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise Skipped("chromium is not installed (apt-get install chromium)")
    _maestro(demo, "-q", "run", "--tasks-file", "tasks.json", "--concurrent-steps")
    page = demo / "plan.html"
    _maestro(demo, "report", "--plan", "--output", str(page))
    shot = demo / "report-plan.png"
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={demo / '.chromium'}", "--window-size=1100,1250",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, cwd=demo, timeout=120,
    )
    return shot.read_bytes()


PICTURES: dict[str, Callable[[Path], str | bytes]] = {
    "demo-run.svg": demo_run,
    "report-plan.png": report_plan,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "assets", help="where the pictures go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in PICTURES.items():
        with tempfile.TemporaryDirectory(prefix="maestro-pictures-") as scratch:
            demo = Path(scratch) / "demo"
            shutil.copytree(DEMO, demo, ignore=shutil.ignore_patterns("parallel_groups", "tests.lock", "src", "web",
                                                                     "migrations", "docs", "reports", "plan.json"))
            try:
                picture = make(demo)
            except Skipped as why:
                print(f"skipped {name}: {why}")
                continue
            target = args.out / name
            if isinstance(picture, bytes):
                target.write_bytes(picture)
            else:
                target.write_text(picture)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
