"""Whole-process costs a CI job pays (issue 15): the fixed cost of one `occlude run` call, the whole-process
efficiency of the default run on the sample cat against the bare onnxruntime floor of the same forward
passes, and small-model folder throughput with every output written.

    python benchmarks/process.py            # about 3 minutes on 2 cores
    python benchmarks/process.py --quick    # fewer repeats and a 200-image folder

Ratios are measured in one run, medians of the repeats; every subprocess starts a fresh interpreter, as a CI
job does. Results: printed, and written to benchmarks/results/process-*.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EFFNET = ROOT / "sample_models" / "efficientnet_lite0.onnx"
DIGITS = ROOT / "sample_models" / "digits_cnn.onnx"
CAT = ROOT / "sample_images" / "cat.jpg"


def wall(command) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def median_wall(command, repeats: int) -> float:
    wall(command)  # warm the file cache
    return statistics.median(wall(command) for _ in range(repeats))


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
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    occlude = [sys.executable, "-m", "occlude_cli"]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="occlude-process-") as tmp:
        tmp = Path(tmp)
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
        count = 200 if args.quick else 1000
        digits_folder(tmp / "digits", count)
        shutil.rmtree(tmp / "dout", ignore_errors=True)
        seconds = wall(occlude + ["run", str(DIGITS), str(tmp / "digits"), "-q", "--out", str(tmp / "dout")])
        results["digits_folder_images"] = count
        results["digits_folder_images_per_s"] = count / seconds
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"process-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:34s} {value:.3f}" if isinstance(value, float) else f"{key:34s} {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
