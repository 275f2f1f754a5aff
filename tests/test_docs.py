"""Every code block of the README and the documentation site runs, so the documentation stays true.

Each page's ``sh`` and ``python`` blocks run in order, as a reader would: in a sandbox that starts
in a fresh copy of the repository (tracked files only), where a block that ends with ``cd DIR``
moves the blocks after it to DIR.  ``toml`` blocks must load as a configuration and ``json`` blocks
as JSON (a tasks file when they hold tasks).  ``claude``, ``codex`` and ``bd`` are the test suite's
fakes, which print the real tools' output shapes.  Not run: blocks without a language (diagrams),
blocks that run the test suite itself (``pytest``), the README's Quickstart (its own tests below),
and a block right after a ``<!-- not run: why -->`` comment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from maestro_parallel.config import config_template, loads_config
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


NOT_RUN = re.compile(r"<!--\s*not run\b[^>]*-->\s*$")
CD = re.compile(r"(?:^|&&|;|\|\|)\s*cd\s+([^\s;&|]+)", re.M)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_QUICKSTART = blocks(ROOT / "README.md")[0][1].strip().splitlines()


def runnable(path: Path) -> list[tuple[str, str, int]]:
    """The blocks of ``path`` the tests run, in order (see the module docstring for what is left out)."""
    lines = path.read_text().splitlines()
    found = []
    for index, (lang, body, line) in enumerate(blocks(path)):
        if lang not in ("sh", "python") or "pytest" in body or (path.name == "README.md" and index == 0):
            continue
        before = next((text for text in reversed(lines[: line - 1]) if text.strip()), "")
        if NOT_RUN.search(before):
            continue
        found.append((lang, body, line))
    return found


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_fence_is_closed_and_has_a_language_or_is_a_diagram() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert text.count("```") % 2 == 0, doc
        for lang, _body, line in blocks(doc):
            assert lang in ("sh", "python", "toml", "json", ""), f"{page_id(doc)}:{line}: unknown language {lang!r}"


@pytest.mark.parametrize(
    ("doc", "lang", "body", "line"),
    [(doc, lang, body, line) for doc in DOCS for lang, body, line in blocks(doc) if lang in ("toml", "json")],
    ids=lambda value: page_id(value) if isinstance(value, Path) else (str(value) if isinstance(value, int) else None),
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
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert README_QUICKSTART[1] in ci
    development = [body for lang, body, _ in blocks(ROOT / "README.md")[1:] if lang == "sh" and "pytest" in body]
    assert development and all(body.strip() == README_QUICKSTART[1] for body in development)
    # The site is built, strictly, before the tests run.
    docs_build = [number for number, line in enumerate(ci) if "mkdocs build --strict" in line]
    assert any("'.[test,docs]'" in line or "'.[docs]'" in line for line in ci[: docs_build[0] if docs_build else 0])
    assert docs_build and docs_build[0] < ci.index(README_QUICKSTART[1])


def test_the_readme_links_into_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in t]
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    assert len(text.encode()) <= 10 * 1024, "the README is meant to stay short: move detail into docs/"


def load_hooks() -> object:
    """``docs/hooks.py``, the generators of the site's reference pages."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_lists_every_key_with_a_default_the_config_accepts() -> None:
    reference = load_hooks().config_reference()  # type: ignore[attr-defined]
    rows: list[tuple[str, str, str]] = []
    table = ""
    for line in reference.splitlines():
        if header := re.match(r"### `\[([\w.<>-]+)\]`", line):
            table = header[1]
        elif row := re.match(r"\| `(\w+)` \| (?:[^|\\]|\\.)+ \| `(.*?)` \|", line):
            rows.append((table, row[1], row[2]))
    for table, key, default in rows:
        if default != "detected":
            loads_config(f"[{table}]\n{key} = {default}\n", source=f"reference [{table}] {key}")
    template_keys = set()
    table = ""
    for line in config_template().splitlines():
        if header := re.match(r"^\[(\w+)\]", line):
            table = header[1]
        elif table and (entry := re.match(r"^#? ?(\w+) = ", line)):
            template_keys.add((table, entry[1]))
    assert template_keys and template_keys <= {(table, key) for table, key, _ in rows}


def test_the_api_reference_documents_every_public_name() -> None:
    import maestro_parallel

    reference = load_hooks().api_reference()  # type: ignore[attr-defined]
    assert [line.rsplit(".", 1)[1] for line in reference.split() if line.startswith("maestro_parallel.")] == list(
        maestro_parallel.__all__)


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
    """PATH with this environment's maestro-parallel, the fake claude and codex, and a fake bd."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "bd").write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "fakes" / "fake_bd.py"} "$@"\n')
    (tools / "bd").chmod(0o755)
    (tools / "claude").symlink_to(ROOT / "tests" / "fakes" / "claude")
    (tools / "codex").symlink_to(ROOT / "tests" / "fakes" / "codex")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDECODE", "NO_COLOR")}
    env.update(
        PATH=os.pathsep.join([str(bin_dir), str(tools), env.get("PATH", "")]),
        DEMO_AGENT_SECONDS="0.2",
        FAKE_BD_STATE=str(tmp_path / "bd-state.json"),
        HOME=str(tmp_path / "home"),
        # A reader's git knows who they are; the temporary HOME has no .gitconfig to say so.
        GIT_AUTHOR_NAME="Reader", GIT_AUTHOR_EMAIL="reader@example.com",
        GIT_COMMITTER_NAME="Reader", GIT_COMMITTER_EMAIL="reader@example.com",
    )
    return env


def localize(code: str, tmp_path: Path) -> str:
    """The block with its /tmp/ paths moved into this test's own folder."""
    return code.replace("/tmp/", f"{tmp_path}/")


def examples_copy(target: Path) -> Path:
    """A folder holding a copy of ``examples/`` as a fresh clone has it (no state left by earlier runs)."""
    generated = {"parallel_groups", "tests.lock", "__pycache__"}
    demo_outputs = {"src", "web", "migrations", "docs"}  # what the demo's agents write

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT / "examples" / "demo"
        return {name for name in names if name in generated or (top and name in demo_outputs)}

    shutil.copytree(ROOT / "examples", target / "examples", ignore=ignore)
    return target


def run_python(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


EXPECTED = {
    "README.md": ["2 tasks: 1 parallel group", "Parallel Group api: completed, 2/2 tasks completed",
                  '"session_id"', '"total_cost_usd"', '"landed": true', "critical path"],
    "docs/getting-started.md": ["6 tasks: 2 parallel groups, 1 sequential",
                                "Parallel Group backend: completed, 3/3 tasks completed",
                                "execute exited 143", "plan: ", "(sequential)", "critical path"],
    "docs/how-to/claude-code.md": ['"session_id"', '"total_cost_usd"', "You are the `backend-architect` subagent.",
                                   "## Skill: api-style", "description: Summarise the project's current state"],
    "docs/how-to/codex.md": ["Parallel Group backend: completed, 3/3 tasks completed", '"session_id"'],
    "docs/concepts/plans.md": ["critical path (2 steps): backend -> frontend",
                               "steps run one at a time: the working tree is shared",
                               "steps run at the same time: worktree isolation (git work tree with a commit)",
                               "docs-1 (sequential): completed (1/1 completed)\nplan completed", "plan.html"],
    "docs/how-to/beads.md": ["Parallel Group edge: completed, 2/2 tasks completed"],
    "docs/how-to/embedding.md": ["completed 3/3 group_started group_finished"],
    "docs/concepts/isolation.md": ["api, hotfix may conflict on app.py", "merge conflict in app.py",
                                   "maestro/g/x%2Elock"],
    "docs/how-to/recover.md": ['"stale": true', "Parallel Group backend: completed, 3/3 tasks completed"],
}
PAGES = [doc for doc in DOCS if runnable(doc)]


def test_every_page_with_expectations_has_blocks_to_run() -> None:
    assert set(EXPECTED) <= {page_id(doc) for doc in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_the_page_runs_from_start_to_end(page: Path, tmp_path: Path) -> None:
    env = sandbox_env(tmp_path)
    cwd = examples_copy(tmp_path / "clone")
    outputs: list[str] = []
    for lang, body, line in runnable(page):
        code = localize(body, tmp_path)
        if lang == "sh":
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, capture_output=True,
                                  text=True, env=env, timeout=300)
        else:
            done = run_python(code, cwd, env)
        where = f"{page_id(page)}:{line}"
        assert done.returncode == 0, f"{where} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        outputs.append(done.stdout)
        if lang == "sh" and (moves := CD.findall(code)):
            cwd = cwd / moves[-1]  # an absolute folder replaces cwd
    text = "\n".join(outputs)
    for expected in EXPECTED.get(page_id(page), []):
        assert expected in text, f"{page_id(page)}: the page says the reader sees {expected!r}; output:\n{text}"


def test_the_picture_script_draws_a_real_run(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_AGENT_SECONDS": "0.2"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "pictures.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "demo-run.svg").read_text()
    assert svg.startswith("<svg") and "3/3" in svg
    drawn = {path.name for path in tmp_path.iterdir()}
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        png = (tmp_path / "report-plan.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000  # a drawn page, not a blank one
    else:
        assert "skipped report-plan.png: chromium is not installed (apt-get install chromium)" in done.stdout
        drawn.add("report-plan.png")
    # Every picture the site shows is one the script draws.
    shown = set(re.findall(r"assets/([\w.-]+\.(?:svg|png))", "".join(doc.read_text() for doc in DOCS)))
    assert {"demo-run.svg", "report-plan.png"} <= shown <= drawn


def test_the_report_photograph_is_skipped_with_a_reason_without_chromium(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("pictures", ROOT / "scripts" / "pictures.py")
    assert spec is not None and spec.loader is not None
    pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pictures)
    assert set(pictures.PICTURES) == {"demo-run.svg", "report-plan.png"}
    monkeypatch.setenv("PATH", str(tmp_path))  # no browser here
    with pytest.raises(pictures.Skipped, match=r"^chromium is not installed \(apt-get install chromium\)$"):
        pictures.report_plan(tmp_path)
