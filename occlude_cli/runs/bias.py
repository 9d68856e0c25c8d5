"""``occlude bias`` from Python (:func:`bias_folder`): does occluding the same suspected region in every input move
the predictions, against same-size controls at random places? Per-input rows, per-class and overall numbers
with bootstrap intervals, the verdict against thresholds; written to bias.json, bias.csv, bias_classes.csv and
bias.png."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from ..analyses.bias import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CONTROLS,
    BiasRow,
    BiasSummary,
    bias_image,
    check_thresholds,
    summarise_bias,
)
from ..analyses.options import ExplainOptions
from ..analyses.preprocessing import ModelOptions
from ..batch.inputs import StreamedInputs, pseudonymised
from ..errors import InputsFailed, OccludeError
from ..loaders.limits import check_count
from ..outputs.analysis_write import bias_document, write_bias
from ..outputs.provenance import deidentifying
from ..outputs.write import check_output_folder
from .ci_cases import bias_cases, checked_targets, write_reports
from .common import deidentifier_for, find_inputs, open_checked
from .events import QUIET, RunEvents, deidentified
from .regions import RegionSource


@dataclass
class BiasRun:
    """What :func:`bias_folder` measured: one row per input (then the arguments that named none), the summary
    (None when no input could be measured) and the settings written with them."""

    rows: List[BiasRow]
    summary: Optional[BiasSummary]
    settings: dict
    region: str

    @property
    def document(self) -> dict:
        """bias.json's document."""
        return bias_document(self.rows, self.summary, self.settings)

    @property
    def failed(self) -> bool:
        return any(r.status == "error" for r in self.rows)


def _no_windows(options: ExplainOptions) -> ExplainOptions:
    """bias occludes the region and its controls whole, never windows: a stride or incremental inference for
    windows would do nothing, and is refused."""
    if options.stride is not None:
        raise OccludeError(
            "stride: occlude bias occludes the region and its controls whole, not windows", params=("stride",)
        )
    if options.incremental == "on":  # options are checked: a plain string
        raise OccludeError(
            "incremental on speeds up windows; occlude bias occludes the region and its controls whole",
            params=("incremental",),
        )
    return options


def bias_folder(
    model,
    inputs: Union[str, Path, Sequence],
    out: Union[str, Path] = "occlude-out",
    options: Optional[ExplainOptions] = None,
    *,
    region: RegionSource = RegionSource(),
    controls: int = DEFAULT_CONTROLS,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    max_mean_drop: Optional[float] = None,
    max_flip_rate: Optional[float] = None,
    recursive: bool = False,
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    junit=None,
    summary_md=None,
    null: bool = False,
    deidentify: bool = False,
    **overrides,
) -> BiasRun:
    """Occlude each input's region (see :class:`~occlude_cli.runs.regions.RegionSource`) with the options'
    baseline, and ``controls`` same-size regions at random places (seeded by ``options.seed`` plus the input's
    index); aggregate with ``bootstrap`` resamples; fail the verdict when the overall mean drop exceeds
    ``max_mean_drop`` or the flip rate ``max_flip_rate``. Every option is checked before any input. ``junit``:
    also write a JUnit XML file there (one test case per input and one for the verdict); ``summary_md``: append
    a markdown job summary to that file or those files (see :mod:`occlude_cli.outputs.ci`). ``inputs`` ``"-"``:
    the paths are read from stdin as the run goes (``null``: NUL-separated). ``deidentify``: inputs named by
    pseudonyms, UIDs replaced, no path in any output or event (as :func:`~occlude_cli.runs.run.run_folder`)."""
    region = region.checked()
    junit, summary_md = checked_targets(junit, summary_md)
    if int(controls) != controls or controls < 0:
        raise OccludeError(f"controls must be 0 or more, got {controls}", params=("controls",))
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise OccludeError(f"bootstrap must be 0 or more, got {bootstrap}", params=("bootstrap",))
    check_thresholds(max_mean_drop, max_flip_rate)
    options = _no_windows((options or ExplainOptions()).with_overrides(overrides).checked())
    opened = open_checked(model, options, model_options)
    check_count(int(controls), _control_bytes(opened), "controls", "a copy of the model input per control")
    region.fits(opened.preprocessing)
    found, problems = find_inputs(
        inputs,
        out,
        recursive=recursive,
        events=events,
        null=null,
        series=opened.options.series,
        series_uid=opened.options.series_uid,
        deidentify=deidentify,
    )
    deidentifier = deidentifier_for(region, problems=problems) if deidentify else None
    events = deidentified(events, deidentifier)
    for _, problem in problems:
        events.problem(problem)
    streamed = found if isinstance(found, StreamedInputs) else None
    images: Iterable = (item for item in found if region.is_input(item.path))
    if streamed is None:
        if not found:
            raise InputsFailed("no readable image among the inputs")
        images = list(images)
        if not images:
            raise OccludeError("no images to test (files named *.mask.png are masks, not inputs)")
    if deidentifier is not None:
        images = pseudonymised(list(images), deidentifier)  # (paths from stdin: read whole first)
    out = check_output_folder(out)
    with deidentifying(deidentifier):  # everything written is scrubbed of the paths and UIDs
        rows = _bias_all(images, streamed, problems, opened, region, int(controls), events)
        return _bias_written(
            rows,
            model,
            out,
            opened,
            region,
            controls,
            bootstrap,
            (max_mean_drop, max_flip_rate),
            (junit, summary_md),
            deidentifier,
        )


def _bias_all(images, streamed, problems, opened, region: RegionSource, controls: int, events) -> List[BiasRow]:
    """Every input's row in order (each told to ``events``), the arguments that named nothing first."""
    rows: List[BiasRow] = [BiasRow(path=arg, status="error", error=problem) for arg, problem in problems]
    events.started(len(images) if isinstance(images, list) else None)
    for index, item in enumerate(images):
        events.image_started(item)
        rows.append(_bias_one(item, index, opened, region, controls))
        events.image_done(item, rows[-1])
    events.finished()
    if streamed is not None:  # what stdin named that was no input (told as it came)
        rows += [BiasRow(path=arg, status="error", error=problem) for arg, problem in streamed.problems]
        if not rows:
            raise OccludeError("no images to test: stdin named none")
    return rows


def _bias_written(rows, model, out, opened, region, controls, bootstrap, gates, reports, deidentifier) -> BiasRun:
    """The summary, bias.json/.csv/.png and the CI reports of the rows (scrubbed under de-identification)."""
    options = opened.options
    max_mean_drop, max_flip_rate = gates
    junit, summary_md = reports
    settings = {
        "model": str(model),
        "region": region.describe(),
        "baseline": options.baseline,
        "target": options.target,
        "score": getattr(options.score, "value", options.score),
        "controls": int(controls),
    }
    summary = None
    if any(r.status == "ok" for r in rows):
        summary = summarise_bias(
            rows,
            labels=opened.labels,
            max_mean_drop=max_mean_drop,
            max_flip_rate=max_flip_rate,
            bootstrap=int(bootstrap),
            seed=options.seed,
            settings=None,
        )
    if deidentifier is not None:  # every file, the picture's title included, and what the caller gets
        rows = [replace(r, **{k: deidentifier.scrub(v) for k, v in r.__dict__.items()}) for r in rows]
        settings = deidentifier.scrub(settings)
    write_bias(out, rows, summary, settings)
    cases = bias_cases(rows, summary, max_mean_drop, max_flip_rate)
    gate = {"max_mean_drop": max_mean_drop, "max_flip_rate": max_flip_rate}
    write_reports(cases, "occlude bias", junit, summary_md, worse="high", settings={**settings, **gate})
    return BiasRun(rows, summary, settings, settings["region"])


def _control_bytes(opened) -> int:
    """Bytes one control region costs at least: its float32 model input and its mask."""
    pixels = int(np.prod(getattr(opened.preprocessing, "size", (1,))))
    known = [int(d) for d in opened.classifier.input_shape[1:] if d]
    return max(int(np.prod(known)) if known else pixels, pixels) * 4 + pixels


def _bias_one(item, index: int, opened, region: RegionSource, controls: int) -> BiasRow:
    source = region.for_image(item)
    if isinstance(source, tuple):
        return BiasRow(path=str(item.path), status="error", error=source[0])
    try:
        return bias_image(
            opened.classifier,
            item.path,
            opened.options,
            preprocessing=opened.preprocessing,
            labels=opened.labels,
            controls=controls,
            seed=opened.options.seed + index,
            **source,
        )
    except OccludeError as exc:
        return BiasRow(path=str(item.path), status="error", error=str(exc))
