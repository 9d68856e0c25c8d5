"""Every picture occlude draws: heatmaps, overlays, panels, and the comparison figure.

Signed maps use a diverging colormap centred on zero (red: occluding lowers the score, blue: occluding
raises it), with symmetric limits so that both signs stay visible. Heatmaps, overlays and panels are drawn
with Pillow alone (title, colorbar and ticks included), which keeps a small model's folder run fast and the
pictures byte-identical across runs; matplotlib is only used for its colormaps and for the comparison's curves.
Returns PNG bytes; writing is the outputs stage's job.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import OccludeError
from ..loaders.images import map_on_original
from ..loaders.volumes import PreparedVolume
from ..text import for_plot, shown

CMAP = "RdBu_r"
FLOAT32_RANGE = (float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max))  # a map's values
MIN_DISPLAY_SIDE = 320  # small images (e.g. 8x8 digits) are enlarged by an integer factor to at least this
SIGNS = ("all", "positive", "negative")


@dataclass(frozen=True)
class RenderStyle:
    """How a map is drawn. ``cmap``: a matplotlib colormap name; ``alpha``: the map layer's opacity at the
    colour limit (0..1; opacity grows with |value| from 0, so unimportant regions show the photo as it is);
    ``clip_percentile``: colour limit at this percentile of |value| instead of the maximum (outliers
    saturate, as Captum's visualize_image_attr does); ``sign``: all, positive or negative values only;
    ``photo``: gray (default: the photo desaturated and lifted to light greys, so the map's colours stay
    readable on red, blue and dark photos) or color. ``color_limit``: a fixed colour limit (a positive number,
    in the map's units) for every picture, or ``"shared"``: one limit for every picture of a run, the largest
    |value| (or the ``clip_percentile``) over all its maps, which the run works out before it draws
    (:func:`shared_limit`); None: each picture its own."""

    cmap: str = CMAP
    alpha: float = 0.8
    clip_percentile: Optional[float] = None
    sign: str = "all"
    photo: str = "gray"
    color_limit: Union[None, float, str] = None

    def checked(self) -> RenderStyle:
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= float(self.alpha) <= 1.0):  # NaN fails too
            raise OccludeError(f"alpha must be in [0, 1], got {self.alpha}", params=("alpha",))
        if self.clip_percentile is not None and not (0.0 < float(self.clip_percentile) <= 100.0):
            raise OccludeError(
                f"clip_percentile must be in (0, 100], got {self.clip_percentile}", params=("clip_percentile",)
            )
        if self.sign not in SIGNS:
            raise OccludeError(f"sign must be one of {', '.join(SIGNS)}, got {self.sign!r}", params=("sign",))
        if self.photo not in ("gray", "color"):
            raise OccludeError(f"photo must be gray or color, got {self.photo!r}", params=("photo",))
        lookup_table(self.cmap)  # an unknown colormap fails here, with the names to choose from
        limit = self.color_limit
        if limit is not None and limit != "shared":
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not (0 < float(limit) < math.inf):
                raise OccludeError(
                    f"color_limit must be a positive number or 'shared', got {limit!r}", params=("color_limit",)
                )
            low, high = FLOAT32_RANGE  # maps are float32: beyond these, a blank or saturated picture
            if not low <= float(limit) <= high:
                raise OccludeError(
                    f"color_limit must be between {low:.3g} and {high:.3g} (a float32 map's range), got {limit!r}",
                    params=("color_limit",),
                )
            return replace(self, color_limit=float(limit))
        return self

    @property
    def shared(self) -> bool:
        """Whether the run must work out one limit for all its pictures (:func:`shared_limit`) before drawing."""
        return self.color_limit == "shared"

    def with_limit(self, limit: Optional[float]) -> RenderStyle:
        """This style with a fixed colour limit (None: each picture its own)."""
        return replace(self, color_limit=limit)

    def describe(self) -> dict:
        described = {
            "cmap": self.cmap,
            "alpha": self.alpha,
            "clip_percentile": self.clip_percentile,
            "sign": self.sign,
            "photo": self.photo,
        }
        if self.color_limit is not None:  # only when set: the fingerprints of runs without it stay as they were
            described["color_limit"] = self.color_limit
        return described


DEFAULT_STYLE = RenderStyle()


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def score_word(kind: str) -> str:
    """How a score kind is named in titles and axis labels."""
    return {"logit": "logit", "raw": "output", "detection": "detection score", "similarity": "similarity"}.get(
        kind, "probability"
    )


def symmetric_limit(values: np.ndarray, clip_percentile: Optional[float] = None) -> float:
    """Largest |value| (or its ``clip_percentile``-th percentile), ignoring NaN; never 0, so a diverging
    scale is centred on zero."""
    finite = np.abs(values[np.isfinite(values)])
    if not finite.size:
        return 1e-12
    peak = float(np.percentile(finite, clip_percentile)) if clip_percentile is not None else float(finite.max())
    if peak <= 0:
        peak = float(finite.max())
    return peak if peak > 0 else 1e-12


def shown_values(values: np.ndarray, style: RenderStyle = DEFAULT_STYLE) -> Tuple[np.ndarray, float]:
    """The values a picture shows (the other sign set to NaN with ``sign``) and the colour limit (the style's
    fixed ``color_limit``, else the picture's own)."""
    values = np.asarray(values, dtype=np.float64)
    if style.sign == "positive":
        values = np.where(values > 0, values, np.nan)
    elif style.sign == "negative":
        values = np.where(values < 0, values, np.nan)
    if isinstance(style.color_limit, float):
        return values, style.color_limit
    if style.color_limit is not None:
        raise OccludeError("color_limit 'shared' must be worked out by the run first", params=("color_limit",))
    return values, symmetric_limit(values, style.clip_percentile)


def shared_limit(maps: Iterable[np.ndarray], style: RenderStyle = DEFAULT_STYLE) -> float:
    """One colour limit for every map in ``maps`` (``--color-limit shared``): the largest |value| over all of
    them, or with ``clip_percentile`` that percentile of all their |values| together; only the values the
    style shows (``sign``) count. Never 0. Without a percentile only the largest value is kept (bounded memory);
    with one, every finite |value| of the run (4 bytes each)."""
    fixed = style.with_limit(1.0)
    kept = []
    for values in maps:
        shown = np.abs(shown_values(values, fixed)[0])
        finite = shown[np.isfinite(shown)]
        if finite.size:
            kept.append(finite.astype(np.float32) if style.clip_percentile is not None else finite.max(keepdims=True))
    return symmetric_limit(np.concatenate(kept) if kept else np.zeros(0), style.clip_percentile)


# ColorBrewer RdBu (Cynthia Brewer, Apache-2.0-style licence, as matplotlib ships it), red to blue; RdBu_r runs
# blue to red. Interpolated here as matplotlib's LinearSegmentedColormap does (tests compare the two tables),
# so the default picture needs no matplotlib import (0.6 s of a one-image run's start).
_RDBU = (
    (0.403921568627451, 0.0, 0.12156862745098039),
    (0.6980392156862745, 0.09411764705882353, 0.16862745098039217),
    (0.8392156862745098, 0.3764705882352941, 0.30196078431372547),
    (0.9568627450980393, 0.6470588235294118, 0.5098039215686274),
    (0.9921568627450981, 0.8588235294117647, 0.7803921568627451),
    (0.9686274509803922, 0.9686274509803922, 0.9686274509803922),
    (0.8196078431372549, 0.8980392156862745, 0.9411764705882353),
    (0.5725490196078431, 0.7725490196078432, 0.8705882352941177),
    (0.2627450980392157, 0.5764705882352941, 0.7647058823529411),
    (0.12941176470588237, 0.4, 0.6745098039215687),
    (0.0196078431372549, 0.18823529411764706, 0.3803921568627451),
)


def _rdbu_r_table() -> np.ndarray:
    colours = np.array(_RDBU[::-1], dtype=np.float64)
    anchors = np.linspace(0.0, 1.0, len(colours))
    x = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(x, anchors, colours[:, c]) for c in range(3)], axis=1)
    rgba = np.concatenate([rgb, np.ones((256, 1))], axis=1)
    return np.round(rgba * 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def lookup_table(cmap: str = CMAP) -> np.ndarray:
    """(256, 4) uint8 RGBA of a matplotlib colormap; index 128 is zero. The default needs no matplotlib."""
    if cmap == CMAP:
        return _rdbu_r_table()
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise OccludeError(f"unknown colormap {cmap!r}; e.g. RdBu_r, coolwarm, bwr, seismic, PiYG, viridis") from None
    return np.round(colormap(np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)


def colorize(values: np.ndarray, limit: float, alpha: Optional[np.ndarray] = None, cmap: str = CMAP) -> np.ndarray:
    """(H, W) signed values -> (H, W, 4) uint8 RGBA in the colormap (256 levels, through a lookup table so
    that a 6000x4000 map stays cheap); NaN is transparent. ``alpha``: opacity per pixel, either uint8
    (0..255) or float (0..1)."""
    finite = np.isfinite(values)
    wide = np.where(finite, values, 0.0).astype(np.float64, copy=False)
    wide *= 127.5 / limit  # in float64: a map in huge units (1e200) does not overflow float32
    scaled = wide.astype(np.float32)
    scaled += 127.5
    np.clip(scaled, 0.0, 255.0, out=scaled)
    rgba = lookup_table(cmap)[np.rint(scaled).astype(np.uint8)]
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.dtype.kind == "f":  # a float opacity in 0..1 (casting it to uint8 would make it 0)
            alpha = np.rint(np.clip(alpha, 0.0, 1.0) * 255.0)
        rgba[..., 3] = alpha.astype(np.uint8)
    rgba[~finite, 3] = 0
    return rgba


def _display_factor(width: int, height: int) -> int:
    return max(1, int(np.ceil(MIN_DISPLAY_SIDE / max(width, height))))


# zlib level 1 instead of Pillow's default 6: 3-4x faster to encode (the largest single cost of writing an
# overlay), files about 8% larger.
PNG_COMPRESS_LEVEL = 1


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def _font(size: int):
    return ImageFont.load_default(size=size)


def _opacity(values: np.ndarray, limit: float, alpha: float) -> np.ndarray:
    """uint8 opacity growing with |value|: 0 at zero (no veil over unimportant regions) to ``alpha`` at the
    limit, along |v|^0.7 so that moderate values stay visible."""
    magnitude = np.abs(np.where(np.isfinite(values), values, 0.0)).astype(np.float32) / np.float32(limit)
    np.clip(magnitude, 0.0, 1.0, out=magnitude)
    np.power(magnitude, 0.7, out=magnitude)
    magnitude *= 255.0 * float(alpha)
    return np.rint(magnitude).astype(np.uint8)


def photo_background(original: Image.Image, photo: str = "gray") -> Image.Image:
    """The photo under a map: desaturated and lifted to grey levels 112..232 ('gray'), so that the map's red
    and dark blue stay readable on a red, a blue or a dark photo (tests/test_pictures.py measures the colour
    distance); or as it is ('color')."""
    if photo == "color":
        return original.convert("RGB")
    grey = np.asarray(original.convert("L"), dtype=np.uint16)
    lifted = (112 + (grey * 120 + 127) // 255).astype(np.uint8)
    return Image.fromarray(lifted, "L").convert("RGB")


def _colorbar(height: int, limit: float, cmap: str, sign: str) -> Image.Image:
    """A vertical colorbar strip with ticks at -limit, 0 and +limit (only the shown half for one sign)."""
    bar_w, label_w = 16, 74
    lut = lookup_table(cmap)
    top_value, bottom_value = (
        (limit, -limit) if sign == "all" else ((limit, 0.0) if sign == "positive" else (0.0, -limit))
    )
    fractions = np.linspace(0.0, 1.0, height)
    values = top_value + (bottom_value - top_value) * fractions
    index = np.rint(np.clip(values * 127.5 / limit + 127.5, 0, 255)).astype(np.uint8)
    strip = np.repeat(lut[index][:, None, :3], bar_w, axis=1)
    canvas = Image.new("RGB", (bar_w + label_w, height), "white")
    canvas.paste(Image.fromarray(strip, "RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, bar_w - 1, height - 1], outline=(80, 80, 80))
    font = _font(11)
    for value, y in ((top_value, 0), ((top_value + bottom_value) / 2, height // 2), (bottom_value, height - 1)):
        draw.line([bar_w, y, bar_w + 4, y], fill=(60, 60, 60))
        text = f"{value:+.3g}" if value != 0 else "0"
        ty = min(max(0, y - 6), height - 13)
        draw.text((bar_w + 7, ty), text, fill=(30, 30, 30), font=font)
    return canvas


#: the widest a title may make a picture beyond its content (pixels): a longer title is cut, marked "..."
TITLE_MAX_WIDTH = 1600


def fitted_text(text: str, size: int, width: float) -> str:
    """``text`` as drawn in the default font of ``size`` within ``width`` pixels: whole when it fits, else its
    longest start that fits with "..." after it (a label of a million characters must not make a picture
    millions of pixels wide)."""
    font = _font(size)
    if font.getlength(text) <= width:
        return text
    text = text[: max(1, int(width))]  # no glyph is narrower than a pixel: the rest can never fit
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle] + "...") <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "..."


def _frame(
    content: Image.Image,
    limit: float,
    title: str,
    subtitle: str,
    style: RenderStyle,
    bar_label: str = "score drop: red = occluding lowers it, blue = raises it",
) -> Image.Image:
    """``content`` under a title (and subtitle), with a colorbar and its caption on the right. Titles hold
    labels and file names: drawn as the outside-text rule shows them."""
    title, subtitle = shown(title), shown(subtitle)
    pad, head = 10, (52 if subtitle else 34)
    bar = _colorbar(max(40, content.height), limit, style.cmap, style.sign)
    caption_h = 16
    room = max(content.width + 12 + bar.width, TITLE_MAX_WIDTH)
    title, subtitle = fitted_text(title, 15, room), fitted_text(subtitle, 11, room)
    text_width = max(_font(15).getlength(title), _font(11).getlength(subtitle) if subtitle else 0.0)
    width = max(pad + content.width + 12 + bar.width + pad, int(math.ceil(text_width)) + 2 * pad)
    height = head + content.height + caption_h + pad
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(content.convert("RGB"), (pad, head))
    canvas.paste(bar, (pad + content.width + 12, head))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), title, fill=(0, 0, 0), font=_font(15))
    if subtitle:
        draw.text((pad, 30), subtitle, fill=(70, 70, 70), font=_font(11))
    draw.text((pad, head + content.height + 3), bar_label, fill=(70, 70, 70), font=_font(10))
    return canvas


def heatmap_png(values: np.ndarray, title: str = "", subtitle: str = "", style: RenderStyle = DEFAULT_STYLE) -> bytes:
    """The map alone at model-input resolution (enlarged by an integer factor when small), with a title and a
    colorbar. A title-less call (library use) still gets the colorbar."""
    shown, limit = shown_values(values, style)
    height, width = shown.shape
    factor = _display_factor(width, height)
    rgba = colorize(shown, limit, cmap=style.cmap)
    image = Image.alpha_composite(
        Image.new("RGBA", (width, height), (255, 255, 255, 255)), Image.fromarray(rgba, "RGBA")
    )
    if factor > 1:
        image = image.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    return _png(_frame(image, limit, title or "occlusion map (model-input resolution)", subtitle, style))


def _blend(original: Image.Image, values: np.ndarray, crop_box, style: RenderStyle) -> Tuple[Image.Image, float]:
    """The photo (enlarged when small) with the map blended on top, in uint8 with Pillow at full size."""
    width, height = original.size
    shown, limit = shown_values(values, style)
    on_image = map_on_original(shown, original.size, crop_box)
    factor = _display_factor(width, height)
    base = photo_background(original, style.photo)
    layer = Image.fromarray(colorize(on_image, limit, _opacity(on_image, limit, style.alpha), style.cmap), "RGBA")
    del on_image
    if factor > 1:  # enlarge after colouring: a small image's layer is coloured at its own size
        base = base.resize((width * factor, height * factor), Image.Resampling.NEAREST)
        layer = layer.resize(base.size, Image.Resampling.NEAREST)
    blended = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    return blended, limit


def draw_markers(image: Image.Image, markers: Optional[Sequence[str]]) -> None:
    """Orientation letters (top, bottom, left, right: e.g. A, P, R, L) at the middle of each edge, in yellow
    with a dark outline so that they read on any grey; nothing when ``markers`` is None."""
    if not markers:
        return
    draw = ImageDraw.Draw(image)
    font = _font(max(10, min(16, min(image.size) // 12)))
    width, height = image.size
    for letter, (x, y, anchor) in zip(
        markers,
        ((width / 2, 2, "mt"), (width / 2, height - 2, "mb"), (3, height / 2, "lm"), (width - 3, height / 2, "rm")),
    ):
        draw.text((x, y), letter, fill=(255, 215, 0), font=font, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))


def overlay_png(
    original: Image.Image,
    values: np.ndarray,
    crop_box,
    title: str,
    subtitle: str = "",
    style: RenderStyle = DEFAULT_STYLE,
    markers: Optional[Sequence[str]] = None,
) -> bytes:
    """The original image at its original size (small images enlarged) with the map blended on top, a
    colorbar and a title. Opacity grows with |value| so unimportant regions show the photo clearly. Drawn
    with Pillow alone: a 6000x4000 photo costs a few hundred MB, not GB. ``markers``: orientation letters
    (top, bottom, left, right) of a medical slice."""
    blended, limit = _blend(original, values, crop_box, style)
    draw_markers(blended, markers)
    return _png(_frame(blended, limit, title, subtitle, style))


def panels_png(
    original: Image.Image,
    values: np.ndarray,
    crop_box,
    title: str,
    subtitle: str = "",
    style: RenderStyle = DEFAULT_STYLE,
    region: Optional[Tuple[float, float, float, float]] = None,
) -> bytes:
    """Three panels side by side at the original's size: the photo | the map alone | the overlay, one
    colorbar. ``region`` (x0, y0, x1, y1 in original pixels) is outlined on the overlay."""
    blended, limit = _blend(original, values, crop_box, style)
    factor = blended.width // original.width
    photo = original.convert("RGB")
    shown, _ = shown_values(values, style)
    on_image = map_on_original(shown, original.size, crop_box)
    heat = Image.alpha_composite(
        Image.new("RGBA", original.size, (255, 255, 255, 255)),
        Image.fromarray(colorize(on_image, limit, cmap=style.cmap), "RGBA"),
    ).convert("RGB")
    if factor > 1:
        size = (original.width * factor, original.height * factor)
        photo = photo.resize(size, Image.Resampling.NEAREST)
        heat = heat.resize(size, Image.Resampling.NEAREST)
    if region is not None:
        draw_region(blended, region, factor)
    gap = 8
    row = Image.new("RGB", (3 * blended.width + 2 * gap, blended.height), "white")
    for i, panel in enumerate((photo, heat, blended)):
        row.paste(panel, (i * (blended.width + gap), 0))
    return _png(_frame(row, limit, title, subtitle, style))


def draw_region(image: Image.Image, region, factor: int = 1, color=(255, 215, 0)) -> None:
    """Outline a box (x0, y0, x1, y1, original pixels) on ``image`` in place, 2 px wide with a dark rim."""
    x0, y0, x1, y1 = (float(v) * factor for v in region)
    draw = ImageDraw.Draw(image)
    draw.rectangle([x0 - 1, y0 - 1, x1, y1], outline=(0, 0, 0), width=1)
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=2)


def overlay_with_region_png(
    original: Image.Image,
    values: np.ndarray,
    crop_box,
    title: str,
    subtitle: str,
    region=None,
    mask: Optional[np.ndarray] = None,
    style: RenderStyle = DEFAULT_STYLE,
) -> bytes:
    """The overlay with the region of interest drawn on it: a box outline, or a mask's outline (``mask``:
    bool at the original image's size)."""
    blended, limit = _blend(original, values, crop_box, style)
    factor = blended.width // original.width
    if region is not None:
        draw_region(blended, region, factor)
    if mask is not None:
        edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
        if factor > 1:
            edge = np.kron(edge, np.ones((factor, factor), dtype=bool))
        pixels = np.asarray(blended).copy()
        pixels[edge] = (255, 215, 0)
        blended = Image.fromarray(pixels, "RGB")
    return _png(_frame(blended, limit, title, subtitle, style))


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def model_grey(explanation) -> np.ndarray:
    """What the model saw as 0..1 grey at model resolution, for pictures under a map: a photo's pixels averaged
    over their channels; a medical input's windowed intensities on the model grid ((H, W) or (D, H, W))."""
    image = explanation.image
    if isinstance(image, PreparedVolume):
        return np.asarray(image.display, dtype=np.float64)
    return np.asarray(image.pixels, dtype=np.float64).mean(axis=-1) / 255.0


def peak_slice(values: np.ndarray) -> int:
    """The axial slice (axis 0) through the centre of a volume map's maximal plateau: where 2-D panels of a
    volume are cut."""
    finite = np.where(np.isfinite(values), values, -np.inf)
    plateau = np.argwhere(finite == finite.max())
    centre = plateau.mean(axis=0)
    return int(plateau[np.argmin(((plateau - centre) ** 2).sum(axis=1))][0])


def compare_png(explanation, other, comparison: dict) -> bytes:
    """The comparison as one PNG: both maps over the (greyed) model input, and the deletion and insertion
    curves of both maps with their AUCs in the legends. Volumes: both maps on the axial slice through the
    occlusion map's peak."""
    _, plt = _matplotlib()
    e = explanation
    grey = model_grey(e)
    occlusion_map, other = e.map, np.asarray(other, dtype=np.float64)
    where = ""
    if grey.ndim == 3:
        z = peak_slice(occlusion_map)
        grey, occlusion_map, other, where = grey[z], occlusion_map[z], other[z], f", axial slice {z}"
    name = for_plot(comparison.get("other_map", {}).get("name") or "other map")
    agreement = comparison["agreement"]
    label = for_plot(e.label(e.target)) if e.label(e.target) else None
    kind = score_word(e.score_kind)
    heading = (
        f"{label + ' ' if label else ''}(class {e.target}): {kind} {e.occlusion.original_scores[e.target]:.4f}    "
        f"Pearson {_fmt(agreement['pearson'])}   Spearman {_fmt(agreement['spearman'])}   "
        f"top {agreement['top_fraction'] * 100:g}% IoU {_fmt(agreement['top_iou'])}"
    )
    p = e.params
    fidelity = comparison.get("fidelity")
    rows = 3 if fidelity else 2
    figure, axes = plt.subplots(rows, 2, figsize=(10, 4.5 * rows), dpi=100)
    try:
        patch, stride = "x".join(map(str, p["patch"])), "x".join(map(str, p["stride"]))
        panels = (
            (axes[0, 0], occlusion_map, f"occlusion (patch {patch}, stride {stride}{where})"),
            (axes[0, 1], other, str(name) + where),
        )
        _compare_maps(plt, figure, grey, panels)
        _compare_curves(axes[1], comparison["curves"], name, kind)
        if fidelity:
            _compare_fidelity(axes[2], fidelity, name)
        figure.suptitle(heading, fontsize=10)
        figure.tight_layout(rect=(0, 0, 1, 0.96))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _compare_maps(plt, figure, grey: np.ndarray, panels) -> None:
    """compare_png's first row: each map over the grey model input, with its colorbar."""
    for ax, values, title in panels:
        limit = symmetric_limit(values)
        alpha = 0.25 + 0.7 * np.clip(np.abs(np.nan_to_num(values)) / limit, 0.0, 1.0)  # float opacity 0..1
        ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.imshow(colorize(values, limit, alpha), interpolation="nearest")
        figure.colorbar(plt.cm.ScalarMappable(plt.Normalize(-limit, limit), CMAP), ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()


def _compare_curves(row, curves: dict, name: str, kind: str) -> None:
    """compare_png's second row: the deletion and insertion curves of both maps, AUCs in the legends."""
    fractions = curves["fractions"]
    for ax, key, verb, hint in (
        (row[0], "deletion", "deleted", "lower AUC is better"),
        (row[1], "insertion", "inserted", "higher AUC is better"),
    ):
        ours, theirs = curves["occlusion"], curves["other"]
        ax.plot(fractions, ours[key], color="#c0392b", label=f"occlusion (AUC {_fmt(ours[key + '_auc'])})")
        ax.plot(fractions, theirs[key], color="#2471a3", label=f"{name} (AUC {_fmt(theirs[key + '_auc'])})")
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"fraction of pixels {verb}, most important first", fontsize=8)
        ax.set_ylabel(f"target {kind}", fontsize=8)
        ax.set_title(f"{key} (baseline {curves[key + '_baseline']}; {hint})", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def _compare_fidelity(row, fidelity: dict, name: str) -> None:
    """compare_png's third row: sufficiency and completeness of both maps, with their infidelity."""
    percents = [100 * f for f in fidelity["fractions"]]
    maps = fidelity["maps"]
    for ax, key, share, hint in (
        (row[0], "sufficiency", "kept", "top-k pixels kept, rest = baseline; higher is better"),
        (row[1], "completeness", "removed", "top-k pixels occluded; higher is better"),
    ):
        for which, color, style_, label in (
            ("occlusion", "#c0392b", "--", "occlusion"),
            ("other", "#2471a3", "-", str(name)),
        ):
            entry = maps[which]
            ys = [np.nan if v is None else v for v in entry[key][share]]
            inf = entry["infidelity"]["unexplained"]
            mean = entry[key]["mean_" + share]
            ax.plot(
                percents,
                ys,
                style_,
                marker="o",
                color=color,
                label=f"{label} (mean {_fmt(mean)}; infidelity unexplained {_fmt(inf)})",
            )
        ax.set_xscale("log")
        ax.set_xticks(percents, [f"{v:g}" for v in percents])
        ax.set_xlabel("top k% of the map's pixels", fontsize=8)
        ax.set_ylabel(f"share of the score {share}", fontsize=8)
        ax.set_title(f"{key} ({hint})", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
