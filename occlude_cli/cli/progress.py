"""The terminal side of a library run's events (:class:`~occlude_cli.runs.events.RunEvents`).

On a live terminal (:func:`~occlude_cli.cli.screen.is_live`): bars redrawn in place, one for the images (when
there are several) and one for the current image's windows, each fitted to the width so that the count and the
ETA stay whatever the width and however long the names; they vanish when the run ends (the table replaces
them). Elsewhere (a pipe, a file, a CI log, ``TERM=dumb``): one logfmt line per finished input, as it
finishes. Warnings are gathered per run (:class:`GatheredWarnings`): each kind in full at its first
occurrence, one line at the end for the rest. ``--quiet`` keeps warnings and errors and drops the rest;
``--verbose`` adds each image's windows. The ETA counts only the images actually computed (``--resume``
skips are not work)."""

from __future__ import annotations

import time
from typing import Collection, Dict, List, Optional, Sequence

from rich.cells import cell_len
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from ..runs.events import RunEvents
from ..text import logfmt, shortened, shown
from .common import in_flags, print_error, print_note, print_warning, stderr
from .screen import clock, is_live, shorten_middle

# ------------------------------------------------------------------------------------------ warnings


class GatheredWarnings:
    """The warnings of one run, grouped by kind (a :class:`~occlude_cli.errors.Notice`'s key): the first of
    each kind is shown in full, naming its input; the others are counted, and :meth:`finish` says how many in
    one line per kind, pointing to the file that lists them all (``where``)."""

    def __init__(self, where: str = "") -> None:
        self.where = where
        self.counts: Dict[str, int] = {}

    def add(self, text: str, params: Sequence[str] = (), key: str = "", source: Optional[str] = None) -> None:
        key = key or text
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] == 1:
            print_warning(in_flags(text, params), source)

    def finish(self) -> None:
        repeated = {key: n - 1 for key, n in self.counts.items() if n > 1}
        for key, more in repeated.items():
            kind = f" ({key})" if len(repeated) > 1 else ""
            where = f": see {self.where}" if self.where else ""
            print_warning(f"the same warning{kind} for {more} more image{'s' if more > 1 else ''}{where}")
        self.counts.clear()


# ------------------------------------------------------------------------------------------ live lines


def bar(fraction: Optional[float], width: int) -> Text:
    """A progress bar of ``width`` cells (dim all along while the total is unknown)."""
    if fraction is None:
        return Text("━" * width, style="bar.back")
    filled = max(0, min(width, int(round(fraction * width))))
    return Text("━" * filled, style="bar.complete") + Text("━" * (width - filled), style="bar.back")


def progress_line(
    width: int,
    name: str,
    done: int,
    total: Optional[int],
    eta: Optional[float],
    rate: str = "",
    elapsed: Optional[float] = None,
    spinner: Optional[Text] = None,
) -> Text:
    """One line of a live display in ``width`` cells: the count and the ETA always; then, while they fit, the
    name (shortened in the middle, 14 cells or at least 6), a bar, the rate and the elapsed time, and what
    is left widens the name and the bar."""
    count = f"{done}/{total}" if total else str(done)
    tail = f"eta {clock(eta)}"
    lead = spinner.cell_len + 1 if spinner is not None else 0
    room = width - lead - len(count) - 1 - len(tail)
    name_w = next((w for w in (min(cell_len(name), 14), min(cell_len(name), 6)) if room >= w + 1), 0)
    room -= name_w + (1 if name_w else 0)
    bar_w = 6 if room >= 7 else 0
    room -= bar_w + (1 if bar_w else 0)
    extras = []
    for extra in (rate, clock(elapsed) if elapsed is not None else ""):
        if extra and room >= len(extra) + 1:
            extras.append(extra)
            room -= len(extra) + 1
    grow = min(room, max(0, min(cell_len(name), 40) - name_w)) if name_w else 0
    name_w += grow
    room -= grow
    bar_w += min(room, 40 - bar_w) if bar_w else 0
    line = Text()
    if spinner is not None:
        line += spinner + Text(" ")
    if name_w:
        line += Text(shorten_middle(name, name_w).ljust(name_w), style="progress.description") + Text(" ")
    if bar_w:
        line += bar(done / total if total else None, bar_w) + Text(" ")
    line += Text(count, style="progress.download")
    for extra in extras:
        line += Text(" " + extra, style="progress.data.speed" if extra == rate else "progress.elapsed")
    line += Text(" " + tail, style="progress.remaining")
    return line


class RunDisplay:
    """The state a run's live display and its ETA are drawn from: inputs started and done, the current input
    and its windows. ``skipping``: the keys of the inputs that ``--resume`` will most likely skip (no work:
    the ETA leaves them out). ``draw`` starts a live display on stderr.

    The ETA is wall-clock: the time per input is the run's time so far over the inputs started that are work
    (a folder run computes an input while the one before is written, so an input is reported done one input
    late; counting the started ones keeps the rate, and a Ray run's parallelism, honest)."""

    def __init__(self, total: Optional[int], draw: bool, label: str = "images", skipping: Collection[str] = ()) -> None:
        self.total, self.label = total, label
        self.skipping = set(skipping)
        self.started = self.last_done = time.monotonic()
        self.done = self.work_started = 0
        # inputs that will be computed (total None: paths read from stdin, counted as they come)
        self.work = None if total is None else total - len(self.skipping)
        self.per_input: Optional[float] = None  # wall seconds per computed input, from the last one done
        self.current: Optional[str] = None  # the key of the input being computed
        self.current_started = self.started
        self.name = ""
        self.windows_done, self.windows_total = 0, 0
        self.windows_started: Optional[float] = None
        self.spinner = Spinner("dots", style="progress.spinner")
        self.live: Optional[Live] = None
        if draw:
            self.live = Live(
                get_renderable=self.render,
                console=stderr,
                transient=True,
                refresh_per_second=8,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()

    def image_started(self, name: str, key: Optional[str] = None) -> None:
        """One input starts (``key``: its key, to tell whether --resume will skip it)."""
        self.name = name
        self.windows_done = self.windows_total = 0
        self.windows_started = None
        if key is None or key not in self.skipping:
            self.work_started += 1
            self.current, self.current_started = key or name, time.monotonic()

    def windows(self, done: int, total: int) -> None:
        if self.windows_started is None:
            self.windows_started = time.monotonic()
        self.windows_done, self.windows_total = done, total

    def image_done(self, computed: bool, key: Optional[str] = None) -> None:
        """One input finished (``key``: its key). ``computed``: it was worked on (not skipped by --resume),
        so the time per input is taken again."""
        now = time.monotonic()
        self.done += 1
        self.last_done = now
        if computed and self.work_started:
            self.per_input = (now - self.started) / self.work_started
        if key is not None and key == self.current:
            self.current = None

    def eta(self) -> Optional[float]:
        """Seconds left: the inputs still to compute (those --resume will skip count for nothing) times the
        time per computed input, plus what the current input still needs; before any input was computed, from
        the current input's windows."""
        if self.total is None or self.work is None:  # paths from stdin: no count, no ETA
            return None
        if self.done >= self.total:
            return 0.0
        now = time.monotonic()
        not_started = max(0, self.work - self.work_started)
        if self.per_input is not None:
            current = max(0.0, self.per_input - (now - self.current_started)) if self.current is not None else 0.0
            return not_started * self.per_input + current
        fraction = self.windows_done / self.windows_total if self.windows_total else 0.0
        if fraction >= 0.05 and self.windows_started is not None:
            per_image = (now - self.windows_started) / fraction
            return max(0.0, (not_started + 1) * per_image - (now - self.windows_started))
        return None

    def windows_eta(self) -> Optional[float]:
        if not self.windows_total or not self.windows_done or self.windows_started is None:
            return None
        spent = time.monotonic() - self.windows_started
        return spent * (self.windows_total - self.windows_done) / self.windows_done

    def render(self) -> Text:
        width = stderr.width
        now = time.monotonic()
        lines: List[Text] = []
        spinner = self.spinner.render(now)
        spin = spinner if isinstance(spinner, Text) else None
        if self.total is None or self.total > 1:
            elapsed = now - self.started
            lines.append(progress_line(width, self.label, self.done, self.total, self.eta(), "", elapsed, spin))
        if self.windows_total or self.total == 1:
            spent = now - self.windows_started if self.windows_started is not None else 0.0
            rate = f"{self.windows_done / spent:.0f} win/s" if spent > 0 and self.windows_done else ""
            eta = self.windows_eta()
            lead = None if self.total is None or self.total > 1 else spin
            lines.append(
                progress_line(width, self.name, self.windows_done, self.windows_total or None, eta, rate, spent, lead)
            )
        return Text("\n").join(lines)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


# ------------------------------------------------------------------------------------------ occlude run


class TerminalEvents(RunEvents):
    """A run's events on stderr (``occlude run``): see the module's docstring. ``where``: the file that lists
    every warning (the run's summary.csv)."""

    def __init__(self, *, quiet: bool = False, json_out: bool = False, verbose: bool = False, where: str = "") -> None:
        live = is_live(stderr)
        self.quiet = quiet or json_out  # Ray's start-up lines too
        self.shows_notes = not quiet
        self.verbose = verbose and not quiet
        self.draws_windows = live and not quiet
        self.wants_explanations = self.verbose
        self.log_lines = not quiet and (not live or self.verbose)  # CI logs: one line per finished image
        self.warnings = GatheredWarnings(where)
        self.display: Optional[RunDisplay] = None
        self.total: Optional[int] = 0
        self.error_params: dict = {}  # a failed row's path -> the parameters its error names (for the table)

    def note(self, text: str, params: Sequence[str] = ()) -> None:
        if self.shows_notes:
            print_note(text, params)

    def problem(self, text: str, params: Sequence[str] = ()) -> None:
        print_error(text, params=params)

    def warning(self, text: str, params: Sequence[str] = (), key: str = "", source: Optional[str] = None) -> None:
        self.warnings.add(text, params, key, source)

    def started(self, total: Optional[int], skipping: Collection[str] = ()) -> None:
        self.total = total
        self.display = RunDisplay(total, draw=self.draws_windows, skipping=skipping)

    def image_started(self, image) -> None:
        if self.display is not None:
            self.display.image_started(shown(image.path.name or image.key), image.key)

    def windows(self, done: int, total: int) -> None:
        if self.display is not None:
            self.display.windows(done, total)

    def explained(self, image, explanation) -> None:
        """--verbose: the image's windows, one logfmt line each (its score and drop for the target)."""
        occlusion = explanation.occlusion
        target = explanation.target
        scores, drops = occlusion.window_scores[:, target], occlusion.drops([target])[:, 0]
        for window, score, drop in zip(occlusion.windows.tolist(), scores.tolist(), drops.tolist()):
            fields = [("window", ",".join(map(str, window))), ("score", f"{score:.4f}"), ("drop", f"{drop:+.4f}")]
            stderr.print(logfmt(("image", str(image.path)), *fields), markup=False, highlight=False)

    def image_done(self, image, row, params: Sequence[str] = ()) -> None:
        display = self.display
        if display is not None:
            display.image_done(row.status == "ok", image.key)
        if row.status == "failed":
            self.error_params[row.path] = tuple(params)
            print_error(failure_text(row), params=params)
        elif self.log_lines:
            count = f"/{self.total}" if self.total is not None else ""
            done = f"{display.done}{count}" if display is not None else None
            unfinished = display is not None and (self.total is None or display.done < self.total)
            eta = clock(display.eta()) if unfinished and display is not None else None
            stderr.print(log_line(row, done, eta), markup=False, highlight=False)

    def finished(self) -> None:
        if self.display is not None:
            self.display.stop()
        self.warnings.finish()

    def interruption(self) -> str:
        """What an interrupted run says: how far it got and how to finish."""
        if self.display is None:
            return "interrupted before the first image; nothing was written for the images"
        done = self.display.done
        if self.total is None:  # paths from stdin: what was not read yet is unknown
            return f"interrupted after {done} image{'s' if done != 1 else ''}; re-run with --resume to finish"
        pending = max(0, self.total - done)
        return (
            f"interrupted after {done} of {self.total} image{'s' if self.total != 1 else ''} ({pending} pending); "
            "re-run with --resume to finish"
        )


def failure_text(row) -> str:
    """One line naming the image once, whether or not the error already names it."""
    error = row.error or "failed"
    return error if row.path in error else f"{row.path}: {error}"


def log_line(row, done: Optional[str] = None, eta: Optional[str] = None) -> str:
    """A finished image as one logfmt line: status, progress, image, target, label, score, seconds (and the
    ETA while images remain); labels and paths quoted and escaped (:func:`occlude_cli.text.for_logfmt`)."""
    pairs = [("status", row.status)]
    if done is not None:
        pairs.append(("done", done))
    pairs.append(("image", row.path))
    if row.target_index is not None:
        pairs.append(("target", row.target_index))
    if row.target_label is not None:
        pairs.append(("label", shortened(row.target_label)))
    if row.original_score is not None:
        pairs.append(("score", f"{row.original_score:.4f}"))
    if row.seconds is not None:
        pairs.append(("seconds", f"{row.seconds:.2f}"))
    if eta is not None:
        pairs.append(("eta", eta))
    return logfmt(*pairs)
