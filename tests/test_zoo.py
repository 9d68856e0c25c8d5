"""The model zoo: every exported model in tests/zoo/models, run through the real CLI, compared element-wise with
an independent reference loop (tests/zoo/reference.py), or, for models occlude cannot explain, checked to fail
with one clear error line and the documented exit code.

The models and their flags are listed in tests/zoo/manifest.json (written by tests/zoo/build_zoo.py, which needs
torch; these tests do not).

Tolerance: 1e-5 of the map's peak for every model, fp16 and int8 QDQ included (issue 21: with the default flags
every path gives the full-pass map to float32 noise; occlude batches samples, the reference runs one at a time,
so the only differences are float32 summation order in the score; measured with onnxruntime 1.32 on CPU: every
map agrees within 5e-8 of its peak). The float16 model's map is moreover its own `--incremental off` map, bit
for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app
from conftest import zoo_reference

ZOO = Path(__file__).resolve().parent / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
CASES = MANIFEST["cases"]

reference = zoo_reference()


def tolerances(kind: str, peak: float) -> dict:
    """assert_allclose arguments for a case's ``tolerance`` kind (fp32, fp16, int8: see the module docstring)."""
    if kind not in ("fp32", "fp16", "int8"):
        raise ValueError(kind)
    return {"rtol": 0.0, "atol": 1e-5 * peak}


def make_zoo_image(path: Path) -> Path:
    """A 45x38 RGB PNG with structure at several scales (gradients, a disc, a bar, seeded noise): not the
    size of any zoo model, so the resize is exercised, and not grey, so channel order matters."""
    height, width = 38, 45
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(20261123)
    red = 255 * xx / (width - 1)
    green = 255 * yy / (height - 1)
    blue = 128 + 100 * np.sin(xx / 4.0) * np.cos(yy / 5.0)
    image = np.stack([red, green, blue], axis=-1)
    disc = (yy - 12) ** 2 + (xx - 30) ** 2 < 49
    image[disc] = [250, 30, 40]
    image[26:32, 5:25] = [20, 40, 230]
    image += rng.normal(0, 12, image.shape)
    Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def zoo_image(tmp_path_factory) -> Path:
    return make_zoo_image(tmp_path_factory.mktemp("zoo") / "zoo.png")


def run_cli(case: dict, image: Path, out: Path):
    args = [
        "run",
        str(ZOO / "models" / case["file"]),
        str(image),
        "--out",
        str(out),
        "--patch",
        str(case["patch"]),
        "--stride",
        str(case["stride"]),
        "--quiet",
        "--no-timing",
        *case["flags"],
    ]
    try:  # click < 8.2 mixes stderr into stdout unless told not to; 8.2 removed the option and always separates
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, args)


def error_lines(result) -> list:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_zoo_model(case: dict, zoo_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(case, zoo_image, out)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    if case["expect"] == "error":
        lines = error_lines(result)
        assert result.exit_code == case["exit_code"], f"exit {result.exit_code}, stderr: {result.stderr!r}"
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert case["error_contains"] in lines[0], lines[0]
        return
    assert result.exit_code == 0, f"exit {result.exit_code}, stderr: {result.stderr!r}"
    expected = reference.reference_map(ZOO / "models" / case["file"], zoo_image, case, target=case["target"])
    peak = float(np.abs(expected.map).max())
    assert peak > 1e-3, f"zoo model {case['file']} is insensitive to occlusion (peak {peak}): rebuild it"
    record = json.loads((out / "zoo.json").read_text())
    assert record["target"]["index"] == expected.target
    assert record["score"]["original"] == pytest.approx(expected.original[expected.target], rel=1e-3, abs=1e-4)
    assert record["map_info"]["windows"] == expected.windows
    got = np.load(out / "zoo.npy")
    assert got.shape == expected.map.shape
    np.testing.assert_allclose(got, expected.map, **tolerances(case["tolerance"], peak))
    if case["tolerance"] == "fp16":  # float16 arithmetic: the map is its own full passes', bit for bit
        full = run_cli({**case, "flags": case["flags"] + ["--incremental", "off"]}, zoo_image, tmp_path / "off")
        assert full.exit_code == 0, full.stderr
        assert np.array_equal(got, np.load(tmp_path / "off" / "zoo.npy"))


def test_manifest_lists_every_model_file() -> None:
    """Every committed model is in the manifest and every manifest file exists (external data beside its model)."""
    files = {p.name for p in (ZOO / "models").iterdir() if p.suffix == ".onnx"}
    assert files == {c["file"] for c in CASES}
    assert (ZOO / "models" / "external_data.onnx.data").is_file()


@pytest.mark.parametrize("name", ["uint8_nhwc", "int8_input", "int8_dequantize", "float64", "int8_qdq", "fp16"])
def test_incremental_inference_on_other_input_types(zoo_image, tmp_path, name):
    """uint8, int8 (cast, or read by DequantizeLinear) and float64 inputs: a plan in the model's own input type, its
    map the full-pass map to float noise
    (a uint8 model used to fail its image when auto chose a plan). int8 QDQ and float16 graphs round more
    coarsely than a plan can reproduce: auto runs full passes (the map is the `off` map bit for bit, the
    reason in the JSON), and `on` runs the plan, notes once that the map is approximate, and records
    exact: false with the measured error."""
    (case,) = [c for c in CASES if c["name"] == name]
    exact = name in ("uint8_nhwc", "int8_input", "int8_dequantize", "float64")
    maps, records, results = {}, {}, {}
    for mode in ("on", "auto", "off"):
        out = tmp_path / mode  # patch 4, stride 2: up to 225 windows, enough for auto to consider a plan
        results[mode] = run_cli(
            {**case, "patch": 4, "stride": 2, "flags": case["flags"] + ["--incremental", mode]}, zoo_image, out
        )
        assert results[mode].exit_code == 0, results[mode].output
        records[mode] = json.loads((out / "zoo.json").read_text())["params"]["incremental"]
        maps[mode] = np.load(out / "zoo.npy")
    peak = float(np.abs(maps["off"]).max())
    assert peak > 0
    assert records["on"]["used"] is True and records["on"]["exact"] is exact
    if exact:  # (auto may find the plan not worth it on these 16x16 and 32x32 inputs)
        for mode in ("on", "auto"):
            np.testing.assert_allclose(maps[mode], maps["off"], rtol=0, atol=1e-5 * peak)
        return
    assert records["auto"]["used"] is False and records["auto"]["exact"] is True
    assert "bit for bit" in records["auto"]["reason"]
    assert np.array_equal(maps["auto"], maps["off"])
    assert 0 <= records["on"]["measured_error"] < float("inf") and records["on"]["checked_windows"] == 10
