"""Everything occlude writes goes through here: atomic writes (temp file + rename) of JSON, CSV, .npy and
PNG, so that an interrupted run never leaves a half-written file and never clobbers a good one with junk."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable, List, Optional, Sequence

import numpy as np

from ..analyses.checks import CHECK_CSV_HEADER, CheckRow
from ..analyses.explanation import SCHEMA_VERSION, Explanation, ScaleStudy
from ..analyses.options import checked_path
from ..errors import OccludeError
from ..pictures.render import (
    DEFAULT_STYLE,
    RenderStyle,
    compare_png,
    heatmap_png,
    overlay_png,
    overlay_with_region_png,
    panels_png,
    score_word,
)
from ..text import for_csv, shortened, shown
from .provenance import scrubbed_bytes, stamped
from .records import (
    CHECK_FIELDS,
    SUMMARY_FIELDS,
    SummaryRow,
    check_document,
    explanation_record,
    format_json,
    json_number,
    map_digest,
    summary_document,
)


def atomic_write_bytes(path, data: bytes, *, scrub: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    The temporary file is ``.NAME.PID.XXXXXXXX.tmp`` (:data:`TEMP_RE`): a run removes those left by killed
    runs (:func:`remove_stale_temps`); an interrupted write (SIGTERM, Ctrl-C, an error) removes its own.
    A killed or interrupted process leaves either the old file or the new one, never a mix. The data is
    not fsynced: that would only matter for a power cut, and costs a disk flush per file (a fifth of a
    second each on some virtual disks, more than the whole rest of the writing). While a de-identifying run
    writes, text files are scrubbed of its paths and UIDs (:func:`.provenance.scrubbed_bytes`)."""
    path = Path(path)
    data = scrubbed_bytes(path.name, data) if scrub else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OccludeError(f"cannot write to {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OccludeError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


# .NAME.PID.XXXXXXXX.tmp, NAME one of occlude's outputs; XXXXXXXX from tempfile.mkstemp's alphabet.
TEMP_RE = re.compile(r"^\.(?P<name>.+\.(?:json|png|npy|csv|html))\.(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp$")
# before temp names carried the pid: removed only when clearly old
_OLD_TEMP_RE = re.compile(r"^\.(?P<name>.+\.(?:json|png|npy|csv|html))\.[a-z0-9_]{8}\.tmp$")
_WRITE_TEST_RE = re.compile(r"^\.occlude-write-test-[a-z0-9_]{8}$")
_OLD_TEMP_AGE_S = 600.0


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def check_output_folder(out, name: str = "out") -> Path:
    """Fail early, with one line, when the output folder cannot be created or written; returns it. ``name``:
    the parameter that gave it (a value that is no path is one error naming it)."""
    out = Path(checked_path(out, name))
    if out.exists() and not out.is_dir():
        raise OccludeError(f"output path exists and is not a folder: {out}")
    try:
        probe_folder(out)
    except OSError as exc:
        raise OccludeError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out


def probe_folder(folder) -> None:
    """Make ``folder`` (and its parents) and write and remove a temporary file in it: OSError when a file cannot
    be written there (read-only file system, permissions, a full disk)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".occlude-write-test-"):
        pass


def remove_stale_temps(out_dir, started: float) -> List[Path]:
    """Remove the temporary files of occlude's own pattern under ``out_dir`` that a killed run left: modified
    before ``started`` (the run's start, ``time.time()``) and written by a process that is no longer running
    (so that shards running in parallel on this machine keep theirs). Nothing else is touched: the names
    must match :data:`TEMP_RE` exactly (or the older pattern without a pid, when older than 10 minutes).
    Returns the files removed."""
    removed: List[Path] = []
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return removed
    for folder, _dirs, files in os.walk(out_dir):
        for name in files:
            if not name.startswith(".") or not (name.endswith(".tmp") or name.startswith(".occlude-write-test-")):
                continue
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= started:
                continue
            match = TEMP_RE.match(name)
            if match:
                stale = not _pid_alive(int(match.group("pid")))
            else:
                stale = bool(_OLD_TEMP_RE.match(name) or _WRITE_TEST_RE.match(name)) and (
                    info.st_mtime < started - _OLD_TEMP_AGE_S
                )
            if stale:
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass
    return removed


def file_record(path) -> dict:
    """{name, bytes, sha256} of a written file: what --resume checks before trusting it."""
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return {"name": path.name, "bytes": size, "sha256": digest.hexdigest()}


def output_records(paths: Iterable[Path]) -> List[dict]:
    """A result JSON's ``outputs``: :func:`file_record` of each file written for it, by name (what
    :func:`verify_outputs` checks on ``--resume``). Every writer of a result (photos, scale studies, medical
    inputs) lists its files through this."""
    return sorted((file_record(p) for p in paths), key=lambda item: item["name"])


def verify_outputs(json_path) -> Optional[str]:
    """Why the outputs a result JSON lists cannot be trusted (None when every file exists with its recorded
    size and sha256). Records from before the checksums (names only) are checked for presence. A listed
    result JSON (a scale study's per-patch file) is verified in turn."""
    json_path = Path(json_path)
    try:
        record = read_json(json_path)
    except (OSError, ValueError) as exc:
        return f"{json_path.name} unreadable ({exc.__class__.__name__})"
    if not isinstance(record, dict):
        return f"{json_path.name} is not an occlude record"
    if "map_sha256" in record and map_digest(record.get("map")) != record["map_sha256"]:
        return f"the map in {json_path.name} differs from the one it was written with"
    if RECORD_SEAL in record and record_digest(record) != record[RECORD_SEAL]:
        return f"{json_path.name} was changed after it was written"
    for item in record.get("outputs") or []:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            return f"{json_path.name} lists a bad output name"
        path = json_path.parent / name
        if path == json_path:
            continue
        if not path.is_file():
            return f"{name} is missing"
        if isinstance(item, dict):
            try:
                if path.stat().st_size != item.get("bytes"):
                    return f"{name} has {path.stat().st_size} bytes, the record says {item.get('bytes')}"
                if file_record(path)["sha256"] != item.get("sha256"):
                    return f"{name} differs from the file the record was written with"
            except OSError as exc:
                return f"{name} unreadable ({exc.strerror or exc})"
            if name.endswith(".json"):
                inner = verify_outputs(path)
                if inner:
                    return inner
    return None


def _undo(paths: Sequence[Path]) -> None:
    """Remove an image's outputs written before a later write failed (full disk): no half set is left."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def read_json(path):
    """A JSON document read from a regular file: a FIFO or device named like a result file raises OSError
    instead of blocking the read forever (as json.load, OSError / ValueError for the rest)."""
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), encoding="utf-8") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return json.load(handle)


RECORD_SEAL = "record_sha256"


def record_digest(record: dict) -> str:
    """sha256 of a result record as read back from its file, without its ``record_sha256``: canonical JSON
    (sorted keys, compact, ASCII), so the digest depends on the values only, never on the layout."""
    body = {k: v for k, v in record.items() if k != RECORD_SEAL}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def atomic_write_json(path, document, *, command: bool = True, seal: bool = False) -> Path:
    """``document`` formatted by :func:`format_json`, with a final newline, written atomically; every JSON file
    records the software versions (and, ``command``, the command line) it was made with
    (:func:`.provenance.stamped`). ``seal`` (a result record, what ``--resume`` trusts) ends it with
    ``record_sha256``, the :func:`record_digest` of what is written (after a de-identifying run's scrubbing),
    so that a record edited afterwards is recomputed rather than kept (:func:`verify_outputs`)."""
    if seal and isinstance(document, dict):
        document = {k: v for k, v in document.items() if k != RECORD_SEAL}
    data = (format_json(stamped(document, command)) + "\n").encode("utf-8")
    if not seal:
        return atomic_write_bytes(path, data)
    data = scrubbed_bytes(Path(path).name, data).rstrip()
    digest = record_digest(json.loads(data))
    sealed = data[:-1].rstrip() + f',\n  "{RECORD_SEAL}": "{digest}"\n}}\n'.encode("ascii")
    return atomic_write_bytes(path, sealed, scrub=False)


def csv_cell(value) -> str:
    """One CSV cell that no spreadsheet executes and no terminal obeys: the outside-text rule's
    :func:`occlude_cli.text.for_csv` ('' for None, numbers as numbers, text shown escaped, a leading ' before
    what a spreadsheet would run as a formula)."""
    return for_csv(value)


def csv_bytes(fields: Sequence[str], rows: Iterable[dict], header: Optional[dict] = None) -> bytes:
    """CSV text (header, then one line per row) with every cell made safe by :func:`csv_cell`; ``header``
    renames columns in the header line."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([csv_cell((header or {}).get(f, f)) for f in fields])
    for row in rows:
        writer.writerow([csv_cell(row.get(k)) for k in fields])
    return text.getvalue().encode("utf-8")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def picture_title(label: Optional[str], index: int, score_kind: str, original: float) -> str:
    """A map picture's title: the class (label and index) and its unoccluded score."""
    if score_kind == "similarity":  # task embed: one score, no class
        return f"cosine similarity to the reference: {original:.4f}"
    name = f"{shortened(label)} (class {index})" if label else f"class {index}"
    return f"{name}: {score_word(score_kind)} {original:.4f}"


def picture_subtitle(params: dict) -> str:
    """A map picture's subtitle: the windows and the baseline (``params`` as a record holds them)."""
    p = params
    return (
        f"occlusion: patch {p['patch'][0]}x{p['patch'][1]}, stride {p['stride'][0]}x{p['stride'][1]}, "
        f"baseline {p['baseline']}"
    )


def _title(explanation: Explanation, index: int) -> str:
    e = explanation
    return picture_title(e.label(index), index, e.score_kind, float(e.occlusion.original_scores[index]))


def _subtitle(explanation: Explanation) -> str:
    return picture_subtitle(explanation.params)


def _write_map(
    out_dir: Path,
    stem: str,
    explanation: Explanation,
    values: np.ndarray,
    subtitle: str,
    npy: bool,
    written: List[Path],
    style: RenderStyle = DEFAULT_STYLE,
    panels: bool = False,
) -> None:
    """STEM.overlay.png, STEM.heatmap.png and (with ``npy``) STEM.npy for one map of an explanation's image,
    each appended to ``written`` as soon as it is in place (so that a later failed write undoes it)."""
    e = explanation
    drawing = getattr(e, "drawing", None)
    if drawing:  # a task's target: the segmentation mask's outline or the detection's target box
        overlay = overlay_with_region_png(
            e.image.original,
            values,
            e.image.crop_box,
            _title(e, e.target),
            subtitle,
            drawing["box"],
            drawing["mask"],
            style,
        )
    else:
        overlay = overlay_png(e.image.original, values, e.image.crop_box, _title(e, e.target), subtitle, style)
    written.append(atomic_write_bytes(out_dir / f"{stem}.overlay.png", overlay))
    written.append(
        atomic_write_bytes(out_dir / f"{stem}.heatmap.png", heatmap_png(values, _title(e, e.target), subtitle, style))
    )
    if panels:
        written.append(
            atomic_write_bytes(
                out_dir / f"{stem}.panels.png",
                panels_png(
                    e.image.original,
                    values,
                    e.image.crop_box,
                    _title(e, e.target),
                    subtitle,
                    style,
                    region=drawing["box"] if drawing else None,  # a detection's target box on the overlay panel
                ),
            )
        )
    if npy:
        written.append(atomic_write_bytes(out_dir / f"{stem}.npy", npy_bytes(values.astype(np.float32))))


def check_stem(stem) -> None:
    """A per-input STEM that stays in its output folder: relative, no ``..``, not empty (one error naming it)."""
    parts = PurePosixPath(str(stem).replace("\\", "/")).parts if isinstance(stem, str) else None
    if not parts or str(stem).startswith("/") or any(p in ("..", ".") for p in parts):
        raise OccludeError(
            f"stem must be a file name or a relative path inside the output folder, got '{shown(str(stem))}'",
            params=("stem",),
        )


def write_explanation(
    explanation: Explanation,
    out_dir,
    stem: str,
    *,
    npy: bool = True,
    all_classes: bool = False,
    timing: bool = True,
    extra: Optional[dict] = None,
    style: RenderStyle = DEFAULT_STYLE,
    panels: bool = False,
) -> List[Path]:
    """Write STEM.json, STEM.overlay.png, STEM.heatmap.png and STEM.npy (and the extras asked for).

    The JSON is written last, so its presence marks a complete set of outputs (what --resume checks). ``stem``
    stays inside ``out_dir``: a relative path (``sub/cat``) without ``..``, else one error naming ``stem``.
    """
    out_dir = Path(checked_path(out_dir, "out_dir"))
    check_stem(stem)
    e = explanation
    written: List[Path] = []
    try:
        _write_map(out_dir, stem, e, e.map, _subtitle(e), npy, written, style, panels)
        if npy and len(e.targets) > 1:
            written.append(atomic_write_bytes(out_dir / f"{stem}.topk.npy", npy_bytes(e.maps.astype(np.float32))))
        if all_classes:
            written.append(atomic_write_bytes(out_dir / f"{stem}.classes.npy", npy_bytes(e.class_maps())))
            written.append(
                atomic_write_bytes(
                    out_dir / f"{stem}.top_class.npy", npy_bytes(e.occlusion.top_class_map().astype(np.int32))
                )
            )
        record = explanation_record(e, timing=timing)
        record.update(extra or {})
        record["outputs"] = output_records(written)
        written.append(atomic_write_json(out_dir / f"{stem}.json", record, command=False, seal=True))
    except BaseException:
        _undo(written)
        raise
    return written


def write_scale_study(
    study: ScaleStudy,
    out_dir,
    stem: str,
    *,
    npy: bool = True,
    timing: bool = True,
    multiscale: bool = False,
    extra: Optional[dict] = None,
    metrics: Optional[List[dict]] = None,
    style: RenderStyle = DEFAULT_STYLE,
    panels: bool = False,
) -> List[Path]:
    """Each scale's outputs as STEM.patch-HxW.*, the multi-scale map (if asked) as STEM.multiscale.*, and
    STEM.scales.json (patches, pairwise rank correlation, files) written last."""
    out_dir = Path(out_dir)
    written: List[Path] = []
    try:
        return _write_scale_study(
            study,
            out_dir,
            stem,
            written,
            npy=npy,
            timing=timing,
            multiscale=multiscale,
            extra=extra,
            metrics=metrics,
            style=style,
            panels=panels,
        )
    except BaseException:
        _undo(written)
        raise


def _write_scale_study(
    study: ScaleStudy,
    out_dir: Path,
    stem: str,
    written: List[Path],
    *,
    npy: bool,
    timing: bool,
    multiscale: bool,
    extra: Optional[dict],
    metrics: Optional[List[dict]],
    style: RenderStyle = DEFAULT_STYLE,
    panels: bool = False,
) -> List[Path]:
    names = []
    for i, e in enumerate(study.explanations):
        h, w = e.params["patch"]
        name = f"{stem}.patch-{h}x{w}"
        names.append(name)
        scale_extra = {**(extra or {}), **({"metrics": metrics[i]} if metrics else {})}
        written += write_explanation(
            e, out_dir, name, npy=npy, timing=timing, extra=scale_extra, style=style, panels=panels
        )
    first = study.explanations[0]
    multiscale_name = None
    if multiscale:
        multiscale_name = f"{stem}.multiscale"
        patches = ", ".join(f"{h}x{w}" for h, w in study.patches)
        # the .npy is written even with --no-npy: STEM.scales.json names it as the multi-scale map
        _write_map(
            out_dir,
            multiscale_name,
            first,
            study.mean_map(),
            f"multi-scale mean of patches {patches} (each scaled to [-1, 1])",
            npy=True,
            written=written,
            style=style,
            panels=panels,
        )
    document = {
        "schema": SCHEMA_VERSION,
        "image": {"path": str(first.image.path) if first.image.path is not None else None},
        "target": {"index": first.target, "label": first.label(first.target)},
        "patches": [list(p) for p in study.patches],
        "rank_correlation": [[json_number(v) for v in row] for row in study.rank_correlation],
        "maps": [f"{n}.json" for n in names],
        "multiscale": f"{multiscale_name}.npy" if multiscale_name else None,
        "deletion_auc": [m["deletion_auc"] for m in metrics] if metrics else None,
        "insertion_auc": [m["insertion_auc"] for m in metrics] if metrics else None,
        **(extra or {}),
    }
    document["outputs"] = output_records(written)
    written.append(atomic_write_json(out_dir / f"{stem}.scales.json", document, command=False, seal=True))
    return written


def write_comparison(explanation: Explanation, other, comparison: dict, out_dir, stem: str) -> List[Path]:
    """Write STEM.compare.png and STEM.compare.json (last) under ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    png = atomic_write_bytes(out_dir / f"{stem}.compare.png", compare_png(explanation, other, comparison))
    record = dict(comparison)
    record["outputs"] = sorted([png.name, f"{stem}.compare.json"])
    return [png, atomic_write_json(out_dir / f"{stem}.compare.json", record, command=False)]


def write_check_summary(
    rows: Sequence[CheckRow], out_dir, settings: Optional[dict] = None, name: str = "check"
) -> List[Path]:
    """NAME.json (see :func:`check_document`) and NAME.csv (one row per image), written atomically."""
    out_dir = Path(out_dir)
    values = []
    for row in rows:
        item = dict(row.__dict__)
        item["reasons"] = "; ".join(row.reasons)
        if item.get("peak_world_mm") is not None:
            item["peak_world_mm"] = "(" + ", ".join(f"{v:g}" for v in item["peak_world_mm"]) + ")"
        values.append(item)
    document = check_document(rows, settings)
    return [
        atomic_write_json(out_dir / f"{name}.json", document),
        atomic_write_bytes(out_dir / f"{name}.csv", csv_bytes(CHECK_FIELDS, values, CHECK_CSV_HEADER)),
    ]


def write_check_picture(
    explanation: Explanation,
    row: CheckRow,
    region_mask: np.ndarray,
    out_dir,
    stem: str,
    box=None,
    style: RenderStyle = DEFAULT_STYLE,
) -> Path:
    """STEM.check.png: the overlay with the region of interest drawn (the box, or the mask's outline) and the
    verdict in the title, so a failing CI job has something to look at."""
    e = explanation
    verdict = "PASS" if row.status == "pass" else "FAIL: " + "; ".join(row.reasons)
    energy = "n/a" if row.energy_share is None else f"{row.energy_share:.2f}"
    title = f"{verdict}   ({_title(e, e.target)})"
    if e.map.ndim == 3:  # a volume: the montage with the region's outline on every slice
        from ..pictures.montage import montage_png

        world = ", ".join(f"{v:+.1f}" for v in row.peak_world_mm or [])
        subtitle = (
            f"energy share in region {energy}, peak {'inside' if row.pointing_game else 'outside'} the region at "
            f"voxel ({row.peak_z}, {row.peak_y}, {row.peak_x}), RAS ({world}) mm; region outlined in yellow"
        )
        prepared = e.prepared  # type: ignore[attr-defined]  # a VolumeExplanation
        grid = prepared.grid
        png = montage_png(prepared.display, e.map, grid.spacing, grid.affine, title, subtitle, style, region_mask)
        return atomic_write_bytes(Path(out_dir) / f"{stem}.check.png", png)
    if box is not None and len(box) != 4:
        box = None  # a box in world mm: drawn as the outline of its voxels
    subtitle = (
        f"energy share in region {energy}, peak {'inside' if row.pointing_game else 'outside'} the region "
        f"at x={row.peak_image_x}, y={row.peak_image_y} (image pixels); region outlined in yellow"
    )
    mask = None
    if box is None:
        from ..loaders.images import map_on_original

        on_image = map_on_original(region_mask.astype(np.float64), e.image.original_size, e.image.crop_box)
        mask = np.nan_to_num(on_image) >= 0.5
    png = overlay_with_region_png(
        e.image.original, e.map, e.image.crop_box, title, subtitle, region=box, mask=mask, style=style
    )
    return atomic_write_bytes(Path(out_dir) / f"{stem}.check.png", png)


def write_summary(
    rows: Sequence[SummaryRow],
    out_dir,
    name: str = "summary",
    run: Optional[dict] = None,
    interrupted: Optional[bool] = None,
) -> List[Path]:
    """NAME.json (counts, whether the run was interrupted, one row per image, the ``run`` block when given;
    see :func:`~occlude_cli.outputs.records.summary_document`) and NAME.csv, written atomically.
    When either cannot be written both are removed (never an earlier run's summary beside this run's files)
    and the error says so."""
    out_dir = Path(out_dir)
    try:
        return [
            atomic_write_json(out_dir / f"{name}.json", summary_document(rows, run, interrupted)),
            atomic_write_bytes(out_dir / f"{name}.csv", csv_bytes(SUMMARY_FIELDS, [r.__dict__ for r in rows])),
        ]
    except OccludeError as exc:  # e.g. a full disk: no stale summary of an earlier run may stay behind
        _undo([out_dir / f"{name}.json", out_dir / f"{name}.csv"])
        raise OccludeError(f"summary not written ({exc}); {name}.json and {name}.csv removed") from None


def write_aggregate(
    mean: Optional[np.ndarray], out_dir, images: int = 0, style: RenderStyle = DEFAULT_STYLE
) -> List[Path]:
    """aggregate.npy and aggregate.png: the dataset-level mean map (nothing when no image was added)."""
    if mean is None:
        return []
    out_dir = Path(out_dir)
    title = f"aggregate: mean of {images} map(s), each scaled to [-1, 1]"
    return [
        atomic_write_bytes(out_dir / "aggregate.npy", npy_bytes(mean.astype(np.float32))),
        atomic_write_bytes(
            out_dir / "aggregate.png",
            heatmap_png(mean, title, "where the model looks on average", style.with_limit(None)),  # in [-1, 1]
        ),
    ]


COMPARE_FIELDS = (
    "path",
    "status",
    "map",
    "pearson",
    "spearman",
    "top_iou",
    "occlusion.deletion_auc",
    "other.deletion_auc",
    "occlusion.insertion_auc",
    "other.insertion_auc",
    "occlusion.infidelity_unexplained",
    "other.infidelity_unexplained",
    "occlusion.sufficiency",
    "other.sufficiency",
    "occlusion.completeness",
    "other.completeness",
    "error",
)


def write_compare_summary(document: dict, out_dir) -> List[Path]:
    """compare.json (settings, dataset summary with confidence intervals, one row per image) and compare.csv."""
    out_dir = Path(out_dir)
    return [
        atomic_write_json(out_dir / "compare.json", {"schema": SCHEMA_VERSION, **document}),
        atomic_write_bytes(out_dir / "compare.csv", csv_bytes(COMPARE_FIELDS, document["images"])),
    ]
