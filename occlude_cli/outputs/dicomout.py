"""DICOM outputs of a medical explanation (``--dicom-out``), written with highdicom so that a PACS or a DICOM
viewer files them with the scan and shows them beside it:

* ``STEM.pm.dcm``: the map as a Parametric Map (float32 drops, one frame per slice of the input's own grid,
  with the input's geometry), in the scan's study and frame of reference, referencing its series and slices;
* ``STEM.sc.dcm``: the picture (a slice's overlay, a volume's montage) as a Secondary Capture in that study;
* for a NIfTI input (no DICOM scan to reference), ``STEM.scan.dcm``: the scan itself as a legacy-converted
  enhanced multi-frame image (the modality the model declares, MR otherwise) in a new study, which the
  other two reference.

UIDs of the new objects (and of a NIfTI scan's new study) are derived from the result's fingerprint, and their
dates are the study's (none: 1970-01-01), so a rerun writes the same bytes. In a de-identifying run the
patient and study attributes copied from the scan are replaced (the pseudonym as name and ID, dates and
other text emptied) and every UID is replaced as in the JSON (:mod:`.provenance`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._version import __version__
from ..analyses.medical import VolumeExplanation
from ..errors import OccludeError
from ..loaders.medical import MEDICAL_EXTRA_HINT
from . import provenance
from .write import _undo as undo_writes
from .write import atomic_write_bytes

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_MODALITY_CLASSES = {"CT": "LegacyConvertedEnhancedCTImage", "PT": "LegacyConvertedEnhancedPETImage"}
_STORAGE = {"CT": "1.2.840.10008.5.1.4.1.1.2", "PT": "1.2.840.10008.5.1.4.1.1.128", "MR": "1.2.840.10008.5.1.4.1.1.4"}
_HIGHDICOM_ROOT = "1.2.826.0.1.3680043.10.511."  # UIDs highdicom makes up (random ones among them)
_EMPTIED = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise OccludeError(f"DICOM outputs need highdicom; {MEDICAL_EXTRA_HINT}", params=("dicom_out",)) from None
    return highdicom


class _Uids:
    """Deterministic UIDs for one result's new objects (``2.25.`` from the seed and a name)."""

    def __init__(self, seed: str) -> None:
        self.seed = seed

    def __call__(self, name: str) -> str:
        digest = hashlib.sha256(f"occlude\0{self.seed}\0{name}".encode("utf-8", "surrogateescape")).hexdigest()
        return "2.25." + str(int(digest[:32], 16))


def _grid(volume) -> Tuple[np.ndarray, np.ndarray]:
    """The input's voxel grid as (slices, rows, columns) and its index -> LPS affine (a slice: one plane)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    if volume.data.ndim == 2:
        return np.asarray(volume.data)[None], _LPS @ affine[:, [2, 0, 1, 3]]
    return np.asarray(volume.data), _LPS @ affine


def _plane(ds: Any, lps: np.ndarray, index: int) -> None:
    """One slice's Image Plane attributes from the grid's LPS affine."""
    rows, cols = lps[:3, 1], lps[:3, 2]
    ds.ImagePositionPatient = [round(float(v), 6) for v in (lps @ [index, 0.0, 0.0, 1.0])[:3]]
    ds.ImageOrientationPatient = [
        round(float(v), 8) for v in np.r_[cols / np.linalg.norm(cols), rows / np.linalg.norm(rows)]
    ]
    ds.PixelSpacing = [round(float(np.linalg.norm(rows)), 6), round(float(np.linalg.norm(cols)), 6)]
    ds.SliceThickness = round(float(np.linalg.norm(lps[:3, 0])), 6) or 1.0


def _shared(facts: Dict[str, str], pseudonym: Optional[str]) -> Dict[str, str]:
    """Patient and study attributes for the derived objects; de-identified when a run de-identifies."""
    shared = dict(facts)
    active = provenance.active()
    if active is not None:
        for key, value in list(shared.items()):
            shared[key] = provenance.new_uid(value) if key.endswith("UID") and value else value
        for key in _EMPTIED + ("ReferringPhysicianName",):
            shared[key] = ""
        shared["PatientName"] = shared["PatientID"] = pseudonym or "anonymous"
    return shared


def _references(volume, grid: np.ndarray, lps: np.ndarray, pseudonym: Optional[str]) -> List[Any]:
    """Datasets naming the scan's slices (their UIDs, geometry and the patient and study): what the derived
    objects reference and copy; pixels are not needed."""
    from pydicom.dataset import Dataset

    assert volume.dicom is not None
    shared = _shared(volume.dicom["shared"], pseudonym)
    out = []
    for index, (sop_class, sop_instance) in enumerate(volume.dicom["instances"][: grid.shape[0]]):
        ds = Dataset()
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = provenance.new_uid(sop_instance) if provenance.active() else sop_instance
        for key, value in shared.items():
            setattr(ds, key, value)
        ds.Rows, ds.Columns = int(grid.shape[1]), int(grid.shape[2])
        _plane(ds, lps, index if len(volume.dicom["instances"]) > 1 else 0)
        out.append(ds)
    return out


def _scan_object(volume, grid: np.ndarray, lps: np.ndarray, uids: _Uids, modality: str, pseudonym: Optional[str]):
    """A NIfTI scan as DICOM: single-frame slices in memory, converted to one legacy-converted enhanced
    image (real units stored as int16 with a rescale when they fit, else scaled to uint16)."""
    hd = _highdicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    lo, hi = float(np.min(grid)), float(np.max(grid))
    whole = np.array_equal(grid, np.round(grid)) and -32768 <= lo and hi <= 32767
    slope, intercept = (1.0, 0.0) if whole else (max(hi - lo, 1e-12) / 65535.0, lo)
    stored = np.rint(grid).astype(np.int16) if whole else np.rint((grid - lo) / slope).astype(np.uint16)
    name = pseudonym or "occlude^nifti"
    slices = []
    for index in range(grid.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = _STORAGE.get(modality, _STORAGE["MR"]), uids(f"slice {index}")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids("study"), uids("scan"), uids("frame")
        ds.Modality, ds.PatientName, ds.PatientID = modality, name, name
        for key in _EMPTIED + ("ReferringPhysicianName",):
            setattr(ds, key, "")
        ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = 1, index + 1, "occlude"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.Rows, ds.Columns = int(grid.shape[1]), int(grid.shape[2])
        _plane(ds, lps, index)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if whole else 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:.6g}", f"{max(hi - lo, 1.0):.6g}"
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
            ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 0, 0, 1
        ds.PixelData = np.ascontiguousarray(stored[index]).tobytes()
        slices.append(ds)
    kind = getattr(hd.legacy, _MODALITY_CLASSES.get(modality, "LegacyConvertedEnhancedMRImage"))
    converted = kind(
        legacy_datasets=slices,
        series_instance_uid=uids("scan series"),
        series_number=1,
        sop_instance_uid=uids("scan"),
        instance_number=1,
    )
    order = {uids(f"slice {index}"): index for index in range(grid.shape[0])}
    for series in converted.get("ReferencedSeriesSequence", []):  # built from a set: put in slice order
        items = sorted(series.ReferencedInstanceSequence, key=lambda i: order.get(str(i.ReferencedSOPInstanceUID), 0))
        series.ReferencedInstanceSequence = items
    return converted


_DATES = ("ContentDate", "SeriesDate", "InstanceCreationDate", "AcquisitionDate", "DateOfSecondaryCapture")
_TIMES = ("ContentTime", "SeriesTime", "InstanceCreationTime", "AcquisitionTime", "TimeOfSecondaryCapture")
_DATETIMES = ("AcquisitionDateTime", "ContributionDateTime", "FrameAcquisitionDateTime", "FrameReferenceDateTime")


def _dated(ds: Any, date: str, time: str) -> None:
    """The object's own dates and times (when it was made, at any depth) set to the study's, so that a rerun
    writes the same bytes."""
    for element in ds.iterall():
        if element.keyword in _DATES:
            element.value = date
        elif element.keyword in _TIMES:
            element.value = time
        elif element.keyword in _DATETIMES:
            element.value = date + time


def _fixed_uids(ds: Any, uids: _Uids, name: str) -> None:
    """UIDs highdicom generates at random (a dimension organization's) replaced by ones derived from the
    result's seed, in the order they are met, the same value always by the same replacement."""
    chosen: Dict[str, str] = {}
    for element in ds.iterall():
        if element.VR == "UI" and isinstance(element.value, str) and element.value.startswith(_HIGHDICOM_ROOT):
            element.value = chosen.setdefault(element.value, uids(f"{name} generated {len(chosen)}"))


def _encoded(ds: Any) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_outputs(e: VolumeExplanation, out_dir, stem: str, picture: bytes, seed: str) -> List[Path]:
    """STEM.pm.dcm, STEM.sc.dcm (and STEM.scan.dcm for a NIfTI input): see the module docstring. ``picture``:
    the PNG the Secondary Capture holds; ``seed``: what the new objects' UIDs derive from (the fingerprint)."""
    hd = _highdicom()
    volume = e.prepared.volume
    grid, lps = _grid(volume)
    uids = _Uids(seed)
    out_dir = Path(out_dir)
    pseudonym = Path(str(e.prepared.path)).name if provenance.active() is not None and e.prepared.path else None
    if pseudonym is not None:
        pseudonym = provenance.active().scrub_text(str(e.prepared.path))  # type: ignore[union-attr]
    written: List[Path] = []
    try:
        _write_dicom_objects(hd, e, out_dir, stem, picture, (volume, grid, lps, uids, pseudonym), written)
    except BaseException:
        undo_writes(written)  # a later object that could not be written (full disk): none of them is left
        raise
    return written


def _write_dicom_objects(hd, e, out_dir: Path, stem: str, picture: bytes, context: tuple, written: List[Path]) -> None:
    """The objects of :func:`write_dicom_outputs`, each appended to ``written`` once it is in place."""
    volume, grid, lps, uids, pseudonym = context
    with warnings.catch_warnings(), _quiet("highdicom"):
        warnings.simplefilter("ignore")
        if volume.dicom is not None:
            sources = _references(volume, grid, lps, pseudonym)
        else:
            modality = str(e.prepared.preprocessing.modality or "MR")
            scan = _scan_object(volume, grid, lps, uids, modality if modality in _STORAGE else "MR", pseudonym)
            _dated(scan, "19700101", "000000")
            _fixed_uids(scan, uids, "scan")
            written.append(atomic_write_bytes(out_dir / f"{stem}.scan.dcm", _encoded(scan)))
            sources = [scan]
        date = str(sources[0].get("StudyDate", "") or "19700101")
        time = str(sources[0].get("StudyTime", "") or "000000")
        pm = _parametric_map(hd, e, sources, lps, uids)
        _dated(pm, date, time)
        _fixed_uids(pm, uids, "map")
        written.append(atomic_write_bytes(out_dir / f"{stem}.pm.dcm", _encoded(pm)))
        sc = _secondary_capture(hd, sources[0], picture, uids, e)
        _dated(sc, date, time)
        _fixed_uids(sc, uids, "picture")
        written.append(atomic_write_bytes(out_dir / f"{stem}.sc.dcm", _encoded(sc)))


def _parametric_map(hd: Any, e: VolumeExplanation, sources: List[Any], lps: np.ndarray, uids: _Uids):
    """The map on the input's own grid as a float32 Parametric Map (NaN, not computed, as 0)."""
    values = np.nan_to_num(e.map_on_original().astype(np.float32), nan=0.0)
    values = values[None] if values.ndim == 2 else values
    low, high = float(values.min()), float(values.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="DROP",
        lut_explanation=f"occlusion: drop of the target's {e.score_kind} score",
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
        value_range=(low, high if high > low else low + 1.0),
        slope=1,
        intercept=0,
    )
    limit = max(abs(low), abs(high), 1e-12)
    return hd.pm.ParametricMap(
        source_images=sources,
        **_frames(hd, values, lps),
        series_instance_uid=uids("map series"),
        series_number=901,
        sop_instance_uid=uids("map"),
        instance_number=1,
        manufacturer="occlude",
        manufacturer_model_name="occlude",
        software_versions=__version__,
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        window_center=0.0,
        window_width=2 * limit,
        content_description="occlusion sensitivity map",
        content_label="OCCLUSION",
    )


def _frames(hd: Any, values: np.ndarray, lps: np.ndarray) -> Dict[str, Any]:
    """The map's pixels and geometry for highdicom: a Volume for an orthogonal grid; for a sheared one (a
    gantry-tilted series, a sheared NIfTI), which a Volume cannot hold, the frames with each one's position
    (as the scan's slices are), the rows' and columns' orientation and spacing."""
    from pydicom.dataset import Dataset

    columns = lps[:3, :3] / np.linalg.norm(lps[:3, :3], axis=0)
    if np.allclose(columns.T @ columns, np.eye(3), atol=1e-6):
        return {"pixel_array": hd.Volume(values, lps, coordinate_system="PATIENT")}
    plane = Dataset()
    _plane(plane, lps, 0)
    positions = [
        hd.PlanePositionSequence("PATIENT", [round(float(v), 6) for v in (lps @ [k, 0.0, 0.0, 1.0])[:3]])
        for k in range(values.shape[0])
    ]
    return {
        "pixel_array": values,
        "plane_orientation": hd.PlaneOrientationSequence("PATIENT", list(plane.ImageOrientationPatient)),
        "plane_positions": positions,
        "pixel_measures": hd.PixelMeasuresSequence(list(plane.PixelSpacing), float(plane.SliceThickness)),
    }


def _secondary_capture(hd: Any, source: Any, picture: bytes, uids: _Uids, e: VolumeExplanation):
    """The picture as an RGB Secondary Capture in the scan's study (its orientation: the slices' rows and
    columns, as the picture shows them)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(picture)).convert("RGB"))
    return hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids("picture series"),
        sop_instance_uid=uids("picture"),
        series_number=902,
        instance_number=1,
        manufacturer="occlude",
        patient_orientation=_orientation(e),
    )


def _orientation(e: VolumeExplanation) -> Tuple[str, str]:
    """DICOM PatientOrientation of the pictures (toward the last column, toward the last row)."""
    from ..pictures.montage import orientation_markers

    volume = e.prepared.volume
    affine = volume.affine if volume.data.ndim == 2 else e.prepared.grid.affine
    axes = (0, 1) if volume.data.ndim == 2 else (1, 2)
    _, bottom, _, right = orientation_markers(affine, *axes)
    words = {"S": "H", "I": "F"}
    return words.get(right, right), words.get(bottom, bottom)


class _quiet:
    """highdicom's log lines about attributes a converted object leaves out: not for the terminal."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        self.logger.setLevel(self.level)
