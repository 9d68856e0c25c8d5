"""How close ``--refine`` comes to the exact map on real photos, worst case first.

For every photo: the exact map at patch 48 / stride 8 (EfficientNet-Lite0, 224x224, 529 windows, 530
forward passes), then refined maps at several (coarse step, budget) settings and, for comparison, the
exact map at twice the stride. Each is compared with the exact map: Pearson, Spearman, and the share of
the exact map's top-10% pixels that the other map's top 10% finds (``top10``). Reported per photo, then
the WORST case and the median per setting.

Photos: every photo in ``sample_images/`` plus the real photos that installed packages ship inside
themselves (scikit-image's ``skimage/data``, matplotlib's ``sample_data``, scikit-learn's
``datasets/images`` when installed); nothing is downloaded. Each is used as the model sees it by default
(stretched to 224x224) and, with ``--crops``, also center-cropped (a different framing, a different map).

Exact maps are computed once with the real model (``occlude_cli.analyses.explain``) and cached, every class's score
for every window, under ``--cache`` (default ``/tmp/occlude-refine-cache``). A refined run is then
replayed on the cached scores: the refine engine is handed an indicator image (the window it occludes is
the only non-zero area) and a score function that looks each occluded window up in the cache. That is
the very computation a real refined run makes, without repeating its forward passes; ``--verify`` checks
it against a real ``explain(..., refine=True)`` run on the first photo (max |difference| of the maps).

    python benchmarks/refine_photos.py                       # default settings table
    python benchmarks/refine_photos.py --crops --settings 3:0.25,4:0.1667,4:0.25 --verify

Writes everything to ``benchmarks/results/refine-photos-YYYYmmdd-HHMMSS.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from occlude_cli.core.engine import Occlusion, occlusion_sensitivity, window_grid  # noqa: E402
from occlude_cli.core.metrics import pearson, spearman, top_fraction_mask  # noqa: E402
from occlude_cli.core.refine import refine_forward_passes, refined_occlusion_sensitivity  # noqa: E402

MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"
SAMPLE_PHOTOS = ("astronaut.jpg", "cat.jpg", "coffee.jpg", "flower.jpg")
# Real colour photos shipped inside packages (file names inside each package's data folder). Left out on
# purpose: synthetic pictures (color.png, phantom.png, chessboard_*.png, logo*.png), near-duplicates of
# photos already in the set (motorcycle_right.png of motorcycle_left.png, sklearn's flower.jpg of
# sample_images/flower.jpg) and pictures that are not photos of a scene (horse.png: a silhouette).
PACKAGE_PHOTOS = {
    "skimage": (
        "data",
        [
            "chelsea.png",
            "coffee.png",
            "astronaut.png",
            "rocket.jpg",
            "motorcycle_left.png",
            "hubble_deep_field.jpg",
            "ihc.png",
            "retina.jpg",
        ],
    ),
    "matplotlib": ("mpl-data/sample_data", ["grace_hopper.jpg"]),
    "sklearn": ("datasets/images", ["china.jpg"]),
}
# Grey real photos (scikit-image), fed as RGB with --grey.
GREY_PHOTOS = ("camera.png", "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png", "cell.png")


def _package_dir(name: str) -> Optional[Path]:
    """The installed package's folder, found without importing it (importing skimage.data is harmless
    too, but nothing here may trigger a download)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def discover_photos(grey: bool) -> List[Tuple[str, Path]]:
    """(name, path) of every photo used; names say where each comes from."""
    photos = [(f"sample/{f}", ROOT / "sample_images" / f) for f in SAMPLE_PHOTOS]
    for package, (folder, files) in PACKAGE_PHOTOS.items():
        base = _package_dir(package)
        if base is None:
            print(f"note: {package} is not installed; its photos are left out", file=sys.stderr)
            continue
        for f in files:
            path = base / folder / f
            if path.exists():
                photos.append((f"{package}/{f}", path))
            else:
                print(f"note: {path} not found; left out", file=sys.stderr)
    if grey:
        base = _package_dir("skimage")
        if base is not None:
            photos += [(f"skimage/{f}", base / "data" / f) for f in GREY_PHOTOS if (base / "data" / f).exists()]
    return photos


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def cache_file(cache: Path, name: str, path: Path, resize: str, patch: int, stride: int) -> Path:
    """Where a photo's exact scores are cached: named by photo, framing and grid, keyed by content."""
    key = hashlib.sha256(path.read_bytes() + MODEL.read_bytes()[: 1 << 20]).hexdigest()[:16]
    return cache / f"{name.replace('/', '_')}-{resize}-{patch}-{stride}-{key}.npz"


def _is_square(path: Path) -> bool:
    with Image.open(path) as opened:
        return opened.size[0] == opened.size[1]


def exact_scores(
    classifier, preprocessing, name: str, path: Path, resize: str, patch: int, stride: int, cache: Path
) -> Dict[str, np.ndarray]:
    """The exact run's every window's scores (all classes) for one photo, cached on disk by content."""
    from occlude_cli import explain

    file = cache_file(cache, name, path, resize, patch, stride)
    if file.exists():
        with np.load(file) as data:
            return dict(data)
    started = time.perf_counter()
    prep = dataclasses.replace(preprocessing, resize=resize)
    result = explain(classifier, load_rgb(path), preprocessing=prep, patch=patch, stride=stride)
    occ = result.occlusion
    data = {
        "windows": occ.windows,
        "original_scores": occ.original_scores,
        "window_scores": occ.window_scores.astype(np.float64),
        "target": np.array(result.target),
        "size": np.array(occ.size),
        "seconds": np.array(time.perf_counter() - started),
    }
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **data)
    os.replace(tmp, file)
    print(f"  exact {name} ({resize}): {data['seconds']:.1f} s", file=sys.stderr)
    return data


def replay_score(windows: np.ndarray, window_scores: np.ndarray, size: Tuple[int, int]) -> Callable:
    """A score function over indicator images (1 inside the occluded window, 0 elsewhere) that returns
    the cached scores of that window: the refine engine's calls, answered from the exact run."""
    index = {(int(w[0]), int(w[1])): i for i, w in enumerate(windows)}
    width = size[1]

    def score(batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(len(batch), -1)
        first = np.argmax(flat > 0.5, axis=1)
        return window_scores[[index[(int(f) // width, int(f) % width)] for f in first]]

    return score


def replay_refine(data: Dict[str, np.ndarray], step: int, budget: float) -> Occlusion:
    size = tuple(int(s) for s in data["size"])
    windows = data["windows"]
    patch = (int(windows[0, 2]), int(windows[0, 3]))
    strides = (int(np.diff(np.unique(windows[:, 0]))[0]), int(np.diff(np.unique(windows[:, 1]))[0]))
    target = int(data["target"])
    scores = data["window_scores"][:, [target]]
    inputs = np.zeros((1,) + size)
    return refined_occlusion_sensitivity(
        inputs,
        replay_score(windows, scores, size),
        patch=patch,
        stride=strides,
        target=0,
        baseline=np.ones_like(inputs),
        coarse_step=step,
        budget=budget,
        original_scores=data["original_scores"][[target]],
    )


def exact_occlusion(data: Dict[str, np.ndarray]) -> Occlusion:
    target = int(data["target"])
    return Occlusion(
        windows=data["windows"],
        original_scores=data["original_scores"][[target]],
        window_scores=data["window_scores"][:, [target]],
        size=tuple(int(s) for s in data["size"]),
        forward_passes=len(data["windows"]) + 1,
    )


def coarser_stride(data: Dict[str, np.ndarray], factor: int) -> Occlusion:
    """The exact map at ``factor`` times the stride, taken from the cached windows (its windows are a
    subset of the fine grid's when the last start is on the coarse grid too)."""
    size = tuple(int(s) for s in data["size"])
    windows = data["windows"]
    patch = (int(windows[0, 2]), int(windows[0, 3]))
    stride = int(np.diff(np.unique(windows[:, 0]))[0]) * factor
    wanted = window_grid(size, patch, (stride, stride))
    index = {(int(w[0]), int(w[1])): i for i, w in enumerate(windows)}
    target = int(data["target"])
    table = data["window_scores"][:, [target]]
    score = replay_score(windows, table, size)
    inputs = np.zeros((1,) + size)
    if not all((int(w[0]), int(w[1])) in index for w in wanted):
        raise SystemExit("the coarser grid is not a subset of the fine one")
    return occlusion_sensitivity(
        inputs,
        score,
        patch=patch,
        stride=(stride, stride),
        baseline=np.ones_like(inputs),
        original_scores=data["original_scores"][[target]],
    )


def compare(exact: np.ndarray, other: np.ndarray) -> Dict[str, float]:
    ref = top_fraction_mask(exact, 0.1)
    got = top_fraction_mask(other, 0.1)
    return {
        "pearson": pearson(exact, other),
        "spearman": spearman(exact, other),
        "top10": float((ref & got).sum() / ref.sum()),
    }


def parse_settings(text: str) -> List[Tuple[int, float]]:
    out = []
    for part in text.split(","):
        step, budget = part.split(":")
        out.append((int(step), float(Fraction(budget))))  # "1/6" allowed
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings",
        default="3:0.25",
        help="comma-separated coarse_step:budget pairs (budget may be a fraction like 1/6)",
    )
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--crops", action="store_true", help="also every photo center-cropped to 224x224")
    parser.add_argument("--grey", action="store_true", help="also scikit-image's grey photos, as RGB")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/occlude-refine-cache"))
    parser.add_argument(
        "--verify", action="store_true", help="check the replay against a real refined run on the first photo"
    )
    parser.add_argument("--cached-only", action="store_true", help="use only photos whose exact map is cached")
    parser.add_argument("--only", default=None, help="substring: use only photos whose name contains it")
    args = parser.parse_args(argv)

    from occlude_cli import explain, resolve_preprocessing
    from occlude_cli.loaders.model import OnnxClassifier

    classifier = OnnxClassifier(str(MODEL))
    preprocessing = resolve_preprocessing(classifier)
    settings = parse_settings(args.settings)
    photos = discover_photos(args.grey)
    if args.only:
        photos = [p for p in photos if args.only in p[0]]
    resizes = ["stretch", "center-crop"] if args.crops else ["stretch"]
    rows: List[dict] = []
    labels = [f"refine {s}:{b:.4g}" for s, b in settings] + [f"stride {2 * args.stride}"]
    verified = None
    for name, path in photos:
        for resize in resizes:
            if resize == "center-crop" and _is_square(path):
                continue  # the same input as stretched: counted once
            if args.cached_only and not cache_file(args.cache, name, path, resize, args.patch, args.stride).exists():
                continue
            grey = any(name.endswith(f) for f in GREY_PHOTOS)
            data = exact_scores(classifier, preprocessing, name, path, resize, args.patch, args.stride, args.cache)
            exact = exact_occlusion(data)
            exact_map = exact.attribution(0)
            size = tuple(int(s) for s in data["size"])
            for (step, budget), label in zip(settings, labels):
                refined = replay_refine(data, step, budget)
                predicted = refine_forward_passes(size, (args.patch,) * 2, (args.stride,) * 2, None, step, budget)
                assert refined.forward_passes == predicted, (refined.forward_passes, predicted)
                rows.append(
                    {
                        "photo": name,
                        "resize": resize,
                        "grey": grey,
                        "setting": label,
                        "passes": refined.forward_passes,
                        "ratio": exact.forward_passes / refined.forward_passes,
                        **compare(exact_map, refined.attribution(0)),
                    }
                )
            doubled = coarser_stride(data, 2)
            rows.append(
                {
                    "photo": name,
                    "resize": resize,
                    "grey": grey,
                    "setting": labels[-1],
                    "passes": doubled.forward_passes,
                    "ratio": exact.forward_passes / doubled.forward_passes,
                    **compare(exact_map, doubled.attribution(0)),
                }
            )
            if args.verify and verified is None:
                step, budget = settings[0]
                prep = dataclasses.replace(preprocessing, resize=resize)
                real = explain(
                    classifier,
                    load_rgb(path),
                    preprocessing=prep,
                    patch=args.patch,
                    stride=args.stride,
                    refine=True,
                    refine_step=step,
                    refine_budget=budget,
                )
                replay = replay_refine(data, step, budget).attribution(0)
                verified = {
                    "photo": name,
                    "setting": labels[0],
                    "max_abs_diff": float(np.nanmax(np.abs(real.map - replay))),
                    "max_abs_map": float(np.nanmax(np.abs(replay))),
                    "same_measured": bool(
                        np.array_equal(real.occlusion.measured, replay_refine(data, step, budget).measured)
                    ),
                }
                print(
                    f"verify: real refined run vs replay on {name}: max |diff| {verified['max_abs_diff']:.2e} "
                    f"(map max {verified['max_abs_map']:.3f}), same measured windows: {verified['same_measured']}"
                )

    print(
        f"\nEfficientNet-Lite0, patch {args.patch} / stride {args.stride}, {len(rows) // len(labels)} photos "
        f"({', '.join(resizes)}); exact = {len(data['windows']) + 1} passes\n"
    )
    header = f"{'photo':42} {'setting':18} {'passes':>6} {'fewer':>6} {'pearson':>8} {'spearman':>8} {'top10':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['photo'] + ' ' + r['resize']:42} {r['setting']:18} {r['passes']:6d} {r['ratio']:5.2f}x "
            f"{r['pearson']:8.3f} {r['spearman']:8.3f} {r['top10']:6.3f}"
        )
    summary = []
    groups = [("all", lambda r: True)]
    if args.grey:
        groups += [("colour", lambda r: not r["grey"]), ("grey", lambda r: r["grey"])]
    for group, keep in groups:
        print(f"\n{group} photos: {len({(r['photo'], r['resize']) for r in rows if keep(r)})}")
        print(
            f"{'setting':18} {'passes':>6} {'fewer':>6} | {'WORST pearson':>13} {'spearman':>8} {'top10':>6} | "
            f"{'median pearson':>14} {'spearman':>8} {'top10':>6} | worst photo (pearson)"
        )
        for label in labels:
            sel = [r for r in rows if r["setting"] == label and keep(r)]
            worst = {k: min(r[k] for r in sel) for k in ("pearson", "spearman", "top10")}
            median = {k: float(np.median([r[k] for r in sel])) for k in ("pearson", "spearman", "top10")}
            worst_photo = min(sel, key=lambda r: r["pearson"])
            passes = max(r["passes"] for r in sel)
            ratio = min(r["ratio"] for r in sel)
            summary.append(
                {
                    "group": group,
                    "setting": label,
                    "passes": passes,
                    "ratio": ratio,
                    "worst": worst,
                    "median": median,
                    "worst_photo": f"{worst_photo['photo']} {worst_photo['resize']}",
                    "photos": len(sel),
                }
            )
            print(
                f"{label:18} {passes:6d} {ratio:5.2f}x | {worst['pearson']:13.3f} {worst['spearman']:8.3f} "
                f"{worst['top10']:6.3f} | {median['pearson']:14.3f} {median['spearman']:8.3f} "
                f"{median['top10']:6.3f} | {summary[-1]['worst_photo']}"
            )

    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"refine-photos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "model": MODEL.name,
                "patch": args.patch,
                "stride": args.stride,
                "resizes": resizes,
                "photos": [p[0] for p in photos],
                "settings": settings,
                "rows": rows,
                "summary": summary,
                "verify": verified,
            },
            fh,
            indent=1,
        )
    os.replace(tmp, out)
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
