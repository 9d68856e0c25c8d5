"""The ``inpaint`` baseline: each occluded window filled from its surroundings (scikit-image's biharmonic
inpainting), so the patch continues the structures around it instead of pasting a constant.

Inpainting depends on the window, so it cannot be precomputed once like the other baselines: the engine
calls :class:`InpaintBaseline` per window (``score_windows`` accepts a callable baseline). Each call
inpaints only a crop around the window (the window plus a margin of half its size on every side), which
keeps the cost proportional to the window, not the image: measured (benchmarks/volumes.py, 2 cores shared
with a load of ~9) 4.8 ms per 16x16 window on a 3x224x224 input, so the default grid (729 windows) adds
~3.5 s per image, and 1.5 ms per 5x5 window on ct2d's 64x64 input. Biharmonic inpainting reproduces
smooth (e.g. linear) surroundings exactly only for windows at least 2 pixels from the image border; at the
border scikit-image's boundary handling departs from it. Needs scikit-image (the ``medical`` extra).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import OccludeError


def _inpaint_biharmonic():
    try:
        from skimage.restoration import inpaint_biharmonic
    except ImportError:
        raise OccludeError("baseline inpaint needs scikit-image: pip install 'occlude[medical]'") from None
    return inpaint_biharmonic


class InpaintBaseline:
    """``window -> values``: the contents of one window of ``sample`` (one model input, channel axis
    included) inpainted from a margin around it. Deterministic; results are cached per window."""

    def __init__(self, sample: np.ndarray, spatial_axes: Sequence[int], margin: float = 0.5) -> None:
        self.sample = np.asarray(sample)
        self.axes = tuple(int(a) % self.sample.ndim for a in spatial_axes)
        if len(self.axes) != 2:
            raise OccludeError("baseline inpaint is 2-D only")
        self.margin = float(margin)
        self.inpaint = _inpaint_biharmonic()
        self.channel_axes = tuple(a for a in range(self.sample.ndim) if a not in self.axes)
        # (H, W, C) view of the sample in float64, computed once
        moved = np.moveaxis(
            self.sample.astype(np.float64), self.axes + self.channel_axes, tuple(range(self.sample.ndim))
        )
        self.image: np.ndarray = moved.reshape(moved.shape[:2] + (-1,))
        self._cache: dict = {}

    def __call__(self, window: Sequence[int]) -> np.ndarray:
        key = tuple(int(v) for v in window)
        if key not in self._cache:
            self._cache[key] = self._fill(key)
        return self._cache[key]

    def _fill(self, window: tuple) -> np.ndarray:
        y, x, h, w = window
        height, width = self.image.shape[:2]
        my, mx = max(2, int(np.ceil(h * self.margin))), max(2, int(np.ceil(w * self.margin)))
        y0, x0 = max(0, y - my), max(0, x - mx)
        y1, x1 = min(height, y + h + my), min(width, x + w + mx)
        crop = self.image[y0:y1, x0:x1]
        mask = np.zeros(crop.shape[:2], dtype=bool)
        mask[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = True
        if mask.all():  # the window is the whole image: nothing to inpaint from, use its mean
            filled = np.broadcast_to(crop.mean(axis=(0, 1)), crop.shape)
        else:
            filled = self.inpaint(crop, mask, channel_axis=-1)
        part = filled[y - y0 : y - y0 + h, x - x0 : x - x0 + w]  # (h, w, C)
        shape = [0] * self.sample.ndim
        for a in self.channel_axes:
            shape[a] = self.sample.shape[a]
        shape[self.axes[0]], shape[self.axes[1]] = h, w
        order = self.axes + self.channel_axes
        # back to the sample's axis order
        values = part.reshape((h, w) + tuple(self.sample.shape[a] for a in self.channel_axes))
        values = np.moveaxis(values, tuple(range(self.sample.ndim)), order)
        return np.ascontiguousarray(values, dtype=self.sample.dtype)
