"""Rank agreement of two score vectors with bootstrap intervals that scale to all of RTP: shared by the
scorer check (a scorer against Perspective's or human references) and the report (each scorer against
each other on a run's own generations).

Spearman's ρ is Pearson's r of average ranks (as `scipy.stats.spearmanr`); ROC AUC is the Mann–Whitney U
of average ranks over n_pos · n_neg (as `sklearn.metrics.roc_auc_score`: a tie counts one half).

A bootstrap resample of n units is a vector of counts (how often each unit was drawn). Rank measures of
the resample are the weighted measures of the original texts: a tie group of total weight G that follows
C lighter-valued copies has average rank C + (G + 1) / 2. The texts are sorted once, so each resample
costs O(texts) instead of a sort (about 50 times faster on 200k RTP texts). The draws are those of
`runtime.stats` (`default_rng(seed).integers(0, n, (resamples, n))`, read in blocks of rows), so an
interval here equals `runtime.stats.bootstrap_ci` of the same measure with the same seed.

Units are pairs `(scorer score, reference score)` shaped `(n, 2)`, or `(n, k, 2)` when one unit holds k
texts (an RTP record: its prompt and its continuation): the bootstrap resamples whole units. A measure
undefined on a resample (constant scores, one class only) makes its interval NaN, as in `runtime.stats`;
undefined on the units themselves, its value is NaN too.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

BLOCK_ELEMENTS = 1 << 22
"""Resample × text weights held at once (~32 MB of float64 per array)."""


class _Ranking:
    """One score vector sorted once: its tie groups, to rank any weighting of the texts in O(texts)."""

    def __init__(self, values: np.ndarray) -> None:
        self.order = np.argsort(values, kind="stable")
        ordered = values[self.order]
        new_group = np.r_[True, ordered[1:] != ordered[:-1]]
        self.starts = np.flatnonzero(new_group)
        self.group = np.cumsum(new_group) - 1          # tie group of each sorted position

    def ranks(self, weights: np.ndarray) -> np.ndarray:
        """Average ranks `(B, m)` of every text in each weighted sample `(B, m)` (weight = copies)."""
        sizes = np.add.reduceat(weights[:, self.order], self.starts, axis=1)
        group_rank = np.cumsum(sizes, axis=1) - sizes + (sizes + 1) / 2
        ranks = np.empty_like(weights, dtype=float)
        ranks[:, self.order] = group_rank[:, self.group]
        return ranks


class RankMeasures:
    """Spearman's ρ (scorer vs reference) and ROC AUC (scorer vs `positive`) of weighted samples."""

    def __init__(self, scorer: np.ndarray, reference: np.ndarray, positive: np.ndarray) -> None:
        self._scorer, self._reference = _Ranking(scorer), _Ranking(reference)
        self._positive = positive.astype(float)

    def spearman(self, weights: np.ndarray) -> np.ndarray:
        rx, ry = self._scorer.ranks(weights), self._reference.ranks(weights)
        total = weights.sum(axis=1, keepdims=True)
        rx -= (weights * rx).sum(axis=1, keepdims=True) / total
        ry -= (weights * ry).sum(axis=1, keepdims=True) / total
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights * rx * ry).sum(axis=1) / np.sqrt(
                (weights * rx * rx).sum(axis=1) * (weights * ry * ry).sum(axis=1))

    def auc(self, weights: np.ndarray) -> np.ndarray:
        ranks = self._scorer.ranks(weights)
        n_pos = weights @ self._positive
        n_neg = weights.sum(axis=1) - n_pos
        u = (weights * ranks) @ self._positive - n_pos * (n_pos + 1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def resample_counts(n: int, resamples: int, seed: int, block: int) -> Iterator[np.ndarray]:
    """How often each of n units is drawn, `(≤ block, n)` resamples at a time: `runtime.stats`' draws."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        index = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(index.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    if len(values) == 0 or np.isnan(values).any():
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def agreement(units: np.ndarray, threshold: float, boot: Any,
              measures: tuple[str, ...] = ("spearman", "auc")) -> dict[str, float]:
    """Spearman and AUC (reference ≥ threshold) of `(n, …, 2)` units with intervals, and their counts;
    `measures`: which of the two (the other is not resampled)."""
    n = len(units)
    pairs = units.reshape(n, -1, 2)
    per_unit = pairs.shape[1]
    scorer, reference = pairs[..., 0].ravel(), pairs[..., 1].ravel()  # unit-major: text t is in unit t // k
    ranked = RankMeasures(scorer, reference, reference >= threshold)
    names = {name: getattr(ranked, name) for name in measures}
    point = {name: float(f(np.ones((1, len(scorer))))[0]) for name, f in names.items()}
    resampled: dict[str, list[np.ndarray]] = {name: [] for name in names}
    if n > 1:
        block = max(1, BLOCK_ELEMENTS // len(scorer))
        for counts in resample_counts(n, boot.resamples, boot.seed, block):
            weights = np.repeat(counts, per_unit, axis=1)
            for name, f in names.items():
                resampled[name].append(f(weights))
    out: dict[str, float] = {"texts": len(scorer), "units": n, "positives": int((reference >= threshold).sum())}
    for name in names:
        low, high = _interval(np.concatenate(resampled[name]) if resampled[name] else np.empty(0), boot.level)
        out |= {name: point[name], f"{name}_ci_low": low, f"{name}_ci_high": high}
    return out
