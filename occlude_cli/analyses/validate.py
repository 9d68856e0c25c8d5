"""Validating explanations: faithfulness of a map and its agreement with another method's map (region checks:
:mod:`.checks`).

The glue between :func:`~occlude_cli.explain` and the pure metrics in :mod:`occlude_cli.core.metrics` and
:mod:`occlude_cli.core.fidelity`: the deletion / insertion curves, infidelity, sufficiency and completeness with
the explanation's own model, score and baseline, and map comparisons. Writes nothing: the documents go out
through :mod:`occlude_cli.outputs`. Everything here works at model-input resolution, the grid the occlusion map
lives on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..core.baselines import default_blur_sigma, parse_baseline
from ..core.fidelity import (
    DEFAULT_FRACTIONS,
    bootstrap_mean_ci,
    completeness_curve,
    infidelity_result,
    pixel_counts,
    sufficiency_curve,
)
from ..core.metrics import (
    DEFAULT_STEPS,
    deletion_curve,
    finite_or_none,
    insertion_curve,
    pearson,
    spearman,
    top_fraction_iou,
)
from ..errors import OccludeError
from ..loaders.images import PreparedImage, Preprocessing
from ..loaders.maps import map_on_model_grid, read_saliency_map, region_mask, resize_map
from ..loaders.medical import Volume
from ..loaders.model import OnnxClassifier
from ..loaders.volumes import PreparedVolume
from .checks import region_quality
from .explain import explain
from .explanation import Explanation
from .modality import input_baseline
from .options import ExplainOptions

DEFAULT_TOP_FRACTION = 0.1
TIE_RTOL = 1e-6  # two numbers closer than this (relative) are a tie: a map saved as float32 (STEM.npy) vs itself


def verdict(ours, theirs, *, lower: bool) -> Optional[str]:
    """Which map a metric favours: ``occlusion`` (``ours``), ``other`` or ``tie`` (within :data:`TIE_RTOL`, so
    a map compared with its own float32 copy never names a winner); None when either number is undefined."""
    if ours is None or theirs is None or not (np.isfinite(ours) and np.isfinite(theirs)):
        return None
    if np.isclose(ours, theirs, rtol=TIE_RTOL, atol=1e-12):
        return "tie"
    return "occlusion" if (ours < theirs) == lower else "other"


json_number = finite_or_none


# ------------------------------------------------------------------------------- faithfulness


@dataclass
class _CurveSetup:
    score: Callable[[np.ndarray], np.ndarray]
    deletion_kind: str
    deletion_baseline: np.ndarray
    insertion_kind: str
    insertion_baseline: np.ndarray
    batch_size: int


def _curve_setup(
    explanation: Explanation,
    model: OnnxClassifier,
    deletion_baseline: Optional[str],
    insertion_baseline: Optional[str],
    batch_size: Optional[int],
) -> _CurveSetup:
    """The explanation's own score function and baselines (the run's --baseline unless overridden)."""
    e = explanation
    sample = e.image.model_input
    # the explanation's own score function (its head was resolved once, by explain())
    score = (
        e.score
        if e.score is not None
        else model.scorer(e.head or model.head(e.params.get("score", "auto"), model.run(sample[None])))
    )
    params = e.params
    sigma = params.get("blur_sigma") or default_blur_sigma(tuple(params.get("patch") or (1, 1)))

    def baseline(spec: Optional[str]) -> Tuple[str, np.ndarray]:
        kind = parse_baseline(spec if spec is not None else params.get("baseline", "zero"))
        return kind, input_baseline(e.image, kind, seed=int(params.get("seed", 0)), blur_sigma=sigma)

    d_kind, d_array = baseline(deletion_baseline)
    i_kind, i_array = baseline(insertion_baseline)
    size = int(batch_size or params.get("batch_size") or model.default_batch_size(sample.nbytes))
    if size < 1:
        raise OccludeError(f"batch_size must be at least 1, got {size}")
    return _CurveSetup(score, d_kind, d_array, i_kind, i_array, size)


def _curves(
    explanation: Explanation,
    setup: _CurveSetup,
    importance: np.ndarray,
    steps: int,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict:
    e = explanation
    axes = e.image.preprocessing.spatial_axes
    deletion = deletion_curve(
        e.image.model_input,
        setup.deletion_baseline,
        importance,
        setup.score,
        e.target,
        steps=steps,
        spatial_axes=axes,
        batch_size=setup.batch_size,
        progress=progress,
    )
    insertion = insertion_curve(
        e.image.model_input,
        setup.insertion_baseline,
        importance,
        setup.score,
        e.target,
        steps=steps,
        spatial_axes=axes,
        batch_size=setup.batch_size,
        progress=progress,
    )
    return {
        "fractions": [float(v) for v in deletion.fractions],
        "deletion": [float(v) for v in deletion.scores],
        "insertion": [float(v) for v in insertion.scores],
        "deletion_auc": deletion.auc,
        "insertion_auc": insertion.auc,
    }


MAP_KINDS = ("attribution", "gradient")


def check_fractions(fractions: Sequence[float]) -> Tuple[float, ...]:
    """Top-k fractions for sufficiency and completeness, checked once (in (0, 1], increasing)."""
    values = tuple(float(f) for f in fractions)
    pixel_counts(1000, values)
    return values


def fidelity(
    explanation: Explanation,
    model: OnnxClassifier,
    maps: dict,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    map_kinds: Optional[dict] = None,
    baseline: Optional[str] = None,
    batch_size: Optional[int] = None,
) -> dict:
    """Infidelity, sufficiency and completeness of each map in ``maps`` (name -> (H, W) map at model-input
    resolution) for the explanation's target, with its model, score and baseline (``baseline`` overrides).

    Infidelity uses the occlusion windows as the perturbations and their measured drops (no forward pass;
    for a refined run only the measured windows); ``map_kinds[name]`` is ``attribution`` (the map's sum over a
    window predicts the drop) or ``gradient`` (the map times ``input - baseline`` does). Sufficiency and
    completeness cost one forward pass per fraction and map, plus one for the all-baseline input.
    Returns the JSON-ready ``fidelity`` document (README, "How faithful is a map?").
    """
    fractions = check_fractions(fractions)
    kinds = dict(map_kinds or {})
    setup = _curve_setup(explanation, model, baseline, baseline, batch_size)
    e = explanation
    occ, target = e.occlusion, e.target
    measured = occ.measured if occ.measured is not None else np.ones(len(occ.windows), dtype=bool)
    windows, drops = occ.windows[measured], occ.drops([target])[measured, 0]
    sample = e.image.model_input
    axes = e.image.preprocessing.spatial_axes
    base_input = setup.deletion_baseline
    original = float(occ.original_scores[target])
    base_score = float(setup.score(base_input[None])[0, target])
    perturbation = sample.astype(np.float64) - base_input.astype(np.float64)
    passes = 1
    out: dict = {}
    for name, values in maps.items():
        kind = kinds.get(name, "attribution")
        if kind not in MAP_KINDS:
            raise OccludeError(f"map kind must be one of {', '.join(MAP_KINDS)}, got {kind!r}", params=("map_kind",))
        values = np.asarray(values, dtype=np.float64)
        extra: dict[str, Any] = (
            {"perturbation": perturbation, "spatial_axes": axes}
            if kind == "gradient"
            else {"spatial_axes": tuple(range(values.ndim))}  # one value per pixel (voxel) of the map
        )
        plain = infidelity_result(values, windows, drops, **extra)
        fitted = infidelity_result(values, windows, drops, scale_invariant=True, **extra)
        common: dict[str, Any] = dict(
            fractions=fractions,
            spatial_axes=axes,
            batch_size=setup.batch_size,
            original_score=original,
            baseline_score=base_score,
        )
        suff = sufficiency_curve(sample, base_input, values, setup.score, target, **common)
        comp = completeness_curve(sample, base_input, values, setup.score, target, **common)
        passes += 2 * len(fractions)
        out[name] = {
            "infidelity": {
                "value": json_number(plain.value),
                "scale_invariant": json_number(fitted.value),
                "scale": json_number(fitted.scale),
                "unexplained": json_number(fitted.unexplained),
                "null_value": json_number(fitted.null_value),
                "mode": kind,
                "windows_used": int(fitted.used),
                "windows_skipped": int(fitted.skipped),
            },
            "sufficiency": _top_k_record(suff, "kept"),
            "completeness": _top_k_record(comp, "removed"),
        }
    return {
        "target": target,
        "score": e.score_kind,
        "baseline": setup.deletion_kind,
        "original_score": json_number(original),
        "baseline_score": json_number(base_score),
        "fractions": list(fractions),
        "forward_passes": passes,
        "maps": out,
    }


def faithfulness(
    explanation: Explanation,
    model: OnnxClassifier,
    *,
    importance: Optional[np.ndarray] = None,
    steps: int = DEFAULT_STEPS,
    deletion_baseline: Optional[str] = None,
    insertion_baseline: Optional[str] = None,
    batch_size: Optional[int] = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict:
    """Deletion and insertion curves of a map (the explanation's own map unless ``importance`` is given)
    for the explanation's target, with its score kind, model and baseline: what ``run --metrics`` adds.

    Returns a JSON-ready dict: ``deletion_auc`` (lower is better), ``insertion_auc`` (higher is better),
    ``steps``, ``score``, the baselines used, and the curves (``fractions``, ``deletion``, ``insertion``).
    ``fidelity``: infidelity, sufficiency and completeness of the map (see :func:`fidelity`).
    Costs 2 * (steps + 1) forward passes, plus 2 per fraction and 1 for the fidelity curves.
    """
    setup = _curve_setup(explanation, model, deletion_baseline, insertion_baseline, batch_size)
    values = explanation.map if importance is None else np.asarray(importance, dtype=np.float64)
    curves = _curves(explanation, setup, values, steps)
    fid = fidelity(
        explanation,
        model,
        {"occlusion": values},
        fractions=fractions,
        baseline=deletion_baseline,
        batch_size=batch_size,
    )
    return {
        "fidelity": fid,
        "deletion_auc": curves["deletion_auc"],
        "insertion_auc": curves["insertion_auc"],
        "steps": len(curves["fractions"]) - 1,
        "score": explanation.score_kind,
        "deletion_baseline": setup.deletion_kind,
        "insertion_baseline": setup.insertion_kind,
        "fractions": curves["fractions"],
        "deletion": curves["deletion"],
        "insertion": curves["insertion"],
    }


def compare_maps(
    explanation: Explanation,
    other,
    model: OnnxClassifier,
    *,
    steps: int = DEFAULT_STEPS,
    top_fraction: float = DEFAULT_TOP_FRACTION,
    deletion_baseline: Optional[str] = None,
    insertion_baseline: Optional[str] = None,
    batch_size: Optional[int] = None,
    other_name: Optional[str] = None,
    other_shape: Optional[Sequence[int]] = None,
    fractions: Optional[Sequence[float]] = DEFAULT_FRACTIONS,
    other_kind: str = "attribution",
    region: Optional[np.ndarray] = None,
) -> dict:
    """Compare another method's map with the occlusion map of the same model, image and target.

    ``other`` is (H, W) at model-input resolution (see :func:`load_saliency_map`). Returns the JSON-ready
    comparison: ``agreement`` (pearson, spearman, top-fraction IoU over the pixels computed in both),
    ``curves`` (deletion and insertion for each map, same baselines and steps), ``better`` (which map
    has the lower deletion AUC / higher insertion AUC) and ``quality`` (each map's sparseness and complexity and,
    with a ``region`` mask on the model grid, its relevance mass and rank accuracy; Quantus' definitions).
    """
    e = explanation
    occ_map = e.map
    other = np.asarray(other, dtype=np.float64)
    if other.shape != occ_map.shape:
        raise OccludeError(
            f"the other map is {'x'.join(map(str, other.shape))} but the occlusion map is "
            f"{'x'.join(map(str, occ_map.shape))}: resize it with load_saliency_map (volumes: map_on_model_grid)"
        )
    if not 0 < top_fraction <= 1:
        raise OccludeError(f"top_fraction must be in (0, 1], got {top_fraction}", params=("top_fraction",))
    if steps < 1:
        raise OccludeError(f"steps must be at least 1, got {steps}", params=("steps",))
    both = np.isfinite(occ_map) & np.isfinite(other)
    if not both.any():
        raise OccludeError("the two maps share no computed pixel")
    if region is not None and np.asarray(region).shape != occ_map.shape:
        raise OccludeError(f"region mask shape {np.asarray(region).shape} differs from the map's {occ_map.shape}")
    setup = _curve_setup(e, model, deletion_baseline, insertion_baseline, batch_size)
    ours = _curves(e, setup, occ_map, steps)
    theirs = _curves(e, setup, other, steps)
    fid = None
    if fractions:
        fid = fidelity(
            e,
            model,
            {"occlusion": occ_map, "other": other},
            fractions=fractions,
            map_kinds={"other": other_kind},
            baseline=deletion_baseline,
            batch_size=batch_size,
        )

    def curve_record(c: dict) -> dict:
        return {
            "deletion_auc": c["deletion_auc"],
            "insertion_auc": c["insertion_auc"],
            "deletion": c["deletion"],
            "insertion": c["insertion"],
        }

    document = {
        **e.header(),
        "params": e.params,
        "other_map": {
            "name": other_name,
            "shape": [int(v) for v in (other_shape if other_shape is not None else other.shape)],
            "not_computed_pixels": int(np.count_nonzero(~np.isfinite(other))),
        },
        "agreement": {
            "pearson": json_number(pearson(occ_map, other)),
            "spearman": json_number(spearman(occ_map, other)),
            "top_fraction": float(top_fraction),
            "top_iou": json_number(top_fraction_iou(occ_map, other, top_fraction)),
            "pixels": int(np.count_nonzero(both)),
        },
        "curves": {
            "steps": len(ours["fractions"]) - 1,
            "deletion_baseline": setup.deletion_kind,
            "insertion_baseline": setup.insertion_kind,
            "fractions": ours["fractions"],
            "occlusion": curve_record(ours),
            "other": curve_record(theirs),
        },
        "better": {
            "deletion": verdict(ours["deletion_auc"], theirs["deletion_auc"], lower=True),
            "insertion": verdict(ours["insertion_auc"], theirs["insertion_auc"], lower=False),
        },
        "fidelity": {**fid, "better": _fidelity_verdicts(fid)} if fid else fid,
        "quality": _quality(occ_map, other, region),
    }
    return _without_rankings(document, [n for n, m in (("occlusion", occ_map), ("other", other)) if _flat(m[both])])


def _flat(values: np.ndarray) -> bool:
    return bool(values.size) and float(np.max(values)) == float(np.min(values))


def _without_rankings(document: dict, constant: List[str]) -> dict:
    """A comparison where a map is constant over the pixels both maps compute: it ranks no pixel above another,
    so its curves and top-k sets follow the tie order alone. Its top IoU and every verdict are left undefined
    (None), ``constant`` names the map(s) and ``warnings`` says so."""
    document["constant"] = constant
    document["warnings"] = []
    if not constant:
        return document
    names = {"occlusion": "the occlusion map", "other": f"the other map ({document['other_map']['name'] or 'other'})"}
    document["warnings"].append(
        f"{' and '.join(names[c] for c in constant)} {'is' if len(constant) == 1 else 'are'} constant over the "
        f"{document['agreement']['pixels']} pixels both maps compute: a constant map ranks no pixel above another, "
        "so no top IoU and no verdict (which map is better) is given"
    )
    document["agreement"]["top_iou"] = None
    for part in (document, document.get("fidelity") or {}, document["quality"]):
        part["better"] = {key: None for key in part.get("better") or {}}
    return document


def _fidelity_verdicts(fid: dict) -> dict:
    """Which map each faithfulness number favours (infidelity: lower is better; the top-k shares: higher)."""
    ours, theirs = fid["maps"]["occlusion"], fid["maps"]["other"]
    return {
        metric: verdict(ours[metric][key], theirs[metric][key], lower=lower)
        for metric, key, lower in (
            ("infidelity", "unexplained", True),
            ("sufficiency", "mean_kept", False),
            ("completeness", "mean_removed", False),
        )
    }


def _quality(occ_map: np.ndarray, other: np.ndarray, region: Optional[np.ndarray]) -> dict:
    """Both maps' Quantus-style numbers and, with a region, which map its accuracies favour (higher is better)."""
    ours, theirs = region_quality(occ_map, region), region_quality(other, region)
    keys = ("relevance_mass_accuracy", "relevance_rank_accuracy") if region is not None else ()
    return {
        "region_pixels": int(np.count_nonzero(region)) if region is not None else None,
        "occlusion": ours,
        "other": theirs,
        "better": {key: verdict(ours[key], theirs[key], lower=False) for key in keys},
    }


# ------------------------------------------------------------------------------- compare, per file


def compare_file(
    model: OnnxClassifier,
    image_path,
    other_path,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
    region: Optional[dict] = None,
    **compare_options,
) -> Tuple[Explanation, np.ndarray, dict]:
    """Explain ``image_path`` and compare its map with the map in ``other_path`` (read, then resized onto
    the model-input grid like the image): (explanation, other map at model resolution, comparison).

    For a 3-D model the other map is a volume (see :func:`occlude_cli.loaders.maps.read_saliency_map` with
    ``dims=(3,)``): a (D, H, W) ``.npy`` in occlude's layout covering the input (any resolution), or a NIfTI
    map placed through its affine. ``region``: ``{"box": (x0, y0, x1, y1)}`` or ``{"mask": path}`` in original
    image pixels (photos only), for the relevance mass and rank accuracy."""
    volume_model = len(model.input_shape) == 5
    raw = read_saliency_map(other_path, dims=(3,) if volume_model else (2,))  # a bad map fails before inference
    explanation = explain(model, image_path, options, preprocessing=preprocessing, labels=labels)
    if isinstance(explanation.image, PreparedVolume) and explanation.image.ndim == 3:
        other = map_on_model_grid(raw, explanation.image)
    else:
        other = resize_map(
            raw,
            explanation.image.preprocessing.size,
            original_size=explanation.image.original_size,
            crop_box=explanation.image.crop_box,
        )
    mask = None
    if region is not None:
        if not isinstance(explanation.image, PreparedImage):
            raise OccludeError("a region (box, mask) for compare is for photos, not medical inputs", params=("mask",))
        mask = region_mask(explanation.image, **region)
    comparison = compare_maps(
        explanation,
        other,
        model,
        region=mask,
        other_name=name or str(getattr(other_path, "name", other_path)),
        other_shape=raw.data.shape if isinstance(raw, Volume) else raw.shape,
        **compare_options,
    )
    return explanation, other, comparison


# Per-image numbers of a comparison that a dataset summary averages: (key, path into the comparison).
COMPARE_METRICS = (
    ("pearson", ("agreement", "pearson")),
    ("spearman", ("agreement", "spearman")),
    ("top_iou", ("agreement", "top_iou")),
    ("occlusion.deletion_auc", ("curves", "occlusion", "deletion_auc")),
    ("other.deletion_auc", ("curves", "other", "deletion_auc")),
    ("occlusion.insertion_auc", ("curves", "occlusion", "insertion_auc")),
    ("other.insertion_auc", ("curves", "other", "insertion_auc")),
    ("occlusion.infidelity_unexplained", ("fidelity", "maps", "occlusion", "infidelity", "unexplained")),
    ("other.infidelity_unexplained", ("fidelity", "maps", "other", "infidelity", "unexplained")),
    ("occlusion.sufficiency", ("fidelity", "maps", "occlusion", "sufficiency", "mean_kept")),
    ("other.sufficiency", ("fidelity", "maps", "other", "sufficiency", "mean_kept")),
    ("occlusion.completeness", ("fidelity", "maps", "occlusion", "completeness", "mean_removed")),
    ("other.completeness", ("fidelity", "maps", "other", "completeness", "mean_removed")),
    *(
        (f"{which}.{key}", ("quality", which, key))
        for key in ("sparseness", "complexity", "relevance_mass_accuracy", "relevance_rank_accuracy")
        for which in ("occlusion", "other")
    ),
)


def comparison_numbers(comparison: dict) -> dict:
    """The per-image numbers of :data:`COMPARE_METRICS` (None where a metric is undefined or absent)."""
    row = {}
    for key, path in COMPARE_METRICS:
        value: Any = comparison
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        row[key] = json_number(value)
    return row


def compare_dataset(rows: Sequence[dict], *, n: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Dataset means with bootstrap confidence intervals of the per-image numbers (see
    :func:`comparison_numbers`), and of the paired differences other - occlusion for each metric both maps
    have. Images where a metric is undefined are left out of that metric and counted."""
    summary: dict = {"images": len(rows), "confidence": confidence, "metrics": {}, "difference": {}}

    def stats(values: List[Optional[float]]) -> dict:
        finite = [v for v in values if v is not None]
        if not finite:
            return {"mean": None, "ci": [None, None], "n": 0, "undefined": len(values)}
        mean, lo, hi = bootstrap_mean_ci(finite, n=n, confidence=confidence, seed=seed)
        return {
            "mean": json_number(mean),
            "ci": [json_number(lo), json_number(hi)],
            "n": len(finite),
            "undefined": len(values) - len(finite),
        }

    for key, _ in COMPARE_METRICS:
        summary["metrics"][key] = stats([r.get(key) for r in rows])
        if key.startswith("other."):
            metric = key[len("other.") :]
            pairs = [(r.get(key), r.get("occlusion." + metric)) for r in rows]
            summary["difference"][metric] = stats(
                [a - b if a is not None and b is not None else None for a, b in pairs]
            )
    return summary


def _top_k_record(curve, relative: str) -> dict:
    """The JSON record of a sufficiency or completeness curve; ``relative`` names its relative scores
    ("kept" or "removed")."""
    return {
        "pixels": [int(v) for v in curve.pixels],
        "scores": [json_number(v) for v in curve.scores],
        relative: [json_number(v) for v in curve.relative],
        f"mean_{relative}": json_number(curve.mean_relative),
        "aopc": json_number(curve.aopc),
    }
