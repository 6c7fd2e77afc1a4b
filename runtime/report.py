"""`report` stage: one table, plots and an HTML page over all runs of a spec.

Reads: every evaluate / probe / attack / toy artifact of the spec. Writes: `table.csv`, `table.md`,
`*.png`, `index.html`.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from compiler.schema.base import NOT_IN_ID
from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    spec_name: str = Field(json_schema_extra=NOT_IN_ID)  # two specs with equal content share a report
    title: str
    significance_alpha: float
    token_view_texts: list[str]
    runs: list[dict[str, Any]]


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the report stage is not implemented yet (issue 6); it writes no output"
    )
