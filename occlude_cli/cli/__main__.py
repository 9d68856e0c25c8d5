"""``python -m occlude_cli.cli``: the occlude command."""

from .app import main

main()
