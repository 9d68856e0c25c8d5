"""explain() as a newcomer calls it (QA pass 5): an image as a numpy array (any layout and dtype a notebook holds)
gives the map of the same pixels read from a file, or one error naming ``image``; a float array's map equals a
slow loop through onnxruntime by hand; wrong types name their parameter; results print short."""

import threading

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from occlude_cli import ExplainOptions, OccludeError, OnnxClassifier, explain

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

EFFNET = str(SAMPLE_MODELS / "efficientnet_lite0.onnx")
DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
CAT = SAMPLE_IMAGES / "cat.jpg"
DIGIT = SAMPLE_IMAGES / "digit_3.png"


@pytest.fixture(scope="module")
def effnet():
    return OnnxClassifier(EFFNET)


@pytest.fixture(scope="module")
def digits():
    return OnnxClassifier(DIGITS)


def test_a_uint8_array_gives_the_map_of_its_file_bit_for_bit(effnet):
    pixels = np.asarray(Image.open(CAT).convert("RGB"))  # (H, W, 3) uint8: what a notebook holds
    from_file = explain(effnet, CAT, patch=56, stride=56)
    from_array = explain(effnet, pixels, patch=56, stride=56)
    assert np.array_equal(from_array.maps, from_file.maps)
    assert np.array_equal(from_array.occlusion.window_scores, from_file.occlusion.window_scores)
    assert from_array.image.path is None and from_array.image.original_size == from_file.image.original_size
    chw = explain(effnet, np.ascontiguousarray(pixels.transpose(2, 0, 1)), patch=56, stride=56)
    assert np.array_equal(chw.maps, from_file.maps)
    mirrored = pixels[:, ::-1]  # a non-contiguous view: the same map as its copy
    assert np.array_equal(
        explain(effnet, mirrored, patch=56, stride=56).maps,
        explain(effnet, np.ascontiguousarray(mirrored), patch=56, stride=56).maps,
    )


def test_grey_and_rgba_arrays_are_read_as_their_files(digits, tmp_path):
    grey = np.asarray(Image.open(DIGIT).convert("L"))
    assert grey.ndim == 2
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert np.array_equal(explain(digits, grey, patch=2).maps, explain(digits, tmp_path / "grey.png", patch=2).maps)
    rgb = np.asarray(Image.open(DIGIT).convert("RGB"))
    alpha = np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1))  # transparency composited onto white
    rgba = np.dstack([rgb, alpha])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(explain(digits, rgba, patch=2).maps, explain(digits, tmp_path / "rgba.png", patch=2).maps)


def test_a_float_array_in_0_1_is_occluded_exactly_as_a_slow_loop_by_hand(effnet):
    pixels = np.asarray(Image.open(CAT).convert("RGB").resize((224, 224)), dtype=np.float64) / 255.0
    pixels = pixels * 0.9 + 0.05  # not 8-bit levels: a float input is never rounded
    result = explain(effnet, pixels, patch=56, stride=28, baseline="black", target=285)
    assert result.score_kind == "softmax"
    session = ort.InferenceSession(EFFNET, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def probability(hwc):  # the model's documented preprocessing: (pixel - 127) / 128, NCHW float32
        x = ((hwc * 255.0 - 127.0) / 128.0).astype(np.float32).transpose(2, 0, 1)[None]
        logits = session.run(None, {name: x})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        return (e / e.sum())[285]

    original = probability(pixels)
    sums, counts = np.zeros((224, 224)), np.zeros((224, 224))
    for y in range(0, 224 - 56 + 1, 28):
        for x in range(0, 224 - 56 + 1, 28):
            occluded = pixels.copy()
            occluded[y : y + 56, x : x + 56] = 0.0  # black
            sums[y : y + 56, x : x + 56] += original - probability(occluded)
            counts[y : y + 56, x : x + 56] += 1
    reference = sums / counts
    assert result.map.dtype == np.float64 and result.map.shape == (224, 224)
    assert np.abs(result.map - reference).max() <= 1e-5 * np.abs(reference).max()
    as_float32 = explain(effnet, pixels.astype(np.float32), patch=56, stride=28, baseline="black", target=285)
    assert np.abs(as_float32.map - reference).max() <= 1e-5 * np.abs(reference).max()


def test_a_grey_float_array_matches_its_uint8_levels(digits):
    grey = np.asarray(Image.open(DIGIT).convert("L"))
    assert np.allclose(explain(digits, grey / 255.0, patch=2).map, explain(digits, grey, patch=2).map, atol=1e-6)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((8, 8, 3), dtype=bool), "dtype bool"),
        (np.zeros((8, 8, 3), dtype=np.int64), "dtype int64"),
        (np.full((8, 8, 3), 255.0), "0..1"),
        (np.full((8, 8, 3), -0.5, dtype=np.float32), "0..1"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((0, 0, 3), dtype=np.uint8), "empty"),
        (np.zeros((5,), dtype=np.uint8), "1-D"),
        (np.zeros((1, 8, 8, 3), dtype=np.uint8), "4-D"),
        (np.zeros((8, 8, 5), dtype=np.uint8), "channels"),
    ],
)
def test_an_array_that_is_no_image_is_one_error_naming_image(digits, array, words):
    with pytest.raises(OccludeError) as caught:
        explain(digits, array, patch=2)
    assert caught.value.params == ("image",)
    assert str(caught.value).startswith("image ") and words in str(caught.value)


def test_wrong_types_name_their_parameter(digits):
    for image in (None, [[0, 1], [2, 3]], 5):
        with pytest.raises(OccludeError) as caught:
            explain(digits, image, patch=2)
        assert caught.value.params == ("image",) and "image must be a path" in str(caught.value)
    with pytest.raises(OccludeError) as caught:
        explain(5, DIGIT, patch=2)
    assert caught.value.params == ("model",) and "model must be" in str(caught.value)
    with pytest.raises(OccludeError) as caught:
        explain(digits, DIGIT, {"patch": 2})
    assert caught.value.params == ("options",) and "ExplainOptions" in str(caught.value)
    with pytest.raises(OccludeError) as caught:
        explain(digits, DIGIT, patch=2, labels=["one"])
    assert caught.value.params == ("labels",) and str(caught.value).startswith("labels has 1 name")
    with pytest.raises(OccludeError) as caught:
        explain(digits, DIGIT, patch=2, top_k=2.5)
    assert caught.value.params == ("top_k",) and "whole number" in str(caught.value)
    assert explain(digits, DIGIT, ExplainOptions(patch=2), stride=1).params["stride"] == [1, 1]


def test_results_print_short(effnet):
    result = explain(effnet, CAT, patch=56, stride=56, top_k=2)
    text = repr(result)
    assert len(text) < 600, text
    assert "target=285" in text and "'Egyptian cat'" in text and "(2, 224, 224)" in text
    occlusion = repr(result.occlusion)
    assert len(occlusion) < 300 and "windows=16" in occlusion and "forward_passes=17" in occlusion


def test_two_threads_on_one_model_give_the_serial_maps(effnet):
    pixels = np.asarray(Image.open(CAT).convert("RGB"))
    serial = [explain(effnet, pixels, patch=32, stride=16).map, explain(effnet, CAT, patch=32, stride=16).map]
    out = [None, None]

    def go(i, image):
        out[i] = explain(effnet, image, patch=32, stride=16).map

    threads = [threading.Thread(target=go, args=(0, pixels)), threading.Thread(target=go, args=(1, CAT))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(out[0], serial[0]) and np.array_equal(out[1], serial[1])


def test_the_folder_calls_name_their_parameters(tmp_path):
    from occlude_cli import ModelOptions, open_model, run_folder

    cases = [
        (lambda: run_folder(DIGITS, [DIGIT], None, patch=2), "out", "out must be a path"),
        (lambda: run_folder(5, [DIGIT], tmp_path / "a", patch=2), "model", "model must be a path or an OnnxClassifier"),
        (lambda: open_model(5), "model", "model must be a path"),
        (
            lambda: run_folder(DIGITS, [DIGIT], tmp_path / "b", patch=2, model_options={"device": "cpu"}),
            "model_options",
            "model_options must be a ModelOptions",
        ),
        (
            lambda: run_folder(DIGITS, [DIGIT], tmp_path / "c", model_options=ModelOptions(max_memory="2G")),
            "max_memory",
            "max_memory is a number of bytes",
        ),
        (lambda: OnnxClassifier(DIGITS, device="tpu"), "device", "unknown device 'tpu'"),
    ]
    for call, param, words in cases:
        with pytest.raises(OccludeError) as caught:
            call()
        assert caught.value.params == (param,) and words in str(caught.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_engine_names_its_parameters():
    from occlude_cli import occlusion_sensitivity, window_grid

    x = np.zeros((3, 8, 8))

    def score(batch):
        return batch.reshape(len(batch), -1)[:, :2]

    for kwargs, param in [
        (dict(patch=(0, 0)), "patch"),
        (dict(patch=(9, 9)), "patch"),
        (dict(patch=(2, 2), stride=(3, 3)), "stride"),
        (dict(patch=(2, 2), baseline=np.zeros((3, 4, 4))), "baseline"),
        (dict(patch=(2, 2), batch_size=0), "batch_size"),
    ]:
        with pytest.raises(OccludeError) as caught:
            occlusion_sensitivity(x, score, **kwargs)
        assert caught.value.params == (param,), kwargs
    with pytest.raises(OccludeError) as caught:
        window_grid((8, 8), (2, 2), (1, 1), region=(0, 0, 9, 9))
    assert caught.value.params == ("region",)


def test_write_explanation_never_writes_outside_its_folder(digits, tmp_path):
    from occlude_cli import write_explanation

    result = explain(digits, DIGIT, patch=2)
    for stem in ("../escaped", "/tmp/escaped", "a/../../escaped", "", "."):
        with pytest.raises(OccludeError) as caught:
            write_explanation(result, tmp_path / "out", stem)
        assert caught.value.params == ("stem",)
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["out"])
    written = write_explanation(result, tmp_path / "out", "sub/digit")  # a folder run's nested stem
    assert all(p.is_relative_to(tmp_path / "out" / "sub") for p in written)


def test_compare_image_says_how_to_compare_a_map_in_memory(tmp_path):
    from occlude_cli import compare_image

    with pytest.raises(OccludeError) as caught:
        compare_image(DIGITS, DIGIT, np.zeros((8, 8)), tmp_path / "compare", patch=2)
    assert caught.value.params == ("other_map",) and "compare_maps(" in str(caught.value)
    assert not (tmp_path / "compare").exists()


def test_a_scale_study_of_one_patch_and_labels_as_one_string_name_their_parameter(digits):
    from occlude_cli import explain_scales

    with pytest.raises(OccludeError) as caught:
        explain_scales(digits, DIGIT, [2])
    assert caught.value.params == ("patches",) and "got 1" in str(caught.value)
    with pytest.raises(OccludeError) as caught:
        explain(digits, DIGIT, patch=2, labels="0123456789")  # ten characters, never ten labels
    assert caught.value.params == ("labels",) and "one per class" in str(caught.value)


def test_a_target_is_an_index_or_a_label_never_a_fraction(digits):
    assert explain(digits, DIGIT, patch=2, target=np.int64(7)).target == 7
    assert explain(digits, DIGIT, patch=2, target=7.0).target == 7  # class 7, not the label "7.0"
    for target in (3.5, True):
        with pytest.raises(OccludeError) as caught:
            explain(digits, DIGIT, patch=2, target=target)
        assert caught.value.params == ("target",) and "class index or a label" in str(caught.value)
