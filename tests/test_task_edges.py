"""The tasks (segment, detect, embed) as a newcomer meets them: a YOLOv5 output with objectness against a slow
loop, the non-maximum suppression threshold (``--nms-iou``) on a hand-computable case, and the odd models, files
and flag combinations that must be one ``error:`` line with the documented exit code, never a silent result."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import explain
from occlude_cli.analyses.preprocessing import ModelOptions, open_model
from occlude_cli.cli import app
from task_models import close, slow_map, task_photo, yolov5_probe, yolov5_probe_score

runner = CliRunner()
BOXES = [(2, 2, 14, 14), (10, 8, 26, 22), (16, 16, 30, 30)]


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_error(result, code: int, *words: str) -> str:
    """The run ended with ``code`` and printed one ``error:`` line holding every word (no traceback)."""
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(word in errors[0] for word in words), errors[0]
    return errors[0]


@pytest.fixture
def photo(tmp_path):
    return task_photo(tmp_path)


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
        (("--task", "embed", "--labels", "LABELS_FILE"), "--labels"),
        (("--task", "embed", "--labels", "imagenet"), "--labels"),
        (("--task", "detect", "--detect-format", "yolov8", "--target-box", "1,1,9,9", "--conf", "0.5"), "--conf"),
        (("--task", "detect", "--detect-format", "yolov8", "--target-box", "1,1,9,9", "--nms-iou", "0.5"), "--nms-iou"),
    ],
)
def test_a_flag_of_another_task_is_refused_not_ignored(tmp_path, photo, args, flag):
    from task_models import detection_probe, embedding_probe

    model = detection_probe(tmp_path / "m.onnx", BOXES) if "detect" in args else embedding_probe(tmp_path / "m.onnx")
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    args = tuple(str(tmp_path / "labels.txt") if a == "LABELS_FILE" else a for a in args)
    one_error(occlude("run", model, photo, *args, "--patch", "8", "-o", tmp_path / "o"), 1, flag)
    assert not (tmp_path / "o").exists()


def test_labels_of_an_embedding_are_refused_by_the_library(tmp_path, photo):
    """An embedding has no classes: class names given with task embed name both parameters (they were ignored)."""
    from task_models import embedding_probe

    from occlude_cli import OccludeError

    model = embedding_probe(tmp_path / "m.onnx")
    with pytest.raises(OccludeError, match="labels is for class scores") as info:
        open_model(model, ModelOptions(labels=["a", "b"]), task="embed")
    assert set(info.value.params) == {"labels", "task"}
    open_model(model, ModelOptions(), task="embed")  # without labels it opens


# --------------------------------------------------------------- outputs that are not what the task reads


def test_outputs_no_detect_format_reads_are_refused_not_scored(tmp_path, photo):
    """An end-to-end detector's (N, K, 6) rows after NMS (x0, y0, x1, y1, score, class 7) read as YOLOv5 would
    make class ids probabilities (a score of 6.3); torchvision outputs with scores and labels swapped would
    make labels scores. Both are one error line naming --detect-format or the output, not a map."""
    from task_models import boxes_probe, post_nms_probe

    post = post_nms_probe(tmp_path / "post.onnx", BOXES)
    result = occlude("run", post, photo, "--task", "detect", "--detect-format", "yolov5", "-o", tmp_path / "a")
    one_error(result, 3, "--detect-format yolov5", "0..1", "'dets'")
    assert not (tmp_path / "a" / "photo.json").exists()
    boxes = boxes_probe(tmp_path / "boxes.onnx", BOXES)
    names = ("--boxes-output", "boxes", "--scores-output", "scores", "--labels-output", "labels")
    good = occlude(
        "run", boxes, photo, "--task", "detect", "--detect-format", "boxes", *names, "-q", "-o", tmp_path / "b"
    )
    assert good.exit_code == 0, good.output
    swapped = ("--boxes-output", "boxes", "--scores-output", "labels", "--labels-output", "scores")
    result = occlude(
        "run", boxes, photo, "--task", "detect", "--detect-format", "boxes", *swapped, "-o", tmp_path / "c"
    )
    one_error(result, 3, "--labels-output", "'scores'", "whole")


def test_a_segmentation_output_the_model_declares_wrong_fails_before_any_image(tmp_path, photo):
    from task_models import detection_probe, pooled_segmentation_probe

    det = detection_probe(tmp_path / "det.onnx", BOXES)  # (N, 7, 3): not a segmentation
    error = one_error(occlude("run", det, photo, "--task", "segment", "-o", tmp_path / "a"), 1, "--task segment")
    assert "(batch, C, h, w)" in error and "labels" not in error
    odd = pooled_segmentation_probe(tmp_path / "odd.onnx", 5)  # 6x6 of a 32x32 input
    one_error(occlude("run", odd, photo, "--task", "segment", "-o", tmp_path / "b"), 1, "6x6", "32x32")
    dynamic = pooled_segmentation_probe(tmp_path / "dyn.onnx", 5, static=False)  # known only at the first image
    late = occlude("run", dynamic, photo, "--task", "segment", "--size", "32x32", "-o", tmp_path / "c")
    one_error(late, 3, "6x6", "32x32")
    half = pooled_segmentation_probe(tmp_path / "half.onnx", 2)  # 16x16 of 32x32: a fixed fraction, fine
    assert occlude("run", half, photo, "--task", "segment", "--target", "1", "-q", "-o", tmp_path / "d").exit_code == 0
    one_error(occlude("run", half, photo, "--detect-format", "yolov8", "--task", "detect", "-o", tmp_path / "e"), 1)


@pytest.mark.parametrize("task", ["segment", "detect"])
def test_top_k_above_the_classes_is_refused_not_cut(tmp_path, photo, task):
    from task_models import detection_probe, segmentation_probe

    if task == "segment":
        model = segmentation_probe(tmp_path / "m.onnx", np.eye(3), np.zeros(3))
        args = ("--task", "segment")
    else:
        model = detection_probe(tmp_path / "m.onnx", BOXES)
        args = ("--task", "detect", "--detect-format", "yolov8")
    one_error(occlude("run", model, photo, *args, "--top-k", "4", "-o", tmp_path / "o"), 1, "--top-k 4", "3 classes")
    assert occlude("run", model, photo, *args, "--top-k", "3", "-q", "-o", tmp_path / "p").exit_code == 0


def test_a_target_box_the_crop_cuts_away_is_refused(tmp_path):
    """A 64x32 photo center-cropped into the 32x32 probe: the model sees x 16..48; a box at x 0..10 lies inside the
    photo but outside what the model sees (every score would be 0: a blank map)."""
    from task_models import detection_probe

    Image.fromarray(np.full((32, 64, 3), 90, np.uint8)).save(tmp_path / "wide.png")
    model = detection_probe(tmp_path / "det.onnx", BOXES)
    args = ("run", model, tmp_path / "wide.png", "--task", "detect", "--detect-format", "yolov8")
    result = occlude(*args, "--resize", "center-crop", "--target-box", "0,0,10,10", "-o", tmp_path / "a")
    one_error(result, 3, "--target-box 0,0,10,10", "outside the part of the image the model sees")
    inside = occlude(*args, "--resize", "center-crop", "--target-box", "10,0,30,20", "-q", "-o", tmp_path / "b")
    assert inside.exit_code == 0, inside.output  # partly seen: explained


# ------------------------------------------------------------------------------------- reference embeddings


@pytest.mark.parametrize(
    "content, words",
    [
        (np.ones(5), ("[5]", "4 dimensions")),
        (np.ones((2, 2)), ("[2, 2]", "one vector")),
        (np.ones(4, bool), ("bool", "numbers")),
        (np.ones(4, complex), ("complex128", "numbers")),
        (np.array(["a", "b", "c", "d"]), ("<U1", "numbers")),
        (np.array([1.0, np.nan, 1.0, 1.0]), ("not finite",)),
        (np.zeros(4), ("all zeros",)),
        (b"1 2 3 4\n", ("not a .npy file",)),
        (b"PK\x03\x04 an archive", ("not a .npy file",)),
        ("object", ("objects", "numbers")),
    ],
)
def test_a_bad_reference_embedding_fails_before_any_image(tmp_path, photo, content, words):
    from task_models import embedding_probe

    model = embedding_probe(tmp_path / "emb.onnx")
    path = tmp_path / "ref.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        np.save(path, np.array([1, "a", None, 2.0], dtype=object), allow_pickle=True)
    else:
        np.save(path, content)
    result = occlude("run", model, photo, "--task", "embed", "--reference-embedding", path, "-o", tmp_path / "o")
    error = one_error(result, 1, "--reference-embedding", *words)
    assert "allow_pickle" not in error and "unsafely" not in error
    assert not (tmp_path / "o").exists()


def test_a_huge_reference_embedding_is_its_direction(tmp_path, photo):
    """Cosine similarity does not depend on the length of the reference: a float64 vector near the largest double
    gives the same map as the same direction at length 1, with no overflow warning on the terminal."""
    from task_models import embedding_probe

    model = embedding_probe(tmp_path / "emb.onnx")
    direction = np.array([1.0, -2.0, 0.5, 3.0])
    np.save(tmp_path / "small.npy", direction)
    np.save(tmp_path / "huge.npy", direction * 1e307)
    result = occlude(
        "run",
        model,
        photo,
        "--task",
        "embed",
        "--reference-embedding",
        tmp_path / "huge.npy",
        "--patch",
        "8",
        "-o",
        tmp_path / "huge",
        "-q",
    )
    assert result.exit_code == 0 and "Warning" not in result.output and "warning" not in result.output, result.output
    small = explain(model, photo, patch=8, task="embed", reference_embedding=str(tmp_path / "small.npy"))
    close(np.load(tmp_path / "huge" / "photo.npy").astype(np.float64), small.map.astype(np.float32).astype(np.float64))
    assert np.abs(small.map).max() > 0


def test_boxes_in_messages_read_as_they_were_typed(tmp_path, photo):
    from task_models import detection_probe, segmentation_probe

    det = detection_probe(tmp_path / "det.onnx", BOXES)
    args = ("run", det, photo, "--task", "detect", "--detect-format", "yolov8", "-o", tmp_path / "o")
    one_error(occlude(*args, "--target-box", "10,10,10,10"), 1, "--target-box 10,10,10,10 is empty")
    error = one_error(occlude("run", det, photo, "--task", "detect", "-o", tmp_path / "o"), 1, "--detect-format")
    assert "None" not in error
    seg = segmentation_probe(tmp_path / "seg.onnx", np.eye(3), np.zeros(3))
    result = occlude("run", seg, photo, "--mask", "0,0,0.2,0.5", "-o", tmp_path / "p")
    one_error(result, 3, "--mask box 0,0,0.2,0.5 is empty")


def test_a_folder_run_of_each_task_is_byte_identical_on_a_rerun(tmp_path):
    """Every file of a folder run with --report (JSON, CSV, HTML, PNG, npy) is the same bytes when run again into
    the same place, for a YOLOv5 detector, a segmentation and an embedding."""
    import shutil

    from task_models import embedding_probe, segmentation_probe

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    runs = {
        "det": (
            yolov5_probe(tmp_path / "y5.onnx", BOXES),
            "--task",
            "detect",
            "--detect-format",
            "yolov5",
            "--conf",
            "0",
        ),
        "seg": (
            segmentation_probe(tmp_path / "seg.onnx", np.eye(3), np.zeros(3)),
            "--task",
            "segment",
            "--target",
            "1",
        ),
        "emb": (embedding_probe(tmp_path / "emb.onnx"), "--task", "embed", "--reference", folder / "img1.png"),
    }
    for name, (model, *args) in runs.items():
        out = tmp_path / name
        common = ("run", model, folder, *args, "--patch", "8", "--report", "--no-timing", "-q", "-o", out)
        assert occlude(*common).exit_code == 0
        first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        shutil.rmtree(out)
        assert occlude(*common).exit_code == 0
        again = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        assert len(first) >= 10 and first == again, name


def test_a_reference_image_whose_embedding_is_zero_names_the_flag(tmp_path, photo):
    from task_models import embedding_probe

    model = embedding_probe(tmp_path / "emb.onnx")
    Image.new("RGB", (8, 8)).save(tmp_path / "black.png")  # the probe's embedding: four zero means
    result = occlude(
        "run", model, photo, "--task", "embed", "--reference", tmp_path / "black.png", "-o", tmp_path / "o"
    )
    one_error(result, 3, "--reference image", "black.png", "all zeros")


# ------------------------------------------------------------------ mask files through a crop or a letterbox


@pytest.fixture
def wide(tmp_path):
    """A 64x32 photo and a 64x32 mask white at x 32..48 (the photo's own pixels), with the same region as a box."""
    rng = np.random.default_rng(8)
    Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    mask = np.zeros((32, 64), np.uint8)
    mask[:, 32:48] = 255
    Image.fromarray(mask).save(tmp_path / "wide.mask.png")
    return tmp_path / "wide.png", tmp_path / "wide.mask.png", (32, 0, 48, 32)


@pytest.mark.parametrize("resize, area", [("center-crop", 16 * 32), ("letterbox", 8 * 16), ("stretch", 8 * 32)])
def test_a_mask_file_follows_the_crop_or_letterbox_like_the_image(tmp_path, wide, resize, area):
    """A mask drawn on the photo marks the same pixels as the same region given as a box, whatever the resize
    (it was stretched over the model's output, off by the crop or the letterbox's padding)."""
    from task_models import segmentation_probe

    photo, mask, box = wide
    model = segmentation_probe(tmp_path / "seg.onnx", np.eye(3), np.zeros(3))
    opened = open_model(model, ModelOptions(resize=resize), task="segment")
    common = dict(preprocessing=opened.preprocessing, patch=8, task="segment", target=1)
    by_file = explain(opened.classifier, photo, mask=str(mask), **common)
    by_box = explain(opened.classifier, photo, mask=box, **common)
    assert by_file.params["task"]["mask"]["area"] == by_box.params["task"]["mask"]["area"] == area
    assert np.array_equal(by_file.map, by_box.map)


def test_a_mask_file_the_crop_cuts_away_is_one_error(tmp_path, wide):
    from task_models import segmentation_probe

    photo, _, _ = wide
    left = np.zeros((32, 64), np.uint8)
    left[:, 0:10] = 255  # only where center-crop cuts
    Image.fromarray(left).save(tmp_path / "left.png")
    model = segmentation_probe(tmp_path / "seg.onnx", np.eye(3), np.zeros(3))
    args = ("run", model, photo, "--task", "segment", "--target", "1", "--resize", "center-crop")
    result = occlude(*args, "--mask", tmp_path / "left.png", "-o", tmp_path / "o")
    one_error(result, 3, "--mask", "left.png", "outside the part of the image the model sees")


def test_check_with_a_mask_file_through_a_letterbox(tmp_path, wide):
    """occlude check's mask region on a letterboxed input: the same numbers as the same region as a box (it
    failed the image with 'ValueError: box offset can't be negative')."""
    from conftest import SAMPLE_MODELS

    photo, mask, box = wide
    model = SAMPLE_MODELS / "digits_cnn.onnx"
    common = ("check", model, photo, "--resize", "letterbox", "--patch", "4", "--json", "-q")
    by_mask = occlude(*common, "--mask", mask, "-o", tmp_path / "a")
    by_box = occlude(*common, "--box", ",".join(map(str, box)), "-o", tmp_path / "b")
    assert by_mask.exit_code == by_box.exit_code == 0, by_mask.output
    rows = [json.loads(r.output)["images"][0] for r in (by_mask, by_box)]
    assert rows[0]["status"] == "pass" and "error" not in str(rows[0].get("error") or "")
    for key in ("energy_share", "pointing_game", "region_fraction"):
        assert rows[0][key] == rows[1][key], key


def test_compare_a_map_of_the_photo_through_a_letterbox(tmp_path, wide):
    """Another method's map at the photo's size is brought onto a letterboxed input like the photo: NaN (no data)
    in the padding, the photo's part resized (it was 'internal error: ValueError: box offset can't be negative')."""
    from conftest import SAMPLE_MODELS

    from occlude_cli.loaders.letterbox import letterbox_box
    from occlude_cli.loaders.maps import resize_map

    photo, _, _ = wide
    values = np.random.default_rng(0).random((32, 64))
    on_input = resize_map(values, (32, 32), original_size=(64, 32), crop_box=letterbox_box((64, 32), (32, 32)))
    assert np.isnan(on_input[:8]).all() and np.isnan(on_input[24:]).all()
    assert np.allclose(on_input[8:24], resize_map(values, (16, 32)), atol=1e-6)
    np.save(tmp_path / "other.npy", values)
    model = SAMPLE_MODELS / "digits_cnn.onnx"
    result = occlude(
        "compare",
        model,
        photo,
        tmp_path / "other.npy",
        "--resize",
        "letterbox",
        "--patch",
        "4",
        "-q",
        "-o",
        tmp_path / "o",
    )
    assert result.exit_code == 0 and "error" not in result.output, result.output


def test_info_reads_every_task_and_says_what_to_choose_where_the_output_cannot(tmp_path):
    """occlude info on models that are not classifiers (it refused them): the task run would read, every output
    of a multi-output detector, and for an output whose shape tells no task, what to give run."""
    from conftest import SAMPLE_MODELS
    from task_models import boxes_probe

    segment = occlude("info", SAMPLE_MODELS / "segment_probe.onnx")
    assert segment.exit_code == 0 and "task          segment" in segment.stdout
    detect = occlude("info", SAMPLE_MODELS / "detect_probe.onnx")
    assert detect.exit_code == 0, detect.output
    assert "not told by the output's shape [dynamic, 7, 3]: run --task detect or --task embed" in detect.stdout
    document = json.loads(occlude("info", SAMPLE_MODELS / "detect_probe.onnx", "--json").stdout)
    assert document["task"] is None and "task auto cannot tell" in document["task_note"]
    assert document["outputs"] == [{"name": "output0", "shape": ["dynamic", 7, 3], "type": "tensor(float)"}]
    told = json.loads(occlude("info", SAMPLE_MODELS / "detect_probe.onnx", "--json", "--task", "detect").stdout)
    assert told["task"] == "detect" and "task_note" not in told
    assert json.loads(occlude("info", SAMPLE_MODELS / "embed_probe.onnx", "--json").stdout)["task"] == "classify"
    assert (
        json.loads(occlude("info", SAMPLE_MODELS / "embed_probe.onnx", "--json", "--task", "embed").stdout)["task"]
        == "embed"
    )
    several = boxes_probe(tmp_path / "boxes.onnx", BOXES)
    text = occlude("info", several)
    assert text.exit_code == 0, text.output
    assert "outputs       boxes [3, 4], scores [3], labels [3]" in text.stdout
    assert "several outputs: run --task detect" in text.stdout
    refused = occlude("info", SAMPLE_MODELS / "detect_probe.onnx", "--task", "classify")
    assert refused.exit_code == 1 and refused.output.startswith("error: output 'output0' has shape")


def test_nms_equals_the_obvious_greedy_loop_and_scales():
    """maths.nms suppresses with one numpy call per kept box (8,400 YOLOv8 candidates at --conf 0 took 3.5 s
    through a Python loop over the kept boxes per candidate): its kept indices and their order equal the
    obvious greedy loop's on 300 random cases with tied scores, empty and NaN boxes and 1-3 classes, and on
    8,400 boxes of 80 classes."""
    from occlude_cli.analyses.tasks.maths import iou, nms

    def greedy(boxes, scores, classes, threshold):
        kept = []
        for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
            same = [k for k in kept if classes[k] == classes[i]]
            if not same or np.max(iou(boxes[i], boxes[same])) <= threshold:
                kept.append(int(i))
        return np.asarray(kept, dtype=np.int64)

    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(0, 60))
        corner, size = rng.integers(0, 20, (n, 2)).astype(float), rng.integers(0, 12, (n, 2)).astype(float)
        boxes = np.concatenate([corner, corner + size], axis=1)
        if trial % 5 == 0 and n:
            boxes[rng.integers(0, n)] = np.nan
        scores, classes = rng.integers(0, 5, n).astype(float), rng.integers(0, int(rng.integers(1, 4)), n)
        threshold = float(rng.choice([0.0, 0.3, 0.5, 1.0]))
        assert np.array_equal(nms(boxes, scores, classes, threshold), greedy(boxes, scores, classes, threshold))
    corner = rng.uniform(0, 600, (8400, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(5, 80, (8400, 2))], axis=1)
    scores, classes = rng.random(8400), rng.integers(0, 80, 8400)
    assert np.array_equal(nms(boxes, scores, classes, 0.45), greedy(boxes, scores, classes, 0.45))
