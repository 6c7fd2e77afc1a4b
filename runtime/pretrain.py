"""`pretrain` stage: train an OLMo model with ai2-olmo on the `mix` tokens; export to HF.

Reads: model, pretrain sections, the mix and tokenizer artifacts. Writes: `olmo/` (ai2-olmo checkpoint +
config.yaml), `model/` (HF OlmoForCausalLM + tokenizer), `metrics.jsonl`.
"""
from __future__ import annotations

from compiler.schema.data import TokenizerInfo
from compiler.schema.model import ModelSection
from compiler.schema.pretrain import PretrainSection

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    model: ModelSection
    vocab: TokenizerInfo
    train: PretrainSection
    max_steps: int
    seed: int


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the pretrain stage is not implemented yet (issue 9); it writes no output"
    )
