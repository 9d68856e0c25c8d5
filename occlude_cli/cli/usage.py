"""Usage errors in occlude's own words: the flag named, what it takes, a near miss suggested, and which help to
read (``see 'occlude run --help'``). No wording of the validation library or the argument parser reaches the
user ("Input should be a valid integer", "Value error, 'foo' is not one of")."""

from __future__ import annotations

import difflib
import enum
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

try:  # typer >= 0.24 carries its own click
    from typer._click.exceptions import BadOptionUsage, BadParameter, MissingParameter, NoSuchOption, UsageError
except ImportError:  # pragma: no cover  (older typer on click)
    from click.exceptions import (  # type: ignore[assignment,no-redef]
        BadOptionUsage,
        BadParameter,
        MissingParameter,
        NoSuchOption,
        UsageError,
    )

from ..text import shown
from .helptext import argument_name


def command_path(exc: UsageError, argv: Sequence[str], commands: Sequence[str], program: str = "occlude") -> str:
    """The command whose help to read: the error's own, else the first command named on the command line
    (an option missing its value is reported before the command's context exists)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(ctx, "command_path", None) and len(ctx.command_path.split()) > 1:
        return ctx.command_path
    for arg in argv:
        if arg in commands:
            return f"{program} {arg}"
        if not arg.startswith("-"):
            break
    return ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else program


def message(exc: UsageError) -> str:
    """The error in occlude's words (without the pointer to the help)."""
    if isinstance(exc, MissingParameter):
        return _missing(exc)
    if isinstance(exc, BadParameter):
        return _bad_value(exc)
    if isinstance(exc, NoSuchOption):
        near = [p for p in (exc.possibilities or []) if p]
        hint = f"; did you mean {_either(near)}?" if near else ""
        return f"no such option {exc.option_name}{hint}"
    if isinstance(exc, BadOptionUsage):
        text = exc.format_message()
        if "requires an argument" in text:
            return f"{exc.option_name} needs a value"
        if "does not take a value" in text:
            return f"{exc.option_name} takes no value (it is a switch)"
        return _plain(text)
    return _plain(exc.format_message())


def _plain(text: str) -> str:
    """A parser message as one line, its first letter small (every error line reads 'error: no such ...')."""
    text = " ".join(str(text).split()).rstrip(".")
    text = text.replace("No such command", "no such command")
    extra = re.fullmatch(r"Got unexpected extra arguments?(?:\(s\))? \((.*)\)", text)
    if extra:  # the arguments, as given (outside text)
        text = f"unexpected extra argument(s): {shown(extra.group(1))}"
    return text.replace(". Did you mean", "; did you mean") + ("?" if "did you mean" in text else "")


def _either(names: Sequence[str]) -> str:
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _name(param) -> str:
    if param is None:
        return "a value"
    if getattr(param, "param_type_name", "") == "argument":
        return argument_name(param)
    opts = sorted(getattr(param, "opts", []) or [param.name], key=lambda o: (not o.startswith("--"), o))
    return opts[0]


def _missing(exc: MissingParameter) -> str:
    param = exc.param
    if param is not None and getattr(param, "param_type_name", "") == "argument":
        return f"missing argument {argument_name(param)}{'...' if param.nargs != 1 else ''}"
    return f"missing option {_name(param)}, which is required"


def _given(exc: BadParameter) -> Any:
    """The value the user typed, from the validation error behind ``exc`` (None when unknown)."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
        except (IndexError, TypeError, ValueError):
            return None
        return first.get("input")
    return None


def _kind(param) -> tuple:
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None)
    annotation = getattr(descriptor, "annotation", None)
    return choices, annotation


def _bad_value(exc: BadParameter) -> str:
    param = exc.param
    flag = _name(param)
    given = _given(exc)
    got = f", got {shown(repr(str(given)))}" if given is not None else ""
    choices, annotation = _kind(param)
    if choices:
        names = [str(c.value if isinstance(c, enum.Enum) else c) for c in choices]
        near = difflib.get_close_matches(str(given), names, n=1) if given is not None else []
        hint = f"; did you mean {near[0]}?" if near else ""
        return f"{flag} takes {_either(names)}{got}{hint}"
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if annotation in (int, float):
        what = "a whole number" if annotation is int else "a number"
        return f"{flag} takes {what}{_range(low, high)}{got}"
    if annotation is Path or (isinstance(annotation, type) and issubclass(annotation, Path)):
        return f"{flag} takes a file or folder path{got}"
    return f"{flag} does not take this value{got}"


def _range(low: Optional[float], high: Optional[float]) -> str:
    def text(v: float) -> str:
        return str(int(v)) if float(v).is_integer() and math.isfinite(v) else str(v)

    if low is not None and high is not None:
        return f" from {text(low)} to {text(high)}"
    if low is not None:
        return f" of at least {text(low)}"
    if high is not None:
        return f" of at most {text(high)}"
    return ""
