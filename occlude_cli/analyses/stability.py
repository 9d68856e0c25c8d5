"""Is the explanation itself robust? Occlusion maps of noisy copies of an image compared with the clean map,
and, for a suspected (adversarial) patch, whether that patch alone decides the prediction.

* :func:`stability`: ``trials`` copies of the image with seeded uniform noise of ``amplitude`` (a fraction of
  the 0..255 pixel range, e.g. 2/255: every pixel moves by at most 2 levels; results are clipped to 0..255),
  each explained with the clean run's target, patch, stride and baseline; per copy: Spearman rank
  correlation and top-10% overlap (IoU) with the clean map (:mod:`occlude_cli.core.metrics`), whether the
  top-1 class changed, and the copy's target score.
* With a ``box``: the patch test. Occluding only the patch (baseline inside it) shows whether the patch is
  *necessary* for the prediction (it changes) and keeping only the patch (baseline everywhere else) whether
  it is *sufficient* (the prediction stays). ``clean_class``: the class the image should have; then
  ``restores`` says whether occluding the patch gives it back.

Medical inputs (DICOM slices with 2-D models; NIfTI volumes and DICOM series with 3-D models): the noise is
added in real units (e.g. Hounsfield units) on the model grid, before the model's intensity transform, and
``amplitude`` is a fraction of the span that transform maps onto the model's input range (the window width,
the intensity range's width, else the range of the input's values): 2/255 of a 1800 HU window is +-14 HU.
Nothing is clipped (real units have no 0..255 range). The patch test (``box``) is for 2-D inputs.

For a linear model with a zero baseline the noisy map is exactly the clean map plus the occlusion map of the
noise alone (the drop of a window is the sum of weight x input over it), which the tests use as ground truth.

Library only: writes no file, draws nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..core.baselines import default_blur_sigma
from ..core.engine import occlusion_sensitivity
from ..core.metrics import spearman, top_fraction_iou
from ..errors import OccludeError
from ..loaders.images import Preprocessing
from ..loaders.limits import check_count
from ..loaders.maps import region_mask
from ..loaders.model import OnnxClassifier, resolve_target
from ..loaders.volumes import PreparedVolume, intensity_scale, with_grid_data
from .explain import explain
from .explanation import Explanation
from .modality import input_baseline
from .options import ExplainOptions

DEFAULT_TRIALS = 8
DEFAULT_AMPLITUDE = 2 / 255
TOP_FRACTION = 0.1
NO_3D_BOX = "box (the patch test) is x0,y0,x1,y1 in the pixels of a 2-D image: not available for 3-D volumes"


def check_amplitude(amplitude: float) -> float:
    """The noise's largest change as a fraction of the pixel range, checked in [0, 1] (e.g. 2/255)."""
    try:
        value = float(amplitude)
    except (TypeError, ValueError):
        raise OccludeError(f"amplitude must be a number, got {amplitude!r}", params=("amplitude",)) from None
    if not (np.isfinite(value) and 0 <= value <= 1):
        raise OccludeError(
            f"amplitude must be in [0, 1] (a fraction of the pixel range), got {amplitude!r}", params=("amplitude",)
        )
    return value


def noise_pixels(shape, amplitude: float, trials: int, seed: int = 0) -> np.ndarray:
    """(trials, *shape) float64 uniform noise in [-amplitude*255, amplitude*255]: trial k is the k-th draw of
    ``np.random.default_rng(seed)``, so any trial can be reproduced."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-amplitude * 255.0, amplitude * 255.0, size=(int(trials),) + tuple(shape))


@dataclass
class Trial:
    spearman: float
    top_iou: float
    predicted: int
    flipped: bool
    target_score: float


@dataclass
class PatchTest:
    """What the prediction does with the patch occluded (necessary?) and with only the patch kept (sufficient?)."""

    box: List[float]
    pixels: int
    predicted: int  # on the image as given
    occluded_class: int  # top-1 with the patch replaced by the baseline
    occluded_drop: float  # target score: as given - patch occluded
    kept_class: int  # top-1 with everything but the patch replaced
    necessary: bool  # occluding the patch changes the prediction
    sufficient: bool  # the patch alone keeps the prediction
    clean_class: Optional[int] = None
    restores: Optional[bool] = None  # occluding the patch gives clean_class back


@dataclass
class StabilityResult:
    explanation: Explanation  # the clean run
    amplitude: float
    seed: int
    trials: List[Trial]
    noisy_maps: np.ndarray = field(repr=False)  # (trials, H, W) or (trials, D, H, W)
    patch_test: Optional[PatchTest] = None
    # medical inputs: the real-unit span ``amplitude`` is a fraction of, and what it is (see intensity_scale)
    noise_scale: Optional[float] = None
    noise_scale_of: Optional[str] = None

    def noise(self) -> dict:
        """The noise as recorded in STEM.stability.json."""
        if self.noise_scale is None:
            return {"amplitude": self.amplitude, "seed": self.seed, "distribution": "uniform, clipped to 0..255"}
        return {
            "amplitude": self.amplitude,
            "seed": self.seed,
            "distribution": "uniform, in real units on the model grid before the intensity transform, not clipped",
            "scale": self.noise_scale,
            "scale_of": self.noise_scale_of,
            "largest_change": self.amplitude * self.noise_scale,
        }

    def noise_text(self) -> str:
        """The noise in a few words, for the terminal and the picture."""
        if self.noise_scale is None:
            return f"+-{self.amplitude * 255:.3g}/255"
        return f"+-{self.amplitude * self.noise_scale:.3g} ({self.amplitude:.3g} of the {self.noise_scale_of})"

    def summary(self) -> dict:
        rho = np.array([t.spearman for t in self.trials], dtype=np.float64)
        iou = np.array([t.top_iou for t in self.trials], dtype=np.float64)

        def stats(values: np.ndarray) -> dict:
            finite = values[np.isfinite(values)]
            if not finite.size:
                return {"mean": None, "min": None, "max": None}
            return {"mean": float(finite.mean()), "min": float(finite.min()), "max": float(finite.max())}

        return {
            "trials": len(self.trials),
            "amplitude": self.amplitude,
            "spearman": stats(rho),
            "top_iou": stats(iou),
            "top_fraction": TOP_FRACTION,
            "prediction_flips": int(sum(t.flipped for t in self.trials)),
        }


def stability(
    classifier: Union[str, Path, OnnxClassifier],
    image,
    options: Optional[ExplainOptions] = None,
    *,
    preprocessing: Optional[Preprocessing] = None,
    labels: Optional[Sequence[str]] = None,
    amplitude: float = DEFAULT_AMPLITUDE,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    box=None,
    clean_class: Optional[Union[int, str]] = None,
    progress=None,
    **overrides,
) -> StabilityResult:
    """Explain ``image`` and ``trials`` noisy copies of it (seeded by ``seed``; see :func:`noise_pixels`), all
    for the clean run's target with its patch, stride and baseline, and compare each noisy map with the clean
    one. ``box`` (x0, y0, x1, y1 in original image pixels) adds the patch test (see :class:`PatchTest`).
    ``overrides``: ExplainOptions fields (``patch=8``, ``baseline="blur"``) as :func:`explain` takes them."""
    amplitude = check_amplitude(amplitude)
    if int(trials) != trials or trials < 1:
        raise OccludeError(f"trials must be a whole number >= 1, got {trials}", params=("trials",))
    if not isinstance(classifier, OnnxClassifier):
        classifier = OnnxClassifier(classifier)
    if box is not None and len(classifier.input_shape) == 5:  # checked before the clean run is paid for
        raise OccludeError(NO_3D_BOX)
    clean = explain(classifier, image, options, preprocessing=preprocessing, labels=labels, **overrides)
    params = clean.params
    patch, stride = tuple(params["patch"]), tuple(params["stride"])
    score = clean.score
    assert score is not None
    target = clean.target
    prepared = clean.image
    scale, scale_of = intensity_scale(prepared) if isinstance(prepared, PreparedVolume) else (None, None)
    base = np.asarray(prepared.grid.data if isinstance(prepared, PreparedVolume) else prepared.pixels, np.float64)
    each = base.size * 8 + clean.maps[0].nbytes
    check_count(int(trials), each, "trials", "a noisy copy of the image and its map per trial")
    noise = noise_pixels(base.shape, amplitude, int(trials), seed)
    if scale is not None:
        noise *= scale / 255.0  # the same draws, as a fraction of the transform's span instead of 0..255
    batch_size = int(params["batch_size"])
    region = tuple(params["region"]) if params["region"] is not None else None
    blur_sigma = params["blur_sigma"] or default_blur_sigma(patch)
    maps, results = [], []
    for k in range(int(trials)):
        if isinstance(prepared, PreparedVolume):
            copy = with_grid_data(prepared, base + noise[k])
            sample = copy.model_input
            baseline = input_baseline(copy, params["baseline"], seed=params["seed"], blur_sigma=blur_sigma, patch=patch)
        else:
            noisy = np.clip(base + noise[k], 0.0, 255.0)
            sample = prepared.preprocessing.normalise(noisy)
            baseline = input_baseline(
                replace(prepared, pixels=noisy), params["baseline"], seed=params["seed"], blur_sigma=blur_sigma
            )
        occlusion = occlusion_sensitivity(
            sample,
            score,
            patch=patch,
            stride=stride,
            baseline=baseline,
            spatial_axes=prepared.preprocessing.spatial_axes,
            batch_size=batch_size,
            region=region,
        )
        values = occlusion.attribution(target)
        maps.append(values)
        original = occlusion.original_scores
        predicted = int(np.argmax(original))
        results.append(
            Trial(
                spearman=spearman(clean.map, values),
                top_iou=top_fraction_iou(clean.map, values, TOP_FRACTION),
                predicted=predicted,
                flipped=predicted != int(np.argmax(clean.occlusion.original_scores)),
                target_score=float(original[target]),
            )
        )
        if progress is not None:
            progress(k + 1, int(trials))
    test = None
    if box is not None:
        test = patch_test(clean, box, clean_class=clean_class, labels=labels)
    return StabilityResult(clean, amplitude, int(seed), results, np.stack(maps), test, scale, scale_of)


def resolve_clean_class(clean_class, labels, num_classes: int) -> int:
    """The patch test's ``clean_class`` (an index or a label name) -> class index; an error names
    ``clean_class``, not ``target``."""
    try:
        return resolve_target(clean_class, labels, num_classes)
    except OccludeError as exc:
        message = str(exc)
        if message.startswith("target "):
            message = "clean_class " + message[len("target ") :]
        raise OccludeError(message, params=("clean_class",)) from None


def patch_test(clean: Explanation, box, *, clean_class=None, labels: Optional[Sequence[str]] = None) -> PatchTest:
    """Occlude only the patch ``box``, then keep only it, with the clean run's baseline (two forward passes)."""
    pre = clean.image.preprocessing
    if isinstance(clean.image, PreparedVolume) and clean.image.ndim == 3:
        raise OccludeError(NO_3D_BOX)
    mask = region_mask(clean.image, box=box)
    params = clean.params
    ys, xs = np.nonzero(mask)
    sigma = params["blur_sigma"] or default_blur_sigma((int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1))
    baseline = input_baseline(clean.image, params["baseline"], seed=params["seed"], blur_sigma=sigma)
    sample = clean.image.model_input
    shape = [1] * sample.ndim
    for axis, n in zip(pre.spatial_axes, mask.shape):
        shape[axis] = n
    inside = mask.reshape(shape)
    batch = np.stack([np.where(inside, baseline, sample), np.where(inside, sample, baseline)])
    assert clean.score is not None
    scores = clean.score(batch)
    predicted = int(np.argmax(clean.occlusion.original_scores))
    occluded, kept = int(np.argmax(scores[0])), int(np.argmax(scores[1]))
    names = labels if labels is not None else clean.labels
    expected = resolve_clean_class(clean_class, names, scores.shape[1]) if clean_class is not None else None
    from ..loaders.maps import check_box

    return PatchTest(
        box=list(check_box(box)),
        pixels=int(mask.sum()),
        predicted=predicted,
        occluded_class=occluded,
        occluded_drop=float(clean.occlusion.original_scores[clean.target] - scores[0, clean.target]),
        kept_class=kept,
        necessary=occluded != predicted,
        sufficient=kept == predicted,
        clean_class=expected,
        restores=(occluded == expected) if expected is not None else None,
    )
