"""The `tokenizer` stage as the compiler plans it: its config (what enters its content id) and VERSION.
The runtime implements it (`runtime.tokenizer`), reading this config from the stage JSON."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.data import DataSection, TokenizerInfo, TokenizerSection
from compiler.schema.sources import TextSourceSpec
from compiler.schema.spec import Spec


VERSION = 2
"""Bump by hand whenever a change of `runtime.tokenizer` changes results (it changes every id)."""


class Config(StrictModel):
    tokenizer: TokenizerSection = same_as(Spec, "tokenizer")
    info: TokenizerInfo
    sources: dict[str, TextSourceSpec] = same_as(
        DataSection, "sources", default={}, description="The data sources a BPE is trained on (none for `olmo`).")


def plan(run: RunPlanning) -> None:
    """The run's tokenizer (trained on the data's sources for `bpe`); none without a data section."""
    spec = run.spec
    if spec.data is None:
        return
    sources = spec.data.sources if spec.tokenizer.kind == "bpe" else {}
    run.roles["tokenizer"] = run.add("tokenizer", dict(tokenizer=spec.tokenizer, info=run.tokenizer_info(),
                                                       sources=sources), {})
