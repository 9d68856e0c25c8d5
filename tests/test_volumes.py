"""Issue 12 end to end: volumes and DICOM slices through the engine, explain(), the CLI and the outputs.

Ground truth: a naive 3-D reference loop compared element-wise with the engine (numpy score and a real
ONNX 3-D model), a hand-built 3-D ONNX probe whose map is computable by hand, the sample lesion models
whose maps must peak inside the known lesion, NIfTI maps read back with nibabel, and MONAI's
OcclusionSensitivity as a peer where the two definitions coincide.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")  # the `medical` extra
nibabel = pytest.importorskip("nibabel")
pytest.importorskip("scipy")

from typer.testing import CliRunner  # noqa: E402

from occlude_cli.cli.app import app  # noqa: E402
from occlude_cli.core.baselines import gaussian_blur, make_input_baseline, otsu_threshold  # noqa: E402
from occlude_cli.core.engine import occlusion_sensitivity, window_grid  # noqa: E402
from occlude_cli.errors import OccludeError  # noqa: E402
from occlude_cli import explain  # noqa: E402
from occlude_cli.analyses.estimate import baseline_check  # noqa: E402
from occlude_cli.analyses.medical import VolumeExplanation  # noqa: E402
from occlude_cli.loaders.dicom import read_dicom, read_dicom_series  # noqa: E402
from occlude_cli.loaders.medical import Volume, apply_window, resample  # noqa: E402
from occlude_cli.loaders.nifti import read_nifti  # noqa: E402
from occlude_cli.pictures.montage import montage_png, planes_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEDICAL = ROOT / "sample_images" / "medical"
LESION = MEDICAL / "lesion_volume.nii.gz"
LESION_MASK = MEDICAL / "lesion_volume.mask.nii.gz"
CT_LESION = MEDICAL / "ct_lesion.dcm"
SERIES = MEDICAL / "series"
LESION3D = ROOT / "sample_models" / "lesion3d.onnx"
CT2D = ROOT / "sample_models" / "ct2d.onnx"
runner = CliRunner()


# ------------------------------------------------------------------------------------- reference loop


def starts_by_hand(length: int, patch: int, stride: int) -> list:
    """Window starts along one axis: every stride, plus one flush with the end if the stride misses it."""
    out = []
    start = 0
    while start + patch <= length:
        out.append(start)
        start += stride
    if out[-1] + patch != length:
        out.append(length - patch)
    return out


def naive_map(x: np.ndarray, score, patch, stride, target: int, baseline=None) -> np.ndarray:
    """The definition, written out: occlude each window of a (C, D, H, W) input one at a time, score it,
    and average the drops of the windows covering each voxel."""
    baseline = np.zeros_like(x) if baseline is None else baseline
    original = score(x[None])[0, target]
    size = x.shape[1:]
    total = np.zeros(size)
    count = np.zeros(size)
    for z in starts_by_hand(size[0], patch[0], stride[0]):
        for y in starts_by_hand(size[1], patch[1], stride[1]):
            for w in starts_by_hand(size[2], patch[2], stride[2]):
                box = (slice(None), slice(z, z + patch[0]), slice(y, y + patch[1]), slice(w, w + patch[2]))
                occluded = x.copy()
                occluded[box] = baseline[box]
                drop = original - score(occluded[None])[0, target]
                total[box[1:]] += drop
                count[box[1:]] += 1
    return total / count


def test_3d_engine_equals_the_naive_loop_with_a_numpy_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 9, 11, 10))
    weights = rng.normal(size=(3,) + x.shape)

    def score(batch):
        return np.tensordot(batch, weights, axes=([1, 2, 3, 4], [1, 2, 3, 4])) ** 2  # non-linear on purpose

    patch, stride = (3, 4, 5), (2, 3, 2)
    occ = occlusion_sensitivity(x, score, patch=patch, stride=stride, spatial_axes=(1, 2, 3), batch_size=7)
    for target in range(3):
        np.testing.assert_allclose(
            occ.attribution(target), naive_map(x, score, patch, stride, target), rtol=1e-10, atol=1e-10
        )
    assert occ.windows.shape[1] == 6
    assert occ.coverage_count().min() >= 1


def test_3d_engine_equals_the_naive_loop_on_the_real_lesion_model():
    from occlude_cli.loaders.model import OnnxClassifier

    model = OnnxClassifier(LESION3D)
    e = explain(model, LESION, patch=(8, 8, 8), stride=(8, 6, 8), score="logit", batch_size=5)
    x = e.image.model_input
    reference = naive_map(x, model.run, (8, 8, 8), (8, 6, 8), e.target)
    np.testing.assert_allclose(e.map, reference, rtol=1e-5, atol=1e-5)
    assert e.map.shape == (32, 32, 32)


# ------------------------------------------------------------------------------------------ 3-D probe


def box_probe(tmp_path: Path, shape, box, dynamic: bool = False) -> Path:
    """(N, 1, D, H, W) -> (N,): the mean of the input over ``box`` (z0, y0, x0, z1, y1, x1)."""
    import onnx
    from onnx import TensorProto, helper

    starts = np.array(box[:3], dtype=np.int64)
    ends = np.array(box[3:], dtype=np.int64)
    axes = np.array([2, 3, 4], dtype=np.int64)
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["cut"]),
            helper.make_node("ReduceMean", ["cut"], ["score"], axes=[1, 2, 3, 4], keepdims=0),
        ],
        "box_mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, *(("D", "H", "W") if dynamic else shape)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        [
            helper.make_tensor("starts", TensorProto.INT64, [3], starts),
            helper.make_tensor("ends", TensorProto.INT64, [3], ends),
            helper.make_tensor("axes", TensorProto.INT64, [3], axes),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "box.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_hand_built_3d_probe_gives_exactly_the_expected_support_and_values(tmp_path):
    shape, box = (12, 10, 14), (3, 2, 5, 7, 6, 9)
    model = box_probe(tmp_path, shape, box)
    rng = np.random.default_rng(3)
    data = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    volume = Volume(data=data, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), kind="nifti")
    patch, stride = (4, 4, 4), (2, 3, 2)
    e = explain(model, volume, patch=patch, stride=stride, score="raw")
    assert isinstance(e, VolumeExplanation)
    # by hand: a window's drop is the sum of the input over (window ∩ box), divided by the box's volume
    inside = (slice(box[0], box[3]), slice(box[1], box[4]), slice(box[2], box[5]))
    box_voxels = data[inside].size
    total, count = np.zeros(shape), np.zeros(shape)
    for z in starts_by_hand(shape[0], 4, 2):
        for y in starts_by_hand(shape[1], 4, 3):
            for x in starts_by_hand(shape[2], 4, 2):
                lo = (max(z, box[0]), max(y, box[1]), max(x, box[2]))
                hi = (min(z + 4, box[3]), min(y + 4, box[4]), min(x + 4, box[5]))
                drop = (
                    float(data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].sum()) / box_voxels
                    if all(a < b for a, b in zip(lo, hi))
                    else 0.0
                )
                total[z : z + 4, y : y + 4, x : x + 4] += drop
                count[z : z + 4, y : y + 4, x : x + 4] += 1
    expected = total / count
    np.testing.assert_array_equal(e.map > 1e-7, expected > 0)  # the support, exactly
    np.testing.assert_allclose(e.map, expected, atol=2e-6)
    # the support is the union of the windows touching the box: nothing outside it moves
    assert e.map[:, :, :2].max() == 0  # x 0..1 is only under the window at x 0..3, which misses the box (x >= 5)


# --------------------------------------------------------------------------------------- lesion maps


def lesion_mask_on_grid(shape=(32, 32, 32)) -> np.ndarray:
    return resample(read_nifti(LESION_MASK), shape, order=0).data > 0.5


def test_cli_lesion_volume_map_peaks_inside_the_lesion_and_the_nifti_keeps_the_affine(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "run",
            str(LESION3D),
            str(LESION),
            "--patch",
            "8x8x8",
            "--stride",
            "4x4x4",
            "--out",
            str(out),
            "--quiet",
            "--no-timing",
            "--all-classes",
            "--report",
        ],
    )
    assert result.exit_code == 0, result.output
    assert np.load(out / "lesion_volume.classes.npy").shape == (2, 32, 32, 32)
    html = (out / "index.html").read_text()
    assert "lesion_volume.montage.png" in html and "lesion_volume.planes.png" in html
    names = sorted(p.name for p in out.iterdir())
    for name in (
        "lesion_volume.json",
        "lesion_volume.npy",
        "lesion_volume.map.nii.gz",
        "lesion_volume.montage.png",
        "lesion_volume.planes.png",
    ):
        assert name in names
    values = np.load(out / "lesion_volume.npy")
    assert values.shape == (32, 32, 32)
    record = json.loads((out / "lesion_volume.json").read_text())
    peak = record["peak"]["voxel"]
    assert lesion_mask_on_grid()[tuple(peak)], peak
    assert record["map_info"]["peak"]["value"] == pytest.approx(float(values.max()), rel=1e-6)
    assert set(record["windows"][0]) >= {"z", "y", "x", "d", "h", "w", "drop"}
    assert len(record["windows"]) == 7**3
    assert record["input"]["kind"] == "nifti" and record["input"]["shape"] == [25, 41, 33]
    assert record["input"]["spacing"] == [2.0, 2.0, 2.0]
    assert record["params"]["preprocessing"]["intensity_range"] == [0.0, 20000.0]
    # the world peak lies within a window's half-size of the lesion centre, RAS (-16, 16, 0) mm
    assert np.linalg.norm(np.subtract(record["peak"]["world_mm"], [-16, 16, 0])) < 8
    # NIfTI map: the input's own grid and affine, and its peak inside the file's own mask
    written, source, mask = (nibabel.load(str(p)) for p in (out / "lesion_volume.map.nii.gz", LESION, LESION_MASK))
    np.testing.assert_array_equal(written.affine, source.affine)
    assert written.shape == source.shape
    on_input = np.asarray(written.dataobj)
    inside = np.asarray(mask.dataobj) == 1
    plateau = np.argwhere(on_input >= on_input.max() - 1e-6)  # the map's maximal plateau, on the file's grid
    assert inside[tuple(np.rint(plateau.mean(axis=0)).astype(int))]
    assert on_input[inside].mean() > 10 * abs(on_input[~inside].mean())


def lesion_series(tmp_path: Path) -> Path:
    """The sample series (anatomical.nii as DICOM) with the lesion volume's voxels written into its slices."""
    folder = tmp_path / "lesion_series"
    shutil.copytree(SERIES, folder)
    plain = read_dicom_series(SERIES).data
    lesion = read_nifti(LESION).data
    for file in sorted(folder.iterdir()):
        ds = pydicom.dcmread(file)
        slice_ = read_dicom(file).data
        (d,) = [i for i in range(plain.shape[0]) if np.array_equal(plain[i], slice_)]
        ds.PixelData = np.rint(lesion[d]).astype(np.int16).tobytes()
        ds.save_as(file)
    return folder


def test_cli_lesion_series_map_peaks_inside_the_lesion(tmp_path):
    folder = lesion_series(tmp_path)
    assert np.array_equal(read_dicom_series(folder).data, read_nifti(LESION).data)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["run", str(LESION3D), str(folder), "--series", "--patch", "8", "--stride", "4", "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "lesion_series.json").read_text())
    assert record["input"]["kind"] == "dicom-series"
    assert record["target"]["label"] == "lesion"
    assert lesion_mask_on_grid()[tuple(record["peak"]["voxel"])]
    written = nibabel.load(str(out / "lesion_series.map.nii.gz"))
    np.testing.assert_allclose(written.affine, read_dicom_series(folder).affine, atol=1e-6)


def test_series_flag_on_the_sample_series_and_without_flag(tmp_path):
    result = runner.invoke(
        app, ["run", str(LESION3D), str(SERIES), "--series", "--out", str(tmp_path / "a"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "series.montage.png").is_file()
    record = json.loads((tmp_path / "a" / "series.json").read_text())
    assert record["params"]["patch"] == [8, 8, 8]  # the 3-D default: a quarter of each side
    # without --series the folder's slices are 2-D inputs, which a 3-D model refuses (one line each)
    result = runner.invoke(app, ["run", str(LESION3D), str(SERIES / "IM0001.dcm"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 3
    assert "2-D slice" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------- DICOM 2-D


def test_cli_dicom_slice_window_from_flags_equals_metadata_and_peaks_on_the_disc(tmp_path):
    maps = {}
    for name, flags in (
        ("meta", []),
        ("bone", ["--window", "bone"]),
        ("wl", ["--window", "1800,400"]),
        ("lung", ["--window", "lung"]),
    ):
        out = tmp_path / name
        result = runner.invoke(app, ["run", str(CT2D), str(CT_LESION), "--out", str(out), "--quiet", *flags])
        assert result.exit_code == 0, result.output
        maps[name] = np.load(out / "ct_lesion.npy")
        record = json.loads((out / "ct_lesion.json").read_text())
        maps[name + "_record"] = record
    np.testing.assert_array_equal(maps["meta"], maps["bone"])
    np.testing.assert_array_equal(maps["bone"], maps["wl"])
    assert not np.array_equal(maps["bone"], maps["lung"])
    record = maps["bone_record"]
    assert record["input"]["window_applied"] == [400.0, 1800.0]
    assert maps["lung_record"]["input"]["window_applied"] == [-600.0, 1500.0]
    # disc: centre row 70, column 40 of the 128x128 slice, radius 8 px; the peak is reported on the input grid
    row, col = record["peak"]["input_voxel"]
    assert (row - 70) ** 2 + (col - 40) ** 2 <= 10**2
    # the usual 2-D pictures, at the slice's size (128 enlarged to >= 320) with a coloured spot on the disc
    overlay = Image.open(tmp_path / "bone" / "ct_lesion.overlay.png").convert("RGB")
    assert overlay.width > 384
    written = nibabel.load(str(tmp_path / "bone" / "ct_lesion.map.nii.gz"))
    np.testing.assert_allclose(written.affine, read_dicom(CT_LESION).affine, atol=1e-6)
    assert written.shape == (128, 128, 1)


def test_dicom_model_input_is_the_window_of_the_resampled_slice():
    e = explain(CT2D, CT_LESION, window="bone")
    by_hand = apply_window(resample(read_dicom(CT_LESION), (64, 64)).data, 400.0, 1800.0)
    np.testing.assert_array_equal(e.image.model_input[0], by_hand)
    assert e.image.model_input.shape == (1, 64, 64)


def test_bad_medical_flags_are_one_line(tmp_path):
    cases = [
        (["--window", "lung", "--zscore"], "choose one intensity transform"),
        (["--window", "purple"], "--window takes a preset (lung, mediastinum, bone, brain), 'file', or WIDTH,LEVEL"),
        (["--intensity-range", "5,1"], "lo < hi"),
        (["--zscore-threshold", "3"], "needs zscore"),
        (["--refine"], "refine is for 2-D"),
        (["--patch", "8x8"], "does not fit a 3-D input"),
        (["--baseline", "white"], "pixel units"),
    ]
    for flags, text in cases:
        result = runner.invoke(app, ["run", str(LESION3D), str(LESION), "--out", str(tmp_path), *flags])
        assert result.exit_code in (1, 3), (flags, result.output)
        assert text in result.output, (flags, result.output)
        assert "Traceback" not in result.output


# ----------------------------------------------------------------------------------------- baselines


def test_3d_blur_equals_scipy_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    x = np.random.default_rng(1).normal(size=(1, 14, 15, 16))
    ours = gaussian_blur(x, 2.0, axes=(1, 2, 3))
    theirs = gaussian_filter(x, sigma=(0, 2.0, 2.0, 2.0), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_blur_kernel_is_capped_at_the_axis_length():
    x = np.random.default_rng(2).normal(size=(1, 3, 5, 40))
    ours = gaussian_blur(x, 50.0, axes=(1, 2, 3))  # a 150-voxel radius on a 3-voxel axis
    assert np.isfinite(ours).all() and ours.shape == x.shape


def test_tissue_and_percentile_baselines_by_hand():
    rng = np.random.default_rng(4)
    air = np.full((4, 8, 8), -1000.0)
    tissue = 40 + rng.normal(scale=5, size=(4, 8, 8))
    x = np.where(np.arange(8)[None, None, :] < 3, air, tissue)[None].astype(np.float32)
    threshold = otsu_threshold(x)
    assert -1000 < threshold < 20
    fill = make_input_baseline("tissue", x, (1, 2, 3))
    assert fill.shape == x.shape
    assert fill[0, 0, 0, 0] == pytest.approx(float(x[x > -500].mean()), rel=1e-6)
    p10 = make_input_baseline("p10", x, (1, 2, 3))
    assert p10[0, 0, 0, 0] == pytest.approx(float(np.percentile(x, 10)), rel=1e-6)
    with pytest.raises(OccludeError, match="constant"):
        make_input_baseline("tissue", np.ones((1, 3, 3, 3), np.float32), (1, 2, 3))


def test_inpaint_reproduces_a_linear_ramp_so_the_map_is_zero():
    """A linear function is biharmonic: inpainting a window of a ramp gives the ramp back, so with a model
    that reads the pixels the map is zero (and the callable baseline goes through the engine). Only for
    windows 2 or more pixels off the image border (the biharmonic stencil reaches 2 pixels out): nearer,
    scikit-image's boundary handling is not exact (up to 0.195 off on this ramp)."""
    from occlude_cli.loaders.inpaint import InpaintBaseline

    ramp = (np.arange(24)[:, None] * 0.3 + np.arange(20)[None, :] * 0.1)[None].astype(np.float64)
    fill = InpaintBaseline(ramp, (1, 2))
    np.testing.assert_allclose(fill((9, 7, 5, 4)), ramp[:, 9:14, 7:11], atol=1e-6)
    np.testing.assert_allclose(fill((2, 2, 6, 6)), ramp[:, 2:8, 2:8], atol=1e-6)
    weights = np.random.default_rng(5).normal(size=(2,) + ramp.shape)

    def score(batch):
        return np.tensordot(batch, weights, axes=([1, 2, 3], [1, 2, 3]))

    grid = window_grid((24, 20), (6, 6), (3, 3))
    interior = grid[(grid[:, 0] >= 2) & (grid[:, 1] >= 2) & (grid[:, 0] + 6 <= 22) & (grid[:, 1] + 6 <= 18)]
    occ = occlusion_sensitivity(ramp, score, patch=(6, 6), baseline=fill, spatial_axes=(1, 2), windows=interior)
    assert np.nanmax(np.abs(occ.attribution(0))) < 1e-5
    constant = occlusion_sensitivity(
        ramp, score, patch=(6, 6), baseline=np.zeros_like(ramp), spatial_axes=(1, 2), windows=interior
    )
    assert np.nanmax(np.abs(constant.attribution(0))) > 0.1  # a constant patch is not neutral on the ramp


def test_baseline_check_reports_every_baseline_and_writes_json(tmp_path):
    doc = baseline_check(CT2D, CT_LESION, copies=6, score="logit")
    names = [b["baseline"] for b in doc["baselines"]]
    assert names == ["zero", "mean", "blur", "tissue", "p10", "noise", "inpaint"]
    assert doc["copies"] == 6 and len(doc["windows"]) == 6
    again = baseline_check(CT2D, CT_LESION, copies=6, score="logit")
    assert again["baselines"][0]["mean_change"] == doc["baselines"][0]["mean_change"]  # seeded
    result = runner.invoke(
        app, ["run", str(LESION3D), str(LESION), "--baseline-check", "--out", str(tmp_path), "--score", "logit"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "baseline_check.json").read_text())
    assert [b["baseline"] for b in saved["inputs"][0]["baselines"]] == [
        "zero",
        "mean",
        "blur",
        "tissue",
        "p10",
        "noise",
    ]
    assert "mean |change|" in result.output


# ------------------------------------------------------------------------------------------ pictures


def test_montage_shows_the_map_only_on_its_slice_and_planes_cross_at_the_peak():
    display = np.full((16, 20, 24), 0.5, dtype=np.float32)
    values = np.zeros((16, 20, 24))
    values[8, 5:9, 6:10] = 1.0
    png = montage_png(display, values, (2.0, 1.0, 1.0), np.eye(4), "t", "s")
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red = (image[..., 0] > image[..., 1] + 50) & (image[..., 0] > image[..., 2] + 30)
    rows, cols = np.nonzero(red[:, : image.shape[1] - 110])  # leave out the colorbar
    assert red.any()
    # 16 slices -> 16 tiles, 4 columns: slice 8 is the first tile of the third row
    assert rows.min() > image.shape[0] * 0.4 and rows.max() < image.shape[0] * 0.75
    assert cols.max() < image.shape[1] * 0.3
    planes = np.asarray(
        Image.open(io.BytesIO(planes_png(display, values, (2.0, 1.0, 1.0), (8, 6, 7), "t", "s"))).convert("RGB")
    ).astype(int)
    planes_red = (planes[..., 0] > planes[..., 1] + 50) & (planes[..., 0] > planes[..., 2] + 30)
    assert planes_red[:, : planes.shape[1] - 110].sum() > 3 * 50  # the spot in each of the three planes


# -------------------------------------------------------------------------------------------- MONAI


def test_monai_occlusion_sensitivity_agrees_on_the_lesion_model():
    """MONAI's map is the mean *occluded* score over the windows covering a voxel; occlude's is the mean drop
    (original - occluded). They coincide (map = original - MONAI's) with: mask_size = patch, overlap = 1 -
    stride/patch (MONAI's interval is int(mask * (1 - overlap))), mode = 0.0 (a constant: occlude's zero
    baseline), and the same score: MONAI's activate=True applies a sigmoid per output when the INPUT has one
    channel (it tests x.shape[1]), so it is given softmax explicitly, as occlude's auto head does for logits."""
    torch = pytest.importorskip("torch")
    monai_visualize = pytest.importorskip("monai.visualize")
    from occlude_cli.loaders.model import OnnxClassifier

    model = OnnxClassifier(LESION3D)

    class OnnxModule(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(model.run(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)))

    e = explain(model, LESION, patch=8, stride=4)
    assert e.score_kind == "softmax"
    occ_sens = monai_visualize.OcclusionSensitivity(
        OnnxModule(), mask_size=8, n_batch=16, verbose=False, mode=0.0, overlap=0.5, activate=lambda o: o.softmax(1)
    )
    with torch.no_grad():
        theirs, _ = occ_sens(torch.from_numpy(e.image.model_input[None]))
    theirs = np.asarray(theirs)[0]  # (classes, D, H, W): mean occluded probability
    original = e.occlusion.original_scores
    for c in range(2):
        np.testing.assert_allclose(original[c] - theirs[c], e.occlusion.attribution(c), atol=2e-6)


# ------------------------------------------------------------------------------- flags and metadata


def test_volume_index_picks_one_volume_of_a_4d_nifti_and_no_nifti_skips_the_map(tmp_path):
    source = nibabel.load(str(LESION))
    data = np.asarray(source.dataobj).astype(np.int16)
    four = nibabel.Nifti1Image(np.stack([np.zeros_like(data), data], axis=-1), source.affine)
    path = tmp_path / "four.nii.gz"
    nibabel.save(four, str(path))
    result = runner.invoke(app, ["run", str(LESION3D), str(path), "--out", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code == 3 and "volume_index" in result.output
    for name, flags in (("picked", ["--volume-index", "1"]), ("plain", [])):
        src = path if flags else LESION
        result = runner.invoke(
            app, ["run", str(LESION3D), str(src), "--out", str(tmp_path / name), "--quiet", "--no-nifti", *flags]
        )
        assert result.exit_code == 0, result.output
    stem = {"picked": "four", "plain": "lesion_volume"}
    np.testing.assert_array_equal(
        np.load(tmp_path / "picked" / "four.npy"), np.load(tmp_path / "plain" / "lesion_volume.npy")
    )
    for name in ("picked", "plain"):
        assert not (tmp_path / name / f"{stem[name]}.map.nii.gz").exists()


def test_zscore_metadata_of_a_model_is_honoured_and_flags_override_it(tmp_path):
    import onnx

    from occlude_cli.loaders.medical import normalize_range, zscore

    shape, box = (8, 8, 8), (2, 2, 2, 6, 6, 6)
    path = box_probe(tmp_path, shape, box)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(
        model, {"occlude.preprocess": json.dumps({"layout": "NCDHW", "zscore": {"mask_threshold": 0.7}})}
    )
    path.write_bytes(model.SerializeToString())
    data = np.random.default_rng(7).uniform(0.0, 2.0, size=shape).astype(np.float32)
    volume = Volume(data=data, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), kind="nifti")
    e = explain(path, volume, patch=4, score="raw")
    np.testing.assert_allclose(e.image.model_input[0], zscore(data, 0.7), rtol=1e-6)
    assert e.params["preprocessing"]["zscore_threshold"] == 0.7
    e = explain(path, volume, patch=4, score="raw", intensity_range=(0.0, 4.0))
    np.testing.assert_allclose(e.image.model_input[0], normalize_range(data, 0.0, 4.0), rtol=1e-6)


def test_resume_skips_a_finished_series_and_reruns_a_changed_one(tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(SERIES, folder)
    out = tmp_path / "out"
    args = ["run", str(LESION3D), str(folder), "--series", "--patch", "16", "--out", str(out), "--json", "--resume"]
    first = json.loads(runner.invoke(app, args).stdout)
    assert first["counts"]["ok"] == 1
    second = json.loads(runner.invoke(app, args).stdout)
    assert second["counts"]["skipped"] == 1
    ds = pydicom.dcmread(folder / "IM0010.dcm")
    pixels = ds.pixel_array.copy()
    pixels[10, 10] += 100
    ds.PixelData = pixels.tobytes()
    ds.save_as(folder / "IM0010.dcm")
    third = json.loads(runner.invoke(app, args).stdout)
    assert third["counts"]["ok"] == 1


def test_a_dynamic_3d_model_needs_a_size_and_takes_size_dxhxw(tmp_path):
    from occlude_cli import resolve_preprocessing
    from occlude_cli.loaders.model import OnnxClassifier

    model = OnnxClassifier(box_probe(tmp_path, (12, 10, 14), (3, 2, 5, 7, 6, 9), dynamic=True))
    with pytest.raises(OccludeError, match="dynamic sizes"):
        resolve_preprocessing(model)
    pre = resolve_preprocessing(model, size=(12, 10, 14))
    assert pre.size == (12, 10, 14) and pre.layout == "NCDHW"
    data = np.random.default_rng(8).uniform(0.5, 1.5, size=(24, 20, 28)).astype(np.float32)
    volume = Volume(data=data, spacing=(1.0, 1.0, 1.0), affine=np.eye(4), kind="nifti")
    e = explain(model, volume, preprocessing=pre, patch=4, score="raw")
    assert e.map.shape == (12, 10, 14)
    assert e.image.volume.data.shape == (24, 20, 28)  # resampled to the grid the size asked for


def test_medical_outputs_recorded_with_size_and_sha256_and_resume_redoes_damaged_ones(tmp_path):
    """Issue 31.2: a DICOM slice, a NIfTI volume and a DICOM series list every output with its size and sha256
    (as photos do); a truncated map.nii.gz, a truncated .npy and a deleted montage are redone on --resume,
    byte-identical to the first run, and the untouched input is skipped."""
    from occlude_cli.outputs.write import file_record

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(LESION, inputs / "vol.nii.gz")
    shutil.copy(CT_LESION, inputs / "slice.dcm")
    shutil.copy(LESION, inputs / "other.nii.gz")
    out = tmp_path / "out"
    args = ["run", str(CT2D), str(inputs / "slice.dcm"), "--out", str(out), "--no-timing", "--json", "--resume"]
    volume_args = ["run", str(LESION3D), str(inputs / "vol.nii.gz"), str(inputs / "other.nii.gz")]
    volume_args += ["--out", str(out), "--no-timing", "--json", "--resume", "--patch", "16"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, volume_args).exit_code == 0
    for stem, names in (
        ("vol", {"vol.map.nii.gz", "vol.montage.png", "vol.planes.png", "vol.npy"}),
        ("slice", {"slice.map.nii.gz", "slice.overlay.png", "slice.heatmap.png", "slice.npy"}),
    ):
        outputs = json.loads((out / f"{stem}.json").read_text())["outputs"]
        assert {o["name"] for o in outputs} == names
        for item in outputs:
            assert item == file_record(out / item["name"])  # name, bytes and sha256 of the file as it is
    # summary and manifest are the last job's (slice or volumes), not per-image files
    first = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(("summary", "manifest"))}
    nifti = out / "vol.map.nii.gz"
    nifti.write_bytes(first["vol.map.nii.gz"][:100])  # truncated
    (out / "slice.npy").write_bytes(first["slice.npy"][:-8])  # truncated
    (out / "other.montage.png").unlink()  # deleted
    redo = json.loads(runner.invoke(app, volume_args).stdout)
    assert {Path(r["path"]).name: r["status"] for r in redo["images"]} == {"vol.nii.gz": "ok", "other.nii.gz": "ok"}
    redo = json.loads(runner.invoke(app, args).stdout)
    assert [r["status"] for r in redo["images"]] == ["ok"]
    for name, content in first.items():
        assert (out / name).read_bytes() == content, name
    again = json.loads(runner.invoke(app, volume_args).stdout)
    assert again["counts"]["skipped"] == 2


# ---------------------------------------------------------------- stability and compare on medical inputs (31.3)


def linear_3d_model(tmp_path: Path, weights: np.ndarray, size=(6, 6, 6)) -> Path:
    """(N, 1, D, H, W) -> (N, 2) logits ``x . w_c + b_c``, with metadata taking real units as they are (no
    intensity transform): a model whose occlusion maps are computable by hand."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1),
        ],
        "linear3d",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, *size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.astype(np.float32).ravel()),
            helper.make_tensor("b", TensorProto.FLOAT, [2], [0.5, -0.5]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "occlude.preprocess", json.dumps({"layout": "NCDHW", "size": list(size)})
    path = tmp_path / "linear3d.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_stability_of_a_linear_3d_model_on_a_nifti_is_known_exactly(tmp_path):
    """Issue 31.3 (stability crashed with 'PreparedVolume' object has no attribute 'pixels'). Linear logits in
    real units, zero baseline: every noisy map is the clean map plus the occlusion map of the noise alone, the
    noise being the seeded uniform draws times amplitude x the input's range of values, in real units."""
    from occlude_cli.analyses.stability import noise_pixels, stability

    rng = np.random.default_rng(31)
    weights = rng.normal(size=(2, 216))
    model = linear_3d_model(tmp_path, weights)
    scan = tmp_path / "scan.nii.gz"
    nibabel.Nifti1Image(
        rng.uniform(-500, 800, (6, 6, 6)).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])
    ).to_filename(scan)

    def score(batch):
        return batch.reshape(len(batch), -1) @ weights.T + [0.5, -0.5]

    result = stability(str(model), scan, amplitude=4 / 255, trials=4, seed=9, patch=3, stride=2, score="raw", target=0)
    e = result.explanation
    x = e.image.model_input.astype(np.float64)
    grid = e.image.grid.data.astype(np.float64)
    np.testing.assert_array_equal(x[0], grid)  # no transform: the model sees real units
    clean = naive_map(x, score, (3, 3, 3), (2, 2, 2), 0)
    np.testing.assert_allclose(e.map, clean, rtol=1e-4, atol=1e-3)
    span = float(grid.max() - grid.min())
    assert result.noise() == {
        "amplitude": 4 / 255,
        "seed": 9,
        "distribution": "uniform, in real units on the model grid before the intensity transform, not clipped",
        "scale": pytest.approx(span),
        "scale_of": "range of the input's values on the model grid",
        "largest_change": pytest.approx(4 / 255 * span),
    }
    noise = noise_pixels(grid.shape, 4 / 255, 4, seed=9) * span / 255.0
    assert result.noisy_maps.shape == (4, 6, 6, 6)
    for k, trial in enumerate(result.trials):
        want = clean + naive_map(noise[k][None], score, (3, 3, 3), (2, 2, 2), 0)
        np.testing.assert_allclose(result.noisy_maps[k], want, rtol=1e-4, atol=2e-3)
        assert trial.target_score == pytest.approx(score((x + noise[k])[None])[0, 0], rel=1e-5)


def test_stability_cli_on_dicom_slices_series_and_nifti(tmp_path):
    """The real sample files and models: a DICOM slice with ct2d (noise in HU, a fraction of the model's
    1800 HU bone window; the patch test on the lesion), the DICOM series (--series) and the NIfTI volume with
    lesion3d; --box on a volume is one error line (exit 1) before anything runs."""
    out = tmp_path / "out"
    args = ["stability", str(CT2D), str(CT_LESION), "-o", str(out), "--trials", "2", "--box", "30,60,51,81"]
    result = runner.invoke(app, [*args, "--expect", "no lesion"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "ct_lesion.stability.json").read_text())
    assert doc["noise"]["scale"] == 1800.0 and doc["noise"]["scale_of"] == "window width"
    assert doc["noise"]["largest_change"] == pytest.approx(2 / 255 * 1800)
    assert doc["summary"]["spearman"]["min"] > 0.9 and doc["input"]["kind"] == "dicom"
    # the disc decides: occluding it gives "no lesion" back, keeping only it keeps "lesion"
    assert doc["patch_test"]["necessary"] and doc["patch_test"]["sufficient"] and doc["patch_test"]["restores"]
    with Image.open(out / "ct_lesion.stability.png") as png:
        assert png.size[0] > 1000
    for source, flags in ((SERIES, ["--series"]), (LESION, [])):
        result = runner.invoke(
            app, ["stability", str(LESION3D), str(source), "-o", str(out), "--trials", "2", "--patch", "16", *flags]
        )
        assert result.exit_code == 0, result.output
        assert "noisy copies (+-157 (0.00784 of the intensity range width))" in result.output
    doc = json.loads((out / "series.stability.json").read_text())
    assert doc["input"]["kind"] == "dicom-series" and len(doc["trials"]) == 2
    png = np.asarray(Image.open(out / "series.stability.png").convert("RGB")).astype(int)
    assert (np.abs(png[..., 0] - png[..., 2]) > 60).any()  # the map's colours over the grey slice
    refused = runner.invoke(app, ["stability", str(LESION3D), str(LESION), "-o", str(out), "--box", "1,1,5,5"])
    assert refused.exit_code == 1
    assert (
        refused.output.strip()
        == "error: box (the patch test) is x0,y0,x1,y1 in the pixels of a 2-D image: not available for 3-D volumes"
    )


def test_compare_on_a_dicom_slice_and_a_volume_with_their_own_maps(tmp_path):
    """Issue 31.3 (compare crashed the same way). The occlusion map compared with itself: correlation 1 and the
    same curves, on DICOM slices (2-D .npy) and on the NIfTI volume (3-D .npy in occlude's layout)."""
    ct_small = Path(pydicom.data.get_testdata_file("CT_small.dcm"))  # pydicom's own test file
    for model, source, patch in ((CT2D, CT_LESION, "8"), (CT2D, ct_small, "8"), (LESION3D, LESION, "16")):
        out = tmp_path / source.name
        run = runner.invoke(app, ["run", str(model), str(source), "-o", str(out), "--patch", patch, "-q"])
        assert run.exit_code == 0, run.output
        npy = next(out.glob("*.npy"))
        result = runner.invoke(
            app,
            ["compare", str(model), str(source), str(npy), "-o", str(out), "--patch", patch, "--steps", "8", "--json"],
        )
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert record["agreement"]["pearson"] == pytest.approx(1.0) and record["better"]["deletion"] == "tie"
        assert record["other_map"]["shape"] == list(np.load(npy).shape)
        ours, theirs = record["fidelity"]["maps"]["occlusion"], record["fidelity"]["maps"]["other"]
        assert theirs["infidelity"]["value"] == pytest.approx(ours["infidelity"]["value"], rel=1e-6)  # .npy: float32
        assert theirs["sufficiency"] == ours["sufficiency"] and theirs["completeness"] == ours["completeness"]


def test_compare_places_a_nifti_map_through_world_coordinates(tmp_path):
    """Another tool's map saved as NIfTI on the scan's grid (the lesion mask) lands on the model grid where the
    scan's own resampling puts it, whatever the file's orientation; a map elsewhere in the world is one line."""
    from occlude_cli.loaders.maps import map_on_model_grid, read_saliency_map

    e = explain(LESION3D, LESION, patch=16)
    mask = read_nifti(LESION_MASK)
    expected = resample(mask, e.image.grid.data.shape).data  # the same field of view, as the scan is resampled
    placed = map_on_model_grid(read_saliency_map(LESION_MASK, dims=(3,)), e.image)
    np.testing.assert_allclose(placed, expected, atol=1e-5)
    # the same map stored transposed and flipped (another orientation, its affine adjusted) lands the same
    img = nibabel.load(str(LESION_MASK))
    data = np.asarray(img.dataobj, dtype=np.float32)
    moved = np.transpose(data[::-1], (2, 0, 1))  # moved[a, b, c] = data[n - 1 - b, c, a]
    index = np.array([[0, -1, 0, data.shape[0] - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    other = tmp_path / "other.nii.gz"
    nibabel.Nifti1Image(moved, img.affine @ index).to_filename(other)
    np.testing.assert_allclose(map_on_model_grid(read_saliency_map(other, dims=(3,)), e.image), expected, atol=1e-5)
    far = tmp_path / "far.nii.gz"
    shifted = img.affine.copy()
    shifted[:3, 3] += 1000.0
    nibabel.Nifti1Image(data, shifted).to_filename(far)
    result = runner.invoke(app, ["compare", str(LESION3D), str(LESION), str(far), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "does not cover the model grid" in result.output
    result = runner.invoke(
        app, ["compare", str(LESION3D), str(LESION), str(LESION_MASK), "-o", str(tmp_path / "o"), "--fractions", ""]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "lesion_volume.compare.png").exists()  # the run's STEM: .nii.gz is one suffix


def test_compare_with_a_map_of_the_wrong_kind_is_one_error_line(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((32, 32)))
    np.save(tmp_path / "cube.npy", np.zeros((8, 8, 8)))
    cases = [
        ((LESION3D, LESION, tmp_path / "flat.npy"), "must be 3-D (D, H, W), got shape (32, 32)"),
        ((CT2D, CT_LESION, tmp_path / "cube.npy"), "must be 2-D (H, W), got shape (8, 8, 8)"),
        ((CT2D, CT_LESION, LESION_MASK), "is NIfTI, a volume's map: this model takes 2-D images"),
        ((LESION3D, LESION, ROOT / "sample_images" / "digit_0.png"), "a volume's map must be a (D, H, W) .npy"),
    ]
    for (model, source, other), words in cases:
        result = runner.invoke(app, ["compare", str(model), str(source), str(other), "-o", str(tmp_path / "o")])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output


def test_deletion_and_insertion_curves_of_a_volume_equal_the_naive_loop():
    """The curves behind compare's AUCs now take three spatial axes: voxels replaced most important first."""
    from occlude_cli.core.metrics import deletion_curve, insertion_curve, step_counts

    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 4, 5, 6))
    base = rng.normal(size=x.shape)
    importance = rng.normal(size=(4, 5, 6))
    weights = rng.normal(size=(3, 120))

    def score(batch):
        return batch.reshape(len(batch), -1) @ weights.T

    order = np.argsort(-importance.ravel(), kind="stable")
    counts = step_counts(120, 7)
    for curve, start, source in (
        (deletion_curve(x, base, importance, score, 1, steps=7, spatial_axes=(1, 2, 3), batch_size=3), x, base),
        (insertion_curve(x, base, importance, score, 1, steps=7, spatial_axes=(1, 2, 3), batch_size=3), base, x),
    ):
        want = []
        for count in counts:
            y = start.reshape(1, -1).copy()
            y[:, order[:count]] = source.reshape(1, -1)[:, order[:count]]
            want.append(score(y)[0, 1])
        np.testing.assert_allclose(curve.scores, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(curve.fractions, counts / 120)
