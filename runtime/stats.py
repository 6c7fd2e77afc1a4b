"""Seeded percentile bootstrap over evaluation units (prompts, questions, examples, documents).

Every evaluation number is a statistic of independent units: a prompt with all its samples, an MMLU
question, a detection example, a held-out document. Resampling whole units (never the samples inside one)
gives the interval that matches how the data were drawn. Two models scored on the SAME units are compared
by resampling the unit indices once for both (`paired_bootstrap_diff`): the shared item difficulty cancels,
so the interval of the difference is narrower than two independent intervals suggest.

A `statistic` maps resampled units of shape `(R, n, *unit_shape)` to `R` values (one per resample); it is
also called once on the original units as `(1, n, *unit_shape)`. `mean`, `ratio_of_sums` and
`balanced_accuracy` cover the evaluate stage. The index matrix is drawn once from `seed` and consumed in
blocks, so results do not depend on memory limits.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]

BLOCK_ELEMENTS = 1 << 24
"""Resampled values held at once (~128 MB of float64); larger jobs run in blocks of resamples."""


def mean(sample: np.ndarray) -> np.ndarray:
    """Mean of 1-D units (accuracy of 0/1 correctness, EMT of per-prompt maxima, …)."""
    return sample.mean(axis=1)


def ratio_of_sums(sample: np.ndarray) -> np.ndarray:
    """Σ numerator / Σ denominator over units `(numerator, denominator)`: token-weighted CE and KL."""
    sums = sample.sum(axis=1)
    return sums[:, 0] / sums[:, 1]


def balanced_accuracy(sample: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present, from units `(label ∈ {0,1}, correct ∈ {0,1})`; a resample
    holding a single class scores that class's recall alone (as sklearn's balanced accuracy would)."""
    label, correct = sample[..., 0], sample[..., 1]
    recalls, present = [], []
    for cls in (0, 1):
        members = (label == cls).sum(axis=1)
        hits = ((label == cls) & (correct == 1)).sum(axis=1)
        present.append(members > 0)
        recalls.append(np.divide(hits, members, out=np.zeros(len(members)), where=members > 0))
    return (recalls[0] + recalls[1]) / (present[0].astype(float) + present[1])


def _units(values: np.ndarray | list) -> np.ndarray:
    units = np.asarray(values, dtype=float)
    if units.ndim == 0 or len(units) == 0:
        raise ValueError("bootstrap needs at least one unit")
    return units


def _index_matrix(n: int, resamples: int, seed: int) -> np.ndarray:
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _resampled(units: np.ndarray, index: np.ndarray, statistic: Statistic) -> np.ndarray:
    per_resample = max(1, units[0].size * units.shape[0])
    block = max(1, BLOCK_ELEMENTS // per_resample)
    return np.concatenate([np.asarray(statistic(units[index[i:i + block]]), dtype=float)
                           for i in range(0, len(index), block)])


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ci(values_or_units, statistic: Statistic = mean, *, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `statistic` over units resampled with replacement.

    One unit has no sampling spread to resample: the interval is `(nan, nan)`, never a zero-width interval
    that would claim certainty. Constant units give the zero-width interval they deserve.
    """
    units = _units(values_or_units)
    if len(units) == 1:
        return math.nan, math.nan
    return _percentiles(_resampled(units, _index_matrix(len(units), resamples, seed), statistic), level)


def paired_bootstrap_diff(a, b, statistic: Statistic = mean, *, resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float, float]:
    """`statistic(a) - statistic(b)` and its percentile interval, for two models scored on the same units
    (row i of `a` and of `b` is the same prompt / question / example / document): one index matrix
    resamples both. One unit gives `(diff, nan, nan)`."""
    ua, ub = _units(a), _units(b)
    if ua.shape != ub.shape:
        raise ValueError(f"paired units differ in shape: {ua.shape} vs {ub.shape}")
    diff = float(statistic(ua[None])[0] - statistic(ub[None])[0])
    if len(ua) == 1:
        return diff, math.nan, math.nan
    index = _index_matrix(len(ua), resamples, seed)
    low, high = _percentiles(_resampled(ua, index, statistic) - _resampled(ub, index, statistic), level)
    return diff, low, high


def with_interval(name: str, units: Any, statistic: Statistic, boot: Any) -> dict[str, float]:
    """`name`, `name_ci_low`, `name_ci_high`: the statistic of the units and its `bootstrap_ci` (`boot`: any
    object with `resamples`, `seed` and `level`, e.g. the spec's `evaluate.bootstrap`)."""
    units = np.asarray(units, dtype=float)
    low, high = bootstrap_ci(units, statistic, resamples=boot.resamples, seed=boot.seed, level=boot.level)
    return {name: float(statistic(units[None])[0]), f"{name}_ci_low": low, f"{name}_ci_high": high}
