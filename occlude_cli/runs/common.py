"""What every library run begins with: the model opened and the options checked against it before any image,
the inputs found (never the run's own output folder nor an earlier occlude output), and the notes of how the
maps were computed, told once per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from ..analyses.options import ExplainOptions
from ..analyses.plan import check_run
from ..analyses.preprocessing import ModelOptions, open_model
from ..batch.inputs import InputImage, discover_inputs
from ..loaders.model import OnnxClassifier
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
    opened = open_model(model, model_options)
    patch, stride = check_run(options, opened.preprocessing, opened.classifier, opened.labels)
    return Opened(opened.classifier, opened.preprocessing, opened.labels, options, patch, stride)


def find_inputs(
    inputs, out, *, recursive: bool, events: RunEvents, series: bool = False, series_uid: Optional[str] = None
) -> Tuple[List[InputImage], List[Tuple[str, str]]]:
    """The inputs under ``inputs`` (files, folders, globs; with ``series``, DICOM series folders) and the
    arguments that named nothing; discovery's notes (files skipped) go to ``events``. ``out`` is never entered
    (no self-feeding)."""
    notes: list = []
    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    images, problems = discover_inputs(
        [str(i) for i in given], recursive=recursive, exclude=[out], notes=notes, series=series, series_uid=series_uid
    )
    for path, note in notes:
        events.note(f"{path}: {note}")
    return images, problems


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
