"""``occlude compare`` from Python: another method's map against occlusion's, for one input
(:func:`compare_image`) or a folder with a folder of maps (:func:`compare_folder`: per-input rows and dataset
means with bootstrap intervals), written as STEM.compare.json/.png and compare.json/.csv."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..analyses.options import ExplainOptions
from ..analyses.preprocessing import ModelOptions
from ..analyses.validate import MAP_KINDS, check_fractions, compare_dataset, compare_file, comparison_numbers
from ..core.baselines import parse_baseline
from ..core.fidelity import DEFAULT_FRACTIONS
from ..core.metrics import DEFAULT_STEPS
from ..errors import OccludeError
from ..loaders.maps import read_saliency_map
from ..outputs.names import stem_of
from ..outputs.write import check_output_folder, write_compare_summary, write_comparison
from .common import Opened, RunNotes, find_inputs, open_checked
from .events import QUIET, RunEvents


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
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    **overrides,
) -> Comparison:
    """Explain ``image`` and compare its map with ``other_map`` (a file: 2-D .npy or greyscale PNG, any
    resolution; for a 3-D model a (D, H, W) .npy or a NIfTI map), written as OUT/STEM.compare.json and .png.
    ``name``: the other method's name (default: the map's file name). A bad map fails before the model loads."""
    read_saliency_map(other_map, dims=(2, 3))  # a bad map fails before the model loads
    opened, settings, out = _start(model, out, options, settings, model_options, overrides)
    explanation, other, document = compare_file(
        opened.classifier,
        image,
        other_map,
        opened.options,
        preprocessing=opened.preprocessing,
        labels=opened.labels,
        name=name,
        **settings.keywords(opened.options.batch_size),
    )
    RunNotes(events).tell(explanation)
    written = write_comparison(explanation, other, document, out, stem_of(image))
    return Comparison(explanation, other, document, written)


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
    recursive: bool = False,
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    **overrides,
) -> FolderComparison:
    """Compare every input under ``folder`` with its map ``maps/<relative name>.npy`` (or .png, .tif, .nii.gz):
    one comparison per input with a map, then dataset means with 95% bootstrap intervals, written to
    OUT/compare.json and compare.csv. An input without a map, or that fails, is an ``error`` row."""
    maps = Path(maps)
    if not maps.is_dir():
        raise OccludeError(f"maps must be a folder: {maps}", params=("maps",))
    opened, settings, out = _start(model, out, options, settings, model_options, overrides)
    keywords = settings.keywords(opened.options.batch_size)
    images, problems = find_inputs([str(folder)], out, recursive=recursive, events=events)
    maps_root = maps.resolve()
    images = [i for i in images if maps_root not in i.path.resolve().parents]
    rows: List[dict] = [{"path": arg, "status": "error", "error": problem} for arg, problem in problems]
    notes = RunNotes(events)
    events.started(len(images))
    for item in images:
        events.image_started(item)
        rows.append(_compare_one(item, maps, opened, keywords, name, out, notes))
        events.image_done(item, rows[-1])
    events.finished()
    document = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in keywords.items()},
        "summary": compare_dataset([r for r in rows if r["status"] == "ok"]),
        "images": rows,
    }
    write_compare_summary(document, out)
    return FolderComparison(document, rows)


def _compare_one(item, maps: Path, opened: Opened, keywords: dict, name, out: Path, notes: RunNotes) -> dict:
    """One input's row of compare.json (its comparison files written), or an error row."""
    other = _map_for(maps, item.source_stem)
    if other is None:
        error = f"no map for this image: expected {maps}/{item.source_stem}.npy or .png"
        return {"path": str(item.path), "status": "error", "error": error}
    try:
        explanation, resized, comparison = compare_file(
            opened.classifier,
            item.path,
            other,
            opened.options,
            preprocessing=opened.preprocessing,
            labels=opened.labels,
            name=name,
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
