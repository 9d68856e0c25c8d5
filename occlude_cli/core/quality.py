"""Map quality numbers people cite, with Quantus' definitions (pure numpy, no files): relevance mass and rank
accuracy inside a mask (Arras, Osman and Samek, "CLEVR-XAI", Information Fusion 2022), sparseness (the Gini
index, Chalasani et al., ICML 2020) and complexity (the entropy, Bhatt, Weller and Moura, IJCAI 2020); and the
concentration of a map (how much of its positive mass its top pixels hold, and the Gini index of ``|map|``), which
tells a localised effect from a diffuse one.

Quantus (``quantus`` 0.6: ``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``, ``Sparseness``, ``Complexity``
with their defaults) is the reference; ``tests/test_quality.py`` checks every number against it to 1e-6. Its
defaults are kept: the map is first divided by its largest absolute value; relevance mass and rank accuracy use
the signed map (``abs=False``), sparseness and complexity its absolute value (``abs=True``). Two differences, both
where Quantus' value is not defined by its inputs alone:

* pixels that were not computed (NaN or inf, e.g. outside an occlusion region) are left out; Quantus would
  return NaN;
* relevance rank accuracy counts pixels tied with the k-th largest value fractionally (each tied pixel counts as
  the share of the tie's places left among the top k): Quantus ranks with numpy's unstable sort, so on a map with
  ties across the k-th place (occlusion maps are piecewise constant) its value depends on the sorting algorithm
  and the CPU. Without such ties the two are the same number; with them ours is the mean of Quantus' value over
  every order of the tied pixels.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..errors import OccludeError

# Quantus' constants: Sparseness adds this to every value of the normalised |map|; Complexity adds this inside
# the logarithm
SPARSENESS_EPSILON = 1e-7
COMPLEXITY_EPSILON = 1e-12
CONCENTRATION_FRACTIONS = (0.01, 0.05, 0.10)


def _values(values, name: str = "map") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise OccludeError(f"{name} must be a 2-D (H, W) or 3-D (D, H, W) array, got shape {array.shape}")
    return array


def _finite_with_mask(values, mask) -> Tuple[np.ndarray, np.ndarray]:
    """The finite pixels of ``values`` (flattened, row-major) and the mask there."""
    array = _values(values)
    inside = np.asarray(mask)
    if inside.shape != array.shape:
        raise OccludeError(f"mask shape {inside.shape} differs from map shape {array.shape}")
    ok = np.isfinite(array)
    return array[ok], inside.astype(bool)[ok]


def normalised_by_max(values: np.ndarray) -> np.ndarray:
    """``values / max(|values|)`` (Quantus' ``normalise_by_max``); an all-zero map is returned as it is."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.all(values == 0.0):
        return values
    return values / np.max(np.abs(values))


def relevance_mass_accuracy(values, mask) -> float:
    """Share of the map's (signed) sum that lies inside ``mask``: ``sum(map in mask) / sum(map)`` (Arras et al.
    2022; Quantus ``RelevanceMassAccuracy``). 1 when all relevance is inside; a map with negative values can give
    a number outside [0, 1]. NaN for an empty mask or a map summing to 0."""
    a, inside = _finite_with_mask(values, mask)
    if not inside.any():
        return float("nan")
    a = normalised_by_max(a)
    total = float(np.sum(a))
    if total == 0.0:
        return float("nan")
    return float(np.sum(a * inside) / total)


def relevance_rank_accuracy(values, mask) -> float:
    """Share of the ``k`` highest-ranked pixels that lie inside ``mask``, ``k`` the mask's pixel count (Arras et
    al. 2022; Quantus ``RelevanceRankAccuracy``). Pixels tied with the k-th largest value share the places left
    among the top ``k`` (see the module's docstring). NaN for an empty mask."""
    a, inside = _finite_with_mask(values, mask)
    k = int(np.count_nonzero(inside))
    if k == 0:
        return float("nan")
    a = normalised_by_max(a)
    threshold = np.sort(a)[::-1][k - 1]  # the k-th largest value
    above = a > threshold
    tied = a == threshold
    places = k - int(np.count_nonzero(above))  # places of the top k left for the tied pixels
    hits = np.count_nonzero(above & inside) + places * np.count_nonzero(tied & inside) / np.count_nonzero(tied)
    return float(hits / k)


def gini(values) -> float:
    """The Gini index of non-negative values: 0 when they are all equal, ``1 - 1/n`` when one holds everything
    (``sum((2i - n - 1) x_(i)) / (n sum(x))`` over the values sorted ascending). NaN when they sum to 0."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    total = float(np.sum(x))
    if n == 0 or not total > 0:
        return float("nan")
    ranks = 2.0 * np.arange(1, n + 1) - n - 1
    return float(np.sum(ranks * x) / (n * total))


def sparseness(values) -> float:
    """Sparseness (Chalasani et al. 2020) as Quantus computes it: the Gini index of ``|map| / max|map| + 1e-7``.
    Near 1: the relevance sits on a few pixels; near 0: spread evenly."""
    a = np.abs(_values(values))
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan")
    return gini(normalised_by_max(a) + SPARSENESS_EPSILON)


def complexity(values) -> float:
    """Complexity (Bhatt et al. 2020) as Quantus computes it: the entropy (natural log) of ``|map|`` as a
    distribution, ``-sum(p log(p + 1e-12))`` with ``p = |map| / sum|map|``. At most ``log(n)`` (a uniform map);
    lower is simpler. NaN for an all-zero map."""
    a = np.abs(_values(values))
    a = normalised_by_max(a[np.isfinite(a)])
    total = float(np.sum(a))
    if not total > 0:
        return float("nan")
    p = a / total
    return float(-np.sum(p * np.log(p + COMPLEXITY_EPSILON)))


def top_area_shares(values, fractions: Sequence[float] = CONCENTRATION_FRACTIONS) -> Tuple[float, ...]:
    """For each fraction f: the share of the map's total positive value that its top ``round(f n)`` pixels hold
    (``n`` the computed pixels; at least one). The positive values sorted in decreasing order are summed, so ties
    do not matter. A map spread evenly scores about f; one concentrated on a small patch scores near 1. NaN when
    the map has no positive value."""
    a = _values(values)
    a = a[np.isfinite(a)]
    positive = np.sort(np.where(a > 0, a, 0.0))[::-1]
    total = float(np.sum(positive))
    out = []
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise OccludeError(f"area fraction must be in (0, 1], got {fraction}")
        if not total > 0:
            out.append(float("nan"))
            continue
        k = max(1, int(np.floor(fraction * positive.size + 0.5)))
        out.append(float(np.sum(positive[:k]) / total))
    return tuple(out)


def concentration(values, fractions: Sequence[float] = CONCENTRATION_FRACTIONS) -> dict:
    """How concentrated a map is: ``top_1``, ``top_5``, ``top_10`` (the share of the total positive value in the
    top 1, 5 and 10 % of the area, :func:`top_area_shares`) and ``gini_abs`` (the Gini index of ``|map|``,
    :func:`gini`). NaN where undefined (no positive value; an all-zero map)."""
    shares = top_area_shares(values, fractions)
    a = np.abs(_values(values))
    out = {f"top_{fraction * 100:g}": share for fraction, share in zip(fractions, shares)}
    out["gini_abs"] = gini(a[np.isfinite(a)])
    return out
