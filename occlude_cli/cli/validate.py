"""`occlude compare` and `occlude check`: the validation commands (Typer only; the work is in
:mod:`occlude_cli.analyses.validate`).

Exit codes of `occlude check` (for CI): 0 every image passed; 4 at least one image failed the check
(the model looks elsewhere); 3 at least one image could not be checked (unreadable image, missing mask,
box outside the image; takes precedence over 4); 1 error before any image (model, flags, output folder).
"""

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import OccludeError
from .common import (
    ExitCode,
    MedicalInputFlags,
    ModelFlags,
    OcclusionFlags,
    RenderFlags,
    RunNotes,
    check_output_folder,
    fail,
    one_line,
    print_error,
    safe,
    stderr,
    stderr_is_terminal,
    stdout,
    user_errors,
    with_flags,
)
from .run import shorten_path

COMPARE_EXAMPLES = """
[bold]Examples[/]

  occlude compare model.onnx cat.jpg gradcam.npy
  occlude compare model.onnx cat.jpg rise.png --patch 32 --target 285 -o cmp/
  occlude compare model.onnx cat.jpg map.npy \\
      --deletion-baseline black --insertion-baseline blur  [dim]# as Petsiuk et al.[/]

OTHER_MAP is a 2-D .npy array (singleton axes are dropped) or a greyscale PNG of any resolution: it is resized to the model input (a map the size of the original image is cropped like the image first). Higher values mean more important.

DICOM slices (2-D models) take the same maps. NIfTI volumes and DICOM series (--series) with 3-D models take a (D, H, W) .npy in occlude's layout (axial slices, as occlude's STEM.npy) covering the input, any resolution, or a NIfTI map (.nii/.nii.gz), placed on the model grid through its affine (world coordinates): e.g. another tool's map saved on the scan's grid.

  occlude compare sample_models/lesion3d.onnx scan.nii.gz other_method.nii.gz --fractions ""

Writes OUT/STEM.compare.json (agreement, curves, AUCs) and OUT/STEM.compare.png (both maps and the curves). Deletion AUC: lower is better; insertion AUC: higher is better.
"""

CHECK_EXAMPLES = """
[bold]Examples[/]

  occlude check model.onnx dog.jpg --box 40,30,200,180 --min-energy 0.5
  occlude check model.onnx dog.jpg --mask dog_region.png --require-peak
  occlude check model.onnx data/ --require-peak   [dim]# masks: data/NAME.mask.png[/]
  occlude check model.onnx data/ -r --masks masks/ --json -q | jq .counts

[bold]Regions[/]: --box x0,y0,x1,y1 in original image pixels; or --mask FILE, an image whose white (grey >= 128) pixels mark the region (transparent pixels are outside: RGBA, LA and palette masks count as they look over black), stretched over the original image; or per image: --masks DIR with DIR/<relative name>.png, or by default the file next to the image named NAME.mask.png (files named *.mask.png are never taken as inputs).

[bold]Exit codes[/]: 0 all images pass; 4 some image fails the check (a CI job fails on a model that learned a shortcut); 3 some image could not be checked (takes precedence over 4); 1 error before any image (model, flags, output folder). Without --min-energy or --require-peak every image passes.
"""


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, medical=MedicalInputFlags)
def compare(
    model: Path = typer.Argument(..., help="ONNX classifier (.onnx)."),
    image: Path = typer.Argument(..., help="The image the other map explains, or a folder of images (with --maps)."),
    other_map: Optional[Path] = typer.Argument(
        None,
        help="The other method's map: 2-D .npy or greyscale PNG, any resolution (not with --maps); for a 3-D model a (D, H, W) .npy in occlude's layout or a NIfTI map (placed by its affine).",
    ),
    maps: Optional[Path] = typer.Option(
        None,
        "--maps",
        help="Folder mode: IMAGE is a folder and the other map of IMAGE/rel/a.jpg is MAPS/rel/a.npy (or .png); per-image rows and dataset means with 95% bootstrap intervals in compare.json/.csv.",
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Folder mode: look into sub-folders."),
    out: Path = typer.Option(Path("occlude-out"), "--out", "-o", help="Output folder."),
    name: Optional[str] = typer.Option(
        None, help="Name of the other method in the PNG and JSON \\[default: the map's file name]."
    ),
    steps: int = typer.Option(50, help="Deletion/insertion steps (each curve costs steps+1 forward passes)."),
    top_fraction: float = typer.Option(0.1, "--top-fraction", help="Share of pixels whose overlap (IoU) is reported."),
    fractions: str = typer.Option(
        "1,2,5,10,20,50",
        "--fractions",
        help="Top-k percentages for sufficiency and completeness (one forward pass per percentage and map, plus one); infidelity reuses the occlusion windows' scores (no extra pass). Empty: skip these three metrics.",
    ),
    map_kind: str = typer.Option(
        "attribution",
        "--map-kind",
        help="How the other map predicts a score change, for infidelity: attribution (Grad-CAM, IG, SHAP, LIME: summed over a window) or gradient (saliency: times input - baseline first).",
    ),
    deletion_baseline: Optional[str] = typer.Option(
        None,
        "--deletion-baseline",
        help="What deleted pixels become \\[default: --baseline]; also the baseline of sufficiency and completeness.",
    ),
    insertion_baseline: Optional[str] = typer.Option(
        None, "--insertion-baseline", help="What insertion starts from \\[default: --baseline]."
    ),
    patch: Optional[str] = typer.Option(
        None, help="Occluding patch, N, HxW or DxHxW for 3-D models \\[default: 1/14 of the input side]."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison JSON on stdout (nothing else)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    medical: MedicalInputFlags = None,  # type: ignore[assignment]
) -> None:
    """Compare another method's saliency map with occlusion's: correlation, top-k overlap, deletion and insertion
    curves, infidelity, sufficiency and completeness; one image or a folder (--maps)."""
    from ..analyses.explain import check_run, parse_hw
    from ..analyses.validate import MAP_KINDS, check_fractions, compare_file
    from ..core.baselines import parse_baseline
    from ..outputs.write import write_comparison

    options = occlusion.options(patch=parse_hw(patch, "--patch") if patch is not None else None, **medical.fields())
    if steps < 1:
        raise OccludeError(f"--steps must be at least 1, got {steps}")
    if not 0 < top_fraction <= 1:
        raise OccludeError(f"--top-fraction must be in (0, 1], got {top_fraction}")
    if map_kind not in MAP_KINDS:
        raise OccludeError(f"--map-kind must be one of {', '.join(MAP_KINDS)}, got {map_kind!r}")
    try:
        percents = [float(v) for v in fractions.replace(" ", "").split(",") if v]
    except ValueError:
        raise OccludeError(f"--fractions takes percentages separated by commas, got {fractions!r}") from None
    try:
        top_k = check_fractions([p / 100.0 for p in percents]) if percents else ()
    except OccludeError:
        raise OccludeError(f"--fractions must be increasing percentages in (0, 100], got {fractions!r}") from None
    for spec in (deletion_baseline, insertion_baseline):
        if spec is not None:
            parse_baseline(spec)
    if maps is not None:
        if other_map is not None:
            raise OccludeError("give OTHER_MAP for one image, or --maps DIR for a folder, not both")
        if not maps.is_dir():
            raise OccludeError(f"--maps must be a folder: {maps}")
    elif other_map is None:
        raise OccludeError("missing OTHER_MAP (or --maps DIR with a folder of images)")
    else:
        from ..loaders.maps import read_saliency_map

        read_saliency_map(other_map, dims=(2, 3))  # a bad map fails before the model loads
    classifier, preprocessing, class_names = model_flags.load(model)
    check_run(options, preprocessing, classifier, class_names)  # --target, --patch, --score: before any image
    check_output_folder(out)
    settings = dict(
        steps=steps,
        top_fraction=top_fraction,
        deletion_baseline=deletion_baseline,
        insertion_baseline=insertion_baseline,
        batch_size=occlusion.batch_size,
        fractions=top_k or None,
        other_kind=map_kind,
    )
    if maps is not None:
        _compare_folder(
            classifier,
            preprocessing,
            class_names,
            options,
            image,
            maps,
            out,
            settings,
            name,
            recursive,
            json_out,
            quiet,
        )
        return
    explanation, other, comparison = compare_file(
        classifier, image, other_map, options, preprocessing=preprocessing, labels=class_names, name=name, **settings
    )
    RunNotes(quiet or json_out).show(explanation)
    from ..outputs.names import stem_of

    written = write_comparison(explanation, other, comparison, out, stem_of(image))
    if json_out:
        from ..outputs.records import format_json

        sys.stdout.write(format_json(comparison) + "\n")
    elif not quiet:
        _print_comparison(stdout, comparison, written)


def _map_for(maps: Path, key: str) -> Optional[Path]:
    for suffix in (".npy", ".png", ".tif", ".tiff", ".nii.gz", ".nii"):
        candidate = maps / f"{key}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _compare_folder(
    classifier, preprocessing, class_names, options, folder, maps, out, settings, name, recursive, json_out, quiet
) -> None:
    """Folder mode of compare: one comparison per image with a map, then dataset means with bootstrap CIs."""
    from ..analyses.validate import compare_dataset, compare_file, comparison_numbers
    from ..batch import discover_inputs
    from ..outputs.records import format_json
    from ..outputs.write import write_compare_summary, write_comparison

    notes: list = []
    images, problems = discover_inputs([str(folder)], recursive=recursive, exclude=[out], notes=notes)
    if not quiet and not json_out:
        for path, note in notes:
            stderr.print(f"[yellow]note:[/] {safe(str(path))}: {safe(note)}")
    maps_root = maps.resolve()
    images = [i for i in images if maps_root not in i.path.resolve().parents]
    rows: List[dict] = []
    run_notes = RunNotes(quiet or json_out)
    for arg, problem in problems:
        rows.append({"path": arg, "status": "error", "error": problem})
    for item in images:
        other = _map_for(maps, item.source_stem)
        if other is None:
            rows.append(
                {
                    "path": str(item.path),
                    "status": "error",
                    "error": f"no map for this image: expected {maps}/{item.source_stem}.npy or .png",
                }
            )
            print_error(f"{one_line(str(item.path))}: no map in {maps}")
            continue
        try:
            explanation, resized, comparison = compare_file(
                classifier,
                item.path,
                other,
                options,
                preprocessing=preprocessing,
                labels=class_names,
                name=name,
                **settings,
            )
            run_notes.show(explanation)
            write_comparison(explanation, resized, comparison, out, item.key)
            rows.append({"path": str(item.path), "status": "ok", "map": str(other), **comparison_numbers(comparison)})
            if not quiet and not json_out and not stderr_is_terminal():
                stderr.print(safe(f"ok {item.path}"))
        except OccludeError as exc:
            rows.append({"path": str(item.path), "status": "error", "map": str(other), "error": str(exc)})
            print_error(f"{one_line(str(item.path))}: {exc}")
    ok = [r for r in rows if r["status"] == "ok"]
    summary = compare_dataset(ok)
    document = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
        "summary": summary,
        "images": rows,
    }
    write_compare_summary(document, out)
    if json_out:
        sys.stdout.write(format_json(document) + "\n")
    elif not quiet:
        _print_compare_summary(stdout, summary, out)
    if any(r["status"] == "error" for r in rows):
        raise typer.Exit(ExitCode.IMAGES_FAILED)


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


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, render=RenderFlags)
def check(
    model: Path = typer.Argument(..., help="ONNX classifier (.onnx)."),
    paths: List[str] = typer.Argument(..., help="Image files, folders or glob patterns.", show_default=False),
    box: Optional[str] = typer.Option(
        None, help="Region x0,y0,x1,y1 in original image pixels (the same for every image)."
    ),
    mask: Optional[Path] = typer.Option(
        None, help="Region as a mask image, white = region, transparent = outside (the same for every image)."
    ),
    masks: Optional[Path] = typer.Option(
        None, help="Folder of per-image masks: DIR/<relative name>.png \\[default: NAME.mask.png next to each image]."
    ),
    min_energy: Optional[float] = typer.Option(
        None,
        "--min-energy",
        help="Fail an image when less than this share (0..1) of the positive map lies in the region.",
    ),
    require_peak: bool = typer.Option(
        False,
        "--require-peak",
        help="Fail an image when the map's peak lies outside the region (pointing game; the peak is the pixel of the maximal plateau nearest its centre, as check.csv reports it).",
    ),
    out: Path = typer.Option(Path("occlude-out"), "--out", "-o", help="Folder for check.json and check.csv."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folder arguments."),
    patch: Optional[str] = typer.Option(None, help="Occluding patch, N or HxW \\[default: 1/14 of the input side]."),
    json_out: bool = typer.Option(False, "--json", help="Print check.json on stdout (nothing else)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table; failures and errors still go to stderr."),
    pictures: bool = typer.Option(
        True,
        "--pictures/--no-pictures",
        help="Write STEM.check.png per image: the overlay with the region drawn and the verdict in the title.",
    ),
    report: bool = typer.Option(
        False, "--report", help="Also write OUT/index.html, an HTML report (see `occlude report`)."
    ),
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    render: RenderFlags = None,  # type: ignore[assignment]
) -> None:
    """CI check: does the model look where it should? Pointing game and energy share inside a region."""
    from ..analyses.explain import check_run, parse_hw
    from ..analyses.validate import CheckRow, check_min_energy
    from ..batch import discover_inputs
    from ..loaders.maps import is_mask_file, parse_box, read_mask
    from ..outputs.records import check_document
    from ..outputs.write import write_check_summary

    given = [flag for flag, value in (("--box", box), ("--mask", mask), ("--masks", masks)) if value is not None]
    if len(given) > 1:
        raise OccludeError(f"give one region source, not {' and '.join(given)}")
    min_energy = check_min_energy(min_energy)
    box_values = parse_box(box) if box is not None else None
    if mask is not None:
        read_mask(mask)  # one mask for every image: a bad one is an error before any image
    if masks is not None and not masks.is_dir():
        raise OccludeError(f"--masks must be a folder: {masks}")
    options = occlusion.options(patch=parse_hw(patch, "--patch") if patch is not None else None)
    style = render.style()
    classifier, preprocessing, class_names = model_flags.load(model)
    check_run(options, preprocessing, classifier, class_names)  # --target, --patch, --score: before any image
    notes: list = []
    images, problems = discover_inputs(paths, recursive=recursive, exclude=[out], notes=notes)
    if not quiet:
        for path, note in notes:
            stderr.print(f"[yellow]note:[/] {safe(str(path))}: {safe(note)}")
    masks_root = masks.resolve() if masks is not None else None
    the_mask = mask.resolve() if mask is not None else None
    images = [  # masks are never inputs: *.mask.png, files under --masks, the --mask file
        item
        for item in images
        if not is_mask_file(item.path)
        and not (masks_root is not None and masks_root in item.path.resolve().parents)
        and item.path.resolve() != the_mask
    ]
    if not images and not problems:
        raise OccludeError("no images to check (files named *.mask.png are masks, not inputs)")
    check_output_folder(out)

    if box_values is not None:
        region_text = "box " + ",".join(f"{v:g}" for v in box_values)
    elif mask is not None:
        region_text = f"mask {mask}"
    elif masks is not None:
        region_text = f"masks {masks}/<name>.png"
    else:
        region_text = "masks <image>.mask.png"
    settings = {
        "region": region_text,
        "min_energy": min_energy,
        "require_peak": bool(require_peak),
        "target": occlusion.target,
        "patch": list(options.patch) if options.patch else None,
        "stride": list(options.stride) if options.stride else None,
        "baseline": options.baseline,
        "score": occlusion.score.value,
        "model": str(model),
    }

    rows: List[CheckRow] = []
    interrupted = False
    show_progress = not quiet and not json_out and stderr_is_terminal() and len(images) > 1
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=not show_progress,
        transient=True,
    )
    run_notes = RunNotes(quiet or json_out)
    with progress:
        task = progress.add_task("checking", total=len(images))
        try:
            for item in images:
                progress.update(task, description=safe(item.key))
                rows.append(
                    _check_one(
                        item,
                        classifier,
                        options,
                        preprocessing,
                        class_names,
                        box_values,
                        mask,
                        masks,
                        min_energy,
                        require_peak,
                        out if pictures else None,
                        style,
                        run_notes,
                    )
                )
                _report(progress.console, rows[-1], quiet or json_out)
                progress.advance(task)
        except KeyboardInterrupt:
            interrupted = True
    done = len(rows)
    rows += [CheckRow(path=arg, status="error", error=problem) for arg, problem in problems]
    for _, problem in problems:
        print_error(problem)
    write_check_summary(rows, out, settings)
    if report:
        from ..outputs.report import build_report

        build_report(out)
    if json_out:
        from ..outputs.records import format_json

        sys.stdout.write(format_json(check_document(rows, settings)) + "\n")
    elif not quiet:
        _print_checks(stdout, rows, out, settings)
    if interrupted:
        raise fail(f"interrupted after {done} of {len(images)} images; check.json holds those", ExitCode.INTERRUPTED)
    statuses = {row.status for row in rows}
    if "error" in statuses:
        raise typer.Exit(ExitCode.IMAGES_FAILED)
    if "fail" in statuses:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _check_one(
    item,
    classifier,
    options,
    preprocessing,
    class_names,
    box_values,
    mask,
    masks,
    min_energy,
    require_peak,
    picture_dir=None,
    style=None,
    notes: Optional[RunNotes] = None,
):
    """One discovered image -> its row: finds its region (the box, the one mask, DIR/<key>.png or the
    NAME.mask.png next to it) and runs the check; a missing per-image mask is an error row. ``notes`` shows
    the explanation's notes (once per command)."""
    from ..analyses.validate import CheckRow, check_file
    from ..loaders.maps import convention_mask_path

    if box_values is not None:
        region = {"box": box_values}
    else:
        if mask is not None:
            mask_path = mask
        elif masks is not None:
            mask_path = masks / f"{item.source_stem}.png"
        else:
            mask_path = convention_mask_path(item.path)
        if not mask_path.is_file():
            return CheckRow(
                path=str(item.path),
                status="error",
                mask=str(mask_path),
                error=f"no mask for this image: expected {mask_path}",
            )
        region = {"mask": mask_path}
    kept: dict = {}
    row = check_file(
        classifier,
        item.path,
        options,
        preprocessing=preprocessing,
        labels=class_names,
        min_energy=min_energy,
        require_peak=require_peak,
        keep=kept,
        **region,
    )
    if notes is not None and "explanation" in kept:
        notes.show(kept["explanation"])
    if picture_dir is not None and "explanation" in kept and row.status in ("pass", "fail"):
        from ..outputs.write import write_check_picture

        written = write_check_picture(
            kept["explanation"], row, kept["region"], picture_dir, item.key, box=box_values, style=style
        )
        row.overlay = written.name if "/" not in item.key else f"{item.key}.check.png"
    return row


def _report(console, row, quiet: bool) -> None:
    """Failures and errors go to stderr as they happen (also under --quiet / --json, where nothing else
    is shown); when stderr is not a terminal (CI logs) every finished image gets one line."""
    if row.status == "error":
        console.print(f"[bold red]error:[/] {safe(row.path)}: {safe(row.error or '')}")
    elif row.status == "fail" and (quiet or not stderr_is_terminal()):
        console.print(f"[bold red]fail:[/] {safe(row.path)}: {safe('; '.join(row.reasons))}")
    elif row.status == "pass" and not quiet and not stderr_is_terminal():
        energy = "n/a" if row.energy_share is None else f"{row.energy_share:.3f}"
        console.print(safe(f"pass {row.path} energy={energy} seconds={row.seconds}"))


def _print_checks(console, rows, out: Path, settings: dict) -> None:
    table = Table(
        title=f"occlude check: {len(rows)} image(s), region {settings['region']} -> {out}", title_justify="left"
    )
    table.add_column("image", no_wrap=True)
    for column in ("status", "target", "peak in region", "energy share", "region share", "why"):
        table.add_column(column)
    for row in rows:
        style = {"pass": "green", "fail": "red", "error": "red"}.get(row.status, "")
        target = f"{row.target_index} {row.target_label or ''}".strip() if row.target_index is not None else ""
        table.add_row(
            safe(shorten_path(row.path, 40)),
            f"[{style}]{row.status}[/]",
            safe(target),
            "" if row.pointing_game is None else ("yes" if row.pointing_game else "no"),
            _fmt(row.energy_share),
            _fmt(row.region_fraction),
            safe(row.error or "; ".join(row.reasons)),
        )
    console.print(table)


def _print_comparison(console, comparison: dict, written) -> None:
    agreement, curves = comparison["agreement"], comparison["curves"]
    name = comparison["other_map"]["name"] or "other"
    label = comparison["target"]["label"]
    table = Table(
        title=f"occlude compare: class {comparison['target']['index']}{f' ({safe(label)})' if label else ''}",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("occlusion", justify="right")
    table.add_column(safe(name), justify="right")
    table.add_column("better")
    table.add_row(
        "deletion AUC (lower is better)",
        _fmt(curves["occlusion"]["deletion_auc"]),
        _fmt(curves["other"]["deletion_auc"]),
        comparison["better"]["deletion"],
    )
    table.add_row(
        "insertion AUC (higher is better)",
        _fmt(curves["occlusion"]["insertion_auc"]),
        _fmt(curves["other"]["insertion_auc"]),
        comparison["better"]["insertion"],
    )
    fidelity = comparison.get("fidelity")
    if fidelity:
        ours, theirs = fidelity["maps"]["occlusion"], fidelity["maps"]["other"]
        for label, path, lower in (
            ("infidelity, unexplained share (lower is better)", ("infidelity", "unexplained"), True),
            ("sufficiency, mean share kept (higher is better)", ("sufficiency", "mean_kept"), False),
            ("completeness, mean share removed (higher is better)", ("completeness", "mean_removed"), False),
        ):
            a, b = ours[path[0]][path[1]], theirs[path[0]][path[1]]
            verdict = (
                ""
                if a is None or b is None
                else ("tie" if abs(a - b) < 1e-12 else ("occlusion" if (a < b) == lower else "other"))
            )
            table.add_row(label, _fmt(a), _fmt(b), verdict)
    console.print(table)
    console.print(
        f"Pearson {_fmt(agreement['pearson'])}, Spearman {_fmt(agreement['spearman'])}, "
        f"top {agreement['top_fraction'] * 100:g}% IoU {_fmt(agreement['top_iou'])} over {agreement['pixels']} pixels"
    )
    for path in written:
        console.print(f"wrote {safe(str(path))}")
