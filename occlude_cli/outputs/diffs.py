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
from .folder import verified_record
from .manifest import current_entries, read_record
from .records import record_grid
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
        """The golden record of the image ``key`` (one line naming ``path`` when the golden run has none), trusted
        (:func:`~occlude_cli.outputs.folder.verified_record`: the run's own, its map unedited and a grid of
        numbers) and well formed (a target class, parameters, top-k entries): one OccludeError naming the file
        otherwise. Its ``map`` comes back as a float64 array (NaN where not computed)."""
        entry = self.entries.get(key) or self.entries.get(shown(key))  # a manifest holds keys as shown
        row = getattr(entry, "row", None)
        if row is None or row.status not in ("ok", "skipped") or read_record(self.folder, row.output) is None:
            raise OccludeError(f"no golden map for {path} in {self.folder} (its run has no result named {key})")
        where = f"{self.folder / row.output}"
        try:
            record = verified_record(self.folder, row.output, getattr(entry, "fingerprint", None))
        except OccludeError as exc:
            raise OccludeError(f"golden {self.folder}: {exc}", params=("golden",)) from None
        if "map" not in record:
            raise OccludeError(f"no golden map for {path} in {self.folder} ({where} holds none)")
        target = record.get("target")
        index = target.get("index") if isinstance(target, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise OccludeError(f"{where}: its target is not a class index (a golden record edited?)")
        entries = record.get("top_k")
        top_k_ok = entries is None or (isinstance(entries, list) and all(_top_k_entry(e) for e in entries))
        if not isinstance(record.get("params"), (dict, type(None))) or not top_k_ok:
            raise OccludeError(f"{where}: its params or top_k are not what occlude writes (a golden record edited?)")
        return {**record, "map": record_grid(record["map"], where)}


def _top_k_entry(entry) -> bool:
    """Is ``entry`` a top-k entry as occlude writes it (a class index, its original score a number or null)?"""
    if not isinstance(entry, dict) or isinstance(entry.get("index"), bool) or not isinstance(entry.get("index"), int):
        return False
    score = entry.get("original")
    return score is None or (isinstance(score, (int, float)) and not isinstance(score, bool) and np.isfinite(score))
