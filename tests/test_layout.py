"""The package's shape: no import cycle, no module over 600 lines, the layers import downward only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "maestro_parallel"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports when it is imported (not under TYPE_CHECKING, not in functions).

    Importing ``a.b.c`` also runs ``a.b``; that counts, except for the importer's own
    packages (they are initialised before it).  ``from . import name`` of a name that is not
    a module imports the package itself: the cycle a command module importing the group makes.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    explicit: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                explicit.add(sub if sub in modules else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("maestro_parallel"):
            explicit.add(node.module or "")
        elif isinstance(node, ast.Import):
            explicit.update(a.name for a in node.names if a.name.startswith("maestro_parallel"))
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    found = set(explicit)
    for target in explicit:
        parts = target.split(".")
        found.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts))) if p not in own)
    return {t for t in found if t != name}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: {t for t in top_level_imports(path, set(MODULES)) if t in MODULES} for name, path in MODULES.items()}


def test_there_is_no_import_cycle() -> None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_600_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 600


#: What each folder must never import (the layers above it).
FORBIDDEN = {
    "maestro_parallel.agents": ("maestro_parallel.state", "maestro_parallel.runtime", "maestro_parallel.trackers",
                                "maestro_parallel.cli", "maestro_parallel.config"),
    "maestro_parallel.state": ("maestro_parallel.runtime.coordinator", "maestro_parallel.runtime.group_run",
                               "maestro_parallel.trackers", "maestro_parallel.cli"),
    "maestro_parallel.runtime": ("maestro_parallel.cli",),
    "maestro_parallel.trackers": ("maestro_parallel.cli", "maestro_parallel.runtime.coordinator",
                                  "maestro_parallel.runtime.group_run"),
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_a_layer_imports_only_downward(folder: str) -> None:
    for module, imports in GRAPH.items():
        if module == folder or module.startswith(folder + "."):
            wrong = sorted(i for i in imports if i.startswith(FORBIDDEN[folder]))
            assert not wrong, f"{module} imports {wrong}"


def test_command_modules_import_only_the_shared_plumbing_of_the_cli() -> None:
    for module, imports in GRAPH.items():
        if module.startswith("maestro_parallel.cli.") and module != "maestro_parallel.cli._common":
            siblings = {i for i in imports if i.startswith("maestro_parallel.cli")}
            assert siblings <= {"maestro_parallel.cli._common", "maestro_parallel.cli.progress"}, (module, siblings)

