"""``--baseline image:PATH`` / ``--baseline-image``: each window filled with the same window of another image,
prepared exactly like the input; its record in the JSON (path through the outside-text rule, sha256); --resume
noticing a changed baseline image; the concentration figure of every map; and the manual's adversarial example (a
patch found by a black-box search is localised by occluding with the clean image; noise of the same energy is not).

Ground truth: the rectangle probe's class-0 logit is the mean of its input over a rectangle, so every window's
score with another image's pixels pasted in is computed by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import occlude_cli
from occlude_cli.cli import app
from occlude_cli.loaders.images import Preprocessing, prepare_image

from conftest import ROOT, SAMPLE_MODELS
from onnx_models import rectangle_logit, rectangle_model

runner = CliRunner()
EFFNET = SAMPLE_MODELS / "efficientnet_lite0.onnx"
ADVERSARIAL = ROOT / "docs" / "examples" / "adversarial"
RECT = (4, 6, 9, 12)


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _grey(path: Path, pixels) -> Path:
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), "L").save(path)
    return path


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(3)
    model = rectangle_model(tmp_path / "rect.onnx", rect=RECT)
    image = _grey(tmp_path / "image.png", rng.integers(0, 256, (16, 16)))
    other = _grey(tmp_path / "other.png", rng.integers(0, 256, (16, 16)))
    return model, image, other


def test_each_window_takes_the_other_images_window_exactly(pair, tmp_path):
    model, image, other = pair
    done = occlude("run", model, image, "--baseline", f"image:{other}", "--patch", "4", "--stride", "2",
                   "--score", "logit", "--target", "0", "-o", tmp_path / "o", "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "o" / "image.json").read_text())
    x = np.asarray(Image.open(image), dtype=np.float64)[None] / 255.0
    b = np.asarray(Image.open(other), dtype=np.float64)[None] / 255.0
    for window in record["windows"]:
        y, xx, h, w = window["y"], window["x"], window["h"], window["w"]
        pasted = x.copy()
        pasted[:, y : y + h, xx : xx + w] = b[:, y : y + h, xx : xx + w]
        assert window["score"] == pytest.approx(rectangle_logit(pasted, RECT), abs=1e-6)
    params = record["params"]
    assert params["baseline"] == f"image:{other}"
    assert params["baseline_image"] == {
        "path": str(other),
        "sha256": hashlib.sha256(other.read_bytes()).hexdigest(),
        "width": 16,
        "height": 16,
    }
    # --baseline-image is the same run
    same = occlude("run", model, image, "--baseline-image", other, "--patch", "4", "--stride", "2",
                   "--score", "logit", "--target", "0", "-o", tmp_path / "p", "-q", "--no-timing")  # fmt: skip
    assert same.exit_code == 0
    again = json.loads((tmp_path / "p" / "image.json").read_text())
    assert again["map"] == record["map"] and again["params"]["baseline"] == params["baseline"]


def test_the_baseline_image_is_prepared_like_the_input():
    """A baseline of another size goes through the input's resize (or centre crop), colour order and type."""
    for resize in ("stretch", "center-crop"):
        preprocessing = Preprocessing(size=(32, 48), resize=resize, mean=(0.5,), std=(0.25,), color="bgr")
        from occlude_cli.loaders.baseline_image import baseline_image

        array, info = baseline_image(ROOT / "sample_images" / "coffee.jpg", preprocessing)
        expected = prepare_image(ROOT / "sample_images" / "coffee.jpg", preprocessing).model_input
        assert array.dtype == expected.dtype and np.array_equal(array, expected)
        assert (info["width"], info["height"]) == (600, 400)


def test_the_input_itself_as_baseline_gives_a_zero_map(pair, tmp_path):
    """Nothing changes in any window: every drop is 0 (to the float noise of a batched pass against the single
    unoccluded one)."""
    model, image, _ = pair
    done = occlude("run", model, image, "--baseline-image", image, "--patch", "4", "-o", tmp_path / "o", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["counts"]["ok"] == 1
    record = json.loads((tmp_path / "o" / "image.json").read_text())
    assert np.abs(np.asarray(record["map"])).max() < 1e-6


def test_resume_notices_a_changed_baseline_image(pair, tmp_path):
    model, image, other = pair
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(image.read_bytes())
    out = tmp_path / "o"
    args = ["run", model, data, "--baseline-image", other, "--patch", "4", "-o", out, "--resume", "--json", "-q"]
    assert occlude(*args).exit_code == 0
    statuses = [r["status"] for r in json.loads(occlude(*args).stdout)["images"]]
    assert statuses == ["skipped"]
    _grey(other, np.full((16, 16), 7))  # the same path, other pixels
    statuses = [r["status"] for r in json.loads(occlude(*args).stdout)["images"]]
    assert statuses == ["ok"]
    record = json.loads((out / "a.json").read_text())
    assert record["params"]["baseline_image"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_hostile_baseline_path_is_escaped_everywhere(pair, tmp_path):
    model, image, other = pair
    hostile = tmp_path / "evil\nname\x1b[31m.png"
    hostile.write_bytes(other.read_bytes())
    done = occlude("run", model, image, "--baseline-image", hostile, "--patch", "4", "-o", tmp_path / "o", "-q")
    assert done.exit_code == 0, done.output
    text = (tmp_path / "o" / "image.json").read_text()
    assert "\x1b" not in text and "evil\\\\nname" in text  # shown escaped (JSON escapes the backslash)
    record = json.loads(text)
    assert record["params"]["baseline_image"]["path_b64"]  # the exact bytes, recoverable
    missing = occlude("run", model, image, "--baseline-image", tmp_path / "gone\x1b.png", "-o", tmp_path / "p")
    assert missing.exit_code == 1 and "\x1b" not in missing.output and "--baseline image:" in missing.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--baseline", "image:"], "needs the image's path"),
        (["--baseline", "image:nowhere.png"], "no such file"),
        (["--baseline-image", "{folder}"], "got a folder"),
        (["--baseline-image", "{text}"], "not an image"),
        (["--baseline-image", "{image}", "--baseline", "blur"], "not both"),
    ],
)
def test_bad_baseline_images_are_one_line_before_any_input(pair, tmp_path, flags, message):
    model, image, _ = pair
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    flags = [f.format(folder=tmp_path, text=text, image=image) for f in flags]
    done = runner.invoke(app, ["run", str(model), str(image), "-o", str(tmp_path / "o"), *flags])
    assert done.exit_code == 1 and message in done.output and "Traceback" not in done.output, done.output
    assert not (tmp_path / "o" / "image.json").exists()


def test_volumes_refuse_an_image_baseline(tmp_path):
    volume = ROOT / "sample_images" / "medical"
    scans = sorted(volume.rglob("*.nii.gz"))
    if not scans:
        pytest.skip("no NIfTI sample")
    done = runner.invoke(
        app, ["run", str(SAMPLE_MODELS / "lesion3d.onnx"), str(scans[0]), "--baseline-image", str(scans[0])]
    )
    assert done.exit_code == 1 and "baseline image: is for photos" in done.output


def test_check_compare_stability_and_bias_take_the_image_baseline(pair, tmp_path):
    model, image, other = pair
    common = ["--baseline-image", other, "--patch", "4", "--score", "logit", "--target", "0"]
    assert occlude("check", model, image, "--box", "6,4,12,9", *common, "-o", tmp_path / "k", "-q").exit_code == 0
    np.save(tmp_path / "m.npy", np.ones((16, 16)))
    done = occlude("compare", model, image, tmp_path / "m.npy", *common, "--steps", "2", "--fractions", "",
                   "-o", tmp_path / "c", "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    compared = json.loads((tmp_path / "c" / "image.compare.json").read_text())
    assert compared["curves"]["deletion_baseline"] == f"image:{other}"
    done = occlude("stability", model, image, *common, "--trials", "2", "-o", tmp_path / "s", "-q")
    assert done.exit_code == 0, done.output
    done = occlude("bias", model, image, "--box", "6,4,12,9", *common[:2], "--controls", "0", "--bootstrap", "0",
                   "--score", "logit", "--target", "0", "-o", tmp_path / "b", "-q")  # fmt: skip
    assert done.exit_code == 0, done.output
    row = json.loads((tmp_path / "b" / "bias.json").read_text())["images"][0]
    x = np.asarray(Image.open(image), dtype=np.float64)[None] / 255.0
    b = np.asarray(Image.open(other), dtype=np.float64)[None] / 255.0
    assert row["drop"] == pytest.approx(rectangle_logit(x, RECT) - rectangle_logit(b, RECT), abs=1e-6)


def test_run_records_the_concentration_of_every_map(tmp_path):
    done = occlude("run", EFFNET, ROOT / "sample_images" / "cat.jpg", "--patch", "56", "--top-k", "2",
                   "-o", tmp_path, "-q")  # fmt: skip
    assert done.exit_code == 0
    record = json.loads((tmp_path / "cat.json").read_text())
    values = np.asarray(record["map"], dtype=np.float64)
    positive = np.sort(np.clip(values, 0, None).ravel())[::-1]
    c = record["map_info"]["concentration"]
    assert c["top_10"] == pytest.approx(positive[: round(0.1 * values.size)].sum() / positive.sum(), abs=1e-12)
    assert 0 < c["top_1"] < c["top_5"] < c["top_10"] < 1 and 0 < c["gini_abs"] < 1
    assert record["top_k"][0]["concentration"] == c and set(record["top_k"][1]["concentration"]) == set(c)


@pytest.mark.skipif(not (ADVERSARIAL / "attack.json").is_file(), reason="docs/examples/adversarial not built")
def test_the_adversarial_patch_is_localised_and_the_same_energy_noise_is_not():
    """The manual's example: the searched square over the cat's eye and uniform noise of the same energy both push
    the picture towards "tabby"; occluding each with the clean cat and explaining "tabby" finds the square (the
    map's peak inside it, its absolute map's Gini index above 0.9, 95 % of the positive drop in 10 % of the area),
    while the noise's map spreads (Gini below 0.5, its peak outside the square)."""
    attack = json.loads((ADVERSARIAL / "attack.json").read_text())
    x0, y0, x1, y1 = attack["box"]
    from occlude_cli.core.metrics import peak_index
    from occlude_cli.core.quality import concentration

    found = {}
    for name in ("cat_patch.png", "cat_noise.png"):
        run = occlude_cli.explain(
            EFFNET, ADVERSARIAL / name, patch=16, stride=8, baseline=f"image:{ADVERSARIAL / 'cat_clean.png'}",
            target=attack["runner_up"],
        )  # fmt: skip
        assert run.params["baseline_image"]["path"].endswith("cat_clean.png")
        found[name] = (peak_index(run.map), concentration(run.map))
    (y, x), localised = found["cat_patch.png"]
    assert y0 <= y < y1 and x0 <= x < x1
    (y, x), diffuse = found["cat_noise.png"]
    assert not (y0 <= y < y1 and x0 <= x < x1)
    assert localised["gini_abs"] > 0.9 > 0.5 > diffuse["gini_abs"]
    assert localised["top_10"] > 0.9 and localised["top_10"] > diffuse["top_10"] + 0.1
