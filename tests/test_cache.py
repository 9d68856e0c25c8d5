"""The on-disk cache (inference.cache): model facts and incremental plans are read back exactly, a damaged entry
is rebuilt and never changes a map, models with external data are checked every time, and a run's outputs are
byte-identical with a cold cache, a warm one, an unwritable one and none."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from graph_models import residual_cnn, save, set_location
from test_incremental import Net, residual
from typer.testing import CliRunner

from occlude_cli.cli import app
from occlude_cli.core.engine import window_grid
from occlude_cli.errors import OccludeError
from occlude_cli.inference import cache, facts
from occlude_cli.inference.incremental import IncrementalUnavailable, build_plan

ROOT = Path(__file__).resolve().parents[1]
EFFNET = str(ROOT / "sample_models" / "efficientnet_lite0.onnx")
CAT = str(ROOT / "sample_images" / "cat.jpg")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV, str(folder))
    facts._memo.clear()
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def entries(folder: Path, kind: str) -> list:
    return (
        sorted(p for p in (folder / kind).glob("*") if not p.name.startswith(".")) if (folder / kind).exists() else []
    )


# ------------------------------------------------------------------------------------------ model facts


def test_model_facts_are_read_back_without_the_onnx_package(cache_dir, tmp_path):
    path = save(residual_cnn(), tmp_path / "r.onnx")
    fresh = facts.model_facts(path)
    assert not fresh.from_cache and not fresh.external_data
    assert fresh.largest_input[2] > 0 and fresh.final_ops
    assert len(entries(cache_dir, "model")) == 1
    code = (
        "import sys, json; from occlude_cli.inference.facts import model_facts; f = model_facts(sys.argv[1]); "
        "print(json.dumps([f.from_cache, 'onnx' in sys.modules, f.sha256, list(f.largest_input), f.final_ops]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    from_cache, onnx_loaded, digest, largest, final_ops = json.loads(out.stdout)
    assert from_cache is True and onnx_loaded is False
    assert digest == sha(path) == fresh.sha256
    assert largest == list(fresh.largest_input) and final_ops == fresh.final_ops


def test_a_model_with_external_data_is_checked_on_every_load(cache_dir, tmp_path):
    path = save(residual_cnn(), tmp_path / "ext.onnx", external=True)
    assert facts.model_facts(path).external_data
    assert entries(cache_dir, "model") == []  # its facts depend on the folder too: never cached
    set_location(path, "../../etc/passwd")
    facts._memo.clear()
    with pytest.raises(OccludeError, match="escapes the model's folder"):
        facts.model_facts(path)


def test_a_changed_model_file_is_read_again(cache_dir, tmp_path):
    path = save(residual_cnn(), tmp_path / "m.onnx")
    first = facts.model_facts(path)
    path.write_bytes(b"not an onnx model")
    with pytest.raises(OccludeError, match="cannot load"):
        facts.model_facts(path)
    assert first.sha256 != sha(path)


# ------------------------------------------------------------------------------------------ incremental plans


def _plan(path: Path, shape, window, **kwargs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return build_plan(
        path, shape, window=window, measure=False, max_plans=1, full_session=session, model_sha256=sha(path), **kwargs
    )


def _full_outputs(path: Path, sample: np.ndarray, baseline: np.ndarray, windows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.repeat(sample[None], len(windows), axis=0)
    for i, (y, x, h, w) in enumerate(windows.tolist()):
        batch[i, :, y : y + h, x : x + w] = baseline[:, y : y + h, x : x + w]
    return session.run(None, {"image": batch})[0]


def test_a_cached_plan_scores_exactly_as_the_plan_it_was_built_from(cache_dir, tmp_path):
    path = residual(tmp_path / "res.onnx")
    rng = np.random.default_rng(3)
    sample = rng.standard_normal((3, 32, 32)).astype(np.float32)
    baseline = np.zeros_like(sample)
    windows = window_grid((32, 32), (5, 5), (3, 3))
    built = _plan(path, [1, 3, 32, 32], (5, 5), sample=sample, baseline=baseline)
    assert built.notes != ["plan read from the cache"]
    (entry,) = entries(cache_dir, "incremental")
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        ["entry.json", "suffix.onnx"] + [f"part{i}.onnx" for i in range(len(built.segments))]
    )
    cached = _plan(path, [1, 3, 32, 32], (5, 5), sample=sample, baseline=baseline)
    assert cached.notes == ["plan read from the cache"]
    assert cached.cuts == built.cuts and cached.check_error is not None
    want = built.score_windows(sample, baseline, windows, batch_size=8)
    got = cached.score_windows(sample, baseline, windows, batch_size=8)
    np.testing.assert_array_equal(got, want)
    reference = _full_outputs(path, sample, baseline, windows)
    assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()
    # without a sample or baseline the self-check uses a seeded random input and zeros: still a cache hit
    assert _plan(path, [1, 3, 32, 32], (5, 5)).notes == ["plan read from the cache"]


@pytest.mark.parametrize("damage", ["garbage part", "swapped parts", "shifted field", "bad json", "outside path"])
def test_a_damaged_plan_entry_is_rebuilt_and_never_changes_the_outputs(cache_dir, tmp_path, damage):
    path = residual(tmp_path / "res.onnx")
    rng = np.random.default_rng(4)
    sample = rng.standard_normal((3, 32, 32)).astype(np.float32)
    baseline = np.zeros_like(sample)
    windows = window_grid((32, 32), (5, 5), (3, 3))
    want = _plan(path, [1, 3, 32, 32], (5, 5), sample=sample, baseline=baseline).score_windows(
        sample, baseline, windows
    )
    (entry,) = entries(cache_dir, "incremental")
    meta = json.loads((entry / "entry.json").read_text())
    if damage == "garbage part":
        (entry / "part0.onnx").write_bytes(b"\x08\x07garbage")
    elif damage == "swapped parts":
        (entry / "suffix.onnx").write_bytes((entry / "part0.onnx").read_bytes())
    elif damage == "shifted field":  # valid sessions, wrong geometry: only the self-check can tell
        meta["segments"][0]["rf"][0][1] += 1
        (entry / "entry.json").write_text(json.dumps(meta))
    elif damage == "outside path":  # an entry may only name its own files
        outside = tmp_path / "elsewhere.onnx"
        outside.write_bytes((entry / "part0.onnx").read_bytes())
        meta["segments"][0]["file"] = str(outside)
        (entry / "entry.json").write_text(json.dumps(meta))
    else:
        (entry / "entry.json").write_text("{")
    again = _plan(path, [1, 3, 32, 32], (5, 5), sample=sample, baseline=baseline)
    assert again.notes != ["plan read from the cache"]  # rebuilt
    np.testing.assert_array_equal(again.score_windows(sample, baseline, windows), want)
    assert _plan(path, [1, 3, 32, 32], (5, 5), sample=sample, baseline=baseline).notes == [
        "plan read from the cache"
    ]  # and stored again, sound


def test_a_graph_without_a_cut_point_is_remembered(cache_dir, tmp_path):
    net = Net([1, 3, 16, 16])
    net.head("image")
    path = net.save(tmp_path / "g.onnx")
    with pytest.raises(IncrementalUnavailable, match="no cut point") as first:
        _plan(path, [1, 3, 16, 16], (4, 4))
    (entry,) = entries(cache_dir, "incremental")
    assert json.loads((entry / "entry.json").read_text())["available"] is False
    with pytest.raises(IncrementalUnavailable) as second:
        _plan(path, [1, 3, 16, 16], (4, 4))
    assert str(second.value) == str(first.value)


def test_entries_are_trimmed_to_the_most_recently_used(cache_dir, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    keys = [cache.entry_key("model", n=n) for n in range(5)]
    for i, key in enumerate(keys):
        assert cache.store("model", key, {"n": i}) is not None
        os.utime(cache_dir / "model" / key, (1e9 + i, 1e9 + i))
    assert cache.load("model", keys[0]) is None and cache.load("model", keys[1]) is None
    assert [cache.load("model", k)[1]["n"] for k in keys[2:]] == [2, 3, 4]
    monkeypatch.setattr(cache, "MAX_BYTES", 2500)  # and at most this many bytes, the newest entry always kept
    big = [cache.entry_key("incremental", n=n) for n in range(3)]
    for i, key in enumerate(big):
        assert cache.store("incremental", key, {"n": i}, {"part0.onnx": b"w" * 1000}) is not None
        os.utime(cache_dir / "incremental" / key, (1.5e9 + i, 1.5e9 + i))
    assert cache.load("incremental", big[0]) is None
    assert [cache.load("incremental", k)[1]["n"] for k in big[1:]] == [1, 2]
    huge = cache.entry_key("incremental", n="huge")
    assert cache.store("incremental", huge, {"n": "huge"}, {"part0.onnx": b"w" * 5000}) is not None
    assert cache.load("incremental", huge) is not None and entries(cache_dir, "incremental") == [
        cache_dir / "incremental" / huge
    ]


# ------------------------------------------------------------------------------------------ the CLI


def _run(out: Path, env_cache: str) -> None:
    env = {**os.environ, cache.ENV: env_cache}
    result = subprocess.run(
        [sys.executable, "-m", "occlude_cli", "run", EFFNET, CAT, "--patch", "32", "--stride", "16", "--no-timing"]
        + ["--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def test_outputs_are_byte_identical_with_a_cold_warm_unwritable_or_no_cache(tmp_path):
    folder = tmp_path / "cache"
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    runs = {"cold": str(folder), "warm": str(folder), "unwritable": str(blocked), "off": "off"}
    for name, where in runs.items():
        _run(tmp_path / name, where)
    assert len(entries(folder, "incremental")) == 1 and len(entries(folder, "model")) == 1
    assert blocked.read_text() == "not a folder"
    record = json.loads((tmp_path / "warm" / "cat.json").read_text())
    assert record["params"]["incremental"]["used"] is True
    for suffix in (".json", ".npy", ".overlay.png", ".heatmap.png"):
        contents = {name: (tmp_path / name / f"cat{suffix}").read_bytes() for name in runs}
        assert len(set(contents.values())) == 1, (suffix, [n for n in runs if contents[n] != contents["cold"]])


def test_cache_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(cache.ENV, "off")
    assert cache.cache_dir() is None
    result = CliRunner().invoke(app, ["run", EFFNET, CAT, "--patch", "56", "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "xdg").exists()
    monkeypatch.delenv(cache.ENV)
    assert cache.cache_dir() == tmp_path / "xdg" / "occlude"


def test_concurrent_first_calls_share_one_entry_and_agree(tmp_path):
    """Three processes with the same empty cache at once (a CI job fanning out with xargs -P): all succeed,
    with byte-identical outputs, one entry of each kind and no temporary folder left."""
    folder = tmp_path / "cache"
    env = {**os.environ, cache.ENV: str(folder)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "occlude_cli", "run", EFFNET, CAT, "--patch", "32", "--stride", "16"]
            + ["--no-timing", "--out", str(tmp_path / f"out{i}"), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    assert len(entries(folder, "incremental")) == 1 and len(entries(folder, "model")) == 1
    assert not [p for kind in ("model", "incremental") for p in (folder / kind).iterdir() if p.name.startswith(".")]
    for suffix in (".json", ".npy", ".overlay.png"):
        assert len({(tmp_path / f"out{i}" / f"cat{suffix}").read_bytes() for i in range(3)}) == 1, suffix


def test_racing_writers_leave_one_entry_and_no_temporary_folder(cache_dir):
    """Many writers of one key at once (threads here; processes in the test above): each either renames its
    folder into place or finds another's entry there and removes its own."""
    import threading

    key = cache.entry_key("incremental", n="race")
    payload = {"part0.onnx": b"p" * 200_000, "suffix.onnx": b"s" * 200_000}
    results: list = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        results.append(cache.store("incremental", key, {"writer": i}, payload))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache_dir / "incremental" / key] * 8
    assert sorted(p.name for p in (cache_dir / "incremental").iterdir()) == [key]
    folder, meta = cache.load("incremental", key)
    assert meta["writer"] in range(8) and (folder / "part0.onnx").read_bytes() == payload["part0.onnx"]
