"""'-' as the PATH (issue 24): paths streamed from stdin, one per line or NUL-separated (--null), on run, check and
bias. The streaming is tested through a real pipe into a real process: the first image's outputs exist while
stdin is still open, and the peak memory of 1,000 paths is that of 100 (plus a few hundred bytes a path)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.batch.inputs import MAX_STREAMED_PATH, StreamedInputs, in_shard, read_paths
from occlude_cli.cli import app

RECT = (4, 6, 9, 12)


@pytest.fixture(scope="module")
def rect_model(tmp_path_factory) -> Path:
    from onnx_models import rectangle_model

    return rectangle_model(tmp_path_factory.mktemp("models") / "rect.onnx", rect=RECT)


def make_images(folder: Path, names) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    paths = []
    for name in names:
        path = folder / name
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(path, format="PNG")
        paths.append(path)
    return paths


def invoke(*args, stdin: bytes = b"", cwd=None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args], input=stdin)
    finally:
        os.chdir(old)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


# ------------------------------------------------------------------------------ the reader


class Trickle(io.RawIOBase):
    """A stream that hands out one small chunk per read, as a pipe does while its writer is still writing."""

    def __init__(self, data: bytes, size: int = 7):
        self.data, self.size, self.reads = data, size, 0

    def readable(self):
        return True

    def read1(self, n=-1):
        self.reads += 1
        chunk, self.data = self.data[: self.size], self.data[self.size :]
        return chunk

    read = read1


def test_read_paths_is_lazy_exact_and_bounded():
    stream = Trickle(b"a.png\nb c.png\n\n\xff\xfe.png\nlast.png")
    paths = read_paths(stream)
    assert next(paths) == "a.png" and stream.reads <= 1  # yielded before the rest was read
    assert list(paths) == ["b c.png", "\udcff\udcfe.png", "last.png"]  # empty line skipped, bytes kept
    assert list(read_paths(io.BytesIO(b"new\nline.png\0x.png\0"), null=True)) == ["new\nline.png", "x.png"]
    problems: list = []
    huge = b"x" * (MAX_STREAMED_PATH + 10)
    assert list(read_paths(io.BytesIO(b"a\n" + huge + b"\nb\n"), problems=problems)) == ["a", "b"]
    assert len(problems) == 1 and "skipped" in problems[0]


def test_streamed_keys_shards_and_duplicates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_images(tmp_path / "d", ["x.png", "y.png", "X.PNG"])
    make_images(tmp_path / "e", ["x.png"])
    (tmp_path / "x.jpg").write_bytes((tmp_path / "d" / "x.png").read_bytes())
    lines = b"d/x.png\n./d/y.png\nd/x.png\n" + str(tmp_path / "e/x.png").encode() + b"\nd/X.PNG\nx.jpg\nmissing.png\n"
    images = list(StreamedInputs(io.BytesIO(lines)))
    keys = [i.key for i in images]
    assert keys[:3] == ["d/x", "d/y", "e/x"]  # relative to the current folder, './' and duplicates gone
    assert keys[3].startswith("d/X.PNG~")  # collides with d/x when case is folded: hashed
    assert keys[4:] == ["x", "missing"]  # a missing file is an input; its row fails when it is read
    shards = [[i.key for i in StreamedInputs(io.BytesIO(lines), shard=(k, 3))] for k in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(keys)  # disjoint, complete, the same keys as unsharded
    for k, keys_k in enumerate(shards, 1):
        assert all(in_shard(image.source_stem + ".png", (k, 3)) for image in images if image.key in keys_k[:1])


# ------------------------------------------------------------------------------ through a real pipe


WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _streamed_run(rect_model, tmp_path, names, out_name):
    """``occlude run MODEL - --shard 1/25`` fed ``names`` through a pipe: the first 20 lines, then (once the first
    image's record exists) the rest. Returns (record seen while stdin was open, peak RSS in KiB, exit code)."""
    out = tmp_path / out_name
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "occlude_cli", "run", str(rect_model), "-"]
    command += ["--shard", "1/25", "--patch", "8", "--no-npy", "--out", str(out), "--quiet"]
    env = {**os.environ, "OCCLUDE_CACHE_DIR": "off"}  # both runs build the model's facts: alike but for the paths
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    assert proc.stdin is not None and proc.stderr is not None
    first = b"".join(name.encode() + b"\n" for name in names[:20])
    proc.stdin.write(first)
    proc.stdin.flush()
    seen_open = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(p.name.endswith(".json") and p.parent != out for p in out.rglob("*.json")):
            seen_open = True
            break
        time.sleep(0.05)
    proc.stdin.write(b"".join(name.encode() + b"\n" for name in names[20:]))
    proc.stdin.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    return seen_open, int(err.strip().splitlines()[-1]), code, out


def test_a_thousand_paths_stream_through_a_pipe_in_flat_memory(rect_model, tmp_path):
    names = [f"in/{i:04d}.png" for i in range(1000)]
    make_images(tmp_path / "in", [Path(n).name for n in names])
    # the shard keeps 35 of the 1,000; its first image is among the first 20 lines
    first_mine = next(i for i, n in enumerate(names) if in_shard(n, (1, 25)))
    assert first_mine < 20
    seen_open, rss_1000, code, out = _streamed_run(rect_model, tmp_path, names, "out1000")
    assert code == 0
    assert seen_open, "no image was written before stdin was closed"
    summary = json.loads((out / "summary.json").read_text())
    mine = sorted(n[:-4] for n in names if in_shard(n, (1, 25)))
    assert sorted(row["output"][: -len(".json")] for row in summary["images"]) == mine
    assert summary["counts"]["ok"] == len(mine)
    # memory: 1,000 paths (35 images) against 100 paths (4 images)
    _, rss_100, code, _ = _streamed_run(rect_model, tmp_path, names[:100], "out100")
    assert code == 0
    assert rss_1000 - rss_100 < 8 * 1024, (rss_100, rss_1000)  # measured: about 1 MiB more


# ------------------------------------------------------------------------------ the commands


def test_run_null_hostile_names_resume_and_failures(rect_model, tmp_path):
    names = ["new\nline.png", "tab\tand \x1b[2J.png", "bidi\u202egnp.png", "plain.png"]
    paths = make_images(tmp_path / "in", names)
    stdin = b"".join(os.fsencode(p) + b"\0" for p in paths) + b"in/missing.png\0"
    args = ("run", rect_model, "-", "--null", "--patch", "8", "--out", tmp_path / "out", "--json", "-q")
    first = invoke(*args, stdin=stdin, cwd=tmp_path)
    assert first.exit_code == 3  # the missing file is one failed row; the others are explained
    document = json.loads(first.stdout)
    assert document["counts"] == {"ok": 4, "failed": 1, "skipped": 0, "pending": 0}
    again = invoke(*args, "--resume", stdin=stdin, cwd=tmp_path)
    assert json.loads(again.stdout)["counts"] == {"ok": 0, "failed": 1, "skipped": 4, "pending": 0}
    # without --null a newline splits a name: two paths that do not exist, each one failed row
    lines = b"".join(os.fsencode(p) + b"\n" for p in paths)
    split = invoke(*args[:3], "--patch", "8", "--out", tmp_path / "out2", "--json", "-q", stdin=lines, cwd=tmp_path)
    assert split.exit_code == 3
    assert json.loads(split.stdout)["counts"] == {"ok": 3, "failed": 2, "skipped": 0, "pending": 0}


def test_dash_is_the_only_path_and_null_needs_it(rect_model, tmp_path):
    (image,) = make_images(tmp_path, ["a.png"])
    mixed = invoke("run", rect_model, "-", image, "--out", tmp_path / "o", stdin=b"")
    assert mixed.exit_code == 1 and "error: '-' (paths from stdin) must be the only input" in mixed.stderr
    null = invoke("run", rect_model, image, "--null", "--out", tmp_path / "o")
    assert null.exit_code == 1 and "error: --null " in null.stderr and "needs '-'" in null.stderr


def test_check_and_bias_read_stdin(rect_model, tmp_path):
    paths = make_images(tmp_path / "in", ["a.png", "b\nc.png"])
    stdin = b"".join(os.fsencode(p) + b"\0" for p in paths)
    check = invoke(
        "check",
        rect_model,
        "-",
        "--null",
        "--box",
        "6,4,12,9",
        "--min-energy",
        "0.5",
        "--out",
        tmp_path / "c",
        "--json",
        stdin=stdin,
    )
    assert check.exit_code == 0
    assert [row["status"] for row in json.loads(check.stdout)["images"]] == ["pass", "pass"]
    bias = invoke(
        "bias",
        rect_model,
        "-",
        "-0",
        "--box",
        "6,4,12,9",
        "--controls",
        "1",
        "--bootstrap",
        "0",
        "--out",
        tmp_path / "b",
        "--json",
        stdin=stdin + b"nothing.png\0",
    )
    assert bias.exit_code == 3
    rows = json.loads(bias.stdout)["images"]
    assert [row["status"] for row in rows] == ["ok", "ok", "error"]
    empty = invoke("check", rect_model, "-", "--box", "6,4,12,9", "--out", tmp_path / "e", stdin=b"")
    assert empty.exit_code == 1 and "stdin named none" in empty.stderr


def test_diff_reads_stdin_with_and_without_null(rect_model, tmp_path):
    """diff A B - and diff --golden DIR MODEL -: the same rows as the paths given as arguments; a path that
    names nothing is one error row (exit 3), told once; an empty stdin is one error line."""
    paths = make_images(tmp_path / "in", ["a.png", "b\nc.png", "d.png"])
    base = ("diff", rect_model, rect_model)
    flags = ("--patch", "4", "--json", "-q")
    args_run = invoke(*base, *paths, "--out", tmp_path / "args", *flags, cwd=tmp_path)
    assert args_run.exit_code == 0, args_run.stderr
    expected = [row["rank_corr"] for row in json.loads(args_run.stdout)["images"]]
    null = invoke(
        *base,
        "-",
        "--null",
        "--out",
        tmp_path / "n",
        *flags,
        cwd=tmp_path,
        stdin=b"".join(os.fsencode(p) + b"\0" for p in paths),
    )
    assert null.exit_code == 0, null.stderr
    assert [row["rank_corr"] for row in json.loads(null.stdout)["images"]] == expected
    plain = [p for p in paths if "\n" not in p.name]
    lines = invoke(
        *base,
        "-",
        "--out",
        tmp_path / "l",
        *flags,
        cwd=tmp_path,
        stdin=b"".join(os.fsencode(p) + b"\n" for p in plain) + b"in/missing.png\n",
    )
    assert lines.exit_code == 3, lines.stderr
    rows = json.loads(lines.stdout)["images"]
    assert [row["status"] for row in rows] == ["ok", "ok", "error"]
    assert [line for line in lines.stderr.splitlines() if "missing.png" in line] == [
        "error: in/missing.png: image not found: in/missing.png"
    ]
    golden = invoke(
        "run",
        rect_model,
        "-",
        "--null",
        "--patch",
        "4",
        "--out",
        tmp_path / "g",
        "-q",
        cwd=tmp_path,
        stdin=b"".join(os.fsencode(p) + b"\0" for p in paths),
    )
    assert golden.exit_code == 0, golden.stderr
    against = invoke(
        "diff",
        "--golden",
        tmp_path / "g",
        rect_model,
        "-",
        "-0",
        "--out",
        tmp_path / "gd",
        *flags,
        cwd=tmp_path,
        stdin=b"".join(os.fsencode(p) + b"\0" for p in paths),
    )
    assert against.exit_code == 0, against.stderr
    assert [row["max_abs_diff"] for row in json.loads(against.stdout)["images"]] == [0.0, 0.0, 0.0]
    empty = invoke(*base, "-", "--out", tmp_path / "e", *flags, stdin=b"")
    assert empty.exit_code == 1 and "error:" in empty.stderr
