"""``occlude check`` from Python (:func:`check_folder`): does the model look where it should? Each input is
explained and its map checked against its region (pointing game, energy share), one row per input, written to
check.json and check.csv (with a picture per input and, asked for, the HTML report)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from ..analyses.checks import CheckRow, check_file, check_min_energy
from ..analyses.medical import VolumeExplanation
from ..analyses.options import ExplainOptions, as_size
from ..analyses.preprocessing import ModelOptions
from ..analyses.regiontable import RegionLabels, region_table
from ..batch.inputs import StreamedInputs, pseudonymised
from ..errors import OccludeError
from ..loaders.images import prepare_image
from ..outputs.provenance import deidentifying
from ..outputs.records import check_document
from ..outputs.volumes import write_region_table
from ..outputs.write import check_output_folder, write_check_picture, write_check_summary
from ..pictures.render import RenderStyle, shared_limit
from .ci_cases import check_cases, checked_targets, write_reports
from .common import Opened, RunNotes, deidentifier_for, find_inputs, open_checked
from .events import QUIET, RunEvents, deidentified
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
    junit=None,
    summary_md=None,
    null: bool = False,
    regions: Optional[Union[str, Path]] = None,
    deidentify: bool = False,
    timing: bool = True,
    **overrides,
) -> CheckRun:
    """Check every input under ``inputs`` against its region (see :class:`~occlude_cli.runs.regions.RegionSource`):
    an input fails when less than ``min_energy`` of its positive map lies in the region, or (``require_peak``)
    when the map's peak lies outside it; without thresholds every input passes (a report). ``pictures``: a
    STEM.check.png per input; ``report``: OUT/index.html. Every option is checked before any input; an input
    that cannot be checked (unreadable, no mask) is an ``error`` row and the run goes on. ``junit``: also write
    a JUnit XML file there (one test case per input); ``summary_md``: append a markdown job summary to that
    file or those files (see :mod:`occlude_cli.outputs.ci`). ``inputs`` ``"-"``: the paths are read from stdin as
    the run goes (``null``: NUL-separated). ``regions``: a label map (NIfTI, DICOM SEG, RT-STRUCT) whose region
    table each medical input's row gets (and STEM.regions.csv, STEM.slices.csv). ``deidentify``: inputs named by
    pseudonyms, UIDs replaced, no path in any output (see :mod:`occlude_cli.outputs.provenance`). ``timing``
    False: no seconds recorded, so reruns write byte-identical files."""
    region = region.checked()
    labels = RegionLabels(regions).checked() if regions is not None else None
    junit, summary_md = checked_targets(junit, summary_md)
    min_energy = check_min_energy(min_energy)
    options = (options or ExplainOptions()).with_overrides(overrides).checked()
    style = (style or RenderStyle()).checked()
    opened = open_checked(model, options, model_options)
    region.fits(opened.preprocessing)
    found, problems = find_inputs(
        inputs,
        out,
        recursive=recursive,
        events=events,
        null=null,
        series=options.series,
        series_uid=options.series_uid,
        deidentify=deidentify,
    )
    streamed = found if isinstance(found, StreamedInputs) else None
    images: Iterable = (item for item in found if region.is_input(item.path))
    if streamed is None:
        images = list(images)
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
    deidentifier = deidentifier_for(region, labels, problems) if deidentify else None
    if deidentifier is not None:
        images = pseudonymised(list(images), deidentifier)  # (paths from stdin: read whole first)
        events = deidentified(events, deidentifier)
    shared = _SharedPictures(opened, style) if pictures and style.shared else None
    with deidentifying(deidentifier):  # everything written is scrubbed of the paths and UIDs
        folders = (out if pictures else None, out)
        rows, interrupted = _check_all(
            images, opened, region, min_energy, require_peak, folders, style, events, labels, shared
        )
        if shared is not None:
            if not interrupted:
                settings["color_limit"] = shared.draw(out, region, events)
            shared.close()
        done = len(rows)
        for row in rows if not timing else ():
            row.seconds = None
        rows += [CheckRow(path=arg, status="error", error=problem) for arg, problem in problems]
        for _, problem in problems:
            events.problem(problem)
        if streamed is not None:  # told as they came
            rows += [CheckRow(path=arg, status="error", error=problem) for arg, problem in streamed.problems]
            if not rows:
                raise OccludeError("no images to check: stdin named none")
        write_check_summary(rows, out, settings)
        write_reports(check_cases(rows, min_energy), "occlude check", junit, summary_md, worse="low", settings=settings)
        if report:
            from ..outputs.report import build_report

            build_report(out)
    if deidentifier is not None:  # what the terminal and --json show is de-identified too
        rows = [replace(r, **{k: deidentifier.scrub(v) for k, v in r.__dict__.items()}) for r in rows]
        settings = deidentifier.scrub(settings)
    return CheckRun(rows, settings, interrupted, done, len(images) if isinstance(images, list) else done)


def _check_all(images, opened: Opened, region, min_energy, require_peak, folders, style, events, labels, shared=None):
    """Every input checked in order (each told to ``events``); Ctrl-C stops after the rows already made."""
    rows: List[CheckRow] = []
    notes = RunNotes(events)
    events.started(len(images) if isinstance(images, list) else None)
    picture_dir, out = folders
    try:
        for item in images:
            events.image_started(item)
            row, explanation = _check_one(
                item, opened, region, min_energy, require_peak, picture_dir, style, notes, shared
            )
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


def _check_one(
    item, opened: Opened, region: RegionSource, min_energy, require_peak, picture_dir, style, notes, shared=None
):
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
    if shared is not None and "explanation" in kept and row.status in ("pass", "fail"):
        shared.keep(item, row, kept["explanation"], kept["region"])
        row.overlay = f"{item.key}.check.png"
    elif picture_dir is not None and "explanation" in kept and row.status in ("pass", "fail"):
        written = write_check_picture(
            kept["explanation"], row, kept["region"], picture_dir, item.key, box=region.box, style=style
        )
        row.overlay = written.name if "/" not in item.key else f"{item.key}.check.png"
    return row, kept.get("explanation")


class _SharedPictures:
    """``color_limit`` shared: each checked input's map and region kept in a temporary folder (memory stays
    bounded), then every STEM.check.png drawn on one limit over all the maps, each input's photo read again."""

    def __init__(self, opened: Opened, style: RenderStyle) -> None:
        self.opened, self.style = opened, style
        self.folder = tempfile.TemporaryDirectory(prefix="occlude-check-")
        self.kept: List[tuple] = []

    def keep(self, item, row: CheckRow, explanation, region_mask) -> None:
        index = len(self.kept)
        np.save(Path(self.folder.name) / f"{index}.map.npy", np.asarray(explanation.map, dtype=np.float64))
        np.save(Path(self.folder.name) / f"{index}.region.npy", np.asarray(region_mask))
        light = replace(
            explanation,
            image=None,
            maps=explanation.maps[:0],
            occlusion=replace(
                explanation.occlusion,
                windows=explanation.occlusion.windows[:0],
                window_scores=explanation.occlusion.window_scores[:0],
                measured=None,
            ),
        )
        self.kept.append((item, row, light))

    def _map(self, index: int) -> np.ndarray:
        return np.load(Path(self.folder.name) / f"{index}.map.npy")

    def draw(self, out: Path, region: RegionSource, events: RunEvents) -> Optional[float]:
        """Every kept input's picture on the shared limit; returns the limit (None when nothing was kept)."""
        if not self.kept:
            return None
        limit = shared_limit((self._map(i) for i in range(len(self.kept))), self.style)
        fixed = self.style.with_limit(limit)
        for index, (item, row, light) in enumerate(self.kept):
            try:
                prepared = prepare_image(item.path, self.opened.preprocessing)
            except OccludeError as exc:
                events.note(f"{item.path}: no picture ({exc})")
                continue
            values = self._map(index)
            explanation = replace(light, image=prepared, maps=values[None])
            mask = np.load(Path(self.folder.name) / f"{index}.region.npy")
            write_check_picture(explanation, row, mask, out, item.key, box=region.box, style=fixed)
        return limit

    def close(self) -> None:
        self.folder.cleanup()
