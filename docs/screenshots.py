"""Generate the documentation's screenshot of a report: ``docs/images/report-plan.png``.

Runs the offline demo (``examples/demo``) as a whole plan in a scratch copy,
writes its HTML report with ``maestro-parallel report --plan``, and has a
headless Chromium photograph it.  Run it from the repository with the
project's environment: ``.venv/bin/python docs/screenshots.py``.  Needs
Debian's ``chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "images" / "report-plan.png"
FLAGS = [
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


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="maestro-shots-") as folder:
        scratch = Path(folder)
        demo = scratch / "demo"
        shutil.copytree(
            ROOT / "examples" / "demo", demo, ignore=shutil.ignore_patterns("parallel_groups", "reports", "plan.json")
        )
        cli = [sys.executable, "-m", "maestro_parallel", "--repo-root", str(demo), "-q"]
        env = {**os.environ, "DEMO_AGENT_SECONDS": os.environ.get("DEMO_AGENT_SECONDS", "1.5")}
        subprocess.run(
            [*cli, "run", "--tasks-file", str(demo / "tasks.json"), "--concurrent-steps"], check=True, env=env, cwd=ROOT
        )
        page = scratch / "plan.html"
        subprocess.run(
            [*cli, "report", "--plan", "--output", str(page)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
        )
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={scratch / 'profile'}",
                "--window-size=1100,1250",
                f"--screenshot={TARGET}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            cwd=scratch,
            timeout=120,
        )
    print(TARGET.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
