"""Conversion into the model's input type (issue 33): computed in float, stored by one explicit, range-checked
cast, never clipped in silence. Probe models whose answers are computed by hand: a Cast (or DequantizeLinear)
then the mean of each channel, so the model's output is exactly the mean of what it was fed."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import OnnxClassifier, resolve_preprocessing
from occlude_cli.cli import app
from occlude_cli.core.casting import cast_checked
from occlude_cli.errors import OccludeError
from occlude_cli.loaders.images import Preprocessing
from occlude_cli.loaders.medical import Volume
from occlude_cli.loaders.volumes import VolumePreprocessing, prepare_volume

runner = CliRunner()


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def channel_mean_model(path, elem_type, *, dequantize=None, metadata=None, size=16):
    """(N, 3, size, size) input of ``elem_type`` -> Cast to float (or DequantizeLinear(scale, zero_point) when
    ``dequantize`` is given) -> the mean of each channel, (N, 3). Output = the mean of what the model was fed."""
    x = helper.make_tensor_value_info("x", elem_type, ["N", 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    inits = []
    if dequantize is None:
        first = helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT)
    else:
        scale, zero_point = dequantize
        inits = [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), "s"),
            numpy_helper.from_array(np.array(zero_point, dtype=np.int8), "z"),
        ]
        first = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["f"])
    nodes = [first, helper.make_node("ReduceMean", ["f"], ["y"], axes=[2, 3], keepdims=0)]
    model = helper.make_model(
        helper.make_graph(nodes, "channel_mean", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def ramp_photo(path):
    """16x16 RGB: red ramps 100..250 along x (mean 175.0), green 50, blue 10."""
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[..., 0] = np.rint(np.linspace(100, 250, 16))[None, :]
    pixels[..., 1] = 50
    pixels[..., 2] = 10
    Image.fromarray(pixels).save(path)
    return path, pixels.astype(np.float64)


def hand_map(values: np.ndarray, fill: float, patch: int = 4, stride: int = 2) -> np.ndarray:
    """The map of 'mean of one channel': a window's drop is sum(values - fill over it) / 256, averaged over the
    windows covering each pixel (the grid of the README: every stride, plus a last window flush with the border)."""
    side = values.shape[0]
    starts = list(range(0, side - patch + 1, stride))
    if starts[-1] != side - patch:
        starts.append(side - patch)
    total, count = np.zeros_like(values), np.zeros_like(values)
    for y in starts:
        for x in starts:
            drop = (values[y : y + patch, x : x + patch] - fill).sum() / values.size
            total[y : y + patch, x : x + patch] += drop
            count[y : y + patch, x : x + patch] += 1
    return total / count


def run_probe(model, image, out, *flags):
    result = occlude("run", model, image, "--patch", 4, "--score", "raw", "--target", 0, "-o", out, "-q", *flags)
    return result


def test_int8_input_gets_pixel_minus_128_and_its_exact_map(tmp_path):
    """The issue's probe: an int8 input used to be fed clip(pixel, -128, 127) (original 123.81, bright pixels all
    127). The documented int8 default stores pixel - 128: the red mean is 175 - 128 = 47 exactly, the zero
    baseline is q 0 (pixel 128), and the map is the hand-computed one."""
    image, pixels = ramp_photo(tmp_path / "ramp.png")
    model = channel_mean_model(tmp_path / "i8.onnx", TensorProto.INT8)
    result = run_probe(model, image, tmp_path / "out")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "ramp.json").read_text())
    assert record["score"]["original"] == 47.0
    assert record["params"]["preprocessing"]["formula"] == "input = round((pixel * 1 - 128) / 1) as int8 (-128..127)"
    assert record["warnings"] == []
    np.testing.assert_allclose(np.load(tmp_path / "out" / "ramp.npy"), hand_map(pixels[..., 0] - 128, 0.0), atol=1e-5)
    # the uint8 twin takes the pixels as they are
    model8 = channel_mean_model(tmp_path / "u8.onnx", TensorProto.UINT8)
    assert run_probe(model8, image, tmp_path / "out8").exit_code == 0
    assert json.loads((tmp_path / "out8" / "ramp.json").read_text())["score"]["original"] == 175.0


def test_int8_white_baseline_is_127(tmp_path):
    """white = pixel 255 = q 127 (it was 127 before too, but only because every bright pixel was clipped)."""
    image, pixels = ramp_photo(tmp_path / "ramp.png")
    model = channel_mean_model(tmp_path / "i8.onnx", TensorProto.INT8)
    assert run_probe(model, image, tmp_path / "out", "--baseline", "white").exit_code == 0
    got = np.load(tmp_path / "out" / "ramp.npy")
    np.testing.assert_allclose(got, hand_map(pixels[..., 0] - 128, 127.0), atol=1e-5)


@pytest.mark.parametrize(
    "elem, flags, says",
    [
        (TensorProto.INT8, ["--mean", "0"], "int8 holds -128..127"),  # pixels 0..255 as they are
        (TensorProto.UINT8, ["--mean", "128"], "uint8 holds 0..255"),  # pixel - 128 in a uint8
        (TensorProto.FLOAT16, ["--scale", "1", "--std", "0.001"], "float16 holds +-65504"),  # overflow to inf
    ],
)
def test_values_the_type_cannot_hold_are_refused_before_any_image(tmp_path, elem, flags, says):
    image, _ = ramp_photo(tmp_path / "ramp.png")
    model = channel_mean_model(tmp_path / "m.onnx", elem)
    result = run_probe(model, image, tmp_path / "out", *flags)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], result.stderr
    assert "clipped" in lines[0]
    assert not (tmp_path / "out" / "ramp.json").exists()


def test_info_shows_the_real_formula(tmp_path):
    model = channel_mean_model(tmp_path / "i8.onnx", TensorProto.INT8)
    text = occlude("info", model)
    assert text.exit_code == 0
    assert "input = round((pixel * 1 - 128) / 1) as int8 (-128..127)" in text.stdout
    document = json.loads(occlude("info", model, "--json").stdout)
    assert document["preprocessing"]["mean"] == [128.0] and document["preprocessing"]["dtype"] == "int8"


def test_a_dequantized_int8_input_uses_the_graphs_scale_and_zero_point(tmp_path):
    """int8 -> DequantizeLinear(1/255, -128): by default the pixels are stored as integers (pixel - 128, so the
    network sees pixel / 255 and zero = q 0); given the real-valued preprocessing (--scale 1/255) occlude
    quantizes with the graph's numbers, q = round(x * 255) - 128, the same values, and zero is the zero point
    (real 0). A real-valued preprocessing the quantization cannot hold is refused."""
    image, pixels = ramp_photo(tmp_path / "ramp.png")
    model = channel_mean_model(tmp_path / "dq.onnx", TensorProto.INT8, dequantize=(1 / 255, -128))
    assert OnnxClassifier(model, device="cpu").input_quantization == pytest.approx((1 / 255, -128.0))
    real = pixels[..., 0] / 255

    assert run_probe(model, image, tmp_path / "a").exit_code == 0
    record = json.loads((tmp_path / "a" / "ramp.json").read_text())
    assert record["score"]["original"] == pytest.approx(175 / 255, abs=1e-6)
    assert record["params"]["preprocessing"]["quantization"] is None
    np.testing.assert_allclose(np.load(tmp_path / "a" / "ramp.npy"), hand_map(real, 128 / 255), atol=1e-6)

    assert run_probe(model, image, tmp_path / "b", "--scale", 1 / 255).exit_code == 0
    record = json.loads((tmp_path / "b" / "ramp.json").read_text())
    assert record["score"]["original"] == pytest.approx(175 / 255, abs=1e-6)
    assert record["params"]["preprocessing"]["quantization"] == pytest.approx({"scale": 1 / 255, "zero_point": -128})
    np.testing.assert_allclose(np.load(tmp_path / "b" / "ramp.npy"), hand_map(real, 0.0), atol=1e-6)

    result = run_probe(model, image, tmp_path / "c", "--mean", "0.5", "--std", "0.5")  # -1..1 does not fit
    assert result.exit_code == 1 and "int8 holds -128..127" in result.stderr


def test_a_quantization_in_the_metadata_applies(tmp_path):
    """occlude.preprocess {"scale": 1, "quantization": {"scale": 2, "zero_point": -100}}: q = round(pixel / 2) - 100
    (half to even, as QuantizeLinear rounds), fed to a Cast model whose output is the mean of q."""
    image, pixels = ramp_photo(tmp_path / "ramp.png")
    meta = {"occlude.preprocess": json.dumps({"scale": 1, "quantization": {"scale": 2, "zero_point": -100}})}
    model = channel_mean_model(tmp_path / "m.onnx", TensorProto.INT8, metadata=meta)
    assert run_probe(model, image, tmp_path / "out").exit_code == 0
    record = json.loads((tmp_path / "out" / "ramp.json").read_text())
    assert record["score"]["original"] == pytest.approx(float(np.mean(np.rint(pixels[..., 0] / 2) - 100)), abs=1e-6)
    assert record["params"]["preprocessing"]["formula"].startswith("input = round((pixel * 1 - 0) / 1 / 2) - 100")
    bad = {"occlude.preprocess": json.dumps({"quantization": {"zero_point": 3}})}
    broken = channel_mean_model(tmp_path / "bad.onnx", TensorProto.INT8, metadata=bad)
    result = run_probe(broken, image, tmp_path / "bad")
    assert result.exit_code == 1 and "quantization" in result.stderr


def test_cast_checked_rounds_and_never_clips():
    np.testing.assert_array_equal(cast_checked([127.4, -128.4, 0.5, 1.5], "int8"), [127, -128, 0, 2])
    for values, dtype in (([127.6], "int8"), ([-0.6], "uint8"), ([7e4], "float16"), ([np.nan], "int8")):
        with pytest.raises(OccludeError, match="do not fit"):
            cast_checked(values, dtype, "probe")
    with pytest.raises(OccludeError, match=r"probe: 1 of 4 values \(25%\).*int8 holds -128..127"):
        cast_checked([1, 2, 3, 300], "int8", "probe")
    assert cast_checked(np.array([np.nan], np.float64), "float32").dtype == np.float32  # NaN stays NaN in floats


def test_library_preprocessing_is_checked_over_the_pixel_range(tmp_path):
    with pytest.raises(OccludeError, match="pixels 0..255 become 0..255"):
        Preprocessing(size=(4, 4), scale=1.0, dtype="int8")
    with pytest.raises(OccludeError, match="float16"):
        Preprocessing(size=(4, 4), scale=1.0, std=(1e-3,), dtype="float16")
    pre = Preprocessing(size=(1, 1), scale=1.0, mean=(128.0,), dtype="int8")
    assert pre.normalise(np.array([[[0.0, 128.0, 255.0]]])).ravel().tolist() == [-128, 0, 127]
    model = channel_mean_model(tmp_path / "i8.onnx", TensorProto.INT8)
    resolved = resolve_preprocessing(OnnxClassifier(model, device="cpu"))
    assert (resolved.scale, resolved.mean, resolved.std) == (1.0, (128.0,), (1.0,))


def test_a_volume_that_overflows_float16_is_refused():
    data = np.full((4, 4, 4), 1e5, dtype=np.float32)
    volume = Volume(data=data, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), kind="nifti")
    pre = VolumePreprocessing(size=(4, 4, 4), layout="NCDHW", dtype="float16")
    with pytest.raises(OccludeError, match="float16 holds"):
        prepare_volume(volume, pre)
