"""A pinned batch made symbolic (:func:`batched_model`): many exporters pin the batch dimension to 1 although
nothing in the graph needs it. The declared batch dimension of the graph's inputs and outputs is made symbolic,
and the result is used only if onnxruntime proves on the spot that a batch of random inputs gives what the
original model gives one input at a time; otherwise the caller gets a one-line reason and keeps batch 1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from occlude_cli.errors import OccludeError

from .onnxfile import _NUMPY_TYPES, _error_line, _ort, _serialize, _session, load_model

BATCH_DIM_PARAM = "batch"
# Batch-rewrite validation: a few samples, compared with the tolerance of float32 kernels whose summation
# order may change with the batch size.
DEFAULT_SAMPLES = 3
RTOL, ATOL = 1e-4, 1e-5


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


# reductions: the batch is mixed when their axes include 0, or when they have none (every axis)
_REDUCTIONS = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2"}
_REDUCTIONS |= {"ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "MeanVarianceNormalization"}


def batch_coupling(model: onnx.ModelProto) -> str | None:
    """Why the scores of one image in a batch depend on the other images of the batch, as one line naming the
    node, or None. Found in the graph: a DynamicQuantizeLinear (``onnxruntime.quantization.quantize_dynamic``)
    computes one scale and zero point over its whole input tensor, i.e. over every image of the batch; a
    reduction over the batch axis (axis 0, or every axis) on values that depend on the image. Such a model must
    see one image per call to give each image the scores it gives alone."""
    constants = {t.name: t for t in model.graph.initializer}
    dependent = {i.name for i in model.graph.input if i.name not in constants}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
        if not any(i in dependent for i in node.input if i) or node.op_type in ("Shape", "Size"):
            continue
        dependent.update(o for o in node.output if o)
        why = None
        if node.op_type.startswith("DynamicQuantize"):
            why = "computes one quantisation scale over the whole batch"
        elif node.op_type in _REDUCTIONS and 0 in _reduced_axes(node, constants):
            why = "reduces over the batch axis"
        if why is not None:
            return f"{node.op_type} node {node.name or node.output[0]!r} {why}"
    return None


def _reduced_axes(node: onnx.NodeProto, constants: dict) -> set:
    """The axes a reduction reduces (non-negative ones; {0} when it reduces every axis), or an empty set."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MeanVarianceNormalization":
        return set(attrs.get("axes", [0, 2, 3]))
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            return set()  # computed axes: cannot tell
        axes = [int(a) for a in onnx.numpy_helper.to_array(constants[node.input[1]]).reshape(-1)]
    if not axes:
        return set() if attrs.get("noop_with_empty_axes", 0) else {0}
    return set(axes)
