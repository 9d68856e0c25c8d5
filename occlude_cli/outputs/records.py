"""The JSON documents occlude writes: one explanation, a run summary, a check, a comparison.

Builds dicts and formats them; writes nothing (see :mod:`occlude_cli.outputs.write`)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..analyses.checks import CHECK_FIELDS, QUALITY_FIELDS, CheckRow  # noqa: F401  (CHECK_FIELDS: for write)
from ..analyses.explanation import SCHEMA_VERSION, Explanation
from ..core.metrics import finite_or_none, peak
from ..core.quality import concentration
from ..errors import OccludeError
from ..text import json_safe, recover

json_number = finite_or_none  # JSON-safe float: null for None, NaN and inf


def _grid(values: np.ndarray) -> List[list]:
    """Rows of JSON-safe floats (null where not finite): tolist() does the conversion in C, and only the
    non-finite cells, if any, are visited in Python."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.tolist()
    bad = ~np.isfinite(values)
    if bad.any():
        for y, x in zip(*np.nonzero(bad)):
            rows[y][x] = None
    return rows


def format_json(value, indent: int = 0) -> str:
    """JSON with objects indented, lists of numbers on one line and lists of objects one per line:
    readable by people, diff-able, and byte-identical for identical data. Every string goes through the
    outside-text rule (:func:`occlude_cli.text.json_safe`: shown escaped, exact bytes in ``KEY_b64``), so
    the text is strict UTF-8 JSON whatever the file names and labels hold."""
    if indent == 0:
        value = json_safe(value)
    return _format(value, indent)


def _format(value, indent: int) -> str:
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_format(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and all(isinstance(v, (list, dict)) for v in value):
        nested_dicts = any(isinstance(v, dict) for v in value)
        rows = [
            inner + (json.dumps(v, separators=(", ", ": ")) if nested_dicts and _flat(v) else _format(v, indent + 2))
            for v in value
        ]
        return "[\n" + ",\n".join(rows) + "\n" + pad + "]"
    return json.dumps(value, separators=(", ", ": "), allow_nan=False)


def _flat(value) -> bool:
    return not isinstance(value, (dict, list)) or (
        all(not isinstance(v, (dict, list)) for v in (value.values() if isinstance(value, dict) else value))
    )


def concentration_record(values: np.ndarray) -> dict:
    """How concentrated a map is (:func:`occlude_cli.core.quality.concentration`): the share of the total positive
    drop in the top 1, 5 and 10 % of the area, and the Gini index of the absolute map (null where undefined)."""
    return {k: json_number(v) for k, v in concentration(values).items()}


def explanation_header(explanation: Explanation) -> dict:
    """The keys every JSON document about one explanation starts with: schema, model, image, target, score."""
    return explanation.header()


def explanation_record(explanation: Explanation, *, timing: bool = True) -> dict:
    """The JSON document for one explanation (see README, "JSON format")."""
    e = explanation
    occ = e.occlusion
    target = e.target
    drops = occ.drops([target])[:, 0]
    record = {
        **explanation_header(e),
        "params": e.params,
        "map_info": {
            "height": int(occ.size[0]),
            "width": int(occ.size[1]),
            "min": json_number(np.nanmin(e.map)) if np.isfinite(e.map).any() else None,
            "max": json_number(np.nanmax(e.map)) if np.isfinite(e.map).any() else None,
            "peak": peak(e.map),
            "not_computed_pixels": int(np.count_nonzero(~np.isfinite(e.map))),
            "windows": int(len(occ.windows)),
            "forward_passes": int(occ.forward_passes),
            "concentration": concentration_record(e.map),
        },
        "top_k": [
            {
                "index": int(c),
                "label": e.label(c),
                "original": json_number(occ.original_scores[c]),
                "peak": peak(e.maps[i]),
                "concentration": concentration_record(e.maps[i]),
            }
            for i, c in enumerate(e.targets)
        ],
        "windows": [
            {
                "y": int(y),
                "x": int(x),
                "h": int(h),
                "w": int(w),
                "score": json_number(s),
                "drop": json_number(d),
                "top_class": int(t),
                **({} if m is None else {"measured": bool(m)}),
                **({} if np.isfinite(s) else {"finite": False}),
            }
            for (y, x, h, w), s, d, t, m in zip(
                occ.windows.tolist(),
                occ.window_scores[:, target],
                drops,
                np.argmax(np.nan_to_num(occ.window_scores, nan=-np.inf), axis=1),
                occ.measured if occ.measured is not None else [None] * len(occ.windows),
            )
        ],
        "map": _grid(e.map),
        "warnings": list(e.warnings),
    }
    record["map_sha256"] = map_digest(record["map"])  # what --resume and the aggregate verify the map against
    if timing:
        record["timing"] = {k: float(v) for k, v in e.timing.items()}
    return record


def map_digest(grid) -> str:
    """sha256 of a record's ``map`` (rows of floats and nulls) in compact JSON: a map edited in the file no
    longer matches it (floats round-trip exactly through JSON, so a file read back gives the same digest)."""
    return hashlib.sha256(json.dumps(grid, separators=(",", ":")).encode("utf-8")).hexdigest()


def record_grid(values, where: str) -> np.ndarray:
    """A record's ``map`` (nested rows of numbers, null where not computed: 2-D, or 3-D for a volume) as a
    float64 array with NaN for null; one OccludeError naming ``where`` (the file) when it is not such a grid:
    ragged rows, text, booleans, or NaN and infinities (which occlude writes as null, never as numbers)."""
    shape: List[int] = []
    level = values
    while isinstance(level, list) and level:
        shape.append(len(level))
        level = level[0]
    if len(shape) < 2 or not _grid_of(values, shape):
        raise OccludeError(f"{where}: its map is not a grid of numbers (rows of one length, null where not computed)")
    return np.array(_with_nan(values), dtype=np.float64)


def _grid_of(values, shape: Sequence[int]) -> bool:
    if not shape:
        return values is None or (
            isinstance(values, (int, float)) and not isinstance(values, bool) and math.isfinite(values)
        )
    return isinstance(values, list) and len(values) == shape[0] and all(_grid_of(v, shape[1:]) for v in values)


def _with_nan(values):
    return [_with_nan(v) for v in values] if isinstance(values, list) else (np.nan if values is None else values)


def check_document(rows: Sequence[CheckRow], settings: Optional[dict] = None) -> dict:
    """check.json: settings, counts of pass / fail / error, aggregate numbers over the checked images, rows."""
    counts: Dict[str, int] = {"pass": 0, "fail": 0, "error": 0}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    checked = [r for r in rows if r.status in ("pass", "fail")]
    energies = [r.energy_share for r in checked if r.energy_share is not None]
    return {
        "schema": SCHEMA_VERSION,
        "settings": settings or {},
        "counts": counts,
        "summary": {
            "checked": len(checked),
            "pointing_game_accuracy": json_number(np.mean([bool(r.pointing_game) for r in checked]))
            if checked
            else None,
            "energy_share_mean": json_number(np.mean(energies)) if energies else None,
            "energy_share_min": json_number(np.min(energies)) if energies else None,
            **{f"{key}_mean": _mean_of(checked, key) for key in QUALITY_FIELDS},
        },
        "images": [dict(row.__dict__) for row in rows],
    }


def _mean_of(rows: Sequence[CheckRow], key: str) -> Optional[float]:
    values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
    return json_number(np.mean(values)) if values else None


# ------------------------------------------------------------------------------------ run summaries

SUMMARY_FIELDS = (
    "path",
    "status",
    "target_index",
    "target_label",
    "original_score",
    "peak_z",
    "peak_y",
    "peak_x",
    "peak_value",
    "seconds",
    "output",
    "error",
    "warning",
)


@dataclass
class SummaryRow:
    """One image's line in summary.json / summary.csv. status: ok | failed | skipped | pending (a stopped run
    did not reach the image; ``--resume`` runs it)."""

    path: str
    status: str
    target_index: Optional[int] = None
    target_label: Optional[str] = None
    original_score: Optional[float] = None
    peak_z: Optional[int] = None  # volumes: the slice of the peak (model-grid voxels; None for 2-D maps)
    peak_y: Optional[int] = None
    peak_x: Optional[int] = None
    peak_value: Optional[float] = None
    seconds: Optional[float] = None
    output: Optional[str] = None
    error: Optional[str] = None
    warning: Optional[str] = None

    @classmethod
    def from_record(cls, record: dict, status: str, output: str, seconds: Optional[float]) -> SummaryRow:
        info = record.get("map_info", {}).get("peak", {})
        warnings = record.get("warnings") or []
        return cls(
            path=str(recover(record.get("image", {}), "path")),
            status=status,
            target_index=record.get("target", {}).get("index"),
            target_label=recover(record.get("target", {}), "label"),
            original_score=record.get("score", {}).get("original"),
            peak_z=info.get("z"),
            peak_y=info.get("y"),
            peak_x=info.get("x"),
            peak_value=info.get("value"),
            seconds=seconds,
            output=output,
            warning="; ".join(warnings) if warnings else None,
        )


def summary_document(
    rows: Sequence[SummaryRow], run: Optional[dict] = None, interrupted: Optional[bool] = None
) -> dict:
    """summary.json: counts (``pending``: images a stopped run did not reach), whether the run was interrupted
    (``interrupted``: by default, whether any row is pending), the number of rows with a warning, one row per
    image and, for a folder run, the ``run`` block (which job and shards the rows are of; see
    :mod:`occlude_cli.outputs.folder`)."""
    counts: Dict[str, int] = {"ok": 0, "failed": 0, "skipped": 0, "pending": 0}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    document = {
        "counts": counts,
        "interrupted": bool(counts["pending"]) if interrupted is None else bool(interrupted),
        "warnings": sum(1 for r in rows if r.warning),
        "images": [r.__dict__ for r in rows],
    }
    if run is not None:
        document["run"] = run
    return document
