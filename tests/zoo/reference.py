"""An independent, deliberately slow and obvious occlusion loop: the ground truth the zoo tests compare with.

It shares no code with occlude: the image is read and resized with Pillow, normalised with numpy, fed to
onnxruntime one sample at a time, and every window is occluded in its own copy of the input. The rules it
follows are the ones issue 9 asks occlude to follow:

- Preprocessing (``case["reference"]``): the image as RGB (or Pillow's "L" for grey models), each channel
  resized as a float image with Pillow's bilinear filter to the model's (height, width); then
  ``(pixel * scale - mean) / std`` with ``mean`` and ``std`` in **RGB order** (one value is used for every
  channel); then, for BGR models, the channels reversed (so the R mean is applied to the R channel before it
  moves to the last position); then the model's layout and dtype. ``uint8`` models get the resized pixels as
  they are, rounded to the nearest integer and clipped to 0..255 (scale 1, mean 0, std 1: no normalisation).
  ``int8`` models get ``round(pixel) - 128`` (the pixels stored as integers, TFLite's int8 convention); with a
  ``quantization`` (scale s, zero point z) the normalised value x is stored as ``round(x / s) + z``. An integer
  value outside the type's range fails the reference (nothing is clipped).
- Baseline ``zero``: 0 in the model's input space, i.e. the normalised mean (for uint8 models: pixel 0; for
  int8 models: 0, i.e. pixel 128; for a quantized input: the zero point z, i.e. real 0).
- Windows: along each axis a window starts every ``stride`` pixels, plus a last one flush with the border
  when the grid does not end there, so every pixel is covered.
- Score (``case["score"]``): ``softmax`` of the output row (multi-class logits); ``sigmoid`` of a single
  logit; ``raw``, the output as it is (rows that already sum to 1, a graph ending in Sigmoid, independent
  multi-label probabilities); ``logit``, the raw output on request. The target is the top-1 class of the
  unoccluded score (the first one on ties).
- Map: per pixel, the mean over the windows covering it of ``score(original) - score(occluded)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "uint8": np.uint8, "int8": np.int8}


@dataclass
class ReferenceResult:
    map: np.ndarray  # (H, W) float64
    target: int
    original: np.ndarray  # scores of every class on the unoccluded input
    windows: int


def preprocess(image: Image.Image, reference: dict) -> np.ndarray:
    """One model input (no batch axis) in the model's layout and dtype, written out step by step."""
    height, width = reference["size"]
    grey = reference["color"] == "gray"
    image = image.convert("L") if grey else image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = []
    for c in range(pixels.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(pixels[:, :, c]), mode="F")
        channels.append(np.asarray(plane.resize((width, height), Image.BILINEAR), dtype=np.float64))
    x = np.stack(channels, axis=-1)  # (H, W, C), RGB order, pixel units
    quantization = reference.get("quantization")
    if reference["input_dtype"] == "uint8":
        x = np.clip(np.rint(x), 0, 255)
    elif reference["input_dtype"] == "int8" and quantization is None:
        x = np.rint(x) - 128.0
    else:
        x = (x * reference["scale"] - np.asarray(reference["mean"], dtype=np.float64)) / np.asarray(
            reference["std"], dtype=np.float64
        )
    if quantization is not None:
        x = np.rint(x / quantization[0]) + quantization[1]
    if reference["input_dtype"] == "int8":
        assert x.min() >= -128 and x.max() <= 127, "int8 reference input out of range"
    if reference["color"] == "bgr":
        x = x[:, :, ::-1]
    if reference["layout"] == "NCHW":
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x.astype(_DTYPES[reference["input_dtype"]]))


def window_starts(side: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, side - patch + 1, stride))
    if starts[-1] != side - patch:
        starts.append(side - patch)
    return starts


def score(raw: np.ndarray, kind: str) -> np.ndarray:
    """The scores of one sample's output row (float64)."""
    row = np.asarray(raw, dtype=np.float64).reshape(-1)
    if kind == "softmax":
        e = np.exp(row - row.max())
        return e / e.sum()
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-row))
    if kind in ("raw", "logit"):
        return row
    raise ValueError(f"unknown score kind {kind!r}")


def reference_map(model_path: Path, image_path: Path, case: dict, target: int | None = None) -> ReferenceResult:
    """The occlusion map of ``case`` (a manifest entry) for one image, one window at a time."""
    reference = case["reference"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = reference["output"] or session.get_outputs()[0].name
    with Image.open(image_path) as opened:
        x = preprocess(opened, reference)
    axes = (1, 2) if reference["layout"] == "NCHW" else (0, 1)

    def run(sample: np.ndarray) -> np.ndarray:
        (out,) = session.run([output_name], {input_name: sample[None]})
        return score(out[0], case["score"])

    quantization = reference.get("quantization")
    zero = quantization[1] if quantization is not None else 0  # 0 in the model's input space
    original = run(x)
    if target is None:
        target = int(np.argmax(original))
    height, width = reference["size"]
    patch, stride = case["patch"], case["stride"]
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    windows = 0
    for y in window_starts(height, patch, stride):
        for x0 in window_starts(width, patch, stride):
            occluded = x.copy()
            index = [slice(None)] * 3
            index[axes[0]] = slice(y, y + patch)
            index[axes[1]] = slice(x0, x0 + patch)
            occluded[tuple(index)] = zero  # the zero baseline
            drop = original[target] - run(occluded)[target]
            total[y : y + patch, x0 : x0 + patch] += drop
            count[y : y + patch, x0 : x0 + patch] += 1
            windows += 1
    return ReferenceResult(map=total / count, target=target, original=original, windows=windows)
