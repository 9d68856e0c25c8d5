"""The occlusion engine: window grid, batched occluded inputs, aggregation by coverage count.

Knows nothing of files, onnxruntime or plotting. It takes one input array (any layout: the two spatial
axes are given), a baseline array of the same shape and a ``score(batch) -> (batch, classes)`` function,
and returns every window's scores. Maps for any class are then derived without further inference:

    map[c][pixel] = mean over the windows covering pixel of (score_c(original) - score_c(occluded))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

from .errors import OccludeError

ScoreFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]
Box = Tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive), model-input pixels

# Aggregating many classes at once is done in chunks to bound memory: (H+1) * (W+1) * chunk float64.
_CLASS_CHUNK = 64


def window_starts(length: int, patch: int, stride: int, lo: int = 0) -> np.ndarray:
    """Start offsets along one axis of [lo, lo + length): every ``stride``, plus a final window flush
    with the end when the stride does not land on it, so that every position is covered."""
    if stride < 1:
        raise OccludeError(f"stride must be at least 1, got {stride}")
    if patch < 1:
        raise OccludeError(f"patch must be at least 1, got {patch}")
    if patch > length:
        raise OccludeError(f"patch ({patch}) is larger than the area to occlude ({length} pixels)")
    if stride > patch:
        raise OccludeError(f"stride ({stride}) is larger than the patch ({patch}): some pixels would never be occluded")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return np.asarray(starts, dtype=np.int64) + lo


def window_grid(
    size: Tuple[int, int],
    patch: Tuple[int, int],
    stride: Tuple[int, int],
    region: Optional[Box] = None,
) -> np.ndarray:
    """All windows of a sliding grid as an (N, 4) int array of (y, x, h, w), row-major order.

    ``size`` is the input's (height, width); ``region`` (y0, x0, y1, x1) restricts the grid to a box.
    """
    height, width = size
    y0, x0, y1, x1 = region if region is not None else (0, 0, height, width)
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise OccludeError(f"region {region} is empty or outside the {height}x{width} input")
    ys = window_starts(y1 - y0, patch[0], stride[0], y0)
    xs = window_starts(x1 - x0, patch[1], stride[1], x0)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    n = grid_y.size
    return np.stack(
        [grid_y.ravel(), grid_x.ravel(), np.full(n, patch[0]), np.full(n, patch[1])], axis=1
    ).astype(np.int64)


def _window_slice(window: Sequence[int], spatial_axes: Tuple[int, int], ndim: int) -> tuple:
    y, x, h, w = window
    index = [slice(None)] * ndim
    index[spatial_axes[0]] = slice(y, y + h)
    index[spatial_axes[1]] = slice(x, x + w)
    return tuple(index)


def check_scores(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != n:
        raise OccludeError(f"the score function must return (batch, classes); got shape {scores.shape} for batch {n}")
    return scores


def default_stride(patch: Tuple[int, int]) -> Tuple[int, int]:
    """Half the patch (at least 1): every pixel is covered by about four windows."""
    return (max(1, patch[0] // 2), max(1, patch[1] // 2))


def check_baseline(inputs: np.ndarray, baseline, batch_size: int) -> np.ndarray:
    """The baseline as an array of the input's dtype, after checking its shape and the batch size."""
    baseline = np.asarray(baseline, dtype=inputs.dtype)
    if baseline.shape != inputs.shape:
        raise OccludeError(f"baseline shape {baseline.shape} differs from input shape {inputs.shape}")
    if batch_size < 1:
        raise OccludeError(f"batch size must be at least 1, got {batch_size}")
    return baseline


def _spatial(inputs: np.ndarray, spatial_axes: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """The spatial axes as non-negative indices, and the (height, width) they span."""
    axes = tuple(a % inputs.ndim for a in spatial_axes)
    return axes, (int(inputs.shape[axes[0]]), int(inputs.shape[axes[1]]))


def score_windows(
    inputs: np.ndarray,
    baseline: np.ndarray,
    windows: np.ndarray,
    score: ScoreFn,
    *,
    batch_size: int = 32,
    spatial_axes: Tuple[int, int] = (-2, -1),
    progress: Optional[ProgressFn] = None,
) -> np.ndarray:
    """Scores of the input with each window replaced by the baseline: (N, classes), float64.

    Batches are built in one preallocated buffer holding copies of the input; for each row only the
    previous window is restored and the new one written, so the cost per window is two slice copies.
    """
    inputs = np.asarray(inputs)
    baseline = check_baseline(inputs, baseline, batch_size)
    axes = tuple(a % inputs.ndim for a in spatial_axes)
    total = len(windows)
    rows = min(batch_size, max(total, 1))
    buffer = np.empty((rows,) + inputs.shape, dtype=inputs.dtype)
    buffer[:] = inputs
    written: list = [None] * rows
    result: Optional[np.ndarray] = None
    for start in range(0, total, rows):
        chunk = windows[start : start + rows].tolist()  # plain ints: cheaper slices than numpy scalars
        for row, window in enumerate(chunk):
            if written[row] is not None:
                buffer[(row,) + written[row]] = inputs[written[row]]
            index = _window_slice(window, axes, inputs.ndim)
            buffer[(row,) + index] = baseline[index]
            written[row] = index
        scores = check_scores(score(buffer[: len(chunk)]), len(chunk))
        if result is None:
            result = np.empty((total, scores.shape[1]), dtype=np.float64)
        result[start : start + len(chunk)] = scores
        if progress is not None:
            progress(min(start + rows, total), total)
    if result is None:
        raise OccludeError("no windows to occlude")
    return result


def accumulate_windows(windows: np.ndarray, values: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Sum each window's value over the pixels it covers: (K, H, W) from (N, K) values.

    Uses a 2-D difference array (four corner updates per window, then two cumulative sums), so the cost
    is O(N K + H W K) instead of O(N K h w).
    """
    height, width = size
    values = np.asarray(values, dtype=np.float64)
    diff = np.zeros((height + 1, width + 1, values.shape[1]), dtype=np.float64)
    y, x, h, w = (windows[:, i] for i in range(4))
    np.add.at(diff, (y, x), values)
    np.add.at(diff, (y + h, x), -values)
    np.add.at(diff, (y, x + w), -values)
    np.add.at(diff, (y + h, x + w), values)
    total = np.cumsum(np.cumsum(diff, axis=0), axis=1)[:height, :width]
    return np.moveaxis(total, -1, 0)


@dataclass(frozen=True)
class Occlusion:
    """Every window's scores for every class: maps for any class derive from it at no extra inference."""

    windows: np.ndarray  # (N, 4) int: y, x, h, w in model-input pixels
    original_scores: np.ndarray  # (classes,) scores of the unoccluded input
    window_scores: np.ndarray  # (N, classes) scores with each window occluded
    size: Tuple[int, int]  # (height, width) of the input
    forward_passes: int  # inputs sent to the score function, the original included
    measured: Optional[np.ndarray] = None  # (N,) bool: False for windows whose scores were interpolated

    @property
    def num_classes(self) -> int:
        return int(self.original_scores.shape[0])

    def drops(self, classes: Optional[Iterable[int]] = None) -> np.ndarray:
        """(N, K) score drops ``original - occluded``; positive means the window mattered for the class."""
        if classes is None:
            return self.original_scores[None, :] - self.window_scores
        idx = np.asarray(list(classes), dtype=np.int64)
        return self.original_scores[None, idx] - self.window_scores[:, idx]

    def coverage_count(self) -> np.ndarray:
        """(H, W) number of windows covering each pixel."""
        return accumulate_windows(self.windows, np.ones((len(self.windows), 1)), self.size)[0]

    def attribution(self, target: int) -> np.ndarray:
        """(H, W) signed map for one class; NaN where no window was placed (outside a region)."""
        return self.attributions([target])[0]

    def attributions(self, classes: Optional[Sequence[int]] = None, dtype=np.float64) -> np.ndarray:
        """(K, H, W) signed maps for the given classes (all classes if None), NaN where not covered."""
        classes = list(range(self.num_classes)) if classes is None else [int(c) for c in classes]
        for c in classes:
            if not 0 <= c < self.num_classes:
                raise OccludeError(f"class index {c} is out of range: the model has {self.num_classes} classes")
        count = self.coverage_count()
        covered = count > 0
        out = np.empty((len(classes),) + tuple(self.size), dtype=dtype)
        for start in range(0, len(classes), _CLASS_CHUNK):
            part = classes[start : start + _CLASS_CHUNK]
            sums = accumulate_windows(self.windows, self.drops(part), self.size)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + len(part)] = np.where(covered, sums / count, np.nan)
        return out

    def top_class_map(self) -> np.ndarray:
        """(H, W) the class most often predicted top-1 when a window covering the pixel is occluded
        (ties: lowest index); -1 where not covered."""
        top = np.argmax(self.window_scores, axis=1)
        classes = np.unique(top)
        votes = accumulate_windows(self.windows, (top[:, None] == classes[None, :]).astype(np.float64), self.size)
        result = classes[np.argmax(votes, axis=0)]
        return np.where(self.coverage_count() > 0, result, -1)


def occlusion_sensitivity(
    inputs: np.ndarray,
    score: ScoreFn,
    *,
    patch: Tuple[int, int],
    stride: Optional[Tuple[int, int]] = None,
    baseline: Optional[np.ndarray] = None,
    spatial_axes: Tuple[int, int] = (-2, -1),
    batch_size: int = 32,
    region: Optional[Box] = None,
    windows: Optional[np.ndarray] = None,
    progress: Optional[ProgressFn] = None,
    original_scores: Optional[np.ndarray] = None,
) -> Occlusion:
    """Occlude ``inputs`` (one sample, no batch axis) window by window and score every occluded copy.

    ``patch`` and ``stride`` are (height, width) in input pixels (stride defaults to half the patch);
    ``baseline`` defaults to zeros; ``windows`` (N, 4 of y, x, h, w) replaces the grid when given.
    ``original_scores``: the unoccluded input's scores when the caller already has them (explain() does:
    it scores the input once to inspect the output), saving a forward pass at batch 1; the pass is still
    counted in ``forward_passes``.
    """
    inputs = np.asarray(inputs)
    axes, size = _spatial(inputs, spatial_axes)
    if baseline is None:
        baseline = np.zeros_like(inputs)
    if windows is None:
        windows = window_grid(size, patch, stride or default_stride(patch), region)
    if original_scores is None:
        original = check_scores(score(inputs[None]), 1)[0].astype(np.float64)
    else:
        original = np.asarray(original_scores, dtype=np.float64).reshape(-1)
    scores = score_windows(
        inputs, baseline, windows, score, batch_size=batch_size, spatial_axes=axes, progress=progress
    )
    if scores.shape[1] != original.shape[0]:
        raise OccludeError("the score function returned a different number of classes for different batches")
    return Occlusion(
        windows=np.asarray(windows, dtype=np.int64),
        original_scores=original,
        window_scores=scores,
        size=size,
        forward_passes=len(windows) + 1,
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
    if coarse_step < 1:
        raise OccludeError(f"refine step must be at least 1, got {coarse_step}")
    if not 0 < budget <= 1:
        raise OccludeError(f"refine budget must be in (0, 1], got {budget}")
    inputs = np.asarray(inputs)
    axes, size = _spatial(inputs, spatial_axes)
    if baseline is None:
        baseline = np.zeros_like(inputs)
    stride = stride or default_stride(patch)
    y0, x0, y1, x1 = region if region is not None else (0, 0) + size
    ys = window_starts(y1 - y0, patch[0], stride[0], y0)
    xs = window_starts(x1 - x0, patch[1], stride[1], x0)
    windows = window_grid(size, patch, stride, region)
    ky, kx = _every(len(ys), coarse_step), _every(len(xs), coarse_step)
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
