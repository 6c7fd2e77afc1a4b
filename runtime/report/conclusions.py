"""Does each headline toxicity conclusion hold under every scorer?

A difference measured with one classifier may be that classifier's quirk (its training data, its
threshold, what it counts as toxic). With several scorers (`evaluate.scorers`, the first the headline),
each headline paired difference is shown under every scorer side by side and marked: it holds under all
of them when every scorer's difference has the headline scorer's sign and every interval excludes 0.

Rows, one per comparison and headline measure (expected maximum toxicity and toxicity probability of each
prompt set), all paired over the same prompts (`runtime.report.paired.difference`):
- toxicity vs share: each base model minus the base model at the smallest toxic share with the same seed
  and other axes (every base model is evaluated on the same prompt sets);
- every detoxified variant minus its run's base model (the toxicity rows of `paired.compare`).

When the spec sweeps seeds, each comparison measured under two or more seeds also gets a row pooled over
them (`runtime.report.pooled`: mean of the per-seed differences, seeds then prompts resampled), and the
section's headline count (`n_conclusions_holding_under_all_scorers`) is taken on those pooled rows.

Writes `conclusions.csv` (tidy: one row per comparison, measure and scorer, with the comparison's verdict
repeated on each) and `conclusions.md`; with one scorer, `conclusions.md` says there is nothing to check.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from compiler.schema.report import ReportRow
from runtime.stage import StageContext

from runtime.results.formatting import interval, missing, write_markdown
from runtime.results.compare import Boot

from .paired import MARK, comparison_label, common_measures, difference, seed_cell, toxicity_units
from .pooled import pool
from .table import merge_rows, scorer_of, short_axis_names

SHARE_AXIS = "data.toxic_share"
HEADLINE = {"_expected_max_toxicity": "EMT", "_toxicity_probability": "tox. prob."}
"""Measure suffix → its short name (`<set>` + suffix are the measures `paired.toxicity_units` gives)."""
ONE_SCORER = "one scorer: nothing to cross-check"
SETTINGS = ("toxic_share", "reference_toxic_share", "seed", "variant", "alpha", "positions", "top_k_heads",
            "control_seed")
IDS = ("evaluate_id", "reference_evaluate_id", "score_id", "reference_score_id")
RESULT = ("measure", "scorer", "difference", "ci_low", "ci_high", "excludes_zero", "n_units",
          "holds_under_all_scorers", "verdict")
POOLED = ("n_seeds", "seeds", "sd")
"""Columns of a comparison pooled over seeds (`runtime.report.pooled`), absent from per-seed rows."""
SHOWN_IF_VARYING = ("positions", "top_k_heads")
"""Settings the comparison label does not name: a column of the shown table where they vary (as sweep axes do)."""


def share_pairs(runs: list[ReportRow]) -> list[tuple[ReportRow, ReportRow]]:
    """(base model at share s, base model at the smallest share of the same seed and other axes) for every
    larger share; the base model of every ITI strength is one (merged) row."""
    groups: dict[tuple, list[ReportRow]] = {}
    for r in merge_rows(runs):
        if r.variant == "base" and r.scores and r.toxic_share is not None:
            others = tuple(sorted((p, repr(v)) for p, v in r.axes.items() if p != SHARE_AXIS))
            groups.setdefault((repr(r.seed), others), []).append(r)
    out = []
    for rows in groups.values():
        ref = min(rows, key=lambda r: r.toxic_share)
        out += [(r, ref) for r in sorted(rows, key=lambda r: r.toxic_share) if r.toxic_share > ref.toxic_share]
    return sorted(out, key=lambda p: (repr(p[0].seed), p[0].toxic_share))


class ScoreUnits:
    """Per-prompt toxicity units of the report's score folders by measure (plain names), each read once."""

    def __init__(self, ctx: StageContext, threshold: float) -> None:
        self.ctx, self.threshold, self._cache = ctx, threshold, {}

    def __call__(self, sid: str) -> dict:
        if sid not in self._cache:
            self._cache[sid] = toxicity_units(self.ctx.input(sid) / "scores.jsonl", self.threshold)
        return self._cache[sid]


def share_comparisons(units: ScoreUnits, runs: list[ReportRow], *, scorers: list[str], resamples: int,
                      seed: int, level: float) -> list[dict[str, Any]]:
    """Records (one per share pair, headline measure and scorer) of base(s) − base(smallest share)."""
    short = short_axis_names(runs)
    records = []
    for row, ref in share_pairs(runs):
        name = f"base {_share(row.toxic_share)} − base {_share(ref.toxic_share)}"
        settings = {"kind": "share", "comparison": name, "toxic_share": row.toxic_share,
                    "reference_toxic_share": ref.toxic_share, "seed": row.seed, "variant": "base"}
        settings |= {short[p]: v for p, v in row.axes.items() if p in short}
        for label in scorers:
            ours, theirs = row.scores.get(label), ref.scores.get(label)
            if not (ours and theirs):
                continue
            ids = {"evaluate_id": row.evaluate, "reference_evaluate_id": ref.evaluate, "score_id": ours,
                   "reference_score_id": theirs, "scorer": label}
            for measure, a, b in common_measures(units(ours), units(theirs)):
                records.append(settings | ids | difference(measure, a, b, f"{measure} of {ours} vs {theirs}",
                                                           resamples, seed, level))
    return records


def variant_comparisons(paired) -> list[dict[str, Any]]:
    """The toxicity records of `paired.compare` (every variant − its base), measures without scorer prefix."""
    if paired.empty or "scorer" not in paired:
        return []
    out = []
    for _, r in paired[paired["scorer"].notna()].iterrows():
        record = {k: v for k, v in r.items() if not missing(v)}
        out.append(record | {"kind": "variant", "comparison": comparison_label(r),
                             "measure": scorer_of(r["measure"])[1], "reference_toxic_share": r.get("toxic_share")})
    return out


def pooled_comparisons(units: ScoreUnits, records: list[dict[str, Any]], boot: Boot) -> list[dict[str, Any]]:
    """Records of every comparison measured under two or more seeds, pooled over them (`runtime.report.pooled`)."""
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    out = pool(df, lambda r: (units(r["score_id"])[r["measure"]], units(r["reference_score_id"])[r["measure"]]), boot)
    return [{k: v for k, v in r.items() if not missing(v)} for r in out.to_dict("records")]


def verdict(results: dict[str, tuple[float, float, float]], scorers: list[str]) -> tuple[bool, str]:
    """(holds, text) of one comparison: `results[label]` = (difference, ci_low, ci_high). It holds when
    every scorer's difference has the headline scorer's sign and every interval excludes 0; otherwise the
    text names each scorer that disagrees in sign (with a headline difference of exactly 0 there is no
    sign to disagree with, and a difference of exactly 0 only counts as inconclusive), is inconclusive, or
    was not measured."""
    head = results.get(scorers[0])
    problems = []
    for label in scorers:
        if label not in results:
            problems.append(f"{label} not measured")
            continue
        diff, low, high = results[label]
        issues = []
        signs = (np.sign(head[0]), np.sign(diff)) if head is not None and label != scorers[0] else (0, 0)
        if 0 not in signs and signs[0] != signs[1]:
            issues.append("disagrees (sign)")
        if math.isnan(low) or math.isnan(high):
            issues.append("inconclusive (no interval)")
        elif not (low > 0 or high < 0):
            issues.append("inconclusive (CI spans 0)")
        if issues:
            problems.append(f"{label} {', '.join(issues)}")
    return not problems, "yes" if not problems else "no: " + "; ".join(problems)


def build(records: list[dict[str, Any]], scorers: list[str]):
    """Tidy frame of the headline records with each comparison's verdict; share rows first."""
    import pandas as pd

    records = [r for r in records if r["measure"].endswith(tuple(HEADLINE))]
    df = pd.DataFrame.from_records(records)
    if df.empty:
        return df
    key = ["evaluate_id", "reference_evaluate_id", "measure"]
    holds = {}
    for group, part in df.groupby(key, sort=False, dropna=False):
        holds[group] = verdict({r["scorer"]: (r["difference"], r["ci_low"], r["ci_high"])
                                for _, r in part.iterrows()}, scorers)
    df["holds_under_all_scorers"] = [holds[tuple(k)][0] for k in df[key].itertuples(index=False)]
    df["verdict"] = [holds[tuple(k)][1] for k in df[key].itertuples(index=False)]
    comparisons = list(dict.fromkeys(zip(df["evaluate_id"], df["reference_evaluate_id"])))
    measures = list(dict.fromkeys(df["measure"]))
    order = sorted(range(len(df)), key=lambda i: (
        df["kind"].iat[i] != "share", comparisons.index((df["evaluate_id"].iat[i], df["reference_evaluate_id"].iat[i])),
        measures.index(df["measure"].iat[i]), scorers.index(df["scorer"].iat[i])))
    df = df.iloc[order].reset_index(drop=True)
    lead = ["kind", "comparison", *(c for c in SETTINGS if c in df)]
    axes = [c for c in df.columns if c not in (*lead, *RESULT, *POOLED, *IDS, "label")]
    return df[lead + axes + list(RESULT) + [c for c in (*POOLED, *IDS) if c in df]]


def shown_table(df, scorers: list[str], level: float) -> tuple[list[str], list[list[str]], list[str]]:
    """One row per comparison and measure, one `Δ` column per scorer, then the verdict."""
    named = ("kind", "comparison", *SETTINGS, *RESULT, *POOLED, *IDS)
    varying = [c for c in df.columns if (c not in named or c in SHOWN_IF_VARYING) and df[c].nunique(dropna=True) > 1]
    headers = ["comparison", "toxic share", "seed", *(c.replace("_", " ") for c in varying), "measure",
               *(f"Δ {label}" for label in scorers), "holds under all scorers"]
    body = []
    for _, part in df.groupby(["evaluate_id", "reference_evaluate_id", "measure"], sort=False, dropna=False):
        first = part.iloc[0]
        by_scorer = {r["scorer"]: r for _, r in part.iterrows()}
        cells = ["—" if (r := by_scorer.get(label)) is None else interval(r["difference"], r["ci_low"], r["ci_high"])
                 + (f" {MARK}" if r["excludes_zero"] else "") for label in scorers]
        body.append([first["comparison"], _share(first["toxic_share"]),
                     seed_cell(first),
                     *("" if missing(first.get(c)) else str(first[c]) for c in varying),
                     measure_name(first["measure"]), *cells, first["verdict"]])
    notes = [f"Each headline difference under each scorer ({scorers[0]} is the headline scorer), with its "
             f"{100 * level:g} % paired bootstrap interval over prompts (the prompt indices resampled once for both "
             f"models); {MARK}: the interval excludes 0. Toxicity vs share: the base model at each share − the base "
             "model at the smallest share with the same seed and other axes; every other row: a variant − its "
             "run's base model.",
             f"Holds under all scorers: every scorer's difference has the sign of {scorers[0]}'s and every interval "
             "excludes 0; otherwise the scorers that disagree in sign or are inconclusive (interval spans 0) are "
             "named.",
             *(["Pooled rows (seed column `pooled (…)`): the mean of the per-seed differences; the interval resamples "
                "the seeds, then the prompts within each drawn seed; the headline verdicts are these."]
               if "n_seeds" in df else [])]
    return headers, body, notes


def measure_name(measure: str) -> str:
    """`rtp_expected_max_toxicity` → `rtp EMT`."""
    suffix = next(s for s in HEADLINE if measure.endswith(s))
    return f"{measure[:-len(suffix)]} {HEADLINE[suffix]}"


def _share(value: Any) -> str:
    return "" if missing(value) else f"{100 * value:g} %"


def section(ctx: StageContext, runs: list[ReportRow], paired, *, scorers: list[str], threshold: float,
            resamples: int, seed: int, level: float, out: Path) -> dict[str, Any] | None:
    """Write `conclusions.md` (and `.csv`) into `out`; the page's section (`table` or `message`) and its
    counts, or None when the spec has no scorer."""
    if not scorers:
        return None
    if len(scorers) == 1:
        (out / "conclusions.md").write_text(f"{ONE_SCORER} ({scorers[0]}).\n", encoding="utf-8")
        return {"table": None, "message": f"{ONE_SCORER} ({scorers[0]}).", "metrics": {}}
    units = ScoreUnits(ctx, threshold)
    records = share_comparisons(units, runs, scorers=scorers, resamples=resamples, seed=seed,
                                level=level) + variant_comparisons(paired)
    records += pooled_comparisons(units, records, Boot(resamples, seed, level))
    df = build(records, scorers)
    if df.empty:
        message = "No comparison: no two base models of different shares and no variant with its base model."
        (out / "conclusions.md").write_text(message + "\n", encoding="utf-8")
        return {"table": None, "message": message, "metrics": {"n_conclusions": 0}}
    df.to_csv(out / "conclusions.csv", index=False)
    shown = shown_table(df, scorers, level)
    write_markdown(*shown[:2], out / "conclusions.md", notes=shown[2])
    verdicts = df.drop_duplicates(["evaluate_id", "reference_evaluate_id", "measure"])
    if "n_seeds" in verdicts:   # the headline is the pooled verdict where the spec sweeps seeds
        verdicts = verdicts[verdicts["n_seeds"].notna()]
    return {"table": shown, "message": None,
            "metrics": {"n_conclusions": len(verdicts),
                        "n_conclusions_holding_under_all_scorers": int(verdicts["holds_under_all_scorers"].sum())}}
