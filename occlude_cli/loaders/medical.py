"""Medical inputs as one `Volume`: what it holds, the intensity transforms (windows, ranges, z-scores) and the
grids (resampling). The readers: :mod:`.dicom` (slices and series), :mod:`.nifti` (volumes in, maps out) and
16-bit PNG/TIFF with the dispatch over file kinds in :mod:`.volumes` (:func:`~occlude_cli.loaders.volumes.read_volume`).

Why a Volume and not a photo: medical inputs carry physical units (Hounsfield units after the DICOM rescale), a
geometry (voxel spacing and a voxel -> world affine) and display conventions (window centre/width,
MONOCHROME1) that 8-bit photo readers throw away. A `Volume` keeps all of it so that the model sees the
intensities it was trained on, and the occlusion map can be written back as a NIfTI file that opens aligned
with the input in 3D Slicer / ITK-SNAP / FSLeyes.

Conventions (one for every reader, so models and pictures do not depend on the file format):

* ``Volume.data`` is float32, ``(H, W)`` for a single slice or ``(D, H, W)`` for a volume, in real units.
* ``Volume.affine`` is 4x4 and maps the homogeneous array index ``(d, h, w, 1)`` (``(h, w, 0, 1)`` for a 2-D
  slice) to world millimetres in RAS+ (nibabel's convention; DICOM's LPS is converted by negating x and y).
* Volumes are laid out like an axial DICOM series: axis 0 runs inferior -> superior, axis 1 anterior ->
  posterior (image rows, anterior at the top), axis 2 patient right -> left (image columns, radiological
  display). NIfTI volumes are reoriented to that layout (a pure flip/transpose, no interpolation); the
  file's own orientation is recorded in ``meta["source_axcodes"]`` and restored by `write_nifti_map`.

pydicom and nibabel are imported lazily: they are the optional ``medical`` extra, and occlude without them
still reads photos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from occlude_cli.errors import OccludeError

MEDICAL_EXTRA_HINT = "install the medical extra: pip install 'occlude[medical]'"

#: Common CT display windows as ``(centre/level, width)`` in Hounsfield units: the values of Radiopaedia's
#: article "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct: brain W:80 L:40, mediastinum
#: W:350 L:50, lung W:1500 L:-600, bone W:1800 L:400). Conventions differ between sites and viewers (bone is
#: also given as W:2000 L:500, lung as W:1600 L:-600); pass ``"W,L"`` to match what a model was trained with.
window_presets: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


@dataclass
class Volume:
    """A medical image in real units with its geometry.

    Attributes:
        data: float32, ``(H, W)`` or ``(D, H, W)``, real units (e.g. HU after RescaleSlope/Intercept).
        spacing: voxel size per array axis in mm (same length as ``data.ndim``).
        affine: 4x4 voxel -> world (RAS+, mm) for the array index, see the module docstring.
        kind: ``"dicom"``, ``"dicom-series"``, ``"nifti"``, ``"png16"``, ``"tiff16"``, ``"png8"``...
        meta: JSON-friendly facts from the file: ``window`` ([centre, width]) when the file has one,
            ``photometric``, ``modality``, ``axcodes`` (of the array axes), ``source_axcodes``...
        path: the file or folder it came from.
        source_affine, source_shape: for NIfTI, the file's own affine and array shape, so that a map can be
            written back on exactly the input's voxel grid (`write_nifti_map`).
        dicom: for DICOM inputs, the header facts derived DICOM objects copy and reference (patient and study
            attributes, the series, each slice's SOP class and instance UIDs in array order); never written
            to a JSON file.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    source_affine: np.ndarray | None = None
    source_shape: tuple[int, ...] | None = None
    dicom: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return int(self.data.ndim)


# --------------------------------------------------------------------------------------------- lazy imports


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise OccludeError(f"reading DICOM needs pydicom; {MEDICAL_EXTRA_HINT}") from None
    return pydicom


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError:
        raise OccludeError(f"reading NIfTI needs nibabel; {MEDICAL_EXTRA_HINT}") from None
    return nibabel


def _ndimage() -> Any:
    try:
        from scipy import ndimage
    except ImportError:
        raise OccludeError(f"resampling needs scipy; {MEDICAL_EXTRA_HINT}") from None
    return ndimage


# ------------------------------------------------------------------------------------------------- DICOM


def _axcodes(affine: np.ndarray) -> str:
    try:
        nibabel = _nibabel()
    except OccludeError:
        return ""
    return "".join(nibabel.aff2axcodes(affine))


# ------------------------------------------------------------------------------------------------- NIfTI


# ------------------------------------------------------------------------------------- PNG / TIFF (16-bit)


# ---------------------------------------------------------------------------------------------- dispatch


# --------------------------------------------------------------------------------------- intensities


def apply_window(data: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Window real-unit intensities to 0..1 with the DICOM linear VOI function (PS3.3 C.11.2.1.2.1).

    ``x <= c - 0.5 - (w - 1)/2 -> 0``; ``x > c - 0.5 + (w - 1)/2 -> 1``; otherwise
    ``((x - (c - 0.5)) / (w - 1) + 0.5)``. This is what viewers show for a window level/width, so a model
    trained on windowed PNG exports sees the same numbers. ``width`` must be >= 1 (DICOM's rule).
    """
    centre, width = float(centre), float(width)
    if not math.isfinite(centre) or not math.isfinite(width) or width < 1:
        raise OccludeError(f"window width {width}: must be a finite number >= 1 (and centre finite: {centre})")
    x = np.asarray(data, dtype=np.float64)
    out = ((x - (centre - 0.5)) / (width - 1.0) + 0.5) if width > 1 else np.zeros_like(x)
    out = np.where(x <= centre - 0.5 - (width - 1.0) / 2.0, 0.0, out)
    out = np.where(x > centre - 0.5 + (width - 1.0) / 2.0, 1.0, out)
    return out.astype(np.float32)


def parse_window(spec: str, volume: Volume | None = None) -> tuple[float, float]:
    """``"lung"`` (a preset), ``"W,L"`` (width then level, as radiologists say it) or ``"file"`` -> (centre, width).

    ``"file"`` takes the window stored in the DICOM file (``volume.meta["window"]``) and is refused when the
    file has none.
    """
    text = str(spec).strip().lower()
    if text in window_presets:
        return window_presets[text]
    if text == "file":
        window = volume.meta.get("window") if volume is not None else None
        if not window:
            raise OccludeError(
                "window 'file': the input has no WindowCenter/WindowWidth; use a preset "
                f"({', '.join(window_presets)}) or W,L"
            )
        return float(window[0]), float(window[1])
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        width, level = float(parts[0]), float(parts[1])
    except ValueError:
        raise OccludeError(
            f"window takes a preset ({', '.join(window_presets)}), 'file', or WIDTH,LEVEL such as 1500,-600, "
            f"got {spec!r}",
            params=("window",),
        ) from None
    if not (math.isfinite(width) and math.isfinite(level)) or width < 1:
        raise OccludeError(
            f"window takes a width of at least 1 and a finite level (WIDTH,LEVEL), got {spec!r}", params=("window",)
        )
    return level, width


def parse_intensity_range(spec: str | Sequence[float]) -> tuple[float, float]:
    """``"lo,hi"`` (or a pair) -> (lo, hi) with lo < hi, for `normalize_range`."""
    try:
        parts = [float(v) for v in (spec.split(",") if isinstance(spec, str) else spec)]
        if len(parts) != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise OccludeError(f"intensity_range {spec!r}: expected two numbers lo,hi such as -1000,400") from None
    lo, hi = parts
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise OccludeError(f"intensity_range {spec!r}: needs finite lo < hi")
    return lo, hi


def normalize_range(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip to [lo, hi] and scale to 0..1 (for models trained on a fixed intensity range, e.g. HU -1000..400)."""
    lo, hi = parse_intensity_range((lo, hi))
    return ((np.clip(np.asarray(data, dtype=np.float64), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def zscore(data: np.ndarray, mask_threshold: float | None = None) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation (MRI models are often trained z-scored).

    With ``mask_threshold`` the statistics come from voxels above it only (e.g. tissue, not air), and the
    whole image is transformed with them. Refused when the statistics region is empty or constant.
    """
    x = np.asarray(data, dtype=np.float64)
    region = x[x > mask_threshold] if mask_threshold is not None else x.ravel()
    if region.size == 0:
        raise OccludeError(f"zscore mask_threshold {mask_threshold}: no voxel is above it")
    std = float(region.std())
    if not std > 0:
        raise OccludeError("zscore: the intensities are constant; nothing to normalise")
    return ((x - float(region.mean())) / std).astype(np.float32)


# ---------------------------------------------------------------------------------------------- grids


def _check_shape(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    out = tuple(int(s) for s in shape)
    if len(out) != ndim or any(s < 1 for s in out):
        raise OccludeError(f"shape {tuple(shape)}: needs {ndim} positive sizes for a {ndim}-D volume")
    return out


def resampled_affine(affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """The affine of a grid that covers the same field of view as ``old_shape`` with ``new_shape`` voxels.

    Voxel centres follow the "pixel area" convention: new voxel ``n`` sits at old index ``(n + 0.5) * s - 0.5``
    with ``s = old / new`` per axis, so the outer voxel faces of both grids coincide.
    """
    scales = [o / n for o, n in zip(old_shape, new_shape)]
    index_map = np.eye(4)
    for axis, s in enumerate(scales):
        index_map[axis, axis] = s
        index_map[axis, 3] = 0.5 * s - 0.5
    return np.asarray(affine, dtype=np.float64) @ index_map


# Output voxels interpolated per call of map_coordinates: their coordinates take 8 bytes per axis each (24 MiB).
_ZOOM_CHUNK = 1 << 20


def _zoom_to(data: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """``data`` resampled onto ``shape`` voxels covering the same field of view (pixel-area convention),
    float32. The output is made in slabs along its first axis, so the sampling coordinates never take more
    than :data:`_ZOOM_CHUNK` voxels' worth of memory, and float32 input is used as it is (scipy interpolates
    in float64 either way, so the numbers equal a float64 copy's). ``order`` > 1 prefilters per slab."""
    ndimage = _ndimage()
    source = np.asarray(data)
    if source.dtype not in (np.float32, np.float64):
        source = source.astype(np.float64)
    axes = [(np.arange(n, dtype=np.float64) + 0.5) * (o / n) - 0.5 for o, n in zip(source.shape, shape)]
    out = np.empty(shape, dtype=np.float32)
    rest = int(np.prod(shape[1:], dtype=np.int64))
    rows = max(1, _ZOOM_CHUNK // max(1, rest))
    for start in range(0, shape[0], rows):
        stop = min(shape[0], start + rows)
        coords = np.empty((len(shape), stop - start, *shape[1:]), dtype=np.float64)
        for axis, values in enumerate(axes):
            view = values[start:stop] if axis == 0 else values
            index: list = [None] * len(shape)
            index[axis] = slice(None)
            coords[axis] = view[tuple(index)]
        ndimage.map_coordinates(source, coords, output=out[start:stop], order=order, mode="nearest")
    return out


def stretch_to(data: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """An array resampled onto ``shape`` covering the same field of view (the pixel-area convention of
    `resample`), float32; for arrays without a Volume (another method's map at another resolution)."""
    array = np.asarray(data)
    return _zoom_to(array, _check_shape(shape, array.ndim), order)


def resample_to_grid(
    data: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray, shape: Sequence[int], order: int = 1
) -> np.ndarray:
    """A 3-D array placed by ``source_affine`` sampled at the voxel centres of another grid (``target_affine``,
    ``shape``: a model grid) through world coordinates, float64. A centre within half a voxel of the array's
    edge takes the edge's value (voxels have extent); one farther out is NaN (not covered)."""
    ndimage = _ndimage()
    target = _check_shape(shape, 3)
    source = np.asarray(data, dtype=np.float64)
    matrix = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(target_affine, dtype=np.float64)
    index = np.indices(target, dtype=np.float64).reshape(3, -1)
    coords = matrix[:3, :3] @ index + matrix[:3, 3:4]
    out = ndimage.map_coordinates(source, coords, order=order, mode="nearest", output=np.float64)
    limit = np.asarray(source.shape, dtype=np.float64)[:, None] - 0.5
    inside = np.all((coords >= -0.5 - 1e-6) & (coords <= limit + 1e-6), axis=0)
    return np.where(inside, out, np.nan).reshape(target)


def resample(volume: Volume, shape: Sequence[int], order: int = 1) -> Volume:
    """Resample a volume to ``shape`` covering the same field of view (stretching, like ``--resize stretch``).

    ``order=1`` is (tri)linear, right for intensities; ``order=0`` nearest, for labels/masks; ``order=3``
    cubic. The returned Volume's affine places the new voxels where they are in the world, so a map computed
    on it can be written aligned (`write_nifti_map` with ``on_input_grid=False``).
    """
    new_shape = _check_shape(shape, volume.data.ndim)
    if order not in (0, 1, 2, 3, 4, 5):
        raise OccludeError(f"order {order}: interpolation order must be 0..5 (1 = linear)")
    data = volume.data if new_shape == volume.data.shape else _zoom_to(volume.data, new_shape, order)
    affine = _grid_affine(volume, new_shape)
    spacing = tuple(float(sp * o / n) for sp, o, n in zip(volume.spacing, volume.data.shape, new_shape))
    meta = {**volume.meta, "resampled_from": list(volume.data.shape)}
    return Volume(
        np.ascontiguousarray(data, dtype=np.float32),
        spacing,
        affine,
        volume.kind,
        meta,
        volume.path,
        volume.source_affine,
        volume.source_shape,
        volume.dicom,
    )


def _grid_affine(volume: Volume, new_shape: tuple[int, ...]) -> np.ndarray:
    if volume.data.ndim == 2:  # affine indexes (h, w, 0): pad the shapes with the singleton third axis
        return resampled_affine(volume.affine, (*volume.data.shape, 1), (*new_shape, 1))
    return resampled_affine(volume.affine, volume.data.shape, new_shape)


def resample_map_to_input(map_: np.ndarray, volume: Volume, order: int = 1) -> np.ndarray:
    """Inverse of `resample` for a map computed on a model grid: back onto ``volume``'s voxel grid.

    Linear by default (maps are smooth means over windows); NaN (regions not computed) spreads to the
    voxels whose interpolation touches it, which is the honest answer there.
    """
    arr = np.asarray(map_, dtype=np.float32)
    if arr.ndim != volume.data.ndim:
        raise OccludeError(f"map shape {arr.shape}: has {arr.ndim} axes, the volume has {volume.data.ndim}")
    if arr.shape == volume.data.shape:
        return arr.copy()
    return _zoom_to(arr, tuple(volume.data.shape), order)


__all__ = [
    "MEDICAL_EXTRA_HINT",
    "Volume",
    "apply_window",
    "normalize_range",
    "parse_intensity_range",
    "parse_window",
    "resample",
    "resample_map_to_input",
    "resampled_affine",
    "window_presets",
    "zscore",
]
