"""What occlude writes for medical inputs: the JSON (windows as z, y, x, d, h, w; the input's geometry; the
peak in voxels and world mm), the map as ``.npy`` and as NIfTI on the input's own grid and affine, and the
pictures: for volumes a montage of axial slices and the three orthogonal planes through the peak
(:mod:`occlude_cli.pictures.montage`), for 2-D DICOM slices the usual overlay and heatmap. The map is
blended over the windowed intensities: the model's window, else the file's, else the 1st-99th percentile.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..analyses.medical import VolumeExplanation
from ..analyses.regiontable import region_table
from ..loaders.nifti import write_nifti_map
from ..pictures import montage
from ..pictures.render import DEFAULT_STYLE, RenderStyle, heatmap_png, overlay_png, score_word
from .records import _grid, concentration_record, explanation_record, json_number
from .write import _undo as undo_writes
from .write import atomic_write_bytes, atomic_write_json, csv_bytes, npy_bytes, output_records


def _title(e: VolumeExplanation) -> str:
    label = e.label(e.target)
    name = f"{label} (class {e.target})" if label else f"class {e.target}"
    return f"{name}: {score_word(e.score_kind)} {e.occlusion.original_scores[e.target]:.4f}"


def _subtitle(e: VolumeExplanation) -> str:
    p = e.params
    pre = p["preprocessing"]
    transform = pre.get("transform") or "none"
    if transform == "window" and e.prepared.window is not None:
        transform = f"window L {e.prepared.window[0]:g} W {e.prepared.window[1]:g}"
    elif transform == "intensity_range":
        transform = f"intensity range {pre['intensity_range'][0]:g}..{pre['intensity_range'][1]:g}"
    return (
        f"occlusion: patch {'x'.join(map(str, p['patch']))}, stride {'x'.join(map(str, p['stride']))}, "
        f"baseline {p['baseline']}; {e.prepared.volume.kind}, {transform}"
    )


def _markers(e: VolumeExplanation) -> Optional[tuple]:
    """A slice's orientation letters (top, bottom, left, right) from its geometry; None without one."""
    if "geometry" in e.prepared.volume.meta:  # no patient position in the file: no directions to show
        return None
    return montage.orientation_markers(e.prepared.volume.affine, 0, 1)


def montage_png(
    e: VolumeExplanation,
    style: RenderStyle = DEFAULT_STYLE,
    *,
    title: Optional[str] = None,
    subtitle: Optional[str] = None,
    outline: Optional[np.ndarray] = None,
) -> bytes:
    """STEM.montage.png: axial slices of the model grid with the map over the windowed intensities (and a
    region's ``outline``, bool on the model grid, for a check)."""
    grid = e.prepared.grid
    if subtitle is None:
        subtitle = _subtitle(e) + f"; axial slices of the {'x'.join(map(str, grid.data.shape))} model grid"
    return montage.montage_png(
        e.prepared.display, e.map, grid.spacing, grid.affine, title or _title(e), subtitle, style, outline
    )


def planes_png(e: VolumeExplanation, style: RenderStyle = DEFAULT_STYLE) -> bytes:
    """STEM.planes.png: axial, coronal and sagittal planes through the centre of the map's peak plateau."""
    peak = e.peak()
    world = ", ".join(f"{v:+.1f}" for v in peak["world_mm"])
    subtitle = _subtitle(e) + f"; peak at voxel {tuple(peak['voxel'])}, RAS ({world}) mm"
    grid = e.prepared.grid
    return montage.planes_png(
        e.prepared.display, e.map, grid.spacing, peak["voxel"], _title(e), subtitle, style, grid.affine
    )


def volume_record(e: VolumeExplanation, *, timing: bool = True) -> dict:
    """The JSON document of a medical explanation. 2-D slices: the photo record (windows y, x, h, w, the
    map) plus the ``input`` block; volumes: windows as z, y, x, d, h, w and the map in STEM.npy (32^3 values
    do not belong in a JSON file)."""
    if e.prepared.ndim == 2:
        record = explanation_record(e, timing=timing)
        record["peak"] = e.peak()
        return record
    occ = e.occlusion
    target = e.target
    drops = occ.drops([target])[:, 0]
    top = np.argmax(np.nan_to_num(occ.window_scores, nan=-np.inf), axis=1)
    finite = np.isfinite(e.map)
    record = {
        **e.header(),
        "params": e.params,
        "map_info": {
            "depth": int(occ.size[0]),
            "height": int(occ.size[1]),
            "width": int(occ.size[2]),
            "min": json_number(np.nanmin(e.map)) if finite.any() else None,
            "max": json_number(np.nanmax(e.map)) if finite.any() else None,
            "peak": _peak_zyx(e),
            "not_computed_voxels": int(np.count_nonzero(~finite)),
            "windows": int(len(occ.windows)),
            "forward_passes": int(occ.forward_passes),
            "concentration": concentration_record(e.map),
        },
        "peak": e.peak(),
        "top_k": [
            {
                "index": int(c),
                "label": e.label(c),
                "original": json_number(occ.original_scores[c]),
                "concentration": concentration_record(e.maps[i]),
            }
            for i, c in enumerate(e.targets)
        ],
        "windows": [
            {
                "z": int(z),
                "y": int(y),
                "x": int(x),
                "d": int(d),
                "h": int(h),
                "w": int(w),
                "score": json_number(s),
                "drop": json_number(dr),
                "top_class": int(t),
                **({} if np.isfinite(s) else {"finite": False}),
            }
            for (z, y, x, d, h, w), s, dr, t in zip(occ.windows.tolist(), occ.window_scores[:, target], drops, top)
        ],
        "map": None,  # in STEM.npy (and STEM.map.nii.gz on the input's grid)
        "warnings": list(e.warnings),
    }
    if timing:
        record["timing"] = {k: float(v) for k, v in e.timing.items()}
    return record


def _peak_zyx(e: VolumeExplanation) -> dict:
    p = e.peak()
    z, y, x = p["voxel"]
    return {"z": z, "y": y, "x": x, "value": p["value"]}


def write_volume_explanation(
    explanation: VolumeExplanation,
    out_dir,
    stem: str,
    *,
    npy: bool = True,
    nifti: bool = True,
    all_classes: bool = False,
    timing: bool = True,
    extra: Optional[dict] = None,
    style: RenderStyle = DEFAULT_STYLE,
    regions=None,
    dicom_out: bool = False,
    **_ignored,
) -> List[Path]:
    """STEM.npy, STEM.map.nii.gz (the map on the input's own grid with its affine), the pictures
    (volumes: STEM.montage.png and STEM.planes.png; 2-D slices: STEM.overlay.png and STEM.heatmap.png), with
    ``regions`` (a :class:`~occlude_cli.analyses.regiontable.RegionLabels`) the region table (STEM.regions.csv,
    STEM.slices.csv and the JSON's ``regions``), with ``dicom_out`` the DICOM objects of
    :func:`~occlude_cli.outputs.dicomout.write_dicom_outputs`, and STEM.json, written last (its presence marks a
    complete set, as for photos)."""
    out_dir = Path(out_dir)
    e = explanation
    written: List[Path] = []
    table = region_table(e.map, e.prepared, regions.on_grid(e.prepared)) if regions is not None else None
    try:
        if table is not None:
            written += write_region_table(table, out_dir, stem)
        picture = _write_pictures(e, out_dir, stem, style, written)
        if dicom_out:
            from .dicomout import write_dicom_outputs

            seed = str((extra or {}).get("fingerprint") or stem)
            written += write_dicom_outputs(e, out_dir, stem, picture, seed)
        if npy:
            written.append(atomic_write_bytes(out_dir / f"{stem}.npy", npy_bytes(e.map.astype(np.float32))))
            if len(e.targets) > 1:
                written.append(atomic_write_bytes(out_dir / f"{stem}.topk.npy", npy_bytes(e.maps.astype(np.float32))))
        if all_classes:
            written.append(atomic_write_bytes(out_dir / f"{stem}.classes.npy", npy_bytes(e.class_maps())))
            written.append(
                atomic_write_bytes(
                    out_dir / f"{stem}.top_class.npy", npy_bytes(e.occlusion.top_class_map().astype(np.int32))
                )
            )
        if nifti:
            written.append(
                atomic_write_bytes(out_dir / f"{stem}.map.nii.gz", write_nifti_map(e.map, e.prepared.volume))
            )
        record = volume_record(e, timing=timing)
        if table is not None:
            record["regions"] = table
        record.update(extra or {})
        record["outputs"] = output_records(written)  # size and sha256 of each: what --resume verifies
        written.append(atomic_write_json(out_dir / f"{stem}.json", record, command=False, seal=True))
    except BaseException:
        undo_writes(written)
        raise
    return written


def _write_pictures(e: VolumeExplanation, out_dir: Path, stem: str, style: RenderStyle, written: List[Path]) -> bytes:
    """A volume's montage and planes, a slice's overlay and heatmap (appended to ``written``); returns the
    montage or the overlay (what a DICOM Secondary Capture holds)."""
    if e.prepared.ndim == 3:
        main = montage_png(e, style)
        written.append(atomic_write_bytes(out_dir / f"{stem}.montage.png", main))
        written.append(atomic_write_bytes(out_dir / f"{stem}.planes.png", planes_png(e, style)))
        return main
    main = overlay_png(e.prepared.original, e.map, e.prepared.crop_box, _title(e), _subtitle(e), style, _markers(e))
    written.append(atomic_write_bytes(out_dir / f"{stem}.overlay.png", main))
    written.append(
        atomic_write_bytes(out_dir / f"{stem}.heatmap.png", heatmap_png(e.map, _title(e), _subtitle(e), style))
    )
    return main


REGION_FIELDS = ("label", "name", "voxels", "positive_share", "positive_sum", "mean_drop", "max_drop")
SLICE_FIELDS = ("slice", "z_mm", "positive_sum", "positive_share", "mean_drop")


def write_region_table(table: dict, out_dir, stem: str) -> List[Path]:
    """STEM.regions.csv (one row per region, then the voxels outside every region) and STEM.slices.csv (one row
    per axial slice of the model grid) of :func:`~occlude_cli.analyses.regiontable.region_table`."""
    out_dir = Path(out_dir)
    written = [atomic_write_bytes(out_dir / f"{stem}.regions.csv", csv_bytes(REGION_FIELDS, table["regions"]))]
    try:
        written.append(atomic_write_bytes(out_dir / f"{stem}.slices.csv", csv_bytes(SLICE_FIELDS, table["slices"])))
    except BaseException:
        undo_writes(written)  # never one table without the other
        raise
    return written


def write_baseline_check(documents: Sequence[dict], out_dir) -> Path:
    """OUT/baseline_check.json: one document of :func:`occlude_cli.analyses.estimate.baseline_check` per input."""
    return atomic_write_json(Path(out_dir) / "baseline_check.json", {"schema": 1, "inputs": list(documents)})


def map_grid(values: np.ndarray) -> list:
    """Nested JSON-safe lists of any dimension (null where not finite)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim <= 2:
        return _grid(values)
    return [map_grid(v) for v in values]


__all__: Sequence[str] = (
    "montage_png",
    "planes_png",
    "volume_record",
    "write_baseline_check",
    "write_volume_explanation",
)
