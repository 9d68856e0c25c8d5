"""Pictures of volumes, drawn with Pillow like :mod:`occlude_cli.pictures.render` (same colormap, opacity
rule, frame and colorbar): a montage of axial slices and the three orthogonal planes through a voxel, the
map blended over 0..1 display intensities, voxels shown with their physical aspect ratio (a 2 x 2.6 mm
voxel is drawn 2 x 2.6, not square). Arrays in, PNG bytes out: no explanation objects, so that
``VolumeExplanation._repr_png_`` can use it without an import cycle.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .render import DEFAULT_STYLE, RenderStyle, _font, _frame, _opacity, _png, colorize, draw_markers, shown_values

MAX_TILES = 16
COLUMNS = 4
TILE_SIDE = 160  # display size of the longer physical side of a montage tile, in pixels
PLANE_SIDE = 240


def _edge(mask: np.ndarray) -> np.ndarray:
    """The pixels of a 2-D bool mask that touch a pixel outside it (4-neighbourhood; the border counts)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _tile(
    grey: np.ndarray,
    values: np.ndarray,
    limit: float,
    style: RenderStyle,
    spacing: Tuple[float, float],
    side: int,
    outline: Optional[np.ndarray] = None,
) -> Image.Image:
    """One plane: 0..1 grey with the map blended, scaled to ``side`` pixels on its longer physical side; the
    edge of ``outline`` (bool, a region) drawn in yellow."""
    rows, cols = grey.shape
    height_mm, width_mm = rows * spacing[0], cols * spacing[1]
    scale = side / max(height_mm, width_mm)
    size = (max(1, int(round(width_mm * scale))), max(1, int(round(height_mm * scale))))
    base = Image.fromarray(np.rint(np.clip(grey, 0, 1) * 255).astype(np.uint8), "L").convert("RGBA")
    layer = Image.fromarray(colorize(values, limit, _opacity(values, limit, style.alpha), style.cmap), "RGBA")
    blended = Image.alpha_composite(base, layer).convert("RGB")
    if outline is not None and outline.any():
        pixels = np.asarray(blended).copy()
        pixels[_edge(outline)] = (255, 215, 0)
        blended = Image.fromarray(pixels, "RGB")
    return blended.resize(size, Image.Resampling.NEAREST)


def _toward(vector: np.ndarray) -> str:
    """The patient direction a world (RAS+) vector points to most: R/L, A/P or S/I."""
    axis = int(np.argmax(np.abs(vector[:3])))
    return ("RAS" if vector[axis] > 0 else "LPI")[axis]


_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def orientation_markers(affine: np.ndarray, rows: int, columns: int, rows_up: bool = False) -> Tuple[str, ...]:
    """Orientation letters (top, bottom, left, right) of a picture whose rows follow array axis ``rows`` (down
    the picture; up with ``rows_up``, a flipped plane) and columns array axis ``columns``, from the array's
    voxel -> RAS+ ``affine``: an axial slice of occlude's layout gives ('A', 'P', 'R', 'L')."""
    matrix = np.asarray(affine, dtype=np.float64)
    down, right = matrix[:3, rows] * (-1.0 if rows_up else 1.0), matrix[:3, columns]
    bottom, far_right = _toward(down), _toward(right)
    return (_OPPOSITE[bottom], bottom, _OPPOSITE[far_right], far_right)


def montage_slices(depth: int, max_tiles: int = MAX_TILES) -> List[int]:
    """Every k-th axial slice, k the smallest step giving at most ``max_tiles`` tiles, centred in the volume."""
    step = max(1, int(np.ceil(depth / max_tiles)))
    count = len(range(0, depth, step))
    offset = (depth - 1 - (count - 1) * step) // 2
    return [offset + i * step for i in range(count)]


def montage_png(
    display: np.ndarray,
    values: np.ndarray,
    spacing: Sequence[float],
    affine: np.ndarray,
    title: str,
    subtitle: str,
    style: RenderStyle = DEFAULT_STYLE,
    outline: Optional[np.ndarray] = None,
) -> bytes:
    """Axial slices (at most 16, 4 columns, inferior first) of ``display`` (0..1 grey, (D, H, W)) with the map
    ``values`` blended over them, each labelled with its slice index and z in mm (from ``affine``); one
    colorbar for all, symmetric limits over the whole volume; orientation letters on each slice; the edge of
    ``outline`` (bool (D, H, W), a region) in yellow. With an outline the slices shown are those the region
    crosses (at most 16)."""
    shown, limit = shown_values(values, style)
    slices = montage_slices(display.shape[0])
    if outline is not None and outline.any():
        crossed = np.flatnonzero(outline.any(axis=(1, 2)))
        slices = [int(crossed[i]) for i in montage_slices(len(crossed))]
    tiles = [
        _tile(
            display[d],
            shown[d],
            limit,
            style,
            (spacing[1], spacing[2]),
            TILE_SIDE,
            None if outline is None else outline[d],
        )
        for d in slices
    ]
    for tile in tiles:
        draw_markers(tile, orientation_markers(affine, 1, 2))
    tw, th = tiles[0].size
    gap, label_h = 6, 14
    columns = min(COLUMNS, len(tiles))
    rows = int(np.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * tw + (columns - 1) * gap, rows * (th + label_h) + (rows - 1) * gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (d, tile) in enumerate(zip(slices, tiles)):
        x, y = (i % columns) * (tw + gap), (i // columns) * (th + label_h + gap)
        z = float((np.asarray(affine) @ np.array([d, 0.0, 0.0, 1.0]))[2])
        draw.text((x, y), f"slice {d}  z {z:+.1f} mm", fill=(40, 40, 40), font=_font(10))
        sheet.paste(tile, (x, y + label_h))
    return _png(_frame(sheet, limit, title, subtitle, style))


def planes_png(
    display: np.ndarray,
    values: np.ndarray,
    spacing: Sequence[float],
    peak: Sequence[int],
    title: str,
    subtitle: str,
    style: RenderStyle = DEFAULT_STYLE,
    affine: Optional[np.ndarray] = None,
) -> bytes:
    """The axial, coronal and sagittal planes through voxel ``peak`` (d, h, w), each with its physical aspect
    ratio, superior up in coronal/sagittal (axial: anterior up, patient right on the left); dashed lines
    mark the peak; with the grid's ``affine``, orientation letters on each plane's edges."""
    shown, limit = shown_values(values, style)
    d, h, w = (int(v) for v in peak)
    sd, sh, sw = spacing
    disp = display
    planes = [
        ("axial", disp[d], shown[d], (sh, sw), (h, w), f"slice {d}"),
        (
            "coronal",
            np.flipud(disp[:, h, :]),
            np.flipud(shown[:, h, :]),
            (sd, sw),
            (disp.shape[0] - 1 - d, w),
            f"row {h}",
        ),
        (
            "sagittal",
            np.flipud(disp[:, :, w]),
            np.flipud(shown[:, :, w]),
            (sd, sh),
            (disp.shape[0] - 1 - d, h),
            f"column {w}",
        ),
    ]
    axes = {"axial": (1, 2, False), "coronal": (0, 2, True), "sagittal": (0, 1, True)}
    tiles = []
    for name, grey, values, spacing, (r, c), where in planes:
        tile = _tile(grey, values, limit, style, spacing, PLANE_SIDE)
        if affine is not None:
            draw_markers(tile, orientation_markers(affine, *axes[name]))
        draw = ImageDraw.Draw(tile)
        fy, fx = tile.height / grey.shape[0], tile.width / grey.shape[1]
        cy, cx = (r + 0.5) * fy, (c + 0.5) * fx
        for t in range(0, max(tile.width, tile.height), 8):  # dashed cross hairs through the peak
            draw.line([t, cy, t + 3, cy], fill=(255, 215, 0))
            draw.line([cx, t, cx, t + 3], fill=(255, 215, 0))
        tiles.append((f"{name} ({where})", tile))
    gap, label_h = 10, 14
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) - 1)
    height = max(t.height for _, t in tiles) + label_h
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for label, tile in tiles:
        draw.text((x, 0), label, fill=(40, 40, 40), font=_font(10))
        sheet.paste(tile, (x, label_h))
        x += tile.width + gap
    return _png(_frame(sheet, limit, title, subtitle, style))
