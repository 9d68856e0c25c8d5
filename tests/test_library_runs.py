"""Every command from Python (issue 22): the library entry points write exactly what the commands write (the
commands only map flags to them), a folder run with summary and report is three lines, progress comes out as
events, and library errors name parameters while the command line names the flags."""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli import (
    CompareSettings,
    ExplainOptions,
    LayerSettings,
    OccludeError,
    RegionSource,
    RunEvents,
    bias_folder,
    check_folder,
    compare_folder,
    compare_image,
    layers_folder,
    run_folder,
    stability_image,
)
from occlude_cli.cli import app
from occlude_cli.cli.common import flag, in_flags
from occlude_cli.errors import in_words

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")


def cli(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def data(tmp_path) -> Path:
    """The three sample digits and a grey copy of the cat, in a folder of their own."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        shutil.copy(SAMPLE_IMAGES / name, folder / name)
    with Image.open(SAMPLE_IMAGES / "cat.jpg") as cat:
        cat.convert("L").resize((32, 32)).save(folder / "cat.png")
    return folder


def files(folder: Path) -> dict:
    """Every file's bytes; a run's JSON documents without the command line, the one thing a command records
    that a library call has not (a library call has no command line)."""
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            document = json.loads(data) if p.suffix == ".json" else None
            if isinstance(document, dict):
                document.pop("command", None)
                data = json.dumps(document, sort_keys=True).encode()
            found[p.relative_to(folder).as_posix()] = data
    return found


def test_the_readme_three_line_folder_run_as_written(tmp_path):
    """The README's Python block after <!-- library-folder-run --> (the manual repeats it), run as written
    (three lines), in a folder that holds the sample models and images: the whole folder, its summary, its
    aggregate and its report."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    manual = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    block = text.split("<!-- library-folder-run -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 3, block
    assert block in manual  # the manual shows the same three lines
    for name in ("sample_models", "sample_images"):
        (tmp_path / name).symlink_to(ROOT / name)
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'ok': 7, 'failed': 0, 'skipped': 0, 'pending': 0} True", done.stdout
    for name in ("summary.json", "summary.csv", "aggregate.png", "aggregate.npy", "index.html", "digit_3.json"):
        assert (tmp_path / "maps" / name).is_file(), name


def test_a_folder_run_from_python(tmp_path, data):
    """A whole folder, its summary and its report, with the result's rows in input order."""
    result = run_folder(DIGITS, [data], tmp_path / "maps", aggregate=True, report=True, timing=False)
    counts = result.summary["counts"]
    assert counts == {"ok": 4, "skipped": 0, "failed": 0, "pending": 0} and result.folder.complete and not result.failed
    for name in ("summary.json", "summary.csv", "aggregate.png", "aggregate.npy", "index.html", "manifest.json"):
        assert (tmp_path / "maps" / name).is_file(), name
    assert [Path(r.path).name for r in result.rows] == ["cat.png", "digit_0.png", "digit_3.png", "digit_7.png"]


def test_a_library_folder_run_writes_what_the_command_writes(tmp_path, data):
    flags = ["--patch", "2,4", "--multiscale", "--aggregate", "--report", "--no-timing", "--top-k", "2"]
    cli_out, lib_out = tmp_path / "cli" / "maps", tmp_path / "lib" / "maps"  # one name: the report's title
    assert cli("run", DIGITS, data, "-o", cli_out, "-q", *flags).exit_code == 0
    result = run_folder(
        DIGITS,
        [str(data)],
        lib_out,
        scales=[2, 4],
        multiscale=True,
        aggregate=True,
        report=True,
        timing=False,
        top_k=2,
    )
    assert not result.failed
    assert files(lib_out) == files(cli_out)


def test_events_tell_the_run_as_it_goes(tmp_path, data):
    class Recorder(RunEvents):
        draws_windows = True

        def __init__(self):
            self.seen = []

        def note(self, text, params=()):
            self.seen.append(("note", text))

        def problem(self, text, params=()):
            self.seen.append(("problem", text))

        def started(self, total, skipping=()):
            self.seen.append(("started", total))

        def image_started(self, image):
            self.seen.append(("image", image.key))

        def windows(self, done, total):
            self.seen.append(("windows", total))

        def image_done(self, image, row, params=()):
            self.seen.append(("done", image.key, row.status))

        def finished(self):
            self.seen.append(("finished",))

    events = Recorder()
    (data / "broken.png").write_bytes(b"not a png")
    run_folder(DIGITS, [data, tmp_path / "missing"], tmp_path / "out", patch=2, events=events)
    kinds = [e[0] for e in events.seen]
    assert ("problem", f"not found: {tmp_path / 'missing'}") in events.seen
    assert kinds.index("problem") < kinds.index("started") < kinds.index("image") and kinds[-1] == "finished"
    done = [e for e in events.seen if e[0] == "done"]
    assert [d[1] for d in done] == ["broken", "cat", "digit_0", "digit_3", "digit_7"]
    assert [d[2] for d in done] == ["failed", "ok", "ok", "ok", "ok"]
    assert ("windows", 49) in events.seen  # 7x7 windows of a 2-pixel patch on the 8x8 digits


def test_check_bias_layers_compare_and_stability_from_python_write_what_the_commands_write(tmp_path, data):
    box = ["--box", "0,0,4,8"]
    assert cli("check", DIGITS, data, *box, "--min-energy", "0.3", "-o", tmp_path / "c1", "-q").exit_code in (0, 4)
    checked = check_folder(DIGITS, [data], tmp_path / "c2", region=RegionSource(box=(0, 0, 4, 8)), min_energy=0.3)
    assert {r.status for r in checked.rows} <= {"pass", "fail"} and len(checked.rows) == 4
    first, second = json.loads((tmp_path / "c1" / "check.json").read_text()), checked.document
    for row in first["images"] + second["images"]:
        row.pop("seconds")  # the check records its time (no --no-timing)
    assert first.pop("command").startswith("occlude check ") and first.pop("versions")  # stamped when written
    assert first == json.loads(json.dumps(second))

    assert cli("bias", DIGITS, data, *box, "--bootstrap", "50", "-o", tmp_path / "b1", "-q").exit_code == 0
    bias_folder(DIGITS, [data], tmp_path / "b2", region=RegionSource(box=(0, 0, 4, 8)), bootstrap=50)
    assert files(tmp_path / "b1") == files(tmp_path / "b2")

    layer = ["--layer", "relu_1", "--no-timing"]
    assert cli("layers", DIGITS, data, *layer, "-o", tmp_path / "l1", "-q").exit_code == 0
    layers_folder(DIGITS, [data], "relu_1", tmp_path / "l2", timing=False)
    assert files(tmp_path / "l1") == files(tmp_path / "l2")
    spatial = LayerSettings(spatial=True, patch=2)
    assert cli("layers", DIGITS, data, *layer, "--spatial", "--patch", "2", "-o", tmp_path / "s1", "-q").exit_code == 0
    layers_folder(DIGITS, [data], "relu_1", tmp_path / "s2", settings=spatial, timing=False)
    assert files(tmp_path / "s1") == files(tmp_path / "s2")

    image, other = data / "digit_3.png", tmp_path / "other.npy"
    np.save(other, np.random.default_rng(1).random((8, 8)))
    assert cli("compare", DIGITS, image, other, "--patch", "2", "-o", tmp_path / "m1", "-q").exit_code == 0
    compare_image(DIGITS, image, other, tmp_path / "m2", patch=2)
    assert files(tmp_path / "m1") == files(tmp_path / "m2")
    maps = tmp_path / "maps"
    maps.mkdir()
    for name in ("digit_0", "digit_3"):
        np.save(maps / f"{name}.npy", np.random.default_rng(2).random((8, 8)))
    assert cli("compare", DIGITS, data, "--maps", maps, "--steps", "5", "-o", tmp_path / "f1", "-q").exit_code == 3
    folder = compare_folder(DIGITS, data, maps, tmp_path / "f2", settings=CompareSettings(steps=5))
    assert folder.failed and files(tmp_path / "f1") == files(tmp_path / "f2")

    noisy = ["--trials", "2", "--patch", "2", "--no-timing"]
    assert cli("stability", DIGITS, image, *noisy, "-o", tmp_path / "t1", "-q").exit_code == 0
    stability_image(DIGITS, image, tmp_path / "t2", trials=2, patch=2, timing=False)
    assert files(tmp_path / "t1") == files(tmp_path / "t2")


@pytest.mark.parametrize(
    "call, param, words",
    [
        (lambda out: run_folder(DIGITS, [SAMPLE_IMAGES / "digit_3.png"], out, patch=0), "patch", "patch must be"),
        (lambda out: run_folder(DIGITS, [SAMPLE_IMAGES], out, top_k=0), "top_k", "top_k must be at least 1"),
        (lambda out: run_folder(DIGITS, [SAMPLE_IMAGES], out, shard=(3, 2)), "shard", "shard K/N needs 1 <= K <= N"),
        (lambda out: run_folder(DIGITS, [SAMPLE_IMAGES], out, multiscale=True), "multiscale", "multiscale needs"),
        (
            lambda out: run_folder(DIGITS, [SAMPLE_IMAGES], out, patch=(2, 2, 2)),
            "patch",
            "patch 2x2x2 does not fit a 2-D",
        ),
        (lambda out: check_folder(DIGITS, [SAMPLE_IMAGES], out, min_energy=2), "min_energy", "min_energy must be"),
        (lambda out: bias_folder(DIGITS, [SAMPLE_IMAGES], out, controls=-1), "controls", "controls must be 0 or"),
        (
            lambda out: stability_image(DIGITS, SAMPLE_IMAGES / "digit_3.png", out, amplitude=2),
            "amplitude",
            "amplitude",
        ),
    ],
)
def test_library_errors_name_the_parameter_before_anything_is_written(tmp_path, call, param, words):
    with pytest.raises(OccludeError) as info:
        call(tmp_path / "out")
    assert str(info.value).startswith(words) and param in info.value.params, str(info.value)
    assert "--" not in str(info.value)  # a library message names no flag
    assert not (tmp_path / "out").exists()


def test_the_library_takes_values_and_the_command_line_parses_their_text(tmp_path):
    with pytest.raises(OccludeError, match="patch must be a whole number N or one per axis") as info:
        ExplainOptions(patch="16x24").checked()
    assert info.value.params == ("patch",)
    assert ExplainOptions(patch=16).checked().patch == (16, 16)
    assert ExplainOptions(patch=(4, 6)).checked().patch == (4, 6)
    result = cli("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--patch", "2x3", "-o", tmp_path / "o", "--no-timing")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "o" / "digit_3.json").read_text())["params"]["patch"] == [2, 3]


@pytest.mark.parametrize(
    "args, line",
    [
        (["--patch", "0"], "error: --patch must be at least 1 pixel, got '0'"),
        (["--top-k", "0"], "error: --top-k must be at least 1, got 0"),
        (["--patch", "2x2x2"], "error: --patch 2x2x2 does not fit a 2-D input: use N or (height, width)"),
        (["--refine", "--refine-budget", "2"], "error: --refine-budget must be in (0, 1], got 2.0"),
        (["--multiscale"], "error: --multiscale needs several patch sizes in --patch"),
        (["--workers", "2"], "error: --workers and --gpus-per-worker need --ray"),
        (["--alpha", "2"], "error: --alpha must be in [0, 1], got 2.0"),
        (["--shard", "0/2"], "error: --shard K/N needs 1 <= K <= N, got 0/2"),
        (["--max-memory", "lots"], "error: --max-memory must be a size such as 2G, 512M or 1.5G, got 'lots'"),
    ],
)
def test_the_command_names_the_flag_of_a_library_parameter(tmp_path, args, line):
    result = cli("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-o", tmp_path / "out", *args)
    assert result.exit_code == 1 and result.stderr.strip() == line, result.stderr
    assert not (tmp_path / "out").exists()


def test_parameters_become_flags_by_one_table():
    assert [flag(p) for p in ("patch", "top_k", "output_name", "amplitude", "clean_class", "max_memory")] == [
        "--patch",
        "--top-k",
        "--output",
        "--noise",
        "--expect",
        "--max-memory",
    ]
    # an underscore name is replaced wherever it stands; a plain word only where the message first names it;
    # quoted outside text (a file name) never
    assert (
        in_flags("refine_step 4 (use refine_step 5) in 'my refine_step.png'", ["refine_step"])
        == "--refine-step 4 (use --refine-step 5) in 'my refine_step.png'"
    )
    assert in_flags("stride height 9 is larger than the patch height 8", ["stride"]) == (
        "--stride height 9 is larger than the patch height 8"
    )
    assert in_flags("channels must be in 0..3: 'feat' has 4 channels", ["channels"]) == (
        "--channels must be in 0..3: 'feat' has 4 channels"
    )
    assert in_words("box 1,2,3,4 is empty", ["box"], str.upper) == "BOX 1,2,3,4 is empty"


def test_an_error_keeps_its_parameters_across_processes():
    error = pickle.loads(pickle.dumps(OccludeError("patch must be at least 1 pixel", params=("patch",))))
    assert isinstance(error, OccludeError) and error.params == ("patch",) and str(error).startswith("patch")
