"""Did the explanation change? Two maps of one input (model A against model B, or today's model against the
golden maps of an earlier run) compared: the predictions of both, the similarity of the maps (Spearman of the
map and of its absolute value, Pearson, top-fraction IoU, SSIM) and their difference. Computes and writes
nothing else (:mod:`occlude_cli.outputs.diffs` writes, :mod:`occlude_cli.runs.diff` runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..core.metrics import finite_or_none, pearson, spearman, top_fraction_iou
from ..core.similarity import ssim
from ..errors import OccludeError

#: the similarity numbers of :func:`diff_similarity`, in the order diff.csv lists them
SIMILARITY_FIELDS = ("rank_corr", "rank_corr_abs", "pearson", "top_iou", "ssim", "max_abs_diff", "mean_abs_diff")


def diff_similarity(a: np.ndarray, b: np.ndarray, top_fraction: float = 0.1) -> dict:
    """How alike two maps of one shape are: ``rank_corr`` (Spearman of the signed maps), ``rank_corr_abs``
    (Spearman of their absolute values: the same places matter, whatever the sign), ``pearson``, ``top_iou``
    (IoU of the top ``top_fraction`` pixels of each), ``ssim`` (scikit-image's ``structural_similarity`` of the
    two maps as they are, ``data_range`` their joint range: ``joint_ssim``) and the largest and mean absolute
    difference. Undefined values (a constant map) are None. Unlike
    :func:`~occlude_cli.core.similarity.map_similarity` (the sanity test's, each map scaled by its own largest
    value), the maps keep their units: the diff of two models' score drops."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise OccludeError(f"the two maps have different shapes: {a.shape} and {b.shape}")
    difference = np.abs(b - a)
    finite = difference[np.isfinite(difference)]
    numbers = {
        "rank_corr": spearman(a, b),
        "rank_corr_abs": spearman(np.abs(a), np.abs(b)),
        "pearson": pearson(a, b),
        "top_iou": top_fraction_iou(a, b, top_fraction),
        "ssim": joint_ssim(a, b),
        "max_abs_diff": float(finite.max()) if finite.size else float("nan"),
        "mean_abs_diff": float(finite.mean()) if finite.size else float("nan"),
    }
    if np.array_equal(a, b, equal_nan=True) and finite.size:
        # the same map: similarity 1 by definition (a constant map has no defined correlation with another one)
        numbers.update({k: 1.0 for k in ("rank_corr", "rank_corr_abs", "pearson", "top_iou", "ssim")})
    return {k: finite_or_none(v) for k, v in numbers.items()}


def prediction(scores: np.ndarray, labels) -> dict:
    """The top-1 prediction of a model's (head-transformed) scores: index (the first of equal maxima), label
    and score."""
    scores = np.asarray(scores, dtype=np.float64)
    index = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))
    label = labels[index] if labels and 0 <= index < len(labels) else None
    return {"index": index, "label": label, "score": finite_or_none(scores[index])}


def joint_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps of one shape as ``skimage.metrics.structural_similarity(a, b, data_range=R)`` with R the
    maps' joint range (largest minus smallest value of either); computed on both divided by their joint largest
    |value| (the same number: no overflow for maps in huge units). 1 for two equal maps (also constant ones);
    NaN where undefined (a pixel not computed, a side shorter than the 7-pixel window)."""
    factor = float(max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0)))
    if not np.isfinite(factor):
        return float("nan")
    if factor == 0.0:
        return 1.0 if a.shape == b.shape else float("nan")
    x, y = a / factor, b / factor
    data_range = float(max(x.max(), y.max()) - min(x.min(), y.min()))
    if not data_range > 0:
        return 1.0
    return ssim(x, y, data_range=data_range)


@dataclass
class MapDiff:
    """One input's two maps compared: both maps (model-input resolution, float64), the target they explain,
    both top-1 predictions (None where unknown), whether they agree, and the similarity numbers."""

    map_a: np.ndarray
    map_b: np.ndarray
    target: int
    target_label: Optional[str]
    prediction_a: Optional[dict]
    prediction_b: Optional[dict]
    similarity: dict

    @property
    def difference(self) -> np.ndarray:
        """Map of B minus map of A."""
        return self.map_b - self.map_a

    @property
    def top1_agrees(self) -> Optional[bool]:
        if self.prediction_a is None or self.prediction_b is None:
            return None
        return self.prediction_a["index"] == self.prediction_b["index"]


def diff_maps(
    map_a,
    map_b,
    *,
    target: int,
    target_label: Optional[str] = None,
    prediction_a: Optional[dict] = None,
    prediction_b: Optional[dict] = None,
    top_fraction: float = 0.1,
) -> MapDiff:
    """A :class:`MapDiff` of two maps of one shape (refused with one line when the shapes differ: the models
    take inputs of different sizes)."""
    a, b = np.asarray(map_a, dtype=np.float64), np.asarray(map_b, dtype=np.float64)
    if a.shape != b.shape:
        raise OccludeError(
            f"the maps have different shapes ({'x'.join(map(str, a.shape))} and {'x'.join(map(str, b.shape))}): "
            "both models must take inputs of one size"
        )
    similarity = diff_similarity(a, b, top_fraction)
    return MapDiff(a, b, int(target), target_label, prediction_a, prediction_b, similarity)


#: what must be the same in a golden run and today's, for their maps to be comparable (params of the records)
GOLDEN_KEYS = ("patch", "stride", "region", "refine", "baseline", "blur_sigma", "seed", "score")


def golden_mismatch(golden: dict, today: dict) -> Optional[str]:
    """Why maps made with ``golden``'s parameters cannot be compared with maps made with ``today``'s (each a
    dict of :data:`GOLDEN_KEYS` and ``target``, the target rule: None for the top-1), or None when they can.
    A seed matters only for the noise baseline."""
    differences = []
    for key in (*GOLDEN_KEYS, "target"):
        if key == "seed" and today.get("baseline") != "noise":
            continue
        old, new = golden.get(key), today.get(key)
        if isinstance(old, tuple):
            old = list(old)
        if isinstance(new, tuple):
            new = list(new)
        if old != new:
            none = "top-1" if key == "target" else "none"
            differences.append(f"{key} {_words(old, none)} (golden) vs {_words(new, none)} (today)")
    if not differences:
        return None
    return "the golden maps were made with other settings: " + "; ".join(differences)


def _words(value, none: str) -> str:
    if value is None:
        return none
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)
