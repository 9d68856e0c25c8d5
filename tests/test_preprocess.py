"""Loading real image files of many kinds, preprocessing, and the baselines."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occlude_cli import OccludeError, Preprocessing, load_image, prepare_image
from occlude_cli.core.baselines import BASELINES, gaussian_blur, make_baseline, parse_baseline
from occlude_cli.loaders.images import crop_box_for

from conftest import SAMPLE_IMAGES

RGB = Preprocessing(size=(8, 8), layout="NCHW", color="rgb")


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    data = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    path = tmp_path / "deep.png"
    Image.fromarray(data).save(path)
    image = load_image(path)
    assert image.mode == "F"
    values = np.asarray(image)
    assert values.min() == pytest.approx(0) and values.max() == pytest.approx(255, abs=1e-3)


def test_exif_rotated_jpeg_is_shown_upright(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(wide).save(path, exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.size == (20, 40)  # upright: now tall
    arr = np.asarray(image).mean(axis=2)
    assert arr[:20].mean() > 200 and arr[20:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1", "CMYK"])
def test_modes_become_rgb_or_grey(tmp_path, mode):
    path = tmp_path / f"img_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.new("RGB", (9, 7), (10, 200, 30)).convert(mode).save(path)
    image = load_image(path)
    assert image.mode in ("RGB", "L")
    assert image.size == (9, 7)


def test_transparent_pixels_are_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert np.asarray(load_image(path)).min() == 255


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "GIF"])
def test_common_formats_load(tmp_path, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (5, 6), (1, 2, 3)).save(path, format=fmt)
    assert load_image(path).size == (5, 6)


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(OccludeError, match="image not found"):
        load_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(OccludeError, match="not an image"):
        load_image(text)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(OccludeError) as info:
        load_image(truncated)
    assert "\n" not in str(info.value)
    with pytest.raises(OccludeError, match="folder"):
        load_image(tmp_path)


def test_center_crop_box_keeps_aspect():
    assert crop_box_for((400, 200), (100, 100), "center-crop") == (100.0, 0.0, 300.0, 200.0)
    assert crop_box_for((400, 200), (100, 100), "stretch") == (0.0, 0.0, 400.0, 200.0)


def test_normalise_and_layouts_round_trip():
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    for layout in ("NCHW", "NHWC"):
        pre = Preprocessing(
            size=(8, 8), layout=layout, scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
        )
        x = pre.normalise(pixels)
        assert x.shape == ((3, 8, 8) if layout == "NCHW" else (8, 8, 3)) and x.dtype == np.float32
        np.testing.assert_allclose(pre.denormalise(x), pixels, atol=1e-3)
    pre = Preprocessing(size=(8, 8), scale=1.0, mean=(127.0,), std=(128.0,))
    np.testing.assert_allclose(pre.normalise(np.full((8, 8, 3), 255.0)), 1.0)


def test_prepare_image_resizes_and_orders_channels():
    pre = Preprocessing(size=(32, 48), layout="NHWC", color="bgr")
    prepared = prepare_image(SAMPLE_IMAGES / "cat.jpg", pre)
    assert prepared.model_input.shape == (32, 48, 3)
    rgb = prepare_image(SAMPLE_IMAGES / "cat.jpg", Preprocessing(size=(32, 48), layout="NHWC"))
    np.testing.assert_allclose(prepared.model_input, rgb.model_input[..., ::-1])
    assert prepared.original_size == Image.open(SAMPLE_IMAGES / "cat.jpg").size


def test_preprocessing_rejects_bad_values():
    with pytest.raises(OccludeError, match="^mean needs 1 or 3 values") as caught:  # the parameter, not a flag
        Preprocessing(size=(8, 8), mean=(1.0, 2.0))
    assert caught.value.params == ("mean",)
    with pytest.raises(OccludeError, match="non-zero"):
        Preprocessing(size=(8, 8), std=(0.0,))
    with pytest.raises(OccludeError, match="resize"):
        Preprocessing(size=(8, 8), resize="squash")


def test_every_documented_baseline_parses():
    for name in BASELINES:
        if name.startswith("V"):
            continue
        assert parse_baseline(name.upper()) == name
    assert parse_baseline("128") == "128"
    assert parse_baseline(" 10, 20.5 ,30") == "10,20.5,30"
    for bad in ("purple", "1,2", "1,2,3,4", ""):
        with pytest.raises(OccludeError):
            parse_baseline(bad)


def test_baseline_values():
    pre = Preprocessing(size=(8, 8), scale=1.0, mean=(127.0,), std=(128.0,))
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 8, 3))
    assert np.all(make_baseline("zero", pixels, pre) == 0)
    np.testing.assert_allclose(make_baseline("black", pixels, pre), -127 / 128)
    np.testing.assert_allclose(make_baseline("white", pixels, pre), 1.0)
    np.testing.assert_allclose(make_baseline("gray", pixels, pre), 0.5 / 128)
    mean = make_baseline("mean", pixels, pre)
    np.testing.assert_allclose(mean[:, 0, 0], (pixels.mean(axis=(0, 1)) - 127) / 128, rtol=1e-5)
    const = make_baseline("255,0,127", pixels, pre)
    np.testing.assert_allclose(const[:, 3, 3], [1.0, -127 / 128, 0.0])
    bgr = make_baseline(
        "255,0,127", pixels, Preprocessing(size=(8, 8), color="bgr", scale=1.0, mean=(127.0,), std=(128.0,))
    )
    np.testing.assert_allclose(bgr[:, 3, 3], [0.0, -127 / 128, 1.0])
    a = make_baseline("noise", pixels, pre, seed=1)
    b = make_baseline("noise", pixels, pre, seed=1)
    c = make_baseline("noise", pixels, pre, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    blurred = make_baseline("blur", pixels, pre, blur_sigma=2.0)
    assert blurred.std() < pre.normalise(pixels).std() / 2


def test_gaussian_blur_preserves_constants_and_mass():
    flat = np.full((10, 12, 1), 42.0)
    np.testing.assert_allclose(gaussian_blur(flat, 3.0), 42.0)
    spike = np.zeros((31, 31, 1))
    spike[15, 15] = 1.0
    out = gaussian_blur(spike, 2.0)
    assert out.sum() == pytest.approx(1.0) and out[15, 15] == out.max()


def pgm16(path, values: np.ndarray):
    """A 16-bit binary PGM (maxval 65535), as cameras and OpenCV write them (Pillow opens it in mode I)."""
    height, width = values.shape
    path.write_bytes(f"P5\n{width} {height}\n65535\n".encode() + values.astype(">u2").tobytes())
    return path


def test_sixteen_bit_images_have_one_scale_whatever_their_values(tmp_path):
    """A 16-bit image is 0..65535 -> 0..255 whatever its brightness: a dark 16-bit PGM (every value <= 255)
    used to be read as 8-bit, 257 times too bright, while a brighter one of the same folder was not."""
    ramp = (np.arange(64).reshape(8, 8) % 50).astype(np.uint16)
    for scale in (1, 4, 1000):  # brightest value 49, 196, 49000
        image = load_image(pgm16(tmp_path / f"x{scale}.pgm", ramp * scale))
        assert image.mode == "F"
        np.testing.assert_allclose(np.asarray(image), ramp * scale * (255 / 65535), rtol=1e-6)
    huge = tmp_path / "int32.tif"
    Image.fromarray(np.full((4, 5), 70000, dtype=np.int32)).save(huge)
    with pytest.raises(OccludeError, match="int32.tif: a 32-bit integer image \\(values 70000..70000\\)"):
        load_image(huge)
    negative = tmp_path / "negative.tif"
    Image.fromarray(np.full((4, 5), -3, dtype=np.int32)).save(negative)
    with pytest.raises(OccludeError, match="no pixel range"):
        load_image(negative)
    with pytest.raises(OccludeError, match="no pixel range"):  # the library's in-memory image, too
        prepare_image(Image.fromarray(np.full((4, 5), 1 << 20, dtype=np.int32)), RGB)


def test_odd_modes_match_an_independent_slow_loop(tmp_path):
    """A CMYK JPEG (Pillow's CMYK -> RGB, as documented) and a 16-bit PNG (0..65535 -> 0..255): the map of
    the real CLI equals one window at a time through onnxruntime with the preprocessing done here by hand
    (Pillow's float bilinear resize per channel, (pixel - 127) / 128 for efficientnet_lite0, pixel / 255 for
    the digits model), to 1e-5 of the peak."""
    import json
    import subprocess
    import sys

    import onnxruntime as ort
    from task_models import slow_map

    from conftest import SAMPLE_MODELS

    cat = Image.open(SAMPLE_IMAGES / "cat.jpg").convert("RGB").resize((150, 110))
    cat.convert("CMYK").save(tmp_path / "cmyk.jpg")
    deep = np.asarray(cat.convert("L"), dtype=np.uint16) * 257 + np.arange(110, dtype=np.uint16)[:, None]
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK" and Image.open(tmp_path / "deep.png").mode == "I;16"
    cases = [
        ("efficientnet_lite0.onnx", "cmyk.jpg", 224, 56, 28, lambda p: p.convert("RGB"), (127.0, 128.0)),
        ("digits_cnn.onnx", "deep.png", 8, 2, 1, lambda p: np.asarray(p, np.float64) * (255 / 65535), (0.0, 255.0)),
    ]
    for model, name, side, patch, stride, convert, (mean, std) in cases:
        out = tmp_path / f"{name}-out"
        command = ["run", str(SAMPLE_MODELS / model), str(tmp_path / name), "-o", str(out), "--no-timing", "-q"]
        command += ["--patch", str(patch), "--stride", str(stride)]
        subprocess.run([sys.executable, "-m", "occlude_cli", *command], check=True, capture_output=True)
        pixels = np.asarray(convert(Image.open(tmp_path / name)), dtype=np.float32)
        channels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
        resized = [
            np.asarray(Image.fromarray(channels[..., c], "F").resize((side, side), Image.BILINEAR), np.float64)
            for c in range(channels.shape[-1])
        ]
        x = ((np.stack(resized) - mean) / std).astype(np.float32)
        session = ort.InferenceSession(str(SAMPLE_MODELS / model), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        target = int(np.argmax(session.run(None, {feed: x[None]})[0][0]))

        def score(sample, session=session, feed=feed, target=target):
            logits = session.run(None, {feed: sample[None].astype(np.float32)})[0][0].astype(np.float64)
            exp = np.exp(logits - logits.max())
            return float(exp[target] / exp.sum())

        want = slow_map(x, np.zeros_like(x), score, patch, stride)
        got = np.load(out / (Path(name).stem + ".npy"))
        assert json.loads((out / (Path(name).stem + ".json")).read_text())["target"]["index"] == target
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), name


@pytest.mark.parametrize("fmt", ["gif", "png", "webp", "tiff"])
def test_only_the_first_frame_of_an_animated_or_multi_page_file_is_explained_and_said(tmp_path, fmt):
    """An animated GIF/PNG/WebP or a multi-page TIFF: the map is the first frame's (equal, bit for bit, to the
    map of that frame saved alone) and the record, the terminal (once for a folder) and the library say so;
    a file of one frame says nothing."""
    import json

    from typer.testing import CliRunner

    from occlude_cli import explain
    from occlude_cli.cli.app import app
    from conftest import SAMPLE_MODELS

    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).convert("RGB") for _ in range(3)]
    folder = tmp_path / "in"
    folder.mkdir()
    frames[0].save(folder / f"anim.{fmt}", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(folder / f"first.{fmt}", lossless=True)
    model = SAMPLE_MODELS / "digits_cnn.onnx"
    result = CliRunner().invoke(app, ["run", str(model), str(folder), "-o", str(tmp_path / "out"), "--no-timing"])
    assert result.exit_code == 0, result.output
    anim = json.loads((tmp_path / "out" / "anim.json").read_text())
    first = json.loads((tmp_path / "out" / "first.json").read_text())
    assert any("holds 3 frames or pages" in w and "only the first" in w for w in anim["warnings"])
    assert not any("frames" in w for w in first["warnings"])
    assert result.output.count("holds 3 frames or pages") == 1
    assert np.array_equal(np.load(tmp_path / "out" / "anim.npy"), np.load(tmp_path / "out" / "first.npy"))
    with Image.open(folder / f"anim.{fmt}") as opened:
        library = explain(model, opened, patch=7, stride=7)
    assert any("holds 3 frames" in w for w in library.warnings)
    assert not any("frames" in w for w in explain(model, frames[1], patch=7, stride=7).warnings)
