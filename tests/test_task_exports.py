"""Real exports with random weights, built in this test session (nothing downloaded): a small U-Net-like
segmenter, torchvision's SSDlite320-MobileNetV3 detector with its boxes/scores/labels outputs, and a CNN
embedding model. Each runs end to end through the CLI and its map equals a slow one-window-at-a-time loop over
onnxruntime with the task's score written out by hand. The exports are built once per session (the SSDlite
export takes about 25 s of the suite's time; the other two about a second)."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app
from task_models import slow_cosine, slow_iou, slow_map

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")
runner = CliRunner()


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


class UNet(torch.nn.Module):
    """Two levels, a skip connection, 3 classes at the input's size."""

    def __init__(self):
        super().__init__()
        conv = torch.nn.Conv2d
        self.down = torch.nn.Sequential(conv(3, 8, 3, padding=1), torch.nn.ReLU())
        self.mid = torch.nn.Sequential(torch.nn.MaxPool2d(2), conv(8, 16, 3, padding=1), torch.nn.ReLU())
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.head = conv(24, 3, 1)

    def forward(self, x):
        a = self.down(x)
        return self.head(torch.cat([a, self.up(self.mid(a))], dim=1))


class Embedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, padding=1)
        )

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))  # (N, 16)


class Detector(torch.nn.Module):
    """torchvision's detector takes a list of images: the export takes one (1, 3, H, W) batch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(list(x))[0]
        return out["boxes"], out["scores"], out["labels"]


def _export(module, path, size, outputs, dynamic=True):
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size)
    axes = {"image": {0: "N"}, **{name: {0: "N"} for name in outputs}} if dynamic else None
    torch.onnx.export(
        module.eval(),
        (x,),
        str(path),
        input_names=["image"],
        output_names=outputs,
        opset_version=17,
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task-exports")
    torch.manual_seed(0)
    unet = _export(UNet(), folder / "unet.onnx", (32, 32), ["logits"])
    torch.manual_seed(0)
    embed = _export(Embedder(), folder / "embed.onnx", (32, 32), ["embedding"])
    torch.manual_seed(0)
    ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    detector = _export(Detector(ssd), folder / "ssdlite.onnx", (320, 320), ["boxes", "scores", "labels"], False)
    return {"unet": unet, "embed": embed, "ssdlite": detector}


def _photo(path, size, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return np.asarray(Image.open(path), np.float32).transpose(2, 0, 1) / 255  # stretch to the same size: as is


def _run(session, sample, names=None):
    return session.run(names, {"image": sample[None].astype(np.float32)})


def test_unet_export_equals_slow_loop(exports, tmp_path):
    x = _photo(tmp_path / "scan.png", (32, 32), 1)
    session = ort.InferenceSession(str(exports["unet"]))
    logits = _run(session, x)[0][0]
    target = int(np.argmax(np.bincount(np.argmax(logits, axis=0).reshape(-1), minlength=3)))  # the widest class
    mask = np.argmax(logits, axis=0) == target
    assert mask.any()

    def score(sample):
        out = _run(session, sample)[0][0].astype(np.float64)
        e = np.exp(out - out.max(axis=0))
        return float((e[target] / e.sum(axis=0))[mask].mean())

    out = tmp_path / "out"
    result = occlude(
        "run",
        exports["unet"],
        tmp_path / "scan.png",
        "--task",
        "segment",
        "--target",
        target,
        "--patch",
        "8",
        "--stride",
        "4",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    got = np.load(out / "scan.npy")
    want = slow_map(x, np.zeros_like(x), score, 8, 4)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    record = json.loads((out / "scan.json").read_text())
    assert record["params"]["task"]["mask"]["area"] == int(mask.sum())


def test_embedding_export_equals_slow_loop(exports, tmp_path):
    x = _photo(tmp_path / "a.png", (32, 32), 2)
    other = _photo(tmp_path / "b.png", (32, 32), 3)
    session = ort.InferenceSession(str(exports["embed"]))
    reference = _run(session, other)[0][0]

    def score(sample):
        return slow_cosine(_run(session, sample)[0][0], reference)

    out = tmp_path / "out"
    result = occlude(
        "run",
        exports["embed"],
        tmp_path / "a.png",
        "--task",
        "embed",
        "--reference",
        tmp_path / "b.png",
        "--patch",
        "8",
        "--stride",
        "4",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    want = slow_map(x, np.zeros_like(x), score, 8, 4)
    got = np.load(out / "a.npy")
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


def test_ssdlite_export_equals_slow_loop(exports, tmp_path):
    x = _photo(tmp_path / "street.png", (320, 320), 4)
    session = ort.InferenceSession(str(exports["ssdlite"]))
    boxes, scores, labels = _run(session, x)
    best = int(np.argmax(scores))  # --target-detection 0 with --conf 0: the most confident detection
    target, cls = boxes[best].astype(np.float64), int(labels[best])

    def score(sample):
        found, confidence, classes = _run(session, sample)
        values = [slow_iou(target, b) * float(c) for b, c, k in zip(found, confidence, classes) if int(k) == cls]
        return max(values, default=0.0)

    out = tmp_path / "out"
    result = occlude(
        "run",
        exports["ssdlite"],
        tmp_path / "street.png",
        "--task",
        "detect",
        "--detect-format",
        "boxes",
        "--boxes-output",
        "boxes",
        "--scores-output",
        "scores",
        "--labels-output",
        "labels",
        "--target-detection",
        "0",
        "--conf",
        "0",
        "--patch",
        "80",
        "--stride",
        "80",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "street.json").read_text())
    assert record["target"]["index"] == cls
    assert record["params"]["task"]["target_box"] == pytest.approx(target.tolist(), abs=1e-3)
    assert record["params"]["incremental"]["used"] is False
    want = slow_map(x, np.zeros_like(x), score, 160, 80)
    got = np.load(out / "street.npy")
    assert np.max(np.abs(got - want)) <= 1e-5 * max(np.max(np.abs(want)), 1e-12)
