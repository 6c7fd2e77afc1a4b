"""`steer` stage: ITI folded into the o_proj bias of a normal HF checkpoint.

Reads: a model folder and a probe artifact. Writes: `model/` (steered HF checkpoint),
`intervention.json`.
"""
from __future__ import annotations

from typing import Literal

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    top_k_heads: int
    direction: Literal["mass_mean", "probe_weight"]
    alpha: float


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the steer stage is not implemented yet (issue 5); it writes no output"
    )
