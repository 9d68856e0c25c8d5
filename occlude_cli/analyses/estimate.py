"""Before a run, and instead of one: what it would cost (:func:`estimate_run`, ``--dry-run``: forward passes
counted exactly, time from one timed batch) and how far each baseline moves the model off the input
(:func:`baseline_check`, ``--baseline-check``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union, cast

import numpy as np

from ..core.baselines import default_blur_sigma, parse_baseline
from ..core.engine import window_grid
from ..core.refine import refine_forward_passes
from ..errors import OccludeError
from ..loaders.images import Preprocessing
from ..loaders.model import OnnxClassifier
from ..loaders.volumes import VolumePreprocessing
from .options import ExplainOptions
from .plan import check_run, setup
from .scorers import incremental_decision, run_limit, task_incremental

# Baselines compared by baseline_check() when none are named.
CHECK_BASELINES = ("zero", "mean", "blur", "tissue", "p10", "noise")


def baseline_check(
    model: Union[str, Path, OnnxClassifier],
    image,
    baselines: Optional[Sequence[str]] = None,
    options: Optional[ExplainOptions] = None,
    *,
    copies: int = 16,
    preprocessing=None,
    labels: Optional[Sequence[str]] = None,
    **overrides,
) -> dict:
    """How far each baseline moves the model off the input: the same ``copies`` seeded random windows of the
    occlusion grid (patch and stride as for the map) are occluded with each baseline, and the change of the
    model's top-1 confidence (the score kind of the run) is measured. A baseline that keeps the input in
    distribution changes the score only where evidence is removed: a small mean change and few top-1 flips;
    a large mean change on random windows says the patch itself is what the model reacts to.

    Returns a JSON-ready dict: the target, its original score, the windows, and per baseline the mean change
    ``original - occluded`` (positive: the confidence drops), the mean ``|change|``, the largest ``|change|`` and the
    fraction of copies whose top-1 class differs from the original's.
    """
    s = setup(model, image, options, preprocessing, labels, overrides)
    if int(copies) != copies or copies < 1:
        raise OccludeError(f"copies must be at least 1, got {copies}", params=("copies",))
    sample = s.prepared.model_input
    if s.task is not None:  # a segmentation, detection or embedding run's own score and target
        head, score, original, top = s.task.head, s.task.score, s.task.original, s.task.main
    else:
        raw = s.model.run(sample[None])
        head = s.model.head(s.options.score, raw)
        score = s.model.scorer(head)
        original = head.transform(raw)[0]
        top = int(np.argmax(original))
    grid = window_grid(s.preprocessing.size, s.patch, s.stride, s.region)
    rng = np.random.default_rng(s.options.seed)
    chosen = grid[np.sort(rng.choice(len(grid), size=min(int(copies), len(grid)), replace=False))]
    wanted = list(baselines) if baselines else list(CHECK_BASELINES) + (["inpaint"] if len(s.patch) == 2 else [])
    results = [_baseline_change(s, parse_baseline(spec), chosen, score, original, top) for spec in wanted]
    return {
        "path": str(s.prepared.path) if s.prepared.path is not None else None,
        "target": {"index": top, "label": s.labels[top] if s.labels and top < len(s.labels) else None},
        "score": {"kind": head.kind, "original": float(original[top])},
        "patch": list(s.patch),
        "stride": list(s.stride),
        "seed": int(s.options.seed),
        "copies": int(len(chosen)),
        "windows": chosen.tolist(),
        "baselines": results,
    }


def _baseline_change(s, kind: str, chosen: np.ndarray, score, original: np.ndarray, top: int) -> dict:
    """One baseline of :func:`baseline_check`: the change of the top-1 score over the chosen windows."""
    from ..core.engine import score_windows

    options, sample = s.options, s.prepared.model_input
    blur_sigma = options.blur_sigma if options.blur_sigma is not None else default_blur_sigma(s.patch)
    batch_size = options.batch_size or s.model.default_batch_size(sample.nbytes)
    fill = s.modality.baseline(kind, s.prepared, s.patch, seed=options.seed, blur_sigma=blur_sigma)
    started = time.perf_counter()
    scores = score_windows(
        sample, fill, chosen, score, batch_size=batch_size, spatial_axes=s.preprocessing.spatial_axes
    )
    seconds = time.perf_counter() - started
    change = original[top] - scores[:, top]
    return {
        "baseline": kind,
        "mean_change": float(np.mean(change)),
        "mean_abs_change": float(np.mean(np.abs(change))),
        "max_abs_change": float(np.max(np.abs(change))),
        "top1_flips": float(np.mean(np.argmax(scores, axis=1) != top)),
        "seconds": seconds,
    }


def estimate_run(
    model: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Union[Preprocessing, VolumePreprocessing]] = None,
    labels: Optional[Sequence[str]] = None,
    scales: Sequence = (),
    metrics: bool = False,
    **overrides,
) -> dict:
    """What a run would cost, from one timed batch (after one warm-up batch), without running it.

    ``forward_passes`` counts every input the run sends through the model for one image: per map its
    unoccluded pass and one per window (``--refine``: the coarse grid and the refinement budget), once per
    patch size of ``scales`` (a patch-size study, :func:`explain_scales`), and with ``metrics`` the passes
    of :func:`occlude_cli.analyses.validate.faithfulness` per map. ``top_k`` and every-class maps cost nothing more.
    ``per_patch`` breaks the occlusion passes down by patch size. ``incremental``: what incremental inference
    decides from the graph (see :func:`incremental_decision`); the time is that of full passes, a run with
    incremental inference takes less."""
    from ..core.fidelity import faithfulness_forward_passes

    s = setup(model, image, options, preprocessing, labels, overrides)
    per_patch = [_patch_cost(s, size) for size in (list(scales) if len(scales) > 1 else [None])]
    windows = sum(int(g["windows"]) for g in per_patch)
    occlusion_passes = sum(int(g["forward_passes"]) for g in per_patch)
    pixels = int(np.prod(s.preprocessing.size[-2:]))
    metric_passes = len(per_patch) * faithfulness_forward_passes(pixels) if metrics else 0
    passes = occlusion_passes + metric_passes
    sample = s.prepared.model_input
    batch_size = s.options.batch_size or s.model.default_batch_size(sample.nbytes)
    batch = np.repeat(sample[None], min(batch_size, passes), axis=0)
    run = s.task.score if s.task is not None else s.model.run
    run(batch)
    timer = time.perf_counter()
    run(batch)
    per_pass = (time.perf_counter() - timer) / len(batch)
    return {
        "windows": windows,
        "forward_passes": passes,
        "occlusion_forward_passes": occlusion_passes,
        "metrics_forward_passes": metric_passes,
        "exact_forward_passes": windows + len(per_patch),
        "per_patch": per_patch,
        "batch_size": int(batch_size),
        "batch_note": getattr(s.model, "batch_note", None),  # why the model runs another batch than asked
        "patch": list(s.patch),
        "stride": list(s.stride),
        "seconds_per_forward_pass": per_pass,
        "estimated_s": per_pass * passes,
        # the first patch size's (each patch size of a study decides by its own windows)
        "incremental": (
            _incremental(s, int(per_patch[0]["windows"]))
            if s.task is None
            else {**task_incremental(s.options, s.task.task), "possible": False}
        ),
    }


def _incremental(s, windows: int) -> dict:
    """What incremental inference decides from the graph, with the limit of exact incremental inference for the
    run's windows (``limit``, see :func:`~occlude_cli.inference.limit.run_limit`) where a plan may be used."""
    decision = incremental_decision(s.model, s.options, windows, len(s.preprocessing.size))
    if decision["possible"] and isinstance(s.preprocessing, Preprocessing):
        grid = window_grid(s.preprocessing.size, s.patch, s.stride, s.region)
        decision["limit"] = run_limit(s.model, s.prepared.model_input, s.preprocessing, grid)
    return decision


def _patch_cost(s, size) -> dict:
    """Windows and forward passes of one patch size (None: the run's own)."""
    options = s.options
    p, st = (
        (s.patch, s.stride)
        if size is None
        else check_run(
            ExplainOptions(**{**options.__dict__, "patch": size}), cast(Any, s.preprocessing), s.model, s.labels
        )
    )
    count = len(window_grid(s.preprocessing.size, p, st, s.region))
    passes = (
        refine_forward_passes(s.preprocessing.size, p, st, s.region, *options.refine_settings)
        if options.refine
        else count + 1
    )
    return {"patch": list(p), "stride": list(st), "windows": count, "forward_passes": passes}
