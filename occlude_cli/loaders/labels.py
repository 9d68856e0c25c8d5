"""Masks and label maps of medical inputs, placed in the world: NIfTI (a mask, or a label map such as an atlas),
DICOM SEG (read with highdicom) and DICOM RT-STRUCT (closed planar contours, rasterised on the scan's own slices).
Each becomes one :class:`LabelMap` (integer labels, 0 = background, an index -> RAS+ mm affine, the names of
its labels and, for DICOM objects, their frame of reference), and reaches a model grid through world
coordinates (:func:`mask_on_grid`, :func:`labels_on_grid`): each model voxel's centre is looked up in it, so
a mask on the scan's own grid, in any orientation, lands where it belongs. A DICOM mask whose frame of
reference is not the scan's is refused (another patient position or another scan), as is a mask that does not
overlap the scan at all."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import OccludeError
from .dicom import _dcmread, is_dicom_file
from .dicomgeometry import _lps_to_ras
from .medical import MEDICAL_EXTRA_HINT, Volume, resample_to_grid

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
# label maps larger than this many labels are refused (a float volume given by mistake, not an atlas)
MAX_LABELS = 10_000


@dataclass
class LabelMap:
    """Integer labels placed in the world. ``data``: 3-D, 0 = background, indexed by ``affine`` (index -> RAS+
    mm; a single 2-D slice is one plane of it); ``names``: label -> name (segment labels, ROI names, a names
    file); ``frame_of_reference``: the DICOM FrameOfReferenceUID (None for NIfTI)."""

    data: np.ndarray
    affine: np.ndarray
    kind: str
    path: str
    names: Dict[int, str] = field(default_factory=dict)
    frame_of_reference: Optional[str] = None

    def labels(self) -> list:
        """The labels present (background 0 left out), ascending."""
        return [int(v) for v in np.unique(self.data) if v != 0]


def is_label_file(path: Path) -> bool:
    """A file :func:`read_label_map` reads: NIfTI by name, DICOM by name or its DICM marker."""
    name = path.name.lower()
    return name.endswith((".nii", ".nii.gz", ".dcm")) or (path.suffix == "" and is_dicom_file(path))


def read_dicom_header(path: Path, what: str = "mask") -> Any:
    """A mask's DICOM dataset (pixel data deferred); an error names ``what``, not the input."""
    try:
        return _dcmread(path, defer=True)
    except OccludeError as exc:  # the reader names the input path; here the file is the mask
        raise OccludeError(str(exc).replace(f"path {path}", f"{what} {path}", 1), params=(what,)) from None


def read_label_map(path, reference: Optional[Volume] = None, *, what: str = "mask") -> LabelMap:
    """A mask or label map from a NIfTI file, a DICOM SEG or an RT-STRUCT (``reference``: the scan an RT-STRUCT's
    contours are rasterised on, its own voxel grid). ``what`` names the file in messages (mask, regions)."""
    path = Path(path)
    if not path.exists():
        raise OccludeError(f"{what} not found: {path}", params=(what,))
    if path.is_dir():
        raise OccludeError(f"{what} {path}: a folder, not a mask file (NIfTI, DICOM SEG or RT-STRUCT)", params=(what,))
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _read_nifti_labels(path, what)
    if name.endswith(".dcm") or is_dicom_file(path):
        ds = read_dicom_header(path, what)
        sop = str(ds.get("SOPClassUID", ""))
        if sop == SEG_SOP_CLASS:
            return _read_seg(path, what)
        if sop == RTSTRUCT_SOP_CLASS:
            if reference is None:
                raise OccludeError(f"{what} {path}: an RT-STRUCT needs the scan its contours are drawn on")
            return _read_rtstruct(ds, path, reference, what)
        raise OccludeError(
            f"{what} {path}: a DICOM {ds.get('Modality', '')} object, not a segmentation: give a DICOM SEG, an "
            "RT-STRUCT or a NIfTI mask",
            params=(what,),
        )
    raise OccludeError(
        f"{what} {path}: a volume's {what} must be NIfTI (.nii, .nii.gz), DICOM SEG or RT-STRUCT", params=(what,)
    )


def _read_nifti_labels(path: Path, what: str) -> LabelMap:
    from .nifti import read_nifti

    volume = read_nifti(path, finite=False)
    data = np.nan_to_num(volume.data, nan=0.0)
    if not np.array_equal(data, np.round(data)):  # a probability or soft mask: inside where >= 0.5
        data = (data >= 0.5).astype(np.float32)
    labels = np.unique(data)
    if labels.size > MAX_LABELS or labels.min() < 0:
        raise OccludeError(
            f"{what} {path}: {labels.size} distinct values (from {labels.min():g}): not a mask or a label map "
            "(labels are whole numbers >= 0, 0 the background)",
            params=(what,),
        )
    grid = data.astype(np.int32)
    affine = volume.affine if grid.ndim == 3 else volume.affine
    return LabelMap(grid, np.asarray(affine, dtype=np.float64), "nifti", str(path), _names_file(path))


def _names_file(path: Path) -> Dict[int, str]:
    """Names of a NIfTI label map's labels from ``NAME.txt`` beside it (``NAME.nii.gz`` -> ``NAME.txt``): one
    label a line, ``INDEX NAME`` or ``INDEX,NAME``; a quoted name wins (ITK-SNAP label descriptions), trailing
    numbers are colours (FreeSurfer lookup tables: ``17 Left-Hippocampus 220 216 20 0``); lines starting with
    ``#`` are comments."""
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    table = path.with_name(stem + ".txt")
    names: Dict[int, str] = {}
    if not table.is_file() or table.stat().st_size > (4 << 20):
        return names
    for line in table.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"\s*(\d+)\s*[,\s]\s*(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        rest = match.group(2).strip()
        quoted = re.search(r'"([^"]*)"', rest)
        if quoted:
            name = quoted.group(1)
        else:
            words = re.split(r"[,\s]+", rest)
            while len(words) > 1 and re.fullmatch(r"[-+]?\d+(\.\d*)?", words[-1]):
                words.pop()
            name = " ".join(words)
        if name:
            names[int(match.group(1))] = name
    return names


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise OccludeError(f"reading DICOM SEG needs highdicom; {MEDICAL_EXTRA_HINT}") from None
    return highdicom


def _read_seg(path: Path, what: str) -> LabelMap:
    """A DICOM SEG as labels: each segment its SegmentNumber (where segments overlap, the highest wins)."""
    hd = _highdicom()
    try:
        seg = hd.seg.segread(str(path))
        segments = [int(d.SegmentNumber) for d in seg.SegmentSequence]
        names = {int(d.SegmentNumber): str(d.get("SegmentLabel", "")) for d in seg.SegmentSequence}
        labels: Optional[np.ndarray] = None
        affine = None
        for number in segments:
            volume = seg.get_volume(segment_numbers=[number], combine_segments=True, skip_overlap_checks=True)
            array = np.asarray(volume.array)
            if labels is None:
                labels, affine = np.zeros(array.shape, dtype=np.int32), np.asarray(volume.affine, dtype=np.float64)
            labels[array > (0.5 if array.dtype.kind == "f" else 0)] = number
    except OccludeError:
        raise
    except Exception as exc:  # noqa: BLE001 -- highdicom raises ValueError, AttributeError, RuntimeError...
        raise OccludeError(
            f"{what} {path}: unreadable DICOM SEG ({type(exc).__name__}: {exc})", params=(what,)
        ) from None
    if labels is None or affine is None:
        raise OccludeError(f"{what} {path}: the DICOM SEG has no segment", params=(what,))
    return LabelMap(
        labels, _lps_to_ras(affine), "seg", str(path), names, str(seg.get("FrameOfReferenceUID", "")) or None
    )


def _read_rtstruct(ds: Any, path: Path, reference: Volume, what: str) -> LabelMap:
    """An RT-STRUCT's closed planar contours rasterised on the reference scan's own slices: a voxel is inside
    when its centre is (contours of one ROI on one slice combine even-odd, so a contour inside another is a
    hole). Each ROI gets its ROINumber; a contour off the scan's slice planes is refused."""
    from skimage.draw import polygon

    frame = None
    for item in ds.get("ReferencedFrameOfReferenceSequence", []):
        frame = str(item.get("FrameOfReferenceUID", "")) or frame
    check_frame(LabelMap(np.zeros((1, 1, 1)), np.eye(4), "rtstruct", str(path), {}, frame), reference, what)
    grid = reference.data if reference.data.ndim == 3 else reference.data[None]
    affine = np.asarray(reference.affine, dtype=np.float64)
    if reference.data.ndim == 2:  # the slice's affine indexes (h, w, 0): put the plane first, as for volumes
        affine = affine[:, [2, 0, 1, 3]]
    inverse = np.linalg.inv(affine)
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    labels = np.zeros(grid.shape, dtype=np.int32)
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        inside = np.zeros(grid.shape, dtype=bool)
        for contour in roi.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "")).upper() not in ("CLOSED_PLANAR", ""):
                continue
            points = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64).reshape(-1, 3)
            index = (inverse @ np.c_[points * [-1.0, -1.0, 1.0], np.ones(len(points))].T)[:3]
            plane = float(np.mean(index[0]))
            if np.ptp(index[0]) > 0.5 or not -0.5 <= plane < grid.shape[0] - 0.5:
                raise OccludeError(
                    f"{what} {path}: a contour of ROI {number} does not lie on a slice of the scan "
                    "(another scan, or contours drawn in another plane)",
                    params=(what,),
                )
            rows, cols = polygon(index[1], index[2], shape=grid.shape[1:])
            inside[int(round(plane)), rows, cols] ^= True
        labels[inside] = number
    return LabelMap(labels, affine, "rtstruct", str(path), names, frame)


def check_frame(labels: LabelMap, volume: Volume, what: str = "mask") -> None:
    """Refuse a DICOM mask drawn in another frame of reference than the scan's (both must say theirs)."""
    scan = volume.meta.get("frame_of_reference_uid")
    if labels.frame_of_reference and scan and labels.frame_of_reference != scan:
        raise OccludeError(
            f"{what} {labels.path} is in frame of reference {labels.frame_of_reference}, the scan in {scan}: "
            "it was drawn on another scan (or patient position)",
            params=(what,),
        )


def _target(grid: Volume) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """A model grid as a 3-D target for resample_to_grid: a slice's (h, w, 0) affine with shape (h, w, 1)."""
    shape = tuple(int(s) for s in grid.data.shape)
    return np.asarray(grid.affine, dtype=np.float64), (shape if len(shape) == 3 else (*shape, 1))


def _covered(values: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    return np.nan_to_num(values, nan=0.0).reshape(shape)


def mask_on_grid(labels: LabelMap, grid: Volume, scan: Volume, what: str = "mask") -> np.ndarray:
    """The mask (every non-zero label) on a model grid, bool: the model voxels at least half inside (linear
    interpolation of the 0/1 mask at each voxel centre, through world coordinates); a mask smaller than that
    keeps every voxel it touches. Refused: another frame of reference, no overlap with the scan, empty."""
    check_frame(labels, scan, what)
    affine, shape = _target(grid)
    inside = (labels.data != 0).astype(np.float64)
    if not inside.any():
        raise OccludeError(f"{what} {labels.path} is empty: it marks no voxel", params=(what,))
    cover = _covered(resample_to_grid(inside, labels.affine, affine, shape, order=1), grid.data.shape)
    mask = cover >= 0.5 - 1e-9
    if not mask.any():
        mask = cover > 1e-9
    if not mask.any():
        raise OccludeError(
            f"{what} {labels.path} does not overlap the scan's model grid (another scan, or a wrong affine)",
            params=(what,),
        )
    return mask


def labels_on_grid(labels: LabelMap, grid: Volume, scan: Volume, what: str = "regions") -> np.ndarray:
    """The label of every model voxel, int32 (0 outside every region): the label at the voxel's centre
    (nearest voxel of the label map, through world coordinates). Refused like :func:`mask_on_grid`."""
    check_frame(labels, scan, what)
    affine, shape = _target(grid)
    values = resample_to_grid(labels.data.astype(np.float64), labels.affine, affine, shape, order=0)
    out = _covered(values, grid.data.shape).astype(np.int32)
    if not out.any():
        raise OccludeError(
            f"{what} {labels.path}: no region overlaps the scan's model grid (another scan, or a wrong affine)",
            params=(what,),
        )
    return out


def world_box_mask(region, grid: Volume) -> np.ndarray:
    """The model voxels whose centres lie inside a box x0, y0, z0, x1, y1, z1 in world millimetres (RAS+), bool
    on ``grid`` (a model grid: a slice's affine indexes (h, w, 0))."""
    lo, hi = np.asarray(region[:3], dtype=np.float64), np.asarray(region[3:], dtype=np.float64)
    shape = tuple(int(s) for s in grid.data.shape)
    index = np.indices(shape, dtype=np.float64).reshape(len(shape), -1)
    if len(shape) == 2:
        index = np.vstack([index, np.zeros((1, index.shape[1]))])
    affine = np.asarray(grid.affine, dtype=np.float64)
    world = affine[:3, :3] @ index + affine[:3, 3:4]
    inside = np.all((world >= lo[:, None]) & (world <= hi[:, None]), axis=0).reshape(shape)
    if not inside.any():
        span = ", ".join(f"{a:.1f}..{b:.1f}" for a, b in zip(world.min(axis=1), world.max(axis=1)))
        text = ",".join(f"{v:g}" for v in region)
        raise OccludeError(
            f"box {text} (mm) holds no voxel centre of the model grid, which spans x, y, z = {span} mm",
            params=("box",),
        )
    return inside
