"""CI reports (occlude_cli/outputs/ci.py): JUnit XML read back by a real JUnit parser (junitparser) and validated
against the schema the Jenkins xUnit plugin checks reports with (tests/data/junit-10.xsd), and the markdown job
summary, with hostile names in both."""

from __future__ import annotations

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
            assert case.result[0].text == xml_shown(given.details)
    # nothing raw: no control character, no bidirectional override, no noncharacter
    text = path.read_text("utf-8")
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202e\uffff\ufffe]", text)


def test_junit_is_deterministic_and_atomic(tmp_path):
    cases = cases_of(["a.png", "b.png"])
    assert junit_xml(cases, "s") == junit_xml(cases, "s")
    target = tmp_path / "sub" / "junit.xml"
    target.parent.mkdir()
    target.write_text("old")
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


def test_write_ci_reports_writes_both(tmp_path):
    cases = cases_of(["a.png", "b.png"])
    written = write_ci_reports(
        cases, suite="occlude bias", junit=tmp_path / "j.xml", summary_md=[tmp_path / "s.md"], worse="high"
    )
    assert written == [tmp_path / "j.xml", tmp_path / "s.md"]
    SCHEMA.validate(str(tmp_path / "j.xml"))
    assert (tmp_path / "s.md").read_text().startswith("### occlude bias: failed")
