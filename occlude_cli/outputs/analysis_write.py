"""Files of the analysis commands (layers, bias, stability): JSON documents, CSV tables and PNGs, every one
written atomically through :mod:`occlude_cli.outputs.write`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..analyses.bias import BiasRow, BiasSummary
from ..analyses.explanation import SCHEMA_VERSION
from ..analyses.layers import ChannelImportance, ChannelSummary, LayerModel, SpatialOcclusion, upsample_to_input
from ..analyses.stability import StabilityResult
from ..loaders.images import PreparedImage
from ..pictures.charts import activation_maps_png, bias_png, channel_bars_png, stability_png, upsampled_title
from ..pictures.render import model_grey, overlay_png
from .records import json_number
from .write import atomic_write_bytes, atomic_write_json, csv_bytes, npy_bytes

LAYER_FIELDS = [
    "rank",
    "channel",
    "mean_drop",
    "std_drop",
    "median_drop",
    "min_drop",
    "max_drop",
    "flip_rate",
    "mean_activation",
    "images",
]
LAYER_IMAGE_FIELDS = ["image", "target", "label", "channel", "drop", "flipped", "activation"]
BIAS_FIELDS = [
    "path",
    "status",
    "target",
    "label",
    "predicted",
    "original_score",
    "occluded_score",
    "drop",
    "flipped",
    "occluded_class",
    "region_pixels",
    "control_drop",
    "control_flip_rate",
    "control_overlaps",
    "error",
]
BIAS_CLASS_FIELDS = [
    "class",
    "label",
    "images",
    "mean_drop",
    "mean_drop_ci_low",
    "mean_drop_ci_high",
    "median_drop",
    "flip_rate",
    "flip_rate_ci_low",
    "flip_rate_ci_high",
    "control_mean_drop",
    "control_flip_rate",
    "excess_drop",
]
TRIAL_FIELDS = ["trial", "spearman", "top_iou", "predicted", "flipped", "target_score"]


def _number(value):
    return json_number(float(value)) if value is not None else None


# ------------------------------------------------------------------------------------------------ layers


def _channel_rows(summary: ChannelSummary, number) -> List[dict]:
    """One row per channel, most important first; ``number`` converts each value (JSON-safe or plain)."""
    return [
        {
            "rank": rank + 1,
            "channel": int(summary.channels[i]),
            "mean_drop": number(summary.mean[i]),
            "std_drop": number(summary.std[i]),
            "median_drop": number(summary.median[i]),
            "min_drop": number(summary.minimum[i]),
            "max_drop": number(summary.maximum[i]),
            "flip_rate": number(summary.flip_rate[i]),
            "mean_activation": number(summary.activation[i]),
        }
        for rank, i in enumerate(summary.ranking())
    ]


def layers_document(
    layer: LayerModel, summary: ChannelSummary, results: Sequence[ChannelImportance], settings: dict
) -> dict:
    """The JSON of `occlude layers`: the cut, the settings, per-channel aggregates (ranked), per class, and
    per image the top channels."""
    channels = _channel_rows(summary, _number)
    per_class = {
        str(cls): {
            "label": entry["label"],
            "images": entry["images"],
            "top_channels": [
                {"channel": int(summary.channels[i]), "mean_drop": _number(entry["mean"][i])}
                for i in np.argsort(-entry["mean"], kind="stable")[:10]
            ],
        }
        for cls, entry in summary.per_class.items()
    }
    images = [
        {
            "path": r.path,
            "target": r.target,
            "label": r.label,
            "score_kind": r.score_kind,
            "original_score": _number(r.original_score),
            "suffix_passes": r.suffix_passes,
            "seconds": _number(r.seconds) if settings.get("timing", True) else None,
            "top_channels": [{"channel": int(r.channels[i]), "drop": _number(r.drops[i])} for i in r.ranking()[:10]],
        }
        for r in results
    ]
    return {
        "schema": SCHEMA_VERSION,
        "kind": "layers",
        "layer": layer.describe(),
        "settings": settings,
        "images": summary.images,
        "channels": channels,
        "per_class": per_class,
        "per_image": images,
    }


def write_layers(
    out: Path,
    layer: LayerModel,
    summary: ChannelSummary,
    results: Sequence[ChannelImportance],
    settings: dict,
    activation_panels: Sequence = (),
    top: int = 10,
) -> List[Path]:
    """layers.json, layers.csv (one row per channel, most important first), layers_images.csv (one row per
    image and channel), layers.png (bar chart) and, given panels, activations.png."""
    out = Path(out)
    rows = [{**row, "images": summary.images} for row in _channel_rows(summary, float)]
    per_image = [
        {
            "image": r.path,
            "target": r.target,
            "label": r.label,
            "channel": int(c),
            "drop": float(d),
            "flipped": bool(f),
            "activation": float(r.activation[c]),
        }
        for r in results
        for c, d, f in zip(r.channels, r.drops, r.flips)
    ]
    kind = results[0].score_kind if results else "probability"
    subtitle = (
        f"{summary.images} image(s), replacement {summary.replacement}, {len(summary.channels)} channel(s) "
        f"of shape {list(layer.feature_shape)}"
    )
    written = [
        atomic_write_json(out / "layers.json", layers_document(layer, summary, results, settings)),
        atomic_write_bytes(out / "layers.csv", csv_bytes(LAYER_FIELDS, rows)),
        atomic_write_bytes(out / "layers_images.csv", csv_bytes(LAYER_IMAGE_FIELDS, per_image)),
        atomic_write_bytes(
            out / "layers.png",
            channel_bars_png(
                summary.channels,
                summary.mean,
                summary.std,
                title=f"channel importance at {layer.tensor}",
                subtitle=subtitle,
                top=top,
                score_kind=kind,
            ),
        ),
    ]
    if activation_panels:
        written.append(
            atomic_write_bytes(
                out / "activations.png",
                activation_maps_png(
                    activation_panels, title=f"where the most important channels of {layer.tensor} respond"
                ),
            )
        )
    return written


def spatial_document(result: SpatialOcclusion, timing: bool = True) -> dict:
    """STEM.spatial.json's document: the windows' drops on the feature grid (in feature cells)."""
    return {
        "schema": SCHEMA_VERSION,
        "kind": "layers.spatial",
        "image": result.path,
        "tensor": result.tensor,
        "target": {"index": result.target, "label": result.label},
        "score_kind": result.score_kind,
        "original_score": _number(result.occlusion.original_scores[result.target]),
        "grid": list(result.map.shape),
        "patch": list(result.patch),
        "stride": list(result.stride),
        "replacement": result.replacement,
        "forward_passes": result.occlusion.forward_passes,
        "seconds": _number(result.seconds) if timing else None,
        # a 3-D feature grid's map is in STEM.spatial.npy only
        "map": [[_number(v) for v in row] for row in np.atleast_2d(result.map)] if result.map.ndim <= 2 else None,
    }


def write_spatial(
    out: Path, stem: str, result: SpatialOcclusion, prepared: PreparedImage, timing: bool = True
) -> List[Path]:
    """STEM.spatial.npy (feature-grid map), STEM.spatial.png (the map stretched over the image) and
    STEM.spatial.json (windows' drops in feature cells)."""
    out = Path(out)
    size = prepared.preprocessing.size
    on_input = upsample_to_input(result.map, size) if result.map.ndim == 2 else None
    title = upsampled_title(
        result.label, result.target, result.score_kind, float(result.occlusion.original_scores[result.target])
    )
    subtitle = (
        f"feature-map occlusion at {result.tensor}: grid {'x'.join(map(str, result.map.shape))}, "
        f"patch {'x'.join(map(str, result.patch))} cells, replacement {result.replacement}"
    )
    document = spatial_document(result, timing)
    written = [
        atomic_write_bytes(out / f"{stem}.spatial.npy", npy_bytes(result.map.astype(np.float32))),
        atomic_write_json(out / f"{stem}.spatial.json", document, command=False),
    ]
    if on_input is not None:
        written.append(
            atomic_write_bytes(
                out / f"{stem}.spatial.png",
                overlay_png(prepared.original, on_input, prepared.crop_box, title, subtitle),
            )
        )
    return written


# -------------------------------------------------------------------------------------------------- bias


def bias_document(rows: Sequence[BiasRow], summary: Optional[BiasSummary], settings: dict) -> dict:
    def row(r: BiasRow) -> dict:
        return {k: (_number(getattr(r, k)) if isinstance(getattr(r, k), float) else getattr(r, k)) for k in BIAS_FIELDS}

    counts: Dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    document = {"schema": SCHEMA_VERSION, "kind": "bias", "settings": settings, "counts": counts}
    if summary is not None:
        document.update(
            {
                "passed": summary.passed,
                "reasons": summary.reasons,
                "overall": _numbers(summary.overall),
                "per_class": {str(k): _numbers(v) for k, v in summary.per_class.items()},
                "statistics": summary.settings,
            }
        )
    document["images"] = [row(r) for r in rows]
    return document


def _numbers(group: dict) -> dict:
    out = {}
    for key, value in group.items():
        if isinstance(value, float):
            out[key] = _number(value)
        elif isinstance(value, list):
            out[key] = [_number(v) if isinstance(v, float) else v for v in value]
        else:
            out[key] = value
    return out


def write_bias(out: Path, rows: Sequence[BiasRow], summary: Optional[BiasSummary], settings: dict) -> List[Path]:
    """bias.json, bias.csv (one row per image), bias_classes.csv (one row per class, then 'all') and bias.png."""
    out = Path(out)
    table = [{k: getattr(r, k) for k in BIAS_FIELDS} for r in rows]
    written = [
        atomic_write_json(out / "bias.json", bias_document(rows, summary, settings)),
        atomic_write_bytes(out / "bias.csv", csv_bytes(BIAS_FIELDS, table)),
    ]
    if summary is None:
        return written
    groups = [(str(k), v) for k, v in summary.per_class.items()] + [("all", {**summary.overall, "label": None})]
    class_rows = []
    for name, g in groups:
        class_rows.append(
            {
                "class": name,
                "label": g.get("label"),
                "images": g["images"],
                "mean_drop": g["mean_drop"],
                "mean_drop_ci_low": g["mean_drop_ci"][0],
                "mean_drop_ci_high": g["mean_drop_ci"][1],
                "median_drop": g["median_drop"],
                "flip_rate": g["flip_rate"],
                "flip_rate_ci_low": g["flip_rate_ci"][0],
                "flip_rate_ci_high": g["flip_rate_ci"][1],
                "control_mean_drop": g["control_mean_drop"],
                "control_flip_rate": g["control_flip_rate"],
                "excess_drop": g["excess_drop"],
            }
        )
    ok = [r for r in rows if r.status == "ok"]
    kind = ok[0].score_kind or "probability" if ok else "probability"
    written.append(atomic_write_bytes(out / "bias_classes.csv", csv_bytes(BIAS_CLASS_FIELDS, class_rows)))
    written.append(
        atomic_write_bytes(
            out / "bias.png",
            bias_png(
                [float(r.drop or 0.0) for r in ok],
                [d for r in ok for d in r.control_drops],
                summary.overall,
                title=f"bias test: {settings.get('region', 'region')} occluded in {len(ok)} image(s) "
                f"(baseline {settings.get('baseline')})",
                score_kind=kind,
            ),
        )
    )
    return written


# --------------------------------------------------------------------------------------------- stability


def stability_document(result: StabilityResult, timing: bool = True) -> dict:
    e = result.explanation
    document = e.header()
    document.update(
        {
            "kind": "stability",
            "params": e.params,
            "noise": result.noise(),
            "summary": result.summary(),
            "trials": [
                {
                    "trial": k + 1,
                    "spearman": _number(t.spearman),
                    "top_iou": _number(t.top_iou),
                    "predicted": t.predicted,
                    "flipped": t.flipped,
                    "target_score": _number(t.target_score),
                }
                for k, t in enumerate(result.trials)
            ],
        }
    )
    summary = document["summary"]
    for key in ("spearman", "top_iou"):
        summary[key] = {k: _number(v) for k, v in summary[key].items()}
    if result.patch_test is not None:
        p = result.patch_test
        document["patch_test"] = {**p.__dict__, "occluded_drop": _number(p.occluded_drop)}
    if not timing:
        document.pop("timing", None)
    return document


def write_stability(out: Path, stem: str, result: StabilityResult, timing: bool = True) -> List[Path]:
    """STEM.stability.json, STEM.stability.csv (one row per noisy copy), STEM.stability.png."""
    out = Path(out)
    e = result.explanation
    rows = [
        {
            "trial": k + 1,
            "spearman": t.spearman,
            "top_iou": t.top_iou,
            "predicted": t.predicted,
            "flipped": t.flipped,
            "target_score": t.target_score,
        }
        for k, t in enumerate(result.trials)
    ]
    summary = result.summary()
    title = (
        f"{upsampled_title(e.label(e.target), e.target, e.score_kind, float(e.occlusion.original_scores[e.target]))}"
        f"   noise {result.noise_text()} x {len(result.trials)}: mean rho "
        f"{_fmt_opt(summary['spearman']['mean'])}, mean top-10% IoU {_fmt_opt(summary['top_iou']['mean'])}"
    )
    return [
        atomic_write_json(out / f"{stem}.stability.json", stability_document(result, timing), command=False),
        atomic_write_bytes(out / f"{stem}.stability.csv", csv_bytes(TRIAL_FIELDS, rows)),
        atomic_write_bytes(
            out / f"{stem}.stability.png",
            stability_png(
                model_grey(e),
                e.map,
                result.noisy_maps,
                [t.spearman for t in result.trials],
                [t.top_iou for t in result.trials],
                title=title,
            ),
        ),
    ]


def _fmt_opt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
