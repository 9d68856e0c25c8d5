"""Typer's conversion of option values without pydantic where the result is known to be the same.

Typer 0.29 converts every parameter's value through a pydantic validator that it builds for the parameter on
first use: importing pydantic and building those validators is about a sixth of a one-image ``occlude run``
(measured by benchmarks/fixed_cost.py). For the values a call mostly has, the conversion is plain and done here
without pydantic, with Typer's own functions where it has them:

- None (an option not given whose default is None): None, or () for a list, as ``RuntimeParam.coerce`` returns;
- an option with ``parser=``: the parser's result (a parser that raises ValueError, TypeError or AssertionError
  goes to Typer, which words the error);
- a path given as text: Typer's own ``coerce_cli_path`` of ``Path(text)`` (its checks included);
- a list of text for ``List[str]``: the list;
- a default of exactly the parameter's type (int, float, str, an Enum member), without min/max: itself.

Anything else goes to Typer as before. The missing-parameter check and the callback run as in Typer's
``process_value``. Typer is pinned below 0.30 (pyproject.toml); tests/test_cli_fast_typer.py checks that every
parameter of every command converts to the same value, or fails with the same error, either way.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, List, Tuple, get_args, get_origin

_PLAIN = (int, float, str)


def _plain_path(info) -> bool:
    return info.path_type is None and not getattr(info, "allow_dash", False)


def fast_coerce(param, ctx, value) -> Tuple[bool, Any]:
    """(True, the converted value) when ``value`` converts here exactly as Typer would convert it, else
    (False, None)."""
    multi = param.multiple or param.nargs == -1
    if value is None:
        return True, (() if multi else None)
    descriptor = param.type_descriptor
    info = descriptor.parameter_info
    annotation = descriptor.annotation
    if descriptor.file_annotation is not None:
        return False, None
    if info.parser is not None:
        if multi or not isinstance(value, str):
            return False, None
        try:
            return True, info.parser(value)
        except (ValueError, TypeError, AssertionError):  # pydantic turns these into Typer's message
            return False, None
    if annotation is Path and isinstance(value, str) and value and not multi and _plain_path(info):
        from typer._param_types import coerce_cli_path

        return True, coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
    if get_origin(annotation) in (list, List) and get_args(annotation) == (str,):
        if isinstance(value, (list, tuple)) and all(type(item) is str for item in value):
            return True, list(value)
        return False, None
    if info.min is not None or info.max is not None or multi:
        return False, None
    if annotation in _PLAIN and type(value) is annotation:
        if annotation is str and not value:
            return False, None
        from typer._click.core import ParameterSource

        if ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
            return True, value
        return False, None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum) and isinstance(value, annotation):
        return True, value
    return False, None


def install_fast_coercion() -> None:
    """Replace Typer's ``_TyperParameter.process_value`` by one that converts through :func:`fast_coerce` first
    (once; a parameter whose pydantic validator was already built keeps using it)."""
    from typer import core

    original = core._TyperParameter.process_value
    if getattr(original, "_occlude", False):
        return

    def process_value(self, ctx, value):
        if self._runtime_param is not None:
            return original(self, ctx, value)
        done, converted = fast_coerce(self, ctx, value)
        if not done:
            return original(self, ctx, value)
        if self.required and self.value_is_missing(converted):
            from typer._click.exceptions import MissingParameter

            raise MissingParameter(ctx=ctx, param=self)
        if self.callback is not None:
            converted = self.callback(ctx, self, converted)
        return converted

    process_value._occlude = True  # type: ignore[attr-defined]
    process_value._typer = original  # type: ignore[attr-defined]
    core._TyperParameter.process_value = process_value  # type: ignore[method-assign]
