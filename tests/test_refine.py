"""The coarse-to-fine engine (core/refine.py) against the exact engine on maps whose answer is known.

The score functions are plain numpy: a class's score is the image weighted by a fixed weight picture, so a
window's drop is the weight summed over the window (times the image minus the baseline): a smooth field
plus a sharp blob, computable by hand, and the exact engine gives it for every window.
"""

from __future__ import annotations

import numpy as np
import pytest

from occlude_cli.core.engine import occlusion_sensitivity, window_grid
from occlude_cli.core.metrics import pearson
from occlude_cli.core.refine import refine_forward_passes, refined_occlusion_sensitivity

SIZE = (64, 72)
BLOB = (40, 22)  # y, x of the sharp blob's centre


def _weights() -> np.ndarray:
    """(2, H, W): class 0 a smooth wave and bump plus a sharp blob (sigma 1.5 px, the map's peak); class 1
    smooth only."""
    yy, xx = np.mgrid[0 : SIZE[0], 0 : SIZE[1]].astype(np.float64)
    smooth = 0.002 * np.sin(xx / 11.0) * np.cos(yy / 13.0) + 0.001 * np.exp(-((yy - 15) ** 2 + (xx - 55) ** 2) / 300)
    blob = 0.2 * np.exp(-((yy - BLOB[0]) ** 2 + (xx - BLOB[1]) ** 2) / (2 * 1.5**2))
    return np.stack([smooth + blob, 0.003 * np.cos(xx / 9.0 + yy / 17.0)])


WEIGHTS = _weights()


def score(batch: np.ndarray) -> np.ndarray:
    """(B, 1, H, W) -> (B, 2): each class's weighted sum of the image."""
    return np.einsum("bhw,khw->bk", batch[:, 0], WEIGHTS)


def _inputs():
    return np.ones((1,) + SIZE), np.zeros((1,) + SIZE)


def test_measured_windows_are_exact_and_the_error_is_bounded():
    inputs, baseline = _inputs()
    common = dict(patch=(16, 16), stride=(2, 2), baseline=baseline)
    exact = occlusion_sensitivity(inputs, score, **common)
    refined = refined_occlusion_sensitivity(inputs, score, target=0, coarse_step=3, budget=0.25, **common)
    assert np.array_equal(refined.windows, exact.windows)
    measured = refined.measured
    assert 0 < measured.sum() < len(measured)
    # Measured windows: the very scores of the exact engine, every class.
    np.testing.assert_allclose(refined.window_scores[measured], exact.window_scores[measured], rtol=0, atol=1e-12)
    # Interpolated windows: the drop of the hand-computed field within a bound (the blob's plateau edges
    # are where bilinear interpolation misses most).
    by_hand = np.array([WEIGHTS[0, y : y + h, x : x + w].sum() for y, x, h, w in exact.windows])
    np.testing.assert_allclose(exact.drops([0])[:, 0], by_hand, atol=1e-12)
    drop_error = np.abs(refined.drops([0])[:, 0] - by_hand)
    assert drop_error[measured].max() < 1e-12
    assert drop_error.max() < 0.4 * np.ptp(by_hand)  # 0.23 measured
    exact_map, refined_map = exact.attribution(0), refined.attribution(0)
    assert np.abs(refined_map - exact_map).max() < 0.12 * np.ptp(exact_map)  # 0.081 measured
    assert pearson(exact_map, refined_map) > 0.99  # 0.9988 measured
    assert pearson(exact.attribution(1), refined.attribution(1)) > 0.999  # the other class, interpolated too
    # The blob is found where it is.
    peak = np.unravel_index(np.argmax(refined_map), SIZE)
    assert abs(peak[0] - BLOB[0]) <= 3 and abs(peak[1] - BLOB[1]) <= 3
    # The budget holds, and a second run is identical.
    assert refined.forward_passes <= 0.25 * exact.forward_passes
    again = refined_occlusion_sensitivity(inputs, score, target=0, coarse_step=3, budget=0.25, **common)
    assert np.array_equal(again.window_scores, refined.window_scores) and np.array_equal(again.measured, measured)


def test_a_bigger_budget_is_no_worse_and_the_full_budget_is_exact():
    inputs, baseline = _inputs()
    common = dict(patch=(16, 16), stride=(2, 2), baseline=baseline, target=0, coarse_step=3)
    exact = occlusion_sensitivity(inputs, score, patch=(16, 16), stride=(2, 2), baseline=baseline)
    errors = []
    for budget in (0.15, 0.25, 0.5):
        refined = refined_occlusion_sensitivity(inputs, score, budget=budget, **common)
        errors.append(np.abs(refined.attribution(0) - exact.attribution(0)).max())
    assert errors[0] >= errors[1] >= errors[2]
    full = refined_occlusion_sensitivity(inputs, score, budget=1.0, **common)
    assert full.measured.all()
    np.testing.assert_allclose(full.window_scores, exact.window_scores, rtol=0, atol=1e-12)


def test_the_coarse_lattice_is_even_staggered_and_includes_both_ends():
    inputs, baseline = _inputs()
    refined = refined_occlusion_sensitivity(
        inputs, score, patch=(16, 16), stride=(2, 2), baseline=baseline, target=0, coarse_step=4, budget=60.5 / 726
    )
    windows = refined.windows
    shape = (len(np.unique(windows[:, 0])), len(np.unique(windows[:, 1])))  # 25 x 29 windows
    grid = refined.measured.reshape(shape)
    rows = np.flatnonzero(grid.any(axis=1))
    assert rows[0] == 0 and rows[-1] == shape[0] - 1
    assert np.ptp(np.diff(rows)) <= 1 and np.diff(rows).max() <= 4  # even rows, at least every 4th
    even = np.flatnonzero(grid[rows[0]])
    assert even[0] == 0 and even[-1] == shape[1] - 1 and np.ptp(np.diff(even)) <= 1 and np.diff(even).max() <= 4
    for i, row in enumerate(rows):
        cols = np.flatnonzero(grid[row])
        if i % 2 == 0:
            assert np.array_equal(cols, even)
        else:  # both ends, and one knot halfway (to a window) between each pair of the even rows' knots
            assert cols[0] == 0 and cols[-1] == shape[1] - 1
            middles = cols[1:-1]
            assert len(middles) == len(even) - 1
            assert np.all(np.abs(middles - (even[:-1] + even[1:]) / 2) <= 1)
    # The budget of the sparsest lattice at step 4 (59 windows and the original of 726 passes): no drill-down,
    # only the lattice was scored (and the original).
    assert refined.forward_passes == grid.sum() + 1 == 60


@pytest.mark.parametrize(
    "size, patch, stride, region, step, budget",
    [
        ((64, 72), (16, 16), (2, 2), None, 3, 0.25),
        ((64, 72), (16, 16), (2, 2), None, 2, 0.3),
        ((64, 72), (16, 12), (4, 2), None, 3, 0.4),
        ((64, 72), (8, 8), (1, 3), (10, 5, 50, 60), 4, 0.2),  # a region
        ((64, 72), (16, 16), (2, 2), None, 50, 0.03),  # a step longer than the grid: its two ends
        ((64, 72), (32, 32), (8, 8), None, 3, 1.0),
        ((20, 20), (20, 20), (1, 1), None, 3, 1.0),  # a single window
    ],
)
def test_refine_forward_passes_predicts_the_count(size, patch, stride, region, step, budget):
    inputs = np.ones((1,) + size)
    calls = []

    def counting(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return np.stack([batch.reshape(len(batch), -1).sum(axis=1), batch[:, 0, 0, 0]], axis=1)

    refined = refined_occlusion_sensitivity(
        inputs,
        counting,
        patch=patch,
        stride=stride,
        region=region,
        baseline=np.zeros_like(inputs),
        target=0,
        coarse_step=step,
        budget=budget,
    )
    predicted = refine_forward_passes(size, patch, stride, region, step, budget)
    assert sum(calls) == predicted == refined.forward_passes == int(refined.measured.sum()) + 1
    grid = len(window_grid(size, patch, stride, region))
    assert predicted <= np.floor(budget * (grid + 1))  # the budget is a cap


def test_a_bigger_budget_never_buys_fewer_passes_and_the_step_sets_the_least_density():
    size, patch, stride = (224, 224), (48, 48), (8, 8)
    # The sparsest lattice at step 3 on the 23x23 grid: 9 knot rows, 9 knots on the even ones, 10 on the
    # staggered ones (8 between, 2 ends), and the original: 86 of the exact map's 530 passes.
    least = 5 * 9 + 4 * 10 + 1
    budgets = np.linspace(least / 530, 1.0, 100)
    passes = [refine_forward_passes(size, patch, stride, None, 3, b) for b in budgets]
    assert all(a <= b for a, b in zip(passes, passes[1:]))
    assert all(p <= np.floor(b * 530) for p, b in zip(passes, budgets))
    assert passes[0] == least and passes[-1] == 530  # the whole 23x23 grid and the original
    # The defaults at 48/8: the lattice and the drill-downs take a quarter of 530 passes.
    assert refine_forward_passes(size, patch, stride, None, 3, 0.25) == 132


@pytest.mark.parametrize(
    "size, patch, stride, step, budget, says",
    [
        # the case: 64x64, patch 12, stride 2: 27x27 windows, 730 exact passes, 182 allowed at 0.25
        ((64, 64), (12, 12), (2, 2), 2, 0.25, "at least 203 windows in its coarse pass (204 forward passes"),
        ((64, 64), (12, 12), (2, 2), 1, 0.25, "at least 729 windows"),
        ((224, 224), (48, 48), (8, 8), 3, 0.1, "refine_budget 0.17 or more"),
        ((20, 20), (20, 20), (1, 1), 3, 0.5, "the exact map (2 forward passes, no refine)"),  # one window
    ],
)
def test_a_step_that_cannot_meet_the_budget_is_refused(size, patch, stride, step, budget, says):
    """The budget is a cap: a coarse step whose sparsest lattice needs more passes than the budget allows is
    refused with the numbers and what would fit (it used to run 204 passes for a budget of 182, in silence)."""
    from occlude_cli.errors import OccludeError

    with pytest.raises(OccludeError, match=r"more than refine_budget .* allows") as caught:
        refine_forward_passes(size, patch, stride, None, step, budget)
    assert says in str(caught.value)
    inputs = np.ones((1,) + size)
    calls = []

    def counting(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    with pytest.raises(OccludeError, match="more than refine_budget"):
        refined_occlusion_sensitivity(
            inputs,
            counting,
            patch=patch,
            stride=stride,
            baseline=np.zeros_like(inputs),
            coarse_step=step,
            budget=budget,
        )
    assert calls == []  # refused before any forward pass


def test_library_options_of_the_wrong_type_are_named_and_none_means_the_default():
    """explain()'s options from Python: a string or None where a number belongs is one OccludeError naming
    the parameter (not numpy's TypeError), and refine_step / refine_budget None mean their defaults."""
    from occlude_cli.errors import OccludeError
    from occlude_cli import ExplainOptions

    options = ExplainOptions(refine=True, refine_step=None, refine_budget=None).checked()
    assert (options.refine_step, options.refine_budget) == (3, 0.25)
    assert ExplainOptions(refine=True, refine_budget=np.float32(0.5)).checked().refine_budget == 0.5
    for name, value in [
        ("refine_budget", "0.2"),
        ("refine_step", "x"),
        ("top_k", "3"),
        ("seed", None),
        ("batch_size", True),
        ("blur_sigma", "2"),
    ]:
        with pytest.raises(OccludeError, match=rf"^{name}\b.*must be a number, got"):
            ExplainOptions(refine=True, **{name: value}).checked()
    with pytest.raises(OccludeError, match=r"refine_budget must be in \(0, 1\], got nan"):
        ExplainOptions(refine=True, refine_budget=float("nan")).checked()


def test_cli_refuses_a_step_over_the_budget_before_any_image_and_keeps_the_default_within_it(tmp_path):
    """`occlude run --refine` at 64x64, patch 12, stride 2 (730 exact passes, 182 allowed by the default budget
    0.25): --refine-step 2 is one error line and exit 1 before any image is read; the default step makes at
    most 182 passes."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from occlude_cli.cli import app
    from onnx_models import rectangle_model

    model = rectangle_model(tmp_path / "m.onnx", size=(64, 64), rect=(10, 10, 40, 40))
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(image)
    flags = ["--patch", "12", "--stride", "2", "--refine", "-q"]
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(model), str(tmp_path / "missing.png"), *flags, "--refine-step", "2"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "204 forward passes" in lines[0] and "allows (182 of the exact map's 730)" in lines[0]
    result = runner.invoke(app, ["run", str(model), str(image), *flags, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "img.json").read_text())
    assert record["map_info"]["forward_passes"] == 182


def test_refine_settings_without_refine_are_refused_not_ignored(tmp_path):
    """--refine-step and --refine-budget without --refine were accepted and did nothing (the user believed the
    map coarse-to-fine, or a budget honoured): one error line naming them and --refine, exit 1, nothing
    written; refine_step=5 from Python likewise. With refine, None still means the defaults."""
    from typer.testing import CliRunner

    from occlude_cli import ExplainOptions, OccludeError
    from occlude_cli.cli import app

    from conftest import SAMPLE_IMAGES, SAMPLE_MODELS

    out = tmp_path / "out"
    for flags, words in (
        (["--refine-step", "2"], "--refine-step applies"),
        (["--refine-budget", "0.5", "--refine-step", "4"], "--refine-step and --refine-budget apply"),
    ):
        done = CliRunner().invoke(
            app,
            ["run", str(SAMPLE_MODELS / "digits_cnn.onnx"), str(SAMPLE_IMAGES / "digit_3.png"), "-o", str(out), *flags],
        )
        assert done.exit_code == 1 and done.output.count("error:") == 1, done.output
        assert f"{words} to --refine (coarse-to-fine), which is off" in done.output and not out.exists()
    with pytest.raises(OccludeError, match="refine_step applies to refine") as caught:
        ExplainOptions(refine_step=5).checked()
    assert caught.value.params == ("refine_step", "refine")
    checked = ExplainOptions(refine=True, refine_budget=0.5).checked()
    assert (checked.refine_step, checked.refine_budget) == (3, 0.5) and checked.checked() == checked
    assert ExplainOptions().checked().refine_step is None
