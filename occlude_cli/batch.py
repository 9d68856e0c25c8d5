"""Many images, one model: input discovery, collision-free output names, resume, shards, summaries and
the dataset-level aggregate map. Memory stays bounded: one image and one map are held at a time.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .core.metrics import peak
from .errors import OccludeError, first_line
from .explain import ExplainOptions, VolumeExplanation, explain, explain_scales
from .loaders.images import Preprocessing
from .loaders.model import OnnxClassifier, file_sha256
from .outputs.records import SUMMARY_FIELDS, SummaryRow, summary_document  # noqa: F401  (re-exported)
from .outputs.volumes import write_volume_explanation
from .outputs.write import write_aggregate, write_explanation, write_scale_study, write_summary  # noqa: F401
from .validate import faithfulness

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm")
MEDICAL_SUFFIXES = (".dcm", ".nii", ".nii.gz")  # plus suffix-less files with the DICOM marker (issue 12)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image to explain and the name (relative path without suffix) its outputs get under --out."""

    path: Path
    key: str


def _is_image_name(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES or path.name.lower().endswith(MEDICAL_SUFFIXES):
        return True
    from .loaders.medical import is_dicom_file  # DICOM files often have no suffix

    return path.suffix == "" and is_dicom_file(path)


def _expand(arg: str, recursive: bool, series: bool = False) -> Tuple[List[Path], Path, Optional[str]]:
    """Files named by one PATH argument, the folder their output names are relative to, and an error.
    With ``series`` a folder is one input (a DICOM series), named after the folder."""
    path = Path(arg)
    if series:
        if not path.is_dir():
            return [], path.parent, f"series: {path} is not a folder of DICOM slices"
        return [path], path.resolve().parent, None
    if any(c in arg for c in _GLOB_CHARS) and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(arg, recursive=True) if Path(p).is_file())
        base = Path(*[part for part in Path(arg).parts[: _first_magic(Path(arg).parts)]]) if Path(arg).parts else Path(".")
        if not matches:
            return [], base, f"no file matches {arg}"
        return matches, base, None
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in path.glob(pattern) if p.is_file() and _is_image_name(p))
        if not files:
            hint = "" if recursive else " (use --recursive for sub-folders)"
            return [], path, f"no images in folder {path}{hint}"
        return files, path, None
    if not path.exists():
        return [], path.parent, f"not found: {path}"
    return [path], path.parent, None


def _first_magic(parts: Sequence[str]) -> int:
    for i, part in enumerate(parts):
        if any(c in part for c in _GLOB_CHARS):
            return i
    return len(parts)


def discover_inputs(args: Iterable[str], recursive: bool = False,
                    series: bool = False) -> Tuple[List[InputImage], List[Tuple[str, str]]]:
    """Expand files, folders and globs into images with unique output keys.

    Returns the images (sorted by key) and the (argument, error) pairs of arguments that named nothing.
    Output keys keep each file's path relative to the folder or glob it came from; where two keys would
    collide, every key becomes the path relative to the inputs' common folder instead.
    """
    found: Dict[Path, str] = {}  # file as given -> output key
    seen = set()
    problems: List[Tuple[str, str]] = []
    for arg in args:
        files, base, error = _expand(str(arg), recursive, series)
        if error:
            problems.append((str(arg), error))
        for file in files:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found[file] = _strip_suffix(os.path.relpath(file.resolve() if series else file, base))
    keys = list(found.values())
    if len(set(keys)) != len(keys):
        common = Path(os.path.commonpath([str(p.resolve().parent) for p in found]))
        found = {p: _strip_suffix(os.path.relpath(p.resolve(), common)) for p in found}
    keys = list(found.values())
    if len(set(keys)) != len(keys):  # same stem, different suffix in one folder: keep the suffix
        found = {p: k + "." + p.suffix.lstrip(".").lower() if keys.count(k) > 1 else k for p, k in found.items()}
    images = [InputImage(path=p, key=k.replace(os.sep, "/")) for p, k in found.items()]
    return sorted(images, key=lambda item: item.key), problems


def _strip_suffix(relative: str) -> str:
    if relative.lower().endswith(".nii.gz"):
        return relative[: -len(".nii.gz")]
    root, ext = os.path.splitext(relative)
    return root if ext else relative


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


def run_fingerprint(model_sha256: str, image_sha256: str, settings: dict) -> str:
    """What decides a result: the model file, the image file and every parameter (not timing)."""
    text = json.dumps({"model": model_sha256, "image": image_sha256, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _existing_fingerprint(json_path: Path) -> Optional[str]:
    try:
        with open(json_path, encoding="utf-8") as handle:
            return json.load(handle).get("fingerprint")
    except (OSError, ValueError):
        return None


@dataclass
class BatchResult:
    rows: List[SummaryRow] = field(default_factory=list)
    interrupted: bool = False


class MapAggregate:
    """Running mean of per-image maps, each scaled to [-1, 1] by its largest |value| (bounded memory)."""

    def __init__(self, style=None) -> None:
        from .outputs.render import DEFAULT_STYLE

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
        self.total += scaled
        self.count += finite
        self.images += 1

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / self.count, np.nan)

    def write(self, out_dir: Path) -> List[Path]:
        """aggregate.npy and aggregate.png (through the outputs stage)."""
        return write_aggregate(self.mean() if self.total is not None else None, out_dir, self.images, self.style)


def summary_name(shard: Optional[Tuple[int, int]]) -> str:
    return "summary" if shard is None else f"summary.shard-{shard[0]}-of-{shard[1]}"


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
    scales: Sequence[Tuple[int, int]] = (),
    multiscale: bool = False,
    aggregate: Optional[MapAggregate] = None,
    style=None,
    panels: bool = False,
    nifti: bool = True,
    on_image_start: Optional[Callable[[InputImage], None]] = None,
    on_windows: Optional[Callable[[int, int], None]] = None,
    on_image_done: Optional[Callable[[InputImage, SummaryRow], None]] = None,
) -> BatchResult:
    """Explain every image with one loaded model, writing its outputs under ``out_dir/KEY.*``.

    With two or more ``scales`` (patch sizes) each image gets one set of outputs per scale and a
    KEY.scales.json with their rank correlations. ``metrics`` adds deletion/insertion AUCs to the JSON.
    One image failing (unreadable, truncated, not an image) is recorded and the run goes on. Ctrl-C or
    SIGTERM (as KeyboardInterrupt) stops after the files already written, which are all complete.
    """
    out_dir = Path(out_dir)
    settings = {
        "options": {k: (list(v) if isinstance(v, tuple) else getattr(v, "value", v)) for k, v in options.__dict__.items()},
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
    look = {"style": style, "panels": panels} if style is not None else {"panels": panels}
    study = len(scales) > 1
    result = BatchResult()
    for image in images:
        layout = _OutputNames(image.key, scales if study else (), multiscale)
        started = time.perf_counter()
        if on_image_start:
            on_image_start(image)
        try:
            image_sha = (file_sha256(image.path) if image.path.is_file()
                         else folder_sha256(image.path) if image.path.is_dir() else None)
            fingerprint = run_fingerprint(model.sha256, image_sha or "", settings)
            if resume and image_sha and _existing_fingerprint(out_dir / layout.marker) == fingerprint:
                row = _skipped_row(out_dir / layout.record, image, out_dir, layout.marker)
                if aggregate is not None:
                    _aggregate_saved(aggregate, out_dir / layout.main_npy, out_dir / layout.record)
            else:
                extra = {"fingerprint": fingerprint, "image_sha256": image_sha}
                kwargs = dict(preprocessing=preprocessing, labels=labels, progress=on_windows)
                if study:
                    result_study = explain_scales(model, image.path, scales, options, **kwargs)
                    explanation = result_study.explanations[0]
                    scale_metrics = [faithfulness(e, model) for e in result_study.explanations] if metrics else None
                    write_scale_study(result_study, out_dir, image.key, npy=npy, timing=timing,
                                      multiscale=multiscale, extra=extra, metrics=scale_metrics, **look)
                    main_map = result_study.mean_map() if multiscale else explanation.map
                else:
                    explanation = explain(model, image.path, options, **kwargs)
                    if isinstance(explanation, VolumeExplanation):  # medical inputs (issue 12)
                        if metrics:
                            raise OccludeError("metrics are not available for medical inputs yet")
                        write_volume_explanation(explanation, out_dir, image.key, npy=npy, nifti=nifti,
                                                 all_classes=all_classes, timing=timing, extra=extra, **look)
                    elif metrics:
                        extra["metrics"] = faithfulness(explanation, model)
                    if not isinstance(explanation, VolumeExplanation):
                        write_explanation(explanation, out_dir, image.key, npy=npy, all_classes=all_classes,
                                          timing=timing, extra=extra, **look)
                    main_map = explanation.map
                if aggregate is not None:
                    aggregate.add(main_map)
                info = peak(explanation.map)
                row = SummaryRow(
                    path=str(image.path),
                    status="ok",
                    target_index=explanation.target,
                    target_label=explanation.label(explanation.target),
                    original_score=float(explanation.occlusion.original_scores[explanation.target]),
                    peak_y=info["y"],
                    peak_x=info["x"],
                    peak_value=info["value"],
                    seconds=round(time.perf_counter() - started, 3) if timing else None,
                    output=layout.marker,
                    warning="; ".join(explanation.warnings) or None,
                )
        except KeyboardInterrupt:
            result.interrupted = True
            break
        except OccludeError as exc:
            row = SummaryRow(path=str(image.path), status="failed", error=first_line(exc))
        except Exception as exc:  # one bad image must never stop the rest: record what happened
            row = SummaryRow(path=str(image.path), status="failed", error=f"{type(exc).__name__}: {first_line(exc)}")
        result.rows.append(row)
        if on_image_done:
            on_image_done(image, row)
    return result


class _OutputNames:
    """Which files of an image mark completion (written last, with the fingerprint), give its summary row
    and hold its main map."""

    def __init__(self, key: str, scales: Sequence[Tuple[int, int]], multiscale: bool) -> None:
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


def _aggregate_saved(aggregate: MapAggregate, npy_path: Path, json_path: Path) -> None:
    if npy_path.is_file():
        aggregate.add(np.load(npy_path).astype(np.float64))
        return
    with open(json_path, encoding="utf-8") as handle:
        grid = json.load(handle)["map"]
    aggregate.add(np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=np.float64))


def is_result_record(record) -> bool:
    return isinstance(record, dict) and "fingerprint" in record and "map" in record and "target" in record


def rebuild_summary(out_dir) -> List[SummaryRow]:
    """Summary rows from the per-image JSON files under ``out_dir`` (e.g. after merging shards), plus the
    failures recorded in shard summaries for images that have no result yet."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise OccludeError(f"not a folder: {out_dir}")
    rows: List[SummaryRow] = []
    seen = set()
    secondary_scales = set()  # a scale study's row comes from its first scale, named by STEM.scales.json
    marker_of = {}
    for scales_path in out_dir.rglob("*.scales.json"):
        try:
            with open(scales_path, encoding="utf-8") as handle:
                maps = json.load(handle).get("maps", [])
        except (OSError, ValueError):
            continue
        secondary_scales.update(scales_path.parent / name for name in maps[1:])
        if maps:
            marker_of[scales_path.parent / maps[0]] = os.path.relpath(scales_path, out_dir).replace(os.sep, "/")
    for json_path in sorted(out_dir.rglob("*.json")):
        if json_path.name.startswith("summary") or json_path in secondary_scales:
            continue
        try:
            with open(json_path, encoding="utf-8") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        if not is_result_record(record):
            continue
        rel = marker_of.get(json_path) or os.path.relpath(json_path, out_dir).replace(os.sep, "/")
        seconds = record.get("timing", {}).get("total_s")
        row = SummaryRow.from_record(record, "ok", rel, round(seconds, 3) if seconds is not None else None)
        rows.append(row)
        seen.add(row.path)
    for shard_summary in sorted(out_dir.glob("summary*.json")):
        try:
            with open(shard_summary, encoding="utf-8") as handle:
                document = json.load(handle)
        except (OSError, ValueError):
            continue
        for item in document.get("images", []):
            if item.get("status") == "failed" and item.get("path") not in seen:
                rows.append(SummaryRow(**{k: item.get(k) for k in SUMMARY_FIELDS}))
                seen.add(item.get("path"))
    return sorted(rows, key=lambda r: (r.output or "", r.path))
