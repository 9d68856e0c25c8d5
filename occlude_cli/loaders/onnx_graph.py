"""Run models exported with a fixed batch of 1 batched, without the ``onnx`` package.

Many exporters pin the batch dimension of a model to 1 (``torch.onnx.export`` with a 1-image dummy input
and no ``dynamic_axes``, for example). onnxruntime then refuses any other batch size, and occlusion, which
scores hundreds of occluded copies of one image, loses the throughput of batched inference. Often nothing
in the graph really needs the batch to be 1: only the declared shapes say so. This module

1. rewrites the model file's bytes so that the first dimension of the graph's inputs and outputs becomes
   the symbolic ``dim_param: "batch"`` (:func:`make_batch_dynamic`), and
2. proves on the spot that the rewritten model computes, for a batch of a few random inputs, what the
   original computes for each of them alone (:func:`batched_session`, :func:`batched_session_bytes`).

When either step fails (a ``Reshape`` to a hard-coded ``[1, K]``, a ``Shape`` folded into a constant, an
output without a batch axis, external weights...), the caller gets ``None`` and a one-line reason, and keeps
running the original model one image at a time.

The protobuf wire format, in the few words needed here
-------------------------------------------------------
A serialised message is a sequence of fields. Each field starts with a *key*, a varint holding
``(field_number << 3) | wire_type``, followed by its value:

=========  ==============  ==================================================================
wire type  name            value
=========  ==============  ==================================================================
0          VARINT          a varint: 7 bits per byte, least significant group first, the top
                           bit of each byte set when another byte follows
1          I64             8 bytes (fixed64, double)
2          LEN             a varint length, then that many bytes: strings, bytes, embedded
                           messages and packed repeated numbers
3 / 4      SGROUP/EGROUP   start / end of a (deprecated) group; a group's fields lie between
5          I32             4 bytes (fixed32, float)
=========  ==============  ==================================================================

Fields may come in any order, repeated fields are simply repeated, and a reader must keep the fields it
does not know. This module parses only the messages on the path to the shapes it edits, keeps every
other field as the exact bytes it was read from, and re-encodes only the keys and lengths of the
messages it changed. An untouched model therefore round-trips byte for byte, and so does everything in
an edited one that the edit does not concern (weights, nodes, metadata_props, unknown fields).

The ONNX messages and field numbers used (from onnx/onnx.proto)::

    ModelProto.graph = 7                       GraphProto
    GraphProto.initializer = 5                 TensorProto          (name = 8, data_location = 14)
    GraphProto.sparse_initializer = 15         SparseTensorProto    (values = 1, indices = 2: TensorProto)
    GraphProto.input = 11, output = 12         ValueInfoProto       (name = 1, type = 2)
    GraphProto.value_info = 13                 ValueInfoProto       (dropped by the rewrite, see below)
    TypeProto.tensor_type = 1                  TypeProto.Tensor     (elem_type = 1, shape = 2)
    TypeProto.sparse_tensor_type = 8           TypeProto.SparseTensor (same layout)
    TensorShapeProto.dim = 1                   Dimension            (dim_value = 1, dim_param = 2 (a oneof),
                                                                     denotation = 3)

What the rewrite changes
------------------------
* The first dimension of every graph input (initializers listed as inputs excepted, as IR < 4 models
  list them) and every graph output whose first dimension is ``dim_value: 1`` becomes
  ``dim_param: "batch"``; the dimension's other fields (its denotation) stay.
* ``graph.value_info`` is dropped. It holds only intermediate shape hints, which onnxruntime infers again
  on load; left in, their batch of 1 would be taken at its word by shape inference and by optimisations
  such as constant folding of ``Shape`` nodes, and the batched model would fail or, worse, compute
  something else.

Nothing else changes: not the nodes (a ``Reshape`` to ``[1, -1]`` stays, which is why the result is
validated before use), not the subgraphs of ``If``/``Loop`` nodes, not functions or metadata.

Only the standard library, numpy and onnxruntime are used: ``onnx`` is not a runtime dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "BATCH_DIM_PARAM",
    "ProtobufError",
    "RewriteError",
    "Field",
    "RewriteResult",
    "BatchedModel",
    "parse_message",
    "serialize_message",
    "encode_varint",
    "read_varint",
    "rewrite_batch_dim",
    "make_batch_dynamic",
    "batched_model",
    "batched_session",
    "batched_session_bytes",
]

BATCH_DIM_PARAM = "batch"

# Wire types.
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

# Field numbers (onnx/onnx.proto).
MODEL_GRAPH = 7
GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO, GRAPH_SPARSE_INITIALIZER = 5, 11, 12, 13, 15
TENSOR_NAME, TENSOR_DATA_LOCATION = 8, 14
TENSOR_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
SPARSE_VALUES, SPARSE_INDICES = 1, 2
VALUE_INFO_NAME, VALUE_INFO_TYPE = 1, 2
TYPE_TENSOR, TYPE_SPARSE_TENSOR = 1, 8
TENSOR_TYPE_SHAPE = 2
SHAPE_DIM = 1
DIM_VALUE, DIM_PARAM = 1, 2

# Validation defaults: a few samples, compared as the issue asks.
DEFAULT_SAMPLES = 3
RTOL, ATOL = 1e-4, 1e-5


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, bad wire type, ...)."""


class RewriteError(ValueError):
    """The model cannot be rewritten (nothing to rewrite, external data, no graph, ...); the message is one
    line meant for users."""


# --------------------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------------------


def read_varint(buf: Union[bytes, memoryview], pos: int, end: Optional[int] = None) -> Tuple[int, int]:
    """Decode the varint starting at ``buf[pos]``: returns (value, position after it)."""
    end = len(buf) if end is None else end
    value = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """The minimal varint encoding of a non-negative integer (negative int64s as their 64-bit two's complement,
    as protobuf does)."""
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass
class Field:
    """One field of a message.

    ``value`` is an int for VARINT fields and bytes (a memoryview into the source while unedited) for the
    others: the payload of LEN fields, the 8 or 4 raw bytes of I64 / I32 fields and the enclosed bytes
    (end-group key excluded) of groups. ``raw`` is the field's exact source bytes, key included; it is what
    gets written back as long as it is set, so an unedited field keeps even a non-minimal encoding.
    Set it to None (or build a Field without it) to have the field encoded from ``number``, ``wire_type``
    and ``value``.
    """

    number: int
    wire_type: int
    value: Union[int, bytes, memoryview]
    raw: Optional[memoryview] = field(default=None, repr=False)

    def encode(self) -> bytes:
        """The field encoded from number, wire type and value (minimal varints), ignoring ``raw``."""
        key = encode_varint((self.number << 3) | self.wire_type)
        if self.wire_type == VARINT:
            return key + encode_varint(int(self.value))
        payload = bytes(self.value)
        if self.wire_type == LEN:
            return key + encode_varint(len(payload)) + payload
        if self.wire_type in (I64, I32):
            if len(payload) != (8 if self.wire_type == I64 else 4):
                raise ProtobufError(f"field {self.number}: wrong fixed-width payload size {len(payload)}")
            return key + payload
        if self.wire_type == SGROUP:
            return key + payload + encode_varint((self.number << 3) | EGROUP)
        raise ProtobufError(f"field {self.number}: cannot encode wire type {self.wire_type}")

    def to_bytes(self) -> Union[bytes, memoryview]:
        return self.raw if self.raw is not None else self.encode()

    @property
    def payload(self) -> memoryview:
        """The value of a LEN field as a memoryview (no copy)."""
        if self.wire_type != LEN:
            raise ProtobufError(f"field {self.number} is not length-delimited")
        return memoryview(self.value) if not isinstance(self.value, memoryview) else self.value


def _skip_group(buf: memoryview, pos: int, end: int, number: int) -> Tuple[int, int]:
    """Skip the fields of a group opened by field ``number``: returns (end of its content, position after
    its end-group key)."""
    while pos < end:
        field_start = pos
        key, pos = read_varint(buf, pos, end)
        wire_type, inner = key & 7, key >> 3
        if wire_type == EGROUP:
            if inner != number:
                raise ProtobufError(f"end-group {inner} closes group {number}")
            return field_start, pos
        pos = _skip_value(buf, pos, end, wire_type, inner)
    raise ProtobufError(f"unterminated group {number}")


def _skip_value(buf: memoryview, pos: int, end: int, wire_type: int, number: int) -> int:
    if wire_type == VARINT:
        return read_varint(buf, pos, end)[1]
    if wire_type == I64:
        pos += 8
    elif wire_type == I32:
        pos += 4
    elif wire_type == LEN:
        length, pos = read_varint(buf, pos, end)
        pos += length
    elif wire_type == SGROUP:
        return _skip_group(buf, pos, end, number)[1]
    else:
        raise ProtobufError(f"field {number}: invalid wire type {wire_type}")
    if pos > end:
        raise ProtobufError(f"field {number}: truncated value")
    return pos


def parse_message(buf: Union[bytes, bytearray, memoryview]) -> List[Field]:
    """Split one serialised message into its fields, in order, each keeping its exact source bytes.

    Only this level is parsed: an embedded message stays an opaque payload until parsed in turn.
    Payloads are memoryviews into ``buf`` (no copies), so parsing even a large model is cheap.
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    fields: List[Field] = []
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        key, pos = read_varint(view, pos, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(view, pos, end)
        elif wire_type in (I64, I32):
            width = 8 if wire_type == I64 else 4
            if pos + width > end:
                raise ProtobufError(f"field {number}: truncated fixed-width value")
            value, pos = view[pos : pos + width], pos + width
        elif wire_type == LEN:
            length, pos = read_varint(view, pos, end)
            if pos + length > end:
                raise ProtobufError(f"field {number}: length {length} runs past the end of the message")
            value, pos = view[pos : pos + length], pos + length
        elif wire_type == SGROUP:
            content_start = pos
            content_end, pos = _skip_group(view, pos, end, number)
            value = view[content_start:content_end]
        else:
            raise ProtobufError(f"field {number}: unexpected wire type {wire_type}")
        fields.append(Field(number, wire_type, value, view[start:pos]))
    return fields


def serialize_message(fields: Sequence[Field], *, keep_raw: bool = True) -> bytes:
    """Join fields back into a message: each field's source bytes while it has them (``keep_raw``), its
    fresh encoding otherwise."""
    if keep_raw:
        return b"".join(f.to_bytes() for f in fields)
    return b"".join(f.encode() for f in fields)


def _len_field(number: int, payload: bytes) -> Field:
    return Field(number, LEN, payload)


def _string(field_: Field) -> str:
    return bytes(field_.payload).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------------------
# The rewrite
# --------------------------------------------------------------------------------------------------------


@dataclass
class RewriteResult:
    """What :func:`rewrite_batch_dim` did."""

    model_bytes: bytes
    inputs: List[str]  # graph inputs whose first dim went from 1 to "batch"
    outputs: List[str]  # graph outputs likewise
    value_info_dropped: int  # graph.value_info entries removed

    def summary(self) -> str:
        return (
            f"first dim 1 -> {BATCH_DIM_PARAM!r} on input(s) {', '.join(self.inputs)}"
            + (f" and output(s) {', '.join(self.outputs)}" if self.outputs else " (no output had a batch dim of 1)")
            + (f"; dropped {self.value_info_dropped} value_info shape hint(s)" if self.value_info_dropped else "")
        )


def _rewrite_dimension(payload: memoryview, dim_param: str) -> Optional[bytes]:
    """A Dimension whose value is ``dim_value: 1`` -> the same with ``dim_param`` instead; None when the
    dimension is anything else (symbolic, another size, unset)."""
    fields = parse_message(payload)
    chosen = None  # dim_value and dim_param are a oneof: the last one on the wire wins
    for f in fields:
        if f.number in (DIM_VALUE, DIM_PARAM):
            chosen = f
    if chosen is None or chosen.number != DIM_VALUE or chosen.wire_type != VARINT or chosen.value != 1:
        return None
    out: List[Field] = []
    placed = False
    for f in fields:
        if f.number in (DIM_VALUE, DIM_PARAM):
            if not placed:  # the new dim_param takes the place of the first oneof member
                out.append(_len_field(DIM_PARAM, dim_param.encode("utf-8")))
                placed = True
            continue
        out.append(f)
    return serialize_message(out)


def _rewrite_shape(payload: memoryview, dim_param: str) -> Optional[bytes]:
    fields = parse_message(payload)
    for i, f in enumerate(fields):
        if f.number == SHAPE_DIM and f.wire_type == LEN:
            new = _rewrite_dimension(f.payload, dim_param)
            if new is None:
                return None
            fields[i] = _len_field(SHAPE_DIM, new)
            return serialize_message(fields)
    return None  # a scalar: no batch dimension


def _rewrite_in_place(payload: memoryview, number: int, rewrite) -> Optional[bytes]:
    """Apply ``rewrite`` to the (last) embedded message of field ``number``; None when it changes nothing."""
    fields = parse_message(payload)
    index = None
    for i, f in enumerate(fields):
        if f.number == number and f.wire_type == LEN:
            index = i
    if index is None:
        return None
    new = rewrite(fields[index].payload)
    if new is None:
        return None
    fields[index] = _len_field(number, new)
    return serialize_message(fields)


def _rewrite_type(payload: memoryview, dim_param: str) -> Optional[bytes]:
    def tensor(p):
        return _rewrite_in_place(p, TENSOR_TYPE_SHAPE, lambda s: _rewrite_shape(s, dim_param))

    fields = parse_message(payload)
    for number in (TYPE_TENSOR, TYPE_SPARSE_TENSOR):
        if any(f.number == number and f.wire_type == LEN for f in fields):
            return _rewrite_in_place(payload, number, tensor)
    return None  # sequence, map, optional: no batch dimension to speak of


def _rewrite_value_info(payload: memoryview, dim_param: str) -> Optional[bytes]:
    return _rewrite_in_place(payload, VALUE_INFO_TYPE, lambda t: _rewrite_type(t, dim_param))


def _value_info_name(payload: memoryview) -> str:
    name = ""
    for f in parse_message(payload):
        if f.number == VALUE_INFO_NAME and f.wire_type == LEN:
            name = _string(f)
    return name


def _tensor_name_and_external(payload: memoryview) -> Tuple[str, bool]:
    name, external = "", False
    for f in parse_message(payload):
        if f.number == TENSOR_NAME and f.wire_type == LEN:
            name = _string(f)
        elif f.number == TENSOR_DATA_LOCATION and f.wire_type == VARINT:
            external = f.value == TENSOR_EXTERNAL
    return name, external


def _initializers(graph: List[Field]) -> Tuple[set, List[str]]:
    """Names of the graph's initializers (dense and sparse) and of those stored in external files."""
    names, external = set(), []
    for f in graph:
        if f.wire_type != LEN:
            continue
        tensors = []  # (tensor payload, whether its name is the initializer's name)
        if f.number == GRAPH_INITIALIZER:
            tensors = [(f.payload, True)]
        elif f.number == GRAPH_SPARSE_INITIALIZER:  # a sparse initializer is named by its values tensor
            tensors = [(g.payload, g.number == SPARSE_VALUES) for g in parse_message(f.payload)
                       if g.number in (SPARSE_VALUES, SPARSE_INDICES) and g.wire_type == LEN]
        for tensor, names_it in tensors:
            name, is_external = _tensor_name_and_external(tensor)
            if names_it:
                names.add(name)
            if is_external:
                external.append(name)
    return names, external


def rewrite_batch_dim(model_bytes: Union[bytes, bytearray, memoryview], dim_param: str = BATCH_DIM_PARAM) -> RewriteResult:
    """Rewrite a serialised ModelProto so that its graph's batch dimension is symbolic (see the module doc).

    Raises :class:`RewriteError` when there is nothing to rewrite (no graph input with a first dimension of
    1) or the model keeps its weights in external files, and :class:`ProtobufError` on malformed bytes.
    """
    if not dim_param:
        raise ValueError("dim_param must be a non-empty name")
    model = parse_message(model_bytes)
    graph_index = None
    for i, f in enumerate(model):
        if f.number == MODEL_GRAPH and f.wire_type == LEN:
            graph_index = i
    if graph_index is None:
        raise RewriteError("the file has no ONNX graph")
    if sum(1 for f in model if f.number == MODEL_GRAPH) > 1:
        raise RewriteError("the model's graph is split over several fields")
    graph = parse_message(model[graph_index].payload)
    initializer_names, external = _initializers(graph)
    if external:
        raise RewriteError(
            f"the model keeps {len(external)} weight tensor(s) in external data files (e.g. {external[0]!r})"
        )
    inputs, outputs, dropped = [], [], 0
    new_graph: List[Field] = []
    for f in graph:
        if f.wire_type == LEN and f.number in (GRAPH_INPUT, GRAPH_OUTPUT):
            name = _value_info_name(f.payload)
            if not (f.number == GRAPH_INPUT and name in initializer_names):
                new = _rewrite_value_info(f.payload, dim_param)
                if new is not None:
                    (inputs if f.number == GRAPH_INPUT else outputs).append(name)
                    new_graph.append(_len_field(f.number, new))
                    continue
        elif f.number == GRAPH_VALUE_INFO:
            dropped += 1
            continue
        new_graph.append(f)
    if not inputs:
        raise RewriteError("no graph input has a fixed first dimension of 1: nothing to rewrite")
    model[graph_index] = _len_field(MODEL_GRAPH, serialize_message(new_graph))
    return RewriteResult(serialize_message(model), inputs, outputs, dropped)


def make_batch_dynamic(model_bytes: Union[bytes, bytearray, memoryview], dim_param: str = BATCH_DIM_PARAM) -> bytes:
    """The model's bytes with the first dimension of its graph inputs/outputs turned from 1 into
    ``dim_param`` and ``graph.value_info`` dropped; everything else byte for byte as it was.

    The result is *not* validated: use :func:`batched_session` or :func:`batched_session_bytes` before
    trusting it. Raises :class:`RewriteError` / :class:`ProtobufError` (both ValueErrors).
    """
    return rewrite_batch_dim(model_bytes, dim_param).model_bytes


# --------------------------------------------------------------------------------------------------------
# Validation with onnxruntime
# --------------------------------------------------------------------------------------------------------

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


@dataclass
class BatchedModel:
    """The outcome of :func:`batched_model`: a validated batched model, or why there is none."""

    model_bytes: Optional[bytes]  # the rewritten model, None when it is not usable
    session: Optional[object]  # an onnxruntime.InferenceSession of it with the caller's providers, or None
    reason: str  # one line: what was done, or why it could not be

    @property
    def ok(self) -> bool:
        return self.model_bytes is not None


_ORT_NODE = re.compile(r"running (\S+) node\. Name:'([^']*)'")
_ORT_CHECK = re.compile(r"\bwas false\.\s*(.+)$", re.S)


def _first_line(exc: BaseException) -> str:
    """One short line from an exception; onnxruntime's kernel errors are cut down to the failing node and
    the sentence that explains the failure (not the source file and the failed C++ condition)."""
    text = str(exc).strip()
    node, check = _ORT_NODE.search(text), _ORT_CHECK.search(text)
    if node and check:
        name = f" {node.group(2)!r}" if node.group(2) else ""
        line = f"{node.group(1)} node{name}: {' '.join(check.group(1).split())}"
    else:
        line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _ort():
    import onnxruntime

    return onnxruntime


def _sample_inputs(session, input_name: Optional[str], samples: int, seed: int,
                   sample_shape: Optional[Sequence[int]]) -> Tuple[str, np.ndarray]:
    inputs = session.get_inputs()
    if input_name is None:
        if len(inputs) != 1:
            raise RewriteError(f"the model has {len(inputs)} inputs; validation feeds one")
        node = inputs[0]
    else:
        matches = [i for i in inputs if i.name == input_name]
        if not matches:
            raise RewriteError(f"the model has no input named {input_name!r}")
        if len(inputs) != 1:
            raise RewriteError(f"the model has {len(inputs)} inputs; validation feeds one")
        node = matches[0]
    dtype = _NUMPY_TYPES.get(node.type)
    if dtype is None:
        raise RewriteError(f"input {node.name!r} has type {node.type}; validation supports numeric tensors")
    if sample_shape is not None:
        shape = [int(d) for d in sample_shape]
    else:
        shape = list(node.shape[1:])
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise RewriteError(f"input {node.name!r} has dynamic dimensions {node.shape}; cannot validate the rewrite")
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        batch = rng.random((samples, *shape)).astype(dtype)  # 0..1: in range for raw-pixel and normalised models
    else:
        batch = rng.integers(0, 2, (samples, *shape)).astype(dtype)
    return node.name, batch


def _new_session(model: Union[bytes, str], options, providers):
    ort = _ort()
    return ort.InferenceSession(model, sess_options=options, providers=list(providers))


def _default_options():
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def _compare(reference, candidate, input_name: str, batch: np.ndarray, output_names: Optional[Sequence[str]],
             rtol: float, atol: float) -> Optional[str]:
    """None when the candidate run on the whole batch matches the reference run sample by sample, else why not."""
    names = list(output_names) if output_names else [o.name for o in reference.get_outputs()]
    singles = [reference.run(names, {input_name: batch[i : i + 1]}) for i in range(len(batch))]
    quiet = _ort().RunOptions()
    quiet.log_severity_level = 4  # a failure here is an expected outcome: no error log on stderr
    try:
        batched = candidate.run(names, {input_name: batch}, quiet)
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"the rewritten model fails on a batch of {len(batch)}: {_first_line(exc)}"
    for k, name in enumerate(names):
        got = np.asarray(batched[k])
        want = [np.asarray(s[k]) for s in singles]
        if got.ndim == 0 or got.shape[0] != len(batch) or any(w.shape[:1] != (1,) for w in want):
            return (f"output {name!r} has shape {list(got.shape)} for a batch of {len(batch)} "
                    f"(and {list(want[0].shape)} for one input): it has no batch axis")
        want_all = np.concatenate(want)
        if got.shape != want_all.shape:
            return f"output {name!r} has shape {list(got.shape)} batched but {list(want_all.shape)} one by one"
        if not np.allclose(got, want_all, rtol=rtol, atol=atol, equal_nan=True):
            diff = np.nanmax(np.abs(got.astype(np.float64) - want_all.astype(np.float64)))
            return (f"output {name!r} differs between a batch of {len(batch)} and one input at a time "
                    f"(max abs difference {diff:.3g}): the graph mixes samples or pins the batch")
    return None


def batched_model(
    path,
    *,
    session_options=None,
    providers: Optional[Sequence[str]] = None,
    reference=None,
    input_name: Optional[str] = None,
    output_names: Optional[Sequence[str]] = None,
    samples: int = DEFAULT_SAMPLES,
    sample_shape: Optional[Sequence[int]] = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    seed: int = 0,
    model_bytes: Optional[bytes] = None,
    dim_param: str = BATCH_DIM_PARAM,
) -> BatchedModel:
    """Rewrite a fixed-batch-1 model for any batch size and check the result; never raises for a model
    that merely cannot be batched.

    The check runs on onnxruntime's CPU provider, whatever ``providers`` says, so that it tests the graph
    and not the numerics of a GPU (whose kernels may legitimately differ with the batch size): ``samples``
    random inputs (uniform in [0, 1), ``seed``) go through the rewritten model as one batch and through the
    original one at a time, and every compared output (``output_names``, default all) must match within
    ``rtol``/``atol``. Cost: loading the rewritten model, plus ``samples`` + 1 forward passes.

    ``reference``: an existing CPU-only session of the original model to compare against (saves a load).
    ``session_options``: the onnxruntime.SessionOptions to create sessions with (default: full graph
    optimisation, quiet logs). ``providers``: those of the returned session (default CPU). When they are
    CPU only, the validated session itself is returned.
    ``sample_shape``: one sample's shape, for inputs with dynamic dimensions besides the batch.
    """
    path = Path(path)
    if samples < 2:
        raise ValueError("validation needs at least 2 samples")
    providers = list(providers or ["CPUExecutionProvider"])
    options = session_options if session_options is not None else _default_options()
    try:
        data = model_bytes if model_bytes is not None else path.read_bytes()
    except OSError as exc:
        return BatchedModel(None, None, f"cannot read {path}: {exc.strerror or exc}")
    try:
        result = rewrite_batch_dim(data, dim_param)
    except (RewriteError, ProtobufError) as exc:
        return BatchedModel(None, None, f"not rewritten: {exc}")
    cpu = ["CPUExecutionProvider"]
    try:
        if reference is None or list(reference.get_providers()) != cpu:
            reference = _new_session(data if model_bytes is not None else str(path), options, cpu)
    except Exception as exc:
        return BatchedModel(None, None, f"cannot load the original model: {_first_line(exc)}")
    try:
        candidate = _new_session(result.model_bytes, options, cpu)
    except Exception as exc:
        return BatchedModel(None, None, f"the rewritten model does not load: {_first_line(exc)}")
    try:
        name, batch = _sample_inputs(reference, input_name, samples, seed, sample_shape)
        problem = _compare(reference, candidate, name, batch, output_names, rtol, atol)
    except RewriteError as exc:
        problem = str(exc)
    except Exception as exc:
        problem = f"validation failed: {_first_line(exc)}"
    if problem is not None:
        return BatchedModel(None, None, problem)
    if providers != cpu:
        try:
            candidate = _new_session(result.model_bytes, options, providers)
        except Exception as exc:
            return BatchedModel(None, None, f"the rewritten model does not load on {providers[0]}: {_first_line(exc)}")
    reason = f"{result.summary()}; validated: a batch of {samples} matches one-at-a-time runs"
    return BatchedModel(result.model_bytes, candidate, reason)


def batched_session(path, **kwargs) -> Tuple[Optional[object], str]:
    """(a validated onnxruntime session of the batch-dynamic model, or None; a one-line reason).

    Same arguments as :func:`batched_model`.
    """
    result = batched_model(path, **kwargs)
    return result.session, result.reason


def batched_session_bytes(path, **kwargs) -> Tuple[Optional[bytes], str]:
    """(the validated batch-dynamic model's bytes, or None; a one-line reason).

    Same arguments as :func:`batched_model`; the session it builds along the way is discarded.
    """
    result = batched_model(path, **kwargs)
    return result.model_bytes, result.reason
