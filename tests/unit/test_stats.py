"""The seeded bootstrap: coverage on known distributions, determinism, pairing, degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime import stats


@pytest.mark.parametrize("draw, true_mean", [
    (lambda rng: rng.normal(1.0, 2.0, size=60), 1.0),
    (lambda rng: rng.binomial(1, 0.3, size=80).astype(float), 0.3),
])
def test_interval_covers_the_true_mean_about_95_percent_of_the_time(draw, true_mean):
    trials = 200
    hits = 0
    for t in range(trials):
        low, high = stats.bootstrap_ci(draw(np.random.default_rng(1000 + t)), stats.mean, resamples=400, seed=t)
        hits += low <= true_mean <= high
    # Percentile intervals undercover slightly at n ≈ 60-80; binomial sd of the rate over 200 trials ≈ 0.015.
    assert 0.89 <= hits / trials <= 0.99


def test_interval_brackets_the_estimate_and_narrows_with_more_units():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=30), rng.normal(size=3000)
    lo_s, hi_s = stats.bootstrap_ci(small, resamples=500, seed=0)
    lo_l, hi_l = stats.bootstrap_ci(large, resamples=500, seed=0)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ∝ 1/√n: 10× more precise


def test_same_seed_same_interval_other_seed_other_interval():
    x = np.random.default_rng(3).normal(size=50)
    a = stats.bootstrap_ci(x, resamples=300, seed=7)
    assert stats.bootstrap_ci(x, resamples=300, seed=7) == a
    assert stats.bootstrap_ci(x, resamples=300, seed=8) != a


def test_blocks_of_resamples_do_not_change_the_result(monkeypatch):
    units = np.random.default_rng(4).normal(size=(40, 2)) + 3
    whole = stats.bootstrap_ci(units, stats.ratio_of_sums, resamples=250, seed=1)
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 7)
    assert stats.bootstrap_ci(units, stats.ratio_of_sums, resamples=250, seed=1) == whole


def test_paired_interval_is_narrower_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(5)
    difficulty = rng.normal(size=200)
    a = difficulty + rng.normal(scale=0.2, size=200)
    b = difficulty + 0.1 + rng.normal(scale=0.2, size=200)
    diff, low, high = stats.paired_bootstrap_diff(a, b, resamples=1000, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low <= diff <= high
    la, ha = stats.bootstrap_ci(a, resamples=1000, seed=0)
    lb, hb = stats.bootstrap_ci(b, resamples=1000, seed=1)
    unpaired_half_width = math.hypot((ha - la) / 2, (hb - lb) / 2)
    assert (high - low) / 2 < unpaired_half_width / 3
    assert high < 0  # the shared difficulty cancels: b's +0.1 shift is resolved


def test_ratio_of_sums_and_balanced_accuracy_statistics():
    docs = np.array([[10.0, 5.0], [2.0, 1.0], [9.0, 3.0]])
    assert stats.ratio_of_sums(docs[None])[0] == pytest.approx(21 / 9)
    # labels 1,1,0,0,0 ; correct 1,0,1,1,0 → recalls 1/2 and 2/3
    units = np.array([[1, 1], [1, 0], [0, 1], [0, 1], [0, 0]], dtype=float)
    assert stats.balanced_accuracy(units[None])[0] == pytest.approx((0.5 + 2 / 3) / 2)
    only_toxic = units[:2]
    assert stats.balanced_accuracy(only_toxic[None])[0] == pytest.approx(0.5)  # the class present alone


def test_degenerate_inputs():
    assert stats.bootstrap_ci(np.full(20, 0.7), resamples=100) == pytest.approx((0.7, 0.7))
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.4], resamples=100))
    diff, low, high = stats.paired_bootstrap_diff([0.5], [0.2], resamples=100)
    assert diff == pytest.approx(0.3) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="at least one unit"):
        stats.bootstrap_ci([], resamples=10)
    with pytest.raises(ValueError, match="shape"):
        stats.paired_bootstrap_diff([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1.0, 2.0], level=1.5)
