"""`occlude compare` / `occlude check` and the validate library, on real ONNX models run by onnxruntime.

Ground truth comes from tests/onnx_models.rectangle_model, whose class 0 looks only at a known rectangle,
and from the sample CNNs, where the occlusion map must beat random maps on the deletion curve.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import explain
from occlude_cli.cli import app
from occlude_cli.errors import OccludeError
from occlude_cli.loaders.model import OnnxClassifier
from occlude_cli.loaders.images import Preprocessing, prepare_image
from occlude_cli.loaders.maps import (
    box_mask,
    load_saliency_map,
    mask_from_file,
    read_saliency_map,
    region_mask,
    resize_map,
)
from occlude_cli.analyses.checks import check_image
from occlude_cli.analyses.validate import compare_maps, faithfulness

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS
from onnx_models import rectangle_model


RECT = (4, 6, 9, 12)  # y0, x0, y1, x1 in the 16x16 model input
RECT_BOX = "6,4,12,9"  # the same as x0,y0,x1,y1 image pixels (16x16 image, stretch)
OTHER_BOX = "0,10,5,16"
DIGITS = SAMPLE_MODELS / "digits_cnn.onnx"
EFFICIENTNET = SAMPLE_MODELS / "efficientnet_lite0.onnx"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def rect_model(tmp_path_factory) -> Path:
    return rectangle_model(tmp_path_factory.mktemp("models") / "rect.onnx", rect=RECT)


def save_grey(path: Path, array) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8), "L").save(path)
    return path


def rect_mask(path: Path, scale: int = 2, rect=RECT) -> Path:
    """A mask PNG at ``scale`` times the 16x16 image, white over ``rect``."""
    y0, x0, y1, x1 = rect
    mask = np.zeros((16 * scale, 16 * scale), dtype=np.uint8)
    mask[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = 255
    return save_grey(path, mask)


def read_check(out: Path) -> dict:
    return json.loads((out / "check.json").read_text())


# ------------------------------------------------------------------------------ occlude check


def test_each_validation_command_is_registered_once():
    names = [c.name for c in app.registered_commands]
    assert names.count("compare") == 1 and names.count("check") == 1


def test_check_passes_for_the_box_the_model_looks_at(rect_model, noise_image, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "check", rect_model, noise_image, "--box", RECT_BOX, "--min-energy", "0.9", "--require-peak", "--out", out
    )
    assert result.exit_code == 0, result.stderr
    document = read_check(out)
    assert document["counts"] == {"pass": 1, "fail": 0, "error": 0}
    row = document["images"][0]
    assert row["status"] == "pass" and row["pointing_game"] is True
    assert row["energy_share"] == pytest.approx(1.0, abs=1e-4)  # patch 1 on 16x16: the map is the rectangle
    assert row["region_fraction"] == pytest.approx(5 * 6 / 256)
    assert "pass" in result.stdout
    csv_lines = (out / "check.csv").read_text().splitlines()
    assert csv_lines[0].startswith("path,status,mask") and len(csv_lines) == 2


def test_check_fails_with_exit_4_for_another_box(rect_model, noise_image, tmp_path):
    out = tmp_path / "out"
    result = invoke("check", rect_model, noise_image, "--box", OTHER_BOX, "--min-energy", "0.5", "--out", out)
    assert result.exit_code == 4
    row = read_check(out)["images"][0]
    assert row["status"] == "fail" and row["energy_share"] == pytest.approx(0.0)
    assert "energy share 0.000 < 0.5" in row["reasons"][0]
    peak_only = invoke("check", rect_model, noise_image, "--box", OTHER_BOX, "--require-peak", "--out", out, "-q")
    assert peak_only.exit_code == 4
    assert "peak outside the region" in peak_only.stderr and peak_only.stdout == ""
    # without thresholds the command only reports
    assert invoke("check", rect_model, noise_image, "--box", OTHER_BOX, "--out", out, "-q").exit_code == 0


def test_check_with_a_coarse_patch_still_separates_the_boxes(rect_model, noise_image, tmp_path):
    args = ("--patch", "3", "--stride", "1", "--min-energy", "0.5", "--require-peak", "--out", tmp_path, "-q")
    assert invoke("check", rect_model, noise_image, "--box", RECT_BOX, *args).exit_code == 0
    energy = read_check(tmp_path)["images"][0]["energy_share"]
    assert 0.5 < energy < 1.0  # windows straddling the border spread some mass outside
    assert invoke("check", rect_model, noise_image, "--box", OTHER_BOX, *args).exit_code == 4


def test_check_box_in_original_pixels_of_a_larger_image(rect_model, tmp_path):
    image = save_grey(tmp_path / "wide.png", np.random.default_rng(1).integers(1, 256, (32, 48)))
    # stretch 48x32 -> 16x16: x scale 3, y scale 2; the rectangle is x 18..36, y 8..18 in the image
    assert (
        invoke(
            "check", rect_model, image, "--box", "18,8,36,18", "--min-energy", "0.99", "--out", tmp_path / "o", "-q"
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "check", rect_model, image, "--box", "0,0,18,8", "--min-energy", "0.5", "--out", tmp_path / "o", "-q"
        ).exit_code
        == 4
    )


def test_check_with_a_mask_png(rect_model, noise_image, tmp_path):
    good = rect_mask(tmp_path / "good.png", scale=2)
    bad = rect_mask(tmp_path / "bad.png", scale=3, rect=(10, 0, 16, 5))
    out = tmp_path / "out"
    ok = invoke("check", rect_model, noise_image, "--mask", good, "--min-energy", "0.9", "--require-peak", "--out", out)
    assert ok.exit_code == 0, ok.stderr
    assert read_check(out)["images"][0]["mask"] == str(good)
    assert invoke("check", rect_model, noise_image, "--mask", bad, "--require-peak", "--out", out).exit_code == 4
    # the --mask file inside an input folder is not itself checked as an image
    folder = tmp_path / "data"
    folder.mkdir()
    save_grey(folder / "img.png", np.random.default_rng(5).integers(1, 256, (16, 16)))
    shared = rect_mask(folder / "region.png", scale=1)
    assert invoke("check", rect_model, folder, "--mask", shared, "--require-peak", "--out", out, "-q").exit_code == 0
    assert [Path(r["path"]).name for r in read_check(out)["images"]] == ["img.png"]


def test_check_folder_with_naming_convention_masks_and_a_missing_mask(rect_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        save_grey(data / f"{name}.png", rng.integers(1, 256, (16, 16)))
    rect_mask(data / "a.mask.png", scale=1)
    rect_mask(data / "b.mask.png", scale=1, rect=(10, 0, 16, 5))  # the wrong place: b fails
    out = tmp_path / "out"
    result = invoke("check", rect_model, data, "--min-energy", "0.5", "--out", out, "--json")
    assert result.exit_code == 3  # c could not be checked: takes precedence over b's failure
    document = json.loads(result.stdout)
    assert document == read_check(out)
    assert document["counts"] == {"pass": 1, "fail": 1, "error": 1}
    rows = {Path(r["path"]).name: r for r in document["images"]}
    assert set(rows) == {"a.png", "b.png", "c.png"}  # the masks are not inputs
    assert rows["a.png"]["status"] == "pass" and rows["b.png"]["status"] == "fail"
    assert rows["c.png"]["status"] == "error" and "c.mask.png" in rows["c.png"]["error"]
    assert "c.mask.png" in result.stderr
    assert document["summary"]["checked"] == 2
    assert document["summary"]["pointing_game_accuracy"] == pytest.approx(0.5)
    # once c has a mask, only b's failure remains: exit 4
    rect_mask(data / "c.mask.png", scale=1)
    assert invoke("check", rect_model, data, "--min-energy", "0.5", "--out", out, "-q").exit_code == 4
    assert read_check(out)["counts"] == {"pass": 2, "fail": 1, "error": 0}


def test_check_with_a_masks_folder(rect_model, tmp_path):
    data, masks = tmp_path / "data", tmp_path / "masks"
    (data / "sub").mkdir(parents=True)
    masks.mkdir()
    save_grey(data / "sub" / "x.png", np.random.default_rng(3).integers(1, 256, (16, 16)))
    (masks / "sub").mkdir()
    rect_mask(masks / "sub" / "x.png", scale=4)
    result = invoke("check", rect_model, data, "-r", "--masks", masks, "--require-peak", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    assert read_check(tmp_path / "o")["images"][0]["mask"] == str(masks / "sub" / "x.png")


def test_check_bad_inputs_give_one_red_line(rect_model, noise_image, tmp_path):
    out = tmp_path / "out"
    cases = [
        (("--box", RECT_BOX, "--min-energy", "1.5"), 1, "--min-energy must be a fraction in [0, 1]"),
        (("--box", "1,2,3"), 1, "--box takes four numbers"),
        (("--box", "5,5,5,9"), 1, "is empty"),
        (("--box", RECT_BOX, "--mask", noise_image), 1, "give one region source"),
        (("--mask", tmp_path / "nope.png"), 1, "mask not found"),
        (("--masks", noise_image), 1, "--masks must be a folder"),
    ]
    text = tmp_path / "mask.png"
    text.write_text("not an image")
    cases.append((("--mask", text), 1, "bad mask"))
    cases.append((("--mask", save_grey(tmp_path / "black.png", np.zeros((4, 4)))), 1, "is empty"))
    for extra, code, message in cases:
        result = invoke("check", rect_model, noise_image, *extra, "--out", out)
        assert result.exit_code == code, (extra, result.stderr)
        assert message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    outside = invoke("check", rect_model, noise_image, "--box", "20,20,30,30", "--out", out, "-q")
    assert outside.exit_code == 3 and "lies outside the 16x16 image" in outside.stderr
    assert read_check(out)["images"][0]["status"] == "error"
    missing_model = invoke("check", tmp_path / "missing.onnx", noise_image, "--box", RECT_BOX, "--out", out)
    assert missing_model.exit_code == 1 and "model not found" in missing_model.stderr


def test_check_image_library_result(rect_model, noise_image):
    e = explain(str(rect_model), noise_image)
    mask = region_mask(e.image, box=(6, 4, 12, 9))  # the library takes numbers, the CLI text
    assert mask.sum() == 30 and mask[4:9, 6:12].all()
    result = check_image(e, mask, min_energy=0.5, require_peak=True)
    assert result["passed"] and result["reasons"] == [] and result["target"]["index"] == 0
    miss = check_image(e, ~mask, min_energy=0.5, require_peak=True)
    assert not miss["passed"] and len(miss["reasons"]) == 2
    with pytest.raises(OccludeError, match="min_energy must be a fraction") as info:  # the parameter, not a flag
        check_image(e, mask, min_energy=-0.1)
    assert info.value.params == ("min_energy",)


# ---------------------------------------------------------------------------------- regions


CROP = Preprocessing(size=(16, 16), color="gray", resize="center-crop")


def wide_image():
    # 32 wide x 16 high, center-cropped to the middle 16x16: crop box (8, 0, 24, 16)
    return Image.fromarray(np.random.default_rng(4).integers(0, 256, (16, 32)).astype(np.uint8), "L")


def test_box_and_mask_file_map_through_the_center_crop(tmp_path):
    prepared = prepare_image(wide_image(), CROP)
    assert prepared.crop_box == (8.0, 0.0, 24.0, 16.0)
    expected = np.zeros((16, 16), dtype=bool)
    expected[0:4, 0:4] = True
    np.testing.assert_array_equal(box_mask((8, 0, 12, 4), prepared), expected)
    full = np.zeros((16, 32), dtype=np.uint8)
    full[0:4, 8:12] = 255
    np.testing.assert_array_equal(mask_from_file(save_grey(tmp_path / "m.png", full), prepared), expected)
    half = np.zeros((8, 16), dtype=np.uint8)  # half resolution: stretched over the image
    half[0:2, 4:6] = 255
    np.testing.assert_array_equal(mask_from_file(save_grey(tmp_path / "h.png", half), prepared), expected)
    tiny = box_mask((8.2, 0.2, 8.6, 0.6), prepared)  # smaller than a pixel: still counts
    assert tiny.sum() == 1 and tiny[0, 0]
    with pytest.raises(OccludeError, match="outside the 32x16 image"):
        box_mask((40, 0, 50, 5), prepared)
    with pytest.raises(OccludeError, match="outside the part of the image the model sees"):
        box_mask((0, 0, 4, 4), prepared)  # cropped away


# --------------------------------------------------------------------------- saliency map files


def test_load_saliency_map_npy_and_png(tmp_path):
    np.save(tmp_path / "batched.npy", np.full((1, 1, 4, 4), 2.5, dtype=np.float32))
    loaded = load_saliency_map(tmp_path / "batched.npy", (8, 8))
    assert loaded.shape == (8, 8) and np.allclose(loaded, 2.5)
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    png = load_saliency_map(save_grey(tmp_path / "ramp.png", ramp), (16, 16))
    np.testing.assert_array_equal(png, ramp.astype(float))
    rgb_grey = tmp_path / "rgb_grey.png"
    Image.fromarray(np.repeat(ramp[..., None], 3, axis=-1), "RGB").save(rgb_grey)
    np.testing.assert_array_equal(read_saliency_map(rgb_grey), ramp.astype(float))


def test_saliency_map_of_the_original_size_is_cropped_like_the_image(tmp_path):
    values = np.zeros((16, 32))
    values[:, :8] = values[:, 24:] = 100.0  # only in the cropped-away parts
    values[:, 8:24] = np.arange(16)[None, :]
    out = resize_map(values, (16, 16), original_size=(32, 16), crop_box=(8.0, 0.0, 24.0, 16.0))
    np.testing.assert_allclose(out, np.tile(np.arange(16.0), (16, 1)), atol=1e-5)


def test_not_computed_pixels_survive_resizing():
    values = np.ones((4, 4))
    values[:2, :] = np.nan
    out = resize_map(values, (8, 8))
    assert np.isnan(out[:3]).all() and np.allclose(out[5:], 1.0)


def test_bad_saliency_maps(tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((3, 8, 8)))
    np.save(tmp_path / "vector.npy", np.zeros(8))
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    (tmp_path / "junk.npy").write_text("not numpy")
    (tmp_path / "junk.png").write_text("not png")
    colour = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8), "RGB").save(colour)
    cases = [
        ("missing.npy", "saliency map not found"),
        ("rgb.npy", "reduce the channels"),
        ("vector.npy", "must be 2-D"),
        ("text.npy", "real numbers"),
        ("junk.npy", "cannot read"),
        ("junk.png", "neither a .npy array nor an image"),
        ("colour.png", "colour image"),
    ]
    for name, message in cases:
        with pytest.raises(OccludeError, match=message):
            read_saliency_map(tmp_path / name)


# ------------------------------------------------------------------- compare and faithfulness


@pytest.fixture(scope="module")
def digits():
    return OnnxClassifier(DIGITS)


def test_identical_map_has_correlation_1_and_the_same_curves(digits):
    e = explain(digits, SAMPLE_IMAGES / "digit_3.png")
    result = compare_maps(e, e.map.copy(), digits, steps=16)
    assert result["agreement"]["pearson"] == pytest.approx(1.0)
    assert result["agreement"]["spearman"] == pytest.approx(1.0)
    assert result["agreement"]["top_iou"] == 1.0
    ours, theirs = result["curves"]["occlusion"], result["curves"]["other"]
    assert theirs["deletion_auc"] == pytest.approx(ours["deletion_auc"], abs=1e-12)
    assert theirs["insertion_auc"] == pytest.approx(ours["insertion_auc"], abs=1e-12)
    assert result["better"] == {"deletion": "tie", "insertion": "tie"}
    assert result["curves"]["fractions"][0] == 0.0 and result["curves"]["fractions"][-1] == 1.0
    # deletion starts at the unoccluded score; insertion ends there
    original = result["score"]["original"]
    assert ours["deletion"][0] == pytest.approx(original, rel=1e-5)
    assert ours["insertion"][-1] == pytest.approx(original, rel=1e-5)


def test_random_maps_do_worse_than_occlusion_on_the_digits_cnn(digits):
    rng = np.random.default_rng(0)
    occlusion_ins, random_ins = [], []
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        e = explain(digits, SAMPLE_IMAGES / name)
        ours = faithfulness(e, digits)
        randoms = [faithfulness(e, digits, importance=rng.random((8, 8))) for _ in range(3)]
        assert ours["deletion_auc"] < min(r["deletion_auc"] for r in randoms), name
        occlusion_ins.append(ours["insertion_auc"])
        random_ins += [r["insertion_auc"] for r in randoms]
    assert np.mean(occlusion_ins) > np.mean(random_ins)


def test_random_maps_do_worse_than_occlusion_on_efficientnet():
    model = OnnxClassifier(EFFICIENTNET)
    rng = np.random.default_rng(0)
    for name in ("cat.jpg", "coffee.jpg"):
        e = explain(model, SAMPLE_IMAGES / name, patch=56, stride=56)
        ours = faithfulness(e, model, steps=10)
        # random maps at the occlusion map's own granularity (one value per 56x56 block): pixel-level noise
        # is no fair rival, since scattered deleted pixels hurt a CNN more than any region does
        randoms = [
            faithfulness(e, model, steps=10, importance=np.kron(rng.random((4, 4)), np.ones((56, 56))))
            for _ in range(3)
        ]
        assert ours["deletion_auc"] < min(r["deletion_auc"] for r in randoms), name


def test_faithfulness_record_for_run_metrics(digits):
    e = explain(digits, SAMPLE_IMAGES / "digit_0.png")
    record = faithfulness(e, digits, steps=10, insertion_baseline="blur")
    assert set(record) >= {"deletion_auc", "insertion_auc", "steps", "fractions", "deletion", "insertion"}
    assert record["steps"] == 10 and len(record["deletion"]) == 11
    assert record["deletion_baseline"] == "zero" and record["insertion_baseline"] == "blur"
    assert 0 <= record["deletion_auc"] <= 1 and 0 <= record["insertion_auc"] <= 1
    json.dumps(record, allow_nan=False)


def test_compare_cli_writes_json_and_png(tmp_path):
    e = explain(str(DIGITS), SAMPLE_IMAGES / "digit_7.png")
    np.save(tmp_path / "same.npy", e.map.astype(np.float32))
    out = tmp_path / "out"
    result = invoke(
        "compare", DIGITS, SAMPLE_IMAGES / "digit_7.png", tmp_path / "same.npy", "--out", out, "--steps", "16"
    )
    assert result.exit_code == 0, result.stderr
    assert "deletion AUC" in result.stdout
    record = json.loads((out / "digit_7.compare.json").read_text())
    assert record["agreement"]["pearson"] == pytest.approx(1.0)
    assert record["better"] == {"deletion": "tie", "insertion": "tie"}
    assert record["other_map"] == {"name": "same.npy", "shape": [8, 8], "not_computed_pixels": 0}
    assert record["outputs"] == ["digit_7.compare.json", "digit_7.compare.png"]
    with Image.open(out / "digit_7.compare.png") as png:
        assert png.format == "PNG" and png.size[0] > 500
    # a greyscale PNG of another resolution, printed as JSON
    ramp = save_grey(tmp_path / "ramp.png", np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)))
    as_json = invoke(
        "compare",
        DIGITS,
        SAMPLE_IMAGES / "digit_7.png",
        ramp,
        "--out",
        out,
        "--json",
        "--steps",
        "8",
        "--name",
        "ramp",
        "--target",
        "7",
    )
    assert as_json.exit_code == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["other_map"]["shape"] == [32, 32] and document["target"]["index"] == 7
    assert math.isfinite(document["curves"]["other"]["deletion_auc"])


def test_a_constant_map_gets_no_verdict_and_no_top_iou(tmp_path):
    """A constant map ranks no pixel above another: its curves and top-k sets follow the tie order alone, so
    compare gives no verdict and no top IoU for it and says why (JSON ``constant`` and ``warnings``, one
    warning line on the terminal); a map that varies gets verdicts and an empty ``constant``."""
    image = SAMPLE_IMAGES / "digit_7.png"
    np.save(tmp_path / "flat.npy", np.full((8, 8), 0.25, dtype=np.float32))
    result = invoke("compare", DIGITS, image, tmp_path / "flat.npy", "-o", tmp_path / "out", "--steps", "8")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("warning:") == 1 and "(flat.npy) is constant over the 64 pixels" in result.stderr
    record = json.loads((tmp_path / "out" / "digit_7.compare.json").read_text())
    assert record["constant"] == ["other"] and len(record["warnings"]) == 1
    assert record["agreement"]["top_iou"] is None and record["agreement"]["pearson"] is None
    assert record["better"] == {"deletion": None, "insertion": None}
    assert set(record["fidelity"]["better"].values()) == {None}
    assert math.isfinite(record["curves"]["other"]["deletion_auc"])  # the curves are still measured and kept
    varying = explain(str(DIGITS), image).map
    np.save(tmp_path / "varying.npy", (varying + np.arange(64).reshape(8, 8) * 1e-3).astype(np.float32))
    other = invoke("compare", DIGITS, image, tmp_path / "varying.npy", "-o", tmp_path / "out2", "--steps", "8")
    assert other.exit_code == 0 and "warning:" not in other.stderr
    record = json.loads((tmp_path / "out2" / "digit_7.compare.json").read_text())
    assert record["constant"] == [] and record["warnings"] == [] and record["agreement"]["top_iou"] is not None
    assert None not in record["better"].values()


def test_compare_bad_inputs_give_one_red_line(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((3, 8, 8)))
    np.save(tmp_path / "ok.npy", np.zeros((8, 8)))
    image = SAMPLE_IMAGES / "digit_0.png"
    cases = [
        ((tmp_path / "missing.npy",), "saliency map not found"),
        ((tmp_path / "cube.npy",), "must be 2-D"),
        ((tmp_path / "ok.npy", "--top-fraction", "0"), "--top-fraction must be in (0, 1]"),
        ((tmp_path / "ok.npy", "--steps", "0"), "--steps must be at least 1"),
        ((tmp_path / "ok.npy", "--deletion-baseline", "purple"), "--deletion-baseline takes zero, mean"),
        ((tmp_path / "ok.npy", "--target", "12"), "out of range"),
    ]
    for extra, message in cases:
        result = invoke("compare", DIGITS, image, *extra, "--out", tmp_path / "out")
        assert result.exit_code == 1, (extra, result.stderr)
        assert message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_check_verdict_agrees_with_the_peak_it_reports(tmp_path):
    """A tied plateau (the whole 4x12 rectangle of a mean model, patch 1): check.csv used to report the peak
    at the plateau's first pixel, (2.5, 2.5) in image pixels, inside a corner box, and say "peak outside the
    region". The peak is now the plateau pixel nearest its centre, (y 3, x 7) = image (7.5, 3.5), and the
    pointing game tests that pixel: a miss for the corner box, a hit for a box around the centre."""
    model = rectangle_model(tmp_path / "plateau.onnx", rect=(2, 2, 6, 14))
    image = save_grey(tmp_path / "white.png", np.full((16, 16), 255))
    common = ("--patch", "1", "--score", "logit", "--target", "0", "--require-peak", "-q")
    for box, hit in (("0,0,4,4", False), ("6,2,10,6", True)):
        out = tmp_path / box.replace(",", "_")
        result = invoke("check", model, image, "--box", box, *common, "--out", out)
        assert result.exit_code == (0 if hit else 4), result.stderr
        row = read_check(out)["images"][0]
        assert (row["peak_y"], row["peak_x"]) == (3, 7)
        assert (row["peak_image_x"], row["peak_image_y"]) == (7.5, 3.5)
        x0, y0, x1, y1 = (float(v) for v in box.split(","))
        assert row["pointing_game"] is hit is (x0 <= row["peak_image_x"] < x1 and y0 <= row["peak_image_y"] < y1)
        assert ("peak outside the region" in row["reasons"]) is not hit


def test_compare_gives_the_right_pearson_for_a_map_scaled_by_1e200(tmp_path):
    """`occlude compare` with another method's map multiplied by 1e200 (at another resolution, so it is
    resized too) reports the Pearson of the unscaled map, not 0.0; the picture still draws the map."""
    occ = explain(OnnxClassifier(DIGITS), SAMPLE_IMAGES / "digit_3.png", patch=2, stride=1).map
    other = np.kron(occ + np.random.default_rng(0).normal(0, occ.std() / 2, occ.shape), np.ones((2, 2)))
    results = {}
    for name, values in (("plain", other), ("huge", other * 1e200)):
        np.save(tmp_path / f"{name}.npy", values)
        args = ("--patch", "2", "--stride", "1", "--fractions", "", "--json", "-q", "-o", tmp_path / name)
        result = invoke("compare", DIGITS, SAMPLE_IMAGES / "digit_3.png", tmp_path / f"{name}.npy", *args)
        assert result.exit_code == 0, result.stderr
        results[name] = json.loads(result.stdout)["agreement"]
    assert results["huge"]["pearson"] == pytest.approx(results["plain"]["pearson"], rel=1e-9)
    assert results["plain"]["pearson"] > 0.5
    picture = np.asarray(Image.open(tmp_path / "huge" / "digit_3.compare.png").convert("RGB")).astype(int)
    assert (np.abs(picture - [103, 0, 31]).sum(axis=-1) < 60).sum() > 100  # dark red: the map's peak is drawn
