"""Other methods' maps and region masks coming in: read at their own resolution, then mapped onto the
model-input grid through the image's crop box (like ``region``); volume maps onto the model grid through world
coordinates (NIfTI) or the input's field of view (.npy)."""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..core.metrics import unit_scaled
from ..errors import OccludeError, first_line
from .images import PreparedImage, file_kind, has_transparency, normalise_mode, open_image
from .limits import PARAM, budget, human
from .medical import Volume
from .volumes import PreparedVolume

MASK_SUFFIX = ".mask.png"  # naming convention: dir/a.jpg -> dir/a.mask.png
# medical inputs: dir/scan.nii.gz -> dir/scan.mask.nii.gz (or a DICOM SEG / RT-STRUCT dir/scan.seg.dcm,
# dir/scan.mask.dcm); a 2-D DICOM slice may also have dir/slice.mask.png; a series folder dir/series/ has them
# beside it (dir/series.mask.nii.gz, dir/series.seg.dcm)
MEDICAL_MASK_SUFFIXES = (".mask.nii.gz", ".mask.nii", ".seg.dcm", ".mask.dcm")
MASK_SUFFIXES = (MASK_SUFFIX,) + MEDICAL_MASK_SUFFIXES


# ------------------------------------------------------------------------------- saliency maps


def _check_npy_header(path: Path) -> None:
    """Refuse a .npy whose header declares more than the memory budget (as float64), before it is read."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
    except (ValueError, OSError, EOFError) as exc:
        raise OccludeError(f"cannot read {path} as a .npy array: {first_line(exc)}") from None
    need = math.prod(int(d) for d in shape) * max(8, int(dtype.itemsize))
    if need > budget():
        raise OccludeError(
            f"saliency map {path} declares shape {tuple(shape)} {dtype} (about {human(need)} as float64); "
            f"the limit is {PARAM} {human(budget())}",
            params=(PARAM,),
        )


def read_saliency_map(path, *, dims: Sequence[int] = (2,)) -> Union[np.ndarray, Volume]:
    """Another method's map as saved, at its own resolution: a .npy array or a greyscale image (PNG, 8 or
    16 bit) for images, returned as (h, w) float64 with NaN where not finite (not computed).

    ``dims`` says which maps fit the model: (2,) images and slices (the default), (3,) volumes, (2, 3)
    either (a check before the model is known). A volume's map is a (D, H, W) .npy in occlude's layout
    (axial slices, as STEM.npy), or a NIfTI file (.nii/.nii.gz), returned as a
    :class:`~occlude_cli.loaders.medical.Volume` (its affine places it; NaN kept).

    Singleton axes are dropped, so (1, h, w) and (1, 1, h, w) arrays from deep-learning frameworks load;
    multi-channel maps must be reduced to one channel first (e.g. ``abs(grad).sum(axis=0)``).
    """
    path = Path(path)
    dims = tuple(int(d) for d in dims)
    if not path.exists():
        raise OccludeError(f"saliency map not found: {path}")
    if path.is_dir():
        raise OccludeError(f"expected a saliency map file (.npy or greyscale PNG), got a folder: {path}")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):  # a FIFO or a device would block the read forever
        raise OccludeError(f"saliency map {path} is not a regular file ({file_kind(mode)}), not opened")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        if 3 not in dims:
            raise OccludeError(
                f"saliency map {path} is NIfTI, a volume's map: this model takes 2-D images (give a 2-D .npy "
                "or greyscale PNG)"
            )
        from .nifti import read_nifti

        volume = read_nifti(path, finite=False)
        volume.data[~np.isfinite(volume.data)] = np.nan
        return volume
    if path.suffix.lower() == ".npy":
        _check_npy_header(path)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise OccludeError(f"cannot read {path} as a .npy array: {first_line(exc)}") from None
        if not isinstance(array, np.ndarray):
            raise OccludeError(f"{path} is not a single .npy array")
        if array.dtype.kind not in "biuf":
            raise OccludeError(f"saliency map {path} must hold real numbers, got dtype {array.dtype}")
        values = array.astype(np.float64)
    elif 2 not in dims:
        raise OccludeError(
            f"saliency map {path}: a volume's map must be a (D, H, W) .npy or a NIfTI file (.nii, .nii.gz)"
        )
    else:
        values = _read_grey_image(path)
    squeezed = np.squeeze(values)
    if squeezed.ndim not in dims:
        wanted = " or ".join({2: "2-D (H, W)", 3: "3-D (D, H, W)"}[d] for d in dims)
        raise OccludeError(
            f"saliency map {path} must be {wanted}, got shape {tuple(values.shape)}"
            + ("; reduce the channels first, e.g. abs(map).sum(axis=0)" if dims == (2,) and squeezed.ndim == 3 else "")
        )
    if min(squeezed.shape) < 1:
        raise OccludeError(f"saliency map {path} is empty: shape {tuple(values.shape)}")
    return np.where(np.isfinite(squeezed), squeezed, np.nan)


def map_on_model_grid(raw: Union[np.ndarray, Volume], prepared: PreparedVolume) -> np.ndarray:
    """Another method's volume map (from :func:`read_saliency_map` with ``dims=(3,)``) on the model grid of a
    prepared volume, float64, NaN where not computed. A NIfTI map is placed through world coordinates: each
    model voxel's centre is looked up in it by its affine (linear; more than half a voxel outside the map:
    NaN), so a map on the
    scan's own grid, in the file's own orientation, lands where it belongs. An array is taken to cover the
    input's field of view in occlude's layout (as STEM.npy does) and is stretched onto the grid. NaN voxels
    neither leak into nor erase their neighbours (normalised interpolation, as :func:`resize_map`)."""
    from .medical import resample_to_grid, stretch_to

    shape = tuple(prepared.grid.data.shape)
    if isinstance(raw, Volume):
        if raw.data.ndim != 3:
            raise OccludeError(f"the other map has {raw.data.ndim} axes; a volume's map needs 3")
        values = np.asarray(raw.data, dtype=np.float64)

        def sample(data: np.ndarray) -> np.ndarray:
            return resample_to_grid(data, raw.affine, prepared.grid.affine, shape)

    else:
        values = np.asarray(raw, dtype=np.float64)
        if values.ndim != 3:
            raise OccludeError(f"the other map is {values.ndim}-D: a volume's map is (D, H, W)")
        if values.shape == shape:
            return values.copy()

        def sample(data: np.ndarray) -> np.ndarray:
            return np.asarray(stretch_to(data, shape), dtype=np.float64)

    valid = np.isfinite(values)
    weight = sample(valid.astype(np.float64))  # NaN where the grid lies outside the map
    total = sample(np.where(valid, values, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(np.nan_to_num(weight) >= 0.5, total / weight, np.nan)
    if not np.isfinite(result).any():
        raise OccludeError("the other map does not cover the model grid (no voxel in common: another scan?)")
    return result


def _read_grey_image(path: Path) -> np.ndarray:
    """A map saved as an image, read by the one image opener (its size checked against the pixel limit and the
    memory budget before it is decoded)."""
    try:
        image = open_image(path)
    except OccludeError as exc:
        if str(exc).startswith("not an image"):
            raise OccludeError(f"saliency map {path} is neither a .npy array nor an image Pillow can read") from None
        raise OccludeError(f"saliency map: {exc}", params=exc.params) from None
    mode = image.mode
    if mode in ("1", "L", "F") or mode.startswith("I"):
        return np.asarray(image, dtype=np.float64)
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel(0), dtype=np.float64)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise OccludeError(
            f"saliency map {path} is a colour image: give a greyscale PNG or the raw values as .npy "
            "(a colormap rendering cannot be read back as values)"
        )
    return rgb[..., 0]


def _resize_float(
    values: np.ndarray, size: Tuple[int, int], box=None, resample=Image.Resampling.BILINEAR
) -> np.ndarray:
    """Resize with Pillow's 32-bit float images, on the values scaled to a largest magnitude of 1 and scaled
    back (resampling is linear): a map in units far from 1 (1e200, 1e-60) neither overflows float32 to inf
    nor underflows to 0."""
    height, width = size
    unit, factor = unit_scaled(values)
    image = Image.fromarray(np.ascontiguousarray(unit, dtype=np.float32), "F")
    return np.asarray(image.resize((width, height), resample, box=box), dtype=np.float64) * factor


def resize_map(
    values,
    size: Tuple[int, int],
    *,
    original_size: Optional[Tuple[int, int]] = None,
    crop_box: Optional[Tuple[float, float, float, float]] = None,
) -> np.ndarray:
    """Bring a map to the model-input ``size`` (height, width), bilinear.

    A map with the original image's shape (``original_size`` is (width, height)) is taken in original
    pixels and cropped by ``crop_box`` first, like the image (matters for center-crop models); any other
    shape is taken to cover the model input. NaN pixels stay NaN (where they make up most of a pixel).
    """
    values = np.asarray(values, dtype=np.float64)
    height, width = size
    box = None
    if original_size is not None and crop_box is not None and values.shape == (original_size[1], original_size[0]):
        box = tuple(float(v) for v in crop_box)
        if box == (0.0, 0.0, float(original_size[0]), float(original_size[1])):
            box = None
    if values.shape == (height, width) and box is None:
        return values.copy()
    if box is not None:  # a letterbox's crop box reaches beyond the photo: no data there
        values, box = padded_for_box(values, box, np.nan)
    valid = np.isfinite(values)
    if valid.all():
        return _resize_float(values, size, box)
    # normalised resampling: NaN pixels neither leak into nor erase their neighbours
    weight = _resize_float(valid.astype(np.float64), size, box)
    total = _resize_float(np.where(valid, values, 0.0), size, box)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= 0.5, total / weight, np.nan)


def load_saliency_map(
    path,
    size: Tuple[int, int],
    *,
    original_size: Optional[Tuple[int, int]] = None,
    crop_box: Optional[Tuple[float, float, float, float]] = None,
) -> np.ndarray:
    """:func:`read_saliency_map` then :func:`resize_map`: an (H, W) float64 map at model-input size."""
    return resize_map(read_saliency_map(path), size, original_size=original_size, crop_box=crop_box)


# ------------------------------------------------------------------------------------ regions


def check_box(box) -> Tuple[float, ...]:
    """A box (x0, y0, x1, y1 in original image pixels, x1/y1 exclusive; or, for volumes, x0, y0, z0, x1, y1, z1
    in world millimetres) as floats, checked non-empty."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise OccludeError(f"box must be four numbers x0, y0, x1, y1, got {box!r}", params=("box",)) from None
    if len(values) == 6 and all(math.isfinite(v) for v in values):
        if any(b <= a for a, b in zip(values[:3], values[3:])):
            raise OccludeError(f"box {','.join(f'{v:g}' for v in values)} is empty: each end must exceed its start")
        return tuple(values)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise OccludeError(f"box must be four finite numbers x0, y0, x1, y1, got {box!r}", params=("box",))
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise OccludeError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty: need x0 < x1 and y0 < y1", params=("box",))
    return x0, y0, x1, y1


def _coverage(a: float, b: float, lo: float, hi: float, n: int) -> np.ndarray:
    """For n model pixels spanning [lo, hi) of the original axis: the fraction of each inside [a, b)."""
    edges = lo + (hi - lo) * np.arange(n + 1) / n
    overlap = np.minimum(edges[1:], b) - np.maximum(edges[:-1], a)
    return np.clip(overlap, 0.0, None) / (edges[1:] - edges[:-1])


def _finish_mask(cover: np.ndarray, what: str) -> np.ndarray:
    """Model pixels at least half covered by the region; a region smaller than that keeps every pixel it
    touches, so that a tiny box still counts."""
    mask = cover >= 0.5 - 1e-9
    if not mask.any():
        mask = cover > 1e-9
    if not mask.any():
        raise OccludeError(f"{what} lies outside the part of the image the model sees")
    return mask


def box_mask(box, prepared: PreparedImage) -> np.ndarray:
    """(H, W) bool at model-input resolution: the model pixels at least half inside ``box``
    (x0, y0, x1, y1 in original image pixels)."""
    x0, y0, x1, y1 = check_box(box)
    width, height = prepared.original_size
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise OccludeError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width}x{height} image", params=("box",))
    left, top, right, bottom = prepared.crop_box
    rows, cols = prepared.preprocessing.size
    cover = _coverage(y0, y1, top, bottom, rows)[:, None] * _coverage(x0, x1, left, right, cols)[None, :]
    return _finish_mask(cover, f"box {x0:g},{y0:g},{x1:g},{y1:g}")


def read_mask(path) -> np.ndarray:
    """A mask image as (h, w) float 0/1 at its own resolution: white (grey >= 128) marks the region.

    The one reader of region masks for every command. Transparency means outside: a mask with an alpha
    channel (RGBA, LA), a transparent palette index or a transparent colour is read as it looks over black
    (grey times alpha / 255), so the transparent background annotation tools export is outside whatever
    colour its pixels carry, and an opaque white shape is inside. 16-bit masks are rescaled to 0..255 first."""
    path = Path(path)
    if not path.exists():
        raise OccludeError(f"mask not found: {path}")
    if path.is_dir():
        raise OccludeError(f"expected a mask image, got a folder: {path}")
    try:
        image = open_image(path)
    except OccludeError as exc:
        raise OccludeError(f"bad mask: {exc}") from None
    if has_transparency(image):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2 luma, as Pillow's "L"
        grey = grey * rgba[..., 3] / 255.0
    else:
        flat = normalise_mode(image)  # RGB, L or F (16-bit rescaled to 0..255)
        grey = np.asarray(flat.convert("L") if flat.mode == "RGB" else flat, dtype=np.float64)
    inside = (grey >= 127.5).astype(np.float64)
    if not inside.any():
        raise OccludeError(
            f"mask {path} is empty: paint the region white (grey >= 128) on black or on a transparent background"
        )
    return inside


def mask_from_file(path, prepared: PreparedImage, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """(H, W) bool at model-input resolution (or at ``size``, a grid over the same input, such as a segmentation
    output's) from a mask image: white (grey >= 128) marks the region.

    The mask covers the whole original image whatever its own size (it is stretched to it), then
    goes through the same crop, resize or letterbox as the image (the letterbox's padding is outside); a pixel
    is in the region when at least half of it is.
    """
    inside = read_mask(path)
    mask_h, mask_w = inside.shape
    width, height = prepared.original_size
    sx, sy = mask_w / width, mask_h / height
    left, top, right, bottom = prepared.crop_box
    padded, box = padded_for_box(inside, (left * sx, top * sy, right * sx, bottom * sy), 0.0)
    cover = _resize_float(padded, size or prepared.preprocessing.size, box, Image.Resampling.BOX)
    return _finish_mask(cover, f"the region of mask {path}")


def padded_for_box(values: np.ndarray, box, fill: float):
    """``values`` (h, w) padded with ``fill`` so that ``box`` (left, top, right, bottom, in its pixels) lies inside
    it, and the box moved with it: a letterbox's crop box reaches beyond the photo, and Pillow resizes only
    boxes inside the image."""
    left, top, right, bottom = (float(v) for v in box)
    h, w = values.shape
    pad_left, pad_top = max(0, math.ceil(-left)), max(0, math.ceil(-top))
    pad_right, pad_bottom = max(0, math.ceil(right - w)), max(0, math.ceil(bottom - h))
    if not (pad_left or pad_top or pad_right or pad_bottom):
        return values, (left, top, right, bottom)
    out = np.pad(values, ((pad_top, pad_bottom), (pad_left, pad_right)), constant_values=fill)
    return out, (left + pad_left, top + pad_top, right + pad_left, bottom + pad_top)


def region_mask(prepared: PreparedImage, *, box=None, mask=None) -> np.ndarray:
    """The region to check as an (H, W) bool mask at model-input resolution, from exactly one of
    ``box`` (x0, y0, x1, y1 in original image pixels) or ``mask`` (an image path, or a
    bool array already at model-input resolution)."""
    if (box is None) == (mask is None):
        raise OccludeError("give exactly one region: a box or a mask")
    if box is not None:
        return box_mask(box, prepared)
    if isinstance(mask, np.ndarray):
        if mask.shape != tuple(prepared.preprocessing.size):
            raise OccludeError(
                f"mask array shape {mask.shape} differs from the model input {prepared.preprocessing.size}"
            )
        if not mask.any():
            raise OccludeError("mask array is empty")
        return mask.astype(bool)
    return mask_from_file(mask, prepared)


def _medical_name(path: Path) -> Tuple[str, bool]:
    """(the name without its medical suffix, whether the input is medical: NIfTI, DICOM or a series folder)."""
    name = path.name
    lower = name.lower()
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if lower.endswith(suffix):
            return name[: -len(suffix)], True
    if path.is_dir() or (path.suffix == "" and path.is_file()):
        return name, True  # a series folder, or a DICOM file without a suffix
    return path.stem, False


def mask_candidates(base: Path, medical: bool) -> List[Path]:
    """The mask files a name ``base`` (without suffix) may have, in the order they are looked for."""
    suffixes = (MEDICAL_MASK_SUFFIXES + (MASK_SUFFIX,)) if medical else (MASK_SUFFIX,)
    return [base.with_name(base.name + suffix) for suffix in suffixes]


def convention_mask_path(image_path) -> Path:
    """The mask an input has by naming convention: ``dir/a.jpg`` -> ``dir/a.mask.png``; a medical input
    ``dir/scan.nii.gz`` (or ``scan.dcm``, or a series folder ``dir/scan/``) -> the first that exists of
    ``dir/scan.mask.nii.gz``, ``.mask.nii``, ``.seg.dcm``, ``.mask.dcm``, ``.mask.png`` (the first when none
    does)."""
    image_path = Path(image_path)
    stem, medical = _medical_name(image_path)
    candidates = mask_candidates(image_path.with_name(stem), medical)
    return next((c for c in candidates if c.is_file()), candidates[0])


def masks_folder_path(folder: Path, source_stem: str, medical: bool) -> Path:
    """An input's mask in a folder of masks: ``FOLDER/<relative name>.png``; for a medical input the first that
    exists of ``.nii.gz``, ``.nii``, ``.seg.dcm``, ``.dcm``, ``.png`` (``.nii.gz`` when none does)."""
    suffixes = (".nii.gz", ".nii", ".seg.dcm", ".dcm", ".png") if medical else (".png",)
    candidates = [folder / f"{source_stem}{suffix}" for suffix in suffixes]
    return next((c for c in candidates if c.is_file()), candidates[0])


def is_medical_name(path) -> bool:
    return _medical_name(Path(path))[1]


def is_mask_file(path) -> bool:
    """True for files named by the mask convention (``*.mask.png``, ``*.mask.nii.gz``, ``*.seg.dcm``, ...),
    which are never inputs."""
    return Path(path).name.lower().endswith(MASK_SUFFIXES)


def check_mask_file(path) -> None:
    """A mask given for every input, checked before any input: an image mask is read; a NIfTI mask or a DICOM
    SEG is read; an RT-STRUCT is checked to be one (its contours are rasterised on each scan)."""
    from .labels import RTSTRUCT_SOP_CLASS, is_label_file, read_dicom_header, read_label_map

    path = Path(path)
    if path.is_file() and is_label_file(path):
        if not path.name.lower().endswith((".nii", ".nii.gz")):
            if str(read_dicom_header(path).get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS:
                return
        if not read_label_map(path).data.any():  # as an empty image mask: refused before any input
            raise OccludeError(f"mask {path} is empty: it marks no voxel", params=("mask",))
        return
    read_mask(path)


def medical_region(prepared: PreparedVolume, *, box=None, mask=None) -> np.ndarray:
    """The region of a medical input as a bool mask on its model grid, from exactly one of ``box`` (a slice:
    x0, y0, x1, y1 in its pixels; any: x0, y0, z0, x1, y1, z1 in world mm) or ``mask`` (a NIfTI mask, a DICOM
    SEG or RT-STRUCT, placed through world coordinates; a slice also takes a mask image; or a bool array on
    the model grid)."""
    from .labels import is_label_file, mask_on_grid, read_label_map, world_box_mask

    if (box is None) == (mask is None):
        raise OccludeError("give exactly one region: a box or a mask")
    if box is not None:
        values = tuple(float(v) for v in box)
        if len(values) == 6:
            return world_box_mask(values, prepared.grid)
        if prepared.ndim == 3:
            raise OccludeError(
                "box of a volume is x0, y0, z0, x1, y1, z1 in world millimetres (RAS+, as the JSON's peak.world_mm)",
                params=("box",),
            )
        return box_mask(values, prepared)  # type: ignore[arg-type]  # a slice has the 2-D image interface
    if isinstance(mask, np.ndarray):
        if mask.shape != prepared.grid.data.shape or not mask.any():
            raise OccludeError(f"mask array of shape {mask.shape}: needs the model grid's {prepared.grid.data.shape}")
        return mask.astype(bool)
    path = Path(mask)
    if prepared.ndim == 2 and path.is_file() and not is_label_file(path):
        return mask_from_file(path, prepared)  # type: ignore[arg-type]
    return mask_on_grid(read_label_map(path, prepared.volume), prepared.grid, prepared.volume)
