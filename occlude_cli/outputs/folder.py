"""A folder run's source of truth: the manifest of its current job, from which the summary, the aggregate
and the report are rebuilt. Nothing of an earlier job is read unless the current manifest lists it.

A *job* is one set of inputs run with one model and one set of parameters, in one piece or in N shards.
Each process of the job writes its own manifest, ``manifest.json`` (unsharded) or
``manifest.shard-K-of-N.json``: first when it starts (state ``running``), then when it stops (``finished``,
or ``interrupted``), with one entry per image: its key (STEM), fingerprint and summary row. A process that
starts a *different* job (other inputs, flags, model or shard count) removes the manifests of the earlier
job and every run-level file derived from them (``summary*.json``/``.csv``, ``aggregate.*``,
``index.html``), so nothing stale can be taken for a current result. Per-image files of earlier jobs that
the current manifests do not list stay on disk but are never read; files an image's earlier record listed
and its new record does not (a ``--no-npy`` or ``--top-k 1`` re-run) are removed when the image is
written again (:func:`superseded_outputs`).

:func:`rebuild` makes the run-level files from the manifests alone: ``summary.json`` and ``summary.csv``
(every current row, in key order, and a ``run`` block saying which shards are in), ``aggregate.npy`` and
``aggregate.png`` (when the job asked for them and every shard has finished: the mean over every current
per-image map, read back from the per-image JSON files in key order, so it is byte-identical whether the
job ran in one piece or in shards, fresh or resumed), and ``index.html`` (when asked for, or when one is
there). Every process of a job calls it when it stops, under a lock on the folder, so the last shard to
finish leaves the complete files; ``occlude summary`` calls it too.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..analyses.explanation import multiscale_mean
from ..errors import OccludeError
from ..text import recover
from .manifest import (  # noqa: F401  (re-exported: the folder's machinery in one place)
    NOT_DONE,
    Entry,
    FolderState,
    Job,
    current_entries,
    folder_lock,
    manifest_name,
    read_manifests,
    read_record,
    run_fingerprint,
    summary_name,
    write_manifest,
)
from .records import SUMMARY_FIELDS, SummaryRow, map_digest, record_grid
from .write import read_json, write_aggregate, write_summary

# Run-level files derived from the manifests: removed when another job starts in the folder.
DERIVED_FILES = ("summary.json", "summary.csv", "aggregate.npy", "aggregate.png", "index.html")
_SHARD_SUMMARY = re.compile(r"^summary\.shard-\d+-of-\d+\.(?:json|csv)$")


def _occlude_summary(path: Path) -> bool:
    """Is ``path`` a summary.json that occlude wrote (counts and one row per image)?"""
    try:
        document = read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and isinstance(document.get("counts"), dict) and "images" in document


def check_run_level_files(out_dir, inputs: Sequence = (), shard: Optional[Tuple[int, int]] = None) -> None:
    """Refuse, before any image, a run that would write over an input or over a file occlude did not write:
    the run-level files (:data:`DERIVED_FILES` and the manifest) are occlude's when the folder holds an occlude
    manifest (or, from before manifests, an occlude summary.json); otherwise any of them there is the user's.
    ``inputs``: the run's input files. Raises OccludeError naming the file."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    names = [*DERIVED_FILES, manifest_name(shard)]
    targets = {(out_dir / name).resolve(): name for name in names}
    for item in inputs:
        path = Path(getattr(item, "path", item))
        name = targets.get(path.resolve())
        if name is not None:
            raise OccludeError(
                f"{path} is an input, and the run writes its {name} there: rename it or choose another output folder",
                params=("out",),
            )
    manifests = read_manifests(out_dir)
    ours = {m["_file"] for m in manifests}
    legacy = not manifests and _occlude_summary(out_dir / "summary.json")
    for name in names:
        path = out_dir / name
        if name in ours or not os.path.lexists(path) or ((manifests or legacy) and name in DERIVED_FILES):
            continue
        raise OccludeError(
            f"{path} exists and occlude did not write it: move it or choose another output folder", params=("out",)
        )


def start_job(out_dir, job: Job, entries: Sequence[Entry]) -> List[Path]:
    """Make ``job`` the folder's current job: remove the manifests of any other job and the run-level files
    derived from them, then write this process's manifest (state ``running``). Returns what was removed."""
    out_dir = Path(out_dir)
    removed: List[Path] = []
    with folder_lock(out_dir):
        manifests = read_manifests(out_dir)
        other = [m for m in manifests if m["job"] != job.id]
        legacy = not manifests and (out_dir / "summary.json").is_file()  # written before manifests existed
        if other or legacy:
            names = [m["_file"] for m in other] + list(DERIVED_FILES)
            names += [n for n in os.listdir(out_dir) if _SHARD_SUMMARY.match(n)]
            for name in names:
                path = out_dir / name
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass
        write_manifest(out_dir, job, entries, "running")
    return removed


def finish_job(out_dir, job: Job, entries: Sequence[Entry], *, interrupted: bool = False, style=None) -> FolderState:
    """Record this process's results (its manifest, and with --shard its summary.shard-K-of-N.*), then
    rebuild the run-level files from every manifest of the job, under the folder lock."""
    out_dir = Path(out_dir)
    with folder_lock(out_dir):
        write_manifest(out_dir, job, entries, "interrupted" if interrupted else "finished")
        if job.shard is not None:
            write_summary([e.row for e in entries], out_dir, summary_name(job.shard), interrupted=interrupted)
        return rebuild(out_dir, style=style, aggregate=job.aggregate, report=job.report, locked=True)


def rebuild(out_dir, *, style=None, aggregate: Optional[bool] = None, report: Optional[bool] = None, locked=False):
    """Rewrite summary.json/.csv, the aggregate and the report from the current job's manifests (see the
    module's docstring); returns the :class:`FolderState`. The aggregate is written when ``aggregate``, a
    manifest of the job or an aggregate already there asks for it (drawn in ``style``, default the run's),
    the report likewise. Without manifests (a folder of an older occlude, or of library writes) the summary
    is rebuilt from the per-image JSON files instead (:func:`rebuild_from_records`)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise OccludeError(f"not a folder: {out_dir}")
    if not locked:
        with folder_lock(out_dir):
            return rebuild(out_dir, style=style, aggregate=aggregate, report=report, locked=True)
    newest, entries, state = current_entries(out_dir)
    if newest is None:
        state.rows = rebuild_from_records(out_dir)
        if not state.rows and not _occlude_summary(out_dir / "summary.json"):
            raise OccludeError(f"{out_dir} holds no occlude results (no manifest.json, summary.json or STEM.json)")
        write_summary(state.rows, out_dir)
        return state
    state.rows = [e.row for e in entries]
    if style is None:
        style = _style_of(newest)
    # an aggregate or a report in the folder is the current job's (start_job removes another job's): kept current
    aggregate = bool(aggregate) or state.wants_aggregate or (out_dir / "aggregate.npy").is_file()
    report = bool(report) or state.wants_report
    if aggregate and state.complete:
        state.aggregate_images = _write_aggregate(out_dir, entries, style, state)
    else:
        for name in ("aggregate.npy", "aggregate.png"):  # never an aggregate of fewer maps than the job's
            with contextlib.suppress(OSError):
                (out_dir / name).unlink()
    write_summary(state.rows, out_dir, run=state.describe(), interrupted=state.interrupted)
    if report or (out_dir / "index.html").is_file():
        from .report import build_report

        if state.rows:
            build_report(out_dir)
    return state


def _style_of(manifest: dict):
    """The run's RenderStyle, from its manifest's settings (None: the default)."""
    from ..pictures.render import RenderStyle

    described = (manifest.get("settings") or {}).get("style")
    try:
        return RenderStyle(**described).checked() if isinstance(described, dict) else None
    except (TypeError, ValueError, OccludeError):
        return None


# ------------------------------------------------------------------------------------ the aggregate


class MapAggregate:
    """Running mean of per-image maps, each scaled to [-1, 1] by its largest |value| (bounded memory)."""

    def __init__(self, style=None) -> None:
        from ..pictures.render import DEFAULT_STYLE

        self.style = style or DEFAULT_STYLE
        self.total: Optional[np.ndarray] = None
        self.count: Optional[np.ndarray] = None
        self.images = 0

    def add(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        limit = float(np.abs(values[finite]).max()) if finite.any() else 0.0
        scaled = np.where(finite, values / limit if limit > 0 else 0.0, 0.0)
        if self.total is None:
            self.total = np.zeros(values.shape)
            self.count = np.zeros(values.shape)
        if self.total.shape != values.shape:
            raise OccludeError(f"map of shape {values.shape} cannot join an aggregate of shape {self.total.shape}")
        assert self.count is not None
        self.total += scaled
        self.count += finite
        self.images += 1

    def mean(self) -> np.ndarray:
        assert self.total is not None and self.count is not None, "no map was added"
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / self.count, np.nan)

    def write(self, out_dir: Path) -> List[Path]:
        """aggregate.npy and aggregate.png (through the outputs stage)."""
        return write_aggregate(self.mean() if self.total is not None else None, out_dir, self.images, self.style)


def verified_record(out_dir, marker: str, fingerprint: Optional[str] = None) -> dict:
    """The result JSON ``marker`` of a folder, trusted: readable, written by the run whose ``fingerprint`` the
    manifest lists (when given), and its ``map`` (when it holds one) the one it was written with (its
    ``map_sha256``) and a grid of numbers. One OccludeError naming the file otherwise."""
    record = read_record(Path(out_dir), marker)
    if record is None:
        raise OccludeError(f"{marker}: missing or unreadable")
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        raise OccludeError(f"{marker}: written by another run than the manifest lists (re-run with --resume)")
    if "map" in record:
        if "map_sha256" in record and map_digest(record["map"]) != record["map_sha256"]:
            raise OccludeError(f"{marker}: its map differs from the one it was written with (edited?)")
        record_grid(record["map"], marker)
    return record


def saved_map(out_dir, marker: str, fingerprint: Optional[str] = None) -> np.ndarray:
    """The map an image's result files hold, as the aggregate takes it: a result JSON's ``map`` (exact:
    JSON keeps every float64); for a patch-size study, the multi-scale mean of its scales' maps when the study
    wrote one, else its first scale's map. ``fingerprint``: refuse a result of another run."""
    out_dir = Path(out_dir)
    record = verified_record(out_dir, marker, fingerprint)
    if "map" in record:
        return record_grid(record["map"], marker)
    folder = marker.rsplit("/", 1)[0] + "/" if "/" in marker else ""
    maps = [m for m in record.get("maps") or [] if isinstance(m, str)]
    if not maps:
        raise OccludeError(f"{marker}: holds no map")
    grids = []
    for name in maps if record.get("multiscale") else maps[:1]:
        scale = verified_record(out_dir, folder + name)
        if "map" not in scale:
            raise OccludeError(f"{folder + name}: holds no map")
        grids.append(record_grid(scale["map"], folder + name))
    return multiscale_mean(grids) if record.get("multiscale") else grids[0]


def _write_aggregate(out_dir: Path, entries: Sequence[Entry], style, state: FolderState) -> Optional[int]:
    aggregate = MapAggregate(style)
    for entry in entries:
        if entry.row.status not in ("ok", "skipped") or not entry.row.output:
            continue
        try:
            aggregate.add(saved_map(out_dir, entry.row.output, entry.fingerprint))
        except OccludeError as exc:
            state.notes.append(f"aggregate: {exc}; left out")
    if aggregate.total is None:
        for name in ("aggregate.npy", "aggregate.png"):
            with contextlib.suppress(OSError):
                (out_dir / name).unlink()
        return None
    aggregate.write(out_dir)
    return aggregate.images


# ------------------------------------------------------------------------------------ stale files


_OWN_NAME = re.compile(r"^(?:\.[A-Za-z0-9_-]+)*\.(?:json|npy|png|csv|html|nii\.gz)$")


def _listed(out_dir: Path, marker: str, depth: int = 0, stem: str = "") -> List[str]:
    """The marker and every file its record lists (a study's per-scale records and theirs), relative to
    ``out_dir``; [] when it is not an occlude result record. Only names occlude's naming rule gives the key's
    files (``stem``, then ``.INFIX`` parts and an output extension) count: a name added to an edited record
    (``notes.txt``, another image's files) is never taken for one of them."""
    record = read_record(out_dir, marker)
    if record is None or "fingerprint" not in record:
        return []
    folder = marker.rsplit("/", 1)[0] + "/" if "/" in marker else ""
    stem = stem or marker.rsplit("/", 1)[-1].removesuffix(".json").removesuffix(".scales")
    names = [marker]
    for item in record.get("outputs") or []:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            continue
        if not (name.startswith(stem) and _OWN_NAME.match(name[len(stem) :])):
            continue
        names.append(folder + name)
        if name.endswith(".json") and depth == 0 and folder + name != marker:
            names += _listed(out_dir, folder + name, depth + 1, stem)[1:]
    return names


def superseded_outputs(out_dir, key: str) -> List[str]:
    """Every file the existing result records of ``key`` list (``KEY.json`` and ``KEY.scales.json`` with
    what they name): read before an image is written again, so that what the new record no longer lists
    can be removed (:func:`remove_superseded`)."""
    out_dir = Path(out_dir)
    return list(dict.fromkeys(_listed(out_dir, f"{key}.json") + _listed(out_dir, f"{key}.scales.json")))


def remove_superseded(out_dir, previous: Sequence[str], written: Sequence[Path]) -> List[str]:
    """Remove the files in ``previous`` (see :func:`superseded_outputs`) that the new write did not
    rewrite; returns them."""
    out_dir = Path(out_dir)
    kept = {os.path.relpath(p, out_dir).replace(os.sep, "/") for p in written}
    removed = []
    for name in previous:
        if name not in kept:
            with contextlib.suppress(OSError):
                (out_dir / name).unlink()
                removed.append(name)
    return removed


# ------------------------------------------------------------------------------------ older folders


def _is_result_record(record) -> bool:
    return isinstance(record, dict) and "fingerprint" in record and "map" in record and "target" in record


def rebuild_from_records(out_dir) -> List[SummaryRow]:
    """Summary rows from the per-image JSON files under ``out_dir``, for folders without a manifest (written
    by an older occlude, or by library calls), plus the failures that shard summaries record for images
    with no result. Never reads summary.json itself."""
    out_dir = Path(out_dir)
    rows: List[SummaryRow] = []
    seen: set = set()
    secondary: set = set()  # a scale study's row comes from its first scale, named by STEM.scales.json
    marker_of = {}
    for scales_path in out_dir.rglob("*.scales.json"):
        try:
            maps = read_json(scales_path).get("maps", [])
        except (OSError, ValueError, AttributeError):
            continue
        secondary.update(scales_path.parent / name for name in maps[1:])
        if maps:
            marker_of[scales_path.parent / maps[0]] = os.path.relpath(scales_path, out_dir).replace(os.sep, "/")
    for json_path in sorted(out_dir.rglob("*.json")):
        if json_path in secondary or (json_path.parent == out_dir and _run_level_json(json_path.name)):
            continue
        try:
            record = read_json(json_path)
        except (OSError, ValueError):
            continue
        if not _is_result_record(record):
            continue
        rel = marker_of.get(json_path) or os.path.relpath(json_path, out_dir).replace(os.sep, "/")
        seconds = record.get("timing", {}).get("total_s")
        row = SummaryRow.from_record(record, "ok", rel, round(seconds, 3) if seconds is not None else None)
        rows.append(row)
        seen.add(row.path)
    for shard_summary in sorted(out_dir.glob("summary.shard-*-of-*.json")):
        try:
            document = read_json(shard_summary)
        except (OSError, ValueError):
            continue
        for item in document.get("images", []) if isinstance(document, dict) else []:
            path = recover(item, "path") if isinstance(item, dict) else None
            if isinstance(item, dict) and item.get("status") == "failed" and path not in seen:
                values: Dict[str, Any] = {k: item.get(k) for k in SUMMARY_FIELDS}
                values["path"] = path
                rows.append(SummaryRow(**values))
                seen.add(path)
    return sorted(rows, key=lambda r: (r.output or "", r.path))


def _run_level_json(name: str) -> bool:
    from .names import is_run_level

    return name.endswith(".json") and is_run_level(name[: -len(".json")])
