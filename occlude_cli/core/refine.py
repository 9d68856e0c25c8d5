"""Coarse-to-fine occlusion: the same window grid as the exact engine with fewer forward passes.

Scores every ``step``-th window exactly, interpolates the rest (all classes), then drills down where the
estimated drop is largest within a budget. Numpy only; uses the engine's window loop.
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
    if int(step) != step or not 1 <= step <= 100:
        raise OccludeError(f"refine_step (--refine-step) must be a whole number from 1 to 100, got {step}")
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
    coarse = len(_every(ny, coarse_step)) * len(_every(nx, coarse_step))
    return coarse + refine_extra_windows(ny * nx, coarse, budget) + 1


def _every(n: int, step: int) -> np.ndarray:
    """Indices 0, step, 2 step, ... and always the last one."""
    idx = np.arange(0, n, step)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


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
    scorer=None,
) -> Occlusion:
    """Coarse-to-fine occlusion on the same window grid as :func:`occlusion_sensitivity`, with fewer
    forward passes.

    1. Coarse pass: every ``coarse_step``-th window along each axis (plus the last), scored exactly.
    2. The other windows' scores (all classes) are estimated by bilinear interpolation between them.
    3. Drill-down: the windows whose estimated drop for ``target`` (default: top-1) is largest in
       absolute value are scored exactly, until ``budget`` (a fraction of the full grid) is spent.

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
    ky, kx = _every(len(ys), coarse_step), _every(len(xs), coarse_step)
    coarse_index = (ky[:, None] * len(xs) + kx[None, :]).ravel()
    extra = refine_extra_windows(len(windows), len(coarse_index), budget)
    total = len(coarse_index) + extra

    coarse = occlusion_sensitivity(
        inputs, score, baseline=baseline, spatial_axes=axes, batch_size=batch_size, patch=patch,
        windows=windows[coarse_index], progress=(lambda done, _: progress(done, total)) if progress else None,
        original_scores=original_scores, scorer=scorer,
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
        exact = (scorer or score_windows)(
            inputs, baseline, windows[chosen], score, batch_size=batch_size, spatial_axes=axes,
            progress=(lambda done, _: progress(len(coarse_index) + done, total)) if progress else None,
        )
        scores = _spread_corrections(scores, exact, chosen, measured, (len(ys), len(xs)), coarse_step)
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
