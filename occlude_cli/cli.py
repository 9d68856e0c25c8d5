"""The `occlude` command: a thin Typer layer that parses flags, shows progress and calls the library.

Exit codes: 0 all images ok; 1 error before any image ran (model, flags, output folder);
2 command-line usage error; 3 at least one image failed; 4 a check failed (occlude check); 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from . import __version__
from .baselines import BASELINES
from .errors import OccludeError, first_line

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_IMAGES_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

app = typer.Typer(
    name="occlude",
    help="Explain what an ONNX image classifier looks at, by occlusion sensitivity.\n\n"
    "Slides a patch over the image, replaces it by a baseline, and records how much the target class's "
    "score drops at each position. Writes heatmap overlays (PNG), raw scores (JSON) and maps (.npy).",
    epilog="Exit codes: 0 ok, 1 error (model, flags, output folder), 2 usage error, 3 some images failed, "
    "4 a check failed (occlude check), 130 interrupted.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int = EXIT_ERROR) -> "typer.Exit":
    stderr.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def user_errors(command):
    """Turn OccludeError into one red line on stderr and exit code 1; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OccludeError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        stdout.print(f"occlude {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Explain what an ONNX image classifier looks at, by occlusion sensitivity."""


def _floats(text: Optional[str], flag: str) -> Optional[List[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise OccludeError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def _region(text: Optional[str]):
    values = _floats(text, "--region")
    if values is not None and len(values) != 4:
        raise OccludeError(f"--region takes x0,y0,x1,y1, got {text!r}")
    return values


def check_output_folder(out: Path) -> None:
    """Fail early, with one line, when the output folder cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise OccludeError(f"output path exists and is not a folder: {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".occlude-write-test-"):
            pass
    except OSError as exc:
        raise OccludeError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None


# Flags shared by run, compare and check: declared once, used as the parameters' defaults.
STRIDE = typer.Option(None, help="Step between windows, N or HxW \\[default: half the patch]. A last window flush with the border is always added.")
BASELINE = typer.Option("zero", help="What fills the patch: zero, mean, gray, black, white, blur, noise, a constant V or R,G,B (pixel units). See below.")
BLUR_SIGMA = typer.Option(None, help="Gaussian sigma in pixels for --baseline blur \\[default: patch/2].")
SEED = typer.Option(0, help="Seed for --baseline noise.")
TARGET = typer.Option(None, help="Class to explain: an index or a label name \\[default: top-1 prediction].")
SCORE = typer.Option("prob", help="Score to explain: prob (softmax; not applied twice when the model already outputs probabilities) or logit.")
DEVICE = typer.Option("auto", help="auto (CUDA when onnxruntime offers it), cpu or cuda.")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Occluded images per forward pass \\[default: automatic].")
THREADS = typer.Option(None, help="onnxruntime intra-op threads \\[default: onnxruntime's choice].")
SIZE = typer.Option(None, help="Model input size HxW, for models with dynamic height/width.")
LAYOUT = typer.Option(None, help="nchw or nhwc, when the input shape does not tell.")
MEAN = typer.Option(None, help="Per-channel mean (one value or R,G,B), subtracted after --scale.")
STD = typer.Option(None, help="Per-channel std (one value or R,G,B), divided after the mean.")
SCALE = typer.Option(None, help="Pixel (0..255) multiplier applied first \\[default: 1/255]. Input = (pixel*scale - mean)/std.")
BGR = typer.Option(False, "--bgr", help="Feed channels in BGR order.")
RESIZE = typer.Option(None, help="stretch (whole image) or center-crop (keep aspect, cut the long side).")
LABELS = typer.Option(None, help="Class names, one per line (overrides labels in the model's metadata).")
INPUT_NAME = typer.Option(None, "--input", help="Model input to feed, when it has several.")
OUTPUT_NAME = typer.Option(None, "--output", help="Model output to explain, when it has several.")


def load_model(model: Path, *, device: str, threads: Optional[int], input_name: Optional[str],
               output_name: Optional[str], size: Optional[str], layout: Optional[str], mean: Optional[str],
               std: Optional[str], scale: Optional[float], bgr: bool, resize: Optional[str], labels: Optional[Path]):
    """The model, its preprocessing and the class names, from the shared flags."""
    from .explain import resolve_preprocessing
    from .model import OnnxClassifier, read_labels

    class_names = read_labels(labels) if labels is not None else None
    classifier = OnnxClassifier(model, device=device, input_name=input_name, output_name=output_name, threads=threads)
    preprocessing = resolve_preprocessing(
        classifier, size=size, layout=layout, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
        scale=scale, bgr=bgr or None, resize=resize,
    )
    return classifier, preprocessing, class_names


def occlusion_options(*, patch, stride: Optional[str], baseline: str, blur_sigma: Optional[float], seed: int,
                      target: Optional[str], score: str, batch_size: Optional[int], **more):
    """ExplainOptions from the shared flags (``patch`` already parsed or None; ``more``: other fields)."""
    from .baselines import parse_baseline
    from .explain import ExplainOptions, parse_hw

    return ExplainOptions(
        patch=patch,
        stride=parse_hw(stride, "--stride") if stride is not None else None,
        baseline=parse_baseline(baseline),
        target=target,
        score=score,
        batch_size=batch_size,
        seed=seed,
        blur_sigma=blur_sigma,
        **more,
    )


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

[bold]Baselines[/] (--baseline)

""" + "\n".join(f"  [cyan]{name}[/]: {escape(text)}" for name, text in BASELINES.items())


@app.command(epilog=RUN_EXAMPLES)
@user_errors
def run(
    model: Path = typer.Argument(..., help="ONNX classifier (.onnx) with one image input and a (batch, classes) output."),
    paths: List[str] = typer.Argument(..., help="Image files, folders or glob patterns ('data/**/*.png').", show_default=False),
    out: Path = typer.Option(Path("occlude-out"), "--out", "-o", help="Output folder; keeps the inputs' relative folder layout."),
    patch: Optional[str] = typer.Option(None, help="Occluding patch, N or HxW in model-input pixels \\[default: 1/14 of the input side, 16 on 224]. Several (8,16,32): one map per patch size plus their rank correlations in STEM.scales.json."),
    multiscale: bool = typer.Option(False, "--multiscale", help="With several --patch sizes: also write STEM.multiscale.* (the mean of the maps, each scaled to [-1, 1])."),
    metrics: bool = typer.Option(False, "--metrics", help="Add the map's deletion and insertion curves and AUCs (Petsiuk et al. 2018) to the JSON; 102 extra forward passes."),
    stride: Optional[str] = STRIDE,
    baseline: str = BASELINE,
    blur_sigma: Optional[float] = BLUR_SIGMA,
    seed: int = SEED,
    target: Optional[str] = TARGET,
    top_k: int = typer.Option(1, "--top-k", help="Also compute the maps of the K best classes (no extra inference); saved as STEM.topk.npy."),
    all_classes: bool = typer.Option(False, "--all-classes", help="Also save every class's map (STEM.classes.npy) and the most probable class when each pixel is occluded (STEM.top_class.npy)."),
    score: str = SCORE,
    device: str = DEVICE,
    batch_size: Optional[int] = BATCH_SIZE,
    threads: Optional[int] = THREADS,
    size: Optional[str] = SIZE,
    layout: Optional[str] = LAYOUT,
    mean: Optional[str] = MEAN,
    std: Optional[str] = STD,
    scale: Optional[float] = SCALE,
    bgr: bool = BGR,
    resize: Optional[str] = RESIZE,
    labels: Optional[Path] = LABELS,
    input_name: Optional[str] = INPUT_NAME,
    output_name: Optional[str] = OUTPUT_NAME,
    region: Optional[str] = typer.Option(None, help="Occlude only inside this box x0,y0,x1,y1 (original image pixels); the rest of the map is null (not computed)."),
    refine: bool = typer.Option(False, "--refine", help="Coarse-to-fine: score every --refine-step-th window, interpolate the rest, then score exactly where the drop is largest, within --refine-budget. Use with overlapping windows (stride <= patch/4)."),
    refine_step: int = typer.Option(3, "--refine-step", help="With --refine: coarse pass takes every N-th window along each axis."),
    refine_budget: float = typer.Option(0.25, "--refine-budget", help="With --refine: forward passes allowed, as a fraction of the exact map's."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the number of windows and forward passes and a time estimate from one timed batch; run nothing else."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders of folder arguments."),
    npy: bool = typer.Option(True, "--npy/--no-npy", help="Write STEM.npy (the map as float32)."),
    aggregate: bool = typer.Option(False, "--aggregate", help="Also write aggregate.png/.npy: the mean of the per-image maps, each scaled to [-1, 1]."),
    resume: bool = typer.Option(False, "--resume", help="Skip images whose outputs exist and were made with the same model, image and parameters."),
    shard: Optional[str] = typer.Option(None, help="Process only share K of N (e.g. 2/4) of the inputs, deterministically."),
    timing: bool = typer.Option(True, "--timing/--no-timing", help="Record timings; --no-timing makes the JSON files byte-identical across runs."),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout (nothing else goes to stdout)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no table; errors still go to stderr."),
) -> None:
    """Explain images with an ONNX classifier: writes STEM.overlay.png, STEM.heatmap.png, STEM.json, STEM.npy."""
    from .batch import (MapAggregate, discover_inputs, parse_shard, run_batch, summary_document, summary_name,
                        take_shard, write_summary)
    from .explain import ExplainOptions, check_run, parse_patches

    signal.signal(signal.SIGTERM, _raise_interrupt)
    scales = parse_patches(patch) if patch is not None else []
    if multiscale and len(scales) < 2:
        raise OccludeError("--multiscale needs several patch sizes, e.g. --patch 8,16,32")
    options = occlusion_options(
        patch=scales[0] if scales else None, stride=stride, baseline=baseline, blur_sigma=blur_sigma, seed=seed,
        target=target, score=score, batch_size=batch_size, top_k=top_k, region=_region(region), refine=refine,
        refine_step=refine_step, refine_budget=refine_budget,
    )
    shard_spec = parse_shard(shard)
    classifier, preprocessing, class_names = load_model(
        model, device=device, threads=threads, input_name=input_name, output_name=output_name, size=size,
        layout=layout, mean=mean, std=std, scale=scale, bgr=bgr, resize=resize, labels=labels)
    for patch_size in scales or [None]:
        check_run(ExplainOptions(**{**options.__dict__, "patch": patch_size}), preprocessing, classifier, class_names)
    images, problems = discover_inputs(paths, recursive=recursive)
    images = take_shard(images, shard_spec)
    if dry_run:
        _dry_run(classifier, images, problems, options, preprocessing, class_names, json_out)
        return
    check_output_folder(out)
    if classifier.batching.startswith("fixed batch 1") and not quiet:
        stderr.print(f"[yellow]note:[/] {escape(classifier.batching)}")
    for arg, problem in problems:
        stderr.print(f"[bold red]error:[/] {escape(problem)}")

    show_progress = not quiet and not json_out and stderr.is_terminal
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
    aggregate_maps = MapAggregate() if aggregate else None
    with progress:
        overall = progress.add_task("images", total=len(images), rate="") if len(images) > 1 else None
        windows_task = progress.add_task("windows", total=None, rate="")

        def on_image_start(image):
            progress.reset(windows_task, total=None, description=escape(image.key), rate="")

        def on_windows(done: int, total: int):
            task = progress.tasks[windows_task]
            elapsed = task.elapsed or 0.0
            rate = f"{done / elapsed:.0f} win/s" if elapsed > 0 else ""
            progress.update(windows_task, completed=done, total=total, rate=rate)

        def on_image_done(image, row):
            if overall is not None:
                progress.advance(overall)
            if row.status == "failed":
                progress.console.print(f"[bold red]error:[/] {escape(_failure_text(row))}")

        result = run_batch(
            classifier,
            images,
            out,
            options,
            preprocessing=preprocessing,
            labels=class_names,
            npy=npy,
            all_classes=all_classes,
            timing=timing,
            resume=resume,
            metrics=metrics,
            scales=scales,
            multiscale=multiscale,
            aggregate=aggregate_maps,
            on_image_start=on_image_start,
            on_windows=on_windows if show_progress else None,
            on_image_done=on_image_done,
        )
    from .batch import SummaryRow

    rows = result.rows + [SummaryRow(path=arg, status="failed", error=problem) for arg, problem in problems]
    write_summary(rows, out, summary_name(shard_spec))
    if aggregate_maps is not None:
        aggregate_maps.write(out)
    if json_out:
        sys.stdout.write(json.dumps(summary_document(rows), indent=2) + "\n")
    elif not quiet:
        _print_table(rows, out)
    if result.interrupted:
        raise fail(f"interrupted after {len(result.rows)} of {len(images)} images; re-run with --resume to finish", EXIT_INTERRUPTED)
    if any(r.status == "failed" for r in rows):
        raise typer.Exit(EXIT_IMAGES_FAILED)


def _failure_text(row) -> str:
    """One line naming the image once, whether or not the error already names it."""
    error = row.error or "failed"
    return error if row.path in error else f"{row.path}: {error}"


def _dry_run(classifier, images, problems, options, preprocessing, labels, json_out: bool) -> None:
    from .explain import estimate_run

    for _, problem in problems:
        stderr.print(f"[bold red]error:[/] {escape(problem)}")
    if not images:
        raise OccludeError("nothing to estimate: no readable image among the inputs")
    plan = estimate_run(classifier, images[0].path, options, preprocessing=preprocessing, labels=labels)
    plan["images"] = len(images)
    plan["estimated_total_s"] = plan["estimated_s"] * len(images)
    if json_out:
        sys.stdout.write(json.dumps(plan, indent=2) + "\n")
        return
    stdout.print(
        f"{plan['images']} image(s); per image: {plan['windows']} windows, {plan['forward_passes']} forward passes "
        f"(exact map: {plan['exact_forward_passes']}), batch size {plan['batch_size']}, "
        f"{plan['seconds_per_forward_pass'] * 1000:.1f} ms per pass; "
        f"estimated {plan['estimated_s']:.1f} s per image, {plan['estimated_total_s']:.1f} s in all"
    )


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _print_table(rows, out: Path) -> None:
    table = Table(title=f"occlude: {len(rows)} image(s) -> {out}", title_justify="left")
    table.add_column("image", overflow="fold")
    for name in ("status", "target", "score", "peak (y, x)", "s"):
        table.add_column(name)
    for row in rows:
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}.get(row.status, "")
        target = f"{row.target_index} {row.target_label or ''}".strip() if row.target_index is not None else ""
        table.add_row(
            escape(row.path),
            f"[{style}]{row.status}[/]",
            escape(target) if row.status != "failed" else escape(row.error or ""),
            f"{row.original_score:.4f}" if row.original_score is not None else "",
            f"{row.peak_y}, {row.peak_x}" if row.peak_y is not None else "",
            f"{row.seconds:.2f}" if row.seconds is not None else "",
        )
    stdout.print(table)


@app.command(epilog="[bold]Example[/]\n\n  occlude summary maps/ --json | jq '.counts'")
@user_errors
def summary(
    out_dir: Path = typer.Argument(..., help="An output folder of `occlude run` (e.g. merged shards)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing; just rewrite summary.json/.csv."),
) -> None:
    """Rebuild summary.json and summary.csv from the per-image JSON files in OUT_DIR."""
    from .batch import rebuild_summary, summary_document, write_summary

    rows = rebuild_summary(out_dir)
    write_summary(rows, out_dir)
    if json_out:
        sys.stdout.write(json.dumps(summary_document(rows), indent=2) + "\n")
    elif not quiet:
        _print_table(rows, out_dir)
    if any(r.status == "failed" for r in rows):
        raise typer.Exit(EXIT_IMAGES_FAILED)


@app.command(epilog="[bold]Example[/]\n\n  occlude info sample_models/efficientnet_lite0.onnx")
@user_errors
def info(
    model: Path = typer.Argument(..., help="ONNX classifier."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON on stdout."),
) -> None:
    """Show what occlude reads from a model: input, layout, size, preprocessing, labels, provider."""
    from .explain import resolve_preprocessing
    from .model import OnnxClassifier

    classifier = OnnxClassifier(model, device=device)
    document = classifier.describe()
    try:
        document["preprocessing"] = resolve_preprocessing(classifier).describe()
    except OccludeError as exc:
        document["preprocessing"] = f"needs flags: {exc}"
    document["labels"] = len(classifier.labels) if classifier.labels else None
    document["fixed_batch"] = classifier.fixed_batch
    if json_out:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    for key, value in document.items():
        stdout.print(f"[bold]{key}[/]: {escape(str(value))}")


from .validate_cli import register as _register_validation  # noqa: E402  (commands compare, check)

_register_validation(app)


def main() -> None:
    """Console entry point: Typer, plus a last guard so that no traceback reaches the user."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # a bug: say so in one line; OCCLUDE_DEBUG=1 shows the traceback
        if os.environ.get("OCCLUDE_DEBUG"):
            raise
        stderr.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(first_line(exc))} (set OCCLUDE_DEBUG=1 for details)")
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
