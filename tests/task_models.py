"""Probe models for the tasks whose answers are computable by hand, and the slow obvious scores they are
checked against (one window at a time, plain loops, no code shared with occlude's task maths)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def segmentation_probe(path: Path, weights: np.ndarray, bias: np.ndarray, size: Tuple[int, int] = (32, 32)) -> Path:
    """Per-pixel logits (N, C, H, W): logit_c = sum_k weights[c, k] * x_k + bias[c] of the pixel's channels x."""
    classes, channels = weights.shape
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, *size])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, *size])
    node = helper.make_node("Conv", ["image", "w", "b"], ["logits"], kernel_shape=[1, 1])
    inits = [
        _const("w", weights.reshape(classes, channels, 1, 1), np.float32),
        _const("b", bias.reshape(-1), np.float32),
    ]
    return _save(helper.make_graph([node], "segprobe", [image], [out], inits), path)


def segmentation_probe_logits(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What segmentation_probe computes for one (C, H, W) sample, by loops over the pixels."""
    channels, height, width = x.shape
    out = np.zeros((len(weights), height, width))
    for y in range(height):
        for xx in range(width):
            for c in range(len(weights)):
                out[c, y, xx] = float(np.dot(weights[c], x[:, y, xx]) + bias[c])
    return out


def detection_probe(path: Path, boxes: Sequence[Sequence[int]], size: Tuple[int, int] = (32, 32)) -> Path:
    """YOLOv8 layout (N, 4 + 3, K): K fixed boxes (x0, y0, x1, y1, input pixels) as cx, cy, w, h; class c of
    box k scores the mean of channel c inside box k."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *size])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 7, len(boxes)])
    nodes, inits, parts = [], [_const("axes", [2, 3]), _const("shape", [0, 3, 1])], []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        inits += [_const(f"s{k}", [y0, x0]), _const(f"e{k}", [y1, x1])]
        nodes += [
            helper.make_node("Slice", ["image", f"s{k}", f"e{k}", "axes"], [f"crop{k}"]),
            helper.make_node("ReduceMean", [f"crop{k}"], [f"mean{k}"], axes=[2, 3], keepdims=1),
            helper.make_node("Reshape", [f"mean{k}", "shape"], [f"cls{k}"]),
        ]
        parts.append(f"cls{k}")
    geometry = [[(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes]
    inits += [_const("geometry", np.array(geometry, dtype=np.float32).T[None], np.float32)]
    inits += [_const("first", [0]), _const("one", [1]), _const("chan", [1])]
    nodes += [
        helper.make_node("Concat", parts, ["classes"], axis=2),
        helper.make_node("Slice", ["classes", "first", "one", "chan"], ["c0"]),
        helper.make_node("Sub", ["c0", "c0"], ["zeros"]),  # (N, 1, K) of zeros: the batch for the boxes
        helper.make_node("Add", ["zeros", "geometry"], ["boxes"]),
        helper.make_node("Concat", ["boxes", "classes"], ["output0"], axis=1),
    ]
    return _save(helper.make_graph(nodes, "detprobe", [image], [out], inits), path)


def yolov5_probe(path: Path, boxes: Sequence[Sequence[int]], size: Tuple[int, int] = (32, 32)) -> Path:
    """YOLOv5 layout (N, K, 5 + 3): K fixed boxes (x0, y0, x1, y1, input pixels) as cx, cy, w, h, then the box's
    objectness (the mean of all channels inside it), then class c's probability (the mean of channel c inside)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *size])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", len(boxes), 8])
    nodes, inits, parts = [], [_const("axes", [2, 3]), _const("shape", [0, 3, 1])], []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        inits += [_const(f"s{k}", [y0, x0]), _const(f"e{k}", [y1, x1])]
        nodes += [
            helper.make_node("Slice", ["image", f"s{k}", f"e{k}", "axes"], [f"crop{k}"]),
            helper.make_node("ReduceMean", [f"crop{k}"], [f"mean{k}"], axes=[2, 3], keepdims=1),
            helper.make_node("Reshape", [f"mean{k}", "shape"], [f"cls{k}"]),
        ]
        parts.append(f"cls{k}")
    geometry = [[(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes]
    inits.append(_const("geometry", np.array(geometry, dtype=np.float32).T[None], np.float32))
    nodes += [
        helper.make_node("Concat", parts, ["classes"], axis=2),  # (N, 3, K)
        helper.make_node("ReduceMean", ["classes"], ["objectness"], axes=[1], keepdims=1),  # (N, 1, K)
        helper.make_node("Sub", ["objectness", "objectness"], ["zeros"]),
        helper.make_node("Add", ["zeros", "geometry"], ["boxes"]),
        helper.make_node("Concat", ["boxes", "objectness", "classes"], ["rows"], axis=1),  # (N, 8, K)
        helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]),
    ]
    return _save(helper.make_graph(nodes, "yolov5probe", [image], [out], inits), path)


def yolov5_probe_score(x: np.ndarray, boxes, target_box, cls: int) -> float:
    """The detection score of yolov5_probe on one (3, H, W) sample: max over boxes of IoU x class mean x the mean
    of every channel inside the box (its objectness), by loops."""
    best = 0.0
    for x0, y0, x1, y1 in boxes:
        crop = x[:, y0:y1, x0:x1]
        objectness = float(np.mean([crop[c].mean() for c in range(3)]))
        best = max(best, slow_iou(target_box, (x0, y0, x1, y1)) * float(crop[cls].mean()) * objectness)
    return best


def post_nms_probe(path: Path, boxes: Sequence[Sequence[int]], size: Tuple[int, int] = (32, 32)) -> Path:
    """A detector whose output is already after non-maximum suppression, (N, K, 6) rows x0, y0, x1, y1, score 0.9,
    class 7: the layout of an end-to-end export, which no --detect-format reads."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *size])
    out = helper.make_tensor_value_info("dets", TensorProto.FLOAT, ["N", len(boxes), 6])
    rows = np.array([[*b, 0.9, 7.0] for b in boxes], np.float32)[None]
    inits = [_const("rows", rows, np.float32), _const("shape", [-1, 1, 1])]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["mr"]),
        helper.make_node("Sub", ["mr", "mr"], ["z"]),
        helper.make_node("Add", ["z", "rows"], ["dets"]),
    ]
    return _save(helper.make_graph(nodes, "postnms", [image], [out], inits), path)


def boxes_probe(path: Path, boxes: Sequence[Sequence[int]], size: Tuple[int, int] = (32, 32)) -> Path:
    """torchvision's layout, one image a pass: outputs boxes (K, 4) (fixed, x0, y0, x1, y1), scores (K,) (the mean
    of every channel inside box k) and labels (K,) int64 (k % 3)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *size])
    outs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [len(boxes), 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [len(boxes)]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, [len(boxes)]),
    ]
    nodes, inits, parts = [], [_const("axes", [2, 3])], []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        inits += [_const(f"s{k}", [y0, x0]), _const(f"e{k}", [y1, x1])]
        nodes += [
            helper.make_node("Slice", ["image", f"s{k}", f"e{k}", "axes"], [f"crop{k}"]),
            helper.make_node("ReduceMean", [f"crop{k}"], [f"mean{k}"], axes=[1, 2, 3], keepdims=0),
        ]
        parts.append(f"mean{k}")
    inits += [_const("fixed", np.array(boxes, np.float32), np.float32), _const("ids", np.arange(len(boxes)) % 3)]
    nodes += [
        helper.make_node("Concat", parts, ["scores"], axis=0),
        helper.make_node("Identity", ["fixed"], ["boxes"]),
        helper.make_node("Identity", ["ids"], ["labels"]),
    ]
    return _save(helper.make_graph(nodes, "boxesprobe", [image], outs, inits), path)


def pooled_segmentation_probe(path: Path, factor: int, size: Tuple[int, int] = (32, 32), static: bool = True) -> Path:
    """(N, 3, H / factor, W / factor) per-pixel scores: the input's channels averaged over factor x factor cells
    (AveragePool); ``static``: the input and output declare their sizes, else every size is a symbol."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *(size if static else ["H", "W"])])
    spatial = [size[0] // factor, size[1] // factor] if static else ["h", "w"]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, *spatial])
    node = helper.make_node("AveragePool", ["image"], ["logits"], kernel_shape=[factor, factor], strides=[factor] * 2)
    return _save(helper.make_graph([node], "segpool", [image], [out], []), path)


def slow_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def detection_probe_score(x: np.ndarray, boxes, target_box, cls: int) -> float:
    """The detection score of probe ``boxes`` on one (3, H, W) sample: max over boxes of IoU x class mean."""
    best = 0.0
    for x0, y0, x1, y1 in boxes:
        probability = float(x[cls, y0:y1, x0:x1].mean())
        best = max(best, slow_iou(target_box, (x0, y0, x1, y1)) * probability)
    return best


def embedding_probe(path: Path, size: Tuple[int, int] = (32, 32), channels: int = 3) -> Path:
    """(N, 4): the means of the four quadrants (all channels): top-left, top-right, bottom-left, bottom-right."""
    h, w = size
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, h, w])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 4])
    quadrants = [(0, 0, h // 2, w // 2), (0, w // 2, h // 2, w), (h // 2, 0, h, w // 2), (h // 2, w // 2, h, w)]
    nodes, inits = [], [_const("axes", [2, 3])]
    for k, (y0, x0, y1, x1) in enumerate(quadrants):
        inits += [_const(f"s{k}", [y0, x0]), _const(f"e{k}", [y1, x1])]
        nodes += [
            helper.make_node("Slice", ["image", f"s{k}", f"e{k}", "axes"], [f"q{k}"]),
            helper.make_node("ReduceMean", [f"q{k}"], [f"m{k}"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", [f"m{k}", "one"], [f"u{k}"]),
        ]
    inits.append(_const("one", [1]))
    nodes.append(helper.make_node("Concat", [f"u{k}" for k in range(4)], ["embedding"], axis=1))
    return _save(helper.make_graph(nodes, "embprobe", [image], [out], inits), path)


def embedding_probe_vector(x: np.ndarray) -> np.ndarray:
    _, h, w = x.shape
    return np.array(
        [
            x[:, : h // 2, : w // 2].mean(),
            x[:, : h // 2, w // 2 :].mean(),
            x[:, h // 2 :, : w // 2].mean(),
            x[:, h // 2 :, w // 2 :].mean(),
        ]
    )


def slow_cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(sum(a * b) / (np.sqrt(sum(a * a)) * np.sqrt(sum(b * b))))


def slow_map(x: np.ndarray, baseline: np.ndarray, score, patch: int, stride: int) -> np.ndarray:
    """One window at a time, then per pixel the mean drop of every window covering it (``score`` of one
    (C, H, W) sample -> float)."""
    _, height, width = x.shape
    original = score(x)
    ys = list(range(0, height - patch + 1, stride))
    xs = list(range(0, width - patch + 1, stride))
    if ys[-1] + patch < height:
        ys.append(height - patch)
    if xs[-1] + patch < width:
        xs.append(width - patch)
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for y in ys:
        for xx in xs:
            occluded = x.copy()
            occluded[:, y : y + patch, xx : xx + patch] = baseline[:, y : y + patch, xx : xx + patch]
            total[y : y + patch, xx : xx + patch] += original - score(occluded)
            count[y : y + patch, xx : xx + patch] += 1
    return total / count


def close(got, want) -> None:
    """Element-wise within 1e-5 of the peak."""
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5 * max(np.max(np.abs(want)), 1e-12)


def task_photo(folder: Path) -> Path:
    """32x32 RGB noise with a bright red block (the segmentation's class 0 and the detection's box)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pixels[6:18, 8:22] = (250, 20, 30)
    path = folder / "photo.png"
    Image.fromarray(pixels).save(path)
    return path
