"""Receptive-field analysis of ONNX image graphs: which tensors are *local* and where their values come from.

A 4-D tensor T reachable from the image input is local when each of its spatial positions depends only on
an interval of input positions per spatial axis, the same interval shape everywhere, shifted by a constant
stride. Position ``j`` of T along one axis then depends on input positions

    [j * stride + offset, j * stride + offset + size - 1]        (before clipping to the image)

``offset`` is negative where padding reaches outside the image. Locality is what makes exact incremental
inference possible: occluding a window changes only the positions of T whose interval meets it.

The analysis follows the graph in topological order from the source tensor (the image input by default,
or any local tensor, to get receptive fields *relative* to it), through Conv (pads, strides, dilations,
groups, ``auto_pad`` resolved from the inferred sizes), MaxPool/AveragePool/LpPool (``ceil_mode``, pads),
Pad, element-wise ops against constants (that do not vary over space) or against tensors on the same grid,
channel Concat and Transpose (the batch axis must stay first; NHWC graphs are followed through their
transposes). Locality ends at the first op that is not one of those (GlobalAveragePool, ReduceMean over
space, Reshape/Flatten, MatMul/Gemm, Resize, Shape, attention...): its outputs and everything computed
from them are non-local.

Only the ``onnx`` package and the standard library are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from occlude_cli.errors import OccludeError

__all__ = [
    "Analysis",
    "AxisRF",
    "GraphInfo",
    "LocalTensor",
    "analyse",
    "cut_candidates",
    "local_tensors",
]

# Element-wise ops whose first input is data and whose other inputs, when not input-dependent, are
# parameters broadcast against it (right-aligned numpy broadcasting).
_UNARY = {
    "Relu",
    "LeakyRelu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "Erf",
    "Softplus",
    "Softsign",
    "Mish",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Cast",
    "Identity",
    "Dropout",
    "ThresholdedRelu",
    "Celu",
    "Not",
}
_BINARY = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "PRelu",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Mod",
    "BitShift",
}
_POOLS = {"MaxPool", "AveragePool", "LpPool"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class AxisRF:
    """Receptive field along one spatial axis, relative to the source tensor: position ``j`` depends on
    source positions ``[j * stride + offset, j * stride + offset + size)`` (before clipping)."""

    stride: int
    offset: int
    size: int

    def start(self, j: int) -> int:
        return j * self.stride + self.offset

    def stop(self, j: int) -> int:
        return j * self.stride + self.offset + self.size

    def touched(self, lo: int, hi: int, extent: int) -> Tuple[int, int]:
        """The positions ``[j0, j1)`` (clipped to ``[0, extent)``) whose field meets source interval [lo, hi)."""
        j0 = -((self.offset + self.size - 1 - lo) // self.stride)  # ceil((lo - offset - size + 1) / stride)
        j1 = (hi - 1 - self.offset) // self.stride + 1
        return max(0, j0), min(extent, j1)

    def conv(self, kernel: int, stride: int, dilation: int, pad_begin: int) -> AxisRF:
        """The field after a sliding window (convolution or pooling) over this tensor."""
        span = dilation * (kernel - 1) + 1
        return AxisRF(self.stride * stride, self.offset - pad_begin * self.stride, self.size + (span - 1) * self.stride)

    def merge(self, other: AxisRF) -> AxisRF:
        """The hull of two fields on the same grid (an element-wise op of two branches)."""
        lo = min(self.offset, other.offset)
        hi = max(self.offset + self.size, other.offset + other.size)
        return AxisRF(self.stride, lo, hi - lo)


@dataclass(frozen=True)
class LocalTensor:
    """A local 4-D tensor: its spatial axes (h, w), channel axis, per-axis field and inferred shape
    (batch 1; None where shape inference did not give it)."""

    name: str
    axes: Tuple[int, int]
    channel_axis: int
    rf: Tuple[AxisRF, AxisRF]
    shape: Optional[Tuple[int, ...]]

    @property
    def stride(self) -> Tuple[int, int]:
        return (self.rf[0].stride, self.rf[1].stride)

    @property
    def extent(self) -> Optional[Tuple[int, int]]:
        if self.shape is None:
            return None
        return (self.shape[self.axes[0]], self.shape[self.axes[1]])


@dataclass
class Analysis:
    """Result of :func:`analyse`: the local tensors (in topological order) and, when locality ended,
    the first op that ended it, as one line."""

    source: str
    tensors: Dict[str, LocalTensor]
    order: List[str]
    first_nonlocal: Optional[str]


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


class GraphInfo:
    """An ONNX model with concrete inferred shapes (batch 1), producers, consumers and constant tensors.

    ``input_shape`` (one sample with its batch axis of 1) fixes symbolic input dimensions; without it the
    declared shape is used with the batch set to 1.
    """

    def __init__(self, model, input_shape: Optional[Sequence[int]] = None, input_name: Optional[str] = None):
        import onnx

        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.exists():
                raise OccludeError(f"model not found: {path}")
            model = onnx.load(str(path))
        self.model = model
        self.path: Optional[Path] = None  # the model file, when the caller records it
        graph = model.graph
        init_names = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in init_names]
        if input_name is None:
            if len(inputs) != 1:
                raise OccludeError(f"model has {len(inputs)} inputs; give input_name")
            self.input = inputs[0]
        else:
            matches = [i for i in inputs if i.name == input_name]
            if not matches:
                raise OccludeError(f"model has no input named {input_name!r}")
            self.input = matches[0]
        self.input_name = self.input.name
        declared = [d.dim_value if d.HasField("dim_value") else None for d in self.input.type.tensor_type.shape.dim]
        if input_shape is None:
            known = [1] + declared[1:]
            if any(d is None or d <= 0 for d in known):
                raise OccludeError(f"input {self.input_name!r} has symbolic dimensions {declared}: give input_shape")
            shape = cast(List[int], known)  # no None left: checked just above
        else:
            shape = [1] + [int(d) for d in list(input_shape)[1:]]
        self.input_shape: Tuple[int, ...] = tuple(shape)
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.elem_types: Dict[str, int] = {}
        self._infer_shapes()
        self.producer: Dict[str, Any] = {}  # onnx NodeProto
        self.consumers: Dict[str, List[Any]] = {}
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.outputs = [o.name for o in graph.output]
        # tensors that depend on the image input
        self.dependent = {self.input_name}
        for node in graph.node:
            if any(i in self.dependent for i in node.input if i):
                self.dependent.update(o for o in node.output if o)

    def _infer_shapes(self) -> None:
        import onnx

        model = _shape_skeleton(self.model)
        graph = model.graph
        for value in graph.input:
            if value.name == self.input.name:
                dims = value.type.tensor_type.shape.dim
                if len(dims) != len(self.input_shape):
                    raise OccludeError(
                        f"input_shape {list(self.input_shape)} does not match the input's rank {len(dims)}"
                    )
                for dim, size in zip(dims, self.input_shape):
                    dim.Clear()
                    dim.dim_value = int(size)
        del graph.value_info[:]
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:  # noqa: BLE001 -- onnx raises several types for graphs it cannot infer
            raise OccludeError(f"shape inference failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
        for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            tensor_type = value.type.tensor_type
            self.elem_types[value.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
                if all(d is not None for d in dims):
                    self.shapes[value.name] = tuple(dims)
        for init in self.model.graph.initializer:
            self.shapes[init.name] = tuple(init.dims)
            self.elem_types[init.name] = init.data_type
        for node in inferred.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.shapes[node.output[0]] = tuple(node.attribute[0].t.dims)

    def constant_value(self, name: str) -> Optional[np.ndarray]:
        """The value of an initializer or Constant node output, else None."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            value = _attr(node, "value")
            if value is not None:
                return numpy_helper.to_array(value)
        return None


# Initializers that shape inference needs only as shapes: large floating-point (and 8-bit quantised) weights.
# Integer tensors and small ones (Reshape targets, Resize scales, Slice bounds) keep their values for data
# propagation.
_WEIGHT_TYPES = frozenset({1, 2, 3, 10, 11, 16})  # FLOAT, UINT8, INT8, FLOAT16, DOUBLE, BFLOAT16
_WEIGHT_MIN_ELEMENTS = 64


def _copy_fields(destination, source, skip=()) -> None:
    """Copy every set field of protobuf message ``source`` into ``destination``, except those named in ``skip``
    (repeated fields share their elements' contents by copy, as protobuf does)."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            getattr(destination, field.name).extend(value)
        elif field.message_type is not None:
            getattr(destination, field.name).CopyFrom(value)
        else:
            setattr(destination, field.name, value)


def _shape_skeleton(model):
    """A copy of ``model`` for shape inference in which the large weights are declared graph inputs of the same
    type and shape instead of initializers: the inferred shapes are the same, and onnx does not serialise and
    copy every weight (EfficientNet-Lite0: 5 ms instead of 75 ms)."""
    import onnx

    skeleton = onnx.ModelProto()
    _copy_fields(skeleton, model, skip=("graph",))
    source = model.graph
    graph = skeleton.graph
    _copy_fields(graph, source, skip=("initializer",))
    declared = {value.name for value in source.input}
    for init in source.initializer:
        elements = math.prod(init.dims) if len(init.dims) else 1
        if init.data_type in _WEIGHT_TYPES and elements > _WEIGHT_MIN_ELEMENTS:
            if init.name not in declared:
                graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            graph.initializer.append(init)
    return skeleton


def _pads(node, info: GraphInfo, data: str, kernel: Sequence[int], strides, dilations, local: LocalTensor):
    """Begin pads (h, w) of a Conv/Pool node, ``auto_pad`` resolved; raises ValueError when unsupported."""
    auto = _attr(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto == "VALID":
        return (0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        extent = local.extent
        if extent is None:
            raise ValueError("auto_pad SAME with an unknown input size")
        begins = []
        for n, k, s, d in zip(extent, kernel, strides, dilations):
            total = max(0, (math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n)
            begins.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return tuple(begins)
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    if len(pads) != 4:
        raise ValueError(f"pads {pads} is not 2-D")
    if min(pads) < 0:
        raise ValueError("negative pads")
    return (pads[0], pads[1])


def _broadcast_ok(shape: Optional[Tuple[int, ...]], local: LocalTensor) -> bool:
    """A parameter of this shape, broadcast against the 4-D local tensor, does not vary over space or batch."""
    if shape is None:
        return False
    if len(shape) > 4:
        return False
    full = (1,) * (4 - len(shape)) + tuple(shape)
    return full[0] == 1 and full[local.axes[0]] == 1 and full[local.axes[1]] == 1


def analyse(
    model,
    *,
    source: Optional[str] = None,
    layout: Optional[str] = None,
    input_shape: Optional[Sequence[int]] = None,
    info: Optional[GraphInfo] = None,
    source_axes: Optional[Tuple[int, int]] = None,
) -> Analysis:
    """Local tensors of ``model`` relative to ``source`` (the image input by default).

    ``layout`` ("NCHW"/"NHWC") says where the input's spatial axes are (guessed from a channel count of
    1 or 3 when omitted); for another ``source`` its axes are given by ``source_axes`` or taken from the
    analysis from the input.
    """
    info = info or GraphInfo(model, input_shape=input_shape)
    graph = info.model.graph
    if source is None or source == info.input_name:
        source = info.input_name
        shape = info.input_shape
        if len(shape) != 4:
            raise OccludeError(f"input {source!r} has rank {len(shape)}: a 4-D image input is needed")
        if layout is None:
            layout = "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
        if layout not in ("NCHW", "NHWC"):
            raise OccludeError(f"layout must be NCHW or NHWC, got {layout!r}")
        axes = (2, 3) if layout == "NCHW" else (1, 2)
        channel = 1 if layout == "NCHW" else 3
        reachable = None
    else:
        if source_axes is None:
            base = analyse(model, layout=layout, info=info)
            if source not in base.tensors:
                raise OccludeError(f"tensor {source!r} is not a local tensor of the graph")
            axes = base.tensors[source].axes
            channel = base.tensors[source].channel_axis
        else:
            axes = cast(Tuple[int, int], tuple(source_axes))
            channel = ({1, 2, 3} - set(axes)).pop()
        reachable = {source}
    unit = AxisRF(1, 0, 1)
    tensors: Dict[str, LocalTensor] = {
        source: LocalTensor(source, axes, channel, (unit, unit), info.shapes.get(source))
    }
    order = [source]
    dependent = {source}
    first_nonlocal: Optional[str] = None

    def fail(node, reason: str) -> None:
        nonlocal first_nonlocal
        dependent.update(o for o in node.output if o)
        if first_nonlocal is None:
            first_nonlocal = f"{node.op_type} node {node.name or node.output[0]!r}: {reason}"

    for node in graph.node:
        dep_inputs = [i for i in node.input if i and i in dependent]
        if not dep_inputs:
            continue
        if reachable is not None:
            reachable.update(node.output)
        outs = [o for o in node.output if o]
        if any(i not in tensors for i in dep_inputs):
            dependent.update(outs)  # computed from a non-local tensor: non-local too, already reported
            continue
        op = node.op_type
        data = tensors[dep_inputs[0]]
        try:
            result = _propagate(node, op, info, tensors, dep_inputs, data)
        except ValueError as exc:
            fail(node, str(exc))
            continue
        if result is None:
            fail(node, "not a local op")
            continue
        out_name = node.output[0]
        out_shape = info.shapes.get(out_name)
        if out_shape is not None and len(out_shape) != 4:
            fail(node, f"output has rank {len(out_shape)}")
            continue
        tensors[out_name] = LocalTensor(out_name, result[0], result[1], result[2], out_shape)
        order.append(out_name)
        dependent.update(outs)
        extra = outs[1:]
        if first_nonlocal is None and any(info.consumers.get(o) or o in info.outputs for o in extra):
            first_nonlocal = f"{op} node {node.name or out_name!r}: extra outputs are not local"
    return Analysis(source=source, tensors=tensors, order=order, first_nonlocal=first_nonlocal)


def _propagate(node, op: str, info: GraphInfo, tensors, dep_inputs, data: LocalTensor):
    """(axes, channel_axis, rf) of the node's first output, or None / ValueError when not local."""
    axes, channel, rf = data.axes, data.channel_axis, data.rf
    if op == "Conv" or op in _POOLS:
        return axes, channel, _window_rf(node, op, info, dep_inputs, data)
    if op == "Pad":
        return axes, channel, _pad_rf(node, info, dep_inputs, data)
    if op == "Transpose":
        perm = list(_attr(node, "perm", [3, 2, 1, 0]))
        if len(perm) != 4 or perm[0] != 0:
            raise ValueError("moves the batch axis")
        return (perm.index(axes[0]), perm.index(axes[1])), perm.index(channel), rf
    if op == "Concat":
        axis = int(_attr(node, "axis", 0)) % 4
        if axis != channel:
            raise ValueError("concatenates along a non-channel axis")
        return _same_grid(node, info, tensors, dep_inputs, data, params_ok=False)
    if op == "BatchNormalization":
        if len(dep_inputs) != 1 or node.input[0] != data.name:
            raise ValueError("statistics computed from the image")
        if channel != 1:
            raise ValueError("input is not NCHW")
        if len([o for o in node.output if o]) > 1:
            raise ValueError("training mode")
        return axes, channel, rf
    if op in _QDQ:
        if len(dep_inputs) != 1 or node.input[0] != data.name:
            raise ValueError("scale computed from the image")
        scale = info.shapes.get(node.input[1])
        if scale is None:
            raise ValueError("unknown scale shape")
        if len(scale) > 0 and int(np.prod(scale)) > 1:
            axis = int(_attr(node, "axis", 1)) % 4
            if axis != channel or len(scale) != 1:
                raise ValueError("quantisation axis is not the channel axis")
        return axes, channel, rf
    if op in _UNARY or op in _BINARY:
        if op == "Dropout" and len([o for o in node.output if o]) > 1 and info.consumers.get(node.output[1]):
            raise ValueError("mask output")
        return _same_grid(node, info, tensors, dep_inputs, data, params_ok=True)
    return None


def _window_rf(node, op: str, info: GraphInfo, dep_inputs, data: LocalTensor) -> tuple:
    """The receptive field after a convolution or a pooling window."""
    if node.input[0] != data.name or len(dep_inputs) != 1:
        raise ValueError("weights computed from the image")
    if data.axes != (2, 3):
        raise ValueError("input is not NCHW")
    kernel = _attr(node, "kernel_shape")
    if op == "Conv" and kernel is None:
        wshape = info.shapes.get(node.input[1])
        if wshape is None:
            raise ValueError("unknown kernel shape")
        kernel = wshape[2:]
    if op == "MaxPool" and len([o for o in node.output if o]) > 1:
        raise ValueError("MaxPool indices are positions in the whole tensor")
    kernel = list(kernel)
    if len(kernel) != 2:
        raise ValueError(f"kernel {kernel} is not 2-D")
    strides = list(_attr(node, "strides", [1, 1]))
    dilations = list(_attr(node, "dilations", [1, 1]))
    begins = _pads(node, info, node.input[0], kernel, strides, dilations, data)
    return tuple(data.rf[i].conv(kernel[i], strides[i], dilations[i], begins[i]) for i in range(2))


def _pad_rf(node, info: GraphInfo, dep_inputs, data: LocalTensor) -> tuple:
    """The receptive field after a Pad: shifted by constant padding, widened by reflect or edge padding."""
    if len(dep_inputs) != 1 or node.input[0] != data.name:
        raise ValueError("pads computed from the image")
    if len(node.input) > 1 and node.input[1]:
        pads_value = info.constant_value(node.input[1])
        if pads_value is None:
            raise ValueError("pads are not constant")
        pads = [int(p) for p in pads_value.reshape(-1)]
    else:
        pads = list(_attr(node, "pads", []))
    pad_axes = list(range(4))
    if len(node.input) > 3 and node.input[3]:
        value = info.constant_value(node.input[3])
        if value is None:
            raise ValueError("axes are not constant")
        pad_axes = [int(a) % 4 for a in value.reshape(-1)]
    k = len(pad_axes)
    if len(pads) != 2 * k:
        raise ValueError("pads do not match axes")
    begin = {a: pads[i] for i, a in enumerate(pad_axes)}
    end = {a: pads[i + k] for i, a in enumerate(pad_axes)}
    if begin.get(0, 0) or end.get(0, 0):
        raise ValueError("pads the batch axis")
    if any(v < 0 for v in list(begin.values()) + list(end.values())):
        raise ValueError("negative pads crop the tensor")
    mode = _attr(node, "mode", "constant") or "constant"
    rf, axes = data.rf, data.axes
    if mode == "constant":
        return tuple(AxisRF(r.stride, r.offset - begin.get(a, 0) * r.stride, r.size) for r, a in zip(rf, axes))
    if mode in ("reflect", "edge"):
        # a padded position copies a position up to 2 * pad away (reflect) or the edge: widen the field
        # of every position to cover the copies, so that the interval stays a superset everywhere
        k = 2 if mode == "reflect" else 1
        return tuple(
            AxisRF(
                r.stride,
                r.offset - (begin.get(a, 0) + k * end.get(a, 0)) * r.stride,
                r.size + k * (begin.get(a, 0) + end.get(a, 0)) * r.stride,
            )
            for r, a in zip(rf, axes)
        )
    raise ValueError(f"pad mode {mode!r} copies positions from the far side")


def _same_grid(node, info, tensors, dep_inputs, data: LocalTensor, *, params_ok: bool):
    rf = data.rf
    for name in dep_inputs[1:]:
        other = tensors[name]
        if other.axes != data.axes or other.channel_axis != data.channel_axis:
            raise ValueError("inputs have different layouts")
        if other.stride != data.stride:
            raise ValueError("inputs are on different grids")
        if other.extent is None or data.extent is None or other.extent != data.extent:
            raise ValueError("inputs have different or unknown spatial sizes")
        rf = (rf[0].merge(other.rf[0]), rf[1].merge(other.rf[1]))
    for name in node.input:
        if not name or name in dep_inputs:
            continue
        if not params_ok:
            raise ValueError("mixes the image with a constant tensor")
        if not _broadcast_ok(info.shapes.get(name), data):
            raise ValueError(f"parameter {name!r} varies over space or has an unknown shape")
    return data.axes, data.channel_axis, rf


def local_tensors(
    model, *, layout: Optional[str] = None, input_shape: Optional[Sequence[int]] = None
) -> Dict[str, LocalTensor]:
    """Every local 4-D tensor reachable from the image input, with its field relative to the input."""
    return analyse(model, layout=layout, input_shape=input_shape).tensors


def _dominates(info: GraphInfo, source: str, cut: str, targets: Sequence[str]) -> bool:
    """True when every path from ``source`` to any of ``targets`` crosses tensor ``cut``."""
    seen = {source}
    stack = [source]
    while stack:
        name = stack.pop()
        if name in targets:
            return False
        for node in info.consumers.get(name, ()):
            for out in node.output:
                if out and out != cut and out not in seen:
                    seen.add(out)
                    stack.append(out)
    return True


def cut_candidates(
    model,
    *,
    layout: Optional[str] = None,
    input_shape: Optional[Sequence[int]] = None,
    output: Optional[str] = None,
    info: Optional[GraphInfo] = None,
    analysis: Optional[Analysis] = None,
) -> List[LocalTensor]:
    """Local 4-D tensors (not the input, not the output) that every input-to-output path crosses, in
    topological order: the places where the graph can be split into an incremental prefix and a suffix."""
    info = info or GraphInfo(model, input_shape=input_shape)
    analysis = analysis or analyse(model, layout=layout, info=info)
    targets = [output] if output else info.outputs
    result = []
    for name in analysis.order[1:]:
        if name in targets:
            continue
        local = analysis.tensors[name]
        if local.shape is None:
            continue
        if _dominates(info, info.input_name, name, targets):
            result.append(local)
    return result
