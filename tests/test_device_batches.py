"""Occluded batches built inside onnxruntime (issue 32): the pre-graph of occlude_cli.inference.pregraph, run on
the CPU provider, against the batches the engine builds on the host, element for element (bit patterns
compared), and whole runs with ``--batches device`` against ``--batches host``: the same .npy bit for bit on
every zoo model (NCHW and NHWC, grey, uint8, int8, float16, float64, fixed batch 1, opset 9, external data,
dynamic sizes), every baseline kind, a 3-D volume, the 224x224 sample model and a folder run.

On the CPU provider the model sees the same bytes in the same batch sizes, so its outputs are the same bits;
on CUDA the maps are held to the CPU's within 1e-4 of the peak by benchmarks/gpu.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from occlude_cli import ExplainOptions, explain
from occlude_cli.cli import app
from occlude_cli.core.engine import score_windows, window_grid
from occlude_cli.inference.pregraph import BASELINE, BOXES, IMAGE, occlusion_pregraph
from occlude_cli.loaders.model import OnnxClassifier

from test_zoo import CASES, ZOO, make_zoo_image

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_models" / "efficientnet_lite0.onnx"


def host_batches(image, baseline, windows, axes, batch_size):
    """The batches the engine's own loop builds (score_windows with a score function that keeps them)."""
    kept = []

    def score(batch):
        kept.append(batch.copy())
        return np.zeros((len(batch), 1))

    score_windows(image, baseline, windows, score, batch_size=batch_size, spatial_axes=axes)
    return np.concatenate(kept)


def device_built(image, baseline, windows, axes, batch=None):
    d = len(axes)
    pre = occlusion_pregraph(image.shape, str(image.dtype), axes, batch=batch)
    session = ort.InferenceSession(pre.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes = np.concatenate([windows[:, :d], windows[:, :d] + windows[:, d:]], axis=1)
    if batch:
        pad = -len(boxes) % batch
        boxes = np.concatenate([boxes, np.zeros((pad, 2 * d), dtype=np.int64)])
        parts = [
            session.run(None, {IMAGE: image, BASELINE: baseline, BOXES: boxes[i : i + batch]})[0]
            for i in range(0, len(boxes), batch)
        ]
        return np.concatenate(parts)[: len(windows)]
    return session.run(None, {IMAGE: image, BASELINE: baseline, BOXES: boxes})[0]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize(
    "shape,axes,dtype",
    [
        ((3, 29, 31), (1, 2), "float32"),  # NCHW
        ((29, 31, 3), (0, 1), "float32"),  # NHWC
        ((29, 31, 3), (0, 1), "uint8"),
        ((1, 29, 31), (1, 2), "int8"),
        ((3, 29, 31), (1, 2), "float16"),
        ((3, 29, 31), (1, 2), "float64"),
        ((1, 7, 13, 11), (1, 2, 3), "float32"),  # a CDHW volume
    ],
)
def test_pregraph_equals_host_batches(shape, axes, dtype):
    """Every row of the pre-graph's batch is the host-built row bit for bit: grids whose last window is flush
    with the border (stride not dividing the size), windows of a region, one window the size of the input;
    NaN and signed zeros in the image survive (a select, no arithmetic)."""
    rng = np.random.default_rng(32)
    if dtype in ("uint8", "int8"):
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
        baseline = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    else:
        image = rng.normal(size=shape).astype(dtype)
        baseline = rng.normal(size=shape).astype(dtype)
        image.flat[0], image.flat[1] = np.nan, -0.0
    size = [shape[a] for a in axes]
    d = len(axes)
    grids = [
        window_grid(size, [5] * d, [3] * d),
        window_grid(size, [4] * d, [4] * d, tuple([1] * d) + tuple(s - 2 for s in size)),
        window_grid(size, size, size),
    ]
    for windows in grids:
        host = host_batches(image, baseline, windows, axes, batch_size=7)
        assert same_bits(device_built(image, baseline, windows, axes), host)
        assert same_bits(device_built(image, baseline, windows, axes, batch=4), host)  # fixed batch, padded


def test_empty_box_leaves_the_image():
    image = np.arange(1, 2 * 5 * 6 + 1, dtype=np.float32).reshape(2, 5, 6)
    out = device_built(image, -image, np.array([[2, 3, 0, 0], [0, 0, 5, 6]]), (1, 2))
    assert same_bits(out[0], image) and same_bits(out[1], -image)


def test_negative_zero_in_the_baseline():
    """The one difference onnxruntime's CPU ``Where`` makes: a -0.0 it selects from its first input (the
    baseline) comes out as +0.0. The rows compare equal element for element (a model's arithmetic cannot tell
    the two zeros apart except in the sign of an exact zero result); no preprocessing of occlude makes a -0.0
    baseline (pixel * scale - mean gives +0.0), which is why the runs below are bit for bit."""
    image = np.ones((1, 4, 4), dtype=np.float32)
    baseline = np.full((1, 4, 4), -0.0, dtype=np.float32)
    windows = np.array([[0, 0, 2, 2]])
    out, host = device_built(image, baseline, windows, (1, 2)), host_batches(image, baseline, windows, (1, 2), 1)
    assert np.array_equal(out, host) and np.signbit(host[0, 0, :2, :2]).all()


def cli(args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


def run_both(model, image, tmp_path, *flags):
    maps = {}
    for mode in ("host", "device"):
        out = tmp_path / mode
        result = cli(["run", model, image, "--out", out, "--batches", mode, "-q", "--no-timing", *flags])
        assert result.exit_code == 0, result.stderr
        records = [p for p in out.glob("*.json") if p.name not in ("manifest.json", "summary.json")]
        record = json.loads(records[0].read_text())
        maps[mode] = np.load(next(p for p in out.glob("*.npy")))
    return maps, record


MAP_CASES = [c for c in CASES if c["expect"] == "map"]


@pytest.fixture(scope="module")
def zoo_image(tmp_path_factory) -> Path:
    return make_zoo_image(tmp_path_factory.mktemp("zoo") / "zoo.png")


@pytest.mark.parametrize("case", MAP_CASES, ids=[c["name"] for c in MAP_CASES])
def test_zoo_maps_device_equal_host(case, zoo_image, tmp_path):
    """Every zoo model the CLI explains gives the same map bit for bit with device-built batches."""
    flags = ["--patch", case["patch"], "--stride", case["stride"], "--incremental", "off", *case["flags"]]
    maps, record = run_both(ZOO / "models" / case["file"], zoo_image, tmp_path, *flags)
    assert same_bits(maps["device"], maps["host"])
    assert record["params"]["batches"] == "device"


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur", "noise", "tissue", "p10", "gray", "10,200,30"])
def test_every_baseline_kind(baseline, zoo_image, tmp_path):
    maps, _ = run_both(
        ZOO / "models" / "dynamo_nchw_rgb.onnx",
        zoo_image,
        tmp_path,
        "--patch",
        6,
        "--stride",
        4,
        "--baseline",
        baseline,
        "--seed",
        7,
        "--scale",
        "0.00392156862745098",
    )
    assert same_bits(maps["device"], maps["host"]) and np.abs(maps["host"]).max() > 0


def test_volume_device_equal_host(tmp_path):
    maps, record = run_both(
        ROOT / "sample_models" / "lesion3d.onnx",
        ROOT / "sample_images" / "medical" / "lesion_volume.nii.gz",
        tmp_path,
        "--patch",
        8,
        "--stride",
        8,
    )
    assert same_bits(maps["device"], maps["host"]) and maps["host"].ndim == 3


def test_sample_model_224_and_fixed_rules(tmp_path):
    """The 224x224 sample model through the library, with a region and refine: bit for bit; the JSON says
    where batches were built only when it was the device (host runs keep earlier versions' JSON)."""
    image = ROOT / "sample_images" / "cat.jpg"
    model = OnnxClassifier(SAMPLE)
    common = dict(patch=40, stride=24, incremental="off", baseline="blur", region=(20, 30, 200, 190))
    host = explain(model, image, ExplainOptions(**common, batches="host"))
    device = explain(model, image, ExplainOptions(**common, batches="device"))
    assert same_bits(host.map, device.map)
    assert "batches" not in host.params and device.params["batches"] == "device"
    refine = dict(common, refine=True, refine_budget=0.6)
    refined = [explain(model, image, ExplainOptions(**refine, batches=b)).map for b in ("host", "device")]
    assert same_bits(refined[0], refined[1])


def test_auto_keeps_host_batches_on_the_cpu(tmp_path):
    model = OnnxClassifier(ROOT / "sample_models" / "digits_cnn.onnx")
    result = explain(model, ROOT / "sample_images" / "digit_3.png", ExplainOptions(patch=2, stride=1))
    assert "batches" not in result.params


def test_bad_batches_values(tmp_path):
    result = cli(
        [
            "run",
            ROOT / "sample_models" / "digits_cnn.onnx",
            ROOT / "sample_images" / "digit_3.png",
            "--out",
            tmp_path,
            "--batches",
            "gpu",
        ]
    )
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    with pytest.raises(Exception, match="batches must be one of auto, host, device"):
        ExplainOptions(batches="gpu").checked()
    inpaint = cli(
        [
            "run",
            ROOT / "sample_models" / "digits_cnn.onnx",
            ROOT / "sample_images" / "digit_3.png",
            "--out",
            tmp_path / "o",
            "--batches",
            "device",
            "--baseline",
            "inpaint",
            "--patch",
            "2",
        ]
    )
    lines = [line for line in inpaint.stderr.splitlines() if line.strip()]
    assert inpaint.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error:"), inpaint.stderr
    assert "--batches" in lines[0] and not (tmp_path / "o" / "digit_3.npy").exists()


def test_decoding_ahead_changes_nothing(tmp_path, monkeypatch):
    """A folder run that decodes the next photo on a thread (what a GPU run does) writes the same files, byte
    for byte, as one that decodes in turn; a truncated JPEG and a text file named .png fail the same way, and
    nothing decoded ahead is left behind."""
    import shutil

    from occlude_cli.batch.inputs import InputImage
    from occlude_cli.batch.loop import run_images
    from occlude_cli.loaders import images as images_module
    from occlude_cli.loaders import prefetch as prefetch_module
    from occlude_cli.analyses.preprocessing import resolve_preprocessing

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        shutil.copy(ROOT / "sample_images" / name, folder / name)
    (folder / "broken.png").write_bytes((ROOT / "sample_images" / "digit_3.png").read_bytes()[:60])
    (folder / "text.png").write_text("not an image")
    model = OnnxClassifier(ROOT / "sample_models" / "digits_cnn.onnx")
    options = ExplainOptions(patch=2, stride=1).checked()
    inputs = [InputImage(p, p.stem) for p in sorted(folder.iterdir())]
    import threading
    from collections import Counter

    decoded_on: Counter = Counter()
    real_open = images_module.open_image

    def counting_open(path):
        decoded_on[threading.current_thread().name.startswith("occlude-decode")] += 1
        return real_open(path)

    monkeypatch.setattr(images_module, "open_image", counting_open)
    rows = {}
    for ahead in (False, True):
        decoded_on.clear()
        out = tmp_path / f"out{ahead}"
        result = run_images(
            model, inputs, out, options, preprocessing=resolve_preprocessing(model), prefetch=ahead, timing=False
        )
        rows[ahead] = [(r.path, r.status, r.error) for r in result.rows]
        assert decoded_on == ({True: 5} if ahead else {False: 5})  # every file opened once, on the thread or not
    assert rows[True] == rows[False] and [s for _, s, _ in rows[True]].count("failed") == 2
    for file in sorted((tmp_path / "outFalse").iterdir()):
        if file.name != "manifest.json":  # (the manifest records when the job ran)
            assert file.read_bytes() == (tmp_path / "outTrue" / file.name).read_bytes(), file.name
    assert prefetch_module.DECODED_AHEAD == {}
