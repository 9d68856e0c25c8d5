"""CI reports (occlude_cli/outputs/ci.py): JUnit XML read back by a real JUnit parser (junitparser) and validated
against the schema the Jenkins xUnit plugin checks reports with (tests/data/junit-10.xsd), and the markdown job
summary, with hostile names in both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import junitparser
import pytest
import xmlschema

from occlude_cli.errors import OccludeError
from occlude_cli.outputs.ci import (
    CiCase,
    append_summary,
    junit_xml,
    summary_markdown,
    summary_targets,
    write_ci_reports,
    write_junit,
)
from occlude_cli.text import shown

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parent / "data" / "junit-10.xsd"))

# names no CI file may show raw: XML specials, markdown that would format or link, a terminal escape, a newline,
# a bidirectional override, an undecodable byte (surrogateescape) and XML's forbidden noncharacter U+FFFF
HOSTILE = [
    "a<b>&\"c'.png",
    "[click](http://evil.example) *bold* `code` | pipe.png",
    "line\nbreak\r\x1b[2J\x07.png",
    "gnp\u202e.exe",
    "bad\udcffbyte.png",
    "non\uffffchar\ufffe.png",
    "<!-- --> ]]> <![CDATA[ x.png",
]


def xml_shown(text):
    """What a reader gets back for ``text``: its shown form, XML's two forbidden noncharacters escaped too."""
    return shown(text).replace("\uffff", "\\uffff").replace("\ufffe", "\\ufffe")


def cases_of(names):
    statuses = ["passed", "failure", "error", "skipped"]
    return [
        CiCase(
            name,
            classname="occlude.check",
            status=statuses[i % 4],
            time=0.25 * i,
            value=0.1 * i if i % 4 < 2 else None,
            threshold=0.5 if i % 4 < 2 else None,
            metric="energy in region",
            message="" if i % 4 < 2 else f"cannot read {name}",
            details=f"details of {name}",
        )
        for i, name in enumerate(names)
    ]


def parse(path):
    suites = junitparser.JUnitXml.fromfile(str(path))
    (suite,) = list(suites)
    return suite, list(suite)


def test_junit_is_valid_and_reads_back_with_counts(tmp_path):
    cases = cases_of(HOSTILE)
    path = write_junit(tmp_path / "junit.xml", cases, "occlude check", {"model": "m<odel>.onnx", "min": 0.5})
    SCHEMA.validate(str(path))
    suite, read = parse(path)
    assert suite.name == "occlude check"
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (7, 2, 2, 1)
    assert suite.time == pytest.approx(sum(0.25 * i for i in range(7)), abs=1e-3)
    assert [case.name for case in read] == [xml_shown(name) for name in HOSTILE]
    props = {p.name: p.value for p in suite.properties()}
    assert props == {"model": "m<odel>.onnx", "min": "0.5"}
    for case, given in zip(read, cases):
        assert case.classname == "occlude.check"
        kinds = [type(result).__name__ for result in case.result]
        expected = {"passed": [], "failure": ["Failure"], "error": ["Error"], "skipped": ["Skipped"]}
        assert kinds == expected[given.status]
        if given.status == "failure":
            assert case.result[0].message == f"energy in region {given.value:.4g} (threshold 0.5)"
            assert case.result[0].text == "\n".join(xml_shown(line) for line in given.details.split("\n"))
    # nothing raw: no control character, no bidirectional override, no noncharacter
    text = path.read_text("utf-8")
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202e\uffff\ufffe]", text)


def test_junit_is_deterministic_and_atomic(tmp_path):
    cases = cases_of(["a.png", "b.png"])
    assert junit_xml(cases, "s") == junit_xml(cases, "s")
    target = tmp_path / "sub" / "junit.xml"
    target.parent.mkdir()
    target.write_text('<?xml version="1.0"?>\n<testsuites name="an earlier run"></testsuites>\n')
    write_junit(target, cases, "s")
    assert target.read_bytes() == junit_xml(cases, "s")
    assert sorted(p.name for p in target.parent.iterdir()) == ["junit.xml"]  # no temporary file left
    with pytest.raises(OccludeError) as info:
        write_junit(tmp_path, cases)
    assert info.value.params == ("junit",)


def test_an_empty_run_is_a_valid_file(tmp_path):
    path = write_junit(tmp_path / "j.xml", [], "occlude run")
    SCHEMA.validate(str(path))
    suite, read = parse(path)
    assert suite.tests == 0 and read == []


def test_bad_cases_name_the_field():
    with pytest.raises(OccludeError) as info:
        junit_xml([CiCase("a", status="broken")])
    assert info.value.params == ("status",)
    with pytest.raises(OccludeError) as info:
        junit_xml([CiCase("a", time=float("nan"))])
    assert info.value.params == ("time",)


def _unescaped_pipes(line):
    return len(re.findall(r"(?<!\\)\|", line))


def test_summary_counts_verdict_and_worst_first():
    cases = [
        CiCase("good.png", value=0.9, threshold=0.5, metric="energy"),
        CiCase("bad.png", status="failure", value=0.1, threshold=0.5, metric="energy"),
        CiCase("worse.png", status="failure", value=0.05, threshold=0.5, metric="energy"),
        CiCase("broken.png", status="error", message="cannot read"),
    ]
    text = summary_markdown(cases, "occlude check", worse="low", worst=3)
    lines = text.splitlines()
    assert lines[0] == "### occlude check: failed"
    assert "| 1 | 2 | 1 | 0 | 4 |" in lines
    rows = [line for line in lines if line.startswith("| ") and ".png" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| broken\\.png", "| worse\\.png", "| bad\\.png"]  # worst 3
    assert "| 0.05 | 0.5 |" in rows[1]
    passed = summary_markdown(cases[:1], "occlude check", worse="low")
    assert passed.startswith("### occlude check: passed\n")
    # no direction: only what did not pass
    assert "good" not in summary_markdown(cases, "occlude run")


def test_summary_escapes_hostile_names():
    text = summary_markdown(cases_of(HOSTILE), "occlude <check>", worse="high", worst=10)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    widths = {_unescaped_pipes(line) for line in table[2:]}
    assert widths == {6}  # a name's '|' never splits a cell, in every row
    assert "<" not in text.replace("\\<", "") and "](" not in text and "\x1b" not in text and "\n\n\n" not in text
    assert "\\[click\\]\\(http://evil\\.example\\)" in text
    assert "\\*bold\\*" in text and "\\`code\\`" in text
    assert "\u202e" not in text and "\\u202e" in text


def test_append_keeps_what_was_there_and_targets_dedupe(tmp_path):
    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n")
    own = tmp_path / "own.md"
    targets = summary_targets(own, {"GITHUB_STEP_SUMMARY": str(step)})
    assert targets == [own, step]
    assert summary_targets(step, {"GITHUB_STEP_SUMMARY": str(step)}) == [step]
    assert summary_targets(None, {"GITHUB_STEP_SUMMARY": ""}) == []
    append_summary(targets, "one\n")
    append_summary(targets, "two\n")
    assert step.read_text() == "earlier step\none\ntwo\n"
    assert own.read_text() == "one\ntwo\n"
    with pytest.raises(OccludeError) as info:
        append_summary(tmp_path, "x")
    assert info.value.params == ("summary_md",)


def test_report_targets_that_are_not_reports_are_refused(tmp_path):
    from occlude_cli.outputs.ci import check_report_target

    latin = tmp_path / "latin.md"
    latin.write_bytes("caf\xe9 notes\n".encode("latin-1"))
    pytest_report = tmp_path / "pytest.xml"
    pytest_report.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"/></testsuites>'
    )
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    for path, kind in ((pytest_report, "junit"), (empty, "junit"), (Path("/dev/null"), "summary_md")):
        assert check_report_target(path, kind) == path
    for path, kind in ((Path("/dev/null"), "junit"), (latin, "summary_md"), (latin, "junit")):
        with pytest.raises(OccludeError) as info:
            check_report_target(path, kind)
        assert info.value.params == (kind,)
    append_summary(Path("/dev/null"), "### nothing\n")  # a character device is appended to, never replaced
    assert Path("/dev/null").is_char_device()


def test_write_ci_reports_writes_both(tmp_path):
    cases = cases_of(["a.png", "b.png"])
    written = write_ci_reports(
        cases, suite="occlude bias", junit=tmp_path / "j.xml", summary_md=[tmp_path / "s.md"], worse="high"
    )
    assert written == [tmp_path / "j.xml", tmp_path / "s.md"]
    SCHEMA.validate(str(tmp_path / "j.xml"))
    assert (tmp_path / "s.md").read_text().startswith("### occlude bias: failed")


# ------------------------------------------------------------------------------ the commands' --junit / --summary-md

HOSTILE_FILES = [
    "a<b>&\"c'.png",
    "[x](javascript:evil) *b* | p.png",
    "line\nbreak\x1b[2J.png",
    "gnp\u202e.png",
    "bad\udcffbyte.png",
    "non\uffffchar.png",
]
RECT = (4, 6, 9, 12)  # class 0 of the rectangle model is the mean over this (y0, x0, y1, x1)
RECT_BOX = "6,4,12,9"
OTHER_BOX = "0,10,5,16"


@pytest.fixture(scope="module")
def rect_model(tmp_path_factory) -> Path:
    from onnx_models import rectangle_model

    return rectangle_model(tmp_path_factory.mktemp("models") / "rect.onnx", rect=RECT)


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    """Noise images under hostile names, and one file that is not an image."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in HOSTILE_FILES:
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / name, format="PNG")
    (folder / "broken <x>.png").write_bytes(b"not a png at all")
    return folder


def invoke(*args, env=None):
    from typer.testing import CliRunner

    from occlude_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def junit_cases(path):
    SCHEMA.validate(str(path))
    suite, read = parse(path)
    return suite, {case.name: case for case in read}


def test_check_junit_and_summary(rect_model, hostile_folder, tmp_path):
    junit, md, step = tmp_path / "ci" / "junit.xml", tmp_path / "own.md", tmp_path / "step.md"
    step.write_text("# earlier step\n")
    out = tmp_path / "out"
    args = ("check", rect_model, hostile_folder, "--box", OTHER_BOX, "--min-energy", "0.5", "--out", out, "-q")
    result = invoke(*args, "--junit", junit, "--summary-md", md, env={"GITHUB_STEP_SUMMARY": str(step)})
    assert result.exit_code == 3  # an input could not be read: 3 wins over the failed gate's 4
    suite, cases = junit_cases(junit)
    assert (suite.tests, suite.failures, suite.errors) == (7, 6, 1)
    rows = {row["path"]: row for row in json.loads((out / "check.json").read_text())["images"]}
    for name in HOSTILE_FILES:
        case = cases[xml_shown(str(hostile_folder / name))]
        (failure,) = case.result
        assert type(failure).__name__ == "Failure"
        energy = rows[shown(str(hostile_folder / name))]["energy_share"]
        assert failure.message == f"energy share {energy:.3f} < 0.5"
        assert case.time > 0
    (error,) = cases[str(hostile_folder / "broken <x>.png")].result
    assert type(error).__name__ == "Error" and error.message
    for summary in (md, step):
        text = summary.read_text()
        assert text.count("### occlude check: failed") == 1 and "| 0 | 6 | 1 | 0 | 7 |" in text
        assert "\x1b" not in text and "\u202e" not in text and "](" not in text
    assert step.read_text().startswith("# earlier step\n")
    # every image inside the region passes
    passed = invoke(*args[:3], "--box", RECT_BOX, "--min-energy", "0.5", "--out", out, "-q", "--junit", junit)
    assert passed.exit_code == 3
    suite, cases = junit_cases(junit)
    assert (suite.tests, suite.failures, suite.errors) == (7, 0, 1)


def test_junit_and_summary_folders_are_refused_before_any_work(rect_model, hostile_folder, tmp_path):
    out = tmp_path / "out"
    for flag in ("--junit", "--summary-md"):
        result = invoke("check", rect_model, hostile_folder, "--box", RECT_BOX, "--out", out, flag, tmp_path)
        assert result.exit_code == 1
        assert f"error: {flag} " in result.stderr and "is a folder" in result.stderr
        assert not out.exists()


@pytest.mark.parametrize("command", ["check", "diff", "run"])
def test_reports_never_replace_or_corrupt_a_file_that_is_not_theirs(rect_model, hostile_folder, tmp_path, command):
    """--junit replaces only an earlier JUnit report and --summary-md appends only to text: pointed at an input
    image or at the model, each is one error line before any work, and the file keeps every byte."""
    out = tmp_path / "out"
    image = hostile_folder / HOSTILE_FILES[0]
    model_copy = tmp_path / "model.onnx"
    model_copy.write_bytes(rect_model.read_bytes())
    models = [model_copy, model_copy] if command == "diff" else [model_copy]
    extra = ["--box", RECT_BOX] if command == "check" else []
    for flag, target in (("--junit", image), ("--junit", model_copy), ("--summary-md", image)):
        before = target.read_bytes()
        result = invoke(command, *models, hostile_folder, *extra, "--out", out, "--patch", "4", flag, target)
        assert result.exit_code == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {flag} "), result.stderr
        assert target.read_bytes() == before
        assert not out.exists()
    # an earlier report is replaced, a text summary appended to, a missing folder made
    report, summary = tmp_path / "reports" / "new" / "junit.xml", tmp_path / "step.md"
    summary.write_text("# earlier step\n")
    for _ in range(2):
        result = invoke(
            command,
            *models,
            hostile_folder,
            *extra,
            "--out",
            out,
            "--patch",
            "4",
            "--junit",
            report,
            "--summary-md",
            summary,
        )
        assert result.exit_code in (0, 3, 4), result.stderr
        junit_cases(report)
    assert summary.read_text().startswith("# earlier step\n")
    assert summary.read_text().count(f"### occlude {command}") == 2


def test_bias_junit_marks_the_images_beyond_the_gate(rect_model, hostile_folder, tmp_path):
    junit, md = tmp_path / "j.xml", tmp_path / "s.md"
    box = ("--box", RECT_BOX, "--controls", "1", "--bootstrap", "0", "--out", tmp_path / "out", "-q")
    result = invoke(
        "bias", rect_model, hostile_folder, *box, "--max-mean-drop", "0.01", "--junit", junit, "--summary-md", md
    )
    assert result.exit_code == 3
    suite, cases = junit_cases(junit)
    document = json.loads((tmp_path / "out" / "bias.json").read_text())
    drops = {row["path"]: row["drop"] for row in document["images"] if row["status"] == "ok"}
    assert suite.tests == len(HOSTILE_FILES) + 2  # the images, the broken file and the verdict
    gate = cases["all images"]
    assert gate.classname == "occlude.bias.gate" and type(gate.result[0]).__name__ == "Failure"
    assert "max_mean_drop 0.01" in gate.result[0].message
    for name in HOSTILE_FILES:
        case = cases[xml_shown(str(hostile_folder / name))]
        drop = drops[shown(str(hostile_folder / name))]
        assert bool(case.result) == (drop > 0.01)
    text = md.read_text()
    assert text.startswith("### occlude bias: failed") and "(highest first)" in text


def test_run_junit_errors_and_resume_skips(rect_model, hostile_folder, tmp_path):
    junit = tmp_path / "j.xml"
    args = ("run", rect_model, hostile_folder, "--out", tmp_path / "out", "--patch", "4", "-q", "--junit", junit)
    assert invoke(*args).exit_code == 3
    suite, cases = junit_cases(junit)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (7, 0, 1, 0)
    assert all(not cases[xml_shown(str(hostile_folder / name))].result for name in HOSTILE_FILES)
    assert invoke(*args, "--resume").exit_code == 3
    suite, cases = junit_cases(junit)
    assert (suite.tests, suite.errors, suite.skipped) == (7, 1, 6)
