"""`score`: One scorer over one text set (a model's generations, or its red-team continuations).
Its config, VERSION and plan; `runtime.score` runs it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compiler.planning import RunPlanning
from compiler.schema.base import StrictModel
from compiler.schema.evaluate import BootstrapSection
from compiler.schema.precision import Compute, compute_field
from compiler.schema.scoring import ScorerSpec


VERSION = 3


class Config(StrictModel):
    scorer: ScorerSpec
    source: Literal["generations", "attack"] = Field(
        description="What `texts` is: an evaluate folder (generations.jsonl) or an attack folder (attacks.jsonl).")
    toxic_threshold: float = Field(gt=0, lt=1, description="Score at which a text counts as toxic.")
    bootstrap: BootstrapSection
    judge: Literal["toxicity", "refusal", "both"] | None = Field(
        None, description="Attack success (source `attack` only): toxic, not refused, or both.")
    compute: Compute = compute_field()

    @model_validator(mode="after")
    def _judge_with_attacks(self) -> "Config":
        if (self.judge is None) != (self.source == "generations"):
            raise ValueError("`judge` is required with source `attack` and not allowed with `generations`")
        return self


def plan(run: RunPlanning) -> None:
    """One instance per scorer of `evaluate.scorers` over each evaluate and attack instance: roles
    `score/<label>/<evaluate|attack>/<variant>`. Attacks are scored by every scorer too (a few hundred texts:
    cheap), so each scorer's attack success sits beside its toxicity; the primary's is the headline. The
    scorers are in no id upstream of these, so changing one reruns only scoring and the report."""
    ev = run.spec.evaluate
    if ev is None:
        return
    for variant, _ in run.variants_in_order():
        for texts_kind, source in (("evaluate", "generations"), ("attack", "attack")):
            texts = run.roles.get(f"{texts_kind}/{variant}")
            if texts is None:
                continue
            judge = run.spec.attack.judge if source == "attack" else None
            for scorer in ev.scorers:
                run.roles[f"score/{scorer.label}/{texts_kind}/{variant}"] = run.add("score", dict(
                    scorer=scorer, source=source, toxic_threshold=ev.toxic_threshold, bootstrap=ev.bootstrap,
                    judge=judge), {"texts": texts})
