"""Issue 31, defects 4 to 13: what a radiology-AI auditor hit, each as a test that failed before the fix, on the
repository's real files (pydicom's CT slice, nibabel's volume, the sample lesion models) and data made from
them in the session (a DICOM series of the lesion volume, a study folder, a 4-D and a sheared NIfTI)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")
pytest.importorskip("highdicom")

from typer.testing import CliRunner  # noqa: E402

from medical_data import (  # noqa: E402
    CT2D,
    CT_LESION,
    LESION,
    LESION3D,
    LESION_MASK,
    SERIES,
    lesion_series,
    model_with_metadata,
    sheared_nifti,
)
from occlude_cli.cli.app import app  # noqa: E402
from occlude_cli.loaders.medical import resample  # noqa: E402
from occlude_cli.loaders.nifti import read_nifti  # noqa: E402


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def lesion_on_grid() -> np.ndarray:
    """The lesion mask on the 32^3 model grid (nearest), where maps must peak."""
    volume = read_nifti(LESION_MASK)
    return resample(volume, (32, 32, 32), order=0).data > 0


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return lesion_series(tmp_path_factory.mktemp("series") / "lesion_series")


# ------------------------------------------------------------- 4: check, bias, layers on medical inputs


def test_4_check_a_nifti_volume_finds_its_mask_by_convention_and_passes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(LESION, data / "scan.nii.gz")
    shutil.copy(LESION_MASK, data / "scan.mask.nii.gz")  # the convention: scan.nii.gz -> scan.mask.nii.gz
    out = tmp_path / "out"
    result = invoke("check", LESION3D, data, "--require-peak", "--min-energy", "0.1", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    rows = json.loads((out / "check.json").read_text())["images"]
    assert [Path(r["path"]).name for r in rows] == ["scan.nii.gz"]  # the mask is not an input
    row = rows[0]
    assert row["status"] == "pass" and row["mask"].endswith("scan.mask.nii.gz") and row["pointing_game"]
    assert lesion_on_grid()[row["peak_z"], row["peak_y"], row["peak_x"]]
    assert row["region_fraction"] == pytest.approx(lesion_on_grid().mean(), abs=0.002)
    picture = np.asarray(Image.open(out / "scan.check.png").convert("RGB"))
    assert np.all(picture == (255, 215, 0), axis=-1).sum() > 50  # the region outlined in yellow


def test_4_check_a_dicom_slice_with_a_box_and_a_png_mask(tmp_path):
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[60:81, 30:51] = 255  # the disc of ct_lesion.dcm: row 70, column 40, radius 8
    Image.fromarray(mask, "L").save(tmp_path / "disc.png")
    for region in (("--box", "30,60,51,81"), ("--mask", tmp_path / "disc.png")):
        out = tmp_path / region[0].strip("-")
        result = invoke("check", CT2D, CT_LESION, *region, "--require-peak", "--out", out, "-q")
        assert result.exit_code == 0, result.stderr
        row = json.loads((out / "check.json").read_text())["images"][0]
        assert row["status"] == "pass" and row["pointing_game"] and row["energy_share"] > 0.5
        assert 30 <= row["peak_image_x"] <= 51 and 60 <= row["peak_image_y"] <= 81


def test_4_check_a_series_with_a_world_box_and_a_nifti_mask(series, tmp_path):
    # the lesion's centre is RAS (-16, 16, 0) mm, radius 6 mm
    out = tmp_path / "box"
    box = ("--box=-23,9,-7,-9,23,7",)
    result = invoke("check", LESION3D, series, "--series", *box, "--require-peak", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    row = json.loads((out / "check.json").read_text())["images"][0]
    assert row["status"] == "pass" and -23 <= row["peak_world_mm"][0] <= -9
    nifti = invoke("check", LESION3D, series, "--series", "--mask", LESION_MASK, "--out", tmp_path / "m", "-q")
    assert nifti.exit_code == 0, nifti.stderr
    masked = json.loads((tmp_path / "m" / "check.json").read_text())["images"][0]
    assert masked["pointing_game"] and masked["region_fraction"] == pytest.approx(lesion_on_grid().mean(), abs=0.002)
    flat = invoke("check", LESION3D, series, "--series", "--box", "1,2,3,4", "--out", tmp_path / "x", "-q")
    assert flat.exit_code == 1 and "--box of a volume is x0, y0, z0, x1, y1, z1" in flat.stderr


def test_4_bias_on_a_volume_moves_the_prediction_far_more_than_its_controls(tmp_path):
    out = tmp_path / "bias"
    result = invoke("bias", LESION3D, LESION, "--mask", LESION_MASK, "--controls", "6", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    row = json.loads((out / "bias.json").read_text())["images"][0]
    assert row["status"] == "ok" and row["flipped"] is True and row["drop"] > 0.5
    assert abs(row["control_drop"]) < 0.05 and row["control_overlaps"] == 0
    assert abs(row["region_pixels"] - int(lesion_on_grid().sum())) <= 0.1 * lesion_on_grid().sum()


def test_4_layers_on_a_volume_and_a_series(series, tmp_path):
    out = tmp_path / "layers"
    result = invoke("layers", LESION3D, LESION, series, "--series", "--layer", "relu_2", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "layers.json").read_text())
    assert document["images"] == 2 and len(document["channels"]) == 24 and document["layer"]["shape"] == [24, 8, 8, 8]
    spatial = invoke(
        "layers", LESION3D, LESION, "--layer", "relu_2", "--spatial", "--patch", "2", "--out", tmp_path / "s", "-q"
    )
    assert spatial.exit_code == 0, spatial.stderr
    grid = np.load(tmp_path / "s" / "lesion_volume.spatial.npy")
    assert grid.shape == (8, 8, 8)
    peak = np.asarray(np.unravel_index(np.argmax(grid), grid.shape)) + 0.5  # a 2-cell window's centre
    lesion_cells = np.argwhere(lesion_on_grid()).mean(axis=0) / 4  # 32^3 voxels -> 8^3 feature cells
    assert np.linalg.norm(peak - lesion_cells) < 2


# ------------------------------------------------------------------ 5: the peak of a volume in summaries


def test_5_volume_summaries_show_the_peak_with_its_slice(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", LESION3D, LESION, "--out", out, "--report")
    assert result.exit_code == 0, result.stderr
    voxel = json.loads((out / "lesion_volume.json").read_text())["peak"]["voxel"]
    with open(out / "summary.csv") as handle:
        row = next(csv.DictReader(handle))
    assert [int(row["peak_z"]), int(row["peak_y"]), int(row["peak_x"])] == voxel
    summary = json.loads((out / "summary.json").read_text())["images"][0]
    assert [summary["peak_z"], summary["peak_y"], summary["peak_x"]] == voxel
    assert f"{voxel[0]}, {voxel[1]}, {voxel[2]}" in result.stdout and "peak (z, y, x)" in result.stdout
    assert f'"pz":{voxel[0]},"py":{voxel[1]},"px":{voxel[2]}' in (out / "index.html").read_text()


# ------------------------------------------------------------------------ 6: the volume of a 4-D NIfTI


def test_6_the_volume_index_is_recorded(tmp_path):
    source = nibabel.load(str(LESION))
    data = np.asarray(source.dataobj).astype(np.int16)
    path = tmp_path / "four.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.stack([np.zeros_like(data), data], axis=-1), source.affine), str(path))
    result = invoke("run", LESION3D, path, "--volume-index", "1", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "four.json").read_text())
    assert record["input"]["volume_index"] == 1 and record["input"]["meta"]["volumes"] == 2
    plain = invoke("run", LESION3D, LESION, "--out", tmp_path / "plain", "-q")
    assert json.loads((tmp_path / "plain" / "lesion_volume.json").read_text())["input"]["volume_index"] is None
    assert plain.exit_code == 0


# -------------------------------------------------------------------------- 7: errors name the flags


def test_7_errors_name_flags_and_a_series_is_chosen_by_uid(series, tmp_path):
    source = nibabel.load(str(LESION))
    path = tmp_path / "four.nii.gz"
    data = np.asarray(source.dataobj).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(np.stack([data, data], axis=-1), source.affine), str(path))
    four = invoke("run", LESION3D, path, "--out", tmp_path / "o", "-q")
    assert four.exit_code == 3 and "pass --volume-index 0..1" in four.stderr and "volume_index" not in four.stderr
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for file in sorted(series.iterdir())[:3]:
        shutil.copy(file, mixed / file.name)
    other = lesion_series(tmp_path / "other", series_uid="1.2.826.0.1.3680043.8.498.1")
    for file in sorted(other.iterdir()):
        shutil.copy(file, mixed / f"b{file.name}")
    refused = invoke("run", LESION3D, mixed, "--series", "--out", tmp_path / "m", "-q")
    assert refused.exit_code == 3 and "pass --series-uid" in refused.stderr and "series_uid" not in refused.stderr
    picked = invoke(
        "run", LESION3D, mixed, "--series", "--series-uid", "1.2.826.0.1.3680043.8.498.1", "--out", tmp_path / "p"
    )
    assert picked.exit_code == 0, picked.stderr
    record = json.loads((tmp_path / "p" / "mixed.json").read_text())
    assert record["input"]["meta"]["series_uid"] == "1.2.826.0.1.3680043.8.498.1" and record["target"]["index"] == 1
    alone = invoke("run", LESION3D, LESION, "--series-uid", "1.2.3", "--out", tmp_path / "x", "-q")
    assert alone.exit_code == 1 and "--series-uid needs --series" in alone.stderr


def test_7_check_bias_and_layers_name_the_flags_too(tmp_path):
    source = nibabel.load(str(LESION))
    four = tmp_path / "four.nii.gz"
    data = np.asarray(source.dataobj).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(np.stack([data, data], axis=-1), source.affine), str(four))
    commands = {
        "check": ("check", LESION3D, four, "--mask", LESION_MASK),
        "bias": ("bias", LESION3D, four, "--mask", LESION_MASK),
        "layers": ("layers", LESION3D, four, "--layer", "relu_2"),
    }
    for name, command in commands.items():
        result = invoke(*command, "--out", tmp_path / name)
        assert result.exit_code == 3, (name, result.stderr)
        text = result.stdout + result.stderr
        assert "pass --volume-index 0..1" in result.stderr and "volume_index" not in text, (name, text)
    uid = invoke("check", LESION3D, SERIES, "--series", "--series-uid", "1.2.3", "--box=-23,9,-7,-9,23,7",
                 "--out", tmp_path / "uid", "-q")  # fmt: skip
    assert uid.exit_code == 3 and "--series-uid 1.2.3: no folder under" in uid.stderr


# --------------------------------------------------------------------- 8: info on a CT model


def test_8_info_on_a_ct_model_shows_its_window():
    result = invoke("info", CT2D)
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("medical"))
    assert "window L 400 W 1800" in line and "real units" in line
    document = json.loads(invoke("info", CT2D, "--json").stdout)
    assert document["medical_preprocessing"]["window"] == [400.0, 1800.0]
    assert document["medical_preprocessing"]["transform"] == "window"


# ------------------------------------------------------- 9: the model's window and the pictures' window


def test_9_window_replacing_the_trained_one_warns_and_a_display_window_changes_only_pictures(tmp_path):
    runs = {
        "plain": (),
        "display": ("--display-window", "lung"),
        "window": ("--window", "lung"),
        "same": ("--window", "1800,400"),
    }
    for name, flags in runs.items():
        result = invoke("run", CT2D, CT_LESION, *flags, "--out", tmp_path / name, "-q", "--no-timing")
        assert result.exit_code == 0, result.stderr
    record = {name: json.loads((tmp_path / name / "ct_lesion.json").read_text()) for name in runs}
    replaced = [w for w in record["window"]["warnings"] if "replaces the model's trained one" in w]
    assert replaced and "window L -600 W 1500" in replaced[0] and "window L 400 W 1800" in replaced[0]
    for name in ("plain", "display", "same"):
        assert not any("replaces" in w for w in record[name]["warnings"])
    assert record["display"]["input"]["display_window"] == [-600.0, 1500.0]
    assert record["display"]["input"]["window_applied"] == [400.0, 1800.0]
    plain_map = np.load(tmp_path / "plain" / "ct_lesion.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "display" / "ct_lesion.npy"), plain_map)
    assert not np.array_equal(np.load(tmp_path / "window" / "ct_lesion.npy"), plain_map)
    pictures = {n: np.asarray(Image.open(tmp_path / n / "ct_lesion.overlay.png")) for n in ("plain", "display")}
    assert pictures["plain"].shape == pictures["display"].shape
    assert np.mean(pictures["plain"] != pictures["display"]) > 0.2  # the picture shows another window


def test_9_a_replaced_window_is_one_notice_per_run_naming_display_window(tmp_path):
    for name in ("a.dcm", "b.dcm"):
        shutil.copy(CT_LESION, tmp_path / name)
    out = tmp_path / "out"
    result = invoke("run", CT2D, tmp_path / "a.dcm", tmp_path / "b.dcm", "--window", "lung", "--out", out)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "replaces" in line or "(trained window replaced)" in line]
    assert len(lines) == 2, result.stderr  # the first in full, then one line counting the other image
    assert lines[0].startswith("warning: ") and "give --display-window instead" in lines[0]
    assert "the same warning (trained window replaced) for 1 more image" in lines[1]
    for name in ("a", "b"):  # each file keeps its own warning, in the library's words
        warnings = json.loads((out / f"{name}.json").read_text())["warnings"]
        assert any("give display_window instead" in w for w in warnings)


def test_9_a_modality_other_than_the_models_is_a_warning(tmp_path):
    model = model_with_metadata(CT2D, tmp_path / "mr2d.onnx", modality="MR")
    result = invoke("run", model, CT_LESION, "--out", tmp_path / "o", "-q")
    assert result.exit_code == 0, result.stderr
    warnings = json.loads((tmp_path / "o" / "ct_lesion.json").read_text())["warnings"]
    assert any("modality CT differs from the one the model declares (MR)" in w for w in warnings)
    same = model_with_metadata(CT2D, tmp_path / "ct.onnx", modality="CT")
    invoke("run", same, CT_LESION, "--out", tmp_path / "s", "-q")
    assert not any("modality" in w for w in json.loads((tmp_path / "s" / "ct_lesion.json").read_text())["warnings"])


# ---------------------------------------------------------------------------- 10: a sheared affine


def test_10_a_sheared_affine_is_written_back_as_the_sform_alone(tmp_path):
    path = sheared_nifti(tmp_path / "sheared.nii.gz")
    result = invoke("run", LESION3D, path, "--out", tmp_path / "o", "-q")
    assert result.exit_code == 0, result.stderr
    written = nibabel.load(str(tmp_path / "o" / "sheared.map.nii.gz"))
    source = nibabel.load(str(path))
    assert int(written.header["qform_code"]) == 0 and int(written.header["sform_code"]) == 1
    np.testing.assert_allclose(written.header.get_sform(), source.affine, atol=1e-5)
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)  # what nibabel and ITK use
    plain = invoke("run", LESION3D, LESION, "--out", tmp_path / "p", "-q")
    assert plain.exit_code == 0
    straight = nibabel.load(str(tmp_path / "p" / "lesion_volume.map.nii.gz"))
    assert int(straight.header["qform_code"]) > 0 and int(straight.header["sform_code"]) > 0
    np.testing.assert_allclose(straight.header.get_qform(), straight.header.get_sform(), atol=1e-5)


# ------------------------------------------------------------------------------- 11: study folders


def test_11_a_study_folder_gives_one_volume_per_series(series, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(series, study / "t1")
    lesion_series(study / "more" / "t2", series_uid="1.2.826.0.1.3680043.8.498.2")
    for flags in (("-r",), ()):  # a folder that holds no slices itself is a study either way
        out = tmp_path / f"out{len(flags)}"
        result = invoke("run", LESION3D, study, "--series", *flags, "--out", out, "-q")
        assert result.exit_code == 0, result.stderr
        assert (out / "study" / "t1.json").is_file() and (out / "study" / "more" / "t2.json").is_file()
    chosen = invoke(
        "run", LESION3D, study, "--series", "--series-uid", "1.2.826.0.1.3680043.8.498.2", "--out", tmp_path / "c"
    )
    assert chosen.exit_code == 0, chosen.stderr
    rows = json.loads((tmp_path / "c" / "summary.json").read_text())["images"]
    assert [r["path"].rsplit("/", 2)[-2:] for r in rows] == [["more", "t2"]]


# ----------------------------------------------------------------------------- 12: --region


def test_12_region_in_world_mm_on_a_volume_and_in_pixels_on_a_slice(tmp_path):
    result = invoke("run", LESION3D, LESION, "--region=-24,8,-8,-8,24,8", "--patch", "4", "--out", tmp_path / "v")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "v" / "lesion_volume.json").read_text())
    z0, y0, x0, z1, y1, x1 = record["params"]["region"]
    values = np.load(tmp_path / "v" / "lesion_volume.npy")
    inside = np.zeros(values.shape, dtype=bool)
    inside[z0:z1, y0:y1, x0:x1] = True
    assert np.isfinite(values[inside]).all() and np.isnan(values[~inside]).all()
    assert np.linalg.norm(np.subtract(record["peak"]["world_mm"], (-16, 16, 0))) < 8  # on the lesion
    slice_ = invoke("run", CT2D, CT_LESION, "--region", "20,50,60,90", "--out", tmp_path / "s", "-q")
    assert slice_.exit_code == 0, slice_.stderr
    assert json.loads((tmp_path / "s" / "ct_lesion.json").read_text())["params"]["region"] == [25, 10, 45, 30]
    wrong = invoke("run", LESION3D, LESION, "--region", "1,2,3,4", "--out", tmp_path / "w", "-q")
    assert wrong.exit_code == 1 and "--region of a volume is x0, y0, z0, x1, y1, z1" in wrong.stderr
    outside = invoke("run", LESION3D, LESION, "--region=500,500,500,600,600,600", "--out", tmp_path / "x", "-q")
    assert outside.exit_code == 3 and "holds no voxel centre of the model grid" in outside.stderr


# ------------------------------------------------------------------------------ 13: patient data


def test_13_deidentify_leaves_no_path_uid_or_name_in_any_output(series, tmp_path):
    named = tmp_path / "Doe_Jane_MRN123456"
    shutil.copytree(series, named / "series_Doe")
    shutil.copy(LESION, named / "Doe_Jane_scan.nii.gz")
    shutil.copy(LESION_MASK, named / "Doe_Jane_scan.mask.nii.gz")
    uid = str(pydicom.dcmread(sorted((named / "series_Doe").iterdir())[0]).SeriesInstanceUID)
    outs = [tmp_path / "out1", tmp_path / "out2"]
    for out in outs:
        result = invoke(
            "run", LESION3D, named / "series_Doe", named / "Doe_Jane_scan.nii.gz", "--series", "--deidentify",
            "--report", "--dicom-out", "--out", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert "Doe" not in result.stdout + result.stderr
    checked = invoke("check", LESION3D, named / "Doe_Jane_scan.nii.gz", "--deidentify", "--out", tmp_path / "c", "-q")
    assert checked.exit_code == 0, checked.stderr
    scan = named / "Doe_Jane_scan.nii.gz"
    printed = invoke("check", LESION3D, scan, "--deidentify", "--json", "--out", tmp_path / "j")
    assert printed.exit_code == 0 and "Doe" not in printed.stdout + printed.stderr
    assert json.loads(printed.stdout) == json.loads((tmp_path / "j" / "check.json").read_text())  # stdout is the file
    for folder in outs + [tmp_path / "c"]:
        for path in folder.rglob("*"):
            assert "Doe" not in path.name
            if path.is_file():
                data = path.read_bytes()
                data = __import__("gzip").decompress(data) if data[:2] == b"\x1f\x8b" else data
                for secret in (b"Doe", b"MRN123456", uid.encode(), b"Sample^Anatomical", b"occlude-sample"):
                    assert secret not in data, (path, secret)
    names = sorted(p.name for p in outs[0].glob("*.json"))
    assert names == sorted(p.name for p in outs[1].glob("*.json"))  # stable pseudonyms
    assert any(n.startswith("case-") for n in names)
    record = json.loads(next(outs[0].glob("case-*.json")).read_text())
    assert record["image"]["path"].startswith("case-") and record["versions"]["pydicom"] == pydicom.__version__
    command = json.loads((outs[0] / "summary.json").read_text())["command"]
    assert "<path>" in command and "--deidentify" in command and "command" not in record  # a run's documents
    uids = [json.loads(p.read_text())["input"]["meta"].get("series_uid") for p in outs[0].glob("case-*.json")]
    assert any(u and u.startswith("2.25.") for u in uids)


def _patient_folder(base: Path, who: str, series: Path) -> Path:
    """Real DICOM files, a DICOM series, a NIfTI volume and a mask, every name holding the patient's."""
    folder = base / who
    folder.mkdir(parents=True)
    shutil.copy(CT_LESION, folder / f"{who}_ct.dcm")
    shutil.copy(CT_LESION.parent / "CT_small.dcm", folder / f"{who}_ct2.dcm")
    shutil.copytree(series, base / f"series_{who}")
    shutil.copy(LESION, base / f"{who}_scan.nii.gz")
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[40:80, 30:70] = 255
    Image.fromarray(mask, "L").save(base / f"{who}_mask.png")
    return folder


@pytest.mark.parametrize("command", ["bias", "layers", "layers-series", "layers-spatial", "check", "run"])
def test_13_deidentify_in_bias_and_layers_as_in_run(command, series, tmp_path, monkeypatch):
    """bias and layers --deidentify as run and check: the same scans under two patients' names give
    byte-identical outputs and terminal text (pseudonyms from the content), and no name, MRN or DICOM UID reaches
    a file or the terminal (also where a file fails, and for an argument that names nothing)."""
    seen = []
    for who in ("Doe_Jane_MRN123456", "Roe_Rick_MRN654321"):
        base = tmp_path / who
        folder = _patient_folder(base, who, series)
        (folder / f"{who}_broken.dcm").write_bytes(b"not a dicom file")
        os.mkfifo(folder / f"{who}_pipe.dcm")  # skipped by discovery with a note, which must not name it
        monkeypatch.chdir(base)
        args = {
            "bias": [
                "bias",
                CT2D,
                who,
                f"missing_{who}.dcm",
                "--mask",
                f"{who}_mask.png",
                "--controls",
                "2",
                "--bootstrap",
                "20",
                "--junit",
                "out/junit.xml",
            ],
            "layers": ["layers", CT2D, who, "--layer", "relu", "--show", "2"],
            "layers-series": [
                "layers",
                LESION3D,
                f"series_{who}",
                f"{who}_scan.nii.gz",
                "--series",
                "--layer",
                "relu_2",
            ],
            "layers-spatial": ["layers", CT2D, who, "--layer", "relu", "--spatial", "--patch", "8"],
            "check": ["check", CT2D, who, f"missing_{who}.dcm", "--mask", f"{who}_mask.png", "--patch", "16"],
            "run": ["run", CT2D, who, f"missing_{who}.dcm", "--patch", "16", "--no-timing"],
        }[command]
        result = CliRunner().invoke(
            app, [str(a) for a in [*args, "--deidentify", "--out", "out"]], env={"COLUMNS": "200", "CI": "1"}
        )
        terminal = result.stdout + result.stderr
        assert "Traceback" not in terminal and result.exit_code in (0, 3), terminal
        assert "case-" in terminal
        files = {
            p.relative_to(base / "out").as_posix(): p.read_bytes()
            for p in sorted((base / "out").rglob("*"))
            if p.is_file()
        }
        assert files and not any("case-" not in n and n.endswith(".dcm") for n in files)
        uids = {
            str(getattr(pydicom.dcmread(f), k))
            for f in folder.glob("*_ct*.dcm")
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        }
        uids.add(str(pydicom.dcmread(sorted((base / f"series_{who}").iterdir())[0]).SeriesInstanceUID))
        for text, where in [(terminal.encode(), "terminal")] + [(data, name) for name, data in files.items()]:
            for secret in (who.encode(), b"MRN", b"Doe", b"Roe", b"CompressedSamples", *map(str.encode, uids)):
                assert secret not in text, (command, where, secret)
        for name in files:
            assert "Doe" not in name and "Roe" not in name
        seen.append((re.sub(r"\d+\.\d+", "N", terminal), files))  # timings differ, names must not
    assert seen[0][0] == seen[1][0]
    assert sorted(seen[0][1]) == sorted(seen[1][1])
    pictures = [name for name in seen[0][1] if name.endswith(".png")]
    assert pictures
    for name in pictures:
        assert seen[0][1][name] == seen[1][1][name], (command, name)  # a caption naming the file would differ


def test_13_every_json_records_the_versions_and_each_runs_documents_the_command(tmp_path):
    import onnxruntime

    result = invoke("run", CT2D, CT_LESION, "--out", tmp_path / "o", "-q")
    assert result.exit_code == 0
    invoke("check", CT2D, CT_LESION, "--box", "30,60,51,81", "--out", tmp_path / "o", "-q")
    documents = list((tmp_path / "o").glob("*.json"))
    assert {p.name for p in documents} >= {"ct_lesion.json", "summary.json", "manifest.json", "check.json"}
    for path in documents:
        document = json.loads(path.read_text())
        assert document["versions"]["onnxruntime"] == onnxruntime.__version__, path
        assert document["versions"]["nibabel"] == nibabel.__version__ and document["versions"]["occlude"]
        if path.name == "ct_lesion.json":  # a per-input document: the same whichever command made it
            assert "command" not in document
        else:
            assert document["command"].startswith("occlude ") and str(CT_LESION) in document["command"], path
            assert document["command"].endswith("--out '<out>' -q"), document["command"]
