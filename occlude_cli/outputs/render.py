"""Pictures of a map: the heatmap alone and the overlay on the original image.

Signed maps use a diverging colormap centred on zero (red: occluding lowers the score, blue: occluding
raises it), with symmetric limits so that both signs stay visible. Returns PNG bytes; writing is the
outputs stage's job.
"""

from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np
from PIL import Image

from ..loaders.images import map_on_original

CMAP = "RdBu_r"
MIN_DISPLAY_SIDE = 320  # small images (e.g. 8x8 digits) are enlarged by an integer factor to at least this


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def score_word(kind: str) -> str:
    """How a score kind is named in titles and axis labels."""
    return {"logit": "logit", "raw": "output"}.get(kind, "probability")


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
        image = image.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    return _png(image)


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
        base = base.resize((width * factor, height * factor), Image.Resampling.NEAREST)
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


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def compare_png(explanation, other, comparison: dict) -> bytes:
    """The comparison as one PNG: both maps over the (greyed) model input, and the deletion and insertion
    curves of both maps with their AUCs in the legends."""
    _, plt = _matplotlib()
    e = explanation
    pixels = np.asarray(e.image.pixels, dtype=np.float64)
    grey = pixels.mean(axis=-1) / 255.0
    name = comparison.get("other_map", {}).get("name") or "other map"
    agreement = comparison["agreement"]
    curves = comparison["curves"]
    label = e.label(e.target)
    kind = score_word(e.score_kind)
    heading = (f"{label + ' ' if label else ''}(class {e.target}): {kind} {e.occlusion.original_scores[e.target]:.4f}    "
               f"Pearson {_fmt(agreement['pearson'])}   Spearman {_fmt(agreement['spearman'])}   "
               f"top {agreement['top_fraction'] * 100:g}% IoU {_fmt(agreement['top_iou'])}")
    p = e.params
    figure, axes = plt.subplots(2, 2, figsize=(10, 9), dpi=100)
    try:
        panels = (
            (axes[0, 0], e.map, f"occlusion (patch {p['patch'][0]}x{p['patch'][1]}, stride {p['stride'][0]}x{p['stride'][1]})"),
            (axes[0, 1], np.asarray(other, dtype=np.float64), str(name)),
        )
        for ax, values, title in panels:
            limit = symmetric_limit(values)
            alpha = 0.25 + 0.7 * np.clip(np.abs(np.nan_to_num(values)) / limit, 0.0, 1.0)
            ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.imshow(colorize(values, limit, alpha), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        fractions = curves["fractions"]
        for ax, key, verb, hint in (
            (axes[1, 0], "deletion", "deleted", "lower AUC is better"),
            (axes[1, 1], "insertion", "inserted", "higher AUC is better"),
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
        figure.suptitle(heading, fontsize=10)
        figure.tight_layout(rect=(0, 0, 1, 0.96))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(figure)
