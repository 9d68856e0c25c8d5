"""The onnxruntime session: providers, input/output introspection, batch handling, and the
preprocessing and labels a model may carry in its ONNX metadata.

Knows nothing of image files or plots: it turns batches of model inputs into class scores.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import OccludeError, first_line

DEVICES = ("auto", "cpu", "cuda")
SCORE_KINDS = ("prob", "logit")
PREPROCESS_KEY = "occlude.preprocess"
LABELS_KEY = "occlude.labels"

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
_CUDA_HELP = (
    "CUDA was requested but this onnxruntime has no CUDAExecutionProvider; install the GPU build with "
    "`pip uninstall -y onnxruntime && pip install 'occlude[cuda]'` (needs CUDA 12 and cuDNN 9), or use --device cpu"
)


def _ort():
    import onnxruntime  # imported lazily: `occlude --help` should not pay for it

    return onnxruntime


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def choose_providers(device: str) -> List[str]:
    """onnxruntime execution providers for --device auto|cpu|cuda."""
    if device not in DEVICES:
        raise OccludeError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
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


def score_transform(kind: str, outputs_are_probabilities: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Raw outputs -> the scores to explain (float64): softmax for 'prob' unless already probabilities."""
    if kind == "prob" and not outputs_are_probabilities:
        return lambda raw: softmax(np.asarray(raw, dtype=np.float64))
    return lambda raw: np.asarray(raw, dtype=np.float64)


def looks_like_probabilities(outputs: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True when every row is already a probability distribution (non-negative, sums to 1)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return bool(
        outputs.shape[1] > 1
        and np.all(outputs >= -tolerance)
        and np.all(outputs <= 1 + tolerance)
        and np.allclose(outputs.sum(axis=1), 1.0, atol=tolerance)
    )


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
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise OccludeError(f"model not found: {self.path}")
        if self.path.is_dir():
            raise OccludeError(f"expected an .onnx model file, got a folder: {self.path}")
        ort = _ort()
        self.providers = choose_providers(device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise OccludeError(f"cannot load {self.path} as an ONNX model: {first_line(exc)}") from None
        self.provider = self.session.get_providers()[0]
        # On CUDA, batches go through a preallocated device buffer (one host-to-device copy, no allocation
        # per batch) and outputs are bound to host memory. The same path runs on the CPU when asked.
        self.io_binding = (self.provider == "CUDAExecutionProvider") if io_binding is None else bool(io_binding)
        self._device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self._bound: dict = {}
        self.sha256 = file_sha256(self.path)
        self.input = self._pick("input", self.session.get_inputs(), input_name, "--input")
        others = [i.name for i in self.session.get_inputs() if i.name != self.input.name]
        if others:
            raise OccludeError(
                f"model needs inputs besides the image ({', '.join(others)}); occlude feeds only one image input"
            )
        self.output = self._pick("output", self.session.get_outputs(), output_name, "--output")
        shape = list(self.input.shape)
        if len(shape) != 4:
            raise OccludeError(
                f"input {self.input.name!r} has shape {shape}: occlude needs a 4-D image input (N,C,H,W or N,H,W,C)"
            )
        if self.input.type not in _ORT_DTYPES:
            raise OccludeError(f"input {self.input.name!r} has type {self.input.type}: occlude supports float inputs")
        self.dtype = _ORT_DTYPES[self.input.type]
        self.input_shape = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.fixed_batch: Optional[int] = self.input_shape[0]
        self.batching = "dynamic batch" if self.fixed_batch is None else f"fixed batch {self.fixed_batch}"
        if self.fixed_batch == 1 and batch_rewrite:
            self._try_batch_rewrite(options)
        out_shape = list(self.output.shape)
        self.num_classes: Optional[int] = (
            out_shape[1] if len(out_shape) >= 2 and isinstance(out_shape[1], int) and out_shape[1] > 0 else None
        )
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(meta)
        self.metadata_preprocessing = _json_metadata(meta, PREPROCESS_KEY, dict, self.path)
        labels = _json_metadata(meta, LABELS_KEY, list, self.path)
        self.labels: Optional[List[str]] = [str(v) for v in labels] if labels is not None else None

    def _try_batch_rewrite(self, options) -> None:
        """A model pinned to batch 1 usually only declares it: rewrite the declared batch dimension to be
        dynamic and use the result if it provably computes the same thing; otherwise keep batch 1."""
        from .onnx_graph import batched_model

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

    @staticmethod
    def _pick(kind: str, nodes, name: Optional[str], flag: str):
        names = [n.name for n in nodes]
        if name is not None:
            for node in nodes:
                if node.name == name:
                    return node
            raise OccludeError(f"model has no {kind} named {name!r}; its {kind}s: {', '.join(names)}")
        if len(nodes) != 1:
            raise OccludeError(f"model has {len(nodes)} {kind}s ({', '.join(names)}): choose one with {flag} NAME")
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
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
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
        out = np.asarray(out)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise OccludeError(
                f"output {self.output.name!r} has shape {list(out.shape)}: occlude needs a classifier output (batch, classes)"
            )
        return out

    def scorer(self, kind: str, outputs_are_probabilities: bool) -> Callable[[np.ndarray], np.ndarray]:
        """The engine's score function: probabilities (softmax unless the model already gives them) or logits."""
        if kind not in SCORE_KINDS:
            raise OccludeError(f"unknown score kind {kind!r}: use prob or logit")
        if kind == "logit" and outputs_are_probabilities:
            raise OccludeError("this model outputs probabilities, so logits are not available: use --score prob")
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
        }


def _json_metadata(meta: dict, key: str, kind: type, path: Path):
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError:
        raise OccludeError(f"model metadata {key!r} in {path} is not valid JSON") from None
    if not isinstance(value, kind):
        raise OccludeError(f"model metadata {key!r} in {path} must be a JSON {kind.__name__}")
    return value


def read_labels(path) -> List[str]:
    """Class names from a text file, one per line (blank lines kept as empty names would shift indices, so
    only trailing blank lines are dropped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OccludeError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OccludeError(f"cannot read labels file {path}: {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise OccludeError(f"labels file is empty: {path}")
    return lines


def resolve_target(target, labels: Optional[Sequence[str]], num_classes: int) -> int:
    """A --target given as an index or a label name -> class index."""
    text = str(target).strip()
    try:
        index = int(text)
    except ValueError:
        if not labels:
            raise OccludeError(f"target {text!r} is a name but the model has no labels (use --labels FILE or an index)") from None
        lowered = [label.lower() for label in labels]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        close = [labels[i] for i, label in enumerate(lowered) if text.lower() in label][:5]
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise OccludeError(f"unknown label {text!r}{hint}") from None
    if not 0 <= index < num_classes:
        raise OccludeError(f"target {index} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return index
