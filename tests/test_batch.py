"""Folders, globs, summaries, resume, shards and interruption: real folders and real processes."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.batch import discover_inputs, take_shard
from occlude_cli.cli.parse import shard as parse_shard
from occlude_cli.errors import OccludeError
from occlude_cli.outputs.names import name_hash
from occlude_cli.cli import app

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
runner = CliRunner()


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def folder(tmp_path):
    """A realistic messy folder: good digits (also in a sub-folder with a clashing name), a corrupt PNG,
    an empty file, a text file with an image suffix, a 16-bit PNG and a big RGB JPEG."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for name in ("digit_0", "digit_3", "digit_7"):
        shutil.copy(SAMPLE_IMAGES / f"{name}.png", root / f"{name}.png")
    shutil.copy(SAMPLE_IMAGES / "digit_3.png", root / "sub" / "digit_3.png")  # same stem, other folder
    good = (SAMPLE_IMAGES / "digit_7.png").read_bytes()
    (root / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image")
    (root / "readme.txt").write_text("ignored: not an image suffix")
    deep = np.asarray(Image.open(SAMPLE_IMAGES / "digit_0.png"), dtype=np.uint16) * 257
    Image.fromarray(deep).save(root / "sub" / "deep16.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(root / "sub" / "big.jpg")
    return root


def summary_rows(out):
    return {row["path"]: row for row in json.loads((out / "summary.json").read_text())["images"]}


def test_folder_run_reports_bad_files_and_keeps_going(tmp_path, folder):
    out = tmp_path / "out"
    result = occlude("run", DIGITS, folder, "--recursive", "--out", out, "--quiet")
    assert result.exit_code == 3, result.output
    rows = summary_rows(out)
    status = {os.path.relpath(p, folder): r["status"] for p, r in rows.items()}
    assert status == {
        "corrupt.png": "failed",
        "digit_0.png": "ok",
        "digit_3.png": "ok",
        "digit_7.png": "ok",
        "empty.png": "failed",
        "notes.jpg": "failed",
        "sub/big.jpg": "ok",
        "sub/deep16.png": "ok",
        "sub/digit_3.png": "ok",
    }
    assert all(r["error"] for r in rows.values() if r["status"] == "failed")
    # relative layout keeps same-stem files apart
    assert (out / "digit_3.json").exists() and (out / "sub" / "digit_3.json").exists()
    assert json.loads((out / "sub" / "deep16.json").read_text())["target"]["index"] == 0
    with open(out / "summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 9 and set(table[0]) >= {
        "path",
        "status",
        "target_index",
        "target_label",
        "original_score",
        "peak_y",
        "peak_x",
        "peak_value",
        "seconds",
        "error",
    }
    assert sum(1 for line in result.stderr.splitlines() if line.startswith("error:")) == 3


def test_without_recursive_only_top_level(tmp_path, folder):
    out = tmp_path / "out"
    result = occlude("run", DIGITS, folder, "--out", out, "--json", "--quiet")
    document = json.loads(result.stdout)
    assert document["counts"] == {"ok": 3, "failed": 3, "skipped": 0, "pending": 0}


def test_globs_and_explicit_files_and_missing_paths(tmp_path, folder):
    out = tmp_path / "out"
    result = occlude("run", DIGITS, str(folder / "**" / "digit_*.png"), folder / "missing.png", "--out", out, "--json")
    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["counts"] == {"ok": 4, "failed": 1, "skipped": 0, "pending": 0}
    assert (out / "sub" / "digit_3.json").exists()
    empty_glob = occlude("run", DIGITS, str(folder / "*.nothing"), "--out", out, "--json")
    assert empty_glob.exit_code == 3 and "no file matches" in empty_glob.stderr


def test_discover_inputs_names_never_collide(tmp_path):
    for rel in ("a/x.png", "b/x.png", "c/y.png", "c/y.jpg"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(path)
    images, problems = discover_inputs(
        [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), str(tmp_path / "c")]
    )
    keys = [i.key for i in images]
    assert not problems and len(set(keys)) == len(keys) == 4
    # y.png and y.jpg share a stem: both become NAME~HASH (the hash of the exact relative path)
    assert set(keys) == {"a/x", "b/x", f"c/y.png~{name_hash('c/y.png')}", f"c/y.jpg~{name_hash('c/y.jpg')}"}


def test_shards_partition_the_inputs_and_merge(tmp_path, folder):
    images, _ = discover_inputs([str(folder)], recursive=True)
    parts = [take_shard(images, (k, 3)) for k in (1, 2, 3)]
    assert sorted(i.key for p in parts for i in p) == sorted(i.key for i in images)
    assert not set(i.key for i in parts[0]) & set(i.key for i in parts[1])
    with pytest.raises(OccludeError):
        parse_shard("0/3")
    full, merged = tmp_path / "full", tmp_path / "merged"
    assert occlude("run", DIGITS, folder, "-r", "--out", full, "--quiet", "--no-timing").exit_code == 3
    for k in (1, 2, 3):
        occlude("run", DIGITS, folder, "-r", "--out", merged, "--quiet", "--no-timing", "--shard", f"{k}/3")
    assert (merged / "summary.shard-2-of-3.json").exists() and (merged / "manifest.shard-2-of-3.json").exists()
    # the last shard to finish rebuilt summary.json from the three shards' manifests
    assert json.loads((merged / "summary.json").read_text())["run"]["shards_done"] == [1, 2, 3]
    result = occlude("summary", merged, "--json")
    assert result.exit_code == 3  # the corrupt files are still failures after merging
    rebuilt = json.loads(result.stdout)
    assert rebuilt["counts"] == json.loads((full / "summary.json").read_text())["counts"]
    for path in full.rglob("*.json"):
        if not path.name.startswith(("summary", "manifest")):
            assert path.read_bytes() == (merged / path.relative_to(full)).read_bytes(), path


def test_resume_skips_finished_images_with_the_same_parameters(tmp_path, folder):
    out = tmp_path / "out"
    occlude("run", DIGITS, folder, "--out", out, "--quiet")
    first = (out / "digit_3.json").stat().st_mtime_ns
    result = occlude("run", DIGITS, folder, "--out", out, "--resume", "--json")
    document = json.loads(result.stdout)
    assert document["counts"] == {"ok": 0, "failed": 3, "skipped": 3, "pending": 0}
    assert (out / "digit_3.json").stat().st_mtime_ns == first
    skipped = [r for r in document["images"] if r["status"] == "skipped"]
    assert all(r["target_index"] is not None for r in skipped)
    # other parameters: nothing is skipped
    result = occlude("run", DIGITS, folder, "--out", out, "--resume", "--json", "--patch", "2")
    assert json.loads(result.stdout)["counts"]["skipped"] == 0


def test_aggregate_map_over_a_folder(tmp_path, folder):
    out = tmp_path / "out"
    occlude("run", DIGITS, folder, "-r", "--out", out, "--aggregate", "--quiet")
    mean = np.load(out / "aggregate.npy")
    assert mean.shape == (8, 8) and np.nanmax(np.abs(mean)) <= 1.0 + 1e-6
    maps = [np.load(p) for p in sorted(out.rglob("*.npy")) if p.name != "aggregate.npy"]
    assert len(maps) == 6
    expected = np.mean([m / np.abs(m).max() for m in maps], axis=0)
    np.testing.assert_allclose(mean, expected, atol=1e-5)
    assert min(Image.open(out / "aggregate.png").size) >= 320  # pixels: tests/test_pictures.py


def test_killed_run_leaves_complete_files_and_resume_finishes(tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        shutil.copy(SAMPLE_IMAGES / f"digit_{(0, 3, 7)[i % 3]}.png", src / f"img_{i:02d}.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "occlude_cli.cli", "run", DIGITS, str(src), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("img_*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"--resume" in err
    done = sorted(out.glob("img_*.json"))
    assert 3 <= len(done) < 40
    assert not list(out.glob(".*.tmp"))  # no half-written file
    for path in done:
        json.loads(path.read_text())  # every finished image's JSON is complete
        stem = path.name[: -len(".json")]
        assert (out / f"{stem}.overlay.png").exists() and (out / f"{stem}.npy").exists()
    resumed = subprocess.run(cmd + ["--resume", "--json"], env=env, capture_output=True, text=True)
    document = json.loads(resumed.stdout)
    assert resumed.returncode == 0
    assert document["counts"]["skipped"] == len(done) and document["counts"]["ok"] == 40 - len(done)


@pytest.mark.skipif(not __import__("PIL.features").features.check("avif"), reason="this Pillow reads no AVIF")
def test_a_folder_gives_its_avif_photos(tmp_path):
    """Pillow reads AVIF: a folder of AVIF photos is explained (it said 'no images in folder'), and an AVIF and a
    WebP of one name keep two outputs."""
    photos = tmp_path / "photos"
    photos.mkdir()
    digit = Image.open(SAMPLE_IMAGES / "digit_3.png").convert("RGB").resize((32, 32))
    digit.save(photos / "three.avif")
    digit.save(photos / "three.webp")
    result = occlude("run", SAMPLE_MODELS / "digits_cnn.onnx", photos, "-o", tmp_path / "out", "--no-timing")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(row["path"].rsplit(".", 1)[1] for row in summary["images"]) == ["avif", "webp"]
    assert len({row["output"] for row in summary["images"]}) == 2
