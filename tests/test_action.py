"""The composite GitHub Action (action.yml at the root), read as GitHub reads it (YAML) and its steps' shell code
run here as the runner runs it: `bash --noprofile --norc -eo pipefail FILE`, with the step's `env:` after GitHub's
`${{ ... }}` substitution and the variables GitHub gives every step (GITHUB_STEP_SUMMARY, GITHUB_OUTPUT,
RUNNER_TEMP, GITHUB_ACTION_PATH, CI). The install step runs real pip in dry-run mode (it resolves this checkout
and would install it: nothing is changed); the run step runs the real occlude."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xmlschema
import yaml
from PIL import Image

from conftest import ROOT

ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
SCHEMA = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit-10.xsd"))


def step(name: str) -> dict:
    (found,) = [s for s in ACTION["runs"]["steps"] if s.get("name") == name]
    return found


def substitute(text: str, inputs: dict) -> str:
    """GitHub's substitution of the expressions a step's env may hold."""

    def value(match):
        expression = match.group(1)
        if expression.startswith("inputs."):
            return str(inputs[expression[len("inputs.") :]])
        if expression == "github.action_path":
            return str(ROOT)
        raise AssertionError(f"unexpected expression {expression}")

    return EXPRESSION.sub(value, text)


def given(**inputs) -> dict:
    values = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    values.update(inputs)
    return values


@pytest.fixture
def runner(tmp_path):
    """The environment GitHub gives a step, with `occlude` on PATH (this checkout's, run by this Python)."""
    home = tmp_path / "runner"
    (home / "bin").mkdir(parents=True)
    shim = home / "bin" / "occlude"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m occlude_cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (home / "temp").mkdir()
    summary, output = home / "step_summary.md", home / "output.txt"
    summary.write_text("## an earlier step\n")
    output.write_text("")
    env = {
        **os.environ,
        "PATH": f"{home / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_ACTION_PATH": str(ROOT),
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "RUNNER_TEMP": str(home / "temp"),
    }
    return env


def run_step(name: str, inputs: dict, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    found = step(name)
    assert found["shell"] == "bash"
    script = cwd / f"{name.replace(' ', '-')}.sh"
    script.write_text(found["run"])
    step_env = {**env, **{k: substitute(str(v), inputs) for k, v in found.get("env", {}).items()}}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        env=step_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def outputs(env: dict) -> dict:
    lines = Path(env["GITHUB_OUTPUT"]).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_the_action_is_a_composite_action_without_expressions_in_its_scripts():
    assert ACTION["runs"]["using"] == "composite"
    assert ACTION["inputs"]["command"]["required"] is True
    for name, spec in ACTION["inputs"].items():
        assert spec["description"], name
    for item in ACTION["runs"]["steps"]:
        if "run" in item:  # inputs reach scripts only through env: an input never becomes shell code
            assert "${{" not in item["run"], item["name"]
        else:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", item["uses"])
    assert "always()" in step("Upload the output folder")["if"]
    assert set(ACTION["outputs"]) == {"exit-code", "out", "junit"}


def test_the_install_step_installs_this_checkout(runner, tmp_path):
    env = {**runner, "PIP_DRY_RUN": "1", "PIP_NO_DEPS": "1", "PIP_NO_BUILD_ISOLATION": "false"}
    done = run_step("Install occlude", given(), env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Would install occlude-" in done.stdout


@pytest.fixture
def data(tmp_path) -> Path:
    from onnx_models import rectangle_model

    folder = tmp_path / "my data"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", 'b "quoted" & <odd>.png'):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / name)
    rectangle_model(tmp_path / "rect.onnx", rect=(4, 6, 9, 12))
    return folder


def test_the_run_step_gates_writes_junit_summary_and_outputs(runner, data, tmp_path):
    command = "check rect.onnx 'my data' --box 0,10,5,16 --min-energy 0.5 --quiet"
    inputs = given(command=command, out="results/check", junit="results/junit.xml")
    done = run_step("Run occlude", inputs, runner, tmp_path)
    assert done.returncode == 4, done.stderr  # the gate failed: the step fails with occlude's code
    assert outputs(runner) == {"exit-code": "4", "out": "results/check", "junit": "results/junit.xml"}
    assert (tmp_path / "results" / "check" / "check.json").is_file()
    SCHEMA.validate(str(tmp_path / "results" / "junit.xml"))
    summary = Path(runner["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("## an earlier step\n") and "### occlude check: failed" in summary
    assert 'my data/b "quoted" &amp; \\<odd\\>\\.png' in summary  # the name escaped for markdown


def test_the_run_step_passes_and_can_leave_the_summary_alone(runner, data, tmp_path):
    inputs = given(command="run rect.onnx 'my data' --patch 8 --quiet", summary="false", junit="")
    done = run_step("Run occlude", inputs, runner, tmp_path)
    assert done.returncode == 0, done.stderr
    assert outputs(runner) == {"exit-code": "0", "out": "occlude-out", "junit": ""}
    assert (tmp_path / "occlude-out" / "summary.json").is_file()
    assert Path(runner["GITHUB_STEP_SUMMARY"]).read_text() == "## an earlier step\n"


def test_a_command_that_cannot_be_split_is_one_error(runner, tmp_path):
    done = run_step("Run occlude", given(command="run 'unclosed"), runner, tmp_path)
    assert done.returncode == 2 and "::error::cannot split the command input" in done.stdout
