"""What an explanation is: the maps of one input, the scores behind them and everything needed to reproduce
them (:class:`Explanation`; a volume's is :class:`~occlude_cli.analyses.volume.VolumeExplanation`), and the
same input at several patch sizes (:class:`ScaleStudy`). Data only: built by :func:`~occlude_cli.explain`,
written by :mod:`occlude_cli.outputs`; an explanation draws itself for a notebook (PNG bytes, no file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.engine import Occlusion
from ..loaders.images import PreparedImage
from ..loaders.model import Head

SCHEMA_VERSION = 1


@dataclass
class Explanation:
    """One image explained: the maps, the scores behind them and everything needed to reproduce them."""

    model: dict
    image: PreparedImage
    targets: List[int]  # targets[0] is the main target; the rest are top_k extras
    labels: Optional[List[str]]
    score_kind: str  # the resolved head kind: softmax, probabilities, sigmoid, independent, logit, raw
    occlusion: Occlusion
    maps: np.ndarray  # (K, H, W) signed maps for ``targets``
    params: dict
    timing: dict = field(default_factory=dict)
    head: Optional[Head] = None
    warnings: List[str] = field(default_factory=list)  # things the user must know (saturation, all-zero map)
    # how the run computed its maps, the same for every image of a run (an approximate incremental plan, a plan
    # that failed its self-check): key -> one line; a command shows each key once per run
    notes: Dict[str, str] = field(default_factory=dict)
    score: Optional[Callable[[np.ndarray], np.ndarray]] = field(default=None, repr=False, compare=False)
    # a task's target drawn on the overlay: {"box": (x0, y0, x1, y1) or None, "mask": bool (height, width) or
    # None}, original pixels (segmentation mask, detection target box)
    drawing: Optional[dict] = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """Pickled without the score function (a closure over the model session): an Explanation travels
        between processes (Ray actors) as data; validate.py rebuilds the score from the head."""
        state = dict(self.__dict__)
        state["score"] = None
        return state

    def __repr__(self) -> str:
        """Short (a notebook prints it): what was explained and the maps' shape, never the arrays."""
        label = self.label(self.target)
        path = getattr(self.image, "path", None)
        return (
            f"{type(self).__name__}(target={self.target}{' ' + repr(label) if label is not None else ''}, "
            f"score_kind={self.score_kind!r}, maps={tuple(self.maps.shape)} {self.maps.dtype}, "
            f"patch={self.params.get('patch')}, stride={self.params.get('stride')}, "
            f"model={Path(str(self.model.get('path', ''))).name!r}, image={Path(path).name if path else None!r}, "
            f"warnings={len(self.warnings)})"
        )

    @property
    def target(self) -> int:
        return self.targets[0]

    @property
    def map(self) -> np.ndarray:
        """(H, W) signed map of the main target at model-input resolution (NaN where not computed)."""
        return self.maps[0]

    def label(self, index: int) -> Optional[str]:
        return self.labels[index] if self.labels and 0 <= index < len(self.labels) else None

    def class_maps(self) -> np.ndarray:
        """(classes, H, W) float32 maps of every class, from the same forward passes."""
        return self.occlusion.attributions(None, dtype=np.float32)

    def header(self) -> dict:
        """The keys every JSON document about this explanation starts with: schema, model, image, target, score."""
        width, height = self.image.original_size
        score = {"kind": self.score_kind, "original": float(self.occlusion.original_scores[self.target])}
        if self.head is not None:
            score.update({"requested": self.head.requested, "rule": self.head.rule})
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model,
            "image": {
                "path": str(self.image.path) if self.image.path is not None else None,
                "width": int(width),
                "height": int(height),
                "crop_box": [float(v) for v in self.image.crop_box],
            },
            "target": {"index": self.target, "label": self.label(self.target)},
            "score": score,
        }

    def map_on_original(self, values: Optional[np.ndarray] = None) -> np.ndarray:
        """The map (or ``values`` at model-input resolution) resampled onto the original image's pixels,
        (height, width) of the original, NaN outside the part the model sees."""
        from ..loaders.images import map_on_original

        return map_on_original(self.map if values is None else values, self.image.original_size, self.image.crop_box)

    def plot(self, ax=None, *, alpha: Optional[float] = None, cmap: Optional[str] = None):
        """Show the overlay in a matplotlib axes (a new figure when ``ax`` is None); returns the axes."""
        import io as _io

        import matplotlib.pyplot as plt
        from PIL import Image as _Image

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(_Image.open(_io.BytesIO(self._repr_png_())))
        ax.set_axis_off()
        return ax

    def _repr_png_(self) -> bytes:
        """The overlay PNG, so an Explanation displays itself in Jupyter."""
        from ..pictures.render import overlay_png

        label = self.label(self.target)
        score = self.occlusion.original_scores[self.target]
        title = f"{label or 'class ' + str(self.target)}: {self.score_kind} {score:.4f}"
        return overlay_png(self.image.original, self.map, self.image.crop_box, title)


@dataclass
class ScaleStudy:
    """The same image explained at several patch sizes: is the explanation stable or an artefact of the patch?"""

    explanations: List[Explanation]
    rank_correlation: np.ndarray  # (K, K) Spearman correlation between the maps

    @property
    def patches(self) -> List[List[int]]:
        return [e.params["patch"] for e in self.explanations]

    def mean_map(self) -> np.ndarray:
        """Multi-scale map: the mean of the per-scale maps, each scaled to [-1, 1] by its largest ``|value|``
        (larger patches give larger drops, so raw maps would let the largest patch dominate)."""
        return multiscale_mean([e.map for e in self.explanations])


def multiscale_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of ``maps``, each scaled to [-1, 1] by its largest |value| (:meth:`ScaleStudy.mean_map`; also
    what a folder's aggregate recomputes from the saved per-scale maps, to the bit)."""
    scaled = []
    for values in maps:
        limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0
        scaled.append(values / limit if limit > 0 else values)
    return np.mean(scaled, axis=0)
