"""Medical inputs (DICOM slices for 2-D models; NIfTI volumes and DICOM series for 3-D models): the one module
that knows how they are fed to a model (real units, the intensity transform), what fills an occluded window
(built in model-input space) and how their explanation looks (:class:`VolumeExplanation`: world coordinates,
the map on the input's own grid, a montage of slices). The modality interface: see :mod:`.modality`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, cast

import numpy as np

from ..core.baselines import default_blur_sigma, make_input_baseline
from ..core.engine import Box
from ..core.metrics import peak_index
from ..errors import OccludeError
from ..loaders.model import OnnxClassifier
from ..loaders.volumes import (
    PreparedVolume,
    VolumePreprocessing,
    is_medical_path,
    prepare_volume,
    volume_preprocessing_from_metadata,
)
from .explanation import SCHEMA_VERSION, Explanation
from .options import ExplainOptions
from .preprocessing import resolve_preprocessing


def is_medical_input(image, options: Optional[ExplainOptions] = None) -> bool:
    """Is ``image`` a medical input (a Volume, a DICOM/NIfTI path, or a folder with ``series``)?"""
    from ..loaders.medical import Volume

    if isinstance(image, Volume):
        return True
    if isinstance(image, (str, Path)):
        return is_medical_path(image, series=bool(options and options.series))
    return False


def medical_preprocessing(model: OnnxClassifier, preprocessing, options: ExplainOptions) -> VolumePreprocessing:
    """The VolumePreprocessing for a medical input: a 3-D model's own, or for a 2-D model (a DICOM slice) one
    built from its metadata; then the intensity transform the options ask for replaces the model's."""
    if not isinstance(preprocessing, VolumePreprocessing):
        meta = dict(model.metadata_preprocessing or {})
        layout = getattr(preprocessing, "layout", None)
        if getattr(preprocessing, "channels", 1) != 1:
            raise OccludeError("medical inputs are grey: this model takes 3 channels")
        base = volume_preprocessing_from_metadata(meta, model.input_shape, model.dtype, layout)
        if tuple(base.size) != tuple(preprocessing.size):
            base = VolumePreprocessing(**{**base.__dict__, "size": tuple(preprocessing.size)})
        preprocessing = base
    return preprocessing.with_transform(**options.medical_transform)


def volume_baseline(kind: str, prepared: PreparedVolume, patch: Sequence[int], *, seed: int = 0, blur_sigma=None):
    """The baseline of a medical input, built in model-input space (see core.baselines.make_input_baseline);
    ``inpaint`` is a per-window callable."""
    axes = prepared.preprocessing.spatial_axes
    if kind == "inpaint":
        from ..loaders.inpaint import InpaintBaseline

        return InpaintBaseline(prepared.model_input, axes)
    sigma = blur_sigma if blur_sigma is not None else default_blur_sigma(patch)
    return make_input_baseline(kind, prepared.model_input, axes, seed=seed, blur_sigma=sigma)


@dataclass
class VolumeExplanation(Explanation):
    """An explanation of a medical input (a DICOM slice, a DICOM series or a NIfTI volume): ``image`` is a
    :class:`~occlude_cli.loaders.volumes.PreparedVolume`; maps are (K, D, H, W) or (K, H, W) at the model grid."""

    @property
    def prepared(self) -> PreparedVolume:
        """``image``, typed as what it holds here (the field is declared on Explanation as a PreparedImage)."""
        return cast(PreparedVolume, self.image)

    def header(self) -> dict:
        document = super().header() if self.prepared.ndim == 2 else self._volume_header()
        document["input"] = self.prepared.describe()
        return document

    def _volume_header(self) -> dict:
        score = {"kind": self.score_kind, "original": float(self.occlusion.original_scores[self.target])}
        if self.head is not None:
            score.update({"requested": self.head.requested, "rule": self.head.rule})
        depth, height, width = self.prepared.volume.data.shape
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model,
            "image": {
                "path": str(self.prepared.path) if self.prepared.path is not None else None,
                "width": int(width),
                "height": int(height),
                "depth": int(depth),
            },
            "target": {"index": self.target, "label": self.label(self.target)},
            "score": score,
        }

    def peak(self) -> dict:
        """The map's peak: the voxel of its plateau of maximal values nearest the plateau's centroid
        (:func:`occlude_cli.core.metrics.peak_index`; occlusion maps are piecewise constant, so the argmax
        corner would sit on the plateau's edge), in model-grid voxels and in world
        coordinates (RAS+ mm), and the nearest voxel of the input's own grid."""
        values = np.where(np.isfinite(self.map), self.map, -np.inf)
        top = values.max()
        plateau = np.argwhere(values == top)
        voxel = list(peak_index(self.map))  # the plateau voxel nearest its centroid: the one peak rule
        world = self.prepared.world(voxel)
        inverse = np.linalg.inv(np.asarray(self.prepared.volume.affine, dtype=np.float64))
        source = (inverse @ np.array(world + [1.0]))[: self.prepared.ndim]
        shape = self.prepared.volume.data.shape
        return {
            "voxel": voxel,
            "value": float(top) if np.isfinite(top) else None,
            "plateau_voxels": int(len(plateau)),
            "world_mm": [round(c, 4) for c in world],
            "input_voxel": [int(np.clip(np.rint(c), 0, n - 1)) for c, n in zip(source, shape)],
        }

    def map_on_original(self, values: Optional[np.ndarray] = None) -> np.ndarray:
        """The map (or ``values`` on the model grid) on the input's own voxel grid (linear interpolation)."""
        from ..loaders.medical import resample_map_to_input

        return resample_map_to_input(self.map if values is None else values, self.prepared.volume)

    def _repr_png_(self) -> bytes:
        if self.prepared.ndim == 2:
            return super()._repr_png_()
        from ..pictures.montage import montage_png

        grid = self.prepared.grid
        title = (
            f"{self.label(self.target) or 'class ' + str(self.target)}: {self.score_kind} "
            f"{self.occlusion.original_scores[self.target]:.4f}"
        )
        return montage_png(self.prepared.display, self.map, grid.spacing, grid.affine, title, "")


class Medical:
    """The medical modality."""

    name = "medical"
    explanation = VolumeExplanation

    def preprocessing(self, model: OnnxClassifier, given, options: ExplainOptions) -> VolumePreprocessing:
        """The volume preprocessing with the options' intensity transform; a region is refused here, before
        any input is read (it is in 2-D photo pixels)."""
        if options.region is not None:
            raise OccludeError(
                "region is not supported for medical inputs yet (it is in 2-D photo pixels)", params=("region",)
            )
        return medical_preprocessing(model, given or resolve_preprocessing(model), options)

    def prepare(self, image, preprocessing: VolumePreprocessing, options: ExplainOptions) -> PreparedVolume:
        return prepare_volume(image, preprocessing, series=options.series, volume_index=options.volume_index)

    def region(self, options: ExplainOptions, prepared: PreparedVolume) -> Optional[Box]:
        return None  # refused by preprocessing()

    def baseline(self, kind: str, prepared: PreparedVolume, patch: Sequence[int], *, seed: int, blur_sigma=None):
        return volume_baseline(kind, prepared, patch, seed=seed, blur_sigma=blur_sigma)


MEDICAL = Medical()
