"""The typed spec of a run: :class:`ExplainOptions`, converted and checked once, at the library's entry.

It takes plain Python values (``patch=16``, ``patch=(16, 24)``, ``score="logit"``, ``region=(x0, y0, x1, y1)``)
and never parses text: the command line turns its flags into these values (:mod:`occlude_cli.cli.parse`).
Every message names the parameter (``patch``, ``top_k``) and lists it in ``OccludeError.params``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..core.baselines import parse_baseline
from ..core.refine import check_refine
from ..errors import OccludeError
from ..loaders.model import ScoreKind
from .tasks.spec import checked_task_fields

INCREMENTAL_MODES = ("auto", "on", "off")
BATCH_MODES = ("auto", "host", "device")  # where occluded batches are built (see analyses.scorers)


class UniformSize(tuple):
    """A size given as one number N: (N, N) for images, and N on every axis of a volume (see :func:`per_axis`)."""


Size = Union[int, Tuple[int, ...]]


def as_size(value, name: str) -> Tuple[int, ...]:
    """A size as given (an int N, or one int per axis: (h, w) or (d, h, w)) as a tuple: N becomes a
    :class:`UniformSize` (N on every axis). Refuses text: the CLI parses '16x24' at its edge."""
    if isinstance(value, UniformSize):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        numbers = [int(value)]
    elif isinstance(value, (tuple, list)) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value
    ):
        numbers = [int(v) for v in value]
    else:
        raise OccludeError(
            f"{name} must be a whole number N or one per axis, (height, width) or (depth, height, width), "
            f"got {value!r}",
            params=(name,),
        )
    if len(numbers) not in (1, 2, 3):
        raise OccludeError(f"{name} takes 1, 2 or 3 sizes, got {value!r}", params=(name,))
    if min(numbers) < 1:
        raise OccludeError(f"{name} must be at least 1 pixel, got {value!r}", params=(name,))
    return UniformSize(numbers * 2) if len(numbers) == 1 else tuple(numbers)


def per_axis(value: Size, ndim: int, name: str) -> Tuple[int, ...]:
    """A size for an input with ``ndim`` spatial axes: a single number applies to every axis."""
    value = as_size(value, name)
    if isinstance(value, UniformSize):
        return (int(value[0]),) * ndim
    if len(value) != ndim:
        want = "N or (height, width)" if ndim == 2 else "N or (depth, height, width)"
        raise OccludeError(
            f"{name} {'x'.join(map(str, value))} does not fit a {ndim}-D input: use {want}", params=(name,)
        )
    return tuple(int(v) for v in value)


def checked_path(value, name: str, other: str = ""):
    """``value`` when it is a path (str or os.PathLike), else one error naming ``name`` (``other``: what else
    the parameter takes, e.g. "an OnnxClassifier")."""
    if isinstance(value, (str, PathLike)):
        return value
    takes = "a path" + (f" or {other}" if other else "")
    raise OccludeError(f"{name} must be {takes}, got {type(value).__name__}", params=(name,))


def label_count_error(labels: Sequence[str], classes: int, model=None) -> OccludeError:
    """Labels that are not one per class: named ``labels`` when they are the caller's, by their source (the
    model's metadata, its label file) when they are the model's own."""
    if model is not None and labels == model.labels and model.labels_source:
        return OccludeError(f"the {model.labels_source} has {len(labels)} labels but the model has {classes} classes")
    return OccludeError(f"labels has {len(labels)} names but the model has {classes} classes", params=("labels",))


def score_name(score) -> str:
    return score.value if isinstance(score, ScoreKind) else str(score)


REFINE_STEP, REFINE_BUDGET = 3, 0.25  # refine's defaults: every 3rd window coarse, a quarter of the exact passes

# numeric settings checked for their type before their range: (name, None allowed)
_NUMBERS = (
    ("top_k", False),
    ("batch_size", True),
    ("blur_sigma", True),
    ("seed", False),
    ("refine_step", True),
    ("refine_budget", True),
)


@dataclass
class ExplainOptions:
    """The parameters of a run, with the library's defaults. Checked once, by :meth:`checked`, at the API
    boundary; error messages name these parameters."""

    patch: Optional[Size] = None  # N or (h, w) in model-input pixels; default 1/14 of each side
    stride: Optional[Size] = None  # default half the patch
    baseline: str = "zero"
    target: Optional[Union[int, str]] = None  # index or label name; default the top-1 prediction
    top_k: int = 1
    score: Union[ScoreKind, str] = ScoreKind.auto
    batch_size: Optional[int] = None
    seed: int = 0
    blur_sigma: Optional[float] = None
    # x0, y0, x1, y1 in original image pixels (photos, DICOM slices); a volume: x0, y0, z0, x1, y1, z1 in world
    # millimetres (RAS+, as the JSON's peak.world_mm)
    region: Optional[Tuple[float, ...]] = None
    refine: bool = False  # coarse-to-fine: see core.refine.refined_occlusion_sensitivity
    refine_step: Optional[int] = None  # with refine: default 3 (None: the default; refused without refine)
    refine_budget: Optional[float] = None  # with refine: default 0.25
    # Medical inputs (DICOM, NIfTI, DICOM series): at most one intensity transform, overriding the model's
    window: Optional[str] = None  # preset (lung, mediastinum, bone, brain), "W,L" or "file"
    intensity_range: Optional[Tuple[float, float]] = None  # clip to [lo, hi], scale to 0..1
    zscore: bool = False
    zscore_threshold: Optional[float] = None
    display_window: Optional[str] = None  # the pictures' window only (preset, "W,L" or "file"); the model's stays
    series: bool = False  # a folder is one DICOM series
    series_uid: Optional[str] = None  # which series of a folder that holds several
    volume_index: Optional[int] = None  # which volume of a 4-D NIfTI
    incremental: str = "auto"  # exact incremental inference for CNNs: auto | on | off (see README, Speed)
    batches: str = "auto"  # where occluded batches are built: auto (device on CUDA) | host | device
    # What the model's output is and what its score is (the manual's "Beyond classifiers"; see analyses.tasks)
    task: str = "auto"  # auto | classify | segment | detect | embed
    mask: Optional[Union[str, Path, Tuple[float, float, float, float]]] = None  # segment: auto, a file or a box
    detect_format: Optional[str] = None  # detect: yolov8 | yolov5 | boxes
    boxes_output: Optional[str] = None  # detect_format boxes: the outputs' names
    scores_output: Optional[str] = None
    labels_output: Optional[str] = None
    target_box: Optional[Tuple[float, float, float, float]] = None  # detect: x0, y0, x1, y1 in original pixels
    target_detection: Optional[int] = None  # detect: the K-th detection of the unoccluded image (default 0)
    conf: Optional[float] = None  # detect: the confidence a detection of the unoccluded image needs (default 0.25)
    nms_iou: Optional[float] = None  # detect: the IoU above which NMS drops the weaker box (default 0.45)
    reference: Optional[Union[str, Path]] = None  # embed: an image prepared like the input
    reference_embedding: Optional[Union[str, Path]] = None  # embed: a .npy vector

    @property
    def refine_settings(self) -> Tuple[int, float]:
        """(refine_step, refine_budget) with their defaults for None."""
        step = REFINE_STEP if self.refine_step is None else int(self.refine_step)
        return step, REFINE_BUDGET if self.refine_budget is None else float(self.refine_budget)

    def with_overrides(self, overrides: dict) -> ExplainOptions:
        """A copy with keyword overrides (``patch=32``, ``score="logit"``): unknown names are a TypeError."""
        if not overrides:
            return self
        unknown = set(overrides) - set(ExplainOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return ExplainOptions(**{**self.__dict__, **overrides})

    def checked(self) -> ExplainOptions:
        """A copy with every field converted and range-checked (raises OccludeError naming the parameter)."""
        given = [name for name in ("refine_step", "refine_budget") if getattr(self, name) is not None]
        if given and not self.refine:
            verb = "applies" if len(given) == 1 else "apply"
            raise OccludeError(
                f"{' and '.join(given)} {verb} to refine (coarse-to-fine), which is off", params=(*given, "refine")
            )
        if self.refine and len(given) < 2:  # None: the default, as for other settings
            return replace(
                self,
                refine_step=REFINE_STEP if self.refine_step is None else self.refine_step,
                refine_budget=REFINE_BUDGET if self.refine_budget is None else self.refine_budget,
            ).checked()
        # the values' own conversions and checks first, then the loaders' (medical transforms), then the core's
        self._check_numbers()
        fields = {
            **self.__dict__,
            "patch": as_size(self.patch, "patch") if self.patch is not None else None,
            "stride": as_size(self.stride, "stride") if self.stride is not None else None,
            "score": self._score(),
            "region": self._region(),
            "incremental": self._incremental(),
            "batches": self._batches(),
            "target": self._target(),
        }
        fields.update(self._medical_checked())
        fields.update(checked_task_fields(self))
        if self.refine:
            check_refine(*self.refine_settings)
        fields["baseline"] = parse_baseline(self.baseline)
        return ExplainOptions(**fields)

    def _target(self) -> Optional[Union[int, str]]:
        """A class index (any integer type, or a whole float: ``3.0`` is class 3, never the label "3.0") or a
        label; a bool or a fractional number is one error naming ``target``."""
        t = self.target
        if isinstance(t, (bool, np.bool_)) or (isinstance(t, (float, np.floating)) and not float(t).is_integer()):
            raise OccludeError(f"target must be a class index or a label, got {t!r}", params=("target",))
        return int(t) if isinstance(t, (int, float, np.integer, np.floating)) else t

    def _check_numbers(self) -> None:
        for name, optional in _NUMBERS:
            value = getattr(self, name)
            if not (optional and value is None) and (
                isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
            ):
                raise OccludeError(f"{name} must be a number, got {value!r}", params=(name,))
        for name in ("top_k", "batch_size"):
            value = getattr(self, name)
            if value is not None and int(value) != value:
                raise OccludeError(f"{name} must be a whole number, got {value}", params=(name,))
        if self.top_k < 1:
            raise OccludeError(f"top_k must be at least 1, got {self.top_k}", params=("top_k",))
        if self.batch_size is not None and self.batch_size < 1:
            raise OccludeError(f"batch_size must be at least 1, got {self.batch_size}", params=("batch_size",))
        if self.blur_sigma is not None and not (np.isfinite(self.blur_sigma) and self.blur_sigma > 0):
            raise OccludeError(
                f"blur_sigma must be a positive number of pixels, got {self.blur_sigma}", params=("blur_sigma",)
            )
        if int(self.seed) != self.seed or not 0 <= self.seed < 2**63:
            raise OccludeError(f"seed must be a whole number from 0 to 2^63-1, got {self.seed}", params=("seed",))

    def _incremental(self) -> str:
        incremental = str(getattr(self.incremental, "value", self.incremental))
        if incremental not in INCREMENTAL_MODES:
            raise OccludeError(
                f"incremental must be one of {', '.join(INCREMENTAL_MODES)}, got {self.incremental!r}",
                params=("incremental",),
            )
        return incremental

    def _batches(self) -> str:
        batches = str(getattr(self.batches, "value", self.batches))
        if batches not in BATCH_MODES:
            raise OccludeError(
                f"batches must be one of {', '.join(BATCH_MODES)}, got {self.batches!r}", params=("batches",)
            )
        return batches

    def _score(self) -> ScoreKind:
        try:
            return ScoreKind(score_name(self.score))
        except ValueError:
            raise OccludeError(
                f"score must be one of {', '.join(k.value for k in ScoreKind)}, got {self.score!r}", params=("score",)
            ) from None

    def _region(self) -> Optional[Tuple[float, ...]]:
        if self.region is None:
            return None
        try:
            region = tuple(float(v) for v in self.region)
        except (TypeError, ValueError):
            raise OccludeError(f"region must be x0, y0, x1, y1, got {self.region!r}", params=("region",)) from None
        if len(region) not in (4, 6) or not all(np.isfinite(region)):
            raise OccludeError(
                f"region must be four finite numbers x0, y0, x1, y1 (a volume: six, x0, y0, z0, x1, y1, z1 in mm), "
                f"got {self.region!r}",
                params=("region",),
            )
        if len(region) == 6 and any(b <= a for a, b in zip(region[:3], region[3:])):
            raise OccludeError(
                f"region {','.join(f'{v:g}' for v in region)} is empty: each end must exceed its start",
                params=("region",),
            )
        if len(region) == 4 and (region[2] <= region[0] or region[3] <= region[1]):  # empty on every image
            text = ",".join(f"{v:g}" for v in region)
            raise OccludeError(f"region {text} is empty: need x0 < x1 and y0 < y1", params=("region",))
        return region

    def _medical_checked(self) -> dict:
        from ..loaders.medical import parse_intensity_range, parse_window

        chosen = [
            n
            for n, on in (
                ("window", self.window is not None),
                ("intensity_range", self.intensity_range is not None),
                ("zscore", bool(self.zscore)),
            )
            if on
        ]
        if len(chosen) > 1:
            raise OccludeError(
                "choose one intensity transform: window, intensity_range or zscore",
                params=("window", "intensity_range", "zscore"),
            )
        for name in ("window", "display_window"):
            value = getattr(self, name)
            if value is not None and str(value).strip().lower() != "file":
                try:
                    parse_window(str(value))  # a bad value fails here, before any input is read
                except OccludeError as exc:
                    raise OccludeError(str(exc).replace("window", name, 1), params=(name,)) from None
        if self.series_uid is not None and not (isinstance(self.series_uid, str) and self.series_uid.strip()):
            raise OccludeError(f"series_uid must be a UID, got {self.series_uid!r}", params=("series_uid",))
        if self.series_uid is not None and not self.series:
            raise OccludeError("series_uid needs series (a folder of DICOM slices)", params=("series_uid", "series"))
        if self.intensity_range is not None and isinstance(self.intensity_range, str):
            raise OccludeError(
                f"intensity_range must be two numbers (lo, hi), got {self.intensity_range!r}",
                params=("intensity_range",),
            )
        rng = parse_intensity_range(self.intensity_range) if self.intensity_range is not None else None
        if self.zscore_threshold is not None:
            if not self.zscore:
                raise OccludeError("zscore_threshold needs zscore", params=("zscore_threshold",))
            if not np.isfinite(float(self.zscore_threshold)):
                raise OccludeError(
                    f"zscore_threshold must be finite, got {self.zscore_threshold}", params=("zscore_threshold",)
                )
        if self.volume_index is not None and (int(self.volume_index) != self.volume_index or self.volume_index < 0):
            raise OccludeError(
                f"volume_index must be a whole number >= 0, got {self.volume_index}", params=("volume_index",)
            )
        return {"intensity_range": rng, "zscore": bool(self.zscore), "series": bool(self.series)}

    @property
    def medical_transform(self) -> dict:
        """The intensity transform asked for, as VolumePreprocessing.with_transform arguments."""
        return {
            "window": self.window,
            "intensity_range": self.intensity_range,
            "zscore": self.zscore,
            "zscore_threshold": self.zscore_threshold,
        }
