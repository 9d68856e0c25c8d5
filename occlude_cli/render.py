"""Pictures of a map: the heatmap alone and the overlay on the original image.

Signed maps use a diverging colormap centred on zero (red: occluding lowers the score, blue: occluding
raises it), with symmetric limits so that both signs stay visible. Returns PNG bytes; writing is the
outputs stage's job.
"""

from __future__ import annotations

import io
from typing import Optional, Tuple

import numpy as np
from PIL import Image

CMAP = "RdBu_r"
MIN_DISPLAY_SIDE = 320  # small images (e.g. 8x8 digits) are enlarged by an integer factor to at least this


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def symmetric_limit(values: np.ndarray) -> float:
    """Largest |value| (ignoring NaN), never 0, so a diverging scale is centred on zero."""
    finite = np.abs(values[np.isfinite(values)])
    peak = float(finite.max()) if finite.size else 0.0
    return peak if peak > 0 else 1e-12


def _lookup_table() -> np.ndarray:
    """(256, 4) uint8 RGBA of the diverging colormap; index 128 is zero."""
    matplotlib, _ = _matplotlib()
    return np.round(matplotlib.colormaps[CMAP](np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)


def colorize(values: np.ndarray, limit: float, alpha: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) signed values -> (H, W, 4) uint8 RGBA in the diverging colormap (256 levels, through a lookup
    table so that a 6000x4000 map stays cheap); NaN is transparent. ``alpha`` is uint8 when given."""
    finite = np.isfinite(values)
    scaled = np.where(finite, values, 0.0).astype(np.float32)
    scaled *= 127.5 / limit
    scaled += 127.5
    np.clip(scaled, 0.0, 255.0, out=scaled)
    rgba = _lookup_table()[np.rint(scaled).astype(np.uint8)]
    if alpha is not None:
        rgba[..., 3] = alpha
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


def heatmap_png(values: np.ndarray) -> bytes:
    """The map alone at model-input resolution (enlarged by an integer factor when small)."""
    height, width = values.shape
    factor = _display_factor(width, height)
    image = Image.fromarray(colorize(values, symmetric_limit(values)), "RGBA")
    if factor > 1:
        image = image.resize((width * factor, height * factor), Image.NEAREST)
    return _png(image)


def map_on_original(values: np.ndarray, original_size: Tuple[int, int], crop_box) -> np.ndarray:
    """Resample a model-resolution map onto the original image's pixels (NaN outside the crop box)."""
    width, height = original_size
    left, top, right, bottom = crop_box
    box_w = max(1, int(round(right - left)))
    box_h = max(1, int(round(bottom - top)))
    resized = np.asarray(
        Image.fromarray(values.astype(np.float32), "F").resize((box_w, box_h), Image.BILINEAR), dtype=np.float64
    )
    canvas = np.full((height, width), np.nan)
    x0, y0 = int(round(left)), int(round(top))
    canvas[y0 : y0 + box_h, x0 : x0 + box_w] = resized[: height - y0, : width - x0]
    return canvas


def _opacity(values: np.ndarray, limit: float) -> np.ndarray:
    """uint8 opacity growing with |value|: 15% at zero to 75% at the limit, so weak regions show the image."""
    magnitude = np.abs(np.where(np.isfinite(values), values, 0.0)).astype(np.float32)
    magnitude *= 0.6 * 255 / limit
    np.clip(magnitude, 0.0, 0.6 * 255, out=magnitude)
    magnitude += 0.15 * 255
    return np.rint(magnitude).astype(np.uint8)


def overlay_png(
    original: Image.Image,
    values: np.ndarray,
    crop_box,
    title: str,
    subtitle: str = "",
) -> bytes:
    """The original image at its original size (small images enlarged) with the map blended on top,
    a colorbar and a title. Opacity grows with |value| so unimportant regions show the image clearly.

    The blend is done in uint8 with Pillow at full size; matplotlib draws only the frame (title, colorbar)
    around an empty area where the blend is pasted, so a 6000x4000 photo costs a few hundred MB, not GB.
    """
    _, plt = _matplotlib()
    import matplotlib

    base = original.convert("RGB")
    width, height = base.size
    on_image = map_on_original(values, base.size, crop_box)
    factor = _display_factor(width, height)
    if factor > 1:
        base = base.resize((width * factor, height * factor), Image.NEAREST)
        on_image = np.kron(on_image, np.ones((factor, factor)))
    limit = symmetric_limit(values)
    layer = Image.fromarray(colorize(on_image, limit, _opacity(on_image, limit)), "RGBA")
    del on_image
    blended = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    del layer

    dpi = 100
    img_w, img_h = blended.size
    bar_w, pad, head = 90, 10, 50 if subtitle else 34
    fig_w, fig_h = img_w + bar_w + 2 * pad, img_h + head + pad
    figure = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    try:
        bar_axes = figure.add_axes([(pad + img_w + 12) / fig_w, pad / fig_h, 14 / fig_w, img_h / fig_h])
        mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(-limit, limit), CMAP)
        bar = figure.colorbar(mappable, cax=bar_axes)
        bar.ax.tick_params(labelsize=8)
        bar.set_label("score drop (red: occluding lowers the score, blue: raises it)", fontsize=7)
        figure.text(pad / fig_w, 1 - 8 / fig_h, title, fontsize=11, va="top", ha="left")
        if subtitle:
            figure.text(pad / fig_w, 1 - 28 / fig_h, subtitle, fontsize=8, va="top", ha="left", color="#444444")
        figure.canvas.draw()
        frame = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")
    finally:
        plt.close(figure)
    frame.paste(blended, (pad, head))
    return _png(frame)
