"""The one exception type occlude raises for bad input, and how a message names a parameter.

Its message is a single line meant for the user: the CLI prints it in red and exits non-zero, a library user
catches it like any other exception. A message about a parameter names it as Python spells it (``patch``,
``top_k``, ``max_memory``) and lists it in ``params``; the command line shows the flag that sets it instead
(:func:`in_words`, with the CLI's one table of flags).
"""

import re
from typing import Callable, Sequence, Tuple


class OccludeError(Exception):
    """Bad input or an unusable model/image: the message says what and, where possible, how to fix it.

    ``params``: the parameters the message names (each once, as a whole word), so that a front end can name
    them in its own words (the CLI: its flags)."""

    def __init__(self, message: str = "", *, params: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)

    def __reduce__(self):  # pickled with its params (a Ray worker's error reaches the driver whole)
        return _rebuild, (type(self), self.args, self.__dict__)


class RunWideError(OccludeError):
    """An error that every input of the run would give the same way (the model or the options, found at the
    first input, e.g. ``incremental on`` for a graph that cannot be split): a folder run stops with it, as an
    error before any input would, instead of failing each input with the same line."""


class InputsFailed(OccludeError):
    """No input of a list could be used (each one's error was told as it was found): the inputs failed, not the
    call's parameters. The command line exits 3 for it, as for a folder run whose every image failed."""


def _rebuild(cls, args, state):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class Notice(str):
    """A message for the user that is not an error (a warning about one input's result: a saturated score, an
    all-zero map): a ``str`` in the library's words, naming parameters as :class:`OccludeError` does
    (``params``), with a ``key`` saying which kind of warning it is, so that a front end can show each kind once
    per run however many inputs it concerns. Written into JSON and CSV files as its text."""

    key: str
    params: Tuple[str, ...]

    def __new__(cls, text: str, *, key: str, params: Sequence[str] = ()) -> "Notice":
        notice = super().__new__(cls, text)
        notice.key = key
        notice.params = tuple(params)
        return notice

    def __reduce__(self):  # pickled with its key and params (a Ray worker's explanation reaches the driver whole)
        return _notice, (str(self), self.key, self.params)


def _notice(text: str, key: str, params: Tuple[str, ...]) -> Notice:
    return Notice(text, key=key, params=params)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line reports."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def in_words(message: str, params: Sequence[str], word: Callable[[str], str]) -> str:
    """``message`` with each parameter of ``params`` named by ``word(param)`` instead (e.g. its flag), outside
    quotes ('...', where outside text such as a file name stands). A name with an underscore (``top_k``) cannot
    be an ordinary word: every occurrence is replaced; an ordinary word (``patch``, ``channels``) only where the
    message first names it, so that a message may still use the word for the thing ("the patch height")."""
    parts = re.split(r"('[^']*')", message)  # odd parts: quoted text, left alone
    for param in params:
        pattern = re.compile(rf"(?<![\w.-]){re.escape(param)}(?![\w-])")
        left, text = (-1 if "_" in param else 1), word(param)
        for i in range(0, len(parts), 2):
            if left == 0:
                break
            parts[i], done = pattern.subn(lambda _, text=text: text, parts[i], count=max(left, 0))
            left -= done if left > 0 else 0
    return "".join(parts)


def shown_apart(value: float, limit: float, value_text: str = "", limit_text: str = "") -> tuple:
    """``value`` and ``limit`` as text for a verdict ("53.3333 > 53.33"): as given (``value_text`` default 4
    significant digits, ``limit_text`` default ``:g``), with more digits for both when the texts would not
    compare as the numbers do; a failing threshold never reads "53.33 > 53.33" (nor "53.33 > 53.3301")."""

    def order(x: float, y: float) -> int:
        return (x > y) - (x < y)

    a, b = value_text or f"{value:.4g}", limit_text or f"{limit:g}"
    want = order(float(value), float(limit))
    if order(float(a), float(b)) == want:
        return a, b
    for digits in range(5, 18):
        a, b = f"{value:.{digits}g}", f"{limit:.{digits}g}"
        if order(float(a), float(b)) == want:
            return a, b
    return repr(float(value)), repr(float(limit))
