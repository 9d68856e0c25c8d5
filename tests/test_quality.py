"""The map quality numbers (relevance mass and rank accuracy, sparseness, complexity) against the ``quantus`` package
and hand-computed cases; the concentration figure; SSIM against scikit-image; the similarity set of the sanity test.

Real maps: the occlusion map of the sample model on the cat and the committed Integrated Gradients map
(docs/examples/cat.ig.npy), with the cat's mask (docs/examples/masks/cat.png) on the model grid."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from occlude_cli.core import quality
from occlude_cli.core.similarity import map_similarity, ssim

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS

quantus = pytest.importorskip("quantus")
metrics_module = pytest.importorskip("skimage.metrics")

TOLERANCE = 1e-6


def _quantus(metric_class, values: np.ndarray, mask=None) -> float:
    """One Quantus metric with its defaults on one (H, W) map (and mask), as a user of Quantus would call it."""
    a = np.asarray(values, dtype=np.float64)[None, None].copy()
    s = None if mask is None else np.asarray(mask, dtype=np.float64)[None, None]
    x = np.zeros((1, 3) + a.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = metric_class(disable_warnings=True, display_progressbar=False)
        return float(metric(model=None, x_batch=x, y_batch=np.array([0]), a_batch=a, s_batch=s)[0])


@pytest.fixture(scope="module")
def real_maps():
    """The sample model's occlusion map of the cat (patch 32), the IG map and the cat's mask, on the model grid."""
    from occlude_cli import explain
    from occlude_cli.loaders.maps import mask_from_file, read_saliency_map, resize_map

    e = explain(SAMPLE_MODELS / "efficientnet_lite0.onnx", SAMPLE_IMAGES / "cat.jpg", patch=32)
    ig = resize_map(
        read_saliency_map(ROOT / "docs" / "examples" / "cat.ig.npy", dims=(2,)),
        e.image.preprocessing.size,
        original_size=e.image.original_size,
        crop_box=e.image.crop_box,
    )
    mask = mask_from_file(ROOT / "docs" / "examples" / "masks" / "cat.png", e.image)
    return {"occlusion": e.map, "ig": ig, "mask": mask}


def _no_tie_at_k(values: np.ndarray, mask: np.ndarray) -> bool:
    k = int(mask.sum())
    ordered = np.sort(values.ravel())[::-1]
    return ordered[k - 1] != ordered[k]


@pytest.mark.parametrize("which", ["occlusion", "ig", "noise"])
def test_every_number_equals_quantus_on_real_maps(real_maps, which):
    values = real_maps[which] if which != "noise" else np.random.default_rng(4).normal(size=(224, 224))
    mask = real_maps["mask"]
    ours = {
        "mass": quality.relevance_mass_accuracy(values, mask),
        "sparseness": quality.sparseness(values),
        "complexity": quality.complexity(values),
    }
    assert ours["mass"] == pytest.approx(_quantus(quantus.RelevanceMassAccuracy, values, mask), abs=TOLERANCE)
    assert ours["sparseness"] == pytest.approx(_quantus(quantus.Sparseness, values), abs=TOLERANCE)
    assert ours["complexity"] == pytest.approx(_quantus(quantus.Complexity, values), abs=TOLERANCE)
    if _no_tie_at_k(values, mask):  # Quantus' own value does not depend on its unstable sort
        rank = quality.relevance_rank_accuracy(values, mask)
        assert rank == pytest.approx(_quantus(quantus.RelevanceRankAccuracy, values, mask), abs=TOLERANCE)


def test_rank_accuracy_on_a_tied_occlusion_map_is_quantus_averaged_over_the_tie_orders(real_maps):
    """An occlusion map ties many pixels at the k-th place: Quantus' value then depends on which tied pixels its
    unstable sort puts first. Breaking the ties with a tiny seeded jitter (order within a tie only) and averaging
    Quantus over many jitters converges to ours, which counts each tied pixel fractionally."""
    values, mask = real_maps["occlusion"], real_maps["mask"]
    assert not _no_tie_at_k(values, mask)  # the case this test is about
    ours = quality.relevance_rank_accuracy(values, mask)
    levels = np.unique(values)
    gap = np.min(np.diff(levels))
    rng = np.random.default_rng(0)
    runs = [
        _quantus(quantus.RelevanceRankAccuracy, values + rng.uniform(0, gap / 4, values.shape), mask) for _ in range(40)
    ]
    assert min(runs) <= ours <= max(runs)
    assert ours == pytest.approx(np.mean(runs), abs=3 * np.std(runs) / math.sqrt(len(runs)) + 1e-9)


def test_hand_computed_cases():
    values = np.array([[4.0, 3.0], [2.0, 1.0]])
    mask = np.array([[True, False], [True, False]])
    # mass: (4 + 2) / 10 after dividing by the max (a ratio: unchanged)
    assert quality.relevance_mass_accuracy(values, mask) == pytest.approx(0.6, abs=1e-12)
    # rank: k = 2, the top two are 4 (inside) and 3 (outside)
    assert quality.relevance_rank_accuracy(values, mask) == 0.5
    # ties at the k-th place: [3, 3, 3, 0], mask {0, 3}, k = 2: 2 places for three tied pixels, one of them inside
    tied = np.array([[3.0, 3.0], [3.0, 0.0]])
    assert quality.relevance_rank_accuracy(tied, np.array([[True, False], [False, True]])) == pytest.approx(1 / 3)
    # sparseness: |map| / max + 1e-7, Gini over n = 4 sorted values a: sum((2i - n - 1) a_i) / (n sum a)
    a = np.sort(np.abs(values).ravel() / 4.0 + 1e-7)
    expected = np.sum((2 * np.arange(1, 5) - 5) * a) / (4 * a.sum())
    assert quality.sparseness(values) == pytest.approx(expected, abs=1e-15)
    # a one-hot map: Gini 1 - 1/n (before the epsilon); complexity of a uniform map: log(n)
    one_hot = np.zeros((8, 8))
    one_hot[3, 4] = 5.0
    assert quality.gini(one_hot) == pytest.approx(1 - 1 / 64)
    assert quality.complexity(np.ones((8, 8))) == pytest.approx(math.log(64), abs=1e-9)
    assert quality.complexity(one_hot) == pytest.approx(0.0, abs=1e-9)


def test_undefined_cases_are_nan_and_uncomputed_pixels_are_left_out():
    zeros = np.zeros((4, 4))
    empty = np.zeros((4, 4), dtype=bool)
    assert math.isnan(quality.relevance_mass_accuracy(np.ones((4, 4)), empty))
    assert math.isnan(quality.relevance_rank_accuracy(np.ones((4, 4)), empty))
    assert math.isnan(quality.complexity(zeros))
    assert math.isnan(quality.gini(zeros))
    with_nan = np.array([[4.0, np.nan], [2.0, 1.0]])
    mask = np.array([[True, True], [False, False]])
    assert quality.relevance_mass_accuracy(with_nan, mask) == pytest.approx(4 / 7)
    assert quality.relevance_rank_accuracy(with_nan, mask) == 1.0


def test_concentration_of_a_patch_and_of_an_even_map():
    patch = np.zeros((100, 100))
    patch[10:20, 10:20] = 1.0  # 1 % of the area holds everything
    c = quality.concentration(patch)
    assert c["top_1"] == 1.0 and c["top_5"] == 1.0 and c["top_10"] == 1.0
    assert c["gini_abs"] == pytest.approx(0.99)
    even = np.ones((100, 100))
    c = quality.concentration(even)
    assert c["top_1"] == pytest.approx(0.01) and c["top_10"] == pytest.approx(0.1) and c["gini_abs"] == 0.0
    # negative values count in the Gini of |map| but not in the positive shares
    signed = -np.ones((10, 10))
    signed[0, 0] = 3.0
    c = quality.concentration(signed)
    assert c["top_1"] == 1.0 and c["gini_abs"] > 0
    assert all(math.isnan(v) for v in quality.concentration(np.zeros((5, 5))).values())


@pytest.mark.parametrize("shape", [(224, 224), (31, 40), (9, 10, 12)])
def test_ssim_is_scikit_images(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=shape)
    b = 0.6 * a + rng.normal(size=shape)
    assert ssim(a, b, data_range=4.0) == pytest.approx(
        metrics_module.structural_similarity(a, b, data_range=4.0), abs=1e-9
    )
    assert ssim(a, a, data_range=1.0) == pytest.approx(1.0)
    assert math.isnan(ssim(np.ones((5, 5)), np.ones((5, 5)), data_range=1.0))  # smaller than the window


def test_map_similarity_is_the_papers_normalisation_with_scikit_image(real_maps):
    a, b = real_maps["occlusion"], real_maps["ig"]
    s = map_similarity(a, b)
    limit_a, limit_b = np.abs(a).max(), np.abs(b).max()
    assert s["ssim"] == pytest.approx(
        metrics_module.structural_similarity(a / limit_a, b / limit_b, data_range=2.0), abs=1e-9
    )
    assert s["ssim_abs"] == pytest.approx(
        metrics_module.structural_similarity(np.abs(a) / limit_a, np.abs(b) / limit_b, data_range=1.0), abs=1e-9
    )
    from scipy.stats import spearmanr

    assert s["spearman"] == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-9)
    assert s["spearman_abs"] == pytest.approx(spearmanr(np.abs(a).ravel(), np.abs(b).ravel())[0], abs=1e-9)
    same = map_similarity(a, a * 7.0)  # any positive scale: the same map
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0)
    assert same["top_iou"] == 1.0


def test_compare_and_check_report_quantus_numbers(tmp_path, real_maps):
    """compare (with a mask) and check write the same numbers as Quantus on the maps they compared."""
    from typer.testing import CliRunner

    from occlude_cli.cli.app import app

    model, image = SAMPLE_MODELS / "efficientnet_lite0.onnx", SAMPLE_IMAGES / "cat.jpg"
    mask = ROOT / "docs" / "examples" / "masks" / "cat.png"
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["compare", str(model), str(image), str(ROOT / "docs/examples/cat.ig.npy"), "--patch", "32"]
        + ["--mask", str(mask), "--fractions", "", "--steps", "4", "-o", str(tmp_path / "c"), "-q"],
    )
    assert done.exit_code == 0, done.output
    document = json.loads((tmp_path / "c" / "cat.compare.json").read_text())
    got = document["quality"]
    assert got["region_pixels"] == int(real_maps["mask"].sum())
    for which, values in (("occlusion", real_maps["occlusion"]), ("other", real_maps["ig"])):
        numbers = got[which]
        assert numbers["relevance_mass_accuracy"] == pytest.approx(
            _quantus(quantus.RelevanceMassAccuracy, values, real_maps["mask"]), abs=TOLERANCE
        )
        assert numbers["sparseness"] == pytest.approx(_quantus(quantus.Sparseness, values), abs=TOLERANCE)
        assert numbers["complexity"] == pytest.approx(_quantus(quantus.Complexity, values), abs=TOLERANCE)
    assert got["other"]["relevance_rank_accuracy"] == pytest.approx(
        _quantus(quantus.RelevanceRankAccuracy, real_maps["ig"], real_maps["mask"]), abs=TOLERANCE
    )
    done = runner.invoke(
        app, ["check", str(model), str(image), "--mask", str(mask), "--patch", "32", "-o", str(tmp_path / "k"), "-q"]
    )
    assert done.exit_code == 0, done.output
    row = json.loads((tmp_path / "k" / "check.json").read_text())["images"][0]
    assert row["relevance_mass_accuracy"] == pytest.approx(
        _quantus(quantus.RelevanceMassAccuracy, real_maps["occlusion"], real_maps["mask"]), abs=TOLERANCE
    )
    assert row["sparseness"] == pytest.approx(got["occlusion"]["sparseness"], abs=1e-12)
    header = (tmp_path / "k" / "check.csv").read_text().splitlines()[0].split(",")
    assert {"relevance_mass_accuracy", "relevance_rank_accuracy", "sparseness", "complexity"} <= set(header)
