"""``occlude stability`` from Python (:func:`stability_image`): is the explanation of one input robust? Maps of
seeded noisy copies against the clean map and, for a suspected patch, the patch test; written to
STEM.stability.json, .csv and .png."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from ..analyses.options import ExplainOptions
from ..analyses.preprocessing import ModelOptions
from ..analyses.stability import (
    DEFAULT_AMPLITUDE,
    DEFAULT_TRIALS,
    StabilityResult,
    check_amplitude,
    resolve_clean_class,
    stability,
)
from ..errors import OccludeError
from ..loaders.maps import check_box
from ..outputs.analysis_write import stability_document, write_stability
from ..outputs.names import stem_of
from ..outputs.write import check_output_folder
from .common import open_checked


@dataclass
class StabilityRun:
    """What :func:`stability_image` measured, and where it was written (``stem``: the files' name)."""

    result: StabilityResult
    stem: str
    written: List[Path]
    timing: bool

    @property
    def document(self) -> dict:
        """STEM.stability.json's document."""
        return stability_document(self.result, self.timing)


def stability_image(
    model,
    image: Union[str, Path],
    out: Union[str, Path] = "occlude-out",
    options: Optional[ExplainOptions] = None,
    *,
    amplitude: float = DEFAULT_AMPLITUDE,
    trials: int = DEFAULT_TRIALS,
    box=None,
    clean_class: Optional[Union[int, str]] = None,
    timing: bool = True,
    model_options: Optional[ModelOptions] = None,
    **overrides,
) -> StabilityRun:
    """Explain ``image`` and ``trials`` copies with seeded uniform noise of at most ``amplitude`` of the pixel
    range (seeded by ``options.seed``; medical inputs: of the intensity transform's span, in real units), all
    for the clean run's target; ``box`` (x0, y0, x1, y1) adds the patch test, ``clean_class`` the class that
    occluding the patch should restore. Every option is checked before the image is read."""
    amplitude = check_amplitude(amplitude)
    if int(trials) != trials or trials < 1:
        raise OccludeError(f"trials must be at least 1, got {trials}", params=("trials",))
    box = check_box(box) if box is not None else None
    if clean_class is not None and box is None:
        raise OccludeError(
            "clean_class needs box (the patch whose occlusion should restore that class)", params=("clean_class", "box")
        )
    opened = open_checked(model, (options or ExplainOptions()).with_overrides(overrides), model_options)
    if clean_class is not None and opened.classifier.num_classes:  # a bad class fails before any trial
        resolve_clean_class(clean_class, opened.labels, opened.classifier.num_classes)
    out = check_output_folder(out)
    result = stability(
        opened.classifier,
        image,
        opened.options,
        preprocessing=opened.preprocessing,
        labels=opened.labels,
        amplitude=amplitude,
        trials=int(trials),
        seed=opened.options.seed,
        box=box,
        clean_class=clean_class,
    )
    stem = stem_of(image)
    return StabilityRun(result, stem, write_stability(out, stem, result, timing=timing), timing)
