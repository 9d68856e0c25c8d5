"""How a model is opened and fed: :class:`ModelOptions` (which model, on what device, how an image becomes its
input) and :func:`open_model`, which checks them before onnxruntime loads the model; the preprocessing from
explicit arguments, the model's metadata and its input shape (:func:`resolve_preprocessing`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import OccludeError
from ..loaders import limits
from ..loaders.images import Preprocessing, default_pixel_offset
from ..loaders.model import OnnxClassifier, read_labels, resolve_threads
from ..loaders.volumes import VOLUME_LAYOUTS, VolumePreprocessing, volume_preprocessing_from_metadata
from .options import as_size, per_axis


@dataclass
class ModelOptions:
    """Which model to load and how an image becomes its input (the library's defaults). ``labels``: a labels
    file (one name per line) or the names themselves; ``max_memory``: the process-wide memory budget in bytes
    (None: half the available memory, 256 MiB to 4 GiB)."""

    device: str = "auto"
    threads: Optional[int] = None
    force_threads: bool = False
    size: Optional[Union[int, Tuple[int, ...]]] = None
    layout: Optional[str] = None
    mean: Optional[Sequence[float]] = None
    std: Optional[Sequence[float]] = None
    scale: Optional[float] = None
    bgr: bool = False
    resize: Optional[str] = None
    labels: Optional[Union[str, Path, Sequence[str]]] = None
    input_name: Optional[str] = None
    output_name: Optional[str] = None
    max_memory: Optional[int] = None


class OpenedModel(NamedTuple):
    """A loaded model with the preprocessing and class names a run uses."""

    classifier: OnnxClassifier
    preprocessing: Union[Preprocessing, VolumePreprocessing]
    labels: Optional[List[str]]


def open_model(model: Union[str, Path, OnnxClassifier], options: Optional[ModelOptions] = None) -> OpenedModel:
    """The model, its preprocessing and class names. Every option is checked before onnxruntime loads the model
    (and the model file against the memory budget, from its graph alone); ``options.max_memory`` sets the
    process-wide budget. An already loaded classifier is used as it is (its device and names stay)."""
    options = options or ModelOptions()
    if options.scale is not None and not (
        options.scale == options.scale and abs(options.scale) not in (0.0, float("inf"))
    ):
        raise OccludeError(f"scale must be a finite non-zero number, got {options.scale}", params=("scale",))
    for name in ("mean", "std"):
        values = getattr(options, name)
        if values is not None and (not len(values) or not all(np.isfinite(np.asarray(values, dtype=float)))):
            raise OccludeError(f"{name} takes finite numbers, got {list(values)!r}", params=(name,))
    limits.set_budget(options.max_memory)
    if isinstance(model, OnnxClassifier):
        classifier = model
    else:
        threads = resolve_threads(options.threads, force=options.force_threads)
        limits.check_model_file(model)  # from the graph, before onnxruntime loads (and may run) it
        classifier = OnnxClassifier(
            model,
            device=options.device,
            input_name=options.input_name,
            output_name=options.output_name,
            threads=threads,
        )
    labels = options.labels
    names = read_labels(labels) if isinstance(labels, (str, Path)) else (list(labels) if labels else None)
    preprocessing = resolve_preprocessing(
        classifier,
        size=options.size,
        layout=options.layout,
        mean=options.mean,
        std=options.std,
        scale=options.scale,
        bgr=options.bgr or None,
        resize=options.resize,
    )
    return OpenedModel(classifier, preprocessing, names)


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
        if size is not None:  # (depth, height, width) for 3-D models with dynamic sizes
            meta["size"] = list(per_axis(as_size(size, "size"), 3, "size"))
        return volume_preprocessing_from_metadata(meta, model.input_shape, model.dtype, layout)
    layout = (layout or meta.get("layout") or model.guess_layout() or "").upper()
    if layout not in ("NCHW", "NHWC"):
        raise OccludeError(
            f"cannot tell NCHW from NHWC in input shape {model.input_shape}: give layout nchw or nhwc",
            params=("layout",),
        )
    channels = model.channels(layout)
    if channels not in (1, 3, None):
        raise OccludeError(f"input has {channels} channels: occlude supports 1 (grey) or 3 (colour)")
    height, width = model.spatial_size(layout)
    if size is not None:
        want = per_axis(as_size(size, "size"), 2, "size")
        for got, fixed, axis in ((want[0], height, "height"), (want[1], width, "width")):
            if fixed is not None and got != fixed:
                raise OccludeError(
                    f"size {axis} {got} conflicts with the model's fixed input {axis} {fixed}", params=("size",)
                )
        height, width = want
    if height is None or width is None:
        if "size" in meta:
            height, width = _metadata_size(meta["size"])
        else:
            raise OccludeError(
                f"model input {model.input_shape} has dynamic height/width: give size (height, width)",
                params=("size",),
            )
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


def _metadata_size(value) -> Tuple[int, int]:
    """The model metadata's ``size`` (outside text: "HxW", N or [h, w]) as (height, width)."""
    try:
        parts = str(value).lower().replace(" ", "").split("x") if isinstance(value, str) else value
        numbers = [int(v) for v in (parts if isinstance(parts, (list, tuple)) else [parts])]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers) < 1:
        raise OccludeError(f"model metadata size must be N or HxW in pixels, got {value!r}")
    return (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
