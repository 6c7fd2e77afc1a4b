"""The `report` section: one table, plots and an HTML page over all runs of a spec."""
from __future__ import annotations

from pydantic import Field

from .base import StrictModel

VARIANT_ORDER = ("base", "prompting", "iti", "iti_random_direction", "iti_random_heads", "sft", "dpo")
"""The model variants of a run, in the order the planner writes its rows and the report shows them."""
STEER_FIELDS = ("alpha", "positions", "top_k_heads", "control_seed")
"""The steer settings a run row carries for ITI variants (real and controls); None on every other row."""


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
