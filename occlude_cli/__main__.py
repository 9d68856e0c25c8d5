"""``python -m occlude_cli``: the same as the ``occlude`` command."""

from .cli.app import main

if __name__ == "__main__":
    main()
