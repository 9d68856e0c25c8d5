"""The command in a shell and a CI script: closed pipes (`| head -1`), signals during start-up, a disk that fills
up in the middle of an image. Every test runs the real command in a subprocess on the sample models."""

import resource
import subprocess
import sys

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

OCCLUDE = [sys.executable, "-m", "occlude_cli"]


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
