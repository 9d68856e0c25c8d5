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
