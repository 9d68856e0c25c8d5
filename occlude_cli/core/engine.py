"""The occlusion engine: window grid, batched occluded inputs, aggregation by coverage count.

Knows nothing of files, onnxruntime or plotting. It takes one input array (any layout: the spatial axes
are given; two for images, three for volumes), a baseline array of the same shape and a
``score(batch) -> (batch, classes)`` function, and returns every window's scores. Maps for any class are
then derived without further inference:

    map[c][pixel] = mean over the windows covering pixel of (score_c(original) - score_c(occluded))

Windows are an (N, 2d) int array: the d start offsets, then the d sizes (``y, x, h, w`` for images,
``z, y, x, d, h, w`` for volumes). Every batched perturbation (occlusion windows, deletion/insertion steps,
top-k masks) goes through one loop, :func:`score_perturbations`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

from ..errors import OccludeError

ScoreFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]
PerturbFn = Callable[[np.ndarray, int, int], None]
Box = Tuple[int, ...]  # starts then ends (end exclusive), model-input pixels: y0, x0, y1, x1 in 2-D

# Aggregating many classes at once is done in chunks to bound memory: prod(size + 1) * chunk float64.
_CLASS_CHUNK = 64
_AGGREGATE_BYTES = 256 << 20


def window_starts(length: int, patch: int, stride: int, lo: int = 0) -> np.ndarray:
    """Start offsets along one axis of [lo, lo + length): every ``stride``, plus a final window flush
    with the end when the stride does not land on it, so that every position is covered."""
    if stride < 1:
        raise OccludeError(f"stride must be at least 1, got {stride}", params=("stride",))
    if patch < 1:
        raise OccludeError(f"patch must be at least 1, got {patch}", params=("patch",))
    if patch > length:
        raise OccludeError(f"patch ({patch}) is larger than the area to occlude ({length} pixels)", params=("patch",))
    if stride > patch:
        raise OccludeError(
            f"stride ({stride}) is larger than the patch ({patch}): some pixels would never be occluded",
            params=("stride",),
        )
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return np.asarray(starts, dtype=np.int64) + lo


def window_grid(
    size: Sequence[int],
    patch: Sequence[int],
    stride: Sequence[int],
    region: Optional[Box] = None,
) -> np.ndarray:
    """All windows of a sliding grid as an (N, 2d) int array (starts, then sizes), row-major order.

    ``size`` is the input's extent per spatial axis ((height, width) for images); ``region`` (the d
    starts then the d ends) restricts the grid to a box.
    """
    size = tuple(int(s) for s in size)
    d = len(size)
    if len(patch) != d or len(stride) != d:
        raise OccludeError(
            f"patch {tuple(patch)} and stride {tuple(stride)} need {d} values for a {d}-D input",
            params=(
                "patch",
                "stride",
            ),
        )
    lo, hi = (tuple(region[:d]), tuple(region[d:])) if region is not None else ((0,) * d, size)
    if len(hi) != d or not all(0 <= a < b <= s for a, b, s in zip(lo, hi, size)):
        raise OccludeError(
            f"region {region} is empty or outside the {'x'.join(map(str, size))} input", params=("region",)
        )
    starts = [window_starts(b - a, p, s, a) for a, b, p, s in zip(lo, hi, patch, stride)]
    grids = np.meshgrid(*starts, indexing="ij")
    n = grids[0].size
    columns = [g.ravel() for g in grids] + [np.full(n, int(p)) for p in patch]
    return np.stack(columns, axis=1).astype(np.int64)


def window_slice(window: Sequence[int], spatial_axes: Sequence[int], ndim: int) -> tuple:
    """The index expression selecting one window of a sample with ``ndim`` axes."""
    d = len(spatial_axes)
    index = [slice(None)] * ndim
    for axis, start, length in zip(spatial_axes, window[:d], window[d:]):
        index[axis] = slice(start, start + length)
    return tuple(index)


def check_scores(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != n:
        raise OccludeError(f"the score function must return (batch, classes); got shape {scores.shape} for batch {n}")
    return scores


def default_stride(patch: Sequence[int]) -> Tuple[int, ...]:
    """Half the patch (at least 1): every pixel is covered by about 2^d windows."""
    return tuple(max(1, int(p) // 2) for p in patch)


def check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise OccludeError(f"batch_size must be at least 1, got {batch_size}", params=("batch_size",))
    return int(batch_size)


def check_baseline(inputs: np.ndarray, baseline, batch_size: int) -> np.ndarray:
    """The baseline as an array of the input's dtype, after checking its shape and the batch size."""
    baseline = np.asarray(baseline, dtype=inputs.dtype)
    if baseline.shape != inputs.shape:
        raise OccludeError(
            f"baseline shape {baseline.shape} differs from input shape {inputs.shape}", params=("baseline",)
        )
    check_batch_size(batch_size)
    return baseline


def spatial_axes_of(inputs: np.ndarray, spatial_axes: Sequence[int]) -> Tuple[int, ...]:
    """The spatial axes as distinct non-negative indices."""
    axes = tuple(int(a) % inputs.ndim for a in spatial_axes)
    if len(set(axes)) != len(axes) or not axes:
        raise OccludeError(
            f"spatial_axes {tuple(spatial_axes)} must name distinct axes of a {inputs.ndim}-D input",
            params=("spatial_axes",),
        )
    return axes


def spatial_size(inputs: np.ndarray, spatial_axes: Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The spatial axes as non-negative indices, and the extent they span."""
    axes = spatial_axes_of(inputs, spatial_axes)
    return axes, tuple(int(inputs.shape[a]) for a in axes)


def score_perturbations(
    inputs: np.ndarray,
    count: int,
    perturb: PerturbFn,
    score: ScoreFn,
    *,
    batch_size: int = 32,
    progress: Optional[ProgressFn] = None,
) -> np.ndarray:
    """The one batched perturbation loop: scores of ``count`` perturbed copies of ``inputs``, (count,
    classes) float64.

    A buffer of ``batch_size`` rows, each initialised to a copy of ``inputs``, is reused for every batch;
    ``perturb(buffer, row, i)`` turns ``buffer[row]`` into the i-th perturbed input. Rows keep what the
    previous perturbation left in them, so a perturbation may undo only what it changed (windows: two slice
    copies per row) or overwrite the whole row (cumulative curves). Perturbations are made in order 0..count-1.
    """
    inputs = np.asarray(inputs)
    batch_size = check_batch_size(batch_size)
    rows = min(batch_size, max(count, 1))
    buffer = np.empty((rows,) + inputs.shape, dtype=inputs.dtype)
    buffer[:] = inputs
    result: Optional[np.ndarray] = None
    for start in range(0, count, rows):
        n = min(rows, count - start)
        for row in range(n):
            perturb(buffer, row, start + row)
        scores = check_scores(score(buffer[:n]), n)
        if result is None:
            result = np.empty((count, scores.shape[1]), dtype=np.float64)
        elif scores.shape[1] != result.shape[1]:
            raise OccludeError("the score function returned a different number of classes for different batches")
        result[start : start + n] = scores
        if progress is not None:
            progress(start + n, count)
    if result is None:
        raise OccludeError("nothing to score: no perturbations")
    return result


def score_windows(
    inputs: np.ndarray,
    baseline: np.ndarray,
    windows: np.ndarray,
    score: ScoreFn,
    *,
    batch_size: int = 32,
    spatial_axes: Sequence[int] = (-2, -1),
    progress: Optional[ProgressFn] = None,
) -> np.ndarray:
    """Scores of the input with each window replaced by the baseline: (N, classes), float64.

    Each buffer row restores only the previous window it held and writes the new one, so the cost per
    window is two slice copies. ``baseline`` is an array like ``inputs`` or a callable ``window -> values``
    for baselines that depend on the window (inpainting): it returns the window's contents.
    """
    inputs = np.asarray(inputs)
    fill = baseline if callable(baseline) else None  # a per-window baseline (e.g. inpainting): window -> values
    baseline = check_baseline(inputs, np.zeros_like(inputs) if fill else baseline, batch_size)
    axes = spatial_axes_of(inputs, spatial_axes)
    windows = np.asarray(windows, dtype=np.int64)
    if len(windows) == 0:
        raise OccludeError("no windows to occlude")
    if windows.ndim != 2 or windows.shape[1] != 2 * len(axes):
        raise OccludeError(f"windows must be (N, {2 * len(axes)}) for {len(axes)} spatial axes, got {windows.shape}")
    plain = windows.tolist()  # plain ints: cheaper slices than numpy scalars
    written: dict = {}

    def occlude(buffer: np.ndarray, row: int, i: int) -> None:
        previous = written.get(row)
        if previous is not None:
            buffer[(row,) + previous] = inputs[previous]
        index = window_slice(plain[i], axes, inputs.ndim)
        buffer[(row,) + index] = fill(plain[i]) if fill is not None else baseline[index]
        written[row] = index

    return score_perturbations(inputs, len(plain), occlude, score, batch_size=batch_size, progress=progress)


def accumulate_windows(windows: np.ndarray, values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Sum each window's value over the pixels it covers: (K, *size) from (N, K) values.

    Uses a d-dimensional difference array (2^d corner updates per window, then one cumulative sum per
    axis), so the cost is O(N K 2^d + prod(size) K) instead of O(N K prod(window)).
    """
    size = tuple(int(s) for s in size)
    d = len(size)
    values = np.asarray(values, dtype=np.float64)
    windows = np.asarray(windows, dtype=np.int64)
    diff = np.zeros(tuple(s + 1 for s in size) + (values.shape[1],), dtype=np.float64)
    starts, lengths = windows[:, :d], windows[:, d:]
    for corner in itertools.product((0, 1), repeat=d):
        index = tuple(starts[:, a] + corner[a] * lengths[:, a] for a in range(d))
        np.add.at(diff, index, values if sum(corner) % 2 == 0 else -values)
    total = diff
    for axis in range(d):
        total = np.cumsum(total, axis=axis)
    total = total[tuple(slice(0, s) for s in size)]
    return np.moveaxis(total, -1, 0)


@dataclass(frozen=True)
class Occlusion:
    """Every window's scores for every class: maps for any class derive from it at no extra inference."""

    windows: np.ndarray  # (N, 2d) int: starts then sizes, model-input pixels (y, x, h, w in 2-D)
    original_scores: np.ndarray  # (classes,) scores of the unoccluded input
    window_scores: np.ndarray  # (N, classes) scores with each window occluded
    size: Tuple[int, ...]  # extent of the input per spatial axis ((height, width) for images)
    forward_passes: int  # inputs sent to the score function, the original included
    measured: Optional[np.ndarray] = None  # (N,) bool: False for windows whose scores were interpolated

    def __repr__(self) -> str:
        """Short (a notebook prints it): the counts, never the arrays."""
        measured = "" if self.measured is None else f", measured={int(np.count_nonzero(self.measured))}"
        return (
            f"Occlusion(windows={len(self.windows)}{measured}, classes={self.num_classes}, "
            f"size={tuple(int(s) for s in self.size)}, forward_passes={self.forward_passes})"
        )

    @property
    def num_classes(self) -> int:
        return int(self.original_scores.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.size)

    def drops(self, classes: Optional[Iterable[int]] = None) -> np.ndarray:
        """(N, K) score drops ``original - occluded``; positive means the window mattered for the class."""
        if classes is None:
            return self.original_scores[None, :] - self.window_scores
        idx = np.asarray(list(classes), dtype=np.int64)
        return self.original_scores[None, idx] - self.window_scores[:, idx]

    def coverage_count(self) -> np.ndarray:
        """Number of windows covering each pixel, shaped like the input's spatial extent."""
        return accumulate_windows(self.windows, np.ones((len(self.windows), 1)), self.size)[0]

    def attribution(self, target: int) -> np.ndarray:
        """Signed map for one class; NaN where no window was placed (outside a region)."""
        return self.attributions([target])[0]

    def _class_chunk(self) -> int:
        cells = int(np.prod([s + 1 for s in self.size])) * 8
        return max(1, min(_CLASS_CHUNK, _AGGREGATE_BYTES // max(cells, 1)))

    def attributions(self, classes: Optional[Sequence[int]] = None, dtype=np.float64) -> np.ndarray:
        """``(K, *size)`` signed maps for the given classes (all classes if None), NaN where not covered.

        A window whose score is NaN (a model that returned NaN) contributes NaN only to the pixels it covers.
        """
        classes = list(range(self.num_classes)) if classes is None else [int(c) for c in classes]
        for c in classes:
            if not 0 <= c < self.num_classes:
                raise OccludeError(f"class index {c} is out of range: the model has {self.num_classes} classes")
        count = self.coverage_count()
        covered = count > 0
        out = np.empty((len(classes),) + tuple(self.size), dtype=dtype)
        chunk = self._class_chunk()
        for start in range(0, len(classes), chunk):
            part = classes[start : start + chunk]
            drops = self.drops(part)
            bad = ~np.isfinite(drops)
            if bad.any():
                sums = accumulate_windows(self.windows, np.where(bad, 0.0, drops), self.size)
                poisoned = accumulate_windows(self.windows, bad.astype(np.float64), self.size) > 0
                sums[poisoned] = np.nan
            else:
                sums = accumulate_windows(self.windows, drops, self.size)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + len(part)] = np.where(covered, sums / count, np.nan)
        return out

    def top_class_map(self) -> np.ndarray:
        """The class most often predicted top-1 when a window covering the pixel is occluded
        (ties: lowest index); -1 where not covered."""
        top = np.argmax(np.nan_to_num(self.window_scores, nan=-np.inf), axis=1)
        classes = np.unique(top)
        votes = accumulate_windows(self.windows, (top[:, None] == classes[None, :]).astype(np.float64), self.size)
        result = classes[np.argmax(votes, axis=0)]
        return np.where(self.coverage_count() > 0, result, -1)


def occlusion_sensitivity(
    inputs: np.ndarray,
    score: ScoreFn,
    *,
    patch: Sequence[int],
    stride: Optional[Sequence[int]] = None,
    baseline: Optional[np.ndarray] = None,
    spatial_axes: Sequence[int] = (-2, -1),
    batch_size: int = 32,
    region: Optional[Box] = None,
    windows: Optional[np.ndarray] = None,
    progress: Optional[ProgressFn] = None,
    original_scores: Optional[np.ndarray] = None,
    scorer: Optional[Callable[..., np.ndarray]] = None,
) -> Occlusion:
    """Occlude ``inputs`` (one sample, no batch axis) window by window and score every occluded copy.

    ``patch`` and ``stride`` have one value per spatial axis (stride defaults to half the patch);
    ``baseline`` defaults to zeros; ``windows`` (N, 2d) replaces the grid when given.
    ``original_scores``: the unoccluded input's scores when the caller already has them (explain() does:
    it scores the input once to inspect the output), saving a forward pass; the pass is still counted in
    ``forward_passes``. ``scorer``: a drop-in replacement of :func:`score_windows` (same signature), for
    executors that score windows elsewhere (in parallel, incrementally); the aggregation stays here.
    """
    inputs = np.asarray(inputs)
    axes, size = spatial_size(inputs, spatial_axes)
    if baseline is None:
        baseline = np.zeros_like(inputs)
    if windows is None:  # (a callable baseline fills each window itself: see score_windows)
        windows = window_grid(size, patch, stride or default_stride(patch), region)
    if original_scores is None:
        original = check_scores(score(inputs[None]), 1)[0].astype(np.float64)
    else:
        original = np.asarray(original_scores, dtype=np.float64).reshape(-1)
    scores = (scorer or score_windows)(
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
