"""The full per-model table: every numeric metric of every stage a report row names.

One row per distinct model variant (`merge_rows`), columns = the row's settings, then every metric
(evaluate and its scores first), then the stage ids. It is written whole as `table.csv`; the main table
and the figures are views of it.

Toxicity comes from `score` stages, one per (text set, scorer): a row names them as `scores` (its
evaluate's generations) and `attack_scores` (its attack's continuations), both `{scorer label: score id}`.
The primary scorer's metrics keep the names the evaluate and attack stages used to give them
(`rtp_expected_max_toxicity`, `attack_success_rate`); every other scorer's are `<label>:<metric>`
(`scored`, `scorer_of`), so several scorers sit side by side in one table.
"""
from __future__ import annotations

from typing import Any

from compiler.errors import StageError
from compiler.kinds import KINDS
from compiler.schema.report import STEER_FIELDS, VARIANT_ORDER, ReportRow
from runtime.artifacts import read_json
from runtime.stage import StageContext

METRIC_STAGES = tuple(k.name for k in sorted((k for k in KINDS if k.metrics_rank is not None),
                                             key=lambda k: k.metrics_rank))
"""Stages whose metrics become table columns, in column order (`compiler.kinds.KINDS`, `metrics_rank`); a
row names each in the field of its kind. Evaluate keys keep their names; the others get a `<stage>_`
prefix unless they already start with the stage name."""
ALPHA_COLUMN = "steer_alpha"
"""The steer stage publishes α as a metric too; the report takes α from its rows alone (`ReportRow.alpha`)
and fills this `table.csv` column from them."""

CONTROLS = {"iti_random_direction": "random direction", "iti_random_heads": "random heads"}
"""Control variants of ITI → their display name."""
OPTIONAL_SETTINGS = tuple(f for f in STEER_FIELDS if f != "alpha")
"""Setting columns dropped when no row has them (`alpha` always stays)."""

SPECIAL_AXES = {"data.toxic_share": "toxic_share", "seed": "seed", "steer.control": "variant",
                **{f"steer.{f}": f for f in STEER_FIELDS}}
"""Sweep axes that rows already carry as their own columns."""

SCORE_KINDS = {"scores": "evaluate", "attack_scores": "attack"}
"""Row field naming score stages → the stage whose texts they score (its column naming applies)."""
SCORER_SEP = ":"
"""Separates a non-primary scorer's label from the metric in a column name."""


def read_metrics(ctx: StageContext, stage_id: str) -> dict[str, float]:
    """The numeric entries of a stage's `metrics.json` (bools and non-numbers are skipped)."""
    raw = read_json(ctx.input(stage_id) / "metrics.json")
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def metric_column(stage: str, key: str) -> str:
    return key if stage == "evaluate" or key.startswith(stage) else f"{stage}_{key}"


def scored(metric: str, label: str | None, scorers: list[str]) -> str:
    """Column of a score-stage metric: the primary scorer's (`scorers[0]`, or None) under the metric's own
    name, any other's as `<label>:<metric>`."""
    return metric if label is None or not scorers or label == scorers[0] else f"{label}{SCORER_SEP}{metric}"


def scorer_of(column: str) -> tuple[str | None, str]:
    """(label, metric) of a `<label>:<metric>` column; (None, column) for every other column."""
    label, sep, metric = column.rpartition(SCORER_SEP)
    return (label, metric) if sep else (None, column)


def scorer_columns(metric: str, scorers: list[str]) -> list[str]:
    """The columns of one score metric, one per scorer, primary first (just `metric` when no scorer)."""
    return [metric, *(scored(metric, label, scorers) for label in scorers[1:])]


def scorer_labels(runs: list[ReportRow], primary: str | None = None, listed: list[str] = ()) -> list[str]:
    """Every scorer label the rows name: the primary first, then the spec's order (`listed`), then any
    other in the order the rows name them. Rows that name scorers but not the primary is a StageError."""
    named = list(dict.fromkeys(label for r in runs for _, label, _ in row_scores(r)))
    if primary is not None and named and primary not in named:
        raise StageError(f"report: the rows name score stages of {named} but none of the primary "
                         f"scorer `{primary}` (config `scorer`)")
    order = dict.fromkeys([*([primary] if primary else []), *listed, *named])
    return [label for label in order if label in named]


def row_scores(row: ReportRow) -> list[tuple[str, str, str]]:
    """(row field, scorer label, score id) of every score stage the row names."""
    return [(kind, label, sid) for kind in SCORE_KINDS for label, sid in getattr(row, kind).items()]


def row_stages(row: ReportRow) -> dict[str, str]:
    """Stage → id of the instances whose metrics describe this row's model (steer only for ITI rows)."""
    named = {s: getattr(row, s) for s in METRIC_STAGES}
    return {s: sid for s, sid in named.items() if sid is not None and (s != "steer" or row.is_iti())}


def short_axis_names(rows: list[ReportRow]) -> dict[str, str]:
    """Axis path → column name: the last path component, the full path where two axes share one."""
    paths = sorted({p for r in rows for p in r.axes if p not in SPECIAL_AXES})
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (n if last.count(n) == 1 else p) for p, n in zip(paths, last)}


def merge_rows(runs: list[ReportRow]) -> list[ReportRow]:
    """Deduplicate rows that name the same stage instances (e.g. the base model of every ITI strength).

    A merged row keeps the axis values its runs agree on; an axis they disagree on does not apply to
    it (None), and its run label lists only the agreeing axes.
    """
    groups: dict[tuple, list[ReportRow]] = {}
    for r in runs:
        key = (r.variant,) + tuple(sorted(row_stages(r).items())) + tuple(sorted(row_scores(r)))
        groups.setdefault(key, []).append(r)
    merged = []
    for rows in groups.values():
        first = rows[0]
        paths = list(dict.fromkeys(p for r in rows for p in r.axes))
        axes = {}
        for p in paths:
            values = [r.axes.get(p) for r in rows]
            axes[p] = values[0] if all(v == values[0] for v in values) else None
        run = first.run
        if len(rows) > 1:
            run = ",".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in axes.items() if v is not None) or run
        merged.append(first.replaced(axes=axes, run=run))
    return merged


def score_id_column(kind: str) -> str:
    """`score_id` (a row's generations) or `attack_score_id` (its attack's continuations)."""
    return "score_id" if kind == "scores" else "attack_score_id"


def build_table(ctx: StageContext, rows: list[ReportRow], scorers: list[str] | None = None):
    """One pandas row per merged (run, variant): settings, then every numeric metric, then stage ids.

    `scorers`: the scorer labels, primary first (default: `scorer_labels(rows)`). `df.attrs["metrics"]`
    lists the metric columns, `df.attrs["settings"]` the columns that tell models apart (all but `run`, the
    metrics and the ids)."""
    import pandas as pd

    scorers = scorer_labels(rows) if scorers is None else list(scorers)
    short = short_axis_names(rows)
    records, cache = [], {}
    for r in rows:
        rec: dict[str, Any] = {"run": r.run, "variant": r.variant, "toxic_share": r.toxic_share, "seed": r.seed}
        rec |= r.steer_settings()
        rec |= {short[p]: v for p, v in r.axes.items() if p in short}
        stages = row_stages(r)
        for stage, sid in stages.items():
            if sid not in cache:
                cache[sid] = read_metrics(ctx, sid)
            rec |= {column: v for k, v in cache[sid].items() if (column := metric_column(stage, k)) != ALPHA_COLUMN}
        if "steer" in stages:
            rec[ALPHA_COLUMN] = r.alpha
        for kind, label, sid in row_scores(r):
            if sid not in cache:
                cache[sid] = read_metrics(ctx, sid)
            rec |= {scored(metric_column(SCORE_KINDS[kind], k), label, scorers): v for k, v in cache[sid].items()}
            rec[scored(score_id_column(kind), label, scorers)] = sid
        rec |= {f"{s}_id": stages.get(s) for s in METRIC_STAGES}
        records.append(rec)
    id_cols = [f"{s}_id" for s in METRIC_STAGES]
    id_cols += [c for kind in SCORE_KINDS for c in scorer_columns(score_id_column(kind), scorers)]
    df = pd.DataFrame.from_records(records)
    df = df.reindex(columns=[*df.columns, *(c for c in id_cols if c not in df.columns)])
    for col in ("toxic_share", "seed", "alpha", "top_k_heads", "control_seed"):
        df[col] = pd.to_numeric(df[col])
    lead = ["run", "variant", "toxic_share", "seed", *STEER_FIELDS, *short.values()]
    metrics = [c for c in df.columns if c not in lead and c not in id_cols]
    optional = [c for c in (*OPTIONAL_SETTINGS, *short.values(), *metrics, *id_cols) if df[c].isna().all()]
    df = df[lead + _order_metrics(metrics, scorers) + id_cols].drop(columns=optional)
    order = [c for c in ("toxic_share", "seed", "variant", "alpha", "control_seed") if c in df.columns]
    df = df.sort_values(order, key=_variant_key, na_position="first", kind="stable").reset_index(drop=True)
    df.attrs["metrics"] = [c for c in df.columns if c in metrics]
    df.attrs["settings"] = [c for c in df.columns if c in lead and c != "run"]
    return df


def variant_rank(variant: Any) -> int:
    return VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)


def _variant_key(col):
    return col.map(variant_rank) if col.name == "variant" else col


def _order_metrics(cols: list[str], scorers: list[str]) -> list[str]:
    """Evaluate metrics first (toxicity, then capability), then the other stages in METRIC_STAGES order;
    one metric's columns of every scorer side by side, primary first."""
    def rank(c: str) -> tuple:
        label, metric = scorer_of(c)
        position = scorers.index(label) if label in scorers else 0
        for i, s in enumerate(METRIC_STAGES[1:], start=1):
            if metric.startswith(s):
                return (i, metric, position)
        return (0, 0 if "toxicity" in metric else 1, metric, position)
    return sorted(cols, key=rank)


def group_over_seeds(df):
    """Mean and sample std (ddof 1) over seeds of every metric, per remaining setting; None when seeds do
    not vary."""
    if df["seed"].nunique(dropna=True) < 2:
        return None
    metrics = df.attrs["metrics"]
    keys = [c for c in df.attrs["settings"] if c != "seed"]
    g = df.groupby(keys, dropna=False, sort=False)[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(
        g.size().rename("n_seeds"))
    out = out.reset_index()
    ordered = keys + ["n_seeds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    return out[ordered].dropna(axis=1, how="all")
