"""Does the occlusion map explain the model? The model parameter randomisation test (Adebayo et al., "Sanity Checks
for Saliency Maps", NeurIPS 2018) and the random-logit test, for any ONNX classifier.

The image is explained with the trained model; then the weights of its layers (:mod:`occlude_cli.inference.randomise`)
are randomised, from the last layer with weights towards the first (*cascading*: each step keeps the layers above
randomised) or one layer at a time (*independent*), and the image is explained again for the same target at each
step. A map that explains the model changes as the weights go; one that survives them explains the image (edges,
contrast), not the model. Each step's map is compared with the original by :func:`~occlude_cli.core.similarity.
map_similarity` (Spearman of the map and of ``|map|``, SSIM, top-10 % IoU). The random-logit test compares the map
of a random other class (seeded) with the target's; it costs nothing, every class's map comes from the same passes.

Writes nothing: the randomised models reach onnxruntime through a ``store`` the caller gives (a temporary folder,
or the folder of ``--export-models``), see :mod:`occlude_cli.runs.sanity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import onnx

from ..core.similarity import SIMILARITY_KEYS, map_similarity
from ..errors import OccludeError, first_line
from ..inference import cache
from ..inference.onnxfile import load_model
from ..inference.randomise import Layer, Randomiser
from ..loaders.model import OnnxClassifier
from .explain import explain
from .explanation import Explanation
from .options import ExplainOptions

MODES = ("cascading", "independent")
CHOICES = ("cascading", "independent", "both")
DEFAULT_TOP_FRACTION = 0.1


@dataclass
class SanityStep:
    """One randomised model: its ``mode``, the layer of the step (``position``, 1 = nearest the output), every
    layer randomised in it, the map for the original target and its similarity to the original map; ``error``
    when the randomised model could not be explained (its output not finite, say)."""

    mode: str
    position: int
    randomised: List[int]
    similarity: Dict[str, float] = field(default_factory=dict)
    map: Optional[np.ndarray] = field(default=None, repr=False)
    target_score: Optional[float] = None
    predicted: Optional[int] = None
    model_file: Optional[str] = None
    error: Optional[str] = None


@dataclass
class RandomLogit:
    """The random-logit test: the map of ``index`` (a random class other than the target) against the target's."""

    index: int
    label: Optional[str]
    similarity: Dict[str, float]
    map: np.ndarray = field(repr=False)


@dataclass
class SanityResult:
    """What :func:`sanity` measured: the original explanation, the model's layers, one step per randomised model
    (in the order run), the random-logit test (None for a one-output head) and the settings."""

    explanation: Explanation
    layers: List[Layer]
    steps: List[SanityStep]
    random_logit: Optional[RandomLogit]
    seed: int
    top_fraction: float

    def steps_of(self, mode: str) -> List[SanityStep]:
        return [s for s in self.steps if s.mode == mode]

    def summary(self) -> dict:
        """Per mode: the steps, and the similarity of the last one (cascading: every chosen layer down to the
        deepest randomised) and the mean over the steps (null where undefined)."""
        out: dict = {}
        for mode in MODES:
            steps = self.steps_of(mode)
            if not steps:
                continue
            out[mode] = {"steps": len(steps), "failed": sum(1 for s in steps if s.error is not None)}
            for key in SIMILARITY_KEYS:
                values = [s.similarity.get(key, float("nan")) for s in steps if s.error is None]
                finite = [v for v in values if np.isfinite(v)]
                out[mode][key] = {
                    "last": values[-1] if values else float("nan"),
                    "mean": float(np.mean(finite)) if finite else float("nan"),
                }
        return out


def check_selection(layers: Sequence[Layer], chosen=None, steps: Optional[int] = None) -> List[int]:
    """The positions the test computes a map at: every layer (both None), the ``chosen`` ones (positions counted
    from the output, 1 = the last layer with weights, or layer names: a node's or a weight tensor's), or ``steps``
    positions spread evenly from the last layer to the first (both ends included). Sorted, without repeats."""
    count = len(layers)
    if chosen is not None and steps is not None:
        raise OccludeError("give layers or steps, not both", params=("layers", "steps"))
    if steps is not None:
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise OccludeError(f"steps must be a whole number of at least 1, got {steps}", params=("steps",))
        if steps == 1:
            return [1]
        return sorted({int(v) for v in np.round(np.linspace(1, count, min(int(steps), count)))})
    if chosen is None:
        return list(range(1, count + 1))
    names: Dict[str, int] = {}
    for layer in layers:
        for name, _ in layer.nodes:
            names.setdefault(name, layer.position)
        for weight in layer.weights:
            names.setdefault(weight.name, layer.position)
    positions = set()
    for item in [chosen] if isinstance(chosen, (int, str)) else list(chosen):
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 1 <= int(item) <= count:
                raise OccludeError(
                    f"layer {item} does not exist: the model has {count} layers with weights (1 = the last)",
                    params=("layers",),
                )
            positions.add(int(item))
        elif str(item) in names:
            positions.add(names[str(item)])
        else:
            raise OccludeError(
                f"no layer with weights is named {str(item)!r} (a Conv, Gemm or MatMul node, or its weight tensor)",
                params=("layers",),
            )
    if not positions:
        raise OccludeError("layers names no layer", params=("layers",))
    return sorted(positions)


def check_mode(mode: str) -> List[str]:
    if mode not in CHOICES:
        raise OccludeError(f"mode must be one of {', '.join(CHOICES)}, got {mode!r}", params=("mode",))
    return list(MODES) if mode == "both" else [mode]


class ModelStore:
    """Where the randomised models go for onnxruntime to load them: ``put`` writes one and returns its path;
    ``done`` is called when the step no longer needs it (a temporary copy is deleted there)."""

    def put(self, mode: str, position: int, model: onnx.ModelProto) -> Path:  # pragma: no cover - interface
        raise NotImplementedError

    def done(self, path: Path) -> None:
        """Nothing to do by default (exported models stay)."""


def sanity(
    model: OnnxClassifier,
    image,
    options: ExplainOptions,
    store: ModelStore,
    *,
    preprocessing=None,
    labels: Optional[Sequence[str]] = None,
    mode: str = "cascading",
    layers=None,
    steps: Optional[int] = None,
    top_fraction: float = DEFAULT_TOP_FRACTION,
    on_step: Optional[Callable[[SanityStep, int], None]] = None,
) -> SanityResult:
    """The randomisation tests of ``image`` with the loaded ``model`` (see the module's docstring). ``mode``:
    cascading, independent or both; ``layers`` / ``steps`` choose the layers (:func:`check_selection`); the random
    weights and the random class are seeded by ``options.seed``. ``on_step(step, total)`` is called as each step
    finishes. The original map is computed first, its target fixes every later map's."""
    modes = check_mode(mode)
    if not 0 < top_fraction <= 1:
        raise OccludeError(f"top_fraction must be in (0, 1], got {top_fraction}", params=("top_fraction",))
    randomiser = Randomiser(load_model(model.path), seed=options.seed)
    positions = check_selection(randomiser.layers, layers, steps)
    original = explain(model, image, options, preprocessing=preprocessing, labels=labels)
    fixed = replace(options, target=original.target)
    total = len(positions) * len(modes)
    done: List[SanityStep] = []
    for each in modes:
        walk = randomiser.cascading(positions) if each == "cascading" else randomiser.independent(positions)
        for position, randomised in walk:
            step = SanityStep(each, position, randomised)
            _explain_step(step, model, image, fixed, store, randomiser, original, top_fraction, preprocessing, labels)
            done.append(step)
            if on_step is not None:
                on_step(step, total)
    return SanityResult(
        original,
        randomiser.layers,
        done,
        random_logit(original, options.seed, top_fraction),
        options.seed,
        top_fraction,
    )


def _explain_step(step, model, image, options, store, randomiser, original, top_fraction, preprocessing, labels):
    """One randomised model stored, loaded (no cache entries: it is thrown away), explained and compared."""
    path = store.put(step.mode, step.position, randomiser.model)
    step.model_file = str(path)
    try:
        with cache.disabled():
            randomised = OnnxClassifier(
                path,
                device="cuda" if model.provider == "CUDAExecutionProvider" else "cpu",
                input_name=model.input.name,
                output_name=model.output.name,
                threads=model.threads,
            )
            e = explain(randomised, image, options, preprocessing=preprocessing, labels=labels)
        step.map = e.map
        step.target_score = float(e.occlusion.original_scores[e.target])
        step.predicted = int(np.nanargmax(e.occlusion.original_scores))
        step.similarity = map_similarity(original.map, e.map, top_fraction)
    except OccludeError as exc:
        step.error = first_line(exc)
    finally:
        store.done(path)


def random_logit(original: Explanation, seed: int, top_fraction: float = DEFAULT_TOP_FRACTION) -> Optional[RandomLogit]:
    """The map of a class drawn at random (seeded) among the classes other than the target, compared with the
    target's map (the same forward passes: no model run). None when the head has one output."""
    classes = int(np.asarray(original.occlusion.original_scores).shape[0])
    if classes < 2:
        return None
    others = [c for c in range(classes) if c != original.target]
    index = int(others[int(np.random.default_rng(int(seed)).integers(len(others)))])
    values = original.occlusion.attributions([index])[0]
    return RandomLogit(index, original.label(index), map_similarity(original.map, values, top_fraction), values)


def model_path(model: Union[str, Path, OnnxClassifier]) -> Path:
    return model.path if isinstance(model, OnnxClassifier) else Path(model)


def method_sanity(reference, maps: Sequence, top_fraction: float = DEFAULT_TOP_FRACTION) -> dict:
    """The randomisation test of another method, from maps its user computed: ``reference`` is the method's map
    with the trained model, ``maps`` pairs each exported model's manifest entry (test, position, layer, file)
    with the method's map with that model (None: missing), all on the model grid. Returns ``steps`` (the entry,
    ``status`` ok or missing, and the similarities of :func:`~occlude_cli.core.similarity.map_similarity`) and
    per test the ``summary`` (the last step's similarities and their mean over the steps)."""
    steps = []
    for entry, values in maps:
        row = {k: entry.get(k) for k in ("test", "position", "layer", "weight", "file")}
        if values is None:
            steps.append({**row, "status": "missing", **{k: None for k in SIMILARITY_KEYS}})
        else:
            steps.append({**row, "status": "ok", **map_similarity(reference, values, top_fraction)})
    summary: dict = {}
    for test in MODES:
        rows = [r for r in steps if r["test"] == test and r["status"] == "ok"]
        if rows:
            summary[test] = {
                key: {
                    "last": rows[-1][key],
                    "mean": float(np.nanmean([r[key] for r in rows]))
                    if np.isfinite([r[key] for r in rows]).any()
                    else float("nan"),
                }
                for key in SIMILARITY_KEYS
            }
    return {"top_fraction": top_fraction, "steps": steps, "summary": summary}
