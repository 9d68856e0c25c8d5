#!/usr/bin/env python
"""The CUDA path measured against the GPU's own floor (issue 32): one command, one JSON of ratios measured in
one run.

On a machine with an NVIDIA GPU, onnxruntime-gpu and torch (for the Captum peer), from the repository root::

    python benchmarks/gpu.py                         # everything, a few minutes on an H100
    python benchmarks/gpu.py --device cpu --smoke    # the same code paths on the CPU, small (CI-sized)

It prints the JSON and writes it to benchmarks/results/gpu-YYYYmmdd-HHMMSS.json. What it measures:

1. **floor**: a bare onnxruntime session of the model on the device, its input already there (I/O binding,
   output kept there), at batch sizes 1..256: forward passes per second; the best batch size is the floor's.
   Also with cuDNN's exhaustive algorithm search and with CUDA graphs (static shapes), where they load.
2. **one image** (224x224, patch 16 / stride 8: 729 windows, 730 forward passes): occlude's whole map with the
   model loaded once (decode, resize, baseline, every pass, softmax, aggregation), median of repeats, with
   batches built on the device and on the host, at several batch sizes (the rule occlude should use), and with
   incremental inference on; ``floor_ratio`` = occlude's time / the floor's time for 730 passes (goal <= 1.25).
3. **folder**: ``run_folder`` over N photos (default 200, made from the sample images by seeded crops and flips),
   images/s x 730 passes against the floor's throughput (goal >= 0.85), decoding ahead on and off.
4. **Captum** on the same device with the same weights: a torchvision ResNet-18 (random weights, seed 0)
   exported to ONNX here; Captum's Occlusion against occlude on that ONNX (goal: occlude >= 3x faster), and
   the two maps compared.
5. **agreement**: the device maps against the CPU provider's maps (goal: within 1e-4 of the peak) and two
   device runs' JSON byte for byte.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:  # torch first: its CUDA 13 and cuDNN libraries then serve onnxruntime too (as preload_dlls would)
    import torch
except ImportError:  # pragma: no cover -- the Captum part is skipped
    torch = None

import onnxruntime as ort  # noqa: E402

from occlude_cli import ExplainOptions, __version__, explain  # noqa: E402
from occlude_cli.core.engine import window_grid  # noqa: E402
from occlude_cli.loaders.cuda import cuda_facts  # noqa: E402
from occlude_cli.loaders.model import OnnxClassifier  # noqa: E402
from occlude_cli.runs.run import run_folder  # noqa: E402

SAMPLE = ROOT / "sample_models" / "efficientnet_lite0.onnx"
CAT = ROOT / "sample_images" / "cat.jpg"
PROVIDER = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (cuDNN algorithm choice, arena growth)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def session(model: Path, device: str, **cuda_options):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers: list = [PROVIDER[device]]
    if device == "cuda":
        providers = [(PROVIDER["cuda"], {k: str(v) for k, v in cuda_options.items()}), PROVIDER["cpu"]]
    return ort.InferenceSession(str(model), sess_options=options, providers=providers)


def floor(model: Path, device: str, batch_sizes: List[int], min_passes: int, **cuda_options) -> Dict:
    """Forward passes per second of the bare session, inputs and outputs on the device."""
    sess = session(model, device, **cuda_options)
    node = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in node.shape][1:]
    rates = {}
    for batch in batch_sizes:
        x = np.random.default_rng(0).normal(size=[batch, *shape]).astype(np.float32)
        value = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
        binding = sess.io_binding()
        binding.bind_ortvalue_input(node.name, value)
        binding.bind_output(sess.get_outputs()[0].name, device)
        calls = max(3, -(-min_passes // batch))

        def run(binding=binding, calls=calls):
            for _ in range(calls):
                sess.run_with_iobinding(binding)
            binding.synchronize_outputs()

        rates[batch] = calls * batch / median_time(run, 3)
    best = max(rates, key=lambda b: rates[b])
    return {
        "passes_per_s": rates[best],
        "best_batch": best,
        "by_batch": {str(k): round(v, 1) for k, v in rates.items()},
    }


def one_image(model_path: Path, image: Path, device: str, repeats: int, patch: int, stride: int, floor_rate: float):
    model = OnnxClassifier(model_path, device=device)
    rows = {}
    runs = [("device", None, "off"), ("host", None, "off"), ("device", None, "on")]
    runs += [("device", b, "off") for b in (16, 32, 64, 128, 256)]
    for batches, batch_size, incremental in runs:
        options = ExplainOptions(
            patch=patch, stride=stride, batches=batches, batch_size=batch_size, incremental=incremental
        )
        label = "incremental on" if incremental == "on" else f"{batches} batches, batch {batch_size or 'auto'}"
        try:
            result = explain(model, image, options)
            seconds = median_time(lambda o=options: explain(model, image, o), repeats)
        except Exception as exc:  # noqa: BLE001 -- e.g. incremental inference unavailable: reported, not fatal
            rows[label] = {"error": str(exc)[:200]}
            continue
        passes = result.occlusion.forward_passes
        rows[label] = {
            "seconds": round(seconds, 4),
            "batch_size": result.params["batch_size"],
            "forward_passes": passes,
            "floor_ratio": round(seconds / (passes / floor_rate), 3),
        }
    return rows


def make_photos(folder: Path, count: int, size: int) -> Path:
    """``count`` JPEG photos from the sample images: seeded crops, flips and scales (nothing downloaded)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in sorted((ROOT / "sample_images").glob("*.jpg"))]
    rng = np.random.default_rng(32)
    for i in range(count):
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch)).resize((size, size * ch // cw))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"photo_{i:04d}.jpg", quality=90)
    return folder


def folder_run(model_path, photos: Path, device: str, patch: int, stride: int, floor_rate: float, work: Path):
    model = OnnxClassifier(model_path, device=device)
    rows = {}
    count = len(list(photos.glob("*.jpg")))
    windows = len(window_grid((224, 224), (patch, patch), (stride, stride)))
    for name, prefetch in (("decode ahead", True), ("decode in turn", False)):
        out = work / f"folder-{name.replace(' ', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = run_folder(model, photos, out, patch=patch, stride=stride, timing=False, prefetch=prefetch)
        seconds = time.perf_counter() - started
        passes = sum(1 for r in result.rows if r.status == "ok") * (windows + 1)
        rows[name] = {
            "images": count,
            "seconds": round(seconds, 3),
            "images_per_s": round(count / seconds, 2),
            "throughput_vs_floor": round(passes / seconds / floor_rate, 3),
        }
    return rows


def captum_peer(device: str, work: Path, patch: int, stride: int, repeats: int):
    """Captum's Occlusion and occlude on the same weights (torchvision ResNet-18, seed 0) on the same device."""
    if torch is None:
        return {"skipped": "torch is not installed"}
    try:
        import torchvision
        from captum.attr import Occlusion
    except ImportError as exc:
        return {"skipped": f"{exc}"}
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    onnx_path = work / "resnet18.onnx"
    example = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        net,
        example,
        str(onnx_path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    model = OnnxClassifier(onnx_path, device=device)
    from occlude_cli.loaders.images import Preprocessing

    pre = Preprocessing(size=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    options = ExplainOptions(patch=patch, stride=stride, score="softmax", incremental="off")
    ours = explain(model, CAT, options, preprocessing=pre)
    target = int(ours.targets[0])
    x = torch.from_numpy(ours.image.model_input[None].copy())
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    net, x = net.to(dev), x.to(dev)

    def forward(batch):
        return torch.softmax(net(batch), dim=1)

    occlusion = Occlusion(forward)
    batch = int(ours.params["batch_size"])

    def captum_run():
        with torch.no_grad():
            out = occlusion.attribute(
                x,
                sliding_window_shapes=(3, patch, patch),
                strides=(3, stride, stride),
                baselines=0.0,
                target=target,
                perturbations_per_eval=batch,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    theirs = captum_run()[0].mean(0).detach().cpu().numpy()
    t_captum = median_time(captum_run, repeats)
    t_ours = median_time(lambda: explain(model, CAT, options, preprocessing=pre), repeats)
    peak = float(np.abs(ours.map).max())
    return {
        "model": "torchvision resnet18, random weights (seed 0), exported to ONNX opset 17",
        "captum_s": round(t_captum, 4),
        "occlude_s": round(t_ours, 4),
        "speedup": round(t_captum / t_ours, 2),
        "max_map_difference_of_peak": float(np.abs(theirs - ours.map).max() / max(peak, 1e-12)),
    }


def agreement(model_path: Path, device: str, patch: int, stride: int, work: Path):
    """The device's map against the CPU provider's, and two device runs' JSON byte for byte."""
    from occlude_cli.runs.run import run_folder as rf

    outs = []
    for i in range(2):
        out = work / f"agree-{i}"
        shutil.rmtree(out, ignore_errors=True)
        rf(OnnxClassifier(model_path, device=device), CAT, out, patch=patch, stride=stride, timing=False)
        outs.append(out)
    cpu = explain(OnnxClassifier(model_path, device="cpu"), CAT, ExplainOptions(patch=patch, stride=stride))
    mapped = np.load(outs[0] / "cat.npy")
    peak = float(np.abs(cpu.map).max())
    return {
        "max_difference_of_peak_vs_cpu": float(np.abs(mapped - cpu.map).max() / max(peak, 1e-12)),
        "json_identical_across_runs": (outs[0] / "cat.json").read_bytes() == (outs[1] / "cat.json").read_bytes(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="small sizes: check the script runs (CPU, CI)")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print("error: this onnxruntime has no CUDAExecutionProvider (install occlude[cuda])", file=sys.stderr)
        return 1
    patch, stride = (56, 28) if args.smoke else (16, 8)
    photos_n, repeats = (4, 1) if args.smoke else (args.photos, args.repeats)
    batch_sizes = [8, 32] if args.smoke else [1, 8, 16, 32, 64, 128, 256]
    report: Dict = {
        "occlude": __version__,
        "onnxruntime": ort.__version__,
        "device": args.device,
        "card": cuda_facts() if args.device == "cuda" else platform.processor() or platform.machine(),
        "torch": getattr(torch, "__version__", None),
        "geometry": {"patch": patch, "stride": stride},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = floor(SAMPLE, args.device, batch_sizes, 730)
        report["floor"] = base
        if args.device == "cuda" and not args.smoke:
            for name, extra in (
                ("cudnn exhaustive", {"cudnn_conv_algo_search": "EXHAUSTIVE"}),
                ("cuda graph", {"enable_cuda_graph": "1"}),
            ):
                try:
                    report[f"floor {name}"] = floor(SAMPLE, args.device, [base["best_batch"]], 730, **extra)
                except Exception as exc:  # noqa: BLE001 -- reported: not every option loads everywhere
                    report[f"floor {name}"] = {"error": str(exc)[:200]}
        report["one_image"] = one_image(SAMPLE, CAT, args.device, repeats, patch, stride, base["passes_per_s"])
        photos = make_photos(work / "photos", photos_n, 320)
        report["folder"] = folder_run(SAMPLE, photos, args.device, patch, stride, base["passes_per_s"], work)
        report["captum"] = captum_peer(args.device, work, patch, stride, repeats)
        report["agreement"] = agreement(SAMPLE, args.device, patch, stride, work)
    text = json.dumps(report, indent=2)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / time.strftime("gpu-%Y%m%d-%H%M%S.json")).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
