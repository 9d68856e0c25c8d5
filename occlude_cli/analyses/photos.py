"""Photos (PNG, JPEG, ...: 2-D pixels 0..255): the one module that knows how a photo is fed to a model, what fills
an occluded window and how its explanation looks. The modality interface (see :mod:`.modality`): ``name``,
``explanation`` (the result type, which draws itself), :meth:`Photos.preprocessing`, :meth:`Photos.prepare`,
:meth:`Photos.region` and :meth:`Photos.baseline`."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np

from ..core.baselines import baseline_image_path, make_baseline
from ..core.engine import Box
from ..errors import Notice, OccludeError
from ..loaders.baseline_image import baseline_image
from ..loaders.images import PreparedImage, Preprocessing, prepare_image
from ..loaders.model import OnnxClassifier
from ..loaders.volumes import VolumePreprocessing
from .explanation import Explanation
from .options import ExplainOptions
from .preprocessing import resolve_preprocessing
from .tasks.scoring import task_of
from .tasks.spec import default_resize

# options that change how a DICOM or NIfTI input is read or drawn, and nothing of a photo
MEDICAL_ONLY = ("window", "intensity_range", "zscore", "zscore_threshold", "display_window", "series", "volume_index")


class Photos:
    """The photo modality."""

    name = "photo"
    explanation = Explanation

    def preprocessing(
        self, model: OnnxClassifier, given: Optional[Union[Preprocessing, VolumePreprocessing]], options
    ) -> Preprocessing:
        """``given``, else the model's own; a 3-D model is refused (it takes volumes)."""
        resize = default_resize(task_of(model, options), options.detect_format)
        preprocessing = given or resolve_preprocessing(model, default_resize=resize)
        if not isinstance(preprocessing, Preprocessing):
            raise OccludeError(
                f"{model.path.name if hasattr(model, 'path') else 'the model'} is a 3-D model: give it "
                "a volume (NIfTI .nii/.nii.gz, a DICOM file, or a DICOM series folder with series)"
            )
        return preprocessing

    def prepare(self, image, preprocessing: Preprocessing, options: ExplainOptions) -> PreparedImage:
        return prepare_image(image, preprocessing)

    def region(self, options: ExplainOptions, prepared: PreparedImage) -> Optional[Box]:
        return region_to_box(options.region, prepared) if options.region is not None else None

    def warnings(self, model: OnnxClassifier, options: ExplainOptions, prepared: PreparedImage) -> List[str]:
        """What the user must know about how this input was fed: only the first frame of an animated or
        multi-page file is explained; options for medical inputs are not used."""
        notes: List[str] = []
        if prepared.frames > 1:
            text = (
                f"the file holds {prepared.frames} frames or pages (animated or multi-page): only the first is "
                "explained; save each frame you want explained as its own file"
            )
            notes.append(Notice(text, key="first frame only"))
        given = [name for name in MEDICAL_ONLY if getattr(options, name, None) not in (None, False)]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            text = f"{', '.join(given)} {verb} to DICOM and NIfTI inputs: not used for a photo"
            notes.append(Notice(text, key="medical options on a photo", params=tuple(given)))
        return notes

    def baseline(self, kind: str, prepared: PreparedImage, patch: Sequence[int], *, seed: int, blur_sigma: float):
        """The baseline as one model input, built from the 0..255 pixels (``inpaint``: a per-window callable;
        ``image:PATH``: that image prepared like the input)."""
        path = baseline_image_path(kind)
        if path is not None:
            return baseline_image(path, prepared.preprocessing)[0]
        if kind == "inpaint":
            from ..loaders.inpaint import InpaintBaseline

            return InpaintBaseline(prepared.model_input, prepared.preprocessing.spatial_axes)
        return make_baseline(kind, prepared.pixels, prepared.preprocessing, seed=seed, blur_sigma=blur_sigma)


PHOTOS = Photos()


def region_to_box(region, prepared: PreparedImage) -> Box:
    """A region (x0, y0, x1, y1) in original image pixels -> (y0, x0, y1, x1) in model-input pixels,
    clipped to the part of the image the model sees."""
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise OccludeError(
            f"region must be x0, y0, x1, y1 in image pixels (six numbers, in mm, are for volumes), got {region!r}",
            params=("region",),
        ) from None
    if x1 <= x0 or y1 <= y0:
        raise OccludeError(f"region {_box_text(region)} is empty: need x0 < x1 and y0 < y1", params=("region",))
    left, top, right, bottom = prepared.crop_box
    height, width = prepared.preprocessing.size
    sx, sy = width / (right - left), height / (bottom - top)
    box = (
        int(np.clip(np.floor((y0 - top) * sy), 0, height)),
        int(np.clip(np.floor((x0 - left) * sx), 0, width)),
        int(np.clip(np.ceil((y1 - top) * sy), 0, height)),
        int(np.clip(np.ceil((x1 - left) * sx), 0, width)),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        raise OccludeError(
            f"region {_box_text(region)} lies outside the part of the image the model sees", params=("region",)
        )
    return box


def _box_text(box) -> str:
    return ",".join(f"{float(v):g}" for v in box)
