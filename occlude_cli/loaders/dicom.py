"""DICOM slices and series -> one :class:`~occlude_cli.loaders.medical.Volume` (real units after the rescale,
geometry from ImagePositionPatient / ImageOrientationPatient in RAS+, the file's window, MONOCHROME1 undone).
Every header is checked against the memory budget before pixels are decoded; deflated files are inflated in
pieces past the budget. pydicom is the optional ``medical`` extra, imported when a DICOM file is read."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from occlude_cli.errors import OccludeError

from . import limits
from .dicomgeometry import (
    _enhanced_geometry,
    _multi,
    _plane_geometry,
    _slice_affine,
    _slice_offset,
    _slice_step,
)
from .medical import Volume, _axcodes, _pydicom

# DICOM transfer syntaxes that hold uncompressed (or deflated, which pydicom inflates itself) pixel data.
_UNCOMPRESSED_SYNTAXES = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
}


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
    # pydicom raises RuntimeError, NotImplementedError or ValueError depending on the plugin
    except Exception as exc:  # noqa: BLE001
        if syntax is not None and str(syntax) not in _UNCOMPRESSED_SYNTAXES:
            raise OccludeError(
                f"path {path}: pixel data is compressed as '{syntax.name}' ({syntax}) and no installed decoder "
                "can read it; install pylibjpeg and pylibjpeg-libjpeg (or gdcm), or decompress it first "
                "(e.g. `gdcmconv --raw IN OUT`)"
            ) from None
        raise OccludeError(f"path {path}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from None


def _real_units(
    ds: Any, raw: np.ndarray, path: str | Path, rescale: tuple[float, float] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored values -> real units: MONOCHROME1 inversion (in stored-value range), then the modality LUT
    (``rescale``, a frame's (slope, intercept) from an enhanced file's functional groups, replaces the file's).

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
    slope, intercept = rescale if rescale is not None else _rescale(ds, path)
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
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds and rescale is None:
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
        with np.errstate(over="ignore", invalid="ignore"):
            flat_out[start : start + step] = piece * slope + intercept
    if not np.all(np.isfinite(out)):
        raise OccludeError(
            f"path {path}: RescaleSlope {slope:g} and RescaleIntercept {intercept:g} take pixels beyond the float32 "
            "range (or the pixel data holds NaN or infinite values); occlude reads intensities as float32"
        )
    return out, info


def _rescale(ds: Any, path: str | Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 when absent; a slope of 0 is read as 1), or one line when
    either is not a finite number."""
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError) as exc:
        raise OccludeError(f"path {path}: RescaleSlope/RescaleIntercept is not a number ({exc})") from None
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise OccludeError(
            f"path {path}: RescaleSlope {slope:g} and RescaleIntercept {intercept:g} must be finite numbers"
        )
    return slope, intercept


# Patient, study and equipment attributes a derived object (a parametric map, a secondary capture) copies from
# its source so that a PACS files it with the scan (type 2 attributes: empty when the source has none).
_SHARED_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "SeriesInstanceUID",
    "Modality",
)


def _dicom_facts(ds: Any, instances: list[tuple[str, str]]) -> dict[str, Any]:
    """What derived DICOM objects copy and reference (kept on the Volume, never written to JSON)."""
    return {
        "shared": {k: str(ds.get(k, "") or "") for k in _SHARED_KEYWORDS},
        "instances": instances,
    }


def _instance(ds: Any) -> tuple[str, str]:
    return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))


def _uids(ds: Any) -> dict[str, str]:
    """The UIDs a JSON's input.meta records (replaced by --deidentify)."""
    return {
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
    }


def read_dicom(path: str | Path) -> Volume:
    """Read one DICOM file (a single slice, or a multi-frame image as a volume) in real units.

    Applies MONOCHROME1 inversion and RescaleSlope/Intercept (or the modality LUT), keeps the file's window
    centre/width in ``meta["window"]``, and refuses compressed pixel data that no installed plugin decodes
    with one line saying what to install.
    """
    ds = _dcmread(path)
    _check_dicom_size(*_dicom_shape(ds), str(path))
    raw = _decoded_pixels(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    data, info = _frames_real_units(ds, raw, path, frames)
    geometry = _plane_geometry(ds)
    meta: dict[str, Any] = {
        "modality": str(ds.get("Modality", "")),
        **_uids(ds),
        "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")),
        **info,
    }
    thickness = _slice_step(ds, path, needed=frames > 1 and data.ndim == 3)
    spacing: tuple[float, ...]
    if frames > 1 and data.ndim == 3:
        shared = _enhanced_geometry(ds, path)
        frames_geometry = shared or geometry
        if frames_geometry is None:
            affine, spacing = np.diag([thickness, 1.0, 1.0, 1.0]), (thickness, 1.0, 1.0)
            meta["geometry"] = "none in file (unit pixel spacing assumed)"
        else:
            x_dir, y_dir, origin, pixel = frames_geometry[:4]
            normal = np.cross(x_dir, y_dir)
            offset = normal * thickness
            if shared is not None and shared[4] is not None:
                offset = shared[4]
            affine = _slice_affine(x_dir, y_dir, origin, pixel, offset)
            spacing = (float(np.linalg.norm(offset)), pixel[0], pixel[1])
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
    volume = Volume(
        np.ascontiguousarray(data, dtype=np.float32), tuple(float(s) for s in spacing), affine, kind, meta, str(path)
    )
    volume.dicom = _dicom_facts(ds, [_instance(ds)])
    return volume


def _frame_rescales(ds: Any, frames: int, path: str | Path) -> list[tuple[float, float]] | None:
    """Each frame's (RescaleSlope, RescaleIntercept) from an enhanced multi-frame file's functional groups
    (PixelValueTransformationSequence: the frame's own, else the shared one), or None when they hold none."""

    def of(item: Any) -> tuple[float, float] | None:
        found = item.get("PixelValueTransformationSequence") if item is not None else None
        return _rescale(found[0], path) if found else None

    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = of(shared_items[0]) if shared_items else None
    found = [of(per_frame[k]) if k < len(per_frame) else None for k in range(frames)]
    if shared is None and all(r is None for r in found):
        return None
    fallback = shared if shared is not None else _rescale(ds, path)
    return [r if r is not None else fallback for r in found]


def _frames_real_units(ds: Any, raw: np.ndarray, path: str | Path, frames: int) -> tuple[np.ndarray, dict[str, Any]]:
    """A file's pixels in real units: a multi-frame file whose functional groups give each frame its rescale
    (an enhanced CT, MR or PET) frame by frame, every other file with its top-level rescale or modality LUT."""
    rescales = _frame_rescales(ds, frames, path) if frames > 1 and raw.ndim == 3 else None
    if rescales is None:
        return _real_units(ds, raw, path)
    data = np.empty(raw.shape, dtype=np.float32)
    info: dict[str, Any] = {}
    for k, rescale in enumerate(rescales):
        data[k], info_k = _real_units(ds, raw[k], path, rescale)
        info = info or info_k
    if len(set(rescales)) > 1:
        info["rescale"] = "per frame (functional groups)"
    return data, info


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read a folder of single-slice DICOM files as one volume ``(D, H, W)``.

    Slices are sorted by their ImagePositionPatient projected on the slice normal (file names and
    InstanceNumber are not trusted). Refused with one line: a folder with several series (their
    SeriesInstanceUIDs are listed; pass ``series_uid`` to pick one), slices with different orientation,
    size or pixel spacing, duplicate positions, and uneven gaps (a missing slice).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OccludeError(f"folder {folder}: not a folder")
    datasets, skipped = _series_headers(folder)
    chosen = _one_series(folder, datasets, series_uid)
    first_entry, first = chosen[0]
    geometry = _plane_geometry(first)
    if geometry is None:
        raise OccludeError(f"folder {folder}: {first_entry.name} has no ImagePositionPatient/Orientation/PixelSpacing")
    x_dir, y_dir, _, pixel = geometry
    normal = np.cross(x_dir, y_dir)
    shape = (int(first.Rows), int(first.Columns))
    order, step = _slice_order(folder, chosen, geometry, shape)
    positions = [_plane_geometry(chosen[int(i)][1])[2] for i in order]  # type: ignore[index]
    offset = _slice_offset(f"folder {folder}", positions, normal * step)
    # the whole volume's size from the headers, before any pixel is decoded; then one slice at a time
    _check_dicom_size((len(chosen), *shape), _dicom_shape(first)[1], _dicom_shape(first)[2], str(folder))
    data, info = _series_pixels(folder, chosen, order, shape)
    origin = _plane_geometry(chosen[int(order[0])][1])[2]  # type: ignore[index]
    affine = _slice_affine(x_dir, y_dir, origin, pixel, offset)
    meta: dict[str, Any] = {
        "modality": str(first.get("Modality", "")),
        **_uids(first),
        "slices": len(chosen),
        "axcodes": _axcodes(affine),
        **info,
    }
    if skipped:
        meta["skipped_files"] = skipped
    if not np.allclose(offset, normal * step, atol=1e-3):
        tilt = np.degrees(np.arccos(min(1.0, abs(float(offset @ normal)) / float(np.linalg.norm(offset)))))
        meta["tilt_deg"] = round(float(tilt), 3)  # gantry tilt: the affine is sheared
    spacing = (float(np.linalg.norm(offset)), pixel[0], pixel[1])
    volume = Volume(data, spacing, affine, "dicom-series", meta, str(folder))
    volume.dicom = _dicom_facts(first, [_instance(chosen[int(i)][1]) for i in order])
    return volume


# SOP classes that may sit in a series folder without being slices of it: segmentations, RT structure sets,
# parametric maps, secondary captures (occlude's own --dicom-out objects among them), structured reports.
_NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
}


# SOP classes that are never a slice, whatever the folder: a DICOMDIR (Media Storage Directory), structured
# reports and presentation states (by their class roots), and the classes above.
_NEVER_SLICES = ("1.2.840.10008.1.3.10",)
_NEVER_SLICE_ROOTS = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.")


def may_be_slice(path: str | Path) -> bool:
    """Could this DICOM file be a slice of a series? False for a DICOMDIR, a segmentation, a structure set, a
    parametric map, a secondary capture, a report or a presentation state, told by the SOP class of its file
    meta (group 2 only is read); True otherwise, a file whose meta cannot be read included (it is then
    reported as damaged when its folder is read)."""
    try:
        meta = _pydicom().filereader.read_file_meta_info(str(path))
    except Exception:  # noqa: BLE001 -- damaged or not DICOM: the series reader says which
        return True
    sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
    return (
        sop_class not in _NOT_IMAGES and sop_class not in _NEVER_SLICES and not sop_class.startswith(_NEVER_SLICE_ROOTS)
    )


def _series_headers(folder: Path) -> tuple[list[tuple[Path, Any]], list[str]]:
    """The headers of the folder's DICOM image files (pixels stay on disk) and the names of the other files."""
    pydicom = _pydicom()
    datasets, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        try:
            deflated = _check_deflated(entry, pydicom)  # a deflate bomb is refused, not skipped
            ds = pydicom.dcmread(str(entry), defer_size=None if deflated else _DEFER_SIZE)  # pixels stay on disk
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            if is_dicom_file(entry):  # a DICOM file that cannot be read may be a slice: never dropped in silence
                raise OccludeError(
                    f"folder {folder}: {entry.name} is a damaged DICOM file ({type(exc).__name__}: {exc}); a series "
                    "is not read without it (move it out of the folder if it is not one of its slices)"
                ) from None
            skipped.append(entry.name)
            continue
        if str(ds.get("SOPClassUID", "")) in _NOT_IMAGES:
            skipped.append(entry.name)  # structure sets, segmentations, maps: not slices of the scan
            continue
        if "PixelData" not in ds:
            if len(ds) == 0 or (ds.get("Rows") and ds.get("Columns")):  # cut off before or in its pixels
                raise OccludeError(
                    f"folder {folder}: {entry.name} is an image without its pixel data (a damaged or truncated "
                    "slice); a series is not read without it"
                )
            skipped.append(entry.name)  # reports, presentation states, DICOMDIR: not slices of the scan
            continue
        datasets.append((entry, ds))
    if not datasets:
        raise OccludeError(f"folder {folder}: no DICOM image files in it")
    return datasets, skipped


def series_uids(folder: str | Path) -> dict[str, int]:
    """The SeriesInstanceUIDs of a folder's DICOM files and how many files each (headers only, no pixels;
    files that are not DICOM are left out): how a study folder's series are told apart."""
    pydicom = _pydicom()
    found: dict[str, int] = {}
    for entry in sorted(Path(folder).iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        try:
            _check_deflated(entry, pydicom)  # a deflate bomb is refused by the budget, never inflated here
            ds = pydicom.dcmread(str(entry), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (OccludeError, pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        found[uid] = found.get(uid, 0) + 1
    return found


def _one_series(folder: Path, datasets: list[tuple[Path, Any]], series_uid: str | None) -> list[tuple[Path, Any]]:
    """The files of one series: ``series_uid``'s, or the folder's only one."""
    by_series: dict[str, list[tuple[Path, Any]]] = {}
    for entry, ds in datasets:
        by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((entry, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise OccludeError(
                f"series_uid {series_uid}: not in folder {folder} (it has {', '.join(sorted(by_series))})",
                params=("series_uid",),
            )
        return by_series[series_uid]
    if len(by_series) > 1:
        listing = ", ".join(f"{uid or '(none)'} ({len(files)} files)" for uid, files in sorted(by_series.items()))
        raise OccludeError(
            f"folder {folder}: mixes {len(by_series)} series ({listing}); pass series_uid or one series per folder",
            params=("series_uid",),
        )
    return next(iter(by_series.values()))


def _slice_order(folder: Path, chosen, geometry, shape) -> tuple[np.ndarray, float]:
    """The slices' order along the slice normal and the step between them, every slice checked against the
    first: one orientation, one size, one pixel spacing, no two at one position, even gaps."""
    first_entry, first = chosen[0]
    x_dir, y_dir, _, pixel = geometry
    normal = np.cross(x_dir, y_dir)
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
    if len(chosen) == 1:
        return order, _slice_step(first, first_entry, needed=True)
    gaps = np.diff(np.asarray(positions)[order])
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
    return order, step


def _series_pixels(folder: Path, chosen, order: np.ndarray, shape) -> tuple[np.ndarray, dict[str, Any]]:
    """The slices in real units, one at a time (each slice's pixels dropped once copied), and the first's info."""
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
    return data, info
