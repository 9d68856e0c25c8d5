"""The terminal side of a library run's events: progress bars on a terminal (windows done, rate, elapsed, ETA,
and an overall bar for several inputs), one line per finished input in a CI log, notes, warnings and error
lines (library parameters named as flags). Nothing but errors under ``--quiet``; no bars under ``--json``."""

from __future__ import annotations

from typing import Optional, Sequence

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..runs.events import RunEvents
from .common import one_line, print_error, print_note, safe, stderr, stderr_is_terminal


class TerminalEvents(RunEvents):
    """A run's events on stderr (``occlude run``)."""

    def __init__(self, *, quiet: bool = False, json_out: bool = False) -> None:
        terminal = stderr_is_terminal()
        self.quiet = quiet or json_out  # Ray's start-up lines too
        self.shows_notes = not quiet
        self.draws_windows = not quiet and not json_out and terminal
        self.log_lines = not quiet and not terminal  # CI logs: one line per finished image, as it finishes
        self.progress: Optional[Progress] = None
        self.overall: Optional[TaskID] = None
        self.windows_task: Optional[TaskID] = None

    def note(self, text: str, params: Sequence[str] = ()) -> None:
        if self.shows_notes:
            print_note(text, params)

    def problem(self, text: str, params: Sequence[str] = ()) -> None:
        print_error(text, params=params)

    def started(self, total: int) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=stderr,
            disable=not self.draws_windows,
            transient=False,
        )
        self.progress.start()
        self.overall = self.progress.add_task("images", total=total, rate="") if total > 1 else None
        self.windows_task = self.progress.add_task("windows", total=None, rate="")

    def image_started(self, image) -> None:
        if self.progress is not None and self.windows_task is not None:
            description = safe(image.source_stem or image.key)
            self.progress.reset(self.windows_task, total=None, description=description, rate="")

    def windows(self, done: int, total: int) -> None:
        if self.progress is None or self.windows_task is None:
            return
        task = self.progress.tasks[self.windows_task]
        elapsed = task.elapsed or 0.0
        rate = f"{done / elapsed:.0f} win/s" if elapsed > 0 else ""
        self.progress.update(self.windows_task, completed=done, total=total, rate=rate)

    def image_done(self, image, row, params: Sequence[str] = ()) -> None:
        if self.progress is not None and self.overall is not None:
            self.progress.advance(self.overall)
        if row.status == "failed":
            print_error(failure_text(row), params=params)
        elif self.log_lines:
            stderr.print(safe(log_line(row)))
        if row.warning and self.shows_notes:
            stderr.print(f"[yellow]warning:[/] {safe(row.path)}: {safe(row.warning)}")

    def finished(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def failure_text(row) -> str:
    """One line naming the image once, whether or not the error already names it."""
    error = row.error or "failed"
    return error if row.path in error else f"{row.path}: {error}"


def log_line(row) -> str:
    target = f"{row.target_index} {row.target_label or ''}".strip() if row.target_index is not None else "-"
    score = f"{row.original_score:.4f}" if row.original_score is not None else "-"
    seconds = f"{row.seconds:.2f}s" if row.seconds is not None else "-"
    return one_line(f"{row.status} {row.path} target={target} score={score} {seconds}")
