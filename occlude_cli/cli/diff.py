"""`occlude diff`: did the new model change what it looks at? (Typer only; the work is in
:mod:`occlude_cli.runs.diff`.)

Exit codes (for CI): 0 every gate passed; 4 a gate failed (an image below --min-rank-corr or --min-top-iou, or more
than --max-prediction-flips top-1 changes); 3 some image could not be diffed (takes precedence over 4); 1 error
before any image (models, flags, golden folder, output folder).
"""

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..errors import OccludeError
from ..runs.events import RunEvents
from . import parse
from .common import (
    CiFlags,
    ExitCode,
    ModelFlags,
    OcclusionFlags,
    Parsed,
    RenderFlags,
    fail,
    print_error,
    print_json,
    print_note,
    safe,
    stderr,
    stderr_is_terminal,
    stdout,
    user_errors,
    with_flags,
)
from .show import shorten_path

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
    """diff's events: notes unless --quiet or --json; errors always; in a CI log one line per image."""

    def __init__(self, quiet: bool, json_out: bool) -> None:
        self.silent = quiet or json_out

    def note(self, text: str, params=()) -> None:
        if not self.silent:
            print_note(text, params)

    def problem(self, text: str, params=()) -> None:
        print_error(text, params=params)

    def image_done(self, image, row, params=()) -> None:
        if row["status"] == "error":
            print_error(f"{row['path']}: {row['error']}")
        elif not self.silent and not stderr_is_terminal():
            stderr.print(safe(f"ok {row['path']} rank_corr={_fmt(row['rank_corr'])} top1_agrees={row['top1_agrees']}"))


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, render=RenderFlags, ci=CiFlags)
def diff(
    model_a: Path = typer.Argument(
        ..., metavar="MODEL_A", help="The reference model (.onnx); with --golden, the model to check."
    ),
    rest: List[str] = typer.Argument(
        ...,
        metavar="MODEL_B PATH...",
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
        0.1, "--top-fraction", rich_help_panel="Gates", help="Share of pixels whose overlap (IoU) is measured."
    ),
    out: Path = typer.Option(Path("occlude-out"), "--out", "-o", help="Output folder."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folder arguments."),
    patch: Optional[Parsed] = typer.Option(
        None,
        parser=parse.size("--patch"),
        metavar="SIZE",
        help="Occluding patch, N or HxW \\[default: 1/14 of the input side].",
    ),
    report: bool = typer.Option(
        False, "--report", rich_help_panel="Output", help="Also write OUT/index.html, the HTML report's diff view."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print diff.json on stdout (nothing else)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table; errors and failed gates still go to stderr."),
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
    rows = document["images"]
    table = Table(title=safe(f"occlude diff: {len(rows)} image(s) -> {out}/diff.json"), title_justify="left")
    table.add_column("image", no_wrap=True)
    for column in ("A top-1", "B top-1", "rank", "|rank|", "IoU", "SSIM", "gates"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        name = safe(shorten_path(row["path"], 28))
        if row["status"] != "ok":
            table.add_row(name, "", "", "", "", "", "", "[red]error[/]")
            continue
        table.add_row(
            name,
            "n/a" if row["a_index"] is None else str(row["a_index"]),
            str(row["b_index"]) if row["top1_agrees"] is not False else f"[red]{row['b_index']}[/]",
            _fmt(row["rank_corr"]),
            _fmt(row["rank_corr_abs"]),
            _fmt(row["top_iou"]),
            _fmt(row["ssim"]),
            "[red]fail[/]" if row.get("gates") == "fail" else "pass",
        )
    stdout.print(table)
    gates, summary = document["gates"], document["summary"]
    stdout.print(
        f"top-1 changed on {gates['prediction_flips']} of {summary['ok']} image(s); rank correlation mean "
        f"{_fmt(summary['rank_corr']['mean'])}, min {_fmt(summary['rank_corr']['min'])} (labels in diff.csv)"
    )
