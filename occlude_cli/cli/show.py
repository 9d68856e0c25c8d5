"""How the run, dry-run, baseline-check, summary and info results look on the terminal: tables, one-line
estimates and notes (outside text escaped). Typer-free: the commands call these with library results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..loaders.outputs import NOT_SCORES
from ..text import shortened
from .common import one_line, safe, stderr, stdout
from .screen import Column, fitted_table, shorten_path  # noqa: F401  (shorten_path: the shown paths' rule)


def print_estimate(plan: dict) -> None:
    """--dry-run's lines: windows, forward passes (per patch size, --metrics), the estimate, incremental."""
    parts = []
    if len(plan["per_patch"]) > 1:
        parts.append(
            "patch sizes "
            + ", ".join(f"{'x'.join(map(str, g['patch']))}: {g['forward_passes']}" for g in plan["per_patch"])
        )
    if plan["metrics_forward_passes"]:
        parts.append(f"--metrics: {plan['metrics_forward_passes']}")
    breakdown = f" ({'; '.join(parts)})" if parts else ""
    stdout.print(
        f"{plan['images']} image(s); per image: {plan['windows']} windows, {plan['forward_passes']} forward passes"
        f"{breakdown} (exact maps: {plan['exact_forward_passes']}), batch size {plan['batch_size']}"
        f"{' (' + safe(plan['batch_note']) + ')' if plan.get('batch_note') else ''}, "
        f"{plan['seconds_per_forward_pass'] * 1000:.1f} ms per pass; "
        f"estimated {plan['estimated_s']:.1f} s per image, {plan['estimated_total_s']:.1f} s in all"
    )
    stdout.print(safe(incremental_line(plan["incremental"])), highlight=False)
    if plan["incremental"].get("limit"):
        stdout.print(safe(limit_line(plan["incremental"]["limit"])), highlight=False)


def print_baseline_checks(documents) -> None:
    """--baseline-check's tables: per input, each baseline's change of the top-1 confidence."""
    for document in documents:
        from rich.table import Table

        table = Table(
            title=safe(
                f"baselines on {one_line(document['path'])}: top-1 {document['target']['index']} "
                f"{document['score']['kind']} {document['score']['original']:.4f}, "
                f"{document['copies']} random windows"
            ),
            title_justify="left",
        )
        for name in ("baseline", "mean change", "mean |change|", "max |change|", "top-1 flips"):
            table.add_column(name)
        for r in document["baselines"]:
            table.add_row(
                r["baseline"],
                f"{r['mean_change']:+.4f}",
                f"{r['mean_abs_change']:.4f}",
                f"{r['max_abs_change']:.4f}",
                f"{r['top1_flips']:.0%}",
            )
        stdout.print(table)


def incremental_line(decision: dict) -> str:
    """--dry-run's line about incremental inference (explain.incremental_decision)."""
    mode = decision["mode"]
    if not decision["possible"]:
        return f"incremental inference ({mode}): not used, full passes: {decision['reason']}"
    if not decision["exact"]:
        reason = str(decision["reason"]).removeprefix("approximate: ")
        return f"incremental inference ({mode}): used, the maps will be APPROXIMATE: {reason}"
    return (
        f"incremental inference ({mode}): possible; a plan is built at the first image and used if it passes its "
        "self-check against full passes"
        + (" and the cost model expects >= 1.3x" if mode == "auto" else "")
        + " (estimates above are for full passes)"
    )


def limit_line(limit: dict) -> str:
    """--dry-run's line about the limit of exact incremental inference (inference.limit.Limit.describe)."""
    return (
        f"limit of exact incremental inference for these windows: {limit['speedup_time']:.2f}x by time "
        f"(weights: {limit['time_weights']}), {limit['speedup_macs']:.2f}x by multiply-adds (a window changes "
        f"{limit['dirty_share_time']:.0%} and {limit['dirty_share_macs']:.0%} of a full pass)"
    )


def print_table(rows, out: Path, error_params: Optional[dict] = None) -> None:
    """The run's table on stdout, fitted to the width: numbers whole, the target (class index, then its label,
    or a failure's error) wraps and the image name shortens first, and at the narrowest the timing and peak
    columns go. Rows of images an interrupted run did not reach are counted in the title, not listed. A failed
    row's error is in the command line's words (``error_params``: its path -> the parameters the error names)."""
    from .common import in_flags

    pending = sum(1 for row in rows if row.status == "pending")
    listed = [row for row in rows if row.status != "pending"]
    if not listed:  # an interrupted run that finished no image: its error line says it all
        return
    title = f"occlude: {len(listed)} image(s) -> {out}" + (f" ({pending} pending: --resume)" if pending else "")
    volumes = any(getattr(row, "peak_z", None) is not None for row in listed)
    columns = [
        Column("image", "name"),
        Column("status"),
        Column("target", "label"),
        Column("score", justify="right", keep=3),
        Column("peak (z, y, x)" if volumes else "peak (y, x)", keep=1),
        Column("s", justify="right", keep=2),
    ]
    cells, errors = [], error_params or {}
    for row in listed:
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}.get(row.status, "")
        label = shortened(row.target_label or "")
        target = f"{row.target_index} {label}".strip() if row.target_index is not None else ""
        cells.append(
            [
                (row.path, ""),
                (row.status, style),
                (target if row.status != "failed" else in_flags(row.error or "", errors.get(row.path, ())), ""),
                (f"{row.original_score:.4f}" if row.original_score is not None else "", ""),
                (", ".join(str(v) for v in (row.peak_z, row.peak_y, row.peak_x) if v is not None), ""),
                (f"{row.seconds:.2f}" if row.seconds is not None else "", ""),
            ]
        )
    stdout.print(fitted_table(title, columns, cells, stdout.width))


def print_folder_notes(state, quiet: bool) -> None:
    """What a folder's rebuild found that the user must know: shards still to run, stopped runs."""
    if quiet:
        return
    for note in state.notes:
        stderr.print(f"[yellow]note:[/] {safe(note)}")
    if state.job is not None and state.shards and not state.complete:
        missing = [k for k in range(1, state.shards + 1) if k not in state.shards_done]
        stderr.print(
            f"[yellow]note:[/] shards done: {len(state.shards_done)} of {state.shards} "
            f"(still to finish: {', '.join(map(str, missing))}); summary.json lists the shards done so far"
            + ("; the aggregate is written when every shard has finished" if state.aggregate_images is None else "")
        )


def _score(score: dict) -> str:
    """What score auto explains: 'softmax (auto: ...)', or the rule alone where the first image decides."""
    return f"{score['kind']} ({score['rule']})" if score.get("kind") else str(score["rule"])


def info_text(d: dict) -> str:
    """The info document as aligned 'key  value' lines (the JSON's key names), without Python reprs."""
    pre = d.get("preprocessing")
    if isinstance(pre, dict) and "transform" in pre:  # a medical model (issue 12)
        pre_text = medical_text(pre)
    elif isinstance(pre, dict):
        pre_text = (
            f"{pre['layout']} {pre['size'][0]}x{pre['size'][1]} {pre['color']}, {_geometry(pre)}, "
            f"{pre['formula']} (mean/std in RGB order)"
        )
    else:
        pre_text = str(pre)
    names = d.get("label_names")
    shown = (
        (", ".join(shortened(n) for n in names[:5]) + (", ..." if len(names) > 5 else ""))
        if names
        else "none (pass --labels FILE or --labels imagenet to run)"
    )
    if d.get("labels_source"):
        shown += f" (from {d['labels_source']})"
    rows = [
        ("path", d["path"]),
        ("sha256", d["sha256"]),
        ("input", d["input"]),
        ("input_shape", _shape(d["input_shape"])),
        ("input_type", d["input_type"]),
        *_outputs(d),
        ("task", _task(d)),
        ("classes", d["classes"] if d["classes"] is not None else _no_classes(d)),
        ("final_op", d["final_op"] or "unknown"),
        *([("score", _score(d["score"]))] if d.get("score") else []),
        ("batching", d["batching"]),
        ("provider", d["provider"]),
        ("files", ", ".join(d.get("files") or []) or "none beside the model"),
        ("device", _device(d.get("device") or {})),
        ("preprocessing", pre_text),
    ]
    sources = pre.get("sources", {}) if isinstance(pre, dict) else {}
    rows += [("", f"{key}: {where if where == 'default' else 'from ' + where}") for key, where in sources.items()]
    slices = d.get("medical_preprocessing")
    if slices is not None:  # a 2-D model trained on DICOM slices: what a DICOM input gets
        rows.append(("medical", medical_text(slices) if isinstance(slices, dict) else slices))
    if d.get("modality"):
        rows.append(("modality", d["modality"]))
    rows.append(("labels", f"{len(names) if names else 0}: {shown}"))
    return "\n".join(f"[bold]{key:<14}[/]{safe(str(value))}" for key, value in rows)


def _outputs(d: dict) -> list:
    """info's output rows: the one output and its shape, or every output of a model with several."""
    outputs = d.get("outputs") or []
    if len(outputs) <= 1:
        return [("output", d["output"]), ("output_shape", _shape(d["output_shape"]))]
    return [("outputs", ", ".join(f"{o['name']} {_shape(o['shape'])}" for o in outputs))]


def _task(d: dict) -> str:
    """info's task row: what the output serves, as run reads it, or what to choose."""
    task = d.get("task")
    if task is None and len(d.get("outputs") or []) > 1:
        return "several outputs: run --task detect (--boxes-output ...) or choose one with --output NAME"
    outputs = d.get("outputs") or []
    if task is None and len(outputs) == 1 and outputs[0].get("type") in NOT_SCORES:
        return f"none: its {outputs[0]['type'][7:-1]} values are class indices or decisions, not scores"
    if task is None:
        return f"not told by the output's shape {_shape(d['output_shape'])}: run --task detect or --task embed"
    return str(task)


def _no_classes(d: dict) -> str:
    """info's classes row where the output declares none."""
    return "read from the output at run time" if d.get("task") in (None, "detect", "embed") else "dynamic"


def _geometry(pre: dict) -> str:
    """The resize and crop of a preprocessing document in words."""
    h, w = pre["size"]
    how = f"{pre.get('interpolation', 'bilinear')}, {pre.get('resampler', 'float')} resampler"
    to = pre.get("resize_to")
    if pre["resize"] == "short-side" and to:
        return f"resize short side to {to[0]} ({how}), center crop {h}x{w}"
    if pre["resize"] == "stretch" and to:
        return f"stretch to {to[0]}x{to[1]} ({how}), center crop {h}x{w}"
    return f"resize {pre['resize']} ({how})"


def _device(device: dict) -> str:
    """info's device line: the GPU and the CUDA and cuDNN it loaded, or why CUDA is not used."""
    if "cuda" in device:
        return f"CPU: {device['cuda']}"
    found = [f"{k.replace('_', ' ')} {device[k]}" for k in ("gpu", "cuda_runtime", "cudnn", "driver") if device.get(k)]
    return "CUDA: " + (", ".join(found) or "versions not readable")


def medical_text(pre: dict) -> str:
    """A medical preprocessing (VolumePreprocessing.describe()) as one line: the grid, then the one intensity
    transform with its numbers (a window as level and width, as radiologists say it)."""
    transform = pre.get("transform")
    window = pre.get("window")
    if transform == "window" and isinstance(window, list) and len(window) == 2:
        detail = f"window L {window[0]:g} W {window[1]:g} (centre {window[0]:g}, width {window[1]:g}) to 0..1"
    elif transform == "window":
        detail = f"window {window}"
    elif transform == "intensity_range" and pre.get("intensity_range"):
        lo, hi = pre["intensity_range"]
        detail = f"clip to [{lo:g}, {hi:g}], scale to 0..1"
    elif transform == "zscore":
        threshold = pre.get("zscore_threshold")
        detail = "z-score" + (f" (statistics over values > {threshold:g})" if threshold is not None else "")
    else:
        detail = "real units as they are"
    return (
        f"{pre['layout']} {'x'.join(map(str, pre['size']))} grey, resampled (order {pre['resample_order']}) "
        f"in real units (HU for CT), then {detail}"
    )


def _shape(shape) -> str:
    return "[" + ", ".join(str(v) for v in shape) + "]"
