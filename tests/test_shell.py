"""The command in a shell and a CI script: closed pipes (`| head -1`), signals during start-up, a disk that fills
up in the middle of an image. Every test runs the real command in a subprocess on the sample models."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

OCCLUDE = [sys.executable, "-m", "occlude_cli"]
DIGITS = SAMPLE_MODELS / "digits_cnn.onnx"
DIGIT_IMAGES = [SAMPLE_IMAGES / f"digit_{d}.png" for d in (0, 3, 7)]


def closed_pipe() -> int:
    """The write end of a pipe whose reader has gone (`occlude ... | head -1` once head has exited)."""
    read, write = os.pipe()
    os.close(read)
    return write


def run_into_closed(args, stream: str, timeout=120) -> subprocess.CompletedProcess:
    """The command with ``stream`` ("stdout" or "stderr") a closed pipe; the other is captured."""
    write = closed_pipe()
    other = "stderr" if stream == "stdout" else "stdout"
    try:
        return subprocess.run(
            OCCLUDE + [str(a) for a in args],
            **{stream: write, other: subprocess.PIPE},
            text=True,
            timeout=timeout,
        )
    finally:
        os.close(write)


def test_closed_stderr_does_not_stop_a_folder_run_or_lose_its_summary(tmp_path):
    # `occlude run ... 2>&1 | head -1`: the progress lines' reader leaves after the first; the run used to die
    # on the next line (exit 1, no message) and leave no summary.json
    out = tmp_path / "out"
    proc = run_into_closed(["run", DIGITS, *DIGIT_IMAGES, "-o", out], "stderr")
    assert proc.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 3 and summary["interrupted"] is False
    assert sorted(p.name for p in out.glob("*.json")) == ["digit_0.json", "digit_3.json", "digit_7.json"] + [
        "manifest.json",
        "summary.json",
    ]


def test_closed_stdout_keeps_the_commands_exit_code(tmp_path):
    # `occlude check ... --json | head -1` in a CI script: the gate's verdict (4) is the exit code, not 1
    args = ["check", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--box", "0,0,2,2", "--require-peak", "-q"]
    proc = run_into_closed([*args, "-o", tmp_path / "ck", "--json"], "stdout")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    assert json.loads((tmp_path / "ck" / "check.json").read_text())["images"][0]["status"] == "fail"
    proc = run_into_closed(["run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-o", tmp_path / "run", "--json"], "stdout")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["--version"], ["info", str(DIGITS)]])
def test_help_and_version_into_a_closed_pipe_exit_0(args):
    # `occlude --help | head -1` under `set -o pipefail` used to fail the script (exit 1)
    proc = run_into_closed(args, "stdout", timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("delay", [0.1, 0.25, 0.4, 0.55, 0.7, 1.0])
def test_ctrl_c_at_any_moment_exits_130_in_one_line(tmp_path, delay):
    # SIGINT while the command's modules were imported printed a KeyboardInterrupt traceback (status -2); while
    # Typer parsed the flags it exited 130 without a word; inside an import (numpy, onnxruntime) it could read as
    # 'onnxruntime is not installed', exit 1
    args = [SAMPLE_MODELS / "efficientnet_lite0.onnx", SAMPLE_IMAGES / "cat.jpg", "--incremental", "off"]
    proc = subprocess.Popen(
        OCCLUDE + ["run", *map(str, args), "-o", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, (proc.returncode, err)
    lines = [line for line in err.splitlines() if not line.startswith(("status=", "warning:"))]  # a finished image
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads a process's CPU time from /proc")
def test_ctrl_c_while_the_flags_are_parsed_is_one_line(tmp_path):
    # Typer turns a KeyboardInterrupt during parsing into a silent exit 130. 180,000 arguments take more than a
    # second of CPU to parse, after about 0.3 s of imports: the signal is sent at 0.8 s of CPU time, while the
    # arguments are parsed (without it: exit 2, --nope is no option)
    args = [str(DIGITS), *["a"] * 180_000, "--nope"]
    proc = subprocess.Popen(OCCLUDE + ["run", *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while proc.poll() is None and cpu_seconds(proc.pid) < 0.8 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert (proc.returncode, err) == (130, "error: interrupted\n")


def test_ctrl_c_stays_ignored_when_the_shell_ignores_it(tmp_path):
    # a background job of a non-interactive shell (`occlude run ... &`) inherits SIGINT ignored: the early
    # handler must not turn it back on
    proc = subprocess.Popen(
        OCCLUDE + ["run", str(DIGITS), str(DIGIT_IMAGES[0]), "-o", str(tmp_path / "out"), "-q"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(0.25)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert (tmp_path / "out" / "digit_0.json").is_file()


def test_a_disk_full_after_the_pictures_leaves_no_picture_without_its_json(tmp_path):
    # the overlay (about 160 kB) and the heatmap fit under the file-size limit, the .npy (about 200 kB) does
    # not: the image's pictures written before it used to stay behind, listed by no JSON
    out = tmp_path / "out"

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (185_000, 185_000))

    proc = subprocess.run(
        OCCLUDE
        + ["run", str(SAMPLE_MODELS / "efficientnet_lite0.onnx"), str(SAMPLE_IMAGES / "cat.jpg")]
        + ["--patch", "56", "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
    )
    assert proc.returncode == 3, proc.stderr
    assert "cannot write" in proc.stderr and "cat.npy" in proc.stderr, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "summary.csv", "summary.json"]


def test_dash_with_stdin_closed_is_one_error_line(tmp_path):
    # `occlude run m.onnx - <&-` (a cron job, a service without stdin) was an internal error (AttributeError)
    proc = subprocess.run(
        OCCLUDE + ["run", str(DIGITS), "-", "-o", str(tmp_path / "out")],
        stdin=None,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.close(0),
    )
    assert (proc.returncode, proc.stderr) == (1, "error: '-' reads the paths from stdin, but stdin is closed\n")


def test_a_nul_separated_list_read_without_null_is_one_failed_row(tmp_path):
    # `find -print0 | occlude run m.onnx -` (--null forgotten): the whole list is one line holding NUL bytes;
    # the run stopped with an internal error (ValueError: embedded null byte) before the paths after it
    listed = b"".join(os.fsencode(p) + b"\0" for p in DIGIT_IMAGES[:2]) + b"\n" + os.fsencode(DIGIT_IMAGES[2])
    proc = subprocess.run(
        OCCLUDE + ["run", str(DIGITS), "-", "-o", str(tmp_path / "out"), "-q", "--json"],
        input=listed,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "a path cannot hold a NUL byte" in err and "--null" in err and "internal error" not in err
    rows = {row["status"]: row["path"] for row in json.loads(proc.stdout)["images"]}
    assert sorted(rows) == ["failed", "ok"] and rows["ok"] == str(DIGIT_IMAGES[2])
    assert rows["failed"] == str(DIGIT_IMAGES[0]) + "\\x00" + str(DIGIT_IMAGES[1]) + "\\x00"


def test_layers_reads_paths_from_stdin(tmp_path):
    # `occlude layers m.onnx - --layer relu` was an internal error (TypeError: StreamedInputs has no len())
    listed = b"".join(os.fsencode(p) + b"\0" for p in DIGIT_IMAGES[:2]) + b"nothing.png\0"
    proc = subprocess.run(
        OCCLUDE + ["layers", str(DIGITS), "-", "--null", "--layer", "relu", "-o", str(tmp_path / "l"), "--json"],
        input=listed,
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 3 and "internal error" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: nothing.png: image not found: nothing.png"
    ]
    document = json.loads(proc.stdout)
    assert document["images"] == 2 and len(document["per_image"]) == 2


@pytest.mark.parametrize("flag", ["--junit", "--summary-md"])
def test_a_ci_file_that_cannot_be_written_is_refused_before_any_image(tmp_path, flag):
    # the manual: the CI files are checked before any image is read; a folder that cannot take the file (here
    # its 'folder' is a regular file; a read-only folder likewise) was found out after every image was checked
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    target = blocker / "ci.out"
    proc = subprocess.run(
        OCCLUDE
        + ["check", str(DIGITS), str(DIGIT_IMAGES[1]), "--box", "0,0,3,3", "-o", str(tmp_path / "ck")]
        + [flag, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"error: cannot write {flag} {target}: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "ck").exists() and blocker.read_text() == "mine\n"


def test_report_of_a_manifest_row_without_a_path_is_written(tmp_path):
    # a manifest row whose path is null (a hand-edited or damaged manifest) was an internal KeyError in report
    out = tmp_path / "out"
    subprocess.run(OCCLUDE + ["run", str(DIGITS), *map(str, DIGIT_IMAGES[:2]), "-o", str(out), "-q"], timeout=60)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["images"][0] = {key: None for key in manifest["images"][0]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run(OCCLUDE + ["report", str(out)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert "digit_3.png" in (out / "index.html").read_text()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_a_full_disk_is_one_error_line_and_exit_1(tmp_path):
    # `occlude run ... --json > out.json` on a full disk: 'internal error: OSError ...' (a bug, said the
    # message); now the error it is, and never exit 0 with an empty or cut document
    out = tmp_path / "out"
    commands = [["info", str(DIGITS), "--json"], ["run", str(DIGITS), str(DIGIT_IMAGES[1]), "-o", str(out), "--json"]]
    with open("/dev/full", "w") as full:
        for args in commands:
            proc = subprocess.run(OCCLUDE + args, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.splitlines()[-1] == "error: cannot write to stdout: No space left on device"
            assert "internal error" not in proc.stderr
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 1  # the run itself is complete


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stderr_on_a_full_disk_does_not_stop_the_run(tmp_path):
    # `occlude run ... 2>> log` with the log's disk full: the first progress line stopped the run (exit 1, no
    # summary.json)
    out = tmp_path / "out"
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            OCCLUDE + ["run", str(DIGITS), *map(str, DIGIT_IMAGES), "-o", str(out)],
            stdout=subprocess.PIPE,
            stderr=full,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 3


@pytest.mark.parametrize("closed", [(1,), (2,), (1, 2)])
def test_closed_stdout_or_stderr_file_descriptors(tmp_path, closed):
    # `occlude run ... >&-` or `2>&-` (a cron line, a daemon): an internal error, then a traceback at exit
    out = tmp_path / "out"

    def close():
        for fd in closed:
            os.close(fd)

    args = ["run", str(DIGITS), *map(str, DIGIT_IMAGES[:2]), "-o", str(out), "--json"]
    proc = subprocess.run(OCCLUDE + args, preexec_fn=close, timeout=60)
    assert proc.returncode == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 2
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [
        "digit_0.heatmap.png",
        "digit_0.overlay.png",
        "digit_3.heatmap.png",
        "digit_3.overlay.png",
    ]


@pytest.mark.parametrize("command", [["bias", "--box", "0,0,3,3"], ["layers", "--layer", "relu"]])
def test_inputs_that_name_no_image_exit_3_in_bias_and_layers_as_in_run(tmp_path, command):
    # the manual: a command that takes a list of inputs exits 3 when they could not be processed; bias and layers
    # exited 1 when no argument named an image (run, check and diff: 3)
    (tmp_path / "empty").mkdir()
    args = [command[0], str(DIGITS), str(tmp_path / "nothing" / "*.png"), str(tmp_path / "empty"), *command[1:]]
    proc = subprocess.run(OCCLUDE + args + ["-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: no file matches {tmp_path / 'nothing' / '*.png'}",
        f"error: no images in folder {tmp_path / 'empty'} (use --recursive for sub-folders)",
        "error: no readable image among the inputs",
    ]
    assert proc.stdout == ""


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_after_the_interrupted_line_adds_nothing(tmp_path, second):
    # Ctrl-C pressed twice (or a supervisor's SIGTERM after it): once 'interrupted ...' is printed the command is
    # exiting; a second signal printed a second 'error: interrupted' line
    args = [SAMPLE_MODELS / "efficientnet_lite0.onnx", *DIGIT_IMAGES, SAMPLE_IMAGES / "cat.jpg", "--patch", "32"]
    proc = subprocess.Popen(
        OCCLUDE + ["run", *map(str, args), "-o", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("status=ok"):
            proc.send_signal(signal.SIGINT)
        if line.startswith("error: interrupted"):
            for _ in range(20):
                proc.send_signal(second)
                time.sleep(0.002)
                if proc.poll() is not None:
                    break
    proc.wait(timeout=60)
    errors = [line for line in lines if line.startswith("error:")]
    assert proc.returncode == 130 and len(errors) == 1, lines
