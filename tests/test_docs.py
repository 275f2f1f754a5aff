"""Every code block in the README and docs/ runs, so the documentation stays true.

``sh`` blocks run in bash against a fresh copy of the demo (the guide's blocks in order, in one
copy, as a reader would); ``python`` blocks run with this interpreter; ``toml`` blocks must load as
a configuration and ``json`` blocks as JSON (a tasks file when they hold tasks).  ``claude`` and
``bd`` are the test suite's fakes, which print the real tools' output shapes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maestro_parallel.config import loads_config
from maestro_parallel.tasks import loads_tasks

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, line) of each fenced block of ``path``."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        body = textwrap.dedent(match.group("body"))
        found.append((match.group("lang"), body, text.count("\n", 0, match.start()) + 1))
    return found


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_QUICKSTART = blocks(ROOT / "README.md")[0][1].strip().splitlines()


def test_every_fence_is_closed_and_has_a_language_or_is_a_diagram() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert text.count("```") % 2 == 0, doc
        for lang, _body, line in blocks(doc):
            assert lang in ("sh", "python", "toml", "json", ""), f"{doc.name}:{line}: unknown language {lang!r}"


@pytest.mark.parametrize(
    ("doc", "lang", "body", "line"),
    [(doc, lang, body, line) for doc in DOCS for lang, body, line in blocks(doc) if lang in ("toml", "json")],
    ids=lambda value: f"{value.name}" if isinstance(value, Path) else (str(value) if isinstance(value, int) else None),
)
def test_config_and_json_blocks_parse(doc: Path, lang: str, body: str, line: int) -> None:
    if lang == "toml":
        loads_config(body, source=f"{doc.name}:{line}")
        return
    data = json.loads(body)
    if isinstance(data, list) or (isinstance(data, dict) and "tasks" in data):
        assert loads_tasks(body, source=f"{doc.name}:{line}")


def test_the_quickstart_test_line_is_what_ci_runs() -> None:
    assert len(README_QUICKSTART) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert README_QUICKSTART[1] in ci.splitlines()
    development = [body for lang, body, _ in blocks(ROOT / "README.md")[1:] if lang == "sh" and "pytest" in body]
    assert all(body.strip() == README_QUICKSTART[1] for body in development)


def tracked_copy(target: Path) -> Path:
    """A copy of the repository as a fresh clone has it (tracked files only)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_the_quickstart_demo_line_runs_on_a_fresh_copy(tmp_path: Path) -> None:
    clone = tracked_copy(tmp_path / "clone")
    env = {**os.environ, "DEMO_AGENT_SECONDS": "0.2"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["bash", "-c", README_QUICKSTART[0]], cwd=clone, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Parallel Group backend: completed, 3/3 tasks completed" in done.stdout
    assert "tests passed" in done.stderr


def sandbox_env(tmp_path: Path) -> dict[str, str]:
    """PATH with this environment's maestro-parallel, the fake claude and a fake bd."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "bd").write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "fakes" / "fake_bd.py"} "$@"\n')
    (tools / "bd").chmod(0o755)
    (tools / "claude").symlink_to(ROOT / "tests" / "fakes" / "claude")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDECODE", "NO_COLOR")}
    env.update(
        PATH=os.pathsep.join([str(bin_dir), str(tools), env.get("PATH", "")]),
        DEMO_AGENT_SECONDS="0.2",
        FAKE_BD_STATE=str(tmp_path / "bd-state.json"),
        HOME=str(tmp_path / "home"),
    )
    return env


def localize(code: str, tmp_path: Path) -> str:
    """The block with its /tmp/ paths moved into this test's own folder."""
    return code.replace("/tmp/", f"{tmp_path}/")


def run_python(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_the_guide_runs_from_start_to_end(tmp_path: Path) -> None:
    guide = [(lang, body, line) for lang, body, line in blocks(ROOT / "docs" / "GUIDE.md") if lang in ("sh", "python")]
    env = sandbox_env(tmp_path)
    demo = tmp_path / "maestro-demo"
    outputs: list[str] = []
    for index, (lang, body, line) in enumerate(guide):
        cwd = ROOT if index == 0 else demo
        code = localize(body, tmp_path)
        if lang == "sh":
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, capture_output=True,
                                  text=True, env=env, timeout=300)
        else:
            done = run_python(code, cwd, env)
        assert done.returncode == 0, f"GUIDE.md:{line} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        outputs.append(done.stdout)
    text = "\n".join(outputs)
    # What the guide says the reader sees.
    assert "6 tasks: 2 parallel groups, 1 sequential" in text
    assert "Parallel Group backend: completed, 3/3 tasks completed" in text
    assert "execute exited 143" in text
    assert "plan: " in text and "_sequential" in text
    assert '"session_id"' in text and '"total_cost_usd"' in text
    assert "completed 3/3 group_started group_finished" in text
    prompt = (demo / ".flow/maestro/parallel_groups/claude/prompts/api-3.md").read_text()
    assert "Use the `backend-architect` subagent" in prompt and "## Skill: api-style" in prompt


def test_the_readme_examples_run(tmp_path: Path) -> None:
    env = sandbox_env(tmp_path)
    clone = tracked_copy(tmp_path / "clone")
    # The README's beads example runs "in a repository that uses beads": make the demo one.
    demo = clone / "examples" / "demo"
    subprocess.run(["bd", "init", "--prefix", "demo"], cwd=demo, env=env, check=True, capture_output=True)
    for item in json.loads((demo / "tasks.json").read_text())["tasks"]:
        if item.get("status") != "closed" and item["description"].startswith("[P:Group-backend]"):
            subprocess.run(["bd", "create", item["title"], "--id", item["id"], "--description", item["description"]],
                           cwd=demo, env=env, check=True, capture_output=True)
    for lang, body, line in blocks(ROOT / "README.md")[1:]:
        if lang == "python":
            done = run_python(body, clone, env)
        elif lang == "sh" and "pytest" not in body:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", body], cwd=clone / "examples" / "demo",
                                  capture_output=True, text=True, env=env, timeout=300)
        else:
            continue
        assert done.returncode == 0, f"README.md:{line} failed:\n{body}\n{done.stdout}\n{done.stderr}"
