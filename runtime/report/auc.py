"""Does the evaluation scorer measure the concept the probe was trained on?

The probe learns the labels of its labelled texts; the evaluation measures toxicity with a scorer. If the
scorer cannot tell the probe's toxic texts from its non-toxic ones, steering along the probe's direction
need not move measured toxicity at all. The report scores the probe's labelled texts (read exactly as the
activations stage reads them, `runtime.sources.labelled.load_examples`) with each evaluation scorer (the
primary first) through the shared score cache (`runtime.scoring.texts`, the path every stage that scores
takes) and reports the ROC AUC of score against label, with a percentile bootstrap interval over texts
(`runtime.stats.bootstrap_ci`): with several scorers, a reader sees which of them measures the probe's
concept.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.schema.probe import LabelledData
from runtime import stats
from runtime.stage import StageContext

READINGS = ((0.8, "the scorer measures the concept the probe was trained on"),
            (0.6, "the scorer sees the probe's concept only partly"),
            (0.4, "the scorer does not see what the probe learned: steering along the probe direction need not "
                  "move measured toxicity"),
            (-math.inf, "the scorer ranks the probe's toxic texts as less toxic: the two measure opposite things"))
"""(lowest AUC, reading) from the highest band down."""


def rank_auc(sample: np.ndarray) -> np.ndarray:
    """ROC AUC per resample from units `(label ∈ {0,1}, score)` of shape (R, n, 2): the Mann–Whitney
    statistic with tied scores counted half; NaN for a resample holding a single class."""
    from scipy.stats import rankdata

    label, score = sample[..., 0] == 1, sample[..., 1]
    ranks = rankdata(score, axis=-1)
    n_pos = label.sum(axis=-1)
    n_neg = label.shape[-1] - n_pos
    u = (ranks * label).sum(axis=-1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def reading(auc: float) -> str:
    """One sentence on what an AUC of the scorer against the probe labels means."""
    return next(text for low, text in READINGS if auc >= low)


def scorer_label_auc(scorer_spec: Any, data: LabelledData, ctx: StageContext, *, resamples: int, seed: int,
                     level: float) -> dict[str, Any]:
    """Score the probe's labelled texts with one evaluation scorer; AUC of score vs label with its interval."""
    return scorers_label_auc([scorer_spec], data, ctx, resamples=resamples, seed=seed, level=level)[0]


def scorers_label_auc(scorer_specs: list[Any], data: LabelledData, ctx: StageContext, *, resamples: int, seed: int,
                      level: float) -> list[dict[str, Any]]:
    """`scorer_label_auc` of each scorer, in order, the labelled texts read once."""
    from runtime.scoring.texts import score_texts
    from runtime.sources import describe
    from runtime.sources.labelled import load_examples

    examples = load_examples(data, ctx)
    texts, labels = [e["text"] for e in examples], [e["label"] for e in examples]
    out = []
    for spec in scorer_specs:
        units = np.column_stack([labels, score_texts(spec, texts, ctx)[0]]).astype(float)
        auc = float(rank_auc(units[None])[0])
        low, high = stats.bootstrap_ci(units, rank_auc, resamples=resamples, seed=seed, level=level)
        out.append({
            "auc": auc, "ci_low": low, "ci_high": high, "level": level, "n_examples": len(examples),
            "n_toxic": int(units[:, 0].sum()), "scorer": spec.kind, "label": spec.label,
            "data": describe(data.source),
            "reading": "undefined: the labelled texts hold a single class" if math.isnan(auc) else reading(auc),
        })
    return out
