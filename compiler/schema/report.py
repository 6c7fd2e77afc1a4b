"""The `report` section: one table, plots and an HTML page over all runs of a spec; and the report's rows
(`ReportRow`), which the planner writes into the report stage's config and the report and `mixsteer
results` read."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import StrictModel

VARIANT_ORDER = ("base", "prompting", "iti", "iti_random_direction", "iti_random_heads", "sft", "dpo")
"""The model variants of a run, in the order the planner writes its rows and the report shows them."""


def is_iti(variant: Any) -> bool:
    """Whether a variant is steered by ITI: the real direction or one of its controls."""
    return isinstance(variant, str) and variant.startswith("iti")


class SteerSettings(StrictModel):
    """The steer settings that tell ITI models apart (each a setting column of the report's tables): set on
    ITI rows (real and controls) from their steer stage, None on every other row."""

    alpha: float | None = None
    positions: str | None = None
    top_k_heads: int | None = None
    control_seed: int | None = Field(None, description="Draw number of a control (0, 1, …).")


STEER_FIELDS = tuple(SteerSettings.model_fields)
"""The steer settings a run row carries for ITI variants (real and controls); None on every other row."""


class ReportRow(SteerSettings):
    """One evaluated model variant of one run (or, for a run that evaluates nothing, the run alone): its
    sweep point, its steer settings and the ids of the stage instances behind it. Its JSON (every field)
    enters the report stage's id: a field added here changes every report id."""

    run: str
    axes: dict[str, Any] = Field(default_factory=dict, description="{sweep axis path: value} of the run.")
    seed: int | None = None
    toxic_share: float | None = None
    pretrain: str | None = None
    mix: str | None = None
    probe: str | None = None
    toy: str | None = None
    variant: str | None = Field(None, description="One of `VARIANT_ORDER`; None on a row that evaluates nothing.")
    steer: str | None = Field(None, description="The steer stage of an ITI row.")
    control: str | None = Field(None, description="The control a control row draws (`random_direction`, …).")
    evaluate: str | None = None
    scores: dict[str, str] = Field(
        default_factory=dict, description="{scorer label: score id} of the evaluate's generations, primary first.")
    attack: str | None = None
    attack_scores: dict[str, str] = Field(
        default_factory=dict, description="{scorer label: score id} of the attack's continuations, primary first.")

    def is_iti(self) -> bool:
        return is_iti(self.variant)

    def steer_settings(self) -> dict[str, Any]:
        """{steer field: value} (`STEER_FIELDS`): the row's own on an ITI row, None on every other."""
        steered = self.is_iti()
        return {name: getattr(self, name) if steered else None for name in STEER_FIELDS}

    def replaced(self, **changes: Any) -> "ReportRow":
        """This row with `changes`, validated (`model_copy` would keep this row's cached id JSON)."""
        return ReportRow(**(dict(self) | changes))


class ComparedRuns(StrictModel):
    """A spec of `report.compare_to` as the report stage carries it: its path and its report rows."""

    spec: str
    runs: list[ReportRow]


class ReportSection(StrictModel):
    """Report settings."""

    title: str | None = Field(None, description="Page title; null = the spec's description.")
    significance_alpha: float = Field(
        0.05, gt=0, lt=1, description="Level of the across-heads test of probe accuracy vs toxic share."
    )
    token_view_texts: list[str] = Field(
        default_factory=list, description="Texts shown token by token with the probe's toxicity score."
    )
    token_view_top_k_heads: int = Field(
        5, gt=0, description="Heads of highest probe accuracy whose scores the token view averages (count)."
    )
    compare_to: list[str] = Field(
        default_factory=list, description="Spec files (relative to the project root) this spec's report compares "
        "with: a section `this spec − listed spec` per matched run and measure, with paired intervals, as "
        "`mixsteer compare LISTED THIS` prints it (`compare.md`, `compare.csv`). The listed specs' evaluate and "
        "score stages it needs are planned with this spec's, so they run first when not done yet."
    )
