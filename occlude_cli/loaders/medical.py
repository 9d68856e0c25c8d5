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

import contextlib
import gzip
import io
import math
import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from occlude_cli.errors import OccludeError

from . import limits

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


_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
# Elements larger than this are left on disk until used (the pixel data: read after the size check).
_DEFER_SIZE = 64 << 10


def _check_deflated(path: str | Path, pydicom: Any) -> bool:
    """A Deflated Explicit VR file is inflated whole by pydicom before any header can be checked: inflate it
    here first in bounded pieces, counting, and refuse it past the memory budget (a deflate bomb). True when
    the file is deflated (its elements cannot then be left on disk)."""
    try:
        meta = pydicom.filereader.read_file_meta_info(str(path))
        group_length = int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    except Exception:  # noqa: BLE001 -- not DICOM or damaged: dcmread says so in its own words
        return False
    if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED_SYNTAX:
        return False
    limit = limits.budget()
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as handle:
        handle.seek(128 + 4 + 12 + group_length)  # preamble, DICM, (0002,0000) itself, then the group
        while not inflater.eof:
            pending = handle.read(1 << 16)
            if not pending:
                break
            while pending and not inflater.eof:
                try:
                    total += len(inflater.decompress(pending, 1 << 20))
                except zlib.error:
                    return True  # damaged: dcmread's error line says so
                limits.check_stream_size(total, str(path), "deflated DICOM", limit)
                pending = inflater.unconsumed_tail
    return True


def _dcmread(path: str | Path, *, defer: bool = True) -> Any:
    """pydicom's dataset of a file, with large elements (the pixel data) left on disk until used when
    ``defer`` (so that the image size can be checked first), deflated files inflated only within the budget."""
    pydicom = _pydicom()
    try:
        deflated = _check_deflated(path, pydicom)
        return pydicom.dcmread(str(path), defer_size=_DEFER_SIZE if defer and not deflated else None)
    except pydicom.errors.InvalidDicomError:
        raise OccludeError(f"path {path}: not a DICOM file (no 'DICM' marker at byte 128)") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise OccludeError(f"path {path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from None


def _dicom_shape(ds: Any) -> tuple[tuple[int, ...], str, int]:
    """The pixel array a dataset declares, from its header: (shape, sample type, bytes per sample); frames
    first for multi-frame files. Zero sizes when the header does not say."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    itemsize = max(1, (bits + 7) // 8)
    shape = (frames, rows, columns) if frames > 1 else (rows, columns)
    if samples > 1:
        shape = (*shape, samples)
    kind = "float" if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds else ("int" if signed else "uint")
    return shape, f"{kind}{bits}", itemsize


def _check_dicom_size(shape: Sequence[int], dtype: str, itemsize: int, name: str) -> None:
    """Refuse a DICOM file or series by the pixel array its header(s) declare (see limits.check_volume_size)."""
    if all(int(s) > 0 for s in shape):
        limits.check_volume_size(tuple(shape[:3]), dtype, name, itemsize=itemsize)


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
    window = _file_window(ds)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    info: dict[str, Any] = {"photometric": photometric, "rescale": [slope, intercept], "inverted": False}
    lo, hi = _stored_range(ds)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        info["inverted"] = True
        if window is not None:
            # v = raw*m + b and v' = (S - raw)*m + b  =>  v' = S*m + 2b - v, so the centre maps the same way.
            window = [(lo + hi) * slope + 2 * intercept - window[0], window[1]]
    if window is not None:
        info["window"] = window
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        from pydicom.pixels import apply_modality_lut  # lazy: part of the medical extra

        values = raw.astype(np.float64)
        if inverted:
            values = (lo + hi) - values
        values = np.asarray(apply_modality_lut(values.astype(raw.dtype), ds), dtype=np.float64)
        info["rescale"] = "modality LUT"
        return values.astype(np.float32), info
    # stored values -> float64 -> real units -> float32, a bounded piece at a time (the same numbers as whole)
    out = np.empty(raw.shape, dtype=np.float32)
    flat_in, flat_out = raw.reshape(-1), out.reshape(-1)
    step = max(1, limits.SLAB_BYTES // 8)
    for start in range(0, flat_in.size, step):
        piece = flat_in[start : start + step].astype(np.float64)
        if inverted:
            piece = (lo + hi) - piece
        flat_out[start : start + step] = piece * slope + intercept
    return out, info


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
    _check_dicom_size(*_dicom_shape(ds), str(path))
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
            deflated = _check_deflated(entry, pydicom)  # a deflate bomb is refused, not skipped
            ds = pydicom.dcmread(str(entry), defer_size=None if deflated else _DEFER_SIZE)  # pixels stay on disk
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
    # the whole volume's size from the headers, before any pixel is decoded; then one slice at a time
    _check_dicom_size((len(chosen), *shape), _dicom_shape(first)[1], _dicom_shape(first)[2], str(folder))
    data = np.empty((len(chosen), *shape), dtype=np.float32)
    info: dict[str, Any] = {}
    for z, idx in enumerate(order):
        entry, ds = chosen[int(idx)]
        values, info_i = _real_units(ds, _decoded_pixels(ds, entry), entry)
        if values.shape != shape:
            raise OccludeError(
                f"folder {folder}: {entry.name} holds pixels of shape {values.shape}, its header says {shape[0]}x"
                f"{shape[1]}; slices of a series must be single frames of one size"
            )
        data[z] = values
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                delattr(ds, keyword)  # the slice's pixels (read from disk on use, then cached): not kept
        info = info or info_i
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


# NIfTI-1 headers are 348 bytes (voxels from byte 352 on), NIfTI-2 headers 540 (from 544 on).
_NIFTI_HEADER_SIZES = (348, 540)


def _read_exact(stream: Any, n: int, path: str | Path, what: str) -> bytes:
    """Exactly ``n`` bytes (read in pieces of at most SLAB_BYTES), or one line saying the file ends early."""
    parts, got = [], 0
    while got < n:
        part = stream.read(min(n - got, limits.SLAB_BYTES))
        if not part:
            raise OccludeError(
                f"path {path}: truncated NIfTI file: {what} needs {n} bytes, the file ends after {got} of them"
            )
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _skip(stream: Any, n: int, path: str | Path, what: str) -> None:
    """Skip ``n`` bytes of a plain or gzip stream in bounded pieces (a gzip stream is inflated, not kept)."""
    while n > 0:
        part = stream.read(min(n, limits.SLAB_BYTES))
        if not part:
            raise OccludeError(f"path {path}: truncated NIfTI file: it ends before {what}")
        n -= len(part)


def _nifti_header(stream: Any, path: str | Path) -> tuple[Any, int]:
    """The header of a single-file NIfTI-1 or NIfTI-2 (nibabel's header class, checked and fixed as
    ``nibabel.load`` does) and its size, from the first bytes of the (inflated) stream; nothing past the
    header is read. Hostile fields (dimensions, data type, vox_offset, affine) are refused with one line."""
    nibabel = _nibabel()
    first = _read_exact(stream, 4, path, "the header")
    little, big = int.from_bytes(first, "little", signed=True), int.from_bytes(first, "big", signed=True)
    if little in _NIFTI_HEADER_SIZES:
        endian, size = "<", little
    elif big in _NIFTI_HEADER_SIZES:
        endian, size = ">", big
    else:
        raise OccludeError(f"path {path}: not a NIfTI file (sizeof_hdr is neither 348 nor 540)")
    block = first + _read_exact(stream, size - 4, path, "the header")
    klass = nibabel.Nifti1Header if size == 348 else nibabel.Nifti2Header
    raw = klass(block, endianness=endian, check=False)
    magic = bytes(raw["magic"]).rstrip(b"\0")
    if magic in (b"ni1", b"ni2"):
        raise OccludeError(
            f"path {path}: a header of a .hdr/.img pair (magic {magic.decode()!r}); only single-file .nii/.nii.gz are read"
        )
    if magic not in (b"n+1", b"n+2"):
        raise OccludeError(f"path {path}: not a NIfTI file (magic {magic!r}, expected 'n+1' or 'n+2')")
    dim = [int(v) for v in raw["dim"]]
    if not 1 <= dim[0] <= 7:
        raise OccludeError(f"path {path}: bad NIfTI header: dim[0] = {dim[0]} dimensions (must be 1 to 7)")
    for axis in range(1, dim[0] + 1):
        if dim[axis] < 1:
            raise OccludeError(f"path {path}: bad NIfTI header: dim[{axis}] = {dim[axis]} (every size must be >= 1)")
    try:
        dtype = raw.get_data_dtype()
    except Exception:  # noqa: BLE001 -- nibabel raises HeaderDataError or KeyError for unknown codes
        raise OccludeError(f"path {path}: bad NIfTI header: unknown datatype code {int(raw['datatype'])}") from None
    if dtype.fields is not None or dtype.kind not in "iuf":
        raise OccludeError(
            f"path {path}: NIfTI datatype {dtype} (code {int(raw['datatype'])}) is not a grey intensity "
            "volume (complex, RGB and other compound types are not read)"
        )
    offset = float(raw["vox_offset"])
    if not math.isfinite(offset) or offset < size + 4 or offset != int(offset):
        raise OccludeError(
            f"path {path}: bad NIfTI header: vox_offset {offset:g} (the voxels of a single-file NIfTI start at a "
            f"whole byte {size + 4} or later)"
        )
    try:
        header = klass(block, endianness=endian, check=True)  # nibabel.load's checks and fixes (pixdim signs...)
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 -- HeaderDataError, ValueError, numpy errors from hostile fields
        raise OccludeError(f"path {path}: bad NIfTI header ({type(exc).__name__}: {exc})") from None
    if not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise OccludeError(
            f"path {path}: bad NIfTI header: its voxel-to-world affine (qform/sform, pixdim) is not finite or "
            "not invertible"
        )
    return header, size


def read_nifti(
    path: str | Path, volume_index: int | None = None, reorient: bool = True, *, finite: bool = True
) -> Volume:
    """Read a ``.nii`` / ``.nii.gz`` volume in real units (scl_slope/scl_inter applied).

    With ``reorient`` (default) the array is flipped/transposed (no interpolation) to the common layout of
    this module (axis 0 inferior->superior, 1 anterior->posterior, 2 right->left) and the affine follows;
    the file's own axis codes are kept in ``meta["source_axcodes"]`` and its affine in ``source_affine``.
    A 4-D file is refused unless ``volume_index`` picks one volume. NaN or infinite voxels are refused
    (``finite``, the default, for images; maps pass False: NaN marks voxels not computed).

    Memory is bounded from the header: it is read (and checked: dimensions, data type, vox_offset,
    affine) before any voxel, the volume is refused when it needs more than the memory budget
    (:func:`occlude_cli.loaders.limits.check_volume_size`), and the voxels are then read slab by slab
    straight into the float32 array in the common layout. A ``.nii.gz`` (recognised by its gzip magic, not
    its name) is inflated only up to the voxels needed, never past what the header promises; a file that
    ends early is one line (``truncated``).
    """
    _nibabel()
    name = Path(path)
    try:
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(open(name, "rb"))
            compressed = handle.read(2) == b"\x1f\x8b"
            handle.seek(0)
            stream = stack.enter_context(gzip.GzipFile(fileobj=handle, mode="rb")) if compressed else handle
            file_size = None if compressed else os.fstat(handle.fileno()).st_size
            return _read_nifti_stream(stream, name, file_size, volume_index, reorient, finite)
    except FileNotFoundError:
        raise OccludeError(f"path {path}: no such file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise OccludeError(f"path {path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None


def _read_nifti_stream(
    stream: Any, path: Path, file_size: int | None, volume_index: int | None, reorient: bool, finite: bool
) -> Volume:
    nibabel = _nibabel()
    header, header_size = _nifti_header(stream, path)
    shape = tuple(int(s) for s in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise OccludeError(f"path {path}: NIfTI image has {len(shape)} dimensions {shape}; only 3-D volumes are read")
    if len(shape) == 4:
        if volume_index is None:
            raise OccludeError(
                f"path {path}: 4-D NIfTI with {shape[3]} volumes; pass volume_index 0..{shape[3] - 1} to pick one"
            )
        if not 0 <= volume_index < shape[3]:
            raise OccludeError(f"volume_index {volume_index}: out of range 0..{shape[3] - 1} for {path}")
    elif volume_index not in (None, 0):
        raise OccludeError(f"volume_index {volume_index}: {path} holds a single 3-D volume")
    spatial = tuple(shape[:3]) + (1,) * (3 - min(3, len(shape)))
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    limits.check_volume_size(spatial, str(dtype), str(path), itemsize=dtype.itemsize)
    if file_size is None:  # inflated to get to the voxels (not kept): at most the budget's worth
        limits.check_stream_size(offset, str(path), "NIfTI header extensions")
    volume_bytes = math.prod(spatial) * dtype.itemsize
    if file_size is not None and offset + math.prod(shape) * dtype.itemsize > file_size:
        raise OccludeError(
            f"path {path}: truncated NIfTI file: the header promises {math.prod(shape) * dtype.itemsize} bytes of "
            f"voxels ({'x'.join(map(str, shape))} {dtype}) from byte {offset}, the file has "
            f"{max(0, file_size - offset)} there"
        )
    start = offset + (volume_index or 0) * volume_bytes
    _skip(stream, start - header_size, path, f"the voxels (vox_offset {offset})")

    source_affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    orient = nibabel.orientations
    if reorient:
        source_ornt = orient.io_orientation(source_affine)
        transform = orient.ornt_transform(source_ornt, orient.axcodes2ornt(_NIFTI_IJK_TARGET))
        moved = orient.apply_orientation(np.broadcast_to(np.float32(0), spatial), transform).shape
        data = np.empty(moved[::-1], dtype=np.float32)
        # the same array seen in the file's (i, j, k) order: filling it fills the common layout
        view = orient.apply_orientation(
            data.transpose(2, 1, 0), orient.ornt_transform(orient.axcodes2ornt(_NIFTI_IJK_TARGET), source_ornt)
        )
        affine = (source_affine @ orient.inv_ornt_aff(transform, spatial))[:, [2, 1, 0, 3]]
    else:
        data = np.empty(spatial, dtype=np.float32)
        view = data
        affine = source_affine
    slope, inter = header.get_slope_inter()
    plane = spatial[0] * spatial[1] * dtype.itemsize
    step = max(1, limits.SLAB_BYTES // plane)
    for k in range(0, spatial[2], step):
        count = min(step, spatial[2] - k)
        raw = np.frombuffer(_read_exact(stream, count * plane, path, "the voxels"), dtype=dtype)
        values = _nifti_scaled(raw.reshape((spatial[0], spatial[1], count), order="F"), slope, inter)
        if finite and not np.all(np.isfinite(values)):
            raise OccludeError(f"path {path}: NIfTI volume contains NaN or infinite values")
        view[:, :, k : k + count] = values
    meta: dict[str, Any] = {"source_axcodes": "".join(nibabel.aff2axcodes(source_affine)), "reoriented": bool(reorient)}
    units = header.get_xyzt_units()[0]
    if units not in ("mm", "unknown"):
        meta["spatial_units"] = units
    meta["axcodes"] = "".join(nibabel.aff2axcodes(affine))
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(data, spacing, affine, "nifti", meta, str(path), source_affine, spatial)


def _nifti_scaled(raw: np.ndarray, slope: Any, inter: Any) -> np.ndarray:
    """scl_slope/scl_inter applied exactly as nibabel's ``np.asarray(img.dataobj, dtype=np.float32)`` does
    (``ArrayProxy._get_scaled`` with dtype float32), on one slab: the same numbers as reading it whole."""
    from nibabel.volumeutils import apply_read_scaling

    scl_slope = np.asanyarray(1.0 if slope is None else slope)
    scl_inter = np.asanyarray(0.0 if inter is None else inter)
    if np.can_cast(scl_slope, np.float32):
        scl_slope = scl_slope.astype(np.float32)
    if np.can_cast(scl_inter, np.float32):
        scl_inter = scl_inter.astype(np.float32)
    scaled = apply_read_scaling(raw, scl_slope, scl_inter)  # type: ignore[arg-type]  # 0-d arrays, as nibabel
    return scaled.astype(np.promote_types(scaled.dtype, np.float32), copy=False)


def _from_common_layout(
    data: np.ndarray, common_affine: np.ndarray, source_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of the reorientation in `read_nifti`: an array on a common (d, h, w) grid -> the file's axis
    order and directions, with the matching affine (for a grid of another resolution than the file's, e.g. a
    model grid). The array returned is a view (flips and transposes): nothing is copied."""
    nibabel = _nibabel()
    orient = nibabel.orientations
    ijk = data.transpose(2, 1, 0)
    ijk_affine = common_affine[:, [2, 1, 0, 3]]
    transform = orient.ornt_transform(orient.io_orientation(ijk_affine), orient.io_orientation(source_affine))
    return orient.apply_orientation(ijk, transform), ijk_affine @ orient.inv_ornt_aff(transform, ijk.shape)


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

    Memory: the map on the input's grid (float32) and the encoded bytes; the NIfTI stream is compressed as
    nibabel writes it, slice by slice, so the uncompressed file is never held.
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
    img = nibabel.Nifti1Image(grid, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"occlude occlusion map"
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    target = None if path is None else Path(path)
    sink = _EncodedSink(compress=target is None or target.name.lower().endswith(".gz"))
    img.to_file_map(img.make_file_map({"image": sink, "header": sink}))  # what img.to_bytes() does
    data = sink.getvalue()
    if target is not None:
        _atomic_write(target, data)
    return data


class _EncodedSink(io.RawIOBase):
    """A write-only file object for nibabel that keeps what it is given, gzip-compressed on the fly when
    ``compress``: the same bytes as ``gzip.compress(data, mtime=0)`` (zlib's gzip wrapper, level 9, mtime 0)
    of everything written, without holding the uncompressed stream. Seeking is to the current position only
    (nibabel writes the header, then the voxels in order)."""

    def __init__(self, compress: bool) -> None:
        super().__init__()
        self._zlib = zlib.compressobj(9, zlib.DEFLATED, 31) if compress else None
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        data = bytes(data)
        self._position += len(data)
        self._parts.append(self._zlib.compress(data) if self._zlib is not None else data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = 0) -> int:
        target = position if whence == 0 else self._position + position if whence == 1 else -1
        if target != self._position:
            raise OSError("cannot seek in a stream being encoded")
        return self._position

    def getvalue(self) -> bytes:
        if self._zlib is not None:
            self._parts.append(self._zlib.flush())
            self._zlib = None
        data = b"".join(self._parts)
        self._parts = [data]
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
