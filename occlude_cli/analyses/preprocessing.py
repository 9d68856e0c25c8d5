"""How a model is opened and fed: :class:`ModelOptions` (which model, on what device, how an image becomes its
input) and :func:`open_model`, which checks them before onnxruntime loads the model; the preprocessing from
explicit arguments, the model's metadata and its input shape (:func:`resolve_preprocessing`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import OccludeError
from ..loaders import limits
from ..loaders.images import MAX_RESIZE, PAD_VALUE, Preprocessing, default_pixel_offset
from ..loaders.model import PREPROCESS_KEY, OnnxClassifier, read_labels, resolve_threads
from ..loaders.modelfiles import (
    IMAGENET,
    PRESET_LABELS,
    RESIZE_KEYS,
    Level,
    canonical,
    find_model_file,
    imagenet_labels,
    preset_level,
)
from ..loaders.volumes import VOLUME_LAYOUTS, VolumePreprocessing, volume_preprocessing_from_metadata
from .options import as_size, checked_path, per_axis


@dataclass
class ModelOptions:
    """Which model to load and how an image becomes its input (the library's defaults). ``labels``: a labels
    file (one name per line), the names themselves, or ``"imagenet"`` (the ImageNet-1k names shipped with
    occlude); ``resize_short``: resize the short side to this many pixels, then center-crop the input size
    (torchvision's Resize(S) + CenterCrop); ``interpolation``: nearest, bilinear, bicubic or lanczos;
    ``resampler``: pil, torch or float (see :data:`~occlude_cli.loaders.images.RESAMPLERS`);
    ``preprocess``: a preset (``"torchvision"``); ``max_memory``: the process-wide memory budget in bytes
    (None: half the available memory, 256 MiB to 4 GiB). Values not given come from the model's metadata, then
    the files beside it (see :func:`resolve_preprocessing`)."""

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
    resize_short: Optional[int] = None
    interpolation: Optional[str] = None
    preprocess: Optional[str] = None
    resampler: Optional[str] = None
    pad_value: Optional[float] = None  # letterbox padding, a pixel value 0..255 (default 114)


class OpenedModel(NamedTuple):
    """A loaded model with the preprocessing and class names a run uses."""

    classifier: OnnxClassifier
    preprocessing: Union[Preprocessing, VolumePreprocessing]
    labels: Optional[List[str]]


def open_model(
    model: Union[str, Path, OnnxClassifier],
    options: Optional[ModelOptions] = None,
    *,
    task: str = "classify",
    resize: Optional[str] = None,
) -> OpenedModel:
    """The model (a file, or a folder holding it: see :func:`~occlude_cli.loaders.modelfiles.find_model_file`),
    its preprocessing and class names. Every option is checked before onnxruntime loads the model (and the model
    file against the memory budget, from its graph alone); ``options.max_memory`` sets the process-wide budget.
    An already loaded classifier is used as it is (its device and names stay). ``task``: what the model's output
    is (see :class:`~occlude_cli.loaders.model.OnnxClassifier`); ``resize``: the resize mode when nothing else
    names one (letterbox for YOLO detectors)."""
    if options is not None and not isinstance(options, ModelOptions):
        raise OccludeError(
            f"model_options must be a ModelOptions, got {type(options).__name__}", params=("model_options",)
        )
    options = options or ModelOptions()
    if options.max_memory is not None and (
        isinstance(options.max_memory, bool) or not isinstance(options.max_memory, (int, np.integer))
    ):
        raise OccludeError(
            f"max_memory is a number of bytes (2 << 30), got {options.max_memory!r}", params=("max_memory",)
        )
    if options.scale is not None and not (
        options.scale == options.scale and abs(options.scale) not in (0.0, float("inf"))
    ):
        raise OccludeError(f"scale must be a finite non-zero number, got {options.scale}", params=("scale",))
    for name in ("mean", "std"):
        values = getattr(options, name)
        if values is not None and (not len(values) or not all(np.isfinite(np.asarray(values, dtype=float)))):
            raise OccludeError(f"{name} takes finite numbers, got {list(values)!r}", params=(name,))
    if options.preprocess is not None:
        preset_level(options.preprocess, "")  # a known preset, before the model loads
    if task == "embed" and options.labels is not None:  # refused rather than ignored, as target is
        raise OccludeError(
            "labels is for class scores: an embedding's cosine similarity has no classes", params=("labels", "task")
        )
    limits.set_budget(options.max_memory)
    if isinstance(model, OnnxClassifier):
        classifier = model
    else:
        threads = resolve_threads(options.threads, force=options.force_threads)
        path = find_model_file(checked_path(model, "model", "an OnnxClassifier"))
        limits.check_model_file(path)  # from the graph, before onnxruntime loads (and may run) it
        classifier = OnnxClassifier(
            path,
            device=options.device,
            input_name=options.input_name,
            output_name=options.output_name,
            threads=threads,
            task=task,
        )
    preprocessing = preprocessing_for(classifier, options, resize)
    names, source = resolve_labels(classifier, options.labels, options.preprocess)
    if source is not None and isinstance(preprocessing, Preprocessing):
        preprocessing = replace(preprocessing, sources=preprocessing.sources + (("labels", source),))
    return OpenedModel(classifier, preprocessing, names)


def preprocessing_for(
    model: OnnxClassifier, options: ModelOptions, default_resize: Optional[str] = None
) -> Union[Preprocessing, VolumePreprocessing]:
    """:func:`resolve_preprocessing` with the preprocessing values of ``options`` (``default_resize``: a task's
    resize when nothing names one)."""
    return resolve_preprocessing(
        model,
        size=options.size,
        layout=options.layout,
        mean=options.mean,
        std=options.std,
        scale=options.scale,
        bgr=options.bgr or None,
        resize=options.resize,
        resize_short=options.resize_short,
        interpolation=options.interpolation,
        preset=options.preprocess,
        resampler=options.resampler,
        default_resize=default_resize,
        pad_value=options.pad_value,
    )


def resolve_labels(
    model: OnnxClassifier, labels=None, preset: Optional[str] = None
) -> Tuple[Optional[List[str]], Optional[str]]:
    """The class names and where they came from, in order of precedence: ``labels`` (``"imagenet"``, a file
    or the names), the model's metadata (``occlude.labels``), the files beside it (occlude.json ``labels``,
    Hugging Face ``id2label``, timm ``label_names``), and last the ImageNet-1k names when a preset of ImageNet
    models (``preset``, or occlude.json's ``preprocess``) meets a model with 1000 outputs. Names from a file
    beside the model that do not match its number of classes are refused (give ``labels`` to override)."""
    if isinstance(labels, str) and labels == IMAGENET:
        return imagenet_labels(), "given: imagenet (occlude's ImageNet-1k list)"
    if isinstance(labels, (str, Path)):
        return read_labels(labels), f"given: {labels}"
    if labels:
        return list(labels), "given"
    if model.labels:
        classes = model.num_classes
        if classes is not None and len(model.labels) != classes and model.labels_source == model.files.labels_source:
            raise OccludeError(
                f"{model.labels_source} names {len(model.labels)} classes but the model has {classes}: give labels",
                params=("labels",),
            )
        return list(model.labels), model.labels_source
    named = preset or model.files.preset_labels
    if PRESET_LABELS.get(str(named), named) == IMAGENET and model.num_classes == 1000:
        return imagenet_labels(), f"preset {preset or 'in occlude.json'}: ImageNet-1k names (1000 outputs)"
    return None, None


def _given_level(**given) -> Level:
    return {key: (value, "given") for key, value in given.items() if value is not None}


def _pick(levels: Sequence[Level], key: str) -> Optional[Tuple[Any, str]]:
    """(value, source) of ``key`` from the first level that has it."""
    for level in levels:
        if key in level:
            return level[key]
    return None


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
    resize_short: Optional[int] = None,
    interpolation: Optional[str] = None,
    preset: Optional[str] = None,
    resampler: Optional[str] = None,
    default_resize: Optional[str] = None,
    pad_value: Optional[float] = None,
) -> Union[Preprocessing, VolumePreprocessing]:
    """Each value of the preprocessing from the first source that has it: the arguments given, the ``preset``
    (``"torchvision"``), the model's metadata (``occlude.preprocess``) and input shape, the files beside the model
    (``occlude.json``, Hugging Face ``preprocessor_config.json``, timm's ``config.json``), then the defaults
    (pixels / 255, no mean or std, stretch, bilinear). The resize and crop come as one group (``resize``,
    ``resize_short``, ``crop_pct``...) from the first source that has any of them. The result's ``sources``
    says where each value came from. 3-D models (5-D input, layout NCDHW or NDHWC) get a
    :class:`VolumePreprocessing` from their metadata.

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
    if resize is not None and resize_short is not None and resize != "short-side":
        raise OccludeError(
            f"give resize or resize_short, not both (resize {resize}, resize_short {resize_short})",
            params=("resize", "resize_short"),
        )
    given = _given_level(
        layout=layout.upper() if layout else None,
        scale=scale,
        mean=list(mean) if mean is not None else None,
        std=list(std) if std is not None else None,
        resize=resize,
        resize_short=resize_short,
        interpolation=interpolation,
        resampler=resampler,
    )
    levels: List[Level] = [given]
    if preset is not None:
        levels.append(preset_level(preset, f"preset {preset}"))
    if meta:
        levels.append(canonical(meta, f"model metadata ({PREPROCESS_KEY})"))
    levels += [level for _, level in model.files.levels]
    sources: List[Tuple[str, str]] = []
    layout, (height, width), color = _input_shape(model, levels, size, bool(bgr), sources)
    values = _normalisation(model, levels, meta, sources)
    mode, resize_to, crop_offset = _resize_group(levels, (height, width), sources)
    mode = _task_resize(mode, default_resize, sources)
    picked_interpolation = _pick(levels, "interpolation") or ("bilinear", "default")
    picked_resampler = _pick(levels, "resampler") or (None, "default")
    if picked_resampler[0] == "torch" and picked_resampler[1] != "given":
        # a file's torch resampler (transformers 5) where torch has no such uint8 kernel: Pillow's
        odd = picked_interpolation[0] if picked_interpolation[0] in ("nearest", "lanczos") else None
        if odd or mode == "center-crop":
            picked_resampler = ("pil", f"{picked_resampler[1]}, pil for {odd or 'resize center-crop'}")
    sources += [("interpolation", picked_interpolation[1]), ("resampler", picked_resampler[1])]
    return Preprocessing(
        size=(int(height), int(width)),
        layout=layout,
        color=color,
        scale=float(values["scale"]),
        mean=tuple(float(v) for v in values["mean"]),
        std=tuple(float(v) for v in values["std"]),
        resize=mode,
        dtype=model.dtype,
        quantization=values["quantization"],
        resize_to=resize_to,
        interpolation=picked_interpolation[0],
        crop_offset=crop_offset,
        resampler=picked_resampler[0],
        sources=tuple(sources),
        pad_value=float(pad_value) if pad_value is not None else PAD_VALUE,
    )


def _input_shape(model: OnnxClassifier, levels: Sequence[Level], size, bgr: bool, sources: list):
    """(layout, (height, width), colour) from the levels and the model's input shape, their sources added to
    ``sources``."""
    picked = _pick(levels, "layout")
    layout = picked[0] if picked else (model.guess_layout() or "")
    if layout not in ("NCHW", "NHWC") and {model.channels("NCHW"), model.channels("NHWC")}.isdisjoint({1, 3, None}):
        raise OccludeError(  # no layout would help
            f"input shape {model.input_shape} has {model.channels('NCHW')} channels as NCHW and "
            f"{model.channels('NHWC')} as NHWC: occlude supports 1 (grey) or 3 (colour)"
        )
    if layout not in ("NCHW", "NHWC"):
        raise OccludeError(
            f"cannot tell NCHW from NHWC in input shape {model.input_shape}: give layout nchw or nhwc",
            params=("layout",),
        )
    sources.append(("layout", picked[1] if picked else "model input shape"))
    channels = model.channels(layout)
    if channels not in (1, 3, None):
        raise OccludeError(f"input has {channels} channels: occlude supports 1 (grey) or 3 (colour)")
    height, width = model.spatial_size(layout)
    stated = _pick(levels[1:], "size")
    if size is not None:
        want = per_axis(as_size(size, "size"), 2, "size")
        for got, fixed, axis in ((want[0], height, "height"), (want[1], width, "width")):
            if fixed is not None and got != fixed:
                raise OccludeError(
                    f"size {axis} {got} conflicts with the model's fixed input {axis} {fixed}", params=("size",)
                )
        (height, width), where = want, "given"
    elif stated is not None:
        (h, w), where = stated
        if (height is not None and height != h) or (width is not None and width != w):
            raise OccludeError(
                f"{where} says {h}x{w} but the model's input is {height or 'dynamic'}x{width or 'dynamic'}: that "
                "file does not describe this model",
            )
        if height is not None and width is not None:
            where = "model input shape"
        height, width = h, w
    elif height is None or width is None:
        raise OccludeError(
            f"model input {model.input_shape} has dynamic height/width: give size (height, width)",
            params=("size",),
        )
    else:
        where = "model input shape"
    sources.append(("size", where))
    picked = _pick(levels, "color")
    color, where = picked if picked else ("gray" if channels == 1 else "rgb", "default")
    if bgr:
        color, where = "bgr", "given"
    if channels == 1:
        color, where = "gray", "model input shape (1 channel)"
    elif color == "gray" and channels == 3:
        raise OccludeError(f"{where} says grey but the input has 3 channels")
    sources.append(("color", where))
    return layout, (height, width), color


def _normalisation(model: OnnxClassifier, levels: Sequence[Level], meta: dict, sources: list) -> dict:
    """scale, mean, std (with their sources) and the input quantization of an integer input."""
    picked = {key: _pick(levels, key) for key in ("scale", "mean", "std")}
    given = {key: (value[0] if value is not None else None) for key, value in picked.items()}
    quantization = None
    defaults: dict = {"scale": 1 / 255, "mean": [0.0], "std": [1.0]}
    if np.dtype(model.dtype).kind in "iu":
        quantization = _declared_quantization(meta)
        if quantization is None and any(v is not None for v in given.values()):
            # the graph dequantizes the input right away: scale, mean and std describe that real value
            quantization = getattr(model, "input_quantization", None)
        if quantization is None:  # the input stores the pixels as integers (int8: pixel - 128)
            defaults = {"scale": 1.0, "mean": [default_pixel_offset(model.dtype)], "std": [1.0]}
    out: dict = {"quantization": quantization}
    for key in ("scale", "mean", "std"):
        value = picked[key]
        out[key] = value[0] if value is not None else defaults[key]
        sources.append((key, value[1] if value is not None else "default"))
    return out


def _task_resize(mode: str, default_resize: Optional[str], sources: list) -> str:
    """A task's own resize (letterbox for YOLO detectors) where nothing named one."""
    if default_resize is None or ("resize", "default") not in sources:
        return mode
    sources[sources.index(("resize", "default"))] = ("resize", "task default")
    return default_resize


def _resize_group(levels: Sequence[Level], size: Tuple[int, int], sources: list):
    """(mode, resize_to, crop_offset) from the first level that says anything about resizing."""
    level = next((lv for lv in levels if any(k in lv for k in RESIZE_KEYS)), None)
    if level is None:
        sources.append(("resize", "default"))
        return "stretch", None, "round"
    if "resize_error" in level:
        message, _ = level["resize_error"]
        raise OccludeError(f"{message}: give resize or resize_short", params=("resize", "resize_short"))
    stated = level.get("resize")
    mode = stated[0] if stated else None
    crop_offset = level.get("crop_offset", ("round", "default"))[0]
    if "resize_short" in level:
        value, where = level["resize_short"]
        _same_mode(mode, "short-side", where)
        picked: tuple = ("short-side", (value,), where)
    elif "resize_size" in level:
        value, where = level["resize_size"]
        _same_mode(mode, "stretch", where)
        picked = ("stretch", tuple(value), where)
    elif "crop_pct" in level:
        pct, where = level["crop_pct"]
        mode = mode or "short-side"
        if mode == "center-crop":
            raise OccludeError(f"{where}: crop_pct needs resize short-side or stretch, not center-crop")
        height, width = size
        to = (
            (math.floor(max(height, width) / pct),)
            if mode == "short-side"
            else (math.floor(height / pct), math.floor(width / pct))
        )
        picked = (mode, to, where)
    else:
        picked = (mode, None, stated[1])  # type: ignore[index]
    sources.append(("resize", picked[2]))
    if picked[1] is not None and picked[2] != "given" and not picked[2].startswith("preset "):
        _check_file_resize(picked[0], picked[1], size, picked[2])
    return picked[0], picked[1], crop_offset


def _check_file_resize(mode: str, to: Tuple[int, ...], size: Tuple[int, int], where: str) -> None:
    """A resize read from a file or the metadata (or computed from its crop_pct) that no photo can be resized to,
    or that leaves less than the input to crop: one error naming the file and key, not a flag."""
    shown = "x".join(map(str, to))
    if max(to) > MAX_RESIZE:
        raise OccludeError(f"{where}: resize to {shown} pixels is over {MAX_RESIZE}: not a usable preprocessing")
    height, width = size
    small = to[0] < max(height, width) if mode == "short-side" else (to[0] < height or to[1] < width)
    if small:
        raise OccludeError(
            f"{where}: resize to {shown} is smaller than the input size {height}x{width}: it does not "
            "describe this model's input"
        )


def _same_mode(mode: Optional[str], want: str, where: str) -> None:
    if mode is not None and mode != want:
        raise OccludeError(f"{where} asks for resize {want} but the same source says resize {mode}")


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
