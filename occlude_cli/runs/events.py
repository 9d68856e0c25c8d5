"""What a library run tells as it goes. Every method of :class:`RunEvents` does nothing: a front end (the
command line's progress bars and log lines, a notebook, a service) subclasses it and shows what it wants.
A run never prints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Collection, Optional, Sequence


class RunEvents:
    """The events of a run, in the order they come. ``params`` name the parameters an error line is about
    (:class:`~occlude_cli.errors.OccludeError`), so that a front end can name them in its own words."""

    #: whether :meth:`windows` is wanted (scoring reports its progress only to a front end that draws it)
    draws_windows: bool = False
    #: nothing but errors is shown: third-party start-up lines (Ray's) are kept off stderr too
    quiet: bool = False
    #: whether :meth:`explained` is wanted (each input's windows and scores, for a front end that shows them)
    wants_explanations: bool = False

    def note(self, text: str, params: Sequence[str] = ()) -> None:
        """Something the user should know, once: a file skipped by discovery, a batch shrunk to fit the memory
        budget, temporary files of a killed run removed, how the maps were computed."""

    def problem(self, text: str, params: Sequence[str] = ()) -> None:
        """An error that does not stop the run: an argument that named no input, an input that failed."""

    def warning(self, text: str, params: Sequence[str] = (), key: str = "", source: Optional[str] = None) -> None:
        """Something the user must know about one input's result (``source``: the input): a saturated score,
        an all-zero map. Told at every occurrence, with the ``key`` of its kind (a
        :class:`~occlude_cli.errors.Notice`'s), so that a front end can show each kind once per run."""

    def started(self, total: Optional[int], skipping: Collection[str] = ()) -> None:
        """The run starts on ``total`` inputs (None: not known yet, the paths are read from stdin);
        ``skipping``: the keys of those that ``resume`` will most likely skip (their results exist), so that an
        ETA counts only the others."""

    def image_started(self, image) -> None:
        """One input starts (a :class:`~occlude_cli.batch.InputImage`)."""

    def windows(self, done: int, total: int) -> None:
        """Windows scored so far for the current input (only when :attr:`draws_windows`)."""

    def explained(self, image, explanation) -> None:
        """One input's explanation, as computed, before its :meth:`image_done` (only when
        :attr:`wants_explanations`)."""

    def image_done(self, image, row, params: Sequence[str] = ()) -> None:
        """One input is finished: its row (status ok, skipped or failed; ``params`` of a failure's error)."""

    def finished(self) -> None:
        """The run is over (also after Ctrl-C); every file it wrote is complete."""


QUIET = RunEvents()


class DeidentifiedEvents(RunEvents):
    """The events of a de-identifying run, as a front end must see them: every text (notes, problems, warnings,
    their sources) and every text field of a row scrubbed by the run's de-identifier (its registered paths
    replaced by their pseudonyms, DICOM UIDs replaced), and each input shown by its pseudonym (its ``path`` is
    the pseudonym), then told to ``events``. ``deidentifier``: a
    :class:`~occlude_cli.outputs.provenance.Deidentifier`."""

    def __init__(self, events: RunEvents, deidentifier) -> None:
        self.events, self.deidentifier = events, deidentifier
        self.draws_windows = events.draws_windows
        self.quiet = events.quiet
        self.wants_explanations = events.wants_explanations

    def _text(self, text):
        return None if text is None else self.deidentifier.scrub_text(str(text))

    def _image(self, image):
        alias = getattr(image, "alias", None)
        if alias is None or not dataclasses.is_dataclass(image):
            return image
        return dataclasses.replace(image, path=Path(alias), source_stem=alias)

    def _row(self, row):
        if isinstance(row, dict):
            return self.deidentifier.scrub(row)
        if dataclasses.is_dataclass(row) and not isinstance(row, type):
            texts = {
                f.name: self.deidentifier.scrub(getattr(row, f.name))
                for f in dataclasses.fields(row)
                if f.init and isinstance(getattr(row, f.name), str)
            }
            return dataclasses.replace(row, **texts)
        return row

    def note(self, text: str, params: Sequence[str] = ()) -> None:
        self.events.note(self._text(text), params)

    def problem(self, text: str, params: Sequence[str] = ()) -> None:
        self.events.problem(self._text(text), params)

    def warning(self, text: str, params: Sequence[str] = (), key: str = "", source: Optional[str] = None) -> None:
        self.events.warning(self._text(text), params, key, self._text(source))

    def started(self, total: Optional[int], skipping: Collection[str] = ()) -> None:
        self.events.started(total, skipping)

    def image_started(self, image) -> None:
        self.events.image_started(self._image(image))

    def windows(self, done: int, total: int) -> None:
        self.events.windows(done, total)

    def explained(self, image, explanation) -> None:
        self.events.explained(self._image(image), explanation)

    def image_done(self, image, row, params: Sequence[str] = ()) -> None:
        self.events.image_done(self._image(image), self._row(row), params)

    def finished(self) -> None:
        self.events.finished()


def deidentified(events: RunEvents, deidentifier) -> RunEvents:
    """``events`` as a de-identifying run tells them (:class:`DeidentifiedEvents`; ``deidentifier`` None: as
    they are)."""
    return events if deidentifier is None else DeidentifiedEvents(events, deidentifier)
