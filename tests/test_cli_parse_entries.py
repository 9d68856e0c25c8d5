"""Comma-separated flag values: an empty entry between commas is one error line, never dropped in silence
('1,,2' read as two numbers; a box '10,,20,30,40' as four)."""

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_IMAGES, SAMPLE_MODELS
from occlude_cli.cli import app, parse
from occlude_cli.errors import OccludeError

DIGITS = str(SAMPLE_MODELS / "digits_cnn.onnx")
DIGIT = str(SAMPLE_IMAGES / "digit_3.png")


@pytest.mark.parametrize(
    "args",
    [
        ["compare", DIGITS, DIGIT, DIGIT, "--fractions", "10,,20"],
        ["check", DIGITS, DIGIT, "--box", "1,,2,3,4"],
        ["run", DIGITS, DIGIT, "--region", "0,0,,4,4"],
        ["run", DIGITS, DIGIT, "--mean", "0.5,,0.5"],
    ],
)
def test_an_empty_entry_between_commas_is_one_error_line(args, tmp_path):
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --") and "has an empty entry between commas" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_an_empty_value_still_means_none_and_spaces_are_dropped():
    assert parse.percents("--fractions")("") == ()
    assert parse.percents("--fractions")(" 10, 20 ") == (0.1, 0.2)
    assert parse.numbers("--mean")("0.5, 0.4,0.3") == [0.5, 0.4, 0.3]


def test_channels_share_the_rule():
    assert parse.channels("--channels")("0, 5,9-11") == [0, 5, 9, 10, 11]
    with pytest.raises(OccludeError, match="--channels has an empty entry between commas"):
        parse.channels("--channels")("0,,5")
