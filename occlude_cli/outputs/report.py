"""`occlude report OUT/`: one self-contained, static ``OUT/index.html`` for a folder of occlude results.

The page is meant to be zipped as a CI artifact or served by any static file server, so it loads nothing
from the network: CSS and JavaScript are inline (the script is allowed by its hash in a Content Security
Policy, so an injected ``<script>`` or event handler could not run even if escaping failed), and every
picture is referenced by a relative URL. All rows live in one JSON block; the script sorts, filters and
paginates them, so the DOM holds one page (100 rows and thumbnails) even for tens of thousands of images.

What it reads (all optional, at least one must be there): the rows of ``occlude run`` from the run's
manifests (``manifest*.json``, the folder's source of truth: see :mod:`occlude_cli.outputs.folder`; in a
folder without one, ``summary.json``, ``summary.shard-K-of-N.json`` and per-image ``STEM.json`` records no
summary names), ``STEM.scales.json`` (patch-size studies), ``check.json`` (``occlude check``),
``STEM.compare.json`` (``occlude compare``) and ``aggregate.png``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from ..errors import OccludeError
from ..text import json_safe, recover, restore, shown
from .manifest import current_entries
from .names import is_run_level
from .write import atomic_write_bytes, read_json

TEMPLATES = Path(__file__).resolve().parent / "templates"
PAGE_SIZE = 100
REPORT_NAME = "index.html"
# what Chromium, Firefox and Safari all display in an <img>; others (TIFF, PPM...) get no original panel
BROWSER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".avif")
# default order: what a reviewer must look at first
_SHARD_SUMMARY = re.compile(r"^summary\.shard-\d+-of-\d+\.json$")
_RANK = {"run_failed": 0, "check_fail": 1, "check_error": 2, "other": 3}


def build_report(out_dir, *, title: str | None = None) -> Path:
    """Write ``out_dir/index.html`` (atomically) summarising the occlude results in ``out_dir``; return its path.

    Raises OccludeError when ``out_dir`` is not a folder or holds no occlude results.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise OccludeError(f"out_dir is not a folder: {out}", params=("out_dir",))
    data = collect_report_data(out)
    if not data["rows"] and not data["compare"] and not data["diff"] and data["running"]:
        raise OccludeError(f"out_dir: {data['running']}: {out}", params=("out_dir",))
    if not data["rows"] and not data["compare"] and not data["diff"]:
        raise OccludeError(
            f"out_dir holds no occlude results (no summary.json, check.json, STEM.json or STEM.compare.json): {out}",
            params=("out_dir",),
        )
    html = render_report(data, title=title or f"occlude report: {out.resolve().name}")
    return atomic_write_bytes(out / REPORT_NAME, html.encode("utf-8"))


# ------------------------------------------------------------------------------------------ reading


def collect_report_data(out: Path) -> dict:
    """Everything the page shows, as JSON-ready data (no HTML): rows, counts, run settings, extras."""
    out = Path(out)
    files = _all_files(out)
    warnings: list[str] = []
    manifest, entries, state = current_entries(out)
    running = _still_running(state.shards_running, state.shards)
    if running:
        warnings.append(running)
    if manifest is not None:  # the run's source of truth: its current rows only, nothing of earlier runs
        run_rows = {_norm(shown(e.row.path)): dict(e.row.__dict__) for e in entries}
    else:  # a folder of an older occlude or of library writes: summaries, then records none of them lists
        run_rows = _summary_rows(out, files, warnings)
        _add_unlisted_records(out, files, run_rows, warnings)
    check = _load(out / "check.json", warnings) if "check.json" in files else None
    if check is not None and not isinstance(check, dict):
        warnings.append("check.json: not a check document, left out")
        check = None
    check_rows = [r for r in _list((check or {}).get("images")) if isinstance(r, dict)]

    rows: dict[str, dict] = {}
    for row in run_rows.values():
        rows[_norm(row.get("path"))] = {"run": row}
    for row in check_rows:
        rows.setdefault(_norm(row.get("path")), {})["check"] = row

    settings = _run_settings(out, files, run_rows, warnings)
    paths = [key for key in rows if key]
    prefix = _common_folder(paths)
    resolved_out = out.resolve()
    table = [_page_row(key, entry, files, resolved_out, prefix) for key, entry in rows.items()]
    table.sort(key=lambda r: (r.pop("_rank"), r.get("n", "")))  # "n" left out when empty (a record without path)

    run_counts = {"ok": 0, "failed": 0, "skipped": 0}
    for row in run_rows.values():
        run_counts[str(row.get("status"))] = run_counts.get(str(row.get("status")), 0) + 1
    check_counts = None
    if check is not None:
        check_counts = {"pass": 0, "fail": 0, "error": 0}
        for row in check_rows:
            check_counts[str(row.get("status"))] = check_counts.get(str(row.get("status")), 0) + 1
    return {
        "page_size": PAGE_SIZE,
        "prefix": prefix,
        "has_run": bool(run_rows),
        "has_volumes": any(row.get("pz") is not None for row in table),
        "has_check": check is not None,
        "counts": {"run": run_counts if run_rows else None, "check": check_counts},
        "settings": settings,
        "check_settings": _flat_settings(_dict((check or {}).get("settings"))),
        "check_summary": _dict((check or {}).get("summary")) or None,
        "aggregate": "aggregate.png" if "aggregate.png" in files else None,
        "compare": _compare_entries(out, files, prefix, warnings),
        "diff": _diff_entries(out, files, warnings),
        "warnings": warnings,
        "running": running,
        "rows": table,
    }


def _still_running(shards: list[int], total: int | None) -> str:
    """What the page (or the error) says of a run still writing to the folder; '' when none is."""
    if not shards:
        return ""
    which = f" (shard {', '.join(str(k) for k in shards)} of {total})" if total else ""
    return f"a run is still running here{which}: its images show once it has finished (run occlude report again)"


def _all_files(out: Path) -> set[str]:
    """Every file under ``out`` as a POSIX path relative to it (one directory walk, no stat per file);
    hidden files (temporary files of atomic writes) are left out."""
    found = set()
    for folder, dirs, names in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, out)
        for name in names:
            if not name.startswith("."):
                found.add(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return found


def _load(path: Path, warnings: list[str]):
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        warnings.append(f"{path.name}: unreadable, left out ({type(exc).__name__})")
        return None


def _norm(path) -> str:
    return os.path.normpath(str(path)) if path not in (None, "") else ""


def _summary_rows(out: Path, files: set[str], warnings: list[str]) -> dict[str, dict]:
    """Rows of summary.json and every summary.shard-*.json, one per image path; where an image appears
    twice (a failed shard re-run), a result beats a failure."""
    rows: dict[str, dict] = {}
    names = sorted(n for n in files if n == "summary.json" or _SHARD_SUMMARY.match(n))
    for name in names:
        document = _load(out / name, warnings)
        for item in _list(_dict(document).get("images")):
            if not isinstance(item, dict) or item.get("path") in (None, ""):
                continue
            key = _norm(item["path"])
            if key not in rows or (rows[key].get("status") == "failed" and item.get("status") != "failed"):
                rows[key] = {**item, "output": item.get("output") if isinstance(item.get("output"), str) else None}
    return rows


def _is_record(document) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("target"), dict)
        and isinstance(document.get("image"), dict)
        and "map_info" in document
    )


def _add_unlisted_records(out: Path, files: set[str], rows: dict[str, dict], warnings: list[str]) -> None:
    """Per-image records that no summary names (merged shards, library writes) become ``ok`` rows. Only
    these are read: a folder with a complete summary.json costs one file read here, not one per image."""
    listed = {str(r.get("output")) for r in rows.values() if r.get("output")}
    secondary: set[str] = set()
    for name in sorted(n for n in files if n.endswith(".scales.json")):
        document = _dict(_load(out / name, warnings))
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        maps = [folder + m for m in _list(document.get("maps")) if isinstance(m, str)]
        secondary.update(maps[1:])
        if maps and name in listed:
            listed.add(maps[0])
    for name in sorted(files):
        if not name.endswith(".json") or name in listed or name in secondary or _is_folder_document(name):
            continue
        document = _load(out / name, warnings)
        if not _is_record(document):
            continue
        path = document["image"].get("path") or name
        if _norm(path) in rows and rows[_norm(path)].get("status") != "failed":
            continue
        info = _dict(_dict(document.get("map_info")).get("peak"))
        seconds = _dict(document.get("timing")).get("total_s")
        rows[_norm(path)] = {
            "path": path,
            "status": "ok",
            "target_index": document["target"].get("index"),
            "target_label": document["target"].get("label"),
            "original_score": _dict(document.get("score")).get("original"),
            "peak_z": info.get("z"),
            "peak_y": info.get("y"),
            "peak_x": info.get("x"),
            "peak_value": info.get("value"),
            "seconds": round(seconds, 3) if isinstance(seconds, (int, float)) else None,
            "output": name,
            "error": None,
        }


def _is_folder_document(name: str) -> bool:
    """Files that are not per-image result records: summaries, check.json, studies and comparisons."""
    top = "/" not in name
    return (top and name.endswith(".json") and is_run_level(name[: -len(".json")])) or name.endswith(
        (".scales.json", ".compare.json")
    )


def _study(out: Path, output: str) -> tuple[str, dict]:
    """The folder prefix and the document of a STEM.scales.json (empty when unreadable)."""
    try:
        document = read_json(out / output)
    except (OSError, ValueError):
        document = {}
    return (output.rsplit("/", 1)[0] + "/" if "/" in output else ""), document if isinstance(document, dict) else {}


def _record_name(out: Path, output: str | None, files: set[str]) -> str | None:
    """The result record behind a row's ``output`` (its marker file): for a patch-size study, the first size's."""
    if not output or output not in files:
        return None
    if output.endswith(".scales.json"):
        folder, document = _study(out, output)
        maps = _list(document.get("maps"))
        return folder + str(maps[0]) if maps else None
    return output if output.endswith(".json") else None


def _stem(out: Path, output: str | None, files: set[str]) -> str | None:
    """The STEM whose STEM.overlay.png / STEM.heatmap.png belong to a row (``output`` is its marker file):
    for a patch-size study, the multi-scale map when written, else the first patch size."""
    if output and output.endswith(".scales.json") and output in files:
        folder, document = _study(out, output)
        if document.get("multiscale"):
            return folder + str(document["multiscale"])[: -len(".npy")]
    record = _record_name(out, output, files)
    return record[: -len(".json")] if record else None


def _run_settings(out: Path, files: set[str], rows: dict[str, dict], warnings: list[str]) -> list[tuple[str, str]]:
    """Model and parameters of the run, from the first result record (every image of a run shares them)."""
    for row in sorted(rows.values(), key=lambda r: str(r.get("output"))):
        name = _record_name(out, row.get("output"), files) if row.get("status") != "failed" else None
        if name is None or name not in files:
            continue
        record = _load(out / name, warnings)
        if not _is_record(record):
            continue
        model = _dict(record.get("model"))
        params = dict(_dict(record.get("params")))
        items = [
            ("model", model.get("path")),
            ("model sha256", str(model.get("sha256") or "")[:16] or None),
            ("input", f"{model['input']} [{_text(model.get('input_shape') or [])}]" if model.get("input") else None),
            ("output", model.get("output")),
            ("provider", model.get("provider")),
        ]
        preprocessing = params.pop("preprocessing", None)
        items += [(key, value) for key, value in params.items()]
        if isinstance(preprocessing, dict):
            items += [(f"preprocessing {key}", value) for key, value in preprocessing.items()]
        return [(k, _text(v)) for k, v in items if v is not None]
    return []


def _flat_settings(settings: dict) -> list[tuple[str, str]]:
    return [(str(k), _text(v)) for k, v in settings.items() if v is not None]


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, int) for v in value):  # patch, stride, size: HxW
            return f"{value[0]}x{value[1]}"
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    return str(value)


def _dict(value) -> dict:
    """A document's object, or {} where a hand-edited file holds something else there."""
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    """A document's array, or [] where a hand-edited file holds something else there."""
    return value if isinstance(value, list) else []


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _common_folder(paths: Iterable[str]) -> str:
    """The folder all image paths share (shown once above the table, cut from every name), or ''."""
    paths = [p for p in paths if p]
    if len(paths) < 2:
        return os.path.dirname(paths[0]) + os.sep if paths and os.path.dirname(paths[0]) else ""
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # absolute and relative paths mixed
        return ""
    if common in paths:  # one image's full path: keep its folder
        common = os.path.dirname(common)
    return common.rstrip(os.sep) + os.sep if common and common != os.sep else ""


def _url(relative: str) -> str:
    return quote(relative.encode("utf-8", "surrogateescape"), safe="/")  # a file name's own bytes


def _original_url(path: str, resolved_out: Path) -> str | None:
    """A relative URL from the report to the original image, when the file exists and a browser can show it."""
    if not path or not path.lower().endswith(BROWSER_IMAGE_SUFFIXES):
        return None
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    try:
        if not candidate.is_file():
            return None
        return _url(os.path.relpath(candidate.resolve(), resolved_out).replace(os.sep, "/"))
    except (OSError, ValueError):  # e.g. another drive on Windows: no relative path exists
        return None


def _page_row(key: str, entry: dict, files: set[str], resolved_out: Path, prefix: str) -> dict:
    """One image as the page sees it: short keys, nulls left out (5,000 rows must stay small)."""
    run, check = entry.get("run") or {}, entry.get("check") or {}
    path = str(run.get("path") or check.get("path") or key)
    exact_path = str((recover(run, "path") if run.get("path") else recover(check, "path")) or path)
    display = key or path
    name = display[len(prefix) :] if prefix and display.startswith(prefix) else display  # every key starts with it
    stem = _stem(resolved_out, run.get("output"), files) if run.get("status") in ("ok", "skipped") else None
    index = run.get("target_index", check.get("target_index"))
    label = run.get("target_label") if run else check.get("target_label")
    errors = list(dict.fromkeys(str(e) for e in (run.get("error"), check.get("error")) if e))  # once if both say it
    reasons = [str(r) for r in _list(check.get("reasons"))]
    row = {
        "n": name,  # the page shows PREFIX + n as the full path
        "s": run.get("status") or "",
        "c": check.get("status") or "",
        "l": (f"{label} ({index})" if label not in (None, "") else f"class {index}") if index is not None else "",
        "sc": _num(run.get("original_score", check.get("score"))),
        "pv": _num(run.get("peak_value")),
        "pz": run.get("peak_z", check.get("peak_z")),
        "py": run.get("peak_y", check.get("peak_y")),
        "px": run.get("peak_x", check.get("peak_x")),
        "e": _num(check.get("energy_share")),
        "pg": check.get("pointing_game"),
        "rf": _num(check.get("region_fraction")),
        "sec": _num(run.get("seconds", check.get("seconds"))),
        "err": "; ".join(errors + reasons),
        "m": check.get("mask"),
        "o": _original_url(exact_path, resolved_out),
    }
    if stem is not None:  # pictures as the stem's URL and which of them exist (bit 1: overlay, 2: heatmap)
        pictures = (f"{stem}.overlay.png" in files) + 2 * (f"{stem}.heatmap.png" in files)
        if pictures:
            row["st"], row["v"] = _url(stem), pictures
        elif f"{stem}.montage.png" in files:  # a volume (issue 12): the montage and the planes through the peak
            row["ov"] = _url(f"{stem}.montage.png")
            if f"{stem}.planes.png" in files:
                row["hm"] = _url(f"{stem}.planes.png")
    table = [r for r in _list(check.get("regions")) if isinstance(r, dict)] or (
        _read_regions(resolved_out / f"{stem}.regions.csv") if stem else None
    )
    if table:
        row["rg"] = regions_text(table)
    picture = check.get("overlay") or check.get("picture")  # a check overlay, when `occlude check` writes one
    if isinstance(picture, str) and picture in files:
        row["ov"] = _url(picture)
    if run.get("status") == "failed":
        rank = _RANK["run_failed"]
    elif check.get("status") in ("fail", "error"):
        rank = _RANK["check_" + check["status"]]
    else:
        rank = _RANK["other"]
    row = {k: v for k, v in row.items() if v not in (None, "")}
    row["_rank"] = rank
    return row


def _read_regions(path: Path) -> list | None:
    """The rows of a STEM.regions.csv (None when there is none or it cannot be read)."""
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, ValueError):
        return None


def regions_text(rows: list, top: int = 5) -> str:
    """A region table in one line for the report: the ``top`` regions by share of positive importance, each
    with its mean drop and voxels."""

    def number(value) -> float | None:
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    parts = []
    for row in sorted(rows, key=lambda r: number(r.get("positive_share")) or 0.0, reverse=True)[:top]:
        name = row.get("name") or f"label {row.get('label')}"
        share, drop = number(row.get("positive_share")), number(row.get("mean_drop"))
        parts.append(
            f"{name}: {'n/a' if share is None else f'{share * 100:.1f}%'} of importance, mean drop "
            f"{'n/a' if drop is None else f'{drop:.3g}'}, {row.get('voxels')} voxels"
        )
    return "; ".join(parts)


def _compare_entries(out: Path, files: set[str], prefix: str, warnings: list[str]) -> list[dict]:
    """One entry per STEM.compare.json: agreement, both maps' AUCs and the picture."""
    entries = []
    for name in sorted(n for n in files if n.endswith(".compare.json")):
        document = _load(out / name, warnings)
        if not isinstance(document, dict):
            continue
        path = str(_dict(document.get("image")).get("path") or name)
        target = _dict(document.get("target"))
        agreement = _dict(document.get("agreement"))
        curves = _dict(document.get("curves"))
        ours, theirs = _dict(curves.get("occlusion")), _dict(curves.get("other"))
        better = _dict(document.get("better"))
        png = name[: -len(".json")] + ".png"
        label = target.get("label")
        entries.append(
            {
                "n": path[len(prefix) :] if prefix and path.startswith(prefix) else path,
                "other": str(_dict(document.get("other_map")).get("name") or "other map"),
                "l": f"{label} ({target.get('index')})" if label else f"class {target.get('index')}",
                "pearson": _num(agreement.get("pearson")),
                "spearman": _num(agreement.get("spearman")),
                "iou": _num(agreement.get("top_iou")),
                "del": [_num(ours.get("deletion_auc")), _num(theirs.get("deletion_auc"))],
                "ins": [_num(ours.get("insertion_auc")), _num(theirs.get("insertion_auc"))],
                "better": [str(better.get("deletion") or ""), str(better.get("insertion") or "")],
                "png": _url(png) if png in files else None,
            }
        )
    return entries


def _diff_entries(out: Path, files: set[str], warnings: list[str]) -> list[dict]:
    """One entry per row of diff.json (``occlude diff``): both predictions, the similarity, the gates and the
    picture."""
    document = _load(out / "diff.json", warnings) if "diff.json" in files else None
    rows = [r for r in (document or {}).get("images", []) if isinstance(r, dict)] if isinstance(document, dict) else []
    prefix = _common_folder([str(r.get("path") or "") for r in rows])
    entries = []
    for row in rows:
        path = str(restore(row).get("path") or "")
        ok = row.get("status") == "ok"

        def named(index, label) -> str:
            return "" if index is None else (f"{label} ({index})" if label else f"class {index}")

        png = row.get("diff_png")
        entries.append(
            {
                "n": path[len(prefix) :] if prefix and path.startswith(prefix) else path,
                "l": named(row.get("target_index"), row.get("target_label")) if ok else "",
                "a": named(row.get("a_index"), row.get("a_label")) if ok else "",
                "b": named(row.get("b_index"), row.get("b_label")) if ok else "",
                "flip": row.get("top1_agrees") is False,
                "nums": [_num(row.get(k)) for k in ("rank_corr", "rank_corr_abs", "top_iou", "ssim")],
                "gates": str(row.get("gates") or ("error: " + str(row.get("error") or "") if not ok else "")),
                "png": _url(png) if isinstance(png, str) and png in files else None,
            }
        )
    return entries


# ------------------------------------------------------------------------------------------ writing


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def data_json(data: dict) -> str:
    """The page's data block: compact JSON where no ``<`` survives, so nothing in a file name or label
    (``</script>``, ``<!--``) can end the ``<script type="application/json">`` element early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_report(data: dict, *, title: str) -> str:
    """The page's HTML: the Jinja2 template (autoescaped) with the inline CSS, script and data block."""
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        raise OccludeError("the HTML report needs jinja2: pip install 'jinja2>=3.1'") from None
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    style = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    if "</" in script or "</" in style:
        raise OccludeError("report template error: the inline script or style contains '</'")
    data = json_safe(data, exact=False)  # names and labels as the outside-text rule shows them
    return environment.get_template("report.html.j2").render(
        title=shown(title),
        data=data,
        data_json=Markup(data_json(data)),
        script=Markup(script),
        style=Markup(style),
        script_hash=_script_hash(script),
    )
