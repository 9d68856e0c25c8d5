"""The onnxruntime session: providers, input/output introspection, batch handling, and the
preprocessing and labels a model may carry in its ONNX metadata.

Knows nothing of image files or plots: it turns batches of model inputs into class scores.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..core.casting import cast_checked
from ..errors import OccludeError, first_line

# file_sha256, final_operator: re-exported for callers that know them from here
from ..inference.facts import file_sha256, final_operator, model_facts  # noqa: F401
from .classnames import label_suggestions, read_labels, resolve_target  # noqa: F401 -- their home before
from .cuda import CUDA, cuda_load_error, prepare_cuda
from .modelfiles import find_model_file, read_model_files
from .outputs import TASKS, check_declared_output, check_scores_type, declared_classes, output_task

PREPROCESS_KEY = "occlude.preprocess"
LABELS_KEY = "occlude.labels"

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}
_CUDA_HELP = (
    "CUDA was requested but this onnxruntime has no CUDAExecutionProvider; install the GPU build with "
    "`pip uninstall -y onnxruntime && pip install 'occlude[cuda]'` (it brings CUDA 13 and cuDNN 9; an NVIDIA "
    "driver is all the machine needs), or use device cpu"
)


class Device(str, Enum):
    """Where onnxruntime runs the model."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ScoreKind(str, Enum):
    """What quantity of the model's output is explained (see :func:`resolve_head` for ``auto``)."""

    auto = "auto"
    softmax = "softmax"
    sigmoid = "sigmoid"
    logit = "logit"
    raw = "raw"
    prob = "prob"  # alias of auto (the name of the default before score kinds matched the head)


DEVICES = tuple(d.value for d in Device)
SCORE_KINDS = tuple(k.value for k in ScoreKind)


def _ort():
    try:
        import onnxruntime  # imported lazily: `occlude --help` should not pay for it
    except ImportError:
        raise OccludeError(
            "onnxruntime is not installed: pip install 'occlude[cpu]' (or 'occlude[cuda]' for NVIDIA GPUs, never both)"
        ) from None
    return onnxruntime


def usable_cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a cgroup v2/v1 CPU quota (containers
    often report the host's core count to os.cpu_count())."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = float(text[0]) / float(text[1])
    except (OSError, ValueError, IndexError):
        try:
            q = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = float(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            quota = q / p if q > 0 and p > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        cores = min(cores, max(1, int(math.ceil(quota))))
    return max(1, cores)


def resolve_threads(threads: Optional[int], *, force: bool = False) -> int:
    """onnxruntime intra-op threads: the usable cores by default; more than that is capped (oversubscribed
    threads make inference many times slower) unless ``force``."""
    cores = usable_cores()
    if threads is None:
        return cores
    if int(threads) != threads or threads < 1:
        raise OccludeError(f"threads must be a whole number of at least 1, got {threads}", params=("threads",))
    if threads > 1024:
        raise OccludeError(f"threads must be at most 1024, got {threads}", params=("threads",))
    return int(threads) if force else min(int(threads), cores)


def choose_providers(device: str) -> List[str]:
    """onnxruntime execution providers for --device auto|cpu|cuda."""
    if device not in DEVICES:
        raise OccludeError(f"unknown device {device!r}: device takes one of {', '.join(DEVICES)}", params=("device",))
    available = _ort().get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise OccludeError(_CUDA_HELP)
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    out = np.empty_like(logits, dtype=np.float64)
    positive = logits >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-logits[positive]))
    e = np.exp(logits[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def looks_like_probabilities(outputs: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True when every row is already a probability distribution (non-negative, sums to 1)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return bool(
        outputs.shape[1] > 1
        and np.all(outputs >= -tolerance)
        and np.all(outputs <= 1 + tolerance)
        and np.allclose(outputs.sum(axis=1), 1.0, atol=tolerance)
    )


def _in_unit_interval(outputs: np.ndarray, tolerance: float = 1e-6) -> bool:
    outputs = np.asarray(outputs, dtype=np.float64)
    return bool(np.all(np.isfinite(outputs)) and np.all(outputs >= -tolerance) and np.all(outputs <= 1 + tolerance))


# What each resolved head explains, in words for the JSON, the summary and --help.
HEAD_KINDS = {
    "softmax": "softmax probability over the classes, computed from the model's logits",
    "probabilities": "the model's own probabilities (its outputs already sum to 1), as they are",
    "sigmoid": "sigmoid probability of each output, computed from the model's logits",
    "independent": "the model's own independent (multi-label / sigmoid) probabilities, as they are",
    "logit": "the raw logit",
    "raw": "the raw output, as it is",
    "detection": "max over detections of IoU(target box, box) x the class's probability (task detect)",
    "similarity": "cosine similarity of the embedding with the reference embedding (task embed)",
}


# Each resolved head's score in a sentence ("the target's ..."), for warnings.
SCORE_NAMES = {
    "softmax": "softmax probability",
    "probabilities": "probability (the model's own output)",
    "sigmoid": "sigmoid probability",
    "independent": "probability (the model's own sigmoid output)",
    "logit": "logit",
    "raw": "raw output",
    "detection": "detection score",
    "similarity": "cosine similarity",
}


def saturation_remedy(kind: str) -> str:
    """What gives a readable map when the probability a head of ``kind`` explains is saturated: its logits
    where occlude computes the probability from them, else a model that outputs logits (a graph that ends in
    Softmax or Sigmoid has none to explain, and score logit is refused for it). The text names the parameter
    ``score`` (:data:`SATURATION_PARAMS`), which a front end shows in its own words (the CLI: ``--score``)."""
    if kind in ("softmax", "sigmoid"):
        return (
            f"explain the logits instead (score logit: the logits occlude computes the {kind} from) for a readable map"
        )
    if kind in ("probabilities", "independent"):
        last = "Softmax" if kind == "probabilities" else "Sigmoid"
        return (
            f"this model outputs probabilities, so it has no logits to explain (score logit is refused for it): "
            f"export it without its final {last} for a readable map, or explain a class that is not saturated"
        )
    return "try a larger patch or another baseline"


# The parameters :func:`saturation_remedy`'s text names, per head kind.
SATURATION_PARAMS = {kind: ("score",) for kind in ("softmax", "sigmoid", "probabilities", "independent")}


@dataclass(frozen=True)
class Head:
    """How raw outputs become the scores to explain. ``kind`` is one of :data:`HEAD_KINDS`; ``rule`` says
    why it was chosen (recorded in the JSON); ``requested`` is what the caller asked for."""

    kind: str
    requested: str
    rule: str

    @property
    def is_probability(self) -> bool:
        return self.kind in ("softmax", "probabilities", "sigmoid", "independent")

    @property
    def per_class(self) -> bool:
        """True when each class's score is independent of the others (no softmax coupling)."""
        return self.kind != "softmax"

    def transform(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.kind == "softmax":
            return softmax(raw)
        if self.kind == "sigmoid":
            return sigmoid(raw)
        return raw

    def describe(self) -> dict:
        return {"kind": self.kind, "requested": self.requested, "rule": self.rule}


def resolve_head(requested, raw: np.ndarray, *, final_op: Optional[str] = None, declared: Optional[str] = None) -> Head:
    """Choose what to explain from the requested score kind, the raw outputs of the unoccluded input
    ``raw`` ((1, classes)), the graph's final operator (``final_op``: Softmax, Sigmoid, ... or None) and
    what the model declares in its metadata (``declared``: logits, probabilities, sigmoid).

    ``auto`` (the default): a model that ends in Softmax, or whose outputs already sum to 1, is explained
    as its probabilities as they are; one that ends in Sigmoid as its independent probabilities as they are;
    a single-output head (binary classifier) as the sigmoid of its logit; outputs in [0, 1] that do not sum
    to 1 as independent (multi-label) probabilities unless the graph ends in a linear layer
    (:data:`LINEAR_OPS`: logits, whatever values one image gives); anything else as the softmax of its logits.
    ``softmax``/``sigmoid`` apply that function (refused where the graph already ends in it);
    ``logit`` is the raw output (refused for graphs that end in Softmax or Sigmoid); ``raw`` never refuses.
    """
    kind = ScoreKind(requested.value if isinstance(requested, Enum) else str(requested))
    raw = np.asarray(raw, dtype=np.float64)
    classes = raw.shape[1]
    squashed = final_op in ("Softmax", "Sigmoid")
    declared = check_declared_output(declared)
    if declared in ("probabilities", "softmax"):
        final_op = final_op or "Softmax"
        squashed = True
    elif declared in ("sigmoid", "multilabel", "multi-label", "independent"):
        final_op = final_op or "Sigmoid"
        squashed = True
    name = kind.value
    if kind is ScoreKind.raw:
        return Head("raw", name, "requested: the raw output")
    if kind is ScoreKind.logit:
        if squashed:
            what = "probabilities" if final_op == "Softmax" else "sigmoid probabilities"
            raise OccludeError(
                f"this model outputs {what} (its output ends in {final_op}), so logits are not "
                "available: use score auto (or raw for the output as it is)",
                params=("score",),
            )
        if declared is None and looks_like_probabilities(raw):
            raise OccludeError(
                "this model outputs probabilities (rows sum to 1), so logits are not available: use score auto",
                params=("score",),
            )
        return Head("logit", name, "requested: the raw logit")
    if kind is ScoreKind.softmax:
        if squashed:
            raise OccludeError(
                f"this model's output already ends in {final_op}: use score auto or raw, "
                "a second softmax would explain the wrong quantity",
                params=("score",),
            )
        if classes == 1:
            raise OccludeError(
                "a softmax over a single output is always 1: use score auto or sigmoid", params=("score",)
            )
        return Head("softmax", name, "requested: softmax of the logits")
    if kind is ScoreKind.sigmoid:
        if squashed:
            raise OccludeError(
                f"this model's output already ends in {final_op}: use score auto or raw, "
                "a second sigmoid would explain the wrong quantity",
                params=("score",),
            )
        return Head("sigmoid", name, "requested: sigmoid of each logit")
    # auto
    if final_op == "Softmax":
        return Head("probabilities", name, "auto: the graph ends in Softmax (or declares probabilities)")
    if final_op == "Sigmoid":
        return Head("independent", name, "auto: the graph ends in Sigmoid (or declares sigmoid outputs)")
    if classes == 1:
        return Head("sigmoid", name, "auto: a single-output (binary) head is explained as the sigmoid of its logit")
    if declared in ("logits", "logit"):
        return Head("softmax", name, "auto: the model declares logits")
    if looks_like_probabilities(raw):
        return Head("probabilities", name, "auto: the outputs already sum to 1")
    if final_op == "LogSoftmax":
        return Head("softmax", name, "auto: the graph ends in LogSoftmax (their softmax is the probabilities)")
    if final_op in LINEAR_OPS:  # its values say nothing: logits of one image may all fall in [0, 1]
        return Head("softmax", name, f"auto: logits (the graph ends in {final_op}), explained as softmax probabilities")
    if _in_unit_interval(raw):
        return Head("independent", name, "auto: outputs in [0, 1] that do not sum to 1 (multi-label)")
    return Head("softmax", name, "auto: logits (outputs outside [0, 1]), explained as softmax probabilities")


def auto_head(final_op: Optional[str], declared: Optional[str], classes: Optional[int]) -> dict:
    """What score auto explains as far as the graph and the metadata tell, before any output is seen:
    ``{"kind", "rule"}`` as :func:`resolve_head` gives them, or kind None where the first image's outputs decide."""
    probe = np.full((1, classes or 2), 2.0)  # outside [0, 1] and not summing to 1: only the graph decides
    head = resolve_head("auto", probe, final_op=final_op, declared=declared)
    if head.rule.startswith("auto: logits (outputs outside"):
        rule = (
            "decided from the first image's outputs: as they are where they sum to 1 (probabilities) or lie in "
            "[0, 1] (independent), else their softmax"
        )
        return {"kind": None, "rule": rule}
    return {"kind": head.kind, "rule": head.rule}


# final operators that output logits (a linear layer): never read as multi-label probabilities from their values
LINEAR_OPS = {"Gemm", "MatMul", "Conv", "ConvTranspose", "Einsum", "BatchNormalization"}


def score_transform(kind: str, outputs_are_probabilities: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Raw outputs -> scores (float64) for the two historical kinds: softmax for 'prob' unless the outputs
    are already probabilities; 'logit' as it is."""
    if kind == "prob" and not outputs_are_probabilities:
        return lambda raw: softmax(np.asarray(raw, dtype=np.float64))
    return lambda raw: np.asarray(raw, dtype=np.float64)


class OnnxClassifier:
    """An ONNX image classifier loaded once and scored many times.

    ``run(batch)`` takes a batch in the model's layout and returns raw outputs ``(batch, classes)``;
    models exported with a fixed batch size get their batches split and padded to that size.
    """

    def __init__(
        self,
        path,
        *,
        device: str = "auto",
        input_name: Optional[str] = None,
        output_name: Optional[str] = None,
        threads: Optional[int] = None,
        io_binding: Optional[bool] = None,
        batch_rewrite: bool = True,
        task: str = "classify",
    ) -> None:
        self.path = find_model_file(path)  # a folder: its model.onnx or only .onnx file
        if task not in TASKS:
            raise OccludeError(f"task must be one of {', '.join(TASKS)}, got {task!r}", params=("task",))
        if not self.path.exists():
            raise OccludeError(f"model not found: {self.path}")
        if self.path.is_dir():
            raise OccludeError(f"expected an .onnx model file, got a folder: {self.path}")
        # the files beside it (Hugging Face, timm, occlude.json): read before the session, so a bad one is
        # refused before onnxruntime loads anything
        self.files = read_model_files(self.path)
        # before anything reads weights: no location outside the model's folder (and the graph facts, read
        # once per model file: see inference.facts)
        facts = model_facts(self.path)
        options = self._open_session(device, threads)
        # On CUDA, batches go through a preallocated device buffer (one host-to-device copy, no allocation
        # per batch) and outputs are bound to host memory. The same path runs on the CPU when asked.
        self.io_binding = (self.provider == "CUDAExecutionProvider") if io_binding is None else bool(io_binding)
        self._device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self._bound: dict = {}
        self.sha256 = facts.sha256
        self.input = self._image_input(input_name)
        shape = list(self.input.shape)
        outputs = self.session.get_outputs()
        if not outputs:
            raise OccludeError(f"model {self.path.name!r} has no outputs: there are no scores to explain")
        detector = task == "detect" and output_name is None and len(outputs) > 1  # separate boxes, scores, labels
        self.output = outputs[0] if detector else self._pick("output", outputs, output_name, "output_name")
        if not str(self.output.type).startswith("tensor("):
            raise OccludeError(
                f"output {self.output.name!r} is a {self.output.type}, not a tensor of class scores: occlude needs "
                "a classifier output (batch, classes); choose another output with output_name"
            )
        self.dtype = ORT_DTYPES[self.input.type]
        self.input_shape = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.fixed_batch: Optional[int] = self.input_shape[0]
        self.batching = "dynamic batch" if self.fixed_batch is None else f"fixed batch {self.fixed_batch}"
        self.batch_note: Optional[str] = None  # a line for the user when batching is not what they would expect
        if self.fixed_batch == 1 and batch_rewrite and task != "detect":  # detections: one image per pass
            self._try_batch_rewrite(options)
        if facts.batch_coupling and not self.fixed_batch:  # e.g. dynamic quantisation: batching changes scores
            self.fixed_batch, self.batching = 1, f"run one image at a time: {facts.batch_coupling}"
            self.batch_note = self.batching
        out_shape = list(self.output.shape)
        self.task = output_task(task, out_shape, self.output.name)
        check_scores_type(self.task, str(self.output.type), self.output.name)
        self.num_classes: Optional[int] = declared_classes(self.task, out_shape)
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(meta)
        self.metadata_preprocessing = _json_metadata(meta, PREPROCESS_KEY, dict, self.path)
        check_declared_output((self.metadata_preprocessing or {}).get("output"))
        labels = _json_metadata(meta, LABELS_KEY, list, self.path)
        if labels is not None and not all(isinstance(v, str) for v in labels):
            kind = next(_JSON_KINDS.get(type(v), "value") for v in labels if not isinstance(v, str))
            raise OccludeError(f"model metadata {LABELS_KEY!r} in {self.path} must list strings only, not a {kind}")
        self.labels: Optional[List[str]] = list(labels) if labels is not None else None
        # where the class names come from: the metadata, else the files beside the model
        self.labels_source: Optional[str] = f"model metadata ({LABELS_KEY})" if labels is not None else None
        if self.labels is None and self.files.labels is not None:
            self.labels, self.labels_source = list(self.files.labels), self.files.labels_source
        self.final_op = facts.final_ops.get(self.output.name)
        # (scale, zero_point) when the graph dequantizes its integer image input right away; the metadata's
        # occlude.preprocess "quantization" overrides it (see resolve_preprocessing)
        self.input_quantization: Optional[Tuple[float, float]] = facts.input_quantization.get(self.input.name)
        # why incremental inference could not reproduce this output's full passes bit for bit (float16,
        # quantised or rounding arithmetic), or None: read from the graph, before any image
        self.inexact_arithmetic: Optional[str] = facts.inexact.get(self.output.name)

    def _open_session(self, device: str, threads: Optional[int]):
        """The onnxruntime session on the chosen providers (CUDA loaded first, or why not); its options."""
        ort = _ort()
        self.providers = choose_providers(device)
        # lines for the user about the device (what loading CUDA printed, or why it did not load: device auto);
        # onnxruntime's own log lines about a provider that fails to load are replaced by one line of ours
        self.device_notes: List[str] = list(prepare_cuda(ort)) if CUDA in self.providers else []
        if CUDA in self.providers:
            ort.set_default_logger_severity(4)
        self.available_providers: List[str] = list(ort.get_available_providers())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.threads = int(threads) if threads else None
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise OccludeError(f"cannot load {self.path} as an ONNX model: {first_line(exc)}") from None
        self.provider = self.session.get_providers()[0]
        if CUDA in self.providers and self.provider != CUDA:
            self._cuda_did_not_load(device, ort)
        return options

    def _cuda_did_not_load(self, device: str, ort) -> None:
        """onnxruntime fell back to the CPU in silence: an error for device cuda, a note for auto (the reason
        replaces what onnxruntime.preload_dlls printed about the same missing libraries)."""
        self.device_notes = []
        reason = cuda_load_error(ort) or "onnxruntime could not start it (see its log with ORT_LOGGING_LEVEL=0)"
        if device == "cuda":
            remedy = (
                "this machine has no NVIDIA driver (libcuda.so.1 is the driver's); install one"
                if "libcuda.so" in reason
                else "`pip install 'occlude[cuda]'` brings the CUDA 13 and cuDNN 9 libraries it needs"
            )
            raise OccludeError(
                f"the CUDA provider did not load: {reason}; {remedy}, or use device cpu", params=("device",)
            )
        self.device_notes.append(f"CUDA is installed but did not load ({reason}): running on the CPU")

    def run_outputs(self, batch: np.ndarray, names: Sequence[str]) -> List[np.ndarray]:
        """The raw outputs ``names`` for a batch in the model's layout and dtype, as the graph gives them (no
        classifier shape is required: the tasks read them); a fixed batch is split and padded as in :meth:`run`."""
        batch = cast_checked(batch, self.dtype, "the batch")
        fixed = self.fixed_batch or len(batch)
        parts: List[List[np.ndarray]] = []
        for start in range(0, len(batch), fixed):
            part = batch[start : start + fixed]
            n = len(part)
            if n < fixed:
                part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
            try:
                got = self.session.run(list(names), {self.input.name: part})
            except Exception as exc:
                raise OccludeError(
                    f"onnxruntime failed on input of shape {list(part.shape)}: {first_line(exc)}"
                ) from None
            parts.append([np.asarray(o)[:n] if np.ndim(o) and np.shape(o)[0] == fixed else np.asarray(o) for o in got])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(names))]

    def head(self, requested, raw: np.ndarray) -> Head:
        """What to explain for this model (see :func:`resolve_head`), from one unoccluded forward pass."""
        declared = (self.metadata_preprocessing or {}).get("output")
        return resolve_head(requested, raw, final_op=self.final_op, declared=declared)

    def _try_batch_rewrite(self, options) -> None:
        """A model pinned to batch 1 usually only declares it: rewrite the declared batch dimension to be
        dynamic and use the result if it provably computes the same thing; otherwise keep batch 1."""
        from ..inference.batching import batched_model

        result = batched_model(
            self.path,
            session_options=options,
            providers=self.providers,
            reference=self.session if self.providers == ["CPUExecutionProvider"] else None,
            input_name=self.input.name,
            output_names=[self.output.name],
        )
        if result.ok:
            self.session = result.session
            self.input = next(i for i in self.session.get_inputs() if i.name == self.input.name)
            self.output = next(o for o in self.session.get_outputs() if o.name == self.output.name)
            self.fixed_batch = None
            self.input_shape[0] = None
            self.batching = "batch dimension rewritten from 1 to dynamic (validated)"
        else:
            self.batching = f"fixed batch 1, run one image at a time: {result.reason}"
            self.batch_note = self.batching

    def _image_input(self, input_name: Optional[str]):
        """The one input occlude feeds, or an error saying why this model cannot be fed."""
        inputs = self.session.get_inputs()
        if len(inputs) > 1 and input_name is None:  # no choice of input helps: the others would go unfed
            self._refuse_other_inputs(inputs[0].name)
        chosen = self._pick("input", inputs, input_name, "input_name")
        shape = list(chosen.shape)
        if len(shape) not in (4, 5):  # the first thing to say about a non-image model
            raise OccludeError(
                f"input {chosen.name!r} has shape {shape}: occlude explains image classifiers and needs a "
                "4-D image input (N,C,H,W or N,H,W,C) or a 5-D volume input (N,C,D,H,W or N,D,H,W,C)"
            )
        if chosen.type not in ORT_DTYPES:
            supported = ", ".join(ORT_DTYPES)
            raise OccludeError(f"input {chosen.name!r} has type {chosen.type}: occlude supports {supported}")
        if len(inputs) > 1:
            self._refuse_other_inputs(chosen.name)
        if 0 in shape:
            raise OccludeError(f"input {chosen.name!r} has shape {shape}: a dimension of 0 holds no image")
        return chosen

    def _refuse_other_inputs(self, image: str) -> None:
        others = ", ".join(repr(i.name) for i in self.session.get_inputs() if i.name != image)
        raise OccludeError(
            f"model needs inputs besides the image ({others}); occlude feeds one image input and nothing else "
            "(export the model with the others fixed as constants)"
        )

    @staticmethod
    def _pick(kind: str, nodes, name: Optional[str], flag: str):
        names = [n.name for n in nodes]
        if name is not None:
            for node in nodes:
                if node.name == name:
                    return node
            raise OccludeError(f"model has no {kind} named {name!r}; its {kind}s: {', '.join(names)}")
        if len(nodes) != 1:
            raise OccludeError(
                f"model has {len(nodes)} {kind}s ({', '.join(names)}): choose one with {flag} NAME", params=(flag,)
            )
        return nodes[0]

    def guess_layout(self) -> Optional[str]:
        """NCHW or NHWC from the input shape (channels of 1 or 3), or None when it cannot tell."""
        _, a, _, c = self.input_shape
        if a in (1, 3) and c not in (1, 3):
            return "NCHW"
        if c in (1, 3) and a not in (1, 3):
            return "NHWC"
        if a in (1, 3) and c in (1, 3):
            return "NCHW"
        return None

    def spatial_size(self, layout: str) -> Tuple[Optional[int], Optional[int]]:
        dims = self.input_shape[2:4] if layout == "NCHW" else self.input_shape[1:3]
        return dims[0], dims[1]

    def channels(self, layout: str) -> Optional[int]:
        return self.input_shape[1] if layout == "NCHW" else self.input_shape[3]

    def default_batch_size(self, sample_bytes: int) -> int:
        """Fixed-batch models use their batch; otherwise a power of two keeping a batch near 16 MB."""
        if self.fixed_batch:
            return self.fixed_batch
        fit = max(1, (16 << 20) // max(1, sample_bytes))
        return int(max(1, min(64, 2 ** int(math.log2(fit)))))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs (batch, classes) for a batch in the model's layout and dtype."""
        batch = cast_checked(batch, self.dtype, "the batch")
        fixed = self.fixed_batch
        if not fixed or len(batch) == fixed:
            return self._run_exact(batch)
        parts = []
        for start in range(0, len(batch), fixed):
            part = batch[start : start + fixed]
            n = len(part)
            if n < fixed:  # pad the short final chunk with copies of its last row
                part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
            parts.append(self._run_exact(part)[:n])
        return np.concatenate(parts)

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        ort = _ort()
        key = batch.shape
        if key not in self._bound:
            device_input = ort.OrtValue.ortvalue_from_numpy(np.empty_like(batch), self._device, 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input.name, device_input)
            binding.bind_output(self.output.name, "cpu")
            self._bound = {key: (device_input, binding)}  # keep one shape: the engine's batches share it
        device_input, binding = self._bound[key]
        device_input.update_inplace(batch)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _run_exact(self, batch: np.ndarray) -> np.ndarray:
        try:
            if self.io_binding:
                out = self._run_bound(batch)
            else:
                (out,) = self.session.run([self.output.name], {self.input.name: batch})
        except Exception as exc:
            raise OccludeError(f"onnxruntime failed on input of shape {list(batch.shape)}: {first_line(exc)}") from None
        return self.as_scores(np.asarray(out), len(batch))

    def as_scores(self, out: np.ndarray, n: int) -> np.ndarray:
        """The output of a batch of ``n`` as (n, classes), or an error saying why it is not a classifier's."""
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        if out.ndim != 2 or out.shape[0] != n:
            raise OccludeError(
                f"output {self.output.name!r} has shape {list(out.shape)}: occlude needs a classifier output "
                "(batch, classes)"
            )
        return out

    def scorer(self, kind, outputs_are_probabilities: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """The engine's score function. ``kind`` is a :class:`Head` (what explain() resolves), or one of the
        historical kinds 'prob' (softmax unless the outputs are already probabilities) and 'logit'."""
        if isinstance(kind, Head):
            head = kind
            return lambda batch: head.transform(self.run(batch))
        if kind not in ("prob", "logit"):
            raise OccludeError(f"unknown score kind {kind!r}: use prob or logit, or pass a Head")
        if kind == "logit" and outputs_are_probabilities:
            raise OccludeError(
                "this model outputs probabilities, so logits are not available: use score auto", params=("score",)
            )
        transform = score_transform(kind, outputs_are_probabilities)
        return lambda batch: transform(self.run(batch))

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "input": self.input.name,
            "input_shape": [d if d is not None else "dynamic" for d in self.input_shape],
            "output": self.output.name,
            "provider": self.provider,
            "io_binding": self.io_binding,
            "batching": self.batching,
            "files": list(self.files.found),
            **({"task": self.task} if self.task != "classify" else {}),
        }


_JSON_KINDS = {type(None): "null", bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}


def _json_metadata(meta: dict, key: str, kind: type, path: Path):
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError):
        raise OccludeError(f"model metadata {key!r} in {path} is not valid JSON (or nests too deep)") from None
    if not isinstance(value, kind):
        raise OccludeError(f"model metadata {key!r} in {path} must be a JSON {kind.__name__}")
    return value
