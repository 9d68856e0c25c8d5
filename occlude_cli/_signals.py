"""SIGTERM during start-up: the `occlude` command exits 130 with one line, as README's exit codes say.

Importing the package and the command takes about half a second (numpy, Pillow, Typer); a SIGTERM in that
window used to kill the process with the default action (exit 143, no message). The console script installs
this handler first thing; each command then replaces it with one that stops cleanly and writes a summary
(cli.common.user_errors). Library users are left alone: nothing is installed unless the process is the
`occlude` command. Standard library only, so that it costs nothing to import.
"""

import os
import signal
import sys


def _terminated_early(signum, frame) -> None:
    sys.stderr.write("error: interrupted during start-up; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)


def is_occlude_command() -> bool:
    """True when this process is the `occlude` console script or `python -m occlude_cli[.cli]`."""
    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    return name in ("occlude", "occlude.exe", "occlude-script.py") or argv0 == "-m"


def install_early_sigterm() -> None:
    """Exit 130 with one line on SIGTERM until a command installs its own handler (only in the command,
    only from the main thread, only over the default action)."""
    if not is_occlude_command():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated_early)
    except (ValueError, OSError):  # not the main thread
        pass


_INTERRUPTED = [False]  # a SIGTERM or Ctrl-C reached the command's handler (read by the command's error handler)


def raise_interrupt(signum, frame) -> None:
    """The commands' SIGTERM handler: stop like Ctrl-C. It is remembered, because an interrupt that lands in a
    library's import can come out as an ImportError (numpy turns anything raised while its C extension loads
    into 'import numpy failed'), which must not read as a missing package."""
    _INTERRUPTED[0] = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether the command was interrupted (see :func:`raise_interrupt`)."""
    return _INTERRUPTED[0]


def reset_interrupted() -> None:
    """Forget an earlier interrupt (a command starting in a process that ran one before: tests)."""
    _INTERRUPTED[0] = False
