"""Exact incremental inference for occlusion on ONNX CNNs (issue 15; Krypton-style, for any ONNX graph).

Occluding a window changes only the positions of an early, high-resolution tensor T whose receptive field
meets the window. So the graph is split at one or a chain of *cut* tensors T1 -> T2 -> ... -> Tk (local
tensors that every input-to-output path crosses, see :mod:`occlude_cli.inference.receptive`):

1. once per image, every segment (input -> T1, T1 -> T2, ...) runs on the whole unoccluded tensor: T1_full...
2. for a batch of windows, segment 1 runs only on a *crop* of each occluded input around its window; the
   positions of T1 the window changed (the window mapped through T1's receptive field) are taken from the
   crop's output. Segment 2 runs on a crop of T1_full with those changed positions pasted in, and so on.
3. the suffix (Tk -> output) runs on copies of Tk_full with the changed positions pasted in.

Exactness, not approximation: every crop has one fixed size per axis (so crops batch together), congruent
to the tensor's size modulo the segment's total stride, and starts on a multiple of that stride. Then every
layer of the segment sees the crop on the same grid as the whole tensor, and the crop's borders are either
the tensor's own borders (where the crop then pads exactly as the whole tensor does) or far enough from the
changed positions that its wrong zero padding cannot reach them (the changed positions' receptive fields
lie inside the crop). Results equal the full model's to float noise: the same operations on the same values,
in another summation order. That holds for float32 (and wider) arithmetic only: a graph that computes in
float16 or in quantised steps, or rounds to integers, turns the same noise into whole rounding steps now and
then, so such graphs are refused from the graph alone (:func:`inexact_arithmetic`) unless an approximate plan
is asked for. A self-check at build time verifies every plan on this machine (crop outputs against the whole
tensor, and end to end the explained score's drop against full passes, on windows of every position class)
and refuses the plan otherwise.

The cut chain is chosen by a cost model (multiply-adds and memory traffic per node, scaled by the crop's
share of each segment) and the best few chains are then timed on real batches against the full model.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from occlude_cli.errors import OccludeError

from . import cache
from .receptive import AxisRF, GraphInfo, LocalTensor, analyse, cut_candidates

__all__ = [
    "IncrementalScorer",
    "IncrementalUnavailable",
    "Segment",
    "build_plan",
    "extract",
    "inexact_arithmetic",
    "inexact_outputs",
    "try_build_plan",
]

# Memory traffic weight of the cost model: one output element costs as much as this many multiply-adds
# (depthwise convolutions and activations are memory-bound on CPUs).
_ELEMENT_COST = 24.0
# Cost of one element a segment's crop (or the suffix's whole input) moves per window, in multiply-add
# equivalents: copied into the batch, pasted, reordered by onnxruntime into its blocked layout and read back.
# Calibrated on this project's 2-core machines (benchmarks/README.md): at 8, the planner cut at the widest
# tensors (the 96- to 240-channel expansions of inverted residual blocks) and EfficientNet-Lite0 ran 1.45x
# (patch 16) and 1.15x (patch 48) faster than full passes; at 96 it cuts at the narrow block outputs: 1.53x
# and 1.44x. ResNet-18- and VGG-like plans are the same either way; MobileNetV2-like 1.58x -> 1.65x.
_CROP_ELEMENT_COST = 96.0


# ------------------------------------------------------------------------------------------------------
# Exactness: which graphs' arithmetic a plan reproduces
# ------------------------------------------------------------------------------------------------------

# A plan computes every window's outputs from crops and pasted tensors instead of one whole pass: the same
# operations on the same values, but with other tensor sizes, other kernel blockings and other fusions at the
# cuts, so in another summation order. In float32 (or wider) that moves an output by float noise. Where the
# arithmetic rounds coarsely (float16: three decimal digits) or rounds to a step (quantisation, integers,
# Floor, comparisons), the same noise crosses a rounding boundary now and then and becomes a whole step of
# the output: one window of a QDQ int8 ResNet-18 lost half its drop that way. Such graphs are decided from
# the graph alone, before any image (see :func:`inexact_arithmetic`).

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


class IncrementalUnavailable(OccludeError):
    """Incremental inference does not apply to this graph (or failed its self-check); the message says why.
    ``structural``: the graph itself rules it out (no cut point), whatever the input."""

    def __init__(self, message: str, *, structural: bool = False):
        super().__init__(message)
        self.structural = structural


def extract(model, inputs: Sequence[str], outputs: Sequence[str], info: Optional[GraphInfo] = None):
    """The sub-model computing ``outputs`` from ``inputs`` (tensors of ``model``), as a new ModelProto.

    Inputs and outputs get fully symbolic shapes of their rank (crops and batches vary); intermediate
    ``value_info`` is dropped so that no stale shape pins a dimension. Raises when the outputs need the
    model's graph input other than through ``inputs``.
    """
    import onnx
    from onnx import helper

    graph = model.graph
    producer = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = index
    inits = {t.name: t for t in graph.initializer}
    wanted = set(inputs)
    needed_nodes = set()
    needed_inits = set()
    stack = list(outputs)
    seen = set()
    graph_inputs = {i.name for i in graph.input if i.name not in inits}
    while stack:
        name = stack.pop()
        if name in seen or name in wanted or not name:
            continue
        seen.add(name)
        if name in inits:
            needed_inits.add(name)
            continue
        if name in producer:
            index = producer[name]
            if index not in needed_nodes:
                needed_nodes.add(index)
                node = graph.node[index]
                stack.extend(node.input)
                for attr in node.attribute:  # outer-scope names used by subgraphs
                    subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                    for sub in (n for g in subgraphs for n in g.node):
                        stack.extend(sub.input)
            continue
        if name in graph_inputs:
            raise IncrementalUnavailable(
                f"tensor(s) {list(outputs)} depend on input {name!r} other than through {list(inputs)}"
            )
    elem = {}
    ranks = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        elem[value.name] = value.type.tensor_type.elem_type
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    if info is not None:
        for name, value in info.elem_types.items():
            elem.setdefault(name, value)
        for name, shape in info.shapes.items():
            ranks.setdefault(name, len(shape))

    def value_info(name: str, prefix: str):
        if name not in elem or name not in ranks:
            raise IncrementalUnavailable(f"unknown type or rank of tensor {name!r}")
        return helper.make_tensor_value_info(name, elem[name], [f"{prefix}{i}" for i in range(ranks[name])])

    declared_outputs = {o.name: o for o in graph.output}
    new_outputs = [declared_outputs[o] if o in declared_outputs else value_info(o, "o") for o in outputs]
    if any(o in declared_outputs for o in outputs):  # the model's own output: free its batch dimension
        fixed = []
        for out in new_outputs:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(out)
            dims = copy.type.tensor_type.shape.dim
            if len(dims):
                dims[0].Clear()
                dims[0].dim_param = "batch"
            fixed.append(copy)
        new_outputs = fixed
    new_graph = helper.make_graph(
        [graph.node[i] for i in sorted(needed_nodes)],
        f"{graph.name or 'graph'}_part",
        [value_info(i, "i") for i in inputs],
        new_outputs,
        initializer=[inits[n] for n in sorted(needed_inits)],
    )
    new = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    new.ir_version = model.ir_version
    new.functions.extend(model.functions)
    return new


@dataclass
class Segment:
    """One part of the chain: ``source`` -> ``target`` run on crops of ``source``."""

    source: str
    target: str
    rf: Tuple[AxisRF, AxisRF]  # target's field relative to source
    source_axes: Tuple[int, int]  # spatial axes of source (with the batch axis first)
    target_axes: Tuple[int, int]
    source_extent: Tuple[int, int]
    target_extent: Tuple[int, int]
    session: Any = None  # onnxruntime InferenceSession

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.source: batch})[0]
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's own error types, as one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise IncrementalUnavailable(
                f"onnxruntime failed on the part {self.source!r} -> {self.target!r} "
                f"for shape {list(batch.shape)}: {first}"
            ) from None


def _session(model, threads: Optional[int], providers: Optional[Sequence[str]]):
    """An onnxruntime session of ``model``: a ModelProto, its serialised bytes or a file path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # every failure of a part is handled (a fixed-batch suffix is retried one window at a time, anything else
    # falls back to full passes with a one-line note): onnxruntime's own error log would only alarm the user
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = int(threads)
    # several sessions alternate on every batch: spinning threads of one would steal the cores of the next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))


def _slices(axes: Tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> tuple:
    """An index tuple for one sample (no batch axis) whose spatial axes are ``axes``: rows y0:y1, columns x0:x1
    (the axes after the last spatial one are taken whole)."""
    index = [slice(None)] * (max(axes) + 1)
    index[axes[0]] = slice(y0, y1)
    index[axes[1]] = slice(x0, x1)
    return tuple(index)


@dataclass
class _Geometry:
    """Per-window, per-segment crops: origin (N, 2) in source positions, fixed size (2,), and the target's
    changed interval (N, 2, 2: axis, [lo, hi)) in target positions. :meth:`IncrementalScorer.geometry` also
    turns them, once per call, into the index tuples the per-window copies use (no batch axis)."""

    origins: List[np.ndarray]
    sizes: List[Tuple[int, int]]
    changed: List[np.ndarray]
    crops: List[List[tuple]] = field(default_factory=list)  # [k][w]: the crop of T_k (source of segment k)
    occluded: List[Optional[Tuple[tuple, tuple]]] = field(default_factory=list)  # [w]: (in the crop, in the input)
    pastes: List[List[Optional[Tuple[tuple, tuple]]]] = field(default_factory=list)  # [k][w]: (from, to)
    reach: List[np.ndarray] = field(default_factory=list)  # [k]: (N, 2, 2) read extent in segment k's crop output
    covered: Dict[int, tuple] = field(default_factory=dict)  # [k]: a crop output shape all windows' reach fits in


class IncrementalScorer:
    """Raw outputs of an ONNX model for occluded copies of one input, computed incrementally.

    Built by :func:`build_plan`. :meth:`score_windows` has the engine's ``score_windows`` contract minus
    the score function: it returns what running the full model on each occluded input returns.
    """

    def __init__(
        self,
        *,
        model_path: Path,
        input_name: str,
        output_name: str,
        input_axes: Tuple[int, int],
        input_extent: Tuple[int, int],
        segments: List[Segment],
        suffix,
        suffix_batched: bool = True,
        full=None,
    ) -> None:
        self.model_path = model_path
        self.input_name = input_name
        self.output_name = output_name
        self.input_axes = input_axes
        self.input_extent = input_extent
        self.segments = segments
        self.suffix = suffix
        self.suffix_batched = suffix_batched
        self.full = full
        self.dtype = np.float32
        # the self-check: the largest drop difference against full passes, relative to the largest drop, on
        # check_windows windows (see _SelfCheck); exact: False for a plan of a graph that rounds coarsely
        # (inexact: why, see inexact_arithmetic), built only when asked for an approximate plan
        self.check_error: Optional[float] = None
        self.check_windows = 0
        self.exact = True
        self.inexact: Optional[str] = None
        self.window: Tuple[int, int] = (1, 1)  # the patch the plan was built and checked for
        self.estimated_speedup: Optional[float] = None  # the cost model's (multiply-adds + memory traffic)
        self.notes: List[str] = []
        self.timings: Dict[str, float] = {}
        # Safe to share between threads (onnxruntime sessions are): the whole tensors of the last input and the
        # last windows' geometry are tuples replaced at once, and each thread keeps its own copies of the last
        # tensor.
        self._whole: Optional[Tuple[np.ndarray, List[np.ndarray]]] = None  # (input, its whole tensors)
        self._geometry: Optional[Tuple[tuple, _Geometry]] = None  # (windows, their geometry)
        self._local = threading.local()  # .tail, .base: copies of the last whole tensor, kept between batches
        self._parts: List[bytes] = []  # serialised sub-models (segments, then the suffix) until cached

    @property
    def cuts(self) -> List[str]:
        return [s.target for s in self.segments]

    def describe(self) -> dict:
        """What the plan is, for the run record."""
        return {
            "cuts": self.cuts,
            "segment_strides": [[s.rf[0].stride, s.rf[1].stride] for s in self.segments],
            "exact": self.exact,
            "inexact_arithmetic": self.inexact,
            "self_check_max_rel_error": self.check_error,
            "self_check_windows": self.check_windows,
            "estimated_speedup": None if self.estimated_speedup is None else round(self.estimated_speedup, 3),
            "notes": list(self.notes),
            "timings_ms_per_window": {k: round(v * 1e3, 4) for k, v in self.timings.items()},
        }

    def measure_error(self, sample: np.ndarray, baseline: np.ndarray, *, score=None, target=None) -> float:
        """The self-check's end-to-end measure on another input: the largest difference of the explained
        score's drop between this plan and full passes, relative to the largest drop, on one window of each
        position class (10 full passes). What an approximate plan's map is off by on that input."""
        if self.full is None:
            raise OccludeError("this plan has no session of the whole model to compare with")
        dtype = self.dtype
        check = _SelfCheck(
            self.full,
            np.asarray(sample, dtype=dtype),
            np.asarray(baseline, dtype=dtype),
            self.input_extent,
            self.window,
            self.input_axes,
            CHECK_TOLERANCE,
            score=score,
            target=target,
            approximate=True,
        )
        return check.error(self)

    # -- whole tensors -------------------------------------------------------------------------------
    def _full_tensors(self, inputs: np.ndarray) -> List[np.ndarray]:
        """[input, T1_full, ..., Tk_full] for one sample (each with a batch axis of 1), cached per input."""
        whole = self._whole
        if whole is not None and whole[0].shape == inputs.shape and np.array_equal(whole[0], inputs):
            return whole[1]
        tensors = [inputs[None]]
        for segment in self.segments:
            tensors.append(segment.run(tensors[-1]))
        self._whole = (inputs.copy(), tensors)
        return tensors

    def _run_suffix(self, batch: np.ndarray) -> np.ndarray:
        name = self.segments[-1].target
        try:
            if self.suffix_batched:
                out = self.suffix.run([self.output_name], {name: batch})[0]
            else:
                out = np.concatenate(
                    [self.suffix.run([self.output_name], {name: batch[i : i + 1]})[0] for i in range(len(batch))]
                )
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's own error types, as one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise IncrementalUnavailable(
                f"onnxruntime failed on the part {name!r} -> {self.output_name!r} "
                f"for shape {list(batch.shape)}: {first}"
            ) from None
        out = np.asarray(out)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        return out

    def full_outputs(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of the plain full model on a batch (the original input, comparisons)."""
        return self.full.run(batch)

    # -- geometry ------------------------------------------------------------------------------------
    def geometry(self, windows: np.ndarray) -> _Geometry:
        """Crops and changed intervals of every window through the chain (vectorised); the last one is kept, so
        that the images of a folder, which share their windows, compute it once."""
        windows = np.asarray(windows, dtype=np.int64)
        fields = tuple((r.stride, r.offset, r.size) for segment in self.segments for r in segment.rf)
        key = (windows.shape, windows.tobytes(), fields)
        if self._geometry is not None and self._geometry[0] == key:
            return self._geometry[1]
        geo = self._geometry_of(windows)
        self._geometry = (key, geo)
        return geo

    def _geometry_of(self, windows: np.ndarray) -> _Geometry:
        lo = np.stack([windows[:, 0], windows[:, 1]], axis=1)
        hi = lo + np.stack([windows[:, 2], windows[:, 3]], axis=1)
        extent = np.asarray(self.input_extent)
        lo, hi = np.clip(lo, 0, extent), np.clip(hi, 0, extent)
        origins, sizes, changed = [], [], []
        for segment in self.segments:
            n_src = np.asarray(segment.source_extent)
            n_dst = np.asarray(segment.target_extent)
            j0 = np.empty_like(lo)
            j1 = np.empty_like(lo)
            need0 = np.empty_like(lo)
            need1 = np.empty_like(lo)
            for a in range(2):
                rf = segment.rf[a]
                s, off, size = rf.stride, rf.offset, rf.size
                j0[:, a] = np.maximum(0, -((off + size - 1 - lo[:, a]) // s))
                j1[:, a] = np.minimum(n_dst[a], (hi[:, a] - 1 - off) // s + 1)
                empty = (j1[:, a] <= j0[:, a]) | (hi[:, a] <= lo[:, a])
                j1[:, a] = np.where(empty, j0[:, a], j1[:, a])
                need0[:, a] = np.clip(j0[:, a] * s + off, 0, n_src[a])
                need1[:, a] = np.clip((j1[:, a] - 1) * s + off + size, 0, n_src[a])
                need1[:, a] = np.where(empty, need0[:, a], need1[:, a])
            crop = []
            origin = np.empty_like(lo)
            for a in range(2):
                s = segment.rf[a].stride
                base = (need0[:, a] // s) * s
                length = int(np.max(need1[:, a] - base)) if len(base) else s
                length = max(length, 1)
                remainder = int(n_src[a]) % s
                length += (remainder - length) % s  # congruent to the extent modulo the stride
                length = min(length, int(n_src[a]))
                origin[:, a] = np.minimum(base, n_src[a] - length)
                crop.append(length)
            origins.append(origin)
            sizes.append((crop[0], crop[1]))
            changed.append(np.stack([j0, j1], axis=2))
            lo, hi = j0, j1
        geo = _Geometry(origins, sizes, changed)
        self._prepare(geo, windows)
        return geo

    def _prepare(self, geo: _Geometry, windows: np.ndarray) -> None:
        """The index tuples of every window's copies, as Python ints once per call (per-window numpy scalars
        and index building cost more than the copies themselves on small crops)."""
        k_last = len(self.segments) - 1
        extent = self.input_extent
        for k, segment in enumerate(self.segments):
            axes = (segment.source_axes[0] - 1, segment.source_axes[1] - 1)
            cy, cx = geo.sizes[k]
            geo.crops.append([_slices(axes, oy, oy + cy, ox, ox + cx) for oy, ox in geo.origins[k].tolist()])
            if k == 0:
                for (oy, ox), (y, x, h, w) in zip(geo.origins[0].tolist(), windows.tolist()):
                    y0, y1 = max(y, oy, 0), min(y + h, oy + cy, extent[0])
                    x0, x1 = max(x, ox, 0), min(x + w, ox + cx, extent[1])
                    geo.occluded.append(
                        (_slices(axes, y0 - oy, y1 - oy, x0 - ox, x1 - ox), _slices(axes, y0, y1, x0, x1))
                        if y1 > y0 and x1 > x0
                        else None
                    )
            # where the changed positions of T_{k+1} sit in segment k's crop output, and where they go: the crop
            # of the next segment's source, or the whole last tensor
            sy, sx = segment.rf[0].stride, segment.rf[1].stride
            start = geo.origins[k] // np.asarray([sy, sx])  # the crop's origin in target positions
            lo, hi = geo.changed[k][:, :, 0], geo.changed[k][:, :, 1]
            dest = geo.origins[k + 1] if k < k_last else np.zeros_like(lo)
            nonempty = np.all(hi > lo, axis=1)
            reach = np.stack([lo - start, hi - start], axis=2)  # (N, axis, [lo, hi)) in the crop output
            reach[~nonempty] = 0
            geo.reach.append(reach)
            room = np.asarray(geo.sizes[k + 1] if k < k_last else segment.target_extent)
            if np.any(nonempty[:, None] & ((lo - dest < 0) | (hi - dest > room))):  # numpy would cut the slice
                where = f"the crop of {self.segments[k + 1].source!r}" if k < k_last else "the whole tensor"
                raise IncrementalUnavailable(
                    f"{where} does not hold the positions of {segment.target!r} a window changed"
                )
            t_axes = (segment.target_axes[0] - 1, segment.target_axes[1] - 1)
            pastes: List[Optional[Tuple[tuple, tuple]]] = []
            for ok, (ry, rx), (l0, l1), (h0, h1), (dy, dx) in zip(
                nonempty.tolist(), reach.tolist(), lo.tolist(), hi.tolist(), dest.tolist()
            ):
                if not ok:
                    pastes.append(None)
                    continue
                pastes.append(
                    (
                        _slices(t_axes, ry[0], ry[1], rx[0], rx[1]),
                        _slices(t_axes, l0 - dy, h0 - dy, l1 - dx, h1 - dx),
                    )
                )
            geo.pastes.append(pastes)

    # -- scoring -------------------------------------------------------------------------------------
    def score_windows(
        self,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Raw outputs (N, classes) of the model on ``inputs`` (one sample, no batch axis) with each window
        (y, x, h, w in input pixels) replaced by ``baseline``, equal to float noise to full passes."""
        return np.concatenate([out for _, out in self.score_batches(inputs, baseline, windows, batch_size)])

    def score_batches(
        self,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        batch_size: int = 32,
    ) -> Iterator[Tuple[int, np.ndarray]]:
        """:meth:`score_windows` one batch at a time: (index of the batch's first window, raw outputs)."""
        inputs = np.asarray(inputs, dtype=self.dtype)
        baseline = np.asarray(baseline, dtype=self.dtype)
        if baseline.shape != inputs.shape:
            raise OccludeError(f"baseline shape {baseline.shape} differs from input shape {inputs.shape}")
        if batch_size < 1:
            raise OccludeError(f"batch size must be at least 1, got {batch_size}")
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
        if len(windows) == 0:
            raise OccludeError("no windows to occlude")
        full = self._full_tensors(inputs)
        geo = self.geometry(windows)
        for start in range(0, len(windows), batch_size):
            out, _ = self._score_batch(full, baseline, geo, start, min(start + batch_size, len(windows)), False)
            yield start, out

    def check_crops(self, inputs: np.ndarray, windows: np.ndarray) -> float:
        """The self-check of the prefix parts: each segment run on the crops of ``windows`` with nothing
        occluded must reproduce the same slice of the whole tensor. Returns the largest difference over the
        changed positions, relative to each tensor's largest magnitude (the suffix is not run)."""
        inputs = np.asarray(inputs, dtype=self.dtype)
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
        full = self._full_tensors(inputs)
        geo = self.geometry(windows)
        _, worst = self._score_batch(full, inputs, geo, 0, len(windows), True, suffix=False)
        return worst

    def _score_batch(self, full, baseline, geo: _Geometry, start: int, stop: int, check: bool, suffix: bool = True):
        b = stop - start
        previous: Any = None  # segment k-1's outputs on the crops
        worst = 0.0
        for k, segment in enumerate(self.segments):
            source = full[k][0]
            axes = segment.source_axes
            shape = list(full[k].shape)
            shape[0] = b
            shape[axes[0]], shape[axes[1]] = geo.sizes[k]
            batch = np.empty(shape, dtype=source.dtype)
            crops = geo.crops[k]
            if k == 0:
                occluded = geo.occluded
                for i in range(b):
                    batch[i] = source[crops[start + i]]
                    hole = occluded[start + i]
                    if hole is not None:
                        batch[i][hole[0]] = baseline[hole[1]]
            else:
                pastes = geo.pastes[k - 1]
                for i in range(b):
                    batch[i] = source[crops[start + i]]
                    paste = pastes[start + i]
                    if paste is not None:
                        batch[i][paste[1]] = previous[i][paste[0]]
            out = segment.run(batch)
            if geo.covered.get(k) != out.shape[1:]:  # every batch's crops have one size: checked once for all
                self._check_reach(out, geo, k)
                geo.covered[k] = out.shape[1:]
            if check:
                worst = max(worst, self._check_crop(out, full[k + 1], geo, k, start, stop))
            previous = out
        if not suffix:
            return None, worst
        # the last tensor of every window: a kept buffer holding copies of the whole T_k, into which the changed
        # positions are pasted, and restored after the suffix has run (no fresh copy of T_k per window)
        base = full[-1]
        tail = self._tail_buffer(base, b)
        pastes = geo.pastes[-1]
        try:
            for i in range(b):
                paste = pastes[start + i]
                if paste is not None:
                    tail[i][paste[1]] = previous[i][paste[0]]
            return self._run_suffix(tail), worst
        finally:
            for i in range(b):
                paste = pastes[start + i]
                if paste is not None:
                    tail[i][paste[1]] = base[0][paste[1]]

    def _tail_buffer(self, base: np.ndarray, b: int) -> np.ndarray:
        """(b, ...) copies of ``base`` (the whole last tensor, batch axis of 1), kept between batches."""
        local = self._local
        tail = getattr(local, "tail", None)
        if tail is None or getattr(local, "base", None) is not base or len(tail) < b:
            tail = local.tail = np.repeat(base, b, axis=0)
            local.base = base
        return tail[:b]

    def _check_reach(self, out: np.ndarray, geo: _Geometry, k: int) -> None:
        """The crop outputs must cover the positions every window changed (numpy would silently cut a slice)."""
        reach = geo.reach[k]
        axes = self.segments[k].target_axes
        limit = np.asarray([out.shape[axes[0]], out.shape[axes[1]]])
        if np.any(reach[:, :, 0] < 0) or np.any(reach[:, :, 1] > limit):
            raise IncrementalUnavailable(
                f"the crop output of {self.segments[k].target!r} does not cover the positions the window changed"
            )

    def _check_crop(self, out, target_full, geo: _Geometry, k: int, start: int, stop: int) -> float:
        """Largest |difference| between crop outputs and the whole tensor over the changed positions, relative
        to the tensor's largest magnitude (meaningful when the baseline equals the input)."""
        segment = self.segments[k]
        scale = float(np.max(np.abs(target_full))) or 1.0
        worst = 0.0
        axes = (segment.target_axes[0] - 1, segment.target_axes[1] - 1)
        for i in range(stop - start):
            paste = geo.pastes[k][start + i]
            if paste is None:
                continue
            (y0, y1), (x0, x1) = geo.changed[k][start + i].tolist()
            got = out[i][paste[0]]
            want = target_full[0][_slices(axes, y0, y1, x0, x1)]
            if got.shape != want.shape:
                return float("inf")
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) / scale)
        return worst


# ------------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------------


def _node_costs(info: GraphInfo) -> Dict[str, float]:
    """Cumulative cost (multiply-adds + weighted output elements) of each tensor's input-dependent ancestors."""
    own: Dict[str, float] = {}
    graph = info.model.graph
    for node in graph.node:
        if not any(i in info.dependent for i in node.input if i):
            continue
        out = node.output[0]
        shape = info.shapes.get(out)
        elements = float(np.prod(shape)) if shape else 0.0
        cost = _ELEMENT_COST * elements
        if node.op_type in ("Conv", "ConvTranspose") and shape is not None:
            w = info.shapes.get(node.input[1])
            if w is not None and len(w) >= 3:
                cost += elements * float(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and shape is not None:
            a = info.shapes.get(node.input[0])
            if a:
                cost += elements * float(a[-1])
        own[out] = cost
    # cumulative over ancestors
    cumulative: Dict[str, float] = {}
    ancestors: Dict[str, set] = {}
    for node in graph.node:
        out = node.output[0]
        if out not in own:
            continue
        anc = {out}
        for i in node.input:
            if i in ancestors:
                anc |= ancestors[i]
        for o in node.output:
            if o:
                ancestors[o] = anc
        cumulative[out] = sum(own[a] for a in anc)
    return cumulative


def _crop_length(rf: AxisRF, lo: int, hi: int, n_src: int, n_dst: int) -> Tuple[int, int, int]:
    """(crop length on the source, changed target lo, hi) for a source interval [lo, hi)."""
    j0, j1 = rf.touched(lo, hi, n_dst)
    need0 = max(0, rf.start(j0))
    need1 = min(n_src, rf.stop(j1 - 1))
    base = (need0 // rf.stride) * rf.stride
    length = need1 - base
    length += (n_src % rf.stride - length) % rf.stride
    return min(length, n_src), j0, j1


@dataclass
class _Candidate:
    chain: List[str]
    cost: float
    full_cost: float = 0.0

    @property
    def estimated_speedup(self) -> float:
        return self.full_cost / self.cost if self.cost > 0 else 0.0


def _plan_candidates(
    info: GraphInfo,
    cuts: List[LocalTensor],
    window: Tuple[int, int],
    output: str,
    input_local: LocalTensor,
    max_chain: int,
) -> List[_Candidate]:
    """Chains of cuts ranked by the cost model (per window, arbitrary units), best first, one per length."""
    cumulative = _node_costs(info)
    total = cumulative.get(output, max(cumulative.values()))
    extent = input_local.extent
    assert extent is not None  # the input's shape is always inferred
    # interior window of the given size: its changed interval per tensor, via each tensor's input field
    centre = [((extent[a] - window[a]) // 2, (extent[a] - window[a]) // 2 + window[a]) for a in range(2)]
    nodes = [input_local] + cuts
    changed = {}
    for t in nodes:
        ext = t.extent
        assert ext is not None  # cut_candidates keeps only tensors with a known shape
        changed[t.name] = [t.rf[a].touched(centre[a][0], centre[a][1], ext[a]) for a in range(2)]

    def seg_cost(a: LocalTensor, b: LocalTensor) -> Optional[float]:
        assert a.shape is not None and a.extent is not None and b.extent is not None  # known shapes, as above
        area = 1.0
        elements = float(np.prod(a.shape)) / (a.extent[0] * a.extent[1])
        for ax in range(2):
            sa, sb = a.rf[ax], b.rf[ax]
            if sb.stride % sa.stride:
                return None
            s = sb.stride // sa.stride
            off = (sb.offset - sa.offset) / sa.stride
            size = (sb.size - sa.size) / sa.stride + 1
            if off != int(off) or size != int(size):
                return None
            rel = AxisRF(s, int(off), int(size))
            lo, hi = changed[a.name][ax]
            length, _, _ = _crop_length(rel, lo, hi, a.extent[ax], b.extent[ax])
            area *= length
            elements *= length
        frac = area / (a.extent[0] * a.extent[1])
        start = cumulative.get(a.name, 0.0) if a is not input_local else 0.0
        return (cumulative[b.name] - start) * frac + _CROP_ELEMENT_COST * elements

    # dynamic programme over chains ending at each cut, per chain length
    best: Dict[Tuple[int, int], Tuple[float, List[int]]] = {}
    for j, b in enumerate(cuts):
        c = seg_cost(input_local, b)
        if c is not None:
            best[(1, j)] = (c, [j])
    for length in range(2, max_chain + 1):
        for j, b in enumerate(cuts):
            options = []
            for i in range(j):
                prev = best.get((length - 1, i))
                if prev is None:
                    continue
                c = seg_cost(cuts[i], b)
                if c is not None:
                    options.append((prev[0] + c, prev[1] + [j]))
            if options:
                best[(length, j)] = min(options, key=lambda o: o[0])
    ranked = []
    for (_, j), (c, chain) in best.items():
        tail = total - cumulative[cuts[j].name]
        last = cuts[j]
        assert last.shape is not None
        tail += _CROP_ELEMENT_COST * float(np.prod(last.shape))
        ranked.append(_Candidate([cuts[i].name for i in chain], c + tail, total))
    ranked.sort(key=lambda c: c.cost)
    per_length: Dict[int, _Candidate] = {}
    for cand in ranked:
        per_length.setdefault(len(cand.chain), cand)
    return sorted(per_length.values(), key=lambda c: c.cost)


def _make_scorer(
    model,
    info: GraphInfo,
    chain: List[str],
    output: str,
    layout: Optional[str],
    base,
    threads,
    providers,
    cache: Dict[tuple, Any],
) -> IncrementalScorer:
    """Sessions for every segment of ``chain`` and the suffix (shared through ``cache`` between chains)."""
    segments: List[Segment] = []
    parts: List[bytes] = []  # the serialised sub-models, for the on-disk cache
    source = info.input_name
    source_local = base.tensors[source]
    for target in chain:
        key = ("segment", source, target)
        if key not in cache:
            rel = analyse(None, source=source, info=info, layout=layout, source_axes=source_local.axes)
            if target not in rel.tensors:
                raise IncrementalUnavailable(f"{target!r} is not local relative to {source!r}")
            sub = extract(model, [source], [target], info).SerializeToString()
            cache[key] = (rel.tensors[target], _session(sub, threads, providers), sub)
        t_rel, session, data = cache[key]
        parts.append(data)
        segments.append(
            Segment(
                source=source,
                target=target,
                rf=t_rel.rf,
                source_axes=source_local.axes,
                target_axes=t_rel.axes,
                source_extent=source_local.extent,
                target_extent=base.tensors[target].extent,
                session=session,
            )
        )
        source = target
        source_local = base.tensors[target]
    key = ("suffix", source, output)
    if key not in cache:
        sub = extract(model, [source], [output], info).SerializeToString()
        cache[key] = (_session(sub, threads, providers), sub)
    suffix, data = cache[key]
    parts.append(data)
    scorer = IncrementalScorer(
        model_path=Path(info.path or ""),
        input_name=info.input_name,
        output_name=output,
        input_axes=base.tensors[info.input_name].axes,
        input_extent=base.tensors[info.input_name].extent,
        segments=segments,
        suffix=suffix,
    )
    scorer._parts = parts
    return scorer


def _check_windows(extent: Tuple[int, int], window: Tuple[int, int]) -> np.ndarray:
    """Windows at every position class: the four corners, the four border middles and the centre, plus
    some off the stride grid."""
    h, w = min(window[0], extent[0]), min(window[1], extent[1])
    ys = sorted({0, (extent[0] - h) // 2, extent[0] - h, max(0, min(extent[0] - h, 3))})
    xs = sorted({0, (extent[1] - w) // 2, extent[1] - w, max(0, min(extent[1] - w, 5))})
    return np.asarray([(y, x, h, w) for y in ys for x in xs], dtype=np.int64)


def _compared_windows(windows: np.ndarray) -> np.ndarray:
    """One check window of each position class: the four corners, the four border middles, the centre, and
    the one nearest the centre off those rows and columns (fewer where the image is too small to tell them
    apart)."""

    def ends_and_middle(values: np.ndarray) -> List[int]:
        unique = np.unique(values)
        middle = unique[np.argmin(np.abs(unique - (unique[0] + unique[-1]) / 2))]
        return sorted({int(unique[0]), int(middle), int(unique[-1])})

    ys, xs = windows[:, 0], windows[:, 1]
    rows_y, rows_x = ends_and_middle(ys), ends_and_middle(xs)
    chosen = np.isin(ys, rows_y) & np.isin(xs, rows_x)
    rows = np.flatnonzero(chosen).tolist()
    off_grid = ~np.isin(ys, rows_y) & ~np.isin(xs, rows_x)
    if off_grid.any():
        centre = np.abs(ys - (ys.min() + ys.max()) / 2) + np.abs(xs - (xs.min() + xs.max()) / 2)
        rows.append(int(np.argmin(np.where(off_grid, centre, np.inf))))
    return windows[sorted(set(rows))]


def _occluded_batch(sample: np.ndarray, baseline: np.ndarray, windows: np.ndarray, axes: Tuple[int, int]) -> np.ndarray:
    """Full occluded copies of one sample (the plain engine's batch), ``axes`` counted with the batch axis."""
    batch = np.repeat(sample[None], len(windows), axis=0)
    for i, (y, x, h, w) in enumerate(np.asarray(windows).tolist()):
        index = _slices((axes[0] - 1, axes[1] - 1), y, y + h, x, x + w)
        batch[i][index] = baseline[index]
    return batch


class _FullModel:
    """The unsplit model: reference outputs for the self-check and the time to beat. A model pinned to a batch
    of N > 1 gets its batches split and padded to N (as the engine's model does); one pinned to batch 1, or
    whose graph needs it, one sample at a time."""

    def __init__(self, session, input_name: str, output_name: str):
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.batched = True
        self.fixed: Optional[int] = None
        try:
            declared = next(i for i in session.get_inputs() if i.name == input_name).shape[0]
            self.fixed = declared if isinstance(declared, int) and declared > 1 else None
        except (AttributeError, StopIteration, IndexError, TypeError):
            pass

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed:
            n, parts = self.fixed, []
            for start in range(0, len(batch), n):
                part = batch[start : start + n]
                padded = np.concatenate([part, np.repeat(part[-1:], n - len(part), axis=0)]) if len(part) < n else part
                parts.append(np.asarray(self._run(padded))[: len(part)])
            out = np.concatenate(parts)
        else:
            if self.batched:
                try:
                    out = self._run(batch)
                except Exception:  # noqa: BLE001 -- a model pinned to batch 1: one sample at a time, as the engine does
                    self.batched = False
            if not self.batched:
                out = np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
        out = np.asarray(out)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        return out


def build_plan(
    model_path,
    input_shape: Sequence[int],
    *,
    layout: Optional[str] = None,
    baseline: Optional[np.ndarray] = None,
    sample: Optional[np.ndarray] = None,
    window: Tuple[int, int] = (16, 16),
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    input_name: Optional[str] = None,
    output_name: Optional[str] = None,
    cuts: Optional[Sequence[str]] = None,
    max_chain: int = 5,
    max_plans: int = 3,
    measure: bool = True,
    tolerance: Optional[float] = None,
    require_faster: bool = False,
    full_session=None,
    model_sha256: Optional[str] = None,
    score=None,
    target: Optional[int] = None,
    allow_approximate: bool = False,
) -> IncrementalScorer:
    """An :class:`IncrementalScorer` for the model, or :class:`IncrementalUnavailable` with the reason.

    ``input_shape``: one sample with its batch axis (N=1), NCHW or NHWC (``layout``, guessed from a
    channel count of 1 or 3 when omitted). ``window`` (h, w): the occlusion patch, used to rank and time
    plans. ``cuts`` forces a chain of cut tensor names (tests, benchmarks); otherwise the cost model ranks
    the best chain of each length up to ``max_chain`` and keeps the ``max_plans`` cheapest.

    A graph whose arithmetic a plan cannot reproduce bit for bit (:func:`inexact_arithmetic`: float16,
    quantised operators, rounding steps) is refused unless ``allow_approximate``; then the plan is built
    anyway, ``scorer.exact`` is False and ``scorer.check_error`` holds the error its self-check measured.

    Every plan passes the self-check (crops against the whole tensors; the explained score's drop against
    full passes, on windows of every position class: corners, borders, interior, off the grid; see
    :class:`_SelfCheck`). ``score`` (raw outputs (N, K) -> scores (N, K), e.g. the head's softmax) and
    ``target`` (the explained class; default the top-1 of ``sample``) say what the map explains; without
    ``score`` the raw outputs are compared. With ``measure`` the checked plans and
    the full model are then timed on one more batch of those windows each and the fastest plan is kept
    (``timings`` records them); ``require_faster`` raises when the full model is faster.

    ``sample``/``baseline`` (one sample each, no batch axis) feed the self-check; default a seeded random
    input and zeros. ``full_session``: an onnxruntime session of the whole model to reuse.
    ``input_name``/``output_name`` pick the image input and the scores output when the model has several.
    ``tolerance``: the self-check's largest drop difference, relative to the largest drop on the checked
    windows (and of the crops, relative to each tensor's largest magnitude); default
    :data:`CHECK_TOLERANCE` (1e-4: float32 noise is 1e-7 to 1e-6).

    ``model_sha256`` (the model file's SHA-256) turns on the on-disk plan cache (see
    :mod:`occlude_cli.inference.cache`) for plans chosen by the cost model without ``measure``: a cached plan
    skips the graph analysis and the sub-model extraction but not the self-check; one that fails it is
    rebuilt. Graphs where incremental inference does not apply are remembered too.
    """
    path = Path(model_path)
    if not path.exists():
        raise OccludeError(f"model not found: {path}")
    input_shape = [int(d) for d in input_shape]
    if len(input_shape) != 4 or input_shape[0] != 1:
        raise OccludeError(f"input_shape must be 4-D with a batch of 1, got {input_shape}")
    key = None
    if model_sha256 and cuts is None and not (measure or require_faster):
        key = cache.entry_key(
            "incremental",
            sha256=model_sha256,
            input_shape=input_shape,
            layout=layout,
            window=[int(w) for w in window],
            input_name=input_name,
            output_name=output_name,
            max_chain=max_chain,
            max_plans=max_plans,
            costs=[_ELEMENT_COST, _CROP_ELEMENT_COST],  # a retuned cost model chooses again
            allow_approximate=bool(allow_approximate),
        )
        spec = _CheckSpec(score, target, _tolerance(tolerance), bool(allow_approximate))
        cached = _cached_plan(key, input_shape, sample, baseline, threads, providers, full_session, spec)
        if cached is not None:
            return cached
    try:
        scorer = _build_plan(
            path,
            input_shape,
            layout=layout,
            baseline=baseline,
            sample=sample,
            window=window,
            providers=providers,
            threads=threads,
            input_name=input_name,
            output_name=output_name,
            cuts=cuts,
            max_chain=max_chain,
            max_plans=max_plans,
            measure=measure,
            spec=_CheckSpec(score, target, _tolerance(tolerance), bool(allow_approximate)),
            require_faster=require_faster,
            full_session=full_session,
        )
    except IncrementalUnavailable as exc:
        if key is not None and exc.structural:
            cache.store("incremental", key, {"available": False, "reason": str(exc)})
        raise
    if key is not None:
        _store_plan(key, scorer, window)
    scorer._parts = []
    return scorer


def _build_plan(
    path: Path,
    input_shape: List[int],
    *,
    layout,
    baseline,
    sample,
    window,
    providers,
    threads,
    input_name,
    output_name,
    cuts,
    max_chain,
    max_plans,
    measure,
    spec: _CheckSpec,
    require_faster,
    full_session,
) -> IncrementalScorer:
    import onnx

    model = onnx.load(str(path))
    info = GraphInfo(model, input_shape=input_shape, input_name=input_name)
    info.path = path
    base = analyse(None, layout=layout, info=info)
    outputs = info.outputs
    if output_name is None:
        if len(outputs) != 1:
            raise OccludeError(f"model has {len(outputs)} outputs: give output_name")
        output_name = outputs[0]
    elif output_name not in outputs:
        raise OccludeError(f"model has no output named {output_name!r}")
    inexact = _inexact(model, output_name, info.elem_types)
    if inexact is not None and not spec.approximate:
        raise IncrementalUnavailable(f"{inexact}: {NOT_BIT_FOR_BIT}", structural=True)
    spec = replace(spec, approximate=inexact is not None)  # an exact graph's plan is held to float noise
    candidates = cut_candidates(None, info=info, analysis=base, output=output_name)
    if not candidates:
        reason = base.first_nonlocal or "no local tensor dominates the output"
        raise IncrementalUnavailable(f"no cut point: locality ends at {reason}", structural=True)
    input_local = base.tensors[info.input_name]
    input_extent = input_local.extent
    assert input_extent is not None  # the input's shape is always inferred
    try:  # the model's own input type: float32, float16, float64, uint8, ...
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.elem_types.get(info.input_name, onnx.TensorProto.FLOAT)).type
    except (KeyError, ValueError, TypeError):
        raise IncrementalUnavailable("the input's element type is not a numpy type", structural=True) from None
    sample_shape = tuple(input_shape[1:])
    if sample is None:
        sample = np.random.default_rng(0).standard_normal(sample_shape).astype(dtype)
    sample = np.asarray(sample, dtype=dtype)
    baseline = np.zeros(sample_shape, dtype=dtype) if baseline is None else np.asarray(baseline, dtype=dtype)
    if sample.shape != sample_shape or baseline.shape != sample_shape:
        raise OccludeError(f"sample and baseline must have shape {sample_shape}")
    window = (min(window[0], input_extent[0]), min(window[1], input_extent[1]))
    if cuts is not None:
        known = {c.name for c in candidates}
        for c in cuts:
            if c not in known:
                raise IncrementalUnavailable(f"{c!r} is not a cut point (a local tensor every path crosses)")
        chains = [list(cuts)]
        estimates = {}
    else:
        ranked = _plan_candidates(info, candidates, window, output_name, input_local, max_chain)
        chains = [c.chain for c in ranked[: max(1, max_plans)]]
        if not chains:
            raise IncrementalUnavailable("no chain of cuts has a usable receptive field", structural=True)
        estimates = {tuple(c.chain): c.estimated_speedup for c in ranked}
    full = _FullModel(full_session or _session(model, threads, providers), info.input_name, output_name)
    # every position class (corners, borders, interior, off-grid) for the crops; outputs against full passes
    # on a few of them (each full pass costs what the plan saves on about two windows)
    check = spec.check(full, sample, baseline, input_extent, window, input_local.axes)
    parts: Dict[tuple, Any] = {}  # (prefix part, session) pairs and suffix sessions
    checked = []
    notes = []
    for chain in chains:
        try:
            scorer = _make_scorer(model, info, chain, output_name, layout, base, threads, providers, parts)
            scorer.full = full
            scorer.dtype = dtype
            scorer.estimated_speedup = estimates.get(tuple(chain))
            check.run(scorer)
            scorer.inexact = inexact
            checked.append(scorer)
        except IncrementalUnavailable as exc:
            notes.append(f"chain {chain}: {exc}")
        except Exception as exc:  # noqa: BLE001 -- onnxruntime refuses a sub-graph: that chain is unusable
            notes.append(f"chain {chain}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if not checked:
        raise IncrementalUnavailable("; ".join(notes) or "no usable plan")
    if not (measure or require_faster):
        checked[0].notes = notes
        return checked[0]
    # every session has run this batch shape (the self-check): one more run each is the measurement
    windows = check.windows
    n = len(windows)
    occluded = _occluded_batch(sample, baseline, windows, input_local.axes)
    full.run(occluded)  # warm-up: this batch shape is new to the full model
    full_time = _time_once(lambda: full.run(occluded)) / n
    timed = sorted(
        ((_time_once(lambda s=s: s.score_windows(sample, baseline, windows, batch_size=n)) / n, s) for s in checked),
        key=lambda p: p[0],
    )
    best_time, best = timed[0]
    best.timings = {"full": full_time, **{"+".join(s.cuts): t for t, s in timed}}
    best.notes = notes + [
        f"{n} windows: full {full_time * 1e3:.2f} ms/window, incremental {best_time * 1e3:.2f} ms/window"
    ]
    if require_faster and best_time >= full_time:
        raise IncrementalUnavailable(
            f"not faster here: {best_time * 1e3:.2f} ms/window incremental vs {full_time * 1e3:.2f} ms/window full"
        )
    return best


NOT_BIT_FOR_BIT = "incremental inference cannot reproduce its full passes bit for bit"


@dataclass
class _CheckSpec:
    """What the self-check compares (see :class:`_SelfCheck`)."""

    score: Any  # raw outputs (N, K) -> scores (N, K), or None for the raw outputs
    target: Optional[int]
    tolerance: float
    approximate: bool

    def check(self, full, sample, baseline, input_extent, window, input_axes) -> _SelfCheck:
        return _SelfCheck(
            full,
            sample,
            baseline,
            input_extent,
            window,
            input_axes,
            self.tolerance,
            score=self.score,
            target=self.target,
            approximate=self.approximate,
        )


# The self-check's tolerance for exact plans: the largest difference of the explained score's drop between the
# plan and full passes, relative to the largest drop on the checked windows (float32 noise: 3e-6 to 1.5e-5 of it
# on EfficientNet-Lite0 and the sample photos, patches 16 to 48) ...
CHECK_TOLERANCE = 1e-4
# ... or, for a model whose drops are tiny next to its outputs (random weights: up to 1.2e-4 of the largest drop),
# no more than float32 noise of the outputs themselves: what the explained score does when the raw outputs move
# by this share of their largest magnitude in the worst direction (plans measured 2e-7 to 6e-7)
OUTPUT_NOISE = 1e-6
# Crops of an approximate plan (a graph that rounds coarsely) may differ from the whole tensor by a few rounding
# steps; more than this share of the tensor's largest magnitude means wrong geometry, not rounding.
_APPROXIMATE_CROP_TOLERANCE = 5e-2


def _identity(raw: np.ndarray) -> np.ndarray:
    return np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)


class _SelfCheck:
    """The self-check every plan passes before it scores a window, whether just built or read from the cache.

    1. On windows of every position class (corners, borders, interior, off the stride grid), each prefix part
       run on crops with nothing occluded reproduces the same slice of the whole tensor.
    2. End to end, in the map's own units: on one window of each position class (the four corners, the four
       border middles, the centre and one off the grid), with the baseline pasted in, the explained score's
       drop (``score``: the head's softmax or sigmoid of the raw outputs; ``target``: the explained class,
       default the top-1) computed by the plan equals the drop computed by full passes to CHECK_TOLERANCE of
       the largest drop among those windows, or to float32 noise of the outputs (OUTPUT_NOISE) where the
       drops are tiny next to them. One window's drop off by one quantisation step is caught however small
       that step is next to the logits.

    ``approximate`` (a graph :func:`inexact_arithmetic` rules out): the crops only have to be right to a few
    rounding steps (wrong geometry is still refused) and the end-to-end error is measured, not refused.
    """

    def __init__(
        self,
        full,
        sample,
        baseline,
        input_extent,
        window,
        input_axes,
        tolerance: float,
        *,
        score=None,
        target: Optional[int] = None,
        approximate: bool = False,
    ):
        self.full = full
        self.sample = sample
        self.baseline = baseline
        self.tolerance = tolerance
        self.approximate = approximate
        self.window = (min(int(window[0]), input_extent[0]), min(int(window[1]), input_extent[1]))
        self.windows = _check_windows(input_extent, self.window)
        self.compared = _compared_windows(self.windows)
        self.score = score or _identity
        try:
            original = np.asarray(self.score(full.run(sample[None])), dtype=np.float64)[0]
            raw = full.run(_occluded_batch(sample, baseline, self.compared, input_axes))
            reference = np.asarray(self.score(raw), dtype=np.float64)
        except OccludeError:
            raise
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's own error types, as one line
            raise IncrementalUnavailable(f"the whole model failed on the self-check's inputs: {_first(exc)}") from None
        self.target = int(np.argmax(original)) if target is None else int(target)
        if not 0 <= self.target < original.shape[-1]:
            raise OccludeError(f"target {self.target} is not a class of the model's {original.shape[-1]} outputs")
        self.original = original[self.target]
        self.drops = self.original - reference[:, self.target]
        self.floor = self._noise(raw)

    def _noise(self, raw: np.ndarray) -> float:
        """How far the explained score moves when every raw output moves by OUTPUT_NOISE of the largest one,
        the target's one way and the others the other (the worst direction for a softmax), on these windows."""
        raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
        step = OUTPUT_NOISE * float(np.max(np.abs(raw)))
        push = np.full(raw.shape[1], -step)
        push[self.target] = step
        here = np.asarray(self.score(raw), dtype=np.float64)[:, self.target]
        moved = [np.asarray(self.score(raw + sign * push), dtype=np.float64)[:, self.target] for sign in (1, -1)]
        return float(max(np.max(np.abs(m - here)) for m in moved))

    def _difference(self, scorer: IncrementalScorer) -> float:
        """The plan's largest drop difference from full passes on the compared windows, in score units."""
        compared = self.compared
        try:
            got = scorer.score_windows(self.sample, self.baseline, compared, batch_size=len(compared))
        except Exception:  # noqa: BLE001 -- onnxruntime's own error types
            scorer.suffix_batched = False  # a suffix pinned to batch 1 (a Reshape to [1, K], ...)
            got = scorer.score_windows(self.sample, self.baseline, compared, batch_size=len(compared))
        drops = self.original - np.asarray(self.score(got), dtype=np.float64)[:, self.target]
        return float(np.max(np.abs(drops - self.drops)))

    def _relative(self, difference: float) -> float:
        largest = float(np.max(np.abs(self.drops)))
        if difference == 0.0:
            return 0.0
        return difference / largest if largest > 0 else float("inf")

    def error(self, scorer: IncrementalScorer) -> float:
        """The plan's largest drop difference on the compared windows, relative to the largest drop there."""
        return self._relative(self._difference(scorer))

    def run(self, scorer: IncrementalScorer) -> None:
        crops = scorer.check_crops(self.sample, self.windows)
        limit = max(self.tolerance, _APPROXIMATE_CROP_TOLERANCE) if self.approximate else self.tolerance
        if not crops <= limit:
            raise IncrementalUnavailable(
                f"self-check failed: crops differ from the whole tensor by {crops:.2e} (relative)"
            )
        difference = self._difference(scorer)
        error = self._relative(difference)
        if not self.approximate and not (error <= self.tolerance or difference <= self.floor):
            raise IncrementalUnavailable(
                f"self-check failed: the explained score's drop differs from full passes by {error:.2e} of the "
                f"largest drop on {len(self.compared)} windows"
            )
        if not np.isfinite(difference):
            raise IncrementalUnavailable("self-check failed: the plan's outputs are not finite where full passes are")
        scorer.check_error = error
        scorer.check_windows = len(self.compared)
        scorer.exact = not self.approximate
        scorer.window = self.window


def _store_plan(key: str, scorer: IncrementalScorer, window: Tuple[int, int]) -> None:
    """Keep a checked plan in the on-disk cache: its geometry and its sub-models."""
    if len(scorer._parts) != len(scorer.segments) + 1:
        return
    files = {f"part{i}.onnx": data for i, data in enumerate(scorer._parts[:-1])}
    files["suffix.onnx"] = scorer._parts[-1]
    meta = {
        "available": True,
        "input_name": scorer.input_name,
        "output_name": scorer.output_name,
        "input_axes": list(scorer.input_axes),
        "input_extent": list(scorer.input_extent),
        "dtype": np.dtype(scorer.dtype).name,
        "suffix_batched": scorer.suffix_batched,
        "estimated_speedup": scorer.estimated_speedup,
        "inexact": scorer.inexact,
        "window": [min(int(window[0]), scorer.input_extent[0]), min(int(window[1]), scorer.input_extent[1])],
        "segments": [
            {
                "source": seg.source,
                "target": seg.target,
                "rf": [[rf.stride, rf.offset, rf.size] for rf in seg.rf],
                "source_axes": list(seg.source_axes),
                "target_axes": list(seg.target_axes),
                "source_extent": list(seg.source_extent),
                "target_extent": list(seg.target_extent),
                "file": f"part{i}.onnx",
            }
            for i, seg in enumerate(scorer.segments)
        ],
        "suffix": "suffix.onnx",
    }
    cache.store("incremental", key, meta, files)


def _cached_plan(
    key, input_shape, sample, baseline, threads, providers, full_session, spec: _CheckSpec
) -> Optional[IncrementalScorer]:
    """The cached plan of ``key`` after its self-check; None when there is none or it fails (then it is
    removed, to be rebuilt); IncrementalUnavailable when the graph was found not to allow one."""
    hit = cache.load("incremental", key)
    if hit is None:
        return None
    folder, meta = hit
    if meta.get("available") is False:
        raise IncrementalUnavailable(str(meta.get("reason") or "not available for this graph"), structural=True)
    if full_session is None:
        return None  # the self-check's reference needs a session of the whole model: build as usual
    try:
        names = [seg["file"] for seg in meta["segments"]] + [meta["suffix"]]
        if not all(isinstance(n, str) and re.fullmatch(r"(part\d+|suffix)\.onnx", n) for n in names):
            raise ValueError("an entry naming files outside its folder")
        dtype = np.dtype(meta["dtype"]).type
        segments = [
            Segment(
                source=seg["source"],
                target=seg["target"],
                rf=(AxisRF(*seg["rf"][0]), AxisRF(*seg["rf"][1])),
                source_axes=(int(seg["source_axes"][0]), int(seg["source_axes"][1])),
                target_axes=(int(seg["target_axes"][0]), int(seg["target_axes"][1])),
                source_extent=(int(seg["source_extent"][0]), int(seg["source_extent"][1])),
                target_extent=(int(seg["target_extent"][0]), int(seg["target_extent"][1])),
                session=_session(folder / seg["file"], threads, providers),
            )
            for seg in meta["segments"]
        ]
        input_axes = (int(meta["input_axes"][0]), int(meta["input_axes"][1]))
        input_extent = (int(meta["input_extent"][0]), int(meta["input_extent"][1]))
        scorer = IncrementalScorer(
            model_path=folder,
            input_name=str(meta["input_name"]),
            output_name=str(meta["output_name"]),
            input_axes=input_axes,
            input_extent=input_extent,
            segments=segments,
            suffix=_session(folder / meta["suffix"], threads, providers),
            suffix_batched=bool(meta["suffix_batched"]),
        )
        scorer.dtype = dtype
        speedup = meta.get("estimated_speedup")
        scorer.estimated_speedup = None if speedup is None else float(speedup)
        full = _FullModel(full_session, scorer.input_name, scorer.output_name)
        scorer.full = full
        shape = tuple(int(d) for d in input_shape[1:])
        sample = np.random.default_rng(0).standard_normal(shape).astype(dtype) if sample is None else sample
        sample = np.asarray(sample, dtype=dtype)
        baseline = np.zeros(sample.shape, dtype=dtype) if baseline is None else np.asarray(baseline, dtype=dtype)
        window = (int(meta["window"][0]), int(meta["window"][1]))
        inexact = meta.get("inexact")
        spec = replace(spec, approximate=inexact is not None)
        spec.check(full, sample, baseline, input_extent, window, input_axes).run(scorer)
        scorer.inexact = None if inexact is None else str(inexact)
    except Exception:  # noqa: BLE001 -- a damaged or foreign entry (or a failed self-check): rebuild it
        cache.remove("incremental", key)
        return None
    scorer.notes = ["plan read from the cache"]
    return scorer


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _tolerance(tolerance: Optional[float]) -> float:
    """The self-check's tolerance: ``tolerance`` when given, else :data:`CHECK_TOLERANCE`."""
    return CHECK_TOLERANCE if tolerance is None else float(tolerance)


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def try_build_plan(*args, **kwargs) -> Tuple[Optional[IncrementalScorer], Optional[str]]:
    """:func:`build_plan`, or (None, the one-line reason) when incremental inference does not apply or
    building the plan failed in any way (then full passes are the answer, never a failed image)."""
    try:
        return build_plan(*args, **kwargs), None
    except IncrementalUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 -- onnx, onnxruntime or an unforeseen graph: fall back, say why
        return None, f"building the plan failed: {_first(exc)}"
