"""From a model and an image to an explanation: the convenience layer a library user calls.

It wires the stages together (model -> preprocess -> baseline -> engine) and holds the parameters
that decide a run; it does no file writing and no plotting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__
from .baselines import default_blur_sigma, make_baseline, parse_baseline
from .engine import (Box, Occlusion, default_stride, occlusion_sensitivity, refine_forward_passes,
                     refined_occlusion_sensitivity, window_grid)
from .errors import OccludeError
from .model import OnnxClassifier, looks_like_probabilities, resolve_target, score_transform
from .preprocess import PreparedImage, Preprocessing, prepare_image

# Default patch: this fraction of each side of the model input (16 px on a 224 input).
DEFAULT_PATCH_FRACTION = 1 / 14


def parse_hw(value, name: str = "size") -> Tuple[int, int]:
    """'16' -> (16, 16); '16x24' -> (16, 24) as (height, width); ints and pairs pass through."""
    if isinstance(value, (tuple, list)):
        parts = list(value)
    elif isinstance(value, (int, np.integer)):
        parts = [int(value)]
    else:
        parts = str(value).lower().replace(" ", "").split("x")
    try:
        numbers = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise OccludeError(f"{name} must be N or HxW in pixels, got {value!r}") from None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2:
        raise OccludeError(f"{name} must be N or HxW in pixels, got {value!r}")
    if min(numbers) < 1:
        raise OccludeError(f"{name} must be at least 1 pixel, got {value!r}")
    return numbers[0], numbers[1]


def default_patch(size: Tuple[int, int]) -> Tuple[int, int]:
    return tuple(max(1, int(round(side * DEFAULT_PATCH_FRACTION))) for side in size)  # type: ignore[return-value]


def resolve_preprocessing(
    model: OnnxClassifier,
    *,
    size=None,
    layout: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    scale: Optional[float] = None,
    bgr: Optional[bool] = None,
    resize: Optional[str] = None,
) -> Preprocessing:
    """Preprocessing from, in order of precedence: explicit arguments, the model's metadata, its input shape
    and defaults (pixels / 255, no mean or std, stretch resize)."""
    meta = dict(model.metadata_preprocessing or {})
    layout = (layout or meta.get("layout") or model.guess_layout() or "").upper()
    if layout not in ("NCHW", "NHWC"):
        raise OccludeError(
            f"cannot tell the layout of input shape {model.input_shape}: pass --layout nchw or nhwc"
        )
    channels = model.channels(layout)
    if channels not in (1, 3, None):
        raise OccludeError(f"input has {channels} channels: occlude supports 1 (grey) or 3 (colour)")
    height, width = model.spatial_size(layout)
    if size is not None:
        want = parse_hw(size, "--size")
        for got, fixed, axis in ((want[0], height, "height"), (want[1], width, "width")):
            if fixed is not None and got != fixed:
                raise OccludeError(f"--size {axis} {got} conflicts with the model's fixed input {axis} {fixed}")
        height, width = want
    if height is None or width is None:
        if "size" in meta:
            height, width = parse_hw(meta["size"], "metadata size")
        else:
            raise OccludeError(f"model input {model.input_shape} has dynamic height/width: pass --size HxW")
    color = str(meta.get("color", "gray" if channels == 1 else "rgb")).lower()
    if bgr:
        color = "bgr"
    if channels == 1:
        color = "gray"
    elif color == "gray":
        raise OccludeError("model metadata says grey but the input has 3 channels")
    return Preprocessing(
        size=(int(height), int(width)),
        layout=layout,
        color=color,
        scale=float(scale if scale is not None else meta.get("scale", 1 / 255)),
        mean=tuple(float(v) for v in (mean if mean is not None else _as_list(meta.get("mean", [0.0])))),
        std=tuple(float(v) for v in (std if std is not None else _as_list(meta.get("std", [1.0])))),
        resize=str(resize or meta.get("resize", "stretch")),
        dtype=model.dtype,
    )


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class Explanation:
    """One image explained: the maps, the scores behind them and everything needed to reproduce them."""

    model: dict
    image: PreparedImage
    targets: List[int]  # targets[0] is the main target; the rest are --top-k extras
    labels: Optional[List[str]]
    score_kind: str
    occlusion: Occlusion
    maps: np.ndarray  # (K, H, W) signed maps for ``targets``
    params: dict
    timing: dict = field(default_factory=dict)

    @property
    def target(self) -> int:
        return self.targets[0]

    @property
    def map(self) -> np.ndarray:
        """(H, W) signed map of the main target at model-input resolution (NaN where not computed)."""
        return self.maps[0]

    def label(self, index: int) -> Optional[str]:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else None

    def class_maps(self) -> np.ndarray:
        """(classes, H, W) float32 maps of every class, from the same forward passes."""
        return self.occlusion.attributions(None, dtype=np.float32)


@dataclass
class ExplainOptions:
    """The parameters of a run (the CLI's flags), with the library's defaults."""

    patch: Optional[object] = None
    stride: Optional[object] = None
    baseline: str = "zero"
    target: Optional[object] = None
    top_k: int = 1
    score: str = "prob"
    batch_size: Optional[int] = None
    seed: int = 0
    blur_sigma: Optional[float] = None
    region: Optional[Tuple[float, float, float, float]] = None  # x0, y0, x1, y1 in original image pixels
    refine: bool = False  # coarse-to-fine: see engine.refined_occlusion_sensitivity
    refine_step: int = 3
    refine_budget: float = 0.25


def explain(
    model: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    **overrides,
) -> Explanation:
    """Explain one image: load (if paths), preprocess, occlude, and return the maps.

    ``options`` or keyword overrides (``patch=32``, ``baseline="blur"``, ...) set the run; see ExplainOptions.
    """
    started = time.perf_counter()
    options, model, preprocessing, labels, patch, stride, prepared, region = _setup(
        model, image, options, preprocessing, labels, overrides)
    baseline_kind = parse_baseline(options.baseline)
    blur_sigma = options.blur_sigma if options.blur_sigma is not None else default_blur_sigma(patch)
    baseline = make_baseline(baseline_kind, prepared.pixels, preprocessing, seed=options.seed, blur_sigma=blur_sigma)
    sample = prepared.model_input
    batch_size = options.batch_size or model.default_batch_size(sample.nbytes)

    raw = model.run(sample[None])
    num_classes = raw.shape[1]
    if labels is not None and len(labels) != num_classes:
        raise OccludeError(f"{len(labels)} labels given but the model has {num_classes} classes")
    is_prob = bool((model.metadata_preprocessing or {}).get("output") == "probabilities") or looks_like_probabilities(raw)
    score = model.scorer(options.score, is_prob)
    original = score_transform(options.score, is_prob)(raw)[0]
    ranking = [int(i) for i in np.argsort(-original, kind="stable")]
    main = resolve_target(options.target, labels, num_classes) if options.target is not None else ranking[0]
    targets = [main] + [c for c in ranking if c != main][: options.top_k - 1]
    prepared_at = time.perf_counter()
    common = dict(patch=patch, stride=stride, baseline=baseline, spatial_axes=preprocessing.spatial_axes,
                  batch_size=batch_size, region=region, progress=progress, original_scores=original)
    if options.refine:
        occlusion = refined_occlusion_sensitivity(sample, score, target=main, coarse_step=options.refine_step,
                                                  budget=options.refine_budget, **common)
    else:
        occlusion = occlusion_sensitivity(sample, score, **common)
    occluded_at = time.perf_counter()
    maps = occlusion.attributions(targets)
    finished = time.perf_counter()
    return Explanation(
        model=model.describe(),
        image=prepared,
        targets=targets,
        labels=labels,
        score_kind=options.score,
        occlusion=occlusion,
        maps=maps,
        params={
            "patch": list(patch),
            "stride": list(stride),
            "baseline": baseline_kind,
            "blur_sigma": blur_sigma if baseline_kind == "blur" else None,
            "seed": options.seed,
            "batch_size": int(batch_size),
            "score": options.score,
            "region": list(region) if region is not None else None,
            "refine": {"step": options.refine_step, "budget": options.refine_budget} if options.refine else None,
            "preprocessing": preprocessing.describe(),
            "occlude_version": __version__,
        },
        timing={
            "prepare_s": prepared_at - started,
            "occlusion_s": occluded_at - prepared_at,
            "total_s": finished - started,
            "windows_per_s": occlusion.forward_passes / max(occluded_at - prepared_at, 1e-9),
        },
    )


def _setup(model, image, options, preprocessing, labels, overrides):
    """Shared start of explain() and estimate_run(): options, model, preprocessing, image and geometry."""
    options = options or ExplainOptions()
    if overrides:
        unknown = set(overrides) - set(ExplainOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        options = ExplainOptions(**{**options.__dict__, **overrides})
    if not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model)
    preprocessing = preprocessing or resolve_preprocessing(model)
    labels = list(labels) if labels is not None else model.labels
    patch, stride = check_run(options, preprocessing, model, labels)
    prepared = prepare_image(image, preprocessing)
    region = region_to_box(options.region, prepared) if options.region is not None else None
    return options, model, preprocessing, labels, patch, stride, prepared, region


def estimate_run(
    model: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    **overrides,
) -> dict:
    """What a run would cost, from one timed batch (after one warm-up batch), without running it."""
    options, model, preprocessing, labels, patch, stride, prepared, region = _setup(
        model, image, options, preprocessing, labels, overrides)
    windows = len(window_grid(preprocessing.size, patch, stride, region))
    passes = (refine_forward_passes(preprocessing.size, patch, stride, region, options.refine_step,
                                    options.refine_budget) if options.refine else windows + 1)
    sample = prepared.model_input
    batch_size = options.batch_size or model.default_batch_size(sample.nbytes)
    batch = np.repeat(sample[None], min(batch_size, passes), axis=0)
    model.run(batch)
    timer = time.perf_counter()
    model.run(batch)
    per_pass = (time.perf_counter() - timer) / len(batch)
    return {
        "windows": windows,
        "forward_passes": passes,
        "exact_forward_passes": windows + 1,
        "batch_size": int(batch_size),
        "patch": list(patch),
        "stride": list(stride),
        "seconds_per_forward_pass": per_pass,
        "estimated_s": per_pass * passes,
    }


def check_run(
    options: ExplainOptions,
    preprocessing: Preprocessing,
    model: OnnxClassifier,
    labels: Optional[Sequence[str]] = None,
) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Check what can be checked before any image is read; returns the (patch, stride) to use."""
    size = preprocessing.size
    labels = labels if labels is not None else model.labels
    patch = parse_hw(options.patch, "--patch") if options.patch is not None else default_patch(size)
    stride = parse_hw(options.stride, "--stride") if options.stride is not None else default_stride(patch)
    for p, s, side, axis in ((patch[0], stride[0], size[0], "height"), (patch[1], stride[1], size[1], "width")):
        if p > side:
            raise OccludeError(f"patch {axis} {p} is larger than the model input {axis} {side}")
        if s > p:
            raise OccludeError(f"stride {axis} {s} is larger than the patch {axis} {p}: some pixels would never be occluded")
    if options.top_k < 1:
        raise OccludeError(f"--top-k must be at least 1, got {options.top_k}")
    if options.refine and options.refine_step < 1:
        raise OccludeError(f"--refine-step must be at least 1, got {options.refine_step}")
    if options.refine and not 0 < options.refine_budget <= 1:
        raise OccludeError(f"--refine-budget must be in (0, 1], got {options.refine_budget}")
    if options.batch_size is not None and options.batch_size < 1:
        raise OccludeError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.score not in ("prob", "logit"):
        raise OccludeError(f"--score must be prob or logit, got {options.score!r}")
    parse_baseline(options.baseline)
    classes = model.num_classes or (len(labels) if labels else None)
    if labels is not None and model.num_classes is not None and len(labels) != model.num_classes:
        raise OccludeError(f"{len(labels)} labels given but the model has {model.num_classes} classes")
    if options.target is not None and classes is not None:
        resolve_target(options.target, labels, classes)
    return patch, stride


@dataclass
class ScaleStudy:
    """The same image explained at several patch sizes: is the explanation stable or an artefact of the patch?"""

    explanations: List[Explanation]
    rank_correlation: np.ndarray  # (K, K) Spearman correlation between the maps

    @property
    def patches(self) -> List[List[int]]:
        return [e.params["patch"] for e in self.explanations]

    def mean_map(self) -> np.ndarray:
        """Multi-scale map: the mean of the per-scale maps, each scaled to [-1, 1] by its largest |value|
        (larger patches give larger drops, so raw maps would let the largest patch dominate)."""
        scaled = []
        for e in self.explanations:
            limit = np.nanmax(np.abs(e.map)) if np.isfinite(e.map).any() else 0.0
            scaled.append(e.map / limit if limit > 0 else e.map)
        return np.mean(scaled, axis=0)


def explain_scales(
    model: Union[str, Path, OnnxClassifier],
    image,
    patches: Sequence,
    options: Optional[ExplainOptions] = None,
    **kwargs,
) -> ScaleStudy:
    """Explain one image once per patch size (one model session; the target is fixed by the first run so
    every map explains the same class) and measure their pairwise rank correlation."""
    from .metrics import spearman

    if len(patches) < 2:
        raise OccludeError("a scale study needs at least two patch sizes")
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


def parse_patches(value: str) -> List[Tuple[int, int]]:
    """'16' -> [(16, 16)]; '8,16,32' or '8x8,16x24' -> one patch per comma-separated item."""
    return [parse_hw(item, "--patch") for item in str(value).split(",")]


def region_to_box(region, prepared: PreparedImage) -> Box:
    """A region (x0, y0, x1, y1) in original image pixels -> (y0, x0, y1, x1) in model-input pixels,
    clipped to the part of the image the model sees."""
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise OccludeError(f"region must be x0,y0,x1,y1, got {region!r}") from None
    if x1 <= x0 or y1 <= y0:
        raise OccludeError(f"region {region!r} is empty: need x0 < x1 and y0 < y1")
    left, top, right, bottom = prepared.crop_box
    height, width = prepared.preprocessing.size
    sx, sy = width / (right - left), height / (bottom - top)
    box = (
        int(np.clip(np.floor((y0 - top) * sy), 0, height)),
        int(np.clip(np.floor((x0 - left) * sx), 0, width)),
        int(np.clip(np.ceil((y1 - top) * sy), 0, height)),
        int(np.clip(np.ceil((x1 - left) * sx), 0, width)),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        raise OccludeError(f"region {region!r} lies outside the part of the image the model sees")
    return box

