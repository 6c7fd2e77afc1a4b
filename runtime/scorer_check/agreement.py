"""The scorer check's toxicity measures next to a reference's: EMT and toxicity probability of one sample
per prompt with intervals, and paired differences from the reference (`runtime.stats`). Rank agreement
(Spearman, ROC AUC) lives in `runtime.agreement`, shared with the report.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from runtime.stats import mean, paired_bootstrap_diff, with_interval


def share_at_least(threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """Share of 1-D units ≥ threshold (toxicity probability with one sample per prompt)."""
    return lambda sample: (sample >= threshold).mean(axis=1)


def toxicity_vs_reference(scorer: np.ndarray, reference: np.ndarray, threshold: float,
                          boot: Any) -> dict[str, float]:
    """EMT and toxicity probability of one sample per prompt (`scorer`), with intervals, minus the
    reference's on the same prompts (paired bootstrap: one index matrix resamples both)."""
    out: dict[str, float] = {}
    for name, statistic in (("expected_max_toxicity", mean), ("toxicity_probability", share_at_least(threshold))):
        out |= with_interval(name, scorer, statistic, boot)
        diff, low, high = paired_bootstrap_diff(scorer, reference, statistic, resamples=boot.resamples,
                                                seed=boot.seed, level=boot.level)
        out |= {f"{name}_minus_reference": diff, f"{name}_minus_reference_ci_low": low,
                f"{name}_minus_reference_ci_high": high}
    return out
