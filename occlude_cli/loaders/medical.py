"""Medical image readers: DICOM slices and series, NIfTI volumes, 16-bit PNG/TIFF -> one `Volume`.

Why a separate reader: medical inputs carry physical units (Hounsfield units after the DICOM rescale), a
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

import gzip
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

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

# Orientation of the Volume array axes (d, h, w) as nibabel axis codes: each letter is the direction the axis
# increases toward. For NIfTI we reorient the (i, j, k) voxel axes to ("L", "P", "S") and transpose to (k, j, i).
_NIFTI_IJK_TARGET = ("L", "P", "S")

# DICOM transfer syntaxes that hold uncompressed (or deflated, which pydicom inflates itself) pixel data.
_UNCOMPRESSED_SYNTAXES = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
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
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    source_affine: np.ndarray | None = None
    source_shape: tuple[int, ...] | None = None

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


def is_dicom_file(path: str | Path) -> bool:
    """True when the file has the DICOM Part 10 preamble: the bytes ``DICM`` at offset 128."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dcmread(path: str | Path) -> Any:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(str(path))
    except pydicom.errors.InvalidDicomError:
        raise OccludeError(f"path {path}: not a DICOM file (no 'DICM' marker at byte 128)") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise OccludeError(f"path {path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from None


def _multi(value: Any) -> list[float]:
    """A DICOM value that may be a single number or a MultiValue -> list of floats."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [float(v) for v in value]
    return [float(value)]


def _file_window(ds: Any) -> list[float] | None:
    """The first (centre, width) pair of the file's VOI window, or None."""
    centres, widths = _multi(ds.get("WindowCenter")), _multi(ds.get("WindowWidth"))
    if centres and widths and widths[0] > 0:
        return [centres[0], widths[0]]
    return None


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _decoded_pixels(ds: Any, path: str | Path) -> np.ndarray:
    """The stored pixel values, or one clear line when the pixel data is missing or cannot be decoded."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise OccludeError(f"path {path}: DICOM file has no pixel data (a report, DICOMDIR or structure set?)")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 -- pydicom raises RuntimeError/NotImplementedError/ValueError depending on plugin
        if syntax is not None and str(syntax) not in _UNCOMPRESSED_SYNTAXES:
            raise OccludeError(
                f"path {path}: pixel data is compressed as '{syntax.name}' ({syntax}) and no installed decoder "
                "can read it; install pylibjpeg and pylibjpeg-libjpeg (or gdcm), or decompress it first "
                "(e.g. `gdcmconv --raw IN OUT`)"
            ) from None
        raise OccludeError(f"path {path}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from None


def _real_units(ds: Any, raw: np.ndarray, path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored values -> real units: MONOCHROME1 inversion (in stored-value range), then the modality LUT.

    MONOCHROME1 means "the lowest value is displayed white". We invert in the stored-value range
    (``raw' = min_stored + max_stored - raw``) before RescaleSlope/Intercept so that bright means dense for
    every file, and mirror the file's window centre the same way so windowing still shows the same picture.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise OccludeError(
            f"path {path}: colour DICOM (PhotometricInterpretation {photometric}, {samples} samples per pixel) "
            "is not a grey medical image; read it with the ordinary image reader instead"
        )
    values = raw.astype(np.float64)
    window = _file_window(ds)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    info: dict[str, Any] = {"photometric": photometric, "rescale": [slope, intercept], "inverted": False}
    if photometric == "MONOCHROME1":
        lo, hi = _stored_range(ds)
        values = (lo + hi) - values
        info["inverted"] = True
        if window is not None:
            # v = raw*m + b and v' = (S - raw)*m + b  =>  v' = S*m + 2b - v, so the centre maps the same way.
            window = [(lo + hi) * slope + 2 * intercept - window[0], window[1]]
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        from pydicom.pixels import apply_modality_lut  # lazy: part of the medical extra

        values = np.asarray(apply_modality_lut(values.astype(raw.dtype), ds), dtype=np.float64)
        info["rescale"] = "modality LUT"
    else:
        values = values * slope + intercept
    if window is not None:
        info["window"] = window
    return values.astype(np.float32), info


def _lps_to_ras(affine: np.ndarray) -> np.ndarray:
    out = affine.copy()
    out[0, :] *= -1.0
    out[1, :] *= -1.0
    return out


def _plane_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]] | None:
    """(row direction X, column direction Y, position of the first pixel, (row spacing, col spacing)) in LPS."""
    iop, ipp, spacing = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"), ds.get("PixelSpacing")
    if iop is None or ipp is None or spacing is None:
        return None
    cosines = np.asarray([float(v) for v in iop], dtype=np.float64)
    return (
        cosines[:3],
        cosines[3:],
        np.asarray([float(v) for v in ipp], dtype=np.float64),
        (float(spacing[0]), float(spacing[1])),
    )


def _slice_affine(
    x_dir: np.ndarray, y_dir: np.ndarray, origin: np.ndarray, pixel: tuple[float, float], normal_step: np.ndarray
) -> np.ndarray:
    """Affine (d, h, w) -> RAS for slices with rows along y_dir, columns along x_dir (DICOM PS3.3 C.7.6.2.1.1)."""
    aff = np.eye(4)
    aff[:3, 0] = normal_step
    aff[:3, 1] = y_dir * pixel[0]  # row index h moves along the column direction cosine, by the row spacing
    aff[:3, 2] = x_dir * pixel[1]  # column index w moves along the row direction cosine, by the column spacing
    aff[:3, 3] = origin
    return _lps_to_ras(aff)


def read_dicom(path: str | Path) -> Volume:
    """Read one DICOM file (a single slice, or a multi-frame image as a volume) in real units.

    Applies MONOCHROME1 inversion and RescaleSlope/Intercept (or the modality LUT), keeps the file's window
    centre/width in ``meta["window"]``, and refuses compressed pixel data that no installed plugin decodes
    with one line saying what to install.
    """
    ds = _dcmread(path)
    raw = _decoded_pixels(ds, path)
    data, info = _real_units(ds, raw, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    geometry = _plane_geometry(ds)
    meta: dict[str, Any] = {
        "modality": str(ds.get("Modality", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")),
        **info,
    }
    thickness = float(ds.get("SpacingBetweenSlices", ds.get("SliceThickness", 1.0)) or 1.0)
    spacing: tuple[float, ...]
    if frames > 1 and data.ndim == 3:
        shared = _enhanced_geometry(ds)
        frames_geometry = shared or geometry
        if frames_geometry is None:
            affine, spacing = np.diag([thickness, 1.0, 1.0, 1.0]), (thickness, 1.0, 1.0)
            meta["geometry"] = "none in file (unit pixel spacing assumed)"
        else:
            x_dir, y_dir, origin, pixel = frames_geometry[:4]
            normal = np.cross(x_dir, y_dir)
            step = thickness
            if shared is not None and shared[4] is not None:
                step = shared[4]
            affine = _slice_affine(x_dir, y_dir, origin, pixel, normal * step)
            spacing = (abs(step), pixel[0], pixel[1])
        kind = "dicom"
    else:
        if data.ndim == 3:  # a single frame decoded with a leading axis
            data = data[0]
        if geometry is None:
            affine, spacing = np.eye(4), (1.0, 1.0)
            pixel = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
            if pixel is not None:
                spacing = (float(pixel[0]), float(pixel[1]))
                affine = np.diag([spacing[0], spacing[1], thickness, 1.0])
            meta["geometry"] = "no patient position in file (projection image?)"
        else:
            x_dir, y_dir, origin, pixel = geometry
            slice_aff = _slice_affine(x_dir, y_dir, origin, pixel, np.cross(x_dir, y_dir) * thickness)
            affine = slice_aff[:, [1, 2, 0, 3]]  # (h, w, 0) for a 2-D slice
            spacing = pixel
        kind = "dicom"
    nib_axcodes = _axcodes(affine)
    if nib_axcodes:
        meta["axcodes"] = nib_axcodes[: data.ndim] if data.ndim == 3 else nib_axcodes[:2]
    return Volume(
        np.ascontiguousarray(data, dtype=np.float32), tuple(float(s) for s in spacing), affine, kind, meta, str(path)
    )


def _enhanced_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float], Any] | None:
    """Geometry of an enhanced multi-frame file from its functional groups: (X, Y, first IPP, pixel, step)."""
    try:
        shared = ds.SharedFunctionalGroupsSequence[0]
        iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        measures = shared.PixelMeasuresSequence[0]
        pixel = (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1]))
        frames = ds.PerFrameFunctionalGroupsSequence
        positions = np.asarray(
            [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames], dtype=np.float64
        )
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    cosines = np.asarray([float(v) for v in iop], dtype=np.float64)
    x_dir, y_dir = cosines[:3], cosines[3:]
    normal = np.cross(x_dir, y_dir)
    step = None
    if len(positions) > 1:
        along = positions @ normal
        gaps = np.diff(along)
        if np.allclose(gaps, gaps[0], rtol=1e-3, atol=1e-3) and abs(gaps[0]) > 0:
            step = float(gaps[0])
    return x_dir, y_dir, positions[0], pixel, step


def _axcodes(affine: np.ndarray) -> str:
    try:
        nibabel = _nibabel()
    except OccludeError:
        return ""
    return "".join(nibabel.aff2axcodes(affine))


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read a folder of single-slice DICOM files as one volume ``(D, H, W)``.

    Slices are sorted by their ImagePositionPatient projected on the slice normal (file names and
    InstanceNumber are not trusted). Refused with one line: a folder with several series (their
    SeriesInstanceUIDs are listed; pass ``series_uid`` to pick one), slices with different orientation,
    size or pixel spacing, duplicate positions, and uneven gaps (a missing slice).
    """
    pydicom = _pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise OccludeError(f"folder {folder}: not a folder")
    datasets, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(str(entry))
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
            skipped.append(entry.name)
            continue
        if "PixelData" not in ds:
            skipped.append(entry.name)
            continue
        datasets.append((entry, ds))
    if not datasets:
        raise OccludeError(f"folder {folder}: no DICOM image files in it")
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    for entry, ds in datasets:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((entry, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise OccludeError(f"series_uid {series_uid}: not in folder {folder} (it has {sorted(by_series)})")
        chosen = by_series[series_uid]
    elif len(by_series) > 1:
        listing = ", ".join(f"{uid or '(none)'} ({len(files)} files)" for uid, files in sorted(by_series.items()))
        raise OccludeError(
            f"folder {folder}: mixes {len(by_series)} series ({listing}); pass series_uid or one series per folder"
        )
    else:
        chosen = next(iter(by_series.values()))
    first_entry, first = chosen[0]
    geometry = _plane_geometry(first)
    if geometry is None:
        raise OccludeError(f"folder {folder}: {first_entry.name} has no ImagePositionPatient/Orientation/PixelSpacing")
    x_dir, y_dir, _, pixel = geometry
    normal = np.cross(x_dir, y_dir)
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for entry, ds in chosen:
        geo = _plane_geometry(ds)
        if geo is None:
            raise OccludeError(f"folder {folder}: {entry.name} has no ImagePositionPatient/Orientation/PixelSpacing")
        if not (np.allclose(geo[0], x_dir, atol=1e-4) and np.allclose(geo[1], y_dir, atol=1e-4)):
            raise OccludeError(
                f"folder {folder}: {entry.name} has a different ImageOrientationPatient than "
                f"{first_entry.name}; a series must share one orientation"
            )
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise OccludeError(
                f"folder {folder}: {entry.name} is {ds.Rows}x{ds.Columns}, {first_entry.name} is "
                f"{shape[0]}x{shape[1]}; slices of a series must have one size"
            )
        if not np.allclose(geo[3], pixel, rtol=1e-4, atol=1e-6):
            raise OccludeError(
                f"folder {folder}: {entry.name} has PixelSpacing {list(geo[3])}, {first_entry.name} "
                f"has {list(pixel)}; slices of a series must share one pixel spacing"
            )
        positions.append(float(geo[2] @ normal))
    order = np.argsort(positions, kind="stable")
    along = np.asarray(positions)[order]
    if len(chosen) > 1:
        gaps = np.diff(along)
        if np.any(gaps < 1e-3):
            dup = chosen[int(order[int(np.argmin(gaps)) + 1])][0].name
            raise OccludeError(
                f"folder {folder}: two slices at the same position ({dup}); several echoes, "
                "phases or time points in one series are not supported"
            )
        step = float(np.median(gaps))
        if np.max(np.abs(gaps - step)) > max(1e-2 * step, 1e-3):
            raise OccludeError(
                f"folder {folder}: inconsistent slice spacing (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm "
                "along the slice normal); a slice is missing or the series is not evenly spaced"
            )
    else:
        step = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    slices: list[np.ndarray] = []
    info: dict[str, Any] = {}
    for idx in order:
        entry, ds = chosen[int(idx)]
        values, info_i = _real_units(ds, _decoded_pixels(ds, entry), entry)
        slices.append(values)
        info = info or info_i
    data = np.stack(slices).astype(np.float32)
    origin = _plane_geometry(chosen[int(order[0])][1])[2]  # type: ignore[index]
    affine = _slice_affine(x_dir, y_dir, origin, pixel, normal * step)
    meta: dict[str, Any] = {
        "modality": str(first.get("Modality", "")),
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "slices": len(chosen),
        "axcodes": _axcodes(affine),
        **info,
    }
    if skipped:
        meta["skipped_files"] = skipped
    return Volume(data, (step, pixel[0], pixel[1]), affine, "dicom-series", meta, str(folder))


# ------------------------------------------------------------------------------------------------- NIfTI


def read_nifti(path: str | Path, volume_index: int | None = None, reorient: bool = True) -> Volume:
    """Read a ``.nii`` / ``.nii.gz`` volume in real units (scl_slope/scl_inter applied).

    With ``reorient`` (default) the array is flipped/transposed (no interpolation) to the common layout of
    this module (axis 0 inferior->superior, 1 anterior->posterior, 2 right->left) and the affine follows;
    the file's own axis codes are kept in ``meta["source_axcodes"]`` and its affine in ``source_affine``.
    A 4-D file is refused unless ``volume_index`` picks one volume.
    """
    nibabel = _nibabel()
    try:
        img = nibabel.load(str(path))
    except FileNotFoundError:
        raise OccludeError(f"path {path}: no such file") from None
    except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise OccludeError(f"path {path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise OccludeError(f"path {path}: NIfTI image has {len(shape)} dimensions {shape}; only 3-D volumes are read")
    proxy = img.dataobj
    if len(shape) == 4:
        if volume_index is None:
            raise OccludeError(
                f"path {path}: 4-D NIfTI with {shape[3]} volumes; pass volume_index 0..{shape[3] - 1} to pick one"
            )
        if not 0 <= volume_index < shape[3]:
            raise OccludeError(f"volume_index {volume_index}: out of range 0..{shape[3] - 1} for {path}")
        data = np.asarray(proxy[..., volume_index], dtype=np.float32)
    else:
        if volume_index not in (None, 0):
            raise OccludeError(f"volume_index {volume_index}: {path} holds a single 3-D volume")
        data = np.asarray(proxy, dtype=np.float32).reshape(shape)
    if data.ndim == 2:
        data = data[:, :, None]
    data = cast(np.ndarray, data.reshape(data.shape[:3]))  # numpy's stubs type reshape(tuple[int, ...]) as 0-D
    if not np.all(np.isfinite(data)):
        raise OccludeError(f"path {path}: NIfTI volume contains NaN or infinite values")
    source_affine = np.asarray(img.affine, dtype=np.float64)
    source_axcodes = "".join(nibabel.aff2axcodes(source_affine))
    source_shape = tuple(int(s) for s in data.shape)
    meta: dict[str, Any] = {"source_axcodes": source_axcodes, "reoriented": bool(reorient)}
    units = img.header.get_xyzt_units()[0]
    if units not in ("mm", "unknown"):
        meta["spatial_units"] = units
    if reorient:
        data, affine = _to_common_layout(data, source_affine)
    else:
        affine = source_affine
    meta["axcodes"] = "".join(nibabel.aff2axcodes(affine))
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(np.ascontiguousarray(data), spacing, affine, "nifti", meta, str(path), source_affine, source_shape)


def _to_common_layout(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/transpose voxel axes (i, j, k) of a NIfTI array to ("L", "P", "S"), then to array order (k, j, i)."""
    nibabel = _nibabel()
    orient = nibabel.orientations
    transform = orient.ornt_transform(orient.io_orientation(affine), orient.axcodes2ornt(_NIFTI_IJK_TARGET))
    moved = orient.apply_orientation(data, transform)
    new_affine = affine @ orient.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(moved.transpose(2, 1, 0)), new_affine[:, [2, 1, 0, 3]]


def _from_common_layout(
    data: np.ndarray, common_affine: np.ndarray, source_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `_to_common_layout`: an array on a common (d, h, w) grid -> the file's axis order and
    directions, with the matching affine (for a grid of another resolution than the file's, e.g. a model grid).
    """
    nibabel = _nibabel()
    orient = nibabel.orientations
    ijk = np.ascontiguousarray(data.transpose(2, 1, 0))
    ijk_affine = common_affine[:, [2, 1, 0, 3]]
    transform = orient.ornt_transform(orient.io_orientation(ijk_affine), orient.io_orientation(source_affine))
    return (
        np.ascontiguousarray(orient.apply_orientation(ijk, transform)),
        ijk_affine @ orient.inv_ornt_aff(transform, ijk.shape),
    )


# ------------------------------------------------------------------------------------- PNG / TIFF (16-bit)


def read_image16(path: str | Path) -> Volume:
    """Read a grey PNG/TIFF at its full bit depth (Pillow modes ``I;16``, ``I``, ``F``, ``L``) as a 2-D Volume.

    Photo readers convert to 8-bit RGB and lose the low bits of a 16-bit radiograph; this keeps them.
    Colour images are refused (use the ordinary image reader).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(str(path)) as img:
            mode = img.mode
            if getattr(img, "n_frames", 1) > 1:
                raise OccludeError(f"path {path}: multi-page image ({img.n_frames} pages); save one page per file")
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "L", "1"):
                data = np.asarray(img)
            elif mode == "LA":
                data = np.asarray(img.convert("L"))
            else:
                raise OccludeError(
                    f"path {path}: colour image (Pillow mode {mode}); read it with the ordinary "
                    "image reader, medical readers take grey images only"
                )
            fmt = (img.format or "").lower()
    except FileNotFoundError:
        raise OccludeError(f"path {path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise OccludeError(f"path {path}: not a readable image ({type(exc).__name__}: {exc})") from None
    bits = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32, "L": 8, "1": 1}.get(mode, 8)
    kind = f"{'tiff' if fmt == 'tiff' else 'png' if fmt == 'png' else fmt or 'image'}{bits}"
    meta = {
        "pillow_mode": mode,
        "bit_depth": bits,
        "format": fmt,
        "value_range": [float(data.min()), float(data.max())],
    }
    return Volume(np.ascontiguousarray(data, dtype=np.float32), (1.0, 1.0), np.eye(4), kind, meta, str(path))


# ---------------------------------------------------------------------------------------------- dispatch


def read_volume(path: str | Path, series: bool = False, volume_index: int | None = None) -> Volume:
    """Read any supported medical input, deciding by suffix and content.

    ``.nii`` / ``.nii.gz`` -> `read_nifti`; ``.dcm`` or the ``DICM`` marker at byte 128 (DICOM files often
    have no suffix) -> `read_dicom`; a folder with ``series=True`` -> `read_dicom_series`; grey ``.png`` /
    ``.tif`` / ``.tiff`` -> `read_image16`. Anything else: one line saying what is accepted.
    """
    p = Path(path)
    if p.is_dir():
        if not series:
            raise OccludeError(f"path {p}: is a folder; pass series=True to read it as one DICOM series")
        return read_dicom_series(p)
    if series:
        raise OccludeError(f"path {p}: series=True needs a folder of DICOM slices, not a file")
    if not p.exists():
        raise OccludeError(f"path {p}: no such file")
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(p, volume_index=volume_index)
    if name.endswith(".dcm") or is_dicom_file(p):
        return read_dicom(p)
    if name.endswith((".png", ".tif", ".tiff")):
        return read_image16(p)
    raise OccludeError(
        f"path {p}: not a medical image occlude can read (DICOM with the 'DICM' marker or .dcm, NIfTI .nii/.nii.gz, "
        "grey PNG/TIFF, or a folder of DICOM slices with series=True)"
    )


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
            f"window {spec!r}: expected a preset ({', '.join(window_presets)}), 'file', or "
            "WIDTH,LEVEL such as 1500,-600"
        ) from None
    if not (math.isfinite(width) and math.isfinite(level)) or width < 1:
        raise OccludeError(f"window {spec!r}: width must be >= 1 and both numbers finite")
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


def _zoom_to(data: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    ndimage = _ndimage()
    axes = [(np.arange(n, dtype=np.float64) + 0.5) * (o / n) - 0.5 for o, n in zip(data.shape, shape)]
    coords = np.meshgrid(*axes, indexing="ij")
    return ndimage.map_coordinates(np.asarray(data, dtype=np.float64), coords, order=order, mode="nearest").astype(
        np.float32
    )


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


def write_nifti_map(
    map_: np.ndarray,
    volume: Volume,
    path: str | Path | None = None,
    on_input_grid: bool = True,
) -> bytes:
    """Encode a map as NIfTI-1 so that it opens aligned with ``volume`` in any viewer; optionally write it.

    The map may be on the volume's grid or on a model grid of another shape (the same field of view, see
    `resample`). With ``on_input_grid`` (default) it is interpolated back onto the input's voxels and, for
    NIfTI input, put back in the file's own orientation, so the map has exactly the input's shape and
    affine; otherwise it is saved at its own resolution with the resampled affine. Returns the bytes
    (gzip-compressed when ``path`` ends in ``.gz`` or is None; mtime 0, so reruns are byte-identical) and,
    when ``path`` is given, writes them atomically (temporary file + rename).
    """
    nibabel = _nibabel()
    arr = np.asarray(map_, dtype=np.float32)
    if arr.ndim != volume.data.ndim:
        raise OccludeError(f"map shape {arr.shape}: has {arr.ndim} axes, the volume has {volume.data.ndim}")
    if on_input_grid:
        grid = resample_map_to_input(arr, volume)
        affine = volume.affine
    else:
        grid = arr
        affine = _grid_affine(volume, tuple(arr.shape))
    if volume.kind == "nifti" and volume.source_affine is not None and volume.meta.get("reoriented"):
        # back to the file's own axis order/directions; on the file's exact grid, its affine bit for bit
        grid, affine = _from_common_layout(grid, affine, volume.source_affine)
        if grid.shape == volume.source_shape and "resampled_from" not in volume.meta:
            affine = volume.source_affine
    if grid.ndim == 2:
        grid = grid[:, :, None]  # the 2-D affine indexes (h, w, 0)
    img = nibabel.Nifti1Image(np.ascontiguousarray(grid), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"occlude occlusion map"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = img.to_bytes()
    target = None if path is None else Path(path)
    data = gzip.compress(raw, mtime=0) if target is None or target.name.lower().endswith(".gz") else raw
    if target is not None:
        _atomic_write(target, data)
    return data


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_nifti_bytes(data: bytes) -> Any:
    """Decode bytes from `write_nifti_map` (gzip or plain) into a nibabel image (for tests and reports)."""
    nibabel = _nibabel()
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    return nibabel.Nifti1Image.from_bytes(raw)


__all__ = [
    "MEDICAL_EXTRA_HINT",
    "Volume",
    "apply_window",
    "is_dicom_file",
    "load_nifti_bytes",
    "normalize_range",
    "parse_intensity_range",
    "parse_window",
    "read_dicom",
    "read_dicom_series",
    "read_image16",
    "read_nifti",
    "read_volume",
    "resample",
    "resample_map_to_input",
    "resampled_affine",
    "window_presets",
    "write_nifti_map",
    "zscore",
]
