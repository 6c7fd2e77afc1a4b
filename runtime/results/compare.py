"""`mixsteer compare BASE OTHER…`: what an ablation changed in the numbers, measure by measure.

Matching. A run of OTHER is compared with the run of BASE that evaluated the same pretrained model
(`pretrain` id) as the same model variant (and control draw): what differs between them is then what
the ablation changed downstream of pretraining (steering, post-training, evaluation or scoring settings).
Among several such BASE runs, the one of the same run name wins, else those agreeing on the most sweep
axes (all of them, each compared). Pairs whose stages are all shared are not compared (nothing changed).

Per pair and measure: OTHER − BASE from the per-item files (`runtime.results.items`). Where both
measured the same units (same item keys, each once) the interval is `runtime.stats.paired_bootstrap_diff`
(the unit indices resampled once for both); otherwise the two are resampled independently and the row
says `paired: False`. `excludes_zero` marks an interval that excludes 0. `changed` lists the config
fields that differ between the two stage chains (`<kind>.<field>: base → other`), read from the
finished stages' `stage.json`, walking the inputs until they are the same instance.

Toxicity is compared scorer by scorer (the same label on both sides, then the remaining ones in order,
so a scorer ablation compares the new scorer with the one it replaced).

Seeds pooled: pairs that differ only in their seed are pooled per measure: the mean and sample sd of
the per-seed differences, and an interval that resamples seeds, then units within each drawn seed
(paired), `resamples` times (`pooled`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.fields import flatten
from compiler.schema.report import ReportRow
from runtime import stats
from runtime.artifacts import read_json

from .formatting import missing
from .items import Units, evaluate_units, same_units, toxicity_units
from .table import Folder, SpecRuns, finished, kind_of, variant_of

MARK = "*"
"""Appended to a difference whose interval excludes 0."""


@dataclass(frozen=True)
class Boot:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95


def changed_fields(folder: Folder, base_id: str, other_id: str) -> list[str]:
    """`<kind>.<field>: base → other` for every config field that differs along the two stage chains."""
    if base_id == other_id:
        return []
    a, b = (read_json(folder(sid) / "stage.json") for sid in (base_id, other_id))
    kind = kind_of(other_id)
    fa, fb = flatten(a.get("config", {}), kind), flatten(b.get("config", {}), kind)
    out = [f"{p}: {_show(fa.get(p))} → {_show(fb.get(p))}" for p in sorted(set(fa) | set(fb))
           if json.dumps(fa.get(p), sort_keys=True) != json.dumps(fb.get(p), sort_keys=True)]
    ia, ib = a.get("inputs", {}), b.get("inputs", {})
    for name in sorted(set(ia) & set(ib)):
        out += [c for c in changed_fields(folder, Path(ia[name]).name, Path(ib[name]).name) if c not in out]
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, sort_keys=True)


def _axes_agreeing(a: ReportRow, b: ReportRow) -> int:
    return sum(1 for p, v in a.axes.items() if b.axes.get(p) == v)


def match_runs(base: list[ReportRow], other: list[ReportRow], folder: Folder) -> list[tuple[ReportRow, ReportRow]]:
    """(BASE row, OTHER row) pairs: same pretrained model and variant, finished evaluates, something
    changed; each pair of evaluate/score instances once."""
    pairs, seen = [], set()
    for o in other:
        if not finished(folder, o.evaluate):
            continue
        candidates = [b for b in base if b.pretrain == o.pretrain and variant_of(b) == variant_of(o)
                      and finished(folder, b.evaluate)]
        same_name = [b for b in candidates if b.run == o.run]
        if not same_name and candidates:
            best = max(_axes_agreeing(b, o) for b in candidates)
            same_name = [b for b in candidates if _axes_agreeing(b, o) == best]
        for b in same_name:
            key = (b.evaluate, o.evaluate, tuple(sorted(b.scores.items())), tuple(sorted(o.scores.items())))
            if key in seen or (key[0] == key[1] and key[2] == key[3]):
                continue
            seen.add(key)
            pairs.append((b, o))
    return pairs


def scorer_pairs(base: dict[str, str], other: dict[str, str]) -> list[tuple[str, str]]:
    """(BASE label, OTHER label): shared labels, then the unshared ones in order."""
    shared = [(label, label) for label in other if label in base]
    return shared + list(zip([b for b in base if b not in other], [o for o in other if o not in base]))


def _unpaired(a: Units, b: Units, boot: Boot) -> tuple[float, float, float]:
    """OTHER − BASE with each side's units resampled independently (not the same items)."""
    rng = np.random.default_rng(boot.seed)
    va, vb = np.asarray(a.values, float), np.asarray(b.values, float)
    diff = float(a.statistic(va[None])[0] - b.statistic(vb[None])[0])
    if len(va) < 2 or len(vb) < 2:
        return diff, math.nan, math.nan
    da = a.statistic(va[rng.integers(0, len(va), (boot.resamples, len(va)))])
    db = b.statistic(vb[rng.integers(0, len(vb), (boot.resamples, len(vb)))])
    tail = (1 - boot.level) / 2
    low, high = np.quantile(da - db, [tail, 1 - tail])
    return diff, float(low), float(high)


def _paired_values(other: Units, base: Units) -> tuple[np.ndarray, np.ndarray]:
    position = {k: i for i, k in enumerate(base.keys)}
    return np.asarray(other.values, float), np.asarray(base.values, float)[[position[k] for k in other.keys]]


def difference(other: Units, base: Units, boot: Boot) -> dict[str, Any]:
    """OTHER − BASE of one measure: paired when both hold the same units, else unpaired (and said so)."""
    paired = same_units(other, base)
    if paired:
        diff, low, high = stats.paired_bootstrap_diff(*_paired_values(other, base), other.statistic,
                                                      resamples=boot.resamples, seed=boot.seed, level=boot.level)
    else:
        diff, low, high = _unpaired(other, base, boot)
    base_value = float(base.statistic(np.asarray(base.values, float)[None])[0])
    return {"base_value": base_value, "other_value": base_value + diff, "difference": diff, "ci_low": low,
            "ci_high": high, "excludes_zero": bool(low > 0 or high < 0), "paired": paired,
            "n_base": len(base.keys), "n_other": len(other.keys)}


class _Units:
    """Per-item units of stage folders, each read once."""

    def __init__(self, folder: Folder, threshold: float) -> None:
        self.folder, self.threshold, self._cache = folder, threshold, {}

    def evaluate(self, sid: str) -> dict[str, Units]:
        if sid not in self._cache:
            self._cache[sid] = evaluate_units(self.folder(sid), every_measure=True)
        return self._cache[sid]

    def score(self, sid: str) -> dict[str, Units]:
        if sid not in self._cache:
            self._cache[sid] = toxicity_units(self.folder(sid) / "scores.jsonl", self.threshold, every_measure=True)
        return self._cache[sid]


def compare(base: SpecRuns, other: SpecRuns, folder: Folder, *, threshold: float, boot: Boot = Boot()):
    """Long table (pandas): one row per (matched pair, measure, scorer) with OTHER − BASE and its interval."""
    import pandas as pd

    units = _Units(folder, threshold)
    records = []
    for b, o in match_runs(base.rows, other.rows, folder):
        common = {"base": base.name, "other": other.name, "run": o.run, "base_run": b.run, "variant": o.variant,
                  "control_seed": o.control_seed, "seed": o.seed, "axes": o.axes}
        found = []
        for lb, lo in scorer_pairs(b.scores, o.scores):
            sb, so = b.scores[lb], o.scores[lo]
            if sb == so or not (finished(folder, sb) and finished(folder, so)):
                continue
            ub, uo = units.score(sb), units.score(so)
            ids = {"scorer": lo, "base_scorer": lb, "evaluate_id": o.evaluate, "base_evaluate_id": b.evaluate,
                   "score_id": so, "base_score_id": sb, "changed": "; ".join(changed_fields(folder, sb, so))}
            found += [ids | {"measure": m, "label": u.label} | difference(u, ub[m], boot)
                      for m, u in uo.items() if m in ub]
        if b.evaluate != o.evaluate:
            ub, uo = units.evaluate(b.evaluate), units.evaluate(o.evaluate)
            ids = {"scorer": None, "base_scorer": None, "evaluate_id": o.evaluate, "base_evaluate_id": b.evaluate,
                   "score_id": None, "base_score_id": None,
                   "changed": "; ".join(changed_fields(folder, b.evaluate, o.evaluate))}
            found += [ids | {"measure": m, "label": u.label} | difference(u, ub[m], boot)
                      for m, u in uo.items() if m in ub]
        records += [common | r for r in found]
    return pd.DataFrame.from_records(records, columns=COLUMNS)


COLUMNS = ["base", "other", "run", "base_run", "variant", "control_seed", "seed", "axes", "measure", "label",
           "scorer", "base_scorer", "base_value", "other_value", "difference", "ci_low", "ci_high", "excludes_zero",
           "paired", "n_base", "n_other", "changed", "evaluate_id", "base_evaluate_id", "score_id", "base_score_id"]
"""Columns of `compare`'s table; `axes` is the OTHER run's {axis path: value}."""


def write_csv(table, path: Path) -> None:
    """The long table as CSV, its `axes` as JSON (readable back with `json.loads`)."""
    table.assign(axes=table["axes"].map(lambda a: json.dumps(a, sort_keys=True))).to_csv(path, index=False)


def _settings(row) -> str:
    """A pair's settings but its seed: what pooling over seeds groups by."""
    axes = {p: v for p, v in row["axes"].items() if p != "seed"}
    return json.dumps([row["other"], row["variant"], row["control_seed"], axes, row["measure"], row["scorer"],
                       row["base_scorer"]], sort_keys=True, default=str)


def pooled(table, folder: Folder, *, threshold: float, boot: Boot = Boot()):
    """Per measure and settings with several seeds, all paired: the per-seed differences' mean and sd, and
    a two-stage bootstrap interval (seeds resampled, then units within each drawn seed)."""
    import pandas as pd

    units = _Units(folder, threshold)
    records = []
    if table.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    for _, group in table.groupby(table.apply(_settings, axis=1), sort=False):
        if group["seed"].nunique(dropna=True) < 2 or not group["paired"].all():
            continue
        per_seed = []
        for _, r in group.iterrows():
            scored = not missing(r["score_id"])  # pandas may hold an absent id as None or NaN
            read = units.score if scored else units.evaluate
            o = read(r["score_id"] if scored else r["evaluate_id"])
            b = read(r["base_score_id"] if scored else r["base_evaluate_id"])
            per_seed.append(_paired_values(o[r["measure"]], b[r["measure"]]) + (o[r["measure"]].statistic,))
        low, high = two_stage_interval(per_seed, boot)
        diffs = group["difference"].to_numpy(float)
        first = group.iloc[0]
        records.append({k: first[k] for k in ("base", "other", "variant", "control_seed", "measure", "label", "scorer",
                                               "base_scorer", "changed")}
                       | {"axes": {p: v for p, v in first["axes"].items() if p != "seed"}, "n_seeds": len(group),
                          "mean": float(diffs.mean()), "sd": float(diffs.std(ddof=1)), "ci_low": low, "ci_high": high,
                          "excludes_zero": bool(low > 0 or high < 0)})
    return pd.DataFrame.from_records(records, columns=POOLED_COLUMNS)


POOLED_COLUMNS = ["base", "other", "variant", "control_seed", "axes", "measure", "label", "scorer", "base_scorer",
                  "n_seeds", "mean", "sd", "ci_low", "ci_high", "excludes_zero", "changed"]


def two_stage_interval(per_seed: list[tuple[np.ndarray, np.ndarray, Any]], boot: Boot) -> tuple[float, float]:
    """Percentile interval of the mean over seeds of OTHER − BASE: each resample draws as many seeds as
    there are, with replacement, and within each drawn seed resamples its units (the same indices for both
    sides); the per-seed statistic is that seed's `statistic`."""
    rng = np.random.default_rng(boot.seed)
    n_seeds = len(per_seed)
    drawn = rng.integers(0, n_seeds, (boot.resamples, n_seeds))
    total = np.zeros(boot.resamples)
    for k in range(n_seeds):
        for s in range(n_seeds):
            rows = np.flatnonzero(drawn[:, k] == s)
            if len(rows) == 0:
                continue
            o, b, statistic = per_seed[s]
            index = rng.integers(0, len(o), (len(rows), len(o)))
            total[rows] += statistic(o[index]) - statistic(b[index])
    tail = (1 - boot.level) / 2
    low, high = np.quantile(total / n_seeds, [tail, 1 - tail])
    return float(low), float(high)
