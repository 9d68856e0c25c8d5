"""The version, read once from the installed distribution's metadata (pyproject.toml is the one source)."""

from importlib import metadata

try:
    __version__ = metadata.version("occlude")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
