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

Conventions (shared with the other metrics): a map is an (H, W) float array, NaN marks a pixel that was
not computed; orderings are deterministic (stable, by descending value then row-major index, NaN last);
an undefined result is NaN rather than an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Callable, NamedTuple

import numpy as np

from occlude_cli.errors import OccludeError

ScoreFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int], None]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
_BOOTSTRAP_CHUNK = 4_000_000  # resampled values held in memory at once by bootstrap_mean_ci


# ------------------------------------------------------------------------------------------ helpers


def _spatial_axes(ndim: int, spatial_axes: tuple[int, int], name: str) -> tuple[int, int]:
    if ndim < 2:
        raise OccludeError(f"{name} must have at least two (spatial) axes, got {ndim}")
    try:
        axes = tuple(int(a) % ndim for a in spatial_axes)
    except (TypeError, ValueError):
        raise OccludeError(f"spatial_axes must be two integers, got {spatial_axes!r}") from None
    if len(axes) != 2 or axes[0] == axes[1]:
        raise OccludeError(f"spatial_axes {spatial_axes} must name two different axes of {name}")
    return axes  # type: ignore[return-value]


def _to_hw(array: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """Sum over every non-spatial axis: an (H, W) float64 array (NaN anywhere in a pixel stays NaN)."""
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), axes, (-2, -1))
    return moved.reshape((-1,) + moved.shape[-2:]).sum(axis=0)


def _check_windows(windows, size: tuple[int, int]) -> np.ndarray:
    try:
        w = np.asarray(windows)
    except (TypeError, ValueError):
        raise OccludeError("windows must be an (N, 4) integer array of (y, x, h, w)") from None
    if w.ndim != 2 or w.shape[1] != 4 or w.dtype.kind not in "iu":
        raise OccludeError(f"windows must be an (N, 4) integer array of (y, x, h, w), got shape {w.shape} "
                           f"dtype {w.dtype}")
    w = w.astype(np.int64)
    y, x, h, wd = w.T
    height, width = size
    bad = (y < 0) | (x < 0) | (h < 1) | (wd < 1) | (y + h > height) | (x + wd > width)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise OccludeError(f"windows[{i}] = {w[i].tolist()} is empty or outside the {height}x{width} map")
    return w


def window_sums(values: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Sum of an (H, W) array over each (y, x, h, w) window, by a summed-area table: O(HW + N).

    The table is float64 with a zero first row and column, so a window's sum is four lookups:
    ``S[y+h, x+w] - S[y, x+w] - S[y+h, x] + S[y, x]``. ``values`` must be finite.
    """
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(values, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    y, x, h, w = windows.T
    return table[y + h, x + w] - table[y, x + w] - table[y + h, x] + table[y, x]


def top_k_order(values) -> np.ndarray:
    """Flat (row-major) pixel indices from most to least important: descending value, ties in row-major
    order, NaN / inf last. Same rule as the deletion curves' ``importance_order``, so the top-k set of a
    map is always the same k pixels, whatever the sorting algorithm."""
    v = np.asarray(values, dtype=np.float64).ravel()
    missing = ~np.isfinite(v)
    return np.lexsort((np.where(missing, 0.0, -v), missing))  # stable; last key is the primary one


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
    predicted drop per window, NaN for skipped windows.
    """

    value: float
    scale: float
    used: int
    skipped: int
    explained: np.ndarray


def infidelity_result(
    attribution,
    windows,
    drops,
    *,
    perturbation=None,
    scale_invariant: bool = False,
    spatial_axes: tuple[int, int] = (-2, -1),
) -> InfidelityResult:
    """Infidelity of an attribution map with occlusion windows as the perturbations, with its details.

    See :func:`infidelity` for the definition; this returns the fitted scale and how many windows were used
    and skipped as well, which a report must show next to the value.
    """
    attribution = np.asarray(attribution, dtype=np.float64)
    axes = _spatial_axes(attribution.ndim, spatial_axes, "attribution")
    if perturbation is None:
        explanation = _to_hw(attribution, axes)  # attribution-style map: summed over channels
    else:
        perturbation = np.asarray(perturbation, dtype=np.float64)
        paxes = _spatial_axes(perturbation.ndim, spatial_axes, "perturbation")
        hw = (perturbation.shape[paxes[0]], perturbation.shape[paxes[1]])
        if attribution.shape == hw and perturbation.ndim > 2:  # one value per pixel, applied to every channel
            shape = [1] * perturbation.ndim
            shape[paxes[0]], shape[paxes[1]] = hw
            attribution = attribution.reshape(shape)
        elif attribution.shape != perturbation.shape:
            raise OccludeError(f"attribution shape {attribution.shape} differs from perturbation shape "
                               f"{perturbation.shape} (give an input-shaped or an (H, W) attribution)")
        with np.errstate(invalid="ignore", over="ignore"):
            explanation = _to_hw(attribution * perturbation, paxes)  # gradient-style: <map, input - baseline>
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
    explained = window_sums(np.where(missing, 0.0, explanation), w)
    touched = window_sums(missing.astype(np.float64), w) > 0.5  # counts are exact integers in float64
    usable = ~touched & np.isfinite(d)
    explained[~usable] = np.nan
    used = int(usable.sum())
    if used == 0:
        return InfidelityResult(float("nan"), float("nan"), 0, len(w), explained)
    a, b = explained[usable], d[usable]
    scale = 1.0
    if scale_invariant:
        denominator = float(np.dot(a, a))
        scale = float(np.dot(a, b)) / denominator if denominator != 0 else 0.0  # as Captum's safe_div
    value = float(np.mean((scale * a - b) ** 2))
    return InfidelityResult(value, scale, used, len(w) - used, explained)


def infidelity(
    attribution,
    windows,
    drops,
    *,
    perturbation=None,
    scale_invariant: bool = False,
    spatial_axes: tuple[int, int] = (-2, -1),
) -> float:
    """Infidelity (Yeh et al. 2019) of an attribution map, the occlusion windows being the perturbations.

    For window i with measured drop ``d_i = score(input) - score(input with window i set to the baseline)``
    (``Occlusion.drops`` of the target class, already computed by an occlusion run: no forward pass here)::

        explained_i = sum over the window's pixels of attribution                    (perturbation=None)
        explained_i = sum over the window's pixels of attribution * perturbation     (gradient-style)
        infidelity  = mean_i (scale * explained_i - d_i) ** 2

    * ``attribution``: an (H, W) map, or an input-shaped array (channels are summed) whose ``spatial_axes``
      are the map's. Attribution-style maps (occlusion, Integrated Gradients, Grad-CAM, SHAP: each pixel's
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

    Cost: O(HW + N) with a summed-area table. **Lower is better**; 0 means the map predicts every window's
    drop exactly (the occlusion map itself is not 0: it averages overlapping windows). The value is in
    squared score units, so compare maps on the same model, image, windows and baseline.
    """
    return infidelity_result(attribution, windows, drops, perturbation=perturbation,
                             scale_invariant=scale_invariant, spatial_axes=spatial_axes).value


# ------------------------------------------------------------------------- batched masked scoring


def score_masked(
    image: np.ndarray,
    baseline: np.ndarray,
    masks: Iterable[np.ndarray],
    score_fn: ScoreFn,
    *,
    spatial_axes: tuple[int, int] = (-2, -1),
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Scores of ``image`` with each mask's pixels replaced by ``baseline``: (len(masks), classes) float64.

    The one batched perturbation loop. ``image`` is one sample in model layout (no batch axis), ``baseline``
    has its shape, ``spatial_axes`` name its two pixel axes. Each mask is (H, W): True (or 1.0) takes the
    baseline's pixel, every channel together; a float mask in [0, 1] blends, ``(1 - m) * image + m *
    baseline``. Masks are consumed lazily, ``batch_size`` at a time, into one preallocated buffer, so a
    generator of masks never needs them all in memory.

    Everything that perturbs an input and scores it can be written as masks for this loop:

    * an occlusion window (y, x, h, w): a mask True on ``[y:y+h, x:x+w]`` (the engine's ``score_windows``
      gives the same scores; it only restores the previous window instead of copying the whole input);
    * deletion step j: True on the first ``counts[j]`` pixels of the importance order; insertion step j:
      the complement;
    * sufficiency / completeness: True off / on the top-k set (:func:`sufficiency_curve`,
      :func:`completeness_curve`).

    ``progress(done, total)`` is called after each batch (total is -1 when ``masks`` has no length).
    """
    image = np.asarray(image)
    axes = _spatial_axes(image.ndim, spatial_axes, "image")
    baseline = np.asarray(baseline, dtype=image.dtype)
    if baseline.shape != image.shape:
        raise OccludeError(f"baseline shape {baseline.shape} differs from image shape {image.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise OccludeError(f"batch_size must be a positive integer, got {batch_size!r}")
    size = (image.shape[axes[0]], image.shape[axes[1]])
    mask_shape = [1] * image.ndim  # (H, W) placed on the spatial axes, 1 elsewhere: broadcasts over channels
    mask_shape[axes[0]], mask_shape[axes[1]] = size
    total = len(masks) if hasattr(masks, "__len__") else -1  # type: ignore[arg-type]
    rows = batch_size if total < 0 else max(1, min(batch_size, total))
    buffer = np.empty((rows,) + image.shape, dtype=image.dtype)
    chunks = []
    classes = None
    pending = 0
    done = 0

    def flush() -> None:
        nonlocal pending, done, classes
        out = np.asarray(score_fn(buffer[:pending]))
        if out.ndim != 2 or out.shape[0] != pending:
            raise OccludeError(f"the score function must return (batch, classes); got shape {out.shape} "
                               f"for batch {pending}")
        if classes is not None and out.shape[1] != classes:
            raise OccludeError("the score function returned a different number of classes for different batches")
        classes = out.shape[1]
        chunks.append(out.astype(np.float64))
        done += pending
        pending = 0
        if progress is not None:
            progress(done, total)

    image_s = np.moveaxis(image, axes, (-2, -1))  # views with the pixel axes last, for fancy indexing
    baseline_s = np.moveaxis(baseline, axes, (-2, -1))
    held: list = [None] * rows  # the boolean mask each buffer row currently holds (None: unknown)
    for i, mask in enumerate(masks):
        m = np.asarray(mask)
        if m.shape != size:
            raise OccludeError(f"masks[{i}] has shape {m.shape}, expected the image's {size[0]}x{size[1]}")
        row = buffer[pending]
        if m.dtype != bool:
            if not np.all((m >= 0) & (m <= 1)):
                raise OccludeError(f"masks[{i}] must be boolean or hold values in [0, 1]")
            row[...] = image + m.reshape(mask_shape) * (baseline.astype(np.float64) - image)
            held[pending] = None
        else:
            flat = m.ravel()
            changed = None if held[pending] is None else np.flatnonzero(held[pending] ^ flat)
            if changed is None or len(changed) > flat.size // 4:
                np.copyto(row, image)
                np.copyto(row, baseline, where=m.reshape(mask_shape))
            else:  # rewrite only the pixels whose state changed: two windows' worth for a sliding window
                ys, xs = np.divmod(changed, size[1])
                np.moveaxis(row, axes, (-2, -1))[..., ys, xs] = np.where(flat[changed], baseline_s[..., ys, xs],
                                                                           image_s[..., ys, xs])
            held[pending] = flat.copy()
        pending += 1
        if pending == rows:
            flush()
    if pending:
        flush()
    if not chunks:
        raise OccludeError("masks is empty: nothing to score")
    return np.concatenate(chunks, axis=0)


# ------------------------------------------------------------------ sufficiency and completeness


class TopKCurve(NamedTuple):
    """Scores after keeping (sufficiency) or occluding (completeness) the map's top-k pixels.

    ``fractions``: the requested k (share of the H*W pixels); ``pixels``: the pixel count of each top-k set;
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


def _top_k_curve(kind, image, baseline, attribution, score_fn, target, fractions, spatial_axes, batch_size,
                 original_score, baseline_score, progress) -> TopKCurve:
    image = np.asarray(image)
    axes = _spatial_axes(image.ndim, spatial_axes, "image")
    size = (image.shape[axes[0]], image.shape[axes[1]])
    values = np.asarray(attribution, dtype=np.float64)
    if values.shape != size:
        raise OccludeError(f"attribution shape {values.shape} differs from the image's {size[0]}x{size[1]}")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
        raise OccludeError(f"target must be a non-negative class index, got {target!r}")
    n = size[0] * size[1]
    counts = pixel_counts(n, fractions)
    order = top_k_order(values)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(size)  # position of each pixel in the importance order

    def masks():  # True = occluded (baseline)
        if original_score is None:
            yield np.zeros(size, dtype=bool)
        if baseline_score is None:
            yield np.ones(size, dtype=bool)
        for k in counts:
            top = rank < k
            yield ~top if kind == "sufficiency" else top

    total = len(counts) + (original_score is None) + (baseline_score is None)
    scores = score_masked(image, baseline, masks(), score_fn, spatial_axes=axes, batch_size=batch_size,
                          progress=(lambda done, _: progress(done, total)) if progress else None)
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
    return TopKCurve(kind, np.asarray(fractions, dtype=np.float64).ravel(), counts, s, float(original_score),
                     float(baseline_score), relative, float(np.mean(original_score - s)))


def sufficiency_curve(
    image: np.ndarray,
    baseline: np.ndarray,
    attribution,
    score_fn: ScoreFn,
    target: int,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    spatial_axes: tuple[int, int] = (-2, -1),
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
    return _top_k_curve("sufficiency", image, baseline, attribution, score_fn, target, fractions, spatial_axes,
                        batch_size, original_score, baseline_score, progress)


def completeness_curve(
    image: np.ndarray,
    baseline: np.ndarray,
    attribution,
    score_fn: ScoreFn,
    target: int,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    spatial_axes: tuple[int, int] = (-2, -1),
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
    return _top_k_curve("completeness", image, baseline, attribution, score_fn, target, fractions,
                        spatial_axes, batch_size, original_score, baseline_score, progress)


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
