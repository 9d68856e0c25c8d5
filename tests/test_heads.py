"""Any ONNX classifier (issue 9): binary and multi-label heads, head shapes, uint8 inputs, RGB-order means for
BGR models. Every map is compared element-wise with an obvious loop over the windows that computes the
model by hand (a linear layer in float64) and the score the head calls for."""

import json

import numpy as np
import pytest
from onnx import TensorProto
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import OccludeError, explain
from occlude_cli.cli import app
from onnx_models import linear_head_model

RNG = np.random.default_rng(11)
SIZE = 8
PATCH, STRIDE = 3, 2


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def windows(side=SIZE, patch=PATCH, stride=STRIDE):
    starts = list(range(0, side - patch + 1, stride))
    if starts[-1] + patch < side:
        starts.append(side - patch)
    return [(y, x) for y in starts for x in starts]


def naive_map(x, baseline, score, target):
    """x, baseline: (C, H, W) float64 model inputs; score: (C, H, W) -> (K,) scores."""
    original = score(x)[target]
    total = np.zeros(x.shape[1:])
    count = np.zeros(x.shape[1:])
    for y, xx in windows():
        occluded = x.copy()
        occluded[:, y : y + PATCH, xx : xx + PATCH] = baseline[:, y : y + PATCH, xx : xx + PATCH]
        total[y : y + PATCH, xx : xx + PATCH] += original - score(occluded)[target]
        count[y : y + PATCH, xx : xx + PATCH] += 1
    return total / count


@pytest.fixture
def rgb_image(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "RGB").save(path)
    return path


def linear(weights, bias):
    return lambda v: weights.reshape(len(weights), -1).astype(np.float64) @ v.reshape(-1) + bias


def make(tmp_path, name, k, **kwargs):
    weights = RNG.normal(size=(k, 3, SIZE, SIZE)).astype(np.float32) * 0.5
    bias = RNG.normal(size=k).astype(np.float32)
    return linear_head_model(tmp_path / name, weights, bias, **kwargs), weights, bias


def pixels_of(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).transpose(2, 0, 1)  # (3, H, W) RGB


@pytest.mark.parametrize("out_shape", ["NC", "N"])
def test_one_logit_binary_head_is_explained_as_its_sigmoid(tmp_path, rgb_image, out_shape):
    model, w, b = make(tmp_path, f"binary_{out_shape}.onnx", 1, out_shape=out_shape)
    e = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE)
    x = pixels_of(rgb_image) / 255.0
    expected = naive_map(x, np.zeros_like(x), lambda v: sigmoid(linear(w, b)(v)), 0)
    assert e.score_kind == "sigmoid" and e.head.requested == "auto" and e.target == 0
    np.testing.assert_allclose(e.map, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(e.map).max() > 1e-4  # never the all-zero map of a softmax over one value


def test_binary_head_ending_in_sigmoid_is_not_sigmoided_twice(tmp_path, rgb_image):
    model, w, b = make(tmp_path, "binary_sigmoid.onnx", 1, head="sigmoid")
    e = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE)
    x = pixels_of(rgb_image) / 255.0
    expected = naive_map(x, np.zeros_like(x), lambda v: sigmoid(linear(w, b)(v)), 0)
    assert e.score_kind == "independent"
    np.testing.assert_allclose(e.map, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(OccludeError, match="ends in Sigmoid"):
        explain(str(model), rgb_image, patch=PATCH, stride=STRIDE, score="sigmoid")


def test_multi_label_sigmoid_explains_each_label_on_its_own(tmp_path, rgb_image):
    model, w, b = make(tmp_path, "multilabel.onnx", 5, head="sigmoid", out_shape="NC11")
    e = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE, top_k=5)
    x = pixels_of(rgb_image) / 255.0
    probs = sigmoid(linear(w, b)(x))
    assert e.score_kind == "independent" and not np.isclose(probs.sum(), 1.0)
    for i, label in enumerate(e.targets):
        expected = naive_map(x, np.zeros_like(x), lambda v: sigmoid(linear(w, b)(v)), label)
        np.testing.assert_allclose(e.maps[i], expected, rtol=1e-4, atol=1e-6)
    # a softmax across labels would explain another quantity: the maps differ
    wrong = naive_map(x, np.zeros_like(x), lambda v: softmax(linear(w, b)(v)), e.target)
    assert not np.allclose(e.map, wrong, atol=1e-4)


def test_softmax_of_logits_and_raw_logit(tmp_path, rgb_image):
    model, w, b = make(tmp_path, "logits.onnx", 4)
    x = pixels_of(rgb_image) / 255.0
    e = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE)
    assert e.score_kind == "softmax"
    np.testing.assert_allclose(
        e.map, naive_map(x, np.zeros_like(x), lambda v: softmax(linear(w, b)(v)), e.target), rtol=1e-4, atol=1e-6
    )
    raw = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE, score="logit", target=2)
    np.testing.assert_allclose(raw.map, naive_map(x, np.zeros_like(x), linear(w, b), 2), rtol=1e-4, atol=1e-5)


def test_logit_of_a_softmax_model_is_a_flag_error_before_any_image(tmp_path, rgb_image):
    model, _, _ = make(tmp_path, "softmax.onnx", 3, head="softmax")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(model), str(rgb_image), "--score", "logit", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "logits are not available" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # known before any image ran: nothing written


def test_uint8_nhwc_input_gets_the_pixels_as_they_are(tmp_path, rgb_image):
    weights = RNG.normal(size=(3, 3, SIZE, SIZE)).astype(np.float32) * 0.01
    bias = np.zeros(3, np.float32)
    model = linear_head_model(tmp_path / "uint8.onnx", weights, bias, layout="NHWC", input_type=TensorProto.UINT8)
    e = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE, score="logit", target=1)
    x = pixels_of(rgb_image)  # raw 0..255, no normalisation
    assert e.image.model_input.dtype == np.uint8
    np.testing.assert_array_equal(e.image.model_input, x.transpose(1, 2, 0).astype(np.uint8))
    # baseline zero is pixel 0
    np.testing.assert_allclose(e.map, naive_map(x, np.zeros_like(x), linear(weights, bias), 1), rtol=1e-4, atol=1e-3)
    grey = explain(str(model), rgb_image, patch=PATCH, stride=STRIDE, score="logit", target=1, baseline="gray")
    fill = np.full_like(x, 128.0)  # 127.5 rounded for an integer input
    np.testing.assert_allclose(grey.map, naive_map(x, fill, linear(weights, bias), 1), rtol=1e-4, atol=1e-3)


def test_mean_and_std_are_rgb_order_for_a_bgr_model(tmp_path, rgb_image):
    model, w, b = make(tmp_path, "caffe.onnx", 4)
    out = tmp_path / "out"
    args = [
        "run",
        str(model),
        str(rgb_image),
        "--bgr",
        "--scale",
        "1",
        "--mean",
        "10,20,30",
        "--std",
        "2,4,8",
        "--score",
        "logit",
        "--target",
        "1",
        "--patch",
        str(PATCH),
        "--stride",
        str(STRIDE),
        "--out",
        str(out),
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rgb = pixels_of(rgb_image)
    bgr = rgb[::-1]
    # the README's R,G,B means: R's mean 10 goes with the red channel, which a BGR model takes last
    x = (bgr - np.array([30.0, 20.0, 10.0])[:, None, None]) / np.array([8.0, 4.0, 2.0])[:, None, None]
    expected = naive_map(x, np.zeros_like(x), linear(w, b), 1)
    np.testing.assert_allclose(np.load(out / "rgb.npy"), expected, rtol=1e-4, atol=1e-4)
    record = json.loads((out / "rgb.json").read_text())
    assert record["params"]["preprocessing"]["mean"] == [10.0, 20.0, 30.0]  # recorded in RGB order
    # and --baseline R,G,B agrees with --mean: a baseline equal to the mean is zero in model space
    same = CliRunner().invoke(app, args[:-3] + ["--baseline", "10,20,30", "--out", str(tmp_path / "b"), "--quiet"])
    assert same.exit_code == 0, same.output
    np.testing.assert_allclose(np.load(tmp_path / "b" / "rgb.npy"), expected, rtol=1e-4, atol=1e-4)


def test_constant_model_gives_a_warning_not_a_silent_zero_map(tmp_path, rgb_image):
    weights = np.zeros((3, 3, SIZE, SIZE), np.float32)
    model = linear_head_model(tmp_path / "constant.onnx", weights, np.array([1.0, 2.0, 3.0], np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(model), str(rgb_image), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "identically zero" in result.stderr
    record = json.loads((out / "rgb.json").read_text())
    assert any("identically zero" in w for w in record["warnings"])
    summary = json.loads((out / "summary.json").read_text())
    assert "identically zero" in summary["images"][0]["warning"]


def test_non_image_model_says_so_first(tmp_path, rgb_image):
    from onnx import helper

    from onnx_models import _save

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    model = _save(
        helper.make_graph([helper.make_node("Relu", ["features"], ["y"])], "flat", [x], [y]), tmp_path / "flat.onnx"
    )
    result = CliRunner().invoke(app, ["run", str(model), str(rgb_image), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "image classifiers" in result.stderr and "4-D image input" in result.stderr
    assert "--output" not in result.stderr


@pytest.mark.parametrize(
    "head, flags, cause, remedy, refused_remedy",
    [
        # 5 logits, class 0 ahead by 100: softmax is 1.0 in float64 whatever a window does to the logits
        ("none", [], "softmax probability is saturated at 1", "explain the logits instead (score logit:", False),
        # the same model ending in Softmax: it has no logits to explain, and score logit is refused
        ("softmax", [], "probability (the model's own output) is saturated at 1", "without its final Softmax", True),
        # ending in Sigmoid (independent probabilities)
        ("sigmoid", [], "probability (the model's own sigmoid output) is saturated at 1", "final Sigmoid", True),
    ],
)
def test_an_all_zero_map_names_its_true_cause_per_head_kind(
    tmp_path, rgb_image, head, flags, cause, remedy, refused_remedy
):
    """A saturated 5-class head used to get "a softmax over one output is always 1: use score auto or sigmoid",
    which is not the cause. Each head kind gets the cause (saturation at 1.0) and a remedy that works for it."""
    rng = np.random.default_rng(5)
    weights = (rng.random((5, 3, SIZE, SIZE)) * 0.01).astype(np.float32)  # a window moves a logit by < 0.2
    bias = np.array([100.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    model = linear_head_model(tmp_path / "sat.onnx", weights, bias, head=head)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(model), str(rgb_image), "--out", str(out), *flags])
    assert result.exit_code == 0, result.output
    (warning,) = json.loads((out / "rgb.json").read_text())["warnings"]
    assert warning.startswith("the map is identically zero") and cause in warning and remedy in warning, warning
    assert "a softmax over one output" not in result.stderr
    logit = CliRunner().invoke(
        app, ["run", str(model), str(rgb_image), "--out", str(tmp_path / "l"), "--score", "logit"]
    )
    if refused_remedy:  # the warning does not send the user to a flag that is refused
        assert logit.exit_code == 1 and "logits are not available" in logit.stderr
    else:  # the remedy gives a readable map
        assert logit.exit_code == 0 and np.abs(np.load(tmp_path / "l" / "rgb.npy")).max() > 1e-3


def test_an_unresponsive_logit_map_does_not_suggest_other_scores(tmp_path, rgb_image):
    """A model that ignores its input, explained as its logit: the cause is the model, not the score kind."""
    weights = np.zeros((3, 3, SIZE, SIZE), np.float32)
    model = linear_head_model(tmp_path / "constant.onnx", weights, np.array([1.0, 2.0, 3.0], np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(model), str(rgb_image), "--out", str(out), "--score", "logit"])
    assert result.exit_code == 0, result.output
    (warning,) = json.loads((out / "rgb.json").read_text())["warnings"]
    assert "leaves the target's logit unchanged" in warning and "does not respond" in warning
    assert "score logit" not in warning and "score raw" not in warning
