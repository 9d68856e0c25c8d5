"""The command line: a thin Typer layer over the library (one module per command group)."""

import os
import signal
import sys


def _terminated_early(signum, frame):  # SIGTERM before a command installs its own handler: nothing written yet
    sys.stderr.write("error: interrupted during start-up; nothing was written\n")
    os._exit(130)


try:  # first thing, before the imports below (about half a second): SIGTERM then exits 130, as README says
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated_early)
except ValueError:  # not the main thread (imported by a library user): leave signals alone
    pass

from .app import app, main  # noqa: E402

__all__ = ["app", "main"]
