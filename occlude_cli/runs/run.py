"""``occlude run`` from Python: a whole folder run (:func:`run_folder`), what it would cost (:func:`estimate_folder`,
``--dry-run``) and the baseline check of its inputs (:func:`baseline_check_folder`, ``--baseline-check``).

    from occlude_cli import run_folder
    result = run_folder("sample_models/digits_cnn.onnx", ["sample_images/"], "maps/", aggregate=True, report=True)
    result.summary["counts"], result.folder.complete

Discovery, the memory plan, the executor (this process or Ray), resume, shards, every image's files, the
summary, the aggregate and the report: exactly what the command does (the command maps its flags to these
calls and draws their events). Options are the :class:`~occlude_cli.ExplainOptions` fields and the
:class:`RunSettings` fields, as objects or keywords.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, List, Optional, Sequence, Set, Tuple, Union

from ..analyses.estimate import baseline_check, estimate_run
from ..analyses.options import ExplainOptions, as_size, checked_path
from ..analyses.plan import check_run, memory_plan
from ..analyses.preprocessing import ModelOptions, open_model
from ..analyses.regiontable import RegionLabels
from ..analyses.tasks.scoring import task_of
from ..analyses.tasks.spec import default_resize
from ..batch.inputs import InputImage, StreamedInputs, check_shard, discover_inputs, pseudonymised, take_shard
from ..batch.loop import BatchResult, LocalExecutor, likely_skipped, run_images
from ..errors import OccludeError
from ..loaders.limits import MemoryPlan
from ..loaders.model import OnnxClassifier
from ..outputs.folder import check_run_level_files
from ..outputs.provenance import Deidentifier, deidentifying
from ..outputs.records import summary_document
from ..outputs.volumes import write_baseline_check
from ..outputs.write import check_output_folder, remove_stale_temps
from ..pictures.render import RenderStyle
from .ci_cases import checked_targets, run_cases, write_reports
from .common import deidentifier_for, discovery_note, streamed_inputs
from .events import QUIET, RunEvents, deidentified


@dataclass
class RunSettings:
    """What a folder run writes and how it runs, besides the options of each map (the library's defaults).

    ``scales``: several patch sizes (each as ``ExplainOptions.patch`` takes it): one set of outputs per size
    and their rank correlations; ``ray``: None runs in this process, ``"local"`` starts a Ray instance here,
    ``"auto"`` joins the cluster of ``ray start``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` connects to one.
    ``junit``: also write a JUnit XML file there (one test case per input of this process); ``summary_md``: a
    file (or files) to append a markdown job summary to (see :mod:`occlude_cli.outputs.ci`). ``null``: the
    paths of ``"-"`` (stdin) are NUL-separated, not one per line."""

    scales: Sequence = ()
    multiscale: bool = False
    metrics: bool = False
    all_classes: bool = False
    npy: bool = True
    nifti: bool = True
    panels: bool = False
    style: Optional[RenderStyle] = None
    timing: bool = True
    aggregate: bool = False
    report: bool = False
    resume: bool = False
    shard: Optional[Tuple[int, int]] = None
    recursive: bool = False
    ray: Optional[str] = None
    workers: Optional[int] = None
    gpus_per_worker: float = 0.0
    prefetch: Optional[bool] = None  # decode the next photo on a thread (None: when the model runs on CUDA)
    junit: Optional[Union[str, Path]] = None
    summary_md: Any = None
    null: bool = False
    regions: Optional[Union[str, Path, RegionLabels]] = None  # a label map (NIfTI, DICOM SEG, RT-STRUCT): region tables
    dicom_out: bool = False  # medical inputs: the map as a DICOM Parametric Map and a Secondary Capture
    deidentify: bool = False  # pseudonyms for paths, replaced UIDs, no header text in any output

    def checked(self) -> RunSettings:
        """A copy with every field checked (raises OccludeError naming the parameter)."""
        scales = [as_size(s, "scales") for s in self.scales]
        twice = [s for i, s in enumerate(scales) if s in scales[:i]]
        if twice:
            size = "x".join(str(n) for n in twice[0])
            raise OccludeError(
                f"scales gives the patch size {size} twice: give each size once "
                f"(for one patch of {size} pixels write {size})",
                params=("scales",),
            )
        if self.multiscale and len(scales) < 2:
            raise OccludeError("multiscale needs several patch sizes in scales", params=("multiscale", "scales"))
        if self.ray is None and (self.workers is not None or self.gpus_per_worker):
            raise OccludeError("workers and gpus_per_worker need ray", params=("workers", "gpus_per_worker", "ray"))
        if self.workers is not None and (int(self.workers) != self.workers or self.workers < 1):
            raise OccludeError(f"workers must be at least 1, got {self.workers}", params=("workers",))
        if not (self.gpus_per_worker == self.gpus_per_worker and 0.0 <= self.gpus_per_worker <= 64):
            raise OccludeError(
                f"gpus_per_worker must be between 0 and 64, got {self.gpus_per_worker}", params=("gpus_per_worker",)
            )
        style = (self.style or RenderStyle()).checked()  # the command's default look, recorded as it
        if style.shared and (len(scales) > 1 or self.shard is not None):
            raise OccludeError(
                "color_limit shared needs the whole run in one process and one patch size (not with shard or "
                "several scales): give a fixed color_limit instead",
                params=("color_limit", "shard", "scales"),
            )
        regions = self.regions
        if regions is not None and not isinstance(regions, RegionLabels):
            regions = RegionLabels(regions).checked()  # a bad label map: one error before any input
        junit, summary_md = checked_targets(self.junit, self.summary_md)
        return replace(
            self,
            scales=scales,
            shard=check_shard(self.shard),
            style=style,
            junit=junit,
            summary_md=summary_md,
            regions=regions,
        )

    def writing(self) -> dict:
        """The keywords of the folder loop that decide the files (see :class:`occlude_cli.batch.loop.Writing`)."""
        names: Tuple[str, ...] = ("npy", "all_classes", "timing", "metrics", "multiscale", "style", "panels")
        names += ("nifti", "regions", "dicom_out", "deidentify")
        return {"scales": self.scales, **{name: getattr(self, name) for name in names}}


def split_options(options, settings, overrides: dict) -> Tuple[ExplainOptions, RunSettings]:
    """ExplainOptions and RunSettings with keyword ``overrides`` routed by name (unknown names: TypeError)."""
    ours = {f.name for f in fields(RunSettings)}
    mine = {k: v for k, v in overrides.items() if k in ours}
    options = (options or ExplainOptions()).with_overrides({k: v for k, v in overrides.items() if k not in ours})
    return options, replace(settings or RunSettings(), **mine)


@dataclass
class FolderPlan:
    """A folder run decided before any image: the model opened, the options checked against it (every patch
    size), the memory plan, and the inputs found (this shard's, all shards', and the arguments that named
    none)."""

    out: Path
    classifier: OnnxClassifier
    preprocessing: Any
    labels: Optional[List[str]]
    options: ExplainOptions
    settings: RunSettings
    memory: Optional[MemoryPlan]
    images: Any  # List[InputImage], or StreamedInputs read as the run goes (``-``)
    every: Optional[List[InputImage]]
    problems: List[Tuple[str, str]]
    notes: List[Tuple[str, str]] = field(default_factory=list)
    deidentifier: Optional[Deidentifier] = None

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, StreamedInputs)

    def listed(self) -> List[InputImage]:
        """This process's inputs as a list (a stream read to its end: for the estimate and the baseline check)."""
        if self.streamed:
            self.images = list(self.images)
        return self.images


def plan_folder(
    model, inputs, out, options=None, settings=None, *, model_options=None, preprocessing=None, labels=None, **more
) -> FolderPlan:
    """Everything a folder run checks and decides before any image: see :func:`run_folder`."""
    out = checked_path(out, "out")
    options, settings = split_options(options, settings, more)
    settings, options = settings.checked(), options.checked()
    if settings.scales and options.patch is None:
        options = replace(options, patch=settings.scales[0])
    opened = open_model(
        model, model_options, task=options.task, resize=default_resize(options.task, options.detect_format)
    )
    # the inputs are found first (nothing is read; what discovery found is told after every check passed)
    images, every, problems, notes = _inputs(inputs, out, settings, options.series, options.series_uid)
    deidentifier = None
    if settings.deidentify:  # every input under its pseudonym, before any name is used
        deidentifier = deidentifier_for(problems=problems)
        every = pseudonymised(every, deidentifier)
        images = take_shard(every, settings.shard)
        if isinstance(settings.regions, RegionLabels):
            deidentifier.file_name(settings.regions.path, "regions")
    preprocessing = preprocessing or opened.preprocessing
    labels = list(labels) if labels is not None else opened.labels
    if len(getattr(preprocessing, "size", ())) == 3 and (settings.aggregate or len(settings.scales) > 1):
        raise OccludeError(
            "aggregate and several patch sizes (scales) are for 2-D maps: not available for 3-D models",
            params=("aggregate", "scales"),
        )
    if len(getattr(preprocessing, "size", ())) == 3 and settings.style is not None and settings.style.shared:
        raise OccludeError(
            "color_limit shared is for 2-D maps: give a 3-D model a fixed color_limit", params=("color_limit",)
        )
    memory = None
    for patch in settings.scales or [options.patch]:
        geometry = check_run(replace(options, patch=patch), preprocessing, opened.classifier, labels)
        memory = memory_plan(
            opened.classifier, preprocessing, options, geometry, all_classes=settings.all_classes, previous=memory
        )
    if memory is not None and memory.shrunk:
        options = replace(options, batch_size=memory.batch_size)
    return FolderPlan(
        Path(out),
        opened.classifier,
        preprocessing,
        labels,
        options,
        settings,
        memory,
        images,
        every,
        problems,
        notes,
        deidentifier,
    )


def _inputs(
    inputs, out, settings: RunSettings, series: bool, series_uid: Optional[str] = None
) -> Tuple[Any, Any, List[Tuple[str, str]], list]:
    """(this shard's images, every image, arguments that named nothing, discovery notes): ``inputs`` are paths,
    folders and globs (str, Path or a list of them), or images already discovered (InputImage)."""
    notes: List[Tuple[str, str]] = []
    given = [inputs] if isinstance(inputs, (str, Path, StreamedInputs)) else list(inputs)
    every: List[InputImage]
    problems: List[Tuple[str, str]]
    streamed = streamed_inputs(given, out, settings.null, settings.recursive, settings.shard, series, notes)
    if streamed is not None:
        return streamed, None, [], notes
    if given and all(isinstance(i, InputImage) for i in given):
        every, problems = [i for i in given if isinstance(i, InputImage)], []
    else:
        every, problems = discover_inputs(
            [str(i) for i in given],
            recursive=settings.recursive,
            exclude=[out],
            notes=notes,
            series=series,
            series_uid=series_uid,
        )
    return take_shard(every, settings.shard), every, problems, notes


@dataclass
class FolderRun:
    """What :func:`run_folder` did: one row per input (in input order, then the arguments that named none;
    status ``pending`` for the inputs Ctrl-C or SIGTERM stopped it before), the output folder's state after its
    run-level files were rebuilt, whether it was interrupted, the run's notes (how its maps were computed), and
    what was decided before (``plan``)."""

    rows: list
    folder: Any
    interrupted: bool
    notes: dict
    plan: FolderPlan

    @property
    def summary(self) -> dict:
        """The run summary as ``--json`` prints it (counts, whether it was interrupted, warnings, one row per
        input)."""
        return summary_document(self.rows, interrupted=self.interrupted)

    @property
    def pending(self) -> int:
        """Inputs the run did not reach (interrupted): ``--resume`` runs them."""
        return sum(1 for r in self.rows if r.status == "pending")

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.rows)


def run_folder(
    model: Union[str, Path, OnnxClassifier],
    inputs: Union[str, Path, Sequence],
    out: Union[str, Path] = "occlude-out",
    options: Optional[ExplainOptions] = None,
    settings: Optional[RunSettings] = None,
    *,
    model_options: Optional[ModelOptions] = None,
    preprocessing=None,
    labels: Optional[Sequence[str]] = None,
    events: RunEvents = QUIET,
    **overrides,
) -> FolderRun:
    """Explain every input under ``inputs`` (files, folders, globs; or images from
    :func:`~occlude_cli.batch.discover_inputs`) into ``out``, as ``occlude run`` does: the output names rule, a
    manifest per job, resume, shards, summary.json/.csv, and (asked for) the aggregate and the report.

    ``model``: a model file (opened with ``model_options``) or a loaded classifier. ``options`` and
    ``settings``: the run's ExplainOptions and :class:`RunSettings`; keyword ``overrides`` set fields of either
    (``patch=32``, ``aggregate=True``). Every check that needs no image runs first: a bad option is one
    OccludeError naming the parameter, before anything is written. One input failing is recorded in its row;
    Ctrl-C stops after the files already written (``interrupted``). ``events``: what the run tells as it goes.
    """
    started = time.time()
    plan = plan_folder(
        model,
        inputs,
        out,
        options,
        settings,
        model_options=model_options,
        preprocessing=preprocessing,
        labels=labels,
        **overrides,
    )
    events = deidentified(events, plan.deidentifier)  # the terminal never shows what the files do not
    check_output_folder(plan.out)
    check_run_level_files(plan.out, plan.every or (), plan.settings.shard)
    _tell(plan, remove_stale_temps(plan.out, started), events)
    executor = _ray_executor(plan, model_options, events) if plan.settings.ray else None
    images_executor = executor
    windows = events.windows if events.draws_windows else None
    # one input on Ray: its windows are split into chunks (classifier outputs; a task's image goes to one worker)
    task = task_of(plan.classifier, plan.options)
    if executor is not None and not plan.streamed and len(plan.images) == 1 and task == "classify":
        images_executor = LocalExecutor(plan.classifier, windows, window_executor=executor)
    if plan.streamed:  # paths from stdin: the count and what resume skips are known as they come
        plan.images.on_problem = events.problem
        events.started(None)
    else:
        events.started(len(plan.images), skipping=_resuming(plan))
    try:
        result = _run_planned(plan, images_executor, windows, events)
    finally:
        if executor is not None:
            executor.shutdown()
        events.finished()
    rows = [entry.row for entry in result.entries] if result.entries else result.rows
    if plan.deidentifier is not None:  # what the terminal and --json show is de-identified too
        rows = [replace(r, **{k: plan.deidentifier.scrub(v) for k, v in r.__dict__.items()}) for r in rows]
    settings = plan.settings
    write_reports(run_cases(rows), "occlude run", settings.junit, settings.summary_md, settings=_ci_settings(plan))
    return FolderRun(rows, result.folder, result.interrupted, result.notes, plan)


def _run_planned(plan: FolderPlan, images_executor, windows, events: RunEvents) -> BatchResult:
    """The planned images through the folder loop (while a de-identifying run writes, everything is scrubbed)."""
    with deidentifying(plan.deidentifier):
        return run_images(
            plan.classifier,
            plan.images,
            plan.out,
            plan.options,
            preprocessing=plan.preprocessing,
            all_images=plan.every,
            shard=plan.settings.shard,
            problems=plan.problems,
            aggregate=plan.settings.aggregate,
            report=plan.settings.report,
            labels=plan.labels,
            resume=plan.settings.resume,
            executor=images_executor,
            prefetch=plan.settings.prefetch,
            on_image_start=events.image_started,
            on_windows=windows,
            on_image_done=events.image_done,
            on_note=events.note,
            on_warning=events.warning,
            on_explained=events.explained if events.wants_explanations else None,
            **plan.settings.writing(),
        )


def _resuming(plan: FolderPlan) -> Set[str]:
    """With resume, the keys of the inputs whose results most likely exist (an ETA leaves them out)."""
    if not plan.settings.resume:
        return set()
    batch = dict(preprocessing=plan.preprocessing, labels=plan.labels, **plan.settings.writing())
    return likely_skipped(plan.classifier, plan.images, plan.out, plan.options, **batch)


def _ci_settings(plan: FolderPlan) -> dict:
    """What a run's JUnit file records of its job (the suite's properties)."""
    options = plan.options
    return {
        "model": getattr(plan.classifier, "path", None),
        "patch": list(as_size(options.patch, "patch")) if options.patch else None,
        "stride": list(as_size(options.stride, "stride")) if options.stride else None,
        "baseline": options.baseline,
        "shard": "/".join(map(str, plan.settings.shard)) if plan.settings.shard else None,
    }


def _tell(plan: FolderPlan, removed: list, events: RunEvents) -> None:
    """What the run found before its first image: stale temporary files removed, discovery notes, a batch
    rewrite or a batch shrunk to fit the memory budget, and the arguments that named no input."""
    if removed:
        events.note(f"removed {len(removed)} temporary file(s) left by an interrupted run in {plan.out}")
    for path, note in plan.notes:
        events.note(discovery_note(path, note, plan.deidentifier is not None))
    if plan.classifier.batch_note:
        events.note(plan.classifier.batch_note)
    for note in getattr(plan.classifier, "device_notes", []):
        events.note(note, ("device",))
    if plan.memory is not None and plan.memory.note():
        events.note(str(plan.memory.note()), ("max_memory",))
    for _, problem in plan.problems:
        events.problem(problem)


def _ray_executor(plan: FolderPlan, model_options: Optional[ModelOptions], events: RunEvents):
    """A RayExecutor for the run: actors rebuild the model from its file with the same options."""
    from ..executors.ray_backend import RayExecutor, model_spec_of

    settings = plan.settings
    spec = model_spec_of(plan.classifier)
    if settings.gpus_per_worker > 0:
        spec["device"] = "cuda"
    threads = (model_options.threads if model_options else None) or 1
    spec["threads"] = threads
    return RayExecutor(
        spec,
        address=None if settings.ray == "local" else settings.ray,
        workers=settings.workers,
        threads_per_worker=threads,
        gpus_per_worker=settings.gpus_per_worker,
        quiet=events.quiet,
    )


def estimate_folder(
    model, inputs, out="occlude-out", options=None, settings=None, *, events: RunEvents = QUIET, **more
) -> dict:
    """What ``run_folder`` with the same arguments would cost, from one timed batch on the first input
    (:func:`~occlude_cli.estimate_run`), for every input: ``images`` and ``estimated_total_s`` added. Nothing
    is written (``out`` is only left out of the inputs, as the run would)."""
    plan = plan_folder(model, inputs, out, options, settings, **more)
    stream = plan.images if plan.streamed else None
    images = plan.listed()
    for _, problem in plan.problems + (stream.problems if stream is not None else []):
        events.problem(problem)
    if not images:
        raise OccludeError("nothing to estimate: no readable image among the inputs")
    estimate = estimate_run(
        plan.classifier,
        images[0].path,
        plan.options,
        preprocessing=plan.preprocessing,
        labels=plan.labels,
        scales=plan.settings.scales,
        metrics=plan.settings.metrics,
    )
    estimate["images"] = len(images)
    estimate["estimated_total_s"] = estimate["estimated_s"] * len(images)
    return estimate


@dataclass
class BaselineCheck:
    """What :func:`baseline_check_folder` measured: one document per input that could be read, and how many
    could not (each told through ``events.problem``)."""

    documents: List[dict]
    failed: int
    written: Path


def baseline_check_folder(
    model, inputs, out="occlude-out", options=None, settings=None, *, events: RunEvents = QUIET, **more
) -> BaselineCheck:
    """Per input, how far each baseline moves the model's top-1 confidence (:func:`baseline_check` on the
    same seeded random windows), written to OUT/baseline_check.json."""
    plan = plan_folder(model, inputs, out, options, settings, **more)
    stream = plan.images if plan.streamed else None
    images = plan.listed()
    for _, problem in plan.problems + (stream.problems if stream is not None else []):
        events.problem(problem)
    if not images:
        raise OccludeError("nothing to check: no readable input")
    check_output_folder(plan.out)
    documents, failed = [], 0
    for image in images:
        try:
            documents.append(
                baseline_check(
                    plan.classifier,
                    image.path,
                    None,
                    plan.options,
                    preprocessing=plan.preprocessing,
                    labels=plan.labels,
                )
            )
        except OccludeError as exc:
            failed += 1
            events.problem(f"{image.path}: {exc}", exc.params)
    return BaselineCheck(documents, failed, write_baseline_check(documents, plan.out))
