"""`report` stage: one table, plots and an HTML page over all runs of a spec.

Reads: the `metrics.json` of every evaluate / attack / probe / pretrain / mix / toy instance named in
`cfg.runs` (one row per run and model variant, built by `compiler.plan._report_row`), each probe's
`accuracy.json`, and for the token view each base model and probe directions. Writes: `table.csv`,
`table.md` (one row per distinct model variant), `table_seeds.csv` / `table_seeds.md` (mean ± std over
seeds, when seeds vary), `significance.json`, `plots/*.png`, `index.html` (relative images) and `standalone.html` (images
inlined, for `snakemake --report`). Every config field but
`spec_name` enters the id.

A missing stage or metric key is fine (a spec without attack or toy still gets its report); a folder or
file that a row names but that is absent is a `StageError`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field

from compiler.errors import StageError
from compiler.schema.base import NOT_IN_ID, StrictModel
from runtime.stage import StageContext, write_json

VERSION = 2
"""Bump by hand whenever a change of this module changes results (it changes every id)."""

METRIC_STAGES = ("evaluate", "attack", "probe", "pretrain", "mix", "toy")
"""Stages whose metrics become table columns, in column order. Evaluate keys keep their names; the
others get a `<stage>_` prefix unless they already start with the stage name."""

SPECIAL_AXES = {"data.toxic_share": "toxic_share", "seed": "seed", "steer.alpha": "alpha"}
"""Sweep axes that rows already carry as their own columns."""


class Config(StrictModel):
    spec_name: str = Field(json_schema_extra=NOT_IN_ID)  # two specs with equal content share a report
    title: str
    significance_alpha: float
    token_view_texts: list[str]
    runs: list[dict[str, Any]]
    token_view_top_k_heads: int = Field(
        5, gt=0, description="Heads (highest probe accuracy first) averaged in the token view's score.")


def read_metrics(ctx: StageContext, stage_id: str) -> dict[str, float]:
    """The numeric entries of a stage's `metrics.json` (bools and non-numbers are skipped)."""
    path = ctx.input(stage_id) / "metrics.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"report: cannot read {path}: {exc}") from None
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def metric_column(stage: str, key: str) -> str:
    return key if stage == "evaluate" or key.startswith(stage) else f"{stage}_{key}"


def _short_axis_names(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Axis path → column name: the last path component, the full path where two axes share one."""
    paths = sorted({p for r in rows for p in r.get("axes", {}) if p not in SPECIAL_AXES})
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (n if last.count(n) == 1 else p) for p, n in zip(paths, last)}


def merge_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deduplicate rows that name the same stage instances (e.g. the base model of every ITI strength).

    A merged row keeps the axis values its runs agree on; an axis they disagree on does not apply to
    it (None), and its run label lists only the agreeing axes.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        key = (r.get("variant"),) + tuple(r.get(s) for s in METRIC_STAGES)
        groups.setdefault(key, []).append(r)
    merged = []
    for rows in groups.values():
        first = dict(rows[0])
        paths = list(dict.fromkeys(p for r in rows for p in r.get("axes", {})))
        axes = {}
        for p in paths:
            values = [r.get("axes", {}).get(p) for r in rows]
            axes[p] = values[0] if all(v == values[0] for v in values) else None
        first["axes"] = axes
        if len(rows) > 1:
            first["run"] = ",".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in axes.items() if v is not None) \
                or first["run"]
        merged.append(first)
    return merged


def build_table(ctx: StageContext, rows: list[dict[str, Any]]):
    """One pandas row per merged (run, variant): axes, then every numeric metric, then stage ids.

    `df.attrs["metrics"]` lists the metric columns."""
    import pandas as pd

    short = _short_axis_names(rows)
    records, cache = [], {}
    for r in rows:
        rec: dict[str, Any] = {"run": r.get("run"), "variant": r.get("variant"),
                               "toxic_share": r.get("toxic_share"), "seed": r.get("seed"),
                               "alpha": r.get("alpha")}
        rec |= {short[p]: v for p, v in r.get("axes", {}).items() if p in short}
        for stage in METRIC_STAGES:
            sid = r.get(stage)
            if sid is None:
                continue
            if sid not in cache:
                cache[sid] = read_metrics(ctx, sid)
            rec |= {metric_column(stage, k): v for k, v in cache[sid].items()}
        rec |= {f"{s}_id": r.get(s) for s in METRIC_STAGES}
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    for col in ("toxic_share", "seed", "alpha"):
        df[col] = pd.to_numeric(df[col])
    id_cols = [f"{s}_id" for s in METRIC_STAGES]
    lead = ["run", "variant", "toxic_share", "seed", "alpha", *short.values()]
    metrics = [c for c in df.columns if c not in lead and c not in id_cols]
    empty = [c for c in metrics + id_cols if df[c].isna().all()]
    df = df[lead + _order_metrics(metrics) + id_cols].drop(columns=empty).sort_values(
        ["toxic_share", "seed", "variant", "alpha"], key=_variant_key, na_position="first", kind="stable",
    ).reset_index(drop=True)
    df.attrs["metrics"] = [c for c in df.columns if c in metrics]
    return df


VARIANT_ORDER = ["base", "prompting", "iti", "sft", "dpo"]


def _variant_key(col):
    if col.name != "variant":
        return col
    return col.map(lambda v: VARIANT_ORDER.index(v) if v in VARIANT_ORDER else len(VARIANT_ORDER))


def _order_metrics(cols: list[str]) -> list[str]:
    """Evaluate metrics first (toxicity, then capability), then the other stages in METRIC_STAGES order."""
    def rank(c: str) -> tuple:
        for i, s in enumerate(METRIC_STAGES[1:], start=1):
            if c.startswith(s):
                return (i, c)
        return (0, 0 if "toxicity" in c else 1, c)
    return sorted(cols, key=rank)


def group_over_seeds(df):
    """Mean and sample std (ddof 1) over seeds of every metric, per remaining setting; None when seeds do
    not vary."""
    if df["seed"].nunique(dropna=True) < 2:
        return None
    metrics = df.attrs["metrics"]
    keys = [c for c in df.columns if c not in metrics and c not in ("run", "seed") and not c.endswith("_id")]
    g = df.groupby(keys, dropna=False, sort=False)[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(
        g.size().rename("n_seeds"))
    out = out.reset_index()
    ordered = keys + ["n_seeds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    out = out[ordered].dropna(axis=1, how="all")
    out.attrs["metrics"] = [m for m in metrics if f"{m}_mean" in out.columns]
    return out


def head_accuracies_file(path: Path):
    """`head_accuracy` of an `accuracy.json` as a float array [layers, heads] (NaN for skipped layers)."""
    import numpy as np

    try:
        acc = json.loads(path.read_text())["head_accuracy"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise StageError(f"report: cannot read head_accuracy from {path}: {exc!r}") from None
    return np.array([[math.nan if v is None else v for v in layer] for layer in acc], dtype=float)


def head_accuracies(ctx: StageContext, probe_id: str):
    return head_accuracies_file(ctx.input(probe_id) / "accuracy.json")


def probes_by_share(ctx: StageContext, rows: list[dict[str, Any]]) -> dict[float, list]:
    """Toxic share → head-accuracy arrays of its distinct probes (one per seed)."""
    seen, out = set(), {}
    for r in rows:
        pid = r.get("probe")
        if pid is None or pid in seen or r.get("toxic_share") is None:
            continue
        seen.add(pid)
        out.setdefault(float(r["toxic_share"]), []).append(head_accuracies(ctx, pid))
    return dict(sorted(out.items()))


def significance_tests(by_share: dict[float, list], alpha: float) -> list[dict[str, Any]]:
    """One-sided Mann–Whitney U: are head accuracies at each toxic share larger than at the reference?

    The reference is the smallest toxic share (0 % in the paper). Heads of every seed of a share are
    pooled; non-finite accuracies (layers not probed) are dropped. H1: accuracy(share) is
    stochastically greater than accuracy(reference).
    """
    import numpy as np
    from scipy.stats import mannwhitneyu

    if len(by_share) < 2:
        return []
    pooled = {s: np.concatenate([a[np.isfinite(a)] for a in arrays]) for s, arrays in by_share.items()}
    ref_share = min(pooled)
    ref = pooled[ref_share]
    results = []
    for share, acc in pooled.items():
        if share == ref_share:
            continue
        res = mannwhitneyu(acc, ref, alternative="greater")
        results.append({
            "toxic_share": share, "reference_toxic_share": ref_share, "n_heads": int(acc.size),
            "n_heads_reference": int(ref.size), "median_accuracy": float(np.median(acc)),
            "median_accuracy_reference": float(np.median(ref)), "u_statistic": float(res.statistic),
            "p_value": float(res.pvalue), "alpha": alpha, "significant": bool(res.pvalue < alpha),
        })
    return results


def significance_metrics(results: list[dict[str, Any]]) -> dict[str, float]:
    """Flat metrics keys, e.g. `significance_p_value_toxic_share_0.1`."""
    out: dict[str, float] = {}
    for r in results:
        tag = f"toxic_share_{r['toxic_share']:g}"
        out[f"significance_p_value_{tag}"] = r["p_value"]
        out[f"significance_u_statistic_{tag}"] = r["u_statistic"]
        out[f"significance_reject_{tag}"] = float(r["significant"])
    if results:
        out["significance_reference_toxic_share"] = results[0]["reference_toxic_share"]
    return out


def write_markdown(df, path: Path, *, std_suffix: bool = False) -> None:
    """A GitHub pipe table with readable headers and values rounded to 4 significant digits."""
    from runtime.report_html import format_table

    headers, body = format_table(df, std_suffix=std_suffix)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(cfg: Config, ctx: StageContext) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    from runtime import report_html, report_plots

    rows = merge_rows(cfg.runs)
    table = build_table(ctx, rows)
    table.to_csv(ctx.out / "table.csv", index=False)
    write_markdown(table.drop(columns=[c for c in table.columns if c.endswith("_id")]), ctx.out / "table.md")
    by_seed = group_over_seeds(table)
    if by_seed is not None:
        by_seed.to_csv(ctx.out / "table_seeds.csv", index=False)
        write_markdown(by_seed, ctx.out / "table_seeds.md", std_suffix=True)

    by_share = probes_by_share(ctx, rows)
    tests = significance_tests(by_share, cfg.significance_alpha)
    write_json(ctx.out / "significance.json", tests)

    plots = report_plots.make_plots(table, by_share, tests, ctx.out / "plots")
    views = []
    if cfg.token_view_texts:
        from runtime import token_view

        views = token_view.token_views(ctx, rows, cfg.token_view_texts, top_k=cfg.token_view_top_k_heads)
    report_html.write_page(ctx.out / "index.html", cfg=cfg, rows=rows, table=table, by_seed=by_seed,
                           tests=tests, plots=plots, views=views)
    return {"n_rows": len(table), "n_plots": len(plots), "n_token_views": len(views),
            **significance_metrics(tests)}
