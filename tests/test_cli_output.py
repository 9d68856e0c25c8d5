"""What people and CI logs see: one line per finished image when stderr is not a terminal, a table that never
breaks a path mid-name, readable `occlude info`, label suggestions, and notebook display."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import explain
from occlude_cli.cli import app
from occlude_cli.cli.show import shorten_path

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
EFFNET = str(SAMPLE_MODELS / "efficientnet_lite0.onnx")


def test_piped_run_prints_one_line_per_finished_image_and_keeps_stdout_clean(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "occlude_cli",
        "run",
        DIGITS,
        str(SAMPLE_IMAGES / "digit_0.png"),
        str(SAMPLE_IMAGES / "digit_3.png"),
        str(SAMPLE_IMAGES / "digit_7.png"),
        "--out",
        str(out),
        "--json",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stderr.readline()  # arrives while the run goes on, not all at the end
    rest, stdout = process.stderr.read(), process.stdout.read()  # (communicate() would lose readline's buffer)
    process.wait(timeout=120)
    lines = [first] + rest.splitlines()
    done = [dict(p.split("=", 1) for p in line.split()) for line in lines if line.startswith("status=ok ")]
    assert [d["image"].rsplit("/", 1)[-1] for d in done] == ["digit_0.png", "digit_3.png", "digit_7.png"]
    assert all("target" in d and "score" in d for d in done) and done[0]["done"] == "1/3"
    assert json.loads(stdout)["counts"]["ok"] == 3  # stdout holds the JSON and nothing else


def test_quiet_prints_no_per_image_lines(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "occlude_cli",
            "run",
            DIGITS,
            str(SAMPLE_IMAGES / "digit_0.png"),
            "--out",
            str(tmp_path / "o"),
            "-q",
            "--score",
            "logit",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_table_shortens_long_paths_at_folder_boundaries(tmp_path):
    deep = tmp_path / "a_rather_long_folder_name" / "another_long_folder_name" / "and_one_more_level"
    deep.mkdir(parents=True)
    image = deep / "digit_three_sample.png"
    Image.open(SAMPLE_IMAGES / "digit_3.png").save(image)
    result = CliRunner().invoke(
        app, ["run", DIGITS, str(image), "--out", str(tmp_path / "o"), "--score", "logit"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "digit_three_sample.png" in result.stdout  # the file name is never cut
    assert "…/" in result.stdout
    assert shorten_path("a/b/c/name.png", 12) == "…/c/name.png" and shorten_path("a/b/c/name.png", 11) == "…/name.png"
    assert shorten_path("short.png", 40) == "short.png"
    assert shorten_path("x" * 50, 10) == "xxx…xxxxxx"  # a name too long alone: shortened in the middle


def test_info_is_readable_and_lists_labels():
    text = CliRunner().invoke(app, ["info", EFFNET]).stdout
    assert "{" not in text and "None" not in text  # no Python reprs
    assert "input_shape   [dynamic, 3, 224, 224]" in text and "final_op      Gemm" in text
    labels = CliRunner().invoke(app, ["info", DIGITS, "--labels"]).stdout.splitlines()
    assert labels[0].split() == ["0", "0"] and len(labels) == 10
    document = json.loads(CliRunner().invoke(app, ["info", EFFNET, "--json", "--labels"]).stdout)
    assert document["label_names"][285] == "Egyptian cat" and document["labels"] == 1000


def test_near_miss_labels_get_suggestions(tmp_path):
    result = CliRunner().invoke(
        app, ["run", EFFNET, str(SAMPLE_IMAGES / "cat.jpg"), "--target", "egyptain cat", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "did you mean" in result.stderr and "Egyptian cat" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explanation_displays_itself_in_notebooks():
    e = explain(DIGITS, SAMPLE_IMAGES / "digit_3.png", score="logit")
    png = e._repr_png_()
    assert png.startswith(b"\x89PNG")
    import io

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    assert (np.abs(image[..., 0] - image[..., 2]) > 60).mean() > 0.02  # the map is in it
    on_original = e.map_on_original()
    assert on_original.shape == (8, 8) and np.allclose(on_original, e.map, atol=1e-6)
    import matplotlib

    matplotlib.use("Agg")
    ax = e.plot()
    assert ax.images and ax.images[0].get_array().shape[:2] == image.shape[:2]
