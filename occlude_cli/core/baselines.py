"""Baselines: what an occluded window is filled with (the "removed information").

Every baseline is built in pixel space (0..255, the model's colour order) and then normalised like the
image, except ``zero``, which is 0 in the model's input space (the dataset mean after normalisation).
"""

from __future__ import annotations

from typing import Dict, Protocol, Sequence

import numpy as np

from ..errors import OccludeError


class Normaliser(Protocol):
    """What a baseline needs of the preprocessing: the model's colour order and pixels -> model input."""

    @property
    def color(self) -> str: ...

    def normalise(self, pixels: np.ndarray) -> np.ndarray: ...

# name -> what it means; the CLI's --help and the README show this table.
BASELINES: Dict[str, str] = {
    "zero": "0 in the model's input space: the normalisation mean (for ImageNet models, the average colour)",
    "mean": "the image's own per-channel mean colour",
    "gray": "mid grey, pixel value 127.5 in every channel",
    "black": "pixel value 0",
    "white": "pixel value 255",
    "blur": "a Gaussian-blurred copy of the image (sigma = --blur-sigma, default patch/2): removes detail with less distribution shift",
    "noise": "uniform random pixels in 0..255, seeded by --seed (deterministic)",
    "V or R,G,B": "a constant in pixel units (0..255), one value or one per channel in RGB order",
}


def parse_baseline(spec: str) -> str:
    """Check a --baseline value and return it in canonical form (lower case, no spaces)."""
    text = str(spec).strip().lower().replace(" ", "")
    if text in BASELINES and text != "v or r,g,b":
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise OccludeError(
            f"unknown baseline {spec!r}: use one of zero, mean, gray, black, white, blur, noise, a number or R,G,B"
        ) from None
    if len(values) not in (1, 3):
        raise OccludeError(f"a constant baseline takes 1 or 3 values (R,G,B), got {len(values)}: {spec!r}")
    if not all(np.isfinite(values)):
        raise OccludeError(f"a constant baseline takes finite pixel values (0..255), got {spec!r}")
    return ",".join(_format_number(v) for v in values)


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def make_baseline(
    spec: str,
    pixels: np.ndarray,
    preprocessing: Normaliser,
    *,
    seed: int = 0,
    blur_sigma: float = 8.0,
) -> np.ndarray:
    """The baseline as one model input (same shape, layout and dtype as the normalised image).

    ``pixels`` is the image at model resolution, (H, W, C) floats in 0..255 in the model's colour order.
    """
    kind = parse_baseline(spec)
    channels = pixels.shape[-1]
    if kind == "zero":
        return np.zeros_like(preprocessing.normalise(pixels))
    if kind == "mean":
        fill = np.broadcast_to(pixels.mean(axis=(0, 1), dtype=np.float64), pixels.shape)
    elif kind == "gray":
        fill = np.full(pixels.shape, 127.5)
    elif kind == "black":
        fill = np.zeros(pixels.shape)
    elif kind == "white":
        fill = np.full(pixels.shape, 255.0)
    elif kind == "blur":
        fill = gaussian_blur(pixels, blur_sigma)
    elif kind == "noise":
        fill = np.random.default_rng(seed).uniform(0.0, 255.0, size=pixels.shape)
    else:
        fill = np.broadcast_to(_constant(kind, channels, preprocessing.color), pixels.shape)
    return preprocessing.normalise(np.asarray(fill, dtype=np.float64))


def _constant(kind: str, channels: int, color: str) -> np.ndarray:
    values = np.array([float(v) for v in kind.split(",")])
    if len(values) == 3:
        if channels == 1:  # an RGB constant for a grey model: its luminance, as Pillow's 'L' conversion
            return np.array([values @ np.array([0.299, 0.587, 0.114])])
        if color == "bgr":
            values = values[::-1]
    return np.broadcast_to(values, (channels,))


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) float pixels, kernel radius 3 sigma, edges extended.

    The radius is capped at the image's larger side: taps further out only see the extended edge, so a
    sigma of 1e6 costs what a sigma of the image size costs (not minutes)."""
    out = pixels.astype(np.float64)
    if not np.isfinite(sigma) or sigma <= 0:
        return out
    radius = max(1, min(int(np.ceil(3 * min(sigma, 1e9))), max(out.shape[0], out.shape[1])))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        length = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(weight * np.take(padded, np.arange(i, i + length), axis=axis) for i, weight in enumerate(taps))
    return out


def default_blur_sigma(patch: Sequence[int]) -> float:
    """Blur strong enough to erase detail the size of a patch."""
    return max(1.0, min(patch) / 2.0)
