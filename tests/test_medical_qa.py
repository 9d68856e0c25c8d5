"""A newcomer's QA pass on the medical paths and folder runs: each test is a defect that pass found, on real
files made here (pydicom, nibabel, highdicom), the real CLI and the real sample models.

- intensities that are not finite once in float32 (a huge RescaleSlope or scl_slope, float64 voxels beyond the
  float32 range) are one error line, never infinities handed to the model;
"""

from __future__ import annotations


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
