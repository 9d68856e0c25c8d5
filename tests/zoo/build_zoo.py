"""Build the model zoo: small ONNX image classifiers exported the way people export them, with random weights.

Each model is a *real export* (torch's dynamo and legacy TorchScript exporters, onnxruntime's quantisation
tools, onnxconverter-common's fp16 converter, skl2onnx): the point is to test occlude on the graphs those
tools really produce (Reshape to a constant batch of 1, Transpose inside NHWC models, Cast of uint8 pixels,
QuantizeLinear/DequantizeLinear pairs, ZipMap outputs...), not on hand-written protobuf.

Weights are random with fixed seeds; widths and input sizes are tiny (16x16 to 32x32), so the whole zoo is
well under 1 MB and every map takes milliseconds. The script also writes ``manifest.json``: for each test case
the model file, the occlude flags it needs, what should happen ("map" or an error with its exit code), the head
and score kind expected, and the preprocessing the independent reference loop (``reference.py``) applies.

Run it from the repository root (needs the ``build-models`` extra plus onnxscript, onnxconverter-common,
skl2onnx)::

    pip install torch==2.13.0 onnx onnxscript onnxruntime onnxconverter-common skl2onnx scikit-learn
    python tests/zoo/build_zoo.py

Tests never need torch: they read the committed files.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
MANIFEST = HERE / "manifest.json"

# torchvision's ImageNet normalisation, in units of pixel/255, RGB order.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Caffe's BGR means (pixel units, scale 1), written in RGB order as occlude's --mean takes them.
CAFFE_MEAN_RGB = [123.68, 116.78, 103.94]


def _torch():
    import torch

    torch.use_deterministic_algorithms(True)
    return torch


# --------------------------------------------------------------------------------------------------------
# torch modules: tiny CNNs and a tiny ViT. Every constructor seeds torch first, so weights are reproducible.
# --------------------------------------------------------------------------------------------------------

def _seeded(seed: int):
    torch = _torch()
    torch.manual_seed(seed)
    return torch


def small_cnn(seed: int, channels: int, size: int, classes: int, head: str = "flatten", gain: float = 4.0,
              in_gain: float = 1.0):
    """conv3x3 -> ReLU -> conv3x3/2 -> ReLU -> avgpool2 -> a head.

    ``head``: "flatten" (Linear over the flattened 8 x size/4 x size/4 features: position-dependent, so occlusion
    maps have structure), "gap" (global average pool then Linear: works for any H/W), "conv1x1" (a 1x1 conv to
    the classes then global average pool, kept as [N, C, 1, 1] like SqueezeNet). ``gain`` scales the last layer
    so that scores move visibly when a patch is occluded; ``in_gain`` scales the first conv (for inputs in
    pixel units).
    """
    torch = _seeded(seed)
    nn = torch.nn
    width = 8
    body = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AvgPool2d(2),
    )
    if head == "flatten":
        last = nn.Linear(width * (size // 4) ** 2, classes)
        tail = nn.Sequential(nn.Flatten(), last)
    elif head == "gap":
        last = nn.Linear(width, classes)
        tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), last)
    elif head == "conv1x1":
        last = nn.Conv2d(width, classes, 1)
        tail = nn.Sequential(last, nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    else:
        raise ValueError(head)
    with torch.no_grad():
        last.weight.mul_(gain)
        body[0].weight.mul_(in_gain)
    return nn.Sequential(body, tail).eval()


def make_module(forward: Callable, **children):
    """An nn.Module with the given children and forward function (keeps the model definitions short)."""
    torch = _torch()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in children.items():
                setattr(self, name, child)

        def forward(self, x):
            return forward(self, x)

    return Wrapped().eval()


def tiny_vit(seed: int, size: int = 32, patch: int = 8, dim: int = 16, heads: int = 2, classes: int = 10):
    """Patch embedding (strided conv) + class token + position embedding + one pre-norm attention block + MLP."""
    torch = _seeded(seed)
    nn = torch.nn
    tokens = (size // patch) ** 2

    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, dim, patch, stride=patch)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
            self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            self.head = nn.Linear(dim, classes)
            with torch.no_grad():
                self.head.weight.mul_(4.0)

        def forward(self, pixel_values):
            x = self.embed(pixel_values).flatten(2).transpose(1, 2)  # (N, T, D)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            n, t, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
            x = x + self.proj((attention @ v).transpose(1, 2).reshape(n, t, d))
            x = x + self.mlp(self.norm2(x))
            return self.head(x[:, 0])

    return TinyViT().eval()


# --------------------------------------------------------------------------------------------------------
# exporters
# --------------------------------------------------------------------------------------------------------

def export_dynamo(module, example, path: Path, *, input_name: str = "input", output_names=("logits",),
                  dynamic_axes: dict[int, str] | None = None, opset: int = 18) -> None:
    """torch.onnx.export(dynamo=True): the default exporter since torch 2.9; opset 18, dynamic batch by default."""
    torch = _torch()
    dims = dynamic_axes if dynamic_axes is not None else {0: "batch"}
    shapes = ({axis: torch.export.Dim.DYNAMIC for axis in dims},) if dims else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, input_names=[input_name],
                                    output_names=list(output_names), dynamic_shapes=shapes, external_data=False,
                                    verbose=False)
    model = program.model_proto
    _save(model, path)


def export_legacy(module, example, path: Path, *, opset: int, input_name: str = "input",
                  output_names=("logits",), dynamic_batch: bool = False):
    """torch.onnx.export(dynamo=False): the TorchScript exporter most published ONNX files came from."""
    import onnx

    torch = _torch()
    buffer = io.BytesIO()
    axes = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset, input_names=[input_name],
                          output_names=list(output_names), dynamic_axes=axes)
    model = onnx.load_from_string(buffer.getvalue())
    if path is not None:
        _save(model, path)
    return model


def _save(model, path: Path, **external) -> None:
    """Check the model, then write it atomically (temp file in the same folder + os.replace)."""
    import onnx

    onnx.checker.check_model(model)
    # skl2onnx lists its opsets in set order, which changes with Python's string hashing: sort them, so that
    # every run of this script writes byte-identical files.
    opsets = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        onnx.save_model(model, temp, **external)
        os.chmod(temp, 0o644)  # mkstemp makes 0600 files
        os.replace(temp, path)
        if external.get("location"):  # onnx wrote the weights straight to their final name beside the model
            os.chmod(path.parent / external["location"], 0o644)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def add_metadata(path: Path, values: dict[str, object]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    _save(model, path)


# --------------------------------------------------------------------------------------------------------
# the zoo
# --------------------------------------------------------------------------------------------------------

def _x(shape, dtype="float32", seed: int = 0):
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    if dtype == "uint8":
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    if dtype == "int8":
        return torch.randint(-128, 128, shape, generator=generator, dtype=torch.int8)
    return torch.rand(shape, generator=generator)


def build_models() -> list[dict]:
    """Write every model file; return the manifest's cases."""
    import onnx

    torch = _torch()
    cases: list[dict] = []

    def case(name: str, file: str, *, flags=(), head: str, head_kind: str, score: str, size, layout="NCHW",
             color="rgb", scale=1 / 255, mean=(0.0,), std=(1.0,), input_dtype="float32", output=None,
             patch=8, stride=5, expect="map", exit_code=0, error_contains=None, tolerance="fp32",
             target=None, quantization=None, exporter: str, notes: str) -> None:
        cases.append({
            "name": name, "file": file, "flags": list(flags), "target": target, "expect": expect, "exit_code": exit_code,
            "error_contains": error_contains, "head": head, "head_kind": head_kind, "score": score,
            "patch": patch, "stride": stride, "tolerance": tolerance, "exporter": exporter, "notes": notes,
            "reference": {"size": list(size), "layout": layout, "color": color, "scale": scale, "mean": list(mean),
                          "std": list(std), "input_dtype": input_dtype, "output": output,
                          "quantization": list(quantization) if quantization is not None else None},
        })

    # 1. dynamo exporter, opset 18, dynamic batch, NCHW RGB, torchvision normalisation given as flags
    m = small_cnn(1, 3, 32, 10)
    export_dynamo(m, _x((2, 3, 32, 32)), MODELS / "dynamo_nchw_rgb.onnx")
    tv_flags = ["--scale", str(1 / 255), "--mean", ",".join(map(str, IMAGENET_MEAN)),
                "--std", ",".join(map(str, IMAGENET_STD))]
    case("dynamo_nchw_rgb", "dynamo_nchw_rgb.onnx", flags=tv_flags, head="(N,C)", head_kind="multiclass",
         score="softmax", size=(32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD, exporter="torch dynamo, opset 18",
         notes="torchvision-style normalisation given as flags (RGB order)")

    # 2. legacy exporter, opset 13, fixed batch 1 with a Reshape to the constant [1, K]; preprocessing in metadata
    cnn = small_cnn(2, 3, 32, 10)
    fixed = make_module(lambda self, x: self.head(self.body(x).reshape(1, 8 * 8 * 8)),
                        body=cnn[0], head=cnn[1][1])
    path = MODELS / "legacy_fixed_batch1.onnx"
    export_legacy(fixed, _x((1, 3, 32, 32)), path, opset=13)
    add_metadata(path, {"occlude.preprocess": {"color": "rgb", "scale": 1 / 255, "mean": IMAGENET_MEAN,
                                               "std": IMAGENET_STD}})
    case("legacy_fixed_batch1", "legacy_fixed_batch1.onnx", head="(N,C)", head_kind="multiclass", score="softmax",
         size=(32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD, exporter="torch legacy (dynamo=False), opset 13",
         notes="batch pinned to 1 by Reshape(x, [1, 512]): cannot be rebatched, runs one image at a time; "
               "normalisation read from occlude.preprocess metadata")

    # 3. NHWC RGB: channels-last input, permuted inside (TF/Keras-style)
    cnn = small_cnn(3, 3, 24, 10)
    nhwc = make_module(lambda self, x: self.net(x.permute(0, 3, 1, 2)), net=cnn)
    export_dynamo(nhwc, _x((2, 24, 24, 3)), MODELS / "nhwc_rgb.onnx")
    case("nhwc_rgb", "nhwc_rgb.onnx", flags=["--mean", "0.5", "--std", "0.5"], head="(N,C)",
         head_kind="multiclass", score="softmax", size=(24, 24), layout="NHWC", mean=[0.5], std=[0.5],
         patch=6, stride=4, exporter="torch dynamo, opset 18", notes="NHWC input, Transpose inside; (x-0.5)/0.5")

    # 4. grey NCHW (1 channel, MNIST-like) and 5. grey NHWC (Keras-style [N, 28, 28, 1])
    export_dynamo(small_cnn(4, 1, 28, 10), _x((2, 1, 28, 28)), MODELS / "grey_nchw.onnx")
    case("grey_nchw", "grey_nchw.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(28, 28),
         color="gray", patch=7, stride=4, exporter="torch dynamo, opset 18", notes="1-channel NCHW input")
    cnn = small_cnn(5, 1, 28, 10)
    grey_nhwc = make_module(lambda self, x: self.net(x.permute(0, 3, 1, 2)), net=cnn)
    export_legacy(grey_nhwc, _x((1, 28, 28, 1)), MODELS / "grey_nhwc.onnx", opset=17, dynamic_batch=True)
    case("grey_nhwc", "grey_nhwc.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(28, 28),
         layout="NHWC", color="gray", patch=7, stride=4, exporter="torch legacy, opset 17, dynamic batch",
         notes="Keras-style grey NHWC [N, 28, 28, 1]")

    # 6. BGR Caffe-style: BGR channel order, pixel units (scale 1), per-channel means
    export_legacy(small_cnn(6, 3, 32, 10, in_gain=1 / 64), _x((1, 3, 32, 32)) * 255, MODELS / "bgr_caffe.onnx",
                  opset=11, dynamic_batch=True)
    case("bgr_caffe", "bgr_caffe.onnx", flags=["--bgr", "--scale", "1", "--mean", ",".join(map(str, CAFFE_MEAN_RGB))],
         head="(N,C)", head_kind="multiclass", score="softmax", size=(32, 32), color="bgr", scale=1.0,
         mean=CAFFE_MEAN_RGB, exporter="torch legacy, opset 11, dynamic batch",
         notes="Caffe-style: BGR input in pixel units minus the mean; --mean given in RGB order (123.68,116.78,103.94 "
               "is Caffe's B,G,R = 103.94,116.78,123.68), applied to the R,G,B channels before reordering to BGR")

    # 7. tiny ViT with a `pixel_values` input (HuggingFace naming)
    export_dynamo(tiny_vit(7), _x((2, 3, 32, 32)), MODELS / "vit_tiny.onnx", input_name="pixel_values")
    case("vit_tiny", "vit_tiny.onnx", flags=["--mean", "0.5", "--std", "0.5"], head="(N,C)", head_kind="multiclass",
         score="softmax", size=(32, 32), mean=[0.5], std=[0.5], exporter="torch dynamo, opset 18",
         notes="patch embedding 8x8 + class token + 1 attention block; input named pixel_values")

    # 8. fp16: onnxconverter-common's float16 conversion, fp16 inputs and outputs
    from onnxconverter_common import float16

    fp32 = MODELS / "fp16.onnx"
    export_dynamo(small_cnn(8, 3, 32, 10), _x((2, 3, 32, 32)), fp32)
    _save(float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=False), fp32)
    case("fp16", "fp16.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(32, 32),
         input_dtype="float16", tolerance="fp16", exporter="torch dynamo + onnxconverter_common.float16",
         notes="tensor(float16) input and output")

    # 8b. float64 (double) input, cast to float inside (onnxruntime has no double Conv on the CPU)
    cnn = small_cnn(21, 3, 16, 10)
    double = make_module(lambda self, x: self.net(x.to(torch.float32)), net=cnn)
    export_dynamo(double, _x((2, 3, 16, 16)).double(), MODELS / "float64.onnx")
    case("float64", "float64.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(16, 16),
         input_dtype="float64", patch=4, stride=3, exporter="torch dynamo, opset 18",
         notes="tensor(double) input, Cast to float inside")

    # 9. int8 QDQ: onnxruntime.quantization.quantize_static, QDQ format, 16 calibration images
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(9)
            self.batches = iter([{"input": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "fp32.onnx"
        export_legacy(small_cnn(9, 3, 32, 10), _x((1, 3, 32, 32)), source, opset=13, dynamic_batch=True)
        quantized = Path(temp) / "int8.onnx"
        quantize_static(str(source), str(quantized), Calibration(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        _save(onnx.load(str(quantized)), MODELS / "int8_qdq.onnx")
    case("int8_qdq", "int8_qdq.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(32, 32),
         tolerance="int8", exporter="torch legacy opset 13 + onnxruntime.quantization.quantize_static (QDQ)",
         notes="QuantizeLinear/DequantizeLinear around every conv and matmul; uint8 activations, int8 weights")

    # 10. uint8 input: raw 0..255 pixels, NHWC, Cast inside (TFLite/TF-export style)
    cnn = small_cnn(10, 3, 32, 10)
    uint8 = make_module(lambda self, x: self.net(x.permute(0, 3, 1, 2).to(torch.float32) / 255.0), net=cnn)
    export_dynamo(uint8, _x((2, 32, 32, 3), "uint8"), MODELS / "uint8_nhwc.onnx")
    case("uint8_nhwc", "uint8_nhwc.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(32, 32),
         layout="NHWC", scale=1.0, input_dtype="uint8", exporter="torch dynamo, opset 18",
         notes="tensor(uint8) input fed the pixels as they are; baseline zero = pixel 0")

    # 10b. int8 input, Cast inside: the image input of a fully integer-quantized model (TFLite's converter with
    # inference_input_type=tf.int8 stores pixel/255 with scale 1/255 and zero point -128, i.e. pixel - 128)
    cnn = small_cnn(22, 3, 32, 10)
    int8 = make_module(lambda self, x: self.net((x.to(torch.float32) + 128.0) / 255.0), net=cnn)
    export_legacy(int8, _x((1, 3, 32, 32), "int8"), MODELS / "int8_input.onnx", opset=13, dynamic_batch=True)
    case("int8_input", "int8_input.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(32, 32),
         scale=1.0, mean=(128.0,), input_dtype="int8", exporter="torch legacy, opset 13",
         notes="tensor(int8) input, Cast + (q + 128) / 255 inside: fed pixel - 128 (the documented int8 default); "
               "baseline zero = q 0 = pixel 128")

    # 10c. int8 input dequantized by the graph: DequantizeLinear(scale 1/255, zero point -128) in front of a float
    # CNN, as tf2onnx writes the int8 input of a TFLite model. Without flags the pixels are stored as integers
    # (pixel - 128); with the real-valued preprocessing given (--scale 1/255) occlude quantizes it with the
    # graph's scale and zero point: q = round((pixel / 255) / (1 / 255)) - 128, the same values, but baseline
    # zero is then real 0 = q -128 = pixel 0.
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "fp32.onnx"
        float_model = export_legacy(small_cnn(23, 3, 32, 10), _x((1, 3, 32, 32)), source, opset=13,
                                    dynamic_batch=True)
    graph = float_model.graph
    for node in graph.node:
        node.input[:] = ["input_real" if name == "input" else name for name in node.input]
    graph.initializer.extend([onnx.numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "input_scale"),
                              onnx.numpy_helper.from_array(np.array(-128, dtype=np.int8), "input_zero_point")])
    graph.node.insert(0, onnx.helper.make_node("DequantizeLinear", ["input", "input_scale", "input_zero_point"],
                                               ["input_real"], name="dequantize_input"))
    graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT8
    _save(float_model, MODELS / "int8_dequantize.onnx")
    case("int8_dequantize", "int8_dequantize.onnx", head="(N,C)", head_kind="multiclass", score="softmax",
         size=(32, 32), scale=1.0, mean=(128.0,), input_dtype="int8",
         exporter="torch legacy, opset 13 + a DequantizeLinear input added with the onnx helper API",
         notes="int8 input read by DequantizeLinear(1/255, -128); no flags: pixel - 128, baseline zero = q 0")
    case("int8_dequantize_real", "int8_dequantize.onnx", flags=["--scale", str(1 / 255)], head="(N,C)",
         head_kind="multiclass", score="softmax", size=(32, 32), input_dtype="int8", quantization=(1 / 255, -128),
         exporter="torch legacy, opset 13 + a DequantizeLinear input added with the onnx helper API",
         notes="--scale 1/255 is the real value; quantized with the graph's scale and zero point; baseline zero = "
               "the zero point (real 0)")

    # 11. Softmax-terminated (probabilities out), and the same model asked for logits (a flag error)
    cnn = small_cnn(11, 3, 32, 10, gain=10.0)
    soft = make_module(lambda self, x: torch.softmax(self.net(x), dim=1), net=cnn)
    export_dynamo(soft, _x((2, 3, 32, 32)), MODELS / "softmax_out.onnx", output_names=("probabilities",))
    case("softmax_out", "softmax_out.onnx", head="(N,C)", head_kind="multiclass", score="raw", size=(32, 32),
         exporter="torch dynamo, opset 18", notes="ends in Softmax: rows sum to 1, explained as they are")
    case("softmax_out_score_logit", "softmax_out.onnx", flags=["--score", "logit"], head="(N,C)",
         head_kind="multiclass", score="logit", size=(32, 32), expect="error", exit_code=1, error_contains="logit",
         exporter="torch dynamo, opset 18", notes="--score logit on a Softmax-terminated graph: a flag error, exit 1")

    # 12. two outputs: logits and features, --output picks one
    cnn = small_cnn(12, 3, 32, 10)
    two = make_module(lambda self, x: (self.head(self.body(x).flatten(1)), self.body(x).mean(dim=(2, 3))),
                      body=cnn[0], head=cnn[1][1])
    export_dynamo(two, _x((2, 3, 32, 32)), MODELS / "two_outputs.onnx", output_names=("logits", "features"))
    case("two_outputs", "two_outputs.onnx", flags=["--output", "logits"], head="(N,C)", head_kind="multiclass",
         score="softmax", size=(32, 32), output="logits", exporter="torch dynamo, opset 18",
         notes="outputs logits [N,10] and features [N,8]; --output logits")

    # 13. dynamic H/W (global pooling head), size given with --size
    export_dynamo(small_cnn(13, 3, 24, 10, head="gap", gain=8.0), _x((2, 3, 24, 24)), MODELS / "dynamic_hw.onnx",
                  dynamic_axes={0: "batch", 2: "height", 3: "width"})
    case("dynamic_hw", "dynamic_hw.onnx", flags=["--size", "24x20"], head="(N,C)", head_kind="multiclass",
         score="softmax", size=(24, 20), patch=6, stride=4, exporter="torch dynamo, opset 18, dynamic N/H/W",
         notes="input [N,3,H,W] all dynamic; --size 24x20 (not square, to catch an H/W swap)")

    # 14. external data: weights in external_data.onnx.data beside the graph
    model = export_legacy(small_cnn(14, 3, 32, 10), _x((1, 3, 32, 32)), None, opset=17, dynamic_batch=True)
    data = MODELS / "external_data.onnx.data"
    if data.exists():
        data.unlink()
    _save(model, MODELS / "external_data.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
          location="external_data.onnx.data", size_threshold=0)
    case("external_data", "external_data.onnx", head="(N,C)", head_kind="multiclass", score="softmax",
         size=(32, 32), exporter="torch legacy, opset 17 + onnx.save_model(save_as_external_data=True)",
         notes="needs external_data.onnx.data in the same folder")

    # 15. SqueezeNet-style head: 1x1 conv to classes, global pool, output [N, C, 1, 1]
    export_legacy(small_cnn(15, 3, 32, 10, head="conv1x1", gain=30.0), _x((1, 3, 32, 32)),
                  MODELS / "squeezenet_head.onnx", opset=12, dynamic_batch=True)
    case("squeezenet_head", "squeezenet_head.onnx", head="(N,C,1,1)", head_kind="multiclass", score="softmax",
         size=(32, 32), exporter="torch legacy, opset 12", notes="output [N,10,1,1], no Flatten")

    # 16. one-logit binary [N, 1]; 17. sigmoid binary [N, 1]; 18. multi-label sigmoid [N, 5]; 19. head (N,)
    export_dynamo(small_cnn(16, 3, 32, 1, gain=1.0), _x((2, 3, 32, 32)), MODELS / "binary_logit.onnx")
    case("binary_logit", "binary_logit.onnx", head="(N,1)", head_kind="binary", score="sigmoid", size=(32, 32),
         exporter="torch dynamo, opset 18", notes="one logit: explained as its sigmoid probability")
    case("binary_logit_score_logit", "binary_logit.onnx", flags=["--score", "logit"], head="(N,1)",
         head_kind="binary", score="logit", size=(32, 32), exporter="torch dynamo, opset 18",
         notes="one logit, --score logit: the raw output")
    cnn = small_cnn(17, 3, 32, 1, gain=1.0)
    export_dynamo(make_module(lambda self, x: torch.sigmoid(self.net(x)), net=cnn), _x((2, 3, 32, 32)),
                  MODELS / "binary_sigmoid.onnx", output_names=("probability",))
    case("binary_sigmoid", "binary_sigmoid.onnx", head="(N,1)", head_kind="binary", score="raw", size=(32, 32),
         exporter="torch dynamo, opset 18", notes="ends in Sigmoid: the output as it is, never sigmoided twice")
    case("binary_sigmoid_score_logit", "binary_sigmoid.onnx", flags=["--score", "logit"], head="(N,1)",
         head_kind="binary", score="logit", size=(32, 32), expect="error", exit_code=1, error_contains="logit",
         exporter="torch dynamo, opset 18", notes="--score logit on a graph ending in Sigmoid: a flag error, exit 1")
    cnn = small_cnn(18, 3, 32, 5, gain=1.0)
    export_legacy(make_module(lambda self, x: torch.sigmoid(self.net(x)), net=cnn), _x((1, 3, 32, 32)),
                  MODELS / "multilabel_sigmoid.onnx", opset=14, output_names=("probabilities",), dynamic_batch=True)
    case("multilabel_sigmoid", "multilabel_sigmoid.onnx", head="(N,C)", head_kind="multilabel", score="raw",
         size=(32, 32), exporter="torch legacy, opset 14",
         notes="5 independent sigmoids (rows do not sum to 1): each label explained as its own probability")
    case("multilabel_sigmoid_target2", "multilabel_sigmoid.onnx", flags=["--target", "2"], target=2, head="(N,C)",
         head_kind="multilabel", score="raw", size=(32, 32), exporter="torch legacy, opset 14",
         notes="a label that is not the top-1, by --target: its own probability, not a softmax over labels")
    cnn = small_cnn(19, 3, 32, 1, gain=1.0)
    export_dynamo(make_module(lambda self, x: self.net(x).squeeze(1), net=cnn), _x((2, 3, 32, 32)),
                  MODELS / "head_1d.onnx")
    case("head_1d", "head_1d.onnx", head="(N,)", head_kind="binary", score="sigmoid", size=(32, 32),
         exporter="torch dynamo, opset 18", notes="output of shape (N,): one logit per image")

    # 20. old opset 9 (legacy exporter still writes it)
    export_legacy(small_cnn(20, 3, 16, 10, gain=10.0), _x((1, 3, 16, 16)), MODELS / "opset9.onnx", opset=9, dynamic_batch=True)
    case("opset9", "opset9.onnx", head="(N,C)", head_kind="multiclass", score="softmax", size=(16, 16), patch=4,
         stride=3, exporter="torch legacy, opset 9", notes="old opset (Flatten/Gemm, no opset-13 ops)")

    # 21. scikit-learn via skl2onnx: flat [N, 64] input, ZipMap output: not an image model
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    digits = load_digits()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = LogisticRegression(max_iter=200).fit(digits.data[:500], digits.target[:500])
    _save(to_onnx(classifier, digits.data[:1].astype(np.float32), target_opset=15), MODELS / "sklearn_digits.onnx")
    case("sklearn_digits", "sklearn_digits.onnx", head="ZipMap", head_kind="none", score="none", size=(8, 8),
         expect="error", exit_code=1, error_contains="input", exporter="skl2onnx (LogisticRegression on digits)",
         notes="flat [N, 64] input, outputs label + ZipMap: one clear error about the input, exit 1")
    return cases


def main() -> int:
    MODELS.mkdir(parents=True, exist_ok=True)
    cases = build_models()
    document = {
        "about": "occlude's model zoo: generated by tests/zoo/build_zoo.py (random weights, fixed seeds). "
                 "flags: what occlude run needs besides --patch/--stride; reference: the preprocessing of "
                 "tests/zoo/reference.py (mean/std in RGB order, in units of pixel*scale); score: softmax "
                 "(of logits), sigmoid (of one logit), raw (the output as it is: probabilities or sigmoids), "
                 "logit (raw output on request).",
        "cases": cases,
    }
    handle, temp = tempfile.mkstemp(dir=HERE, prefix=".manifest.", suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
    os.chmod(temp, 0o644)
    os.replace(temp, MANIFEST)
    for path in sorted(MODELS.iterdir()):
        print(f"{path.stat().st_size:>9,d}  {path.name}")
    print(f"{len(cases)} cases -> {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
