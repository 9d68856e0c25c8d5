"""The folder loop: many images, one model. Each image is planned on this process (output names, fingerprint,
whether ``resume`` skips it), computed by an executor (this process, or Ray actors), written in one writer
thread while the next is computed, and recorded in input order; the job's manifest is the folder's source of
truth (:mod:`occlude_cli.outputs.folder`). Memory stays bounded: one image and one map are held at a time
(plus at most :data:`MAX_PENDING_WRITES` waiting to be written)."""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..analyses.explain import explain, explain_scales
from ..analyses.medical import VolumeExplanation
from ..analyses.options import ExplainOptions
from ..core.baselines import baseline_image_path
from ..core.metrics import peak
from ..errors import OccludeError, RunWideError, first_line
from ..loaders.images import Preprocessing, decode_photo, is_photo
from ..loaders.model import OnnxClassifier, file_sha256
from ..loaders.prefetch import decode_ahead
from ..outputs import provenance
from ..outputs.folder import (
    NOT_DONE,
    Entry,
    FolderState,
    Job,
    MapAggregate,
    finish_job,
    remove_superseded,
    run_fingerprint,
    saved_map,
    start_job,
    superseded_outputs,
)
from ..outputs.records import SummaryRow
from ..outputs.write import verify_outputs, write_explanation, write_scale_study
from ..text import shown
from .inputs import InputImage, StreamedInputs, folder_sha256, regular_file

# Writes (PNG encoding, JSON, hashing) run in one writer thread while the next image is computed; at most this
# many images wait to be written, so memory stays bounded.
MAX_PENDING_WRITES = 2


@dataclass
class BatchResult:
    """What a batch did: one summary row per image (in input order), whether Ctrl-C or SIGTERM stopped it,
    and (from :func:`run_images`) the output folder's state after the run-level files were rebuilt."""

    rows: List[SummaryRow] = field(default_factory=list)
    interrupted: bool = False
    entries: List[Entry] = field(default_factory=list)
    folder: Optional[FolderState] = None
    notes: Dict[str, str] = field(default_factory=dict)  # the run's notes (Explanation.notes), first text per key


def compute_image(model, path, *, options, preprocessing, labels, scales, metrics, progress=None, executor=None):
    """What one image needs from the model: its explanation (or scale study) and, with ``metrics``, the
    faithfulness numbers. Runs in the executor (this process or a Ray actor); module-level so that Ray
    workers can import it. Writes nothing."""
    kwargs = dict(preprocessing=preprocessing, labels=labels, progress=progress)
    if executor is not None:  # the windows of this one image are scored in parallel elsewhere
        kwargs["executor"] = executor
    if len(scales) > 1:
        study = explain_scales(model, path, scales, options, **kwargs)
        if metrics:  # the faithfulness curves (--metrics): imported when asked for
            from ..analyses.validate import faithfulness

            return study, [faithfulness(e, model) for e in study.explanations]
        return study, None
    explanation = explain(model, path, options, **kwargs)
    if metrics and isinstance(explanation, VolumeExplanation):
        raise OccludeError("metrics are not available for medical inputs yet", params=("metrics",))
    if metrics:
        from ..analyses.validate import faithfulness

        return explanation, faithfulness(explanation, model)
    return explanation, None


class LocalExecutor:
    """Computes images one after the other in this process (the default executor). Same interface as
    :class:`occlude_cli.executors.ray_backend.RayExecutor`: ``map_images`` yields ``(item, result)`` in input
    order, the result being the computed value or the exception the image raised; items whose path is None
    pass through with None."""

    def __init__(
        self, model: OnnxClassifier, on_windows: Optional[Callable[[int, int], None]] = None, window_executor=None
    ) -> None:
        self.model = model
        self.on_windows = on_windows
        self.window_executor = window_executor  # e.g. a RayExecutor scoring one huge image's windows

    def map_images(self, items, compute_kwargs, *, compute=compute_image, path_of=lambda item: item):
        for item in items:
            path = path_of(item)
            if path is None:
                yield item, None
                continue
            try:
                extra = {"executor": self.window_executor} if self.window_executor is not None else {}
                yield item, compute(self.model, path, progress=self.on_windows, **compute_kwargs, **extra)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # the image's own failure: recorded, the run goes on
                yield item, exc

    def shutdown(self) -> None:
        pass


class OutputNames:
    """Which files of an image mark completion (written last, with the fingerprint), give its summary row
    and hold its main map."""

    def __init__(self, key: str, scales: Sequence[Tuple[int, ...]], multiscale: bool) -> None:
        if scales:
            first = f"{key}.patch-{scales[0][0]}x{scales[0][1]}"
            self.marker = f"{key}.scales.json"
            self.record = f"{first}.json"
            self.main_npy = f"{key}.multiscale.npy" if multiscale else f"{first}.npy"
        else:
            self.marker = self.record = f"{key}.json"
            self.main_npy = f"{key}.npy"


@dataclass
class _Plan:
    """One image's decisions, made on the driver before any work: its output names, fingerprint and
    whether --resume skips it (or why it cannot run)."""

    image: InputImage
    layout: OutputNames
    fingerprint: Optional[str] = None
    image_sha: Optional[str] = None
    skip: bool = False
    error: Optional[str] = None
    error_params: Tuple[str, ...] = ()


@dataclass
class Writing:
    """What the files of a run are (each keyword of :func:`run_batch` that is not about running)."""

    npy: bool = True
    all_classes: bool = False
    timing: bool = True
    metrics: bool = False
    scales: Sequence[Tuple[int, ...]] = ()
    multiscale: bool = False
    style: object = None
    panels: bool = False
    nifti: bool = True
    regions: object = None  # a RegionLabels: region tables of medical inputs
    dicom_out: bool = False
    deidentify: bool = False

    @property
    def study(self) -> bool:
        return len(self.scales) > 1

    def look(self) -> dict:
        return {"style": self.style, "panels": self.panels} if self.style is not None else {"panels": self.panels}


def run_settings(
    options: ExplainOptions,
    preprocessing: Preprocessing,
    labels: Optional[Sequence[str]] = None,
    *,
    npy: bool = True,
    all_classes: bool = False,
    metrics: bool = False,
    scales: Sequence[Tuple[int, ...]] = (),
    multiscale: bool = False,
    style=None,
    panels: bool = False,
    nifti: bool = True,
    regions=None,
    dicom_out: bool = False,
    deidentify: bool = False,
    **_not_deciding,
) -> dict:
    """Every parameter that decides an image's result files (what its fingerprint covers, with the model and
    image files); the other keywords of :func:`run_batch` (timing, resume, executor, ...) are ignored."""
    return {
        "options": {
            k: (list(v) if isinstance(v, tuple) else getattr(v, "value", v)) for k, v in options.__dict__.items()
        },
        "preprocessing": preprocessing.describe(),
        **_baseline_file(options.baseline),
        "labels": hashlib.sha256("\n".join(labels or []).encode("utf-8")).hexdigest() if labels else None,
        "npy": npy,
        "all_classes": all_classes,
        "metrics": metrics,
        "scales": [list(s) for s in scales],
        "multiscale": multiscale,
        "style": style.describe() if style is not None else None,
        "panels": panels,
        "nifti": nifti,
        **_task_files(options),
        **({"regions": {"path": str(regions.path), "sha256": file_sha256(regions.path)}} if regions else {}),
        **({"dicom_out": True} if dicom_out else {}),
        **({"deidentify": True} if deidentify else {}),
    }


def _baseline_file(baseline: str) -> dict:
    """An ``image:PATH`` baseline's file content (its sha256), so that --resume redoes every image when the
    baseline image changed under the same path."""
    path = baseline_image_path(baseline)
    if path is None:
        return {}
    try:
        return {"baseline_sha256": file_sha256(path) if regular_file(Path(path))[0] else None}
    except OSError:
        return {"baseline_sha256": None}


def _task_files(options: ExplainOptions) -> dict:
    """The contents of a task's files (mask, reference image, reference embedding) decide its results too: their
    sha256, so that --resume redoes an image whose mask or reference changed (no key for a run without them)."""
    files = {}
    for name in ("mask", "reference", "reference_embedding"):
        value = getattr(options, name, None)
        if isinstance(value, str) and value != "auto" and Path(value).is_file():
            files[name] = hashlib.sha256(Path(value).read_bytes()).hexdigest()
    return {"task_files": files} if files else {}


def one_line(text: str) -> str:
    """An error message as every output shows it (the outside-text rule: it may quote a file name)."""
    return shown(str(text).strip())


def _existing_fingerprint(json_path: Path) -> Optional[str]:
    try:
        with open(json_path, encoding="utf-8") as handle:
            return json.load(handle).get("fingerprint")
    except (OSError, ValueError):
        return None


def _skipped_row(json_path: Path, image: InputImage, marker: str) -> SummaryRow:
    with open(json_path, encoding="utf-8") as handle:
        record = json.load(handle)
    row = SummaryRow.from_record(record, "skipped", marker, None)
    row.path = image.shown
    return row


def likely_skipped(model, images: Sequence[InputImage], out_dir, options: ExplainOptions, **batch) -> Set[str]:
    """The keys of the ``images`` that :func:`run_batch` with ``resume`` will most likely skip, found without
    reading an image: its result file exists and was made with this model and these parameters (``batch``: the
    keywords of :func:`run_batch`; from the image as it was then, so an image changed since is found out only
    when it is planned). Cheap (one small JSON per image): what a progress display's ETA leaves out."""
    settings = run_settings(options, batch.pop("preprocessing"), batch.pop("labels", None), **batch)
    files = Writing(**{k: v for k, v in batch.items() if k in Writing.__dataclass_fields__})
    keys = set()
    for image in images:
        marker = Path(out_dir) / OutputNames(image.key, files.scales if files.study else (), files.multiscale).marker
        try:
            with open(marker, encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("image_sha256"), str):
            if run_fingerprint(model.sha256, record["image_sha256"], settings) == record.get("fingerprint"):
                keys.add(image.key)
    return keys


# not opened: reading one blocks (FIFO) or never ends (device)
_NEVER_OPENED = ("FIFO", "socket", "character device", "block device", "special file")


def run_batch(
    model: OnnxClassifier,
    images: Iterable[InputImage],
    out_dir,
    options: ExplainOptions,
    *,
    preprocessing: Preprocessing,
    labels: Optional[Sequence[str]] = None,
    resume: bool = False,
    aggregate: Optional[MapAggregate] = None,
    executor=None,
    on_image_start: Optional[Callable[[InputImage], None]] = None,
    on_windows: Optional[Callable[[int, int], None]] = None,
    on_image_done: Optional[Callable[..., None]] = None,
    on_note: Optional[Callable[[str], None]] = None,
    on_warning: Optional[Callable[..., None]] = None,
    on_explained: Optional[Callable[..., None]] = None,
    prefetch: Optional[bool] = None,
    **writing,
) -> BatchResult:
    """Explain every image with one loaded model, writing its outputs under ``out_dir/KEY.*``.

    ``writing``: the keywords of :class:`Writing` (npy, all_classes, timing, metrics, scales, multiscale, style,
    panels, nifti). With two or more ``scales`` (patch sizes) each image gets one set of outputs per scale and a
    KEY.scales.json with their rank correlations. ``metrics`` adds deletion/insertion AUCs to the JSON.
    One image failing (unreadable, truncated, not an image) is recorded and the run goes on. Ctrl-C or
    SIGTERM (as KeyboardInterrupt) stops after the files already written, which are all complete.

    ``executor`` computes the images (default :class:`LocalExecutor`; a RayExecutor spreads them over a
    cluster); this process alone decides resume, writes every file (in a writer thread, overlapping the next
    image's computation) and keeps the rows in input order, so the outputs are the same whichever executor ran.

    ``on_image_done(image, row, params)``: ``params`` names the parameters a failed row's error is about.
    ``on_note`` is called once per run for each kind of note the explanations carry (``Explanation.notes``:
    how the maps were computed, e.g. approximate incremental inference), with the first image's text.
    ``on_warning(text, params, key, source)`` is called for every warning of every computed image (a
    :class:`~occlude_cli.errors.Notice`: a front end groups them by key), and ``on_explained(image,
    explanation)`` with each computed image's explanation, both before its ``on_image_done``.
    ``prefetch``: decode the next photo on a thread while this one is scored (default: when the model runs on
    CUDA and no other executor is given; on the CPU the decoder would take cores from onnxruntime).
    """
    settings = run_settings(options, preprocessing, labels, **writing)  # a shared colour limit is part of it
    style = writing.get("style")
    if style is not None and style.shared:  # each picture on its own limit first, redrawn once all maps are in
        writing = {**writing, "style": style.with_limit(None)}
    files = Writing(**writing)
    loop = _Loop(model, Path(out_dir), files, settings, resume, aggregate, on_image_start, on_image_done, on_note)
    loop.on_warning, loop.on_explained = on_warning, on_explained
    compute_kwargs = dict(
        options=options,
        preprocessing=preprocessing,
        labels=list(labels) if labels else None,
        scales=[tuple(s) for s in files.scales],
        metrics=files.metrics,
    )
    if prefetch is None:  # decoding ahead pays where scoring does not need the CPU: on a GPU
        local = executor is None or (isinstance(executor, LocalExecutor) and executor.window_executor is None)
        prefetch = local and getattr(model, "provider", "") == "CUDAExecutionProvider"
    return loop.run(images, executor or LocalExecutor(model, on_windows), compute_kwargs, prefetch)


class _Loop:
    """The state of one :func:`run_batch`: the images planned, computed, written and recorded in order."""

    def __init__(self, model, out_dir, files, settings, resume, aggregate, on_start, on_done, on_note) -> None:
        self.model, self.out_dir, self.files, self.settings = model, out_dir, files, settings
        self.resume, self.aggregate = resume, aggregate
        self.on_start, self.on_done, self.on_note = on_start, on_done, on_note
        self.on_warning: Optional[Callable[..., None]] = None
        self.on_explained: Optional[Callable[..., None]] = None
        self.result = BatchResult()
        self.pending: Deque[Tuple[_Plan, object, Optional[Future]]] = deque()

    def run(self, images, executor, compute_kwargs, prefetch: bool = False) -> BatchResult:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlude-writer") as writer:
            try:
                if prefetch:  # the next photo decodes on a thread while this one is scored
                    images = decode_ahead(images, lambda image: image.path, decode_photo, is_photo)
                plans = (self.plan(image) for image in images)
                for plan, outcome in executor.map_images(plans, compute_kwargs, compute=compute_image, path_of=_path):
                    runs = outcome is not None and not isinstance(outcome, BaseException)
                    self.pending.append((plan, outcome, writer.submit(self.write, plan, outcome) if runs else None))
                    # a volume is written before the next is read: its budget (limits.check_volume_size) is per volume
                    self.drain(0 if isinstance(outcome, VolumeExplanation) else MAX_PENDING_WRITES)
            except KeyboardInterrupt:
                self.result.interrupted = True
            finally:
                try:
                    self.drain(0)  # the writes already started finish (each file is atomic), then their rows are kept
                except KeyboardInterrupt:
                    self.result.interrupted = True
        return self.result

    def plan(self, image: InputImage) -> _Plan:
        """The driver's decisions for one image, before any work (and the image's start event)."""
        files = self.files
        plan = _Plan(image, OutputNames(image.key, files.scales if files.study else (), files.multiscale))
        if self.on_start:
            self.on_start(image)
        try:
            regular, kind = regular_file(image.path)
            if not regular and kind in _NEVER_OPENED:
                raise OccludeError(f"not a regular file ({kind}), not opened: {image.path}")
            plan.image_sha = (
                file_sha256(image.path) if regular else folder_sha256(image.path) if image.path.is_dir() else None
            )
            plan.fingerprint = run_fingerprint(self.model.sha256, plan.image_sha or "", self.settings)
            plan.skip = bool(
                self.resume
                and plan.image_sha
                and _existing_fingerprint(self.out_dir / plan.layout.marker) == plan.fingerprint
                and verify_outputs(self.out_dir / plan.layout.marker) is None
            )
        except OccludeError as exc:
            plan.error, plan.error_params = one_line(str(exc)), exc.params
        except OSError as exc:
            plan.error = one_line(f"cannot read {image.path}: {exc.strerror or exc}")
        return plan

    def write(self, plan: _Plan, outcome) -> Tuple[object, float]:
        """Write one computed image (runs in the writer thread); returns (the explanation, write seconds)."""
        started = time.perf_counter()
        computed, measures = outcome
        files, out_dir, key = self.files, self.out_dir, plan.image.key
        extra = {"fingerprint": plan.fingerprint, "image_sha256": plan.image_sha}
        previous = superseded_outputs(out_dir, key)  # what an earlier run wrote for this image
        if isinstance(computed, VolumeExplanation):  # medical inputs (issue 12)
            from ..outputs.volumes import write_volume_explanation

            if measures is not None:
                raise OccludeError("metrics are not available for medical inputs yet", params=("metrics",))
            written = write_volume_explanation(
                computed,
                out_dir,
                key,
                npy=files.npy,
                nifti=files.nifti,
                all_classes=files.all_classes,
                timing=files.timing,
                extra=extra,
                regions=files.regions,
                dicom_out=files.dicom_out,
                **files.look(),
            )
        elif files.regions is not None or files.dicom_out:
            name = "regions (a label map)" if files.regions is not None else "dicom_out"
            raise OccludeError(f"{name} applies to DICOM and NIfTI inputs", params=("regions", "dicom_out"))
        elif files.study:
            written = write_scale_study(
                computed,
                out_dir,
                key,
                npy=files.npy,
                timing=files.timing,
                multiscale=files.multiscale,
                extra=extra,
                metrics=measures,
                **files.look(),
            )
        else:
            if measures is not None:
                extra["metrics"] = measures
            written = write_explanation(
                computed,
                out_dir,
                key,
                npy=files.npy,
                all_classes=files.all_classes,
                timing=files.timing,
                extra=extra,
                **files.look(),
            )
        remove_superseded(out_dir, previous, written)  # e.g. STEM.npy after --no-npy: never left to be read
        return computed, time.perf_counter() - started

    def drain(self, block_until: int) -> None:
        pending = self.pending
        while pending and (len(pending) > block_until or pending[0][2] is None or pending[0][2].done()):
            plan, outcome, future = pending.popleft()
            row, params = self.finish(plan, outcome, future)
            self.result.rows.append(row)
            fingerprint = plan.fingerprint if row.status != "failed" else None
            self.result.entries.append(Entry(row, plan.image.key, fingerprint))
            if self.on_done:
                self.on_done(plan.image, row, params)

    def finish(self, plan: _Plan, outcome, future) -> Tuple[SummaryRow, Tuple[str, ...]]:
        """The image's row, in input order, once its files are written (or why it failed), and the parameters
        its error names."""
        image = plan.image
        try:
            if plan.error is not None:
                return SummaryRow(path=image.shown, status="failed", error=plan.error), plan.error_params
            if plan.skip:
                row = _skipped_row(self.out_dir / plan.layout.record, image, plan.layout.marker)
                if self.aggregate is not None:  # the map as its JSON holds it, as a fresh image's (exact float64)
                    self.aggregate.add(saved_map(self.out_dir, plan.layout.marker))
                return row, ()
            if isinstance(outcome, BaseException):
                raise outcome
            assert future is not None
            computed, write_s = future.result()
            return self.ok_row(plan, computed, write_s), ()
        except RunWideError:  # every input would fail alike: the run stops, as an error before any input
            raise
        except OccludeError as exc:  # one line by design: a file name's line breaks are shown as \\n
            return SummaryRow(path=image.shown, status="failed", error=one_line(str(exc))), exc.params
        except Exception as exc:  # one bad image must never stop the rest: record what happened
            error = f"{type(exc).__name__}: {first_line(exc)}"
            return SummaryRow(path=image.shown, status="failed", error=error), ()

    def ok_row(self, plan: _Plan, computed, write_s: float) -> SummaryRow:
        study = self.files.study
        explanation = computed.explanations[0] if study else computed
        for each in computed.explanations if study else [computed]:
            for key, text in getattr(each, "notes", {}).items():
                if key not in self.result.notes:
                    self.result.notes[key] = text
                    if self.on_note:
                        self.on_note(text)
        if self.aggregate is not None:
            self.aggregate.add(computed.mean_map() if (study and self.files.multiscale) else explanation.map)
        if self.on_warning is not None:
            scrub = getattr(provenance.active(), "scrub_text", str)  # a de-identifying run: no path on the terminal
            for warning in explanation.warnings:
                key, params = getattr(warning, "key", str(warning)), getattr(warning, "params", ())
                self.on_warning(scrub(str(warning)), params, key, scrub(str(plan.image.path)))
        if self.on_explained:
            self.on_explained(plan.image, explanation)
        info = peak(explanation.map)
        compute_s = float(explanation.timing.get("total_s", 0.0))
        return SummaryRow(
            path=plan.image.shown,
            status="ok",
            target_index=explanation.target,
            target_label=explanation.label(explanation.target),
            original_score=float(explanation.occlusion.original_scores[explanation.target]),
            peak_z=info.get("z"),
            peak_y=info["y"],
            peak_x=info["x"],
            peak_value=info["value"],
            seconds=round(compute_s + write_s, 3) if self.files.timing else None,
            output=plan.layout.marker,
            warning="; ".join(explanation.warnings) or None,
        )


def _path(plan: _Plan):
    return None if (plan.skip or plan.error is not None) else plan.image.path


def run_images(
    model: OnnxClassifier,
    images: Iterable[InputImage],
    out_dir,
    options: ExplainOptions,
    *,
    preprocessing: Preprocessing,
    all_images: Optional[Sequence[InputImage]] = None,
    shard: Optional[Tuple[int, int]] = None,
    problems: Sequence[Tuple[str, str]] = (),
    aggregate: bool = False,
    report: bool = False,
    style=None,
    **batch,
) -> BatchResult:
    """One process of a folder run: :func:`run_batch` over ``images`` (with ``shard``, this share of
    ``all_images``; ``images`` may be :class:`~occlude_cli.batch.inputs.StreamedInputs`, read as the run goes,
    already this shard's), recorded in the output folder's manifest, then summary.json/.csv, the aggregate
    (``aggregate``: once every shard has finished) and the report (``report``) rebuilt from the current job's
    manifests. ``problems``: (argument, error) pairs of arguments that named no image, kept as failed rows.
    ``batch``: the other keywords of :func:`run_batch`. The result's ``folder`` says which shards are in."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefetch = batch.pop("prefetch", None)  # how images are read, not what is computed: not in the settings
    streamed = isinstance(images, StreamedInputs)
    every = None if streamed else list(all_images) if all_images is not None else list(images)
    scales = batch.get("scales") or ()
    describe = model.describe()
    job = Job.plan(
        {"path": describe["path"], "sha256": describe["sha256"]},
        run_settings(options, preprocessing, style=style, **batch),
        None if every is None else [i.key for i in every],
        shard,
        aggregate=aggregate,
        report=report,
    )
    loose = [Entry(SummaryRow(path=arg, status="failed", error=one_line(problem))) for arg, problem in problems]
    study = scales if len(scales) > 1 else ()

    planned = [
        Entry(
            SummaryRow(
                path=i.shown,
                status="pending",
                output=OutputNames(i.key, study, bool(batch.get("multiscale"))).marker,
            ),
            i.key,
        )
        for i in ([] if streamed else images)
    ]
    start_job(out_dir, job, planned + loose)
    result = run_batch(
        model, images, out_dir, options, preprocessing=preprocessing, style=style, prefetch=prefetch, **batch
    )
    if isinstance(images, StreamedInputs):  # what the stream named that was no input, after its images
        loose += [
            Entry(SummaryRow(path=arg, status="failed", error=one_line(problem))) for arg, problem in images.problems
        ]
        result.entries = result.entries + loose
    else:
        done = {e.key: e for e in result.entries}
        result.entries = [done.get(e.key, e) for e in planned] + loose
    for entry in result.entries:
        if entry.row.status == "pending":  # Ctrl-C came before this image: --resume runs it
            entry.row.error = NOT_DONE
    if style is not None and style.shared and not result.interrupted:
        from ..outputs.recolour import recolour_shared

        for note in recolour_shared(out_dir, result.entries, style):
            if batch.get("on_note"):
                batch["on_note"](note)
    result.rows += [e.row for e in loose]
    result.folder = finish_job(out_dir, job, result.entries, interrupted=result.interrupted, style=style)
    return result
