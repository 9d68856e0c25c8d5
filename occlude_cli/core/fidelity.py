"""Fidelity metrics for attribution maps, with occlusion as the causal yardstick: pure numpy, no files.

Three metrics judge *any* attribution map (occlusion's own, Integrated Gradients, Grad-CAM, ...) against
the model's measured behaviour:

* **Infidelity** (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019): how well
  the map predicts the score drop of each occlusion window. It reuses the drops an occlusion run already
  measured, so it costs no forward pass. Lower is better.
* **Sufficiency**: keep only the map's top-k% pixels (the rest become the baseline): how much score is left?
  Higher kept fraction is better.
* **Completeness** (close to ERASER's comprehensiveness, DeYoung et al., ACL 2020): occlude only the top-k%
  pixels: does the score fall as far as when everything is occluded? Higher removed fraction is better.

Sufficiency and completeness cost one forward pass per k. Both go through :func:`score_masked`, the one
generic batched perturbation loop: it scores the input with any list of pixel masks replaced by the
baseline. Occlusion windows, deletion / insertion steps and top-k sets are all such masks.

Conventions (shared with the other metrics): a map is a float array of the input's spatial shape ((H, W)
for images, (D, H, W) for volumes; windows are then (N, 4) y, x, h, w or (N, 6) z, y, x, d, h, w, as the
engine's), NaN marks a pixel that was not computed; orderings are deterministic (stable, by descending
value then row-major index, NaN last); an undefined result is NaN rather than an exception.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Callable, NamedTuple

import numpy as np

from ..errors import OccludeError
from .engine import score_perturbations
from .metrics import DEFAULT_STEPS, importance_order, unit_scaled

ScoreFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]
PerturbFn = Callable[[np.ndarray, int, int], None]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
_BOOTSTRAP_CHUNK = 4_000_000  # resampled values held in memory at once by bootstrap_mean_ci


# ------------------------------------------------------------------------------------------ helpers


def _spatial_axes(ndim: int, spatial_axes: Sequence[int], name: str) -> tuple[int, ...]:
    """``spatial_axes`` as distinct non-negative axes of an ``ndim``-D array (two for images, three for
    volumes)."""
    try:
        axes = tuple(int(a) for a in spatial_axes)
    except (TypeError, ValueError):
        raise OccludeError(f"spatial_axes must be a sequence of integers, got {spatial_axes!r}") from None
    if not axes or any(not -ndim <= a < ndim for a in axes) or len({a % ndim for a in axes}) != len(axes):
        raise OccludeError(f"spatial_axes {spatial_axes} must name distinct axes of the {ndim}-D {name}")
    return tuple(a % ndim for a in axes)


def _to_spatial(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Sum over every non-spatial axis (channels): a float64 array of the spatial shape (NaN in any channel
    of a pixel makes the pixel NaN)."""
    d = len(axes)
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), axes, tuple(range(-d, 0)))
    return moved.reshape((-1,) + moved.shape[-d:]).sum(axis=0)


def _check_windows(windows, size: tuple[int, ...]) -> np.ndarray:
    d = len(size)
    what = f"windows must be an (N, {2 * d}) integer array of {d} starts then {d} sizes"
    try:
        w = np.asarray(windows)
    except (TypeError, ValueError):
        raise OccludeError(what) from None
    if w.ndim != 2 or w.shape[1] != 2 * d or (w.size and w.dtype.kind not in "iu"):
        raise OccludeError(f"{what} (y, x, h, w for images), got shape {w.shape} dtype {w.dtype}")
    w = w.astype(np.int64)
    starts, sizes = w[:, :d], w[:, d:]
    bad = np.any((starts < 0) | (sizes < 1) | (starts + sizes > np.asarray(size)), axis=1)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        shape = "x".join(str(n) for n in size)
        raise OccludeError(f"windows[{i}] = {w[i].tolist()} is empty or outside the {shape} map")
    return w


def window_sums(values: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Sum of a d-D array over each window (d starts then d sizes: y, x, h, w for images), by a summed-area
    table: O(size + N 2^d).

    The table is float64 with a zero first slice along every axis, so a window's sum is 2^d lookups
    (inclusion-exclusion over its corners; for images ``S[y+h, x+w] - S[y, x+w] - S[y+h, x] + S[y, x]``).
    ``values`` must be finite.
    """
    values = np.asarray(values, dtype=np.float64)
    d = values.ndim
    table = np.zeros(tuple(n + 1 for n in values.shape), dtype=np.float64)
    inner = values
    for axis in range(d):
        inner = np.cumsum(inner, axis=axis)
    table[(slice(1, None),) * d] = inner
    starts, ends = windows[:, :d], windows[:, :d] + windows[:, d:]
    total = np.zeros(len(windows), dtype=np.float64)
    for corner in itertools.product((0, 1), repeat=d):  # 1: the window's end on that axis, 0: its start
        index = tuple(ends[:, a] if c else starts[:, a] for a, c in enumerate(corner))
        sign = -1.0 if (d - sum(corner)) % 2 else 1.0
        total += sign * table[index]
    return total


top_k_order = importance_order  # the deletion curves' order: the top-k set of a map is always the same pixels


def faithfulness_forward_passes(
    pixels: int, steps: int = DEFAULT_STEPS, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> int:
    """Forward passes of ``faithfulness`` (what ``run --metrics`` adds per map) on an input of ``pixels``
    pixels: the deletion and the insertion curve (``min(steps, pixels) + 1`` each), the sufficiency and the
    completeness curve (one per fraction each) and the all-baseline input they share."""
    return 2 * (min(int(steps), int(pixels)) + 1) + 2 * len(tuple(fractions)) + 1


def pixel_counts(pixels: int, fractions: Sequence[float]) -> np.ndarray:
    """Pixels in each top-k set: round(fraction * pixels) half up, at least 1."""
    f = np.asarray(fractions, dtype=np.float64).ravel()
    if f.size == 0:
        raise OccludeError("fractions must hold at least one value")
    if not np.all((f > 0) & (f <= 1)):
        raise OccludeError(f"fractions must lie in (0, 1], got {f.tolist()}")
    if np.any(np.diff(f) <= 0):
        raise OccludeError(f"fractions must be strictly increasing, got {f.tolist()}")
    return np.maximum(1, np.floor(f * pixels + 0.5)).astype(np.int64)


# --------------------------------------------------------------------------------------- infidelity


class InfidelityResult(NamedTuple):
    """Infidelity and what it was computed from.

    ``value``: mean over the used windows of ``(scale * explained - drop)^2`` (NaN if no window is usable);
    ``scale``: 1, or the fitted beta of the scale-invariant variant; ``used`` / ``skipped``: windows taken /
    left out (touching a NaN pixel of the map, or a non-finite drop); ``explained``: (N,) the map's
    predicted drop per window, NaN for skipped windows; ``null_value``: mean of drop^2 over the used
    windows, the infidelity of an all-zero map. A map is informative only below it, and for the
    scale-invariant variant ``value / null_value = 1 - cos^2(explained, drops)`` is unit-free: the share of
    the drops the map leaves unexplained, comparable across images.
    """

    value: float
    scale: float
    used: int
    skipped: int
    explained: np.ndarray
    null_value: float

    @property
    def unexplained(self) -> float:
        """``value / null_value`` (NaN when every drop is 0)."""
        return self.value / self.null_value if self.null_value > 0 else float("nan")


def infidelity_result(
    attribution,
    windows,
    drops,
    *,
    perturbation=None,
    scale_invariant: bool = False,
    spatial_axes: Sequence[int] = (-2, -1),
) -> InfidelityResult:
    """Infidelity of an attribution map with occlusion windows as the perturbations, with its details.

    See :func:`infidelity` for the definition; this returns the fitted scale and how many windows were used
    and skipped as well, which a report must show next to the value.
    """
    attribution = np.asarray(attribution, dtype=np.float64)
    if perturbation is None:
        axes = _spatial_axes(attribution.ndim, spatial_axes, "attribution")
        explanation = _to_spatial(attribution, axes)  # attribution-style map: summed over channels
    else:
        perturbation = np.asarray(perturbation, dtype=np.float64)
        axes = _spatial_axes(perturbation.ndim, spatial_axes, "perturbation")
        spatial = tuple(perturbation.shape[a] for a in axes)
        if attribution.shape == spatial and perturbation.ndim > len(axes):  # one value per pixel, all channels
            shape = [1] * perturbation.ndim
            for axis, n in zip(axes, spatial):
                shape[axis] = n
            attribution = attribution.reshape(shape)
        elif attribution.shape != perturbation.shape:
            raise OccludeError(
                f"attribution shape {attribution.shape} differs from perturbation shape {perturbation.shape} "
                "(give an input-shaped attribution or one value per pixel)"
            )
        with np.errstate(invalid="ignore", over="ignore"):
            explanation = _to_spatial(attribution * perturbation, axes)  # gradient-style: <map, input - baseline>
    size = explanation.shape
    w = _check_windows(windows, size)
    d = np.asarray(drops, dtype=np.float64)
    if d.ndim == 2 and d.shape[1] == 1:
        d = d[:, 0]
    if d.shape != (len(w),):
        raise OccludeError(f"drops must be one value per window: shape ({len(w)},), got {d.shape}")
    if len(w) == 0:
        raise OccludeError("windows is empty: infidelity needs at least one perturbation")

    missing = ~np.isfinite(explanation)
    unit, factor = unit_scaled(np.where(missing, 0.0, explanation))  # sums in range for maps in any unit
    explained = window_sums(unit, w)
    touched = window_sums(missing.astype(np.float64), w) > 0.5  # counts are exact integers in float64
    usable = ~touched & np.isfinite(d)
    explained[~usable] = np.nan
    used = int(usable.sum())
    if used == 0:
        return InfidelityResult(float("nan"), float("nan"), 0, len(w), explained, float("nan"))
    a, b = explained[usable], d[usable]  # a: the window sums of the map divided by factor
    if scale_invariant:  # the least-squares fit on the unit-scaled sums: the same fit, no overflow
        denominator = float(np.dot(a, a))
        unit_scale = float(np.dot(a, b)) / denominator if denominator != 0 else 0.0  # as Captum's safe_div
        scale = unit_scale / factor
    else:
        unit_scale, scale = factor, 1.0
    with np.errstate(over="ignore", invalid="ignore"):  # a map in huge units, unscaled, is inf: said as such
        value = float(np.mean((unit_scale * a - b) ** 2))
        explained = explained * factor
    return InfidelityResult(value, scale, used, len(w) - used, explained, float(np.mean(b**2)))


def infidelity(
    attribution,
    windows,
    drops,
    *,
    perturbation=None,
    scale_invariant: bool = False,
    spatial_axes: Sequence[int] = (-2, -1),
) -> float:
    """Infidelity (Yeh et al. 2019) of an attribution map, the occlusion windows being the perturbations.

    For window i with measured drop ``d_i = score(input) - score(input with window i set to the baseline)``
    (``Occlusion.drops`` of the target class, already computed by an occlusion run: no forward pass here)::

        explained_i = sum over the window's pixels of attribution                    (perturbation=None)
        explained_i = sum over the window's pixels of attribution * perturbation     (gradient-style)
        infidelity  = mean_i (scale * explained_i - d_i) ** 2

    * ``attribution``: an (H, W) map, or an input-shaped array (channels are summed) whose ``spatial_axes``
      are the map's; volumes work the same with three spatial axes and (N, 6) windows. Attribution-style maps
      (occlusion, Integrated Gradients, Grad-CAM, SHAP: each pixel's
      share of the score) are compared as they are. Gradient-style maps (saliency, raw gradients) predict a
      drop only once multiplied by the change of the input: pass ``perturbation = input - baseline``
      (input-shaped); the product is summed over channels. This is Yeh et al.'s ``I^T Phi`` with
      ``I = (input - baseline) * window``, and equals Captum's ``infidelity`` with a perturbation function
      returning the occluded inputs, decorated with ``multiply_by_inputs=True`` for attribution-style maps
      and ``False`` for gradient-style ones.
    * ``scale_invariant=False``: scale = 1. ``True``: the map is first rescaled by the least-squares
      ``beta = <explained, d> / <explained, explained>`` (0 when every explained_i is 0), as Yeh et al.'s
      official code and Captum's ``normalize=True`` do, so maps in other units (gradients, 0..255 PNGs,
      normalised heatmaps) can be compared; a negative beta means the map is anti-correlated with the drops.
      Computed directly as a mean of squares (Captum expands the square; the same value up to rounding).
    * Windows touching a NaN pixel of the map (not computed) and windows with a non-finite drop are
      skipped; :func:`infidelity_result` reports how many. NaN if no window is usable.

    Cost: O(HW + N) with a summed-area table (:func:`window_sums`). **Lower is better**; 0 means the map predicts
    every window's
    drop exactly (the occlusion map itself is not 0: it averages overlapping windows). The value is in
    squared score units, so compare maps on the same model, image, windows and baseline.
    """
    return infidelity_result(
        attribution,
        windows,
        drops,
        perturbation=perturbation,
        scale_invariant=scale_invariant,
        spatial_axes=spatial_axes,
    ).value


# ------------------------------------------------------------------------- batched masked scoring


def mask_perturbation(image: np.ndarray, baseline: np.ndarray, masks: Sequence, axes: tuple[int, ...]) -> PerturbFn:
    """``perturb(buffer, row, i)`` for the batched loop: ``buffer[row]`` becomes ``image`` with ``masks[i]``'s
    pixels taken from ``baseline``.

    Each row remembers the boolean mask it holds and rewrites only the pixels whose state changes (all of
    them when more than a quarter do), so a sequence of sliding windows or deletion steps costs about what
    the engine's window loop costs. Float masks blend, ``image + m * (baseline - image)``, and are written in
    full.
    """
    d = len(axes)
    size = tuple(image.shape[a] for a in axes)
    mask_shape = [1] * image.ndim  # the mask on the spatial axes, 1 elsewhere: broadcasts over channels
    for a, n in zip(axes, size):
        mask_shape[a] = n
    last = tuple(range(-d, 0))
    image_s, baseline_s = np.moveaxis(image, axes, last), np.moveaxis(baseline, axes, last)  # views
    fresh = np.zeros(int(np.prod(size)), dtype=bool)
    held: dict = {}  # row -> flat boolean mask it holds; None after a float mask (unknown)

    def perturb(buffer: np.ndarray, row: int, i: int) -> None:
        m = np.asarray(masks[i])
        if m.shape != size:
            raise OccludeError(f"masks[{i}] has shape {m.shape}, expected the input's spatial shape {size}")
        target = buffer[row]
        if m.dtype != bool:
            if not np.all((m >= 0) & (m <= 1)):
                raise OccludeError(f"masks[{i}] must be boolean or hold values in [0, 1]")
            target[...] = image + m.reshape(mask_shape) * (baseline.astype(np.float64) - image)
            held[row] = None
            return
        flat = m.ravel()
        before = held.get(row, fresh)
        changed = None if before is None else np.flatnonzero(before ^ flat)
        if changed is None or len(changed) > flat.size // 4:
            np.copyto(target, image)
            np.copyto(target, baseline, where=m.reshape(mask_shape))
        elif len(changed):  # only the pixels whose state changed: two windows' worth for a sliding window
            index = (Ellipsis,) + np.unravel_index(changed, size)
            np.moveaxis(target, axes, last)[index] = np.where(flat[changed], baseline_s[index], image_s[index])
        held[row] = flat.copy()

    return perturb


def score_masked(
    image: np.ndarray,
    baseline: np.ndarray,
    masks: Sequence[np.ndarray] | Iterable[np.ndarray],
    score_fn: ScoreFn,
    *,
    spatial_axes: Sequence[int] = (-2, -1),
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Scores of ``image`` with each mask's pixels replaced by ``baseline``: (len(masks), classes) float64.

    ``image`` is one sample in model layout (no batch axis), ``baseline`` has its shape, ``spatial_axes``
    name its pixel axes (two for images, three for volumes). Each mask has the spatial shape: True takes the
    baseline's pixel, every channel together; a float mask in [0, 1] blends, ``(1 - m) * image + m *
    baseline``. ``masks`` is a sequence (a list, an (M, H, W) array, or any object with ``len`` and
    indexing that builds masks on demand); a one-shot iterator is read into a list first.

    One batched perturbation loop serves every perturbation that can be written as masks:

    * an occlusion window (y, x, h, w): True on ``[y:y+h, x:x+w]`` (same scores as ``score_windows``;
      test_fidelity checks it element-wise);
    * deletion step j: True on the first ``counts[j]`` pixels of the importance order; insertion: the
      complement;
    * sufficiency / completeness: True off / on the top-k set (:func:`sufficiency_curve`,
      :func:`completeness_curve`).

    ``progress(done, total)`` is called after each batch.
    """
    image = np.asarray(image)
    axes = _spatial_axes(image.ndim, spatial_axes, "image")
    baseline = np.asarray(baseline, dtype=image.dtype)
    if baseline.shape != image.shape:
        raise OccludeError(f"baseline shape {baseline.shape} differs from image shape {image.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise OccludeError(f"batch_size must be a positive integer, got {batch_size!r}")
    mask_list = list(masks)  # a list of references (no copy of the masks): sized and indexable
    perturb = mask_perturbation(image, baseline, mask_list, axes)
    return score_perturbations(image, len(mask_list), perturb, score_fn, batch_size=int(batch_size), progress=progress)


# ------------------------------------------------------------------ sufficiency and completeness


class TopKCurve(NamedTuple):
    """Scores after keeping (sufficiency) or occluding (completeness) the map's top-k pixels.

    ``fractions``: the requested k (share of all pixels); ``pixels``: the pixel count of each top-k set;
    ``scores``: target score with that set kept / occluded; ``original_score`` / ``baseline_score``: with
    nothing / everything occluded. ``relative``: the fraction of the score kept (sufficiency, ``(s_k -
    s_baseline) / (s_original - s_baseline)``) or removed (completeness, ``(s_original - s_k) / (s_original -
    s_baseline)``), NaN when the baseline scores like the original. ``aopc``: mean over k of the raw drop
    ``s_original - s_k`` (ERASER's aggregate; lower is better for sufficiency, higher for completeness).
    """

    kind: str
    fractions: np.ndarray
    pixels: np.ndarray
    scores: np.ndarray
    original_score: float
    baseline_score: float
    relative: np.ndarray
    aopc: float

    @property
    def mean_relative(self) -> float:
        """Mean of ``relative`` over k: a unit-free area, comparable across images and models."""
        return float(np.mean(self.relative))


def _top_k_curve(
    kind,
    image,
    baseline,
    attribution,
    score_fn,
    target,
    fractions,
    spatial_axes,
    batch_size,
    original_score,
    baseline_score,
    progress,
) -> TopKCurve:
    image = np.asarray(image)
    axes = _spatial_axes(image.ndim, spatial_axes, "image")
    size = tuple(image.shape[a] for a in axes)
    values = np.asarray(attribution, dtype=np.float64)
    if values.shape != size:
        raise OccludeError(f"attribution shape {values.shape} differs from the input's spatial shape {size}")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
        raise OccludeError(f"target must be a non-negative class index, got {target!r}")
    n = values.size
    counts = pixel_counts(n, fractions)
    rank = np.empty(n, dtype=np.int64)
    rank[top_k_order(values)] = np.arange(n)
    rank = rank.reshape(size)  # position of each pixel in the importance order

    masks = []  # True = occluded (baseline)
    if original_score is None:
        masks.append(np.zeros(size, dtype=bool))
    if baseline_score is None:
        masks.append(np.ones(size, dtype=bool))
    for k in counts:
        masks.append(rank >= k if kind == "sufficiency" else rank < k)
    scores = score_masked(image, baseline, masks, score_fn, spatial_axes=axes, batch_size=batch_size, progress=progress)
    if not target < scores.shape[1]:
        raise OccludeError(f"target {target} is out of range for {scores.shape[1]} classes")
    s = scores[:, target]
    i = 0
    if original_score is None:
        original_score, i = float(s[0]), i + 1
    if baseline_score is None:
        baseline_score, i = float(s[i]), i + 1
    s = s[i:]
    span = float(original_score) - float(baseline_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "sufficiency":
            relative = (s - baseline_score) / span if span != 0 else np.full(len(s), np.nan)
        else:
            relative = (original_score - s) / span if span != 0 else np.full(len(s), np.nan)
    return TopKCurve(
        kind,
        np.asarray(fractions, dtype=np.float64).ravel(),
        counts,
        s,
        float(original_score),
        float(baseline_score),
        relative,
        float(np.mean(original_score - s)),
    )


def sufficiency_curve(
    image: np.ndarray,
    baseline: np.ndarray,
    attribution,
    score_fn: ScoreFn,
    target: int,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    spatial_axes: Sequence[int] = (-2, -1),
    batch_size: int = 32,
    original_score: float | None = None,
    baseline_score: float | None = None,
    progress: ProgressFn | None = None,
) -> TopKCurve:
    """Sufficiency: keep only the map's top-k pixels, set every other pixel to the baseline, score.

    For each fraction f, the top ``round(f * H * W)`` pixels (descending value, ties in row-major order,
    NaN last) are kept. ``relative`` is the fraction of the score kept, ``(s_k - s_baseline) / (s_original -
    s_baseline)``: 1 when the top pixels alone keep the prediction (**higher is better**); it is measured
    from the all-baseline score, because a logit's plain ratio has no meaning. ``aopc`` is the mean raw drop
    ``s_original - s_k`` over k (ERASER's sufficiency; **lower is better**).

    Cost: one forward pass per fraction, plus one each for the original and the all-baseline input unless
    ``original_score`` / ``baseline_score`` are given; all in one batched loop (:func:`score_masked`).
    """
    return _top_k_curve(
        "sufficiency",
        image,
        baseline,
        attribution,
        score_fn,
        target,
        fractions,
        spatial_axes,
        batch_size,
        original_score,
        baseline_score,
        progress,
    )


def completeness_curve(
    image: np.ndarray,
    baseline: np.ndarray,
    attribution,
    score_fn: ScoreFn,
    target: int,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    spatial_axes: Sequence[int] = (-2, -1),
    batch_size: int = 32,
    original_score: float | None = None,
    baseline_score: float | None = None,
    progress: ProgressFn | None = None,
) -> TopKCurve:
    """Completeness: set only the map's top-k pixels to the baseline, score.

    Same top-k sets as :func:`sufficiency_curve`. ``relative`` is the drop relative to occluding
    everything, ``(s_original - s_k) / (s_original - s_baseline)``: 1 when the top pixels carry the whole
    prediction, near 0 when the map missed what matters (**higher is better**). ``aopc`` is the mean raw
    drop over k (ERASER's comprehensiveness; **higher is better**). Cost as for sufficiency.
    """
    return _top_k_curve(
        "completeness",
        image,
        baseline,
        attribution,
        score_fn,
        target,
        fractions,
        spatial_axes,
        batch_size,
        original_score,
        baseline_score,
        progress,
    )


# ------------------------------------------------------------------------------------ dataset level


def bootstrap_mean_ci(values, *, n: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-image values with a percentile-bootstrap confidence interval: (mean, lo, hi).

    ``n`` resamples (with replacement, same size) from a seeded generator, so the interval is reproducible.
    Non-finite values (undefined metrics) are left out; the caller should report how many. All NaN when no
    value is finite; lo = hi = mean for a single value. For "method A minus method B" pass the per-image
    differences (a paired bootstrap), not two separate intervals.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OccludeError(f"n (bootstrap resamples) must be a positive integer, got {n!r}")
    if not 0 < confidence < 1:
        raise OccludeError(f"confidence must be in (0, 1), got {confidence!r}")
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    step = max(1, _BOOTSTRAP_CHUNK // v.size)
    for start in range(0, n, step):
        rows = min(step, n - start)
        means[start : start + rows] = v[rng.integers(0, v.size, size=(rows, v.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(lo), float(hi)
