"""What occlude reads from a model's graph before onnxruntime loads it, read once per model file.

:func:`model_facts` checks the external-data locations (:func:`occlude_cli.inference.onnxfile.check_external_data`)
and reads the declared size of the largest input (for the memory check), the operator behind each output
(to know whether the scores are already probabilities) and, per output, whether incremental inference could
reproduce its full passes bit for bit (:func:`occlude_cli.inference.exactness.inexact_arithmetic`: the
``incremental auto`` decision, made before any image). For a model without external data these facts depend
on the file's bytes alone, so they are kept in the on-disk cache (:mod:`occlude_cli.inference.cache`) under
the file's SHA-256: a later process reads them without importing the ``onnx`` package or parsing the graph.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import cache

__all__ = ["ModelFacts", "file_sha256", "input_quantization", "model_facts"]

# bytes per element of each ONNX tensor type (TensorProto.DataType)
_ONNX_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelFacts:
    sha256: str
    external_data: bool  # some tensor keeps its data in another file (checked, never cached)
    largest_input: Tuple[str, list, int]  # (name, declared shape, bytes with dynamic dims as 1)
    final_ops: Dict[str, Optional[str]] = field(default_factory=dict)  # output name -> operator, see below
    # input name -> (scale, zero_point) when the graph dequantizes that (integer) input right away
    input_quantization: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    # output name -> why a plan could not reproduce its full passes bit for bit (float16, quantised, ...) or None
    inexact: Dict[str, Optional[str]] = field(default_factory=dict)
    # why one image's scores depend on the other images of its batch (then it runs one image per call), or None
    batch_coupling: Optional[str] = None
    from_cache: bool = False


def model_facts(path, sha256: Optional[str] = None) -> ModelFacts:
    """The graph facts of the ONNX file at ``path`` (after its external-data check), from the cache when
    possible. Raises OccludeError when the file is not a model the ``onnx`` package can read, or when an
    external-data location is unsafe."""
    path = Path(path)
    stat = path.stat()
    identity = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if _memo and _memo[0][0] == identity:  # the CLI's memory check and the model loader: one read
        return _memo[0][1]
    facts = _read_facts(path, sha256 or file_sha256(path))
    _memo[:] = [(identity, facts)]
    return facts


_memo: List[tuple] = []  # [(file identity, ModelFacts)] of the last model asked for


def _read_facts(path: Path, sha256: str) -> ModelFacts:
    key = cache.entry_key("model", sha256=sha256, size=path.stat().st_size)
    hit = cache.load("model", key)
    if hit is not None:
        meta = hit[1]
        try:
            name, shape, size = meta["largest_input"]
            quantization = {str(k): (float(v[0]), float(v[1])) for k, v in meta["input_quantization"].items()}
            return ModelFacts(
                sha256,
                False,
                (str(name), list(shape), int(size)),
                dict(meta["final_ops"]),
                quantization,
                {str(k): None if v is None else str(v) for k, v in dict(meta["inexact"]).items()},
                None if meta["batch_coupling"] is None else str(meta["batch_coupling"]),
                from_cache=True,
            )
        except (KeyError, TypeError, ValueError):
            pass  # an entry from elsewhere: read the graph again
    import onnx

    from .batching import batch_coupling
    from .exactness import inexact_outputs
    from .onnxfile import check_external_data

    model = check_external_data(path)  # refuses unsafe locations; the external weights are never read
    external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors_with_data(model) if t.HasField("data_location")
    )
    facts = ModelFacts(
        sha256,
        external,
        _largest_input(model),
        {out.name: final_operator(model, out.name) for out in model.graph.output},
        input_quantization(model),
        inexact_outputs(model),
        batch_coupling(model),
    )
    if not external:
        cache.store(
            "model",
            key,
            {
                "largest_input": list(facts.largest_input),
                "final_ops": facts.final_ops,
                "input_quantization": {k: list(v) for k, v in facts.input_quantization.items()},
                "inexact": facts.inexact,
                "batch_coupling": facts.batch_coupling,
            },
        )
    return facts


def _tensors_with_data(model) -> List:
    from .onnxfile import _model_tensors_stored

    return [tensor for tensor, _ in _model_tensors_stored(model)]


def _largest_input(model) -> Tuple[str, list, int]:
    """The largest graph input (not an initializer) as (name, shape, bytes), dynamic dimensions counted as 1."""
    initialisers = {t.name for t in model.graph.initializer}
    best: Tuple[str, list, int] = ("", [], 0)
    for value in model.graph.input:
        if value.name in initialisers or not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        shape = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in tensor.shape.dim
        ]
        count = 1
        for d in shape:
            count *= d if isinstance(d, int) else 1
        size = count * _ONNX_ITEMSIZE.get(tensor.elem_type, 4)
        if size > best[2]:
            best = (value.name, shape, size)
    return best


def input_quantization(model) -> Dict[str, Tuple[float, float]]:
    """Graph inputs that the graph dequantizes right away: name -> (scale, zero_point) when every node reading
    the input is a DequantizeLinear with the same constant, per-tensor scale and zero point (the input of a
    fully quantized model: ``real = (q - zero_point) * scale``). Inputs read any other way are left out."""
    import numpy as np
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    initialisers = {t.name for t in model.graph.initializer}
    found: Dict[str, Tuple[float, float]] = {}
    for value in model.graph.input:
        if value.name in initialisers:
            continue
        readers = [node for node in model.graph.node if value.name in node.input]
        params: set = set()
        for node in readers:
            point_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if (
                node.op_type != "DequantizeLinear"
                or node.input[0] != value.name
                or node.input[1] not in constants
                or (point_name is not None and point_name not in constants)
            ):
                params = set()
                break
            scale = np.asarray(numpy_helper.to_array(constants[node.input[1]]), dtype=np.float64)
            point = (
                np.asarray(numpy_helper.to_array(constants[point_name]), dtype=np.float64)
                if point_name is not None
                else np.zeros(1)
            )
            if scale.size != 1 or point.size != 1:  # per-axis quantization of an image input: not read
                params = set()
                break
            params.add((float(scale.reshape(-1)[0]), float(point.reshape(-1)[0])))
        if len(params) == 1:
            found[value.name] = params.pop()
    return found


# ops that keep what their input means: shape-only ops, casts, and the quantisation pair QDQ models put after a
# head (QuantizeLinear then DequantizeLinear round the same values to a grid)
_LOOKED_THROUGH = {
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "QuantizeLinear",
    "DequantizeLinear",
}


def final_operator(model, output_name: str) -> Optional[str]:
    """The operator that produces ``output_name`` in ``model`` (a ModelProto, or a path read without its
    external weights), looking through shape-only ops (Identity, Reshape, Flatten, Squeeze, Unsqueeze,
    Cast) and quantisation (QuantizeLinear, DequantizeLinear): 'Softmax', 'Sigmoid', 'Gemm', ... or None when
    it cannot tell."""
    if not hasattr(model, "graph"):
        try:
            import onnx

            model = onnx.load(str(model), load_external_data=False)
        except Exception:  # not readable by the onnx package (onnxruntime already read it): no graph facts
            return None
    producers = {out: node for node in model.graph.node for out in node.output}
    name = output_name
    for _ in range(16):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type in _LOOKED_THROUGH and node.input:
            name = node.input[0]
            continue
        if node.op_type == "LogSoftmax":
            return "LogSoftmax"
        return node.op_type
    return None
