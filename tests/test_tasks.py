"""Segmentation, detection and embedding models (issue 28) against ground truth: probe models whose scores are
computable by hand, each map equal to a slow one-window-at-a-time loop; the CLI end to end with its JSON and
pictures; every bad input as one error line; and the rest of a run (folders, resume, shards, region, refine,
report) working for each task."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import OccludeError, explain
from occlude_cli.analyses.tasks import maths
from occlude_cli.cli import app
from task_models import (
    close,
    detection_probe,
    detection_probe_score,
    embedding_probe,
    embedding_probe_vector,
    segmentation_probe,
    segmentation_probe_logits,
    slow_cosine,
    slow_iou,
    slow_map,
    task_photo,
)

runner = CliRunner()
WEIGHTS = np.array([[1.5, -0.5, 0.2], [-1.0, 2.0, -0.3], [0.3, 0.1, 1.0]])
BIAS = np.array([0.2, -0.4, 0.1])
BOXES = [(2, 2, 14, 14), (10, 8, 26, 22), (16, 16, 30, 30)]


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def photo(tmp_path):
    return task_photo(tmp_path)


def softmax_rows(logits):
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def test_segment_probe_equals_slow_loop(tmp_path, photo):
    model = segmentation_probe(tmp_path / "seg.onnx", WEIGHTS, BIAS)
    e = explain(model, photo, patch=6, stride=3, target=0)  # task auto: (N, C, H, W) is a segmentation
    x = e.image.model_input
    mask = np.argmax(segmentation_probe_logits(x, WEIGHTS, BIAS), axis=0) == 0  # mask auto, by hand

    def score(sample):
        return float(softmax_rows(segmentation_probe_logits(sample, WEIGHTS, BIAS))[0][mask].mean())

    close(e.map, slow_map(x, np.zeros_like(x), score, 6, 3))
    task = e.params["task"]
    assert task["task"] == "segment" and task["mask"]["source"] == "auto"
    assert task["mask"]["area"] == int(mask.sum()) > 0
    assert e.params["incremental"]["used"] is False and "task segment" in e.params["incremental"]["reason"]
    assert e.score_kind == "softmax"


def test_segment_logit_score_on_a_box_mask(tmp_path, photo):
    model = segmentation_probe(tmp_path / "seg.onnx", WEIGHTS, BIAS)
    e = explain(model, photo, patch=8, stride=4, target=2, score="logit", mask=(4, 4, 20, 12), task="segment")
    x = e.image.model_input
    mask = np.zeros((32, 32), bool)
    mask[4:12, 4:20] = True  # stretch 32 -> 32: the box's pixels

    def score(sample):
        return float(segmentation_probe_logits(sample, WEIGHTS, BIAS)[2][mask].mean())

    close(e.map, slow_map(x, np.zeros_like(x), score, 8, 4))
    assert e.params["task"]["mask"] == {"source": "box", "box": [4.0, 4.0, 20.0, 12.0], "area": 128, "pixels": 1024}


def test_segment_single_channel_is_a_sigmoid_with_a_mask_file(tmp_path, photo):
    model = segmentation_probe(tmp_path / "one.onnx", WEIGHTS[:1], BIAS[:1])
    small = np.zeros((8, 8), np.uint8)
    small[0:4, 0:2] = 255  # a mask of another size: resized (nearest) to the 32x32 output
    Image.fromarray(small).save(tmp_path / "mask.png")
    e = explain(model, photo, patch=8, stride=4, mask=str(tmp_path / "mask.png"))
    x = e.image.model_input
    mask = np.zeros((32, 32), bool)
    mask[0:16, 0:8] = True

    def score(sample):
        logits = segmentation_probe_logits(sample, WEIGHTS[:1], BIAS[:1])[0]
        return float((1 / (1 + np.exp(-logits)))[mask].mean())

    close(e.map, slow_map(x, np.zeros_like(x), score, 8, 4))
    assert e.score_kind == "sigmoid" and e.params["task"]["mask"]["area"] == 128


def test_detect_probe_equals_slow_loop_through_a_letterbox(tmp_path):
    """A 64x48 photo letterboxed into the 32x32 probe (YOLO's default): the target is the best detection, its
    box mapped back to the original through the letterbox."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
    pixels[20:40, 20:52, 1] = 250  # the green block: class 1 of the middle box
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    model = detection_probe(tmp_path / "det.onnx", BOXES)
    e = explain(model, tmp_path / "wide.png", patch=6, stride=3, task="detect", detect_format="yolov8")
    x = e.image.model_input
    assert e.params["preprocessing"]["resize"] == "letterbox"
    assert np.allclose(x[:, :4], 114 / 255) and np.allclose(x[:, 28:], 114 / 255)  # 64x48 -> 32x24, 4 px pads
    # the best detection by hand: the largest class mean of any box
    means = [[float(x[c, y0:y1, x0:x1].mean()) for c in range(3)] for x0, y0, x1, y1 in BOXES]
    k, cls = np.unravel_index(np.argmax(means), (3, 3))
    target = BOXES[k]
    assert e.target == cls and e.params["task"]["target_box_input"] == list(map(float, target))
    x0, y0, x1, y1 = target
    assert e.params["task"]["target_box"] == [x0 * 2.0, (y0 - 4) * 2.0, x1 * 2.0, (y1 - 4) * 2.0]

    def score(sample):
        return detection_probe_score(sample, BOXES, target, cls)

    close(e.map, slow_map(x, np.zeros_like(x), score, 6, 3))


def test_detect_target_box_and_class(tmp_path, photo):
    model = detection_probe(tmp_path / "det.onnx", BOXES)
    box = (4.0, 4.0, 20.0, 20.0)
    e = explain(model, photo, patch=8, stride=4, task="detect", detect_format="yolov8", target_box=box, target=2)
    x = e.image.model_input  # 32x32 photo letterboxed into 32x32: the identity

    def score(sample):
        return detection_probe_score(sample, BOXES, box, 2)

    close(e.map, slow_map(x, np.zeros_like(x), score, 8, 4))
    assert e.target == 2 and e.params["task"]["target_box"] == list(box)
    assert e.occlusion.original_scores[2] == pytest.approx(score(x), abs=1e-6)


def test_detection_maths_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    assert maths.iou(boxes[0], boxes[1:2])[0] == pytest.approx(slow_iou(boxes[0], boxes[1]))
    kept = maths.nms(boxes, np.array([0.9, 0.8, 0.7, 0.95]), np.array([0, 0, 0, 1]), 0.45)
    assert kept.tolist() == [3, 0, 2]  # box 1 overlaps box 0 (same class) by 0.68; box 3 is another class
    raw = np.array([[[5, 5, 10, 10, 0.5, 0.2, 0.8]]])  # yolov5: cx, cy, w, h, objectness, two classes
    found, probability = maths.decode_yolov5(raw)
    assert found[0, 0].tolist() == [0, 0, 10, 10] and probability[0, 0].tolist() == pytest.approx([0.1, 0.4])
    assert maths.detection_scores(found[0], probability[0], np.array([0, 0, 10, 10.0])).tolist() == pytest.approx(
        [0.1, 0.4]
    )


def test_embed_probe_equals_slow_loop_for_each_reference(tmp_path, photo):
    model = embedding_probe(tmp_path / "emb.onnx")
    other = tmp_path / "other.png"
    Image.fromarray(np.asarray(Image.open(photo))[::-1].copy()).save(other)
    own = explain(model, photo, patch=8, stride=4, task="embed")
    x = own.image.model_input
    reference = embedding_probe_vector(x)
    close(own.map, slow_map(x, np.zeros_like(x), lambda s: slow_cosine(embedding_probe_vector(s), reference), 8, 4))
    assert own.occlusion.original_scores[0] == pytest.approx(1.0)
    assert own.params["task"]["reference"] == {"source": "input", "file": None}
    image_ref = explain(model, photo, patch=8, stride=4, task="embed", reference=str(other))
    reference = embedding_probe_vector(np.asarray(Image.open(other), np.float64).transpose(2, 0, 1) / 255)
    close(
        image_ref.map,
        slow_map(x, np.zeros_like(x), lambda s: slow_cosine(embedding_probe_vector(s), reference), 8, 4),
    )
    vector = np.array([1.0, -2.0, 0.5, 3.0])
    np.save(tmp_path / "ref.npy", vector)
    npy = explain(model, photo, patch=8, stride=4, task="embed", reference_embedding=str(tmp_path / "ref.npy"))
    close(npy.map, slow_map(x, np.zeros_like(x), lambda s: slow_cosine(embedding_probe_vector(s), vector), 8, 4))


def test_cli_segment_writes_the_usual_files_with_the_mask_outline(tmp_path, photo):
    model = segmentation_probe(tmp_path / "seg.onnx", WEIGHTS, BIAS)
    labels = tmp_path / "labels.txt"
    labels.write_text("lesion\nvessel\nbackground\n")
    out = tmp_path / "out"
    result = occlude(
        "run",
        model,
        photo,
        "--task",
        "segment",
        "--target",
        "lesion",
        "--labels",
        labels,
        "--patch",
        "8",
        "--top-k",
        "2",
        "--out",
        out,
        "--quiet",
        "--no-timing",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "photo.json").read_text())
    assert list(record)[:5] == ["schema", "model", "image", "target", "score"]
    assert record["target"] == {"index": 0, "label": "lesion"}
    assert record["params"]["task"]["task"] == "segment" and len(record["top_k"]) == 2
    e = explain(model, photo, patch=8, target=0)
    assert np.array_equal(np.load(out / "photo.npy"), e.map.astype(np.float32))
    overlay = np.asarray(Image.open(out / "photo.overlay.png").convert("RGB"))
    assert np.all(overlay == (255, 215, 0), axis=-1).sum() > 50  # the mask's outline, in gold
    again = occlude(
        "run",
        model,
        photo,
        "--task",
        "segment",
        "--target",
        "lesion",
        "--labels",
        labels,
        "--patch",
        "8",
        "--top-k",
        "2",
        "--out",
        tmp_path / "again",
        "--quiet",
        "--no-timing",
    )
    assert again.exit_code == 0  # deterministic: the same bytes
    for name in ("photo.overlay.png", "photo.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_cli_detect_and_embed_end_to_end(tmp_path, photo):
    det = detection_probe(tmp_path / "det.onnx", BOXES)
    out = tmp_path / "det"
    result = occlude(
        "run",
        det,
        photo,
        "--task",
        "detect",
        "--detect-format",
        "yolov8",
        "--target-detection",
        "0",
        "--patch",
        "8",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "photo.json").read_text())
    assert record["score"]["kind"] == "detection" and record["params"]["task"]["format"] == "yolov8"
    overlay = np.asarray(Image.open(out / "photo.overlay.png").convert("RGB"))
    assert np.all(overlay == (255, 215, 0), axis=-1).sum() > 50  # the target box
    emb = embedding_probe(tmp_path / "emb.onnx")
    result = occlude(
        "run", emb, photo, "--task", "embed", "--reference", photo, "--patch", "8", "--out", tmp_path / "emb", "--quiet"
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "emb" / "photo.json").read_text())
    assert record["score"]["kind"] == "similarity" and record["score"]["original"] == pytest.approx(1.0)
    assert record["params"]["task"]["reference"]["source"] == "image"


@pytest.mark.parametrize(
    "args, flag",
    [
        (("--task", "detect"), "--detect-format"),
        (("--task", "detect", "--detect-format", "boxes", "--boxes-output", "b"), "--scores-output"),
        (("--task", "embed", "--mask", "auto"), "--mask"),
        (("--task", "detect", "--detect-format", "yolov8", "--target-box", "1,1,0,5"), "--target-box"),
        (("--task", "detect", "--detect-format", "yolov8", "--conf", "2"), "--conf"),
        (("--task", "embed", "--reference-embedding", "missing.npy"), "--reference-embedding"),
        (("--task", "embed", "--reference", "a.png", "--reference-embedding", "b.npy"), "--reference"),
        (("--task", "segment", "--incremental", "on"), "--incremental"),
        (("--mask", "1,2,3"), "--mask"),
        (("--task", "embed", "--score", "logit"), "--score"),
        (("--task", "embed", "--top-k", "2"), "--top-k"),
        (("--task", "detect", "--detect-format", "yolov8", "--target-detection", "-1"), "--target-detection"),
    ],
)
def test_bad_task_flags_are_one_error_line(tmp_path, photo, args, flag):
    model = segmentation_probe(tmp_path / "seg.onnx", WEIGHTS, BIAS)
    result = occlude("run", model, photo, *args, "--out", tmp_path / "out")
    assert result.exit_code in (1, 2), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any(line.startswith("error:") and flag in line for line in lines), result.output
    assert "Traceback" not in result.output


def test_bad_task_inputs_name_their_flag(tmp_path, photo):
    det = detection_probe(tmp_path / "det.onnx", BOXES)
    ambiguous = occlude("run", det, photo, "--out", tmp_path / "a")  # (N, 7, K) under task auto
    assert ambiguous.exit_code == 1 and "--task" in ambiguous.output and "detect" in ambiguous.output
    missing = occlude(
        "run",
        det,
        photo,
        "--task",
        "detect",
        "--detect-format",
        "boxes",
        "--boxes-output",
        "b",
        "--scores-output",
        "s",
        "--labels-output",
        "l",
        "--out",
        tmp_path / "b",
    )
    assert missing.exit_code == 1 and "error: --boxes-output 'b' is not an output of the model" in missing.output
    outside = occlude(
        "run",
        det,
        photo,
        "--task",
        "detect",
        "--detect-format",
        "yolov8",
        "--target-box",
        "0,0,40,10",
        "--out",
        tmp_path / "c",
    )
    assert outside.exit_code == 3 and "--target-box 0,0,40,10 lies outside the image (32x32" in outside.output
    seg = segmentation_probe(tmp_path / "seg.onnx", WEIGHTS, BIAS)
    empty = occlude("run", seg, photo, "--mask", "0,0,0.2,0.2", "--out", tmp_path / "d")
    assert empty.exit_code == 3 and "--mask box" in empty.output and "is empty" in empty.output
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "black.png")
    blank = occlude("run", seg, photo, "--mask", tmp_path / "black.png", "--out", tmp_path / "e")
    assert blank.exit_code == 3 and "is empty" in blank.output
    with pytest.raises(OccludeError, match="mask is for task segment") as info:
        explain(det, photo, task="classify", mask="auto")
    assert info.value.params


def test_folder_resume_shards_region_refine_report_for_a_task(tmp_path, photo):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    emb = embedding_probe(tmp_path / "emb.onnx")
    out = tmp_path / "out"
    common = ("--task", "embed", "--patch", "8", "--stride", "2", "--out", out, "--quiet")
    assert occlude("run", emb, folder, *common, "--shard", "1/2").exit_code == 0
    assert occlude("run", emb, folder, *common, "--shard", "2/2", "--report").exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 3 and (out / "index.html").exists()
    again = occlude("run", emb, folder, *common, "--resume", "--json")
    assert again.exit_code == 0 and json.loads(again.output)["counts"]["skipped"] == 3
    region = explain(emb, photo, patch=8, stride=4, task="embed", region=(0, 0, 16, 16))
    assert np.isnan(region.map[20:, 20:]).all() and np.isfinite(region.map[:12, :12]).all()
    refined = explain(emb, photo, patch=8, stride=2, task="embed", refine=True)
    exact = explain(emb, photo, patch=8, stride=2, task="embed")
    assert refined.occlusion.forward_passes < exact.occlusion.forward_passes
    peak = np.unravel_index(np.nanargmax(exact.map), exact.map.shape)
    assert refined.map[peak] == pytest.approx(exact.map[peak], abs=1e-9)


def test_sample_probes_are_rebuilt_byte_for_byte(tmp_path):
    """sample_models/build_tasks.py is deterministic: it rebuilds the shipped probes exactly."""
    import runpy

    from conftest import SAMPLE_MODELS

    runpy.run_path(str(SAMPLE_MODELS / "build_tasks.py"))["build"](tmp_path)
    for name in ("segment_probe.onnx", "detect_probe.onnx", "embed_probe.onnx"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_MODELS / name).read_bytes()


def test_resume_redoes_an_image_whose_reference_changed(tmp_path, photo):
    emb = embedding_probe(tmp_path / "emb.onnx")
    reference = tmp_path / "ref.npy"
    np.save(reference, np.array([1.0, 2.0, 3.0, 4.0]))
    args = (
        "run",
        emb,
        photo,
        "--task",
        "embed",
        "--reference-embedding",
        reference,
        "--patch",
        "8",
        "--out",
        tmp_path / "out",
        "--quiet",
        "--resume",
        "--json",
    )
    assert json.loads(occlude(*args).output)["counts"]["ok"] == 1
    assert json.loads(occlude(*args).output)["counts"]["skipped"] == 1
    np.save(reference, np.array([4.0, 3.0, 2.0, 1.0]))  # the same name, another vector: not the same result
    assert json.loads(occlude(*args).output)["counts"]["ok"] == 1
