"""The tasks (segment, detect, embed) as a newcomer meets them: a YOLOv5 output with objectness against a slow
loop, the non-maximum suppression threshold (``--nms-iou``) on a hand-computable case, and the odd models, files
and flag combinations that must be one ``error:`` line with the documented exit code, never a silent result."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import explain
from occlude_cli.cli import app
from task_models import slow_map, yolov5_probe, yolov5_probe_score

runner = CliRunner()
BOXES = [(2, 2, 14, 14), (10, 8, 26, 22), (16, 16, 30, 30)]


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def close(got, want):
    """Element-wise within 1e-5 of the peak."""
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5 * max(np.max(np.abs(want)), 1e-12)


def one_error(result, code: int, *words: str) -> str:
    """The run ended with ``code`` and printed one ``error:`` line holding every word (no traceback)."""
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pixels[6:18, 8:22] = (250, 20, 30)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


# ------------------------------------------------------------------------------------- YOLOv5 (objectness)


def test_yolov5_probe_equals_slow_loop_through_a_letterbox(tmp_path):
    """A 64x48 photo letterboxed into a YOLOv5-layout probe (N, K, 5 + classes): the target is the best
    detection by class probability x objectness, and the map is the slow loop's to 1e-5 of its peak."""
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
    pixels[20:40, 20:52] = (200, 200, 250)  # a bright, most of all blue, block under the middle box
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    model = yolov5_probe(tmp_path / "y5.onnx", BOXES)
    e = explain(model, tmp_path / "wide.png", patch=6, stride=3, task="detect", detect_format="yolov5")
    x = e.image.model_input
    assert e.params["preprocessing"]["resize"] == "letterbox"
    confidence = [
        [float(x[c, y0:y1, x0:x1].mean()) * float(x[:, y0:y1, x0:x1].mean()) for c in range(3)]
        for x0, y0, x1, y1 in BOXES
    ]
    k, cls = np.unravel_index(np.argmax(confidence), (3, 3))
    assert (k, cls) == (1, 2)
    assert e.target == cls and e.params["task"]["target_box_input"] == list(map(float, BOXES[k]))
    assert "objectness" in e.params["task"]["score"]

    def score(sample):
        return yolov5_probe_score(sample, BOXES, BOXES[k], cls)

    close(e.map, slow_map(x, np.zeros_like(x), score, 6, 3))
    assert e.occlusion.original_scores[cls] == pytest.approx(score(x), abs=1e-6)


# ------------------------------------------------------------------------------- non-maximum suppression


@pytest.fixture
def overlapping(tmp_path):
    """A YOLOv8-layout probe with boxes A (0,0,20,20), B (0,0,20,10) and C (24,24,32,32) on a red photo: class 0
    (red) scores A 175/255, B 100/255, C 80/255; IoU(A, B) = 200 / 400 = 0.5 exactly, C overlaps neither."""
    from task_models import detection_probe

    model = detection_probe(tmp_path / "nms.onnx", [(0, 0, 20, 20), (0, 0, 20, 10), (24, 24, 32, 32)])
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[0:10, 0:20, 0] = 100
    pixels[10:20, 0:20, 0] = 250
    pixels[24:32, 24:32, 0] = 80
    Image.fromarray(pixels).save(tmp_path / "red.png")
    return model, tmp_path / "red.png"


@pytest.mark.parametrize(
    "nms_iou, detections, second",
    [
        (0.45, 2, [24.0, 24.0, 32.0, 32.0]),  # B overlaps A by 0.5 > 0.45: dropped; the second is C
        (0.5, 3, [0.0, 0.0, 20.0, 10.0]),  # 0.5 is not above 0.5: B is kept, second best
        (1.0, 3, [0.0, 0.0, 20.0, 10.0]),
    ],
)
def test_nms_iou_decides_which_boxes_survive(overlapping, nms_iou, detections, second):
    model, photo = overlapping
    e = explain(
        model, photo, patch=8, task="detect", detect_format="yolov8", target=0, target_detection=1, nms_iou=nms_iou
    )
    task = e.params["task"]
    assert task["nms_iou"] == nms_iou and task["detections"] == detections and task["target_box_input"] == second


def test_nms_iou_flag_is_recorded_checked_and_documented(tmp_path, overlapping):
    model, photo = overlapping
    common = ("run", model, photo, "--task", "detect", "--detect-format", "yolov8", "--patch", "8", "-q")
    result = occlude(*common, "--target", "0", "--target-detection", "1", "--nms-iou", "0.6", "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    task = json.loads((tmp_path / "a" / "red.json").read_text())["params"]["task"]
    assert task["nms_iou"] == 0.6 and task["target_box_input"] == [0.0, 0.0, 20.0, 10.0]
    assert occlude(*common, "-o", tmp_path / "b").exit_code == 0
    assert json.loads((tmp_path / "b" / "red.json").read_text())["params"]["task"]["nms_iou"] == 0.45
    for bad in ("0", "-0.2", "1.5", "nan", "inf"):
        one_error(occlude(*common, "--nms-iou", bad, "-o", tmp_path / "c"), 1, "--nms-iou")
    assert not (tmp_path / "c").exists()
    help_text = occlude("run", "--help").output
    assert "--nms-iou" in help_text and "IoU" in help_text


@pytest.mark.parametrize(
    "args, flag",
    [
        (("--task", "embed", "--conf", "0.5"), "--conf"),
        (("--task", "embed", "--nms-iou", "0.5"), "--nms-iou"),
        (("--task", "segment", "--conf", "0.5"), "--conf"),
        (("--conf", "0.5"), "--conf"),
        (("--task", "embed", "--target", "3"), "--target"),
    ],
)
def test_a_flag_of_another_task_is_refused_not_ignored(tmp_path, photo, args, flag):
    from task_models import embedding_probe

    model = embedding_probe(tmp_path / "emb.onnx")
    one_error(occlude("run", model, photo, *args, "--patch", "8", "-o", tmp_path / "o"), 1, flag)
    assert not (tmp_path / "o").exists()
