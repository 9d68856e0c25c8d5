"""Any file name the file system allows, any label a model carries (issue 30): one rule for showing outside
text (occlude_cli.text), checked on its own and on a corpus of hostile names made here (not UTF-8, escape
sequences, option-like, leading and trailing spaces, 255 bytes, NFC and NFD, right-to-left override, line
breaks, spreadsheet formulas, run-level names, case twins) and hostile labels (model metadata and a labels
file), run through `run` (folder and single files), `--resume`, `--report`, `summary`, `check`, `bias` and the
library. Terminal output is captured through a pseudo-terminal, so the progress bar is really drawn."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import onnx
import pytest

from occlude_cli import explain, write_explanation
from occlude_cli.batch import discover_inputs
from occlude_cli.outputs.names import stem_of
from occlude_cli.outputs.records import explanation_record, format_json
from occlude_cli.text import (
    for_csv,
    for_html,
    for_markdown,
    for_plot,
    for_xml,
    is_safe,
    json_safe,
    recover,
    restore,
    shortened,
    shown,
)

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

OCCLUDE = [sys.executable, "-m", "occlude_cli"]
ESCAPES = "\x1b]0;PWNED\x07\x1b[2J"
NFC = unicodedata.normalize("NFC", "é").encode()
NFD = unicodedata.normalize("NFD", "é").encode()
CORPUS = [
    b"bad\xffname.png",
    b"bad\xfename.png",  # differs from the one above only in an undecodable byte
    b"x" + ESCAPES.encode() + b"y.png",
    b"-rf.png",
    b" lead.png",
    b"trail .png",
    b"n" * 251 + b".png",  # 255 bytes, the most a name may have
    NFC + b".png",
    NFD + b".png",
    "evil\u202egnp.png".encode(),
    b"line\nbreak.png",
    b"tab\there.png",
    b"=HYPERLINK(1).png",
    b"summary.png",
    b"a.png",
    b"a.PNG",
    "zero\u200bwidth\ufeff.png".encode(),
]
INVISIBLE = "\u200b\ufeff\u2060\u00ad\ue000\U000e0041\u3164"  # format, private use, tag, a Hangul filler
LABELS = [f"=c{i}{ESCAPES}\u202eevil{INVISIBLE}" for i in range(10)]  # every class: whichever is the target is hostile
# what may never reach a terminal or a file raw: escape sequences, bell, bidi override, undecodable bytes,
# invisible characters
FORBIDDEN = [b"\x1b]0;", b"\x1b[2J", b"\x07", "\u202e".encode(), b"\xff", b"\xfe"] + [c.encode() for c in INVISIBLE]


def names() -> list:
    return [os.fsdecode(n) for n in CORPUS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("names") / "corpus"
    folder.mkdir()
    digits = [(SAMPLE_IMAGES / f"digit_{d}.png").read_bytes() for d in (0, 3, 7)]
    for i, name in enumerate(CORPUS):
        with open(os.path.join(os.fsencode(folder), name), "wb") as handle:
            handle.write(digits[i % 3])
    assert len(os.listdir(folder)) == len(CORPUS)
    return folder


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory) -> Path:
    """The digits model whose occlude.labels metadata holds escape sequences, a bidi override and formulas."""
    model = onnx.load(str(SAMPLE_MODELS / "digits_cnn.onnx"))
    for entry in model.metadata_props:
        if entry.key == "occlude.labels":
            entry.value = json.dumps(LABELS)
    path = tmp_path_factory.mktemp("model") / "hostile.onnx"
    onnx.save(model, str(path))
    return path


def in_terminal(args, cwd=None, timeout=180):
    """Run the real command with stdin, stdout and stderr on a pseudo-terminal (rich sees a terminal and
    draws its progress bar): (exit code, every byte the terminal received)."""
    master, slave = pty.openpty()
    import fcntl
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "TERM")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "160"})
    proc = subprocess.Popen(
        OCCLUDE + [a if isinstance(a, bytes) else str(a) for a in args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    received = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
    return proc.returncode, bytes(received)


def assert_terminal_safe(output: bytes) -> str:
    for raw in FORBIDDEN:
        assert raw not in output, (raw, output[-3000:])
    return output.decode("utf-8")  # strict: no undecodable byte reached the terminal


def strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def assert_files_safe(folder: Path) -> dict:
    """Every JSON strict UTF-8 JSON whose strings are all safe to show; every CSV and HTML strict UTF-8
    without a raw escape; returns the JSON documents by relative path."""

    def refuse(token):
        raise ValueError(f"bare {token}")

    documents = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".json", ".csv", ".html"):
            continue
        data = path.read_bytes()
        for raw in FORBIDDEN:
            assert raw not in data, (path.name, raw)
        text = data.decode("utf-8")
        if path.suffix == ".json":
            document = json.loads(text, parse_constant=refuse)
            for s in strings(document):
                assert is_safe(s), (path.name, s)
                s.encode("utf-8")  # no lone surrogate escaped as \udcff
            documents[str(path.relative_to(folder))] = document
        elif path.suffix == ".csv":
            assert all(is_safe(cell) for row in csv.reader(io.StringIO(text)) for cell in row)
    return documents


# ------------------------------------------------------------------------------------------ the rule


def test_the_rule_shows_every_unsafe_character_escaped():
    name = os.fsdecode(b"bad\xffname" + ESCAPES.encode() + b"\n\t\x7f\xc2\x9b\xe2\x80\xae.png")
    assert shown(name) == "bad\\xffname\\x1b]0;PWNED\\x07\\x1b[2J\\n\\t\\x7f\\u009b\\u202e.png"
    assert shown(shown(name)) == shown(name) and is_safe(shown(name))
    for fine in ("café naïve 東京 🙂", " lead", "back\\slash", "e\u0301"):
        assert shown(fine) == fine
    assert shown("\u2028\u2066\u061c\udc80") == "\\u2028\\u2066\\u061c\\x80"
    assert shown(INVISIBLE) == "\\u200b\\ufeff\\u2060\\u00ad\\ue000\\U000e0041\\u3164"
    assert shown("\u0378\U0010ffff\ud800") == "\\u0378\\U0010ffff\\ud800"  # unassigned, private use, a surrogate


def test_every_invisible_character_is_escaped_in_every_form():
    """Every character of the categories Cc, Cf, Cn, Co, Cs, Zl, Zp (and the blank Hangul fillers) is
    escaped; every other character is shown as it is (spaces, marks, letters, symbols, emoji)."""
    escaped = {"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"}
    blank = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0}
    blank |= set(range(0xFE00, 0xFE0E)) | set(range(0xE0100, 0xE01F0))
    wrong = []
    for code in range(0x110000):
        char = chr(code)
        hidden = unicodedata.category(char) in escaped or code in blank
        if is_safe(char) == hidden or (shown(char) == char) == hidden:
            wrong.append(hex(code))
    assert not wrong, wrong[:20]
    for form in (shown, for_csv, for_html, for_xml, for_markdown, for_plot):
        text = form("a" + INVISIBLE + "\u2028b")
        assert not any(c in text for c in INVISIBLE + "\u2028"), (form.__name__, text)
        assert "200b" in text and "e0041" in text
    assert shown("\u2764\ufe0f \U0001f642") == "\u2764\ufe0f \U0001f642"  # emoji presentation is not hidden


def test_joiners_that_spell_words_and_emoji_are_shown_and_hidden_ones_escaped(tmp_path):
    """U+200C/U+200D spell Persian, Urdu and Indic words and emoji sequences: between two visible characters
    outside ASCII they are shown as they are (a Persian label was shown as 'می\\u200cخواهم'); at an end, next to
    ASCII or another invisible character they can only hide in a name and stay escaped. A Persian label of a
    model is shown whole on the terminal and kept without a ``_b64`` twin in the JSON."""
    kept = ["می\u200cخواهم", "क्\u200dष", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u2764\ufe0f\u200d\U0001f525"]
    for text in kept:
        assert shown(text) == text and is_safe(text) and for_csv(text) == text
    escaped = {
        "pay\u200dpal": "pay\\u200dpal",
        "\u200cابتدا": "\\u200cابتدا",
        "ب\u200c": "ب\\u200c",
        "ب\u200c\u200cب": "ب\\u200c\\u200cب",
        "ب\u200c\u202eب": "ب\\u200c\\u202eب",
        "é\u200d1": "é\\u200d1",
    }
    for text, expected in escaped.items():
        assert shown(text) == expected and not is_safe(text) and shown(expected) == expected
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["کتاب\u200cخانه" if i == 3 else f"class {i}" for i in range(10)]), encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "occlude_cli", "run", str(SAMPLE_MODELS / "digits_cnn.onnx"),
         str(SAMPLE_IMAGES / "digit_3.png"), "--labels", str(labels), "-o", str(out), "--target", "3"],
        capture_output=True, text=True, encoding="utf-8",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "کتاب\u200cخانه" in done.stdout + done.stderr and "\\u200c" not in done.stdout + done.stderr
    record = json.loads((out / "digit_3.json").read_text(encoding="utf-8"))
    assert record["target"]["label"] == "کتاب\u200cخانه" and "label_b64" not in record["target"]


def test_json_keeps_the_exact_text_beside_the_shown_one():
    name = os.fsdecode(b"bad\xff" + ESCAPES.encode() + b".png")
    document = {"path": name, "ok": "plain", "labels": ["fine", LABELS[0]], "nested": [{"label": LABELS[1]}]}
    safe = json_safe(document)
    text = format_json(document)
    text.encode("utf-8")
    assert json.loads(text) == safe
    assert safe["path"] == shown(name) and base64.b64decode(safe["path_b64"]) == b"bad\xff" + ESCAPES.encode() + b".png"
    assert "ok_b64" not in safe and safe["labels_b64"][0] is None
    assert recover(safe, "path") == name and recover(safe, "labels") == ["fine", LABELS[0]]
    assert recover(safe["nested"][0], "label") == LABELS[1]
    assert restore(safe) == document


def test_each_output_kind_has_its_form():
    assert for_csv(LABELS[0]).startswith("'=c0\\x1b]0;PWNED") and for_csv(-1.5) == "-1.5" and for_csv(None) == ""
    assert for_csv("-rf.png") == "'-rf.png" and for_csv("\tx") == "\\tx"
    assert for_html("<b>\x1b") == "&lt;b&gt;\\x1b" and for_xml("a'\x07") == "a&apos;\\x07"
    assert for_markdown("*x*|`y`\x1b") == "\\*x\\*\\|\\`y\\`\\\\x1b"
    assert for_plot("$x^$\x1b") == "\\$x^\\$\\x1b"


# ------------------------------------------------------------------------------------------ the corpus


def test_folder_run_resume_report_and_summary_in_a_terminal(tmp_path, corpus, hostile_model):
    out = tmp_path / "out"
    code, output = in_terminal(["run", hostile_model, corpus, "-o", out, "--aggregate"])
    assert code == 0, output[-3000:]
    text = assert_terminal_safe(output)
    assert "images" in text and "eta" in text  # the progress bar was drawn
    assert "\\x1b]0;PWNED\\x07" in text  # the names and labels were shown, escaped

    documents = assert_files_safe(out)
    summary = documents["summary.json"]
    assert summary["counts"] == {"ok": len(CORPUS), "failed": 0, "skipped": 0, "pending": 0}
    exact = {recover(row, "path") for row in summary["images"]}
    assert exact == {str(corpus / n) for n in names()}  # every path recoverable exactly
    assert {recover(row, "target_label") for row in summary["images"]} <= set(LABELS)
    outputs = {row["output"] for row in summary["images"]}
    assert len(outputs) == len(CORPUS)  # two names differing in one undecodable byte stay two outputs
    for row in summary["images"]:
        record = documents[row["output"]]
        assert recover(record["image"], "path") == recover(row, "path")
        assert recover(record["target"], "label") == LABELS[record["target"]["index"]]
        assert recover(record["top_k"][0], "label") == LABELS[record["target"]["index"]]
    with open(out / "summary.csv", encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(CORPUS)
    assert all(r["target_label"].startswith("'=c") for r in table)  # formulas still neutralised

    code, output = in_terminal(["run", hostile_model, corpus, "-o", out, "--aggregate", "--resume", "--report"])
    assert code == 0, output[-3000:]
    assert_terminal_safe(output)
    documents = assert_files_safe(out)
    assert documents["summary.json"]["counts"]["skipped"] == len(CORPUS)  # every one found again
    html = (out / "index.html").read_text(encoding="utf-8")
    for name in names():  # each name in the page's data block as the rule shows it (JSON-escaped there)
        assert json.dumps(shown(name), ensure_ascii=False)[1:-1].replace("<", "\\u003c") in html, name

    code, output = in_terminal(["summary", out])
    assert code == 0 and len(json.loads((out / "summary.json").read_text())["images"]) == len(CORPUS)
    assert_terminal_safe(output)
    code, output = in_terminal(["report", out])
    assert code == 0
    assert_terminal_safe(output)


def test_single_files_given_by_name(tmp_path, corpus, hostile_model):
    """Names that look like options after --, and a name that is not UTF-8, given as arguments."""
    out = tmp_path / "out"
    code, output = in_terminal(["run", hostile_model, "-o", out, "--", "-rf.png", b"bad\xffname.png"], cwd=corpus)
    assert code == 0, output[-3000:]
    text = assert_terminal_safe(output)
    assert "-rf.png" in text and "bad\\xffname.png" in text
    documents = assert_files_safe(out)
    assert {recover(r, "path") for r in documents["summary.json"]["images"]} == {
        "-rf.png",
        os.fsdecode(b"bad\xffname.png"),
    }


def test_log_lines_and_errors_in_a_ci_log(tmp_path, corpus, hostile_model):
    """Not a terminal (a CI log): one line per image and one error line per broken file, all shown escaped."""
    folder = tmp_path / "mixed"
    shutil.copytree(corpus, folder)
    with open(os.path.join(os.fsencode(folder), b"broken" + ESCAPES.encode() + b"\xff.png"), "wb") as handle:
        handle.write(b"not an image")
    env = {**os.environ, "CI": "1"}
    proc = subprocess.run(
        OCCLUDE + ["run", str(hostile_model), str(folder), "-o", str(tmp_path / "out")], capture_output=True, env=env
    )
    assert proc.returncode == 3
    text = assert_terminal_safe(proc.stderr + proc.stdout)
    lines = text.splitlines()
    assert sum(line.startswith("status=ok ") for line in lines) == len(CORPUS)  # one log line each, never split
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "broken\\x1b]0;PWNED\\x07\\x1b[2J\\xff.png" in errors[0]


def test_labels_file_check_and_bias(tmp_path, corpus):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    digits = SAMPLE_MODELS / "digits_cnn.onnx"
    for command in (["check", "--box", "0,0,4,4", "--pictures"], ["bias", "--box", "0,0,4,4"]):
        out = tmp_path / command[0]
        code, output = in_terminal([command[0], digits, corpus, "--labels", labels, "-o", out, *command[1:]])
        assert code in (0, 3, 4), output[-3000:]
        text = assert_terminal_safe(output)
        assert "\\x1b]0;PWNED" in text or command[0] == "check"
        documents = assert_files_safe(out)
        rows = documents[f"{command[0]}.json"]["images"]
        assert len(rows) == len(CORPUS)
        assert {recover(r, "path") for r in rows} == {str(corpus / n) for n in names()}
        with open(out / f"{command[0]}.csv", encoding="utf-8", newline="") as handle:
            assert len(list(csv.DictReader(handle))) == len(CORPUS)
    pictures = list((tmp_path / "check").glob("*.check.png"))
    assert len(pictures) == len(CORPUS)


def test_the_library_writes_and_records_exactly(tmp_path, corpus, hostile_model):
    out = tmp_path / "lib"
    images, _ = discover_inputs([str(corpus)])  # the folder's output names, as the command gives them
    assert len({i.key for i in images}) == len(CORPUS)
    for image in images:
        result = explain(hostile_model, image.path)
        record = explanation_record(result)
        assert record["image"]["path"] == str(image.path)  # the library keeps the exact text in memory
        written = write_explanation(result, out, image.key)
        assert all(is_safe(p.name) for p in written)
    assert stem_of(corpus / "bad\udcffname.png").startswith("bad_name.png~")  # one input alone
    documents = assert_files_safe(out)
    assert {recover(d["image"], "path") for d in documents.values()} == {str(corpus / n) for n in names()}
    shutil.rmtree(out)


def test_a_label_that_looks_like_mathtext_still_draws(tmp_path):
    """Matplotlib reads $...$ in a title as mathtext: a label such as "$x^$" used to stop `occlude compare`
    with an internal error. Titles go through the rule's plot form, so the picture is drawn, label and all."""
    model = onnx.load(str(SAMPLE_MODELS / "digits_cnn.onnx"))
    for entry in model.metadata_props:
        if entry.key == "occlude.labels":
            entry.value = json.dumps([f"c{i} $x^$" + ESCAPES for i in range(10)])
    onnx.save(model, str(tmp_path / "dollar.onnx"))
    np.save(tmp_path / "ramp.npy", np.arange(64, dtype=np.float32).reshape(8, 8))
    out = tmp_path / "out"
    code, output = in_terminal(
        ["compare", tmp_path / "dollar.onnx", SAMPLE_IMAGES / "digit_3.png", tmp_path / "ramp.npy", "-o", out]
    )
    assert code == 0, output[-2000:]
    assert_terminal_safe(output)
    assert (out / "digit_3.compare.png").stat().st_size > 10_000
    assert recover(assert_files_safe(out)["digit_3.compare.json"]["target"], "label") == "c3 $x^$" + ESCAPES


# ------------------------------------------------------------------------------------------ rich markup

MARKUP = ["[bold]x", "[/]", "a[/bold]b", "[link=http://evil.example]y", "[red]"]


def test_square_brackets_are_text_in_every_table_and_a_hand_edited_manifest_is_no_crash(tmp_path):
    """Rich markup in an output folder's name, in file names, labels and a manifest's rows (one without a status,
    one with a status occlude never writes, errors holding '[/]'): every table shows the brackets as they are,
    never raises a MarkupError; a row whose status is missing or unknown is pending (--resume runs it again)."""
    from typer.testing import CliRunner

    from occlude_cli.cli import app

    folder = tmp_path / "in"
    folder.mkdir()
    digits = [(SAMPLE_IMAGES / f"digit_{d}.png").read_bytes() for d in (0, 3, 7)]
    for i, name in enumerate(("[bold]x.png", "a[red]b.png", "[link=http:]c.png")):
        (folder / name).write_bytes(digits[i])
    (folder / "[red]broken.png").write_bytes(b"not an image")

    def invoke(*args):
        result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
        assert "Traceback" not in result.stdout + result.stderr and "MarkupError" not in result.stderr, result.stderr
        assert "internal error" not in result.stderr, result.stderr
        return result

    model = SAMPLE_MODELS / "digits_cnn.onnx"
    out = tmp_path / "o[" / "]"  # an output folder whose path reads as a closing tag: o[/]
    checked = invoke("check", model, folder, "--box", "0,0,4,4", "--patch", "4", "-o", out)
    assert checked.exit_code == 3 and f"-> {out}" in checked.stdout
    run = tmp_path / "run[/]"
    assert invoke("run", model, folder, "--patch", "4", "-o", run).exit_code == 3
    manifest = json.loads((run / "manifest.json").read_text())
    rows = {row["key"]: row for row in manifest["images"]}
    del rows["[bold]x"]["status"]
    rows["a[red]b"]["status"] = "[/]"
    rows["[red]broken"]["error"] = "broken [/] here [/bold] [link=x]"
    rows["[link=http:]c"]["target_label"] = "[/]"
    (run / "manifest.json").write_text(json.dumps(manifest))
    summary = invoke("summary", run)
    assert "broken [/] here [/bold] [link=x]" in summary.stdout and "[bold]x.png" in summary.stdout
    counts = json.loads((run / "summary.json").read_text())["counts"]
    assert counts == {"ok": 3, "failed": 1, "skipped": 0, "pending": 0}  # the records vouch for both edited rows
    resumed = invoke("run", model, folder, "--patch", "4", "-o", run, "--resume")
    assert resumed.exit_code == 3 and "[bold]x.png" in resumed.stdout
    counts = json.loads((run / "summary.json").read_text())["counts"]
    assert counts == {"ok": 0, "failed": 1, "skipped": 3, "pending": 0}
    # a row without a status whose record is gone is pending, and --resume runs it again
    manifest = json.loads((run / "manifest.json").read_text())
    row = next(r for r in manifest["images"] if r["key"] == "[bold]x")
    del row["status"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "[bold]x.json").unlink()
    assert invoke("summary", run).exit_code == 3  # the broken image; the pending one is counted
    assert json.loads((run / "summary.json").read_text())["counts"]["pending"] == 1
    resumed = invoke("run", model, folder, "--patch", "4", "-o", run, "--resume")
    assert json.loads((run / "summary.json").read_text())["counts"] == {
        "ok": 1,
        "failed": 1,
        "skipped": 2,
        "pending": 0,
    }


def test_a_100000_character_label_is_cut_on_the_terminal_and_whole_in_files(tmp_path):
    """A label file or metadata may hold a 100,000-character label: `info`, `info --labels`, the run's table,
    its CI log line and the pictures' titles show its first characters and '...'; JSON and CSV keep it whole."""
    label = "L" * 100_000 + "\u200bEND"
    model = onnx.load(str(SAMPLE_MODELS / "digits_cnn.onnx"))
    for entry in model.metadata_props:
        if entry.key == "occlude.labels":
            entry.value = json.dumps([label] + [f"c{i}" for i in range(1, 10)])
    path = tmp_path / "long.onnx"
    onnx.save(model, str(path))
    assert shortened(label) == "L" * 77 + "..." and len(shortened("é" * 81)) == 80 and shortened("ab") == "ab"
    assert shortened("L" * 70 + "\u200b" * 5, 80) == "L" * 70 + "\\u200b..."  # an escape is never split

    def occlude(*args, env=None):
        proc = subprocess.run(OCCLUDE + [str(a) for a in args], capture_output=True, env={**os.environ, **(env or {})})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return (proc.stdout + proc.stderr).decode("utf-8")

    for args in (["info", path], ["info", path, "--labels"]):
        text = occlude(*args)
        assert len(text) < 5000 and "L" * 60 + "..." in text and "END" not in text, args
    assert recover(json.loads(occlude("info", path, "--json", "--labels")), "label_names")[0] == label
    out = tmp_path / "out"
    for env in ({"CI": "1"}, {}):
        text = occlude("run", path, SAMPLE_IMAGES / "digit_0.png", "-o", out, "--no-timing", env=env)
        assert len(text) < 5000 and "L" * 30 in text and "END" not in text, text[:3000]
    record = json.loads((out / "digit_0.json").read_text())
    assert recover(record["target"], "label") == label
    assert label.replace("\u200b", "\\u200b") in (out / "summary.csv").read_text(encoding="utf-8")
    from PIL import Image

    for picture in ("digit_0.overlay.png", "digit_0.heatmap.png"):
        with Image.open(out / picture) as image:
            assert image.width <= 1700, (picture, image.size)  # the title is cut, the picture not widened
