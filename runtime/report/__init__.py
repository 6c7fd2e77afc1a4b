"""`report` stage: the paper's main table, paired comparisons, controls, figures and an HTML page.

Reads: the `metrics.json` of every evaluate / steer / attack / probe / pretrain / mix / toy / score instance
named in `cfg.runs` (one row per run and model variant, `compiler.schema.report.ReportRow`; a row names
its score stages as `scores` and `attack_scores`, `{scorer label: score id}`), the per-item files of every
evaluate folder (`mmlu.json`, `cross_entropy.json`, `detection.json`) and of its score folders
(`scores.jsonl`) for paired comparisons, each probe's `accuracy.json`, the probe's labelled texts
(`cfg.labelled_data`, scored with each of `cfg.scorers`, or `cfg.scorer` alone), and for the token view
each base model and probe directions.

Toxicity: `cfg.scorer` is the primary scorer (the spec's first, the attack judge). Its score stages' metrics
keep the names the evaluate and attack stages used to give them (`rtp_expected_max_toxicity`,
`attack_success_rate`); every other scorer's are `<label>:<metric>` (`runtime.report.table.scored`), shown
side by side in the main table, the paired comparisons, the AUC box and the figures.

Writes:
- `main_table.md` / `main_table.csv` (when a model was evaluated): one row per model variant and toxic
  share (base, prompting, ITI at each α with its random-direction and random-heads controls beside it,
  SFT, DPO), the paper's measures with intervals and chance levels (`runtime.report.main_table`);
- `paired.md` / `paired.csv` (when a run has a base model and another variant): every model minus its
  run's base model on the same items, with paired bootstrap intervals (`runtime.report.paired`);
- `conclusions.md` / `conclusions.csv` (when the spec has several scorers): each headline toxicity
  difference (every variant − its base, each share's base − the smallest share's) under every scorer side
  by side, and whether it holds under all of them (`runtime.report.conclusions`); with one scorer,
  `conclusions.md` says there is nothing to cross-check;
- `text_agreement.md` / `text_agreement.csv` (several scorers): their Spearman ρ and each one's ROC AUC
  against the others' decisions on the run's own generations, with intervals (`runtime.report.text_agreement`);
- `scorer_auc.json` (when the spec has probe data and an evaluation scorer): ROC AUC of the primary
  scorer against the probe labels (`runtime.report.auc`), and under `by_scorer` that of every scorer,
  primary first, each with its `label`;
- `compare.md` / `compare.csv` (with `compare_to`): this spec − each listed spec per matched run and measure,
  paired where the items match, pooled over seeds (`runtime.results.compare`), also on the page;
- `table.csv` (every metric of every distinct model), `table_seeds.csv` (mean and sd over seeds, when
  seeds vary), `significance.json`, `plots/*.png`, `index.html` (relative images) and
  `standalone.html` (images inlined, for `snakemake --report`).

Every config field but `spec_name` enters the id. A missing stage or metric key is fine (a spec without
attack or toy still gets its report); a folder or file that a row names but that is absent is a
`StageError`.
"""
from __future__ import annotations

from typing import Any

from compiler.schema.report import ReportRow
from compiler.stages.report import Config
from runtime.artifacts import broken_artifact, read_json
from runtime.stage import StageContext, write_json


RESTART = "tables and plots from the finished stage folders"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""


def run(cfg: Config, ctx: StageContext) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    from . import conclusions, html, main_table, paired, plots, pooled, probes, provenance, text_agreement
    from .auc import scorers_label_auc
    from runtime.results.formatting import write_markdown
    from .table import build_table, group_over_seeds, merge_rows, scored, scorer_labels
    from runtime.results.compare import Boot

    boot = dict(resamples=cfg.bootstrap.resamples, seed=cfg.bootstrap.seed, level=cfg.bootstrap.level)
    specs = cfg.scorer_specs()
    scorers = scorer_labels(cfg.runs, specs[0].label if specs else None, [s.label for s in specs])
    rows = merge_rows(cfg.runs)
    table = build_table(ctx, rows, scorers)
    table.to_csv(ctx.out / "table.csv", index=False)
    by_seed = group_over_seeds(table)
    if by_seed is not None:
        by_seed.to_csv(ctx.out / "table_seeds.csv", index=False)

    summary = main_table.summarise(table)
    chance = main_table.chance_levels(table)
    main = None
    if summary is not None:
        main_table.csv_frame(summary, scorers).to_csv(ctx.out / "main_table.csv", index=False)
        main = main_table.shown_table(summary, chance, cfg.bootstrap.level, scorers)
        write_markdown(*main[:2], ctx.out / "main_table.md", notes=main[2])

    units = paired.ItemUnits(ctx, cfg.toxic_threshold, scorers)
    comparisons = paired.compare(ctx, cfg.runs, scorers=scorers, threshold=cfg.toxic_threshold, units=units, **boot)
    pooled_pairs = pooled.pool(comparisons, units.pair, Boot(**boot))
    shown_pairs = None
    if not comparisons.empty:
        comparisons.to_csv(ctx.out / "paired.csv", index=False)
        if not pooled_pairs.empty:
            pooled_pairs.to_csv(ctx.out / "paired_seeds.csv", index=False)
        shown_pairs = paired.shown_table(comparisons, pooled_pairs)
        write_markdown(*shown_pairs[:2], ctx.out / "paired.md", notes=shown_pairs[2])

    conclusions_section = conclusions.section(ctx, cfg.runs, comparisons, scorers=scorers,
                                              threshold=cfg.toxic_threshold, out=ctx.out, **boot)
    texts_section = text_agreement.section(ctx, cfg.runs, scorers=scorers, threshold=cfg.toxic_threshold,
                                           boot=cfg.bootstrap, out=ctx.out)

    aucs = []
    if specs and cfg.labelled_data is not None:
        aucs = scorers_label_auc(specs, cfg.labelled_data, ctx, **boot)
        write_json(ctx.out / "scorer_auc.json", aucs[0] | {"by_scorer": aucs})

    by_share = probes.probes_by_share(ctx, rows)
    tests = probes.significance_tests({s: [p.accuracy for p in ps] for s, ps in by_share.items()},
                                      cfg.significance_alpha)
    write_json(ctx.out / "significance.json", tests)

    figures = plots.make_plots(table, summary, by_share, tests, ctx.out / "plots", chance, scorers)
    views = []
    if cfg.token_view_texts:
        from runtime.report import token_view

        views = token_view.token_views(ctx, rows, cfg.token_view_texts, top_k=cfg.token_view_top_k_heads)
    agreement = scorer_agreement(ctx)
    comparison = compare_section(ctx, cfg)
    scorers_section = provenance.section(ctx, cfg.runs, scorers=scorers)
    if scorers_section is not None:
        write_markdown(scorers_section["headers"], scorers_section["rows"], ctx.out / "scorers.md",
                       notes=scorers_section["notes"])
    page = html.Page(
        title=cfg.title, spec_name=cfg.spec_name, main=main,
        summary=html.summary_items(rows, table, n_runs=len({r.run for r in cfg.runs}), scorers=scorers),
        paired=shown_pairs, auc=html.auc_box(aucs), significance=html.significance_rows(tests),
        significance_alpha=cfg.significance_alpha, full=html.full_table(table),
        has_seed_table=by_seed is not None, views=views, top_k=cfg.token_view_top_k_heads, agreement=agreement,
        conclusions=conclusions_section, text_agreement=texts_section,
        scorer_provenance=scorers_section, comparison=comparison)
    html.write_page(ctx.out, page, figures)
    out = {"n_rows": len(table), "n_main_rows": 0 if summary is None else len(summary), "n_plots": len(figures),
           "n_token_views": len(views),
           "n_paired": int(comparisons["evaluate_id"].nunique()) if not comparisons.empty else 0,
           "n_paired_differences_excluding_zero":
               int(comparisons["excludes_zero"].sum()) if not comparisons.empty else 0,
           "n_pooled_differences": len(pooled_pairs),
           "n_pooled_differences_excluding_zero":
               int(pooled_pairs["excludes_zero"].sum()) if not pooled_pairs.empty else 0,
           **probes.significance_metrics(tests), **(conclusions_section or {}).get("metrics", {})}
    primary = aucs[0]["label"] if aucs else None
    for auc in aucs:
        out |= {scored(f"scorer_probe_label_auc{end}", auc["label"], [primary]): auc[key]
                for end, key in (("", "auc"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))}
    return out


def compare_section(ctx: StageContext, cfg: Config) -> dict[str, Any] | None:
    """This spec − each spec of `compare_to` (`runtime.results.compare`): `compare.md` and `compare.csv`,
    and the sections the page shows; None without `compare_to`."""
    import pandas as pd

    from runtime.results import compare, render
    from runtime.results.table import SpecRuns, results_folder

    if not cfg.compare_to:
        return None
    in_results = results_folder(ctx.root)

    def folder(sid: str):
        return ctx.inputs.get(sid) or in_results(sid)  # the stages upstream of an input: their stage.json

    order = [s.label for s in cfg.scorer_specs()]

    def spec_order(rows: list[ReportRow]) -> list[ReportRow]:
        """Rows with their scorers in the spec's order, primary first (the config JSON sorts keys)."""
        rank = {label: i for i, label in enumerate(order)}
        return [r.replaced(scores=dict(sorted(r.scores.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))))
                for r in rows]

    boot = compare.Boot(cfg.bootstrap.resamples, cfg.bootstrap.seed, cfg.bootstrap.level)
    ours = SpecRuns(cfg.spec_name, spec_order(cfg.runs))
    table = pd.concat([compare.compare(SpecRuns(c.spec, spec_order(c.runs)), ours, folder,
                                       threshold=cfg.toxic_threshold, boot=boot) for c in cfg.compare_to],
                      ignore_index=True)
    pooled = compare.pooled(table, folder, threshold=cfg.toxic_threshold, boot=boot)
    title = f"{cfg.spec_name} vs {', '.join(c.spec for c in cfg.compare_to)}"
    (ctx.out / "compare.md").write_text(render.markdown(table, pooled, level=boot.level, title=title), encoding="utf-8")
    compare.write_csv(table, ctx.out / "compare.csv")
    return {"title": title, "note": render.NOTE.format(level=f"{100 * boot.level:g} %"),
            "pooled": (render.POOLED_HEADERS, render.pooled_rows(pooled)) if not pooled.empty else None,
            "sections": render.sections(table)}


def scorer_agreement(ctx: StageContext) -> dict[str, Any] | None:
    """The scorer check's tables (when the spec has one, it is an input): copied as `scorer_agreement.md`
    and shown on the page."""
    import shutil

    from runtime.results import scorer_check_tables as check_table

    check = next((i for i in ctx.inputs if i.startswith("scorer_check-")), None)
    if check is None:
        return None
    folder = ctx.input(check)
    result = read_json(folder / "agreement.json")
    if not (folder / "agreement.md").is_file():
        raise broken_artifact(folder / "agreement.md", "missing")
    shutil.copyfile(folder / "agreement.md", ctx.out / "scorer_agreement.md")
    tables = [t for t in (check_table.agreement_table(result), check_table.toxicity_table(result)) if t]
    return {"tables": tables, "notes": check_table.notes(result)}
