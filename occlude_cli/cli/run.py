"""`occlude run`, `occlude summary` and `occlude info`: flags mapped to one library call each, progress and
tables out (the work is in :mod:`occlude_cli.runs.run` and :mod:`occlude_cli.outputs.folder`)."""

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..core.baselines import BASELINES
from ..errors import OccludeError
from ..text import shortened
from . import parse, show
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
    out_option,
    print_error,
    print_json,
    quiet_option,
    safe,
    stdout,
    user_errors,
    with_flags,
)
from .medicalflags import MedicalFlags
from .taskflags import Task, TaskFlags

RUN_EXAMPLES = """
occlude run sample_models/efficientnet_lite0.onnx sample_images/cat.jpg
occlude run model.onnx photos/ -r -o maps/ --patch 32 --stride 16
occlude run model.onnx cat.jpg --target "Egyptian cat" --top-k 3
occlude run model.onnx cat.jpg --baseline blur  # what fills the patch
occlude run vit/ img.jpg  # an optimum export: its configs say how
occlude run resnet50.onnx img.jpg --preprocess torchvision  # + ImageNet names
occlude run model.onnx 'data/**/*.jpg' --json -q | jq '.counts'
occlude run model.onnx data/ --dry-run  # how long will it take?
occlude run model.onnx data/ --shard 2/4 --resume -o maps/  # one of 4 CI jobs
occlude run model.onnx img.png --patch 48 --stride 8 --refine  # fewer passes
occlude run model.onnx img.png --patch 8,16,32 --multiscale  # across sizes
occlude run model.onnx img.png --metrics  # + deletion/insertion AUCs
occlude run binary.onnx xray.png --score logit  # a one-logit head
occlude run ct2d.onnx slice.dcm --window bone  # a DICOM slice, CT bone window
occlude run lesion3d.onnx scan.nii.gz --patch 8x8x8 --stride 4  # NIfTI volume
occlude run lesion3d.onnx series_dir/ --series  # a DICOM series as one volume
"""

RUN_NOTES = "[bold]Baselines[/] (--baseline)\n\n" + "\n".join(
    f"  [cyan]{name}[/]: {safe(text)}" for name, text in BASELINES.items()
)

SUMMARY_EXAMPLES = "occlude summary maps/ --json | jq '.counts'"
INFO_EXAMPLES = """
occlude info sample_models/efficientnet_lite0.onnx
occlude info vit/  # a model folder: preprocessing and labels from its configs
occlude info sample_models/digits_cnn.onnx --labels
occlude info model.onnx --json | jq .preprocessing
occlude info sample_models/efficientnet_lite0.onnx --layers  # cut points for layers
"""


@user_errors
@with_flags(
    model_flags=ModelFlags,
    occlusion=OcclusionFlags,
    render=RenderFlags,
    medical=MedicalFlags,
    ci=CiFlags,
    task_flags=TaskFlags,
)
def run(
    model: Annotated[
        Path,
        typer.Argument(
            help="ONNX model (.onnx) with one image input (a classifier, or a segmentation, detection or embedding "
            "model: --task), or a folder holding one (model.onnx): its Hugging Face, timm or occlude.json config "
            "gives the preprocessing and labels."
        ),
    ],
    paths: Annotated[
        List[str],
        typer.Argument(
            help="Image files, folders or globs ('data/**/*.png'); - reads stdin.",
            show_default=False,
            metavar="PATH",
        ),
    ],
    out: Annotated[Path, out_option("Output folder; keeps the inputs' relative folder layout.")] = Path("occlude-out"),
    patch: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.sizes("--patch"),
            metavar="SIZES",
            help="Occluding patch in model-input pixels: N, HxW or DxHxW \\[default: 1/14 of the input side, 16 on "
            "224; 1/4 for 3-D models]. Several (8,16,32): one map per size, compared in STEM.scales.json.",
            rich_help_panel="Basics",
        ),
    ] = None,
    multiscale: Annotated[
        bool,
        typer.Option(
            "--multiscale",
            help="With several --patch sizes: also write STEM.multiscale.* (the mean of the maps, each scaled to "
            "[-1, 1]).",
            rich_help_panel="Output",
        ),
    ] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="Add deletion and insertion AUCs, infidelity, sufficiency and completeness to the JSON (115 "
            "extra forward passes).",
            rich_help_panel="Output",
        ),
    ] = False,
    top_k: Annotated[
        int,
        typer.Option(
            "--top-k",
            help="Also compute the maps of the K best classes (no extra inference); saved as STEM.topk.npy.",
            rich_help_panel="Basics",
        ),
    ] = 1,
    all_classes: Annotated[
        bool,
        typer.Option(
            "--all-classes",
            help="Also save every class's map (STEM.classes.npy) and the most probable class when each pixel is "
            "occluded (STEM.top_class.npy).",
            rich_help_panel="Output",
        ),
    ] = False,
    region: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.region("--region"),
            metavar="x0,y0,x1,y1",
            help="Occlude only inside this box x0,y0,x1,y1 (original image pixels; a volume: x0,y0,z0,x1,y1,z1 in "
            "world mm); the rest of the map is null (not computed).",
            rich_help_panel="Basics",
        ),
    ] = None,
    refine: Annotated[
        bool,
        typer.Option(
            "--refine",
            help="Coarse-to-fine: a coarse pass, then exact windows where the drop is largest, within "
            "--refine-budget. For overlapping windows (stride <= patch/4).",
            rich_help_panel="Speed",
        ),
    ] = False,
    refine_step: Annotated[
        Optional[int],
        typer.Option(
            "--refine-step",
            help="With --refine: coarse pass takes at least every N-th window along each axis (1 to 100) "
            "\\[default: 3].",
            rich_help_panel="Speed",
            show_default=False,
        ),
    ] = None,
    refine_budget: Annotated[
        Optional[float],
        typer.Option(
            "--refine-budget",
            help="With --refine: forward passes allowed, as a fraction of the exact map's, in (0, 1]. A cap: a "
            "--refine-step whose coarse lattice needs more is refused \\[default: 0.25].",
            rich_help_panel="Speed",
            show_default=False,
        ),
    ] = None,
    baseline_check: Annotated[
        bool,
        typer.Option(
            "--baseline-check",
            help="Compare the baselines on 16 seeded random windows instead of making maps: how far each moves "
            "the top-1 confidence (OUT/baseline_check.json).",
            rich_help_panel="Basics",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the number of windows and forward passes and a time estimate from one timed batch; run "
            "nothing else.",
            rich_help_panel="Basics",
        ),
    ] = False,
    recursive: Recursive = False,
    npy: Annotated[
        bool, typer.Option("--npy/--no-npy", help="Write STEM.npy (the map as float32).", rich_help_panel="Output")
    ] = True,
    aggregate: Annotated[
        bool,
        typer.Option(
            "--aggregate",
            help="Also write aggregate.png/.npy: the mean of the per-image maps, each scaled to [-1, 1].",
            rich_help_panel="Output",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip images whose outputs exist, are complete and were made with the same model, image and "
            "parameters.",
            rich_help_panel="Basics",
        ),
    ] = False,
    null: NullPaths = False,
    shard: Annotated[
        Optional[Parsed],
        typer.Option(
            parser=parse.shard,
            metavar="K/N",
            help="Process only share K of N (e.g. 2/4) of the inputs, deterministically.",
            rich_help_panel="Clusters",
        ),
    ] = None,
    timing: Annotated[
        bool,
        typer.Option(
            "--timing/--no-timing",
            help="Record timings; --no-timing makes the JSON files byte-identical across runs.",
            rich_help_panel="Output",
        ),
    ] = True,
    json_out: Annotated[bool, json_option("the run summary as JSON")] = False,
    quiet: Annotated[bool, quiet_option("No progress, notes or table: only warnings and errors (on stderr).")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also one line per image and per window (its score and drop), even on a terminal.",
            rich_help_panel="Basics",
        ),
    ] = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Also write OUT/index.html, an HTML report of the run (see `occlude report`).",
            rich_help_panel="Output",
        ),
    ] = False,
    ray: Annotated[
        Optional[Parsed],
        typer.Option(
            "--ray",
            parser=parse.ray_address,
            metavar="[ADDRESS]",
            help="Run the images on Ray (the ray extra): alone or 'local' starts Ray here, 'auto' joins the "
            "cluster of `ray start`, HOST:PORT or ray://HOST:10001 connects to one. Same outputs as without.",
            rich_help_panel="Clusters",
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            help="With --ray: actors, each with its own model session \\[default: the cluster's CPUs // --threads, "
            "or GPUs // --gpus-per-worker].",
            rich_help_panel="Clusters",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            "--gpus-per-worker",
            help="With --ray: GPUs per actor (0.5 = two actors share a GPU); actors with a GPU use CUDA.",
            rich_help_panel="Clusters",
        ),
    ] = 0.0,
    model_flags: ModelFlags = None,  # type: ignore[assignment]  # filled in by with_flags
    occlusion: OcclusionFlags = None,  # type: ignore[assignment]
    render: RenderFlags = None,  # type: ignore[assignment]
    medical: MedicalFlags = None,  # type: ignore[assignment]
    ci: CiFlags = None,  # type: ignore[assignment]
    task_flags: TaskFlags = None,  # type: ignore[assignment]
) -> None:
    """Explain images with an ONNX classifier: writes STEM.overlay.png, STEM.heatmap.png, STEM.json, STEM.npy."""
    from ..analyses.options import ExplainOptions
    from ..runs.run import RunSettings, baseline_check_folder, estimate_folder, run_folder
    from .progress import TerminalEvents

    options = ExplainOptions(
        patch=patch[0] if patch else None,
        top_k=top_k,
        region=region,
        refine=refine,
        refine_step=refine_step,
        refine_budget=refine_budget,
        **occlusion.fields(),
        **medical.fields(),
        **task_flags.fields(),
    )
    settings = RunSettings(
        scales=patch or (),
        multiscale=multiscale,
        metrics=metrics,
        all_classes=all_classes,
        npy=npy,
        nifti=medical.nifti,
        regions=medical.regions,
        dicom_out=medical.dicom_out,
        deidentify=medical.deidentify,
        panels=render.panels,
        style=render.style(),
        timing=timing,
        aggregate=aggregate,
        report=report,
        resume=resume,
        shard=shard,
        recursive=recursive,
        ray=ray,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        null=null,
        **ci.fields(),
    )
    if quiet and verbose:
        raise OccludeError("--quiet and --verbose contradict each other: give one of them")
    events = TerminalEvents(quiet=quiet, json_out=json_out, verbose=verbose, where=str(out / "summary.csv"))
    given = dict(options=options, settings=settings, model_options=model_flags.options(), events=events)
    if dry_run:
        estimate = estimate_folder(model, paths, out, **given)
        if json_out:
            print_json(estimate)
        else:
            show.print_estimate(estimate)
    elif baseline_check:
        checked = baseline_check_folder(model, paths, out, **given)
        show_baseline_check(checked, json_out, quiet)
    else:
        try:
            result = run_folder(model, paths, out, **given)
        except KeyboardInterrupt:  # a second Ctrl-C, while the run was finishing its files: say as much
            raise fail(events.interruption(), ExitCode.INTERRUPTED) from None
        show_run(result, out, json_out, quiet, events.interruption(), events.error_params)


def show_baseline_check(checked, json_out: bool, quiet: bool) -> None:
    """--baseline-check's output: the documents as JSON or tables; exit 3 when an input could not be checked."""
    if json_out:
        print_json({"inputs": checked.documents})
    elif not quiet:
        show.print_baseline_checks(checked.documents)
    if checked.failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)


def show_run(
    result, out: Path, json_out: bool, quiet: bool, interruption: str = "", error_params: Optional[dict] = None
) -> None:
    """A folder run's summary on stdout (JSON or a table), the folder's notes, and the exit code (130 with
    ``interruption``, how far it got, when Ctrl-C or SIGTERM stopped it). ``error_params``: a failed row's path
    -> the parameters its error names (the table shows them as flags)."""
    rows = result.rows  # this process's images (pending: not reached), then the arguments that named none
    if json_out:
        print_json(result.summary)
    elif not quiet:
        show.print_table(rows, out, error_params)
        if result.folder is not None:
            show.print_folder_notes(result.folder, quiet)
    if result.interrupted:
        text = interruption or f"interrupted ({result.pending} pending); re-run with --resume to finish"
        raise fail(text, ExitCode.INTERRUPTED)
    if result.failed:
        raise typer.Exit(ExitCode.IMAGES_FAILED)


@user_errors
def summary(
    out_dir: Annotated[Path, typer.Argument(help="An output folder of `occlude run` (e.g. merged shards).")],
    json_out: Annotated[bool, json_option("the summary as JSON")] = False,
    quiet: Annotated[bool, quiet_option("Print nothing; just rewrite summary.json/.csv.")] = False,
) -> None:
    """Rebuild summary.json and summary.csv (and aggregate.* and index.html when the run made them) from the
    run's manifests in OUT_DIR: exactly the current results, every shard's. Exit 3 when an image failed or a
    shard has not finished."""
    from ..outputs.folder import rebuild
    from ..outputs.records import summary_document

    state = rebuild(out_dir)
    rows = state.rows
    if json_out:
        print_json(summary_document(rows, state.describe() if state.job else None))
    elif not quiet:
        show.print_table(rows, out_dir)
        show.print_folder_notes(state, quiet)
    incomplete = state.job is not None and not state.complete
    if incomplete:
        missing = [k for k in range(1, (state.shards or 1) + 1) if k not in state.shards_done]
        what = f"shard(s) {', '.join(map(str, missing))} of {state.shards}" if state.shards else "the run"
        print_error(f"{what} did not finish in {out_dir}: re-run with --resume")
    if incomplete or any(r.status == "failed" for r in rows):
        raise typer.Exit(ExitCode.IMAGES_FAILED)


@user_errors
def info(
    model: Annotated[Path, typer.Argument(help="ONNX classifier (.onnx), or a folder holding one.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.", rich_help_panel="Speed")] = "auto",
    labels: Annotated[
        bool, typer.Option("--labels", help="List the class names with their indices.", rich_help_panel="Basics")
    ] = False,
    layers: Annotated[
        bool,
        typer.Option(
            "--layers",
            help="List the inner tensors: op, shape, whether the model can be cut there (occlude layers --layer), "
            "receptive field.",
            rich_help_panel="Basics",
        ),
    ] = False,
    json_out: Annotated[bool, json_option("the description as JSON")] = False,
    task: Annotated[
        Task,
        typer.Option(help="What the output is (auto: by its shape, as run reads it).", rich_help_panel="Task"),
    ] = Task.auto,
) -> None:
    """Show what occlude reads from a model: input, outputs, task, layout, size, preprocessing, head, labels,
    provider."""
    from ..analyses.explain import describe_model

    if layers:
        from .analysis import info_layers

        info_layers(model, device=device, json_out=json_out)
        return
    document = describe_model(model, device=device, task=task.value)
    if json_out:
        if not labels:
            document.pop("label_names", None)
        print_json(document)
        return
    if labels:
        names = document.get("label_names") or []
        if not names:
            raise OccludeError(
                f"{model} has no labels (metadata occlude.labels, config.json, occlude.json); pass --labels FILE or "
                "--labels imagenet to run"
            )
        for index, name in enumerate(names):
            stdout.print(f"{index:>5}  {safe(shortened(name))}")
        return
    stdout.print(show.info_text(document))
