"""`occlude layers`, `occlude bias`, `occlude stability` and `occlude info --layers`: occlusion inside the model,
across a dataset, and under noise (Typer only; the work is in :mod:`occlude_cli.runs.layers`,
:mod:`occlude_cli.runs.bias` and :mod:`occlude_cli.runs.stability`).

Exit codes: 0 ok; 1 error before any image (model, flags, an invalid --layer, output folder); 3 some image
failed (the others were processed); 4 `occlude bias` exceeded --max-mean-drop or --max-flip-rate (3 takes
precedence).
"""

import enum
from pathlib import Path
from typing import Annotated, Collection, List, Optional

import numpy as np
import typer
from rich.table import Table

from ..runs.events import RunEvents
from ..text import logfmt, shortened
from . import parse
from .common import (
    CiFlags,
    ExitCode,
    ModelFlags,
    NullPaths,
    OcclusionFlags,
    Parsed,
    Recursive,
    in_flags,
    json_option,
    out_option,
    print_error,
    print_json,
    print_note,
    print_warning,
    quiet_option,
    safe,
    stderr,
    stdout,
    user_errors,
    with_flags,
)
from .medicalflags import DEIDENTIFY_OPTION, MedicalInputFlags

LAYERS_EXAMPLES = """
occlude info sample_models/efficientnet_lite0.onnx --layers  # cut points
occlude layers model.onnx images/ -l hardtanh_16 -o lay/
occlude layers model.onnx data/ -l /features/6/Add_output_0 --replace dataset
occlude layers model.onnx a.png -l hardtanh_16 --spatial --patch 2  # windows
"""

LAYERS_NOTES = """
The model is cut at --layer (checked on the spot: the prefix then the suffix must give the whole model's output).
The prefix runs once per image; only the suffix runs per replaced channel or feature-map window.

Writes OUT/layers.json, layers.csv (per channel, most important first: mean drop, spread, flip rate),
layers_images.csv (per image and channel), layers.png (top and bottom channels) and activations.png (where the
top channels respond, each on the input image that activates it most). With --spatial: OUT/STEM.spatial.png,
.npy and .json per image.
"""

BIAS_EXAMPLES = """
occlude bias model.onnx data/ --box 0,0,60,30 --baseline blur  # a watermark?
occlude bias model.onnx data/ -r --masks rulers/  # per-image regions
occlude bias model.onnx data/ --box 0,0,60,30 --max-flip-rate 0.05 -q  # CI
"""

BIAS_NOTES = """
For each image: the target (default: predicted) class's score with and without the region occluded; a control
occludes the same-size region at --controls random places (seeded, outside the region where possible), so that
"this region matters" is told apart from "any patch that size matters".

Writes OUT/bias.json, bias.csv (per image), bias_classes.csv (per class and 'all': mean and median drop, flip rate,
95% bootstrap CIs, the control's numbers) and bias.png (drops, region vs control).

[bold]Exit codes[/]: 0 ok (or under the thresholds); 4 the overall mean drop or flip rate exceeds --max-mean-drop /
--max-flip-rate; 3 some image could not be measured (takes precedence); 1 error before any image.
"""

STABILITY_EXAMPLES = """
occlude stability model.onnx img.png --noise 2/255 --trials 8
occlude stability model.onnx adv.png --box 10,10,60,60 --expect "Egyptian cat"
occlude stability sample_models/ct2d.onnx sample_images/medical/ct_lesion.dcm
occlude stability sample_models/lesion3d.onnx scan.nii.gz --trials 4  # a volume
"""

STABILITY_NOTES = """
Explains the image and --trials copies with seeded uniform noise of at most --noise of the pixel range (clipped to
0..255), all for the clean run's target; reports each copy's Spearman rank correlation and top-10% IoU with the
clean map. --box: occluding only that patch (is it necessary?) and keeping only it (is it sufficient?);
--expect CLASS says whether occluding the patch restores that class (the patch test).

DICOM slices, DICOM series (--series) and NIfTI volumes: the noise is added in real units (HU) on the model grid
before the model's intensity transform, --noise being a fraction of the window width (or intensity range, else
the input's range of values): 2/255 of an 1800 HU window is +-14 HU; nothing is clipped. --box is 2-D only.

Writes OUT/STEM.stability.json, STEM.stability.csv (per noisy copy) and STEM.stability.png.
"""


class Replacement(str, enum.Enum):
    """What a replaced channel or feature-map window becomes (see occlude_cli.analyses.layers.REPLACEMENTS)."""

    zero = "zero"
    mean = "mean"
    dataset = "dataset"


class AnalysisEvents(RunEvents):
    """The events of layers and bias: notes unless --quiet or --json, every error line, and per input what the
    command shows (``line``: the text of a finished input, or None)."""

    def __init__(self, quiet: bool, json_out: bool, line=None) -> None:
        self.silent = quiet or json_out
        self.line = line
        self.total: Optional[int] = 0

    def note(self, text: str, params=()) -> None:
        if not self.silent:
            print_note(text, params)

    def problem(self, text: str, params=()) -> None:
        print_error(text, params=params)

    def started(self, total: Optional[int], skipping: Collection[str] = ()) -> None:
        self.total = total

    def image_done(self, image, row, params=()) -> None:
        if getattr(row, "status", None) == "error":
            print_error(f"{row.path}: {row.error}")
        elif self.line is not None and not self.silent:
            self.line(self, image, row)


def _layers_line(events: AnalysisEvents, image, done) -> None:
    """One line per finished input: a spatial map on stdout; a channel result on stderr (several inputs)."""
    from ..core.metrics import peak_index
    from ..runs.layers import SpatialResult

    if isinstance(done, SpatialResult):
        grid = done.result.map
        peak = peak_index(grid) if np.isfinite(grid).any() else None
        stdout.print(
            f"{safe(done.key)}: class {done.result.target} {safe(shortened(done.result.label or ''))}, "
            f"grid {'x'.join(map(str, grid.shape))}, peak cell "
            f"{tuple(int(v) for v in peak) if peak else '-'}, "
            f"{done.result.occlusion.forward_passes} suffix passes -> {safe(str(done.written[-1]))}"
        )
    elif events.total is None or events.total > 1:  # one logfmt line per image as it finishes (CI logs)
        best = int(done.ranking()[0])
        line = logfmt(
            ("status", "ok"),
            ("image", image.key),
            ("target", done.target),
            *([("label", shortened(done.label))] if done.label else []),
            ("top_channel", int(done.channels[best])),
            ("drop", f"{done.drops[best]:.4g}"),
            ("suffix_passes", done.suffix_passes),
            ("seconds", f"{done.seconds:.2f}"),
        )
        stderr.print(line, markup=False, highlight=False)


@user_errors
@with_flags(
    model_flags=ModelFlags,
    occlusion=OcclusionFlags,
    medical=MedicalInputFlags,
    hidden=("baseline", "baseline_image", "blur_sigma", "seed", "incremental"),  # refused by layers
    helps={  # its windows (--spatial) lie on the feature grid
        "stride": "With --spatial: step between windows in feature cells, N or HxW \\[default: the patch]. A last "
        "window flush with the border is always added."
    },
)
def layers(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx), or a folder holding one.")],
    paths: Annotated[
        List[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False, metavar="PATH")
    ],
    layer: Annotated[
        str,
        typer.Option(
            "--layer",
            "-l",
            help="Inner tensor to occlude (see 'occlude info MODEL --layers').",
            show_default=False,
            rich_help_panel="Basics",
        ),
    ],
    out: Annotated[Path, out_option()] = Path("occlude-out"),
    replace: Annotated[
        Replacement,
        typer.Option(
            "--replace",
            help="What a channel (or window) becomes: zero, mean (its spatial mean on the image) or dataset (its mean "
            "over all input images; one extra prefix pass per image).",
            rich_help_panel="Basics",
        ),
    ] = Replacement.zero,
    channels: Annotated[
        Optional[Parsed],
        typer.Option(
            "--channels",
            parser=parse.channels("--channels"),
            metavar="LIST",
            help="Only these channels, e.g. 0,5,9-12 \\[default: all].",
            rich_help_panel="Basics",
        ),
    ] = None,
    spatial: Annotated[
        bool,
        typer.Option(
            "--spatial",
            help="Instead of channels: occlude windows of the feature map (all channels at once), a map on the "
            "feature grid drawn over the image.",
            rich_help_panel="Basics",
        ),
    ] = False,
    patch: Annotated[
        int,
        typer.Option(
            "--patch",
            help="With --spatial: window side in feature-map cells (--stride: step in cells, default the patch).",
            rich_help_panel="Basics",
        ),
    ] = 1,
    top: Annotated[
        int, typer.Option("--top", help="Channels shown at each end of the bar chart.", rich_help_panel="Output")
    ] = 10,
    show: Annotated[
        int,
        typer.Option(
            "--show",
            help="Top channels whose activation maps go into activations.png (0: none).",
            rich_help_panel="Output",
        ),
    ] = 4,
    channel_axis: Annotated[
        int,
        typer.Option(
            "--channel-axis",
            help="Channel axis of the tensor without its batch axis (0: NCHW feature maps; -1: channel-last).",
            rich_help_panel="Basics",
        ),
    ] = 0,
    recursive: Recursive = False,
    null: NullPaths = False,
    timing: Annotated[
        bool, typer.Option("--timing/--no-timing", help="Record timings in the JSON.", rich_help_panel="Output")
    ] = True,
    json_out: Annotated[bool, json_option("layers.json (with --spatial: every STEM.spatial.json)")] = False,
    quiet: Annotated[bool, quiet_option("No table; errors still go to stderr.")] = False,
    deidentify: Annotated[bool, DEIDENTIFY_OPTION] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Occlude inside the model: the target score's drop when each channel of an inner tensor is replaced."""
    from ..analyses.explain import SATURATION
    from ..analyses.options import ExplainOptions
    from ..loaders.model import SATURATION_PARAMS, saturation_remedy
    from ..runs.layers import LayerSettings, layers_folder

    settings = LayerSettings(replace.value, channels, spatial, patch, None, top, show, channel_axis)
    run = layers_folder(
        model,
        paths,
        layer,
        out,
        ExplainOptions(**occlusion.fields(), **medical.fields()),
        settings,
        timing=timing,
        recursive=recursive,
        null=null,
        model_options=model_flags.options(),
        events=AnalysisEvents(quiet, json_out, _layers_line),
        deidentify=deidentify,
    )
    if spatial or run.summary is None:
        if json_out and spatial:
            print_json(run.document)
        if run.failed or run.summary is None and not spatial:
            raise typer.Exit(ExitCode.IMAGES_FAILED)
        return
    if run.saturated:  # one line for the whole run (a warning: shown under --quiet too)
        kind = run.saturated[0].score_kind
        text = (
            f"the target probability is saturated (>= {SATURATION}) for {len(run.saturated)} of "
            f"{len(run.results)} image(s): replacing a channel barely moves it; {saturation_remedy(kind)}"
        )
        print_warning(in_flags(text, SATURATION_PARAMS.get(kind, ())))
    if json_out:
        print_json(run.document)
    elif not quiet:
        _print_layers(run, layer, replace.value, out, top)
    if run.failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)


def _print_layers(run, layer: str, replacement: str, out: Path, top: int) -> None:
    summary = run.summary
    table = Table(
        title=safe(
            f"occlude layers: {layer} {list(run.cut.feature_shape)}, {summary.images} image(s), "
            f"replacement {replacement} -> {out}"
        ),
        title_justify="left",
    )
    for name in ("rank", "channel", "mean drop", "std", "flip rate", "mean activation"):
        table.add_column(name, justify="right")
    order = summary.ranking()
    shown = list(order[:top]) + ([-1] if len(order) > 2 * top else []) + list(order[max(top, len(order) - top) :])
    for rank, i in ((int(np.nonzero(order == i)[0][0]) + 1 if i >= 0 else 0, i) for i in shown):
        if i < 0:
            table.add_row("...", "", "", "", "", "")
            continue
        table.add_row(
            str(rank),
            str(int(summary.channels[i])),
            f"{summary.mean[i]:.4g}",
            f"{summary.std[i]:.3g}",
            f"{summary.flip_rate[i]:.2f}",
            f"{summary.activation[i]:.3g}",
        )
    stdout.print(table)


@user_errors
@with_flags(
    model_flags=ModelFlags,
    occlusion=OcclusionFlags,
    ci=CiFlags,
    medical=MedicalInputFlags,
    hidden=("stride", "incremental"),  # refused by bias: it occludes the region whole, never windows
)
def bias(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx), or a folder holding one.")],
    paths: Annotated[
        List[str],
        typer.Argument(
            help="Image files, folders or glob patterns; - reads the paths from stdin.",
            show_default=False,
            metavar="PATH",
        ),
    ],
    box: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.region("--box"),
            metavar="x0,y0,x1,y1",
            help="Suspected region x0,y0,x1,y1 in original image pixels (a volume: x0,y0,z0,x1,y1,z1 in world mm), "
            "the same for every image.",
            rich_help_panel="Basics",
        ),
    ] = None,
    mask: Annotated[
        Optional[Path],
        typer.Option(
            help="Suspected region as a mask image, white = region, transparent = outside; for DICOM/NIfTI inputs a "
            "NIfTI mask, DICOM SEG or RT-STRUCT (the same for every image).",
            rich_help_panel="Basics",
        ),
    ] = None,
    masks: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder of per-image masks DIR/<relative name>.png \\[default without --box/--mask: NAME.mask.png "
            "next to each image].",
            rich_help_panel="Basics",
        ),
    ] = None,
    out: Annotated[Path, out_option()] = Path("occlude-out"),
    null: NullPaths = False,
    controls: Annotated[
        int,
        typer.Option(
            "--controls", help="Random same-size control regions per image (0: no control).", rich_help_panel="Basics"
        ),
    ] = 8,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            help="Bootstrap resamples for the 95% confidence intervals (0: none).",
            rich_help_panel="Basics",
        ),
    ] = 1000,
    max_mean_drop: Annotated[
        Optional[float],
        typer.Option(
            "--max-mean-drop", help="Exit 4 when the mean drop over all images exceeds this.", rich_help_panel="Gates"
        ),
    ] = None,
    max_flip_rate: Annotated[
        Optional[float],
        typer.Option(
            "--max-flip-rate",
            help="Exit 4 when the share of flipped predictions exceeds this (0..1).",
            rich_help_panel="Gates",
        ),
    ] = None,
    recursive: Recursive = False,
    json_out: Annotated[bool, json_option("bias.json")] = False,
    quiet: Annotated[bool, quiet_option("No table; errors still go to stderr.")] = False,
    deidentify: Annotated[bool, DEIDENTIFY_OPTION] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    ci: CiFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Dataset bias: how much does occluding the same suspected region in every image move the predictions?"""
    from ..analyses.options import ExplainOptions
    from ..runs.bias import bias_folder
    from ..runs.regions import RegionSource

    run = bias_folder(
        model,
        paths,
        out,
        ExplainOptions(**occlusion.fields(), **medical.fields()),
        region=RegionSource(box, mask, masks),
        controls=controls,
        bootstrap=bootstrap,
        max_mean_drop=max_mean_drop,
        max_flip_rate=max_flip_rate,
        recursive=recursive,
        model_options=model_flags.options(),
        events=AnalysisEvents(quiet, json_out),
        null=null,
        deidentify=deidentify,
        **ci.fields(),
    )
    summary = run.summary
    if json_out:
        print_json(run.document)
    elif not quiet and summary is not None:
        _print_bias(summary, run.region, out)
    if summary is not None and not summary.passed:
        for reason in summary.reasons:  # the verdict as bias.json records it
            print_error(reason, "fail")
    if run.failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)
    if summary is not None and not summary.passed:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _print_bias(summary, region_text: str, out: Path) -> None:
    table = Table(title=safe(f"occlude bias: {region_text} -> {out}"), title_justify="left")
    for name in ("class", "images", "mean drop [95% CI]", "flip rate [95% CI]", "control drop", "control flips"):
        table.add_column(name, justify="right")
    groups = [
        (f"{k} {v.get('label') or ''}".strip() if v.get("label") != str(k) else str(k), v)
        for k, v in summary.per_class.items()
    ]
    groups.append(("all", summary.overall))
    for name, g in groups:
        ci, fci = g["mean_drop_ci"], g["flip_rate_ci"]
        table.add_row(
            safe(name),
            str(g["images"]),
            _fmt(g["mean_drop"]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci[0] is not None else ""),
            _fmt(g["flip_rate"], 2) + (f" [{_fmt(fci[0], 2)}, {_fmt(fci[1], 2)}]" if fci[0] is not None else ""),
            _fmt(g["control_mean_drop"]),
            _fmt(g["control_flip_rate"], 2),
        )
    stdout.print(table)


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, medical=MedicalInputFlags)
def stability(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx), or a folder holding one.")],
    image: Annotated[
        Path,
        typer.Argument(
            help="The image to explain: a photo, a DICOM slice (2-D model), a NIfTI volume or a DICOM series folder "
            "with --series (3-D model)."
        ),
    ],
    out: Annotated[Path, out_option()] = Path("occlude-out"),
    noise: Annotated[
        Parsed,
        typer.Option(
            "--noise",
            parser=parse.fraction("--noise"),
            metavar="FRACTION",
            help="Largest change of a pixel, as a fraction of the pixel range (2/255 or 0.008); medical inputs: "
            "of the window width (or intensity range), in real units.",
            rich_help_panel="Basics",
        ),
    ] = "2/255",
    trials: Annotated[
        int, typer.Option("--trials", help="Noisy copies (seeded by --seed).", rich_help_panel="Basics")
    ] = 8,
    patch: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.size("--patch"),
            metavar="SIZE",
            help="Occluding patch, N, HxW or DxHxW for 3-D models \\[default: 1/14 of the input side].",
            rich_help_panel="Basics",
        ),
    ] = None,
    box: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.box("--box"),
            metavar="x0,y0,x1,y1",
            help="Suspected patch x0,y0,x1,y1 (original image pixels): is it necessary and sufficient for the "
            "prediction? 2-D inputs only.",
            rich_help_panel="Basics",
        ),
    ] = None,
    expect: Annotated[
        Optional[str],
        typer.Option(
            "--expect",
            help="With --box: the class the image should have (index or label): does occluding the patch restore it?",
            rich_help_panel="Basics",
        ),
    ] = None,
    timing: Annotated[
        bool, typer.Option("--timing/--no-timing", help="Record timings in the JSON.", rich_help_panel="Output")
    ] = True,
    json_out: Annotated[bool, json_option("STEM.stability.json")] = False,
    quiet: Annotated[bool, quiet_option("Print nothing but errors.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Is the explanation stable? Maps of seeded noisy copies compared with the clean map; with --box, the patch
    test."""
    from ..analyses.options import ExplainOptions
    from ..runs.stability import stability_image

    run = stability_image(
        model,
        image,
        out,
        ExplainOptions(patch=patch, **occlusion.fields(), **medical.fields()),
        amplitude=noise,
        trials=trials,
        box=box,
        clean_class=expect,
        timing=timing,
        model_options=model_flags.options(),
    )
    if json_out:
        print_json(run.document, command=False)  # STEM.stability.json
    elif not quiet:
        _print_stability(run.result)
        stdout.print(f"wrote {safe(str(Path(out) / (run.stem + '.stability.json')))}")


def _print_stability(result) -> None:
    s = result.summary()
    e = result.explanation
    label = safe(shortened(e.label(e.target) or ""))
    stdout.print(
        f"class {e.target} {label}: {s['trials']} noisy copies ({result.noise_text()}): "
        f"Spearman mean {_fmt(s['spearman']['mean'])} (min {_fmt(s['spearman']['min'])}), "
        f"top-10% IoU mean {_fmt(s['top_iou']['mean'])} (min {_fmt(s['top_iou']['min'])}), "
        f"prediction flips {s['prediction_flips']}"
    )
    p = result.patch_test
    if p is None:
        return

    def name(c: Optional[int]) -> str:
        return f"{c} {shortened(e.label(c) or '')}".strip() if c is not None else ""

    line = (
        f"patch test: as given {name(p.predicted)}; patch occluded -> {name(p.occluded_class)} "
        f"({'necessary' if p.necessary else 'not necessary'}); patch alone -> {name(p.kept_class)} "
        f"({'sufficient' if p.sufficient else 'not sufficient'})"
    )
    if p.restores is not None:
        line += f"; restores {name(p.clean_class)}: {'yes' if p.restores else 'no'}"
    stdout.print(safe(line))


def info_layers(model: Path, *, device: str = "auto", json_out: bool = False) -> None:
    """`occlude info MODEL --layers`: every inner tensor with its op and shape, whether the model can be cut there
    (a valid --layer), and its receptive field on the input where the receptive-field analysis knows it."""
    from ..analyses.layers import describe_layers

    listing = describe_layers(model, device=device)
    rows = listing.document["tensors"]
    if json_out:
        print_json(listing.document)
        return
    table = Table(
        title=safe(
            f"{model}: {len(rows)} inner tensors, {sum(r['valid_cut'] for r in rows)} valid cut points (--layer)"
        ),
        title_justify="left",
    )
    for name in ("tensor", "op", "shape", "valid cut"):
        table.add_column(name)
    if listing.receptive_fields:
        table.add_column("receptive field (stride)")
    for row in rows:
        cells = [
            safe(row["name"]),
            safe(row["op"]),
            "x".join("?" if d is None else str(d) for d in (row["shape"] or [])),
            "yes" if row["valid_cut"] else "no",
        ]
        if listing.receptive_fields:
            rf = row["receptive_field"]
            cells.append(f"{rf['size'][0]}x{rf['size'][1]} ({rf['stride'][0]}x{rf['stride'][1]})" if rf else "")
        table.add_row(*cells)
    stdout.print(table)
