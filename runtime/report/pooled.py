"""Headline differences pooled over seeds.

One seed's paired difference (a variant − its base, or a share's base − the smallest share's) says how
that pretraining run came out; a spec that sweeps seeds asks whether the effect survives the seed. For
each setting measured under two or more seeds, the pooled difference is the mean of the per-seed paired
differences, with their sd, and an interval that resamples seeds and then the items within each drawn
seed, the same indices for both models (`runtime.results.compare.two_stage_interval`, which
`mixsteer compare` uses too). `paired.md` and `conclusions.md` show these rows after the per-seed ones,
and the conclusions' verdicts for swept seeds are taken on them.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from runtime.results.compare import Boot, two_stage_interval
from runtime.results.formatting import missing
from runtime.results.items import Units, aligned

PER_SEED = ("seed", "evaluate_id", "reference_evaluate_id", "score_id", "reference_score_id", "n_units", "difference",
            "ci_low", "ci_high", "excludes_zero", "holds_under_all_scorers", "verdict")
"""Columns that differ between the seeds of one setting (or are computed per row): not part of the key."""
IDS = ("evaluate_id", "reference_evaluate_id", "score_id", "reference_score_id")
"""A pooled row names the stages of all its seeds, `;`-joined (as `mixsteer results` does)."""
UnitsOf = Callable[[Any], tuple[Units, Units]]
"""A per-seed row → (model's units, reference's units) of its measure."""


def _key(row, columns: list[str]) -> str:
    return json.dumps([None if missing(row[c]) else row[c] for c in columns], default=str)


def pool(df, units_of: UnitsOf, boot: Boot):
    """One row per setting with ≥ 2 distinct seeds: the setting's columns, its seeds' stage ids joined,
    `n_seeds`, `seeds`, `difference` (mean over seeds), `sd`, `ci_low`, `ci_high`, `excludes_zero`, `n_units`
    (summed over seeds). Empty when no setting has two seeds."""
    import pandas as pd

    if df.empty or "seed" not in df or df["seed"].nunique(dropna=True) < 2:
        return pd.DataFrame()
    columns = [c for c in df.columns if c not in PER_SEED]
    records = []
    for _, group in df.groupby(df.apply(lambda r: _key(r, columns), axis=1), sort=False):
        group = group[group["seed"].notna()]
        if group["seed"].nunique() < 2:
            continue
        per_seed = []
        for _, row in group.iterrows():
            a, b = units_of(row)
            per_seed.append((*aligned(a, b, f"{row['measure']} of {row['evaluate_id']}"), a.statistic))
        low, high = two_stage_interval(per_seed, boot)
        diffs = group["difference"].to_numpy(float)
        ids = {c: ";".join(dict.fromkeys(group[c].dropna())) for c in IDS if c in group}
        records.append({c: group.iloc[0][c] for c in columns} | ids
                       | {"n_seeds": len(group), "seeds": ", ".join(f"{s:g}" for s in sorted(group["seed"])),
                          "difference": float(diffs.mean()), "sd": float(diffs.std(ddof=1)), "ci_low": low,
                          "ci_high": high, "excludes_zero": bool(low > 0 or high < 0),
                          "n_units": int(group["n_units"].sum())})
    return pd.DataFrame.from_records(records)
