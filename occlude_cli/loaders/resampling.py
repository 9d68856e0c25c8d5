"""torchvision's resize of a uint8 image tensor, computed in numpy: the ``torch`` resampler.

torchvision resizes a uint8 tensor (``read_image``, and transformers 5's default torchvision backend) with torch's
own antialiased kernels, not Pillow's: each axis's filter weights (Pillow's triangle and Keys cubic, a = -0.5,
widened by the downscale factor) are rounded to 16-bit integers at a precision chosen from the largest weight, the
width is resampled first into a uint8 buffer, then the height, each sum rounded half up and clamped to 0..255
(``UpSampleKernelAVXAntialias.h``, the kernel torch runs on x86 CPUs with AVX2 or AVX-512, where torchvision
resizes uint8 natively). Pillow keeps 22 bits: the two differ by up to two levels on a few pixels in bicubic.
Nearest is torch's ``nearest`` (``floor(out_index * in / out)`` in float32), not Pillow's pixel centres. Only
the crop is computed: the output pixels of the whole resized photo that the crop keeps, exactly as the whole
resize would give them.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import OccludeError

_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


def _filter(kind: str, x: np.ndarray) -> np.ndarray:
    """torch's antialiasing filters (``aa_filter``), in its order of operations."""
    x = np.abs(x)
    if kind == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def axis_weights(in_size: int, out_size: int, kind: str) -> Tuple[np.ndarray, np.ndarray, int]:
    """(first input index, int16 weights (out_size, taps), precision) of one axis, as torch computes them."""
    scale = in_size / out_size
    support = _SUPPORT[kind] * scale if scale >= 1.0 else _SUPPORT[kind]
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C casts truncate toward zero
    size = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - first
    taps = np.arange(int(np.ceil(support)) * 2 + 1)
    weights = _filter(kind, ((taps[None, :] + first[:, None]) - centers[:, None] + 0.5) * invscale)
    weights[taps[None, :] >= size[:, None]] = 0.0
    total = np.cumsum(weights, axis=1)[:, -1:]  # summed in order, as the kernel does
    weights = np.where(total != 0.0, weights / np.where(total != 0.0, total, 1.0), weights)
    largest = float(weights.max())
    precision = 0
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    return first, np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64), precision


def _resample_axis(pixels: np.ndarray, axis: int, out_size: int, start: int, count: int, kind: str) -> np.ndarray:
    """Output indices ``start .. start + count`` of resizing uint8 ``pixels`` (H, W, C) along ``axis``."""
    in_size = pixels.shape[axis]
    first, weights, precision = axis_weights(in_size, out_size, kind)
    first, weights = first[start : start + count], weights[start : start + count]
    moved = np.moveaxis(pixels, axis, 0).astype(np.int64)
    total = np.full((count,) + moved.shape[1:], 1 << (precision - 1) if precision else 0, dtype=np.int64)
    for tap in range(weights.shape[1]):
        index = np.minimum(first + tap, in_size - 1)
        total += moved[index] * weights[:, tap].reshape((-1,) + (1,) * (moved.ndim - 1))
    return np.moveaxis(np.clip(total >> precision, 0, 255), 0, axis)


def _nearest(in_size: int, out_size: int, start: int, count: int) -> np.ndarray:
    """torch's ``nearest`` source indices (``nearest_idx``)."""
    index = np.arange(start, start + count)
    if out_size == in_size:
        return index
    if out_size == 2 * in_size:
        return index >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(index.astype(np.float32) * scale).astype(np.int64), in_size - 1)


def torch_resize(
    pixels: np.ndarray, resized: Tuple[int, int], crop: Tuple[int, int], size: Tuple[int, int], kind: str
) -> np.ndarray:
    """The ``size`` (height, width) crop at ``crop`` (left, top) of uint8 ``pixels`` (H, W, C) resized to
    ``resized`` (width, height) by torchvision's uint8 tensor kernels: width first, then height."""
    if kind not in ("nearest", "bilinear", "bicubic"):
        raise OccludeError(f"resampler torch has no {kind} filter: use pil", params=("resampler", "interpolation"))
    (out_w, out_h), (left, top), (height, width) = resized, crop, size
    in_h, in_w = pixels.shape[:2]
    if kind == "nearest":
        rows, cols = _nearest(in_h, out_h, top, height), _nearest(in_w, out_w, left, width)
        return pixels[rows][:, cols].astype(np.float32)
    out = pixels
    if out_h != in_h:  # only the rows the height pass reads are resampled along the width
        first, weights, _ = axis_weights(in_h, out_h, kind)
        used = first[top : top + height]
        lo, hi = int(used.min()), int(min(in_h, (used + weights.shape[1]).max()))
        out, top_in = out[lo:hi], lo
    else:
        out, top_in = out[top : top + height], 0
    if out_w != in_w:
        out = _resample_axis(out, 1, out_w, left, width, kind)
    else:
        out = out[:, left : left + width]
    if out_h != in_h:
        shifted = np.zeros((in_h,) + out.shape[1:], dtype=np.int64)
        shifted[top_in : top_in + out.shape[0]] = out
        out = _resample_axis(shifted, 0, out_h, top, height, kind)
    return out.astype(np.float32)
