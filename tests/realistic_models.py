"""224x224 classifiers exported the way users export them, built with torch in the test session (issue 21).

* :func:`int8_resnet18`: a ResNet-18-like network (torch's BasicBlock layout: 7x7/2 stem, max pool, four stages
  of two blocks, 64-128-256-512 channels, global pool, linear head) exported by torch's TorchScript exporter,
  then quantised by ``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel int8 weights, uint8
  activations) after calibration on four seeded random images: 11 MB.
* :func:`fp16_resnet10`: the same network with one block per stage at half the width (32-64-128-256: onnxruntime
  runs float16 convolutions slowly on CPUs), converted by
  ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=False)``: float16 input, weights and
  output: 2.5 MB.

Random weights with fixed seeds; batch-norm statistics drawn around 0 and 1 so that activations keep their
scale through the network; the head's weights scaled by 20 so that occluding a patch moves the softmax visibly.
Exported with a dynamic batch. Building both takes about 4 s on 2 cores; the tests build them once per session.
Needs the ``peer`` extra (torch) and onnxconverter-common.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

SIZE = 224
HEAD_GAIN = 20.0


def _resnet(blocks, widths=(64, 128, 256, 512), classes: int = 10, seed: int = 0):
    import torch

    nn = torch.nn
    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))

    layers = [nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = widths[0]
    for stage, (count, width) in enumerate(zip(blocks, widths)):
        for index in range(count):
            layers.append(Block(cin, width, 2 if index == 0 and stage > 0 else 1))
            cin = width
    head = nn.Linear(cin, classes)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), head]
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        head.weight.mul_(HEAD_GAIN)
    return model.eval()


def _export(module, path: Path) -> Path:
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.rand(1, 3, SIZE, SIZE),),
            buffer,
            dynamo=False,
            opset_version=13,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    onnx.save(onnx.load_from_string(buffer.getvalue()), str(path))
    return path


def int8_resnet18(folder: Path) -> Path:
    """The QDQ int8 ResNet-18-like model in ``folder``; returns its path."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.random((1, 3, SIZE, SIZE), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    source = _export(_resnet([2, 2, 2, 2], seed=1), folder / "resnet18_fp32.onnx")
    path = folder / "resnet18_int8_qdq.onnx"
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice to pre-process the model first
    quantize_static(
        str(source),
        str(path),
        Calibration(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    source.unlink()
    return path


def fp16_resnet10(folder: Path) -> Path:
    """The float16 ResNet-10-like model in ``folder`` (float16 input and output); returns its path."""
    import onnx
    from onnxconverter_common import float16

    source = _export(_resnet([1, 1, 1, 1], widths=(32, 64, 128, 256), seed=2), folder / "resnet10_fp32.onnx")
    path = folder / "resnet10_fp16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the float32 number ... will be truncated to 1e-07"
        converted = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=False)
    onnx.save(converted, str(path))
    source.unlink()
    return path
