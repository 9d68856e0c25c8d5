"""Exact incremental inference against its limit (issue 35): ``python benchmarks/incremental.py --limit``.

For each model and window geometry (patch / stride on the 224x224 input):

* **the limit** (:mod:`occlude_cli.inference.limit`): the smallest share of a full pass an exact engine must
  compute per window, by multiply-adds and by time, the time weighed by the plan's cost model and by onnxruntime's
  profiler on this machine (``measured``: a full pass's nodes timed at batch 16);
* **in one process**: the plan occlude builds for the run (``build_plan`` as ``--incremental on`` builds it)
  against full passes (the engine's loop: batches of occluded copies through the whole model, the model's session
  as occlude opens it), the same windows alternating, medians of the per-pair ratios; and where each window's time
  goes (:class:`~occlude_cli.inference.segments.Profile`: onnxruntime on each part's crops and on the suffix, the
  copies, the rest of the scorer) next to the work each part computes, split by the limit's accounting into what
  the window changed (dirty), what its receptive field needs around that (halo) and what rounding the crops up to
  the part's stride and class adds (rounding), as shares of a full pass's time (measured weights);
* **whole processes** (``--whole-process``): ``occlude run --incremental on`` against ``off`` on the sample cat,
  each a fresh interpreter, alternating, medians of the per-pair ratios, the plan cache warm; and what fixed costs
  leave reachable: the whole-process ratio a perfect engine (exactly the limit, built for free) would reach.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from occlude_cli.analyses.scorers import INCREMENTAL_MAX_CHAIN  # noqa: E402
from occlude_cli.core.engine import window_grid  # noqa: E402
from occlude_cli.inference.incremental import build_plan  # noqa: E402
from occlude_cli.inference.limit import _walk, incremental_limit, measure_node_times  # noqa: E402
from occlude_cli.inference.receptive import GraphInfo, analyse  # noqa: E402
from occlude_cli.inference.segments import Profile, extract  # noqa: E402

SIZE = 224
GEOMETRIES = ((32, 16), (16, 8), (8, 4))


def spread(windows: np.ndarray, count: int) -> np.ndarray:
    """``count`` windows spread over the grid (first and last included), or all of them."""
    if count <= 0 or count >= len(windows):
        return windows
    return windows[np.unique(np.linspace(0, len(windows) - 1, count).round().astype(int))]


def node_weights(info: GraphInfo, times) -> Dict[str, float]:
    """Measured seconds per graph tensor (onnxruntime names a fused node by its last output), as shares of the
    full pass's time."""
    total = sum(t for _, t, _ in times) or 1.0
    return {name: t / total for name, t, _ in times if name in info.producer}


def part_work(info: GraphInfo, scorer, windows: np.ndarray, weights: Dict[str, float], layout=None) -> List[dict]:
    """Per part of the plan (the suffix last), as shares of a full pass's time (measured weights), averaged over
    the windows: the work the part computes (its crops, or whole tensors), and of it what the windows changed
    (dirty), what the receptive field of the changed target positions needs around that (halo), and the rest:
    crops rounded up to the part's stride, to the largest crop of their class (rounding), or whole tensors."""
    shares, _ = _walk(info, windows, layout)
    geo = scorer.geometry(windows)
    rows = []
    names = [s.source for s in scorer.segments] + [scorer.segments[-1].target]
    for k, segment in enumerate(scorer.segments):
        sub = extract(info.model, [segment.source], [segment.target], info)
        area = float(segment.source_extent[0] * segment.source_extent[1])
        computed = geo.lengths[k][:, 0] * geo.lengths[k][:, 1] / area  # the crop's share, at every layer of the part
        row = {"part": f"{segment.source} -> {segment.target}", "crop": [int(v) for v in geo.sizes[k]]}
        row.update(_split(info, sub, segment, geo.changed[k], computed, shares, weights))
        rows.append(row)
    sub = extract(info.model, [names[-1]], [scorer.output_name], info)
    suffix = {"part": f"{names[-1]} -> {scorer.output_name} (suffix)", "crop": None}
    work = dirty = 0.0
    for node in sub.graph.node:
        w = weights.get(node.output[0], 0.0)
        work += w
        dirty += w * float(np.mean(shares.get(node.output[0], np.ones(1))))
    suffix.update({"computed": work, "dirty": dirty, "halo": 0.0, "rounding": work - dirty})
    rows.append(suffix)
    return rows


def _split(info, sub, segment, changed: np.ndarray, computed: np.ndarray, shares, weights) -> dict:
    """One prefix part's work split into dirty, halo and rounding (see :func:`part_work`)."""
    target = segment.target
    work = dirty = halo = rounding = 0.0
    for node in sub.graph.node:
        name = node.output[0]
        w = weights.get(name, 0.0)
        if w == 0.0:
            continue
        extent = info.shapes[name][2:4]
        rel = analyse(None, source=name, info=info, source_axes=(2, 3)).tensors.get(target) if name != target else None
        needed = np.ones(len(changed))
        for a in range(2):
            lo, hi = changed[:, a, 0], changed[:, a, 1]
            if rel is None:
                n0, n1 = lo, hi
            else:
                r = rel.rf[a]
                n0 = np.clip(lo * r.stride + r.offset, 0, extent[a])
                n1 = np.clip((hi - 1) * r.stride + r.offset + r.size, 0, extent[a])
            needed = needed * np.maximum(n1 - n0, 0) / extent[a]
        d = shares.get(name, np.ones(len(changed)))
        needed = np.maximum(needed, d)
        work += w * float(np.mean(computed))
        dirty += w * float(np.mean(d))
        halo += w * float(np.mean(needed - d))
        rounding += w * float(np.mean(np.maximum(computed - needed, 0.0)))
    return {"computed": work, "dirty": dirty, "halo": halo, "rounding": rounding}


def in_process(path: Path, sample: np.ndarray, patch: int, stride: int, count: int, repeats: int, batch: int):
    """The plan ``--incremental on`` builds against full passes on the same windows, alternating (see the module
    docstring): per-pair ratios, per-window times and the profile of the fastest incremental run."""
    from incremental import full_passes, full_session

    baseline = np.zeros_like(sample)
    session = full_session(path)
    windows = spread(window_grid((SIZE, SIZE), (patch, patch), (stride, stride)), count)
    scorer = build_plan(
        path,
        [1, *sample.shape],
        window=(patch, patch),
        stride=(stride, stride),
        full_session=session,
        measure=False,
        max_plans=1,
        max_chain=INCREMENTAL_MAX_CHAIN,
    )
    full_passes(session, sample, baseline, windows[:batch], batch)
    scorer.score_windows(sample, baseline, windows[:batch], batch)
    full, inc, best = [], [], None
    worst = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        reference = full_passes(session, sample, baseline, windows, batch)
        full.append(time.perf_counter() - started)
        profile = scorer.profile = Profile(len(scorer.segments) + 1)
        started = time.perf_counter()
        got = scorer.score_windows(sample, baseline, windows, batch)
        inc.append(time.perf_counter() - started)
        if inc[-1] <= min(inc):
            best = (profile, inc[-1])
        worst = max(worst, float(np.abs(got - reference).max() / (np.abs(reference).max() or 1.0)))
    scorer.profile = None
    ratios = [f / i for f, i in zip(full, inc)]
    assert best is not None
    profile, seconds = best
    n = len(windows)
    parts = [
        {
            "onnxruntime_ms": profile.onnxruntime[k] / n * 1e3,
            "copies_ms": profile.copies[k] / n * 1e3,
            "calls": profile.calls[k],
        }
        for k in range(len(scorer.segments) + 1)
    ]
    measured = sum(p["onnxruntime_ms"] + p["copies_ms"] for p in parts)
    return (
        scorer,
        windows,
        {
            "windows": n,
            "cuts": scorer.cuts,
            "estimated_speedup": scorer.estimated_speedup,
            "speedup": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
            "full_ms_per_window": statistics.median(full) / n * 1e3,
            "incremental_ms_per_window": statistics.median(inc) / n * 1e3,
            "max_rel_diff": worst,
            "parts": parts,
            "scorer_rest_ms": seconds / n * 1e3 - measured,
        },
    )


def whole_process(model: Path, image: Path, patch: int, stride: int, pairs: int, out: Path) -> dict:
    """``occlude run`` with ``--incremental on`` and ``off``, fresh interpreters, alternating (after one warm-up
    each: the plan cache and the file cache warm): per-pair ratios, medians, and each mode's explain() timing."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    walls: Dict[str, List[float]] = {"on": [], "off": []}
    timing: Dict[str, List[dict]] = {"on": [], "off": []}
    for round_ in range(pairs + 1):
        for mode in ("on", "off"):
            folder = out / f"{mode}-{round_}"
            command = [sys.executable, "-m", "occlude_cli", "run", str(model), str(image), "-q", "--out", str(folder)]
            command += ["--patch", str(patch), "--stride", str(stride), "--incremental", mode]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, env=env, text=True)
            seconds = time.perf_counter() - started
            if done.returncode:  # e.g. --incremental on refused: the plan's self-check failed on this image
                return {"refused": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]}
            if round_:  # the first round warms the caches
                walls[mode].append(seconds)
                record = json.loads((folder / f"{image.stem}.json").read_text())
                timing[mode].append(record["timing"])
    ratios = [off / on for on, off in zip(walls["on"], walls["off"])]

    def median(mode: str, key: str) -> float:
        return statistics.median(t[key] for t in timing[mode])

    return {
        "pairs": pairs,
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "on_s": statistics.median(walls["on"]),
        "off_s": statistics.median(walls["off"]),
        "occlusion_on_s": median("on", "occlusion_s"),
        "occlusion_off_s": median("off", "occlusion_s"),
        "prepare_on_s": median("on", "prepare_s"),
        "prepare_off_s": median("off", "prepare_s"),
    }


def reachable(process: dict, limit: float) -> float:
    """The whole-process ratio a perfect engine would reach: the off run with its occlusion divided by the limit
    and nothing added for the plan (start-up, loading, the original pass and writing stay as measured)."""
    fixed = process["off_s"] - process["occlusion_off_s"]
    return process["off_s"] / (fixed + process["occlusion_off_s"] / limit)


def run(
    models: Sequence[str],
    geometries: Sequence[Tuple[int, int]],
    count: int,
    repeats: int,
    batch: int,
    pairs: int,
    whole: bool,
    breakdown: Sequence[Tuple[int, int]],
) -> dict:
    """Every model and geometry: limits, in-process speed-up and breakdown, and with ``whole`` whole processes."""
    from incremental import _torch_models, cat_input, export

    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        builders = _torch_models() if any(m != "effnet" for m in models) else {}
        for name in models:
            if name == "effnet":
                path, sample = ROOT / "sample_models" / "efficientnet_lite0.onnx", cat_input()
            else:
                path = export(name, builders[name], Path(folder))
                sample = rng.standard_normal((3, SIZE, SIZE)).astype(np.float32)
            info = GraphInfo(path, input_shape=[1, 3, SIZE, SIZE])
            times = measure_node_times(info.model, [1, 3, SIZE, SIZE], batch=batch, runs=5)
            weights = node_weights(info, times)
            for patch, stride in geometries:
                row = _one(name, path, info, times, weights, sample, (patch, stride), count, repeats, batch)
                if (patch, stride) in breakdown:
                    row["work"] = part_work(info, row.pop("_scorer"), row.pop("_windows"), weights)
                row.pop("_scorer", None)
                row.pop("_windows", None)
                if whole:
                    image = ROOT / "sample_images" / "cat.jpg"
                    process = whole_process(path, image, patch, stride, pairs, Path(folder) / f"{name}-{patch}")
                    if "refused" not in process:
                        process["reachable"] = reachable(process, row["limit_time_measured"])
                        process["share_of_limit"] = process["speedup"] / row["limit_time_measured"]
                    row["whole_process"] = process
                results.append(row)
                _print(row)
    return {"results": results}


def _one(name, path, info, times, weights, sample, geometry, count, repeats, batch) -> dict:
    patch, stride = geometry
    grid = window_grid((SIZE, SIZE), (patch, patch), (stride, stride))
    estimated = incremental_limit(info, grid)
    measured = incremental_limit(info, grid, node_times=times)
    scorer, windows, process = in_process(path, sample, patch, stride, count, repeats, batch)
    return {
        "model": name,
        "patch": patch,
        "stride": stride,
        "grid_windows": int(len(grid)),
        "limit_macs": estimated.speedup_macs,
        "limit_time_cost_model": estimated.speedup,
        "limit_time_measured": measured.speedup,
        "stages_measured": [
            {"extent": s.extent, "time_share": s.time_share, "dirty_share": s.dirty_share} for s in measured.stages
        ],
        "in_process": process,
        "share_of_limit_in_process": process["speedup"] / measured.speedup,
        "_scorer": scorer,
        "_windows": windows,
    }


def _print(row: dict) -> None:
    p = row["in_process"]
    print(
        f"{row['model']:12s} {row['patch']:>2}/{row['stride']:<2} limit {row['limit_macs']:.2f}x macs, "
        f"{row['limit_time_cost_model']:.2f}x time (cost model), {row['limit_time_measured']:.2f}x time (measured)  "
        f"in process {p['speedup']:.2f}x ({p['speedup_min']:.2f}-{p['speedup_max']:.2f}): "
        f"{row['share_of_limit_in_process']:.0%} of the limit  max rel diff {p['max_rel_diff']:.1e}  "
        f"{len(p['cuts'])} cuts",
        flush=True,
    )
    for k, part in enumerate(p["parts"]):
        work = row.get("work", [None] * len(p["parts"]))[k]
        split = (
            f"  computes {work['computed']:.3f} of a pass: dirty {work['dirty']:.3f}, halo {work['halo']:.3f}, "
            f"rounding/whole {work['rounding']:.3f}  crop {work['crop']}"
            if work
            else ""
        )
        print(
            f"    part {k}: onnxruntime {part['onnxruntime_ms']:.3f} ms/window, copies {part['copies_ms']:.3f}, "
            f"{part['calls']} calls{split}"
        )
    print(
        f"    rest of the scorer {p['scorer_rest_ms']:.3f} ms/window; full pass {p['full_ms_per_window']:.2f} ms/window"
    )
    if "whole_process" in row and "refused" in row["whole_process"]:
        print(f"    whole process: --incremental on refused: {row['whole_process']['refused']}", flush=True)
    elif "whole_process" in row:
        w = row["whole_process"]
        print(
            f"    whole process: on {w['on_s']:.2f} s, off {w['off_s']:.2f} s: {w['speedup']:.2f}x "
            f"({w['speedup_min']:.2f}-{w['speedup_max']:.2f}, {w['pairs']} pairs) = {w['share_of_limit']:.0%} of the "
            f"limit; a perfect engine built for free would reach {w['reachable']:.2f}x "
            f"({w['reachable'] / row['limit_time_measured']:.0%}); occlusion {w['occlusion_on_s']:.2f} / "
            f"{w['occlusion_off_s']:.2f} s, prepare {w['prepare_on_s']:.2f} / {w['prepare_off_s']:.2f} s",
            flush=True,
        )


def parse_geometries(text: str) -> List[Tuple[int, int]]:
    out = []
    for item in text.split(","):
        patch, stride = item.strip().split("/")
        out.append((int(patch), int(stride)))
    return out


def save(document: dict, prefix: str = "incremental-limit") -> Path:
    out = ROOT / "benchmarks" / "results" / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    os.replace(tmp, out)
    return out


def main(args) -> int:
    """The ``--limit`` mode of benchmarks/incremental.py."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    geometries = parse_geometries(args.geometries)
    breakdown = parse_geometries(args.breakdown) if args.breakdown else []
    load_start = os.getloadavg()[0]
    print(f"load average at start: {load_start:.2f} (other processes skew the numbers)")
    document = run(
        models, geometries, args.windows, args.repeats, args.batch_size, args.pairs, args.whole_process, breakdown
    )
    document.update({"load_start": load_start, "load_end": os.getloadavg()[0], "cpu_count": os.cpu_count()})
    print(f"load average at end: {document['load_end']:.2f}")
    print(f"wrote {save(document)}")
    return 0
