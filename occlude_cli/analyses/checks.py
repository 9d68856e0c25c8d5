"""Region checks: does an explanation's map look inside a region (a box or a mask, in original image pixels,
mapped onto the model grid like ``region``)? The pointing game and the energy share, with thresholds that
make a verdict (``occlude check`` in CI). Writes nothing."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..core.metrics import energy_share, finite_or_none, peak, peak_inside_fraction, pointing_game
from ..core.quality import complexity, relevance_mass_accuracy, relevance_rank_accuracy, sparseness
from ..errors import OccludeError, first_line, shown_apart
from ..loaders.images import PreparedImage, Preprocessing, prepare_image
from ..loaders.maps import medical_region, region_mask
from ..loaders.model import OnnxClassifier
from ..loaders.volumes import PreparedVolume
from .explain import explain
from .explanation import Explanation
from .medical import MEDICAL, VolumeExplanation, is_medical_input
from .options import ExplainOptions
from .preprocessing import photo_preprocessing

json_number = finite_or_none


def check_min_energy(min_energy: Optional[float]) -> Optional[float]:
    if min_energy is None:
        return None
    if not (isinstance(min_energy, (int, float)) and 0.0 <= float(min_energy) <= 1.0):
        raise OccludeError(f"min_energy must be a fraction in [0, 1], got {min_energy}", params=("min_energy",))
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
    ``region_fraction`` (the region's share of the pixels: the energy share of a uniform map), the ``quality``
    numbers with Quantus' definitions (:func:`region_quality`), ``passed`` and the ``reasons`` for failing.
    Without thresholds every image passes (report only).
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
        if math.isfinite(energy):
            shown, limit = shown_apart(energy, min_energy, f"{energy:.3f}")
        else:
            shown, limit = "undefined (no positive map value)", f"{min_energy:g}"
        reasons.append(f"energy share {shown} < {limit}")
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
        "quality": region_quality(values, mask),
        "passed": not reasons,
        "reasons": reasons,
    }


def region_quality(values: np.ndarray, mask: Optional[np.ndarray]) -> dict:
    """A map's quality numbers with Quantus' definitions (:mod:`occlude_cli.core.quality`): relevance mass and
    rank accuracy inside ``mask`` (None without one), sparseness (Gini) and complexity (entropy); null where
    undefined."""
    out = {
        "relevance_mass_accuracy": None,
        "relevance_rank_accuracy": None,
        "sparseness": json_number(sparseness(values)),
        "complexity": json_number(complexity(values)),
    }
    if mask is not None:
        out["relevance_mass_accuracy"] = json_number(relevance_mass_accuracy(values, mask))
        out["relevance_rank_accuracy"] = json_number(relevance_rank_accuracy(values, mask))
    return out


QUALITY_FIELDS = ("relevance_mass_accuracy", "relevance_rank_accuracy", "sparseness", "complexity")

CHECK_FIELDS = (
    "path",
    "status",
    "mask",
    "target_index",
    "target_label",
    "score",
    "pointing_game",
    "peak_inside_fraction",
    "energy_share",
    "region_fraction",
    *QUALITY_FIELDS,
    "peak_image_x",
    "peak_image_y",
    "peak_world_mm",
    "peak_z",
    "peak_y",
    "peak_x",
    "seconds",
    "reasons",
    "error",
    "overlay",
)


# CSV header names: say which pixel space each peak is in (the box and masks are in image pixels)
CHECK_CSV_HEADER = {
    "peak_image_x": "peak_x (image pixels)",
    "peak_image_y": "peak_y (image pixels)",
    "peak_world_mm": "peak (world mm, RAS)",
    "peak_z": "peak_z (model-grid voxels)",
    "peak_y": "peak_y (model-input pixels)",
    "peak_x": "peak_x (model-input pixels)",
}


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
    peak_y: Optional[int] = None  # model-input pixels
    peak_x: Optional[int] = None
    seconds: Optional[float] = None
    reasons: List[str] = field(default_factory=list)
    error: Optional[str] = None
    peak_image_x: Optional[float] = None  # the peak in original image pixels, like the box (pixel centre)
    peak_image_y: Optional[float] = None
    overlay: Optional[str] = None  # the picture of this check, relative to the output folder
    relevance_mass_accuracy: Optional[float] = None  # Quantus' definitions (see region_quality)
    relevance_rank_accuracy: Optional[float] = None
    sparseness: Optional[float] = None
    complexity: Optional[float] = None
    peak_z: Optional[int] = None  # volumes: the peak's slice on the model grid
    peak_world_mm: Optional[List[float]] = None  # medical inputs: the peak in world mm (RAS+)
    regions: Optional[List[dict]] = None  # with a label map (regions): the region table's rows

    @classmethod
    def from_result(cls, path: str, mask: Optional[str], result: dict, seconds: Optional[float]) -> CheckRow:
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
            peak_z=result["peak"].get("z"),
            peak_y=result["peak"]["y"],
            peak_x=result["peak"]["x"],
            seconds=seconds,
            reasons=list(result["reasons"]),
            **result["quality"],
        )


def peak_in_image(explanation: Explanation, y: int, x: int) -> Tuple[float, float]:
    """A model-input pixel (its centre) in original image pixels (x, y), through the crop box."""
    left, top, right, bottom = explanation.image.crop_box
    height, width = explanation.image.preprocessing.size
    return (left + (x + 0.5) * (right - left) / width, top + (y + 0.5) * (bottom - top) / height)


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
    keep: Optional[dict] = None,
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
        source, preprocessing, _, region = prepare_region(model, image_path, options, preprocessing, box=box, mask=mask)
        explanation = explain(model, source, options, preprocessing=preprocessing, labels=labels, progress=progress)
        result = check_image(explanation, region, min_energy=min_energy, require_peak=require_peak)
        if keep is not None:  # what a caller needs to draw the check: the explanation and the region
            keep.update(explanation=explanation, region=region)
    except OccludeError as exc:
        return CheckRow(path=path, status="error", mask=mask_name, error=first_line(exc))
    except Exception as exc:  # one bad image must never stop the rest (KeyboardInterrupt is not caught)
        return CheckRow(path=path, status="error", mask=mask_name, error=f"{type(exc).__name__}: {first_line(exc)}")
    row = CheckRow.from_result(path, mask_name, result, round(time.perf_counter() - started, 3))
    assert row.peak_y is not None and row.peak_x is not None  # a checked map always has its peak
    if isinstance(explanation, VolumeExplanation):
        row.peak_world_mm = explanation.peak()["world_mm"]
    if explanation.map.ndim == 2:
        row.peak_image_x, row.peak_image_y = (round(v, 2) for v in peak_in_image(explanation, row.peak_y, row.peak_x))
    return row


class InputRegion(NamedTuple):
    """An input prepared for its model with its region: what to explain (a medical input as read), the
    preprocessing, the prepared input and the region (bool, model-input pixels or model-grid voxels)."""

    source: Any
    preprocessing: Any
    prepared: Any
    mask: np.ndarray


def prepare_region(
    model: OnnxClassifier, image, options: Optional[ExplainOptions], preprocessing, *, box, mask
) -> InputRegion:
    """An input's region on the model grid, built before any inference (a bad mask costs none). A medical
    input is read once here (and explained as read); its region comes from a NIfTI mask, a DICOM SEG or
    RT-STRUCT through world coordinates, or a box; a photo's from a box or a mask image."""
    options = (options or ExplainOptions()).checked()
    if isinstance(image, PreparedVolume) or is_medical_input(image, options):
        pre = MEDICAL.preprocessing(model, preprocessing, options)
        prepared = image if isinstance(image, PreparedVolume) else MEDICAL.prepare(image, pre, options)
        return InputRegion(prepared.volume, pre, prepared, medical_region(prepared, box=box, mask=mask))
    preprocessing = photo_preprocessing(model, preprocessing)
    photo = image if isinstance(image, PreparedImage) else prepare_image(image, preprocessing)
    return InputRegion(image, preprocessing, photo, region_mask(photo, box=box, mask=mask))
