"""The command line: a thin Typer layer over the library (one module per command group)."""

from .._signals import install_early_signals

install_early_signals()  # SIGTERM or Ctrl-C during start-up: exit 130 (see occlude_cli._signals)

from .app import app, main  # noqa: E402

__all__ = ["app", "main"]
