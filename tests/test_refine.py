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
        inputs, score, patch=(16, 16), stride=(2, 2), baseline=baseline, target=0, coarse_step=4, budget=0.05
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
    # No drill-down at this budget: only the lattice was scored (and the original).
    assert refined.forward_passes == grid.sum() + 1 > np.floor(0.05 * (grid.size + 1))


@pytest.mark.parametrize(
    "size, patch, stride, region, step, budget",
    [
        ((64, 72), (16, 16), (2, 2), None, 3, 0.25),
        ((64, 72), (16, 16), (2, 2), None, 2, 0.1),  # budget below the coarse grid: the grid is still run
        ((64, 72), (16, 12), (4, 2), None, 3, 0.4),
        ((64, 72), (8, 8), (1, 3), (10, 5, 50, 60), 4, 0.2),  # a region
        ((64, 72), (16, 16), (2, 2), None, 50, 0.03),  # a step longer than the grid: its two ends
        ((64, 72), (32, 32), (8, 8), None, 3, 1.0),
        ((20, 20), (20, 20), (1, 1), None, 3, 0.5),  # a single window
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
    # Within the budget, unless the coarsest lattice the step asks for is already over it (then that
    # lattice, and nothing more, is scored).
    coarsest = refine_forward_passes(size, patch, stride, region, step, 1e-9)
    assert predicted <= np.floor(budget * (grid + 1)) or predicted == coarsest


def test_a_bigger_budget_never_buys_fewer_passes_and_the_step_sets_the_least_density():
    size, patch, stride = (224, 224), (48, 48), (8, 8)
    budgets = np.linspace(0.01, 1.0, 100)
    passes = [refine_forward_passes(size, patch, stride, None, 3, b) for b in budgets]
    assert all(a <= b for a, b in zip(passes, passes[1:]))
    assert passes[-1] == 530  # the whole 23x23 grid and the original
    # Below what the step asks for, the lattice is still every third window: 9 knot rows, 9 knots on the
    # even ones, 10 on the staggered ones (8 between, 2 ends), and the original.
    assert passes[0] == refine_forward_passes(size, patch, stride, None, 3, 0.001) == 5 * 9 + 4 * 10 + 1
    # The defaults at 48/8: the lattice and the drill-downs take a quarter of 530 passes.
    assert refine_forward_passes(size, patch, stride, None, 3, 0.25) == 132


def test_library_options_of_the_wrong_type_are_named_and_none_means_the_default():
    """explain()'s options from Python: a string or None where a number belongs is one OccludeError naming
    the parameter (not numpy's TypeError), and refine_step / refine_budget None mean their defaults."""
    from occlude_cli.errors import OccludeError
    from occlude_cli.explain import ExplainOptions

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
    with pytest.raises(OccludeError, match=r"refine_budget \(--refine-budget\) must be in \(0, 1\], got nan"):
        ExplainOptions(refine=True, refine_budget=float("nan")).checked()
