"""From a model and an input to an explanation: the function a library user calls (:func:`explain`).

It wires the stages together (setup -> baseline -> window scorer -> engine -> warnings); the input's modality
prepares it and fills the windows, the engine computes the maps. It writes no file and draws nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union, cast

import numpy as np

from .._version import __version__
from ..core.baselines import baseline_image_path, default_blur_sigma
from ..core.engine import Occlusion, occlusion_sensitivity, window_grid
from ..core.refine import refined_occlusion_sensitivity
from ..errors import Notice, OccludeError
from ..loaders.baseline_image import baseline_image
from ..loaders.cuda import device_description
from ..loaders.images import PreparedImage, Preprocessing
from ..loaders.model import (
    SATURATION_PARAMS,
    SCORE_NAMES,
    Head,
    OnnxClassifier,
    auto_head,
    resolve_target,
    saturation_remedy,
)
from ..loaders.modelfiles import find_model_file
from ..loaders.volumes import VolumePreprocessing, volume_preprocessing_from_metadata
from .explanation import Explanation, ScaleStudy
from .options import ExplainOptions, label_count_error, score_name
from .plan import Setup, check_top_k, setup
from .preprocessing import ModelOptions, preprocessing_for, resolve_labels
from .scorers import task_incremental, window_scorer
from .tasks.scoring import TaskScoring

# A probability above this makes occlusion drops tiny and the map unreadable: suggest logits.
SATURATION = 0.99


def explain(
    model: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Union[Preprocessing, VolumePreprocessing]] = None,
    labels: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    executor=None,
    **overrides,
) -> Explanation:
    """Explain one image: load (if paths), preprocess, occlude, and return the maps.

    Args:
        model: an ONNX file, a folder holding one (an optimum or timm export), or an :class:`OnnxClassifier`
            already opened (load once, reuse: it may be shared by threads).
        image: a path (PNG, JPEG, ...; DICOM or NIfTI for medical models), a PIL image, or a numpy array: (H, W)
            grey, (H, W, C) or (C, H, W) with 1, 3 or 4 (RGBA) channels, ``uint8`` pixels 0..255 (the same map
            as a PNG of them) or floats in 0..1 (never rounded); other dtypes are refused (see
            :mod:`occlude_cli.loaders.arrays`).
        options: the run's :class:`ExplainOptions`; keyword ``overrides`` set its fields (``patch=32``,
            ``stride=16``, ``baseline="blur"``, ``target=285`` or a label, ``top_k=3``, ``score="logit"``,
            ``batch_size=64``, ``region=(x0, y0, x1, y1)``, ``refine=True``, ``incremental="off"``, ...). An
            unknown keyword is a TypeError.
        preprocessing: how the image becomes the model input (default: from the model's metadata and shape;
            see :func:`resolve_preprocessing` and :func:`open_model`).
        labels: class names, one per class (default: the model's own, else none).
        progress: called as ``progress(done, total)`` with the windows scored so far.
        executor: an object with ``score_windows(inputs, baseline, windows, None, *, batch_size, spatial_axes,
            progress, score_kind)`` (a RayExecutor) that scores the windows elsewhere, in parallel chunks; the
            engine aggregates them as usual, so the map is the local one.

    Returns:
        An :class:`Explanation`: ``map`` (H, W) float64 at model-input size, ``maps`` (top_k, H, W),
        ``target``, ``label(i)``, ``occlusion`` (every window's scores), ``params`` (what reproduces it).

    Raises:
        OccludeError: bad input, naming the parameter in its message and in ``.params``.
    """
    started = time.perf_counter()
    s = setup(model, image, options, preprocessing, labels, overrides)
    o = s.options
    blur_sigma = o.blur_sigma if o.blur_sigma is not None else default_blur_sigma(s.patch)
    baseline = s.modality.baseline(o.baseline, s.prepared, s.patch, seed=o.seed, blur_sigma=blur_sigma)
    run = _occlude(s, baseline, progress, executor)
    finished = time.perf_counter()
    return s.modality.explanation(
        model=s.model.describe(),
        image=cast(PreparedImage, s.prepared),  # a PreparedVolume for a VolumeExplanation (see its ``prepared``)
        targets=run.targets,
        labels=s.task.labels if s.task is not None else s.labels,
        score_kind=run.head.kind,
        occlusion=run.occlusion,
        maps=run.maps,
        params=_params(s, blur_sigma, run, executor),
        timing={
            "prepare_s": run.prepared_at - started,
            "occlusion_s": run.occluded_at - run.prepared_at,
            "total_s": finished - started,
            "windows_per_s": run.occlusion.forward_passes / max(run.occluded_at - run.prepared_at, 1e-9),
        },
        head=run.head,
        warnings=s.modality.warnings(s.model, s.options, s.prepared) + run.warnings,
        notes=run.notes,
        score=run.score,
        drawing=_drawing(s.task),
    )


def _drawing(task: Optional[TaskScoring]) -> Optional[dict]:
    """What the overlay outlines for a task: its target box or its mask (original pixels)."""
    if task is None or (task.box is None and task.mask is None):
        return None
    return {"box": task.box, "mask": task.mask}


@dataclass
class _Run:
    """What the engine gave for one input, with the head and target it was computed for."""

    occlusion: Occlusion
    head: Head
    score: Callable[[np.ndarray], np.ndarray]
    targets: List[int]
    maps: np.ndarray
    batch_size: int
    prepared_at: float
    occluded_at: float
    incremental: dict
    warnings: List[str] = field(default_factory=list)
    notes: Dict[str, str] = field(default_factory=dict)
    batches: str = "host"  # where the occluded batches were built: host (numpy) or device (the pre-graph)


def _params(s: Setup, blur_sigma: float, run: _Run, executor) -> dict:
    """Everything needed to reproduce the map (``params`` of the JSON record)."""
    o = s.options
    parallel = (
        {"parallel_scoring": {"backend": type(executor).__name__, "workers": getattr(executor, "workers", None)}}
        if executor is not None and run.incremental.get("used") is False
        else {}
    )
    return {
        "patch": list(s.patch),
        "stride": list(s.stride),
        "baseline": o.baseline,
        **_baseline_image_record(o.baseline, s.preprocessing),
        "blur_sigma": blur_sigma if o.baseline == "blur" else None,
        "seed": o.seed,
        "batch_size": int(run.batch_size),
        "score": score_name(o.score),
        "head": run.head.describe(),
        "region": list(s.region) if s.region is not None else None,
        "refine": {"step": o.refine_step, "budget": o.refine_budget} if o.refine else None,
        "incremental": run.incremental,
        **({"batches": "device"} if run.batches == "device" else {}),  # host-built: the JSON of earlier versions
        **parallel,
        **({"task": s.task.record} if s.task is not None else {}),
        "preprocessing": s.preprocessing.describe(),
        "occlude_version": __version__,
    }


def _baseline_image_record(baseline: str, preprocessing) -> dict:
    """``{"baseline_image": {path, sha256, width, height}}`` for an ``image:PATH`` baseline, else nothing."""
    path = baseline_image_path(baseline)
    return {} if path is None else {"baseline_image": baseline_image(path, preprocessing)[1]}


def _occlude(s: Setup, baseline, progress, executor) -> _Run:
    """The part of explain() that every input kind shares: one unoccluded pass (head, target, checks), the
    window scorer, the engine (exact or refined) and the warnings."""
    model, options, sample = s.model, s.options, s.prepared.model_input
    spatial_axes = s.preprocessing.spatial_axes
    batch_size = options.batch_size or model.default_batch_size(sample.nbytes)
    windows = window_grid(tuple(sample.shape[a] for a in spatial_axes), s.patch, s.stride, s.region)
    if s.task is not None:
        head, original, main, targets = _task_targets(s.task, options)
        score = s.task.score
        scorer, incremental, notes, batches = None, task_incremental(options, s.task.task, executor), {}, "host"
    else:
        head, original, main, targets = _head_and_targets(model, options, sample, s.labels)
        scorer, incremental, notes, batches = window_scorer(
            model, options, head, sample, baseline, s.patch, windows, s.preprocessing, main, executor, stride=s.stride
        )
        score = model.scorer(head)
    prepared_at = time.perf_counter()
    common = dict(
        patch=s.patch,
        stride=s.stride,
        baseline=baseline,
        spatial_axes=spatial_axes,
        batch_size=batch_size,
        region=s.region,
        progress=progress,
        original_scores=original,
        scorer=scorer,
    )
    if options.refine:
        occlusion = refined_occlusion_sensitivity(
            sample,
            score,
            target=main,
            coarse_step=options.refine_settings[0],
            budget=options.refine_settings[1],
            **common,
        )
    else:
        occlusion = occlusion_sensitivity(sample, score, **common)
    occluded_at = time.perf_counter()
    maps = occlusion.attributions(targets)
    warnings = _warnings(head, original[main], maps[0], occlusion, main)
    return _Run(
        occlusion,
        head,
        score,
        targets,
        maps,
        batch_size,
        prepared_at,
        occluded_at,
        incremental,
        warnings,
        notes,
        batches,
    )


def _task_targets(task: TaskScoring, options: ExplainOptions):
    """A task's head, unoccluded scores, main target and the top-k others (by their unoccluded score)."""
    ranking = [int(i) for i in np.argsort(-task.original, kind="stable")]
    targets = [task.main] + [c for c in ranking if c != task.main][: options.top_k - 1]
    return task.head, task.original, task.main, targets


def _head_and_targets(model: OnnxClassifier, options: ExplainOptions, sample: np.ndarray, labels):
    """One unoccluded pass: the head (score kind), the original scores, the main target and the top-k ones."""
    raw = model.run(sample[None])
    num_classes = raw.shape[1]
    if labels is not None and len(labels) != num_classes:
        raise label_count_error(labels, num_classes, model)
    if not np.all(np.isfinite(raw)):
        raise OccludeError(
            "the model's output for the unoccluded image is not finite (NaN or inf): "
            "nothing can be measured against it; check the preprocessing (mean, std, scale)"
        )
    head = model.head(options.score, raw)
    original = head.transform(raw)[0]
    ranking = [int(i) for i in np.argsort(-original, kind="stable")]
    check_top_k(options.top_k, num_classes)
    main = resolve_target(options.target, labels, num_classes) if options.target is not None else ranking[0]
    targets = [main] + [c for c in ranking if c != main][: options.top_k - 1]
    return head, original, main, targets


def _warnings(head: Head, original: float, values: np.ndarray, occlusion: Occlusion, target: int) -> List[str]:
    """What the user must be told about a map: never an all-zero or unreadable map in silence. Each warning is a
    :class:`~occlude_cli.errors.Notice` (its kind in ``key``, the parameters it names in ``params``), so that a
    run can show each kind once however many inputs it concerns."""
    out: List[str] = []
    finite = values[np.isfinite(values)]
    bad_windows = int(np.count_nonzero(~np.isfinite(occlusion.window_scores[:, target])))
    if bad_windows:
        out.append(
            Notice(
                f"{bad_windows} occluded window(s) gave a non-finite score (NaN/inf): the map is NaN where "
                "they cover it (windows marked finite=false in the JSON)",
                key="non-finite windows",
            )
        )
    what = SCORE_NAMES.get(head.kind, head.kind)
    remedy, params = saturation_remedy(head.kind), SATURATION_PARAMS.get(head.kind, ())
    if finite.size and np.all(finite == 0):
        if head.is_probability and not SATURATION > original > 1.0 - SATURATION:  # pinned at 1 (or 0)
            text = (
                f"the map is identically zero: the target's {what} is saturated at {original:.6g}, so every occluded "
                f"window gives the same value to float precision; {remedy}"
            )
            out.append(Notice(text, key="saturated, zero map", params=params))
        else:
            text = (
                f"the map is identically zero: occluding any window leaves the target's {what} unchanged, so the "
                "model does not respond to these windows (try a larger patch or another baseline)"
            )
            out.append(Notice(text, key="zero map"))
    elif head.is_probability and original >= SATURATION:
        text = (
            f"the target's {what} is saturated ({original:.4f} >= {SATURATION}): occlusion barely moves it and the "
            f"map may look blank; {remedy}"
        )
        out.append(Notice(text, key="saturated", params=params))
    return out


def explain_scales(
    model: Union[str, Path, OnnxClassifier],
    image,
    patches: Sequence,
    options: Optional[ExplainOptions] = None,
    **kwargs,
) -> ScaleStudy:
    """Explain one image once per patch size (one model session; the target is fixed by the first run so
    every map explains the same class) and measure their pairwise rank correlation."""
    from ..core.metrics import spearman

    if len(patches) < 2:
        raise OccludeError(
            f"a scale study needs at least two patch sizes in patches, got {len(patches)}", params=("patches",)
        )
    if not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model)
    options = options or ExplainOptions()
    explanations: List[Explanation] = []
    for patch in patches:
        run_options = ExplainOptions(**{**options.__dict__, "patch": patch})
        if explanations:
            run_options.target = explanations[0].target
        explanations.append(explain(model, image, run_options, **kwargs))
    k = len(explanations)
    matrix = np.ones((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i, j] = matrix[j, i] = spearman(explanations[i].map, explanations[j].map)
    return ScaleStudy(explanations=explanations, rank_correlation=matrix)


def _declares_medical(meta: dict) -> bool:
    """Does a model's ``occlude.preprocess`` metadata describe medical inputs (an intensity transform in real
    units, or the modality it was trained on)?"""
    return any(meta.get(key) not in (None, False) for key in ("window", "intensity_range", "zscore", "modality"))


def describe_model(
    model: Union[str, Path, OnnxClassifier],
    *,
    device: str = "auto",
    options: Optional[ModelOptions] = None,
    task: str = "auto",
) -> dict:
    """What occlude reads from a model (a file or a folder holding one), as a JSON-ready dict: input, every
    output, the task its output serves (``task``: auto reads it from the output's shape; where that cannot tell,
    ``task`` is None and ``task_note`` says what to choose), final operator, batching, provider, the files read
    beside it, the preprocessing it would use with ``options`` (each value's source in its ``sources``; or why it
    needs arguments) and the labels with their source."""
    options = options or ModelOptions()
    note = None
    if not isinstance(model, OnnxClassifier):
        path = find_model_file(model)
        try:
            model = OnnxClassifier(path, device=device, task=task)
        except OccludeError as exc:
            # only where the outputs do not say the task: auto cannot read the shape, or several outputs
            if task != "auto" or not {"task", "output_name"} & set(exc.params):
                raise
            note = str(exc)  # described as a detector would be read (any output shape, its first output)
            model = OnnxClassifier(path, device=device, task="detect")
    document = model.describe()
    document["task"] = None if note else model.task
    if note:
        document["task_note"] = note
    document["outputs"] = [
        {"name": o.name, "shape": [d if isinstance(d, int) and d > 0 else "dynamic" for d in o.shape], "type": o.type}
        for o in model.session.get_outputs()
    ]
    document["input_type"] = model.dtype
    document["output_shape"] = [d if isinstance(d, int) and d > 0 else "dynamic" for d in model.output.shape]
    document["classes"] = model.num_classes
    document["final_op"] = model.final_op
    if model.task == "classify" and not note:  # what score auto explains, as far as the graph tells
        declared = (model.metadata_preprocessing or {}).get("output")
        document["score"] = auto_head(model.final_op, declared, model.num_classes)
    document["fixed_batch"] = model.fixed_batch
    try:
        preprocessing = preprocessing_for(model, options)
        document["preprocessing"] = preprocessing.describe()
    except OccludeError as exc:
        preprocessing, document["preprocessing"] = None, f"{'needs flags' if exc.params else 'unusable'}: {exc}"
    meta = dict(model.metadata_preprocessing or {})
    if isinstance(preprocessing, Preprocessing) and preprocessing.channels == 1 and _declares_medical(meta):
        # a grey 2-D model trained on DICOM slices: what a DICOM input gets (real units, then its transform)
        try:
            slices = volume_preprocessing_from_metadata(meta, model.input_shape, model.dtype, preprocessing.layout)
            document["medical_preprocessing"] = slices.describe()
        except OccludeError as exc:
            document["medical_preprocessing"] = f"unusable: {exc}"
    document["modality"] = str(meta["modality"]) if meta.get("modality") else None
    try:
        names, source = resolve_labels(model, options.labels, options.preprocess)
    except OccludeError as exc:
        names, source = None, f"refused: {exc}"
    document["labels"] = len(names) if names else None
    document["labels_source"] = source
    document["label_names"] = list(names) if names else None
    document["device"] = device_description(model.provider, model.available_providers, model.device_notes)
    return document
