"""`occlude compare` and `occlude check`: the validation commands (Typer only; the work is in
:mod:`occlude_cli.runs.compare` and :mod:`occlude_cli.runs.check`).

Exit codes of `occlude check` (for CI): 0 every image passed; 4 at least one image failed the check
(the model looks elsewhere); 3 at least one image could not be checked (unreadable image, missing mask,
box outside the image; takes precedence over 4); 1 error before any image (model, flags, output folder).
"""

from pathlib import Path
from typing import Annotated, Collection, List, Optional, Tuple

import typer
from rich.table import Table

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
    in_flags,
    json_option,
    one_line,
    out_option,
    print_error,
    print_json,
    print_note,
    print_warning,
    quiet_option,
    safe,
    stderr,
    stderr_is_terminal,
    stdout,
    user_errors,
    with_flags,
)
from .medicalflags import DEIDENTIFY_OPTION, REGIONS_OPTION, MedicalInputFlags
from .progress import RunDisplay
from .show import shorten_path

COMPARE_EXAMPLES = """
occlude compare model.onnx cat.jpg gradcam.npy
occlude compare model.onnx cat.jpg rise.png --patch 32 --target 285 -o cmp/
occlude compare model.onnx cat.jpg map.npy --deletion-baseline black  # Petsiuk
occlude compare model.onnx images/ --maps gradcam_maps/ -r  # a folder, with CIs
occlude compare lesion3d.onnx scan.nii.gz other.nii.gz --fractions ""  # a volume
"""

COMPARE_NOTES = """
OTHER_MAP is a 2-D .npy array (singleton axes are dropped) or a greyscale PNG of any resolution: it is resized to the \
model input (a map the size of the original image is cropped like the image first). Higher values mean more important.

DICOM slices (2-D models) take the same maps. NIfTI volumes and DICOM series (--series) with 3-D models take a (D, H, \
W) .npy in occlude's layout (axial slices, as occlude's STEM.npy) covering the input, any resolution, or a NIfTI map \
(.nii/.nii.gz), placed on the model grid through its affine (world coordinates): e.g. another tool's map saved on the \
scan's grid.

Writes OUT/STEM.compare.json (agreement, curves, AUCs) and OUT/STEM.compare.png (both maps and the curves). Deletion \
AUC: lower is better; insertion AUC: higher is better.
"""

CHECK_EXAMPLES = """
occlude check model.onnx dog.jpg --box 40,30,200,180 --min-energy 0.5
occlude check model.onnx dog.jpg --mask dog_region.png --require-peak
occlude check model.onnx data/ --require-peak  # masks: data/NAME.mask.png
occlude check model.onnx data/ -r --masks masks/ --json -q | jq .counts
"""

CHECK_NOTES = """
[bold]Regions[/]: --box x0,y0,x1,y1 in original image pixels; or --mask FILE, an image whose white (grey >= 128) \
pixels mark the region (transparent pixels are outside: RGBA, LA and palette masks count as they look over black), \
stretched over the original image; or per image: --masks DIR with DIR/<relative name>.png, or by default the file next\
 to the image named NAME.mask.png (files named *.mask.png are never taken as inputs).

[bold]Exit codes[/]: 0 all images pass; 4 some image fails the check (a CI job fails on a model that learned a \
shortcut); 3 some image could not be checked (takes precedence over 4); 1 error before any image (model, flags, output\
 folder). Without --min-energy or --require-peak every image passes.
"""


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _shown(value) -> str:
    """A number of compare's table and summary line; "n/a" where it is undefined (a constant map's correlation)."""
    return _fmt(value) or "n/a"


class CompareEvents(RunEvents):
    """compare's events: notes unless --quiet or --json; in a CI log one line per compared input."""

    def __init__(self, quiet: bool, json_out: bool) -> None:
        self.silent = quiet or json_out

    def note(self, text: str, params=()) -> None:
        if not self.silent:
            print_note(text, params)

    def problem(self, text: str, params=()) -> None:
        print_error(text, params=params)

    def image_done(self, image, row, params=()) -> None:
        if row["status"] == "error":
            print_error(f"{one_line(str(row['path']))}: {row['error']}")
        elif not self.silent and not stderr_is_terminal():
            stderr.print(logfmt(("status", "ok"), ("image", str(row["path"]))), markup=False, highlight=False)


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, medical=MedicalInputFlags)
def compare(
    model: Path = typer.Argument(..., help="ONNX classifier (.onnx), or a folder holding one."),
    image: Path = typer.Argument(..., help="The image the other map explains, or a folder of images (with --maps)."),
    other_map: Optional[Path] = typer.Argument(
        None,
        help="The other method's map: 2-D .npy or greyscale PNG, any resolution (not with --maps); for a 3-D model a "
        "(D, H, W) .npy in occlude's layout or a NIfTI map (placed by its affine).",
    ),
    maps: Optional[Path] = typer.Option(
        None,
        "--maps",
        help="Folder mode: IMAGE is a folder and the other map of IMAGE/rel/a.jpg is MAPS/rel/a.npy (or .png); "
        "per-image rows and dataset means with 95% bootstrap intervals in compare.json/.csv.",
        rich_help_panel="Basics",
    ),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Folder mode: look into sub-folders.", rich_help_panel="Basics"
    ),
    out: Annotated[Path, out_option()] = Path("occlude-out"),
    name: Optional[str] = typer.Option(
        None,
        help="Name of the other method in the PNG and JSON \\[default: the map's file name].",
        rich_help_panel="Basics",
    ),
    steps: int = typer.Option(
        50, help="Deletion/insertion steps (each curve costs steps+1 forward passes).", rich_help_panel="Basics"
    ),
    top_fraction: float = typer.Option(
        0.1, "--top-fraction", help="Share of pixels whose overlap (IoU) is reported.", rich_help_panel="Basics"
    ),
    fractions: Parsed = typer.Option(
        "1,2,5,10,20,50",
        "--fractions",
        parser=parse.percents("--fractions"),
        metavar="PERCENTS",
        help="Top-k percentages for sufficiency and completeness (a forward pass each); empty: skip them and "
        "infidelity.",
        rich_help_panel="Basics",
    ),
    map_kind: str = typer.Option(
        "attribution",
        "--map-kind",
        help="How the other map predicts a score change, for infidelity: attribution (Grad-CAM, IG, SHAP, LIME: "
        "summed over a window) or gradient (saliency: times input - baseline first).",
        rich_help_panel="Basics",
    ),
    deletion_baseline: Optional[str] = typer.Option(
        None,
        "--deletion-baseline",
        help="What deleted pixels become \\[default: --baseline]; also the baseline of sufficiency and completeness.",
        rich_help_panel="Basics",
    ),
    insertion_baseline: Optional[str] = typer.Option(
        None,
        "--insertion-baseline",
        help="What insertion starts from \\[default: --baseline].",
        rich_help_panel="Basics",
    ),
    patch: Optional[Parsed] = typer.Option(
        None,
        parser=parse.size("--patch"),
        metavar="SIZE",
        help="Occluding patch, N, HxW or DxHxW for 3-D models \\[default: 1/14 of the input side].",
        rich_help_panel="Basics",
    ),
    box: Optional[Parsed] = typer.Option(
        None,
        parser=parse.box("--box"),
        metavar="x0,y0,x1,y1",
        help="Region (original image pixels): relevance mass and rank accuracy of both maps inside it.",
        rich_help_panel="Basics",
    ),
    mask: Optional[Path] = typer.Option(
        None,
        help="Region as a mask image (white = inside), for the relevance mass and rank accuracy.",
        rich_help_panel="Basics",
    ),
    masks: Optional[Path] = typer.Option(
        None,
        help="Folder mode: per-image masks MASKS/<relative name>.png for the relevance mass and rank accuracy.",
        rich_help_panel="Basics",
    ),
    sanity: Optional[Path] = typer.Option(
        None,
        "--sanity",
        metavar="DIR",
        help="Folder of 'occlude sanity --export-models' holding the other method's map with each randomised model "
        "(cascading-01.npy for cascading-01.onnx): their similarity to OTHER_MAP.",
        rich_help_panel="Basics",
    ),
    json_out: Annotated[bool, json_option("the comparison JSON")] = False,
    quiet: Annotated[bool, quiet_option("Print nothing but errors.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Compare another method's saliency map with occlusion's: correlation, top-k overlap, deletion and insertion
    curves, infidelity, sufficiency and completeness; one image or a folder (--maps)."""
    from ..analyses.options import ExplainOptions
    from ..runs.compare import CompareSettings, compare_folder, compare_image
    from ..runs.regions import RegionSource

    if maps is not None and other_map is not None:
        raise OccludeError("give OTHER_MAP for one image, or --maps DIR for a folder, not both")
    if maps is None and other_map is None:
        raise OccludeError("missing OTHER_MAP (or --maps DIR with a folder of images)")
    if masks is not None and maps is None:
        raise OccludeError("--masks is for folder mode (--maps); one image takes --mask or --box")
    if sanity is not None and maps is not None:
        raise OccludeError("--sanity is for one image and its OTHER_MAP, not folder mode (--maps)")
    options = ExplainOptions(patch=patch, **occlusion.fields(), **medical.fields())
    settings = CompareSettings(steps, top_fraction, fractions, map_kind, deletion_baseline, insertion_baseline)
    given = dict(name=name, model_options=model_flags.options(), events=CompareEvents(quiet, json_out))
    region = RegionSource(box, mask, masks) if (box, mask, masks) != (None, None, None) else None
    if maps is not None:
        folder = compare_folder(model, image, maps, out, options, settings, recursive=recursive, region=region, **given)
        if json_out:
            print_json(folder.document)
        elif not quiet:
            _print_compare_summary(stdout, folder.document["summary"], out)
        if folder.failed:
            raise typer.Exit(ExitCode.IMAGES_FAILED)
        return
    one = compare_image(model, image, other_map, out, options, settings, region=region, sanity=sanity, **given)
    if json_out:
        print_json(one.document, command=False)  # STEM.compare.json, a per-input document
    elif not quiet:
        _print_comparison(stdout, one.document, one.written)


def _print_compare_summary(console, summary: dict, out: Path) -> None:
    table = Table(
        title=safe(f"occlude compare: {summary['images']} image(s) -> {out}/compare.json"), title_justify="left"
    )
    for column in ("metric", "occlusion", "other", "other - occlusion (95% CI)"):
        table.add_column(column)
    metrics, diffs = summary["metrics"], summary["difference"]
    for metric in ("deletion_auc", "insertion_auc", "infidelity_unexplained", "sufficiency", "completeness"):
        ours, theirs, diff = metrics.get("occlusion." + metric), metrics.get("other." + metric), diffs.get(metric)
        if ours is None or theirs is None or diff is None:
            continue
        ci = diff["ci"]
        table.add_row(
            metric,
            _fmt(ours["mean"]),
            _fmt(theirs["mean"]),
            f"{_fmt(diff['mean'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if diff["mean"] is not None else "n/a",
        )
    console.print(table)


class CheckEvents(RunEvents):
    """check's events: on a live terminal a bar that keeps its count and ETA (:class:`RunDisplay`); failures and
    errors as they happen (also under --quiet / --json, where nothing else is shown); elsewhere one logfmt line
    per finished input."""

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
        draw = not self.silent and self.live and (total is None or total > 1)
        self.display = RunDisplay(total, draw=draw, label="checking")

    def image_started(self, image) -> None:
        if self.display is not None:
            self.display.image_started(shown(image.path.name or image.key), image.key)

    def image_done(self, image, row, params=()) -> None:
        if self.display is not None:
            self.display.image_done(row.status in ("pass", "fail"), image.key)
        if row.status == "error":
            print_error(f"{one_line(row.path)}: {row.error or ''}")
        elif row.status == "fail" and (self.silent or not self.live):
            print_error(f"{one_line(row.path)}: {'; '.join(row.reasons)}", "fail")
        elif row.status == "pass" and not self.silent and not self.live:
            energy = None if row.energy_share is None else f"{row.energy_share:.3f}"
            line = logfmt(("status", "pass"), ("image", row.path), ("energy", energy), ("seconds", row.seconds))
            stderr.print(line, markup=False, highlight=False)

    def finished(self) -> None:
        if self.display is not None:
            self.display.stop()


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, render=RenderFlags, ci=CiFlags, medical=MedicalInputFlags)
def check(
    model: Path = typer.Argument(..., help="ONNX classifier (.onnx), or a folder holding one."),
    paths: List[str] = typer.Argument(
        ...,
        help="Image files, folders or glob patterns; - reads the paths from stdin.",
        show_default=False,
        metavar="PATH",
    ),
    box: Optional[Parsed] = typer.Option(
        None,
        parser=parse.region("--box"),
        metavar="x0,y0,x1,y1",
        help="Region x0,y0,x1,y1 in original image pixels (a volume: x0,y0,z0,x1,y1,z1 in world mm), the same "
        "for every image.",
        rich_help_panel="Basics",
    ),
    mask: Optional[Path] = typer.Option(
        None,
        help="Region as a mask image, white = region, transparent = outside; for DICOM/NIfTI inputs a NIfTI "
        "mask, DICOM SEG or RT-STRUCT (the same for every image).",
        rich_help_panel="Basics",
    ),
    masks: Optional[Path] = typer.Option(
        None,
        help="Folder of per-image masks: DIR/<relative name>.png \\[default: NAME.mask.png next to each image].",
        rich_help_panel="Basics",
    ),
    min_energy: Optional[float] = typer.Option(
        None,
        "--min-energy",
        help="Fail an image when less than this share (0..1) of the positive map lies in the region.",
        rich_help_panel="Gates",
    ),
    require_peak: bool = typer.Option(
        False,
        "--require-peak",
        help="Fail an image when the map's peak lies outside the region (pointing game; the peak is the pixel of "
        "the maximal plateau nearest its centre, as check.csv reports it).",
        rich_help_panel="Gates",
    ),
    out: Annotated[Path, out_option("Folder for check.json and check.csv.")] = Path("occlude-out"),
    recursive: Recursive = False,
    null: NullPaths = False,
    patch: Optional[Parsed] = typer.Option(
        None,
        parser=parse.size("--patch"),
        metavar="SIZE",
        help="Occluding patch, N or HxW \\[default: 1/14 of the input side].",
        rich_help_panel="Basics",
    ),
    json_out: Annotated[bool, json_option("check.json")] = False,
    quiet: Annotated[bool, quiet_option("No table; failures and errors still go to stderr.")] = False,
    pictures: bool = typer.Option(
        True,
        "--pictures/--no-pictures",
        help="Write STEM.check.png per image: the overlay with the region drawn and the verdict in the title.",
        rich_help_panel="Output",
    ),
    report: bool = typer.Option(
        False,
        "--report",
        help="Also write OUT/index.html, an HTML report (see `occlude report`).",
        rich_help_panel="Output",
    ),
    timing: bool = typer.Option(
        True,
        "--timing/--no-timing",
        help="Record each image's seconds; --no-timing makes reruns byte-identical.",
        rich_help_panel="Output",
    ),
    regions: Annotated[Optional[Path], REGIONS_OPTION] = None,
    deidentify: Annotated[bool, DEIDENTIFY_OPTION] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    render: RenderFlags = None,  # type: ignore[assignment]
    ci: CiFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """CI check: does the model look where it should? Pointing game and energy share inside a region."""
    from ..analyses.options import ExplainOptions
    from ..runs.check import check_folder
    from ..runs.regions import RegionSource

    result = check_folder(
        model,
        paths,
        out,
        ExplainOptions(patch=patch, **occlusion.fields(), **medical.fields()),
        region=RegionSource(box, mask, masks),
        min_energy=min_energy,
        require_peak=require_peak,
        pictures=pictures,
        report=report,
        style=render.style(),
        recursive=recursive,
        model_options=model_flags.options(),
        events=CheckEvents(quiet, json_out),
        null=null,
        **ci.fields(),
        regions=regions,
        deidentify=deidentify,
        timing=timing,
    )
    if json_out:
        print_json(result.document)
    elif not quiet:
        _print_checks(stdout, result.rows, out, result.settings)
    if result.interrupted:
        raise fail(
            f"interrupted after {result.done} of {result.total} images; check.json holds those", ExitCode.INTERRUPTED
        )
    if "error" in result.statuses:
        raise typer.Exit(ExitCode.IMAGES_FAILED)
    if "fail" in result.statuses:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_checks(console, rows, out: Path, settings: dict) -> None:
    table = Table(
        title=safe(f"occlude check: {len(rows)} image(s), region {settings['region']} -> {out}"), title_justify="left"
    )
    table.add_column("image", no_wrap=True)
    for column in ("status", "target", "peak in region", "energy share", "region share", "why"):
        table.add_column(column)
    for row in rows:
        style = {"pass": "green", "fail": "red", "error": "red"}.get(row.status, "")
        label = shortened(row.target_label or "")
        target = f"{row.target_index} {label}".strip() if row.target_index is not None else ""
        table.add_row(
            safe(shorten_path(row.path, 40)),
            f"[{style}]{row.status}[/]",
            safe(target),
            "" if row.pointing_game is None else ("yes" if row.pointing_game else "no"),
            _fmt(row.energy_share),
            _fmt(row.region_fraction),
            safe(in_flags(row.error or "") or "; ".join(row.reasons)),
        )
    console.print(table)


def _quality_rows(table: Table, quality: Optional[dict]) -> None:
    """The Quantus-style numbers of both maps: relevance mass and rank accuracy (with a region; higher is better),
    sparseness and complexity (descriptive)."""
    if not quality:
        return
    ours, theirs = quality["occlusion"], quality["other"]
    rows: List[Tuple[str, str, Optional[bool]]] = [
        ("sparseness, Gini (higher: fewer pixels)", "sparseness", None),
        ("complexity, entropy (lower: simpler)", "complexity", None),
    ]
    if quality.get("region_pixels") is not None:
        rows = [
            ("relevance mass accuracy (higher is better)", "relevance_mass_accuracy", False),
            ("relevance rank accuracy (higher is better)", "relevance_rank_accuracy", False),
            *rows,
        ]
    for label, key, _ in rows:
        table.add_row(label, _shown(ours[key]), _shown(theirs[key]), (quality.get("better") or {}).get(key) or "")


def _print_method_sanity(console, sanity: dict, name: str) -> None:
    """compare --sanity: the other method's map with each randomised model against its map with the trained one."""
    table = Table(title=safe(f"randomisation test of {name}: similarity to its map with the trained model"))
    for column in ("test", "layer", "Spearman", "Spearman |map|", "SSIM", "SSIM |map|", "top IoU"):
        table.add_column(column, justify="left" if column == "test" else "right")
    for row in sanity["steps"]:
        numbers = ("spearman", "spearman_abs", "ssim", "ssim_abs", "top_iou")
        cells = [_fmt(row[k]) for k in numbers] if row["status"] == "ok" else ["missing"] * len(numbers)
        table.add_row(safe(row["test"] or ""), str(row["position"]), *cells)
    console.print(table)


def _print_comparison(console, comparison: dict, written) -> None:
    agreement, curves = comparison["agreement"], comparison["curves"]
    name = comparison["other_map"]["name"] or "other"
    label = comparison["target"]["label"]
    label = f" ({safe(shortened(label))})" if label else ""
    table = Table(
        title=f"occlude compare: class {comparison['target']['index']}{label}",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("occlusion", justify="right")
    table.add_column(safe(name), justify="right")
    table.add_column("better")
    table.add_row(
        "deletion AUC (lower is better)",
        _shown(curves["occlusion"]["deletion_auc"]),
        _shown(curves["other"]["deletion_auc"]),
        comparison["better"]["deletion"] or "",
    )
    table.add_row(
        "insertion AUC (higher is better)",
        _shown(curves["occlusion"]["insertion_auc"]),
        _shown(curves["other"]["insertion_auc"]),
        comparison["better"]["insertion"] or "",
    )
    fidelity = comparison.get("fidelity")
    if fidelity:
        ours, theirs = fidelity["maps"]["occlusion"], fidelity["maps"]["other"]
        for label, path in (
            ("infidelity, unexplained share (lower is better)", ("infidelity", "unexplained")),
            ("sufficiency, mean share kept (higher is better)", ("sufficiency", "mean_kept")),
            ("completeness, mean share removed (higher is better)", ("completeness", "mean_removed")),
        ):
            a, b = ours[path[0]][path[1]], theirs[path[0]][path[1]]
            table.add_row(label, _shown(a), _shown(b), fidelity["better"][path[0]] or "")
    _quality_rows(table, comparison.get("quality"))
    console.print(table)
    console.print(
        f"Pearson {_shown(agreement['pearson'])}, Spearman {_shown(agreement['spearman'])}, "
        f"top {agreement['top_fraction'] * 100:g}% IoU {_shown(agreement['top_iou'])} over {agreement['pixels']} pixels"
    )
    for warning in comparison.get("warnings") or []:
        print_warning(warning)
    if comparison.get("sanity"):
        _print_method_sanity(console, comparison["sanity"], name)
    for path in written:
        console.print(f"wrote {safe(str(path))}")
