"""How alike two maps of one input are, as the model parameter randomisation test reports it (Adebayo et al.,
"Sanity Checks for Saliency Maps", NeurIPS 2018): Spearman rank correlation of the maps and of their absolute
values, the structural similarity (SSIM) of the maps scaled as the paper scales them, and the overlap of their top
pixels. Pure numpy, no files.

:func:`ssim` is scikit-image's ``structural_similarity`` with its defaults (a 7 x 7 uniform window, K1 = 0.01,
K2 = 0.03, sample covariances, the mean over the pixels whose window lies inside the map), computed in float64;
``tests/test_quality.py`` compares it with scikit-image.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from ..errors import OccludeError
from .metrics import spearman, top_fraction_iou

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _window_means(values: np.ndarray, size: int) -> np.ndarray:
    """Means over every ``size``-wide window along every axis that lies wholly inside ``values`` (the part of
    scikit-image's uniform filter that its SSIM averages)."""
    out = values
    for axis in range(values.ndim):
        out = np.lib.stride_tricks.sliding_window_view(out, size, axis=axis).mean(axis=-1)
    return out


def ssim(a, b, *, data_range: float, win_size: int = SSIM_WINDOW) -> float:
    """Mean structural similarity of two maps of one shape (2-D or 3-D), as ``skimage.metrics.
    structural_similarity(a, b, data_range=data_range)``. NaN when a map has a pixel that was not computed or is
    smaller than the window."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise OccludeError(f"maps have different shapes: {x.shape} and {y.shape}")
    if not data_range > 0:
        raise OccludeError(f"data_range must be positive, got {data_range}")
    if min(x.shape) < win_size or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    count = win_size**x.ndim
    cov_norm = count / (count - 1.0)  # sample covariance, as scikit-image's default
    ux, uy = _window_means(x, win_size), _window_means(y, win_size)
    uxx, uyy, uxy = _window_means(x * x, win_size), _window_means(y * y, win_size), _window_means(x * y, win_size)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def _scaled(values: np.ndarray) -> np.ndarray:
    """``values / max|values|`` (the paper's diverging normalisation: into [-1, 1]); all zeros stay zeros."""
    finite = values[np.isfinite(values)]
    limit = float(np.max(np.abs(finite))) if finite.size else 0.0
    return values / limit if limit > 0 and np.isfinite(limit) else values


def map_similarity(original, other, top_fraction: float = 0.1) -> Dict[str, float]:
    """How alike ``other`` is to ``original`` (two maps of one input, same shape): ``spearman`` and
    ``spearman_abs`` (rank correlation of the maps and of their absolute values), ``ssim`` (of the maps divided by
    their largest absolute value, data range 2) and ``ssim_abs`` (of ``|map| / max|map|``, data range 1): the
    normalisations of Adebayo et al.; and ``top_iou`` (IoU of the top ``top_fraction`` pixels). NaN where
    undefined (a constant map has no rank correlation)."""
    a, b = np.asarray(original, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise OccludeError(f"maps have different shapes: {a.shape} and {b.shape}")
    sa, sb = _scaled(a), _scaled(b)
    return {
        "spearman": spearman(a, b),
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        "ssim": ssim(sa, sb, data_range=2.0),
        "ssim_abs": ssim(np.abs(sa), np.abs(sb), data_range=1.0),
        "top_iou": top_fraction_iou(a, b, top_fraction),
    }


SIMILARITY_KEYS = ("spearman", "spearman_abs", "ssim", "ssim_abs", "top_iou")
