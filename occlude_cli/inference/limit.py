"""The limit of exact incremental inference: the smallest share of a full forward pass that any exact engine must
compute for a run's occlusion windows (issue 35).

Occluding a window changes, in every tensor of the graph, only the positions its values reach: the window's
*dirty* region. It is propagated layer by layer, in topological order: a Conv or pooling window (kernel, stride,
padding, dilation; groups do not widen it) makes dirty the output positions whose window meets the dirty input
positions; Pad shifts it (reflect and edge padding widen it by the copied rows); element-wise ops (activations,
additions of a residual branch, BatchNormalization, channel Concat) take the hull of their inputs' dirty regions;
Transpose moves the spatial axes. Any other op that reads an input-dependent tensor (global pooling, ReduceMean,
Reshape, MatMul, Resize, attention...) makes its outputs dirty everywhere, and so everything computed from them.
A dirty region is an interval per spatial axis (a hull: where two branches meet, or a dilated kernel skips
positions, it may hold a few positions that are not strictly changed).

An exact engine must recompute every dirty position of every tensor, and needs nothing else: the dirty share of
a full pass, averaged over the run's windows, bounds every exact engine's speed-up over full passes from above,
``limit = 1 / dirty share`` (the one unoccluded pass per image aside). Two ways to weigh the share:

* by multiply-adds (Conv, ConvTranspose, Gemm and MatMul nodes);
* by time: each node weighted by its share of a full pass's time. :func:`incremental_limit` estimates those
  weights with the plan's cost model (multiply-adds plus :data:`ELEMENT_COST` per output element:
  deterministic, so it goes into the JSON records), or takes them measured on this machine by onnxruntime's
  own profiler (:func:`measure_node_times`; the benchmarks use that).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .receptive import _BINARY, _POOLS, _QDQ, _UNARY, GraphInfo, LocalTensor, _attr, _pads

__all__ = [
    "ELEMENT_COST",
    "Limit",
    "NodeCost",
    "Stage",
    "dirty_shares",
    "incremental_limit",
    "measure_node_times",
    "node_costs",
    "run_limit",
]

# Memory traffic weight of the cost model: one output element costs as much as this many multiply-adds
# (depthwise convolutions and activations are memory-bound on CPUs).
ELEMENT_COST = 24.0

_ELEMENTWISE = _UNARY | _BINARY | _QDQ | {"BatchNormalization", "Concat"}
_EMPTY = np.iinfo(np.int64).max // 4  # a lower bound no real position reaches (empty intervals in hulls)


@dataclass(frozen=True)
class NodeCost:
    """One input-dependent node of the graph: its first output, op, multiply-adds and output elements (batch 1),
    and the output's spatial extent (None when it is not a 4-D tensor on the image's grid)."""

    tensor: str
    op: str
    macs: float
    elements: float
    extent: Optional[Tuple[int, int]] = None

    @property
    def cost(self) -> float:
        """The plan's cost model: multiply-adds plus memory traffic."""
        return self.macs + ELEMENT_COST * self.elements


def node_costs(info: GraphInfo, spatial: Optional[Dict[str, Tuple[int, int]]] = None) -> List[NodeCost]:
    """Every node that depends on the image input, in graph order, with its multiply-adds and output elements;
    ``spatial`` (tensor -> its spatial extent) fills :attr:`NodeCost.extent`."""
    out: List[NodeCost] = []
    for node in info.model.graph.node:
        if not any(i in info.dependent for i in node.input if i):
            continue
        name = node.output[0]
        shape = info.shapes.get(name)
        elements = float(np.prod(shape)) if shape else 0.0
        macs = 0.0
        if node.op_type in ("Conv", "ConvTranspose") and shape is not None:
            w = info.shapes.get(node.input[1])
            if w is not None and len(w) >= 3:
                macs = elements * float(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and shape is not None:
            a = info.shapes.get(node.input[0])
            if a:
                macs = elements * float(a[-1])
        out.append(NodeCost(name, node.op_type, macs, elements, (spatial or {}).get(name)))
    return out


@dataclass
class _Dirty:
    """The dirty region of one 4-D tensor for every window: spatial axes (batch axis counted), extent, and
    intervals (N, 2, 2): per axis [lo, hi), empty when lo >= hi."""

    axes: Tuple[int, int]
    extent: Tuple[int, int]
    intervals: np.ndarray

    def share(self) -> np.ndarray:
        sizes = np.clip(self.intervals[:, :, 1] - self.intervals[:, :, 0], 0, None)
        return (sizes[:, 0] * sizes[:, 1]) / float(self.extent[0] * self.extent[1])


def _window_field(node, info: GraphInfo, data: _Dirty) -> Optional[List[Tuple[int, int, int]]]:
    """(stride, offset, span) per spatial axis of a Conv or pooling node over an NCHW tensor, or None."""
    if data.axes != (2, 3):
        return None
    kernel = _attr(node, "kernel_shape")
    if kernel is None:
        w = info.shapes.get(node.input[1]) if len(node.input) > 1 else None
        kernel = w[2:] if w is not None else None
    if kernel is None or len(kernel) != 2:
        return None
    strides = list(_attr(node, "strides", [1, 1]))
    dilations = list(_attr(node, "dilations", [1, 1]))
    local = LocalTensor(node.input[0], data.axes, 1, (), (1, 1) + tuple(data.extent))  # type: ignore[arg-type]
    try:
        begins = _pads(node, info, node.input[0], kernel, strides, dilations, local)
    except ValueError:
        return None
    return [(int(s), -int(b), int(d) * (int(k) - 1) + 1) for k, s, d, b in zip(kernel, strides, dilations, begins)]


def _touched(intervals: np.ndarray, fields: Sequence[Tuple[int, int, int]], extent: Tuple[int, int]) -> np.ndarray:
    """The output positions [j0, j1) per axis whose window (stride, offset, span) meets the dirty intervals."""
    out = np.empty_like(intervals)
    for a, (s, off, span) in enumerate(fields):
        lo, hi = intervals[:, a, 0], intervals[:, a, 1]
        j0 = np.maximum(0, -((off + span - 1 - lo) // s))
        j1 = np.minimum(extent[a], (hi - 1 - off) // s + 1)
        empty = (hi <= lo) | (j1 <= j0)
        out[:, a, 0] = np.where(empty, 0, j0)
        out[:, a, 1] = np.where(empty, 0, j1)
    return out


def _hull(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The hull of several tensors' dirty intervals, per window and axis (empty ones ignored)."""
    stacked = np.stack(parts)  # (inputs, N, 2, 2)
    empty = stacked[..., 1] <= stacked[..., 0]
    lo = np.where(empty, _EMPTY, stacked[..., 0]).min(axis=0)
    hi = np.where(empty, -_EMPTY, stacked[..., 1]).max(axis=0)
    none = hi <= lo
    return np.stack([np.where(none, 0, lo), np.where(none, 0, hi)], axis=-1)


def _pad_fields(node, info: GraphInfo, data: _Dirty) -> Optional[List[Tuple[int, int, int]]]:
    """Pad as a window: (1, -begin, 1) per spatial axis, widened for reflect / edge padding; None otherwise."""
    if len(node.input) > 1 and node.input[1]:
        value = info.constant_value(node.input[1])
        if value is None:
            return None
        pads = [int(p) for p in value.reshape(-1)]
    else:
        pads = list(_attr(node, "pads", []))
    pad_axes = list(range(4))
    if len(node.input) > 3 and node.input[3]:
        value = info.constant_value(node.input[3])
        if value is None:
            return None
        pad_axes = [int(a) % 4 for a in value.reshape(-1)]
    k = len(pad_axes)
    if len(pads) != 2 * k or min(pads, default=0) < 0:
        return None
    begin = {a: pads[i] for i, a in enumerate(pad_axes)}
    end = {a: pads[i + k] for i, a in enumerate(pad_axes)}
    mode = _attr(node, "mode", "constant") or "constant"
    copies = {"constant": 0, "edge": 1, "reflect": 2}.get(mode)
    if copies is None:
        return None
    return [
        (1, -(begin.get(a, 0) + copies * end.get(a, 0)), 1 + copies * (begin.get(a, 0) + end.get(a, 0)))
        for a in data.axes
    ]


def _propagate(node, info: GraphInfo, dirty: Dict[str, _Dirty], inputs: List[str]) -> Optional[_Dirty]:
    """The dirty region of the node's first output, or None: dirty everywhere."""
    op = node.op_type
    out_shape = info.shapes.get(node.output[0])
    if out_shape is None or len(out_shape) != 4 or any(i not in dirty for i in inputs):
        return None
    data = dirty[inputs[0]]
    if op == "Transpose":
        perm = list(_attr(node, "perm", [3, 2, 1, 0]))
        if len(perm) != 4 or perm[0] != 0:
            return None
        axes = (perm.index(data.axes[0]), perm.index(data.axes[1]))
        return _Dirty(axes, (out_shape[axes[0]], out_shape[axes[1]]), data.intervals)
    extent = (int(out_shape[data.axes[0]]), int(out_shape[data.axes[1]]))
    if op == "Conv" or op in _POOLS or op == "Pad":
        if len(inputs) != 1 or node.input[0] != inputs[0]:
            return None  # weights or pads computed from the image
        fields = _pad_fields(node, info, data) if op == "Pad" else _window_field(node, info, data)
        if fields is None or (op == "MaxPool" and len([o for o in node.output if o]) > 1):
            return None
        return _Dirty(data.axes, extent, _touched(data.intervals, fields, extent))
    if op in _ELEMENTWISE:
        parts = [dirty[i] for i in inputs]
        if any(p.axes != data.axes or p.extent != data.extent for p in parts) or extent != data.extent:
            return None  # broadcast over space, or another grid: every position may change
        return _Dirty(data.axes, extent, _hull([p.intervals for p in parts]))
    return None


def dirty_shares(info: GraphInfo, windows: np.ndarray, layout: Optional[str] = None) -> Dict[str, np.ndarray]:
    """For every tensor that depends on the image input: the share of its positions each window makes dirty,
    (N,) (1.0 where the analysis cannot bound it: dirty everywhere)."""
    return _walk(info, windows, layout)[0]


def _walk(
    info: GraphInfo, windows: np.ndarray, layout: Optional[str]
) -> Tuple[Dict[str, np.ndarray], Dict[str, Tuple[int, int]]]:
    """(:func:`dirty_shares`, the spatial extent of every tensor whose dirty region is bounded)."""
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    shape = info.input_shape
    if layout is None:
        layout = "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    extent = (int(shape[axes[0]]), int(shape[axes[1]]))
    lo = np.clip(windows[:, 0:2], 0, extent)
    hi = np.clip(windows[:, 0:2] + windows[:, 2:4], 0, extent)
    intervals = np.stack([lo, hi], axis=-1)
    dirty: Dict[str, _Dirty] = {info.input_name: _Dirty(axes, extent, intervals)}
    everywhere = set()
    for node in info.model.graph.node:
        inputs = [i for i in node.input if i and (i in dirty or i in everywhere)]
        if not inputs:
            continue
        result = None if any(i in everywhere for i in inputs) else _propagate(node, info, dirty, inputs)
        outputs = [o for o in node.output if o]
        if result is None:
            everywhere.update(outputs)
        else:
            dirty[outputs[0]] = result
            everywhere.update(outputs[1:])
    shares = {name: d.share() for name, d in dirty.items()}
    ones = np.ones(len(windows))
    shares.update({name: ones for name in everywhere})
    return shares, {name: d.extent for name, d in dirty.items()}


@dataclass(frozen=True)
class Stage:
    """One resolution of the graph: its spatial extent (None: after locality ends), its share of a full pass's
    time (estimated or measured) and its dirty share of that time, averaged over the windows."""

    extent: Optional[Tuple[int, int]]
    time_share: float
    dirty_share: float


@dataclass(frozen=True)
class Limit:
    """What an exact engine cannot skip, averaged over a run's windows: the dirty share of a full pass by
    multiply-adds and by time (``weights``: ``"cost model"`` or ``"measured"``), and its stages."""

    windows: int
    macs_share: float
    time_share: float
    weights: str
    stages: Tuple[Stage, ...] = field(default_factory=tuple)

    @property
    def speedup_macs(self) -> float:
        """The speed-up limit by multiply-adds: 1 / their dirty share."""
        return 1.0 / self.macs_share if self.macs_share > 0 else float("inf")

    @property
    def speedup(self) -> float:
        """The speed-up limit by time: 1 / the time-weighted dirty share."""
        return 1.0 / self.time_share if self.time_share > 0 else float("inf")

    def describe(self) -> dict:
        """The limit for a run record (rounded, so that records stay byte-identical across machines)."""
        return {
            "dirty_share_macs": round(self.macs_share, 4),
            "dirty_share_time": round(self.time_share, 4),
            "speedup_macs": round(self.speedup_macs, 3),
            "speedup_time": round(self.speedup, 3),
            "time_weights": self.weights,
            "stages": [
                {
                    "extent": list(s.extent) if s.extent is not None else None,
                    "time_share": round(s.time_share, 4),
                    "dirty_share": round(s.dirty_share, 4),
                }
                for s in self.stages
            ],
        }


def incremental_limit(
    info: GraphInfo,
    windows: np.ndarray,
    *,
    layout: Optional[str] = None,
    output: Optional[str] = None,
    node_times: Optional[Sequence[Tuple[str, float, Optional[Tuple[int, ...]]]]] = None,
) -> Limit:
    """The limit of exact incremental inference for these windows ((N, 4): y, x, h, w in input pixels) on the
    graph of ``info``: the dirty share of a full pass by multiply-adds and by time, averaged over the windows.

    ``node_times`` (from :func:`measure_node_times`: name, seconds, output shape of every node onnxruntime ran)
    weighs the time by measurement; without it, by the cost model. A measured node is matched to the graph's
    tensor of its name (onnxruntime names a fused node by its last output), else to the mean dirty share of the
    resolution of its output shape, else counted dirty everywhere. ``output``: count only the nodes it needs
    (default: every node that depends on the image)."""
    shares, extents = _walk(info, windows, layout)
    needed = _ancestors(info, output) if output else None
    costs = [c for c in node_costs(info, extents) if c.tensor in shares and (needed is None or c.tensor in needed)]
    mean = {c.tensor: float(np.mean(shares[c.tensor])) for c in costs}
    macs = sum(c.macs for c in costs)
    macs_share = sum(c.macs * mean[c.tensor] for c in costs) / macs if macs else 1.0
    by_extent: Dict[Optional[Tuple[int, int]], List[float]] = {}
    for c in costs:
        acc = by_extent.setdefault(c.extent, [0.0, 0.0])
        acc[0] += c.cost
        acc[1] += c.cost * mean[c.tensor]
    stage_dirty = {e: (v[1] / v[0] if v[0] else 1.0) for e, v in by_extent.items()}
    if node_times is None:
        weighted = [(c.extent, c.cost, mean[c.tensor]) for c in costs]
        weights = "cost model"
    else:
        known = set(stage_dirty) - {None}
        weighted = []
        for name, seconds, shape in node_times:
            extent = extents.get(name) or _extent_of(shape, known)
            share = mean.get(name, stage_dirty.get(extent, 1.0) if extent is not None else 1.0)
            weighted.append((extent, float(seconds), share))
        weights = "measured"
    total = sum(w for _, w, _ in weighted) or 1.0
    time_share = sum(w * s for _, w, s in weighted) / total
    stages: Dict[Optional[Tuple[int, int]], List[float]] = {}
    for extent, w, s in weighted:
        acc = stages.setdefault(extent, [0.0, 0.0])
        acc[0] += w
        acc[1] += w * s
    ordered = sorted(stages.items(), key=lambda kv: -(kv[0][0] * kv[0][1]) if kv[0] is not None else 1)
    return Limit(
        windows=len(np.asarray(windows).reshape(-1, 4)),
        macs_share=macs_share,
        time_share=time_share,
        weights=weights,
        stages=tuple(Stage(e, v[0] / total, v[1] / v[0] if v[0] else 1.0) for e, v in ordered),
    )


def _ancestors(info: GraphInfo, output: str) -> set:
    """The tensors ``output`` is computed from (itself included)."""
    seen, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = info.producer.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return seen


def run_limit(
    model_path,
    input_shape: Sequence[int],
    windows: np.ndarray,
    *,
    layout: Optional[str] = None,
    input_name: Optional[str] = None,
    output_name: Optional[str] = None,
    model_sha256: Optional[str] = None,
) -> dict:
    """The limit of a run's windows as its record says it (:meth:`Limit.describe`, time weighed by the cost
    model, so the same inputs give the same record), read from the on-disk cache (see
    :mod:`occlude_cli.inference.cache`) when ``model_sha256`` is given, so that a later process does not read
    the graph again."""
    from . import cache

    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    key = None
    if model_sha256:
        key = cache.entry_key(
            "limit",
            sha256=model_sha256,
            input_shape=[int(d) for d in input_shape],
            layout=layout,
            input_name=input_name,
            output_name=output_name,
            windows=hashlib.sha256(windows.tobytes()).hexdigest(),
            element_cost=ELEMENT_COST,
        )
        hit = cache.load("limit", key)
        if hit is not None and isinstance(hit[1].get("limit"), dict):
            return hit[1]["limit"]
    info = GraphInfo(model_path, input_shape=input_shape, input_name=input_name)
    record = incremental_limit(info, windows, layout=layout, output=output_name).describe()
    record = json.loads(json.dumps(record, sort_keys=True))  # as the cache keeps it: records stay byte-identical
    if key is not None:
        cache.store("limit", key, {"limit": record})
    return record


def _extent_of(shape: Optional[Tuple[int, ...]], known) -> Optional[Tuple[int, int]]:
    """The known resolution an output shape is on (NCHW, onnxruntime's blocked NCHWc, or NHWC), or None."""
    if not shape or len(shape) < 4:
        return None
    for a in (2, 1):
        pair = (int(shape[a]), int(shape[a + 1]))
        if pair in known:
            return pair
    return None


def measure_node_times(
    model, input_shape: Sequence[int], *, batch: int = 16, runs: int = 5, threads: Optional[int] = None
) -> List[Tuple[str, float, Optional[Tuple[int, ...]]]]:
    """Where a full pass's time goes on this machine: onnxruntime's profiler on ``runs`` batches of ``batch``
    random inputs (after one warm-up), the graph optimised as occlude runs it. Returns (name, median seconds,
    output shape) per node onnxruntime ran; a fused node is named after its last output tensor."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        elem = {"tensor(float)": np.float32, "tensor(double)": np.float64}.get(first.type, np.float32)
        x = np.random.default_rng(0).standard_normal((batch, *[int(d) for d in input_shape[1:]])).astype(elem)
        for _ in range(runs + 1):
            session.run(None, {first.name: x})
        with open(session.end_profiling(), encoding="utf-8") as handle:
            events = json.load(handle)
    per_node: Dict[str, List[float]] = {}
    shapes: Dict[str, Optional[Tuple[int, ...]]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(event["name"])[: -len("_kernel_time")]
        name = name[: -len("_nchwc")] if name.endswith("_nchwc") else name
        per_node.setdefault(name, []).append(float(event.get("dur", 0.0)) * 1e-6)
        outputs = event.get("args", {}).get("output_type_shape") or []
        dims = next(iter(outputs[0].values()), None) if outputs and isinstance(outputs[0], dict) else None
        shapes[name] = tuple(int(d) for d in dims) if dims else None
    return [(name, statistics.median(times[1:] or times), shapes[name]) for name, times in per_node.items()]
