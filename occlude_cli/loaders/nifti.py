"""NIfTI volumes in and occlusion maps out: :func:`read_nifti` (4-D files need a volume index; the header is
checked against the memory budget before the voxels are read, slab by slab, and reoriented to the common
layout) and :func:`write_nifti_map` (the map on the input's own grid with its affine, so it opens aligned in
3D Slicer, ITK-SNAP or FSLeyes). nibabel is the optional ``medical`` extra."""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from occlude_cli.errors import OccludeError

from . import limits
from .medical import Volume, _grid_affine, _nibabel, resample_map_to_input

# Orientation of the Volume array axes (d, h, w) as nibabel axis codes: each letter is the direction the axis
# increases toward. For NIfTI we reorient the (i, j, k) voxel axes to ("L", "P", "S") and transpose to (k, j, i).
_NIFTI_IJK_TARGET = ("L", "P", "S")


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


def _nifti_header(stream: Any, path: str | Path) -> tuple[Any, int, list[str]]:
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
            f"path {path}: a header of a .hdr/.img pair (magic {magic.decode()!r}); only single-file .nii/.nii.gz "
            "are read"
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
    fixes = _Fixes()
    try:
        header = klass(block, endianness=endian, check=False)
        header.check_fix(logger=fixes, error_level=40)  # nibabel.load's checks and fixes (pixdim signs...)
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 -- HeaderDataError, ValueError, numpy errors from hostile fields
        raise OccludeError(f"path {path}: bad NIfTI header ({type(exc).__name__}: {exc})") from None
    if not np.all(np.isfinite(affine)) or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        raise OccludeError(
            f"path {path}: bad NIfTI header: its voxel-to-world affine (qform/sform, pixdim) is not finite or "
            "not invertible"
        )
    return header, size, fixes.messages


class _Fixes:
    """What nibabel's header checks found and repaired (pixdim of 0 read as 1, negative pixdim made positive,
    an invalid xform code set to 0...), kept for the input's own warnings instead of nibabel's global logger,
    which printed them bare on stderr, tied to no file."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def log(self, level: int, message: str) -> None:
        if level >= 30 and message and message not in self.messages:  # what nibabel's logger shows: >= WARNING
            self.messages.append(message)


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
    header, header_size, fixes = _nifti_header(stream, path)
    shape = tuple(int(s) for s in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise OccludeError(f"path {path}: NIfTI image has {len(shape)} dimensions {shape}; only 3-D volumes are read")
    if len(shape) == 4:
        if volume_index is None:
            raise OccludeError(
                f"path {path}: 4-D NIfTI with {shape[3]} volumes; pass volume_index 0..{shape[3] - 1} to pick one",
                params=("volume_index",),
            )
        if not 0 <= volume_index < shape[3]:
            raise OccludeError(
                f"volume_index {volume_index}: out of range 0..{shape[3] - 1} for {path}", params=("volume_index",)
            )
    elif volume_index not in (None, 0):
        raise OccludeError(f"volume_index {volume_index}: {path} holds a single 3-D volume", params=("volume_index",))
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
    try:
        slope, inter = header.get_slope_inter()
    except Exception as exc:  # noqa: BLE001 -- nibabel's HeaderDataError: a valid slope with a NaN/inf intercept
        raise OccludeError(f"path {path}: bad NIfTI header: scl_slope/scl_inter ({exc})") from None
    plane = spatial[0] * spatial[1] * dtype.itemsize
    step = max(1, limits.SLAB_BYTES // plane)
    for k in range(0, spatial[2], step):
        count = min(step, spatial[2] - k)
        raw = np.frombuffer(_read_exact(stream, count * plane, path, "the voxels"), dtype=dtype)
        values = _nifti_scaled(raw.reshape((spatial[0], spatial[1], count), order="F"), slope, inter)
        view[:, :, k : k + count] = _float32_voxels(values, path) if finite else values
    meta: dict[str, Any] = {"source_axcodes": "".join(nibabel.aff2axcodes(source_affine)), "reoriented": bool(reorient)}
    meta["xform_codes"] = [int(header["qform_code"]), int(header["sform_code"])]
    if fixes:
        meta["header_repaired"] = fixes  # nibabel's repairs of the header, as it reads it (a warning of the input)
    if len(shape) == 4:  # which volume of the 4-D file this is (the JSON's input.volume_index)
        meta.update(volume_index=int(volume_index or 0), volumes=int(shape[3]))
    units = header.get_xyzt_units()[0]
    if units not in ("mm", "unknown"):
        meta["spatial_units"] = units
    meta["axcodes"] = "".join(nibabel.aff2axcodes(affine))
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(data, spacing, affine, "nifti", meta, str(path), source_affine, spatial)


def _float32_voxels(values: np.ndarray, path: str | Path) -> np.ndarray:
    """A slab of an image in float32, or one line when a voxel is NaN or infinite in the file or becomes
    infinite in float32 (float64 voxels or an scl_slope beyond its range: never handed on as inf)."""
    if not np.all(np.isfinite(values)):
        raise OccludeError(f"path {path}: NIfTI volume contains NaN or infinite values")
    with np.errstate(over="ignore"):
        single = values.astype(np.float32, copy=False)
    if not np.all(np.isfinite(single)):
        raise OccludeError(
            f"path {path}: NIfTI voxels beyond the float32 range (up to {float(np.max(np.abs(values))):.4g} after "
            "scl_slope/scl_inter); occlude reads volumes as float32: save it scaled into that range"
        )
    return single


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
    # the input's own length unit (its affine is in it): a map labelled mm over a scan in micrometres or metres
    # is scaled apart by readers that honour the unit (ITK, so 3D Slicer)
    units = volume.meta.get("spatial_units") if volume.kind == "nifti" else None
    img.header.set_xyzt_units(units if units in ("meter", "micron") else "mm")
    img.header["descrip"] = b"occlude occlusion map"
    _set_xforms(img.header, np.asarray(affine, dtype=np.float64), _space_code(volume))
    target = None if path is None else Path(path)
    sink = _EncodedSink(compress=target is None or target.name.lower().endswith(".gz"))
    img.to_file_map(img.make_file_map({"image": sink, "header": sink}))  # what img.to_bytes() does
    data = sink.getvalue()
    if target is not None:
        _atomic_write(target, data)
    return data


def _space_code(volume: Volume) -> int:
    """The NIfTI xform code of the map's space: a NIfTI input's own (sform, else qform: 2 aligned, 3 Talairach,
    4 MNI...), else 1 (scanner anatomical, what DICOM geometry is)."""
    codes = volume.meta.get("xform_codes") if volume.kind == "nifti" else None
    if isinstance(codes, (list, tuple)) and len(codes) == 2:
        for code in (codes[1], codes[0]):
            if isinstance(code, int) and 0 < code <= 5:
                return code
    return 1


def _set_xforms(header: Any, affine: np.ndarray, code: int) -> None:
    """sform and qform that agree, as viewers need (some read the qform, some the sform): both the affine
    when a quaternion can hold it; for a sheared affine (which no quaternion holds) the sform alone, with
    qform code 0, so that every reader (nibabel, ITK/3D Slicer, FSLeyes) takes the sform."""
    header.set_sform(affine, code=code)
    header.set_qform(affine, code=code)
    if not np.allclose(header.get_qform(), affine, rtol=0, atol=1e-5 * max(1.0, float(np.abs(affine).max()))):
        header.set_qform(affine, code=0)


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
