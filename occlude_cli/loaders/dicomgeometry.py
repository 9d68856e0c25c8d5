"""DICOM geometry: where a slice's voxels are (ImageOrientationPatient, ImagePositionPatient, PixelSpacing,
the distance between slices), checked so that a value that cannot place a voxel is one line naming the
attribute, and the index -> RAS+ affine of a slice, a series (sheared when the slices are displaced in their
plane, a gantry tilt) or an enhanced multi-frame file's frames. Used by :mod:`.dicom` and the mask readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from occlude_cli.errors import OccludeError
from occlude_cli.text import shown


def _multi(value: Any) -> list[float]:
    """A DICOM value that may be a single number or a MultiValue -> list of floats."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [float(v) for v in value]
    return [float(value)]


def _lps_to_ras(affine: np.ndarray) -> np.ndarray:
    out = affine.copy()
    out[0, :] *= -1.0
    out[1, :] *= -1.0
    return out


def _plane_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]] | None:
    """(row direction X, column direction Y, position of the first pixel, (row spacing, col spacing)) in LPS;
    None when the file has no such geometry, one line when what it has cannot place a voxel."""
    iop, ipp, spacing = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"), ds.get("PixelSpacing")
    if iop is None or ipp is None or spacing is None:
        return None
    where = f"path {getattr(ds, 'filename', None) or 'DICOM dataset'}"
    cosines = _numbers(iop, 6, "ImageOrientationPatient", where)
    return (cosines[:3], cosines[3:], _numbers(ipp, 3, "ImagePositionPatient", where), _pixel_spacing(spacing, where))


def _numbers(value: Any, count: int, keyword: str, where: str) -> np.ndarray:
    """``count`` finite numbers of a DICOM attribute; for ImageOrientationPatient two unit, orthogonal
    direction cosines (within 1 %). One line naming the attribute otherwise."""
    try:
        numbers = np.asarray(_multi(value), dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.asarray([], dtype=np.float64)
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise OccludeError(f"{where}: {keyword} must be {count} finite numbers, the file has {_shown(value)}")
    if keyword == "ImageOrientationPatient":
        x_dir, y_dir = numbers[:3], numbers[3:]
        if not (
            abs(np.linalg.norm(x_dir) - 1) < 1e-2
            and abs(np.linalg.norm(y_dir) - 1) < 1e-2
            and abs(x_dir @ y_dir) < 1e-2
        ):
            raise OccludeError(
                f"{where}: ImageOrientationPatient {_shown(value)} is not two unit, orthogonal direction cosines"
            )
    return numbers


def _slice_step(ds: Any, path: str | Path, needed: bool) -> float:
    """The distance between slices a file declares (SpacingBetweenSlices, else SliceThickness; 1 mm when it
    declares neither). One line when the value is not a positive finite number and ``needed`` (the frames of a
    multi-frame image, a one-slice series are placed with it); a single slice, which it does not place, reads
    such a value as 1 mm."""
    keyword = "SpacingBetweenSlices" if ds.get("SpacingBetweenSlices") is not None else "SliceThickness"
    value = ds.get(keyword)
    if value is None or value == "":
        return 1.0
    try:
        step = float(value)
    except (TypeError, ValueError):
        step = float("nan")
    if np.isfinite(step) and step > 0:
        return step
    if needed:
        raise OccludeError(
            f"path {path}: {keyword} {_shown(value)} is not a positive distance (mm), and it places the slices"
        )
    return 1.0


def _pixel_spacing(value: Any, where: str) -> tuple[float, float]:
    numbers = _numbers(value, 2, "PixelSpacing", where)
    if not np.all(numbers > 0):
        raise OccludeError(f"{where}: PixelSpacing must be two positive numbers (mm), the file has {_shown(value)}")
    return float(numbers[0]), float(numbers[1])


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return shown("[" + ", ".join(str(v) for v in value) + "]")
    return shown(str(value))


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


def _enhanced_geometry(
    ds: Any, path: str | Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float], Any] | None:
    """Geometry of an enhanced multi-frame file from its functional groups: (X, Y, first IPP, pixel, the step
    from one frame's position to the next: None for one frame). Frames that are not evenly spaced along one
    line, in order, are refused (see `_slice_offset`)."""
    try:
        shared = ds.SharedFunctionalGroupsSequence[0]
        iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        spacing = shared.PixelMeasuresSequence[0].PixelSpacing
        frames = ds.PerFrameFunctionalGroupsSequence
        found = [f.PlanePositionSequence[0].ImagePositionPatient for f in frames]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    where = f"path {path}"
    cosines, pixel = _numbers(iop, 6, "ImageOrientationPatient", where), _pixel_spacing(spacing, where)
    positions = np.asarray([_numbers(p, 3, "ImagePositionPatient", where) for p in found], dtype=np.float64)
    x_dir, y_dir = cosines[:3], cosines[3:]
    normal = np.cross(x_dir, y_dir)
    step = None
    if len(positions) > 1:
        step = _slice_offset(f"path {path}", list(positions), normal, "frames")
        if abs(float(step @ normal)) < 1e-3:
            raise OccludeError(
                f"path {path}: its frames do not advance along the slice normal (several frames at one place: time "
                "points or echoes); only a single stack of slices is read as a volume"
            )
    return x_dir, y_dir, positions[0], pixel, step


def _slice_offset(
    where: str, positions: list[np.ndarray], along_normal: np.ndarray, what: str = "slices"
) -> np.ndarray:
    """The step from one slice's ImagePositionPatient to the next (LPS mm), from the first and the last: along
    the normal for an ordinary series, with an in-plane part for a gantry tilt (the affine is then sheared, as
    the slices lie). Every slice must lie on that line, evenly (within 1 % of the step); one slice:
    ``along_normal``. ``where`` and ``what`` name the folder or file and its slices or frames in the error."""
    if len(positions) < 2:
        return along_normal
    first = np.asarray(positions[0], dtype=np.float64)
    offset = (np.asarray(positions[-1], dtype=np.float64) - first) / (len(positions) - 1)
    expected = first + np.arange(len(positions))[:, None] * offset
    off = float(np.max(np.linalg.norm(np.asarray(positions, dtype=np.float64) - expected, axis=1)))
    if off > max(1e-2 * float(np.linalg.norm(offset)), 1e-3):
        raise OccludeError(
            f"{where}: the {what}' ImagePositionPatient do not lie evenly on one line (one is {off:.3g} mm off "
            f"the line from the first to the last); the {what} of a volume must be evenly spaced along one direction"
        )
    return offset
