"""The version: this line is the one source (pyproject.toml reads it through setuptools' ``attr:``).

A literal rather than ``importlib.metadata.version("occlude")``: that import costs about 40 ms, which every
`occlude` call (and every CI job calling it once per image) would pay before doing anything."""

__version__ = "0.1.0"
