"""Which kind of input a run explains, and the small interface each kind gives, so that the analyses never
branch on the input kind step by step: photos (:mod:`.photos`) and medical slices and volumes (:mod:`.medical`).

A modality has a ``name``, an ``explanation`` type (the result, which draws itself) and five methods:
``preprocessing(model, given, options)`` (what the input is fed with), ``prepare(image, preprocessing,
options)`` (the prepared input), ``region(options, prepared)`` (the occluded box in model-input pixels, or
None), ``warnings(model, options, prepared)`` (what the user must know about how the input was fed) and
``baseline(kind, prepared, patch, *, seed, blur_sigma)`` (what fills a window: one model input, or a
per-window callable for ``inpaint``).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, Union, cast

import numpy as np

from ..core.baselines import default_blur_sigma, parse_baseline
from ..errors import OccludeError
from ..loaders.images import PreparedImage
from ..loaders.volumes import PreparedVolume
from .medical import MEDICAL, is_medical_input
from .photos import PHOTOS


class Modality(Protocol):
    """The interface of a modality (each gets the prepared input of its own kind)."""

    name: str
    explanation: Any

    def preprocessing(self, model: Any, given: Any, options: Any) -> Any: ...

    def prepare(self, image: Any, preprocessing: Any, options: Any) -> Any: ...

    def region(self, options: Any, prepared: Any) -> Any: ...

    def warnings(self, model: Any, options: Any, prepared: Any) -> Any: ...

    def baseline(self, kind: str, prepared: Any, patch: Sequence[int], *, seed: int, blur_sigma: Any) -> Any: ...


def modality_of(image, options=None) -> Modality:
    """The modality of an input (a path, an image or a volume): medical for DICOM, NIfTI and (with
    ``options.series``) DICOM series folders, photos for the rest."""
    return cast(Modality, MEDICAL if is_medical_input(image, options) else PHOTOS)


def modality_of_prepared(prepared: Union[PreparedImage, PreparedVolume]) -> Modality:
    return cast(Modality, MEDICAL if isinstance(prepared, PreparedVolume) else PHOTOS)


def input_baseline(prepared, kind: str, *, seed: int = 0, blur_sigma: Optional[float] = None, patch=(8, 8)):
    """The baseline ``kind`` of any prepared input as one model input (photos: from the 0..255 pixels; medical
    inputs: in model-input space). ``inpaint`` is per window and is refused here (one line). ``blur_sigma``
    defaults to the patch's (half the patch side)."""
    sigma = blur_sigma if blur_sigma is not None else default_blur_sigma(tuple(patch))
    if parse_baseline(kind) == "inpaint":
        if isinstance(prepared, PreparedVolume):
            raise OccludeError("baseline inpaint is computed per window: it cannot be a whole-input baseline here")
        raise OccludeError("baseline inpaint is computed per window: build it with occlude_cli.loaders.inpaint")
    baseline = modality_of_prepared(prepared).baseline(kind, prepared, tuple(patch), seed=seed, blur_sigma=sigma)
    return np.asarray(baseline)


def prepare_input(model, image, options=None, preprocessing=None):
    """Any input (a path, an image, a volume, or one already prepared) prepared for ``model`` by its modality:
    (the prepared input, its preprocessing). For the analyses that feed a model themselves (layers, bias)."""
    from .options import ExplainOptions

    if isinstance(image, (PreparedImage, PreparedVolume)):
        return image, image.preprocessing
    options = (options or ExplainOptions()).checked()
    modality = modality_of(image, options)
    pre = modality.preprocessing(model, preprocessing, options)
    return modality.prepare(image, pre, options), pre
