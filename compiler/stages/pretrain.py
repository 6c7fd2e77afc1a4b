"""The `pretrain` stage as the compiler plans it: its config (what enters its content id) and VERSION.
The runtime implements it (`runtime.pretrain`), reading this config from the stage JSON."""
from __future__ import annotations

from pydantic import Field

from compiler.checks import pretrain_steps
from compiler.planning import RunPlanning, Variant
from compiler.schema.base import StrictModel, same_as
from compiler.schema.data import TokenizerInfo
from compiler.schema.model import ModelSection
from compiler.schema.pretrain import PretrainSection
from compiler.schema.spec import Spec


VERSION = 2
"""Bump by hand whenever a change of `runtime.pretrain` changes results (it changes every id)."""


class Config(StrictModel):
    model: ModelSection
    vocab: TokenizerInfo
    train: PretrainSection
    max_steps: int = Field(gt=0, description="Optimizer steps (the plan derives them from epochs or tokens).")
    seed: int = same_as(Spec, "seed")


def plan(run: RunPlanning) -> None:
    """Pretraining on the run's mixture: the `base` model variant."""
    if "mix" not in run.roles:
        return
    spec = run.spec
    run.roles["pretrain"] = run.add("pretrain", dict(
        model=spec.model, vocab=run.tokenizer_info(), train=spec.pretrain, max_steps=pretrain_steps(spec), seed=spec.seed,
    ), {"mix": run.roles["mix"], "tokenizer": run.roles["tokenizer"]})
    run.variants["base"] = Variant(run.roles["pretrain"])
