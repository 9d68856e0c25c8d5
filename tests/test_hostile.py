"""Hostile inputs and faults (issue 10): one test (or more) per point of the issue, on a corpus made at test
time: decompression bombs (a PNG declaring 13000x13000 in 2.5 KB), crafted models (a huge declared input, a
NaN head, external data pointing outside, not a classifier), odd file names (formulas, newlines, 245
characters), a FIFO, a disk that fills up (RLIMIT_FSIZE), SIGTERM and SIGKILL at chosen moments.

Processes that may hang, be killed or exhaust something run as real subprocesses with a timeout; the rest
go through the Typer app in-process (fast).
"""

import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.cli import app
from occlude_cli.core.baselines import gaussian_blur
from occlude_cli.errors import OccludeError
from occlude_cli.loaders import limits
from occlude_cli.loaders.images import load_image
from onnx_models import feature_map_model, rectangle_model

from conftest import ROOT

runner = CliRunner()
OCCLUDE = [sys.executable, "-m", "occlude_cli.cli"]


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def cli(*args, timeout=60, **kwargs):
    """The real command in a subprocess: (returncode, stdout, stderr)."""
    proc = subprocess.run(
        OCCLUDE + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", None),
        **kwargs,
    )
    return proc.returncode, proc.stdout, proc.stderr


def error_lines(text: str):
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture
def model(tmp_path) -> Path:
    return rectangle_model(tmp_path / "rect.onnx", size=(16, 16), channels=3, rect=(2, 2, 10, 10))


def make_images(folder: Path, n: int, size=(20, 20)) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def png_bomb(path: Path, width: int, height: int) -> Path:
    """An RGB PNG that declares width x height but holds 64 rows of zeros: a few KB on disk."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + width * 3) * 64, 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )
    return path


def tiny_model(path: Path, shape, nodes=None, out_shape=None) -> Path:
    """A model whose input declares ``shape``; the output is the per-channel mean (a 3-class 'classifier')."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or [shape[0], 3])
    nodes = nodes or [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "tiny", [x], [y])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _limit_memory():
    """In the child: at most 8 GiB of address space, so that a regression fails with MemoryError instead of
    calling the OOM killer onto the machine (the old behaviour allocated about 20 GB)."""
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def child_peak_rss_mb(args, timeout=60):
    """Run the command in a fresh watcher process and return (rc, stderr, peak RSS of the command in MB)."""
    code = (
        "import resource, subprocess, sys, json;"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "print(json.dumps([p.returncode, p.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code] + OCCLUDE + [str(a) for a in args], capture_output=True, text=True, timeout=timeout
    )
    rc, err, kb = json.loads(out.stdout)
    return rc, err, kb / 1024


# ------------------------------------------------------------------ 1. memory bounded by --max-memory


def test_bomb_image_refused_from_its_header_without_decoding(tmp_path, model):
    bomb = png_bomb(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 5000
    with pytest.raises(OccludeError, match="13000x13000|169.0 Mpx") as info:
        load_image(bomb)
    assert "max_memory" in str(info.value) and "Mpx" in str(info.value) and info.value.params == ("max_memory",)
    rc, err, peak_mb = child_peak_rss_mb(["run", model, bomb, "--out", tmp_path / "out", "--quiet"])
    assert rc == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--max-memory" in lines[0], err
    assert "DecompressionBomb" not in err and "Warning" not in err
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB: the image was decoded"  # decoding it needs over 500 MB


def test_image_over_the_budget_refused_and_within_it_explained(tmp_path, model):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((1200, 1200, 3), dtype=np.uint8)).save(big)  # about 66 MiB to decode and resize
    result = occlude("run", model, big, "--out", tmp_path / "o1", "--quiet", "--max-memory", "48M")
    assert result.exit_code == 3
    assert "image too large" in result.output and "--max-memory 48 MiB" in result.output
    result = occlude("run", model, big, "--out", tmp_path / "o2", "--quiet", "--max-memory", "256M")
    assert result.exit_code == 0, result.output


def test_model_declaring_a_huge_input_refused_before_onnxruntime(tmp_path):
    huge = tiny_model(tmp_path / "huge.onnx", [1, 3, 100000, 100000])  # fixed batch 1: loading runs it once
    assert huge.stat().st_size < 300
    make_images(tmp_path / "imgs", 1)

    proc = subprocess.run(
        OCCLUDE + ["run", str(huge), str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "[1, 3, 100000, 100000]" in lines[0] and "--max-memory" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_dynamic_model_with_a_huge_size_refused(tmp_path):
    dyn = tiny_model(tmp_path / "dyn.onnx", ["N", 3, "H", "W"])
    make_images(tmp_path / "imgs", 1)
    proc = subprocess.run(
        OCCLUDE
        + ["run", str(dyn), str(tmp_path / "imgs"), "--size", "100000x100000", "-o", str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 1, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "--max-memory" in proc.stderr


def test_batch_shrinks_to_fit_the_budget_and_is_recorded(tmp_path):
    m = rectangle_model(tmp_path / "r256.onnx", size=(256, 256), channels=3, rect=(0, 0, 128, 128))
    make_images(tmp_path / "imgs", 1, size=(256, 256))
    result = occlude(
        "run",
        m,
        tmp_path / "imgs",
        "-o",
        tmp_path / "out",
        "--patch",
        "64",
        "--stride",
        "32",
        "--batch-size",
        "100000",
        "--max-memory",
        "24M",
    )
    assert result.exit_code == 0, result.output
    assert "batch size lowered from 100000" in result.output
    used = json.loads((tmp_path / "out" / "img00.json").read_text())["params"]["batch_size"]
    assert 1 <= used < 100000
    assert used * 256 * 256 * 3 * 4 <= 24 << 20


def test_memory_flag_parsing():
    from occlude_cli.cli.parse import memory as parse_memory  # the flag's text is parsed at the CLI's edge

    assert parse_memory("2G") == 2 << 30
    assert parse_memory("512M") == 512 << 20
    assert parse_memory("1.5GiB") == 3 << 29
    for bad in ("nan", "-1G", "lots", "1K", "inf"):
        with pytest.raises(OccludeError, match="--max-memory"):
            parse_memory(bad)
    assert (256 << 20) <= limits.default_budget() <= (4 << 30)


def test_all_classes_maps_counted_in_the_plan():
    plan = limits.plan_memory((224, 224), 3, 4, windows=729, classes=1000, requested_batch=16, limit=4 << 30)
    assert plan.batch_size == 16
    with pytest.raises(OccludeError, match="every class's map.*max_memory 512 MiB"):
        limits.plan_memory(
            (224, 224), 3, 4, windows=729, classes=10000, requested_batch=16, all_classes=True, limit=512 << 20
        )


# ------------------------------------------------------------------ 2. never eats its own outputs


def test_run_on_dot_twice_gives_the_same_image_count(tmp_path, model, monkeypatch):
    work = tmp_path / "work"
    make_images(work, 2)
    make_images(work / "sub", 1)
    shutil.copy(model, work / "rect.onnx")
    monkeypatch.chdir(work)
    counts = []
    for _ in range(3):
        result = occlude("run", "rect.onnx", ".", "-r", "--quiet")
        assert result.exit_code == 0, result.output
        counts.append(json.loads(Path("occlude-out/summary.json").read_text())["counts"])
    assert counts[0] == counts[1] == counts[2] and counts[0]["ok"] == 3


def test_outputs_elsewhere_recognised_by_their_record(tmp_path, model):
    make_images(tmp_path / "imgs", 2)
    assert occlude("run", model, tmp_path / "imgs", "-o", tmp_path / "maps", "-q").exit_code == 0
    (tmp_path / "maps" / "mine.overlay.png").write_bytes((tmp_path / "imgs" / "img00.png").read_bytes())
    result = occlude("run", model, tmp_path / "maps", "-o", tmp_path / "again", "-q", "--json")
    rows = json.loads(result.stdout)["images"]
    # the PNGs occlude wrote (listed in their JSON) are not inputs; a user's own *.overlay.png still is
    assert [Path(r["path"]).name for r in rows] == ["mine.overlay.png"]


# ------------------------------------------------------------------ 3. CSV cells a spreadsheet cannot run


def test_csv_formula_injection_escaped_in_summary_and_check(tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("=1+2.png", "@SUM(A1).png", "+x.png", "-x.png"):
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
    labels = tmp_path / "labels.txt"
    labels.write_text('=HYPERLINK("http://x")\n-2+3\n@cmd\n')
    result = occlude(
        "run", "--labels", labels, "-o", "out", "-q", "--", model, "=1+2.png", "@SUM(A1).png", "+x.png", "-x.png"
    )
    assert result.exit_code == 0, result.output
    import csv

    for row in csv.DictReader((tmp_path / "out" / "summary.csv").open()):
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), row
        assert row["path"].startswith("'")
    result = occlude("check", model, "=1+2.png", "--box", "0,0,8,8", "--labels", labels, "-o", "chk", "-q")
    text = (tmp_path / "chk" / "check.csv").read_text()
    assert "'=1+2.png" in text and "\n=" not in text and ",=" not in text


# ------------------------------------------------------------------ 4. strict JSON, NaN where it belongs


def nan_model(path: Path, threshold: float) -> Path:
    """class 0 = sqrt(mean(x[:, :, 0:8, 0:8]) - threshold): NaN when the top-left quarter is dark enough."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    inits = [
        numpy_helper.from_array(np.array(v, dtype=np.int64), n)
        for n, v in (("s", [0, 0]), ("e", [8, 8]), ("a", [2, 3]), ("one", [1]))
    ]
    inits.append(numpy_helper.from_array(np.array(threshold, dtype=np.float32), "t"))
    nodes = [
        helper.make_node("Slice", ["x", "s", "e", "a"], ["crop"]),
        helper.make_node("ReduceMean", ["crop"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["m", "t"], ["d"]),
        helper.make_node("Sqrt", ["d"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "one"], ["c0"]),
        helper.make_node("Neg", ["c0"], ["c1"]),
        helper.make_node("Concat", ["c0", "c1"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "nan", [x], [y], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def strict_json(path: Path):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_nan_windows_give_strict_json_and_a_local_nan(tmp_path):
    m = nan_model(tmp_path / "nan.onnx", 0.9)
    img = tmp_path / "white.png"
    Image.fromarray(np.full((16, 16, 3), 255, dtype=np.uint8)).save(img)
    result = occlude(
        "run", m, img, "-o", tmp_path / "out", "--patch", "4", "--stride", "4", "--score", "raw", "--target", "0"
    )
    assert result.exit_code == 0, result.output
    assert "non-finite" in result.output
    record = strict_json(tmp_path / "out" / "white.json")
    bad = [w for w in record["windows"] if w.get("finite") is False]
    assert bad and all(w["score"] is None for w in bad)
    assert all(8 > w["y"] and 8 > w["x"] for w in bad)  # only windows over the top-left quarter
    grid = np.array([[np.nan if v is None else v for v in row] for row in record["map"]])
    assert np.isnan(grid[:8, :8]).all() and np.isfinite(grid[8:, :]).all() and np.isfinite(grid[:, 8:]).all()
    strict_json(tmp_path / "out" / "summary.json")


def test_nan_original_score_is_one_clear_error(tmp_path):
    m = nan_model(tmp_path / "nan.onnx", 2.0)  # always NaN
    make_images(tmp_path / "imgs", 1)
    result = occlude("run", m, tmp_path / "imgs", "-o", tmp_path / "out", "-q", "--score", "raw")
    assert result.exit_code == 3
    assert len(error_lines(result.output)) == 1 and "not finite" in result.output
    strict_json(tmp_path / "out" / "summary.json")


# ------------------------------------------------------------------ 5. external data cannot leave the model's folder


@pytest.mark.parametrize("location", ["../../etc/passwd", "/proc/self/environ", "link/secret.bin"])
def test_external_data_outside_the_model_folder_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 12)
    if location.startswith("link/"):
        os.symlink(tmp_path, folder / "link")
    weights = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "12")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Add", ["m", "w"], ["y"]),
    ]
    m = helper.make_model(
        helper.make_graph(nodes, "ext", [x], [y], initializer=[weights]), opset_imports=[helper.make_opsetid("", 17)]
    )
    m.ir_version = 8
    (folder / "m.onnx").write_bytes(m.SerializeToString())
    make_images(tmp_path / "imgs", 1)
    result = occlude("run", folder / "m.onnx", tmp_path / "imgs", "-o", tmp_path / "out", "-q", "--top-k", "3")
    assert result.exit_code == 1
    assert len(error_lines(result.output)) == 1 and "external" in result.output.lower()


def test_onnxruntime_floor_has_the_external_data_fix():
    text = (ROOT / "pyproject.toml").read_text()
    floor = text.split('cpu = ["onnxruntime>=')[1].split('"')[0]
    assert tuple(int(v) for v in floor.split(".")[:2]) >= (1, 25)


# ------------------------------------------------------------------ 6. stale temporary files


def test_stale_temp_files_of_killed_runs_removed_and_nothing_else(tmp_path, model):
    make_images(tmp_path / "imgs", 1)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = subprocess.run(["true"]).args and subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        old = time.time() - 3600
        stale = [
            out / f".img00.overlay.png.{dead.pid}.abcd1234.tmp",
            out / "sub" / f".x.json.{dead.pid}.k_9zzzzz.tmp",
            out / ".img00.json.q1w2e3r4.tmp",
        ]  # the older pattern without a pid, an hour old
        kept = [
            out / f".img00.npy.{alive.pid}.abcd1234.tmp",  # a parallel shard still writing
            out / "notes.tmp",
            out / ".notes.tmp",
            out / f".img00.txt.{dead.pid}.abcd1234.tmp",
            out / f".img00.png.{dead.pid}.abc.tmp",
        ]
        for path in stale + kept:
            path.write_bytes(b"partial")
            os.utime(path, (old, old))
        fresh = out / f".img01.png.{dead.pid}.zzzz9999.tmp"  # newer than the run's start: not ours to judge
        result = occlude("run", model, tmp_path / "imgs", "-o", out, "-q")
        assert result.exit_code == 0, result.output
        fresh.write_bytes(b"x")
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)
    finally:
        alive.kill()
        alive.wait()


def test_sigkill_then_resume_leaves_only_complete_files(tmp_path, model):
    make_images(tmp_path / "imgs", 12)
    ref = tmp_path / "ref"
    args = ["run", model, tmp_path / "imgs", "--patch", "1", "--stride", "1", "--no-timing", "-q"]
    assert cli(*args, "-o", ref)[0] == 0
    out = tmp_path / "out"
    proc = subprocess.Popen(OCCLUDE + [str(a) for a in args] + ["-o", str(out)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline and len(list(out.glob("img*.json"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rc, _, err = cli(*args, "-o", out, "--resume")
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in ref.iterdir())  # no temp file, nothing missing
    for name in names:
        if not name.startswith(("summary", "manifest")):  # statuses: skipped vs ok
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name


# ------------------------------------------------------------------ 7. --resume checks every output


def test_resume_redoes_images_with_missing_truncated_or_foreign_outputs(tmp_path, model):
    make_images(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    args = ["run", model, tmp_path / "imgs", "-o", out, "--no-timing", "-q", "--json"]
    assert occlude(*args).exit_code == 0
    record = json.loads((out / "img00.json").read_text())
    assert {o["name"] for o in record["outputs"]} == {"img00.overlay.png", "img00.heatmap.png", "img00.npy"}
    assert all(len(o["sha256"]) == 64 and o["bytes"] > 0 for o in record["outputs"])
    original = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "img00.overlay.png").unlink()  # deleted
    data = (out / "img01.npy").read_bytes()
    (out / "img01.npy").write_bytes(data[: len(data) // 2])  # truncated
    (out / "img02.heatmap.png").write_bytes(original["img03.heatmap.png"])  # another run's file
    result = occlude(*args, "--resume")
    assert result.exit_code == 0, result.output
    status = {Path(r["path"]).name: r["status"] for r in json.loads(result.stdout)["images"]}
    assert status == {"img00.png": "ok", "img01.png": "ok", "img02.png": "ok", "img03.png": "skipped"}
    for name, content in original.items():
        if not name.startswith(("summary", "manifest")):  # statuses: skipped vs ok
            assert (out / name).read_bytes() == content, name


# ------------------------------------------------------------------ 8/9. numeric flags and resource bounds


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--baseline", "nan"], "baseline"),
        (["--baseline", "1,inf,3"], "baseline"),
        (["--baseline", "blur", "--blur-sigma", "-1"], "--blur-sigma"),
        (["--baseline", "blur", "--blur-sigma", "nan"], "--blur-sigma"),
        (["--scale", "nan"], "--scale"),
        (["--std", "inf"], "--std"),
        (["--mean", "nan"], "--mean"),
        (["--baseline", "noise", "--seed", "-1"], "seed"),
        (["--region", "nan,0,1,1"], "--region"),
        (["--threads", "-1"], "--threads"),
        (["--threads", "10000"], "--threads"),
        (["--refine", "--refine-step", "1000000"], "--refine-step"),
        (["--max-memory", "nan"], "--max-memory"),
        (["--max-memory", "1K"], "--max-memory"),
        (["--mean", "1,2"], "1 or 3 values"),
    ],
)
def test_bad_numbers_refused_in_one_line(tmp_path, model, flags, words):
    make_images(tmp_path / "imgs", 1)
    result = occlude("run", model, tmp_path / "imgs", "-o", tmp_path / "out", "-q", *flags)
    assert result.exit_code == 1, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and words in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_mean_count_message_for_a_grey_model(tmp_path):
    grey = rectangle_model(tmp_path / "grey.onnx", size=(16, 16), channels=1)
    make_images(tmp_path / "imgs", 1)
    result = occlude("run", grey, tmp_path / "imgs", "-o", tmp_path / "out", "--mean", "1,2")
    assert result.exit_code == 1 and "needs 1 value for a 1-channel model, got 2" in result.output


def test_huge_blur_sigma_capped_at_the_image_size():
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 8, 3))
    started = time.perf_counter()
    out = gaussian_blur(pixels, 1e6)
    assert time.perf_counter() - started < 5  # was 109 s: a 6-million-tap kernel
    padded = np.pad(pixels, ((8, 8), (8, 8), (0, 0)), mode="edge")  # radius capped at 8: 17 nearly equal taps
    rows = np.mean([padded[i : i + 8] for i in range(17)], axis=0)
    expect = np.mean([rows[:, i : i + 8] for i in range(17)], axis=0)
    np.testing.assert_allclose(out, expect, atol=1e-6)


def test_threads_above_the_cores_are_capped(tmp_path, model):
    make_images(tmp_path / "imgs", 1)
    result = occlude("run", model, tmp_path / "imgs", "-o", tmp_path / "out", "-q", "--threads", "512")
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ 10. not a classifier: exit 1 before any image


def test_not_a_classifier_fails_once_before_any_image(tmp_path):
    m = feature_map_model(tmp_path / "features.onnx")
    make_images(tmp_path / "imgs", 3, size=(16, 16))
    result = occlude("run", m, tmp_path / "imgs", "-o", tmp_path / "out", "-q", "--task", "classify")
    assert result.exit_code == 1
    assert len(error_lines(result.output)) == 1 and "classifier" in result.output


# ------------------------------------------------------------------ 11. FIFO, full disk, signals, odd names


def test_fifo_in_folder_skipped_with_a_note_and_a_named_fifo_fails(tmp_path, model):
    """A FIFO found in a folder is noted and skipped; one named on its own is an input not processed: exit 3."""
    make_images(tmp_path / "imgs", 1)
    os.mkfifo(tmp_path / "imgs" / "pipe.png")
    os.mkfifo(tmp_path / "named.png")
    rc, _, err = cli("run", model, tmp_path / "named.png", tmp_path / "imgs", "-o", tmp_path / "out", timeout=30)
    assert rc == 3, err
    assert err.count("not a regular file (FIFO)") == 2
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["images"]
    assert sorted((Path(r["path"]).name, r["status"]) for r in rows) == [("img00.png", "ok"), ("named.png", "failed")]
    rc, _, err = cli("run", model, tmp_path / "imgs", "-o", tmp_path / "out2", timeout=30)
    assert rc == 0 and err.count("not a regular file (FIFO)") == 1, err


def test_full_disk_leaves_no_stale_summary_and_no_half_set(tmp_path, model):
    make_images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"counts": {"ok": 99}, "images": []}) + " " * 4000)
    (out / "summary.csv").write_text("stale\n")

    def small_files():  # every file this process writes stops at 600 bytes: a disk that is full
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))

    proc = subprocess.run(
        OCCLUDE + ["run", str(model), str(tmp_path / "imgs"), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=small_files,
    )
    assert proc.returncode in (1, 3), proc.stderr
    assert all(line.startswith("error:") for line in proc.stderr.strip().splitlines()), proc.stderr
    # the run's manifest is its first write: the full disk stops it before any image, in one line
    assert "summary not written" in proc.stderr or "cannot write" in proc.stderr and "manifest.json" in proc.stderr
    left = sorted(p.name for p in out.iterdir())
    assert left == [], left  # no stale summary, no temp file, no overlay without its JSON


def test_sigterm_during_start_up_exits_130_in_one_line(tmp_path, model):
    make_images(tmp_path / "imgs", 1)
    proc = subprocess.Popen(
        OCCLUDE + ["run", str(model), str(tmp_path / "imgs"), "-o", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.25)  # the interpreter is up; the imports (about half a second) are not done
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 130, (proc.returncode, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: interrupted")


def test_sigterm_between_images_exits_130_with_a_summary(tmp_path, model):
    make_images(tmp_path / "imgs", 30)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        OCCLUDE + ["run", str(model), str(tmp_path / "imgs"), "-o", str(out), "-q", "--patch", "1", "--stride", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while time.time() < deadline and len(list(out.glob("img*.json"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 130, err
    assert "--resume" in err
    summary = json.loads((out / "summary.json").read_text())
    done = [r for r in summary["images"] if r["status"] == "ok"]
    assert 2 <= len(done) < 30
    for row in done:
        assert (out / row["output"]).is_file()
    assert not list(out.glob(".*.tmp"))


def test_newline_in_a_file_name_never_splits_an_error_line(tmp_path, model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bad\nname.png").write_bytes(b"not an image at all")
    result = occlude("run", model, folder, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 3
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad\\nname.png" in lines[0]
    row = json.loads((tmp_path / "out" / "summary.json").read_text())["images"][0]
    assert "\n" not in row["error"] and "bad\\nname.png" in row["error"]


def test_long_file_names_shortened_deterministically(tmp_path, model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    long_a = "a" * 245 + ".png"
    long_b = "a" * 240 + "bbbbb.png"  # same first 167 bytes: the hash keeps them apart
    for name in (long_a, long_b):
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(folder / name)
    for out in (tmp_path / "o1", tmp_path / "o2"):
        result = occlude(
            "run", model, folder, "-o", out, "-q", "--patch", "4,8", "--multiscale", "--top-k", "2", "--all-classes"
        )
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "o1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "o2").iterdir())
    assert len([n for n in names if n.endswith(".scales.json")]) == 2
    assert max(len(n.encode()) for n in names) <= 255 - 30  # room for the temporary name around it


def test_folder_that_cannot_be_written_is_one_line(tmp_path, model):
    make_images(tmp_path / "imgs", 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = occlude("run", model, tmp_path / "imgs", "-o", blocker / "out", "-q")
    assert result.exit_code == 1 and len(error_lines(result.output)) == 1


def test_summary_is_written_atomically_on_failure_paths(tmp_path, model):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = occlude("run", model, tmp_path / "imgs", "-o", tmp_path / "out", "-q")
    assert result.exit_code == 3
    summary = strict_json(tmp_path / "out" / "summary.json")
    assert summary["counts"]["failed"] == 1
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    assert stat.S_ISREG((tmp_path / "out" / "summary.csv").stat().st_mode)


# ------------------------------------------------------------------ PNGs whose pixel data ends early

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png(pixels: np.ndarray, *, interlace: bool = False, keep: Optional[int] = None) -> bytes:
    """A PNG written by hand (8-bit grey or RGB, filter 0), its zlib stream complete but holding only the first
    ``keep`` rows (interlaced: the first ``keep`` Adam7 passes): what Pillow pads with zeros without a word."""
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    if interlace:
        images = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in _ADAM7][:keep]
        raw = b"".join(b"\x00" + row.tobytes() for image in images if image.size for row in image)
    else:
        raw = b"".join(b"\x00" + row.tobytes() for row in pixels[:keep])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("interlace", [False, True])
def test_png_with_missing_rows_refused_not_padded(tmp_path, interlace):
    rng = np.random.default_rng(5)
    for shape in ((29, 37), (29, 37, 3)):
        pixels = rng.integers(1, 256, shape, dtype=np.uint8)
        whole = tmp_path / f"whole-{len(shape)}.png"
        whole.write_bytes(_png(pixels, interlace=interlace))
        loaded = np.asarray(load_image(whole))
        assert np.array_equal(loaded, pixels)  # the hand-written PNG is sound
        short = tmp_path / f"short-{len(shape)}.png"
        short.write_bytes(_png(pixels, interlace=interlace, keep=5 if interlace else 17))
        assert not np.asarray(Image.open(short)).all()  # Pillow alone pads the missing rows with zeros
        with pytest.raises(OccludeError, match="PNG pixel data ends"):
            load_image(short)


def test_png_with_missing_rows_fails_its_image_only_in_a_folder_run(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    (folder / "a_short.png").write_bytes(_png(pixels, keep=4))
    Image.fromarray(pixels).save(folder / "b_good.png")
    digits = ROOT / "sample_models" / "digits_cnn.onnx"
    result = subprocess.run(
        OCCLUDE + ["run", str(digits), str(folder), "--out", str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a_short.png" in errors[0] and "ends after 4 of 8 rows" in errors[0]
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out" / "b_good.json").exists() and not (tmp_path / "out" / "a_short.json").exists()


def test_every_png_pillow_writes_still_loads(tmp_path):
    """No false alarm: palette, grey+alpha, RGBA, 16-bit and 1-bit PNGs, and the sample images."""
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8))
    images = {
        "p": rgb.convert("P"),
        "la": rgb.convert("LA"),
        "rgba": rgb.convert("RGBA"),
        "i16": Image.fromarray(rng.integers(0, 65536, (23, 31), dtype=np.uint16)),
        "bits": rgb.convert("1"),
    }
    for name, image in images.items():
        image.save(tmp_path / f"{name}.png")
        assert load_image(tmp_path / f"{name}.png").size == (31, 23)
    for path in sorted((ROOT / "sample_images").rglob("*.png")):
        load_image(path)


# ------------------------------------------------------------------ 10. medical inputs: memory and hostile headers
# (issue 31.1) The budget covers NIfTI volumes, DICOM files and DICOM series: checked from the header(s) before a
# voxel is read or inflated, and what is read stays within it. Measured with the peak RSS of a real subprocess.

LESION3D = ROOT / "sample_models" / "lesion3d.onnx"
LESION = ROOT / "sample_images" / "medical" / "lesion_volume.nii.gz"
CT_SMALL = ROOT / "sample_images" / "medical" / "CT_small.dcm"


def nifti_file(path: Path, shape=(8, 8, 8), dtype=np.int16, *, data: Optional[bytes] = None, gz=False, **fields):
    """A single-file NIfTI-1 whose header is made valid for ``shape``/``dtype`` and then has raw ``fields``
    overwritten as given (no validation: hostile values go in as they are); ``data`` replaces the voxels."""
    nib = pytest.importorskip("nibabel")
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    header.set_sform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    header["vox_offset"] = 352
    for key, value in fields.items():
        header[key] = value
    if data is None:
        data = np.arange(int(np.prod(shape)), dtype=dtype).tobytes(order="F")
    content = header.binaryblock + b"\0" * 4 + data
    path.write_bytes(zlib.compress(content, 6, wbits=31) if gz else content)
    return path


def zeros_gzip_members(total: int) -> bytes:
    """``total`` bytes of zeros (a multiple of 16 MiB) as concatenated gzip members: a few KB per 16 MiB."""
    member = zlib.compress(b"\0" * (16 << 20), 9, wbits=31)
    return member * (total // (16 << 20))


def one_error(result) -> str:
    lines = error_lines(result.output)
    assert result.exit_code == 3 and len(lines) == 1, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("negative_dim", dict(dim=[3, 8, -5, 8, 1, 1, 1, 1]), "dim[2] = -5"),
        ("zero_dim", dict(dim=[3, 0, 8, 8, 1, 1, 1, 1]), "dim[1] = 0"),
        ("no_dims", dict(dim=[0, 8, 8, 8, 1, 1, 1, 1]), "dim[0] = 0"),
        ("nine_dims", dict(dim=[9, 8, 8, 8, 1, 1, 1, 1]), "dim[0] = 9"),
        ("absurd_dims", dict(dim=[3, 32767, 32767, 32767, 1, 1, 1, 1]), "32767x32767x32767 int16"),
        ("absurd_4d", dict(dim=[4, 8, 8, 8, 32767, 1, 1, 1], args=["--volume-index", "0"]), "truncated"),
        ("vox_offset_zero", dict(vox_offset=0), "vox_offset 0"),
        ("vox_offset_nan", dict(vox_offset=np.nan), "vox_offset nan"),
        ("vox_offset_past_the_end", dict(vox_offset=1e9), "truncated"),
        ("complex", dict(datatype=32), "complex64"),
        ("unknown_type", dict(datatype=9999), "unknown datatype code 9999"),
        ("pair_header", dict(magic=b"ni1"), ".hdr/.img"),
        ("bad_magic", dict(magic=b"xyz"), "magic"),
        ("nan_affine", dict(pixdim=[1, np.nan, 1, 1, 1, 1, 1, 1], qform_code=0, sform_code=0), "affine"),
        ("singular_affine", dict(srow_x=[0, 0, 0, 0], sform_code=1, qform_code=0), "affine"),
        ("truncated", dict(data=b"\1\0" * 100), "truncated"),
        ("truncated_gz", dict(data=b"\1\0" * 100, gz=True), "truncated"),
        ("nan_voxels", dict(dtype=np.float32, data=np.full(512, np.nan, np.float32).tobytes()), "NaN"),
    ],
)
def test_hostile_nifti_headers_are_one_error_line(tmp_path, name, make, words):
    fields = dict(make)
    path = nifti_file(
        tmp_path / f"{name}.nii{'.gz' if fields.get('gz') else ''}",
        dtype=fields.pop("dtype", np.int16),
        data=fields.pop("data", None),
        gz=fields.pop("gz", False),
        **{k: v for k, v in fields.items() if k != "args"},
    )
    args = ["run", LESION3D, path, "-o", tmp_path / "out", "-q", "--max-memory", "512M", *fields.get("args", [])]
    line = one_error(occlude(*args))
    assert words in line and path.name in line, line


def test_not_nifti_and_corrupt_gzip_are_one_error_line(tmp_path):
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"\x12\x34" * 300)
    assert "sizeof_hdr" in one_error(occlude("run", LESION3D, garbage, "-o", tmp_path / "o1", "-q"))
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    assert "not a readable NIfTI" in one_error(occlude("run", LESION3D, corrupt, "-o", tmp_path / "o2", "-q"))


def test_nifti_header_bomb_refused_before_reading(tmp_path):
    """The issue's file: 1,352 bytes whose header claims 2000^3 int16 (used to run 61 s and reach 15.7 GB)."""
    bomb = nifti_file(tmp_path / "bomb.nii", (2000, 2000, 2000), data=b"\0" * 1000)
    assert bomb.stat().st_size == 1352
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, bomb, "-o", tmp_path / "out", "-q", "--max-memory", "512M"])
    assert rc == 3 and len(error_lines(err)) == 1, err
    assert "2000x2000x2000 int16" in err and "--max-memory 512 MiB" in err and "GiB to read" in err
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"


def test_gzip_bombs_are_never_inflated_past_the_header_or_the_budget(tmp_path):
    """Three small .nii.gz files that inflate to 2 GiB: a header claiming 1024^3 int16 of zeros (refused from
    the header), 2 GiB of 'extensions' before the voxels (refused past the budget, without holding them), and
    a valid 64^3 volume followed by 2 GiB of junk (explained; the junk is never inflated)."""
    header_bomb = nifti_file(tmp_path / "claims.nii.gz", (1024, 1024, 1024), data=b"", gz=True)
    header_bomb.write_bytes(header_bomb.read_bytes() + zeros_gzip_members(2 << 30))
    extensions = nifti_file(tmp_path / "ext.nii.gz", (16, 16, 16), data=b"", gz=True, vox_offset=352 + (2 << 30))
    extensions.write_bytes(extensions.read_bytes() + zeros_gzip_members(2 << 30))
    trailing = nifti_file(tmp_path / "trailing.nii.gz", (64, 64, 64), gz=True)
    trailing.write_bytes(trailing.read_bytes() + zeros_gzip_members(2 << 30))
    for path in (header_bomb, extensions, trailing):
        assert path.stat().st_size < 3 << 20
    out = tmp_path / "out"
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, header_bomb, "-o", out, "-q", "--max-memory", "512M"])
    assert rc == 3 and "1024x1024x1024 int16" in err and "--max-memory 512 MiB" in err, err
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, extensions, "-o", out, "-q", "--max-memory", "256M"])
    assert rc == 3 and "extensions too large" in err and "--max-memory 256 MiB" in err, err
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB"
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, trailing, "-o", out, "-q", "--max-memory", "256M"])
    assert rc == 0, err
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"


def _ct_volume(shape) -> np.ndarray:
    """A CT-like int16 volume: air around a body of soft tissue with a bright blob and noise."""
    rng = np.random.default_rng(31)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (y**2 + x**2) < 0.7
    values = np.where(body, 40.0, -1000.0) + 900.0 * ((z**2 + (y - 0.2) ** 2 + x**2) < 0.05) + rng.normal(0, 20, shape)
    return values.astype(np.int16)


def test_a_large_nifti_stays_within_the_budget_or_is_refused_before_reading(tmp_path):
    """A 160x256x256 int16 CT-like .nii.gz (10.5 M voxels): with --max-memory 128M one line naming the sizes;
    with 1G the run's peak RSS stays within the small-volume run's plus what the budget counts for it (used to
    be 58 bytes per voxel: 0.8 GB here; 62 bytes for a 512x512x400 scan, 6.3 GB)."""
    nib = pytest.importorskip("nibabel")
    big = tmp_path / "ct.nii.gz"
    nib.Nifti1Image(_ct_volume((256, 256, 160)), np.diag([0.8, 0.8, 1.5, 1.0])).to_filename(big)
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, big, "-o", tmp_path / "o1", "-q", "--max-memory", "128M"])
    assert rc == 3 and len(error_lines(err)) == 1, err
    assert "256x256x160 int16" in err and "10.5 M voxels" in err and "--max-memory 128 MiB" in err, err
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB: the volume was read"
    rc, err, base_mb = child_peak_rss_mb(["run", LESION3D, LESION, "-o", tmp_path / "o2", "-q", "--max-memory", "1G"])
    assert rc == 0, err
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, big, "-o", tmp_path / "o3", "-q", "--max-memory", "1G"])
    assert rc == 0, err
    need_mb = limits.volume_need((160, 256, 256), 2) / 2**20
    assert peak_mb < base_mb + need_mb + 100, (
        f"peak {peak_mb:.0f} MB, small volume {base_mb:.0f} MB, counted {need_mb:.0f}"
    )


def _series(folder: Path, slices: int, size: int) -> Path:
    pydicom = pytest.importorskip("pydicom")
    folder.mkdir()
    template = pydicom.dcmread(CT_SMALL)
    volume = _ct_volume((slices, size, size)) + 1024  # stored values: CT_small's intercept is -1024
    for z in range(slices):
        template.Rows = template.Columns = size
        template.PixelData = volume[z].astype(np.int16).tobytes()
        template.ImagePositionPatient = [0.0, 0.0, 2.0 * z]
        template.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        template.SOPInstanceUID = f"1.2.826.0.1.3680043.9.31.{z + 1}"
        template.save_as(folder / f"IM{z:04d}.dcm")
    return folder


def test_a_large_dicom_series_stays_within_the_budget_or_is_refused_before_decoding(tmp_path):
    """48 slices of 384x384 (7.1 M voxels): the size comes from the headers before a pixel is decoded; the
    run decodes one slice at a time (it used to hold every file's pixels, each slice twice and their stack)."""
    series = _series(tmp_path / "series", 48, 384)
    rc, err, peak_mb = child_peak_rss_mb(
        ["run", LESION3D, series, "--series", "-o", tmp_path / "o1", "-q", "--max-memory", "96M"]
    )
    assert rc == 3 and len(error_lines(err)) == 1, err
    assert "48x384x384 int16" in err and "--max-memory 96 MiB" in err, err
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB"
    rc, err, base_mb = child_peak_rss_mb(["run", LESION3D, LESION, "-o", tmp_path / "o2", "-q"])
    assert rc == 0, err
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, series, "--series", "-o", tmp_path / "o3", "-q"])
    assert rc == 0, err
    need_mb = limits.volume_need((48, 384, 384), 2) / 2**20
    assert peak_mb < base_mb + need_mb + 100, (
        f"peak {peak_mb:.0f} MB, small volume {base_mb:.0f} MB, counted {need_mb:.0f}"
    )


def test_dicom_header_checked_before_its_pixels_are_decoded(tmp_path):
    """A multi-frame header claiming 400 frames of 4096x4096 (tiny pixel data) is refused by its size, not
    by a decoding failure after the fact; the same header within the budget still says what is wrong."""
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(CT_SMALL)
    ds.NumberOfFrames = 400
    ds.Rows = ds.Columns = 4096
    ds.save_as(tmp_path / "frames.dcm")
    line = one_error(occlude("run", LESION3D, tmp_path / "frames.dcm", "-o", tmp_path / "out", "-q"))
    assert "volume too large" in line and "400x4096x4096 int16" in line and "--max-memory" in line, line


def test_deflated_dicom_bomb_refused_while_inflating(tmp_path):
    """Deflated Explicit VR DICOM is inflated whole by pydicom before any header: 24 KB that inflate to 256 MiB
    are refused while inflating (in pieces) past --max-memory, at a small peak RSS."""
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(CT_SMALL)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "real.dcm", enforce_file_format=True)
    meta = pydicom.filereader.read_file_meta_info(tmp_path / "real.dcm")
    head = (tmp_path / "real.dcm").read_bytes()[: 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)]
    inflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(inflater.compress(b"\0" * (16 << 20)) for _ in range(16)) + inflater.flush()
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(head + body)
    assert bomb.stat().st_size < 300_000
    rc, err, peak_mb = child_peak_rss_mb(["run", LESION3D, bomb, "-o", tmp_path / "out", "-q", "--max-memory", "64M"])
    assert rc == 3 and len(error_lines(err)) == 1, err
    assert "deflated DICOM too large" in err and "--max-memory 64 MiB" in err, err
    assert peak_mb < 250, f"peak RSS {peak_mb:.0f} MB"
    # the real deflated file still reads (the check inflates it once, counting)
    result = occlude("run", ROOT / "sample_models" / "ct2d.onnx", tmp_path / "real.dcm", "-o", tmp_path / "o2", "-q")
    assert result.exit_code == 0, result.output


def test_an_interrupt_that_surfaces_as_another_error_still_exits_130(capsys):
    """numpy turns anything raised while its C extension loads into ImportError('import numpy failed'), so a
    SIGTERM that lands in onnxruntime's import came out as 'onnxruntime is not installed', exit 1 (seen once in
    test_sigterm_during_start_up_exits_130_in_one_line under load). The handler remembers the interrupt."""
    import typer

    from occlude_cli._signals import raise_interrupt
    from occlude_cli.cli.common import user_errors
    from occlude_cli.errors import OccludeError

    @user_errors
    def command():
        try:
            raise_interrupt(signal.SIGTERM, None)  # what the SIGTERM handler does, inside a library's import
        except KeyboardInterrupt:
            raise OccludeError("onnxruntime is not installed") from None  # what the import's failure reads as

    with pytest.raises(typer.Exit) as stopped:
        command()
    assert stopped.value.exit_code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "not installed" not in err

    @user_errors
    def plain():
        raise OccludeError("onnxruntime is not installed")

    with pytest.raises(typer.Exit) as failed:  # the next command starts with the interrupt forgotten
        plain()
    assert failed.value.exit_code == 1
