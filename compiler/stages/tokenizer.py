"""`tokenizer`: Resolve a shipped OLMo tokenizer, or train a small byte-level BPE.
Its config, VERSION and plan; `runtime.tokenizer` runs it."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel, same_as
from compiler.schema.data import DataSection, TokenizerInfo, TokenizerSection
from compiler.schema.sources import TextSourceSpec
from compiler.schema.spec import Spec


VERSION = 2


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
