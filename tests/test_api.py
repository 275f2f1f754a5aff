"""The public surface: ``__all__``, the exception tree, ``python -m``, ``py.typed`` (DESIGN §3, §4)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import maestro_parallel
from maestro_parallel import errors

#: DESIGN §3: the public Python API, nothing more and nothing less.
PUBLIC_API = {
    "AsyncParallelCoordinator",
    "ParallelCoordinator",
    "GroupMetadata",
    "TaskMetadata",
    "GroupPhase",
    "TaskStatus",
    "Config",
    "load_config",
    "detect_groups",
    "extract_relevant_files",
    "detect_subagent",
    "MaestroError",
}


def test_all_is_a_sorted_tuple_of_exactly_the_public_api() -> None:
    exported = maestro_parallel.__all__
    assert isinstance(exported, tuple)
    assert set(exported) == PUBLIC_API
    assert len(exported) == len(PUBLIC_API), "no name is listed twice"
    assert list(exported) == sorted(exported)


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_every_public_name_is_importable_from_the_package(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from maestro_parallel import {name}", namespace)
    assert namespace[name] is getattr(maestro_parallel, name)


def test_star_import_gives_exactly_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from maestro_parallel import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC_API


def test_public_classes_and_functions_are_what_their_names_say() -> None:
    assert inspect.iscoroutinefunction(maestro_parallel.AsyncParallelCoordinator.execute_parallel_group)
    assert not inspect.iscoroutinefunction(maestro_parallel.ParallelCoordinator.execute_parallel_group)
    assert issubclass(maestro_parallel.MaestroError, Exception)
    for name in ("load_config", "detect_groups", "extract_relevant_files", "detect_subagent"):
        function = getattr(maestro_parallel, name)
        assert inspect.isfunction(function) and not inspect.iscoroutinefunction(function), name


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("ValidationError", ValueError),
        ("ConfigError", ValueError),
        ("GroupNotFoundError", LookupError),
        ("AsyncContextError", RuntimeError),
    ],
)
def test_errors_are_also_the_fitting_builtin(name: str, builtin: type[Exception]) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.MaestroError)
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_derives_from_maestro_error(name: str) -> None:
    cls = getattr(errors, name)
    assert inspect.isclass(cls)
    assert issubclass(cls, errors.MaestroError)
    assert cls.__doc__, f"{name} has a docstring"


def test_the_package_root_error_is_the_errors_module_root() -> None:
    assert maestro_parallel.MaestroError is errors.MaestroError


def test_errors_all_lists_every_exception_class_of_the_module() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)


def test_errors_keep_the_context_a_user_needs() -> None:
    config_error = errors.ConfigError("agent.timeout_seconds: must be a number", key="agent.timeout_seconds")
    assert config_error.key == "agent.timeout_seconds"
    assert str(config_error) == "agent.timeout_seconds: must be a number"
    not_found = errors.GroupNotFoundError("infra")
    assert not_found.group_id == "infra"
    assert "infra" in str(not_found)
    busy = errors.GroupBusyError("group infra is busy", group_id="infra", holder_pid=1234)
    assert (busy.group_id, busy.holder_pid) == ("infra", 1234)
    tracker = errors.TrackerError("bd failed", stderr="no database")
    assert tracker.stderr == "no database"


def test_a_validation_error_is_caught_by_except_value_error() -> None:
    with pytest.raises(ValueError, match="bad group"):
        raise errors.ValidationError("bad group")


def test_python_dash_m_prints_the_version() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "maestro_parallel", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert maestro_parallel.__version__ in completed.stdout
    assert "maestro-parallel" in completed.stdout
    assert completed.stdout.count("\n") == 1


def test_version_is_a_dotted_string() -> None:
    version = importlib.import_module("maestro_parallel._version").__version__
    assert version == maestro_parallel.__version__
    assert all(part.isdigit() for part in version.split(".")[:2])


def test_py_typed_ships_in_the_package_folder() -> None:
    folder = Path(maestro_parallel.__file__).parent
    assert (folder / "py.typed").is_file()
