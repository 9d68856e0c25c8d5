"""The float16 and int8 (QDQ) versions of the sample model, for the manual's "did quantization change what it looks
at?" example (``occlude diff``): built deterministically from sample_models/efficientnet_lite0.onnx with
onnxconverter-common (float16, inputs and outputs kept float32) and onnxruntime.quantization (static QDQ, int8
weights and activations per tensor, MinMax calibration on the sample photos preprocessed as occlude feeds them).

    python docs/examples/make_quantized.py [OUT_DIR]   # default: quantized/

Writes OUT_DIR/efficientnet_lite0.fp16.onnx and OUT_DIR/efficientnet_lite0.int8.onnx (about 9 and 5 MB: not
committed; the example builds them, in about half a minute)."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from occlude_cli import OnnxClassifier, prepare_image, resolve_preprocessing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent if (HERE.parent.parent / "sample_models").is_dir() else Path.cwd()
MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"
PHOTOS = sorted((ROOT / "sample_images").glob("*.jpg"))


class Photos(CalibrationDataReader):
    """The sample photos as model inputs, one per call, in name order."""

    def __init__(self, input_name: str, inputs) -> None:
        self.items = iter([{input_name: x[None]} for x in inputs])

    def get_next(self):
        return next(self.items, None)


def main(out: Path) -> None:
    logging.disable(logging.WARNING)  # onnxruntime.quantization's advice to pre-process (shape inference) first
    out.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(MODEL))
    with warnings.catch_warnings():  # one line per tiny weight rounded to float16's smallest value
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(half, str(out / "efficientnet_lite0.fp16.onnx"))
    classifier = OnnxClassifier(MODEL)
    preprocessing = resolve_preprocessing(classifier)
    inputs = [np.asarray(prepare_image(p, preprocessing).model_input, dtype=np.float32) for p in PHOTOS]
    quantize_static(
        str(MODEL),
        str(out / "efficientnet_lite0.int8.onnx"),
        Photos(classifier.input.name, inputs),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    for name in ("efficientnet_lite0.fp16.onnx", "efficientnet_lite0.int8.onnx"):
        print(f"wrote {out / name} ({(out / name).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quantized"))
