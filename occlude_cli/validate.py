"""Validating explanations: faithfulness of a map, agreement with another method's map, and region checks.

The glue between :func:`occlude_cli.explain.explain` and the pure metrics in :mod:`occlude_cli.metrics`:
reading other methods' maps and region masks, mapping them to model-input pixels, running the deletion /
insertion curves with the explanation's own model, score and baseline, and rendering the comparison.

Everything here works at model-input resolution: the grid the occlusion map lives on. Boxes and masks
are given in *original image* pixels and mapped through ``PreparedImage.crop_box`` like ``--region``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .baselines import default_blur_sigma, make_baseline, parse_baseline
from .errors import OccludeError, first_line
from .explain import Explanation, ExplainOptions, explain, resolve_preprocessing
from .metrics import (DEFAULT_STEPS, deletion_curve, energy_share, insertion_curve, pearson, peak_inside_fraction,
                      pointing_game, spearman, top_fraction_iou)
from .model import OnnxClassifier, looks_like_probabilities
from .outputs import (SCHEMA_VERSION, atomic_write_bytes, atomic_write_json, explanation_header,
                      json_number, peak)
from .preprocess import PreparedImage, Preprocessing, load_image, prepare_image

MASK_SUFFIX = ".mask.png"  # naming convention: dir/a.jpg -> dir/a.mask.png
DEFAULT_TOP_FRACTION = 0.1


# ------------------------------------------------------------------------------- saliency maps


def read_saliency_map(path) -> np.ndarray:
    """Another method's map as saved: a .npy array or a greyscale image (PNG, 8 or 16 bit), at its own
    resolution. Returns (h, w) float64; non-finite values become NaN (not computed).

    Singleton axes are dropped, so (1, h, w) and (1, 1, h, w) arrays from deep-learning frameworks load;
    multi-channel maps must be reduced to one channel first (e.g. ``abs(grad).sum(axis=0)``).
    """
    path = Path(path)
    if not path.exists():
        raise OccludeError(f"saliency map not found: {path}")
    if path.is_dir():
        raise OccludeError(f"expected a saliency map file (.npy or greyscale PNG), got a folder: {path}")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise OccludeError(f"cannot read {path} as a .npy array: {first_line(exc)}") from None
        if not isinstance(array, np.ndarray):
            raise OccludeError(f"{path} is not a single .npy array")
        if array.dtype.kind not in "biuf":
            raise OccludeError(f"saliency map {path} must hold real numbers, got dtype {array.dtype}")
        values = array.astype(np.float64)
    else:
        values = _read_grey_image(path)
    squeezed = np.squeeze(values)
    if squeezed.ndim != 2:
        raise OccludeError(
            f"saliency map {path} must be 2-D (H, W), got shape {tuple(values.shape)}"
            + ("; reduce the channels first, e.g. abs(map).sum(axis=0)" if squeezed.ndim == 3 else "")
        )
    if min(squeezed.shape) < 1:
        raise OccludeError(f"saliency map {path} is empty: shape {tuple(values.shape)}")
    return np.where(np.isfinite(squeezed), squeezed, np.nan)


def _read_grey_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except UnidentifiedImageError:
        raise OccludeError(f"saliency map {path} is neither a .npy array nor an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise OccludeError(f"cannot read saliency map {path}: {first_line(exc)}") from None
    mode = image.mode
    if mode in ("1", "L", "F") or mode.startswith("I"):
        return np.asarray(image, dtype=np.float64)
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel(0), dtype=np.float64)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise OccludeError(
            f"saliency map {path} is a colour image: give a greyscale PNG or the raw values as .npy "
            "(a colormap rendering cannot be read back as values)"
        )
    return rgb[..., 0]


def _resize_float(values: np.ndarray, size: Tuple[int, int], box=None, resample=Image.BILINEAR) -> np.ndarray:
    height, width = size
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), "F")
    return np.asarray(image.resize((width, height), resample, box=box), dtype=np.float64)


def resize_map(
    values,
    size: Tuple[int, int],
    *,
    original_size: Optional[Tuple[int, int]] = None,
    crop_box: Optional[Tuple[float, float, float, float]] = None,
) -> np.ndarray:
    """Bring a map to the model-input ``size`` (height, width), bilinear.

    A map with the original image's shape (``original_size`` is (width, height)) is taken in original
    pixels and cropped by ``crop_box`` first, like the image (matters for center-crop models); any other
    shape is taken to cover the model input. NaN pixels stay NaN (where they make up most of a pixel).
    """
    values = np.asarray(values, dtype=np.float64)
    height, width = size
    box = None
    if original_size is not None and crop_box is not None and values.shape == (original_size[1], original_size[0]):
        box = tuple(float(v) for v in crop_box)
        if box == (0.0, 0.0, float(original_size[0]), float(original_size[1])):
            box = None
    if values.shape == (height, width) and box is None:
        return values.copy()
    valid = np.isfinite(values)
    if valid.all():
        return _resize_float(values, size, box)
    # normalised resampling: NaN pixels neither leak into nor erase their neighbours
    weight = _resize_float(valid.astype(np.float64), size, box)
    total = _resize_float(np.where(valid, values, 0.0), size, box)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= 0.5, total / weight, np.nan)


def load_saliency_map(
    path,
    size: Tuple[int, int],
    *,
    original_size: Optional[Tuple[int, int]] = None,
    crop_box: Optional[Tuple[float, float, float, float]] = None,
) -> np.ndarray:
    """:func:`read_saliency_map` then :func:`resize_map`: an (H, W) float64 map at model-input size."""
    return resize_map(read_saliency_map(path), size, original_size=original_size, crop_box=crop_box)


# ------------------------------------------------------------------------------------ regions


def parse_box(text) -> Tuple[float, float, float, float]:
    """'x0,y0,x1,y1' (original image pixels, x1/y1 exclusive) -> four floats, checked non-empty."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p for p in str(text).replace(" ", "").split(",") if p != ""]
    try:
        values = [float(v) for v in parts]
    except (TypeError, ValueError):
        raise OccludeError(f"--box takes x0,y0,x1,y1 in image pixels, got {text!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise OccludeError(f"--box takes four numbers x0,y0,x1,y1 in image pixels, got {text!r}")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise OccludeError(f"--box {text!r} is empty: need x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


def _coverage(a: float, b: float, lo: float, hi: float, n: int) -> np.ndarray:
    """For n model pixels spanning [lo, hi) of the original axis: the fraction of each inside [a, b)."""
    edges = lo + (hi - lo) * np.arange(n + 1) / n
    overlap = np.minimum(edges[1:], b) - np.maximum(edges[:-1], a)
    return np.clip(overlap, 0.0, None) / (edges[1:] - edges[:-1])


def _finish_mask(cover: np.ndarray, what: str) -> np.ndarray:
    """Model pixels at least half covered by the region; a region smaller than that keeps every pixel it
    touches, so that a tiny box still counts."""
    mask = cover >= 0.5 - 1e-9
    if not mask.any():
        mask = cover > 1e-9
    if not mask.any():
        raise OccludeError(f"{what} lies outside the part of the image the model sees")
    return mask


def box_mask(box, prepared: PreparedImage) -> np.ndarray:
    """(H, W) bool at model-input resolution: the model pixels at least half inside ``box``
    (x0, y0, x1, y1 in original image pixels)."""
    x0, y0, x1, y1 = parse_box(box)
    width, height = prepared.original_size
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise OccludeError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width}x{height} image")
    left, top, right, bottom = prepared.crop_box
    rows, cols = prepared.preprocessing.size
    cover = _coverage(y0, y1, top, bottom, rows)[:, None] * _coverage(x0, x1, left, right, cols)[None, :]
    return _finish_mask(cover, f"box {x0:g},{y0:g},{x1:g},{y1:g}")


def read_mask(path) -> np.ndarray:
    """A mask image as (h, w) float 0/1 at its own resolution: white (grey >= 128) marks the region."""
    path = Path(path)
    if not path.exists():
        raise OccludeError(f"mask not found: {path}")
    if path.is_dir():
        raise OccludeError(f"expected a mask image, got a folder: {path}")
    try:
        image = load_image(path)
    except OccludeError as exc:
        raise OccludeError(f"bad mask: {exc}") from None
    grey = np.asarray(image.convert("L") if image.mode == "RGB" else image, dtype=np.float64)
    inside = (grey >= 127.5).astype(np.float64)
    if not inside.any():
        raise OccludeError(f"mask {path} is empty: paint the region white (grey >= 128) on black")
    return inside


def mask_from_file(path, prepared: PreparedImage) -> np.ndarray:
    """(H, W) bool at model-input resolution from a mask image: white (grey >= 128) marks the region.

    The mask covers the whole original image whatever its own size (it is stretched to it), then
    goes through the same crop and resize as the image; a model pixel is in the region when at least
    half of it is.
    """
    inside = read_mask(path)
    mask_h, mask_w = inside.shape
    width, height = prepared.original_size
    sx, sy = mask_w / width, mask_h / height
    left, top, right, bottom = prepared.crop_box
    cover = _resize_float(inside, prepared.preprocessing.size, (left * sx, top * sy, right * sx, bottom * sy), Image.BOX)
    return _finish_mask(cover, f"the region of mask {path}")


def region_mask(prepared: PreparedImage, *, box=None, mask=None) -> np.ndarray:
    """The region to check as an (H, W) bool mask at model-input resolution, from exactly one of
    ``box`` (x0, y0, x1, y1 or 'x0,y0,x1,y1' in original image pixels) or ``mask`` (an image path, or a
    bool array already at model-input resolution)."""
    if (box is None) == (mask is None):
        raise OccludeError("give exactly one region: a box or a mask")
    if box is not None:
        return box_mask(box, prepared)
    if isinstance(mask, np.ndarray):
        if mask.shape != tuple(prepared.preprocessing.size):
            raise OccludeError(f"mask array shape {mask.shape} differs from the model input {prepared.preprocessing.size}")
        if not mask.any():
            raise OccludeError("mask array is empty")
        return mask.astype(bool)
    return mask_from_file(mask, prepared)


def convention_mask_path(image_path) -> Path:
    """The mask an image has by naming convention: ``dir/a.jpg`` -> ``dir/a.mask.png``."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + MASK_SUFFIX)


def is_mask_file(path) -> bool:
    """True for files named by the mask convention (``*.mask.png``), which are never inputs."""
    return Path(path).name.lower().endswith(MASK_SUFFIX)


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
    raw = model.run(sample[None])
    is_prob = bool((model.metadata_preprocessing or {}).get("output") == "probabilities") or looks_like_probabilities(raw)
    score = model.scorer(e.score_kind, is_prob)
    params = e.params
    sigma = params.get("blur_sigma") or default_blur_sigma(tuple(params.get("patch") or (1, 1)))

    def baseline(spec: Optional[str]) -> Tuple[str, np.ndarray]:
        kind = parse_baseline(spec if spec is not None else params.get("baseline", "zero"))
        array = make_baseline(kind, e.image.pixels, e.image.preprocessing, seed=int(params.get("seed", 0)), blur_sigma=sigma)
        return kind, array

    d_kind, d_array = baseline(deletion_baseline)
    i_kind, i_array = baseline(insertion_baseline)
    size = int(batch_size or params.get("batch_size") or model.default_batch_size(sample.nbytes))
    if size < 1:
        raise OccludeError(f"--batch-size must be at least 1, got {size}")
    return _CurveSetup(score, d_kind, d_array, i_kind, i_array, size)


def _curves(explanation: Explanation, setup: _CurveSetup, importance: np.ndarray, steps: int,
            progress: Optional[Callable[[int, int], None]] = None) -> dict:
    e = explanation
    common = dict(steps=steps, spatial_axes=e.image.preprocessing.spatial_axes, batch_size=setup.batch_size)
    deletion = deletion_curve(e.image.model_input, setup.deletion_baseline, importance, setup.score, e.target,
                              progress=progress, **common)
    insertion = insertion_curve(e.image.model_input, setup.insertion_baseline, importance, setup.score, e.target,
                                progress=progress, **common)
    return {
        "fractions": [float(v) for v in deletion.fractions],
        "deletion": [float(v) for v in deletion.scores],
        "insertion": [float(v) for v in insertion.scores],
        "deletion_auc": deletion.auc,
        "insertion_auc": insertion.auc,
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
) -> dict:
    """Deletion and insertion curves of a map (the explanation's own map unless ``importance`` is given)
    for the explanation's target, with its score kind, model and baseline: what ``run --metrics`` adds.

    Returns a JSON-ready dict: ``deletion_auc`` (lower is better), ``insertion_auc`` (higher is better),
    ``steps``, ``score``, the baselines used, and the curves (``fractions``, ``deletion``, ``insertion``).
    Costs 2 * (steps + 1) forward passes.
    """
    setup = _curve_setup(explanation, model, deletion_baseline, insertion_baseline, batch_size)
    values = explanation.map if importance is None else np.asarray(importance, dtype=np.float64)
    curves = _curves(explanation, setup, values, steps)
    return {
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
) -> dict:
    """Compare another method's map with the occlusion map of the same model, image and target.

    ``other`` is (H, W) at model-input resolution (see :func:`load_saliency_map`). Returns the JSON-ready
    comparison: ``agreement`` (pearson, spearman, top-fraction IoU over the pixels computed in both),
    ``curves`` (deletion and insertion for each map, same baselines and steps) and ``better`` (which map
    has the lower deletion AUC / higher insertion AUC).
    """
    e = explanation
    occ_map = e.map
    other = np.asarray(other, dtype=np.float64)
    if other.shape != occ_map.shape:
        raise OccludeError(f"the other map is {other.shape[0]}x{other.shape[1]} but the occlusion map is "
                           f"{occ_map.shape[0]}x{occ_map.shape[1]}: resize it with load_saliency_map")
    if not 0 < top_fraction <= 1:
        raise OccludeError(f"--top-fraction must be in (0, 1], got {top_fraction}")
    if steps < 1:
        raise OccludeError(f"--steps must be at least 1, got {steps}")
    both = np.isfinite(occ_map) & np.isfinite(other)
    if not both.any():
        raise OccludeError("the two maps share no computed pixel")
    setup = _curve_setup(e, model, deletion_baseline, insertion_baseline, batch_size)
    ours = _curves(e, setup, occ_map, steps)
    theirs = _curves(e, setup, other, steps)

    def better(key: str, lower: bool) -> str:
        a, b = ours[key], theirs[key]
        if np.isclose(a, b, rtol=1e-9, atol=1e-12):
            return "tie"
        return "occlusion" if (a < b) == lower else "other"

    def curve_record(c: dict) -> dict:
        return {"deletion_auc": c["deletion_auc"], "insertion_auc": c["insertion_auc"],
                "deletion": c["deletion"], "insertion": c["insertion"]}

    return {
        **explanation_header(e),
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
            "deletion": better("deletion_auc", lower=True),
            "insertion": better("insertion_auc", lower=False),
        },
    }


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def compare_png(explanation: Explanation, other, comparison: dict) -> bytes:
    """The comparison as one PNG: both maps over the (greyed) model input, and the deletion and insertion
    curves of both maps with their AUCs in the legends."""
    from .render import _matplotlib, colorize, symmetric_limit

    _, plt = _matplotlib()
    e = explanation
    pixels = np.asarray(e.image.pixels, dtype=np.float64)
    grey = pixels.mean(axis=-1) / 255.0
    name = comparison.get("other_map", {}).get("name") or "other map"
    agreement = comparison["agreement"]
    curves = comparison["curves"]
    label = e.label(e.target)
    kind = "probability" if e.score_kind == "prob" else "logit"
    heading = (f"{label + ' ' if label else ''}(class {e.target}): {kind} {e.occlusion.original_scores[e.target]:.4f}    "
               f"Pearson {_fmt(agreement['pearson'])}   Spearman {_fmt(agreement['spearman'])}   "
               f"top {agreement['top_fraction'] * 100:g}% IoU {_fmt(agreement['top_iou'])}")
    p = e.params
    figure, axes = plt.subplots(2, 2, figsize=(10, 9), dpi=100)
    try:
        panels = (
            (axes[0, 0], e.map, f"occlusion (patch {p['patch'][0]}x{p['patch'][1]}, stride {p['stride'][0]}x{p['stride'][1]})"),
            (axes[0, 1], np.asarray(other, dtype=np.float64), str(name)),
        )
        for ax, values, title in panels:
            limit = symmetric_limit(values)
            alpha = 0.25 + 0.7 * np.clip(np.abs(np.nan_to_num(values)) / limit, 0.0, 1.0)
            ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.imshow(colorize(values, limit, alpha), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        fractions = curves["fractions"]
        for ax, key, verb, hint in (
            (axes[1, 0], "deletion", "deleted", "lower AUC is better"),
            (axes[1, 1], "insertion", "inserted", "higher AUC is better"),
        ):
            ours, theirs = curves["occlusion"], curves["other"]
            ax.plot(fractions, ours[key], color="#c0392b", label=f"occlusion (AUC {_fmt(ours[key + '_auc'])})")
            ax.plot(fractions, theirs[key], color="#2471a3", label=f"{name} (AUC {_fmt(theirs[key + '_auc'])})")
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"fraction of pixels {verb}, most important first", fontsize=8)
            ax.set_ylabel(f"target {kind}", fontsize=8)
            ax.set_title(f"{key} (baseline {curves[key + '_baseline']}; {hint})", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
        figure.suptitle(heading, fontsize=10)
        figure.tight_layout(rect=(0, 0, 1, 0.96))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(figure)


def write_comparison(explanation: Explanation, other, comparison: dict, out_dir, stem: str) -> List[Path]:
    """Write STEM.compare.png and STEM.compare.json (last) under ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    png = atomic_write_bytes(out_dir / f"{stem}.compare.png", compare_png(explanation, other, comparison))
    record = dict(comparison)
    record["outputs"] = sorted([png.name, f"{stem}.compare.json"])
    return [png, atomic_write_json(out_dir / f"{stem}.compare.json", record)]


# ----------------------------------------------------------------------------------- checks


def check_min_energy(min_energy: Optional[float]) -> Optional[float]:
    if min_energy is None:
        return None
    if not (isinstance(min_energy, (int, float)) and 0.0 <= float(min_energy) <= 1.0):
        raise OccludeError(f"--min-energy must be a fraction in [0, 1], got {min_energy}")
    return float(min_energy)


def check_image(
    explanation: Explanation,
    mask,
    *,
    min_energy: Optional[float] = None,
    require_peak: bool = False,
) -> dict:
    """Does the explanation's map look inside the region ``mask`` ((H, W) bool, model-input pixels)?

    Returns a JSON-ready dict: ``pointing_game`` (the peak is inside), ``peak_inside_fraction``,
    ``energy_share`` (share of the positive map inside; null when the map has no positive value),
    ``region_fraction`` (the region's share of the pixels: the energy share of a uniform map),
    ``passed`` and the ``reasons`` for failing. Without thresholds every image passes (report only).
    """
    min_energy = check_min_energy(min_energy)
    values = explanation.map
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != values.shape:
        raise OccludeError(f"mask shape {mask.shape} differs from the map's {values.shape}")
    energy = energy_share(values, mask)
    hit = pointing_game(values, mask)
    reasons = []
    if min_energy is not None and not (math.isfinite(energy) and energy >= min_energy):
        shown = "undefined (no positive map value)" if not math.isfinite(energy) else f"{energy:.3f}"
        reasons.append(f"energy share {shown} < {min_energy:g}")
    if require_peak and not hit:
        reasons.append("peak outside the region")
    e = explanation
    return {
        "target": {"index": e.target, "label": e.label(e.target)},
        "score": {"kind": e.score_kind, "original": float(e.occlusion.original_scores[e.target])},
        "pointing_game": hit,
        "peak_inside_fraction": json_number(peak_inside_fraction(values, mask)),
        "energy_share": json_number(energy),
        "peak": peak(values),
        "region_pixels": int(np.count_nonzero(mask)),
        "region_fraction": float(np.count_nonzero(mask) / mask.size),
        "passed": not reasons,
        "reasons": reasons,
    }


CHECK_FIELDS = (
    "path", "status", "mask", "target_index", "target_label", "score", "pointing_game", "peak_inside_fraction",
    "energy_share", "region_fraction", "peak_y", "peak_x", "seconds", "reasons", "error",
)


@dataclass
class CheckRow:
    """One image's line in check.json / check.csv. status: pass | fail | error (could not be checked)."""

    path: str
    status: str
    mask: Optional[str] = None
    target_index: Optional[int] = None
    target_label: Optional[str] = None
    score: Optional[float] = None
    pointing_game: Optional[bool] = None
    peak_inside_fraction: Optional[float] = None
    energy_share: Optional[float] = None
    region_fraction: Optional[float] = None
    peak_y: Optional[int] = None
    peak_x: Optional[int] = None
    seconds: Optional[float] = None
    reasons: List[str] = field(default_factory=list)
    error: Optional[str] = None

    @classmethod
    def from_result(cls, path: str, mask: Optional[str], result: dict, seconds: Optional[float]) -> "CheckRow":
        return cls(
            path=path,
            status="pass" if result["passed"] else "fail",
            mask=mask,
            target_index=result["target"]["index"],
            target_label=result["target"]["label"],
            score=result["score"]["original"],
            pointing_game=result["pointing_game"],
            peak_inside_fraction=result["peak_inside_fraction"],
            energy_share=result["energy_share"],
            region_fraction=result["region_fraction"],
            peak_y=result["peak"]["y"],
            peak_x=result["peak"]["x"],
            seconds=seconds,
            reasons=list(result["reasons"]),
        )


def check_document(rows: Sequence[CheckRow], settings: Optional[dict] = None) -> dict:
    """check.json: settings, counts of pass / fail / error, aggregate numbers over the checked images, rows."""
    counts: Dict[str, int] = {"pass": 0, "fail": 0, "error": 0}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    checked = [r for r in rows if r.status in ("pass", "fail")]
    energies = [r.energy_share for r in checked if r.energy_share is not None]
    return {
        "schema": SCHEMA_VERSION,
        "settings": settings or {},
        "counts": counts,
        "summary": {
            "checked": len(checked),
            "pointing_game_accuracy": json_number(np.mean([bool(r.pointing_game) for r in checked])) if checked else None,
            "energy_share_mean": json_number(np.mean(energies)) if energies else None,
            "energy_share_min": json_number(np.min(energies)) if energies else None,
        },
        "images": [dict(row.__dict__) for row in rows],
    }


def write_check_summary(rows: Sequence[CheckRow], out_dir, settings: Optional[dict] = None,
                        name: str = "check") -> List[Path]:
    """NAME.json (see :func:`check_document`) and NAME.csv (one row per image), written atomically."""
    out_dir = Path(out_dir)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CHECK_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = dict(row.__dict__)
        values["reasons"] = "; ".join(row.reasons)
        writer.writerow({k: ("" if v is None else v) for k, v in values.items()})
    document = check_document(rows, settings)
    return [
        atomic_write_json(out_dir / f"{name}.json", document),
        atomic_write_bytes(out_dir / f"{name}.csv", text.getvalue().encode("utf-8")),
    ]


def check_file(
    model: OnnxClassifier,
    image_path,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    box=None,
    mask=None,
    min_energy: Optional[float] = None,
    require_peak: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> CheckRow:
    """One image file through region -> explain -> check, as a row of the summary.

    The region (``box`` in original image pixels, or ``mask``, a mask image path) is built first, so a
    bad mask costs no inference. An OccludeError (unreadable image, missing or empty mask, box outside
    the image) becomes an ``error`` row instead of stopping a folder run.
    """
    started = time.perf_counter()
    path = str(image_path)
    mask_name = str(mask) if mask is not None and not isinstance(mask, np.ndarray) else None
    try:
        preprocessing = preprocessing or resolve_preprocessing(model)
        region = region_mask(prepare_image(image_path, preprocessing), box=box, mask=mask)
        explanation = explain(model, image_path, options, preprocessing=preprocessing, labels=labels, progress=progress)
        result = check_image(explanation, region, min_energy=min_energy, require_peak=require_peak)
    except OccludeError as exc:
        return CheckRow(path=path, status="error", mask=mask_name, error=first_line(exc))
    except Exception as exc:  # one bad image must never stop the rest (KeyboardInterrupt is not caught)
        return CheckRow(path=path, status="error", mask=mask_name, error=f"{type(exc).__name__}: {first_line(exc)}")
    return CheckRow.from_result(path, mask_name, result, round(time.perf_counter() - started, 3))
