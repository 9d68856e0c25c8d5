"""What a run will do, decided before any image is read: the windows (patch and stride per axis, from the
defaults or the options), every check of the options against the model (target, labels, score kind, refine
budget, baseline), the memory plan, and the setup :func:`~occlude_cli.explain` and the estimate share
(:func:`setup`: options, model, preprocessing, modality, prepared input, windows)."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.baselines import baseline_image_path, make_baseline
from ..core.engine import Box, default_stride, window_starts
from ..core.refine import refine_forward_passes
from ..errors import OccludeError
from ..loaders.baseline_image import baseline_image
from ..loaders.images import PreparedImage, Preprocessing
from ..loaders.limits import MemoryPlan, plan_memory
from ..loaders.model import OnnxClassifier, ScoreKind, resolve_target
from ..loaders.volumes import PreparedVolume, VolumePreprocessing
from .modality import Modality, modality_of
from .options import ExplainOptions, checked_path, label_count_error, per_axis, score_name
from .scorers import task_incremental
from .tasks.scoring import TaskScoring, check_before_images, task_of, task_scoring

# Default patch: this fraction of each side of the model input (16 px on a 224 input).
DEFAULT_PATCH_FRACTION = 1 / 14
# Default patch of volumes: a quarter of each side (8 on a 32^3 input; 343 windows at the default stride):
# 1/14 would give about 30,000 windows on a 3-D grid, too many for a first look.
DEFAULT_VOLUME_PATCH_FRACTION = 1 / 4


def default_patch(size: Tuple[int, ...]) -> Tuple[int, ...]:
    fraction = DEFAULT_PATCH_FRACTION if len(size) == 2 else DEFAULT_VOLUME_PATCH_FRACTION
    return tuple(max(1, int(round(side * fraction))) for side in size)


def check_run(
    options: ExplainOptions,
    preprocessing: Union[Preprocessing, VolumePreprocessing],
    model: OnnxClassifier,
    labels: Optional[Sequence[str]] = None,
) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Check what can be checked before any image is read; returns the (patch, stride) to use, one value per
    spatial axis. The options' own checks first, then those against the model, then the window arithmetic."""
    options = options.checked()
    size = tuple(preprocessing.size)
    patch = per_axis(options.patch, len(size), "patch") if options.patch else default_patch(size)
    _check_against_model(options, preprocessing, model, labels if labels is not None else model.labels)
    stride = per_axis(options.stride, len(size), "stride") if options.stride else default_stride(patch)
    axes = ("height", "width") if len(size) == 2 else ("depth", "height", "width")
    for p, s, side, axis in zip(patch, stride, size, axes):
        if p > side:
            raise OccludeError(f"patch {axis} {p} is larger than the model input {axis} {side}", params=("patch",))
        if s > p:
            raise OccludeError(
                f"stride {axis} {s} is larger than the patch {axis} {p}: some pixels would never be occluded",
                params=("stride",),
            )
    if options.region is not None and len(size) == 3 and len(options.region) != 6:
        raise OccludeError(
            "region of a volume is x0, y0, z0, x1, y1, z1 in world millimetres (RAS+, as the JSON's "
            f"peak.world_mm), got {len(options.region)} numbers",
            params=("region",),
        )
    if options.refine and len(size) != 2:
        raise OccludeError(
            "refine is for 2-D inputs: a 3-D model is occluded exactly (choose a larger stride to make it cheaper)",
            params=("refine", "stride"),
        )
    if options.refine and options.region is None:  # the grid is known: a step over the budget fails here
        refine_forward_passes(size, patch, stride, None, *options.refine_settings)
    if options.baseline == "inpaint" and len(size) != 2:
        raise OccludeError(
            "baseline inpaint is 2-D only: for volumes use tissue, blur, mean or pNN", params=("baseline",)
        )
    check_baseline_image(options.baseline, preprocessing)
    if isinstance(preprocessing, Preprocessing) and options.baseline[:1] in tuple("-0123456789"):
        # a constant in pixel units must fit the input type like the pixels (e.g. 300 in a uint8 input)
        make_baseline(options.baseline, np.zeros((1, 1, preprocessing.channels)), preprocessing)
    return patch, stride  # type: ignore[return-value]


def check_baseline_image(baseline: str, preprocessing) -> Optional[dict]:
    """An ``image:PATH`` baseline read and prepared once, before any input (a missing or unreadable file is one
    line naming ``baseline``); its record (path, sha256, size), or None for the other baselines."""
    path = baseline_image_path(baseline)
    if path is None:
        return None
    if not isinstance(preprocessing, Preprocessing):
        raise OccludeError(
            "baseline image: is for photos: a 3-D model's volume has no photo to take windows from",
            params=("baseline",),
        )
    return baseline_image(path, preprocessing)[1]


def _check_against_model(options: ExplainOptions, preprocessing, model: OnnxClassifier, labels) -> None:
    """The score kind the graph allows, the labels against the classes, and the target."""
    task = task_of(model, options)
    if task == "classify" and options.mask is not None:
        raise OccludeError("mask is for task segment: this model's output is class scores", params=("mask",))
    if task != "classify":  # the task's own checks need the unoccluded output (see analyses.tasks.scoring)
        if not isinstance(preprocessing, Preprocessing):
            raise OccludeError(f"task {task} is for 2-D photo inputs, not for 3-D models", params=("task",))
        task_incremental(options, task)  # incremental on is refused here, before any image
        if options.mask is not None and task != "segment":
            raise OccludeError(f"mask is for task segment: this model's task is {task}", params=("mask",))
        for name in ("mask", "reference", "reference_embedding"):  # the task's files, before any image
            value = getattr(options, name)
            if isinstance(value, str) and value != "auto" and not Path(value).is_file():
                raise OccludeError(f"{name} file not found: {value}", params=(name,))
        classes = check_before_images(model, options, tuple(preprocessing.size))
        _check_labels(model, labels, classes)
        check_top_k(options.top_k, classes)
        if options.target is not None and classes is not None:
            resolve_target(options.target, labels, classes)
        return
    check_score(model, options.score)
    wanted = options.target is not None or labels or options.top_k > 1
    classes = model_classes(model, preprocessing) if wanted else model.num_classes
    check_top_k(options.top_k, classes)
    _check_labels(model, labels, classes)
    classes = classes or (len(labels) if labels else None)
    if options.target is not None and classes is not None:
        resolve_target(options.target, labels, classes)


def _check_labels(model: OnnxClassifier, labels, classes: Optional[int]) -> None:
    """As many labels as the model has classes (when it says how many)."""
    if labels is not None and classes is not None and len(labels) != classes:
        raise label_count_error(labels, classes, model)


def check_top_k(top_k: int, classes: Optional[int]) -> None:
    """A top_k above the model's classes is refused (never cut to them in silence)."""
    if classes is not None and top_k > classes:
        raise OccludeError(
            f"top_k {top_k} is more than the model's {classes} classes: give at most {classes}", params=("top_k",)
        )


def model_classes(model: OnnxClassifier, preprocessing) -> Optional[int]:
    """The number of classes: the output's declared size, else (a dynamic class axis) the size of one forward
    pass on an input of zeros, so that a target or labels can be checked before any image. None when even
    that pass fails (the first image then says why)."""
    if model.num_classes is not None:
        return int(model.num_classes)
    cached = model.__dict__.get("_probed_classes")
    if cached is not None:
        return int(cached)
    size = list(preprocessing.size)
    channels = preprocessing.channels
    channels_first = str(preprocessing.layout).upper().startswith("NC")
    shape = [1, channels, *size] if channels_first else [1, *size, channels]
    try:
        classes = int(model.run(np.zeros(shape, dtype=model.dtype)).shape[1])
    except OccludeError:
        return None
    model.__dict__["_probed_classes"] = classes
    return classes


def check_score(model: OnnxClassifier, score) -> None:
    """Refuse, before any image, a score kind the model's graph rules out (logits of a Softmax output, a
    second sigmoid, a softmax over one output)."""
    kind = ScoreKind(score_name(score))
    if kind in (ScoreKind.auto, ScoreKind.prob, ScoreKind.raw):
        return
    classes = model.num_classes or 2
    probe = np.full((1, classes), 5.0)  # logits-like values: only the graph and the declared head decide here
    model.head(kind, probe)


@dataclass
class Setup:
    """The shared start of explain(), the estimate and the baseline check: the checked options, the model, its
    preprocessing and class names, the input's modality and prepared form, and the windows."""

    options: ExplainOptions
    model: OnnxClassifier
    preprocessing: Union[Preprocessing, VolumePreprocessing]
    labels: Optional[List[str]]
    modality: Modality
    prepared: Union[PreparedImage, PreparedVolume]
    patch: Tuple[int, ...]
    stride: Tuple[int, ...]
    region: Optional[Box]
    task: Optional[TaskScoring] = None  # a segmentation, detection or embedding run's score (None: a classifier)


def setup(model, image, options=None, preprocessing=None, labels=None, overrides=None) -> Setup:
    """Options (with keyword ``overrides``) checked once, the model loaded (a path) and its input prepared by
    its modality, after every check that needs no image."""
    if options is not None and not isinstance(options, ExplainOptions):
        raise OccludeError(
            f"options must be an ExplainOptions (or give keywords: patch=32), got {type(options).__name__}",
            params=("options",),
        )
    options = (options or ExplainOptions()).with_overrides(overrides or {}).checked()
    if not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(checked_path(model, "model", "an OnnxClassifier"), task=options.task)
    modality = modality_of(image, options)
    preprocessing = modality.preprocessing(model, preprocessing, options)
    if isinstance(labels, (str, bytes, PathLike)):  # list("cat") would be three labels
        raise OccludeError(
            "labels takes the class names, one per class (a label file: open_model(path, ModelOptions(labels=file)))",
            params=("labels",),
        )
    labels = list(labels) if labels is not None else model.labels
    patch, stride = check_run(options, preprocessing, model, labels)
    prepared = modality.prepare(image, preprocessing, options)
    region = modality.region(options, prepared)
    task = None
    if task_of(model, options) != "classify":
        if not isinstance(prepared, PreparedImage):
            raise OccludeError(f"task {task_of(model, options)} is for photo inputs (PNG, JPEG, ...)", params=("task",))
        task = task_scoring(model, options, prepared, labels)
    return Setup(options, model, preprocessing, labels, modality, prepared, patch, stride, region, task)


def memory_plan(
    model: OnnxClassifier,
    preprocessing,
    options: ExplainOptions,
    patch_stride: Tuple[Tuple[int, ...], Tuple[int, ...]],
    *,
    all_classes: bool = False,
    previous: Optional[MemoryPlan] = None,
) -> MemoryPlan:
    """One image's working set checked against the memory budget (one line naming ``max_memory`` when it
    cannot fit) and the batch that fits; with several patch sizes (``previous``), the smallest batch of them."""
    patch, stride = patch_stride
    size = tuple(preprocessing.size)
    channels = int(getattr(preprocessing, "channels", 1))
    itemsize = np.dtype(preprocessing.dtype).itemsize
    sample = int(np.prod(size)) * channels * itemsize
    requested = options.batch_size or model.default_batch_size(sample)
    windows = int(np.prod([len(window_starts(n, p, s)) for n, p, s in zip(size, patch, stride)]))
    plan = plan_memory(
        size,
        channels,
        itemsize,
        windows=windows,
        classes=model.num_classes,
        requested_batch=requested,
        all_classes=all_classes,
        targets=options.top_k,
    )
    return plan if previous is None or plan.batch_size < previous.batch_size else previous
