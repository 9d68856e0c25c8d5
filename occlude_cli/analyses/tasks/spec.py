"""The task parameters of a run (``task``, ``mask``, ``detect_format``, the detection outputs and target,
``conf``, ``nms_iou``, the reference of an embedding), converted and checked once with the rest of
:class:`~occlude_cli.analyses.options.ExplainOptions`; messages name the parameters."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ...errors import OccludeError
from ...loaders.outputs import TASKS

DETECT_FORMATS = ("yolov8", "yolov5", "boxes")
CONF = 0.25  # the least confidence of a detection of the unoccluded image (default of conf)
NMS_IOU = 0.45  # non-maximum suppression of the unoccluded detections: the IoU above which a box is dropped

# parameter -> the tasks it belongs to (given with another task, it is refused rather than ignored)
_OWNERS = {
    "mask": ("segment",),
    "detect_format": ("detect",),
    "boxes_output": ("detect",),
    "scores_output": ("detect",),
    "labels_output": ("detect",),
    "target_box": ("detect",),
    "target_detection": ("detect",),
    "conf": ("detect",),
    "nms_iou": ("detect",),
    "reference": ("embed",),
    "reference_embedding": ("embed",),
}


def default_resize(task: str, detect_format: Optional[str]) -> Optional[str]:
    """The resize mode a task takes when nothing else names one: letterbox for YOLO detectors."""
    return "letterbox" if task == "detect" and detect_format in ("yolov8", "yolov5") else None


def checked_task_fields(options) -> dict:
    """The task fields of ``options`` converted and checked (raises OccludeError naming the parameter)."""
    task = str(getattr(options.task, "value", options.task))
    if task not in TASKS:
        raise OccludeError(f"task must be one of {', '.join(TASKS)}, got {options.task!r}", params=("task",))
    for name, owners in _OWNERS.items():
        if getattr(options, name) is not None and task not in owners and not (task == "auto" and name == "mask"):
            raise OccludeError(f"{name} is for task {' or '.join(owners)}, not task {task}", params=(name, "task"))
    if task == "embed" and options.target is not None:
        raise OccludeError(
            "target is for class scores: an embedding's cosine similarity is one score", params=("target",)
        )
    fields = {"task": task, "mask": _mask(options.mask)}
    fields.update(_detect(options, task))
    for name in ("reference", "reference_embedding"):
        value = getattr(options, name)
        fields[name] = str(value) if value is not None else None
    if fields["reference"] is not None and fields["reference_embedding"] is not None:
        raise OccludeError(
            "give reference or reference_embedding, not both", params=("reference", "reference_embedding")
        )
    score = str(getattr(options.score, "value", options.score))
    if task in ("detect", "embed") and score not in ("auto", "prob"):
        raise OccludeError(f"score is for classify and segment: task {task} has its own score", params=("score",))
    if task == "embed" and options.top_k != 1:
        raise OccludeError("top_k is for class scores: an embedding's similarity is one score", params=("top_k",))
    return fields


def _mask(mask):
    """``auto``, a file (str or Path) or a box (x0, y0, x1, y1) in original pixels; None is auto."""
    if mask is None or (isinstance(mask, str) and mask.strip().lower() == "auto"):
        return None if mask is None else "auto"
    if isinstance(mask, (tuple, list)):
        box = _box(mask, "mask")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise OccludeError(f"mask box {typed(box)} is empty: need x0 < x1 and y0 < y1", params=("mask",))
        return box
    if isinstance(mask, (str, Path)):
        return str(mask)
    raise OccludeError(f"mask must be auto, a mask file or a box x0, y0, x1, y1, got {mask!r}", params=("mask",))


def typed(box) -> str:
    """A box as it is typed on the command line: ``10,10,20,20.5``."""
    return ",".join(f"{float(v):g}" for v in box)


def _box(value, name: str) -> Tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise OccludeError(f"{name} must be four numbers x0, y0, x1, y1, got {value!r}", params=(name,)) from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise OccludeError(f"{name} must be four finite numbers x0, y0, x1, y1, got {value!r}", params=(name,))
    return box  # type: ignore[return-value]


def _fraction(value, name: str, default: float, low_open: bool) -> float:
    """``conf`` (0 to 1) or ``nms_iou`` (above 0, at most 1); None is the default."""
    if value is None:
        return default
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not number or not (0 < float(value) <= 1 if low_open else 0 <= float(value) <= 1):
        span = "above 0 and at most 1" if low_open else "from 0 to 1"
        raise OccludeError(f"{name} must be a number {span}, got {value!r}", params=(name,))
    return float(value)


def _detect(options, task: str) -> dict:
    fmt = options.detect_format
    fields = {
        "conf": options.conf,
        "nms_iou": options.nms_iou,
        "detect_format": fmt,
        "target_box": _box(options.target_box, "target_box") if options.target_box is not None else None,
        "target_detection": options.target_detection,
        "boxes_output": options.boxes_output,
        "scores_output": options.scores_output,
        "labels_output": options.labels_output,
    }
    if task != "detect":
        return fields
    fmt = str(getattr(fmt, "value", fmt)) if fmt is not None else None
    if fmt not in DETECT_FORMATS:
        raise OccludeError(
            f"task detect needs detect_format, one of {', '.join(DETECT_FORMATS)}"
            + (f"; got {fmt!r}" if fmt is not None else ""),
            params=("detect_format",),
        )
    fields["detect_format"] = fmt
    names = ("boxes_output", "scores_output", "labels_output")
    if fmt == "boxes" and any(getattr(options, n) is None for n in names):
        missing = [n for n in names if getattr(options, n) is None]
        raise OccludeError(
            f"detect_format boxes needs the names of the model's boxes, scores and labels outputs: give "
            f"{', '.join(missing)}",
            params=("detect_format", *missing),
        )
    if fmt != "boxes" and any(getattr(options, n) is not None for n in names):
        raise OccludeError(
            f"boxes_output, scores_output and labels_output are for detect_format boxes, not {fmt}",
            params=names,
        )
    box, k = fields["target_box"], options.target_detection
    if box is not None and k is not None:
        raise OccludeError("give target_box or target_detection, not both", params=("target_box", "target_detection"))
    for name in ("conf", "nms_iou"):
        if box is not None and getattr(options, name) is not None:
            raise OccludeError(
                f"{name} chooses among the detections for target_detection: with target_box it would do nothing",
                params=(name, "target_box"),
            )
    if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
        raise OccludeError(f"target_box {typed(box)} is empty: need x0 < x1 and y0 < y1", params=("target_box",))
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
        raise OccludeError(f"target_detection must be a whole number >= 0, got {k!r}", params=("target_detection",))
    if box is None and k is None:
        fields["target_detection"] = 0  # the best detection
    elif k is not None:
        fields["target_detection"] = int(k)
    if box is None:  # they choose the K-th detection (a target box needs neither: they stay None)
        fields["conf"] = _fraction(options.conf, "conf", CONF, low_open=False)
        fields["nms_iou"] = _fraction(options.nms_iou, "nms_iou", NMS_IOU, low_open=True)
    return fields
