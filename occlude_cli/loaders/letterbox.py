"""The letterbox resize YOLO detectors are fed: the whole photo scaled to fit the input with its aspect kept,
centred, and the rest padded with one grey value. Its crop box reaches beyond the photo, so boxes and maps map
between the original and the input through it like any other resize (see :func:`letterbox_box`)."""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from ..errors import OccludeError

PAD_VALUE = 114.0  # the grey YOLO models are trained with


def check_pad_value(value: float) -> None:
    if not (np.isfinite(value) and 0 <= value <= 255):
        raise OccludeError(f"pad_value must be a pixel value 0..255, got {value}", params=("pad_value",))


def letterbox_geometry(original_size: Tuple[int, int], target_size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(width, height) of the photo inside a letterboxed input of ``target_size`` (height, width) and its (left,
    top) offset: scaled by the factor that fits the whole photo (rounded to whole pixels), centred (the odd pixel
    of padding at the right and bottom), as ultralytics letterboxes."""
    width, height = original_size
    th, tw = target_size
    factor = min(tw / width, th / height)
    new_w, new_h = max(1, min(tw, int(round(width * factor)))), max(1, min(th, int(round(height * factor))))
    return new_w, new_h, (tw - new_w) // 2, (th - new_h) // 2


def letterbox_box(original_size: Tuple[int, int], target_size: Tuple[int, int]) -> Tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of the original the letterboxed input covers: beyond the photo."""
    width, height = original_size
    th, tw = target_size
    new_w, new_h, off_x, off_y = letterbox_geometry(original_size, target_size)
    sx, sy = new_w / width, new_h / height
    return (-off_x / sx, -off_y / sy, (tw - off_x) / sx, (th - off_y) / sy)


def letterbox_pixels(pixels: np.ndarray, preprocessing, resize: Callable) -> np.ndarray:
    """(H, W, C) float pixels resized by ``resize`` (:func:`~occlude_cli.loaders.images.resize_pixels`, with the
    preprocessing's interpolation) into its size with the aspect kept, the rest filled with its ``pad_value``
    (see :func:`letterbox_geometry`)."""
    size = preprocessing.size
    new_w, new_h, off_x, off_y = letterbox_geometry((pixels.shape[1], pixels.shape[0]), size)
    whole = (0.0, 0.0, float(pixels.shape[1]), float(pixels.shape[0]))
    out = np.full((size[0], size[1], pixels.shape[2]), preprocessing.pad_value, dtype=np.float32)
    out[off_y : off_y + new_h, off_x : off_x + new_w] = resize(
        pixels, (new_h, new_w), whole, preprocessing.interpolation
    )
    return out
