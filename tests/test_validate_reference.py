"""`occlude compare` and `occlude stability` checked as a newcomer would: the numbers against independent
references computed here by hand (onnxruntime directly, scipy's correlations, a hand-written deletion curve),
a map compared with itself, and the bad inputs an outside reviewer tries first. Real models, real files, the
real CLI."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

from occlude_cli.cli import app

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = SAMPLE_MODELS / "digits_cnn.onnx"
DIGIT = SAMPLE_IMAGES / "digit_3.png"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})
    assert "Traceback" not in result.stdout + result.stderr
    return result


def _probabilities(session, batch: np.ndarray) -> np.ndarray:
    logits = session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})[0].astype(np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _hand_reference(other: np.ndarray, steps: int):
    """The digits CNN's occlusion map (patch 1, stride 1, zero baseline: each pixel set to 0 in turn, the drop
    of the softmax probability) and the deletion curve of ``other`` (pixels set to 0, most important first,
    ties in row-major order), computed with onnxruntime alone."""
    session = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(DIGIT).convert("L"), dtype=np.float32) / np.float32(255.0)
    clean = pixels[None, None]
    base = _probabilities(session, clean)[0]
    target = int(np.argmax(base))
    occluded = np.repeat(clean, 64, axis=0)
    for i in range(64):
        occluded[i, 0, i // 8, i % 8] = 0.0
    drops = base[target] - _probabilities(session, occluded)[:, target]
    order = sorted(range(64), key=lambda i: (-other.ravel()[i], i))
    counts = [int(np.floor(v + 0.5)) for v in np.linspace(0, 64, steps + 1)]
    curve = []
    for k in counts:
        batch = clean.copy().reshape(1, 1, 64)
        batch[0, 0, order[:k]] = 0.0
        curve.append(_probabilities(session, batch.reshape(1, 1, 8, 8))[0, target])
    fractions = np.asarray(counts) / 64.0
    area = sum((fractions[i + 1] - fractions[i]) * (curve[i] + curve[i + 1]) / 2 for i in range(steps))
    return drops.reshape(8, 8), target, np.asarray(curve), area


def test_compare_numbers_match_scipy_and_a_hand_written_deletion_curve(tmp_path):
    other = np.random.default_rng(7).normal(size=(8, 8))
    np.save(tmp_path / "other.npy", other)
    result = invoke(
        "compare", DIGITS, DIGIT, tmp_path / "other.npy", "--patch", 1, "--stride", 1, "--baseline", "zero",
        "--steps", 16, "--fractions", "", "-o", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "out" / "digit_3.compare.json").read_text())
    occlusion, target, curve, area = _hand_reference(other, 16)
    assert document["target"]["index"] == target
    assert document["agreement"]["pearson"] == pytest.approx(pearsonr(occlusion.ravel(), other.ravel())[0], abs=1e-9)
    assert document["agreement"]["spearman"] == pytest.approx(spearmanr(occlusion.ravel(), other.ravel())[0], abs=1e-9)
    np.testing.assert_allclose(document["curves"]["other"]["deletion"], curve, rtol=0, atol=1e-9)
    assert document["curves"]["other"]["deletion_auc"] == pytest.approx(area, abs=1e-9)


def test_compare_with_occlusions_own_saved_map_is_a_tie_everywhere(tmp_path):
    """The map `run` wrote (STEM.npy, float32) compared with the occlusion map it came from: correlations 1, and
    no metric may name a winner between a map and itself (the verdicts must not read float32 rounding)."""
    effnet = SAMPLE_MODELS / "efficientnet_lite0.onnx"
    cat = SAMPLE_IMAGES / "cat.jpg"
    flags = ("--patch", 56, "--stride", 28)
    assert invoke("run", effnet, cat, *flags, "-o", tmp_path / "run", "-q").exit_code == 0
    result = invoke("compare", effnet, cat, tmp_path / "run" / "cat.npy", *flags, "-o", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "cmp" / "cat.compare.json").read_text())
    assert document["agreement"]["spearman"] == 1.0 and document["agreement"]["top_iou"] == 1.0
    assert document["agreement"]["pearson"] == pytest.approx(1.0, abs=1e-12)
    assert set(document["better"].values()) == {"tie"}
    assert document["fidelity"]["better"] == {"infidelity": "tie", "sufficiency": "tie", "completeness": "tie"}
    verdicts = [
        line.rstrip("│ ").rsplit("│", 1)[-1].strip() for line in result.stdout.splitlines() if "better)" in line
    ]
    assert verdicts == ["tie"] * 5, result.stdout


@pytest.mark.parametrize("name", ["zeros", "constant"])
def test_compare_with_a_constant_map_says_the_correlation_is_undefined(tmp_path, name):
    np.save(tmp_path / f"{name}.npy", np.zeros((8, 8)) if name == "zeros" else np.full((8, 8), 3.0))
    result = invoke("compare", DIGITS, DIGIT, tmp_path / f"{name}.npy", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "Pearson ," not in result.stdout and "Spearman ," not in result.stdout
    assert "Pearson n/a, Spearman n/a" in result.stdout
    document = json.loads((tmp_path / "out" / "digit_3.compare.json").read_text())
    assert document["agreement"]["pearson"] is None and document["agreement"]["spearman"] is None


def test_stability_expect_errors_name_expect_and_come_before_any_trial(tmp_path):
    for expect, words in (("999", "--expect 999 is out of range"), ("nine", "--expect 'nine' is none of")):
        result = invoke("stability", DIGITS, DIGIT, "--box", "1,1,3,3", "--expect", expect, "-o", tmp_path / "out")
        assert result.exit_code == 1
        assert result.stderr.count("error:") == 1 and words in result.stderr, result.stderr
        assert "--target" not in result.stderr
        assert not (tmp_path / "out").exists()  # refused before the image was explained or anything written


def test_stability_expect_as_a_label_and_an_index_agree(tmp_path):
    for expect in ("3", " 3 "):
        result = invoke("stability", DIGITS, DIGIT, "--box", "1,1,3,3", "--expect", expect, "--trials", 1,
                        "-o", tmp_path / "out", "--no-timing")  # fmt: skip
        assert result.exit_code == 0, result.output
        document = json.loads((tmp_path / "out" / "digit_3.stability.json").read_text())
        assert document["patch_test"]["clean_class"] == 3


def test_check_reruns_are_byte_identical_with_no_timing(tmp_path):
    """check.json, check.csv, the JUnit file and the pictures of two runs with --no-timing are byte-identical
    (a CI job can diff them); with timing the seconds are recorded."""
    written = []
    for _ in range(2):
        out, junit = tmp_path / "out", tmp_path / "j.xml"
        result = invoke("check", DIGITS, DIGIT, "--box", "0,0,4,4", "--no-timing", "-o", out, "--junit", junit)
        assert result.exit_code == 0, result.output
        written.append({p.name: p.read_bytes() for p in sorted([*out.iterdir(), junit])})
        shutil.rmtree(out)
    assert set(written[0]) >= {"check.json", "check.csv", "j.xml", "digit_3.check.png"}
    assert written[0] == written[1]
    assert json.loads(written[0]["check.json"])["images"][0]["seconds"] is None
    assert invoke("check", DIGITS, DIGIT, "--box", "0,0,4,4", "-o", tmp_path / "c", "-q").exit_code == 0
    assert json.loads((tmp_path / "c" / "check.json").read_text())["images"][0]["seconds"] > 0


def test_compare_with_occlusions_own_float64_map_is_exactly_consistent(tmp_path):
    """The occlusion map itself (float64, from the library) as the other map: correlations exactly 1 and every
    number of the two maps identical."""
    from occlude_cli import explain

    effnet, cat = SAMPLE_MODELS / "efficientnet_lite0.onnx", SAMPLE_IMAGES / "cat.jpg"
    np.save(tmp_path / "own.npy", np.asarray(explain(effnet, cat, patch=56, stride=28).map, dtype=np.float64))
    result = invoke("compare", effnet, cat, tmp_path / "own.npy", "--patch", 56, "--stride", 28, "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "cat.compare.json").read_text())
    assert document["agreement"] == {**document["agreement"], "pearson": 1.0, "spearman": 1.0, "top_iou": 1.0}
    assert document["curves"]["occlusion"] == document["curves"]["other"]
    assert document["fidelity"]["maps"]["occlusion"] == document["fidelity"]["maps"]["other"]
    assert document["quality"]["occlusion"] == document["quality"]["other"]


@pytest.mark.parametrize("name", ["map.npy", "map.png"])
def test_compare_refuses_a_fifo_map_instead_of_hanging(tmp_path, name):
    """A named pipe given as the other map is refused unopened (opening it would block forever)."""
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / name)
    command = [sys.executable, "-m", "occlude_cli", "compare", DIGITS, DIGIT, tmp_path / name, "-o", tmp_path / "o"]
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.count("error:") == 1 and "FIFO" in result.stderr, result.stderr


def test_compare_refuses_a_decompression_bomb_png_map_in_one_line(tmp_path):
    Image.new("1", (20000, 20000), 0).save(tmp_path / "bomb.png")
    result = invoke("compare", DIGITS, DIGIT, tmp_path / "bomb.png", "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert "internal error" not in result.stderr and result.stderr.count("error:") == 1, result.stderr
    assert "bomb.png" in result.stderr and "too large" in result.stderr
