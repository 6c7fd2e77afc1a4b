"""Paired comparisons: every detoxified model against the base model of its run, on the same items.

ITI (and its controls), prompting, SFT and DPO are each compared with the unsteered base model of the
same run (same toxic share, seed and pretraining), which the evaluate stage measured on the same prompts,
questions, examples and documents. The per-item files of the two evaluate folders and of their score
folders give per-unit values; `runtime.stats.paired_bootstrap_diff` resamples the unit indices once for
both models, so the interval of the difference (model − base) is that of a paired design. Units:

- toxicity (`scores.jsonl` of each score stage of the row's `scores`, one per scorer): one prompt = the
  maximum score over its samples; expected maximum toxicity is their mean, toxicity probability the share
  of prompts whose maximum is ≥ `toxic_threshold`. The primary scorer's measures keep their plain names,
  every other scorer's are `<label>:<measure>` (`runtime.report.table.scored`);
- MMLU (`mmlu.json` `per_question`): one question (`subject`, `index`), `correct_len_norm` (ai2-olmo's
  length-normalised accuracy);
- detection (`detection.json` `per_example`): one example (`index`), (`label`, `correct`), balanced
  accuracy (chance 0.5 whatever the class balance);
- cross-entropy (`cross_entropy.json` `per_document`): one document (`index`), (`nll_sum`, `tokens`), a
  ratio of sums.

A measure is compared when both folders hold its file (toxicity: when both rows name a score stage of
that scorer, whose `scores.jsonl` must exist); the two must list the same units. The per-item readers
(`runtime.results.items`) are shared with `mixsteer compare`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from compiler.schema.report import STEER_FIELDS, ReportRow
from runtime import stats
from runtime.results.items import Units, aligned, evaluate_units, toxicity_units
from runtime.results.formatting import interval, missing
from runtime.stage import StageContext

from .table import CONTROLS, scored, short_axis_names, variant_rank

MARK = "*"
"""Appended to a difference whose interval excludes 0."""


def score_units(folder: Path, threshold: float, label: str, scorers: list[str]) -> dict[str, Units]:
    """Measure → per-prompt toxicity units of one score folder (generations), named and labelled for its
    scorer: plain for the primary, `<label>:<measure>` and `… (label)` for the others."""
    several = len(scorers) > 1
    return {scored(m, label, scorers): replace(u, label=f"{u.label} ({label})" if several else u.label)
            for m, u in toxicity_units(folder / "scores.jsonl", threshold).items()}


def common_measures(ours: dict[str, Units], theirs: dict[str, Units]) -> list[tuple[str, Units, Units]]:
    """(measure, model's units, base's units) of every measure both hold, in the model's order."""
    return [(m, a, theirs[m]) for m, a in ours.items() if m in theirs]


def difference(measure: str, a: Units, b: Units, where: str, resamples: int, seed: int,
                level: float) -> dict[str, Any]:
    """One long-table record: the paired difference a − b on their shared units, with its interval."""
    ua, ub = aligned(a, b, where)
    diff, low, high = stats.paired_bootstrap_diff(ua, ub, a.statistic, resamples=resamples, seed=seed, level=level)
    return {"measure": measure, "label": a.label, "n_units": len(ua), "difference": diff, "ci_low": low,
            "ci_high": high, "excludes_zero": bool(low > 0 or high < 0)}


def comparison_pairs(runs: list[ReportRow]) -> list[tuple[ReportRow, ReportRow]]:
    """(row of a non-base model, row of its run's base model), each distinct pair of evaluates once."""
    base = {r.run: r for r in runs if r.variant == "base" and r.evaluate}
    out, seen = [], set()
    for r in runs:
        ref = base.get(r.run)
        if r.variant in (None, "base") or not r.evaluate or ref is None:
            continue
        if (r.evaluate, ref.evaluate) not in seen:
            seen.add((r.evaluate, ref.evaluate))
            out.append((r, ref))
    return out


class ItemUnits:
    """Per-item units of the report's input folders, each folder read once: an evaluate folder's measures,
    or a score folder's under a scorer label (named as `score_units` names them)."""

    def __init__(self, ctx: StageContext, threshold: float, scorers: list[str]) -> None:
        self.ctx, self.threshold, self.scorers = ctx, threshold, list(scorers)
        self._cache: dict[tuple[str, str | None], dict[str, Units]] = {}

    def __call__(self, sid: str, label: str | None = None) -> dict[str, Units]:
        if (sid, label) not in self._cache:
            folder = self.ctx.input(sid)
            self._cache[sid, label] = evaluate_units(folder) if label is None else \
                score_units(folder, self.threshold, label, self.scorers)
        return self._cache[sid, label]

    def pair(self, row) -> tuple[Units, Units]:
        """(model's, base's) units of one row of `compare`'s table."""
        label = None if missing(row.get("scorer")) else row["scorer"]
        ours, theirs = ("evaluate_id", "reference_evaluate_id") if label is None else ("score_id", "reference_score_id")
        return self(row[ours], label)[row["measure"]], self(row[theirs], label)[row["measure"]]


def compare(ctx: StageContext, runs: list[ReportRow], *, scorers: list[str], threshold: float,
            resamples: int, seed: int, level: float, units: ItemUnits | None = None):
    """Long table: one row per (pair, measure) with the difference model − base and its paired interval.

    Toxicity first, each measure's scorers side by side (`scorers`: labels, primary first), then the
    evaluate measures. Toxicity rows name their `scorer` and the two score ids. `units`: a reader to share
    with the caller (pooling over seeds reads the same folders)."""
    import pandas as pd

    scorers = list(scorers)
    short = short_axis_names(runs)
    units = units or ItemUnits(ctx, threshold, scorers)
    records = []
    for row, ref in comparison_pairs(runs):
        settings = {"toxic_share": row.toxic_share, "seed": row.seed, "variant": row.variant}
        settings |= row.steer_settings()
        settings |= {short[p]: v for p, v in row.axes.items() if p in short}
        settings |= {"evaluate_id": row.evaluate, "reference_evaluate_id": ref.evaluate}
        toxicity = []
        for position, label in enumerate(scorers):
            ours, theirs = row.scores.get(label), ref.scores.get(label)
            if ours and theirs:
                ids = {"scorer": label, "score_id": ours, "reference_score_id": theirs}
                toxicity += [(order, position, m, a, b, ids) for order, (m, a, b)
                             in enumerate(common_measures(units(ours, label), units(theirs, label)))]
        for _, _, measure, a, b, ids in sorted(toxicity, key=lambda t: t[:2]):
            records.append(settings | ids | difference(measure, a, b, f"{measure} of {ids['score_id']} vs "
                                                        f"{ids['reference_score_id']}", resamples, seed, level))
        for measure, a, b in common_measures(units(row.evaluate), units(ref.evaluate)):
            records.append(settings | difference(measure, a, b, f"{measure} of {row.evaluate} vs "
                                                  f"{ref.evaluate}", resamples, seed, level))
    df = pd.DataFrame.from_records(records)
    if not df.empty:
        df = df.dropna(axis=1, how="all")
        df = df.iloc[sorted(range(len(df)), key=lambda i: _sort_key(df.iloc[i]))].reset_index(drop=True)
    return df


def _sort_key(row) -> tuple:
    return tuple((1, "") if missing(row.get(k)) else (0, row.get(k)) for k in ("toxic_share", "seed")) + \
        (variant_rank(row["variant"]),) + tuple((1, "") if missing(row.get(k)) else (0, row.get(k))
                                                for k in STEER_FIELDS)


def comparison_label(row) -> str:
    """`ITI α=4 − base`, `random heads α=4 (draw 1) − base`, `SFT − base`."""
    alpha = "" if missing(row.get("alpha")) else f" α={row['alpha']:g}"
    draw = "" if missing(row.get("control_seed")) else f" (draw {row['control_seed']:g})"
    name = {"iti": "ITI", "sft": "SFT", "dpo": "DPO"}.get(row["variant"], CONTROLS.get(row["variant"], row["variant"]))
    return f"{name}{alpha}{draw} − base"


def seed_cell(row) -> str:
    """The seed column: the seed, or `pooled (0, 1)` for a row pooled over seeds (`runtime.report.pooled`)."""
    if not missing(row.get("n_seeds")):
        return f"pooled ({row['seeds']})"
    return "" if missing(row.get("seed")) else f"{row['seed']:g}"


def shown_table(paired, pooled=None) -> tuple[list[str], list[list[str]], list[str]]:
    """Wide view: one row per pair, one `Δ measure` column per measure; a marked cell excludes 0. Rows
    pooled over seeds (`pooled`, when the spec sweeps seeds) follow the per-seed rows."""
    import pandas as pd

    both = paired if pooled is None or pooled.empty else pd.concat([paired, pooled], ignore_index=True)
    measures = list(dict.fromkeys(zip(paired["measure"], paired["label"])))
    group_cols = [c for c in both.columns if c in ("toxic_share", "seed", "evaluate_id", "reference_evaluate_id")]
    varying = [c for c in ("positions", "top_k_heads") if c in paired and paired[c].nunique(dropna=True) > 1]
    headers = ["toxic share", "seed", "comparison", *(c.replace("_", " ") for c in varying),
               *(f"Δ {label}" for _, label in measures)]
    body = []
    for _, part in both.groupby(group_cols, dropna=False, sort=False):
        first = part.iloc[0]
        by_measure = {r["measure"]: r for _, r in part.iterrows()}
        cells = []
        for m, _ in measures:
            r = by_measure.get(m)
            cells.append("—" if r is None else interval(r["difference"], r["ci_low"], r["ci_high"])
                         + (f" {MARK}" if r["excludes_zero"] else ""))
        body.append(["" if missing(first["toxic_share"]) else f"{100 * first['toxic_share']:g} %",
                     seed_cell(first), comparison_label(first),
                     *("" if missing(first[c]) else str(first[c]) for c in varying), *cells])
    note = (f"Difference model − base of the same run on the same items, with its paired bootstrap interval "
            f"(the item indices resampled once for both models). {MARK}: the interval excludes 0. "
            f"Negative toxicity and positive accuracy differences favour the model; positive CE costs capability.")
    notes = [note]
    if pooled is not None and not pooled.empty:
        notes.append("Pooled rows: the mean of the per-seed differences; the interval resamples the seeds, then the "
                     "items within each drawn seed (the same indices for both models).")
    return headers, body, notes
