"""Hand-built ONNX models whose answers are known exactly, for ground-truth tests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph, path: Path, metadata: Optional[dict] = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def rectangle_model(
    path: Path,
    *,
    size: Tuple[int, int] = (16, 16),
    rect: Tuple[int, int, int, int] = (4, 6, 9, 12),
    channels: int = 1,
    layout: str = "NCHW",
    batch="N",
    spatial: Optional[Tuple] = None,
    softmax: bool = False,
    extra_output: bool = False,
    extra_input: bool = False,
    pin_batch: bool = False,
    metadata: Optional[dict] = None,
) -> Path:
    """Class 0's logit is the mean of the input over ``rect`` (y0, x0, y1, x1; all channels); class 1's is 0
    and class 2's is minus that mean. With ``softmax`` the output is a probability distribution."""
    height, width = size
    y0, x0, y1, x1 = rect
    if layout == "NCHW":
        shape = [batch, channels, *(spatial or (height, width))]
        axes = [2, 3]
    else:
        shape = [batch, *(spatial or (height, width)), channels]
        axes = [1, 2]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["crop"]),
        helper.make_node("ReduceMean", ["crop"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "one"], ["class0"]),
        helper.make_node("Mul", ["class0", "zero"], ["class1"]),
        helper.make_node("Neg", ["class0"], ["class2"]),
        helper.make_node("Concat", ["class0", "class1", "class2"], ["logits" if softmax else "scores"], axis=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
    if pin_batch:  # a Reshape to a hard-coded [1, 3]: the graph really cannot take another batch size
        nodes[-1].output[0] = "unpinned"
        nodes.append(helper.make_node("Reshape", ["unpinned", "pinned_shape"], ["scores"]))
    inits = [
        _const("starts", [y0, x0]),
        _const("ends", [y1, x1]),
        _const("axes", axes),
        _const("one", [1]),
        _const("zero", np.zeros((1, 1)), np.float32),
        _const("pinned_shape", [1, 3]),
    ]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3])]
    inputs = [image]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("class0", TensorProto.FLOAT, [batch, 1]))
    if extra_input:
        inputs.append(helper.make_tensor_value_info("temperature", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Identity", ["temperature"], ["unused"]))
        outputs.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "rectangle", inputs, outputs, initializer=inits)
    return _save(graph, path, metadata)


def feature_map_model(path: Path, size: Tuple[int, int] = (16, 16)) -> Path:
    """Not a classifier: returns its (N, 1, H, W) input doubled."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, *size])
    out = helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["N", 1, *size])
    graph = helper.make_graph([helper.make_node("Add", ["image", "image"], ["doubled"])], "features", [image], [out])
    return _save(graph, path)


def rectangle_logit(x: np.ndarray, rect: Sequence[int]) -> float:
    """What ``rectangle_model`` computes for class 0, for one (C, H, W) sample."""
    y0, x0, y1, x1 = rect
    return float(x[:, y0:y1, x0:x1].mean())


def linear_head_model(
    path: Path,
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    head: str = "none",
    out_shape: str = "NC",
    layout: str = "NCHW",
    input_type: int = TensorProto.FLOAT,
) -> Path:
    """logits = W . flatten(x) + b for one sample x in NCHW order, with W of shape (K, C, H, W).

    ``head``: "none" (logits), "sigmoid" or "softmax" after the linear layer. ``out_shape``: "NC", "N" (a
    single output squeezed to (N,)), or "NC11". ``layout`` NHWC transposes inside the graph; ``input_type``
    UINT8 (or another int) casts to float inside, like TF/TFLite exports that take raw pixels.
    """
    k, c, h, w = weights.shape
    shape = ["N", c, h, w] if layout == "NCHW" else ["N", h, w, c]
    image = helper.make_tensor_value_info("image", input_type, shape)
    nodes = []
    current = "image"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], ["as_float"], to=TensorProto.FLOAT))
        current = "as_float"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [current], ["nchw"], perm=[0, 3, 1, 2]))
        current = "nchw"
    nodes += [
        helper.make_node("Flatten", [current], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1),
    ]
    current = "logits"
    if head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [current], ["squashed"]))
        current = "squashed"
    elif head == "softmax":
        nodes.append(helper.make_node("Softmax", [current], ["squashed"], axis=1))
        current = "squashed"
    inits = [
        numpy_helper.from_array(weights.reshape(k, -1).astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
    ]
    if out_shape == "N":
        inits.append(_const("squeeze_axes", [1]))
        nodes.append(helper.make_node("Squeeze", [current, "squeeze_axes"], ["scores"]))
        out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])
    elif out_shape == "NC11":
        inits.append(_const("unsqueeze_axes", [2, 3]))
        nodes.append(helper.make_node("Unsqueeze", [current, "unsqueeze_axes"], ["scores"]))
        out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k, 1, 1])
    else:
        nodes.append(helper.make_node("Identity", [current], ["scores"]))
        out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k])
    graph = helper.make_graph(nodes, "linear_head", [image], [out], initializer=inits)
    return _save(graph, path)


def mean_colour_model(
    path: Path,
    classes: int = 1000,
    *,
    input_name: str = "pixel_values",
    shape: Sequence = ("batch_size", "num_channels", "height", "width"),
    seed: int = 0,
    metadata: Optional[dict] = None,
) -> Path:
    """logits = W . (the input's mean over height and width, per channel) + b, W (classes, 3) and b seeded: a
    classifier whose answer is known exactly for any input tensor. The default input is laid out as optimum
    exports transformers' image models (``pixel_values``, every axis dynamic; output ``logits``)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(classes, 3)).astype(np.float32)
    bias = rng.normal(scale=0.1, size=classes).astype(np.float32)
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(shape))
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["means", "W", "b"], ["logits"], transB=1),
    ]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], classes])
    inits = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")]
    return _save(helper.make_graph(nodes, "mean_colour", [image], [out], initializer=inits), path, metadata)


def mean_colour_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """What :func:`mean_colour_model` at ``path`` computes for one (3, H, W) sample, from its own weights."""
    model = onnx.load(str(path))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return tensors["W"].astype(np.float64) @ x.reshape(3, -1).mean(axis=1) + tensors["b"]
