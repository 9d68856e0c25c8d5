#!/usr/bin/env python
"""How close occlude runs to the hardware's limit: occlude's time per image against the time the bare
onnxruntime session needs for the same number of forward passes at its best batch size.

Run from the repository root::

    python benchmarks/bench.py                 # full run (a few minutes on 2 cores)
    python benchmarks/bench.py --quick         # smoke run (about a minute)
    python benchmarks/bench.py --repeats 7 --cases effnet

Prints a table and writes the numbers as JSON to benchmarks/results/ (git-ignored). See
benchmarks/README.md for what each column means and how to add rows (e.g. for an adaptive refine mode).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

from occlude_cli import __version__  # noqa: E402
from occlude_cli import Explanation, explain  # noqa: E402
from occlude_cli.loaders.model import OnnxClassifier  # noqa: E402
from occlude_cli.outputs.write import write_explanation  # noqa: E402

MODELS = ROOT / "sample_models"
IMAGES = ROOT / "sample_images"
RESULTS = ROOT / "benchmarks" / "results"
BATCH_SIZES = (1, 8, 16, 32, 64)


@dataclass(frozen=True)
class Case:
    """One benchmark row: a model, an image and an occlusion grid."""

    key: str  # short model key: effnet, digits
    model: str  # path relative to the repo root
    image: str
    patch: int
    stride: int

    @property
    def name(self) -> str:
        return f"{self.key} p{self.patch}/s{self.stride}"

    def options(self, **extra) -> dict:
        return {"patch": self.patch, "stride": self.stride, **extra}


CASES: List[Case] = [
    Case("effnet", "sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", 16, 8),  # 729 windows
    Case("effnet", "sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", 32, 16),  # 169
    Case("effnet", "sample_models/efficientnet_lite0.onnx", "sample_images/cat.jpg", 56, 28),  # 49
    Case("digits", "sample_models/digits_cnn.onnx", "sample_images/digit_3.png", 1, 1),  # 64
    Case("digits", "sample_models/digits_cnn.onnx", "sample_images/digit_3.png", 2, 1),  # 49
    Case("digits", "sample_models/digits_cnn.onnx", "sample_images/digit_3.png", 3, 1),  # 36
]
QUICK_CASES = {("effnet", 32), ("effnet", 56), ("digits", 1), ("digits", 3)}


# ------------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def ort_throughput(
    model: OnnxClassifier,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = BATCH_SIZES,
    *,
    min_images: int = 128,
    min_seconds: float = 0.5,
    repeats: int = 3,
    seed: int = 0,
) -> Dict[int, float]:
    """Images/s of the bare session (the very one occlude uses, so the same session options) on random
    inputs, per batch size: median over ``repeats`` rounds, each of at least ``min_images`` images and
    ``min_seconds``, after one warm-up batch. Rounds go round-robin over the batch sizes, so that a change
    in background load hits them all alike. Fixed-batch models are measured at their batch only."""
    session, name, out = model.session, model.input.name, model.output.name
    if model.fixed_batch:
        batch_sizes = [model.fixed_batch]
    rng = np.random.default_rng(seed)
    inputs = {b: rng.standard_normal((b, *sample_shape)).astype(model.dtype) for b in batch_sizes}
    for x in inputs.values():
        session.run([out], {name: x})  # warm-up: first-run allocations
    rounds: Dict[int, List[float]] = {b: [] for b in batch_sizes}
    for _ in range(repeats):
        for b, x in inputs.items():
            images, start = 0, time.perf_counter()
            while images < min_images or time.perf_counter() - start < min_seconds:
                session.run([out], {name: x})
                images += b
            rounds[b].append(images / (time.perf_counter() - start))
    return {b: median(r) for b, r in rounds.items()}


def floor_seconds(model: OnnxClassifier, passes: int, batch: int, sample_shape: Sequence[int], seed: int = 1) -> float:
    """The floor for ``passes`` forward passes, measured now: the bare session runs full batches of
    ``batch`` random inputs until it has seen at least ``passes`` images; the time is scaled to exactly
    ``passes`` images (passes / throughput)."""
    session, name, out = model.session, model.input.name, model.output.name
    x = np.random.default_rng(seed).standard_normal((batch, *sample_shape)).astype(model.dtype)
    runs = max(1, math.ceil(passes / batch))
    start = time.perf_counter()
    for _ in range(runs):
        session.run([out], {name: x})
    return (time.perf_counter() - start) * passes / (runs * batch)


def wait_for_idle(max_seconds: float, threshold: float = 0.3) -> float:
    """Sleep until the 1-minute load average falls below ``threshold`` (or ``max_seconds`` pass); returns
    the load average at the end. Other processes on the machine skew every number here."""
    deadline = time.monotonic() + max_seconds
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


class _TimedSession:
    """Wraps an onnxruntime session to count the images it is given and the seconds it spends."""

    def __init__(self, session):
        self._session = session
        self.seconds = 0.0
        self.calls = 0
        self.images = 0

    def run(self, output_names, feed, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._session.run(output_names, feed, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1
            self.images += len(next(iter(feed.values())))

    def __getattr__(self, name):
        return getattr(self._session, name)


@contextlib.contextmanager
def instrumented(model: OnnxClassifier):
    """Within the block, ``model.session`` counts its calls, images and seconds (yielded)."""
    real = model.session
    probe = _TimedSession(real)
    model.session = probe
    try:
        yield probe
    finally:
        model.session = real


def run_explain(model: OnnxClassifier, case: Case, **options) -> Explanation:
    return explain(model, ROOT / case.image, progress=None, **case.options(**options))


def time_explain(model, case: Case, repeats: int, **options):
    """Median wall time of explain() (one warm-up first) and the last explanation."""
    run_explain(model, case, **options)
    times, explanation = [], None
    for _ in range(repeats):
        seconds, explanation = timed(run_explain, model, case, **options)
        times.append(seconds)
    return times, explanation


def time_write(explanation: Explanation, repeats: int) -> List[float]:
    """Seconds of outputs.write_explanation (PNGs, .npy, JSON; default flags) into a temporary folder."""
    times = []
    with tempfile.TemporaryDirectory(prefix="occlude-bench-") as out:
        write_explanation(explanation, out, "warmup")
        for i in range(repeats):
            seconds, _ = timed(write_explanation, explanation, out, f"img{i}")
            times.append(seconds)
    return times


def breakdown(model, case: Case, runs: int = 1, **options) -> dict:
    """Instrumented runs (medians over ``runs``): where explain()'s time goes, inside onnxruntime or around it."""
    samples = []
    for _ in range(max(1, runs)):
        with instrumented(model) as probe:
            total, e = timed(run_explain, model, case, **options)
        samples.append((total, probe.seconds, total - probe.seconds))
    total, inside, outside = (median(column) for column in zip(*samples))
    return {
        "runs": len(samples),
        "total_s": total,
        "onnxruntime_s": inside,
        "outside_onnxruntime_s": outside,
        "session_calls": probe.calls,
        "images_through_session": probe.images,
        "forward_passes_reported": int(e.occlusion.forward_passes),
        "batch_size": int(e.params["batch_size"]),
        **{f"explain_{k}": float(v) for k, v in e.timing.items()},
    }


# ------------------------------------------------------------------------------------------------------
# memory: one fresh process per case
# ------------------------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB (VmRSS: now; VmHWM: peak).

    Not ru_maxrss: Linux carries the parent's peak over fork + exec into the child's ru_maxrss, so a child
    started by a big parent would report the parent's peak."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def child_memory(case: Case, threads: Optional[int]) -> dict:
    """Runs inside the child process: load the model, explain and write once, report memory figures (KiB)."""
    model = OnnxClassifier(ROOT / case.model, threads=threads)
    figures = {"rss_after_load_kib": _status_kib("VmRSS"), "peak_after_load_kib": _status_kib("VmHWM")}
    e = run_explain(model, case)
    figures["peak_after_explain_kib"] = _status_kib("VmHWM")
    with tempfile.TemporaryDirectory(prefix="occlude-bench-") as out:
        write_explanation(e, out, "img")
    figures["peak_after_write_kib"] = _status_kib("VmHWM")
    return figures


def measure_memory(case: Case, threads: Optional[int]) -> dict:
    """Peak RSS (VmHWM) of a fresh Python process that loads the model, explains one image and writes its
    outputs, and the part of it above the RSS right after the model was loaded."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", json.dumps(asdict(case))]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["peak_mib"] = figures["peak_after_write_kib"] / 1024
    figures["above_loaded_mib"] = (figures["peak_after_write_kib"] - figures["rss_after_load_kib"]) / 1024
    figures["explain_above_loaded_mib"] = (figures["peak_after_explain_kib"] - figures["rss_after_load_kib"]) / 1024
    return figures


# ------------------------------------------------------------------------------------------------------
# hooks for other modes (e.g. an adaptive --refine): compare a variant's map to the exact fine map
# ------------------------------------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their mean rank (as scipy.stats.rankdata, minus 1)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def map_agreement(exact: np.ndarray, approx: np.ndarray, top_fraction: float = 0.10) -> dict:
    """How well ``approx`` reproduces the ``exact`` map (pixels finite in both): Pearson and Spearman
    correlation, and the share of the exact map's top ``top_fraction`` pixels that are also in the
    approximate map's top ``top_fraction``."""
    exact, approx = np.asarray(exact, np.float64), np.asarray(approx, np.float64)
    if exact.shape != approx.shape:
        raise ValueError(f"maps differ in shape: {exact.shape} vs {approx.shape}")
    keep = np.isfinite(exact) & np.isfinite(approx)
    a, b = exact[keep], approx[keep]
    k = max(1, int(round(top_fraction * a.size)))
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return {
        "pearson": pearson(a, b),
        "spearman": pearson(_average_ranks(a), _average_ranks(b)),
        f"top{int(round(top_fraction * 100))}_overlap": len(top_a & top_b) / k,
        "pixels_compared": int(a.size),
    }


def passes_saved(exact_passes: int, variant_passes: int) -> dict:
    return {
        "exact_passes": int(exact_passes),
        "variant_passes": int(variant_passes),
        "passes_saved": int(exact_passes - variant_passes),
        "fraction_of_exact": variant_passes / exact_passes if exact_passes else float("nan"),
    }


# A variant maps (model, case) to an Explanation whose .map is compared with the exact run's map.
# Register more with register_variant(), e.g. once explain() has a refine option:
#     register_variant("refine", lambda model, case: run_explain(model, case, refine=True))
VariantFn = Callable[[OnnxClassifier, Case], Explanation]
VARIANTS: Dict[str, VariantFn] = {}


def register_variant(name: str, fn: VariantFn) -> None:
    VARIANTS[name] = fn


# The reference any cheaper mode should beat: the same patch on a grid twice as coarse (stride = patch).
register_variant("stride=patch", lambda model, case: run_explain(model, case, stride=case.patch))


def compare_variant(name: str, model, case: Case, exact: Explanation, exact_seconds: float, repeats: int) -> dict:
    fn = VARIANTS[name]
    fn(model, case)  # warm-up
    times, result = [], None
    for _ in range(repeats):
        seconds, result = timed(fn, model, case)
        times.append(seconds)
    row = {
        "variant": name,
        "case": case.name,
        "seconds": median(times),
        "speedup": exact_seconds / median(times),
        **passes_saved(exact.occlusion.forward_passes, result.occlusion.forward_passes),
        **map_agreement(exact.map, result.map),
    }
    return row


# Coarse-to-fine --refine against the exact map of the same grid, on every sample photo. The grids are the
# overlapping ones refine is meant for (stride well below the patch); "stride x2" is the plain way to spend
# about as few passes (the same patch, every other window along each axis) and the bar refine must clear.
REFINE_GRIDS = [(48, 8), (64, 16)]
REFINE_IMAGES = ["cat", "coffee", "astronaut", "flower"]
register_variant("refine", lambda model, case: run_explain(model, case, refine=True))
register_variant("stride x2", lambda model, case: run_explain(model, case, stride=2 * case.stride))


def refine_rows(model: OnnxClassifier, quick: bool, repeats: int) -> List[dict]:
    rows = []
    grids = REFINE_GRIDS[:1] if quick else REFINE_GRIDS
    images = REFINE_IMAGES[:2] if quick else REFINE_IMAGES
    for patch, stride in grids:
        for name in images:
            case = Case("effnet", "sample_models/efficientnet_lite0.onnx", f"sample_images/{name}.jpg", patch, stride)
            run_explain(model, case)  # warm-up
            exact_times, exact = [], None
            for _ in range(repeats):
                seconds, exact = timed(run_explain, model, case)
                exact_times.append(seconds)
            for variant in ("refine", "stride x2"):
                row = compare_variant(variant, model, case, exact, median(exact_times), repeats)
                row["image"] = name
                rows.append(row)
                print(
                    f"  {variant:9s} {case.name} {name:9s}: {row['variant_passes']}/{row['exact_passes']} passes, "
                    f"pearson {row['pearson']:.3f}, spearman {row['spearman']:.3f}, top10 {row['top10_overlap']:.3f}"
                )
    return rows


# ------------------------------------------------------------------------------------------------------
# a model exported with a fixed batch of 1 (needs the onnx package: a benchmark-only dependency)
# ------------------------------------------------------------------------------------------------------


def fixed_batch_copy(source: Path, folder: Path) -> Optional[Path]:
    """A copy of a dynamic-batch model with the batch pinned to 1 everywhere (inputs, outputs, value_info),
    as exporters without dynamic axes write it; None when onnx is not installed."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(source))
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_param:
            dims[0].dim_value = 1
    path = folder / (source.stem + "_batch1.onnx")
    onnx.save(model, str(path))
    return path


def _load(path: Path, threads: Optional[int], **kwargs):
    seconds, model = timed(OnnxClassifier, path, threads=threads, **kwargs)
    return seconds, model


def fixed_batch_rows(case: Case, repeats: int, threads: Optional[int]) -> Optional[dict]:
    """occlude on a fixed-batch-1 export, one image per forward pass (``batch_rewrite=False``) against the
    default load, which rewrites the batch dimension (inference.batching) when model.py supports it; on a
    model.py without that, the rewritten and validated bytes are loaded from a file instead."""
    from occlude_cli.inference import batching as onnx_graph

    with tempfile.TemporaryDirectory(prefix="occlude-bench-") as folder:
        pinned = fixed_batch_copy(ROOT / case.model, Path(folder))
        if pinned is None:
            return None
        rewrite_seconds, result = timed(onnx_graph.batched_model, pinned)
        row = {"case": case.name, "rewrite_and_validate_s": rewrite_seconds, "rewrite": result.reason}
        try:
            load_one, one = _load(pinned, threads, batch_rewrite=False)
        except TypeError:  # a model.py without the option loads it one image at a time anyway
            load_one, one = _load(pinned, threads)
        load_default, default = _load(pinned, threads)
        if default.fixed_batch == 1 and result.ok:
            rewritten_path = Path(folder) / "rewritten.onnx"
            rewritten_path.write_bytes(result.model.SerializeToString())
            load_default, default = _load(rewritten_path, threads)
            row["batched_from"] = "onnx_graph bytes (model.py does not rewrite)"
        else:
            row["batched_from"] = "OnnxClassifier default load"
        row.update(
            {
                "one_at_a_time_fixed_batch": one.fixed_batch,
                "one_at_a_time_load_s": load_one,
                "batched_fixed_batch": default.fixed_batch,
                "batched_load_s": load_default,
                "batched_describe": default.describe(),
            }
        )
        run_explain(one, case)
        run_explain(default, case)
        one_times, batched_times = [], []
        for _ in range(repeats):  # alternating, so background load hits both alike
            one_times.append(timed(run_explain, one, case)[0])
            batched_times.append(timed(run_explain, default, case)[0])
        row["one_at_a_time_s"] = median(one_times)
        row["batched_s"] = median(batched_times)
        row["speedup"] = row["one_at_a_time_s"] / row["batched_s"]
        return row


# ------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------


def environment(threads: Optional[int]) -> dict:
    import onnxruntime

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    return {
        "occlude": __version__,
        "commit": commit,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "loadavg_at_start": list(os.getloadavg()),
    }


def bench_case(
    model: OnnxClassifier, case: Case, rates: Dict[int, float], repeats: int, sample_shape: Sequence[int]
) -> dict:
    """Occlude against the floor, paired: each timed explain() is preceded by a fresh floor measurement of
    the same number of forward passes at the best batch size, and efficiency is the median of the
    per-pair ratios (robust to background load that comes and goes). Tiny cases get more runs (at least
    about one second of them)."""
    best_batch = max(rates, key=rates.get)
    warm_s, e = timed(run_explain, model, case)
    passes = int(e.occlusion.forward_passes)
    runs = max(repeats, min(200, math.ceil(1.0 / max(warm_s, 1e-3))))
    # The sweep's best size is itself a noisy pick: the floor of each pair is the faster of the best size
    # and occlude's own batch size, so that the floor never loses to occlude merely by the choice of size.
    candidates = sorted({int(best_batch), int(e.params["batch_size"])} & set(rates))
    floors, times, cpu = [], [], []
    for _ in range(runs):
        floors.append(min(floor_seconds(model, passes, b, sample_shape) for b in candidates))
        cpu_start = time.process_time()
        seconds, e = timed(run_explain, model, case)
        times.append(seconds)
        cpu.append((time.process_time() - cpu_start) / seconds)
    writes = time_write(e, repeats)
    occlude_s, write_s, floor_s = median(times), median(writes), median(floors)
    return {
        "case": case.name,
        "model": case.model,
        "image": case.image,
        "patch": case.patch,
        "stride": case.stride,
        "windows": int(len(e.occlusion.windows)),
        "forward_passes": passes,
        "runs": runs,
        "best_batch": int(best_batch),
        "best_images_per_s": rates[best_batch],
        "occlude_batch": int(e.params["batch_size"]),
        "occlude_batch_images_per_s": rates.get(int(e.params["batch_size"])),
        "floor_batch_candidates": candidates,
        "floor_s": floor_s,
        "floor_from_sweep_s": passes / rates[best_batch],
        "floor_runs_s": floors,
        "occlude_s": occlude_s,
        "occlude_runs_s": times,
        "efficiency": median([f / t for f, t in zip(floors, times)]),
        "efficiency_best": min(floors) / min(times),  # best of each: background load only ever adds time
        "cpu_per_wall": median(cpu),
        "write_s": write_s,
        "write_runs_s": writes,
        "efficiency_with_write": median([f / (t + write_s) for f, t in zip(floors, times)]),
        "breakdown": breakdown(model, case, runs=1 if occlude_s > 0.1 else min(runs, 50)),
    }


def topk_check(model, case: Case, repeats: int) -> dict:
    """--top-k 5 must reuse the same forward passes: compare passes (reported, and counted at the session)
    and time, with k=1 and k=5 runs alternating."""
    with instrumented(model) as probe1:
        warm_s, e1 = timed(run_explain, model, case, top_k=1)
    with instrumented(model) as probe5:
        e5 = run_explain(model, case, top_k=5)
    runs = max(repeats, min(200, math.ceil(1.0 / max(warm_s, 1e-3))))
    times1, times5 = [], []
    for _ in range(runs):
        times1.append(timed(run_explain, model, case, top_k=1)[0])
        times5.append(timed(run_explain, model, case, top_k=5)[0])
    return {
        "case": case.name,
        "runs": runs,
        "forward_passes_top1": int(e1.occlusion.forward_passes),
        "forward_passes_top5": int(e5.occlusion.forward_passes),
        "session_images_top1": probe1.images,
        "session_images_top5": probe5.images,
        "maps_top5": list(e5.maps.shape),
        "top1_s": median(times1),
        "top5_s": median(times5),
        "time_ratio": median(times5) / median(times1),
        "same_passes": e1.occlusion.forward_passes == e5.occlusion.forward_passes and probe1.images == probe5.images,
    }


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, rows: List[dict], columns: List[tuple]) -> None:
    """columns: (header, key or callable, digits)."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        cells.append([_fmt(k(row) if callable(k) else row.get(k), d) for _, k, d in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per measurement; medians are reported (default 5, 2 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer cases and repeats, no memory processes: a smoke run"
    )
    parser.add_argument("--cases", default="effnet,digits", help="model keys to run, comma-separated (effnet, digits)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads (default: onnxruntime's choice, as occlude)",
    )
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="candidate batch sizes for the raw throughput"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case memory processes")
    parser.add_argument("--no-fixed-batch", action="store_true", help="skip the fixed-batch-1 export rows")
    parser.add_argument(
        "--no-variants", action="store_true", help="skip the variant rows (" + ", ".join(VARIANTS) + ")"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to drop below 0.3",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for the JSON results (default benchmarks/results)"
    )
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_memory:
        print(json.dumps(child_memory(Case(**json.loads(args.child_memory)), args.threads)))
        return 0

    repeats = args.repeats or (2 if args.quick else 5)
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    cases = [c for c in CASES if c.key in keys and (not args.quick or (c.key, c.patch) in QUICK_CASES)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.wait_idle:
        print(f"waiting up to {args.wait_idle:.0f} s for an idle machine: load {wait_for_idle(args.wait_idle):.2f}")
    document = {
        "environment": environment(args.threads),
        "repeats": repeats,
        "quick": args.quick,
        "cases": [],
        "throughput": {},
        "topk": [],
        "memory": {},
        "fixed_batch": [],
        "variants": [],
    }
    load = os.getloadavg()[0]
    print(
        f"occlude benchmark: {len(cases)} cases, medians of {repeats}+ runs; onnxruntime "
        f"{document['environment']['onnxruntime']}, {os.cpu_count()} CPUs, load {load:.2f}"
    )
    if load > 0.5:
        print("warning: the machine is busy (load average above 0.5): expect noisy numbers; see --wait-idle")

    started = time.perf_counter()
    for key in dict.fromkeys(c.key for c in cases):
        group = [c for c in cases if c.key == key]
        model = OnnxClassifier(ROOT / group[0].model, threads=args.threads)
        sample_shape = run_explain(model, group[-1]).image.model_input.shape
        rates = ort_throughput(
            model,
            sample_shape,
            batch_sizes,
            repeats=3,
            min_images=32 if args.quick else 128,
            min_seconds=0.2 if args.quick else 0.5,
        )
        document["throughput"][key] = {str(b): r for b, r in rates.items()}
        print(f"\n{key}: raw onnxruntime images/s by batch: " + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()))
        for case in group:
            row = bench_case(model, case, rates, repeats, sample_shape)
            document["cases"].append(row)
            print(
                f"  {case.name}: {row['forward_passes']} passes, {row['runs']} runs, floor {row['floor_s']:.3f} s, "
                "occlude "
                f"{row['occlude_s']:.3f} s, efficiency {row['efficiency']:.3f}, write {row['write_s']:.3f} s"
            )
        first = group[0]
        document["topk"].append(topk_check(model, first, max(2, min(repeats, 3))))
        if not args.no_variants:
            exact = run_explain(model, first)
            exact_s = next(r for r in document["cases"] if r["case"] == first.name)["occlude_s"]
            for name in ("stride=patch",):
                document["variants"].append(
                    compare_variant(name, model, first, exact, exact_s, max(2, min(repeats, 3)))
                )
        if not args.no_variants and group[0].key == "effnet":
            document["refine"] = refine_rows(model, args.quick, 1 if args.quick else 2)
    if not args.no_fixed_batch and "effnet" in keys:
        case = next(c for c in CASES if c.key == "effnet" and c.patch == (56 if args.quick else 16))
        row = fixed_batch_rows(case, max(2, min(repeats, 3)), args.threads)
        if row is not None:
            document["fixed_batch"].append(row)
    if not args.no_memory and not args.quick:
        for case in cases:
            document["memory"][case.name] = measure_memory(case, args.threads)
    document["bench_seconds"] = time.perf_counter() - started
    document["environment"]["loadavg_at_end"] = list(os.getloadavg())

    ms = lambda key: lambda r: r[key] * 1000  # noqa: E731
    bd = lambda key: lambda r: r["breakdown"][key] * 1000  # noqa: E731
    print_table(
        "occlude vs the onnxruntime floor (medians, ms; eff = median of paired floor / occlude, 1.0 is the limit)",
        document["cases"],
        [
            ("case", "case", 0),
            ("windows", "windows", 0),
            ("passes", "forward_passes", 0),
            ("best img/s", "best_images_per_s", 0),
            ("@batch", "best_batch", 0),
            ("occl batch", "occlude_batch", 0),
            ("runs", "runs", 0),
            ("floor", ms("floor_s"), 1),
            ("occlude", ms("occlude_s"), 1),
            ("eff", "efficiency", 3),
            ("eff best", "efficiency_best", 3),
            ("cpu/wall", "cpu_per_wall", 2),
            ("in ORT", bd("onnxruntime_s"), 1),
            ("ORT img/s", lambda r: r["breakdown"]["images_through_session"] / r["breakdown"]["onnxruntime_s"], 0),
            ("outside ORT", bd("outside_onnxruntime_s"), 1),
            ("outside %", lambda r: 100 * r["breakdown"]["outside_onnxruntime_s"] / r["breakdown"]["total_s"], 1),
            ("write", ms("write_s"), 1),
            ("eff+write", "efficiency_with_write", 3),
        ],
    )
    if document["memory"]:
        print_table(
            "peak memory: fresh process per case (load model, explain, write once); VmHWM",
            [{"case": k, **v} for k, v in document["memory"].items()],
            [
                ("case", "case", 0),
                ("RSS after load MiB", lambda r: r.get("rss_after_load_kib", 0) / 1024, 1),
                ("peak MiB", "peak_mib", 1),
                ("explain above load MiB", "explain_above_loaded_mib", 1),
                ("+write above load MiB", "above_loaded_mib", 1),
                ("error", "error", 0),
            ],
        )
    print_table(
        "--top-k 5 vs --top-k 1 (same forward passes expected)",
        document["topk"],
        [
            ("case", "case", 0),
            ("runs", "runs", 0),
            ("passes k=1", "forward_passes_top1", 0),
            ("passes k=5", "forward_passes_top5", 0),
            ("session images k=1", "session_images_top1", 0),
            ("k=5", "session_images_top5", 0),
            ("k=1 ms", lambda r: r["top1_s"] * 1000, 1),
            ("k=5 ms", lambda r: r["top5_s"] * 1000, 1),
            ("ratio", "time_ratio", 3),
            ("same passes", "same_passes", 0),
        ],
    )
    if document["variants"]:
        print_table(
            "variants vs the exact map of the same case",
            document["variants"],
            [
                ("variant", "variant", 0),
                ("case", "case", 0),
                ("passes", "variant_passes", 0),
                ("of exact", "fraction_of_exact", 3),
                ("ms", lambda r: r["seconds"] * 1000, 1),
                ("speedup", "speedup", 2),
                ("pearson", "pearson", 3),
                ("spearman", "spearman", 3),
                ("top10 overlap", "top10_overlap", 3),
            ],
        )
    if document.get("refine"):
        columns = [
            ("variant", "variant", 0),
            ("case", "case", 0),
            ("image", "image", 0),
            ("passes", "variant_passes", 0),
            ("of exact", "fraction_of_exact", 3),
            ("speedup", "speedup", 2),
            ("pearson", "pearson", 3),
            ("spearman", "spearman", 3),
            ("top10 overlap", "top10_overlap", 3),
        ]
        print_table(
            "--refine vs the exact map of the same grid (and stride x2, the plain way to save passes)",
            document["refine"],
            columns,
        )
        for variant in ("refine", "stride x2"):
            mine = [r for r in document["refine"] if r["variant"] == variant]
            print(
                f"  {variant}: median of exact/variant passes "
                f"{median([1 / r['fraction_of_exact'] for r in mine]):.2f}x, "
                f"median pearson {median([r['pearson'] for r in mine]):.3f}, "
                f"min pearson {min(r['pearson'] for r in mine):.3f}, "
                f"median spearman {median([r['spearman'] for r in mine]):.3f}"
            )
    for row in document["fixed_batch"]:
        print(
            f"\nfixed-batch-1 export, {row['case']}: one image per pass {row['one_at_a_time_s'] * 1000:.0f} ms, "
            f"batched {row['batched_s'] * 1000:.0f} ms ({row['batched_from']}, fixed_batch="
            f"{row['batched_fixed_batch']}): {row['speedup']:.2f}x faster; load {row['one_at_a_time_load_s']:.2f} s "
            f"-> {row['batched_load_s']:.2f} s; rewrite + validation alone {row['rewrite_and_validate_s']:.2f} s"
            f"\n  onnx_graph: {row['rewrite']}\n  model.describe()['batching']: "
            f"{row['batched_describe'].get('batching', '-')}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(
        f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({document['bench_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
