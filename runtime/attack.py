"""`attack` stage: red-teaming a model with prompts and GCG-style suffixes.

Reads: a model folder. Writes: `attacks.jsonl`, `metrics.json` (attack success rate).
"""
from __future__ import annotations

from compiler.schema.attack import AttackSection
from compiler.schema.evaluate import ScorerSpec

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    attack: AttackSection
    scorer: ScorerSpec
    toxic_threshold: float
    seed: int


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the attack stage is not implemented yet (issue 7); it writes no output"
    )
