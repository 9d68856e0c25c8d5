"""What a library run tells as it goes. Every method of :class:`RunEvents` does nothing: a front end (the
command line's progress bars and log lines, a notebook, a service) subclasses it and shows what it wants.
A run never prints."""

from __future__ import annotations

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
