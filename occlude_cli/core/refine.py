"""Coarse-to-fine occlusion: the same window grid as the exact engine with fewer forward passes.

Scores an even coarse grid of windows exactly (at least every ``step``-th, denser while the budget
allows), interpolates the rest (all classes), then drills down where the estimated drop is largest with
what is left. Numpy only; uses the engine's window loop.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import OccludeError
from .engine import (
    Box,
    Occlusion,
    ProgressFn,
    ScoreFn,
    default_stride,
    occlusion_sensitivity,
    score_windows,
    spatial_size,
    window_grid,
    window_starts,
)


def _interpolation_matrix(positions: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(len(positions), len(known)) weights of linear interpolation from ``positions[known]``; ``known``
    is sorted and includes the first and last index, so every position lies between two known ones."""
    xs = positions[known].astype(np.float64)
    matrix = np.zeros((len(positions), len(known)))
    if len(known) == 1:
        matrix[:, 0] = 1.0
        return matrix
    for i, p in enumerate(positions.astype(np.float64)):
        j = int(np.clip(np.searchsorted(xs, p, side="right") - 1, 0, len(xs) - 2))
        t = (p - xs[j]) / (xs[j + 1] - xs[j])
        matrix[i, j], matrix[i, j + 1] = 1.0 - t, t
    return matrix


def _spread_corrections(scores, exact, chosen, measured, grid, step: int) -> np.ndarray:
    """Move the interpolated (unmeasured) windows near the drill-down windows by the drill-down's
    residuals (measured minus interpolated), weighted by a tent of radius ``step`` in grid units."""
    rows, cols = grid
    residual = np.zeros((rows, cols, scores.shape[1]))
    weight = np.zeros((rows, cols))
    residual.reshape(-1, scores.shape[1])[chosen] = exact - scores[chosen]
    weight.reshape(-1)[chosen] = 1.0
    offsets = np.arange(-step + 1, step)
    tent = 1.0 - np.abs(offsets) / step
    def smooth(a, axis):
        out = np.zeros_like(a)
        for off, w in zip(offsets, tent):
            src = [slice(None)] * a.ndim
            dst = [slice(None)] * a.ndim
            n = a.shape[axis]
            src[axis] = slice(max(0, off), n + min(0, off))
            dst[axis] = slice(max(0, -off), n - max(0, off))
            out[tuple(dst)] += w * a[tuple(src)]
        return out
    num = smooth(smooth(residual, 0), 1)
    den = smooth(smooth(weight, 0), 1)
    correction = np.where(den[..., None] > 0, num / np.maximum(den, 1e-12)[..., None], 0.0)
    unmeasured = ~measured.reshape(rows, cols)
    corrected = scores.reshape(rows, cols, -1).copy()
    corrected[unmeasured] += correction[unmeasured]
    return corrected.reshape(scores.shape)


def check_refine(step: int, budget: float) -> None:
    """The coarse step and budget of a refined run, checked once (the library's names in the messages)."""
    if int(step) != step or step < 1:
        raise OccludeError(f"refine_step (--refine-step) must be a whole number of at least 1, got {step}")
    if not (np.isfinite(budget) and 0 < budget <= 1):
        raise OccludeError(f"refine_budget (--refine-budget) must be in (0, 1], got {budget}")


def refine_extra_windows(grid_windows: int, coarse_windows: int, budget: float) -> int:
    """Drill-down windows allowed so that all forward passes (the original included) stay within
    ``budget`` times those of the exact map."""
    allowed = int(np.floor(budget * (grid_windows + 1))) - 1
    return max(0, allowed - coarse_windows)


def refine_forward_passes(size, patch, stride, region, coarse_step: int, budget: float) -> int:
    """How many forward passes :func:`refined_occlusion_sensitivity` will make, without making them."""
    y0, x0, y1, x1 = region if region is not None else (0, 0) + tuple(size)
    ny = len(window_starts(y1 - y0, patch[0], stride[0]))
    nx = len(window_starts(x1 - x0, patch[1], stride[1]))
    cy, cx = _coarse_counts(ny, nx, coarse_step, budget)
    coarse = len(_knots(ny, cy)) * len(_knots(nx, cx))
    return coarse + refine_extra_windows(ny * nx, coarse, budget) + 1


def _knots(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over 0 .. n-1, the first and last included (spacings differ by at
    most one, unlike every-N-th plus the last, which can leave a gap of one at the end)."""
    if count >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(count, 2))).astype(np.int64))


def _coarse_counts(ny: int, nx: int, step: int, budget: float) -> Tuple[int, int]:
    """Knots per axis of the coarse grid: at least every ``step``-th window, then denser, one knot at a
    time on the axis with the wider spacing, while the whole grid fits in the budget.

    Spending the budget on an even grid rather than on drill-downs is what holds on real photos: the
    interpolation error of a window is barely predictable from the coarse scores (its correlation with
    the estimated drop, the coarse curvature or the cell's range is 0.1 to 0.5 on photos), so denser
    even sampling beats targeted sampling in the worst case (benchmarks/refine_photos.py)."""
    allowed = int(np.floor(budget * (ny * nx + 1))) - 1
    ky = min(ny, int(np.ceil((ny - 1) / step)) + 1)
    kx = min(nx, int(np.ceil((nx - 1) / step)) + 1)
    while ky < ny or kx < nx:
        spacing_y = (ny - 1) / (ky - 1) if ky < ny else -1.0
        spacing_x = (nx - 1) / (kx - 1) if kx < nx else -1.0
        grow_y = spacing_y >= spacing_x
        ny_next, nx_next = (ky + 1, kx) if grow_y else (ky, kx + 1)
        if ny_next * nx_next > allowed:
            break
        ky, kx = ny_next, nx_next
    return ky, kx


def refined_occlusion_sensitivity(
    inputs: np.ndarray,
    score: ScoreFn,
    *,
    patch: Tuple[int, int],
    stride: Optional[Tuple[int, int]] = None,
    target: Optional[int] = None,
    baseline: Optional[np.ndarray] = None,
    spatial_axes: Tuple[int, int] = (-2, -1),
    batch_size: int = 32,
    region: Optional[Box] = None,
    coarse_step: int = 3,
    budget: float = 0.25,
    progress: Optional[ProgressFn] = None,
    original_scores: Optional[np.ndarray] = None,
) -> Occlusion:
    """Coarse-to-fine occlusion on the same window grid as :func:`occlusion_sensitivity`, with fewer
    forward passes.

    1. Coarse pass: an even grid of windows, scored exactly, the first and last along each axis
       included: at least every ``coarse_step``-th window, and denser (one more row or column at a
       time, on the axis with the wider spacing) as long as it fits in ``budget``, the fraction of the
       exact map's forward passes allowed in all.
    2. The other windows' scores (all classes) are estimated by bilinear interpolation between them.
    3. Drill-down: with what is left of the budget, the windows whose estimated drop for ``target``
       (default: top-1) is largest in absolute value are scored exactly, and their residuals (measured
       minus interpolated) are spread to the interpolated windows around them.

    The result has the full grid's windows; ``measured`` marks those actually scored. Maps and every
    class derive from it as usual. Worth it when windows overlap a lot (stride well below the patch),
    where neighbouring windows' scores are close.
    """
    check_refine(coarse_step, budget)
    inputs = np.asarray(inputs)
    axes, size = spatial_size(inputs, spatial_axes)
    if len(axes) != 2:
        raise OccludeError(f"refine works on 2-D images; this input has {len(axes)} spatial axes")
    if baseline is None:
        baseline = np.zeros_like(inputs)
    steps: Tuple[int, ...] = tuple(stride) if stride else default_stride(patch)
    y0, x0, y1, x1 = region if region is not None else (0, 0) + size
    ys = window_starts(y1 - y0, patch[0], steps[0], y0)
    xs = window_starts(x1 - x0, patch[1], steps[1], x0)
    windows = window_grid(size, patch, steps, region)
    cy, cx = _coarse_counts(len(ys), len(xs), coarse_step, budget)
    ky, kx = _knots(len(ys), cy), _knots(len(xs), cx)
    coarse_index = (ky[:, None] * len(xs) + kx[None, :]).ravel()
    extra = refine_extra_windows(len(windows), len(coarse_index), budget)
    total = len(coarse_index) + extra

    coarse = occlusion_sensitivity(
        inputs, score, baseline=baseline, spatial_axes=axes, batch_size=batch_size, patch=patch,
        windows=windows[coarse_index], progress=(lambda done, _: progress(done, total)) if progress else None,
        original_scores=original_scores,
    )
    classes = coarse.num_classes
    known = coarse.window_scores.reshape(len(ky), len(kx), classes)
    estimate = np.einsum("ia,abc,jb->ijc", _interpolation_matrix(ys, ky), known, _interpolation_matrix(xs, kx))
    scores = estimate.reshape(len(windows), classes)
    measured = np.zeros(len(windows), dtype=bool)
    measured[coarse_index] = True
    scores[coarse_index] = coarse.window_scores
    if extra:
        if target is None:
            target = int(np.argmax(coarse.original_scores))
        priority = np.abs(coarse.original_scores[target] - scores[:, target])
        priority[measured] = -np.inf
        chosen = np.sort(np.argsort(-priority, kind="stable")[:extra])
        exact = score_windows(
            inputs, baseline, windows[chosen], score, batch_size=batch_size, spatial_axes=axes,
            progress=(lambda done, _: progress(len(coarse_index) + done, total)) if progress else None,
        )
        spacing = max((len(ys) - 1) / max(len(ky) - 1, 1), (len(xs) - 1) / max(len(kx) - 1, 1))
        scores = _spread_corrections(scores, exact, chosen, measured, (len(ys), len(xs)), int(np.ceil(spacing)))
        scores[chosen] = exact
        measured[chosen] = True
    return Occlusion(
        windows=windows,
        original_scores=coarse.original_scores,
        window_scores=scores,
        size=size,
        forward_passes=int(measured.sum()) + 1,
        measured=measured,
    )
