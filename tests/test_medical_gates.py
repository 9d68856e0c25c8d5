"""Issue 31's features on real scans: gates with masks as NIfTI, DICOM SEG (highdicom) and RT-STRUCT placed through
world coordinates (another frame of reference refused), region tables from label maps, DICOM outputs read back
with pydicom and highdicom (geometry and values against the NIfTI map), orientation letters on the pictures,
and the two commands an auditor runs end to end."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")
hd = pytest.importorskip("highdicom")

from typer.testing import CliRunner  # noqa: E402

from medical_data import (  # noqa: E402
    CT2D,
    CT_LESION,
    LESION,
    LESION3D,
    LESION_MASK,
    lesion_mask_zhw,
    lesion_series,
    make_rtstruct,
    make_seg,
    toy_atlas,
)
from occlude_cli.cli.app import app  # noqa: E402
from occlude_cli.errors import OccludeError  # noqa: E402
from occlude_cli.loaders.dicom import read_dicom_series  # noqa: E402
from occlude_cli.loaders.labels import read_label_map  # noqa: E402
from occlude_cli.loaders.medical import resample_to_grid  # noqa: E402
from occlude_cli.loaders.nifti import read_nifti  # noqa: E402

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study folder: the lesion volume as two series (one frame of reference), a SEG and an RT-STRUCT of the
    lesion drawn on the first, a SEG of another frame of reference."""
    root = tmp_path_factory.mktemp("study")
    first = lesion_series(root / "study" / "t1")
    lesion_series(root / "study" / "t1b", series_uid="1.2.826.0.1.3680043.8.498.31")
    elsewhere = lesion_series(root / "elsewhere", series_uid="1.2.826.0.1.3680043.8.498.32", frame_uid="1.2.3.4.5.6")
    make_seg(first, lesion_mask_zhw(), root / "lesion.seg.dcm", {1: "lesion"})
    make_rtstruct(first, lesion_mask_zhw(), root / "lesion.rtstruct.dcm")
    make_seg(elsewhere, lesion_mask_zhw(), root / "elsewhere.seg.dcm", {1: "lesion"})
    return root


def check_rows(out: Path) -> list:
    return json.loads((out / "check.json").read_text())["images"]


# ------------------------------------------------------------------------------------------ masks


def test_seg_and_rtstruct_read_as_the_nifti_mask_in_the_world(study):
    scan = read_dicom_series(study / "study" / "t1")
    truth = lesion_mask_zhw()
    for name in ("lesion.seg.dcm", "lesion.rtstruct.dcm"):
        labels = read_label_map(study / name, scan)
        assert labels.names == {1: "lesion"} and labels.frame_of_reference == scan.meta["frame_of_reference_uid"]
        on_scan = resample_to_grid(labels.data.astype(float), labels.affine, scan.affine, scan.data.shape, order=0)
        np.testing.assert_array_equal(np.nan_to_num(on_scan) > 0, truth)


def test_the_auditors_check_on_a_study_with_a_seg_mask(study, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "check", LESION3D, study / "study", "--series", "--mask", study / "lesion.seg.dcm", "--require-peak",
        "--min-energy", "0.1", "--report", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = check_rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == ["t1", "t1b"]  # one volume per series
    assert all(r["status"] == "pass" and r["pointing_game"] for r in rows)
    nifti = invoke(
        "check", LESION3D, study / "study" / "t1", "--series", "--mask", LESION_MASK, "--out", tmp_path / "n"
    )
    assert nifti.exit_code == 0, nifti.stderr
    assert rows[0]["region_fraction"] == check_rows(tmp_path / "n")[0]["region_fraction"]
    assert rows[0]["energy_share"] == pytest.approx(check_rows(tmp_path / "n")[0]["energy_share"], abs=1e-12)
    rt = invoke(
        "check", LESION3D, study / "study" / "t1", "--series", "--mask", study / "lesion.rtstruct.dcm", "--out",
        tmp_path / "rt",
    )  # fmt: skip
    assert rt.exit_code == 0, rt.stderr
    assert check_rows(tmp_path / "rt")[0]["region_fraction"] == rows[0]["region_fraction"]
    assert "t1.check.png" in {p.name for p in (out / "study").iterdir()} and (out / "index.html").is_file()


def test_a_mask_from_another_frame_of_reference_or_place_is_refused(study, tmp_path):
    other = invoke("check", LESION3D, study / "study" / "t1", "--series", "--mask", study / "elsewhere.seg.dcm",
                   "--out", tmp_path / "o", "-q")  # fmt: skip
    assert other.exit_code == 3 and "is in frame of reference 1.2.3.4.5.6" in other.stderr
    assert check_rows(tmp_path / "o")[0]["status"] == "error"
    far = tmp_path / "far.nii.gz"
    image = nibabel.load(str(LESION_MASK))
    moved = image.affine.copy()
    moved[:3, 3] += 500.0
    nibabel.save(nibabel.Nifti1Image(np.asarray(image.dataobj), moved), str(far))
    away = invoke("check", LESION3D, LESION, "--mask", far, "--out", tmp_path / "f", "-q")
    assert away.exit_code == 3 and "does not overlap the scan's model grid" in away.stderr
    empty = tmp_path / "empty.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(empty))
    refused = invoke("check", LESION3D, LESION, "--mask", empty, "--out", tmp_path / "e", "-q")
    assert refused.exit_code == 1 and "is empty" in refused.stderr


def test_pydicoms_own_rtstruct_is_refused_with_one_line_naming_the_mask(tmp_path):
    """pydicom's test RT-STRUCT (no Part 10 preamble; drawn on another scan): the raw file is one error line naming
    --mask before any input; a Part 10 copy is read and refused for its frame of reference, before rasterising."""
    from pydicom.data import get_testdata_file

    raw = Path(get_testdata_file("rtstruct.dcm"))
    result = invoke("check", CT2D, CT_LESION, "--mask", raw, "--out", tmp_path / "raw", "-q")
    assert result.exit_code == 1 and result.stderr.startswith(f"error: --mask {raw}: not a DICOM file")
    copy = tmp_path / "rtstruct.dcm"
    pydicom.dcmread(raw, force=True).save_as(copy, enforce_file_format=True)
    result = invoke("check", CT2D, CT_LESION, "--mask", copy, "--out", tmp_path / "copy", "-q")
    assert result.exit_code == 3, result.stderr
    assert "is in frame of reference 1.2.826.0.1.3680043.8.498.2010020400001.2, the scan in" in result.stderr
    assert check_rows(tmp_path / "copy")[0]["status"] == "error"


def test_a_study_folders_seg_files_are_never_read_as_slices(study, tmp_path):
    folder = tmp_path / "with_seg"
    shutil.copytree(study / "study" / "t1", folder)
    shutil.copy(study / "lesion.seg.dcm", folder / "lesion.seg.dcm")
    scan = read_dicom_series(folder)
    assert scan.data.shape == (25, 41, 33) and scan.meta["skipped_files"] == ["lesion.seg.dcm"]


# ----------------------------------------------------------------------------------- region tables


def test_region_table_of_an_atlas_adds_up_and_names_its_regions(tmp_path):
    atlas = toy_atlas(tmp_path / "atlas.nii.gz")
    out = tmp_path / "out"
    result = invoke("run", LESION3D, LESION, "--regions", atlas, "--score", "logit", "--report", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "lesion_volume.json").read_text())
    table = record["regions"]
    rows = {row["name"]: row for row in table["regions"]}
    assert set(rows) == {"right hemisphere", "left hemisphere", "lesion"}
    assert sum(r["voxels"] for r in rows.values()) == 32**3
    assert sum(r["positive_share"] for r in rows.values()) == pytest.approx(1.0)
    values = np.load(out / "lesion_volume.npy").astype(np.float64)
    positive = np.where(values > 0, values, 0).sum()
    assert table["positive_total"] == pytest.approx(positive, rel=1e-9)
    assert max(rows.values(), key=lambda r: r["mean_drop"])["name"] == "lesion"
    assert sum(s["positive_share"] for s in table["slices"]) == pytest.approx(1.0) and len(table["slices"]) == 32
    with open(out / "lesion_volume.regions.csv") as handle:
        written = list(csv.DictReader(handle))
    shares = [r["positive_share"] for r in table["regions"]]
    assert [float(r["positive_share"]) for r in written] == pytest.approx(shares)
    assert "lesion: " in (out / "index.html").read_text()
    photo = invoke("run", CT2D, CT_LESION, "--regions", atlas, "--out", tmp_path / "p", "-q")
    assert photo.exit_code == 3 and "no region overlaps the scan's model grid" in photo.stderr


def test_region_table_from_a_seg_on_check_by_hand(study, tmp_path):
    labels = np.zeros((25, 41, 33), dtype=np.uint8)
    labels[:, :, :16] = 1  # columns run from the patient's right: label 1 is the right part
    labels[lesion_mask_zhw()] = 2
    atlas = make_seg(study / "study" / "t1", labels, tmp_path / "atlas.seg.dcm", {1: "right part", 2: "lesion"})
    out = tmp_path / "out"
    result = invoke("check", LESION3D, study / "study" / "t1", "--series", "--mask", LESION_MASK,
                    "--regions", atlas, "--out", out, "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    table = check_rows(out)[0]["regions"]
    assert [row["name"] for row in table] == ["right part", "lesion", "(outside every region)"]
    lesion = next(row for row in table if row["name"] == "lesion")
    assert lesion["mean_drop"] == max(row["mean_drop"] for row in table)
    with open(out / "t1.regions.csv") as handle:
        assert [int(r["voxels"]) for r in csv.DictReader(handle)] == [row["voxels"] for row in table]
    assert sum(row["voxels"] for row in table) == 32**3


# ------------------------------------------------------------------------------------- DICOM outputs


def _world_equal(volume, affine_lps, reference) -> None:
    """``volume`` (placed by an LPS affine) sampled on the reference Volume's grid equals its data."""
    back = resample_to_grid(np.asarray(volume, np.float64), LPS @ affine_lps, reference.affine, reference.data.shape, 0)
    np.testing.assert_allclose(back, reference.data, rtol=0, atol=1e-5)


def test_dicom_outputs_of_a_series_reference_the_scan_and_hold_the_map(study, tmp_path):
    series = study / "study" / "t1"
    out = tmp_path / "out"
    result = invoke("run", LESION3D, series, "--series", "--dicom-out", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    first = pydicom.dcmread(sorted(series.iterdir())[0])
    pm = hd.imread(str(out / "t1.pm.dcm"))
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and pm.NumberOfFrames == 25
    assert (pm.StudyInstanceUID, pm.FrameOfReferenceUID, pm.PatientID) == (
        first.StudyInstanceUID, first.FrameOfReferenceUID, first.PatientID
    )  # fmt: skip
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in pm.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in series.iterdir()}
    volume = pm.get_volume()
    _world_equal(volume.array, volume.affine, read_nifti(out / "t1.map.nii.gz", finite=False))
    sc = pydicom.dcmread(out / "t1.sc.dcm")
    assert sc.StudyInstanceUID == first.StudyInstanceUID and list(sc.PatientOrientation) == ["L", "P"]
    np.testing.assert_array_equal(sc.pixel_array, np.asarray(Image.open(out / "t1.montage.png").convert("RGB")))
    record = json.loads((out / "t1.json").read_text())
    assert {"t1.pm.dcm", "t1.sc.dcm"} <= {o["name"] for o in record["outputs"]}
    again = invoke("run", LESION3D, series, "--series", "--dicom-out", "--out", tmp_path / "again", "-q")
    assert again.exit_code == 0
    for name in ("t1.pm.dcm", "t1.sc.dcm"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_dicom_outputs_of_a_nifti_and_a_slice(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", LESION3D, LESION, "--dicom-out", "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    scan, pm = hd.imread(str(out / "lesion_volume.scan.dcm")), hd.imread(str(out / "lesion_volume.pm.dcm"))
    assert pm.StudyInstanceUID == scan.StudyInstanceUID and pm.FrameOfReferenceUID == scan.FrameOfReferenceUID
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == scan.SeriesInstanceUID
    volume = scan.get_volume()
    _world_equal(volume.array, volume.affine, read_nifti(LESION))  # the scan itself, voxel for voxel
    volume = pm.get_volume()
    _world_equal(volume.array, volume.affine, read_nifti(out / "lesion_volume.map.nii.gz", finite=False))
    slice_ = invoke("run", CT2D, CT_LESION, "--dicom-out", "--out", tmp_path / "s", "-q")
    assert slice_.exit_code == 0, slice_.stderr
    source = pydicom.dcmread(CT_LESION)
    pm = pydicom.dcmread(tmp_path / "s" / "ct_lesion.pm.dcm")
    assert pm.NumberOfFrames == 1 and (pm.Rows, pm.Columns) == (128, 128)
    assert pm.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    position = pm.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    np.testing.assert_allclose([float(v) for v in position], [float(v) for v in source.ImagePositionPatient], atol=1e-4)
    values = np.frombuffer(pm.FloatPixelData, dtype=np.float32).reshape(128, 128)
    expected = read_nifti(tmp_path / "s" / "ct_lesion.map.nii.gz", finite=False).data
    np.testing.assert_allclose(values, np.nan_to_num(expected.reshape(128, 128)), atol=1e-6)


# ------------------------------------------------------------------------------ pictures and the run


def test_medical_pictures_carry_orientation_letters():
    from occlude_cli.pictures.montage import orientation_markers

    scan = read_nifti(LESION)
    assert orientation_markers(scan.affine, 1, 2) == ("A", "P", "R", "L")  # axial: radiological
    assert orientation_markers(scan.affine, 0, 2, rows_up=True) == ("S", "I", "R", "L")  # coronal
    assert orientation_markers(scan.affine, 0, 1, rows_up=True) == ("S", "I", "A", "P")  # sagittal


def test_orientation_letters_are_drawn_on_a_slice(tmp_path):
    result = invoke("run", CT2D, CT_LESION, "--out", tmp_path, "-q")
    assert result.exit_code == 0
    picture = np.asarray(Image.open(tmp_path / "ct_lesion.overlay.png").convert("RGB")).astype(int)
    yellow = np.all(np.abs(picture - (255, 215, 0)) < 30, axis=-1)
    ys, xs = np.nonzero(yellow)
    left = xs < picture.shape[1] * 0.2
    assert left.any() and (~left).any()  # R on the left edge, L on the right (and A, P)


def test_the_auditors_run_regions_deidentified_with_dicom_outputs(tmp_path):
    patient = tmp_path / "Roe_Richard"
    patient.mkdir()
    scan = patient / "Roe_Richard_t1.nii.gz"
    shutil.copy(LESION, scan)
    atlas = toy_atlas(patient / "atlas.nii.gz")
    out = tmp_path / "out"
    result = invoke("run", LESION3D, scan, "--regions", atlas, "--deidentify", "--dicom-out", "--out", out)
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    stem = next(n for n in names if n.endswith(".pm.dcm"))[: -len(".pm.dcm")]
    assert stem.startswith("case-")
    for suffix in (".json", ".regions.csv", ".slices.csv", ".pm.dcm", ".sc.dcm", ".scan.dcm", ".map.nii.gz"):
        assert stem + suffix in names
    record = json.loads((out / f"{stem}.json").read_text())
    assert {r["name"] for r in record["regions"]["regions"]} == {"right hemisphere", "left hemisphere", "lesion"}
    assert record["regions"]["label_map"]["path"].startswith("regions-")
    pm = pydicom.dcmread(out / f"{stem}.pm.dcm")
    assert str(pm.PatientName) == stem and pm.PatientID == stem
    for path in out.iterdir():
        data = path.read_bytes()
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        assert b"Roe" not in data and b"Richard" not in data, path


def test_a_label_map_that_is_no_label_map_is_one_error_line(tmp_path):
    noisy = tmp_path / "noise.nii.gz"
    rng = np.random.default_rng(0)
    nibabel.save(nibabel.Nifti1Image(rng.integers(0, 30000, (30, 30, 30)).astype(np.int32), np.eye(4)), str(noisy))
    result = invoke("run", LESION3D, LESION, "--regions", noisy, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "not a mask or a label map" in result.stderr
    with pytest.raises(OccludeError, match="not a segmentation"):
        read_label_map(CT_LESION)
