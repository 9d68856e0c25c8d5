"""What every library run begins with: the model opened and the options checked against it before any image,
the inputs found (never the run's own output folder nor an earlier occlude output), and the notes of how the
maps were computed, told once per run."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from ..analyses.options import ExplainOptions
from ..analyses.plan import check_run
from ..analyses.preprocessing import ModelOptions, open_model
from ..analyses.tasks.spec import default_resize
from ..batch.inputs import STDIN, StreamedInputs, discover_inputs
from ..errors import OccludeError
from ..loaders.model import OnnxClassifier
from ..outputs.provenance import Deidentifier
from .events import RunEvents


@dataclass
class Opened:
    """The model of a run with its preprocessing, class names, the checked options and their windows."""

    classifier: OnnxClassifier
    preprocessing: Any
    labels: Optional[List[str]]
    options: ExplainOptions
    patch: Tuple[int, ...]
    stride: Tuple[int, ...]


def open_checked(model, options: ExplainOptions, model_options: Optional[ModelOptions] = None) -> Opened:
    """``options`` checked, the model opened, and everything checked that needs the model but no image
    (target, labels, patch, score kind, baseline): one OccludeError naming the parameter, before any input."""
    options = options.checked()
    opened = open_model(
        model, model_options, task=options.task, resize=default_resize(options.task, options.detect_format)
    )
    patch, stride = check_run(options, opened.preprocessing, opened.classifier, opened.labels)
    return Opened(opened.classifier, opened.preprocessing, opened.labels, options, patch, stride)


def streamed_inputs(
    given: Sequence, out, null: bool, recursive: bool, shard=None, series: bool = False, notes=None
) -> Optional[StreamedInputs]:
    """The inputs read from stdin when the one PATH is ``"-"`` (or a :class:`StreamedInputs` given as it is),
    else None; ``null`` without ``"-"``, or ``"-"`` with other paths, is an error naming the parameter."""
    if len(given) == 1 and isinstance(given[0], StreamedInputs):
        return given[0]
    dash = [item for item in given if isinstance(item, str) and item == STDIN]
    if not dash:
        if null:
            raise OccludeError("null (NUL-separated paths from stdin) needs '-' as the input", params=("null",))
        return None
    if len(given) > 1:
        raise OccludeError("'-' (paths from stdin) must be the only input")
    if series:
        raise OccludeError("series takes folders as arguments, not paths from stdin", params=("series",))
    if sys.stdin is None:  # started with stdin closed (`occlude run m.onnx - <&-`)
        raise OccludeError("'-' reads the paths from stdin, but stdin is closed")
    return StreamedInputs(sys.stdin.buffer, null=null, recursive=recursive, exclude=[out], shard=shard, notes=notes)


def find_inputs(
    inputs,
    out,
    *,
    recursive: bool,
    events: RunEvents,
    series: bool = False,
    series_uid: Optional[str] = None,
    null: bool = False,
    deidentify: bool = False,
) -> Tuple[Any, List[Tuple[str, str]]]:
    """The inputs under ``inputs`` (files, folders, globs; with ``series``, DICOM series folders) and the
    arguments that named nothing; discovery's notes (files skipped) go to ``events``. ``out`` is never entered
    (no self-feeding). ``"-"``: the paths are read from stdin as the inputs are consumed (a
    :class:`StreamedInputs`; ``null``: NUL-separated), and what they name that is no input is told to ``events``
    as it comes. With ``deidentify`` the notes name no path (:func:`discovery_note`)."""
    notes: list = []
    given = [inputs] if isinstance(inputs, (str, Path, StreamedInputs)) else list(inputs)
    streamed = streamed_inputs(given, out, null, recursive, series=series, notes=notes)
    if streamed is not None:
        streamed.on_problem = events.problem
        return streamed, []
    images, problems = discover_inputs(
        [str(i) for i in given], recursive=recursive, exclude=[out], notes=notes, series=series, series_uid=series_uid
    )
    for path, note in notes:
        events.note(discovery_note(path, note, deidentify))
    return images, problems


def discovery_note(path, note: str, deidentify: bool) -> str:
    """What input discovery tells of a path it skipped (a FIFO, the output folder...): the path and why, or under
    de-identification only why (a skipped file has no pseudonym, and its name may hold a patient's)."""
    return f"a path skipped: {note.removeprefix('skipped: ')}" if deidentify else f"{path}: {note}"


class RunNotes:
    """How a run's maps were computed (``Explanation.notes``: an approximate incremental plan, a plan that
    failed its self-check): each kind told once per run through ``events``, not once per input."""

    def __init__(self, events: RunEvents) -> None:
        self.events = events
        self.seen: set = set()

    def tell(self, explanation) -> None:
        for key, text in getattr(explanation, "notes", {}).items():
            if key not in self.seen:
                self.seen.add(key)
                self.events.note(text)


def deidentifier_for(region=None, labels=None, problems: Sequence[Tuple[str, str]] = ()) -> Deidentifier:
    """A de-identifying run's de-identifier with its companion files registered: the one mask, the masks folder
    (a :class:`~occlude_cli.runs.regions.RegionSource`'s), the label map (``labels``: a
    :class:`~occlude_cli.runs.regions.RegionLabels`), and every argument that named no input (``problems``) as
    ``<path>``. Each input's own mask is named after the input's pseudonym; the inputs get theirs from
    :func:`~occlude_cli.batch.inputs.pseudonymised` (paths from stdin read whole first)."""
    deidentifier = Deidentifier()
    if getattr(region, "mask", None) is not None:
        deidentifier.file_name(region.mask, "mask")
    if getattr(region, "masks", None) is not None:
        deidentifier.register(region.masks, "masks")
    if labels is not None:
        deidentifier.file_name(labels.path, "regions")
    for argument, _ in problems:
        deidentifier.register(argument, "<path>")
    return deidentifier
