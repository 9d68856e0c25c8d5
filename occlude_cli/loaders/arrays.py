"""Images given as numpy arrays (a notebook's frame, a data loader's sample): what the array's shape and dtype
mean, checked into one line naming ``image``.

The rules, so that nothing is guessed in silence: a 2-D array is grey; a 3-D array is channels-last (H, W, C)
when its last axis holds 1, 3 or 4 channels, else channels-first (C, H, W) when its first axis does; 4 channels
are RGBA, composited onto white as image files are. ``uint8`` pixels are 0..255 (the same numbers as a PNG of
them, so the same map); float pixels (float16/32/64) are 0..1, as torchvision's ``ToTensor`` gives them, and are
never rounded. Any other dtype (bool, int64, uint16...) is refused with the conversion to make.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
from PIL import Image

from ..errors import OccludeError
from . import limits

# Pillow's convert("L") weights (ITU-R 601-2 luma): a float RGB array fed to a grey model
LUMA = np.array([0.299, 0.587, 0.114])
CHANNELS = (1, 3, 4)


class ArrayImage(NamedTuple):
    """An array as an image: ``image`` (what a PNG of a uint8 array decodes to, an 'F' image for grey floats,
    the 8-bit picture drawn under the map for RGB floats) and, for RGB floats, ``pixels``: (H, W, 3) float32 in
    0..255, the values the model is fed (resampled in float, like a 16-bit photo)."""

    image: Image.Image
    pixels: Optional[np.ndarray]


def image_from_array(array: np.ndarray) -> ArrayImage:
    """The image an array holds (see the module's rules), or one error naming ``image``."""
    hwc = _channels_last(array)
    height, width, channels = hwc.shape
    limits.check_image_size(width, height, channels, "the image array")
    if hwc.dtype == np.uint8:
        data = np.ascontiguousarray(hwc[..., 0] if channels == 1 else hwc)
        return ArrayImage(Image.fromarray(data, {1: "L", 3: "RGB", 4: "RGBA"}[channels]), None)
    if not np.issubdtype(hwc.dtype, np.floating):
        raise OccludeError(
            f"image array of dtype {hwc.dtype} is not a picture occlude can read without guessing its range: give "
            "uint8 pixels 0..255 (array.astype(np.uint8)) or floats in 0..1",
            params=("image",),
        )
    values = hwc.astype(np.float64)
    if not np.isfinite(values).all():
        raise OccludeError("image array holds NaN or infinite values", params=("image",))
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise OccludeError(
            f"image array of floats must hold pixels in 0..1, got {low:g}..{high:g} (for 0..255, give uint8)",
            params=("image",),
        )
    if channels == 4:
        alpha = values[..., 3:]
        values = values[..., :3] * alpha + (1.0 - alpha)  # onto white
    pixels = (values * 255.0).astype(np.float32)
    if pixels.shape[-1] == 1:
        return ArrayImage(Image.fromarray(np.ascontiguousarray(pixels[..., 0]), "F"), None)
    return ArrayImage(Image.fromarray(np.round(pixels).astype(np.uint8), "RGB"), pixels)


def _channels_last(array: np.ndarray) -> np.ndarray:
    """(H, W, C) from a 2-D, HWC or CHW array; one error naming ``image`` for any other shape."""
    if array.size == 0:
        raise OccludeError(f"image array is empty (shape {array.shape})", params=("image",))
    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3:
        raise OccludeError(
            f"image array is {array.ndim}-D (shape {array.shape}): give one image, (H, W), (H, W, C) or (C, H, W)",
            params=("image",),
        )
    if array.shape[-1] in CHANNELS:
        return array
    if array.shape[0] in CHANNELS:
        return array.transpose(1, 2, 0)
    raise OccludeError(
        f"image array of shape {array.shape} has no axis of 1, 3 or 4 channels first or last", params=("image",)
    )


def float_in_colour_order(pixels: np.ndarray, color: str) -> np.ndarray:
    """(H, W, 3) float RGB pixels in the model's colour order: grey by Pillow's weights, BGR reversed."""
    if color == "gray":
        return (pixels.astype(np.float64) @ LUMA).astype(np.float32)[..., None]
    return pixels[..., ::-1].copy() if color == "bgr" else pixels
