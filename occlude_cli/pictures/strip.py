"""The picture of the model parameter randomisation test (the figure of Adebayo et al. 2018): the original map,
then one map per randomised layer, in a strip per test (cascading, independent), each map over the grey model
input on its own colour scale (a randomised model's drops have their own size), captioned with its layer and its
Spearman correlation with the original. Long strips wrap. Arrays in, PNG bytes out (Pillow)."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..text import shown
from .render import _font, _opacity, _png, colorize, fitted_text, peak_slice, symmetric_limit

TILE = 112  # pixels per map
PER_ROW = 12  # maps per line before a strip wraps
CAPTION = 26  # two lines of caption under a tile
GAP = 6

Tile = Tuple[np.ndarray, str, str]  # (map, first caption line, second caption line)


def _tile(grey: np.ndarray, values: np.ndarray) -> Image.Image:
    """One map blended over the grey input on its own symmetric scale, resized to TILE pixels (nearest)."""
    limit = symmetric_limit(values)
    base = Image.fromarray(np.rint(np.clip(grey, 0, 1) * 255).astype(np.uint8), "L").convert("RGBA")
    layer = Image.fromarray(colorize(values, limit, _opacity(values, limit, 0.85)), "RGBA")
    blended = Image.alpha_composite(base, layer).convert("RGB")
    height, width = grey.shape
    scale = TILE / max(height, width)
    return blended.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.NEAREST)


def _short(text: str, limit: int = 18) -> str:
    text = shown(text)
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def strip_png(grey: np.ndarray, rows: Sequence[Tuple[str, List[Tile]]], title: str, subtitle: str = "") -> bytes:
    """``rows``: (the strip's name, its tiles); each tile a map (2-D, or a volume's (D, H, W): the axial slice
    through the first map's peak is shown) with two caption lines. ``grey``: the model input as 0..1 grey."""
    grey = np.asarray(grey, dtype=np.float64)
    if grey.ndim == 3:
        z = peak_slice(rows[0][1][0][0])
        grey = grey[z]
        rows = [(name, [(values[z], a, b) for values, a, b in tiles]) for name, tiles in rows]
    tile_w, tile_h = _tile(grey, np.zeros_like(grey)).size
    columns = min(PER_ROW, max(len(tiles) for _, tiles in rows))
    lines = [(name, tiles[i : i + PER_ROW], i == 0) for name, tiles in rows for i in range(0, len(tiles), PER_ROW)]
    label_h, head = 16, 40
    width = columns * (tile_w + GAP) + GAP
    height = head + sum((label_h if first else 0) + tile_h + CAPTION + GAP for _, _, first in lines)
    sheet = Image.new("RGB", (max(width, 480), height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 4), fitted_text(shown(title), 13, sheet.width - 2 * GAP), fill=(0, 0, 0), font=_font(13))
    draw.text((GAP, 22), fitted_text(shown(subtitle), 10, sheet.width - 2 * GAP), fill=(80, 80, 80), font=_font(10))
    y = head
    for name, tiles, first in lines:
        if first:
            draw.text((GAP, y), shown(name), fill=(20, 20, 20), font=_font(12))
            y += label_h
        for i, (values, top, bottom) in enumerate(tiles):
            x = GAP + i * (tile_w + GAP)
            sheet.paste(_tile(grey, np.asarray(values, dtype=np.float64)), (x, y))
            draw.text((x, y + tile_h + 1), _short(top), fill=(40, 40, 40), font=_font(10))
            draw.text((x, y + tile_h + 13), _short(bottom), fill=(90, 90, 90), font=_font(10))
        y += tile_h + CAPTION + GAP
    return _png(sheet)


def rho_text(value: Optional[float]) -> str:
    return "rho n/a" if value is None or not math.isfinite(float(value)) else f"rho {float(value):+.2f}"
