"""Coarse-to-fine occlusion: the same window grid as the exact engine with fewer forward passes.

Scores an even, staggered lattice of windows exactly (at least every ``step``-th, denser while the
budget allows), interpolates the rest (all classes), then drills down where the estimated drop is largest
with what is left. Numpy only; uses the engine's window loop.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

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


def check_refine(step: int, budget: float) -> None:
    """The coarse step and budget of a refined run, checked once (the library's names in the messages)."""
    if int(step) != step or not 1 <= step <= 100:
        raise OccludeError(f"refine_step must be a whole number from 1 to 100, got {step}", params=("refine_step",))
    if not (np.isfinite(budget) and 0 < budget <= 1):
        raise OccludeError(f"refine_budget must be in (0, 1], got {budget}", params=("refine_budget",))


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
    coarse = sum(len(c) for c in _coarse_layout(ny, nx, coarse_step, budget)[1])
    return coarse + refine_extra_windows(ny * nx, coarse, budget) + 1


def _knots(n: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over 0 .. n-1, the first and last included (spacings differ by at
    most one, unlike every-N-th plus the last, which can leave a gap of one at the end)."""
    if count >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(count, 2))).astype(np.int64))


def _offset_knots(n: int, count: int) -> np.ndarray:
    """The knots of a staggered row: halfway between those of :func:`_knots` ``(n, count)``, plus both
    ends (so that nothing is extrapolated)."""
    if count >= n:
        return np.arange(n)
    spacing = (n - 1) / (max(count, 2) - 1)
    middles = np.round(np.linspace(spacing / 2, n - 1 - spacing / 2, max(count, 2) - 1)).astype(np.int64)
    return np.unique(np.concatenate([[0], middles, [n - 1]]))


def _layout(ny: int, nx: int, count_y: int, count_x: int) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Knot rows, and the knot columns of each: even rows on the even columns, odd rows staggered."""
    rows = _knots(ny, count_y)
    return rows, [_knots(nx, count_x) if i % 2 == 0 else _offset_knots(nx, count_x) for i in range(len(rows))]


def _coarse_layout(ny: int, nx: int, step: int, budget: float) -> Tuple[np.ndarray, List[np.ndarray]]:
    """The coarse pass's windows as knot rows and each row's knot columns: a staggered lattice (odd rows
    shifted by half a spacing), at least every ``step``-th window along each axis, then denser, one row
    or column of knots at a time on the axis with the wider spacing, while it fits in the budget. The budget
    is a cap: a step whose sparsest lattice does not fit is refused (OccludeError naming the steps and
    budgets that would fit), never run with more forward passes than the budget allows.

    Spending the budget on an even lattice rather than on drill-downs is what holds on real photos: the
    interpolation error of a window is barely predictable from the coarse scores (its correlation with
    the estimated drop, the coarse curvature or the cell's range is about 0.1 on most photos), so denser
    even sampling beats targeted sampling in the worst case; staggering the rows spreads the same number
    of knots more evenly over the plane than a square grid does (benchmarks/refine_photos.py)."""
    allowed = int(np.floor(budget * (ny * nx + 1))) - 1
    ky, kx = _coarsest(ny, nx, step)
    least = sum(len(c) for c in _layout(ny, nx, ky, kx)[1])
    if least > allowed:
        raise OccludeError(_over_budget(ny, nx, step, budget, least), params=("refine_step", "refine_budget"))
    while ky < ny or kx < nx:
        spacing_y = (ny - 1) / (ky - 1) if ky < ny else -1.0
        spacing_x = (nx - 1) / (kx - 1) if kx < nx else -1.0
        ny_next, nx_next = (ky + 1, kx) if spacing_y >= spacing_x else (ky, kx + 1)
        if sum(len(c) for c in _layout(ny, nx, ny_next, nx_next)[1]) > allowed:
            break
        ky, kx = ny_next, nx_next
    return _layout(ny, nx, ky, kx)


def _coarsest(ny: int, nx: int, step: int) -> Tuple[int, int]:
    """Knot rows and columns of the sparsest lattice allowed: every ``step``-th window along each axis."""
    return min(ny, int(np.ceil((ny - 1) / step)) + 1), min(nx, int(np.ceil((nx - 1) / step)) + 1)


def _over_budget(ny: int, nx: int, step: int, budget: float, least: int) -> str:
    """Why a coarse step cannot meet the budget, with the steps and budgets that would."""
    exact = ny * nx + 1
    allowed = int(np.floor(budget * exact))
    fitting = [
        s
        for s in range(int(step) + 1, 101)
        if sum(len(c) for c in _layout(ny, nx, *_coarsest(ny, nx, s))[1]) + 1 <= allowed
    ]
    need = np.ceil((least + 1) / exact * 100) / 100
    options = [f"refine_step {fitting[0]} or more"] if fitting else []
    if need < 1 or not fitting:
        options.append(f"refine_budget {min(need, 1.0):g} or more")
    options.append(f"the exact map ({exact} forward passes, no refine)")
    return (
        f"refine_step {step} on this grid of {ny}x{nx} windows scores at least {least} windows in its coarse pass "
        f"({least + 1} forward passes with the original), more than refine_budget {budget:g} allows ({allowed} of "
        f"the exact map's {exact}): use {', or '.join(options)}"
    )


def _interpolated(known_scores: np.ndarray, ys, xs, rows, columns) -> np.ndarray:
    """Every window's scores (ny, nx, classes) from the knots': along each knot row first (its own knots),
    then down the columns between the knot rows."""
    known = np.split(known_scores, np.cumsum([len(c) for c in columns])[:-1])
    along_rows = np.stack([_interpolation_matrix(xs, cols) @ part for cols, part in zip(columns, known)])
    return np.einsum("ia,ajc->ijc", _interpolation_matrix(ys, rows), along_rows)


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

    1. Coarse pass: an even, staggered lattice of windows (every other knot row shifted by half a
       spacing; the first and last window of every knot row, and the first and last row, included),
       scored exactly: at least every ``coarse_step``-th window along each axis, and denser (one more
       row or column of knots at a time, on the axis with the wider spacing) as long as it fits in
       ``budget``, the fraction of the exact map's forward passes allowed in all.
    2. The other windows' scores (all classes) are interpolated linearly along each knot row, then
       linearly down the columns between the knot rows.
    3. Drill-down: with what is left of the budget, the windows whose estimated drop for ``target``
       (default: top-1) is largest in absolute value are scored exactly. Their residuals are not spread
       to their neighbours: on photos that made the worst case worse (a window's interpolation error
       says little about its neighbours').

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
    rows, columns = _coarse_layout(len(ys), len(xs), coarse_step, budget)
    coarse_index = np.concatenate([row * len(xs) + cols for row, cols in zip(rows, columns)])
    extra = refine_extra_windows(len(windows), len(coarse_index), budget)
    total = len(coarse_index) + extra

    coarse = occlusion_sensitivity(
        inputs,
        score,
        baseline=baseline,
        spatial_axes=axes,
        batch_size=batch_size,
        patch=patch,
        windows=windows[coarse_index],
        progress=(lambda done, _: progress(done, total)) if progress else None,
        original_scores=original_scores,
        scorer=scorer,
    )
    scores = _interpolated(coarse.window_scores, ys, xs, rows, columns).reshape(len(windows), coarse.num_classes)
    measured = np.zeros(len(windows), dtype=bool)
    measured[coarse_index] = True
    scores[coarse_index] = coarse.window_scores
    if extra:
        if target is None:
            target = int(np.argmax(coarse.original_scores))
        priority = np.abs(coarse.original_scores[target] - scores[:, target])
        priority[measured] = -np.inf
        chosen = np.sort(np.argsort(-priority, kind="stable")[:extra])
        drill = (lambda done, _: progress(len(coarse_index) + done, total)) if progress else None
        scores[chosen] = (scorer or score_windows)(
            inputs, baseline, windows[chosen], score, batch_size=batch_size, spatial_axes=axes, progress=drill
        )
        measured[chosen] = True
    return Occlusion(
        windows=windows,
        original_scores=coarse.original_scores,
        window_scores=scores,
        size=size,
        forward_passes=int(measured.sum()) + 1,
        measured=measured,
    )
