"""The engine against ground truth: a hand-built model with a known answer, and a slow obvious loop."""

import numpy as np
import pytest

from occlude_cli import OccludeError, OnnxClassifier, explain, occlusion_sensitivity, window_grid
from occlude_cli.core.engine import accumulate_windows, window_starts
from occlude_cli.core.refine import refine_forward_passes, refined_occlusion_sensitivity
from onnx_models import rectangle_model

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS


def naive_map(inputs, baseline, score, patch, stride, target):
    """One window at a time, then per pixel the mean drop of every window covering it: obviously right."""
    c, height, width = inputs.shape
    original = score(inputs[None])[0, target]
    drops = {}
    ys = list(range(0, height - patch[0] + 1, stride[0]))
    xs = list(range(0, width - patch[1] + 1, stride[1]))
    if ys[-1] + patch[0] < height:
        ys.append(height - patch[0])
    if xs[-1] + patch[1] < width:
        xs.append(width - patch[1])
    for y in ys:
        for x in xs:
            occluded = inputs.copy()
            occluded[:, y : y + patch[0], x : x + patch[1]] = baseline[:, y : y + patch[0], x : x + patch[1]]
            drops[(y, x)] = original - score(occluded[None])[0, target]
    result = np.zeros((height, width))
    for py in range(height):
        for px in range(width):
            covering = [d for (y, x), d in drops.items() if y <= py < y + patch[0] and x <= px < x + patch[1]]
            result[py, px] = sum(covering) / len(covering)
    return result


def linear_softmax_scorer(seed=0, shape=(3, 11, 13), classes=5):
    weights = np.random.default_rng(seed).normal(size=(classes, int(np.prod(shape))))

    def score(batch):
        logits = batch.reshape(len(batch), -1) @ weights.T
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return score


@pytest.mark.parametrize(
    "length,patch,stride,expected",
    [
        (10, 4, 3, [0, 3, 6]),
        (11, 4, 3, [0, 3, 6, 7]),
        (8, 8, 4, [0]),
        (5, 2, 2, [0, 2, 3]),
        (6, 2, 2, [0, 2, 4]),
        (7, 3, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_window_starts_cover_the_last_strip(length, patch, stride, expected):
    assert window_starts(length, patch, stride).tolist() == expected


def test_window_grid_covers_every_pixel_once_or_more():
    windows = window_grid((23, 17), (5, 4), (3, 3))
    count = accumulate_windows(windows, np.ones((len(windows), 1)), (23, 17))[0]
    assert count.min() >= 1
    # brute-force count
    brute = np.zeros((23, 17))
    for y, x, h, w in windows:
        brute[y : y + h, x : x + w] += 1
    np.testing.assert_array_equal(count, brute)


@pytest.mark.parametrize("patch,stride", [((3, 3), (2, 2)), ((4, 5), (3, 4)), ((11, 3), (1, 3)), ((1, 1), (1, 1))])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batched_engine_equals_naive_loop(patch, stride, batch_size):
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(3, 11, 13))
    baseline = rng.normal(size=(3, 11, 13))
    score = linear_softmax_scorer()
    occ = occlusion_sensitivity(inputs, score, patch=patch, stride=stride, baseline=baseline, batch_size=batch_size)
    for target in range(5):
        expected = naive_map(inputs, baseline, score, patch, stride, target)
        np.testing.assert_allclose(occ.attribution(target), expected, rtol=0, atol=1e-12)


def test_engine_equals_naive_loop_on_a_real_onnx_model():
    model = OnnxClassifier(SAMPLE_MODELS / "digits_cnn.onnx", device="cpu")
    result = explain(model, SAMPLE_IMAGES / "digit_3.png", patch=2, stride=1, batch_size=16, baseline="gray")
    inputs = result.image.model_input
    from occlude_cli.core.baselines import make_baseline

    baseline = make_baseline("gray", result.image.pixels, result.image.preprocessing)
    score = model.scorer("prob", False)
    expected = naive_map(inputs, baseline, score, (2, 2), (1, 1), result.target)
    np.testing.assert_allclose(result.map, expected, rtol=0, atol=1e-6)
    assert result.occlusion.forward_passes == 49 + 1


def test_rectangle_model_map_is_known_exactly(tmp_path, gray_image):
    rect = (4, 6, 9, 12)  # y0, x0, y1, x1: 5 x 6 = 30 pixels
    model = rectangle_model(tmp_path / "rect.onnx", rect=rect)
    result = explain(model, gray_image, patch=4, stride=2, score="logit", target=0)
    assert result.occlusion.original_scores[0] == pytest.approx(1.0)
    # By hand: pixel (6, 8) is covered by windows at (4,6), (4,8), (6,6), (6,8), which overlap the
    # rectangle in 16, 16, 12 and 12 pixels: (16 + 16 + 12 + 12) / 4 / 30.
    assert result.map[6, 8] == pytest.approx(14 / 30, abs=1e-6)
    # Non-zero exactly on pixels with a covering window that overlaps the rectangle.
    y0, x0, y1, x1 = rect
    expected_nonzero = np.zeros((16, 16), bool)
    for y, x, h, w in result.occlusion.windows:
        if y < y1 and y + h > y0 and x < x1 and x + w > x0:
            expected_nonzero[y : y + h, x : x + w] = True
    np.testing.assert_array_equal(result.map > 1e-9, expected_nonzero)
    assert np.all(result.map >= -1e-9)
    # Every value by formula: mean over covering windows of |window & rect| / |rect|.
    for py, px in [(0, 0), (2, 4), (8, 11), (11, 13), (15, 15), (5, 5)]:
        overlaps = []
        for y, x, h, w in result.occlusion.windows:
            if y <= py < y + h and x <= px < x + w:
                oy = max(0, min(y + h, y1) - max(y, y0))
                ox = max(0, min(x + w, x1) - max(x, x0))
                overlaps.append(oy * ox / 30)
        assert result.map[py, px] == pytest.approx(np.mean(overlaps), abs=1e-6)


def test_signed_map_keeps_negative_values(tmp_path, gray_image):
    model = rectangle_model(tmp_path / "rect.onnx")
    result = explain(model, gray_image, patch=4, stride=2, score="logit", target=2)  # class 2 = -mean
    assert result.map[6, 8] == pytest.approx(-14 / 30, abs=1e-6)
    assert result.map.max() <= 1e-9
    np.testing.assert_allclose(
        result.map, -explain(model, gray_image, patch=4, stride=2, score="logit", target=0).map, atol=1e-6
    )


def test_all_class_maps_match_single_maps_and_top_class_map():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(3, 11, 13))
    occ = occlusion_sensitivity(inputs, linear_softmax_scorer(), patch=(4, 4), stride=(2, 3))
    every = occ.attributions()
    assert every.shape == (5, 11, 13)
    for c in range(5):
        np.testing.assert_allclose(every[c], occ.attribution(c), atol=1e-12)
    top = occ.top_class_map()
    assert top.shape == (11, 13) and top.min() >= 0 and top.max() < 5
    # pixel (0, 0) is covered only by the window at (0, 0)
    assert top[0, 0] == int(np.argmax(occ.window_scores[0]))


def test_region_restricts_windows_and_marks_the_rest_not_computed():
    inputs = np.ones((1, 12, 12))
    occ = occlusion_sensitivity(
        inputs, linear_softmax_scorer(shape=(1, 12, 12)), patch=(2, 2), stride=(2, 2), region=(2, 4, 6, 10)
    )
    values = occ.attribution(0)
    assert np.isnan(values[:2]).all() and np.isnan(values[:, :4]).all() and np.isnan(values[6:]).all()
    assert np.isfinite(values[2:6, 4:10]).all()
    assert len(occ.windows) == 2 * 3


def test_engine_rejects_bad_geometry():
    inputs = np.zeros((1, 8, 8))
    score = linear_softmax_scorer(shape=(1, 8, 8))
    with pytest.raises(OccludeError, match="larger"):
        occlusion_sensitivity(inputs, score, patch=(9, 9))
    with pytest.raises(OccludeError, match="stride"):
        occlusion_sensitivity(inputs, score, patch=(2, 2), stride=(0, 1))
    with pytest.raises(OccludeError, match="never be occluded"):
        occlusion_sensitivity(inputs, score, patch=(2, 2), stride=(3, 1))
    with pytest.raises(OccludeError, match="baseline shape"):
        occlusion_sensitivity(inputs, score, patch=(2, 2), baseline=np.zeros((1, 4, 4)))
    with pytest.raises(OccludeError, match=r"\(batch, classes\)"):
        occlusion_sensitivity(inputs, lambda b: np.zeros(len(b)), patch=(2, 2))


def test_channels_last_inputs_use_the_given_spatial_axes():
    rng = np.random.default_rng(5)
    chw = rng.normal(size=(3, 11, 13))
    score = linear_softmax_scorer()
    hwc_score = lambda batch: score(np.transpose(batch, (0, 3, 1, 2)))  # noqa: E731
    a = occlusion_sensitivity(chw, score, patch=(3, 4), stride=(2, 2))
    b = occlusion_sensitivity(np.transpose(chw, (1, 2, 0)), hwc_score, patch=(3, 4), stride=(2, 2), spatial_axes=(0, 1))
    np.testing.assert_allclose(a.attributions(), b.attributions(), atol=1e-12)


def test_refine_with_full_budget_equals_the_exact_map():
    rng = np.random.default_rng(11)
    inputs = rng.normal(size=(3, 11, 13))
    score = linear_softmax_scorer()
    exact = occlusion_sensitivity(inputs, score, patch=(4, 4), stride=(1, 1))
    refined = refined_occlusion_sensitivity(inputs, score, patch=(4, 4), stride=(1, 1), budget=1.0, coarse_step=3)
    assert refined.measured.all() and refined.forward_passes == exact.forward_passes
    np.testing.assert_allclose(refined.attributions(), exact.attributions(), atol=1e-12)


def test_refine_spends_its_budget_and_interpolates_the_rest():
    inputs = np.ones((1, 40, 40))
    # a window's drop is the sum of the weights it covers: linear in its position, so interpolation is exact
    weights = np.linspace(0, 1, 1600).reshape(1, -1)

    def score(batch):
        value = batch.reshape(len(batch), -1) @ weights.T
        return np.concatenate([value, -value], axis=1)

    exact = occlusion_sensitivity(inputs, score, patch=(12, 12), stride=(2, 2))
    refined = refined_occlusion_sensitivity(inputs, score, patch=(12, 12), stride=(2, 2), budget=0.25, target=0)
    assert refined.forward_passes <= 0.25 * exact.forward_passes
    assert refined.forward_passes == refine_forward_passes((40, 40), (12, 12), (2, 2), None, 3, 0.25)
    assert 0 < refined.measured.sum() < len(refined.windows)
    assert np.array_equal(refined.windows, exact.windows)
    measured = refined.measured
    np.testing.assert_allclose(refined.window_scores[measured], exact.window_scores[measured], atol=1e-12)
    np.testing.assert_allclose(refined.window_scores, exact.window_scores, atol=1e-9)
    np.testing.assert_allclose(refined.attribution(0), exact.attribution(0), atol=1e-9)


def test_refine_rejects_bad_parameters():
    inputs = np.zeros((1, 8, 8))
    score = linear_softmax_scorer(shape=(1, 8, 8))
    with pytest.raises(OccludeError, match="budget"):
        refined_occlusion_sensitivity(inputs, score, patch=(2, 2), budget=0)
    with pytest.raises(OccludeError, match="step"):
        refined_occlusion_sensitivity(inputs, score, patch=(2, 2), coarse_step=0)
