"""What an explanation diff writes: per input STEM.diff.npy (map of B minus map of A), STEM.a.npy and STEM.b.npy
(both maps, model-input resolution, float32) and STEM.diff.png; for the run diff.json and diff.csv. And what it
reads of a golden run (``occlude diff --golden DIR``): the current job's manifest and per-image records, nothing
that the manifest does not list. Every write is atomic."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..analyses.diff import SIMILARITY_FIELDS, MapDiff
from ..analyses.explanation import SCHEMA_VERSION
from ..errors import OccludeError
from ..pictures.diffs import diff_png
from ..pictures.render import RenderStyle
from ..text import restore, shown
from .manifest import current_entries, read_record
from .write import atomic_write_bytes, atomic_write_json, csv_bytes, npy_bytes

DIFF_FIELDS = (
    "path",
    "status",
    "target_index",
    "target_label",
    "a_index",
    "a_label",
    "a_score",
    "b_index",
    "b_label",
    "b_score",
    "top1_agrees",
    *SIMILARITY_FIELDS,
    "gates",
    "failed_gates",
    "diff_png",
    "error",
)


def diff_row(path: str, key: str, diff: MapDiff) -> dict:
    """One input's row of diff.json (flat, as diff.csv lists it) from its :class:`MapDiff`."""
    a, b = diff.prediction_a or {}, diff.prediction_b or {}
    return {
        "path": path,
        "key": key,
        "status": "ok",
        "target_index": diff.target,
        "target_label": diff.target_label,
        "a_index": a.get("index"),
        "a_label": a.get("label"),
        "a_score": a.get("score"),
        "b_index": b.get("index"),
        "b_label": b.get("label"),
        "b_score": b.get("score"),
        "top1_agrees": diff.top1_agrees,
        **diff.similarity,
        "diff_npy": f"{key}.diff.npy",
        "a_npy": f"{key}.a.npy",
        "b_npy": f"{key}.b.npy",
        "diff_png": f"{key}.diff.png",
    }


def write_diff_maps(out_dir, key: str, diff: MapDiff) -> List[Path]:
    """STEM.diff.npy (B - A), STEM.a.npy and STEM.b.npy (float32)."""
    out_dir = Path(out_dir)
    return [
        atomic_write_bytes(out_dir / f"{key}.diff.npy", npy_bytes(diff.difference.astype(np.float32))),
        atomic_write_bytes(out_dir / f"{key}.a.npy", npy_bytes(diff.map_a.astype(np.float32))),
        atomic_write_bytes(out_dir / f"{key}.b.npy", npy_bytes(diff.map_b.astype(np.float32))),
    ]


def write_diff_picture(
    out_dir,
    key: str,
    grey: np.ndarray,
    map_a: np.ndarray,
    map_b: np.ndarray,
    *,
    title: str,
    subtitle: str,
    names: Tuple[str, str],
    style: RenderStyle,
) -> Path:
    """STEM.diff.png (see :func:`~occlude_cli.pictures.diffs.diff_png`)."""
    png = diff_png(grey, map_a, map_b, title=title, subtitle=subtitle, names=names, style=style)
    return atomic_write_bytes(Path(out_dir) / f"{key}.diff.png", png)


def read_diff_maps(out_dir, row: dict) -> Tuple[np.ndarray, np.ndarray]:
    """The two maps a row's STEM.a.npy and STEM.b.npy hold (float64)."""
    out_dir = Path(out_dir)
    return tuple(  # type: ignore[return-value]
        np.load(out_dir / row[name], allow_pickle=False).astype(np.float64) for name in ("a_npy", "b_npy")
    )


def write_diff_summary(document: dict, out_dir) -> List[Path]:
    """diff.json (the whole document) and diff.csv (one row per input), atomically."""
    out_dir = Path(out_dir)
    rows = []
    for row in document["images"]:
        flat = dict(row)
        flat["failed_gates"] = "; ".join(
            f"{f['gate']} {f['value']} (threshold {f['threshold']})" for f in row.get("failed_gates") or []
        )
        rows.append(flat)
    return [
        atomic_write_json(out_dir / "diff.json", {"schema": SCHEMA_VERSION, **document}),
        atomic_write_bytes(out_dir / "diff.csv", csv_bytes(DIFF_FIELDS, rows)),
    ]


# ------------------------------------------------------------------------------------ golden runs


class GoldenRun:
    """An earlier ``occlude run ... --out DIR`` read as golden maps: its settings (the current job's manifest)
    and, per image key, the record holding its map."""

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise OccludeError(
                f"golden must be the folder of an earlier occlude run: {self.folder}", params=("golden",)
            )
        manifest, entries, _state = current_entries(self.folder)
        if manifest is None:
            raise OccludeError(
                f"{self.folder} holds no occlude run (no manifest.json): golden maps come from 'occlude run --out DIR'",
                params=("golden",),
            )
        self.settings = restore(manifest.get("settings") or {})
        self.model = manifest.get("model") or {}
        if len(self.settings.get("scales") or []) > 1:
            raise OccludeError(
                f"the golden run in {self.folder} used several patch sizes: diff takes a run of one patch size",
                params=("golden",),
            )
        self.entries: Dict[str, object] = {e.key: e for e in entries if e.key is not None}

    @property
    def target_rule(self) -> Optional[str]:
        """The golden run's target option (None: the top-1 of each image)."""
        target = (self.settings.get("options") or {}).get("target")
        return None if target is None else str(target)

    def record(self, key: str, path) -> dict:
        """The golden record of the image ``key`` (one line naming ``path`` when the golden run has none)."""
        entry = self.entries.get(key) or self.entries.get(shown(key))  # a manifest holds keys as shown
        row = getattr(entry, "row", None)
        record = read_record(self.folder, row.output) if row is not None and row.status in ("ok", "skipped") else None
        if record is None or not isinstance(record.get("map"), list):
            raise OccludeError(f"no golden map for {path} in {self.folder} (its run has no result named {key})")
        return record
