"""A newcomer's QA pass on the medical paths and folder runs: each test is a defect that pass found, on real
files made here (pydicom, nibabel, highdicom), the real CLI and the real sample models: intensities past
float32, enhanced multi-frame rescale and geometry, gantry-tilted series (and their DICOM outputs), DICOM
geometry that places nothing, damaged slices in a series, study folders with a DICOMDIR or masks, NIfTI units
and header repairs, and ``--resume`` on a result record edited by hand."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from occlude_cli.cli import app

from conftest import ROOT

nibabel = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

runner = CliRunner()
MEDICAL = ROOT / "sample_images" / "medical"
LESION3D = ROOT / "sample_models" / "lesion3d.onnx"
CT2D = ROOT / "sample_models" / "ct2d.onnx"
CT_LESION = MEDICAL / "ct_lesion.dcm"
SERIES = MEDICAL / "series"


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 3 and len(lines) == 1, result.output
    assert "Traceback" not in result.output and "RuntimeWarning" not in result.output, result.output
    return lines[0]


# ------------------------------------------------------------------------ intensities beyond float32


def test_nifti_voxels_beyond_float32_are_one_error_line(tmp_path):
    """float64 voxels of 1e300, or int16 voxels times an scl_slope of 1e38: finite in the file, infinite in the
    float32 volume occlude reads; they were handed to the model as inf (a map was written, exit 0)."""
    data = np.full((12, 12, 12), 100.0)
    data[4:8, 4:8, 4:8] = 1e300
    big = tmp_path / "big.nii"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), big)
    line = one_error(occlude("run", LESION3D, big, "-o", tmp_path / "o1", "-q"))
    assert "big.nii" in line and "float32" in line, line
    slope = tmp_path / "slope.nii"
    image = nibabel.Nifti1Image(np.full((12, 12, 12), 500, np.int16), np.eye(4))
    image.header.set_slope_inter(1e38, 0.0)
    nibabel.save(image, slope)
    line = one_error(occlude("run", LESION3D, slope, "-o", tmp_path / "o2", "-q"))
    assert "slope.nii" in line and "float32" in line, line
    assert not (tmp_path / "o1" / "big.npy").exists() and not (tmp_path / "o2" / "slope.npy").exists()


def test_nifti_intercept_that_is_not_finite_is_one_line_naming_the_file(tmp_path):
    """scl_slope 1 with scl_inter NaN: nibabel's HeaderDataError came out without the file's name."""
    image = nibabel.Nifti1Image(np.full((12, 12, 12), 500, np.int16), np.eye(4))
    image.header["scl_slope"], image.header["scl_inter"] = 1.0, np.nan
    path = tmp_path / "inter.nii"
    nibabel.save(image, path)
    line = one_error(occlude("run", LESION3D, path, "-o", tmp_path / "out", "-q"))
    assert "inter.nii" in line and "scl_inter" in line and "path" in line, line


@pytest.mark.parametrize("slope, intercept", [("inf", "0"), ("1e38", "0"), ("NaN", "0"), ("1", "-inf")])
def test_dicom_rescale_that_is_not_finite_is_one_error_line(tmp_path, slope, intercept):
    """A RescaleSlope/Intercept that is not a finite number, or makes the slice infinite in float32: one line
    naming the file (it ran with infinite intensities, exit 0, or failed on the model's output)."""
    ds = pydicom.dcmread(CT_LESION)
    with pytest.warns(UserWarning) if "n" in slope.lower() + intercept.lower() else _nothing():
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    path = tmp_path / "odd.dcm"
    ds.save_as(path)
    line = one_error(occlude("run", CT2D, path, "-o", tmp_path / "out", "-q"))
    assert "odd.dcm" in line and ("Rescale" in line or "float32" in line), line


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------ enhanced multi-frame DICOM


def _ct_series(folder: Path, slope: float = 2.0, intercept: float = -1024.0) -> list:
    """The sample series as CT slices with a rescale (stored values v: v * slope + intercept HU)."""
    folder.mkdir()
    datasets = []
    for source in sorted(SERIES.glob("*.dcm")):
        ds = pydicom.dcmread(source)
        ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "ReferringPhysicianName"):
            setattr(ds, keyword, ds.get(keyword, ""))
        for keyword in ("AccessionNumber", "StudyID", "KVP"):
            setattr(ds, keyword, ds.get(keyword, ""))
        ds.AcquisitionNumber = ds.get("AcquisitionNumber", 1)
        ds.ImageType = ds.get("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"])
        ds.save_as(folder / source.name)
        datasets.append(pydicom.dcmread(folder / source.name))
    return datasets


def test_enhanced_multiframe_rescale_from_functional_groups(tmp_path):
    """An enhanced CT (highdicom's legacy conversion of the slices) keeps RescaleSlope/Intercept in its
    functional groups, not at the top level: it was read in stored values (slope 1, intercept 0), 1024 HU and a
    factor 2 off the same slices read as a series."""
    hd = pytest.importorskip("highdicom")
    from occlude_cli.loaders.dicom import read_dicom, read_dicom_series

    datasets = _ct_series(tmp_path / "series")
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(), instance_number=1
    )
    assert "RescaleSlope" not in enhanced  # the rescale is in the functional groups only
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)
    series = read_dicom_series(tmp_path / "series")
    volume = read_dicom(path)
    # frames in the file's order: each matched to the series slice at the same place
    world = [volume.affine @ [d, 0, 0, 1] for d in range(25)]
    matched = [int(np.argmin([np.abs(series.affine @ [s, 0, 0, 1] - w).max() for s in range(25)])) for w in world]
    assert sorted(matched) == list(range(25))
    np.testing.assert_array_equal(volume.data, series.data[matched])
    # per-frame values win over shared ones: frame k scaled by its own slope
    per_frame = pydicom.dcmread(path)
    for k, item in enumerate(per_frame.PerFrameFunctionalGroupsSequence):
        transform = pydicom.Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = k + 1, -k, "US"
        item.PixelValueTransformationSequence = [transform]
    per_frame.save_as(tmp_path / "per_frame.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    expected = stored * (np.arange(25) + 1)[:, None, None] - np.arange(25)[:, None, None]
    np.testing.assert_array_equal(read_dicom(tmp_path / "per_frame.dcm").data, expected.astype(np.float32))


# ------------------------------------------------------------------------ gantry tilt


def _tilted_series(folder: Path) -> Path:
    """The sample series copied to ``folder`` with a gantry tilt: each slice moved along the column direction by
    a quarter of its distance along the normal."""
    shutil.copytree(SERIES, folder)
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.25 * z, z]
        ds.save_as(file)
    return folder


def test_tilted_series_keeps_its_slice_positions(tmp_path):
    """Slices whose ImagePositionPatient moves along the column direction as well as the normal (a gantry tilt):
    every slice's first voxel must land at its own ImagePositionPatient (the affine was built from the normal
    alone, the last slice 24 mm off), and the NIfTI map is written with that sheared affine."""
    folder = _tilted_series(tmp_path / "tilt")
    from occlude_cli.loaders.dicom import read_dicom_series

    volume = read_dicom_series(folder)
    positions = sorted(
        ([float(v) for v in pydicom.dcmread(f).ImagePositionPatient] for f in folder.iterdir()), key=lambda p: p[2]
    )
    for d, (x, y, z) in enumerate(positions):  # LPS -> RAS
        np.testing.assert_allclose(volume.affine @ [d, 0, 0, 1], [-x, -y, z, 1], atol=1e-4)
    result = occlude("run", LESION3D, folder, "--series", "-o", tmp_path / "out", "-q", "--score", "logit")
    assert result.exit_code == 0, result.output
    written = nibabel.load(tmp_path / "out" / "tilt.map.nii.gz")
    for x, y, z in positions:
        voxel = np.linalg.solve(written.affine, [-x, -y, z, 1])[:3]
        np.testing.assert_allclose(voxel, np.round(voxel), atol=1e-3)  # each slice's corner is a voxel centre
    record = json.loads((tmp_path / "out" / "tilt.json").read_text())
    np.testing.assert_allclose(record["input"]["affine"], volume.affine, atol=1e-5)


@pytest.mark.parametrize("kind", ["series", "nifti"])
def test_dicom_outputs_of_a_sheared_grid_keep_every_frame_at_its_place(tmp_path, kind):
    """--dicom-out on a tilted series or a sheared NIfTI: highdicom's Volume takes only orthogonal affines, so
    the run failed ('ValueError: Argument affine must be an orthogonal matrix', exit 3); the Parametric Map's
    frames must sit where the scan's slices are."""
    pytest.importorskip("highdicom")
    from medical_data import sheared_nifti

    if kind == "series":
        scan = _tilted_series(tmp_path / "tilt")
        args = ["--series"]
    else:
        scan = sheared_nifti(tmp_path / "tilt.nii.gz")
        args = []
    out = tmp_path / "out"
    result = occlude("run", LESION3D, scan, *args, "--dicom-out", "-o", out, "-q", "--score", "logit")
    assert result.exit_code == 0, result.output
    from occlude_cli.loaders.volumes import read_volume

    volume = read_volume(scan, series=kind == "series")
    pm = pydicom.dcmread(out / "tilt.pm.dcm")
    frames = pm.PerFrameFunctionalGroupsSequence
    assert len(frames) == volume.data.shape[0]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    found = sorted([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames)
    expected = sorted(list((lps @ [d, 0, 0, 1])[:3]) for d in range(volume.data.shape[0]))
    np.testing.assert_allclose(found, expected, atol=1e-3)
    assert pm.Rows == volume.data.shape[1] and pm.Columns == volume.data.shape[2]


def test_slices_off_one_line_are_refused(tmp_path):
    """Slices evenly spaced along the normal but zig-zagging in the plane have no single affine: refused with
    the reason, not read with the first slice's position and the normal."""
    folder = tmp_path / "zigzag"
    shutil.copytree(SERIES, folder)
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x + (5.0 if round(z) % 4 == 0 else 0.0), y, z]
        ds.save_as(file)
    line = one_error(occlude("run", LESION3D, folder, "--series", "-o", tmp_path / "out", "-q"))
    assert "zigzag" in line and "line" in line, line


def test_enhanced_multiframe_out_of_order_or_tilted(tmp_path):
    """An enhanced file's frames whose positions are not one even stack (two frames swapped) were read with the
    file's slice thickness as if they were; refused now. Frames displaced in the plane (a tilt) keep their
    positions in the affine, as a tilted series does."""
    hd = pytest.importorskip("highdicom")
    from occlude_cli.loaders.dicom import read_dicom

    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        _ct_series(tmp_path / "series"),
        series_instance_uid=hd.UID(),
        series_number=9,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    frames = enhanced.PerFrameFunctionalGroupsSequence
    positions = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in frames]
    for frame, (x, y, z) in zip(frames, positions):
        frame.PlanePositionSequence[0].ImagePositionPatient = [x, y + 0.25 * z, z]
    enhanced.save_as(tmp_path / "tilted.dcm")
    volume = read_dicom(tmp_path / "tilted.dcm")
    for d, (x, y, z) in enumerate(positions):
        np.testing.assert_allclose(volume.affine @ [d, 0, 0, 1], [-x, -(y + 0.25 * z), z, 1], atol=1e-4)
    first, second = frames[3].PlanePositionSequence[0], frames[4].PlanePositionSequence[0]
    first.ImagePositionPatient, second.ImagePositionPatient = second.ImagePositionPatient, first.ImagePositionPatient
    enhanced.save_as(tmp_path / "swapped.dcm")
    line = one_error(occlude("run", LESION3D, tmp_path / "swapped.dcm", "-o", tmp_path / "out", "-q"))
    assert "swapped.dcm" in line and "evenly on one line" in line, line


# ------------------------------------------------------------------------ resume and hand-edited results


def test_resume_redoes_a_result_json_edited_by_hand(tmp_path):
    """A per-image JSON whose score or label was edited (valid JSON, map untouched) was kept by --resume and
    its edited values went into summary.csv; the rerun must recompute it and give the original bytes."""
    images = tmp_path / "in"
    images.mkdir()
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        shutil.copy(ROOT / "sample_images" / name, images / name)
    model = ROOT / "sample_models" / "digits_cnn.onnx"
    out = tmp_path / "out"
    args = ("run", model, images, "-o", out, "-q", "--no-timing")
    assert occlude(*args).exit_code == 0
    original = {p.name: p.read_bytes() for p in out.glob("digit_*.json")}
    record = json.loads(original["digit_3.json"])
    record["score"]["original"] = 0.5
    record["target"]["label"] = "tiger"
    (out / "digit_3.json").write_text(json.dumps(record))
    record = json.loads(original["digit_7.json"])
    record["map_info"]["peak"]["y"] += 1
    (out / "digit_7.json").write_text(json.dumps(record, indent=2))
    result = occlude(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in out.glob("digit_*.json")} == original
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads((out / "summary.json").read_text())["images"]}
    assert rows["digit_0.png"]["status"] == "skipped"
    assert rows["digit_3.png"]["status"] == rows["digit_7.png"]["status"] == "ok"
    assert "tiger" not in (out / "summary.csv").read_text()


# ------------------------------------------------------------------------ DICOM geometry that places nothing


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0]),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
        ("ImageOrientationPatient", [1, 0, 0]),
        ("ImagePositionPatient", [1, 2]),
        ("PixelSpacing", ["0", "0"]),
        ("PixelSpacing", ["-1", "1"]),
        ("PixelSpacing", ["nan", "1"]),
        ("PixelSpacing", ["0.5"]),
    ],
)
def test_dicom_geometry_that_places_nothing_is_one_line_naming_it(tmp_path, keyword, value):
    """Orientation cosines that are zero, parallel or short, a two-number position, a pixel spacing of zero,
    negative, NaN or one number: each was a line of Python internals ('TypeError: sequence item 1: expected
    str instance, NoneType found', 'LinAlgError: SVD did not converge') or, for a negative spacing, a map on a
    mirrored grid (exit 0); now one line naming the file and the attribute."""
    ds = pydicom.dcmread(CT_LESION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the invalid value it is asked to write
        setattr(ds, keyword, value)
        path = tmp_path / "odd.dcm"
        ds.save_as(path)
    line = one_error(occlude("run", CT2D, path, "-o", tmp_path / "out", "-q"))
    assert "odd.dcm" in line and keyword in line, line
    series = tmp_path / "series"
    shutil.copytree(SERIES, series)
    victim = sorted(series.iterdir())[3]
    ds = pydicom.dcmread(victim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setattr(ds, keyword, value)
        ds.save_as(victim)
    line = one_error(occlude("run", LESION3D, series, "--series", "-o", tmp_path / "out2", "-q"))
    assert victim.name in line and keyword in line, line


@pytest.mark.parametrize("units", ["micron", "meter"])
def test_nifti_map_keeps_the_input_length_unit(tmp_path, units):
    """A NIfTI in micrometres (or metres): the map has the input's affine, so it must say the same unit; it
    was labelled mm, and a reader that honours the unit (ITK, 3D Slicer) put it 1000 times off the scan."""
    source = nibabel.load(MEDICAL / "lesion_volume.nii.gz")
    image = nibabel.Nifti1Image(np.asarray(source.dataobj), source.affine, source.header)
    image.header.set_xyzt_units(units)
    path = tmp_path / "scan.nii.gz"
    nibabel.save(image, path)
    result = occlude("run", LESION3D, path, "-o", tmp_path / "out", "-q", "--score", "logit")
    assert result.exit_code == 0, result.output
    written = nibabel.load(tmp_path / "out" / "scan.map.nii.gz")
    assert written.header.get_xyzt_units()[0] == units
    np.testing.assert_array_equal(written.affine, image.affine)
    assert nibabel.load(tmp_path / "out" / "scan.map.nii.gz").shape == image.shape


@pytest.mark.parametrize("thickness", ["nan", "-2", "0"])
def test_multiframe_slice_step_that_is_not_a_distance_is_one_line(tmp_path, thickness):
    """A classic multi-frame file places its frames with SliceThickness: NaN was 'LinAlgError: SVD did not
    converge', a negative one silently flipped the volume upside down (the peak 40 mm off), 0 was read as 1 mm."""
    files = sorted(SERIES.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    slices = [pydicom.dcmread(f) for f in files]
    ds = slices[0]
    ds.NumberOfFrames = len(slices)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SliceThickness = thickness
        if "SpacingBetweenSlices" in ds:
            del ds.SpacingBetweenSlices
        ds.save_as(tmp_path / "frames.dcm")
    line = one_error(occlude("run", LESION3D, tmp_path / "frames.dcm", "-o", tmp_path / "out", "-q"))
    assert "frames.dcm" in line and "SliceThickness" in line, line
    single = pydicom.dcmread(CT_LESION)  # a single slice is not placed by it: still explained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single.SliceThickness = thickness
        single.save_as(tmp_path / "slice.dcm")
    assert occlude("run", CT2D, tmp_path / "slice.dcm", "-o", tmp_path / "out2", "-q").exit_code == 0


@pytest.mark.parametrize("damage", ["cut_in_header", "pixels_removed"])
def test_a_damaged_slice_is_never_dropped_from_a_series_in_silence(tmp_path, damage):
    """The top slice of a series cut short (a copy that stopped, a bad disk): it was skipped as 'not an image',
    the 24 others read as the whole volume (exit 0, no warning; only input.meta.skipped_files named it)."""
    folder = tmp_path / "series"
    shutil.copytree(SERIES, folder)
    top = max(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    if damage == "cut_in_header":
        top.write_bytes(top.read_bytes()[:300])
    else:
        ds = pydicom.dcmread(top)
        del ds.PixelData
        ds.save_as(top)
    line = one_error(occlude("run", LESION3D, folder, "--series", "-o", tmp_path / "out", "-q"))
    assert top.name in line and "series" in line, line
    (folder / "notes.txt").write_text("not DICOM")  # other files are still skipped
    top.unlink()
    result = occlude("run", LESION3D, folder, "--series", "-o", tmp_path / "out2", "-q", "--score", "logit")
    assert result.exit_code == 0, result.output  # without its top slice: a complete 24-slice series again
    record = json.loads((tmp_path / "out2" / "series.json").read_text())
    assert record["input"]["shape"][0] == 24 and record["input"]["meta"]["skipped_files"] == ["notes.txt"]


def test_a_nifti_header_repaired_on_reading_is_a_warning_of_that_input(tmp_path):
    """pixdim of 0 without a qform or sform: nibabel reads it as 1 mm and said so in a bare line on stderr
    ('pixdim[1,2,3] should be non-zero; setting 0 dims to 1'), tied to no file and absent from the JSON; the
    spacing the map is placed with was assumed in silence. Now a warning of that input, in its record too."""
    image = nibabel.Nifti1Image(np.arange(12**3, dtype=np.int16).reshape(12, 12, 12), None)
    image.header["pixdim"][1:4] = 0
    path = tmp_path / "flat.nii"
    nibabel.save(image, path)
    raw = bytearray(path.read_bytes())
    raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1..3] = 0 (nibabel's writer would have fixed them)
    path.write_bytes(bytes(raw))
    result = occlude("run", LESION3D, path, "-o", tmp_path / "out", "-q", "--score", "logit")
    assert result.exit_code == 0, result.output
    stray = [line for line in result.output.splitlines() if line and not line.startswith(("warning:", "error:"))]
    assert not stray, result.output
    assert any(
        line.startswith("warning: ") and "flat.nii" in line and "pixdim" in line for line in result.output.splitlines()
    )
    record = json.loads((tmp_path / "out" / "flat.json").read_text())
    assert any("pixdim" in w for w in record["warnings"]) and record["input"]["spacing"] == [1.0, 1.0, 1.0]


def test_a_study_folder_with_a_dicomdir_and_masks_beside_its_series(tmp_path):
    """DICOM media keep a DICOMDIR at the root beside the series folders, and the manual puts a series' SEG
    beside its folder (study/t1.seg.dcm): either made the study folder count as a series itself, and the run
    failed ('no DICOM image files in it') without reading any of its series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    study = tmp_path / "study"
    shutil.copytree(SERIES, study / "t1")
    shutil.copytree(SERIES, study / "t2")
    directory = Dataset()
    directory.file_meta = FileMetaDataset()
    directory.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory
    directory.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    directory.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    directory.FileSetID, directory.DirectoryRecordSequence = "STUDY", []
    directory.save_as(study / "DICOMDIR", enforce_file_format=True)
    seg = pydicom.dcmread(next(SERIES.iterdir()))
    seg.SOPClassUID = seg.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation
    seg.save_as(study / "t1.seg.dcm")
    out = tmp_path / "out"
    result = occlude("run", LESION3D, study, "--series", "-o", out, "-q", "--score", "logit", "--no-timing")
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "summary.json").read_text())["images"]
    assert [(r["path"].rsplit("/", 2)[-2:], r["status"]) for r in rows] == [
        (["study", "t1"], "ok"),
        (["study", "t2"], "ok"),
    ]
    assert (out / "study" / "t1.json").is_file() and (out / "study" / "t2.json").is_file()
