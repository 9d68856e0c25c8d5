"""Graph work on the sample EfficientNet-Lite0: cost of splitting and verifying a cut, and what the batch
rewrite of a fixed-batch-1 export buys over running it one image at a time.

    python benchmarks/bench_graph.py [--repeats 5] [--images 32] [--batch 16] [--threads 2]

Prints medians over the repeats, measured in one run on this machine; the throughput figure is a ratio of
images per second (batched rewritten session / original session fed one image at a time).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from occlude_cli.inference import batching, cuts as splits

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    options = _options(args.threads)
    whole = ort.InferenceSession(str(MODEL), sess_options=options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 224, 224)).astype(np.float32)

    t_cuts, cuts = _median_time(lambda: splits.valid_cut_points(MODEL), args.repeats)
    tensor = cuts[len(cuts) // 2]
    t_split, split = _median_time(lambda: splits.split_model(MODEL, tensor), args.repeats)
    t_verify, diff = _median_time(lambda: splits.verify_split(split, whole, x, session_options=options), args.repeats)
    start = time.perf_counter()
    whole.run(None, {"input": x})
    t_pass = time.perf_counter() - start
    print(f"EfficientNet-Lite0: {len(cuts)} valid cut points found in {t_cuts * 1e3:.0f} ms")
    print(
        f"split at {tensor!r} ({len(split.prefix.graph.node)} + {len(split.suffix.graph.node)} nodes): "
        f"{t_split * 1e3:.0f} ms; verify (2 session loads + 3 passes): {t_verify * 1e3:.0f} ms, "
        f"max |diff| {diff:.2g}; one forward pass of the whole model: {t_pass * 1e3:.0f} ms"
    )

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(MODEL))
        for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and dims[0].dim_param:
                dims[0].dim_value = 1
        fixed_path = Path(tmp) / "fixed.onnx"
        onnx.save(model, str(fixed_path))
        fixed = ort.InferenceSession(str(fixed_path), sess_options=options, providers=["CPUExecutionProvider"])
        t_rewrite, result = _median_time(
            lambda: batching.batched_model(fixed_path, session_options=options, reference=fixed), args.repeats
        )
        assert result.ok, result.reason
        images = np.random.default_rng(1).random((args.images, 3, 224, 224)).astype(np.float32)

        def one_at_a_time():
            return [fixed.run(None, {"input": images[i : i + 1]})[0] for i in range(len(images))]

        def batched():
            return [
                result.session.run(None, {"input": images[i : i + args.batch]})[0]
                for i in range(0, len(images), args.batch)
            ]

        one_at_a_time(), batched()  # warm up
        t_single, single = _median_time(one_at_a_time, args.repeats)
        t_batched, multi = _median_time(batched, args.repeats)
        worst = float(np.max(np.abs(np.concatenate(single) - np.concatenate(multi))))
        print(
            f"fixed-batch-1 EfficientNet: rewrite + validation {t_rewrite * 1e3:.0f} ms; "
            f"{args.images} images one at a time {args.images / t_single:.1f} img/s, batched by {args.batch} "
            f"{args.images / t_batched:.1f} img/s: ratio {t_single / t_batched:.2f}x (max |diff| {worst:.2g}, "
            f"{args.threads} threads)"
        )


if __name__ == "__main__":
    main()
