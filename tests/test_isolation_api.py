"""The isolation package's public surface: exactly its ``__all__``, and one error tree."""

from __future__ import annotations

import inspect

from maestro_parallel import isolation
from maestro_parallel.errors import MaestroError
from maestro_parallel.isolation import errors


def test_all_is_exactly_the_public_names() -> None:
    assert isinstance(isolation.__all__, tuple)
    assert list(isolation.__all__) == sorted(isolation.__all__)
    public = {
        name
        for name, value in vars(isolation).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(isolation.__all__) == public


def test_every_error_is_a_maestro_error_and_input_errors_are_value_errors() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(cls, MaestroError) for cls in classes)
    for cls in (errors.ModeUnavailableError, errors.TargetError, errors.IncludeError):
        assert issubclass(cls, ValueError)
    documented = errors.__doc__ or ""
    assert all(name in documented for name in errors.__all__)
