"""`tokenize`: Tokenize one source once into shared token shards that every mix selects from.
Its config, VERSION and plan; `runtime.tokenize` runs it."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from compiler.planning import FillsKey, RunPlanning, fills_key
from compiler.schema.base import StrictModel, same_as
from compiler.schema.data import DataSection, TokenizerInfo
from compiler.schema.sources import TextSourceSpec


VERSION = 1


class Config(StrictModel):
    source: TextSourceSpec
    tokenizer: TokenizerInfo
    fills: list[Annotated[int, Field(gt=0)]] | None = Field(
        min_length=1, description="Exact-budget fills the mixes make from this source, in order; null = all of it.")
    tokens_per_file: int = same_as(DataSection, "tokens_per_file")
    tokenize_workers: int = same_as(DataSection, "tokenize_workers", keep_default=True)


def fills(sections: list[DataSection]) -> dict[FillsKey, list[int] | None]:
    """How far each source must be tokenized for every mixture of the plan (`Config.fills`): clean: the
    held-out budget, then the largest clean budget; toxic: the largest toxic budget. A source that declares
    no more tokens than that (`declared_tokens`) is read whole (`None`), so the toxic source's instance, and
    every mix reading it, keeps its id when a larger share joins the sweep."""
    largest: dict[FillsKey, tuple[DataSection, int]] = {}
    for data in {id(d): d for d in sections}.values():
        for role, budget in (("clean", data.clean_tokens), ("toxic", data.toxic_tokens)):
            key = fills_key(data, role)
            if budget and (key not in largest or budget > largest[key][1]):
                largest[key] = (data, budget)
    out: dict[FillsKey, list[int] | None] = {}
    for key, (data, budget) in largest.items():
        role = key[0]
        wanted = [f for f in ((data.heldout_clean_tokens, budget) if role == "clean" else (budget,)) if f]
        declared = data.sources[data.clean_source if role == "clean" else data.toxic_source].declared_tokens
        out[key] = None if declared is not None and declared <= sum(wanted) else wanted
    return out


def plan(run: RunPlanning) -> None:
    """One instance per source the mixture reads (roles `tokenize/clean`, `tokenize/toxic`), shared by every
    run reading that source with the same tokenizer and shard size."""
    data = run.spec.data
    if data is None:
        return
    for role, name, budget in (("clean", data.clean_source, data.clean_tokens),
                               ("toxic", data.toxic_source, data.toxic_tokens)):
        if budget:
            run.roles[f"tokenize/{role}"] = run.add("tokenize", dict(
                source=data.sources[name], tokenizer=run.tokenizer_info(), fills=run.fills[fills_key(data, role)],
                tokens_per_file=data.tokens_per_file, tokenize_workers=data.tokenize_workers,
            ), {"tokenizer": run.roles["tokenizer"]})
