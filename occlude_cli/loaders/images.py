"""Images in, model inputs out: loading, resizing, layout and normalisation (and their inverse for display).

Knows nothing of onnxruntime: the model stage tells it the input size, layout and channels.
Pixel values are handled as floats in the 0..255 range; the model sees
``(pixel * scale - mean) / std`` per channel.
"""

from __future__ import annotations

import stat
import warnings
from dataclasses import dataclass, field
from enum import Enum
from os import PathLike
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.casting import cast_checked, describe_range, out_of_range, round_for, type_range
from ..errors import OccludeError, first_line
from . import limits
from .arrays import float_in_colour_order, image_from_array
from .letterbox import PAD_VALUE, check_pad_value, letterbox_box, letterbox_pixels
from .pngrows import check_png_rows
from .prefetch import take_decoded
from .resampling import torch_resize


class Layout(str, Enum):
    """Where the channels sit in a 4-D image input."""

    nchw = "nchw"
    nhwc = "nhwc"


class ResizeMode(str, Enum):
    """How an image is brought to the model's input size."""

    stretch = "stretch"
    center_crop = "center-crop"
    letterbox = "letterbox"


class Interpolation(str, Enum):
    """The resampling filter (Pillow's, antialiased when shrinking, as torchvision's ``antialias=True``)."""

    nearest = "nearest"
    bilinear = "bilinear"
    bicubic = "bicubic"
    lanczos = "lanczos"


class Resampler(str, Enum):
    """Whose arithmetic resizes the 8-bit photo (see :data:`RESAMPLERS`)."""

    pil = "pil"
    torch = "torch"
    float = "float"


LAYOUTS = ("NCHW", "NHWC")
COLORS = ("rgb", "bgr", "gray")
# stretch: the whole image to the input size (or to ``resize_to`` (h, w), then a center crop); center-crop: the
# short side fitted to the input, the long side cut; short-side: the short side to ``resize_to`` (S,), then a
# center crop (torchvision's Resize(S) + CenterCrop)
RESIZE_MODES = ("stretch", "center-crop", "short-side", "letterbox")  # letterbox: see loaders.letterbox
INTERPOLATIONS = tuple(i.value for i in Interpolation)
# where a center crop starts when the margin is odd: round(margin / 2), half to even (torchvision, timm), or
# margin // 2 (transformers)
CROP_OFFSETS = ("round", "floor")
# pil: Pillow's filters on the 8-bit image, rounded to 8 bits after each pass, as Pillow (and so torchvision,
# timm and transformers on PIL images) resizes; torch: torchvision's kernels for uint8 tensors (transformers 5's
# default backend, torchvision on read_image tensors); float: Pillow's filters on float32 pixels, never rounded
RESAMPLERS = ("pil", "torch", "float")
MAX_RESIZE = 1 << 16  # the largest side a photo is resized to before the crop (as a config file's sizes)
_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# Where the pixels 0..255 go in an integer input when nothing says otherwise: types that hold 0..255 take the
# pixels as they are; int8 takes ``pixel - 128``, the convention of fully integer-quantized image models
# (TensorFlow Lite's converter with ``inference_input_type=tf.int8`` stores an image input quantized with
# zero point -128 and scale 1/255 or 1 of the 0..255 range, so the stored value is the pixel minus 128; the
# uint8 models of the same converter take the pixel as it is).
def default_pixel_offset(dtype) -> float:
    """The mean subtracted from 0..255 pixels by default for an input of ``dtype``: 128 for types that
    cannot hold 255 but hold -128..127 (int8), else 0."""
    kind = np.dtype(dtype)
    if kind.kind == "i" and np.iinfo(kind).max < 255:
        return 128.0
    return 0.0


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input (one sample, no batch axis).

    ``size`` is (height, width); ``mean`` and ``std`` are per channel (a single value is broadcast),
    in the units of ``pixel * scale``. The value computed, ``x = (pixel * scale - mean) / std``, is stored
    in the input's ``dtype`` by one range-checked cast (:func:`occlude_cli.core.casting.cast_checked`):
    rounded for integer types, and never clipped. ``quantization`` (scale, zero_point), for integer inputs
    whose graph or metadata says how the integer stores a real value (``real = (q - zero_point) * scale``):
    then ``x`` is that real value and the input gets ``q = round(x / scale) + zero_point``.

    The whole 0..255 pixel range is checked against the type when the preprocessing is made: parameters
    that would put any pixel outside the type's range (int8 fed ``pixel * 1``, float16 overflow) are
    refused with one OccludeError, before any image is read.

    How the photo becomes ``size`` pixels: ``resize`` (see :data:`RESIZE_MODES`) with ``resize_to`` ((S,) for
    ``short-side``; (h, w) for a ``stretch`` followed by a center crop), the ``interpolation`` filter, the
    ``crop_offset`` rounding of an odd margin and the ``resampler`` (``pil``, ``torch`` or ``float``; None:
    ``pil`` for ``short-side``, else ``float``). ``sources``: (value, where it came from) pairs, recorded, never
    compared.
    """

    size: Tuple[int, int]
    layout: str = "NCHW"
    color: str = "rgb"
    scale: float = 1.0 / 255.0
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    resize: str = "stretch"
    dtype: str = "float32"
    quantization: Optional[Tuple[float, float]] = None  # (scale, zero_point) of an integer input
    resize_to: Optional[Tuple[int, ...]] = None
    interpolation: str = "bilinear"
    crop_offset: str = "round"
    resampler: Optional[str] = None
    sources: Tuple[Tuple[str, str], ...] = field(default=(), compare=False)
    pad_value: float = PAD_VALUE  # letterbox: the pixel value (0..255) of the padding

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise OccludeError(f"unknown layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        if self.color not in COLORS:
            raise OccludeError(f"unknown colour mode {self.color!r}: use one of {', '.join(COLORS)}")
        h, w = self.size
        if h < 1 or w < 1:
            raise OccludeError(f"input size must be positive, got {h}x{w}")
        self._check_resize()
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                want = "1 value" if self.channels == 1 else f"1 or {self.channels} values (R,G,B)"
                source = dict(self.sources).get(name, "given")  # named where it came from
                where, params = ("", (name,)) if source == "given" else (f" of the {source}", ())
                message = f"{name}{where} needs {want} for a {self.channels}-channel model, got {len(values)}"
                raise OccludeError(message, params=params)
            if not all(np.isfinite(values)):
                raise OccludeError(f"{name} (--{name}) must be finite numbers, got {list(values)}")
        check_pad_value(self.pad_value)
        if any(s == 0 for s in self.std):
            raise OccludeError("std values must be non-zero", params=("std",))
        if not np.isfinite(self.scale) or self.scale == 0:
            raise OccludeError(f"scale must be a finite non-zero number, got {self.scale}", params=("scale",))
        type_range(self.dtype)  # a type occlude can convert into
        if self.quantization is not None:
            q_scale, zero_point = self.quantization
            if not self.integer_input:
                raise OccludeError(f"quantization applies to integer inputs, not to {self.dtype}")
            if not (np.isfinite(q_scale) and q_scale > 0):
                raise OccludeError(f"input quantization scale must be a finite positive number, got {q_scale}")
            lo, hi = type_range(self.dtype)
            if not (float(zero_point).is_integer() and lo <= zero_point <= hi):
                raise OccludeError(
                    f"input quantization zero point must be a whole number in {lo:.0f}..{hi:.0f}, got {zero_point}"
                )
        self._check_pixel_range()

    def _check_resize(self) -> None:
        """The resize mode, its target, the filter, the crop offset and the resampler (None: pil for
        short-side, else float); a resize target the input would not fit in (the crop would need padding)."""
        for name, value, allowed in (
            ("resize", self.resize, RESIZE_MODES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
            ("crop_offset", self.crop_offset, CROP_OFFSETS),
            ("resampler", self.resampler or "pil", RESAMPLERS),
        ):
            if value not in allowed:
                raise OccludeError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}", params=(name,))
        if self.resampler is None:
            object.__setattr__(self, "resampler", "pil" if self.resize == "short-side" else "float")
        h, w = self.size
        target = tuple(int(v) for v in self.resize_to) if self.resize_to is not None else None
        object.__setattr__(self, "resize_to", target)
        if target is not None and not all(1 <= v <= MAX_RESIZE for v in target):
            name = "resize_short" if self.resize == "short-side" else "resize_to"
            shown = "x".join(map(str, target))
            raise OccludeError(f"{name} must be 1 to {MAX_RESIZE} pixels, got {shown}", params=(name,))
        if self.resize == "short-side":
            if target is None or len(target) != 1:
                raise OccludeError("resize short-side needs resize_to (S,): the short side S", params=("resize_to",))
            if target[0] < max(h, w):
                raise OccludeError(
                    f"resize_short {target[0]} is smaller than the input size {h}x{w}: the short side must be at "
                    f"least {max(h, w)} for the center crop to fit every photo",
                    params=("resize_short",),
                )
        elif self.resize == "stretch" and target is not None:
            if len(target) != 2 or target[0] < h or target[1] < w:
                raise OccludeError(
                    f"resize_to for stretch must be (height, width) of at least the input size {h}x{w}, got "
                    f"{list(target)}",
                    params=("resize_to",),
                )
        elif target is not None:
            raise OccludeError(f"resize {self.resize} takes no resize_to, got {list(target)}", params=("resize_to",))
        if self.resampler == "torch" and (self.resize == "center-crop" or self.interpolation == "lanczos"):
            what = "resize center-crop" if self.resize == "center-crop" else "lanczos"
            raise OccludeError(
                f"resampler torch does not do {what} (torchvision has no such uint8 kernel): use resampler pil",
                params=("resampler",),
            )

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def spatial_axes(self) -> Tuple[int, int]:
        """Axes of height and width in one sample (no batch axis)."""
        return (1, 2) if self.layout == "NCHW" else (0, 1)

    def _per_channel(self, values: Sequence[float]) -> np.ndarray:
        """Per-channel values in the model's colour order: ``mean`` and ``std`` are given in RGB order
        (as torchvision, timm and papers print them) and reversed for BGR models."""
        per = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.channels,))
        return per[::-1] if self.color == "bgr" else per

    @property
    def integer_input(self) -> bool:
        return np.dtype(self.dtype).kind in "iu"

    def _stored(self, x: np.ndarray) -> np.ndarray:
        """Computed values -> the numbers the input stores (before rounding): quantized when the input is."""
        if self.quantization is None:
            return x
        q_scale, zero_point = self.quantization
        return x / q_scale + zero_point

    def _check_pixel_range(self) -> None:
        """Refuse parameters that put some pixel of 0..255 outside the input type (``x`` is affine in the
        pixel, so the two ends of the range per channel are enough)."""
        ends = np.array([[0.0], [255.0]]) * np.ones((1, self.channels))
        x = self._stored((ends * self.scale - self._per_channel(self.mean)) / self._per_channel(self.std))
        if not out_of_range(x, self.dtype).any():
            return
        lo, hi = float(np.min(round_for(x, self.dtype))), float(np.max(round_for(x, self.dtype)))
        hint = ""
        if self.integer_input and self.quantization is None:
            offset = default_pixel_offset(self.dtype)
            hint = (
                f" (the {self.dtype} default is pixel - {offset:g}: scale 1, mean {offset:g}, std 1)" if offset else ""
            )
        raise OccludeError(
            f"pixels 0..255 become {lo:.6g}..{hi:.6g} in the model input ({self.expression}), but "
            f"{describe_range(self.dtype)}: values would be clipped; adjust scale, mean or std{hint}",
            params=("scale", "mean", "std"),
        )

    def values(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, C) pixels in 0..255 -> the computed input values (float64, model layout), before the cast."""
        x = (np.asarray(pixels, dtype=np.float64) * self.scale - self._per_channel(self.mean)) / self._per_channel(
            self.std
        )
        if self.layout == "NCHW":
            x = np.transpose(x, (2, 0, 1))
        return x

    def encode(self, x: np.ndarray, what: str = "the model input") -> np.ndarray:
        """Computed input values (float, model layout) -> the model's input type: quantized when the input
        is, rounded for integer types, refused when a value does not fit (never clipped)."""
        return cast_checked(self._stored(np.asarray(x, dtype=np.float64)), self.dtype, what)

    def normalise(self, pixels: np.ndarray, what: str = "the model input") -> np.ndarray:
        """(H, W, C) pixels in 0..255 (model colour order) -> one model input in the model's layout and dtype:
        ``(pixel * scale - mean) / std``, then :meth:`encode` (``what`` names the array in its error)."""
        return self.encode(self.values(pixels), what)

    def zero_input(self, shape) -> np.ndarray:
        """0 in the model's input space (the ``zero`` baseline): the normalisation mean; for a quantized input
        the zero point."""
        return self.encode(np.zeros(shape))

    def denormalise(self, model_input: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise`: one model input -> (H, W, C) pixels in 0..255 (float)."""
        x = np.asarray(model_input, dtype=np.float64)
        if self.quantization is not None:
            q_scale, zero_point = self.quantization
            x = (x - zero_point) * q_scale
        if self.layout == "NCHW":
            x = np.transpose(x, (1, 2, 0))
        return (x * self._per_channel(self.std) + self._per_channel(self.mean)) / self.scale

    @property
    def expression(self) -> str:
        """The conversion of a pixel, e.g. ``round((pixel * 1 - 128) / 1)`` (mean and std in RGB order)."""

        def shown(values: Sequence[float]) -> str:
            return f"{values[0]:g}" if len(values) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"

        x = f"(pixel * {self.scale:.6g} - {shown(self.mean)}) / {shown(self.std)}"
        if self.quantization is not None:
            q_scale, zero_point = self.quantization
            sign = "-" if zero_point < 0 else "+"
            return f"round({x} / {q_scale:.6g}) {sign} {abs(zero_point):g}"
        return f"round({x})" if self.integer_input else x

    @property
    def formula(self) -> str:
        """The conversion as one line, e.g. ``input = round((pixel * 1 - 128) / 1) as int8 (-128..127)``."""
        return f"input = {self.expression} as {self.dtype} ({describe_range(self.dtype).split(' holds ', 1)[1]})"

    @property
    def geometry(self) -> str:
        """The resize and crop in words, e.g. ``short side to 256 (bilinear, pil), center crop 224x224``."""
        h, w = self.size
        how = f"({self.interpolation}, {self.resampler})"
        if self.resize == "short-side":
            return f"short side to {self.resize_to[0]} {how}, center crop {h}x{w}"  # type: ignore[index]
        if self.resize == "stretch" and self.resize_to:
            rh, rw = self.resize_to
            return f"stretch to {rh}x{rw} {how}, center crop {h}x{w}"
        if self.resize == "stretch":
            return f"stretch to {h}x{w} {how}"
        return f"center-crop (short side fitted to {h}x{w}, long side cut) {how}"

    def describe(self) -> dict:
        return {
            "size": list(self.size),
            "layout": self.layout,
            "color": self.color,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "resize_to": list(self.resize_to) if self.resize_to else None,
            "interpolation": self.interpolation,
            "crop_offset": self.crop_offset,
            "resampler": self.resampler,
            **({"pad_value": self.pad_value} if self.resize == "letterbox" else {}),
            "dtype": self.dtype,
            "quantization": (
                {"scale": self.quantization[0], "zero_point": self.quantization[1]} if self.quantization else None
            ),
            "formula": self.formula,
            "sources": dict(self.sources),
        }


@dataclass
class PreparedImage:
    """An image ready for the engine, with what is needed to map results back onto the original."""

    path: Optional[Path]
    original: Image.Image  # upright, RGB or L, original size
    pixels: np.ndarray  # (H, W, C) float32 in 0..255 at model resolution, model colour order
    model_input: np.ndarray  # one sample in model layout, normalised
    crop_box: Tuple[float, float, float, float]  # region of the original (left, top, right, bottom) the input covers
    preprocessing: Preprocessing = field(repr=False)
    frames: int = 1  # frames or pages of the file (animated GIF/PNG/WebP, multi-page TIFF): only the first is used

    @property
    def original_size(self) -> Tuple[int, int]:
        """(width, height) of the original image."""
        return self.original.size


def load_image(path) -> Image.Image:
    """Open an image file, turn it upright from its EXIF orientation, and decode it fully.

    The header is read first (Pillow opens lazily): a file that is not a regular file (a FIFO would block
    the open forever, a device never ends) is refused unopened, and an image too large for the memory
    budget or above the pixel limit (see :mod:`occlude_cli.loaders.limits`) is refused before a single pixel
    is decoded; Pillow's DecompressionBombWarning becomes that one-line error.
    Returns an RGB image (transparency composited onto white), or an 'L' / 'F' image for single-channel
    files (16-bit rescaled to 0..255); a 32-bit float file is refused (see ``limits.check_float_image``).
    """
    ahead = take_decoded(path)
    if ahead is not None:  # decoded on the prefetch thread (see decode_ahead): the same image or the same error
        return ahead.result()
    return decode_photo(path)


def decode_photo(path) -> Image.Image:
    """:func:`load_image` without looking for an image decoded ahead: what the prefetch thread runs."""
    image = limits.check_float_image(open_image(path), path)
    try:
        return _with_frames(normalise_mode(image), frame_count(image))
    except OccludeError as exc:  # a 32-bit integer image out of the 16-bit range: name the file
        raise OccludeError(f"{path}: {exc}") from None


_FRAMES = "occlude.frames"  # Image.info key: how many frames or pages the file had (absent: one)


def frame_count(image: Image.Image) -> int:
    """Frames (animated GIF, PNG, WebP) or pages (TIFF) ``image`` comes from: only the first is explained."""
    counted = image.info.get(_FRAMES, getattr(image, "n_frames", 1))
    return counted if isinstance(counted, int) and counted > 1 else 1


def _with_frames(image: Image.Image, frames: int) -> Image.Image:
    image.info.update({_FRAMES: frames} if frames > 1 else {})
    return image


def is_photo(path) -> bool:
    """A regular file whose suffix Pillow decodes (DICOM and NIfTI files have their own loaders)."""
    path = Path(path)
    return path.suffix.lower() in {s.lower() for s in Image.registered_extensions()} and path.is_file()


def open_image(path) -> Image.Image:
    """:func:`load_image` without the conversion: the upright, fully decoded image in its own mode (alpha and
    palette transparency kept), with the same checks. What a reader that gives transparency a meaning (the
    mask reader, :func:`occlude_cli.loaders.maps.read_mask`) starts from."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise OccludeError(f"image not found: {path}") from None
    except OSError as exc:
        raise OccludeError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise OccludeError(f"expected an image file, got a folder: {path}")
    if not stat.S_ISREG(info.st_mode):
        raise OccludeError(f"not a regular file ({file_kind(info.st_mode)}), not opened: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened_file = Image.open(path)
        with opened_file as opened:
            width, height = opened.size
            limits.check_image_size(width, height, len(opened.getbands()), str(path))
            opened.load()
            if opened.format == "PNG":
                check_png_rows(path)
            image = ImageOps.exif_transpose(opened)
            if image is opened:
                image = opened.copy()
            _with_frames(image, frame_count(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise OccludeError(limits.bomb_message(str(path), exc), params=(limits.PARAM,)) from None
    except UnidentifiedImageError:
        raise OccludeError(f"not an image (or a format Pillow cannot read): {path}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise OccludeError(f"cannot read image {path}: {first_line(exc)}") from None
    return image


def file_kind(mode: int) -> str:
    """'FIFO', 'socket', 'character device', 'block device' or 'special file' for a non-regular file."""
    kinds = [(stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device")]
    kinds += [(stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder")]
    return next((name for test, name in kinds if test(mode)), "special file")


def has_transparency(image: Image.Image) -> bool:
    """An alpha channel (RGBA, LA, PA...) or a transparent palette index / colour (PNG tRNS)."""
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def normalise_mode(image: Image.Image) -> Image.Image:
    """RGB, L (8-bit grey) or F (16-bit grey, 0..65535 rescaled to 0..255); transparency onto white.

    Pillow's integer modes (I;16 and I: a 16-bit PNG or TIFF, a PGM with a maxval above 255, which Pillow
    scales to 0..65535) are all read on the 16-bit scale, whatever their values (a dark 16-bit image stays
    dark); a 32-bit integer image with values outside 0..65535 has no agreed range and is refused."""
    if image.mode in ("RGB", "L", "F"):
        return image
    if image.mode.startswith("I"):
        data = np.asarray(image, dtype=np.float64)
        if data.size and (data.min() < 0 or data.max() > 65535):
            raise OccludeError(
                f"a 32-bit integer image (values {data.min():g}..{data.max():g}) has no pixel range occlude can "
                "know; save it as an 8- or 16-bit image scaled as the model expects (0..255 or 0..65535)"
            )
        return Image.fromarray((data * (255.0 / 65535.0)).astype(np.float32), mode="F")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("LA", "La"):
        return _on_white(image.convert("RGBA")).convert("L")
    if image.mode in ("RGBA", "RGBa", "PA") or (image.mode == "P" and "transparency" in image.info):
        return _on_white(image.convert("RGBA"))
    return image.convert("RGB")


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite transparent pixels onto white, as image viewers show them."""
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def image_pixels(image: Image.Image, color: str) -> np.ndarray:
    """(H, W, C) float32 pixels in 0..255 in the given colour order (C = 1 for 'gray')."""
    if color == "gray":
        if image.mode == "RGB":
            image = image.convert("L")
        return np.asarray(image, dtype=np.float32)[..., None]
    if image.mode != "RGB":
        gray = np.asarray(image, dtype=np.float32)
        rgb = np.repeat(gray[..., None], 3, axis=-1)
    else:
        rgb = np.asarray(image, dtype=np.float32)
    return rgb[..., ::-1].copy() if color == "bgr" else rgb


class Geometry(NamedTuple):
    """Where a photo's pixels go: ``resized`` (width, height) the whole photo is resized to before the crop
    (None for center-crop, which resamples the crop box alone), ``crop`` (left, top) of the crop in the resized
    photo, and ``box`` (left, top, right, bottom): the region of the original that the model input covers."""

    resized: Optional[Tuple[int, int]]
    crop: Tuple[int, int]
    box: Tuple[float, float, float, float]


def _offset(margin: int, rounding: str) -> int:
    """Where a center crop starts in a margin of ``margin`` pixels: torchvision's and timm's
    ``int(round(margin / 2))`` (half to even) or transformers' ``margin // 2``."""
    return int(round(margin / 2.0)) if rounding == "round" else margin // 2


def resize_geometry(
    original_size: Tuple[int, int],
    target_size: Tuple[int, int],
    mode: str,
    resize_to: Optional[Sequence[int]] = None,
    crop_offset: str = "round",
) -> Geometry:
    """The resize and crop of a photo of ``original_size`` (width, height) into ``target_size`` (height,
    width). ``short-side``: the short side to S = ``resize_to[0]``, the long side to ``int(S * long / short)``
    (torchvision's Resize(S) and transformers' ``shortest_edge``), then a center crop; ``stretch`` with
    ``resize_to`` (h, w): the whole photo to (h, w), then a center crop; ``stretch`` alone: the whole photo to the
    target; ``center-crop``: the short side fitted to the target, the long side cut (a fractional box)."""
    width, height = original_size
    th, tw = target_size
    if mode == "letterbox":  # the whole photo inside, padded: a box beyond the photo (loaders.letterbox)
        return Geometry(None, (0, 0), letterbox_box(original_size, target_size))
    if mode == "center-crop":
        factor = min(width / tw, height / th)
        cw, ch = tw * factor, th * factor
        left, top = (width - cw) / 2.0, (height - ch) / 2.0
        return Geometry(None, (0, 0), (left, top, left + cw, top + ch))
    if mode == "short-side" and resize_to:
        s = int(resize_to[0])
        if width <= height:
            rw, rh = s, int(s * height / width)
        else:
            rh, rw = s, int(s * width / height)
    elif mode == "stretch" and resize_to:
        rh, rw = int(resize_to[0]), int(resize_to[1])
    else:
        return Geometry((tw, th), (0, 0), (0.0, 0.0, float(width), float(height)))
    left, top = _offset(rw - tw, crop_offset), _offset(rh - th, crop_offset)
    sx, sy = width / rw, height / rh
    return Geometry((rw, rh), (left, top), (left * sx, top * sy, (left + tw) * sx, (top + th) * sy))


def crop_box_for(
    original_size: Tuple[int, int], target_size: Tuple[int, int], mode: str, resize_to=None, crop_offset="round"
) -> Tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of the original that the model input covers."""
    return resize_geometry(original_size, target_size, mode, resize_to, crop_offset).box


def resize_pixels(
    pixels: np.ndarray,
    size: Tuple[int, int],
    box: Tuple[float, float, float, float],
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Resize (H, W, C) float pixels, taking only ``box`` of the source, to ``size`` (H, W) with Pillow's
    ``interpolation`` filter in float32 (antialiased when shrinking). Bicubic and Lanczos overshoot is clipped
    to 0..255, as Pillow does for 8-bit images."""
    h, w = size
    if pixels.shape[:2] == (h, w) and box == (0.0, 0.0, float(w), float(h)):
        return pixels.astype(np.float32, copy=True)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., c]), mode="F").resize(
                (w, h), _FILTERS[interpolation], box=box
            )
        )
        for c in range(pixels.shape[-1])
    ]
    out = np.stack(channels, axis=-1).astype(np.float32)
    return np.clip(out, 0.0, 255.0, out=out) if interpolation in ("bicubic", "lanczos") else out


def resample_image(image: Image.Image, preprocessing: Preprocessing) -> Tuple[np.ndarray, Geometry]:
    """The photo resized and cropped to the model's input: (H, W, C) float32 pixels in 0..255 (model colour
    order) and the geometry. The ``pil`` resampler runs Pillow on the 8-bit image and, as torchvision, timm and
    transformers do, resizes the whole photo, then cuts the crop: the same 8-bit numbers as those libraries on a
    PIL image (a resized photo larger than the original and than four model inputs, an extreme aspect ratio, is
    resampled from the crop box alone, within one 8-bit level). ``torch`` computes torchvision's uint8 tensor
    kernels (:mod:`~occlude_cli.loaders.resampling`). ``float`` filters float32 pixels from the crop box, never
    rounded. A 16-bit photo (an 'F' image) is resampled in float by every resampler."""
    pre = preprocessing
    geometry = resize_geometry(image.size, pre.size, pre.resize, pre.resize_to, pre.crop_offset)
    if pre.resize == "letterbox":
        return letterbox_pixels(image_pixels(image, pre.color), pre, resize_pixels), geometry
    if pre.resampler == "float" or image.mode == "F":
        pixels = resize_pixels(image_pixels(image, pre.color), pre.size, geometry.box, pre.interpolation)
        return pixels, geometry
    if pre.color == "gray" and image.mode == "RGB":
        image = image.convert("L")
    if pre.resampler == "torch":
        assert geometry.resized is not None  # checked with the preprocessing: no center-crop box
        data = np.asarray(image)
        data = data[..., None] if data.ndim == 2 else data
        resized = torch_resize(data, geometry.resized, geometry.crop, pre.size, pre.interpolation)
        return _in_colour_order(resized, pre.color), geometry
    th, tw = pre.size
    whole, (width, height) = geometry.resized, image.size
    if whole is not None and whole[0] * whole[1] <= max(width * height, 4 * tw * th):
        if whole != (width, height):
            image = image.resize(whole, _FILTERS[pre.interpolation])
        left, top = geometry.crop
        if (left, top, tw, th) != (0, 0) + whole:
            image = image.crop((left, top, left + tw, top + th))
    elif (tw, th) != (width, height) or geometry.box != (0.0, 0.0, float(width), float(height)):
        image = image.resize((tw, th), _FILTERS[pre.interpolation], box=geometry.box)
    return image_pixels(image, pre.color), geometry


def _resample_floats(rgb: np.ndarray, preprocessing: Preprocessing) -> Tuple[np.ndarray, Geometry]:
    """(H, W, 3) float pixels 0..255 (a float array) resized in float by every resampler, like a 16-bit photo."""
    pre, pixels = preprocessing, float_in_colour_order(rgb, preprocessing.color)
    geometry = resize_geometry((rgb.shape[1], rgb.shape[0]), pre.size, pre.resize, pre.resize_to, pre.crop_offset)
    if pre.resize == "letterbox":
        return letterbox_pixels(pixels, pre, resize_pixels), geometry
    return resize_pixels(pixels, pre.size, geometry.box, pre.interpolation), geometry


def _in_colour_order(pixels: np.ndarray, color: str) -> np.ndarray:
    """(H, W, 1 or 3) float pixels as the model's colour order wants them (grey repeated for colour models)."""
    if color == "gray":
        return pixels[..., :1]
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return pixels[..., ::-1].copy() if color == "bgr" else pixels


def prepare_image(image, preprocessing: Preprocessing) -> PreparedImage:
    """Load (if given a path) and turn an image into one model input: a path, a PIL image, or a numpy array
    (see :mod:`~occlude_cli.loaders.arrays` for what its shape and dtype mean)."""
    path, floats = None, None
    if isinstance(image, np.ndarray):
        image, floats = image_from_array(image)
        image = normalise_mode(image)
    elif isinstance(image, Image.Image):
        image = _with_frames(normalise_mode(ImageOps.exif_transpose(image)), frame_count(image))
    elif isinstance(image, (str, PathLike)):
        path = Path(image)
        image = load_image(path)
    else:
        raise OccludeError(
            f"image must be a path, a PIL image or a numpy array, got {type(image).__name__}", params=("image",)
        )
    pixels, geometry = (
        resample_image(image, preprocessing) if floats is None else _resample_floats(floats, preprocessing)
    )
    return PreparedImage(
        path=path,
        original=image,
        pixels=pixels,
        model_input=preprocessing.normalise(pixels),
        crop_box=geometry.box,
        preprocessing=preprocessing,
        frames=frame_count(image),
    )


def map_on_original(values: np.ndarray, original_size: Tuple[int, int], crop_box) -> np.ndarray:
    """Resample a model-resolution map onto the original image's pixels (NaN outside the crop box)."""
    width, height = original_size
    left, top, right, bottom = crop_box
    box_w = max(1, int(round(right - left)))
    box_h = max(1, int(round(bottom - top)))
    resized = np.asarray(
        Image.fromarray(values.astype(np.float32), "F").resize((box_w, box_h), Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    canvas = np.full((height, width), np.nan)
    x0, y0 = int(round(left)), int(round(top))  # a letterbox's box reaches beyond the image: its part over it
    part = resized[max(0, -y0) : max(0, -y0) + height - max(0, y0), max(0, -x0) : max(0, -x0) + width - max(0, x0)]
    canvas[max(0, y0) : max(0, y0) + part.shape[0], max(0, x0) : max(0, x0) + part.shape[1]] = part
    return canvas
