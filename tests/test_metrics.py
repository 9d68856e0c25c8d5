"""Unit tests of occlude_cli.metrics against values computed by hand."""

import math

import numpy as np
import pytest

from occlude_cli.errors import OccludeError
from occlude_cli.core.metrics import (
    auc,
    deletion_curve,
    energy_share,
    importance_order,
    insertion_curve,
    pearson,
    peak_inside_fraction,
    pointing_game,
    rank_average,
    spearman,
    step_counts,
    top_fraction_iou,
    top_fraction_mask,
)

NAN = float("nan")


# ------------------------------------------------------------------------------ correlations


def test_rank_average_shares_ranks_between_ties():
    assert rank_average([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rank_average([3, 1, 2]).tolist() == [3.0, 1.0, 2.0]
    assert rank_average([7, 7, 7]).tolist() == [2.0, 2.0, 2.0]
    assert rank_average([2, 1, 2, 1, 2]).tolist() == [4.0, 1.5, 4.0, 1.5, 4.0]


def test_spearman_with_ties_matches_hand_computation():
    # ranks a = [1, 2.5, 2.5, 4], ranks b = [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5], [-1.5, .5, -.5, 1.5]
    # cov = 4.5, var_a = 4.5, var_b = 5  ->  rho = 4.5 / sqrt(22.5) = 3 / sqrt(10)
    a = np.array([[1.0, 2.0], [2.0, 3.0]])
    b = np.array([[1.0, 3.0], [2.0, 4.0]])
    assert spearman(a, b) == pytest.approx(3 / math.sqrt(10), abs=1e-12)


def test_spearman_is_invariant_to_monotone_rescaling():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 7))
    assert spearman(a, np.exp(3 * a)) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert pearson(a, np.exp(3 * a)) < 0.99  # Pearson is not


def test_pearson_hand_values_and_undefined_cases():
    a = np.arange(12, dtype=float).reshape(3, 4)
    assert pearson(a, 2 * a + 3) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    # x = [1, 2, 3], y = [1, 3, 2]: centred [-1, 0, 1], [-1, 1, 0] -> cov 1, var 2 and 2 -> 0.5
    assert pearson(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 3.0, 2.0]])) == pytest.approx(0.5)
    assert math.isnan(pearson(np.ones((3, 3)), a[:3, :3]))  # constant map: undefined
    assert math.isnan(pearson(np.full((2, 2), NAN), np.ones((2, 2))))


def test_not_computed_pixels_are_left_out_of_correlations():
    a = np.arange(9, dtype=float).reshape(3, 3)
    b = a.copy()
    a[0, 0] = NAN
    b[0, 0] = -1e9  # would ruin both correlations, but it is paired with a NaN: ignored
    assert pearson(a, b) == pytest.approx(1.0)
    assert spearman(a, b) == pytest.approx(1.0)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(OccludeError, match="different shapes"):
        pearson(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(OccludeError, match="2-D"):
        spearman(np.zeros(4), np.zeros(4))


# ------------------------------------------------------------------------------- top-k overlap


def test_top_fraction_iou_of_known_sets():
    a = np.arange(10, dtype=float).reshape(1, 10)  # top 20% = pixels {8, 9}
    b = np.zeros((1, 10))
    b[0, 9], b[0, 0] = 5.0, 4.0  # top 20% = pixels {9, 0}
    assert top_fraction_iou(a, b, 0.2) == pytest.approx(1 / 3)
    assert top_fraction_iou(a, a, 0.2) == 1.0
    assert top_fraction_iou(a, -a, 0.2) == 0.0


def test_top_fraction_mask_includes_ties_at_the_threshold():
    values = np.array([[5.0, 5.0, 5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert top_fraction_mask(values, 0.1).tolist() == [[True, True, True] + [False] * 7]
    values[0, 4] = NAN
    assert not top_fraction_mask(values, 1.0)[0, 4]
    with pytest.raises(OccludeError, match="fraction"):
        top_fraction_mask(values, 0.0)


# ------------------------------------------------------------------------------ region metrics


def test_energy_share_of_a_simple_map():
    values = np.array([[1.0, -2.0], [3.0, NAN]])
    mask = np.array([[True, False], [False, True]])
    assert energy_share(values, mask) == pytest.approx(0.25)  # positive mass 1 + 3, inside 1
    assert energy_share(values, ~mask) == pytest.approx(0.75)
    assert math.isnan(energy_share(-np.abs(values), mask))  # no positive value: undefined
    assert energy_share(np.ones((4, 4)), np.eye(4, dtype=bool)) == pytest.approx(0.25)  # uniform: area share


def test_pointing_game_single_peak_and_plateaus():
    values = np.zeros((4, 4))
    values[1, 2] = 3.0
    inside = np.zeros((4, 4), dtype=bool)
    inside[0:2, 2:4] = True
    assert pointing_game(values, inside)
    assert not pointing_game(values, ~inside)
    plateau = np.zeros((4, 4))
    plateau[0:2, 1:3] = 1.0  # 4 tied maximal pixels, 2 of them inside
    assert peak_inside_fraction(plateau, inside) == 0.5
    assert not pointing_game(plateau, inside)  # half is not a majority
    plateau[0:2, 1] = 0.5
    plateau[2, 2] = 1.0  # plateau {(0,2), (1,2), (2,2)}: 2 of 3 inside
    assert pointing_game(plateau, inside)
    assert not pointing_game(-np.ones((4, 4)), inside)  # no positive evidence anywhere: a miss
    nan_map = np.full((4, 4), NAN)
    nan_map[0, 3] = 1.0
    assert pointing_game(nan_map, inside)


def test_region_metrics_check_the_mask_shape():
    with pytest.raises(OccludeError, match="mask shape"):
        energy_share(np.ones((3, 3)), np.ones((2, 2), dtype=bool))


# ------------------------------------------------------------------------------------- curves


def test_auc_trapezoid():
    assert auc([0.0, 0.5, 1.0], [1.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert auc([0.0, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert auc([0.0, 0.25, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.125 + 0.75)
    with pytest.raises(OccludeError):
        auc([0.5, 0.0], [1.0, 1.0])


def test_importance_order_is_descending_stable_with_nan_last():
    values = np.array([[3.0, NAN], [3.0, 5.0]])
    assert importance_order(values).tolist() == [3, 0, 2, 1]


def test_step_counts_are_strictly_increasing_and_capped():
    assert step_counts(4, 10).tolist() == [0, 1, 2, 3, 4]
    counts = step_counts(224 * 224, 50)
    assert counts[0] == 0 and counts[-1] == 224 * 224 and len(counts) == 51
    assert np.all(np.diff(step_counts(64, 50)) >= 1)
    with pytest.raises(OccludeError):
        step_counts(10, 0)


WEIGHTS = np.array([[8.0, 4.0], [2.0, 1.0]])
IMPORTANCE = np.array([[1.0, 2.0], [3.0, 4.0]])  # pixel (1, 1) first, then (1, 0), (0, 1), (0, 0)


def _weighted_score(channel_axis: int, calls: list):
    def score(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        grey = batch.sum(axis=channel_axis + 1)  # (N, 2, 2)
        value = (grey * WEIGHTS).sum(axis=(1, 2))
        return np.stack([value, -value], axis=1)

    return score


def test_deletion_and_insertion_curves_by_hand():
    inputs = np.ones((1, 2, 2), dtype=np.float32)  # channel-first, one channel
    baseline = np.zeros_like(inputs)
    calls: list = []
    deletion = deletion_curve(inputs, baseline, IMPORTANCE, _weighted_score(0, calls), 0, steps=4)
    assert deletion.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert deletion.scores.tolist() == [15.0, 14.0, 12.0, 8.0, 0.0]
    assert deletion.auc == pytest.approx(0.25 * (15 / 2 + 14 + 12 + 8 + 0 / 2))
    insertion = insertion_curve(inputs, baseline, IMPORTANCE, _weighted_score(0, calls), 0, steps=4)
    assert insertion.scores.tolist() == [0.0, 1.0, 3.0, 7.0, 15.0]
    target1 = deletion_curve(inputs, baseline, IMPORTANCE, _weighted_score(0, calls), 1, steps=2)
    assert target1.scores.tolist() == [-15.0, -12.0, 0.0]


def test_curves_batch_the_steps_and_handle_channels_last():
    rng = np.random.default_rng(3)
    chw = rng.uniform(size=(3, 2, 2)).astype(np.float32)
    hwc = np.ascontiguousarray(np.moveaxis(chw, 0, -1))
    calls: list = []
    a = deletion_curve(chw, np.zeros_like(chw), IMPORTANCE, _weighted_score(0, calls), 0, steps=4, batch_size=2)
    assert calls == [2, 2, 1]  # 5 step inputs in batches of 2
    calls.clear()
    b = deletion_curve(
        hwc, np.zeros_like(hwc), IMPORTANCE, _weighted_score(2, calls), 0, steps=4, spatial_axes=(0, 1), batch_size=64
    )
    assert calls == [5]
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    # every channel of a pixel is removed together: after the first step pixel (1, 1) is gone
    assert a.scores[0] - a.scores[1] == pytest.approx(float(chw[:, 1, 1].sum()) * 1.0, rel=1e-5)


def test_curves_reject_bad_shapes():
    x = np.ones((1, 2, 2), dtype=np.float32)
    with pytest.raises(OccludeError, match="importance map shape"):
        deletion_curve(x, np.zeros_like(x), np.ones((3, 3)), _weighted_score(0, []), 0)
    with pytest.raises(OccludeError, match="baseline shape"):
        deletion_curve(x, np.zeros((1, 3, 3)), IMPORTANCE, _weighted_score(0, []), 0)
    with pytest.raises(OccludeError, match="out of range"):
        deletion_curve(x, np.zeros_like(x), IMPORTANCE, _weighted_score(0, []), 5)


def test_the_peak_is_the_plateau_pixel_nearest_its_centre_and_the_pointing_game_tests_it():
    """One tie rule (issue 33): the reported peak is the plateau pixel nearest the plateau's centroid (ties:
    first in row-major order), in 2-D and 3-D, and the pointing game is a hit exactly when that pixel is inside."""
    from occlude_cli.core.metrics import peak, peak_index

    plateau = np.zeros((16, 16))
    plateau[2:6, 2:14] = 1.0  # centroid (3.5, 7.5): four pixels tie, (3, 7) comes first
    assert peak_index(plateau) == (3, 7) and peak(plateau) == {"y": 3, "x": 7, "value": 1.0}
    corner = np.zeros((16, 16), dtype=bool)
    corner[0:4, 0:4] = True  # holds the plateau's first pixel (2, 2), not its peak
    assert not pointing_game(plateau, corner)
    centre = np.zeros((16, 16), dtype=bool)
    centre[2:6, 6:10] = True  # holds the peak, and a third of the plateau
    assert pointing_game(plateau, centre) and peak_inside_fraction(plateau, centre) == pytest.approx(1 / 3)
    volume = np.zeros((5, 5, 5))
    volume[1:4, 0:5, 2] = 2.0  # centroid (2, 2, 2)
    assert peak_index(volume) == (2, 2, 2)
    assert peak_index(np.full((3, 3), NAN)) == (0, 0)


@pytest.mark.parametrize("unit", [1e200, 1e-200, 1e300])
def test_metrics_do_not_depend_on_the_maps_unit(unit):
    """Issue 33: a map multiplied by 1e200 gave Pearson 0.0 (its squares overflow float64). Every metric is
    computed on maps scaled to a largest magnitude of 1: the same value for any unit, equal to numpy's
    corrcoef on the unscaled maps (the hand-checkable reference)."""
    from occlude_cli.core.fidelity import infidelity_result

    rng = np.random.default_rng(1)
    a = rng.normal(size=(12, 12))
    b = a + rng.normal(0, 0.7, a.shape)
    expected = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert pearson(a, b) == pytest.approx(expected, rel=1e-12)
    assert pearson(a, b * unit) == pytest.approx(expected, rel=1e-12)
    assert pearson(a * unit, b * unit) == pytest.approx(expected, rel=1e-12)
    mask = np.zeros((12, 12), dtype=bool)
    mask[:6] = True
    assert energy_share(b * unit, mask) == pytest.approx(energy_share(b, mask), rel=1e-12)
    windows = np.array([[y, x, 4, 4] for y in range(0, 9, 2) for x in range(0, 9, 2)])
    drops = np.array([a[y : y + 4, x : x + 4].sum() for y, x, _, _ in windows])
    plain = infidelity_result(b, windows, drops, scale_invariant=True)
    scaled = infidelity_result(b * unit, windows, drops, scale_invariant=True)
    assert scaled.value == pytest.approx(plain.value, rel=1e-9) and scaled.value > 0
    assert scaled.scale * unit == pytest.approx(plain.scale, rel=1e-9)


@pytest.mark.parametrize("unit", [1e200, 1e-60])
def test_other_maps_in_extreme_units_survive_resizing(unit):
    """Maps are resized with Pillow's float32 images: 1e200 became inf and 1e-60 became 0 before; they are
    resized at unit scale and scaled back."""
    from occlude_cli.loaders.maps import resize_map

    values = np.random.default_rng(3).random((16, 16))
    np.testing.assert_allclose(resize_map(values * unit, (8, 8)) / unit, resize_map(values, (8, 8)), rtol=1e-12)
