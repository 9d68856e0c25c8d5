"""How a run's windows are scored: one full forward pass each (the engine's own loop), an exact incremental
inference plan (:mod:`occlude_cli.inference.incremental`: only the changed part of each early layer is
recomputed), or an executor elsewhere (a Ray cluster scores chunks of windows). Whichever scores them, the
engine aggregates the scores, so the map does not depend on it (an approximate plan, asked for with
``incremental="on"`` on a float16 or quantised graph, is the one exception, and says so)."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import OccludeError, RunWideError
from ..loaders.images import Preprocessing
from ..loaders.model import Head, OnnxClassifier
from .options import ExplainOptions

# auto: below this many windows a plan's start-up (self-check and timing) costs more than it saves
INCREMENTAL_MIN_WINDOWS = 64
INCREMENTAL_MIN_SPEEDUP = 1.3  # auto: the cost model's estimate a plan must reach (it ignores per-call costs)
INCREMENTAL_MAX_CHAIN = 8  # cuts in a plan at most (see incremental_scorer)
INPAINT = "a per-window baseline (inpaint)"
ON_GPU = (
    "on a GPU, auto uses full passes on batches built on the device (incremental inference's many small crop "
    "calls are not measured to pay there); pass --incremental on to use it"
)


def incremental_decision(model: OnnxClassifier, options: ExplainOptions, windows: int, ndim: int = 2) -> dict:
    """What ``incremental`` decides from the model's graph and the run's geometry alone, before any image:
    ``{"mode", "possible", "exact", "reason"}``. ``possible``: False when the mode, the input or the graph rules
    incremental inference out (``reason`` says why); True means a plan is built at the first image, checked
    against full passes and used when the cost model expects at least 1.3x (``auto``). ``exact``: False only
    for ``on`` with a graph whose arithmetic a plan cannot reproduce bit for bit (float16, quantised
    operators, rounding steps: ``reason``): then the maps are approximate."""
    from ..inference.incremental import NOT_BIT_FOR_BIT

    mode = options.incremental
    inexact = getattr(model, "inexact_arithmetic", None)
    decision = {"mode": mode, "possible": False, "exact": True, "reason": None}
    if mode == "off":
        decision["reason"] = "off"
    elif ndim != 2:
        decision["reason"] = "incremental inference covers 2-D image models"
    elif mode == "auto" and inexact is not None:
        decision["reason"] = f"{inexact}: {NOT_BIT_FOR_BIT}, so auto runs full passes (exact)"
    elif mode == "auto" and windows < INCREMENTAL_MIN_WINDOWS:
        decision["reason"] = f"too few windows ({windows} < {INCREMENTAL_MIN_WINDOWS}) to pay for the start-up"
    else:
        decision["possible"] = True
        if inexact is not None:
            decision["exact"] = False
            decision["reason"] = f"approximate: {inexact}: {NOT_BIT_FOR_BIT}"
    return decision


def window_scorer(
    model, options, head, sample, baseline, patch, windows, preprocessing, target, executor=None, stride=None
):
    """The engine's window scorer for this run (None: full passes in the engine's own loop), the run's
    ``params.incremental`` record, its notes (key -> one line, shown once per run) and where its occluded
    batches are built (``"host"`` or ``"device"``: see :func:`batches_choice`). ``windows``: the run's grid
    ((N, 2d) starts and sizes, see :func:`~occlude_cli.core.engine.window_grid`), or just its length;
    ``stride``: the grid's step (for the plan's cost model)."""
    on_gpu = getattr(model, "provider", "") == "CUDAExecutionProvider"
    if isinstance(baseline, np.ndarray) and preprocessing is not None:
        if on_gpu and options.incremental == "auto" and options.batches != "host" and executor is None:
            scorer, record, notes = None, {"mode": "auto", "used": False, "exact": True, "reason": ON_GPU}, {}
        else:
            scorer, record, notes = incremental_scorer(
                model, options, head, sample, baseline, patch, windows, preprocessing, target, stride=stride
            )
    else:
        if options.incremental == "on":
            raise RunWideError(f"incremental inference is not available here: {INPAINT}")
        scorer, record, notes = None, {"mode": options.incremental, "used": False, "exact": True, "reason": INPAINT}, {}
    if executor is not None and scorer is None:
        scorer = executor_scorer(executor, head)
    batches = "host"
    if scorer is None and batches_choice(options.batches, on_gpu, baseline) == "device":
        axes = preprocessing.spatial_axes if preprocessing is not None else (-2, -1)
        scorer, batches = device_scorer(model, head, sample, axes), "device"
    return scorer, record, notes, batches


def batches_choice(mode: str, on_gpu: bool, baseline) -> str:
    """Where the occluded batches are built: ``device`` (the model's session builds them from the image, the
    baseline and window boxes: :mod:`occlude_cli.loaders.device_batches`) or ``host`` (numpy, the engine's
    loop). ``auto`` builds them on the device when the model runs on CUDA: there, host-built batches cost more
    in copies and PCIe transfers than the GPU spends scoring them. On the CPU the host-built batch is as fast
    (measured: ``benchmarks/device_batches.py``), so ``auto`` keeps it. A per-window baseline (inpaint) is
    always built on the host; ``device`` asked for with one is an error."""
    if mode == "host":
        return "host"
    if not isinstance(baseline, np.ndarray):
        if mode == "device":
            raise OccludeError(
                f"batches built on the device need an array baseline, not {INPAINT}", params=("batches",)
            )
        return "host"
    return "device" if mode == "device" or on_gpu else "host"


def device_scorer(model: OnnxClassifier, head: Head, sample: np.ndarray, spatial_axes):
    """Windows scored by the model's session with the pre-graph in front (built once per sample shape)."""
    from ..loaders.device_batches import device_batches

    batches = device_batches(model, sample.shape, spatial_axes)

    def scorer(inputs, base, chunk, score, *, batch_size, spatial_axes, progress=None):
        return batches.score_windows(
            inputs, base, chunk, head.transform, batch_size=batch_size, spatial_axes=spatial_axes, progress=progress
        )

    return scorer


def task_incremental(options: ExplainOptions, task: str, executor=None) -> dict:
    """``params.incremental`` of a segmentation, detection or embedding run: full passes (the plans and a
    remote window executor serve classifier outputs); ``on`` is refused rather than ignored."""
    reason = f"incremental inference covers classifier outputs: task {task} runs full passes (exact)"
    if options.incremental == "on":
        raise OccludeError(
            f"incremental on is not available for task {task}: incremental inference covers classifier outputs "
            "(this task runs full passes, exact)",
            params=("incremental",),
        )
    if executor is not None:
        raise OccludeError(
            f"ray scores one image's windows in chunks for classifier outputs only, not for task {task}: give "
            "several inputs (each image then runs on one worker) or run without Ray",
            params=("ray",),
        )
    return {"mode": options.incremental, "used": False, "exact": True, "reason": reason}


def executor_scorer(executor, head: Head):
    """Windows scored elsewhere, in parallel chunks (``executor.score_windows``, e.g. a RayExecutor)."""

    def scorer(inputs, base, chunk, score, *, batch_size, spatial_axes, progress=None):
        return executor.score_windows(
            inputs,
            base,
            chunk,
            None,
            batch_size=batch_size,
            spatial_axes=spatial_axes,
            progress=progress,
            score_kind=head,
        )

    return scorer


def incremental_scorer(
    model: OnnxClassifier,
    options: ExplainOptions,
    head: Head,
    sample: np.ndarray,
    baseline: np.ndarray,
    patch,
    windows,
    preprocessing: Preprocessing,
    target: int,
    stride=None,
):
    """The engine's window scorer for incremental inference, or None; the JSON record; and the run's notes.

    A plan is built once per model, input shape and patch (kept on the model, so a folder run pays the
    start-up once) and reused: it only changes how windows are scored, never the result (checked at start-up
    against full passes, in the map's units: the explained score's drop). ``auto`` uses it only for graphs
    whose arithmetic a plan reproduces to float noise (decided from the graph, before any image), when the
    self-check passes and the cost model's estimate reaches 1.3x (deterministic: the same inputs always take
    the same path, so outputs stay byte-identical across runs), never by a clock. ``on`` uses it for any graph
    it can split: on a graph that rounds coarsely (float16, quantised) the map is approximate, and the error
    is measured on every image (``measured_error``) and noted. The record also holds the ``limit`` of exact
    incremental inference for the run's windows (:func:`run_limit`), when ``windows`` is the grid itself."""
    image = len(preprocessing.size) == 2 and len(sample.shape) == 3
    grid = windows if isinstance(windows, np.ndarray) else None
    decision = incremental_decision(model, options, len(grid) if grid is not None else int(windows), 2 if image else 3)
    mode = options.incremental
    record: dict = {"mode": mode, "used": False, "exact": True, "reason": decision["reason"]}
    notes: Dict[str, str] = {}
    if not decision["possible"]:
        if mode == "on":
            raise OccludeError(f"incremental inference is not available here: {record['reason']}")
        return None, record, notes
    limit = {"limit": run_limit(model, sample, preprocessing, grid)} if grid is not None else {}
    geometry = (tuple(patch), None if stride is None else tuple(stride))
    plan, reason, surprising, checked = _cached_plan(
        model, mode, head, sample, baseline, geometry, preprocessing, target
    )
    if plan is None:
        if mode == "on":  # a graph that cannot be split fails every input alike; a failed self-check, this one
            error = OccludeError if surprising else RunWideError
            raise error(f"incremental inference is not available for this model: {reason}")
        record.update({"reason": reason, **limit})
        if surprising:
            notes["incremental"] = f"incremental inference not used, full passes instead: {reason}"
        return None, record, notes
    described = plan.describe()
    record.update(
        {
            "used": True,
            "cuts": described.get("cuts"),
            "segment_strides": described.get("segment_strides"),
            "estimated_speedup": round(float(described.get("estimated_speedup") or 0.0), 3),
            **limit,
        }
    )
    if not plan.exact:
        notes["incremental"] = _approximate(plan, record, checked, head, sample, baseline, target)
    return _plan_scorer(plan, head), record, notes


def _transform(head: Head):
    def score(raw: np.ndarray) -> np.ndarray:
        return head.transform(np.asarray(raw).reshape(len(raw), -1))

    return score


def run_limit(model: OnnxClassifier, sample: np.ndarray, preprocessing: Preprocessing, windows: np.ndarray):
    """The limit of exact incremental inference for these windows (see :mod:`occlude_cli.inference.limit`), as
    the run's record says it, or None when the graph cannot be read (the run goes on without it)."""
    from ..inference.limit import run_limit as limit_record

    key = (tuple(sample.shape), preprocessing.layout, windows.tobytes())
    kept = model.__dict__.setdefault("_incremental_limits", {})
    if key not in kept:
        try:
            kept[key] = limit_record(
                model.path,
                [1, *sample.shape],
                windows,
                layout=preprocessing.layout,
                input_name=model.input.name,
                output_name=model.output.name,
                model_sha256=model.sha256,
            )
        except Exception:  # noqa: BLE001 -- onnx cannot read or infer the graph: no limit, never a failed run
            kept[key] = None
    return kept[key]


def _cached_plan(model, mode, head, sample, baseline, geometry, preprocessing, target) -> Tuple:
    """(plan or None, why not, whether that is worth a note, the first image's check of an approximate plan):
    built once per model, input shape, layout, patch, stride and mode, and kept on the model."""
    key = (tuple(sample.shape), preprocessing.layout, geometry, mode)
    cache = model.__dict__.setdefault("_incremental_plans", {})
    if key not in cache:
        started = time.perf_counter()
        plan, reason, surprising = _build(model, mode, head, sample, baseline, geometry, preprocessing, target)
        # an approximate plan's check on the first image, kept so that the first image is not measured twice
        checked = None
        if plan is not None and not plan.exact:
            checked = (sample.copy(), baseline.copy(), target, plan.check_error)
        cache[key] = (plan, reason, surprising, checked, time.perf_counter() - started)
    plan, reason, surprising, checked, build_s = cache[key]
    model.__dict__["_incremental_build_s"] = build_s
    return plan, reason, surprising, checked


def _build(model, mode, head, sample, baseline, geometry, preprocessing, target) -> Tuple[Any, Optional[str], bool]:
    """A plan for this model and patch (or None), why not, and whether that is surprising (a failed self-check
    or an unforeseen error: worth a note)."""
    from ..inference.incremental import IncrementalUnavailable, build_plan

    plan, reason, surprising = None, None, False
    try:
        plan = build_plan(
            model.path,
            [1, *sample.shape],
            layout=preprocessing.layout,
            baseline=baseline,
            sample=sample,
            window=geometry[0],
            stride=geometry[1],
            providers=model.providers,
            threads=model.threads,
            input_name=model.input.name,
            output_name=model.output.name,
            measure=False,
            max_plans=1,
            full_session=model.session,  # the reference for the self-check: no second session of the model
            model_sha256=model.sha256,  # the on-disk plan cache (OCCLUDE_CACHE_DIR; off when empty)
            max_chain=INCREMENTAL_MAX_CHAIN,
            score=_transform(head),
            target=target,
            allow_approximate=mode == "on",
        )
    except IncrementalUnavailable as exc:
        reason, surprising = str(exc), not exc.structural  # a failed self-check is worth a note
    except Exception as exc:  # noqa: BLE001 -- onnx, onnxruntime or an unforeseen graph: fall back, say why
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason, surprising = f"building the plan failed: {type(exc).__name__}: {text}".rstrip(": "), True
    estimate = float(plan.describe().get("estimated_speedup") or 0.0) if plan is not None else 0.0
    if plan is not None and mode == "auto" and estimate < INCREMENTAL_MIN_SPEEDUP:
        plan, reason = None, f"not worth it here (estimated speed-up {estimate:.2f} < {INCREMENTAL_MIN_SPEEDUP})"
    return plan, reason, surprising


def _approximate(plan, record: dict, checked, head: Head, sample, baseline, target: int) -> str:
    """An approximate plan: this image's measured error in ``record``; the run's note (with the first image's)."""
    same = (
        checked is not None
        and checked[2] == target
        and np.array_equal(checked[0], sample)
        and np.array_equal(checked[1], baseline)
    )
    error = float(checked[3]) if same else plan.measure_error(sample, baseline, score=_transform(head), target=target)
    record.update({"exact": False, "measured_error": float(f"{error:.4g}"), "checked_windows": plan.check_windows})
    first = float(checked[3]) if checked is not None else error
    return (
        f"the maps are approximate: the graph has {plan.inexact}, which incremental inference (required: "
        f"incremental on) cannot reproduce bit for bit; on {plan.check_windows} checked windows of the first "
        f"image the explained score's drop differs from full passes by up to {first:.2%} of the largest drop "
        "(a sample, not a bound: other windows may be further off; each image's own sample: "
        "params.incremental.measured_error in its record); incremental auto or off gives the exact map"
    )


def _plan_scorer(plan, head: Head):
    def scorer(inputs, base, chunk, score, *, batch_size, spatial_axes, progress=None):
        total = len(chunk)
        out = None
        for start, raw in plan.score_batches(inputs, base, chunk, batch_size=batch_size):
            scores = head.transform(np.asarray(raw).reshape(len(raw), -1))
            if out is None:
                out = np.empty((total, scores.shape[1]), dtype=np.float64)
            out[start : start + len(scores)] = scores
            if progress is not None:
                progress(min(start + batch_size, total), total)
        return out

    return scorer
