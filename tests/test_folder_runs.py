"""Folder runs that never lose, mix or keep stale results (issue 36): each numbered case of the issue is a
sequence of real runs into one folder, as a shell script would make them (the digits sample model, the real
CLI), with assertions on the files' contents. Plus the naming rule on its own and the --dry-run pass count
held to a real run's, option by option."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import run_folder
from occlude_cli.batch import discover_inputs, take_shard
from occlude_cli.cli import app
from occlude_cli import ExplainOptions, estimate_run, resolve_preprocessing
from occlude_cli.loaders.model import OnnxClassifier
from occlude_cli.outputs.folder import saved_map
from occlude_cli.outputs.names import is_run_level, name_hash, output_stems, stem_of
from occlude_cli.outputs.report import collect_report_data

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
runner = CliRunner()


def occlude(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def digits(folder: Path, names, seed: int = 0) -> Path:
    """Images under ``folder`` with the given names: the three sample digits, then seeded noise digits, so
    that every image has its own map."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if i < 3:
            image = Image.open(SAMPLE_IMAGES / f"digit_{(0, 3, 7)[i]}.png").convert("L")
        else:
            base = np.asarray(Image.open(SAMPLE_IMAGES / f"digit_{(0, 3, 7)[i % 3]}.png").convert("L"), float)
            image = Image.fromarray(np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8))
        suffix = Path(name).suffix.lower()
        image.save(target, format={".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, "PNG"))
    return folder


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def rows_by_name(out: Path) -> dict:
    return {Path(r["path"]).name: r for r in summary(out)["images"]}


def record(out: Path, row: dict) -> dict:
    return json.loads((out / row["output"]).read_text(encoding="utf-8"))


def expected_aggregate(out: Path) -> np.ndarray:
    """The mean of the current rows' maps (each scaled to [-1, 1]), computed here from the JSON files."""
    maps = []
    for row in sorted(summary(out)["images"], key=lambda r: r["output"] or ""):
        if row["status"] in ("ok", "skipped"):
            values = saved_map(out, row["output"])
            maps.append(values / np.nanmax(np.abs(values)))
    return np.mean(maps, axis=0)


# ------------------------------------------------------------------------------------------ case 1


def test_case1_names_that_differ_in_case_or_suffix_keep_their_own_results(tmp_path):
    data = digits(tmp_path / "data", ["a.png", "a.PNG", "a.jpg", "a.jpg.png", "b.png"])
    out = tmp_path / "out"
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--no-timing").exit_code == 0
    rows = rows_by_name(out)
    assert set(rows) == {"a.png", "a.PNG", "a.jpg", "a.jpg.png", "b.png"}
    outputs = [r["output"] for r in rows.values()]
    assert len({o.casefold() for o in outputs}) == 5  # distinct, even on a case-insensitive file system
    for name, row in rows.items():
        assert row["status"] == "ok"
        assert record(out, row)["image"]["path"] == str(data / name)  # each output is its own image's
    assert rows["a.png"]["output"] == f"a.png~{name_hash('a.png')}.json"
    assert rows["b.png"]["output"] == "b.json"  # a name that collides with nothing is kept as it is
    maps = {name: np.load(out / row["output"].replace(".json", ".npy")) for name, row in rows.items()}
    assert not np.array_equal(maps["a.png"], maps["a.PNG"])  # two images, two maps
    resumed = occlude("run", DIGITS, data, "-o", out, "-q", "--no-timing", "--resume", "--json")
    assert {r["status"] for r in json.loads(resumed.stdout)["images"]} == {"skipped"}  # found again


# ------------------------------------------------------------------------------------------ case 2


def test_case2_inputs_named_like_run_level_files(tmp_path):
    names = ["summary.png", "aggregate.png", "index.png", "manifest.png", "summary.shard-1-of-2.png", "x.topk.png"]
    data = digits(tmp_path / "data", names + ["x.png"])
    out = tmp_path / "out"
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--no-timing", "--aggregate", "--top-k", "2").exit_code == 0
    document = summary(out)
    assert document["counts"] == {"ok": 7, "failed": 0, "skipped": 0, "pending": 0}  # summary.json is the run's summary
    for name, row in rows_by_name(out).items():
        assert record(out, row)["image"]["path"] == str(data / name)
        assert not is_run_level(row["output"][: -len(".json")])
    # x.topk.png must not overwrite x.png's top-k maps (x.topk.npy): both are there, each its own
    assert np.load(out / "x.topk.npy").shape[0] == 2
    assert np.allclose(np.load(out / "aggregate.npy"), expected_aggregate(out), equal_nan=True)
    rebuilt = occlude("summary", out, "--json")
    assert rebuilt.exit_code == 0 and json.loads(rebuilt.stdout)["counts"]["ok"] == 7
    resumed = occlude("run", DIGITS, data, "-o", out, "-q", "--no-timing", "--aggregate", "--top-k", "2", "--resume")
    assert resumed.exit_code == 0
    assert summary(out)["counts"] == {"ok": 0, "failed": 0, "skipped": 7, "pending": 0}  # never redone


# ------------------------------------------------------------------------------------------ case 3


def test_case3_aggregate_over_shards_equals_the_unsharded_one_byte_for_byte(tmp_path):
    data = digits(tmp_path / "data", [f"img{i:02d}.png" for i in range(15)])
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    args = ["-q", "--no-timing", "--aggregate", "--patch", "2", "--stride", "1", "--cmap", "coolwarm"]
    assert occlude("run", DIGITS, data, "-o", whole, *args).exit_code == 0
    for k in (1, 2):
        assert occlude("run", DIGITS, data, "-o", sharded, *args, "--shard", f"{k}/3").exit_code == 0
        assert not (sharded / "aggregate.npy").exists()  # never the mean of a part
    assert occlude("run", DIGITS, data, "-o", sharded, *args, "--shard", "3/3").exit_code == 0
    want = (whole / "aggregate.npy").read_bytes()
    assert (sharded / "aggregate.npy").read_bytes() == want  # the last shard rebuilt it from all 15
    assert summary(sharded)["run"]["aggregate_images"] == 15 and len(summary(sharded)["images"]) == 15
    assert (sharded / "aggregate.png").read_bytes() == (whole / "aggregate.png").read_bytes()
    assert occlude("summary", sharded, "-q").exit_code == 0
    assert (sharded / "aggregate.npy").read_bytes() == want
    assert (sharded / "aggregate.png").read_bytes() == (whole / "aggregate.png").read_bytes()  # the run's --cmap
    for k in (3, 1, 2):
        assert occlude("run", DIGITS, data, "-o", sharded, *args, "--shard", f"{k}/3", "--resume").exit_code == 0
    assert (sharded / "aggregate.npy").read_bytes() == want


# ------------------------------------------------------------------------------------------ case 4


def test_case4_summary_keeps_no_stale_rows(tmp_path):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(5)])
    (data / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    for k in (1, 2, 3):
        occlude("run", DIGITS, data, "-o", out, "-q", "--shard", f"{k}/3")
    first = occlude("summary", out, "--json")
    assert first.exit_code == 3 and json.loads(first.stdout)["counts"]["failed"] == 1
    (data / "broken.png").unlink()
    for k in (1, 2, 3):
        assert occlude("run", DIGITS, data, "-o", out, "-q", "--shard", f"{k}/3").exit_code == 0
    again = occlude("summary", out, "--json")
    assert again.exit_code == 0, again.output
    document = json.loads(again.stdout)
    assert document["counts"] == {"ok": 5, "failed": 0, "skipped": 0, "pending": 0}
    assert not any("broken" in r["path"] for r in summary(out)["images"])
    assert len(list(out.glob("summary.shard-*.json"))) == 3  # the current job's three, none of the earlier
    assert not any("broken" in p.read_text() for p in out.glob("summary.shard-*"))

    # a result renamed by a later collision (a.json -> a.png~HASH.json) is counted once
    single = tmp_path / "single"
    digits(single, ["a.png"])
    assert occlude("run", DIGITS, single, "-o", tmp_path / "o2", "-q").exit_code == 0
    assert (tmp_path / "o2" / "a.json").is_file()
    digits(single, ["x.png", "y.png", "a.jpg"])  # a.jpg: a.png's stem is taken by two now
    assert occlude("run", DIGITS, single, "-o", tmp_path / "o2", "-q").exit_code == 0
    rebuilt = json.loads(occlude("summary", tmp_path / "o2", "--json").stdout)
    assert sorted(Path(r["path"]).name for r in rebuilt["images"]) == ["a.jpg", "a.png", "x.png", "y.png"]

    # a re-run with fewer patch sizes: 4 images stay 4 rows
    four = digits(tmp_path / "four", [f"f{i}.png" for i in range(4)])
    assert occlude("run", DIGITS, four, "-o", tmp_path / "o3", "-q", "--patch", "2,4").exit_code == 0
    assert occlude("run", DIGITS, four, "-o", tmp_path / "o3", "-q", "--patch", "2").exit_code == 0
    rebuilt = json.loads(occlude("summary", tmp_path / "o3", "--json").stdout)
    assert len(rebuilt["images"]) == 4 and {r["output"] for r in rebuilt["images"]} == {f"f{i}.json" for i in range(4)}
    report = collect_report_data(tmp_path / "o3")
    assert report["counts"]["run"]["ok"] == 4 and len(report["rows"]) == 4


# ------------------------------------------------------------------------------------------ case 5


def test_case5_the_report_shows_only_the_current_run(tmp_path):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(4)])
    out = tmp_path / "out"
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "2", "--report").exit_code == 0
    for k in (1, 2):
        assert (
            occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "4", "--shard", f"{k}/2", "--report").exit_code
            == 0
        )
    page = collect_report_data(out)
    assert dict(page["settings"])["patch"] == "4x4"
    assert len(page["rows"]) == 4
    for row in page["rows"]:
        current = json.loads((out / f"{Path(row['n']).stem}.json").read_text())
        assert current["params"]["patch"] == [4, 4]
        peak = current["map_info"]["peak"]
        assert (row["py"], row["px"], row["pv"]) == (peak["y"], peak["x"], peak["value"])
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "4x4" in html and '"patch","2x2"' not in html


# ------------------------------------------------------------------------------------------ case 6


def test_case6_resume_never_reads_stale_maps_and_reruns_leave_nothing_behind(tmp_path):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(4)])
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "2", "--top-k", "2", "--panels").exit_code == 0
    assert (out / "img0.npy").is_file() and (out / "img0.topk.npy").is_file() and (out / "img0.panels.png").is_file()
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "4", "--no-npy").exit_code == 0
    names = sorted(p.name for p in out.iterdir() if p.name.startswith("img0."))
    assert names == ["img0.heatmap.png", "img0.json", "img0.overlay.png"]  # no .npy, topk, panels of the old run
    resumed = occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "4", "--no-npy", "--resume", "--aggregate")
    assert resumed.exit_code == 0
    assert occlude("run", DIGITS, data, "-o", fresh, "-q", "--patch", "4", "--no-npy", "--aggregate").exit_code == 0
    assert (out / "aggregate.npy").read_bytes() == (fresh / "aggregate.npy").read_bytes()

    # a patch-size study replaced by a single patch: the study's files go too
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "2,4", "--multiscale").exit_code == 0
    assert (out / "img0.scales.json").is_file() and not (out / "img0.json").exists()
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "4").exit_code == 0
    assert not list(out.glob("img0.scales.json")) and not list(out.glob("img0.patch-*"))
    assert not list(out.glob("img0.multiscale*"))


# ------------------------------------------------------------------------------------------ case 7


class CountingClassifier(OnnxClassifier):
    """The real model; every sample it is asked to score is counted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples = 0

    def run(self, batch):
        self.samples += len(batch)
        return super().run(batch)


OPTION_SETS = {
    "default": (dict(), dict()),
    "metrics": (dict(), dict(metrics=True)),
    "patch sizes": (dict(), dict(scales=[(2, 2), (4, 4)])),
    "patch sizes and metrics": (dict(), dict(scales=[(2, 2), (3, 3), (4, 4)], metrics=True, multiscale=True)),
    "refine": (dict(patch=(4, 4), stride=(1, 1), refine=True, refine_step=2, refine_budget=0.5), dict()),
    "top-k": (dict(top_k=3), dict()),
    "all classes": (dict(), dict(all_classes=True)),
    "region": (dict(region=(1.0, 1.0, 6.0, 7.0)), dict()),
}


@pytest.mark.parametrize("name", list(OPTION_SETS))
def test_case7_dry_run_counts_every_forward_pass_of_the_run(tmp_path, name):
    fields, run_flags = OPTION_SETS[name]
    data = digits(tmp_path / "data", ["a.png", "b.png"])
    images, _ = discover_inputs([str(data)])
    model = CountingClassifier(DIGITS, device="cpu")
    preprocessing = resolve_preprocessing(model)
    scales = run_flags.get("scales", ())
    options = ExplainOptions(**{"patch": scales[0] if scales else None, "incremental": "off", **fields})
    plan = estimate_run(
        model,
        images[0].path,
        options,
        preprocessing=preprocessing,
        scales=scales,
        metrics=run_flags.get("metrics", False),
    )
    model.samples = 0
    result = run_folder(model, images, tmp_path / "out", options, preprocessing=preprocessing, **run_flags)
    assert [r.status for r in result.rows] == ["ok", "ok"]
    assert model.samples == plan["forward_passes"] * len(images), plan


def test_case7_the_command_prints_what_the_run_makes(tmp_path):
    """--dry-run through the CLI: --metrics and several --patch sizes are in the count (50 + 115 and
    50 + 10 passes for an 8x8 digit), and the JSON says it for each part."""
    image = SAMPLE_IMAGES / "digit_3.png"
    plan = json.loads(occlude("run", DIGITS, image, "--dry-run", "--json", "--metrics", "--patch", "2").stdout)
    assert (plan["forward_passes"], plan["metrics_forward_passes"]) == (50 + 115, 115)
    plan = json.loads(occlude("run", DIGITS, image, "--dry-run", "--json", "--patch", "2,4").stdout)
    assert plan["forward_passes"] == 50 + 10
    assert [g["forward_passes"] for g in plan["per_patch"]] == [50, 10]
    text = occlude("run", DIGITS, image, "--dry-run", "--patch", "2,4", "--metrics").stdout
    assert "290 forward passes" in text and "2x2: 50, 4x4: 10" in text and "--metrics: 230" in text


# ------------------------------------------------------------------------------------------ case 8


@pytest.mark.parametrize("flags", [[], ["--patch", "2,4", "--multiscale"]], ids=["single", "multiscale"])
def test_case8_aggregate_after_resume_is_the_fresh_one_byte_for_byte(tmp_path, flags):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(6)])
    out = tmp_path / "out"
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--aggregate", *flags).exit_code == 0
    fresh = (out / "aggregate.npy").read_bytes()
    (out / "img2.json").unlink(missing_ok=True)  # one image to redo, the others skipped
    (out / "img2.scales.json").unlink(missing_ok=True)
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--aggregate", "--resume", *flags).exit_code == 0
    assert summary(out)["counts"]["skipped"] == 5
    assert (out / "aggregate.npy").read_bytes() == fresh
    assert np.array_equal(np.load(out / "aggregate.npy"), expected_aggregate(out).astype(np.float32), equal_nan=True)


# ------------------------------------------------------------------------------------------ more sequences


def test_a_killed_run_is_summarised_as_what_it_finished(tmp_path):
    """SIGKILL mid-run: `occlude summary` lists the images done as ok and the others as failed with no
    result (never the earlier job's rows), exits 3; --resume then completes the folder."""
    data = digits(tmp_path / "data", [f"img{i:02d}.png" for i in range(60)])
    out = tmp_path / "out"
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "3").exit_code == 0  # an earlier job
    args = [sys.executable, "-m", "occlude_cli", "run", DIGITS, str(data), "-o", str(out), "-q"]
    proc = subprocess.Popen(args + ["--patch", "1", "--stride", "1", "--top-k", "3"], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.topk.npy"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    rebuilt = occlude("summary", out, "--json")
    assert rebuilt.exit_code == 3
    rows = json.loads(rebuilt.stdout)["images"]
    assert len(rows) == 60
    done = [r for r in rows if r["status"] == "ok"]
    assert 1 <= len(done) < 60
    for row in done:
        assert record(out, row)["params"]["patch"] == [1, 1]  # the killed job's result, never the earlier one
    pending = [r for r in rows if r["status"] == "pending"]
    assert len(done) + len(pending) == 60 and all("no result" in r["error"] for r in pending)
    assert json.loads(rebuilt.stdout)["interrupted"] is True
    resumed = occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "1", "--stride", "1", "--top-k", "3", "--resume")
    assert resumed.exit_code == 0
    assert summary(out)["counts"]["skipped"] >= len(done) and summary(out)["run"]["complete"]


def test_shards_running_at_once_leave_the_complete_folder(tmp_path):
    """The README's `for k in 1 2 3; do occlude run ... --shard $k/3 & done; wait`, into a folder that held
    another run: the shards finish in any order, under the folder lock; the folder ends with every row and
    the aggregate of an unsharded run, byte for byte."""
    data = digits(tmp_path / "data", [f"img{i:02d}.png" for i in range(12)])
    whole, out = tmp_path / "whole", tmp_path / "out"
    flags = ["-q", "--no-timing", "--aggregate", "--patch", "2", "--stride", "1"]
    assert occlude("run", DIGITS, data, "-o", whole, *flags).exit_code == 0
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "4", "--aggregate").exit_code == 0  # earlier
    base = [sys.executable, "-m", "occlude_cli", "run", DIGITS, str(data), "-o", str(out)] + flags
    procs = [subprocess.Popen(base + ["--shard", f"{k}/3"], stderr=subprocess.PIPE) for k in (1, 2, 3)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    document = summary(out)
    assert document["run"]["shards_done"] == [1, 2, 3] and document["counts"]["ok"] == 12
    assert (out / "aggregate.npy").read_bytes() == (whole / "aggregate.npy").read_bytes()
    for row in document["images"]:
        assert record(out, row)["params"]["patch"] == [2, 2]


def test_summary_of_a_job_with_a_shard_missing_says_so(tmp_path):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(6)])
    out = tmp_path / "out"
    occlude("run", DIGITS, data, "-o", out, "-q", "--shard", "1/2", "--aggregate")
    result = occlude("summary", out)
    assert result.exit_code == 3 and "shard(s) 2 of 2 did not finish" in result.output
    document = summary(out)
    assert document["run"]["shards_done"] == [1] and not document["run"]["complete"]
    assert len(document["images"]) == 3 and not (out / "aggregate.npy").exists()


def test_a_new_job_removes_the_earlier_jobs_run_level_files(tmp_path):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(4)])
    out = tmp_path / "out"
    for k in (1, 2):
        occlude("run", DIGITS, data, "-o", out, "-q", "--shard", f"{k}/2", "--aggregate", "--report")
    assert (out / "aggregate.npy").is_file() and (out / "index.html").is_file()
    assert occlude("run", DIGITS, data, "-o", out, "-q", "--patch", "4").exit_code == 0
    names = {p.name for p in out.iterdir() if not p.name.startswith("img")}
    assert names == {"manifest.json", "summary.json", "summary.csv"}  # no shard files, aggregate or old report


# ------------------------------------------------------------------------------------------ the naming rule


def test_output_names_rule():
    nfc, nfd = unicodedata.normalize("NFC", "é"), unicodedata.normalize("NFD", "é")
    inputs = [
        ("a.png", "a"),
        ("a.PNG", "a"),
        (f"{nfc}.png", nfc),
        (f"{nfd}.png", nfd),
        ("summary.png", "summary"),
        ("Aggregate.png", "Aggregate"),
        ("x.overlay.png", "x.overlay"),
        ("x.patch-8x8.png", "x.patch-8x8"),
        ("x~0123456789ab.png", "x~0123456789ab"),
        (".hidden.png", ".hidden"),
        ("bad\udcffname.png", "bad\udcffname"),
        ("esc\x1b[2J.png", "esc\x1b[2J"),
        ("rlo\u202egnp.png", "rlo\u202egnp"),
        ("n" * 251 + ".png", "n" * 251),
        ("other/summary.png", "other/summary"),
        ("Sub/c.png", "Sub/c"),
        ("sub/c.png", "sub/c"),
        ("ok.png", "ok"),
        (" lead.png", " lead"),
    ]
    stems = output_stems(inputs)
    by = dict(zip((rel for rel, _ in inputs), stems))
    assert by["ok.png"] == "ok" and by[" lead.png"] == " lead" and by["other/summary.png"] == "other/summary"
    for rel in ("a.png", "a.PNG", f"{nfc}.png", f"{nfd}.png", "summary.png", "Aggregate.png", "x.overlay.png"):
        assert by[rel] == f"{rel}~{name_hash(rel)}"
    assert by["x.patch-8x8.png"].endswith(name_hash("x.patch-8x8.png"))
    assert by["x~0123456789ab.png"] == f"x~0123456789ab.png~{name_hash('x~0123456789ab.png')}"
    assert by[".hidden.png"] == f"_hidden.png~{name_hash('.hidden.png')}"
    assert by["bad\udcffname.png"] == f"bad_name.png~{name_hash('bad' + chr(0xDCFF) + 'name.png')}"
    assert by["esc\x1b[2J.png"].startswith("esc_[2J.png~") and by["rlo\u202egnp.png"].startswith("rlo_gnp.png~")
    assert len(by["n" * 251 + ".png"].encode()) <= 180
    assert by["Sub/c.png"].startswith("Sub~") and by["sub/c.png"].startswith("sub~")  # folders apart too
    assert len({fold_name(s) for s in stems}) == len(stems)
    assert all(s.isprintable() and s.encode("utf-8") for s in stems)  # never a control character or a bad byte
    assert output_stems(list(reversed(inputs))) == list(reversed(stems))  # independent of the order
    assert stem_of("/some/where/summary.png") == f"summary.png~{name_hash('summary.png')}"


def fold_name(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def test_shards_name_every_input_alike(tmp_path):
    data = digits(tmp_path / "data", ["a.png", "a.PNG", "b.png", "c.png", "summary.png"])
    images, _ = discover_inputs([str(data)])
    keys = {i.path.name: i.key for i in images}
    for k in (1, 2, 3):
        for image in take_shard(images, (k, 3)):
            assert keys[image.path.name] == image.key
    assert len(set(keys.values())) == 5


def test_masks_are_still_found_by_the_inputs_own_names(tmp_path):
    """Companion files (masks) keep the input's own name, whatever its output stem."""
    data = digits(tmp_path / "data", ["a.png", "a.PNG"])
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(masks / "a.png")
    result = occlude("check", DIGITS, data, "--masks", masks, "-o", tmp_path / "out", "-q", "--json")
    rows = json.loads(result.stdout)["images"]
    assert len(rows) == 2 and all(r["status"] in ("pass", "fail") for r in rows), result.output


def test_library_folder_run_rebuilds_like_the_command(tmp_path):
    data = digits(tmp_path / "data", [f"img{i}.png" for i in range(3)])
    images, _ = discover_inputs([str(data)])
    model = OnnxClassifier(DIGITS, device="cpu")
    result = run_folder(
        model, images, tmp_path / "out", ExplainOptions(), preprocessing=resolve_preprocessing(model), aggregate=True
    )
    assert result.folder is not None and result.folder.complete and result.folder.aggregate_images == 3
    assert summary(tmp_path / "out")["counts"]["ok"] == 3
    assert os.path.isfile(tmp_path / "out" / "aggregate.npy")
    shutil.rmtree(tmp_path / "out")
