"""Faithfulness and agreement metrics for saliency maps: pure numpy, no files, no onnxruntime.

Like the engine, the curves take one input array (any layout: the spatial axes are given), a baseline
of the same shape and a ``score(batch) -> (batch, classes)`` function, so they work for any model.

Conventions shared by every function here:

* A map is an (H, W) float array, or (D, H, W) for volumes (every function here treats voxels as pixels).
  NaN (or inf) marks a pixel that was not computed (e.g. outside an occlusion ``--region``): it is left out
  of correlations and overlaps, and comes last in orderings.
* Orderings are deterministic: pixels of equal importance keep row-major order (stable sorts), so the
  same maps always give the same curves, bit for bit.
* Undefined results (a constant map has no correlation, a map with no positive value has no energy)
  are NaN rather than an exception: a caller deciding pass/fail must treat NaN as "not shown".
* Computed in float64 on maps scaled to a largest absolute value of 1 (:func:`unit_scaled`), so a map in
  any unit (a gradient of 1e-30, a map multiplied by 1e200) gives the same correlation and shares.

References: deletion and insertion curves follow Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling
for Explanation of Black-box Models" (BMVC 2018); the pointing game follows Zhang et al., "Top-down Neural
Attention by Excitation Backprop" (ECCV 2016).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import OccludeError
from .engine import check_baseline, score_perturbations, spatial_axes_of

ScoreFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]

DEFAULT_STEPS = 50


# --------------------------------------------------------------------------------------------- helpers


def _as_map(values, name: str = "map") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise OccludeError(f"{name} must be a 2-D (H, W) or 3-D (D, H, W) array, got shape {array.shape}")
    return array


def _pair(a, b) -> Tuple[np.ndarray, np.ndarray]:
    """Two maps of one shape, flattened to the pixels that are finite in both."""
    a, b = _as_map(a, "first map"), _as_map(b, "second map")
    if a.shape != b.shape:
        raise OccludeError(f"maps have different shapes: {a.shape} and {b.shape}")
    valid = np.isfinite(a) & np.isfinite(b)
    return a[valid], b[valid]


def unit_scaled(values) -> Tuple[np.ndarray, float]:
    """``values`` (float64) divided by their largest finite absolute value, and that factor (1 when there is
    none, or it is 0): sums, squares and products of maps in any unit (1e200 or 1e-200) stay within float64."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    factor = float(np.max(np.abs(finite))) if finite.size else 0.0
    if not (factor > 0 and np.isfinite(factor)):
        return x, 1.0
    return x / factor, factor


def _as_mask(mask, shape: Tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise OccludeError(f"mask shape {mask.shape} differs from map shape {tuple(shape)}")
    return mask.astype(bool)


def rank_average(values) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing the average of the ranks they span
    (``[10, 20, 20, 30] -> [1, 2.5, 2.5, 4]``), as Spearman's coefficient needs."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]  # first element of each run of equal values
    group = np.cumsum(starts) - 1  # run index of each sorted element
    bounds = np.r_[np.flatnonzero(starts), n]  # run i spans sorted positions bounds[i] .. bounds[i+1]-1
    average = (bounds[:-1] + bounds[1:] - 1) / 2.0 + 1.0  # mean of 1-based ranks in each run
    ranks = np.empty(n)
    ranks[order] = average[group]
    return ranks


def importance_order(values) -> np.ndarray:
    """Flat (row-major) pixel indices from most to least important: descending value, not-computed
    (NaN / inf) pixels last, ties in row-major order (stable), so the order never depends on the sorting
    algorithm."""
    v = np.asarray(values, dtype=np.float64).ravel()
    missing = ~np.isfinite(v)  # NaN / inf: not computed
    key = np.where(missing, 0.0, -v)
    return np.lexsort((key, missing))  # lexsort is stable; last key is the primary one


# ------------------------------------------------------------------------------------ agreement


def pearson(a, b) -> float:
    """Pearson correlation of two maps over the pixels computed in both; NaN when fewer than two such
    pixels or when either map is constant there (correlation undefined)."""
    x, y = _pair(a, b)
    if x.size < 2:
        return float("nan")
    x, y = unit_scaled(x)[0], unit_scaled(y)[0]  # maps in any unit: no overflow in the squares
    x = x - x.mean()
    y = y - y.mean()
    denominator = np.sqrt(np.dot(x, x) * np.dot(y, y))
    if not denominator > 0:
        return float("nan")
    return float(np.clip(np.dot(x, y) / denominator, -1.0, 1.0))


def spearman(a, b) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties share their mean rank), over the
    pixels computed in both. Insensitive to any monotone rescaling of either map, which suits maps in
    different units (score drops, gradients, 0..255 PNGs)."""
    x, y = _pair(a, b)
    if x.size < 2:
        return float("nan")
    return pearson(rank_average(x)[None, :], rank_average(y)[None, :])


def top_fraction_mask(values, fraction: float = 0.1, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) bool: the top ``fraction`` of the (valid, finite) pixels by value.

    With k = round(fraction * n) (at least 1), the set is every pixel whose value is at least the k-th
    largest: pixels tied at the threshold are all included, so the set never depends on pixel order
    (occlusion maps are piecewise constant and tie a lot), and may hold more than k pixels.
    """
    m = _as_map(values)
    if not 0 < fraction <= 1:
        raise OccludeError(f"top fraction must be in (0, 1], got {fraction}")
    ok = np.isfinite(m) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(m))
    n = int(ok.sum())
    if n == 0:
        return np.zeros(m.shape, dtype=bool)
    k = max(1, int(np.floor(fraction * n + 0.5)))
    threshold = np.sort(m[ok])[::-1][k - 1]
    return ok & (m >= threshold)


def top_fraction_iou(a, b, fraction: float = 0.1) -> float:
    """Intersection over union of the two maps' top-``fraction`` pixel sets (see top_fraction_mask),
    taken over the pixels computed in both maps. 1 means they single out the same pixels; for two
    unrelated maps it is about fraction / (2 - fraction)."""
    a, b = _as_map(a, "first map"), _as_map(b, "second map")
    if a.shape != b.shape:
        raise OccludeError(f"maps have different shapes: {a.shape} and {b.shape}")
    valid = np.isfinite(a) & np.isfinite(b)
    top_a = top_fraction_mask(a, fraction, valid)
    top_b = top_fraction_mask(b, fraction, valid)
    union = int(np.count_nonzero(top_a | top_b))
    if union == 0:
        return float("nan")
    return float(np.count_nonzero(top_a & top_b) / union)


# ------------------------------------------------------------------------------ region metrics


def peak_pixels(values) -> np.ndarray:
    """(H, W) bool: the pixels holding the map's largest finite value (a plateau on occlusion maps)."""
    m = _as_map(values)
    finite = np.isfinite(m)
    if not finite.any():
        return np.zeros(m.shape, dtype=bool)
    return finite & (m == np.max(m[finite]))


def peak_index(values) -> Tuple[int, ...]:
    """The map's peak, for any number of axes: the pixel (voxel) of its plateau of largest finite values that
    lies nearest the plateau's centroid, ties broken by the first in row-major order. Occlusion maps are
    piecewise constant, so the maximum is usually a plateau, and its first pixel would sit on an edge; this
    one is inside it for convex plateaus, and is always one of its pixels. All zeros when nothing is finite.

    The one peak occlude reports (JSON ``map_info.peak``, the summary, ``check.csv``, a volume's ``peak``)
    and the pixel the pointing game tests."""
    m = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(m)
    if not finite.any():
        return (0,) * m.ndim
    plateau = np.argwhere(finite & (m == np.max(m[finite])))  # row-major order
    centre = plateau.mean(axis=0)
    return tuple(int(v) for v in plateau[int(np.argmin(((plateau - centre) ** 2).sum(axis=1)))])


def peak_inside_fraction(values, mask) -> float:
    """Share of the peak plateau's pixels that lie inside ``mask``; NaN when the map has no positive
    value (a map without evidence points nowhere). Reported next to the pointing game, which tests the
    reported peak (:func:`peak_index`)."""
    m = _as_map(values)
    inside = _as_mask(mask, m.shape)
    peak = peak_pixels(m)
    if not peak.any() or not np.max(m[peak]) > 0:
        return float("nan")
    return float(np.count_nonzero(peak & inside) / np.count_nonzero(peak))


def pointing_game(values, mask) -> bool:
    """Does the map's peak fall inside the region? The classic pointing game (Zhang et al.) with one tie rule
    for maps whose maximum is a plateau of tied pixels (occlusion windows): the peak is the plateau pixel
    nearest the plateau's centroid (:func:`peak_index`, the peak occlude reports), and it is a hit when that
    pixel is inside the mask. A map with no positive value is a miss: it shows no evidence anywhere."""
    m = _as_map(values)
    inside = _as_mask(mask, m.shape)
    finite = np.isfinite(m)
    if not finite.any() or not np.max(m[finite]) > 0:
        return False
    return bool(inside[peak_index(m)])


def energy_share(values, mask) -> float:
    """Fraction of the map's positive mass inside the mask: sum(max(map, 0) in mask) / sum(max(map, 0)).

    Only positive values count, because they are the evidence *for* the class (negative occlusion
    values are regions whose removal helps the score). NaN pixels are ignored. Returns NaN when the
    map has no positive value. A map spread evenly over the image scores the mask's area fraction.
    """
    m = _as_map(values)
    inside = _as_mask(mask, m.shape)
    positive = unit_scaled(np.where(np.isfinite(m) & (m > 0), m, 0.0))[0]  # no overflow in the sum
    total = float(positive.sum())
    if not total > 0:
        return float("nan")
    return float(positive[inside].sum() / total)


# ---------------------------------------------------------------------------- faithfulness curves


class Curve(NamedTuple):
    """Target score after each step of a deletion or insertion: ``fractions`` of pixels changed (0..1,
    first 0 and last 1) and the ``scores`` there."""

    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> float:
        return auc(self.fractions, self.scores)


def auc(fractions, scores) -> float:
    """Area under a curve on [0, 1] by the trapezoid rule (fractions must be increasing, in [0, 1])."""
    f = np.asarray(fractions, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if f.shape != s.shape or f.size < 2:
        raise OccludeError("auc needs at least two (fraction, score) points of equal count")
    if np.any(np.diff(f) < 0) or f[0] < 0 or f[-1] > 1:
        raise OccludeError("auc needs increasing fractions within [0, 1]")
    return float(np.sum(np.diff(f) * (s[1:] + s[:-1]) / 2.0))


def step_counts(pixels: int, steps: int = DEFAULT_STEPS) -> np.ndarray:
    """Pixels changed after each of ``steps`` equal steps: ``steps + 1`` strictly increasing counts from 0
    to ``pixels`` (steps is capped at the number of pixels)."""
    if steps < 1:
        raise OccludeError(f"steps must be at least 1, got {steps}")
    if pixels < 1:
        raise OccludeError("the input has no pixels")
    steps = min(int(steps), int(pixels))
    return np.floor(np.linspace(0, pixels, steps + 1) + 0.5).astype(np.int64)


def _curve(
    start: np.ndarray,
    source: np.ndarray,
    importance,
    score: ScoreFn,
    target: int,
    steps: int,
    spatial_axes: Tuple[int, ...],
    batch_size: int,
    progress: Optional[ProgressFn],
) -> Curve:
    """Copy ``source``'s pixels into ``start`` in order of importance; score after every step (through the
    engine's one batched perturbation loop)."""
    start = np.asarray(start)
    source = check_baseline(start, source, batch_size)
    axes = spatial_axes_of(start, spatial_axes)
    if len(axes) not in (2, 3):
        raise OccludeError(f"spatial axes {spatial_axes} must name two (images) or three (volumes) different axes")
    shape = tuple(int(start.shape[a]) for a in axes)
    values = _as_map(importance, "importance map")
    if values.shape != shape:
        raise OccludeError(f"importance map shape {values.shape} differs from the input's {'x'.join(map(str, shape))}")
    n = int(np.prod(shape))
    order = importance_order(values)
    counts = step_counts(n, steps)
    last = tuple(range(-len(axes), 0))

    def pixels_last(x: np.ndarray) -> np.ndarray:  # (rest..., pixels) view/copy
        return np.moveaxis(x, axes, last).reshape(-1, n)

    rest_shape = tuple(d for i, d in enumerate(start.shape) if i not in axes)
    work = pixels_last(start).copy()
    src = pixels_last(source)

    def step(buffer: np.ndarray, row: int, i: int) -> None:  # steps come in order: work is cumulative
        if i > 0:
            changed = order[counts[i - 1] : counts[i]]
            work[:, changed] = src[:, changed]
        buffer[row] = np.moveaxis(work.reshape(rest_shape + shape), last, axes)

    scores = score_perturbations(start, len(counts), step, score, batch_size=batch_size, progress=progress)
    if not 0 <= target < scores.shape[1]:
        raise OccludeError(f"target {target} is out of range for {scores.shape[1]} classes")
    return Curve(fractions=counts / float(n), scores=scores[:, target].copy())


def deletion_curve(
    inputs: np.ndarray,
    baseline: np.ndarray,
    importance,
    score: ScoreFn,
    target: int,
    *,
    steps: int = DEFAULT_STEPS,
    spatial_axes: Tuple[int, ...] = (-2, -1),
    batch_size: int = 32,
    progress: Optional[ProgressFn] = None,
) -> Curve:
    """Deletion (Petsiuk et al. 2018): replace the input's pixels by the baseline's, most important first,
    and record the target score after each of ``steps`` equal steps (steps + 1 forward passes, batched).

    ``inputs`` is one sample in model layout (no batch axis); ``baseline`` has the same shape; every
    channel of a pixel is replaced together. A faithful map makes the score fall fast: **lower area
    is better**. Pixels tied in importance are deleted in row-major order; NaN pixels last.
    """
    return _curve(inputs, baseline, importance, score, int(target), steps, spatial_axes, batch_size, progress)


def insertion_curve(
    inputs: np.ndarray,
    baseline: np.ndarray,
    importance,
    score: ScoreFn,
    target: int,
    *,
    steps: int = DEFAULT_STEPS,
    spatial_axes: Tuple[int, ...] = (-2, -1),
    batch_size: int = 32,
    progress: Optional[ProgressFn] = None,
) -> Curve:
    """Insertion (Petsiuk et al. 2018): start from the baseline and put the input's pixels back, most
    important first, recording the target score after each step. A faithful map makes the score rise
    fast: **higher area is better**. Same ordering rules as :func:`deletion_curve`.
    """
    return _curve(baseline, inputs, importance, score, int(target), steps, spatial_axes, batch_size, progress)


# ------------------------------------------------------------------------------------ map summaries


def finite_or_none(value) -> Optional[float]:
    """A float, or None for None, NaN and inf (not computed, undefined): what JSON can hold."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def peak(values: np.ndarray) -> dict:
    """Location (model-input pixels, one key per axis: y, x or z, y, x) and value of the map's maximum: the
    plateau pixel nearest the plateau's centroid (:func:`peak_index`)."""
    values = np.asarray(values)
    position = peak_index(values)
    names = (
        ("y", "x")
        if values.ndim == 2
        else ("z", "y", "x")
        if values.ndim == 3
        else tuple(f"a{i}" for i in range(values.ndim))
    )
    return {**{n: int(p) for n, p in zip(names, position)}, "value": finite_or_none(values[position])}
