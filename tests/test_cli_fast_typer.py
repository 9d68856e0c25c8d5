"""occlude_cli/cli/_fast_typer.py converts option values without pydantic where Typer's own conversion gives the
same result. Checked here for every parameter of every command: its default, and given values of each kind
(texts for parsers, paths, lists), against Typer's own conversion (``build_runtime_param(...).coerce``): the same
value, or the same error."""

from __future__ import annotations

import pytest
import typer
from typer._click.core import Context, ParameterSource
from typer._coercion import build_runtime_param
from typer.core import _TyperParameter

from occlude_cli.cli import app
from occlude_cli.cli._fast_typer import fast_coerce

PARSER_TEXTS = ["56", "8x8", "8x8x8", "1/4", "0/4", "10,10,100,100", "1,2", "auto", "local", "", "x", "0.5", "-1"]
PATH_TEXTS = ["a.png", "/tmp", "-", "no such folder/x.onnx"]
LIST_VALUES = [["a.png", "b c.png"], ["-"], ("x",)]


def typer_way(param, ctx, value):
    try:
        return "value", build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # the same error either way
        return "error", (type(exc).__name__, str(exc))


def fast_way(param, ctx, value):
    try:
        done, converted = fast_coerce(param, ctx, value)
    except Exception as exc:
        return True, ("error", (type(exc).__name__, str(exc)))
    return done, ("value", converted)


def parameters():
    group = typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        for param in command.params:
            if isinstance(param, _TyperParameter):
                yield name, command, param


def test_every_parameter_converts_as_typer_converts_it():
    compared = fast = 0
    for name, command, param in parameters():
        ctx = Context(command, info_name=name)
        samples = [(param.get_default(ctx), ParameterSource.DEFAULT)]
        descriptor = param.type_descriptor
        if descriptor.parameter_info.parser is not None:
            samples += [(text, ParameterSource.COMMANDLINE) for text in PARSER_TEXTS]
        elif getattr(descriptor.annotation, "__name__", "") == "Path":
            samples += [(text, ParameterSource.COMMANDLINE) for text in PATH_TEXTS]
        elif "List" in repr(descriptor.annotation) or "list" in repr(descriptor.annotation):
            samples += [(value, ParameterSource.COMMANDLINE) for value in LIST_VALUES]
        for value, source in samples:
            ctx.set_parameter_source(param.name, source)
            done, ours = fast_way(param, ctx, value)
            compared += 1
            if not done:
                continue
            fast += 1
            assert ours == typer_way(param, ctx, value), (name, param.name, value)
    assert compared > 300 and fast > 200  # every command's options, most of them taken by the fast way


def test_the_replaced_method_is_typers_own():
    method = _TyperParameter.process_value
    assert getattr(method, "_occlude", False)
    original = method._typer  # type: ignore[attr-defined]
    assert original.__module__ == "typer.core" and original.__qualname__ == "_TyperParameter.process_value"


@pytest.mark.parametrize("flag", ["--top-k", "--alpha"])
def test_given_numbers_still_go_through_typer(flag, tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["run", "m.onnx", "x.png", flag, "many"])
    assert result.exit_code == 2 and f"error: {flag} " in result.stderr and "'many'" in result.stderr
