"""Medical readers (DICOM, DICOM series, NIfTI, 16-bit PNG/TIFF), windowing, grids, and the medical sample models.

Every expected value is computed here by hand from the raw pixel data and tags (or from a closed form), never
from the code under test. The sample-model tests run the real ONNX files with onnxruntime and a plain loop.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")  # the `medical` extra
nibabel = pytest.importorskip("nibabel")
pytest.importorskip("scipy")

from occlude_cli.errors import OccludeError
from occlude_cli.loaders.dicom import read_dicom, read_dicom_series
from occlude_cli.loaders.medical import (
    Volume,
    apply_window,
    normalize_range,
    parse_intensity_range,
    parse_window,
    resample,
    resample_map_to_input,
    zscore,
)
from occlude_cli.loaders.nifti import load_nifti_bytes, read_nifti, write_nifti_map
from occlude_cli.loaders.volumes import read_volume

ROOT = Path(__file__).resolve().parents[1]
MEDICAL = ROOT / "sample_images" / "medical"
MODELS = ROOT / "sample_models"
CT = MEDICAL / "CT_small.dcm"
MR = MEDICAL / "MR_small.dcm"
ANAT = MEDICAL / "anatomical.nii"
SERIES = MEDICAL / "series"


def window_by_hand(x: float, c: float, w: float) -> float:
    """DICOM PS3.3 C.11.2.1.2.1, written out with if/else for one value."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 1.0
    return (x - (c - 0.5)) / (w - 1) + 0.5


# ------------------------------------------------------------------------------------------------ DICOM


def test_ct_rescale_matches_raw_pixels_and_tags():
    ds = pydicom.dcmread(str(CT))
    raw = ds.pixel_array
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    vol = read_dicom(CT)
    assert vol.kind == "dicom" and vol.data.dtype == np.float32 and vol.data.shape == (128, 128)
    # raw values read straight off the file: 175 and 2191 stored -> -849 and 1167 HU
    assert raw[0, 0] == 175 and vol.data[0, 0] == 175 - 1024
    assert raw[64, 61] == 2191 and vol.data[64, 61] == 2191 - 1024
    np.testing.assert_array_equal(vol.data, raw.astype(np.float64) * 1.0 - 1024.0)
    assert vol.spacing == (0.661468, 0.661468)
    assert vol.meta["modality"] == "CT" and vol.meta["photometric"] == "MONOCHROME2"
    # affine: pixel (row, col) -> LPS = IPP + col*dx*X + row*dy*Y, then RAS = (-x, -y, z)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    lps = ipp + 5 * 0.661468 * np.array([1, 0, 0]) + 7 * 0.661468 * np.array([0, 1, 0])
    np.testing.assert_allclose((vol.affine @ [7, 5, 0, 1])[:3], [-lps[0], -lps[1], lps[2]])


@pytest.mark.parametrize("preset", ["lung", "mediastinum", "bone", "brain"])
def test_windowing_matches_dicom_linear_function_by_hand(preset):
    centre, width = parse_window(preset)
    assert (centre, width) == {"lung": (-600, 1500), "mediastinum": (50, 350), "bone": (400, 1800),
                               "brain": (40, 80)}[preset]  # fmt: skip
    hu = read_dicom(CT).data
    got = apply_window(hu, centre, width)
    rng = np.random.default_rng(3)
    for r, c in rng.integers(0, 128, (200, 2)):
        assert got[r, c] == pytest.approx(window_by_hand(float(hu[r, c]), centre, width), abs=1e-6)
    # the ends of the DICOM function for the lung window (c - 0.5 -+ (w - 1)/2 = -1350, 149):
    # -1350 -> 0 (clipped), -1349 -> 1/1499, -600 -> 0.5 + 0.5/1499, 149 -> exactly 1 (top of the ramp), 150 -> 1
    edge = apply_window(np.array([-1350.0, -1349.0, -600.0, 149.0, 150.0]), -600, 1500)
    np.testing.assert_allclose(edge, [0.0, 1 / 1499, 0.5 + 0.5 / 1499, 1.0, 1.0], atol=1e-6)


def test_window_from_file_and_width_level_order():
    mr = read_dicom(MR)
    assert mr.meta["window"] == [600.0, 1600.0]  # the file's WindowCenter / WindowWidth
    assert parse_window("file", mr) == (600.0, 1600.0)
    assert parse_window("1500,-600") == (-600.0, 1500.0)  # WIDTH,LEVEL as radiologists say it
    with pytest.raises(OccludeError, match="no WindowCenter"):
        parse_window("file", read_dicom(CT))
    for bad in ("lungs", "0,40", "1500", "a,b"):
        with pytest.raises(OccludeError, match="window"):
            parse_window(bad)


def test_monochrome1_is_inverted_in_stored_range(tmp_path):
    ds = pydicom.dcmread(str(CT))
    raw = ds.pixel_array.astype(np.float64)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    path = tmp_path / "mono1.dcm"
    ds.save_as(str(path))
    vol = read_dicom(path)
    # BitsStored 16, signed: stored range -32768..32767, so raw' = -1 - raw, then HU = raw' - 1024
    assert (int(ds.BitsStored), int(ds.PixelRepresentation)) == (16, 1)
    np.testing.assert_array_equal(vol.data, (-1.0 - raw) - 1024.0)
    assert vol.meta["inverted"] is True
    # the file's window mirrors the same way (S*m + 2b - c), so the windowed picture is the negative
    assert vol.meta["window"] == [-1.0 - 2048.0 - 40.0, 400.0]
    shown = apply_window(vol.data, *parse_window("file", vol))
    plain = apply_window(read_dicom(CT).data, 40, 400)
    np.testing.assert_allclose(shown, 1.0 - plain, atol=1.0 / 399 + 1e-6)


def test_compressed_pixel_data_without_decoder_is_one_clear_line():
    path = Path(pydicom.data.get_testdata_file("JPEGLSNearLossless_08.dcm"))
    try:
        _ = pydicom.dcmread(str(path)).pixel_array
    except Exception:  # noqa: BLE001 -- no JPEG-LS plugin here: exactly the case under test
        with pytest.raises(OccludeError, match=r"compressed as 'JPEG-LS.*install pylibjpeg") as info:
            read_dicom(path)
        assert "\n" not in str(info.value)
    else:  # a JPEG-LS decoder is installed: then it must simply read
        assert read_dicom(path).data.ndim == 2


def test_colour_dicom_refused():
    with pytest.raises(OccludeError, match="colour DICOM"):
        read_dicom(pydicom.data.get_testdata_file("SC_rgb_small_odd.dcm"))


# ------------------------------------------------------------------------------------------ DICOM series


def _copy_shuffled(tmp_path: Path, seed: int = 0) -> Path:
    """The series under random file names, so that name order is not slice order."""
    files = sorted(SERIES.glob("*.dcm"))
    assert len(files) == 25
    names = np.random.default_rng(seed).permutation(len(files))
    out = tmp_path / "series"
    out.mkdir()
    for f, n in zip(files, names):
        shutil.copyfile(f, out / f"x{n:03d}")  # no suffix, like many DICOM exports
    (out / "notes.txt").write_text("not DICOM\n")
    return out


def test_series_sorted_by_position_equals_the_nifti_it_came_from(tmp_path):
    folder = _copy_shuffled(tmp_path)
    series = read_dicom_series(folder)
    nifti = read_nifti(ANAT)
    assert series.kind == "dicom-series" and series.data.shape == (25, 41, 33)
    np.testing.assert_array_equal(series.data, nifti.data)
    np.testing.assert_allclose(series.affine, nifti.affine, atol=1e-4)
    assert series.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert series.meta["skipped_files"] == ["notes.txt"]
    assert read_volume(folder, series=True).data.shape == (25, 41, 33)
    with pytest.raises(OccludeError, match="pass series to read") as refused:
        read_volume(folder)
    assert refused.value.params == ("series",)


def test_series_with_a_missing_slice_is_refused(tmp_path):
    folder = _copy_shuffled(tmp_path)
    positions = {f: float(pydicom.dcmread(str(f)).ImagePositionPatient[2]) for f in folder.glob("x*")}
    middle = sorted(positions, key=positions.get)[12]
    middle.unlink()
    with pytest.raises(OccludeError, match=r"inconsistent slice spacing \(gaps from 2 to 4 mm"):
        read_dicom_series(folder)


def test_series_with_other_pixel_spacing_is_refused(tmp_path):
    folder = _copy_shuffled(tmp_path)
    victim = sorted(folder.glob("x*"))[3]
    ds = pydicom.dcmread(str(victim))
    ds.PixelSpacing = [2.5, 2.5]
    ds.save_as(str(victim))
    with pytest.raises(OccludeError, match="PixelSpacing"):
        read_dicom_series(folder)


def test_mixed_series_lists_their_uids(tmp_path):
    folder = _copy_shuffled(tmp_path)
    original = pydicom.dcmread(str(next(folder.glob("x*")))).SeriesInstanceUID
    positions = {f: float(pydicom.dcmread(str(f)).ImagePositionPatient[2]) for f in folder.glob("x*")}
    for victim in sorted(positions, key=positions.get)[:5]:  # the 5 lowest slices: a complete, even series
        ds = pydicom.dcmread(str(victim))
        ds.SeriesInstanceUID = "1.2.3.4.5"
        ds.save_as(str(victim))
    with pytest.raises(OccludeError, match="mixes 2 series") as info:
        read_dicom_series(folder)
    assert "1.2.3.4.5 (5 files)" in str(info.value) and f"{original} (20 files)" in str(info.value)
    assert read_dicom_series(folder, series_uid="1.2.3.4.5").data.shape[0] == 5


def test_multi_frame_dicom_reads_as_the_volume(tmp_path):
    """The 25 series slices packed into one multi-frame file (classic tags, no functional groups)."""
    files = sorted(SERIES.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(str(f)).ImagePositionPatient[2]))
    slices = [pydicom.dcmread(str(f)) for f in files]
    ds = slices[0]
    ds.NumberOfFrames = len(slices)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    path = tmp_path / "multi"  # no suffix: found by the DICM marker
    ds.save_as(str(path))
    vol = read_volume(path)
    series = read_dicom_series(SERIES)
    assert vol.data.shape == (25, 41, 33)
    np.testing.assert_array_equal(vol.data, series.data)
    np.testing.assert_allclose(vol.affine, series.affine, atol=1e-4)


# ------------------------------------------------------------------------------------------------ NIfTI


def test_nifti_reorientation_and_map_round_trip(tmp_path):
    img = nibabel.load(str(ANAT))
    raw = np.asarray(img.dataobj).astype(np.float32)  # (i, j, k) = (33, 41, 25), axes L, A, S
    vol = read_nifti(ANAT)
    assert vol.meta["source_axcodes"] == "LAS" and vol.meta["axcodes"] == "SPL"
    # common layout (d, h, w) = (k, flipped j, i): checked voxel by voxel against the file's own indices
    assert vol.data.shape == (25, 41, 33)
    assert vol.data[3, 40 - 7, 11] == raw[11, 7, 3]
    np.testing.assert_array_equal(vol.data, raw[:, ::-1, :].transpose(2, 1, 0))
    # the same world point from both affines
    np.testing.assert_allclose(vol.affine @ [3, 40 - 7, 11, 1], img.affine @ [11, 7, 3, 1])
    out = tmp_path / "m.map.nii.gz"
    data = write_nifti_map(vol.data * 2.0, vol, out)
    back = nibabel.load(str(out))
    assert out.read_bytes() == data and not list(tmp_path.glob(".*tmp"))
    np.testing.assert_array_equal(back.affine, img.affine)
    assert back.shape == img.shape
    np.testing.assert_array_equal(np.asarray(back.dataobj), raw * 2.0)
    assert write_nifti_map(vol.data * 2.0, vol) == data  # deterministic bytes


def test_map_on_model_grid_lands_on_the_same_world_point(tmp_path):
    vol = read_nifti(MEDICAL / "lesion_volume.nii.gz")
    mask = read_nifti(MEDICAL / "lesion_volume.mask.nii.gz")
    grid = resample(mask, (32, 32, 32), order=1)
    assert grid.data.shape == (32, 32, 32)
    # written at model resolution with the resampled affine, and back on the input grid
    small = nibabel.load(_write(tmp_path / "a.nii.gz", grid.data, vol, on_input_grid=False))
    full = nibabel.load(_write(tmp_path / "b.nii.gz", grid.data, vol, on_input_grid=True))
    own = nibabel.load(_write(tmp_path / "c.nii.gz", grid.data, grid, on_input_grid=True))  # the grid Volume itself
    truth = nibabel.load(str(MEDICAL / "lesion_volume.mask.nii.gz"))
    assert full.shape == truth.shape and np.array_equal(full.affine, truth.affine)
    assert small.shape == own.shape == (32, 32, 32)
    # written back in the file's own orientation (LAS): x decreases along i, y and z increase along j and k
    assert nibabel.aff2axcodes(small.affine) == nibabel.aff2axcodes(own.affine) == ("L", "A", "S")
    centres = [_world_centroid(x) for x in (small, full, own, truth)]
    for centre in centres[:3]:
        np.testing.assert_allclose(centre, centres[3], atol=0.6)  # mm; voxels are 2 mm


def test_2d_dicom_map_is_a_one_slice_nifti_at_the_slice(tmp_path):
    vol = read_dicom(CT)
    ds = pydicom.dcmread(str(CT))
    disc = np.zeros((128, 128), np.float32)
    disc[60:81, 30:51] = 1.0  # rows 60..80, columns 30..50: centre row 70, column 40
    grid = resample(Volume(disc, vol.spacing, vol.affine, "mask"), (64, 64), order=1)
    for on_input_grid, shape in ((True, (128, 128, 1)), (False, (64, 64, 1))):
        img = nibabel.load(_write(tmp_path / f"{on_input_grid}.nii.gz", grid.data, vol, on_input_grid))
        assert img.shape == shape
        # centre of the square in the scanner frame, by hand: LPS = IPP + col*dx*X + row*dy*Y, RAS = (-x, -y, z)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        lps = ipp + np.array([40 * 0.661468, 70 * 0.661468, 0.0])
        np.testing.assert_allclose(_world_centroid(img), [-lps[0], -lps[1], lps[2]], atol=0.35)


def _write(path: Path, data: np.ndarray, vol: Volume, on_input_grid: bool) -> str:
    write_nifti_map(data, vol, path, on_input_grid=on_input_grid)
    return str(path)


def _world_centroid(img) -> np.ndarray:
    arr = np.asarray(img.dataobj, dtype=np.float64)
    idx = np.argwhere(arr >= 0.5).astype(np.float64)
    return (img.affine @ np.c_[idx, np.ones(len(idx))].T)[:3].mean(axis=1)


def test_four_d_nifti_needs_a_volume_index(tmp_path):
    arr = np.arange(4 * 5 * 6 * 3, dtype=np.int16).reshape(4, 5, 6, 3)
    path = tmp_path / "four.nii.gz"
    nibabel.save(nibabel.Nifti1Image(arr, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    with pytest.raises(OccludeError, match=r"4-D NIfTI with 3 volumes; pass volume_index 0..2"):
        read_volume(path)
    with pytest.raises(OccludeError, match="volume_index 3: out of range"):
        read_nifti(path, volume_index=3)
    vol = read_volume(path, volume_index=2)
    # source axes R, A, S -> common layout (S, P, L): flip i and j, then transpose (k, j, i)
    np.testing.assert_array_equal(vol.data, arr[::-1, ::-1, :, 2].transpose(2, 1, 0))
    assert vol.spacing == (3.0, 2.0, 2.0)


def _nibabel_reference(path: Path, volume_index=None) -> tuple:
    """What nibabel itself reads, put in the common layout with nibabel's orientation functions (the way
    read_nifti did before it read slabs): (data, affine)."""
    img = nibabel.load(str(path))
    proxy = img.dataobj if volume_index is None else img.dataobj[..., volume_index]
    data = np.asarray(proxy, dtype=np.float32).reshape(img.shape[:3])
    orient = nibabel.orientations
    transform = orient.ornt_transform(orient.io_orientation(img.affine), orient.axcodes2ornt(("L", "P", "S")))
    moved = orient.apply_orientation(data, transform).transpose(2, 1, 0)
    affine = (img.affine @ orient.inv_ornt_aff(transform, data.shape))[:, [2, 1, 0, 3]]
    return moved, affine


@pytest.mark.parametrize("slab", [None, 64])
def test_nifti_read_in_slabs_equals_nibabel_whole_for_every_orientation_and_type(tmp_path, monkeypatch, slab):
    """read_nifti reads the header, then the voxels slab by slab straight into the common layout (issue 31.1):
    element for element what nibabel reads whole, for permuted and flipped axes, int/float/big-endian data,
    scl_slope/scl_inter, NIfTI-2, 4-D volumes and .nii.gz; with 64-byte slabs every plane is its own read."""
    from occlude_cli.loaders import limits

    if slab is not None:
        monkeypatch.setattr(limits, "SLAB_BYTES", slab)
    rng = np.random.default_rng(31)
    cases = []
    for n, (perm, dtype) in enumerate(
        zip([(0, 1, 2), (2, 0, 1), (1, 2, 0), (0, 2, 1)] * 2, ["<i2", ">i2", "<f4", ">f8", "u1", "<i4", "<f4", ">i2"])
    ):
        shape = tuple(int(v) for v in rng.integers(3, 9, 3))
        rotation = np.eye(3)[list(perm)] * rng.choice([-1.0, 1.0], 3)
        affine = np.eye(4)
        affine[:3, :3] = rotation @ np.diag(rng.uniform(0.5, 2.0, 3))
        affine[:3, 3] = rng.normal(0, 20, 3)
        values = rng.normal(100, 60, shape).astype(np.dtype(dtype).newbyteorder("="))
        img = (nibabel.Nifti2Image if n == 6 else nibabel.Nifti1Image)(values, affine)
        img.header.set_data_dtype(np.dtype(dtype))
        if n % 3 == 0:
            img.header.set_slope_inter(0.37, -1000.5)
        path = tmp_path / f"v{n}{'.nii.gz' if n % 2 else '.nii'}"
        img.to_filename(str(path))
        cases.append((path, None))
    four = tmp_path / "four.nii.gz"
    nibabel.Nifti1Image(rng.normal(size=(5, 6, 7, 3)).astype(np.float32), np.diag([-1.0, 1.0, 2.0, 1.0])).to_filename(
        four
    )
    cases += [(four, 0), (four, 2), (ANAT, None), (MEDICAL / "lesion_volume.nii.gz", None)]
    for path, index in cases:
        vol = read_nifti(path, volume_index=index)
        data, affine = _nibabel_reference(path, index)
        assert vol.data.dtype == np.float32 and vol.data.flags.c_contiguous
        np.testing.assert_array_equal(vol.data, data, err_msg=str(path))
        np.testing.assert_array_equal(vol.affine, affine)
        own = read_nifti(path, volume_index=index, reorient=False)
        raw = nibabel.load(str(path)).dataobj
        expected = np.asarray(raw if index is None else raw[..., index], dtype=np.float32)
        np.testing.assert_array_equal(own.data, expected.reshape(own.data.shape))


def test_nifti_map_encoded_while_written_equals_nibabel_to_bytes(tmp_path):
    """write_nifti_map compresses nibabel's stream as it is written (issue 31.1: the uncompressed file is never
    held): the bytes equal gzip.compress(img.to_bytes(), mtime=0) of the same image, and plain .nii the bytes."""
    import gzip

    vol = read_nifti(ANAT)
    values = np.random.default_rng(3).normal(size=vol.data.shape).astype(np.float32)
    encoded = write_nifti_map(values, vol)
    img = load_nifti_bytes(encoded)
    reference = nibabel.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    assert encoded == gzip.compress(reference.to_bytes(), mtime=0)
    plain = write_nifti_map(values, vol, tmp_path / "m.nii")
    assert plain == reference.to_bytes() == (tmp_path / "m.nii").read_bytes()
    np.testing.assert_array_equal(np.asarray(img.dataobj), values[:, ::-1, :].transpose(2, 1, 0))


# --------------------------------------------------------------------------------- other files, errors


def test_non_medical_files_give_one_clear_line(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("hello\n" * 50)
    fake = tmp_path / "broken.nii.gz"
    fake.write_bytes(b"\x1f\x8b not really gzip")
    cases = [
        (ROOT / "sample_images" / "cat.jpg", "not a medical image occlude can read"),
        (text, "not a DICOM file"),
        (fake, "not a readable NIfTI file"),
        (tmp_path / "missing.nii", "no such file"),
    ]
    for path, message in cases:
        with pytest.raises(OccludeError, match=message) as info:
            read_volume(path)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_png_and_tiff_keep_full_depth(tmp_path, suffix):
    values = (np.arange(40 * 30, dtype=np.int64).reshape(40, 30) * 53 % 65536).astype(np.uint16)
    values[0, 0], values[0, 1] = 65535, 1  # low bits that an 8-bit reader would lose
    path = tmp_path / f"xray{suffix}"
    Image.fromarray(values).save(path)
    vol = read_volume(path)
    assert vol.meta["bit_depth"] == 16 and vol.kind == f"{suffix[1:4].replace('tif', 'tiff')}16"
    np.testing.assert_array_equal(vol.data, values.astype(np.float32))


def test_colour_png_refused(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(OccludeError, match="colour image"):
        read_volume(path)


# ------------------------------------------------------------------------------------- intensities, grids


def test_intensity_range_and_zscore_by_hand():
    x = np.array([-2000.0, -1000.0, -300.0, 400.0, 900.0])
    np.testing.assert_allclose(normalize_range(x, -1000, 400), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)
    assert parse_intensity_range("-1000,400") == (-1000.0, 400.0)
    for bad in ("400,-1000", "1", "a,b"):
        with pytest.raises(OccludeError, match="intensity_range"):
            parse_intensity_range(bad)
    y = np.array([0.0, 0.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(zscore(y), (y - 2.4) / np.sqrt(((y - 2.4) ** 2).mean()), rtol=1e-6)
    np.testing.assert_allclose(zscore(y, mask_threshold=1.0), (y - 4.0) / np.sqrt(8 / 3), rtol=1e-6)
    with pytest.raises(OccludeError, match="mask_threshold 10"):
        zscore(y, mask_threshold=10)


def test_resample_a_linear_ramp_is_exact_and_the_affine_follows():
    d, h, w = np.meshgrid(np.arange(10.0), np.arange(12.0), np.arange(8.0), indexing="ij")
    ramp = (d + 10 * h + 100 * w).astype(np.float32)
    affine = np.diag([3.0, 2.0, 1.5, 1.0])
    affine[:3, 3] = [5.0, -7.0, 11.0]
    vol = Volume(ramp, (3.0, 2.0, 1.5), affine, "test")
    out = resample(vol, (5, 6, 16), order=1)
    # new voxel n sits at old index (n + 0.5) * s - 0.5, clamped to the grid at the borders
    for n, (nd, nh, nw) in enumerate([(0, 0, 0), (2, 3, 7), (4, 5, 15), (1, 4, 9)]):
        old = [min(max((i + 0.5) * s - 0.5, 0), m - 1) for i, s, m in zip((nd, nh, nw), (2, 2, 0.5), (10, 12, 8))]
        assert out.data[nd, nh, nw] == pytest.approx(old[0] + 10 * old[1] + 100 * old[2], abs=1e-4), n
        world = affine @ [(nd + 0.5) * 2 - 0.5, (nh + 0.5) * 2 - 0.5, (nw + 0.5) * 0.5 - 0.5, 1]
        np.testing.assert_allclose(out.affine @ [nd, nh, nw, 1], world)
    assert out.spacing == (6.0, 4.0, 0.75)
    back = resample_map_to_input(out.data, vol)
    assert back.shape == ramp.shape
    np.testing.assert_allclose(back[2:-2, 2:-2, 2:-2], ramp[2:-2, 2:-2, 2:-2], atol=1e-3)


# ------------------------------------------------------------------------------------ medical sample models


def _session(name: str):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(MODELS / name), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    return sess, json.loads(meta["occlude.preprocess"]), json.loads(meta["occlude.labels"])


def _probs(sess, x: np.ndarray) -> np.ndarray:
    z = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _naive_occlusion(sess, x: np.ndarray, patch: int, stride: int, target: int) -> np.ndarray:
    """One window at a time, zero baseline, every window including the ones flush with each border."""
    spatial = x.shape[2:]
    starts = [sorted({*range(0, n - patch + 1, stride), n - patch}) for n in spatial]
    ref = _probs(sess, x)[0, target]
    total, count = np.zeros(spatial), np.zeros(spatial)
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(spatial)):
        box = tuple(slice(int(c), int(c) + patch) for c in corner)
        occluded = x.copy()
        occluded[(0, 0, *box)] = 0.0
        total[box] += ref - _probs(sess, occluded)[0, target]
        count[box] += 1
    return total / count


def _plateau_centre(occ: np.ndarray) -> tuple[int, ...]:
    """Centre of the voxels at the map's maximum: a window map is piecewise constant, argmax alone is a corner."""
    top = np.argwhere(occ >= occ.max() - 1e-6)
    return tuple(int(v) for v in np.floor(top.mean(axis=0) + 0.5))


def test_lesion3d_detects_the_lesion_and_its_occlusion_map_peaks_on_it():
    sess, pre, labels = _session("lesion3d.onnx")
    assert labels == ["no lesion", "lesion"] and pre["layout"] == "NCDHW" and pre["size"] == [32, 32, 32]
    size, (lo, hi) = tuple(pre["size"]), pre["intensity_range"]
    vol = read_volume(MEDICAL / "lesion_volume.nii.gz")
    x = normalize_range(resample(vol, size).data, lo, hi)[None, None]
    clean = normalize_range(resample(read_volume(ANAT), size).data, lo, hi)[None, None]
    assert _probs(sess, x)[0, 1] > 0.9 and _probs(sess, clean)[0, 0] > 0.5
    mask = resample(read_volume(MEDICAL / "lesion_volume.mask.nii.gz"), size).data >= 0.5
    assert 50 < mask.sum() < 400
    occ = _naive_occlusion(sess, x, patch=8, stride=4, target=1)
    peak = _plateau_centre(occ)
    assert mask[peak], (peak, np.argwhere(mask).mean(axis=0))
    assert occ[mask].mean() > 5 * abs(occ[~mask].mean())


def test_ct2d_detects_the_disc_in_the_dicom_slice():
    sess, pre, _labels = _session("ct2d.onnx")
    assert pre["layout"] == "NCHW" and pre["window"] == list(parse_window(pre["window_name"]))
    size = tuple(pre["size"])
    x = apply_window(resample(read_volume(MEDICAL / "ct_lesion.dcm"), size).data, *pre["window"])[None, None]
    clean = apply_window(resample(read_volume(CT), size).data, *pre["window"])[None, None]
    assert _probs(sess, x)[0, 1] > 0.9 and _probs(sess, clean)[0, 0] > 0.5
    occ = _naive_occlusion(sess, x, patch=8, stride=4, target=1)
    peak = _plateau_centre(occ)
    # the disc: centre row 70, column 40, radius 8 px on the 128x128 slice -> /2 on the 64x64 model grid
    assert np.hypot(peak[0] + 0.5 - 70.5 / 2, peak[1] + 0.5 - 40.5 / 2) <= 4.0 + 1.0, peak
