"""Windows scored with occluded batches built inside onnxruntime (``batches="device"``): the model with the
pre-graph of :mod:`occlude_cli.inference.pregraph` in front.

Per image the prepared sample and the baseline are uploaded once (I/O binding: on the GPU when the model runs
there); per batch only the window boxes (B x 2d int64) go in and only the raw outputs come back. The batch is a
select of image and baseline elements, so it equals the host-built batch bit for bit, and the scores equal the
host path's (tested on the CPU provider; on CUDA within the GPU kernels' own noise).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ..core.engine import check_batch_size, spatial_axes_of
from ..errors import OccludeError, first_line
from ..inference.pregraph import BASELINE, BOXES, IMAGE, with_pregraph
from .model import OnnxClassifier, _ort


class DeviceBatches:
    """One onnxruntime session of ``model`` with the pre-graph for one sample shape and its spatial axes."""

    def __init__(self, model: OnnxClassifier, sample_shape: Sequence[int], spatial_axes: Sequence[int]) -> None:
        from ..inference.batching import make_batch_dynamic
        from ..inference.onnxfile import _serialize, load_model

        self.model = model
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.axes = tuple(int(a) % len(self.sample_shape) for a in spatial_axes)
        proto = load_model(model.path)
        if model.fixed_batch is None and proto.graph.input and _declares_batch_one(proto, model.input.name):
            make_batch_dynamic(proto)  # the classifier validated this rewrite when it loaded the model
        composed = with_pregraph(
            proto, model.input.name, self.sample_shape, model.dtype, self.axes, batch=model.fixed_batch
        )
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if model.threads:
            options.intra_op_num_threads = int(model.threads)
        try:
            self.session = ort.InferenceSession(
                _serialize(composed, "the model with the pre-graph"), sess_options=options, providers=model.providers
            )
        except Exception as exc:  # onnxruntime's own exception types
            raise OccludeError(f"onnxruntime cannot load the model with the pre-graph: {first_line(exc)}") from None
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def _upload(self, array: np.ndarray):
        return _ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def score_windows(
        self,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        transform: Callable[[np.ndarray], np.ndarray],
        *,
        batch_size: int = 32,
        spatial_axes: Sequence[int] = (-2, -1),
        progress=None,
    ) -> np.ndarray:
        """Like :func:`occlude_cli.core.engine.score_windows`, with ``transform`` turning the model's raw
        outputs into scores (the head's)."""
        inputs = np.asarray(inputs)
        if inputs.shape != self.sample_shape or spatial_axes_of(inputs, spatial_axes) != self.axes:
            raise OccludeError(f"device batches were built for samples of shape {list(self.sample_shape)}")
        if not isinstance(baseline, np.ndarray) or baseline.shape != inputs.shape:
            raise OccludeError("device batches need the baseline as an array shaped like the input")
        rows = check_batch_size(batch_size)
        windows = np.asarray(windows, dtype=np.int64)
        d = len(self.axes)
        boxes = np.concatenate([windows[:, :d], windows[:, :d] + windows[:, d:]], axis=1)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(IMAGE, self._upload(inputs.astype(self.model.dtype, copy=False)))
        binding.bind_ortvalue_input(BASELINE, self._upload(baseline.astype(self.model.dtype, copy=False)))
        fixed = self.model.fixed_batch
        step = fixed or min(rows, len(boxes))
        result: Optional[np.ndarray] = None
        for start in range(0, len(boxes), step):
            chunk = boxes[start : start + step]
            n = len(chunk)
            if fixed and n < fixed:  # empty boxes leave the image as it is; their rows are dropped
                chunk = np.concatenate([chunk, np.zeros((fixed - n, 2 * d), dtype=np.int64)])
            scores = transform(self._run(binding, chunk)[:n])
            if result is None:
                result = np.empty((len(boxes), scores.shape[1]), dtype=np.float64)
            result[start : start + n] = scores
            if progress is not None:
                progress(start + n, len(boxes))
        if result is None:
            raise OccludeError("no windows to occlude")
        return result

    def _run(self, binding, boxes: np.ndarray) -> np.ndarray:
        binding.bind_cpu_input(BOXES, boxes)
        binding.bind_output(self.model.output.name, "cpu")
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            raise OccludeError(f"onnxruntime failed on a batch of {len(boxes)} boxes: {first_line(exc)}") from None
        return self.model.as_scores(np.asarray(binding.copy_outputs_to_cpu()[0]), len(boxes))


def _declares_batch_one(proto, input_name: str) -> bool:
    for node in proto.graph.input:
        if node.name == input_name:
            dims = node.type.tensor_type.shape.dim
            return bool(dims) and dims[0].WhichOneof("value") == "dim_value" and dims[0].dim_value == 1
    return False


def device_batches(model: OnnxClassifier, sample_shape: Sequence[int], spatial_axes: Sequence[int]) -> DeviceBatches:
    """The model's device-batch session for this sample shape, built once and kept on the model."""
    shape = tuple(int(s) for s in sample_shape)
    key = (shape, tuple(int(a) % len(shape) for a in spatial_axes))
    cache = model.__dict__.setdefault("_device_batches", {})
    if key not in cache:
        cache.clear()  # one shape at a time: a folder's images share it
        cache[key] = DeviceBatches(model, shape, spatial_axes)
    return cache[key]
