#!/usr/bin/env python
"""Batches built inside onnxruntime (``batches="device"``, the pre-graph) against batches built by numpy on the
host (``"host"``), on whatever provider this onnxruntime has: paired runs, one image, the model loaded once,
the ratio host / device per pair and its median. On the CPU this decides ``batches="auto"`` there (issue 32:
"use it on the CPU too only where it measures faster"); on a GPU, benchmarks/gpu.py measures it with the rest.

    python benchmarks/device_batches.py [--pairs 7] [--patch 16 --stride 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from occlude_cli import ExplainOptions, explain  # noqa: E402
from occlude_cli.loaders.model import OnnxClassifier  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", type=Path, default=ROOT / "sample_models" / "efficientnet_lite0.onnx")
    parser.add_argument("--image", type=Path, default=ROOT / "sample_images" / "cat.jpg")
    args = parser.parse_args(argv)
    model = OnnxClassifier(args.model, device=args.device)
    options = {
        b: ExplainOptions(patch=args.patch, stride=args.stride, incremental="off", batches=b)
        for b in ("host", "device")
    }
    maps = {b: explain(model, args.image, o).map for b, o in options.items()}  # warm-up, and the maps
    times: dict = {"host": [], "device": []}
    for i in range(args.pairs):
        order = ("host", "device") if i % 2 == 0 else ("device", "host")  # alternate: drift hits both
        for b in order:
            started = time.perf_counter()
            explain(model, args.image, options[b])
            times[b].append(time.perf_counter() - started)
    ratios = [h / d for h, d in zip(times["host"], times["device"])]
    print(
        json.dumps(
            {
                "provider": model.provider,
                "model": args.model.name,
                "windows": f"patch {args.patch} stride {args.stride}",
                "host_median_s": round(statistics.median(times["host"]), 4),
                "device_median_s": round(statistics.median(times["device"]), 4),
                "host_over_device_median": round(statistics.median(ratios), 3),
                "maps_bit_identical": bool(np.array_equal(maps["host"], maps["device"])),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
