"""Issue 13 ground truth: occlusion inside the model (layers), across a dataset (bias) and under noise
(stability), on hand-built ONNX models whose answers are computed by hand, plus the sample models."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.analyses.bias import bias_image, control_masks, summarise_bias
from occlude_cli.cli import app
from occlude_cli.core.metrics import spearman, top_fraction_iou
from occlude_cli.errors import OccludeError
from occlude_cli.analyses.layers import (
    aggregate_channels,
    channel_importance,
    dataset_channel_means,
    open_layer,
    spatial_occlusion,
)
from occlude_cli.loaders.model import OnnxClassifier
from occlude_cli.analyses.stability import noise_pixels, stability
from graph_models import residual_cnn, save

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
EFFNET = str(SAMPLE_MODELS / "efficientnet_lite0.onnx")
runner = CliRunner()


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _save(nodes, inits, in_shape, out_shape, path: Path) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _grey(path: Path, pixels) -> Path:
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), "L").save(path)
    return path


# ----------------------------------------------------------------------------- one channel carries the class

CONV_W = np.array([1.0, -1.0, 2.0, 0.5])  # 1x1 conv: channel k = CONV_W[k] * x + CONV_B[k]
CONV_B = np.array([0.0, 0.2, -0.5, 0.0])
A = 4.0  # class 1 logit = A * mean(relu(channel 2)); class 0 reads channels 0, 1, 3 only
FC_W = np.array([[0.3, 0.2, 0.0, 0.1], [0.0, 0.0, A, 0.0]])


def channel_model(path: Path) -> Path:
    """input (N,1,4,4) -> Conv 1x1 (4 channels) -> Relu ('act', the cut) -> GlobalAveragePool -> Flatten ->
    Gemm -> logits (N,2). Only channel 2 reaches class 1."""
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["feat"]),
        helper.make_node("Relu", ["feat"], ["act"]),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1),
    ]
    inits = {"cw": CONV_W.reshape(4, 1, 1, 1), "cb": CONV_B, "fw": FC_W, "fb": [0.0, 0.0]}
    return _save(nodes, inits, [1, 4, 4], [2], path)


PIXELS = np.array([[0, 51, 102, 153], [204, 255, 255, 204], [153, 102, 51, 0], [255, 255, 204, 153]])


def _act(pixels) -> np.ndarray:
    x = np.asarray(pixels, dtype=np.float64) / 255.0
    return np.maximum(CONV_W[:, None, None] * x[None] + CONV_B[:, None, None], 0.0)  # (4, 4, 4)


def test_one_channel_carries_the_class(tmp_path):
    model = OnnxClassifier(channel_model(tmp_path / "channel.onnx"))
    image = _grey(tmp_path / "img.png", PIXELS)
    layer = open_layer(model, "act")
    assert layer.feature_shape == (4, 4, 4) and layer.channels == 4 and layer.spatial_axes == (1, 2)
    result, _, features = channel_importance(layer, image, target=1, score="raw")
    act = _act(PIXELS)
    np.testing.assert_allclose(features, act, atol=1e-6)
    want = np.array([0.0, 0.0, A * act[2].mean(), 0.0])  # zeroing channel 2 removes all of class 1's logit
    np.testing.assert_allclose(result.drops, want, atol=1e-5)
    assert result.drops[2] > 1.0 and result.ranking()[0] == 2
    logit0 = FC_W[0] @ act.mean(axis=(1, 2))
    assert A * act[2].mean() > logit0  # class 1 predicted; without channel 2 class 0 wins
    assert result.flips.tolist() == [False, False, True, False]
    assert result.suffix_passes == 5
    # mean replacement: the suffix after the cut is linear in the spatial mean, so no channel matters
    mean_result, _, _ = channel_importance(layer, image, target=1, score="raw", replacement="mean")
    np.testing.assert_allclose(mean_result.drops, 0.0, atol=1e-5)
    # dataset replacement: channel 2 becomes its mean over both images
    other = _grey(tmp_path / "other.png", 255 - PIXELS)
    means = dataset_channel_means(layer, [image, other])
    np.testing.assert_allclose(means, (act.mean(axis=(1, 2)) + _act(255 - PIXELS).mean(axis=(1, 2))) / 2, atol=1e-6)
    ds, _, _ = channel_importance(layer, image, target=1, score="raw", replacement="dataset", dataset_mean=means)
    np.testing.assert_allclose(ds.drops, [0, 0, A * (act[2].mean() - means[2]), 0], atol=1e-5)
    # target 0 reads channels 0, 1 and 3 with weights 0.3, 0.2, 0.1
    zero0, _, _ = channel_importance(layer, image, target=0, score="raw", channels=[3, 0])
    np.testing.assert_allclose(zero0.drops, [0.1 * act[3].mean(), 0.3 * act[0].mean()], atol=1e-5)


def test_spatial_windows_on_the_feature_map(tmp_path):
    model = OnnxClassifier(channel_model(tmp_path / "channel.onnx"))
    image = _grey(tmp_path / "img.png", PIXELS)
    layer = open_layer(model, "act")
    result, _ = spatial_occlusion(layer, image, target=1, score="raw", patch=1)
    act = _act(PIXELS)
    np.testing.assert_allclose(result.map, A * act[2] / 16, atol=1e-6)  # one cell zeroed in every channel
    assert result.occlusion.forward_passes == 17
    # 2x2 windows, stride 1: each cell's value is the mean over its covering windows of their drops
    two, _ = spatial_occlusion(layer, image, target=1, score="raw", patch=2, stride=1)
    want = np.zeros((4, 4))
    count = np.zeros((4, 4))
    for y in range(3):
        for x in range(3):
            want[y : y + 2, x : x + 2] += A * act[2, y : y + 2, x : x + 2].sum() / 16
            count[y : y + 2, x : x + 2] += 1
    np.testing.assert_allclose(two.map, want / count, atol=1e-6)


def test_layers_spatial_stride_is_in_feature_cells_and_checked_before_any_image(tmp_path):
    """``layers --spatial --stride`` was checked against the *input's* default patch (digits_cnn: 1 pixel),
    so ``--patch 4 --stride 2`` was refused ('stride height 2 is larger than the patch height 1'); a feature
    patch larger than the grid or a stride above it failed per image (exit 3) in pixel words. Now: the map of
    4x4 windows every 2 cells equals a slow loop through onnx.utils' own prefix and suffix, and the bad
    geometries are one error line before any image (exit 1), in feature cells."""
    import onnx.utils

    out = tmp_path / "out"
    done = occlude(
        "layers", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--layer", "relu_1", "--spatial", "--patch", "4",
        "--stride", "2", "--score", "logit", "-o", out, "-q",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    document = json.loads((out / "digit_3.spatial.json").read_text())
    assert document["stride"] == [2, 2] and document["forward_passes"] == 10
    proto = onnx.load(DIGITS)
    prefix = onnx.utils.Extractor(proto).extract_model(["input"], ["relu_1"])
    suffix = onnx.utils.Extractor(proto).extract_model(["relu_1"], ["logits"])
    pre = ort.InferenceSession(prefix.SerializeToString(), providers=["CPUExecutionProvider"])
    suf = ort.InferenceSession(suffix.SerializeToString(), providers=["CPUExecutionProvider"])
    layer = open_layer(OnnxClassifier(DIGITS), "relu_1")
    _, prepared, _ = channel_importance(layer, SAMPLE_IMAGES / "digit_3.png", score="logit", channels=[0])
    features = pre.run(None, {"input": prepared.model_input[None]})[0]
    clean = suf.run(None, {"relu_1": features})[0][0, 3]
    total, count = np.zeros((8, 8)), np.zeros((8, 8))
    for y in (0, 2, 4):
        for x in (0, 2, 4):
            changed = features.copy()
            changed[0, :, y : y + 4, x : x + 4] = 0.0
            total[y : y + 4, x : x + 4] += clean - suf.run(None, {"relu_1": changed})[0][0, 3]
            count[y : y + 4, x : x + 4] += 1
    np.testing.assert_allclose(np.load(out / "digit_3.spatial.npy"), total / count, rtol=1e-5, atol=1e-5)
    for flags, message in (
        (["--patch", "2", "--stride", "3"], "--stride 3 is larger than the patch 2: some feature cells"),
        (["--patch", "9"], "--patch 9 is larger than the feature grid of 'relu_1' (8x8 cells)"),
    ):
        bad = occlude("layers", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-l", "relu_1", "--spatial", *flags, "-o", out)
        assert bad.exit_code == 1 and message in bad.output and bad.output.count("error:") == 1, bad.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "5"], "--seed seeds the noise baseline, which occlude layers does not use"),
        (["--incremental", "on"], "--incremental on speeds up windows of the input"),
    ],
)
def test_layers_refuses_flags_it_would_ignore(tmp_path, flags, message):
    """--seed and --incremental on were accepted by layers and did nothing (exit 0); its --help no longer
    lists them (nor the pixel baselines it refuses), and the refusal still names them."""
    done = occlude("layers", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-l", "relu_1", *flags, "-o", tmp_path)
    assert done.exit_code == 1 and message in done.output and done.output.count("error:") == 1, done.output
    assert not any(tmp_path.iterdir())
    shown = occlude("layers", "--help").output
    assert flags[0] not in shown and "--baseline" not in shown and "--blur-sigma" not in shown
    assert "--replace" in shown and "--target" in shown


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stride", "3"], "--stride: occlude bias occludes the region and its controls whole, not windows"),
        (["--incremental", "on"], "--incremental on speeds up windows; occlude bias occludes the region"),
    ],
)
def test_bias_refuses_window_flags_it_would_ignore(tmp_path, flags, message):
    """bias has no windows: --stride was checked against the default patch ('larger than the patch height 1'
    on digits_cnn) or ignored on a larger model, and --incremental on did nothing."""
    for model in (DIGITS, SAMPLE_MODELS / "efficientnet_lite0.onnx"):
        done = occlude("bias", model, SAMPLE_IMAGES / "digit_3.png", "--box", "0,0,10,10", *flags, "-o", tmp_path)
        assert done.exit_code == 1 and message in done.output and done.output.count("error:") == 1, done.output
    shown = occlude("bias", "--help").output
    assert flags[0] not in shown and "--baseline" in shown


def test_channel_importance_matches_a_slow_independent_loop():
    """digits_cnn cut at relu_1 by onnx.utils's own extractor, every channel zeroed one at a time by hand."""
    import onnx.utils

    model = OnnxClassifier(DIGITS)
    layer = open_layer(model, "relu_1")
    result, prepared, _ = channel_importance(layer, SAMPLE_IMAGES / "digit_3.png", score="logit", batch_size=5)
    proto = onnx.load(DIGITS)
    prefix = onnx.utils.Extractor(proto).extract_model(["input"], ["relu_1"])
    suffix = onnx.utils.Extractor(proto).extract_model(["relu_1"], ["logits"])
    pre = ort.InferenceSession(prefix.SerializeToString(), providers=["CPUExecutionProvider"])
    suf = ort.InferenceSession(suffix.SerializeToString(), providers=["CPUExecutionProvider"])
    features = pre.run(None, {"input": prepared.model_input[None]})[0]
    clean = suf.run(None, {"relu_1": features})[0][0]
    assert result.target == 3 == int(np.argmax(clean))
    want = []
    for channel in range(features.shape[1]):
        changed = features.copy()
        changed[0, channel] = 0.0
        want.append(clean[3] - suf.run(None, {"relu_1": changed})[0][0, 3])
    np.testing.assert_allclose(result.drops, want, rtol=1e-5, atol=1e-5)
    assert len(want) == 32 and max(want) > 0.1


def test_aggregate_over_images_and_classes(tmp_path):
    model = OnnxClassifier(DIGITS)
    layer = open_layer(model, "relu_2")
    results = [
        channel_importance(layer, SAMPLE_IMAGES / f"digit_{d}.png", score="logit", channels=range(8))[0]
        for d in (0, 3, 7)
    ]
    summary = aggregate_channels(results)
    drops = np.stack([r.drops for r in results])
    np.testing.assert_allclose(summary.mean, drops.mean(axis=0))
    np.testing.assert_allclose(summary.std, drops.std(axis=0))
    assert sorted(summary.per_class) == [0, 3, 7]
    np.testing.assert_allclose(summary.per_class[7]["mean"], results[2].drops)
    with pytest.raises(OccludeError, match="channels must be in 0..31"):
        channel_importance(layer, SAMPLE_IMAGES / "digit_0.png", channels=[32])


def test_invalid_cut_is_refused_with_valid_ones_listed(tmp_path):
    path = save(residual_cnn(), tmp_path / "residual.onnx")
    image = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB").save(image)
    result = occlude("layers", path, image, "--layer", "/layer2/Conv_output_0", "-o", tmp_path / "out")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot split the model at '/layer2/Conv_output_0'")
    assert (
        "skip connection" in lines[0]
        and "nearest valid cut points before it: /layer1/Conv_output_0, "
        "/layer1/Relu_output_0; after it: /layer2/Add_output_0"
        in lines[0]
    )
    unknown = occlude("layers", path, image, "--layer", "nope", "-o", tmp_path / "out")
    assert unknown.exit_code == 1 and "valid cut points include: /layer1/Conv_output_0" in unknown.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written
    fine = occlude("layers", path, image, "--layer", "/layer2/Add_output_0", "-o", tmp_path / "out", "-q")
    assert fine.exit_code == 0, fine.output
    rows = (tmp_path / "out" / "layers.csv").read_text().splitlines()
    assert rows[0].startswith("rank,channel,mean_drop") and len(rows) == 5  # 4 channels


def test_info_layers(tmp_path):
    result = occlude("info", DIGITS, "--layers", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["relu_1"] == {**by_name["relu_1"], "op": "Relu", "shape": [1, 32, 8, 8], "valid_cut": True}
    assert by_name["logits"]["valid_cut"] is False and doc["input_shape"] == [1, 1, 8, 8]
    text = occlude("info", DIGITS, "--layers")
    assert text.exit_code == 0 and "max_pool2d" in text.stdout and "valid cut" in text.stdout


# ------------------------------------------------------------------------------------------- dataset bias

SIDE, MARK = 16, 4


def corner_model(path: Path) -> Path:
    """input (N,1,16,16) -> Flatten -> Gemm: logit 1 = 20 * mean(top-left 4x4 corner) - 10 (the shortcut),
    logit 0 = 0.5 * mean(every other pixel). A white corner mark makes class 1."""
    w = np.zeros((2, SIDE * SIDE))
    corner = np.zeros((SIDE, SIDE), dtype=bool)
    corner[:MARK, :MARK] = True
    w[1, corner.ravel()] = 20.0 / corner.sum()
    w[0, ~corner.ravel()] = 0.5 / (~corner).sum()
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
    ]
    return _save(nodes, {"w": w, "b": [0.0, -10.0]}, [1, SIDE, SIDE], [2], path)


def _corner_logits(pixels) -> np.ndarray:
    x = np.asarray(pixels, dtype=np.float64) / 255.0
    corner = np.zeros((SIDE, SIDE), dtype=bool)
    corner[:MARK, :MARK] = True
    return np.array([0.5 * x[~corner].mean(), 20 * x[corner].mean() - 10])


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def corner_dataset(folder: Path, count: int = 6):
    folder.mkdir()
    rng = np.random.default_rng(3)
    images = []
    for i in range(count):
        pixels = rng.integers(0, 200, (SIDE, SIDE))
        pixels[:MARK, :MARK] = 255 if i % 2 == 0 else 0  # even: the mark (class 1); odd: none (class 0)
        images.append((_grey(folder / f"img{i}.png", pixels), pixels))
    return images


def test_corner_mark_bias_is_detected(tmp_path):
    model = OnnxClassifier(corner_model(tmp_path / "corner.onnx"))
    images = corner_dataset(tmp_path / "data")
    rows = [bias_image(model, path, box=(0, 0, MARK, MARK), controls=16, seed=i) for i, (path, _) in enumerate(images)]
    for row, (_, pixels) in zip(rows, images):
        p = _softmax(_corner_logits(pixels))
        occluded = pixels.copy()
        occluded[:MARK, :MARK] = 0  # baseline zero = pixel 0 for this preprocessing
        q = _softmax(_corner_logits(occluded))
        assert row.target == int(np.argmax(p)) and row.predicted == row.target
        assert row.drop == pytest.approx(p[row.target] - q[row.target], abs=1e-6)
        assert row.flipped == (int(np.argmax(q)) != row.target)
        assert row.control_overlaps == 0 and len(row.control_drops) == 16
    summary = summarise_bias(rows, max_flip_rate=0.2, bootstrap=200, seed=1)
    assert summary.per_class[1]["flip_rate"] == 1.0 and summary.per_class[1]["mean_drop"] > 0.99
    assert summary.per_class[0]["flip_rate"] == 0.0 and abs(summary.per_class[0]["mean_drop"]) < 1e-6
    assert summary.overall["control_flip_rate"] == 0.0 and abs(summary.overall["control_mean_drop"]) < 1e-3
    assert summary.overall["flip_rate"] == 0.5 and not summary.passed and "flip rate 0.5" in summary.reasons[0]
    lo, hi = summary.overall["flip_rate_ci"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    again = summarise_bias(rows, max_flip_rate=0.2, bootstrap=200, seed=1)
    assert again.overall == summary.overall  # seeded bootstrap


def test_control_masks_avoid_the_region_and_are_seeded():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:3, 0:4] = True
    first, overlaps = control_masks(mask, 20, np.random.default_rng(5))
    second, _ = control_masks(mask, 20, np.random.default_rng(5))
    assert overlaps == 0 and all((a == b).all() for a, b in zip(first, second))
    for m in first:
        assert m.sum() == 12 and not (m & mask).any()
        ys, xs = np.nonzero(m)
        assert (np.ptp(ys) + 1, np.ptp(xs) + 1) == (3, 4)
    full = np.ones((4, 4), dtype=bool)
    _, forced = control_masks(full, 3, np.random.default_rng(0))
    assert forced == 3  # no room elsewhere: said, not hidden


def test_bias_cli_thresholds_and_outputs(tmp_path):
    model = corner_model(tmp_path / "corner.onnx")
    corner_dataset(tmp_path / "data")
    out = tmp_path / "out"
    ok = occlude("bias", model, tmp_path / "data", "--box", f"0,0,{MARK},{MARK}", "-o", out, "-q")
    assert ok.exit_code == 0, ok.output
    failing = occlude(
        "bias",
        model,
        tmp_path / "data",
        "--box",
        f"0,0,{MARK},{MARK}",
        "-o",
        out,
        "-q",
        "--max-flip-rate",
        "0.2",
        "--bootstrap",
        "100",
    )
    assert failing.exit_code == 4 and "flip rate 0.5 > max_flip_rate 0.2" in failing.stderr
    doc = json.loads((out / "bias.json").read_text())
    assert doc["passed"] is False and doc["per_class"]["1"]["flip_rate"] == 1.0 and doc["counts"] == {"ok": 6}
    classes = (out / "bias_classes.csv").read_text().splitlines()
    assert classes[0].startswith("class,label,images,mean_drop") and classes[-1].startswith("all,,6,")
    assert len((out / "bias.csv").read_text().splitlines()) == 7
    picture = np.asarray(Image.open(out / "bias.png").convert("RGB")).astype(int)
    red = (np.abs(picture - [192, 57, 43]).sum(axis=-1) < 60).sum()  # region drops
    assert red > 500
    missing = occlude("bias", model, tmp_path / "data", "-o", out, "-q")  # no box: NAME.mask.png, absent
    assert missing.exit_code == 3 and "no mask for this image" in missing.stderr
    both = occlude("bias", model, tmp_path / "data", "--box", "0,0,1,1", "--masks", tmp_path, "-o", out)
    assert both.exit_code == 1 and "give one region source" in both.stderr


# --------------------------------------------------------------------------------------------- stability

H = W = 8


def linear_model(path: Path, weights: np.ndarray) -> Path:
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
    ]
    return _save(nodes, {"w": weights, "b": [0.5, -0.5]}, [1, H, W], [2], path)


def naive_map(contribution: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Occlusion map of a linear model with zero baseline: each window's drop is the sum of weight x input
    over it; a pixel gets the mean over the windows covering it (with the final window flush with the border)."""
    starts = list(range(0, H - patch + 1, stride))
    if starts[-1] + patch < H:
        starts.append(H - patch)
    total, count = np.zeros((H, W)), np.zeros((H, W))
    for y in starts:
        for x in starts:
            total[y : y + patch, x : x + patch] += contribution[y : y + patch, x : x + patch].sum()
            count[y : y + patch, x : x + patch] += 1
    return total / count


def test_stability_of_a_linear_model_is_known_exactly(tmp_path):
    """Linear logits, zero baseline: map(x + n) = map(x) + map(n), so each noisy map is the clean map plus the
    occlusion map of the noise alone (reproducible from the seed), whatever the image."""
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(2, H * W))
    model = OnnxClassifier(linear_model(tmp_path / "linear.onnx", weights))
    pixels = rng.integers(60, 200, (H, W))
    image = _grey(tmp_path / "img.png", pixels)
    result = stability(model, image, amplitude=4 / 255, trials=5, seed=9, patch=3, stride=2, score="raw", target=0)
    w0 = weights[0].reshape(H, W)
    clean = naive_map(w0 * pixels / 255.0, 3, 2)
    np.testing.assert_allclose(result.explanation.map, clean, atol=1e-5)
    noise = noise_pixels((H, W, 1), 4 / 255, 5, seed=9)[..., 0]
    assert np.abs(noise).max() <= 4.0 and np.abs(noise).max() > 3.0
    for k, trial in enumerate(result.trials):
        want = clean + naive_map(w0 * noise[k] / 255.0, 3, 2)
        np.testing.assert_allclose(result.noisy_maps[k], want, atol=1e-5)
        assert trial.spearman == pytest.approx(spearman(clean, want), abs=1e-3)
        assert trial.top_iou == pytest.approx(top_fraction_iou(clean, want, 0.1), abs=1e-9)
        logits = weights @ ((pixels + noise[k]) / 255.0).ravel() + [0.5, -0.5]
        assert trial.target_score == pytest.approx(logits[0], abs=1e-5)
        assert trial.predicted == int(np.argmax(logits))
    # the deviation is linear in the amplitude (same seed, same uniform draws)
    double = stability(model, image, amplitude=8 / 255, trials=5, seed=9, patch=3, stride=2, score="raw", target=0)
    np.testing.assert_allclose(double.noisy_maps - clean, 2 * (result.noisy_maps - clean), atol=2e-5)
    still = stability(model, image, amplitude=0, trials=2, seed=9, patch=3, stride=2, score="raw", target=0)
    assert [t.spearman for t in still.trials] == [pytest.approx(1.0)] * 2
    assert [t.top_iou for t in still.trials] == [1.0, 1.0]


def test_patch_test_on_the_shortcut_model(tmp_path):
    model = OnnxClassifier(corner_model(tmp_path / "corner.onnx"))
    (marked, _), (plain, _) = corner_dataset(tmp_path / "data", 2)
    result = stability(model, marked, trials=1, patch=4, box=(0, 0, MARK, MARK), clean_class=0)
    p = result.patch_test
    assert (p.predicted, p.occluded_class, p.kept_class) == (1, 0, 1)
    assert p.necessary and p.sufficient and p.restores and p.pixels == MARK * MARK
    other = stability(model, plain, trials=1, patch=4, box=(8, 8, 12, 12)).patch_test
    assert other.predicted == 0 and not other.necessary and other.restores is None


def test_stability_cli(tmp_path):
    out = tmp_path / "out"
    result = occlude(
        "stability",
        DIGITS,
        SAMPLE_IMAGES / "digit_7.png",
        "--trials",
        "3",
        "--noise",
        "8/255",
        "-o",
        out,
        "--json",
        "--box",
        "0,0,4,4",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "stability" and doc["summary"]["trials"] == 3 and len(doc["trials"]) == 3
    assert doc["noise"]["amplitude"] == pytest.approx(8 / 255) and doc["patch_test"]["pixels"] == 16
    assert 0.5 < doc["summary"]["spearman"]["mean"] <= 1.0
    assert sorted(p.name for p in out.iterdir()) == [
        "digit_7.stability.csv",
        "digit_7.stability.json",
        "digit_7.stability.png",
    ]
    bad = occlude("stability", DIGITS, SAMPLE_IMAGES / "digit_7.png", "--noise", "2/0", "-o", out)
    assert bad.exit_code == 1 and "noise must be a number or a fraction like 2/255" in bad.stderr


# ------------------------------------------------------------------------------------------ sample models


def test_layers_on_efficientnet_mid_tensor(tmp_path):
    out = tmp_path / "out"
    result = occlude(
        "layers",
        EFFNET,
        SAMPLE_IMAGES / "cat.jpg",
        "--layer",
        "hardtanh_16",
        "--channels",
        "0-7,466",
        "-o",
        out,
        "-q",
        "--show",
        "2",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "layers.json").read_text())
    assert doc["layer"]["shape"] == [480, 14, 14] and doc["layer"]["verified_max_abs_difference"] < 1e-4
    assert [c["channel"] for c in doc["channels"]][0] == 466  # the cat's strongest channel among these
    assert doc["per_image"][0]["target"] == 285 and doc["per_image"][0]["suffix_passes"] == 10
    bars = np.asarray(Image.open(out / "layers.png").convert("RGB")).astype(int)
    assert (np.abs(bars - [192, 57, 43]).sum(axis=-1) < 30).sum() > 200  # red bars drawn
    assert Image.open(out / "activations.png").size[0] > 300


def test_layers_spatial_on_digits(tmp_path):
    out = tmp_path / "out"
    result = occlude(
        "layers",
        DIGITS,
        SAMPLE_IMAGES / "digit_3.png",
        SAMPLE_IMAGES / "digit_0.png",
        "--layer",
        "relu_1",
        "--spatial",
        "--patch",
        "2",
        "--score",
        "logit",
        "-o",
        out,
        "-q",
    )
    assert result.exit_code == 0, result.output
    values = np.load(out / "digit_3.spatial.npy")
    doc = json.loads((out / "digit_3.spatial.json").read_text())
    assert values.shape == (8, 8) and doc["forward_passes"] == 17 and doc["patch"] == [2, 2]
    np.testing.assert_allclose(values, np.array(doc["map"], dtype=np.float64), atol=1e-6)
    assert np.nanmax(values) > 0.5  # logits: occluding a 2x2 block of relu_1 cells removes real evidence
    assert (out / "digit_0.spatial.png").stat().st_size > 1000


def test_layers_spatial_json_prints_every_map_and_nothing_else(tmp_path):
    """``layers --spatial --json`` printed nothing at all (exit 0, an empty stdout for jq): it prints every
    input's STEM.spatial.json document in input order, the same numbers as the files, and with an unreadable
    input among them still prints the others, counts the failure and exits 3."""
    import subprocess
    import sys

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("digit_3.png", "digit_0.png"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    (folder / "digit_9.png").write_text("not an image")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "occlude_cli", "layers", str(DIGITS), str(folder), "--layer", "relu_1"]
    command += ["--spatial", "--patch", "2", "--score", "logit", "-o", str(out), "--json", "--no-timing"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 3 and done.stderr.count("error:") == 1 and "digit_9.png" in done.stderr
    document = json.loads(done.stdout)
    assert document["kind"] == "layers.spatial-run" and document["failed"] == 1
    assert [Path(d["image"]).name for d in document["images"]] == ["digit_0.png", "digit_3.png"]
    for printed in document["images"]:
        written = json.loads((out / f"{Path(printed['image']).stem}.spatial.json").read_text())
        assert {k: v for k, v in written.items() if k != "versions"} == printed
        assert np.array(printed["map"]).shape == (8, 8)


def test_fixed_batch_model_and_flags_that_do_not_apply(tmp_path):
    """A model pinned to batch 1: the suffix is run one feature tensor at a time, same answers as batched."""
    from graph_models import plain_cnn

    path = save(plain_cnn(batch=1), tmp_path / "plain.onnx")
    image = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB").save(image)
    model = OnnxClassifier(path)
    layer = open_layer(model, "/block1/Relu_output_0")
    assert layer.fixed_batch
    result, prepared, features = channel_importance(layer, image, score="logit", batch_size=4)
    clean = layer.run_suffix(features[None])[0]
    for k, channel in enumerate(result.channels):
        changed = features.copy()
        changed[channel] = 0
        assert result.drops[k] == pytest.approx(
            clean[result.target] - layer.run_suffix(changed[None])[0, result.target], abs=1e-5
        )
    bad = occlude("layers", path, image, "--layer", "/block1/Relu_output_0", "--baseline", "blur", "-o", tmp_path / "o")
    assert bad.exit_code == 1 and "--baseline and --blur-sigma fill pixels" in bad.stderr
    stride = occlude("layers", path, image, "--layer", "/block1/Relu_output_0", "--stride", "2", "-o", tmp_path / "o")
    assert stride.exit_code == 1 and "--stride applies to --spatial windows only" in stride.stderr


def test_layers_warns_about_a_saturated_probability(tmp_path):
    args = ["layers", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--layer", "relu", "-o", tmp_path / "out"]
    saturated = occlude(*args)
    assert saturated.exit_code == 0 and "explain the logits instead (--score logit:" in saturated.stderr
    logits = occlude(*args, "--score", "logit")
    assert logits.exit_code == 0 and "warning" not in logits.stderr
    doc = json.loads((tmp_path / "out" / "layers.json").read_text())
    assert doc["channels"][0]["mean_drop"] > 1.0  # in logits, the top channel's drop is readable


def test_bias_on_the_digits_sample(tmp_path):
    """The digits model on its three sample images: the centre of the digit matters far more than a corner."""
    data = tmp_path / "digits"
    data.mkdir()
    for d in (0, 3, 7):
        (data / f"digit_{d}.png").write_bytes((SAMPLE_IMAGES / f"digit_{d}.png").read_bytes())
    corner = occlude("bias", DIGITS, data, "--box", "0,0,2,2", "--score", "logit", "-o", tmp_path / "corner", "--json")
    centre = occlude("bias", DIGITS, data, "--box", "3,2,5,6", "--score", "logit", "-o", tmp_path / "centre", "--json")
    assert corner.exit_code == 0 and centre.exit_code == 0, corner.output + centre.output
    a, b = json.loads(corner.stdout), json.loads(centre.stdout)
    assert a["counts"] == {"ok": 3} and sorted(a["per_class"]) == ["0", "3", "7"]
    assert b["overall"]["mean_drop"] > a["overall"]["mean_drop"] + 1.0
    assert json.loads((tmp_path / "corner" / "bias.json").read_text()) == a  # stdout is the file


def test_bias_with_per_image_masks(tmp_path):
    model = corner_model(tmp_path / "corner.onnx")
    images = corner_dataset(tmp_path / "data", 4)
    masks = tmp_path / "masks"
    masks.mkdir()
    for path, _ in images:
        mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
        mask[:MARK, :MARK] = 255
        Image.fromarray(mask, "L").save(masks / path.name)
    result = occlude("bias", model, tmp_path / "data", "--masks", masks, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["per_class"]["1"]["flip_rate"] == 1.0 and doc["per_class"]["0"]["flip_rate"] == 0.0
    assert all(row["region_pixels"] == MARK * MARK for row in doc["images"])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, layer, img: channel_importance(layer, img, replacement="blur"), "replacement must be one of zero"),
        (lambda m, layer, img: channel_importance(layer, img, channels=[]), "channels is empty"),
        (lambda m, layer, img: channel_importance(layer, img, replacement="dataset"), "needs dataset_mean"),
        (
            lambda m, layer, img: channel_importance(layer, img, replacement="dataset", dataset_mean=[1.0]),
            "dataset_mean has 1 values; the tensor has 4 channels",
        ),
        (lambda m, layer, img: open_layer(m, "act", channel_axis=5), "channel_axis 5 is out of range"),
        (lambda m, layer, img: open_layer(m, "logits"), "is a graph output"),
        (lambda m, layer, img: open_layer(m, "flat"), "channel occlusion needs channels and at least one spatial axis"),
        (lambda m, layer, img: spatial_occlusion(layer, img, patch=5), "patch 5 is larger than the feature grid"),
        (lambda m, layer, img: spatial_occlusion(layer, img, patch=2, stride=3), "stride 3 is larger than the patch"),
        (lambda m, layer, img: bias_image(m, img, box=(0, 0, 2, 2), controls=-1), "controls must be a whole number"),
        (lambda m, layer, img: bias_image(m, img), "give exactly one region"),
        (lambda m, layer, img: summarise_bias([], bootstrap=10), "no image could be measured"),
        (lambda m, layer, img: stability(m, img, trials=0), "trials must be a whole number >= 1"),
        (lambda m, layer, img: stability(m, img, amplitude="2/x"), "amplitude must be a number"),
        (lambda m, layer, img: stability(m, img, amplitude=1.5), "amplitude must be in [0, 1]"),
    ],
)
def test_bad_parameters_are_named(tmp_path, call, message):
    model = OnnxClassifier(channel_model(tmp_path / "channel.onnx"))
    image = _grey(tmp_path / "img.png", PIXELS)
    layer = open_layer(model, "act")
    with pytest.raises(OccludeError) as info:
        call(model, layer, image)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_failing_threshold_shows_enough_digits_to_tell_the_numbers_apart():
    """Issue 33: a mean drop of 53.3333 against --max-mean-drop 53.33 read "53.33 > 53.33" (both rounded)."""
    from occlude_cli.analyses.bias import BiasRow
    from occlude_cli.errors import shown_apart

    rows = [
        BiasRow(path=f"{i}.png", status="ok", target=0, drop=drop, flipped=flip, control_drop=None)
        for i, (drop, flip) in enumerate([(50.0, True), (55.0, True), (55.0, False)])
    ]
    summary = summarise_bias(rows, max_mean_drop=53.33, max_flip_rate=0.66666, bootstrap=0)
    assert summary.reasons == ["mean drop 53.333 > max_mean_drop 53.33", "flip rate 0.6667 > max_flip_rate 0.66666"]
    assert shown_apart(0.4996, 0.5, "0.500") == ("0.4996", "0.5")  # check's energy share, 3 decimals by default
    assert shown_apart(0.25, 0.5, "0.250") == ("0.250", "0.5")  # apart already: as given
    assert shown_apart(1.0 + 1e-15, 1.0) == ("1.000000000000001", "1")
    assert shown_apart(53.3304, 53.3301) == ("53.3304", "53.3301")  # never "53.33 > 53.3301"
