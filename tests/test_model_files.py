"""Models as users export them, without the libraries that made them (tests/test_ecosystem.py compares with those
libraries): a model folder (optimum's layout, a hub snapshot of symlinks, an onnx/ sub-folder), the files beside a
model read as hostile outside text, where each preprocessing value comes from (and that the run records it), the
resize-and-crop geometry, the presets and --labels imagenet."""

import dataclasses
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import OccludeError, explain
from occlude_cli.analyses.preprocessing import ModelOptions, open_model
from occlude_cli.cli.app import app
from occlude_cli.loaders.images import Preprocessing, prepare_image, resize_geometry
from occlude_cli.loaders.model import OnnxClassifier
from occlude_cli.loaders.modelfiles import MAX_JSON_BYTES, find_model_file, imagenet_labels

from conftest import SAMPLE_IMAGES
from onnx_models import mean_colour_logits, mean_colour_model

CAT = SAMPLE_IMAGES / "cat.jpg"  # 451 x 300
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# preprocessor_config.json as transformers 5.25's save_pretrained writes them (tests/test_ecosystem.py writes
# them with transformers itself and compares the input tensors with its processors)
VIT = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 224, "width": 224},
}
CONVNEXT = {**VIT, "image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "resample": 3}
CONVNEXT["size"] = {"shortest_edge": 224}
CLIP = {
    **VIT,
    "image_processor_type": "CLIPImageProcessor",
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "resample": 3,
    "size": {"shortest_edge": 224},
}


def write(path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def hf_folder(folder, processor=VIT, labels=None, classes=1000, **model):
    """A folder laid out as optimum exports a transformers image classifier."""
    folder.mkdir(parents=True, exist_ok=True)
    mean_colour_model(folder / "model.onnx", classes, **model)
    write(folder / "preprocessor_config.json", processor)
    names = labels if labels is not None else [f"class name {i}" for i in range(classes)]
    write(folder / "config.json", {"model_type": "vit", "id2label": {str(i): n for i, n in enumerate(names)}})
    return folder


def timm_config(**pretrained):
    base = {"input_size": [3, 160, 160], "interpolation": "bicubic", "crop_pct": 0.95, "crop_mode": "center"}
    base.update({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], **pretrained})
    return {"architecture": "test_vit", "num_classes": 4, "label_names": list("abcd"), "pretrained_cfg": base}


# ------------------------------------------------------------------------------------------ the model folder


def test_a_folder_is_a_model(tmp_path):
    folder = hf_folder(tmp_path / "vit")
    assert find_model_file(folder) == folder / "model.onnx"
    mean_colour_model(folder / "model_quantized.onnx")
    assert find_model_file(folder) == folder / "model.onnx"  # model.onnx wins over the others
    single = tmp_path / "single"
    single.mkdir()
    mean_colour_model(single / "resnet.onnx")
    assert find_model_file(single) == single / "resnet.onnx"
    mean_colour_model(single / "other.onnx")
    with pytest.raises(OccludeError, match=r"2 \.onnx files and no model\.onnx \(other\.onnx, resnet\.onnx\)"):
        find_model_file(single)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(OccludeError, match="no .onnx model in folder"):
        find_model_file(empty)
    file = folder / "model.onnx"
    assert find_model_file(file) == file


def test_a_hub_repository_with_an_onnx_sub_folder(tmp_path):
    """Hub repositories that also hold other weights keep the export in onnx/, the configs at the top."""
    repo = hf_folder(tmp_path / "repo", labels=["left", "right"], classes=2)
    (repo / "onnx").mkdir()
    (repo / "model.onnx").rename(repo / "onnx" / "model.onnx")
    opened = open_model(repo)
    assert opened.classifier.path == repo / "onnx" / "model.onnx"
    assert opened.labels == ["left", "right"]
    assert dict(opened.preprocessing.sources)["mean"] == "repo/preprocessor_config.json: image_mean"


# ----------------------------------------------------------------------------- what the files say, and why


def test_hugging_face_vit_folder(tmp_path):
    opened = open_model(hf_folder(tmp_path / "vit", labels=[f"n{i}" for i in range(1000)]))
    pre = opened.preprocessing
    assert (pre.size, pre.layout, pre.color, pre.resize, pre.resize_to) == ((224, 224), "NCHW", "rgb", "stretch", None)
    assert (pre.mean, pre.std, pre.interpolation, pre.resampler) == ((0.5,) * 3, (0.5,) * 3, "bilinear", "torch")
    assert pre.scale == pytest.approx(1 / 255)
    sources = dict(pre.sources)
    assert sources["size"] == "preprocessor_config.json: size"
    assert sources["layout"] == "preprocessor_config.json: transformers' pixel_values"  # the input says nothing
    assert sources["interpolation"] == "preprocessor_config.json: resample"
    assert sources["labels"] == "config.json: id2label"
    assert opened.labels[7] == "n7"


def test_files_torch_resampler_gives_way_where_torch_has_no_kernel(tmp_path):
    """A Hugging Face config's resampler is torch (transformers 5's default backend); for lanczos and nearest
    (from the file or a flag) and a center-crop resize, where torch has no uint8 kernel, it is Pillow's."""
    lanczos = open_model(hf_folder(tmp_path / "lanczos", {**VIT, "resample": 1})).preprocessing
    assert (lanczos.interpolation, lanczos.resampler) == ("lanczos", "pil")
    assert (
        dict(lanczos.sources)["resampler"] == "preprocessor_config.json: transformers 5's default torchvision "
        "backend, pil for lanczos"
    )
    folder = hf_folder(tmp_path / "vit")
    for options, want in (
        (ModelOptions(interpolation="nearest"), "pil"),
        (ModelOptions(resize="center-crop"), "pil"),
        (ModelOptions(interpolation="bicubic"), "torch"),
    ):
        assert open_model(folder, options).preprocessing.resampler == want, options
    with pytest.raises(OccludeError, match="resampler torch does not do lanczos"):  # asked for: refused, not changed
        open_model(folder, ModelOptions(interpolation="lanczos", resampler="torch"))


def test_convnext_crop_pct_and_clip_center_crop(tmp_path):
    pre = open_model(hf_folder(tmp_path / "convnext", CONVNEXT)).preprocessing
    assert (pre.size, pre.resize, pre.resize_to, pre.interpolation) == ((224, 224), "short-side", (256,), "bicubic")
    assert pre.crop_offset == "floor"  # transformers' center crop starts at margin // 2
    assert dict(pre.sources)["resize"] == "preprocessor_config.json: int(size.shortest_edge / crop_pct)"
    big = {**CONVNEXT, "size": {"shortest_edge": 384}}  # ConvNeXt warps from 384 on
    pre = open_model(hf_folder(tmp_path / "convnext384", big)).preprocessing
    assert (pre.size, pre.resize, pre.resize_to) == ((384, 384), "stretch", None)
    pre = open_model(hf_folder(tmp_path / "clip", CLIP)).preprocessing
    assert (pre.size, pre.resize, pre.resize_to, pre.crop_offset) == ((224, 224), "short-side", (224,), "floor")
    deit = {
        **VIT,
        "size": {"height": 256, "width": 256},
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
    }
    pre = open_model(hf_folder(tmp_path / "deit", deit)).preprocessing
    assert (pre.size, pre.resize, pre.resize_to) == ((224, 224), "stretch", (256, 256))
    old = {**CLIP, "size": 224, "crop_size": 224}  # older transformers wrote plain numbers
    assert open_model(hf_folder(tmp_path / "old", old)).preprocessing.resize_to == (224,)


def test_timm_config_both_forms(tmp_path):
    folder = tmp_path / "timm"
    folder.mkdir()
    mean_colour_model(folder / "model.onnx", 4, input_name="input", shape=["batch", 3, 160, 160])
    write(folder / "config.json", timm_config())
    opened = open_model(folder)
    pre = opened.preprocessing
    assert (pre.size, pre.resize, pre.resize_to, pre.interpolation) == ((160, 160), "short-side", (168,), "bicubic")
    assert (pre.crop_offset, pre.resampler, pre.mean) == ("round", "pil", (0.5,) * 3)
    assert dict(pre.sources)["resize"] == (
        "config.json: floor(pretrained_cfg.input_size / crop_pct) (pretrained_cfg.crop_pct)"
    )
    assert opened.labels == list("abcd") and dict(pre.sources)["labels"] == "config.json: label_names"
    flat = {"architecture": "x", "input_size": [3, 160, 160], "crop_pct": 0.875, "labels": list("wxyz")}
    write(folder / "config.json", flat)  # timm before 0.9: one flat config, "labels"; defaults for the rest
    opened = open_model(folder)
    assert opened.preprocessing.resize_to == (182,) and opened.preprocessing.mean == tuple(IMAGENET_MEAN)
    assert opened.preprocessing.interpolation == "bicubic" and opened.labels == list("wxyz")
    write(folder / "config.json", timm_config(crop_mode="squash"))
    pre = open_model(folder).preprocessing
    assert (pre.resize, pre.resize_to) == ("stretch", (168, 168))
    write(folder / "config.json", timm_config(crop_mode="border"))
    with pytest.raises(OccludeError, match="crop_mode 'border'.*not supported: give resize or resize_short"):
        open_model(folder)
    assert open_model(folder, ModelOptions(resize_short=200)).preprocessing.resize_to == (200,)


def test_order_of_precedence_and_sources(tmp_path):
    """given > preset > the model's metadata > occlude.json > preprocessor_config.json > timm's config.json."""
    meta = {"occlude.preprocess": json.dumps({"scale": 0.5})}
    folder = hf_folder(tmp_path / "all", CONVNEXT, metadata=meta)
    write(folder / "occlude.json", {"std": [0.25], "interpolation": "lanczos"})
    opened = open_model(folder, ModelOptions(mean=[0.1, 0.2, 0.3]))
    pre, sources = opened.preprocessing, dict(opened.preprocessing.sources)
    assert pre.mean == (0.1, 0.2, 0.3) and sources["mean"] == "given"
    assert pre.scale == 0.5 and sources["scale"] == "model metadata (occlude.preprocess): scale"
    assert pre.std == (0.25,) and sources["std"] == "occlude.json: std"
    assert pre.interpolation == "lanczos" and sources["interpolation"] == "occlude.json: interpolation"
    assert pre.resize_to == (256,) and sources["resize"].startswith("preprocessor_config.json")
    assert sources["layout"] == "preprocessor_config.json: transformers' pixel_values"
    # the resize and crop come as one group: a resize given replaces the file's crop_pct and its crop
    assert open_model(folder, ModelOptions(resize="stretch")).preprocessing.resize_to is None
    assert open_model(folder, ModelOptions(resize_short=300)).preprocessing.resize_to == (300,)
    # a preset is below the flags, above everything the model carries
    pre = open_model(folder, ModelOptions(preprocess="torchvision", std=[1.0])).preprocessing
    assert pre.mean == tuple(IMAGENET_MEAN) and pre.std == (1.0,) and pre.scale == pytest.approx(1 / 255)
    assert dict(pre.sources)["mean"] == "preset torchvision"
    assert (pre.interpolation, pre.crop_offset) == ("bilinear", "round")


def test_run_records_where_each_value_came_from(tmp_path):
    folder = hf_folder(tmp_path / "vit", labels=[f"colour {i}" for i in range(1000)])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(folder), str(CAT), "--out", str(out), "--patch", "56", "-q"])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "cat.json").read_text())
    pre = document["params"]["preprocessing"]
    assert pre["sources"]["mean"] == "preprocessor_config.json: image_mean"
    assert pre["sources"]["labels"] == "config.json: id2label"
    assert (pre["resampler"], pre["interpolation"], pre["resize"]) == ("torch", "bilinear", "stretch")
    assert document["model"]["path"] == str(folder / "model.onnx")
    assert document["model"]["files"] == ["preprocessor_config.json", "config.json"]
    # ground truth: the model ran on exactly the input occlude prepared (its logits are a function of the input)
    prepared = prepare_image(CAT, open_model(folder).preprocessing)
    logits = mean_colour_logits(folder / "model.onnx", prepared.model_input)
    assert document["target"]["index"] == int(np.argmax(logits))
    assert document["target"]["label"] == f"colour {int(np.argmax(logits))}"


def test_info_shows_the_files_and_sources(tmp_path):
    folder = hf_folder(tmp_path / "convnext", CONVNEXT)
    result = CliRunner().invoke(app, ["info", str(folder)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "files         preprocessor_config.json, config.json" in text
    assert "resize short side to 256 (bicubic, torch resampler), center crop 224x224" in text
    assert "mean: from preprocessor_config.json: image_mean" in text
    assert "interpolation: from preprocessor_config.json: resample" in text
    assert "(from config.json: id2label)" in text
    document = json.loads(CliRunner().invoke(app, ["info", str(folder), "--json"]).stdout)
    assert document["preprocessing"]["resize_to"] == [256] and document["labels_source"] == "config.json: id2label"


def test_a_config_that_describes_another_model_is_refused(tmp_path):
    folder = hf_folder(tmp_path / "fixed", {**VIT, "size": {"height": 384, "width": 384}}, shape=["b", 3, 224, 224])
    with pytest.raises(
        OccludeError, match="preprocessor_config.json: size says 384x384 but the model's input is 224x224"
    ):
        open_model(folder)


# --------------------------------------------------------------------------------------------------- labels


def test_labels_from_files_are_checked_against_the_model(tmp_path):
    folder = hf_folder(tmp_path / "two", labels=["a", "b"], classes=3)
    with pytest.raises(OccludeError, match="config.json: id2label names 2 classes but the model has 3: give labels"):
        open_model(folder)
    assert open_model(folder, ModelOptions(labels=["x", "y", "z"])).labels == ["x", "y", "z"]
    placeholder = hf_folder(tmp_path / "placeholder", labels=["LABEL_0", "LABEL_1", "LABEL_2"], classes=3)
    assert open_model(placeholder).labels is None  # transformers' default names say nothing


def test_labels_imagenet(tmp_path, monkeypatch):
    names = imagenet_labels()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[281], names[285], names[999]) == ("tench", "tabby", "Egyptian cat", "toilet tissue")
    model = mean_colour_model(tmp_path / "bare.onnx", input_name="input", shape=["N", 3, 224, 224])
    opened = open_model(model, ModelOptions(labels="imagenet"))
    assert opened.labels == names
    assert dict(opened.preprocessing.sources)["labels"] == "given: imagenet (occlude's ImageNet-1k list)"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["run", str(model), str(CAT), "--labels", "imagenet", "--target", "tabby", "-o", str(out), "--patch", "112"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "cat.json").read_text())["target"] == {"index": 281, "label": "tabby"}
    (tmp_path / "imagenet").write_text("\n".join(f"mine {i}" for i in range(1000)))
    monkeypatch.chdir(tmp_path)  # a file named imagenet is ./imagenet
    assert open_model(model, ModelOptions(labels=tmp_path / "imagenet")).labels[3] == "mine 3"
    from occlude_cli.cli.parse import labels

    assert labels("./imagenet") != "imagenet" and labels("imagenet") == "imagenet"


def test_hostile_names_in_a_config_are_shown_escaped(tmp_path):
    evil = ["\x1b]0;pwned\x07tench", "\x1b[2Jgoldfish\nrm -rf /", "ok"]
    folder = hf_folder(tmp_path / "evil", labels=evil, classes=3)
    result = CliRunner().invoke(app, ["info", str(folder), "--labels"])
    assert result.exit_code == 0 and "\x1b" not in result.stdout and "\\x1b]0;pwned" in result.stdout
    result = CliRunner().invoke(app, ["run", str(folder), str(CAT), "-o", str(tmp_path / "o"), "--patch", "112"])
    assert result.exit_code == 0 and "\x1b" not in result.output


# ------------------------------------------------------------------------------ the presets and the flags


def test_preset_torchvision(tmp_path):
    bare = mean_colour_model(tmp_path / "resnet.onnx", input_name="input", shape=["batch", 3, 224, 224])
    opened = open_model(bare, ModelOptions(preprocess="torchvision"))
    pre = opened.preprocessing
    assert (pre.resize, pre.resize_to, pre.interpolation, pre.resampler) == ("short-side", (256,), "bilinear", "pil")
    assert pre.mean == tuple(IMAGENET_MEAN) and pre.std == tuple(IMAGENET_STD)
    assert opened.labels == imagenet_labels()  # 1000 outputs and no names of its own
    assert dict(pre.sources)["labels"] == "preset torchvision: ImageNet-1k names (1000 outputs)"
    small = mean_colour_model(tmp_path / "ten.onnx", 10, input_name="input", shape=["batch", 3, 224, 224])
    assert open_model(small, ModelOptions(preprocess="torchvision")).labels is None
    big = mean_colour_model(tmp_path / "big.onnx", input_name="input", shape=["batch", 3, 299, 299])
    with pytest.raises(OccludeError, match="resize_short 256 is smaller than the input size 299x299") as info:
        open_model(big, ModelOptions(preprocess="torchvision"))
    assert info.value.params == ("resize_short",)
    # the same through occlude.json beside the model: no flag at all
    folder = tmp_path / "tv"
    folder.mkdir()
    mean_colour_model(folder / "model.onnx", input_name="input", shape=["batch", 3, 224, 224])
    write(folder / "occlude.json", {"preprocess": "torchvision"})
    opened = open_model(folder)
    assert opened.preprocessing.resize_to == (256,) and opened.labels == imagenet_labels()
    assert dict(opened.preprocessing.sources)["mean"] == "occlude.json: preprocess torchvision"


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["--resize-short", "200"], "--resize-short 200 is smaller than the input size 224x224", 1),
        (["--resize-short", "256", "--resize", "stretch"], "give --resize or --resize-short, not both", 1),
        (["--interpolation", "box"], "--interpolation takes nearest, bilinear, bicubic or lanczos, got 'box'", 2),
        (["--preprocess", "keras"], "--preprocess takes torchvision, got 'keras'", 2),
        (["--resize-short", "1000000000"], "--resize-short must be 1 to 65536 pixels, got 1000000000", 1),
    ],
)
def test_bad_flags(tmp_path, args, message, code):
    model = mean_colour_model(tmp_path / "m.onnx", input_name="input", shape=["batch", 3, 224, 224])
    result = CliRunner().invoke(app, ["run", str(model), str(CAT), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------ files as hostile outside text


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must hold a JSON object, got list"),
        (b"[" * 100000, "not valid UTF-8 JSON"),
        (json.dumps({**VIT, "resample": 4}).encode(), "resample is 4 \\(PIL box\\)"),
        (json.dumps({**VIT, "image_mean": ["0.5"]}).encode(), "image_mean must be a finite number"),
        (json.dumps({**VIT, "image_std": 1e400}).encode(), "not valid UTF-8 JSON|must be a finite number"),
        (json.dumps({**VIT, "size": {"height": 10**9, "width": 2}}).encode(), "whole number of pixels"),
        (json.dumps({**VIT, "image_std": [0, 0, 0]}).encode(), "image_std must be non-zero"),
        (json.dumps({**VIT, "rescale_factor": 0}).encode(), "rescale_factor must be non-zero"),
        (json.dumps({**CONVNEXT, "crop_pct": 1e-9}).encode(), "resize to 224000000000 pixels is over 65536"),
        (json.dumps({**CONVNEXT, "crop_pct": 1e300}).encode(), "resize to 0 is smaller than the input size 224x224"),
    ],
)
def test_bad_processor_configs_are_one_error(tmp_path, content, message):
    folder = hf_folder(tmp_path / "bad")
    (folder / "preprocessor_config.json").write_bytes(content)
    with pytest.raises(OccludeError, match=message):
        open_model(folder)


def test_bad_files_beside_the_model(tmp_path):
    folder = hf_folder(tmp_path / "bad")
    config = folder / "config.json"
    config.unlink()
    config.symlink_to(folder / "nowhere.json")
    with pytest.raises(OccludeError, match="broken symlink"):
        open_model(folder)
    config.unlink()
    config.symlink_to(config)  # a loop
    with pytest.raises(OccludeError, match="cannot read .*config.json"):
        open_model(folder)
    config.unlink()
    with open(config, "wb") as handle:  # sparse: nothing is written
        handle.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(OccludeError, match="a model configuration is at most"):
        open_model(folder)
    config.unlink()
    write(config, {"id2label": {"0": "a", "2": "c"}})
    with pytest.raises(OccludeError, match="id2label must name every class 0..1 once"):
        open_model(folder)
    config.unlink()
    write(folder / "occlude.json", {"meen": [0.5]})
    with pytest.raises(OccludeError, match="occlude.json: unknown key\\(s\\) 'meen'"):
        open_model(folder)


def test_absurd_values_in_any_file_are_one_error_naming_the_file(tmp_path):
    """Sizes no photo can be resized to, zero std or scale: refused when the model opens, with the file and the key
    named (not a flag the user never typed), on the terminal as one `error:` line, exit 1."""
    cases = [
        ("timm", "config.json", timm_config(crop_pct=1e-9), "config.json: floor(pretrained_cfg.input_size / crop_pct)"),
        ("timm", "config.json", timm_config(std=[0, 0.5, 0.5]), "config.json: pretrained_cfg.std must be non-zero"),
        ("own", "occlude.json", {"crop_pct": 1e-9}, "occlude.json: crop_pct: resize to 224000000000 pixels is over"),
        ("own", "occlude.json", {"scale": 0}, "occlude.json: scale must be non-zero"),
        ("own", "occlude.json", {"resize_short": 100}, "occlude.json: resize_short: resize to 100 is smaller than"),
    ]
    for index, (kind, name, content, message) in enumerate(cases):
        folder = tmp_path / str(index)
        folder.mkdir()
        size = 160 if kind == "timm" else 224
        mean_colour_model(folder / "model.onnx", 4, input_name="input", shape=["batch", 3, size, size])
        write(folder / name, content)
        result = CliRunner().invoke(app, ["run", str(folder), str(CAT), "-o", str(tmp_path / f"o{index}")])
        assert result.exit_code == 1, (message, result.output)
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert message in result.output and "--" not in result.output, result.output
        assert not (tmp_path / f"o{index}").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_config_is_refused_without_blocking(tmp_path):
    folder = hf_folder(tmp_path / "fifo")
    (folder / "preprocessor_config.json").unlink()
    os.mkfifo(folder / "preprocessor_config.json")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_error_of(lambda: open_model(folder))), daemon=True)
    worker.start()
    worker.join(20)
    assert outcome and "is not a regular file, not read" in outcome[0]


def _error_of(call) -> str:
    try:
        call()
    except OccludeError as exc:
        return str(exc)
    return "no error"


def test_hub_cache_snapshot_of_symlinks(tmp_path):
    """The Hugging Face hub cache: snapshots/REV/ holds symlinks into the repository's blobs/, external data
    included; a data symlink anywhere else is still refused."""
    import onnx

    source = hf_folder(tmp_path / "export", labels=["a", "b", "c"], classes=3)
    model = onnx.load(str(source / "model.onnx"))
    onnx.save(
        model, str(source / "model.onnx"), save_as_external_data=True, location="model.onnx_data", size_threshold=0
    )
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for index, name in enumerate(["model.onnx", "model.onnx_data", "config.json", "preprocessor_config.json"]):
        (source / name).rename(repo / "blobs" / f"blob{index}")
        (snapshot / name).symlink_to(f"../../blobs/blob{index}")
    explanation = explain(snapshot, CAT, patch=112)
    assert explanation.labels == ["a", "b", "c"] and np.isfinite(explanation.map).all()
    assert OnnxClassifier(snapshot).path == snapshot / "model.onnx"  # not the blob: the configs sit beside it
    from occlude_cli.inference.onnxfile import load_model

    assert load_model(snapshot / "model.onnx").graph.initializer[0].raw_data  # the weights read through the link
    from occlude_cli.inference import facts

    facts._memo.clear()  # the graph facts of this file are remembered in this process: read them again
    outside = tmp_path / "elsewhere.data"
    (repo / "blobs" / "blob1").rename(outside)
    (snapshot / "model.onnx_data").unlink()
    (snapshot / "model.onnx_data").symlink_to(outside)
    with pytest.raises(OccludeError, match="outside the model's folder"):
        OnnxClassifier(snapshot)


# ------------------------------------------------------------------------------------- geometry and pixels


def test_resize_geometry_follows_each_library():
    # short side 300 -> 256, long side int(256 * 451 / 300) = 384, crop 224 from (384 - 224) / 2 = 80
    geometry = resize_geometry((451, 300), (224, 224), "short-side", (256,))
    assert geometry.resized == (384, 256) and geometry.crop == (80, 16)
    assert geometry.box == pytest.approx((80 * 451 / 384, 16 * 300 / 256, 304 * 451 / 384, 240 * 300 / 256))
    # an odd margin: 259 - 224 = 35; torchvision and timm start at round(17.5) = 18, transformers at 17
    assert resize_geometry((304, 300), (224, 224), "short-side", (256,), "round").crop == (18, 16)
    assert resize_geometry((304, 300), (224, 224), "short-side", (256,), "floor").crop == (17, 16)
    assert resize_geometry((300, 451), (224, 224), "short-side", (256,)).resized == (256, 384)  # portrait
    assert resize_geometry((451, 300), (224, 224), "stretch", (256, 256)).crop == (16, 16)
    assert resize_geometry((451, 300), (224, 224), "stretch").box == (0.0, 0.0, 451.0, 300.0)


def test_preprocessing_refuses_a_resize_the_input_does_not_fit():
    with pytest.raises(OccludeError, match="resize_short 200 is smaller"):
        Preprocessing(size=(224, 224), resize="short-side", resize_to=(200,))
    with pytest.raises(OccludeError, match="needs resize_to"):
        Preprocessing(size=(224, 224), resize="short-side")
    with pytest.raises(OccludeError, match="at least the input size"):
        Preprocessing(size=(224, 224), resize="stretch", resize_to=(200, 256))
    with pytest.raises(OccludeError, match="takes no resize_to"):
        Preprocessing(size=(224, 224), resize="center-crop", resize_to=(256,))
    with pytest.raises(OccludeError, match="unknown interpolation 'box'"):
        Preprocessing(size=(224, 224), interpolation="box")
    assert Preprocessing(size=(8, 8)).resampler == "float"  # occlude's own resize, unchanged
    assert Preprocessing(size=(8, 8), resize="short-side", resize_to=(9,)).resampler == "pil"


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_pil_resampler_is_pillow_on_the_8_bit_photo(interpolation):
    """What torchvision, timm and transformers do to a PIL image: resize the whole photo, then cut the crop."""
    photo = Image.open(CAT).convert("RGB")
    pre = Preprocessing(size=(224, 224), resize="short-side", resize_to=(256,), interpolation=interpolation)
    filters = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}
    want = np.asarray(photo.resize((384, 256), filters[interpolation]).crop((80, 16, 304, 240)), dtype=np.float32)
    assert np.array_equal(prepare_image(CAT, pre).pixels, want)
    floats = prepare_image(CAT, dataclasses.replace(pre, resampler="float")).pixels
    gap = np.abs(floats - want).max()  # the float resampler rounds nothing: within a level or two of 8 bits
    assert (gap == 0 if interpolation == "nearest" else 0 < gap < 2.5) and floats.min() >= 0 and floats.max() <= 255
