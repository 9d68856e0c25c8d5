"""``occlude compare`` from Python: another method's map against occlusion's, for one input
(:func:`compare_image`) or a folder with a folder of maps (:func:`compare_folder`: per-input rows and dataset
means with bootstrap intervals), written as STEM.compare.json/.png and compare.json/.csv."""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..analyses.options import ExplainOptions
from ..analyses.preprocessing import ModelOptions
from ..analyses.sanity import method_sanity
from ..analyses.validate import MAP_KINDS, check_fractions, compare_dataset, compare_file, comparison_numbers
from ..core.baselines import parse_baseline
from ..core.fidelity import DEFAULT_FRACTIONS
from ..core.metrics import DEFAULT_STEPS
from ..errors import OccludeError
from ..loaders.maps import read_saliency_map, resize_map
from ..outputs.names import stem_of
from ..outputs.sanity_write import MODELS_MANIFEST, read_models_manifest
from ..outputs.write import check_output_folder, write_compare_summary, write_comparison
from .common import Opened, RunNotes, find_inputs, open_checked
from .events import QUIET, RunEvents
from .regions import RegionSource


@dataclass(frozen=True)
class CompareSettings:
    """How two maps are compared (the library's defaults): deletion/insertion ``steps``, the top ``top_fraction``
    whose overlap is reported, the top-k ``fractions`` of sufficiency and completeness (empty: skipped), the
    other map's ``map_kind`` (attribution or gradient, for infidelity) and the curves' baselines (default the
    run's)."""

    steps: int = DEFAULT_STEPS
    top_fraction: float = 0.1
    fractions: Sequence[float] = DEFAULT_FRACTIONS
    map_kind: str = "attribution"
    deletion_baseline: Optional[str] = None
    insertion_baseline: Optional[str] = None

    def checked(self) -> CompareSettings:
        if int(self.steps) != self.steps or self.steps < 1:
            raise OccludeError(f"steps must be at least 1, got {self.steps}", params=("steps",))
        if not 0 < self.top_fraction <= 1:
            raise OccludeError(f"top_fraction must be in (0, 1], got {self.top_fraction}", params=("top_fraction",))
        if self.map_kind not in MAP_KINDS:
            raise OccludeError(
                f"map_kind must be one of {', '.join(MAP_KINDS)}, got {self.map_kind!r}", params=("map_kind",)
            )
        for param in ("deletion_baseline", "insertion_baseline"):
            if getattr(self, param) is not None:
                parse_baseline(getattr(self, param), param)
        fractions = check_fractions(self.fractions) if self.fractions else ()
        return CompareSettings(
            int(self.steps),
            float(self.top_fraction),
            fractions,
            self.map_kind,
            self.deletion_baseline,
            self.insertion_baseline,
        )

    def keywords(self, batch_size: Optional[int]) -> dict:
        """The keywords of :func:`~occlude_cli.analyses.validate.compare_file` (and compare.json's settings)."""
        return dict(
            steps=self.steps,
            top_fraction=self.top_fraction,
            deletion_baseline=self.deletion_baseline,
            insertion_baseline=self.insertion_baseline,
            batch_size=batch_size,
            fractions=tuple(self.fractions) or None,
            other_kind=self.map_kind,
        )


@dataclass
class Comparison:
    """One input compared: the explanation, the other map on the model grid, the comparison document and the
    files written."""

    explanation: object
    other: object
    document: dict
    written: List[Path]


def _start(model, out, options, settings, model_options, overrides) -> Tuple[Opened, CompareSettings, Path]:
    settings = (settings or CompareSettings()).checked()
    opened = open_checked(model, (options or ExplainOptions()).with_overrides(overrides), model_options)
    return opened, settings, check_output_folder(out)


def compare_image(
    model,
    image,
    other_map,
    out="occlude-out",
    options: Optional[ExplainOptions] = None,
    settings: Optional[CompareSettings] = None,
    *,
    name: Optional[str] = None,
    region: Optional[RegionSource] = None,
    sanity: Optional[Union[str, Path]] = None,
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    **overrides,
) -> Comparison:
    """Explain ``image`` and compare its map with ``other_map`` (a file: 2-D .npy or greyscale PNG, any
    resolution; for a 3-D model a (D, H, W) .npy or a NIfTI map), written as OUT/STEM.compare.json and .png.
    ``name``: the other method's name (default: the map's file name). ``region`` (a box or one mask): the
    relevance mass and rank accuracy of both maps inside it. ``sanity``: a folder written by
    ``sanity_image(..., export_models=DIR)`` holding the other method's maps with each randomised model
    (``DIR/cascading-01.npy`` for ``cascading-01.onnx``, or .png): their similarity to ``other_map``, the same
    numbers the sanity test gives occlusion. A bad map fails before the model loads."""
    if not isinstance(other_map, (str, PathLike)):
        raise OccludeError(
            f"other_map must be a path to a .npy or PNG map, got {type(other_map).__name__} (a map in memory: "
            "compare_maps(explain(model, image), the_map, model))",
            params=("other_map",),
        )
    read_saliency_map(other_map, dims=(2, 3))  # a bad map fails before the model loads
    region = _one_region(region)
    randomised = _sanity_maps(sanity) if sanity is not None else None
    opened, settings, out = _start(model, out, options, settings, model_options, overrides)
    if randomised is not None:
        _check_sanity_model(randomised[0], opened, Path(sanity))  # type: ignore[arg-type]
    explanation, other, document = compare_file(
        opened.classifier,
        image,
        other_map,
        opened.options,
        preprocessing=opened.preprocessing,
        labels=opened.labels,
        name=name,
        region=({"box": region.box} if region.box is not None else {"mask": region.mask}) if region else None,
        **settings.keywords(opened.options.batch_size),
    )
    RunNotes(events).tell(explanation)
    if randomised is not None:
        document["sanity"] = {
            "folder": str(sanity),
            **method_sanity(other, _on_grid(randomised[1], explanation), settings.top_fraction),
        }
    written = write_comparison(explanation, other, document, out, stem_of(image))
    return Comparison(explanation, other, document, written)


def _one_region(region: Optional[RegionSource]) -> Optional[RegionSource]:
    """compare's region: one box or one mask for the image (or None), checked before the model loads."""
    if region is None:
        return None
    region = region.checked()
    if region.box is None and region.mask is None:
        raise OccludeError("a region for one image is a box or a mask", params=("box", "mask"))
    return region


def _sanity_maps(folder) -> Tuple[dict, List[Tuple[dict, Optional[Path]]]]:
    """The manifest of an export folder and, per exported model, the other method's map beside it (or None)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OccludeError(
            f"sanity must be a folder written by occlude sanity --export-models: {folder}", params=("sanity",)
        )
    manifest = read_models_manifest(folder)
    if manifest is None or manifest.get("kind") != "sanity-models":
        raise OccludeError(
            f"sanity folder {folder} holds no {MODELS_MANIFEST}: export the randomised models with occlude sanity "
            "--export-models",
            params=("sanity",),
        )
    maps = []
    for entry in manifest.get("models") or []:
        stem = Path(str(entry.get("file") or "")).stem
        maps.append((entry, _map_for(folder, stem) if stem else None))
    if not any(path is not None for _, path in maps):
        raise OccludeError(
            f"no maps in {folder}: save the method's map with each model next to it (cascading-01.npy for "
            "cascading-01.onnx, or .png)",
            params=("sanity",),
        )
    for _, path in maps:
        if path is not None:
            read_saliency_map(path, dims=(2,))  # a bad map fails before the model loads
    return manifest, maps


def _check_sanity_model(manifest: dict, opened: Opened, folder: Path) -> None:
    expected = (manifest.get("model") or {}).get("sha256")
    if expected != opened.classifier.sha256:
        raise OccludeError(
            f"the models in {folder} were randomised from another model (sha256 {str(expected)[:12]}..., this one "
            f"{opened.classifier.sha256[:12]}...)",
            params=("sanity",),
        )


def _on_grid(maps, explanation) -> List[Tuple[dict, Optional[np.ndarray]]]:
    """Each map read and resized onto the model grid like the other map (cropped like the image first)."""
    image = explanation.image
    out = []
    for entry, path in maps:
        values = None
        if path is not None:
            values = resize_map(
                read_saliency_map(path, dims=(2,)),
                image.preprocessing.size,
                original_size=image.original_size,
                crop_box=image.crop_box,
            )
        out.append(({**entry, "file": path.name if path is not None else entry.get("file")}, values))
    return out


@dataclass
class FolderComparison:
    """A folder compared: compare.json's document (settings, dataset summary, one row per input)."""

    document: dict
    rows: List[dict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r["status"] == "error" for r in self.rows)


def compare_folder(
    model,
    folder,
    maps,
    out="occlude-out",
    options: Optional[ExplainOptions] = None,
    settings: Optional[CompareSettings] = None,
    *,
    name: Optional[str] = None,
    region: Optional[RegionSource] = None,
    recursive: bool = False,
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    **overrides,
) -> FolderComparison:
    """Compare every input under ``folder`` with its map ``maps/<relative name>.npy`` (or .png, .tif, .nii.gz):
    one comparison per input with a map, then dataset means with 95% bootstrap intervals, written to
    OUT/compare.json and compare.csv. An input without a map, or that fails, is an ``error`` row. ``region``
    (a box, one mask, or a folder of per-input masks): the relevance mass and rank accuracy inside it."""
    maps = Path(maps)
    if not maps.is_dir():
        raise OccludeError(f"maps must be a folder: {maps}", params=("maps",))
    region = region.checked() if region is not None else None
    opened, settings, out = _start(model, out, options, settings, model_options, overrides)
    keywords = settings.keywords(opened.options.batch_size)
    images, problems = find_inputs([str(folder)], out, recursive=recursive, events=events)
    maps_root = maps.resolve()
    images = [i for i in images if maps_root not in i.path.resolve().parents]
    if region is not None:
        images = [i for i in images if region.is_input(i.path)]
    rows: List[dict] = [{"path": arg, "status": "error", "error": problem} for arg, problem in problems]
    notes = RunNotes(events)
    events.started(len(images))
    for item in images:
        events.image_started(item)
        rows.append(_compare_one(item, maps, opened, keywords, name, out, notes, region))
        events.image_done(item, rows[-1])
    events.finished()
    document = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in keywords.items()},
        "summary": compare_dataset([r for r in rows if r["status"] == "ok"]),
        "images": rows,
    }
    write_compare_summary(document, out)
    return FolderComparison(document, rows)


def _compare_one(item, maps: Path, opened: Opened, keywords: dict, name, out: Path, notes: RunNotes, region) -> dict:
    """One input's row of compare.json (its comparison files written), or an error row."""
    other = _map_for(maps, item.source_stem)
    if other is None:
        error = f"no map for this image: expected {maps}/{item.source_stem}.npy or .png"
        return {"path": str(item.path), "status": "error", "error": error}
    source = region.for_image(item) if region is not None else None
    if isinstance(source, tuple):
        return {"path": str(item.path), "status": "error", "map": str(other), "error": source[0]}
    try:
        explanation, resized, comparison = compare_file(
            opened.classifier,
            item.path,
            other,
            opened.options,
            preprocessing=opened.preprocessing,
            labels=opened.labels,
            name=name,
            region=source,
            **keywords,
        )
        notes.tell(explanation)
        write_comparison(explanation, resized, comparison, out, item.key)
        return {"path": str(item.path), "status": "ok", "map": str(other), **comparison_numbers(comparison)}
    except OccludeError as exc:
        return {"path": str(item.path), "status": "error", "map": str(other), "error": str(exc)}


def _map_for(maps: Path, key: str) -> Optional[Path]:
    for suffix in (".npy", ".png", ".tif", ".tiff", ".nii.gz", ".nii"):
        candidate = maps / f"{key}{suffix}"
        if candidate.is_file():
            return candidate
    return None
