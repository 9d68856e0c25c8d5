"""`occlude diff`: did the new model change what it looks at? (Typer only; the work is in
:mod:`occlude_cli.runs.diff`.)

Exit codes (for CI): 0 every gate passed; 4 a gate failed (an image below --min-rank-corr or --min-top-iou, or more
than --max-prediction-flips top-1 changes); 3 some image could not be diffed (takes precedence over 4); 1 error
before any image (models, flags, golden folder, output folder).
"""

from pathlib import Path
from typing import Annotated, Collection, List, Optional

import typer

from ..errors import OccludeError
from ..runs.events import RunEvents
from ..text import logfmt, shortened, shown
from . import parse
from .common import (
    CiFlags,
    ExitCode,
    ModelFlags,
    NullPaths,
    OcclusionFlags,
    Parsed,
    Recursive,
    RenderFlags,
    fail,
    json_option,
    one_line,
    out_option,
    print_error,
    print_json,
    print_note,
    quiet_option,
    stderr,
    stderr_is_terminal,
    stdout,
    user_errors,
    with_flags,
)
from .progress import RunDisplay
from .screen import Column, fitted_table

DIFF_EXAMPLES = """
occlude diff model.onnx model.int8.onnx images/ --min-rank-corr 0.9 -o diff/
occlude diff old.onnx new.onnx images/ --max-prediction-flips 0 --report
occlude run model.onnx images/ -o golden/ --patch 32  # once: the golden maps
occlude diff --golden golden/ model.onnx images/ --patch 32  # no old model
"""

DIFF_NOTES = """
Both models explain each image with the same windows, baseline and score, for the class A explains (--target, \
default A's top-1); each keeps its own preprocessing. Per image: OUT/STEM.diff.npy (B - A), STEM.a.npy, STEM.b.npy \
and STEM.diff.png (A | B | B - A, A and B on one colour limit); for the run OUT/diff.json and diff.csv.

[bold]Exit codes[/]: 0 all gates pass; 4 a gate failed; 3 some image could not be diffed (takes precedence over 4); \
1 error before any image.
"""


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


class DiffEvents(RunEvents):
    """diff's events: on a live terminal a bar that keeps its count and ETA (:class:`RunDisplay`); errors as they
    happen (also under --quiet / --json); elsewhere one logfmt line per finished image."""

    def __init__(self, quiet: bool, json_out: bool) -> None:
        self.silent = quiet or json_out
        self.live = stderr_is_terminal()
        self.display: Optional[RunDisplay] = None

    def note(self, text: str, params=()) -> None:
        if not self.silent:
            print_note(text, params)

    def problem(self, text: str, params=()) -> None:
        print_error(text, params=params)

    def started(self, total: Optional[int], skipping: Collection[str] = ()) -> None:
        self.display = RunDisplay(
            total, draw=not self.silent and self.live and (total is None or total > 1), label="diffing"
        )

    def image_started(self, image) -> None:
        if self.display is not None:
            self.display.image_started(shown(image.path.name or image.key), image.key)

    def image_done(self, image, row, params=()) -> None:
        if self.display is not None:
            self.display.image_done(row["status"] == "ok", image.key)
        if row["status"] == "error":
            print_error(f"{one_line(row['path'])}: {row['error']}", params=params)
        elif not self.silent and not self.live:
            line = logfmt(
                ("status", "ok"),
                ("image", row["path"]),
                ("rank_corr", _fmt(row["rank_corr"])),
                ("top_iou", _fmt(row["top_iou"])),
                ("top1_agrees", str(row["top1_agrees"]).lower()),
            )
            stderr.print(line, markup=False, highlight=False)

    def finished(self) -> None:
        if self.display is not None:
            self.display.stop()


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, render=RenderFlags, ci=CiFlags)
def diff(
    model_a: Path = typer.Argument(
        ...,
        metavar="MODEL_A",
        help="The reference model (.onnx, or a folder holding one); with --golden, the model to check.",
    ),
    rest: List[str] = typer.Argument(
        ...,
        metavar="MODEL_B PATH",
        help="The model to compare, then image files, folders or globs (with --golden: only the images).",
        show_default=False,
    ),
    golden: Optional[Path] = typer.Option(
        None,
        "--golden",
        metavar="DIR",
        rich_help_panel="Basics",
        help="Compare with the maps of an earlier 'occlude run ... --out DIR' instead of a second model.",
    ),
    min_rank_corr: Optional[float] = typer.Option(
        None,
        "--min-rank-corr",
        metavar="R",
        rich_help_panel="Gates",
        help="Fail an image whose two maps' Spearman rank correlation is below R.",
    ),
    min_top_iou: Optional[float] = typer.Option(
        None,
        "--min-top-iou",
        metavar="I",
        rich_help_panel="Gates",
        help="Fail an image whose two maps' top-10% pixels overlap (IoU) less than I.",
    ),
    max_prediction_flips: Optional[int] = typer.Option(
        None,
        "--max-prediction-flips",
        metavar="N",
        rich_help_panel="Gates",
        help="Fail the run when more than N images changed their top-1 prediction.",
    ),
    top_fraction: float = typer.Option(
        0.1,
        "--top-fraction",
        metavar="F",
        rich_help_panel="Gates",
        help="Share of pixels whose overlap (IoU) is measured.",
    ),
    out: Annotated[Path, out_option()] = Path("occlude-out"),
    recursive: Recursive = False,
    null: NullPaths = False,
    patch: Optional[Parsed] = typer.Option(
        None,
        parser=parse.size("--patch"),
        metavar="SIZE",
        help="Occluding patch, N or HxW \\[default: 1/14 of the input side].",
        rich_help_panel="Basics",
    ),
    report: bool = typer.Option(
        False, "--report", rich_help_panel="Output", help="Also write OUT/index.html, the HTML report's diff view."
    ),
    json_out: Annotated[bool, json_option("diff.json")] = False,
    quiet: Annotated[bool, quiet_option("No table; errors and failed gates still go to stderr.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    render: RenderFlags = None,  # type: ignore[assignment]
    ci: CiFlags = None,  # type: ignore[assignment]
) -> None:
    """Did the new model change what it looks at? Two models' maps (or golden maps) on the same images:
    predictions, rank correlation, top-10% IoU, SSIM, B - A maps and pictures, with CI gates."""
    from ..analyses.options import ExplainOptions
    from ..runs.diff import DiffSettings, diff_folder, diff_golden

    options = ExplainOptions(patch=patch, **occlusion.fields())
    settings = DiffSettings(min_rank_corr, min_top_iou, max_prediction_flips, top_fraction)
    given = dict(
        style=render.style(),
        model_options=model_flags.options(),
        recursive=recursive,
        null=null,
        report=report,
        events=DiffEvents(quiet, json_out),
        **ci.fields(),
    )
    if golden is not None:
        result = diff_golden(golden, model_a, rest, out, options, settings, **given)
    else:
        if len(rest) < 2:
            raise OccludeError(
                "missing arguments: occlude diff MODEL_A MODEL_B PATH... (or --golden DIR MODEL PATH...)"
            )
        result = diff_folder(model_a, rest[0], rest[1:], out, options, settings, **given)
    if json_out:
        print_json(result.document)
    elif not quiet:
        _print_diff(result.document, out)
    for row in result.rows:
        for failed in row.get("failed_gates") or []:
            metric = {"min_rank_corr": "rank correlation", "min_top_iou": "top IoU"}[failed["gate"]]
            print_error(
                f"{row['path']}: {metric} {_fmt(failed['value'])} below {failed['gate']} {failed['threshold']}",
                label="fail",
                params=(failed["gate"],),
            )
    gates = result.document["gates"]
    limit = gates["max_prediction_flips"]
    if limit is not None and gates["prediction_flips"] > limit:
        print_error(
            f"{gates['prediction_flips']} image(s) changed their top-1 prediction, more than {limit}",
            label="fail",
            params=("max_prediction_flips",),
        )
    if result.interrupted:
        raise fail("interrupted; diff.json holds the images diffed so far", ExitCode.INTERRUPTED)
    if result.failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)
    if result.gates_failed:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_diff(document: dict, out: Path) -> None:
    """diff's table on stdout, fitted to the width: numbers whole, the image name shortens first, the top-1
    classes (index and label) wrap, and at the narrowest |rank| and SSIM go."""
    rows = document["images"]
    columns = [
        Column("image", "name"),
        Column("A top-1", "label"),
        Column("B top-1", "label"),
        Column("rank", justify="right"),
        Column("|rank|", justify="right", keep=1),
        Column("IoU", justify="right"),
        Column("SSIM", justify="right", keep=2),
        Column("gates"),
    ]
    cells = []
    for row in rows:
        if row["status"] != "ok":
            cells.append([(row["path"], "")] + [("", "")] * 6 + [("error", "red")])
            continue
        flip = "red" if row["top1_agrees"] is False else ""
        cells.append(
            [
                (row["path"], ""),
                (
                    "n/a" if row["a_index"] is None else f"{row['a_index']} {shortened(row['a_label'] or '')}".strip(),
                    "",
                ),
                (f"{row['b_index']} {shortened(row['b_label'] or '')}".strip(), flip),
                (_fmt(row["rank_corr"]), ""),
                (_fmt(row["rank_corr_abs"]), ""),
                (_fmt(row["top_iou"]), ""),
                (_fmt(row["ssim"]), ""),
                ("fail", "red") if row.get("gates") == "fail" else ("pass", "green"),
            ]
        )
    stdout.print(fitted_table(f"occlude diff: {len(rows)} image(s) -> {out}/diff.json", columns, cells, stdout.width))
    gates, summary = document["gates"], document["summary"]
    stdout.print(
        f"top-1 changed on {gates['prediction_flips']} of {summary['ok']} image(s); rank correlation mean "
        f"{_fmt(summary['rank_corr']['mean'])}, min {_fmt(summary['rank_corr']['min'])}"
    )
