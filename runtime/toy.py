"""`toy` stage: the paper's toy model of feature entanglement (Markov chains, 4-d residual).

Reads: nothing. Writes: `entanglement.json`, `metrics.json`.
"""
from __future__ import annotations

from compiler.schema.toy import ToySection

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    toy: ToySection


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the toy stage is not implemented yet (issue 7); it writes no output"
    )
