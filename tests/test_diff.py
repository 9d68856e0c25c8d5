"""occlude diff: two probe models whose maps are computable by hand, golden maps, gates and exit codes, the
similarity numbers against scipy and scikit-image, shared colour limits, hostile names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from skimage.metrics import structural_similarity

from occlude_cli import DiffSettings, OccludeError, diff_folder, diff_golden, diff_similarity
from occlude_cli.analyses.diff import joint_ssim
from occlude_cli.loaders.images import prepare_image
from occlude_cli.loaders.model import OnnxClassifier
from occlude_cli.analyses.preprocessing import resolve_preprocessing
from occlude_cli.pictures.diffs import diff_png
from occlude_cli.pictures.render import RenderStyle

from onnx_models import linear_head_model, rectangle_logit, rectangle_model

RECT_A = (4, 6, 9, 12)
RECT_B = (2, 2, 8, 8)
SIZE = 16
PATCH, STRIDE = 4, 2
FLAGS = ["--patch", "4", "--stride", "2", "--score", "logit"]


@pytest.fixture
def probes(tmp_path):
    """Model A and B (class 0: the mean over a different box each), a model whose top-1 is always class 1 but
    whose class 0 is A's, and a folder of three seeded RGB images of different brightness."""
    a = rectangle_model(tmp_path / "a.onnx", rect=RECT_A)
    b = rectangle_model(tmp_path / "b.onnx", rect=RECT_B)
    weights = np.zeros((3, 1, SIZE, SIZE))
    y0, x0, y1, x1 = RECT_A
    weights[0, 0, y0:y1, x0:x1] = 1.0 / ((y1 - y0) * (x1 - x0))
    weights[2] = -weights[0]
    flip = linear_head_model(tmp_path / "flip.onnx", weights, np.array([0.0, 10.0, 0.0]))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(29)
    for i, gain in enumerate((1.0, 0.5, 0.2)):
        pixels = (rng.integers(0, 256, (SIZE, SIZE, 3)) * gain).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(images / f"img{i}.png")
    return {"a": a, "b": b, "flip": flip, "images": images}


def slow_map(model: Path, image: Path, rect) -> np.ndarray:
    """The map by hand: one window at a time, the logit of class 0 (the box mean) recomputed in numpy, the
    drops averaged over the windows covering each pixel (the last window flush with the border)."""
    x = prepare_image(image, resolve_preprocessing(OnnxClassifier(model))).model_input.astype(np.float64)
    original = rectangle_logit(x, rect)
    starts = sorted(set(range(0, SIZE - PATCH + 1, STRIDE)) | {SIZE - PATCH})
    total, count = np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE))
    for y in starts:
        for left in starts:
            occluded = x.copy()
            occluded[:, y : y + PATCH, left : left + PATCH] = 0.0  # baseline zero: 0 in the model's input space
            total[y : y + PATCH, left : left + PATCH] += original - rectangle_logit(occluded, rect)
            count[y : y + PATCH, left : left + PATCH] += 1
    return total / count


def occlude(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "occlude_cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_diff_equals_the_slow_maps_and_scipy_and_skimage(probes, tmp_path):
    out = tmp_path / "out"
    result = diff_folder(probes["a"], probes["b"], probes["images"], out, patch=PATCH, stride=STRIDE, score="logit")
    assert not result.failed and not result.gates_failed
    assert len(result.rows) == 3
    for row in result.rows:
        image = Path(row["path"])
        slow_a, slow_b = slow_map(probes["a"], image, RECT_A), slow_map(probes["b"], image, RECT_B)
        written = np.load(out / f"{image.stem}.diff.npy")
        assert written.dtype == np.float32 and written.shape == (SIZE, SIZE)
        np.testing.assert_allclose(written, slow_b - slow_a, atol=1e-6)
        np.testing.assert_allclose(np.load(out / f"{image.stem}.a.npy"), slow_a, atol=1e-6)
        assert row["rank_corr"] == pytest.approx(stats.spearmanr(slow_a.ravel(), slow_b.ravel()).statistic, abs=1e-6)
        assert row["rank_corr_abs"] == pytest.approx(
            stats.spearmanr(np.abs(slow_a).ravel(), np.abs(slow_b).ravel()).statistic, abs=1e-6
        )
        assert row["pearson"] == pytest.approx(stats.pearsonr(slow_a.ravel(), slow_b.ravel()).statistic, abs=1e-6)
        joint = max(slow_a.max(), slow_b.max()) - min(slow_a.min(), slow_b.min())
        assert row["ssim"] == pytest.approx(structural_similarity(slow_a, slow_b, data_range=joint), abs=1e-6)
        assert row["target_index"] == 0 and row["a_index"] == 0 and row["b_index"] == 0 and row["top1_agrees"]
        assert (out / f"{image.stem}.diff.png").is_file()
    document = json.loads((out / "diff.json").read_text())
    assert document["mode"] == "models" and document["settings"]["patch"] == [PATCH, PATCH]
    assert (out / "diff.csv").read_text().splitlines()[0].startswith("path,status,target_index")


def test_similarity_numbers_equal_scipy_and_skimage_on_the_same_arrays():
    rng = np.random.default_rng(7)
    for shape in ((224, 224), (8, 8), (19, 33)):
        a = rng.normal(size=shape)
        b = np.round(a + rng.normal(size=shape) * 0.5, 1)  # ties, as occlusion maps have
        numbers = diff_similarity(a, b)
        assert numbers["rank_corr"] == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
        assert numbers["rank_corr_abs"] == pytest.approx(
            stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic, abs=1e-12
        )
        assert numbers["pearson"] == pytest.approx(stats.pearsonr(a.ravel(), b.ravel()).statistic, abs=1e-12)
        joint = max(a.max(), b.max()) - min(a.min(), b.min())
        assert numbers["ssim"] == pytest.approx(structural_similarity(a, b, data_range=joint), abs=1e-12)
        assert joint_ssim(a * 1e200, b * 1e200) == pytest.approx(numbers["ssim"], abs=1e-12)  # units do not matter
    assert np.isnan(joint_ssim(np.ones((6, 6)), np.zeros((6, 6)) + 0.5))  # shorter than the 7-pixel window
    same = diff_similarity(np.ones((9, 9)), np.ones((9, 9)))
    assert same["rank_corr"] == 1.0 and same["ssim"] == 1.0 and same["max_abs_diff"] == 0.0


def test_a_model_against_itself_is_identical_and_exits_0(probes, tmp_path):
    run = occlude(
        "diff",
        probes["a"],
        probes["a"],
        probes["images"],
        "-o",
        tmp_path / "self",
        *FLAGS,
        "--min-rank-corr",
        "1",
        "--min-top-iou",
        "1",
        "--max-prediction-flips",
        "0",
    )
    assert run.returncode == 0, run.stderr
    document = json.loads((tmp_path / "self" / "diff.json").read_text())
    for row in document["images"]:
        assert row["rank_corr"] == 1.0 and row["top_iou"] == 1.0 and row["ssim"] == 1.0 and row["pearson"] == 1.0
        assert row["max_abs_diff"] == 0.0 and row["gates"] == "pass"
        assert not np.any(np.load(tmp_path / "self" / row["diff_npy"]))
    assert document["gates"]["passed"] and document["summary"]["ok"] == 3


def test_gates_follow_the_numbers(probes, tmp_path):
    result = diff_folder(probes["a"], probes["b"], probes["images"], tmp_path / "lib", patch=4, stride=2, score="logit")
    lowest = min(r["rank_corr"] for r in result.rows)
    highest = max(r["rank_corr"] for r in result.rows)
    between = (lowest + highest) / 2
    run = occlude(
        "diff",
        probes["a"],
        probes["b"],
        probes["images"],
        "-o",
        tmp_path / "g",
        *FLAGS,
        "--min-rank-corr",
        f"{between:.6f}",
    )
    assert run.returncode == 4, run.stderr
    failing = [r for r in result.rows if r["rank_corr"] < between]
    fail_lines = [line for line in run.stderr.splitlines() if line.startswith("fail:")]
    assert len(fail_lines) == len(failing) >= 1
    assert all("rank correlation" in line and "below --min-rank-corr" in line for line in fail_lines)
    document = json.loads((tmp_path / "g" / "diff.json").read_text())
    for row in document["images"]:
        assert (row["gates"] == "fail") == (row["rank_corr"] < between)
        if row["gates"] == "fail":
            assert row["failed_gates"] == [
                {"gate": "min_rank_corr", "value": row["rank_corr"], "threshold": float(f"{between:.6f}")}
            ]
    assert "Traceback" not in run.stderr
    passing = occlude(
        "diff",
        probes["a"],
        probes["b"],
        probes["images"],
        "-o",
        tmp_path / "p",
        *FLAGS,
        "--min-rank-corr",
        f"{lowest - 1e-6:.8f}",
    )
    assert passing.returncode == 0, passing.stderr
    iou = occlude(
        "diff", probes["a"], probes["b"], probes["images"], "-o", tmp_path / "i", *FLAGS, "--min-top-iou", "1"
    )
    assert iou.returncode == (4 if any(r["top_iou"] < 1 for r in result.rows) else 0)


def test_prediction_flips_gate(probes, tmp_path):
    # the flip model's class 0 is A's box mean (the same map) but its top-1 is always class 1
    result = diff_folder(
        probes["a"], probes["flip"], probes["images"], tmp_path / "f", patch=4, stride=2, score="logit"
    )
    assert [r["top1_agrees"] for r in result.rows] == [False] * 3
    assert all(r["b_index"] == 1 and r["target_index"] == 0 for r in result.rows)
    assert all(r["max_abs_diff"] < 1e-5 for r in result.rows)  # B explains A's class: the same map
    assert result.document["gates"]["prediction_flips"] == 3
    strict = occlude(
        "diff",
        probes["a"],
        probes["flip"],
        probes["images"],
        "-o",
        tmp_path / "s",
        *FLAGS,
        "--max-prediction-flips",
        "2",
    )
    assert strict.returncode == 4 and "3 image(s) changed their top-1 prediction, more than 2" in strict.stderr
    lenient = occlude(
        "diff",
        probes["a"],
        probes["flip"],
        probes["images"],
        "-o",
        tmp_path / "l",
        *FLAGS,
        "--max-prediction-flips",
        "3",
    )
    assert lenient.returncode == 0, lenient.stderr


def test_golden_maps_it_wrote_itself(probes, tmp_path):
    golden = tmp_path / "golden"
    run = occlude("run", probes["a"], probes["images"], "-o", golden, *FLAGS)
    assert run.returncode == 0, run.stderr
    result = diff_golden(
        golden,
        probes["a"],
        probes["images"],
        tmp_path / "d",
        patch=4,
        stride=2,
        score="logit",
        min_rank_corr=1.0,
        min_top_iou=1.0,
        max_prediction_flips=0,
    )
    assert not result.failed and not result.gates_failed
    for row in result.rows:
        assert row["rank_corr"] == 1.0 and row["max_abs_diff"] == 0.0 and row["top1_agrees"] is True
    cli = occlude(
        "diff", "--golden", golden, probes["a"], probes["images"], "-o", tmp_path / "c", *FLAGS, "--min-rank-corr", "1"
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "c" / "diff.json").read_text())["mode"] == "golden"
    # today's model B against A's golden maps: the same numbers as A against B
    other = diff_golden(golden, probes["b"], probes["images"], tmp_path / "o", patch=4, stride=2, score="logit")
    pair = diff_folder(probes["a"], probes["b"], probes["images"], tmp_path / "ab", patch=4, stride=2, score="logit")
    for mine, theirs in zip(other.rows, pair.rows):
        assert mine["rank_corr"] == pytest.approx(theirs["rank_corr"], abs=1e-9)
        np.testing.assert_allclose(
            np.load(tmp_path / "o" / mine["diff_npy"]), np.load(tmp_path / "ab" / theirs["diff_npy"]), atol=1e-6
        )


@pytest.mark.parametrize(
    "change, word",
    [
        (["--patch", "6"], "patch"),
        (["--stride", "1"], "stride"),
        (["--baseline", "black"], "baseline"),
        (["--score", "softmax"], "score"),
        (["--target", "2"], "target"),
    ],
)
def test_golden_made_otherwise_is_refused(probes, tmp_path, change, word):
    golden = tmp_path / "golden"
    assert occlude("run", probes["a"], probes["images"], "-o", golden, *FLAGS).returncode == 0
    flags = list(FLAGS)
    for i in range(0, len(change), 2):
        if change[i] in flags:
            flags[flags.index(change[i]) + 1] = change[i + 1]
        else:
            flags += change[i : i + 2]
    run = occlude("diff", "--golden", golden, probes["a"], probes["images"], "-o", tmp_path / "d", *flags)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], run.stderr
    assert not (tmp_path / "d" / "diff.json").exists()


def test_golden_without_a_map_for_an_image_is_refused(probes, tmp_path):
    golden = tmp_path / "golden"
    assert occlude("run", probes["a"], probes["images"] / "img0.png", "-o", golden, *FLAGS).returncode == 0
    run = occlude("diff", "--golden", golden, probes["a"], probes["images"], "-o", tmp_path / "d", *FLAGS)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no golden map for") and "img1.png" in lines[0]
    small = rectangle_model(tmp_path / "small.onnx", size=(12, 12), rect=(1, 1, 5, 5))
    other = occlude("diff", "--golden", golden, small, probes["images"] / "img0.png", "-o", tmp_path / "s", *FLAGS)
    lines = other.stderr.strip().splitlines()
    assert other.returncode == 1 and len(lines) == 1 and "golden maps are 16x16" in lines[0], other.stderr
    empty = occlude("diff", "--golden", tmp_path, probes["a"], probes["images"], *FLAGS)
    assert empty.returncode == 1 and "holds no occlude run" in empty.stderr and "Traceback" not in empty.stderr


def _edited(record: dict, how: str):
    """A golden record as a hand (or a broken tool) might leave it; the JSON text written back."""
    grid = record["map"]
    if how == "value":
        grid[3][3] = 123.0  # map_sha256 left as it was
    elif how == "ragged":
        grid[3] = grid[3][:5]
    elif how == "text":
        grid[2][2] = "abc"
    elif how == "nan":
        grid[2][2] = float("nan")  # json writes NaN, which occlude never writes
    elif how == "boolean":
        grid[2][2] = True
    elif how == "no target":
        del record["target"]
    elif how in ("target x", "target 0.5", "target true", "target null"):
        record["target"] = None if how == "target null" else {"index": {"x": "x", "0.5": 0.5, "true": True}[how[7:]]}
    elif how == "params":
        record["params"] = "garbage"
    elif how == "top_k":
        record["top_k"] = [{"index": "x", "original": 1.0}]
    if how not in ("value",) and "map_sha256" in record:
        from occlude_cli.outputs.records import map_digest

        record["map_sha256"] = map_digest(record["map"]) if how in ("no target", "params", "top_k") else None
        if record["map_sha256"] is None:
            del record["map_sha256"]  # a record from before the checksums: the map itself is checked
    return json.dumps(record)


EDITS = (
    "value",
    "ragged",
    "text",
    "nan",
    "boolean",
    "no target",
    "target x",
    "target 0.5",
    "target true",
    "target null",
    "params",
    "top_k",
    "another run",
)


def test_a_hand_edited_golden_is_one_error_line(probes, tmp_path):
    """A golden record edited by hand, from another run, or broken is refused with one error line and exit 1
    before any image is explained; the untouched golden still gives identical maps."""
    from typer.testing import CliRunner

    from occlude_cli.cli import app

    golden = tmp_path / "golden"
    assert occlude("run", probes["a"], probes["images"], "-o", golden, *FLAGS).returncode == 0
    original = (golden / "img0.json").read_text()
    for how in EDITS:
        if how == "another run":
            text = (golden / "img1.json").read_text()  # a result of another image: not what the manifest lists
        else:
            text = _edited(json.loads(original), how)
        (golden / "img0.json").write_text(text)
        out = tmp_path / "d"
        args = ["diff", "--golden", golden, probes["a"], probes["images"], "-o", out, *FLAGS]
        result = CliRunner().invoke(app, [str(a) for a in args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, (how, result.stderr)
        assert lines[0].startswith("error: ") and "img0.json" in lines[0], (how, lines[0])
        assert not out.exists(), how
    (golden / "img0.json").write_text(original)
    result = diff_golden(golden, probes["a"], probes["images"], tmp_path / "ok", patch=4, stride=2, score="logit")
    assert [r["max_abs_diff"] for r in result.rows] == [0.0, 0.0, 0.0]


def test_golden_npy_files_are_never_loaded(probes, tmp_path):
    """The golden maps come from the records: .npy files holding a pickle (an object array) or NaN change
    nothing and are never unpickled."""
    golden = tmp_path / "golden"
    assert occlude("run", probes["a"], probes["images"], "-o", golden, *FLAGS, "--npy").returncode == 0
    npys = sorted(golden.glob("*.npy"))
    assert npys
    np.save(npys[0], np.array([{"evil": "pickle"}], dtype=object), allow_pickle=True)
    np.save(npys[1], np.full((SIZE, SIZE), np.nan))
    result = diff_golden(golden, probes["a"], probes["images"], tmp_path / "d", patch=4, stride=2, score="logit")
    assert not result.failed and [r["rank_corr"] for r in result.rows] == [1.0, 1.0, 1.0]


def test_an_image_error_names_the_flag_and_the_golden_folder_is_never_the_output(probes, tmp_path):
    """A per-image error speaks the command line's words, as run's do (--score, not score); diff never writes
    into its golden folder (its pictures and report would mix with the golden run's)."""
    weights = np.zeros((3, 1, SIZE, SIZE))
    probabilities = linear_head_model(tmp_path / "p.onnx", weights, np.array([0.0, 1.0, 0.0]))  # rows sum to 1
    run = occlude("diff", probes["a"], probabilities, probes["images"], "-o", tmp_path / "d", *FLAGS)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 3 and len(errors) == 3, run.stderr
    assert all("logits are not available: use --score auto" in line for line in errors), errors
    golden = tmp_path / "golden"
    assert occlude("run", probes["a"], probes["images"], "-o", golden, *FLAGS).returncode == 0
    before = sorted(p.name for p in golden.iterdir())
    for out in (golden, golden / "inside"):
        into = occlude("diff", "--golden", golden, probes["a"], probes["images"], "-o", out, *FLAGS)
        lines = into.stderr.strip().splitlines()
        assert into.returncode == 1 and len(lines) == 1 and "--golden" in lines[0] and "--out" in lines[0], lines
    assert sorted(p.name for p in golden.iterdir()) == before


def test_constant_maps_give_null_never_nan_and_fail_the_gates(probes, tmp_path):
    """A model that ignores its input (an all-zero map): against a real map the correlations are undefined, null
    in diff.json (strict JSON: no NaN), empty in diff.csv, 'n/a' on the terminal, and fail the rank gate; against
    itself every similarity is 1 and every difference 0."""
    blind = linear_head_model(tmp_path / "blind.onnx", np.zeros((3, 1, SIZE, SIZE)), np.array([0.0, 2.0, 0.0]))
    out = tmp_path / "d"
    run = occlude("diff", probes["a"], blind, probes["images"], "-o", out, *FLAGS, "--min-rank-corr", "0")
    assert run.returncode == 4, run.stderr
    text = (out / "diff.json").read_text()
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in diff.json"))
    for row in document["images"]:
        assert row["rank_corr"] is None and row["rank_corr_abs"] is None and row["pearson"] is None
        assert row["ssim"] is not None and row["top_iou"] is not None and row["max_abs_diff"] > 0
        assert row["failed_gates"] == [{"gate": "min_rank_corr", "value": None, "threshold": 0.0}]
    assert document["summary"]["rank_corr"] == {"mean": None, "min": None, "max": None}
    assert "rank correlation n/a below --min-rank-corr 0" in run.stderr
    assert all(line.split(",")[11:14] == ["", "", ""] for line in (out / "diff.csv").read_text().splitlines()[1:])
    same = occlude("diff", blind, blind, probes["images"], "-o", tmp_path / "s", *FLAGS, "--min-rank-corr", "1")
    assert same.returncode == 0, same.stderr
    for row in json.loads((tmp_path / "s" / "diff.json").read_text())["images"]:
        assert [row[k] for k in ("rank_corr", "rank_corr_abs", "pearson", "top_iou", "ssim")] == [1.0] * 5
        assert row["max_abs_diff"] == 0.0 and row["mean_abs_diff"] == 0.0


def test_bad_arguments_are_one_error_line(probes, tmp_path):
    for args in (
        ["diff", probes["a"], probes["images"]],  # no second model
        ["diff", probes["a"], probes["b"], probes["images"], "--min-rank-corr", "2"],
        ["diff", probes["a"], probes["b"], probes["images"], "--min-top-iou", "-0.1"],
        ["diff", probes["a"], probes["b"], probes["images"], "--max-prediction-flips", "-1"],
        ["diff", probes["a"], probes["b"], probes["images"], "--color-limit", "loud"],
        ["diff", probes["a"], probes["b"], probes["images"], "--color-limit", "-3"],
        ["run", probes["a"], probes["images"], "--color-limit", "0"],
        ["run", probes["a"], probes["images"], "--color-limit", "1e-320"],  # below float32: a blank map
        ["run", probes["a"], probes["images"], "--color-limit", "1e39"],  # above float32
    ):
        run = occlude(*args, cwd=tmp_path)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), (args, run.stderr)
    small = rectangle_model(tmp_path / "small.onnx", size=(12, 12), rect=(1, 1, 5, 5))
    with pytest.raises(OccludeError, match="different sizes"):
        diff_folder(probes["a"], small, probes["images"], tmp_path / "x", patch=4)
    with pytest.raises(OccludeError) as caught:
        DiffSettings(min_rank_corr=1.5).checked()
    assert caught.value.params == ("min_rank_corr",)


def test_shared_colour_limit_draws_every_picture_on_one_scale(probes, tmp_path):
    out = tmp_path / "shared"
    result = diff_folder(
        probes["a"],
        probes["b"],
        probes["images"],
        out,
        patch=4,
        stride=2,
        score="logit",
        style=RenderStyle(color_limit="shared"),
    )
    maps = [
        (np.load(out / r["a_npy"]).astype(np.float64), np.load(out / r["b_npy"]).astype(np.float64))
        for r in result.rows
    ]
    limit = max(float(np.abs(m).max()) for pair in maps for m in pair)
    assert all(r["color_limit"] == pytest.approx(limit) for r in result.rows)
    own = diff_folder(probes["a"], probes["b"], probes["images"], tmp_path / "own", patch=4, stride=2, score="logit")
    darkest = result.rows[2]  # the dimmest image: its maps are the smallest
    shared_png = (out / darkest["diff_png"]).read_bytes()
    assert shared_png != (tmp_path / "own" / own.rows[2]["diff_png"]).read_bytes()
    # the picture is the one drawn with that fixed limit: compare pixels of the map panels
    grey = prepare_image(Path(darkest["path"]), resolve_preprocessing(OnnxClassifier(probes["a"]))).pixels
    expected = diff_png(
        grey.mean(axis=-1) / 255.0,
        *maps[2],
        title="t",
        subtitle="s",
        names=("a.onnx", "b.onnx"),
        style=RenderStyle(color_limit=limit),
    )
    import io

    got = np.asarray(Image.open(io.BytesIO(shared_png)).convert("RGB"))
    want = np.asarray(Image.open(io.BytesIO(expected)).convert("RGB"))
    assert got.shape == want.shape
    assert np.array_equal(got[52:], want[52:])  # below the title: captions, panels, colour bars


def test_hostile_names_are_escaped_everywhere(probes, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    name = "evil\x1b[31m\nname\u202e.png"
    Image.open(probes["images"] / "img0.png").save(folder / name)
    for other in ("-rf; rm [bold]x[red].png", "<script>alert(1)<\u2044script> $x^$.png"):
        Image.open(probes["images"] / "img1.png").save(folder / other)
    out = tmp_path / "h"
    reports = ["--report", "--junit", out / "diff.xml", "--summary-md", out / "summary.md"]
    run = occlude("diff", probes["a"], probes["b"], folder, "-o", out, *FLAGS, "--min-rank-corr", "1", *reports)
    assert run.returncode in (0, 4), run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    for text in [run.stdout, run.stderr] + [
        (out / n).read_text() for n in ("diff.csv", "diff.json", "diff.xml", "summary.md", "index.html")
    ]:
        assert "\x1b" not in text and "\u202e" not in text
    assert "<script>alert" not in (out / "index.html").read_text() + (out / "diff.xml").read_text()
    assert "[bold]x[red].png" in run.stdout + run.stderr  # brackets are text, never terminal markup
    document = json.loads((tmp_path / "h" / "diff.json").read_text())
    from occlude_cli.text import recover

    assert any(recover(row, "path").endswith(name) for row in document["images"])


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_run_shared_colour_limit_makes_overlays_comparable(probes, tmp_path):
    shared, own = tmp_path / "shared", tmp_path / "own"
    base = ["run", probes["a"], probes["images"], *FLAGS, "--panels"]
    assert occlude(*base, "-o", shared, "--color-limit", "shared").returncode == 0
    assert occlude(*base, "-o", own).returncode == 0
    records = {p.stem: json.loads(p.read_text()) for p in sorted(shared.glob("img*.json"))}
    limit = max(abs(v) for r in records.values() for row in r["map"] for v in row if v is not None)
    assert all(r["color_limit"] == limit for r in records.values())
    fixed = tmp_path / "fixed"
    assert occlude(*base, "-o", fixed, "--color-limit", repr(limit)).returncode == 0
    largest = max(records, key=lambda s: max(abs(v) for row in records[s]["map"] for v in row))
    for stem in records:
        for kind in ("overlay", "heatmap", "panels"):
            picture = f"{stem}.{kind}.png"
            assert np.array_equal(_pixels(shared / picture), _pixels(fixed / picture)), picture
            if stem == largest:  # its own limit is the shared one
                assert np.array_equal(_pixels(shared / picture), _pixels(own / picture))
            else:
                assert not np.array_equal(_pixels(shared / picture), _pixels(own / picture))
    again = occlude(*base, "-o", shared, "--color-limit", "shared", "--resume")  # the records vouch for the PNGs
    assert again.returncode == 0 and again.stdout.count("skipped") == 3, again.stdout
    refused = occlude(*base, "-o", tmp_path / "s", "--color-limit", "shared", "--shard", "1/2")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "--color-limit shared" in lines[0], refused.stderr


def test_check_shared_colour_limit(probes, tmp_path):
    base = ["check", probes["a"], probes["images"], *FLAGS, "--box", "0,0,8,8"]
    assert occlude(*base, "-o", tmp_path / "shared", "--color-limit", "shared").returncode == 0
    limit = json.loads((tmp_path / "shared" / "check.json").read_text())["settings"]["color_limit"]
    assert limit > 0
    assert occlude(*base, "-o", tmp_path / "fixed", "--color-limit", repr(limit)).returncode == 0
    assert occlude(*base, "-o", tmp_path / "own").returncode == 0
    same_as_own = 0
    for picture in sorted((tmp_path / "shared").glob("*.check.png")):
        assert np.array_equal(_pixels(picture), _pixels(tmp_path / "fixed" / picture.name))
        same_as_own += np.array_equal(_pixels(picture), _pixels(tmp_path / "own" / picture.name))
    assert same_as_own == 1  # only the input whose map holds the largest value keeps its own limit


def test_junit_summary_and_byte_identical_outputs(probes, tmp_path):
    import junitparser
    import xmlschema

    schema = xmlschema.XMLSchema(str(Path(__file__).parent / "data" / "junit-10.xsd"))
    result = diff_folder(probes["a"], probes["b"], probes["images"], tmp_path / "lib", patch=4, stride=2, score="logit")
    between = sorted(r["rank_corr"] for r in result.rows)[1]  # the lowest fails, the others pass
    outs = []
    for name in ("one", "two"):
        out = tmp_path / name
        run = occlude(
            "diff",
            probes["a"],
            probes["b"],
            probes["images"],
            "-o",
            out,
            *FLAGS,
            "--min-rank-corr",
            repr(between),
            "--max-prediction-flips",
            "0",
            "--junit",
            out / "diff.xml",
            "--summary-md",
            out / "summary.md",
        )
        assert run.returncode == 4, run.stderr
        outs.append(out)
    schema.validate(str(outs[0] / "diff.xml"))
    suite = next(iter(junitparser.JUnitXml.fromfile(str(outs[0] / "diff.xml"))))
    cases = list(suite)
    assert len(cases) == 4  # three images and the flips gate
    failures = [c for c in cases if c.result and isinstance(c.result[0], junitparser.Failure)]
    assert len(failures) == 1 and "min_rank_corr" in failures[0].result[0].message
    assert "### occlude diff: failed" in (outs[0] / "summary.md").read_text()
    for name in ("diff.csv", "img0.diff.png", "img1.diff.npy"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    # diff.json too, but for the command line it records (its --junit and --summary-md paths differ here)
    documents = [json.loads((out / "diff.json").read_text()) for out in outs]
    assert documents[0].pop("command") != documents[1].pop("command") and documents[0] == documents[1]


def test_hostile_labels_are_escaped_and_spreadsheet_safe(probes, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text('=HYPERLINK("http://x")\x1b[2J\n<script>alert(1)</script>\nthird\u202e\n', encoding="utf-8")
    out = tmp_path / "l"
    run = occlude(
        "diff",
        probes["a"],
        probes["b"],
        probes["images"],
        "-o",
        out,
        *FLAGS,
        "--labels",
        labels,
        "--junit",
        out / "diff.xml",
        "--summary-md",
        out / "summary.md",
        "--report",
    )
    assert run.returncode == 0, run.stderr
    texts = [run.stdout, run.stderr] + [
        (out / n).read_text() for n in ("diff.csv", "diff.json", "diff.xml", "summary.md", "index.html")
    ]
    for text in texts:
        assert "\x1b" not in text and "\u202e" not in text
    assert "<script>alert" not in (out / "index.html").read_text()
    rows = (out / "diff.csv").read_text().splitlines()[1:]
    assert all("'=HYPERLINK" in row for row in rows)  # a formula is never a formula in a spreadsheet
    from occlude_cli.text import recover

    row = json.loads((out / "diff.json").read_text())["images"][0]
    assert recover(row, "a_label") == '=HYPERLINK("http://x")\x1b[2J'
