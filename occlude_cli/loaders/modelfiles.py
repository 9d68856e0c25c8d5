"""The files that come with a model: a model folder (an optimum export, a Hugging Face hub snapshot, a timm
export), the preprocessing and class names its configuration files describe, occlude's own ``occlude.json``,
the presets and the ImageNet-1k class names shipped with occlude.

Every file here is outside text: read through a size cap, only when it is a regular file (symlinks followed, as
the Hugging Face hub cache links each file of a snapshot to its blob), decoded as UTF-8 JSON, and checked value by
value. A value becomes occlude's own vocabulary (the keys of the ``occlude.preprocess`` metadata) with the place
it came from, e.g. ``("image_mean", "preprocessor_config.json: image_mean")``; the preprocessing
(:func:`occlude_cli.analyses.preprocessing.resolve_preprocessing`) picks each value from the first source that
has it.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import OccludeError, first_line

# A source's values: occlude's key -> (value, where it came from)
Level = Dict[str, Tuple[Any, str]]

OCCLUDE_JSON = "occlude.json"
HF_PROCESSOR = "preprocessor_config.json"
CONFIG_JSON = "config.json"
IMAGENET = "imagenet"
MAX_JSON_BYTES = 16 << 20  # a config with id2label for ImageNet-21k is about 1 MB

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# The keys that decide how the photo is resized and cropped: taken together from the first source with any
RESIZE_KEYS = ("resize", "resize_short", "resize_size", "crop_pct", "crop_offset", "resize_error")
# occlude's own keys (occlude.json, the occlude.preprocess metadata, presets)
PREPROCESS_KEYS = (
    "layout",
    "size",
    "color",
    "scale",
    "mean",
    "std",
    "resize",
    "resize_short",
    "resize_size",
    "crop_pct",
    "crop_offset",
    "interpolation",
    "resampler",
)
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # transformers' `resample` (PIL numbers)
_NOT_SUPPORTED_FILTERS = {4: "box", 5: "hamming"}

# Presets: the preprocessing of a family of models, by name. torchvision: its ImageClassification transform
# with the defaults its classification weights use (Resize(256, bilinear, antialias) of the short side,
# CenterCrop to the input size, pixel / 255, ImageNet mean and std), resized as torchvision does a PIL image.
PRESETS: Dict[str, dict] = {
    "torchvision": {
        "scale": 1 / 255,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "resize_short": 256,
        "interpolation": "bilinear",
        "crop_offset": "round",
        "resampler": "pil",
    },
}


class Preset(str, Enum):
    """A family of models whose preprocessing occlude knows by name (:data:`PRESETS`)."""

    torchvision = "torchvision"


# Presets whose models name the 1,000 ImageNet-1k classes (used when the model has no labels of its own)
PRESET_LABELS = {"torchvision": IMAGENET}


# ------------------------------------------------------------------------------------------- the model file


def find_model_file(path) -> Path:
    """``path`` when it is not a folder; for a folder: its ``model.onnx``, else its only ``.onnx`` file, else the
    same in its ``onnx/`` sub-folder (the layout of hub repositories that also hold other files). Symlinks are
    followed (a hub snapshot links every file to its blob). A folder with several candidates or none is one
    OccludeError that names them."""
    path = Path(path)
    if not path.is_dir():
        return path
    for folder in (path, path / "onnx"):
        if not folder.is_dir():
            continue
        if (folder / "model.onnx").is_file():
            return folder / "model.onnx"
        try:
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".onnx" and p.is_file())
        except OSError as exc:
            raise OccludeError(f"cannot list model folder {folder}: {exc.strerror or exc}") from None
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(p.name for p in found[:10]) + (", ..." if len(found) > 10 else "")
            raise OccludeError(
                f"model folder {folder} holds {len(found)} .onnx files and no model.onnx ({names}): give the file"
            )
    raise OccludeError(f"no .onnx model in folder {path} (looked for model.onnx or a single .onnx file)")


def companion_folders(model_file: Path) -> List[Path]:
    """Where the files that describe a model are looked for: the model's own folder, and for a model in an
    ``onnx/`` sub-folder (``repo/onnx/model.onnx``) the folder above it. Not resolved: a hub snapshot's files sit
    beside the model's symlink, not beside its blob."""
    folder = model_file.parent
    return [folder, folder.parent] if folder.name == "onnx" else [folder]


def read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path`` (symlinks followed), or None when there is no such file. A file that is not
    a regular file (a FIFO, a device, a folder), a broken or looping symlink, a file over
    :data:`MAX_JSON_BYTES`, text that is not UTF-8 JSON or JSON that is not an object: one OccludeError."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise OccludeError(f"{path} is a broken symlink (its target does not exist)") from None
        return None
    except OSError as exc:  # a symlink loop, a permission
        raise OccludeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise OccludeError(f"{path} is not a regular file, not read")
    if info.st_size > MAX_JSON_BYTES:
        raise OccludeError(f"{path} is {info.st_size} bytes: a model configuration is at most {MAX_JSON_BYTES}")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped for a FIFO since the stat
                raise OccludeError(f"{path} is not a regular file, not read")
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise OccludeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise OccludeError(f"{path} is over {MAX_JSON_BYTES} bytes: not a model configuration")
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_Object.of)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OccludeError(f"{path} is not valid UTF-8 JSON: {first_line(exc)}") from None
    if not isinstance(value, dict):
        raise OccludeError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


class _Object(dict):
    """A JSON object that remembers the keys it was given more than once (``twice``; json keeps the last)."""

    twice: Tuple[str, ...] = ()

    @classmethod
    def of(cls, pairs) -> _Object:
        made = cls(pairs)
        if len(made) != len(pairs):
            seen: set = set()
            twice = []
            for key, _ in pairs:
                if key in seen:
                    twice.append(key)
                seen.add(key)
            made.twice = tuple(twice)
        return made


# ------------------------------------------------------------------------------------------ checked values


def _number(value, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OccludeError(f"{where} must be a finite number, got {json.dumps(value)[:80]}")
    if positive and value <= 0:
        raise OccludeError(f"{where} must be positive, got {value}")
    return float(value)


def _numbers(value, where: str, nonzero: bool = False) -> List[float]:
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > 4:
        raise OccludeError(f"{where} must be a number or a list of 1 to 4 numbers, got {json.dumps(value)[:80]}")
    numbers = [_number(v, where) for v in values]
    if nonzero and 0.0 in numbers:
        raise OccludeError(f"{where} must be non-zero, got {json.dumps(value)[:80]}")
    return numbers


def _scale(value, where: str) -> float:
    number = _number(value, where)
    if number == 0:
        raise OccludeError(f"{where} must be non-zero, got 0")
    return number


def _pixels(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 16:
        raise OccludeError(f"{where} must be a whole number of pixels (1 to 65536), got {json.dumps(value)[:80]}")
    return int(value)


def _size(value, where: str) -> List[int]:
    """N, "HxW", [h, w] or {"height", "width"} as [h, w]."""
    if isinstance(value, dict) and "height" in value and "width" in value:
        value = [value["height"], value["width"]]
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.lower().replace(" ", "").split("x")]
        except ValueError:
            raise OccludeError(f"{where} must be N or HxW in pixels, got {value[:80]!r}") from None
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, 2):
        raise OccludeError(f"{where} must be N or [height, width] in pixels, got {json.dumps(value)[:80]}")
    numbers = [_pixels(v, where) for v in values]
    return numbers * 2 if len(numbers) == 1 else numbers


def _choice(value, where: str, allowed) -> str:
    text = str(value).lower() if isinstance(value, str) else None
    if text not in allowed:
        raise OccludeError(f"{where} must be one of {', '.join(allowed)}, got {json.dumps(value)[:80]}")
    return text  # type: ignore[return-value]


def _flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise OccludeError(f"{where} must be true or false, got {json.dumps(value)[:80]}")
    return value


def canonical(data: dict, source: str, *, strict: bool = False) -> Level:
    """occlude's own keys (:data:`PREPROCESS_KEYS`) in ``data`` checked and converted, each with ``source``
    (``"occlude.json: mean"``); ``strict``: any other key is an error (occlude.json; the ONNX metadata also
    holds ``output`` and ``quantization``). A ``preprocess`` key adds that preset's values below the file's
    own."""
    from .images import CROP_OFFSETS, INTERPOLATIONS, RESAMPLERS, RESIZE_MODES

    allowed = set(PREPROCESS_KEYS) | {"preprocess", "labels"}
    unknown = sorted(k for k in data if k not in allowed)
    if strict and unknown:
        raise OccludeError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown[:5]))}; known: {', '.join(sorted(allowed))}"
        )
    out: Level = {}
    checks = {
        "layout": lambda v, w: _choice(v.lower() if isinstance(v, str) else v, w, ("nchw", "nhwc")).upper(),
        "size": _size,
        "color": lambda v, w: _choice(v, w, ("rgb", "bgr", "gray")),
        "scale": _scale,
        "mean": _numbers,
        "std": lambda v, w: _numbers(v, w, nonzero=True),
        "resize": lambda v, w: _choice(v, w, RESIZE_MODES),
        "resize_short": _pixels,
        "resize_size": _size,
        "crop_pct": lambda v, w: _number(v, w, positive=True),
        "crop_offset": lambda v, w: _choice(v, w, CROP_OFFSETS),
        "interpolation": lambda v, w: _choice(v, w, INTERPOLATIONS),
        "resampler": lambda v, w: _choice(v, w, RESAMPLERS),
    }
    for key in PREPROCESS_KEYS:
        if key in data:
            where = f"{source}: {key}"
            out[key] = (checks[key](data[key], where), where)
    if "preprocess" in data:
        name = _choice(data["preprocess"], f"{source}: preprocess", tuple(PRESETS))
        for key, value in PRESETS[name].items():
            out.setdefault(key, (value, f"{source}: preprocess {name}"))
    return out


def preset_level(name: str, source: str) -> Level:
    """The values of preset ``name`` (see :data:`PRESETS`), each from ``source``."""
    if name not in PRESETS:
        raise OccludeError(
            f"unknown preprocess preset {name!r}: use one of {', '.join(PRESETS)}", params=("preprocess",)
        )
    return {key: (value, source) for key, value in PRESETS[name].items()}


# ------------------------------------------------------------------------ Hugging Face and timm configs


def _hf_size(value, where: str, square: bool) -> dict:
    """transformers' ``size`` / ``crop_size`` as a dict: {"height", "width"}, {"shortest_edge"}, ...; an int or a
    list (configs of older transformers) as transformers reads them (``square``: an int is height = width)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return {"height": value, "width": value} if square else {"shortest_edge": value}
    if isinstance(value, list) and len(value) == 2:
        return {"height": value[0], "width": value[1]}
    raise OccludeError(f'{where} must be a size such as {{"height": 224, "width": 224}}, got {json.dumps(value)[:80]}')


def hf_processor_level(cfg: dict, name: str = HF_PROCESSOR) -> Level:
    """What a transformers image processor's ``preprocessor_config.json`` says, as transformers applies it:
    RGB, NCHW ``pixel_values``; ``size`` {"height", "width"} stretches the photo (then ``crop_size`` is cut when
    ``do_center_crop``); {"shortest_edge": S} resizes the short side to S, then cuts ``crop_size``; ConvNeXt's
    ``crop_pct`` resizes the short side to ``int(S / crop_pct)`` and cuts S x S (below 384; from 384 it
    stretches to S x S); ``resample`` is the PIL filter; ``rescale_factor`` and ``image_mean``/``image_std`` are
    the scale, mean and std (when ``do_rescale``/``do_normalize``); the crop starts at ``margin // 2``; the
    resize is the ``torch`` resampler's, as transformers 5's default (torchvision) backend resizes."""
    keys = {"do_resize", "size", "crop_size", "image_mean", "image_std", "rescale_factor", "resample", "crop_pct"}
    if not keys & set(cfg):
        return {}
    out: Level = {}

    def put(key: str, value, *what: str) -> None:
        out[key] = (value, f"{name}: {', '.join(what)}")

    put("layout", "NCHW", "transformers' pixel_values")
    put("color", "rgb", "transformers' RGB images")
    if _flag(cfg.get("do_rescale", True), f"{name}: do_rescale"):
        put("scale", _scale(cfg.get("rescale_factor", 1 / 255), f"{name}: rescale_factor"), "rescale_factor")
    else:
        put("scale", 1.0, "do_rescale false")
    if _flag(cfg.get("do_normalize", True), f"{name}: do_normalize"):
        for key, theirs in (("mean", "image_mean"), ("std", "image_std")):
            if theirs in cfg:
                put(key, _numbers(cfg[theirs], f"{name}: {theirs}", nonzero=key == "std"), theirs)
    else:
        put("mean", [0.0], "do_normalize false")
        put("std", [1.0], "do_normalize false")
    if "resample" in cfg:
        put("interpolation", _pil_filter(cfg["resample"], f"{name}: resample"), "resample")
    # transformers 5's image processors resize uint8 tensors with torchvision (torch's kernels); its Pil backend,
    # the processors of transformers 4, is within two levels of it. Nearest and lanczos: Pillow's (see
    # resolve_preprocessing), closer to what that backend does than torch's own kernels.
    put("resampler", "torch", "transformers 5's default torchvision backend")
    out.update(_hf_geometry(cfg, name))
    return out


def _pil_filter(value, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value in _PIL_FILTERS:
        return _PIL_FILTERS[value]
    if isinstance(value, int) and value in _NOT_SUPPORTED_FILTERS:
        raise OccludeError(
            f"{where} is {value} (PIL {_NOT_SUPPORTED_FILTERS[value]}): occlude resizes with nearest (0), "
            "lanczos (1), bilinear (2) or bicubic (3)"
        )
    raise OccludeError(f"{where} must be a PIL filter number 0 to 3, got {json.dumps(value)[:80]}")


def _hf_geometry(cfg: dict, name: str) -> Level:
    """The size, resize and crop of a transformers image processor (see :func:`hf_processor_level`)."""
    out: Level = {}

    def put(key: str, value, what: str) -> None:
        out[key] = (value, f"{name}: {what}")

    crop_pct = cfg.get("crop_pct")
    do_crop = bool(cfg.get("do_center_crop", False))
    do_resize = _flag(cfg.get("do_resize", True), f"{name}: do_resize")
    if not do_resize or "size" not in cfg:
        if do_crop and "crop_size" in cfg:
            put(
                "size", _size(_hf_size(cfg["crop_size"], f"{name}: crop_size", True), f"{name}: crop_size"), "crop_size"
            )
        if not do_resize:  # transformers keeps each photo's own size: no resize occlude can take from the file
            what = "cuts crop_size from" if do_crop and "crop_size" in cfg else "passes"
            put("resize_error", f"{name}: do_resize false: transformers {what} each photo at its own size", "do_resize")
        return out
    size = _hf_size(cfg["size"], f"{name}: size", square=not (do_crop or crop_pct is not None))
    crop = _size(_hf_size(cfg["crop_size"], f"{name}: crop_size", True), f"{name}: crop_size") if do_crop else None
    put("crop_offset", "floor", "transformers' center crop (margin // 2)")
    if "height" in size and "width" in size:
        stretch = _size(size, f"{name}: size")
        put("resize", "stretch", "size")
        if crop and crop != stretch:
            put("size", crop, "crop_size")
            put("resize_size", stretch, "size")
        else:
            put("size", stretch, "size")
        return out
    if "shortest_edge" not in size or "longest_edge" in size or len(size) != 1:
        keys = ", ".join(sorted(map(str, size)))
        put("resize_error", f"{name}: size {{{keys}}} keeps no fixed input size", "size")
        return out
    short = _pixels(size["shortest_edge"], f"{name}: size.shortest_edge")
    convnext = str(cfg.get("image_processor_type") or "").startswith("ConvNext")
    if crop_pct is not None and convnext and short >= 384:  # ConvNeXt warps from 384 on
        put("resize", "stretch", "size.shortest_edge >= 384 (ConvNeXt)")
        put("size", [short, short], "size.shortest_edge")
    elif crop_pct is not None and (convnext or crop):
        pct = _number(crop_pct, f"{name}: crop_pct", positive=True)
        put("resize_short", int(short / pct), "int(size.shortest_edge / crop_pct)")
        if crop and not convnext:
            put("size", crop, "crop_size")
        else:
            put("size", [short, short], "size.shortest_edge")
    elif crop:
        put("resize_short", short, "size.shortest_edge")
        put("size", crop, "crop_size")
    else:
        put("resize_error", f"{name}: size.shortest_edge without a center crop keeps no fixed input size", "size")
    return out


def timm_level(cfg: dict, name: str = CONFIG_JSON) -> Level:
    """What a timm ``config.json`` says (its ``pretrained_cfg``, or the older flat form), as timm's
    ``resolve_data_config`` and ``create_transform`` apply it: ``input_size`` (C, H, W); ``interpolation``
    (default bicubic); ``mean``/``std`` (default ImageNet's); ``crop_pct`` (default 0.875) and ``crop_mode``:
    center resizes the short side to ``floor(H / crop_pct)`` and cuts H x W, squash stretches to
    ``floor(H / crop_pct)`` x ``floor(W / crop_pct)`` and cuts (border is not supported); pixel / 255, RGB,
    NCHW, the crop starting at ``round(margin / 2)``."""
    pretrained = timm_pretrained_cfg(cfg)
    if pretrained is None:
        return {}
    base = "pretrained_cfg." if isinstance(cfg.get("pretrained_cfg"), dict) else ""
    out: Level = {}

    def put(key: str, value, what: str) -> None:
        out[key] = (value, f"{name}: {what}")

    put("layout", "NCHW", "timm (channels first)")
    put("scale", 1 / 255, "timm (ToTensor: pixel / 255)")
    channels, height, width = 3, 224, 224
    if "input_size" in pretrained:
        given = pretrained["input_size"]
        if not (isinstance(given, list) and len(given) == 3):
            raise OccludeError(
                f"{name}: {base}input_size must be [channels, height, width], got {json.dumps(given)[:80]}"
            )
        channels = _pixels(given[0], f"{name}: {base}input_size")
        height, width = (_pixels(v, f"{name}: {base}input_size") for v in given[1:])
        put("size", [height, width], f"{base}input_size")
    if channels == 1:
        put("color", "gray", f"{base}input_size (1 channel)")
    else:
        put("color", "rgb", "timm (RGB)")
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        if pretrained.get(key) is not None:
            put(key, _numbers(pretrained[key], f"{name}: {base}{key}", nonzero=key == "std"), f"{base}{key}")
        else:
            put(key, default, f"timm's default {key} (ImageNet)")
    interpolation = pretrained.get("interpolation") or "bicubic"
    put(
        "interpolation",
        _choice(interpolation, f"{name}: {base}interpolation", tuple(_PIL_FILTERS.values())),
        f"{base}interpolation" if pretrained.get("interpolation") else "timm's default interpolation",
    )
    pct = _number(pretrained.get("crop_pct") or 0.875, f"{name}: {base}crop_pct", positive=True)
    where = f"{base}crop_pct" if pretrained.get("crop_pct") else "timm's default crop_pct 0.875"
    mode = pretrained.get("crop_mode") or "center"
    put("crop_offset", "round", "timm's CenterCrop (torchvision: round(margin / 2))")
    put("resampler", "pil", "timm (transforms of PIL images: Pillow)")
    if mode == "center" and height == width:
        put("resize_short", math.floor(height / pct), f"floor({base}input_size / crop_pct) ({where})")
    elif mode == "squash":
        put("resize_size", [math.floor(height / pct), math.floor(width / pct)], f"{base}crop_mode squash ({where})")
    else:
        put(
            "resize_error",
            f"{name}: {base}crop_mode {str(mode)[:40]!r} with input {height}x{width} is not supported",
            f"{base}crop_mode",
        )
    return out


def timm_pretrained_cfg(cfg: dict) -> Optional[dict]:
    """timm's pretrained_cfg in a ``config.json``: its ``pretrained_cfg`` (timm 0.9 on), or the whole flat
    config of older timm (``architecture`` with ``input_size`` beside it); None for other configs."""
    if isinstance(cfg.get("pretrained_cfg"), dict) and ("architecture" in cfg or "input_size" in cfg["pretrained_cfg"]):
        return cfg["pretrained_cfg"]
    if "architecture" in cfg and "input_size" in cfg:
        return cfg
    return None


def hf_labels(cfg: dict, name: str = CONFIG_JSON) -> Optional[List[str]]:
    """The class names of a transformers ``config.json``'s ``id2label`` ({"0": "tench", ...}), in index order;
    None without one, or when every name is transformers' placeholder ``LABEL_i``."""
    id2label = cfg.get("id2label")
    if id2label is None:
        return None
    if not isinstance(id2label, dict) or not id2label:
        raise OccludeError(f"{name}: id2label must be an object of index -> name")
    for key in id2label:  # "0", "1", ... as transformers writes them; int() would also read " 1", "+1", "01"
        if not (key.isascii() and key.isdigit() and str(int(key)) == key):
            raise OccludeError(f"{name}: id2label keys must be class indices 0, 1, ..., got {json.dumps(key)[:80]}")
    twice = getattr(id2label, "twice", ())
    if twice:
        raise OccludeError(f"{name}: id2label names class {twice[0]} twice")
    indexed = {int(k): v for k, v in id2label.items()}
    if sorted(indexed) != list(range(len(indexed))):
        raise OccludeError(f"{name}: id2label must name every class 0..{len(indexed) - 1} once")
    names = [indexed[i] for i in range(len(indexed))]
    if not all(isinstance(n, str) for n in names):
        raise OccludeError(f"{name}: id2label names must be strings")
    return None if names == [f"LABEL_{i}" for i in range(len(names))] else names


def _label_list(value, where: str) -> List[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise OccludeError(f"{where} must be a list of class names (strings)")
    return list(value)


# ------------------------------------------------------------------------------------------ what's read


@dataclass(frozen=True)
class ModelFiles:
    """What the files beside a model say: ``levels`` (name, values) in order of precedence (occlude.json, then
    preprocessor_config.json, then timm's config.json), the class names and where they came from, and whether
    a preset asks for the ImageNet-1k names (``preset_labels``)."""

    folders: Tuple[Path, ...] = ()
    found: Tuple[str, ...] = ()
    levels: Tuple[Tuple[str, Level], ...] = ()
    labels: Optional[List[str]] = field(default=None, repr=False)
    labels_source: Optional[str] = None
    preset_labels: Optional[str] = None

    def describe(self) -> dict:
        return {"files": list(self.found), "labels_source": self.labels_source}


def read_model_files(model_file) -> ModelFiles:
    """The files beside ``model_file`` (see :func:`companion_folders`): occlude.json (occlude's own, keys as
    the ``occlude.preprocess`` metadata plus ``labels`` and ``preprocess``), Hugging Face
    ``preprocessor_config.json`` and ``config.json`` (``id2label``), and timm's ``config.json``
    (``pretrained_cfg``, ``label_names``)."""
    folders = companion_folders(Path(model_file))
    documents: Dict[str, Tuple[dict, str]] = {}
    for filename in (OCCLUDE_JSON, HF_PROCESSOR, CONFIG_JSON):
        for folder in folders:
            data = read_json(folder / filename)
            if data is not None:
                shown = filename if folder == folders[0] else f"{folder.name}/{filename}"
                documents[filename] = (data, shown)
                break
    levels: List[Tuple[str, Level]] = []
    candidates: List[Tuple[List[str], str]] = []
    preset_labels = None
    if OCCLUDE_JSON in documents:
        data, shown = documents[OCCLUDE_JSON]
        levels.append((shown, canonical(data, shown, strict=True)))
        if "labels" in data:
            labels = data["labels"]
            if labels == IMAGENET:
                candidates.append((imagenet_labels(), f"{shown}: labels imagenet (occlude's ImageNet-1k list)"))
            else:
                candidates.append((_label_list(labels, f"{shown}: labels"), f"{shown}: labels"))
        preset_labels = PRESET_LABELS.get(str(data.get("preprocess")))
    if HF_PROCESSOR in documents:
        data, shown = documents[HF_PROCESSOR]
        levels.append((shown, hf_processor_level(data, shown)))
    if CONFIG_JSON in documents:
        data, shown = documents[CONFIG_JSON]
        names = hf_labels(data, shown)
        if names is not None:
            candidates.append((names, f"{shown}: id2label"))
        pretrained = timm_pretrained_cfg(data)
        if pretrained is not None:
            levels.append((f"{shown} (timm)", timm_level(data, shown)))
            for holder, key in ((data, "label_names"), (pretrained, "label_names"), (pretrained, "labels")):
                if holder.get(key) is not None:
                    candidates.append((_label_list(holder[key], f"{shown}: {key}"), f"{shown}: {key}"))
                    break
    labels, source = candidates[0] if candidates else (None, None)
    return ModelFiles(
        folders=tuple(folders),
        found=tuple(shown for _, shown in documents.values()),
        levels=tuple(levels),
        labels=labels,
        labels_source=source,
        preset_labels=preset_labels,
    )


def imagenet_labels() -> List[str]:
    """The 1,000 ImageNet-1k class names shipped with occlude (``loaders/data/imagenet1k.txt``: torchvision's
    list, BSD-3-Clause; see ``imagenet1k.LICENSE`` beside it), in index order: 0 tench ... 999 toilet tissue."""
    text = resources.files("occlude_cli.loaders").joinpath("data/imagenet1k.txt").read_text(encoding="utf-8")
    return text.splitlines()
