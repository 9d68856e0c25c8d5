"""Layer occlusion cost: every channel of an inner EfficientNet-Lite0 tensor replaced in turn, with the graph
split (prefix once, suffix per channel) against the same number of whole-model passes.

    python benchmarks/bench_layers.py                 # hardtanh_16 (480 x 14 x 14), medians of 3
    python benchmarks/bench_layers.py --layer getitem_141 --repeats 5

The two paths are timed alternately in one process (paired, so load that comes and goes hits both); the ratio
of the medians is printed and written with every run to benchmarks/results/bench-layers-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from occlude_cli import resolve_preprocessing  # noqa: E402
from occlude_cli.analyses.layers import channel_importance, open_layer  # noqa: E402
from occlude_cli.loaders.images import prepare_image  # noqa: E402
from occlude_cli.loaders.model import OnnxClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "sample_models" / "efficientnet_lite0.onnx"))
    parser.add_argument("--image", default=str(ROOT / "sample_images" / "cat.jpg"))
    parser.add_argument("--layer", default="hardtanh_16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    model = OnnxClassifier(args.model)
    pre = resolve_preprocessing(model)
    prepared = prepare_image(args.image, pre)
    started = time.perf_counter()
    layer = open_layer(model, args.layer)
    open_s = time.perf_counter() - started
    channels = layer.channels
    batch = np.repeat(prepared.model_input[None], args.batch_size, axis=0)

    def split_path() -> float:
        t = time.perf_counter()
        channel_importance(layer, prepared, batch_size=args.batch_size)
        return time.perf_counter() - t

    def whole_path() -> float:
        """The same number of forward passes (channels + 1) through the whole model, at the same batch size:
        what replacing a channel would cost without the split (the input is not even modified here)."""
        t = time.perf_counter()
        done = 0
        while done < channels + 1:
            n = min(args.batch_size, channels + 1 - done)
            model.run(batch[:n])
            done += n
        return time.perf_counter() - t

    split_path(), whole_path()  # warm-up
    split_times, whole_times = [], []
    for _ in range(args.repeats):
        split_times.append(split_path())
        whole_times.append(whole_path())
    split_s, whole_s = statistics.median(split_times), statistics.median(whole_times)
    result = {
        "model": args.model,
        "layer": args.layer,
        "shape": list(layer.feature_shape),
        "channels": channels,
        "batch_size": args.batch_size,
        "open_layer_s": open_s,
        "split_s": split_times,
        "whole_s": whole_times,
        "split_median_s": split_s,
        "whole_median_s": whole_s,
        "speedup": whole_s / split_s,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    print(f"{args.layer} {list(layer.feature_shape)}: {channels} channels + 1 clean pass")
    print(f"  split (prefix once, suffix per channel): median {split_s:.2f} s  {split_times}")
    print(f"  whole model, same number of passes:       median {whole_s:.2f} s  {whole_times}")
    print(f"  speed-up {whole_s / split_s:.2f}x; cutting and verifying the model once: {open_s:.2f} s")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / time.strftime("bench-layers-%Y%m%d-%H%M%S.json")).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
