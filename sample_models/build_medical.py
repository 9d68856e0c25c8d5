"""Build occlude's medical sample data and the two small medical sample models, with ground truth.

    python sample_models/build_medical.py            # writes into the repository (sample_images/, sample_models/)
    python sample_models/build_medical.py --out DIR  # writes elsewhere (to compare with the committed files)

What it writes (deterministic: two builds gave byte-identical files; training takes about 55 s + 50 s of CPU
time, i.e. under a minute per model on 2 free cores; the whole build 2 minutes of CPU):

* ``sample_images/medical/``: copies of pydicom's ``CT_small.dcm`` and ``MR_small.dcm`` and nibabel's
  ``anatomical.nii`` (test files shipped inside the installed packages; see the README there for provenance,
  licences and checksums); ``series/``: ``anatomical.nii`` split into 25 axial DICOM slices with correct
  ImagePositionPatient / ImageOrientationPatient / PixelSpacing; ``lesion_volume.nii.gz`` (anatomical.nii
  with a synthetic bright spherical lesion at a known place) and its mask ``lesion_volume.mask.nii.gz``;
  ``ct_lesion.dcm`` (CT_small with a synthetic hyperdense disc at a known place).
* ``sample_models/lesion3d.onnx``: a 3-D CNN ``(N, 1, 32, 32, 32) -> (N, 2)`` logits (no lesion / lesion)
  trained on random crops of anatomical.nii resampled to 32^3, half of them with a lesion inserted.
* ``sample_models/ct2d.onnx``: a 2-D CNN ``(N, 1, 64, 64) -> (N, 2)`` trained the same way on crops of
  CT_small (and anatomical.nii slices mapped to pseudo-HU) windowed with the ``bone`` preset.

Each model's held-out accuracy (fresh samples, another seed) is printed and must be >= 0.9, and a naive
occlusion loop (numpy + onnxruntime, written out here) over the lesion test input must peak inside the lesion;
otherwise the build fails. Preprocessing goes in ``occlude.preprocess`` (JSON) and labels in ``occlude.labels``.

Needs: torch==2.13.0 (CPU), onnx, onnxscript, onnxruntime, pydicom, nibabel, scipy.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import onnxruntime as ort
import pydicom
import torch
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from occlude_cli.loaders.medical import (  # (after sys.path: the repository must be importable)
    Volume,
    apply_window,
    normalize_range,
    read_dicom,
    read_nifti,
    resample,
)

SEED = 12
LABELS = ["no lesion", "lesion"]
# 3-D model: raw anatomical.nii units clipped to this range and scaled to 0..1 (tissue <= ~0.64, lesion 0.85..1).
RANGE_3D = (0.0, 20000.0)
GRID_3D = (32, 32, 32)
LESION_3D = {"ijk": (24, 28, 8), "radius_vox": 3.0, "value": 18000.0}  # in anatomical.nii's own voxel axes
# 2-D model: HU windowed with the "bone" preset (centre 400, width 1800): -500..1300 HU -> 0..1.
WINDOW_2D = (400.0, 1800.0)
GRID_2D = (64, 64)
LESION_2D = {"row": 70, "col": 40, "radius_px": 8.0, "add_hu": 700.0}  # in CT_small's pixel grid (128x128)
ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


def log(message: str) -> None:
    print(f"[build-medical] {message}", flush=True)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"[build-medical] FAILED: {message}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ sample data


def copy_package_files(medical: Path) -> None:
    """Copy the real test files shipped inside pydicom and nibabel (byte for byte)."""
    medical.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_testdata_file("CT_small.dcm"), medical / "CT_small.dcm")
    shutil.copyfile(get_testdata_file("MR_small.dcm"), medical / "MR_small.dcm")
    shutil.copyfile(ANATOMICAL, medical / "anatomical.nii")


def _uid(*parts: str) -> str:
    """A deterministic DICOM UID (pydicom's prefix + a hash of the parts)."""
    return generate_uid(entropy_srcs=["occlude-sample", *parts])


def write_series(folder: Path) -> None:
    """Split anatomical.nii into axial MR DICOM slices with geometry equal to the NIfTI's.

    The Volume layout of read_nifti (axis 0 inferior->superior, 1 anterior->posterior, 2 right->left) is the
    layout of an axial DICOM series, so slice d of the reoriented volume is DICOM slice d with
    ImagePositionPatient = affine @ (d, 0, 0) converted from RAS to LPS.
    """
    vol = read_nifti(ANATOMICAL)
    raw = np.asarray(vol.data)
    require(np.array_equal(raw, np.round(raw)) and raw.min() >= -32768 and raw.max() <= 32767, "not int16 data")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.dcm"):
        old.unlink()
    lps = np.diag([-1.0, -1.0, 1.0])
    row_dir = lps @ (vol.affine[:3, 2] / vol.spacing[2])  # increasing column index w
    col_dir = lps @ (vol.affine[:3, 1] / vol.spacing[1])  # increasing row index h
    study, series, frame = _uid("study"), _uid("series"), _uid("frame")
    for d in range(raw.shape[0]):
        position = lps @ (vol.affine @ np.array([d, 0.0, 0.0, 1.0]))[:3]
        sop = _uid("slice", str(d))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Sample^Anatomical", "occlude-sample"
        ds.StudyDate = ds.SeriesDate = "20000101"
        ds.SeriesDescription = "nibabel anatomical.nii as an axial DICOM series (occlude sample)"
        ds.SeriesNumber, ds.InstanceNumber = 1, d + 1
        ds.ImagePositionPatient = [float(f"{v:.4f}") for v in position]
        ds.ImageOrientationPatient = [float(f"{v:.6f}") for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(vol.spacing[1]), float(vol.spacing[2])]
        ds.SliceThickness = ds.SpacingBetweenSlices = float(vol.spacing[0])
        ds.Rows, ds.Columns = raw.shape[1], raw.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = raw[d].astype("<i2").tobytes()
        ds.save_as(str(folder / f"IM{d + 1:04d}.dcm"), enforce_file_format=True)


def sphere_weight(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    """Soft (1-voxel anti-aliased edge) ball indicator in 0..1 on a voxel grid."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    return np.clip(radius + 0.5 - dist, 0.0, 1.0)


def write_lesion_volume(medical: Path) -> None:
    """anatomical.nii with a bright ball at LESION_3D (its own voxel axes), and the ball's mask."""
    img = nib.load(str(ANATOMICAL))
    raw = np.asarray(img.dataobj).astype(np.float64)
    w = sphere_weight(raw.shape, np.asarray(LESION_3D["ijk"], float), LESION_3D["radius_vox"])
    out = raw * (1 - w) + LESION_3D["value"] * w
    mask = (w >= 0.5).astype(np.uint8)
    for data, name, dtype in ((out, "lesion_volume.nii.gz", np.int16), (mask, "lesion_volume.mask.nii.gz", np.uint8)):
        new = nib.Nifti1Image(np.round(data).astype(dtype), img.affine)
        new.header.set_xyzt_units("mm")
        new.set_qform(img.affine, code=1)
        new.set_sform(img.affine, code=1)
        (medical / name).write_bytes(gzip.compress(new.to_bytes(), mtime=0))


def write_ct_lesion(medical: Path) -> None:
    """CT_small with a hyperdense disc added (+LESION_2D["add_hu"] HU, soft edge) at a known row/column."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    raw = ds.pixel_array.astype(np.float64)
    w = sphere_weight(raw.shape, np.array([LESION_2D["row"], LESION_2D["col"]], float), LESION_2D["radius_px"])
    raw = raw + w * LESION_2D["add_hu"] / float(ds.RescaleSlope)
    ds.PixelData = np.round(raw).astype("<i2").tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid("ct-lesion")
    ds.SeriesInstanceUID = _uid("ct-lesion-series")
    ds.SeriesDescription = "CT_small with a synthetic hyperdense lesion (occlude sample)"
    ds.save_as(str(medical / "ct_lesion.dcm"), enforce_file_format=True)


# ------------------------------------------------------------------------------------------ training data


def random_sample(
    rng: np.random.Generator, base: np.ndarray, grid: tuple[int, ...], lesion: bool, kind: str
) -> np.ndarray:
    """One training input on the model grid (0..1): random crop, flip, gain, noise, optional lesion."""
    ndim = base.ndim
    sizes = [int(rng.integers(max(8, int(0.7 * n)), n + 1)) for n in base.shape]
    starts = [int(rng.integers(0, n - s + 1)) for n, s in zip(base.shape, sizes)]
    crop = base[tuple(slice(a, a + s) for a, s in zip(starts, sizes))].astype(np.float64)
    if kind == "3d":
        crop = crop * rng.uniform(0.95, 1.05) + rng.normal(0, 250, crop.shape)
    else:
        crop = crop + rng.uniform(-40, 40) + rng.normal(0, 15, crop.shape)
    if lesion:
        scale = [s / g for s, g in zip(sizes, grid)]  # source voxels per model voxel
        if kind == "3d":
            radius = rng.uniform(2.0, 3.5)  # source voxels (4..7 mm)
            tissue = crop > 6000
        else:
            radius = rng.uniform(4.0, 8.0) * float(np.mean(scale))  # about 4..8 model pixels
            tissue = crop > -300
        margin = [int(np.ceil(radius)) + 1 for _ in range(ndim)]
        candidates = np.argwhere(tissue)
        inside = np.all((candidates >= margin) & (candidates < np.array(crop.shape) - margin), axis=1)
        candidates = candidates[inside] if inside.any() else np.argwhere(np.ones(crop.shape, bool))
        centre = candidates[int(rng.integers(len(candidates)))] + rng.uniform(-0.5, 0.5, ndim)
        w = sphere_weight(crop.shape, centre, radius)
        if kind == "3d":
            crop = crop * (1 - w) + rng.uniform(17000, 20000) * w
        else:
            crop = crop + rng.uniform(400, 800) * w
    if rng.random() < 0.5:
        crop = crop[..., ::-1]
    vol = Volume(np.ascontiguousarray(crop, dtype=np.float32), (1.0,) * ndim, np.eye(4), kind)
    data = resample(vol, grid, order=1).data
    return normalize_range(data, *RANGE_3D) if kind == "3d" else apply_window(data, *WINDOW_2D)


def make_set(rng: np.random.Generator, bases: list[np.ndarray], weights: list[float], grid, n: int, kind: str):
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    xs = []
    for label in labels:
        base = bases[int(rng.choice(len(bases), p=weights))]
        xs.append(random_sample(rng, base, grid, bool(label), kind))
    return np.stack(xs)[:, None].astype(np.float32), labels.astype(np.int64)


def ct2d_bases() -> list[np.ndarray]:
    ct = read_dicom(get_testdata_file("CT_small.dcm")).data
    anat = read_nifti(ANATOMICAL).data
    # anatomical.nii slices mapped to pseudo-HU (tissue ~ -30..80 HU) to vary the backgrounds; axial slices only.
    pseudo = [anat[d] * (110.0 / 12000.0) - 30.0 for d in range(4, anat.shape[0] - 4, 4)]
    return [ct, *pseudo]


# ---------------------------------------------------------------------------------------------- models


class Lesion3D(nn.Module):
    """Three 3x3x3 conv blocks and a global max pool: 'is there a bright ball anywhere?'."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, stride=2, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
            nn.Conv3d(8, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(16, 24, 3, padding=1), nn.BatchNorm3d(24), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.amax(self.features(x), dim=(2, 3, 4)))


class CT2D(nn.Module):
    """The same design in 2-D for (N, 1, 64, 64) windowed slices."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.amax(self.features(x), dim=(2, 3)))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 3e-3) -> None:
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        log(f"  epoch {epoch + 1}/{epochs} loss {total / len(xt):.4f}")
    model.eval()


def export(model: nn.Module, example: torch.Tensor, path: Path, preprocess: dict, source: str) -> None:
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model, (example,), input_names=["input"], output_names=["logits"], dynamic_shapes=({0: batch},),
        opset_version=18, dynamo=True, external_data=False, verbose=False,
    )  # fmt: skip
    proto = program.model_proto
    graph = proto.graph
    for entries in (graph.node, graph.input, graph.output, graph.value_info, graph.initializer):
        for entry in entries:
            del entry.metadata_props[:]
            entry.doc_string = ""
    proto.doc_string = source
    del proto.metadata_props[:]
    for key, value in {
        "occlude.preprocess": json.dumps(preprocess, separators=(",", ":")),
        "occlude.labels": json.dumps(LABELS, separators=(",", ":")),
        "occlude.source": source,
    }.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits_of(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {"input": x[i : i + 64]})[0] for i in range(0, len(x), 64)])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def naive_occlusion(sess: ort.InferenceSession, x: np.ndarray, patch: int, stride: int, target: int) -> np.ndarray:
    """The obvious loop: every window (a last one flush with each border), baseline 0, mean drop per voxel."""
    spatial = x.shape[2:]
    starts = [sorted(set(list(range(0, n - patch + 1, stride)) + [n - patch])) for n in spatial]
    ref = softmax(sess.run(None, {"input": x})[0])[0, target]
    total, count = np.zeros(spatial), np.zeros(spatial)
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(spatial)):
        box = tuple(slice(int(c), int(c) + patch) for c in corner)
        occluded = x.copy()
        occluded[(0, 0, *box)] = 0.0
        drop = ref - softmax(sess.run(None, {"input": occluded})[0])[0, target]
        total[box] += drop
        count[box] += 1
    return total / count


def peak_of(occ: np.ndarray) -> tuple[int, ...]:
    """The centre of the map's top plateau (windows make piecewise-constant maps; argmax alone is its corner)."""
    top = np.argwhere(occ >= occ.max() - 1e-6 * max(1.0, abs(float(occ.max()))))
    return tuple(int(v) for v in np.floor(top.mean(axis=0) + 0.5))


# ---------------------------------------------------------------------------------------------- builds


def build_lesion3d(models: Path, medical: Path, n_train: int, epochs: int) -> dict:
    base = read_nifti(ANATOMICAL).data
    t0 = time.perf_counter()
    x, y = make_set(np.random.default_rng(SEED), [base], [1.0], GRID_3D, n_train, "3d")
    xv, yv = make_set(np.random.default_rng(SEED + 1000), [base], [1.0], GRID_3D, 400, "3d")
    log(f"lesion3d: {n_train} training / {len(xv)} held-out volumes in {time.perf_counter() - t0:.1f} s")
    torch.manual_seed(SEED)
    model = Lesion3D()
    t0, c0 = time.perf_counter(), time.process_time()
    train(model, x, y, epochs)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    path = models / "lesion3d.onnx"
    preprocess = {"layout": "NCDHW", "size": list(GRID_3D), "intensity_range": list(RANGE_3D), "resample": "linear"}
    export(model, torch.from_numpy(x[:2]), path, preprocess,
           "occlude sample: 3-D lesion detector trained by sample_models/build_medical.py on nibabel's "
           f"anatomical.nii with synthetic lesions (seed {SEED}); torch {torch.__version__}")  # fmt: skip
    sess = session(path)
    acc = float((logits_of(sess, xv).argmax(1) == yv).mean())
    with torch.no_grad():
        diff = float(np.abs(model(torch.from_numpy(xv[:8])).numpy() - logits_of(sess, xv[:8])).max())
    require(diff < 1e-3, f"lesion3d onnxruntime vs torch differ by {diff}")
    # Ground truth: the lesion test volume, preprocessed the way the model says.
    vol = read_nifti(medical / "lesion_volume.nii.gz")
    mask = read_nifti(medical / "lesion_volume.mask.nii.gz").data > 0.5
    grid = resample(vol, GRID_3D, order=1)
    inp = normalize_range(grid.data, *RANGE_3D)[None, None]
    mask_grid = resample(Volume(mask.astype(np.float32), vol.spacing, vol.affine, "mask"), GRID_3D, 1).data >= 0.5
    logit = sess.run(None, {"input": inp})[0][0]
    clean = normalize_range(resample(read_nifti(ANATOMICAL), GRID_3D, 1).data, *RANGE_3D)[None, None]
    clean_logit = sess.run(None, {"input": clean})[0][0]
    t0 = time.perf_counter()
    occ = naive_occlusion(sess, inp, patch=8, stride=4, target=1)
    peak = peak_of(occ)
    centre = np.argwhere(mask_grid).mean(0)
    fine = naive_occlusion(sess, inp, patch=6, stride=2, target=1)
    result = {
        "train_samples": n_train, "epochs": epochs, "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1), "heldout_accuracy": acc,
        "heldout_samples": len(xv), "onnx_vs_torch_max_abs": diff, "bytes": path.stat().st_size,
        "lesion_volume_logits": [round(float(v), 3) for v in logit],
        "anatomical_logits": [round(float(v), 3) for v in clean_logit],
        "occlusion_peak_grid": [int(p) for p in peak], "lesion_centre_grid": [round(float(c), 2) for c in centre],
        "peak_in_lesion": bool(mask_grid[peak]), "occlusion_seconds": round(time.perf_counter() - t0, 1),
        "peak_grid_patch6_stride2": list(peak_of(fine)), "peak_in_lesion_patch6_stride2": bool(mask_grid[peak_of(fine)]),
        "lesion_voxels_grid": int(mask_grid.sum()),
        "peak_value": round(float(occ.max()), 4),
        "mean_map_in_lesion": round(float(occ[mask_grid].mean()), 4),
        "mean_map_outside": round(float(occ[~mask_grid].mean()), 4),
    }  # fmt: skip
    require(acc >= 0.9, f"lesion3d held-out accuracy {acc:.3f} < 0.9")
    require(int(np.argmax(logit)) == 1 and int(np.argmax(clean_logit)) == 0, "lesion3d misclassifies the samples")
    require(result["peak_in_lesion"], f"lesion3d occlusion peak {peak} is not in the lesion (centre {centre})")
    return result


def build_ct2d(models: Path, medical: Path, n_train: int, epochs: int) -> dict:
    bases = ct2d_bases()
    weights = [0.6] + [0.4 / (len(bases) - 1)] * (len(bases) - 1)
    x, y = make_set(np.random.default_rng(SEED + 1), bases, weights, GRID_2D, n_train, "2d")
    xv, yv = make_set(np.random.default_rng(SEED + 2000), bases, weights, GRID_2D, 400, "2d")
    torch.manual_seed(SEED)
    model = CT2D()
    t0, c0 = time.perf_counter(), time.process_time()
    train(model, x, y, epochs)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    path = models / "ct2d.onnx"
    preprocess = {"layout": "NCHW", "size": list(GRID_2D), "window": list(WINDOW_2D), "window_name": "bone",
                  "resample": "linear"}  # fmt: skip
    export(model, torch.from_numpy(x[:2]), path, preprocess,
           "occlude sample: 2-D lesion detector trained by sample_models/build_medical.py on pydicom's CT_small.dcm "
           f"(and anatomical.nii slices) with synthetic lesions (seed {SEED}); torch {torch.__version__}")  # fmt: skip
    sess = session(path)
    acc = float((logits_of(sess, xv).argmax(1) == yv).mean())
    ct_idx = np.array([i for i in range(len(xv))])  # all held-out samples
    vol = read_dicom(medical / "ct_lesion.dcm")
    inp = apply_window(resample(vol, GRID_2D, 1).data, *WINDOW_2D)[None, None]
    clean = apply_window(resample(read_dicom(medical / "CT_small.dcm"), GRID_2D, 1).data, *WINDOW_2D)[None, None]
    logit, clean_logit = sess.run(None, {"input": inp})[0][0], sess.run(None, {"input": clean})[0][0]
    w = sphere_weight(vol.data.shape, np.array([LESION_2D["row"], LESION_2D["col"]], float), LESION_2D["radius_px"])
    mask_grid = resample(Volume(w.astype(np.float32), vol.spacing, vol.affine, "mask"), GRID_2D, 1).data >= 0.5
    occ = naive_occlusion(sess, inp, patch=8, stride=4, target=1)
    peak = peak_of(occ)
    result = {
        "train_samples": n_train, "epochs": epochs, "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu, 1), "heldout_accuracy": acc,
        "heldout_samples": len(ct_idx), "bytes": path.stat().st_size,
        "ct_lesion_logits": [round(float(v), 3) for v in logit],
        "ct_small_logits": [round(float(v), 3) for v in clean_logit],
        "occlusion_peak_grid": [int(p) for p in peak],
        "lesion_centre_grid": [round(float(c), 2) for c in np.argwhere(mask_grid).mean(0)],
        "peak_in_lesion": bool(mask_grid[peak]),
    }  # fmt: skip
    require(acc >= 0.9, f"ct2d held-out accuracy {acc:.3f} < 0.9")
    require(int(np.argmax(logit)) == 1 and int(np.argmax(clean_logit)) == 0, "ct2d misclassifies the samples")
    require(result["peak_in_lesion"], f"ct2d occlusion peak {peak} is not in the lesion")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO, help="root to write sample_images/ and sample_models/ into")
    parser.add_argument("--n3d", type=int, default=800, help="3-D training volumes")
    parser.add_argument("--epochs3d", type=int, default=4)
    parser.add_argument("--n2d", type=int, default=1200, help="2-D training slices")
    parser.add_argument("--epochs2d", type=int, default=5)
    parser.add_argument("--report", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    medical, models = args.out / "sample_images" / "medical", args.out / "sample_models"
    models.mkdir(parents=True, exist_ok=True)
    copy_package_files(medical)
    write_series(medical / "series")
    write_lesion_volume(medical)
    write_ct_lesion(medical)
    t0 = time.perf_counter()
    report = {"lesion3d": build_lesion3d(models, medical, args.n3d, args.epochs3d)}
    report["ct2d"] = build_ct2d(models, medical, args.n2d, args.epochs2d)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    files = sorted([*medical.rglob("*.dcm"), *medical.glob("*.nii*"), models / "lesion3d.onnx", models / "ct2d.onnx"])
    report["files"] = {str(p.relative_to(args.out)): [p.stat().st_size, sha256_of(p)] for p in files}
    report["versions"] = {m.__name__: m.__version__ for m in (torch, onnx, ort, pydicom, nib, np)}
    total = sum(v[0] for v in report["files"].values())
    report["total_bytes"] = total
    require(total < 2_000_000, f"medical sample files take {total} bytes (limit 2 MB)")
    print(json.dumps(report, indent=1))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
