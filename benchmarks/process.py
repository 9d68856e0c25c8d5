"""Whole-process costs a CI job pays (issue 15): the fixed cost of one `occlude run` call, the whole-process
efficiency of the default run on the sample cat against the bare onnxruntime floor of the same forward
passes, the same default run against the code before the second wave ("today" of issue 15: commit 6a6c0ba,
checked out with `git archive` into a temporary folder) with the maps compared, and small-model folder
throughput with every output written.

    python benchmarks/process.py            # about 4 minutes on 2 cores
    python benchmarks/process.py --quick    # fewer repeats and a 200-image folder
    python benchmarks/process.py --baseline none   # without the comparison against the old code

Ratios are measured in one run, medians of the repeats, old and new calls alternating; every subprocess
starts a fresh interpreter, as a CI job does, with Python's bytecode cache on (as installed packages have it).
`warm` is occlude's on-disk cache (OCCLUDE_CACHE_DIR) after a first call, the state of every later call of a
CI job; `cold` runs with the cache off. Results: printed, and written to benchmarks/results/process-*.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EFFNET = ROOT / "sample_models" / "efficientnet_lite0.onnx"
DIGITS = ROOT / "sample_models" / "digits_cnn.onnx"
CAT = ROOT / "sample_images" / "cat.jpg"


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(command, env=None, cwd=None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env or ENV, cwd=cwd)
    return time.perf_counter() - started


def median_wall(command, repeats: int, env=None) -> float:
    wall(command, env)  # warm the file cache (and the bytecode and occlude caches)
    return statistics.median(wall(command, env) for _ in range(repeats))


_TIMED_RUN = """
import atexit, sys, time
import onnxruntime as ort
import occlude_cli.inference.incremental as incremental
spent = [0.0]  # inside onnxruntime's run
batches = [0.0, 0.0]  # inside the incremental engine's batches: all, and onnxruntime's part of it
plain = ort.InferenceSession.run
def timed(self, *args, **kwargs):
    started = time.perf_counter()
    try:
        return plain(self, *args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - started
ort.InferenceSession.run = timed
plain_batch = incremental.IncrementalScorer._score_batch
def timed_batch(self, *args, **kwargs):
    started, before = time.perf_counter(), spent[0]
    try:
        return plain_batch(self, *args, **kwargs)
    finally:
        batches[0] += time.perf_counter() - started
        batches[1] += spent[0] - before
incremental.IncrementalScorer._score_batch = timed_batch
atexit.register(lambda: sys.stderr.write("INFERENCE %.6f %.6f\\n" % (spent[0], batches[0] - batches[1])))
sys.argv = ["occlude"] + sys.argv[1:]
from occlude_cli.cli.app import main
main()
"""


def folder_outside_inference(tmp: Path, copies: int = 2, incremental: str = "auto") -> dict:
    """An EfficientNet folder run (the sample photos, ``copies`` times each, default grid, every output):
    process wall time against the time spent inside onnxruntime's ``run`` (the occlusion's forward passes,
    the plan's self-check and the original passes), in one process started fresh; and against that plus the
    incremental engine's numpy crops and pastes between its onnxruntime calls."""
    folder = tmp / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    names = ("cat.jpg", "coffee.jpg", "astronaut.jpg", "flower.jpg")
    for i in range(copies):
        for name in names:
            shutil.copy(ROOT / "sample_images" / name, folder / f"{i}_{name}")
    command = [sys.executable, "-c", _TIMED_RUN, "run", str(EFFNET), str(folder), "-q", "--out", str(tmp / "pout")]
    command += ["--incremental", incremental]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=ENV)
    seconds = time.perf_counter() - started
    line = [line for line in done.stderr.splitlines() if line.startswith("INFERENCE")][-1].split()
    inference, bookkeeping = float(line[1]), float(line[2])
    shutil.rmtree(tmp / "pout", ignore_errors=True)
    return {
        f"effnet_folder_{incremental}_images": copies * len(names),
        f"effnet_folder_{incremental}_s": seconds,
        f"effnet_folder_{incremental}_inference_s": inference,
        f"effnet_folder_{incremental}_outside_inference_share": (seconds - inference) / seconds,
        # the incremental engine's own crops and pastes (numpy, between its onnxruntime calls) counted as part
        # of inference: what is left is loading, preprocessing, drawing, writing and start-up
        f"effnet_folder_{incremental}_engine_bookkeeping_s": bookkeeping,
        f"effnet_folder_{incremental}_outside_scoring_share": (seconds - inference - bookkeeping) / seconds,
    }


def checkout(revision: str, folder: Path) -> Path:
    """The tree of ``revision`` (a commit of this repository) extracted into ``folder``."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def against_baseline(revision: str, tmp: Path, repeats: int, results: dict) -> None:
    """The default run on the sample cat, the code at ``revision`` against this tree, alternating."""
    old_root = checkout(revision, tmp / "baseline")
    old_env = {**ENV, "PYTHONPATH": str(old_root)}
    module = "occlude_cli.cli" if (old_root / "occlude_cli" / "cli.py").exists() else "occlude_cli"
    old = [sys.executable, "-m", module, "run", str(EFFNET), str(CAT), "-q", "--out", str(tmp / "old")]
    new = [sys.executable, "-m", "occlude_cli", "run", str(EFFNET), str(CAT), "-q", "--out", str(tmp / "new")]
    cold_env = {**ENV, "OCCLUDE_CACHE_DIR": "off"}
    warm_env = {**ENV, "OCCLUDE_CACHE_DIR": str(tmp / "occlude-cache")}
    for command, env, cwd in ((old, old_env, old_root), (new, warm_env, None), (new, cold_env, None)):
        wall(command, env, cwd)  # warm-up: bytecode, file cache, occlude's cache
    times: dict = {"old": [], "new_warm": [], "new_cold": []}
    for _ in range(repeats):
        times["old"].append(wall(old, old_env, old_root))
        times["new_warm"].append(wall(new, warm_env))
        times["new_cold"].append(wall(new, cold_env))
    for key, values in times.items():
        results[f"default_cat_{key}_s"] = statistics.median(values)
        results[f"default_cat_{key}_runs_s"] = [round(v, 3) for v in values]
    pairs = [o / n for o, n in zip(times["old"], times["new_warm"])]
    results["speedup_vs_baseline_warm_per_pair"] = [round(r, 3) for r in pairs]
    results["baseline_revision"] = revision
    results["speedup_vs_baseline_warm"] = results["default_cat_old_s"] / results["default_cat_new_warm_s"]
    results["speedup_vs_baseline_cold"] = results["default_cat_old_s"] / results["default_cat_new_cold_s"]
    a, b = np.load(tmp / "old" / "cat.npy"), np.load(tmp / "new" / "cat.npy")
    results["map_max_abs_diff_vs_baseline"] = float(np.max(np.abs(a.astype(np.float64) - b)))
    results["map_max_abs_vs_baseline_relative"] = results["map_max_abs_diff_vs_baseline"] / float(np.max(np.abs(a)))


def floor_seconds(passes: int, repeats: int, batch: int = 16) -> float:
    """Bare onnxruntime: `passes` forward passes of the sample EfficientNet in batches, in one process, after
    one warm-up batch (what the map cannot do without)."""
    code = f"""
import time, numpy as np, onnxruntime as ort
s = ort.InferenceSession({str(EFFNET)!r}, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal(({batch}, 3, 224, 224)).astype(np.float32)
s.run(None, {{"input": x}})
t = time.perf_counter()
done = 0
while done < {passes}:
    n = min({batch}, {passes} - done)
    s.run(None, {{"input": x[:n]}})
    done += n
print(time.perf_counter() - t)
"""
    runs = [
        float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def digits_folder(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    sources = [np.asarray(Image.open(ROOT / "sample_images" / f"digit_{d}.png")) for d in (0, 3, 7)]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noisy = sources[i % 3].astype(int) + rng.integers(-8, 9, sources[0].shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"d{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", default="6a6c0ba", help="commit to compare the default run with, or 'none'")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each measurement [5; --quick: 2]")
    parser.add_argument("--baseline-only", action="store_true", help="only the comparison with --baseline")
    parser.add_argument("--folder-copies", type=int, default=None, help="copies of the 4 photos [2; --quick: 1]")
    parser.add_argument("--folder-only", action="store_true", help="only the EfficientNet folder's shares")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    occlude = [sys.executable, "-m", "occlude_cli"]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="occlude-process-") as tmp:
        tmp = Path(tmp)
        if args.baseline != "none" and not args.folder_only:
            against_baseline(args.baseline, tmp, repeats + 2, results)
        if args.baseline_only:
            return finish(results, "process-baseline")
        copies = args.folder_copies or (1 if args.quick else 2)
        os.environ["OCCLUDE_CACHE_DIR"] = str(tmp / "occlude-cache")  # warm after the first call of each kind
        ENV["OCCLUDE_CACHE_DIR"] = os.environ["OCCLUDE_CACHE_DIR"]
        if args.folder_only:
            wall(occlude + ["run", str(EFFNET), str(CAT), "-q", "--out", str(tmp / "warm")])  # the plan cache
            for mode in ("auto", "off"):
                results.update(folder_outside_inference(tmp, copies, mode))
            return finish(results, "process-folder")
        results["python_start_s"] = median_wall([sys.executable, "-c", "pass"], repeats)
        results["occlude_version_s"] = median_wall(occlude + ["--version"], repeats)
        results["one_call_16_windows_s"] = median_wall(
            occlude
            + ["run", str(EFFNET), str(CAT), "--patch", "56", "--stride", "56", "-q", "--out", str(tmp / "one")],
            repeats,
        )
        for mode in ("auto", "off"):
            results[f"default_cat_{mode}_s"] = median_wall(
                occlude + ["run", str(EFFNET), str(CAT), "-q", "--incremental", mode, "--out", str(tmp / mode)], repeats
            )
        results["floor_730_passes_s"] = floor_seconds(730, repeats)
        for mode in ("auto", "off"):
            results[f"whole_process_efficiency_{mode}"] = (
                results["floor_730_passes_s"] / results[f"default_cat_{mode}_s"]
            )
        for mode in ("auto", "off"):
            results.update(folder_outside_inference(tmp, copies, mode))
        count = 200 if args.quick else 1000
        digits_folder(tmp / "digits", count)
        shutil.rmtree(tmp / "dout", ignore_errors=True)
        seconds = wall(occlude + ["run", str(DIGITS), str(tmp / "digits"), "-q", "--out", str(tmp / "dout")])
        results["digits_folder_images"] = count
        results["digits_folder_images_per_s"] = count / seconds
    finish(results, "process")


def finish(results: dict, name: str) -> None:
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:34s} {value:.3f}" if isinstance(value, float) else f"{key:34s} {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
