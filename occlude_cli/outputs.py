"""Writing results: the JSON schema, .npy maps and PNGs, each written atomically (temp file + rename)
so that an interrupted run never leaves a half-written file and never clobbers a good one with junk."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .errors import OccludeError
from .explain import Explanation, ScaleStudy
from .render import heatmap_png, overlay_png

SCHEMA_VERSION = 1


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    A killed or interrupted process leaves either the old file or the new one, never a mix. The data is
    not fsynced: that would only matter for a power cut, and costs a disk flush per file (a fifth of a
    second each on some virtual disks, more than the whole rest of the writing)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OccludeError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OccludeError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def atomic_write_json(path, document) -> Path:
    """``document`` formatted by :func:`format_json`, with a final newline, written atomically."""
    return atomic_write_bytes(path, (format_json(document) + "\n").encode("utf-8"))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def json_number(value) -> Optional[float]:
    """JSON-safe float: None, NaN and inf (not computed, undefined) become null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
    readable by people, diff-able, and byte-identical for identical data."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {format_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and all(isinstance(v, (list, dict)) for v in value):
        nested_dicts = any(isinstance(v, dict) for v in value)
        rows = [
            inner + (json.dumps(v, separators=(", ", ": ")) if nested_dicts and _flat(v) else format_json(v, indent + 2))
            for v in value
        ]
        return "[\n" + ",\n".join(rows) + "\n" + pad + "]"
    return json.dumps(value, separators=(", ", ": "), allow_nan=False)


def _flat(value) -> bool:
    return not isinstance(value, (dict, list)) or (
        all(not isinstance(v, (dict, list)) for v in (value.values() if isinstance(value, dict) else value))
    )


def peak(values: np.ndarray) -> Dict[str, object]:
    """Location (model-input pixels) and value of the map's maximum."""
    finite = np.where(np.isfinite(values), values, -np.inf)
    y, x = np.unravel_index(int(np.argmax(finite)), values.shape)
    return {"y": int(y), "x": int(x), "value": json_number(values[y, x])}


def explanation_header(explanation: Explanation) -> dict:
    """The keys every JSON document about one explanation starts with: schema, model, image, target, score."""
    e = explanation
    width, height = e.image.original_size
    return {
        "schema": SCHEMA_VERSION,
        "model": e.model,
        "image": {
            "path": str(e.image.path) if e.image.path is not None else None,
            "width": int(width),
            "height": int(height),
            "crop_box": [float(v) for v in e.image.crop_box],
        },
        "target": {"index": e.target, "label": e.label(e.target)},
        "score": {"kind": e.score_kind, "original": float(e.occlusion.original_scores[e.target])},
    }


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
        },
        "top_k": [
            {
                "index": int(c),
                "label": e.label(c),
                "original": float(occ.original_scores[c]),
                "peak": peak(e.maps[i]),
            }
            for i, c in enumerate(e.targets)
        ],
        "windows": [
            {"y": int(y), "x": int(x), "h": int(h), "w": int(w), "score": float(s), "drop": float(d),
             "top_class": int(t), **({} if m is None else {"measured": bool(m)})}
            for (y, x, h, w), s, d, t, m in zip(
                occ.windows.tolist(), occ.window_scores[:, target], drops, np.argmax(occ.window_scores, axis=1),
                occ.measured if occ.measured is not None else [None] * len(occ.windows),
            )
        ],
        "map": _grid(e.map),
    }
    if timing:
        record["timing"] = {k: float(v) for k, v in e.timing.items()}
    return record


def _title(explanation: Explanation, index: int) -> str:
    label = explanation.label(index)
    name = f"{label} (class {index})" if label else f"class {index}"
    kind = "probability" if explanation.score_kind == "prob" else "logit"
    return f"{name}: {kind} {explanation.occlusion.original_scores[index]:.4f}"


def _subtitle(explanation: Explanation) -> str:
    p = explanation.params
    return (
        f"occlusion: patch {p['patch'][0]}x{p['patch'][1]}, stride {p['stride'][0]}x{p['stride'][1]}, "
        f"baseline {p['baseline']}"
    )


def _write_map(out_dir: Path, stem: str, explanation: Explanation, values: np.ndarray, subtitle: str,
               npy: bool) -> List[Path]:
    """STEM.overlay.png, STEM.heatmap.png and (with ``npy``) STEM.npy for one map of an explanation's image."""
    e = explanation
    written = [
        atomic_write_bytes(out_dir / f"{stem}.overlay.png",
                           overlay_png(e.image.original, values, e.image.crop_box, _title(e, e.target), subtitle)),
        atomic_write_bytes(out_dir / f"{stem}.heatmap.png", heatmap_png(values)),
    ]
    if npy:
        written.append(atomic_write_bytes(out_dir / f"{stem}.npy", npy_bytes(values.astype(np.float32))))
    return written


def write_explanation(
    explanation: Explanation,
    out_dir,
    stem: str,
    *,
    npy: bool = True,
    all_classes: bool = False,
    timing: bool = True,
    extra: Optional[dict] = None,
) -> List[Path]:
    """Write STEM.json, STEM.overlay.png, STEM.heatmap.png and STEM.npy (and the extras asked for).

    The JSON is written last, so its presence marks a complete set of outputs (what --resume checks).
    """
    out_dir = Path(out_dir)
    e = explanation
    written = _write_map(out_dir, stem, e, e.map, _subtitle(e), npy)
    if npy and len(e.targets) > 1:
        written.append(atomic_write_bytes(out_dir / f"{stem}.topk.npy", npy_bytes(e.maps.astype(np.float32))))
    if all_classes:
        written.append(atomic_write_bytes(out_dir / f"{stem}.classes.npy", npy_bytes(e.class_maps())))
        written.append(atomic_write_bytes(out_dir / f"{stem}.top_class.npy",
                                          npy_bytes(e.occlusion.top_class_map().astype(np.int32))))
    record = explanation_record(e, timing=timing)
    record.update(extra or {})
    record["outputs"] = sorted(p.name for p in written)
    written.append(atomic_write_json(out_dir / f"{stem}.json", record))
    return written


def write_scale_study(
    study: ScaleStudy,
    out_dir,
    stem: str,
    *,
    npy: bool = True,
    timing: bool = True,
    multiscale: bool = False,
    extra: Optional[dict] = None,
    metrics: Optional[List[dict]] = None,
) -> List[Path]:
    """Each scale's outputs as STEM.patch-HxW.*, the multi-scale map (if asked) as STEM.multiscale.*, and
    STEM.scales.json (patches, pairwise rank correlation, files) written last."""
    out_dir = Path(out_dir)
    written: List[Path] = []
    names = []
    for i, e in enumerate(study.explanations):
        h, w = e.params["patch"]
        name = f"{stem}.patch-{h}x{w}"
        names.append(name)
        scale_extra = {**(extra or {}), **({"metrics": metrics[i]} if metrics else {})}
        written += write_explanation(e, out_dir, name, npy=npy, timing=timing, extra=scale_extra)
    first = study.explanations[0]
    multiscale_name = None
    if multiscale:
        multiscale_name = f"{stem}.multiscale"
        patches = ", ".join(f"{h}x{w}" for h, w in study.patches)
        # the .npy is written even with --no-npy: STEM.scales.json names it as the multi-scale map
        written += _write_map(out_dir, multiscale_name, first, study.mean_map(),
                              f"multi-scale mean of patches {patches} (each scaled to [-1, 1])", npy=True)
    document = {
        "schema": SCHEMA_VERSION,
        "image": {"path": str(first.image.path) if first.image.path is not None else None},
        "target": {"index": first.target, "label": first.label(first.target)},
        "patches": [list(p) for p in study.patches],
        "rank_correlation": [[json_number(v) for v in row] for row in study.rank_correlation],
        "maps": [f"{n}.json" for n in names],
        "multiscale": f"{multiscale_name}.npy" if multiscale_name else None,
        "deletion_auc": [m["deletion_auc"] for m in metrics] if metrics else None,
        "insertion_auc": [m["insertion_auc"] for m in metrics] if metrics else None,
        **(extra or {}),
    }
    written.append(atomic_write_json(out_dir / f"{stem}.scales.json", document))
    return written
