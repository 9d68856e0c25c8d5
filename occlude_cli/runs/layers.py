"""``occlude layers`` from Python: occlusion inside the model. :func:`layers_folder` cuts the model at an inner tensor
and replaces each channel (or, ``spatial``, each window of the feature map) on every input, aggregates the drops
over the folder and writes layers.json/.csv, layers_images.csv, layers.png and activations.png (or STEM.spatial.*
per input). Where a model can be cut: :func:`occlude_cli.analyses.layers.describe_layers`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..analyses.explain import SATURATION
from ..analyses.explanation import SCHEMA_VERSION
from ..analyses.layers import (
    ChannelImportance,
    ChannelSummary,
    LayerModel,
    SpatialOcclusion,
    aggregate_channels,
    channel_importance,
    check_channels,
    check_replacement,
    dataset_channel_means,
    feature_windows,
    open_layer,
    spatial_occlusion,
    upsample_to_input,
)
from ..analyses.modality import prepare_input
from ..analyses.options import ExplainOptions, Size, as_size
from ..analyses.preprocessing import ModelOptions
from ..batch.inputs import StreamedInputs, pseudonymised
from ..errors import InputsFailed, OccludeError
from ..outputs.analysis_write import layers_document, spatial_document, write_layers, write_spatial
from ..outputs.provenance import deidentifying
from ..outputs.write import check_output_folder
from .common import Opened, deidentifier_for, find_inputs, open_checked
from .events import QUIET, RunEvents, deidentified

PROBABILITIES = ("softmax", "probabilities", "sigmoid", "independent")


@dataclass
class SpatialResult:
    """One input's map on the feature grid (``spatial``) and the files written for it."""

    key: str
    result: SpatialOcclusion
    written: List[Path]


@dataclass
class LayersRun:
    """What :func:`layers_folder` did: the cut, the per-input results (channels or spatial), the folder's channel
    summary, the inputs whose target probability is saturated, how many inputs failed, and the settings."""

    cut: LayerModel
    settings: dict
    results: List[ChannelImportance] = field(default_factory=list)
    spatial: List[SpatialResult] = field(default_factory=list)
    summary: Optional[ChannelSummary] = None
    saturated: List[ChannelImportance] = field(default_factory=list)
    failed: int = 0
    spatial_windows: bool = False  # a run of windows of the feature map (``LayerSettings.spatial``)

    @property
    def document(self) -> dict:
        """layers.json's document (channel runs), or with ``spatial`` every input's STEM.spatial.json document
        in input order (``images``) and how many inputs failed."""
        if self.spatial_windows:
            timing = bool(self.settings.get("timing", True))
            images = [spatial_document(done.result, timing) for done in self.spatial]
            return {"schema": SCHEMA_VERSION, "kind": "layers.spatial-run", "images": images, "failed": self.failed}
        assert self.summary is not None
        return layers_document(self.cut, self.summary, self.results, self.settings)


@dataclass(frozen=True)
class LayerSettings:
    """How to occlude inside the model (the library's defaults): ``replacement`` (zero, mean or dataset),
    ``channels`` (None: all), ``spatial`` windows of ``patch`` feature cells every ``stride`` cells (default the
    patch) instead of channels, the ``top`` channels at each end of the chart, ``show`` activation maps, and the
    ``channel_axis`` of the tensor without its batch axis."""

    replacement: str = "zero"
    channels: Optional[Sequence[int]] = None
    spatial: bool = False
    patch: int = 1
    stride: Optional[Size] = None
    top: int = 10
    show: int = 4
    channel_axis: int = 0

    def checked(self, options: ExplainOptions) -> LayerSettings:
        replacement = check_replacement(self.replacement)
        if self.top < 1:
            raise OccludeError(f"top must be at least 1, got {self.top}", params=("top",))
        if self.show < 0:
            raise OccludeError(f"show must be 0 or more, got {self.show}", params=("show",))
        if self.patch < 1:
            raise OccludeError(f"patch must be at least 1 feature cell, got {self.patch}", params=("patch",))
        if options.baseline != "zero" or options.blur_sigma is not None:
            raise OccludeError(
                "occlude layers replaces feature values as replacement says (zero, mean, dataset); baseline and "
                "blur_sigma fill pixels and do not apply here",
                params=("replacement", "baseline", "blur_sigma"),
            )
        if options.seed != 0:
            raise OccludeError(
                "seed seeds the noise baseline, which occlude layers does not use: it draws nothing at random",
                params=("seed",),
            )
        if options.incremental == "on":  # options are checked: a plain string
            raise OccludeError(
                "incremental on speeds up windows of the input; occlude layers runs the suffix of its cut instead",
                params=("incremental",),
            )
        stride = options.stride if self.stride is None else self.stride
        if stride is not None and not self.spatial:
            raise OccludeError("stride applies to spatial windows only", params=("stride", "spatial"))
        stride = as_size(stride, "stride") if stride is not None else None
        return LayerSettings(
            replacement,
            self.channels,
            self.spatial,
            int(self.patch),
            stride,
            int(self.top),
            int(self.show),
            int(self.channel_axis),
        )


def layers_folder(
    model,
    inputs: Union[str, Path, Sequence],
    layer: str,
    out: Union[str, Path] = "occlude-out",
    options: Optional[ExplainOptions] = None,
    settings: Optional[LayerSettings] = None,
    *,
    timing: bool = True,
    recursive: bool = False,
    null: bool = False,
    model_options: Optional[ModelOptions] = None,
    events: RunEvents = QUIET,
    deidentify: bool = False,
    **overrides,
) -> LayersRun:
    """Cut ``model`` at ``layer`` (checked on the spot: prefix then suffix must give the whole model's output)
    and occlude inside it on every input under ``inputs``: each channel replaced in turn (``settings``: which
    channels, by what) or, with ``settings.spatial``, windows of the feature map. ``options`` gives the target
    and the score kind. Every option, the cut and the channels are checked before any input; an input that
    fails is told through ``events.problem`` and counted in ``failed``. ``inputs`` ``"-"``: the paths are read
    from stdin (``null``: NUL-separated), all of them before the first input (the channels' dataset mean and the
    table need the whole list). ``deidentify``: inputs named by
    pseudonyms, UIDs replaced, no path in any output or event (as :func:`~occlude_cli.runs.run.run_folder`)."""
    options = (options or ExplainOptions()).with_overrides(overrides).checked()
    settings = (settings or LayerSettings()).checked(options)
    # the stride is the feature grid's (settings.stride, in cells): not the input's, checked against its patch
    options = replace(options, stride=None)
    opened = open_checked(model, options, model_options)
    cut = open_layer(opened.classifier, layer, channel_axis=settings.channel_axis)
    check_channels(cut, settings.channels)
    if settings.spatial:
        feature_windows(cut, settings.patch, settings.stride)
    images, problems = find_inputs(
        inputs,
        out,
        recursive=recursive,
        events=events,
        series=options.series,
        series_uid=options.series_uid,
        null=null,
        deidentify=deidentify,
    )
    told = 0  # streamed paths that named nothing, told as they came
    if isinstance(images, StreamedInputs):  # read whole: the inputs are gone through twice and counted first
        stream, images = images, list(images)
        told = len(stream.problems)
    deidentifier = deidentifier_for(problems=problems) if deidentify else None
    events = deidentified(events, deidentifier)
    for _, problem in problems:
        events.problem(problem)
    if not images:
        raise InputsFailed("no readable image among the inputs")
    if deidentifier is not None:
        images = pseudonymised(images, deidentifier)
    out = check_output_folder(out)
    run = LayersRun(
        cut,
        _settings(model, layer, settings, options, timing),
        failed=len(problems) + told,
        spatial_windows=settings.spatial,
    )
    with deidentifying(deidentifier):  # everything written is scrubbed of the paths and UIDs
        dataset_mean = _dataset_mean(cut, images, opened, settings, run, events)
        events.started(len(images))
        for item in images:
            events.image_started(item)
            try:
                done = _one(cut, item, opened, settings, dataset_mean, out, timing, run)
            except OccludeError as exc:
                events.problem(f"{item.shown}: {exc}", exc.params)
                run.failed += 1
                continue
            events.image_done(item, done)
        events.finished()
        if not settings.spatial and run.results:
            _summarise(run, opened, settings, out, {str(i.path): i.shown for i in images})
    if deidentifier is not None:  # what the caller gets (layers.json printed by --json) is de-identified too
        run.settings = deidentifier.scrub(run.settings)
        for result in run.results:
            result.path = deidentifier.scrub(result.path)
        for done in run.spatial:
            done.result.path = deidentifier.scrub(done.result.path)
    return run


def _settings(model, layer: str, settings: LayerSettings, options: ExplainOptions, timing: bool) -> dict:
    return {
        "model": str(model),
        "layer": layer,
        "replacement": settings.replacement,
        "target": options.target,
        "score": getattr(options.score, "value", options.score),
        "channels": list(settings.channels) if settings.channels is not None else None,
        "timing": timing,
    }


def _dataset_mean(cut, images, opened: Opened, settings: LayerSettings, run: LayersRun, events: RunEvents):
    """Each channel's mean over every input and position, for the ``dataset`` replacement (else None)."""
    if settings.replacement != "dataset":
        return None
    readable = []
    for item in images:
        try:
            readable.append(prepare_input(opened.classifier, item.path, opened.options, opened.preprocessing)[0])
        except OccludeError as exc:
            events.problem(f"{item.path}: {exc}", exc.params)
            run.failed += 1
    if not readable:
        raise OccludeError("no image could be read to compute the dataset mean")
    return dataset_channel_means(cut, readable, opened.preprocessing)


def _one(cut, item, opened: Opened, settings: LayerSettings, dataset_mean, out: Path, timing: bool, run: LayersRun):
    """One input: its spatial map (written now) or its channel importance (kept for the summary)."""
    common = dict(
        preprocessing=opened.preprocessing,
        labels=opened.labels,
        replacement=settings.replacement,
        dataset_mean=dataset_mean,
        batch_size=opened.options.batch_size,
    )
    if settings.spatial:
        result, prepared = spatial_occlusion(
            cut, item.path, opened.options, patch=settings.patch, stride=settings.stride, **common
        )
        done = SpatialResult(item.key, result, write_spatial(out, item.key, result, prepared, timing=timing))
        run.spatial.append(done)
        return done
    importance, _, _ = channel_importance(cut, item.path, opened.options, channels=settings.channels, **common)
    run.results.append(importance)
    return importance


def _summarise(run: LayersRun, opened: Opened, settings: LayerSettings, out: Path, shown: dict) -> None:
    """The folder's channel summary, the saturated inputs, the activation panels (each captioned with its input
    as outputs name it: ``shown``, path -> name), and the files."""
    summary = aggregate_channels(run.results)
    run.summary = summary
    run.saturated = [r for r in run.results if r.score_kind in PROBABILITIES and r.original_score >= SATURATION]
    panels = []
    for i in summary.ranking()[: settings.show]:
        channel = int(summary.channels[i])
        most_active = max(run.results, key=lambda r: r.activation[channel])
        prepared, _ = prepare_input(opened.classifier, most_active.path, opened.options, opened.preprocessing)
        name = shown.get(str(most_active.path), most_active.path or "")
        features = np.moveaxis(run.cut.features(prepared.model_input), run.cut.channel_axis, 0)[channel]
        if features.ndim != 2:  # a volume's feature maps: the chart and the tables, no activation pictures
            break
        panels.append(
            (
                prepared.original,
                prepared.crop_box,
                upsample_to_input(features, opened.preprocessing.size),
                f"ch {channel}: drop {summary.mean[i]:.3g}\n{Path(name).name}",
            )
        )
    write_layers(out, run.cut, summary, run.results, run.settings, panels, top=settings.top)
