"""Exact incremental inference for occlusion on ONNX CNNs (issue 15; Krypton-style, for any ONNX graph).

Occluding a window changes only the positions of an early, high-resolution tensor T whose receptive field
meets the window. So the graph is split at one or a chain of *cut* tensors T1 -> T2 -> ... -> Tk (local
tensors that every input-to-output path crosses, see :mod:`occlude_cli.inference.receptive`):

1. once per image, every segment (input -> T1, T1 -> T2, ...) runs on the whole unoccluded tensor: T1_full...
2. for a batch of windows, segment 1 runs only on a *crop* of each occluded input around its window; the
   positions of T1 the window changed (the window mapped through T1's receptive field) are taken from the
   crop's output. Segment 2 runs on a crop of T1_full with those changed positions pasted in, and so on.
3. the suffix (Tk -> output) runs on copies of Tk_full with the changed positions pasted in.

Exactness, not approximation: every crop has one fixed size per axis (so crops batch together), congruent
to the tensor's size modulo the segment's total stride, and starts on a multiple of that stride. Then every
layer of the segment sees the crop on the same grid as the whole tensor, and the crop's borders are either
the tensor's own borders (where the crop then pads exactly as the whole tensor does) or far enough from the
changed positions that its wrong zero padding cannot reach them (the changed positions' receptive fields
lie inside the crop). Results equal the full model's to float noise: the same operations on the same values,
in another summation order. That holds for float32 (and wider) arithmetic only: a graph that computes in
float16 or in quantised steps, or rounds to integers, turns the same noise into whole rounding steps now and
then, so such graphs are refused from the graph alone (:func:`inexact_arithmetic`) unless an approximate plan
is asked for. A self-check at build time verifies every plan on this machine (crop outputs against the whole
tensor, and end to end the explained score's drop against full passes, on windows of every position class)
and refuses the plan otherwise.

The cut chain is chosen by a cost model (multiply-adds and memory traffic per node, scaled by the crop's
share of each segment) and the best few chains are then timed on real batches against the full model.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from occlude_cli.errors import OccludeError

from ..core.engine import window_starts
from . import cache
from .crops import crop_plan
from .exactness import NOT_BIT_FOR_BIT, IncrementalUnavailable, _inexact, inexact_arithmetic, inexact_outputs
from .limit import ELEMENT_COST, node_costs
from .receptive import AxisRF, GraphInfo, LocalTensor, analyse, cut_candidates
from .segments import IncrementalScorer, Segment, _session, extract
from .selfcheck import _CheckSpec, _first, _FullModel, _occluded_batch, _tolerance

__all__ = [
    "NOT_BIT_FOR_BIT",
    "IncrementalScorer",
    "IncrementalUnavailable",
    "Segment",
    "build_plan",
    "extract",
    "inexact_arithmetic",
    "inexact_outputs",
    "try_build_plan",
]

# Memory traffic weight of the cost model: one output element costs as much as this many multiply-adds
# (depthwise convolutions and activations are memory-bound on CPUs); see limit.ELEMENT_COST.
_ELEMENT_COST = ELEMENT_COST
# Cost of one element a segment's crop (or the suffix's whole input) moves per window, in multiply-add
# equivalents: copied into the batch, pasted, reordered by onnxruntime into its blocked layout and read back.
# Calibrated on this project's 2-core machines (benchmarks/README.md): at 8, the planner cut at the widest
# tensors (the 96- to 240-channel expansions of inverted residual blocks) and EfficientNet-Lite0 ran 1.45x
# (patch 16) and 1.15x (patch 48) faster than full passes; at 96 it cuts at the narrow block outputs: 1.53x
# and 1.44x. ResNet-18- and VGG-like plans are the same either way; MobileNetV2-like 1.58x -> 1.65x.
_CROP_ELEMENT_COST = 96.0
# What one onnxruntime call of a part costs per window, as a share of a full pass's cost: the call itself and
# the per-node dispatch, spread over the windows of a call (issue 35: 0.2-0.3 ms per call of about 60 windows on
# EfficientNet-Lite0, whose full pass takes 3.4 ms). Charged once per crop shape of the part.
_CALL_SHARE = 0.002


# ------------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------------


def _node_costs(info: GraphInfo) -> Dict[str, float]:
    """Cumulative cost (multiply-adds + weighted output elements) of each tensor's input-dependent ancestors."""
    own = {c.tensor: c.cost for c in node_costs(info)}
    cumulative: Dict[str, float] = {}
    ancestors: Dict[str, set] = {}
    for node in info.model.graph.node:
        out = node.output[0]
        if out not in own:
            continue
        anc = {out}
        for i in node.input:
            if i in ancestors:
                anc |= ancestors[i]
        for o in node.output:
            if o:
                ancestors[o] = anc
        cumulative[out] = sum(own[a] for a in anc)
    return cumulative


@dataclass
class _Candidate:
    chain: List[str]
    cost: float
    full_cost: float = 0.0

    @property
    def estimated_speedup(self) -> float:
        return self.full_cost / self.cost if self.cost > 0 else 0.0


def _relative_field(a: LocalTensor, b: LocalTensor, ax: int) -> Optional[Tuple[int, int, int]]:
    """(stride, offset, size) of b's field relative to a's along one axis, None when b is not on a's grid."""
    sa, sb = a.rf[ax], b.rf[ax]
    if sb.stride % sa.stride:
        return None
    off = (sb.offset - sa.offset) / sa.stride
    size = (sb.size - sa.size) / sa.stride + 1
    if off != int(off) or size != int(size):
        return None
    return sb.stride // sa.stride, int(off), int(size)


def _plan_candidates(
    info: GraphInfo,
    cuts: List[LocalTensor],
    window: Tuple[int, int],
    output: str,
    input_local: LocalTensor,
    max_chain: int,
    stride: Optional[Tuple[int, int]] = None,
) -> List[_Candidate]:
    """Chains of cuts ranked by the cost model (per window, arbitrary units), best first, one per length.

    A part's cost is the multiply-adds and output elements of its nodes scaled by its mean crop's share of its
    source (over the windows of the grid ``window`` / ``stride``, each with the crop class it gets, see
    :mod:`occlude_cli.inference.crops`), plus the elements its crops move and a share of a full pass per call;
    the suffix costs its nodes on whole tensors plus the elements of its input."""
    cumulative = _node_costs(info)
    total = cumulative.get(output, max(cumulative.values()))
    extent = input_local.extent
    assert extent is not None  # the input's shape is always inferred
    stride = stride or (max(1, window[0] // 2), max(1, window[1] // 2))
    starts = [window_starts(extent[a], min(window[a], extent[a]), max(1, min(stride[a], window[a]))) for a in range(2)]
    spans = [(s, s + min(window[a], extent[a])) for a, s in enumerate(starts)]
    nodes = [input_local] + cuts
    changed = {}  # per tensor and axis: the windows' changed intervals (lo, hi), through its field from the input
    for t in nodes:
        ext = t.extent
        assert ext is not None  # cut_candidates keeps only tensors with a known shape
        changed[t.name] = [_touched_1d(t.rf[a], spans[a][0], spans[a][1], ext[a]) for a in range(2)]
    memo: Dict[Tuple[int, int], Optional[float]] = {}

    def seg_cost(i: int, j: int) -> Optional[float]:
        if (i, j) not in memo:
            memo[(i, j)] = _segment_cost(nodes[i], nodes[j], changed, cumulative, total, i == 0)
        return memo[(i, j)]

    # dynamic programme over chains ending at each cut, per chain length (nodes[0] is the input)
    best: Dict[Tuple[int, int], Tuple[float, List[int]]] = {}
    for j in range(1, len(nodes)):
        c = seg_cost(0, j)
        if c is not None:
            best[(1, j)] = (c, [j])
    for length in range(2, max_chain + 1):
        for j in range(1, len(nodes)):
            options = []
            for i in range(1, j):
                prev = best.get((length - 1, i))
                c = seg_cost(i, j) if prev is not None else None
                if prev is not None and c is not None:
                    options.append((prev[0] + c, prev[1] + [j]))
            if options:
                best[(length, j)] = min(options, key=lambda o: o[0])
    ranked = []
    for (_, j), (c, chain) in best.items():
        last = nodes[j]
        assert last.shape is not None
        tail = total - cumulative[last.name] + _CROP_ELEMENT_COST * float(np.prod(last.shape))
        ranked.append(_Candidate([nodes[i].name for i in chain], c + tail, total))
    ranked.sort(key=lambda c: c.cost)
    per_length: Dict[int, _Candidate] = {}
    for cand in ranked:
        per_length.setdefault(len(cand.chain), cand)
    return sorted(per_length.values(), key=lambda c: c.cost)


def _touched_1d(rf: AxisRF, lo: np.ndarray, hi: np.ndarray, extent: int) -> Tuple[np.ndarray, np.ndarray]:
    j0 = np.maximum(0, -((rf.offset + rf.size - 1 - lo) // rf.stride))
    j1 = np.minimum(extent, (hi - 1 - rf.offset) // rf.stride + 1)
    return j0, np.maximum(j0, j1)


def _segment_cost(a: LocalTensor, b: LocalTensor, changed, cumulative, total: float, first: bool) -> Optional[float]:
    """The cost model's cost of the part a -> b per window (None when b is not on a's grid)."""
    assert a.shape is not None and a.extent is not None and b.extent is not None  # known shapes, as above
    mean_area, calls = 1.0, 1
    for ax in range(2):
        rel = _relative_field(a, b, ax)
        if rel is None:
            return None
        lo, hi = changed[a.name][ax]
        lengths = crop_plan([rel], lo[:, None], hi[:, None], [a.extent[ax]], [b.extent[ax]])[1][:, 0]
        mean_area *= float(np.mean(lengths))
        calls *= len(np.unique(lengths))
    frac = mean_area / (a.extent[0] * a.extent[1])
    elements = float(np.prod(a.shape)) * frac
    start = 0.0 if first else cumulative.get(a.name, 0.0)
    return (cumulative[b.name] - start) * frac + _CROP_ELEMENT_COST * elements + _CALL_SHARE * total * calls


def _make_scorer(
    model,
    info: GraphInfo,
    chain: List[str],
    output: str,
    layout: Optional[str],
    base,
    threads,
    providers,
    cache: Dict[tuple, Any],
) -> IncrementalScorer:
    """Sessions for every segment of ``chain`` and the suffix (shared through ``cache`` between chains)."""
    segments: List[Segment] = []
    parts: List[bytes] = []  # the serialised sub-models, for the on-disk cache
    source = info.input_name
    source_local = base.tensors[source]
    for target in chain:
        key = ("segment", source, target)
        if key not in cache:
            rel = analyse(None, source=source, info=info, layout=layout, source_axes=source_local.axes)
            if target not in rel.tensors:
                raise IncrementalUnavailable(f"{target!r} is not local relative to {source!r}")
            sub = extract(model, [source], [target], info)
            peak = _peak(info, sub, source_local.extent)
            sub = sub.SerializeToString()
            cache[key] = (rel.tensors[target], _session(sub, threads, providers), sub, peak)
        t_rel, session, data, peak = cache[key]
        parts.append(data)
        segments.append(
            Segment(
                source=source,
                target=target,
                rf=t_rel.rf,
                source_axes=source_local.axes,
                target_axes=t_rel.axes,
                source_extent=source_local.extent,
                target_extent=base.tensors[target].extent,
                session=session,
                peak=peak,
            )
        )
        source = target
        source_local = base.tensors[target]
    key = ("suffix", source, output)
    if key not in cache:
        sub = extract(model, [source], [output], info).SerializeToString()
        cache[key] = (_session(sub, threads, providers), sub)
    suffix, data = cache[key]
    parts.append(data)
    scorer = IncrementalScorer(
        model_path=Path(info.path or ""),
        input_name=info.input_name,
        output_name=output,
        input_axes=base.tensors[info.input_name].axes,
        input_extent=base.tensors[info.input_name].extent,
        segments=segments,
        suffix=suffix,
    )
    scorer._parts = parts
    scorer.full_peak = max((float(np.prod(info.shapes[t])) for t in info.dependent if t in info.shapes), default=0.0)
    return scorer


def _peak(info: GraphInfo, sub, extent) -> float:
    """The largest tensor a part computes, in elements per position of its source (0 when unknown)."""
    sizes = [float(np.prod(info.shapes[o])) for node in sub.graph.node for o in node.output if o in info.shapes]
    area = float(extent[0] * extent[1]) if extent else 0.0
    return max(sizes, default=0.0) / area if area else 0.0


def build_plan(
    model_path,
    input_shape: Sequence[int],
    *,
    layout: Optional[str] = None,
    baseline: Optional[np.ndarray] = None,
    sample: Optional[np.ndarray] = None,
    window: Tuple[int, int] = (16, 16),
    stride: Optional[Tuple[int, int]] = None,
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    input_name: Optional[str] = None,
    output_name: Optional[str] = None,
    cuts: Optional[Sequence[str]] = None,
    max_chain: int = 5,
    max_plans: int = 3,
    measure: bool = True,
    tolerance: Optional[float] = None,
    require_faster: bool = False,
    full_session=None,
    model_sha256: Optional[str] = None,
    score=None,
    target: Optional[int] = None,
    allow_approximate: bool = False,
) -> IncrementalScorer:
    """An :class:`IncrementalScorer` for the model, or :class:`IncrementalUnavailable` with the reason.

    ``input_shape``: one sample with its batch axis (N=1), NCHW or NHWC (``layout``, guessed from a
    channel count of 1 or 3 when omitted). ``window`` (h, w): the occlusion patch, and ``stride`` (default half
    the patch) the grid's step: the cost model ranks plans over the windows of that grid. ``cuts`` forces a
    chain of cut tensor names (tests, benchmarks); otherwise the cost model ranks the best chain of each length
    up to ``max_chain`` and keeps the ``max_plans`` cheapest.

    A graph whose arithmetic a plan cannot reproduce bit for bit (:func:`inexact_arithmetic`: float16,
    quantised operators, rounding steps) is refused unless ``allow_approximate``; then the plan is built
    anyway, ``scorer.exact`` is False and ``scorer.check_error`` holds the error its self-check measured.

    Every plan passes the self-check (crops against the whole tensors; the explained score's drop against
    full passes, on windows of every position class: corners, borders, interior, off the grid; see
    :class:`_SelfCheck`). ``score`` (raw outputs (N, K) -> scores (N, K), e.g. the head's softmax) and
    ``target`` (the explained class; default the top-1 of ``sample``) say what the map explains; without
    ``score`` the raw outputs are compared. With ``measure`` the checked plans and
    the full model are then timed on one more batch of those windows each and the fastest plan is kept
    (``timings`` records them); ``require_faster`` raises when the full model is faster.

    ``sample``/``baseline`` (one sample each, no batch axis) feed the self-check; default a seeded random
    input and zeros. ``full_session``: an onnxruntime session of the whole model to reuse.
    ``input_name``/``output_name`` pick the image input and the scores output when the model has several.
    ``tolerance``: the self-check's largest drop difference, relative to the largest drop on the checked
    windows (and of the crops, relative to each tensor's largest magnitude); default
    :data:`CHECK_TOLERANCE` (1e-4: float32 noise is 1e-7 to 1e-6).

    ``model_sha256`` (the model file's SHA-256) turns on the on-disk plan cache (see
    :mod:`occlude_cli.inference.cache`) for plans chosen by the cost model without ``measure``: a cached plan
    skips the graph analysis and the sub-model extraction but not the self-check; one that fails it is
    rebuilt. Graphs where incremental inference does not apply are remembered too.
    """
    path = Path(model_path)
    if not path.exists():
        raise OccludeError(f"model not found: {path}")
    input_shape = [int(d) for d in input_shape]
    if len(input_shape) != 4 or input_shape[0] != 1:
        raise OccludeError(f"input_shape must be 4-D with a batch of 1, got {input_shape}")
    spec = _CheckSpec(score, target, _tolerance(tolerance), bool(allow_approximate))
    key = None
    if model_sha256 and cuts is None and not (measure or require_faster):
        chosen = dict(layout=layout, window=window, stride=stride, input_name=input_name, output_name=output_name)
        key = _plan_key(model_sha256, input_shape, max_chain, max_plans, bool(allow_approximate), **chosen)
        cached = _cached_plan(key, input_shape, sample, baseline, threads, providers, full_session, spec)
        if cached is not None:
            return cached
    try:
        scorer = _build_plan(
            path,
            input_shape,
            layout=layout,
            baseline=baseline,
            sample=sample,
            window=window,
            stride=stride,
            providers=providers,
            threads=threads,
            input_name=input_name,
            output_name=output_name,
            cuts=cuts,
            max_chain=max_chain,
            max_plans=max_plans,
            measure=measure,
            spec=spec,
            require_faster=require_faster,
            full_session=full_session,
        )
    except IncrementalUnavailable as exc:
        if key is not None and exc.structural:
            cache.store("incremental", key, {"available": False, "reason": str(exc)})
        raise
    if key is not None:
        _store_plan(key, scorer, window)
    scorer._parts = []
    return scorer


def _plan_key(sha256: str, input_shape, max_chain, max_plans, allow_approximate, *, window, **chosen) -> str:
    """The on-disk cache key of a plan chosen by the cost model: the model file and everything that chooses."""
    return cache.entry_key(
        "incremental",
        sha256=sha256,
        input_shape=input_shape,
        layout=chosen["layout"],
        window=[int(w) for w in window],
        stride=None if chosen["stride"] is None else [int(v) for v in chosen["stride"]],
        input_name=chosen["input_name"],
        output_name=chosen["output_name"],
        max_chain=max_chain,
        max_plans=max_plans,
        costs=[_ELEMENT_COST, _CROP_ELEMENT_COST, _CALL_SHARE],  # a retuned cost model chooses again
        allow_approximate=allow_approximate,
    )


def _build_plan(
    path: Path,
    input_shape: List[int],
    *,
    layout,
    baseline,
    sample,
    window,
    stride,
    providers,
    threads,
    input_name,
    output_name,
    cuts,
    max_chain,
    max_plans,
    measure,
    spec: _CheckSpec,
    require_faster,
    full_session,
) -> IncrementalScorer:
    import onnx

    model = onnx.load(str(path))
    info = GraphInfo(model, input_shape=input_shape, input_name=input_name)
    info.path = path
    base = analyse(None, layout=layout, info=info)
    output_name = _output_of(info, output_name)
    inexact = _inexact(model, output_name, info.elem_types)
    if inexact is not None and not spec.approximate:
        raise IncrementalUnavailable(f"{inexact}: {NOT_BIT_FOR_BIT}", structural=True)
    spec = replace(spec, approximate=inexact is not None)  # an exact graph's plan is held to float noise
    candidates = cut_candidates(None, info=info, analysis=base, output=output_name)
    if not candidates:
        reason = base.first_nonlocal or "no local tensor dominates the output"
        raise IncrementalUnavailable(f"no cut point: locality ends at {reason}", structural=True)
    input_local = base.tensors[info.input_name]
    input_extent = input_local.extent
    assert input_extent is not None  # the input's shape is always inferred
    dtype = _input_dtype(info)
    sample, baseline = _check_inputs(sample, baseline, tuple(input_shape[1:]), dtype)
    window = (min(window[0], input_extent[0]), min(window[1], input_extent[1]))
    chains, estimates = _chains(
        cuts, candidates, info, (window, stride), output_name, input_local, max_chain, max_plans
    )
    full = _FullModel(full_session or _session(model, threads, providers), info.input_name, output_name)
    # every position class (corners, borders, interior, off-grid) for the crops; outputs against full passes
    # on a few of them (each full pass costs what the plan saves on about two windows)
    check = spec.check(full, sample, baseline, input_extent, window, input_local.axes)
    parts: Dict[tuple, Any] = {}  # (prefix part, session) pairs and suffix sessions
    checked, notes = [], []
    for chain in chains:
        try:
            scorer = _make_scorer(model, info, chain, output_name, layout, base, threads, providers, parts)
            scorer.full, scorer.dtype, scorer.estimated_speedup = full, dtype, estimates.get(tuple(chain))
            check.run(scorer)
            scorer.inexact = inexact
            checked.append(scorer)
        except IncrementalUnavailable as exc:
            notes.append(f"chain {chain}: {exc}")
        except Exception as exc:  # noqa: BLE001 -- onnxruntime refuses a sub-graph: that chain is unusable
            notes.append(f"chain {chain}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if not checked:
        raise IncrementalUnavailable("; ".join(notes) or "no usable plan")
    if not (measure or require_faster):
        checked[0].notes = notes
        return checked[0]
    return _fastest(checked, full, check, sample, baseline, input_local.axes, notes, require_faster)


def _output_of(info: GraphInfo, output_name: Optional[str]) -> str:
    outputs = info.outputs
    if output_name is None:
        if len(outputs) != 1:
            raise OccludeError(f"model has {len(outputs)} outputs: give output_name", params=("output_name",))
        return outputs[0]
    if output_name not in outputs:
        raise OccludeError(f"model has no output named {output_name!r}")
    return output_name


def _input_dtype(info: GraphInfo):
    """The model's own input type: float32, float16, float64, uint8, ..."""
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(info.elem_types.get(info.input_name, onnx.TensorProto.FLOAT)).type
    except (KeyError, ValueError, TypeError):
        raise IncrementalUnavailable("the input's element type is not a numpy type", structural=True) from None


def _check_inputs(sample, baseline, sample_shape: tuple, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """The self-check's sample (default seeded random) and baseline (default zeros) in the input's type."""
    if sample is None:
        sample = np.random.default_rng(0).standard_normal(sample_shape).astype(dtype)
    sample = np.asarray(sample, dtype=dtype)
    baseline = np.zeros(sample_shape, dtype=dtype) if baseline is None else np.asarray(baseline, dtype=dtype)
    if sample.shape != sample_shape or baseline.shape != sample_shape:
        raise OccludeError(f"sample and baseline must have shape {sample_shape}")
    return sample, baseline


def _chains(cuts, candidates, info, grid, output_name, input_local, max_chain, max_plans):
    """The chains of cuts to build (``cuts`` as given, else the cost model's best) and their estimates."""
    if cuts is not None:
        known = {c.name for c in candidates}
        for c in cuts:
            if c not in known:
                raise IncrementalUnavailable(f"{c!r} is not a cut point (a local tensor every path crosses)")
        return [list(cuts)], {}
    ranked = _plan_candidates(info, candidates, grid[0], output_name, input_local, max_chain, grid[1])
    chains = [c.chain for c in ranked[: max(1, max_plans)]]
    if not chains:
        raise IncrementalUnavailable("no chain of cuts has a usable receptive field", structural=True)
    return chains, {tuple(c.chain): c.estimated_speedup for c in ranked}


def _fastest(checked, full, check, sample, baseline, axes, notes, require_faster) -> IncrementalScorer:
    """The fastest checked plan: every session has run this batch shape (the self-check), one more run each is
    the measurement; ``require_faster`` refuses a plan slower than full passes."""
    windows = check.windows
    n = len(windows)
    occluded = _occluded_batch(sample, baseline, windows, axes)
    full.run(occluded)  # warm-up: this batch shape is new to the full model
    full_time = _time_once(lambda: full.run(occluded)) / n
    timed = sorted(
        ((_time_once(lambda s=s: s.score_windows(sample, baseline, windows, batch_size=n)) / n, s) for s in checked),
        key=lambda p: p[0],
    )
    best_time, best = timed[0]
    best.timings = {"full": full_time, **{"+".join(s.cuts): t for t, s in timed}}
    best.notes = notes + [
        f"{n} windows: full {full_time * 1e3:.2f} ms/window, incremental {best_time * 1e3:.2f} ms/window"
    ]
    if require_faster and best_time >= full_time:
        raise IncrementalUnavailable(
            f"not faster here: {best_time * 1e3:.2f} ms/window incremental vs {full_time * 1e3:.2f} ms/window full"
        )
    return best


def _store_plan(key: str, scorer: IncrementalScorer, window: Tuple[int, int]) -> None:
    """Keep a checked plan in the on-disk cache: its geometry and its sub-models."""
    if len(scorer._parts) != len(scorer.segments) + 1:
        return
    files = {f"part{i}.onnx": data for i, data in enumerate(scorer._parts[:-1])}
    files["suffix.onnx"] = scorer._parts[-1]
    meta = {
        "available": True,
        "input_name": scorer.input_name,
        "output_name": scorer.output_name,
        "input_axes": list(scorer.input_axes),
        "input_extent": list(scorer.input_extent),
        "dtype": np.dtype(scorer.dtype).name,
        "suffix_batched": scorer.suffix_batched,
        "estimated_speedup": scorer.estimated_speedup,
        "full_peak": scorer.full_peak,
        "inexact": scorer.inexact,
        "window": [min(int(window[0]), scorer.input_extent[0]), min(int(window[1]), scorer.input_extent[1])],
        "segments": [
            {
                "source": seg.source,
                "target": seg.target,
                "rf": [[rf.stride, rf.offset, rf.size] for rf in seg.rf],
                "source_axes": list(seg.source_axes),
                "target_axes": list(seg.target_axes),
                "source_extent": list(seg.source_extent),
                "target_extent": list(seg.target_extent),
                "peak": seg.peak,
                "file": f"part{i}.onnx",
            }
            for i, seg in enumerate(scorer.segments)
        ],
        "suffix": "suffix.onnx",
    }
    cache.store("incremental", key, meta, files)


def _cached_plan(
    key, input_shape, sample, baseline, threads, providers, full_session, spec: _CheckSpec
) -> Optional[IncrementalScorer]:
    """The cached plan of ``key`` after its self-check; None when there is none or it fails (then it is
    removed, to be rebuilt); IncrementalUnavailable when the graph was found not to allow one."""
    hit = cache.load("incremental", key)
    if hit is None:
        return None
    folder, meta = hit
    if meta.get("available") is False:
        raise IncrementalUnavailable(str(meta.get("reason") or "not available for this graph"), structural=True)
    if full_session is None:
        return None  # the self-check's reference needs a session of the whole model: build as usual
    try:
        names = [seg["file"] for seg in meta["segments"]] + [meta["suffix"]]
        if not all(isinstance(n, str) and re.fullmatch(r"(part\d+|suffix)\.onnx", n) for n in names):
            raise ValueError("an entry naming files outside its folder")
        dtype = np.dtype(meta["dtype"]).type
        segments = [
            Segment(
                source=seg["source"],
                target=seg["target"],
                rf=(AxisRF(*seg["rf"][0]), AxisRF(*seg["rf"][1])),
                source_axes=(int(seg["source_axes"][0]), int(seg["source_axes"][1])),
                target_axes=(int(seg["target_axes"][0]), int(seg["target_axes"][1])),
                source_extent=(int(seg["source_extent"][0]), int(seg["source_extent"][1])),
                target_extent=(int(seg["target_extent"][0]), int(seg["target_extent"][1])),
                session=_session(folder / seg["file"], threads, providers),
                peak=float(seg.get("peak", 0.0)),
            )
            for seg in meta["segments"]
        ]
        input_axes = (int(meta["input_axes"][0]), int(meta["input_axes"][1]))
        input_extent = (int(meta["input_extent"][0]), int(meta["input_extent"][1]))
        scorer = IncrementalScorer(
            model_path=folder,
            input_name=str(meta["input_name"]),
            output_name=str(meta["output_name"]),
            input_axes=input_axes,
            input_extent=input_extent,
            segments=segments,
            suffix=_session(folder / meta["suffix"], threads, providers),
            suffix_batched=bool(meta["suffix_batched"]),
        )
        scorer.dtype = dtype
        scorer.full_peak = float(meta.get("full_peak", 0.0))
        speedup = meta.get("estimated_speedup")
        scorer.estimated_speedup = None if speedup is None else float(speedup)
        full = _FullModel(full_session, scorer.input_name, scorer.output_name)
        scorer.full = full
        shape = tuple(int(d) for d in input_shape[1:])
        sample = np.random.default_rng(0).standard_normal(shape).astype(dtype) if sample is None else sample
        sample = np.asarray(sample, dtype=dtype)
        baseline = np.zeros(sample.shape, dtype=dtype) if baseline is None else np.asarray(baseline, dtype=dtype)
        window = (int(meta["window"][0]), int(meta["window"][1]))
        inexact = meta.get("inexact")
        spec = replace(spec, approximate=inexact is not None)
        spec.check(full, sample, baseline, input_extent, window, input_axes).run(scorer)
        scorer.inexact = None if inexact is None else str(inexact)
    except Exception:  # noqa: BLE001 -- a damaged or foreign entry (or a failed self-check): rebuild it
        cache.remove("incremental", key)
        return None
    scorer.notes = ["plan read from the cache"]
    return scorer


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def try_build_plan(*args, **kwargs) -> Tuple[Optional[IncrementalScorer], Optional[str]]:
    """:func:`build_plan`, or (None, the one-line reason) when incremental inference does not apply or
    building the plan failed in any way (then full passes are the answer, never a failed image)."""
    try:
        return build_plan(*args, **kwargs), None
    except IncrementalUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 -- onnx, onnxruntime or an unforeseen graph: fall back, say why
        return None, f"building the plan failed: {_first(exc)}"
