"""Make the adversarial-patch example of the manual (docs/sanity.md, "Where does an attack act?").

A 64 x 64 square of noise (8 % of the picture) is pasted over the cat's left eye and tuned by a seeded black-box
random search (no gradients: only the sample model's outputs, as an attacker with query access has them) against
the sample EfficientNet-Lite0's "Egyptian cat". The search changes sub-squares of the patch to random corner colours
(each channel 0 or 255), shrinking them over time, and keeps a candidate when it lowers the cat's log-probability
margin over the best other class (the idea of Andriushchenko et al.'s Square Attack, ECCV 2020, applied to a
patch, untargeted). With 12,001 queries it brings the cat from 0.81 to 0.40, level with "tabby" (the margin ends
at -0.05: not quite flipped). For contrast, uniform noise of the same energy (the same L2 norm of the change, in
pixel units) is spread over the whole image; it happens to tip the picture to "tabby".

Writes docs/examples/adversarial/cat_clean.png (the cat as the model sees it: 224 x 224, the sample model's
stretch resize, pixels rounded), cat_patch.png (the same with the patch), cat_noise.png (the same with the noise)
and attack.json (the box, the seed, the queries and the scores). Run from the repository root:

    python docs/examples/make_adversarial.py

About three minutes of CPU time. Everything is seeded: the same files come out on the same onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from occlude_cli import OnnxClassifier, prepare_image, resolve_preprocessing

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "examples" / "adversarial"
MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"
SEED = 0
BOX = (52, 56, 116, 120)  # x0, y0, x1, y1 in the 224 x 224 picture: over the cat's left eye
CAT = 285  # ImageNet "Egyptian cat", the sample model's top-1 on the clean cat
TABBY = 281  # the runner-up, which the patch brings level and the noise makes the top-1
ITERATIONS = 1000
CANDIDATES = 12


def log_probabilities(model: OnnxClassifier, pixels: np.ndarray, preprocessing) -> np.ndarray:
    """(batch, classes) log-softmax of the model's outputs for a batch of (H, W, 3) pixel arrays."""
    raw = model.run(np.stack([preprocessing.normalise(p) for p in pixels])).astype(np.float64)
    raw -= raw.max(axis=1, keepdims=True)
    return raw - np.log(np.exp(raw).sum(axis=1, keepdims=True))


def margin(logp: np.ndarray) -> np.ndarray:
    """How far the best other class is ahead of the cat (positive: the cat is no longer the top-1): the search
    raises it."""
    others = np.delete(logp, CAT, axis=1)
    return others.max(axis=1) - logp[:, CAT]


def attack(model, preprocessing, clean: np.ndarray, rng: np.random.Generator):
    x0, y0, x1, y1 = BOX
    side = x1 - x0
    best = clean.copy()
    best[y0:y1, x0:x1] = rng.integers(0, 256, size=(side, side, 3))
    best_margin = margin(log_probabilities(model, best[None], preprocessing))[0]
    queries = 1
    for i in range(ITERATIONS):
        size = max(2, int(round(side * 0.5 * (1 - i / ITERATIONS))))  # sub-squares shrink from 16 to 2 pixels
        candidates = np.repeat(best[None], CANDIDATES, axis=0)
        for c in candidates:
            y, x = rng.integers(0, side - size + 1, size=2)
            c[y0 + y : y0 + y + size, x0 + x : x0 + x + size] = rng.integers(0, 2, size=3) * 255
        scores = margin(log_probabilities(model, candidates, preprocessing))
        queries += CANDIDATES
        k = int(np.argmax(scores))
        if scores[k] > best_margin:
            best, best_margin = candidates[k], scores[k]
    return best, float(best_margin), queries


def same_energy_noise(clean: np.ndarray, energy: float, rng: np.random.Generator) -> np.ndarray:
    """Clean + uniform noise over every pixel whose L2 norm is ``energy`` (before rounding and clipping)."""
    delta = rng.uniform(-1.0, 1.0, size=clean.shape)
    delta *= energy / np.linalg.norm(delta)
    return np.clip(np.rint(clean + delta), 0, 255)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = OnnxClassifier(MODEL, device="cpu")
    preprocessing = resolve_preprocessing(model)
    prepared = prepare_image(ROOT / "sample_images" / "cat.jpg", preprocessing)
    clean = np.clip(np.rint(prepared.pixels.astype(np.float64)), 0, 255)  # what cat_clean.png stores
    rng = np.random.default_rng(SEED)
    adversarial, final_margin, queries = attack(model, preprocessing, clean, rng)
    energy = float(np.linalg.norm(adversarial - clean))
    noisy = same_energy_noise(clean, energy, rng)
    files = {"cat_clean.png": clean, "cat_patch.png": adversarial, "cat_noise.png": noisy}
    for name, pixels in files.items():
        Image.fromarray(pixels.astype(np.uint8), "RGB").save(OUT / name, optimize=True)
    scores = {}
    for name, pixels in files.items():
        logp = log_probabilities(model, pixels[None], preprocessing)[0]
        top = int(np.argmax(logp))
        scores[name] = {
            "top1": top,
            "top1_label": model.labels[top] if model.labels else None,
            "top1_probability": float(np.exp(logp[top])),
            "egyptian_cat_probability": float(np.exp(logp[CAT])),
            "tabby_probability": float(np.exp(logp[TABBY])),
            "l2_change": float(np.linalg.norm(pixels - clean)),
        }
    record = {
        "box": list(BOX),
        "seed": SEED,
        "attacked_class": CAT,
        "runner_up": TABBY,
        "iterations": ITERATIONS,
        "queries": queries,
        "final_margin": final_margin,
        "images": scores,
    }
    (OUT / "attack.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
