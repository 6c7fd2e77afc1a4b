"""`report` stage: the paper's main table, paired comparisons, controls, figures and an HTML page.

Reads: the `metrics.json` of every evaluate / steer / attack / probe / pretrain / mix / toy instance named
in `cfg.runs` (one row per run and model variant, built by `compiler.plan._report_row`), the per-item
files of every evaluate folder (`generations.jsonl`, `mmlu.json`, `cross_entropy.json`, `detection.json`)
for paired comparisons, each probe's `accuracy.json`, the probe's labelled texts (`cfg.labelled_data`,
scored with `cfg.scorer`), and for the token view each base model and probe directions.

Writes:
- `main_table.md` / `main_table.csv` (when a model was evaluated): one row per model variant and toxic
  share (base, prompting, ITI at each α with its random-direction and random-heads controls beside it,
  SFT, DPO), the paper's measures with intervals and chance levels (`runtime.report.main_table`);
- `paired.md` / `paired.csv` (when a run has a base model and another variant): every model minus its
  run's base model on the same items, with paired bootstrap intervals (`runtime.report.paired`);
- `scorer_auc.json` (when the spec has probe data and an evaluation scorer): ROC AUC of the scorer
  against the probe labels (`runtime.report.auc`);
- `table.csv` (every metric of every distinct model), `table_seeds.csv` (mean and sd over seeds, when
  seeds vary), `significance.json`, `plots/*.png`, `index.html` (relative images) and
  `standalone.html` (images inlined, for `snakemake --report`).

Every config field but `spec_name` enters the id. A missing stage or metric key is fine (a spec without
attack or toy still gets its report); a folder or file that a row names but that is absent is a
`StageError`.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from compiler.schema.base import NOT_IN_ID, StrictModel
from compiler.schema.evaluate import BootstrapSection
from compiler.schema.scoring import ScorerSpec
from compiler.schema.probe import LabelledData
from runtime.stage import StageContext, write_json

VERSION = 4
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    spec_name: str = Field(json_schema_extra=NOT_IN_ID)  # two specs with equal content share a report
    title: str
    significance_alpha: float
    token_view_texts: list[str]
    runs: list[dict[str, Any]]
    token_view_top_k_heads: int = Field(
        5, gt=0, description="Heads (highest probe accuracy first) averaged in the token view's score.")
    scorer: ScorerSpec | None = Field(
        None, description="The evaluation scorer, to score the probe's labelled texts (null: no AUC).")
    labelled_data: LabelledData | None = Field(
        None, description="The probe's labelled texts, read as the activations stage reads them (null: no AUC).")
    toxic_threshold: float = Field(
        0.5, gt=0, lt=1, description="Score at which a sample counts as toxic (toxicity probability of paired "
        "comparisons; the evaluate section's).")
    bootstrap: BootstrapSection = Field(
        default_factory=BootstrapSection, description="Resampling of the paired and AUC intervals (the evaluate "
        "section's, so the report's intervals match the evaluate stage's).")


def run(cfg: Config, ctx: StageContext) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    from . import html, main_table, paired, plots, probes
    from .auc import scorer_label_auc
    from .formatting import write_markdown
    from .table import build_table, group_over_seeds, merge_rows

    boot = dict(resamples=cfg.bootstrap.resamples, seed=cfg.bootstrap.seed, level=cfg.bootstrap.level)
    rows = merge_rows(cfg.runs)
    table = build_table(ctx, rows)
    table.to_csv(ctx.out / "table.csv", index=False)
    by_seed = group_over_seeds(table)
    if by_seed is not None:
        by_seed.to_csv(ctx.out / "table_seeds.csv", index=False)

    summary = main_table.summarise(table)
    chance = main_table.chance_levels(table)
    main = None
    if summary is not None:
        main_table.csv_frame(summary).to_csv(ctx.out / "main_table.csv", index=False)
        main = main_table.shown_table(summary, chance, cfg.bootstrap.level)
        write_markdown(*main[:2], ctx.out / "main_table.md", notes=main[2])

    comparisons = paired.compare(ctx, cfg.runs, threshold=cfg.toxic_threshold, **boot)
    shown_pairs = None
    if not comparisons.empty:
        comparisons.to_csv(ctx.out / "paired.csv", index=False)
        shown_pairs = paired.shown_table(comparisons)
        write_markdown(*shown_pairs[:2], ctx.out / "paired.md", notes=shown_pairs[2])

    auc = None
    if cfg.scorer is not None and cfg.labelled_data is not None:
        auc = scorer_label_auc(cfg.scorer, cfg.labelled_data, ctx, **boot)
        write_json(ctx.out / "scorer_auc.json", auc)

    by_share = probes.probes_by_share(ctx, rows)
    tests = probes.significance_tests({s: [p.accuracy for p in ps] for s, ps in by_share.items()},
                                      cfg.significance_alpha)
    write_json(ctx.out / "significance.json", tests)

    figures = plots.make_plots(table, summary, by_share, tests, ctx.out / "plots", chance)
    views = []
    if cfg.token_view_texts:
        from runtime import token_view

        views = token_view.token_views(ctx, rows, cfg.token_view_texts, top_k=cfg.token_view_top_k_heads)
    page = html.Page(
        title=cfg.title, spec_name=cfg.spec_name, main=main,
        summary=html.summary_items(rows, table, n_runs=len({r["run"] for r in cfg.runs})),
        paired=shown_pairs, auc=html.auc_box(auc), significance=html.significance_rows(tests),
        significance_alpha=cfg.significance_alpha, full=html.full_table(table),
        has_seed_table=by_seed is not None, views=views, top_k=cfg.token_view_top_k_heads)
    html.write_page(ctx.out, page, figures)
    out = {"n_rows": len(table), "n_main_rows": 0 if summary is None else len(summary), "n_plots": len(figures),
           "n_token_views": len(views),
           "n_paired": int(comparisons["evaluate_id"].nunique()) if not comparisons.empty else 0,
           "n_paired_differences_excluding_zero":
               int(comparisons["excludes_zero"].sum()) if not comparisons.empty else 0,
           **probes.significance_metrics(tests)}
    if auc is not None:
        out |= {"scorer_probe_label_auc": auc["auc"], "scorer_probe_label_auc_ci_low": auc["ci_low"],
                "scorer_probe_label_auc_ci_high": auc["ci_high"]}
    return out
