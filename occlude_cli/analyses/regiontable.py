"""Region tables: how a medical explanation's importance falls on the regions of a label map (an atlas, a
segmentation), a table a regulator can read. Per region: the share of the map's positive importance inside it,
the mean drop over its voxels, its peak drop and its voxel count on the model grid; the voxels outside every
region as one more row; and per axial slice of the model grid, the importance it holds. Computes, writes
nothing (the writers are in :mod:`occlude_cli.outputs.volumes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..core.metrics import finite_or_none
from ..errors import OccludeError
from ..loaders.labels import LabelMap, labels_on_grid, read_label_map
from ..loaders.volumes import PreparedVolume

OUTSIDE = "(outside every region)"


class RegionLabels:
    """A label map given for every input of a run (``--regions``): read once (an RT-STRUCT, whose contours
    are drawn on each scan, once per input), placed on each input's model grid through world coordinates."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self._read: Optional[LabelMap] = None
        if not self.path.is_file():
            raise OccludeError(f"regions not found: {self.path}", params=("regions",))

    def checked(self) -> RegionLabels:
        """Read now (a bad file is one error before any input); an RT-STRUCT waits for its scans."""
        from ..loaders.dicom import _dcmread
        from ..loaders.labels import RTSTRUCT_SOP_CLASS

        if not self.path.name.lower().endswith((".nii", ".nii.gz")):
            if str(_dcmread(self.path, defer=True).get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS:
                return self
        self._read = read_label_map(self.path, what="regions")
        if not self._read.labels():
            raise OccludeError(f"regions {self.path}: the label map is empty (every voxel 0)", params=("regions",))
        return self

    def on_grid(self, prepared: PreparedVolume) -> LabelMap:
        return self._read or read_label_map(self.path, prepared.volume, what="regions")


def region_table(values: np.ndarray, prepared: PreparedVolume, labels: LabelMap) -> dict:
    """The region table of a map ``values`` on ``prepared``'s model grid (see the module docstring), JSON-ready:
    ``regions`` (one row per label present on the grid, then the outside row), ``slices`` (one row per axial
    slice: its z in mm, the positive importance it holds and its share) and ``positive_total``."""
    grid_labels = labels_on_grid(labels, prepared.grid, prepared.volume, "regions")
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    positive = np.where(finite & (values > 0), values, 0.0)
    total = float(positive.sum())
    rows: List[dict] = []
    present = [int(v) for v in np.unique(grid_labels) if v != 0]
    for label in present + [0]:
        inside = grid_labels == label
        if label == 0 and not inside.any():
            continue
        rows.append(_row(label, labels.names.get(label) if label else OUTSIDE, inside, values, finite, positive, total))
    missing = sorted(set(labels.labels()) - set(present))
    return {
        "label_map": {"path": labels.path, "kind": labels.kind, "labels": len(labels.labels())},
        "positive_total": finite_or_none(total),
        "regions": rows,
        "regions_not_on_grid": [{"label": m, "name": labels.names.get(m)} for m in missing],
        "slices": slice_totals(values, prepared),
    }


def _row(label: int, name, inside, values, finite, positive, total: float) -> dict:
    covered = inside & finite
    return {
        "label": int(label),
        "name": name,
        "voxels": int(np.count_nonzero(inside)),
        "positive_share": finite_or_none(float(positive[inside].sum()) / total) if total > 0 else None,
        "positive_sum": finite_or_none(float(positive[inside].sum())),
        "mean_drop": finite_or_none(float(values[covered].mean())) if covered.any() else None,
        "max_drop": finite_or_none(float(values[covered].max())) if covered.any() else None,
    }


def slice_totals(values: np.ndarray, prepared: PreparedVolume) -> List[Dict[str, object]]:
    """Per axial slice of the model grid (one for a 2-D slice): its index, z in mm, the positive importance it
    holds, its share of the whole and its mean drop."""
    values = np.asarray(values, dtype=np.float64)
    stack = values if values.ndim == 3 else values[None]
    positive = np.where(np.isfinite(stack) & (stack > 0), stack, 0.0)
    total = float(positive.sum())
    affine = np.asarray(prepared.grid.affine, dtype=np.float64)
    out: List[Dict[str, object]] = []
    for index in range(stack.shape[0]):
        point = np.array([index, 0.0, 0.0, 1.0]) if values.ndim == 3 else np.array([0.0, 0.0, 0.0, 1.0])
        plane = stack[index]
        finite = np.isfinite(plane)
        out.append(
            {
                "slice": index,
                "z_mm": round(float((affine @ point)[2]), 4),
                "positive_sum": finite_or_none(float(positive[index].sum())),
                "positive_share": finite_or_none(float(positive[index].sum()) / total) if total > 0 else None,
                "mean_drop": finite_or_none(float(plane[finite].mean())) if finite.any() else None,
            }
        )
    return out
