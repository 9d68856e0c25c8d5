"""Dataset bias severity: occlude the same suspected region (a watermark corner, a ruler, a scanner label) in
every image and measure how much the prediction moves, against a control of same-size regions at random
places.

For each image: the target (default: predicted) class's score with and without the region occluded, whether
the top-1 class flips, and the same for ``controls`` seeded random placements of the region's shape
(placed outside the region where the image leaves room). Aggregated per class and over all images: mean and
median drop, flip rate, and seeded percentile-bootstrap confidence intervals. ``max_mean_drop`` and
``max_flip_rate`` turn the overall numbers into a pass/fail verdict for CI.

Library only: writes no file, draws nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.baselines import default_blur_sigma
from ..errors import OccludeError, shown_apart
from ..loaders.images import Preprocessing
from ..loaders.limits import check_count
from ..loaders.model import OnnxClassifier, resolve_target
from .options import ExplainOptions

DEFAULT_CONTROLS = 8
DEFAULT_BOOTSTRAP = 1000
CONFIDENCE = 0.95


@dataclass
class BiasRow:
    """One image: the drop and flip with the suspected region occluded, and the controls' mean."""

    path: str
    status: str  # "ok" or "error"
    error: Optional[str] = None
    target: Optional[int] = None
    label: Optional[str] = None
    predicted: Optional[int] = None
    original_score: Optional[float] = None
    occluded_score: Optional[float] = None
    drop: Optional[float] = None
    flipped: Optional[bool] = None
    occluded_class: Optional[int] = None
    region_pixels: Optional[int] = None
    control_drop: Optional[float] = None  # mean over the controls
    control_flip_rate: Optional[float] = None
    control_drops: List[float] = field(default_factory=list)
    control_overlaps: int = 0  # controls that had to overlap the region (no room elsewhere)
    score_kind: Optional[str] = None


def check_thresholds(max_mean_drop: Optional[float], max_flip_rate: Optional[float]) -> None:
    if max_mean_drop is not None and not np.isfinite(max_mean_drop):
        raise OccludeError(f"max_mean_drop must be a finite number, got {max_mean_drop}", params=("max_mean_drop",))
    if max_flip_rate is not None and not (np.isfinite(max_flip_rate) and 0 <= max_flip_rate <= 1):
        raise OccludeError(f"max_flip_rate must be in [0, 1], got {max_flip_rate}", params=("max_flip_rate",))


def _box_sums(mask: np.ndarray, size: Tuple[int, ...]) -> np.ndarray:
    """The region's pixels (voxels) inside a box of ``size`` at every corner at once: a summed-area table in
    any number of axes, read by inclusion-exclusion."""
    table = np.asarray(mask, dtype=np.int64)
    for axis in range(table.ndim):
        table = np.cumsum(table, axis=axis)
    table = np.pad(table, [(1, 0)] * table.ndim)
    total = np.zeros([n - s + 1 for n, s in zip(mask.shape, size)], dtype=np.int64)
    for corner in itertools.product((0, 1), repeat=mask.ndim):
        index = tuple(slice(s, None) if c else slice(None, -s) for c, s in zip(corner, size))
        total += (-1) ** (mask.ndim - sum(corner)) * table[index]
    return total


def control_masks(mask: np.ndarray, count: int, rng: np.random.Generator) -> Tuple[List[np.ndarray], int]:
    """``count`` copies of the region's shape (its bounding box content) moved to random places of the image
    (or volume), uniformly among the placements whose bounding box holds no pixel of the region (all
    placements when none is free). Returns the masks and how many had to overlap."""
    where = np.argwhere(mask)
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    shape = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    inside = _box_sums(mask, shape.shape)
    free = np.argwhere(inside == 0)
    pool = free if len(free) else np.argwhere(np.ones_like(inside, dtype=bool))
    picks = rng.integers(0, len(pool), size=count)
    masks = []
    for k in picks:
        corner = [int(v) for v in pool[int(k)]]
        m = np.zeros_like(mask)
        m[tuple(slice(c, c + n) for c, n in zip(corner, shape.shape))] = shape
        masks.append(m)
    return masks, (0 if len(free) else count)


def _apply(sample: np.ndarray, baseline: np.ndarray, mask: np.ndarray, axes: Tuple[int, ...]) -> np.ndarray:
    shape = [1] * sample.ndim
    for axis, size in zip(axes, mask.shape):
        shape[axis] = size
    return np.where(mask.reshape(shape), baseline, sample)


def bias_image(
    classifier: OnnxClassifier,
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    box=None,
    mask=None,
    controls: int = DEFAULT_CONTROLS,
    seed: int = 0,
) -> BiasRow:
    """One input: score it, with the region (exactly one of ``box`` x0,y0,x1,y1 in original image pixels, or
    x0,y0,z0,x1,y1,z1 in world mm for a volume, or ``mask``, an image path, a NIfTI mask, a DICOM SEG or
    RT-STRUCT, or a bool array at model resolution) replaced by ``options.baseline``, and with ``controls``
    random same-shape regions (seeded by ``seed``). All in one batched forward pass set. Photos, DICOM slices,
    series and NIfTI volumes (the baseline of a medical input is built in model-input space)."""
    from .checks import prepare_region
    from .modality import input_baseline

    options = (options or ExplainOptions()).checked()
    if int(controls) != controls or controls < 0:
        raise OccludeError(f"controls must be a whole number >= 0, got {controls}")
    labels = list(labels) if labels is not None else classifier.labels
    _, preprocessing, prepared, region = prepare_region(classifier, image, options, preprocessing, box=box, mask=mask)
    extent = tuple(int(v) + 1 for v in np.ptp(np.argwhere(region), axis=0))
    sigma = options.blur_sigma or default_blur_sigma(extent)
    baseline = input_baseline(prepared, options.baseline, seed=options.seed, blur_sigma=sigma, patch=extent)
    sample = prepared.model_input  # type: ignore[attr-defined]
    axes = preprocessing.spatial_axes  # type: ignore[attr-defined]
    check_count(int(controls), sample.nbytes + region.size, "controls", "a copy of the model input per control")
    rng = np.random.default_rng(seed)
    others, overlaps = control_masks(region, int(controls), rng) if controls else ([], 0)
    batch = np.stack(
        [sample, _apply(sample, baseline, region, axes)] + [_apply(sample, baseline, m, axes) for m in others]
    )
    raw_first = classifier.run(batch[:1])
    if not np.all(np.isfinite(raw_first)):
        raise OccludeError("the model's output for the unoccluded image is not finite (NaN or inf)")
    head = classifier.head(options.score, raw_first)
    size = options.batch_size or classifier.default_batch_size(sample.nbytes)
    scores = np.concatenate([head.transform(classifier.run(batch[i : i + size])) for i in range(0, len(batch), size)])
    predicted = int(np.argmax(scores[0]))
    target = resolve_target(options.target, labels, scores.shape[1]) if options.target is not None else predicted
    drops = scores[0, target] - scores[:, target]
    tops = np.argmax(scores, axis=1)
    control = drops[2:]
    return BiasRow(
        path=str(prepared.path) if prepared.path is not None else "<image>",  # type: ignore[attr-defined]
        status="ok",
        target=target,
        label=labels[target] if labels and target < len(labels) else None,
        predicted=predicted,
        original_score=float(scores[0, target]),
        occluded_score=float(scores[1, target]),
        drop=float(drops[1]),
        flipped=bool(tops[1] != predicted),
        occluded_class=int(tops[1]),
        region_pixels=int(region.sum()),
        control_drop=float(control.mean()) if control.size else None,
        control_flip_rate=float(np.mean(tops[2:] != predicted)) if control.size else None,
        control_drops=[float(v) for v in control],
        control_overlaps=overlaps,
        score_kind=head.kind,
    )


def bootstrap_ci(
    values: np.ndarray, rng: np.random.Generator, resamples: int, confidence: float = CONFIDENCE
) -> Tuple[Optional[float], Optional[float]]:
    """Percentile bootstrap interval of the mean (None, None for fewer than 2 values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or resamples < 1:
        return None, None
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def _group(rows: Sequence[BiasRow], rng: np.random.Generator, resamples: int) -> dict:
    drops = np.array([r.drop for r in rows], dtype=np.float64)
    flips = np.array([r.flipped for r in rows], dtype=np.float64)
    controls = np.array([r.control_drop for r in rows if r.control_drop is not None], dtype=np.float64)
    control_flips = np.array([r.control_flip_rate for r in rows if r.control_flip_rate is not None])
    drop_ci = bootstrap_ci(drops, rng, resamples)
    flip_ci = bootstrap_ci(flips, rng, resamples)
    return {
        "images": len(rows),
        "mean_drop": float(drops.mean()),
        "median_drop": float(np.median(drops)),
        "mean_drop_ci": list(drop_ci),
        "flip_rate": float(flips.mean()),
        "flip_rate_ci": list(flip_ci),
        "control_mean_drop": float(controls.mean()) if controls.size else None,
        "control_flip_rate": float(control_flips.mean()) if control_flips.size else None,
        "excess_drop": float(drops.mean() - controls.mean()) if controls.size else None,
    }


@dataclass
class BiasSummary:
    """Aggregates over the images that could be measured: overall and per target class, and the verdict."""

    overall: dict
    per_class: Dict[int, dict]
    passed: bool
    reasons: List[str]
    settings: dict


def summarise_bias(
    rows: Sequence[BiasRow],
    *,
    labels: Optional[Sequence[str]] = None,
    max_mean_drop: Optional[float] = None,
    max_flip_rate: Optional[float] = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    settings: Optional[dict] = None,
) -> BiasSummary:
    """Mean/median drop, flip rate and their bootstrap CIs (``bootstrap`` resamples, seeded), overall and per
    class; fails when the overall mean drop exceeds ``max_mean_drop`` or the flip rate ``max_flip_rate``."""
    check_thresholds(max_mean_drop, max_flip_rate)
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise OccludeError(f"bootstrap must be a whole number >= 0, got {bootstrap}")
    ok = [r for r in rows if r.status == "ok"]
    if not ok:
        raise OccludeError("no image could be measured")
    rng = np.random.default_rng(seed)
    overall = _group(ok, rng, int(bootstrap))
    per_class = {}
    for cls in sorted({r.target for r in ok}):  # type: ignore[type-var]
        members = [r for r in ok if r.target == cls]
        group = _group(members, rng, int(bootstrap))
        group["label"] = labels[cls] if labels and cls is not None and cls < len(labels) else members[0].label
        per_class[int(cls)] = group  # type: ignore[arg-type]
    reasons = []
    if max_mean_drop is not None and overall["mean_drop"] > max_mean_drop:
        value, limit = shown_apart(overall["mean_drop"], max_mean_drop)
        reasons.append(f"mean drop {value} > max_mean_drop {limit}")
    if max_flip_rate is not None and overall["flip_rate"] > max_flip_rate:
        value, limit = shown_apart(overall["flip_rate"], max_flip_rate)
        reasons.append(f"flip rate {value} > max_flip_rate {limit}")
    all_settings = {
        "bootstrap": int(bootstrap),
        "confidence": CONFIDENCE,
        "seed": seed,
        "max_mean_drop": max_mean_drop,
        "max_flip_rate": max_flip_rate,
        **(settings or {}),
    }
    return BiasSummary(overall=overall, per_class=per_class, passed=not reasons, reasons=reasons, settings=all_settings)
