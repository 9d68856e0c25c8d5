"""Fast paths never change a map in silence (issue 21): every path that computes a map, held to an independent
one-window-at-a-time onnxruntime loop (tests/zoo/reference.py) element-wise.

* 224x224 models exported the way users export them (tests/realistic_models.py, built once per session with
  torch): a QDQ int8 ResNet-18-like and a float16 ResNet-10-like. With the default flags their maps are the
  full-pass maps (the fp16 one bit for bit against its own full passes); ``--incremental on`` runs, says once
  on stderr that the maps are approximate and by how much, and records ``exact: false`` and the measured error.
* The other paths: shrunken batches after ``--max-memory``, a model that really needs batch 1, a fixed batch
  of 4, every class's map (``--top-k``, ``--all-classes``), refine's measured windows, each with full passes
  and with incremental inference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app
from conftest import zoo_reference

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "tests" / "zoo"
PHOTOS = ROOT / "sample_images"

reference = zoo_reference()

FLOAT32_NOISE = 1e-5  # of the map's peak: the done criterion of issue 21 for float32 arithmetic


@pytest.fixture(scope="session")
def realistic(tmp_path_factory) -> dict:
    """The two 224x224 models of tests/realistic_models.py, built once per test session."""
    pytest.importorskip("torch", reason="the peer extra builds the 224x224 models")
    pytest.importorskip("onnxconverter_common", reason="the peer extra converts a model to float16")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import realistic_models
    finally:
        sys.path.pop(0)
    folder = tmp_path_factory.mktemp("realistic")
    return {"int8": realistic_models.int8_resnet18(folder), "fp16": realistic_models.fp16_resnet10(folder)}


def case_of(dtype: str, patch: int, stride: int, size=(224, 224), score: str = "softmax") -> dict:
    """A zoo-style case for the reference loop: pixels / 255, no mean or std, the zero baseline."""
    return {
        "patch": patch,
        "stride": stride,
        "score": score,
        "reference": {
            "size": list(size),
            "layout": "NCHW",
            "color": "rgb",
            "scale": 1 / 255,
            "mean": [0.0],
            "std": [1.0],
            "input_dtype": dtype,
            "output": None,
        },
    }


def run(model: Path, image: Path, out: Path, *flags: str):
    try:  # click < 8.2 mixes stderr into stdout unless told not to; 8.2 removed the option
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(app, ["run", str(model), str(image), "--out", str(out), "--no-timing", *flags])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.exit_code == 0, result.stderr
    return result


def outputs(out: Path, stem: str):
    return np.load(out / f"{stem}.npy"), json.loads((out / f"{stem}.json").read_text())


_MAPS: dict = {}


def full_pass_map(model: Path, image: Path, case: dict, target=None) -> np.ndarray:
    """reference.reference_map's map, computed once per test session for each model, image and case."""
    key = (str(model), str(image), json.dumps(case, sort_keys=True), target)
    if key not in _MAPS:
        _MAPS[key] = reference.reference_map(model, image, case, target=target).map
    return _MAPS[key]


def reference_drops(model: Path, image: Path, case: dict, windows, target: int) -> np.ndarray:
    """The target's drop for each (y, x, h, w) window, one full onnxruntime pass per window."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with Image.open(image) as opened:
        x = reference.preprocess(opened, case["reference"])

    def score(sample):
        return reference.score(session.run(None, {name: sample[None]})[0][0], case["score"])[target]

    original = score(x)
    drops = []
    for y, x0, h, w in windows:
        occluded = x.copy()
        occluded[:, y : y + h, x0 : x0 + w] = 0
        drops.append(original - score(occluded))
    return np.asarray(drops)


# ----------------------------------------------------------------------------- 224x224 int8 and float16


def test_int8_resnet18_default_flags_give_the_full_pass_map(realistic, tmp_path):
    """QDQ int8, per-channel weights, uint8 activations: `auto` decides from the graph (quantised arithmetic),
    before any image, to run full passes; the map equals the one-window-at-a-time loop. Before issue 21 the
    plan's self-check passed on this photo and the map was off by 55% of its peak."""
    model, image = realistic["int8"], PHOTOS / "astronaut.jpg"
    run(model, image, tmp_path / "auto", "--patch", "32", "--stride", "16", "-q")
    got, record = outputs(tmp_path / "auto", "astronaut")
    expected = full_pass_map(model, image, case_of("float32", 32, 16))
    peak = float(np.abs(expected).max())
    assert peak > 1e-3
    assert record["map_info"]["windows"] == 169
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_NOISE * peak)
    incremental = record["params"]["incremental"]
    assert incremental["used"] is False and incremental["exact"] is True
    assert incremental["reason"].startswith("quantised arithmetic (QuantizeLinear node")
    assert "bit for bit" in incremental["reason"]


def test_fp16_resnet10_default_flags_give_its_own_full_passes_bit_for_bit(realistic, tmp_path):
    """float16 input, weights and output: `auto` runs full passes, so the map is the `--incremental off` map bit
    for bit, and the one-window-at-a-time loop's to float32 noise. Before issue 21: 1.5% of the peak off."""
    model, image = realistic["fp16"], PHOTOS / "cat.jpg"
    run(model, image, tmp_path / "auto", "--patch", "32", "--stride", "16", "-q")
    run(model, image, tmp_path / "off", "--patch", "32", "--stride", "16", "-q", "--incremental", "off")
    (auto, record), (off, _) = outputs(tmp_path / "auto", "cat"), outputs(tmp_path / "off", "cat")
    assert np.array_equal(auto, off)
    expected = full_pass_map(model, image, case_of("float16", 32, 16))
    peak = float(np.abs(expected).max())
    assert peak > 1e-4
    np.testing.assert_allclose(auto, expected, rtol=0, atol=FLOAT32_NOISE * peak)
    incremental = record["params"]["incremental"]
    assert incremental["used"] is False and incremental["reason"].startswith("arithmetic in float16 (Conv node")


@pytest.mark.parametrize(
    "kind, image, dtype, reason",
    [("int8", "astronaut", "float32", "quantised arithmetic"), ("fp16", "cat", "float16", "arithmetic in float16")],
)
def test_incremental_on_says_the_map_is_approximate_and_by_how_much(realistic, tmp_path, kind, image, dtype, reason):
    """`--incremental on` on a graph a plan cannot reproduce: the run goes on, one note on stderr says the maps
    are approximate and by how much, the JSON says exact: false with the error measured on this image, and that
    error is real: on the check windows that lie on the run's grid the JSON's own drops differ from the
    one-window loop's by as much (never more)."""
    model, photo = realistic[kind], PHOTOS / f"{image}.jpg"
    result = run(model, photo, tmp_path / "on", "--patch", "32", "--stride", "16", "--incremental", "on")
    got, record = outputs(tmp_path / "on", image)
    notes = [line for line in result.stderr.splitlines() if "approximate" in line]
    assert len(notes) == 1 and notes[0].startswith("note: the maps are approximate"), result.stderr
    assert reason in notes[0] and "% of the largest drop" in notes[0]
    incremental = record["params"]["incremental"]
    assert incremental["used"] is True and incremental["exact"] is False
    assert incremental["reason"].startswith(f"approximate: {reason}")
    assert incremental["checked_windows"] == 10
    error = incremental["measured_error"]
    assert 0 < error < float("inf")
    assert f"{error:.2%}"[:3] in notes[0]  # the first image's measure, as a percentage
    # the check windows on the grid: the corners, the border middles and the centre (0, 96 and 192 each way)
    windows = {(w["y"], w["x"]): w["drop"] for w in record["windows"]}
    chosen = [(y, x, 32, 32) for y in (0, 96, 192) for x in (0, 96, 192)]
    truth = reference_drops(model, photo, case_of(dtype, 32, 16), chosen, record["target"]["index"])
    mine = np.asarray([windows[(y, x)] for y, x, _, _ in chosen])
    largest = float(np.abs(truth).max())
    assert float(np.abs(mine - truth).max()) / largest <= error * (1 + 1e-3) + 1e-6
    # and the map really is approximate: the full-pass map differs
    expected = full_pass_map(model, photo, case_of(dtype, 32, 16))
    assert float(np.abs(got - expected).max()) > 1e-3 * float(np.abs(expected).max())


def test_a_folder_run_notes_the_approximation_once(tmp_path):
    """The zoo's float16 model, `--incremental on`, two images: one note for the run (not one per image), each
    JSON with its own image's measured error."""
    (case,) = [c for c in json.loads((ZOO / "manifest.json").read_text())["cases"] if c["name"] == "fp16"]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat", "coffee"):
        with Image.open(PHOTOS / f"{name}.jpg") as photo:
            photo.resize((48, 48)).save(folder / f"{name}.png")
    result = run(
        ZOO / "models" / case["file"], folder, tmp_path / "out", "--patch", "4", "--stride", "1", "--incremental", "on"
    )
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "the maps are approximate" in notes[0], result.stderr
    errors = [
        outputs(tmp_path / "out", name)[1]["params"]["incremental"]["measured_error"] for name in ("cat", "coffee")
    ]
    assert all(e > 0 for e in errors) and errors[0] != errors[1]


def test_an_approximate_plan_from_the_cache_gives_the_same_outputs(tmp_path, monkeypatch):
    """`--incremental on` on the float16 model with a cold cache, a warm one (the plan read back and checked
    again on the image) and none: byte-identical JSON and maps, `exact: false` each time."""
    outs = []
    for name, cache in (("cold", tmp_path / "cache"), ("warm", tmp_path / "cache"), ("none", "off")):
        monkeypatch.setenv("OCCLUDE_CACHE_DIR", str(cache))
        out = tmp_path / name
        flags = ["--patch", "4", "--stride", "2", "-q", "--incremental", "on"]
        run(ZOO / "models" / "fp16.onnx", PHOTOS / "flower.jpg", out, *flags)
        outs.append(out)
    assert any((tmp_path / "cache" / "incremental").iterdir())
    record = json.loads((outs[0] / "flower.json").read_text())["params"]["incremental"]
    assert record["used"] is True and record["exact"] is False
    for suffix in (".json", ".npy"):
        assert len({(out / f"flower{suffix}").read_bytes() for out in outs}) == 1, suffix


def test_check_notes_the_approximation_once_too(tmp_path):
    """`occlude check` explains each image like `run`: with `--incremental on` on the float16 model, one note
    for the whole folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat", "coffee"):
        with Image.open(PHOTOS / f"{name}.jpg") as photo:
            photo.resize((40, 40)).save(folder / f"{name}.png")
    args = ["check", str(ZOO / "models" / "fp16.onnx"), str(folder), "--box", "0,0,20,20", "--out", str(tmp_path / "o")]
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(app, [*args, "--patch", "4", "--stride", "1", "--incremental", "on"])
    assert "Traceback" not in result.stderr and result.exit_code in (0, 1), result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "the maps are approximate" in notes[0], result.stderr


def test_a_plan_that_fails_its_self_check_falls_back_with_one_note(tmp_path, monkeypatch):
    """Fault injection: every plan's drops made a whole unit off. auto runs full passes (the loop's map), says
    so in one note and in the JSON; on refuses with one error line."""
    from occlude_cli.inference import selfcheck

    honest = selfcheck._SelfCheck._difference
    monkeypatch.setattr(selfcheck._SelfCheck, "_difference", lambda self, scorer: honest(self, scorer) + 1.0)
    case = zoo_case("dynamo_nchw_rgb", patch=4, stride=1)
    model, image = ZOO / "models" / case["file"], PHOTOS / "flower.jpg"
    result = run(model, image, tmp_path / "auto", *case["flags"], "--patch", "4", "--stride", "1")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: incremental inference not used, full passes instead"), notes
    assert "self-check failed: the explained score's drop differs from full passes" in notes[0]
    got, record = outputs(tmp_path / "auto", "flower")
    assert record["params"]["incremental"]["used"] is False
    assert "self-check failed" in record["params"]["incremental"]["reason"]
    expected = full_pass_map(model, image, case)
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_NOISE * np.abs(expected).max())
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    on = runner.invoke(
        app, ["run", str(model), str(image), "--out", str(tmp_path / "on"), *case["flags"], "--incremental", "on"]
    )
    lines = [line for line in on.stderr.splitlines() if line.strip()]
    assert on.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error:") and "self-check failed" in lines[0]


def test_dry_run_says_what_incremental_inference_will_do(tmp_path):
    """--dry-run decides from the graph, before any image is explained: full passes for the int8 QDQ model
    under auto (and why), an approximate plan under on, a possible plan for a float32 CNN."""
    int8 = ZOO / "models" / "int8_qdq.onnx"
    image = PHOTOS / "cat.jpg"
    runner = CliRunner()
    auto = runner.invoke(app, ["run", str(int8), str(image), "--dry-run", "--json", "--patch", "4", "--stride", "2"])
    assert auto.exit_code == 0, auto.output
    decision = json.loads(auto.stdout)["incremental"]
    assert decision["possible"] is False and decision["exact"] is True
    assert decision["reason"].startswith("quantised arithmetic (QuantizeLinear node")
    on = runner.invoke(
        app, ["run", str(int8), str(image), "--dry-run", "--patch", "4", "--stride", "2", "--incremental", "on"]
    )
    assert on.exit_code == 0, on.output
    assert "incremental inference (on): used, the maps will be APPROXIMATE: quantised arithmetic" in on.stdout
    fp32 = ZOO / "models" / "dynamo_nchw_rgb.onnx"
    plain = runner.invoke(app, ["run", str(fp32), str(image), "--dry-run", "--patch", "4", "--stride", "2"])
    assert plain.exit_code == 0, plain.output
    assert "incremental inference (auto): possible" in plain.stdout


# ----------------------------------------------------------------------------- every other path to a map


def zoo_case(name: str, **changes) -> dict:
    (case,) = [c for c in json.loads((ZOO / "manifest.json").read_text())["cases"] if c["name"] == name]
    return {**case, **changes}


@pytest.mark.parametrize("mode", ["on", "off"])
def test_every_class_map_equals_the_one_window_loop(tmp_path, mode):
    """--top-k and --all-classes: every class's map comes from the same passes, with full passes and with
    incremental inference, each equal to the loop run for that class."""
    case = zoo_case("dynamo_nchw_rgb", patch=4, stride=2)
    model, image = ZOO / "models" / case["file"], PHOTOS / "cat.jpg"
    flags = ["--patch", "4", "--stride", "2", "-q", "--top-k", "3", "--all-classes", "--incremental", mode]
    run(model, image, tmp_path, *case["flags"], *flags)
    _, record = outputs(tmp_path, "cat")
    assert record["params"]["incremental"]["used"] is (mode == "on")
    classes, topk = np.load(tmp_path / "cat.classes.npy"), np.load(tmp_path / "cat.topk.npy")
    assert classes.shape == (10, 32, 32) and topk.shape == (3, 32, 32)
    for c in range(10):
        expected = full_pass_map(model, image, case, target=c)
        np.testing.assert_allclose(classes[c], expected, rtol=0, atol=FLOAT32_NOISE * np.abs(expected).max())
    for k, entry in enumerate(record["top_k"]):
        np.testing.assert_array_equal(topk[k], classes[entry["index"]])


def _pinned_to_four(tmp_path: Path) -> Path:
    """The zoo's dynamo model with its batch dimension declared 4: occlude pads every batch to 4 copies."""
    import onnx

    model = onnx.load(str(ZOO / "models" / "dynamo_nchw_rgb.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 4
    path = tmp_path / "pinned4.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("mode", ["on", "off"])
@pytest.mark.parametrize("name", ["legacy_fixed_batch1", "pinned_to_four"])
def test_fixed_batch_models_give_the_one_window_loop_map(tmp_path, name, mode):
    """A legacy export whose Reshape needs batch 1 (run one image at a time; the plan's suffix too) and a model
    declared with a batch of 4 (batches padded): the loop's map, with full passes and incremental inference."""
    if name == "pinned_to_four":
        case = zoo_case("dynamo_nchw_rgb", patch=4, stride=2)
        model = _pinned_to_four(tmp_path)
        reference_model = ZOO / "models" / case["file"]  # the same graph with a free batch, one image at a time
    else:
        case = zoo_case(name, patch=4, stride=2)
        model = reference_model = ZOO / "models" / case["file"]
    image = PHOTOS / "coffee.jpg"
    run(model, image, tmp_path / "out", *case["flags"], "--patch", "4", "--stride", "2", "-q", "--incremental", mode)
    got, record = outputs(tmp_path / "out", "coffee")
    assert record["params"]["incremental"]["used"] is (mode == "on")
    batching = record["model"]["batching"]
    assert batching.startswith(
        "fixed batch 1, run one image at a time" if name != "pinned_to_four" else "fixed batch 4"
    )
    expected = full_pass_map(reference_model, image, case)
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT32_NOISE * np.abs(expected).max())


EFFICIENTNET = ROOT / "sample_models" / "efficientnet_lite0.onnx"


def efficientnet_case(patch: int, stride: int) -> dict:
    case = case_of("float32", patch, stride)
    case["reference"].update({"scale": 1.0, "mean": [127.0] * 3, "std": [128.0] * 3})  # the model's metadata
    return case


@pytest.fixture(scope="module")
def efficientnet_map() -> np.ndarray:
    """EfficientNet-Lite0 on the cat at patch 32 / stride 16: the one-window loop's map."""
    return reference.reference_map(EFFICIENTNET, PHOTOS / "cat.jpg", efficientnet_case(32, 16)).map


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_shrunken_batches_after_max_memory_give_the_full_pass_map(tmp_path, efficientnet_map, mode):
    """--max-memory shrinks the batch from 64 to 3 (169 windows: 56 batches of 3 and one of 1): with full
    passes and with incremental inference (auto uses it on this CNN) the map is the loop's."""
    flags = ["--patch", "32", "--stride", "16", "--batch-size", "64", "--max-memory", "34M", "--incremental", mode]
    result = run(EFFICIENTNET, PHOTOS / "cat.jpg", tmp_path, *flags)
    assert "batch size lowered from 64 to 3" in result.stderr
    got, record = outputs(tmp_path, "cat")
    assert record["params"]["batch_size"] == 3
    assert record["params"]["incremental"]["used"] is (mode == "auto")
    np.testing.assert_allclose(got, efficientnet_map, rtol=0, atol=FLOAT32_NOISE * np.abs(efficientnet_map).max())


def test_refine_measures_its_windows_exactly_with_either_engine(tmp_path):
    """Refine interpolates most windows (approximate by design, marked measured: false); the windows it
    measures are exact: their drops equal the one-window loop's, with full passes and incremental inference,
    and both engines measure the same windows and give the same refined map."""
    image = PHOTOS / "cat.jpg"
    records, maps = {}, {}
    for mode in ("on", "off"):
        run(
            EFFICIENTNET,
            image,
            tmp_path / mode,
            "--patch",
            "48",
            "--stride",
            "16",
            "--refine",
            "-q",
            "--incremental",
            mode,
        )
        maps[mode], records[mode] = outputs(tmp_path / mode, "cat")
        assert records[mode]["params"]["incremental"]["used"] is (mode == "on")
    measured = [[w for w in records[mode]["windows"] if w["measured"]] for mode in ("on", "off")]
    assert [(w["y"], w["x"]) for w in measured[0]] == [(w["y"], w["x"]) for w in measured[1]]
    assert 0 < len(measured[0]) < len(records["on"]["windows"])
    chosen = [(w["y"], w["x"], w["h"], w["w"]) for w in measured[0]]
    truth = reference_drops(EFFICIENTNET, image, efficientnet_case(48, 16), chosen, records["on"]["target"]["index"])
    largest = float(np.abs(truth).max())
    for windows in measured:
        drops = np.asarray([w["drop"] for w in windows])
        np.testing.assert_allclose(drops, truth, rtol=0, atol=FLOAT32_NOISE * largest)
    np.testing.assert_allclose(maps["on"], maps["off"], rtol=0, atol=FLOAT32_NOISE * np.abs(maps["off"]).max())
