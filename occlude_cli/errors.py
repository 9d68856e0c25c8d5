"""The one exception type occlude raises for bad input.

Its message is a single line meant for the user: the CLI prints it in red and exits non-zero,
a library user catches it like any other exception.
"""


class OccludeError(Exception):
    """Bad input or an unusable model/image: the message says what and, where possible, how to fix it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line reports."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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
