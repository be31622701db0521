"""Hand-computed micro-cases for lrp_utils.metrics."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from lrp_utils import metrics as M
from lrp_utils.baselines import random_relevance
from tolerances import CORRELATION_EXACT_ATOL, HAND_FLOAT64_ATOL


def weight_score(w):
    """score_fn: sum of a fixed weight over the positions that are NOT removed. w: [n, seq]."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return lambda removed: (w * ~removed).sum(dim=1)


QUARTERS = [0.0, 0.25, 0.5, 0.75, 1.0]
THIRDS = [0.0, 1 / 3, 2 / 3, 1.0]


# ----------------------------------------------------------------------------- correlations
def test_correlations_perfect_and_anti_with_nans():
    a = [1.0, 2.0, math.nan, 3.0, 4.0]
    p, s = M.correlations(a, [2.0, 4.0, 99.0, 6.0, 8.0])
    assert p == pytest.approx(1.0, abs=CORRELATION_EXACT_ATOL) and s == pytest.approx(1.0, abs=CORRELATION_EXACT_ATOL)
    p, s = M.correlations(torch.tensor(a), torch.tensor([-1.0, -2.0, 0.0, -3.0, math.nan]))
    assert p == pytest.approx(-1.0, abs=CORRELATION_EXACT_ATOL) and s == pytest.approx(-1.0, abs=CORRELATION_EXACT_ATOL)


def test_correlations_hand_value_and_mask():
    # a, b centred: (-1, 0, 1), (-1, 1, 0): r = 1 / (sqrt 2 * sqrt 2) = 0.5; ranks are the values.
    p, s = M.correlations([1.0, 2.0, 3.0, 50.0], [1.0, 3.0, 2.0, -50.0], mask=[True, True, True, False])
    assert p == pytest.approx(0.5, abs=CORRELATION_EXACT_ATOL)
    assert s == pytest.approx(0.5, abs=CORRELATION_EXACT_ATOL)


def test_correlations_undefined_gives_nan():
    assert all(math.isnan(v) for v in M.correlations([1.0, 2.0, math.nan], [1.0, 2.0, 3.0]))  # 2 valid
    assert all(math.isnan(v) for v in M.correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # zero variance
    with pytest.raises(ValueError):
        M.correlations([1.0, 2.0, 3.0], [1.0, 2.0])


def test_agreement_per_example_means_and_ci():
    A = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    B = torch.tensor([[2.0, 4.0, 6.0, 8.0], [4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # r = 1, -1, undefined
    res = M.agreement(A, B, n_boot=200, seed=1)
    np.testing.assert_allclose(res.per_example_pearson[:2], [1.0, -1.0], atol=CORRELATION_EXACT_ATOL)
    assert math.isnan(res.per_example_spearman[2]) and res.n == 3
    assert res["pearson"] == pytest.approx(0.0, abs=CORRELATION_EXACT_ATOL)
    assert -1.0 <= res.pearson_ci[0] <= 0.0 <= res.pearson_ci[1] <= 1.0
    assert M.agreement(A, B, n_boot=200, seed=1).spearman_ci == res.spearman_ci


def test_agreement_mask_and_shape_errors():
    A = np.array([[1.0, 2.0, 3.0, 9.0]])
    B = np.array([[1.0, 2.0, 3.0, -9.0]])
    assert M.agreement(A, B, mask=[[True, True, True, False]], n_boot=50).pearson == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.agreement(A, B[:, :3])
    with pytest.raises(ValueError):
        M.agreement(A, B, mask=[[True, True]])


def test_row_correlations_equal_scipy_per_row():
    g = np.random.default_rng(0)
    A = g.normal(size=(40, 12))
    B = A + g.normal(size=A.shape)
    B[:, 3] = np.round(B[:, 3])  # ties for the ranks
    mask = g.random(A.shape) > 0.2
    A[5, 2] = np.nan  # a NaN counts as masked
    mask[7, 3:] = False  # 3 positions: still defined
    mask[8, 2:] = False  # 2 positions: undefined
    B[9] = 1.0  # constant: undefined
    pear, spear = M.row_correlations(A, B, mask)
    for i in range(len(A)):
        keep = mask[i] & np.isfinite(A[i]) & np.isfinite(B[i])
        if keep.sum() < 3 or np.ptp(B[i][keep]) == 0:
            assert np.isnan(pear[i]) and np.isnan(spear[i]), i
            continue
        assert pear[i] == pytest.approx(pearsonr(A[i][keep], B[i][keep])[0], abs=CORRELATION_EXACT_ATOL), i
        assert spear[i] == pytest.approx(spearmanr(A[i][keep], B[i][keep])[0], abs=CORRELATION_EXACT_ATOL), i
    p1, s1 = M.correlations(A[0], B[0], mask[0])
    assert (p1, s1) == (pear[0], spear[0])  # one row of the same computation
    with pytest.raises(ValueError):
        M.row_correlations(A, B[:, :3])


def test_precision_at_k():
    R = torch.tensor([[0.1, -3.0, 2.0, 0.5], [1.0, 1.0, 0.0, float("nan")]])
    truth = torch.tensor([[False, True, False, True], [False, False, True, True]])
    np.testing.assert_allclose(M.precision_at_k(R, truth), [0.5, 0.0])  # top-2 |R|: 1, 2 / 0, 1 (ties by position)
    valid = torch.tensor([[True, False, True, True], [True, True, True, True]])
    np.testing.assert_allclose(M.precision_at_k(R, truth, valid), [0.5, 0.0])  # top-2 among valid: 2, 3


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_validates_its_arguments():
    v = [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap_ci(v, alpha=1.5)  # used to return low > high
    with pytest.raises(ValueError, match="alpha"):
        M.bootstrap(v, alpha=0.0)
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_ci(v, n_boot=0)  # used to crash inside numpy
    with pytest.raises(TypeError, match="n_boot"):
        M.paired_bootstrap(v, v, n_boot=10.5)
    with pytest.raises(ValueError, match="n_boot"):
        M.curve_band(np.ones((2, 3)), n_boot=-1)
    with pytest.raises(KeyError):
        M.bootstrap(v, "mode")


def test_bootstrap_statistics_by_hand():
    v = np.array([1.0, 2.0, 4.0, 10.0, 3.0])
    assert M.bootstrap(v, "median", n_boot=300).mean == pytest.approx(3.0)
    med = M.bootstrap(v, "median", n_boot=300, seed=1)
    assert med.low <= 3.0 <= med.high and med.low >= 1.0 and med.high <= 10.0
    pairs = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 4.0], [np.nan, 1.0]])  # the NaN row is dropped
    ratio = M.bootstrap(pairs, "ratio_of_means", n_boot=300)
    assert ratio.mean == pytest.approx(6.0 / 8.0, abs=HAND_FLOAT64_ATOL) and ratio.low <= ratio.mean <= ratio.high
    vec = M.bootstrap(np.c_[v, 2 * v], lambda x: x.mean(1), n_boot=300)  # a vector statistic, rows kept together
    np.testing.assert_allclose(vec.mean, [v.mean(), 2 * v.mean()], atol=HAND_FLOAT64_ATOL)
    assert vec.low[1] == pytest.approx(2 * vec.low[0]) and vec.high[1] == pytest.approx(2 * vec.high[0])
    assert M.bootstrap(v, n_boot=300, seed=2) == M.bootstrap_ci(v, n_boot=300, seed=2)


def test_one_resampling_stream():
    """Every interval comes from the same resamples: a mean's interval equals the percentiles of
    the means of ``rng.integers(0, n, (n_boot, n))`` rows, chunking changes nothing."""
    v = np.random.default_rng(5).normal(size=17)
    idx = np.random.default_rng(7).integers(0, len(v), size=(450, len(v)))
    low, high = np.quantile(v[idx].mean(1), [0.05, 0.95])
    ci = M.bootstrap(v, n_boot=450, alpha=0.1, seed=7, chunk=64)
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=0)


def test_bootstrap_ci_contains_mean_and_is_seeded():
    v = np.random.default_rng(0).normal(size=40)
    ci = M.bootstrap_ci(v, n_boot=500, seed=3)
    assert ci.low < ci.mean < ci.high and ci.mean == pytest.approx(v.mean(), abs=HAND_FLOAT64_ATOL)
    assert M.bootstrap_ci(v, n_boot=500, seed=3) == ci
    assert M.bootstrap_ci(v, n_boot=500, seed=4) != ci


def test_bootstrap_ci_degenerate_inputs():
    assert M.bootstrap_ci([2.0, 2.0, math.nan]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(x) for x in M.bootstrap_ci([math.nan]))


def test_paired_bootstrap_constant_difference():
    a = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    ci = M.paired_bootstrap(a + 1.0, a, n_boot=100)
    assert ci == pytest.approx((1.0, 1.0, 1.0), abs=HAND_FLOAT64_ATOL)
    with pytest.raises(ValueError):
        M.paired_bootstrap(a, a[:3])


def test_curve_band_shapes_and_order():
    scores = np.random.default_rng(0).normal(size=(5, 30))
    mean, low, high = M.curve_band(scores, n_boot=200)
    assert mean.shape == low.shape == high.shape == (5,)
    assert np.all(low <= mean) and np.all(mean <= high)


# ----------------------------------------------------------------------------- perturbation
def test_morf_lerf_removal_by_hand():
    w = [[1.0, 2.0, 3.0, 4.0]]  # relevance = weight: a perfect explanation
    morf = M.perturbation_curve(weight_score(w), w, "morf", QUARTERS)
    lerf = M.perturbation_curve(weight_score(w), w, "lerf", QUARTERS)
    np.testing.assert_allclose(morf[:, 0], [10, 6, 3, 1, 0], atol=HAND_FLOAT64_ATOL)
    np.testing.assert_allclose(lerf[:, 0], [10, 9, 7, 4, 0], atol=HAND_FLOAT64_ATOL)
    res = M.morf_lerf(weight_score(w), w, fractions=QUARTERS)
    # trapezoids with dx = 0.25: MoRF 0.25 * (5 + 6 + 3 + 1) = 3.75, LeRF 0.25 * (5 + 9 + 7 + 4) = 6.25
    assert res.morf.area == pytest.approx(3.75, abs=HAND_FLOAT64_ATOL)
    assert res.area_between == pytest.approx(2.5, abs=HAND_FLOAT64_ATOL)


def test_keep_mode_and_valid_positions():
    w = [[100.0, 1.0, 2.0, 3.0, 4.0]]  # position 0 is [CLS]: never perturbed, always counted
    valid = [[False, True, True, True, True]]
    keep = M.perturbation_curve(weight_score(w), w, "morf", QUARTERS, mode="keep", valid=valid)
    np.testing.assert_allclose(keep[:, 0], [100, 104, 107, 109, 110], atol=HAND_FLOAT64_ATOL)


def test_per_example_validity_and_round_half_up():
    w = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0]]
    valid = [[True, True, True, True], [True, True, False, False]]  # 4 and 2 valid positions
    curve = M.perturbation_curve(weight_score(w), w, "morf", [0.0, 0.25, 0.5, 1.0], valid=valid)
    # example 1: k = round(0.25 * 2) = 1 (half rounds up), round(0.5 * 2) = 1, 2
    np.testing.assert_allclose(curve, [[10, 11], [6, 5], [3, 5], [0, 0]], atol=HAND_FLOAT64_ATOL)


def test_ties_broken_by_position_and_by_abs():
    seen = []

    def record(removed):
        seen.append(removed.clone())
        return removed.sum(1).double()

    M.perturbation_curve(record, torch.ones(1, 3), "morf", THIRDS)
    M.perturbation_curve(record, torch.ones(1, 3), "lerf", THIRDS)
    assert seen[1].tolist() == [[True, False, False]] and seen[5].tolist() == [[True, False, False]]
    seen.clear()
    M.perturbation_curve(record, torch.tensor([[-5.0, 1.0, 2.0]]), "morf", THIRDS, by_abs=True)
    assert seen[1].tolist() == [[True, False, False]] and seen[1].dtype == torch.bool


def test_perturbation_errors():
    w = [[1.0, 2.0, 3.0]]
    with pytest.raises(ValueError):
        M.perturbation_curve(weight_score(w), w, order="random")
    with pytest.raises(ValueError):
        M.perturbation_curve(weight_score(w), w, mode="insert")
    with pytest.raises(ValueError):
        M.perturbation_curve(weight_score(w), w, valid=[[True, True]])
    with pytest.raises(ValueError):
        M.perturbation_curve(weight_score(w), w, fractions=[0.5, 0.2])
    with pytest.raises(ValueError):
        M.perturbation_curve(lambda r: torch.zeros(2), w)  # wrong output shape


def test_area_is_normalised_by_x_range():
    assert M.area([1.0, 1.0], [0.0, 1.0]) == pytest.approx(1.0, abs=HAND_FLOAT64_ATOL)
    assert M.area([0.0, 2.0], [0.0, 0.5]) == pytest.approx(1.0, abs=HAND_FLOAT64_ATOL)
    np.testing.assert_allclose(M.area([[0.0, 1.0], [2.0, 1.0]], [0.0, 1.0]), [1.0, 1.0], atol=HAND_FLOAT64_ATOL)
    with pytest.raises(ValueError):
        M.area([1.0, 2.0, 3.0], [0.0, 1.0])


def test_auac_three_tokens_by_hand():
    prob = weight_score([[0.5, 0.3, 0.2]])  # "probability" = sum of kept weights
    R = [[0.1, 0.9, -0.5]]  # signed order: pos 1, pos 0, pos 2
    res = M.auac(prob, R, fractions=THIRDS)  # keep k = 0..3: 0, 0.3, 0.8, 1.0
    np.testing.assert_allclose(res.scores[:, 0], [0.0, 0.3, 0.8, 1.0], atol=HAND_FLOAT64_ATOL)
    assert res.area == pytest.approx((0.3 + 0.8 + 0.5) / 3, abs=HAND_FLOAT64_ATOL)
    # default grid 0, 0.1, ..., 1 with 3 tokens: k = 0,0,1,1,1,2,2,2,2,3,3 -> 0.1 * (5.6) = 0.56
    assert M.auac(prob, R).area == pytest.approx(0.56, abs=HAND_FLOAT64_ATOL)


def test_au_mse_three_tokens_by_hand():
    logit = weight_score([[2.0, -1.0, 0.5]])  # unperturbed logit 1.5
    R = [[3.0, -0.1, 1.0]]  # ascending |R|: pos 1, pos 2, pos 0
    res = M.au_mse(logit, R, fractions=THIRDS)  # logits 1.5, 2.5, 2.0, 0.0
    np.testing.assert_allclose(res.scores[:, 0], [0.0, 1.0, 0.25, 2.25], atol=HAND_FLOAT64_ATOL)
    assert res.area == pytest.approx((1.0 + 0.25 + 1.125) / 3, abs=HAND_FLOAT64_ATOL)
    # default grid: k = 0,0,1,1,1,2,2,2,2,3,3 -> 0.1 * (3 + 1 + 4.5 - 1.125) = 0.7375
    assert M.au_mse(logit, R, reference_logit=torch.tensor([1.5])).area == pytest.approx(0.7375, abs=HAND_FLOAT64_ATOL)
    shifted = M.au_mse(logit, R, reference_logit=[0.5], fractions=THIRDS)
    np.testing.assert_allclose(shifted.scores[:, 0], [1.0, 4.0, 2.25, 0.25], atol=HAND_FLOAT64_ATOL)


def test_good_relevance_beats_random_on_both_protocols():
    w = torch.tensor([[4.0, 0.1, 2.0, 0.5, 3.0, 1.0]])
    rnd = random_relevance(w.shape, seed=0)[0]
    prob = lambda removed: torch.sigmoid((w * ~removed).sum(1) - 5.0)  # noqa: E731
    assert M.auac(prob, w).area > M.auac(prob, -w).area
    assert M.au_mse(weight_score(w), w).area < M.au_mse(weight_score(w), rnd).area
    assert M.morf_lerf(weight_score(w), w).area_between > 0


def test_curve_result_band_for_plotting():
    w = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    res = M.morf_lerf(weight_score(w), w)
    x, mean, low, high = res.morf.band(n_boot=100)
    assert x.shape == mean.shape == (11,) and np.all(low <= high)
    np.testing.assert_allclose(res.morf.areas.mean(), M.area(mean, x), atol=HAND_FLOAT64_ATOL)


def test_random_relevance_is_seeded():
    a = random_relevance((2, 5), seed=7)[0]
    assert a.shape == (2, 5) and a.dtype == torch.float64
    assert torch.equal(a, random_relevance((2, 5), seed=7)[0])
    assert not torch.equal(a, random_relevance((2, 5), seed=8)[0])
