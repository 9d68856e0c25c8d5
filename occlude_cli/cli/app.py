"""The `occlude` command: assembles the command modules into one Typer app. Holds no logic.

Usage errors (unknown flag, bad choice such as ``--score foo``, a flag without its value) are printed as one
``error:`` line in occlude's words (:mod:`occlude_cli.cli.usage`) and exit with code 2; every other error is one
``error:`` line and the code from :class:`ExitCode`. The help of every command is drawn by
:mod:`occlude_cli.cli.helptext` (examples first, flags in panels); bare ``occlude`` prints it and exits 0.
"""

import atexit
import contextlib
import gc
import os
import sys
import threading

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.24 carries its own click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover  (older typer on click: the same classes, other types to mypy)
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment,no-redef]

from .._signals import OutputLost, end_start_up, guard_closed_pipes, ignore_interrupts, interrupted
from .._version import __version__
from ..errors import OccludeError, first_line
from ..outputs.provenance import set_command_line
from . import analysis, diff, helptext, report, run, sanity, usage, validate
from ._fast_typer import install_fast_coercion
from .common import EXIT_CODES_TEXT, ExitCode, print_error, stdout

install_fast_coercion()  # option values converted without pydantic where the result is the same

MAIN_EXAMPLES = """
occlude run sample_models/efficientnet_lite0.onnx sample_images/cat.jpg
occlude run model.onnx photos/ -r -o maps/ --report  # with an HTML report
occlude info model.onnx  # what occlude reads from a model
occlude check model.onnx data/ --require-peak  # CI: the right place?
occlude run --help  # every flag of a command
"""


class OccludeGroup(TyperGroup):
    """Prints usage errors as one line in occlude's words (:mod:`occlude_cli.cli.usage`: the flag, what it takes,
    which help to read) instead of a framed panel, and draws the help itself (:mod:`occlude_cli.cli.helptext`).
    Bare ``occlude`` prints the help and exits 0."""

    def main(self, args=None, *more, **kwargs):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        set_command_line(["occlude", *args])  # recorded in each run's own documents
        try:
            return self._main(args, *more, **kwargs)
        finally:
            set_command_line(None)  # a library call after this command (in one process) has no command line

    def _main(self, args, *more, **kwargs):
        standalone = kwargs.pop("standalone_mode", True)
        args = args or ["--help"]
        kwargs.setdefault("prog_name", "occlude")
        try:
            _refuse_empty_out(args)
            result = super().main(args, *more, standalone_mode=False, **kwargs)
        except UsageError as exc:
            if not standalone:
                raise
            where = usage.command_path(exc, args, list(self.commands), kwargs["prog_name"])
            print_error(f"{usage.message(exc)} (see '{where} --help')")
            sys.exit(ExitCode.USAGE)
        except OccludeError as exc:  # a flag's parser (cli.parse) refused its value: one line, exit 1
            if not standalone:
                raise
            print_error(exc)
            sys.exit(ExitCode.ERROR)
        except typer.Abort:
            if not standalone:
                raise
            ignore_interrupts()
            print_error("interrupted")
            sys.exit(ExitCode.INTERRUPTED)
        except ClickException as exc:
            if not standalone:
                raise
            print_error(exc.format_message())
            sys.exit(exc.exit_code)
        if standalone:
            sys.exit(result if isinstance(result, int) else 0)
        return result

    def make_context(self, *args, **kwargs):  # type: ignore[override]
        with _ctrl_c_is_abort():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # type: ignore[override]
        with _ctrl_c_is_abort():  # the command's flags parsed, its wrappers before its own error handling
            return super().invoke(ctx)

    def format_help(self, ctx, formatter) -> None:  # type: ignore[override]
        helptext.print_help(self, ctx)


@contextlib.contextmanager
def _ctrl_c_is_abort():
    """Ctrl-C outside a command's own handling is typer.Abort, one 'interrupted' line (Typer turns a
    KeyboardInterrupt into a silent exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Abort() from None


def _refuse_empty_out(args) -> None:
    """``-o ""`` would be the current folder (Path("") is "."): a usage error, never a silent write there."""
    for i, arg in enumerate(args):
        if arg == "--":
            return
        if arg in ("--out=", "-o=") or (arg in ("-o", "--out") and i + 1 < len(args) and not str(args[i + 1]).strip()):
            raise UsageError("-o/--out is empty: name an output folder")


class OccludeCommand(TyperCommand):
    """A command whose help occlude draws (:func:`occlude_cli.cli.helptext.print_help`)."""

    def format_help(self, ctx, formatter) -> None:  # type: ignore[override]
        helptext.print_help(self, ctx)


app = typer.Typer(
    name="occlude",
    cls=OccludeGroup,
    help="Explain what an ONNX image classifier looks at, by occlusion sensitivity.\n\n"
    "Slides a patch over the image, replaces it by a baseline, and records how much the target class's "
    "score drops at each position. Writes heatmap overlays (PNG), raw scores (JSON) and maps (.npy).",
    epilog=EXIT_CODES_TEXT
    + "\n\nEnvironment: OCCLUDE_CACHE_DIR, where model facts and incremental-inference plans are cached (default"
    + " ~/.cache/occlude; off disables it); OCCLUDE_DEBUG=1 shows tracebacks of internal errors; NO_COLOR and"
    + " FORCE_COLOR switch colours off and on; TERM=dumb or CI give one line per image instead of live bars."
    + " Shell completion: occlude --install-completion. Bare `occlude` prints this help (exit 0).",
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"occlude {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Explain what an ONNX image classifier looks at, by occlusion sensitivity."""


def command(function, examples: str, notes: str = "", name: str = "") -> None:
    """Add a command (its help drawn by occlude, its examples first, ``notes`` last)."""
    name = name or function.__name__
    helptext.EXAMPLES[name] = examples
    app.command(name=name, cls=OccludeCommand, epilog=notes or None)(function)


helptext.EXAMPLES[""] = MAIN_EXAMPLES
command(run.run, run.RUN_EXAMPLES, run.RUN_NOTES)
command(run.summary, run.SUMMARY_EXAMPLES)
command(run.info, run.INFO_EXAMPLES)
command(validate.compare, validate.COMPARE_EXAMPLES, validate.COMPARE_NOTES)
command(validate.check, validate.CHECK_EXAMPLES, validate.CHECK_NOTES)
command(diff.diff, diff.DIFF_EXAMPLES, diff.DIFF_NOTES)
command(report.report, report.REPORT_EXAMPLES, report.REPORT_NOTES)
command(analysis.layers, analysis.LAYERS_EXAMPLES, analysis.LAYERS_NOTES)
command(analysis.bias, analysis.BIAS_EXAMPLES, analysis.BIAS_NOTES)
command(analysis.stability, analysis.STABILITY_EXAMPLES, analysis.STABILITY_NOTES)
command(sanity.sanity, sanity.SANITY_EXAMPLES, sanity.SANITY_NOTES)


def normalise_argv(argv: list) -> list:
    """`--ray` given alone (last, or followed by another option) means `--ray local`: Typer has no options
    with an optional value."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("local")
    return out


def main() -> None:
    """Console entry point: Typer, plus a last guard so that no traceback reaches the user."""
    gc.freeze()  # the imports' objects (the package turned the collector off for them) are never garbage
    gc.enable()
    guard_closed_pipes()  # `occlude ... | head -1`: the reader leaving never stops the run nor changes its exit code
    end_start_up()  # Ctrl-C is KeyboardInterrupt again: each command stops cleanly on it
    try:
        app(args=normalise_argv(sys.argv[1:]), prog_name="occlude")
    except SystemExit as done:
        code = done.code
    except KeyboardInterrupt:  # between start-up and a command's own handling (Typer building the command)
        ignore_interrupts()
        print_error("interrupted")
        code = ExitCode.INTERRUPTED
    except OutputLost as exc:  # `occlude ... --json > /dev/full`: the output is incomplete, never a success
        print_error(f"cannot write to stdout: {exc.strerror}")
        code = ExitCode.ERROR
    except Exception as exc:  # a bug: say so in one line; OCCLUDE_DEBUG=1 shows the traceback
        if os.environ.get("OCCLUDE_DEBUG"):
            raise
        if interrupted():  # an interrupt that surfaced as another exception (an import it landed in)
            ignore_interrupts()
            print_error("interrupted")
            code = ExitCode.INTERRUPTED
        else:
            print_error(f"{type(exc).__name__}: {first_line(exc)} (set OCCLUDE_DEBUG=1 for details)", "internal error")
            code = ExitCode.ERROR
    else:
        code = 0
    exit_now(code)


def exit_now(code) -> None:
    """Exit with ``code`` (``sys.exit``'s meaning) without the interpreter's teardown of every module and
    object, which costs a one-image run 60-100 ms, a tenth of its time. What exiting must do is still done:
    atexit handlers run (Ray's shutdown among them) and stdout/stderr are flushed; every file occlude writes
    is complete and renamed into place before this point. Falls back to a normal exit when a thread other
    than the main one is still running (it would be waited for) and under a profiler or tracer."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    if sys.getprofile() is not None or sys.gettrace() is not None:  # cProfile, a debugger, coverage: they
        sys.exit(code)  # finish their work after the program returns
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = int(code) & 0xFF
    else:  # sys.exit("message"): the message on stderr, status 1
        sys.stderr.write(f"{code}\n")
        status = 1
    try:
        atexit._run_exitfuncs()
    finally:
        os._exit(_flushed(status))


def _flushed(status: int) -> int:
    """stdout and stderr flushed; ``status``, or 1 when what stdout still held could not be written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OutputLost as exc:
            print_error(f"cannot write to stdout: {exc.strerror}")
            status = status or int(ExitCode.ERROR)
        except (OSError, ValueError):  # a closed pipe (`occlude ... | head`): nothing more to say
            pass
    return status


if __name__ == "__main__":
    main()
