"""`evaluate` stage: generation toxicity, detection, MMLU, cross-entropy and KL for one model.

Reads: a model folder (and the base model for KL, the mix's held-out tokens for CE). Writes:
`generations.jsonl`, `metrics.json`.
"""
from __future__ import annotations

from compiler.schema.evaluate import EvaluateSection

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    evaluate: EvaluateSection
    prefix: str | None = None
    seed: int


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the evaluate stage is not implemented yet (issue 6); it writes no output"
    )
