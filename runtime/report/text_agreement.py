"""How far the scorers agree on this run's own texts: the generations every score stage scored.

The scorer check measures each scorer against outside references (Perspective's 2020 RTP scores, ToxiGen's
human ratings); this measures the scorers against each other on the texts the run's conclusions rest on.
For each pair of scorers, over the generations both scored (every evaluate's continuations, pooled):
Spearman's ρ of the two scores, and the ROC AUC of each scorer against the other's decisions (score ≥ the
toxic threshold as the label). AUC against a decision set holding one class is undefined and said so.

Intervals: seeded percentile bootstrap over texts (`runtime.agreement`, the scorer check's measures). Pairs
of more than `MAX_TEXTS` texts are measured on a seeded uniform sample of that many (the pooled count is
kept beside it): the interval at that size is already far narrower than the scorers' disagreement.

Writes `text_agreement.csv` (tidy: one row per measure and ordered pair; Spearman once per pair) and
`text_agreement.md`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import StageError
from compiler.schema.report import ReportRow
from runtime.agreement import agreement
from runtime.artifacts import read_jsonl
from runtime.stage import StageContext

from runtime.results.formatting import interval, write_markdown

MAX_TEXTS = 200_000
"""Texts per scorer pair beyond which a seeded sample is measured (bootstrap cost grows with texts)."""

Text = tuple[str, str, int, int]
"""(evaluate id, prompt set, prompt index, sample): one generated continuation."""


def scored_texts(ctx: StageContext, runs: list[ReportRow], scorers: list[str]) -> dict[str, dict[Text, float]]:
    """Scorer label → each generation's score, from every score stage of the rows' `scores` (each once)."""
    out: dict[str, dict[Text, float]] = {label: {} for label in scorers}
    seen: set[str] = set()
    for row in runs:
        for label, sid in row.scores.items():
            if sid in seen or label not in out:
                continue
            seen.add(sid)
            path = ctx.input(sid) / "scores.jsonl"
            for n, rec in enumerate(read_jsonl(path), start=1):
                try:
                    key = (row.evaluate, rec["set"], int(rec["prompt_index"]), int(rec["sample"]))
                    out[label][key] = float(rec["score"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise StageError(f"report: {path}: record {n} needs `set`, `prompt_index`, `sample`, "
                                     f"`score`: {exc!r}") from None
    return out


def _sample(keys: list[Text], seed: int) -> list[Text]:
    if len(keys) <= MAX_TEXTS:
        return keys
    chosen = np.sort(np.random.default_rng(seed).choice(len(keys), MAX_TEXTS, replace=False))
    return [keys[i] for i in chosen]


def _note(measure: str, result: dict[str, float]) -> str:
    if measure == "auc" and result["positives"] in (0, result["texts"]):
        return "undefined (one class)"
    if math.isnan(result[measure]):
        return "undefined (constant scores)"
    if math.isnan(result[f"{measure}_ci_low"]):
        return "no interval (a resample held one class or constant scores)"
    return ""


def measure(ctx: StageContext, runs: list[ReportRow], scorers: list[str], threshold: float,
            boot: Any) -> list[dict[str, Any]]:
    """Tidy records: per pair of scorers, Spearman's ρ (once) and each one's AUC against the other's decisions."""
    texts = scored_texts(ctx, runs, scorers)
    records = []
    for i, a in enumerate(scorers):
        for b in scorers[i + 1:]:
            pooled = sorted(texts[a].keys() & texts[b].keys())
            if not pooled:
                continue
            keys = _sample(pooled, boot.seed)
            x, y = (np.array([texts[s][k] for k in keys]) for s in (a, b))
            common = {"level": boot.level, "texts": len(keys), "texts_pooled": len(pooled), "threshold": threshold}
            for scorer, against, names, units in ((a, b, ("spearman", "auc"), np.column_stack([x, y])),
                                                  (b, a, ("auc",), np.column_stack([y, x]))):
                result = agreement(units, threshold, boot, names)
                for name in names:
                    records.append({"scorer": scorer, "against": against, "measure": name, "value": result[name],
                                    "ci_low": result[f"{name}_ci_low"], "ci_high": result[f"{name}_ci_high"],
                                    **common, "against_toxic": result["positives"] if name == "auc" else None,
                                    "note": _note(name, result)})
    return records


def _cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "—"
    if math.isnan(record["value"]):
        return record["note"]
    return interval(record["value"], record["ci_low"], record["ci_high"])


def shown_table(records: list[dict[str, Any]], level: float) -> tuple[list[str], list[list[str]], list[str]]:
    """One row per ordered pair: Spearman's ρ (symmetric) and the scorer's AUC against the other's decisions."""
    spearman = {frozenset((r["scorer"], r["against"])): r for r in records if r["measure"] == "spearman"}
    body = []
    for r in (r for r in records if r["measure"] == "auc"):
        texts = f"{r['texts']}" if r["texts"] == r["texts_pooled"] else f"{r['texts']} of {r['texts_pooled']}"
        body.append([r["scorer"], r["against"], texts, f"{r['against_toxic']}",
                     _cell(spearman.get(frozenset((r["scorer"], r["against"])))), _cell(r)])
    t = records[0]["threshold"]
    headers = ["scorer", "against", "texts", f"toxic by `against` (≥ {t:g})", "Spearman ρ",
               "ROC AUC vs `against`'s decisions"]
    notes = [f"On this run's own generations (every evaluated model's continuations, pooled), each value with its "
             f"{100 * level:g} % seeded bootstrap interval over texts. ROC AUC: how well the scorer ranks the texts "
             f"the other scorer calls toxic (score ≥ {t:g}) above the rest; 0.5 is chance. "
             "\"undefined (one class)\": the other scorer calls every text toxic, or none."]
    return headers, body, notes


def section(ctx: StageContext, runs: list[ReportRow], *, scorers: list[str], threshold: float, boot: Any,
            out: Path) -> dict[str, Any] | None:
    """Write `text_agreement.md` and `.csv` into `out`; the page's section (`table` or `message`), or None
    when the spec has no scorer."""
    import pandas as pd

    if not scorers:
        return None
    if len(scorers) == 1:
        return {"table": None, "message": f"one scorer ({scorers[0]}): no agreement to measure."}
    records = measure(ctx, runs, scorers, threshold, boot)
    if not records:
        return {"table": None, "message": "No text was scored by two scorers."}
    frame = pd.DataFrame.from_records(records)
    frame["against_toxic"] = frame["against_toxic"].astype("Int64")   # a count, empty on Spearman rows
    frame.to_csv(out / "text_agreement.csv", index=False)
    shown = shown_table(records, boot.level)
    write_markdown(*shown[:2], out / "text_agreement.md", notes=shown[2])
    return {"table": shown, "message": None}
