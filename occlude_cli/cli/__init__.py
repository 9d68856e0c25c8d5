"""The command line: a thin Typer layer over the library (one module per command group)."""

from .app import app, main

__all__ = ["app", "main"]
