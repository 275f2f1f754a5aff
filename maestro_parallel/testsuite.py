"""Finding a repository's test suite when ``[tests].command`` does not name one."""

from __future__ import annotations

import json
import tomllib
from configparser import ConfigParser, Error as ConfigParserError
from pathlib import Path

__all__ = ("detect_test_command",)

_NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'


def _has_pytest_section(path: Path, section: str) -> bool:
    parser = ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (ConfigParserError, OSError, UnicodeDecodeError):
        return False
    return parser.has_section(section)


def _pyproject_has_pytest(path: Path) -> bool:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = data.get("tool")
    return isinstance(tool, dict) and isinstance(tool.get("pytest"), dict) and "ini_options" in tool["pytest"]


def _npm_test_script(path: Path) -> bool:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    scripts = data.get("scripts") if isinstance(data, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    return isinstance(test, str) and bool(test.strip()) and test.strip() != _NPM_PLACEHOLDER


def detect_test_command(repo_root: Path) -> tuple[str, ...] | None:
    """The test command the repository's layout implies, or None.

    pytest when ``pytest.ini``, a pytest section in ``tox.ini``/``setup.cfg``,
    ``[tool.pytest.ini_options]`` in ``pyproject.toml`` or a ``tests/`` folder
    exists; ``npm test`` when ``package.json`` has a real test script;
    ``cargo test`` with ``Cargo.toml``; ``go test ./...`` with ``go.mod``.
    """
    if (
        (repo_root / "pytest.ini").is_file()
        or _has_pytest_section(repo_root / "tox.ini", "pytest")
        or _has_pytest_section(repo_root / "setup.cfg", "tool:pytest")
        or _pyproject_has_pytest(repo_root / "pyproject.toml")
        or (repo_root / "tests").is_dir()
    ):
        return ("pytest", "-q")
    if _npm_test_script(repo_root / "package.json"):
        return ("npm", "test")
    if (repo_root / "Cargo.toml").is_file():
        return ("cargo", "test")
    if (repo_root / "go.mod").is_file():
        return ("go", "test", "./...")
    return None
