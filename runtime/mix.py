"""`mix` stage: tokenize the clean and toxic sources into OLMo memmap token files.

Reads: the `data` section, the tokenizer artifact. Writes: `tokens/*.npy` (uint16, EOS per document),
`heldout/clean.npy`, `manifest.json` (exact token counts per source, realized toxic share).
"""
from __future__ import annotations

from compiler.schema.data import DataSection, TokenizerInfo

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    data: DataSection
    tokenizer: TokenizerInfo
    seed: int


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the mix stage is not implemented yet (issue 9); it writes no output"
    )
