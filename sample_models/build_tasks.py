"""Build the three tiny probe models of the manual's tasks page (docs/tasks.md) with the ``onnx`` library alone:
no training, no download, the same bytes on every run. Their scores are computable by hand:

* ``segment_probe.onnx``: input ``image`` [batch, 3, 64, 64] float32 (pixel / 255); output ``logits``
  [batch, 3, 64, 64], per pixel ``background = 0``, ``warm = 4R - 2G - 2B - 0.5``, ``cool = 4B - 2R - 2G - 0.5``
  (a 1x1 convolution). Labels background, warm, cool.
* ``detect_probe.onnx``: input ``image`` [batch, 3, 64, 64]; output ``output0`` [batch, 7, 3] in the YOLOv8 layout:
  three fixed boxes (x0, y0, x1, y1 = 4,4,28,28; 20,16,52,44; 32,32,60,60, input pixels) as cx, cy, w, h, and
  the score of class c (red, green, blue) of a box is the mean of channel c inside the box.
* ``embed_probe.onnx``: input ``image`` [batch, 3, 64, 64]; output ``embedding`` [batch, 4]: the means of the four
  quadrants of the image (top-left, top-right, bottom-left, bottom-right), all channels.

Run from the repository root: ``python sample_models/build_tasks.py`` (``--out DIR`` writes elsewhere).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
BOXES = [(4, 4, 28, 28), (20, 16, 52, 44), (32, 32, 60, 60)]


def _const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _save(graph, path: Path, labels=None) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="occlude")
    model.ir_version = 8
    meta = {"occlude.source": "sample_models/build_tasks.py: a hand-built probe (docs/tasks.md)"}
    if labels:
        meta["occlude.labels"] = json.dumps(labels)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString())


def _image():
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])


def segment(path: Path) -> None:
    weights = np.array([[0, 0, 0], [4, -2, -2], [-2, -2, 4]], np.float32).reshape(3, 3, 1, 1)
    bias = np.array([0, -0.5, -0.5], np.float32)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])
    node = helper.make_node("Conv", ["image", "w", "b"], ["logits"], kernel_shape=[1, 1])
    graph = helper.make_graph([node], "segment_probe", [_image()], [out], [_const("w", weights, np.float32),
                                                                            _const("b", bias, np.float32)])
    _save(graph, path, ["background", "warm", "cool"])


def detect(path: Path) -> None:
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 7, len(BOXES)])
    nodes, inits = [], [_const("axes", [2, 3]), _const("shape", [0, 3, 1])]
    for k, (x0, y0, x1, y1) in enumerate(BOXES):
        inits += [_const(f"s{k}", [y0, x0]), _const(f"e{k}", [y1, x1])]
        nodes += [
            helper.make_node("Slice", ["image", f"s{k}", f"e{k}", "axes"], [f"crop{k}"]),
            helper.make_node("ReduceMean", [f"crop{k}"], [f"mean{k}"], axes=[2, 3], keepdims=1),
            helper.make_node("Reshape", [f"mean{k}", "shape"], [f"cls{k}"]),
        ]
    geometry = np.array([[(a + c) / 2, (b + d) / 2, c - a, d - b] for a, b, c, d in BOXES], np.float32).T[None]
    inits += [_const("geometry", geometry, np.float32), _const("first", [0]), _const("one", [1])]
    nodes += [
        helper.make_node("Concat", [f"cls{k}" for k in range(len(BOXES))], ["classes"], axis=2),
        helper.make_node("Slice", ["classes", "first", "one", "one"], ["c0"]),
        helper.make_node("Sub", ["c0", "c0"], ["zeros"]),
        helper.make_node("Add", ["zeros", "geometry"], ["boxes"]),
        helper.make_node("Concat", ["boxes", "classes"], ["output0"], axis=1),
    ]
    _save(helper.make_graph(nodes, "detect_probe", [_image()], [out], inits), path, ["red", "green", "blue"])


def embed(path: Path) -> None:
    half = SIZE // 2
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])
    quadrants = [(0, 0, half, half), (0, half, half, SIZE), (half, 0, SIZE, half), (half, half, SIZE, SIZE)]
    nodes, inits = [], [_const("axes", [2, 3]), _const("one", [1])]
    for k, (y0, x0, y1, x1) in enumerate(quadrants):
        inits += [_const(f"s{k}", [y0, x0]), _const(f"e{k}", [y1, x1])]
        nodes += [
            helper.make_node("Slice", ["image", f"s{k}", f"e{k}", "axes"], [f"q{k}"]),
            helper.make_node("ReduceMean", [f"q{k}"], [f"m{k}"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", [f"m{k}", "one"], [f"u{k}"]),
        ]
    nodes.append(helper.make_node("Concat", [f"u{k}" for k in range(4)], ["embedding"], axis=1))
    _save(helper.make_graph(nodes, "embed_probe", [_image()], [out], inits), path)


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    segment(out / "segment_probe.onnx")
    detect(out / "detect_probe.onnx")
    embed(out / "embed_probe.onnx")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    build(parser.parse_args().out)
