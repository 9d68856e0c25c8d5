"""Infidelity, sufficiency, completeness and the batched masked scoring loop, against ground truth.

Ground truth: a linear model f(x) = w.x (run by onnxruntime), whose exact explanation w * (x - baseline)
has infidelity 0 and any other map the value of the obvious slow loop; a model whose score is the mean of
a known box (tests/onnx_models.rectangle_model), where every top-k score is a hand-computable sum; and
Captum's own ``infidelity`` on the same windows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import rectangle_model

from occlude_cli.core.fidelity import (
    bootstrap_mean_ci,
    completeness_curve,
    infidelity,
    infidelity_result,
    pixel_counts,
    score_masked,
    sufficiency_curve,
    top_k_order,
    window_sums,
)
from occlude_cli.errors import OccludeError

C, H, W = 3, 12, 10


def linear_model(path: Path, weights: np.ndarray) -> Path:
    """f(x) = sum(w * x) over (C, H, W): Mul by the weights, Flatten, ReduceSum -> (batch, 1)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *weights.shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["wx"]),
        helper.make_node("Flatten", ["wx"], ["flat"], axis=1),
        helper.make_node("ReduceSum", ["flat", "axis1"], ["y"], keepdims=1),
    ]
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "linear", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def session_score(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def grid(size, patch, stride):
    ys = list(range(0, size[0] - patch[0] + 1, stride[0]))
    xs = list(range(0, size[1] - patch[1] + 1, stride[1]))
    return np.array([(y, x, patch[0], patch[1]) for y in ys for x in xs], dtype=np.int64)


def window_mask(window, size):
    y, x, h, w = window
    mask = np.zeros(size, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


def slow_infidelity(map2d, windows, drops, scale_invariant=False):
    """The obvious loop: every window's map sum pixel by pixel, skipping windows that touch a NaN."""
    explained, measured, skipped = [], [], 0
    for (y, x, h, w), d in zip(windows.tolist(), drops):
        total, touched = 0.0, False
        for i in range(y, y + h):
            for j in range(x, x + w):
                if math.isnan(map2d[i, j]):
                    touched = True
                total += map2d[i, j]
        if touched:
            skipped += 1
            continue
        explained.append(total)
        measured.append(d)
    beta = 1.0
    if scale_invariant:
        beta = sum(a * d for a, d in zip(explained, measured)) / sum(a * a for a in explained)
    return sum((beta * a - d) ** 2 for a, d in zip(explained, measured)) / len(explained), skipped, beta


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(C, H, W))
    image = rng.normal(size=(C, H, W)).astype(np.float32)
    baseline = np.full((C, H, W), 0.25, dtype=np.float32)
    path = linear_model(tmp_path_factory.mktemp("linear") / "linear.onnx", weights)
    windows = np.concatenate([grid((H, W), (3, 4), (2, 2)), grid((H, W), (5, 2), (3, 3))])
    score = session_score(path)
    masks = [window_mask(win, (H, W)) for win in windows]
    drops = score(image[None])[0, 0] - score_masked(image, baseline, masks, score, batch_size=7)[:, 0]
    return weights, image, baseline, windows, drops, score


# ------------------------------------------------------------------------------------- infidelity


def test_exact_linear_explanation_has_zero_infidelity(linear):
    weights, image, baseline, windows, drops, _ = linear
    exact = (weights * (image.astype(np.float64) - baseline)).sum(axis=0)  # (H, W) attribution-style
    scale = float(np.mean(drops**2))
    assert scale > 1.0  # the drops are not trivially small
    # onnxruntime computes in float32: each drop is off by ~1e-6, so the mean square is ~1e-12
    assert infidelity(exact, windows, drops) < 1e-9 * scale
    assert infidelity((weights * (image - baseline)), windows, drops) < 1e-9 * scale  # channels summed
    # gradient-style: the map is w itself and the perturbation input - baseline multiplies it
    assert infidelity(weights, windows, drops, perturbation=image - baseline) < 1e-9 * scale
    assert infidelity(2.5 * exact, windows, drops, scale_invariant=True) < 1e-9 * scale
    result = infidelity_result(2.5 * exact, windows, drops, scale_invariant=True)
    assert result.scale == pytest.approx(1 / 2.5, rel=1e-6)
    assert (result.used, result.skipped) == (len(windows), 0)


def test_exact_in_float64_without_onnx(linear):
    weights, image, baseline, windows, _, _ = linear
    x, b = image.astype(np.float64), baseline.astype(np.float64)
    drops = np.array([(weights * (x - b) * window_mask(win, (H, W))).sum() for win in windows])
    exact = (weights * (x - b)).sum(axis=0)
    assert infidelity(exact, windows, drops) < 1e-24


def test_any_other_map_matches_the_slow_loop(linear):
    weights, image, baseline, windows, drops, _ = linear
    rng = np.random.default_rng(11)
    exact = (weights * (image.astype(np.float64) - baseline)).sum(axis=0)
    maps = (rng.normal(size=(H, W)), exact + rng.normal(scale=0.1, size=(H, W)), np.abs(exact), -exact)
    for other in maps:
        for invariant in (False, True):
            expected, _, beta = slow_infidelity(other, windows, drops, invariant)
            result = infidelity_result(other, windows, drops, scale_invariant=invariant)
            if not (invariant and other is maps[-1]):  # -exact is exact once beta = -1 is fitted
                assert result.value > 1e-4
                assert result.value == pytest.approx(expected, rel=1e-10)
            assert result.scale == pytest.approx(beta, rel=1e-10)
    result = infidelity_result(-exact, windows, drops, scale_invariant=True)
    assert result.value < 1e-9 * float(np.mean(drops**2))
    assert result.scale == pytest.approx(-1.0, rel=1e-6)
    # the null value is an all-zero map's infidelity; value / null = 1 - cos^2 for the scale-invariant variant
    other = maps[0]
    result = infidelity_result(other, windows, drops, scale_invariant=True)
    assert result.null_value == pytest.approx(infidelity(np.zeros((H, W)), windows, drops), rel=1e-12)
    a = np.array([other[y : y + h, x : x + w].sum() for y, x, h, w in windows])
    cos2 = np.dot(a, drops) ** 2 / (np.dot(a, a) * np.dot(drops, drops))
    assert result.unexplained == pytest.approx(1 - cos2, rel=1e-9)


def test_gradient_style_equals_the_attribution_times_perturbation(linear):
    _, image, baseline, windows, drops, _ = linear
    gradient = np.random.default_rng(5).normal(size=(C, H, W))
    delta = image.astype(np.float64) - baseline
    expected, _, _ = slow_infidelity((gradient * delta).sum(axis=0), windows, drops)
    assert infidelity(gradient, windows, drops, perturbation=delta) == pytest.approx(expected, rel=1e-10)
    # one value per pixel, applied to every channel
    g2 = gradient[0]
    expected2, _, _ = slow_infidelity((g2[None] * delta).sum(axis=0), windows, drops)
    assert infidelity(g2, windows, drops, perturbation=delta) == pytest.approx(expected2, rel=1e-10)
    # channels-last layout
    got = infidelity(
        np.moveaxis(gradient, 0, -1), windows, drops, perturbation=np.moveaxis(delta, 0, -1), spatial_axes=(0, 1)
    )
    assert got == pytest.approx(expected, rel=1e-10)


def test_windows_touching_nan_pixels_are_skipped_and_counted(linear):
    _, _, _, windows, drops, _ = linear
    other = np.random.default_rng(2).normal(size=(H, W))
    other[:4, :3] = np.nan  # not computed (outside a region)
    expected, skipped, _ = slow_infidelity(other, windows, drops)
    result = infidelity_result(other, windows, drops)
    assert 0 < skipped < len(windows)
    assert (result.used, result.skipped) == (len(windows) - skipped, skipped)
    assert result.value == pytest.approx(expected, rel=1e-10)
    assert np.isnan(result.explained).sum() == skipped
    d = drops.copy()
    d[0] = np.nan  # a non-finite drop is skipped too (window 0 touches the NaN block already)
    d[-1] = np.inf
    assert infidelity_result(other, windows, d).skipped == skipped + 1
    assert math.isnan(infidelity(np.full((H, W), np.nan), windows, drops))


def test_window_sums_match_a_loop():
    values = np.random.default_rng(0).normal(size=(9, 13))
    windows = np.array([(0, 0, 9, 13), (2, 3, 1, 1), (4, 5, 5, 8), (8, 12, 1, 1), (0, 7, 3, 6)])
    expected = [values[y : y + h, x : x + w].sum() for y, x, h, w in windows]
    np.testing.assert_allclose(window_sums(values, windows), expected, rtol=1e-12)


def test_volumes_three_spatial_axes():
    """A linear model on a (C, D, H, W) volume with (z, y, x, d, h, w) windows: the exact map has infidelity 0,
    another map the slow loop's value, and window sums match the obvious triple loop."""
    rng = np.random.default_rng(6)
    weights, image = rng.normal(size=(2, 5, 6, 7)), rng.normal(size=(2, 5, 6, 7))
    baseline = np.zeros_like(image)
    windows = np.array([(z, y, x, 2, 3, 3) for z in range(0, 4, 2) for y in range(0, 4, 3) for x in range(0, 5, 2)])
    masks = []
    for z, y, x, d, h, w in windows:
        m = np.zeros((5, 6, 7), bool)
        m[z : z + d, y : y + h, x : x + w] = True
        masks.append(m)

    def score(batch):
        return (batch * weights).reshape(len(batch), -1).sum(axis=1, keepdims=True)

    drops = score(image[None])[0, 0] - score_masked(image, baseline, masks, score, spatial_axes=(1, 2, 3))[:, 0]
    exact = (weights * image).sum(axis=0)
    volume = (0, 1, 2)  # a map without channels: all three axes are spatial
    assert infidelity(exact, windows, drops, spatial_axes=volume) < 1e-24
    other = rng.normal(size=(5, 6, 7))
    sums = np.array([other[z : z + d, y : y + h, x : x + w].sum() for z, y, x, d, h, w in windows])
    np.testing.assert_allclose(window_sums(other, windows), sums, rtol=1e-12)
    assert infidelity(other, windows, drops, spatial_axes=volume) == pytest.approx(
        np.mean((sums - drops) ** 2), rel=1e-12
    )
    got = infidelity(weights, windows, drops, perturbation=image - baseline, spatial_axes=(1, 2, 3))
    assert got < 1e-24
    # top-k on a volume: keeping every voxel with a positive weight*input keeps the score at least whole
    curve = sufficiency_curve(image, baseline, exact, score, 0, fractions=(0.5, 1.0), spatial_axes=(1, 2, 3))
    assert curve.pixels.tolist() == [105, 210]
    assert curve.relative[-1] == pytest.approx(1.0)
    assert curve.relative[0] > 1.0  # the top half holds every positive term and drops negative ones


def test_infidelity_rejects_bad_input():
    m = np.zeros((4, 5))
    with pytest.raises(OccludeError, match="windows"):
        infidelity(m, np.array([[0, 0, 5, 1]]), [0.0])  # taller than the map
    with pytest.raises(OccludeError, match="windows"):
        infidelity(m, np.zeros((2, 3), dtype=int), [0.0, 0.0])
    with pytest.raises(OccludeError, match="drops"):
        infidelity(m, np.array([[0, 0, 1, 1]]), [0.0, 1.0])
    with pytest.raises(OccludeError, match="perturbation"):
        infidelity(np.zeros((2, 4, 5)), np.array([[0, 0, 1, 1]]), [0.0], perturbation=np.zeros((3, 4, 5)))
    with pytest.raises(OccludeError, match="spatial_axes"):
        infidelity(m, np.array([[0, 0, 1, 1]]), [0.0], spatial_axes=(0, 0))


# ---------------------------------------------------------------------------- score_masked


def test_score_masked_equals_the_engine_window_loop(linear):
    from occlude_cli.core.engine import score_windows

    _, image, baseline, windows, _, score = linear
    masks = (window_mask(win, (H, W)) for win in windows)  # a generator: consumed lazily
    ours = score_masked(image, baseline, masks, score, batch_size=5)
    engine = score_windows(image, baseline, windows, score, batch_size=5)
    np.testing.assert_array_equal(ours, engine)


def test_score_masked_layouts_float_masks_and_progress():
    image = np.arange(2 * 3 * 4, dtype=np.float64).reshape(3, 4, 2)  # HWC
    baseline = np.full_like(image, -1.0)
    seen = []

    def score(batch):  # (B, 3, 4, 2) -> (B, 24): the flattened pixels, so every value is checked
        return batch.reshape(len(batch), -1)

    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 2] = True
    half = np.full((3, 4), 0.5)
    out = score_masked(
        image,
        baseline,
        [mask, half, ~mask],
        score,
        spatial_axes=(0, 1),
        batch_size=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    expected = np.stack(
        [np.where(mask[..., None], baseline, image), (image + baseline) / 2, np.where(mask[..., None], image, baseline)]
    ).reshape(3, -1)
    np.testing.assert_array_equal(out, expected)
    assert seen == [(2, 3), (3, 3)]


@pytest.mark.parametrize("spatial_axes", [(-2, -1), (0, 1)])
def test_score_masked_matches_a_naive_composite_for_any_mask_sequence(spatial_axes):
    """Rows are rewritten incrementally (only changed pixels) or in full: either way each scored input must
    equal np.where(mask, baseline, image), whatever the previous masks in that row were."""
    rng = np.random.default_rng(4)
    image = rng.normal(size=(2, 6, 7) if spatial_axes == (-2, -1) else (6, 7, 2))
    baseline = rng.normal(size=image.shape)
    state = np.zeros((6, 7), bool)
    masks = [state]
    for step in range(40):
        if step % 11 == 5:
            masks.append(rng.random((6, 7)))  # a float mask: blend
            continue
        state = state.copy()
        if step % 7 == 3:
            state = rng.random((6, 7)) < 0.5  # many pixels change: full rewrite
        else:
            state[rng.integers(6), rng.integers(7)] ^= True  # one pixel changes: incremental
        masks.append(state)
    out = score_masked(image, baseline, masks, lambda b: b.reshape(len(b), -1), spatial_axes=spatial_axes, batch_size=3)
    expected = []
    for m in masks:
        mm = np.expand_dims(m, 0 if spatial_axes == (-2, -1) else -1)
        expected.append((image + mm * (baseline - image)) if m.dtype != bool else np.where(mm, baseline, image))
    np.testing.assert_allclose(out, np.stack(expected).reshape(len(masks), -1), rtol=0, atol=1e-15)


def test_score_masked_rejects_bad_input():
    image = np.zeros((1, 4, 4))

    def ok(batch):
        return np.zeros((len(batch), 2))

    with pytest.raises(OccludeError, match="masks\\[1\\]"):
        score_masked(image, image, [np.zeros((4, 4), bool), np.zeros((4, 3), bool)], ok)
    with pytest.raises(OccludeError, match="nothing to score"):
        score_masked(image, image, [], ok)
    with pytest.raises(OccludeError, match="baseline shape"):
        score_masked(image, np.zeros((1, 4, 5)), [np.zeros((4, 4), bool)], ok)
    with pytest.raises(OccludeError, match="batch_size"):
        score_masked(image, image, [np.zeros((4, 4), bool)], ok, batch_size=0)
    with pytest.raises(OccludeError, match="batch, classes"):
        score_masked(image, image, [np.zeros((4, 4), bool)], lambda b: np.zeros(len(b)))
    with pytest.raises(OccludeError, match="\\[0, 1\\]"):
        score_masked(image, image, [np.full((4, 4), 2.0)], ok)


# ---------------------------------------------------------------- sufficiency and completeness

SIZE = (10, 10)
BOX = (6, 6, 9, 10)  # rows 6..8, columns 6..9: 12 pixels, flat indices 66-69, 76-79, 86-89


@pytest.fixture(scope="module")
def box_model(tmp_path_factory):
    path = rectangle_model(tmp_path_factory.mktemp("box") / "box.onnx", size=SIZE, rect=BOX)
    image = np.zeros((1,) + SIZE, dtype=np.float32)
    image[0] = np.random.default_rng(1).uniform(20, 30, SIZE)  # outside the box: never matters
    image[0, 6:9, 6:10] = np.arange(1, 13).reshape(3, 4)  # 1..12 row-major inside the box
    return session_score(path), image, np.zeros_like(image)


def test_a_map_on_the_box_is_sufficient_and_complete(box_model):
    score, image, baseline = box_model
    on_box = np.zeros(SIZE)
    on_box[6:9, 6:10] = 1.0  # ties inside the box: row-major order keeps pixel values 1, 2, 3, ...
    k = np.array([1, 2, 5, 10, 20, 50])  # 1, 2, 5, 10, 20, 50 % of 100 pixels
    kept = np.minimum(k, 12) * (np.minimum(k, 12) + 1) / 2  # 1 + 2 + ... + k of the box's values
    original = 78 / 12  # mean of 1..12

    suff = sufficiency_curve(image, baseline, on_box, score, 0)
    assert suff.pixels.tolist() == k.tolist()
    np.testing.assert_allclose(suff.scores, kept / 12, rtol=1e-6)
    np.testing.assert_allclose(suff.relative, kept / 78, rtol=1e-6)
    assert suff.relative[-2:].tolist() == pytest.approx([1.0, 1.0])  # 20% and 50% hold the whole box
    assert (suff.original_score, suff.baseline_score) == pytest.approx((original, 0.0))
    assert suff.aopc == pytest.approx(np.mean(original - kept / 12), rel=1e-6)

    comp = completeness_curve(image, baseline, on_box, score, 0)
    np.testing.assert_allclose(comp.scores, (78 - kept) / 12, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(comp.relative, kept / 78, atol=1e-6)  # float32 differences
    assert comp.aopc == pytest.approx(np.mean(kept / 12), rel=1e-6)
    assert comp.mean_relative == pytest.approx(np.mean(kept / 78), rel=1e-6)


def test_a_map_elsewhere_is_neither(box_model):
    score, image, baseline = box_model
    elsewhere = np.zeros(SIZE)
    elsewhere[:2] = 1.0  # rows 0-1; the top 50 pixels are rows 0-4 (ties row-major): none in the box
    suff = sufficiency_curve(image, baseline, elsewhere, score, 0, original_score=6.5)
    assert suff.relative.tolist() == [0.0] * 6
    assert suff.aopc == pytest.approx(6.5)
    comp = completeness_curve(image, baseline, elsewhere, score, 0)
    np.testing.assert_allclose(comp.scores, 6.5, rtol=1e-6)
    assert comp.relative.tolist() == pytest.approx([0.0] * 6, abs=1e-6)
    assert comp.aopc == pytest.approx(0.0, abs=1e-5)


def test_top_k_passes_and_given_scores(box_model):
    score, image, baseline = box_model
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return score(batch)

    on_box = np.zeros(SIZE)
    on_box[6:9, 6:10] = 1.0
    sufficiency_curve(image, baseline, on_box, counting, 0, batch_size=4)
    assert calls == [4, 4]  # original + all-baseline + 6 fractions, batched by 4
    calls.clear()
    curve = completeness_curve(
        image, baseline, on_box, counting, 0, fractions=(0.1, 0.5), original_score=6.5, baseline_score=0.0
    )
    assert calls == [2]  # one pass per k when the reference scores are known
    assert curve.relative.tolist() == pytest.approx([55 / 78, 1.0])


def test_nan_pixels_come_last_and_ties_are_row_major():
    values = np.array([[1.0, np.nan, 3.0], [3.0, -np.inf, 0.5]])
    assert top_k_order(values).tolist() == [2, 3, 0, 5, 1, 4]
    assert pixel_counts(100, (0.01, 0.025, 1.0)).tolist() == [1, 3, 100]  # half rounds up
    assert pixel_counts(10, (0.01,)).tolist() == [1]  # at least one pixel
    with pytest.raises(OccludeError, match="increasing"):
        pixel_counts(100, (0.1, 0.05))
    with pytest.raises(OccludeError, match=r"\(0, 1\]"):
        pixel_counts(100, (0.0, 0.5))


def test_top_k_rejects_bad_input(box_model):
    score, image, baseline = box_model
    with pytest.raises(OccludeError, match="attribution shape"):
        sufficiency_curve(image, baseline, np.zeros((9, 10)), score, 0)
    with pytest.raises(OccludeError, match="target"):
        completeness_curve(image, baseline, np.zeros(SIZE), score, 3)
    with pytest.raises(OccludeError, match="target"):
        completeness_curve(image, baseline, np.zeros(SIZE), score, -1)


def test_undefined_relative_when_the_baseline_scores_like_the_original(box_model):
    score, image, _ = box_model
    curve = sufficiency_curve(image, image.copy(), np.ones(SIZE), score, 0)
    assert np.isnan(curve.relative).all()


# ------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_mean_ci():
    values = np.random.default_rng(0).normal(loc=2.0, scale=1.0, size=400)
    mean, lo, hi = bootstrap_mean_ci(values)
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi
    # the percentile interval is close to the normal one, mean +- 1.96 * sd / sqrt(n)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_mean_ci(values) == (mean, lo, hi)  # seeded
    assert bootstrap_mean_ci(values, seed=1) != (mean, lo, hi)
    assert bootstrap_mean_ci([np.nan, 3.0, np.inf]) == (3.0, 3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([np.nan]))
    with pytest.raises(OccludeError, match="confidence"):
        bootstrap_mean_ci(values, confidence=1.0)
    with pytest.raises(OccludeError, match="n "):
        bootstrap_mean_ci(values, n=0)


# ------------------------------------------------------------------------ Captum as the reference


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_captum_infidelity(linear, normalize):
    """Captum's infidelity with a perturbation function that returns the occluded inputs, window by window,
    gives the same value as ours on the same windows, for attribution-style and gradient-style maps."""
    torch = pytest.importorskip("torch")
    captum_metrics = pytest.importorskip("captum.metrics")

    weights, image, baseline, windows, _, _ = linear
    w = torch.tensor(weights, dtype=torch.float64)

    def forward(x):  # the same linear model, in torch, float64
        return (x * w).flatten(1).sum(dim=1, keepdim=True)

    x = torch.tensor(image, dtype=torch.float64)[None]
    b = torch.tensor(baseline, dtype=torch.float64)[None]
    masks = torch.tensor(np.stack([window_mask(win, (H, W)) for win in windows]))[:, None]  # (N, 1, H, W)

    def occlude(inputs, baselines):  # row i: the input with window i set to the baseline
        assert inputs.shape[0] == len(windows)
        return torch.where(masks, baselines, inputs)

    def score(batch):
        return forward(torch.tensor(batch, dtype=torch.float64)).numpy()

    drops = (
        forward(x).numpy()[0, 0]
        - score_masked(image.astype(np.float64), baseline.astype(np.float64), list(masks[:, 0].numpy()), score)[:, 0]
    )
    rng = np.random.default_rng(8)
    for multiply_by_inputs in (True, False):
        attribution = rng.normal(size=(C, H, W))
        perturb = captum_metrics.infidelity_perturb_func_decorator(multiply_by_inputs)(occlude)
        theirs = captum_metrics.infidelity(
            forward,
            perturb,
            x,
            torch.tensor(attribution)[None],
            baselines=b,
            target=0,
            n_perturb_samples=len(windows),
            normalize=normalize,
        ).item()
        delta = None if multiply_by_inputs else image.astype(np.float64) - baseline
        ours = infidelity(attribution, windows, drops, perturbation=delta, scale_invariant=normalize)
        assert ours > 1e-3
        assert ours == pytest.approx(theirs, rel=1e-9)
