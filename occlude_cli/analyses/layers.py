"""Occlusion inside the network: which channels of an inner tensor matter, and where on its feature map.

The model is cut at an inner tensor (:func:`occlude_cli.inference.cuts.split_model`, verified on the spot):
the prefix (input -> tensor) runs once per image, and only the suffix (tensor -> output) runs per occluded
channel or feature-map window, so occluding all 480 channels of a mid EfficientNet tensor costs 480 suffix
passes, not 480 full passes.

* :func:`channel_importance`: replace one channel at a time by zero, its own spatial mean, or its dataset
  mean, and record the drop of the target score (positive: the channel supported the class).
* :func:`spatial_occlusion`: the ordinary occlusion engine (:func:`core.engine.occlusion_sensitivity`) run
  on the feature tensor, with the suffix as the score function: a map on the feature grid.
* :func:`aggregate_channels`: the mean drop per channel over a folder, with spread and a per-class view.

Library only: writes no file, draws nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.casting import cast_checked
from ..core.engine import Occlusion, occlusion_sensitivity, score_perturbations
from ..errors import OccludeError
from ..loaders.images import PreparedImage, Preprocessing
from ..loaders.model import Head, OnnxClassifier, resolve_target
from .options import ExplainOptions
from .preprocessing import resolve_preprocessing

REPLACEMENTS = {
    "zero": "the channel becomes 0 everywhere (after a ReLU: 'switched off')",
    "mean": "the channel becomes its own spatial mean on this image (keeps its level, removes its pattern)",
    "dataset": "the channel becomes its mean over every input image and position (a first pass computes it)",
}


def check_replacement(replacement: str) -> str:
    text = str(replacement).strip().lower()
    if text not in REPLACEMENTS:
        raise OccludeError(f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}")
    return text


@dataclass
class LayerModel:
    """A classifier cut at ``tensor``: the prefix and suffix sessions, verified against the whole model.

    Feature tensors are handled one sample at a time without the batch axis: shape ``feature_shape``,
    channels on ``channel_axis`` (0 for NCHW feature maps, the usual ONNX layout).
    """

    classifier: OnnxClassifier
    tensor: str
    prefix: object = field(repr=False)  # onnxruntime.InferenceSession
    suffix: object = field(repr=False)
    feature_shape: Tuple[int, ...] = ()
    channel_axis: int = 0
    max_difference: float = 0.0  # largest |prefix->suffix - whole model| seen by the verification
    fixed_batch: bool = False  # the suffix takes one sample at a time

    @property
    def channels(self) -> int:
        return int(self.feature_shape[self.channel_axis])

    @property
    def spatial_axes(self) -> Tuple[int, ...]:
        return tuple(a for a in range(len(self.feature_shape)) if a != self.channel_axis)

    def features(self, sample: np.ndarray) -> np.ndarray:
        """The cut tensor for one model input (no batch axis), float32 without the batch axis."""
        feeds = {self.classifier.input.name: cast_checked(sample[None], self.classifier.dtype, "the model input")}
        try:
            (out,) = self.prefix.run([self.tensor], feeds)  # type: ignore[attr-defined]
        except Exception as exc:
            raise OccludeError(f"the prefix up to {self.tensor!r} failed: {_first_line(exc)}") from None
        return np.asarray(out)[0]

    def run_suffix(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs (batch, classes) of the suffix for a batch of feature tensors."""
        batch = np.ascontiguousarray(batch)
        if self.fixed_batch and len(batch) != 1:
            return np.concatenate([self.run_suffix(batch[i : i + 1]) for i in range(len(batch))])
        name = self.classifier.output.name
        try:
            (out,) = self.suffix.run([name], {self.tensor: batch})  # type: ignore[attr-defined]
        except Exception as exc:
            raise OccludeError(f"the suffix after {self.tensor!r} failed: {_first_line(exc)}") from None
        out = np.asarray(out)
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        return out

    def describe(self) -> dict:
        return {
            "tensor": self.tensor,
            "shape": list(self.feature_shape),
            "channel_axis": self.channel_axis,
            "channels": self.channels,
            "verified_max_abs_difference": self.max_difference,
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def open_layer(
    classifier: Union[str, Path, OnnxClassifier],
    tensor: str,
    *,
    channel_axis: int = 0,
    sample: Optional[np.ndarray] = None,
) -> LayerModel:
    """Cut ``classifier``'s model at ``tensor`` and verify the cut: prefix then suffix must give the whole
    model's output on ``sample`` (one model input without batch axis; default a seeded random one).

    Raises OccludeError naming the tensor when it is unknown or the cut is invalid (e.g. a skip connection
    crosses it); the message lists the nearest valid cut points (see ``inference.cuts.valid_cut_points``).
    ``channel_axis``: the channel axis of one feature sample (0: NCHW feature maps; -1 for channel-last).
    """
    from ..inference.cuts import split_model, verify_split

    if not isinstance(classifier, OnnxClassifier):
        classifier = OnnxClassifier(classifier)
    split = split_model(classifier.path, tensor)
    prefix, suffix = split.sessions(providers=classifier.providers)
    if sample is None:
        shape = [d if d else 1 for d in classifier.input_shape[1:]]
        rng = np.random.default_rng(0)
        sample = (rng.random(shape) if np.dtype(classifier.dtype).kind == "f" else rng.integers(0, 128, shape)).astype(
            classifier.dtype
        )
    worst = verify_split(split, classifier.session, sample[None], providers=classifier.providers)
    layer = LayerModel(classifier, tensor, prefix, suffix)
    features = layer.features(sample)
    if features.ndim < 2:
        raise OccludeError(
            f"tensor {tensor!r} has shape {list(features.shape)} per sample: channel occlusion needs "
            "channels and at least one spatial axis (e.g. C x H x W); cut earlier"
        )
    axis = int(channel_axis) % features.ndim if -features.ndim <= int(channel_axis) < features.ndim else None
    if axis is None:
        raise OccludeError(f"channel_axis {channel_axis} is out of range for a {features.ndim}-D feature tensor")
    declared = suffix.get_inputs()[0].shape
    layer.feature_shape = tuple(int(d) for d in features.shape)
    layer.channel_axis = axis
    layer.max_difference = float(worst)
    # one sample per call where the suffix declares it, or where the model's images mix within a batch
    # (dynamic quantisation: see OnnxClassifier.batching); batch 1 in the whole model, not rewritten, too
    layer.fixed_batch = (isinstance(declared[0], int) and declared[0] == 1) or classifier.fixed_batch == 1
    return layer


def _head_and_target(
    layer: LayerModel,
    sample: np.ndarray,
    features: np.ndarray,
    options: ExplainOptions,
    labels: Optional[Sequence[str]],
) -> Tuple[Head, np.ndarray, int]:
    raw = layer.run_suffix(features[None])
    if not np.all(np.isfinite(raw)):
        raise OccludeError("the model's output for the unoccluded image is not finite (NaN or inf)")
    head = layer.classifier.head(options.score, raw)
    original = head.transform(raw)[0]
    if options.target is not None:
        target = resolve_target(options.target, labels, raw.shape[1])
    else:
        target = int(np.argmax(original))
    return head, original, target


def _start(layer, image, options, overrides, preprocessing, labels):
    """What channel and spatial occlusion both begin with: the checked options, the labels, the prepared
    image, its features at the cut (the prefix runs once here), and the head, original scores and target."""
    from .modality import prepare_input

    options = _options(options, overrides)
    labels = list(labels) if labels is not None else layer.classifier.labels
    prepared, _ = prepare_input(layer.classifier, image, options, preprocessing)
    features = layer.features(prepared.model_input)
    head, original, target = _head_and_target(layer, prepared.model_input, features, options, labels)
    return options, labels, prepared, features, head, original, target


def _options(options: Optional[ExplainOptions], overrides: dict) -> ExplainOptions:
    """ExplainOptions with keyword overrides (``target=1``, ``score="logit"``), checked."""
    options = options or ExplainOptions()
    unknown = set(overrides) - set(ExplainOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return ExplainOptions(**{**options.__dict__, **overrides}).checked()


def _fill_values(replacement: str, features: np.ndarray, axis: int, dataset_mean: Optional[np.ndarray]) -> np.ndarray:
    """(C,) value each channel is replaced by."""
    channels = features.shape[axis]
    if replacement == "zero":
        return np.zeros(channels, dtype=np.float64)
    if replacement == "mean":
        return np.moveaxis(features, axis, 0).reshape(channels, -1).mean(axis=1, dtype=np.float64)
    if dataset_mean is None:
        raise OccludeError("replacement 'dataset' needs dataset_mean (see dataset_channel_means)")
    dataset_mean = np.asarray(dataset_mean, dtype=np.float64).reshape(-1)
    if dataset_mean.shape != (channels,):
        raise OccludeError(f"dataset_mean has {dataset_mean.size} values; the tensor has {channels} channels")
    return dataset_mean


@dataclass
class ChannelImportance:
    """One image: the target score's drop when each channel of the cut tensor is replaced."""

    path: Optional[str]
    tensor: str
    replacement: str
    target: int
    label: Optional[str]
    predicted: int
    score_kind: str
    original_score: float
    channels: np.ndarray  # (K,) channel indices
    drops: np.ndarray  # (K,) original - replaced, target class
    flips: np.ndarray  # (K,) bool: top-1 class changes when the channel is replaced
    activation: np.ndarray  # (C,) mean activation of every channel on this image
    suffix_passes: int
    seconds: float

    def ranking(self) -> np.ndarray:
        """Positions in ``channels`` from most to least important (stable)."""
        return np.argsort(-self.drops, kind="stable")


def channel_importance(
    layer: LayerModel,
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    replacement: str = "zero",
    channels: Optional[Sequence[int]] = None,
    dataset_mean: Optional[np.ndarray] = None,
    batch_size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    **overrides,
) -> Tuple[ChannelImportance, PreparedImage, np.ndarray]:
    """Replace each channel (all, or ``channels``) of the cut tensor in turn and score the suffix.

    The prefix runs once; the suffix once for the original features and once per channel, in batches
    through the shared perturbation loop. ``options`` gives the target and score kind (patch, stride and
    baseline are not used; keyword ``overrides`` such as ``target=1, score="logit"`` set its fields). Returns the
    result, the prepared image and the (unbatched) feature tensor, which
    the caller may keep to draw activation maps.
    """
    replacement = check_replacement(replacement)
    started = time.perf_counter()
    options, labels, prepared, features, head, original, target = _start(
        layer, image, options, overrides, preprocessing, labels
    )
    axis = layer.channel_axis
    count = features.shape[axis]
    chosen = check_channels(layer, channels, count)
    fill = cast_checked(_fill_values(replacement, features, axis, dataset_mean), features.dtype, "the replacement")
    plain = chosen.tolist()
    moved = np.moveaxis(features, axis, 0)
    written: Dict[int, int] = {}

    def replace(buffer: np.ndarray, row: int, i: int) -> None:
        view = np.moveaxis(buffer[row], axis, 0)  # a view: writes go into the buffer
        previous = written.get(row)
        if previous is not None:
            view[previous] = moved[previous]
        view[plain[i]] = fill[plain[i]]
        written[row] = plain[i]

    def score(batch: np.ndarray) -> np.ndarray:
        return head.transform(layer.run_suffix(batch))

    rows = batch_size or _default_batch(features.nbytes)
    scores = score_perturbations(features, len(plain), replace, score, batch_size=rows, progress=progress)
    predicted = int(np.argmax(original))
    activation = moved.reshape(count, -1).mean(axis=1, dtype=np.float64)
    result = ChannelImportance(
        path=str(prepared.path) if prepared.path is not None else None,
        tensor=layer.tensor,
        replacement=replacement,
        target=target,
        label=labels[target] if labels and target < len(labels) else None,
        predicted=predicted,
        score_kind=head.kind,
        original_score=float(original[target]),
        channels=chosen,
        drops=original[target] - scores[:, target],
        flips=np.argmax(scores, axis=1) != predicted,
        activation=activation,
        suffix_passes=len(plain) + 1,
        seconds=time.perf_counter() - started,
    )
    return result, prepared, features


def check_channels(layer: LayerModel, channels: Optional[Sequence[int]], count: Optional[int] = None) -> np.ndarray:
    """The channels to replace (all when ``channels`` is None) as an index array, checked against the cut
    tensor's channel count (``count``, default the layer's) before any image is read."""
    count = layer.channels if count is None else int(count)
    chosen = np.arange(count) if channels is None else np.asarray(list(channels), dtype=np.int64)
    if chosen.size == 0:
        raise OccludeError("channels is empty: name at least one channel", params=("channels",))
    if chosen.min() < 0 or chosen.max() >= count:
        raise OccludeError(
            f"channels must be in 0..{count - 1}: tensor {layer.tensor!r} has {count} channels, "
            f"got {', '.join(str(c) for c in chosen.tolist() if not 0 <= c < count)}",
            params=("channels",),
        )
    return chosen


def _default_batch(sample_bytes: int) -> int:
    fit = max(1, (16 << 20) // max(1, sample_bytes))
    return int(max(1, min(64, 2 ** int(np.log2(fit)))))


def dataset_channel_means(
    layer: LayerModel, images: Sequence, preprocessing: Optional[Preprocessing] = None
) -> np.ndarray:
    """(C,) mean of each channel over every image and position: the 'dataset' replacement (one prefix pass
    per image; photos, DICOM slices and NIfTI volumes). Images that cannot be read raise OccludeError naming
    them."""
    from .modality import prepare_input

    total = np.zeros(layer.channels)
    for image in images:
        prepared, _ = prepare_input(layer.classifier, image, None, preprocessing)
        features = np.moveaxis(layer.features(prepared.model_input), layer.channel_axis, 0)
        total += features.reshape(layer.channels, -1).mean(axis=1, dtype=np.float64)
    if not len(images):
        raise OccludeError("no images to compute the dataset mean from")
    return total / len(images)


# ------------------------------------------------------------------------------------- aggregation


@dataclass
class ChannelSummary:
    """Channel importance over many images: mean drop with spread, flip rate, and the same per class."""

    tensor: str
    replacement: str
    channels: np.ndarray  # (K,)
    images: int
    mean: np.ndarray  # (K,) mean drop
    std: np.ndarray  # (K,) population standard deviation of the drop (0 for one image)
    median: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    flip_rate: np.ndarray  # (K,) share of images whose top-1 changes
    activation: np.ndarray  # (K,) mean activation
    per_class: Dict[int, dict] = field(default_factory=dict)  # class -> {"images", "label", "mean" (K,)}

    def ranking(self) -> np.ndarray:
        return np.argsort(-self.mean, kind="stable")


def aggregate_channels(results: Sequence[ChannelImportance]) -> ChannelSummary:
    """Mean, spread and flip rate of each channel's drop over images (all must cover the same channels of
    the same tensor); per class: the mean drop over the images whose target is that class."""
    if not results:
        raise OccludeError("no channel results to aggregate")
    first = results[0]
    for r in results[1:]:
        if r.tensor != first.tensor or not np.array_equal(r.channels, first.channels):
            raise OccludeError("channel results of different tensors or channel sets cannot be aggregated")
    drops = np.stack([r.drops for r in results])
    flips = np.stack([r.flips for r in results]).astype(np.float64)
    activation = np.stack([r.activation[r.channels] for r in results])
    per_class: Dict[int, dict] = {}
    for cls in sorted({r.target for r in results}):
        rows = [i for i, r in enumerate(results) if r.target == cls]
        per_class[cls] = {"images": len(rows), "label": results[rows[0]].label, "mean": drops[rows].mean(axis=0)}
    return ChannelSummary(
        tensor=first.tensor,
        replacement=first.replacement,
        channels=first.channels,
        images=len(results),
        mean=drops.mean(axis=0),
        std=drops.std(axis=0),
        median=np.median(drops, axis=0),
        minimum=drops.min(axis=0),
        maximum=drops.max(axis=0),
        flip_rate=flips.mean(axis=0),
        activation=activation.mean(axis=0),
        per_class=per_class,
    )


# ---------------------------------------------------------------------------------- spatial windows


@dataclass
class SpatialOcclusion:
    """An occlusion map on the feature grid of the cut tensor (every channel occluded inside a window)."""

    path: Optional[str]
    tensor: str
    target: int
    label: Optional[str]
    score_kind: str
    occlusion: Occlusion  # windows in feature-grid cells
    map: np.ndarray  # feature-grid map of the target, shape = the tensor's spatial shape
    patch: Tuple[int, ...]
    stride: Tuple[int, ...]
    replacement: str
    seconds: float


def spatial_occlusion(
    layer: LayerModel,
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    patch: Union[int, Sequence[int]] = 1,
    stride: Optional[Union[int, Sequence[int]]] = None,
    replacement: str = "zero",
    dataset_mean: Optional[np.ndarray] = None,
    batch_size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    **overrides,
) -> Tuple[SpatialOcclusion, PreparedImage]:
    """Slide a window of ``patch`` feature cells over the cut tensor's spatial grid (all channels at once),
    replacing it by ``replacement`` (zero, each channel's spatial mean, or its dataset mean), and score the
    suffix: the engine's occlusion map computed on the feature map. ``stride`` defaults to the patch
    (no overlap: one window per cell for patch 1)."""
    replacement = check_replacement(replacement)
    patch_t, stride_t = feature_windows(layer, patch, stride)  # before the image is read
    started = time.perf_counter()
    options, labels, prepared, features, head, original, target = _start(
        layer, image, options, overrides, preprocessing, labels
    )
    axes = layer.spatial_axes
    fill = _fill_values(replacement, features, layer.channel_axis, dataset_mean)
    shape = [1] * features.ndim
    shape[layer.channel_axis] = -1
    baseline = cast_checked(np.broadcast_to(fill.reshape(shape), features.shape), features.dtype, "the replacement")

    def score(batch: np.ndarray) -> np.ndarray:
        return head.transform(layer.run_suffix(batch))

    occlusion = occlusion_sensitivity(
        features,
        score,
        patch=patch_t,
        stride=stride_t,
        baseline=baseline,
        spatial_axes=axes,
        batch_size=batch_size or _default_batch(features.nbytes),
        progress=progress,
        original_scores=original,
    )
    result = SpatialOcclusion(
        path=str(prepared.path) if prepared.path is not None else None,
        tensor=layer.tensor,
        target=target,
        label=labels[target] if labels and target < len(labels) else None,
        score_kind=head.kind,
        occlusion=occlusion,
        map=occlusion.attribution(target),
        patch=patch_t,
        stride=stride_t,
        replacement=replacement,
        seconds=time.perf_counter() - started,
    )
    return result, prepared


def feature_windows(
    layer: LayerModel, patch: Union[int, Sequence[int]], stride: Optional[Union[int, Sequence[int]]]
) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The (patch, stride) of windows of ``layer``'s feature grid, one value per spatial axis, in feature
    cells (``stride`` default: the patch), checked against the grid before any image is read."""
    axes = layer.spatial_axes
    d = len(axes)
    patch_t = _per_axis(patch, d)
    stride_t = patch_t if stride is None else _per_axis(stride, d)
    if len(patch_t) != d or len(stride_t) != d:
        raise OccludeError(f"patch and stride need {d} values for the {d}-D feature grid of {layer.tensor!r}")
    grid = tuple(int(layer.feature_shape[a]) for a in axes)
    for p, s, g in zip(patch_t, stride_t, grid):
        if p > g:
            raise OccludeError(
                f"patch {p} is larger than the feature grid of {layer.tensor!r} ({'x'.join(map(str, grid))} cells)",
                params=("patch",),
            )
        if s > p:
            raise OccludeError(
                f"stride {s} is larger than the patch {p}: some feature cells would never be replaced",
                params=("stride",),
            )
    return patch_t, stride_t


def _per_axis(value: Union[int, Sequence[int]], d: int) -> Tuple[int, ...]:
    """One int per spatial axis from an int or a sequence."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    return tuple(int(v) for v in value)


def upsample_to_input(values: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A 2-D feature-grid array stretched over the model input (H, W): each cell covers H/h x W/w input pixels
    (cell centres aligned, bilinear), which is how the grid sits on the image in a convolutional network
    with 'same' padding. The receptive field of a cell is larger than the area it is drawn on."""
    from PIL import Image

    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise OccludeError(f"only 2-D feature grids can be drawn on the image, got shape {values.shape}")
    height, width = size
    return np.asarray(Image.fromarray(values, "F").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def inner_tensors(
    classifier: Union[str, Path, OnnxClassifier], input_shape: Optional[Sequence[int]] = None
) -> List[dict]:
    """Every tensor computed inside the model, in topological order: name, op, shape, and whether the model can
    be cut there (``valid_cut``). ``input_shape``: the full input shape, to make symbolic dims concrete (None:
    they stay None)."""
    from ..inference.cuts import model_tensors, valid_cut_points

    if not isinstance(classifier, OnnxClassifier):
        classifier = OnnxClassifier(classifier)
    valid = set(valid_cut_points(classifier.path))
    rows = []
    shapes = {classifier.input.name: [int(d) for d in input_shape]} if input_shape is not None else None
    for info in model_tensors(classifier.path, shapes):
        rows.append(
            {
                "name": info.name,
                "op": info.op_type,
                "shape": info.shape,
                "dtype": info.dtype,
                "valid_cut": info.name in valid,
            }
        )
    return rows


@dataclass
class LayerListing:
    """Every inner tensor of a model (``document``: what ``occlude info --layers --json`` prints) and whether the
    receptive-field analysis gave each its field."""

    document: dict
    receptive_fields: bool


def describe_layers(model, *, device: str = "auto") -> LayerListing:
    """Every inner tensor of ``model`` with its op and shape, whether the model can be cut there (a valid
    ``layer``), and its receptive field on the input where the receptive-field analysis knows it."""
    classifier = model if isinstance(model, OnnxClassifier) else OnnxClassifier(model, device=device)
    try:
        preprocessing = resolve_preprocessing(classifier)
        size = list(preprocessing.size)  # (H, W), or (D, H, W) for 3-D models
        shape: Optional[List[int]] = (
            [1, preprocessing.channels, *size]
            if preprocessing.layout.startswith("NC")
            else [1, *size, preprocessing.channels]
        )
    except OccludeError:  # dynamic height/width and no metadata: symbolic dims stay unknown ('?')
        shape = None
    rows = inner_tensors(classifier, shape)
    fields = _receptive_fields(classifier.path, shape) if shape is not None else None
    for row in rows:
        row["receptive_field"] = fields.get(row["name"]) if fields is not None else None
    return LayerListing({"model": str(model), "input_shape": shape, "tensors": rows}, fields is not None)


def _receptive_fields(path: Path, shape: List[int]) -> Optional[dict]:
    """name -> {"size": [h, w], "stride": [h, w]} from the receptive-field analysis, or None when it fails."""
    from ..inference import receptive

    try:
        tensors = receptive.local_tensors(str(path), input_shape=shape)
    except Exception:  # the analysis is optional here: no column rather than no listing
        return None
    return {
        name: {"size": [t.rf[0].size, t.rf[1].size], "stride": [t.rf[0].stride, t.rf[1].stride]}
        for name, t in tensors.items()
    }
