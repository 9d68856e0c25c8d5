"""Sphinx configuration of occlude's manual: Markdown pages (MyST), the API reference from the docstrings.

Build from the repository root, warnings as errors (as CI does):
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout's occlude_cli, not another installed copy

from occlude_cli import __version__  # noqa: E402

project = "occlude"
author = "the occlude developers"
copyright = "the occlude developers, Apache-2.0"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "**/__pycache__"]

# MyST: GitHub-style heading anchors, so that links such as `run.md#baselines` work in the built manual and
# on GitHub alike.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# The API reference: the package's public names (occlude_cli.__all__), in source order, with type hints
# in the descriptions.
autodoc_default_options = {"members": True, "member-order": "bysource", "undoc-members": False}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "furo"
html_title = f"occlude {release}"
html_static_path: list[str] = []
pygments_style = "friendly"


def _package_docstring(app, what, name, obj, options, lines):
    """The API reference page introduces the package itself; the package docstring (a note for readers of the
    source) is left out of it."""
    if what == "module" and name == "occlude_cli":
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _package_docstring)
    return {"parallel_read_safe": True}
