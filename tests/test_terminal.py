"""What a person sees (issue 34): the real CLI in a pseudo-terminal of 80 and 40 columns read through a terminal
emulator, piped, with TERM=dumb and FORCE_COLOR; warnings gathered per run; log lines that parse as logfmt;
help that fits 80 columns; usage errors in occlude's own words; interrupted runs marked in their JSON."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from occlude_cli.cli import app
from occlude_cli.cli.helptext import PANELS
from occlude_cli.cli.progress import RunDisplay, progress_line
from occlude_cli.cli.screen import shorten_middle, shorten_path
from occlude_cli.text import shown

from conftest import ROOT, SAMPLE_IMAGES, SAMPLE_MODELS
from terminal import run_in_terminal, terminal_env

pytest.importorskip("pyte")

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
EFFNET = str(SAMPLE_MODELS / "efficientnet_lite0.onnx")
LONG_NAME = "IMG_2024_0615_holiday_at_the_seaside_with_the_whole_family_cat.png"  # 64 characters
CURSOR = re.compile(rb"\x1b\[(\?25[lh]|\d*[ABCDGK]|2K)")  # cursor movement, line erasing, cursor hiding
LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def parse_logfmt(line: str) -> dict:
    """A logfmt line read as Go's logfmt and Loki read it (quoted values unescaped); fails on anything else."""
    pairs = LOGFMT.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, line
    return {k: re.sub(r"\\(.)", r"\1", v[1:-1]) if v.startswith('"') else v for k, v in pairs}


@pytest.fixture(scope="module")
def saturated(tmp_path_factory):
    """20 digits: the softmax of each is saturated, so each carries the same warning."""
    folder = tmp_path_factory.mktemp("digits") / "twenty"
    folder.mkdir()
    for i in range(20):
        shutil.copy(SAMPLE_IMAGES / f"digit_{(0, 3, 7)[i % 3]}.png", folder / f"d{i:02d}.png")
    return folder


def occlude_piped(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "occlude_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


# ------------------------------------------------------------------------------------------ warnings


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "quiet"])
def test_a_folder_of_20_saturated_images_shows_one_warning_and_a_summary_line(saturated, tmp_path, quiet):
    out = tmp_path / "out"
    result = occlude_piped("run", DIGITS, saturated, "-o", out, *(["-q"] if quiet else []))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    first, summary = warnings
    assert "d00.png: the target's softmax probability is saturated" in first
    assert "--score logit" in first and "use score logit" not in first  # the flag, named as the user types it
    assert summary == f"warning: the same warning for 19 more images: see {out / 'summary.csv'}"
    rows = json.loads((out / "summary.json").read_text())["images"]
    assert sum(1 for row in rows if row["warning"]) == 20  # every image's warning is in the summary
    others = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    if quiet:  # -q keeps warnings and errors, drops progress and the table
        assert others == [] and result.stdout == ""
    else:
        assert len(others) == 20 and all(parse_logfmt(line)["status"] == "ok" for line in others)


def test_warnings_on_a_terminal_are_one_plus_a_summary_and_the_table_stays(saturated, tmp_path):
    session = run_in_terminal(["run", DIGITS, saturated, "-o", tmp_path / "o"], columns=80, rows=60)
    assert session.returncode == 0
    screen = session.text
    assert screen.count("warning:") == 2 and "the same warning for 19 more images" in screen
    assert "d19.png" in screen  # the table's last row is on screen, not pushed away


# ------------------------------------------------------------------------------------------ the display


@pytest.fixture(scope="module")
def long_named(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    shutil.copy(SAMPLE_IMAGES / "cat.jpg", folder / LONG_NAME)
    shutil.copy(SAMPLE_IMAGES / "coffee.jpg", folder / "coffee.jpg")
    return folder


@pytest.mark.parametrize("columns", [80, 40])
def test_bars_keep_count_and_eta_at_any_width_and_vanish_at_the_end(long_named, tmp_path, columns):
    # 729 windows an image (a few seconds each): long enough for the bars to be drawn on any machine
    args = ["run", EFFNET, long_named, "-o", tmp_path / "o", "--patch", "16", "--stride", "8", "--score", "logit"]
    session = run_in_terminal(args + ["--incremental", "off"], columns=columns, rows=40)
    assert session.returncode == 0, session.text
    bars = [line for frame in session.frames for line in frame if re.search(r"\d+/\d+ .*eta \d:\d\d:\d\d$", line)]
    assert any(re.match(r"^\S images .*\d/2 .*eta", line) for line in bars), bars  # the images' bar
    windows = [line for line in bars if re.search(r"\d+/729 ", line)]
    assert windows, bars  # the windows' bar: count and ETA whatever the width
    assert all(len(line) <= columns for line in bars)
    if columns == 80:  # a 64-character name shortened in the middle to fit beside its bar
        assert any("IMG_20" in line and "…" in line and line.split()[0].endswith("cat.png") for line in windows)
    final = session.screen
    assert not any("eta " in line for line in final), final  # no stale bar left behind
    table = [line for line in final if " ok " in line]
    assert len(table) == 2 and all(re.search(r"\d+\.\d{4}", line) for line in table), final  # scores whole
    assert "285 Egyptian" in session.text or "Egyptian" in session.text


def test_the_table_gives_way_in_the_name_and_label_never_in_numbers():
    from rich.console import Console

    from occlude_cli.cli.show import print_table
    from occlude_cli.outputs.records import SummaryRow

    rows = [
        SummaryRow(
            path=f"/data/photos/{LONG_NAME}",
            status="ok",
            target_index=285,
            target_label="Egyptian cat",
            original_score=0.8081,
            peak_y=112,
            peak_x=96,
            seconds=1.25,
        )
    ]
    for width in (120, 80, 60, 40):
        import occlude_cli.cli.show as show

        console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)
        saved, show.stdout = show.stdout, console
        try:
            print_table(rows, "out")
        finally:
            show.stdout = saved
        text = console.export_text()
        assert all(len(line) <= width for line in text.splitlines()), text
        assert "0.8081" in text and "285" in text, text  # numbers whole at every width
        if width >= 80:
            assert "112, 96" in text and "1.25" in text and "Egyptian cat" in text
        if width == 40:
            assert "Egyptian" in text  # the label wraps, it is not cut


def test_names_are_shortened_in_the_middle_and_paths_at_folders():
    assert shorten_middle(LONG_NAME, 24) == "IMG_2024_…family_cat.png"
    assert shorten_middle("猫" * 20 + ".png", 12).endswith(".png")  # wide characters count double
    assert len(shorten_middle(LONG_NAME, 24)) == 24
    assert shorten_path("/a/b/c/digit.png", 12) == "…/digit.png"
    assert shorten_path(f"/a/{LONG_NAME}", 30).startswith("…/IMG_20") and shorten_path(f"/a/{LONG_NAME}", 30).endswith(
        "cat.png"
    )
    line = progress_line(40, LONG_NAME, 64, 196, 3.0, "165 win/s", 2.0).plain
    assert len(line) <= 40 and "64/196" in line and line.endswith("eta 0:00:03")


def test_the_eta_counts_only_the_images_still_to_compute(monkeypatch):
    """--resume over 12 images of which 6 (every other one) are done: the ETA is the true time left at every
    step, as a folder run reports them (an image is reported done after the next one was computed, skipped
    ones at once), on a clock that only the computations move (1 s each)."""
    import occlude_cli.cli.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    keys = [f"k{i}" for i in range(12)]
    skipping = set(keys[::2])
    display = RunDisplay(total=12, draw=False, skipping=skipping)
    pending, etas = [], []
    for key in keys:
        display.image_started(key, key)
        if key not in skipping:
            now[0] += 1.0  # computed; its files are written while the next one is computed
        while pending:  # the earlier images are reported once this one is computed
            done = pending.pop(0)
            display.image_done(done not in skipping, done)
            left = sum(1 for k in keys[keys.index(key) + 1 :] if k not in skipping)  # what is really left
            etas.append((display.eta(), float(left)))
        pending.append(key)
    for done in pending:
        display.image_done(done not in skipping, done)
    assert etas and all(eta == pytest.approx(left) for eta, left in etas if eta is not None), etas
    assert sum(1 for eta, _ in etas if eta is not None) >= 5 and display.eta() == 0.0
    fresh = RunDisplay(total=3, draw=False)
    fresh.image_started("a", "a")
    now[0] += 1.0
    fresh.image_done(True, "a")
    fresh.image_started("b", "b")
    now[0] += 0.25  # between two reports, the current image's share counts down
    assert fresh.eta() == pytest.approx(1.0 + 0.75)


def test_resume_knows_before_the_run_which_images_it_will_skip(tmp_path):
    """The ETA's forecast: with resume, the images whose results exist for this model and these parameters;
    none when a parameter changed (everything is computed again)."""
    from occlude_cli import run_folder
    from occlude_cli.runs.events import RunEvents

    class Told(RunEvents):
        skipping: set = set()

        def started(self, total, skipping=()):
            self.skipping = set(skipping)

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.png", "d.png"):
        shutil.copy(SAMPLE_IMAGES / "digit_3.png", folder / name)
    run_folder(DIGITS, folder, tmp_path / "o", patch=4)
    for name in ("a.png", "c.png"):
        shutil.copy(SAMPLE_IMAGES / "digit_7.png", folder / name)
    told = Told()
    result = run_folder(DIGITS, folder, tmp_path / "o", patch=4, resume=True, events=told)
    assert told.skipping == {"b", "d"}
    assert {Path(r.path).stem for r in result.rows if r.status == "skipped"} == {"b", "d"}
    again = Told()
    run_folder(DIGITS, folder, tmp_path / "o", patch=7, resume=True, events=again)
    assert again.skipping == set()
    unasked = Told()
    run_folder(DIGITS, folder, tmp_path / "o", patch=7, events=unasked)
    assert unasked.skipping == set()


def test_piped_output_has_no_cursor_control_and_force_color_only_colours(saturated, tmp_path):
    plain = occlude_piped("run", DIGITS, saturated, "-o", tmp_path / "a")
    assert "\x1b" not in plain.stderr + plain.stdout
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORCE_COLOR": "1"}
    env.pop("NO_COLOR", None)
    coloured = subprocess.run(
        [sys.executable, "-m", "occlude_cli", "run", DIGITS, str(saturated), "-o", str(tmp_path / "b")],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert coloured.returncode == 0
    assert b"\x1b[" in coloured.stderr + coloured.stdout  # FORCE_COLOR: colours, as asked
    assert not CURSOR.search(coloured.stderr), coloured.stderr[:300]  # ... but never live animation into a pipe
    assert len(coloured.stderr) < 8000  # one line per image, not a redrawn bar
    assert coloured.stderr.count(b"status=ok") == 20


def test_term_dumb_in_a_terminal_shows_a_line_per_image_as_it_goes(saturated, tmp_path):
    env = terminal_env(TERM="dumb")
    session = run_in_terminal(["run", DIGITS, saturated, "-o", tmp_path / "o"], columns=80, env=env, rows=80)
    assert session.returncode == 0
    assert not CURSOR.search(session.raw)
    lines = [line for line in session.screen if line.startswith("status=ok")]
    assert len(lines) == 20 and parse_logfmt(lines[0])["done"] == "1/20"
    first_seen = next(i for i, frame in enumerate(session.frames) if any("status=ok" in line for line in frame))
    assert first_seen < len(session.frames) - 1  # lines arrive while the run goes on, not all at the end


# ------------------------------------------------------------------------------------------ logfmt


def test_log_lines_parse_as_logfmt_with_hostile_labels(tmp_path):
    labels = tmp_path / "labels.txt"
    names = ["zero", 'a "quoted" one', "two", "Egyptian cat", "x y=1", "five", "six", "back\\slash", "8", "9"]
    labels.write_text("\n".join(names) + "\n")
    folder = tmp_path / "in put"
    folder.mkdir()
    shutil.copy(SAMPLE_IMAGES / "digit_3.png", folder / "a b=c.png")
    shutil.copy(SAMPLE_IMAGES / "digit_7.png", folder / "plain.png")
    result = occlude_piped("run", DIGITS, folder, "-o", tmp_path / "o", "--labels", labels, "--score", "logit")
    assert result.returncode == 0, result.stderr
    parsed = [parse_logfmt(line) for line in result.stderr.splitlines()]
    assert [p["image"] for p in parsed] == [shown(str(folder / "a b=c.png")), str(folder / "plain.png")]
    assert parsed[0]["label"] == "Egyptian cat" or parsed[0]["label"] == names[3]
    assert parsed[1]["label"] == "back\\slash" and parsed[1]["target"] == "7"
    assert set(parsed[0]) == {"status", "done", "image", "target", "label", "score", "seconds", "eta"}


def test_verbose_adds_one_logfmt_line_per_window(tmp_path):
    result = occlude_piped("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-o", tmp_path / "o", "-v", "--score", "logit")
    assert result.returncode == 0, result.stderr
    windows = [parse_logfmt(line) for line in result.stderr.splitlines() if " window=" in line]
    assert len(windows) == 64 and windows[0]["window"] == "0,0,1,1"
    record = json.loads((tmp_path / "o" / "digit_3.json").read_text())
    assert [float(w["drop"]) for w in windows] == pytest.approx([w["drop"] for w in record["windows"]], abs=1e-4)
    both = occlude_piped("run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-o", tmp_path / "q", "-v", "-q")
    assert both.returncode == 1 and "--quiet and --verbose" in both.stderr


# ------------------------------------------------------------------------------------------ interruption


def test_an_interrupted_run_says_so_in_its_json_and_on_every_interruption(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        shutil.copy(SAMPLE_IMAGES / f"digit_{(0, 3, 7)[i % 3]}.png", folder / f"img_{i:02d}.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "occlude_cli", "run", DIGITS, str(folder), "-o", str(out), "--json"]
    command += ["--patch", "1", "--incremental", "off", "--batch-size", "1"]
    for signals in ([signal.SIGTERM], [signal.SIGINT, signal.SIGINT]):  # the second Ctrl-C also says it all
        shutil.rmtree(out, ignore_errors=True)
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=terminal_env(PYTHONPATH=str(ROOT))
        )
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob("img_*.json"))) < 2:
            time.sleep(0.01)
        for sig in signals:
            process.send_signal(sig)
            time.sleep(0.002)
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr
        assert re.search(r"interrupted after \d+ of 40 images \(\d+ pending\); re-run with --resume", stderr), stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"] is True and summary["counts"]["pending"] > 0
        assert summary["counts"]["ok"] + summary["counts"]["pending"] == 40 and summary["counts"]["failed"] == 0
        if stdout.strip():  # --json, unless the second Ctrl-C came before it was printed
            document = json.loads(stdout)
            # an image whose write finished during the shutdown is pending here, ok in the rebuilt summary.json
            assert document["interrupted"] is True and document["counts"]["pending"] >= summary["counts"]["pending"]
    finished = occlude_piped("run", *command[4:], "--resume")
    assert finished.returncode == 0
    document = json.loads(finished.stdout)
    assert document["interrupted"] is False and document["counts"]["pending"] == 0


def test_ctrl_c_in_a_terminal_leaves_no_stale_bar(tmp_path, long_named):
    # 729 windows an image: the first is still being scored when the interrupt arrives, on any machine
    args = ["run", EFFNET, long_named, "-o", tmp_path / "o", "--patch", "16", "--stride", "8", "--incremental", "off"]
    sent = []

    def interrupt(process, raw):
        if not sent and b"/729" in raw:
            process.send_signal(signal.SIGINT)
            sent.append(True)

    session = run_in_terminal(args, columns=80, on_output=interrupt)
    assert sent and session.returncode == 130
    said = " ".join(session.text.split())  # wrapped at word boundaries on the terminal
    assert "error: interrupted after 0 of 2 images (2 pending); re-run with --resume to finish" in said
    assert not any("eta " in line for line in session.screen), session.screen


# ------------------------------------------------------------------------------------------ help


COMMANDS = [
    "",
    "run",
    "summary",
    "info",
    "compare",
    "check",
    "diff",
    "report",
    "layers",
    "bias",
    "stability",
    "sanity",
]


def help_text(command: str, columns: int) -> str:
    result = CliRunner().invoke(app, [*([command] if command else []), "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_fits_80_columns_with_panels_and_examples_first(command):
    text = help_text(command, 80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "…" not in text and "<bool>" not in text and "<int>" not in text and "<path>" not in text
    assert lines[0].startswith(f"Usage: occlude {command}".replace("  ", " "))
    titles = [m.group(1) for m in re.finditer(r"╭─ (\w+) ─", text)]
    assert titles, text
    if command:  # arguments, then the panels in the contract's order, basics first
        named = [t for t in titles if t != "Arguments"]
        assert named[0] == "Basics" and named == sorted(named, key=lambda t: PANELS.index(t))
    examples = lines.index("Examples")
    assert examples < next(i for i, line in enumerate(lines) if line.startswith("╭"))  # examples come first
    assert lines[examples + 1].startswith("  occlude ")


def test_run_help_reads_as_designed():
    text = help_text("run", 80)
    assert text.splitlines()[0] == "Usage: occlude run [OPTIONS] MODEL PATH..."
    for panel in ("Basics", "Preprocessing", "Output", "Speed", "Medical", "Clusters"):
        assert f"╭─ {panel} ─" in text
    # 516 lines in one panel before panels (issue 34); then --null, --junit, --summary-md (issue 24), the Task
    # panel (issue 28, about 20 lines at 80 columns), --color-limit (issue 29) and the medical flags (issue 31:
    # --series-uid, --display-window, --regions, --dicom-out, --deidentify, about 20 lines)
    assert len(text.splitlines()) < 330
    assert "╭─ Task ─" in text
    assert re.search(r"│ -o, --out DIR +Output folder", text) and re.search(r"│ +--npy/--no-npy +Write", text)
    assert "--score auto|softmax|sigmoid|logit|raw|prob" in text


def test_narrow_help_wraps_everything_but_the_examples():
    for command in COMMANDS:
        text = help_text(command, 40)
        wide = [line for line in text.splitlines() if len(line) > 40]
        assert all(line.startswith("  occlude ") for line in wide), wide  # examples are never wrapped


def test_help_in_a_terminal_at_80_columns():
    session = run_in_terminal(["run", "--help"], columns=80, rows=400)
    assert session.returncode == 0
    assert session.screen[0] == "Usage: occlude run [OPTIONS] MODEL PATH..."
    assert "Examples" in session.screen and any(line.startswith("╭─ Basics") for line in session.screen)


def test_bare_occlude_prints_the_help_once_and_exits_0():
    result = subprocess.run([sys.executable, "-m", "occlude_cli"], capture_output=True, text=True, env=terminal_env())
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.count("Usage: occlude [OPTIONS] COMMAND [ARGS]...") == 1
    assert "╭─ Commands" in result.stdout


# ------------------------------------------------------------------------------------------ usage errors

VALIDATION_WORDING = ("Input should", "Value error", "is not one of", "Invalid value", "unable to parse", "Error:")


@pytest.mark.parametrize(
    "args, says",
    [
        (["run", DIGITS, "x.png", "--top-k", "foo"], "--top-k takes a whole number, got 'foo'"),
        (["run", DIGITS, "x.png", "--score", "logt"], "--score takes auto, softmax, sigmoid, logit, raw or prob"),
        (["run", DIGITS, "x.png", "--device", "gpu"], "--device takes auto, cpu or cuda, got 'gpu'"),
        (["run", DIGITS, "x.png", "--alpha", "abc"], "--alpha takes a number, got 'abc'"),
        (["run", DIGITS, "x.png", "--resize", "crop"], "--resize takes stretch, center-crop or letterbox"),
        (["check", DIGITS, "x.png", "--min-energy", "half"], "--min-energy takes a number, got 'half'"),
        (["layers", DIGITS, "x.png", "-l", "relu", "--replace", "one"], "--replace takes zero, mean or dataset"),
        (["bias", DIGITS, "x.png", "--controls", "many"], "--controls takes a whole number"),
        (["stability", DIGITS, "x.png", "--trials", "1.5"], "--trials takes a whole number, got '1.5'"),
        (["run", "--patch"], "--patch needs a value (see 'occlude run --help')"),
        (["run"], "missing argument MODEL (see 'occlude run --help')"),
        (["layers", DIGITS, "x.png"], "missing option --layer"),
        (["run", DIGITS, "x.png", "--bogus"], "no such option --bogus"),
        (["rnu"], "no such command 'rnu'; did you mean 'run'?"),
        (["run", DIGITS, "x.png", "--json=yes"], "--json takes no value (it is a switch)"),
        (["info", DIGITS, "extra.png"], "unexpected extra argument(s): extra.png (see 'occlude info --help')"),
    ],
)
def test_usage_errors_are_in_occludes_words(args, says):
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]
    assert not any(words in lines[0] for words in VALIDATION_WORDING), lines[0]
    assert "--help')" in lines[0]


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--baseline", "purple"], "error: --baseline takes zero, mean, gray, black, white, blur, noise, tissue"),
        (["--baseline", "p200"], "error: --baseline takes a percentile from p0 to p100, got 'p200'"),
        (["--baseline", "1,2"], "error: --baseline takes 1 or 3 values (R,G,B) as a constant, got '1,2'"),
        (["--target", "sevn"], "error: --target 'sevn' is none of the model's labels"),
        (["--target", "12"], "error: --target 12 is out of range: the model has 10 classes (0..9)"),
        (["--window", "purple"], "error: --window takes a preset (lung, mediastinum, bone, brain), 'file', or"),
    ],
)
def test_value_errors_name_the_flag_and_say_what_it_takes(flags, says, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]))
    args = ["run", DIGITS, str(SAMPLE_IMAGES / "digit_3.png"), "-o", str(tmp_path / "o"), "--labels", str(labels)]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 1 and result.stderr.startswith(says), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    if flags[1] == "sevn":
        assert "did you mean: seven" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--patch", "0"],
        ["check", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--box", "0,0,4,4", "--patch", "0"],
        ["stability", DIGITS, SAMPLE_IMAGES / "digit_3.png", "--patch", "0"],
        ["compare", DIGITS, SAMPLE_IMAGES / "digit_3.png", SAMPLE_IMAGES / "digit_7.png", "--patch", "0"],
        ["layers", DIGITS, SAMPLE_IMAGES / "digit_3.png", "-l", "relu", "--spatial", "--patch", "0"],
    ],
)
def test_patch_0_names_the_flag_in_every_command(args, tmp_path):
    result = CliRunner().invoke(app, [*map(str, args), "-o", str(tmp_path / "o")])
    assert result.exit_code in (1, 2) and result.stderr.startswith("error: --patch"), result.stderr


def test_top_k_beyond_the_classes_is_refused_and_absurd_values_too(tmp_path):
    for value, says in (("11", "--top-k 11 is more than the model's 10 classes"), ("5000", "--top-k 5000"), ("0", "")):
        result = CliRunner().invoke(
            app, ["run", DIGITS, str(SAMPLE_IMAGES / "digit_3.png"), "-o", str(tmp_path / "o"), "--top-k", value]
        )
        assert result.exit_code == 1 and result.stderr.startswith("error: --top-k"), result.stderr
        assert says in result.stderr
        assert not (tmp_path / "o").exists()
    ok = CliRunner().invoke(
        app, ["run", DIGITS, str(SAMPLE_IMAGES / "digit_3.png"), "-o", str(tmp_path / "k"), "--top-k", "10", "-q"]
    )
    assert ok.exit_code == 0, ok.stderr
