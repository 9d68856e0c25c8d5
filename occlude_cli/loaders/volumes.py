"""Medical inputs (DICOM slices, DICOM series, NIfTI volumes) -> one model input, and back for display; and
reading any medical input by its kind (:func:`read_volume`).

The analogue of :mod:`occlude_cli.loaders.images` for :class:`~occlude_cli.loaders.medical.Volume`: resample
in real units to the model's grid (interpolate first, then the non-linear intensity transform, as the
sample models were trained), apply exactly one intensity transform (DICOM window, fixed range, z-score or
none), add the channel axis. Knows nothing of onnxruntime: the model's input shape and metadata come in as
plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union, cast

import numpy as np
from PIL import Image

from ..core.casting import cast_checked
from ..errors import OccludeError
from . import medical
from .dicom import is_dicom_file, read_dicom, read_dicom_series
from .medical import Volume
from .nifti import read_nifti

VOLUME_LAYOUTS = ("NCDHW", "NDHWC")
SLICE_LAYOUTS = ("NCHW", "NHWC")
MEDICAL_SUFFIXES = (".dcm", ".nii", ".nii.gz")
RESAMPLE_ORDERS = {"nearest": 0, "linear": 1, "cubic": 3}
TRANSFORMS = ("window", "intensity_range", "zscore")


def is_medical_path(path: Union[str, Path], series: bool = False) -> bool:
    """True for what :func:`read_volume` reads and a photo reader does not: ``.dcm``, ``.nii``,
    ``.nii.gz``, a suffix-less file with the DICOM marker, or a folder when ``series``."""
    p = Path(path)
    if p.is_dir():
        return series
    name = p.name.lower()
    if name.endswith(MEDICAL_SUFFIXES):
        return True
    return p.suffix == "" and p.is_file() and is_dicom_file(p)


@dataclass(frozen=True)
class VolumePreprocessing:
    """How a medical image becomes a model input (one sample, no batch axis).

    ``size``: the model grid, (D, H, W) for 3-D models, (H, W) for 2-D ones. ``transform``: ``window``
    (``window`` is a (centre, width) pair, or a preset/``W,L``/``file`` spec resolved per input),
    ``intensity_range`` ((lo, hi)), ``zscore`` (statistics over voxels above ``zscore_threshold`` when
    given) or None (real units as they are). ``order``: interpolation order of the resampling."""

    size: Tuple[int, ...]
    layout: str = "NCDHW"
    transform: Optional[str] = None
    window: Optional[Union[str, Tuple[float, float]]] = None
    intensity_range: Optional[Tuple[float, float]] = None
    zscore_threshold: Optional[float] = None
    order: int = 1
    dtype: str = "float32"
    modality: Optional[str] = None  # what the model declares it was trained on (CT, MR, ...), if it does

    def __post_init__(self) -> None:
        if self.layout not in VOLUME_LAYOUTS + SLICE_LAYOUTS:
            raise OccludeError(
                f"layout {self.layout!r}: medical inputs need one of {', '.join(VOLUME_LAYOUTS + SLICE_LAYOUTS)}"
            )
        want = 3 if self.layout in VOLUME_LAYOUTS else 2
        if len(self.size) != want or min(self.size) < 1:
            raise OccludeError(f"size {tuple(self.size)}: a {self.layout} model needs {want} positive sizes")
        if self.transform not in TRANSFORMS + (None,):
            raise OccludeError(f"intensity transform {self.transform!r}: use one of {', '.join(TRANSFORMS)}")

    @property
    def ndim(self) -> int:
        return len(self.size)

    @property
    def channels(self) -> int:
        """Medical inputs are grey: one channel (volume_preprocessing_from_metadata refuses others)."""
        return 1

    @property
    def channels_first(self) -> bool:
        return self.layout in ("NCDHW", "NCHW")

    @property
    def spatial_axes(self) -> Tuple[int, ...]:
        """Axes of the spatial extent in one sample (no batch axis)."""
        return tuple(range(1, self.ndim + 1)) if self.channels_first else tuple(range(self.ndim))

    def with_transform(
        self, *, window=None, intensity_range=None, zscore: bool = False, zscore_threshold: Optional[float] = None
    ) -> VolumePreprocessing:
        """A copy with the intensity transform the caller asked for (at most one), which replaces the model's."""
        asked = [
            name
            for name, on in (
                ("window", window is not None),
                ("intensity_range", intensity_range is not None),
                ("zscore", zscore),
            )
            if on
        ]
        if len(asked) > 1:
            raise OccludeError("choose one intensity transform: window, intensity_range or zscore")
        if zscore_threshold is not None and not zscore and self.transform != "zscore":
            raise OccludeError("zscore_threshold needs zscore")
        fields = dict(self.__dict__)
        if asked:
            fields.update(transform=asked[0], window=None, intensity_range=None, zscore_threshold=None)
            if window is not None:
                fields["window"] = _window_value(window)
            if intensity_range is not None:
                fields["intensity_range"] = medical.parse_intensity_range(intensity_range)
        if zscore_threshold is not None:
            fields["zscore_threshold"] = float(zscore_threshold)
        return VolumePreprocessing(**fields)

    def describe(self) -> dict:
        return {
            "size": list(self.size),
            "layout": self.layout,
            "transform": self.transform,
            "window": list(self.window) if isinstance(self.window, tuple) else self.window,
            "intensity_range": list(self.intensity_range) if self.intensity_range else None,
            "zscore": self.transform == "zscore",
            "zscore_threshold": self.zscore_threshold,
            "resample_order": self.order,
            **({"modality": self.modality} if self.modality else {}),
        }


def _window_value(spec) -> Union[str, Tuple[float, float]]:
    """A window (centre, width) pair, or the spec 'file' (resolved per input)."""
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise OccludeError(f"window {spec!r}: expected (centre, width)")
        return float(spec[0]), float(spec[1])
    if str(spec).strip().lower() == "file":
        return "file"
    return medical.parse_window(str(spec))


def volume_preprocessing_from_metadata(
    meta: dict, input_shape: Sequence, dtype: str, layout: Optional[str] = None
) -> VolumePreprocessing:
    """The model's ``occlude.preprocess`` metadata (``layout``, ``size``, ``window`` / ``intensity_range`` /
    ``zscore``, ``resample``) and its input shape -> VolumePreprocessing. Fixed input dimensions win over
    ``size``; scale/mean/std are refused (they are for 0..255 photos)."""
    layout = str(layout or meta.get("layout") or ("NCDHW" if len(input_shape) == 5 else "NCHW")).upper()
    if layout not in VOLUME_LAYOUTS + SLICE_LAYOUTS:
        raise OccludeError(f"layout {layout!r}: medical inputs need one of {', '.join(VOLUME_LAYOUTS + SLICE_LAYOUTS)}")
    ndim = 3 if layout in VOLUME_LAYOUTS else 2
    if len(input_shape) != ndim + 2:
        raise OccludeError(f"model input shape {list(input_shape)} does not fit layout {layout}")
    dims = list(input_shape[2:] if layout.startswith("NC") else input_shape[1:-1])
    channels = input_shape[1] if layout.startswith("NC") else input_shape[-1]
    if isinstance(channels, int) and channels not in (1,):
        raise OccludeError(f"model input has {channels} channels: medical inputs are grey (1 channel)")
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if meta.get("size") is not None and len(meta["size"]) == ndim:
        for got, want in zip(fixed, meta["size"]):
            if got is not None and int(want) != got:
                raise OccludeError(f"size {list(meta['size'])} conflicts with the model's fixed input {dims}")
    if None in fixed:
        if "size" not in meta or len(meta["size"]) != ndim:
            raise OccludeError(f"model input {list(input_shape)} has dynamic sizes: its metadata must give size")
        fixed = [f if f is not None else int(s) for f, s in zip(fixed, meta["size"])]
    for key in ("mean", "std", "scale"):
        if key in meta and meta[key] not in (None, [0.0], [1.0], 1.0, 0.0):
            raise OccludeError(f"model metadata {key}: is for 0..255 photos and does not apply to medical inputs")
    transforms = [k for k in TRANSFORMS if meta.get(k) not in (None, False)]
    if len(transforms) > 1:
        raise OccludeError("model metadata: choose one intensity transform: window, intensity_range or zscore")
    zscore = meta.get("zscore")
    resample = str(meta.get("resample", "linear")).lower()
    if resample not in RESAMPLE_ORDERS:
        raise OccludeError(f"model metadata resample {resample!r}: use one of {', '.join(RESAMPLE_ORDERS)}")
    return VolumePreprocessing(
        size=tuple(int(v) for v in cast(List[int], fixed)),  # no None left: filled from size above
        layout=layout,
        transform=transforms[0] if transforms else None,
        window=_window_value(meta["window"]) if meta.get("window") is not None else None,
        intensity_range=medical.parse_intensity_range(meta["intensity_range"]) if meta.get("intensity_range") else None,
        zscore_threshold=float(zscore["mask_threshold"])
        if isinstance(zscore, dict) and "mask_threshold" in zscore
        else None,
        order=RESAMPLE_ORDERS[resample],
        dtype=dtype,
        modality=str(meta["modality"]).strip().upper()[:16] if meta.get("modality") else None,
    )


@dataclass
class PreparedVolume:
    """A medical input ready for the engine, with what the outputs need to map results back.

    ``volume``: the input as read (real units, its own grid and affine); ``grid``: resampled to the model's
    grid (real units; its affine places the model's voxels in the world); ``intensities``: ``grid`` after the
    intensity transform (what the model sees, without the channel axis); ``display``: 0..1 grey values of
    ``grid`` for pictures; ``model_input``: one sample in the model's layout and dtype."""

    path: Optional[Path]
    volume: Volume
    grid: Volume
    intensities: np.ndarray
    display: np.ndarray
    model_input: np.ndarray
    preprocessing: VolumePreprocessing = field(repr=False)
    window: Optional[Tuple[float, float]] = None  # the window actually applied (centre, width), if any
    display_window: Optional[Tuple[float, float]] = None  # the pictures' own window (centre, width), if given

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    def display_of(self, data: np.ndarray) -> np.ndarray:
        """Real-unit intensities -> 0..1 grey for pictures, with the same rule as ``display``."""
        return display_intensities(data, self.display_window or self.window, self.preprocessing, self.volume)

    # The 2-D image interface (for 2-D DICOM slices, so that the photo pictures work unchanged)
    @property
    def original(self) -> Image.Image:
        """The original slice (full resolution), windowed for display, as an 8-bit grey image (2-D only)."""
        if self.ndim != 2:
            raise OccludeError("original: a 3-D volume has no single original picture; use the montage")
        return Image.fromarray(np.rint(self.display_of(self.volume.data) * 255).astype(np.uint8), "L")

    @property
    def original_size(self) -> Tuple[int, int]:
        """(width, height) of the original slice, or of the volume's axial plane."""
        h, w = self.volume.data.shape[-2:]
        return int(w), int(h)

    @property
    def crop_box(self) -> Tuple[float, float, float, float]:
        width, height = self.original_size
        return (0.0, 0.0, float(width), float(height))

    def describe(self) -> dict:
        """The JSON's ``input`` block: kind, shape, spacing, affine and the file's facts."""
        v = self.volume
        return {
            "path": str(self.path) if self.path is not None else None,
            "kind": v.kind,
            "shape": [int(s) for s in v.data.shape],
            "spacing": [float(s) for s in v.spacing],
            "affine": [[float(c) for c in row] for row in np.asarray(v.affine)],
            "model_grid": {
                "shape": [int(s) for s in self.grid.data.shape],
                "spacing": [float(s) for s in self.grid.spacing],
                "affine": [[float(c) for c in row] for row in np.asarray(self.grid.affine)],
            },
            "window_applied": list(self.window) if self.window is not None else None,
            "display_window": list(self.display_window) if self.display_window is not None else None,
            "volume_index": v.meta.get("volume_index"),
            "meta": _json_safe(v.meta),
        }

    def world(self, index: Sequence[float]) -> list:
        """World coordinates (RAS+, mm) of a model-grid voxel index ((d, h, w), or (h, w) for slices)."""
        point = list(index) + ([0.0] if len(index) == 2 else [])
        return [float(c) for c in (np.asarray(self.grid.affine) @ np.array(point + [1.0]))[:3]]


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def display_intensities(
    data: np.ndarray, window: Optional[Tuple[float, float]], pre: VolumePreprocessing, volume: Volume
) -> np.ndarray:
    """0..1 grey for pictures: the window the model uses, else the model's fixed range, else the file's own
    window, else the 1st to 99th percentile of the volume."""
    data = np.asarray(data, dtype=np.float64)
    if window is not None:
        return medical.apply_window(data, *window)
    if pre.transform == "intensity_range" and pre.intensity_range:
        return medical.normalize_range(data, *pre.intensity_range)
    if volume.meta.get("window"):
        centre, width = volume.meta["window"][:2]
        return medical.apply_window(data, float(centre), max(1.0, float(width)))
    lo, hi = np.percentile(volume.data, [1, 99])
    if not hi > lo:
        lo, hi = float(volume.data.min()), float(volume.data.max()) + 1e-6
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def read_medical(
    path: Union[str, Path, Volume],
    *,
    series: bool = False,
    volume_index: Optional[int] = None,
    series_uid: Optional[str] = None,
) -> Volume:
    """A Volume from a path (DICOM file, NIfTI file, a series folder with ``series``) or as given."""
    if isinstance(path, Volume):
        return path
    return read_volume(path, series=series, volume_index=volume_index, series_uid=series_uid)


def prepare_volume(
    source: Union[str, Path, Volume],
    pre: VolumePreprocessing,
    *,
    series: bool = False,
    volume_index: Optional[int] = None,
    series_uid: Optional[str] = None,
    display_window: Optional[Union[str, Tuple[float, float]]] = None,
) -> PreparedVolume:
    """Read (if a path), resample to the model grid in real units, transform intensities, add the channel axis.
    ``display_window`` (a preset, ``W,L``, ``file`` or (centre, width)) changes the pictures only."""
    volume = read_medical(source, series=series, volume_index=volume_index, series_uid=series_uid)
    if volume.ndim != pre.ndim:
        what = "a 3-D volume" if volume.ndim == 3 else "a 2-D slice"
        model = "3-D" if pre.ndim == 3 else "2-D"
        raise OccludeError(
            f"input is {what} of shape {tuple(volume.data.shape)} but the model is {model} "
            f"({pre.layout} {'x'.join(map(str, pre.size))})"
        )
    grid = medical.resample(volume, pre.size, order=pre.order)
    window: Optional[Tuple[float, float]] = None
    if pre.transform == "window":
        if pre.window is None:
            raise OccludeError("window: the transform is 'window' but no window was given")
        window = (
            medical.parse_window(pre.window, volume) if isinstance(pre.window, str) else (pre.window[0], pre.window[1])
        )
    values = model_intensities(grid.data, pre, window)
    sample = values[None] if pre.channels_first else values[..., None]
    shown: Optional[Tuple[float, float]] = None
    if display_window is not None:
        shown = (
            medical.parse_window(display_window, volume)
            if isinstance(display_window, str)
            else (float(display_window[0]), float(display_window[1]))
        )
    return PreparedVolume(
        path=Path(source) if not isinstance(source, Volume) else (Path(volume.path) if volume.path else None),
        volume=volume,
        grid=grid,
        intensities=np.asarray(values, dtype=np.float32),
        display=display_intensities(grid.data, shown or window, pre, volume),
        model_input=cast_checked(sample, pre.dtype, "the model input (intensities after the transform)"),
        preprocessing=pre,
        window=window,
        display_window=shown,
    )


def model_intensities(
    data: np.ndarray, pre: VolumePreprocessing, window: Optional[Tuple[float, float]] = None
) -> np.ndarray:
    """Real units on the model grid -> what the model sees (no channel axis): exactly one intensity transform,
    the ``window`` resolved for this input when the transform is a window."""
    if pre.transform == "window":
        if window is None:
            raise OccludeError("window: the transform is 'window' but no window was given")
        return medical.apply_window(data, *window)
    if pre.transform == "intensity_range":
        if pre.intensity_range is None:
            raise OccludeError("intensity_range: the transform is 'intensity_range' but no range was given")
        return medical.normalize_range(data, *pre.intensity_range)
    if pre.transform == "zscore":
        return medical.zscore(data, pre.zscore_threshold)
    return np.asarray(data).astype(np.float32)


def with_grid_data(prepared: PreparedVolume, data: np.ndarray) -> PreparedVolume:
    """``prepared`` with other real-unit intensities on its model grid (e.g. a noisy copy): the same
    transform (and window), model input, layout and dtype; the display and the input as read are kept."""
    pre = prepared.preprocessing
    data = np.asarray(data, dtype=np.float32)
    if data.shape != prepared.grid.data.shape:
        raise OccludeError(f"grid data of shape {data.shape}: the model grid is {prepared.grid.data.shape}")
    values = model_intensities(data, pre, prepared.window)
    sample = values[None] if pre.channels_first else values[..., None]
    return replace(
        prepared,
        grid=replace(prepared.grid, data=data),
        intensities=np.asarray(values, dtype=np.float32),
        model_input=np.ascontiguousarray(sample, dtype=pre.dtype),
    )


def intensity_scale(prepared: PreparedVolume) -> Tuple[float, str]:
    """The real-unit span the model's intensity transform maps onto its input range, and what it is: the
    window width, the intensity range's width, else (z-score or none) the model grid's range of values.
    Noise of ``amplitude`` for medical inputs is ``amplitude`` times this (what 255 is for photos)."""
    pre = prepared.preprocessing
    if prepared.window is not None:
        return float(prepared.window[1]), "window width"
    if pre.transform == "intensity_range" and pre.intensity_range is not None:
        return float(pre.intensity_range[1] - pre.intensity_range[0]), "intensity range width"
    data = prepared.grid.data
    span = float(np.max(data) - np.min(data)) if data.size else 0.0
    return (span if span > 0 else 1.0), "range of the input's values on the model grid"


# --------------------------------------------------------------------------- reading any medical input


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


def read_volume(
    path: str | Path, series: bool = False, volume_index: int | None = None, series_uid: str | None = None
) -> Volume:
    """Read any supported medical input, deciding by suffix and content.

    ``.nii`` / ``.nii.gz`` -> `read_nifti`; ``.dcm`` or the ``DICM`` marker at byte 128 (DICOM files often
    have no suffix) -> `read_dicom`; a folder with ``series=True`` -> `read_dicom_series` (``series`` concerns
    folders: a file is read as a file); grey ``.png`` /
    ``.tif`` / ``.tiff`` -> `read_image16`. Anything else: one line saying what is accepted.
    """
    p = Path(path)
    if p.is_dir():
        if not series:
            raise OccludeError(f"path {p}: is a folder; pass series to read it as one DICOM series", params=("series",))
        return read_dicom_series(p, series_uid=series_uid)
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
        "grey PNG/TIFF, or a folder of DICOM slices with series)",
        params=("series",),
    )
