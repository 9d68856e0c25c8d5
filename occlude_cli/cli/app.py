"""The `occlude` command: assembles the command modules into one Typer app. Holds no logic.

Usage errors (unknown flag, bad choice such as ``--score foo``) are printed as one ``error:`` line and
exit with code 2; every other error is one ``error:`` line and the code from :class:`ExitCode`.
"""

import atexit
import gc
import os
import sys
import threading

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 carries its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover  (older typer on click: the same classes, other types to mypy)
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment,no-redef]

from .._version import __version__
from ..errors import OccludeError, first_line
from . import analysis, report, run, validate
from .common import EXIT_CODES_TEXT, ExitCode, print_error, stdout


class OccludeGroup(TyperGroup):
    """Prints usage errors as one line (and where to find help) instead of a framed panel."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        standalone = kwargs.pop("standalone_mode", True)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError:
            if not standalone:
                raise
            return super().main(*args, standalone_mode=True, **kwargs)
        except UsageError as exc:
            if not standalone:
                raise
            command = exc.ctx.command_path if exc.ctx is not None else "occlude"
            print_error(f"{exc.format_message()} (see '{command} --help')")
            sys.exit(ExitCode.USAGE)
        except OccludeError as exc:  # a flag's parser (cli.parse) refused its value: one line, exit 1
            if not standalone:
                raise
            print_error(exc)
            sys.exit(ExitCode.ERROR)
        except typer.Abort:
            if not standalone:
                raise
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


app = typer.Typer(
    name="occlude",
    cls=OccludeGroup,
    help="Explain what an ONNX image classifier looks at, by occlusion sensitivity.\n\n"
    "Slides a patch over the image, replaces it by a baseline, and records how much the target class's "
    "score drops at each position. Writes heatmap overlays (PNG), raw scores (JSON) and maps (.npy).",
    epilog=EXIT_CODES_TEXT
    + " Environment: OCCLUDE_CACHE_DIR, where model facts and incremental-inference plans are cached (default"
    + " ~/.cache/occlude; off disables it); OCCLUDE_DEBUG=1 shows tracebacks of internal errors."
    + " Shell completion: occlude --install-completion.",
    add_completion=True,
    no_args_is_help=True,
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


app.command(epilog=run.RUN_EXAMPLES)(run.run)
app.command(epilog=run.SUMMARY_EXAMPLES)(run.summary)
app.command(epilog=run.INFO_EXAMPLES)(run.info)
app.command(name="compare", epilog=validate.COMPARE_EXAMPLES)(validate.compare)
app.command(name="check", epilog=validate.CHECK_EXAMPLES)(validate.check)
app.command(epilog=report.REPORT_EXAMPLES)(report.report)
app.command(epilog=analysis.LAYERS_EXAMPLES)(analysis.layers)
app.command(epilog=analysis.BIAS_EXAMPLES)(analysis.bias)
app.command(epilog=analysis.STABILITY_EXAMPLES)(analysis.stability)


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
    try:
        app(args=normalise_argv(sys.argv[1:]))
    except SystemExit as done:
        code = done.code
    except Exception as exc:  # a bug: say so in one line; OCCLUDE_DEBUG=1 shows the traceback
        if os.environ.get("OCCLUDE_DEBUG"):
            raise
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
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`occlude ... | head`): nothing more to say
                pass
        os._exit(status)


if __name__ == "__main__":
    main()
