"""Model folders as a hostile newcomer hands them over: id2label keys that are not plain class indices or are
written twice, and class names holding terminal escapes, line breaks and bidirectional overrides, which every
output (terminal, JSON, CSV, HTML, manifest) must show escaped."""

import json
import re

import pytest
from typer.testing import CliRunner

from occlude_cli import OccludeError
from occlude_cli.analyses.preprocessing import open_model
from occlude_cli.cli.app import app

from conftest import SAMPLE_IMAGES
from onnx_models import mean_colour_model
from test_model_files import VIT as VIT_224

CAT = SAMPLE_IMAGES / "cat.jpg"
VIT = {**VIT_224, "size": {"height": 64, "width": 64}}
# characters no output may carry raw: C0/C1 controls (but the line ends of the files themselves), DEL,
# bidirectional controls, line and paragraph separators
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def folder(path, config: bytes, classes: int = 3):
    path.mkdir()
    mean_colour_model(path / "model.onnx", classes, shape=["batch", 3, 64, 64])
    (path / "preprocessor_config.json").write_text(json.dumps(VIT), encoding="utf-8")
    (path / "config.json").write_bytes(config)
    return path


@pytest.mark.parametrize(
    "keys, shown",
    [
        ((" 0", "1", "2"), '" 0"'),
        (("0", "1", "+2"), '"+2"'),
        (("0", "1 ", "2"), '"1 "'),
        (("\u0660", "1", "2"), '"\\u0660"'),  # ARABIC-INDIC DIGIT ZERO: int() reads it as 0
        (("0", "00", "1"), '"00"'),
        (("0", "1", "2.0"), '"2.0"'),
        (("0", "1", "\x1b[2J"), '"\\u001b[2J"'),
    ],
)
def test_id2label_keys_must_be_plain_class_indices(tmp_path, keys, shown):
    config = json.dumps({"id2label": dict(zip(keys, "abc"))}).encode()
    model = folder(tmp_path / "m", config)
    with pytest.raises(OccludeError, match="id2label keys must be class indices") as info:
        open_model(model)
    assert shown in str(info.value)
    result = CliRunner().invoke(app, ["run", str(model), str(CAT), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "\x1b" not in result.output, result.output


def test_id2label_keys_written_twice_are_refused_not_last_wins(tmp_path):
    config = b'{"id2label": {"0": "tench", "1": "goldfish", "1": "shark", "2": "ray"}}'
    model = folder(tmp_path / "m", config)
    with pytest.raises(OccludeError, match="config.json: id2label names class 1 twice"):
        open_model(model)


def test_hostile_class_names_are_escaped_in_every_output(tmp_path):
    names = ["\x1b]0;pwned\x07tench", "gold\nfish\r\x00", "\u202egnp.exe\u2066"]
    model = folder(tmp_path / "m", json.dumps({"id2label": dict(enumerate(names))}).encode())
    out = tmp_path / "o"
    args = ["run", str(model), str(CAT), "-o", str(out), "--patch", "16", "--top-k", "3", "--report", "--no-timing"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not RAW.search(result.output), repr(result.output)
    info = CliRunner().invoke(app, ["info", str(model), "--labels"])
    assert info.exit_code == 0 and not RAW.search(info.output), repr(info.output)
    assert "\\x1b]0;pwned\\x07tench" in info.output and "\\u202egnp.exe\\u2066" in info.output
    texts = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".csv", ".html")]
    assert {p.suffix for p in texts} == {".json", ".csv", ".html"}
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert not RAW.search(text), (path.name, RAW.search(text))
    record = json.loads((out / "cat.json").read_text())
    top = [entry["label"] for entry in record["top_k"]]
    assert sorted(top) == sorted(["\\x1b]0;pwned\\x07tench", "gold\\nfish\\r\\x00", "\\u202egnp.exe\\u2066"])


def test_a_processor_that_does_not_resize_is_not_stretched_in_silence(tmp_path):
    """transformers with do_resize false cuts crop_size from the photo at its own size (or passes it whole): no
    resize occlude can reproduce for photos of any size, so it asks, instead of stretching the photo."""
    cases = {
        "crop": {**VIT, "do_resize": False, "do_center_crop": True, "crop_size": {"height": 64, "width": 64}},
        "whole": {**VIT, "do_resize": False},
    }
    for name, processor in cases.items():
        model = folder(tmp_path / name, b'{"model_type": "vit"}')
        (model / "preprocessor_config.json").write_text(json.dumps(processor), encoding="utf-8")
        with pytest.raises(OccludeError, match="preprocessor_config.json: do_resize false") as info:
            open_model(model)
        assert set(info.value.params) == {"resize", "resize_short"}
        result = CliRunner().invoke(app, ["run", str(model), str(CAT), "-o", str(tmp_path / name / "o")])
        assert result.exit_code == 1 and "--resize" in result.output and result.output.count("\n") == 1
        given = CliRunner().invoke(
            app, ["run", str(model), str(CAT), "--resize", "stretch", "-q", "--patch", "32", "-o", str(tmp_path / "s")]
        )
        assert given.exit_code == 0, given.output
