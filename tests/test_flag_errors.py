"""Flag errors are exit 1, checked before any image, in every command (issue 33). `--target 7` on a 2-class
model and `layers --channels 9` on a 4-channel tensor used to be one error per image and exit 3 in layers,
check and bias (exit 1 in run, stability and compare)."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def two_class_model(path: Path, classes_dim) -> Path:
    """(N, 1, 8, 8) -> 1x1 Conv to 4 channels -> Relu ('feat', a valid cut) -> spatial mean -> Gemm: 2 logits.
    ``classes_dim``: the declared size of the class axis (2, or a name: dynamic, known only by running it)."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("ReduceMean", ["feat"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["pooled", "fw", "fb"], ["logits"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 1, 1)).astype(np.float32), "cw"),
        numpy_helper.from_array(np.zeros(4, np.float32), "cb"),
        numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32), "fw"),
        numpy_helper.from_array(np.zeros(2, np.float32), "fb"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_class",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module", params=[2, "classes"], ids=["declared-classes", "dynamic-classes"])
def setup(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flags")
    model = two_class_model(folder / "two.onnx", request.param)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(images / f"img{i}.png")
    np.save(folder / "other.npy", rng.random((8, 8)))
    return model, images, folder


COMMANDS = {
    "run": lambda m, d, f: ["run", m, d],
    "check": lambda m, d, f: ["check", m, d, "--box", "0,0,4,4"],
    "bias": lambda m, d, f: ["bias", m, d, "--box", "0,0,4,4"],
    "layers": lambda m, d, f: ["layers", m, d, "--layer", "feat"],
    "stability": lambda m, d, f: ["stability", m, d / "img0.png"],
    "compare": lambda m, d, f: ["compare", m, d / "img0.png", f / "other.npy"],
    "compare --maps": lambda m, d, f: ["compare", m, d, "--maps", f],
}


def assert_flag_error(result, says: str, out: Path) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing written: no image was looked at


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_target_out_of_range_is_exit_1_before_any_image(setup, tmp_path, command):
    model, images, folder = setup
    out = tmp_path / "out"
    result = invoke(*COMMANDS[command](model, images, folder), "--target", "7", "-o", out)
    assert_flag_error(result, "--target 7 is out of range: the model has 2 classes (0..1)", out)


def test_layers_channels_out_of_range_is_exit_1_before_any_image(setup, tmp_path):
    model, images, _ = setup
    out = tmp_path / "out"
    result = invoke("layers", model, images, "--layer", "feat", "--channels", "1,9", "-o", out)
    assert_flag_error(result, "--channels must be in 0..3: tensor 'feat' has 4 channels, got 9", out)
    ok = invoke("layers", model, images, "--layer", "feat", "--channels", "1,3", "-o", out, "-q")
    assert ok.exit_code == 0, ok.stderr
