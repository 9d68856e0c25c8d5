"""Everything occlude does to an ONNX graph, done with the ``onnx`` library.

Four jobs live here, because they all read and edit the same ``ModelProto`` structures:

* **Safety** (:func:`check_external_data`): an ONNX file may keep its weights in other files ("external
  data") named by a relative *location*. A crafted model can point that location anywhere
  (``../../etc/passwd``, ``/proc/self/environ``, a symlink out of the folder) and have the runtime read it.
  Every location is checked against the model's folder before anything loads the weights.
* **Batching** (:func:`batched_model`): many exporters pin the batch dimension to 1 although nothing in the
  graph needs it. The declared batch dimension of the graph's inputs and outputs is made symbolic, and the
  result is used only if onnxruntime proves on the spot that a batch of random inputs gives what the original
  model gives one input at a time; otherwise the caller gets a one-line reason and keeps batch 1.
* **Inspection** (:func:`model_tensors`): every intermediate tensor with its producing op, shape and dtype,
  from ONNX shape inference.
* **Splitting** (:func:`split_model`, :func:`valid_cut_points`, :func:`verify_split`): cut a model at an inner
  tensor into a prefix (input -> tensor) and a suffix (tensor -> outputs), so that layer occlusion and
  incremental inference run only the part after the cut. A cut is valid when every path from the input to
  the outputs crosses the tensor (it dominates the outputs); a skip connection around it makes it invalid.

Only onnx, onnxruntime, numpy and :mod:`occlude_cli.errors` are used, so the module can be moved and tested
alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
from onnx import helper, shape_inference

from occlude_cli.errors import OccludeError

__all__ = [
    "BATCH_DIM_PARAM",
    "RewriteResult",
    "SplitModel",
    "TensorInfo",
    "batched_model",
    "check_external_data",
    "load_model",
    "make_batch_dynamic",
    "model_tensors",
    "split_model",
    "valid_cut_points",
    "verify_split",
]

ModelOrPath = Union[onnx.ModelProto, str, "os.PathLike[str]"]

BATCH_DIM_PARAM = "batch"
# Batch-rewrite validation: a few samples, compared with the tolerance of float32 kernels whose summation
# order may change with the batch size.
DEFAULT_SAMPLES = 3
RTOL, ATOL = 1e-4, 1e-5
# Split verification: prefix then suffix runs the very same kernels as the whole model.
SPLIT_RTOL, SPLIT_ATOL = 1e-5, 1e-6
# How many valid cut points an invalid-cut error lists on each side of the requested tensor.
NEAREST_CUTS = 3

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


# --------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------


def _ort():
    import onnxruntime  # imported lazily: listing tensors or checking a file does not need the runtime

    return onnxruntime


_ORT_NODE = re.compile(r"running (\S+) node\. Name:'([^']*)'")
_ORT_CHECK = re.compile(r"\bwas false\.\s*(.+)$", re.S)


def _error_line(exc: BaseException) -> str:
    """One short line from an exception; onnxruntime's kernel errors are cut down to the failing node and the
    sentence that explains the failure (not the C++ source file and the failed condition)."""
    text = str(exc).strip()
    node, check = _ORT_NODE.search(text), _ORT_CHECK.search(text)
    if node and check:
        name = f" {node.group(2)!r}" if node.group(2) else ""
        line = f"{node.group(1)} node{name}: {' '.join(check.group(1).split())}"
    else:
        line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} ({node.op_type})"


def _default_options():
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _session(model: bytes | str, options=None, providers: Sequence[str] | None = None):
    return _ort().InferenceSession(
        model,
        sess_options=options if options is not None else _default_options(),
        providers=list(providers or ["CPUExecutionProvider"]),
    )


def _serialize(model: onnx.ModelProto, what: str) -> bytes:
    try:
        return model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GiB
        raise OccludeError(f"{what} cannot be serialised for onnxruntime (over 2 GiB?): {_error_line(exc)}") from None


# --------------------------------------------------------------------------------------------------------
# External data: safety check and loading
# --------------------------------------------------------------------------------------------------------


def _graph_tensors(graph: onnx.GraphProto, where: str) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto stored in a graph, its subgraphs (If/Loop/Scan attributes) included, with a short
    description of where it sits."""
    for tensor in graph.initializer:
        yield tensor, where
    for sparse in graph.sparse_initializer:
        yield sparse.values, where
        yield sparse.indices, where
    for node in graph.node:
        yield from _node_tensors(node, f"{where}, node {node.name or node.op_type}")


def _node_tensors(node: onnx.NodeProto, where: str) -> Iterator[tuple[onnx.TensorProto, str]]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t, where
        for tensor in attr.tensors:
            yield tensor, where
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values, where
            yield attr.sparse_tensor.indices, where
        for sparse in attr.sparse_tensors:
            yield sparse.values, where
            yield sparse.indices, where
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g, f"{where}, attribute {attr.name}")
        for sub in attr.graphs:
            yield from _graph_tensors(sub, f"{where}, attribute {attr.name}")


def _model_tensors_stored(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    yield from _graph_tensors(model.graph, "main graph")
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node, f"function {function.name}, node {node.name or node.op_type}")


def _read_proto(path: Path) -> onnx.ModelProto:
    """The model's protobuf without external weights; OccludeError for a missing or unparseable file."""
    if not path.is_file():
        raise OccludeError(f"model not found or not a regular file: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise OccludeError(f"cannot load {path} as an ONNX model: {_error_line(exc)}") from None


_EXTERNAL_DATA_KEYS = frozenset({"location", "offset", "length", "checksum"})


def _check_tensor_location(tensor: onnx.TensorProto, where: str, folder: Path) -> None:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    name = tensor.name or "(unnamed)"
    prefix = f"external data of tensor {name!r} ({where}) at location {location!r}"
    if not location:
        raise OccludeError(f"{prefix}: the location is empty")
    unknown = sorted(k for k in info if k not in _EXTERNAL_DATA_KEYS and not (k == "basepath" and not info[k]))
    if unknown:  # older onnx versions set unknown keys as attributes of their reader object
        raise OccludeError(f"{prefix}: unexpected external-data key(s) {', '.join(map(repr, unknown))}")
    if "\x00" in location:
        raise OccludeError(f"{prefix}: the location contains a NUL byte")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise OccludeError(f"{prefix}: absolute locations are refused; it must be a file in the model's folder")
    parts = re.split(r"[/\\]", location)
    if ".." in parts:
        raise OccludeError(f"{prefix}: '..' escapes the model's folder; it must be a file in the model's folder")
    target = folder / location
    try:
        resolved = target.resolve(strict=True)
    except (OSError, RuntimeError):
        raise OccludeError(f"{prefix}: the file does not exist next to the model") from None
    root = folder.resolve()
    if resolved != root and root not in resolved.parents:
        raise OccludeError(f"{prefix}: it resolves to {resolved}, outside the model's folder {root} (a symlink?)")
    if not resolved.is_file():
        raise OccludeError(f"{prefix}: it is not a regular file")
    size = resolved.stat().st_size
    try:
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise OccludeError(f"{prefix}: offset/length are not integers") from None
    if offset < 0 or (length is not None and length < 0) or offset + (length or 0) > size:
        raise OccludeError(f"{prefix}: offset {offset} and length {length} run past the file's end ({size} bytes)")


def check_external_data(path) -> onnx.ModelProto:
    """Refuse a model whose external-data locations could read files outside its folder.

    Each tensor stored outside the ``.onnx`` file (initializers, sparse initializers, tensor attributes,
    tensors inside If/Loop/Scan subgraphs and local functions) names a relative location. It must not be
    absolute, must not contain ``..``, must resolve (symlinks followed) inside the model's folder, and must
    exist as a regular file holding the declared byte range. Raises OccludeError with one line naming the
    tensor and the location. Returns the model as read (external weights not loaded), so that a caller
    that needs the graph's structure does not parse the file twice. The external weights are never read.
    """
    path = Path(path)
    model = _read_proto(path)
    folder = path.parent if str(path.parent) else Path(".")
    for tensor, where in _model_tensors_stored(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_tensor_location(tensor, where, folder)
    return model


def load_model(model_or_path: ModelOrPath) -> onnx.ModelProto:
    """A ModelProto as is, or the file at a path with its external data loaded (after
    :func:`check_external_data`)."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    check_external_data(path)
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise OccludeError(f"cannot load {path} as an ONNX model: {_error_line(exc)}") from None


# --------------------------------------------------------------------------------------------------------
# The batch rewrite
# --------------------------------------------------------------------------------------------------------


@dataclass
class RewriteResult:
    """The outcome of :func:`batched_model`: a validated batch-dynamic session, or why there is none."""

    ok: bool
    session: Any | None  # an onnxruntime.InferenceSession of the rewritten model, or None
    reason: str  # one line: what was done, or why it could not be
    model: onnx.ModelProto | None = field(default=None, repr=False)  # the rewritten model when ok


def _first_dim_is_one(value_info: onnx.ValueInfoProto) -> bool:
    if not value_info.type.HasField("tensor_type"):
        return False  # sequences, maps, optionals: no batch dimension to speak of
    shape = value_info.type.tensor_type.shape
    if not value_info.type.tensor_type.HasField("shape") or not len(shape.dim):
        return False
    dim = shape.dim[0]
    return dim.WhichOneof("value") == "dim_value" and dim.dim_value == 1


def make_batch_dynamic(model: onnx.ModelProto, dim_param: str = BATCH_DIM_PARAM) -> tuple[list[str], list[str], int]:
    """Edit ``model`` in place: the first dimension of every graph input (initializers listed as inputs, as
    IR < 4 models do, excepted) and every graph output that is ``dim_value: 1`` becomes ``dim_param``; the
    dimension's denotation stays. ``graph.value_info`` is cleared: it holds only intermediate shape hints,
    which onnxruntime infers again on load; left in, their batch of 1 would be taken at its word by shape
    inference and by optimisations such as constant folding of ``Shape``, and the batched model would fail or
    compute something else. Nodes are not touched (a ``Reshape`` to ``[1, -1]`` stays, which is why the
    result must be validated before use).

    Returns (inputs rewritten, outputs rewritten, value_info entries dropped). Raises OccludeError when no
    graph input has a first dimension of 1.
    """
    if not dim_param:
        raise OccludeError("dim_param must be a non-empty name")
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    inputs = [vi for vi in graph.input if vi.name not in constants and _first_dim_is_one(vi)]
    if not inputs:
        raise OccludeError("no graph input has a fixed first dimension of 1: nothing to rewrite")
    outputs = [vi for vi in graph.output if _first_dim_is_one(vi)]
    for vi in inputs + outputs:
        vi.type.tensor_type.shape.dim[0].dim_param = dim_param  # a oneof: clears dim_value
    dropped = len(graph.value_info)
    del graph.value_info[:]
    return [vi.name for vi in inputs], [vi.name for vi in outputs], dropped


def _pick_input(session, input_name: str | None):
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise OccludeError(f"the model has {len(inputs)} inputs; validation feeds one")
    if input_name is not None and inputs[0].name != input_name:
        raise OccludeError(f"the model has no input named {input_name!r}")
    return inputs[0]


def _random_batch(node, samples: int, seed: int, sample_shape: Sequence[int] | None) -> np.ndarray:
    dtype = _NUMPY_TYPES.get(node.type)
    if dtype is None:
        raise OccludeError(f"input {node.name!r} has type {node.type}; validation supports numeric tensors")
    if sample_shape is not None:
        shape = [int(d) for d in sample_shape]
    else:
        shape = list(node.shape[1:])
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise OccludeError(f"input {node.name!r} has dynamic dimensions {node.shape}; cannot validate")
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.random((samples, *shape)).astype(dtype)  # 0..1: in range for raw-pixel and normalised models
    return rng.integers(0, 2, (samples, *shape)).astype(dtype)


def _compare_batched(
    reference,
    candidate,
    input_name: str,
    batch: np.ndarray,
    output_names: Sequence[str] | None,
    rtol: float,
    atol: float,
) -> str | None:
    """None when the candidate run on the whole batch matches the reference run sample by sample, else why
    not (one line)."""
    names = list(output_names) if output_names else [o.name for o in reference.get_outputs()]
    singles = [reference.run(names, {input_name: batch[i : i + 1]}) for i in range(len(batch))]
    quiet = _ort().RunOptions()
    quiet.log_severity_level = 4  # a failure here is an expected outcome: no error log on stderr
    try:
        batched = candidate.run(names, {input_name: batch}, quiet)
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"the rewritten model fails on a batch of {len(batch)}: {_error_line(exc)}"
    for k, name in enumerate(names):
        got = np.asarray(batched[k])
        want = [np.asarray(s[k]) for s in singles]
        if got.ndim == 0 or got.shape[0] != len(batch) or any(w.shape[:1] != (1,) for w in want):
            return (
                f"output {name!r} has shape {list(got.shape)} for a batch of {len(batch)} "
                f"(and {list(want[0].shape)} for one input): it has no batch axis"
            )
        want_all = np.concatenate(want)
        if got.shape != want_all.shape:
            return f"output {name!r} has shape {list(got.shape)} batched but {list(want_all.shape)} one by one"
        if not np.allclose(got, want_all, rtol=rtol, atol=atol, equal_nan=True):
            diff = np.nanmax(np.abs(got.astype(np.float64) - want_all.astype(np.float64)))
            return (
                f"output {name!r} differs between a batch of {len(batch)} and one input at a time "
                f"(max abs difference {diff:.3g}): the graph mixes samples or pins the batch"
            )
    return None


def batched_model(
    path,
    *,
    session_options=None,
    providers: Sequence[str] | None = None,
    reference=None,
    input_name: str | None = None,
    output_names: Sequence[str] | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
    sample_shape: Sequence[int] | None = None,
    dim_param: str = BATCH_DIM_PARAM,
) -> RewriteResult:
    """Rewrite a fixed-batch-1 model for any batch size and check the result.

    Never raises for a model that merely cannot be batched: ``ok`` is False and ``reason`` says why in one
    line. It does raise OccludeError for a model that must not be loaded at all (unsafe external data, see
    :func:`check_external_data`) and for ``samples`` < 2.

    The check runs on onnxruntime's CPU provider, whatever ``providers`` says, so that it tests the graph and
    not the numerics of a GPU: ``samples`` random inputs (uniform in [0, 1), ``seed``) go through the rewritten
    model as one batch and through the original one at a time, and every compared output (``output_names``,
    default all) must match within ``rtol``/``atol``. Cost: one load of the rewritten model plus
    ``samples`` + 1 forward passes.

    ``reference``: an existing CPU-only session of the original model (saves a load). ``session_options``:
    the onnxruntime.SessionOptions for every session (default: full graph optimisation, quiet logs).
    ``providers``: those of the returned session (default CPU; when CPU only, the validated session itself is
    returned). ``sample_shape``: one sample's shape, for inputs with dynamic dimensions besides the batch.
    Models with external data work: the weights are read (after the safety check) from the model's folder.
    """
    if samples < 2:
        raise OccludeError(f"samples must be at least 2 to validate a batch, got {samples}")
    path = Path(path)
    providers = list(providers or ["CPUExecutionProvider"])
    cpu = ["CPUExecutionProvider"]
    model = load_model(path)  # OccludeError for unreadable files and unsafe external data
    try:
        inputs, outputs, dropped = make_batch_dynamic(model, dim_param)
    except OccludeError as exc:
        return RewriteResult(False, None, f"not rewritten: {exc}")
    try:
        data = _serialize(model, "the rewritten model")
    except OccludeError as exc:
        return RewriteResult(False, None, str(exc))
    try:
        if reference is None or list(reference.get_providers()) != cpu:
            reference = _session(str(path), session_options, cpu)
    except Exception as exc:
        return RewriteResult(False, None, f"cannot load the original model: {_error_line(exc)}")
    try:
        candidate = _session(data, session_options, cpu)
    except Exception as exc:
        return RewriteResult(False, None, f"the rewritten model does not load: {_error_line(exc)}")
    try:
        node = _pick_input(reference, input_name)
        batch = _random_batch(node, samples, seed, sample_shape)
        problem = _compare_batched(reference, candidate, node.name, batch, output_names, rtol, atol)
    except OccludeError as exc:
        problem = str(exc)
    except Exception as exc:
        problem = f"validation failed: {_error_line(exc)}"
    if problem is not None:
        return RewriteResult(False, None, problem)
    if providers != cpu:
        try:
            candidate = _session(data, session_options, providers)
        except Exception as exc:
            why = f"the rewritten model does not load on {providers[0]}: {_error_line(exc)}"
            return RewriteResult(False, None, why)
    summary = (
        f"first dim 1 -> {dim_param!r} on input(s) {', '.join(inputs)}"
        + (f" and output(s) {', '.join(outputs)}" if outputs else " (no output had a batch dim of 1)")
        + (f"; dropped {dropped} value_info shape hint(s)" if dropped else "")
    )
    return RewriteResult(
        True, candidate, f"{summary}; validated: a batch of {samples} matches one-at-a-time runs", model
    )


# --------------------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Graph analysis: who reads what, what depends on the input, which tensors dominate the outputs
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------------


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
