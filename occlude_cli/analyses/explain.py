"""From a model and an image to an explanation: the convenience layer a library user calls.

It wires the stages together (model -> preprocess -> baseline -> engine) and holds the parameters
that decide a run; it does no file writing and no plotting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from .._version import __version__
from ..core.baselines import default_blur_sigma, make_baseline, make_input_baseline, parse_baseline
from ..core.engine import Box, Occlusion, default_stride, occlusion_sensitivity, window_grid
from ..core.metrics import peak_index
from ..core.refine import check_refine, refine_forward_passes, refined_occlusion_sensitivity
from ..errors import OccludeError
from ..loaders.images import PreparedImage, Preprocessing, default_pixel_offset, prepare_image
from ..loaders.model import SCORE_NAMES, Head, OnnxClassifier, ScoreKind, resolve_target, saturation_remedy
from ..loaders.volumes import (
    VOLUME_LAYOUTS,
    PreparedVolume,
    VolumePreprocessing,
    is_medical_path,
    prepare_volume,
    volume_preprocessing_from_metadata,
)

SCHEMA_VERSION = 1
INCREMENTAL_MODES = ("auto", "on", "off")
# auto: below this many windows a plan's start-up (self-check and timing) costs more than it saves
INCREMENTAL_MIN_WINDOWS = 64
INCREMENTAL_MIN_SPEEDUP = 1.3  # auto: the cost model's estimate a plan must reach (it ignores per-call costs)
INCREMENTAL_MAX_CHAIN = 3  # cuts in a plan at most (see _incremental)
# A probability above this makes occlusion drops tiny and the map unreadable: suggest logits.
SATURATION = 0.99

# Default patch: this fraction of each side of the model input (16 px on a 224 input).
DEFAULT_PATCH_FRACTION = 1 / 14


class UniformSize(tuple):
    """A size given as one number N: (N, N) for images, and N on every axis of a volume (see expand_size)."""


def parse_hw(value, name: str = "size") -> Tuple[int, ...]:
    """'16' -> (16, 16); '16x24' -> (16, 24) as (height, width); '8x16x16' -> (8, 16, 16) as (depth, height,
    width) for volumes; ints and tuples pass through. A single number gives a :class:`UniformSize`."""
    if isinstance(value, UniformSize):
        return value
    if isinstance(value, (tuple, list)):
        parts = list(value)
    elif isinstance(value, (int, np.integer)):
        parts = [int(value)]
    else:
        parts = str(value).lower().replace(" ", "").split("x")
    try:
        numbers = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise OccludeError(f"{name} must be N or HxW in pixels (DxHxW for volumes), got {value!r}") from None
    if len(numbers) not in (1, 2, 3):
        raise OccludeError(f"{name} must be N or HxW in pixels (DxHxW for volumes), got {value!r}")
    if min(numbers) < 1:
        raise OccludeError(f"{name} must be at least 1 pixel, got {value!r}")
    if len(numbers) == 1:
        return UniformSize(numbers * 2)
    return tuple(numbers)


def expand_size(value: Tuple[int, ...], ndim: int, name: str) -> Tuple[int, ...]:
    """A parsed size for an input with ``ndim`` spatial axes: a single number applies to every axis."""
    if isinstance(value, UniformSize):
        return (int(value[0]),) * ndim
    if len(value) != ndim:
        want = "N or HxW" if ndim == 2 else "N or DxHxW"
        raise OccludeError(f"{name} {'x'.join(map(str, value))} does not fit a {ndim}-D input: use {want}")
    return tuple(int(v) for v in value)


# Default patch of volumes: a quarter of each side (8 on a 32^3 input; 343 windows at the default stride):
# 1/14 would give about 30,000 windows on a 3-D grid, too many for a first look.
DEFAULT_VOLUME_PATCH_FRACTION = 1 / 4


def default_patch(size: Tuple[int, ...]) -> Tuple[int, ...]:
    fraction = DEFAULT_PATCH_FRACTION if len(size) == 2 else DEFAULT_VOLUME_PATCH_FRACTION
    return tuple(max(1, int(round(side * fraction))) for side in size)


def resolve_preprocessing(
    model: OnnxClassifier,
    *,
    size=None,
    layout: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    scale: Optional[float] = None,
    bgr: Optional[bool] = None,
    resize: Optional[str] = None,
) -> Union[Preprocessing, VolumePreprocessing]:
    """Preprocessing from, in order of precedence: explicit arguments, the model's metadata, its input shape
    and defaults (pixels / 255, no mean or std, stretch resize). 3-D models (5-D input, layout NCDHW or
    NDHWC) get a :class:`VolumePreprocessing` from their metadata.

    Integer inputs store the pixels as integers by default (scale 1, std 1; mean 0 for uint8, 128 for int8:
    ``pixel - 128``, see :func:`~occlude_cli.loaders.images.default_pixel_offset`). With a quantization in the
    metadata (``quantization``: {"scale": s, "zero_point": z}), or one read from the graph (a DequantizeLinear
    on the input) when scale, mean or std is given, ``(pixel * scale - mean) / std`` is the real value the
    network computes with (float defaults) and the input gets ``round(value / s) + z``."""
    meta = dict(model.metadata_preprocessing or {})
    if len(model.input_shape) == 5 or str(layout or meta.get("layout") or "").upper() in VOLUME_LAYOUTS:
        if size is not None:  # --size DxHxW for 3-D models with dynamic sizes
            meta["size"] = list(expand_size(parse_hw(size, "--size"), 3, "--size"))
        return volume_preprocessing_from_metadata(meta, model.input_shape, model.dtype, layout)
    layout = (layout or meta.get("layout") or model.guess_layout() or "").upper()
    if layout not in ("NCHW", "NHWC"):
        raise OccludeError(
            f"cannot tell the layout of input shape {model.input_shape}: pass layout nchw or nhwc (--layout)"
        )
    channels = model.channels(layout)
    if channels not in (1, 3, None):
        raise OccludeError(f"input has {channels} channels: occlude supports 1 (grey) or 3 (colour)")
    height, width = model.spatial_size(layout)
    if size is not None:
        want = parse_hw(size, "--size")
        for got, fixed, axis in ((want[0], height, "height"), (want[1], width, "width")):
            if fixed is not None and got != fixed:
                raise OccludeError(f"--size {axis} {got} conflicts with the model's fixed input {axis} {fixed}")
        height, width = want
    if height is None or width is None:
        if "size" in meta:
            height, width = parse_hw(meta["size"], "metadata size")
        else:
            raise OccludeError(f"model input {model.input_shape} has dynamic height/width: pass size HxW (--size)")
    color = str(meta.get("color", "gray" if channels == 1 else "rgb")).lower()
    if bgr:
        color = "bgr"
    if channels == 1:
        color = "gray"
    elif color == "gray":
        raise OccludeError("model metadata says grey but the input has 3 channels")
    given: dict = {
        "scale": scale if scale is not None else meta.get("scale"),
        "mean": mean if mean is not None else (_as_list(meta["mean"]) if "mean" in meta else None),
        "std": std if std is not None else (_as_list(meta["std"]) if "std" in meta else None),
    }
    quantization = None
    defaults: dict = {"scale": 1 / 255, "mean": [0.0], "std": [1.0]}
    if np.dtype(model.dtype).kind in "iu":
        quantization = _declared_quantization(meta)
        if quantization is None and any(v is not None for v in given.values()):
            # the graph dequantizes the input right away: scale, mean and std describe that real value
            quantization = getattr(model, "input_quantization", None)
        if quantization is None:  # the input stores the pixels as integers (int8: pixel - 128)
            defaults = {"scale": 1.0, "mean": [default_pixel_offset(model.dtype)], "std": [1.0]}
    picked = {k: (given[k] if given[k] is not None else defaults[k]) for k in given}
    return Preprocessing(
        size=(int(height), int(width)),
        layout=layout,
        color=color,
        scale=float(picked["scale"]),
        mean=tuple(float(v) for v in picked["mean"]),
        std=tuple(float(v) for v in picked["std"]),
        resize=str(resize or meta.get("resize", "stretch")),
        dtype=model.dtype,
        quantization=quantization,
    )


def _declared_quantization(meta: dict) -> Optional[Tuple[float, float]]:
    """(scale, zero_point) of an integer input from the metadata's ``quantization``
    ({"scale": s, "zero_point": z}), or None."""
    declared = meta.get("quantization")
    if declared is None:
        return None
    try:
        return float(declared["scale"]), float(declared.get("zero_point", 0))
    except (TypeError, KeyError, ValueError, AttributeError):
        raise OccludeError(
            'model metadata quantization must be {"scale": S, "zero_point": Z}, got ' + repr(declared)[:200]
        ) from None


def photo_preprocessing(model: OnnxClassifier, preprocessing: Optional[Preprocessing] = None) -> Preprocessing:
    """``preprocessing``, else the model's own (:func:`resolve_preprocessing`), for the analyses of 2-D photo
    models; a 3-D model (its preprocessing a VolumePreprocessing) is refused."""
    resolved = preprocessing or resolve_preprocessing(model)
    if not isinstance(resolved, Preprocessing):
        raise OccludeError("this analysis is for 2-D image models: this model takes 3-D volumes")
    return resolved


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class Explanation:
    """One image explained: the maps, the scores behind them and everything needed to reproduce them."""

    model: dict
    image: PreparedImage
    targets: List[int]  # targets[0] is the main target; the rest are top_k extras
    labels: Optional[List[str]]
    score_kind: str  # the resolved head kind: softmax, probabilities, sigmoid, independent, logit, raw
    occlusion: Occlusion
    maps: np.ndarray  # (K, H, W) signed maps for ``targets``
    params: dict
    timing: dict = field(default_factory=dict)
    head: Optional[Head] = None
    warnings: List[str] = field(default_factory=list)  # things the user must know (saturation, all-zero map)
    # how the run computed its maps, the same for every image of a run (an approximate incremental plan, a plan
    # that failed its self-check): key -> one line; a command shows each key once per run
    notes: Dict[str, str] = field(default_factory=dict)
    score: Optional[Callable[[np.ndarray], np.ndarray]] = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """Pickled without the score function (a closure over the model session): an Explanation travels
        between processes (Ray actors) as data; validate.py rebuilds the score from the head."""
        state = dict(self.__dict__)
        state["score"] = None
        return state

    @property
    def target(self) -> int:
        return self.targets[0]

    @property
    def map(self) -> np.ndarray:
        """(H, W) signed map of the main target at model-input resolution (NaN where not computed)."""
        return self.maps[0]

    def label(self, index: int) -> Optional[str]:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else None

    def class_maps(self) -> np.ndarray:
        """(classes, H, W) float32 maps of every class, from the same forward passes."""
        return self.occlusion.attributions(None, dtype=np.float32)

    def header(self) -> dict:
        """The keys every JSON document about this explanation starts with: schema, model, image, target, score."""
        width, height = self.image.original_size
        score = {"kind": self.score_kind, "original": float(self.occlusion.original_scores[self.target])}
        if self.head is not None:
            score.update({"requested": self.head.requested, "rule": self.head.rule})
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model,
            "image": {
                "path": str(self.image.path) if self.image.path is not None else None,
                "width": int(width),
                "height": int(height),
                "crop_box": [float(v) for v in self.image.crop_box],
            },
            "target": {"index": self.target, "label": self.label(self.target)},
            "score": score,
        }

    def map_on_original(self, values: Optional[np.ndarray] = None) -> np.ndarray:
        """The map (or ``values`` at model-input resolution) resampled onto the original image's pixels,
        (height, width) of the original, NaN outside the part the model sees."""
        from ..loaders.images import map_on_original

        return map_on_original(self.map if values is None else values, self.image.original_size, self.image.crop_box)

    def plot(self, ax=None, *, alpha: Optional[float] = None, cmap: Optional[str] = None):
        """Show the overlay in a matplotlib axes (a new figure when ``ax`` is None); returns the axes."""
        import io as _io

        import matplotlib.pyplot as plt
        from PIL import Image as _Image

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(_Image.open(_io.BytesIO(self._repr_png_())))
        ax.set_axis_off()
        return ax

    def _repr_png_(self) -> bytes:
        """The overlay PNG, so an Explanation displays itself in Jupyter."""
        from ..pictures.render import overlay_png

        label = self.label(self.target)
        title = f"{label or 'class ' + str(self.target)}: {self.score_kind} {self.occlusion.original_scores[self.target]:.4f}"
        return overlay_png(self.image.original, self.map, self.image.crop_box, title)


@dataclass
class VolumeExplanation(Explanation):
    """An explanation of a medical input (a DICOM slice, a DICOM series or a NIfTI volume): ``image`` is a
    :class:`~occlude_cli.loaders.volumes.PreparedVolume`; maps are (K, D, H, W) or (K, H, W) at the model grid."""

    @property
    def prepared(self) -> PreparedVolume:
        """``image``, typed as what it holds here (the field is declared on Explanation as a PreparedImage)."""
        return cast(PreparedVolume, self.image)

    def header(self) -> dict:
        document = super().header() if self.prepared.ndim == 2 else self._volume_header()
        document["input"] = self.prepared.describe()
        return document

    def _volume_header(self) -> dict:
        score = {"kind": self.score_kind, "original": float(self.occlusion.original_scores[self.target])}
        if self.head is not None:
            score.update({"requested": self.head.requested, "rule": self.head.rule})
        depth, height, width = self.prepared.volume.data.shape
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model,
            "image": {
                "path": str(self.prepared.path) if self.prepared.path is not None else None,
                "width": int(width),
                "height": int(height),
                "depth": int(depth),
            },
            "target": {"index": self.target, "label": self.label(self.target)},
            "score": score,
        }

    def peak(self) -> dict:
        """The map's peak: the voxel of its plateau of maximal values nearest the plateau's centroid
        (:func:`occlude_cli.core.metrics.peak_index`; occlusion maps are piecewise constant, so the argmax
        corner would sit on the plateau's edge), in model-grid voxels and in world
        coordinates (RAS+ mm), and the nearest voxel of the input's own grid."""
        values = np.where(np.isfinite(self.map), self.map, -np.inf)
        top = values.max()
        plateau = np.argwhere(values == top)
        voxel = list(peak_index(self.map))  # the plateau voxel nearest its centroid: the one peak rule
        world = self.prepared.world(voxel)
        inverse = np.linalg.inv(np.asarray(self.prepared.volume.affine, dtype=np.float64))
        source = (inverse @ np.array(world + [1.0]))[: self.prepared.ndim]
        shape = self.prepared.volume.data.shape
        return {
            "voxel": voxel,
            "value": float(top) if np.isfinite(top) else None,
            "plateau_voxels": int(len(plateau)),
            "world_mm": [round(c, 4) for c in world],
            "input_voxel": [int(np.clip(np.rint(c), 0, n - 1)) for c, n in zip(source, shape)],
        }

    def map_on_original(self, values: Optional[np.ndarray] = None) -> np.ndarray:
        """The map (or ``values`` on the model grid) on the input's own voxel grid (linear interpolation)."""
        from ..loaders.medical import resample_map_to_input

        return resample_map_to_input(self.map if values is None else values, self.prepared.volume)

    def _repr_png_(self) -> bytes:
        if self.prepared.ndim == 2:
            return super()._repr_png_()
        from ..pictures.montage import montage_png

        grid = self.prepared.grid
        title = (
            f"{self.label(self.target) or 'class ' + str(self.target)}: {self.score_kind} "
            f"{self.occlusion.original_scores[self.target]:.4f}"
        )
        return montage_png(self.prepared.display, self.map, grid.spacing, grid.affine, title, "")


# numeric settings checked for their type before their range: (name, " (--flag)" or "", None allowed)
_NUMBERS = (
    ("top_k", " (--top-k)", False),
    ("batch_size", "", True),
    ("blur_sigma", "", True),
    ("seed", "", False),
    ("refine_step", " (--refine-step)", False),
    ("refine_budget", " (--refine-budget)", False),
)


@dataclass
class ExplainOptions:
    """The parameters of a run, with the library's defaults. Checked once, by :meth:`checked`, at the API
    boundary; error messages name these parameters."""

    patch: Optional[Tuple[int, ...]] = None  # (h, w) in model-input pixels; default 1/14 of each side
    stride: Optional[Tuple[int, ...]] = None  # default half the patch
    baseline: str = "zero"
    target: Optional[Union[int, str]] = None  # index or label name; default the top-1 prediction
    top_k: int = 1
    score: Union[ScoreKind, str] = ScoreKind.auto
    batch_size: Optional[int] = None
    seed: int = 0
    blur_sigma: Optional[float] = None
    region: Optional[Tuple[float, float, float, float]] = None  # x0, y0, x1, y1 in original image pixels
    refine: bool = False  # coarse-to-fine: see core.refine.refined_occlusion_sensitivity
    refine_step: int = 3
    refine_budget: float = 0.25
    # Medical inputs (DICOM, NIfTI, DICOM series): at most one intensity transform, overriding the model's
    window: Optional[str] = None  # preset (lung, mediastinum, bone, brain), "W,L" or "file"
    intensity_range: Optional[Tuple[float, float]] = None  # clip to [lo, hi], scale to 0..1
    zscore: bool = False
    zscore_threshold: Optional[float] = None
    series: bool = False  # a folder is one DICOM series
    volume_index: Optional[int] = None  # which volume of a 4-D NIfTI
    incremental: str = "auto"  # exact incremental inference for CNNs: auto | on | off (see README, Speed)

    def checked(self) -> ExplainOptions:
        """A copy with every field parsed and range-checked (raises OccludeError naming the parameter)."""
        if self.refine_step is None or self.refine_budget is None:  # None: the default, as for other settings
            defaults = ExplainOptions()
            return replace(
                self,
                refine_step=defaults.refine_step if self.refine_step is None else self.refine_step,
                refine_budget=defaults.refine_budget if self.refine_budget is None else self.refine_budget,
            ).checked()
        for name, flag, optional in _NUMBERS:
            value = getattr(self, name)
            if not (optional and value is None) and (
                isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
            ):
                raise OccludeError(f"{name}{flag} must be a number, got {value!r}")
        patch = parse_hw(self.patch, "patch") if self.patch is not None else None
        stride = parse_hw(self.stride, "stride") if self.stride is not None else None
        if int(self.top_k) != self.top_k or self.top_k < 1:
            raise OccludeError(f"top_k (--top-k) must be at least 1, got {self.top_k}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size < 1):
            raise OccludeError(f"batch_size must be at least 1, got {self.batch_size}")
        try:
            score = ScoreKind(self.score.value if isinstance(self.score, ScoreKind) else str(self.score))
        except ValueError:
            raise OccludeError(
                f"score must be one of {', '.join(k.value for k in ScoreKind)}, got {self.score!r}"
            ) from None
        if self.blur_sigma is not None and not (np.isfinite(self.blur_sigma) and self.blur_sigma > 0):
            raise OccludeError(f"blur_sigma must be a positive number of pixels, got {self.blur_sigma}")
        if int(self.seed) != self.seed or not 0 <= self.seed < 2**63:
            raise OccludeError(f"seed must be a whole number from 0 to 2^63-1, got {self.seed}")
        if self.refine:
            check_refine(self.refine_step, self.refine_budget)
        region = None
        if self.region is not None:
            try:
                region = tuple(float(v) for v in self.region)
            except (TypeError, ValueError):
                raise OccludeError(f"region must be x0,y0,x1,y1, got {self.region!r}") from None
            if len(region) != 4 or not all(np.isfinite(region)):
                raise OccludeError(f"region must be four finite numbers x0,y0,x1,y1, got {self.region!r}")
        medical = self._medical_checked()
        if str(getattr(self.incremental, "value", self.incremental)) not in INCREMENTAL_MODES:
            raise OccludeError(f"incremental must be one of {', '.join(INCREMENTAL_MODES)}, got {self.incremental!r}")
        fields = {
            **self.__dict__,
            "patch": patch,
            "stride": stride,
            "score": score,
            "incremental": str(getattr(self.incremental, "value", self.incremental)),
            "baseline": parse_baseline(self.baseline),
            "region": region,
            **medical,
        }
        return ExplainOptions(**fields)

    def _medical_checked(self) -> dict:
        from ..loaders.medical import parse_intensity_range, parse_window

        chosen = [
            n
            for n, on in (
                ("window", self.window is not None),
                ("intensity_range", self.intensity_range is not None),
                ("zscore", bool(self.zscore)),
            )
            if on
        ]
        if len(chosen) > 1:
            raise OccludeError("choose one intensity transform: window, intensity_range or zscore")
        if self.window is not None and str(self.window).strip().lower() != "file":
            parse_window(str(self.window))  # a bad value fails here, before any input is read
        rng = parse_intensity_range(self.intensity_range) if self.intensity_range is not None else None
        if self.zscore_threshold is not None:
            if not self.zscore:
                raise OccludeError("zscore_threshold (--zscore-threshold) needs zscore (--zscore)")
            if not np.isfinite(float(self.zscore_threshold)):
                raise OccludeError(f"zscore_threshold must be finite, got {self.zscore_threshold}")
        if self.volume_index is not None and (int(self.volume_index) != self.volume_index or self.volume_index < 0):
            raise OccludeError(f"volume_index must be a whole number >= 0, got {self.volume_index}")
        return {"intensity_range": rng, "zscore": bool(self.zscore), "series": bool(self.series)}

    @property
    def medical_transform(self) -> dict:
        """The intensity transform asked for, as VolumePreprocessing.with_transform arguments."""
        return {
            "window": self.window,
            "intensity_range": self.intensity_range,
            "zscore": self.zscore,
            "zscore_threshold": self.zscore_threshold,
        }


def _score_name(score) -> str:
    return score.value if isinstance(score, ScoreKind) else str(score)


def explain(
    model: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Union[Preprocessing, VolumePreprocessing]] = None,
    labels: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    executor=None,
    **overrides,
) -> Explanation:
    """Explain one image: load (if paths), preprocess, occlude, and return the maps.

    ``options`` or keyword overrides (``patch=32``, ``baseline="blur"``, ...) set the run; see ExplainOptions.
    ``executor``: an object with ``score_windows(inputs, baseline, windows, None, *, batch_size, spatial_axes,
    progress, score_kind)`` (a RayExecutor) that scores the windows elsewhere, in parallel chunks; the engine
    aggregates them as usual, so the map is the local one.
    """
    started = time.perf_counter()
    options, classifier, preprocessing, labels, patch, stride, prepared, region = _setup(
        model, image, options, preprocessing, labels, overrides
    )
    model = classifier
    baseline_kind = options.baseline
    blur_sigma = options.blur_sigma if options.blur_sigma is not None else default_blur_sigma(patch)
    if isinstance(prepared, PreparedVolume):
        baseline = volume_baseline(baseline_kind, prepared, patch, seed=options.seed, blur_sigma=blur_sigma)
    elif baseline_kind == "inpaint":
        from ..loaders.inpaint import InpaintBaseline

        baseline = InpaintBaseline(prepared.model_input, preprocessing.spatial_axes)
    else:
        assert isinstance(preprocessing, Preprocessing)  # a PreparedImage comes from a Preprocessing
        baseline = make_baseline(
            baseline_kind, prepared.pixels, preprocessing, seed=options.seed, blur_sigma=blur_sigma
        )
    run = _occlude(
        model,
        prepared.model_input,
        options,
        patch,
        stride,
        baseline,
        preprocessing.spatial_axes,
        region,
        labels,
        progress,
        preprocessing,
        executor,
    )
    finished = time.perf_counter()
    cls = VolumeExplanation if isinstance(prepared, PreparedVolume) else Explanation
    return cls(
        model=model.describe(),
        image=cast(PreparedImage, prepared),  # a PreparedVolume for a VolumeExplanation (see its ``prepared``)
        targets=run["targets"],
        labels=labels,
        score_kind=run["head"].kind,
        occlusion=run["occlusion"],
        maps=run["maps"],
        params={
            "patch": list(patch),
            "stride": list(stride),
            "baseline": baseline_kind,
            "blur_sigma": blur_sigma if baseline_kind == "blur" else None,
            "seed": options.seed,
            "batch_size": int(run["batch_size"]),
            "score": _score_name(options.score),
            "head": run["head"].describe(),
            "region": list(region) if region is not None else None,
            "refine": {"step": options.refine_step, "budget": options.refine_budget} if options.refine else None,
            "incremental": run["incremental"],
            **(
                {
                    "parallel_scoring": {
                        "backend": type(executor).__name__,
                        "workers": getattr(executor, "workers", None),
                    }
                }
                if executor is not None and run["incremental"].get("used") is False
                else {}
            ),
            "preprocessing": preprocessing.describe(),
            "occlude_version": __version__,
        },
        timing={
            "prepare_s": run["prepared_at"] - started,
            "occlusion_s": run["occluded_at"] - run["prepared_at"],
            "total_s": finished - started,
            "windows_per_s": run["occlusion"].forward_passes / max(run["occluded_at"] - run["prepared_at"], 1e-9),
        },
        head=run["head"],
        warnings=run["warnings"],
        notes=run["notes"],
        score=run["score"],
    )


def volume_baseline(kind: str, prepared: PreparedVolume, patch: Sequence[int], *, seed: int = 0, blur_sigma=None):
    """The baseline of a medical input, built in model-input space (see core.baselines.make_input_baseline);
    ``inpaint`` is a per-window callable."""
    axes = prepared.preprocessing.spatial_axes
    if kind == "inpaint":
        from ..loaders.inpaint import InpaintBaseline

        return InpaintBaseline(prepared.model_input, axes)
    sigma = blur_sigma if blur_sigma is not None else default_blur_sigma(patch)
    return make_input_baseline(kind, prepared.model_input, axes, seed=seed, blur_sigma=sigma)


def input_baseline(prepared, kind: str, *, seed: int = 0, blur_sigma: Optional[float] = None, patch=(8, 8)):
    """The baseline ``kind`` of any prepared input as one model input: built from the 0..255 pixels for
    photos (core.baselines.make_baseline), in model-input space for medical inputs (make_input_baseline).
    ``inpaint`` is per window and is refused here (one line), as for photos. ``blur_sigma`` defaults to the
    patch's (half the patch side)."""
    sigma = blur_sigma if blur_sigma is not None else default_blur_sigma(tuple(patch))
    if isinstance(prepared, PreparedVolume):
        if parse_baseline(kind) == "inpaint":
            raise OccludeError("baseline inpaint is computed per window: it cannot be a whole-input baseline here")
        return volume_baseline(kind, prepared, patch, seed=seed, blur_sigma=sigma)
    return make_baseline(kind, prepared.pixels, prepared.preprocessing, seed=seed, blur_sigma=sigma)


def _occlude(
    model: OnnxClassifier,
    sample: np.ndarray,
    options: ExplainOptions,
    patch,
    stride,
    baseline,
    spatial_axes,
    region,
    labels,
    progress,
    preprocessing=None,
    executor=None,
) -> dict:
    """The part of explain() that every input kind shares: one unoccluded pass (head, target, checks), the
    engine (exact or refined) and the warnings."""
    batch_size = options.batch_size or model.default_batch_size(sample.nbytes)
    raw = model.run(sample[None])
    num_classes = raw.shape[1]
    if labels is not None and len(labels) != num_classes:
        raise OccludeError(f"{len(labels)} labels given but the model has {num_classes} classes")
    if not np.all(np.isfinite(raw)):
        raise OccludeError(
            "the model's output for the unoccluded image is not finite (NaN or inf): "
            "nothing can be measured against it; check the preprocessing (mean, std, scale)"
        )
    head = model.head(options.score, raw)
    score = model.scorer(head)
    original = head.transform(raw)[0]
    ranking = [int(i) for i in np.argsort(-original, kind="stable")]
    main = resolve_target(options.target, labels, num_classes) if options.target is not None else ranking[0]
    targets = [main] + [c for c in ranking if c != main][: options.top_k - 1]
    if isinstance(baseline, np.ndarray) and preprocessing is not None:
        windows = window_grid(tuple(sample.shape[a] for a in spatial_axes), patch, stride, region)
        window_scorer, incremental, notes = _incremental(
            model, options, head, sample, baseline, patch, len(windows), preprocessing, main
        )
    else:
        window_scorer, incremental, notes = (
            None,
            {"mode": options.incremental, "used": False, "exact": True, "reason": "a per-window baseline (inpaint)"},
            {},
        )
        if options.incremental == "on":
            raise OccludeError("incremental inference is not available here: a per-window baseline (inpaint)")
    if executor is not None and window_scorer is None:

        def window_scorer(inputs, base, chunk, score, *, batch_size, spatial_axes, progress=None):
            return executor.score_windows(
                inputs,
                base,
                chunk,
                None,
                batch_size=batch_size,
                spatial_axes=spatial_axes,
                progress=progress,
                score_kind=head,
            )

    prepared_at = time.perf_counter()
    common = dict(
        patch=patch,
        stride=stride,
        baseline=baseline,
        spatial_axes=spatial_axes,
        batch_size=batch_size,
        region=region,
        progress=progress,
        original_scores=original,
        scorer=window_scorer,
    )
    if options.refine:
        occlusion = refined_occlusion_sensitivity(
            sample, score, target=main, coarse_step=options.refine_step, budget=options.refine_budget, **common
        )
    else:
        occlusion = occlusion_sensitivity(sample, score, **common)
    occluded_at = time.perf_counter()
    maps = occlusion.attributions(targets)
    return {
        "occlusion": occlusion,
        "head": head,
        "score": score,
        "targets": targets,
        "maps": maps,
        "batch_size": batch_size,
        "prepared_at": prepared_at,
        "occluded_at": occluded_at,
        "incremental": incremental,
        "warnings": _warnings(head, original[main], maps[0], occlusion, main),
        "notes": notes,
    }


def incremental_decision(model: OnnxClassifier, options: ExplainOptions, windows: int, ndim: int = 2) -> dict:
    """What ``incremental`` decides from the model's graph and the run's geometry alone, before any image:
    ``{"mode", "possible", "exact", "reason"}``. ``possible``: False when the mode, the input or the graph rules
    incremental inference out (``reason`` says why); True means a plan is built at the first image, checked
    against full passes and used when the cost model expects at least 1.3x (``auto``). ``exact``: False only
    for ``on`` with a graph whose arithmetic a plan cannot reproduce bit for bit (float16, quantised
    operators, rounding steps: ``reason``): then the maps are approximate."""
    from ..inference.incremental import NOT_BIT_FOR_BIT

    mode = options.incremental
    inexact = getattr(model, "inexact_arithmetic", None)
    decision = {"mode": mode, "possible": False, "exact": True, "reason": None}
    if mode == "off":
        decision["reason"] = "off"
    elif ndim != 2:
        decision["reason"] = "incremental inference covers 2-D image models"
    elif mode == "auto" and inexact is not None:
        decision["reason"] = f"{inexact}: {NOT_BIT_FOR_BIT}, so auto runs full passes (exact)"
    elif mode == "auto" and windows < INCREMENTAL_MIN_WINDOWS:
        decision["reason"] = f"too few windows ({windows} < {INCREMENTAL_MIN_WINDOWS}) to pay for the start-up"
    else:
        decision["possible"] = True
        if inexact is not None:
            decision["exact"] = False
            decision["reason"] = f"approximate: {inexact}: {NOT_BIT_FOR_BIT}"
    return decision


def _incremental(
    model: OnnxClassifier,
    options: ExplainOptions,
    head: Head,
    sample: np.ndarray,
    baseline: np.ndarray,
    patch,
    windows: int,
    preprocessing: Preprocessing,
    target: int,
):
    """The engine's window scorer for incremental inference, or None; the JSON record; and the run's notes.

    A plan is built once per model, input shape and patch (kept on the model, so a folder run pays the
    start-up once) and reused: it only changes how windows are scored, never the result (checked at start-up
    against full passes, in the map's units: the explained score's drop). ``auto`` uses it only for graphs
    whose arithmetic a plan reproduces to float noise (decided from the graph, before any image), when the
    self-check passes and the cost model's estimate reaches 1.3x (deterministic: the same inputs always take
    the same path, so outputs stay byte-identical across runs), never by a clock. ``on`` uses it for any graph
    it can split: on a graph that rounds coarsely (float16, quantised) the map is approximate, and the error
    is measured on every image (``measured_error``) and noted."""
    from ..inference.incremental import IncrementalUnavailable, build_plan

    image = len(preprocessing.size) == 2 and len(sample.shape) == 3
    decision = incremental_decision(model, options, windows, 2 if image else 3)
    mode = options.incremental
    record: dict = {"mode": mode, "used": False, "exact": True, "reason": decision["reason"]}
    notes: Dict[str, str] = {}
    if not decision["possible"]:
        if mode == "on":
            raise OccludeError(f"incremental inference is not available here: {record['reason']}")
        return None, record, notes

    def score(raw: np.ndarray) -> np.ndarray:
        return head.transform(np.asarray(raw).reshape(len(raw), -1))

    key = (tuple(sample.shape), preprocessing.layout, tuple(patch), mode)
    cache = model.__dict__.setdefault("_incremental_plans", {})
    if key not in cache:
        started = time.perf_counter()
        plan, reason, surprising = None, None, False
        try:
            plan = build_plan(
                model.path,
                [1, *sample.shape],
                layout=preprocessing.layout,
                baseline=baseline,
                sample=sample,
                window=tuple(patch),
                providers=model.providers,
                threads=model.threads,
                input_name=model.input.name,
                output_name=model.output.name,
                measure=False,
                max_plans=1,
                full_session=model.session,  # the reference for the self-check: no second session of the model
                model_sha256=model.sha256,  # the on-disk plan cache (OCCLUDE_CACHE_DIR; off when empty)
                # chains of at most 3 cuts: on EfficientNet-Lite0 the cost model's 5-cut chain scored the 729
                # windows in 2.74 s, the best 3-cut chain in 2.38 s (each extra segment is one more session call)
                max_chain=INCREMENTAL_MAX_CHAIN,
                score=score,
                target=target,
                allow_approximate=mode == "on",
            )
        except IncrementalUnavailable as exc:
            reason, surprising = str(exc), not exc.structural  # a failed self-check is worth a note
        except Exception as exc:  # noqa: BLE001 -- onnx, onnxruntime or an unforeseen graph: fall back, say why
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason, surprising = f"building the plan failed: {type(exc).__name__}: {text}".rstrip(": "), True
        estimate = float(plan.describe().get("estimated_speedup") or 0.0) if plan is not None else 0.0
        if plan is not None and mode == "auto" and estimate < INCREMENTAL_MIN_SPEEDUP:
            plan, reason = None, f"not worth it here (estimated speed-up {estimate:.2f} < {INCREMENTAL_MIN_SPEEDUP})"
        # an approximate plan's check on the first image, kept so that the first image is not measured twice
        checked = None
        if plan is not None and not plan.exact:
            checked = (sample.copy(), baseline.copy(), target, plan.check_error)
        cache[key] = (plan, reason, surprising, checked, time.perf_counter() - started)
    plan, reason, surprising, checked, build_s = cache[key]
    model.__dict__["_incremental_build_s"] = build_s
    if plan is None:
        if mode == "on":
            raise OccludeError(f"incremental inference is not available for this model: {reason}")
        record["reason"] = reason
        if surprising:
            notes["incremental"] = f"incremental inference not used, full passes instead: {reason}"
        return None, record, notes
    described = plan.describe()
    record.update(
        {
            "used": True,
            "cuts": described.get("cuts"),
            "segment_strides": described.get("segment_strides"),
            "estimated_speedup": round(float(described.get("estimated_speedup") or 0.0), 3),
        }
    )
    if not plan.exact:
        same = (
            checked is not None
            and checked[2] == target
            and np.array_equal(checked[0], sample)
            and np.array_equal(checked[1], baseline)
        )
        error = float(checked[3]) if same else plan.measure_error(sample, baseline, score=score, target=target)
        record.update({"exact": False, "measured_error": float(f"{error:.4g}"), "checked_windows": plan.check_windows})
        first = float(checked[3]) if checked is not None else error
        notes["incremental"] = (
            f"the maps are approximate: the graph has {plan.inexact}, which incremental inference (required: "
            f"incremental on) cannot reproduce bit for bit; on {plan.check_windows} checked windows of the first "
            f"image the explained score's drop differs from full passes by up to {first:.2%} of the largest drop "
            "(a sample, not a bound: other windows may be further off; each image's own sample: "
            "params.incremental.measured_error in its record); incremental auto or off gives the exact map"
        )

    def scorer(inputs, base, chunk, score, *, batch_size, spatial_axes, progress=None):
        total = len(chunk)
        out = None
        for start, raw in plan.score_batches(inputs, base, chunk, batch_size=batch_size):
            scores = head.transform(np.asarray(raw).reshape(len(raw), -1))
            if out is None:
                out = np.empty((total, scores.shape[1]), dtype=np.float64)
            out[start : start + len(scores)] = scores
            if progress is not None:
                progress(min(start + batch_size, total), total)
        return out

    return scorer, record, notes


def _warnings(head: Head, original: float, values: np.ndarray, occlusion: Occlusion, target: int) -> List[str]:
    """What the user must be told about a map: never an all-zero or unreadable map in silence."""
    out: List[str] = []
    finite = values[np.isfinite(values)]
    bad_windows = int(np.count_nonzero(~np.isfinite(occlusion.window_scores[:, target])))
    if bad_windows:
        out.append(
            f"{bad_windows} occluded window(s) gave a non-finite score (NaN/inf): the map is NaN where "
            "they cover it (windows marked finite=false in the JSON)"
        )
    what = SCORE_NAMES.get(head.kind, head.kind)
    if finite.size and np.all(finite == 0):
        if head.is_probability and not SATURATION > original > 1.0 - SATURATION:  # pinned at 1 (or 0)
            out.append(
                f"the map is identically zero: the target's {what} is saturated at {original:.6g}, so every occluded "
                f"window gives the same value to float precision; {saturation_remedy(head.kind)}"
            )
        else:
            out.append(
                f"the map is identically zero: occluding any window leaves the target's {what} unchanged, so the "
                "model does not respond to these windows (try a larger patch or another baseline)"
            )
    elif head.is_probability and original >= SATURATION:
        out.append(
            f"the target's {what} is saturated ({original:.4f} >= {SATURATION}): occlusion barely moves it and the "
            f"map may look blank; {saturation_remedy(head.kind)}"
        )
    return out


def _setup(
    model, image, options, preprocessing, labels, overrides
) -> Tuple[
    ExplainOptions,
    OnnxClassifier,
    Union[Preprocessing, VolumePreprocessing],
    Optional[List[str]],
    Tuple[int, ...],
    Tuple[int, ...],
    Union[PreparedImage, PreparedVolume],
    Optional[Box],
]:
    """Shared start of explain() and estimate_run(): options, model, preprocessing, image and geometry."""
    options = options or ExplainOptions()
    if overrides:
        unknown = set(overrides) - set(ExplainOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        options = ExplainOptions(**{**options.__dict__, **overrides})
    options = options.checked()
    if not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model)
    preprocessing = preprocessing or resolve_preprocessing(model)
    labels = list(labels) if labels is not None else model.labels
    medical_input = is_medical_input(image, options)
    if medical_input or isinstance(preprocessing, VolumePreprocessing):
        if not medical_input:
            raise OccludeError(
                f"{model.path.name if hasattr(model, 'path') else 'the model'} is a 3-D model: give it "
                "a volume (NIfTI .nii/.nii.gz, a DICOM file, or a DICOM series folder with series)"
            )
        preprocessing = medical_preprocessing(model, preprocessing, options)
        if options.region is not None:
            raise OccludeError("region is not supported for medical inputs yet (it is in 2-D photo pixels)")
        patch, stride = check_run(options, preprocessing, model, labels)
        prepared: Union[PreparedImage, PreparedVolume] = prepare_volume(
            image, preprocessing, series=options.series, volume_index=options.volume_index
        )
        return options, model, preprocessing, labels, patch, stride, prepared, None
    patch, stride = check_run(options, preprocessing, model, labels)
    prepared = prepare_image(image, preprocessing)
    region = region_to_box(options.region, prepared) if options.region is not None else None
    return options, model, preprocessing, labels, patch, stride, prepared, region


def is_medical_input(image, options: Optional[ExplainOptions] = None) -> bool:
    """Is ``image`` a medical input (a Volume, a DICOM/NIfTI path, or a folder with ``series``)?"""
    from ..loaders.medical import Volume

    if isinstance(image, Volume):
        return True
    if isinstance(image, (str, Path)):
        return is_medical_path(image, series=bool(options and options.series))
    return False


def medical_preprocessing(model: OnnxClassifier, preprocessing, options: ExplainOptions) -> VolumePreprocessing:
    """The VolumePreprocessing for a medical input: a 3-D model's own, or for a 2-D model (a DICOM slice) one
    built from its metadata; then the intensity transform the options ask for replaces the model's."""
    if not isinstance(preprocessing, VolumePreprocessing):
        meta = dict(model.metadata_preprocessing or {})
        layout = getattr(preprocessing, "layout", None)
        if getattr(preprocessing, "channels", 1) != 1:
            raise OccludeError("medical inputs are grey: this model takes 3 channels")
        base = volume_preprocessing_from_metadata(meta, model.input_shape, model.dtype, layout)
        if tuple(base.size) != tuple(preprocessing.size):
            base = VolumePreprocessing(**{**base.__dict__, "size": tuple(preprocessing.size)})
        preprocessing = base
    return preprocessing.with_transform(**options.medical_transform)


# Baselines compared by baseline_check() when none are named.
CHECK_BASELINES = ("zero", "mean", "blur", "tissue", "p10", "noise")


def baseline_check(
    model: Union[str, Path, OnnxClassifier],
    image,
    baselines: Optional[Sequence[str]] = None,
    options: Optional[ExplainOptions] = None,
    *,
    copies: int = 16,
    preprocessing=None,
    labels: Optional[Sequence[str]] = None,
    **overrides,
) -> dict:
    """How far each baseline moves the model off the input: the same ``copies`` seeded random windows of the
    occlusion grid (patch and stride as for the map) are occluded with each baseline, and the change of the
    model's top-1 confidence (the score kind of the run) is measured. A baseline that keeps the input in
    distribution changes the score only where evidence is removed: a small mean change and few top-1 flips;
    a large mean change on random windows says the patch itself is what the model reacts to.

    Returns a JSON-ready dict: the target, its original score, the windows, and per baseline the mean change
    ``original - occluded`` (positive: the confidence drops), the mean |change|, the largest |change| and the
    fraction of copies whose top-1 class differs from the original's.
    """
    options, model, preprocessing, labels, patch, stride, prepared, region = _setup(
        model, image, options, preprocessing, labels, overrides
    )
    if int(copies) != copies or copies < 1:
        raise OccludeError(f"copies must be at least 1, got {copies}")
    sample = prepared.model_input
    raw = model.run(sample[None])
    head = model.head(options.score, raw)
    score = model.scorer(head)
    original = head.transform(raw)[0]
    top = int(np.argmax(original))
    grid = window_grid(preprocessing.size, patch, stride, region)
    rng = np.random.default_rng(options.seed)
    chosen = grid[np.sort(rng.choice(len(grid), size=min(int(copies), len(grid)), replace=False))]
    wanted = list(baselines) if baselines else [b for b in CHECK_BASELINES] + (["inpaint"] if len(patch) == 2 else [])
    blur_sigma = options.blur_sigma if options.blur_sigma is not None else default_blur_sigma(patch)
    batch_size = options.batch_size or model.default_batch_size(sample.nbytes)
    results = []
    from ..core.engine import score_windows

    for spec in wanted:
        kind = parse_baseline(spec)
        if isinstance(prepared, PreparedVolume):
            fill = volume_baseline(kind, prepared, patch, seed=options.seed, blur_sigma=blur_sigma)
        elif kind == "inpaint":
            from ..loaders.inpaint import InpaintBaseline

            fill = InpaintBaseline(sample, preprocessing.spatial_axes)
        else:
            fill = make_baseline(kind, prepared.pixels, preprocessing, seed=options.seed, blur_sigma=blur_sigma)
        started = time.perf_counter()
        scores = score_windows(
            sample, fill, chosen, score, batch_size=batch_size, spatial_axes=preprocessing.spatial_axes
        )
        seconds = time.perf_counter() - started
        change = original[top] - scores[:, top]
        results.append(
            {
                "baseline": kind,
                "mean_change": float(np.mean(change)),
                "mean_abs_change": float(np.mean(np.abs(change))),
                "max_abs_change": float(np.max(np.abs(change))),
                "top1_flips": float(np.mean(np.argmax(scores, axis=1) != top)),
                "seconds": seconds,
            }
        )
    return {
        "path": str(prepared.path) if prepared.path is not None else None,
        "target": {"index": top, "label": labels[top] if labels and top < len(labels) else None},
        "score": {"kind": head.kind, "original": float(original[top])},
        "patch": list(patch),
        "stride": list(stride),
        "seed": int(options.seed),
        "copies": int(len(chosen)),
        "windows": chosen.tolist(),
        "baselines": results,
    }


def estimate_run(
    model: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Union[Preprocessing, VolumePreprocessing]] = None,
    labels: Optional[Sequence[str]] = None,
    scales: Sequence = (),
    metrics: bool = False,
    **overrides,
) -> dict:
    """What a run would cost, from one timed batch (after one warm-up batch), without running it.

    ``forward_passes`` counts every input the run sends through the model for one image: per map its
    unoccluded pass and one per window (``--refine``: the coarse grid and the refinement budget), once per
    patch size of ``scales`` (a patch-size study, :func:`explain_scales`), and with ``metrics`` the passes
    of :func:`occlude_cli.analyses.validate.faithfulness` per map. ``top_k`` and every-class maps cost nothing more.
    ``per_patch`` breaks the occlusion passes down by patch size. ``incremental``: what incremental inference
    decides from the graph (see :func:`incremental_decision`); the time is that of full passes, a run with
    incremental inference takes less."""
    from ..core.fidelity import faithfulness_forward_passes

    options, classifier, preprocessing, labels, patch, stride, prepared, region = _setup(
        model, image, options, preprocessing, labels, overrides
    )
    model = classifier
    per_patch: List[dict] = []
    for size in list(scales) if len(scales) > 1 else [None]:
        p, s = (
            (patch, stride)
            if size is None
            else check_run(
                ExplainOptions(**{**options.__dict__, "patch": size}), cast(Any, preprocessing), model, labels
            )
        )
        count = len(window_grid(preprocessing.size, p, s, region))
        per_patch.append(
            {
                "patch": list(p),
                "stride": list(s),
                "windows": count,
                "forward_passes": refine_forward_passes(
                    preprocessing.size, p, s, region, options.refine_step, options.refine_budget
                )
                if options.refine
                else count + 1,
            }
        )
    windows = sum(int(g["windows"]) for g in per_patch)
    occlusion_passes = sum(int(g["forward_passes"]) for g in per_patch)
    metric_passes = (
        len(per_patch) * faithfulness_forward_passes(int(np.prod(preprocessing.size[-2:]))) if metrics else 0
    )
    passes = occlusion_passes + metric_passes
    sample = prepared.model_input
    batch_size = options.batch_size or model.default_batch_size(sample.nbytes)
    batch = np.repeat(sample[None], min(batch_size, passes), axis=0)
    model.run(batch)
    timer = time.perf_counter()
    model.run(batch)
    per_pass = (time.perf_counter() - timer) / len(batch)
    return {
        "windows": windows,
        "forward_passes": passes,
        "occlusion_forward_passes": occlusion_passes,
        "metrics_forward_passes": metric_passes,
        "exact_forward_passes": windows + len(per_patch),
        "per_patch": per_patch,
        "batch_size": int(batch_size),
        "patch": list(patch),
        "stride": list(stride),
        "seconds_per_forward_pass": per_pass,
        "estimated_s": per_pass * passes,
        # the first patch size's (each patch size of a study decides by its own windows)
        "incremental": incremental_decision(model, options, int(per_patch[0]["windows"]), len(preprocessing.size)),
    }


def check_run(
    options: ExplainOptions,
    preprocessing: Preprocessing,
    model: OnnxClassifier,
    labels: Optional[Sequence[str]] = None,
) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Check what can be checked before any image is read; returns the (patch, stride) to use, one value per
    spatial axis."""
    options = options.checked()
    size = tuple(preprocessing.size)
    labels = labels if labels is not None else model.labels
    patch = expand_size(options.patch, len(size), "patch") if options.patch else default_patch(size)
    stride = expand_size(options.stride, len(size), "stride") if options.stride else default_stride(patch)
    axes = ("height", "width") if len(size) == 2 else ("depth", "height", "width")
    for p, s, side, axis in zip(patch, stride, size, axes):
        if p > side:
            raise OccludeError(f"patch {axis} {p} is larger than the model input {axis} {side}")
        if s > p:
            raise OccludeError(
                f"stride {axis} {s} is larger than the patch {axis} {p}: some pixels would never be occluded"
            )
    if options.refine and len(size) != 2:
        raise OccludeError(
            "refine is for 2-D inputs: a 3-D model is occluded exactly (choose a larger stride to make it cheaper)"
        )
    if options.refine and options.region is None:  # the grid is known: a step over the budget fails here
        refine_forward_passes(size, patch, stride, None, options.refine_step, options.refine_budget)
    if options.baseline == "inpaint" and len(size) != 2:
        raise OccludeError("baseline inpaint is 2-D only: for volumes use tissue, blur, mean or pNN")
    if isinstance(preprocessing, Preprocessing) and options.baseline[:1] in tuple("-0123456789"):
        # a constant in pixel units must fit the input type like the pixels (e.g. 300 in a uint8 input)
        make_baseline(options.baseline, np.zeros((1, 1, preprocessing.channels)), preprocessing)
    check_score(model, options.score)
    classes = model_classes(model, preprocessing) if options.target is not None or labels else model.num_classes
    if labels is not None and classes is not None and len(labels) != classes:
        raise OccludeError(f"{len(labels)} labels given but the model has {classes} classes")
    classes = classes or (len(labels) if labels else None)
    if options.target is not None and classes is not None:
        resolve_target(options.target, labels, classes)
    return patch, stride  # type: ignore[return-value]


def model_classes(model: OnnxClassifier, preprocessing) -> Optional[int]:
    """The number of classes: the output's declared size, else (a dynamic class axis) the size of one forward
    pass on an input of zeros, so that a target or labels can be checked before any image. None when even
    that pass fails (the first image then says why)."""
    if model.num_classes is not None:
        return int(model.num_classes)
    cached = model.__dict__.get("_probed_classes")
    if cached is not None:
        return int(cached)
    size = list(preprocessing.size)
    channels = preprocessing.channels
    channels_first = str(preprocessing.layout).upper().startswith("NC")
    shape = [1, channels, *size] if channels_first else [1, *size, channels]
    try:
        classes = int(model.run(np.zeros(shape, dtype=model.dtype)).shape[1])
    except OccludeError:
        return None
    model.__dict__["_probed_classes"] = classes
    return classes


def check_score(model: OnnxClassifier, score) -> None:
    """Refuse, before any image, a score kind the model's graph rules out (logits of a Softmax output, a
    second sigmoid, a softmax over one output)."""
    kind = ScoreKind(_score_name(score))
    if kind in (ScoreKind.auto, ScoreKind.prob, ScoreKind.raw):
        return
    classes = model.num_classes or 2
    probe = np.full((1, classes), 5.0)  # logits-like values: only the graph and the declared head decide here
    model.head(kind, probe)


@dataclass
class ScaleStudy:
    """The same image explained at several patch sizes: is the explanation stable or an artefact of the patch?"""

    explanations: List[Explanation]
    rank_correlation: np.ndarray  # (K, K) Spearman correlation between the maps

    @property
    def patches(self) -> List[List[int]]:
        return [e.params["patch"] for e in self.explanations]

    def mean_map(self) -> np.ndarray:
        """Multi-scale map: the mean of the per-scale maps, each scaled to [-1, 1] by its largest ``|value|``
        (larger patches give larger drops, so raw maps would let the largest patch dominate)."""
        return multiscale_mean([e.map for e in self.explanations])


def multiscale_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of ``maps``, each scaled to [-1, 1] by its largest |value| (:meth:`ScaleStudy.mean_map`; also
    what a folder's aggregate recomputes from the saved per-scale maps, to the bit)."""
    scaled = []
    for values in maps:
        limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0
        scaled.append(values / limit if limit > 0 else values)
    return np.mean(scaled, axis=0)


def explain_scales(
    model: Union[str, Path, OnnxClassifier],
    image,
    patches: Sequence,
    options: Optional[ExplainOptions] = None,
    **kwargs,
) -> ScaleStudy:
    """Explain one image once per patch size (one model session; the target is fixed by the first run so
    every map explains the same class) and measure their pairwise rank correlation."""
    from ..core.metrics import spearman

    if len(patches) < 2:
        raise OccludeError("a scale study needs at least two patch sizes")
    if not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model)
    options = options or ExplainOptions()
    explanations: List[Explanation] = []
    for patch in patches:
        run_options = ExplainOptions(**{**options.__dict__, "patch": patch})
        if explanations:
            run_options.target = explanations[0].target
        explanations.append(explain(model, image, run_options, **kwargs))
    k = len(explanations)
    matrix = np.ones((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i, j] = matrix[j, i] = spearman(explanations[i].map, explanations[j].map)
    return ScaleStudy(explanations=explanations, rank_correlation=matrix)


def parse_patches(value: str) -> List[Tuple[int, ...]]:
    """'16' -> [(16, 16)]; '8,16,32' or '8x8,16x24' -> one patch per comma-separated item."""
    return [parse_hw(item, "patch") for item in str(value).split(",")]


def region_to_box(region, prepared: PreparedImage) -> Box:
    """A region (x0, y0, x1, y1) in original image pixels -> (y0, x0, y1, x1) in model-input pixels,
    clipped to the part of the image the model sees."""
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise OccludeError(f"region must be x0,y0,x1,y1, got {region!r}") from None
    if x1 <= x0 or y1 <= y0:
        raise OccludeError(f"region {region!r} is empty: need x0 < x1 and y0 < y1")
    left, top, right, bottom = prepared.crop_box
    height, width = prepared.preprocessing.size
    sx, sy = width / (right - left), height / (bottom - top)
    box = (
        int(np.clip(np.floor((y0 - top) * sy), 0, height)),
        int(np.clip(np.floor((x0 - left) * sx), 0, width)),
        int(np.clip(np.ceil((y1 - top) * sy), 0, height)),
        int(np.clip(np.ceil((x1 - left) * sx), 0, width)),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        raise OccludeError(f"region {region!r} lies outside the part of the image the model sees")
    return box


def describe_model(model: Union[str, Path, OnnxClassifier], *, device: str = "auto") -> dict:
    """What occlude reads from a model, as a JSON-ready dict: input, output, final operator, batching,
    provider, the preprocessing it would use (or why it needs arguments) and the labels."""
    if not isinstance(model, OnnxClassifier):
        model = OnnxClassifier(model, device=device)
    document = model.describe()
    document["input_type"] = model.dtype
    document["output_shape"] = [d if isinstance(d, int) and d > 0 else "dynamic" for d in model.output.shape]
    document["classes"] = model.num_classes
    document["final_op"] = model.final_op
    document["fixed_batch"] = model.fixed_batch
    try:
        document["preprocessing"] = resolve_preprocessing(model).describe()
    except OccludeError as exc:
        document["preprocessing"] = f"needs flags: {exc}"
    document["labels"] = len(model.labels) if model.labels else None
    document["label_names"] = list(model.labels) if model.labels else None
    return document
