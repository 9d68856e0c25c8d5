"""`occlude layers`, `occlude bias`, `occlude stability` and `occlude info --layers`: occlusion inside the model,
across a dataset, and under noise (Typer only; the work is in :mod:`occlude_cli.analyses.layers`, :mod:`occlude_cli.analyses.bias`
and :mod:`occlude_cli.analyses.stability`).

Exit codes: 0 ok; 1 error before any image (model, flags, an invalid --layer, output folder); 3 some image
failed (the others were processed); 4 `occlude bias` exceeded --max-mean-drop or --max-flip-rate (3 takes
precedence).
"""

import enum
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import numpy as np
import typer
from rich.table import Table

from ..errors import OccludeError
from .common import (
    ExitCode,
    MedicalInputFlags,
    ModelFlags,
    OcclusionFlags,
    check_output_folder,
    print_error,
    safe,
    stderr,
    stdout,
    user_errors,
    with_flags,
)

LAYERS_EXAMPLES = """
[bold]Examples[/]

  occlude info sample_models/efficientnet_lite0.onnx --layers      [dim]# where can the model be cut?[/]
  occlude layers sample_models/efficientnet_lite0.onnx sample_images/ --layer hardtanh_16 -o lay/
  occlude layers model.onnx data/ -r --layer /features/6/Add_output_0 --replace dataset --score logit
  occlude layers model.onnx img.png --layer hardtanh_16 --spatial --patch 2   [dim]# windows on the feature map[/]

The model is cut at --layer (checked on the spot: the prefix then the suffix must give the whole model's output).
The prefix runs once per image; only the suffix runs per replaced channel or feature-map window.

Writes OUT/layers.json, layers.csv (per channel, most important first: mean drop, spread, flip rate),
layers_images.csv (per image and channel), layers.png (top and bottom channels) and activations.png (where the
top channels respond, each on the input image that activates it most). With --spatial: OUT/STEM.spatial.png,
.npy and .json per image.
"""

BIAS_EXAMPLES = """
[bold]Examples[/]

  occlude bias model.onnx dataset/ -r --box 0,0,60,30 --baseline blur   [dim]# does the watermark matter?[/]
  occlude bias model.onnx dataset/ -r --masks rulers/                     [dim]# per-image suspected regions[/]
  occlude bias model.onnx dataset/ -r --box 0,0,60,30 --max-flip-rate 0.05 -q   [dim]# CI: exit 4 above 5%[/]

For each image: the target (default: predicted) class's score with and without the region occluded; a control
occludes the same-size region at --controls random places (seeded, outside the region where possible), so that
"this region matters" is told apart from "any patch that size matters".

Writes OUT/bias.json, bias.csv (per image), bias_classes.csv (per class and 'all': mean and median drop, flip rate,
95% bootstrap CIs, the control's numbers) and bias.png (drops, region vs control).

[bold]Exit codes[/]: 0 ok (or under the thresholds); 4 the overall mean drop or flip rate exceeds --max-mean-drop /
--max-flip-rate; 3 some image could not be measured (takes precedence); 1 error before any image.
"""

STABILITY_EXAMPLES = """
[bold]Examples[/]

  occlude stability model.onnx img.png --noise 2/255 --trials 8
  occlude stability model.onnx adversarial.png --box 10,10,60,60 --expect "Egyptian cat"   [dim]# the patch test[/]
  occlude stability sample_models/ct2d.onnx sample_images/medical/ct_lesion.dcm      [dim]# a DICOM slice[/]
  occlude stability sample_models/lesion3d.onnx scan.nii.gz --trials 4               [dim]# a volume[/]

Explains the image and --trials copies with seeded uniform noise of at most --noise of the pixel range (clipped to
0..255), all for the clean run's target; reports each copy's Spearman rank correlation and top-10% IoU with the
clean map. --box: occluding only that patch (is it necessary?) and keeping only it (is it sufficient?);
--expect CLASS says whether occluding the patch restores that class.

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


def _load_items(paths: List[str], recursive: bool, out: Path, quiet: bool = False):
    """The input images: never the command's own --out folder nor an earlier occlude output (no self-feeding)."""
    from ..batch import discover_inputs

    notes: list = []
    images, problems = discover_inputs(paths, recursive=recursive, exclude=[out], notes=notes)
    if not quiet:
        for path, note in notes:
            stderr.print(f"[yellow]note:[/] {safe(str(path))}: {safe(note)}")
    for _, problem in problems:
        print_error(problem)
    if not images:
        raise OccludeError("no readable image among the inputs")
    return images, problems


def _channels(text: Optional[str]) -> Optional[List[int]]:
    """'0,5,9-12' -> [0, 5, 9, 10, 11, 12]."""
    if text is None:
        return None
    out: List[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise OccludeError(f"--channels takes indices and ranges like 0,5,9-12, got {text!r}") from None
    if not out:
        raise OccludeError(f"--channels names no channel: {text!r}")
    return out


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags)
def layers(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx).")],
    paths: Annotated[List[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    layer: Annotated[
        str,
        typer.Option(
            "--layer", "-l", help="Inner tensor to occlude (see 'occlude info MODEL --layers').", show_default=False
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("occlude-out"),
    replace: Annotated[
        Replacement,
        typer.Option(
            "--replace",
            help="What a channel (or window) becomes: zero, mean (its spatial mean on the image) or dataset (its mean over all input images; one extra prefix pass per image).",
        ),
    ] = Replacement.zero,
    channels: Annotated[
        Optional[str], typer.Option("--channels", help="Only these channels, e.g. 0,5,9-12 \\[default: all].")
    ] = None,
    spatial: Annotated[
        bool,
        typer.Option(
            "--spatial",
            help="Instead of channels: occlude windows of the feature map (all channels at once), a map on the feature grid drawn over the image.",
        ),
    ] = False,
    patch: Annotated[
        int,
        typer.Option(
            "--patch",
            help="With --spatial: window side in feature-map cells (--stride: step in cells, default the patch).",
        ),
    ] = 1,
    top: Annotated[int, typer.Option("--top", help="Channels shown at each end of the bar chart.")] = 10,
    show: Annotated[
        int, typer.Option("--show", help="Top channels whose activation maps go into activations.png (0: none).")
    ] = 4,
    channel_axis: Annotated[
        int,
        typer.Option(
            "--channel-axis",
            help="Channel axis of the tensor without its batch axis (0: NCHW feature maps; -1: channel-last).",
        ),
    ] = 0,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look into sub-folders of folder arguments.")
    ] = False,
    timing: Annotated[bool, typer.Option("--timing/--no-timing", help="Record timings in the JSON.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print layers.json on stdout (nothing else).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table; errors still go to stderr.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
) -> None:
    """Occlude inside the model: the target score's drop when each channel of an inner tensor is replaced."""
    from ..analyses.explain import SATURATION, check_run, parse_hw
    from ..analyses.layers import (
        aggregate_channels,
        channel_importance,
        check_channels,
        check_replacement,
        dataset_channel_means,
        open_layer,
        spatial_occlusion,
        upsample_to_input,
    )
    from ..core.metrics import peak_index
    from ..loaders.model import saturation_remedy
    from ..outputs.analysis_write import layers_document, write_layers, write_spatial

    replacement = check_replacement(replace.value if isinstance(replace, Replacement) else replace)
    chosen = _channels(channels)
    if top < 1:
        raise OccludeError(f"--top must be at least 1, got {top}")
    if show < 0:
        raise OccludeError(f"--show must be 0 or more, got {show}")
    if patch < 1:
        raise OccludeError(f"--patch must be at least 1 feature cell, got {patch}")
    if occlusion.baseline.strip().lower() != "zero" or occlusion.blur_sigma is not None:
        raise OccludeError(
            "occlude layers replaces feature values as --replace says (zero, mean, dataset); "
            "--baseline and --blur-sigma fill pixels and do not apply here"
        )
    if occlusion.stride is not None and not spatial:
        raise OccludeError("--stride applies to --spatial windows only")
    options = occlusion.options()
    classifier, preprocessing, class_names = model_flags.load(model)
    check_run(options, preprocessing, classifier, class_names)  # --target, --score: before any image
    cut = open_layer(classifier, layer, channel_axis=channel_axis)
    check_channels(cut, chosen)
    images, problems = _load_items(paths, recursive, out, quiet or json_out)
    check_output_folder(out)
    failed = len(problems)
    dataset_mean = None
    if replacement == "dataset":
        readable = []
        for item in images:
            try:
                from ..loaders.images import prepare_image

                readable.append(prepare_image(item.path, preprocessing))
            except OccludeError as exc:
                print_error(f"{item.path}: {exc}")
                failed += 1
        if not readable:
            raise OccludeError("no image could be read to compute the dataset mean")
        dataset_mean = dataset_channel_means(cut, readable, preprocessing)
    settings = {
        "model": str(model),
        "layer": layer,
        "replacement": replacement,
        "target": occlusion.target,
        "score": occlusion.score.value,
        "channels": chosen,
        "timing": timing,
    }
    if spatial:
        stride = parse_hw(occlusion.stride, "--stride") if occlusion.stride is not None else None
        for item in images:
            try:
                spatial_result, prepared = spatial_occlusion(
                    cut,
                    item.path,
                    options,
                    preprocessing=preprocessing,
                    labels=class_names,
                    patch=patch,
                    stride=stride,
                    replacement=replacement,
                    dataset_mean=dataset_mean,
                    batch_size=occlusion.batch_size,
                )
            except OccludeError as exc:
                print_error(f"{item.path}: {exc}")
                failed += 1
                continue
            written = write_spatial(out, item.key, spatial_result, prepared, timing=timing)
            if not quiet and not json_out:
                grid = spatial_result.map
                peak = peak_index(grid) if np.isfinite(grid).any() else None
                stdout.print(
                    f"{safe(item.key)}: class {spatial_result.target} {safe(spatial_result.label or '')}, "
                    f"grid {'x'.join(map(str, grid.shape))}, peak cell "
                    f"{tuple(int(v) for v in peak) if peak else '-'}, "
                    f"{spatial_result.occlusion.forward_passes} suffix passes -> {safe(str(written[-1]))}"
                )
        if failed:
            raise typer.Exit(ExitCode.IMAGES_FAILED)
        return
    results = []
    for item in images:
        try:
            result, _, _ = channel_importance(
                cut,
                item.path,
                options,
                preprocessing=preprocessing,
                labels=class_names,
                replacement=replacement,
                channels=chosen,
                dataset_mean=dataset_mean,
                batch_size=occlusion.batch_size,
            )
        except OccludeError as exc:
            print_error(f"{item.path}: {exc}")
            failed += 1
            continue
        results.append(result)
        if not quiet and not json_out and len(images) > 1:  # one line per image as it finishes (CI logs)
            best = int(result.ranking()[0])
            stderr.print(
                safe(
                    f"{item.key}: class {result.target} {result.label or ''}, top channel "
                    f"{int(result.channels[best])} (drop {result.drops[best]:.4g}), "
                    f"{result.suffix_passes} suffix passes, {result.seconds:.2f} s"
                )
            )
    if not results:
        raise typer.Exit(ExitCode.IMAGES_FAILED)
    summary = aggregate_channels(results)
    saturated = [
        r
        for r in results
        if r.score_kind in ("softmax", "probabilities", "sigmoid", "independent") and r.original_score >= SATURATION
    ]
    if saturated and not quiet:
        stderr.print(
            f"[yellow]warning:[/] the target probability is saturated (>= {SATURATION}) for {len(saturated)} of "
            f"{len(results)} image(s): replacing a channel barely moves it; "
            + safe(saturation_remedy(saturated[0].score_kind))
        )
    panels = []
    for i in summary.ranking()[:show]:
        channel = int(summary.channels[i])
        most_active = max(results, key=lambda r: r.activation[channel])
        from ..loaders.images import prepare_image

        prepared = prepare_image(most_active.path, preprocessing)
        features = np.moveaxis(cut.features(prepared.model_input), cut.channel_axis, 0)[channel]
        if features.ndim != 2:
            break
        panels.append(
            (
                prepared.original,
                prepared.crop_box,
                upsample_to_input(features, preprocessing.size),
                f"ch {channel}: drop {summary.mean[i]:.3g}\n{Path(most_active.path or '').name}",
            )
        )
    write_layers(out, cut, summary, results, settings, panels, top=top)
    if json_out:
        from ..outputs.records import format_json

        sys.stdout.write(format_json(layers_document(cut, summary, results, settings)) + "\n")
    elif not quiet:
        table = Table(
            title=safe(
                f"occlude layers: {layer} {list(cut.feature_shape)}, {summary.images} image(s), "
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
    if failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags)
def bias(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx).")],
    paths: Annotated[List[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    box: Annotated[
        Optional[str],
        typer.Option(help="Suspected region x0,y0,x1,y1 in original image pixels (the same for every image)."),
    ] = None,
    mask: Annotated[
        Optional[Path],
        typer.Option(
            help="Suspected region as a mask image, white = region, transparent = outside (the same for every image)."
        ),
    ] = None,
    masks: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder of per-image masks DIR/<relative name>.png \\[default without --box/--mask: NAME.mask.png next to each image]."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("occlude-out"),
    controls: Annotated[
        int, typer.Option("--controls", help="Random same-size control regions per image (0: no control).")
    ] = 8,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% confidence intervals (0: none).")
    ] = 1000,
    max_mean_drop: Annotated[
        Optional[float], typer.Option("--max-mean-drop", help="Exit 4 when the mean drop over all images exceeds this.")
    ] = None,
    max_flip_rate: Annotated[
        Optional[float],
        typer.Option("--max-flip-rate", help="Exit 4 when the share of flipped predictions exceeds this (0..1)."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look into sub-folders of folder arguments.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print bias.json on stdout (nothing else).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table; errors still go to stderr.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
) -> None:
    """Dataset bias: how much does occluding the same suspected region in every image move the predictions?"""
    from ..analyses.bias import BiasRow, bias_image, check_thresholds, summarise_bias
    from ..analyses.explain import check_run
    from ..loaders.maps import convention_mask_path, is_mask_file, parse_box, read_mask
    from ..outputs.analysis_write import bias_document, write_bias

    given = [flag for flag, value in (("--box", box), ("--mask", mask), ("--masks", masks)) if value is not None]
    if len(given) > 1:
        raise OccludeError(f"give one region source, not {' and '.join(given)}")
    if controls < 0:
        raise OccludeError(f"--controls must be 0 or more, got {controls}")
    if bootstrap < 0:
        raise OccludeError(f"--bootstrap must be 0 or more, got {bootstrap}")
    check_thresholds(max_mean_drop, max_flip_rate)
    box_values = parse_box(box) if box is not None else None
    if mask is not None:
        read_mask(mask)
    if masks is not None and not masks.is_dir():
        raise OccludeError(f"--masks must be a folder: {masks}")
    options = occlusion.options()
    classifier, preprocessing, class_names = model_flags.load(model)
    check_run(options, preprocessing, classifier, class_names)  # --target, --score, --baseline: before any image
    images, problems = _load_items(paths, recursive, out, quiet or json_out)
    masks_root = masks.resolve() if masks is not None else None
    images = [
        item
        for item in images
        if not is_mask_file(item.path)
        and not (masks_root is not None and masks_root in item.path.resolve().parents)
        and (mask is None or item.path.resolve() != mask.resolve())
    ]
    if not images:
        raise OccludeError("no images to test (files named *.mask.png are masks, not inputs)")
    check_output_folder(out)
    region_text = (
        "box " + ",".join(f"{v:g}" for v in box_values)
        if box_values is not None
        else f"mask {mask}"
        if mask is not None
        else f"masks {masks}/<name>.png"
        if masks is not None
        else "masks <image>.mask.png"
    )
    rows: List[BiasRow] = [BiasRow(path=arg, status="error", error=problem) for arg, problem in problems]
    for index, item in enumerate(images):
        region: dict
        if box_values is not None:
            region = {"box": box_values}
        else:
            mask_path = (
                mask
                if mask is not None
                else (masks / f"{item.source_stem}.png" if masks is not None else convention_mask_path(item.path))
            )
            if not mask_path.is_file():
                rows.append(
                    BiasRow(path=str(item.path), status="error", error=f"no mask for this image: expected {mask_path}")
                )
                print_error(f"{item.path}: no mask for this image: expected {mask_path}")
                continue
            region = {"mask": mask_path}
        try:
            rows.append(
                bias_image(
                    classifier,
                    item.path,
                    options,
                    preprocessing=preprocessing,
                    labels=class_names,
                    controls=controls,
                    seed=occlusion.seed + index,
                    **region,
                )
            )
        except OccludeError as exc:
            rows.append(BiasRow(path=str(item.path), status="error", error=str(exc)))
            print_error(f"{item.path}: {exc}")
    settings = {
        "model": str(model),
        "region": region_text,
        "baseline": options.baseline,
        "target": occlusion.target,
        "score": occlusion.score.value,
        "controls": controls,
    }
    ok = [r for r in rows if r.status == "ok"]
    summary = None
    if ok:
        summary = summarise_bias(
            rows,
            labels=class_names,
            max_mean_drop=max_mean_drop,
            max_flip_rate=max_flip_rate,
            bootstrap=bootstrap,
            seed=occlusion.seed,
            settings=None,
        )
    write_bias(out, rows, summary, settings)
    if json_out:
        from ..outputs.records import format_json

        sys.stdout.write(format_json(bias_document(rows, summary, settings)) + "\n")
    elif not quiet and summary is not None:
        _print_bias(summary, region_text, out)
    if summary is not None and not summary.passed:
        for reason in summary.reasons:
            print_error(reason, "fail")
    if any(r.status == "error" for r in rows):
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
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx).")],
    image: Annotated[
        Path,
        typer.Argument(
            help="The image to explain: a photo, a DICOM slice (2-D model), a NIfTI volume or a DICOM series folder with --series (3-D model)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("occlude-out"),
    noise: Annotated[
        str,
        typer.Option(
            "--noise",
            help="Largest change of a pixel, as a fraction of the pixel range: 2/255 or 0.008. Medical inputs: of the span the model's intensity transform maps to its input range (the window width; the intensity range; else the input's range of values), added in real units before it.",
        ),
    ] = "2/255",
    trials: Annotated[int, typer.Option("--trials", help="Noisy copies (seeded by --seed).")] = 8,
    patch: Annotated[
        Optional[str],
        typer.Option(help="Occluding patch, N, HxW or DxHxW for 3-D models \\[default: 1/14 of the input side]."),
    ] = None,
    box: Annotated[
        Optional[str],
        typer.Option(
            help="Suspected patch x0,y0,x1,y1 (original image pixels): is it necessary and sufficient for the prediction? 2-D inputs only."
        ),
    ] = None,
    expect: Annotated[
        Optional[str],
        typer.Option(
            "--expect",
            help="With --box: the class the image should have (index or label): does occluding the patch restore it?",
        ),
    ] = None,
    timing: Annotated[bool, typer.Option("--timing/--no-timing", help="Record timings in the JSON.")] = True,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print STEM.stability.json on stdout (nothing else).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Is the explanation stable? Maps of seeded noisy copies compared with the clean map; with --box, the patch test."""
    from ..analyses.explain import check_run, parse_hw
    from ..analyses.stability import parse_amplitude
    from ..analyses.stability import stability as run_stability
    from ..loaders.maps import parse_box
    from ..outputs.analysis_write import stability_document, write_stability

    amplitude = parse_amplitude(noise)
    if trials < 1:
        raise OccludeError(f"--trials must be at least 1, got {trials}")
    box_values = parse_box(box) if box is not None else None
    if expect is not None and box is None:
        raise OccludeError("--expect needs --box (the patch whose occlusion should restore that class)")
    options = occlusion.options(patch=parse_hw(patch, "--patch") if patch is not None else None, **medical.fields())
    classifier, preprocessing, class_names = model_flags.load(model)
    check_run(options, preprocessing, classifier, class_names)  # --target, --patch, --score: before the image
    check_output_folder(out)
    result = run_stability(
        classifier,
        image,
        options,
        preprocessing=preprocessing,
        labels=class_names,
        amplitude=amplitude,
        trials=trials,
        seed=occlusion.seed,
        box=box_values,
        clean_class=expect,
    )
    from ..outputs.names import stem_of

    stem = stem_of(image)
    write_stability(out, stem, result, timing=timing)
    if json_out:
        from ..outputs.records import format_json

        sys.stdout.write(format_json(stability_document(result, timing)) + "\n")
        return
    if quiet:
        return
    s = result.summary()
    e = result.explanation
    stdout.print(
        f"class {e.target} {safe(e.label(e.target) or '')}: {s['trials']} noisy copies ({result.noise_text()}): "
        f"Spearman mean {_fmt(s['spearman']['mean'])} (min {_fmt(s['spearman']['min'])}), "
        f"top-10% IoU mean {_fmt(s['top_iou']['mean'])} (min {_fmt(s['top_iou']['min'])}), "
        f"prediction flips {s['prediction_flips']}"
    )
    p = result.patch_test
    if p is not None:

        def name(c: Optional[int]) -> str:
            return f"{c} {e.label(c) or ''}".strip() if c is not None else ""

        line = (
            f"patch test: as given {name(p.predicted)}; patch occluded -> {name(p.occluded_class)} "
            f"({'necessary' if p.necessary else 'not necessary'}); patch alone -> {name(p.kept_class)} "
            f"({'sufficient' if p.sufficient else 'not sufficient'})"
        )
        if p.restores is not None:
            line += f"; restores {name(p.clean_class)}: {'yes' if p.restores else 'no'}"
        stdout.print(safe(line))
    stdout.print(f"wrote {safe(str(out / (stem + '.stability.json')))}")


def info_layers(model: Path, *, json_out: bool = False, model_flags: Optional[ModelFlags] = None) -> None:
    """`occlude info MODEL --layers`: every inner tensor with its op and shape, whether the model can be cut there
    (a valid --layer), and its receptive field on the input where the receptive-field analysis knows it."""
    from ..analyses.explain import resolve_preprocessing
    from ..analyses.layers import inner_tensors
    from ..loaders.model import OnnxClassifier

    flags = model_flags or ModelFlags()
    classifier = OnnxClassifier(
        model, device=flags.device.value, input_name=flags.input_name, output_name=flags.output_name
    )
    shape: Optional[List[int]]
    try:
        preprocessing = resolve_preprocessing(classifier)
        size = list(preprocessing.size)  # (H, W), or (D, H, W) for 3-D models
        shape = (
            [1, preprocessing.channels, *size]
            if preprocessing.layout.startswith("NC")
            else [1, *size, preprocessing.channels]
        )
    except OccludeError:  # dynamic height/width and no metadata: symbolic dims stay unknown ('?')
        shape = None
    rows = inner_tensors(classifier, shape)
    fields = _receptive_fields(classifier.path, shape) if shape is not None else None
    for row in rows:
        row["receptive_field"] = fields.get(row["name"]) if fields is not None else None
    if json_out:
        from ..outputs.records import format_json

        sys.stdout.write(format_json({"model": str(model), "input_shape": shape, "tensors": rows}) + "\n")
        return
    table = Table(
        title=safe(
            f"{model}: {len(rows)} inner tensors, {sum(r['valid_cut'] for r in rows)} valid cut points (--layer)"
        ),
        title_justify="left",
    )
    for name in ("tensor", "op", "shape", "valid cut"):
        table.add_column(name)
    if fields is not None:
        table.add_column("receptive field (stride)")
    for row in rows:
        cells = [
            safe(row["name"]),
            safe(row["op"]),
            "x".join("?" if d is None else str(d) for d in (row["shape"] or [])),
            "yes" if row["valid_cut"] else "no",
        ]
        if fields is not None:
            rf = row["receptive_field"]
            cells.append(f"{rf['size'][0]}x{rf['size'][1]} ({rf['stride'][0]}x{rf['stride'][1]})" if rf else "")
        table.add_row(*cells)
    stdout.print(table)


def _receptive_fields(path: Path, shape: List[int]) -> Optional[dict]:
    """name -> {"size": [h, w], "stride": [h, w]} from inference.receptive when that module exists (and the
    analysis succeeds), else None."""
    try:
        from ..inference import receptive  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        tensors = receptive.local_tensors(str(path), input_shape=shape)
    except Exception:  # the analysis is optional here: no column rather than no listing
        return None
    return {
        name: {"size": [t.rf[0].size, t.rf[1].size], "stride": [t.rf[0].stride, t.rf[1].stride]}
        for name, t in tensors.items()
    }
