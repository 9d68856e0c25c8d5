"""The incremental scorer and its pieces: sub-models between cut tensors (:func:`extract`, :class:`Segment`) and
:class:`IncrementalScorer`, which scores occluded copies of one input from crops and pasted tensors (the
geometry of crops, changed positions and pastes per batch of windows), with the same outputs as full passes
to float noise."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from occlude_cli.errors import OccludeError

from .crops import Geometry, window_geometry
from .exactness import IncrementalUnavailable
from .receptive import AxisRF, GraphInfo
from .selfcheck import CHECK_TOLERANCE, _SelfCheck, _slices


def extract(model, inputs: Sequence[str], outputs: Sequence[str], info: Optional[GraphInfo] = None):
    """The sub-model computing ``outputs`` from ``inputs`` (tensors of ``model``), as a new ModelProto.

    Inputs and outputs get fully symbolic shapes of their rank (crops and batches vary); intermediate
    ``value_info`` is dropped so that no stale shape pins a dimension. Raises when the outputs need the
    model's graph input other than through ``inputs``.
    """
    from onnx import helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    needed_nodes, needed_inits = _needed(graph, inits, inputs, outputs)
    elem, ranks = _types_and_ranks(graph, info)

    def value_info(name: str, prefix: str):
        if name not in elem or name not in ranks:
            raise IncrementalUnavailable(f"unknown type or rank of tensor {name!r}")
        return helper.make_tensor_value_info(name, elem[name], [f"{prefix}{i}" for i in range(ranks[name])])

    declared_outputs = {o.name: o for o in graph.output}
    new_outputs = [declared_outputs[o] if o in declared_outputs else value_info(o, "o") for o in outputs]
    if any(o in declared_outputs for o in outputs):  # the model's own output: free its batch dimension
        new_outputs = [_free_batch(out) for out in new_outputs]
    new_graph = helper.make_graph(
        [graph.node[i] for i in sorted(needed_nodes)],
        f"{graph.name or 'graph'}_part",
        [value_info(i, "i") for i in inputs],
        new_outputs,
        initializer=[inits[n] for n in sorted(needed_inits)],
    )
    new = helper.make_model(new_graph, opset_imports=list(model.opset_import))
    new.ir_version = model.ir_version
    new.functions.extend(model.functions)
    return new


def _needed(graph, inits: dict, inputs: Sequence[str], outputs: Sequence[str]) -> Tuple[set, set]:
    """The nodes (indices) and initializers that compute ``outputs`` from ``inputs``, walking back from the
    outputs (subgraphs' outer-scope reads included); refused when the graph input is reached otherwise."""
    producer = {out: index for index, node in enumerate(graph.node) for out in node.output if out}
    wanted = set(inputs)
    needed_nodes: set = set()
    needed_inits: set = set()
    stack, seen = list(outputs), set()
    graph_inputs = {i.name for i in graph.input if i.name not in inits}
    while stack:
        name = stack.pop()
        if name in seen or name in wanted or not name:
            continue
        seen.add(name)
        if name in inits:
            needed_inits.add(name)
        elif name in producer:
            index = producer[name]
            if index not in needed_nodes:
                needed_nodes.add(index)
                node = graph.node[index]
                stack.extend(node.input)
                for attr in node.attribute:  # outer-scope names used by subgraphs
                    subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                    for sub in (n for g in subgraphs for n in g.node):
                        stack.extend(sub.input)
        elif name in graph_inputs:
            raise IncrementalUnavailable(
                f"tensor(s) {list(outputs)} depend on input {name!r} other than through {list(inputs)}"
            )
    return needed_nodes, needed_inits


def _types_and_ranks(graph, info: Optional[GraphInfo]) -> Tuple[dict, dict]:
    """Element type and rank of every tensor the graph declares, completed by shape inference's (``info``)."""
    elem, ranks = {}, {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        elem[value.name] = value.type.tensor_type.elem_type
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    if info is not None:
        for name, value in info.elem_types.items():
            elem.setdefault(name, value)
        for name, shape in info.shapes.items():
            ranks.setdefault(name, len(shape))
    return elem, ranks


def _free_batch(out):
    """A copy of an output's value info with its first dimension symbolic ("batch")."""
    import onnx

    copy = onnx.ValueInfoProto()
    copy.CopyFrom(out)
    dims = copy.type.tensor_type.shape.dim
    if len(dims):
        dims[0].Clear()
        dims[0].dim_param = "batch"
    return copy


@dataclass
class Segment:
    """One part of the chain: ``source`` -> ``target`` run on crops of ``source``."""

    source: str
    target: str
    rf: Tuple[AxisRF, AxisRF]  # target's field relative to source
    source_axes: Tuple[int, int]  # spatial axes of source (with the batch axis first)
    target_axes: Tuple[int, int]
    source_extent: Tuple[int, int]
    target_extent: Tuple[int, int]
    session: Any = None  # onnxruntime InferenceSession
    # the largest tensor the part computes, in elements per position of its source (0: unknown): what one window's
    # crop costs in memory, next to the whole model's largest tensor (IncrementalScorer.prefix_rows)
    peak: float = 0.0

    def run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.source: batch})[0]
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's own error types, as one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise IncrementalUnavailable(
                f"onnxruntime failed on the part {self.source!r} -> {self.target!r} "
                f"for shape {list(batch.shape)}: {first}"
            ) from None


_SHARED_ARENA: List[bool] = []  # [registered?] once per process: see _shared_arena
_SHARED_ARENA_LOCK = threading.Lock()


def _shared_arena(ort) -> bool:
    """One CPU memory arena for every part of every plan in this process, registered with onnxruntime's
    environment once. Each session otherwise grows an arena of its own to its own peak and keeps it: a plan
    of 9 parts held 1.15 GB where one shared arena holds 0.56 GB (the parts run one after another), and the
    first pass over an image touched 166,000 fresh pages (0.27 s of kernel time) against 25,000. Allocation
    only: the outputs are the same bytes."""
    with _SHARED_ARENA_LOCK:
        if not _SHARED_ARENA:
            try:
                cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(cpu, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
                _SHARED_ARENA.append(True)
            except Exception:  # noqa: BLE001 -- an onnxruntime without it, or one registered already: own arenas
                _SHARED_ARENA.append(False)
        return _SHARED_ARENA[0]


def _session(model, threads: Optional[int], providers: Optional[Sequence[str]]):
    """An onnxruntime session of ``model``: a ModelProto, its serialised bytes or a file path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if list(providers or ["CPUExecutionProvider"]) == ["CPUExecutionProvider"] and _shared_arena(ort):
        options.add_session_config_entry("session.use_env_allocators", "1")
    # every failure of a part is handled (a fixed-batch suffix is retried one window at a time, anything else
    # falls back to full passes with a one-line note): onnxruntime's own error log would only alarm the user
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = int(threads)
    # several sessions alternate on every batch: spinning threads of one would steal the cores of the next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))


# Windows whose crops one prefix part runs in one onnxruntime call at most (see IncrementalScorer.prefix_rows).
PREFIX_ROWS = 256


class Profile:
    """Where an incremental scorer's time goes, per part (the prefix parts in chain order, then the suffix):
    seconds inside onnxruntime, seconds copying (each window's crop, with the occluded window or the previous
    part's changed positions pasted in; for the suffix, the pastes into the copies of the whole last tensor and
    their restores; the per-window Python loops of those copies included), onnxruntime calls and windows. Set
    ``scorer.profile = Profile(len(scorer.segments) + 1)`` to collect; None (the default) costs nothing."""

    def __init__(self, parts: int) -> None:
        self.onnxruntime = [0.0] * parts
        self.copies = [0.0] * parts
        self.calls = [0] * parts
        self.windows = [0] * parts

    def add(self, part: int, copies: float, onnxruntime: float, windows: int) -> None:
        self.copies[part] += copies
        self.onnxruntime[part] += onnxruntime
        self.calls[part] += 1
        self.windows[part] += windows


class IncrementalScorer:
    """Raw outputs of an ONNX model for occluded copies of one input, computed incrementally.

    Built by :func:`build_plan`. :meth:`score_windows` has the engine's ``score_windows`` contract minus
    the score function: it returns what running the full model on each occluded input returns.
    """

    def __init__(
        self,
        *,
        model_path: Path,
        input_name: str,
        output_name: str,
        input_axes: Tuple[int, int],
        input_extent: Tuple[int, int],
        segments: List[Segment],
        suffix,
        suffix_batched: bool = True,
        full=None,
    ) -> None:
        self.model_path = model_path
        self.input_name = input_name
        self.output_name = output_name
        self.input_axes = input_axes
        self.input_extent = input_extent
        self.segments = segments
        self.suffix = suffix
        self.suffix_batched = suffix_batched
        self.full = full
        self.dtype = np.float32
        # the self-check: the largest drop difference against full passes, relative to the largest drop, on
        # check_windows windows (see _SelfCheck); exact: False for a plan of a graph that rounds coarsely
        # (inexact: why, see inexact_arithmetic), built only when asked for an approximate plan
        self.check_error: Optional[float] = None
        self.check_windows = 0
        self.exact = True
        self.inexact: Optional[str] = None
        self.window: Tuple[int, int] = (1, 1)  # the patch the plan was built and checked for
        self.estimated_speedup: Optional[float] = None  # the cost model's (multiply-adds + memory traffic)
        self.notes: List[str] = []
        self.timings: Dict[str, float] = {}
        # Safe to share between threads (onnxruntime sessions are): the whole tensors of the last input and the
        # last windows' geometry are tuples replaced at once, and each thread keeps its own copies of the last
        # tensor.
        self._whole: Optional[Tuple[np.ndarray, List[np.ndarray]]] = None  # (input, its whole tensors)
        self._geometry: Optional[Tuple[tuple, Geometry]] = None  # (windows, their geometry)
        self._local = threading.local()  # .tail, .base (copies of the last whole tensor), .crops: kept between calls
        self._parts: List[bytes] = []  # serialised sub-models (segments, then the suffix) until cached
        self.profile: Optional[Profile] = None  # where the time goes, when collected (benchmarks)
        self.full_peak = 0.0  # the whole model's largest tensor for one input, in elements (0: unknown)

    @property
    def cuts(self) -> List[str]:
        return [s.target for s in self.segments]

    def describe(self) -> dict:
        """What the plan is, for the run record."""
        return {
            "cuts": self.cuts,
            "segment_strides": [[s.rf[0].stride, s.rf[1].stride] for s in self.segments],
            "exact": self.exact,
            "inexact_arithmetic": self.inexact,
            "self_check_max_rel_error": self.check_error,
            "self_check_windows": self.check_windows,
            "estimated_speedup": None if self.estimated_speedup is None else round(self.estimated_speedup, 3),
            "notes": list(self.notes),
            "timings_ms_per_window": {k: round(v * 1e3, 4) for k, v in self.timings.items()},
        }

    def measure_error(self, sample: np.ndarray, baseline: np.ndarray, *, score=None, target=None) -> float:
        """The self-check's end-to-end measure on another input: the largest difference of the explained
        score's drop between this plan and full passes, relative to the largest drop, on one window of each
        position class (10 full passes). What an approximate plan's map is off by on that input."""
        if self.full is None:
            raise OccludeError("this plan has no session of the whole model to compare with")
        dtype = self.dtype
        check = _SelfCheck(
            self.full,
            np.asarray(sample, dtype=dtype),
            np.asarray(baseline, dtype=dtype),
            self.input_extent,
            self.window,
            self.input_axes,
            CHECK_TOLERANCE,
            score=score,
            target=target,
            approximate=True,
        )
        return check.error(self)

    # -- whole tensors -------------------------------------------------------------------------------
    def _full_tensors(self, inputs: np.ndarray) -> List[np.ndarray]:
        """[input, T1_full, ..., Tk_full] for one sample (each with a batch axis of 1), cached per input."""
        whole = self._whole
        if whole is not None and whole[0].shape == inputs.shape and np.array_equal(whole[0], inputs):
            return whole[1]
        tensors = [inputs[None]]
        for segment in self.segments:
            tensors.append(segment.run(tensors[-1]))
        self._whole = (inputs.copy(), tensors)
        return tensors

    def _run_suffix(self, batch: np.ndarray) -> np.ndarray:
        name = self.segments[-1].target
        try:
            if self.suffix_batched:
                out = self.suffix.run([self.output_name], {name: batch})[0]
            else:
                out = np.concatenate(
                    [self.suffix.run([self.output_name], {name: batch[i : i + 1]})[0] for i in range(len(batch))]
                )
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's own error types, as one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise IncrementalUnavailable(
                f"onnxruntime failed on the part {name!r} -> {self.output_name!r} "
                f"for shape {list(batch.shape)}: {first}"
            ) from None
        out = np.asarray(out)
        if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
            out = out.reshape(out.shape[:2])
        return out

    def full_outputs(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs of the plain full model on a batch (the original input, comparisons)."""
        return self.full.run(batch)

    # -- geometry ------------------------------------------------------------------------------------
    def geometry(self, windows: np.ndarray) -> Geometry:
        """Crops and changed intervals of every window through the chain (vectorised); the last one is kept, so
        that the images of a folder, which share their windows, compute it once."""
        windows = np.asarray(windows, dtype=np.int64)
        fields = tuple((r.stride, r.offset, r.size) for segment in self.segments for r in segment.rf)
        key = (windows.shape, windows.tobytes(), fields)
        if self._geometry is not None and self._geometry[0] == key:
            return self._geometry[1]
        geo = window_geometry(self.segments, self.input_extent, windows)
        self._geometry = (key, geo)
        return geo

    # -- scoring -------------------------------------------------------------------------------------
    def score_windows(
        self,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Raw outputs (N, classes) of the model on ``inputs`` (one sample, no batch axis) with each window
        (y, x, h, w in input pixels) replaced by ``baseline``, equal to float noise to full passes."""
        return np.concatenate([out for _, out in self.score_batches(inputs, baseline, windows, batch_size)])

    def score_batches(
        self,
        inputs: np.ndarray,
        baseline: np.ndarray,
        windows: np.ndarray,
        batch_size: int = 32,
    ) -> Iterator[Tuple[int, np.ndarray]]:
        """:meth:`score_windows` one batch at a time: (index of the batch's first window, raw outputs).

        The suffix runs ``batch_size`` windows at a time (copies of the whole last tensor); the crops of the
        prefix parts run for several such batches in one onnxruntime call each (:meth:`prefix_rows`), as many
        as hold no more elements than ``batch_size`` whole tensors, so memory stays within a batch's."""
        inputs = np.asarray(inputs, dtype=self.dtype)
        baseline = np.asarray(baseline, dtype=self.dtype)
        if baseline.shape != inputs.shape:
            raise OccludeError(f"baseline shape {baseline.shape} differs from input shape {inputs.shape}")
        if batch_size < 1:
            raise OccludeError(f"batch size must be at least 1, got {batch_size}")
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
        if len(windows) == 0:
            raise OccludeError("no windows to occlude")
        full = self._full_tensors(inputs)
        geo = self.geometry(windows)
        rows = self.prefix_rows(geo, batch_size)
        for start in range(0, len(windows), rows):
            stop = min(start + rows, len(windows))
            crops, _ = self._prefix(full, baseline, geo, start, stop, False)
            for first in range(start, stop, batch_size):
                yield first, self._suffix(full, geo, crops, first, min(first + batch_size, stop), start)

    def prefix_rows(self, geo: Geometry, batch_size: int) -> int:
        """Windows whose crops run in one onnxruntime call per prefix part: a multiple of ``batch_size`` (the
        suffix's batches), at most :data:`PREFIX_ROWS`, and no more than keep every part's largest tensor on
        their crops within the whole model's largest tensor on ``batch_size`` inputs (the memory of a batch of
        full passes); without those sizes, no more crops than hold ``batch_size`` whole source tensors."""
        factors = []
        for k, s in enumerate(self.segments):
            crop = max(1, geo.sizes[k][0] * geo.sizes[k][1])
            if s.peak > 0 and self.full_peak > 0:
                factors.append(self.full_peak / (s.peak * crop))
            else:
                factors.append(s.source_extent[0] * s.source_extent[1] / crop)
        return batch_size * max(1, min(int(min(factors)), PREFIX_ROWS // batch_size))

    def check_crops(self, inputs: np.ndarray, windows: np.ndarray) -> float:
        """The self-check of the prefix parts: each segment run on the crops of ``windows`` with nothing
        occluded must reproduce the same slice of the whole tensor. Returns the largest difference over the
        changed positions, relative to each tensor's largest magnitude (the suffix is not run)."""
        inputs = np.asarray(inputs, dtype=self.dtype)
        windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
        full = self._full_tensors(inputs)
        geo = self.geometry(windows)
        _, worst = self._prefix(full, inputs, geo, 0, len(windows), True)
        return worst

    def _prefix(self, full, baseline, geo: Geometry, start: int, stop: int, check: bool) -> Tuple[list, float]:
        """Every prefix part on the crops of windows [start, stop), one onnxruntime call per part and crop class:
        each window's crop output of the last part, and with ``check`` the largest difference of the crops from
        the whole tensors (see :meth:`check_crops`)."""
        b = stop - start
        previous: List[Any] = []  # each window's crop output of segment k-1
        worst = 0.0
        profile = self.profile
        for k, segment in enumerate(self.segments):
            source = full[k][0]
            crops = geo.crops[k]
            outputs: List[Any] = [None] * b
            for c, size, members in geo.members(k, start, stop):
                started = time.perf_counter() if profile is not None else 0.0
                shape = list(full[k].shape)
                shape[0] = len(members)
                shape[segment.source_axes[0]], shape[segment.source_axes[1]] = size
                batch = self._crop_buffer(shape, source.dtype)
                if k == 0:
                    occluded = geo.occluded
                    for j, i in enumerate(members):
                        batch[j] = source[crops[start + i]]
                        hole = occluded[start + i]
                        if hole is not None:
                            batch[j][hole[0]] = baseline[hole[1]]
                else:
                    pastes = geo.pastes[k - 1]
                    for j, i in enumerate(members):
                        batch[j] = source[crops[start + i]]
                        paste = pastes[start + i]
                        if paste is not None:
                            batch[j][paste[1]] = previous[i][paste[0]]
                copied = time.perf_counter() if profile is not None else 0.0
                out = segment.run(batch)
                if profile is not None:
                    profile.add(k, copied - started, time.perf_counter() - copied, len(members))
                if geo.covered.get((k, c)) != out.shape[1:]:  # a class's crops have one size: checked once
                    self._check_reach(out, geo, k, [start + i for i in members])
                    geo.covered[(k, c)] = out.shape[1:]
                for j, i in enumerate(members):
                    outputs[i] = out[j]
            if check:
                worst = max(worst, self._check_crop(outputs, full[k + 1], geo, k, start, stop))
            previous = outputs
        return previous, worst

    def _suffix(self, full, geo: Geometry, crops, start: int, stop: int, offset: int) -> np.ndarray:
        """The suffix on windows [start, stop), whose last crop outputs are ``crops[start - offset:]``: a kept
        buffer holds copies of the whole last tensor, the changed positions are pasted in, and restored after
        the suffix has run (no fresh copy of the whole tensor per window)."""
        b = stop - start
        profile = self.profile
        started = time.perf_counter() if profile is not None else 0.0
        base = full[-1]
        tail = self._tail_buffer(base, b)
        pastes = geo.pastes[-1]
        ran = 0.0
        try:
            for i in range(b):
                paste = pastes[start + i]
                if paste is not None:
                    tail[i][paste[1]] = crops[start - offset + i][paste[0]]
            pasted = time.perf_counter() if profile is not None else 0.0
            out = self._run_suffix(tail)
            ran = time.perf_counter() - pasted if profile is not None else 0.0
            return out
        finally:
            for i in range(b):
                paste = pastes[start + i]
                if paste is not None:
                    tail[i][paste[1]] = base[0][paste[1]]
            if profile is not None:
                profile.add(len(self.segments), time.perf_counter() - started - ran, ran, b)

    def _crop_buffer(self, shape: List[int], dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` for one call's crops, on memory kept between calls: every part and
        class fills it, runs and is done with it before the next one, so one buffer serves them all. (A fresh
        allocation of tens of megabytes per call is fresh pages from the kernel, whose first touch cost more than
        the copies themselves.)"""
        size = int(np.prod(shape))
        local = self._local
        buffer = getattr(local, "crops", None)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = local.crops = np.empty(size, dtype=dtype)
        return buffer[:size].reshape(shape)

    def _tail_buffer(self, base: np.ndarray, b: int) -> np.ndarray:
        """(b, ...) copies of ``base`` (the whole last tensor, batch axis of 1), kept between batches."""
        local = self._local
        tail = getattr(local, "tail", None)
        if tail is None or getattr(local, "base", None) is not base or len(tail) < b:
            tail = local.tail = np.repeat(base, b, axis=0)
            local.base = base
        return tail[:b]

    def _check_reach(self, out: np.ndarray, geo: Geometry, k: int, windows: List[int]) -> None:
        """The crop outputs must cover the positions every window changed (numpy would silently cut a slice)."""
        reach = geo.reach[k][windows]
        axes = self.segments[k].target_axes
        limit = np.asarray([out.shape[axes[0]], out.shape[axes[1]]])
        if np.any(reach[:, :, 0] < 0) or np.any(reach[:, :, 1] > limit):
            raise IncrementalUnavailable(
                f"the crop output of {self.segments[k].target!r} does not cover the positions the window changed"
            )

    def _check_crop(self, outputs, target_full, geo: Geometry, k: int, start: int, stop: int) -> float:
        """Largest |difference| between crop outputs and the whole tensor over the changed positions, relative
        to the tensor's largest magnitude (meaningful when the baseline equals the input)."""
        segment = self.segments[k]
        scale = float(np.max(np.abs(target_full))) or 1.0
        worst = 0.0
        axes = (segment.target_axes[0] - 1, segment.target_axes[1] - 1)
        for i in range(stop - start):
            paste = geo.pastes[k][start + i]
            if paste is None:
                continue
            (y0, y1), (x0, x1) = geo.changed[k][start + i].tolist()
            got = outputs[i][paste[0]]
            want = target_full[0][_slices(axes, y0, y1, x0, x1)]
            if got.shape != want.shape:
                return float("inf")
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) / scale)
        return worst
