"""`pretrain`: Train an OLMo model with ai2-olmo on the `mix` tokens; export to HF.
Its config, VERSION and plan; `runtime.pretrain` runs it."""
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
        model=spec.model, vocab=run.tokenizer_info(), train=spec.pretrain, max_steps=pretrain_steps(spec),
        seed=spec.seed,
    ), {"mix": run.roles["mix"], "tokenizer": run.roles["tokenizer"]})
    run.variants["base"] = Variant(run.roles["pretrain"])
