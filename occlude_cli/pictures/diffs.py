"""The picture of an explanation diff (``STEM.diff.png``): the map of model A, the map of model B and B - A side
by side over the (greyed) model input, A and B on one colour limit, the difference on a diverging scale of its
own. PNG bytes from arrays (Pillow); writes nothing."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..text import shown
from .render import (
    DEFAULT_STYLE,
    TITLE_MAX_WIDTH,
    RenderStyle,
    _colorbar,
    _display_factor,
    _font,
    _opacity,
    _png,
    colorize,
    fitted_text,
    photo_background,
    shared_limit,
    shown_values,
    symmetric_limit,
)

#: the difference's diverging colormap (purple: B lower than A, orange: B higher), unlike the maps' own
DIFF_CMAP = "PuOr_r"


def _panel(grey: np.ndarray, values: np.ndarray, limit: float, cmap: str, alpha: float, factor: int) -> Image.Image:
    """One map over the grey model input at model-input resolution, enlarged by ``factor``."""
    base = photo_background(Image.fromarray(np.rint(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8), "L"))
    layer = Image.fromarray(colorize(values, limit, _opacity(values, limit, alpha), cmap), "RGBA")
    blended = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    if factor > 1:
        blended = blended.resize((blended.width * factor, blended.height * factor), Image.Resampling.NEAREST)
    return blended


def diff_png(
    grey: np.ndarray,
    map_a: np.ndarray,
    map_b: np.ndarray,
    *,
    title: str,
    subtitle: str = "",
    names: Sequence[str] = ("A", "B"),
    style: RenderStyle = DEFAULT_STYLE,
    diff_limit: Optional[float] = None,
) -> bytes:
    """A | B | B - A. ``grey``: what the model saw as 0..1 grey at model resolution, (H, W) like the maps. The
    maps' colour limit is the style's fixed ``color_limit``, else one limit over both maps; the difference's
    is ``diff_limit``, else its own largest |value| (``clip_percentile`` applies). Titles and names are
    outside text: drawn as the outside-text rule shows them."""
    a, _ = shown_values(map_a, style.with_limit(1.0))
    b, _ = shown_values(map_b, style.with_limit(1.0))
    limit = style.color_limit if isinstance(style.color_limit, float) else shared_limit([map_a, map_b], style)
    difference = np.asarray(map_b, dtype=np.float64) - np.asarray(map_a, dtype=np.float64)
    if diff_limit is None:
        diff_limit = symmetric_limit(difference, style.clip_percentile)
    height, width = np.asarray(grey).shape
    factor = _display_factor(width, height)
    panels = [
        _panel(grey, a, limit, style.cmap, style.alpha, factor),
        _panel(grey, b, limit, style.cmap, style.alpha, factor),
        _panel(grey, difference, diff_limit, DIFF_CMAP, style.alpha, factor),
    ]
    captions = [f"A: {shown(names[0])}", f"B: {shown(names[1])}", "B - A"]
    return _png(_layout(panels, captions, limit, diff_limit, shown(title), shown(subtitle), style))


def _layout(panels, captions, limit: float, diff_limit: float, title: str, subtitle: str, style: RenderStyle):
    """The three panels in a row under the title, A and B with one colorbar, B - A with its own."""
    pad, gap, head, caption_h = 10, 8, (52 if subtitle else 34), 18
    side_w, side_h = panels[0].size
    bar_ab = _colorbar(max(40, side_h), limit, style.cmap, style.sign)
    bar_diff = _colorbar(max(40, side_h), diff_limit, DIFF_CMAP, "all")
    row_w = 2 * side_w + gap + 12 + bar_ab.width + 16 + side_w + 12 + bar_diff.width
    title, subtitle = (
        fitted_text(title, 15, max(row_w, TITLE_MAX_WIDTH)),
        fitted_text(subtitle, 11, max(row_w, TITLE_MAX_WIDTH)),
    )
    text_w = max(_font(15).getlength(title), _font(11).getlength(subtitle) if subtitle else 0.0)
    width = max(pad + row_w + pad, int(np.ceil(text_w)) + 2 * pad)
    canvas = Image.new("RGB", (width, head + caption_h + side_h + 20 + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), title, fill=(0, 0, 0), font=_font(15))
    if subtitle:
        draw.text((pad, 30), subtitle, fill=(70, 70, 70), font=_font(11))
    x = pad
    lefts = []
    for i, panel in enumerate(panels):
        lefts.append(x)
        canvas.paste(panel, (x, head + caption_h))
        x += side_w
        if i == 0:
            x += gap
        elif i == 1:
            canvas.paste(bar_ab, (x + 12, head + caption_h))
            x += 12 + bar_ab.width + 16
        else:
            canvas.paste(bar_diff, (x + 12, head + caption_h))
    for left, caption in zip(lefts, captions):
        text = caption
        while len(text) > 4 and _font(11).getlength(text) > side_w:  # a long model name is cut, marked by ...
            text = text[:-4] + "..."
        draw.text((left, head + 2), text, fill=(30, 30, 30), font=_font(11))
    draw.text(
        (pad, head + caption_h + side_h + 4),
        "A, B: score drop on one scale (red: occluding lowers it); B - A: orange where B's is higher, purple lower",
        fill=(70, 70, 70),
        font=_font(10),
    )
    return canvas
