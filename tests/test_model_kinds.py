"""Models users bring, held to the slow obvious loop (tests/zoo/reference.py: one window at a time, one image per
onnxruntime call) element-wise, and the CLI's messages about them (a newcomer's QA pass over the model kinds).

* A dynamically quantised model (``onnxruntime.quantization.quantize_dynamic``: DynamicQuantizeLinear computes
  ONE scale and zero point over the whole tensor, so over every image of a batch) and a graph that takes a
  mean over the batch axis: each image's scores depend on the images batched with it, so occlude runs them one
  image at a time, says so, and gives the loop's map.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from occlude_cli.cli import app
from conftest import zoo_reference

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "tests" / "zoo"
PHOTOS = ROOT / "sample_images"

reference = zoo_reference()

FLOAT32_NOISE = 1e-5  # of the map's peak


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to; 8.2 removed the option
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def cli(*args: str):
    result = _runner().invoke(app, list(args))
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def case_of(size=(32, 32), patch: int = 8, stride: int = 4, score: str = "softmax", dtype: str = "float32") -> dict:
    """A zoo-style case for the reference loop: pixels / 255, no mean or std, the zero baseline."""
    reference_part = {"size": list(size), "layout": "NCHW", "color": "rgb", "scale": 1 / 255, "mean": [0.0]}
    reference_part.update({"std": [1.0], "input_dtype": dtype, "output": None})
    return {"patch": patch, "stride": stride, "score": score, "reference": reference_part}


def conv_net(size: int = 32, classes: int = 6, seed: int = 0, batch_mean: bool = False) -> onnx.ModelProto:
    """conv 3x3 -> relu -> conv 3x3 / 2 -> relu -> flatten -> matmul: a float32 classifier with a free batch.
    ``batch_mean``: subtract the features' mean over the batch axis (a graph that mixes the images of a batch)."""
    rng = np.random.default_rng(seed)
    half = size // 2
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal((8 * half * half, classes)) * 0.2).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["flat"], axis=1),
    ]
    if batch_mean:
        nodes += [
            helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["flat", "mean"], ["features"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["flat"], ["features"]))
    nodes.append(helper.make_node("MatMul", ["features", "fc"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def dynamic_int8(tmp_path: Path) -> Path:
    """conv_net quantised by onnxruntime's quantize_dynamic (DynamicQuantizeLinear + ConvInteger/MatMulInteger)."""
    from onnxruntime.quantization import quantize_dynamic

    source, target = tmp_path / "float.onnx", tmp_path / "dynamic_int8.onnx"
    onnx.save(conv_net(), str(source))
    quantize_dynamic(str(source), str(target), op_types_to_quantize=["Conv", "MatMul"])
    assert any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(target)).graph.node)
    return target


@pytest.mark.parametrize("kind", ["dynamic_int8", "batch_mean"])
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_models_that_mix_the_images_of_a_batch_run_one_image_at_a_time(tmp_path, kind, mode):
    if kind == "dynamic_int8":
        model = dynamic_int8(tmp_path)
    else:
        model = tmp_path / "batch_mean.onnx"
        onnx.save(conv_net(batch_mean=True), str(model))
    image, case = PHOTOS / "cat.jpg", case_of()
    result = cli(*result_args(model, image, tmp_path / "out", "--incremental", mode))
    assert result.exit_code == 0, result.stderr
    got = np.load(tmp_path / "out" / "cat.npy")
    record = json.loads((tmp_path / "out" / "cat.json").read_text())
    expected = reference.reference_map(model, image, case).map
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_NOISE * np.abs(expected).max())
    assert record["model"]["batching"].startswith("run one image at a time"), record["model"]["batching"]
    assert "one image at a time" in result.stderr
    op = "DynamicQuantizeLinear" if kind == "dynamic_int8" else "ReduceMean"
    assert op in record["model"]["batching"]
    planned = cli("run", str(model), str(image), "--dry-run", "--patch", "8", "--stride", "4")
    assert planned.exit_code == 0 and "batch size 1 (run one image at a time:" in planned.stdout  # and why
    assert op in planned.stdout


def result_args(model: Path, image: Path, out: Path, *flags: str) -> list:
    return ["run", str(model), str(image), "-o", str(out), "--no-timing", "--patch", "8", "--stride", "4", *flags]


def _small(inputs, outputs, nodes, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "small", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _image(name: str = "image", shape=("N", 3, 16, 16)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _pooled_logits(source: str = "image") -> list:
    return [
        helper.make_node("GlobalAveragePool", [source], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
    ]


def bad_model(tmp_path: Path, kind: str) -> Path:
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    if kind == "zero_dim":
        model = _small([_image(shape=("N", 3, 0, 16))], [logits], _pooled_logits())
    elif kind == "four_channels":  # RGBA: no layout flag can help
        model = _small([_image(shape=("N", 4, 16, 16))], [logits], _pooled_logits())
    elif kind == "no_outputs":
        model = _small([_image()], [], _pooled_logits())
    else:  # two inputs: the image and a temperature
        temperature = helper.make_tensor_value_info("temperature", TensorProto.FLOAT, [1])
        nodes = _pooled_logits() + [helper.make_node("Mul", ["logits", "temperature"], ["scaled"])]
        out = helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["N", 3])
        model = _small([_image(), temperature], [out], nodes)
    path = tmp_path / f"{kind}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "kind, flags, says, never",
    [
        ("zero_dim", [], "a dimension of 0", "--size"),
        ("zero_dim", ["--size", "16x16"], "a dimension of 0", "onnxruntime failed"),
        ("no_outputs", [], "has no outputs", "choose one"),
        ("two_inputs", [], "besides the image", "choose one with --input"),
        ("two_inputs", ["--input", "image"], "besides the image", "choose one with --input"),
        ("four_channels", [], "supports 1 (grey) or 3 (colour)", "--layout"),
    ],
)
def test_models_occlude_cannot_feed_or_read_are_one_error_line_before_any_image(tmp_path, kind, flags, says, never):
    model = bad_model(tmp_path, kind)
    run = ["run", str(model), str(PHOTOS / "cat.jpg"), "-o", str(tmp_path / "out"), *flags]
    if kind == "four_channels":  # info describes the rest of the model, and says why its input is unusable
        line = next(r for r in cli("info", str(model)).stdout.splitlines() if r.startswith("preprocessing"))
        assert "unusable: " in line and "needs flags" not in line, line
    for command in (run, ["info", str(model)]) if kind != "four_channels" else (run,):
        result = cli(*command)
        assert result.exit_code == 1, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert says in lines[0] and never not in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def small_logits(tmp_path: Path, bias: float) -> Path:
    """A classifier ending in Gemm (a linear layer: logits) whose logits on a photo all lie in [0, 1]."""
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3)) * 0.2).astype(np.float32), "fc"),
        numpy_helper.from_array(np.full(4, bias, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("ReduceMax", ["pooled"], ["peak"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["peak", "fc", "bias"], ["logits"], transB=1),
    ]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])
    path = tmp_path / "small_logits.onnx"
    onnx.save(_small([_image()], [logits], nodes, inits), str(path))
    return path


def test_a_linear_head_is_explained_as_logits_even_where_they_fall_in_0_1(tmp_path):
    """auto: a graph ending in a linear layer (Gemm) outputs logits; logits that happen to lie in [0, 1] on one
    image were explained as independent multi-label probabilities (raw), on another image of the same run as a
    softmax. The map is the softmax's, as the reference loop computes it."""
    model = small_logits(tmp_path, bias=0.5)
    image, case = PHOTOS / "cat.jpg", case_of(size=(16, 16), patch=4, stride=2)
    raw = reference.reference_map(model, image, {**case, "score": "raw"}).original
    assert raw.min() > 0 and raw.max() < 1 and abs(raw.sum() - 1) > 0.1  # the case the value rule misreads
    result = cli(*result_args(model, image, tmp_path / "out", "--patch", "4", "--stride", "2"))
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "cat.json").read_text())
    assert record["score"]["kind"] == "softmax", record["score"]
    assert "Gemm" in record["score"]["rule"]
    expected = reference.reference_map(model, image, case).map
    got = np.load(tmp_path / "out" / "cat.npy")
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_NOISE * np.abs(expected).max())


def quantised_softmax(tmp_path: Path) -> Path:
    """A Softmax head followed by the QuantizeLinear/DequantizeLinear pair quantize_static (QDQ) puts after it."""
    inits = [
        numpy_helper.from_array(np.array(1 / 256, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "zero_point"),
    ]
    nodes = _pooled_logits() + [
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("QuantizeLinear", ["probabilities", "scale", "zero_point"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["scores"]),
    ]
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    path = tmp_path / "quantised_softmax.onnx"
    onnx.save(_small([_image()], [scores], nodes, inits), str(path))
    return path


def test_a_quantised_softmax_head_is_read_as_the_softmax_it_is(tmp_path):
    """The Q/DQ pair after a Softmax hid it: a second softmax (score softmax) and 'logits' were accepted, and auto
    called the probabilities multi-label."""
    model = quantised_softmax(tmp_path)
    image = PHOTOS / "cat.jpg"
    for score in ("softmax", "logit"):
        result = cli(*result_args(model, image, tmp_path / score, "--score", score))
        assert result.exit_code == 1 and "ends in Softmax" in result.stderr, result.stderr
    result = cli(*result_args(model, image, tmp_path / "auto"))
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "auto" / "cat.json").read_text())
    assert record["score"]["kind"] == "probabilities", record["score"]
    info = cli("info", str(model), "--json")
    assert json.loads(info.stdout)["final_op"] == "Softmax"


def test_info_says_which_score_auto_explains(tmp_path):
    """docs/models.md: info prints 'the head and the score auto picks'; it printed neither."""
    plain = tmp_path / "plain.onnx"  # ends in GlobalAveragePool: the first image's outputs decide
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    onnx.save(_small([_image()], [logits], _pooled_logits()), str(plain))
    cases = [
        (quantised_softmax(tmp_path), "probabilities", "Softmax"),
        (small_logits(tmp_path, bias=0.5), "softmax", "Gemm"),
        (plain, None, "first image"),
    ]
    for model, kind, says in cases:
        document = json.loads(cli("info", str(model), "--json").stdout)
        assert document["score"]["kind"] == kind, document["score"]
        assert says in document["score"]["rule"], document["score"]
        text = cli("info", str(model)).stdout
        line = next(row for row in text.splitlines() if row.startswith("score "))
        assert says in line and (kind is None or kind in line), line


def test_layers_of_a_dynamically_quantised_model_do_not_depend_on_the_batch_size(tmp_path):
    """occlude layers runs the suffix after the cut on batches of occluded feature tensors: a suffix with a
    DynamicQuantizeLinear mixed them, so the channels' drops changed with --batch-size."""
    model = dynamic_int8(tmp_path)
    drops = []
    for batch in ("1", "16"):
        out = tmp_path / f"layers{batch}"
        flags = ["--layer", "r1", "-o", str(out), "--batch-size", batch, "-q", "--no-timing"]
        result = cli("layers", str(model), str(PHOTOS / "cat.jpg"), *flags)
        assert result.exit_code == 0, result.stderr
        channels = json.loads((out / "layers.json").read_text())["channels"]
        drops.append([channel["mean_drop"] for channel in channels])
    assert len(drops[0]) == 8
    np.testing.assert_allclose(drops[1], drops[0], rtol=0, atol=1e-6 * np.abs(drops[0]).max())


@pytest.mark.parametrize("element", [TensorProto.INT64, TensorProto.BOOL])
def test_an_output_of_class_indices_or_decisions_is_refused_not_explained_as_a_logit(tmp_path, element):
    """An ArgMax head's int64 class index (N,) was explained as 'the sigmoid of its logit': sigmoid(2) = 0.88."""
    nodes = _pooled_logits() + [helper.make_node("ArgMax", ["logits"], ["index"], axis=1, keepdims=0)]
    if element == TensorProto.BOOL:
        zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
        nodes.append(helper.make_node("Greater", ["index", "zero"], ["decision"]))
    name = "index" if element == TensorProto.INT64 else "decision"
    output = helper.make_tensor_value_info(name, element, ["N"])
    inits = [] if element == TensorProto.INT64 else [zero]
    model = tmp_path / "decision.onnx"
    onnx.save(_small([_image()], [output], nodes, inits), str(model))
    result = cli(*result_args(model, PHOTOS / "cat.jpg", tmp_path / "out"))
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not scores" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
    task = next(row for row in cli("info", str(model)).stdout.splitlines() if row.startswith("task "))
    assert "not scores" in task and "--task detect" not in task, task
