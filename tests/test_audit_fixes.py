"""Defects of the outside audit of main: each test runs the real CLI on the sample model and real files, and
failed before its fix."""

import json
import shutil

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS
from onnx_models import rectangle_model

runner = CliRunner()
MODEL = SAMPLE_MODELS / "digits_cnn.onnx"
THREE = SAMPLE_IMAGES / "digit_3.png"
SEVEN = SAMPLE_IMAGES / "digit_7.png"


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_lines(result):
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_an_input_named_like_a_run_level_file_in_the_output_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(THREE, folder / "aggregate.png")
    shutil.copy(SEVEN, folder / "seven.png")
    before = (folder / "aggregate.png").read_bytes()
    result = occlude("run", MODEL, folder, "-o", folder, "--aggregate", "-q")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "aggregate.png" in error_lines(result)[0]
    assert (folder / "aggregate.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["aggregate.png", "seven.png"]  # no image was run


def test_a_users_own_run_level_files_are_refused_and_kept(tmp_path):
    for name in ("index.html", "summary.csv", "summary.json", "manifest.json", "aggregate.npy"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(b"mine\n")
        result = occlude("run", MODEL, THREE, "-o", folder, "--report", "--aggregate", "-q")
        assert result.exit_code == 1, name
        assert len(error_lines(result)) == 1 and name in error_lines(result)[0]
        assert (folder / name).read_bytes() == b"mine\n"
        assert not (folder / "digit_3.json").exists()


def test_occludes_own_run_level_files_are_replaced_on_a_rerun(tmp_path):
    out = tmp_path / "out"
    assert occlude("run", MODEL, THREE, "-o", out, "--report", "--aggregate", "-q").exit_code == 0
    result = occlude("run", MODEL, THREE, SEVEN, "-o", out, "--report", "--aggregate", "-q")
    assert result.exit_code == 0, result.output
    assert (out / "digit_7.json").is_file() and "digit_7" in (out / "summary.csv").read_text()


def test_summary_of_a_folder_without_occlude_results_writes_nothing(tmp_path):
    folder = tmp_path / "u"
    folder.mkdir()
    (folder / "summary.csv").write_text("my,data\n")
    result = occlude("summary", folder)
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "holds no occlude results" in error_lines(result)[0]
    assert (folder / "summary.csv").read_text() == "my,data\n"
    assert sorted(p.name for p in folder.iterdir()) == ["summary.csv"]


def test_bias_controls_beyond_the_memory_budget_are_refused_before_any_image(tmp_path):
    result = occlude("bias", MODEL, THREE, "--box", "2,2,10,10", "--controls", 100_000_000, "-o", tmp_path / "b")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "--controls 100000000" in error_lines(result)[0]
    assert "--max-memory" in error_lines(result)[0]


def test_stability_trials_beyond_the_memory_budget_are_refused(tmp_path):
    result = occlude("stability", MODEL, THREE, "--trials", 100_000_000, "-o", tmp_path / "s")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "--trials 100000000" in error_lines(result)[0]
    assert not list(tmp_path.rglob("*.stability.json"))


def test_a_target_label_that_occurs_twice_is_refused_with_both_indices(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["crane"] + [f"c{i}" for i in range(1, 9)] + ["Crane"]) + "\n")
    result = occlude("run", MODEL, THREE, "--labels", labels, "--target", "crane", "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert error_lines(result) == ["error: ambiguous label 'crane': classes 0 and 9; use the index"]
    assert not (tmp_path / "o" / "digit_3.json").exists()


@pytest.mark.parametrize("value", ["-5", "256", "1e30", "0,0,300"])
def test_constant_baselines_outside_0_to_255_are_refused(tmp_path, value):
    result = occlude("run", MODEL, THREE, f"--baseline={value}", "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "0..255" in error_lines(result)[0]
    assert not (tmp_path / "o" / "digit_3.json").exists()


def test_constant_baselines_at_the_ends_of_the_range_run(tmp_path):
    assert occlude("run", MODEL, THREE, "--baseline=255", "-o", tmp_path / "o", "-q").exit_code == 0
    assert occlude("run", MODEL, THREE, "--baseline=0", "-o", tmp_path / "o", "-q").exit_code == 0


@pytest.mark.parametrize("flags", [["-o", ""], ["--out", " "], ["--out="]])
def test_an_empty_output_folder_is_a_usage_error(tmp_path, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    result = occlude("run", MODEL, THREE, *flags)
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and "-o/--out is empty" in error_lines(result)[0]
    assert list(tmp_path.iterdir()) == []


def test_the_same_patch_size_twice_is_refused(tmp_path):
    result = occlude("run", MODEL, THREE, "--patch", "2,2", "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "--patch" in error_lines(result)[0] and "write 2x2" in result.output
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.json"))


def test_the_quickstart_is_729_windows_and_730_forward_passes(tmp_path):
    result = occlude("run", SAMPLE_MODELS / "efficientnet_lite0.onnx", SAMPLE_IMAGES / "cat.jpg", "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    windows = len(json.loads((tmp_path / "cat.json").read_text())["windows"])
    assert windows == 729
    for page in (ROOT / "README.md", ROOT / "docs" / "getting-started.md"):
        text = " ".join(page.read_text().split())
        assert f"({windows} windows, {windows + 1} forward passes," in text and "730 windows" not in text


def _with_metadata(tmp_path, name, preprocess=None, **meta):
    """The digits model with its metadata edited: ``preprocess`` keys set in occlude.preprocess, ``meta`` keys
    (``occlude_labels`` for occlude.labels) replaced as given (raw strings)."""
    model = onnx.load(MODEL)
    for prop in model.metadata_props:
        if prop.key == "occlude.preprocess" and preprocess is not None:
            prop.value = json.dumps({**json.loads(prop.value), **preprocess})
        if prop.key.replace(".", "_") in meta:
            prop.value = meta[prop.key.replace(".", "_")]
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("command", [["run"], ["check"], ["bias", "--box", "1,1,4,4"]])
def test_an_output_folder_that_is_a_symlink_loop_is_one_error(tmp_path, command):
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    result = occlude(command[0], MODEL, THREE, *command[1:], "-o", tmp_path / "l1")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "l1" in error_lines(result)[0]


def test_metadata_nested_too_deep_is_one_error(tmp_path):
    model = _with_metadata(tmp_path, "deep", occlude_preprocess="[" * 100_000 + "]" * 100_000)
    result = occlude("run", model, THREE, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "occlude.preprocess" in error_lines(result)[0]


def test_compare_refuses_a_npy_whose_header_exceeds_the_budget_before_reading_it(tmp_path):
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (400000, 400000)}
        )
        handle.write(b"\0" * 64)
    result = occlude("compare", MODEL, THREE, huge, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "huge.npy" in error_lines(result)[0]
    assert "--max-memory" in error_lines(result)[0]


@pytest.mark.parametrize("region", ["5,5,2,2", "7,7,7,7"])
def test_an_empty_region_is_refused_once_before_any_image(tmp_path, region):
    result = occlude("run", MODEL, THREE, SEVEN, "--region", region, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: --region {region} is empty: need x0 < x1 and y0 < y1"]


def test_an_unknown_declared_output_is_refused_once_before_any_image(tmp_path):
    model = _with_metadata(tmp_path, "softmaxx", preprocess={"output": "softmaxx"})
    result = occlude("run", model, THREE, SEVEN, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "'softmaxx'" in error_lines(result)[0]
    assert "digit_3" not in result.output


def test_errors_name_where_a_value_came_from(tmp_path):
    result = occlude("run", MODEL, THREE, "--preprocess", "torchvision", "-o", tmp_path / "o")
    assert error_lines(result) == ["error: mean of the preset torchvision needs 1 value for a 1-channel model, got 3"]
    assert "--mean needs 1 value" in occlude("run", MODEL, THREE, "--mean", "1,2,3", "-o", tmp_path / "o").output
    model = _with_metadata(tmp_path, "two", occlude_labels='["a", "b"]')
    result = occlude("run", model, THREE, "-o", tmp_path / "o")
    assert error_lines(result) == [
        "error: the model metadata (occlude.labels) has 2 labels but the model has 10 classes"
    ]
    result = occlude("report", tmp_path / "missing")
    assert error_lines(result) == [f"error: OUT_DIR is not a folder: {tmp_path / 'missing'}"]
    probe = rectangle_model(tmp_path / "soft.onnx", softmax=True)
    result = occlude("run", probe, THREE, "--score", "logit", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "use --score auto" in error_lines(result)[0]


@pytest.mark.parametrize(
    "labels", ["[null, 1, 2, 3, 4, 5, 6, 7, 8, 9]", '[["x"], "1", "2", "3", "4", "5", "6", "7", "8", "9"]']
)
def test_non_string_labels_in_the_metadata_are_refused(tmp_path, labels):
    model = _with_metadata(tmp_path, "labels", occlude_labels=labels)
    result = occlude("run", model, THREE, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "'occlude.labels'" in error_lines(result)[0]
    assert "strings" in error_lines(result)[0]


def test_a_float_image_is_refused_with_its_range_and_nan_is_named(tmp_path):
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "F").save(tmp_path / "unit.tif")
    result = occlude("run", MODEL, tmp_path / "unit.tif", "-o", tmp_path / "o")
    assert result.exit_code == 3
    assert len(error_lines(result)) == 1 and "unit.tif: a 32-bit float image (values 0..1)" in error_lines(result)[0]
    values = np.full((8, 8), 100.0, dtype=np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "nan.tif")
    result = occlude("run", MODEL, tmp_path / "nan.tif", "-o", tmp_path / "o")
    assert result.exit_code == 3
    assert "nan.tif: a 32-bit float image with 1 NaN or infinite pixel(s)" in error_lines(result)[0]
    assert not (tmp_path / "o" / "unit.json").exists() and not (tmp_path / "o" / "nan.json").exists()


def test_a_name_added_to_an_edited_record_is_not_deleted_on_the_next_write(tmp_path):
    out = tmp_path / "out"
    assert occlude("run", MODEL, THREE, "-o", out, "-q").exit_code == 0
    (out / "notes.txt").write_text("keep\n")
    shutil.copy(SEVEN, out / "other.png")
    record = json.loads((out / "digit_3.json").read_text())
    record["outputs"] += [{"name": "notes.txt"}, {"name": "other.png"}]
    (out / "digit_3.json").write_text(json.dumps(record))
    assert occlude("run", MODEL, THREE, "-o", out, "-q", "--no-npy", "--patch", 2).exit_code == 0
    assert (out / "notes.txt").read_text() == "keep\n" and (out / "other.png").is_file()
    assert not (out / "digit_3.npy").exists()  # occlude's own file the new run no longer writes: removed


def test_resume_and_the_aggregate_do_not_trust_an_edited_map(tmp_path):
    out = tmp_path / "out"
    args = ["run", MODEL, THREE, SEVEN, "-o", out, "--aggregate", "-q"]
    assert occlude(*args).exit_code == 0
    aggregate = (out / "aggregate.npy").read_bytes()
    record = json.loads((out / "digit_3.json").read_text())
    original = record["map"][0][0]
    record["map"][0][0] = 123.0  # still valid JSON, still the same outputs
    (out / "digit_3.json").write_text(json.dumps(record))
    summary = occlude("summary", out)
    assert "digit_3.json: its map differs" in summary.output  # the aggregate leaves it out, with a note
    assert occlude(*args, "--resume").exit_code == 0
    assert json.loads((out / "digit_3.json").read_text())["map"][0][0] == original  # recomputed
    assert (out / "aggregate.npy").read_bytes() == aggregate
