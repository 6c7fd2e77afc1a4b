"""`tokenizer` stage: resolve a shipped OLMo tokenizer, or train a small byte-level BPE.

Reads: the `tokenizer` section and (BPE only) the data sources. Writes: `tokenizer.json` (HF
`tokenizers` format) and `info.json` (TokenizerInfo). Id changes with: tokenizer section, sources.
"""
from __future__ import annotations

from compiler.schema.data import TokenizerInfo, TokenizerSection
from compiler.schema.sources import TextSourceSpec

from compiler.schema.base import StrictModel
from runtime.stage import NotImplementedStage, StageContext

VERSION = 1
"""Bump by hand whenever a change of this module changes results (it changes every id)."""


class Config(StrictModel):
    tokenizer: TokenizerSection
    info: TokenizerInfo
    sources: dict[str, TextSourceSpec] = {}


def run(cfg: Config, ctx: StageContext) -> dict:
    raise NotImplementedStage(
        "the tokenizer stage is not implemented yet (issue 9); it writes no output"
    )
