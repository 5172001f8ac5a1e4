"""layerwise.stats on constructed data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layerwise.config import LayerwiseError
from layerwise.stats import (
    above_chance_pvalue,
    bootstrap_aggregates,
    bootstrap_indices,
    difference_interval,
    paired_bootstrap,
    paired_retention,
    percentile_interval,
    retention_ratio,
    seed_item_interval,
    two_level_bootstrap,
    wilson_interval,
)


def test_wilson_interval_known_value_matches_scipy_and_edges():
    from scipy.stats import binomtest

    # 5 of 10: p = 0.5, centre 0.5, half-width z sqrt(0.025 + z^2/400) / (1 + z^2/10)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    for k, n in [(0, 10), (3, 10), (10, 10), (1, 1), (40, 64), (47, 64)]:
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    # the bounds hold the proportion exactly (n = 200 at p = 1 rounds to 0.9999999999999999 unclamped),
    # so error bars built as p - lo and hi - p are never negative
    for n in range(1, 400):
        for k in (0, n // 3, n):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi
    with pytest.raises(LayerwiseError, match="n >= 1"):
        wilson_interval(0, 0)


def test_above_chance_pvalue_is_the_one_sided_binomial_tail():
    assert above_chance_pvalue([1.0] * 10, 0.5) == pytest.approx(0.5 ** 10)  # P(X >= 10 | n=10, p=0.5)
    # 8 of 10 at chance 0.5: P(X >= 8) = (45 + 10 + 1) / 1024
    assert above_chance_pvalue([1.0] * 8 + [0.0] * 2, 0.5) == pytest.approx(56 / 1024)
    assert above_chance_pvalue([0.0] * 10, 0.5) == pytest.approx(1.0)
    assert math.isnan(above_chance_pvalue([0.5, 1.0], 0.5))  # not 0/1 scores
    assert math.isnan(above_chance_pvalue([1.0, 0.0], None))  # no chance level (a loss)
    assert math.isnan(above_chance_pvalue([], 0.5))


def test_bootstrap_interval_covers_the_mean_and_pairing_narrows_it():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, size=400)
    v, (lo, hi) = paired_bootstrap(np.mean, x, n_boot=500)
    assert v == pytest.approx(x.mean()) and lo < 3.0 < hi and lo < v < hi
    assert hi - lo == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.25)  # ~ the normal-theory width
    # paired: b is a plus a precise shift, so the difference is known almost exactly
    a = rng.normal(1.0, 0.1, size=(200, 3))
    b = a - 0.5 + rng.normal(0, 0.01, size=(200, 3))
    v, (lo, hi) = paired_bootstrap(lambda p, q: (p - q).mean(), a, b, n_boot=300)
    assert lo < v < hi and hi - lo < 0.01 and v == pytest.approx(0.5, abs=0.01)
    _, (lo_u, hi_u) = paired_bootstrap(lambda p, q: p.mean() - q.mean(), a, b, n_boot=300, paired=False)
    assert hi_u - lo_u > hi - lo  # unpaired ignores the pairing: wider
    with pytest.raises(LayerwiseError, match="same input_ids"):
        paired_bootstrap(lambda p, q: 0.0, a, b[:10])
    # the same seed gives the same interval
    assert paired_bootstrap(np.mean, x, n_boot=200, seed=3) == paired_bootstrap(np.mean, x, n_boot=200, seed=3)


def test_two_level_bootstrap_constant_effect_and_hand_value():
    rng = np.random.default_rng(1)
    control = rng.normal(0.2, 0.05, size=(4, 12))  # [draws, prompts]
    treated = control.mean(0) + 0.3  # exactly 0.3 above the mean control of every prompt
    diff, (lo, hi) = two_level_bootstrap(treated, control, n_boot=300)
    assert diff == pytest.approx(0.3)
    assert lo <= diff <= hi and lo > 0.2 and hi < 0.4
    same = np.tile(np.arange(5.0), (3, 1))  # every draw equal: the only spread is over prompts
    diff, ci = two_level_bootstrap(same[0] + 1.0, same, n_boot=200)
    assert diff == pytest.approx(1.0) and ci == pytest.approx((1.0, 1.0))
    with pytest.raises(LayerwiseError, match=r"\[D, P\]"):
        two_level_bootstrap(np.zeros(3), np.zeros((2, 4)))


def test_retention_ratio_direction_and_zero_baseline():
    assert float(retention_ratio(0.45, 0.5, True)) == pytest.approx(0.9)
    assert float(retention_ratio(2.0, 1.8, False)) == pytest.approx(0.9)  # a loss that grew: base / value
    assert math.isnan(float(retention_ratio(0.3, 0.0, True)))
    np.testing.assert_allclose(retention_ratio(np.array([1.0, 2.0]), np.array([2.0, 2.0]), True), [0.5, 1.0])


def _mean(xs):
    return sum(xs) / len(xs)


_mean.__name__ = "mean"


def test_paired_retention_of_a_scaled_run_is_exact():
    base = [0.2, 0.4, 0.6, 0.8, 1.0, 0.5]
    run = [0.9 * x for x in base]  # every item keeps 90%: every resample's ratio is 0.9
    idx = bootstrap_indices(len(base), 200, seed=0)
    assert idx.shape == (200, 6) and idx.min() >= 0 and idx.max() < 6
    assert paired_retention(_mean, base, run, idx, higher_is_better=True) == pytest.approx((0.9, 0.9))
    assert paired_retention(_mean, base, base, idx, higher_is_better=True) == pytest.approx((1.0, 1.0))
    assert all(math.isnan(v) for v in paired_retention(_mean, [], [], bootstrap_indices(0, 10),
                                                       higher_is_better=True))


def test_bootstrap_aggregates_match_lm_eval_formulas():
    pairs = [(-10.0, 5.0), (-30.0, 10.0), (-8.0, 4.0)]  # (loglikelihood, bytes)
    idx = np.array([[0, 1, 2], [1, 1, 1]])

    def bits_per_byte(_):  # only the name matters: the vectorised formula is used
        raise AssertionError

    out = bootstrap_aggregates(bits_per_byte, pairs, idx)
    assert out[0] == pytest.approx(48 / 19 / math.log(2)) and out[1] == pytest.approx(3 / math.log(2))
    assert bootstrap_aggregates(_mean, [1.0, 0.0, 1.0], idx) == pytest.approx([2 / 3, 0.0])

    def median(xs):  # any other aggregation is called on the resampled items
        return float(np.median(xs))

    assert bootstrap_aggregates(median, [1.0, 5.0, 3.0], idx) == pytest.approx([3.0, 5.0])


def test_difference_interval_in_quadrature_and_percentile_interval():
    diff, (lo, hi) = difference_interval(-1.0, (-2.0, 0.0), -10.0, (-13.0, -7.0))
    assert diff == pytest.approx(9.0)
    assert (lo, hi) == pytest.approx((9 - math.sqrt(10), 9 + math.sqrt(10)))  # hypot(1, 3)
    assert percentile_interval([1.0, np.nan, 1.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in percentile_interval([np.nan]))
    assert percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))


def test_seed_item_interval_combines_seed_spread_and_item_variance():
    from scipy import stats as st

    one = seed_item_interval([0.7], [(0.6, 0.8)])  # one seed: the item interval, flagged
    assert one.value == 0.7 and one.interval == (0.6, 0.8) and one.n_seeds == 1
    assert "not measured" in one.note and math.isnan(one.seed_sd)
    same = seed_item_interval([0.7, 0.7, 0.7], [(0.6, 0.8)] * 3)  # no seed spread: the item interval
    assert same.interval == pytest.approx((0.6, 0.8))
    values = [0.55, 0.7, 0.9, 0.62]
    exact = seed_item_interval(values, [(v, v) for v in values])  # no item noise: the t-interval of the mean
    assert exact.interval == pytest.approx(st.t.interval(0.95, 3, loc=np.mean(values), scale=st.sem(values)))
    assert exact.seed_sd == pytest.approx(np.std(values, ddof=1)) and exact.seed_values == tuple(values)
    both = seed_item_interval(values, [(v - 0.1, v + 0.1) for v in values])  # wider than either source alone
    assert both.interval[1] - both.interval[0] > max(exact.interval[1] - exact.interval[0], 0.2)
    with pytest.raises(LayerwiseError, match="one interval per seed"):
        seed_item_interval([0.1, 0.2], [(0.0, 0.3)])
    with pytest.raises(LayerwiseError, match="missing"):
        seed_item_interval([0.1, float("nan")], [(0.0, 0.3), (0.0, 0.3)])
