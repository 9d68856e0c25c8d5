"""Inner tensors and cuts: every intermediate tensor with its producing op, shape and dtype from ONNX shape
inference (:func:`model_tensors`), and a model cut at an inner tensor into a prefix (input -> tensor) and a
suffix (tensor -> outputs) (:func:`split_model`, :func:`valid_cut_points`, :func:`verify_split`), so that layer
occlusion runs only the part after the cut. A cut is valid when every path from the input to the outputs crosses
the tensor (it dominates the outputs); a skip connection around it makes it invalid."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, shape_inference

from occlude_cli.errors import OccludeError

from .onnxfile import (
    _NUMPY_TYPES,
    ModelOrPath,
    _error_line,
    _node_label,
    _serialize,
    _session,
    check_external_data,
    load_model,
)

# Split verification: prefix then suffix runs the very same kernels as the whole model.
SPLIT_RTOL, SPLIT_ATOL = 1e-5, 1e-6
# How many valid cut points an invalid-cut error lists on each side of the requested tensor.
NEAREST_CUTS = 3


@dataclass(frozen=True)
class TensorInfo:
    """One tensor computed by a node of the main graph."""

    name: str
    op_type: str  # the op of the node that produces it
    shape: list[int | None] | None  # None when even the rank is unknown; a dim is None when unknown
    dtype: str  # numpy dtype name ("float32"), or "unknown"


def _dtype_name(elem_type: int) -> str:
    if not elem_type:
        return "unknown"
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _shape_of(type_proto: onnx.TypeProto) -> list[int | None] | None:
    tensor = type_proto.tensor_type
    if not type_proto.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in tensor.shape.dim]


def _inferred_types(
    model: onnx.ModelProto, input_shape: Mapping[str, Sequence[int]] | None = None
) -> dict[str, onnx.TypeProto]:
    """Name -> TypeProto of every value of the main graph after ONNX shape inference.

    The model is copied; its stale ``value_info`` is dropped (it may pin a batch of 1), and the graph inputs
    named in ``input_shape`` get those concrete dimensions (for the others, symbolic dims stay symbolic).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    known = {vi.name: vi for vi in copy.graph.input}
    for name, dims in (input_shape or {}).items():
        if name not in known:
            raise OccludeError(f"input_shape names {name!r}, which is not a graph input ({', '.join(known)})")
        shape = known[name].type.tensor_type.shape
        if len(shape.dim) != len(dims):
            raise OccludeError(f"input_shape for {name!r} has {len(dims)} dims; the input has {len(shape.dim)}")
        for dim, value in zip(shape.dim, dims):
            if int(value) <= 0:
                raise OccludeError(f"input_shape for {name!r} must be positive integers, got {list(dims)}")
            if dim.WhichOneof("value") == "dim_value" and dim.dim_value != int(value):
                raise OccludeError(
                    f"input_shape for {name!r} is {list(dims)} but the model fixes "
                    f"{[d.dim_value or d.dim_param for d in shape.dim]}"
                )
            dim.dim_value = int(value)
    try:
        inferred = shape_inference.infer_shapes(copy, data_prop=True)
    except Exception as exc:
        raise OccludeError(f"ONNX shape inference failed: {_error_line(exc)}") from None
    types: dict[str, onnx.TypeProto] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types[vi.name] = vi.type
    for tensor in inferred.graph.initializer:
        types.setdefault(tensor.name, helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims)))
    return types


def model_tensors(
    model_or_path: ModelOrPath, input_shape: Mapping[str, Sequence[int]] | None = None
) -> list[TensorInfo]:
    """Every tensor computed by a node of the main graph (graph outputs included), in topological order, with
    the producing op, its shape and dtype from ONNX shape inference.

    ``input_shape``: {graph input name: full shape} to make symbolic dimensions (the batch, a free image size)
    concrete, so that downstream shapes become numbers; without it symbolic dims show as None.
    """
    model = load_model(model_or_path)
    types = _inferred_types(model, input_shape)
    out: list[TensorInfo] = []
    for node in model.graph.node:
        for name in node.output:
            if not name:
                continue
            type_proto = types.get(name)
            if type_proto is None:
                out.append(TensorInfo(name, node.op_type, None, "unknown"))
            else:
                out.append(
                    TensorInfo(name, node.op_type, _shape_of(type_proto), _dtype_name(type_proto.tensor_type.elem_type))
                )
    return out


def _subgraph_outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (and its own subgraphs) reads from enclosing scopes."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    reads: set[str] = set()
    for node in graph.node:
        for name in _node_reads(node):
            if name not in defined:
                reads.add(name)
        defined.update(o for o in node.output if o)
    return reads


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: its inputs, plus what its If/Loop/Scan subgraphs capture from outside."""
    reads = [name for name in node.input if name]
    for attr in node.attribute:
        subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for sub in subgraphs:
            reads.extend(sorted(_subgraph_outer_reads(sub)))
    return reads


class _Graph:
    """Index of the main graph: producers, consumers, the input-dependent ("dynamic") part."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.model = model
        self.nodes = list(graph.node)
        self.reads = [_node_reads(n) for n in self.nodes]
        self.constants = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
        self.inputs = [vi.name for vi in graph.input if vi.name not in self.constants]
        self.outputs = [vi.name for vi in graph.output]
        self.producer: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
        self.consumers: dict[str, list[int]] = {}
        for i, reads in enumerate(self.reads):
            for name in reads:
                self.consumers.setdefault(name, []).append(i)
        # Tensors whose value depends on a graph input; a node is dynamic when it reads one. Nodes are
        # topologically sorted in a valid ONNX graph, so one pass suffices.
        self.dynamic: set[str] = set(self.inputs)
        self.dynamic_node = [False] * len(self.nodes)
        for i, node in enumerate(self.nodes):
            if any(name in self.dynamic for name in self.reads[i]):
                self.dynamic_node[i] = True
                self.dynamic.update(o for o in node.output if o)

    def label(self, index: int) -> str:
        return _node_label(self.nodes[index], index)

    def ancestors(self, tensors: Iterable[str], stop: Iterable[str] = ()) -> set[int]:
        """Indices of the nodes needed to compute ``tensors``, not looking past the names in ``stop``."""
        stop = set(stop)
        needed: set[int] = set()
        todo = [t for t in tensors if t not in stop]
        seen: set[str] = set(todo)
        while todo:
            name = todo.pop()
            index = self.producer.get(name)
            if index is None or index in needed:
                continue
            needed.add(index)
            for read in self.reads[index]:
                if read not in seen and read not in stop:
                    seen.add(read)
                    todo.append(read)
        return needed

    def descendants(self, tensor: str) -> set[int]:
        """Indices of the nodes whose value depends on ``tensor``."""
        found: set[int] = set()
        todo = [tensor]
        while todo:
            name = todo.pop()
            for index in self.consumers.get(name, []):
                if index not in found:
                    found.add(index)
                    todo.extend(o for o in self.nodes[index].output if o)
        return found

    def dominators(self) -> list[str]:
        """Dynamic tensors that every path from the graph inputs to the graph outputs crosses, in topological
        order (graph inputs and outputs themselves excluded).

        Dominators of a DAG in one topological pass: the immediate dominator of a tensor is the nearest
        common ancestor, in the dominator tree built so far, of the tensors it is computed from.
        """
        source = "\x00source"
        sink = "\x00sink"
        idom: dict[str, str] = {source: source}
        depth: dict[str, int] = {source: 0}

        def meet(a: str, b: str) -> str:
            while a != b:
                if depth[a] < depth[b]:
                    a, b = b, a
                a = idom[a]
            return a

        def place(name: str, preds: Sequence[str]) -> None:
            preds = [p for p in preds if p in idom]
            if not preds:
                return
            common = preds[0]
            for p in preds[1:]:
                common = meet(common, p)
            idom[name] = common
            depth[name] = depth[common] + 1

        for name in self.inputs:
            place(name, [source])
        for i, node in enumerate(self.nodes):
            if not self.dynamic_node[i]:
                continue
            preds = [r for r in self.reads[i] if r in self.dynamic]
            for out in node.output:
                if out:
                    place(out, preds)
        place(sink, [o for o in self.outputs if o in self.dynamic])
        if sink not in idom:
            return []
        chain: list[str] = []
        name = idom[sink]
        excluded = set(self.inputs) | set(self.outputs)
        while name != source:
            if name not in excluded:
                chain.append(name)
            name = idom[name]
        chain.reverse()
        return chain


def valid_cut_points(model: ModelOrPath) -> list[str]:
    """Tensors at which :func:`split_model` can cut the model, in topological order: computed from the input
    (initializers and constant subexpressions excluded), not a graph input or output, and crossed by every
    path from the input to the outputs (they dominate the outputs, so nothing but them flows from the prefix
    to the suffix)."""
    return _Graph(load_model(model)).dominators()


@dataclass
class SplitModel:
    """A model cut at ``tensor``: ``prefix`` maps the graph inputs to ``tensor``, ``suffix`` maps ``tensor``
    (its only graph input) to the original outputs."""

    tensor: str
    prefix: onnx.ModelProto = field(repr=False)
    suffix: onnx.ModelProto = field(repr=False)

    @property
    def input_names(self) -> list[str]:
        """The prefix's real inputs (initializers that IR < 4 lists as inputs left out)."""
        constants = {t.name for t in self.prefix.graph.initializer}
        return [vi.name for vi in self.prefix.graph.input if vi.name not in constants]

    @property
    def output_names(self) -> list[str]:
        return [vi.name for vi in self.suffix.graph.output]

    def sessions(self, session_options=None, providers: Sequence[str] | None = None) -> tuple[Any, Any]:
        """(prefix session, suffix session) in onnxruntime."""
        return (
            _session(_serialize(self.prefix, "the prefix"), session_options, providers),
            _session(_serialize(self.suffix, "the suffix"), session_options, providers),
        )


def _nearest(valid: Sequence[str], graph: _Graph, tensor: str) -> str:
    """A few valid cut points before and after ``tensor`` in topological order, as text."""
    if not valid:
        return "this model has no valid cut point (every inner tensor is bypassed by another path)"
    position = graph.producer.get(tensor, -1)
    before = [v for v in valid if graph.producer[v] < position][-NEAREST_CUTS:]
    after = [v for v in valid if graph.producer[v] > position][:NEAREST_CUTS]
    parts = []
    if before:
        parts.append("before it: " + ", ".join(before))
    if after:
        parts.append("after it: " + ", ".join(after))
    return "nearest valid cut points " + "; ".join(parts) if parts else ""


def _cut_problem(graph: _Graph, tensor: str) -> str | None:
    """Why the model cannot be cut at ``tensor`` (None when it can)."""
    if tensor in graph.constants:
        return f"{tensor!r} is an initializer (a weight), not a tensor computed from the input"
    if tensor in graph.inputs:
        return f"{tensor!r} is a graph input: there is nothing before it to cut off"
    if tensor not in graph.producer:
        return None  # reported separately as an unknown name
    if tensor in graph.outputs:
        return f"{tensor!r} is a graph output: there is nothing after it to run"
    if tensor not in graph.dynamic:
        return f"{tensor!r} is a constant (it does not depend on the input)"
    after = graph.descendants(tensor)
    needed = graph.ancestors(graph.outputs, stop={tensor})
    before = graph.ancestors([tensor])
    for index in sorted(needed):
        if index not in after:
            continue
        for read in graph.reads[index]:
            if read == tensor or read not in graph.dynamic:
                continue
            if graph.producer.get(read) in after:
                continue
            node = f"node {graph.label(index)}"
            if read in graph.inputs:
                return f"{node} reads the graph input {read!r} directly: a skip connection from the input crosses it"
            if graph.producer.get(read) in before:
                return f"{node} reads {read} which is computed before the cut: a skip connection crosses it"
            return f"{node} reads {read} which is computed on a parallel branch that bypasses the cut"
    for name in graph.outputs:
        if name in graph.dynamic and graph.producer.get(name) not in after:
            return f"graph output {name!r} is computed without passing through the cut"
    if not any(name in graph.dynamic for name in graph.outputs):
        return "no graph output depends on the input"
    return None


def _copy_model_fields(source: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model around ``graph`` with the source's IR version, opsets, functions, producer and metadata."""
    model = onnx.ModelProto()
    model.ir_version = source.ir_version
    model.opset_import.extend(source.opset_import)
    model.producer_name = source.producer_name
    model.producer_version = source.producer_version
    model.domain = source.domain
    model.model_version = source.model_version
    model.doc_string = source.doc_string
    model.metadata_props.extend(source.metadata_props)
    model.functions.extend(source.functions)
    model.graph.CopyFrom(graph)
    return model


def _sub_graph(
    graph: _Graph,
    name: str,
    node_indices: set[int],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
) -> onnx.GraphProto:
    """A GraphProto holding the chosen nodes (original order) and the initializers they read."""
    source = graph.model.graph
    indices = sorted(node_indices)
    read: set[str] = set()
    produced: set[str] = set()
    for i in indices:
        read.update(graph.reads[i])
        produced.update(o for o in graph.nodes[i].output if o)
    sub = onnx.GraphProto()
    sub.name = name
    sub.doc_string = source.doc_string
    sub.node.extend(graph.nodes[i] for i in indices)
    sub.input.extend(inputs)
    # IR < 4 requires every initializer to be listed among the graph inputs too (later IRs allow it).
    listed = {vi.name for vi in inputs}
    sub.input.extend(
        vi for vi in source.input if vi.name in graph.constants and vi.name in read and vi.name not in listed
    )
    sub.output.extend(outputs)
    sub.initializer.extend(t for t in source.initializer if t.name in read)
    sub.sparse_initializer.extend(s for s in source.sparse_initializer if s.values.name in read)
    io = {vi.name for vi in inputs} | {vi.name for vi in outputs}
    sub.value_info.extend(vi for vi in source.value_info if vi.name in produced and vi.name not in io)
    return sub


def split_model(model_or_path: ModelOrPath, tensor: str) -> SplitModel:
    """Cut a model at the inner tensor ``tensor``.

    The prefix holds the nodes needed to compute ``tensor`` from the graph inputs and has ``tensor`` as its
    only output. The suffix has ``tensor`` as its only input and computes the original outputs; constant
    nodes and constant subexpressions it needs are duplicated into it, initializers are copied to each side
    that reads them; IR version, opsets, local functions and metadata are carried to both. The type of
    ``tensor`` comes from ONNX shape inference (symbolic dims such as a dynamic batch stay symbolic).

    Raises OccludeError, naming the tensor, when the name is unknown or the cut is invalid (e.g. a skip
    connection crosses it); the message lists the nearest valid cut points. Check the result numerically
    with :func:`verify_split`.
    """
    model = load_model(model_or_path)
    graph = _Graph(model)
    if not tensor:
        raise OccludeError("tensor must name a tensor of the model, got an empty name")
    if tensor not in graph.producer and tensor not in graph.constants and tensor not in graph.inputs:
        valid = graph.dominators()
        hint = (
            (
                "valid cut points include: "
                + ", ".join(valid[: 2 * NEAREST_CUTS])
                + (f" ... ({len(valid)} in all)" if len(valid) > 2 * NEAREST_CUTS else "")
            )
            if valid
            else "this model has no valid cut point"
        )
        raise OccludeError(f"cannot split the model at {tensor!r}: no node computes a tensor of that name; {hint}")
    problem = _cut_problem(graph, tensor)
    if problem is not None:
        nearest = _nearest(graph.dominators(), graph, tensor)
        raise OccludeError(f"cannot split the model at {tensor!r}: {problem}" + (f"; {nearest}" if nearest else ""))
    try:
        types = _inferred_types(model)
    except OccludeError:  # data propagation can fail on exotic graphs; the cut's type rarely needs it
        types = {vi.name: vi.type for vi in list(model.graph.value_info) + list(model.graph.output)}
    cut_type = types.get(tensor)
    if cut_type is None or not cut_type.tensor_type.elem_type:
        raise OccludeError(f"cannot split the model at {tensor!r}: ONNX shape inference gives no type for it")
    cut = onnx.ValueInfoProto()
    cut.name = tensor
    cut.type.CopyFrom(cut_type)
    used_inputs = {name for i in graph.ancestors([tensor]) for name in graph.reads[i]}
    prefix_inputs = [vi for vi in model.graph.input if vi.name in used_inputs and vi.name not in graph.constants]
    prefix_graph = _sub_graph(graph, f"{model.graph.name}_prefix", graph.ancestors([tensor]), prefix_inputs, [cut])
    suffix_graph = _sub_graph(
        graph,
        f"{model.graph.name}_suffix",
        graph.ancestors(graph.outputs, stop={tensor}),
        [cut],
        list(model.graph.output),
    )
    return SplitModel(tensor, _copy_model_fields(model, prefix_graph), _copy_model_fields(model, suffix_graph))


def verify_split(
    split: SplitModel,
    whole_session_or_path,
    sample: np.ndarray | Mapping[str, np.ndarray] | None = None,
    rtol: float = SPLIT_RTOL,
    atol: float = SPLIT_ATOL,
    *,
    session_options=None,
    providers: Sequence[str] | None = None,
    seed: int = 0,
) -> float:
    """Run the prefix then the suffix and the whole model on ``sample``; raise OccludeError naming the cut
    tensor when an output differs beyond ``rtol``/``atol``. Returns the largest absolute difference seen.

    ``whole_session_or_path``: an onnxruntime session of the whole model, or its path. ``sample``: the input
    array (for a single-input model) or {input name: array}; None draws one uniform [0, 1) input of the
    whole model's shape (symbolic dims taken as 1) with ``seed``. ``session_options`` / ``providers``: those of
    the prefix and suffix sessions (and of the whole model's when given a path); default CPU. Compare like with
    like: a GPU session of the whole model against CPU parts may differ by more than float noise.
    """
    if isinstance(whole_session_or_path, (str, os.PathLike)):
        check_external_data(whole_session_or_path)  # before onnxruntime reads the file
        whole = _session(str(whole_session_or_path), session_options, providers)
    else:
        whole = whole_session_or_path
    whole_inputs = whole.get_inputs()
    if sample is None:
        rng = np.random.default_rng(seed)
        feeds: dict[str, np.ndarray] = {}
        for node in whole_inputs:
            dtype = _NUMPY_TYPES.get(node.type)
            if dtype is None:
                raise OccludeError(f"input {node.name!r} has type {node.type}; pass a sample to verify the split")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]
            feeds[node.name] = rng.random(shape).astype(dtype)
    elif isinstance(sample, Mapping):
        feeds = dict(sample)
    else:
        if len(whole_inputs) != 1:
            raise OccludeError(f"the model has {len(whole_inputs)} inputs: pass sample as {{name: array}}")
        feeds = {whole_inputs[0].name: np.asarray(sample)}
    names = split.output_names
    try:
        prefix, suffix = split.sessions(session_options, providers)
        want = whole.run(names, feeds)
        (middle,) = prefix.run([split.tensor], {k: v for k, v in feeds.items() if k in split.input_names})
        got = suffix.run(names, {split.tensor: middle})
    except OccludeError:
        raise
    except Exception as exc:
        raise OccludeError(f"the split at {split.tensor!r} does not run: {_error_line(exc)}") from None
    worst = 0.0
    for name, a, b in zip(names, got, want):
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            raise OccludeError(
                f"the split at {split.tensor!r} gives output {name!r} of shape {list(a64.shape)}, "
                f"the whole model {list(b64.shape)}"
            )
        if a64.size:
            worst = max(worst, float(np.nanmax(np.abs(a64 - b64))))
        if not np.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True):
            raise OccludeError(
                f"the split at {split.tensor!r} differs from the whole model on output {name!r} "
                f"(max abs difference {worst:.3g}, rtol {rtol:g}, atol {atol:g})"
            )
    return worst
