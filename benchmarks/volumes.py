#!/usr/bin/env python
"""Volumes (issue 12): occlude's windows/s on the 3-D sample model against the bare onnxruntime floor, and
the cost of the per-window ``inpaint`` baseline on 2-D inputs.

Run from the repository root (needs the ``medical`` extra)::

    python benchmarks/volumes.py              # 5 paired repeats
    python benchmarks/volumes.py --repeats 9

1. **3-D throughput.** ``lesion3d.onnx`` (N x 1 x 32 x 32 x 32) on ``lesion_volume.nii.gz``, at patch 8 /
   stride 4 (343 windows) and patch 4 / stride 2 (3,375 windows). *occlude*: the engine's time for every
   window (``occlusion_sensitivity`` with the model's scorer: building the occluded copies, the batched
   forward passes, scoring). *floor*: the same session running the same number of forward passes on one
   pre-built batch of occluded inputs at the same batch size (``session.run`` and nothing else). Each repeat
   runs both, interleaved, so that load coming and going hits both; the table shows medians and the ratio
   occlude / floor of the medians (1.00 = no overhead).
2. **inpaint cost.** Milliseconds per window of :class:`occlude_cli.loaders.inpaint.InpaintBaseline` alone
   (no model), on ``efficientnet_lite0``'s 224 x 224 input with the default 16 px patch and on ``ct2d``'s
   64 x 64 input with its default 5 px patch; and what that adds to a default run.

Writes the numbers to benchmarks/results/volumes-YYYYmmdd-HHMMSS.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from occlude_cli.core.engine import occlusion_sensitivity, window_grid, window_slice  # noqa: E402
from occlude_cli import explain  # noqa: E402
from occlude_cli.loaders.inpaint import InpaintBaseline  # noqa: E402
from occlude_cli.loaders.model import OnnxClassifier  # noqa: E402

MODELS = ROOT / "sample_models"
IMAGES = ROOT / "sample_images"
RESULTS = ROOT / "benchmarks" / "results"


def throughput(model: OnnxClassifier, sample: np.ndarray, patch: int, stride: int, batch: int, repeats: int) -> dict:
    """Paired medians of occlude's engine and the bare session on the same number of forward passes."""
    axes = (1, 2, 3)
    windows = window_grid(sample.shape[1:], (patch,) * 3, (stride,) * 3)
    n = len(windows)
    head = model.head("auto", model.run(sample[None]))
    score = model.scorer(head)
    prebuilt = np.repeat(sample[None], batch, axis=0)
    for row, window in enumerate(windows[:batch].tolist()):
        prebuilt[(row,) + window_slice(window, axes, sample.ndim)] = 0.0
    session, name = model.session, model.input.name
    occ_times, floor_times = [], []
    occlusion_sensitivity(
        sample, score, patch=(patch,) * 3, stride=(stride,) * 3, spatial_axes=axes, batch_size=batch
    )  # warm-up
    for _ in range(repeats):
        started = time.perf_counter()
        occlusion_sensitivity(
            sample, score, patch=(patch,) * 3, stride=(stride,) * 3, spatial_axes=axes, batch_size=batch
        )
        occ_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        done = 0
        session.run(None, {name: prebuilt[:1]})  # the original's pass, as occlude makes it
        while done < n:
            take = min(batch, n - done)
            session.run(None, {name: prebuilt[:take]})
            done += take
        floor_times.append(time.perf_counter() - started)
    occ, floor = statistics.median(occ_times), statistics.median(floor_times)
    return {
        "patch": patch,
        "stride": stride,
        "windows": n,
        "batch_size": batch,
        "occlude_s": occ,
        "floor_s": floor,
        "occlude_windows_per_s": (n + 1) / occ,
        "floor_windows_per_s": (n + 1) / floor,
        "ratio": occ / floor,
        "occlude_runs_s": occ_times,
        "floor_runs_s": floor_times,
    }


def inpaint_cost(model_path: Path, image: Path, windows_to_time: int) -> dict:
    """ms per window of the inpaint baseline alone, on the model's input with its default patch."""
    from occlude_cli.analyses.plan import setup  # the input exactly as explain() prepares it, with the default grid

    s = setup(model_path, image)
    pre, patch, stride, prepared = s.preprocessing, s.patch, s.stride, s.prepared
    grid = window_grid(pre.size, patch, stride)
    rng = np.random.default_rng(0)
    chosen = grid[rng.choice(len(grid), size=min(windows_to_time, len(grid)), replace=False)]
    fill = InpaintBaseline(prepared.model_input, pre.spatial_axes)
    started = time.perf_counter()
    for window in chosen.tolist():
        fill(window)
    per_window = (time.perf_counter() - started) / len(chosen)
    return {
        "model": model_path.name,
        "input": list(prepared.model_input.shape),
        "patch": list(patch),
        "stride": list(stride),
        "default_windows": int(len(grid)),
        "ms_per_window": per_window * 1000,
        "added_to_default_run_s": per_window * len(grid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5:
        print(f"warning: load average {load:.2f} at start: other processes skew the numbers", file=sys.stderr)
    model = OnnxClassifier(MODELS / "lesion3d.onnx")
    e = explain(model, IMAGES / "medical" / "lesion_volume.nii.gz", patch=8, stride=8)
    sample = e.image.model_input
    rows = [throughput(model, sample, p, s, args.batch_size, args.repeats) for p, s in ((8, 4), (4, 2))]
    print(f"lesion3d.onnx, 1x32x32x32, batch {args.batch_size}, {args.repeats} paired repeats (medians)")
    print(f"{'patch/stride':>12} {'windows':>8} {'occlude win/s':>14} {'floor win/s':>12} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['patch']:>5}/{r['stride']:<6} {r['windows']:>8} {r['occlude_windows_per_s']:>14.0f} "
            f"{r['floor_windows_per_s']:>12.0f} {r['ratio']:>6.2f}"
        )
    costs = [
        inpaint_cost(MODELS / "efficientnet_lite0.onnx", IMAGES / "cat.jpg", 60),
        inpaint_cost(MODELS / "ct2d.onnx", IMAGES / "medical" / "ct_lesion.dcm", 200),
    ]
    print("\ninpaint baseline alone (no model)")
    for c in costs:
        print(
            f"  {c['model']}: input {c['input']}, patch {c['patch']}, {c['ms_per_window']:.1f} ms/window; "
            f"default grid {c['default_windows']} windows -> +{c['added_to_default_run_s']:.1f} s per input"
        )
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("volumes-%Y%m%d-%H%M%S.json")
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "load_start": load,
                "load_end": end_load,
                "throughput": rows,
                "inpaint": costs,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
