"""`posttrain` stage: SFT or DPO with TRL on a model folder.

Reads: a model folder and the method's dataset. Writes: `model/` (HF checkpoint).
"""
from __future__ import annotations

from compiler.schema.posttrain import DPOSection, SFTSection

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    sft: SFTSection | None = None
    dpo: DPOSection | None = None
    seed: int


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the posttrain stage is not implemented yet (issue 5); it writes no output"
    )
