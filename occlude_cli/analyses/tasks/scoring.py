"""How a run scores a model that is not a classifier: from one unoccluded pass, the task's fixed inputs (the
mask of a segmentation, the target box of a detection, the reference of an embedding) and the engine's
``score(batch)``, one column per class (one for an embedding) so that targets, top-k and class maps work as for
classifiers. The arithmetic is :mod:`.maths`; this module reads the model's outputs and the task's files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import OccludeError
from ...loaders.images import PreparedImage, map_on_original, prepare_image
from ...loaders.model import Head, OnnxClassifier, resolve_target
from ..options import label_count_error
from . import maths
from .spec import typed

Box = Tuple[float, float, float, float]


@dataclass
class TaskScoring:
    """A task's score for one input: ``score(batch)`` -> (batch, classes), the unoccluded scores, the main
    target, the JSON record (``params.task``) and what the overlay draws (a box or a mask, original pixels)."""

    task: str
    score: Callable[[np.ndarray], np.ndarray]
    head: Head
    original: np.ndarray
    main: int
    labels: Optional[List[str]]
    record: dict
    box: Optional[Box] = None
    mask: Optional[np.ndarray] = None  # bool, the original image's size


def task_of(model: OnnxClassifier, options) -> str:
    """The run's task: the one asked for, else what the model's output says (``auto``)."""
    return str(model.task) if options.task == "auto" else str(options.task)


def task_scoring(model: OnnxClassifier, options, prepared: PreparedImage, labels) -> TaskScoring:
    """The score of a segmentation, detection or embedding run on ``prepared`` (see the manual's tasks page)."""
    task = task_of(model, options)
    if len(prepared.preprocessing.size) != 2:
        raise OccludeError(f"task {task} is for 2-D images", params=("task",))
    if task in ("detect", "embed") and str(getattr(options.score, "value", options.score)) not in ("auto", "prob"):
        raise OccludeError(f"score is for classify and segment: task {task} has its own score", params=("score",))
    build = {"segment": _segment, "detect": _detect, "embed": _embed}[task]
    scoring = build(model, options, prepared, list(labels) if labels else None)
    classes = len(scoring.original)
    if task != "embed" and options.top_k > classes:  # never cut to the classes in silence
        raise OccludeError(
            f"top_k {options.top_k} is more than the model's {classes} classes: give at most {classes}",
            params=("top_k",),
        )
    return scoring


def check_before_images(model: OnnxClassifier, options, size: Tuple[int, ...]) -> Optional[int]:
    """What the model's declared output allows to check before any image (``size``: the input's (height, width)):
    the outputs a detect_format boxes run reads exist; a segmentation output is (batch, C, h, w) of the input's size
    or a fixed fraction of it; a YOLO output has the layout of its format; a reference embedding file is a finite
    vector of numbers, of the output's D when it declares it. Returns the classes the output declares (None when it
    does not say, or for an embedding). Dynamic sizes are checked again at each image."""
    task, name = task_of(model, options), model.output.name
    shape = list(model.output.shape or [])
    if task == "segment":
        if shape and len(shape) != 4:
            raise OccludeError(_segment_layout(name, shape), params=("task",))
        if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
            _segment_size(name, (shape[2], shape[3]), size)
        return model.num_classes
    if task == "detect" and options.detect_format == "boxes":
        names = [options.boxes_output, options.scores_output, options.labels_output]
        _outputs(model, names, ("boxes_output", "scores_output", "labels_output"))
        return None
    if task == "detect":
        return _yolo_layout(options.detect_format, name, shape) if shape else None
    if task == "embed" and options.reference_embedding is not None:
        vector = read_reference_embedding(options.reference_embedding)
        _reference_size(vector, _declared_dimensions(shape), options.reference_embedding)
    return None


def _segment_layout(name: str, shape) -> str:
    return f"task segment needs an output (batch, C, h, w); output {name!r} has shape {list(shape)}"


def _segment_size(name: str, output: Tuple[int, int], size: Tuple[int, ...]) -> None:
    """A segmentation output is the input's size or the same whole fraction of both sides."""
    (h, w), (height, width) = output, size[:2]
    if h < 1 or w < 1 or height % h or width % w or height // h != width // w:
        raise OccludeError(
            f"output {name!r} is {h}x{w}: a segmentation output is the input's size {height}x{width} or a fixed "
            "fraction of it; choose task classify, detect or embed for another output",
            params=("task",),
        )


def _yolo_layout(fmt: str, name: str, shape) -> Optional[int]:
    """A YOLO output's declared layout checked; the classes it declares (None when dynamic)."""
    need, axis = (5, 1) if fmt == "yolov8" else (6, 2)
    width = shape[axis] if len(shape) == 3 else None
    if len(shape) != 3 or (isinstance(width, int) and width < need):
        layout = "(1, 4 + classes, N)" if fmt == "yolov8" else "(1, N, 5 + classes)"
        raise OccludeError(
            f"detect_format {fmt} needs an output {layout}; output {name!r} has shape {list(shape)}",
            params=("detect_format",),
        )
    return width - need + 1 if isinstance(width, int) else None


def _outputs(model: OnnxClassifier, names: Sequence[str], params: Sequence[str]) -> None:
    have = [o.name for o in model.session.get_outputs()]
    for name, param in zip(names, params):
        if name not in have:
            raise OccludeError(
                f"{param} {name!r} is not an output of the model; its outputs: {', '.join(have)}", params=(param,)
            )


def _finite(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(raw)):
        raise OccludeError("the model's output for the unoccluded image is not finite (NaN or inf)")
    return raw


# ------------------------------------------------------------------------------------------- segment


def _segment(model: OnnxClassifier, options, prepared: PreparedImage, labels) -> TaskScoring:
    name = model.output.name
    raw = _finite(model.run_outputs(prepared.model_input[None], [name])[0])
    height, width = prepared.preprocessing.size
    if raw.ndim != 4:
        raise OccludeError(_segment_layout(name, raw.shape), params=("task",))
    classes, h, w = raw.shape[1:]
    _segment_size(name, (h, w), (height, width))
    if labels is not None and len(labels) != classes:
        raise label_count_error(labels, classes, model)
    rows = np.moveaxis(raw, 1, -1).reshape(-1, classes)
    head = model.head(options.score, rows)
    head = Head(head.kind, head.requested, f"segment, per pixel: {head.rule}")
    probabilities = maths.per_pixel(raw, head.transform)
    main = _segment_target(options, labels, classes, raw)
    mask, source = _segment_mask(options, prepared, raw, probabilities, head, main)

    def score(batch: np.ndarray) -> np.ndarray:
        maps = maths.per_pixel(model.run_outputs(batch, [name])[0], head.transform)
        return maths.mask_means(maps, mask)

    factor = height // h
    on_input = np.kron(mask, np.ones((factor, factor))) if factor > 1 else mask.astype(np.float64)
    drawn = np.nan_to_num(map_on_original(on_input, prepared.original_size, prepared.crop_box)) > 0.5
    record = {
        "task": "segment",
        "class": main,
        "output_size": [int(h), int(w)],
        "mask": {**source, "area": int(mask.sum()), "pixels": int(h * w)},
        "score": f"mean over the mask of the class's {head.kind} (per pixel)",
    }
    original = maths.mask_means(probabilities, mask)[0]
    return TaskScoring("segment", score, head, original, main, labels, record, mask=drawn)


def _segment_target(options, labels, classes: int, raw: np.ndarray) -> int:
    """The class asked for, else the class (not 0, the background) that covers most pixels."""
    if options.target is not None:
        return resolve_target(options.target, labels, classes)
    if classes == 1:
        return 0
    counts = np.bincount(np.argmax(raw[0], axis=0).reshape(-1), minlength=classes)
    if not counts[1:].any():
        raise OccludeError(
            "every pixel is predicted as class 0 (the background): give target, the class to explain",
            params=("target",),
        )
    return int(np.argmax(counts[1:]) + 1)


def _segment_mask(options, prepared: PreparedImage, raw, probabilities, head: Head, target: int):
    """The (h, w) bool mask of the output the score averages over, and how it was made (for the JSON)."""
    h, w = raw.shape[2:]
    given = options.mask if options.mask is not None else "auto"
    if given == "auto":
        if raw.shape[1] == 1:
            mask = (probabilities[0, 0] if head.is_probability else 1 / (1 + np.exp(-raw[0, 0]))) > 0.5
        else:
            mask = np.argmax(raw[0], axis=0) == target
        source: dict = {"source": "auto"}
        empty = (
            f"mask auto is empty: class {target} is predicted nowhere on the unoccluded image (give a file or a box)"
        )
    elif isinstance(given, tuple):
        mask = _box_mask(given, prepared, (h, w))
        source = {"source": "box", "box": list(given)}
        empty = f"mask box {typed(given)} is empty: it covers no pixel of the model's {h}x{w} output"
    else:
        mask = _file_mask(given, prepared, (h, w))
        source = {"source": "file", "file": str(given)}
        empty = f"mask {given} is empty: it covers no pixel of the model's {h}x{w} output"
    if not mask.any():
        raise OccludeError(empty, params=("mask",))
    return mask, source


def _file_mask(path, prepared: PreparedImage, size: Tuple[int, int]) -> np.ndarray:
    """A mask image of any size, drawn over the original photo, through the same crop, resize or letterbox as
    the photo onto the output's (h, w) grid (the one reader and geometry of masks: loaders.maps)."""
    from ...loaders.maps import mask_from_file

    try:
        return mask_from_file(path, prepared, size)
    except OccludeError as exc:
        raise OccludeError(str(exc), params=("mask",)) from None


def to_input(box: Box, prepared: PreparedImage) -> np.ndarray:
    """A box in original pixels -> model-input pixels (through the crop box: resize, crop or letterbox)."""
    left, top, right, bottom = prepared.crop_box
    height, width = prepared.preprocessing.size
    sx, sy = width / (right - left), height / (bottom - top)
    x0, y0, x1, y1 = box
    return np.array([(x0 - left) * sx, (y0 - top) * sy, (x1 - left) * sx, (y1 - top) * sy])


def to_original(box: np.ndarray, prepared: PreparedImage) -> Box:
    """A box in model-input pixels -> original pixels (the inverse of :func:`to_input`)."""
    left, top, right, bottom = prepared.crop_box
    height, width = prepared.preprocessing.size
    sx, sy = (right - left) / width, (bottom - top) / height
    x0, y0, x1, y1 = (float(v) for v in box)
    return (left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy)


def _box_mask(box: Box, prepared: PreparedImage, size: Tuple[int, int]) -> np.ndarray:
    """The output pixels whose centres lie inside a box given in original pixels."""
    x0, y0, x1, y1 = to_input(box, prepared)
    height, width = prepared.preprocessing.size
    h, w = size
    ys = (np.arange(h) + 0.5) * height / h
    xs = (np.arange(w) + 0.5) * width / w
    return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]


# -------------------------------------------------------------------------------------------- detect


def _decoder(model: OnnxClassifier, options, classes_hint: Optional[int]):
    """The outputs a detection format reads and a function from them to (boxes (B, N, 4), probabilities
    (B, N, classes)) in input pixels."""
    fmt = options.detect_format
    if fmt in ("yolov8", "yolov5"):
        name = model.output.name
        need = 5 if fmt == "yolov8" else 6
        axis = 1 if fmt == "yolov8" else 2
        layout = "(1, 4 + classes, N)" if fmt == "yolov8" else "(1, N, 5 + classes)"

        def decode(outputs):
            raw = np.asarray(outputs[0], dtype=np.float64)
            if raw.ndim != 3 or raw.shape[axis] < need:
                raise OccludeError(
                    f"detect_format {fmt} needs an output {layout}; output {name!r} has shape {list(raw.shape)}",
                    params=("detect_format",),
                )
            return maths.decode_yolov8(raw) if fmt == "yolov8" else maths.decode_yolov5(raw)

        return [name], decode
    names = [options.boxes_output, options.scores_output, options.labels_output]
    _outputs(model, names, ("boxes_output", "scores_output", "labels_output"))

    def decode_boxes(outputs):
        boxes, scores, labels = (np.asarray(o) for o in outputs)
        boxes = boxes.reshape(-1, boxes.shape[-1]) if boxes.ndim else boxes
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.size != len(boxes) or labels.size != len(boxes):
            raise OccludeError(
                f"detect_format boxes needs boxes (N, 4), scores (N,) and labels (N,); got shapes "
                f"{list(boxes.shape)}, {list(scores.shape)}, {list(labels.shape)}",
                params=("detect_format",),
            )
        return boxes[None].astype(np.float64), maths.one_hot_scores(scores, labels, classes_hint or 1)[None]

    return names, decode_boxes


def _detect(model: OnnxClassifier, options, prepared: PreparedImage, labels) -> TaskScoring:
    fmt = options.detect_format
    sample = prepared.model_input
    classes: Optional[int] = None
    if fmt == "boxes":  # the class count: the labels', else the largest label of the unoccluded image's
        names = [options.boxes_output, options.scores_output, options.labels_output]
        _outputs(model, names, ("boxes_output", "scores_output", "labels_output"))
        seen = np.asarray(model.run_outputs(sample[None], names)[2]).reshape(-1)
        wanted = int(str(options.target).strip()) + 1 if str(options.target).strip().isdigit() else 1
        classes = len(labels) if labels else max(int(seen.max()) + 1 if seen.size else 1, wanted)
    names, decode = _decoder(model, options, classes)
    outputs = [_finite(o) for o in model.run_outputs(sample[None], names)]
    boxes, probabilities = decode(outputs)
    _check_probabilities(fmt, names, outputs)
    boxes, probabilities = boxes[0], probabilities[0]
    count = int(probabilities.shape[1])
    if labels is not None and len(labels) != count:
        raise label_count_error(labels, count, model)
    asked = resolve_target(options.target, labels, count) if options.target is not None else None
    kept = 0
    if options.target_box is not None:
        target = _seen(to_input(_inside(options.target_box, prepared), prepared), options.target_box, prepared)
    else:
        target, kept = _nth_detection(boxes, probabilities, asked, options)
    main = int(asked) if asked is not None else int(np.argmax(maths.detection_scores(boxes, probabilities, target)))
    one_pass = fmt == "boxes"  # separate outputs hold one image's detections

    def one(batch: np.ndarray) -> np.ndarray:
        found, probability = decode(model.run_outputs(batch, names))
        return maths.detection_scores(found, probability, target)

    def score(batch: np.ndarray) -> np.ndarray:
        if one_pass:
            rows = [one(batch[i : i + 1])[0] for i in range(len(batch))]
            return np.stack(rows) if rows else np.zeros((0, count))
        return one(batch)

    rule = "max over detections of IoU(target box, box) x class probability" + (
        " x objectness" if fmt == "yolov5" else ""
    )
    box = to_original(target, prepared)
    record = {
        "task": "detect",
        "format": fmt,
        "class": main,
        "target_box": [round(float(v), 4) for v in box],
        "target_box_input": [round(float(v), 4) for v in target],
        "target_detection": options.target_detection,
        "conf": options.conf,
        "nms_iou": options.nms_iou,
        "detections": kept if options.target_box is None else None,
        "score": rule,
    }
    original = maths.detection_scores(boxes, probabilities, target)
    head = Head("detection", "auto", f"detect: {rule}")
    return TaskScoring("detect", score, head, original, main, labels, record, box=box)


def _inside(box: Box, prepared: PreparedImage) -> Box:
    width, height = prepared.original_size
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise OccludeError(
            f"target_box {typed(box)} lies outside the image ({width}x{height} pixels)",
            params=("target_box",),
        )
    return box


def _seen(box: np.ndarray, given: Box, prepared: PreparedImage) -> np.ndarray:
    """A target box (input pixels) that overlaps the model's input: a crop may cut away part of the photo, and a
    box there would score 0 under every window (a blank map)."""
    height, width = prepared.preprocessing.size
    if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
        raise OccludeError(
            f"target_box {typed(given)} lies outside the part of the image the model sees "
            f"(the region {', '.join(f'{v:g}' for v in prepared.crop_box)} of the original, after resize)",
            params=("target_box",),
        )
    return box


def _check_probabilities(fmt: str, names: Sequence[str], outputs: Sequence[np.ndarray]) -> None:
    """The unoccluded outputs hold what the format says: YOLO class probabilities (and objectness) from 0 to 1;
    torchvision scores from 0 to 1 and whole-number labels. Anything else (an output after non-maximum suppression,
    outputs named the wrong way round) would give scores that are not a detection's."""
    slack = 1e-6
    if fmt in ("yolov8", "yolov5"):
        values = outputs[0][:, 4:] if fmt == "yolov8" else outputs[0][..., 4:]
        if values.size and (values.min() < -slack or values.max() > 1 + slack):
            layout = "(1, 4 + classes, N)" if fmt == "yolov8" else "(1, N, 5 + classes)"
            raise OccludeError(
                f"detect_format {fmt} reads class probabilities 0..1 (sigmoid outputs), but output {names[0]!r} holds "
                f"values from {values.min():.4g} to {values.max():.4g} there: is it laid out {layout}? (rows after "
                "non-maximum suppression, x0, y0, x1, y1, score, class, are not a layout occlude reads)",
                params=("detect_format",),
            )
        return
    scores, labels = outputs[1], outputs[2]
    if labels.size and not np.array_equal(labels, np.round(labels)):
        raise OccludeError(
            f"labels_output {names[2]!r} holds values that are not whole numbers: class indices are (is it the "
            "scores output?)",
            params=("labels_output",),
        )
    if scores.size and (scores.min() < -slack or scores.max() > 1 + slack):
        raise OccludeError(
            f"scores_output {names[1]!r} holds values from {scores.min():.4g} to {scores.max():.4g}: detection "
            "scores are probabilities 0..1 (is it the labels output?)",
            params=("scores_output",),
        )


def _nth_detection(boxes: np.ndarray, probabilities: np.ndarray, target: Optional[int], options):
    """The box (input pixels) of the K-th detection of the unoccluded image (best first) with confidence at
    least ``conf`` after non-maximum suppression at ``nms_iou`` (of ``target``'s class when given), and how many
    there are."""
    if target is None:
        confidence, classes = probabilities.max(axis=1), probabilities.argmax(axis=1)
    else:
        confidence, classes = probabilities[:, target], np.full(len(boxes), target)
    chosen = np.nonzero(confidence >= options.conf)[0]
    kept = chosen[maths.nms(boxes[chosen], confidence[chosen], classes[chosen], options.nms_iou)]
    k = int(options.target_detection)
    if k >= len(kept):
        what = f" of class {target}" if target is not None else ""
        raise OccludeError(
            f"target_detection {k}: the unoccluded image has {len(kept)} detection(s){what} with confidence >= "
            f"conf {options.conf:g} (0 is the best)",
            params=("target_detection", "conf"),
        )
    return boxes[kept[k]].astype(np.float64), int(len(kept))


# --------------------------------------------------------------------------------------------- embed


def _embed(model: OnnxClassifier, options, prepared: PreparedImage, labels) -> TaskScoring:
    name = model.output.name

    def embedding(batch: np.ndarray) -> Tuple[np.ndarray, str]:
        try:
            return maths.pooled(model.run_outputs(batch, [name])[0])
        except ValueError as exc:
            raise OccludeError(f"task embed: output {name!r}: {exc}", params=("task",)) from None

    own, pooling = embedding(prepared.model_input[None])
    own = _finite(own)[0]
    reference, source = _reference(options, prepared, own, embedding)
    if not np.any(reference):
        if source["source"] == "image":
            raise OccludeError(
                f"reference image {source['file']}: the model's embedding of it is all zeros, so its cosine "
                "similarity is undefined",
                params=("reference",),
            )
        raise OccludeError("the model's embedding of the input is all zeros: its cosine similarity is undefined")

    def score(batch: np.ndarray) -> np.ndarray:
        return maths.cosine(embedding(batch)[0], reference)

    record = {
        "task": "embed",
        "dimensions": int(own.shape[0]),
        "pooling": pooling,
        "reference": source,
        "score": "cosine similarity of the embedding with the reference embedding",
    }
    head = Head("similarity", "auto", "embed: cosine similarity with the reference embedding")
    original = maths.cosine(own[None], reference)[0]
    return TaskScoring("embed", score, head, original, 0, None, record)


def _reference(options, prepared: PreparedImage, own: np.ndarray, embedding) -> Tuple[np.ndarray, dict]:
    """The reference embedding: a .npy vector, an image prepared like the input, or the input's own."""
    if options.reference_embedding is not None:
        vector = read_reference_embedding(options.reference_embedding)
        _reference_size(vector, own.size, options.reference_embedding)
        return vector, {"source": "embedding", "file": str(options.reference_embedding)}
    if options.reference is not None:
        try:
            other = prepare_image(options.reference, prepared.preprocessing)
        except OccludeError as exc:
            raise OccludeError(f"reference image: {exc}", params=("reference",)) from None
        vector = _finite(embedding(other.model_input[None])[0])[0]
        return vector, {"source": "image", "file": str(options.reference)}
    return own, {"source": "input", "file": None}


MAX_REFERENCE_BYTES = 64 << 20  # a reference embedding is a vector: far below this


def read_reference_embedding(path) -> np.ndarray:
    """A reference embedding file (``numpy.save`` of one vector of numbers) as a finite, non-zero float64 vector
    (a (1, D) row is a vector too); anything else is one OccludeError naming ``reference_embedding``."""
    path = Path(path)

    def bad(why: str) -> OccludeError:
        return OccludeError(f"reference_embedding {path} {why}", params=("reference_embedding",))

    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
        size = path.stat().st_size
    except FileNotFoundError:
        raise OccludeError(f"reference_embedding not found: {path}", params=("reference_embedding",)) from None
    except OSError as exc:
        raise bad(f"cannot be read: {exc.strerror or exc}") from None
    if head != b"\x93NUMPY":
        raise bad("is not a .npy file: save the vector with numpy.save (not savez, text or pickle)")
    if size > MAX_REFERENCE_BYTES:
        raise bad(f"is {size} bytes: a reference embedding is one vector (at most {MAX_REFERENCE_BYTES} bytes)")
    try:
        vector = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise bad("holds Python objects, not numbers: save a vector of numbers") from None
        raise bad(f"is not a readable .npy array: {exc}") from None
    except OSError as exc:
        raise bad(f"is not a readable .npy array: {exc}") from None
    if vector.dtype.kind not in "fiu":
        raise bad(f"holds {vector.dtype} values: a reference embedding is a vector of numbers")
    if vector.squeeze().ndim > 1:
        raise bad(f"has shape {list(vector.shape)}: a reference embedding is one vector")
    vector = vector.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(vector)):
        raise bad("is not finite (NaN or inf)")
    if not np.any(vector):
        raise bad("is all zeros: its cosine similarity is undefined")
    return vector


def _reference_size(vector: np.ndarray, dimensions: Optional[int], path) -> None:
    if dimensions is not None and vector.size != dimensions:
        raise OccludeError(
            f"reference_embedding {path} has shape [{vector.size}]: it must be a vector of the model's {dimensions} "
            "dimensions",
            params=("reference_embedding",),
        )


def _declared_dimensions(shape) -> Optional[int]:
    """The D of an embedding output's declared shape, pooled as :func:`.maths.pooled` pools it (None: unknown)."""
    if not shape or len(shape) < 2:
        return None
    if len(shape) == 3 and not shape[2] == 1:
        d = shape[2]
    elif len(shape) == 2 or len(shape) == 4 or all(d == 1 for d in shape[2:]):
        d = shape[1]
    else:
        return None
    return d if isinstance(d, int) and d > 0 else None
