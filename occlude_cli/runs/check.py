"""``occlude check`` from Python (:func:`check_folder`): does the model look where it should? Each input is
explained and its map checked against its region (pointing game, energy share), one row per input, written to
check.json and check.csv (with a picture per input and, asked for, the HTML report)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Union

from ..analyses.checks import CheckRow, check_file, check_min_energy
from ..analyses.medical import VolumeExplanation
from ..analyses.options import ExplainOptions, as_size
from ..analyses.preprocessing import ModelOptions
from ..analyses.regiontable import RegionLabels, region_table
from ..batch.inputs import pseudonymised
from ..errors import OccludeError
from ..outputs.provenance import Deidentifier, deidentifying
from ..outputs.records import check_document
from ..outputs.volumes import write_region_table
from ..outputs.write import check_output_folder, write_check_picture, write_check_summary
from ..pictures.render import RenderStyle
from .common import Opened, RunNotes, find_inputs, open_checked
from .events import QUIET, RunEvents
from .regions import RegionSource


@dataclass
class CheckRun:
    """What :func:`check_folder` did: one row per input (pass, fail or error; then the arguments that named
    none), the settings written with them, whether Ctrl-C stopped it and after how many of how many inputs."""

    rows: List[CheckRow]
    settings: dict
    interrupted: bool
    done: int
    total: int

    @property
    def document(self) -> dict:
        """check.json's document."""
        return check_document(self.rows, self.settings)

    @property
    def statuses(self) -> set:
        return {row.status for row in self.rows}


def check_folder(
    model,
    inputs: Union[str, Path, Sequence],
    out: Union[str, Path] = "occlude-out",
    options: Optional[ExplainOptions] = None,
    *,
    region: RegionSource = RegionSource(),
    min_energy: Optional[float] = None,
    require_peak: bool = False,
    pictures: bool = True,
    report: bool = False,
    style: Optional[RenderStyle] = None,
    recursive: bool = False,
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    regions: Optional[Union[str, Path]] = None,
    deidentify: bool = False,
    **overrides,
) -> CheckRun:
    """Check every input under ``inputs`` against its region (see :class:`~occlude_cli.runs.regions.RegionSource`):
    an input fails when less than ``min_energy`` of its positive map lies in the region, or (``require_peak``)
    when the map's peak lies outside it; without thresholds every input passes (a report). ``pictures``: a
    STEM.check.png per input; ``report``: OUT/index.html. Every option is checked before any input; an input
    that cannot be checked (unreadable, no mask) is an ``error`` row and the run goes on. ``regions``: a label
    map (NIfTI, DICOM SEG, RT-STRUCT) whose region table each medical input's row gets (and STEM.regions.csv,
    STEM.slices.csv). ``deidentify``: inputs named by pseudonyms, UIDs replaced, no path in any output (see
    :mod:`occlude_cli.outputs.provenance`)."""
    region = region.checked()
    labels = RegionLabels(regions).checked() if regions is not None else None
    min_energy = check_min_energy(min_energy)
    options = (options or ExplainOptions()).with_overrides(overrides).checked()
    style = (style or RenderStyle()).checked()
    opened = open_checked(model, options, model_options)
    region.fits(opened.preprocessing)
    images, problems = find_inputs(
        inputs, out, recursive=recursive, events=events, series=options.series, series_uid=options.series_uid
    )
    images = [item for item in images if region.is_input(item.path)]
    if not images and not problems:
        raise OccludeError("no images to check (files named *.mask.png are masks, not inputs)")
    out = check_output_folder(out)
    settings = {
        "region": region.describe(),
        "min_energy": min_energy,
        "require_peak": bool(require_peak),
        "target": options.target,
        "patch": list(as_size(opened.options.patch, "patch")) if opened.options.patch else None,
        "stride": list(as_size(opened.options.stride, "stride")) if opened.options.stride else None,
        "baseline": opened.options.baseline,
        "score": getattr(opened.options.score, "value", opened.options.score),
        "model": str(model),
        **({"regions": str(labels.path)} if labels is not None else {}),
    }
    deidentifier = _deidentifier(region, labels) if deidentify else None
    if deidentifier is not None:
        images = pseudonymised(images, deidentifier)
    with deidentifying(deidentifier):  # everything written is scrubbed of the paths and UIDs
        rows, interrupted = _check_all(
            images, opened, region, min_energy, require_peak, (out if pictures else None, out), style, events, labels
        )
        done = len(rows)
        rows += [CheckRow(path=arg, status="error", error=problem) for arg, problem in problems]
        for _, problem in problems:
            events.problem(problem)
        write_check_summary(rows, out, settings)
        if report:
            from ..outputs.report import build_report

            build_report(out)
    if deidentifier is not None:  # what the terminal and --json show is de-identified too
        rows = [replace(r, **{k: deidentifier.scrub(v) for k, v in r.__dict__.items()}) for r in rows]
        settings = deidentifier.scrub(settings)
    return CheckRun(rows, settings, interrupted, done, len(images))


def _deidentifier(region: RegionSource, labels: Optional[RegionLabels]) -> Deidentifier:
    """A run's de-identifier with its companion files registered: the one mask, the masks folder, the label
    map (each input's own mask is named after the input's pseudonym)."""
    deidentifier = Deidentifier()
    if region.mask is not None:
        deidentifier.file_name(region.mask, "mask")
    if region.masks is not None:
        deidentifier.register(region.masks, "masks")
    if labels is not None:
        deidentifier.file_name(labels.path, "regions")
    return deidentifier


def _check_all(images, opened: Opened, region, min_energy, require_peak, folders, style, events, labels):
    """Every input checked in order (each told to ``events``); Ctrl-C stops after the rows already made."""
    rows: List[CheckRow] = []
    notes = RunNotes(events)
    events.started(len(images))
    picture_dir, out = folders
    try:
        for item in images:
            events.image_started(item)
            row, explanation = _check_one(item, opened, region, min_energy, require_peak, picture_dir, style, notes)
            rows.append(row)
            if labels is not None and row.status in ("pass", "fail"):
                _region_table(row, explanation, item, labels, out)
            events.image_done(item, rows[-1])
    except KeyboardInterrupt:
        return rows, True
    finally:
        events.finished()
    return rows, False


def _region_table(row: CheckRow, explanation, item, labels: RegionLabels, out: Path) -> None:
    """The row's region table (and STEM.regions.csv, STEM.slices.csv), or the row turned into an error."""
    if not isinstance(explanation, VolumeExplanation):
        row.status, row.error = "error", "regions (a label map) applies to DICOM and NIfTI inputs"
        return
    try:
        table = region_table(explanation.map, explanation.prepared, labels.on_grid(explanation.prepared))
    except OccludeError as exc:
        row.status, row.error = "error", str(exc)
        return
    row.regions = table["regions"]
    write_region_table(table, out, item.key)


def _check_one(item, opened: Opened, region: RegionSource, min_energy, require_peak, picture_dir, style, notes):
    """One input -> its row and explanation (None when it could not be checked): its region (the box, the one
    mask, DIR/<key>.png or the NAME.mask.png next to it), the check, and its picture; a missing per-input mask
    is an error row."""
    source = region.for_image(item)
    if isinstance(source, tuple):
        error, path = source
        return CheckRow(path=str(item.path), status="error", mask=str(path), error=error), None
    kept: dict = {}
    row = check_file(
        opened.classifier,
        item.path,
        opened.options,
        preprocessing=opened.preprocessing,
        labels=opened.labels,
        min_energy=min_energy,
        require_peak=require_peak,
        keep=kept,
        **source,
    )
    if "explanation" in kept:
        notes.tell(kept["explanation"])
    if picture_dir is not None and "explanation" in kept and row.status in ("pass", "fail"):
        written = write_check_picture(
            kept["explanation"], row, kept["region"], picture_dir, item.key, box=region.box, style=style
        )
        row.overlay = written.name if "/" not in item.key else f"{item.key}.check.png"
    return row, kept.get("explanation")
