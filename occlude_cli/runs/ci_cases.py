"""Each command's results as CI test cases (:class:`~occlude_cli.outputs.ci.CiCase`), one per input, and the one
call that writes a command's JUnit file and job summary (:func:`write_reports`).

- ``check``: a passed image passes; a failed gate is a ``failure`` whose message says the measured energy share
  and the threshold (``min_energy``), or that the peak lies outside the region; an image that could not be
  checked (unreadable, no mask) is an ``error``.
- ``bias``: the gate is on the mean over all images, so every image is a case with its own drop, and one more
  case, ``all images`` (classname ``occlude.bias.gate``), carries the verdict; when the gate fails, the images
  beyond a threshold (a drop above ``max_mean_drop``; a flip, when the flip rate failed) are failures too.
- ``run``: an explained image passes; one that failed is an ``error``; one kept from an earlier run
  (``resume``) is ``skipped``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from ..outputs.ci import CiCase, check_report_target, format_number, write_ci_reports
from ..text import shown

PathLike = Union[str, "os.PathLike[str]"]


def checked_targets(junit: Optional[PathLike], summary_md) -> Tuple[Optional[Path], List[Path]]:
    """``junit`` and ``summary_md`` (None, a path or paths) as paths, checked before any input is read
    (:func:`~occlude_cli.outputs.ci.check_report_target`): no folder, and no existing file that is not an
    earlier JUnit report (``junit``) or text (``summary_md``), such as an input image or the model."""
    junit_path = None if junit is None else check_report_target(junit, "junit")
    paths: List[Path] = []
    if summary_md is not None:
        given = [summary_md] if isinstance(summary_md, (str, os.PathLike)) else list(summary_md)
        paths = [check_report_target(p, "summary_md") for p in given]
    return junit_path, paths


def write_reports(
    cases: Sequence[CiCase],
    suite: str,
    junit: Optional[PathLike],
    summary_md: Sequence[PathLike],
    *,
    verdict: Optional[str] = None,
    worse: Optional[str] = None,
    settings: Optional[dict] = None,
) -> List[Path]:
    """The JUnit file and the job summaries of one command (nothing when neither is asked for)."""
    if junit is None and not summary_md:
        return []
    properties = {key: _property(value) for key, value in (settings or {}).items()}
    return write_ci_reports(
        cases,
        suite=suite,
        junit=junit,
        summary_md=list(summary_md),
        verdict=verdict,
        worse=worse,
        properties=properties,
    )


def _property(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def check_cases(rows, min_energy: Optional[float]) -> List[CiCase]:
    """``occlude check``'s rows (:class:`~occlude_cli.analyses.checks.CheckRow`) as cases."""
    cases = []
    for row in rows:
        status = {"pass": "passed", "fail": "failure"}.get(row.status, "error")
        details = []
        if row.target_index is not None:
            details.append(f"target: {row.target_index} {shown(row.target_label or '')}".rstrip())
        if row.pointing_game is not None:
            details.append(f"peak in region: {'yes' if row.pointing_game else 'no'}")
        if row.region_fraction is not None:
            details.append(f"region share of the image: {format_number(row.region_fraction)}")
        if row.mask:
            details.append(f"mask: {shown(row.mask)}")
        if row.overlay:
            details.append(f"picture: {shown(row.overlay)}")
        message = "" if status == "passed" else (row.error or "; ".join(row.reasons))
        cases.append(
            CiCase(
                name=str(row.path),
                classname="occlude.check",
                status=status,
                time=row.seconds,
                message=message,
                details="\n".join(details),
                value=row.energy_share,
                threshold=min_energy,
                metric="energy share",
            )
        )
    return cases


def bias_cases(rows, summary, max_mean_drop: Optional[float], max_flip_rate: Optional[float]) -> List[CiCase]:
    """``occlude bias``'s rows (:class:`~occlude_cli.analyses.bias.BiasRow`) and verdict as cases."""
    failed = summary is not None and not summary.passed
    drop_failed = failed and max_mean_drop is not None and summary.overall["mean_drop"] > max_mean_drop
    flip_failed = failed and max_flip_rate is not None and summary.overall["flip_rate"] > max_flip_rate
    cases = []
    for row in rows:
        if row.status != "ok":
            cases.append(CiCase(str(row.path), "occlude.bias", "error", message=row.error or "could not be measured"))
            continue
        reasons = []
        if drop_failed and max_mean_drop is not None and row.drop is not None and row.drop > max_mean_drop:
            reasons.append(f"drop {format_number(row.drop)} > max_mean_drop {format_number(max_mean_drop)}")
        if flip_failed and row.flipped:
            reasons.append(f"prediction flipped ({row.predicted} -> {row.occluded_class})")
        details = [f"target: {row.target} {shown(row.label or '')}".rstrip()]
        if row.control_drop is not None:
            details.append(f"mean drop of the controls: {format_number(row.control_drop)}")
        details.append(f"flipped: {'yes' if row.flipped else 'no'}")
        cases.append(
            CiCase(
                str(row.path),
                "occlude.bias",
                "failure" if reasons else "passed",
                message="; ".join(reasons),
                details="\n".join(details),
                value=row.drop,
                threshold=max_mean_drop,
                metric="drop",
            )
        )
    if summary is not None:
        overall = summary.overall
        cases.append(
            CiCase(
                "all images",
                "occlude.bias.gate",
                "passed" if summary.passed else "failure",
                message="; ".join(summary.reasons),
                details=f"mean drop {format_number(overall['mean_drop'])}, "
                f"flip rate {format_number(overall['flip_rate'])} over {overall['images']} images",
                value=overall["mean_drop"],
                threshold=max_mean_drop,
                metric="mean drop",
            )
        )
    return cases


def run_cases(rows) -> List[CiCase]:
    """``occlude run``'s rows (:class:`~occlude_cli.outputs.records.SummaryRow`) as cases."""
    cases = []
    for row in rows:
        details = []
        if row.target_index is not None:
            details.append(f"target: {row.target_index} {shown(row.target_label or '')}".rstrip())
        if row.original_score is not None:
            details.append(f"score: {format_number(row.original_score)}")
        if row.output:
            details.append(f"output: {shown(row.output)}")
        if row.warning:
            details.append(f"warning: {shown(row.warning)}")
        status = {"ok": "passed", "skipped": "skipped"}.get(row.status, "error")
        message = {
            "passed": "",
            "skipped": "kept from an earlier run (resume): its outputs are complete and match this job",
            "error": row.error or "failed",
        }[status]
        cases.append(
            CiCase(
                str(row.path),
                "occlude.run",
                status,
                time=row.seconds,
                message=message,
                details="\n".join(details),
            )
        )
    return cases
