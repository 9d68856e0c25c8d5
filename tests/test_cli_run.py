"""`occlude run` end to end through the real CLI: outputs, JSON schema, flags and every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import __version__
from occlude_cli.cli import app
from onnx_models import feature_map_model, rectangle_model

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
EFFNET = str(SAMPLE_MODELS / "efficientnet_lite0.onnx")
runner = CliRunner()


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_digits_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = occlude("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "digit_3.heatmap.png",
        "digit_3.json",
        "digit_3.npy",
        "digit_3.overlay.png",
        "manifest.json",
        "summary.csv",
        "summary.json",
    ]
    record = json.loads((out / "digit_3.json").read_text())
    for key in ("model", "image", "target", "score", "params", "map", "windows", "timing"):
        assert key in record
    assert record["target"] == {"index": 3, "label": "3"}
    # issue 9: the default score is auto, resolved per head and recorded (logits -> softmax)
    assert record["score"]["kind"] == "softmax" and record["score"]["requested"] == "auto"
    assert 0.5 < record["score"]["original"] <= 1
    assert record["model"]["sha256"] and record["model"]["input"] == "input"
    assert record["model"]["provider"] == "CPUExecutionProvider"
    assert (record["image"]["width"], record["image"]["height"]) == (8, 8)
    assert record["params"]["patch"] == [1, 1] and record["params"]["stride"] == [1, 1]
    assert len(record["windows"]) == 64 and set(record["windows"][0]) >= {"y", "x", "h", "w", "score", "drop"}
    saved = np.load(out / "digit_3.npy")
    np.testing.assert_allclose(saved, np.array(record["map"]), atol=1e-6)
    # patch 1, stride 1: each pixel's value is exactly its one window's drop
    for window in record["windows"]:
        assert saved[window["y"], window["x"]] == pytest.approx(window["drop"], abs=1e-6)
        assert window["drop"] == pytest.approx(record["score"]["original"] - window["score"], abs=1e-12)
    assert Image.open(out / "digit_3.overlay.png").size[0] >= 320
    assert min(Image.open(out / "digit_3.heatmap.png").size) >= 320  # the map (320x320) plus title and colorbar


def test_effnet_cat_is_a_cat(tmp_path):
    out = tmp_path / "out"
    result = occlude(
        "run",
        EFFNET,
        SAMPLE_IMAGES / "cat.jpg",
        "--out",
        out,
        "--patch",
        "56",
        "--stride",
        "56",
        "--top-k",
        "3",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "cat.json").read_text())
    assert 281 <= record["target"]["index"] <= 285 and "cat" in record["target"]["label"].lower()
    assert len(record["windows"]) == 16 and record["map_info"]["forward_passes"] == 17
    assert [t["index"] for t in record["top_k"]][0] == record["target"]["index"] and len(record["top_k"]) == 3
    assert np.load(out / "cat.topk.npy").shape == (3, 224, 224)
    overlay = Image.open(out / "cat.overlay.png")
    original = Image.open(SAMPLE_IMAGES / "cat.jpg")
    assert overlay.size[0] > original.size[0] and overlay.size[1] > original.size[1]  # image 1:1 plus margins


def test_json_is_byte_identical_without_timing(tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = occlude(
            "run",
            DIGITS,
            SAMPLE_IMAGES / "digit_7.png",
            "--out",
            out,
            "--no-timing",
            "--quiet",
            "--baseline",
            "noise",
            "--seed",
            "3",
            "--patch",
            "2",
        )
        assert result.exit_code == 0, result.output
        outputs.append(out)
    for suffix in (".json", ".npy", ".heatmap.png", ".overlay.png"):
        assert (outputs[0] / f"digit_7{suffix}").read_bytes() == (outputs[1] / f"digit_7{suffix}").read_bytes()
    assert "timing" not in json.loads((outputs[0] / "digit_7.json").read_text())


def test_target_by_name_top_k_and_all_classes(tmp_path):
    out = tmp_path / "out"
    result = occlude(
        "run",
        DIGITS,
        SAMPLE_IMAGES / "digit_0.png",
        "--out",
        out,
        "--target",
        "8",
        "--top-k",
        "2",
        "--all-classes",
        "--score",
        "logit",
        "--patch",
        "2x3",
        "--stride",
        "1x2",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "digit_0.json").read_text())
    assert record["target"]["index"] == 8 and record["score"]["kind"] == "logit"
    assert record["params"]["patch"] == [2, 3] and record["params"]["stride"] == [1, 2]
    classes = np.load(out / "digit_0.classes.npy")
    assert classes.shape == (10, 8, 8)
    np.testing.assert_allclose(classes[8], np.load(out / "digit_0.npy"), atol=1e-5)
    top_class = np.load(out / "digit_0.top_class.npy")
    assert top_class.shape == (8, 8) and top_class.min() >= 0 and top_class.max() <= 9
    # forward passes are the same with or without --all-classes / --top-k
    assert record["map_info"]["forward_passes"] == len(record["windows"]) + 1


@pytest.mark.parametrize("baseline", ["zero", "mean", "gray", "black", "white", "blur", "noise", "200", "10,20,30"])
def test_every_baseline_runs(tmp_path, baseline):
    result = occlude(
        "run",
        DIGITS,
        SAMPLE_IMAGES / "digit_3.png",
        "--out",
        tmp_path,
        "--baseline",
        baseline,
        "--quiet",
        "--patch",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "digit_3.json").read_text())["params"]["baseline"] == baseline


def test_region_leaves_the_rest_not_computed(tmp_path):
    result = occlude("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--out", tmp_path, "--region", "0,0,4,8", "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "digit_3.json").read_text())
    assert all(v is None for row in record["map"] for v in row[4:])
    assert all(v is not None for row in record["map"] for v in row[:4])
    assert record["map_info"]["not_computed_pixels"] == 32


def test_json_summary_on_stdout_only(tmp_path):
    result = occlude(
        "run", DIGITS, SAMPLE_IMAGES / "digit_3.png", SAMPLE_IMAGES / "digit_7.png", "--out", tmp_path, "--json"
    )
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["counts"] == {"ok": 2, "failed": 0, "skipped": 0, "pending": 0}
    assert [row["target_index"] for row in document["images"]] == [3, 7]


def test_version_and_help():
    from importlib import metadata

    assert occlude("--version").stdout.strip() == f"occlude {__version__}"
    assert metadata.version("occlude") == __version__  # one source: pyproject reads occlude_cli/_version.py
    help_text = occlude("run", "--help").stdout
    for flag in (
        "--patch",
        "--stride",
        "--baseline",
        "--target",
        "--top-k",
        "--all-classes",
        "--score",
        "--device",
        "--batch-size",
        "--size",
        "--mean",
        "--std",
        "--scale",
        "--bgr",
        "--resize",
        "--labels",
        "--input",
        "--output",
        "--quiet",
        "Examples",
        "blur",
    ):
        assert flag in help_text, flag


def test_labels_file_and_preprocessing_flags(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n\n")
    result = occlude(
        "run",
        DIGITS,
        SAMPLE_IMAGES / "digit_3.png",
        "--out",
        tmp_path / "o",
        "--labels",
        labels,
        "--target",
        "digit 3",
        "--scale",
        "0.00392156862745098",
        "--mean",
        "0",
        "--std",
        "1",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "digit_3.json").read_text())
    assert record["target"] == {"index": 3, "label": "digit 3"}


def bad(tmp_path, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), result.stderr
    return result


def test_bad_inputs_give_one_line_and_nonzero_exit(tmp_path, gray_image):
    img = SAMPLE_IMAGES / "digit_3.png"
    out = tmp_path / "out"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    not_image = tmp_path / "fake.png"
    not_image.write_text("not a png")
    cases = [
        (("run", tmp_path / "missing.onnx", img), "model not found", 1),
        (("run", notes, img), "cannot load", 1),
        (("run", DIGITS, tmp_path / "missing.png"), "not found", 3),
        (("run", DIGITS, not_image), "not an image", 3),
        (("run", DIGITS, img, "--patch", "9"), "larger than the model input", 1),
        (("run", DIGITS, img, "--stride", "0"), "at least 1", 1),
        (("run", DIGITS, img, "--stride", "-2"), "at least 1", 1),
        (("run", DIGITS, img, "--patch", "abc"), "N or HxW", 1),
        (("run", DIGITS, img, "--target", "10"), "out of range", 1),
        (("run", DIGITS, img, "--target", "eleven"), "--target 'eleven' is none of the model's labels", 1),
        (("run", DIGITS, img, "--patch", "2", "--stride", "3"), "never be occluded", 1),
        (("run", DIGITS, img, "--baseline", "purple"), "--baseline takes zero, mean, gray", 1),
        # issue 10: a model that is not a classifier is known before any image is read: exit 1
        # (issue 28: task auto reads an (N, C, H, W) output as a segmentation; task classify still refuses it)
        (("run", feature_map_model(tmp_path / "f.onnx", size=(8, 8)), img, "--task", "classify"), "classifier", 1),
        # issue 8: choices are Enums; a bad choice is a usage error (exit 2) that lists the valid values
        (("run", DIGITS, img, "--device", "tpu"), "--device takes auto, cpu or cuda", 2),
        (("run", DIGITS, img, "--score", "foo"), "--score takes auto, softmax, sigmoid, logit, raw or prob", 2),
        (("run", DIGITS, img, "--mean", "1,2"), "--mean", 1),
        (("run", DIGITS, img, "--labels", tmp_path / "nolabels.txt"), "labels file not found", 1),
        (("run", DIGITS, img, "--top-k", "0"), "--top-k", 1),
        (("run", DIGITS, img, "--shard", "4/3"), "--shard", 1),
        (("run", DIGITS, img, "--refine", "--refine-budget", "1.5"), "--refine-budget", 1),
        (("run", DIGITS, img, "--refine", "--refine-step", "0"), "--refine-step", 1),
        (("run", DIGITS, img, "--region", "1,2,3"), "x0,y0,x1,y1", 1),
        (("run", DIGITS, img, "--multiscale"), "several patch sizes", 1),
    ]
    for args, message, code in cases:
        result = bad(tmp_path, *args, "--out", out, "--quiet")
        assert message in result.stderr, (args, result.stderr)
        assert result.exit_code == code, (args, result.exit_code, result.stderr)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    result = bad(tmp_path, "run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--out", blocker)
    assert "not a folder" in result.stderr and blocker.read_text() == "I am a file"
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        result = bad(tmp_path, "run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--out", locked / "sub")
        assert "cannot write" in result.stderr


def test_failed_rerun_keeps_existing_outputs(tmp_path):
    out = tmp_path / "out"
    assert occlude("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--out", out, "--quiet").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith("summary")}
    result = runner.invoke(
        app, ["run", DIGITS, str(SAMPLE_IMAGES / "digit_3.png"), "--out", str(out), "--baseline", "purple", "--quiet"]
    )
    assert result.exit_code == 1
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith("summary")}
    assert before == after
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_real_subprocess_has_no_traceback_and_no_progress_when_piped(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "occlude_cli.cli",
            "run",
            DIGITS,
            str(SAMPLE_IMAGES / "digit_3.png"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "\x1b[" not in ok.stdout + ok.stderr  # no ANSI progress redraws when not a terminal
    assert "windows" not in ok.stderr
    failed = subprocess.run(
        [sys.executable, "-m", "occlude_cli.cli", "run", str(tmp_path / "nope.onnx"), "x.png"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0 and "Traceback" not in failed.stderr


def test_refine_flag_records_measured_windows(tmp_path):
    result = occlude(
        "run",
        EFFNET,
        SAMPLE_IMAGES / "coffee.jpg",
        "--out",
        tmp_path,
        "--patch",
        "64",
        "--stride",
        "16",
        "--refine",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "coffee.json").read_text())
    measured = sum(w["measured"] for w in record["windows"])
    assert len(record["windows"]) == 121 and record["map_info"]["forward_passes"] == measured + 1
    assert record["map_info"]["forward_passes"] <= 0.25 * 122
    assert record["params"]["refine"] == {"step": 3, "budget": 0.25}
    assert record["target"]["label"] == "espresso"


def test_dry_run_estimates_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    result = occlude(
        "run", EFFNET, SAMPLE_IMAGES / "cat.jpg", SAMPLE_IMAGES / "coffee.jpg", "--out", out, "--dry-run", "--json"
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["windows"] == 729 and plan["forward_passes"] == 730 and plan["images"] == 2
    assert plan["estimated_s"] > 0 and plan["estimated_total_s"] == pytest.approx(2 * plan["estimated_s"])
    assert not out.exists()
    refined = json.loads(
        occlude(
            "run",
            EFFNET,
            SAMPLE_IMAGES / "cat.jpg",
            "--dry-run",
            "--json",
            "--refine",
            "--patch",
            "48",
            "--stride",
            "8",
        ).stdout
    )
    assert refined["exact_forward_passes"] == 530 and refined["forward_passes"] <= 132
    text = occlude("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--dry-run").stdout
    assert "64 windows" in text and "estimated" in text


def test_several_patch_sizes_give_maps_correlations_and_a_multiscale_map(tmp_path):
    result = occlude(
        "run",
        DIGITS,
        SAMPLE_IMAGES / "digit_7.png",
        "--out",
        tmp_path,
        "--patch",
        "1,2,3x2",
        "--multiscale",
        "--quiet",
        "--no-timing",
    )
    assert result.exit_code == 0, result.output
    study = json.loads((tmp_path / "digit_7.scales.json").read_text())
    assert study["patches"] == [[1, 1], [2, 2], [3, 2]]
    assert study["maps"] == ["digit_7.patch-1x1.json", "digit_7.patch-2x2.json", "digit_7.patch-3x2.json"]
    matrix = np.array(study["rank_correlation"])
    assert matrix.shape == (3, 3) and np.allclose(np.diag(matrix), 1) and np.allclose(matrix, matrix.T)
    maps = [np.load(tmp_path / f"digit_7.patch-{p}.npy") for p in ("1x1", "2x2", "3x2")]
    targets = {json.loads((tmp_path / name).read_text())["target"]["index"] for name in study["maps"]}
    assert targets == {7}  # every scale explains the same class
    expected = np.mean([m / np.abs(m).max() for m in maps], axis=0)
    np.testing.assert_allclose(np.load(tmp_path / "digit_7.multiscale.npy"), expected, atol=1e-6)
    assert (tmp_path / "digit_7.multiscale.overlay.png").exists()
    rows = json.loads(occlude("summary", tmp_path, "--json").stdout)["images"]
    assert len(rows) == 1 and rows[0]["output"] == "digit_7.scales.json"
    assert occlude("run", DIGITS, SAMPLE_IMAGES / "digit_7.png", "--multiscale", "--out", tmp_path).exit_code == 1


def test_metrics_adds_deletion_and_insertion(tmp_path):
    result = occlude("run", DIGITS, SAMPLE_IMAGES / "digit_0.png", "--out", tmp_path, "--metrics", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "digit_0.json").read_text())["metrics"]
    assert 0 <= metrics["deletion_auc"] < metrics["insertion_auc"] <= 1
    assert len(metrics["deletion"]) == len(metrics["fractions"]) == metrics["steps"] + 1


def test_fixed_batch_model_that_cannot_be_rewritten_says_so(tmp_path, gray_image):
    model = rectangle_model(tmp_path / "pinned.onnx", batch=1, pin_batch=True)
    result = occlude(
        "run", model, gray_image, "--out", tmp_path / "out", "--patch", "4", "--score", "logit", "--target", "0"
    )
    assert result.exit_code == 0, result.output
    assert "note: fixed batch 1, run one image at a time" in result.stderr
    record = json.loads((tmp_path / "out" / "white16.json").read_text())
    assert record["model"]["batching"].startswith("fixed batch 1") and record["params"]["batch_size"] == 1
    assert record["map_info"]["max"] > 0


def test_info_shows_what_occlude_reads_from_a_model(tmp_path):
    result = occlude("info", EFFNET, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["input"] == "input" and info["labels"] == 1000 and info["fixed_batch"] is None
    assert info["preprocessing"]["mean"] == [127.0, 127.0, 127.0] and info["batching"] == "dynamic batch"
    dynamic = rectangle_model(tmp_path / "dyn.onnx", spatial=("H", "W"))
    assert "needs flags" in json.loads(occlude("info", dynamic, "--json").stdout)["preprocessing"]
    assert "input_shape" in occlude("info", DIGITS).stdout


def test_summary_of_a_missing_folder_is_an_error(tmp_path):
    result = bad(tmp_path, "summary", tmp_path / "nowhere")
    assert "not a folder" in result.stderr and result.exit_code == 1


def test_the_command_exits_without_teardown_but_runs_atexit_and_flushes(tmp_path):
    """cli.app.exit_now: os._exit after the atexit handlers and a flush, with sys.exit's status rules; a
    non-daemon thread still running gets the normal exit (which waits for it)."""
    prologue = "import atexit, sys, threading, time; from occlude_cli.cli.app import main, exit_now; "
    cases = {
        "version": ("sys.argv = ['occlude', '--version']; atexit.register(lambda: print('atexit ran')); main()", 0),
        "usage": ("sys.argv = ['occlude', 'run', '--bogus']; main()", 2),
        "message": ("exit_now('bye')", 1),
        "thread": (
            "t = threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))); t.start(); "
            "exit_now(5)",
            5,
        ),
    }
    for name, (code, status) in cases.items():
        result = subprocess.run([sys.executable, "-c", prologue + code], capture_output=True, text=True)
        assert result.returncode == status, (name, result.stderr)
        if name == "version":
            assert result.stdout == f"occlude {__version__}\natexit ran\n"
        if name == "message":
            assert result.stderr == "bye\n"
        if name == "thread":
            assert result.stdout == "thread done\n"
    many = subprocess.run(  # everything written before the exit reaches a pipe, nothing truncated
        [sys.executable, "-c", prologue + "print('x' * 1_000_000, end=''); exit_now(0)"], capture_output=True
    )
    assert many.returncode == 0 and len(many.stdout) == 1_000_000


def test_options_for_medical_inputs_on_a_photo_say_they_are_not_used(tmp_path):
    """--window, --zscore, --display-window ... on a photo were accepted in silence (a user believing the CT
    window was applied): one warning names the flags, and the map is the one without them."""
    model, image = SAMPLE_MODELS / "digits_cnn.onnx", SAMPLE_IMAGES / "digit_3.png"
    plain = runner.invoke(app, ["run", str(model), str(image), "-o", str(tmp_path / "plain"), "-q"])
    assert plain.exit_code == 0 and "DICOM and NIfTI" not in plain.output
    flags = ["--window", "40,400", "--display-window", "brain", "--volume-index", "1"]
    done = runner.invoke(app, ["run", str(model), str(image), "-o", str(tmp_path / "out"), "-q", *flags])
    assert done.exit_code == 0, done.output
    line = "--window, --display-window, --volume-index apply to DICOM and NIfTI inputs: not used for a photo"
    assert line in done.output and done.output.count("DICOM and NIfTI") == 1
    record = json.loads((tmp_path / "out" / "digit_3.json").read_text())
    assert any("window, display_window, volume_index apply to DICOM" in w for w in record["warnings"])
    assert np.array_equal(np.load(tmp_path / "out" / "digit_3.npy"), np.load(tmp_path / "plain" / "digit_3.npy"))
