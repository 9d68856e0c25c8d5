"""Occluded batches built inside onnxruntime (:func:`occlusion_pregraph`, :func:`with_pregraph`): an ONNX
graph placed in front of the model that takes the prepared image, the baseline and a small tensor of window
boxes, and gives the occluded batch the model reads.

Why: on a GPU, building hundreds of occluded copies on the host and sending them over PCIe takes longer than
scoring them. With the pre-graph, the image and the baseline go to the device once per image, and per batch
only the boxes (B x 2d integers) go there and only the scores come back.

Exactness: the batch is made with a boolean mask and ``Where`` (a select, no arithmetic), so every element is
the image's or the baseline's bit for bit, exactly as the host-built batch of
:func:`occlude_cli.core.engine.score_windows`. The pre-graph uses only operators whose definition has not
changed since opset 9 (``Gather``, ``Less``, ``Not``, ``And``, ``Reshape``, ``Where``), so it composes with any
model of opset 9 or later.

Box format: one row per window, the ``d`` starts then the ``d`` ends (exclusive) along the sample's spatial
axes, int64. An empty box (start == end) leaves the image as it is: fixed-batch models get their batches
padded with empty boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from occlude_cli.errors import OccludeError

IMAGE = "occlude_image"
BASELINE = "occlude_baseline"
BOXES = "occlude_boxes"
OCCLUDED = "occlude_occluded"
MIN_OPSET = 9
_ELEMENT_TYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
}


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise OccludeError("the model imports no standard ONNX opset: no pre-graph can be placed in front of it")


def occlusion_pregraph(
    sample_shape: Sequence[int],
    dtype: str,
    spatial_axes: Sequence[int],
    *,
    batch: int | None = None,
    opset: int = 13,
    ir_version: int | None = None,
) -> onnx.ModelProto:
    """The pre-graph for one sample shape: inputs ``occlude_image`` and ``occlude_baseline`` (the sample's
    shape and element type, no batch axis) and ``occlude_boxes`` (B, 2d) int64; output ``occlude_occluded``
    (B, *sample_shape), each row the image with its box replaced by the baseline.

    ``spatial_axes`` index the sample (no batch axis): (1, 2) for a CHW image, (0, 1) for HWC, (1, 2, 3) for
    a CDHW volume. ``batch``: a fixed number of rows (for fixed-batch models), or None for a dynamic batch.
    """
    shape = [int(s) for s in sample_shape]
    n = len(shape)
    axes = [int(a) % n for a in spatial_axes]
    if not axes or len(set(axes)) != len(axes):
        raise OccludeError(f"spatial_axes {tuple(spatial_axes)} must name distinct axes of a {n}-D sample")
    if dtype not in _ELEMENT_TYPES:
        raise OccludeError(f"no pre-graph for element type {dtype}: use one of {', '.join(_ELEMENT_TYPES)}")
    if opset < MIN_OPSET:
        raise OccludeError(f"the model's opset {opset} is older than {MIN_OPSET}, the first with Where")
    d = len(axes)
    rows: int | str = int(batch) if batch else "occlude_batch"
    nodes, inits = [], []
    masks = []
    for k, axis in enumerate(axes):
        length = shape[axis]
        inits.append(numpy_helper.from_array(np.arange(length, dtype=np.int64)[None, :], f"occlude_index_{k}"))
        inits.append(numpy_helper.from_array(np.asarray([k], dtype=np.int64), f"occlude_col_lo_{k}"))
        inits.append(numpy_helper.from_array(np.asarray([d + k], dtype=np.int64), f"occlude_col_hi_{k}"))
        view = [1] * (n + 1)
        view[0], view[axis + 1] = -1, length
        inits.append(numpy_helper.from_array(np.asarray(view, dtype=np.int64), f"occlude_view_{k}"))
        p = f"occlude_axis{k}_"
        nodes += [
            helper.make_node("Gather", [BOXES, f"occlude_col_lo_{k}"], [p + "lo"], axis=1),  # (B, 1)
            helper.make_node("Gather", [BOXES, f"occlude_col_hi_{k}"], [p + "hi"], axis=1),
            helper.make_node("Less", [f"occlude_index_{k}", p + "lo"], [p + "before"]),  # (B, L)
            helper.make_node("Not", [p + "before"], [p + "from"]),
            helper.make_node("Less", [f"occlude_index_{k}", p + "hi"], [p + "to"]),
            helper.make_node("And", [p + "from", p + "to"], [p + "inside"]),
            helper.make_node("Reshape", [p + "inside", f"occlude_view_{k}"], [p + "mask"]),
        ]
        masks.append(p + "mask")
    mask = masks[0]
    for k, other in enumerate(masks[1:], start=1):
        nodes.append(helper.make_node("And", [mask, other], [f"occlude_mask_{k}"]))
        mask = f"occlude_mask_{k}"
    nodes.append(helper.make_node("Where", [mask, BASELINE, IMAGE], [OCCLUDED]))
    element = _ELEMENT_TYPES[dtype]
    graph = helper.make_graph(
        nodes,
        "occlude_pregraph",
        [
            helper.make_tensor_value_info(IMAGE, element, shape),
            helper.make_tensor_value_info(BASELINE, element, shape),
            helper.make_tensor_value_info(BOXES, TensorProto.INT64, [rows, 2 * d]),
        ],
        [helper.make_tensor_value_info(OCCLUDED, element, [rows, *shape])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))], producer_name="occlude")
    if ir_version is not None:
        model.ir_version = int(ir_version)
    return model


def with_pregraph(
    model: onnx.ModelProto,
    input_name: str,
    sample_shape: Sequence[int],
    dtype: str,
    spatial_axes: Sequence[int],
    *,
    batch: int | None = None,
) -> onnx.ModelProto:
    """``model`` with the pre-graph composed in front of its image input ``input_name`` (``onnx.compose``):
    the result's inputs are the pre-graph's three, its outputs the model's."""
    if input_name not in {i.name for i in model.graph.input}:
        raise OccludeError(f"the model has no input named {input_name!r}")
    pre = occlusion_pregraph(
        sample_shape,
        dtype,
        spatial_axes,
        batch=batch,
        opset=_default_opset(model),
        ir_version=model.ir_version,
    )
    taken = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    taken |= {t.name for t in model.graph.initializer} | {v for node in model.graph.node for v in node.output}
    if taken & {IMAGE, BASELINE, BOXES, OCCLUDED}:
        raise OccludeError("the model already uses a name the pre-graph needs (occlude_*): no pre-graph")
    extra = [
        o
        for o in model.opset_import
        if o.domain not in ("", "ai.onnx") and o.domain not in [p.domain for p in pre.opset_import]
    ]
    pre.opset_import.extend(extra)  # merge_models wants the same opset imports on both sides
    # the pre-graph's intermediate names are occlude_* too, and no model name collides with them (checked above
    # for the interface; the rest are prefixed so nothing else can)
    pre = onnx.compose.add_prefix(pre, "occlude_pre/", rename_inputs=False, rename_outputs=False)
    return onnx.compose.merge_models(pre, model, io_map=[(OCCLUDED, input_name)])
