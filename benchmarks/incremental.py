#!/usr/bin/env python
"""Exact incremental inference against full forward passes, in one run (issue 15).

For each model, the same occlusion windows (patch 16, stride 8 on a 224x224 input: a spread subset of the
729-window grid, first and last windows included) are scored two ways, alternating, several times:

* **full**: the plain engine's work: build batches of occluded copies of the input and run the whole model
  (onnxruntime, full graph optimisation, default session options);
* **incremental**: :class:`occlude_cli.inference.incremental.IncrementalScorer` with the plan that
  ``build_plan`` chose on this machine (cost model + timed candidates; build time reported separately).

It reports medians of the per-window cost, their ratio (the speed-up), and exactness: the largest absolute
and relative (to the largest output magnitude) difference of the raw outputs, and of the top class's
occlusion map over the windows measured. Models: the sample EfficientNet-Lite0 (on the sample cat photo)
and three graphs built here with torch (random weights, seeded; the legacy exporter, opset 17, dynamic
batch): a ResNet-18, a MobileNetV2 and a VGG-11 at half width (VGG-like).

Run from the repository root (needs ``onnx`` and ``torch==2.13.0``)::

    python benchmarks/incremental.py                    # all models, 96 windows, 5 repeats
    python benchmarks/incremental.py --models effnet --windows 192 --repeats 7

Prints a table and writes the numbers to benchmarks/results/incremental-YYYYmmdd-HHMMSS.json (git-ignored).
Other processes on the machine skew the numbers: the load average at start and end is printed and recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from occlude_cli.inference.incremental import build_plan  # noqa: E402

PATCH, STRIDE, SIZE = 16, 8, 224


# ---------------------------------------------------------------------------------------------------
# Models built with torch (random weights)
# ---------------------------------------------------------------------------------------------------


def _torch_models() -> Dict[str, Callable[[], object]]:
    import torch
    from torch import nn

    def bn(c):
        layer = nn.BatchNorm2d(c)
        with torch.no_grad():  # non-trivial running statistics, as after training
            layer.running_mean.uniform_(-0.2, 0.2)
            layer.running_var.uniform_(0.5, 1.5)
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.2, 0.2)
        return layer

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.a = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                bn(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                bn(cout),
            )
            self.short = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            return torch.relu(self.a(x) + self.short(x))

    def resnet18():
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), bn(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
            cin = cout
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), bn(hidden), nn.ReLU6(inplace=True)]
            layers += [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                bn(hidden),
                nn.ReLU6(inplace=True),
                nn.Conv2d(hidden, cout, 1, bias=False),
                bn(cout),
            ]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    def mobilenetv2():
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), bn(32), nn.ReLU6(inplace=True)]
        cin = 32
        for t, c, n, s in (
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ):
            for i in range(n):
                layers.append(Inverted(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [
            nn.Conv2d(cin, 1280, 1, bias=False),
            bn(1280),
            nn.ReLU6(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(1280, 1000),
        ]
        return nn.Sequential(*layers)

    def vgg_like():
        layers: List[nn.Module] = []
        cin = 3
        for v in (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M"):  # VGG-11, half width
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.ReLU(inplace=True)]
                cin = v
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))

    return {"resnet18": resnet18, "mobilenetv2": mobilenetv2, "vgg11_half": vgg_like}


def export(name: str, build, folder: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():  # He initialisation: the signal neither dies nor explodes through the depth, so the
        for module in model.modules():  # outputs react to occlusion and the exactness figures mean something
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = folder / f"{name}.onnx"
    torch.onnx.export(
        model,
        torch.zeros(1, 3, SIZE, SIZE),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}},
    )
    return path


# ---------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------


def cat_input() -> np.ndarray:
    from PIL import Image

    image = Image.open(ROOT / "sample_images" / "cat.jpg").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return ((np.asarray(image, dtype=np.float32) - 127.0) / 128.0).transpose(2, 0, 1).copy()


def window_subset(count: int) -> np.ndarray:
    starts = list(range(0, SIZE - PATCH + 1, STRIDE))
    grid = np.asarray([(y, x, PATCH, PATCH) for y in starts for x in starts], dtype=np.int64)
    if count >= len(grid):
        return grid
    index = np.unique(np.linspace(0, len(grid) - 1, count).round().astype(int))
    return grid[index]


def full_session(path: Path, threads=None, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def full_passes(session, sample, baseline, windows, batch_size) -> np.ndarray:
    """The plain engine: batches of occluded copies through the whole model."""
    name = session.get_inputs()[0].name
    out = []
    buffer = np.empty((batch_size,) + sample.shape, dtype=sample.dtype)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        buffer[: len(chunk)] = sample
        for i, (y, x, h, w) in enumerate(chunk.tolist()):
            buffer[i, :, y : y + h, x : x + w] = baseline[:, y : y + h, x : x + w]
        out.append(session.run(None, {name: buffer[: len(chunk)]})[0])
    return np.concatenate(out)


def drop_map(original: np.ndarray, scores: np.ndarray, windows: np.ndarray, target: int) -> np.ndarray:
    total = np.zeros((SIZE, SIZE))
    count = np.zeros((SIZE, SIZE))
    for (y, x, h, w), s in zip(windows.tolist(), scores[:, target]):
        total[y : y + h, x : x + w] += original[target] - s
        count[y : y + h, x : x + w] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def bench_model(
    name: str,
    path: Path,
    sample: np.ndarray,
    windows: np.ndarray,
    repeats: int,
    batch_size: int,
    threads=None,
    spinning: bool = True,
) -> dict:
    baseline = np.zeros_like(sample)
    session = full_session(path, threads, spinning)
    start = time.perf_counter()
    scorer = build_plan(path, [1, *sample.shape], window=(PATCH, PATCH), full_session=session, threads=threads)
    build_s = time.perf_counter() - start
    full_times, inc_times = [], []
    full_passes(session, sample, baseline, windows[:batch_size], batch_size)  # warm-up at this batch shape
    scorer.score_windows(sample, baseline, windows[:batch_size], batch_size)
    for _ in range(repeats):
        t = time.perf_counter()
        reference = full_passes(session, sample, baseline, windows, batch_size)
        full_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = scorer.score_windows(sample, baseline, windows, batch_size)
        inc_times.append(time.perf_counter() - t)
    original = session.run(None, {session.get_inputs()[0].name: sample[None]})[0][0]
    target = int(np.argmax(original))
    ref_map = drop_map(original, reference, windows, target)
    got_map = drop_map(original, got, windows, target)
    scale = float(np.abs(reference).max()) or 1.0
    full_ms = statistics.median(full_times) / len(windows) * 1e3
    inc_ms = statistics.median(inc_times) / len(windows) * 1e3
    return {
        "model": name,
        "windows": int(len(windows)),
        "cuts": scorer.cuts,
        "segment_strides": [[s.rf[0].stride, s.rf[1].stride] for s in scorer.segments],
        "build_s": round(build_s, 3),
        "build_notes": scorer.notes,
        "full_ms_per_window": round(full_ms, 3),
        "incremental_ms_per_window": round(inc_ms, 3),
        "speedup": round(full_ms / inc_ms, 3),
        "full_runs_s": [round(t, 4) for t in full_times],
        "incremental_runs_s": [round(t, 4) for t in inc_times],
        "max_abs_diff": float(np.abs(got - reference).max()),
        "max_rel_diff": float(np.abs(got - reference).max() / scale),
        "map_max_rel_diff": float(np.abs(got_map - ref_map).max() / (np.abs(ref_map).max() or 1.0)),
        "map_max_abs_diff": float(np.abs(got_map - ref_map).max()),
        "map_max_abs": float(np.abs(ref_map).max()),
        # how much occlusion moves the outputs at all, relative to their magnitude (random-weight models
        # can be nearly insensitive, which makes the map's relative difference a ratio of float noises)
        "occlusion_sensitivity": float(np.abs(reference - original[None]).max() / scale),
        "target": target,
    }


def refine_combined(repeats: int, budget: Optional[float] = None) -> List[dict]:
    """``--refine`` with exact incremental inference against the exact full-pass run, as whole runs of the
    library (``explain``) at patch 48 / stride 8 on the sample photos: full-pass equivalents saved = occlusion
    time of the exact run with ``incremental="off"`` over that of the refined run with ``incremental="on"``
    (medians); the refined map with and without incremental inference compared (they must agree to float
    noise, so the refined map's Pearson against the exact map is the one ``refine_photos.py`` reports)."""
    from occlude_cli import explain
    from occlude_cli.loaders.model import OnnxClassifier

    model = OnnxClassifier(ROOT / "sample_models" / "efficientnet_lite0.onnx")
    rows = []
    for name in ("cat.jpg", "coffee.jpg", "astronaut.jpg", "flower.jpg"):
        photo = ROOT / "sample_images" / name
        runs: Dict[str, list] = {"exact": [], "refine_incremental": []}
        maps = {}
        for _ in range(repeats):
            for key, kwargs in (
                ("exact", dict(incremental="off")),
                ("refine_incremental", dict(incremental="on", refine=True, refine_budget=budget)),
            ):
                result = explain(model, photo, patch=48, stride=8, **kwargs)
                runs[key].append(result.timing["occlusion_s"])
                maps[key] = result
        plain = explain(model, photo, patch=48, stride=8, refine=True, refine_budget=budget, incremental="off")
        exact_map, refined_map = maps["exact"].map, maps["refine_incremental"].map
        row = {
            "photo": name,
            "refine_budget": budget,
            "exact_s": statistics.median(runs["exact"]),
            "refine_incremental_s": statistics.median(runs["refine_incremental"]),
            "exact_passes": maps["exact"].occlusion.forward_passes,
            "refine_passes": maps["refine_incremental"].occlusion.forward_passes,
            "refine_vs_plain_refine_max_rel_diff": float(
                np.max(np.abs(refined_map - plain.map)) / (np.max(np.abs(plain.map)) or 1.0)
            ),
            "pearson_vs_exact": float(np.corrcoef(exact_map.ravel(), refined_map.ravel())[0, 1]),
        }
        row["full_pass_equivalents_saved"] = row["exact_s"] / row["refine_incremental_s"]
        rows.append(row)
        print(
            f"{name:14s} exact {row['exact_s']:.2f} s ({row['exact_passes']} passes)  refine+incremental "
            f"{row['refine_incremental_s']:.2f} s ({row['refine_passes']} passes)  "
            f"{row['full_pass_equivalents_saved']:.2f}x fewer full-pass equivalents  Pearson "
            f"{row['pearson_vs_exact']:.3f}  vs plain refine {row['refine_vs_plain_refine_max_rel_diff']:.1e}",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="effnet,resnet18,mobilenetv2,vgg11_half")
    parser.add_argument(
        "--windows", type=int, default=None, help="windows of the grid (spread; default 96, with --limit 384; 0: all)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default 32; with --limit 16 (occlude's own)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (both ways)")
    parser.add_argument(
        "--full-spinning",
        choices=("on", "off"),
        default="on",
        help="thread spinning of the full-pass session (on: onnxruntime's default, as occlude)",
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help="instead: --refine with incremental inference against the exact full-pass run, on the sample photos",
    )
    parser.add_argument("--refine-budget", type=float, default=None, help="with --refine: the refine budget")
    parser.add_argument(
        "--limit",
        action="store_true",
        help="instead: speed-up against the limit of exact incremental inference (issue 35), per model and geometry",
    )
    parser.add_argument("--geometries", default="32/16,16/8,8/4", help="with --limit: patch/stride pairs")
    parser.add_argument("--breakdown", default="16/8,8/4", help="with --limit: geometries whose work is split per part")
    parser.add_argument("--whole-process", action="store_true", help="with --limit: also time whole occlude runs")
    parser.add_argument("--pairs", type=int, default=5, help="with --whole-process: on/off pairs of runs")
    args = parser.parse_args(argv)
    if args.limit:
        import incremental_limit

        args.windows = 384 if args.windows is None else args.windows
        args.batch_size = args.batch_size or 16
        return incremental_limit.main(args)
    args.windows = 96 if args.windows is None else args.windows
    args.batch_size = args.batch_size or 32
    if args.refine:
        rows = refine_combined(max(1, min(args.repeats, 3)), args.refine_budget)
        out = ROOT / "benchmarks" / "results" / f"refine-incremental-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"load": os.getloadavg()[0], "results": rows}, indent=2))
        print(f"wrote {out}")
        return 0
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    load_start = os.getloadavg()[0]
    print(f"load average at start: {load_start:.2f} (other processes skew the numbers)")
    windows = window_subset(args.windows)
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        builders = _torch_models() if any(n != "effnet" for n in names) else {}
        for name in names:
            if name == "effnet":
                path, sample = ROOT / "sample_models" / "efficientnet_lite0.onnx", cat_input()
            else:
                path = export(name, builders[name], Path(folder))
                sample = rng.standard_normal((3, SIZE, SIZE)).astype(np.float32)
            row = bench_model(
                name, path, sample, windows, args.repeats, args.batch_size, args.threads, args.full_spinning == "on"
            )
            results.append(row)
            print(
                f"{name:12s} full {row['full_ms_per_window']:7.2f} ms/window  incremental "
                f"{row['incremental_ms_per_window']:7.2f}  speed-up {row['speedup']:.2f}x  "
                f"max rel diff {row['max_rel_diff']:.1e} (map {row['map_max_rel_diff']:.1e}, sensitivity "
                f"{row['occlusion_sensitivity']:.1e})  "
                f"cuts {row['cuts']} segment strides {row['segment_strides']}  build {row['build_s']:.1f} s",
                flush=True,
            )
    load_end = os.getloadavg()[0]
    print(f"load average at end: {load_end:.2f}")
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"incremental-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "patch": PATCH,
        "stride": STRIDE,
        "size": SIZE,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "full_spinning": args.full_spinning,
        "load_start": load_start,
        "load_end": load_end,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "results": results,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
