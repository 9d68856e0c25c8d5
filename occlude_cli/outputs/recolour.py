"""``--color-limit shared`` for a folder run: once every map of the run is written, one colour limit over all of
them (:func:`~occlude_cli.pictures.render.shared_limit`, from the maps the per-image records hold, exact), and every
overlay, heatmap and panels picture drawn again on it. Each record then lists its new pictures' checksums (what
``--resume`` verifies) and the limit (``color_limit``). Only what the current job's entries list is read."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from ..errors import OccludeError
from ..loaders.images import load_image
from ..pictures.render import RenderStyle, heatmap_png, overlay_png, panels_png, shared_limit
from ..text import recover
from .folder import saved_map
from .manifest import Entry, read_record
from .write import atomic_write_bytes, atomic_write_json, file_record, picture_subtitle, picture_title


def _photo_records(out_dir: Path, entries: Sequence[Entry], notes: List[str]) -> List[tuple]:
    """(entry, marker, record) of every finished photo result (a medical input's pictures keep their own limit:
    noted)."""
    found = []
    for entry in entries:
        marker = entry.row.output
        if entry.row.status not in ("ok", "skipped") or not marker:
            continue
        record = read_record(out_dir, marker)
        if record is None or "map" not in record:
            continue
        if "crop_box" not in (record.get("image") or {}):
            notes.append(f"{entry.row.path}: not a photo; its pictures keep their own colour limit")
            continue
        found.append((entry, marker, record))
    return found


def recolour_shared(out_dir, entries: Sequence[Entry], style: RenderStyle) -> List[str]:
    """Draw every photo result of ``entries`` on one shared colour limit (see the module); returns notes."""
    out_dir = Path(out_dir)
    notes: List[str] = []
    results = _photo_records(out_dir, entries, notes)
    if not results:
        return notes
    limit = shared_limit((saved_map(out_dir, marker) for _, marker, _ in results), style)
    fixed = style.with_limit(limit)
    for entry, marker, record in results:
        try:
            _redraw(out_dir, marker, record, entry.row.path, fixed)
        except OccludeError as exc:  # the image went away since: its pictures keep the limit they had
            notes.append(f"{entry.row.path}: pictures not redrawn on the shared colour limit ({exc})")
    return notes


def _redraw(out_dir: Path, marker: str, record: dict, image_path: str, style: RenderStyle) -> None:
    """One result's pictures drawn again with ``style`` (a fixed limit), then its record rewritten last."""
    stem = marker[: -len(".json")]
    listed = {item.get("name"): item for item in record.get("outputs") or [] if isinstance(item, dict)}
    values = saved_map(out_dir, marker)
    original = load_image(image_path)
    crop_box = tuple(float(v) for v in record["image"]["crop_box"])
    target = record.get("target") or {}
    score = record.get("score") or {}
    title = picture_title(recover(target, "label"), int(target["index"]), score["kind"], float(score["original"]))
    subtitle = picture_subtitle(record["params"])
    name = stem.rsplit("/", 1)[-1]
    drawn = {
        f"{name}.overlay.png": lambda: overlay_png(original, values, crop_box, title, subtitle, style),
        f"{name}.heatmap.png": lambda: heatmap_png(values, title, subtitle, style),
        f"{name}.panels.png": lambda: panels_png(original, values, crop_box, title, subtitle, style),
    }
    folder = (out_dir / marker).parent
    for picture, draw in drawn.items():
        if picture in listed:
            path = atomic_write_bytes(folder / picture, draw())
            listed[picture].update(file_record(path))
    record["color_limit"] = style.color_limit
    atomic_write_json(out_dir / marker, record, seal=True)
