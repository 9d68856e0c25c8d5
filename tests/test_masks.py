"""Region masks read as masks (issue 33): one reader (loaders.maps.read_mask) for check, bias and every
per-image mask; transparency (RGBA, LA, palette or colour transparency) means outside. Masks with a
transparent background used to be composited onto white like photos, so the whole image became the region:
`check` passed with energy share 1.0 and `bias` measured a 1,024-pixel region."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app
from occlude_cli.errors import OccludeError
from occlude_cli.loaders.maps import read_mask
from onnx_models import rectangle_model

SIDE = 32
EVIDENCE = (4, 4, 12, 12)  # y0, x0, y1, x1: class 0's logit is the mean of the input there
SQUARE = (20, 20, 28, 28)  # the annotated square, far from the evidence: 64 of 1,024 pixels


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr
    return result


def square() -> np.ndarray:
    inside = np.zeros((SIDE, SIDE), dtype=bool)
    y0, x0, y1, x1 = SQUARE
    inside[y0:y1, x0:x1] = True
    return inside


def write_mask(path: Path, kind: str) -> Path:
    """The same region (white, opaque square) in one of the ways annotation tools export masks; every
    transparent background carries WHITE colour values, the case compositing onto white gets most wrong."""
    inside = square()
    if kind == "L":
        Image.fromarray(np.where(inside, 255, 0).astype(np.uint8), "L").save(path)
    elif kind == "I;16":
        Image.fromarray(np.where(inside, 65535, 0).astype(np.uint16)).save(path)
    elif kind == "RGBA":
        rgba = np.full((SIDE, SIDE, 4), 255, dtype=np.uint8)
        rgba[..., 3] = np.where(inside, 255, 0)
        Image.fromarray(rgba, "RGBA").save(path)
    elif kind == "LA":
        la = np.full((SIDE, SIDE, 2), 255, dtype=np.uint8)
        la[..., 1] = np.where(inside, 255, 0)
        Image.fromarray(la, "LA").save(path)
    elif kind == "P":  # palette: 0 black, 1 white, 2 white but transparent (the background)
        image = Image.fromarray(np.where(inside, 1, 2).astype(np.uint8), "P")
        image.putpalette([0, 0, 0, 255, 255, 255, 255, 255, 255] + [0] * 759)
        image.save(path, transparency=2)
    elif kind == "RGB-tRNS":  # an RGB PNG whose grey background colour is declared transparent
        rgb = np.full((SIDE, SIDE, 3), 200, dtype=np.uint8)
        rgb[inside] = 255
        Image.fromarray(rgb, "RGB").save(path, transparency=(200, 200, 200))
    else:
        raise ValueError(kind)
    return path


KINDS = ["L", "I;16", "RGBA", "LA", "P", "RGB-tRNS"]


@pytest.mark.parametrize("kind", KINDS)
def test_read_mask_gives_the_square_for_every_way_of_saving_it(tmp_path, kind):
    mask = read_mask(write_mask(tmp_path / "m.png", kind))
    np.testing.assert_array_equal(mask.astype(bool), square())


def test_a_fully_transparent_mask_is_empty_and_half_transparency_is_read_over_black(tmp_path):
    rgba = np.full((SIDE, SIDE, 4), 255, dtype=np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(OccludeError, match="is empty"):
        read_mask(tmp_path / "clear.png")
    rgba[..., 3] = 127  # white at alpha 127 shows as grey 127 over black: outside; 128: inside
    rgba[:, :4, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    got = read_mask(tmp_path / "half.png")
    assert got[:, :4].all() and not got[:, 4:].any()


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("masks")
    model = rectangle_model(folder / "rect.onnx", size=(SIDE, SIDE), rect=EVIDENCE)
    image = folder / "img.png"
    Image.fromarray(np.full((SIDE, SIDE), 255, dtype=np.uint8), "L").save(image)
    return model, image


@pytest.mark.parametrize("kind", KINDS)
def test_check_gives_a_transparent_mask_the_verdict_of_its_greyscale_twin(probe, tmp_path, kind):
    """The evidence is at EVIDENCE, the mask is the far square: energy 0.000 and the peak outside, exit 4, for
    every form of the mask (an RGBA mask used to pass with energy 1.0 and region fraction 1.0)."""
    model, image = probe
    mask = write_mask(tmp_path / "m.png", kind)
    out = tmp_path / "out"
    args = ("--patch", "4", "--score", "logit", "--target", "0", "--min-energy", "0.5", "--require-peak")
    result = invoke("check", model, image, "--mask", mask, *args, "-o", out, "-q")
    assert result.exit_code == 4, result.stderr
    (row,) = json.loads((out / "check.json").read_text())["images"]
    assert row["energy_share"] == 0.0 and row["pointing_game"] is False
    assert row["region_fraction"] == 64 / 1024


@pytest.mark.parametrize("kind", ["RGBA", "P"])
def test_bias_measures_the_masked_region_not_the_whole_image(probe, tmp_path, kind):
    """`bias --mask` with a transparent-background mask: the region is the 64-pixel square (it was 1,024), and
    occluding it leaves class 0's logit alone (drop 0), as for the greyscale twin."""
    model, image = probe
    rows = {}
    for name in (kind, "L"):
        mask = write_mask(tmp_path / f"{name.replace(';', '')}.png", name)
        out = tmp_path / f"out-{name.replace(';', '')}"
        result = invoke("bias", model, image, "--mask", mask, "--score", "logit", "--target", "0", "-o", out, "-q")
        assert result.exit_code == 0, result.stderr
        (rows[name],) = json.loads((out / "bias.json").read_text())["images"]
    assert rows[kind]["region_pixels"] == rows["L"]["region_pixels"] == 64
    assert rows[kind]["drop"] == rows["L"]["drop"] == 0.0


def test_per_image_masks_go_through_the_same_reader(probe, tmp_path):
    """NAME.mask.png beside the image and --masks DIR/<name>.png: the same reader, so an RGBA mask there is the
    square too (exit 4 for check, not a pass over the whole image)."""
    model, image = probe
    data, masks = tmp_path / "data", tmp_path / "masks"
    data.mkdir()
    masks.mkdir()
    Image.open(image).save(data / "img.png")
    write_mask(data / "img.mask.png", "RGBA")
    write_mask(masks / "img.png", "RGBA")
    args = ("--patch", "4", "--score", "logit", "--target", "0", "--min-energy", "0.5", "-q")
    for extra in ((), ("--masks", masks)):
        out = tmp_path / f"out{len(extra)}"
        result = invoke("check", model, data, *extra, *args, "-o", out)
        assert result.exit_code == 4, result.stderr
        (row,) = json.loads((out / "check.json").read_text())["images"]
        assert row["region_fraction"] == 64 / 1024 and row["energy_share"] == 0.0
