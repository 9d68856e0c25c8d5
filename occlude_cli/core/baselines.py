"""Baselines: what an occluded window is filled with (the "removed information").

Every baseline is built in pixel space (0..255, the model's colour order) and then normalised like the
image, except ``zero``, which is 0 in the model's input space (the dataset mean after normalisation).
"""

from __future__ import annotations

from typing import Dict, Protocol, Sequence

import numpy as np

from ..errors import OccludeError
from .casting import cast_checked


class Normaliser(Protocol):
    """What a baseline needs of the preprocessing: the model's colour order and pixels -> model input."""

    @property
    def color(self) -> str: ...

    def normalise(self, pixels: np.ndarray, what: str = ...) -> np.ndarray: ...

    def zero_input(self, shape) -> np.ndarray: ...


# name -> what it means; the CLI's --help and the README show this table.
BASELINES: Dict[str, str] = {
    "zero": "0 in the model's input space: the normalisation mean (for ImageNet models, the average colour)",
    "mean": "the image's own per-channel mean colour",
    "gray": "mid grey, pixel value 127.5 in every channel",
    "black": "pixel value 0",
    "white": "pixel value 255",
    "blur": "a Gaussian-blurred copy of the image (sigma = --blur-sigma, default patch/2): removes detail with less "
    "distribution shift",
    "noise": "uniform random pixels in 0..255, seeded by --seed (deterministic)",
    "tissue": "the mean of the foreground: pixels/voxels above the image's Otsu threshold (tissue, not air); "
    "a patch of average tissue, in distribution for CT/MR where the image mean is mostly air",
    "p10": "the image's own 10th intensity percentile; any pNN works (p50: the median), per channel",
    "inpaint": "each window filled from its surroundings (scikit-image biharmonic inpainting of a crop around "
    "the window, computed per window: ~5 ms per 16x16 window on 2 cores, +3.5 s on a 224x224 default "
    "grid; 2-D only; needs the medical extra)",
    "image:PATH": "the same window of another image, prepared exactly like the input",
    "V or R,G,B": "a constant in pixel units (0..255), one value or one per channel in RGB order",
}

IMAGE_PREFIX = "image:"


def baseline_image_path(kind: str):
    """The file of an ``image:PATH`` baseline (as given), or None for every other baseline."""
    text = str(kind).strip()
    return text[len(IMAGE_PREFIX) :] if text[: len(IMAGE_PREFIX)].lower() == IMAGE_PREFIX else None


def parse_baseline(spec: str, param: str = "baseline") -> str:
    """Check a baseline value (of the parameter ``param``, which an error names) and return it in canonical
    form (lower case, no spaces; ``image:PATH`` keeps its path as given)."""
    path = baseline_image_path(spec)
    if path is not None:
        if not path:
            raise OccludeError(f"{param} image: needs the image's path, e.g. image:clean.png", params=(param,))
        return IMAGE_PREFIX + path
    text = str(spec).strip().lower().replace(" ", "")
    if text in BASELINES and text not in ("v or r,g,b", "pnn", "image:path"):
        return text
    if text.startswith("p") and text[1:].replace(".", "", 1).isdigit():
        value = float(text[1:])
        if not 0.0 <= value <= 100.0:
            raise OccludeError(f"{param} takes a percentile from p0 to p100, got {spec!r}", params=(param,))
        return "p" + _format_number(value)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise OccludeError(
            f"{param} takes zero, mean, gray, black, white, blur, noise, tissue, pNN (e.g. p10), inpaint, image:PATH, "
            f"a number or R,G,B, got {spec!r}",
            params=(param,),
        ) from None
    if len(values) not in (1, 3):
        raise OccludeError(f"{param} takes 1 or 3 values (R,G,B) as a constant, got {spec!r}", params=(param,))
    if not all(np.isfinite(values)) or not all(0.0 <= v <= 255.0 for v in values):
        raise OccludeError(f"{param} takes pixel values 0..255 as a constant, got {spec!r}", params=(param,))
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
        return preprocessing.zero_input(preprocessing.normalise(pixels).shape)
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
    elif kind == "tissue":
        grey = pixels.astype(np.float64).mean(axis=-1)
        fill = np.broadcast_to(pixels[grey > otsu_threshold(grey)].mean(axis=0, dtype=np.float64), pixels.shape)
    elif kind.startswith("p") and kind != "inpaint":
        fill = np.broadcast_to(np.percentile(pixels, float(kind[1:]), axis=(0, 1)), pixels.shape)
    elif kind == "inpaint":
        raise OccludeError("baseline inpaint is computed per window: build it with occlude_cli.loaders.inpaint")
    elif kind.startswith(IMAGE_PREFIX):
        raise OccludeError("baseline image: is read from its file: build it with occlude_cli.loaders.images")
    else:
        fill = np.broadcast_to(_constant(kind, channels, preprocessing.color), pixels.shape)
    return preprocessing.normalise(np.asarray(fill, dtype=np.float64), f"baseline {kind}")


def _constant(kind: str, channels: int, color: str) -> np.ndarray:
    values = np.array([float(v) for v in kind.split(",")])
    if len(values) == 3:
        if channels == 1:  # an RGB constant for a grey model: its luminance, as Pillow's 'L' conversion
            return np.array([values @ np.array([0.299, 0.587, 0.114])])
        if color == "bgr":
            values = values[::-1]
    return np.broadcast_to(values, (channels,))


def gaussian_blur(pixels: np.ndarray, sigma, axes: Sequence[int] = (0, 1)) -> np.ndarray:
    """Separable Gaussian blur over ``axes`` ((H, W, C) pixels by default; the three spatial axes of a
    volume), kernel radius 3 sigma capped at the axis length (a wider kernel only adds copies of the
    extended edge), edges extended. ``sigma``: one value or one per axis."""
    out = pixels.astype(np.float64)
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(axes),))
    for axis, s in zip(axes, sigmas):
        if not np.isfinite(s) or s <= 0:
            continue
        length = out.shape[axis]
        radius = min(max(1, int(np.ceil(3 * min(s, 1e9)))), length)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
        taps /= taps.sum()
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(weight * np.take(padded, np.arange(i, i + length), axis=axis) for i, weight in enumerate(taps))
    return out


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (the split of a 256-bin histogram that maximises the between-class variance) of
    the finite values: separates air/background from tissue without a modality-specific number."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or finite.min() == finite.max():
        raise OccludeError("baseline tissue: the image is constant, there is no foreground to average")
    counts, edges = np.histogram(finite, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean0 = sum0 / weight0
        mean1 = (sum0[-1] - sum0) / weight1
        between = weight0 * weight1 * (mean0 - mean1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


# Baselines that make sense in a model's input space for volumes (no 0..255 pixel space there).
VOLUME_BASELINES = ("zero", "mean", "blur", "noise", "tissue", "p10", "V (model-input units)")


def make_input_baseline(
    spec: str,
    sample: np.ndarray,
    spatial_axes: Sequence[int],
    *,
    seed: int = 0,
    blur_sigma=8.0,
) -> np.ndarray:
    """A baseline built directly in model-input space (used for medical inputs, whose model input is an
    intensity transform of real units, not 0..255 pixels). ``sample`` is one model input (channel axis
    included); statistics are per channel. Constants are in model-input units."""
    kind = parse_baseline(spec)
    x = np.asarray(sample, dtype=np.float64)
    axes = tuple(int(a) % x.ndim for a in spatial_axes)
    channel_axes = tuple(a for a in range(x.ndim) if a not in axes)
    if kind == "zero":
        fill = np.zeros_like(x)
    elif kind == "mean":
        fill = np.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape)
    elif kind == "blur":
        fill = gaussian_blur(x, blur_sigma, axes)
    elif kind == "noise":
        fill = np.random.default_rng(seed).uniform(x.min(), x.max(), size=x.shape)
    elif kind == "tissue":
        grey = x.mean(axis=channel_axes) if channel_axes else x
        keep = grey > otsu_threshold(grey)
        flat = np.moveaxis(x, channel_axes, tuple(range(len(channel_axes)))).reshape((-1,) + grey.shape)
        shape = [x.shape[a] if a in channel_axes else 1 for a in range(x.ndim)]
        fill = np.broadcast_to(flat[:, keep].mean(axis=1).reshape(shape), x.shape)
    elif kind.startswith("p") and kind != "inpaint":
        fill = np.broadcast_to(np.percentile(x, float(kind[1:]), axis=axes, keepdims=True), x.shape)
    elif kind == "inpaint":
        raise OccludeError("baseline inpaint is computed per window: build it with occlude_cli.loaders.inpaint")
    elif kind.startswith(IMAGE_PREFIX):
        raise OccludeError(
            "baseline image: is for photos (a medical input has no photo to take windows from)", params=("baseline",)
        )
    elif "," in kind:
        raise OccludeError(f"baseline {spec!r}: an R,G,B constant is for photos; give one value in model-input units")
    elif kind in ("gray", "black", "white"):
        raise OccludeError(
            f"baseline {kind} is in 0..255 pixel units, which medical inputs do not have: use zero, "
            "mean, tissue, pNN, blur or a value in model-input units"
        )
    else:
        fill = np.full(x.shape, float(kind))
    return cast_checked(fill, sample.dtype, f"baseline {kind}")


def default_blur_sigma(patch: Sequence[int]) -> float:
    """Blur strong enough to erase detail the size of a patch."""
    return max(1.0, min(patch) / 2.0)
