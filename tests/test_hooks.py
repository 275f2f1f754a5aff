"""The test command a repository's layout implies (``detect_test_command``): pure, on real folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maestro_parallel.runtime.hooks import detect_test_command


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, None),
        ({"pytest.ini": "[pytest]\n"}, ("pytest", "-q")),
        ({"tox.ini": "[tox]\nenvlist = py311\n\n[pytest]\naddopts = -q\n"}, ("pytest", "-q")),
        ({"tox.ini": "[tox]\nenvlist = py311\n"}, None),
        ({"setup.cfg": "[metadata]\nname = x\n\n[tool:pytest]\ntestpaths = t\n"}, ("pytest", "-q")),
        ({"setup.cfg": "[metadata]\nname = x\n"}, None),
        ({"setup.cfg": "this is not = an ini file\n[unclosed\n"}, None),  # malformed: no pytest, no crash
        ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, ("pytest", "-q")),
        ({"pyproject.toml": "[project]\nname = 'x'\n"}, None),
        ({"tests/test_a.py": ""}, ("pytest", "-q")),
        ({"package.json": json.dumps({"scripts": {"test": "vitest run"}})}, ("npm", "test")),
        ({"package.json": json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})}, None),
        ({"Cargo.toml": "[package]\n"}, ("cargo", "test")),
        ({"go.mod": "module x\n"}, ("go", "test", "./...")),
    ],
)
def test_the_test_command_follows_the_repository_layout(
    tmp_path: Path, files: dict[str, str], expected: tuple[str, ...] | None
) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert detect_test_command(tmp_path) == expected


def test_a_tox_ini_that_is_a_folder_is_not_a_pytest_config(tmp_path: Path) -> None:
    (tmp_path / "tox.ini").mkdir()
    assert detect_test_command(tmp_path) is None
