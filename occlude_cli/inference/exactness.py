"""Which graphs an incremental plan reproduces bit for bit, decided from the graph alone, before any image.

A plan computes every window's outputs from crops and pasted tensors instead of one whole pass: the same
operations on the same values, but with other tensor sizes, other kernel blockings and other fusions at the
cuts, so in another summation order. In float32 (or wider) that moves an output by float noise. Where the
arithmetic rounds coarsely (float16: three decimal digits) or rounds to a step (quantisation, integers,
Floor, comparisons), the same noise crosses a rounding boundary now and then and becomes a whole step of
the output: one window of a QDQ int8 ResNet-18 lost half its drop that way (:func:`inexact_arithmetic`).
Also the one error of the engine room's incremental inference, :class:`IncrementalUnavailable`.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from occlude_cli.errors import OccludeError

# onnx TensorProto element types coarser than float32: float16, bfloat16, float8 (4 kinds), 4-bit ints and floats
_COARSE = {10: "float16", 16: "bfloat16", 17: "float8", 18: "float8", 19: "float8", 20: "float8", 21: "uint4"}
_COARSE.update({22: "int4", 23: "float4", 24: "float8", 25: "uint2", 26: "int2"})


_FLOAT_TYPES = {1, 11} | set(_COARSE) - {21, 22, 25, 26}  # float32, double and the coarse floats


# ops whose output jumps where an input crosses a threshold (float noise becomes a step)
_STEP_OPS = {"Round", "Floor", "Ceil", "Sign", "ThresholdedRelu", "Shrink", "Mod", "Hardmax", "BitShift"}


# ops that only move values (no rounding of their own): exact in any element type
_MOVES = {
    "Identity",
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Pad",
    "Concat",
    "Split",
    "Gather",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "MaxPool",
    "Relu",
    "Neg",
    "Abs",
    "Max",
    "Min",
    "Dropout",
}


# ops reading only a tensor's shape, or whether values are NaN/inf (noise never makes either)
_SHAPE_ONLY = {"Shape", "Size", "IsNaN", "IsInf"}


def _quantised(op: str) -> bool:
    """Operators that round to a quantisation grid or compute on it. Not DequantizeLinear: it only scales
    integers, exactly the same way for every element (an int8 image input read by DequantizeLinear keeps a
    float32 graph exact); integers that came from floats were rounded by the node that made them."""
    return (
        "Quantize" in op  # QuantizeLinear, DynamicQuantizeLinear, DynamicQuantizeMatMul (not Dequantize...)
        or op.startswith("QLinear")  # QLinearConv, QLinearMatMul, com.microsoft's QLinearAdd, ...
        or op.endswith("Integer")  # ConvInteger, MatMulInteger
        or "IntegerTo" in op  # MatMulIntegerToFloat
        or op in ("QGemm", "QAttention", "MatMulNBits", "MatMulBnb4")
    )


def _element_types(model) -> Dict[str, int]:
    """Element type of every tensor onnx's type inference (or the graph's own declarations) gives."""
    import onnx

    from .receptive import _shape_skeleton

    types: Dict[str, int] = {}
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(_shape_skeleton(model)).graph
    except Exception:  # noqa: BLE001 -- a graph onnx cannot infer: the declared types and the op rules remain
        inferred = graph
    for value in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def inexact_arithmetic(model, output: Optional[str] = None) -> Optional[str]:
    """Why incremental inference cannot reproduce the full passes of ``model`` (a ModelProto or a path) bit for
    bit, as one line naming the first node that rules it out; None when its arithmetic is float32 or wider and
    free of rounding steps (then a plan equals full passes to float noise).

    Only the nodes that depend on the image input and lead to ``output`` (default: any output) count: any
    that computes in a type coarser than float32 (float16, bfloat16, float8, 4-bit), any quantised operator
    (QuantizeLinear, QLinear*, ConvInteger, MatMulInteger, ...; DequantizeLinear only scales integers and is
    exact), any conversion of float
    values to integers or booleans (Cast, comparisons, ArgMax, ...) and any step function (Round, Floor, Ceil,
    Sign, Mod, ThresholdedRelu, ...). Ops that only move values (Transpose, Reshape, Relu, MaxPool, ...)
    keep them exact in any type.
    """
    if not hasattr(model, "graph"):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    return _inexact(model, output, _element_types(model))


def inexact_outputs(model) -> Dict[str, Optional[str]]:
    """:func:`inexact_arithmetic` of every output of ``model`` (a ModelProto), by output name."""
    types = _element_types(model)
    return {out.name: _inexact(model, out.name, types) for out in model.graph.output}


def _inexact(model, output: Optional[str], types: Dict[str, int]) -> Optional[str]:
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    dependent = {i.name for i in graph.input if i.name not in inits}
    wanted: Optional[set] = None
    if output is not None:
        producer = {out: node for node in graph.node for out in node.output if out}
        wanted = set()
        stack = [output]
        while stack:
            name = stack.pop()
            node = producer.get(name)
            if node is None or id(node) in wanted:
                continue
            wanted.add(id(node))
            stack.extend(i for i in node.input if i)
    for node in graph.node:
        inputs = [i for i in node.input if i and i in dependent]
        if not inputs:
            continue
        dependent.update(o for o in node.output if o)
        if wanted is not None and id(node) not in wanted:
            continue
        reason = _node_problem(node, inputs, types)
        if reason is not None:
            return f"{reason} ({node.op_type} node {node.name or node.output[0]!r})"
    return None


def _node_problem(node, inputs: List[str], types: Dict[str, int]) -> Optional[str]:
    """What in one input-dependent node rounds more coarsely than float noise, or None."""
    op = node.op_type
    if _quantised(op):
        return "quantised arithmetic"
    if op in _SHAPE_ONLY:
        return None
    in_types = [types.get(i) for i in inputs]
    out_types = [types.get(o) for o in node.output if o]
    float_in = any(t in _FLOAT_TYPES for t in in_types)
    if op in _STEP_OPS:
        return "a rounding step on input-dependent values"
    if float_in and any(t is not None and t not in _FLOAT_TYPES for t in out_types):
        named = sorted({_type_name(t) for t in out_types if t is not None and t not in _FLOAT_TYPES})
        return f"input-dependent floats converted to {', '.join(named)}"
    coarse = sorted({_COARSE[t] for t in out_types if t in _COARSE})
    if coarse and not (op in _MOVES and all(t in _COARSE for t in in_types)):
        return f"arithmetic in {', '.join(coarse)}"
    for attr in node.attribute:  # If/Loop/Scan bodies: their ops by name (types are not tracked inside)
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                if _quantised(inner.op_type) or inner.op_type in _STEP_OPS:
                    return f"a {inner.op_type} inside a subgraph"
    return None


def _type_name(elem_type: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


NOT_BIT_FOR_BIT = "incremental inference cannot reproduce its full passes bit for bit"


class IncrementalUnavailable(OccludeError):
    """Incremental inference does not apply to this graph (or failed its self-check); the message says why.
    ``structural``: the graph itself rules it out (no cut point), whatever the input."""

    def __init__(self, message: str, *, structural: bool = False):
        super().__init__(message)
        self.structural = structural
