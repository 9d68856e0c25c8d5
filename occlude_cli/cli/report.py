"""`occlude report`: one static HTML page over an output folder (Typer only; the page is built by
:mod:`occlude_cli.outputs.report`)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import quiet_option, safe, stdout, user_errors

REPORT_EXAMPLES = """
occlude run model.onnx images/ -o out/ --aggregate && occlude report out/
occlude run model.onnx images/ -o out/ --report  # the same in one command
occlude check model.onnx scans/ -o out/ --min-energy 0.4 --report
"""

REPORT_NOTES = """
Writes OUT_DIR/index.html: the run's model and parameters, counts, the aggregate map, every image as a
thumbnail and in a sortable, filterable table (failures first); click an image for original | heatmap |
overlay. No network, no external files: images are referenced relatively, so OUT_DIR can be zipped as a CI
artifact or served statically. Exit codes: 0 written, 1 OUT_DIR is not an occlude output folder.
"""


@user_errors
def report(
    out_dir: Annotated[Path, typer.Argument(help="An occlude output folder (of run, check and/or compare).")],
    title: Annotated[
        Optional[str], typer.Option(help="Page title \\[default: 'occlude report: FOLDER'].", rich_help_panel="Basics")
    ] = None,
    quiet: Annotated[bool, quiet_option("Print nothing.")] = False,
) -> None:
    """Write OUT_DIR/index.html: one static page with counts, a sortable table and the pictures."""
    from ..outputs.report import build_report

    path = build_report(out_dir, title=title)
    if not quiet:
        stdout.print(f"wrote {safe(str(path))}")
