"""Model introspection and scoring on real ONNX models run by onnxruntime."""

import json

import numpy as np
import pytest

from occlude_cli import OccludeError, OnnxClassifier, explain, resolve_preprocessing
from occlude_cli.loaders.model import looks_like_probabilities, resolve_target
from onnx_models import feature_map_model, rectangle_model

from conftest import SAMPLE_MODELS


def test_sample_model_metadata_gives_preprocessing_and_labels():
    model = OnnxClassifier(SAMPLE_MODELS / "efficientnet_lite0.onnx", device="cpu")
    pre = resolve_preprocessing(model)
    assert pre.size == (224, 224) and pre.layout == "NCHW" and pre.color == "rgb"
    assert pre.mean == (127.0, 127.0, 127.0) and pre.std == (128.0, 128.0, 128.0) and pre.scale == 1.0
    assert len(model.labels) == 1000 and model.labels[285] == "Egyptian cat"
    assert model.fixed_batch is None and model.provider == "CPUExecutionProvider"
    digits = OnnxClassifier(SAMPLE_MODELS / "digits_cnn.onnx", device="cpu")
    assert resolve_preprocessing(digits).color == "gray" and digits.labels == [str(i) for i in range(10)]


def test_nhwc_model_gives_the_same_map_as_nchw(tmp_path, noise_image):
    nchw = rectangle_model(tmp_path / "nchw.onnx", layout="NCHW")
    nhwc = rectangle_model(tmp_path / "nhwc.onnx", layout="NHWC")
    assert resolve_preprocessing(OnnxClassifier(nhwc)).layout == "NHWC"
    a = explain(nchw, noise_image, patch=3, stride=2, score="logit", target=0)
    b = explain(nhwc, noise_image, patch=3, stride=2, score="logit", target=0)
    np.testing.assert_allclose(a.map, b.map, atol=1e-6)


def test_fixed_batch_model_pads_the_last_chunk(tmp_path, noise_image):
    dynamic = rectangle_model(tmp_path / "dyn.onnx")
    fixed = rectangle_model(tmp_path / "fixed.onnx", batch=1)
    model = OnnxClassifier(fixed, batch_rewrite=False)
    assert model.fixed_batch == 1
    a = explain(dynamic, noise_image, patch=5, stride=3, score="logit", target=0, batch_size=4)
    b = explain(model, noise_image, patch=5, stride=3, score="logit", target=0, batch_size=4)
    np.testing.assert_allclose(a.map, b.map, atol=1e-6)
    fixed3 = OnnxClassifier(rectangle_model(tmp_path / "fixed3.onnx", batch=3))
    assert fixed3.run(np.zeros((5, 1, 16, 16), np.float32)).shape == (5, 3)  # 3 + 2 padded to 3


def test_probability_outputs_are_not_softmaxed_twice(tmp_path, noise_image):
    path = rectangle_model(tmp_path / "soft.onnx", softmax=True)
    model = OnnxClassifier(path)
    raw = model.run(np.ones((1, 1, 16, 16), np.float32))
    assert looks_like_probabilities(raw)
    result = explain(model, noise_image, patch=4, stride=4)
    direct = model.run(result.image.model_input[None])[0]
    np.testing.assert_allclose(result.occlusion.original_scores, direct, atol=1e-6)
    with pytest.raises(OccludeError, match="outputs probabilities"):
        explain(model, noise_image, patch=4, stride=4, score="logit")


def test_logit_model_gets_softmax_for_prob(tmp_path, noise_image):
    model = OnnxClassifier(rectangle_model(tmp_path / "logits.onnx"))
    result = explain(model, noise_image, patch=4, stride=4)
    assert result.occlusion.original_scores.sum() == pytest.approx(1.0)


def test_several_outputs_need_a_choice(tmp_path, noise_image):
    path = rectangle_model(tmp_path / "two.onnx", extra_output=True)
    with pytest.raises(OccludeError, match="choose one with output_name NAME"):
        OnnxClassifier(path)
    with pytest.raises(OccludeError, match="no output named 'nope'"):
        OnnxClassifier(path, output_name="nope")
    model = OnnxClassifier(path, output_name="scores")
    assert explain(model, noise_image, patch=4, stride=4).maps.shape == (1, 16, 16)


def test_extra_inputs_are_a_clear_error(tmp_path):
    path = rectangle_model(tmp_path / "extra.onnx", extra_input=True)
    with pytest.raises(OccludeError, match="besides the image") as raised:  # no choice of input would help
        OnnxClassifier(path)
    assert "choose one" not in str(raised.value)
    with pytest.raises(OccludeError, match="besides the image"):
        OnnxClassifier(path, input_name="image")


def test_not_a_classifier(tmp_path, noise_image):
    path = feature_map_model(tmp_path / "features.onnx")
    with pytest.raises(OccludeError, match=r"classifier output \(batch, classes\)"):
        explain(path, noise_image, patch=4, task="classify")
    # task auto reads an (N, C, H, W) output as a segmentation (one channel: its sigmoid over the mask)
    assert explain(path, noise_image, patch=4).params["task"]["task"] == "segment"


def test_dynamic_spatial_size_needs_size(tmp_path, noise_image):
    path = rectangle_model(tmp_path / "dyn_hw.onnx", spatial=("H", "W"))
    model = OnnxClassifier(path)
    with pytest.raises(OccludeError, match="dynamic height/width: give size") as info:  # the parameter, not a flag
        resolve_preprocessing(model)
    assert info.value.params == ("size",)
    pre = resolve_preprocessing(model, size=(16, 20))
    assert pre.size == (16, 20)
    assert explain(model, noise_image, preprocessing=pre, patch=4).map.shape == (16, 20)
    fixed = OnnxClassifier(rectangle_model(tmp_path / "fixed_hw.onnx"))
    with pytest.raises(OccludeError, match="conflicts"):
        resolve_preprocessing(fixed, size=32)


def test_metadata_preprocessing_is_used_and_flags_override_it(tmp_path):
    meta = {
        "occlude.preprocess": json.dumps({"scale": 1.0, "mean": [100.0], "std": [2.0], "resize": "center-crop"}),
        "occlude.labels": json.dumps(["inside", "nothing", "minus"]),
    }
    model = OnnxClassifier(rectangle_model(tmp_path / "meta.onnx", metadata=meta))
    pre = resolve_preprocessing(model)
    assert (pre.scale, pre.mean, pre.std, pre.resize) == (1.0, (100.0,), (2.0,), "center-crop")
    assert resolve_preprocessing(model, mean=[0.0], resize="stretch").mean == (0.0,)
    assert model.labels == ["inside", "nothing", "minus"]
    assert resolve_target("Minus", model.labels, 3) == 2
    with pytest.raises(OccludeError, match="not valid JSON"):
        OnnxClassifier(rectangle_model(tmp_path / "bad.onnx", metadata={"occlude.labels": "{not json"}))


def test_targets_by_index_and_name():
    labels = ["cat", "dog", "hot dog"]
    assert resolve_target("1", labels, 3) == 1
    assert resolve_target("Hot Dog", labels, 3) == 2
    with pytest.raises(OccludeError, match="out of range"):
        resolve_target(3, labels, 3)
    with pytest.raises(OccludeError, match="out of range"):
        resolve_target(-1, labels, 3)
    with pytest.raises(OccludeError, match="did you mean: dog, hot dog"):
        resolve_target("do", labels, 3)
    with pytest.raises(OccludeError, match="no labels"):
        resolve_target("cat", None, 3)


def test_model_file_errors(tmp_path):
    with pytest.raises(OccludeError, match="model not found"):
        OnnxClassifier(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf" * 10)
    with pytest.raises(OccludeError, match="cannot load"):
        OnnxClassifier(junk)
    with pytest.raises(OccludeError, match="unknown device"):
        OnnxClassifier(SAMPLE_MODELS / "digits_cnn.onnx", device="tpu")


def test_cuda_unavailable_says_how_to_install():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(OccludeError, match=r"occlude\[cuda\]"):
        OnnxClassifier(SAMPLE_MODELS / "digits_cnn.onnx", device="cuda")


def test_io_binding_path_gives_the_same_scores(noise_image):
    plain = OnnxClassifier(SAMPLE_MODELS / "digits_cnn.onnx", device="cpu")
    bound = OnnxClassifier(SAMPLE_MODELS / "digits_cnn.onnx", device="cpu", io_binding=True)
    assert bound.io_binding and not plain.io_binding and bound.describe()["io_binding"] is True
    batch = np.random.default_rng(0).uniform(size=(5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(bound.run(batch), plain.run(batch), atol=1e-6)
    np.testing.assert_allclose(bound.run(batch[:2]), plain.run(batch[:2]), atol=1e-6)  # a new shape rebinds
    a = explain(plain, noise_image, patch=2, batch_size=7)
    b = explain(bound, noise_image, patch=2, batch_size=7)
    np.testing.assert_allclose(a.map, b.map, atol=1e-9)


def test_fixed_batch_one_model_is_rewritten_to_run_batched(tmp_path, noise_image):
    fixed = OnnxClassifier(rectangle_model(tmp_path / "fixed.onnx", batch=1))
    assert fixed.fixed_batch is None and "rewritten" in fixed.describe()["batching"]
    assert fixed.run(np.zeros((5, 1, 16, 16), np.float32)).shape == (5, 3)
    kept = OnnxClassifier(rectangle_model(tmp_path / "fixed.onnx", batch=1), batch_rewrite=False)
    assert kept.fixed_batch == 1 and kept.batching == "fixed batch 1"
    a = explain(fixed, noise_image, patch=4, stride=2, score="logit", target=0)
    b = explain(kept, noise_image, patch=4, stride=2, score="logit", target=0)
    np.testing.assert_allclose(a.map, b.map, atol=1e-6)
