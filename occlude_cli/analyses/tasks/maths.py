"""The task scores' arithmetic, numpy only: a class's mean over a mask of per-pixel maps, box overlap (IoU),
non-maximum suppression, YOLO output decoding, the detection score and the cosine similarity of embeddings.
Every function takes arrays and returns arrays; nothing here knows of models or files."""

from __future__ import annotations

from typing import Tuple

import numpy as np


def mask_means(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, C) means over ``mask`` ((h, w) bool) of per-pixel maps (B, C, h, w), one per class."""
    maps = np.asarray(maps, dtype=np.float64)
    return maps[:, :, mask].mean(axis=-1)


def per_pixel(values: np.ndarray, transform) -> np.ndarray:
    """``transform`` (a function of (rows, classes) arrays, such as a softmax over the classes) applied to each
    pixel's class vector of (B, C, h, w) maps; the result has the maps' shape."""
    values = np.asarray(values, dtype=np.float64)
    b, c, h, w = values.shape
    rows = np.moveaxis(values, 1, -1).reshape(-1, c)
    return np.moveaxis(np.asarray(transform(rows), dtype=np.float64).reshape(b, h, w, c), -1, 1)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (x0, y0, x1, y1) with each of ``boxes`` (..., 4); 0 where the union
    is empty."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    x0 = np.maximum(box[0], boxes[..., 0])
    y0 = np.maximum(box[1], boxes[..., 1])
    x1 = np.minimum(box[2], boxes[..., 2])
    y1 = np.minimum(box[3], boxes[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)
    union = area + areas - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the detections kept by greedy non-maximum suppression, best first: a box is dropped when it
    overlaps a kept box of the same class by more than ``threshold`` IoU, or by an IoU that is not a number
    (ties broken by index). Each kept box suppresses the rest of its class at once (one numpy call per kept
    box, not a Python loop over the kept boxes per candidate: 8,400 YOLOv8 candidates at ``conf`` 0 took 3.5 s)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    classes = np.asarray(classes)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    kept: list = []
    for value in np.unique(classes[order]) if len(order) else []:
        members = order[classes[order] == value]  # this class, best first
        alive = np.ones(len(members), dtype=bool)
        for j in range(len(members)):
            if alive[j]:
                kept.append(int(members[j]))
                alive[j + 1 :] &= iou(boxes[members[j]], boxes[members[j + 1 :]]) <= threshold
    return np.asarray(sorted(kept, key=lambda i: rank[i]), dtype=np.int64)


def xywh_to_xyxy(rows: np.ndarray) -> np.ndarray:
    """Centre x, centre y, width, height -> x0, y0, x1, y1 (last axis)."""
    rows = np.asarray(rows, dtype=np.float64)
    cx, cy, w, h = rows[..., 0], rows[..., 1], rows[..., 2], rows[..., 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def decode_yolov8(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(B, 4 + classes, N) as ultralytics exports YOLOv8 -> boxes (B, N, 4) x0, y0, x1, y1 in input pixels
    and class probabilities (B, N, classes)."""
    raw = np.asarray(raw, dtype=np.float64)
    return xywh_to_xyxy(np.moveaxis(raw[:, :4], 1, -1)), np.moveaxis(raw[:, 4:], 1, -1)


def decode_yolov5(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(B, N, 5 + classes) as YOLOv5 exports (cx, cy, w, h, objectness, class probabilities) -> boxes
    (B, N, 4) and each detection's probability of each class times its objectness (B, N, classes)."""
    raw = np.asarray(raw, dtype=np.float64)
    return xywh_to_xyxy(raw[..., :4]), raw[..., 5:] * raw[..., 4:5]


def one_hot_scores(scores: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Detections given as (score, label) pairs (torchvision) -> (N, classes): the score in its label's column,
    0 elsewhere (labels outside 0..classes-1 count for no class)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    out = np.zeros((len(scores), classes))
    inside = (labels >= 0) & (labels < classes)
    out[np.nonzero(inside)[0], labels[inside]] = scores[inside]
    return out


def detection_scores(boxes: np.ndarray, probabilities: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The detection score of each class: max over detections of IoU(target, box) x the detection's
    probability of the class. ``boxes`` (..., N, 4), ``probabilities`` (..., N, classes) -> (..., classes);
    0 when there is no detection."""
    overlap = iou(target, boxes)[..., None] * np.asarray(probabilities, dtype=np.float64)
    if overlap.shape[-2] == 0:
        return np.zeros(overlap.shape[:-2] + overlap.shape[-1:])
    return overlap.max(axis=-2)


def pooled(raw: np.ndarray) -> Tuple[np.ndarray, str]:
    """An embedding output as (B, D), and how it was pooled: (B, D) as it is; (B, D, 1, ...) squeezed;
    (B, D, h, w) averaged over h and w (global average pooling); (B, T, D) averaged over the tokens T."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 2:
        return raw, "none"
    if raw.ndim > 2 and all(d == 1 for d in raw.shape[2:]):
        return raw.reshape(raw.shape[:2]), "none"
    if raw.ndim == 4:
        return raw.mean(axis=(2, 3)), "mean over the spatial axes (B, D, h, w) -> (B, D)"
    if raw.ndim == 3:
        return raw.mean(axis=1), "mean over the tokens (B, T, D) -> (B, D)"
    raise ValueError(f"an embedding output of shape {list(raw.shape)} cannot be pooled to (batch, D)")


def cosine(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``embeddings`` (B, D) with ``reference`` (D,), as (B, 1); 0 for a zero
    vector. Each vector is first divided by its largest magnitude (the cosine does not change), so that no norm
    overflows, whatever the vectors' lengths."""
    unit_rows = _unit(np.asarray(embeddings, dtype=np.float64))
    unit_reference = _unit(np.asarray(reference, dtype=np.float64).reshape(1, -1))[0]
    return (unit_rows @ unit_reference)[:, None]


def _unit(rows: np.ndarray) -> np.ndarray:
    """Each row at length 1 (a zero row stays zero), computed without overflow."""
    largest = np.max(np.abs(rows), axis=1, keepdims=True) if rows.shape[1] else np.zeros((len(rows), 1))
    scaled = rows / np.where(largest > 0, largest, 1.0)
    norms = np.linalg.norm(scaled, axis=1, keepdims=True)
    return scaled / np.where(norms > 0, norms, 1.0)
