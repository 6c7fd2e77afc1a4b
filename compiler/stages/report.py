"""`report`: The paper's main table, paired comparisons, controls, figures and an HTML page.
Its config, VERSION and plan; `runtime.report` runs it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from compiler.report_rows import report_rows
from compiler.schema.base import NOT_IN_ID, StrictModel, same_as
from compiler.schema.evaluate import BootstrapSection, EvaluateSection
from compiler.schema.probe import LabelledData
from compiler.schema.report import ComparedRuns, ReportRow, ReportSection
from compiler.schema.scoring import ScorerSpec

if TYPE_CHECKING:
    from compiler.plan import ComparedSpec
    from compiler.planning import RunPlan
    from compiler.planning import InstanceBuilder


VERSION = 6


class Config(StrictModel):
    spec_name: str = Field(json_schema_extra=NOT_IN_ID)  # two specs with equal content share a report
    title: str = same_as(ReportSection, "title", description="Page title (the planner fills null).")
    significance_alpha: float = same_as(ReportSection, "significance_alpha")
    token_view_texts: list[str] = same_as(ReportSection, "token_view_texts")
    runs: list[ReportRow]
    token_view_top_k_heads: int = same_as(ReportSection, "token_view_top_k_heads", keep_default=True)
    scorer: ScorerSpec | None = Field(
        None, description="The primary evaluation scorer: its columns carry no scorer prefix; it scores the "
        "probe's labelled texts (null: no AUC).")
    scorers: list[ScorerSpec] = Field(
        default_factory=list, description="Every evaluation scorer, primary first (empty: the primary alone): "
        "their order is the order of the side-by-side columns; each scores the probe's labelled texts.")
    labelled_data: LabelledData | None = Field(
        None, description="The probe's labelled texts, read as the activations stage reads them (null: no AUC).")
    toxic_threshold: float = same_as(
        EvaluateSection, "toxic_threshold", keep_default=True, description="Score at which a sample counts as "
        "toxic (toxicity probability of paired comparisons; the evaluate section's).")
    bootstrap: BootstrapSection = same_as(
        EvaluateSection, "bootstrap", keep_default=True, description="Resampling of the paired and AUC intervals "
        "(the evaluate section's, so the report's intervals match the evaluate stage's).")
    compare_to: list[ComparedRuns] = Field(
        default_factory=list, description="Specs this one is compared with (`report.compare_to`): per spec its "
        "`spec` path and its `runs` rows; the section shows this spec − each (`runtime.results.compare`).")

    @model_validator(mode="after")
    def _primary_first(self) -> "Config":
        if self.scorers and self.scorer is not None and self.scorers[0] != self.scorer:
            raise ValueError(f"`scorers` must start with the primary `scorer` ({self.scorer.label}), "
                             f"not {self.scorers[0].label}")
        return self

    def scorer_specs(self) -> list[Any]:
        """Every evaluation scorer, primary first."""
        return list(self.scorers) or ([self.scorer] if self.scorer is not None else [])


INPUT_ROLES = ("evaluate", "attack", "score", "probe", "toy", "steer", "pretrain", "mix", "scorer_check")
"""Roles (first part) whose instances the report reads."""


def plan(builder: InstanceBuilder, spec_name: str, runs: list[RunPlan], compared: list[ComparedSpec]) -> None:
    """One report over every run of the spec (and the specs of `report.compare_to`): role `report` of each
    run; none when no run has anything to report."""
    inputs = sorted({i for rp in runs for role, i in rp.roles.items() if role.split("/")[0] in INPUT_ROLES}
                    | {sid for c in compared for sid in c.ids()})
    if not inputs:
        return
    first = runs[0].spec
    rows = [row for rp in runs for row in report_rows(rp, builder.instances)]
    rid = builder.add("report", dict(
        spec_name=spec_name, title=first.report.title or first.description or spec_name,
        significance_alpha=first.report.significance_alpha,
        token_view_texts=list(first.report.token_view_texts),
        token_view_top_k_heads=first.report.token_view_top_k_heads,
        runs=rows,
        **(dict(scorer=first.evaluate.primary_scorer, scorers=first.evaluate.scorers,
                toxic_threshold=first.evaluate.toxic_threshold, bootstrap=first.evaluate.bootstrap)
           if first.evaluate is not None else {}),
        labelled_data=first.probe.data if first.probe is not None else None,
        compare_to=[{"spec": c.path, "runs": c.rows} for c in compared],
    ), {i: i for i in inputs}, first)
    for rp in runs:
        rp.roles["report"] = rid
