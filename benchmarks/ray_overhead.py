#!/usr/bin/env python
"""What running on Ray costs on one machine: a folder of EfficientNet images explained and written by the
local loop (1 process, onnxruntime with 2 threads) against the Ray backend (N actors x 1 thread, results
returned to the driver, which writes), and images/s against the number of actors.

Run from the repository root with the ray extra installed::

    python benchmarks/ray_overhead.py                        # 20 images, patch 56 (49 windows each), 3 rounds
    python benchmarks/ray_overhead.py --patch 16 --repeats 1 # the default grid (729 windows): ~15x longer
    python benchmarks/ray_overhead.py --actors 1,2 --images 40

Rounds are interleaved (local, Ray 1 actor, Ray 2 actors, local, ...) so that load from other processes
hits every configuration alike; medians are reported. Ray's start-up (``ray.init``) and the actors' model
loading are timed separately: they are paid once per run, not per image. Writes the numbers as JSON to
benchmarks/results/ray-overhead-YYYYmmdd-HHMMSS.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from occlude_cli import ExplainOptions, explain, resolve_preprocessing, write_explanation  # noqa: E402
from occlude_cli.executors.ray_backend import RayExecutor, require_ray  # noqa: E402
from occlude_cli.loaders.model import OnnxClassifier  # noqa: E402

MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"


def tree_cpu_seconds(root: int = 0) -> float:
    """CPU seconds (user + system) used so far by this process and every live descendant (Ray's GCS,
    raylet, workers and actors when Ray was started from here), read from /proc. CPU time is less
    sensitive than wall time to other processes competing for the cores, so it shows Ray's own cost."""
    root = root or os.getpid()
    children: Dict[int, List[int]] = {}
    ticks: Dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        ticks[pid] = float(fields[11]) + float(fields[12])  # utime, stime
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def make_folder(folder: Path, count: int) -> List[Path]:
    """``count`` images: the sample JPEGs repeated under distinct names (as a real folder would be)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((ROOT / "sample_images").glob("*.jpg"))
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}{sources[i % len(sources)].suffix}"
        shutil.copy(sources[i % len(sources)], path)
        paths.append(path)
    return paths


def run_local(paths, options, preprocessing, labels, out: Path, threads: int = 2) -> Tuple[float, float]:
    """The local loop: one model session with ``threads`` threads, compute then write, image after image.
    Returns (wall seconds, CPU seconds)."""
    model = OnnxClassifier(MODEL, device="cpu", threads=threads)
    cpu, started = tree_cpu_seconds(), time.perf_counter()
    for path in paths:
        explanation = explain(model, path, options, preprocessing=preprocessing, labels=labels)
        write_explanation(explanation, out, path.stem, timing=False)
    return time.perf_counter() - started, tree_cpu_seconds() - cpu


def run_ray(executor: RayExecutor, paths, options, preprocessing, labels, out: Path) -> Tuple[float, float]:
    """Ray: actors compute, results come back to the driver in input order, the driver writes.
    Returns (wall seconds, CPU seconds of the driver and all of Ray's processes)."""
    kwargs = {"options": options, "preprocessing": preprocessing, "labels": labels}
    cpu, started = tree_cpu_seconds(), time.perf_counter()
    for path, explanation in executor.map_images(paths, kwargs):
        if isinstance(explanation, BaseException):
            raise explanation
        write_explanation(explanation, out, path.stem, timing=False)
    return time.perf_counter() - started, tree_cpu_seconds() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--patch", type=int, default=56, help="patch side in pixels (stride: half)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", default="1,2", help="comma-separated actor counts (1 thread each)")
    args = parser.parse_args(argv)
    ray = require_ray()
    actor_counts = [int(v) for v in args.actors.split(",")]

    probe = OnnxClassifier(MODEL, device="cpu")
    preprocessing = resolve_preprocessing(probe)
    labels = probe.labels
    options = ExplainOptions(patch=args.patch)
    load_start = os.getloadavg()[0]

    started = time.perf_counter()
    ray.init(num_cpus=max(2, max(actor_counts)), include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - started

    times: Dict[str, List[float]] = {"local 1x2": [], "local 1x1": []}
    cpus: Dict[str, List[float]] = {"local 1x2": [], "local 1x1": []}
    actor_start_s: Dict[str, List[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_folder(Path(tmp) / "in", args.images)
        explain(probe, paths[0], options, preprocessing=preprocessing)  # warm the page cache and Pillow
        for round_ in range(args.repeats):
            for threads in (2, 1):  # 1x1 against Ray 1x1 isolates Ray's own cost from threading effects
                name = f"local 1x{threads}"
                wall, cpu = run_local(paths, options, preprocessing, labels, Path(tmp) / f"{name}{round_}", threads)
                times[name].append(wall)
                cpus[name].append(cpu)
            for n in actor_counts:
                name = f"ray {n}x1"
                began = time.perf_counter()
                executor = RayExecutor({"path": str(MODEL), "device": "cpu"}, workers=n, threads_per_worker=1)
                actor_start_s.setdefault(name, []).append(time.perf_counter() - began)
                try:
                    wall, cpu = run_ray(executor, paths, options, preprocessing, labels, Path(tmp) / f"{name}{round_}")
                    times.setdefault(name, []).append(wall)
                    cpus.setdefault(name, []).append(cpu)
                finally:
                    executor.shutdown()
                time.sleep(0.5)  # let the killed actors' processes go before the next configuration
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        same = all(
            (Path(tmp) / f"ray {actor_counts[-1]}x1{r}" / f"{p.stem}.json").read_bytes()
            == (Path(tmp) / "local 1x20" / f"{p.stem}.json").read_bytes()
            for p in paths
            for r in range(args.repeats)
        )
    ray.shutdown()

    local = statistics.median(times["local 1x2"])
    local_cpu = statistics.median(cpus["local 1x2"])
    print(
        f"\n{args.images} EfficientNet-Lite0 images, patch {args.patch} (stride {args.patch // 2}), "
        f"{args.repeats} rounds, load average at start {load_start:.2f}"
    )
    print(f"ray.init: {ray_init_s:.2f} s (once per run)")
    print(
        f"{'configuration':<14} {'median s':>9} {'images/s':>9} {'vs loc1x2':>9} {'CPU s':>7} {'CPU vs 1x2':>12} "
        f"{'actor start s':>14}"
    )
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        start = statistics.median(actor_start_s[name]) if name in actor_start_s else None
        cpu = statistics.median(cpus[name])
        rows.append(
            {
                "configuration": name,
                "median_s": median,
                "runs_s": values,
                "images_per_s": args.images / median,
                "vs_local": median / local - 1,
                "cpu_s": cpu,
                "cpu_runs_s": cpus[name],
                "cpu_vs_local": cpu / local_cpu - 1,
                "actor_start_s": start,
            }
        )
        start_text = f"{start:14.2f}" if start is not None else f"{'-':>14}"
        print(
            f"{name:<14} {median:9.2f} {args.images / median:9.2f} {median / local - 1:+9.1%} {cpu:7.1f} "
            f"{cpu / local_cpu - 1:+12.1%} {start_text}"
        )
    if "ray 1x1" in times:
        print(
            f"Ray 1x1 against local 1x1 (same threads, Ray's own cost): wall "
            f"{statistics.median(times['ray 1x1']) / statistics.median(times['local 1x1']) - 1:+.1%}, CPU "
            f"{statistics.median(cpus['ray 1x1']) / statistics.median(cpus['local 1x1']) - 1:+.1%}"
        )
    print(f"JSON records of the Ray run byte-identical to the local run (--no-timing): {same}")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / time.strftime("ray-overhead-%Y%m%d-%H%M%S.json")
    out.write_text(
        json.dumps(
            {
                "images": args.images,
                "patch": args.patch,
                "repeats": args.repeats,
                "ray_init_s": ray_init_s,
                "load_average_start": load_start,
                "load_average_end": os.getloadavg()[0],
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "ray": ray.__version__,
                "rows": rows,
                "identical_json": same,
            },
            indent=2,
        )
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
