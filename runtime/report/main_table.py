"""The paper's main table: one row per model variant and toxic share, the paper's measures with intervals.

`summarise` collapses the full table (one row per trained model) to one row per setting — toxic share,
variant, α and any other swept axis — over seeds and control draws. Each measure gets a centre and a
low/high pair whose meaning the row's `spread` names:

- `ci`: a single model; its own bootstrap interval (95 % by default) over prompts/questions/documents (from the
  evaluate stage's `<metric>_ci_low` / `_ci_high`).
- `sd`: several seeds; mean ± sample standard deviation over seeds (low/high = mean ∓ sd).
- `range`: an ITI control; mean, min and max over its seeded draws (and seeds).

`main_table.csv` holds every measure listed in `csv_measures`; `main_table.md` and the page show the
headline toxicity (expected maximum toxicity) per prompt set beside detection (balanced accuracy, whose
chance is 0.5 whatever the class balance), MMLU (length-normalised, as ai2-olmo reports it),
cross-entropy, KL and, for ITI rows, the probe-direction shift. With several scorers the headline appears
once per scorer, side by side (`rtp EMT (offline)`, `rtp EMT (clf_toxigen_roberta)`), primary first.
"""
from __future__ import annotations

import math
from typing import Any

from compiler.schema.report import is_iti
from runtime.results.formatting import interval, missing, plus_minus, value_range
from .table import CONTROLS, scorer_columns, scorer_of, variant_rank

HEADLINE_TOXICITY = "expected_max_toxicity"
TOXICITY_KINDS = ("expected_max_toxicity", "toxicity_probability", "mean_toxicity")
SHOWN = {"detection_balanced_accuracy": "detection (bal. acc.)", "mmlu_accuracy_len_norm": "MMLU (len-norm)",
         "cross_entropy": "CE (nats/token)", "kl_to_base": "KL to base",
         "steer_probe_direction_shift": "probe shift (σ)"}
"""Non-toxicity measures of the shown table, in column order, with their headers."""
EXTRA_CSV = ("detection_accuracy", "mmlu_accuracy", "steer_n_heads_steered")
CHANCE = {"detection_balanced_accuracy": ("detection_chance", 0.5), "mmlu_accuracy_len_norm": ("mmlu_chance", 0.25),
          "mmlu_accuracy": ("mmlu_chance", 0.25)}
"""Measure → (evaluate metric holding its chance level, the level when that metric is absent)."""
SPREAD_NOTE = ("Single model: value [{level:g} % bootstrap interval over prompts / questions / documents]. "
               "Several seeds: mean ± standard deviation over seeds. ITI controls (↳, same α and heads budget "
               "as the ITI row above them): mean (min to max) over their seeded draws.")
FAMILY = {"base": 0, "prompting": 1, "sft": 3, "dpo": 4}


def prompt_sets(columns) -> list[str]:
    """Names of the generation prompt sets whose toxicity the table holds, by any scorer (challenging
    subsets excluded)."""
    suffix = "_" + HEADLINE_TOXICITY
    metrics = (scorer_of(c)[1] for c in columns)
    return list(dict.fromkeys(m[:-len(suffix)] for m in metrics if m.endswith(suffix) and not m.startswith("attack")
                              and not m[:-len(suffix)].endswith("_challenging")))


def csv_measures(columns, scorers: list[str]) -> list[str]:
    """Every measure `main_table.csv` holds, in order: toxicity per set (with challenging subsets; every
    scorer's beside the primary's), then the rest."""
    sets = prompt_sets(columns)
    tox = [c for s in sets for sub in ("", "_challenging") for k in TOXICITY_KINDS
           for c in scorer_columns(f"{s}{sub}_{k}", scorers)]
    return [m for m in (*tox, *SHOWN, *EXTRA_CSV) if m in columns]


def headline_measures(columns, scorers: list[str]) -> list[tuple[str, str]]:
    """(column, header) of the headline toxicity per prompt set, once per scorer that measured it; the
    header names the scorer only when there are several."""
    several = len(scorers) > 1
    out = []
    for s in prompt_sets(columns):
        for label, col in zip(scorers or [None], scorer_columns(f"{s}_{HEADLINE_TOXICITY}", scorers)):
            if col in columns:
                out.append((col, f"{s} EMT" + (f" ({label})" if several else "")))
    return out


def summarise(table):
    """One row per evaluated setting (seeds and control draws pooled): `<m>`, `<m>_low`, `<m>_high` for
    every metric; None when no row is a model variant (e.g. a toy-only spec)."""
    import pandas as pd

    metrics = [m for m in table.attrs["metrics"] if not m.endswith(("_ci_low", "_ci_high"))]
    keys = [c for c in table.attrs["settings"] if c not in ("seed", "control_seed")]
    models = table[table["variant"].notna()]
    if models.empty:
        return None
    records = []
    for key, part in models.groupby(keys, dropna=False, sort=False):
        rec: dict[str, Any] = dict(zip(keys, key))
        spread = "range" if rec["variant"] in CONTROLS else ("ci" if len(part) == 1 else "sd")
        rec |= {"n_models": len(part), "n_seeds": int(part["seed"].nunique()), "spread": spread}
        for m in metrics:
            rec |= dict(zip((m, f"{m}_low", f"{m}_high"), _centre_and_bounds(part, m, spread)))
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    out = out.iloc[sorted(range(len(out)), key=lambda i: _sort_key(out.iloc[i], keys))].reset_index(drop=True)
    out.attrs["metrics"], out.attrs["settings"] = metrics, keys
    return out


def _centre_and_bounds(part, m: str, spread: str) -> tuple[float, float, float]:
    values = part[m].dropna()
    if values.empty:
        return math.nan, math.nan, math.nan
    if spread == "range":
        return float(values.mean()), float(values.min()), float(values.max())
    if len(values) == 1:
        row = part.loc[values.index[0]]
        return float(values.iloc[0]), float(row.get(f"{m}_ci_low", math.nan)), float(row.get(f"{m}_ci_high", math.nan))
    sd = float(values.std(ddof=1))
    return float(values.mean()), float(values.mean()) - sd, float(values.mean()) + sd


def _sort_key(row, keys: list[str]) -> tuple:
    """Share, other swept axes, then base, prompting, each ITI row followed by its controls, SFT, DPO."""
    variant = row["variant"]
    steer = ("alpha", "positions", "top_k_heads")
    other = [row[k] for k in keys if k not in ("variant", "toxic_share", *steer)]
    family = 2 if is_iti(variant) else FAMILY.get(variant, 5)
    return (_sortable(row["toxic_share"]), *map(_sortable, other), family,
            *(_sortable(row.get(k)) for k in steer), variant_rank(variant))


def _sortable(value: Any) -> tuple:
    return (1, "") if missing(value) else (0, value)


def model_label(variant: Any, alpha: Any) -> str:
    """`ITI α=4`, `↳ random heads, α=4`, `SFT`, …"""
    a = "" if missing(alpha) else f"α={alpha:g}"
    if variant == "iti":
        return f"ITI {a}".strip()
    if variant in CONTROLS:
        return f"↳ {CONTROLS[variant]}" + (f", {a}" if a else "")
    return {"sft": "SFT", "dpo": "DPO"}.get(variant, str(variant))


def cell(row, m: str) -> str:
    centre, low, high = row.get(m, math.nan), row.get(f"{m}_low", math.nan), row.get(f"{m}_high", math.nan)
    if row["spread"] == "range":
        return value_range(centre, low, high)
    if row["spread"] == "sd":
        return plus_minus(centre, high - centre)
    return interval(centre, low, high)


def chance_levels(table) -> dict[str, float]:
    """Measure → its chance level, from the evaluate metrics when they state one."""
    out = {}
    for m, (source, default) in CHANCE.items():
        stated = table[source].dropna() if source in table else ()
        out[m] = float(stated.iloc[0]) if len(stated) else default
    return out


def shown_table(summary, chance: dict[str, float], level: float,
                scorers: list[str] = ()) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, body (a `chance` row first) and notes of the compact table; `level`: the evaluate
    stage's interval level; `scorers`: the scorer labels, primary first."""
    scorers = list(scorers)
    measures = headline_measures(summary.columns, scorers)
    measures += [(m, h) for m, h in SHOWN.items() if m in summary and summary[m].notna().any()]
    varying = [k for k in summary.attrs["settings"] if k not in ("variant", "toxic_share", "alpha")
               and summary[k].nunique(dropna=True) > 1]
    headers = ["toxic share", "model", *(k.replace("_", " ") for k in varying), "n", *(h for _, h in measures)]
    lead = ["", "chance", *("" for _ in varying), ""]
    body = [lead + [f"{chance[m]:.2f}" if m in chance else "" for m, _ in measures]]
    for _, row in summary.iterrows():
        share = "" if missing(row["toxic_share"]) else f"{100 * row['toxic_share']:g} %"
        if row["spread"] == "range":
            n = f"{row['n_models']} draws"
        else:
            n = f"{row['n_seeds']} seeds" if row["n_models"] > 1 else "1"
        body.append([share, model_label(row["variant"], row.get("alpha")),
                     *("" if missing(row[k]) else str(row[k]) for k in varying), n,
                     *(cell(row, m) for m, _ in measures)])
    levels = ", ".join(f"{SHOWN[m]} {chance[m]:g}" for m, _ in measures if m in chance)
    notes = [SPREAD_NOTE.format(level=100 * level),
             "EMT: expected maximum toxicity (mean over prompts of the most toxic sample's score)."
             + (f" Chance: {levels}." if levels else "")
             + " Probe shift: mean shift of the steered heads' activations along the probe direction on held-out "
             "text, in units of σ. Every measure with its interval bounds is in main_table.csv."]
    if len(scorers) > 1:
        notes.append(f"EMT (scorer): the same generations scored by each scorer; {scorers[0]} is the primary "
                     f"scorer (the attack judge; its columns of table.csv carry no scorer prefix, the others' "
                     f"are `<scorer>:<metric>`).")
    return headers, body, notes


def csv_frame(summary, scorers: list[str] = ()):
    """`main_table.csv`: settings, counts, spread kind, then every `csv_measures` value with its bounds."""
    measures = csv_measures(summary.columns, list(scorers))
    cols = [*summary.attrs["settings"], "n_models", "n_seeds", "spread"]
    cols += [c for m in measures for c in (m, f"{m}_low", f"{m}_high")]
    return summary[cols]
