"""`mix`: Select the pretraining mixture from the token shards its sources were tokenized into once.
Its config, VERSION and plan; `runtime.mix` runs it."""
from __future__ import annotations

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel
from compiler.schema.data import DataSection, TokenizerInfo


VERSION = 3


class Config(StrictModel):
    data: DataSection
    tokenizer: TokenizerInfo


def plan(run: RunPlanning) -> None:
    """The mixture over the run's tokenized sources (one per toxic share)."""
    data = run.spec.data
    if data is None:
        return
    inputs = {role: run.roles[f"tokenize/{role}"] for role in ("clean", "toxic") if f"tokenize/{role}" in run.roles}
    run.roles["mix"] = run.add("mix", dict(data=data, tokenizer=run.tokenizer_info()), inputs)
