"""`agreement.md`: the scorer check's tables, from its `agreement.json` content: written by the scorer_check
stage, shown again by the report stage and printed by the CLI."""
from __future__ import annotations

import math
from typing import Any

REFERENCES = {
    "rtp_prompt": "RTP prompts vs Perspective 2020",
    "rtp_continuation": "RTP continuations vs Perspective 2020",
    "rtp_all": "RTP prompts + continuations vs Perspective 2020",
    "toxigen": "ToxiGen annotated vs human rating",
}


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _ci(row: dict[str, Any], key: str) -> str:
    """`value [low, high]`; an undefined interval (one unit, a one-class resample) shows as n/a."""
    return f"{_num(row.get(key))} [{_num(row.get(key + '_ci_low'))}, {_num(row.get(key + '_ci_high'))}]"


Table = tuple[list[str], list[list[str]]]


def agreement_table(result: dict[str, Any]) -> Table:
    """Spearman ρ and ROC AUC of each scorer against each reference."""
    rows = [[row["scorer"], REFERENCES[row["reference"]], str(row["texts"]), str(row["positives"]),
             _ci(row, "spearman"), _ci(row, "auc")] for row in result["agreement"]]
    return ["scorer", "reference", "texts", "toxic", "Spearman ρ", "ROC AUC"], rows


def toxicity_table(result: dict[str, Any]) -> Table | None:
    """EMT and toxicity probability each scorer gives on RTP's continuations, next to Perspective's."""
    if not result["toxicity"]:
        return None
    rows = []
    for row in result["toxicity"]:
        reference = row["scorer"] == result["reference_label"]
        emt_diff = "—" if reference else _ci(row, "expected_max_toxicity_minus_reference")
        prob_diff = "—" if reference else _ci(row, "toxicity_probability_minus_reference")
        name = f"{row['scorer']} (reference)" if reference else row["scorer"]
        rows.append([name, _ci(row, "expected_max_toxicity"), emt_diff, _ci(row, "toxicity_probability"), prob_diff])
    return ["scorer", "EMT", "EMT − Perspective", "toxicity probability", "probability − Perspective"], rows


def notes(result: dict[str, Any]) -> list[str]:
    """What the tables count and how to read them."""
    level = round(100 * result["bootstrap"]["level"])
    t = result["threshold"]
    out = [f"Each value with its {level} % bootstrap interval (RTP: over records, a prompt with its continuation; "
           "ToxiGen: over rows). A scorer fitted on part of a reference is only fairly measured on the rest."]
    if result["rtp"] is not None:
        r = result["rtp"]
        out.append(f"RTP: toxic = Perspective ≥ {t}; {r['records_in_range']} records in range, "
                   f"{r['records_not_challenging']} not challenging, {r['records_null_toxicity']} without a "
                   f"Perspective toxicity (skipped), {r['records_used']} used.")
    if result["toxigen"] is not None:
        g = result["toxigen"]
        out.append(f"ToxiGen: toxic = toxicity_human ≥ {g['label_threshold']}; {g['rows_read']} rows read, "
                   f"{g['rows_null_rating']} without a rating (skipped), {g['rows_used']} used.")
    if result["toxicity"]:
        out.append("RTP continuations, one sample per prompt (RTP's own continuation, not a model's generation): "
                   f"expected maximum toxicity = mean toxicity, toxicity probability = share ≥ {t}. Differences "
                   "are paired on the same prompts.")
    truncated = {k: int(v["truncated_texts"]) for k, v in result["scoring"].items() if v["truncated_texts"]}
    if truncated:
        out.append("Truncated texts: " + ", ".join(f"{k} {v}" for k, v in truncated.items()) + ".")
    return out


def _markdown_table(table: Table) -> list[str]:
    headers, rows = table
    align = ["---:" if h in ("texts", "toxic") else "---" for h in headers]
    return ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Scorer check", "", *_markdown_table(agreement_table(result))]
    toxicity = toxicity_table(result)
    if toxicity is not None:
        lines += ["", *_markdown_table(toxicity)]
    for note in notes(result):
        lines += ["", note]
    return "\n".join(lines) + "\n"
