"""What CI systems read: a JUnit XML file (the test view of GitHub, GitLab and Jenkins) and a markdown job summary
(GitHub's ``$GITHUB_STEP_SUMMARY``), from plain data that any command can give.

A command turns each of its items (an image, a region pair, a map) into a :class:`CiCase`: its name, whether it
passed, failed a gate (``failure``), could not be processed (``error``) or was not run (``skipped``), the
measured value and the threshold. Then :func:`write_junit` writes one JUnit file (atomically) and
:func:`append_summary` appends the markdown of :func:`summary_markdown` to each file of
:func:`summary_targets`. Every name and message is outside text: it goes into the XML through
:func:`~occlude_cli.text.for_xml` and into the markdown through :func:`~occlude_cli.text.for_markdown`, so a
file name can neither break the XML nor format, link or inject into the summary.

The JUnit file is valid against the schema that the Jenkins xUnit plugin checks reports with (``junit-10.xsd``,
the Surefire format GitLab's and GitHub's reporters read): ``<testsuites>`` holding one ``<testsuite>`` with
its counts, one ``<testcase>`` per item, a ``<failure>``, ``<error>`` or ``<skipped>`` child with a
``message`` attribute (the value and the threshold) and the details as its text.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ..errors import OccludeError
from ..text import for_markdown, for_xml
from .write import atomic_write_bytes, probe_folder

#: The statuses of a :class:`CiCase` (JUnit's own words).
CASE_STATUSES = ("passed", "failure", "error", "skipped")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class CiCase:
    """One item of a CI report (a JUnit test case, a row of the job summary).

    Args:
        name: what was tested, usually the input's path (outside text: escaped when written).
        classname: the group the CI's test view files the case under, e.g. ``"occlude.check"``.
        status: ``"passed"``, ``"failure"`` (a gate failed), ``"error"`` (the item could not be processed) or
            ``"skipped"``.
        time: seconds spent on the item, or None when not measured.
        message: one line saying why it failed, erred or was skipped; when empty and ``value`` is set, one is
            made from ``metric``, ``value`` and ``threshold``.
        details: longer text, lines separated by newlines (the JUnit element's body, each line escaped; not in
            the summary).
        value: the measured value the gate looked at (None: none).
        threshold: the gate's threshold (None: none).
        metric: the name of ``value``, e.g. ``"energy in region"``.
    """

    name: str
    classname: str = "occlude"
    status: str = "passed"
    time: Optional[float] = None
    message: str = ""
    details: str = ""
    value: Optional[float] = None
    threshold: Optional[float] = None
    metric: str = ""

    def checked(self) -> CiCase:
        """This case, or an :class:`~occlude_cli.errors.OccludeError` naming the bad field."""
        if self.status not in CASE_STATUSES:
            raise OccludeError(
                f"status must be one of {', '.join(CASE_STATUSES)}, not {self.status!r}", params=("status",)
            )
        if self.time is not None and not (math.isfinite(self.time) and self.time >= 0):
            raise OccludeError(f"time must be a finite number of seconds >= 0, not {self.time!r}", params=("time",))
        return self

    @property
    def text(self) -> str:
        """The one-line message: :attr:`message`, or the value against the threshold."""
        if self.message:
            return self.message
        if self.value is None:
            return ""
        said = f"{self.metric or 'value'} {format_number(self.value)}"
        return said if self.threshold is None else f"{said} (threshold {format_number(self.threshold)})"


@dataclass
class CiCounts:
    """How many cases of each status (JUnit's ``tests``, ``failures``, ``errors``, ``skipped``)."""

    tests: int = 0
    passed: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    time: float = 0.0
    by_status: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, cases: Sequence[CiCase]) -> CiCounts:
        """The counts of ``cases``."""
        by = {status: sum(1 for case in cases if case.status == status) for status in CASE_STATUSES}
        return cls(
            tests=len(cases),
            passed=by["passed"],
            failures=by["failure"],
            errors=by["error"],
            skipped=by["skipped"],
            time=sum(case.time or 0.0 for case in cases),
            by_status=by,
        )

    @property
    def ok(self) -> bool:
        """True when nothing failed or erred."""
        return self.failures == 0 and self.errors == 0


def format_number(value: float) -> str:
    """A value as a report shows it: up to 4 significant digits, ``nan``/``inf`` spelled out."""
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _seconds(value: Optional[float]) -> str:
    """A JUnit time: plain decimal seconds (the schema's SUREFIRE_TIME), never an exponent."""
    return f"{max(0.0, float(value or 0.0)):.3f}"


def _attrs(**values) -> str:
    return "".join(f' {key}="{for_xml(value)}"' for key, value in values.items() if value is not None)


def _case_xml(case: CiCase) -> List[str]:
    head = f"    <testcase{_attrs(name=case.name, classname=case.classname, time=_seconds(case.time))}"
    if case.status == "passed" and not case.details:
        return [head + "/>"]
    lines = [head + ">"]
    body = "\n".join(for_xml(line) for line in case.details.split("\n")) if case.details else ""
    if case.status == "passed":
        lines.append(f"      <system-out>{body}</system-out>")
    else:
        kind = {"failure": "gate", "error": "error", "skipped": "skipped"}[case.status]
        lines.append(f"      <{case.status}{_attrs(type=kind, message=case.text)}>{body}</{case.status}>")
    lines.append("    </testcase>")
    return lines


def junit_xml(
    cases: Iterable[CiCase], suite: str = "occlude", properties: Optional[Mapping[str, object]] = None
) -> bytes:
    """The JUnit XML document (UTF-8 bytes) of ``cases`` as one test suite named ``suite``.

    ``properties`` (e.g. the model, the thresholds) go into the suite's ``<properties>``. No timestamp or host
    is written, so the same cases give the same bytes."""
    cases = [case.checked() for case in cases]
    counts = CiCounts.of(cases)
    total = _attrs(
        name=suite,
        tests=str(counts.tests),
        failures=str(counts.failures),
        errors=str(counts.errors),
        time=_seconds(counts.time),
    )
    suite_attrs = _attrs(
        name=suite,
        tests=str(counts.tests),
        failures=str(counts.failures),
        errors=str(counts.errors),
        skipped=str(counts.skipped),
        time=_seconds(counts.time),
    )
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<testsuites{total}>", f"  <testsuite{suite_attrs}>"]
    if properties:
        lines.append("    <properties>")
        for key, value in properties.items():
            shown_value = "" if value is None else value
            lines.append(f"      <property{_attrs(name=key, value=shown_value)}/>")
        lines.append("    </properties>")
    for case in cases:
        lines.extend(_case_xml(case))
    lines += ["  </testsuite>", "</testsuites>", ""]
    return "\n".join(lines).encode("utf-8")


def check_report_target(path: PathLike, kind: str) -> Path:
    """``path`` checked as the target of a CI file before anything is written, so that a report never costs a
    file that is not its own: ``kind`` "junit" (replaced atomically) may only replace an earlier JUnit XML report;
    "summary_md" (appended to) only text (UTF-8, no NUL byte), or a pipe or terminal such as ``/dev/stdout``. A
    missing file is fine (its folders are made). A file that could not be written there (a read-only folder) is
    refused now, not after the images. One OccludeError naming ``kind`` otherwise."""
    path = Path(path)
    noun = "the JUnit report" if kind == "junit" else "the job summary"
    if path.is_dir():
        raise OccludeError(f"{kind} {path} is a folder; {noun} is one file", params=(kind,))
    try:
        mode = path.stat().st_mode
    except OSError:
        _writable(path, kind, path.parent)  # missing: written anew in its folder
        return path
    if not stat.S_ISREG(mode):
        if kind == "summary_md" and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            return path
        raise OccludeError(f"{kind} {path} is not a regular file; {noun} is one file", params=(kind,))
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise OccludeError(f"cannot read {kind} {path}: {exc.strerror or exc}", params=(kind,)) from None
    _writable(path, kind, path.parent if kind == "junit" else None)  # replaced in its folder, or appended to
    if kind == "junit" and head and not _is_junit(head):
        raise OccludeError(
            f"{kind} {path} exists and is not a JUnit XML report: not replacing it (name a new file)", params=(kind,)
        )
    if kind == "summary_md" and not _is_text(head):
        raise OccludeError(
            f"{kind} {path} exists and is not a text file: not appending a markdown summary to it", params=(kind,)
        )
    return path


_SNIFF_BYTES = 8192


def _writable(path: Path, kind: str, folder: Optional[Path]) -> None:
    """A CI file that can be written: a new file (or a replacement) in ``folder``, else appended to ``path``."""
    try:
        if folder is not None:
            probe_folder(folder)
        else:
            open(path, "ab").close()  # appends nothing: only whether appending is allowed
    except OSError as exc:
        raise OccludeError(f"cannot write {kind} {path}: {exc.strerror or exc}", params=(kind,)) from None


def _is_junit(head: bytes) -> bool:
    """Does a file start like a JUnit XML report (an XML declaration or comment, then <testsuites> or
    <testsuite>)?"""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith(b"<") or b"\0" in text:
        return False
    return re.search(rb"<testsuites?[\s>/]", text) is not None


def _is_text(head: bytes) -> bool:
    """Is the start of a file UTF-8 text without NUL (a multi-byte character cut at the end allowed)?"""
    if b"\0" in head:
        return False
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def write_junit(
    path: PathLike,
    cases: Iterable[CiCase],
    suite: str = "occlude",
    properties: Optional[Mapping[str, object]] = None,
) -> Path:
    """Write :func:`junit_xml` of ``cases`` to ``path`` atomically (a temporary file and a rename: a reader
    never sees half a file, an existing file is replaced only by a complete one). Returns the path."""
    path = check_report_target(path, "junit")
    return atomic_write_bytes(path, junit_xml(cases, suite, properties))


def _worst(cases: Sequence[CiCase], worse: Optional[str], limit: int) -> List[CiCase]:
    """Errors, then failures, then the rest by value (lowest first when ``worse == "low"``, highest when
    ``"high"``); without a direction only the cases that did not pass."""
    rank = {"error": 0, "failure": 1, "skipped": 3, "passed": 2}

    def key(case: CiCase):
        value = case.value if case.value is not None and math.isfinite(case.value) else None
        if value is None or worse is None:
            return (rank[case.status], 1, 0.0)
        return (rank[case.status], 0, value if worse == "low" else -value)

    shown_cases = cases if worse else [case for case in cases if case.status in ("error", "failure")]
    return sorted(shown_cases, key=key)[: max(0, limit)]


def _cell(text) -> str:
    return for_markdown(text) if text not in (None, "") else ""


def summary_markdown(
    cases: Sequence[CiCase],
    title: str,
    verdict: Optional[str] = None,
    worst: int = 5,
    worse: Optional[str] = None,
    item: str = "image",
) -> str:
    """A short markdown job summary of ``cases``: a heading with ``title`` and the verdict (default: "passed"
    when nothing failed or erred, else "failed"), a table of counts and the ``worst`` worst cases with their
    values. ``worse``: ``"low"`` when a low value is bad (e.g. the energy in a region), ``"high"`` when a high
    one is (e.g. a prediction shift), None to list only the cases that did not pass. ``item``: what a case is
    (the first column's heading). Every name and message is escaped with
    :func:`~occlude_cli.text.for_markdown`; ``title`` and ``verdict`` too."""
    if worse not in (None, "low", "high"):
        raise OccludeError(f"worse must be 'low', 'high' or None, not {worse!r}", params=("worse",))
    cases = [case.checked() for case in cases]
    counts = CiCounts.of(cases)
    verdict = verdict or ("passed" if counts.ok else "failed")
    lines = [
        f"### {for_markdown(title)}: {for_markdown(verdict)}",
        "",
        "| passed | failed | errors | skipped | total |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {counts.passed} | {counts.failures} | {counts.errors} | {counts.skipped} | {counts.tests} |",
        "",
    ]
    rows = _worst(cases, worse, worst)
    if rows:
        metric = next((case.metric for case in rows if case.metric), "value")
        order = {"low": " (lowest first)", "high": " (highest first)"}.get(worse or "", "")
        lines += [
            f"Worst {for_markdown(item)}s{order}:",
            "",
            f"| {for_markdown(item)} | status | {for_markdown(metric)} | threshold | message |",
            "| --- | --- | ---: | ---: | --- |",
        ]
        for case in rows:
            value = format_number(case.value) if case.value is not None else ""
            threshold = format_number(case.threshold) if case.threshold is not None else ""
            lines.append(
                f"| {_cell(case.name)} | {case.status} | {value} | {threshold} | {_cell(case.message or '')} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def summary_targets(
    summary_md: Union[None, PathLike, Sequence[PathLike]] = None, environ: Optional[Mapping[str, str]] = None
) -> List[Path]:
    """The files a job summary is appended to: ``summary_md`` (one path or several) and, when set and not empty,
    ``$GITHUB_STEP_SUMMARY`` from ``environ`` (default: the process's environment), each once."""
    environ = os.environ if environ is None else environ
    given: List[PathLike] = []
    if summary_md is not None:
        given += [summary_md] if isinstance(summary_md, (str, os.PathLike)) else list(summary_md)
    if environ.get("GITHUB_STEP_SUMMARY"):
        given.append(environ["GITHUB_STEP_SUMMARY"])
    targets: List[Path] = []
    seen = set()
    for item in given:
        path = Path(item)
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            targets.append(path)
    return targets


def append_summary(paths: Union[PathLike, Sequence[PathLike]], text: str) -> List[Path]:
    """Append ``text`` to each of ``paths`` (created when missing, as GitHub's step summary is appended to:
    what earlier steps wrote stays). One ``write`` per file. Returns the paths written."""
    targets = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    data = text.encode("utf-8")
    for path in targets:
        check_report_target(path, "summary_md")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as handle:
                handle.write(data)
        except OSError as exc:
            raise OccludeError(f"cannot append to {path}: {exc.strerror or exc}", params=("summary_md",)) from None
    return targets


def write_ci_reports(
    cases: Sequence[CiCase],
    *,
    suite: str,
    junit: Optional[PathLike] = None,
    summary_md: Union[None, PathLike, Sequence[PathLike]] = None,
    verdict: Optional[str] = None,
    worse: Optional[str] = None,
    properties: Optional[Mapping[str, object]] = None,
    worst: int = 5,
) -> List[Path]:
    """The one call a command makes: the JUnit file at ``junit`` (when given) and the job summary appended to
    each of ``summary_md`` (a path or paths; see :func:`summary_targets` for adding ``$GITHUB_STEP_SUMMARY``).
    ``suite`` names both (e.g. ``"occlude check"``). Returns the files written."""
    written: List[Path] = []
    if junit is not None:
        written.append(write_junit(junit, cases, suite, properties))
    if summary_md:
        written += append_summary(summary_md, summary_markdown(cases, suite, verdict, worst=worst, worse=worse))
    return written
