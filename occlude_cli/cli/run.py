"""`occlude run`, `occlude summary` and `occlude info`: flags in, library calls, progress and tables out."""

import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..core.baselines import BASELINES
from ..errors import OccludeError
from .common import (
    ExitCode,
    MedicalFlags,
    ModelFlags,
    OcclusionFlags,
    RenderFlags,
    check_output_folder,
    fail,
    one_line,
    print_error,
    print_json,
    print_note,
    region_values,
    safe,
    stderr,
    stderr_is_terminal,
    stdout,
    user_errors,
    with_flags,
)

REFINE_STEP_MAX = 100  # a coarse step beyond this leaves a grid of one or two windows: nothing to interpolate

RUN_EXAMPLES = """
[bold]Examples[/]

  occlude run sample_models/efficientnet_lite0.onnx sample_images/cat.jpg
  occlude run model.onnx photos/ --recursive --out maps/ --patch 32 --stride 16
  occlude run model.onnx img.png --baseline blur --target "Egyptian cat" --top-k 3
  occlude run model.onnx 'data/**/*.jpg' --json --quiet | jq '.counts'
  occlude run model.onnx data/ --shard 2/4 --resume --out maps/   [dim]# one of 4 CI jobs[/]
  occlude run model.onnx img.png --patch 48 --stride 8 --refine     [dim]# about 4x fewer forward passes[/]
  occlude run model.onnx data/ --dry-run                            [dim]# how long will it take?[/]
  occlude run model.onnx img.png --patch 8,16,32 --multiscale       [dim]# is the map stable across patch sizes?[/]
  occlude run model.onnx img.png --metrics                          [dim]# + deletion/insertion AUC in the JSON[/]
  occlude run binary.onnx xray.png --score logit                    [dim]# a one-logit head, explained as its logit[/]
  occlude run ct2d.onnx slice.dcm --window bone                     [dim]# a DICOM slice, CT bone window[/]
  occlude run lesion3d.onnx scan.nii.gz --patch 8x8x8 --stride 4    [dim]# a 3-D model on a NIfTI volume[/]
  occlude run lesion3d.onnx series_dir/ --series                    [dim]# a DICOM series as one volume[/]

[bold]Baselines[/] (--baseline)

""" + "\n".join(f"  [cyan]{name}[/]: {safe(text)}" for name, text in BASELINES.items())

SUMMARY_EXAMPLES = "[bold]Example[/]\n\n  occlude summary maps/ --json | jq '.counts'"
INFO_EXAMPLES = (
    "[bold]Examples[/]\n\n  occlude info sample_models/efficientnet_lite0.onnx\n"
    "  occlude info sample_models/digits_cnn.onnx --labels\n"
    "  occlude info model.onnx --json | jq .preprocessing\n"
    "  occlude info sample_models/efficientnet_lite0.onnx --layers   [dim]# cut points for occlude layers[/]"
)


@user_errors
@with_flags(model_flags=ModelFlags, occlusion=OcclusionFlags, render=RenderFlags, medical=MedicalFlags)
def run(
    model: Annotated[
        Path, typer.Argument(help="ONNX classifier (.onnx) with one image input and a (batch, classes) output.")
    ],
    paths: Annotated[
        List[str], typer.Argument(help="Image files, folders or glob patterns ('data/**/*.png').", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder; keeps the inputs' relative folder layout.")
    ] = Path("occlude-out"),
    patch: Annotated[
        Optional[str],
        typer.Option(
            help="Occluding patch, N, HxW or DxHxW (3-D models) in model-input pixels \\[default: 1/14 of the input side, 16 on 224; 1/4 of each side for 3-D models]. Several (8,16,32): one map per patch size plus their rank correlations in STEM.scales.json."
        ),
    ] = None,
    multiscale: Annotated[
        bool,
        typer.Option(
            "--multiscale",
            help="With several --patch sizes: also write STEM.multiscale.* (the mean of the maps, each scaled to [-1, 1]).",
        ),
    ] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="Add the map's deletion and insertion curves and AUCs (Petsiuk et al. 2018) and its infidelity (no extra pass), sufficiency and completeness (one pass per top-k fraction) to the JSON; 102 + 13 extra forward passes.",
        ),
    ] = False,
    top_k: Annotated[
        int,
        typer.Option(
            "--top-k", help="Also compute the maps of the K best classes (no extra inference); saved as STEM.topk.npy."
        ),
    ] = 1,
    all_classes: Annotated[
        bool,
        typer.Option(
            "--all-classes",
            help="Also save every class's map (STEM.classes.npy) and the most probable class when each pixel is occluded (STEM.top_class.npy).",
        ),
    ] = False,
    region: Annotated[
        Optional[str],
        typer.Option(
            help="Occlude only inside this box x0,y0,x1,y1 (original image pixels); the rest of the map is null (not computed)."
        ),
    ] = None,
    refine: Annotated[
        bool,
        typer.Option(
            "--refine",
            help="Coarse-to-fine: score every --refine-step-th window, interpolate the rest, then score exactly where the drop is largest, within --refine-budget. Use with overlapping windows (stride <= patch/4).",
        ),
    ] = False,
    refine_step: Annotated[
        int,
        typer.Option(
            "--refine-step",
            help="With --refine: coarse pass takes at least every N-th window along each axis (1 to 100).",
        ),
    ] = 3,
    refine_budget: Annotated[
        float,
        typer.Option(
            "--refine-budget",
            help="With --refine: forward passes allowed, as a fraction of the exact map's, in (0, 1]. A cap: a --refine-step whose coarse lattice needs more is refused.",
        ),
    ] = 0.25,
    baseline_check: Annotated[
        bool,
        typer.Option(
            "--baseline-check",
            help="Compare baselines instead of making maps: occlude the same 16 seeded random windows (--seed) with zero, mean, blur, tissue, p10, noise (and inpaint for 2-D) and report the mean change of the top-1 confidence; a table and OUT/baseline_check.json.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the number of windows and forward passes and a time estimate from one timed batch; run nothing else.",
        ),
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Look into sub-folders of folder arguments.")
    ] = False,
    npy: Annotated[bool, typer.Option("--npy/--no-npy", help="Write STEM.npy (the map as float32).")] = True,
    aggregate: Annotated[
        bool,
        typer.Option(
            "--aggregate", help="Also write aggregate.png/.npy: the mean of the per-image maps, each scaled to [-1, 1]."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip images whose outputs exist, are complete and were made with the same model, image and parameters.",
        ),
    ] = False,
    shard: Annotated[
        Optional[str], typer.Option(help="Process only share K of N (e.g. 2/4) of the inputs, deterministically.")
    ] = None,
    timing: Annotated[
        bool,
        typer.Option(
            "--timing/--no-timing", help="Record timings; --no-timing makes the JSON files byte-identical across runs."
        ),
    ] = True,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the run summary as JSON on stdout (nothing else goes to stdout).")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bars, no per-image lines and no table; errors still go to stderr."
        ),
    ] = False,
    report: Annotated[
        bool,
        typer.Option("--report", help="Also write OUT/index.html, an HTML report of the run (see `occlude report`)."),
    ] = False,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Run the images on Ray (needs the ray extra): alone or 'local' starts a Ray instance on this machine, 'auto' joins the cluster of `ray start`, HOST:PORT or ray://HOST:10001 connects to one. The outputs, summary and exit code are the same as without --ray; this process writes every file.",
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            help="With --ray: actors, each with its own model session \\[default: the cluster's CPUs // --threads, or GPUs // --gpus-per-worker].",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            "--gpus-per-worker",
            help="With --ray: GPUs per actor (0.5 = two actors share a GPU); actors with a GPU use CUDA.",
        ),
    ] = 0.0,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    render: RenderFlags = None,  # type: ignore[assignment]
    medical: MedicalFlags = None,  # type: ignore[assignment]
) -> None:
    """Explain images with an ONNX classifier: writes STEM.overlay.png, STEM.heatmap.png, STEM.json, STEM.npy."""
    from ..analyses.explain import ExplainOptions, check_run, parse_patches
    from ..batch import discover_inputs, parse_shard, remove_stale_temps, run_folder, summary_document, take_shard

    started = time.time()
    scales = parse_patches(patch) if patch is not None else []
    if refine and not 1 <= refine_step <= REFINE_STEP_MAX:
        raise OccludeError(
            f"--refine-step must be a whole number of windows from 1 to {REFINE_STEP_MAX}, got {refine_step}"
        )
    if multiscale and len(scales) < 2:
        raise OccludeError("--multiscale needs several patch sizes, e.g. --patch 8,16,32")
    if top_k < 1:
        raise OccludeError(f"--top-k must be at least 1, got {top_k}")
    options = occlusion.options(
        patch=scales[0] if scales else None,
        top_k=top_k,
        region=region_values(region),
        refine=refine,
        refine_step=refine_step,
        refine_budget=refine_budget,
        **medical.fields(),
    )
    shard_spec = parse_shard(shard)
    if ray is None and (workers is not None or gpus_per_worker):
        raise OccludeError("--workers and --gpus-per-worker need --ray")
    style = render.style()
    classifier, preprocessing, class_names = model_flags.load(model)
    if len(getattr(preprocessing, "size", ())) == 3 and (aggregate or len(scales) > 1):  # 3-D models (issue 12)
        raise OccludeError("--aggregate and several --patch sizes are for 2-D maps: not available for 3-D models")
    plan = None
    for patch_size in scales or [options.patch]:
        checked = check_run(
            ExplainOptions(**{**options.__dict__, "patch": patch_size}), preprocessing, classifier, class_names
        )
        plan = _memory_plan(classifier, preprocessing, options, checked, all_classes, plan)
    if plan is not None and plan.shrunk:
        options = ExplainOptions(**{**options.__dict__, "batch_size": plan.batch_size})
    notes: list = []
    every, problems = discover_inputs(paths, recursive=recursive, exclude=[out], notes=notes, series=medical.series)
    images = take_shard(every, shard_spec)
    if dry_run:
        _dry_run(classifier, images, problems, options, preprocessing, class_names, json_out, scales, metrics)
        return
    if baseline_check:
        _baseline_check(classifier, images, problems, options, preprocessing, class_names, out, json_out, quiet)
        return
    check_output_folder(out)
    removed = remove_stale_temps(out, started)  # left by a killed run: never by a run still writing
    if removed and not quiet:
        stderr.print(
            f"[yellow]note:[/] removed {len(removed)} temporary file(s) left by an interrupted run in {safe(str(out))}"
        )
    if not quiet:
        for path, note in notes:
            stderr.print(f"[yellow]note:[/] {safe(path)}: {safe(note)}")
    if classifier.batch_note and not quiet:
        stderr.print(f"[yellow]note:[/] {safe(classifier.batch_note)}")
    if plan is not None and plan.note() and not quiet:
        stderr.print(f"[yellow]note:[/] {safe(plan.note())}")
    for _, problem in problems:
        print_error(problem)

    terminal = stderr_is_terminal()
    show_progress = not quiet and not json_out and terminal
    log_lines = not quiet and not terminal  # CI logs: one line per finished image, as it finishes
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        disable=not show_progress,
        transient=False,
    )
    with progress:
        overall = progress.add_task("images", total=len(images), rate="") if len(images) > 1 else None
        windows_task = progress.add_task("windows", total=None, rate="")

        def on_image_start(image):
            progress.reset(windows_task, total=None, description=safe(image.source_stem or image.key), rate="")

        def on_windows(done: int, total: int):
            task = progress.tasks[windows_task]
            elapsed = task.elapsed or 0.0
            rate = f"{done / elapsed:.0f} win/s" if elapsed > 0 else ""
            progress.update(windows_task, completed=done, total=total, rate=rate)

        def on_image_done(image, row):
            if overall is not None:
                progress.advance(overall)
            if row.status == "failed":
                print_error(_failure_text(row))
            elif log_lines:
                stderr.print(safe(_log_line(row)))
            if row.warning and not quiet:
                stderr.print(f"[yellow]warning:[/] {safe(row.path)}: {safe(row.warning)}")

        executor = _executor(ray, workers, gpus_per_worker, classifier, model_flags, quiet or json_out) if ray else None
        # One image on Ray: its windows are split into chunks scored by the actors (the engine aggregates)
        images_executor = executor
        if executor is not None and len(images) == 1:
            from ..batch import LocalExecutor

            images_executor = LocalExecutor(classifier, on_windows if show_progress else None, window_executor=executor)
        try:
            result = run_folder(
                classifier,
                images,
                out,
                options,
                preprocessing=preprocessing,
                all_images=every,
                shard=shard_spec,
                problems=problems,
                aggregate=aggregate,
                report=report,
                labels=class_names,
                npy=npy,
                all_classes=all_classes,
                timing=timing,
                resume=resume,
                metrics=metrics,
                scales=scales,
                multiscale=multiscale,
                style=style,
                panels=render.panels,
                nifti=medical.nifti,
                executor=images_executor,
                on_image_start=on_image_start,
                on_windows=on_windows if show_progress else None,
                on_image_done=on_image_done,
                on_note=None if quiet else print_note,
            )
        finally:
            if executor is not None:
                executor.shutdown()
    rows = result.rows  # this process's images, then the arguments that named none
    if json_out:
        print_json(summary_document(rows))
    elif not quiet:
        print_table(rows, out)
        if result.folder is not None:
            _print_folder_notes(result.folder, quiet)
    if result.interrupted:
        raise fail(
            f"interrupted after {len(rows) - len(problems)} of {len(images)} images; re-run with --resume to finish",
            ExitCode.INTERRUPTED,
        )
    if any(r.status == "failed" for r in rows):
        raise typer.Exit(ExitCode.IMAGES_FAILED)


def _memory_plan(classifier, preprocessing, options, patch_stride, all_classes: bool, previous):
    """Check one image's working set against --max-memory (one line naming the flag when it cannot fit) and
    the batch that fits; with several patch sizes, the smallest batch of them."""
    import numpy as np

    from ..core.engine import window_starts
    from ..loaders.limits import plan_memory

    patch, stride = patch_stride
    size = tuple(preprocessing.size)
    channels = int(getattr(preprocessing, "channels", 1))
    itemsize = np.dtype(preprocessing.dtype).itemsize
    sample = int(np.prod(size)) * channels * itemsize
    requested = options.batch_size or classifier.default_batch_size(sample)
    windows = int(np.prod([len(window_starts(n, p, s)) for n, p, s in zip(size, patch, stride)]))
    plan = plan_memory(
        size,
        channels,
        itemsize,
        windows=windows,
        classes=classifier.num_classes,
        requested_batch=requested,
        all_classes=all_classes,
        targets=options.top_k,
    )
    return plan if previous is None or plan.batch_size < previous.batch_size else previous


def ray_address(value: str) -> Optional[str]:
    """--ray's value: None for a local instance, else the address to join."""
    import re

    if value == "local":
        return None
    if value == "auto" or value.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", value):
        return value
    raise OccludeError(
        f"--ray takes local, auto, HOST:PORT or ray://HOST:PORT, got {value!r} "
        "(put --ray after the inputs, or write --ray=ADDRESS)"
    )


def _executor(ray, workers, gpus_per_worker, classifier, model_flags, quiet):
    """A RayExecutor for the run: actors rebuild the model from its file with the same flags."""
    from ..executors.ray_backend import RayExecutor, model_spec_of

    if workers is not None and workers < 1:
        raise OccludeError(f"--workers must be at least 1, got {workers}")
    if not (gpus_per_worker == gpus_per_worker and 0.0 <= gpus_per_worker <= 64):
        raise OccludeError(f"--gpus-per-worker must be between 0 and 64, got {gpus_per_worker}")
    spec = model_spec_of(classifier)
    if gpus_per_worker > 0:
        spec["device"] = "cuda"
    threads = model_flags.threads or 1
    spec["threads"] = threads
    return RayExecutor(
        spec,
        address=ray_address(ray),
        workers=workers,
        threads_per_worker=threads,
        gpus_per_worker=gpus_per_worker,
        quiet=quiet,
    )


def _failure_text(row) -> str:
    """One line naming the image once, whether or not the error already names it."""
    error = row.error or "failed"
    return error if row.path in error else f"{row.path}: {error}"


def _log_line(row) -> str:
    target = f"{row.target_index} {row.target_label or ''}".strip() if row.target_index is not None else "-"
    score = f"{row.original_score:.4f}" if row.original_score is not None else "-"
    seconds = f"{row.seconds:.2f}s" if row.seconds is not None else "-"
    return one_line(f"{row.status} {row.path} target={target} score={score} {seconds}")


def _dry_run(classifier, images, problems, options, preprocessing, labels, json_out: bool, scales, metrics) -> None:
    from ..analyses.explain import estimate_run

    for _, problem in problems:
        print_error(problem)
    if not images:
        raise OccludeError("nothing to estimate: no readable image among the inputs")
    plan = estimate_run(
        classifier, images[0].path, options, preprocessing=preprocessing, labels=labels, scales=scales, metrics=metrics
    )
    plan["images"] = len(images)
    plan["estimated_total_s"] = plan["estimated_s"] * len(images)
    if json_out:
        print_json(plan)
        return
    parts = []
    if len(plan["per_patch"]) > 1:
        parts.append(
            "patch sizes "
            + ", ".join(f"{'x'.join(map(str, g['patch']))}: {g['forward_passes']}" for g in plan["per_patch"])
        )
    if plan["metrics_forward_passes"]:
        parts.append(f"--metrics: {plan['metrics_forward_passes']}")
    breakdown = f" ({'; '.join(parts)})" if parts else ""
    stdout.print(
        f"{plan['images']} image(s); per image: {plan['windows']} windows, {plan['forward_passes']} forward passes"
        f"{breakdown} (exact maps: {plan['exact_forward_passes']}), batch size {plan['batch_size']}, "
        f"{plan['seconds_per_forward_pass'] * 1000:.1f} ms per pass; "
        f"estimated {plan['estimated_s']:.1f} s per image, {plan['estimated_total_s']:.1f} s in all"
    )
    stdout.print(safe(incremental_line(plan["incremental"])), highlight=False)


def incremental_line(decision: dict) -> str:
    """--dry-run's line about incremental inference (explain.incremental_decision)."""
    mode = decision["mode"]
    if not decision["possible"]:
        return f"incremental inference ({mode}): not used, full passes: {decision['reason']}"
    if not decision["exact"]:
        reason = str(decision["reason"]).removeprefix("approximate: ")
        return f"incremental inference ({mode}): used, the maps will be APPROXIMATE: {reason}"
    return (
        f"incremental inference ({mode}): possible; a plan is built at the first image and used if it passes its "
        "self-check against full passes"
        + (" and the cost model expects >= 1.3x" if mode == "auto" else "")
        + " (estimates above are for full passes)"
    )


def _baseline_check(
    classifier, images, problems, options, preprocessing, labels, out: Path, json_out: bool, quiet: bool
) -> None:
    """--baseline-check: per input, the drift of the top-1 confidence under each baseline (issue 12)."""
    from ..analyses.explain import baseline_check
    from ..outputs.volumes import write_baseline_check

    for _, problem in problems:
        print_error(problem)
    if not images:
        raise OccludeError("nothing to check: no readable input")
    check_output_folder(out)
    documents, failed = [], 0
    for image in images:
        try:
            documents.append(
                baseline_check(classifier, image.path, None, options, preprocessing=preprocessing, labels=labels)
            )
        except OccludeError as exc:
            failed += 1
            print_error(f"{image.path}: {exc}")
    write_baseline_check(documents, out)
    if json_out:
        print_json({"inputs": documents})
    elif not quiet:
        for document in documents:
            table = Table(
                title=safe(
                    f"baselines on {one_line(document['path'])}: top-1 {document['target']['index']} "
                    f"{document['score']['kind']} {document['score']['original']:.4f}, "
                    f"{document['copies']} random windows"
                ),
                title_justify="left",
            )
            for name in ("baseline", "mean change", "mean |change|", "max |change|", "top-1 flips"):
                table.add_column(name)
            for r in document["baselines"]:
                table.add_row(
                    r["baseline"],
                    f"{r['mean_change']:+.4f}",
                    f"{r['mean_abs_change']:.4f}",
                    f"{r['max_abs_change']:.4f}",
                    f"{r['top1_flips']:.0%}",
                )
            stdout.print(table)
    if failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)


def shorten_path(path: str, width: int) -> str:
    """A path that fits ``width`` columns, cut from the left at a folder boundary ('…/b/c.png'), never
    mid-name unless the file name alone is too long."""
    path = one_line(path)
    if len(path) <= width:
        return path
    parts = path.split("/")  # never at a backslash: escapes are shown as \xNN
    for start in range(1, len(parts)):
        candidate = "…/" + "/".join(parts[start:])
        if len(candidate) <= width:
            return candidate
    return "…" + path[-(width - 1) :]


def print_table(rows, out: Path) -> None:
    width = max(20, (stdout.width or 80) - 40)
    table = Table(title=safe(f"occlude: {len(rows)} image(s) -> {out}"), title_justify="left")
    table.add_column("image", no_wrap=True, overflow="ellipsis")
    for name in ("status", "target", "score", "peak (y, x)", "s"):
        table.add_column(name)
    for row in rows:
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}.get(row.status, "")
        target = f"{row.target_index} {row.target_label or ''}".strip() if row.target_index is not None else ""
        table.add_row(
            safe(shorten_path(row.path, width)),
            f"[{style}]{row.status}[/]",
            safe(target) if row.status != "failed" else safe(row.error or ""),
            f"{row.original_score:.4f}" if row.original_score is not None else "",
            f"{row.peak_y}, {row.peak_x}" if row.peak_y is not None else "",
            f"{row.seconds:.2f}" if row.seconds is not None else "",
        )
    stdout.print(table)


def _print_folder_notes(state, quiet: bool) -> None:
    """What a folder's rebuild found that the user must know: shards still to run, stopped runs."""
    if quiet:
        return
    for note in state.notes:
        stderr.print(f"[yellow]note:[/] {safe(note)}")
    if state.job is not None and state.shards and not state.complete:
        missing = [k for k in range(1, state.shards + 1) if k not in state.shards_done]
        stderr.print(
            f"[yellow]note:[/] shards done: {len(state.shards_done)} of {state.shards} "
            f"(still to finish: {', '.join(map(str, missing))}); summary.json lists the shards done so far"
            + ("; the aggregate is written when every shard has finished" if state.aggregate_images is None else "")
        )


@user_errors
def summary(
    out_dir: Annotated[Path, typer.Argument(help="An output folder of `occlude run` (e.g. merged shards).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing; just rewrite summary.json/.csv.")
    ] = False,
) -> None:
    """Rebuild summary.json and summary.csv (and aggregate.* and index.html when the run made them) from the
    run's manifests in OUT_DIR: exactly the current results, every shard's. Exit 3 when an image failed or a
    shard has not finished."""
    from ..batch import rebuild, summary_document

    state = rebuild(out_dir)
    rows = state.rows
    if json_out:
        print_json(summary_document(rows, state.describe() if state.job else None))
    elif not quiet:
        print_table(rows, out_dir)
        _print_folder_notes(state, quiet)
    incomplete = state.job is not None and not state.complete
    if incomplete:
        missing = [k for k in range(1, (state.shards or 1) + 1) if k not in state.shards_done]
        what = f"shard(s) {', '.join(map(str, missing))} of {state.shards}" if state.shards else "the run"
        print_error(f"{what} did not finish in {out_dir}: re-run with --resume")
    if incomplete or any(r.status == "failed" for r in rows):
        raise typer.Exit(ExitCode.IMAGES_FAILED)


@user_errors
def info(
    model: Annotated[Path, typer.Argument(help="ONNX classifier.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    labels: Annotated[bool, typer.Option("--labels", help="List the class names with their indices.")] = False,
    layers: Annotated[
        bool,
        typer.Option(
            "--layers",
            help="List the inner tensors: op, shape, whether the model can be cut there (occlude layers --layer), receptive field.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
) -> None:
    """Show what occlude reads from a model: input, layout, size, preprocessing, head, labels, provider."""
    from ..analyses.explain import describe_model

    if layers:
        from ..loaders.model import Device
        from .analysis import info_layers
        from .common import ModelFlags

        info_layers(model, json_out=json_out, model_flags=ModelFlags(device=Device(device)))
        return

    document = describe_model(model, device=device)
    if json_out:
        if not labels:
            document.pop("label_names", None)
        print_json(document)
        return
    if labels:
        names = document.get("label_names") or []
        if not names:
            raise OccludeError(f"{model} has no labels in its metadata (occlude.labels); pass --labels FILE to run")
        for index, name in enumerate(names):
            stdout.print(f"{index:>5}  {safe(name)}")
        return
    stdout.print(_info_text(document))


def _info_text(d: dict) -> str:
    """The info document as aligned 'key  value' lines (the JSON's key names), without Python reprs."""
    pre = d.get("preprocessing")
    if isinstance(pre, dict) and "transform" in pre:  # a medical model (issue 12)
        transform = pre["transform"] or "none (real units)"
        detail = {
            "window": pre.get("window"),
            "intensity_range": pre.get("intensity_range"),
            "zscore": pre.get("zscore_threshold"),
        }.get(pre["transform"] or "")
        pre_text = (
            f"{pre['layout']} {'x'.join(map(str, pre['size']))} grey, resampled (order {pre['resample_order']}) "
            f"in real units, then {transform}{'' if detail is None else ' ' + str(detail)}"
        )
    elif isinstance(pre, dict):
        pre_text = (
            f"{pre['layout']} {pre['size'][0]}x{pre['size'][1]} {pre['color']}, resize {pre['resize']}, "
            f"{pre['formula']} (mean/std in RGB order)"
        )
    else:
        pre_text = str(pre)
    names = d.get("label_names")
    shown = (
        (", ".join(names[:5]) + (", ..." if len(names) > 5 else "")) if names else "none (pass --labels FILE to run)"
    )
    rows = [
        ("path", d["path"]),
        ("sha256", d["sha256"]),
        ("input", d["input"]),
        ("input_shape", _shape(d["input_shape"])),
        ("input_type", d["input_type"]),
        ("output", d["output"]),
        ("output_shape", _shape(d["output_shape"])),
        ("classes", d["classes"] if d["classes"] is not None else "dynamic"),
        ("final_op", d["final_op"] or "unknown"),
        ("batching", d["batching"]),
        ("provider", d["provider"]),
        ("preprocessing", pre_text),
        ("labels", f"{len(names) if names else 0}: {shown}"),
    ]
    return "\n".join(f"[bold]{key:<14}[/]{safe(str(value))}" for key, value in rows)


def _shape(shape) -> str:
    return "[" + ", ".join(str(v) for v in shape) + "]"
