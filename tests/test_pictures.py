"""Every picture occlude writes, asserted on its pixels: the map area shows the map's colours, the colorbar
is there, overlays stay readable on red and dark photos, and the style flags change what they should."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import OnnxClassifier, explain
from occlude_cli.cli import app
from occlude_cli.pictures.render import (
    RenderStyle,
    colorize,
    compare_png,
    heatmap_png,
    lookup_table,
    overlay_png,
    symmetric_limit,
)
from occlude_cli.analyses.validate import compare_maps

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

PAD, HEAD, HEAD_SUB = 10, 34, 52  # the frame: left margin, header height without / with a subtitle
DIGITS = SAMPLE_MODELS / "digits_cnn.onnx"


def pixels(path_or_bytes):
    if isinstance(path_or_bytes, bytes):
        import io

        path_or_bytes = io.BytesIO(path_or_bytes)
    return np.asarray(Image.open(path_or_bytes).convert("RGB"), dtype=np.int32)


def expected_heatmap(values, factor):
    rgba = colorize(values, symmetric_limit(values))
    rgb = rgba[..., :3].astype(np.int32)
    return np.kron(rgb, np.ones((factor, factor, 1), dtype=np.int32))


def strong_colour(rgb):
    """Pixels whose red and blue differ strongly: the map's colours, never a grey photo."""
    return np.abs(rgb[..., 0] - rgb[..., 2]) > 60


def test_heatmap_area_is_the_map_and_the_colorbar_spans_both_signs(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", str(DIGITS), str(SAMPLE_IMAGES / "digit_3.png"), "--score", "logit", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    values = np.load(out / "digit_3.npy").astype(np.float64)
    image = pixels(out / "digit_3.heatmap.png")
    area = image[HEAD_SUB : HEAD_SUB + 320, PAD : PAD + 320]
    np.testing.assert_array_equal(area, expected_heatmap(values, 40))
    bar_x = PAD + 320 + 12 + 8  # the middle of the colorbar strip
    bar = image[HEAD_SUB : HEAD_SUB + 320, bar_x]
    top, middle, bottom = bar[1], bar[160], bar[-2]
    lut = lookup_table("RdBu_r")[:, :3].astype(np.int32)
    assert np.abs(top - lut[255]).max() <= 3 and np.abs(bottom - lut[0]).max() <= 3
    assert np.abs(middle - lut[128]).max() <= 12  # near white: zero is neutral
    header = image[:HEAD_SUB, PAD : PAD + 300]
    assert (header.sum(axis=-1) < 200).sum() > 50  # a title is written in dark text


def test_aggregate_png_has_the_mean_map_a_title_and_a_colorbar(tmp_path):
    out = tmp_path / "agg"
    result = CliRunner().invoke(
        app, ["run", str(DIGITS), str(SAMPLE_IMAGES), "--score", "logit", "--aggregate", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    mean = np.load(out / "aggregate.npy").astype(np.float64)
    image = pixels(out / "aggregate.png")
    np.testing.assert_array_equal(image[HEAD_SUB : HEAD_SUB + 320, PAD : PAD + 320], expected_heatmap(mean, 40))
    assert strong_colour(image[HEAD_SUB : HEAD_SUB + 320, PAD + 320 + 12 : PAD + 320 + 28]).mean() > 0.5


def test_compare_png_shows_both_maps_in_colour(tmp_path):
    model = OnnxClassifier(DIGITS)
    e = explain(model, SAMPLE_IMAGES / "digit_7.png", score="logit")
    other = np.random.default_rng(0).normal(size=(8, 8))
    comparison = compare_maps(e, other, model, steps=8)
    image = pixels(compare_png(e, other, comparison))
    height, width = image.shape[:2]
    for left in (0, width // 2):  # the two map panels of the first row
        panel = image[int(0.05 * height) : int(0.3 * height), left : left + width // 2]
        assert strong_colour(panel).mean() > 0.03, "the map panel shows no map colours"
    rows = json.dumps(comparison["fidelity"]["maps"]["other"]["sufficiency"])
    assert "kept" in rows


@pytest.mark.parametrize("photo_rgb, sign", [((210, 25, 25), 1.0), ((5, 5, 5), -1.0), ((20, 20, 200), -1.0)])
def test_overlay_stays_readable_on_red_dark_and_blue_photos(photo_rgb, sign):
    """Contrast of the map layer against the photo: the colour distance between a pixel under a strong map
    value and the same photo with no map there. A map coloured like the photo (red on red) would vanish."""
    photo = Image.new("RGB", (64, 64), photo_rgb)
    values = np.zeros((16, 16))
    values[6:10, 6:10] = sign
    raw = pixels(overlay_png(photo, values, (0, 0, 64, 64), "t"))
    factor = int(np.ceil(320 / 64))
    inside = raw[HEAD + 8 * factor * 4, PAD + 8 * factor * 4]
    outside = raw[HEAD + 2 * factor, PAD + 2 * factor]
    assert np.linalg.norm(inside - outside) > 90, (inside, outside)
    colour = overlay_png(photo, values, (0, 0, 64, 64), "t", style=RenderStyle(photo="color"))
    assert not np.array_equal(pixels(colour), raw)


def test_style_flags_change_the_pictures_as_documented():
    photo = Image.new("RGB", (32, 32), (128, 128, 128))
    values = np.random.default_rng(0).uniform(0.5, 1.0, (8, 8))
    values[6, 6], values[3, 3] = -1.0, 50.0  # one negative value, one outlier
    plain = pixels(heatmap_png(values))
    factor = 40
    at = lambda img, y, x: img[HEAD + y * factor + 5, PAD + x * factor + 5]  # noqa: E731
    positive_only = pixels(heatmap_png(values, style=RenderStyle(sign="positive")))
    assert (at(positive_only, 6, 6) == 255).all()  # the negative value is not drawn: white background
    assert strong_colour(at(plain, 6, 6)[None])[0] or at(plain, 6, 6)[2] > at(plain, 6, 6)[0]
    clipped = pixels(heatmap_png(values, style=RenderStyle(clip_percentile=90)))
    assert abs(at(clipped, 1, 1)[0] - at(clipped, 1, 1)[2]) > abs(at(plain, 1, 1)[0] - at(plain, 1, 1)[2])
    invisible = pixels(overlay_png(photo, values, (0, 0, 32, 32), "t", style=RenderStyle(alpha=0.0)))
    area = invisible[HEAD : HEAD + 320, PAD : PAD + 320]
    assert len(np.unique(area.reshape(-1, 3), axis=0)) == 1  # alpha 0: only the (grey) photo
    with pytest.raises(Exception, match="unknown colormap"):
        RenderStyle(cmap="no-such-map").checked()


def test_panels_png_has_photo_heatmap_and_overlay(tmp_path):
    out = tmp_path / "p"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(DIGITS),
            str(SAMPLE_IMAGES / "digit_0.png"),
            "--score",
            "logit",
            "--panels",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    image = pixels(out / "digit_0.panels.png")
    side, gap = 320, 8
    photo = image[HEAD_SUB : HEAD_SUB + side, PAD : PAD + side]
    heat = image[HEAD_SUB : HEAD_SUB + side, PAD + side + gap : PAD + 2 * side + gap]
    overlay = image[HEAD_SUB : HEAD_SUB + side, PAD + 2 * (side + gap) : PAD + 3 * side + 2 * gap]
    assert not strong_colour(photo).any()  # the digit itself is grey
    assert strong_colour(heat).mean() > 0.1 and strong_colour(overlay).mean() > 0.05


def test_built_in_default_colormap_equals_matplotlibs():
    import matplotlib

    from occlude_cli.pictures.render import _rdbu_r_table

    expected = np.round(matplotlib.colormaps["RdBu_r"](np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(_rdbu_r_table(), expected)


def test_a_huge_label_keeps_every_picture_a_sane_size(tmp_path):
    """A label (model metadata, a labels file) of 50,000 characters: the title is cut to the picture's width
    plus a bounded margin, marked '...', instead of a picture 500,000 pixels wide (a million characters made a
    12 GB canvas). Overlays, heatmaps, panels and diff pictures alike."""
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["W" * 50_000] * 10) + "\n", encoding="utf-8")
    model = SAMPLE_MODELS / "digits_cnn.onnx"
    image = SAMPLE_IMAGES / "digit_0.png"
    common = ["--patch", "4", "--labels", labels, "-q"]
    run = CliRunner().invoke(app, [str(a) for a in ["run", model, image, "-o", tmp_path / "r", "--panels", *common]])
    assert run.exit_code == 0, run.stderr
    diff = CliRunner().invoke(app, [str(a) for a in ["diff", model, model, image, "-o", tmp_path / "d", *common]])
    assert diff.exit_code == 0, diff.stderr
    pictures = [tmp_path / "r" / f"digit_0.{kind}.png" for kind in ("overlay", "heatmap", "panels")]
    for path in pictures + [tmp_path / "d" / "digit_0.diff.png"]:
        with Image.open(path) as picture:
            assert picture.width <= 1800, (path.name, picture.size)
    from occlude_cli.pictures.render import _font, fitted_text

    cut = fitted_text("W" * 50_000, 15, 1000)
    assert cut.endswith("...") and _font(15).getlength(cut) <= 1000 < _font(15).getlength(cut[:-3] + "W...")
    assert fitted_text("short", 15, 1000) == "short"
