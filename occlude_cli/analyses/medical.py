"""Medical inputs (DICOM slices for 2-D models; NIfTI volumes and DICOM series for 3-D models): the one module
that knows how they are fed to a model (real units, the intensity transform), what fills an occluded window
(built in model-input space) and how their explanation looks (:class:`VolumeExplanation`: world coordinates,
the map on the input's own grid, a montage of slices). The modality interface: see :mod:`.modality`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, cast

import numpy as np

from ..core.baselines import default_blur_sigma, make_input_baseline
from ..core.engine import Box
from ..core.metrics import peak_index
from ..errors import Notice, OccludeError
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


@dataclass(repr=False)  # Explanation's short repr
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


def _trained_text(meta: dict) -> Optional[str]:
    """The intensity transform a model's metadata declares, in words (None: none declared)."""
    if meta.get("window") is not None:
        window = meta["window"]
        if isinstance(window, (list, tuple)) and len(window) == 2:
            return f"window L {float(window[0]):g} W {float(window[1]):g}"
        return f"window {window}"
    if meta.get("intensity_range") is not None:
        lo, hi = meta["intensity_range"]
        return f"intensity range {float(lo):g}..{float(hi):g}"
    if meta.get("zscore") not in (None, False):
        return "z-score"
    return None


def input_warnings(meta: dict, options: ExplainOptions, prepared: PreparedVolume) -> List[str]:
    """See :meth:`Medical.warnings` (``meta``: the model's ``occlude.preprocess`` metadata). Each warning is a
    :class:`~occlude_cli.errors.Notice`, so that a run shows each kind once however many inputs it concerns."""
    out: List[str] = []
    trained = _trained_text(meta)
    asked = options.window is not None or options.intensity_range is not None or options.zscore
    if trained is not None and asked:
        pre = prepared.preprocessing
        if prepared.window is not None:
            now = f"window L {prepared.window[0]:g} W {prepared.window[1]:g}"
        elif pre.transform == "intensity_range" and pre.intensity_range is not None:
            now = f"intensity range {pre.intensity_range[0]:g}..{pre.intensity_range[1]:g}"
        else:
            now = "z-score"
        if now != trained:
            text = (
                f"the intensity transform asked for ({now}) replaces the model's trained one ({trained}): the model "
                "sees intensities it was not trained on, so its scores and map may not hold; to change only the "
                "pictures, give display_window instead"
            )
            out.append(Notice(text, key="trained window replaced", params=("display_window",)))
    declared = str(meta.get("modality") or "").strip().upper()
    found = str(prepared.volume.meta.get("modality") or "").strip().upper()
    if declared and found and declared != found:
        text = (
            f"the input's modality {found} differs from the one the model declares ({declared}): check that this "
            "model applies to these images"
        )
        out.append(Notice(text, key="modality differs"))
    repaired = prepared.volume.meta.get("header_repaired")
    if repaired:
        text = f"the NIfTI header has problems that nibabel repairs as it reads it: {'; '.join(map(str, repaired))}"
        out.append(Notice(text, key="header repaired"))
    return out


def world_box(region: Sequence[float], prepared: PreparedVolume) -> Box:
    """A box x0, y0, z0, x1, y1, z1 in world millimetres (RAS+) -> the smallest box of model-grid voxels
    (starts then ends, exclusive) that holds every voxel whose centre lies inside it."""
    from ..loaders.labels import world_box_mask

    try:
        inside = world_box_mask(region, prepared.grid)
    except OccludeError as exc:
        raise OccludeError(str(exc).replace("box", "region", 1), params=("region",)) from None
    where = np.argwhere(inside)
    return tuple(int(v) for v in where.min(axis=0)) + tuple(int(v) + 1 for v in where.max(axis=0))


class Medical:
    """The medical modality."""

    name = "medical"
    explanation = VolumeExplanation

    def preprocessing(self, model: OnnxClassifier, given, options: ExplainOptions) -> VolumePreprocessing:
        """The volume preprocessing with the options' intensity transform; a region of the wrong form for the
        model (four pixel numbers for a 3-D model) is refused here, before any input is read."""
        pre = medical_preprocessing(model, given or resolve_preprocessing(model), options)
        if options.region is not None and pre.ndim == 3 and len(options.region) != 6:
            raise OccludeError(
                "region of a volume is x0, y0, z0, x1, y1, z1 in world millimetres (RAS+, as the JSON's "
                f"peak.world_mm), got {len(options.region)} numbers",
                params=("region",),
            )
        return pre

    def prepare(self, image, preprocessing: VolumePreprocessing, options: ExplainOptions) -> PreparedVolume:
        return prepare_volume(
            image,
            preprocessing,
            series=options.series,
            volume_index=options.volume_index,
            series_uid=options.series_uid,
            display_window=options.display_window,
        )

    def region(self, options: ExplainOptions, prepared: PreparedVolume) -> Optional[Box]:
        """The occluded box on the model grid: a slice's x0, y0, x1, y1 in its own pixels (as for photos), or
        x0, y0, z0, x1, y1, z1 in world mm (volumes, and slices with a geometry)."""
        if options.region is None:
            return None
        if len(options.region) == 4:
            from .photos import region_to_box

            return region_to_box(options.region, prepared)  # type: ignore[arg-type]  # the same 2-D interface
        return world_box(options.region, prepared)

    def warnings(self, model: OnnxClassifier, options: ExplainOptions, prepared: PreparedVolume) -> List[str]:
        """An intensity transform asked for that replaces the one the model was trained with, and an input
        whose modality differs from the one the model declares (its metadata's ``modality``)."""
        return input_warnings(dict(model.metadata_preprocessing or {}), options, prepared)

    def baseline(self, kind: str, prepared: PreparedVolume, patch: Sequence[int], *, seed: int, blur_sigma=None):
        return volume_baseline(kind, prepared, patch, seed=seed, blur_sigma=blur_sigma)


MEDICAL = Medical()
