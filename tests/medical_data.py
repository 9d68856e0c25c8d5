"""Medical test data made in the test session from the repository's real files: the lesion volume as a DICOM
series, a study folder of series, DICOM SEG (highdicom) and RT-STRUCT (pydicom) objects drawn on a series, a
toy atlas, a sheared NIfTI, a copy of a sample model with other metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDICAL = ROOT / "sample_images" / "medical"
LESION = MEDICAL / "lesion_volume.nii.gz"
LESION_MASK = MEDICAL / "lesion_volume.mask.nii.gz"
CT_LESION = MEDICAL / "ct_lesion.dcm"
SERIES = MEDICAL / "series"
LESION3D = ROOT / "sample_models" / "lesion3d.onnx"
CT2D = ROOT / "sample_models" / "ct2d.onnx"
# attributes highdicom copies from a source image (type 2 in the patient and study modules)
TYPE2 = ("PatientBirthDate", "PatientSex", "StudyTime", "ReferringPhysicianName", "AccessionNumber", "StudyID")


def lesion_series(folder: Path, series_uid: Optional[str] = None, frame_uid: Optional[str] = None) -> Path:
    """The sample series (anatomical.nii as DICOM) with the lesion volume's voxels in its slices (the same
    grid, so the series reads as the lesion volume), the type 2 attributes filled in, optionally another
    series (and frame of reference) UID."""
    import pydicom

    from occlude_cli.loaders.dicom import read_dicom, read_dicom_series
    from occlude_cli.loaders.nifti import read_nifti

    shutil.copytree(SERIES, folder)
    plain = read_dicom_series(SERIES).data
    lesion = read_nifti(LESION).data
    for file in sorted(folder.iterdir()):
        ds = pydicom.dcmread(file)
        slice_ = read_dicom(file).data
        (d,) = [i for i in range(plain.shape[0]) if np.array_equal(plain[i], slice_)]
        ds.PixelData = np.rint(lesion[d]).astype(np.int16).tobytes()
        for keyword in TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if series_uid is not None:
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = f"{series_uid}.{d + 1}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if frame_uid is not None:
            ds.FrameOfReferenceUID = frame_uid
        ds.save_as(file)
    return folder


def series_datasets(folder: Path) -> list:
    """The slices of a series folder, sorted along the slice normal (as occlude reads them), pixels loaded."""
    import pydicom

    datasets = [pydicom.dcmread(f) for f in sorted(folder.iterdir()) if f.suffix == ".dcm"]
    normal = np.cross(*np.reshape([float(v) for v in datasets[0].ImageOrientationPatient], (2, 3)))
    return sorted(datasets, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))


def lesion_mask_zhw() -> np.ndarray:
    """The lesion's ground-truth mask in occlude's layout (d, h, w) on the volume's own grid."""
    from occlude_cli.loaders.nifti import read_nifti

    return read_nifti(LESION_MASK).data > 0


def make_seg(series: Path, labels: np.ndarray, path: Path, names: Dict[int, str]) -> Path:
    """A DICOM SEG (highdicom, binary, one segment per label) of ``labels`` ((d, h, w) on the series' grid)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = series_datasets(series)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, name in sorted(names.items())
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=50,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path


def make_rtstruct(series: Path, mask: np.ndarray, path: Path, name: str = "lesion") -> Path:
    """An RT-STRUCT whose one ROI outlines ``mask`` ((d, h, w) on the series' grid) slice by slice: on each
    slice, the closed polygon through the mask pixels' outer corners (a rectangle hull per connected row run
    is not needed: the test masks are convex, so the boundary of their pixel squares is traced)."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = series_datasets(series)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID"):
        setattr(ds, keyword, sources[0].get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid()
    frame = Dataset()
    frame.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    ds.ReferencedFrameOfReferenceSequence = [frame]
    roi = Dataset()
    roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = 1, name, frame.FrameOfReferenceUID
    ds.StructureSetROISequence = [roi]
    contours = []
    for d, source in enumerate(sources):
        if not mask[d].any():
            continue
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        points = _outline(mask[d], source)
        contour.NumberOfContourPoints = len(points) // 3
        contour.ContourData = [f"{v:.4f}" for v in points]
        contours.append(contour)
    item = Dataset()
    item.ReferencedROINumber = 1
    item.ContourSequence = contours
    ds.ROIContourSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).Modality == "RTSTRUCT"
    return path


def _outline(plane: np.ndarray, source) -> list:
    """The polygon (LPS mm, flattened x, y, z) around a convex set of pixels: for each row of the set its left
    and right pixel edges, down one side and up the other, through pixel corners (half a pixel out)."""
    rows = np.flatnonzero(plane.any(axis=1))
    left = [(r, np.flatnonzero(plane[r]).min() - 0.5) for r in rows]
    right = [(r, np.flatnonzero(plane[r]).max() + 0.5) for r in rows]
    corners = []
    for r, c in left:
        corners += [(r - 0.5, c), (r + 0.5, c)]
    for r, c in reversed(right):
        corners += [(r + 0.5, c), (r - 0.5, c)]
    origin = np.array([float(v) for v in source.ImagePositionPatient])
    cosines = np.array([float(v) for v in source.ImageOrientationPatient]).reshape(2, 3)
    spacing = [float(v) for v in source.PixelSpacing]
    points = []
    for r, c in corners:  # DICOM: x = origin + col * dc * X + row * dr * Y
        points += list(origin + c * spacing[1] * cosines[0] + r * spacing[0] * cosines[1])
    return points


def toy_atlas(path: Path) -> Path:
    """A label map on the lesion volume's grid: 1 the patient's right half, 2 the left, 3 the lesion, with
    its names in NAME.txt."""
    import nibabel

    image = nibabel.load(str(LESION))
    lesion = np.asarray(nibabel.load(str(LESION_MASK)).dataobj) > 0
    ijk = np.indices(image.shape).reshape(3, -1)
    x = (image.affine[:3, :3] @ ijk + image.affine[:3, 3:4])[0].reshape(image.shape)
    labels = np.where(x < 0, 1, 2).astype(np.int16)
    labels[lesion] = 3
    nibabel.save(nibabel.Nifti1Image(labels, image.affine), str(path))
    stem = path.name[: -len(".nii.gz")]
    path.with_name(stem + ".txt").write_text("# index name\n1 right hemisphere\n2 left hemisphere\n3 lesion\n")
    return path


def model_with_metadata(source: Path, path: Path, **changes) -> Path:
    """A copy of a sample model whose ``occlude.preprocess`` metadata has ``changes`` (None removes a key)."""
    import onnx

    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key == "occlude.preprocess":
            meta = json.loads(prop.value)
            for key, value in changes.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
            prop.value = json.dumps(meta)
    onnx.save(model, str(path))
    return path


def sheared_nifti(path: Path, shear: float = 0.3) -> Path:
    """The lesion volume with a sheared affine (x grows with j too): no quaternion can hold it."""
    import nibabel

    image = nibabel.load(str(LESION))
    affine = image.affine.copy()
    affine[0, 1] = shear * affine[1, 1]
    out = nibabel.Nifti1Image(np.asarray(image.dataobj), affine)
    out.set_sform(affine, code=1)
    out.set_qform(affine, code=0)
    nibabel.save(out, str(path))
    return path


def all_text_outputs(folder: Path, suffixes: Sequence[str] = (".json", ".csv", ".html")) -> Dict[Path, str]:
    """Every text file under ``folder`` (what a de-identified run must keep clean)."""
    return {p: p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.suffix in suffixes}
