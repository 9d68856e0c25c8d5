"""An ONNX file read safely, and what every graph job shares (the ``onnx`` library; onnxruntime for sessions).

**Safety** (:func:`check_external_data`): an ONNX file may keep its weights in other files ("external data")
named by a relative *location*. A crafted model can point that location anywhere (``../../etc/passwd``,
``/proc/self/environ``, a symlink out of the folder) and have the runtime read it. Every location is checked
against the model's folder before anything loads the weights (:func:`load_model`). The other jobs done to a
graph: :mod:`.batching` (a pinned batch made symbolic) and :mod:`.cuts` (inner tensors, cut points, splits).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import onnx

from occlude_cli.errors import OccludeError

ModelOrPath = Union[onnx.ModelProto, str, "os.PathLike[str]"]

# onnxruntime's input types as numpy types (random inputs for the checks of a rewrite or a split)
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
    if resolved != root and root not in resolved.parents and not _hub_blob(folder, target, resolved):
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


def _hub_blob(folder: Path, target: Path, resolved: Path) -> bool:
    """The Hugging Face hub cache's layout: every file of ``REPO/snapshots/REVISION/`` is a symlink to
    ``REPO/blobs/HASH``. True when ``target`` (beside the model) is such a symlink, straight into the blobs of
    the repository whose snapshot holds the model; nothing else outside the model's folder is followed."""
    if not target.is_symlink():
        return False
    real = folder.resolve()
    for ancestor in (real, *real.parents):
        if ancestor.parent.name == "snapshots":
            return resolved.parent == ancestor.parent.parent / "blobs"
    return False


def _external_locations(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, dict]]:
    return [
        (tensor, {entry.key: entry.value for entry in tensor.external_data})
        for tensor, _ in _model_tensors_stored(model)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]


def _load_linked_data(model: onnx.ModelProto, folder: Path) -> None:
    """Read every external tensor of ``model`` into the model (for a hub snapshot, whose data files are
    symlinks that the ``onnx`` loader refuses; :func:`check_external_data` has checked each location)."""
    for tensor, info in _external_locations(model):
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") else -1
        with open(folder / info["location"], "rb") as handle:
            handle.seek(offset)
            tensor.raw_data = handle.read(length)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def check_external_data(path) -> onnx.ModelProto:
    """Refuse a model whose external-data locations could read files outside its folder.

    Each tensor stored outside the ``.onnx`` file (initializers, sparse initializers, tensor attributes,
    tensors inside If/Loop/Scan subgraphs and local functions) names a relative location. It must not be
    absolute, must not contain ``..``, must resolve (symlinks followed) inside the model's folder (or, in a
    Hugging Face hub snapshot, be a symlink straight into its repository's ``blobs/``), and must exist as a
    regular file holding the declared byte range. Raises OccludeError with one line naming the
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
    stored = check_external_data(path)
    folder = path.parent if str(path.parent) else Path(".")
    if any((folder / info["location"]).is_symlink() for _, info in _external_locations(stored)):
        _load_linked_data(stored, folder)  # a hub snapshot: its data files are symlinks into the blobs
        return stored
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise OccludeError(f"cannot load {path} as an ONNX model: {_error_line(exc)}") from None
