"""The self-check every incremental plan passes before it scores a window, whether just built or read from the
cache: crop outputs against the whole tensor, and end to end the explained score's drop against full passes
on one window of each position class (corners, edges, middle), held to float noise (exact plans) or measured
(approximate plans, which say by how much)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from occlude_cli.errors import OccludeError

from .exactness import IncrementalUnavailable

_ALL = slice(None)


def _slices(axes: Tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> tuple:
    """An index tuple for one sample (no batch axis) whose spatial axes are ``axes``: rows y0:y1, columns x0:x1
    (the axes after the last spatial one are taken whole)."""
    if axes == (1, 2):  # NCHW without its batch axis: most calls (tens of thousands per set of windows)
        return (_ALL, slice(y0, y1), slice(x0, x1))
    index = [_ALL] * (max(axes) + 1)
    index[axes[0]] = slice(y0, y1)
    index[axes[1]] = slice(x0, x1)
    return tuple(index)


def _check_windows(extent: Tuple[int, int], window: Tuple[int, int]) -> np.ndarray:
    """Windows at every position class: the four corners, the four border middles and the centre, plus
    some off the stride grid."""
    h, w = min(window[0], extent[0]), min(window[1], extent[1])
    ys = sorted({0, (extent[0] - h) // 2, extent[0] - h, max(0, min(extent[0] - h, 3))})
    xs = sorted({0, (extent[1] - w) // 2, extent[1] - w, max(0, min(extent[1] - w, 5))})
    return np.asarray([(y, x, h, w) for y in ys for x in xs], dtype=np.int64)


def _compared_windows(windows: np.ndarray) -> np.ndarray:
    """One check window of each position class: the four corners, the four border middles, the centre, and
    the one nearest the centre off those rows and columns (fewer where the image is too small to tell them
    apart)."""

    def ends_and_middle(values: np.ndarray) -> List[int]:
        unique = np.unique(values)
        middle = unique[np.argmin(np.abs(unique - (unique[0] + unique[-1]) / 2))]
        return sorted({int(unique[0]), int(middle), int(unique[-1])})

    ys, xs = windows[:, 0], windows[:, 1]
    rows_y, rows_x = ends_and_middle(ys), ends_and_middle(xs)
    chosen = np.isin(ys, rows_y) & np.isin(xs, rows_x)
    rows = np.flatnonzero(chosen).tolist()
    off_grid = ~np.isin(ys, rows_y) & ~np.isin(xs, rows_x)
    if off_grid.any():
        centre = np.abs(ys - (ys.min() + ys.max()) / 2) + np.abs(xs - (xs.min() + xs.max()) / 2)
        rows.append(int(np.argmin(np.where(off_grid, centre, np.inf))))
    return windows[sorted(set(rows))]


def _occluded_batch(sample: np.ndarray, baseline: np.ndarray, windows: np.ndarray, axes: Tuple[int, int]) -> np.ndarray:
    """Full occluded copies of one sample (the plain engine's batch), ``axes`` counted with the batch axis."""
    batch = np.repeat(sample[None], len(windows), axis=0)
    for i, (y, x, h, w) in enumerate(np.asarray(windows).tolist()):
        index = _slices((axes[0] - 1, axes[1] - 1), y, y + h, x, x + w)
        batch[i][index] = baseline[index]
    return batch


class _FullModel:
    """The unsplit model: reference outputs for the self-check and the time to beat. A model pinned to a batch
    of N > 1 gets its batches split and padded to N (as the engine's model does); one pinned to batch 1, or
    whose graph needs it, one sample at a time."""

    def __init__(self, session, input_name: str, output_name: str):
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.batched = True
        self.fixed: Optional[int] = None
        try:
            declared = next(i for i in session.get_inputs() if i.name == input_name).shape[0]
            self.fixed = declared if isinstance(declared, int) and declared > 1 else None
        except (AttributeError, StopIteration, IndexError, TypeError):
            pass

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed:
            n, parts = self.fixed, []
            for start in range(0, len(batch), n):
                part = batch[start : start + n]
                padded = np.concatenate([part, np.repeat(part[-1:], n - len(part), axis=0)]) if len(part) < n else part
                parts.append(np.asarray(self._run(padded))[: len(part)])
            out = np.concatenate(parts)
        else:
            if self.batched:
                try:
                    out = self._run(batch)
                except Exception:  # noqa: BLE001 -- a model pinned to batch 1: one sample at a time, as the engine does
                    self.batched = False
            if not self.batched:
                out = np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
        out = np.asarray(out)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        return out


# The self-check's tolerance for exact plans: the largest difference of the explained score's drop between the
# plan and full passes, relative to the largest drop on the checked windows (float32 noise: 3e-6 to 1.5e-5 of it
# on EfficientNet-Lite0 and the sample photos, patches 16 to 48) ...
CHECK_TOLERANCE = 1e-4


# ... or, for a model whose drops are tiny next to its outputs (random weights: up to 1.2e-4 of the largest drop),
# no more than float32 noise of the outputs themselves: what the explained score does when the raw outputs move
# by this share of their largest magnitude in the worst direction (plans measured 2e-7 to 6e-7)
OUTPUT_NOISE = 1e-6


# Crops of an approximate plan (a graph that rounds coarsely) may differ from the whole tensor by a few rounding
# steps; more than this share of the tensor's largest magnitude means wrong geometry, not rounding.
_APPROXIMATE_CROP_TOLERANCE = 5e-2


def _identity(raw: np.ndarray) -> np.ndarray:
    return np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)


@dataclass
class _CheckSpec:
    """What the self-check compares (see :class:`_SelfCheck`)."""

    score: Any  # raw outputs (N, K) -> scores (N, K), or None for the raw outputs
    target: Optional[int]
    tolerance: float
    approximate: bool

    def check(self, full, sample, baseline, input_extent, window, input_axes) -> _SelfCheck:
        return _SelfCheck(
            full,
            sample,
            baseline,
            input_extent,
            window,
            input_axes,
            self.tolerance,
            score=self.score,
            target=self.target,
            approximate=self.approximate,
        )


class _SelfCheck:
    """The self-check every plan passes before it scores a window, whether just built or read from the cache.

    1. On windows of every position class (corners, borders, interior, off the stride grid), each prefix part
       run on crops with nothing occluded reproduces the same slice of the whole tensor.
    2. End to end, in the map's own units: on one window of each position class (the four corners, the four
       border middles, the centre and one off the grid), with the baseline pasted in, the explained score's
       drop (``score``: the head's softmax or sigmoid of the raw outputs; ``target``: the explained class,
       default the top-1) computed by the plan equals the drop computed by full passes to CHECK_TOLERANCE of
       the largest drop among those windows, or to float32 noise of the outputs (OUTPUT_NOISE) where the
       drops are tiny next to them. One window's drop off by one quantisation step is caught however small
       that step is next to the logits.

    ``approximate`` (a graph :func:`inexact_arithmetic` rules out): the crops only have to be right to a few
    rounding steps (wrong geometry is still refused) and the end-to-end error is measured, not refused.
    """

    def __init__(
        self,
        full,
        sample,
        baseline,
        input_extent,
        window,
        input_axes,
        tolerance: float,
        *,
        score=None,
        target: Optional[int] = None,
        approximate: bool = False,
    ):
        self.full = full
        self.sample = sample
        self.baseline = baseline
        self.tolerance = tolerance
        self.approximate = approximate
        self.window = (min(int(window[0]), input_extent[0]), min(int(window[1]), input_extent[1]))
        self.windows = _check_windows(input_extent, self.window)
        self.compared = _compared_windows(self.windows)
        self.score = score or _identity
        try:
            original = np.asarray(self.score(full.run(sample[None])), dtype=np.float64)[0]
            raw = full.run(_occluded_batch(sample, baseline, self.compared, input_axes))
            reference = np.asarray(self.score(raw), dtype=np.float64)
        except OccludeError:
            raise
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's own error types, as one line
            raise IncrementalUnavailable(f"the whole model failed on the self-check's inputs: {_first(exc)}") from None
        self.target = int(np.argmax(original)) if target is None else int(target)
        if not 0 <= self.target < original.shape[-1]:
            raise OccludeError(f"target {self.target} is not a class of the model's {original.shape[-1]} outputs")
        self.original = original[self.target]
        self.drops = self.original - reference[:, self.target]
        self.floor = self._noise(raw)

    def _noise(self, raw: np.ndarray) -> float:
        """How far the explained score moves when every raw output moves by OUTPUT_NOISE of the largest one,
        the target's one way and the others the other (the worst direction for a softmax), on these windows."""
        raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
        step = OUTPUT_NOISE * float(np.max(np.abs(raw)))
        push = np.full(raw.shape[1], -step)
        push[self.target] = step
        here = np.asarray(self.score(raw), dtype=np.float64)[:, self.target]
        moved = [np.asarray(self.score(raw + sign * push), dtype=np.float64)[:, self.target] for sign in (1, -1)]
        return float(max(np.max(np.abs(m - here)) for m in moved))

    def _difference(self, scorer) -> float:
        """The plan's largest drop difference from full passes on the compared windows, in score units."""
        compared = self.compared
        try:
            got = scorer.score_windows(self.sample, self.baseline, compared, batch_size=len(compared))
        except Exception:  # noqa: BLE001 -- onnxruntime's own error types
            scorer.suffix_batched = False  # a suffix pinned to batch 1 (a Reshape to [1, K], ...)
            got = scorer.score_windows(self.sample, self.baseline, compared, batch_size=len(compared))
        drops = self.original - np.asarray(self.score(got), dtype=np.float64)[:, self.target]
        return float(np.max(np.abs(drops - self.drops)))

    def _relative(self, difference: float) -> float:
        largest = float(np.max(np.abs(self.drops)))
        if difference == 0.0:
            return 0.0
        return difference / largest if largest > 0 else float("inf")

    def error(self, scorer) -> float:
        """The plan's largest drop difference on the compared windows, relative to the largest drop there."""
        return self._relative(self._difference(scorer))

    def run(self, scorer) -> None:
        crops = scorer.check_crops(self.sample, self.windows)
        limit = max(self.tolerance, _APPROXIMATE_CROP_TOLERANCE) if self.approximate else self.tolerance
        if not crops <= limit:
            raise IncrementalUnavailable(
                f"self-check failed: crops differ from the whole tensor by {crops:.2e} (relative)"
            )
        difference = self._difference(scorer)
        error = self._relative(difference)
        if not self.approximate and not (error <= self.tolerance or difference <= self.floor):
            raise IncrementalUnavailable(
                f"self-check failed: the explained score's drop differs from full passes by {error:.2e} of the "
                f"largest drop on {len(self.compared)} windows"
            )
        if not np.isfinite(difference):
            raise IncrementalUnavailable("self-check failed: the plan's outputs are not finite where full passes are")
        scorer.check_error = error
        scorer.check_windows = len(self.compared)
        scorer.exact = not self.approximate
        scorer.window = self.window


def _tolerance(tolerance: Optional[float]) -> float:
    """The self-check's tolerance: ``tolerance`` when given, else :data:`CHECK_TOLERANCE`."""
    return CHECK_TOLERANCE if tolerance is None else float(tolerance)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
