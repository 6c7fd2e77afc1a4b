"""Pooling paired differences over seeds (`runtime.results.compare.two_stage_interval`) and the help and
usage errors of `mixsteer results` / `mixsteer compare` (their runs on real stage folders:
tests/stages/test_results.py)."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.cli import main
from runtime import stats
from runtime.results.compare import Boot, two_stage_interval


def _seeds(effects: list[float], n: int = 60, noise: float = 0.2) -> list[tuple[np.ndarray, np.ndarray, object]]:
    """Per seed: (OTHER units, BASE units on the same items, statistic), OTHER = BASE + the seed's effect."""
    rng = np.random.default_rng(5)
    out = []
    for effect in effects:
        base = rng.normal(0.4, noise, n)
        out.append((base + effect + rng.normal(0, 0.05, n), base, stats.mean))
    return out


def _direct(per_seed, resamples: int, seed: int) -> tuple[float, float]:
    """The two-stage bootstrap written as a plain loop: draw seeds, then items within each drawn seed."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        diffs = []
        for s in rng.integers(0, len(per_seed), len(per_seed)):
            other, base, _ = per_seed[s]
            i = rng.integers(0, len(other), len(other))
            diffs.append(other[i].mean() - base[i].mean())
        means.append(np.mean(diffs))
    return tuple(np.quantile(means, [0.025, 0.975]))


def test_two_stage_interval_equals_a_plain_loop_up_to_resampling_noise():
    per_seed = _seeds([0.10, 0.14, 0.06])
    low, high = two_stage_interval(per_seed, Boot(resamples=4000, seed=1))
    assert (low, high) == pytest.approx(_direct(per_seed, 4000, 2), abs=0.01)


def test_seeds_that_disagree_widen_the_pooled_interval_beyond_the_items():
    per_seed = _seeds([0.3, 0.0, -0.3], noise=0.01)
    low, high = two_stage_interval(per_seed, Boot(resamples=2000))
    within = [stats.paired_bootstrap_diff(o, b, resamples=2000)[1:] for o, b, _ in per_seed]
    assert max(h - l for l, h in within) < 0.05 and high - low > 0.3  # seed-to-seed spread dominates
    assert low < 0 < high


def test_one_seed_pooled_is_that_seeds_paired_interval_in_distribution():
    (other, base, statistic), = _seeds([0.2])
    low, high = two_stage_interval([(other, base, statistic)], Boot(resamples=4000, seed=3))
    _, plow, phigh = stats.paired_bootstrap_diff(other, base, resamples=4000, seed=4)
    assert (low, high) == pytest.approx((plow, phigh), abs=0.01)


@pytest.mark.parametrize("command", ["results", "compare"])
def test_help_exits_0_and_documents_the_exit_status(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Exit status: 0" in " ".join(out.split()) and "2 on a spec problem" in " ".join(out.split())


def test_usage_errors_exit_2(capsys):
    for argv in (["compare", "only_base.yaml"], ["results"], ["results", "a.yaml", "--format", "xlsx"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "OTHER" in capsys.readouterr().err
