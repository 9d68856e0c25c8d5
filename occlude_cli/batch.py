"""Many images, one model: input discovery, collision-free output names, resume, shards, summaries and
the dataset-level aggregate map. Memory stays bounded: one image and one map are held at a time.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import re
import stat
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

from .analyses.explain import ExplainOptions, VolumeExplanation, explain, explain_scales
from .analyses.validate import faithfulness
from .core.metrics import peak
from .errors import OccludeError, first_line
from .loaders.images import Preprocessing, file_kind
from .loaders.model import OnnxClassifier, file_sha256
from .outputs.folder import (  # noqa: F401  (MapAggregate, summary_name, run_fingerprint re-exported)
    Entry,
    FolderState,
    Job,
    MapAggregate,
    finish_job,
    rebuild,
    remove_superseded,
    run_fingerprint,
    saved_map,
    start_job,
    summary_name,
    superseded_outputs,
)
from .outputs.names import MAX_KEY_NAME_BYTES, NAME_MAX, fold, output_stems, shorten_name, strip_suffix  # noqa: F401
from .outputs.records import SUMMARY_FIELDS, SummaryRow, summary_document  # noqa: F401  (re-exported)
from .outputs.volumes import write_volume_explanation
from .outputs.write import (  # noqa: F401
    remove_stale_temps,
    verify_outputs,
    write_aggregate,
    write_explanation,
    write_scale_study,
    write_summary,
)
from .text import shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm")
MEDICAL_SUFFIXES = (".dcm", ".nii", ".nii.gz")  # plus suffix-less files with the DICOM marker (issue 12)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image to explain. ``key``: the STEM its outputs get under --out (the naming rule of
    :mod:`occlude_cli.outputs.names`: its relative path without suffix unless that could collide).
    ``source_stem``: its path relative to the argument it came from, without the image suffix, exactly as
    on disk: what companion files (masks, other methods' maps) are named after."""

    path: Path
    key: str
    source_stem: str = ""


def _is_image_name(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES or path.name.lower().endswith(MEDICAL_SUFFIXES):
        return True
    from .loaders.medical import is_dicom_file  # DICOM files often have no suffix

    return path.suffix == "" and is_dicom_file(path)


# Image files occlude itself writes, found again when an output folder lies inside an input folder. Each is an
# occlude output only when the record written with it vouches for it (a user's 'x.overlay.png' without such a
# record is an input like any other): per-image pictures and maps (STEM.overlay.png, STEM.patch-8x8.heatmap.png,
# STEM.compare.png, STEM.map.nii.gz, ...) are listed in STEM.json, STEM.compare.json or KEY.scales.json; the
# analyses' pictures sit beside their record (STEM.spatial.json, STEM.stability.json, bias.json, layers.json,
# summary.json), a check picture is listed by the check.json of its output folder.
_OWN_FILE = re.compile(
    r"^(?P<stem>.+)\.(?P<kind>overlay|heatmap|compare|panels|montage|planes|check|spatial|stability)\.png$"
    r"|^(?P<nifti>.+)\.map\.nii\.gz$"
)
_OWN_FIXED = {
    "bias.png": ("bias.json", "bias"),
    "layers.png": ("layers.json", "layers"),
    "activations.png": ("layers.json", "layers"),
}


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def is_own_output(path: Path) -> bool:
    """True for a file that an earlier occlude command wrote (see ``_OWN_FILE``): its name is one occlude gives
    its outputs *and* the record written with it vouches for it. Every command's input discovery uses it, so
    that no analysis reads its own or another command's outputs (no self-feeding)."""
    name = path.name
    folder = path.parent
    if name == "aggregate.png":
        return _record(folder / "summary.json").summary
    if name in _OWN_FIXED:
        record_name, record_kind = _OWN_FIXED[name]
        return _record(folder / record_name).kind == record_kind
    match = _OWN_FILE.match(name)
    if not match:
        return False
    if match.group("nifti") is not None:
        return name in _record(folder / f"{match.group('nifti')}.json").outputs
    stem, kind = match.group("stem"), match.group("kind")
    if kind in ("spatial", "stability"):
        return _record(folder / f"{stem}.{kind}.json").kind == ("layers.spatial" if kind == "spatial" else kind)
    if kind == "check":  # listed by the check.json of the output folder, which may lie above (keys with folders)
        for depth, parent in enumerate(path.parents):
            record = _record(parent / "check.json")
            if record.kind is not None or depth >= 16:
                return path.relative_to(parent).as_posix() in record.pictures
        return False
    candidates = [folder / f"{stem}.json", folder / f"{stem}.compare.json"]
    if stem.endswith(".multiscale"):
        candidates.append(folder / f"{stem[: -len('.multiscale')]}.scales.json")
    return any(name in _record(c).outputs for c in candidates)


@dataclass(frozen=True)
class _RecordFacts:
    """What output discovery needs of an occlude JSON record (kept small: records can hold whole maps)."""

    kind: Optional[str] = None  # its "kind", "record" for one without, None when not a record
    summary: bool = False  # a run summary (counts and images)
    outputs: frozenset = frozenset()  # the names its "outputs" list
    pictures: frozenset = frozenset()  # the check pictures its rows list ("overlay")


def _record(json_path: Path) -> _RecordFacts:
    try:
        info = json_path.stat()
    except OSError:
        return _RecordFacts()
    if not stat.S_ISREG(info.st_mode) or info.st_size > (64 << 20):
        return _RecordFacts()
    return _record_facts(str(json_path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _record_facts(path: str, size: int, mtime_ns: int) -> _RecordFacts:
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return _RecordFacts()
    if not isinstance(record, dict):
        return _RecordFacts()
    images = record.get("images")
    rows: list = images if isinstance(images, list) else []
    return _RecordFacts(
        kind=str(record.get("kind", "record")),
        summary="counts" in record and "images" in record,
        outputs=frozenset(
            item.get("name") if isinstance(item, dict) else item
            for item in record.get("outputs") or []
            if isinstance(item, (dict, str))
        ),
        pictures=frozenset(row.get("overlay") for row in rows if isinstance(row, dict) and row.get("overlay")),
    )


def _regular(path: Path) -> Tuple[bool, Optional[str]]:
    """(is a regular file, what it is otherwise): never opens the file (opening a FIFO blocks)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return False, f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return True, None
    return False, file_kind(mode)


def _walk(folder: Path, recursive: bool, exclude: Sequence[Path], notes: List[Tuple[str, str]]) -> List[Path]:
    """Image files in ``folder`` (and its sub-folders), never entering an excluded folder (the run's --out),
    never opening anything; non-regular files with an image name are reported in ``notes``."""
    found: List[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if recursive:
            kept = []
            for d in sorted(dirs):
                if _under((here / d).resolve(), exclude):
                    notes.append((str(here / d), "skipped: it is the output folder (--out) of this command"))
                else:
                    kept.append(d)
            dirs[:] = kept
        else:
            dirs[:] = []
        for name in files:
            path = here / name
            if not _is_image_name(path):
                continue
            regular, kind = _regular(path)
            if not regular:
                notes.append((str(path), f"skipped: not a regular file ({kind})"))
                continue
            if is_own_output(path):
                continue
            found.append(path)
    return sorted(found)


def _expand(
    arg: str,
    recursive: bool,
    exclude: Sequence[Path] = (),
    notes: Optional[List[Tuple[str, str]]] = None,
    series: bool = False,
) -> Tuple[List[Path], Path, Optional[str]]:
    """Files named by one PATH argument, the folder their output names are relative to, and an error.
    With ``series`` a folder is one input (a DICOM series), named after the folder."""
    notes = notes if notes is not None else []
    path = Path(arg)
    if series:
        if not path.is_dir():
            return [], path.parent, f"series: {path} is not a folder of DICOM slices"
        return [path], path.resolve().parent, None
    if any(c in arg for c in _GLOB_CHARS) and not path.exists():
        matches = []
        for p in sorted(Path(p) for p in glob.glob(arg, recursive=True)):
            if p.is_dir():
                continue
            regular, kind = _regular(p)
            if not regular:
                notes.append((str(p), f"skipped: not a regular file ({kind})"))
            elif not _under(p.resolve(), exclude) and not is_own_output(p):
                matches.append(p)
        base = (
            Path(*[part for part in Path(arg).parts[: _first_magic(Path(arg).parts)]]) if Path(arg).parts else Path(".")
        )
        if not matches:
            return [], base, f"no file matches {arg}"
        return matches, base, None
    if path.is_dir():
        files = _walk(path, recursive, exclude, notes)
        if not files:
            hint = "" if recursive else " (use --recursive for sub-folders)"
            return [], path, f"no images in folder {path}{hint}"
        return files, path, None
    if not path.exists():
        return [], path.parent, f"not found: {path}"
    regular, kind = _regular(path)
    if not regular:
        notes.append((str(path), f"skipped: not a regular file ({kind})"))
        return [], path.parent, None
    return [path], path.parent, None


def _first_magic(parts: Sequence[str]) -> int:
    for i, part in enumerate(parts):
        if any(c in part for c in _GLOB_CHARS):
            return i
    return len(parts)


def discover_inputs(
    args: Iterable[str],
    recursive: bool = False,
    *,
    exclude: Sequence = (),
    notes: Optional[List[Tuple[str, str]]] = None,
    series: bool = False,
) -> Tuple[List[InputImage], List[Tuple[str, str]]]:
    """Expand files, folders and globs into images with unique output keys.

    Returns the images (sorted by key) and the (argument, error) pairs of arguments that named nothing.
    Output keys keep each file's path relative to the folder or glob it came from; where two arguments give
    the same one, every key becomes the path relative to the inputs' common folder instead. Keys then follow
    the naming rule of :func:`occlude_cli.outputs.names.output_stems` (no two alike, even ignoring case and
    Unicode normalisation; never a run-level file's; names that hold control characters, undecodable bytes
    or are too long become NAME~HASH).

    Never picks up the run's own outputs: folders in ``exclude`` (the --out folder) are not entered, and a
    PNG that a result JSON beside it lists is left out (:func:`is_own_output`). FIFOs, devices and other
    non-regular files are never opened; they are reported in ``notes`` (a list to append (path, note) to).
    """
    excluded = [Path(e).resolve() for e in exclude]
    found: Dict[Path, str] = {}  # file as given -> its path relative to its argument
    seen = set()
    problems: List[Tuple[str, str]] = []
    for arg in args:
        files, base, error = _expand(str(arg), recursive, excluded, notes, series)
        if error:
            problems.append((str(arg), error))
        for file in files:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found[file] = os.path.relpath(file.resolve() if series else file, base).replace(os.sep, "/")
    if _clash([_strip_suffix(r) for r in found.values()]):  # e.g. two folders that both hold x.png
        common = Path(os.path.commonpath([str(p.resolve().parent) for p in found]))
        instead = {p: os.path.relpath(p.resolve(), common).replace(os.sep, "/") for p in found}
        if len(set(found.values())) != len(found) or not _clash([_strip_suffix(r) for r in instead.values()]):
            found = instead
    relatives = list(found.items())
    stems = output_stems([(rel, _strip_suffix(rel)) for _, rel in relatives])
    images = [InputImage(path=p, key=stem, source_stem=_strip_suffix(rel)) for (p, rel), stem in zip(relatives, stems)]
    return sorted(images, key=lambda item: item.key), problems


def _clash(stems: Sequence[str]) -> bool:
    return len({fold(s) for s in stems}) != len(stems)


_strip_suffix = strip_suffix


def parse_shard(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    """'K/N' -> (K, N) with 1 <= K <= N."""
    if spec is None:
        return None
    try:
        k, n = (int(v) for v in str(spec).split("/"))
    except ValueError:
        raise OccludeError(f"--shard must be K/N (e.g. 2/4), got {spec!r}") from None
    if not 1 <= k <= n:
        raise OccludeError(f"--shard K/N needs 1 <= K <= N, got {spec!r}")
    return k, n


def take_shard(images: Sequence[InputImage], shard: Optional[Tuple[int, int]]) -> List[InputImage]:
    """A deterministic 1/N share: every N-th image of the key-sorted list, starting at K-1."""
    if shard is None:
        return list(images)
    k, n = shard
    ordered = sorted(images, key=lambda item: item.key)
    return ordered[k - 1 :: n]


def folder_sha256(folder: Path) -> str:
    """Fingerprint of a DICOM series folder for --resume: every file's name, size and content hash."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{file.name}\0{file.stat().st_size}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _one_line(text: str) -> str:
    """An error message as every output shows it (the outside-text rule: it may quote a file name)."""
    return shown(str(text).strip())


def _existing_fingerprint(json_path: Path) -> Optional[str]:
    try:
        with open(json_path, encoding="utf-8") as handle:
            return json.load(handle).get("fingerprint")
    except (OSError, ValueError):
        return None


@dataclass
class BatchResult:
    """What a batch did: one summary row per image (in input order), whether Ctrl-C or SIGTERM stopped it,
    and (from :func:`run_folder`) the output folder's state after the run-level files were rebuilt."""

    rows: List[SummaryRow] = field(default_factory=list)
    interrupted: bool = False
    entries: List[Entry] = field(default_factory=list)
    folder: Optional[FolderState] = None
    notes: Dict[str, str] = field(default_factory=dict)  # the run's notes (Explanation.notes), first text per key


def compute_image(model, path, *, options, preprocessing, labels, scales, metrics, progress=None, executor=None):
    """What one image needs from the model: its explanation (or scale study) and, with ``metrics``, the
    faithfulness numbers. Runs in the executor (this process or a Ray actor); module-level so that Ray
    workers can import it. Writes nothing."""
    kwargs = dict(preprocessing=preprocessing, labels=labels, progress=progress)
    if executor is not None:  # the windows of this one image are scored in parallel elsewhere
        kwargs["executor"] = executor
    if len(scales) > 1:
        study = explain_scales(model, path, scales, options, **kwargs)
        return study, ([faithfulness(e, model) for e in study.explanations] if metrics else None)
    explanation = explain(model, path, options, **kwargs)
    if metrics and isinstance(explanation, VolumeExplanation):
        raise OccludeError("metrics are not available for medical inputs yet")
    return explanation, (faithfulness(explanation, model) if metrics else None)


class LocalExecutor:
    """Computes images one after the other in this process (the default executor). Same interface as
    :class:`occlude_cli.executors.ray_backend.RayExecutor`: ``map_images`` yields ``(item, result)`` in input
    order, the result being the computed value or the exception the image raised; items whose path is None
    pass through with None."""

    def __init__(
        self, model: OnnxClassifier, on_windows: Optional[Callable[[int, int], None]] = None, window_executor=None
    ) -> None:
        self.model = model
        self.on_windows = on_windows
        self.window_executor = window_executor  # e.g. a RayExecutor scoring one huge image's windows

    def map_images(self, items, compute_kwargs, *, compute=compute_image, path_of=lambda item: item):
        for item in items:
            path = path_of(item)
            if path is None:
                yield item, None
                continue
            try:
                extra = {"executor": self.window_executor} if self.window_executor is not None else {}
                yield item, compute(self.model, path, progress=self.on_windows, **compute_kwargs, **extra)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # the image's own failure: recorded, the run goes on
                yield item, exc

    def shutdown(self) -> None:
        pass


@dataclass
class _Plan:
    """One image's decisions, made on the driver before any work: its output names, fingerprint and
    whether --resume skips it (or why it cannot run)."""

    image: InputImage
    layout: _OutputNames
    fingerprint: Optional[str] = None
    image_sha: Optional[str] = None
    skip: bool = False
    error: Optional[str] = None


# Writes (PNG encoding, JSON, hashing) run in one writer thread while the next image is computed; at most this
# many images wait to be written, so memory stays bounded.
MAX_PENDING_WRITES = 2


def run_settings(
    options: ExplainOptions,
    preprocessing: Preprocessing,
    labels: Optional[Sequence[str]] = None,
    *,
    npy: bool = True,
    all_classes: bool = False,
    metrics: bool = False,
    scales: Sequence[Tuple[int, ...]] = (),
    multiscale: bool = False,
    style=None,
    panels: bool = False,
    nifti: bool = True,
    **_not_deciding,
) -> dict:
    """Every parameter that decides an image's result files (what its fingerprint covers, with the model and
    image files); the other keywords of :func:`run_batch` (timing, resume, executor, ...) are ignored."""
    return {
        "options": {
            k: (list(v) if isinstance(v, tuple) else getattr(v, "value", v)) for k, v in options.__dict__.items()
        },
        "preprocessing": preprocessing.describe(),
        "labels": hashlib.sha256("\n".join(labels or []).encode("utf-8")).hexdigest() if labels else None,
        "npy": npy,
        "all_classes": all_classes,
        "metrics": metrics,
        "scales": [list(s) for s in scales],
        "multiscale": multiscale,
        "style": style.describe() if style is not None else None,
        "panels": panels,
        "nifti": nifti,
    }


def run_batch(
    model: OnnxClassifier,
    images: Sequence[InputImage],
    out_dir,
    options: ExplainOptions,
    *,
    preprocessing: Preprocessing,
    labels: Optional[Sequence[str]] = None,
    npy: bool = True,
    all_classes: bool = False,
    timing: bool = True,
    resume: bool = False,
    metrics: bool = False,
    scales: Sequence[Tuple[int, ...]] = (),
    multiscale: bool = False,
    aggregate: Optional[MapAggregate] = None,
    style=None,
    panels: bool = False,
    executor=None,
    nifti: bool = True,
    on_image_start: Optional[Callable[[InputImage], None]] = None,
    on_windows: Optional[Callable[[int, int], None]] = None,
    on_image_done: Optional[Callable[[InputImage, SummaryRow], None]] = None,
    on_note: Optional[Callable[[str], None]] = None,
) -> BatchResult:
    """Explain every image with one loaded model, writing its outputs under ``out_dir/KEY.*``.

    With two or more ``scales`` (patch sizes) each image gets one set of outputs per scale and a
    KEY.scales.json with their rank correlations. ``metrics`` adds deletion/insertion AUCs to the JSON.
    One image failing (unreadable, truncated, not an image) is recorded and the run goes on. Ctrl-C or
    SIGTERM (as KeyboardInterrupt) stops after the files already written, which are all complete.

    ``executor`` computes the images (default :class:`LocalExecutor`; a RayExecutor spreads them over a
    cluster); this process alone decides resume, writes every file (in a writer thread, overlapping the next
    image's computation) and keeps the rows in input order, so the outputs are the same whichever executor ran.

    ``on_note`` is called once per run for each kind of note the explanations carry (``Explanation.notes``:
    how the maps were computed, e.g. approximate incremental inference), with the first image's text.
    """
    out_dir = Path(out_dir)
    settings = run_settings(
        options,
        preprocessing,
        labels,
        npy=npy,
        all_classes=all_classes,
        metrics=metrics,
        scales=scales,
        multiscale=multiscale,
        style=style,
        panels=panels,
        nifti=nifti,
    )
    look = {"style": style, "panels": panels} if style is not None else {"panels": panels}
    study = len(scales) > 1
    result = BatchResult()
    executor = executor or LocalExecutor(model, on_windows)

    def plans():
        for image in images:
            plan = _Plan(image, _OutputNames(image.key, scales if study else (), multiscale))
            if on_image_start:
                on_image_start(image)
            try:
                regular, kind = _regular(image.path)
                if not regular and kind in ("FIFO", "socket", "character device", "block device", "special file"):
                    raise OccludeError(f"not a regular file ({kind}), not opened: {image.path}")
                plan.image_sha = (
                    file_sha256(image.path) if regular else folder_sha256(image.path) if image.path.is_dir() else None
                )
                plan.fingerprint = run_fingerprint(model.sha256, plan.image_sha or "", settings)
                plan.skip = bool(
                    resume
                    and plan.image_sha
                    and _existing_fingerprint(out_dir / plan.layout.marker) == plan.fingerprint
                    and verify_outputs(out_dir / plan.layout.marker) is None
                )
            except OccludeError as exc:
                plan.error = _one_line(str(exc))
            except OSError as exc:
                plan.error = _one_line(f"cannot read {image.path}: {exc.strerror or exc}")
            yield plan

    def write(plan: _Plan, outcome) -> Tuple[object, float]:
        """Write one computed image (runs in the writer thread); returns (the explanation, write seconds)."""
        started = time.perf_counter()
        computed, measures = outcome
        extra = {"fingerprint": plan.fingerprint, "image_sha256": plan.image_sha}
        previous = superseded_outputs(out_dir, plan.image.key)  # what an earlier run wrote for this image
        if isinstance(computed, VolumeExplanation):  # medical inputs (issue 12)
            if measures is not None:
                raise OccludeError("metrics are not available for medical inputs yet")
            written = write_volume_explanation(
                computed,
                out_dir,
                plan.image.key,
                npy=npy,
                nifti=nifti,
                all_classes=all_classes,
                timing=timing,
                extra=extra,
                **look,
            )
        elif study:
            written = write_scale_study(
                computed,
                out_dir,
                plan.image.key,
                npy=npy,
                timing=timing,
                multiscale=multiscale,
                extra=extra,
                metrics=measures,
                **look,
            )
        else:
            if measures is not None:
                extra["metrics"] = measures
            written = write_explanation(
                computed, out_dir, plan.image.key, npy=npy, all_classes=all_classes, timing=timing, extra=extra, **look
            )
        remove_superseded(out_dir, previous, written)  # e.g. STEM.npy after --no-npy: never left to be read
        return computed, time.perf_counter() - started

    def finish(plan: _Plan, outcome, future) -> SummaryRow:
        """The image's row, in input order, once its files are written (or why it failed)."""
        image = plan.image
        try:
            if plan.error is not None:
                return SummaryRow(path=str(image.path), status="failed", error=plan.error)
            if plan.skip:
                row = _skipped_row(out_dir / plan.layout.record, image, out_dir, plan.layout.marker)
                if aggregate is not None:  # the map as its JSON holds it, as a fresh image's (exact float64)
                    aggregate.add(saved_map(out_dir, plan.layout.marker))
                return row
            if isinstance(outcome, BaseException):
                raise outcome
            computed, write_s = future.result()
            explanation = computed.explanations[0] if study else computed
            for each in computed.explanations if study else [computed]:
                for key, text in getattr(each, "notes", {}).items():
                    if key not in result.notes:
                        result.notes[key] = text
                        if on_note:
                            on_note(text)
            if aggregate is not None:
                aggregate.add(computed.mean_map() if (study and multiscale) else explanation.map)
            info = peak(explanation.map)
            compute_s = float(explanation.timing.get("total_s", 0.0))
            return SummaryRow(
                path=str(image.path),
                status="ok",
                target_index=explanation.target,
                target_label=explanation.label(explanation.target),
                original_score=float(explanation.occlusion.original_scores[explanation.target]),
                peak_y=info["y"],
                peak_x=info["x"],
                peak_value=info["value"],
                seconds=round(compute_s + write_s, 3) if timing else None,
                output=plan.layout.marker,
                warning="; ".join(explanation.warnings) or None,
            )
        except OccludeError as exc:  # one line by design: a file name's line breaks are shown as \\n
            return SummaryRow(path=str(image.path), status="failed", error=_one_line(str(exc)))
        except Exception as exc:  # one bad image must never stop the rest: record what happened
            return SummaryRow(path=str(image.path), status="failed", error=f"{type(exc).__name__}: {first_line(exc)}")

    pending: Deque[Tuple[_Plan, object, Optional[Future]]] = deque()

    def drain(block_until: int) -> None:
        while pending and (len(pending) > block_until or pending[0][2] is None or pending[0][2].done()):
            plan, outcome, future = pending.popleft()
            row = finish(plan, outcome, future)
            result.rows.append(row)
            result.entries.append(Entry(row, plan.image.key, plan.fingerprint if row.status != "failed" else None))
            if on_image_done:
                on_image_done(plan.image, row)

    compute_kwargs = dict(
        options=options,
        preprocessing=preprocessing,
        labels=list(labels) if labels else None,
        scales=[tuple(s) for s in scales],
        metrics=metrics,
    )

    def path_of(plan: _Plan):
        return None if (plan.skip or plan.error is not None) else plan.image.path

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlude-writer") as writer:
        try:
            for plan, outcome in executor.map_images(plans(), compute_kwargs, compute=compute_image, path_of=path_of):
                runs = outcome is not None and not isinstance(outcome, BaseException)
                pending.append((plan, outcome, writer.submit(write, plan, outcome) if runs else None))
                # a volume is written before the next is read: its budget (limits.check_volume_size) is per volume
                drain(0 if isinstance(outcome, VolumeExplanation) else MAX_PENDING_WRITES)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            try:
                drain(0)  # the writes already started finish (each file is atomic), then their rows are kept
            except KeyboardInterrupt:
                result.interrupted = True
    return result


class _OutputNames:
    """Which files of an image mark completion (written last, with the fingerprint), give its summary row
    and hold its main map."""

    def __init__(self, key: str, scales: Sequence[Tuple[int, ...]], multiscale: bool) -> None:
        if scales:
            first = f"{key}.patch-{scales[0][0]}x{scales[0][1]}"
            self.marker = f"{key}.scales.json"
            self.record = f"{first}.json"
            self.main_npy = f"{key}.multiscale.npy" if multiscale else f"{first}.npy"
        else:
            self.marker = self.record = f"{key}.json"
            self.main_npy = f"{key}.npy"


def _skipped_row(json_path: Path, image: InputImage, out_dir: Path, marker: str) -> SummaryRow:
    with open(json_path, encoding="utf-8") as handle:
        record = json.load(handle)
    row = SummaryRow.from_record(record, "skipped", marker, None)
    row.path = str(image.path)
    return row


def is_result_record(record) -> bool:
    return isinstance(record, dict) and "fingerprint" in record and "map" in record and "target" in record


def rebuild_summary(out_dir, *, style=None) -> List[SummaryRow]:
    """Rebuild summary.json/.csv (and the aggregate and report the job asked for) from the output folder's
    source of truth, and return the rows: the current job's manifests (see
    :mod:`occlude_cli.outputs.folder`), or, in a folder without one, the per-image JSON files."""
    return rebuild(out_dir, style=style).rows


def run_folder(
    model: OnnxClassifier,
    images: Sequence[InputImage],
    out_dir,
    options: ExplainOptions,
    *,
    preprocessing: Preprocessing,
    all_images: Optional[Sequence[InputImage]] = None,
    shard: Optional[Tuple[int, int]] = None,
    problems: Sequence[Tuple[str, str]] = (),
    aggregate: bool = False,
    report: bool = False,
    style=None,
    **batch,
) -> BatchResult:
    """One process of a folder run: :func:`run_batch` over ``images`` (with ``shard``, this share of
    ``all_images``), recorded in the output folder's manifest, then summary.json/.csv, the aggregate
    (``aggregate``: once every shard has finished) and the report (``report``) rebuilt from the current job's
    manifests. ``problems``: (argument, error) pairs of arguments that named no image, kept as failed rows.
    ``batch``: the other keywords of :func:`run_batch`. The result's ``folder`` says which shards are in."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    every = list(all_images) if all_images is not None else list(images)
    scales = batch.get("scales") or ()
    settings = run_settings(options, preprocessing, style=style, **batch)
    describe = model.describe()
    job = Job.plan(
        {"path": describe["path"], "sha256": describe["sha256"]},
        settings,
        [i.key for i in every],
        shard,
        aggregate=aggregate,
        report=report,
    )
    loose = [Entry(SummaryRow(path=arg, status="failed", error=_one_line(problem))) for arg, problem in problems]
    planned = [
        Entry(
            SummaryRow(
                path=str(i.path),
                status="pending",
                output=_OutputNames(i.key, scales if len(scales) > 1 else (), bool(batch.get("multiscale"))).marker,
            ),
            i.key,
        )
        for i in images
    ]
    start_job(out_dir, job, planned + loose)
    result = run_batch(model, images, out_dir, options, preprocessing=preprocessing, style=style, **batch)
    done = {e.key: e for e in result.entries}
    result.entries = [done.get(e.key, e) for e in planned] + loose
    result.rows += [e.row for e in loose]
    result.folder = finish_job(out_dir, job, result.entries, interrupted=result.interrupted, style=style)
    return result
