"""Signals and closed pipes in the `occlude` command: exit 130 with one line, as README's exit codes say, and
never stop (or fail) because the reader of stdout or stderr has gone.

Importing the package and the command takes about half a second (numpy, Pillow, Typer); a SIGTERM in that
window used to kill the process with the default action (exit 143, no message), a Ctrl-C to print a
KeyboardInterrupt traceback. The console script installs one handler for both first thing
(:func:`install_early_signals`); :func:`end_start_up` gives Ctrl-C back to Python once the imports are done, and
each command replaces the SIGTERM handler with one that stops cleanly and writes a summary
(cli.common.user_errors). :func:`guard_closed_pipes` keeps a run going when its output goes into a pipe whose
reader has left (``occlude run ... 2>&1 | head -1``). Library users are left alone: nothing is installed unless the
process is the `occlude` command. Standard library only, so that it costs nothing to import.
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
    if name == "__main__.py":  # `python -m` once running: argv[0] is the module's file ("-m" while importing)
        folder = os.path.dirname(os.path.abspath(argv0))
        return os.path.basename(folder) == "occlude_cli" or folder.endswith(os.path.join("occlude_cli", "cli"))
    return name in ("occlude", "occlude.exe", "occlude-script.py") or argv0 == "-m"


def install_early_signals() -> None:
    """Exit 130 with one line on SIGTERM or Ctrl-C during start-up (only in the command, only from the main
    thread, only over the default actions: a SIGINT that the shell ignores, as for a background job, stays
    ignored)."""
    if not is_occlude_command():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated_early)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _terminated_early)
    except (ValueError, OSError):  # not the main thread
        pass


def end_start_up() -> None:
    """The imports are done: Ctrl-C raises KeyboardInterrupt again (:func:`raise_interrupt`, remembered), which
    every command turns into its own clean stop (the SIGTERM handler stays until a command installs its own)."""
    try:
        if signal.getsignal(signal.SIGINT) is _terminated_early:
            signal.signal(signal.SIGINT, raise_interrupt)
    except (ValueError, OSError):  # not the main thread
        pass


class OutputLost(OSError):
    """stdout could not take the command's output (a full disk, an I/O error): the output is incomplete, which
    must not pass for success (a reader that left, EPIPE, is no such error)."""


class _ReaderMayLeave:
    """A standard stream that drops what it is given once it cannot be written, instead of raising from whatever
    line of the run was printing: the run finishes and its files and summary are written. A reader that has gone
    (EPIPE) changes nothing else; stdout that fails otherwise (``> /dev/full``) raises :class:`OutputLost` once,
    so that the command says so and exits 1; stderr (diagnostics) never stops the command. The stream's file
    descriptor is pointed at the null device, so nothing written later (the last flush included) fails again."""

    def __init__(self, stream, diagnostics: bool) -> None:
        self._stream, self._diagnostics = stream, diagnostics

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._failed(exc)
            return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
        except (OSError, ValueError):  # no descriptor (a test's stream): later writes raise and are dropped again
            pass
        if not self._diagnostics and not isinstance(exc, BrokenPipeError):
            raise OutputLost(exc.errno, exc.strerror) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def hold_standard_fds() -> None:
    """File descriptors 0, 1 and 2 started closed (``occlude ... >&-``): each is held open on the null device, so
    that no file occlude opens gets that number (onnxruntime's and other libraries' messages to stdout or
    stderr would land in an output file); sys.stdout and sys.stderr then write there (nothing is shown)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False))


def guard_closed_pipes() -> None:
    """sys.stdout and sys.stderr never stop the command on a closed pipe, nor sys.stderr on any failed write
    (the command only: called by its entry point); see :class:`_ReaderMayLeave`."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _ReaderMayLeave):
            setattr(sys, name, _ReaderMayLeave(stream, diagnostics=name == "stderr"))


_INTERRUPTED = [False]  # a SIGTERM or Ctrl-C reached the command's handler (read by the command's error handler)


def raise_interrupt(signum, frame) -> None:
    """The commands' SIGTERM and Ctrl-C handler: raise KeyboardInterrupt. It is remembered, because an interrupt
    that lands in a library's import can come out as an ImportError (numpy turns anything raised while its C
    extension loads into 'import numpy failed'), which must not read as a missing package."""
    _INTERRUPTED[0] = True
    raise KeyboardInterrupt


def ignore_interrupts() -> None:
    """The command is exiting on an interrupt and says so once: a second Ctrl-C or SIGTERM changes nothing (the
    `occlude` command only: a process that runs commands in-process, such as a test, keeps its handlers)."""
    if not is_occlude_command():
        return
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread
        pass


def interrupted() -> bool:
    """Whether the command was interrupted (see :func:`raise_interrupt`)."""
    return _INTERRUPTED[0]


def reset_interrupted() -> None:
    """Forget an earlier interrupt (a command starting in a process that ran one before: tests)."""
    _INTERRUPTED[0] = False
